//! The decision engine: observation in, decision out. No I/O, no clock of its own; the live
//! agent and the drill call the very same [`decide`].
//!
//! Order of work: size the fleet with the HPA algorithm, raise it to the load expected after the
//! lead time, apply the HPA's stabilization and rate limits, cap the ECI overflow, then decide
//! the weights, the deletion costs and any move back to ECS, and price the result.

use serde::{Deserialize, Serialize};

use crate::model::{GatewayPod, Node, Pool, Resources};
use crate::policy::{ElasticGatewaySpec, PoolWeights};

pub mod cost;
pub mod forecast;
pub mod hpa;
pub mod placement;

pub use cost::CostEstimate;
pub use hpa::LoadSample;
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
}

/// The gateway's request rate read from the pods' own counters (Istio's
/// `:15090/stats/prometheus`) over the last second or two, scaled from the pods read to the
/// ready fleet.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct FastSample {
    pub rps: f64,
    /// Pods whose counters made the reading.
    pub pods_read: i32,
}

/// What the engine remembers between decisions. Plain data: the caller keeps it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineState {
    pub hpa: hpa::HpaMemory,
    pub series: Vec<forecast::Series>,
    pub weights: placement::WeightMemory,
    pub last_scale_up: Option<f64>,
    pub last_move: Option<f64>,
    /// `(minute, most live pods in it)` over the last day, for the all-ECS comparison.
    pub peak: Vec<(i64, i32)>,
}

/// Which way the replica count goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    ScaleUp,
    ScaleDown,
    Hold,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::ScaleUp => "scale_up",
            Action::ScaleDown => "scale_down",
            Action::Hold => "hold",
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
    /// Some or all load data is missing: no scale-down.
    MissingData,
    /// `spec.paused`.
    Paused,
    /// The workload has 0 replicas: someone turned it off.
    ScaledToZero,
}

impl Why {
    pub fn as_str(self) -> &'static str {
        match self {
            Why::Load => "load",
            Why::LeadTime => "lead_time",
            Why::Steady => "steady",
            Why::Stabilized => "stabilized",
            Why::RateLimited => "rate_limited",
            Why::Bounds => "bounds",
            Why::EciCap => "eci_cap",
            Why::MissingData => "missing_data",
            Why::Paused => "paused",
            Why::ScaledToZero => "scaled_to_zero",
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
    pub action: Action,
    pub why: Why,
    /// The HPA answer for the current load (max over metrics), before limits.
    pub hpa: Option<i32>,
    /// The answer for the forecast load, when it is higher.
    pub lead: Option<i32>,
    /// Most gateway pods allowed on ECI now (pods cap and cost cap), if capped.
    pub eci_cap: Option<i32>,
    /// Replicas expected to land on ECI.
    pub expected_eci: i32,
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
}

impl Decision {
    /// One line for logs and Events.
    pub fn summary(&self) -> String {
        format!(
            "{} {}→{} ({}): {} | ECS {}/{} cap, ECI {} | {}",
            self.replicas.action.as_str(),
            self.replicas.current,
            self.replicas.desired,
            self.replicas.why.as_str(),
            self.replicas.reason,
            self.survey.ecs_pods,
            self.survey.ecs_capacity,
            self.survey.eci_pods,
            self.weights.reason
        )
    }
}

/// Decision plus the state to pass to the next call.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub decision: Decision,
    pub state: EngineState,
}

const PEAK_WINDOW_MINUTES: i64 = 24 * 60;

