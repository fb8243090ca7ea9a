//! Drill scenario files: the cluster, the gateway, the latencies, the load and the policy.
//! Every field has a default; the built-in scenario is `../shared/SCENARIO.md`'s cluster with a
//! 10x flash crowd.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::cluster::{Connections, Latencies};
use super::load::{Component, LoadProfile, PromTiming, SignalModel};
use crate::config::FieldError;
use crate::model::{INSTANCE_TYPE_LABEL, Node, Resources, Taint, TaintEffect, quantity};
use crate::policy::{ElasticGateway, ElasticGatewaySpec};

/// A whole drill.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Scenario {
    #[serde(default = "d_name")]
    pub name: String,
    /// Seed of the run's randomness (start-latency jitter, scheduler ties).
    #[serde(default = "d_seed")]
    pub seed: u64,
    #[serde(default = "d_duration")]
    pub duration_seconds: u64,
    /// Simulation step; 1 s unless a long drill needs speed over detail.
    #[serde(default = "d_step")]
    pub step_seconds: u64,
    #[serde(default)]
    pub cluster: ClusterSpec,
    #[serde(default)]
    pub gateway: GatewaySpec,
    #[serde(default)]
    pub latencies: Latencies,
    #[serde(default)]
    pub prometheus: PromTiming,
    #[serde(default)]
    pub signals: SignalModel,
    #[serde(default = "d_load")]
    pub load: LoadProfile,
    /// The ElasticGateway spec under test (the same type the cluster reads).
    #[serde(default = "d_policy")]
    pub policy: ElasticGatewaySpec,
    /// Which policies run side by side on the same load.
    #[serde(default = "d_policies")]
    pub policies: Vec<PolicyKind>,
    /// Replica count of the `static` policy for the drill's own gateway; default (and for
    /// neighbours): sized for the peak at the target load.
    #[serde(default)]
    pub static_replicas: Option<i32>,
    /// How often each controller runs.
    #[serde(default)]
    pub controllers: ControllerTiming,
    /// Other gateways on the same nodes, each with its own Deployment, load and policy, run by
    /// the same kind of controller as the gateway (under `spillway`, one agent with one ECS
    /// ledger). The scorecard then counts the fleet: what one gateway's surge costs the others.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub neighbours: Vec<Neighbour>,
    /// Events planned for the drill's own gateway, as a PlannedEvent states them: spillway and
    /// `cron` are told; the load says what really comes (on time, larger, smaller, not at all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<ScriptedEvent>,
}

/// A planned event on the drill's clock.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScriptedEvent {
    pub name: String,
    /// Ready for `rps` from here…
    pub start_seconds: u64,
    /// …to here.
    pub end_seconds: u64,
    pub rps: f64,
    /// The demand rises over this long before the start (0: a step).
    #[serde(default)]
    pub ramp_seconds: u64,
    /// When it is planned (the PlannedEvent is made): unknown before (0: from the start).
    #[serde(default)]
    pub planned_at_seconds: u64,
}

impl ScriptedEvent {
    pub fn demand(&self) -> crate::engine::planned::PlannedDemand {
        crate::engine::planned::PlannedDemand {
            name: self.name.clone(),
            start: self.start_seconds as f64,
            end: self.end_seconds as f64,
            rps: self.rps,
            ramp_seconds: self.ramp_seconds as f64,
            created: self.planned_at_seconds as f64,
            per_pod: None,
        }
    }
}

/// Another gateway sharing the drill's nodes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Neighbour {
    /// Names it in the scorecard's surges and the decision log.
    pub name: String,
    /// Its workload; default: the same as the drill's `gateway`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewaySpec>,
    pub load: LoadProfile,
    /// Its ElasticGateway spec; default: the drill's `policy`. Its pools must be the drill's:
    /// the nodes are labelled for one pair.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<ElasticGatewaySpec>,
}

/// One gateway of a drill, its defaults filled in: the drill's own, then each neighbour.
#[derive(Clone, Copy, Debug)]
pub struct Lane<'a> {
    pub name: &'a str,
    pub gateway: &'a GatewaySpec,
    pub load: &'a LoadProfile,
    pub policy: &'a ElasticGatewaySpec,
}

