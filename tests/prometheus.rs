//! spillway's metrics, dashboard and rules against a real Prometheus (Debian's `prometheus`
//! package; `.ci/run` installs it). A drill serves the metrics at 8x speed; Prometheus scrapes it
//! every second and evaluates the rules; then every query of the dashboard and of the rules is
//! run against it.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use promql_parser::parser::{self, Expr};
use serde_json::Value;
use support::prom::{Killed, encode, free_port, http_get};

mod support;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn require(bin: &str) {
    let found = Command::new(bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        found,
        "`{bin}` is not installed: `apt-get install prometheus` (as .ci/run does)"
    );
}

/// A minimal HTTP/1.0 GET (the test needs no HTTP client beyond this).
struct Prom {
    port: u16,
    start: f64,
    end: f64,
}

impl Prom {
    fn api(&self, path: &str) -> Value {
        let (status, body) = http_get(self.port, path);
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        assert_eq!(status, 200, "{path}: {body}");
        v
    }

    /// A range query over the drill, as Grafana runs a panel; returns the series.
    fn range(&self, q: &str) -> Vec<Value> {
        let path = format!(
            "/api/v1/query_range?query={}&start={}&end={}&step=1",
            encode(q),
            self.start,
            self.end
        );
        let (status, body) = http_get(self.port, &path);
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        assert_eq!(
            (status, v["status"].as_str()),
            (200, Some("success")),
            "query {q:?} failed: {body}"
        );
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// True when some series of the range result has a finite value.
    fn has_data(&self, q: &str) -> bool {
        self.range(q).iter().any(|s| {
            s["values"].as_array().is_some_and(|vals| {
                vals.iter().any(|p| {
                    p[1].as_str()
                        .and_then(|x| x.parse::<f64>().ok())
                        .is_some_and(f64::is_finite)
                })
            })
        })
    }
}

/// Grafana's variables, as the dashboard would fill them for the drill's gateway.
fn fill(q: &str) -> String {
    q.replace("$namespace", "istio-system")
        .replace("$gateway", "ingressgateway")
        .replace("$__rate_interval", "10s")
}

fn selectors(e: &Expr, out: &mut Vec<String>) {
    match e {
        Expr::Aggregate(a) => {
            selectors(&a.expr, out);
            if let Some(p) = &a.param {
                selectors(p, out);
            }
        }
        Expr::Unary(u) => selectors(&u.expr, out),
        Expr::Binary(b) => {
            selectors(&b.lhs, out);
            selectors(&b.rhs, out);
        }
        Expr::Paren(p) => selectors(&p.expr, out),
        Expr::Subquery(s) => selectors(&s.expr, out),
        Expr::VectorSelector(vs) => out.push(vs.to_string()),
        Expr::MatrixSelector(m) => out.push(m.vs.to_string()),
        Expr::Call(c) => c.args.args.iter().for_each(|a| selectors(a, out)),
        _ => {}
    }
}

fn dashboard() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(format!("{ROOT}/dashboards/spillway.json")).unwrap(),
    )
    .unwrap()
}

fn dashboard_queries(d: &Value) -> Vec<String> {
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
    qs
}

fn rules_file() -> PathBuf {
    Path::new(ROOT).join("deploy/prometheus/spillway-rules.yaml")
}

