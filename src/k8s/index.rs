//! The cluster as the engine needs it, kept from watch events.
//!
//! On a big cluster the pods dominate: 100,000 of them are kept as a node name and summed
//! requests each (what ECS capacity needs), and only pods in the gateway namespaces keep their
//! labels, readiness and deletion cost. Nodes keep labels, taints and allocatable. Nothing here
//! does I/O: the watchers feed it, and tests feed it hand-built objects.

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::core::v1::{Node as KNode, Pod, PodSpec};
use kube::core::{Expression, Selector, SelectorExt};

use super::planned::PlannedBook;
use super::workloads::Workloads;
use crate::model::{
    GatewayKey, GatewayPod, Node, POD_DELETION_COST, Pool, Resources, Taint, TaintEffect,
    classify_node, quantity,
};

/// One namespace's pods by label: key → value → pod names.
type ByLabel = HashMap<String, HashMap<String, HashSet<String>>>;

/// What is kept of a gateway-namespace pod.
#[derive(Clone, Debug, PartialEq)]
struct GwInfo {
    labels: BTreeMap<String, String>,
    ready: bool,
    /// Phase `Pending` (or none yet).
    pending: bool,
    terminating: bool,
    deletion_cost: Option<i32>,
    created_at: f64,
    /// Its Ready condition's last transition, while Ready.
    ready_since: Option<f64>,
    /// `status.podIP`, for the fast path's reads of the pod's own counters.
    ip: Option<std::net::IpAddr>,
}

#[derive(Clone, Debug, PartialEq)]
struct LeanPod {
    node: Option<String>,
    requests: Resources,
    gw: Option<Box<GwInfo>>,
}

/// What an event changed in the index: what the agent needs to wake the gateways it concerns,
/// and only those. An event that changes nothing the index keeps (a kubelet's heartbeat, a pod's
/// status update that moves neither its node nor its requests) is no change at all.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// A node's labels, taints, allocatable or schedulability changed, or it came or went: the
    /// label sets it had and has (a relabelled node may leave one pool and join another).
    Node(Vec<BTreeMap<String, String>>),
    /// What the pods bound to this node request changed: room taken or freed there.
    Room(String),
    /// A pod of a gateway namespace changed what a gateway sees of it: the label sets it had
    /// and has.
    GatewayPod {
        namespace: String,
        labels: Vec<BTreeMap<String, String>>,
    },
    /// A Deployment of a gateway namespace changed (its spec, its status, who wrote it).
    Workload { namespace: String, name: String },
    /// The HorizontalPodAutoscalers of a gateway namespace changed.
    Autoscalers(String),
    /// A PlannedEvent naming this gateway came, went or changed its spec.
    Planned(GatewayKey),
    /// Anything may have changed: a (re)list completed, or a watch failed or recovered.
    All,
}

/// The watches behind the index: nodes and pods cluster-wide, Deployments and HPAs in each
/// gateway namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Watched {
    Nodes,
    Pods,
    Deployments(String),
    Autoscalers(String),
    /// PlannedEvents, cluster-wide. Never holds a decision: without them (the CRD not installed,
    /// not allowed to list them) a gateway is decided on its load alone, and says so.
    PlannedEvents,
}

impl std::fmt::Display for Watched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Watched::Nodes => write!(f, "nodes"),
            Watched::Pods => write!(f, "pods"),
            Watched::Deployments(ns) => write!(f, "deployments in {ns}"),
            Watched::Autoscalers(ns) => write!(f, "horizontalpodautoscalers in {ns}"),
            Watched::PlannedEvents => write!(f, "plannedevents"),
        }
    }
}

/// What the agent has seen of the PlannedEvents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlannedSeen {
    /// The first list has not answered yet.
    Listing,
    Listed,
    /// Never listed: the watch fails (the CRD not installed, RBAC), with its error.
    Unavailable(String),
    /// Listed once, failing since: the events last seen stand.
    Stale(String),
}

/// Why the index cannot be trusted for a decision now.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unsynced {
    /// The first list has not completed.
    #[error("the {0} watch has not listed yet; holding until it has")]
    NotListed(Watched),
    /// The watch's last attempt failed and it is retrying.
    #[error("the {0} watch is failing ({1}); holding until it recovers")]
    Failing(Watched, String),
}

impl Unsynced {
    /// The condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Unsynced::NotListed(_) => "CachesNotSynced",
            Unsynced::Failing(..) => "WatchFailing",
        }
    }
}

/// Nodes and pods.
#[derive(Debug, Default)]
pub struct ClusterIndex {
    gateway_namespaces: HashSet<String>,
    nodes: Vec<Node>,
    node_idx: HashMap<String, usize>,
    pods: HashMap<(String, String), LeanPod>,
    /// The gateway namespaces' pods by label: a gateway's selector finds its pods here.
    /// Scanning every pod on every decision costs the pods of the whole cluster times the
    /// decisions (4,000 × 400 a second for 2,000 gateways at 5 s).
    labelled: HashMap<String, ByLabel>,
    requested: HashMap<String, Resources>,
    node_buffer: Option<Vec<Node>>,
    pod_buffer: Option<HashMap<(String, String), LeanPod>>,
    /// The gateway namespaces' Deployments and HPAs.
    pub workloads: Workloads,
    /// The PlannedEvents, by the gateway each names.
    pub planned: PlannedBook,
    /// The watches that have listed once.
    synced: HashSet<Watched>,
    /// The last error of each watch that has not delivered an event since.
    failing: HashMap<Watched, String>,
    /// When the index was made: a watch that has not listed yet is only a problem after a while.
    created: Option<std::time::Instant>,
}

