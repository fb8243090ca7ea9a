//! The flag groups the commands share, and what they build: Kubernetes clients, the Prometheus
//! client, the fast path's settings, the history window of the drill's replay and score.

use std::path::PathBuf;

use anyhow::Context as _;

/// Parses a positive duration: "5s", "500ms", "2m", "1h30m", "1.5s" (jiff's friendly format,
/// as Go's `time.ParseDuration` writes them; jiff comes with k8s-openapi), ISO 8601 ("PT5S"), or
/// a bare number of seconds; up to a day.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
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
pub fn parse_addr(s: &str) -> Result<std::net::SocketAddr, String> {
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
pub struct PromArgs {
    /// Prometheus base URL (the HTTP API is under /api/v1).
    #[arg(
        long,
        env = "SPILLWAY_PROMETHEUS_URL",
        default_value = "http://prometheus-k8s.monitoring.svc:9090"
    )]
    pub prometheus_url: String,
    /// Timeout of one Prometheus query.
    #[arg(long, env = "SPILLWAY_PROMETHEUS_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub prometheus_timeout: std::time::Duration,
    #[command(flatten)]
    pub auth: PromAuthArgs,
    /// An answer evaluated further than this from our clock is stale (treated as missing).
    #[arg(long, env = "SPILLWAY_PROMETHEUS_MAX_SKEW", default_value = "60s", value_parser = parse_duration)]
    pub prometheus_max_skew: std::time::Duration,
}

/// How to authenticate to Prometheus and trust its certificate (the agent, `doctor`, and the
/// drill's history queries alike).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct PromAuthArgs {
    /// File holding a bearer token to send to Prometheus (`Authorization: Bearer`); read again
    /// on every query, so a rotated Secret needs no restart.
    #[arg(long, env = "SPILLWAY_PROMETHEUS_TOKEN_FILE")]
    pub prometheus_token_file: Option<PathBuf>,
    /// User name for basic authentication to Prometheus (e.g. an ARMS AccessKey ID).
    #[arg(
        long,
        env = "SPILLWAY_PROMETHEUS_BASIC_AUTH_USER",
        requires = "prometheus_basic_auth_password_file"
    )]
    pub prometheus_basic_auth_user: Option<String>,
    /// File holding the basic-authentication password; read again on every query.
    #[arg(
        long,
        env = "SPILLWAY_PROMETHEUS_BASIC_AUTH_PASSWORD_FILE",
        requires = "prometheus_basic_auth_user"
    )]
    pub prometheus_basic_auth_password_file: Option<PathBuf>,
    /// An extra header sent to Prometheus, as NAME=FILE: the value is the file's content, read
    /// again on every query. Repeat the flag (or separate with commas in the variable).
    #[arg(long, env = "SPILLWAY_PROMETHEUS_HEADER_FILES", value_delimiter = ',', value_parser = parse_header_file)]
    pub prometheus_header_file: Vec<(String, PathBuf)>,
    /// PEM file of CAs to trust for an HTTPS Prometheus.
    #[arg(long, env = "SPILLWAY_PROMETHEUS_CA_FILE")]
    pub prometheus_ca_file: Option<PathBuf>,
}