/// The policies a drill can compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PolicyKind {
    /// spillway's engine: HPA baseline + lead time, ECS-first placement, deletion costs.
    Spillway,
    /// The Kubernetes HPA with default behavior, static 80/20 weights, no deletion costs.
    Hpa,
    /// A fixed replica count.
    Static,
    /// Perfect foresight of the load: a lower bound on shortage for these start latencies.
    Oracle,
    /// Knows the true load at every instant and sizes for it at once on the way up (no metric
    /// delay, no decision delay, no stabilization), with the HPA's 5-minute window on the way
    /// down: the limit any reactive scaler can reach with these start latencies.
    Reactive,
    /// The `hpa` baseline with a scheduled floor, as KEDA's cron scaler or ACK's CronHPA set
    /// one: each planned event's replicas (its demand at the request-rate target) from its
    /// start to its end, through the HPA's formula and rate limits; nothing ahead of time.
    Cron,
}

impl PolicyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::Spillway => "spillway",
            PolicyKind::Hpa => "hpa",
            PolicyKind::Static => "static",
            PolicyKind::Oracle => "oracle",
            PolicyKind::Reactive => "reactive",
            PolicyKind::Cron => "cron",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ControllerTiming {
    /// spillway's tick (`spillway run --interval`).
    #[serde(default = "d_spillway_interval")]
    pub spillway_interval_seconds: u64,
    /// kube-controller-manager `--horizontal-pod-autoscaler-sync-period`.
    #[serde(default = "d_hpa_sync")]
    pub hpa_sync_seconds: u64,
    /// spillway's fast path: how often it reads the gateway pods' own request counters
    /// (`:15090/stats/prometheus`) between its Prometheus ticks; 0 turns the fast path off.
    #[serde(default = "d_fast_path")]
    pub fast_path_seconds: u64,
    /// The `hpa` policy's `behavior.scaleDown.stabilizationWindowSeconds`, when its
    /// HorizontalPodAutoscaler sets one (default: upstream's 300 s). A time-compressed run
    /// shortens it, in both fleets alike (tests/hpa.rs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hpa_scale_down_window_seconds: Option<i32>,
    /// The `hpa` policy's `behavior.scaleUp.tolerance` and `behavior.scaleDown.tolerance`
    /// (Kubernetes 1.33+), when its HorizontalPodAutoscaler sets them (default: the cluster's
    /// 0.1 both ways).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hpa_scale_up_tolerance: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hpa_scale_down_tolerance: Option<f64>,
    /// When in its period the HPA syncs: at `t ≡ offset (mod hpaSyncSeconds)` (default 0). A
    /// real HPA's phase is set by when kube-controller-manager first queued it; tests/hpa.rs
    /// reads it from the apiserver's audit log to predict the same run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hpa_sync_offset_seconds: Option<u64>,
}

impl Default for ControllerTiming {
    fn default() -> Self {
        Self {
            spillway_interval_seconds: d_spillway_interval(),
            hpa_sync_seconds: d_hpa_sync(),
            fast_path_seconds: d_fast_path(),
            hpa_scale_down_window_seconds: None,
            hpa_scale_up_tolerance: None,
            hpa_scale_down_tolerance: None,
            hpa_sync_offset_seconds: None,
        }
    }
}

