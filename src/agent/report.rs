//! Report: the gateway's conditions and status as pure functions of what was observed, planned
//! and applied ([`conditions`], [`status`]); then the writes (the status when something in it
//! changed, a Warning Event for each condition that turns bad) and the metrics.
//!
//! Status is written by server-side apply under its own field manager, and its conditions are
//! read back from the object, so `lastTransitionTime` survives restarts and leader changes and no
//! Event is sent twice for one transition. Condition messages carry no live values: the status
//! changes only when something does, and the decision's numbers are in status fields, the
//! Events and the metrics.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::Resource;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use serde_json::json;
use tracing::{debug, warn};

use super::apply::Applied;
use super::context::Context;
use super::observe::{CONTEST_QUIET_SECONDS, Hold, Observed};
use crate::act::Planned;
use crate::clock::rfc3339;
use crate::k8s::bounded;
use crate::k8s::target::ReplicaWriter;
use crate::metrics::ErrorKind;
use crate::model::GatewayKey;
use crate::policy::{
    CostStatus, DecisionRecord, ElasticGateway, ElasticGatewaySpec, ElasticGatewayStatus,
    OriginalPlacement, TargetKind,
};

/// The field manager of status writes (server-side apply), apart from the gateway's writes.
pub const STATUS_MANAGER: &str = "spillway-status";

/// What Events and status writes need of the ElasticGateway.
pub struct Subject {
    pub oref: ObjectReference,
    pub generation: Option<i64>,
    pub status: Option<ElasticGatewayStatus>,
    /// Whether the stored object matches the CRD's schema. One that does not (stored under an
    /// older schema) cannot take a server-side apply: the apiserver cannot type it.
    pub typed: bool,
}

impl Subject {
    pub fn of(egw: &ElasticGateway) -> Self {
        Self {
            oref: egw.object_ref(&()),
            generation: egw.metadata.generation,
            status: egw.status.clone(),
            typed: true,
        }
    }

    /// An object that does not decode: its status is not read back.
    pub fn untyped<K: Resource<DynamicType = ()>>(obj: &K) -> Self {
        Self {
            oref: obj.object_ref(&()),
            generation: obj.meta().generation,
            status: None,
            typed: false,
        }
    }
}

/// Reports a decision: metrics from every replica; as the leader, status and Events.
pub async fn report(
    egw: &ElasticGateway,
    subject: &Subject,
    key: &GatewayKey,
    ctx: &Context,
    observed: &Observed,
    planned: &Planned,
    applied: &Applied,
) -> Result<Action, crate::Error> {
    let spec = &egw.spec;
    let (d, now) = (&planned.decision, observed.now);
    ctx.metrics.record_decision(
        key,
        spec,
        &observed.pods,
        observed.fast,
        d,
        &applied.plan,
        planned.seconds,
    );
    let marks = crate::policy::marks::parse(egw.metadata.annotations.as_ref());
    ctx.metrics.record_drills(key, &marks, now);
    ctx.metrics.record_events(key, &d.plans);
    let next = ctx.tick(spec);
    ctx.metrics.reconciled(key, next);
    ctx.metrics.contested(key, !observed.contenders.is_empty());
    ctx.memory.reconciled(key, next);
    let requeue = Action::requeue(next);
    // A follower, or a replica that lost the Lease mid-plan, reports nothing: the leader does.
    if !applied.leading || applied.fenced {
        return Ok(requeue);
    }
    let prev = previous_conditions(subject, ctx, key);
    let conditions = carry_transitions(
        &prev,
        conditions(spec, subject.generation, observed, planned, applied),
        now,
    );
    for c in conditions
        .iter()
        .filter(|c| changed(&prev, c) && turned_bad(c))
    {
        ctx.publish(
            &subject.oref,
            EventType::Warning,
            &c.reason,
            "Observe",
            &c.message,
        )
        .await;
    }
    // Recorded before the first change; the cache may not show it yet.
    let original = egw
        .status
        .as_ref()
        .and_then(|s| s.original.clone())
        .or_else(|| ctx.memory.original(key));
    let status = status(
        egw.status.as_ref(),
        subject.generation,
        observed,
        planned,
        applied,
        conditions,
        original,
    );
    let written = write_status(ctx, subject, key, status).await;
    super::events::report(ctx, &observed.events, &d.plans, now).await;
    match written {
        Ok(()) | Err(crate::Error::Fenced(_)) => Ok(requeue),
        Err(e) => {
            ctx.metrics.error(key, ErrorKind::ApiWrite);
            Err(e)
        }
    }
}

