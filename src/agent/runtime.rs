//! The agent's wiring, in order, as kubert's `Runtime` does it: the shutdown signal, the admin
//! server (first, so that probes answer while the caches fill), the watches into the cluster
//! index, readiness, leadership; then the controller runs until shutdown or until the Lease task
//! dies, and the Lease is released so that another replica takes over at once.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use kube::Client;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use super::context::{Config, Context};
use super::controller;
use crate::fastpath::FastPath;
use crate::k8s::index::{Change, ClusterIndex};
use crate::k8s::leader::{self, Leadership, LeaseSettings, Tenure};
use crate::k8s::watch as watches;
use crate::metrics::Metrics;
use crate::model::LoadSample;
use crate::prom::Prometheus;
use crate::server::{self, Admin};

/// How the agent runs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// This replica's name in the Lease, on Events and in the User-Agent.
    pub identity: String,
    /// Decide for every gateway at least this often.
    pub interval: Duration,
    pub admin_addr: SocketAddr,
    /// The probes' own listener, if any ([`server::bind_probes`]).
    pub probe_addr: Option<SocketAddr>,
    /// The admission webhook's listener and certificate folder, if any ([`crate::webhook`]).
    pub webhook: Option<(SocketAddr, std::path::PathBuf)>,
    /// After SIGTERM, how long in-flight work may still run.
    pub shutdown_grace: Duration,
    /// Namespaces whose pods may be gateway pods.
    pub gateway_namespaces: Vec<String>,
    /// Reconciles at once.
    pub concurrency: usize,
    /// Longest one API call may take.
    pub api_timeout: Duration,
    /// Leader election on this Lease; `None`: this replica always leads (one replica only).
    pub lease: Option<LeaseSettings>,
}

/// The API servers: the data plane's for requests (every read bounded) and for watches (no
/// read timeout), and ASM's where IstioGateways live, when it is another.
pub struct Clients {
    pub requests: Client,
    pub watches: Client,
    pub mesh: Option<Client>,
}

/// Runs the agent until SIGTERM or Ctrl-C (or until the leader-election task dies: an error).
pub async fn run(
    settings: Settings,
    clients: Clients,
    prom: Prometheus,
    fast_path: Option<FastPath>,
) -> Result<(), crate::Error> {
    let stop = shutdown_signal();
    let metrics = Arc::new(Metrics::new());
    let (admin, server) = serve_admin(&settings, metrics.clone(), stop.clone()).await?;
    let index = Arc::new(RwLock::new(ClusterIndex::new(
        settings.gateway_namespaces.clone(),
    )));
    let (changes, watch_tasks) =
        start_watches(&clients.watches, &index, &settings.gateway_namespaces);
    gate_readiness(index.clone(), admin, prom.clone());
    let (release_tx, release_rx) = watch::channel(false);
    let Some((leadership, mut lease_task)) =
        lead(&settings, &clients.requests, release_rx, stop.clone()).await
    else {
        return Ok(());
    };
    export_leadership(metrics.clone(), &leadership);
    let ctx = Arc::new(context(
        &settings,
        clients,
        metrics,
        prom,
        fast_path,
        index,
        leadership.clone(),
    ));
    info!(identity = %settings.identity, prometheus = %ctx.prom.shown_url(), interval = ?settings.interval, "spillway running");
    let result = tokio::select! {
        r = controller::run(ctx, changes, stopped(stop)) => r,
        r = async { match lease_task.as_mut() { Some(t) => t.await, None => std::future::pending().await } } => {
            lease_task = None;
            Err(crate::Error::Leadership(format!("the leader-election task ended: {:?}", r.map(|inner| inner.err()))))
        }
    };
    // The controller has stopped acting: give up the Lease so that another replica takes over
    // within its retry period rather than a whole Lease duration.
    let _ = release_tx.send(true);
    drop(leadership);
    release(lease_task).await;
    for w in watch_tasks {
        w.abort();
    }
    let _ = tokio::time::timeout(Duration::from_secs(3), server).await;
    result
}

/// Turns true on SIGTERM or Ctrl-C.
fn shutdown_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
        info!("shutting down");
        let _ = tx.send(true);
    });
    rx
}

/// Resolves once `rx` turns true.
async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Binds the admin server (/metrics, /healthz, /readyz), and the probes' own listener and the
/// admission webhook when they are set, and serves them until shutdown.
async fn serve_admin(
    settings: &Settings,
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
) -> Result<(Admin, JoinHandle<()>), crate::Error> {
    let admin = Admin::new(metrics);
    let addr = settings.admin_addr;
    let (bound, serve) = server::bind(addr, admin.clone(), stop.clone())
        .await
        .map_err(|e| crate::Error::Config(format!("binding the admin server on {addr}: {e}")))?;
    info!(addr = %bound, "admin server listening");
    let probes = match settings.probe_addr {
        Some(addr) => {
            let (bound, serve) = server::bind_probes(addr, admin.clone(), stop.clone())
                .await
                .map_err(|e| {
                    crate::Error::Config(format!("binding the probe listener on {addr}: {e}"))
                })?;
            info!(addr = %bound, "probe listener listening");
            Some(serve)
        }
        None => None,
    };
    let webhook = match &settings.webhook {
        Some((addr, certs)) => {
            let (bound, serve) =
                crate::webhook::bind(*addr, certs.clone(), admin.metrics.clone(), stop).await?;
            info!(addr = %bound, certificates = %certs.display(), "admission webhook listening");
            Some(serve)
        }
        None => None,
    };
    let all = async move {
        use futures::future::OptionFuture;
        tokio::join!(
            serve,
            OptionFuture::from(probes),
            OptionFuture::from(webhook)
        );
    };
    Ok((admin, tokio::spawn(all)))
}

