//! A model of kube-scheduler's default profile, for the plugins that decide where a gateway pod
//! lands: the one place in spillway that knows scheduling semantics. The engine uses the
//! filters to count ECS room; the simulator uses filters and scores to place pods.
//!
//! Upstream references (kubernetes/kubernetes, `pkg/scheduler`):
//! - default plugins and weights: `apis/config/v1/default_plugins.go` — TaintToleration 3,
//!   NodeAffinity 2, InterPodAffinity 2, PodTopologySpread 2, NodeResourcesFit 1,
//!   NodeResourcesBalancedAllocation 1 (ImageLocality scores equally here: every node is taken
//!   to have the image). InterPodAffinity only for a preferred affinity to the gateway's own
//!   pods (what spillway writes into an IstioGateway);
//! - PodTopologySpread with the system-default constraints (`maxSkew: 3` on
//!   `kubernetes.io/hostname`, `maxSkew: 5` on the zone, both `ScheduleAnyway`), selecting the
//!   pods of the gateway's ReplicaSet (`podtopologyspread/scoring.go`): a node's raw score is
//!   `round(cnt * ln(feasible + 2) + maxSkew - 1)` for the pods of the set already on it (not
//!   terminating), normalised reversed as `100 * (max + min - s) / max`. The zone term counts only
//!   on nodes that carry the zone label; the fidelity test (`tests/fidelity.rs`) found that
//!   leaving this plugin out places no gateway pod on a virtual node while ECS has room, where
//!   the real scheduler does;
//! - PodTopologySpread with the pod's own constraints (they replace the defaults): a node that
//!   lacks any of their topology keys is left out (`requireAllTopologies`) and scores 0; the
//!   others as above. A domain's pods are counted on every node in it, feasible or not (a full
//!   node's pods weigh on its zone). `tests/placement.rs` checks the model against the real
//!   scheduler on 13 templates;
//! - filters: `framework/plugins/{nodeunschedulable,tainttoleration,nodeaffinity,noderesources}`;
//!   TaintToleration filters on `NoSchedule` and `NoExecute` taints only;
//! - NodeAffinity score: sum of the weights of the matching preferred terms, then
//!   `helper.DefaultNormalizeScore(MaxNodeScore, false, ..)`: `score * 100 / max` (integer);
//! - TaintToleration score: count of intolerable `PreferNoSchedule` taints, normalised reversed;
//! - NodeResourcesFit score, `LeastAllocated` strategy over cpu and memory (weight 1 each):
//!   `(allocatable - requested) * 100 / allocatable`, with the incoming pod included;
//! - BalancedAllocation: `(1 - std(fractions)) * 100`, where for two resources the standard
//!   deviation is `|f_cpu - f_mem| / 2` (`balanced_allocation.go`, since v1.26);
//! - ties between the best nodes are broken at random (`schedule_one.go` `selectHost`, reservoir
//!   sampling): callers pass their own seeded choice.

use crate::model::{Node, OwnPodAffinity, PodTemplate, SpreadConstraint, TaintEffect};

/// The largest score a plugin gives a node (`framework.MaxNodeScore`).
pub const MAX_NODE_SCORE: i64 = 100;

/// Plugin weights of the default profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Weights {
    pub taint_toleration: i64,
    pub node_affinity: i64,
    pub inter_pod_affinity: i64,
    pub topology_spread: i64,
    pub resources_fit: i64,
    pub balanced_allocation: i64,
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            taint_toleration: 3,
            node_affinity: 2,
            inter_pod_affinity: 2,
            topology_spread: 2,
            resources_fit: 1,
            balanced_allocation: 1,
        }
    }
}

/// Why a node was filtered out, named after the plugin that rejected it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unfit {
    Unschedulable,
    UntoleratedTaint,
    NodeAffinity,
    InsufficientCpu,
    InsufficientMemory,
    TooManyPods,
}