/// Reports a hold: `spillway_held`, the error it counts as, a log line and (as the leader) an
/// Event when it starts, and the `Ready` condition on the status.
pub async fn held(subject: &Subject, key: &GatewayKey, ctx: &Context, hold: Hold) -> Action {
    ctx.metrics.set_held(key, Some(hold.reason));
    ctx.metrics.reconciled(key, hold.requeue);
    ctx.memory.reconciled(key, hold.requeue);
    if let Some(kind) = hold.error {
        ctx.metrics.error(key, kind);
    }
    if hold.quiet {
        debug!(reason = hold.reason, message = %hold.message, "waiting to see before deciding");
        return Action::requeue(hold.requeue);
    }
    let cond = condition(
        "Ready",
        false,
        hold.reason,
        &hold.message,
        subject.generation,
    );
    let prev = previous_conditions(subject, ctx, key);
    let new = changed(&prev, &cond);
    if new {
        warn!(reason = hold.reason, message = %hold.message, "holding: no decision for this gateway");
    } else {
        debug!(reason = hold.reason, "still holding");
    }
    if ctx.is_leader() {
        if new {
            ctx.publish(
                &subject.oref,
                EventType::Warning,
                &cond.reason,
                "Validate",
                &cond.message,
            )
            .await;
        }
        let status = ElasticGatewayStatus {
            observed_generation: subject.generation,
            phase: Some("Holding".into()),
            conditions: carry_transitions(&prev, with_ready(&prev, cond), crate::clock::unix_now()),
            ..subject.status.clone().unwrap_or_default()
        };
        if let Err(e) = write_status(ctx, subject, key, status).await {
            debug!(error = %e, "status write failed");
        }
    }
    Action::requeue(hold.requeue)
}

/// The conditions of a decision (their transition times are set by [`carry_transitions`]).
pub fn conditions(
    spec: &ElasticGatewaySpec,
    generation: Option<i64>,
    observed: &Observed,
    planned: &Planned,
    applied: &Applied,
) -> Vec<Condition> {
    let mut out = vec![metrics_available(generation, observed, planned)];
    out.push(hpa_conflict(generation, &observed.hpas));
    out.push(replicas_contested(generation, &observed.contenders));
    if spec.target.kind == TargetKind::IstioGateway {
        let asm = &observed.target.asm_autoscaling;
        out.push(if asm.is_empty() {
            condition("AsmAutoscaling", false, "NoAsmAutoscaling", "the IstioGateway sets no ASM autoscaling", generation)
        } else {
            let msg = format!(
                "the IstioGateway sets {}: ASM runs an HPA on the gateway; spillway holds the replica count (remove the setting to let spillway scale)",
                asm.join(", ")
            );
            condition("AsmAutoscaling", true, "AsmAutoscalingEnabled", &msg, generation)
        });
    }
    if let Some(c) = pool_spread(spec, generation, observed, planned) {
        out.push(c);
    }
    if !spec.dry_run && !spec.paused {
        out.push(if applied.errors.is_empty() {
            condition(
                "Applied",
                true,
                "WritesSucceeded",
                "every change was applied",
                generation,
            )
        } else {
            let msg = format!(
                "{}; the next decision tries again",
                applied.errors.join("; ")
            );
            condition("Applied", false, "WriteFailed", &msg, generation)
        });
    }
    // No live figures in the message (the status is written only when it changes): the
    // decision's own reason carries them.
    out.push(if planned.decision.replicas.held > 0 {
        let msg = "a scale-in would reset more connections this minute than behavior.resetBudgetPercent allows: part of it waits (the last decision says how much)";
        condition("ScaleInPaced", true, "ResetBudget", msg, generation)
    } else {
        let msg = "no scale-in is held back by the reset budget (behavior.resetBudgetPercent)";
        condition("ScaleInPaced", false, "WithinBudget", msg, generation)
    });
    out.push(if observed.behind {
        let msg = "this decision came more than twice the interval after the last one: the agent is short of reconcile slots (--concurrency) or its calls are slow";
        condition("OnSchedule", false, "Behind", msg, generation)
    } else {
        condition("OnSchedule", true, "OnSchedule", "decisions come every interval", generation)
    });
    out.extend(super::events::gateway_condition(
        &observed.events,
        &planned.decision.plans,
        generation,
    ));
    out.push(ready_condition(spec, generation));
    out
}

fn metrics_available(generation: Option<i64>, observed: &Observed, planned: &Planned) -> Condition {
    let d = &planned.decision;
    let missing: Vec<String> = d
        .readings
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let query = observed.queries.get(i).map_or("", String::as_str);
            r.missing
                .as_ref()
                .map(|why| format!("{} ({query}): {why}", r.metric))
        })
        .collect();
    if missing.is_empty() {
        condition(
            "MetricsAvailable",
            true,
            "QueriesSucceeded",
            "every load query returned a value",
            generation,
        )
    } else {
        let msg = format!(
            "no usable value from {}; spillway holds the replica count",
            missing.join("; ")
        );
        condition("MetricsAvailable", false, "QueryFailed", &msg, generation)
    }
}

