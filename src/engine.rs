//! The decision engine: observation in, decision out. No I/O, no clock of its own; the live
//! agent and the drill call the very same [`decide`].
//!
//! Stages, in order (each a small pure function below, with its own tests): size the fleet with
//! the HPA algorithm; forecast a significant rise and read the fast path (burst mode); stabilise
//! with the HPA's windows (ECI pods on a shorter one); cap the ECI pods; place (deletion costs,
//! moves); steer the weights (only to strengthen the ECS preference, at quiet times); price
//! (fixed ECS nodes, marginal ECI).

use serde::{Deserialize, Serialize};

use crate::model::{FastSample, GatewayPod, LoadSample, Node, PodTemplate, Pool, Resources};
use crate::policy::{ElasticGatewaySpec, PoolWeights};

pub mod capacity;
pub mod cost;
pub mod forecast;
pub mod hpa;
pub mod placement;
pub mod planned;
pub mod starts;
pub mod warmup;

pub use cost::CostEstimate;
pub use placement::{Survey, WeightPlan};

/// What the agent sees at one instant.
#[derive(Clone, Copy, Debug)]
pub struct Observation<'a> {
    /// Seconds on the caller's clock (wall time live, virtual time in a drill).
    pub now: f64,
    /// One sample per policy metric, in the policy's order; a short slice counts as missing.
    pub loads: &'a [LoadSample],
    /// The fast path's reading of the gateway pods' own request counters, if it has one. It
    /// may only raise the count of the first request-rate metric.
    pub fast: Option<FastSample>,
    /// The workload's `spec.replicas` (or the IstioGateway's `replicaCount`).
    pub spec_replicas: i32,
    /// Requests of one gateway pod (from the pod template).
    pub pod_requests: Resources,
    /// Preferred weights currently in the pod template, if they are recognisable.
    pub weights: Option<PoolWeights>,
    /// A rollout of the workload has not finished yet.
    pub rollout_in_progress: bool,
    /// The gateway's pods.
    pub pods: &'a [GatewayPod],
    /// The nodes that matter: at least every node of either pool.
    pub nodes: &'a [Node],
    /// ECS slots other gateways sharing these nodes have claimed for pods not placed yet (the
    /// agent's ledger; 0 in a drill of one gateway): not free for this one.
    pub ecs_claimed_elsewhere: i32,
    /// `placement.poolSpread` is on and the template lacks some of its constraints: the
    /// weights are to be applied (with them) at the next quiet time. Never in a drill.
    pub spread_missing: bool,
    /// What each pool's ready pods serve and spend in CPU now, when both can be read: the
    /// evidence for how much an ECI pod serves beside an ECS pod ([`capacity`]).
    pub pool_usage: Option<capacity::PoolUsage>,
    /// The planned events of this gateway ([`planned`]): capacity to have ready ahead.
    pub planned: &'a [planned::PlannedDemand],
}

/// What the engine remembers between decisions. Plain data: the caller keeps it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineState {
    pub hpa: hpa::HpaMemory,
    pub series: Vec<forecast::Series>,
    pub weights: placement::WeightMemory,
    pub last_scale_up: Option<f64>,
    pub last_move: Option<f64>,
    /// The previous decision's time.
    #[serde(default)]
    pub last_decision: Option<f64>,
    /// Burst mode holds the count until then.
    #[serde(default)]
    pub burst_until: Option<f64>,
    /// ECI spend of the peak in progress (ECI pods running), and of the last one.
    #[serde(default)]
    pub peak_eci_spend: Option<f64>,
    #[serde(default)]
    pub last_peak_eci_spend: Option<f64>,
    /// `(minute, most live pods in it)` over the last day, for the all-ECS comparison.
    pub peak: Vec<(i64, i32)>,
    /// A make-before-break move back to ECS in progress (`placement.swapBack`).
    #[serde(default)]
    pub swap: Option<placement::Swap>,
    /// Swaps in a row whose added pod landed on ECI too: each doubles the wait before the next.
    #[serde(default)]
    pub swap_misses: u32,
    /// The last release of ECI pods on the shorter ECI window, until it is judged.
    #[serde(default)]
    pub eci_release: Option<Release>,
    /// The ECI window learnt from flaps (unset: `eci.scaleDownWindow`); see [`eci_window`].
    #[serde(default)]
    pub eci_window: Option<f64>,
    /// Since when the count has stood above the ECI cap's ceiling.
    #[serde(default)]
    pub over_cap_since: Option<f64>,
    /// The pool spread constraints as spillway wrote them (`placement.poolSpread`).
    #[serde(default)]
    pub spread: SpreadMemory,
    /// The last release of pods ECS held, until it is judged.
    #[serde(default)]
    pub ecs_release: Option<Release>,
    /// The ECS hold learnt from flaps (unset: `behavior.ecsHoldSeconds`); see [`ecs_hold`].
    #[serde(default)]
    pub ecs_hold: Option<f64>,
    /// The replicas the load asked for over the ECS hold, as a sliding
    /// maximum: `(time, replicas)`, times rising, replicas falling.
    #[serde(default)]
    pub demand: Vec<(f64, i32)>,
    /// The floors planned events have raised, kept until each ends ([`planned::hold`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub planned: Vec<planned::Raised>,
    /// What each pool's pods spend per request, learnt ([`capacity`]).
    #[serde(default)]
    pub capacity: capacity::CapacityMemory,
    /// The pods scale-ins chose to remove that carry the victim's deletion cost, until the
    /// ReplicaSet has had its turn ([`settle_victims`]).
    #[serde(default)]
    pub victims: Vec<String>,
    /// The replica count the last scale-in that chose pods asked for, and when.
    #[serde(default)]
    pub victims_target: i32,
    #[serde(default)]
    pub victims_at: f64,
    /// `(time, connections)` each scale-in of the last minute cut, for the reset budget.
    #[serde(default)]
    pub resets: Vec<(f64, f64)>,
    /// How long each pool takes to start a pod ([`starts`]).
    #[serde(default)]
    pub starts: starts::StartMemory,
}

impl EngineState {
    /// Notes what the load asks for now and forgets what is older than `hold`.
    fn note_demand(&mut self, now: f64, replicas: i32, hold: f64) {
        while self.demand.last().is_some_and(|(_, r)| *r <= replicas) {
            self.demand.pop();
        }
        self.demand.push((now, replicas));
        self.demand.retain(|(t, _)| *t > now - hold);
    }

    /// The most the load asked for within the hold.
    fn demand_peak(&self) -> Option<i32> {
        self.demand.first().map(|(_, r)| *r)
    }
}

/// When spillway wrote the pool spread constraints, and whether the template showed them
/// since: a template that loses them afterwards was rewritten by another writer, and writing
/// them again would roll the gateway at every quiet time in a fight with it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SpreadMemory {
    pub written_at: Option<f64>,
    pub seen: bool,
}

/// A write not seen in the template after this long is taken as undone (the watch shows a
/// template change within seconds).
pub const SPREAD_SETTLE_SECONDS: f64 = 120.0;

/// A release of ECI pods on the ECI window, or of ECS pods after the ECS hold, waiting to be
/// judged.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Release {
    pub at: f64,
    /// The window (or hold) it was released after.
    pub window: f64,
    /// A scale-up until then (the standard window after the release) is a flap.
    pub flap_until: f64,
}

/// Which way the replica count goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    ScaleUp,
    ScaleDown,
    Hold,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::ScaleUp => "scale_up",
            Direction::ScaleDown => "scale_down",
            Direction::Hold => "hold",
        }
    }
}

/// Why, in a word fit for a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Why {
    /// The load asks for it (HPA formula).
    Load,
    /// The forecast load after the lead time asks for more than the current load.
    LeadTime,
    /// Within tolerance, or already at the recommendation.
    Steady,
    /// A stabilization window holds the count.
    Stabilized,
    /// A rate policy limits the step.
    RateLimited,
    /// Pinned at minReplicas or maxReplicas.
    Bounds,
    /// The ECI cap (pods or cost) lowers the count.
    EciCap,
    /// Burst mode: the pods' own counters show far more load than the ready pods serve.
    Burst,
    /// A planned event's capacity, raised a start latency ahead ([`planned`]).
    Planned,
    /// The load fell: the pods above what ECS holds (on ECI) go after the shorter ECI window.
    EciScaleDown,
    /// The load fell, but the pods ECS holds stay for `behavior.ecsHoldSeconds` (or longer, as
    /// learnt from flaps): ECS is paid for either way.
    EcsHold,
    /// A make-before-break move of an ECI pod back to ECS: one pod more, then one fewer.
    Rebalance,
    /// Some or all load data is missing: no scale-down.
    MissingData,
    /// `spec.paused`.
    Paused,
    /// The workload has 0 replicas: someone turned it off.
    ScaledToZero,
    /// The scale-in would reset more connections than `behavior.resetBudgetPercent` allows
    /// this minute: all of it is held back for now (a part held is `ReplicaPlan::held`).
    ResetBudget,
}

impl Why {
    /// Every reason, for metrics that export (and forget) one series per reason.
    pub const ALL: [Why; 16] = [
        Why::Load,
        Why::LeadTime,
        Why::Steady,
        Why::Stabilized,
        Why::RateLimited,
        Why::Bounds,
        Why::EciCap,
        Why::Burst,
        Why::Planned,
        Why::EciScaleDown,
        Why::EcsHold,
        Why::Rebalance,
        Why::MissingData,
        Why::Paused,
        Why::ScaledToZero,
        Why::ResetBudget,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Why::Load => "load",
            Why::LeadTime => "lead_time",
            Why::Steady => "steady",
            Why::Stabilized => "stabilized",
            Why::RateLimited => "rate_limited",
            Why::Bounds => "bounds",
            Why::EciCap => "eci_cap",
            Why::Burst => "burst",
            Why::Planned => "planned",
            Why::EciScaleDown => "eci_scale_down",
            Why::EcsHold => "ecs_hold",
            Why::Rebalance => "rebalance",
            Why::MissingData => "missing_data",
            Why::Paused => "paused",
            Why::ScaledToZero => "scaled_to_zero",
            Why::ResetBudget => "reset_budget",
        }
    }
}