/// The filters that do not depend on free room: cordon, taints, required affinity and
/// `nodeSelector`. True when the pod could ever run on the node.
pub fn static_fit(pod: &PodTemplate, node: &Node) -> Result<(), Unfit> {
    if node.unschedulable {
        // NodeUnschedulable: a pod may tolerate the `node.kubernetes.io/unschedulable` taint.
        let cordon = crate::model::Taint {
            key: "node.kubernetes.io/unschedulable".into(),
            value: String::new(),
            effect: TaintEffect::NoSchedule,
        };
        if !pod.tolerations.iter().any(|t| t.tolerates(&cordon)) {
            return Err(Unfit::Unschedulable);
        }
    }
    let blocking = node
        .taints
        .iter()
        .filter(|t| matches!(t.effect, TaintEffect::NoSchedule | TaintEffect::NoExecute));
    for taint in blocking {
        if !pod.tolerations.iter().any(|t| t.tolerates(taint)) {
            return Err(Unfit::UntoleratedTaint);
        }
    }
    if !node.has_labels(&pod.node_selector) {
        return Err(Unfit::NodeAffinity);
    }
    if !pod.required_terms.is_empty()
        && !pod
            .required_terms
            .iter()
            .any(|t| t.matches(&node.name, &node.labels))
    {
        return Err(Unfit::NodeAffinity);
    }
    Ok(())
}

/// NodeResourcesFit's filter: the pod's requests fit in what is left, and a pod slot is free.
pub fn resource_fit(pod: &PodTemplate, node: &Node) -> Result<(), Unfit> {
    let free = node.free();
    if free.pods < 1 {
        return Err(Unfit::TooManyPods);
    }
    // A resource the pod does not request is not checked, even on an overcommitted node
    // (NodeResourcesFit's `fitsRequest`: `podRequest.MilliCPU > 0 && …`).
    if pod.requests.cpu_millis > 0 && pod.requests.cpu_millis > free.cpu_millis {
        return Err(Unfit::InsufficientCpu);
    }
    if pod.requests.memory_bytes > 0 && pod.requests.memory_bytes > free.memory_bytes {
        return Err(Unfit::InsufficientMemory);
    }
    Ok(())
}

/// All the filters of the default profile that matter here.
pub fn filter(pod: &PodTemplate, node: &Node) -> Result<(), Unfit> {
    static_fit(pod, node)?;
    resource_fit(pod, node)
}

/// How many more copies of `pod` fit on `node`, filters included (0 if it does not pass them).
pub fn room_for(pod: &PodTemplate, node: &Node) -> i64 {
    if static_fit(pod, node).is_err() {
        return 0;
    }
    node.free().fits_count(&pod.requests)
}

/// Raw (unnormalised) scores of one feasible node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RawScore {
    affinity: i64,
    intolerable: i64,
    least_allocated: i64,
    balanced: i64,
}

fn raw_score(pod: &PodTemplate, node: &Node) -> RawScore {
    let affinity = pod
        .preferred_terms
        .iter()
        .filter(|t| t.weight != 0 && t.preference.matches(&node.name, &node.labels))
        .map(|t| i64::from(t.weight))
        .sum();
    let intolerable = node
        .taints
        .iter()
        .filter(|t| t.effect == TaintEffect::PreferNoSchedule)
        .filter(|taint| {
            !pod.tolerations.iter().any(|t| {
                (t.effect.is_none() || t.effect == Some(TaintEffect::PreferNoSchedule))
                    && t.tolerates(taint)
            })
        })
        .count() as i64;
    let alloc = node.allocatable;
    let cpu_req = node.requested.cpu_millis + pod.requests.cpu_millis;
    let mem_req = node.requested.memory_bytes + pod.requests.memory_bytes;
    let least = |req: i64, cap: i64| {
        if cap <= 0 || req > cap {
            0
        } else {
            (cap - req) * MAX_NODE_SCORE / cap
        }
    };
    let least_allocated =
        (least(cpu_req, alloc.cpu_millis) + least(mem_req, alloc.memory_bytes)) / 2;
    let frac = |req: i64, cap: i64| {
        if cap <= 0 {
            1.0
        } else {
            (req as f64 / cap as f64).min(1.0)
        }
    };
    let std = (frac(cpu_req, alloc.cpu_millis) - frac(mem_req, alloc.memory_bytes)).abs() / 2.0;
    let balanced = ((1.0 - std) * MAX_NODE_SCORE as f64) as i64;
    RawScore {
        affinity,
        intolerable,
        least_allocated,
        balanced,
    }
}

