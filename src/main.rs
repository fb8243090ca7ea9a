//! The `spillway` command line.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use kube::CustomResourceExt;

use spillway::clock::unix_now;
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
    Drill(Box<DrillArgs>),
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
    #[command(flatten)]
    auth: PromAuthArgs,
    /// An answer evaluated further than this from our clock is stale (treated as missing).
    #[arg(long, env = "SPILLWAY_PROMETHEUS_MAX_SKEW", default_value = "60s", value_parser = parse_duration)]
    prometheus_max_skew: std::time::Duration,
}

/// How to authenticate to Prometheus and trust its certificate (the agent, `doctor`, and the
/// drill's history queries alike).
#[derive(clap::Args, Debug, Clone, Default)]
struct PromAuthArgs {
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
}

impl PromAuthArgs {
    /// The credentials (read on every query) and the CA (read now).
    fn parts(&self) -> anyhow::Result<(spillway::prom::PromAuth, Option<Vec<u8>>)> {
        use spillway::prom::{BasicAuth, PromAuth};
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
        let auth = PromAuth {
            bearer_token_file: self.prometheus_token_file.clone(),
            basic_auth,
            header_files: self.prometheus_header_file.clone(),
        };
        Ok((auth, ca_pem))
    }
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
        let (auth, ca_pem) = self.auth.parts()?;
        Ok(spillway::prom::Prometheus::new(
            spillway::prom::PromConfig {
                url: self.prometheus_url.clone(),
                timeout: self.prometheus_timeout,
                auth,
                ca_pem,
                max_skew: self.prometheus_max_skew,
            },
        )?)
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
    #[command(flatten)]
    fast_path: FastPathArgs,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    kube: KubeArgs,
    #[command(flatten)]
    prom: PromArgs,
    #[command(flatten)]
    lease: LeaseArgs,
    #[command(flatten)]
    fast_path: FastPathArgs,
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
    /// How long a Lease holds without renewal: when the leader stalls or is cut off, another
    /// replica takes over after about this long. The leader writes only while more than
    /// --api-timeout of it is left, so it must exceed --api-timeout + --lease-retry-period.
    #[arg(long, env = "SPILLWAY_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    lease_duration: std::time::Duration,
    /// How often the leader renews the Lease and a standby reads it (a Lease released by a
    /// leader shutting down is taken within this period).
    #[arg(long, env = "SPILLWAY_LEASE_RETRY_PERIOD", default_value = "2s", value_parser = parse_duration)]
    lease_retry_period: std::time::Duration,
    /// This replica's identity in the Lease and on Events (normally the pod name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
}

/// The fast path: the gateway pods' own request counters, read between Prometheus's scrapes so
/// that a surge is seen within seconds. It may only raise the count; Prometheus stays the source
/// for scale-down and the fallback when pods cannot be reached.
#[derive(clap::Args, Debug, Clone)]
struct FastPathArgs {
    /// Read the gateway pods' counters (for gateways with a requestRate metric). The agent then
    /// needs to reach the pods on --fast-path-port (a NetworkPolicy may have to allow it).
    #[arg(long, env = "SPILLWAY_FAST_PATH", default_value_t = true, action = clap::ArgAction::Set)]
    fast_path: bool,
    /// Port of the pods' Prometheus stats (Envoy's listener in an Istio gateway pod).
    #[arg(long, env = "SPILLWAY_FAST_PATH_PORT", default_value_t = 15090)]
    fast_path_port: u16,
    /// Path of the pods' Prometheus stats.
    #[arg(
        long,
        env = "SPILLWAY_FAST_PATH_PATH",
        default_value = "/stats/prometheus"
    )]
    fast_path_path: String,
    /// The request counter summed over its series.
    #[arg(
        long,
        env = "SPILLWAY_FAST_PATH_METRIC",
        default_value = "istio_requests_total"
    )]
    fast_path_metric: String,
    /// How often the pods are read (and the gateway decided).
    #[arg(long, env = "SPILLWAY_FAST_PATH_INTERVAL", default_value = "2s", value_parser = parse_duration)]
    fast_path_interval: std::time::Duration,
    /// Pods read per gateway per read, at most (the rate is scaled to the ready fleet).
    #[arg(long, env = "SPILLWAY_FAST_PATH_PODS", default_value_t = spillway::fastpath::DEFAULT_SAMPLE_PODS, value_parser = clap::value_parser!(usize))]
    fast_path_pods: usize,
    /// Longest one pod's read may take.
    #[arg(long, env = "SPILLWAY_FAST_PATH_TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    fast_path_timeout: std::time::Duration,
}