/// The gateway's phase, as the status shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Everything on ECS.
    Normal,
    /// The load needs more than ECS holds: the overflow runs on ECI.
    Overflow,
    /// ECI pods remain though ECS could hold the fleet: they go first on scale-in.
    Draining,
    /// Load data is missing: holding the count.
    Holding,
    /// `spec.paused`.
    Paused,
}

impl Phase {
    pub const ALL: [Phase; 5] = [
        Phase::Normal,
        Phase::Overflow,
        Phase::Draining,
        Phase::Holding,
        Phase::Paused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Normal => "Normal",
            Phase::Overflow => "Overflow",
            Phase::Draining => "Draining",
            Phase::Holding => "Holding",
            Phase::Paused => "Paused",
        }
    }
}

/// One metric as read, for reasons, status and metrics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    pub metric: String,
    pub value: Option<f64>,
    pub target_per_replica: f64,
    /// Replicas this metric asks for (HPA formula), if it has a value.
    pub proposal: Option<i32>,
    /// Forecast value after the lead time, if rising.
    pub forecast: Option<f64>,
    /// Why there is no value.
    pub missing: Option<String>,
}

/// The replica part of a decision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReplicaPlan {
    pub current: i32,
    pub desired: i32,
    pub direction: Direction,
    pub why: Why,
    /// The HPA answer for the current load (max over metrics), before limits.
    pub hpa: Option<i32>,
    /// The answer for the forecast load, when it is higher.
    pub lead: Option<i32>,
    /// Most gateway pods allowed on ECI now (pods cap and cost cap), if capped.
    pub eci_cap: Option<i32>,
    /// Replicas expected to land on ECI.
    pub expected_eci: i32,
    /// Pods this scale-in leaves standing for the reset budget (`behavior.resetBudgetPercent`).
    #[serde(default)]
    pub held: i32,
    pub reason: String,
}

/// Everything the engine decided at one instant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub at: f64,
    pub phase: Phase,
    pub replicas: ReplicaPlan,
    pub survey: Survey,
    pub weights: WeightPlan,
    /// `(pod, cost)` for each pod whose deletion-cost annotation must change.
    pub deletion_costs: Vec<(String, i32)>,
    /// ECI pods to evict so that they come back on ECS (at most one per decision).
    pub moves: Vec<String>,
    pub move_reason: String,
    pub cost: CostEstimate,
    pub readings: Vec<Reading>,
    /// Apply the weights now, changed or not, to write the missing pool spread constraints
    /// with them (`placement.poolSpread`): at a quiet time, as a weight change.
    #[serde(default)]
    pub adopt_spread: bool,
    /// What `placement.swapBack` did, if anything.
    #[serde(default)]
    pub swap: Option<placement::SwapEvent>,
    /// The pool spread constraints spillway wrote are gone from the template: another writer
    /// replaced it. They are not written again (see [`SpreadMemory`]).
    #[serde(default)]
    pub spread_removed: bool,
    /// The pool spread constraints spillway wrote, not yet seen in the template (the watch
    /// lags the write): a weights write meanwhile must carry them, or it would take them out.
    #[serde(default)]
    pub spread_unseen: bool,
    /// Nodes that carry both pools' labels: counted as virtual nodes, but the ECS label lets
    /// them into the pool spread's domains, where an empty one draws gateway pods.
    #[serde(default)]
    pub pools_overlap: Vec<String>,
    /// What an ECI pod serves beside an ECS pod, as this decision counted it.
    #[serde(default)]
    pub relative: capacity::Relative,
    /// The ready pods this scale-in removes, chosen by what each would cut
    /// ([`placement::victims`]); empty when no pod's Envoy said, or no scale-in.
    #[serde(default)]
    pub victims: Vec<String>,
    /// What removing them cuts, by their Envoys.
    #[serde(default)]
    pub cut: Option<crate::model::Drain>,
    /// How the previous scale-in's choice was honoured.
    #[serde(default)]
    pub victim_check: Option<placement::VictimCheck>,
    /// What the ready pods serve, in warm ECS pods: ECI pods at their share, pods on a slow
    /// start's ramp (`spec.warmup`) at its weight.
    #[serde(default)]
    pub ready_serves: f64,
    /// Decided in a dry run: nothing of it is applied (the victims are what would go).
    #[serde(default)]
    pub dry_run: bool,
    /// How long each pool takes to start a pod, and the starts this decision counted.
    #[serde(default)]
    pub starts: starts::Starts,
    /// Every planned event's plan (known, not over), in the observation's order: each event's
    /// status; the one the count was held for is [`planned::pick`]'s.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plans: Vec<planned::Plan>,
}

impl Decision {
    /// The ECS slots this decision counts on that no pod of the gateway occupies yet (pods
    /// pending, or still to be made): what the agent's ledger keeps from the other gateways on
    /// these nodes until they are placed. `count` is the replica count that stands (the
    /// decision's, or the current one when the change was not made). Pods already bound
    /// elsewhere (the scheduler sent them to ECI) claim nothing: only unplaced pods can still
    /// take an ECS slot.
    pub fn ecs_claim(&self, count: i32) -> i32 {
        let s = &self.survey;
        let on_ecs = count.min(s.ecs_capacity) - s.ecs_pods;
        let unplaced = count - (s.ecs_pods + s.eci_pods + s.other_pods);
        on_ecs.min(unplaced).max(0)
    }
}

impl Decision {
    /// One line for logs and Events.
    pub fn summary(&self) -> String {
        format!(
            "{} {}→{} ({}): {} | ECS {}/{} cap, ECI {} | {}",
            self.replicas.direction.as_str(),
            self.replicas.current,
            self.replicas.desired,
            self.replicas.why.as_str(),
            self.replicas.reason,
            self.survey.ecs_pods,
            self.survey.ecs_capacity,
            self.survey.eci_pods,
            self.weights.reason
        ) + &self.rebalance_note()
            + &self.victims_note()
    }

    /// Which pods a scale-in removes and what they cut, when chosen by their Envoys.
    fn victims_note(&self) -> String {
        let Some(cut) = self.cut else {
            return String::new();
        };
        const SHOWN: usize = 3;
        let more = self.victims.len().saturating_sub(SHOWN);
        format!(
            " | {} {}{} ({:.0} connections, {:.0} requests in flight)",
            if self.dry_run {
                "would remove"
            } else {
                "removing"
            },
            self.victims[..self.victims.len().min(SHOWN)].join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            },
            cut.connections,
            cut.requests
        )
    }

    /// Why an ECI pod was or was not moved back, when rebalancing is on.
    fn rebalance_note(&self) -> String {
        if self.move_reason == REBALANCE_OFF {
            String::new()
        } else {
            format!(" | rebalance: {}", self.move_reason)
        }
    }
}

/// Decision plus the state to pass to the next call.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub decision: Decision,
    pub state: EngineState,
}

/// The move reason when `placement.rebalance` is off.
const REBALANCE_OFF: &str = "rebalance is off";
/// The reset budget counts the scale-ins of this long.
pub const RESET_WINDOW_SECONDS: f64 = 60.0;
/// The longest a scale-in's victims keep their cost while the ReplicaSet has not removed them.
pub const VICTIM_SETTLE_SECONDS: f64 = 30.0;
const PEAK_WINDOW_MINUTES: i64 = 24 * 60;
/// Burst mode starts when the fast path's rate exceeds this many times the ready capacity
/// (Knative's panic threshold is 200 %).
pub const BURST_THRESHOLD: f64 = 2.0;
/// Burst mode holds the count (no scale-down) this long after it last triggered (Knative's
/// panic window is 60 s of stable window after the last panic reading).
pub const BURST_HOLD_SECONDS: f64 = 60.0;
/// A rise is real when its fitted slope is this many standard errors above zero.
pub const TREND_SIGNIFICANCE: f64 = 3.0;
/// A release of ECI pods that stands this long halves the learnt ECI window (issue 12 counts
/// reversals within 10 minutes).
pub const FLAP_WINDOW_SECONDS: f64 = 600.0;
/// Weights change only when the load is below this fraction of the ready capacity…
pub const QUIET_LOAD_FRACTION: f64 = 0.5;
/// …and nothing scaled up for this long.
pub const QUIET_AFTER_SCALE_UP_SECONDS: f64 = 600.0;

/// What every stage reads: the fleet as it stands and the policy's rules.
struct Context {
    now: f64,
    current: i32,
    status_replicas: i32,
    weights_now: PoolWeights,
    /// The gateway's pod as the scheduler will see the next one: the weights as they stand,
    /// the pool spread constraints once they are in the template.
    template: PodTemplate,
    survey: Survey,
    up: crate::policy::EffectiveRules,
    down: crate::policy::EffectiveRules,
    relative: capacity::Relative,
    /// The fleet as the pools hold it: ECS the first pods, ECI the rest at their share.
    mix: capacity::Mix,
    /// The scale-up tolerance.
    tolerance_up: f64,
    /// What the ready pods serve, in ECS pods (their slow-start ramps counted).
    ready_serves: f64,
}

