//! Runs one scenario under each policy, on identical clusters and identical load.

use serde::{Deserialize, Serialize};

use super::cluster::{RollingUpdate, SimCluster, pool_classifier};
use super::load::{LoadSeries, Surge};
use super::scenario::{ControllerTiming, Lane, PolicyKind, Scenario, ScriptedEvent};
use crate::act::ledger::Ledger;
use crate::act::{self, Plan};
use crate::engine::{self, Decision, EngineState, Observation, cost};
use crate::model::GatewayKey;
use crate::model::LoadSample;
use crate::model::Pool;
use crate::policy::{Behavior, EciLimits, ElasticGatewaySpec, PodGrouping};

/// Per-policy results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub policy: String,
    /// Per surge: seconds from its start until the gateway had the ready capacity for the load
    /// and kept it through the surge (0: never short).
    pub time_to_capacity_s: Vec<SurgeResult>,
    /// Σ over time of the pods missing to serve the load (ceil(load / capacity per pod) − ready).
    pub underprovisioned_pod_seconds: f64,
    /// Seconds during which the gateway was short of capacity (with neighbours, added up over
    /// the gateways: gateway·s).
    pub short_seconds: f64,
    pub peak_replicas: i32,
    pub peak_eci_pods: i32,
    pub final_eci_pods: i32,
    pub final_replicas: i32,
    pub eci_pod_seconds: f64,
    pub cost_total: f64,
    pub cost_ecs: f64,
    pub cost_eci: f64,
    pub currency: String,
    pub weight_changes: u32,
    pub rollouts: u32,
    pub scale_changes: u32,
    /// Scale changes in the opposite direction of the previous one, within 10 minutes of it.
    pub reversals: u32,
    /// Template changes (each rolls every pod) made while the load was above half the ready
    /// capacity.
    pub rollouts_under_load: u32,
    /// Σ over time of min(ECI pods, free ECS slots for a gateway pod): ECI paid for while ECS
    /// had room.
    pub eci_pod_seconds_ecs_free: f64,
    /// Σ over time of gateway pods not bound to any node.
    pub pending_pod_seconds: f64,
    /// Replica changes of make-before-break moves back to ECS (`placement.swapBack`: pods more,
    /// then as many fewer). They are not counted in `scale_changes` and `reversals`: the count
    /// changes for placement, not in answer to the load, and capacity never dips.
    #[serde(default)]
    pub swap_changes: u32,
    /// What the swaps did: their events (`placement.swapBack`).
    #[serde(default)]
    pub swaps: SwapTally,
    pub peak_pending_pods: i32,
    /// The dedicated ECS nodes' price over the run: paid whatever the policy does.
    pub cost_ecs_fixed: f64,
    /// Long-lived connections still open on pods when they went (scale-ins, rollouts,
    /// moves), when the scenario models them (`gateway.connections`).
    #[serde(default)]
    pub connection_resets: f64,
    /// Seconds the ready pods' connections stood at a max/mean of 1.25 or more (with
    /// neighbours, added up over the gateways).
    #[serde(default)]
    pub unbalanced_seconds: f64,
    /// Spells of such seconds, and the longest.
    #[serde(default)]
    pub unbalanced_spells: u32,
    #[serde(default)]
    pub longest_unbalanced_seconds: f64,
    /// Connections a maximum connection age closed (`gateway.connections.maxAgeSeconds`).
    #[serde(default)]
    pub connections_aged_out: f64,
    /// Pods scale-ins chose by their connections (spillway only), as the next decision found
    /// them: removed as chosen, or kept (the ReplicaSet took another).
    #[serde(default)]
    pub victims: engine::placement::VictimCheck,
    /// How the policy counted an ECI pod beside an ECS pod while ECI pods served (spillway
    /// only), against what the drill's ECI pods serve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eci_capacity: Option<CapacityEstimate>,
    /// How long the policy counts each pool's pods to take to start (spillway only), against
    /// the starts the drill made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts: Option<StartEstimate>,
    /// Per planned event of the drill's own gateway (`events`): how the policy met it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<EventResult>,
}

/// How a policy met one planned event: the share of the event's seconds with the ready
/// capacity for the load, and the pod·s it ran before the start above the pods it had
/// [`EVENT_BEFORE_SECONDS`] ahead (what readiness cost).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventResult {
    pub name: String,
    pub served: f64,
    pub short_seconds: f64,
    pub pod_seconds_before: f64,
}

/// The window before an event's start over which its pod·s ahead are counted: longer than any
/// start latency a drill models.
pub const EVENT_BEFORE_SECONDS: f64 = 900.0;

/// An event being tallied.
struct EventTally {
    name: String,
    start: f64,
    end: f64,
    seconds: f64,
    short: f64,
    /// The pods live when the window before the start opened.
    base: Option<i32>,
    before: f64,
}

impl EventTally {
    fn record(&mut self, now: f64, dt: f64, live: i32, short: bool) {
        if now >= self.start - EVENT_BEFORE_SECONDS && now < self.start {
            let base = *self.base.get_or_insert(live);
            self.before += f64::from((live - base).max(0)) * dt;
        } else if now >= self.start && now < self.end {
            self.seconds += dt;
            if short {
                self.short += dt;
            }
        }
    }

    fn result(&self) -> EventResult {
        EventResult {
            name: self.name.clone(),
            served: if self.seconds > 0.0 {
                1.0 - self.short / self.seconds
            } else {
                1.0
            },
            short_seconds: self.short,
            pod_seconds_before: self.before,
        }
    }
}

/// One pool's start latency over a run: what the engine learnt at the end (the p95 of the
/// last starts it saw, `None` while the default stands) and the p95 of every start the drill
/// made in that pool.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PoolStartEstimate {
    pub learnt: Option<f64>,
    pub planned: f64,
    pub truth: Option<f64>,
    pub starts: usize,
}

/// [`PoolStartEstimate`] for each pool.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StartEstimate {
    pub ecs: PoolStartEstimate,
    pub eci: PoolStartEstimate,
}

/// The per-pool capacity estimate over a run: ECS pods are the reference (the policy's
/// target), ECI pods a share of one, counted by the engine at each decision taken while ECI
/// pods were ready.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CapacityEstimate {
    /// What an ECI pod serves as a share of an ECS pod in the drill.
    pub truth: f64,
    /// What the last such decision counted, and from where (`learnt`, `policy`, `default`).
    pub last: f64,
    pub source: String,
    /// Mean of (counted − truth) / truth over those decisions: below 0 ECI pods were counted
    /// weaker than they are (more of them than needed), above 0 stronger (the fleet short).
    pub mean_error: f64,
    /// Mean of |counted − truth| / truth.
    pub mean_abs_error: f64,
    pub decisions: u32,
}

