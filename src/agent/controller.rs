//! The controller: a kube-runtime `Controller` over ElasticGateways. Each reconcile observes,
//! plans, applies and reports ([`reconcile_one`]); only the leader writes, and only while the
//! policy is neither in dry-run nor paused. It wakes on spec changes (generation), deletion and
//! finalizers, never on its own status writes, on every change of the cluster index, and at
//! least every interval. A finalizer hands the gateway back on deletion ([`super::hand_back`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::finalizer::{self, finalizer};
use kube::runtime::reflector;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::{Instrument, debug, error, info, info_span, warn};

use super::context::Context;
use super::hand_back::hand_back;
use super::observe::{self, Stop};
use super::report::{self, Subject};
use super::wake;
use super::{apply, ledger};
use crate::act;
use crate::k8s::index::Change;
use crate::k8s::{bounded, is_status};
use crate::model::GatewayKey;
use crate::policy::ElasticGateway;

/// The finalizer that hands the gateway back when its ElasticGateway is deleted.
pub const FINALIZER: &str = "spillway.io/restore-gateway";

/// An ElasticGateway as watched: one that cannot be decoded is still seen (by name), reported,
/// and skipped, instead of failing the list of every other one.
pub type WatchedGateway = DeserializeGuard<ElasticGateway>;

/// Runs the controller until `shutdown` resolves, then gives in-flight reconciles
/// `config.shutdown_grace` to finish: shutdown is bounded whatever the API server does.
pub async fn run(
    ctx: Arc<Context>,
    index_changes: UnboundedReceiver<Change>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), crate::Error> {
    let shutdown = shutdown.boxed().shared();
    let egws = Api::<WatchedGateway>::all(ctx.watch_client.clone());
    // Wait for the API server and the CRD, saying clearly what is missing.
    tokio::select! {
        r = preflight(&egws, ctx.config.api_timeout) => r,
        () = shutdown.clone() => return Ok(()),
    }
    // Wake on what the user changed (generation), on deletion and on finalizers, never on
    // spillway's own status writes. Changes to the target (scaled by hand, a rollout) show as
    // changes of its pods, which the pod watch reports.
    let (reader, writer) = reflector::store();
    let trigger = reflector::reflector(
        writer,
        watcher(egws, watcher::Config::default().any_semantic()),
    )
    .default_backoff()
    .applied_objects()
    .predicate_filter(wake_on, Default::default());
    let controller = Controller::for_stream(trigger, reader);
    let sweeper = sweep(ctx.clone(), controller.store());
    // The index's changes wake only the gateways they concern (see `wake`).
    let (wake_tx, wake_rx) = tokio::sync::mpsc::unbounded_channel();
    let router = wake::route(
        index_changes,
        ctx.interests.clone(),
        ctx.index.clone(),
        controller.store(),
        wake_tx,
    );
    let wakes =
        futures::stream::unfold(
            wake_rx,
            |mut rx| async move { rx.recv().await.map(|r| (r, rx)) },
        );
    // No debounce: a request would push an object's scheduled run (the periodic one included)
    // later each time, and a storm of them would hold every decision back. No limit on the
    // runner either: the reconciles take their turn at `ctx.slots`, first come first served.
    let controller = controller
        .with_config(ControllerConfig::default().concurrency(0))
        .reconcile_on(wakes)
        .graceful_shutdown_on(shutdown.clone())
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|r| async move {
            if let Err(e) = r {
                debug!(error = %e, "reconcile failed");
            }
        });
    let grace = ctx.config.shutdown_grace;
    tokio::select! {
        () = controller => {}
        () = async { shutdown.clone().await; tokio::time::sleep(grace).await } => {
            warn!(?grace, "shutdown grace period over with work in flight; stopping anyway");
        }
        () = sweeper => {}
        () = router => {}
    }
    Ok(())
}

/// Every interval, drops the memory and the metric series of gateways that no longer exist,
/// and says so on the PlannedEvents that name one (no reconcile would).
async fn sweep(ctx: Arc<Context>, store: reflector::Store<WatchedGateway>) {
    let mut tick = tokio::time::interval(ctx.config.interval);
    // A store that has not listed holds no gateway: every event would look orphaned.
    // (The writer gone means the controller is stopping: the sweep waits for it to end.)
    if store.wait_until_ready().await.is_err() {
        return std::future::pending().await;
    }
    loop {
        tick.tick().await;
        let no_events = ctx.index().planned.is_empty();
        if store.is_empty() && ctx.memory.is_empty() && !ctx.interests.any() && no_events {
            continue;
        }
        let live: HashSet<GatewayKey> = store.state().iter().map(|e| key_of(e.as_ref())).collect();
        forget_gone(&ctx, &live);
        if ctx.is_leader() && !no_events {
            orphaned_events(&ctx, &live).await;
        }
    }
}