impl Context {
    fn new(
        policy: &ElasticGatewaySpec,
        obs: &Observation<'_>,
        learnt: &capacity::CapacityMemory,
    ) -> Self {
        let weights_now = obs.weights.unwrap_or(policy.placement.normal_weights);
        let mut template = policy.gateway_template(obs.pod_requests, weights_now);
        if obs.spread_missing {
            template.spread.clear();
            template.pod_affinity.clear();
        }
        let survey = placement::survey(policy, &template, obs.pods, obs.nodes)
            .less_claimed(obs.ecs_claimed_elsewhere);
        let relative = capacity::relative(policy.eci.relative_capacity, learnt);
        let ready_serves =
            warmup::ready_serves(obs.pods, policy.warmup.as_ref(), relative.eci, obs.now);
        Self {
            now: obs.now,
            current: obs.spec_replicas,
            status_replicas: obs.pods.iter().filter(|p| !p.terminating).count() as i32,
            weights_now,
            mix: capacity::Mix {
                relative: relative.eci,
                ecs_capacity: survey.ecs_capacity,
            },
            relative,
            ready_serves,
            tolerance_up: policy.behavior.tolerances().up,
            survey,
            template,
            up: policy.behavior.scale_up.effective(true),
            down: policy.behavior.scale_down.effective(false),
        }
    }
}

/// The engine. `policy` must have passed [`crate::policy::validate`].
///
/// Stages, each a small pure function: [`size`] (the HPA formula per metric) → [`forecast`]
/// (lead time for a significant rise) and [`fast_path`] (burst mode) → [`stabilise`] (the HPA's
/// windows and rate limits, a shorter window for the ECI pods) → [`cap`] (ECI pods only) →
/// [`place`] (deletion costs, moves) → [`steer_weights`] (misplacement, quiet times) →
/// [`price`] (fixed ECS, marginal ECI).
pub fn decide(policy: &ElasticGatewaySpec, obs: &Observation<'_>, prev: &EngineState) -> Outcome {
    let mut state = prev.clone();
    if let Some(target) = request_target(policy) {
        state.capacity.learn(obs.pool_usage, target, obs.now);
    }
    let eci_stated = policy.eci.start() as f64;
    let starts = starts::learn(&mut state.starts, obs.pods, obs.now, eci_stated);
    let ctx = Context::new(policy, obs, &state.capacity);
    let readings = size(policy, obs, &ctx, &mut state.series);
    let fast = fast_path(policy, obs.fast, &ctx, &mut state);
    let lead = forecast(policy, &readings, fast, &ctx);
    let mut plan = stabilise(policy, &ctx, &readings, lead, fast, &mut state);
    let plans = hold_planned(policy, obs, &ctx, &starts, &mut plan, &mut state);
    cap(policy, obs, &ctx, &mut plan, &mut state);
    // One reading of the quiet-time rule serves the weights and the spread adoption.
    let quiet = quiet(obs, &ctx, &plan, &state, policy);
    let mut weights = steer_weights(policy, obs, &ctx, &plan, quiet, &mut state);
    let (adopt_spread, spread_removed) = spread(policy, obs, quiet, &mut state);
    let spread_unseen = !adopt_spread
        && !spread_removed
        && state.spread.written_at.is_some()
        && !state.spread.seen
        && obs.spread_missing;
    if adopt_spread && !weights.changed() {
        weights.reason =
            "writing the pool spread constraints with the weights (once, at a quiet time)".into();
    }
    let swap = swap_back(
        policy,
        obs,
        &ctx,
        &weights,
        (&mut plan, need(policy, &ctx, &readings)),
        &mut state,
    );
    // Before the scale is recorded: the reset budget may hold part of it back.
    let (victim_check, carried) = settle_victims(obs, &plan, &mut state);
    let victims = choose_victims(policy, obs, &ctx, &mut plan, &weights, &mut state, &carried);
    let cut = (!victims.is_empty()).then(|| placement::cut(obs.pods, &victims));
    // A dry run's victims are shown, not carried: nothing lowers the count for them.
    let kept = if policy.dry_run {
        &[][..]
    } else {
        &victims[..]
    };
    if !kept.is_empty() {
        state.victims_target = plan.desired;
        state.victims_at = ctx.now;
    }
    state.victims = carried.into_iter().chain(kept.iter().cloned()).collect();
    if plan.desired != ctx.current && !policy.dry_run {
        state.hpa.record_scale(
            ctx.now,
            ctx.current,
            plan.desired,
            hpa::longest_period(&ctx.up, &ctx.down),
        );
        // A swap's added pod is a move, not a scale-up: it starts no quiet period.
        if plan.desired > ctx.current && plan.why != Why::Rebalance {
            state.last_scale_up = Some(ctx.now);
        }
    }
    judge_eci_release(policy, &ctx, &plan, &mut state);
    judge_ecs_release(policy, &ctx, &plan, &mut state);
    let marked = state.victims.clone();
    let (deletion_costs, moves, move_reason) =
        place(policy, obs, &ctx, &plan, &weights, &marked, &mut state);
    let cost = price(policy, obs, &mut state);
    state.last_decision = Some(ctx.now);
    let phase = phase(policy, &ctx.survey, &plan);
    let decision = Decision {
        at: ctx.now,
        phase,
        replicas: plan,
        survey: ctx.survey,
        weights,
        deletion_costs,
        moves,
        move_reason,
        cost,
        readings,
        adopt_spread,
        swap,
        spread_removed,
        spread_unseen,
        pools_overlap: policy.pools_overlap(obs.nodes),
        relative: ctx.relative,
        victims,
        cut,
        victim_check,
        ready_serves: ctx.ready_serves,
        dry_run: policy.dry_run,
        starts,
        plans,
    };
    Outcome { decision, state }
}

/// Stage 3b: a planned event's capacity ([`planned`]). The floor it asks for now raises the
/// count at once (no rate limit: it was planned), and goes into the HPA's recommendations, so
/// that after the window the count leaves by the normal scale-down. Leads are each pool's start
/// latency plus the gap since the previous decision (the next may come that late). A paused
/// gateway, or one scaled to zero, is left alone.
fn hold_planned(
    policy: &ElasticGatewaySpec,
    obs: &Observation<'_>,
    ctx: &Context,
    starts: &starts::Starts,
    plan: &mut ReplicaPlan,
    state: &mut EngineState,
) -> Vec<planned::Plan> {
    if obs.planned.is_empty() {
        // Every event gone (cancelled): no floor of theirs may come back with a new one.
        state.planned.clear();
        return vec![];
    }
    // Without a request-rate metric, only events stated in another metric's unit plan.
    let target = request_target(policy).unwrap_or(0.0);
    let gap = state
        .last_decision
        .map_or(0.0, |t| (ctx.now - t).clamp(0.0, MAX_DECISION_GAP));
    let leads = planned::Leads {
        ecs: starts.ecs,
        eci: starts.eci,
        gap,
    };
    let limits = planned::Limits {
        max_replicas: policy.max_replicas,
        eci_cap: eci_cap(policy, obs.pod_requests),
    };
    let all = planned::plans(
        obs.planned,
        ctx.now,
        target,
        &ctx.mix,
        leads,
        limits,
        ctx.current,
    );
    let all = planned::hold(&mut state.planned, obs.planned, all);
    let Some(p) = planned::pick(&all) else {
        return all;
    };
    if matches!(plan.why, Why::Paused | Why::ScaledToZero) || p.floor <= plan.desired {
        return all;
    }
    state.hpa.floor(ctx.now, p.floor, &ctx.up, &ctx.down);
    plan.desired = p.floor;
    plan.direction = direction(plan.current, plan.desired);
    plan.why = Why::Planned;
    plan.reason = format!(
        "planned event {}: {} replicas ready ahead ({} on ECS, {} on ECI){}; the load alone: {}",
        p.event,
        p.floor,
        p.ecs.min(p.floor),
        (p.floor - p.ecs).max(0),
        match &p.at_risk {
            Some(r) => format!(", at risk: {r}"),
            None => String::new(),
        },
        plan.reason,
    );
    all
}

/// The longest gap between decisions a planned event's lead allows for.
const MAX_DECISION_GAP: f64 = 60.0;

/// Stage 1: one reading per metric with the HPA's proposal; each metric's trend series is fed.
fn size(
    policy: &ElasticGatewaySpec,
    obs: &Observation<'_>,
    ctx: &Context,
    series: &mut Vec<forecast::Series>,
) -> Vec<Reading> {
    let lead = &policy.behavior.lead_time;
    let tolerance = policy.behavior.tolerances();
    series.resize_with(policy.metrics.len(), Default::default);
    policy
        .metrics
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let missing_sample = LoadSample::Missing("no sample for this metric".into());
            let sample = obs.loads.get(i).unwrap_or(&missing_sample);
            let target = m.target_per_replica;
            let (value, proposal, missing) = match sample {
                LoadSample::Missing(why) => (None, None, Some(why.clone())),
                LoadSample::Total(v) if !v.is_finite() || *v < 0.0 => {
                    (None, None, Some(format!("invalid value {v}")))
                }
                LoadSample::Total(v) => (
                    Some(*v),
                    Some(replicas_for_total(ctx, m, *v, tolerance)),
                    None,
                ),
                LoadSample::PerPod(samples) => {
                    match hpa::replicas_for_per_pod(
                        ctx.current,
                        samples,
                        obs.pods,
                        target,
                        tolerance,
                        policy.behavior.pod_grouping,
                    ) {
                        Ok(r) if pooled(m) && ctx.mix.relative < 1.0 => (
                            sample.total(),
                            Some(per_pod_pooled(ctx, m, sample, r)),
                            None,
                        ),
                        Ok(r) => (sample.total(), Some(r), None),
                        Err(e) => (None, None, Some(e)),
                    }
                }
            };
            let s = &mut series[i];
            match value {
                None => s.gap(ctx.now, lead.window_seconds as f64),
                // Readings closer than a sixth of the window mostly re-read the same scrapes: they
                // would make noise look like a significant trend.
                Some(_)
                    if s.points
                        .last()
                        .is_some_and(|(t, _)| ctx.now - t < lead.window_seconds as f64 / 6.0) => {}
                Some(v) => s.push(ctx.now, v, lead.window_seconds as f64),
            }
            // A forecast within twice the tolerance of the reading is not worth a pod ahead of
            // time: the HPA answer follows a rise that small within one tick.
            let forecast = value.and_then(|v| {
                (lead.seconds > 0)
                    .then(|| {
                        s.forecast(
                            lead.seconds as f64,
                            lead.window_seconds as f64,
                            lead.max_growth,
                            TREND_SIGNIFICANCE,
                        )
                    })
                    .flatten()
                    .filter(|f| *f > v * (1.0 + 2.0 * tolerance.up))
            });
            Reading {
                metric: m.display_name(),
                value,
                target_per_replica: target,
                proposal,
                forecast,
                missing,
            }
        })
        .collect()
}

