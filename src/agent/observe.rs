//! Observe: everything one decision needs, read once per reconcile (the policy's validation,
//! the cluster index's health, the target, the HPAs on it, the load, the pods, the fast path),
//! or the one [`Hold`] that says why no decision can be made now.

use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject};
use tracing::{debug, info, warn};

use super::context::{Context, reads_pods};
use super::events::SeenEvents;
use super::wake::Interest;
use crate::act::Scope;
use crate::engine::Observation;
use crate::engine::capacity::PoolUsage;
use crate::fastpath;
use crate::k8s::index::{PlannedSeen, Unsynced, Watched};
use crate::k8s::target::{self, ReplicaWriter, TargetView};
use crate::k8s::{bounded, is_status};
use crate::metrics::ErrorKind;
use crate::model::{Drain, FastSample, GatewayKey, GatewayPod, LoadSample, Node};
use crate::policy::{ElasticGateway, ElasticGatewaySpec, TargetKind};

/// What a reconcile observed: all the engine's inputs but the nodes (read under the index's
/// lock when deciding), and what the status reports beside the decision.
pub struct Observed {
    /// Unix time of the observation.
    pub now: f64,
    pub target: TargetView,
    /// The HorizontalPodAutoscalers on the target.
    pub hpas: Vec<String>,
    /// The effective PromQL of each policy metric, in the policy's order.
    pub queries: Vec<String>,
    pub loads: Vec<LoadSample>,
    pub pods: Vec<GatewayPod>,
    pub fast: Option<FastSample>,
    /// What each pool's pods serve and spend in CPU, while both pools serve.
    pub pool_usage: Option<PoolUsage>,
    /// This decision came more than twice the interval after the last one.
    pub behind: bool,
    /// Other writers of the replica count, lately ([`contest`]).
    pub contenders: Vec<ReplicaWriter>,
    /// The gateway's planned events ([`super::events`]).
    pub events: SeenEvents,
}

impl Observed {
    /// The engine's observation, the one place it is built; `claimed` are the ECS slots other
    /// gateways on these nodes claimed ([`super::ledger`]).
    pub fn observation<'a>(&'a self, nodes: &'a [Node], claimed: i32) -> Observation<'a> {
        Observation {
            now: self.now,
            loads: &self.loads,
            fast: self.fast,
            spec_replicas: self.target.replicas,
            pod_requests: self.target.pod_requests,
            weights: self.target.weights,
            rollout_in_progress: self.target.rollout_in_progress,
            pods: &self.pods,
            nodes,
            ecs_claimed_elsewhere: claimed,
            spread_missing: self.target.spread.missing,
            planned: &self.events.demands,
            pool_usage: self.pool_usage,
        }
    }

    /// What the plan may change: an HPA on the target, ASM's own autoscaling on the
    /// IstioGateway, or another writer of the count lately hold the replica count.
    pub fn scope(&self) -> Scope {
        Scope {
            replicas_held: !self.hpas.is_empty()
                || !self.target.asm_autoscaling.is_empty()
                || !self.contenders.is_empty(),
            replicas_only: false,
        }
    }
}

/// Why no decision is made for a gateway now; reported on its status (`Ready` false with this
/// reason), by an Event when it starts, and in `spillway_held{kind}`.
#[derive(Clone, Debug, PartialEq)]
pub struct Hold {
    /// The condition's reason, and the `kind` label of `spillway_held`.
    pub reason: &'static str,
    pub message: String,
    /// When to look again.
    pub requeue: Duration,
    /// The error it counts as, if it is one.
    pub error: Option<ErrorKind>,
    /// A wait, not a fault: the agent has just started and its watches are still listing. Not
    /// written to the status nor announced by an Event (a restart would otherwise flip `Ready`
    /// and warn every time).
    pub quiet: bool,
}

/// How an observation ends without a decision.
pub enum Stop {
    Held(Hold),
    Failed(crate::Error),
}

impl From<crate::Error> for Stop {
    fn from(e: crate::Error) -> Self {
        Stop::Failed(e)
    }
}