impl ClusterIndex {
    pub fn new(gateway_namespaces: impl IntoIterator<Item = String>) -> Self {
        Self {
            gateway_namespaces: gateway_namespaces.into_iter().collect(),
            created: Some(std::time::Instant::now()),
            ..Default::default()
        }
    }

    /// As if made `ago`: for tests of what happens once the watches have had their time.
    pub fn made_ago(mut self, ago: std::time::Duration) -> Self {
        self.created = std::time::Instant::now().checked_sub(ago);
        self
    }

    /// How long the watches have had to list.
    pub fn age(&self) -> std::time::Duration {
        self.created.map(|t| t.elapsed()).unwrap_or_default()
    }

    pub fn watches_namespace(&self, ns: &str) -> bool {
        self.gateway_namespaces.contains(ns)
    }

    /// The watches a gateway in `ns` decides from.
    fn watches_for(ns: &str) -> [Watched; 4] {
        [
            Watched::Nodes,
            Watched::Pods,
            Watched::Deployments(ns.to_string()),
            Watched::Autoscalers(ns.to_string()),
        ]
    }

    /// Every watch has listed once (the PlannedEvents' has at least answered: it may be
    /// refused for good).
    pub fn synced(&self) -> bool {
        self.gateway_namespaces
            .iter()
            .flat_map(|ns| Self::watches_for(ns))
            .chain([Watched::Nodes, Watched::Pods])
            .all(|w| self.synced.contains(&w))
            && self.planned_seen() != PlannedSeen::Listing
    }

    /// How far the PlannedEvents can be trusted.
    pub fn planned_seen(&self) -> PlannedSeen {
        let w = Watched::PlannedEvents;
        match (self.synced.contains(&w), self.failing.get(&w)) {
            (false, None) => PlannedSeen::Listing,
            (true, None) => PlannedSeen::Listed,
            (false, Some(e)) => PlannedSeen::Unavailable(e.clone()),
            (true, Some(e)) => PlannedSeen::Stale(e.clone()),
        }
    }

    /// A watch listed (or relisted) completely.
    pub fn listed(&mut self, watch: Watched) {
        self.synced.insert(watch);
    }

    /// Whether a decision may be made for a gateway in `ns` from the index now: the watches it
    /// reads have listed, and none is failing (an error not yet followed by an event). `Err`
    /// says why not, for the status.
    pub fn health(&self, ns: &str) -> Result<(), Unsynced> {
        let watches = Self::watches_for(ns);
        if let Some(w) = watches.iter().find(|w| !self.synced.contains(*w)) {
            return Err(Unsynced::NotListed(w.clone()));
        }
        if let Some((w, e)) = watches
            .iter()
            .find_map(|w| self.failing.get(w).map(|e| (w, e)))
        {
            return Err(Unsynced::Failing(w.clone(), e.clone()));
        }
        Ok(())
    }

    /// A watch returned an error: until its next event, the index may be stale. Returns whether
    /// it was healthy until now.
    pub fn watch_failed(&mut self, watch: Watched, error: String) -> bool {
        self.failing.insert(watch, error).is_none()
    }

    /// A watch delivered an event again. Returns whether it was failing until now.
    pub fn watch_ok(&mut self, watch: &Watched) -> bool {
        self.failing.remove(watch).is_some()
    }

    /// The gateway namespaces.
    pub fn gateway_namespaces(&self) -> impl Iterator<Item = &String> {
        self.gateway_namespaces.iter()
    }

    pub fn counts(&self) -> (usize, usize) {
        (self.nodes.len(), self.pods.len())
    }

    // Nodes.

    pub fn apply_node(&mut self, n: &KNode) -> Option<Change> {
        let node = lean_node(n);
        match self.node_idx.get(&node.name) {
            Some(i) if self.nodes[*i] == node => None,
            Some(i) => {
                let old = std::mem::replace(&mut self.nodes[*i], node);
                let labels = vec![old.labels, self.nodes[*i].labels.clone()];
                Some(Change::Node(labels))
            }
            None => {
                let labels = vec![node.labels.clone()];
                self.node_idx.insert(node.name.clone(), self.nodes.len());
                self.nodes.push(node);
                Some(Change::Node(labels))
            }
        }
    }

    pub fn delete_node(&mut self, name: &str) -> Option<Change> {
        let i = self.node_idx.remove(name)?;
        let gone = self.nodes.swap_remove(i);
        if let Some(moved) = self.nodes.get(i) {
            self.node_idx.insert(moved.name.clone(), i);
        }
        Some(Change::Node(vec![gone.labels]))
    }

