//! The `spillway` command line.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use kube::CustomResourceExt;

use spillway::policy::ElasticGateway;
use spillway::sim::drill::{Observer, Point};
use spillway::sim::{PolicyKind, Scenario};
use spillway::telemetry::{self, LogFormat};

/// Elasticity agent for Kubernetes ingress gateways: the gateway lives on ECS, the peak
/// overflows onto virtual-kubelet (ECI) nodes and comes back when it passes.
#[derive(Parser, Debug)]
#[command(name = "spillway", version, propagate_version = true)]
struct Cli {
    /// Log filter, in tracing's EnvFilter syntax (e.g. `info,spillway=debug`).
    #[arg(long, env = "SPILLWAY_LOG", default_value = "info", global = true)]
    log: String,
    /// Log format.
    #[arg(long, env = "SPILLWAY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the agent in a cluster: watch ElasticGateways, nodes and pods, read the load from
    /// Prometheus, decide, and (as the leader) scale and steer the gateways.
    Run(Box<RunArgs>),
    /// Rehearse a traffic spike: the real engine on a simulated cluster, beside baseline policies.
    Drill(DrillArgs),
    /// Validate ElasticGateway policy files; every error is reported with its field path.
    Check {
        /// Policy manifests (YAML or JSON).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the ElasticGateway CustomResourceDefinition as YAML.
    Crd,
    /// Check one ElasticGateway against the live cluster(s) and Prometheus: each query with its
    /// result, the pools, the target (and a dry-run write), HPAs or ASM autoscaling, the Lease.
    /// One line per check; exits 1 if any would stop the agent.
    Doctor(Box<DoctorArgs>),
}

/// Parses a positive duration: "5s", "500ms", "2m", "1h30m", "1.5s" (jiff's friendly format,
/// as Go's `time.ParseDuration` writes them; jiff comes with k8s-openapi), ISO 8601 ("PT5S"), or
/// a bare number of seconds; up to a day.
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    use k8s_openapi::jiff::SignedDuration;
    let s = s.trim();
    let d = match s.parse::<f64>() {
        Ok(secs) => SignedDuration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))?,
        Err(_) => s
            .parse::<SignedDuration>()
            .map_err(|e| format!("{s:?} is not a duration like 5s, 500ms or 2m: {e}"))?,
    };
    if !d.is_positive() {
        return Err(format!("{s:?} must be positive"));
    }
    if d > SignedDuration::from_secs(86_400) {
        return Err(format!("{s:?} is longer than a day"));
    }
    std::time::Duration::try_from(d).map_err(|e| format!("{s:?}: {e}"))
}

/// Parses `IP:port`; an IPv6 address may come without brackets (as `$(POD_IP):8080` gives it).
fn parse_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(a) = s.parse() {
        return Ok(a);
    }
    let (ip, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} is not an address like 127.0.0.1:8080"))?;
    let ip: std::net::IpAddr = ip
        .parse()
        .map_err(|e| format!("{s:?}: {ip:?} is not an IP address: {e}"))?;
    let port: u16 = port
        .parse()
        .map_err(|e| format!("{s:?}: {port:?} is not a port: {e}"))?;
    Ok(std::net::SocketAddr::new(ip, port))
}