/// The cluster's nodes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterSpec {
    /// The dedicated ECS nodes, labelled and tainted as in the scenario.
    #[serde(default)]
    pub ecs: NodeGroup,
    /// Ordinary worker nodes (no gateway label): they make the cluster bigger, never hold the gateway.
    #[serde(default)]
    pub workers: u32,
    #[serde(default = "d_virtual")]
    pub virtual_nodes: u32,
    /// Any further nodes, written out in full.
    #[serde(default)]
    pub extra_nodes: Vec<Node>,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        Self {
            ecs: NodeGroup::default(),
            workers: 0,
            virtual_nodes: d_virtual(),
            extra_nodes: vec![],
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeGroup {
    #[serde(default = "d_ecs_count")]
    pub count: u32,
    #[serde(default = "d_instance_type")]
    pub instance_type: String,
    #[serde(default = "d_cpu")]
    pub cpu: String,
    #[serde(default = "d_memory")]
    pub memory: String,
    #[serde(default = "d_pods")]
    pub pods: i64,
    /// CPU already requested on each node by other workloads.
    #[serde(default = "d_other_cpu")]
    pub other_cpu: String,
    #[serde(default = "d_other_memory")]
    pub other_memory: String,
    #[serde(default = "d_other_pods")]
    pub other_pods: i64,
}

impl Default for NodeGroup {
    fn default() -> Self {
        Self {
            count: d_ecs_count(),
            instance_type: d_instance_type(),
            cpu: d_cpu(),
            memory: d_memory(),
            pods: d_pods(),
            other_cpu: d_other_cpu(),
            other_memory: d_other_memory(),
            other_pods: d_other_pods(),
        }
    }
}

/// The gateway workload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewaySpec {
    /// Replicas at the start.
    #[serde(default = "d_replicas")]
    pub replicas: i32,
    #[serde(default = "d_gw_cpu")]
    pub cpu: String,
    #[serde(default = "d_gw_memory")]
    pub memory: String,
    /// Requests per second one ready pod can serve; beyond it the gateway is short.
    #[serde(default = "d_capacity")]
    pub capacity_per_pod_rps: f64,
    /// What one ECI pod serves as a share of one ECS pod (a slower vCPU, a bandwidth cap, cold
    /// caches): it also spends `1 / this` times the CPU per request. 1: the same.
    #[serde(default = "d_one")]
    pub eci_relative_capacity: f64,
    /// Deployment `maxSurge`/`maxUnavailable` as fractions.
    #[serde(default = "d_quarter")]
    pub max_surge: f64,
    #[serde(default = "d_quarter")]
    pub max_unavailable: f64,
    /// Long-lived client connections, if the load rides some: what a scale-in resets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<Connections>,
    /// A slow start in front of the pods (the load balancer ramps each new pod's share, as
    /// Envoy's `slow_start_config`): the policy learns of it only through its own
    /// `spec.warmup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup: Option<crate::policy::Warmup>,
}

impl GatewaySpec {
    /// Requests of one pod (validated quantities; 0 where one does not parse).
    pub fn requests(&self) -> Resources {
        Resources::pod(
            quantity::cpu_millis(&self.cpu).unwrap_or(0),
            quantity::bytes(&self.memory).unwrap_or(0),
        )
    }

    /// Everything wrong with it, each under `at` (`gateway` or `neighbours[i].gateway`).
    fn validate(&self, at: &str, bad: &mut dyn FnMut(&str, String)) {
        if let Err(err) = quantity::cpu_millis(&self.cpu) {
            bad(&format!("{at}.cpu"), err.to_string());
        }
        if let Err(err) = quantity::bytes(&self.memory) {
            bad(&format!("{at}.memory"), err.to_string());
        }
        if self.replicas < 1 {
            bad(
                &format!("{at}.replicas"),
                format!("must be at least 1, got {}", self.replicas),
            );
        }
        if !(self.capacity_per_pod_rps.is_finite() && self.capacity_per_pod_rps > 0.0) {
            bad(
                &format!("{at}.capacityPerPodRps"),
                format!("must be greater than 0, got {}", self.capacity_per_pod_rps),
            );
        }
        if !(self.eci_relative_capacity.is_finite()
            && (0.1..=2.0).contains(&self.eci_relative_capacity))
        {
            bad(
                &format!("{at}.eciRelativeCapacity"),
                format!("must be within 0.1..2, got {}", self.eci_relative_capacity),
            );
        }
        for (field, problem) in self.warmup.iter().flat_map(|w| w.problems()) {
            bad(&format!("{at}.warmup.{field}"), problem);
        }
        if let Some(c) = &self.connections {
            if !(0.0..=1.0).contains(&c.long_lived_share) {
                bad(
                    &format!("{at}.connections.longLivedShare"),
                    format!("must be a fraction within 0..1, got {}", c.long_lived_share),
                );
            }
            let age = c.max_age_seconds.map(|a| ("maxAgeSeconds", a));
            for (field, v) in [
                ("requestsPerConnection", c.requests_per_connection),
                ("meanLifetimeSeconds", c.mean_lifetime_seconds),
            ]
            .into_iter()
            .chain(age)
            {
                if !(v.is_finite() && v > 0.0) {
                    bad(
                        &format!("{at}.connections.{field}"),
                        format!("must be greater than 0, got {v}"),
                    );
                }
            }
        }
        for (field, f) in [
            ("maxSurge", self.max_surge),
            ("maxUnavailable", self.max_unavailable),
        ] {
            if !(0.0..=1.0).contains(&f) {
                bad(
                    &format!("{at}.{field}"),
                    format!("must be a fraction within 0..1, got {f}"),
                );
            }
        }
    }
}

