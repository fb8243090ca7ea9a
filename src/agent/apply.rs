//! Apply: the plan's writes in order (deletion costs, replicas, weights, evictions), each
//! behind the Lease fence and bounded by the API timeout. Before the first change to a gateway,
//! how it was (its preferred affinity terms) is recorded in `status.original`, so that deleting
//! the policy can hand it back. Each failed write is logged, counted and announced (one Event
//! per kind of write, not one per pod), and the next decision, from a fresh observation, tries
//! again: the writes are absolute.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use kube::runtime::events::EventType;
use tracing::{debug, info, warn};

use super::context::Context;
use super::observe::Observed;
use super::report;
use crate::act::{Plan, Planned};
use crate::k8s::leader::Fenced;
use crate::k8s::{bounded, is_status, target};
use crate::metrics::ErrorKind;
use crate::model::GatewayKey;
use crate::policy::{ElasticGateway, ElasticGatewayStatus, OriginalPlacement, PoolWeights};

/// What [`apply`] did: what was applied, what failed, and whether the fence stopped it (then
/// the rest of the plan was dropped, and the replica reports nothing: the new leader does).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Applied {
    pub plan: Plan,
    pub errors: Vec<String>,
    pub fenced: bool,
    /// This replica decided as the leader: it reports the decision (every write, the status's
    /// too, still passes the fence).
    pub leading: bool,
}

impl Applied {
    fn fenced(plan: Plan, errors: Vec<String>) -> Self {
        Self {
            plan,
            errors,
            fenced: true,
            leading: true,
        }
    }
}

/// Applies the plan when this replica decided as the leader (`leading`, read once at the start
/// of the reconcile); a follower applies nothing.
pub async fn apply(
    egw: &ElasticGateway,
    key: &GatewayKey,
    ctx: &Context,
    leading: bool,
    observed: &Observed,
    planned: &Planned,
) -> Result<Applied, crate::Error> {
    if !leading {
        return Ok(Applied::default());
    }
    let plan = &planned.plan;
    if !plan.is_empty() && egw.status.as_ref().is_none_or(|s| s.original.is_none()) {
        match record_original(egw, key, ctx, observed).await {
            Ok(()) => {}
            // Not leading long enough: no plan, no report; the next decision starts afresh.
            Err(crate::Error::Fenced(_)) => return Ok(Applied::fenced(Plan::default(), vec![])),
            Err(e) => {
                ctx.metrics.error(key, ErrorKind::ApiWrite);
                return Err(e);
            }
        }
    }
    let oref = egw.object_ref(&());
    let mut applied = Plan::default();
    let mut errors = vec![];
    let Ok(unmarked) = deletion_costs(ctx, &oref, key, plan, &mut applied, &mut errors).await
    else {
        return Ok(Applied::fenced(applied, errors));
    };
    let d = &planned.decision;
    if let Some(held) = scale_in_held(d.replicas.current, plan.replicas, &d.victims, &unmarked) {
        errors.push(held);
    } else if let Some(r) = plan.replicas {
        match scale(egw, ctx, &oref, key, planned, r).await {
            Err(_) => return Ok(Applied::fenced(applied, errors)),
            Ok(Ok(())) => {
                applied.replicas = Some(r);
                ctx.memory.count_written(key, r);
            }
            Ok(Err(msg)) => errors.push(msg),
        }
    }
    if let Some(w) = plan.weights {
        match weights(egw, ctx, &oref, key, observed, planned, w).await {
            Err(_) => return Ok(Applied::fenced(applied, errors)),
            Ok(Ok(())) => applied.weights = Some(w),
            Ok(Err(msg)) => errors.push(msg),
        }
    }
    for pod in &plan.evictions {
        match evict(ctx, &oref, key, planned, pod).await {
            Err(_) => return Ok(Applied::fenced(applied, errors)),
            Ok(Ok(true)) => applied.evictions.push(pod.clone()),
            Ok(Ok(false)) => {}
            Ok(Err(msg)) => errors.push(msg),
        }
    }
    Ok(Applied {
        plan: applied,
        errors,
        fenced: false,
        leading: true,
    })
}

/// Records how the gateway was before spillway's first change, in `status.original`.
async fn record_original(
    egw: &ElasticGateway,
    key: &GatewayKey,
    ctx: &Context,
    observed: &Observed,
) -> Result<(), crate::Error> {
    let original = OriginalPlacement {
        preferred_terms: observed.target.preferred_terms.clone(),
        target_uid: observed.target.uid.clone(),
    };
    let status = ElasticGatewayStatus {
        original: Some(original.clone()),
        ..egw.status.clone().unwrap_or_default()
    };
    report::apply_status(ctx, key, &status).await?;
    ctx.memory.set_original(key, original);
    Ok(())
}

