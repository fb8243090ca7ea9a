//! The `ElasticGateway` custom resource: what an operator asks of spillway for one gateway.
//!
//! Every field has a default taken from the scenario (labels `mykey4pod=asmgateway` and
//! `type=virtual-kubelet`, weights 80/20) or from the HPA (tolerance, stabilization windows,
//! rate policies), so a policy for the scenario is a target, a maximum and a metric.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::{
    PodTemplate, PreferredTerm, SelectorRequirement, SelectorTerm, SpreadConstraint, TaintEffect,
    Toleration,
};

pub mod event;
pub mod marks;
mod presets;
mod validate;

pub use event::{PlannedEvent, PlannedEventSpec, PlannedEventStatus};
pub use presets::{Preset, cpu_per_pod_query};
pub use validate::{
    FieldError, check_query, load_policy_file, load_policy_files, parse_policies, parse_policy,
    policy_from_object, validate,
};

/// Desired elastic behaviour of one ingress gateway.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "spillway.io",
    version = "v1alpha1",
    kind = "ElasticGateway",
    plural = "elasticgateways",
    shortname = "egw",
    doc = "An ingress gateway that spillway scales on ECS and overflows onto ECI (virtual-kubelet) nodes.",
    namespaced,
    status = "ElasticGatewayStatus",
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".spec.target.name"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Min","type":"integer","jsonPath":".spec.minReplicas"}"#,
    printcolumn = r#"{"name":"Max","type":"integer","jsonPath":".spec.maxReplicas"}"#,
    printcolumn = r#"{"name":"Desired","type":"integer","jsonPath":".status.desiredReplicas"}"#,
    printcolumn = r#"{"name":"ECS","type":"integer","jsonPath":".status.ecsReplicas"}"#,
    printcolumn = r#"{"name":"ECI","type":"integer","jsonPath":".status.eciReplicas"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(
    validation = Rule::new("self.minReplicas <= self.maxReplicas").message("minReplicas must not be greater than maxReplicas").field_path(".minReplicas"),
    validation = Rule::new("!has(self.eci.maxReplicas) || self.eci.maxReplicas <= self.maxReplicas").message("eci.maxReplicas must not be greater than maxReplicas: the ECI pods are part of the gateway's replicas").field_path(".eci.maxReplicas"),
    validation = Rule::new("self.placement.normalWeights.ecs > self.placement.normalWeights.eci").message("placement.normalWeights must prefer ECS (ecs greater than eci): normal times live on ECS").field_path(".placement.normalWeights"),
    validation = Rule::new("self.placement.strongWeights.ecs > self.placement.strongWeights.eci").message("placement.strongWeights must prefer ECS (ecs greater than eci)").field_path(".placement.strongWeights"),
    validation = Rule::new(r"self.target.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')").message("target.name must be a valid Kubernetes object name (lowercase letters, digits, '-' and '.')").field_path(".target.name"),
    validation = Rule::new("self.pools.ecs.nodeSelector != self.pools.eci.nodeSelector").message("pools.eci.nodeSelector must differ from pools.ecs.nodeSelector").field_path(".pools.eci.nodeSelector"),
    validation = Rule::new("!has(self.pools.ecs.tolerations) || self.pools.ecs.tolerations.all(t, (has(t.key) && size(t.key) > 0) || (has(t.operator) && t.operator == 'Exists'))").message("a toleration with an empty key needs operator Exists").field_path(".pools.ecs.tolerations"),
    validation = Rule::new("!has(self.pools.ecs.tolerations) || self.pools.ecs.tolerations.all(t, !has(t.operator) || t.operator != 'Exists' || !has(t.value) || size(t.value) == 0)").message("a toleration with operator Exists must have no value").field_path(".pools.ecs.tolerations"),
    validation = Rule::new("!has(self.pools.eci.tolerations) || self.pools.eci.tolerations.all(t, (has(t.key) && size(t.key) > 0) || (has(t.operator) && t.operator == 'Exists'))").message("a toleration with an empty key needs operator Exists").field_path(".pools.eci.tolerations"),
    validation = Rule::new("!has(self.pools.eci.tolerations) || self.pools.eci.tolerations.all(t, !has(t.operator) || t.operator != 'Exists' || !has(t.value) || size(t.value) == 0)").message("a toleration with operator Exists must have no value").field_path(".pools.eci.tolerations"),
    validation = Rule::new("self.metrics.all(m, self.metrics.filter(n, (has(n.name) ? n.name : (has(n.preset) ? (n.preset == 'RequestRate' ? 'request_rate' : (n.preset == 'ActiveConnections' ? 'active_connections' : 'cpu')) : 'custom')) == (has(m.name) ? m.name : (has(m.preset) ? (m.preset == 'RequestRate' ? 'request_rate' : (m.preset == 'ActiveConnections' ? 'active_connections' : 'cpu')) : 'custom'))).size() == 1)").message("each metric needs a name no other metric has (an unnamed preset is named after it)").field_path(".metrics"),
    validation = Rule::new("!has(self.eci.startSeconds) || (self.eci.startSeconds >= 0 && self.eci.startSeconds <= 3600)").message("eci.startSeconds must be within 0..3600").field_path(".eci.startSeconds"),
    validation = Rule::new("!has(self.eci.scaleDownWindowSeconds) || (self.eci.scaleDownWindowSeconds >= 0 && self.eci.scaleDownWindowSeconds <= 3600)").message("eci.scaleDownWindowSeconds must be within 0..3600").field_path(".eci.scaleDownWindowSeconds"),
    validation = Rule::new("!has(self.eci.maxCostPerHour) || self.eci.maxCostPerHour <= 1e9").message("eci.maxCostPerHour must be at most 1e9").field_path(".eci.maxCostPerHour"),
    validation = Rule::new("self.behavior.tolerance < 1.0").message("behavior.tolerance must be below 1").field_path(".behavior.tolerance"),
    validation = Rule::new("self.cost.currency.trim().size() > 0").message("cost.currency must not be blank").field_path(".cost.currency"),
    validation = Rule::new("self.cost.ecsDefaultNodePricePerHour <= 1e6 && self.cost.ecsNodePricePerHour.all(k, self.cost.ecsNodePricePerHour[k] >= 0.0 && self.cost.ecsNodePricePerHour[k] <= 1e6)").message("ECS node prices must be within 0..1e6 per hour").field_path(".cost"),
    validation = Rule::new("self.cost.eciVcpuPricePerSecond <= 1e3 && self.cost.eciGibPricePerSecond <= 1e3").message("ECI prices must be within 0..1e3 per second").field_path(".cost")
)]
#[serde(rename_all = "camelCase")]
pub struct ElasticGatewaySpec {
    /// The workload whose replicas and placement spillway steers.
    pub target: TargetRef,
    /// Never fewer replicas than this (1 to 10000; the gateway is the front door).
    #[serde(default = "defaults::min_replicas")]
    #[schemars(range(min = 1, max = 10000))]
    pub min_replicas: i32,
    /// Never more replicas than this, on both pools together (1 to 10000).
    #[serde(default = "defaults::max_replicas")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_replicas: i32,
    /// Limits on the overflow onto ECI.
    #[serde(default)]
    pub eci: EciLimits,
    /// The slow start in front of the gateway's pods, if traffic reaches a new pod ramped
    /// (Istio's `warmupDurationSecs` or `warmup` on a DestinationRule for the gateway's host,
    /// Envoy's `slow_start_config`, a cloud load balancer's slow start). spillway cannot see it
    /// from the pods: state it here, and a pod counts, in what the ready pods serve, for the
    /// share of a warm pod its ramp gives it (so a surge on a fleet still ramping is taken for
    /// the burst it is, and no template change starts while the warm pods carry the rest). It
    /// adds no pods for the ramp: a pod added for it would arrive ramping too. `spillway
    /// doctor` compares it with the DestinationRules it finds. Unset: a pod counts in full once
    /// Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup: Option<Warmup>,
    /// Load signals; the desired replica count is the largest any of them asks for (as in HPA).
    #[serde(default = "defaults::metrics")]
    #[schemars(length(min = 1, max = 16))]
    pub metrics: Vec<MetricSpec>,
    /// How to recognise the two node pools, and what the gateway must tolerate on each.
    #[serde(default)]
    pub pools: Pools,
    /// Affinity weights and ECS headroom.
    #[serde(default)]
    pub placement: PlacementSpec,
    /// Scaling speed limits, HPA-compatible, plus the lead time.
    #[serde(default)]
    pub behavior: Behavior,
    /// Prices, for the cost and savings estimates.
    #[serde(default)]
    pub cost: CostModel,
    /// Decide and report, but change nothing in the cluster.
    #[serde(default)]
    pub dry_run: bool,
    /// Stop every write to the gateway and its pods (replicas, weights, deletion costs,
    /// evictions); spillway keeps observing and reporting. Set it before a manual change.
    #[serde(default)]
    pub paused: bool,
}