impl Default for GatewaySpec {
    fn default() -> Self {
        Self {
            replicas: d_replicas(),
            cpu: d_gw_cpu(),
            memory: d_gw_memory(),
            capacity_per_pod_rps: d_capacity(),
            eci_relative_capacity: d_one(),
            max_surge: d_quarter(),
            max_unavailable: d_quarter(),
            connections: None,
            warmup: None,
        }
    }
}

fn d_name() -> String {
    "built-in: 4 dedicated ECS nodes and a virtual node, 10x flash crowd".into()
}
fn d_seed() -> u64 {
    7
}
fn d_duration() -> u64 {
    3600
}
fn d_step() -> u64 {
    1
}
fn d_virtual() -> u32 {
    1
}
fn d_ecs_count() -> u32 {
    4
}
fn d_instance_type() -> String {
    "ecs.g7.2xlarge".into()
}
fn d_cpu() -> String {
    "8".into()
}
fn d_memory() -> String {
    "32Gi".into()
}
fn d_pods() -> i64 {
    110
}
fn d_other_cpu() -> String {
    "2".into()
}
fn d_other_memory() -> String {
    "8Gi".into()
}
fn d_other_pods() -> i64 {
    6
}
fn d_replicas() -> i32 {
    4
}
fn d_gw_cpu() -> String {
    "2".into()
}
fn d_gw_memory() -> String {
    "2Gi".into()
}
fn d_capacity() -> f64 {
    700.0
}
fn d_one() -> f64 {
    1.0
}
fn d_quarter() -> f64 {
    0.25
}
fn d_spillway_interval() -> u64 {
    5
}
fn d_hpa_sync() -> u64 {
    15
}
fn d_fast_path() -> u64 {
    2
}
fn d_policies() -> Vec<PolicyKind> {
    vec![
        PolicyKind::Spillway,
        PolicyKind::Hpa,
        PolicyKind::Static,
        PolicyKind::Oracle,
    ]
}
fn d_policy() -> ElasticGatewaySpec {
    ElasticGateway::scenario_default().spec
}
/// 2,000 rps, then at 10 min a flash crowd to 20,000 rps within a minute, held 10 minutes,
/// gone over the next 5.
fn d_load() -> LoadProfile {
    LoadProfile {
        components: vec![
            Component::Constant { rps: 2000.0 },
            Component::Spike {
                at_seconds: 600.0,
                rise_seconds: 60.0,
                hold_seconds: 600.0,
                fall_seconds: 300.0,
                rps: 18_000.0,
            },
        ],
    }
}

/// Most nodes of one kind (ECS, workers, virtual, extra) a drill simulates: the live bench's
/// largest cluster is 5,000 nodes.
pub const MAX_NODES: u32 = 10_000;
/// Most neighbour gateways a drill simulates beside its own.
pub const MAX_NEIGHBOURS: usize = 64;
/// Largest starting replica count of a simulated gateway.
pub const MAX_GATEWAY_REPLICAS: i32 = 10_000;

impl Scenario {
    /// Sizes a drill can simulate within memory and minutes: a count out of them is refused by
    /// name, not run until the machine gives out.
    fn validate_size(&self, bad: &mut dyn FnMut(&str, String)) {
        let c = &self.cluster;
        let extra = u32::try_from(c.extra_nodes.len()).unwrap_or(u32::MAX);
        for (path, n) in [
            ("cluster.ecs.count", c.ecs.count),
            ("cluster.workers", c.workers),
            ("cluster.virtualNodes", c.virtual_nodes),
            ("cluster.extraNodes", extra),
        ] {
            if n > MAX_NODES {
                bad(path, format!("must be at most {MAX_NODES}, got {n}"));
            }
        }
        if self.neighbours.len() > MAX_NEIGHBOURS {
            bad(
                "neighbours",
                format!(
                    "must list at most {MAX_NEIGHBOURS} gateways, got {}",
                    self.neighbours.len()
                ),
            );
        }
        let gateways = std::iter::once(("gateway".to_string(), &self.gateway)).chain(
            self.neighbours.iter().enumerate().filter_map(|(i, n)| {
                Some((format!("neighbours[{i}].gateway"), n.gateway.as_ref()?))
            }),
        );
        for (at, g) in gateways {
            if g.replicas > MAX_GATEWAY_REPLICAS {
                bad(
                    &format!("{at}.replicas"),
                    format!("must be at most {MAX_GATEWAY_REPLICAS}, got {}", g.replicas),
                );
            }
        }
    }
}