/// The deletion costs, one pod at a time; one Event for those set and one for those refused.
async fn deletion_costs(
    ctx: &Context,
    oref: &ObjectReference,
    key: &GatewayKey,
    plan: &Plan,
    applied: &mut Plan,
    errors: &mut Vec<String>,
) -> Result<Vec<String>, Fenced> {
    let ns = key.namespace.as_str();
    let mut failed: Vec<(String, kube::Error)> = vec![];
    for (pod, cost) in &plan.deletion_costs {
        let write = fenced_write(ctx, "deletion_cost", true, || {
            target::set_deletion_cost(&ctx.client, ns, pod, *cost)
        });
        match write.await? {
            Ok(()) => applied.deletion_costs.push((pod.clone(), *cost)),
            // A pod that vanished needs no cost.
            Err(e) if is_status(&e, 404) => {}
            Err(e) => failed.push((pod.clone(), e)),
        }
    }
    if !applied.deletion_costs.is_empty() {
        let eci = applied
            .deletion_costs
            .iter()
            .filter(|(_, c)| *c < 0)
            .count();
        let note = format!(
            "set pod-deletion-cost on {} pods ({eci} on ECI first to go)",
            applied.deletion_costs.len()
        );
        ctx.publish(
            oref,
            EventType::Normal,
            "DeletionCostsSet",
            "Annotate",
            &note,
        )
        .await;
    }
    if let Some((pod, e)) = failed.first() {
        let what = if failed.len() == 1 {
            format!("annotating pod {pod}")
        } else {
            format!("annotating {} pods (first: {pod})", failed.len())
        };
        for (_, e) in &failed[1..] {
            ctx.metrics.error(key, error_kind(e));
        }
        errors.push(write_failed(ctx, oref, key, "Annotate", &what, e).await);
    }
    Ok(failed.into_iter().map(|(pod, _)| pod).collect())
}

/// Why the count `replicas` (from `current`) is not written this time, if it is not: a pod the
/// scale-in chose (`victims`) whose victim's cost could not be written (`unmarked`) would stay,
/// and the ReplicaSet would remove another in its place, one the choice kept for its
/// connections. The next decision chooses again.
fn scale_in_held(
    current: i32,
    replicas: Option<i32>,
    victims: &[String],
    unmarked: &[String],
) -> Option<String> {
    let to = replicas.filter(|r| *r < current)?;
    let missing: Vec<&str> = victims
        .iter()
        .filter(|v| unmarked.contains(v))
        .map(String::as_str)
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "scale-in to {to} held: the deletion cost of {} could not be written, so the ReplicaSet would remove other pods",
            missing.join(", ")
        )
    })
}

/// The replica count; `Ok(Err(message))` when the write failed.
async fn scale(
    egw: &ElasticGateway,
    ctx: &Context,
    oref: &ObjectReference,
    key: &GatewayKey,
    planned: &Planned,
    replicas: i32,
) -> Result<Result<(), String>, Fenced> {
    let (spec, ns) = (&egw.spec, key.namespace.as_str());
    let target_client = ctx.target_client(spec);
    let write = fenced_write(ctx, "scale", true, || {
        target::scale(target_client, &ctx.client, ns, spec, replicas, false)
    });
    let d = &planned.decision;
    Ok(match write.await? {
        Ok(()) => {
            let reason = if replicas > d.replicas.current {
                "ScaledUp"
            } else {
                "ScaledDown"
            };
            let note = format!(
                "{} → {} replicas: {}",
                d.replicas.current, replicas, d.replicas.reason
            );
            info!(%note, "scaled");
            ctx.publish(oref, EventType::Normal, reason, "Scale", &note)
                .await;
            Ok(())
        }
        Err(e) => {
            let what = forbidden_hint("scaling the gateway", &e, egw, key);
            Err(write_failed(ctx, oref, key, "Scale", &what, &e).await)
        }
    })
}

/// Applies the preferred weights, with the pool spread constraints the template holds (all of
/// them when the engine adopts the spread with this write).
async fn weights(
    egw: &ElasticGateway,
    ctx: &Context,
    oref: &ObjectReference,
    key: &GatewayKey,
    observed: &Observed,
    planned: &Planned,
    w: PoolWeights,
) -> Result<Result<(), String>, Fenced> {
    let client = ctx.target_client(&egw.spec);
    let ns = key.namespace.as_str();
    let d = &planned.decision;
    let spread = observed
        .target
        .spread
        .carried(d.adopt_spread || d.spread_unseen);
    let write = fenced_write(ctx, "weights", true, || {
        target::apply_weights(client, ns, &egw.spec, w, spread)
    });
    Ok(match write.await? {
        Ok(()) => {
            let note = &planned.decision.weights.reason;
            ctx.publish(
                oref,
                EventType::Normal,
                "WeightsChanged",
                "ApplyAffinity",
                note,
            )
            .await;
            Ok(())
        }
        Err(e) => {
            let what = forbidden_hint("applying the affinity weights", &e, egw, key);
            Err(write_failed(ctx, oref, key, "ApplyAffinity", &what, &e).await)
        }
    })
}