/// Marks the PlannedEvents whose ElasticGateway does not exist (only once the gateways have
/// listed: before, every event would look orphaned).
async fn orphaned_events(ctx: &Context, live: &HashSet<GatewayKey>) {
    let orphans: Vec<_> = {
        let ix = ctx.index();
        ix.planned
            .gateways()
            .filter(|k| !live.contains(*k))
            .flat_map(|k| ix.planned.of(k))
            .collect()
    };
    let now = crate::clock::unix_now();
    for ev in orphans {
        let status = super::events::orphan_status(&ev);
        super::events::write(ctx, &ev, status, now).await;
    }
}

/// Forgets every gateway not in `live`: its memory, its interest, its fast-path counters, its
/// series.
pub(super) fn forget_gone(ctx: &Context, live: &HashSet<GatewayKey>) {
    let mut gone = ctx.memory.forget_missing(live);
    gone.extend(ctx.interests.retain(live));
    gone.sort();
    gone.dedup();
    for key in gone {
        info!(namespace = %key.namespace, name = %key.name, "ElasticGateway deleted; removing its series");
        if let Some(f) = &ctx.fast_path {
            f.forget(&key);
        }
        ctx.metrics.forget(&key);
    }
}

/// Lists ElasticGateways once (retrying with backoff) so that a missing CRD, missing RBAC or an
/// unreachable API server is reported as such, not as a watch error later.
async fn preflight(egws: &Api<WatchedGateway>, timeout: Duration) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let lp = kube::api::ListParams::default().limit(1);
        let Err(e) = bounded(timeout, egws.list(&lp)).await else {
            return;
        };
        let why = match &e {
            e if is_status(e, 404) => {
                "the ElasticGateway CRD is not installed (kubectl apply -f deploy/crd.yaml)".into()
            }
            kube::Error::Api(s) if s.code == 401 || s.code == 403 => format!(
                "the API server refuses to list ElasticGateways ({}); apply the RBAC of deploy/",
                s.message
            ),
            other => format!("cannot reach the API server: {other}"),
        };
        error!(retry_in = ?backoff, "{why}; retrying");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// What a reconcile depends on: the spec's generation, deletion, and the finalizers.
pub(super) fn wake_on<K: Resource>(egw: &K) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    egw.meta().generation.hash(&mut h);
    egw.meta().deletion_timestamp.is_some().hash(&mut h);
    egw.meta().finalizers.hash(&mut h);
    Some(h.finish())
}

fn key_of<K: Resource>(obj: &K) -> GatewayKey {
    GatewayKey::new(
        obj.meta().namespace.as_deref().unwrap_or_default(),
        obj.meta().name.as_deref().unwrap_or_default(),
    )
}

fn error_policy(egw: Arc<WatchedGateway>, err: &crate::Error, ctx: Arc<Context>) -> Action {
    let key = key_of(egw.as_ref());
    let failures = ctx.memory.failed(&key);
    // 1 s, 2 s, 4 s … capped at the interval: a transient API error retries soon.
    let backoff = Duration::from_secs(1 << failures.min(6)).min(ctx.config.interval);
    warn!(namespace = %key.namespace, name = %key.name, error = %err, ?backoff, "reconcile failed; retrying");
    Action::requeue(backoff)
}

/// One ElasticGateway, within the reconcile's time bound: one that does not decode is held and
/// reported; a decoded one goes on.
pub(super) async fn reconcile(
    obj: Arc<WatchedGateway>,
    ctx: Arc<Context>,
) -> Result<Action, crate::Error> {
    let key = key_of(obj.as_ref());
    let span = info_span!("reconcile", namespace = %key.namespace, name = %key.name);
    let egw = match &obj.0 {
        Ok(egw) => egw,
        Err(invalid) => {
            let held = async {
                let hold = observe::undecodable(&key, &invalid.error, &ctx).await;
                report::held(&Subject::untyped(obj.as_ref()), &key, &ctx, hold).await
            };
            return Ok(held.instrument(span).await);
        }
    };
    // A slot first: the time bound is the reconcile's own, not its wait for a turn.
    let Ok(_slot) = ctx.slots.acquire().await else {
        return Ok(Action::await_change());
    };
    let limit = ctx.config.reconcile_timeout;
    // The finalizer helper needs the decoded object, as an `Arc` of its own.
    let egw = Arc::new(egw.clone());
    match tokio::time::timeout(limit, decoded(egw, &key, &ctx).instrument(span)).await {
        Ok(r) => r,
        Err(_) => Err(crate::Error::Timeout(format!(
            "the reconcile of {key} took longer than {limit:?}"
        ))),
    }
}