impl FastPathArgs {
    fn config(&self) -> Option<spillway::fastpath::FastPathConfig> {
        self.fast_path.then(|| spillway::fastpath::FastPathConfig {
            port: self.fast_path_port,
            path: self.fast_path_path.clone(),
            metric: self.fast_path_metric.clone(),
            interval: self.fast_path_interval,
            max_pods: self.fast_path_pods.max(1),
            timeout: self.fast_path_timeout,
        })
    }
}

/// Where the cluster is, for the drill's read-only commands.
#[derive(clap::Args, Debug, Clone, Default)]
struct ClusterArgs {
    /// Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or the in-cluster account).
    #[arg(long, env = "SPILLWAY_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use.
    #[arg(long, env = "SPILLWAY_KUBE_CONTEXT")]
    context: Option<String>,
}

/// How to reach a Prometheus for its history.
#[derive(clap::Args, Debug, Clone)]
struct HistoryArgs {
    /// Start of the window: RFC 3339 (2026-11-20T09:00:00Z), Unix seconds, or now-2h.
    #[arg(long)]
    start: Option<String>,
    /// End of the window (same forms as --start).
    #[arg(long)]
    end: Option<String>,
    /// Step of the range queries.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    step: std::time::Duration,
    /// Load query (requests per second); default: the policy's own first metric.
    #[arg(long)]
    query: Option<String>,
    /// Add up the series of the load query instead of refusing several.
    #[arg(long)]
    sum: bool,
    /// Longest hole in the data that is bridged (by interpolation, and reported); a longer one
    /// is an error.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    max_gap: std::time::Duration,
    /// Timeout of one range query.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    prometheus_timeout: std::time::Duration,
    #[command(flatten)]
    auth: PromAuthArgs,
}

#[derive(Subcommand, Debug)]
enum DrillCommand {
    /// Score a real drill (a load test against the real gateway) from Prometheus history: the
    /// load and spillway's own metrics give the same figures as a simulated drill, beside the
    /// simulator's prediction for the recorded load. Writes report.json, timeline.csv,
    /// chart.svg and report.html.
    Score(Box<ScoreArgs>),
    /// Mark a drill's window on its ElasticGateway (annotation `drill.spillway.io/NAME`): the
    /// agent exports it as `spillway_drill_active`, which the shipped dashboard shows as an
    /// annotation, and `drill score --name` finds the window by it.
    Mark(MarkArgs),
}

#[derive(clap::Args, Debug)]
struct ScoreArgs {
    /// Prometheus base URL holding the drill's history.
    #[arg(long, env = "SPILLWAY_PROMETHEUS_URL")]
    prometheus: String,
    #[command(flatten)]
    history: HistoryArgs,
    /// The drill's name (from `spillway drill mark`): its window, instead of --start/--end.
    #[arg(long)]
    name: Option<String>,
    /// How far back to look for a named drill.
    #[arg(long, default_value = "30d", value_parser = parse_lookback)]
    within: f64,
    /// The ElasticGateway manifest (YAML) that ran the drill.
    #[arg(long, conflicts_with = "from_cluster")]
    policy: Option<PathBuf>,
    /// Read the policy and the cluster for the prediction from the cluster (read-only).
    #[arg(long)]
    from_cluster: bool,
    #[command(flatten)]
    kube: ClusterArgs,
    /// The ElasticGateway, as NAMESPACE/NAME or a NAME unique across namespaces.
    #[arg(long)]
    gateway: Option<String>,
    /// Scenario (YAML) whose cluster the prediction runs on (default: the cluster with
    /// --from-cluster, else the built-in one).
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Requests per second one gateway pod serves (default: the scenario's).
    #[arg(long)]
    capacity_per_pod: Option<f64>,
    /// Policies predicted beside the real run.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "spillway,hpa"
    )]
    policies: Vec<PolicyKind>,
    /// Folder for report.json, timeline.csv, chart.svg and report.html.
    #[arg(long, default_value = "drill-score")]
    out: PathBuf,
}

