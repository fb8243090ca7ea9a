//! Waking the gateways a change of the cluster concerns, and only those: a node event wakes the
//! gateways whose pools the node is (or was) in, room taken or freed on an ECS pool node wakes
//! that pool's gateways, a gateway pod's change wakes its gateway. Changes that arrive together
//! are coalesced, so that a storm of events costs each gateway at most one extra decision per
//! [`COALESCE`]; the periodic decision is scheduled apart and never pushed back by them.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use kube::ResourceExt;
use kube::core::{Selector, SelectorExt};
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use super::controller::WatchedGateway;
use crate::k8s::index::{Change, ClusterIndex};
use crate::model::GatewayKey;

/// Changes that arrive within this long wake each concerned gateway once.
pub const COALESCE: Duration = Duration::from_millis(500);

/// What a gateway's decision depends on in the cluster index.
#[derive(Clone, Debug, PartialEq)]
pub struct Interest {
    pub namespace: String,
    /// The target's pod selector, once a reconcile has read the target.
    pub pods: Option<Selector>,
    /// The pools' node selectors.
    pub ecs: BTreeMap<String, String>,
    pub eci: BTreeMap<String, String>,
    /// The Deployments its target is read from (the target, or the one ASM renders).
    pub workloads: Vec<String>,
}

impl Interest {
    /// Whether `change` may change this gateway's decision; `node_labels` looks a node up.
    pub fn concerns<'a>(
        &self,
        change: &Change,
        node_labels: impl Fn(&str) -> Option<&'a BTreeMap<String, String>>,
    ) -> bool {
        let in_pool = |labels: &BTreeMap<String, String>, pool: &BTreeMap<String, String>| {
            !pool.is_empty() && pool.iter().all(|(k, v)| labels.get(k) == Some(v))
        };
        match change {
            Change::All => true,
            Change::Node(labels) => labels
                .iter()
                .any(|l| in_pool(l, &self.ecs) || in_pool(l, &self.eci)),
            // Room matters on the ECS pool: the virtual nodes' is all but unbounded.
            Change::Room(node) => node_labels(node).is_some_and(|l| in_pool(l, &self.ecs)),
            Change::Workload { namespace, name } => {
                *namespace == self.namespace && self.workloads.contains(name)
            }
            Change::Autoscalers(namespace) => *namespace == self.namespace,
            // Routed by key ([`route`]).
            Change::Planned(_) => false,
            Change::GatewayPod { namespace, labels } => {
                *namespace == self.namespace
                    && self
                        .pods
                        .as_ref()
                        .is_none_or(|sel| labels.iter().any(|l| sel.matches(l)))
            }
        }
    }
}

/// Every gateway's interest, kept by its reconciles.
#[derive(Default)]
pub struct Interests(RwLock<Kept>);

/// The interests, and who reads each workload: every decision asks whether another gateway
/// shares its workload, and a scan of every interest would cost the gateways squared.
#[derive(Default)]
struct Kept {
    all: HashMap<GatewayKey, Interest>,
    /// (namespace, Deployment) → the gateways that read it.
    readers: HashMap<(String, String), BTreeSet<GatewayKey>>,
}

impl Kept {
    fn insert(&mut self, key: &GatewayKey, interest: Interest) {
        self.remove(key);
        for w in &interest.workloads {
            self.readers
                .entry((interest.namespace.clone(), w.clone()))
                .or_default()
                .insert(key.clone());
        }
        self.all.insert(key.clone(), interest);
    }

    fn remove(&mut self, key: &GatewayKey) {
        let Some(old) = self.all.remove(key) else {
            return;
        };
        for w in old.workloads {
            let at = (old.namespace.clone(), w);
            if let Some(readers) = self.readers.get_mut(&at) {
                readers.remove(key);
                if readers.is_empty() {
                    self.readers.remove(&at);
                }
            }
        }
    }
}

impl Interests {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Kept> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Kept> {
        self.0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn set(&self, key: &GatewayKey, interest: Interest) {
        let mut kept = self.write();
        if kept.all.get(key) != Some(&interest) {
            kept.insert(key, interest);
        }
    }

