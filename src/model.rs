//! The slice of Kubernetes that the engine and the simulator reason about.
//!
//! These are lean copies of the API objects, holding only what placement and sizing need, so
//! that a cluster of thousands of nodes fits in a few megabytes and the engine stays free of
//! API-client types. The JSON shapes of [`Taint`], [`Toleration`] and the node-selector types
//! match the Kubernetes API, so they read the same in a policy, a scenario file or a pod spec.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub mod load;
pub mod quantity;

pub use load::{FastSample, LoadSample};

/// The annotation the ReplicaSet controller reads to pick scale-in victims (lower goes first).
pub const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";
/// The well-known label that carries a node's cloud instance type.
pub const INSTANCE_TYPE_LABEL: &str = "node.kubernetes.io/instance-type";

/// CPU, memory and pod slots, as requested by pods or offered by a node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    pub cpu_millis: i64,
    pub memory_bytes: i64,
    pub pods: i64,
}

impl Resources {
    pub const fn new(cpu_millis: i64, memory_bytes: i64, pods: i64) -> Self {
        Self {
            cpu_millis,
            memory_bytes,
            pods,
        }
    }

    /// What one pod with these container requests takes from a node.
    pub const fn pod(cpu_millis: i64, memory_bytes: i64) -> Self {
        Self::new(cpu_millis, memory_bytes, 1)
    }

    pub fn add(&mut self, other: &Resources) {
        self.cpu_millis += other.cpu_millis;
        self.memory_bytes += other.memory_bytes;
        self.pods += other.pods;
    }

    pub fn sub(&mut self, other: &Resources) {
        self.cpu_millis -= other.cpu_millis;
        self.memory_bytes -= other.memory_bytes;
        self.pods -= other.pods;
    }

    /// How many pods of size `pod` fit in `self` (taken as free room). Zero requests never
    /// limit, as in NodeResourcesFit; the pod count always does.
    pub fn fits_count(&self, pod: &Resources) -> i64 {
        let mut n = self.pods.max(0);
        if pod.cpu_millis > 0 {
            n = n.min(self.cpu_millis.max(0) / pod.cpu_millis);
        }
        if pod.memory_bytes > 0 {
            n = n.min(self.memory_bytes.max(0) / pod.memory_bytes);
        }
        n
    }
}

/// The effect of a node taint (core/v1 `TaintEffect`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

/// A node taint (core/v1 `Taint`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Taint {
    /// The taint's key.
    pub key: String,
    /// The taint's value (may be empty).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
    /// What the taint does to pods that do not tolerate it.
    pub effect: TaintEffect,
}

/// How a toleration compares values (core/v1 `TolerationOperator`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TolerationOperator {
    #[default]
    Equal,
    Exists,
}

/// A pod toleration (core/v1 `Toleration`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Toleration {
    /// The taint key tolerated; empty with operator `Exists` tolerates every taint.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
    /// `Equal` (the value must match) or `Exists` (any value).
    #[serde(default)]
    pub operator: TolerationOperator,
    /// The taint value tolerated with operator `Equal`; empty with `Exists`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
    /// Empty means every effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<TaintEffect>,
}

impl Toleration {
    /// `Toleration.ToleratesTaint` from k8s.io/api core/v1 `toleration.go`: an empty effect
    /// matches all effects, an empty key with `Exists` matches all keys.
    pub fn tolerates(&self, taint: &Taint) -> bool {
        if self.effect.is_some_and(|e| e != taint.effect) {
            return false;
        }
        if !self.key.is_empty() && self.key != taint.key {
            return false;
        }
        match self.operator {
            TolerationOperator::Exists => true,
            TolerationOperator::Equal => self.value == taint.value,
        }
    }

    pub fn equal(key: &str, value: &str, effect: TaintEffect) -> Self {
        Self {
            key: key.into(),
            operator: TolerationOperator::Equal,
            value: value.into(),
            effect: Some(effect),
        }
    }
}

/// Node-selector operators (core/v1 `NodeSelectorOperator`), all six.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
    Gt,
    Lt,
}

/// One requirement of a node-selector term (core/v1 `NodeSelectorRequirement`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SelectorRequirement {
    pub key: String,
    pub operator: SelectorOperator,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

impl SelectorRequirement {
    pub fn is_in(key: &str, values: &[&str]) -> Self {
        Self {
            key: key.into(),
            operator: SelectorOperator::In,
            values: values.iter().map(|v| (*v).to_string()).collect(),
        }
    }