#[derive(clap::Args, Debug)]
struct MarkArgs {
    /// The drill's name (letters, digits, '-', '_', '.').
    #[arg(long)]
    name: String,
    /// The ElasticGateway, as NAMESPACE/NAME or a NAME unique across namespaces.
    #[arg(long)]
    gateway: String,
    /// Start of the window (default: now). RFC 3339, Unix seconds, now or now-<duration>.
    #[arg(long)]
    start: Option<String>,
    /// End of the window; without it the drill is open until marked again with --end.
    #[arg(long)]
    end: Option<String>,
    /// Remove the mark.
    #[arg(long, conflicts_with_all = ["start", "end"])]
    remove: bool,
    #[command(flatten)]
    kube: ClusterArgs,
}

fn parse_lookback(s: &str) -> Result<f64, String> {
    let d: k8s_openapi::jiff::SignedDuration = match s.strip_suffix('d') {
        Some(days) => days
            .parse::<f64>()
            .map_err(|e| format!("{s:?}: {e}"))
            .and_then(|d| {
                k8s_openapi::jiff::SignedDuration::try_from_secs_f64(d * 86_400.0)
                    .map_err(|e| format!("{s:?}: {e}"))
            })?,
        None => s
            .parse()
            .map_err(|e| format!("{s:?} is not a duration like 30d or 12h: {e}"))?,
    };
    if !d.is_positive() {
        return Err(format!("{s:?} must be positive"));
    }
    Ok(d.as_secs_f64())
}

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
struct DrillArgs {
    #[command(subcommand)]
    action: Option<DrillCommand>,
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
    /// Print the scenario as YAML and exit: the built-in one, the file given, the cluster's
    /// (--from-cluster) and/or with the recorded load (--load-from-prometheus). What it prints,
    /// `spillway drill SCENARIO` runs as it is.
    #[arg(long)]
    print_scenario: bool,
    /// Make the scenario from the cluster as it is now (read-only): the ECS pool's nodes and what
    /// other workloads request on them, the virtual nodes, the gateway's replicas, pod requests
    /// and policy.
    #[arg(long, conflicts_with = "scenario", requires = "gateway")]
    from_cluster: bool,
    #[command(flatten)]
    kube: ClusterArgs,
    /// With --from-cluster: the ElasticGateway, as NAMESPACE/NAME or a NAME unique across
    /// namespaces.
    #[arg(long)]
    gateway: Option<String>,
    /// With --from-cluster: requests per second one gateway pod serves (default: the policy's
    /// target per replica × 1.4).
    #[arg(long)]
    capacity_per_pod: Option<f64>,
    /// Replay the load Prometheus recorded in --start..--end (a range query) instead of the
    /// scenario's own, under every policy.
    #[arg(long, requires_all = ["start", "end"])]
    load_from_prometheus: Option<String>,
    #[command(flatten)]
    history: HistoryArgs,
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
        Command::Drill(args) => match args.action {
            Some(DrillCommand::Score(score)) => drill_score(*score),
            Some(DrillCommand::Mark(mark)) => drill_mark(mark),
            None => drill(*args),
        },
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
/// which may stay quiet for minutes). Neither retries on its own. Both name this replica in
/// their User-Agent, so that the API server's audit log tells the replicas' writes apart.
async fn kube_clients(
    args: &KubeArgs,
    identity: &str,
) -> anyhow::Result<(kube::Client, kube::Client)> {
    let mut config = kube_config(args.kubeconfig.as_deref(), args.context.as_deref()).await?;
    name_replica(&mut config, identity)?;
    let requests = spillway::k8s::client(config.clone(), Some(args.api_timeout))?;
    let watches = spillway::k8s::client(config, None)?;
    Ok((requests, watches))
}

/// Names this replica in the User-Agent, so that an API server's audit log tells the replicas'
/// writes apart.
fn name_replica(config: &mut kube::Config, identity: &str) -> anyhow::Result<()> {
    let agent = format!("spillway/{} ({identity})", env!("CARGO_PKG_VERSION"));
    config.headers.push((
        hyper::header::USER_AGENT,
        hyper::header::HeaderValue::from_str(&agent)
            .with_context(|| format!("--identity {identity:?} is not a valid header value"))?,
    ));
    Ok(())
}

/// The client for ASM's API server, when one is configured (requests only: nothing is watched
/// there), naming this replica as the data plane's clients do.
async fn mesh_client(args: &KubeArgs, identity: &str) -> anyhow::Result<Option<kube::Client>> {
    if args.mesh_kubeconfig.is_none() && args.mesh_context.is_none() {
        return Ok(None);
    }
    let mut config = kube_config(
        args.mesh_kubeconfig.as_deref(),
        args.mesh_context.as_deref(),
    )
    .await
    .context("the mesh's API server (--mesh-kubeconfig, --mesh-context)")?;
    name_replica(&mut config, identity)?;
    Ok(Some(spillway::k8s::client(config, Some(args.api_timeout))?))
}

/// `spillway run`: the flags become the agent's settings and clients.
async fn agent(args: RunArgs) -> anyhow::Result<()> {
    use spillway::agent::runtime::{self, Clients, Settings};
    check_timeouts(&args)?;
    let identity = args
        .identity
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("spillway-{}", std::process::id()));
    let prom = args.prom.client()?;
    let (requests, watches) = kube_clients(&args.kube, &identity).await?;
    let mesh = mesh_client(&args.kube, &identity).await?;
    let fast_path = args
        .fast_path
        .config()
        .map(spillway::fastpath::FastPath::new)
        .transpose()?;
    let lease = args
        .lease
        .leader_election
        .then(|| spillway::k8s::leader::LeaseSettings {
            name: args.lease.lease_name.clone(),
            namespace: args.lease.lease_namespace.clone(),
            identity: identity.clone(),
            duration: args.lease_duration,
            retry: args.lease_retry_period,
            call_timeout: args.kube.api_timeout,
        });
    let settings = Settings {
        identity,
        interval: args.interval,
        admin_addr: args.admin_addr,
        shutdown_grace: args.shutdown_grace,
        gateway_namespaces: args.gateway_namespaces.clone(),
        api_timeout: args.kube.api_timeout,
        lease,
    };
    let clients = Clients {
        requests,
        watches,
        mesh,
    };
    Ok(runtime::run(settings, clients, prom, fast_path).await?)
}