/// The watches feeding the index (nodes and pods cluster-wide; Deployments and HPAs in each
/// gateway namespace); the receiver gets what each event changed there.
fn start_watches(
    client: &Client,
    index: &Arc<RwLock<ClusterIndex>>,
    namespaces: &[String],
) -> (UnboundedReceiver<Change>, Vec<JoinHandle<()>>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = vec![
        tokio::spawn(watches::nodes(client.clone(), index.clone(), tx.clone())),
        tokio::spawn(watches::pods(client.clone(), index.clone(), tx.clone())),
        tokio::spawn(watches::planned_events(
            client.clone(),
            index.clone(),
            tx.clone(),
        )),
    ];
    for ns in namespaces {
        let (c, ix) = (client.clone(), index.clone());
        tasks.push(tokio::spawn(watches::deployments(
            c,
            ix,
            tx.clone(),
            ns.clone(),
        )));
        let (c, ix) = (client.clone(), index.clone());
        tasks.push(tokio::spawn(watches::autoscalers(
            c,
            ix,
            tx.clone(),
            ns.clone(),
        )));
    }
    (rx, tasks)
}

/// Ready once every watch has listed and Prometheus has answered once.
fn gate_readiness(index: Arc<RwLock<ClusterIndex>>, admin: Admin, prom: Prometheus) {
    tokio::spawn(async move {
        loop {
            let synced = index.read().map(|ix| ix.synced()).unwrap_or(false);
            let reached = !matches!(
                prom.query("vector(1)", crate::clock::unix_now()).await,
                LoadSample::Missing(_)
            );
            if synced && reached {
                admin.set_ready(true);
                info!("ready: caches synced, Prometheus reachable");
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}

/// Leadership: elected on the Lease (retrying while the API server does not answer, saying so),
/// or always held without one. `None` when shutdown came first. The Lease is released when
/// `release` turns true.
async fn lead(
    settings: &Settings,
    client: &Client,
    release: watch::Receiver<bool>,
    stop: watch::Receiver<bool>,
) -> Option<(Leadership, Option<JoinHandle<Result<(), kube::Error>>>)> {
    let Some(lease) = &settings.lease else {
        let (tx, rx) = watch::channel(Tenure::Leading { until: None });
        // Until the agent stops, this replica always leads; then it stops acting.
        tokio::spawn(async move {
            stopped(release).await;
            tx.send_replace(Tenure::Following);
        });
        return Some((Leadership::new(rx), None));
    };
    let mut backoff = Duration::from_secs(1);
    loop {
        let elected = leader::elect(client.clone(), lease.clone(), stopped(release.clone()));
        match tokio::time::timeout(settings.api_timeout, elected).await {
            Ok(Ok((leadership, task))) => return Some((leadership, Some(task))),
            Ok(Err(e)) => {
                error!(error = %e, retry_in = ?backoff, lease = %lease.name, namespace = %lease.namespace, "cannot set up leader election (is the API server reachable, and may spillway write Leases there?); retrying")
            }
            Err(_) => {
                error!(retry_in = ?backoff, "the API server did not answer within --api-timeout while setting up leader election; retrying")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = stopped(stop.clone()) => return None,
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// `spillway_leader` and a log line on every change of leadership.
fn export_leadership(metrics: Arc<Metrics>, leadership: &Leadership) {
    let mut rx = leadership.receiver();
    tokio::spawn(async move {
        loop {
            let leading = matches!(*rx.borrow_and_update(), Tenure::Leading { .. });
            metrics.set_leader(leading);
            info!(leading, "leadership");
            if rx.changed().await.is_err() {
                metrics.set_leader(false);
                return;
            }
        }
    });
}

/// The controller's context: handles to everything a reconcile needs.
fn context(
    settings: &Settings,
    clients: Clients,
    metrics: Arc<Metrics>,
    prom: Prometheus,
    fast_path: Option<FastPath>,
    index: Arc<RwLock<ClusterIndex>>,
    leadership: Leadership,
) -> Context {
    let config = Config {
        instance: Some(settings.identity.clone()),
        api_timeout: settings.api_timeout,
        shutdown_grace: settings.shutdown_grace,
        concurrency: settings.concurrency,
        ..Config::new(settings.interval)
    };
    let mut ctx = Context::new(
        clients.requests,
        clients.watches,
        metrics,
        prom,
        index,
        leadership,
        config,
    );
    if let Some(mesh) = clients.mesh {
        info!("IstioGateways are read and written on the mesh's API server");
        ctx = ctx.with_mesh_client(mesh);
    }
    if let Some(f) = fast_path {
        let c = f.config();
        info!(port = c.port, interval = ?c.interval, pods = c.max_pods, "fast path on: reading the gateway pods' own request counters");
        ctx = ctx.with_fast_path(f);
    }
    ctx
}

/// Waits (briefly) for the Lease task to release the Lease.
async fn release(lease_task: Option<JoinHandle<Result<(), kube::Error>>>) {
    let Some(task) = lease_task else { return };
    match tokio::time::timeout(Duration::from_secs(5), task).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => warn!(error = %e, "releasing the Lease failed"),
        Ok(Err(e)) => warn!(error = %e, "the leader-election task failed"),
        Err(_) => warn!("releasing the Lease took more than 5 s; it expires on its own"),
    }
}
