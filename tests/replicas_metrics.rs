//! Metrics that add up with two replicas. A drill's decisions are recorded by two `Metrics`, a
//! leader's and a standby's (every replica decides), each served by spillway's admin server. One
//! real Prometheus scrapes both as the Prometheus Operator scrapes a ServiceMonitor's endpoints:
//! the target labels its relabelling gives them (`namespace`, `service`, `pod`, `container`,
//! `endpoint`, `job`) and `honor_labels` as `deploy/monitoring/servicemonitor.yaml` sets it.
//! Another scrapes the leader alone with a plain static config: the truth. Every dashboard query
//! must give the same values from both, and the template variable must find the gateway's
//! namespace.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use spillway::metrics::{ErrorKind, Metrics};
use spillway::model::GatewayKey;
use spillway::sim::drill::{Observer, Point};
use spillway::sim::{PolicyKind, Scenario};
use support::prom::{Prom, encode, http_get};

mod support;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

const SCENARIO: &str = r#"
name: two replicas
durationSeconds: 240
load:
  components:
  - {kind: Constant, rps: 2000}
  - {kind: Spike, atSeconds: 20, riseSeconds: 10, holdSeconds: 60, fallSeconds: 10, rps: 18000}
latencies: {ecsStartSeconds: 2, eciStartSeconds: 10, jitter: 0.1, terminationSeconds: 5}
policy:
  target: {kind: IstioGateway, name: ingressgateway}
  maxReplicas: 40
  eci: {maxReplicas: 20}
"#;

/// Records every decision of the `spillway` policy on both replicas' metrics.
struct Both {
    replicas: Vec<Arc<Metrics>>,
    gw: GatewayKey,
    policy: spillway::policy::ElasticGatewaySpec,
}

impl Observer for Both {
    fn step(&mut self, _policy: PolicyKind, _t: u64, _point: &Point) {}

    fn decision(
        &mut self,
        policy: PolicyKind,
        _gateway: &str,
        obs: &spillway::engine::Observation<'_>,
        d: &spillway::engine::Decision,
        plan: &spillway::act::Plan,
        seconds: f64,
    ) {
        if policy == PolicyKind::Spillway {
            for m in &self.replicas {
                m.record_decision(&self.gw, &self.policy, obs.pods, obs.fast, d, plan, seconds);
            }
        }
    }
}

fn honor_labels_of_the_service_monitor() -> bool {
    let sm: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(format!("{ROOT}/deploy/monitoring/servicemonitor.yaml")).unwrap(),
    )
    .unwrap();
    sm["spec"]["endpoints"][0]["honorLabels"]
        .as_bool()
        .unwrap_or(false)
}

fn write_config(dir: &Path, body: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nrule_files: ['{ROOT}/deploy/prometheus/spillway-rules.yaml']\nscrape_configs:\n{body}"
        ),
    )
    .unwrap();
}

fn instant(port: u16, q: &str) -> Result<Vec<Value>, String> {
    let (status, body) = http_get(port, &format!("/api/v1/query?query={}", encode(q)));
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    if status != 200 || v["status"] != "success" {
        return Err(body);
    }
    Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
}

/// A query result as `labels → values`, without the labels a scrape target adds.
fn normalized(result: &[Value]) -> BTreeMap<String, Vec<f64>> {
    let mut out: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for s in result {
        let mut labels: BTreeMap<String, String> = s["metric"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        for target_label in ["instance", "job", "pod", "service", "container", "endpoint"] {
            labels.remove(target_label);
        }
        let v: f64 = s["value"][1].as_str().unwrap().parse().unwrap();
        out.entry(format!("{labels:?}")).or_default().push(v);
    }
    out
}

fn close(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || (a - b).abs() <= 0.2 * a.abs().max(b.abs()) + 1e-9
}

fn dashboard_queries() -> Vec<String> {
    let d: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{ROOT}/dashboards/spillway.json")).unwrap(),
    )
    .unwrap();
    let mut qs: Vec<String> = d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect();
    qs.extend(
        d["annotations"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["expr"].as_str().unwrap().to_string()),
    );
    qs.into_iter()
        .map(|q| {
            q.replace("$namespace", "istio-system")
                .replace("$gateway", "ingressgateway")
                .replace("$__rate_interval", "10s")
        })
        .collect()
}