/// Every call must fit in the Lease: a write goes out only while more than --api-timeout of it
/// is left, and the leader renews every --lease-retry-period.
fn check_timeouts(args: &RunArgs) -> anyhow::Result<()> {
    if !args.lease.leader_election {
        return Ok(());
    }
    let lease = args.lease_duration;
    if args.kube.api_timeout + args.lease_retry_period >= lease {
        anyhow::bail!(
            "--api-timeout ({:?}) plus --lease-retry-period ({:?}) must be shorter than --lease-duration ({lease:?}): the leader writes only while more than --api-timeout of its Lease is left",
            args.kube.api_timeout,
            args.lease_retry_period
        );
    }
    if args.prom.prometheus_timeout >= lease {
        anyhow::bail!(
            "--prometheus-timeout ({:?}) must be shorter than --lease-duration ({lease:?})",
            args.prom.prometheus_timeout
        );
    }
    Ok(())
}
/// `spillway doctor`.
async fn doctor(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let (data, _) = kube_clients(&args.kube, "doctor").await?;
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
        mesh: mesh_client(&args.kube, "doctor").await?,
        prom: args.prom.client()?,
        lease: args.lease.leader_election.then(|| {
            (
                args.lease.lease_name.clone(),
                args.lease.lease_namespace.clone(),
            )
        }),
        api_timeout: args.kube.api_timeout,
        fast_path: args
            .fast_path
            .config()
            .map(spillway::fastpath::FastPath::new)
            .transpose()?,
        now: spillway::clock::unix_now(),
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
    gw: spillway::model::GatewayKey,
    policy: spillway::policy::ElasticGatewaySpec,
    speed: f64,
    started: std::time::Instant,
    /// Unix time the served drill started.
    started_unix: f64,
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
                .record_decision(&s.gw, &s.policy, obs.pods, obs.fast, d, plan, seconds);
            // A served drill is a drill: marked as one while it runs, as `drill mark` would.
            s.metrics.record_drills(
                &s.gw,
                &[spillway::policy::marks::Mark {
                    name: "served-drill".into(),
                    start: s.started_unix,
                    end: None,
                }],
                unix_now(),
            );
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
            gw: spillway::model::GatewayKey::new("istio-system", &policy.target.name),
            policy: policy.clone(),
            speed,
            started: std::time::Instant::now(),
            started_unix: unix_now(),
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

/// A client for read-only commands (snapshots, marks): bounded requests.
async fn kube_client(k: &ClusterArgs) -> anyhow::Result<kube::Client> {
    let config = kube_config(k.kubeconfig.as_deref(), k.context.as_deref()).await?;
    Ok(spillway::k8s::client(
        config,
        Some(std::time::Duration::from_secs(30)),
    )?)
}

fn history_prometheus(url: &str, h: &HistoryArgs) -> anyhow::Result<spillway::prom::Prometheus> {
    let (auth, ca_pem) = h.auth.parts()?;
    Ok(spillway::prom::Prometheus::new(
        spillway::prom::PromConfig {
            url: url.to_string(),
            timeout: h.prometheus_timeout,
            auth,
            ca_pem,
            max_skew: std::time::Duration::from_secs(60),
        },
    )?)
}

fn read_options(h: &HistoryArgs) -> spillway::replay::recorded::ReadOptions {
    spillway::replay::recorded::ReadOptions {
        sum: h.sum,
        max_gap: h.max_gap.as_secs_f64(),
    }
}

/// The window and the load query (`--query`, else the policy's first metric's).
fn history_window(
    h: &HistoryArgs,
    policy: &spillway::policy::ElasticGatewaySpec,
    namespace: &str,
    now: f64,
) -> anyhow::Result<(spillway::replay::Window, String)> {
    let time = |flag: &str, v: &Option<String>| -> anyhow::Result<f64> {
        let v = v
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("--{flag} is required"))?;
        spillway::clock::parse_time(v, now).map_err(|e| anyhow::anyhow!("--{flag}: {e}"))
    };
    let window = spillway::replay::Window::new(
        time("start", &h.start)?,
        time("end", &h.end)?,
        h.step.as_secs_f64().round().max(1.0),
    )?;
    let query = match &h.query {
        Some(q) => q.clone(),
        None => policy
            .metrics
            .first()
            .and_then(|m| m.effective_query(namespace, &policy.target))
            .ok_or_else(|| anyhow::anyhow!("the policy has no load query: pass --query"))?,
    };
    Ok((window, query))
}