/// The system-default spreading constraints: (topology key, maxSkew).
const DEFAULT_SPREAD: [(&str, i64); 2] = [
    ("kubernetes.io/hostname", 3),
    ("topology.kubernetes.io/zone", 5),
];

/// PodTopologySpread's normalised scores under the system-default constraints; `same_set[i]` is
/// the number of the pod's ReplicaSet's pods (not terminating) on `feasible[i]`.
fn spread_scores(feasible: &[&Node], same_set: &[i64], elsewhere: &[(&Node, i64)]) -> Vec<i64> {
    // The hostname constraint spans the feasible nodes; a node is its own host whatever its
    // labels say (the real scheduler reads the label, which every kubelet sets to the name).
    let host_weight = ((feasible.len() + 2) as f64).ln();
    let zone_of = |n: &Node| n.labels.get(DEFAULT_SPREAD[1].0).cloned();
    let mut zones: std::collections::BTreeMap<String, i64> = std::collections::BTreeMap::new();
    for (n, c) in feasible.iter().zip(same_set) {
        if let Some(z) = zone_of(n) {
            *zones.entry(z).or_default() += c;
        }
    }
    // A zone's pods on nodes that cannot take this pod count too.
    for (n, c) in elsewhere {
        if let Some(count) = zone_of(n).and_then(|z| zones.get_mut(&z)) {
            *count += c;
        }
    }
    let zone_weight = ((zones.len() + 2) as f64).ln();
    let raw: Vec<i64> = feasible
        .iter()
        .zip(same_set)
        .map(|(n, c)| {
            let mut s = *c as f64 * host_weight + (DEFAULT_SPREAD[0].1 - 1) as f64;
            if let Some(z) = zone_of(n) {
                s += zones[&z] as f64 * zone_weight + (DEFAULT_SPREAD[1].1 - 1) as f64;
            }
            s.round() as i64
        })
        .collect();
    let max = raw.iter().copied().max().unwrap_or(0);
    let min = raw.iter().copied().min().unwrap_or(0);
    raw.iter()
        .map(|s| {
            if max == 0 {
                MAX_NODE_SCORE
            } else {
                MAX_NODE_SCORE * (max + min - s) / max
            }
        })
        .collect()
}

/// InterPodAffinity's normalised scores for the pod's preferred affinity to its own pods
/// (`interpodaffinity/scoring.go`): a node scores each term's weight for every gateway pod in
/// its domain of the term's key (on any node, feasible or not; a node without the key scores
/// nothing), then `100 * (s - min) / (max - min)` over the feasible nodes. Each existing pod
/// carries the same term and matches the incoming pod, which doubles every raw score upstream
/// and changes nothing after normalising.
fn pod_affinity_scores(
    terms: &[OwnPodAffinity],
    feasible: &[&Node],
    same_set: &[i64],
    elsewhere: &[(&Node, i64)],
) -> Vec<i64> {
    if terms.is_empty() {
        return vec![0; feasible.len()];
    }
    let everywhere: Vec<(&Node, i64)> = feasible
        .iter()
        .copied()
        .zip(same_set.iter().copied())
        .chain(elsewhere.iter().copied())
        .collect();
    let raw: Vec<i64> = feasible
        .iter()
        .map(|n| {
            terms
                .iter()
                .map(|t| {
                    let Some(v) = n.labels.get(&t.topology_key) else {
                        return 0;
                    };
                    let pods: i64 = everywhere
                        .iter()
                        .filter(|(m, _)| m.labels.get(&t.topology_key) == Some(v))
                        .map(|(_, c)| c)
                        .sum();
                    i64::from(t.weight) * pods
                })
                .sum()
        })
        .collect();
    let max = raw.iter().copied().max().unwrap_or(0);
    let min = raw.iter().copied().min().unwrap_or(0);
    raw.iter()
        .map(|s| {
            if max > min {
                (MAX_NODE_SCORE as f64 * ((s - min) as f64 / (max - min) as f64)) as i64
            } else {
                0
            }
        })
        .collect()
}

