//! What every reconcile shares: handles to the clients, the Event recorder, the metrics, the
//! load sources, the cluster index, leadership and the settings, and the per-gateway memory.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tracing::{debug, warn};

use tokio::sync::Semaphore;

use super::memory::Memories;
use super::wake::Interests;
use crate::act::ledger::Ledger;
use crate::fastpath::FastPath;
use crate::k8s::bounded;
use crate::k8s::index::ClusterIndex;
use crate::k8s::leader::{Fenced, Leadership};
use crate::metrics::Metrics;
use crate::model::Node;
use crate::policy::{ElasticGatewaySpec, Preset, TargetKind};
use crate::prom::Prometheus;

/// Reconciles at once, by default: each waits mostly on the API server and Prometheus, so a
/// few dozen keep two cores busy without queueing the API server.
pub const DEFAULT_CONCURRENCY: usize = 32;

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
    /// Reconciles at once; the others wait their turn, first come first served.
    pub concurrency: usize,
}

impl Config {
    /// Defaults for a loop deciding every `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            reporter: "spillway".into(),
            instance: None,
            api_timeout: crate::k8s::DEFAULT_API_TIMEOUT,
            reconcile_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(20),
            concurrency: DEFAULT_CONCURRENCY,
        }
    }
}

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
    /// Whether, and until when, this replica may write (see [`crate::k8s::leader`]).
    pub leader: Leadership,
    pub config: Config,
    /// ASM's API server, where IstioGateways live; `None`: they live beside the pods.
    pub mesh_client: Option<Client>,
    /// Reads the gateway pods' own request counters between Prometheus's scrapes; `None`: off.
    pub fast_path: Option<FastPath>,
    /// What the agent remembers per gateway.
    pub memory: Memories,
    /// What each gateway's decision depends on in the index, for waking it on a change.
    pub interests: Arc<Interests>,
    /// The ECS slots each gateway claimed for pods not placed yet.
    pub ledger: Ledger,
    /// The reconcile slots, handed out in the order asked for (tokio's semaphore is fair), so
    /// that no gateway waits behind others that keep coming back.
    pub slots: Semaphore,
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
            mesh_client: None,
            fast_path: None,
            memory: Memories::default(),
            interests: Arc::default(),
            ledger: Ledger::default(),
            slots: Semaphore::new(config.concurrency.max(1)),
            config,
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
    pub fn tick(&self, spec: &ElasticGatewaySpec) -> Duration {
        match &self.fast_path {
            Some(f) if reads_pods(spec) => self.config.interval.min(f.config().interval),
            _ => self.config.interval,
        }
    }

    /// The client that holds the target: ASM's API server for an IstioGateway when one is set.
    pub fn target_client(&self, spec: &ElasticGatewaySpec) -> &Client {
        match (&spec.target.kind, &self.mesh_client) {
            (TargetKind::IstioGateway, Some(mesh)) => mesh,
            _ => &self.client,
        }
    }

    pub fn is_leader(&self) -> bool {
        self.leader.is_leader()
    }

    /// The fence before a write: it goes out only while this replica holds the Lease with at
    /// least one `api_timeout` left, the longest the write may take (it is bounded by that), so
    /// that it is answered or abandoned before another replica may lead. Otherwise it is not
    /// sent, and this says so (WARN, `spillway_fenced_writes_total`); the caller drops the rest
    /// of its plan.
    pub fn fence(&self, write: &str) -> Result<(), Fenced> {
        self.leader
            .permit(self.config.api_timeout)
            .inspect_err(|f| {
                self.metrics.fenced(f.reason(), write);
                warn!(write, reason = %f, "fenced: write not sent; dropping the rest of this decision's plan");
            })
    }

    /// Reads the cluster index (a poisoned lock still holds the last state: the watches only
    /// ever replace whole entries).
    pub fn index(&self) -> std::sync::RwLockReadGuard<'_, ClusterIndex> {
        self.index
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `f` on the index's nodes, under its lock (no await inside): the engine decides from
    /// them without copying a large cluster.
    pub fn with_nodes<T>(&self, f: impl FnOnce(&[Node]) -> T) -> T {
        let mut ix = self
            .index
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(ix.nodes())
    }

    /// Publishes an Event on `oref`; a failure is logged at debug and otherwise ignored (an
    /// Event is a courtesy, never a reason to stop).
    pub async fn publish(
        &self,
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
        if let Err(e) = bounded(self.config.api_timeout, self.recorder.publish(&ev, oref)).await {
            debug!(error = %e, reason, "could not publish an Event");
        }
    }
}

/// Whether the fast path applies: the engine uses it for the first request-rate metric.
pub fn reads_pods(spec: &ElasticGatewaySpec) -> bool {
    spec.metrics
        .iter()
        .any(|m| m.preset == Some(Preset::RequestRate))
}