/// Stage 2: replicas for the load expected after the lead time, when it is above both the HPA
/// answer and the current count (the forecast only exists for a significant rise). With a fast
/// path reading, the forecast is capped by the level it observes: Prometheus's smoothed rate
/// lags the pods' counters by about the lead time, so projecting it further than they already
/// show would overshoot (the fast path itself follows a rise every second or two).
fn forecast(
    policy: &ElasticGatewaySpec,
    readings: &[Reading],
    fast: Option<FastAnswer>,
    ctx: &Context,
) -> Option<i32> {
    let hpa_answer = readings.iter().filter_map(|r| r.proposal).max();
    let observed = fast.map(|f| f.proposal);
    policy
        .metrics
        .iter()
        .zip(readings)
        .filter_map(|(m, r)| {
            // The HPA's tolerance applies to the forecast too: noise on a steady load at exactly
            // the target must not add a pod.
            r.forecast
                .map(|f| replicas_for_total(ctx, m, f, policy.behavior.tolerances()))
        })
        .max()
        .map(|l| observed.map_or(l, |o| l.min(o)))
        .filter(|l| hpa_answer.is_some_and(|h| *l > h) && *l > ctx.current)
}

/// What the fast path read.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FastAnswer {
    /// Replicas for the fast rate at the target.
    pub proposal: i32,
    /// The rate exceeds [`BURST_THRESHOLD`] times the ready capacity: size at once.
    pub burst: bool,
    /// The rate exceeds what the current count serves by [`FAST_RAISE_TOLERANCES`] times the
    /// tolerance: the proposal joins the recommendation (within the usual rate limits).
    pub raise: bool,
}

/// The fast path raises the recommendation outside burst mode only when its rate exceeds the
/// current count's capacity by this many tolerances (30 % by default): well outside the noise
/// of a steady load, well inside a surge.
pub const FAST_RAISE_TOLERANCES: f64 = 3.0;

/// Stage 2b: the fast path. A reading counts only when it is a usable number, and only to
/// raise: in burst mode (the rate far above what the ready pods serve, as Knative's panic mode)
/// it sizes the fleet at once; well above the current count's capacity it joins the
/// recommendation; otherwise it only stops a scale-down below what the pods serve right now,
/// and Prometheus's smoothed rate stays in charge, so per-second noise cannot add pods. Bad
/// readings are ignored, never a reason to scale down.
fn fast_path(
    policy: &ElasticGatewaySpec,
    fast: Option<FastSample>,
    ctx: &Context,
    state: &mut EngineState,
) -> Option<FastAnswer> {
    let target = policy
        .metrics
        .iter()
        .find(|m| m.preset == Some(crate::policy::Preset::RequestRate))
        .map(|m| m.target_per_replica)?;
    let f = fast.filter(|f| f.rps.is_finite() && f.rps >= 0.0 && f.pods_read > 0)?;
    let ready_capacity = ctx.ready_serves.max(1.0) * target;
    let burst = f.rps > BURST_THRESHOLD * ready_capacity;
    if burst {
        state.burst_until = Some(ctx.now + BURST_HOLD_SECONDS);
    }
    let proposal = ctx.mix.replicas(pods_for(f.rps, target));
    let raise = burst
        || f.rps
            > ctx.mix.serves(ctx.current)
                * target
                * (1.0 + FAST_RAISE_TOLERANCES * policy.behavior.tolerances().up);
    Some(FastAnswer {
        proposal,
        burst,
        raise,
    })
}

/// Stage 3: the HPA's stabilization and rate limits around the recommendation, with two
/// exceptions: burst mode sizes at once (no rate limit) and holds the count for
/// [`BURST_HOLD_SECONDS`]; replicas above what ECS holds go after `eci.scaleDownWindow`
/// rather than the standard window.
fn stabilise(
    policy: &ElasticGatewaySpec,
    ctx: &Context,
    readings: &[Reading],
    lead: Option<i32>,
    fast: Option<FastAnswer>,
    state: &mut EngineState,
) -> ReplicaPlan {
    let now = ctx.now;
    let current = ctx.current;
    let hpa_answer = readings.iter().filter_map(|r| r.proposal).max();
    let missing: Vec<String> = readings
        .iter()
        .filter_map(|r| r.missing.as_ref().map(|why| format!("{}: {why}", r.metric)))
        .collect();
    let plan = |desired: i32, why: Why, reason: String| ReplicaPlan {
        current,
        desired,
        direction: direction(current, desired),
        why,
        hpa: hpa_answer,
        lead,
        eci_cap: None,
        expected_eci: 0,
        held: 0,
        reason,
    };
    if policy.paused {
        return plan(current, Why::Paused, "spec.paused is set".into());
    }
    if current == 0 {
        return plan(
            current,
            Why::ScaledToZero,
            "the workload has 0 replicas; spillway does not scale from zero".into(),
        );
    }
    if current > policy.max_replicas || current < policy.min_replicas {
        return plan(
            current.clamp(policy.min_replicas, policy.max_replicas),
            Why::Bounds,
            format!(
                "{current} replicas is outside {}..{}",
                policy.min_replicas, policy.max_replicas
            ),
        );
    }
    let fast_proposal = fast.filter(|f| f.raise).map(|f| f.proposal);
    let Some(answer) = hpa_answer.or(fast_proposal) else {
        state.hpa.hold(now, current, &ctx.up, &ctx.down);
        return plan(
            current,
            Why::MissingData,
            format!(
                "no load data, holding {current} replicas ({})",
                missing.join("; ")
            ),
        );
    };
    let recommended = lead.unwrap_or(answer).max(fast_proposal.unwrap_or(0));
    if !missing.is_empty() && recommended < current {
        state.hpa.hold(now, current, &ctx.up, &ctx.down);
        return plan(
            current,
            Why::MissingData,
            format!("not scaling down on partial data ({})", missing.join("; ")),
        );
    }
    state.hpa.seed(now, current);
    if let Some(f) = fast.filter(|f| f.proposal > recommended) {
        state
            .hpa
            .floor(now, f.proposal.min(policy.max_replicas), &ctx.up, &ctx.down);
    }
    let hold = note_demand(policy, ctx, recommended, fast, state);
    let n = hpa::Normalize {
        now,
        current,
        desired: recommended,
        min: policy.min_replicas,
        max: policy.max_replicas,
        up: &ctx.up,
        down: &ctx.down,
    };
    let (mut desired, mut limit) = state.hpa.normalize(&n);
    let mut why = match limit {
        hpa::Limit::DesiredWithinRange if desired == current => Why::Steady,
        hpa::Limit::DesiredWithinRange if lead.is_some() => Why::LeadTime,
        hpa::Limit::DesiredWithinRange => Why::Load,
        hpa::Limit::ScaleUpStabilized | hpa::Limit::ScaleDownStabilized => Why::Stabilized,
        hpa::Limit::ScaleUpLimit | hpa::Limit::ScaleDownLimit => Why::RateLimited,
        hpa::Limit::TooManyReplicas | hpa::Limit::TooFewReplicas => Why::Bounds,
    };
    let mut notes = Vec::new();
    let burst_on = state.burst_until.is_some_and(|u| now < u);
    if let Some(f) = fast.filter(|f| f.burst && f.proposal > desired) {
        desired = f.proposal.min(policy.max_replicas);
        limit = hpa::Limit::DesiredWithinRange;
        why = Why::Burst;
        notes.push(format!(
            "burst: pod counters read {} → {desired}",
            f.proposal
        ));
    } else if burst_on && desired < current {
        desired = current;
        why = Why::Burst;
        notes.push("burst mode holds the count".to_string());
    } else if desired > recommended
        && let Some((floor, note)) = release_eci(policy, ctx, state, desired, recommended, fast)
    {
        notes.push(note);
        desired = floor;
        why = Why::EciScaleDown;
    }
    if let (Some(h), Some(held)) = (hold, hold_ecs_pods(ctx, desired, state)) {
        desired = held;
        why = Why::EcsHold;
        notes.push(format!(
            "the pods ECS holds stay {h:.0}s after the load that needed them"
        ));
    }
    let reason = Reason {
        readings,
        answer,
        lead,
        limit,
        desired,
        notes,
        missing: &missing,
    }
    .text(policy);
    plan(desired, why, reason)
}

/// Pods that serve `rate` at `target` each, rounded up.
fn pods_for(rate: f64, target: f64) -> i32 {
    (rate / target).ceil().min(f64::from(i32::MAX)) as i32
}

/// The pods the load needs now at each metric's target, no tolerance, no window: what a swap
/// may not go back below.
fn need(policy: &ElasticGatewaySpec, ctx: &Context, readings: &[Reading]) -> Option<i32> {
    policy
        .metrics
        .iter()
        .zip(readings)
        .filter_map(|(m, r)| {
            let v = r.value?;
            let pods = (r.target_per_replica > 0.0).then(|| pods_for(v, r.target_per_replica))?;
            Some(if pooled(m) {
                ctx.mix.replicas(pods)
            } else {
                pods
            })
        })
        .max()
}