/// PodTopologySpread's normalised scores under the pod's own (soft) constraints.
fn own_spread_scores(
    constraints: &[SpreadConstraint],
    feasible: &[&Node],
    same_set: &[i64],
    elsewhere: &[(&Node, i64)],
) -> Vec<i64> {
    const HOSTNAME: &str = "kubernetes.io/hostname";
    let value = |n: &Node, key: &str| -> Option<String> {
        if key == HOSTNAME {
            Some(n.name.clone())
        } else {
            n.labels.get(key).cloned()
        }
    };
    let ignored: Vec<bool> = feasible
        .iter()
        .map(|n| {
            constraints
                .iter()
                .any(|c| value(n, &c.topology_key).is_none())
        })
        .collect();
    let kept = ignored.iter().filter(|i| !**i).count();
    // Per constraint: the pods in each domain and the normalising weight ln(domains + 2).
    let domains: Vec<(std::collections::BTreeMap<String, i64>, f64)> = constraints
        .iter()
        .map(|c| {
            let mut counts = std::collections::BTreeMap::new();
            for ((n, cnt), skip) in feasible.iter().zip(same_set).zip(&ignored) {
                if !skip && let Some(v) = value(n, &c.topology_key) {
                    *counts.entry(v).or_default() += cnt;
                }
            }
            let size = if c.topology_key == HOSTNAME {
                kept
            } else {
                counts.len()
            };
            // A domain's pods on nodes that cannot take this pod count too (nodes with every
            // key, in a domain some candidate is in).
            for (n, cnt) in elsewhere {
                let all_keys = constraints
                    .iter()
                    .all(|k| value(n, &k.topology_key).is_some());
                if c.topology_key != HOSTNAME
                    && all_keys
                    && let Some(d) = value(n, &c.topology_key).and_then(|v| counts.get_mut(&v))
                {
                    *d += cnt;
                }
            }
            (counts, ((size + 2) as f64).ln())
        })
        .collect();
    let raw: Vec<Option<i64>> = feasible
        .iter()
        .zip(&ignored)
        .map(|(n, skip)| {
            (!skip).then(|| {
                constraints
                    .iter()
                    .zip(&domains)
                    .map(|(c, (counts, weight))| {
                        let v = value(n, &c.topology_key).unwrap_or_default();
                        let cnt = counts.get(&v).copied().unwrap_or(0);
                        cnt as f64 * weight + (c.max_skew - 1) as f64
                    })
                    .sum::<f64>()
                    .round() as i64
            })
        })
        .collect();
    let max = raw.iter().flatten().copied().max().unwrap_or(0);
    let min = raw.iter().flatten().copied().min().unwrap_or(0);
    raw.iter()
        .map(|s| match s {
            None => 0,
            Some(_) if max == 0 => MAX_NODE_SCORE,
            Some(s) => MAX_NODE_SCORE * (max + min - s) / max,
        })
        .collect()
}