/// A slow-start ramp as Envoy runs it: for `seconds` after a pod joins, its weight is the weight
/// of a warm pod times `max(minWeightPercent / 100, (max(age, 1) / seconds) ^ (1 / aggression))`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Warmup {
    /// The ramp's length (Istio `warmupDurationSecs`, Envoy `slow_start_window`), 1 to 3600.
    #[schemars(range(min = 1, max = 3600))]
    pub seconds: i64,
    /// The weight a new pod starts at, in percent of a warm pod's (0 to 100; Envoy's default
    /// 10).
    #[serde(default = "defaults::warmup_min_weight_percent")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub min_weight_percent: f64,
    /// Above 1 the ramp rises fast and then slowly; below 1 slowly and then fast (Envoy's
    /// `aggression`, 0.01 to 100; default 1: linear).
    #[serde(default = "defaults::warmup_aggression")]
    #[schemars(range(min = 0.01, max = 100.0))]
    pub aggression: f64,
}

impl Warmup {
    /// Each field out of range, with what is wrong with it.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if !(1..=3600).contains(&self.seconds) {
            out.push((
                "seconds",
                format!("must be within 1..3600 seconds, got {}", self.seconds),
            ));
        }
        let min = self.min_weight_percent;
        if !(min.is_finite() && (0.0..=100.0).contains(&min)) {
            out.push((
                "minWeightPercent",
                format!("must be within 0..100, got {min}"),
            ));
        }
        let a = self.aggression;
        if !(a.is_finite() && (0.01..=100.0).contains(&a)) {
            out.push(("aggression", format!("must be within 0.01..100, got {a}")));
        }
        out
    }
}

/// The gateway workload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetRef {
    /// `Deployment` (apps/v1) or `IstioGateway` (istio.alibabacloud.com, rendered by ASM).
    #[serde(default)]
    pub kind: TargetKind,
    /// Name of the workload, in the ElasticGateway's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Labels of the gateway's pods, when they are not the Deployment's selector (or, for an
    /// IstioGateway, `istio=<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<BTreeMap<String, String>>,
}

/// The kind of the gateway workload.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TargetKind {
    #[default]
    Deployment,
    IstioGateway,
}