/// Everything wrong with a load profile, each under `at`.
fn validate_load(load: &LoadProfile, at: &str, bad: &mut dyn FnMut(&str, String)) {
    if load.components.is_empty() {
        bad(
            &format!("{at}.components"),
            "must have at least one component".into(),
        );
    }
    for (i, c) in load.components.iter().enumerate() {
        if let super::load::Component::Recorded {
            step_seconds, rps, ..
        } = c
        {
            if !(step_seconds.is_finite() && *step_seconds > 0.0) {
                bad(
                    &format!("{at}.components[{i}].stepSeconds"),
                    format!("must be greater than 0, got {step_seconds}"),
                );
            }
            if rps.is_empty() || rps.iter().any(|v| !(v.is_finite() && *v >= 0.0)) {
                bad(
                    &format!("{at}.components[{i}].rps"),
                    "must hold at least one value, each finite and not negative".into(),
                );
            }
        }
    }
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            name: d_name(),
            seed: d_seed(),
            duration_seconds: d_duration(),
            step_seconds: d_step(),
            cluster: ClusterSpec::default(),
            gateway: GatewaySpec::default(),
            latencies: Latencies::default(),
            prometheus: PromTiming::default(),
            signals: SignalModel::default(),
            load: d_load(),
            policy: d_policy(),
            policies: d_policies(),
            static_replicas: None,
            controllers: ControllerTiming::default(),
            neighbours: Vec::new(),
            events: Vec::new(),
        }
    }
}

impl Scenario {
    /// Reads a scenario file; CSV replays are found relative to it.
    pub fn load(path: &Path) -> Result<Self, Vec<FieldError>> {
        let text = crate::config::read_bounded(path, crate::config::MAX_DOCUMENT_BYTES)
            .map_err(|e| vec![FieldError::new(path.display().to_string(), e)])?;
        let mut s = Self::parse(&text)?;
        let base = path.parent().unwrap_or(Path::new("."));
        s.load.resolve(base).map_err(|e| vec![e])?;
        for (i, n) in s.neighbours.iter_mut().enumerate() {
            n.load.resolve(base).map_err(|e| {
                vec![FieldError::new(
                    format!("neighbours[{i}].{}", e.path),
                    e.message,
                )]
            })?;
        }
        Ok(s)
    }

    /// Parses and validates a scenario document.
    pub fn parse(text: &str) -> Result<Self, Vec<FieldError>> {
        let value = crate::config::parse_value(text).map_err(|e| vec![e])?;
        let s: Scenario = crate::config::from_value(value, |_| false)?;
        let errors = s.validate();
        if errors.is_empty() {
            Ok(s)
        } else {
            Err(errors)
        }
    }