/// Scores the feasible nodes as the default profile does and returns each node's total, in
/// the order given. `same_set[i]` counts the pod's ReplicaSet's pods on `feasible[i]` (empty:
/// none anywhere).
pub fn score(
    pod: &PodTemplate,
    feasible: &[&Node],
    same_set: &[i64],
    elsewhere: &[(&Node, i64)],
    weights: &Weights,
) -> Vec<i64> {
    let raw: Vec<RawScore> = feasible.iter().map(|n| raw_score(pod, n)).collect();
    let counts: Vec<i64> = (0..feasible.len())
        .map(|i| same_set.get(i).copied().unwrap_or(0))
        .collect();
    let spread = if pod.spread.is_empty() {
        spread_scores(feasible, &counts, elsewhere)
    } else {
        own_spread_scores(&pod.spread, feasible, &counts, elsewhere)
    };
    let pod_affinity = pod_affinity_scores(&pod.pod_affinity, feasible, &counts, elsewhere);
    let max_affinity = raw.iter().map(|r| r.affinity).max().unwrap_or(0);
    let max_intolerable = raw.iter().map(|r| r.intolerable).max().unwrap_or(0);
    raw.iter()
        .zip(&spread)
        .zip(&pod_affinity)
        .map(|((r, spread), pod_affinity)| {
            // DefaultNormalizeScore(MaxNodeScore, reverse=false): all zero stays zero.
            let affinity = if max_affinity > 0 {
                r.affinity * MAX_NODE_SCORE / max_affinity
            } else {
                0
            };
            // DefaultNormalizeScore(MaxNodeScore, reverse=true): all zero becomes the maximum.
            let taint = if max_intolerable > 0 {
                MAX_NODE_SCORE - r.intolerable * MAX_NODE_SCORE / max_intolerable
            } else {
                MAX_NODE_SCORE
            };
            affinity * weights.node_affinity
                + pod_affinity * weights.inter_pod_affinity
                + spread * weights.topology_spread
                + taint * weights.taint_toleration
                + r.least_allocated * weights.resources_fit
                + r.balanced * weights.balanced_allocation
        })
        .collect()
}