    /// A (re)list starts: objects not seen again before `nodes_init_done` are gone.
    pub fn nodes_init(&mut self) {
        self.node_buffer = Some(Vec::new());
    }

    pub fn nodes_init_apply(&mut self, n: &KNode) {
        match &mut self.node_buffer {
            Some(buf) => buf.push(lean_node(n)),
            None => {
                self.apply_node(n);
            }
        }
    }

    pub fn nodes_init_done(&mut self) {
        if let Some(buf) = self.node_buffer.take() {
            self.node_idx = buf
                .iter()
                .enumerate()
                .map(|(i, n)| (n.name.clone(), i))
                .collect();
            self.nodes = buf;
        }
        self.synced.insert(Watched::Nodes);
    }

    // Pods.

    pub fn apply_pod(&mut self, p: &Pod) -> Vec<Change> {
        let Some(key) = key_of(p) else {
            return vec![];
        };
        if is_terminal(p) {
            return self.delete_pod_key(&key);
        }
        let lean = self.lean_pod(p, &key.0);
        let old = self.pods.get(&key);
        if old == Some(&lean) {
            return vec![];
        }
        let changes = pod_changes(&key.0, old, Some(&lean));
        if let Some(old) = self.pods.insert(key.clone(), lean.clone()) {
            self.unaccount(&key, &old);
        }
        self.account(&key, &lean);
        changes
    }

    pub fn delete_pod(&mut self, p: &Pod) -> Vec<Change> {
        match key_of(p) {
            Some(key) => self.delete_pod_key(&key),
            None => vec![],
        }
    }

    fn delete_pod_key(&mut self, key: &(String, String)) -> Vec<Change> {
        let Some(old) = self.pods.remove(key) else {
            return vec![];
        };
        self.unaccount(key, &old);
        pod_changes(&key.0, Some(&old), None)
    }

    pub fn pods_init(&mut self) {
        self.pod_buffer = Some(HashMap::new());
    }

    pub fn pods_init_apply(&mut self, p: &Pod) {
        let Some(key) = key_of(p) else { return };
        if is_terminal(p) {
            return;
        }
        let lean = self.lean_pod(p, &key.0);
        match &mut self.pod_buffer {
            Some(buf) => {
                buf.insert(key, lean);
            }
            None => {
                self.apply_pod(p);
            }
        }
    }

    pub fn pods_init_done(&mut self) {
        if let Some(buf) = self.pod_buffer.take() {
            self.requested.clear();
            self.labelled.clear();
            for (key, p) in &buf {
                self.account(key, p);
            }
            self.pods = buf;
        }
        self.synced.insert(Watched::Pods);
    }