/// Caps on the ECI overflow. A cap lowers the desired replica count rather than leave pods
/// Pending, and the decision says so.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EciLimits {
    /// At most this many gateway pods on virtual nodes (0 to `maxReplicas`). Unset: no cap
    /// beyond `maxReplicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10000))]
    pub max_replicas: Option<i32>,
    /// At most this estimated ECI spend per hour, in the cost model's currency (0 or more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_cost_per_hour: Option<f64>,
    /// Expected seconds from binding an ECI pod to its being ready (instance creation and image
    /// pull); reports put it near 10 s for small images, longer with pulls. Unset: 40.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_seconds: Option<i64>,
    /// How long the load must stay low before replicas above what ECS holds (the ECI pods) go.
    /// ECI is billed per second, so it waits less than the HPA's 5 minutes, which still apply
    /// to the pods ECS holds. Unset: `startSeconds` (ski rental: an idle ECI pod is kept about
    /// as long as re-creating it would take, the time a released pod needed again would leave
    /// the gateway short), at least 30 and at most 300. The release also needs the load to have
    /// fallen by more than twice the tolerance, so noise keeps the standard window. A release
    /// the load undoes within the standard window stretches the window to what would have
    /// bridged that dip (at least double, at most the standard window); each release that
    /// stands for 10 minutes halves it back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_window_seconds: Option<i64>,
    /// What one ECI pod serves as a share of one ECS pod (0.1 to 1). Unset: learnt from the
    /// CPU each pool's gateway pods spend per request while both pools serve (1 until then),
    /// which needs a `RequestRate` metric, the fast path and cAdvisor's per-pod CPU in
    /// Prometheus (`spillway doctor` says whether it is there). Set it where ECI pods are
    /// capped by something CPU does not show, such as bandwidth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.1, max = 1.0))]
    pub relative_capacity: Option<f64>,
}

impl EciLimits {
    /// `startSeconds` or its default.
    pub fn start(&self) -> i64 {
        self.start_seconds.unwrap_or(40).max(0)
    }

    /// `scaleDownWindowSeconds` or the window derived from the start latency.
    pub fn scale_down_window(&self) -> i64 {
        self.scale_down_window_seconds
            .unwrap_or_else(|| self.start().clamp(30, 300))
            .max(0)
    }
}

/// One load signal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(
    validation = Rule::new("has(self.preset) || has(self.query)").message("each metric needs a preset or a PromQL query"),
    validation = Rule::new("self.targetPerReplica > 0.0 && self.targetPerReplica <= 1e15").message("targetPerReplica must be greater than 0 (and at most 1e15)").field_path(".targetPerReplica"),
    validation = Rule::new("!has(self.query) || self.query.trim().size() > 0").message("query must not be blank").field_path(".query")
)]
#[serde(rename_all = "camelCase")]
pub struct MetricSpec {
    /// A short name for logs, metrics labels and status (defaults to the preset's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub name: Option<String>,
    /// A ready-made query for Envoy/Istio gateways; `query` overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<Preset>,
    /// PromQL returning the gateway's total load as one sample (or one per pod, by a `pod` label,
    /// for per-pod HPA semantics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub query: Option<String>,
    /// The load one replica should carry, in the query's unit.
    pub target_per_replica: f64,
}

impl MetricSpec {
    pub fn display_name(&self) -> String {
        match (&self.name, self.preset) {
            (Some(n), _) => n.clone(),
            (None, Some(p)) => p.name().to_string(),
            (None, None) => "custom".to_string(),
        }
    }

    /// The PromQL to run for a gateway `target` in `namespace`.
    pub fn effective_query(&self, namespace: &str, target: &TargetRef) -> Option<String> {
        self.query
            .clone()
            .or_else(|| self.preset.map(|p| p.query(namespace, &target.name)))
    }
}

/// The two node pools.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Pools {
    /// The dedicated ECS nodes (default: label `mykey4pod=asmgateway`, taint
    /// `mykey=myvalue:NoSchedule`).
    #[serde(default = "defaults::ecs_pool")]
    pub ecs: PoolSpec,
    /// The virtual-kubelet (ECI) nodes (default: label `type=virtual-kubelet`, taint
    /// `virtual-kubelet.io/provider=alibabacloud:NoSchedule`).
    #[serde(default = "defaults::eci_pool")]
    pub eci: PoolSpec,
}

impl Default for Pools {
    fn default() -> Self {
        Self {
            ecs: defaults::ecs_pool(),
            eci: defaults::eci_pool(),
        }
    }
}

/// How to recognise a pool's nodes, and what a gateway pod must tolerate there.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolSpec {
    /// Labels every node of the pool carries (at least one, at most 32).
    #[schemars(extend("minProperties" = 1, "maxProperties" = 32))]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations for the pool's taints (at most 32).
    #[serde(default)]
    #[schemars(length(max = 32))]
    pub tolerations: Vec<Toleration>,
}

/// Preferred-affinity weights for the two pools (1..=100 each, as the API requires).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolWeights {
    /// Weight of the preferred term that selects the ECS pool (1 to 100).
    #[schemars(range(min = 1, max = 100))]
    pub ecs: i32,
    /// Weight of the preferred term that selects the ECI pool (1 to 100).
    #[schemars(range(min = 1, max = 100))]
    pub eci: i32,
}

impl std::fmt::Display for PoolWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ecs {}/eci {}", self.ecs, self.eci)
    }
}

