//! `cargo bench --bench live`: the live agent against a real kube-apiserver (the test bed's,
//! apiserver only) holding 5,000 nodes and 100,000 pods, with a real Prometheus. Prints the time
//! to bulk-create them, the agent's time to sync and resident memory once synced (target: under
//! 100 MiB), and the reaction time from a load change visible in Prometheus to the scale patch
//! answered by the apiserver (its audit log).
#![allow(clippy::unwrap_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod, ServiceAccount};
use kube::api::{Api, DynamicObject, PostParams};
use serde_json::{Value, json};
use spillway::sim::Scenario;
use support::prom::{LoadExporter, Prom, free_port};
use support::testbed::{Testbed, gateway_json, node_json, other_pods};

fn rss_kib(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn main() {
    // `cargo test --all-targets` runs this binary too, unoptimised: the figures belong to
    // `cargo bench --bench live` (optimised, as deployed).
    if cfg!(debug_assertions) {
        eprintln!("live bench skipped in a debug build: run `cargo bench --bench live`");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(bench());
}

async fn bench() {
    let mut s = Scenario::default();
    s.cluster.ecs.count = 200;
    s.cluster.workers = 4795;
    s.cluster.virtual_nodes = 5;
    s.cluster.ecs.other_pods = 20;
    s.gateway.replicas = 100;
    let dir = tempfile::tempdir().unwrap();
    let load = LoadExporter::start(50_000.0);
    let prom = Prom::start(dir.path(), &[load.port]);
    let policy = json!({
        "apiVersion": "spillway.io/v1alpha1", "kind": "ElasticGateway",
        "metadata": {"name": "ingressgateway", "namespace": "istio-system", "generation": 1},
        "spec": {
            "target": {"kind": "Deployment", "name": "istio-ingressgateway"},
            "minReplicas": 2, "maxReplicas": 1000,
            "metrics": [{"name": "rps", "query": "sum(spillway_test_gateway_requests_per_second)", "targetPerReplica": 500}],
            "behavior": {"leadTime": {"seconds": 0}, "scaleDown": {"stabilizationWindowSeconds": 0}}
        }
    });
    let tb = Testbed::start_apiserver_only(dir.path()).await;
    let started = Instant::now();
    let (nodes, pods) = bulk_create(&tb, &s, policy).await;
    eprintln!(
        "kube-apiserver: {nodes} nodes, {pods} pods created in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let token = tb.agent_token();
    let server = format!("https://127.0.0.1:{}", tb.api_port());
    let kubeconfig = tb.kubeconfig_for(&dir.path().join("kubeconfig-bench"), &server, &token);

    let admin = free_port();
    let mut agent = Command::new(env!("CARGO_BIN_EXE_spillway"))
        .arg("run")
        .args(["--kubeconfig", kubeconfig.to_str().unwrap()])
        .args([
            "--prometheus-url",
            &prom.url(),
            "--interval",
            "1s",
            "--leader-election",
            "false",
        ])
        .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
        .env("SPILLWAY_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = agent.id();
    let t0 = Instant::now();
    let ready = loop {
        let ok = Command::new("curl")
            .args(["-sf", &format!("http://127.0.0.1:{admin}/readyz")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            break t0.elapsed();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "the agent never became ready"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let mut peak_rss = 0;
    for _ in 0..20 {
        peak_rss = peak_rss.max(rss_kib(pid).0);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (rss, hwm) = rss_kib(pid);
    println!(
        "live/memory: synced {nodes} nodes + {pods} pods in {:.1}s; RSS {:.1} MiB (max over 10 s after sync {:.1} MiB, high-water mark {:.1} MiB; target < 100 MiB)",
        ready.as_secs_f64(),
        rss as f64 / 1024.0,
        peak_rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );

    // Reaction: the load moves; when Prometheus answers the new value, a clock starts; it
    // stops when the scale patch reaches the API server.
    let mut reactions = vec![];
    for (i, rps) in [60_000.0, 50_000.0, 65_000.0, 50_000.0, 70_000.0]
        .into_iter()
        .enumerate()
    {
        let want = (rps / 500.0) as i64;
        let writes_before = scale_writes(&tb).len();
        load.set(rps);
        let visible = loop {
            let out = Command::new("curl")
                .args([
                    "-s",
                    &format!(
                        "{}/api/v1/query?query=sum(spillway_test_gateway_requests_per_second)",
                        prom.url()
                    ),
                ])
                .output()
                .unwrap();
            if String::from_utf8_lossy(&out.stdout).contains(&format!("\"{rps}\"")) {
                break Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let patched = loop {
            let w = scale_writes(&tb);
            let done = w.len() > writes_before && w.last() == Some(&want);
            if done {
                break Instant::now();
            }
            assert!(
                visible.elapsed() < Duration::from_secs(60),
                "no scale patch for step {i}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        reactions.push(patched.saturating_duration_since(visible).as_secs_f64());
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    reactions.sort_by(f64::total_cmp);
    println!(
        "live/reaction: load visible in Prometheus → scale patch at the API server: median {:.2}s, min {:.2}s, max {:.2}s over {} changes (--interval 1s)",
        reactions[reactions.len() / 2],
        reactions[0],
        reactions[reactions.len() - 1],
        reactions.len()
    );
    let _ = agent.kill();
    let _ = agent.wait();
}

/// The replica counts written to the gateway's scale subresource, from the audit log.
fn scale_writes(tb: &Testbed) -> Vec<i64> {
    tb.audit()
        .iter()
        .filter(|e| e["verb"] == "patch" && e["objectRef"]["subresource"] == "scale")
        .filter(|e| e["responseStatus"]["code"] == 200)
        .filter_map(|e| e["responseObject"]["spec"]["replicas"].as_i64())
        .collect()
}

/// Creates the scenario's nodes, the other workloads' pods, `deploy/`, the gateway Deployment,
/// its pods (bound, as the controllers would have made them) and the policy, 64 requests at a
/// time. Returns the counts of nodes and pods.
async fn bulk_create(tb: &Testbed, s: &Scenario, policy: Value) -> (usize, usize) {
    for ns in ["default", "istio-system"] {
        if ns != "default" {
            tb.kubectl_ok(&["create", "namespace", ns], None);
        }
        let sa: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": "default"}})).unwrap();
        let _ = Api::<ServiceAccount>::namespaced(tb.client.clone(), ns)
            .create(&PostParams::default(), &sa)
            .await;
    }
    tb.apply_deploy();
    let nodes = s.nodes();
    let node_api: Api<Node> = Api::all(tb.client.clone());
    futures::stream::iter(nodes.iter().map(|n| {
        let api = node_api.clone();
        async move {
            let obj: Node = serde_json::from_value(node_json(n)).unwrap();
            api.create(&PostParams::default(), &obj).await.unwrap();
        }
    }))
    .buffer_unordered(64)
    .collect::<Vec<_>>()
    .await;
    let mut pods: Vec<(String, Value)> = nodes
        .iter()
        .flat_map(other_pods)
        .map(|p| ("default".to_string(), p))
        .collect();
    let d = gateway_json(s, &spillway::sim::cluster::Latencies::default());
    let ecs: Vec<&spillway::model::Node> = nodes
        .iter()
        .filter(|n| n.labels.get("mykey4pod").map(String::as_str) == Some("asmgateway"))
        .collect();
    for i in 0..s.gateway.replicas as usize {
        let mut p = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("istio-ingressgateway-bench-{i}"), "labels": d["spec"]["template"]["metadata"]["labels"].clone()},
            "spec": d["spec"]["template"]["spec"].clone()
        });
        p["spec"]["nodeName"] = json!(ecs[i % ecs.len()].name);
        pods.push(("istio-system".to_string(), p));
    }
    let count = pods.len();
    futures::stream::iter(pods.into_iter().map(|(ns, p)| {
        let api: Api<Pod> = Api::namespaced(tb.client.clone(), &ns);
        async move {
            let obj: Pod = serde_json::from_value(p).unwrap();
            api.create(&PostParams::default(), &obj).await.unwrap();
        }
    }))
    .buffer_unordered(64)
    .collect::<Vec<_>>()
    .await;
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(tb.client.clone(), "istio-system");
    deployments
        .create(&PostParams::default(), &serde_json::from_value(d).unwrap())
        .await
        .unwrap();
    let egw: Api<DynamicObject> = Api::namespaced_with(
        tb.client.clone(),
        "istio-system",
        &kube::api::ApiResource {
            group: "spillway.io".into(),
            version: "v1alpha1".into(),
            api_version: "spillway.io/v1alpha1".into(),
            kind: "ElasticGateway".into(),
            plural: "elasticgateways".into(),
        },
    );
    let mut policy = policy;
    policy["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("generation");
    egw.create(
        &PostParams::default(),
        &serde_json::from_value(policy).unwrap(),
    )
    .await
    .unwrap();
    (nodes.len(), count)
}