/// The HPA formula for a total, with the pods above what ECS holds counted at the ECI pods'
/// share of an ECS pod: the usage ratio is taken over what the fleet serves, and a change
/// sizes the overflow in ECI pods.
fn replicas_for_total(
    ctx: &Context,
    m: &crate::policy::MetricSpec,
    total: f64,
    tol: crate::policy::Tolerances,
) -> i32 {
    let (status, target) = (ctx.status_replicas, m.target_per_replica);
    if !pooled(m) || ctx.mix.relative >= 1.0 {
        return hpa::replicas_for_total(status, total, target, tol);
    }
    if status > 0 && tol.is_within(total / (target * ctx.mix.serves(status))) {
        status
    } else {
        ctx.mix.replicas(pods_for(total, target))
    }
}

/// The HPA's per-pod answer `r` with the ECI pods at their share: a change sizes the overflow
/// in ECI pods; a hold (the pods' mean within the tolerance of the target) is looked at again
/// over what the fleet serves, and raised if the pods' total is past it. Never lower than `r`.
fn per_pod_pooled(
    ctx: &Context,
    m: &crate::policy::MetricSpec,
    sample: &LoadSample,
    r: i32,
) -> i32 {
    if r != ctx.current {
        return ctx.mix.replicas(r).max(r);
    }
    let target = m.target_per_replica;
    match sample.total() {
        Some(total) if total > target * ctx.mix.serves(r) * (1.0 + ctx.tolerance_up) => {
            ctx.mix.replicas(pods_for(total, target)).max(r)
        }
        _ => r,
    }
}

/// Whether a metric's per-pod figure depends on the pool: a CPU reading already shows a
/// weaker pod working harder, so it is counted as read; a request or connection count is not.
fn pooled(m: &crate::policy::MetricSpec) -> bool {
    m.preset != Some(crate::policy::Preset::Cpu)
}

/// The request-rate metric's target, the scale the pools' usage is read against.
fn request_target(policy: &ElasticGatewaySpec) -> Option<f64> {
    policy
        .metrics
        .iter()
        .find(|m| m.preset == Some(crate::policy::Preset::RequestRate))
        .map(|m| m.target_per_replica)
}

/// The ECI pods' early release: when the standard window holds a count above what ECS holds,
/// the pods above it run on ECI, billed per second; they go after the shorter ECI window, when
/// the load has really fallen (below the count by more than twice the tolerance through the
/// window: noise around a steady load keeps the standard window, so the count does not flap).
/// Returns the count to keep and the note saying so.
fn release_eci(
    policy: &ElasticGatewaySpec,
    ctx: &Context,
    state: &EngineState,
    desired: i32,
    recommended: i32,
    fast: Option<FastAnswer>,
) -> Option<(i32, String)> {
    if desired <= ctx.survey.ecs_capacity {
        return None;
    }
    let eci_window = eci_window(policy, &ctx.down, state.eci_window);
    let recent = state
        .hpa
        .max_since(ctx.now - eci_window)
        .unwrap_or(recommended);
    // In what the counts serve: above ECS, weaker ECI pods make a count fall faster than the
    // capacity it stands for.
    let fell = ctx.mix.serves(recent)
        <= ctx.mix.serves(desired) * (1.0 - 2.0 * policy.behavior.tolerances().down);
    let floor = recent
        .max(recommended)
        .max(ctx.survey.ecs_capacity.min(desired))
        .max(fast.map_or(0, |f| f.proposal.min(desired)));
    (fell && floor < desired).then(|| {
        (
            floor.max(policy.min_replicas),
            format!(
                "ECI pods above ECS capacity {} go after {eci_window:.0}s low",
                ctx.survey.ecs_capacity
            ),
        )
    })
}

/// What a replica plan says about itself: the readings, the HPA's answer, the forecast, the
/// limit that applied, the notes of the later stages and the data missing.
struct Reason<'a> {
    readings: &'a [Reading],
    answer: i32,
    lead: Option<i32>,
    limit: hpa::Limit,
    desired: i32,
    notes: Vec<String>,
    missing: &'a [String],
}

impl Reason<'_> {
    fn text(self, policy: &ElasticGatewaySpec) -> String {
        let load = self
            .readings
            .iter()
            .filter_map(|r| {
                r.value
                    .map(|v| format!("{} {v:.1} / {} per replica", r.metric, r.target_per_replica))
            })
            .collect::<Vec<_>>()
            .join(", ");
        let mut reason = format!("{load} → {}", self.answer);
        if let Some(l) = self.lead {
            reason.push_str(&format!(
                ", {l} for the load forecast {}s ahead",
                policy.behavior.lead_time.seconds
            ));
        }
        if self.limit != hpa::Limit::DesiredWithinRange {
            reason.push_str(&format!(", {} to {}", self.limit.as_str(), self.desired));
        }
        for n in self.notes {
            reason.push_str(&format!("; {n}"));
        }
        if !self.missing.is_empty() {
            reason.push_str(&format!(" (missing: {})", self.missing.join("; ")));
        }
        reason
    }
}

/// Notes what the load asks for now (the recommendation, or the fast path's reading when
/// higher) for the ECS hold, and returns the hold (`None`: off).
fn note_demand(
    policy: &ElasticGatewaySpec,
    ctx: &Context,
    recommended: i32,
    fast: Option<FastAnswer>,
    state: &mut EngineState,
) -> Option<f64> {
    let hold = ecs_hold(policy, &ctx.down, state.ecs_hold);
    match hold {
        Some(h) => {
            // A fresh memory (a restart, a new leader) starts from the count, as the window
            // does: it has not seen the load that asked for it.
            if state.demand.is_empty() {
                state.note_demand(ctx.now, ctx.current, h);
            }
            let asked = recommended.max(fast.map_or(0, |f| f.proposal));
            state.note_demand(ctx.now, asked.min(policy.max_replicas), h);
        }
        None => state.demand.clear(),
    }
    hold
}

/// The count the ECS hold keeps when `desired` would go below it: the most the load asked for
/// within the hold, as far as ECS holds it. The nodes are paid for either way, so releasing
/// their pods sooner saves nothing, and a load that comes back within the hold would pay a
/// start and reset connections twice.
fn hold_ecs_pods(ctx: &Context, desired: i32, state: &EngineState) -> Option<i32> {
    let held = state
        .demand_peak()?
        .min(ctx.survey.ecs_capacity)
        .min(ctx.current);
    (held > desired).then_some(held)
}

/// The longest the ECS hold grows to by learning from flaps.
pub const MAX_ECS_HOLD_SECONDS: f64 = 3600.0;

/// How long the pods ECS holds stay after the load that needed them: `behavior.ecsHoldSeconds`
/// (by default twice the scale-down window, [`FLAP_WINDOW_SECONDS`] for the HPA's: the
/// dedicated ECS nodes are paid for either way, so a release saves nothing and risks a
/// reversal), or longer as learnt from flaps (see [`judge_ecs_release`]), at most
/// [`MAX_ECS_HOLD_SECONDS`].
/// `None` when the hold is no longer than the scale-down window, which is then alone in
/// charge.
fn ecs_hold(
    policy: &ElasticGatewaySpec,
    down: &crate::policy::EffectiveRules,
    learnt: Option<f64>,
) -> Option<f64> {
    let base = policy.behavior.ecs_hold() as f64;
    (base > f64::from(down.stabilization_window_seconds)).then(|| {
        learnt
            .unwrap_or(base)
            .clamp(base, MAX_ECS_HOLD_SECONDS.max(base))
    })
}

/// Judges the last release of ECS pods as [`judge_eci_release`] judges ECI releases. A
/// scale-up for the load within [`FLAP_WINDOW_SECONDS`] of it is a flap (as between the teeth
/// of a sawtooth whose gaps are shorter than the hold plus ten minutes): the hold grows to what
/// would have bridged it (the hold plus the gap), at least double, at most
/// [`MAX_ECS_HOLD_SECONDS`]. A release that stands for [`FLAP_WINDOW_SECONDS`] halves it back
/// towards `behavior.ecsHoldSeconds`. Then notes this decision's release: a scale-down below
/// what ECS holds.
fn judge_ecs_release(
    policy: &ElasticGatewaySpec,
    ctx: &Context,
    plan: &ReplicaPlan,
    state: &mut EngineState,
) {
    let Some(hold) = ecs_hold(policy, &ctx.down, state.ecs_hold) else {
        state.ecs_release = None;
        state.ecs_hold = None;
        return;
    };
    judge_release(&mut state.ecs_release, &mut state.ecs_hold, ctx, plan);
    // Halved back to the configured hold is no learnt hold at all.
    state.ecs_hold = state
        .ecs_hold
        .map(|w| w.min(MAX_ECS_HOLD_SECONDS))
        .filter(|w| *w > policy.behavior.ecs_hold() as f64);
    if plan.desired < ctx.current
        && plan.desired < ctx.survey.ecs_capacity
        && plan.why != Why::Rebalance
    {
        state.ecs_release = Some(Release {
            at: ctx.now,
            window: hold,
            flap_until: ctx.now + FLAP_WINDOW_SECONDS,
        });
    }
}

/// The ECI pods' scale-down window: `eci.scaleDownWindow` (by default the ECI start latency:
/// ski rental, an idle ECI pod is kept about as long as re-creating it would take), or longer
/// as learnt from flaps (see [`judge_eci_release`]), never beyond the standard window.
fn eci_window(
    policy: &ElasticGatewaySpec,
    down: &crate::policy::EffectiveRules,
    learnt: Option<f64>,
) -> f64 {
    let base = policy.eci.scale_down_window() as f64;
    let standard = f64::from(down.stabilization_window_seconds).max(base);
    learnt.unwrap_or(base).clamp(base, standard)
}