    /// Another gateway of the same namespace whose target reads one of the same workloads.
    pub fn sharing(&self, key: &GatewayKey) -> Option<GatewayKey> {
        let kept = self.read();
        let mine = kept.all.get(key)?;
        mine.workloads.iter().find_map(|w| {
            kept.readers
                .get(&(mine.namespace.clone(), w.clone()))?
                .iter()
                .find(|k| *k != key)
                .cloned()
        })
    }

    /// Whether any gateway has an interest.
    pub fn any(&self) -> bool {
        !self.read().all.is_empty()
    }

    /// Forgets the gateways not in `live`; returns them.
    pub fn retain(&self, live: &HashSet<GatewayKey>) -> Vec<GatewayKey> {
        let mut kept = self.write();
        let gone: Vec<GatewayKey> = kept
            .all
            .keys()
            .filter(|k| !live.contains(*k))
            .cloned()
            .collect();
        for k in &gone {
            kept.remove(k);
        }
        gone
    }

    pub fn remove(&self, key: &GatewayKey) {
        self.write().remove(key);
    }

    /// The gateways the changes concern. A gateway with no interest yet (never reconciled) is
    /// woken by its own creation.
    pub fn concerned(&self, changes: &[Change], index: &ClusterIndex) -> HashSet<GatewayKey> {
        self.read()
            .all
            .iter()
            .filter(|(_, i)| {
                changes
                    .iter()
                    .any(|c| i.concerns(c, |n| index.node_labels(n)))
            })
            .map(|(k, _)| k.clone())
            .collect()
    }
}

/// Turns the index's changes into reconcile requests for the gateways they concern, until the
/// changes end. `All` wakes every ElasticGateway in `store`.
pub async fn route(
    mut changes: UnboundedReceiver<Change>,
    interests: Arc<Interests>,
    index: Arc<RwLock<ClusterIndex>>,
    store: Store<WatchedGateway>,
    wake: UnboundedSender<ObjectRef<WatchedGateway>>,
) {
    while let Some(first) = changes.recv().await {
        let mut batch = vec![first];
        let window = tokio::time::sleep(COALESCE);
        tokio::pin!(window);
        loop {
            tokio::select! {
                () = &mut window => break,
                c = changes.recv() => match c {
                    Some(c) => batch.push(c),
                    None => break,
                },
            }
        }
        let keys: HashSet<GatewayKey> = if batch.contains(&Change::All) {
            store
                .state()
                .iter()
                .map(|g| GatewayKey::new(&g.namespace().unwrap_or_default(), &g.name_any()))
                .collect()
        } else {
            let ix = index
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut keys = interests.concerned(&batch, &ix);
            keys.extend(batch.iter().filter_map(|c| match c {
                Change::Planned(k) => Some(k.clone()),
                _ => None,
            }));
            keys
        };
        for k in keys {
            if wake
                .send(ObjectRef::new(&k.name).within(&k.namespace))
                .is_err()
            {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn interest(ns: &str, app: Option<&str>) -> Interest {
        Interest {
            namespace: ns.into(),
            pods: app.map(|a| Selector::from_iter([("app".to_string(), a.to_string())])),
            ecs: labels(&[("mykey4pod", "asmgateway")]),
            eci: labels(&[("type", "virtual-kubelet")]),
            workloads: app.map(String::from).into_iter().collect(),
        }
    }

    /// Two gateways share a workload only in the same namespace, and stop sharing when one
    /// moves to another workload or goes.
    #[test]
    fn sharing_follows_the_workloads_read() {
        let key = |ns: &str, n: &str| GatewayKey::new(ns, n);
        let (a, b, c) = (key("gw", "a"), key("gw", "b"), key("other", "c"));
        let all = Interests::default();
        all.set(&a, interest("gw", Some("one")));
        all.set(&b, interest("gw", Some("two")));
        all.set(&c, interest("other", Some("one")));
        assert_eq!(all.sharing(&a), None, "same name, another namespace");
        all.set(&b, interest("gw", Some("one")));
        assert_eq!(all.sharing(&a), Some(b.clone()));
        assert_eq!(all.sharing(&b), Some(a.clone()));
        all.set(&b, interest("gw", Some("two")));
        assert_eq!(all.sharing(&a), None, "b moved to another workload");
        all.set(&b, interest("gw", Some("one")));
        all.remove(&b);
        assert_eq!(all.sharing(&a), None, "b went");
        all.set(&b, interest("gw", Some("one")));
        assert_eq!(all.retain(&[a.clone(), c.clone()].into()), vec![b.clone()]);
        assert_eq!(all.sharing(&a), None, "b was not retained");
        assert!(
            all.read()
                .readers
                .values()
                .all(|r| !r.is_empty() && !r.contains(&b))
        );
        // One interest reading two workloads, and a key that moves to another namespace.
        let mut both = interest("gw", Some("one"));
        both.workloads.push("two".into());
        all.set(&b, interest("gw", Some("two")));
        all.set(&c, both);
        assert_eq!(all.sharing(&b), Some(c.clone()));
        all.set(&c, interest("other", Some("two")));
        assert_eq!((all.sharing(&a), all.sharing(&b)), (None, None));
    }

    /// Each kind of change wakes the gateways whose inputs it changes, and no others.
    #[test]
    fn changes_wake_only_the_gateways_they_concern() {
        let nodes: BTreeMap<String, BTreeMap<String, String>> = [
            ("ecs-1".to_string(), labels(&[("mykey4pod", "asmgateway")])),
            ("vk".to_string(), labels(&[("type", "virtual-kubelet")])),
            ("other".to_string(), labels(&[("pool", "batch")])),
        ]
        .into_iter()
        .collect();
        let look = |n: &str| nodes.get(n);
        let gw = interest("istio-system", Some("gw"));
        let elsewhere = Interest {
            ecs: labels(&[("pool", "gw-b")]),
            eci: labels(&[("type", "virtual-kubelet")]),
            ..interest("team-b", Some("gw-b"))
        };
        let cases = [
            (Change::All, true, true),
            (
                Change::Node(vec![labels(&[("mykey4pod", "asmgateway")])]),
                true,
                false,
            ),
            (
                Change::Node(vec![labels(&[("type", "virtual-kubelet")])]),
                true,
                true,
            ),
            (
                Change::Node(vec![labels(&[("pool", "batch")])]),
                false,
                false,
            ),
            // Relabelled out of the pool: its old labels still concern the gateway.
            (
                Change::Node(vec![labels(&[("mykey4pod", "asmgateway")]), labels(&[])]),
                true,
                false,
            ),
            (Change::Room("ecs-1".into()), true, false),
            (Change::Room("vk".into()), false, false),
            (Change::Room("other".into()), false, false),
            (Change::Room("unknown".into()), false, false),
            (
                Change::GatewayPod {
                    namespace: "istio-system".into(),
                    labels: vec![labels(&[("app", "gw")])],
                },
                true,
                false,
            ),
            (
                Change::GatewayPod {
                    namespace: "istio-system".into(),
                    labels: vec![labels(&[("app", "istiod")])],
                },
                false,
                false,
            ),
            (
                Change::Workload {
                    namespace: "istio-system".into(),
                    name: "gw".into(),
                },
                true,
                false,
            ),
            (
                Change::Workload {
                    namespace: "istio-system".into(),
                    name: "istiod".into(),
                },
                false,
                false,
            ),
            (Change::Autoscalers("team-b".into()), false, true),
            (
                Change::GatewayPod {
                    namespace: "team-b".into(),
                    labels: vec![labels(&[("app", "gw-b")])],
                },
                false,
                true,
            ),
        ];
        for (c, a, b) in cases {
            assert_eq!(gw.concerns(&c, look), a, "{c:?} for istio-system/gw");
            assert_eq!(elsewhere.concerns(&c, look), b, "{c:?} for team-b/gw-b");
        }
        // Before its target is read, any pod of the gateway's namespace concerns it.
        let unread = interest("istio-system", None);
        assert!(unread.concerns(
            &Change::GatewayPod {
                namespace: "istio-system".into(),
                labels: vec![labels(&[("app", "istiod")])],
            },
            look
        ));
    }
}
