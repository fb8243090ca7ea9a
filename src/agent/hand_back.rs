//! The finalizer's clean-up: when its ElasticGateway is deleted, the gateway is handed back as
//! spillway found it. The preferred affinity terms recorded in `status.original` are restored
//! (when spillway changed them, and only on the very workload it found them on) and the
//! deletion-cost annotations removed; the replica count stays where it is. A policy deleted while
//! paused leaves the gateway untouched. Deletion always finishes: what cannot be handed back
//! (a target gone, forbidden, or replaced; an API server that keeps failing past
//! [`GIVE_UP_AFTER`]) is said in an Event and the log, and the finalizer is released.

use std::time::Duration;

use kube::Resource;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use tracing::{error, info};

use super::context::Context;
use crate::k8s::{bounded, is_status, target};
use crate::model::GatewayKey;
use crate::policy::ElasticGateway;

/// How long after the deletion a failing hand-back is retried before the finalizer is released.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(60);

pub async fn hand_back(
    egw: &ElasticGateway,
    key: &GatewayKey,
    ctx: &Context,
) -> Result<Action, crate::Error> {
    let oref = egw.object_ref(&());
    let uid = egw.metadata.uid.clone();
    if ctx
        .memory
        .was_handed_back(key, uid.as_deref(), egw.spec.paused)
    {
        // A second Cleanup of the same object, from a cache that has not yet seen the finalizer
        // go (a wake queued during the hand-back): done already, once is enough.
        return Ok(Action::await_change());
    }
    if egw.spec.paused {
        let note = "deleted while paused: the gateway is left as it is now (weights and deletion costs untouched)";
        info!(note, "handing back");
        ctx.publish(&oref, EventType::Normal, "HandedBack", "Uninstall", note)
            .await;
        ctx.memory.handed_back(key, uid, true);
        return Ok(Action::await_change());
    }
    match give_back(egw, key, ctx).await {
        Ok(done) => {
            let note = format!("{}; the replica count stays where it is", done.join("; "));
            info!(%note, "handed the gateway back");
            ctx.publish(&oref, EventType::Normal, "HandedBack", "Uninstall", &note)
                .await;
        }
        Err(e) if !past(egw, GIVE_UP_AFTER) => return Err(e),
        Err(e) => {
            let note = format!(
                "could not hand the gateway back within {GIVE_UP_AFTER:?} of the deletion ({e}); the finalizer is released: restore status.original.preferredTerms and remove the pods' pod-deletion-cost by hand if they matter"
            );
            error!(%note, "hand-back abandoned");
            ctx.publish(
                &oref,
                EventType::Warning,
                "HandBackAbandoned",
                "Uninstall",
                &note,
            )
            .await;
        }
    }
    ctx.memory.handed_back(key, uid, false);
    Ok(Action::await_change())
}

/// Whether the deletion was asked for more than `after` ago.
fn past(egw: &ElasticGateway, after: Duration) -> bool {
    egw.metadata.deletion_timestamp.as_ref().is_some_and(|t| {
        let since = crate::clock::unix_now() - t.0.as_second() as f64;
        since > after.as_secs_f64()
    })
}

/// Restores what can be restored; returns what was done (or why not).
async fn give_back(
    egw: &ElasticGateway,
    key: &GatewayKey,
    ctx: &Context,
) -> Result<Vec<String>, crate::Error> {
    let (spec, ns, t) = (&egw.spec, key.namespace.as_str(), ctx.config.api_timeout);
    // `status.original` is recorded before spillway's first change: without it, this policy
    // changed nothing (dry-run, held, another policy's workload) and there is nothing to undo.
    let original = egw.status.as_ref().and_then(|s| s.original.clone());
    // Recorded by this replica a moment ago, the cache may not show it yet.
    let Some(original) = original.or_else(|| ctx.memory.original(key)) else {
        return Ok(vec![
            "spillway changed nothing for this policy: nothing to hand back".into(),
        ]);
    };
    let read = target::read(ctx.target_client(spec), &ctx.client, ns, spec);
    let found = match bounded(t, read).await {
        Ok(Some(found)) => found,
        Ok(None) => return Ok(vec!["the target is gone: nothing to hand back".into()]),
        Err(e) if is_status(&e, 403) => {
            return Ok(vec![format!(
                "spillway may not read the target ({e}): nothing handed back"
            )]);
        }
        Err(e) => return Err(e.into()),
    };
    let mut done = vec![];
    {
        let same = original.target_uid.is_none() || original.target_uid == found.uid;
        if same {
            let client = ctx.target_client(spec);
            let restore =
                target::restore_preferred_terms(client, ns, spec, &original.preferred_terms);
            ctx.fence("hand_back")?;
            match bounded(t, restore).await {
                Ok(()) => done.push(format!(
                    "restored the {} preferred affinity term(s) spillway found",
                    original.preferred_terms.len()
                )),
                Err(e) if is_status(&e, 404) => {}
                Err(e) if is_status(&e, 403) => done.push(format!(
                    "spillway may not restore the affinity it found ({e}): restore status.original.preferredTerms by hand"
                )),
                Err(e) => return Err(e.into()),
            }
        } else {
            done.push("the target was replaced since spillway recorded its affinity: the new one's is left as it is".into());
        }
    }
    let pods = ctx.index().gateway_pods(
        ns,
        &found.selector,
        &spec.pools.ecs.node_selector,
        &spec.pools.eci.node_selector,
    );
    let mut cleared = 0;
    for p in &pods {
        ctx.fence("hand_back")?;
        match bounded(t, target::clear_deletion_cost(&ctx.client, ns, &p.name)).await {
            Ok(()) => cleared += 1,
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(e.into()),
        }
    }
    done.push(format!(
        "removed pod-deletion-cost from {cleared} gateway pod(s)"
    ));
    Ok(done)
}
