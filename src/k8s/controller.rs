//! The live loop: a kube-runtime Controller over ElasticGateways. Each reconcile observes (the
//! index, the target, Prometheus), runs the engine, and — only while this replica leads and the
//! policy is neither in dry-run nor paused — applies the plan, then records Events, status and
//! metrics.
//!
//! Status is written by server-side apply under its own field manager, and its conditions are
//! read back from the object, so `lastTransitionTime` survives restarts and leader changes and no
//! Event is sent twice for one transition. The controller wakes on spec changes (generation),
//! deletion and finalizers, never on its own status writes. A finalizer hands the gateway back
//! on deletion: the preferred affinity terms spillway found (kept in `status.original`) are
//! restored and the deletion-cost annotations removed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{self, finalizer};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::watch;
use tracing::{Instrument, debug, info, info_span, warn};

use super::index::ClusterIndex;
use super::target;
use crate::act::Plan;
use crate::engine::{self, Decision, EngineState, LoadSample, Observation};
use crate::metrics::{ErrorKind, Gw, Metrics};
use crate::policy::{
    CostStatus, DecisionRecord, ElasticGateway, ElasticGatewaySpec, ElasticGatewayStatus,
    OriginalPlacement, TargetKind,
};

/// The finalizer that hands the gateway back when its ElasticGateway is deleted.
pub const FINALIZER: &str = "spillway.io/restore-gateway";
/// The field manager of status writes (server-side apply), apart from the gateway's writes.
pub const STATUS_MANAGER: &str = "spillway-status";
use crate::prom::Prometheus;

/// Settings of the loop.
#[derive(Clone, Debug)]
pub struct Config {
    /// Decide at least this often per gateway.
    pub interval: Duration,
    /// Reporter name on Events (the controller) and instance (the pod).
    pub reporter: String,
    pub instance: Option<String>,
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub prom: Prometheus,
    pub index: Arc<RwLock<ClusterIndex>>,
    pub leader: watch::Receiver<bool>,
    pub config: Config,
    states: Mutex<HashMap<(String, String), GatewayMemory>>,
}

/// Per gateway: the engine's state and what this replica last wrote while leading.
#[derive(Default)]
struct GatewayMemory {
    engine: EngineState,
    failures: u32,
    /// The conditions of the last status write, fresher than the cache right after it; `None`
    /// until this replica writes as the leader (then the object's status is the truth).
    written: Option<Vec<Condition>>,
    /// `status.original` as this replica recorded it, until the cache shows it.
    original: Option<OriginalPlacement>,
}

impl Context {
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        prom: Prometheus,
        index: Arc<RwLock<ClusterIndex>>,
        leader: watch::Receiver<bool>,
        config: Config,
    ) -> Self {
        let reporter = Reporter {
            controller: config.reporter.clone(),
            instance: config.instance.clone(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            prom,
            index,
            leader,
            config,
            states: Mutex::new(HashMap::new()),
        }
    }

    fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    index_changes: watch::Receiver<u64>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), crate::Error> {
    let egws = Api::<ElasticGateway>::all(ctx.client.clone());
    // Fail early, and clearly, if the CRD is missing or RBAC forbids reading it.
    egws.list(&kube::api::ListParams::default().limit(1)).await.map_err(|e| {
        crate::Error::Config(format!(
            "cannot list ElasticGateways ({e}); is the CRD installed (kubectl apply -f deploy/crd.yaml) and the RBAC of deploy/ applied?"
        ))
    })?;
    let changes = futures::stream::unfold(index_changes, |mut rx| async move {
        rx.changed().await.ok()?;
        Some(((), rx))
    });
    // Wake on what the user changed (generation), on deletion and on finalizers, never on
    // spillway's own status writes.
    let (reader, writer) = reflector::store();
    let trigger = reflector::reflector(
        writer,
        watcher(egws, watcher::Config::default().any_semantic()),
    )
    .default_backoff()
    .applied_objects()
    .predicate_filter(wake_on, Default::default());
    let controller = Controller::for_stream(trigger, reader);
    // A change to a target Deployment (scaled by hand, a rollout) wakes the policies on it.
    let store = controller.store();
    let deployments = Api::<Deployment>::all(ctx.client.clone());
    controller
        .watches(
            deployments,
            watcher::Config::default().any_semantic(),
            move |d: Deployment| {
                let (ns, name) = (d.namespace(), d.name_any());
                store
                    .state()
                    .into_iter()
                    .filter(|e| {
                        e.namespace() == ns
                            && e.spec.target.kind == TargetKind::Deployment
                            && e.spec.target.name == name
                    })
                    .map(|e| ObjectRef::from_obj(&*e))
                    .collect::<Vec<_>>()
            },
        )
        .with_config(
            ControllerConfig::default()
                .debounce(Duration::from_millis(500))
                .concurrency(4),
        )
        .reconcile_all_on(changes)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                debug!(error = %e, "reconcile failed");
            }
        })
        .await;
    Ok(())
}

