//! `spillway run`: the agent's flags become its settings and clients, and the agent runs
//! ([`spillway::agent::runtime`]).

use super::flags::{
    FastPathArgs, KubeArgs, LeaseArgs, PromArgs, kube_clients, mesh_client, parse_addr,
    parse_duration,
};

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub kube: KubeArgs,
    #[command(flatten)]
    pub prom: PromArgs,
    #[command(flatten)]
    pub lease: LeaseArgs,
    #[command(flatten)]
    pub fast_path: FastPathArgs,
    /// Decide for every gateway at least this often.
    #[arg(long, env = "SPILLWAY_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub interval: std::time::Duration,
    /// Reconciles at once; the others wait their turn, first come first served
    /// (`spillway_decision_age_seconds` shows when gateways wait longer than their interval).
    #[arg(long, env = "SPILLWAY_CONCURRENCY", default_value_t = spillway::agent::context::DEFAULT_CONCURRENCY as u16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,
    /// Address of the admin server (/metrics, /healthz, /readyz). Loopback by default; in a pod,
    /// deploy/ binds the pod's own IP (from the downward API) so that Prometheus and the kubelet
    /// reach it and nothing else on the node does.
    #[arg(long, env = "SPILLWAY_ADMIN_ADDR", default_value = "127.0.0.1:8080", value_parser = parse_addr)]
    pub admin_addr: std::net::SocketAddr,
    /// A listener for the kubelet's probes alone (/healthz, /readyz), apart from the admin
    /// server: clients of the admin port that open connections and never finish them cannot
    /// delay the probes. deploy/ binds the pod's IP on 8081, which its NetworkPolicy admits no
    /// pod to. Unset: the probes are served on the admin server only.
    #[arg(long, env = "SPILLWAY_PROBE_ADDR", value_parser = parse_addr)]
    pub probe_addr: Option<std::net::SocketAddr>,
    /// Serve the validating admission webhook for ElasticGateways here, over TLS: the agent's
    /// own validation at admission (PromQL included, which the CRD cannot check). Every replica
    /// serves it. Unset: no webhook.
    #[arg(long, env = "SPILLWAY_WEBHOOK_ADDR", value_parser = parse_addr)]
    pub webhook_addr: Option<std::net::SocketAddr>,
    /// The webhook's serving certificate and key (`tls.crt`, `tls.key`: a `kubernetes.io/tls`
    /// Secret mounted here), read again when they change.
    #[arg(
        long,
        env = "SPILLWAY_WEBHOOK_CERT_DIR",
        default_value = "/etc/spillway/webhook"
    )]
    pub webhook_cert_dir: std::path::PathBuf,
    /// On SIGTERM, how long in-flight work may still run before the process exits anyway (keep
    /// it below the pod's terminationGracePeriodSeconds).
    #[arg(long, env = "SPILLWAY_SHUTDOWN_GRACE", default_value = "20s", value_parser = parse_duration)]
    pub shutdown_grace: std::time::Duration,
    /// Namespaces whose pods may be gateway pods (their labels are kept; elsewhere only requests).
    #[arg(
        long,
        env = "SPILLWAY_GATEWAY_NAMESPACES",
        value_delimiter = ',',
        default_value = "istio-system"
    )]
    pub gateway_namespaces: Vec<String>,
    /// How long a Lease holds without renewal: when the leader stalls or is cut off, another
    /// replica takes over after about this long. The leader writes only while more than
    /// --api-timeout of it is left, so it must exceed --api-timeout + --lease-retry-period.
    #[arg(long, env = "SPILLWAY_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: std::time::Duration,
    /// How often the leader renews the Lease and a standby reads it (a Lease released by a
    /// leader shutting down is taken within this period).
    #[arg(long, env = "SPILLWAY_LEASE_RETRY_PERIOD", default_value = "2s", value_parser = parse_duration)]
    pub lease_retry_period: std::time::Duration,
    /// This replica's identity in the Lease and on Events (normally the pod name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
}

/// `spillway run`: the flags become the agent's settings and clients.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
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
        probe_addr: args.probe_addr,
        webhook: args
            .webhook_addr
            .map(|a| (a, args.webhook_cert_dir.clone())),
        shutdown_grace: args.shutdown_grace,
        gateway_namespaces: args.gateway_namespaces.clone(),
        concurrency: usize::from(args.concurrency),
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
pub fn check_timeouts(args: &RunArgs) -> anyhow::Result<()> {
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
