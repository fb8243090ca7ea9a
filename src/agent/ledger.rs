//! The agent's side of the ECS ledger ([`crate::act::ledger`]): each decision reads the slots
//! the other gateways claimed and claims its own, under the cluster index's lock.

use super::context::Context;
use super::observe::Observed;
use crate::act::ledger::monotonic_now;
use crate::act::{self, Planned};
use crate::engine::EngineState;
use crate::model::GatewayKey;
use crate::policy::ElasticGateway;

/// The plan for one gateway, against the ledger: the decision sees the slots others claimed,
/// and claims what it counts on, in one step under the index's lock (no two decisions read the
/// ledger before either writes it).
pub fn plan(
    egw: &ElasticGateway,
    key: &GatewayKey,
    ctx: &Context,
    observed: &Observed,
    prev: &EngineState,
) -> Planned {
    let (spec, pool) = (&egw.spec, &egw.spec.pools.ecs.node_selector);
    ctx.with_nodes(|nodes| {
        let claimed = ctx.ledger.elsewhere(key, pool, nodes, monotonic_now());
        let planned = act::plan(
            spec,
            &observed.observation(nodes, claimed),
            prev,
            observed.scope(),
        );
        let d = &planned.decision;
        let count = planned.plan.replicas.unwrap_or(d.replicas.current);
        ctx.ledger
            .claim(key, pool, d.ecs_claim(count), monotonic_now());
        ctx.metrics.claimed_elsewhere(key, claimed);
        planned
    })
}

/// After the writes: the claim of the count that stands (a scale that was not made claims
/// nothing more than the current count does).
pub fn settle(
    egw: &ElasticGateway,
    key: &GatewayKey,
    ctx: &Context,
    planned: &Planned,
    applied: Option<i32>,
) {
    let count = applied.unwrap_or(planned.decision.replicas.current);
    let pool = &egw.spec.pools.ecs.node_selector;
    ctx.ledger.claim(
        key,
        pool,
        planned.decision.ecs_claim(count),
        monotonic_now(),
    );
}