/// `PoolSpread`, for a gateway `placement.poolSpread` applies to: the constraints in place, to
/// be written at a quiet time, removed by another writer (not written again: each write rolls
/// the gateway), or undermined by nodes that carry both pools' labels.
fn pool_spread(
    spec: &ElasticGatewaySpec,
    generation: Option<i64>,
    observed: &Observed,
    planned: &Planned,
) -> Option<Condition> {
    let keys = spec.pool_placement_keys();
    if keys.is_empty() {
        return None;
    }
    let d = &planned.decision;
    let keys = if spec.target.kind == TargetKind::IstioGateway {
        format!(
            "a preferred pod affinity to the gateway's own pods on {}",
            keys.join(", ")
        )
    } else {
        format!("soft spread constraints on {}", keys.join(", "))
    };
    Some(if !d.pools_overlap.is_empty() {
        let msg = format!(
            "node(s) {} carry both pools' labels: counted as virtual nodes, but the ECS label puts them among the nodes that {keys} favours, where an empty one draws gateway pods while ECS has room; take the ECS label off them",
            d.pools_overlap.join(", ")
        );
        condition("PoolSpread", false, "VirtualNodeInPool", &msg, generation)
    } else if d.spread_removed {
        let msg = format!(
            "{keys}, which spillway wrote, is gone from the template: another writer replaced it (a controller or a pipeline that applies the whole object); spillway does not write it again, since every write rolls the gateway. Let that writer keep it, then set placement.poolSpread to false and back to true to have spillway write it once more"
        );
        condition(
            "PoolSpread",
            false,
            "RemovedByAnotherWriter",
            &msg,
            generation,
        )
    } else if observed.target.spread.missing {
        let msg = format!(
            "{keys}: to be written with the weights at the next quiet time (load under half the ready capacity, no scale-up for 10 min, no rollout): one rollout"
        );
        condition("PoolSpread", false, "ToBeWritten", &msg, generation)
    } else {
        let msg = format!(
            "{keys} in place: a node without the ECS pool's label does not score on it, so the scheduler keeps the gateway's pods on ECS while it has room"
        );
        condition("PoolSpread", true, "InPlace", &msg, generation)
    })
}

fn hpa_conflict(generation: Option<i64>, hpas: &[String]) -> Condition {
    if hpas.is_empty() {
        condition(
            "HpaConflict",
            false,
            "NoHpa",
            "no HorizontalPodAutoscaler targets the gateway",
            generation,
        )
    } else {
        let msg = format!(
            "HorizontalPodAutoscaler {} also scales the gateway; spillway holds the replica count",
            hpas.join(", ")
        );
        condition("HpaConflict", true, "HpaTargetsGateway", &msg, generation)
    }
}

fn replicas_contested(generation: Option<i64>, contenders: &[ReplicaWriter]) -> Condition {
    if contenders.is_empty() {
        let msg = "nothing but spillway wrote the replica count lately";
        return condition("ReplicasContested", false, "SoleWriter", msg, generation);
    }
    let mut who: Vec<String> = contenders
        .iter()
        .map(|w| match &w.subresource {
            Some(sub) => format!("{} ({sub})", w.manager),
            None => w.manager.clone(),
        })
        .collect();
    who.dedup();
    let msg = format!(
        "field manager {} wrote the replica count in the last {CONTEST_QUIET_SECONDS:.0} s: spillway leaves the count alone while it writes (pause the ElasticGateway to hand the count over for good, or stop the other writer)",
        who.join(", ")
    );
    condition("ReplicasContested", true, "OtherWriter", &msg, generation)
}

/// The Ready condition of a policy spillway acts on: its message says what spillway may do,
/// never the load of the moment.
pub fn ready_condition(spec: &ElasticGatewaySpec, generation: Option<i64>) -> Condition {
    if spec.paused {
        condition(
            "Ready",
            true,
            "Paused",
            "spec.paused is set: spillway observes and reports, and changes nothing",
            generation,
        )
    } else if spec.dry_run {
        condition(
            "Ready",
            true,
            "DryRun",
            "spec.dryRun is set: spillway decides and reports, and changes nothing",
            generation,
        )
    } else {
        condition(
            "Ready",
            true,
            "Deciding",
            "spillway decides for the gateway and applies its decisions",
            generation,
        )
    }
}

/// A condition worth a Warning Event when it turns so.
fn turned_bad(c: &Condition) -> bool {
    (c.type_ == "MetricsAvailable" && c.status == "False")
        || (c.type_ == "HpaConflict" && c.status != "False")
        || (c.type_ == "AsmAutoscaling" && c.status == "True")
        || (c.type_ == "OnSchedule" && c.status == "False")
        || (c.type_ == "ReplicasContested" && c.status == "True")
        || (c.type_ == "PlannedEvents" && c.reason == "PlannedEventsUnavailable")
        || (c.type_ == "PoolSpread"
            && matches!(
                c.reason.as_str(),
                "VirtualNodeInPool" | "RemovedByAnotherWriter"
            ))
}