    /// Whether `labels.NewRequirement` (k8s.io/apimachinery) accepts it: a valid key; `In` and
    /// `NotIn` with values, `Exists` and `DoesNotExist` without, `Gt` and `Lt` with one integer;
    /// every value a valid label value. In `matchFields` only `In`/`NotIn` with one value.
    pub fn is_valid(&self, field: bool) -> bool {
        let values_ok = self.values.iter().all(|v| valid_label_value(v));
        let shape = match self.operator {
            SelectorOperator::In | SelectorOperator::NotIn if field => self.values.len() == 1,
            _ if field => false,
            SelectorOperator::In | SelectorOperator::NotIn => !self.values.is_empty(),
            SelectorOperator::Exists | SelectorOperator::DoesNotExist => self.values.is_empty(),
            SelectorOperator::Gt | SelectorOperator::Lt => {
                matches!(self.values.as_slice(), [v] if v.parse::<i64>().is_ok())
            }
        };
        shape && values_ok && valid_label_key(&self.key)
    }

    /// Semantics of `nodeaffinity.NodeSelectorRequirementsAsSelector` / `labels.Requirement.Matches`
    /// (k8s.io/apimachinery): `NotIn` and `DoesNotExist` match a node without the key; `Gt`/`Lt`
    /// compare the label parsed as an integer with the single value, and fail if either is not one.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            SelectorOperator::In => value.is_some_and(|v| self.values.iter().any(|x| x == v)),
            SelectorOperator::NotIn => value.is_none_or(|v| !self.values.iter().any(|x| x == v)),
            SelectorOperator::Exists => value.is_some(),
            SelectorOperator::DoesNotExist => value.is_none(),
            SelectorOperator::Gt | SelectorOperator::Lt => {
                let (Some(v), [bound]) = (value, self.values.as_slice()) else {
                    return false;
                };
                match (v.parse::<i64>(), bound.parse::<i64>()) {
                    (Ok(v), Ok(b)) if self.operator == SelectorOperator::Gt => v > b,
                    (Ok(v), Ok(b)) => v < b,
                    _ => false,
                }
            }
        }
    }
}

/// A label value as `validation.IsValidLabelValue` accepts it: empty, or up to 63 characters
/// of `[A-Za-z0-9._-]` that begin and end with an alphanumeric.
pub fn valid_label_value(v: &str) -> bool {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let ends = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    v.is_empty()
        || (v.len() <= 63 && v.chars().all(ok) && ends(v.chars().next()) && ends(v.chars().last()))
}

/// A label key as `validation.IsQualifiedName` accepts it: a name (a non-empty label value),
/// optionally after a DNS-subdomain prefix and `/`.
pub fn valid_label_key(k: &str) -> bool {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|part| {
                !part.is_empty()
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            })
    });
    !name.is_empty() && valid_label_value(name) && prefix_ok
}

/// A node-selector term (core/v1 `NodeSelectorTerm`): its requirements are ANDed.
/// `matchFields` supports `metadata.name`, the only field the API allows there.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SelectorTerm {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<SelectorRequirement>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_fields: Vec<SelectorRequirement>,
}

impl SelectorTerm {
    pub fn with(reqs: Vec<SelectorRequirement>) -> Self {
        Self {
            match_expressions: reqs,
            match_fields: vec![],
        }
    }

    /// An empty term matches no node (component-helpers `nodeaffinity.NewNodeSelector`), nor
    /// does a term with a requirement upstream cannot parse (the other terms still count).
    pub fn matches(&self, node_name: &str, labels: &BTreeMap<String, String>) -> bool {
        if self.match_expressions.is_empty() && self.match_fields.is_empty() {
            return false;
        }
        let parses = self.match_expressions.iter().all(|r| r.is_valid(false))
            && self.match_fields.iter().all(|r| r.is_valid(true));
        if !parses {
            return false;
        }
        let fields = BTreeMap::from([("metadata.name".to_string(), node_name.to_string())]);
        self.match_expressions.iter().all(|r| r.matches(labels))
            && self.match_fields.iter().all(|r| r.matches(&fields))
    }
}

/// A weighted preference (core/v1 `PreferredSchedulingTerm`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreferredTerm {
    pub weight: i32,
    pub preference: SelectorTerm,
}

/// What the scheduler needs of a pod: its requests and the scheduling constraints.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplate {
    pub requests: Resources,
    #[serde(default)]
    pub tolerations: Vec<Toleration>,
    /// `requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms`: ORed. Empty = any node.
    #[serde(default)]
    pub required_terms: Vec<SelectorTerm>,
    /// `preferredDuringSchedulingIgnoredDuringExecution`.
    #[serde(default)]
    pub preferred_terms: Vec<PreferredTerm>,
    /// `spec.nodeSelector`: every pair must match.
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    /// The pod's own `topologySpreadConstraints` (empty: the scheduler's system defaults).
    #[serde(default)]
    pub spread: Vec<SpreadConstraint>,
    /// Preferred pod affinity to the gateway's own pods (`affinity.podAffinity`).
    #[serde(default)]
    pub pod_affinity: Vec<OwnPodAffinity>,
}