/// Progress of chunked range queries on stderr: a bar on a terminal, lines otherwise.
fn chunk_progress(what: &'static str) -> impl FnMut(usize, usize) {
    let mut bar: Option<indicatif::ProgressBar> = None;
    move |done, total| {
        if total < 2 {
            return;
        }
        let b = bar.get_or_insert_with(|| {
            let b = indicatif::ProgressBar::new(total as u64);
            b.set_message(what);
            b
        });
        b.set_position(done as u64);
        if b.is_hidden() {
            eprintln!("{what}: {done}/{total} range queries");
        }
        if done == total {
            b.finish_and_clear();
        }
    }
}

/// `NS/NAME` → (ns, name); a bare NAME is in istio-system.
fn split_gateway(g: &str) -> (String, String) {
    match g.split_once('/') {
        Some((ns, name)) => (ns.into(), name.into()),
        None => ("istio-system".into(), g.into()),
    }
}

/// `spillway drill score`.
fn drill_score(a: ScoreArgs) -> anyhow::Result<ExitCode> {
    use spillway::replay::{self, recorded, score};
    let now = unix_now();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        // The policy, the gateway's name and the cluster the prediction runs on.
        let (mut base, ns, name) = if a.from_cluster {
            let gateway = a.gateway.clone().ok_or_else(|| {
                anyhow::anyhow!("--from-cluster needs --gateway NAMESPACE/NAME (or NAME)")
            })?;
            let client = kube_client(&a.kube).await?;
            let (s, ns) =
                replay::snapshot::read(&client, &gateway, a.capacity_per_pod, now).await?;
            let name = split_gateway(&gateway).1;
            (s, ns, name)
        } else {
            let mut base = match &a.scenario {
                None => Scenario::default(),
                Some(p) => Scenario::load(p).map_err(|errors| {
                    anyhow::anyhow!(
                        "{}: invalid scenario\n{}",
                        p.display(),
                        spillway::config::render(&errors)
                    )
                })?,
            };
            let (ns, name) = if let Some(path) = &a.policy {
                let docs = spillway::policy::load_policy_files(path)
                    .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.message))?;
                let egw = match docs.into_iter().next() {
                    Some(Ok(egw)) => egw,
                    Some(Err(errors)) => anyhow::bail!(
                        "{}: invalid ElasticGateway\n{}",
                        path.display(),
                        spillway::config::render(&errors)
                    ),
                    None => anyhow::bail!("{}: no ElasticGateway in it", path.display()),
                };
                base.policy = egw.spec.clone();
                (
                    egw.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
                    egw.metadata.name.clone().unwrap_or_default(),
                )
            } else if let Some(g) = &a.gateway {
                split_gateway(g)
            } else {
                anyhow::bail!(
                    "say which ElasticGateway ran the drill: --policy FILE, --gateway NAMESPACE/NAME, or --from-cluster --gateway NAMESPACE/NAME"
                );
            };
            (base, ns, name)
        };
        if let Some(c) = a.capacity_per_pod {
            base.gateway.capacity_per_pod_rps = c;
        }
        base.policies = a.policies.clone();
        let prom = history_prometheus(&a.prometheus, &a.history)?;
        let mut history = a.history.clone();
        if let Some(drill) = &a.name {
            replay::marks::check_name(drill)?;
            let [qs, qe] = replay::marks::window_queries(&ns, &name, drill, a.within);
            let value = |q: String| {
                let prom = prom.clone();
                async move {
                    match prom.query(&q, now).await {
                        spillway::model::LoadSample::Total(v) => Ok(v),
                        spillway::model::LoadSample::Missing(why) => Err(why),
                        other => Err(format!("unexpected answer {other:?}")),
                    }
                }
            };
            let start = value(qs).await.map_err(|why| {
                anyhow::anyhow!(
                    "no drill named {drill:?} for ElasticGateway {ns}/{name} in the last {:.0} days ({why}); mark one with `spillway drill mark`, or give --start and --end",
                    a.within / 86_400.0
                )
            })?;
            let end = value(qe).await.map_err(|_| {
                anyhow::anyhow!(
                    "the drill {drill:?} has no end yet: end it with `spillway drill mark --name {drill} --gateway {ns}/{name} --end now`"
                )
            })?;
            history.start = Some(format!("{start}"));
            history.end = Some(format!("{end}"));
            eprintln!(
                "drill {drill}: {} .. {}",
                spillway::clock::rfc3339(start),
                spillway::clock::rfc3339(end)
            );
        }
        let (window, query) = history_window(&history, &base.policy, &ns, now)?;
        let target = score::Target {
            namespace: ns.clone(),
            name: name.clone(),
            load_query: query,
            capacity_per_pod_rps: base.gateway.capacity_per_pod_rps,
            currency: base.policy.cost.currency.clone(),
        };
        let mut progress = |what: &str, done: usize, total: usize| {
            if total > 1 {
                eprintln!("{what}: {done}/{total} range queries");
            }
        };
        let h = score::fetch(&prom, &target, &window, read_options(&history), &mut progress)
            .await?;
        let report = score::report(&h, &target, &window, &base, &mut spillway::sim::drill::Quiet)?;
        for n in &report.data_notes {
            eprintln!("note: {n}");
        }
        let mut written = spillway::sim::report::write_all(&report, &a.out)
            .with_context(|| format!("writing the report to {}", a.out.display()))?;
        written.push(
            replay::html::write(&report, &a.out)
                .with_context(|| format!("writing the report to {}", a.out.display()))?,
        );
        print!("{}", spillway::sim::report::table(&report));
        println!(
            "scored {}/{} over {} ({} values of the load{}); wrote {}",
            ns,
            name,
            window.describe(),
            h.load.as_ref().map_or(0, |l| l.values.len()),
            if let Some(load) = &h.load {
                format!(
                    ", {} surge(s)",
                    recorded::detect_surges(
                        &load.values,
                        window.step,
                        target.capacity_per_pod_rps,
                        window.start
                    )
                    .len()
                )
            } else {
                String::new()
            },
            written
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(ExitCode::SUCCESS)
    })
}