/// The status after a decision; `original` is how the gateway was before spillway first
/// changed it, and `old` the object's status (kept for the last decision when nothing new was
/// decided).
pub fn status(
    old: Option<&ElasticGatewayStatus>,
    generation: Option<i64>,
    observed: &Observed,
    planned: &Planned,
    applied: &Applied,
    conditions: Vec<Condition>,
    original: Option<OriginalPlacement>,
) -> ElasticGatewayStatus {
    let d = &planned.decision;
    let previous = old.and_then(|s| s.last_decision.clone());
    // A new record when something was applied, or when a change is decided that the last
    // record does not already say (a count held back by an HPA, dry-run): not on every decision,
    // or the status would be written every few seconds for nothing.
    let kind = d.replicas.direction.as_str();
    let wanted = d.replicas.desired != d.replicas.current;
    let said = previous
        .as_ref()
        .is_some_and(|r| r.kind == kind && r.desired == Some(d.replicas.desired));
    let record = (!applied.plan.is_empty() || (wanted && !said)).then(|| DecisionRecord {
        time: rfc3339(observed.now),
        kind: kind.into(),
        reason: d.replicas.reason.clone(),
        desired: Some(d.replicas.desired),
    });
    let learnt = d.relative.source == crate::engine::capacity::Source::Learnt;
    ElasticGatewayStatus {
        eci_relative_capacity: learnt
            .then_some(d.relative.eci)
            .or_else(|| old.and_then(|s| s.eci_relative_capacity)),
        observed_generation: generation,
        phase: Some(d.phase.as_str().into()),
        desired_replicas: d.replicas.desired,
        current_replicas: d.replicas.current,
        ecs_replicas: d.survey.ecs_pods,
        eci_replicas: d.survey.eci_pods,
        ecs_capacity: d.survey.ecs_capacity,
        weights: Some(d.weights.target),
        last_decision: record.or(previous),
        cost_per_hour: Some(CostStatus {
            currency: d.cost.currency.clone(),
            ecs: round(d.cost.ecs_per_hour),
            eci: round(d.cost.eci_per_hour),
            saving: round(d.cost.saving_per_hour),
        }),
        original,
        conditions,
    }
}

/// The previous conditions with `Ready` replaced: a hold says why no decision is made, and
/// leaves what the last decision found (its transition times too) as it was.
fn with_ready(prev: &[Condition], ready: Condition) -> Vec<Condition> {
    let mut next = prev.to_vec();
    match next.iter_mut().find(|c| c.type_ == "Ready") {
        Some(c) => *c = ready,
        None => next.push(ready),
    }
    next
}

/// The conditions as last written: this replica's own write while it has led without a break,
/// otherwise the object's status (after a restart or a leader change).
fn previous_conditions(subject: &Subject, ctx: &Context, key: &GatewayKey) -> Vec<Condition> {
    ctx.memory.written(key).unwrap_or_else(|| {
        subject
            .status
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default()
    })
}

/// Applies the status when it differs from the object's, and remembers its conditions.
async fn write_status(
    ctx: &Context,
    subject: &Subject,
    key: &GatewayKey,
    status: ElasticGatewayStatus,
) -> Result<(), crate::Error> {
    let conditions = status.conditions.clone();
    // An untyped object's status is not read back (it does not decode): what this replica
    // wrote last stands for it, or every reconcile would rewrite it.
    let same_status = subject.status.as_ref() == Some(&status) || !subject.typed;
    let unchanged = same_status && previous_conditions(subject, ctx, key) == conditions;
    if !unchanged && subject.typed {
        apply_status(ctx, key, &status).await?;
    } else if !unchanged {
        merge_status(ctx, key, &status).await?;
    }
    ctx.memory.set_written(key, conditions);
    Ok(())
}

/// Server-side apply of the whole status under [`STATUS_MANAGER`], forced: spillway owns it.
/// Behind the fence too: a forced apply from a replica that lost the Lease would put its older
/// view (replicas, last decision, conditions, `status.original`, which the hand-back restores)
/// over the new leader's.
pub async fn apply_status(
    ctx: &Context,
    key: &GatewayKey,
    status: &ElasticGatewayStatus,
) -> Result<(), crate::Error> {
    ctx.fence("status")?;
    let api = Api::<ElasticGateway>::namespaced(ctx.client.clone(), &key.namespace);
    let body = json!({
        "apiVersion": ElasticGateway::api_version(&()),
        "kind": ElasticGateway::kind(&()),
        "status": status,
    });
    let params = PatchParams::apply(STATUS_MANAGER).force();
    bounded(
        ctx.config.api_timeout,
        api.patch_status(&key.name, &params, &Patch::Apply(&body)),
    )
    .await?;
    Ok(())
}