/// Observes one decoded ElasticGateway.
pub async fn observe(
    egw: &ElasticGateway,
    key: &GatewayKey,
    ctx: &Context,
) -> Result<Observed, Stop> {
    let (spec, ns) = (&egw.spec, key.namespace.as_str());
    let behind = ctx.memory.behind(key);
    may_decide(egw, key, ctx)?;
    let target = target(spec, key, ctx).await?;
    ctx.metrics.set_held(key, None);
    let hpas = competing_hpas(spec, ns, ctx);
    let now = crate::clock::unix_now();
    let seen = (ctx.memory.wrote_count(key), ctx.memory.contest(key));
    let (contenders, seen) = contest(&target, seen.0, seen.1, now);
    ctx.memory.set_contest(key, Some(seen));
    let (queries, loads) = read_load(spec, key, ctx, now).await;
    // The gateway's pods, as the cache shows them now: the fast path reads these, the engine
    // decides from them.
    let pods = ctx.index().gateway_pods(
        ns,
        &target.selector,
        &spec.pools.ecs.node_selector,
        &spec.pools.eci.node_selector,
    );
    // The pods' CPU is read beside their counters, not after them.
    let ((fast, rates, drains), cpu) = futures::future::join(
        read_fast_path(spec, key, ctx, &pods),
        read_pool_cpu(spec, key, ctx, &pods, now),
    )
    .await;
    let mut pods = pods;
    for (pod, drain) in drains {
        if let Some(p) = pods.iter_mut().find(|p| p.name == pod) {
            p.drain = Some(drain);
        }
    }
    let pool_usage = cpu.and_then(|cpu| {
        let usage = PoolUsage::of(&pods, &rates, &cpu, now);
        if usage.is_none() {
            debug!("pool usage: no pod of each pool has both a request rate and a CPU reading");
        }
        usage
    });
    if !hpas.is_empty() || !target.asm_autoscaling.is_empty() || !contenders.is_empty() {
        let writers: Vec<&str> = contenders.iter().map(|w| w.manager.as_str()).collect();
        debug!(?hpas, asm = ?target.asm_autoscaling, ?writers, "the replica count is held");
    }
    let events = super::events::read(ctx, key, spec, now);
    Ok(Observed {
        now,
        target,
        hpas,
        queries,
        loads,
        pods,
        fast,
        pool_usage,
        behind,
        contenders,
        events,
    })
}

/// Whether a decision may be made at all: a valid policy, in a watched namespace, from caches
/// that have listed and whose watches work (otherwise ECS capacity would read as 0 and pods as
/// absent).
fn may_decide(egw: &ElasticGateway, key: &GatewayKey, ctx: &Context) -> Result<(), Stop> {
    let ns = key.namespace.as_str();
    let settled = ctx.config.interval * 6;
    let errors = validation_errors(egw, key, ctx);
    if !errors.is_empty() {
        let kind = Some(ErrorKind::InvalidPolicy);
        return Err(hold("InvalidPolicy", errors.join("; "), settled, kind));
    }
    let (watched, health, age, planned) = {
        let ix = ctx.index();
        let seen = ix.planned_seen();
        (ix.watches_namespace(ns), ix.health(ns), ix.age(), seen)
    };
    if !watched {
        let msg = format!(
            "namespace {ns} is not among --gateway-namespaces; spillway does not see its pods"
        );
        return Err(hold("NamespaceNotWatched", msg, settled, None));
    }
    // The PlannedEvents only raise the count; before their first answer the gateway waits
    // the startup grace (a restart within an event's window must not scale in on the load
    // alone), and then decides without them, saying so.
    let health = health.and_then(|()| match planned {
        PlannedSeen::Listing if age < settled.max(STARTUP_GRACE) => {
            Err(Unsynced::NotListed(Watched::PlannedEvents))
        }
        _ => Ok(()),
    });
    if let Err(why) = health {
        let kind = Some(ErrorKind::WatchUnsynced);
        let starting = matches!(why, Unsynced::NotListed(_)) && age < settled.max(STARTUP_GRACE);
        let requeue = if starting {
            STARTUP_RETRY
        } else {
            ctx.tick(&egw.spec)
        };
        return Err(Stop::Held(Hold {
            reason: why.reason(),
            message: why.to_string(),
            requeue,
            error: kind,
            quiet: starting,
        }));
    }
    Ok(())
}