/// What a reconcile depends on: the spec's generation, deletion, and the finalizers.
fn wake_on(egw: &ElasticGateway) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    egw.metadata.generation.hash(&mut h);
    egw.metadata.deletion_timestamp.is_some().hash(&mut h);
    egw.metadata.finalizers.hash(&mut h);
    Some(h.finish())
}

fn error_policy(egw: Arc<ElasticGateway>, err: &crate::Error, ctx: Arc<Context>) -> Action {
    let key = (egw.namespace().unwrap_or_default(), egw.name_any());
    let failures = {
        let mut states = ctx
            .states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let m = states.entry(key.clone()).or_default();
        m.failures += 1;
        m.failures
    };
    // 1 s, 2 s, 4 s … capped at the interval: a transient API error retries soon.
    let backoff = Duration::from_secs(1 << failures.min(6)).min(ctx.config.interval);
    warn!(namespace = %key.0, name = %key.1, error = %err, ?backoff, "reconcile failed; retrying");
    Action::requeue(backoff)
}

async fn reconcile(egw: Arc<ElasticGateway>, ctx: Arc<Context>) -> Result<Action, crate::Error> {
    let ns = egw.namespace().unwrap_or_default();
    let name = egw.name_any();
    let span = info_span!("reconcile", namespace = %ns, name = %name);
    if !ctx.is_leader() {
        // A follower observes and decides (for its logs and a fast takeover) but writes
        // nothing, not even the finalizer.
        if let Ok(mut states) = ctx.states.lock() {
            states
                .entry((ns.clone(), name.clone()))
                .or_default()
                .written = None;
        }
    }
    // The finalizer goes on once spillway may change the gateway (neither dry-run nor paused),
    // and stays until the hand-back is done.
    let finalized = egw.finalizers().iter().any(|f| f == FINALIZER);
    let may_write = !egw.spec.dry_run && !egw.spec.paused;
    if !ctx.is_leader() || !(finalized || may_write) {
        if egw.metadata.deletion_timestamp.is_some() {
            // Without our finalizer there is nothing to hand back; with it, a standby looks
            // again, as it may lead by then.
            return Ok(if finalized {
                Action::requeue(ctx.config.interval)
            } else {
                Action::await_change()
            });
        }
        return reconcile_one(&egw, &ns, &name, &ctx).instrument(span).await;
    }
    let api = Api::<ElasticGateway>::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, egw, |event| async {
        match event {
            finalizer::Event::Apply(egw) => reconcile_one(&egw, &ns, &name, &ctx).await,
            finalizer::Event::Cleanup(egw) => hand_back(&egw, &ns, &ctx).await,
        }
    })
    .instrument(span)
    .await
    .map_err(|e| match e {
        finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
        finalizer::Error::AddFinalizer(e) | finalizer::Error::RemoveFinalizer(e) => {
            crate::Error::Kube(e)
        }
        other => crate::Error::Config(other.to_string()),
    })
}