/// The engine. `policy` must have passed [`crate::policy::validate`].
pub fn decide(policy: &ElasticGatewaySpec, obs: &Observation<'_>, prev: &EngineState) -> Outcome {
    let mut state = prev.clone();
    let now = obs.now;
    let up_rules = policy.behavior.scale_up.effective(true);
    let down_rules = policy.behavior.scale_down.effective(false);
    let lead = &policy.behavior.lead_time;
    let tolerance = policy.behavior.tolerance;
    let current = obs.spec_replicas;
    let status_replicas = obs.pods.iter().filter(|p| !p.terminating).count() as i32;
    let weights_now = obs.weights.unwrap_or(policy.placement.normal_weights);
    let template = policy.gateway_template(obs.pod_requests, weights_now);
    let survey = placement::survey(policy, &template, obs.pods, obs.nodes);

    // Readings, HPA proposals and forecasts per metric.
    state
        .series
        .resize_with(policy.metrics.len(), Default::default);
    let mut readings = Vec::with_capacity(policy.metrics.len());
    for (i, m) in policy.metrics.iter().enumerate() {
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
                Some(hpa::replicas_for_total(
                    status_replicas,
                    *v,
                    target,
                    tolerance,
                )),
                None,
            ),
            LoadSample::PerPod(samples) => {
                match hpa::replicas_for_per_pod(current, samples, obs.pods, target, tolerance) {
                    Ok(r) => (sample.total(), Some(r), None),
                    Err(e) => (None, None, Some(e)),
                }
            }
        };
        if value.is_none() {
            state.series[i].gap(now, lead.window_seconds as f64);
        }
        let forecast = value.and_then(|v| {
            state.series[i].push(now, v, lead.window_seconds as f64);
            (lead.seconds > 0)
                .then(|| {
                    state.series[i].forecast(
                        lead.seconds as f64,
                        lead.window_seconds as f64,
                        lead.max_growth,
                    )
                })
                .flatten()
        });
        readings.push(Reading {
            metric: m.display_name(),
            value,
            target_per_replica: target,
            proposal,
            forecast,
            missing,
        });
    }
    let missing: Vec<String> = readings
        .iter()
        .filter_map(|r| r.missing.as_ref().map(|why| format!("{}: {why}", r.metric)))
        .collect();

    // Replicas.
    let hold = |why: Why, reason: String| (current, Action::Hold, why, reason);
    let hpa_answer = readings.iter().filter_map(|r| r.proposal).max();
    let lead_answer = policy
        .metrics
        .iter()
        .zip(&readings)
        .filter_map(|(m, r)| {
            // The HPA's tolerance applies to the forecast too: noise on a steady load at exactly
            // the target must not add a pod.
            r.forecast.map(|f| {
                hpa::replicas_for_total(status_replicas, f, m.target_per_replica, tolerance)
            })
        })
        .max()
        .filter(|l| hpa_answer.is_some_and(|h| *l > h) && *l > current);
    let eci_cap = eci_cap(policy, obs.pod_requests);
    let (desired, action, why, reason) = if policy.paused {
        hold(Why::Paused, "spec.paused is set".into())
    } else if current == 0 {
        hold(
            Why::ScaledToZero,
            "the workload has 0 replicas; spillway does not scale from zero".into(),
        )
    } else if current > policy.max_replicas || current < policy.min_replicas {
        let d = current.clamp(policy.min_replicas, policy.max_replicas);
        let act = if d > current {
            Action::ScaleUp
        } else {
            Action::ScaleDown
        };
        (
            d,
            act,
            Why::Bounds,
            format!(
                "{current} replicas is outside {}..{}",
                policy.min_replicas, policy.max_replicas
            ),
        )
    } else if let Some(hpa_answer) = hpa_answer {
        let recommended = lead_answer.unwrap_or(hpa_answer);
        if !missing.is_empty() && recommended < current {
            hold(
                Why::MissingData,
                format!("not scaling down on partial data ({})", missing.join("; ")),
            )
        } else {
            state.hpa.seed(now, current);
            let n = hpa::Normalize {
                now,
                current,
                desired: recommended,
                min: policy.min_replicas,
                max: policy.max_replicas,
                up: &up_rules,
                down: &down_rules,
            };
            let (normalized, limit) = state.hpa.normalize(&n);
            let why = match limit {
                hpa::Limit::DesiredWithinRange if normalized == current => Why::Steady,
                hpa::Limit::DesiredWithinRange if lead_answer.is_some() => Why::LeadTime,
                hpa::Limit::DesiredWithinRange => Why::Load,
                hpa::Limit::ScaleUpStabilized | hpa::Limit::ScaleDownStabilized => Why::Stabilized,
                hpa::Limit::ScaleUpLimit | hpa::Limit::ScaleDownLimit => Why::RateLimited,
                hpa::Limit::TooManyReplicas | hpa::Limit::TooFewReplicas => Why::Bounds,
            };
            let load = readings
                .iter()
                .filter_map(|r| {
                    r.value.map(|v| {
                        format!("{} {v:.1} / {} per replica", r.metric, r.target_per_replica)
                    })
                })
                .collect::<Vec<_>>()
                .join(", ");
            let mut reason = format!("{load} → {hpa_answer}");
            if let Some(l) = lead_answer {
                reason.push_str(&format!(
                    ", {l} for the load forecast {}s ahead",
                    lead.seconds
                ));
            }
            if limit != hpa::Limit::DesiredWithinRange {
                reason.push_str(&format!(", {} to {normalized}", limit.as_str()));
            }
            if !missing.is_empty() {
                reason.push_str(&format!(" (missing: {})", missing.join("; ")));
            }
            let action = direction(current, normalized);
            (normalized, action, why, reason)
        }
    } else {
        hold(
            Why::MissingData,
            format!(
                "no load data, holding {current} replicas ({})",
                missing.join("; ")
            ),
        )
    };

    if why == Why::MissingData {
        state.hpa.hold(now, current, &up_rules, &down_rules);
    }

    // The ECI cap lowers the count rather than run more pods on ECI than allowed.
    let ecs_capacity = if weights_now == policy.placement.normal_weights {
        survey.ecs_capacity
    } else {
        survey.ecs_pods
    };
    let (mut desired, mut action, mut why, mut reason) = (desired, action, why, reason);
    if let Some(cap) = eci_cap {
        let ceiling = ecs_capacity.saturating_add(cap).max(policy.min_replicas);
        if desired > ceiling && !matches!(why, Why::Paused | Why::ScaledToZero) {
            reason.push_str(&format!(
                "; capped at {ceiling} to keep ECI within {cap} pods (ECS holds {ecs_capacity})"
            ));
            desired = ceiling.max(if why == Why::MissingData { current } else { 0 });
            action = direction(current, desired);
            why = Why::EciCap;
        }
    }
    if desired != current && !policy.dry_run {
        state.hpa.record_scale(
            now,
            current,
            desired,
            hpa::longest_period(&up_rules, &down_rules),
        );
        if desired > current {
            state.last_scale_up = Some(now);
        }
    }
    let expected_eci = (desired - ecs_capacity).max(0);

    // Weights, deletion costs, moves.
    let weights = if policy.paused {
        WeightPlan {
            current: weights_now,
            target: weights_now,
            reason: "paused".into(),
        }
    } else {
        placement::weights(
            policy,
            &mut state.weights,
            &placement::WeightInput {
                now,
                observed: obs.weights,
                desired,
                survey_room: survey.ecs_room,
                ecs_capacity: survey.ecs_capacity,
                rollout_in_progress: obs.rollout_in_progress,
                eci_cap,
            },
        )
    };
    let deletion_costs = if policy.paused {
        vec![]
    } else {
        placement::deletion_costs(obs.pods)
    };
    let (moves, move_reason) = if !policy.placement.rebalance || policy.paused {
        (vec![], "rebalance is off".to_string())
    } else {
        let quiet = |t: Option<f64>| {
            t.is_none_or(|t| now - t >= policy.placement.rebalance_interval_seconds as f64)
        };
        let steady =
            action == Action::Hold && desired == status_replicas && quiet(state.last_scale_up);
        let choice = placement::choose_move(&placement::MoveInput {
            pods: obs.pods,
            survey: &survey,
            steady,
            weights_prefer_ecs: weights.target.ecs > weights.target.eci,
            rollout_in_progress: obs.rollout_in_progress || weights.changed(),
        });
        match choice {
            Ok(pod) if quiet(state.last_move) => {
                state.last_move = Some(now);
                (
                    vec![pod],
                    format!(
                        "ECS has room for {} more; moving one ECI pod back",
                        survey.ecs_room
                    ),
                )
            }
            Ok(_) => (vec![], "waiting for the rebalance interval".to_string()),
            Err(why) => (vec![], why.to_string()),
        }
    };

    let cost = estimate_cost(policy, obs, &mut state);
    // The phase follows what the load needs now, not the stabilized count: after the peak the
    // count is held for the window while ECI pods wait to drain.
    let needed = lead_answer.or(hpa_answer).unwrap_or(desired).min(desired);
    let phase = if policy.paused {
        Phase::Paused
    } else if why == Why::MissingData {
        Phase::Holding
    } else if survey.eci_pods > 0 && needed > survey.ecs_capacity {
        Phase::Overflow
    } else if survey.eci_pods > 0 {
        Phase::Draining
    } else if expected_eci > 0 {
        Phase::Overflow
    } else {
        Phase::Normal
    };
    let decision = Decision {
        at: now,
        phase,
        replicas: ReplicaPlan {
            current,
            desired,
            action,
            why,
            hpa: hpa_answer,
            lead: lead_answer,
            eci_cap,
            expected_eci,
            reason,
        },
        survey,
        weights,
        deletion_costs,
        moves,
        move_reason,
        cost,
        readings,
    };
    Outcome { decision, state }
}

