//! The live loop: a kube-runtime Controller over ElasticGateways. Each reconcile observes (the
//! index, the target, Prometheus), runs the engine, and — only while this replica leads and the
//! policy is not in dry-run — applies the plan, then records Events, status and metrics.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
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
    Condition, CostStatus, DecisionRecord, ElasticGateway, ElasticGatewaySpec,
    ElasticGatewayStatus, TargetKind,
};
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

/// Per gateway: the engine's state and what was last reported.
#[derive(Default)]
struct GatewayMemory {
    engine: EngineState,
    failures: u32,
    conditions: Vec<Condition>,
    last_decision: Option<DecisionRecord>,
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
    let controller = Controller::new(egws, watcher::Config::default().any_semantic());
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
    reconcile_one(&egw, &ns, &name, &ctx).instrument(span).await
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
        let cond = condition("Ready", false, "InvalidPolicy", &msg);
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
            condition("Ready", false, "NamespaceNotWatched", &msg),
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
            condition("Ready", false, "TargetNotFound", &msg),
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
            fast: None,
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

    // Act, only as the leader.
    let applied = if leader {
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
            fast: None,
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

    // Report.
    let mut conditions = vec![];
    let missing: Vec<String> = decision
        .readings
        .iter()
        .filter_map(|r| {
            r.missing.as_ref().map(|w| {
                format!(
                    "{} ({}): {w}",
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
        )
    } else {
        condition(
            "MetricsAvailable",
            false,
            "QueryFailed",
            &missing.join("; "),
        )
    });
    conditions.push(if hpas.is_empty() {
        condition("HpaConflict", false, "NoHpa", "no HorizontalPodAutoscaler targets the gateway")
    } else {
        condition(
            "HpaConflict",
            true,
            "HpaTargetsGateway",
            &format!("HorizontalPodAutoscaler {} also scales the gateway; spillway holds the replica count", hpas.join(", ")),
        )
    });
    conditions.push(condition("Ready", true, "Deciding", &decision.summary()));
    let record = (!applied.is_empty() || decision.replicas.desired != decision.replicas.current)
        .then(|| DecisionRecord {
            time: rfc3339(now),
            kind: decision.replicas.action.as_str().into(),
            reason: decision.replicas.reason.clone(),
        });
    let (prev_conditions, last_decision) = {
        let mut states = ctx
            .states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let m = states.entry(key.clone()).or_default();
        m.engine = next_state;
        m.failures = 0;
        if record.is_some() {
            m.last_decision = record.clone();
        }
        let prev = std::mem::take(&mut m.conditions);
        (prev, m.last_decision.clone())
    };
    let conditions = carry_transitions(&prev_conditions, conditions, now);
    if leader {
        for c in conditions.iter().filter(|c| changed(&prev_conditions, c)) {
            let bad = (c.kind == "MetricsAvailable" && c.status == "False")
                || (c.kind == "HpaConflict" && c.status == "True");
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
        let status = ElasticGatewayStatus {
            observed_generation: egw.metadata.generation,
            phase: Some(decision.phase.as_str().into()),
            desired_replicas: decision.replicas.desired,
            current_replicas: decision.replicas.current,
            ecs_replicas: decision.survey.ecs_pods,
            eci_replicas: decision.survey.eci_pods,
            ecs_capacity: decision.survey.ecs_capacity,
            weights: Some(decision.weights.target),
            last_decision,
            cost_per_hour: Some(CostStatus {
                currency: decision.cost.currency.clone(),
                ecs: round(decision.cost.ecs_per_hour),
                eci: round(decision.cost.eci_per_hour),
                saving: round(decision.cost.saving_per_hour),
            }),
            conditions: conditions.clone(),
        };
        patch_status(ctx, ns, name, &status)
            .await
            .inspect_err(|_| ctx.metrics.error(&gw, ErrorKind::ApiWrite))?;
    }
    if let Ok(mut states) = ctx.states.lock() {
        states.entry(key).or_default().conditions = conditions;
    }
    Ok(requeue)
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
    let prev = {
        let mut states = ctx
            .states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let m = states.entry(key.clone()).or_default();
        std::mem::take(&mut m.conditions)
    };
    let now = unix_now();
    let conditions = carry_transitions(&prev, vec![cond.clone()], now);
    if leader {
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
            conditions: conditions.clone(),
            ..egw.status.clone().unwrap_or_default()
        };
        if let Err(e) = patch_status(ctx, &key.0, &key.1, &status).await {
            debug!(error = %e, "status patch failed");
        }
    }
    if let Ok(mut states) = ctx.states.lock() {
        states.entry(key.clone()).or_default().conditions = conditions;
    }
}

async fn patch_status(
    ctx: &Context,
    ns: &str,
    name: &str,
    status: &ElasticGatewayStatus,
) -> Result<(), kube::Error> {
    let api = Api::<ElasticGateway>::namespaced(ctx.client.clone(), ns);
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status})),
    )
    .await?;
    Ok(())
}

fn condition(kind: &str, ok: bool, reason: &str, message: &str) -> Condition {
    Condition {
        kind: kind.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: message.chars().take(2000).collect(),
        last_transition_time: String::new(),
    }
}

fn changed(prev: &[Condition], c: &Condition) -> bool {
    prev.iter()
        .find(|p| p.kind == c.kind)
        .is_none_or(|p| p.status != c.status || p.reason != c.reason)
}

/// Keeps `lastTransitionTime` of conditions whose status did not change.
fn carry_transitions(prev: &[Condition], mut next: Vec<Condition>, now: f64) -> Vec<Condition> {
    for c in &mut next {
        c.last_transition_time = match prev.iter().find(|p| p.kind == c.kind) {
            Some(p) if p.status == c.status && !p.last_transition_time.is_empty() => {
                p.last_transition_time.clone()
            }
            _ => rfc3339(now),
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
        let a = carry_transitions(&[], vec![condition("Ready", true, "Deciding", "x")], 1000.0);
        let b = carry_transitions(&a, vec![condition("Ready", true, "Deciding", "y")], 2000.0);
        assert_eq!(a[0].last_transition_time, b[0].last_transition_time);
        let c = carry_transitions(
            &b,
            vec![condition("Ready", false, "TargetNotFound", "z")],
            3000.0,
        );
        assert_ne!(b[0].last_transition_time, c[0].last_transition_time);
        assert!(changed(&b, &c[0]));
        assert!(!changed(&a, &b[0]));
        assert_eq!(rfc3339(0.0), "1970-01-01T00:00:00Z");
    }
}