/// `spillway drill mark`.
fn drill_mark(a: MarkArgs) -> anyhow::Result<ExitCode> {
    let now = unix_now();
    let time = |flag: &str, v: &Option<String>| -> anyhow::Result<Option<f64>> {
        v.as_deref()
            .map(|v| {
                spillway::clock::parse_time(v, now).map_err(|e| anyhow::anyhow!("--{flag}: {e}"))
            })
            .transpose()
    };
    let (start, end) = (time("start", &a.start)?, time("end", &a.end)?);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mark = runtime.block_on(async {
        let client = kube_client(&a.kube).await?;
        spillway::replay::marks::set(&client, &a.gateway, &a.name, start, end, a.remove, now)
            .await
            .map_err(anyhow::Error::from)
    })?;
    match mark {
        Some(m) => println!(
            "drill {} marked on {}: {}{}",
            m.name,
            a.gateway,
            m.value(),
            if m.end.is_none() {
                " (open: end it with --end now)"
            } else {
                ""
            }
        ),
        None => println!("drill {} unmarked on {}", a.name, a.gateway),
    }
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
    let now = unix_now();
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    // The gateway's namespace, for the policy's load query.
    let mut namespace = "istio-system".to_string();
    if args.from_cluster {
        let gateway = args.gateway.clone().unwrap_or_default();
        (scenario, namespace) = runtime()?.block_on(async {
            let client = kube_client(&args.kube).await?;
            spillway::replay::snapshot::read(&client, &gateway, args.capacity_per_pod, now)
                .await
                .map_err(anyhow::Error::from)
        })?;
        eprintln!(
            "read {}: {} ECS/virtual nodes, {} replicas of {} CPU / {} B, {} rps per pod",
            scenario.name,
            scenario.cluster.extra_nodes.len(),
            scenario.gateway.replicas,
            scenario.gateway.cpu,
            scenario.gateway.memory,
            scenario.gateway.capacity_per_pod_rps
        );
    }
    let mut data_notes = Vec::new();
    if let Some(url) = &args.load_from_prometheus {
        let (window, query) = history_window(&args.history, &scenario.policy, &namespace, now)?;
        let prom = history_prometheus(url, &args.history)?;
        let opts = read_options(&args.history);
        let rec = runtime()?.block_on(async {
            let raw = spillway::replay::recorded::fetch(
                &prom,
                &query,
                &window,
                &mut chunk_progress("load"),
            )
            .await?;
            spillway::replay::recorded::to_grid(raw, &query, &window, opts)
        })?;
        for n in rec.quality.notes() {
            eprintln!("note: {n}");
        }
        data_notes = rec.quality.notes();
        let source = format!("{query} from {}", prom.shown_url());
        scenario = spillway::replay::recorded::replay_scenario(&scenario, &rec, &source);
        eprintln!(
            "recorded load: {} values, peak {:.0} rps, {} surge(s)",
            rec.values.len(),
            rec.values.iter().copied().fold(0.0, f64::max),
            scenario.load.surges().len()
        );
    }
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
    let mut report = report;
    report.data_notes = data_notes;
    let mut written = spillway::sim::report::write_all(&report, &args.out)
        .with_context(|| format!("writing the report to {}", args.out.display()))?;
    written.push(
        spillway::replay::html::write(&report, &args.out)
            .with_context(|| format!("writing the report to {}", args.out.display()))?,
    );
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