/// A merge patch of the status, for an object the apiserver cannot type (see [`Subject::typed`]):
/// unlike an apply, an update does not need its managed fields.
async fn merge_status(
    ctx: &Context,
    key: &GatewayKey,
    status: &ElasticGatewayStatus,
) -> Result<(), crate::Error> {
    ctx.fence("status")?;
    // Untyped: the answer is the stored object, which does not decode either.
    let resource = ApiResource::erase::<ElasticGateway>(&());
    let api = Api::<DynamicObject>::namespaced_with(ctx.client.clone(), &key.namespace, &resource);
    let body = json!({ "status": status });
    let (params, patch) = (PatchParams::default(), Patch::Merge(&body));
    bounded(
        ctx.config.api_timeout,
        api.patch_status(&key.name, &params, &patch),
    )
    .await?;
    Ok(())
}

pub fn condition(
    kind: &str,
    ok: bool,
    reason: &str,
    message: &str,
    observed_generation: Option<i64>,
) -> Condition {
    Condition {
        type_: kind.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: message.chars().take(2000).collect(),
        observed_generation,
        last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    }
}

/// A transition worth an Event: a new condition, or a new status or reason.
pub fn changed(prev: &[Condition], c: &Condition) -> bool {
    prev.iter()
        .find(|p| p.type_ == c.type_)
        .is_none_or(|p| p.status != c.status || p.reason != c.reason)
}

/// Keeps `lastTransitionTime` of conditions whose status did not change; stamps `now` on the
/// others.
pub fn carry_transitions(prev: &[Condition], mut next: Vec<Condition>, now: f64) -> Vec<Condition> {
    let now = Time(
        k8s_openapi::jiff::Timestamp::from_second(now as i64)
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    );
    for c in &mut next {
        c.last_transition_time = match prev.iter().find(|p| p.type_ == c.type_) {
            Some(p) if p.status == c.status => p.last_transition_time.clone(),
            _ => now.clone(),
        };
    }
    next
}