/// The target, which must exist, be readable, and be steered by this policy alone. Records what
/// the gateway's decisions read, for waking it.
async fn target(
    spec: &ElasticGatewaySpec,
    key: &GatewayKey,
    ctx: &Context,
) -> Result<TargetView, Stop> {
    let ns = key.namespace.as_str();
    let target = match read_target(spec, ns, ctx).await {
        Ok(t) => t,
        Err(e) if is_status(&e, 403) => {
            ctx.metrics.error(key, ErrorKind::ApiRead);
            let msg = forbidden_target(spec, ns, &e);
            return Err(hold("TargetForbidden", msg, ctx.tick(spec), None));
        }
        Err(e) => {
            ctx.metrics.error(key, ErrorKind::ApiRead);
            return Err(Stop::Failed(e.into()));
        }
    };
    // Wake on what this decision reads: the pools' nodes, the target's Deployments and pods (any
    // pod of the namespace while the target is missing: it may be coming), the HPAs.
    let selector = target.as_ref().map(|t| t.selector.clone());
    ctx.interests.set(key, interest(spec, ns, selector));
    if let Some(other) = sharing(key, ctx) {
        let msg = format!(
            "ElasticGateway {other} also steers {:?} {}; spillway holds both until one of them is removed (two policies on one workload would fight over its replicas and weights)",
            spec.target.kind, spec.target.name
        );
        return Err(hold("TargetShared", msg, ctx.tick(spec), None));
    }
    target.ok_or_else(|| {
        let (kind, name) = (&spec.target.kind, &spec.target.name);
        let msg = format!("{kind:?} {name} not found in {ns}");
        hold("TargetNotFound", msg, ctx.tick(spec), None)
    })
}

/// What to grant when the target may not be read.
fn forbidden_target(spec: &ElasticGatewaySpec, ns: &str, e: &kube::Error) -> String {
    format!(
        "spillway may not read {:?} {} in {ns} ({e}): {}",
        spec.target.kind,
        spec.target.name,
        target::rbac_hint(spec, ns)
    )
}

fn interest(spec: &ElasticGatewaySpec, ns: &str, pods: Option<kube::core::Selector>) -> Interest {
    Interest {
        namespace: ns.to_string(),
        pods,
        ecs: spec.pools.ecs.node_selector.clone(),
        eci: spec.pools.eci.node_selector.clone(),
        workloads: target::workload_names(spec),
    }
}

fn hold(
    reason: &'static str,
    message: String,
    requeue: Duration,
    error: Option<ErrorKind>,
) -> Stop {
    Stop::Held(Hold {
        reason,
        message,
        requeue,
        error,
        quiet: false,
    })
}

/// How long after start a watch that has not listed yet is a wait rather than a fault (at least
/// six intervals).
const STARTUP_GRACE: Duration = Duration::from_secs(30);
/// How soon a gateway held by a starting watch looks again.
const STARTUP_RETRY: Duration = Duration::from_secs(1);

/// How long spillway leaves the replica count alone after another writer last changed it.
pub const CONTEST_QUIET_SECONDS: f64 = 120.0;

/// What the agent remembers of a gateway's replica count and its other writers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ContestSeen {
    /// The count when last observed.
    pub replicas: i32,
    /// When another writer was last seen changing the count (unix seconds); `None`: never.
    pub active_at: Option<f64>,
}