/// A decoded ElasticGateway: a follower decides without writing, not even the finalizer; the
/// leader reconciles under the finalizer once spillway may change the gateway (neither dry-run
/// nor paused), and it stays until the hand-back is done.
async fn decoded(
    egw: Arc<ElasticGateway>,
    key: &GatewayKey,
    ctx: &Context,
) -> Result<Action, crate::Error> {
    let leader = ctx.is_leader();
    if !leader {
        ctx.memory.following(key);
    }
    let finalized = egw.finalizers().iter().any(|f| f == FINALIZER);
    let may_write = !egw.spec.dry_run && !egw.spec.paused;
    if !leader || !(finalized || may_write) {
        if egw.metadata.deletion_timestamp.is_some() {
            // Without our finalizer there is nothing to hand back; with it, a standby looks
            // again, as it may lead by then.
            return Ok(if finalized {
                Action::requeue(ctx.config.interval)
            } else {
                Action::await_change()
            });
        }
        return reconcile_one(&egw, key, ctx).await;
    }
    let api = Api::<ElasticGateway>::namespaced(ctx.client.clone(), &key.namespace);
    finalizer(&api, FINALIZER, egw, |event| async {
        match event {
            finalizer::Event::Apply(egw) => reconcile_one(&egw, key, ctx).await,
            finalizer::Event::Cleanup(egw) => hand_back(&egw, key, ctx).await,
        }
    })
    .await
    .or_else(|e| match e {
        // The object went between the cache's copy and the finalizer's removal: a Cleanup of a
        // stale copy, after the hand-back had already let it go.
        finalizer::Error::RemoveFinalizer(e) if crate::k8s::is_status(&e, 404) => {
            Ok(Action::await_change())
        }
        e => Err(e),
    })
    .map_err(|e| match e {
        finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
        finalizer::Error::AddFinalizer(e) | finalizer::Error::RemoveFinalizer(e) => {
            crate::Error::Kube(e)
        }
        other => crate::Error::Config(other.to_string()),
    })
}

/// One decision for one gateway: observe → plan → apply → report, each once.
async fn reconcile_one(
    egw: &ElasticGateway,
    key: &GatewayKey,
    ctx: &Context,
) -> Result<Action, crate::Error> {
    let subject = Subject::of(egw);
    let observed = match observe::observe(egw, key, ctx).await {
        Ok(observed) => observed,
        Err(Stop::Held(hold)) => return Ok(report::held(&subject, key, ctx, hold).await),
        Err(Stop::Failed(e)) => return Err(e),
    };
    let (spec, leader) = (&egw.spec, ctx.is_leader());
    let mut prev = ctx.memory.engine_for(key, leader);
    // A memory started afresh (a restart, a new leader) takes the ECI share learnt before.
    prev.capacity
        .seed(egw.status.as_ref().and_then(|s| s.eci_relative_capacity));
    let mut planned = ledger::plan(egw, key, ctx, &observed, &prev);
    let summary = planned.decision.summary();
    info!(decision = %summary, leader, dry_run = spec.dry_run, "decided");
    let applied = apply::apply(egw, key, ctx, leader, &observed, &planned).await?;
    ledger::settle(egw, key, ctx, &planned, applied.plan.replicas);
    ctx.memory
        .decided(key, act::commit(&prev, &mut planned, spec, &applied.plan));
    report::report(egw, &subject, key, ctx, &observed, &planned, &applied).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::ElasticGatewayStatus;

    #[test]
    fn wakes_on_spec_deletion_and_finalizers_not_on_status() {
        let mut egw = ElasticGateway::scenario_default();
        egw.metadata.generation = Some(1);
        let base = wake_on(&egw);
        egw.status = Some(ElasticGatewayStatus {
            desired_replicas: 7,
            ..Default::default()
        });
        egw.metadata.resource_version = Some("42".into());
        assert_eq!(wake_on(&egw), base);
        egw.metadata.finalizers = Some(vec![FINALIZER.into()]);
        let with_finalizer = wake_on(&egw);
        assert_ne!(with_finalizer, base);
        egw.metadata.generation = Some(2);
        assert_ne!(wake_on(&egw), with_finalizer);
    }
}