    fn lean_pod(&self, p: &Pod, ns: &str) -> LeanPod {
        let spec = p.spec.as_ref();
        let node = spec
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty());
        let requests = spec.map(pod_requests).unwrap_or_default();
        let gw = self.gateway_namespaces.contains(ns).then(|| {
            let meta = &p.metadata;
            let ready_condition = p
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready" && c.status == "True"));
            let ready = ready_condition.is_some();
            Box::new(GwInfo {
                labels: meta.labels.clone().unwrap_or_default(),
                ready,
                pending: p
                    .status
                    .as_ref()
                    .and_then(|s| s.phase.as_deref())
                    .is_none_or(|ph| ph == "Pending"),
                terminating: meta.deletion_timestamp.is_some(),
                deletion_cost: meta
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(POD_DELETION_COST))
                    .and_then(|v| v.parse().ok()),
                created_at: meta
                    .creation_timestamp
                    .as_ref()
                    .map_or(0.0, |t| t.0.as_second() as f64),
                ready_since: ready_condition
                    .and_then(|c| c.last_transition_time.as_ref())
                    .map(|t| t.0.as_second() as f64),
                ip: p
                    .status
                    .as_ref()
                    .and_then(|s| s.pod_ip.as_deref())
                    .and_then(|ip| ip.parse().ok()),
            })
        });
        LeanPod { node, requests, gw }
    }

    fn account(&mut self, (ns, name): &(String, String), p: &LeanPod) {
        if let Some(n) = &p.node {
            self.requested
                .entry(n.clone())
                .or_default()
                .add(&p.requests);
        }
        if let Some(gw) = &p.gw {
            let by_key = self.labelled.entry(ns.clone()).or_default();
            for (k, v) in &gw.labels {
                by_key
                    .entry(k.clone())
                    .or_default()
                    .entry(v.clone())
                    .or_default()
                    .insert(name.clone());
            }
        }
    }

    fn unaccount(&mut self, (ns, name): &(String, String), p: &LeanPod) {
        if let Some(gw) = &p.gw
            && let Some(by_key) = self.labelled.get_mut(ns)
        {
            for (k, v) in &gw.labels {
                let Some(by_value) = by_key.get_mut(k) else {
                    continue;
                };
                if let Some(names) = by_value.get_mut(v) {
                    names.remove(name);
                    if names.is_empty() {
                        by_value.remove(v);
                    }
                }
                if by_value.is_empty() {
                    by_key.remove(k);
                }
            }
            if by_key.is_empty() {
                self.labelled.remove(ns);
            }
        }
        if let Some((n, r)) = p
            .node
            .as_ref()
            .and_then(|n| self.requested.get_mut(n).map(|r| (n, r)))
        {
            r.sub(&p.requests);
            if r.pods <= 0 {
                self.requested.remove(n);
            }
        }
    }

    // Views for the engine.

    /// The nodes with what their pods request, ready to observe.
    pub fn nodes(&mut self) -> &[Node] {
        for n in &mut self.nodes {
            n.requested = self.requested.get(&n.name).copied().unwrap_or_default();
        }
        &self.nodes
    }

    /// A node's labels, if the index has the node.
    pub fn node_labels(&self, name: &str) -> Option<&BTreeMap<String, String>> {
        self.node_idx.get(name).map(|i| &self.nodes[*i].labels)
    }

    /// The address of a gateway-namespace pod (`status.podIP`), once it has one.
    pub fn pod_ip(&self, ns: &str, name: &str) -> Option<std::net::IpAddr> {
        self.pods
            .get(&(ns.to_string(), name.to_string()))?
            .gw
            .as_ref()?
            .ip
    }

    /// The gateway's pods (in `ns`, matching `selector`), with their pool. An empty selector
    /// selects nothing here: a gateway is never "every pod".
    pub fn gateway_pods(
        &self,
        ns: &str,
        selector: &Selector,
        ecs: &BTreeMap<String, String>,
        eci: &BTreeMap<String, String>,
    ) -> Vec<GatewayPod> {
        if selector.selects_all() {
            return Vec::new();
        }
        let gateway_pod = |name: &String, p: &LeanPod| {
            let gw = p.gw.as_ref()?;
            if !selector.matches(&gw.labels) {
                return None;
            }
            let pool = match &p.node {
                None => Pool::Pending,
                Some(n) => self
                    .node_idx
                    .get(n)
                    .map_or(Pool::Other, |i| classify_node(&self.nodes[*i], ecs, eci)),
            };
            Some(GatewayPod {
                name: name.clone(),
                node: p.node.clone(),
                pool,
                ready: gw.ready,
                pending: gw.pending,
                terminating: gw.terminating,
                requests: p.requests,
                deletion_cost: gw.deletion_cost,
                created_at: gw.created_at,
                ready_since: gw.ready_since,
                drain: None,
            })
        };
        let mut out: Vec<GatewayPod> = match self.candidates(ns, selector) {
            Some(names) => names
                .into_iter()
                .filter_map(|name| {
                    let p = self.pods.get(&(ns.to_string(), name.clone()))?;
                    gateway_pod(name, p)
                })
                .collect(),
            None => self
                .pods
                .iter()
                .filter(|((pns, _), _)| pns == ns)
                .filter_map(|((_, name), p)| gateway_pod(name, p))
                .collect(),
        };
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The names of the pods in `ns` that may match `selector`, from the label index: the
    /// fewest that one of its `key=value` or `key in (...)` terms allows. `None` when it has no
    /// such term (then every pod of the namespace is a candidate).
    fn candidates(&self, ns: &str, selector: &Selector) -> Option<Vec<&String>> {
        let by_key = self.labelled.get(ns);
        // Each term's name sets; the term with the fewest names in all is the one to read.
        let sets = |term: Expression| {
            let (key, values) = match term {
                Expression::Equal(k, v) => (k, vec![v]),
                Expression::In(k, vs) => (k, vs.into_iter().collect()),
                _ => return None,
            };
            let by_value = by_key.and_then(|k| k.get(&key));
            Some(
                values
                    .iter()
                    .filter_map(|v| by_value.and_then(|b| b.get(v)))
                    .collect::<Vec<&HashSet<String>>>(),
            )
        };
        let fewest = selector
            .clone()
            .into_iter()
            .filter_map(sets)
            .min_by_key(|sets| sets.iter().map(|s| s.len()).sum::<usize>())?;
        // The values of one key name disjoint sets of pods: no pod comes twice.
        Some(fewest.into_iter().flatten().collect())
    }
}

/// What replacing pod `old` by `new` (in namespace `ns`) changes: room on the nodes it leaves
/// and takes, and what a gateway sees of it.
fn pod_changes(ns: &str, old: Option<&LeanPod>, new: Option<&LeanPod>) -> Vec<Change> {
    let mut out = vec![];
    let placed = |p: Option<&LeanPod>| p.and_then(|p| p.node.clone().map(|n| (n, p.requests)));
    let (was, is) = (placed(old), placed(new));
    if was != is {
        for (node, _) in [was, is].into_iter().flatten() {
            if !out.contains(&Change::Room(node.clone())) {
                out.push(Change::Room(node));
            }
        }
    }
    fn seen(p: Option<&LeanPod>) -> Option<(&GwInfo, &Option<String>)> {
        p.and_then(|p| p.gw.as_deref().map(|g| (g, &p.node)))
    }
    if seen(old) != seen(new) {
        let labels = [old, new]
            .into_iter()
            .flatten()
            .filter_map(|p| p.gw.as_ref().map(|g| g.labels.clone()))
            .collect::<Vec<_>>();
        if !labels.is_empty() {
            out.push(Change::GatewayPod {
                namespace: ns.to_string(),
                labels,
            });
        }
    }
    out
}