fn rules() -> Vec<Value> {
    let v: Value = serde_saphyr::from_str(&std::fs::read_to_string(rules_file()).unwrap()).unwrap();
    v["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap())
        .collect()
}

/// A drill built to exercise every signal: a peak that hits the ECI cap, then a plateau that
/// keeps ECS full (but fits the cap, so the opt-in yield mode may shift the fleet onto ECI and
/// the weight signals have data), and a drain.
const SCENARIO: &str = r#"
name: monitoring test
durationSeconds: 280
load:
  components:
  - {kind: Constant, rps: 2000}
  - {kind: Spike, atSeconds: 20, riseSeconds: 10, holdSeconds: 40, fallSeconds: 10, rps: 18000}
  - {kind: Spike, atSeconds: 20, riseSeconds: 10, holdSeconds: 150, fallSeconds: 20, rps: 6000}
latencies: {ecsStartSeconds: 2, eciStartSeconds: 10, jitter: 0.1, terminationSeconds: 5}
policy:
  target: {kind: IstioGateway, name: ingressgateway}
  maxReplicas: 40
  eci: {maxReplicas: 20}
  placement:
    exhaustedWeights: {ecs: 20, eci: 80}
    exhaustedAfterSeconds: 30
    recoveredAfterSeconds: 20
    minWeightChangeIntervalSeconds: 60
  behavior:
    scaleDown: {stabilizationWindowSeconds: 30}
"#;

#[test]
fn dashboard_and_rules_work_against_a_real_prometheus() {
    require("prometheus");
    require("promtool");
    let dir = tempfile::tempdir().unwrap();
    let (prom_port, metrics_port) = (free_port(), free_port());
    let scenario = dir.path().join("scenario.yaml");
    std::fs::write(&scenario, SCENARIO).unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nrule_files: [{rules}]\nscrape_configs:\n- job_name: spillway\n  static_configs: [{{targets: ['127.0.0.1:{metrics_port}']}}]\n",
            rules = rules_file().display()
        ),
    )
    .unwrap();
    let _prom = Killed(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", prom_port)).is_err() {
        assert!(Instant::now() < deadline, "prometheus did not start");
        std::thread::sleep(Duration::from_millis(200));
    }
    let start = now();
    let mut drill = Killed(
        Command::new(env!("CARGO_BIN_EXE_spillway"))
            .args([
                "drill",
                scenario.to_str().unwrap(),
                "--policies",
                "spillway",
                "--speed",
                "8",
                "--linger",
                "6",
            ])
            .args(["--serve-metrics", &format!("127.0.0.1:{metrics_port}")])
            .args(["--out", dir.path().join("out").to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // The endpoint, checked by promtool's naming lint while the drill runs.
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", metrics_port)).is_err() {
        assert!(Instant::now() < deadline, "the drill did not serve metrics");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(3));
    let (status, exposition) = http_get(metrics_port, "/metrics");
    assert_eq!(status, 200);
    assert_eq!(http_get(metrics_port, "/readyz").0, 200);
    assert_eq!(http_get(metrics_port, "/healthz").0, 200);
    let mut lint = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    lint.stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let lint = lint.wait_with_output().unwrap();
    assert!(
        lint.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
    let status = drill.0.wait().unwrap();
    assert!(status.success(), "the drill failed");
    let prom = Prom {
        port: prom_port,
        start,
        end: now(),
    };

    // The rules file loads and every rule evaluates cleanly.
    let loaded = prom.api("/api/v1/rules");
    let loaded: Vec<&Value> = loaded["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    assert_eq!(loaded.len(), rules().len());
    for r in &loaded {
        assert_eq!(
            r["health"], "ok",
            "rule {} is unhealthy: {}",
            r["name"], r["lastError"]
        );
    }

    // Every dashboard query returns data for the drill's gateway.
    let d = dashboard();
    let queries = dashboard_queries(&d);
    assert!(queries.len() >= 20, "{}", queries.len());
    let empty: Vec<&String> = queries
        .iter()
        .filter(|q| !prom.has_data(&fill(q)))
        .collect();
    assert!(
        empty.is_empty(),
        "dashboard queries without data: {empty:#?}"
    );
    // The template variables find the gateway.
    let ns = prom.api(&format!(
        "/api/v1/label/namespace/values?match[]={}",
        encode("spillway_replicas_desired")
    ));
    assert_eq!(ns["data"], serde_json::json!(["istio-system"]));

    // Recording rules produce series; every selector an alert uses matches series (an alert
    // over a misspelled metric would never fire), and the scenario's alerts went off.
    for r in rules() {
        let expr = r["expr"].as_str().unwrap();
        if let Some(record) = r["record"].as_str() {
            assert!(
                prom.has_data(record),
                "recording rule {record} produced nothing"
            );
            continue;
        }
        let ast = parser::parse(expr).unwrap();
        let mut sels = vec![];
        selectors(&ast, &mut sels);
        assert!(!sels.is_empty());
        for s in sels {
            // spillway_held has series only while a gateway is held, which the drill's never
            // is: check that spillway exports the family (a misspelling would fail here).
            if s.starts_with("spillway_held") {
                let m = spillway::metrics::Metrics::new();
                m.set_leader(true);
                let gw = spillway::model::GatewayKey::new("istio-system", "gw");
                m.set_held(&gw, Some("CachesNotSynced"));
                assert!(
                    m.prometheus_text().contains("spillway_held{"),
                    "alert {} reads {s}, which spillway does not export",
                    r["alert"]
                );
                continue;
            }
            // Likewise spillway_planned_event_at_risk: the drill's gateway plans no event.
            if s.starts_with("spillway_planned_event_at_risk") {
                let m = spillway::metrics::Metrics::new();
                m.set_leader(true);
                let gw = spillway::model::GatewayKey::new("istio-system", "gw");
                let plan = spillway::engine::planned::Plan {
                    event: "sale".into(),
                    replicas: 40,
                    ecs: 10,
                    eci: 30,
                    ..Default::default()
                };
                m.record_events(&gw, &[plan]);
                assert!(
                    m.prometheus_text()
                        .contains(r#"spillway_planned_event_at_risk{namespace="istio-system",name="gw",event="sale"} 0"#),
                    "alert {} reads {s}, which spillway does not export",
                    r["alert"]
                );
                continue;
            }
            assert!(
                prom.has_data(&format!("group({s})")),
                "alert {} reads {s}, which matches no series",
                r["alert"]
            );
        }
        prom.range(expr);
    }
    for alert in ["SpillwayEciCapReached", "SpillwayEcsExhausted"] {
        assert!(
            prom.has_data(&format!(r#"ALERTS{{alertname="{alert}"}}"#)),
            "{alert} never went off in a drill built to trigger it"
        );
    }
    // The drill's story as Prometheus saw it: overflow onto ECI, a weight shift, ECI drained.
    assert!(prom.has_data(r#"max_over_time(spillway:eci_pods[10m]) > 0"#));
    assert!(prom.has_data(r#"spillway_actions_total{kind="weights"} > 0"#));
    assert!(prom.has_data(r#"spillway_cost_total{pool="eci"} > 0"#));
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn promtool_accepts_the_rules() {
    require("promtool");
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(rules_file())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Every alert has a `promtool test rules` case where it fires and one where it stays quiet
/// (deploy/prometheus/spillway-rules.test.yaml), and promtool, evaluating the real rules, passes
/// them all: the spillway-down alert fires with no series at all.
#[test]
fn every_alert_fires_when_it_matters_and_only_then() {
    require("promtool");
    let rules: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(rules_file()).unwrap()).unwrap();
    let test_file = format!("{ROOT}/deploy/prometheus/spillway-rules.test.yaml");
    let cases: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(&test_file).unwrap()).unwrap();
    let checks: Vec<&Value> = cases["tests"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().into_iter().flatten())
        .collect();
    for group in rules["groups"].as_array().unwrap() {
        for alert in group["rules"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["alert"].as_str())
        {
            let of = |firing: bool| {
                checks.iter().any(|c| {
                    c["alertname"] == alert
                        && c["exp_alerts"]
                            .as_array()
                            .is_some_and(|a| a.is_empty() != firing)
                })
            };
            assert!(of(true), "{alert}: no case where it fires");
            assert!(of(false), "{alert}: no case where it stays quiet");
        }
    }
    let out = Command::new("promtool")
        .args(["test", "rules"])
        .arg(&test_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn prometheusrule_manifest_carries_the_same_rules() {
    let plain: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(rules_file()).unwrap()).unwrap();
    let crd: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(format!("{ROOT}/deploy/monitoring/prometheusrule.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(crd["kind"], "PrometheusRule");
    assert_eq!(crd["spec"]["groups"], plain["groups"]);
}

#[test]
fn dashboard_has_the_structure_grafana_needs() {
    let d = dashboard();
    let vars = d["templating"]["list"].as_array().unwrap();
    assert!(vars.iter().any(|v| v["type"] == "datasource"
        && v["query"] == "prometheus"
        && v["name"] == "datasource"));
    for name in ["namespace", "gateway"] {
        assert!(
            vars.iter()
                .any(|v| v["name"] == name && v["type"] == "query"),
            "no ${name} variable"
        );
    }
    let panels = d["panels"].as_array().unwrap();
    let mut ids = std::collections::HashSet::new();
    let mut cells = std::collections::HashSet::new();
    for p in panels {
        assert!(
            ids.insert(p["id"].as_i64().unwrap()),
            "duplicate panel id {}",
            p["id"]
        );
        assert_eq!(
            p["datasource"]["uid"], "${datasource}",
            "panel {} does not use the datasource variable",
            p["title"]
        );
        // Grafana shows the description as the panel's (i) and the unit on its axis and values:
        // without them a person reads bare numbers.
        assert!(
            p["description"].as_str().is_some_and(|d| d.len() >= 40),
            "panel {} has no description saying what it shows",
            p["title"]
        );
        assert!(
            p["fieldConfig"]["defaults"]["unit"]
                .as_str()
                .is_some_and(|u| !u.is_empty()),
            "panel {} has no unit",
            p["title"]
        );
        let g = &p["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_i64().unwrap(),
            g["y"].as_i64().unwrap(),
            g["w"].as_i64().unwrap(),
            g["h"].as_i64().unwrap(),
        );
        assert!(
            w > 0 && h > 0 && x >= 0 && y >= 0 && x + w <= 24,
            "panel {} has a bad gridPos {g}",
            p["title"]
        );
        for cx in x..x + w {
            for cy in y..y + h {
                assert!(
                    cells.insert((cx, cy)),
                    "panel {} overlaps another at {cx},{cy}",
                    p["title"]
                );
            }
        }
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty());
        let mut refs = std::collections::HashSet::new();
        for t in targets {
            assert!(refs.insert(t["refId"].as_str().unwrap().to_string()));
            parser::parse(&fill(t["expr"].as_str().unwrap()))
                .unwrap_or_else(|e| panic!("{}: {e}", p["title"]));
        }
    }
    for title in [
        "Gateway pods: ECS vs ECI (stacked)",
        "Replicas: desired, current, max",
        "Load vs target",
        "ECS headroom",
        "Accumulated cost",
    ] {
        assert!(
            panels.iter().any(|p| p["title"] == title),
            "no panel {title:?}"
        );
    }
}