/// Placement steering.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlacementSpec {
    /// Weights in normal times: ECS strongly preferred, so pods land on ECS while it has room.
    #[serde(default = "defaults::normal_weights")]
    pub normal_weights: PoolWeights,
    /// Opt-in "yield ECS" mode: weights while ECS has stayed exhausted through
    /// `exhaustedAfterSeconds`. A weight change rolls every gateway pod, and ECI-preferring
    /// weights send every new pod to ECI: the dedicated ECS nodes (paid for anyway) empty out and
    /// ECI spend rises. Use it only when other workloads need the ECS room more than the gateway
    /// does. Default: equal to `normalWeights`, which turns the mode off.
    #[serde(default = "defaults::exhausted_weights")]
    pub exhausted_weights: PoolWeights,
    /// ECS pod slots to leave free for others; the gateway counts them as taken.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub ecs_headroom_pods: i32,
    /// How long ECS must stay exhausted before the weights shift.
    #[serde(default = "defaults::exhausted_after")]
    #[schemars(range(min = 0))]
    pub exhausted_after_seconds: i64,
    /// How long ECS must have room for every desired replica before the weights shift back.
    #[serde(default = "defaults::recovered_after")]
    #[schemars(range(min = 0))]
    pub recovered_after_seconds: i64,
    /// Weights that prefer ECS more strongly, applied (at a quiet time) once a gateway pod was
    /// seen bound to ECI while ECS had room for it: preferred affinity is soft, and on some
    /// clusters resource scores outvote it. Set equal to `normalWeights` to never change them.
    #[serde(default = "defaults::strong_weights")]
    pub strong_weights: PoolWeights,
    /// Minimum time between two weight changes: each one rolls every gateway pod.
    #[serde(default = "defaults::min_weight_interval")]
    #[schemars(range(min = 0))]
    pub min_weight_change_interval_seconds: i64,
    /// Move gateway pods off ECI while ECS has free slots, make-before-break: when the fleet is
    /// steady and every pod ready, add as many pods as ECS has room for and run on ECI (at most
    /// a quarter of the count), and once they are ready on ECS scale back by as many (the
    /// ReplicaSet removes ECI pods first: lowest deletion cost). Capacity never dips, and
    /// the ECI pod still counts for the scheduler's default topology spreading while the new
    /// pod is placed; an eviction leaves the virtual node empty, and the spread score can send
    /// the replacement straight back to ECI. A swap starts only when the scheduler model (the
    /// default profile's filters and scores on the nodes as they are) puts one of the next three
    /// pods on ECS: each one placed on ECI raises the virtual node's spread count for the next.
    /// Otherwise it is held and the decision says why; if the added pods miss anyway, the next
    /// swap waits twice as long (at most an hour). The added pods use ECS slots, paid for
    /// anyway; one on ECI costs an ECI start. Ignored while `rebalance` (eviction) is on.
    #[serde(default = "defaults::swap_back")]
    pub swap_back: bool,
    /// After a peak, move ECI pods back to ECS by eviction, one at a time, when ECS has room
    /// (break-before-make: for fleets that cannot take one more pod; see `swapBack`).
    #[serde(default)]
    pub rebalance: bool,
    /// Minimum time between two moves, and after the last scale-up, before one; a swap that
    /// moved every pod it added is followed at once.
    #[serde(default = "defaults::rebalance_interval")]
    #[schemars(range(min = 0))]
    pub rebalance_interval_seconds: i64,
    /// Give the gateway's pods their own `topologySpreadConstraints` (soft, maxSkew 3): on the
    /// key of the ECS pool's first label and on `kubernetes.io/hostname`. They replace the
    /// scheduler's system defaults, under which the empty virtual node wins the spread score
    /// once every ECS node holds gateway pods; a node without the pool label is left out of
    /// spreading, so the scheduler keeps pods on ECS while it has room and still spreads them
    /// over the ECS nodes (measured: docs/benchmarks.md). Written once, with the weights, at a
    /// quiet time; entries the gateway already has for the same key are kept and not added;
    /// removed at hand-back. An IstioGateway's template is ASM's to render and takes no spread
    /// constraints: there the same field writes a preferred pod affinity (weight 100) to the
    /// gateway's own pods over the ECS pool's label key into the IstioGateway's `affinity`,
    /// which scores every ECS node and never a node without the pool label (the measurement is
    /// in the same place).
    #[serde(default = "defaults::pool_spread")]
    pub pool_spread: bool,
}

impl Default for PlacementSpec {
    fn default() -> Self {
        Self {
            normal_weights: defaults::normal_weights(),
            exhausted_weights: defaults::exhausted_weights(),
            strong_weights: defaults::strong_weights(),
            ecs_headroom_pods: 0,
            exhausted_after_seconds: defaults::exhausted_after(),
            recovered_after_seconds: defaults::recovered_after(),
            min_weight_change_interval_seconds: defaults::min_weight_interval(),
            swap_back: defaults::swap_back(),
            rebalance: false,
            rebalance_interval_seconds: defaults::rebalance_interval(),
            pool_spread: defaults::pool_spread(),
        }
    }
}