/// Where Prometheus is and how to authenticate to it (shared by `run` and `doctor`).
#[derive(clap::Args, Debug, Clone)]
struct PromArgs {
    /// Prometheus base URL (the HTTP API is under /api/v1).
    #[arg(
        long,
        env = "SPILLWAY_PROMETHEUS_URL",
        default_value = "http://prometheus-k8s.monitoring.svc:9090"
    )]
    prometheus_url: String,
    /// Timeout of one Prometheus query.
    #[arg(long, env = "SPILLWAY_PROMETHEUS_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    prometheus_timeout: std::time::Duration,
    /// File holding a bearer token to send to Prometheus (`Authorization: Bearer`); read again
    /// on every query, so a rotated Secret needs no restart.
    #[arg(long, env = "SPILLWAY_PROMETHEUS_TOKEN_FILE")]
    prometheus_token_file: Option<PathBuf>,
    /// User name for basic authentication to Prometheus (e.g. an ARMS AccessKey ID).
    #[arg(
        long,
        env = "SPILLWAY_PROMETHEUS_BASIC_AUTH_USER",
        requires = "prometheus_basic_auth_password_file"
    )]
    prometheus_basic_auth_user: Option<String>,
    /// File holding the basic-authentication password; read again on every query.
    #[arg(
        long,
        env = "SPILLWAY_PROMETHEUS_BASIC_AUTH_PASSWORD_FILE",
        requires = "prometheus_basic_auth_user"
    )]
    prometheus_basic_auth_password_file: Option<PathBuf>,
    /// An extra header sent to Prometheus, as NAME=FILE: the value is the file's content, read
    /// again on every query. Repeat the flag (or separate with commas in the variable).
    #[arg(long, env = "SPILLWAY_PROMETHEUS_HEADER_FILES", value_delimiter = ',', value_parser = parse_header_file)]
    prometheus_header_file: Vec<(String, PathBuf)>,
    /// PEM file of CAs to trust for an HTTPS Prometheus.
    #[arg(long, env = "SPILLWAY_PROMETHEUS_CA_FILE")]
    prometheus_ca_file: Option<PathBuf>,
    /// An answer evaluated further than this from our clock is stale (treated as missing).
    #[arg(long, env = "SPILLWAY_PROMETHEUS_MAX_SKEW", default_value = "60s", value_parser = parse_duration)]
    prometheus_max_skew: std::time::Duration,
}

/// Parses `NAME=FILE`.
fn parse_header_file(s: &str) -> Result<(String, PathBuf), String> {
    let (name, file) = s.split_once('=').ok_or_else(|| {
        format!("{s:?} is not NAME=FILE (e.g. X-Scope-OrgID=/etc/spillway/tenant)")
    })?;
    if name.trim().is_empty() || file.trim().is_empty() {
        return Err(format!("{s:?} is not NAME=FILE"));
    }
    Ok((name.trim().to_string(), PathBuf::from(file.trim())))
}

impl PromArgs {
    /// The client; credential files are read once here (a missing one stops the start) and
    /// again on every query.
    fn client(&self) -> anyhow::Result<spillway::prom::Prometheus> {
        use spillway::prom::{BasicAuth, PromAuth, PromConfig, Prometheus};
        let ca_pem = match &self.prometheus_ca_file {
            Some(f) => Some(std::fs::read(f).with_context(|| format!("reading {}", f.display()))?),
            None => None,
        };
        let basic_auth = match (
            &self.prometheus_basic_auth_user,
            &self.prometheus_basic_auth_password_file,
        ) {
            (Some(username), Some(password_file)) => Some(BasicAuth {
                username: username.clone(),
                password_file: password_file.clone(),
            }),
            _ => None,
        };
        Ok(Prometheus::new(PromConfig {
            url: self.prometheus_url.clone(),
            timeout: self.prometheus_timeout,
            auth: PromAuth {
                bearer_token_file: self.prometheus_token_file.clone(),
                basic_auth,
                header_files: self.prometheus_header_file.clone(),
            },
            ca_pem,
            max_skew: self.prometheus_max_skew,
        })?)
    }
}

