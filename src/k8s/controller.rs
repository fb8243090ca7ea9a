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

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{self, finalizer};
use kube::runtime::reflector;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::watch;
use tracing::{Instrument, debug, error, info, info_span, warn};

use super::index::ClusterIndex;
use super::leader::{Fenced, Leadership};
use super::{bounded, is_status, target};
use crate::act::Plan;
use crate::engine::{self, Decision, EngineState, Observation};
use crate::fastpath::{self, FastPath};
use crate::metrics::{ErrorKind, Metrics};
use crate::model::GatewayKey;
use crate::model::{FastSample, LoadSample};
use crate::policy::{
    CostStatus, DecisionRecord, ElasticGateway, ElasticGatewaySpec, ElasticGatewayStatus,
    OriginalPlacement,
};

/// The finalizer that hands the gateway back when its ElasticGateway is deleted.
pub const FINALIZER: &str = "spillway.io/restore-gateway";
/// The field manager of status writes (server-side apply), apart from the gateway's writes.
pub const STATUS_MANAGER: &str = "spillway-status";
use crate::clock::{rfc3339, unix_now};
use crate::prom::Prometheus;

/// Settings of the loop.
#[derive(Clone, Debug)]
pub struct Config {
    /// Decide at least this often per gateway.
    pub interval: Duration,
    /// Reporter name on Events (the controller) and instance (the pod).
    pub reporter: String,
    pub instance: Option<String>,
    /// Longest one API call may take.
    pub api_timeout: Duration,
    /// Longest one reconcile may take, all its calls together.
    pub reconcile_timeout: Duration,
    /// After shutdown is asked for, how long in-flight reconciles may still run.
    pub shutdown_grace: Duration,
}

impl Config {
    /// Defaults for a loop deciding every `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            reporter: "spillway".into(),
            instance: None,
            api_timeout: super::DEFAULT_API_TIMEOUT,
            reconcile_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(20),
        }
    }
}

/// An ElasticGateway as watched: one that cannot be decoded is still seen (by name), reported,
/// and skipped, instead of failing the list of every other one.
pub type WatchedGateway = DeserializeGuard<ElasticGateway>;

/// What every reconcile shares.
pub struct Context {
    /// For requests: every read bounded.
    pub client: Client,
    /// For the ElasticGateway watch: no read timeout.
    pub watch_client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub prom: Prometheus,
    pub index: Arc<RwLock<ClusterIndex>>,
    /// Whether, and until when, this replica may write (see [`super::leader`]).
    pub leader: Leadership,
    pub config: Config,
    /// ASM's API server, where IstioGateways live; `None`: they live beside the pods.
    pub mesh_client: Option<Client>,
    /// Reads the gateway pods' own request counters between Prometheus's scrapes; `None`: off.
    pub fast_path: Option<FastPath>,
    states: Mutex<HashMap<(String, String), GatewayMemory>>,
}

/// Per gateway: the engine's state and what this replica last wrote while leading.
#[derive(Default)]
struct GatewayMemory {
    engine: EngineState,
    failures: u32,
    /// This replica led at the last decision: its engine memory describes what it applied.
    led: bool,
    /// The validation result of the spec at this generation (validation parses PromQL).
    validated: Option<(i64, Vec<String>)>,
    /// The conditions of the last status write, fresher than the cache right after it; `None`
    /// until this replica writes as the leader (then the object's status is the truth).
    written: Option<Vec<Condition>>,
    /// `status.original` as this replica recorded it, until the cache shows it.
    original: Option<OriginalPlacement>,
    /// The fast path's last read got nothing from any pod (logged once, when it starts).
    fast_path_failing: bool,
}

