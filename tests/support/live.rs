//! What the live tests share: a working folder, the real `spillway run` binary behind its own
//! fault proxy, and reads of what the apiserver holds (status, Events, the Lease).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use serde_json::{Value, json};
use spillway::sim::Scenario;
use spillway::sim::cluster::Latencies;

use super::faultproxy::{FaultProxy, State};
use super::prom::{Killed, free_port, try_http_get};
use super::testbed::Testbed;

/// Pod start and stop latencies of the live tests: quick, without jitter.
pub fn latencies() -> Latencies {
    Latencies {
        ecs_start_seconds: 1.0,
        eci_start_seconds: 3.0,
        jitter: 0.0,
        termination_seconds: 1.0,
    }
}

/// The live tests' ElasticGateway: 500 rps per replica, 2 to 30 replicas, no lead time, fast
/// rate limits and a 4 s scale-down window.
pub fn policy() -> Value {
    json!({
        "apiVersion": "spillway.io/v1alpha1", "kind": "ElasticGateway",
        "metadata": {"name": "ingressgateway", "namespace": "istio-system"},
        "spec": {
            "target": {"kind": "Deployment", "name": "istio-ingressgateway"},
            "minReplicas": 2, "maxReplicas": 30,
            "metrics": [{"name": "rps", "query": "sum(spillway_test_gateway_requests_per_second)", "targetPerReplica": 500}],
            "behavior": {
                "leadTime": {"seconds": 0},
                "scaleUp": {"policies": [{"type": "Pods", "value": 30, "periodSeconds": 1}]},
                "scaleDown": {"stabilizationWindowSeconds": 4, "policies": [{"type": "Pods", "value": 30, "periodSeconds": 1}]}
            }
        }
    })
}

/// A control plane with the scenario's cluster, `deploy/` applied, the gateway and `egw`.
pub async fn bed(dir: &Path, egw: Value) -> Testbed {
    let scenario = Scenario::default();
    let tb = Testbed::start(dir, &scenario, &latencies()).await;
    tb.seed(&scenario, &latencies(), Some(egw)).await;
    tb
}