fn direction(current: i32, desired: i32) -> Action {
    match desired.cmp(&current) {
        std::cmp::Ordering::Greater => Action::ScaleUp,
        std::cmp::Ordering::Less => Action::ScaleDown,
        std::cmp::Ordering::Equal => Action::Hold,
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

fn estimate_cost(
    policy: &ElasticGatewaySpec,
    obs: &Observation<'_>,
    state: &mut EngineState,
) -> CostEstimate {
    let model = &policy.cost;
    let live: Vec<&GatewayPod> = obs.pods.iter().filter(|p| !p.terminating).collect();
    let ecs_nodes: std::collections::HashMap<&str, &Node> = obs
        .nodes
        .iter()
        .filter(|n| n.has_labels(&policy.pools.ecs.node_selector))
        .map(|n| (n.name.as_str(), n))
        .collect();
    let mut ecs = 0.0;
    let mut eci = 0.0;
    for p in &live {
        match p.pool {
            Pool::Ecs => {
                if let Some(node) = p.node.as_deref().and_then(|n| ecs_nodes.get(n)) {
                    ecs += cost::ecs_pod_per_hour(&p.requests, node, model);
                }
            }
            Pool::Eci => eci += cost::eci_pod_per_second(&p.requests, model) * 3600.0,
            Pool::Pending | Pool::Other => {}
        }
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
    // The all-ECS fleet prices each pod as a share of the pool's first node (or a default node).
    let reference = ecs_nodes
        .values()
        .min_by(|a, b| a.name.cmp(&b.name))
        .map(|n| (*n).clone())
        .unwrap_or_else(|| Node {
            allocatable: Resources::new(8000, 32 << 30, 110),
            ..Default::default()
        });
    let per_pod = cost::ecs_pod_per_hour(&obs.pod_requests, &reference, model);
    let all_ecs = f64::from(peak) * per_pod;
    CostEstimate {
        currency: model.currency.clone(),
        ecs_per_hour: ecs,
        eci_per_hour: eci,
        all_ecs_peak_per_hour: all_ecs,
        saving_per_hour: all_ecs - ecs - eci,
    }
}

#[cfg(test)]
mod tests;