/// Another writer of the count, and what to remember of it. A field manager other than
/// spillway holds `spec.replicas` after spillway wrote it, or changed the count since spillway
/// last looked: it wrote the count (a person's `kubectl scale`, a CronHPA, ASM's resync, a
/// re-applied manifest). It counts as active while it keeps changing the count, and for
/// [`CONTEST_QUIET_SECONDS`] after; spillway leaves the count alone meanwhile and names it.
/// Whoever made the workload owns the count until then: no contest. Nor is a writer that set
/// the count spillway last wrote (ASM rendering spillway's `replicaCount` into the Deployment
/// that spillway then scales itself once ASM's sync is turned off).
pub fn contest(
    target: &TargetView,
    wrote: Option<i32>,
    seen: Option<ContestSeen>,
    now: f64,
) -> (Vec<ReplicaWriter>, ContestSeen) {
    let others: Vec<ReplicaWriter> = target
        .replica_writers
        .iter()
        .filter(|w| w.manager != target::FIELD_MANAGER)
        .cloned()
        .collect();
    // A change to the count spillway itself wrote is its own (seen late, or through ASM's copy).
    let changed =
        seen.is_some_and(|s| s.replicas != target.replicas) && wrote != Some(target.replicas);
    let before = seen.and_then(|s| s.active_at);
    let quiet = |replicas| ContestSeen {
        replicas,
        active_at: None,
    };
    let overwritten = wrote.is_some_and(|w| w != target.replicas);
    if others.is_empty() || !(overwritten || changed || before.is_some()) {
        return (vec![], quiet(target.replicas));
    }
    let recorded = others
        .iter()
        .filter_map(|w| w.at)
        .fold(f64::NEG_INFINITY, f64::max);
    let active_at = match before {
        Some(at) if !changed => at,
        _ => now,
    }
    .max(recorded);
    let seen = ContestSeen {
        replicas: target.replicas,
        active_at: Some(active_at),
    };
    if now - active_at <= CONTEST_QUIET_SECONDS {
        (others, seen)
    } else {
        (vec![], quiet(target.replicas))
    }
}

/// Another ElasticGateway of the namespace that steers the same workload, if any.
fn sharing(key: &GatewayKey, ctx: &Context) -> Option<GatewayKey> {
    ctx.interests.sharing(key)
}

/// An ElasticGateway that does not decode, held: the message names the fields that keep it
/// from decoding, read afresh as untyped JSON (the watch's decoder says what is wrong but not
/// where), or the decoder's error when the object cannot be read.
pub async fn undecodable(key: &GatewayKey, error: &str, ctx: &Context) -> Hold {
    let error = where_it_fails(ctx, key)
        .await
        .unwrap_or_else(|| error.to_string());
    Hold {
        reason: "Undecodable",
        message: format!("the ElasticGateway does not decode: {error}"),
        requeue: ctx.config.interval * 6,
        error: Some(ErrorKind::Undecodable),
        quiet: false,
    }
}

/// The fields that keep an ElasticGateway from decoding, with their paths
/// (`spec.minReplicas: invalid type: …`); `None` if it cannot be read.
async fn where_it_fails(ctx: &Context, key: &GatewayKey) -> Option<String> {
    let resource = ApiResource::erase::<ElasticGateway>(&());
    let api = Api::<DynamicObject>::namespaced_with(ctx.client.clone(), &key.namespace, &resource);
    let raw = bounded(ctx.config.api_timeout, api.get(&key.name))
        .await
        .ok()?;
    let spec = raw.data.get("spec").cloned().unwrap_or_default();
    let errors = crate::config::from_value::<ElasticGatewaySpec>(spec, |_| true).err()?;
    Some(
        errors
            .iter()
            .map(|e| format!("spec.{e}"))
            .collect::<Vec<_>>()
            .join("; "),
    )
}