/// One preferred `podAffinity` term to the gateway's own pods, as spillway writes it into an
/// IstioGateway (whose template takes no spread constraints): nodes in a domain of `topologyKey`
/// that holds gateway pods score higher; a node without the key scores nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnPodAffinity {
    pub topology_key: String,
    pub weight: i32,
}

/// One `topologySpreadConstraints` entry as spillway writes them: `whenUnsatisfiable:
/// ScheduleAnyway`, over the pods of the pod's own ReplicaSet (the gateway's labels and
/// `matchLabelKeys: [pod-template-hash]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpreadConstraint {
    pub topology_key: String,
    pub max_skew: i64,
}

/// A node, with the sum of what the pods bound to it request.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub taints: Vec<Taint>,
    pub allocatable: Resources,
    /// Requests of every pod bound to the node, and their count in `pods`.
    #[serde(default)]
    pub requested: Resources,
    #[serde(default)]
    pub unschedulable: bool,
}

impl Node {
    /// Room left: allocatable minus requested.
    pub fn free(&self) -> Resources {
        let mut f = self.allocatable;
        f.sub(&self.requested);
        f
    }

    pub fn instance_type(&self) -> Option<&str> {
        self.labels.get(INSTANCE_TYPE_LABEL).map(String::as_str)
    }

    /// Whether every `key=value` of `selector` is among the node's labels.
    pub fn has_labels(&self, selector: &BTreeMap<String, String>) -> bool {
        selector.iter().all(|(k, v)| self.labels.get(k) == Some(v))
    }
}

/// Which pool a gateway pod or node belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pool {
    /// A dedicated ECS node the gateway may use.
    Ecs,
    /// A virtual-kubelet node: the pod runs as an ECI instance.
    Eci,
    /// Not bound to a node yet.
    Pending,
    /// Bound to a node of neither pool (the policy's selectors do not describe the cluster).
    Other,
}

impl Pool {
    pub fn as_str(self) -> &'static str {
        match self {
            Pool::Ecs => "ecs",
            Pool::Eci => "eci",
            Pool::Pending => "pending",
            Pool::Other => "other",
        }
    }
}

/// Names one ElasticGateway, and so the gateway it steers: the key of every per-gateway memory
/// and metric series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub struct GatewayKey {
    pub namespace: String,
    pub name: String,
}

impl GatewayKey {
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for GatewayKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A gateway pod as the engine sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayPod {
    pub name: String,
    pub node: Option<String>,
    pub pool: Pool,
    pub ready: bool,
    /// Phase `Pending`: not bound, or its containers not started yet (the HPA counts such a pod
    /// as unready whatever its metric says).
    #[serde(default)]
    pub pending: bool,
    /// Being deleted (has a deletionTimestamp): neither capacity nor a scale-in candidate.
    #[serde(default)]
    pub terminating: bool,
    pub requests: Resources,
    /// The current `controller.kubernetes.io/pod-deletion-cost`, if any.
    #[serde(default)]
    pub deletion_cost: Option<i32>,
    /// Creation time on the caller's clock (seconds).
    #[serde(default)]
    pub created_at: f64,
    /// Since when it is Ready (its Ready condition's last transition, stamped by the kubelet on
    /// its node's clock; the drill's virtual clock): where a slow start ramps new pods, how far
    /// along its ramp it is. `None`: not known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_since: Option<f64>,
    /// What a scale-in that removes it would cut, from its own Envoy's stats (the fast path's
    /// last read of it); `None` when not read or its stats lack the gauges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<Drain>,
}

/// A gateway pod's live downstream work, from its Envoy's gauges: what removing it resets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Drain {
    /// Open client connections (`envoy_listener_downstream_cx_active` on the gateway's own
    /// listeners): each is reset when the pod goes, a websocket or gRPC stream with it.
    pub connections: f64,
    /// Requests in flight (`envoy_http_downstream_rq_active`).
    pub requests: f64,
}