    /// Everything wrong with the scenario, each naming its field.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut e: Vec<FieldError> = crate::policy::validate(&self.policy, "istio-system")
            .into_iter()
            .map(|f| FieldError::new(f.path.replacen("spec.", "policy.", 1), f.message))
            .collect();
        let mut bad = |path: &str, msg: String| e.push(FieldError::new(path, msg));
        if self.duration_seconds == 0 || self.duration_seconds > 30 * 86_400 {
            bad(
                "durationSeconds",
                format!(
                    "must be within 1..{} (30 days), got {}",
                    30 * 86_400,
                    self.duration_seconds
                ),
            );
        }
        if self.step_seconds == 0 || self.step_seconds > 60 {
            bad(
                "stepSeconds",
                format!("must be within 1..60, got {}", self.step_seconds),
            );
        }
        if self.policies.is_empty() {
            bad("policies", "must name at least one policy".into());
        }
        for (i, ev) in self.events.iter().enumerate() {
            let at = format!("events[{i}]");
            if ev.end_seconds <= ev.start_seconds {
                bad(
                    &format!("{at}.endSeconds"),
                    format!(
                        "must be after startSeconds ({}), got {}",
                        ev.start_seconds, ev.end_seconds
                    ),
                );
            }
            if !(ev.rps.is_finite() && ev.rps > 0.0) {
                bad(
                    &format!("{at}.rps"),
                    format!("must be a number above 0, got {}", ev.rps),
                );
            }
            if ev.ramp_seconds > ev.start_seconds {
                bad(
                    &format!("{at}.rampSeconds"),
                    format!(
                        "the ramp must start within the drill: at most startSeconds ({}), got {}",
                        ev.start_seconds, ev.ramp_seconds
                    ),
                );
            }
        }
        if self.events.iter().any(|_| {
            !self
                .policy
                .metrics
                .iter()
                .any(|m| m.preset == Some(crate::policy::Preset::RequestRate))
        }) {
            bad(
                "events",
                "planned events are in requests per second: the policy needs a requestRate metric"
                    .into(),
            );
        }
        for (i, p) in self.policies.iter().enumerate() {
            if self.policies[..i].contains(p) {
                bad(
                    &format!("policies[{i}]"),
                    format!("{p:?} is listed twice: each policy runs once"),
                );
            }
        }
        self.validate_size(&mut bad);
        let c = &self.controllers;
        for (path, t) in [
            ("controllers.hpaScaleUpTolerance", c.hpa_scale_up_tolerance),
            (
                "controllers.hpaScaleDownTolerance",
                c.hpa_scale_down_tolerance,
            ),
        ] {
            if let Some(t) = t.filter(|t| !(t.is_finite() && *t >= 0.0)) {
                bad(path, format!("must be 0 or more, got {t}"));
            }
        }
        for (path, q) in [
            ("cluster.ecs.cpu", &self.cluster.ecs.cpu),
            ("cluster.ecs.otherCpu", &self.cluster.ecs.other_cpu),
        ] {
            if let Err(err) = quantity::cpu_millis(q) {
                bad(path, err.to_string());
            }
        }
        for (path, q) in [
            ("cluster.ecs.memory", &self.cluster.ecs.memory),
            ("cluster.ecs.otherMemory", &self.cluster.ecs.other_memory),
        ] {
            if let Err(err) = quantity::bytes(q) {
                bad(path, err.to_string());
            }
        }
        self.gateway
            .validate("gateway", &mut |p: &str, m: String| bad(p, m));
        let l = &self.latencies;
        for (path, v) in [
            ("latencies.ecsStartSeconds", l.ecs_start_seconds),
            ("latencies.eciStartSeconds", l.eci_start_seconds),
            ("latencies.terminationSeconds", l.termination_seconds),
        ] {
            if !(v.is_finite() && (0.0..=3600.0).contains(&v)) {
                bad(path, format!("must be within 0..3600 seconds, got {v}"));
            }
        }
        if !(0.0..=1.0).contains(&l.jitter) {
            bad(
                "latencies.jitter",
                format!("must be within 0..1, got {}", l.jitter),
            );
        }
        if self.prometheus.scrape_interval_seconds == 0 {
            bad(
                "prometheus.scrapeIntervalSeconds",
                "must be at least 1".into(),
            );
        }
        if self.prometheus.rate_window_seconds < 2 * self.prometheus.scrape_interval_seconds {
            bad(
                "prometheus.rateWindowSeconds",
                format!(
                    "must cover at least two scrapes ({}s), got {}",
                    2 * self.prometheus.scrape_interval_seconds,
                    self.prometheus.rate_window_seconds
                ),
            );
        }
        if self.controllers.spillway_interval_seconds == 0 {
            bad(
                "controllers.spillwayIntervalSeconds",
                "must be at least 1".into(),
            );
        }
        if self.controllers.hpa_sync_seconds == 0 {
            bad("controllers.hpaSyncSeconds", "must be at least 1".into());
        }
        if let Some(r) = self
            .static_replicas
            .filter(|r| !(1..=self.policy.max_replicas).contains(r))
        {
            bad(
                "staticReplicas",
                format!(
                    "must be within 1..policy.maxReplicas ({}), got {r}",
                    self.policy.max_replicas
                ),
            );
        }
        validate_load(&self.load, "load", &mut bad);
        let mut names = std::collections::BTreeSet::from(["gateway"]);
        for (i, n) in self.neighbours.iter().enumerate() {
            let at = format!("neighbours[{i}]");
            let label = !n.name.is_empty()
                && n.name.len() <= 63
                && n.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !n.name.starts_with('-')
                && !n.name.ends_with('-');
            if !label || !names.insert(n.name.as_str()) {
                bad(
                    &format!("{at}.name"),
                    format!(
                        "must be a DNS label (lowercase letters, digits, '-') no other gateway \
                         of the drill has (`gateway` is the drill's own), got {:?}",
                        n.name
                    ),
                );
            }
            if let Some(g) = &n.gateway {
                g.validate(&format!("{at}.gateway"), &mut |p: &str, m: String| {
                    bad(p, m)
                });
            }
            validate_load(&n.load, &format!("{at}.load"), &mut bad);
            if let Some(p) = &n.policy {
                if p.pools != self.policy.pools {
                    bad(
                        &format!("{at}.policy.pools"),
                        "must be the drill's policy.pools: the nodes are labelled for one pair"
                            .into(),
                    );
                }
                for f in crate::policy::validate(p, "istio-system") {
                    bad(
                        &f.path.replacen("spec.", &format!("{at}.policy."), 1),
                        f.message,
                    );
                }
            }
        }
        e
    }

    pub fn gateway_requests(&self) -> Resources {
        self.gateway.requests()
    }

    /// Every gateway of the drill: its own first (named `gateway`), then each neighbour.
    pub fn lanes(&self) -> Vec<Lane<'_>> {
        std::iter::once(Lane {
            name: "gateway",
            gateway: &self.gateway,
            load: &self.load,
            policy: &self.policy,
        })
        .chain(self.neighbours.iter().map(|n| Lane {
            name: &n.name,
            gateway: n.gateway.as_ref().unwrap_or(&self.gateway),
            load: &n.load,
            policy: n.policy.as_ref().unwrap_or(&self.policy),
        }))
        .collect()
    }

    /// The nodes: ECS nodes labelled and tainted per the policy's ECS pool, workers, virtual nodes.
    pub fn nodes(&self) -> Vec<Node> {
        let g = &self.cluster.ecs;
        let cpu = quantity::cpu_millis(&g.cpu).unwrap_or(0);
        let mem = quantity::bytes(&g.memory).unwrap_or(0);
        let used = Resources::new(
            quantity::cpu_millis(&g.other_cpu).unwrap_or(0),
            quantity::bytes(&g.other_memory).unwrap_or(0),
            g.other_pods,
        );
        let ecs_pool = &self.policy.pools.ecs;
        let ecs_taints: Vec<Taint> = ecs_pool
            .tolerations
            .iter()
            .filter(|t| !t.key.is_empty())
            .map(|t| Taint {
                key: t.key.clone(),
                value: t.value.clone(),
                effect: t.effect.unwrap_or(TaintEffect::NoSchedule),
            })
            .collect();
        let mut nodes = Vec::new();
        for i in 0..g.count {
            let mut labels = ecs_pool.node_selector.clone();
            labels.insert(INSTANCE_TYPE_LABEL.into(), g.instance_type.clone());
            nodes.push(Node {
                name: format!("cn-hangzhou.ecs-{i:02}"),
                labels,
                taints: ecs_taints.clone(),
                allocatable: Resources::new(cpu, mem, g.pods),
                requested: used,
                unschedulable: false,
            });
        }
        for i in 0..self.cluster.workers {
            nodes.push(Node {
                name: format!("cn-hangzhou.worker-{i:03}"),
                labels: [(INSTANCE_TYPE_LABEL.to_string(), g.instance_type.clone())].into(),
                taints: vec![],
                allocatable: Resources::new(cpu, mem, g.pods),
                requested: used,
                unschedulable: false,
            });
        }
        let eci_pool = &self.policy.pools.eci;
        for i in 0..self.cluster.virtual_nodes {
            nodes.push(Node {
                name: format!(
                    "virtual-kubelet-cn-hangzhou-{}",
                    (b'k' + i as u8 % 16) as char
                ),
                labels: eci_pool.node_selector.clone(),
                taints: vec![Taint {
                    key: "virtual-kubelet.io/provider".into(),
                    value: "alibabacloud".into(),
                    effect: TaintEffect::NoSchedule,
                }],
                // virtual-kubelet advertises a very large capacity.
                allocatable: Resources::new(10_000_000, 40_000 << 30, 200_000),
                requested: Resources::default(),
                unschedulable: false,
            });
        }
        nodes.extend(self.cluster.extra_nodes.iter().cloned());
        nodes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_scenario_is_valid_and_matches_the_guide() {
        let s = Scenario::default();
        assert!(s.validate().is_empty(), "{:?}", s.validate());
        let nodes = s.nodes();
        assert_eq!(nodes.len(), 5);
        assert_eq!(nodes[0].labels["mykey4pod"], "asmgateway");
        assert_eq!(nodes[0].taints[0].key, "mykey");
        assert_eq!(nodes[4].labels["type"], "virtual-kubelet");
        assert_eq!(nodes[4].taints[0].key, "virtual-kubelet.io/provider");
        let peak = (0..3600)
            .map(|t| s.load.at(f64::from(t)))
            .fold(0.0, f64::max);
        assert_eq!(peak, 20_000.0);
    }

    /// Issue 30: `/dev/zero` as the CSV read 2.1 GB and ran out of memory; 10,000 policies ran
    /// until killed. Files are read within a cap, each policy runs once, and the cluster and
    /// gateways stay within what a drill simulates.
    #[test]
    fn sizes_beyond_a_drill_are_refused_by_name() {
        let paths = |text: &str| -> Vec<String> {
            Scenario::parse(text)
                .err()
                .unwrap_or_default()
                .into_iter()
                .map(|e| e.path)
                .collect()
        };
        assert_eq!(
            paths("policies: [spillway, hpa, spillway, spillway]"),
            vec!["policies[2]", "policies[3]"]
        );
        assert_eq!(
            paths("cluster: {ecs: {count: 4000000000}, virtualNodes: 20000}"),
            vec!["cluster.ecs.count", "cluster.virtualNodes"]
        );
        assert_eq!(
            paths("gateway: {replicas: 2000000000}"),
            vec!["gateway.replicas"]
        );
        let zero = Scenario::load(Path::new("/dev/zero")).unwrap_err();
        assert!(zero[0].message.contains("larger than 4 MiB"), "{zero:?}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s.yaml");
        std::fs::write(
            &file,
            "load: {components: [{kind: Csv, path: /dev/zero}]}\n",
        )
        .unwrap();
        let csv = Scenario::load(&file).unwrap_err();
        assert_eq!(csv[0].path, "load.components[0].path");
        assert!(csv[0].message.contains("larger than 64 MiB"), "{csv:?}");
    }

    #[test]
    fn bad_scenarios_name_the_field() {
        let paths = |text: &str| -> Vec<String> {
            Scenario::parse(text)
                .err()
                .unwrap_or_default()
                .into_iter()
                .map(|e| e.path)
                .collect()
        };
        assert_eq!(paths("durationSeconds: 0"), vec!["durationSeconds"]);
        assert_eq!(paths("gateway: {cpu: lots}"), vec!["gateway.cpu"]);
        assert_eq!(paths("gateway: {cpus: 2}"), vec!["gateway.cpus"]);
        assert_eq!(
            paths("latencies: {eciStartSeconds: -3}"),
            vec!["latencies.eciStartSeconds"]
        );
        assert_eq!(
            paths("policy: {target: {name: gw}, maxReplicas: 0}"),
            vec!["policy.maxReplicas"]
        );
        assert_eq!(
            paths("load: {components: [{kind: Spike, atSeconds: 1}]}"),
            vec!["load.components[0]"]
        );
        assert_eq!(paths("policies: [spillway, magic]"), vec!["policies[1]"]);
        assert!(Scenario::parse("seed: 3\nduration_seconds: 10").is_err());
        assert!(Scenario::parse("seed: 3").is_ok());
    }
}