fn key_of(p: &Pod) -> Option<(String, String)> {
    Some((p.metadata.namespace.clone()?, p.metadata.name.clone()?))
}

fn is_terminal(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|ph| ph == "Succeeded" || ph == "Failed")
}

/// A pod's effective requests: the larger of the containers' sum and any init container, plus
/// overhead (as the scheduler's `computePodResourceRequest`). Unparsable quantities count as 0.
pub fn pod_requests(spec: &PodSpec) -> Resources {
    let one = |res: Option<&k8s_openapi::api::core::v1::ResourceRequirements>| {
        let req = res.and_then(|r| r.requests.as_ref());
        let cpu = req
            .and_then(|r| r.get("cpu"))
            .and_then(|q| quantity::cpu_millis(&q.0).ok())
            .unwrap_or(0);
        let mem = req
            .and_then(|r| r.get("memory"))
            .and_then(|q| quantity::bytes(&q.0).ok())
            .unwrap_or(0);
        (cpu, mem)
    };
    // `k8s.io/component-helpers/resource.PodRequests`: the containers and the sidecars (init
    // containers with `restartPolicy: Always`) run together; each init container in turn runs
    // beside the sidecars declared before it, and the pod needs the larger of the two.
    let (mut cpu, mut mem) = (0, 0);
    for c in &spec.containers {
        let (c_cpu, c_mem) = one(c.resources.as_ref());
        cpu += c_cpu;
        mem += c_mem;
    }
    let (mut side_cpu, mut side_mem, mut peak_cpu, mut peak_mem) = (0, 0, 0, 0);
    for c in spec.init_containers.iter().flatten() {
        let (c_cpu, c_mem) = one(c.resources.as_ref());
        if c.restart_policy.as_deref() == Some("Always") {
            side_cpu += c_cpu;
            side_mem += c_mem;
            peak_cpu = peak_cpu.max(side_cpu);
            peak_mem = peak_mem.max(side_mem);
        } else {
            peak_cpu = peak_cpu.max(c_cpu + side_cpu);
            peak_mem = peak_mem.max(c_mem + side_mem);
        }
    }
    cpu = (cpu + side_cpu).max(peak_cpu);
    mem = (mem + side_mem).max(peak_mem);
    if let Some(o) = &spec.overhead {
        cpu += o
            .get("cpu")
            .and_then(|q| quantity::cpu_millis(&q.0).ok())
            .unwrap_or(0);
        mem += o
            .get("memory")
            .and_then(|q| quantity::bytes(&q.0).ok())
            .unwrap_or(0);
    }
    Resources::pod(cpu, mem)
}