/// An idle gateway pod's own CPU (cores): what the drill's pods spend beside their requests.
pub const IDLE_CPU_CORES: f64 = 0.02;

/// Swap outcomes over a run (`placement.swapBack`): swaps started and how they ended, the pods
/// added past the first (the model planned them to land off ECS), and the swaps the model held
/// back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwapTally {
    pub started: u32,
    pub one_more: u32,
    pub landed_ecs: u32,
    pub missed: u32,
    pub gave_up: u32,
    pub held: u32,
}

impl SwapTally {
    pub fn count(&mut self, e: engine::placement::SwapEvent) {
        use engine::placement::SwapEvent as E;
        let n = match e {
            E::Started => &mut self.started,
            E::OneMore => &mut self.one_more,
            E::LandedEcs => &mut self.landed_ecs,
            E::Missed => &mut self.missed,
            E::GaveUp => &mut self.gave_up,
            E::Held => &mut self.held,
        };
        *n += 1;
    }

    pub fn add(&mut self, o: &SwapTally) {
        self.started += o.started;
        self.one_more += o.one_more;
        self.landed_ecs += o.landed_ecs;
        self.missed += o.missed;
        self.gave_up += o.gave_up;
        self.held += o.held;
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SurgeResult {
    pub surge: String,
    pub seconds: f64,
}

/// One row of the timeline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub t: u64,
    pub load_rps: f64,
    pub capacity_rps: f64,
    pub desired: i32,
    pub ready: i32,
    pub ecs_pods: i32,
    pub eci_pods: i32,
    pub pending_pods: i32,
    pub cost_rate_ecs_per_hour: f64,
    pub cost_rate_eci_per_hour: f64,
    pub cost_cumulative: f64,
}

/// A decision that changed something (spillway and hpa policies).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecisionLog {
    pub t: u64,
    pub summary: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PolicyRun {
    pub summary: Summary,
    pub timeline: Vec<Point>,
    pub decisions: Vec<DecisionLog>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DrillReport {
    pub scenario: String,
    pub seed: u64,
    pub duration_s: u64,
    pub surges: Vec<Surge>,
    pub capacity_per_pod_rps: f64,
    pub runs: Vec<PolicyRun>,
    /// What was done to recorded data to make it whole (gaps bridged, counter resets, series
    /// added up); empty for a scripted load.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data_notes: Vec<String>,
    /// Unix time of t = 0 when the load was recorded (a replay or a score).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_unix: Option<f64>,
    /// Some gateway's load rides long-lived connections (`gateway.connections`): the resets
    /// and spread are figures of the run.
    #[serde(default)]
    pub connections: bool,
}

/// Pods needed to serve `load`: the same rule for a simulated and a scored run.
pub fn pods_needed(load: f64, capacity_per_pod: f64) -> i32 {
    (load / capacity_per_pod).ceil() as i32
}

/// A surge's time to capacity from the last short instant inside it (`None`: never short),
/// measured to the end of that instant's `dt`.
pub fn surge_result(s: &Surge, last_short: Option<u64>, dt: f64) -> SurgeResult {
    SurgeResult {
        surge: s.name.clone(),
        seconds: last_short.map_or(0.0, |l| l as f64 + dt - s.start),
    }
}

/// Receives the drill as it runs (progress bars, the metrics endpoint).
pub trait Observer {
    /// Called after each step of each policy.
    fn step(&mut self, _policy: PolicyKind, _t: u64, _point: &Point) {}
    /// Called with every engine decision of the `spillway` and `hpa` policies, with the gateway
    /// it is for (`gateway`, or a neighbour's name), what the engine saw and how long it took.
    fn decision(
        &mut self,
        _policy: PolicyKind,
        _gateway: &str,
        _obs: &Observation<'_>,
        _decision: &Decision,
        _plan: &Plan,
        _seconds: f64,
    ) {
    }
}

/// Observes nothing.
pub struct Quiet;
impl Observer for Quiet {}

/// The policy the `hpa` baseline runs: the same engine with HPA defaults, no lead time, no
/// placement steering, no ECI cap.
pub fn hpa_baseline(policy: &ElasticGatewaySpec) -> ElasticGatewaySpec {
    let mut p = policy.clone();
    p.behavior = Behavior {
        tolerance: 0.1,
        pod_grouping: PodGrouping::Upstream,
        ..Behavior::default()
    };
    p.behavior.lead_time.seconds = 0;
    // Nor does it hold ECS pods past its window.
    p.behavior.ecs_hold_seconds = Some(0);
    p.eci = EciLimits::default();
    // The HPA has one scale-down window for every pod.
    p.eci.scale_down_window_seconds = Some(i64::from(
        p.behavior
            .scale_down
            .effective(false)
            .stabilization_window_seconds,
    ));
    // It places nothing: the template keeps its weights.
    p.placement.exhausted_weights = p.placement.normal_weights;
    p.placement.strong_weights = p.placement.normal_weights;
    p.placement.rebalance = false;
    p.placement.swap_back = false;
    // Nor does it write spread constraints: the template keeps the scheduler's defaults.
    p.placement.pool_spread = false;
    // Upstream's HPA knows nothing of a slow start.
    p.warmup = None;
    p.dry_run = false;
    p.paused = false;
    p
}

/// The policy a drill's `hpa` runs: the baseline, with the scenario's HorizontalPodAutoscaler
/// settings. tests/hpa_steps.rs checks it against the real HPA, sync by sync.
pub fn hpa_peer(policy: &ElasticGatewaySpec, c: &ControllerTiming) -> ElasticGatewaySpec {
    hpa_as_set(hpa_baseline(policy), c)
}

/// The name of the `cron` policy's scheduled metric.
const CRON_METRIC: &str = "cron";

fn is_cron(m: &crate::policy::MetricSpec) -> bool {
    m.preset.is_none() && m.name.as_deref() == Some(CRON_METRIC)
}

/// The `cron` policy: the `hpa` baseline with one more metric, as KEDA's cron scaler adds to
/// the HPA it makes: its value is the scheduled replicas during a window (0 outside), at a
/// target of 1 per replica, so the HPA's formula, tolerance and rate limits apply to it
/// (kedacore/keda #5263). `on` false: the baseline unchanged.
fn cron_peer(mut p: ElasticGatewaySpec, on: bool) -> ElasticGatewaySpec {
    if on {
        p.metrics.push(crate::policy::MetricSpec {
            name: Some(CRON_METRIC.into()),
            preset: None,
            query: Some("vector(0)".into()),
            target_per_replica: 1.0,
        });
    }
    p
}

/// The `hpa` baseline with its HorizontalPodAutoscaler's scale-down window and per-direction
/// tolerances, where it sets them.
fn hpa_as_set(mut p: ElasticGatewaySpec, c: &ControllerTiming) -> ElasticGatewaySpec {
    if let Some(w) = c.hpa_scale_down_window_seconds {
        p.behavior.scale_down.stabilization_window_seconds = Some(w);
        p.eci.scale_down_window_seconds = Some(i64::from(w));
    }
    p.behavior.scale_up.tolerance = c.hpa_scale_up_tolerance;
    p.behavior.scale_down.tolerance = c.hpa_scale_down_tolerance;
    p
}

/// How a policy under test runs in the drill: the engine (spillway, or the hpa baseline), or
/// one of the reference policies.
enum Policy {
    Engine {
        policy: Box<ElasticGatewaySpec>,
        state: Box<EngineState>,
        every: u64,
        /// Runs at `t ≡ offset (mod every)`.
        offset: u64,
        steer: bool,
        /// The planned events it is told of (spillway, the drill's own gateway).
        planned: Vec<engine::planned::PlannedDemand>,
        /// `cron`: `(start, end, replicas)` of each scheduled floor, read as the last metric.
        cron: Vec<(f64, f64, f64)>,
    },
    Static,
    Oracle {
        lookahead: usize,
        target: f64,
        min: i32,
        max: i32,
    },
    Reactive {
        target: f64,
        min: i32,
        max: i32,
        /// `(time, replicas wanted)` over the scale-down window.
        history: std::collections::VecDeque<(u64, i32)>,
    },
}

/// The reactive bound's scale-down window: the HPA default.
const REACTIVE_DOWN_WINDOW: u64 = 300;

/// Runs every policy of the scenario.
pub fn run(scenario: &Scenario, observer: &mut dyn Observer) -> DrillReport {
    let duration = scenario.duration_seconds as usize;
    let lanes = scenario.lanes();
    let loads: Vec<LoadSeries> = lanes
        .iter()
        .map(|l| {
            LoadSeries::new(
                l.load,
                duration,
                scenario.prometheus.clone(),
                scenario.signals.clone(),
            )
        })
        .collect();
    let runs = scenario
        .policies
        .iter()
        .map(|k| run_policy(scenario, &lanes, &loads, *k, observer))
        .collect();
    DrillReport {
        scenario: scenario.name.clone(),
        seed: scenario.seed,
        duration_s: scenario.duration_seconds,
        surges: lanes
            .iter()
            .flat_map(|l| surges_of(l, lanes.len()))
            .collect(),
        capacity_per_pod_rps: scenario.gateway.capacity_per_pod_rps,
        runs,
        data_notes: Vec::new(),
        connections: lanes.iter().any(|l| l.gateway.connections.is_some()),
        start_unix: scenario.load.components.iter().find_map(|c| match c {
            super::load::Component::Recorded { start_unix, .. } => Some(*start_unix),
            _ => None,
        }),
    }
}

/// A lane's surges, named after its gateway when the drill has several.
fn surges_of(lane: &Lane<'_>, lanes: usize) -> Vec<Surge> {
    let mut surges = lane.load.surges();
    if lanes > 1 {
        for s in &mut surges {
            s.name = format!("{}: {}", lane.name, s.name);
        }
    }
    surges
}

/// One gateway under one policy: its Deployment on the shared nodes, its controller, its tally.
struct Runner<'a> {
    lane: Lane<'a>,
    key: GatewayKey,
    load: &'a LoadSeries,
    cluster: SimCluster,
    policy: Policy,
    tally: Tally,
    decisions: Vec<DecisionLog>,
    requests: crate::model::Resources,
    /// Σ (counted − truth) / truth, Σ |…|, decisions, last counted: see [`CapacityEstimate`].
    counted: (f64, f64, u32, Option<engine::capacity::Relative>),
}

fn run_policy(
    scenario: &Scenario,
    lanes: &[Lane<'_>],
    loads: &[LoadSeries],
    kind: PolicyKind,
    observer: &mut dyn Observer,
) -> PolicyRun {
    // What other work holds on each node: the base every lane's view adds its neighbours' pods to.
    let base = scenario.nodes();
    // Each gateway's first pods are placed where the gateways before it left room.
    let mut runners: Vec<Runner<'_>> = Vec::with_capacity(lanes.len());
    // What each gateway's pods hold on each node, kept as each one moves.
    let mut held: Vec<Vec<crate::model::Resources>> = Vec::with_capacity(lanes.len());
    for (i, (lane, load)) in lanes.iter().zip(loads).enumerate() {
        let mut nodes = base.clone();
        set_requested(&mut nodes, &requested(&base, &held));
        let r = Runner::new(scenario, *lane, load, kind, (i, lanes.len()), nodes);
        held.push(r.cluster.held_per_node());
        runners.push(r);
    }
    // One agent runs every gateway under `spillway`: one ledger of ECS room (issue 26).
    let ledger = Ledger::default();
    let step = scenario.step_seconds.max(1);
    let multi = runners.len() > 1;
    let mut fleet = Fleet::default();
    let mut t = 0u64;
    while t <= scenario.duration_seconds {
        // A gateway's own step changes only what its pods hold: each sees the others' as they
        // left them before it moves, and all see the end of the second before it is recorded.
        for (i, r) in runners.iter_mut().enumerate() {
            if multi {
                set_requested(&mut r.cluster.nodes, &requested(&base, &held));
            }
            r.tick(scenario, t, kind, &ledger, observer);
            if multi {
                held[i] = r.cluster.held_per_node();
            }
        }
        if multi {
            let now = requested(&base, &held);
            for r in &mut runners {
                set_requested(&mut r.cluster.nodes, &now);
            }
        }
        let points: Vec<Option<Point>> = runners
            .iter_mut()
            .map(|r| r.tally.record(t, step, r.load.at(t as usize), &r.cluster))
            .collect();
        fleet.record(step, &runners);
        if let Some(p) = merge_points(points) {
            observer.step(kind, t, &p);
            fleet.timeline.push(p);
        }
        t += step;
    }
    // Invariant: `Scenario::lanes` starts with the drill's own gateway, so there is a first.
    #[allow(clippy::expect_used)]
    let (first, rest) = runners.split_first().expect("a drill has its own gateway");
    let mut summary = fleet.summary(
        first.tally.finish(&first.cluster),
        rest.iter().map(|r| r.tally.finish(&r.cluster)),
    );
    summary.eci_capacity = runners.iter().find_map(Runner::estimate);
    summary.starts = runners.first().and_then(Runner::start_estimate);
    PolicyRun {
        summary,
        timeline: fleet.timeline,
        decisions: runners
            .into_iter()
            .flat_map(|r| {
                let name = multi.then(|| r.lane.name.to_string());
                r.decisions.into_iter().map(move |mut d| {
                    if let Some(n) = &name {
                        d.summary = format!("{n}: {}", d.summary);
                    }
                    d
                })
            })
            .collect(),
    }
}

/// Replicas that serve `want` ECS pods' worth, ECI pods at the `share` of one they truly serve
/// (the oracle and the reactive bound know it): ECS holds the gateway's pods there and what
/// fits in its free slots.
fn truly_needed(c: &SimCluster, tally: &Tally, share: f64, want: i32) -> i32 {
    if share >= 1.0 {
        return want;
    }
    let own = c
        .pods
        .iter()
        .filter(|p| p.gone_at.is_none() && c.pool_of(p.node) == Pool::Ecs)
        .count() as i64;
    let ecs_capacity = i32::try_from(own + tally.free_ecs_slots(c)).unwrap_or(i32::MAX);
    engine::capacity::Mix {
        relative: share,
        ecs_capacity,
    }
    .replicas(want)
}

/// Each ready pod's request rate and CPU when every ready pod serves an equal share of
/// `rate` (an ECI pod spends `1 / eci_share` times the CPU per request, beside an idle Envoy's
/// own), joined as the agent joins the fast path's rates with cAdvisor's CPU.
fn pool_usage(
    pods: &[crate::model::GatewayPod],
    now: f64,
    rate: f64,
    cpu_per_request: f64,
    eci_share: f64,
) -> Option<engine::capacity::PoolUsage> {
    let serving = |pool: Pool| {
        pods.iter()
            .filter(|p| p.ready && !p.terminating && p.pool == pool)
            .count()
    };
    // Nothing to compare (and nothing to build per pod) unless both pools serve.
    let (ecs, eci) = (serving(Pool::Ecs), serving(Pool::Eci));
    if ecs == 0 || eci == 0 {
        return None;
    }
    let serving = pods.iter().filter(|p| p.ready && !p.terminating).count();
    let share = rate / serving as f64;
    let rps: Vec<(String, f64)> = pods.iter().map(|p| (p.name.clone(), share)).collect();
    let cpu: Vec<(String, f64)> = pods
        .iter()
        .map(|p| {
            let cost = match p.pool {
                Pool::Eci => cpu_per_request / eci_share,
                _ => cpu_per_request,
            };
            (p.name.clone(), IDLE_CPU_CORES + share * cost)
        })
        .collect();
    engine::capacity::PoolUsage::of(pods, &rps, &cpu, now)
}

/// Each node's requests as every gateway's view has them: the other work, plus every gateway's
/// pods bound there (draining ones too: they hold their room until gone).
fn requested(
    base: &[crate::model::Node],
    held: &[Vec<crate::model::Resources>],
) -> Vec<crate::model::Resources> {
    base.iter()
        .enumerate()
        .map(|(n, node)| {
            let mut r = node.requested;
            for h in held {
                r.add(&h[n]);
            }
            r
        })
        .collect()
}

fn set_requested(nodes: &mut [crate::model::Node], requested: &[crate::model::Resources]) {
    for (node, r) in nodes.iter_mut().zip(requested) {
        node.requested = *r;
    }
}

impl<'a> Runner<'a> {
    /// `(index, lanes)`: this gateway's place among the drill's; `nodes`: the cluster as the
    /// gateways before it left it.
    fn new(
        scenario: &Scenario,
        lane: Lane<'a>,
        load: &'a LoadSeries,
        kind: PolicyKind,
        (index, lanes): (usize, usize),
        nodes: Vec<crate::model::Node>,
    ) -> Self {
        let policy = lane.policy;
        let requests = lane.gateway.requests();
        let mut template = policy.gateway_template(requests, policy.placement.normal_weights);
        // Only spillway writes its spread constraints or pod affinity (at a quiet time long
        // before a drill's peaks, taken as done at the start); every other policy runs the
        // template as it is.
        if kind != PolicyKind::Spillway {
            template.spread.clear();
            template.pod_affinity.clear();
        }
        let classify = pool_classifier(
            policy.pools.ecs.node_selector.clone(),
            policy.pools.eci.node_selector.clone(),
        );
        let mut cluster = SimCluster::new(
            nodes,
            template,
            lane.gateway.replicas,
            scenario.latencies.clone(),
            scenario.seed.wrapping_add(index as u64),
            classify,
        );
        cluster.rolling = RollingUpdate {
            max_surge: lane.gateway.max_surge,
            max_unavailable: lane.gateway.max_unavailable,
        };
        cluster.connections = lane.gateway.connections;
        cluster.warmup = lane.gateway.warmup;
        cluster.settle();

        let target = policy.metrics.first().map_or(1.0, |m| m.target_per_replica);
        let policy_run = match kind {
            PolicyKind::Spillway => Policy::Engine {
                policy: Box::new(policy.clone()),
                state: Box::default(),
                every: scenario.controllers.spillway_interval_seconds,
                offset: 0,
                steer: true,
                planned: if index == 0 {
                    scenario.events.iter().map(ScriptedEvent::demand).collect()
                } else {
                    Vec::new()
                },
                cron: Vec::new(),
            },
            PolicyKind::Hpa | PolicyKind::Cron => Policy::Engine {
                policy: Box::new(cron_peer(
                    hpa_peer(policy, &scenario.controllers),
                    kind == PolicyKind::Cron,
                )),
                planned: Vec::new(),
                cron: if kind == PolicyKind::Cron && index == 0 {
                    scenario
                        .events
                        .iter()
                        .map(|e| {
                            // Demand is in the request-rate metric's unit, as spillway reads it.
                            let per_pod = policy
                                .metrics
                                .iter()
                                .find(|m| m.preset == Some(crate::policy::Preset::RequestRate))
                                .map_or(target, |m| m.target_per_replica);
                            let pods = pods_needed(e.rps, per_pod).min(policy.max_replicas);
                            (
                                e.start_seconds as f64,
                                e.end_seconds as f64,
                                f64::from(pods),
                            )
                        })
                        .collect()
                } else {
                    Vec::new()
                },
                state: Box::default(),
                every: scenario.controllers.hpa_sync_seconds,
                offset: scenario
                    .controllers
                    .hpa_sync_offset_seconds
                    .unwrap_or(0)
                    .checked_rem(scenario.controllers.hpa_sync_seconds)
                    .unwrap_or(0),
                steer: false,
            },
            PolicyKind::Static => {
                let peak = load.rps.iter().copied().fold(0.0, f64::max);
                cluster.replicas = scenario
                    .static_replicas
                    .filter(|_| index == 0)
                    .unwrap_or((peak / target).ceil() as i32)
                    .clamp(1, policy.max_replicas.max(1));
                Policy::Static
            }
            PolicyKind::Oracle => Policy::Oracle {
                lookahead: (scenario.latencies.eci_start_seconds
                    * (1.0 + scenario.latencies.jitter))
                    .ceil() as usize
                    + 1,
                target,
                min: policy.min_replicas,
                max: policy.max_replicas,
            },
            PolicyKind::Reactive => Policy::Reactive {
                target,
                min: policy.min_replicas,
                max: policy.max_replicas,
                history: std::collections::VecDeque::new(),
            },
        };
        let tally = Tally::new(scenario, &lane, kind, &cluster, index == 0, lanes);
        Self {
            key: GatewayKey::new("istio-system", lane.name),
            lane,
            load,
            cluster,
            policy: policy_run,
            tally,
            decisions: Vec::new(),
            requests,
            counted: (0.0, 0.0, 0, None),
        }
    }

    fn start_estimate(&self) -> Option<StartEstimate> {
        let Policy::Engine {
            policy,
            state,
            steer: true,
            ..
        } = &self.policy
        else {
            return None;
        };
        let pool = |pool: Pool, mem: &engine::starts::PoolStarts, default: f64| {
            let mut truth: Vec<f64> = self
                .cluster
                .starts
                .iter()
                .filter(|(p, _)| *p == pool)
                .map(|(_, s)| *s)
                .collect();
            truth.sort_by(f64::total_cmp);
            let rank = (0.95 * truth.len() as f64).ceil() as usize;
            let learnt = mem.p95();
            PoolStartEstimate {
                learnt,
                planned: learnt.unwrap_or(default),
                truth: (!truth.is_empty()).then(|| truth[rank.clamp(1, truth.len()) - 1]),
                starts: truth.len(),
            }
        };
        Some(StartEstimate {
            ecs: pool(
                Pool::Ecs,
                &state.starts.ecs,
                engine::starts::DEFAULT_ECS_SECONDS,
            ),
            eci: pool(Pool::Eci, &state.starts.eci, policy.eci.start() as f64),
        })
    }

    fn estimate(&self) -> Option<CapacityEstimate> {
        let (sum, abs, n, last) = self.counted;
        let last = last?;
        Some(CapacityEstimate {
            truth: self.lane.gateway.eci_relative_capacity,
            last: last.eci,
            source: last.source.as_str().into(),
            mean_error: sum / f64::from(n),
            mean_abs_error: abs / f64::from(n),
            decisions: n,
        })
    }

    /// One second of this gateway: the cluster moves, then its controller runs if due.
    fn tick(
        &mut self,
        scenario: &Scenario,
        t: u64,
        kind: PolicyKind,
        ledger: &Ledger,
        observer: &mut dyn Observer,
    ) {
        let now = t as f64;
        let fast_every = scenario.controllers.fast_path_seconds;
        let eci_share = self.lane.gateway.eci_relative_capacity;
        let (cluster, load, tally) = (&mut self.cluster, self.load, &mut self.tally);
        cluster.step(now);
        cluster.flow(
            now,
            scenario.step_seconds.max(1) as f64,
            load.at(t as usize),
        );
        match &mut self.policy {
            Policy::Engine {
                policy,
                state,
                every,
                offset,
                steer,
                planned,
                cron,
            } if (t >= *offset && (t - *offset).is_multiple_of(*every))
                || (*steer && fast_every > 0 && t.is_multiple_of(fast_every)) =>
            {
                // The fast path reads a bounded sample of the pods' Envoys (spillway only).
                let sampled = if *steer {
                    crate::fastpath::DEFAULT_SAMPLE_PODS
                } else {
                    0
                };
                let pods = cluster.gateway_pods_read(now, load.at(t as usize), sampled);
                // Weaker ECI pods spend more CPU per request: a CPU metric shows it.
                let ready = |eci: bool| {
                    pods.iter()
                        .filter(|p| p.ready && (p.pool == Pool::Eci) == eci)
                        .count() as f64
                };
                let (ready_ecs, ready_eci) = (ready(false), ready(true));
                let cpu_scale = if ready_ecs + ready_eci > 0.0 {
                    (ready_ecs + ready_eci / eci_share) / (ready_ecs + ready_eci)
                } else {
                    1.0
                };
                let loads: Vec<LoadSample> = policy
                    .metrics
                    .iter()
                    .map(|m| match load.sample(m, t as usize) {
                        // Not a load: the `cron` policy's schedule.
                        _ if is_cron(m) => LoadSample::Total(
                            cron.iter()
                                .filter(|(from, to, _)| now >= *from && now < *to)
                                .map(|(_, _, pods)| *pods)
                                .fold(0.0, f64::max),
                        ),
                        LoadSample::Total(v) if m.preset == Some(crate::policy::Preset::Cpu) => {
                            LoadSample::Total(v * cpu_scale)
                        }
                        other => other,
                    })
                    .collect();
                // The fast path (spillway only): the pods' own request counters, read every
                // `fastPathSeconds`, a bounded sample of them scaled to the fleet. In the drill
                // every ready pod serves an equal share, so the sample's mean times the ready
                // pods is the rate over the last interval.
                let fast = (*steer && fast_every > 0)
                    .then(|| load.rate_between(t.saturating_sub(fast_every) as usize, t as usize))
                    .flatten()
                    .map(|rate| crate::model::FastSample {
                        rps: rate,
                        pods_read: pods
                            .iter()
                            .filter(|p| p.ready)
                            .count()
                            .min(crate::fastpath::DEFAULT_SAMPLE_PODS)
                            as i32,
                    })
                    .filter(|f| f.pods_read > 0);
                // The HPA knows no other gateway: only spillway's agent keeps a ledger.
                let pool = &policy.pools.ecs.node_selector;
                let claimed = if *steer {
                    ledger.elsewhere(&self.key, pool, &cluster.nodes, now)
                } else {
                    0
                };
                let obs = Observation {
                    now,
                    loads: &loads,
                    fast,
                    spec_replicas: cluster.replicas,
                    pod_requests: self.requests,
                    weights: cluster.weights(),
                    rollout_in_progress: cluster.rollout_in_progress(),
                    pods: &pods,
                    nodes: &cluster.nodes,
                    ecs_claimed_elsewhere: claimed,
                    spread_missing: false,
                    planned,
                    pool_usage: fast.and_then(|f| {
                        pool_usage(&pods, now, f.rps, load.cpu_seconds_per_request(), eci_share)
                    }),
                };
                // The HPA only sets replicas.
                let scope = act::Scope {
                    replicas_only: !*steer,
                    ..act::Scope::default()
                };
                let mut planned = act::plan(policy, &obs, state, scope);
                let plan = &planned.plan;
                if plan.replicas.is_some() || plan.weights.is_some() || !plan.evictions.is_empty() {
                    self.decisions.push(DecisionLog {
                        t,
                        summary: planned.decision.summary(),
                    });
                }
                observer.decision(
                    kind,
                    self.lane.name,
                    &obs,
                    &planned.decision,
                    plan,
                    planned.seconds,
                );
                if *steer {
                    let count = plan.replicas.unwrap_or(planned.decision.replicas.current);
                    ledger.claim(&self.key, pool, planned.decision.ecs_claim(count), now);
                    if ready_eci > 0.0 {
                        let counted = planned.decision.relative;
                        let err = (counted.eci - eci_share) / eci_share;
                        let c = &mut self.counted;
                        *c = (c.0 + err, c.1 + err.abs(), c.2 + 1, Some(counted));
                    }
                }
                // The simulated cluster takes every change it is given.
                let applied = planned.plan.clone();
                **state = act::commit(state, &mut planned, policy, &applied);
                let out = planned;
                let swap = out.decision.replicas.why == engine::Why::Rebalance;
                if let Some(e) = out.decision.swap {
                    tally.swaps.count(e);
                }
                if let Some(v) = out.decision.victim_check {
                    tally.victims.as_chosen += v.as_chosen;
                    tally.victims.kept += v.kept;
                }
                apply(cluster, &out.plan, now, load.at(t as usize), swap, tally);
            }
            Policy::Oracle {
                lookahead,
                target,
                min,
                max,
            } => {
                let want = (load.max_ahead(t as usize, *lookahead) / *target).ceil() as i32;
                let want = truly_needed(cluster, tally, eci_share, want).clamp(*min, *max);
                if t.is_multiple_of(5) {
                    let pods = cluster.gateway_pods(now);
                    for (pod, c) in engine::placement::deletion_costs(&pods, &[]) {
                        cluster.set_deletion_cost(&pod, c);
                    }
                }
                if want != cluster.replicas {
                    tally.scale(t, cluster.replicas, want);
                    cluster.replicas = want;
                }
            }
            Policy::Reactive {
                target,
                min,
                max,
                history,
            } => {
                let now_want = (load.at(t as usize) / *target).ceil() as i32;
                let now_want = truly_needed(cluster, tally, eci_share, now_want).clamp(*min, *max);
                history.push_back((t, now_want));
                while history
                    .front()
                    .is_some_and(|(at, _)| *at + REACTIVE_DOWN_WINDOW < t)
                {
                    history.pop_front();
                }
                let want = history.iter().map(|(_, r)| *r).max().unwrap_or(now_want);
                if t.is_multiple_of(5) {
                    let pods = cluster.gateway_pods(now);
                    for (pod, c) in engine::placement::deletion_costs(&pods, &[]) {
                        cluster.set_deletion_cost(&pod, c);
                    }
                }
                if want != cluster.replicas {
                    tally.scale(t, cluster.replicas, want);
                    cluster.replicas = want;
                }
            }
            _ => {}
        }
    }
}

/// What only the whole fleet shows: peaks of the sum, ECI paid while ECS had a slot free for
/// it, the summed timeline. With one gateway it is that gateway's own.
#[derive(Default)]
struct Fleet {
    peak_replicas: i32,
    peak_eci: i32,
    peak_pending: i32,
    eci_while_ecs_free: f64,
    timeline: Vec<Point>,
}

impl Fleet {
    fn record(&mut self, dt: u64, runners: &[Runner<'_>]) {
        let sum = |f: fn(&Tally) -> i32| runners.iter().map(|r| f(&r.tally)).sum::<i32>();
        self.peak_replicas = self.peak_replicas.max(sum(|t| t.now.live));
        self.peak_eci = self.peak_eci.max(sum(|t| t.now.eci));
        self.peak_pending = self.peak_pending.max(sum(|t| t.now.pending));
        // Each gateway's ECI pods beside ECS slots its own pods would fit, the free slots
        // counted once: at most as many as the smallest pod size fits.
        let (mut beside, mut most) = (0i64, 0i64);
        for r in runners.iter().filter(|r| r.tally.now.eci > 0) {
            let free = r.tally.free_ecs_slots(&r.cluster);
            beside += free.min(i64::from(r.tally.now.eci));
            most = most.max(free);
        }
        self.eci_while_ecs_free += beside.min(most) as f64 * dt as f64;
    }

    /// The fleet's summary: counts and costs added up (the dedicated ECS nodes paid once, by the
    /// first gateway's tally), peaks and ECI-while-ECS-free of the fleet, every surge.
    fn summary(&self, mut s: Summary, rest: impl Iterator<Item = Summary>) -> Summary {
        for p in rest {
            s.time_to_capacity_s.extend(p.time_to_capacity_s);
            s.underprovisioned_pod_seconds += p.underprovisioned_pod_seconds;
            s.short_seconds += p.short_seconds;
            s.final_eci_pods += p.final_eci_pods;
            s.final_replicas += p.final_replicas;
            s.eci_pod_seconds += p.eci_pod_seconds;
            s.cost_total += p.cost_total;
            s.cost_ecs += p.cost_ecs;
            s.cost_eci += p.cost_eci;
            s.weight_changes += p.weight_changes;
            s.rollouts += p.rollouts;
            s.scale_changes += p.scale_changes;
            s.reversals += p.reversals;
            s.rollouts_under_load += p.rollouts_under_load;
            s.pending_pod_seconds += p.pending_pod_seconds;
            s.swap_changes += p.swap_changes;
            s.swaps.add(&p.swaps);
            s.cost_ecs_fixed += p.cost_ecs_fixed;
            s.connection_resets += p.connection_resets;
            s.unbalanced_seconds += p.unbalanced_seconds;
            s.unbalanced_spells += p.unbalanced_spells;
            s.longest_unbalanced_seconds = s
                .longest_unbalanced_seconds
                .max(p.longest_unbalanced_seconds);
            s.connections_aged_out += p.connections_aged_out;
            s.victims.as_chosen += p.victims.as_chosen;
            s.victims.kept += p.victims.kept;
        }
        s.peak_replicas = self.peak_replicas;
        s.peak_eci_pods = self.peak_eci;
        s.peak_pending_pods = self.peak_pending;
        s.eci_pod_seconds_ecs_free = self.eci_while_ecs_free;
        s
    }
}

/// The fleet's point: every lane's sampled at the same instant, added up.
fn merge_points(points: Vec<Option<Point>>) -> Option<Point> {
    let mut points = points.into_iter().flatten();
    let mut p = points.next()?;
    for q in points {
        p.load_rps += q.load_rps;
        p.capacity_rps += q.capacity_rps;
        p.desired += q.desired;
        p.ready += q.ready;
        p.ecs_pods += q.ecs_pods;
        p.eci_pods += q.eci_pods;
        p.pending_pods += q.pending_pods;
        p.cost_rate_ecs_per_hour += q.cost_rate_ecs_per_hour;
        p.cost_rate_eci_per_hour += q.cost_rate_eci_per_hour;
        p.cost_cumulative += q.cost_cumulative;
    }
    Some(p)
}

fn apply(
    cluster: &mut SimCluster,
    plan: &Plan,
    now: f64,
    load: f64,
    swap: bool,
    tally: &mut Tally,
) {
    for (pod, cost) in &plan.deletion_costs {
        cluster.set_deletion_cost(pod, *cost);
    }
    if let Some(r) = plan.replicas {
        if swap {
            tally.swap_changes += u32::from(r != cluster.replicas);
        } else {
            tally.scale(now as u64, cluster.replicas, r);
        }
        cluster.replicas = r;
    }
    if let Some(w) = plan.weights {
        let ready = cluster.live().filter(|p| p.ready(now)).count() as f64;
        if cluster.weights() != Some(w) && load > 0.5 * ready * tally.capacity_per_pod {
            tally.rollouts_under_load += 1;
        }
        cluster.set_weights(w);
        tally.weight_changes += 1;
    }
    for pod in &plan.evictions {
        cluster.evict(pod, now);
    }
}

/// Pods of one gateway at an instant.
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    live: i32,
    eci: i32,
    pending: i32,
}

/// Accumulates one gateway's summary and sampled timeline.
struct Tally {
    kind: PolicyKind,
    capacity_per_pod: f64,
    /// What an ECI pod serves as a share of an ECS pod.
    eci_share: f64,
    /// The load balancer's slow start in front of the pods, if the gateway has one.
    warmup: Option<crate::policy::Warmup>,
    /// Per node: (pool, cost of one gateway pod there per second).
    node_cost: Vec<(Pool, f64)>,
    surges: Vec<Surge>,
    last_short: Vec<Option<u64>>,
    sample_every: u64,
    currency: String,
    /// The pods at the last record.
    now: Counts,
    under: f64,
    short_seconds: f64,
    eci_pod_seconds: f64,
    cost_ecs: f64,
    cost_eci: f64,
    weight_changes: u32,
    scale_changes: u32,
    reversals: u32,
    /// `(time, +1 or -1)` of the last scale change.
    last_scale: Option<(u64, i32)>,
    rollouts_under_load: u32,
    pending_pod_seconds: f64,
    swap_changes: u32,
    swaps: SwapTally,
    victims: engine::placement::VictimCheck,
    /// Indices of the ECS-pool nodes.
    ecs_nodes: Vec<usize>,
    /// All ECS-pool nodes' price per second.
    ecs_fixed_per_second: f64,
    requests: crate::model::Resources,
    /// The drill's planned events (its own gateway's tally only).
    events: Vec<EventTally>,
}

/// A scale change opposite to the previous one within this long counts as a reversal.
pub const REVERSAL_WINDOW_SECONDS: u64 = 600;

impl Tally {
    fn scale(&mut self, t: u64, from: i32, to: i32) {
        if from == to {
            return;
        }
        self.scale_changes += 1;
        let dir = if to > from { 1 } else { -1 };
        if let Some((at, last)) = self.last_scale
            && last != dir
            && t.saturating_sub(at) <= REVERSAL_WINDOW_SECONDS
        {
            self.reversals += 1;
        }
        self.last_scale = Some((t, dir));
    }

    /// `pays_ecs`: this tally pays the dedicated ECS nodes (the first gateway's; a fleet pays
    /// them once).
    fn new(
        s: &Scenario,
        lane: &Lane<'_>,
        kind: PolicyKind,
        cluster: &SimCluster,
        pays_ecs: bool,
        lanes: usize,
    ) -> Self {
        let req = cluster.template.requests;
        let cost_model = &lane.policy.cost;
        let node_cost = cluster
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| match cluster.pool_of(Some(i)) {
                Pool::Eci => (Pool::Eci, cost::eci_pod_per_second(&req, cost_model)),
                Pool::Ecs => (
                    Pool::Ecs,
                    cost::ecs_pod_per_hour(&req, n, cost_model) / 3600.0,
                ),
                other => (other, 0.0),
            })
            .collect();
        let surges = surges_of(lane, lanes);
        let ecs_nodes: Vec<usize> = (0..cluster.nodes.len())
            .filter(|i| cluster.pool_of(Some(*i)) == Pool::Ecs)
            .collect();
        let ecs_fixed_per_second = if pays_ecs {
            ecs_nodes
                .iter()
                .map(|i| cost::node_price_per_hour(&cluster.nodes[*i], cost_model) / 3600.0)
                .sum()
        } else {
            0.0
        };
        Self {
            kind,
            capacity_per_pod: lane.gateway.capacity_per_pod_rps,
            eci_share: lane.gateway.eci_relative_capacity,
            warmup: lane.gateway.warmup,
            node_cost,
            last_short: vec![None; surges.len()],
            surges,
            sample_every: (s.duration_seconds / 1500).max(s.step_seconds).max(1),
            currency: cost_model.currency.clone(),
            now: Counts::default(),
            under: 0.0,
            short_seconds: 0.0,
            eci_pod_seconds: 0.0,
            cost_ecs: 0.0,
            cost_eci: 0.0,
            weight_changes: 0,
            scale_changes: 0,
            reversals: 0,
            last_scale: None,
            rollouts_under_load: 0,
            pending_pod_seconds: 0.0,
            swap_changes: 0,
            swaps: SwapTally::default(),
            victims: Default::default(),
            ecs_nodes,
            ecs_fixed_per_second,
            requests: req,
            events: if pays_ecs {
                s.events
                    .iter()
                    .map(|e| EventTally {
                        name: e.name.clone(),
                        start: e.start_seconds as f64,
                        end: e.end_seconds as f64,
                        seconds: 0.0,
                        short: 0.0,
                        base: None,
                        before: 0.0,
                    })
                    .collect()
            } else {
                Vec::new()
            },
        }
    }

    fn record(&mut self, t: u64, dt: u64, load: f64, c: &SimCluster) -> Option<Point> {
        let now = t as f64;
        let dt = dt as f64;
        let (mut ready, mut ecs, mut eci, mut pending, mut live) = (0, 0, 0, 0, 0);
        let mut ready_eci = 0;
        let mut rate_eci = 0.0;
        for p in &c.pods {
            if p.gone_at.is_none() {
                live += 1;
                ready += i32::from(p.ready(now));
            }
            match p.node.map(|n| self.node_cost[n]) {
                // A pod holds (and on ECI bills for) its node until it is gone, draining included.
                Some((Pool::Ecs, _)) => {
                    ecs += i32::from(p.gone_at.is_none());
                }
                Some((Pool::Eci, c)) => {
                    rate_eci += c;
                    eci += i32::from(p.gone_at.is_none());
                    ready_eci += i32::from(p.gone_at.is_none() && p.ready(now));
                    self.eci_pod_seconds += dt;
                }
                Some(_) => {}
                None => pending += i32::from(p.gone_at.is_none()),
            }
        }
        self.now = Counts { live, eci, pending };
        self.pending_pod_seconds += f64::from(pending) * dt;
        // What the ready pods serve, in ECS pods: an ECI pod serves its share of one. The pods
        // missing are whole pods: ceil(load / capacity − what they serve), which with equal
        // pools is ceil(load / capacity) − ready.
        let mut serves = f64::from(ready - ready_eci) + f64::from(ready_eci) * self.eci_share;
        // A slow start: the warm pods fill first ([`engine::warmup::serves`]).
        if let Some(w) = &self.warmup {
            serves = engine::warmup::serves(c.pods.iter().filter(|p| p.ready(now)).map(|p| {
                let share = match p.node.map(|n| self.node_cost[n].0) {
                    Some(Pool::Eci) => self.eci_share,
                    _ => 1.0,
                };
                let age = p.ready_at.map_or(f64::INFINITY, |r| now - r);
                (engine::warmup::weight(w, age), share)
            }));
        }
        let capacity = serves * self.capacity_per_pod;
        let missing = if self.eci_share == 1.0 && self.warmup.is_none() {
            f64::from(pods_needed(load, self.capacity_per_pod) - ready)
        } else {
            (load / self.capacity_per_pod - serves).ceil()
        };
        for e in &mut self.events {
            e.record(now, dt, live, missing > 0.0);
        }
        if missing > 0.0 {
            self.under += missing * dt;
            self.short_seconds += dt;
            for (i, s) in self.surges.iter().enumerate() {
                if now >= s.start && now <= s.end {
                    self.last_short[i] = Some(t);
                }
            }
        }
        // Dedicated ECS nodes are paid for whether the gateway uses them or not.
        self.cost_ecs += self.ecs_fixed_per_second * dt;
        self.cost_eci += rate_eci * dt;
        if !t.is_multiple_of(self.sample_every) {
            return None;
        }
        let point = Point {
            t,
            load_rps: load,
            capacity_rps: capacity,
            desired: c.replicas,
            ready,
            ecs_pods: ecs,
            eci_pods: eci,
            pending_pods: pending,
            cost_rate_ecs_per_hour: self.ecs_fixed_per_second * 3600.0,
            cost_rate_eci_per_hour: rate_eci * 3600.0,
            cost_cumulative: self.cost_ecs + self.cost_eci,
        };
        Some(point)
    }

    /// Gateway pods of this tally's size that fit on the ECS nodes as `c` sees them.
    fn free_ecs_slots(&self, c: &SimCluster) -> i64 {
        self.ecs_nodes
            .iter()
            .map(|i| c.nodes[*i].free().fits_count(&self.requests))
            .sum()
    }

    fn finish(&self, c: &SimCluster) -> Summary {
        let final_eci = c
            .pods
            .iter()
            .filter(|p| {
                p.gone_at.is_none() && p.node.is_some_and(|n| self.node_cost[n].0 == Pool::Eci)
            })
            .count() as i32;
        Summary {
            eci_capacity: None,
            starts: None,
            policy: self.kind.as_str().into(),
            time_to_capacity_s: self
                .surges
                .iter()
                .zip(&self.last_short)
                .map(|(s, last)| surge_result(s, *last, 1.0))
                .collect(),
            underprovisioned_pod_seconds: self.under,
            short_seconds: self.short_seconds,
            // The fleet's peaks and ECI-while-ECS-free are set by [`Fleet::summary`].
            peak_replicas: 0,
            peak_eci_pods: 0,
            final_eci_pods: final_eci,
            final_replicas: c.live().count() as i32,
            eci_pod_seconds: self.eci_pod_seconds,
            cost_total: self.cost_ecs + self.cost_eci,
            cost_ecs: self.cost_ecs,
            cost_eci: self.cost_eci,
            currency: self.currency.clone(),
            weight_changes: self.weight_changes,
            rollouts: c.rollouts,
            scale_changes: self.scale_changes,
            reversals: self.reversals,
            rollouts_under_load: self.rollouts_under_load,
            eci_pod_seconds_ecs_free: 0.0,
            pending_pod_seconds: self.pending_pod_seconds,
            swap_changes: self.swap_changes,
            swaps: self.swaps,
            peak_pending_pods: 0,
            cost_ecs_fixed: self.cost_ecs,
            connection_resets: c.connection_tally.resets,
            unbalanced_seconds: c.connection_tally.unbalanced_seconds,
            unbalanced_spells: c.connection_tally.unbalanced_spells,
            longest_unbalanced_seconds: c.connection_tally.longest_unbalanced,
            connections_aged_out: c.connection_tally.aged_out,
            victims: self.victims,
            events: self.events.iter().map(EventTally::result).collect(),
        }
    }
}