#[test]
fn two_replicas_scraped_as_the_service_monitor_does_add_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scenario.yaml");
    std::fs::write(&path, SCENARIO).unwrap();
    let mut scenario = Scenario::load(&path).unwrap();
    scenario.policies = vec![PolicyKind::Spillway];
    let leader = Arc::new(Metrics::new());
    leader.set_leader(true);
    let standby = Arc::new(Metrics::new());
    let gw = GatewayKey::new("istio-system", "ingressgateway");
    let mut both = Both {
        replicas: vec![leader.clone(), standby.clone()],
        gw: gw.clone(),
        policy: scenario.policy.clone(),
    };
    spillway::sim::run(&scenario, &mut both);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let mut ports = vec![];
    for m in [&leader, &standby] {
        let admin = spillway::server::Admin::new(m.clone());
        admin.set_ready(true);
        let (bound, serve) = rt
            .block_on(spillway::server::bind(
                "127.0.0.1:0".parse().unwrap(),
                admin,
                stopped.clone(),
            ))
            .unwrap();
        rt.spawn(serve);
        ports.push(bound.port());
    }
    // The standby exports its process metrics only.
    let (_, text) = http_get(ports[1], "/metrics");
    assert!(text.contains("spillway_leader 0"), "{text}");
    assert!(!text.contains("istio-system"), "{text}");
    // A counter that keeps moving on both, as errors would.
    let moving = Arc::new(AtomicBool::new(true));
    let ticker = {
        let (moving, replicas, gw) = (moving.clone(), [leader.clone(), standby.clone()], gw);
        std::thread::spawn(move || {
            while moving.load(Ordering::Relaxed) {
                for m in &replicas {
                    m.error(&gw, ErrorKind::PrometheusQuery);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    let honor = honor_labels_of_the_service_monitor();
    let target = |port: u16, pod: &str| {
        format!(
            "  - targets: ['127.0.0.1:{port}']\n    labels: {{namespace: spillway-system, service: spillway, pod: {pod}, container: spillway, endpoint: metrics}}\n"
        )
    };
    write_config(
        &dir.path().join("operator"),
        &format!(
            "- job_name: serviceMonitor/spillway-system/spillway/0\n  honor_labels: {honor}\n  metrics_path: /metrics\n  static_configs:\n{}{}  relabel_configs:\n  - {{target_label: job, replacement: spillway}}\n",
            target(ports[0], "spillway-7d9f-a"),
            target(ports[1], "spillway-7d9f-b"),
        ),
    );
    write_config(
        &dir.path().join("truth"),
        &format!(
            "- job_name: spillway\n  static_configs: [{{targets: ['127.0.0.1:{}']}}]\n",
            ports[0]
        ),
    );
    let operator = Prom::start_configured(&dir.path().join("operator"));
    let truth = Prom::start_configured(&dir.path().join("truth"));

    // Until both have scraped every target for a rate window.
    let deadline = Instant::now() + Duration::from_secs(90);
    for (p, targets) in [(&operator, 2.0), (&truth, 1.0)] {
        loop {
            let ready = instant(p.port, "count(count_over_time(up[10s]) >= 8)")
                .ok()
                .and_then(|r| {
                    r.first()
                        .map(|s| s["value"][1].as_str().unwrap().to_string())
                })
                .and_then(|v| v.parse::<f64>().ok())
                == Some(targets);
            if ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus did not scrape the replicas"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    // The template variable finds the gateway's namespace, not spillway's.
    let (_, ns) = http_get(
        operator.port,
        &format!(
            "/api/v1/label/namespace/values?match[]={}",
            encode("spillway_replicas_desired")
        ),
    );
    let ns: Value = serde_json::from_str(&ns).unwrap();
    assert_eq!(
        ns["data"],
        serde_json::json!(["istio-system"]),
        "honorLabels is off: spillway's namespace label became exported_namespace"
    );

    let mut wrong = vec![];
    let mut with_data = 0;
    for q in dashboard_queries() {
        let ours = instant(operator.port, &q);
        let truth_says = instant(truth.port, &q).unwrap_or_else(|e| panic!("{q}: {e}"));
        let ours = match ours {
            Ok(r) => r,
            Err(e) => {
                wrong.push(format!("{q}: fails with two replicas: {e}"));
                continue;
            }
        };
        let (a, b) = (normalized(&ours), normalized(&truth_says));
        with_data += usize::from(!b.is_empty());
        let same = a.len() == b.len()
            && a.iter().all(|(k, va)| {
                b.get(k).is_some_and(|vb| {
                    va.len() == vb.len() && va.iter().zip(vb).all(|(x, y)| close(*x, *y))
                })
            });
        if !same {
            wrong.push(format!(
                "{q}:\n    two replicas: {a:?}\n    truth:        {b:?}"
            ));
        }
    }
    moving.store(false, Ordering::Relaxed);
    ticker.join().unwrap();
    assert!(
        wrong.is_empty(),
        "dashboard queries that do not add up:\n{}",
        wrong.join("\n")
    );
    assert!(with_data >= 20, "only {with_data} queries had data");

    // Every rule evaluates cleanly on the two replicas' series (no many-to-many matches).
    let (_, rules) = http_get(operator.port, "/api/v1/rules");
    let rules: Value = serde_json::from_str(&rules).unwrap();
    for g in rules["data"]["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            assert_eq!(
                r["health"], "ok",
                "rule {} fails with two replicas: {}",
                r["name"], r["lastError"]
            );
        }
    }
}