/// Picks the node for one pod: filter, score, then the best; `same_set(node)` counts the pod's
/// ReplicaSet's pods already there (for PodTopologySpread); `tie_break(n)` chooses among `n`
/// equally good nodes (a seeded RNG in the simulator). `None`: the pod stays Pending.
pub fn select_node<'a>(
    pod: &PodTemplate,
    nodes: impl IntoIterator<Item = &'a Node>,
    weights: &Weights,
    same_set: impl Fn(&Node) -> i64,
    tie_break: impl FnOnce(usize) -> usize,
) -> Option<&'a Node> {
    let (feasible, infeasible): (Vec<&Node>, Vec<&Node>) =
        nodes.into_iter().partition(|n| filter(pod, n).is_ok());
    let counts: Vec<i64> = feasible.iter().map(|n| same_set(n)).collect();
    let elsewhere: Vec<(&Node, i64)> = infeasible
        .into_iter()
        .map(|n| (n, same_set(n)))
        .filter(|(_, c)| *c > 0)
        .collect();
    let scores = score(pod, &feasible, &counts, &elsewhere, weights);
    let best = *scores.iter().max()?;
    let top: Vec<&Node> = feasible
        .iter()
        .zip(&scores)
        .filter(|(_, s)| **s == best)
        .map(|(n, _)| *n)
        .collect();
    let pick = if top.len() > 1 {
        tie_break(top.len()).min(top.len() - 1)
    } else {
        0
    };
    Some(top[pick])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        PreferredTerm, Resources, SelectorRequirement, SelectorTerm, Taint, Toleration,
    };
    use std::collections::BTreeMap;

    const GI: i64 = 1 << 30;

    /// A preferred affinity to the gateway's own pods over the pool label: every node of the
    /// pool's domain holding gateway pods scores the most, a node without the key nothing.
    #[test]
    fn pod_affinity_scores_the_pool_domain() {
        let n = |name: &str, pool: bool| Node {
            name: name.into(),
            labels: if pool {
                [("mykey4pod".to_string(), "asmgateway".to_string())].into()
            } else {
                BTreeMap::new()
            },
            ..Node::default()
        };
        let (a, b, v, full) = (n("a", true), n("b", true), n("v", false), n("full", true));
        let terms = [OwnPodAffinity {
            topology_key: "mykey4pod".into(),
            weight: 100,
        }];
        // Pods only on a node that cannot take this one: its domain still counts.
        assert_eq!(
            pod_affinity_scores(&terms, &[&a, &b, &v], &[0, 0, 3], &[(&full, 5)]),
            vec![100, 100, 0]
        );
        // No gateway pod in any domain: no preference.
        assert_eq!(
            pod_affinity_scores(&terms, &[&a, &v], &[0, 0], &[]),
            vec![0, 0]
        );
        assert_eq!(
            pod_affinity_scores(&[], &[&a, &v], &[1, 1], &[]),
            vec![0, 0]
        );
    }

    fn node(name: &str, labels: &[(&str, &str)], alloc: Resources, used: Resources) -> Node {
        Node {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            taints: vec![],
            allocatable: alloc,
            requested: used,
            unschedulable: false,
        }
    }

    fn ecs(name: &str, used_cpu: i64) -> Node {
        let mut n = node(
            name,
            &[("mykey4pod", "asmgateway")],
            Resources::new(8000, 32 * GI, 110),
            Resources::new(used_cpu, 4 * GI, 5),
        );
        n.taints.push(Taint {
            key: "mykey".into(),
            value: "myvalue".into(),
            effect: TaintEffect::NoSchedule,
        });
        n
    }

    fn virtual_node() -> Node {
        let mut n = node(
            "virtual-kubelet-cn-hangzhou-k",
            &[("type", "virtual-kubelet")],
            Resources::new(2_000_000, 8192 * GI, 20_000),
            Resources::default(),
        );
        n.taints.push(Taint {
            key: "virtual-kubelet.io/provider".into(),
            value: "alibabacloud".into(),
            effect: TaintEffect::NoSchedule,
        });
        n
    }

    fn gateway(ecs_weight: i32, eci_weight: i32) -> PodTemplate {
        PodTemplate {
            requests: Resources::pod(2000, 2 * GI),
            tolerations: vec![
                Toleration::equal("mykey", "myvalue", TaintEffect::NoSchedule),
                Toleration::equal(
                    "virtual-kubelet.io/provider",
                    "alibabacloud",
                    TaintEffect::NoSchedule,
                ),
            ],
            required_terms: vec![
                SelectorTerm::with(vec![SelectorRequirement::is_in(
                    "mykey4pod",
                    &["asmgateway"],
                )]),
                SelectorTerm::with(vec![SelectorRequirement::is_in(
                    "type",
                    &["virtual-kubelet"],
                )]),
            ],
            preferred_terms: vec![
                PreferredTerm {
                    weight: ecs_weight,
                    preference: SelectorTerm::with(vec![SelectorRequirement::is_in(
                        "mykey4pod",
                        &["asmgateway"],
                    )]),
                },
                PreferredTerm {
                    weight: eci_weight,
                    preference: SelectorTerm::with(vec![SelectorRequirement::is_in(
                        "type",
                        &["virtual-kubelet"],
                    )]),
                },
            ],
            node_selector: BTreeMap::new(),
            spread: vec![],
            pod_affinity: vec![],
        }
    }

    fn pick(pod: &PodTemplate, nodes: &[Node]) -> Option<String> {
        select_node(pod, nodes, &Weights::default(), |_| 0, |_| 0).map(|n| n.name.clone())
    }

    #[test]
    fn filters_taints_affinity_and_fit() {
        let pod = gateway(80, 20);
        let mut plain = node(
            "worker",
            &[],
            Resources::new(8000, 32 * GI, 110),
            Resources::default(),
        );
        assert_eq!(filter(&pod, &plain), Err(Unfit::NodeAffinity));
        plain.taints.push(Taint {
            key: "x".into(),
            value: String::new(),
            effect: TaintEffect::NoExecute,
        });
        assert_eq!(filter(&pod, &plain), Err(Unfit::UntoleratedTaint));
        // PreferNoSchedule never filters.
        plain.taints[0].effect = TaintEffect::PreferNoSchedule;
        assert_eq!(filter(&pod, &plain), Err(Unfit::NodeAffinity));

        assert_eq!(filter(&pod, &ecs("e1", 6000)), Ok(()));
        assert_eq!(filter(&pod, &ecs("e1", 6001)), Err(Unfit::InsufficientCpu));
        let mut full = ecs("e2", 0);
        full.requested.pods = 110;
        assert_eq!(filter(&pod, &full), Err(Unfit::TooManyPods));
        full.requested.pods = 0;
        full.requested.memory_bytes = 31 * GI;
        assert_eq!(filter(&pod, &full), Err(Unfit::InsufficientMemory));
        let mut cordoned = ecs("e3", 0);
        cordoned.unschedulable = true;
        assert_eq!(filter(&pod, &cordoned), Err(Unfit::Unschedulable));

        // Without the ECS toleration the dedicated node is off limits.
        let mut intolerant = pod.clone();
        intolerant.tolerations.remove(0);
        assert_eq!(
            filter(&intolerant, &ecs("e1", 0)),
            Err(Unfit::UntoleratedTaint)
        );
        assert_eq!(filter(&intolerant, &virtual_node()), Ok(()));
    }

    #[test]
    fn room_counts_copies() {
        let pod = gateway(80, 20);
        assert_eq!(room_for(&pod, &ecs("e1", 1000)), 3);
        assert_eq!(room_for(&pod, &ecs("e1", 7000)), 0);
        let plain = node(
            "worker",
            &[],
            Resources::new(8000, 32 * GI, 110),
            Resources::default(),
        );
        assert_eq!(room_for(&pod, &plain), 0);
    }

    #[test]
    fn eighty_twenty_keeps_pods_on_ecs_while_it_has_room() {
        let pod = gateway(80, 20);
        // Even a busy ECS node beats the empty, huge virtual node: 100*2 vs 25*2 affinity.
        let nodes = vec![ecs("ecs-1", 5000), virtual_node()];
        assert_eq!(pick(&pod, &nodes).as_deref(), Some("ecs-1"));
        // When ECS is full, the preference is soft: the pod goes to ECI.
        let nodes = vec![ecs("ecs-1", 7000), virtual_node()];
        assert_eq!(
            pick(&pod, &nodes).as_deref(),
            Some("virtual-kubelet-cn-hangzhou-k")
        );
    }

    /// Measured on the real scheduler (tests/placement.rs): with the system defaults and no
    /// zone labels, ECS nodes that already hold gateway pods lose to the empty virtual node on
    /// spread; with the pod's own constraints on the pool's label key and hostname, the virtual
    /// node (without the pool label) is left out of spreading and ECS wins.
    #[test]
    fn the_pool_label_as_topology_key_keeps_the_virtual_node_out_of_spreading() {
        let nodes = vec![ecs("ecs-1", 2000), ecs("ecs-2", 2000), virtual_node()];
        let same_set = |n: &Node| if n.name.starts_with("ecs") { 2 } else { 0 };
        let pick_with = |pod: &PodTemplate| {
            select_node(pod, &nodes, &Weights::default(), same_set, |_| 0).map(|n| n.name.clone())
        };
        assert_eq!(
            pick_with(&gateway(80, 20)).as_deref(),
            Some("virtual-kubelet-cn-hangzhou-k"),
            "system defaults: the empty virtual node wins"
        );
        let mut pod = gateway(80, 20);
        pod.spread = vec![
            SpreadConstraint {
                topology_key: "mykey4pod".into(),
                max_skew: 3,
            },
            SpreadConstraint {
                topology_key: "kubernetes.io/hostname".into(),
                max_skew: 3,
            },
        ];
        assert_eq!(pick_with(&pod).as_deref(), Some("ecs-1"));
        let feasible: Vec<&Node> = nodes.iter().collect();
        let counts: Vec<i64> = feasible.iter().map(|n| same_set(n)).collect();
        assert_eq!(
            own_spread_scores(&pod.spread, &feasible, &counts, &[]),
            vec![MAX_NODE_SCORE, MAX_NODE_SCORE, 0],
            "the virtual node, without the pool label, scores 0"
        );
        // Hostname alone: the virtual node has the key, 0 pods, and the best spread score.
        pod.spread.remove(0);
        assert_eq!(
            pick_with(&pod).as_deref(),
            Some("virtual-kubelet-cn-hangzhou-k")
        );
    }

    #[test]
    fn equal_weights_let_resource_scores_favour_the_virtual_node() {
        // The scenario's warning: a virtual node's huge capacity wins the resource scores.
        let pod = gateway(50, 50);
        let nodes = vec![ecs("ecs-1", 4000), virtual_node()];
        assert_eq!(
            pick(&pod, &nodes).as_deref(),
            Some("virtual-kubelet-cn-hangzhou-k")
        );
        let flipped = gateway(20, 80);
        let nodes = vec![ecs("ecs-1", 0), virtual_node()];
        assert_eq!(
            pick(&flipped, &nodes).as_deref(),
            Some("virtual-kubelet-cn-hangzhou-k")
        );
    }

    #[test]
    fn scores_match_hand_computation() {
        let pod = gateway(80, 20);
        let e = ecs("ecs-1", 2000); // after the pod: cpu 4000/8000, mem 6/32 GiB
        let v = virtual_node();
        let s = score(&pod, &[&e, &v], &[], &[], &Weights::default());
        // ecs: affinity 80/80*100=100 (x2), spread 100 (x2: no pod of the set anywhere), taint
        // 100 (x3), least ((50)+(81))/2=65, balanced 1 - |0.5-0.1875|/2 = 0.84375 -> 84.
        assert_eq!(s[0], 200 + 200 + 300 + 65 + 84);
        // virtual: affinity 20*100/80=25 (x2), spread 100 (x2), taint 100 (x3), least
        // (99+99)/2=99, balanced 99
        assert_eq!(s[1], 50 + 200 + 300 + 99 + 99);
        // Three pods of the set on the ECS node: raw 3*ln(4)+2 = 6.16 -> 6 there, 2 on the
        // virtual node; normalised 100*(6+2-6)/6 = 33 and 100*(6+2-2)/6 = 100.
        let s = score(&pod, &[&e, &v], &[3, 0], &[], &Weights::default());
        assert_eq!(s[0], 200 + 33 * 2 + 300 + 65 + 84);
        assert_eq!(s[1], 50 + 200 + 300 + 99 + 99);
    }

    #[test]
    fn least_allocated_spreads_across_equal_nodes() {
        let pod = gateway(80, 20);
        let nodes = vec![ecs("ecs-busy", 4000), ecs("ecs-idle", 0)];
        assert_eq!(pick(&pod, &nodes).as_deref(), Some("ecs-idle"));
    }

    #[test]
    fn prefer_no_schedule_counts_against_a_node() {
        let pod = gateway(80, 20);
        let mut a = ecs("ecs-a", 0);
        a.taints.push(Taint {
            key: "soft".into(),
            value: String::new(),
            effect: TaintEffect::PreferNoSchedule,
        });
        let b = ecs("ecs-b", 0);
        assert_eq!(pick(&pod, &[a.clone(), b]).as_deref(), Some("ecs-b"));
        let mut tolerant = pod.clone();
        tolerant.tolerations.push(Toleration {
            key: "soft".into(),
            operator: crate::model::TolerationOperator::Exists,
            ..Default::default()
        });
        // Tolerated: the two nodes tie, and the tie-break decides.
        let b = ecs("ecs-b", 0);
        let both = [a, b];
        let chosen = select_node(
            &tolerant,
            &both,
            &Weights::default(),
            |_| 0,
            |n| {
                assert_eq!(n, 2);
                1
            },
        );
        assert_eq!(chosen.map(|n| n.name.as_str()), Some("ecs-b"));
    }

    #[test]
    fn no_feasible_node_leaves_the_pod_pending() {
        let pod = gateway(80, 20);
        assert_eq!(pick(&pod, &[ecs("ecs-1", 8000)]), None);
    }

    /// A resource the pod does not request is not checked: a pod asking no CPU fits a node whose
    /// CPU is overcommitted (NodeResourcesFit skips zero requests).
    #[test]
    fn a_zero_request_fits_an_overcommitted_node() {
        let full = node(
            "n",
            &[],
            Resources::new(4000, 16 * GI, 110),
            Resources::new(5000, GI, 3),
        );
        let mut pod = PodTemplate::default();
        pod.requests = Resources::pod(0, GI);
        assert_eq!(resource_fit(&pod, &full), Ok(()));
        pod.requests = Resources::pod(100, GI);
        assert_eq!(resource_fit(&pod, &full), Err(Unfit::InsufficientCpu));
    }
}
