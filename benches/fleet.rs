//! `cargo bench --bench fleet`: how many gateways one agent serves. A real kube-apiserver (the
//! test bed's, apiserver only) and a real Prometheus; the agent runs, and ElasticGateways are
//! created while it runs, each on a Deployment of its own with two pods (dry-run: the agent
//! decides and reports, and writes only status). Prints, for `SPILLWAY_FLEET_GATEWAYS` (2,000)
//! gateways at `SPILLWAY_FLEET_INTERVAL` (5 s): how soon each got its first status after its
//! creation, the decision age across every gateway over a minute (p50, p99, max, against the
//! target of two intervals), decisions per second, and the agent's resident memory.
#![allow(clippy::unwrap_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod, ServiceAccount};
use kube::api::{Api, ApiResource, DynamicObject, ListParams, PostParams};
use serde_json::{Value, json};
use spillway::sim::Scenario;
use support::prom::{LoadExporter, Prom, free_port};
use support::testbed::{Testbed, gateway_json, node_json};

/// The bench's folder.
struct DirPath(std::path::PathBuf);

impl DirPath {
    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_mib(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn main() {
    if cfg!(debug_assertions) {
        eprintln!("fleet bench skipped in a debug build: run `cargo bench --bench fleet`");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(bench());
}

fn egw_api(tb: &Testbed) -> Api<DynamicObject> {
    Api::namespaced_with(
        tb.client.clone(),
        "istio-system",
        &ApiResource {
            group: "spillway.io".into(),
            version: "v1alpha1".into(),
            api_version: "spillway.io/v1alpha1".into(),
            kind: "ElasticGateway".into(),
            plural: "elasticgateways".into(),
        },
    )
}

async fn bench() {
    let gateways = env("SPILLWAY_FLEET_GATEWAYS", 2000) as usize;
    let interval = env("SPILLWAY_FLEET_INTERVAL", 5);
    let tmp = tempfile::tempdir().unwrap();
    // SPILLWAY_FLEET_KEEP=DIR keeps the agent's log and the control plane's files there.
    let dir = match std::env::var("SPILLWAY_FLEET_KEEP") {
        Ok(keep) => {
            let _ = std::fs::remove_dir_all(&keep);
            std::fs::create_dir_all(&keep).unwrap();
            tempfile::TempDir::with_prefix_in("fleet", &keep)
                .unwrap()
                .keep()
        }
        Err(_) => tmp.path().to_path_buf(),
    };
    let dir = DirPath(dir);
    let load = LoadExporter::start(2000.0);
    let prom = Prom::start(dir.path(), &[load.port]);
    let tb = Testbed::start_apiserver_only(dir.path()).await;
    let scenario = Scenario::default();
    let made = Instant::now();
    let pods = setup(&tb, &scenario, gateways).await;
    eprintln!(
        "fleet: {} nodes, {gateways} gateway Deployments and {pods} pods created in {:.1} s",
        scenario.nodes().len(),
        made.elapsed().as_secs_f64()
    );
    let server = format!("https://127.0.0.1:{}", tb.api_port());
    let kubeconfig = tb.kubeconfig_for(
        &dir.path().join("kubeconfig-fleet"),
        &server,
        &tb.agent_token(),
    );
    let admin = free_port();
    let mut agent = Command::new(env!("CARGO_BIN_EXE_spillway"))
        .arg("run")
        .args(["--kubeconfig", kubeconfig.to_str().unwrap()])
        .args(["--prometheus-url", &prom.url()])
        .args([
            "--interval",
            &format!("{interval}s"),
            "--leader-election",
            "false",
        ])
        .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
        .env("SPILLWAY_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("agent.log")).unwrap())
        .spawn()
        .unwrap();
    let pid = agent.id();
    let http = reqwest::Client::new();
    let metrics_url = format!("http://127.0.0.1:{admin}/metrics");
    let t0 = Instant::now();
    while !http
        .get(format!("http://127.0.0.1:{admin}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the agent never became ready"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The gateways, created while the agent runs, 32 at a time.
    let api = egw_api(&tb);
    let created: HashMap<String, Instant> = futures::stream::iter((0..gateways).map(|i| {
        let api = api.clone();
        async move {
            let name = format!("gw-{i}");
            let egw: DynamicObject = serde_json::from_value(policy(&name)).unwrap();
            api.create(&PostParams::default(), &egw).await.unwrap();
            (name, Instant::now())
        }
    }))
    .buffer_unordered(32)
    .collect()
    .await;
    let all_created = Instant::now();
    // The first status of each.
    let mut first_status: HashMap<String, f64> = HashMap::new();
    while first_status.len() < gateways {
        let list = api.list(&ListParams::default()).await.unwrap();
        let now = Instant::now();
        for o in list.items {
            let name = o.metadata.name.clone().unwrap_or_default();
            if o.data["status"]["observedGeneration"].is_i64() && !first_status.contains_key(&name)
            {
                first_status.insert(
                    name.clone(),
                    now.duration_since(created[&name]).as_secs_f64(),
                );
            }
        }
        if all_created.elapsed() > Duration::from_secs(300) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        !first_status.is_empty(),
        "no gateway got a status; the agent's log: {}",
        dir.path().join("agent.log").display()
    );
    let mut firsts: Vec<f64> = first_status.values().copied().collect();
    firsts.sort_by(f64::total_cmp);
    let q = |v: &[f64], p: f64| v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1];
    eprintln!(
        "fleet: first status after creation: {} of {gateways} within {:.0} s; p50 {:.1} s, p99 {:.1} s, max {:.1} s",
        firsts.len(),
        all_created.elapsed().as_secs_f64(),
        q(&firsts, 0.5),
        q(&firsts, 0.99),
        firsts.last().copied().unwrap_or(f64::NAN)
    );

    // Decision ages, sampled over a minute; decisions per second over the same minute.
    let decisions = |text: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with("spillway_decisions_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let scrape = || async {
        http.get(&metrics_url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let (d0, s0) = (decisions(&scrape().await), Instant::now());
    let mut ages = vec![];
    let mut rss = 0.0f64;
    while s0.elapsed() < Duration::from_secs(60) {
        let text = scrape().await;
        ages.extend(
            text.lines()
                .filter(|l| l.starts_with("spillway_decision_age_seconds{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()),
        );
        rss = rss.max(rss_mib(pid));
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let rate = (decisions(&scrape().await) - d0) / s0.elapsed().as_secs_f64();
    ages.sort_by(f64::total_cmp);
    println!(
        "fleet/{gateways} gateways at {interval} s: first status p99 {:.1} s (max {:.1} s, target 60 s); decision age p50 {:.1} s, p99 {:.1} s, max {:.1} s (target p99 ≤ {} s); {rate:.0} decisions/s (needed {:.0}); RSS {rss:.0} MiB",
        q(&firsts, 0.99),
        firsts.last().copied().unwrap_or(f64::NAN),
        q(&ages, 0.5),
        q(&ages, 0.99),
        ages.last().copied().unwrap_or(f64::NAN),
        2 * interval,
        gateways as f64 / interval as f64,
    );
    let _ = agent.kill();
    let _ = agent.wait();
}

/// One ElasticGateway in dry-run on its own Deployment.
fn policy(name: &str) -> Value {
    json!({
        "apiVersion": "spillway.io/v1alpha1", "kind": "ElasticGateway",
        "metadata": {"name": name, "namespace": "istio-system"},
        "spec": {
            "target": {"kind": "Deployment", "name": name},
            "minReplicas": 2, "maxReplicas": 40, "dryRun": true,
            "metrics": [{"name": "rps", "query": "sum(spillway_test_gateway_requests_per_second)", "targetPerReplica": 500}]
        }
    })
}

/// The nodes, `deploy/`, and per gateway a Deployment with two pods bound to ECS nodes (there
/// is no controller-manager: the pods are made as its ReplicaSets would make them). Returns the
/// count of pods.
async fn setup(tb: &Testbed, s: &Scenario, gateways: usize) -> usize {
    tb.kubectl_ok(&["create", "namespace", "istio-system"], None);
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "default"}})).unwrap();
    let _ = Api::<ServiceAccount>::namespaced(tb.client.clone(), "istio-system")
        .create(&PostParams::default(), &sa)
        .await;
    tb.apply_deploy();
    // deploy/ names the one gateway spillway may read and change; a fleet names them all. One
    // rule for every Deployment of the namespace stands for that list here.
    let role = r#"{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "spillway-fleet", "namespace": "istio-system"},
        "rules": [{"apiGroups": ["apps"], "resources": ["deployments", "deployments/scale"], "verbs": ["get", "patch"]}]}"#;
    let binding = r#"{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "spillway-fleet", "namespace": "istio-system"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "spillway-fleet"},
        "subjects": [{"kind": "ServiceAccount", "name": "spillway", "namespace": "spillway-system"}]}"#;
    for o in [role, binding] {
        tb.kubectl_ok(&["apply", "-f", "-"], Some(o));
    }
    let nodes = s.nodes();
    let node_api: Api<Node> = Api::all(tb.client.clone());
    for n in &nodes {
        let obj: Node = serde_json::from_value(node_json(n)).unwrap();
        node_api.create(&PostParams::default(), &obj).await.unwrap();
    }
    let ecs: Vec<String> = nodes
        .iter()
        .filter(|n| n.labels.get("mykey4pod").map(String::as_str) == Some("asmgateway"))
        .map(|n| n.name.clone())
        .collect();
    let template = gateway_json(s, &spillway::sim::cluster::Latencies::default());
    let mut objects: Vec<Value> = vec![];
    for i in 0..gateways {
        let name = format!("gw-{i}");
        let mut d = template.clone();
        d["metadata"]["name"] = json!(name);
        d["metadata"]["labels"] = json!({"app": name});
        d["spec"]["replicas"] = json!(2);
        d["spec"]["selector"]["matchLabels"] = json!({"app": name});
        d["spec"]["template"]["metadata"]["labels"] = json!({"app": name});
        for j in 0..2 {
            let mut p = json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("{name}-{j}"), "labels": {"app": name}},
                "spec": d["spec"]["template"]["spec"].clone()
            });
            p["spec"]["nodeName"] = json!(ecs[(2 * i + j) % ecs.len()]);
            objects.push(p);
        }
        objects.push(d);
    }
    let count = objects.len() - gateways;
    futures::stream::iter(objects.into_iter().map(|o| {
        let client = tb.client.clone();
        async move {
            if o["kind"] == "Pod" {
                let obj: Pod = serde_json::from_value(o).unwrap();
                Api::<Pod>::namespaced(client, "istio-system")
                    .create(&PostParams::default(), &obj)
                    .await
                    .unwrap();
            } else {
                let obj: Deployment = serde_json::from_value(o).unwrap();
                Api::<Deployment>::namespaced(client, "istio-system")
                    .create(&PostParams::default(), &obj)
                    .await
                    .unwrap();
            }
        }
    }))
    .buffer_unordered(64)
    .collect::<Vec<_>>()
    .await;
    count
}