/// How to reach the API servers (shared by `run` and `doctor`).
#[derive(clap::Args, Debug, Clone)]
struct KubeArgs {
    /// Kubeconfig file; without it, the in-cluster service account (or $KUBECONFIG, ~/.kube/config).
    #[arg(long, env = "SPILLWAY_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use.
    #[arg(long, env = "SPILLWAY_KUBE_CONTEXT")]
    context: Option<String>,
    /// ASM: kubeconfig of the mesh's own API server, where IstioGateways live (in a pod, a
    /// mounted Secret such as /etc/spillway/mesh/kubeconfig). Without it or --mesh-context,
    /// IstioGateways are read where the pods are.
    #[arg(long, env = "SPILLWAY_MESH_KUBECONFIG")]
    mesh_kubeconfig: Option<PathBuf>,
    /// ASM: context of the mesh's API server (in --mesh-kubeconfig, or the default kubeconfig).
    #[arg(long, env = "SPILLWAY_MESH_CONTEXT")]
    mesh_context: Option<String>,
    /// Longest one Kubernetes API call may take before it counts as failed.
    #[arg(long, env = "SPILLWAY_API_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    api_timeout: std::time::Duration,
}

/// Leader election's Lease (shared by `run` and `doctor`).
#[derive(clap::Args, Debug, Clone)]
struct LeaseArgs {
    /// Elect a leader on a Lease so that only one replica acts (turn off only with one replica).
    #[arg(long, env = "SPILLWAY_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// Name of the Lease.
    #[arg(long, env = "SPILLWAY_LEASE_NAME", default_value = "spillway")]
    lease_name: String,
    /// Namespace of the Lease (normally spillway's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "spillway-system")]
    lease_namespace: String,
}

#[derive(clap::Args, Debug)]
struct DoctorArgs {
    /// The ElasticGateway to examine, as NAMESPACE/NAME in the cluster.
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    gateway: Option<String>,
    /// Examine the policy in this file instead (YAML; its first document).
    #[arg(long, short = 'f')]
    file: Option<PathBuf>,
    #[command(flatten)]
    kube: KubeArgs,
    #[command(flatten)]
    prom: PromArgs,
    #[command(flatten)]
    lease: LeaseArgs,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    kube: KubeArgs,
    #[command(flatten)]
    prom: PromArgs,
    #[command(flatten)]
    lease: LeaseArgs,
    /// Decide for every gateway at least this often.
    #[arg(long, env = "SPILLWAY_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    interval: std::time::Duration,
    /// Address of the admin server (/metrics, /healthz, /readyz). Loopback by default; in a pod,
    /// deploy/ binds the pod's own IP (from the downward API) so that Prometheus and the kubelet
    /// reach it and nothing else on the node does.
    #[arg(long, env = "SPILLWAY_ADMIN_ADDR", default_value = "127.0.0.1:8080", value_parser = parse_addr)]
    admin_addr: std::net::SocketAddr,
    /// On SIGTERM, how long in-flight work may still run before the process exits anyway (keep
    /// it below the pod's terminationGracePeriodSeconds).
    #[arg(long, env = "SPILLWAY_SHUTDOWN_GRACE", default_value = "20s", value_parser = parse_duration)]
    shutdown_grace: std::time::Duration,
    /// Namespaces whose pods may be gateway pods (their labels are kept; elsewhere only requests).
    #[arg(
        long,
        env = "SPILLWAY_GATEWAY_NAMESPACES",
        value_delimiter = ',',
        default_value = "istio-system"
    )]
    gateway_namespaces: Vec<String>,
    /// How long a Lease holds without renewal; a new leader takes over within about this time.
    #[arg(long, env = "SPILLWAY_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    lease_duration: std::time::Duration,
    /// How often a standby replica looks for a Lease released early (by a leader shutting down).
    #[arg(long, env = "SPILLWAY_LEASE_RETRY_PERIOD", default_value = "2s", value_parser = parse_duration)]
    lease_retry_period: std::time::Duration,
    /// This replica's identity in the Lease and on Events (normally the pod name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
}