/// Judges a pending release of either pool: a scale-up for the load by its `flap_until` is a
/// flap, and the learnt window grows to what would have bridged it (the window plus the gap),
/// at least double; a release that stands for [`FLAP_WINDOW_SECONDS`] halves it. Either way
/// the release is then forgotten.
fn judge_release(
    pending: &mut Option<Release>,
    learnt: &mut Option<f64>,
    ctx: &Context,
    plan: &ReplicaPlan,
) {
    let Some(r) = *pending else { return };
    if plan.desired > ctx.current && plan.why != Why::Rebalance {
        if ctx.now <= r.flap_until {
            let bridge = r.window + (ctx.now - r.at);
            *learnt = Some(bridge.max(2.0 * r.window));
        }
        *pending = None;
    } else if ctx.now - r.at > FLAP_WINDOW_SECONDS {
        *learnt = learnt.map(|w| w / 2.0);
        *pending = None;
    }
}

/// Judges the last ECI release. A scale-up for the load within the standard window after it
/// is a flap: holding the pods as long as the HPA does would have bridged the dip, and the
/// release paid a cold start and two changes of the count instead. The ECI window then grows
/// to what would have bridged this dip (the window plus the gap), at least twice what it was,
/// at most the standard window. A rise later than that (a gap longer than the standard window,
/// as between the teeth of a sawtooth) is neither: holding longer, up to the standard window,
/// would not have bridged it. A release that stands for [`FLAP_WINDOW_SECONDS`] halves the
/// window back towards `eci.scaleDownWindow`. Then notes this decision's release.
fn judge_eci_release(
    policy: &ElasticGatewaySpec,
    ctx: &Context,
    plan: &ReplicaPlan,
    state: &mut EngineState,
) {
    judge_release(&mut state.eci_release, &mut state.eci_window, ctx, plan);
    if plan.why == Why::EciScaleDown && plan.desired < ctx.current {
        state.eci_release = Some(Release {
            at: ctx.now,
            window: eci_window(policy, &ctx.down, state.eci_window),
            flap_until: ctx.now + f64::from(ctx.down.stabilization_window_seconds),
        });
    }
}

/// Stage 4: the ECI cap limits the pods on ECI, never the fleet ECS can hold: the ceiling is
/// ECS's capacity (its pods plus free slots) plus the cap.
fn cap(
    policy: &ElasticGatewaySpec,
    obs: &Observation<'_>,
    ctx: &Context,
    plan: &mut ReplicaPlan,
    state: &mut EngineState,
) {
    let survey = &ctx.survey;
    plan.eci_cap = eci_cap(policy, obs.pod_requests);
    let ceiling = plan.eci_cap.map(|cap| {
        survey
            .ecs_capacity
            .saturating_add(cap)
            .max(policy.min_replicas)
    });
    let over = ceiling
        .filter(|c| plan.desired > *c && !matches!(plan.why, Why::Paused | Why::ScaledToZero));
    // Above the ceiling now (ECS lost room, the cost cap came down): how long so far.
    let above_now = ceiling.is_some_and(|c| plan.current > c);
    state.over_cap_since = if above_now {
        state.over_cap_since.or(Some(ctx.now))
    } else {
        None
    };
    if let (Some(ceiling), Some(cap)) = (over, plan.eci_cap) {
        // The cap stops growth at once; it lowers the count only the way a falling load would:
        // never on missing data, never while a rollout or the gateway's own pods coming and
        // going move the capacity, and only once the excess has lasted the ECI window.
        let transition =
            obs.rollout_in_progress || survey.pending_pods > 0 || survey.terminating_pods > 0;
        let lasted = state
            .over_cap_since
            .is_some_and(|t| ctx.now - t >= eci_window(policy, &ctx.down, state.eci_window));
        let floor = if plan.why == Why::MissingData || transition || !lasted {
            plan.current.min(plan.desired)
        } else {
            0
        };
        plan.reason.push_str(&format!(
            "; capped at {ceiling}: ECS holds {}, ECI at most {cap}",
            survey.ecs_capacity
        ));
        if floor > ceiling {
            plan.reason.push_str(
                " (the count comes down to it only through the ECI window, outside a rollout)",
            );
        }
        plan.desired = ceiling.max(floor);
        plan.direction = direction(plan.current, plan.desired);
        plan.why = Why::EciCap;
    }
    plan.expected_eci = (plan.desired - survey.ecs_capacity).max(0);
}

/// Stage 4b: the pool spread constraints (`placement.poolSpread`): whether to write them now
/// (missing, at a quiet time, never written before), and whether they were removed after
/// spillway wrote them. Turning the field off forgets the write, so that turning it on again
/// writes them once more.
fn spread(
    policy: &ElasticGatewaySpec,
    obs: &Observation<'_>,
    quiet: bool,
    state: &mut EngineState,
) -> (bool, bool) {
    if policy.pool_placement_keys().is_empty() {
        state.spread = SpreadMemory::default();
        return (false, false);
    }
    let m = &mut state.spread;
    if !obs.spread_missing && m.written_at.is_some() {
        m.seen = true;
    }
    let removed = obs.spread_missing
        && m.written_at
            .is_some_and(|at| m.seen || obs.now - at >= SPREAD_SETTLE_SECONDS);
    let adopt = obs.spread_missing && !policy.paused && quiet && m.written_at.is_none();
    // Dry-run shows the write and makes none: nothing to remember, nothing to miss later.
    if adopt && !policy.dry_run {
        *m = SpreadMemory {
            written_at: Some(obs.now),
            seen: false,
        };
    }
    (adopt, removed)
}