/// On deletion: the preferred terms spillway found are restored (when it changed them) and the
/// deletion-cost annotations removed, unless the policy is paused (then nothing is touched).
async fn hand_back(egw: &ElasticGateway, ns: &str, ctx: &Context) -> Result<Action, crate::Error> {
    let spec = &egw.spec;
    if spec.paused {
        let note = "deleted while paused: the gateway is left as it is now (weights and deletion costs untouched)";
        info!(note, "handing back");
        publish(ctx, egw, EventType::Normal, "HandedBack", "Uninstall", note).await;
        return Ok(Action::await_change());
    }
    let mut done = vec![];
    if let Some(original) = egw.status.as_ref().and_then(|s| s.original.as_ref()) {
        match target::restore_preferred_terms(&ctx.client, ns, spec, &original.preferred_terms)
            .await
        {
            Ok(()) => done.push(format!(
                "restored the {} preferred affinity term(s) spillway found",
                original.preferred_terms.len()
            )),
            // The gateway is gone: nothing to hand back.
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let pods = match target::read(&ctx.client, ns, spec).await? {
        Some(t) => ctx
            .index
            .read()
            .map(|ix| {
                ix.gateway_pods(
                    ns,
                    &t.selector,
                    &spec.pools.ecs.node_selector,
                    &spec.pools.eci.node_selector,
                )
            })
            .unwrap_or_default(),
        None => vec![],
    };
    let mut cleared = 0;
    for p in &pods {
        match target::clear_deletion_cost(&ctx.client, ns, &p.name).await {
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
    publish(
        ctx,
        egw,
        EventType::Normal,
        "HandedBack",
        "Uninstall",
        &note,
    )
    .await;
    if let Ok(mut states) = ctx.states.lock() {
        states.remove(&(ns.to_string(), egw.name_any()));
    }
    Ok(Action::await_change())
}

async fn reconcile_one(
    egw: &ElasticGateway,
    ns: &str,
    name: &str,
    ctx: &Context,
) -> Result<Action, crate::Error> {
    let gw = Gw::new(ns, name);
    let key = (ns.to_string(), name.to_string());
    let spec = &egw.spec;
    let requeue = Action::requeue(ctx.config.interval);
    let leader = ctx.is_leader();

    let errors = crate::policy::validate(spec, ns);
    if !errors.is_empty() {
        ctx.metrics.error(&gw, ErrorKind::InvalidPolicy);
        let msg = errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        warn!(%msg, "invalid policy; not acting on it");
        let cond = condition(
            "Ready",
            false,
            "InvalidPolicy",
            &msg,
            egw.metadata.generation,
        );
        report_problem(egw, ctx, &key, cond, leader).await;
        return Ok(Action::requeue(ctx.config.interval * 6));
    }
    let watched = ctx
        .index
        .read()
        .map(|ix| ix.watches_namespace(ns))
        .unwrap_or(false);
    if !watched {
        let msg = format!(
            "namespace {ns} is not among --gateway-namespaces; spillway does not see its pods"
        );
        report_problem(
            egw,
            ctx,
            &key,
            condition(
                "Ready",
                false,
                "NamespaceNotWatched",
                &msg,
                egw.metadata.generation,
            ),
            leader,
        )
        .await;
        return Ok(Action::requeue(ctx.config.interval * 6));
    }
    let Some(target) = target::read(&ctx.client, ns, spec)
        .await
        .inspect_err(|_| ctx.metrics.error(&gw, ErrorKind::ApiRead))?
    else {
        let msg = format!(
            "{:?} {} not found in {ns}",
            spec.target.kind, spec.target.name
        );
        report_problem(
            egw,
            ctx,
            &key,
            condition(
                "Ready",
                false,
                "TargetNotFound",
                &msg,
                egw.metadata.generation,
            ),
            leader,
        )
        .await;
        return Ok(requeue);
    };
    let hpas = target::competing_hpas(&ctx.client, ns, spec)
        .await
        .unwrap_or_else(|e| {
            debug!(error = %e, "cannot list HorizontalPodAutoscalers; assuming none");
            vec![]
        });

    // Load.
    let now = unix_now();
    let queries: Vec<_> = spec
        .metrics
        .iter()
        .map(|m| m.effective_query(ns, &spec.target).unwrap_or_default())
        .collect();
    let loads: Vec<LoadSample> =
        futures::future::join_all(queries.iter().map(|q| ctx.prom.query(q, now))).await;
    for (m, l) in spec.metrics.iter().zip(&loads) {
        if let LoadSample::Missing(why) = l {
            ctx.metrics.error(&gw, ErrorKind::PrometheusQuery);
            warn!(metric = %m.display_name(), reason = %why, "load metric missing; holding");
        }
    }

    // Decide, under the index's lock (no await inside).
    let (decision, obs_pods, next_state, elapsed) = {
        let mut ix = ctx
            .index
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let pods = ix.gateway_pods(
            ns,
            &target.selector,
            &spec.pools.ecs.node_selector,
            &spec.pools.eci.node_selector,
        );
        let nodes = ix.nodes();
        let prev = {
            let states = ctx
                .states
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            states
                .get(&key)
                .map(|m| m.engine.clone())
                .unwrap_or_default()
        };
        let obs = Observation {
            now,
            loads: &loads,
            spec_replicas: target.replicas,
            pod_requests: target.pod_requests,
            weights: target.weights,
            rollout_in_progress: target.rollout_in_progress,
            pods: &pods,
            nodes,
        };
        let started = Instant::now();
        let out = engine::decide(spec, &obs, &prev);
        (
            out.decision,
            pods.clone(),
            out.state,
            started.elapsed().as_secs_f64(),
        )
    };
    let mut plan = Plan::from_decision(spec, &decision);
    if !hpas.is_empty() {
        plan.replicas = None;
    }
    info!(decision = %decision.summary(), leader, dry_run = spec.dry_run, "decided");

    // Act, only as the leader; first record how the gateway was, so that deleting the policy
    // can hand it back.
    let applied = if leader {
        if !plan.is_empty() && egw.status.as_ref().is_none_or(|s| s.original.is_none()) {
            let original = OriginalPlacement {
                preferred_terms: target.preferred_terms.clone(),
            };
            let status = ElasticGatewayStatus {
                original: Some(original.clone()),
                ..egw.status.clone().unwrap_or_default()
            };
            apply_status(ctx, ns, name, &status)
                .await
                .inspect_err(|_| ctx.metrics.error(&gw, ErrorKind::ApiWrite))?;
            if let Ok(mut states) = ctx.states.lock() {
                states.entry(key.clone()).or_default().original = Some(original);
            }
        }
        apply(egw, ctx, &gw, ns, spec, &plan, &decision).await
    } else {
        Plan::default()
    };
    {
        let mut ix_nodes = ctx
            .index
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let nodes = ix_nodes.nodes();
        let obs = Observation {
            now,
            loads: &loads,
            spec_replicas: target.replicas,
            pod_requests: target.pod_requests,
            weights: target.weights,
            rollout_in_progress: target.rollout_in_progress,
            pods: &obs_pods,
            nodes,
        };
        ctx.metrics
            .record_decision(&gw, spec, &obs, &decision, &applied, elapsed);
    }
    {
        let mut states = ctx
            .states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let m = states.entry(key.clone()).or_default();
        m.engine = next_state;
        m.failures = 0;
    }
    if !leader {
        return Ok(requeue);
    }

    // Report. Condition messages carry no live values: the status changes only when something
    // does, and the decision's numbers are in status fields, the Events and the metrics.
    let generation = egw.metadata.generation;
    let mut conditions = vec![];
    let missing: Vec<String> = decision
        .readings
        .iter()
        .filter_map(|r| {
            r.missing.as_ref().map(|why| {
                format!(
                    "{} ({}): {why}",
                    r.metric,
                    queries_for(&decision, &queries, &r.metric)
                )
            })
        })
        .collect();
    conditions.push(if missing.is_empty() {
        condition(
            "MetricsAvailable",
            true,
            "QueriesSucceeded",
            "every load query returned a value",
            generation,
        )
    } else {
        condition(
            "MetricsAvailable",
            false,
            "QueryFailed",
            &format!(
                "no usable value from {}; spillway holds the replica count",
                missing.join("; ")
            ),
            generation,
        )
    });
    conditions.push(if hpas.is_empty() {
        condition(
            "HpaConflict",
            false,
            "NoHpa",
            "no HorizontalPodAutoscaler targets the gateway",
            generation,
        )
    } else {
        condition(
            "HpaConflict",
            true,
            "HpaTargetsGateway",
            &format!("HorizontalPodAutoscaler {} also scales the gateway; spillway holds the replica count", hpas.join(", ")),
            generation,
        )
    });
    conditions.push(ready_condition(spec, generation));
    let prev = previous_conditions(egw, ctx, &key);
    let conditions = carry_transitions(&prev, conditions, now);
    for c in conditions.iter().filter(|c| changed(&prev, c)) {
        let bad = (c.type_ == "MetricsAvailable" && c.status == "False")
            || (c.type_ == "HpaConflict" && c.status == "True");
        if bad {
            publish(
                ctx,
                egw,
                EventType::Warning,
                &c.reason,
                "Observe",
                &c.message,
            )
            .await;
        }
    }
    let old = egw.status.clone().unwrap_or_default();
    let record = (!applied.is_empty() || decision.replicas.desired != decision.replicas.current)
        .then(|| DecisionRecord {
            time: rfc3339(now),
            kind: decision.replicas.action.as_str().into(),
            reason: decision.replicas.reason.clone(),
        });
    let status = ElasticGatewayStatus {
        observed_generation: generation,
        phase: Some(decision.phase.as_str().into()),
        desired_replicas: decision.replicas.desired,
        current_replicas: decision.replicas.current,
        ecs_replicas: decision.survey.ecs_pods,
        eci_replicas: decision.survey.eci_pods,
        ecs_capacity: decision.survey.ecs_capacity,
        weights: Some(decision.weights.target),
        last_decision: record.or(old.last_decision.clone()),
        cost_per_hour: Some(CostStatus {
            currency: decision.cost.currency.clone(),
            ecs: round(decision.cost.ecs_per_hour),
            eci: round(decision.cost.eci_per_hour),
            saving: round(decision.cost.saving_per_hour),
        }),
        // Recorded before the first change above; the cache may not show it yet.
        original: old.original.clone().or_else(|| {
            ctx.states
                .lock()
                .ok()
                .and_then(|s| s.get(&key).and_then(|m| m.original.clone()))
        }),
        conditions,
    };
    write_status(ctx, egw, &key, status)
        .await
        .inspect_err(|_| ctx.metrics.error(&gw, ErrorKind::ApiWrite))?;
    Ok(requeue)
}

/// The Ready condition of a policy spillway acts on: its message says what spillway may do,
/// never the load of the moment.
fn ready_condition(spec: &ElasticGatewaySpec, generation: Option<i64>) -> Condition {
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

/// The conditions as last written: this replica's own write while it has led without a break,
/// otherwise the object's status (after a restart or a leader change).
fn previous_conditions(
    egw: &ElasticGateway,
    ctx: &Context,
    key: &(String, String),
) -> Vec<Condition> {
    let written = ctx
        .states
        .lock()
        .ok()
        .and_then(|s| s.get(key).and_then(|m| m.written.clone()));
    written.unwrap_or_else(|| {
        egw.status
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default()
    })
}

/// Applies the status when it differs from the object's, and remembers its conditions.
async fn write_status(
    ctx: &Context,
    egw: &ElasticGateway,
    key: &(String, String),
    status: ElasticGatewayStatus,
) -> Result<(), kube::Error> {
    let conditions = status.conditions.clone();
    let unchanged =
        egw.status.as_ref() == Some(&status) && previous_conditions(egw, ctx, key) == conditions;
    if !unchanged {
        apply_status(ctx, &key.0, &key.1, &status).await?;
    }
    if let Ok(mut states) = ctx.states.lock() {
        states.entry(key.clone()).or_default().written = Some(conditions);
    }
    Ok(())
}

fn queries_for<'a>(d: &Decision, queries: &'a [String], metric: &str) -> &'a str {
    d.readings
        .iter()
        .position(|r| r.metric == metric)
        .and_then(|i| queries.get(i))
        .map_or("", String::as_str)
}

/// Applies the plan; returns what was applied. Each failure is logged, counted and announced,
/// and the next decision (from a fresh observation) tries again: the writes are absolute.
async fn apply(
    egw: &ElasticGateway,
    ctx: &Context,
    gw: &Gw,
    ns: &str,
    spec: &ElasticGatewaySpec,
    plan: &Plan,
    d: &Decision,
) -> Plan {
    let mut applied = Plan::default();
    let client = &ctx.client;
    let mut failed = 0usize;
    for (pod, cost) in &plan.deletion_costs {
        match with_conflict_retry(|| target::set_deletion_cost(client, ns, pod, *cost)).await {
            Ok(()) => applied.deletion_costs.push((pod.clone(), *cost)),
            // A pod that vanished needs no cost.
            Err(e) if is_status(&e, 404) => {}
            Err(e) => {
                failed += 1;
                write_failed(ctx, egw, gw, &format!("annotating pod {pod}"), &e).await;
            }
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
        publish(
            ctx,
            egw,
            EventType::Normal,
            "DeletionCostsSet",
            "Annotate",
            &note,
        )
        .await;
    }
    if failed > 0 {
        debug!(failed, "some deletion-cost patches failed");
    }
    if let Some(r) = plan.replicas {
        match with_conflict_retry(|| target::scale(client, ns, spec, r)).await {
            Ok(()) => {
                applied.replicas = Some(r);
                let reason = if r > d.replicas.current {
                    "ScaledUp"
                } else {
                    "ScaledDown"
                };
                let note = format!(
                    "{} → {} replicas: {}",
                    d.replicas.current, r, d.replicas.reason
                );
                info!(%note, "scaled");
                publish(ctx, egw, EventType::Normal, reason, "Scale", &note).await;
            }
            Err(e) => write_failed(ctx, egw, gw, "scaling the gateway", &e).await,
        }
    }
    if let Some(w) = plan.weights {
        match with_conflict_retry(|| target::apply_weights(client, ns, spec, w)).await {
            Ok(()) => {
                applied.weights = Some(w);
                publish(
                    ctx,
                    egw,
                    EventType::Normal,
                    "WeightsChanged",
                    "ApplyAffinity",
                    &d.weights.reason,
                )
                .await;
            }
            Err(e) => write_failed(ctx, egw, gw, "applying the affinity weights", &e).await,
        }
    }
    for pod in &plan.evictions {
        match target::evict(client, ns, pod).await {
            Ok(()) => {
                applied.evictions.push(pod.clone());
                publish(
                    ctx,
                    egw,
                    EventType::Normal,
                    "MovedToEcs",
                    "Evict",
                    &format!("evicted {pod} from ECI: {}", d.move_reason),
                )
                .await;
            }
            Err(e) if is_status(&e, 429) => {
                publish(
                    ctx,
                    egw,
                    EventType::Normal,
                    "MoveBlocked",
                    "Evict",
                    &format!("a PodDisruptionBudget forbids evicting {pod} now"),
                )
                .await;
            }
            Err(e) => write_failed(ctx, egw, gw, &format!("evicting {pod}"), &e).await,
        }
    }
    applied
}

async fn with_conflict_retry<F, Fut>(mut f: F) -> Result<(), kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), kube::Error>>,
{
    match f().await {
        Err(e) if is_status(&e, 409) => {
            debug!(error = %e, "conflict; retrying once");
            f().await
        }
        other => other,
    }
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

async fn write_failed(ctx: &Context, egw: &ElasticGateway, gw: &Gw, what: &str, e: &kube::Error) {
    let kind = if is_status(e, 409) {
        ErrorKind::Conflict
    } else {
        ErrorKind::ApiWrite
    };
    ctx.metrics.error(gw, kind);
    warn!(error = %e, "{what} failed; the next decision retries");
    publish(
        ctx,
        egw,
        EventType::Warning,
        "WriteFailed",
        "Write",
        &format!("{what} failed: {e}"),
    )
    .await;
}

async fn publish(
    ctx: &Context,
    egw: &ElasticGateway,
    type_: EventType,
    reason: &str,
    action: &str,
    note: &str,
) {
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &egw.object_ref(&())).await {
        debug!(error = %e, reason, "could not publish an Event");
    }
}

/// Records a problem that stops the loop for this gateway: a condition (and an Event when it is
/// new), as the leader.
async fn report_problem(
    egw: &ElasticGateway,
    ctx: &Context,
    key: &(String, String),
    cond: Condition,
    leader: bool,
) {
    if !leader {
        return;
    }
    let prev = previous_conditions(egw, ctx, key);
    let conditions = carry_transitions(&prev, vec![cond.clone()], unix_now());
    if changed(&prev, &cond) {
        publish(
            ctx,
            egw,
            EventType::Warning,
            &cond.reason,
            "Validate",
            &cond.message,
        )
        .await;
    }
    let status = ElasticGatewayStatus {
        observed_generation: egw.metadata.generation,
        phase: Some("Holding".into()),
        conditions,
        ..egw.status.clone().unwrap_or_default()
    };
    if let Err(e) = write_status(ctx, egw, key, status).await {
        debug!(error = %e, "status write failed");
    }
}

/// Server-side apply of the whole status under [`STATUS_MANAGER`], forced: spillway owns it.
async fn apply_status(
    ctx: &Context,
    ns: &str,
    name: &str,
    status: &ElasticGatewayStatus,
) -> Result<(), kube::Error> {
    let api = Api::<ElasticGateway>::namespaced(ctx.client.clone(), ns);
    let body = json!({
        "apiVersion": ElasticGateway::api_version(&()),
        "kind": ElasticGateway::kind(&()),
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(STATUS_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(())
}

fn condition(
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
fn changed(prev: &[Condition], c: &Condition) -> bool {
    prev.iter()
        .find(|p| p.type_ == c.type_)
        .is_none_or(|p| p.status != c.status || p.reason != c.reason)
}

/// Keeps `lastTransitionTime` of conditions whose status did not change; stamps `now` on the
/// others.
fn carry_transitions(prev: &[Condition], mut next: Vec<Condition>, now: f64) -> Vec<Condition> {
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

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn rfc3339(t: f64) -> String {
    k8s_openapi::jiff::Timestamp::from_second(t as i64)
        .map_or_else(|_| String::new(), |ts| ts.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(rfc3339(0.0), "1970-01-01T00:00:00Z");
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

    #[test]
    fn ready_says_what_spillway_may_do_without_live_values() {
        let mut spec = ElasticGateway::scenario_default().spec;
        assert_eq!(ready_condition(&spec, None).reason, "Deciding");
        spec.dry_run = true;
        assert_eq!(ready_condition(&spec, None).reason, "DryRun");
        spec.paused = true;
        assert_eq!(ready_condition(&spec, None).reason, "Paused");
    }

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