/// Tells which pool a node belongs to from the policy's selectors.
pub fn classify_node(
    node: &Node,
    ecs: &BTreeMap<String, String>,
    eci: &BTreeMap<String, String>,
) -> Pool {
    if !eci.is_empty() && node.has_labels(eci) {
        Pool::Eci
    } else if !ecs.is_empty() && node.has_labels(ecs) {
        Pool::Ecs
    } else {
        Pool::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    fn req(key: &str, op: SelectorOperator, values: &[&str]) -> SelectorRequirement {
        SelectorRequirement {
            key: key.into(),
            operator: op,
            values: values.iter().map(|v| (*v).to_string()).collect(),
        }
    }

    #[test]
    fn selector_operators_follow_apimachinery() {
        use SelectorOperator::*;
        let l = labels(&[("zone", "a"), ("cores", "8")]);
        let cases = [
            (req("zone", In, &["a", "b"]), true),
            (req("zone", In, &["b"]), false),
            (req("missing", In, &["a"]), false),
            (req("zone", NotIn, &["a"]), false),
            (req("zone", NotIn, &["b"]), true),
            (req("missing", NotIn, &["a"]), true),
            (req("zone", Exists, &[]), true),
            (req("missing", Exists, &[]), false),
            (req("missing", DoesNotExist, &[]), true),
            (req("zone", DoesNotExist, &[]), false),
            (req("cores", Gt, &["4"]), true),
            (req("cores", Gt, &["8"]), false),
            (req("cores", Lt, &["16"]), true),
            (req("cores", Lt, &["8"]), false),
            (req("zone", Gt, &["1"]), false),
            (req("missing", Lt, &["1"]), false),
            (req("cores", Gt, &["1", "2"]), false),
        ];
        for (i, (r, want)) in cases.iter().enumerate() {
            assert_eq!(r.matches(&l), *want, "case {i}: {r:?}");
        }
    }

    #[test]
    fn empty_term_matches_nothing_and_fields_match_name() {
        let l = labels(&[("a", "b")]);
        assert!(!SelectorTerm::default().matches("n1", &l));
        let by_name = SelectorTerm {
            match_expressions: vec![],
            match_fields: vec![SelectorRequirement::is_in("metadata.name", &["n1"])],
        };
        assert!(by_name.matches("n1", &l));
        assert!(!by_name.matches("n2", &l));
    }

    #[test]
    fn toleration_semantics() {
        let t = Taint {
            key: "virtual-kubelet.io/provider".into(),
            value: "alibabacloud".into(),
            effect: TaintEffect::NoSchedule,
        };
        assert!(
            Toleration::equal(
                "virtual-kubelet.io/provider",
                "alibabacloud",
                TaintEffect::NoSchedule
            )
            .tolerates(&t)
        );
        assert!(
            !Toleration::equal(
                "virtual-kubelet.io/provider",
                "other",
                TaintEffect::NoSchedule
            )
            .tolerates(&t)
        );
        assert!(
            !Toleration::equal(
                "virtual-kubelet.io/provider",
                "alibabacloud",
                TaintEffect::NoExecute
            )
            .tolerates(&t)
        );
        let exists_any = Toleration {
            operator: TolerationOperator::Exists,
            ..Default::default()
        };
        assert!(exists_any.tolerates(&t));
        let key_any_effect = Toleration {
            key: "virtual-kubelet.io/provider".into(),
            operator: TolerationOperator::Exists,
            ..Default::default()
        };
        assert!(key_any_effect.tolerates(&t));
    }

    #[test]
    fn fits_count_takes_the_scarcest_resource() {
        let free = Resources::new(4000, 8 << 30, 3);
        assert_eq!(free.fits_count(&Resources::pod(1000, 1 << 30)), 3);
        assert_eq!(free.fits_count(&Resources::pod(1500, 1 << 30)), 2);
        assert_eq!(free.fits_count(&Resources::pod(100, 3 << 30)), 2);
        assert_eq!(free.fits_count(&Resources::pod(0, 0)), 3);
        assert_eq!(
            Resources::new(-5, 0, 2).fits_count(&Resources::pod(1, 0)),
            0
        );
    }

    /// A term with a requirement upstream cannot parse matches no node; the other terms of
    /// the selector still do (component-helpers `LazyErrorNodeSelector`).
    #[test]
    fn a_term_that_does_not_parse_matches_nothing() {
        use SelectorOperator::*;
        let node = labels(&[("zone", "a"), ("gpu", "4")]);
        let term = |r: SelectorRequirement| SelectorTerm::with(vec![r]);
        // Lenient reading would match these; upstream's term is invalid.
        for bad in [
            req("zone", NotIn, &["bad value"]),
            req("zone", NotIn, &[]),
            req("other", Exists, &["x"]),
            req("gpu", Gt, &["1", "2"]),
            req("gpu", Lt, &["ten"]),
            req("bad key!", DoesNotExist, &[]),
        ] {
            assert!(!term(bad.clone()).matches("n", &node), "{bad:?}");
        }
        for good in [
            req("zone", NotIn, &["b"]),
            req("other", DoesNotExist, &[]),
            req("gpu", Gt, &["1"]),
            req("example.com/zone", NotIn, &["b"]),
        ] {
            assert!(term(good.clone()).matches("n", &node), "{good:?}");
        }
        assert!(valid_label_value("") && valid_label_value("a.b-c_d"));
        assert!(!valid_label_value("-a") && !valid_label_value(&"a".repeat(64)));
        assert!(valid_label_key("kubernetes.io/hostname") && !valid_label_key("Bad_Prefix/x"));
    }
}