/// Stage 5a: move ECI pods back to ECS make-before-break (`placement.swapBack`). When the
/// fleet is steady (the load asks for the count it has, nothing pending, not ready or rolling)
/// and ECS has a free slot while gateway pods run on ECI, ask for one pod more, if the
/// scheduler model puts it on ECS: the ECI pods still count for the scheduler's topology
/// spreading, and where that (or the resource scores) outweighs the weights the pod would land
/// on ECI, a cold start and a deletion for nothing; the swap is then held, and said so. Once
/// the added pod is ready, ask for the count before: the ReplicaSet removes an ECI pod first
/// (lowest deletion cost). The count never dips below what the load asked for. If the load
/// rises meanwhile the added pod simply stays; if it falls, the scale-down removes ECI pods
/// first anyway. A swap whose added pod lands on ECI anyway (a tie, a model miss) is a miss:
/// the next waits twice as long.
fn swap_back(
    policy: &ElasticGatewaySpec,
    obs: &Observation<'_>,
    ctx: &Context,
    weights: &WeightPlan,
    (plan, need): (&mut ReplicaPlan, Option<i32>),
    state: &mut EngineState,
) -> Option<placement::SwapEvent> {
    use placement::{Landing, SwapEvent};
    fn set(plan: &mut ReplicaPlan, desired: i32, note: String) {
        plan.desired = desired;
        plan.direction = direction(plan.current, desired);
        plan.why = Why::Rebalance;
        plan.reason.push_str(&format!("; {note}"));
    }
    let now = ctx.now;
    let enabled = policy.placement.swap_back && !policy.placement.rebalance && !policy.dry_run;
    let live: Vec<&GatewayPod> = obs.pods.iter().filter(|p| !p.terminating).collect();
    let all_ready = ctx.survey.pending_pods == 0 && live.iter().all(|p| p.ready);
    let normal = matches!(
        plan.why,
        Why::Load
            | Why::Steady
            | Why::Stabilized
            | Why::RateLimited
            | Why::EciScaleDown
            | Why::EcsHold
    );
    // An added pod may land on ECI: never past the ECI cap.
    let below_cap = plan.eci_cap.is_none_or(|c| ctx.survey.eci_pods < c);
    let plan_pods =
        |most: i32| placement::pods_until_ecs(policy, &ctx.template, obs.pods, obs.nodes, most);
    if let Some(s) = state.swap {
        // The count was changed by someone else, the load asks for more (the added pod
        // stays), or for fewer than before the swap (the scale-down takes ECI pods first).
        if !enabled
            || !normal
            || ctx.current != s.base + s.added
            || plan.desired != plan.desired.clamp(s.base, ctx.current)
        {
            state.swap = None;
            return None;
        }
        let timed_out = now - s.started >= placement::SWAP_TIMEOUT_SECONDS;
        let landed = ctx.survey.ecs_pods > s.ecs_pods;
        let settled = all_ready && ctx.status_replicas == ctx.current;
        if settled
            && !landed
            && !timed_out
            && s.added < placement::SWAP_MAX_ADDED
            && ctx.current < policy.max_replicas
            && below_cap
            && plan_pods(placement::SWAP_MAX_ADDED - s.added).is_ok()
        {
            // Each pod added off ECS raises that node's spread count: the next one weighs
            // affinity against a less empty virtual node (the model says when it wins).
            state.swap = Some(placement::Swap {
                added: s.added + 1,
                ..s
            });
            set(
                plan,
                ctx.current + 1,
                "swap: the added pod landed on ECI too; one more".into(),
            );
            return Some(SwapEvent::OneMore);
        }
        if settled || timed_out {
            state.swap_misses = if landed {
                0
            } else {
                state.swap_misses.saturating_add(1)
            };
            state.swap = None;
            // A swap that moved every pod it added, each ready, proved the model right: while
            // ECS has room and pods run on ECI, the next may start at once (each is
            // make-before-break).
            let all_landed = settled && ctx.survey.ecs_pods - s.ecs_pods >= s.added;
            state.last_move = (!all_landed).then_some(now);
            // Back to the count before the swap, or to what the load needs now if it rose since
            // (the added pods that serve it stay). The stabilized count cannot say: its window
            // holds the swap's own raised count.
            let back = need.map_or(s.base, |n| n.clamp(s.base, ctx.current));
            set(
                plan,
                back,
                if landed {
                    format!(
                        "swap: {} added pods run on ECS; back to {back}, ECI pods go first",
                        ctx.survey.ecs_pods - s.ecs_pods,
                    )
                } else {
                    format!(
                        "swap: the added pods {}; back to {back} (next try in {:.0}s)",
                        if timed_out {
                            "are not ready"
                        } else {
                            "landed on ECI too"
                        },
                        placement::swap_wait(
                            policy.placement.rebalance_interval_seconds,
                            state.swap_misses
                        )
                    )
                },
            );
            return Some(if landed {
                SwapEvent::LandedEcs
            } else if timed_out && !settled {
                SwapEvent::GaveUp
            } else {
                SwapEvent::Missed
            });
        }
        set(
            plan,
            ctx.current,
            "swap: waiting for the added pods to be ready".into(),
        );
        return None;
    }
    let interval = policy.placement.rebalance_interval_seconds as f64;
    let steady = enabled
        && plan.direction == Direction::Hold
        // The ECS hold keeps the count above the load's need for up to an hour, the standard
        // window for up to five minutes: an ECI pod is still worth moving then (the scale-down
        // that follows takes the ECI pods first, and the swap ends with it).
        && (matches!(plan.why, Why::Steady | Why::Load) && plan.hpa.is_some_and(|h| h >= ctx.current)
            || plan.why == Why::EcsHold
            // Held above what the load asks on the way down; never a scale-up held back.
            || plan.why == Why::Stabilized && plan.hpa.is_some_and(|h| h < ctx.current))
        && plan.lead.is_none()
        && ctx.current == ctx.status_replicas
        && ctx.current < policy.max_replicas
        && below_cap
        && all_ready
        && !obs.rollout_in_progress
        && !weights.changed()
        && weights.target.ecs > weights.target.eci
        && state.burst_until.is_none_or(|u| now >= u)
        && state.last_scale_up.is_none_or(|t| now - t >= interval)
        && state.last_move.is_none_or(|t| {
            now - t
                >= placement::swap_wait(
                    policy.placement.rebalance_interval_seconds,
                    state.swap_misses,
                )
        });
    if !(steady && ctx.survey.eci_pods > 0 && ctx.survey.ecs_room > 0) {
        return None;
    }
    let pods = match plan_pods(placement::SWAP_MAX_ADDED) {
        Ok(k) => k,
        Err(first) => {
            let node = match first {
                Landing::Elsewhere { node, .. } => node,
                _ => "no node (it would stay Pending)".to_string(),
            };
            // Looked at again after the rebalance interval: the nodes may have changed.
            state.last_move = Some(now);
            plan.reason.push_str(&format!(
                "; no swap: ECS has room for {} while {} run on ECI, but the scheduler would \
                 place the next {} pods off ECS, the first on {node} (its scores outweigh the \
                 weights; placement.poolSpread keeps a Deployment's pods on ECS)",
                ctx.survey.ecs_room,
                ctx.survey.eci_pods,
                placement::SWAP_MAX_ADDED
            ));
            return Some(SwapEvent::Held);
        }
    };
    // The model puts the first pod on ECS: as many as ECS has room for go at once (several
    // ECI pods at a time when a neighbour's release frees many slots), at most a quarter of the
    // count, as a Deployment's default maxSurge, and never past the ECI cap should some land
    // there after all; the count goes back by as many, ECI pods first.
    let batch = if pods == 1 {
        let cap_room = plan.eci_cap.map_or(i32::MAX, |c| c - ctx.survey.eci_pods);
        ctx.survey
            .ecs_room
            .min(ctx.survey.eci_pods)
            .min((ctx.current + 3) / 4)
            .min(policy.max_replicas - ctx.current)
            .min(cap_room)
            .max(1)
    } else {
        1
    };
    state.swap = Some(placement::Swap {
        base: ctx.current,
        added: batch,
        ecs_pods: ctx.survey.ecs_pods,
        started: now,
    });
    set(
        plan,
        ctx.current + batch,
        if batch > 1 {
            format!(
                "swap: ECS has room for {} while {} run on ECI; {batch} pods more (they land \
                 on ECS), then as many fewer, ECI pods first",
                ctx.survey.ecs_room, ctx.survey.eci_pods
            )
        } else if pods == 1 {
            format!(
                "swap: ECS has room for {} while {} run on ECI; one pod more (it lands on \
                 ECS), then one fewer",
                ctx.survey.ecs_room, ctx.survey.eci_pods
            )
        } else {
            format!(
                "swap: ECS has room for {} while {} run on ECI; one pod more, {pods} in all \
                 until one lands on ECS (the scheduler's spreading sends the first to ECI), \
                 then as many fewer, ECI pods first",
                ctx.survey.ecs_room, ctx.survey.eci_pods
            )
        },
    );
    Some(SwapEvent::Started)
}

/// Stage 5a: the last scale-in's victims. Until the ReplicaSet has had its turn (one of them
/// still serving, the fleet above the count that scale-in asked for, for at most
/// [`VICTIM_SETTLE_SECONDS`]) they keep the victim's cost, carried: a cost put back at once
/// would race the ReplicaSet. Then they are checked (gone or terminating: as chosen; still
/// serving: kept). A scale-up past that count overtook the scale-in: they go back unchecked.
fn settle_victims(
    obs: &Observation<'_>,
    plan: &ReplicaPlan,
    state: &mut EngineState,
) -> (Option<placement::VictimCheck>, Vec<String>) {
    let pending = std::mem::take(&mut state.victims);
    if pending.is_empty() || plan.desired > state.victims_target {
        return (None, vec![]);
    }
    let serving = |name: &String| obs.pods.iter().any(|p| &p.name == name && !p.terminating);
    let standing: Vec<String> = pending.iter().filter(|v| serving(v)).cloned().collect();
    let active = obs.pods.iter().filter(|p| !p.terminating).count();
    let waiting = !standing.is_empty()
        && active > usize::try_from(state.victims_target).unwrap_or(0)
        && obs.now - state.victims_at < VICTIM_SETTLE_SECONDS;
    if waiting {
        (None, standing)
    } else {
        (Some(placement::check_victims(&pending, obs.pods)), vec![])
    }
}

/// Stage 5b: on a scale-in, the ready pods to remove besides those `carried` from the last
/// one, by what each would cut (ECI first, then the fewest connections;
/// [`placement::victims`]), within the reset budget (`behavior.resetBudgetPercent` of the open
/// connections a minute; the first pod of a minute always goes): what does not fit stays, and
/// the plan says so (`held`). A scale-in to honour `maxReplicas` or the ECI cap, or a swap's
/// return to its count, is not paced. None while a rollout runs (the Deployment controller
/// splits a scale-in over its ReplicaSets) or paused. A dry run shows the choice and the pacing
/// and keeps neither: no reset is counted, no pod carried.
fn choose_victims(
    policy: &ElasticGatewaySpec,
    obs: &Observation<'_>,
    ctx: &Context,
    plan: &mut ReplicaPlan,
    weights: &WeightPlan,
    state: &mut EngineState,
    carried: &[String],
) -> Vec<String> {
    let now = ctx.now;
    state.resets.retain(|(t, _)| now - t < RESET_WINDOW_SECONDS);
    if plan.desired >= ctx.current || policy.paused || obs.rollout_in_progress || weights.changed()
    {
        return vec![];
    }
    // The ReplicaSet removes what is live above the count: the carried victims first (their
    // cost), then these.
    let others: Vec<GatewayPod> = obs
        .pods
        .iter()
        .filter(|p| !carried.contains(&p.name))
        .cloned()
        .collect();
    let active = others.iter().filter(|p| !p.terminating).count();
    let n = active.saturating_sub(usize::try_from(plan.desired).unwrap_or(0));
    let Some(ranked) = placement::victims(&others, n) else {
        return vec![];
    };
    let percent = policy.behavior.reset_budget();
    let paced = percent < 100.0 && !matches!(plan.why, Why::Bounds | Why::EciCap | Why::Rebalance);
    let budget = placement::open_connections(obs.pods) * percent / 100.0;
    let used: f64 = state.resets.iter().map(|(_, c)| c).sum();
    let (mut taken, mut cut) = (vec![], 0.0);
    for (pod, connections) in &ranked {
        let first = state.resets.is_empty() && taken.is_empty();
        if paced && !first && used + cut + connections > budget {
            break;
        }
        cut += connections;
        taken.push(pod.clone());
    }
    let held = ranked.len() - taken.len();
    if held > 0 {
        plan.held = i32::try_from(held).unwrap_or(i32::MAX);
        plan.desired = plan.desired.saturating_add(plan.held);
        if plan.desired >= ctx.current {
            // Nothing goes this time: the budget is the reason.
            plan.direction = Direction::Hold;
            plan.why = Why::ResetBudget;
        }
        plan.reason = format!(
            "{}; {held} pod(s) held back by the reset budget: {:.0} connections a minute ({percent}% of {:.0} open), {:.0} reset in the last minute",
            plan.reason,
            budget,
            budget * 100.0 / percent,
            used + cut
        );
    }
    if !taken.is_empty() && !policy.dry_run {
        state.resets.push((now, cut));
    }
    taken
}