impl Context {
    pub fn new(
        client: Client,
        watch_client: Client,
        metrics: Arc<Metrics>,
        prom: Prometheus,
        index: Arc<RwLock<ClusterIndex>>,
        leader: Leadership,
        config: Config,
    ) -> Self {
        let reporter = Reporter {
            controller: config.reporter.clone(),
            instance: config.instance.clone(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            watch_client,
            metrics,
            prom,
            index,
            leader,
            config,
            mesh_client: None,
            fast_path: None,
            states: Mutex::new(HashMap::new()),
        }
    }

    /// IstioGateways are read and written on this client (ASM's API server) instead; nodes,
    /// pods, Deployments, HPAs, Events and the Lease stay on the data plane's.
    pub fn with_mesh_client(mut self, client: Client) -> Self {
        self.mesh_client = Some(client);
        self
    }

    /// Reads the gateway pods' counters (for gateways with a request-rate metric), and decides
    /// for them every `fast_path.interval`.
    pub fn with_fast_path(mut self, fast_path: FastPath) -> Self {
        self.fast_path = Some(fast_path);
        self
    }

    /// How soon to decide again for this gateway: the fast path's interval when it reads its
    /// pods, else the loop's.
    fn tick(&self, spec: &ElasticGatewaySpec) -> Duration {
        match &self.fast_path {
            Some(f) if reads_pods(spec) => self.config.interval.min(f.config().interval),
            _ => self.config.interval,
        }
    }

    /// The client that holds the target: ASM's API server for an IstioGateway when one is set.
    fn target_client(&self, spec: &ElasticGatewaySpec) -> &Client {
        match (&spec.target.kind, &self.mesh_client) {
            (crate::policy::TargetKind::IstioGateway, Some(mesh)) => mesh,
            _ => &self.client,
        }
    }

    fn is_leader(&self) -> bool {
        self.leader.is_leader()
    }

    /// The fence before a write: it goes out only while this replica holds the Lease with at
    /// least one `api_timeout` left, the longest the write may take (it is bounded by that), so
    /// that it is answered or abandoned before another replica may lead. Otherwise it is not
    /// sent, and this says so (WARN, `spillway_fenced_writes_total`); the caller drops the rest
    /// of its plan.
    fn fence(&self, write: &str) -> Result<(), Fenced> {
        self.leader
            .permit(self.config.api_timeout)
            .inspect_err(|f| {
                self.metrics.fenced(f.reason(), write);
                warn!(write, reason = %f, "fenced: write not sent; dropping the rest of this decision's plan");
            })
    }

    fn states(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), GatewayMemory>> {
        self.states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn has_memory(&self) -> bool {
        !self.states().is_empty()
    }

    /// Drops the memory and the metric series of gateways that no longer exist.
    fn forget_missing(&self, live: &std::collections::HashSet<(String, String)>) {
        let gone: Vec<(String, String)> = {
            let mut states = self.states();
            let gone = states
                .keys()
                .filter(|k| !live.contains(*k))
                .cloned()
                .collect::<Vec<_>>();
            for k in &gone {
                states.remove(k);
                if let Some(f) = &self.fast_path {
                    f.forget(k);
                }
            }
            gone
        };
        for (ns, name) in gone {
            info!(namespace = %ns, name = %name, "ElasticGateway deleted; removing its series");
            self.metrics.forget(&GatewayKey::new(&ns, &name));
        }
    }
}

/// Runs the controller until `shutdown` resolves, then gives in-flight reconciles
/// `config.shutdown_grace` to finish: shutdown is bounded whatever the API server does.
pub async fn run(
    ctx: Arc<Context>,
    index_changes: watch::Receiver<u64>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), crate::Error> {
    let shutdown = shutdown.boxed().shared();
    let egws = Api::<WatchedGateway>::all(ctx.watch_client.clone());
    // Wait for the API server and the CRD, saying clearly what is missing.
    tokio::select! {
        r = preflight(&egws, ctx.config.api_timeout) => r,
        () = shutdown.clone() => return Ok(()),
    }
    let changes = futures::stream::unfold(index_changes, |mut rx| async move {
        rx.changed().await.ok()?;
        Some(((), rx))
    });
    // Wake on what the user changed (generation), on deletion and on finalizers, never on
    // spillway's own status writes. Changes to the target (scaled by hand, a rollout) show as
    // changes of its pods, which the pod watch reports; nothing else needs watching
    // cluster-wide to wake a reconcile.
    let (reader, writer) = reflector::store();
    let trigger = reflector::reflector(
        writer,
        watcher(egws, watcher::Config::default().any_semantic()),
    )
    .default_backoff()
    .applied_objects()
    .predicate_filter(wake_on, Default::default());
    let controller = Controller::for_stream(trigger, reader);
    let store = controller.store();
    let sweeper = {
        let (ctx, store) = (ctx.clone(), store.clone());
        async move {
            let mut tick = tokio::time::interval(ctx.config.interval);
            loop {
                tick.tick().await;
                if store.is_empty() && !ctx.has_memory() {
                    continue;
                }
                let live: std::collections::HashSet<(String, String)> = store
                    .state()
                    .iter()
                    .map(|e| (e.namespace().unwrap_or_default(), e.name_any()))
                    .collect();
                ctx.forget_missing(&live);
            }
        }
    };
    let controller = controller
        .with_config(
            ControllerConfig::default()
                .debounce(Duration::from_millis(500))
                .concurrency(4),
        )
        .reconcile_all_on(changes)
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
    }
    Ok(())
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
fn wake_on<K: Resource>(egw: &K) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    egw.meta().generation.hash(&mut h);
    egw.meta().deletion_timestamp.is_some().hash(&mut h);
    egw.meta().finalizers.hash(&mut h);
    Some(h.finish())
}

fn error_policy(egw: Arc<WatchedGateway>, err: &crate::Error, ctx: Arc<Context>) -> Action {
    let key = (egw.namespace().unwrap_or_default(), egw.name_any());
    let failures = {
        let mut states = ctx.states();
        let m = states.entry(key.clone()).or_default();
        m.failures += 1;
        m.failures
    };
    // 1 s, 2 s, 4 s … capped at the interval: a transient API error retries soon.
    let backoff = Duration::from_secs(1 << failures.min(6)).min(ctx.config.interval);
    warn!(namespace = %key.0, name = %key.1, error = %err, ?backoff, "reconcile failed; retrying");
    Action::requeue(backoff)
}

async fn reconcile(obj: Arc<WatchedGateway>, ctx: Arc<Context>) -> Result<Action, crate::Error> {
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let span = info_span!("reconcile", namespace = %ns, name = %name);
    let egw = match &obj.0 {
        Ok(egw) => egw,
        Err(invalid) => {
            return Ok(undecodable(&obj, &invalid.error, &ns, &name, &ctx)
                .instrument(span)
                .await);
        }
    };
    let limit = ctx.config.reconcile_timeout;
    // The finalizer helper needs the decoded object, as an `Arc` of its own.
    let egw = Arc::new(egw.clone());
    match tokio::time::timeout(limit, decoded(egw, &ns, &name, &ctx).instrument(span)).await {
        Ok(r) => r,
        Err(_) => Err(crate::Error::Timeout(format!(
            "the reconcile of {ns}/{name} took longer than {limit:?}"
        ))),
    }
}

/// An ElasticGateway that does not decode: said at WARN, counted, and shown on its status; the
/// other gateways go on.
async fn undecodable(
    obj: &WatchedGateway,
    error: &str,
    ns: &str,
    name: &str,
    ctx: &Context,
) -> Action {
    let gw = GatewayKey::new(ns, name);
    ctx.metrics.error(&gw, ErrorKind::Undecodable);
    ctx.metrics.set_held(&gw, Some("Undecodable"));
    let error = match where_it_fails(ctx, ns, name).await {
        Some(fields) => fields,
        None => error.to_string(),
    };
    let msg = format!("the ElasticGateway does not decode: {error}");
    warn!(namespace = %ns, name = %name, %msg, "skipping an ElasticGateway");
    let target = Target {
        oref: obj.object_ref(&()),
        generation: obj.meta().generation,
        status: None,
        typed: false,
    };
    let key = (ns.to_string(), name.to_string());
    let cond = condition("Ready", false, "Undecodable", &msg, target.generation);
    report_problem(&target, ctx, &key, cond, ctx.is_leader()).await;
    Action::requeue(ctx.config.interval * 6)
}

/// The fields that keep an ElasticGateway from decoding, with their paths
/// (`spec.minReplicas: invalid type: …`), read afresh as untyped JSON; `None` if it cannot be
/// read. The watch's decoder says what is wrong but not where.
async fn where_it_fails(ctx: &Context, ns: &str, name: &str) -> Option<String> {
    let resource = kube::api::ApiResource::erase::<ElasticGateway>(&());
    let api = Api::<kube::api::DynamicObject>::namespaced_with(ctx.client.clone(), ns, &resource);
    let raw = bounded(ctx.config.api_timeout, api.get(name)).await.ok()?;
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

/// What Events and status patches need of the ElasticGateway.
struct Target {
    oref: ObjectReference,
    generation: Option<i64>,
    status: Option<ElasticGatewayStatus>,
    /// Whether the stored object matches the CRD's schema. One that does not (stored under an
    /// older schema) cannot take a server-side apply: the apiserver cannot type it.
    typed: bool,
}

impl Target {
    fn of(egw: &ElasticGateway) -> Self {
        Self {
            oref: egw.object_ref(&()),
            generation: egw.metadata.generation,
            status: egw.status.clone(),
            typed: true,
        }
    }
}

/// The validation errors of the spec, computed once per generation: validation parses every
/// PromQL query, which must not be paid on every reconcile.
fn validation_errors(egw: &ElasticGateway, ns: &str, ctx: &Context) -> Vec<String> {
    let key = (ns.to_string(), egw.name_any());
    let generation = egw.metadata.generation;
    if let Some(g) = generation
        && let Some((at, errors)) = ctx.states().get(&key).and_then(|m| m.validated.clone())
        && at == g
    {
        return errors;
    }
    let errors: Vec<String> = crate::policy::validate(&egw.spec, ns)
        .iter()
        .map(ToString::to_string)
        .collect();
    if let Some(g) = generation {
        ctx.states().entry(key).or_default().validated = Some((g, errors.clone()));
    }
    errors
}

/// A decoded ElasticGateway: the follower decides without writing; the leader runs the
/// reconcile under the finalizer once spillway may change the gateway.
async fn decoded(
    egw: Arc<ElasticGateway>,
    ns: &str,
    name: &str,
    ctx: &Context,
) -> Result<Action, crate::Error> {
    if !ctx.is_leader() {
        // A follower observes and decides (for its logs and a fast takeover) but writes
        // nothing, not even the finalizer.
        ctx.states()
            .entry((ns.to_string(), name.to_string()))
            .or_default()
            .written = None;
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
        return reconcile_one(&egw, ns, name, ctx).await;
    }
    let api = Api::<ElasticGateway>::namespaced(ctx.client.clone(), ns);
    finalizer(&api, FINALIZER, egw, |event| async {
        match event {
            finalizer::Event::Apply(egw) => reconcile_one(&egw, ns, name, ctx).await,
            finalizer::Event::Cleanup(egw) => hand_back(&egw, ns, ctx).await,
        }
    })
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
    let oref = egw.object_ref(&());
    let t = ctx.config.api_timeout;
    if spec.paused {
        let note = "deleted while paused: the gateway is left as it is now (weights and deletion costs untouched)";
        info!(note, "handing back");
        publish(
            ctx,
            &oref,
            EventType::Normal,
            "HandedBack",
            "Uninstall",
            note,
        )
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
    let pods = match bounded(
        t,
        target::read(ctx.target_client(spec), &ctx.client, ns, spec),
    )
    .await?
    {
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
    publish(
        ctx,
        &oref,
        EventType::Normal,
        "HandedBack",
        "Uninstall",
        &note,
    )
    .await;
    ctx.states().remove(&(ns.to_string(), egw.name_any()));
    Ok(Action::await_change())
}

async fn reconcile_one(
    egw: &ElasticGateway,
    ns: &str,
    name: &str,
    ctx: &Context,
) -> Result<Action, crate::Error> {
    let gw = GatewayKey::new(ns, name);
    let key = (ns.to_string(), name.to_string());
    let spec = &egw.spec;
    let requeue = Action::requeue(ctx.tick(spec));
    let leader = ctx.is_leader();
    let me = Target::of(egw);
    let timeout = ctx.config.api_timeout;

    let errors = validation_errors(egw, ns, ctx);
    if !errors.is_empty() {
        ctx.metrics.error(&gw, ErrorKind::InvalidPolicy);
        ctx.metrics.set_held(&gw, Some("InvalidPolicy"));
        let msg = errors.join("; ");
        warn!(%msg, "invalid policy; not acting on it");
        let cond = condition("Ready", false, "InvalidPolicy", &msg, me.generation);
        report_problem(&me, ctx, &key, cond, leader).await;
        return Ok(Action::requeue(ctx.config.interval * 6));
    }
    let (watched, health) = {
        let ix = ctx
            .index
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (ix.watches_namespace(ns), ix.health())
    };
    if !watched {
        let msg = format!(
            "namespace {ns} is not among --gateway-namespaces; spillway does not see its pods"
        );
        ctx.metrics.set_held(&gw, Some("NamespaceNotWatched"));
        let cond = condition("Ready", false, "NamespaceNotWatched", &msg, me.generation);
        report_problem(&me, ctx, &key, cond, leader).await;
        return Ok(Action::requeue(ctx.config.interval * 6));
    }
    // No decision from a cache that has not listed, or whose watch is failing: ECS capacity
    // would read as 0 and pods as absent. Hold, and say why.
    if let Err(why) = health {
        ctx.metrics.error(&gw, ErrorKind::WatchUnsynced);
        ctx.metrics.set_held(&gw, Some(why.reason()));
        let cond = condition(
            "Ready",
            false,
            why.reason(),
            &why.to_string(),
            me.generation,
        );
        if changed(&previous_conditions(&me, ctx, &key), &cond) {
            warn!(reason = %why, "holding: the cluster cache cannot be trusted");
        }
        report_problem(&me, ctx, &key, cond, leader).await;
        return Ok(requeue);
    }
    let read = target::read(ctx.target_client(spec), &ctx.client, ns, spec);
    let Some(target) = bounded(timeout, read)
        .await
        .inspect_err(|_| ctx.metrics.error(&gw, ErrorKind::ApiRead))?
    else {
        let msg = format!(
            "{:?} {} not found in {ns}",
            spec.target.kind, spec.target.name
        );
        ctx.metrics.set_held(&gw, Some("TargetNotFound"));
        let cond = condition("Ready", false, "TargetNotFound", &msg, me.generation);
        report_problem(&me, ctx, &key, cond, leader).await;
        return Ok(requeue);
    };
    // An HPA on the same workload would fight over the count. When the HPAs cannot be listed,
    // assume one is there (fail closed): hold the count, decide the rest.
    let hpas = bounded(timeout, target::competing_hpas(&ctx.client, ns, spec))
        .await
        .map_err(|e| {
            ctx.metrics.error(&gw, ErrorKind::ApiRead);
            warn!(error = %e, "cannot list HorizontalPodAutoscalers; holding the replica count");
            e.to_string()
        });
    ctx.metrics.set_held(&gw, None);

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
    // The gateway's pods, as the cache shows them now: the fast path reads these, the engine
    // decides from them.
    let pods = ctx
        .index
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .gateway_pods(
            ns,
            &target.selector,
            &spec.pools.ecs.node_selector,
            &spec.pools.eci.node_selector,
        );
    let fast = read_fast_path(ctx, &gw, &key, spec, &pods).await;

    // The engine's memory. A replica that starts leading starts it afresh, as a restarted one
    // does: the HPA seed then holds the count for a full scale-down window of fresh data.
    let prev = {
        let mut states = ctx.states();
        let m = states.entry(key.clone()).or_default();
        if leader && !m.led {
            info!(
                "leading: engine memory starts afresh (no scale-down for one stabilization window)"
            );
            m.engine = EngineState::default();
        }
        m.led = leader;
        m.engine.clone()
    };
    // Decide, under the index's lock (no await inside).
    let (decision, next_state, elapsed) = {
        let mut ix = ctx
            .index
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let nodes = ix.nodes();
        let obs = Observation {
            now,
            loads: &loads,
            fast,
            spec_replicas: target.replicas,
            pod_requests: target.pod_requests,
            weights: target.weights,
            rollout_in_progress: target.rollout_in_progress,
            pods: &pods,
            nodes,
        };
        let started = Instant::now();
        let out = engine::decide(spec, &obs, &prev);
        (out.decision, out.state, started.elapsed().as_secs_f64())
    };
    let mut plan = Plan::from_decision(spec, &decision);
    // ASM's own autoscaling on the IstioGateway is an HPA by another name.
    if !matches!(&hpas, Ok(h) if h.is_empty()) || !target.asm_autoscaling.is_empty() {
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
            match apply_status(ctx, ns, name, &status).await {
                Ok(()) => {}
                // Not leading long enough: no plan, no report; the next decision starts afresh.
                Err(crate::Error::Fenced(_)) => return Ok(requeue),
                Err(e) => {
                    ctx.metrics.error(&gw, ErrorKind::ApiWrite);
                    return Err(e);
                }
            }
            ctx.states().entry(key.clone()).or_default().original = Some(original);
        }
        apply(&me, ctx, &gw, ns, spec, &plan, &decision).await
    } else {
        Applied {
            plan: Plan::default(),
            errors: vec![],
            fenced: false,
        }
    };
    let Applied {
        plan: applied,
        errors: write_errors,
        fenced,
    } = applied;
    let next_state = commit(&prev, next_state, spec, &decision, &applied);
    ctx.metrics
        .record_decision(&gw, spec, &pods, fast, &decision, &applied, elapsed);
    ctx.metrics.record_drills(
        &gw,
        &crate::policy::marks::parse(egw.metadata.annotations.as_ref()),
        now,
    );
    {
        let mut states = ctx
            .states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let m = states.entry(key.clone()).or_default();
        m.engine = next_state;
        m.failures = 0;
    }
    // A replica that lost the Lease mid-plan reports nothing: the new leader does.
    if !leader || fenced {
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
    conditions.push(match &hpas {
        Ok(h) if h.is_empty() => condition(
            "HpaConflict",
            false,
            "NoHpa",
            "no HorizontalPodAutoscaler targets the gateway",
            generation,
        ),
        Ok(h) => condition(
            "HpaConflict",
            true,
            "HpaTargetsGateway",
            &format!(
                "HorizontalPodAutoscaler {} also scales the gateway; spillway holds the replica count",
                h.join(", ")
            ),
            generation,
        ),
        Err(e) => Condition {
            status: "Unknown".into(),
            ..condition(
                "HpaConflict",
                false,
                "HpaListFailed",
                &format!(
                    "cannot list HorizontalPodAutoscalers ({e}); spillway holds the replica count until it can check"
                ),
                generation,
            )
        },
    });
    if spec.target.kind == crate::policy::TargetKind::IstioGateway {
        conditions.push(if target.asm_autoscaling.is_empty() {
            condition(
                "AsmAutoscaling",
                false,
                "NoAsmAutoscaling",
                "the IstioGateway sets no ASM autoscaling",
                generation,
            )
        } else {
            condition(
                "AsmAutoscaling",
                true,
                "AsmAutoscalingEnabled",
                &format!(
                    "the IstioGateway sets {}: ASM runs an HPA on the gateway; spillway holds the replica count (remove the setting to let spillway scale)",
                    target.asm_autoscaling.join(", ")
                ),
                generation,
            )
        });
    }
    if !spec.dry_run && !spec.paused {
        conditions.push(if write_errors.is_empty() {
            condition(
                "Applied",
                true,
                "WritesSucceeded",
                "every change was applied",
                generation,
            )
        } else {
            condition(
                "Applied",
                false,
                "WriteFailed",
                &format!("{}; the next decision tries again", write_errors.join("; ")),
                generation,
            )
        });
    }
    conditions.push(ready_condition(spec, generation));
    let prev = previous_conditions(&me, ctx, &key);
    let conditions = carry_transitions(&prev, conditions, now);
    for c in conditions.iter().filter(|c| changed(&prev, c)) {
        let bad = (c.type_ == "MetricsAvailable" && c.status == "False")
            || (c.type_ == "HpaConflict" && c.status != "False")
            || (c.type_ == "AsmAutoscaling" && c.status == "True");
        if bad {
            publish(
                ctx,
                &me.oref,
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
            kind: decision.replicas.direction.as_str().into(),
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
        original: old
            .original
            .clone()
            .or_else(|| ctx.states().get(&key).and_then(|m| m.original.clone())),
        conditions,
    };
    match write_status(ctx, &me, &key, status).await {
        Ok(()) | Err(crate::Error::Fenced(_)) => Ok(requeue),
        Err(e) => {
            ctx.metrics.error(&gw, ErrorKind::ApiWrite);
            Err(e)
        }
    }
}

/// Whether the fast path applies: the engine uses it for the first request-rate metric.
fn reads_pods(spec: &ElasticGatewaySpec) -> bool {
    spec.metrics
        .iter()
        .any(|m| m.preset == Some(crate::policy::Preset::RequestRate))
}

/// The fast path's reading of the gateway's ready pods, scaled to the serving fleet; `None` when
/// it is off, does not apply, or no pod gave a rate. Each pod that failed is counted by kind;
/// the log says when every pod read fails and when reads work again.
async fn read_fast_path(
    ctx: &Context,
    gw: &GatewayKey,
    key: &(String, String),
    spec: &ElasticGatewaySpec,
    pods: &[crate::model::GatewayPod],
) -> Option<FastSample> {
    let fast_path = ctx.fast_path.as_ref().filter(|_| reads_pods(spec))?;
    let targets = {
        let ix = ctx
            .index
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        fastpath::targets(pods, |pod| ix.pod_ip(&key.0, pod))
    };
    if targets.is_empty() {
        return None;
    }
    let round = fast_path.read(key, &targets).await;
    for (pod, e) in &round.failures {
        ctx.metrics.fast_path_failure(gw, e.kind());
        debug!(%pod, error = %e, "fast path: no reading from this pod");
    }
    let sample = round.sample();
    let all_failed = sample.is_none() && !round.failures.is_empty();
    let was_failing = {
        let mut states = ctx.states();
        let m = states.entry(key.clone()).or_default();
        std::mem::replace(&mut m.fast_path_failing, all_failed)
    };
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
    sample
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
fn previous_conditions(me: &Target, ctx: &Context, key: &(String, String)) -> Vec<Condition> {
    let written = ctx.states().get(key).and_then(|m| m.written.clone());
    written.unwrap_or_else(|| {
        me.status
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default()
    })
}

/// Applies the status when it differs from the object's, and remembers its conditions.
async fn write_status(
    ctx: &Context,
    me: &Target,
    key: &(String, String),
    status: ElasticGatewayStatus,
) -> Result<(), crate::Error> {
    let conditions = status.conditions.clone();
    // An untyped object's status is not read back (it does not decode): what this replica
    // wrote last stands for it, or every reconcile would rewrite it.
    let same_status = me.status.as_ref() == Some(&status) || !me.typed;
    let unchanged = same_status && previous_conditions(me, ctx, key) == conditions;
    if !unchanged && me.typed {
        apply_status(ctx, &key.0, &key.1, &status).await?;
    } else if !unchanged {
        merge_status(ctx, &key.0, &key.1, &status).await?;
    }
    ctx.states().entry(key.clone()).or_default().written = Some(conditions);
    Ok(())
}

/// The engine's next memory, minus what was decided but not applied. The engine records a
/// scale, a weight change or a move when it decides one (so that rate limits and intervals
/// count from it); a change that was not written (a failed call, an HPA holding the count, or
/// this replica not leading) must not count, or a refused write would block the retry for the
/// length of a rate-limit period. Dry-run keeps the record: it shows what would happen.
fn commit(
    prev: &EngineState,
    mut next: EngineState,
    spec: &ElasticGatewaySpec,
    d: &Decision,
    applied: &Plan,
) -> EngineState {
    if spec.dry_run {
        return next;
    }
    if d.replicas.desired != d.replicas.current && applied.replicas != Some(d.replicas.desired) {
        next.hpa.events = prev.hpa.events.clone();
        next.last_scale_up = prev.last_scale_up;
    }
    if d.weights.changed() && applied.weights != Some(d.weights.target) {
        next.weights.last_change = prev.weights.last_change;
        next.weights.changes = prev.weights.changes;
    }
    if !d.moves.is_empty() && applied.evictions.is_empty() {
        next.last_move = prev.last_move;
    }
    next
}

fn queries_for<'a>(d: &Decision, queries: &'a [String], metric: &str) -> &'a str {
    d.readings
        .iter()
        .position(|r| r.metric == metric)
        .and_then(|i| queries.get(i))
        .map_or("", String::as_str)
}

/// What [`apply`] did: what was applied, what failed, and whether the fence stopped it (then
/// the rest of the plan was dropped).
struct Applied {
    plan: Plan,
    errors: Vec<String>,
    fenced: bool,
}

/// Applies the plan, every write behind the fence; returns what was applied and what failed.
/// Each failure is logged, counted and announced (one Event per kind of write, not one per pod),
/// and the next decision (from a fresh observation) tries again: the writes are absolute. When
/// the fence stops a write, nothing more of the plan is sent.
async fn apply(
    me: &Target,
    ctx: &Context,
    gw: &GatewayKey,
    ns: &str,
    spec: &ElasticGatewaySpec,
    plan: &Plan,
    d: &Decision,
) -> Applied {
    let mut applied = Plan::default();
    let mut errors = vec![];
    let client = &ctx.client;
    let mut failed: Vec<(String, kube::Error)> = vec![];
    let fenced = |applied, errors| Applied {
        plan: applied,
        errors,
        fenced: true,
    };
    for (pod, cost) in &plan.deletion_costs {
        let Ok(written) = fenced_write(ctx, "deletion_cost", true, || {
            target::set_deletion_cost(client, ns, pod, *cost)
        })
        .await
        else {
            return fenced(applied, errors);
        };
        match written {
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
        publish(
            ctx,
            &me.oref,
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
            ctx.metrics.error(gw, error_kind(e));
        }
        errors.push(write_failed(ctx, &me.oref, gw, "Annotate", &what, e).await);
    }
    if let Some(r) = plan.replicas {
        let mesh = ctx.target_client(spec);
        let Ok(written) = fenced_write(ctx, "scale", true, || {
            target::scale(mesh, client, ns, spec, r, false)
        })
        .await
        else {
            return fenced(applied, errors);
        };
        match written {
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
                publish(ctx, &me.oref, EventType::Normal, reason, "Scale", &note).await;
            }
            Err(e) => {
                let what = "scaling the gateway";
                errors.push(write_failed(ctx, &me.oref, gw, "Scale", what, &e).await);
            }
        }
    }
    if let Some(w) = plan.weights {
        let target_client = ctx.target_client(spec);
        let Ok(written) = fenced_write(ctx, "weights", true, || {
            target::apply_weights(target_client, ns, spec, w)
        })
        .await
        else {
            return fenced(applied, errors);
        };
        match written {
            Ok(()) => {
                applied.weights = Some(w);
                publish(
                    ctx,
                    &me.oref,
                    EventType::Normal,
                    "WeightsChanged",
                    "ApplyAffinity",
                    &d.weights.reason,
                )
                .await;
            }
            Err(e) => {
                let what = "applying the affinity weights";
                errors.push(write_failed(ctx, &me.oref, gw, "ApplyAffinity", what, &e).await);
            }
        }
    }
    for pod in &plan.evictions {
        let Ok(written) =
            fenced_write(ctx, "eviction", false, || target::evict(client, ns, pod)).await
        else {
            return fenced(applied, errors);
        };
        match written {
            Ok(()) => {
                applied.evictions.push(pod.clone());
                publish(
                    ctx,
                    &me.oref,
                    EventType::Normal,
                    "MovedToEcs",
                    "Evict",
                    &format!("evicted {pod} from ECI: {}", d.move_reason),
                )
                .await;
            }
            // A PodDisruptionBudget says not now: the next quiet decision may try again.
            Err(e) if is_status(&e, 429) => {
                publish(
                    ctx,
                    &me.oref,
                    EventType::Normal,
                    "MoveBlocked",
                    "Evict",
                    &format!("a PodDisruptionBudget forbids evicting {pod} now"),
                )
                .await;
            }
            Err(e) => {
                let what = format!("evicting {pod}");
                errors.push(write_failed(ctx, &me.oref, gw, "Evict", &what, &e).await);
            }
        }
    }
    Applied {
        plan: applied,
        errors,
        fenced: false,
    }
}

/// One write behind the fence ([`Context::fence`]), bounded by `api_timeout`. With
/// `retry_conflict`, a 409 is retried once, behind the fence again.
async fn fenced_write<F, Fut>(
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
    gw: &GatewayKey,
    action: &str,
    what: &str,
    e: &kube::Error,
) -> String {
    ctx.metrics.error(gw, error_kind(e));
    warn!(error = %e, "{what} failed; the next decision retries");
    let msg = format!("{what} failed: {e}");
    publish(ctx, oref, EventType::Warning, "WriteFailed", action, &msg).await;
    msg
}

async fn publish(
    ctx: &Context,
    oref: &ObjectReference,
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
    match bounded(ctx.config.api_timeout, ctx.recorder.publish(&ev, oref)).await {
        Ok(()) => {}
        Err(e) => debug!(error = %e, reason, "could not publish an Event"),
    }
}

/// Records a problem that stops the loop for this gateway: a condition (and an Event when it is
/// new), as the leader.
async fn report_problem(
    me: &Target,
    ctx: &Context,
    key: &(String, String),
    cond: Condition,
    leader: bool,
) {
    if !leader {
        return;
    }
    let prev = previous_conditions(me, ctx, key);
    let conditions = carry_transitions(&prev, vec![cond.clone()], unix_now());
    if changed(&prev, &cond) {
        publish(
            ctx,
            &me.oref,
            EventType::Warning,
            &cond.reason,
            "Validate",
            &cond.message,
        )
        .await;
    }
    let status = ElasticGatewayStatus {
        observed_generation: me.generation,
        phase: Some("Holding".into()),
        conditions,
        ..me.status.clone().unwrap_or_default()
    };
    if let Err(e) = write_status(ctx, me, key, status).await {
        debug!(error = %e, "status write failed");
    }
}

/// Server-side apply of the whole status under [`STATUS_MANAGER`], forced: spillway owns it.
/// Behind the fence too: a forced apply from a replica that lost the Lease would put its older
/// view (replicas, last decision, conditions, `status.original`, which the hand-back restores)
/// over the new leader's.
async fn apply_status(
    ctx: &Context,
    ns: &str,
    name: &str,
    status: &ElasticGatewayStatus,
) -> Result<(), crate::Error> {
    ctx.fence("status")?;
    let api = Api::<ElasticGateway>::namespaced(ctx.client.clone(), ns);
    let body = json!({
        "apiVersion": ElasticGateway::api_version(&()),
        "kind": ElasticGateway::kind(&()),
        "status": status,
    });
    bounded(
        ctx.config.api_timeout,
        api.patch_status(
            name,
            &PatchParams::apply(STATUS_MANAGER).force(),
            &Patch::Apply(&body),
        ),
    )
    .await?;
    Ok(())
}

/// A merge patch of the status, for an object the apiserver cannot type (see [`Target::typed`]):
/// unlike an apply, an update does not need its managed fields.
async fn merge_status(
    ctx: &Context,
    ns: &str,
    name: &str,
    status: &ElasticGatewayStatus,
) -> Result<(), crate::Error> {
    ctx.fence("status")?;
    // Untyped: the answer is the stored object, which does not decode either.
    let resource = kube::api::ApiResource::erase::<ElasticGateway>(&());
    let api = Api::<kube::api::DynamicObject>::namespaced_with(ctx.client.clone(), ns, &resource);
    let body = json!({ "status": status });
    bounded(
        ctx.config.api_timeout,
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&body)),
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

#[cfg(test)]
#[path = "controller_tests.rs"]
mod fault_tests;

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
