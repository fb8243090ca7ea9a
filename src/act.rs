//! One step of an elastic gateway, shared by the live agent and the drill: [`plan`] runs the
//! engine on an observation and turns its decision into the changes to make; [`commit`] keeps
//! in the engine's memory only what was applied. The agent applies the plan through the API
//! server, the drill to its simulated cluster; both take this whole step, not only
//! [`engine::decide`].

use serde::{Deserialize, Serialize};

pub mod ledger;

use crate::engine::{self, Decision, EngineState, Observation};
use crate::policy::{ElasticGatewaySpec, PoolWeights};

/// The changes to make, in the order to make them: pod deletion costs first (so a scale-in
/// that follows already removes ECI pods first), then replicas, weights, evictions.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub deletion_costs: Vec<(String, i32)>,
    pub replicas: Option<i32>,
    pub weights: Option<PoolWeights>,
    pub evictions: Vec<String>,
}

impl Plan {
    /// Nothing in dry-run mode (the decision is still reported); otherwise what changed.
    pub fn from_decision(policy: &ElasticGatewaySpec, d: &Decision) -> Self {
        if policy.dry_run || policy.paused {
            return Self::default();
        }
        Self {
            deletion_costs: d.deletion_costs.clone(),
            replicas: (d.replicas.desired != d.replicas.current).then_some(d.replicas.desired),
            weights: (d.weights.changed() || d.adopt_spread).then_some(d.weights.target),
            evictions: d.moves.clone(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.deletion_costs.is_empty()
            && self.replicas.is_none()
            && self.weights.is_none()
            && self.evictions.is_empty()
    }
}

/// What this step may change, beyond what the policy says (dry-run, paused).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    /// Another autoscaler owns the replica count (an HPA on the workload, ASM's autoscaling on
    /// the IstioGateway): the count is left alone, the rest is planned.
    pub replicas_held: bool,
    /// Only the replica count is set: the drill's `hpa` baseline, which places nothing.
    pub replicas_only: bool,
}

/// A decision and the changes it asks for.
#[derive(Clone, Debug)]
pub struct Planned {
    pub decision: Decision,
    pub plan: Plan,
    /// Wall-clock seconds the engine took (for `spillway_decision_duration_seconds`).
    pub seconds: f64,
    /// The engine's memory as if the whole decision were applied; [`commit`] corrects it.
    next: EngineState,
}

/// Decides for `obs` from the memory `prev`, and plans the changes within `scope`.
pub fn plan(
    policy: &ElasticGatewaySpec,
    obs: &Observation<'_>,
    prev: &EngineState,
    scope: Scope,
) -> Planned {
    let started = std::time::Instant::now();
    let out = engine::decide(policy, obs, prev);
    let seconds = started.elapsed().as_secs_f64();
    let mut plan = Plan::from_decision(policy, &out.decision);
    if scope.replicas_only {
        plan = Plan {
            replicas: plan.replicas,
            ..Plan::default()
        };
    }
    if scope.replicas_held {
        plan.replicas = None;
    }
    Planned {
        decision: out.decision,
        plan,
        seconds,
        next: out.state,
    }
}

/// The engine's next memory, minus what was decided but not applied. The engine records a
/// scale, a weight change or a move when it decides one (so that rate limits and intervals
/// count from it); a change that was not made (a failed call, another autoscaler holding the
/// count, a replica that does not lead, a baseline that does not place) must not count, or a
/// refused write would block the retry for the length of a rate-limit period. Dry-run keeps the
/// record: it shows what would happen. Takes the memory out of `planned` (call it once).
pub fn commit(
    prev: &EngineState,
    planned: &mut Planned,
    policy: &ElasticGatewaySpec,
    applied: &Plan,
) -> EngineState {
    let mut next = std::mem::take(&mut planned.next);
    if policy.dry_run {
        return next;
    }
    let d = &planned.decision;
    if d.replicas.desired != d.replicas.current && applied.replicas != Some(d.replicas.desired) {
        next.hpa.events = prev.hpa.events.clone();
        next.last_scale_up = prev.last_scale_up;
        // A scale-in not made removes nobody it chose: nothing to check, nothing reset (an
        // earlier scale-in's victims, carried, still wait for the ReplicaSet).
        next.victims.retain(|v| !d.victims.contains(v));
        next.victims_target = prev.victims_target;
        next.victims_at = prev.victims_at;
        next.resets = prev.resets.clone();
    }
    if d.weights.changed() && applied.weights != Some(d.weights.target) {
        next.weights.last_change = prev.weights.last_change;
        next.weights.changes = prev.weights.changes;
    }
    if d.adopt_spread && applied.weights != Some(d.weights.target) {
        next.spread = prev.spread;
    }
    if !d.moves.is_empty() && applied.evictions.is_empty() {
        next.last_move = prev.last_move;
    }
    next
}