/// One eviction; `Ok(Ok(false))` when a PodDisruptionBudget says not now (the next quiet
/// decision may try again).
async fn evict(
    ctx: &Context,
    oref: &ObjectReference,
    key: &GatewayKey,
    planned: &Planned,
    pod: &str,
) -> Result<Result<bool, String>, Fenced> {
    let ns = key.namespace.as_str();
    let write = fenced_write(ctx, "eviction", false, || {
        target::evict(&ctx.client, ns, pod)
    });
    Ok(match write.await? {
        Ok(()) => {
            let note = format!("evicted {pod} from ECI: {}", planned.decision.move_reason);
            ctx.publish(oref, EventType::Normal, "MovedToEcs", "Evict", &note)
                .await;
            Ok(true)
        }
        Err(e) if is_status(&e, 429) => {
            let note = format!("a PodDisruptionBudget forbids evicting {pod} now");
            ctx.publish(oref, EventType::Normal, "MoveBlocked", "Evict", &note)
                .await;
            Ok(false)
        }
        Err(e) => Err(write_failed(ctx, oref, key, "Evict", &format!("evicting {pod}"), &e).await),
    })
}

/// One write behind the fence ([`Context::fence`]), bounded by `api_timeout`. With
/// `retry_conflict`, a 409 is retried once, behind the fence again.
pub async fn fenced_write<F, Fut>(
    ctx: &Context,
    write: &str,
    retry_conflict: bool,
    mut call: F,
) -> Result<Result<(), kube::Error>, Fenced>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), kube::Error>>,
{
    let t = ctx.config.api_timeout;
    ctx.fence(write)?;
    match bounded(t, call()).await {
        Err(e) if retry_conflict && is_status(&e, 409) => {
            debug!(error = %e, "conflict; retrying once");
            ctx.fence(write)?;
            Ok(bounded(t, call()).await)
        }
        other => Ok(other),
    }
}

/// `what`, and when the API server refused it for RBAC, what to grant.
fn forbidden_hint(what: &str, e: &kube::Error, egw: &ElasticGateway, key: &GatewayKey) -> String {
    if is_status(e, 403) {
        let hint = target::rbac_hint(&egw.spec, &key.namespace);
        format!("{what} (forbidden: {hint})")
    } else {
        what.to_string()
    }
}

fn error_kind(e: &kube::Error) -> ErrorKind {
    if is_status(e, 409) {
        ErrorKind::Conflict
    } else {
        ErrorKind::ApiWrite
    }
}

/// Logs, counts and announces a failed write; returns the message for the status. The Event's
/// `action` names the kind of write: the recorder folds repeats of one (reason, action) into
/// one Event's series and keeps the first note, so a refused scale and refused annotations
/// must not share one.
async fn write_failed(
    ctx: &Context,
    oref: &ObjectReference,
    key: &GatewayKey,
    action: &str,
    what: &str,
    e: &kube::Error,
) -> String {
    ctx.metrics.error(key, error_kind(e));
    warn!(error = %e, "{what} failed; the next decision retries");
    let msg = format!("{what} failed: {e}");
    ctx.publish(oref, EventType::Warning, "WriteFailed", action, &msg)
        .await;
    msg
}

#[cfg(test)]
mod tests {
    use super::scale_in_held;

    #[test]
    fn a_scale_in_waits_for_every_chosen_pods_cost() {
        let (victims, unmarked) = (["a".to_string(), "b".into()], ["b".to_string(), "x".into()]);
        let held = scale_in_held(6, Some(4), &victims, &unmarked).unwrap();
        assert!(
            held.contains("to 4 held") && held.contains("cost of b could"),
            "{held}"
        );
        // Another pod's cost (an ECI pod's pool order) failing holds nothing; nor does a
        // scale-up, or a scale-in that chose no pods.
        assert_eq!(scale_in_held(6, Some(4), &victims, &["x".into()]), None);
        assert_eq!(scale_in_held(4, Some(6), &victims, &unmarked), None);
        assert_eq!(scale_in_held(6, None, &victims, &unmarked), None);
        assert_eq!(scale_in_held(6, Some(4), &[], &unmarked), None);
    }
}
