//! The finalizer's clean-up: when its ElasticGateway is deleted, the gateway is handed back as
//! spillway found it. The preferred affinity terms recorded in `status.original` are restored
//! (when spillway changed them) and the deletion-cost annotations removed; the replica count
//! stays where it is. A policy deleted while paused leaves the gateway untouched.

use kube::Resource;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use tracing::info;

use super::context::Context;
use crate::k8s::{bounded, is_status, target};
use crate::model::GatewayKey;
use crate::policy::ElasticGateway;

pub async fn hand_back(
    egw: &ElasticGateway,
    key: &GatewayKey,
    ctx: &Context,
) -> Result<Action, crate::Error> {
    let spec = &egw.spec;
    let oref = egw.object_ref(&());
    let (t, ns) = (ctx.config.api_timeout, key.namespace.as_str());
    if spec.paused {
        let note = "deleted while paused: the gateway is left as it is now (weights and deletion costs untouched)";
        info!(note, "handing back");
        ctx.publish(&oref, EventType::Normal, "HandedBack", "Uninstall", note)
            .await;
        return Ok(Action::await_change());
    }
    let mut done = vec![];
    if let Some(original) = egw.status.as_ref().and_then(|s| s.original.as_ref()) {
        let restore = target::restore_preferred_terms(
            ctx.target_client(spec),
            ns,
            spec,
            &original.preferred_terms,
        );
        ctx.fence("hand_back")?;
        match bounded(t, restore).await {
            Ok(()) => done.push(format!(
                "restored the {} preferred affinity term(s) spillway found",
                original.preferred_terms.len()
            )),
            // The gateway is gone: nothing to hand back.
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let read = target::read(ctx.target_client(spec), &ctx.client, ns, spec);
    let pods = match bounded(t, read).await? {
        Some(t) => ctx.index().gateway_pods(
            ns,
            &t.selector,
            &spec.pools.ecs.node_selector,
            &spec.pools.eci.node_selector,
        ),
        None => vec![],
    };
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
    let note = format!("{}; the replica count stays where it is", done.join("; "));
    info!(%note, "handed the gateway back");
    ctx.publish(&oref, EventType::Normal, "HandedBack", "Uninstall", &note)
        .await;
    ctx.memory.remove(key);
    Ok(Action::await_change())
}