impl PromAuthArgs {
    /// The credentials (read on every query) and the CA (read now).
    pub fn parts(&self) -> anyhow::Result<(spillway::prom::PromAuth, Option<Vec<u8>>)> {
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
pub fn parse_header_file(s: &str) -> Result<(String, PathBuf), String> {
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
    pub fn client(&self) -> anyhow::Result<spillway::prom::Prometheus> {
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
pub struct KubeArgs {
    /// Kubeconfig file; without it, the in-cluster service account (or $KUBECONFIG, ~/.kube/config).
    #[arg(long, env = "SPILLWAY_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use.
    #[arg(long, env = "SPILLWAY_KUBE_CONTEXT")]
    pub context: Option<String>,
    /// ASM: kubeconfig of the mesh's own API server, where IstioGateways live (in a pod, a
    /// mounted Secret such as /etc/spillway/mesh/kubeconfig). Without it or --mesh-context,
    /// IstioGateways are read where the pods are.
    #[arg(long, env = "SPILLWAY_MESH_KUBECONFIG")]
    pub mesh_kubeconfig: Option<PathBuf>,
    /// ASM: context of the mesh's API server (in --mesh-kubeconfig, or the default kubeconfig).
    #[arg(long, env = "SPILLWAY_MESH_CONTEXT")]
    pub mesh_context: Option<String>,
    /// Longest one Kubernetes API call may take before it counts as failed.
    #[arg(long, env = "SPILLWAY_API_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub api_timeout: std::time::Duration,
}

/// Leader election's Lease (shared by `run` and `doctor`).
#[derive(clap::Args, Debug, Clone)]
pub struct LeaseArgs {
    /// Elect a leader on a Lease so that only one replica acts (turn off only with one replica).
    #[arg(long, env = "SPILLWAY_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// Name of the Lease.
    #[arg(long, env = "SPILLWAY_LEASE_NAME", default_value = "spillway")]
    pub lease_name: String,
    /// Namespace of the Lease (normally spillway's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "spillway-system")]
    pub lease_namespace: String,
}

/// The fast path: the gateway pods' own request counters, read between Prometheus's scrapes so
/// that a surge is seen within seconds. It may only raise the count; Prometheus stays the source
/// for scale-down and the fallback when pods cannot be reached.
#[derive(clap::Args, Debug, Clone)]
pub struct FastPathArgs {
    /// Read the gateway pods' counters (for gateways with a requestRate metric). The agent then
    /// needs to reach the pods on --fast-path-port (a NetworkPolicy may have to allow it).
    #[arg(long, env = "SPILLWAY_FAST_PATH", default_value_t = true, action = clap::ArgAction::Set)]
    pub fast_path: bool,
    /// Port of the pods' Prometheus stats (Envoy's listener in an Istio gateway pod).
    #[arg(long, env = "SPILLWAY_FAST_PATH_PORT", default_value_t = 15090)]
    pub fast_path_port: u16,
    /// Path of the pods' Prometheus stats.
    #[arg(
        long,
        env = "SPILLWAY_FAST_PATH_PATH",
        default_value = "/stats/prometheus"
    )]
    pub fast_path_path: String,
    /// The request counter summed over its series.
    #[arg(
        long,
        env = "SPILLWAY_FAST_PATH_METRIC",
        default_value = "istio_requests_total"
    )]
    pub fast_path_metric: String,
    /// How often the pods are read (and the gateway decided).
    #[arg(long, env = "SPILLWAY_FAST_PATH_INTERVAL", default_value = "2s", value_parser = parse_duration)]
    pub fast_path_interval: std::time::Duration,
    /// Pods read per gateway per read, at most (the rate is scaled to the ready fleet).
    #[arg(long, env = "SPILLWAY_FAST_PATH_PODS", default_value_t = spillway::fastpath::DEFAULT_SAMPLE_PODS, value_parser = clap::value_parser!(usize))]
    pub fast_path_pods: usize,
    /// Longest one pod's read may take.
    #[arg(long, env = "SPILLWAY_FAST_PATH_TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    pub fast_path_timeout: std::time::Duration,
}

impl FastPathArgs {
    pub fn config(&self) -> Option<spillway::fastpath::FastPathConfig> {
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
pub struct ClusterArgs {
    /// Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or the in-cluster account).
    #[arg(long, env = "SPILLWAY_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use.
    #[arg(long, env = "SPILLWAY_KUBE_CONTEXT")]
    pub context: Option<String>,
}

/// How to reach a Prometheus for its history.
#[derive(clap::Args, Debug, Clone)]
pub struct HistoryArgs {
    /// Start of the window: RFC 3339 (2026-11-20T09:00:00Z), Unix seconds, or now-2h.
    #[arg(long)]
    pub start: Option<String>,
    /// End of the window (same forms as --start).
    #[arg(long)]
    pub end: Option<String>,
    /// Step of the range queries.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub step: std::time::Duration,
    /// Load query (requests per second); default: the policy's own first metric.
    #[arg(long)]
    pub query: Option<String>,
    /// Add up the series of the load query instead of refusing several.
    #[arg(long)]
    pub sum: bool,
    /// Longest hole in the data that is bridged (by interpolation, and reported); a longer one
    /// is an error.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub max_gap: std::time::Duration,
    /// Timeout of one range query.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub prometheus_timeout: std::time::Duration,
    #[command(flatten)]
    pub auth: PromAuthArgs,
}

pub fn parse_lookback(s: &str) -> Result<f64, String> {
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

/// A kubeconfig file and context, or (with neither) the in-cluster service account.
pub async fn kube_config(
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
pub async fn kube_clients(
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
pub fn name_replica(config: &mut kube::Config, identity: &str) -> anyhow::Result<()> {
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
pub async fn mesh_client(args: &KubeArgs, identity: &str) -> anyhow::Result<Option<kube::Client>> {
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

/// A client for read-only commands (snapshots, marks): bounded requests.
pub async fn kube_client(k: &ClusterArgs) -> anyhow::Result<kube::Client> {
    let config = kube_config(k.kubeconfig.as_deref(), k.context.as_deref()).await?;
    Ok(spillway::k8s::client(
        config,
        Some(std::time::Duration::from_secs(30)),
    )?)
}

pub fn history_prometheus(
    url: &str,
    h: &HistoryArgs,
) -> anyhow::Result<spillway::prom::Prometheus> {
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

pub fn read_options(h: &HistoryArgs) -> spillway::replay::recorded::ReadOptions {
    spillway::replay::recorded::ReadOptions {
        sum: h.sum,
        max_gap: h.max_gap.as_secs_f64(),
    }
}

/// The window and the load query (`--query`, else the policy's first metric's).
pub fn history_window(
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
pub fn chunk_progress(what: &'static str) -> impl FnMut(usize, usize) {
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
pub fn split_gateway(g: &str) -> (String, String) {
    match g.split_once('/') {
        Some((ns, name)) => (ns.into(), name.into()),
        None => ("istio-system".into(), g.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    pub fn durations_parse_as_operators_write_them() {
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