#[derive(clap::Args, Debug)]
struct DrillArgs {
    /// Scenario file (YAML). Without one, the built-in scenario: the guide's cluster (4 dedicated
    /// ECS nodes, one virtual node, a gateway at 80/20) and a 10x flash crowd.
    #[arg(conflicts_with = "suite")]
    scenario: Option<PathBuf>,
    /// Run every scenario (*.yaml) of this folder under spillway, hpa, the reactive bound and the
    /// oracle, and print the scorecard (also written to OUT/scorecard.txt and OUT/suite.json).
    #[arg(long)]
    suite: Option<PathBuf>,
    /// Folder for report.json, timeline.csv and chart.svg.
    #[arg(long, env = "SPILLWAY_DRILL_OUT", default_value = "drill-out")]
    out: PathBuf,
    /// Policies to compare (default: the scenario's, normally spillway,hpa,static,oracle).
    #[arg(long, value_enum, value_delimiter = ',')]
    policies: Vec<PolicyKind>,
    /// Override the scenario's seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Override the scenario's duration, in seconds.
    #[arg(long)]
    duration: Option<u64>,
    /// Print the built-in scenario as YAML (a starting point for your own) and exit.
    #[arg(long)]
    print_scenario: bool,
    /// Serve spillway's metrics (as the live agent would) at this address while the `spillway`
    /// policy runs, paced by --speed, so Prometheus can scrape a drill.
    #[arg(long, env = "SPILLWAY_DRILL_METRICS_ADDR")]
    serve_metrics: Option<std::net::SocketAddr>,
    /// With --serve-metrics: simulated seconds per wall second (1 = real time).
    #[arg(long, default_value_t = 1.0, requires = "serve_metrics")]
    speed: f64,
    /// With --serve-metrics: keep serving this many seconds after the drill ends.
    #[arg(long, default_value_t = 0, requires = "serve_metrics")]
    linger: u64,
}

fn main() -> ExitCode {
    // One TLS crypto provider for kube and reqwest alike.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    if let Err(e) = telemetry::init(&cli.log, cli.log_format) {
        eprintln!("error: {e:#}");
        return ExitCode::from(2);
    }
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Crd => {
            print!("{}", crd_yaml()?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { files } => Ok(check(&files)),
        Command::Drill(args) => drill(args),
        Command::Doctor(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            runtime.block_on(doctor(*args))
        }
        Command::Run(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(agent(*args))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A kubeconfig file and context, or (with neither) the in-cluster service account.
async fn kube_config(
    kubeconfig: Option<&std::path::Path>,
    context: Option<&str>,
) -> anyhow::Result<kube::Config> {
    use kube::config::{KubeConfigOptions, Kubeconfig};
    let options = KubeConfigOptions {
        context: context.map(String::from),
        ..Default::default()
    };
    Ok(match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &options).await?
        }
        None if context.is_some() => kube::Config::from_kubeconfig(&options).await?,
        None => kube::Config::infer()
            .await
            .context("no in-cluster config and no kubeconfig")?,
    })
}

/// Two clients: one whose every read is bounded (requests), one without a read timeout (watches,
/// which may stay quiet for minutes). Neither retries on its own.
async fn kube_clients(args: &KubeArgs) -> anyhow::Result<(kube::Client, kube::Client)> {
    let config = kube_config(args.kubeconfig.as_deref(), args.context.as_deref()).await?;
    let requests = spillway::k8s::client(config.clone(), Some(args.api_timeout))?;
    let watches = spillway::k8s::client(config, None)?;
    Ok((requests, watches))
}

/// The client for ASM's API server, when one is configured (requests only: nothing is watched
/// there).
async fn mesh_client(args: &KubeArgs) -> anyhow::Result<Option<kube::Client>> {
    if args.mesh_kubeconfig.is_none() && args.mesh_context.is_none() {
        return Ok(None);
    }
    let config = kube_config(
        args.mesh_kubeconfig.as_deref(),
        args.mesh_context.as_deref(),
    )
    .await
    .context("the mesh's API server (--mesh-kubeconfig, --mesh-context)")?;
    Ok(Some(spillway::k8s::client(config, Some(args.api_timeout))?))
}