fn lean_node(n: &KNode) -> Node {
    let spec = n.spec.as_ref();
    let alloc = n.status.as_ref().and_then(|s| s.allocatable.as_ref());
    let get = |k: &str| alloc.and_then(|a| a.get(k)).map(|q| q.0.clone());
    Node {
        name: n.metadata.name.clone().unwrap_or_default(),
        labels: n.metadata.labels.clone().unwrap_or_default(),
        taints: spec
            .and_then(|s| s.taints.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|t| {
                let effect = match t.effect.as_str() {
                    "NoSchedule" => TaintEffect::NoSchedule,
                    "PreferNoSchedule" => TaintEffect::PreferNoSchedule,
                    "NoExecute" => TaintEffect::NoExecute,
                    _ => return None,
                };
                Some(Taint {
                    key: t.key.clone(),
                    value: t.value.clone().unwrap_or_default(),
                    effect,
                })
            })
            .collect(),
        allocatable: Resources::new(
            get("cpu")
                .and_then(|q| quantity::cpu_millis(&q).ok())
                .unwrap_or(0),
            get("memory")
                .and_then(|q| quantity::bytes(&q).ok())
                .unwrap_or(0),
            get("pods").and_then(|q| q.parse().ok()).unwrap_or(110),
        ),
        requested: Resources::default(),
        unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, labels: serde_json::Value, cpu: &str) -> KNode {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {"taints": [{"key": "mykey", "value": "myvalue", "effect": "NoSchedule"}, {"key": "x", "effect": "Weird"}]},
            "status": {"allocatable": {"cpu": cpu, "memory": "32Gi", "pods": "110"}}
        }))
        .unwrap()
    }

    fn pod(ns: &str, name: &str, node: Option<&str>, cpu: &str, ready: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns, "labels": {"app": "istio-ingressgateway"},
                         "annotations": {POD_DELETION_COST: "-100"}, "creationTimestamp": "2026-11-24T10:00:00Z"},
            "spec": {"nodeName": node, "containers": [
                {"name": "istio-proxy", "resources": {"requests": {"cpu": cpu, "memory": "1Gi"}}},
                {"name": "sidecar", "resources": {"requests": {"cpu": "100m"}}}],
                "initContainers": [{"name": "init", "resources": {"requests": {"cpu": "4", "memory": "64Mi"}}}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
        }))
        .unwrap()
    }

    fn selector() -> Selector {
        Selector::from_iter([("app", "istio-ingressgateway")])
    }

    fn pools() -> (BTreeMap<String, String>, BTreeMap<String, String>) {
        (
            [("mykey4pod".into(), "asmgateway".into())].into(),
            [("type".into(), "virtual-kubelet".into())].into(),
        )
    }

    #[test]
    fn requests_follow_the_scheduler() {
        let p = pod("a", "p", None, "2", true);
        // containers 2 + 0.1 = 2.1 vCPU, but the init container asks 4: the pod needs 4.
        assert_eq!(
            pod_requests(p.spec.as_ref().unwrap()),
            Resources::pod(4000, 1 << 30)
        );
    }

    /// Sidecars (init containers with `restartPolicy: Always`) run beside the containers and
    /// beside every init container declared after them (component-helpers `PodRequests`).
    #[test]
    fn sidecars_add_to_the_pod_as_upstream_counts_them() {
        let spec = |inits: serde_json::Value| -> PodSpec {
            serde_json::from_value(json!({
                "containers": [{"name": "app", "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}}],
                "initContainers": inits
            }))
            .unwrap()
        };
        let sidecar = json!({"name": "proxy", "restartPolicy": "Always", "resources": {"requests": {"cpu": "100m"}}});
        assert_eq!(
            pod_requests(&spec(json!([sidecar]))).cpu_millis,
            600,
            "containers 500m + a 100m sidecar"
        );
        let init = json!({"name": "setup", "resources": {"requests": {"cpu": "550m"}}});
        assert_eq!(
            pod_requests(&spec(json!([sidecar, init]))).cpu_millis,
            650,
            "an init container after the sidecar runs beside it: 550m + 100m"
        );
        let init = json!({"name": "setup", "resources": {"requests": {"cpu": "550m"}}});
        assert_eq!(
            pod_requests(&spec(json!([init, sidecar]))).cpu_millis,
            600,
            "before the sidecar it runs alone: max(550m, 500m + 100m)"
        );
    }

    #[test]
    fn pods_add_up_on_their_nodes_and_leave_cleanly() {
        let mut ix = ClusterIndex::new(["istio-system".to_string()]);
        ix.apply_node(&node("ecs-1", json!({"mykey4pod": "asmgateway"}), "8"));
        ix.apply_node(&node("vk", json!({"type": "virtual-kubelet"}), "1000"));
        ix.apply_pod(&pod("istio-system", "gw-1", Some("ecs-1"), "2", true));
        ix.apply_pod(&pod("istio-system", "gw-2", Some("vk"), "2", false));
        ix.apply_pod(&pod("shop", "cart", Some("ecs-1"), "1", true));
        let mut unbound = pod("istio-system", "gw-3", None, "2", false);
        unbound.status.as_mut().unwrap().phase = Some("Pending".into());
        ix.apply_pod(&unbound);
        let n = ix.nodes();
        assert_eq!(n[0].requested, Resources::new(8000, 2 << 30, 2));
        assert_eq!(n[0].taints.len(), 1, "unknown effects are skipped");
        let (ecs, eci) = pools();
        let gws = ix.gateway_pods("istio-system", &selector(), &ecs, &eci);
        let summary: Vec<(&str, Pool, bool, bool, Option<i32>)> = gws
            .iter()
            .map(|g| (g.name.as_str(), g.pool, g.ready, g.pending, g.deletion_cost))
            .collect();
        // gw-2 is Running but not Ready; gw-3 is Pending (the HPA's two kinds of unready).
        assert_eq!(
            summary,
            vec![
                ("gw-1", Pool::Ecs, true, false, Some(-100)),
                ("gw-2", Pool::Eci, false, false, Some(-100)),
                ("gw-3", Pool::Pending, false, true, Some(-100))
            ]
        );
        // Pods outside the gateway namespaces count for capacity but are never gateway pods.
        assert!(ix.gateway_pods("shop", &selector(), &ecs, &eci).is_empty());
        // Moving, finishing and deleting pods keep the sums right.
        ix.apply_pod(&pod("shop", "cart", Some("ecs-1"), "3", true));
        assert_eq!(ix.nodes()[0].requested.cpu_millis, 8000 - 4000 + 4000);
        let mut done = pod("shop", "cart", Some("ecs-1"), "3", true);
        done.status.as_mut().unwrap().phase = Some("Succeeded".into());
        ix.apply_pod(&done);
        assert_eq!(ix.nodes()[0].requested, Resources::new(4000, 1 << 30, 1));
        ix.delete_pod(&pod("istio-system", "gw-1", Some("ecs-1"), "2", true));
        assert_eq!(ix.nodes()[0].requested, Resources::default());
        // A pod on a node not (yet) known is classified Other.
        ix.apply_pod(&pod("istio-system", "gw-4", Some("unknown"), "2", true));
        assert!(
            ix.gateway_pods("istio-system", &selector(), &ecs, &eci)
                .iter()
                .any(|g| g.pool == Pool::Other)
        );
    }

    /// The label index finds what a scan of every pod finds, through adds, relabels, deletions,
    /// pods that finish and relists, for selectors with and without an equality term (the last
    /// two take the namespace scan); and it is at every step what a rebuild from the pods
    /// would be: nothing stale, nothing missing, no empty level.
    #[test]
    fn the_label_index_finds_what_a_scan_finds() {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestRunner};
        let op = (0..6u8, 0..12usize, 0..3usize, 0..2usize, any::<bool>());
        let mut runner = TestRunner::new(Config::with_cases(64));
        let selectors: Vec<Selector> = vec![
            Selector::from_iter([("app", "a")]),
            Selector::from_iter([("app", "a"), ("rev", "1")]),
            Selector::from_iter([Expression::In(
                "app".into(),
                ["a".to_string(), "b".to_string()].into(),
            )]),
            Selector::from_iter([Expression::Exists("rev".into())]),
            Selector::from_iter([Expression::NotEqual("app".into(), "a".into())]),
        ];
        let (ecs, eci) = pools();
        runner
            .run(&proptest::collection::vec(op, 1..60), |ops| {
                let mut ix = ClusterIndex::new(["gw".to_string()]);
                for (kind, n, app, rev, ns) in ops {
                    let ns = if ns { "gw" } else { "shop" };
                    let mut p = pod(ns, &format!("p{n}"), Some("ecs-1"), "1", true);
                    let labels = p.metadata.labels.get_or_insert_default();
                    labels.insert("app".into(), ["a", "b", "c"][app].into());
                    if rev == 1 {
                        labels.insert("rev".into(), "1".into());
                    }
                    match kind {
                        0 | 1 => {
                            ix.apply_pod(&p);
                        }
                        2 => {
                            ix.delete_pod(&p);
                        }
                        3 => {
                            p.status.as_mut().unwrap().phase = Some("Succeeded".into());
                            ix.apply_pod(&p);
                        }
                        _ => {
                            // A relist that keeps every pod it had but this one, relabelled
                            // (or, for kind 5, gone).
                            let kept: Vec<((String, String), LeanPod)> = ix
                                .pods
                                .iter()
                                .map(|(k, v)| (k.clone(), v.clone()))
                                .collect();
                            ix.pods_init();
                            for ((pns, name), lean) in kept {
                                if (pns.as_str(), name.as_str())
                                    != (ns, p.metadata.name.as_deref().unwrap())
                                {
                                    ix.pod_buffer.as_mut().unwrap().insert((pns, name), lean);
                                }
                            }
                            if kind == 4 {
                                ix.pods_init_apply(&p);
                            }
                            ix.pods_init_done();
                        }
                    }
                    for s in &selectors {
                        let found: Vec<String> = ix
                            .gateway_pods("gw", s, &ecs, &eci)
                            .into_iter()
                            .map(|g| g.name)
                            .collect();
                        let mut scanned: Vec<String> = ix
                            .pods
                            .iter()
                            .filter(|((pns, _), p)| {
                                pns == "gw" && p.gw.as_ref().is_some_and(|g| s.matches(&g.labels))
                            })
                            .map(|((_, name), _)| name.clone())
                            .collect();
                        scanned.sort();
                        prop_assert_eq!(&found, &scanned, "selector {}", s);
                    }
                    let mut rebuilt: HashMap<String, ByLabel> = HashMap::new();
                    for ((pns, name), p) in &ix.pods {
                        for (k, v) in p.gw.iter().flat_map(|g| &g.labels) {
                            rebuilt
                                .entry(pns.clone())
                                .or_default()
                                .entry(k.clone())
                                .or_default()
                                .entry(v.clone())
                                .or_default()
                                .insert(name.clone());
                        }
                    }
                    prop_assert_eq!(&ix.labelled, &rebuilt);
                }
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn a_relist_replaces_everything() {
        let mut ix = ClusterIndex::new(["istio-system".to_string()]);
        ix.apply_node(&node("old", json!({}), "8"));
        ix.apply_pod(&pod("istio-system", "gone", Some("old"), "2", true));
        assert!(!ix.synced());
        ix.nodes_init();
        ix.nodes_init_apply(&node("new", json!({"mykey4pod": "asmgateway"}), "8"));
        ix.nodes_init_done();
        ix.pods_init();
        ix.pods_init_apply(&pod("istio-system", "kept", Some("new"), "1", true));
        ix.pods_init_done();
        // Nodes and pods listed, but not yet the gateway namespace's Deployments and HPAs.
        assert!(!ix.synced());
        assert_eq!(
            ix.health("istio-system"),
            Err(Unsynced::NotListed(Watched::Deployments(
                "istio-system".into()
            )))
        );
        ix.listed(Watched::Deployments("istio-system".into()));
        ix.listed(Watched::Autoscalers("istio-system".into()));
        assert!(!ix.synced(), "the PlannedEvents have not answered");
        // Refused (no CRD): an answer; it holds no decision.
        ix.watch_failed(Watched::PlannedEvents, "404 page not found".into());
        assert!(ix.synced());
        assert_eq!(
            ix.planned_seen(),
            PlannedSeen::Unavailable("404 page not found".into())
        );
        assert_eq!(ix.health("istio-system"), Ok(()));
        ix.watch_ok(&Watched::PlannedEvents);
        ix.listed(Watched::PlannedEvents);
        assert_eq!(ix.planned_seen(), PlannedSeen::Listed);
        assert_eq!(ix.counts(), (1, 1));
        let n = ix.nodes();
        assert_eq!(
            (n[0].name.as_str(), n[0].requested.cpu_millis),
            ("new", 4000)
        );
        ix.delete_node("new");
        assert_eq!(ix.counts(), (0, 1));
    }

    #[test]
    fn selectors_match_labels_and_expressions() {
        let mut s = selector();
        let labels: BTreeMap<String, String> = [
            ("app".into(), "istio-ingressgateway".into()),
            ("istio".into(), "ingressgateway".into()),
        ]
        .into();
        assert!(s.matches(&labels));
        s.extend([kube::core::Expression::In(
            "istio".into(),
            ["other".to_string()].into(),
        )]);
        assert!(!s.matches(&labels));
        assert!(Selector::default().selects_all());
    }

    /// Only what the index keeps counts as a change: a kubelet's heartbeat or a status update
    /// that moves nothing wakes no gateway; a relabelled node names both label sets; a pod's
    /// binding is room taken on its node and, for a gateway pod, a change its gateway sees.
    #[test]
    fn changes_are_what_the_index_keeps() {
        let mut ix = ClusterIndex::new(["istio-system".to_string()]);
        let ecs = json!({"mykey4pod": "asmgateway"});
        let n = node("ecs-1", ecs.clone(), "8");
        assert_eq!(
            ix.apply_node(&n),
            Some(Change::Node(vec![
                serde_json::from_value(ecs.clone()).unwrap()
            ]))
        );
        let mut heartbeat = n.clone();
        heartbeat.status.as_mut().unwrap().conditions = Some(vec![serde_json::from_value(
            json!({"type": "Ready", "status": "True", "lastHeartbeatTime": "2026-12-06T00:00:00Z"}),
        )
        .unwrap()]);
        assert_eq!(ix.apply_node(&heartbeat), None, "a heartbeat");
        let relabelled = node("ecs-1", json!({"pool": "batch"}), "8");
        assert_eq!(
            ix.apply_node(&relabelled),
            Some(Change::Node(vec![
                serde_json::from_value(ecs).unwrap(),
                [("pool".to_string(), "batch".to_string())].into()
            ]))
        );
        assert_eq!(
            ix.delete_node("ecs-1"),
            Some(Change::Node(vec![
                [("pool".to_string(), "batch".to_string())].into()
            ]))
        );
        assert_eq!(ix.delete_node("ecs-1"), None);

        let gw_labels: BTreeMap<String, String> =
            [("app".to_string(), "istio-ingressgateway".to_string())].into();
        let gw_pod = Change::GatewayPod {
            namespace: "istio-system".into(),
            labels: vec![gw_labels.clone()],
        };
        let gw_pod_twice = Change::GatewayPod {
            namespace: "istio-system".into(),
            labels: vec![gw_labels.clone(), gw_labels.clone()],
        };
        // A gateway pod created, then bound: room taken on its node, and its gateway sees it.
        let pending = pod("istio-system", "gw-1", None, "1", false);
        assert_eq!(ix.apply_pod(&pending), vec![gw_pod.clone()]);
        let bound = pod("istio-system", "gw-1", Some("ecs-2"), "1", false);
        assert_eq!(
            ix.apply_pod(&bound),
            vec![Change::Room("ecs-2".into()), gw_pod_twice.clone()]
        );
        // The same pod again (a status update that changes nothing kept): no change.
        assert_eq!(ix.apply_pod(&bound), vec![]);
        // Ready: only its gateway sees it.
        let ready = pod("istio-system", "gw-1", Some("ecs-2"), "1", true);
        assert_eq!(ix.apply_pod(&ready), vec![gw_pod_twice]);
        // Another namespace's pod: only room, and no change at all while it moves nothing.
        let other = pod("batch", "job-1", Some("ecs-2"), "2", false);
        assert_eq!(ix.apply_pod(&other), vec![Change::Room("ecs-2".into())]);
        let mut relabelled = other.clone();
        relabelled.metadata.labels = Some([("x".to_string(), "y".to_string())].into());
        assert_eq!(ix.apply_pod(&relabelled), vec![]);
        assert_eq!(ix.delete_pod(&other), vec![Change::Room("ecs-2".into())]);
        assert_eq!(
            ix.delete_pod(&ready),
            vec![Change::Room("ecs-2".into()), gw_pod.clone()]
        );
    }
}