/// Stage 5b: deletion costs (this scale-in's victims first, then ECI pods) and, if enabled,
/// one move back to ECS when the fleet is steady and ECS has room.
fn place(
    policy: &ElasticGatewaySpec,
    obs: &Observation<'_>,
    ctx: &Context,
    plan: &ReplicaPlan,
    weights: &WeightPlan,
    victims: &[String],
    state: &mut EngineState,
) -> (Vec<(String, i32)>, Vec<String>, String) {
    if policy.paused {
        return (vec![], vec![], "paused".into());
    }
    let deletion_costs = placement::deletion_costs(obs.pods, victims);
    if !policy.placement.rebalance {
        return (deletion_costs, vec![], REBALANCE_OFF.into());
    }
    let now = ctx.now;
    let quiet = |t: Option<f64>| {
        t.is_none_or(|t| now - t >= policy.placement.rebalance_interval_seconds as f64)
    };
    let steady = plan.direction == Direction::Hold
        && plan.desired == ctx.status_replicas
        && quiet(state.last_scale_up);
    let choice = placement::choose_move(&placement::MoveInput {
        pods: obs.pods,
        survey: &ctx.survey,
        steady,
        weights_prefer_ecs: weights.target.ecs > weights.target.eci,
        rollout_in_progress: obs.rollout_in_progress || weights.changed(),
    });
    let (moves, reason) = match choice {
        Ok(pod) if quiet(state.last_move) => {
            state.last_move = Some(now);
            (
                vec![pod],
                format!(
                    "ECS has room for {} more; moving one ECI pod back",
                    ctx.survey.ecs_room
                ),
            )
        }
        Ok(_) => (vec![], "waiting for the rebalance interval".to_string()),
        Err(why) => (vec![], why.to_string()),
    };
    (deletion_costs, moves, reason)
}

/// Stage 6: the weights. Misplaced pods (bound to ECI since the last decision while ECS still
/// has room) are counted; once any were seen, the template moves to the stronger ECS
/// preference, but only at a quiet time: the load well below the ready capacity, no scale-up
/// for 10 minutes, no rollout. The opt-in yield mode (`exhaustedWeights`) runs as before.
fn steer_weights(
    policy: &ElasticGatewaySpec,
    obs: &Observation<'_>,
    ctx: &Context,
    plan: &ReplicaPlan,
    quiet: bool,
    state: &mut EngineState,
) -> WeightPlan {
    if policy.paused {
        return WeightPlan {
            current: ctx.weights_now,
            target: ctx.weights_now,
            reason: "paused".into(),
        };
    }
    let since = state.last_decision.unwrap_or(f64::NEG_INFINITY);
    state.weights.misplaced += placement::misplaced(obs.pods, &ctx.survey, since);
    placement::weights(
        policy,
        &mut state.weights,
        &placement::WeightInput {
            now: ctx.now,
            observed: obs.weights,
            desired: plan.desired,
            survey_room: ctx.survey.ecs_room,
            ecs_capacity: ctx.survey.ecs_capacity,
            rollout_in_progress: obs.rollout_in_progress,
            eci_cap: plan.eci_cap,
            quiet,
        },
    )
}

/// Whether the template may change now: a template change rolls every pod, and the new pods
/// land on ECS only if ECS has room for them beside the old ones (the surge, `maxSurge: 25%`
/// by default); rolled while ECS is full, the whole fleet lands on ECI, as the fidelity test saw
/// on the real scheduler. So: no rollout under way, no scale-up now or in the last
/// [`QUIET_AFTER_SCALE_UP_SECONDS`], room for the surge, and the load below
/// [`QUIET_LOAD_FRACTION`] of the ready capacity.
fn quiet(
    obs: &Observation<'_>,
    ctx: &Context,
    plan: &ReplicaPlan,
    state: &EngineState,
    policy: &ElasticGatewaySpec,
) -> bool {
    let surge = (f64::from(obs.spec_replicas.max(0)) * 0.25).ceil() as i32;
    // Room free now: slots that terminating pods are about to free do not take surge pods yet.
    let free_now = ctx.survey.ecs_pods.saturating_add(ctx.survey.ecs_room);
    let room_to_roll = obs.spec_replicas.saturating_add(surge) <= free_now;
    !obs.rollout_in_progress
        && plan.direction != Direction::ScaleUp
        && room_to_roll
        && load_fraction(policy, obs, ctx).is_some_and(|f| f < QUIET_LOAD_FRACTION)
        && state
            .last_scale_up
            .is_none_or(|t| ctx.now - t >= QUIET_AFTER_SCALE_UP_SECONDS)
}

/// The first metric's reading over the ready pods' capacity at its target. For the request
/// rate, the fast path's reading counts when it is higher: Prometheus's smoothed rate lags a
/// rise by about its window, and a rollout started in that lag would roll under load.
fn load_fraction(policy: &ElasticGatewaySpec, obs: &Observation<'_>, ctx: &Context) -> Option<f64> {
    let (i, m) = policy.metrics.iter().enumerate().next()?;
    let mut v = obs.loads.get(i)?.total()?;
    if m.preset == Some(crate::policy::Preset::RequestRate)
        && let Some(f) = obs.fast.filter(|f| f.rps.is_finite() && f.pods_read > 0)
    {
        v = v.max(f.rps);
    }
    let ready = if pooled(m) {
        ctx.ready_serves
    } else {
        f64::from(ctx.survey.ready_pods)
    };
    let capacity = ready * m.target_per_replica;
    (capacity > 0.0).then(|| v / capacity)
}

fn phase(policy: &ElasticGatewaySpec, survey: &Survey, plan: &ReplicaPlan) -> Phase {
    // The phase follows what the load needs now, not the stabilized count: after the peak the
    // count is held for the window while ECI pods wait to drain.
    let needed = plan
        .lead
        .or(plan.hpa)
        .unwrap_or(plan.desired)
        .min(plan.desired);
    if policy.paused {
        Phase::Paused
    } else if plan.why == Why::MissingData {
        Phase::Holding
    } else if survey.eci_pods > 0 && needed > survey.ecs_capacity {
        Phase::Overflow
    } else if survey.eci_pods > 0 {
        Phase::Draining
    } else if plan.expected_eci > 0 {
        Phase::Overflow
    } else {
        Phase::Normal
    }
}

fn direction(current: i32, desired: i32) -> Direction {
    match desired.cmp(&current) {
        std::cmp::Ordering::Greater => Direction::ScaleUp,
        std::cmp::Ordering::Less => Direction::ScaleDown,
        std::cmp::Ordering::Equal => Direction::Hold,
    }
}

/// The tighter of the ECI pod cap and the pods the ECI cost cap pays for.
pub fn eci_cap(policy: &ElasticGatewaySpec, requests: Resources) -> Option<i32> {
    let by_cost = policy.eci.max_cost_per_hour.map(|budget| {
        let per_pod = cost::eci_pod_per_second(&requests, &policy.cost) * 3600.0;
        if per_pod > 0.0 {
            (budget / per_pod).floor().min(f64::from(i32::MAX)) as i32
        } else {
            i32::MAX
        }
    });
    match (policy.eci.max_replicas, by_cost) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Stage 7: the price. Dedicated ECS nodes cost their hourly price whether the gateway uses
/// them or not (a fixed cost); ECI pods cost their per-second price (the marginal cost). The
/// comparison is an all-ECS fleet with enough nodes for the day's peak.
fn price(
    policy: &ElasticGatewaySpec,
    obs: &Observation<'_>,
    state: &mut EngineState,
) -> CostEstimate {
    let model = &policy.cost;
    let ecs_nodes: Vec<&Node> = obs
        .nodes
        .iter()
        .filter(|n| n.has_labels(&policy.pools.ecs.node_selector))
        .collect();
    let ecs_fixed: f64 = ecs_nodes
        .iter()
        .map(|n| cost::node_price_per_hour(n, model))
        .sum();
    let live: Vec<&GatewayPod> = obs.pods.iter().filter(|p| !p.terminating).collect();
    let eci: f64 = live
        .iter()
        .filter(|p| p.pool == Pool::Eci)
        .map(|p| cost::eci_pod_per_second(&p.requests, model) * 3600.0)
        .sum();
    // What was spent since the previous decision, at this decision's prices.
    let since = state.last_decision.map_or(0.0, |t| (obs.now - t).max(0.0));
    // The marginal spend of the current peak: ECI spend since ECI pods last appeared.
    let dt = state
        .last_decision
        .map_or(0.0, |t| (obs.now - t).clamp(0.0, 300.0));
    if eci > 0.0 {
        if state.peak_eci_spend.is_none() {
            state.peak_eci_spend = Some(0.0);
        }
        if let Some(s) = state.peak_eci_spend.as_mut() {
            *s += eci / 3600.0 * dt;
        }
    } else if let Some(s) = state.peak_eci_spend.take() {
        state.last_peak_eci_spend = Some(s);
    }
    // Peak live pods over the last day, per minute.
    let minute = (obs.now / 60.0).floor() as i64;
    match state.peak.last_mut() {
        Some((m, n)) if *m == minute => *n = (*n).max(live.len() as i32),
        _ => state.peak.push((minute, live.len() as i32)),
    }
    state
        .peak
        .retain(|(m, _)| *m > minute - PEAK_WINDOW_MINUTES);
    let peak = state.peak.iter().map(|(_, n)| *n).max().unwrap_or(0);
    // The all-ECS fleet: as many nodes like the pool's first (or a default node) as the peak's
    // pods need, each paid in full.
    let reference = ecs_nodes
        .iter()
        .min_by(|a, b| a.name.cmp(&b.name))
        .map(|n| (*n).clone())
        .unwrap_or_else(|| Node {
            allocatable: Resources::new(8000, 32 << 30, 110),
            ..Default::default()
        });
    let per_node = reference.allocatable.fits_count(&obs.pod_requests).max(1);
    let nodes_needed = (i64::from(peak) + per_node - 1) / per_node;
    let all_ecs = nodes_needed as f64 * cost::node_price_per_hour(&reference, model);
    CostEstimate {
        currency: model.currency.clone(),
        ecs_per_hour: ecs_fixed,
        eci_per_hour: eci,
        all_ecs_peak_per_hour: all_ecs,
        saving_per_hour: all_ecs - ecs_fixed - eci,
        peak_eci_spend: state
            .peak_eci_spend
            .or(state.last_peak_eci_spend)
            .unwrap_or(0.0),
        ecs_spent: ecs_fixed / 3600.0 * since,
        eci_spent: eci / 3600.0 * since,
    }
}

#[cfg(test)]
mod tests;