/// `spillway run`.
async fn agent(args: RunArgs) -> anyhow::Result<()> {
    use spillway::k8s::{controller, index::ClusterIndex, watch};
    use std::sync::{Arc, RwLock};

    let identity = args
        .identity
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("spillway-{}", std::process::id()));
    let prom = args.prom.client()?;

    let (client, watch_client) = kube_clients(&args.kube).await?;
    let mesh = mesh_client(&args.kube).await?;

    // Shutdown on SIGTERM or Ctrl-C.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    // Admin server first, so probes answer while the caches fill.
    let metrics = Arc::new(spillway::metrics::Metrics::new());
    let admin = spillway::server::Admin::new(metrics.clone());
    let (bound, serve) = spillway::server::bind(args.admin_addr, admin.clone(), stop_rx.clone())
        .await
        .with_context(|| format!("binding the admin server on {}", args.admin_addr))?;
    tracing::info!(addr = %bound, "admin server listening");
    let server = tokio::spawn(serve);

    // Watches into the index.
    let index = Arc::new(RwLock::new(ClusterIndex::new(
        args.gateway_namespaces.clone(),
    )));
    let (changed_tx, changed_rx) = tokio::sync::watch::channel(0u64);
    let watches = [
        tokio::spawn(watch::nodes(
            watch_client.clone(),
            index.clone(),
            changed_tx.clone(),
        )),
        tokio::spawn(watch::pods(watch_client.clone(), index.clone(), changed_tx)),
    ];

    // Readiness: caches synced and Prometheus answered once.
    {
        let (index, admin, prom) = (index.clone(), admin.clone(), prom.clone());
        tokio::spawn(async move {
            loop {
                let synced = index.read().map(|ix| ix.synced()).unwrap_or(false);
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                let reached = !matches!(
                    prom.query("vector(1)", now).await,
                    spillway::engine::LoadSample::Missing(_)
                );
                if synced && reached {
                    admin.set_ready(true);
                    tracing::info!("ready: caches synced, Prometheus reachable");
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        });
    }

    // Leadership. The Lease is released once the controller has stopped (below).
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let (leader_rx, mut lease_task) = if args.lease.leader_election {
        let settings = spillway::k8s::leader::LeaseSettings {
            name: args.lease.lease_name.clone(),
            namespace: args.lease.lease_namespace.clone(),
            identity: identity.clone(),
            duration: args.lease_duration,
            retry: args.lease_retry_period,
        };
        // The API server may not answer yet (a control plane restarting): retry, saying so.
        let mut backoff = std::time::Duration::from_secs(1);
        let (rx, task) = loop {
            let elected = spillway::k8s::leader::elect(
                client.clone(),
                settings.clone(),
                stopped(release_rx.clone()),
            );
            match tokio::time::timeout(args.kube.api_timeout, elected).await {
                Ok(Ok(started)) => break started,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, retry_in = ?backoff, lease = %args.lease.lease_name, namespace = %args.lease.lease_namespace, "cannot set up leader election (is the API server reachable, and may spillway write Leases there?); retrying")
                }
                Err(_) => {
                    tracing::error!(retry_in = ?backoff, "the API server did not answer within --api-timeout while setting up leader election; retrying")
                }
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = stopped(stop_rx.clone()) => return Ok(()),
            }
            backoff = (backoff * 2).min(std::time::Duration::from_secs(30));
        };
        (rx, Some(task))
    } else {
        let (tx, rx) = tokio::sync::watch::channel(true);
        // The sender lives until the agent stops: this replica always leads.
        tokio::spawn(async move {
            stopped(release_rx).await;
            drop(tx);
        });
        (rx, None)
    };
    {
        let (metrics, mut rx) = (metrics.clone(), leader_rx.clone());
        tokio::spawn(async move {
            loop {
                let leading = *rx.borrow_and_update();
                metrics.set_leader(leading);
                tracing::info!(leading, "leadership");
                if rx.changed().await.is_err() {
                    metrics.set_leader(false);
                    return;
                }
            }
        });
    }

    let mut ctx = controller::Context::new(
        client.clone(),
        watch_client,
        metrics,
        prom,
        index,
        leader_rx.clone(),
        controller::Config {
            instance: Some(identity.clone()),
            api_timeout: args.kube.api_timeout,
            shutdown_grace: args.shutdown_grace,
            ..controller::Config::new(args.interval)
        },
    );
    if let Some(mesh) = mesh {
        tracing::info!("IstioGateways are read and written on the mesh's API server");
        ctx = ctx.with_mesh_client(mesh);
    }
    let ctx = Arc::new(ctx);
    let prometheus = spillway::redact::url(&args.prom.prometheus_url);
    tracing::info!(%identity, %prometheus, interval = ?args.interval, "spillway running");
    let result = tokio::select! {
        r = controller::run(ctx, changed_rx, stopped(stop_rx.clone())) => r.map_err(anyhow::Error::from),
        r = async { match lease_task.as_mut() { Some(t) => t.await, None => std::future::pending().await } } => {
            lease_task = None;
            Err(anyhow::anyhow!("the leader-election task ended: {:?}", r.map(|inner| inner.err())))
        }
    };
    // The controller has stopped acting: give up the Lease so that another replica takes over
    // within its retry period rather than a whole Lease duration.
    let _ = release_tx.send(true);
    drop(leader_rx);
    if let Some(task) = lease_task {
        match tokio::time::timeout(std::time::Duration::from_secs(5), task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "releasing the Lease failed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "the leader-election task failed"),
            Err(_) => {
                tracing::warn!("releasing the Lease took more than 5 s; it expires on its own")
            }
        }
    }
    for w in watches {
        w.abort();
    }
    let _ = tokio::time::timeout(std::time::Duration::from_secs(3), server).await;
    result
}