/// Scaling behaviour: the HPA's `behavior` field, plus spillway's lead time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Behavior {
    /// HPA defaults: no stabilization, +100% or +4 pods per 15 s, whichever is more.
    #[serde(default)]
    pub scale_up: ScalingRules,
    /// HPA defaults: 300 s stabilization, -100% per 15 s.
    #[serde(default)]
    pub scale_down: ScalingRules,
    /// Ratio around 1.0 within which no scaling happens (kube-controller-manager default 0.1;
    /// 0 up to, not including, 1).
    #[serde(default = "defaults::tolerance")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub tolerance: f64,
    /// Size for the load expected this far ahead, when new pods would be ready.
    #[serde(default)]
    pub lead_time: LeadTime,
    /// How long the pods ECS holds stay after the load that needed them (0 to 86400). Dedicated
    /// ECS nodes are paid for whether the gateway's pods run or not, so releasing one early
    /// saves nothing, while a load that returns within minutes turns the release into a
    /// reversal: a pod started again, connections reset twice. Unset: twice the scale-down
    /// window (600 s for the HPA's 300 s: the 10 minutes within which a change the other way
    /// counts as a reversal). It grows after a release the load undoes within 10 minutes (to
    /// bridge that gap, at most an hour) and halves back after each release that stands. A
    /// value at or below the scale-down window leaves the window alone in charge, as the HPA's.
    /// Pods above what ECS holds go by `eci.scaleDownWindowSeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 86400))]
    pub ecs_hold_seconds: Option<i64>,
    /// The connection reset budget of scale-ins: the open downstream connections (as the
    /// gateway pods' Envoys report them) a minute's scale-ins may reset, in percent of those
    /// open (above 0, up to 100: no budget). A scale-in over it removes the pods that fit and
    /// holds the rest back (status condition `ScaleInPaced`; decision reason `reset_budget`
    /// when none goes); the first pod after a minute without one always goes, so a scale-in
    /// is paced, never blocked. A scale-in to honour `maxReplicas` or the ECI cap is not
    /// paced. Without the pods' connection counts there is nothing to count and no budget.
    /// Unset: 25.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 100.0), extend("exclusiveMinimum" = true))]
    pub reset_budget_percent: Option<f64>,
    /// How a per-pod metric's pods are grouped: spillway's own reading, or upstream's for the
    /// drill's `hpa` peer. Not part of the API: nobody asks spillway to be less careful.
    #[serde(skip)]
    #[schemars(skip)]
    pub pod_grouping: PodGrouping,
}

/// Which pods of a per-pod metric count at their sample, before the HPA formula.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PodGrouping {
    /// Any pod that is not Ready is unready, whatever its sample says: a gateway pod that is
    /// not Ready takes no traffic, so its sample reads near 0 and would drag a scale-up down
    /// (and deepen a scale-down). Samples of pods not listed (gone) are dropped.
    #[default]
    Serving,
    /// kube-controller-manager's `groupPods` for a Pods metric: a Pending pod is unready, a
    /// pod without a sample is missing, and every other pod counts at its sample, Ready or not
    /// (readiness is only checked for CPU). Samples of pods not listed count in the average.
    Upstream,
}

/// The HPA's tolerances around a usage ratio of 1 (KEP-4951: one per direction,
/// `behavior.scaleUp.tolerance` and `behavior.scaleDown.tolerance`, each falling back to the
/// cluster-wide one). Both bounds are inclusive.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerances {
    pub up: f64,
    pub down: f64,
}

impl Tolerances {
    pub fn symmetric(t: f64) -> Self {
        Self { up: t, down: t }
    }

    /// `isWithin`: no scaling for this ratio.
    pub fn is_within(&self, ratio: f64) -> bool {
        1.0 - self.down <= ratio && ratio <= 1.0 + self.up
    }
}

impl Behavior {
    /// The tolerance of each direction: its own, or `tolerance`.
    pub fn tolerances(&self) -> Tolerances {
        Tolerances {
            up: self.scale_up.tolerance.unwrap_or(self.tolerance),
            down: self.scale_down.tolerance.unwrap_or(self.tolerance),
        }
    }
}

impl Default for Behavior {
    fn default() -> Self {
        Self {
            scale_up: ScalingRules::default(),
            scale_down: ScalingRules::default(),
            tolerance: defaults::tolerance(),
            lead_time: LeadTime::default(),
            ecs_hold_seconds: None,
            reset_budget_percent: None,
            pod_grouping: PodGrouping::default(),
        }
    }
}

impl Behavior {
    /// `resetBudgetPercent` or its default.
    pub fn reset_budget(&self) -> f64 {
        self.reset_budget_percent
            .unwrap_or(defaults::RESET_BUDGET_PERCENT)
    }

    /// `ecsHoldSeconds` or its default: twice the scale-down window.
    pub fn ecs_hold(&self) -> i64 {
        self.ecs_hold_seconds.unwrap_or_else(|| {
            2 * i64::from(
                self.scale_down
                    .effective(false)
                    .stabilization_window_seconds,
            )
        })
    }
}

/// `autoscaling/v2` `HPAScalingRules`; unset fields take the HPA default for the direction.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalingRules {
    /// How far back (0 to 3600 s) the recommendations are looked at: scaling in this direction
    /// follows the least change any of them asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub stabilization_window_seconds: Option<i32>,
    /// Which policy wins when several apply: `Max` (the largest change), `Min`, or `Disabled`
    /// (no scaling in this direction).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub select_policy: Option<SelectPolicy>,
    /// Limits on the change per period; at least one when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub policies: Option<Vec<ScalingPolicy>>,
    /// The tolerance for this direction (the HPA's `behavior.scaleUp.tolerance` and
    /// `scaleDown.tolerance`, Kubernetes 1.33+): a usage ratio within it of 1 asks for no change
    /// this way. Unset: `behavior.tolerance`. E.g. 0 up and 0.2 down scales up on any excess and
    /// down only on a clear fall.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub tolerance: Option<f64>,
}

/// `autoscaling/v2` `ScalingPolicySelect`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SelectPolicy {
    Max,
    Min,
    Disabled,
}

/// What a scaling policy's value counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ScalingPolicyType {
    Pods,
    Percent,
}

/// `autoscaling/v2` `HPAScalingPolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalingPolicy {
    /// `Pods` (a number of pods) or `Percent` (of the current replicas).
    #[serde(rename = "type")]
    pub kind: ScalingPolicyType,
    /// The most pods, or percent, the count may change by within `periodSeconds` (1 or more).
    #[schemars(range(min = 1))]
    pub value: i32,
    /// The window the change is counted over (1 to 1800 s).
    #[schemars(range(min = 1, max = 1800))]
    pub period_seconds: i32,
}