/// Sends `signal` (`TERM`, `STOP`, `CONT`) to the agent's process.
pub fn signal(a: &Agent, signal: &str) {
    let sent = Command::new("kill")
        .args([format!("-{signal}"), a.process.0.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill -{signal} {}", a.who);
}

/// SIGTERM, as the kubelet stops a pod; returns the exit status.
pub fn terminate(a: &mut Agent) -> std::process::ExitStatus {
    signal(a, "TERM");
    a.process.0.wait().unwrap()
}

/// The sum of a metric's series as this agent exports it now (0 when absent or unreachable).
pub fn metric_sum(a: &Agent, name: &str) -> f64 {
    let Some((_, text)) = try_http_get(a.admin, "/metrics") else {
        return 0.0;
    };
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A temporary folder; kept at $SPILLWAY_TEST_KEEP/<name> when that is set, to read the logs.
pub struct Workdir {
    _tmp: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl Workdir {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

pub fn workdir(name: &str) -> Workdir {
    if let Ok(keep) = std::env::var("SPILLWAY_TEST_KEEP") {
        let path = Path::new(&keep).join(name);
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        return Workdir { _tmp: None, path };
    }
    let tmp = tempfile::tempdir().unwrap();
    Workdir {
        path: tmp.path().to_path_buf(),
        _tmp: Some(tmp),
    }
}

/// Polls `ok` every 200 ms until it holds; fails the test after `secs` (a bound, not a sleep).
pub async fn wait_for<F, Fut>(what: &str, secs: u64, ok: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    assert!(
        try_wait_for(secs, ok).await,
        "timed out after {secs}s waiting for: {what}"
    );
}

/// As [`wait_for`], returning whether `ok` came true in time, for a caller that says more on
/// failure.
pub async fn try_wait_for<F, Fut>(secs: u64, mut ok: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok().await {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    true
}

/// One `spillway run` process, talking to the apiserver through its own fault proxy.
pub struct Agent {
    pub who: String,
    pub admin: u16,
    /// The probe listener's port (`--probe-addr`), as the kubelet reaches it.
    pub probes: u16,
    pub proxy: FaultProxy,
    pub process: Killed,
    pub log: PathBuf,
}

impl Agent {
    /// The last `n` lines of the agent's log, for a failure message.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Every request this agent sent that changed something (the Lease's create and renewals
    /// aside).
    pub fn writes(&self) -> Vec<super::faultproxy::Logged> {
        self.proxy.with(|st| {
            st.writes()
                .into_iter()
                .filter(|l| !l.is_lease())
                .cloned()
                .collect()
        })
    }

    /// `spillway_decisions_total` summed over its series, as this agent exports it (0 while its
    /// admin server does not answer).
    pub fn decisions(&self) -> f64 {
        metric_sum(self, "spillway_decisions_total")
    }

    /// Sends SIGTERM, as the kubelet stops a pod, without waiting.
    pub fn sigterm(&self) {
        signal(self, "TERM");
    }

    /// Waits up to `bound` for the process to exit; its status and how long it took, or `None`
    /// if it is still running.
    pub async fn exit_within(
        &mut self,
        bound: Duration,
    ) -> Option<(std::process::ExitStatus, Duration)> {
        let started = Instant::now();
        while started.elapsed() < bound {
            if let Some(status) = self.process.0.try_wait().unwrap() {
                return Some((status, started.elapsed()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }
}

/// Starts `spillway run` as `deploy/`'s ServiceAccount (a real token), through a fault proxy.
pub async fn agent(
    tb: &Testbed,
    dir: &Path,
    prom: &str,
    who: &str,
    leader_election: bool,
    extra: &[&str],
) -> Agent {
    agent_with(tb, dir, prom, who, leader_election, extra, |_| {}).await
}

/// As [`agent`], with the proxy's faults set by `faults` before the process starts, so that
/// its very first request meets them.
pub async fn agent_with(
    tb: &Testbed,
    dir: &Path,
    prom: &str,
    who: &str,
    leader_election: bool,
    extra: &[&str],
    faults: impl FnOnce(&mut State),
) -> Agent {
    let upstream = format!("https://127.0.0.1:{}", tb.api_port());
    let proxy = FaultProxy::start(upstream, &std::fs::read(tb.ca_file()).unwrap()).await;
    proxy.with(faults);
    let kubeconfig = tb.kubeconfig_for(
        &dir.join(format!("kubeconfig-{who}")),
        &proxy.url(),
        &tb.agent_token(),
    );
    // `extra` may set the admin address or the lease duration; otherwise these defaults hold.
    let given = |flag: &str| extra.iter().position(|a| *a == flag).map(|i| extra[i + 1]);
    let admin = given("--admin-addr")
        .and_then(|a| a.rsplit(':').next()?.parse().ok())
        .unwrap_or_else(free_port);
    let mut args: Vec<String> = vec![];
    if given("--admin-addr").is_none() {
        args.extend(["--admin-addr".into(), format!("127.0.0.1:{admin}")]);
    }
    let probes = free_port();
    args.extend(["--probe-addr".into(), format!("127.0.0.1:{probes}")]);
    // A write goes out only with --api-timeout left on the Lease, renewed every retry period.
    for (flag, value) in [
        ("--lease-duration", "4s"),
        ("--lease-retry-period", "1s"),
        ("--api-timeout", "2s"),
    ] {
        if given(flag).is_none() {
            args.extend([flag.into(), value.into()]);
        }
    }
    let log = dir.join(format!("{who}.log"));
    let child = Command::new(env!("CARGO_BIN_EXE_spillway"))
        .arg("run")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--prometheus-url", prom, "--prometheus-timeout", "1s"])
        .args(["--interval", "1s"])
        .args([
            "--leader-election",
            if leader_election { "true" } else { "false" },
        ])
        .args(["--lease-namespace", "spillway-system"])
        .args(["--identity", who])
        .args(&args)
        .args(extra)
        .env("SPILLWAY_LOG", "info,spillway=debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    Agent {
        who: who.into(),
        admin,
        probes,
        proxy,
        process: Killed(child),
        log,
    }
}

pub fn egw_resource() -> ApiResource {
    ApiResource {
        group: "spillway.io".into(),
        version: "v1alpha1".into(),
        api_version: "spillway.io/v1alpha1".into(),
        kind: "ElasticGateway".into(),
        plural: "elasticgateways".into(),
    }
}

/// The ElasticGateway `istio-system/ingressgateway` as the apiserver holds it.
pub async fn egw(tb: &Testbed) -> Value {
    let api: Api<DynamicObject> =
        Api::namespaced_with(tb.client.clone(), "istio-system", &egw_resource());
    serde_json::to_value(api.get("ingressgateway").await.unwrap()).unwrap()
}

pub async fn status(tb: &Testbed) -> Value {
    egw(tb).await["status"].clone()
}

/// [`status`], or `None` when the read fails (for a sampler that reads again later).
pub async fn try_status(tb: &Testbed) -> Option<Value> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(tb.client.clone(), "istio-system", &egw_resource());
    let o = api.get("ingressgateway").await.ok()?;
    Some(serde_json::to_value(o).ok()?["status"].clone())
}

pub async fn condition(tb: &Testbed, kind: &str) -> Option<Value> {
    status(tb).await["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind).cloned())
}

/// Reasons of the Events in istio-system (events.k8s.io/v1, as the agent writes them).
pub async fn event_reasons(tb: &Testbed) -> Vec<String> {
    let api: Api<Event> = Api::namespaced(tb.client.clone(), "istio-system");
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect()
}

pub async fn lease_holder(tb: &Testbed) -> Option<String> {
    let api: Api<Lease> = Api::namespaced(tb.client.clone(), "spillway-system");
    api.get_opt("spillway")
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec.and_then(|s| s.holder_identity))
}

/// A spawned task that ends with its owner, also when a failed assertion unwinds past it (a
/// task left running then would outlive the test bed it reads).
pub struct AbortOnDrop<T>(pub tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The preferred node-affinity weights of the template, in order (ECS, ECI).
pub fn weights_of(d: &k8s_openapi::api::apps::v1::Deployment) -> Vec<i32> {
    d.spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .map(|t| t.iter().map(|t| t.weight).collect())
        .unwrap_or_default()
}