/// The validation errors of the spec, computed once per generation: validation parses every
/// PromQL query, which must not be paid on every reconcile.
pub(super) fn validation_errors(
    egw: &ElasticGateway,
    key: &GatewayKey,
    ctx: &Context,
) -> Vec<String> {
    let generation = egw.metadata.generation;
    if let Some(errors) = generation.and_then(|g| ctx.memory.validated(key, g)) {
        return errors;
    }
    let errors: Vec<String> = crate::policy::validate(&egw.spec, &key.namespace)
        .iter()
        .map(ToString::to_string)
        .collect();
    if let Some(g) = generation {
        ctx.memory.set_validated(key, g, errors.clone());
    }
    errors
}

/// The HPAs on the target, from the index's watch of the namespace's HPAs.
fn competing_hpas(spec: &ElasticGatewaySpec, ns: &str, ctx: &Context) -> Vec<String> {
    let targets = target::autoscaler_targets(spec);
    let targets: Vec<(&str, &str)> = targets.iter().map(|(k, n)| (*k, n.as_str())).collect();
    ctx.index().workloads.autoscalers_of(ns, &targets)
}

/// The target: its Deployments from the index (watched in the namespace), an IstioGateway from
/// the mesh's API server.
async fn read_target(
    spec: &ElasticGatewaySpec,
    ns: &str,
    ctx: &Context,
) -> Result<Option<TargetView>, kube::Error> {
    let deployment = |name: &str| ctx.index().workloads.deployment(ns, name);
    Ok(match spec.target.kind {
        TargetKind::Deployment => {
            let d = deployment(&spec.target.name);
            target::assemble(spec, d.as_deref(), None, None)
        }
        TargetKind::IstioGateway => {
            let mesh = ctx.target_client(spec);
            let read = target::read_istio_gateway(mesh, ns, &spec.target.name);
            let gateway = bounded(ctx.config.api_timeout, read).await?;
            let rendered = deployment(&target::rendered_deployment(&spec.target.name));
            target::assemble(spec, None, gateway.as_ref(), rendered.as_deref())
        }
    })
}

/// Every policy metric's query, run at once; a missing value is counted and logged.
async fn read_load(
    spec: &ElasticGatewaySpec,
    key: &GatewayKey,
    ctx: &Context,
    now: f64,
) -> (Vec<String>, Vec<LoadSample>) {
    let queries: Vec<String> = spec
        .metrics
        .iter()
        .map(|m| {
            m.effective_query(&key.namespace, &spec.target)
                .unwrap_or_default()
        })
        .collect();
    let loads: Vec<LoadSample> =
        futures::future::join_all(queries.iter().map(|q| ctx.prom.query(q, now))).await;
    for (m, l) in spec.metrics.iter().zip(&loads) {
        if let LoadSample::Missing(why) = l {
            ctx.metrics.error(key, ErrorKind::PrometheusQuery);
            warn!(metric = %m.display_name(), reason = %why, "load metric missing; holding");
        }
    }
    (queries, loads)
}

/// How often the pods' CPU is read for the ECI pods' share: about a scrape interval, since
/// the engine takes a reading at most every [`crate::engine::capacity::READING_SECONDS`].
const CPU_READ_SECONDS: f64 = 10.0;