/// Rules after defaults, for one direction.
#[derive(Clone, Debug, PartialEq)]
pub struct EffectiveRules {
    pub stabilization_window_seconds: i32,
    pub select_policy: SelectPolicy,
    pub policies: Vec<ScalingPolicy>,
}

impl ScalingRules {
    /// HPA defaults (`pkg/controller/podautoscaler` `GenerateHPAScaleUpRules`/`ScaleDownRules`).
    pub fn effective(&self, up: bool) -> EffectiveRules {
        let default_policies = if up {
            vec![
                ScalingPolicy {
                    kind: ScalingPolicyType::Percent,
                    value: 100,
                    period_seconds: 15,
                },
                ScalingPolicy {
                    kind: ScalingPolicyType::Pods,
                    value: 4,
                    period_seconds: 15,
                },
            ]
        } else {
            vec![ScalingPolicy {
                kind: ScalingPolicyType::Percent,
                value: 100,
                period_seconds: 15,
            }]
        };
        EffectiveRules {
            stabilization_window_seconds: self.stabilization_window_seconds.unwrap_or(if up {
                0
            } else {
                300
            }),
            select_policy: self.select_policy.unwrap_or(SelectPolicy::Max),
            policies: self.policies.clone().unwrap_or(default_policies),
        }
    }
}

/// Lead time: an ECI pod takes tens of seconds to serve, so size for the load expected then.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeadTime {
    /// How far ahead to look: about the ECI start latency plus the metric's delay. 0 turns it off
    /// (0 to 900).
    #[serde(default = "defaults::lead_seconds")]
    #[schemars(range(min = 0, max = 900))]
    pub seconds: i64,
    /// The recent window the trend is fitted over (10 to 3600 s).
    #[serde(default = "defaults::lead_window")]
    #[schemars(range(min = 10, max = 3600))]
    pub window_seconds: i64,
    /// The forecast never exceeds the current load times this (1 or more).
    #[serde(default = "defaults::lead_max_growth")]
    #[schemars(range(min = 1.0))]
    pub max_growth: f64,
}

impl Default for LeadTime {
    fn default() -> Self {
        Self {
            seconds: defaults::lead_seconds(),
            window_seconds: defaults::lead_window(),
            max_growth: defaults::lead_max_growth(),
        }
    }
}

/// Prices.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CostModel {
    /// Currency of every price here, as it appears in status and metrics labels.
    #[serde(default = "defaults::currency")]
    #[schemars(length(min = 1, max = 16))]
    pub currency: String,
    /// Hourly price of an ECS node by its `node.kubernetes.io/instance-type`.
    #[serde(default)]
    #[schemars(extend("maxProperties" = 256))]
    pub ecs_node_price_per_hour: BTreeMap<String, f64>,
    /// Hourly price of an ECS node whose type is not listed.
    #[serde(default = "defaults::ecs_default_price")]
    #[schemars(range(min = 0.0))]
    pub ecs_default_node_price_per_hour: f64,
    /// ECI price per vCPU per second (requests rounded up to a valid ECI size).
    #[serde(default = "defaults::eci_vcpu_second")]
    #[schemars(range(min = 0.0))]
    pub eci_vcpu_price_per_second: f64,
    /// ECI price per GiB of memory per second.
    #[serde(default = "defaults::eci_gib_second")]
    #[schemars(range(min = 0.0))]
    pub eci_gib_price_per_second: f64,
}

impl Default for CostModel {
    fn default() -> Self {
        Self {
            currency: defaults::currency(),
            ecs_node_price_per_hour: BTreeMap::new(),
            ecs_default_node_price_per_hour: defaults::ecs_default_price(),
            eci_vcpu_price_per_second: defaults::eci_vcpu_second(),
            eci_gib_price_per_second: defaults::eci_gib_second(),
        }
    }
}

/// What spillway last saw and did, as `kubectl get egw` shows it. Written by the leader with
/// server-side apply (field manager `spillway-status`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ElasticGatewayStatus {
    /// The `metadata.generation` of the spec this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Normal, Overflow, Draining, Holding or Paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The replica count spillway decided on.
    #[serde(default)]
    pub desired_replicas: i32,
    /// The gateway workload's replica count (`spec.replicas`) when spillway decided.
    #[serde(default)]
    pub current_replicas: i32,
    /// Gateway pods on the dedicated ECS nodes.
    #[serde(default)]
    pub ecs_replicas: i32,
    /// Gateway pods on virtual-kubelet (ECI) nodes.
    #[serde(default)]
    pub eci_replicas: i32,
    /// Gateway pods the ECS pool can hold now (running there plus free slots).
    #[serde(default)]
    pub ecs_capacity: i32,
    /// The preferred-affinity weights spillway wants on the gateway's pod template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<PoolWeights>,
    /// The last decision that changed something.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_decision: Option<DecisionRecord>,
    /// Estimated cost per hour of the gateway on each pool, and the saving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_per_hour: Option<CostStatus>,
    /// What one ECI pod serves as a share of an ECS pod, as learnt from the pools' CPU per
    /// request (absent until learnt): a restarted agent or a new leader starts from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eci_relative_capacity: Option<f64>,
    /// The gateway as spillway found it before its first change, restored when the
    /// ElasticGateway is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<OriginalPlacement>,
    /// Ready, MetricsAvailable and HpaConflict, as standard `metav1.Condition`s.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// The gateway's placement before spillway changed it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OriginalPlacement {
    /// The pod template's `nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution` as
    /// spillway found it (empty: there was none).
    #[serde(default)]
    pub preferred_terms: Vec<k8s_openapi::api::core::v1::PreferredSchedulingTerm>,
    /// The UID of the workload they were found on: a target deleted and made again under the
    /// same name is not handed these back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_uid: Option<String>,
}