fn round(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::act::{self, Plan};
    use crate::engine::EngineState;
    use crate::k8s::target::TargetView;
    use crate::model::{LoadSample, Resources};

    #[test]
    fn transition_times_stay_while_status_holds() {
        let c = |ok, reason, msg| condition("Ready", ok, reason, msg, Some(3));
        let a = carry_transitions(&[], vec![c(true, "Deciding", "x")], 1000.0);
        let b = carry_transitions(&a, vec![c(true, "Deciding", "y")], 2000.0);
        assert_eq!(a[0].last_transition_time, b[0].last_transition_time);
        assert_eq!(b[0].observed_generation, Some(3));
        let c2 = carry_transitions(&b, vec![c(false, "TargetNotFound", "z")], 3000.0);
        assert_ne!(b[0].last_transition_time, c2[0].last_transition_time);
        assert_eq!(c2[0].last_transition_time.0.as_second(), 3000);
        assert!(changed(&b, &c2[0]));
        assert!(!changed(&a, &b[0]));
    }

    /// After a restart, the previous conditions come from the object: same transition time, and
    /// nothing counts as changed (so no Event is sent again).
    #[test]
    fn conditions_read_back_from_status_survive_a_restart() {
        let first = carry_transitions(
            &[],
            vec![condition(
                "MetricsAvailable",
                false,
                "QueryFailed",
                "m",
                Some(1),
            )],
            1000.0,
        );
        // Round trip through the API's JSON, as the restarted replica reads it.
        let mut egw = ElasticGateway::scenario_default();
        egw.status = Some(ElasticGatewayStatus {
            conditions: first.clone(),
            ..Default::default()
        });
        let read: ElasticGateway =
            serde_json::from_value(serde_json::to_value(&egw).unwrap()).unwrap();
        let prev = read.status.unwrap().conditions;
        let again = carry_transitions(
            &prev,
            vec![condition(
                "MetricsAvailable",
                false,
                "QueryFailed",
                "m",
                Some(2),
            )],
            5000.0,
        );
        assert_eq!(again[0].last_transition_time, first[0].last_transition_time);
        assert!(!changed(&prev, &again[0]));
    }

    /// A hold replaces `Ready` and keeps what the last decision found, transition times too.
    #[test]
    fn a_hold_keeps_the_other_conditions() {
        let prev = carry_transitions(
            &[],
            vec![
                condition("MetricsAvailable", false, "QueryFailed", "m", Some(1)),
                condition("Ready", true, "Deciding", "r", Some(1)),
            ],
            1000.0,
        );
        let hold = condition("Ready", false, "WatchFailing", "w", Some(1));
        let next = carry_transitions(&prev, with_ready(&prev, hold), 2000.0);
        assert_eq!(next.len(), 2);
        assert_eq!(next[0], prev[0], "MetricsAvailable kept as it was");
        assert_eq!(next[1].reason, "WatchFailing");
        assert_eq!(next[1].last_transition_time.0.as_second(), 2000);
        let once_more = with_ready(
            &next,
            condition("Ready", false, "WatchFailing", "w", Some(1)),
        );
        assert_eq!(carry_transitions(&next, once_more, 3000.0), next);
    }

    #[test]
    fn ready_says_what_spillway_may_do_without_live_values() {
        let mut spec = ElasticGateway::scenario_default().spec;
        assert_eq!(ready_condition(&spec, None).reason, "Deciding");
        spec.dry_run = true;
        assert_eq!(ready_condition(&spec, None).reason, "DryRun");
        spec.paused = true;
        assert_eq!(ready_condition(&spec, None).reason, "Paused");
    }

    /// What a reconcile saw: the built-in policy's one metric, a Deployment at 4 replicas.
    fn observed(load: LoadSample, hpas: Vec<String>, asm: &[&str]) -> Observed {
        Observed {
            now: 1_800_000_000.0,
            target: TargetView {
                replicas: 4,
                pod_requests: Resources::pod(2000, 2 << 30),
                weights: None,
                rollout_in_progress: false,
                selector: kube::core::Selector::from_iter([("app".to_string(), "gw".to_string())]),
                preferred_terms: vec![],
                asm_autoscaling: asm.iter().map(|s| s.to_string()).collect(),
                uid: Some("u-1".into()),
                replica_writers: vec![],
                generation: Some(1),
                spread: crate::k8s::target::PoolSpread::default(),
            },
            hpas,
            queries: vec!["sum(load)".into()],
            loads: vec![load],
            pods: vec![],
            fast: None,
            pool_usage: None,
            behind: false,
            contenders: vec![],
            events: crate::agent::events::seen_events(
                crate::k8s::index::PlannedSeen::Listed,
                vec![],
                &crate::policy::ElasticGateway::scenario_default().spec,
                0.0,
            ),
        }
    }

    /// `(type, status, reason)` of each condition.
    fn summary(c: &[Condition]) -> Vec<(String, String, String)> {
        c.iter()
            .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone()))
            .collect()
    }

    /// The conditions are a pure function of the spec, the observation, the plan and what was
    /// applied: one row per situation a user meets.
    #[test]
    fn conditions_table() {
        let ok = || LoadSample::Total(2000.0);
        let missing = || LoadSample::Missing("empty result".into());
        let applied_ok = Applied::default();
        let refused = Applied {
            errors: vec!["scaling the gateway failed: 403".into()],
            ..Applied::default()
        };
        type Case<'a> = (
            &'a str,
            fn(&mut ElasticGatewaySpec),
            Observed,
            &'a Applied,
            &'a [(&'a str, &'a str, &'a str)],
        );
        let cases: Vec<Case> = vec![
            (
                "deciding",
                |_| {},
                observed(ok(), vec![], &[]),
                &applied_ok,
                &[
                    ("MetricsAvailable", "True", "QueriesSucceeded"),
                    ("HpaConflict", "False", "NoHpa"),
                    ("ReplicasContested", "False", "SoleWriter"),
                    ("Applied", "True", "WritesSucceeded"),
                    ("ScaleInPaced", "False", "WithinBudget"),
                    ("OnSchedule", "True", "OnSchedule"),
                    ("Ready", "True", "Deciding"),
                ],
            ),
            (
                "a metric missing",
                |_| {},
                observed(missing(), vec![], &[]),
                &applied_ok,
                &[
                    ("MetricsAvailable", "False", "QueryFailed"),
                    ("HpaConflict", "False", "NoHpa"),
                    ("ReplicasContested", "False", "SoleWriter"),
                    ("Applied", "True", "WritesSucceeded"),
                    ("ScaleInPaced", "False", "WithinBudget"),
                    ("OnSchedule", "True", "OnSchedule"),
                    ("Ready", "True", "Deciding"),
                ],
            ),
            (
                "an HPA",
                |_| {},
                observed(ok(), vec!["gw-hpa".into()], &[]),
                &applied_ok,
                &[
                    ("MetricsAvailable", "True", "QueriesSucceeded"),
                    ("HpaConflict", "True", "HpaTargetsGateway"),
                    ("ReplicasContested", "False", "SoleWriter"),
                    ("Applied", "True", "WritesSucceeded"),
                    ("ScaleInPaced", "False", "WithinBudget"),
                    ("OnSchedule", "True", "OnSchedule"),
                    ("Ready", "True", "Deciding"),
                ],
            ),
            (
                "a write refused",
                |_| {},
                observed(ok(), vec![], &[]),
                &refused,
                &[
                    ("MetricsAvailable", "True", "QueriesSucceeded"),
                    ("HpaConflict", "False", "NoHpa"),
                    ("ReplicasContested", "False", "SoleWriter"),
                    ("Applied", "False", "WriteFailed"),
                    ("ScaleInPaced", "False", "WithinBudget"),
                    ("OnSchedule", "True", "OnSchedule"),
                    ("Ready", "True", "Deciding"),
                ],
            ),
            (
                "dry-run",
                |s| s.dry_run = true,
                observed(ok(), vec![], &[]),
                &applied_ok,
                &[
                    ("MetricsAvailable", "True", "QueriesSucceeded"),
                    ("HpaConflict", "False", "NoHpa"),
                    ("ReplicasContested", "False", "SoleWriter"),
                    ("ScaleInPaced", "False", "WithinBudget"),
                    ("OnSchedule", "True", "OnSchedule"),
                    ("Ready", "True", "DryRun"),
                ],
            ),
            (
                "paused",
                |s| s.paused = true,
                observed(ok(), vec![], &[]),
                &applied_ok,
                &[
                    ("MetricsAvailable", "True", "QueriesSucceeded"),
                    ("HpaConflict", "False", "NoHpa"),
                    ("ReplicasContested", "False", "SoleWriter"),
                    ("ScaleInPaced", "False", "WithinBudget"),
                    ("OnSchedule", "True", "OnSchedule"),
                    ("Ready", "True", "Paused"),
                ],
            ),
            (
                "another writer",
                |_| {},
                Observed {
                    contenders: vec![ReplicaWriter {
                        manager: "kubectl".into(),
                        operation: "Update".into(),
                        subresource: Some("scale".into()),
                        at: Some(1_799_999_990.0),
                    }],
                    ..observed(ok(), vec![], &[])
                },
                &applied_ok,
                &[
                    ("MetricsAvailable", "True", "QueriesSucceeded"),
                    ("HpaConflict", "False", "NoHpa"),
                    ("ReplicasContested", "True", "OtherWriter"),
                    ("Applied", "True", "WritesSucceeded"),
                    ("ScaleInPaced", "False", "WithinBudget"),
                    ("OnSchedule", "True", "OnSchedule"),
                    ("Ready", "True", "Deciding"),
                ],
            ),
            (
                "behind",
                |_| {},
                Observed {
                    behind: true,
                    ..observed(ok(), vec![], &[])
                },
                &applied_ok,
                &[
                    ("MetricsAvailable", "True", "QueriesSucceeded"),
                    ("HpaConflict", "False", "NoHpa"),
                    ("ReplicasContested", "False", "SoleWriter"),
                    ("Applied", "True", "WritesSucceeded"),
                    ("ScaleInPaced", "False", "WithinBudget"),
                    ("OnSchedule", "False", "Behind"),
                    ("Ready", "True", "Deciding"),
                ],
            ),
            (
                "ASM autoscaling",
                |s| s.target.kind = TargetKind::IstioGateway,
                observed(ok(), vec![], &["cpu.targetAverageUtilization=80"]),
                &applied_ok,
                &[
                    ("MetricsAvailable", "True", "QueriesSucceeded"),
                    ("HpaConflict", "False", "NoHpa"),
                    ("ReplicasContested", "False", "SoleWriter"),
                    ("AsmAutoscaling", "True", "AsmAutoscalingEnabled"),
                    ("Applied", "True", "WritesSucceeded"),
                    ("ScaleInPaced", "False", "WithinBudget"),
                    ("OnSchedule", "True", "OnSchedule"),
                    ("Ready", "True", "Deciding"),
                ],
            ),
            (
                "an IstioGateway without",
                |s| s.target.kind = TargetKind::IstioGateway,
                observed(ok(), vec![], &[]),
                &applied_ok,
                &[
                    ("MetricsAvailable", "True", "QueriesSucceeded"),
                    ("HpaConflict", "False", "NoHpa"),
                    ("ReplicasContested", "False", "SoleWriter"),
                    ("AsmAutoscaling", "False", "NoAsmAutoscaling"),
                    ("Applied", "True", "WritesSucceeded"),
                    ("ScaleInPaced", "False", "WithinBudget"),
                    ("OnSchedule", "True", "OnSchedule"),
                    ("Ready", "True", "Deciding"),
                ],
            ),
        ];
        for (name, edit, obs, applied, want) in cases {
            let mut spec = ElasticGateway::scenario_default().spec;
            spec.target.kind = TargetKind::Deployment;
            // Its own rows below.
            spec.placement.pool_spread = false;
            edit(&mut spec);
            let planned = act::plan(
                &spec,
                &obs.observation(&[], 0),
                &EngineState::default(),
                obs.scope(),
            );
            let got = summary(&conditions(&spec, Some(7), &obs, &planned, applied));
            let want: Vec<_> = want
                .iter()
                .map(|(t, s, r)| (t.to_string(), s.to_string(), r.to_string()))
                .collect();
            assert_eq!(got, want, "{name}");
        }
    }

    /// `PoolSpread` for a Deployment gateway: in place, to be written, removed by another
    /// writer, undermined by a node carrying both pools' labels (the worst one shows, and the
    /// last two turn into Warning Events).
    #[test]
    fn the_pool_spread_condition_says_what_stands() {
        let mut spec = ElasticGateway::scenario_default().spec;
        spec.target.kind = TargetKind::Deployment;
        let obs = observed(LoadSample::Total(2000.0), vec![], &[]);
        let plan = |obs: &Observed| {
            act::plan(
                &spec,
                &obs.observation(&[], 0),
                &EngineState::default(),
                obs.scope(),
            )
        };
        let of = |obs: &Observed, planned: &Planned| {
            let c = pool_spread(&spec, Some(3), obs, planned).unwrap();
            (
                c.status.clone(),
                c.reason.clone(),
                turned_bad(&c),
                c.message,
            )
        };
        let (status, reason, bad, _) = of(&obs, &plan(&obs));
        assert_eq!(
            (status.as_str(), reason.as_str(), bad),
            ("True", "InPlace", false)
        );
        let mut missing = observed(LoadSample::Total(2000.0), vec![], &[]);
        missing.target.spread.missing = true;
        let (status, reason, bad, _) = of(&missing, &plan(&missing));
        assert_eq!(
            (status.as_str(), reason.as_str(), bad),
            ("False", "ToBeWritten", false)
        );
        let mut removed = plan(&missing);
        removed.decision.spread_removed = true;
        let (_, reason, bad, msg) = of(&missing, &removed);
        assert_eq!((reason.as_str(), bad), ("RemovedByAnotherWriter", true));
        assert!(msg.contains("does not write it again"), "{msg}");
        removed.decision.pools_overlap = vec!["virtual-kubelet-a".into()];
        let (_, reason, bad, msg) = of(&missing, &removed);
        assert_eq!((reason.as_str(), bad), ("VirtualNodeInPool", true));
        assert!(msg.contains("virtual-kubelet-a"), "{msg}");
        // An IstioGateway: the pod affinity; off: no such condition.
        let planned = plan(&obs);
        let mut istio = spec.clone();
        istio.target.kind = TargetKind::IstioGateway;
        let c = pool_spread(&istio, Some(3), &obs, &planned).unwrap();
        assert!(c.message.contains("pod affinity"), "{}", c.message);
        let mut off = spec.clone();
        off.placement.pool_spread = false;
        assert!(pool_spread(&off, Some(3), &obs, &planned).is_none());
    }

    /// The status is a pure function too: the decision's numbers, the last decision kept when
    /// nothing new was decided, `status.original` as given.
    #[test]
    fn status_from_a_decision() {
        let spec = ElasticGateway::scenario_default().spec;
        let obs = observed(LoadSample::Total(2000.0), vec![], &[]);
        let planned = act::plan(
            &spec,
            &obs.observation(&[], 0),
            &EngineState::default(),
            obs.scope(),
        );
        let old = ElasticGatewayStatus {
            last_decision: Some(DecisionRecord {
                time: "2026-01-01T00:00:00Z".into(),
                kind: "scale_up".into(),
                reason: "earlier".into(),
                desired: Some(9),
            }),
            ..Default::default()
        };
        let original = Some(OriginalPlacement {
            preferred_terms: vec![],
            target_uid: Some("u-1".into()),
        });
        let s = status(
            Some(&old),
            Some(7),
            &obs,
            &planned,
            &Applied::default(),
            vec![],
            original.clone(),
        );
        let d = &planned.decision;
        assert_eq!(
            (s.desired_replicas, s.current_replicas),
            (d.replicas.desired, 4)
        );
        assert_eq!(s.observed_generation, Some(7));
        assert_eq!(s.original, original);
        if d.replicas.desired == d.replicas.current {
            assert_eq!(s.last_decision, old.last_decision);
        } else {
            let time = s.last_decision.as_ref().map(|r| r.time.clone());
            assert_eq!(time, Some(crate::clock::rfc3339(obs.now)));
        }
        let applied = Applied {
            plan: Plan {
                replicas: Some(9),
                ..Plan::default()
            },
            ..Applied::default()
        };
        let s = status(Some(&old), Some(7), &obs, &planned, &applied, vec![], None);
        let record = s.last_decision.unwrap();
        assert_eq!(record.time, crate::clock::rfc3339(obs.now));
        assert_eq!(record.kind, d.replicas.direction.as_str());
    }

    /// A change decided but not made (an HPA holds the count, dry-run) is recorded once, not
    /// on every decision: the status is not rewritten every few seconds for nothing.
    #[test]
    fn a_held_change_is_recorded_once() {
        let spec = ElasticGateway::scenario_default().spec;
        let obs = observed(LoadSample::Total(8000.0), vec!["gw-hpa".into()], &[]);
        let planned = act::plan(
            &spec,
            &obs.observation(&[], 0),
            &EngineState::default(),
            obs.scope(),
        );
        assert_ne!(
            planned.decision.replicas.desired,
            planned.decision.replicas.current
        );
        assert!(planned.plan.replicas.is_none(), "the HPA holds the count");
        let nothing = Applied::default();
        let first = status(None, Some(7), &obs, &planned, &nothing, vec![], None);
        let record = first.last_decision.clone().unwrap();
        assert_eq!(record.desired, Some(planned.decision.replicas.desired));
        let mut later = observed(LoadSample::Total(8000.0), vec!["gw-hpa".into()], &[]);
        later.now += 30.0;
        let again = status(
            Some(&first),
            Some(7),
            &later,
            &planned,
            &nothing,
            vec![],
            None,
        );
        assert_eq!(again.last_decision, first.last_decision);
    }
}