/// Each gateway pod's CPU (cAdvisor through Prometheus), to join with the fast path's per-pod
/// rates: the evidence for how much an ECI pod serves beside an ECS pod. Read only while both
/// pools have ready pods and the fast path applies, not when the policy states the share
/// (`eci.relativeCapacity`), and at most every [`CPU_READ_SECONDS`]: a query every ten seconds
/// at peaks, none in normal times. A failed query teaches nothing and holds nothing (the
/// share learnt so far stays).
async fn read_pool_cpu(
    spec: &ElasticGatewaySpec,
    key: &GatewayKey,
    ctx: &Context,
    pods: &[GatewayPod],
    now: f64,
) -> Option<Vec<(String, f64)>> {
    if spec.eci.relative_capacity.is_some() || ctx.fast_path.is_none() || !reads_pods(spec) {
        return None;
    }
    let ready_in = |pool: crate::model::Pool| pods.iter().any(|p| p.pool == pool && p.ready);
    let due = ready_in(crate::model::Pool::Ecs)
        && ready_in(crate::model::Pool::Eci)
        && ctx.memory.cpu_read_due(key, now, CPU_READ_SECONDS);
    if !due {
        return None;
    }
    let query = crate::policy::cpu_per_pod_query(&key.namespace, &spec.target.name);
    match ctx.prom.query(&query, now).await {
        LoadSample::PerPod(cpu) => {
            // The virtual node may not export its pods' cAdvisor series: then nothing is
            // learnt, and the operator should know (once). Judged on ECI pods old enough to
            // have been scraped twice.
            let mut settled = pods.iter().filter(|p| {
                p.pool == crate::model::Pool::Eci
                    && p.ready
                    && now - p.created_at >= crate::engine::capacity::MIN_POD_AGE_SECONDS
            });
            let judged = settled.clone().next().is_some();
            let eci_read = settled.any(|p| cpu.iter().any(|(n, _)| *n == p.name));
            if judged && !ctx.memory.eci_cpu_missing(key, !eci_read) && !eci_read {
                warn!(
                    %query,
                    "per-pool capacity: Prometheus has CPU for none of the gateway's ECI pods; they count as ECS pods (set eci.relativeCapacity if they serve less)"
                );
            }
            Some(cpu)
        }
        other => {
            debug!(?other, %query, "pool usage: no per-pod CPU; ECI pods keep the share learnt so far");
            None
        }
    }
}