/// The last decision that changed something, with its reason.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DecisionRecord {
    /// When, in RFC 3339.
    pub time: String,
    /// ScaleUp, ScaleDown, Hold, WeightChange, Rebalance.
    pub kind: String,
    /// Why, in words.
    pub reason: String,
    /// The replica count decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired: Option<i32>,
}

/// Estimated cost per hour.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CostStatus {
    /// The cost model's currency.
    pub currency: String,
    /// The gateway pods' share of their ECS nodes' price, per hour.
    pub ecs: f64,
    /// The ECI pods' price per hour.
    pub eci: f64,
    /// What an all-ECS fleet sized for the recent peak would cost per hour, minus the above.
    pub saving: f64,
}

impl ElasticGatewaySpec {
    /// The gateway pod's scheduling constraints as the scenario's operator sets them: both
    /// tolerations, required affinity to either pool, and preferred weights `weights`.
    pub fn gateway_template(
        &self,
        requests: crate::model::Resources,
        weights: PoolWeights,
    ) -> PodTemplate {
        let mut tolerations = self.pools.ecs.tolerations.clone();
        tolerations.extend(self.pools.eci.tolerations.iter().cloned());
        let term = |sel: &BTreeMap<String, String>| {
            SelectorTerm::with(
                sel.iter()
                    .map(|(k, v)| SelectorRequirement::is_in(k, &[v]))
                    .collect(),
            )
        };
        let ecs = term(&self.pools.ecs.node_selector);
        let eci = term(&self.pools.eci.node_selector);
        PodTemplate {
            requests,
            tolerations,
            required_terms: vec![ecs.clone(), eci.clone()],
            preferred_terms: vec![
                PreferredTerm {
                    weight: weights.ecs,
                    preference: ecs,
                },
                PreferredTerm {
                    weight: weights.eci,
                    preference: eci,
                },
            ],
            node_selector: BTreeMap::new(),
            spread: self.pool_spread_constraints(),
            pod_affinity: self.pool_affinity(),
        }
    }

    /// Nodes carrying both pools' labels: counted as virtual nodes, but the ECS label lets them
    /// into `placement.poolSpread`'s spreading, where an empty one draws gateway pods while ECS
    /// has room.
    pub fn pools_overlap(&self, nodes: &[crate::model::Node]) -> Vec<String> {
        let (ecs, eci) = (&self.pools.ecs.node_selector, &self.pools.eci.node_selector);
        if ecs.is_empty() || eci.is_empty() {
            return vec![];
        }
        nodes
            .iter()
            .filter(|n| n.has_labels(ecs) && n.has_labels(eci))
            .map(|n| n.name.clone())
            .collect()
    }

    /// Settings that are valid but move the fleet in ways users rarely mean: `spillway check`
    /// and `spillway doctor` print them as warnings, each with what it costs.
    pub fn advice(&self) -> Vec<String> {
        let p = &self.placement;
        let mut out = vec![];
        let prefers_eci = |w: PoolWeights| w.eci > w.ecs;
        if prefers_eci(p.normal_weights) {
            out.push(format!(
                "spec.placement.normalWeights {{ecs: {}, eci: {}}} prefers ECI: new gateway pods go to the virtual node while ECS has room, and ECI is paid per second on top of the ECS nodes paid anyway (the default is 80/20)",
                p.normal_weights.ecs, p.normal_weights.eci
            ));
        }
        if prefers_eci(p.exhausted_weights) {
            out.push(format!(
                "spec.placement.exhaustedWeights {{ecs: {}, eci: {}}} prefers ECI (yield mode): once ECS has stayed exhausted for {} s the template changes, which rolls every gateway pod, and every new pod goes to ECI, emptying ECS nodes paid for anyway (the default keeps the normal weights)",
                p.exhausted_weights.ecs, p.exhausted_weights.eci, p.exhausted_after_seconds
            ));
        }
        out
    }

    /// The preferred pod affinity `placement.poolSpread` gives an IstioGateway's pods (none for
    /// a Deployment, when it is off, or when the ECS pool has no label to key on).
    pub fn pool_affinity(&self) -> Vec<crate::model::OwnPodAffinity> {
        let Some(key) = self.pools.ecs.node_selector.keys().next() else {
            return vec![];
        };
        if !self.placement.pool_spread || self.target.kind != TargetKind::IstioGateway {
            return vec![];
        }
        vec![crate::model::OwnPodAffinity {
            topology_key: key.clone(),
            weight: POOL_AFFINITY_WEIGHT,
        }]
    }

    /// The topology keys `placement.poolSpread` writes for this target, spread constraints or
    /// pod affinity (empty: nothing to write).
    pub fn pool_placement_keys(&self) -> Vec<String> {
        self.pool_spread_constraints()
            .into_iter()
            .map(|c| c.topology_key)
            .chain(self.pool_affinity().into_iter().map(|a| a.topology_key))
            .collect()
    }

    /// The spread constraints `placement.poolSpread` gives the gateway's pods (none when it is
    /// off, or the ECS pool has no label to key on).
    pub fn pool_spread_constraints(&self) -> Vec<SpreadConstraint> {
        let Some(key) = self.pools.ecs.node_selector.keys().next() else {
            return vec![];
        };
        if !self.placement.pool_spread || self.target.kind != TargetKind::Deployment {
            return vec![];
        }
        [key.as_str(), HOSTNAME_LABEL]
            .into_iter()
            .map(|k| SpreadConstraint {
                topology_key: k.to_string(),
                max_skew: POOL_SPREAD_MAX_SKEW,
            })
            .collect()
    }
}

