//! prometheus-adapter (upstream's, built by `testbed/adapter/build.sh`) registered with the test
//! bed's apiserver through the aggregation layer, so that the real HPA controller in the real
//! kube-controller-manager reads the gateway's request rate from the test's real Prometheus as
//! an External metric.
//!
//! The wiring: an `APIService` `v1beta1.external.metrics.k8s.io` pointing at the Service
//! `kube-system/prometheus-adapter`. A cluster would give that Service a selector and let
//! kube-proxy or the aggregator's endpoint routing reach the pod; the test bed has no kube-proxy,
//! and EndpointSlices refuse loopback addresses, so the Service is an `ExternalName` for
//! `localhost`, which the aggregator's Service routing (the apiserver's default, without
//! `--enable-aggregator-routing`) resolves to `https://localhost:<APIService port>`. The
//! apiserver's front-proxy client certificate authenticates it to the adapter, which reads the
//! request-header CA from `kube-system/extension-apiserver-authentication` and delegates
//! authorisation to the apiserver (SubjectAccessReview), so the HPA controller's own
//! ServiceAccount (`system:controller:horizontal-pod-autoscaler`, bootstrap RBAC) is what is
//! authorised.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::prom::{Killed, free_port};
use super::testbed::Testbed;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The External metric the adapter serves: the rate of Istio's standard request counter,
/// reported by the gateway (`reporter="source"`), over the same window as spillway's query.
pub const METRIC: &str = "istio_requests_per_second";

/// The binary, or a panic that says how to build it (never built inside a test).
pub fn binary() -> PathBuf {
    super::testbed::prebuilt("testbed/adapter/build.sh", "prometheus-adapter")
}

/// The adapter's rule: `istio_requests_total` → `istio_requests_per_second`, not namespaced (the
/// HPA's metric selector names the workload), `rate` over `window_seconds` as spillway's query.
pub fn config(window_seconds: u64) -> String {
    format!(
        r#"externalRules:
- seriesQuery: 'istio_requests_total{{reporter="source"}}'
  resources:
    namespaced: false
  name:
    matches: "^istio_requests_total$"
    as: "{METRIC}"
  metricsQuery: 'sum(rate(<<.Series>>{{<<.LabelMatchers>>}}[{window_seconds}s]))'
"#
    )
}

/// A running adapter, registered with the apiserver; killed on drop.
pub struct Adapter {
    pub port: u16,
    pub log: PathBuf,
    _process: Killed,
}

impl Adapter {
    /// Starts the adapter against `prometheus`, registers it, and waits until the apiserver
    /// serves `external.metrics.k8s.io` through it.
    pub async fn start(tb: &Testbed, dir: &Path, prometheus: &str, window_seconds: u64) -> Self {
        Self::start_with_config(tb, dir, prometheus, &config(window_seconds)).await
    }

    /// [`Adapter::start`] with the caller's rules (custom `rules` are served as
    /// `custom.metrics.k8s.io`, `externalRules` as `external.metrics.k8s.io`).
    pub async fn start_with_config(
        tb: &Testbed,
        dir: &Path,
        prometheus: &str,
        rules: &str,
    ) -> Self {
        let bin = binary();
        let dir = dir.join("adapter");
        std::fs::create_dir_all(dir.join("certs")).unwrap();
        std::fs::write(dir.join("config.yaml"), rules).unwrap();
        let port = free_port();
        let kubeconfig = tb.kubeconfig();
        let log = dir.join("adapter.log");
        let child = Command::new(bin)
            .arg(format!("--secure-port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--cert-dir={}", dir.join("certs").display()))
            .arg(format!("--lister-kubeconfig={}", kubeconfig.display()))
            .arg(format!(
                "--authentication-kubeconfig={}",
                kubeconfig.display()
            ))
            .arg(format!(
                "--authorization-kubeconfig={}",
                kubeconfig.display()
            ))
            .arg(format!("--prometheus-url={prometheus}"))
            // New series (a fleet's first scrape) are picked up within this.
            .arg("--metrics-relist-interval=5s")
            .arg(format!("--config={}", dir.join("config.yaml").display()))
            .arg("--v=2")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("the adapter starts");
        let adapter = Self {
            port,
            log,
            _process: Killed(child),
        };
        tb.kubectl_ok(&["apply", "-f", "-"], Some(&registration(port)));
        adapter
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Waits until the apiserver answers an External-metric read for `selector` (label
    /// `key=value` pairs) through the adapter with a value; returns it.
    pub async fn wait_for_value(&self, tb: &Testbed, selector: &str, secs: u64) -> f64 {
        let path = format!(
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/istio-system/{METRIC}?labelSelector={}",
            super::prom::encode(selector)
        );
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let out = tb.kubectl(&["get", "--raw", &path], None);
            if out.status.success()
                && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout)
                && let Some(q) = v["items"][0]["value"].as_str()
            {
                return parse_quantity(q);
            }
            assert!(
                Instant::now() < deadline,
                "the apiserver did not serve {METRIC} through the adapter within {secs}s: {}\nadapter log:\n{}",
                String::from_utf8_lossy(&out.stderr).trim(),
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// An External metric's quantity as the adapter writes it ("1234", "1234500m", "1.2k").
pub fn parse_quantity(q: &str) -> f64 {
    let (num, mult) = match q.chars().last() {
        Some('m') => (&q[..q.len() - 1], 1e-3),
        Some('k') => (&q[..q.len() - 1], 1e3),
        Some('M') => (&q[..q.len() - 1], 1e6),
        _ => (q, 1.0),
    };
    num.parse::<f64>().map_or(f64::NAN, |n| n * mult)
}

/// The Service (an ExternalName for loopback) and the APIServices (external and custom).
fn registration(port: u16) -> String {
    let service = r#"apiVersion: v1
kind: Service
metadata: {name: prometheus-adapter, namespace: kube-system}
spec: {type: ExternalName, externalName: localhost}
"#;
    let api = |group: &str| {
        format!(
            r#"---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {{name: v1beta1.{group}}}
spec:
  group: {group}
  version: v1beta1
  service: {{name: prometheus-adapter, namespace: kube-system, port: {port}}}
  insecureSkipTLSVerify: true
  groupPriorityMinimum: 100
  versionPriority: 100
"#
        )
    };
    format!(
        "{service}{}{}",
        api("external.metrics.k8s.io"),
        api("custom.metrics.k8s.io")
    )
}