/// The fast path's reading of the gateway's ready pods, scaled to the serving fleet (`None` when
/// it is off, does not apply, or no pod gave a rate), each pod's rate, and what each pod said
/// of its live connections (for the choice of a scale-in's pods). Each pod that failed
/// is counted by kind; the log says when every pod read fails and when reads work again.
async fn read_fast_path(
    spec: &ElasticGatewaySpec,
    key: &GatewayKey,
    ctx: &Context,
    pods: &[GatewayPod],
) -> (Option<FastSample>, Vec<(String, f64)>, Vec<(String, Drain)>) {
    let Some(fast_path) = ctx.fast_path.as_ref().filter(|_| reads_pods(spec)) else {
        return (None, Vec::new(), Vec::new());
    };
    let targets = {
        let ix = ctx.index();
        fastpath::targets(pods, |pod| ix.pod_ip(&key.namespace, pod))
    };
    if targets.is_empty() {
        return (None, Vec::new(), Vec::new());
    }
    // A pod at its target is plausible whatever its peers read (PEER_FACTOR times that).
    let floor = spec
        .metrics
        .iter()
        .find(|m| m.preset == Some(crate::policy::Preset::RequestRate))
        .map_or(0.0, |m| m.target_per_replica);
    let round = fast_path.read(key, &targets, floor).await;
    for (pod, e) in &round.failures {
        ctx.metrics.fast_path_failure(key, e.kind());
        if matches!(e, fastpath::PodError::Implausible { .. }) {
            debug!(%pod, error = %e, "fast path: this pod's rate counted at the bound");
        } else {
            debug!(%pod, error = %e, "fast path: no reading from this pod");
        }
    }
    let implausible = round
        .failures
        .iter()
        .find(|(_, e)| matches!(e, fastpath::PodError::Implausible { .. }));
    if !ctx.memory.fast_path_implausible(key, implausible.is_some())
        && let Some((pod, e)) = implausible
    {
        warn!(
            %pod,
            error = %e,
            "fast path: a gateway pod's request rate is far above its peers' (a broken or forged counter?); it counts at the bound until it reads like its peers"
        );
    }
    let sample = round.sample();
    let all_failed = sample.is_none() && !round.failures.is_empty();
    let was_failing = ctx.memory.fast_path_failing(key, all_failed);
    if all_failed && !was_failing {
        let (pod, e) = &round.failures[0];
        warn!(
            failed = round.failures.len(),
            %pod,
            error = %e,
            port = fast_path.config().port,
            "fast path: no gateway pod's counters could be read (NetworkPolicy, port, metric name?); Prometheus alone sizes the fleet until they can"
        );
    } else if was_failing && sample.is_some() {
        info!("fast path: reading the gateway pods' counters again");
    }
    (sample, round.per_pod, round.drains)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Resources;

    fn view(writers: &[&str], generation: i64) -> TargetView {
        TargetView {
            replicas: 4,
            pod_requests: Resources::pod(1000, 1 << 30),
            weights: None,
            rollout_in_progress: false,
            selector: kube::core::Selector::from_iter([("app".to_string(), "gw".to_string())]),
            preferred_terms: vec![],
            asm_autoscaling: vec![],
            uid: None,
            replica_writers: writers
                .iter()
                .map(|m| ReplicaWriter {
                    manager: m.to_string(),
                    operation: "Update".into(),
                    subresource: Some("scale".into()),
                    at: None,
                })
                .collect(),
            generation: Some(generation),
            spread: target::PoolSpread::default(),
        }
    }

    /// Another writer holds the count after spillway wrote it, or changed it since spillway
    /// looked: named while it keeps changing the count, and for the quiet period after; never
    /// the workload's maker before anything changed, never spillway itself.
    #[test]
    fn another_writer_of_the_count_is_a_contest_while_it_writes() {
        let spillway = target::FIELD_MANAGER;
        let with = |replicas: i32, writers: &[&str]| TargetView {
            replicas,
            ..view(writers, 1)
        };
        // The workload's maker owns the count, nothing changed: no contest.
        let (c, seen) = contest(&with(4, &["helm"]), None, None, 0.0);
        assert!(c.is_empty());
        // A template change by the maker (the count unchanged): still none.
        let (c, seen) = contest(&with(4, &["helm"]), None, Some(seen), 10.0);
        assert!(c.is_empty());
        // spillway's own write.
        let (c, seen) = contest(&with(6, &[spillway]), Some(6), Some(seen), 20.0);
        assert!(c.is_empty());
        // kubectl took it since.
        let (c, seen) = contest(&with(5, &["kubectl"]), Some(6), Some(seen), 100.0);
        assert_eq!(
            c.iter().map(|w| w.manager.as_str()).collect::<Vec<_>>(),
            ["kubectl"]
        );
        // It writes again: the quiet period restarts.
        let (c, seen) = contest(&with(7, &["kubectl"]), Some(6), Some(seen), 200.0);
        assert_eq!((c.len(), seen.active_at), (1, Some(200.0)));
        // Unchanged within the quiet period: still contested; quiet for longer: spillway's again.
        let (c, seen) = contest(
            &with(7, &["kubectl"]),
            Some(6),
            Some(seen),
            200.0 + CONTEST_QUIET_SECONDS,
        );
        assert_eq!(c.len(), 1);
        let (c, _) = contest(
            &with(7, &["kubectl"]),
            Some(6),
            Some(seen),
            201.0 + CONTEST_QUIET_SECONDS,
        );
        assert!(c.is_empty());
        // After a restart (spillway has not written yet), a change of the count by another
        // field manager is a contest too.
        let (_, seen) = contest(&with(4, &["cron-scaler"]), None, None, 0.0);
        let (c, _) = contest(&with(5, &["cron-scaler"]), None, Some(seen), 3.0);
        assert_eq!(c.len(), 1);
        // A writer that set the count spillway wrote (ASM rendering spillway's replicaCount into
        // the Deployment spillway now scales itself): no contest, however recent its write.
        let (_, seen) = contest(&with(2, &[spillway]), Some(2), None, 0.0);
        let mut asm = view(&["asm-renderer"], 1);
        asm.replicas = 2;
        asm.replica_writers[0].at = Some(9.0);
        let (c, _) = contest(&asm, Some(2), Some(seen), 10.0);
        assert!(c.is_empty());
        // Nor when spillway last looked before its own write (the count it saw was 20).
        let stale = ContestSeen {
            replicas: 20,
            active_at: None,
        };
        let (c, _) = contest(&asm, Some(2), Some(stale), 10.0);
        assert!(c.is_empty());
    }
}