/// Every node's own name, as kubelets label them.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";
/// The system defaults' skew on hostname, kept.
pub const POOL_SPREAD_MAX_SKEW: i64 = 3;
/// The pool affinity's weight: the most a preferred term may have.
pub const POOL_AFFINITY_WEIGHT: i32 = 100;

/// Defaults, named so the schema and `Default` impls agree.
pub mod defaults {
    use super::*;

    pub fn min_replicas() -> i32 {
        2
    }
    pub fn max_replicas() -> i32 {
        20
    }
    pub fn metrics() -> Vec<MetricSpec> {
        vec![MetricSpec {
            name: None,
            preset: Some(Preset::RequestRate),
            query: None,
            target_per_replica: 500.0,
        }]
    }
    pub fn ecs_pool() -> PoolSpec {
        PoolSpec {
            node_selector: BTreeMap::from([("mykey4pod".to_string(), "asmgateway".to_string())]),
            tolerations: vec![Toleration::equal(
                "mykey",
                "myvalue",
                TaintEffect::NoSchedule,
            )],
        }
    }
    pub fn eci_pool() -> PoolSpec {
        PoolSpec {
            node_selector: BTreeMap::from([("type".to_string(), "virtual-kubelet".to_string())]),
            tolerations: vec![Toleration::equal(
                "virtual-kubelet.io/provider",
                "alibabacloud",
                TaintEffect::NoSchedule,
            )],
        }
    }
    pub fn normal_weights() -> PoolWeights {
        PoolWeights { ecs: 80, eci: 20 }
    }
    /// The yield-ECS mode is opt-in: by default the exhausted weights are the normal ones.
    pub fn exhausted_weights() -> PoolWeights {
        normal_weights()
    }
    pub fn strong_weights() -> PoolWeights {
        PoolWeights { ecs: 100, eci: 1 }
    }
    /// Long enough that a flash crowd never rolls the gateway mid-peak; a sustained one does.
    pub fn exhausted_after() -> i64 {
        1800
    }
    pub fn recovered_after() -> i64 {
        600
    }
    pub fn min_weight_interval() -> i64 {
        3600
    }
    pub fn pool_spread() -> bool {
        true
    }
    pub fn swap_back() -> bool {
        true
    }
    pub fn rebalance_interval() -> i64 {
        60
    }
    pub fn tolerance() -> f64 {
        0.1
    }
    pub fn warmup_min_weight_percent() -> f64 {
        10.0
    }
    pub fn warmup_aggression() -> f64 {
        1.0
    }
    /// `behavior.resetBudgetPercent`: see [`Behavior::reset_budget_percent`].
    pub const RESET_BUDGET_PERCENT: f64 = 25.0;
    pub fn lead_seconds() -> i64 {
        45
    }
    pub fn lead_window() -> i64 {
        60
    }
    pub fn lead_max_growth() -> f64 {
        3.0
    }
    pub fn currency() -> String {
        "CNY".to_string()
    }
    /// ecs.g7.2xlarge (8 vCPU, 32 GiB) pay-as-you-go list price in cn-hangzhou, about.
    pub fn ecs_default_price() -> f64 {
        2.2
    }
    /// ECI list prices, cn-hangzhou, about.
    pub fn eci_vcpu_second() -> f64 {
        0.000049
    }
    pub fn eci_gib_second() -> f64 {
        0.00000613
    }
}

impl ElasticGateway {
    /// The scenario's policy: an IstioGateway `ingressgateway` in `istio-system`, defaults
    /// everywhere else.
    pub fn scenario_default() -> Self {
        let spec: ElasticGatewaySpec = serde_json::from_value(serde_json::json!({
            "target": {"kind": "IstioGateway", "name": "ingressgateway"},
            "minReplicas": 2,
            "maxReplicas": 40,
            "eci": {"maxReplicas": 30},
            "metrics": [{"preset": "RequestRate", "targetPerReplica": 500.0}],
        }))
        .expect("the built-in policy deserialises: covered by tests");
        let mut egw = ElasticGateway::new("ingressgateway", spec);
        egw.metadata.namespace = Some("istio-system".into());
        egw
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_lines_make_the_scenario_policy() {
        let spec: ElasticGatewaySpec =
            serde_json::from_value(serde_json::json!({"target": {"name": "istio-ingressgateway"}}))
                .unwrap();
        assert_eq!(spec.min_replicas, 2);
        assert_eq!(
            spec.placement.normal_weights,
            PoolWeights { ecs: 80, eci: 20 }
        );
        assert_eq!(spec.pools.ecs.node_selector["mykey4pod"], "asmgateway");
        assert_eq!(spec.pools.eci.node_selector["type"], "virtual-kubelet");
        assert_eq!(
            spec.behavior
                .scale_down
                .effective(false)
                .stabilization_window_seconds,
            300
        );
        assert_eq!(spec.behavior.scale_up.effective(true).policies.len(), 2);
        assert!((spec.behavior.tolerance - 0.1).abs() < 1e-12);
        assert!(validate(&spec, "istio-system").is_empty());
    }

    #[test]
    fn gateway_template_has_the_scenario_affinity() {
        let spec = ElasticGateway::scenario_default().spec;
        let t = spec.gateway_template(
            crate::model::Resources::pod(2000, 2 << 30),
            spec.placement.normal_weights,
        );
        assert_eq!(t.tolerations.len(), 2);
        assert_eq!(t.required_terms.len(), 2);
        assert_eq!(t.preferred_terms[0].weight, 80);
        assert_eq!(t.preferred_terms[1].weight, 20);
        assert_eq!(
            t.preferred_terms[1].preference.match_expressions[0].key,
            "type"
        );
    }
}