/// `spillway doctor`.
async fn doctor(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let (data, _) = kube_clients(&args.kube).await?;
    let egw: ElasticGateway = match (&args.file, &args.gateway) {
        (Some(f), _) => {
            let mut docs = spillway::policy::load_policy_files(f)
                .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
            anyhow::ensure!(!docs.is_empty(), "{}: no ElasticGateway in it", f.display());
            docs.remove(0).map_err(|errors| {
                anyhow::anyhow!(
                    "{}: invalid policy\n{}",
                    f.display(),
                    spillway::config::render(&errors)
                )
            })?
        }
        (None, Some(g)) => {
            let (ns, name) = g
                .split_once('/')
                .ok_or_else(|| anyhow::anyhow!("{g:?} is not NAMESPACE/NAME"))?;
            kube::Api::<ElasticGateway>::namespaced(data.clone(), ns)
                .get(name)
                .await
                .with_context(|| format!("reading ElasticGateway {g}"))?
        }
        (None, None) => anyhow::bail!("give NAMESPACE/NAME or -f FILE"),
    };
    let doc = spillway::doctor::Doctor {
        data,
        mesh: mesh_client(&args.kube).await?,
        prom: args.prom.client()?,
        lease: args.lease.leader_election.then(|| {
            (
                args.lease.lease_name.clone(),
                args.lease.lease_namespace.clone(),
            )
        }),
        api_timeout: args.kube.api_timeout,
        now: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()),
    };
    println!(
        "spillway doctor: ElasticGateway {}/{}, Prometheus {}",
        egw.metadata.namespace.as_deref().unwrap_or("default"),
        egw.metadata.name.as_deref().unwrap_or(""),
        doc.prom.shown_url()
    );
    let report = doc.examine(&egw).await;
    print!("{report}");
    Ok(if report.failed() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn crd_yaml() -> anyhow::Result<String> {
    serde_saphyr::to_string(&ElasticGateway::crd()).context("rendering the CRD")
}

fn check(files: &[PathBuf]) -> ExitCode {
    let mut failed = false;
    for f in files {
        let docs = match spillway::policy::load_policy_files(f) {
            Ok(docs) => docs,
            Err(e) => {
                failed = true;
                println!(
                    "{}: 1 error(s)\n{}",
                    f.display(),
                    spillway::config::render(&[e])
                );
                continue;
            }
        };
        let several = docs.len() > 1;
        for (i, doc) in docs.into_iter().enumerate() {
            let at = if several {
                format!("{} (document {})", f.display(), i + 1)
            } else {
                f.display().to_string()
            };
            match doc {
                Ok(egw) => println!(
                    "{at}: ok (ElasticGateway {}/{})",
                    egw.metadata.namespace.as_deref().unwrap_or("default"),
                    egw.metadata.name.as_deref().unwrap_or("")
                ),
                Err(errors) => {
                    failed = true;
                    println!(
                        "{at}: {} error(s)\n{}",
                        errors.len(),
                        spillway::config::render(&errors)
                    );
                }
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Drives the progress bar and, when serving metrics, records and paces the `spillway` policy.
struct DrillObserver {
    bar: indicatif::ProgressBar,
    serve: Option<Served>,
}

struct Served {
    metrics: std::sync::Arc<spillway::metrics::Metrics>,
    gw: spillway::metrics::Gw,
    policy: spillway::policy::ElasticGatewaySpec,
    speed: f64,
    started: std::time::Instant,
}

impl Observer for DrillObserver {
    fn step(&mut self, policy: PolicyKind, t: u64, _point: &Point) {
        self.bar.inc(1);
        if let (Some(s), PolicyKind::Spillway) = (&self.serve, policy) {
            let due = s.started + std::time::Duration::from_secs_f64(t as f64 / s.speed);
            std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
        }
    }

    fn decision(
        &mut self,
        policy: PolicyKind,
        obs: &spillway::engine::Observation<'_>,
        d: &spillway::engine::Decision,
        plan: &spillway::act::Plan,
        seconds: f64,
    ) {
        if let (Some(s), PolicyKind::Spillway) = (&self.serve, policy) {
            s.metrics
                .record_decision(&s.gw, &s.policy, obs, d, plan, seconds);
        }
    }
}

/// Runs the drill with the metrics endpoint up; the `spillway` policy runs first, paced.
fn serve_drill(
    scenario: &Scenario,
    addr: std::net::SocketAddr,
    speed: f64,
    linger: u64,
    bar: indicatif::ProgressBar,
) -> anyhow::Result<spillway::sim::DrillReport> {
    anyhow::ensure!(
        (0.001..=1e6).contains(&speed),
        "--speed must be within 0.001 and 1000000 (simulated seconds per wall second), got {speed}"
    );
    anyhow::ensure!(
        scenario.policies.contains(&PolicyKind::Spillway),
        "--serve-metrics shows the spillway policy: add it to --policies"
    );
    let mut scenario = scenario.clone();
    scenario
        .policies
        .sort_by_key(|p| *p != PolicyKind::Spillway);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let metrics = std::sync::Arc::new(spillway::metrics::Metrics::new());
    let admin = spillway::server::Admin::new(metrics.clone());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (bound, serve) = runtime
        .block_on(spillway::server::bind(addr, admin.clone(), stopped))
        .with_context(|| format!("binding the metrics endpoint {addr}"))?;
    let server = runtime.spawn(serve);
    admin.set_ready(true);
    // In a drill, this process is the one agent acting.
    admin.metrics.set_leader(true);
    eprintln!("serving drill metrics on http://{bound}/metrics at {speed}x");
    let policy = &scenario.policy;
    let mut observer = DrillObserver {
        bar,
        serve: Some(Served {
            metrics,
            gw: spillway::metrics::Gw::new("istio-system", &policy.target.name),
            policy: policy.clone(),
            speed,
            started: std::time::Instant::now(),
        }),
    };
    let report = spillway::sim::run(&scenario, &mut observer);
    observer.bar.finish_and_clear();
    std::thread::sleep(std::time::Duration::from_secs(linger));
    let _ = stop.send(true);
    let _ = runtime.block_on(server);
    Ok(report)
}

fn drill_suite(dir: &std::path::Path, out: &std::path::Path) -> anyhow::Result<ExitCode> {
    use spillway::sim::suite;
    let loads = match suite::load(dir) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(2));
        }
    };
    let started = std::time::Instant::now();
    let results = suite::run(&loads, &mut spillway::sim::drill::Quiet);
    let card = suite::scorecard(&results);
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    std::fs::write(out.join("scorecard.txt"), &card)?;
    std::fs::write(
        out.join("suite.json"),
        serde_json::to_vec(&serde_json::json!({
            "verdict": suite::verdict(&results),
            "loads": results.iter().map(|r| serde_json::json!({
                "load": r.load,
                "summaries": r.report.runs.iter().map(|run| &run.summary).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        }))?,
    )?;
    print!("{card}");
    println!(
        "ran {} loads in {:.1} s; wrote {}",
        results.len(),
        started.elapsed().as_secs_f64(),
        out.join("scorecard.txt").display()
    );
    Ok(ExitCode::SUCCESS)
}

fn drill(args: DrillArgs) -> anyhow::Result<ExitCode> {
    if let Some(dir) = &args.suite {
        return drill_suite(dir, &args.out);
    }
    let mut scenario = match &args.scenario {
        None => Scenario::default(),
        Some(path) => match Scenario::load(path) {
            Ok(s) => s,
            Err(errors) => {
                eprintln!(
                    "{}: invalid scenario\n{}",
                    path.display(),
                    spillway::config::render(&errors)
                );
                return Ok(ExitCode::from(2));
            }
        },
    };
    if args.print_scenario {
        print!(
            "{}",
            serde_saphyr::to_string(&scenario).context("rendering the scenario")?
        );
        return Ok(ExitCode::SUCCESS);
    }
    if !args.policies.is_empty() {
        scenario.policies = args.policies.clone();
    }
    if let Some(seed) = args.seed {
        scenario.seed = seed;
    }
    if let Some(d) = args.duration {
        scenario.duration_seconds = d;
    }
    let errors = scenario.validate();
    if !errors.is_empty() {
        eprintln!(
            "invalid drill settings\n{}",
            spillway::config::render(&errors)
        );
        return Ok(ExitCode::from(2));
    }
    let started = std::time::Instant::now();
    // A progress bar only for runs long enough to need one (and only on a terminal).
    let samples = scenario.duration_seconds
        / (scenario.duration_seconds / 1500)
            .max(scenario.step_seconds)
            .max(1);
    let bar = if scenario.duration_seconds >= 6 * 3600 {
        indicatif::ProgressBar::new((samples + 1) * scenario.policies.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let report = match args.serve_metrics {
        None => {
            let mut observer = DrillObserver { bar, serve: None };
            let report = spillway::sim::run(&scenario, &mut observer);
            observer.bar.finish_and_clear();
            report
        }
        Some(addr) => serve_drill(&scenario, addr, args.speed, args.linger, bar)?,
    };
    let written = spillway::sim::report::write_all(&report, &args.out)
        .with_context(|| format!("writing the report to {}", args.out.display()))?;
    print!("{}", spillway::sim::report::table(&report));
    println!(
        "simulated {} s × {} policies in {:.2} s; wrote {}",
        scenario.duration_seconds,
        scenario.policies.len(),
        started.elapsed().as_secs_f64(),
        written
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_parse_as_operators_write_them() {
        for (s, d) in [
            ("5s", Duration::from_secs(5)),
            ("500ms", Duration::from_millis(500)),
            ("2m", Duration::from_secs(120)),
            ("1h30m", Duration::from_secs(5400)),
            ("1.5s", Duration::from_millis(1500)),
            ("PT5S", Duration::from_secs(5)),
            ("7", Duration::from_secs(7)),
            ("0.25", Duration::from_millis(250)),
        ] {
            assert_eq!(parse_duration(s), Ok(d), "{s}");
        }
        for bad in ["", "0s", "-5s", "5 parsecs", "NaN", "0"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
