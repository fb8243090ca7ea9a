//! `cargo bench --bench live`: the live agent against the stand-in API server serving 5,000
//! nodes and 100,000 pods, with a real Prometheus. Prints the agent's resident memory once its
//! caches are synced (target: under 100 MiB) and the reaction time from a load change visible in
//! Prometheus to the scale patch arriving at the API server.
#![allow(clippy::unwrap_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use spillway::sim::Scenario;
use spillway::sim::cluster::Latencies;
use support::apiserver::ApiServer;
use support::prom::{LoadExporter, Prom, free_port};

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
    let started = Instant::now();
    let lat = Latencies {
        ecs_start_seconds: 1.0,
        eci_start_seconds: 3.0,
        jitter: 0.0,
        termination_seconds: 1.0,
    };
    let api = ApiServer::start(&s, lat, Some(policy)).await;
    let (nodes, pods) = api.with(|st| (st.list("nodes", None).len(), st.list("pods", None).len()));
    eprintln!(
        "stand-in: {nodes} nodes, {pods} pods (seeded in {:.1}s)",
        started.elapsed().as_secs_f64()
    );

    let admin = free_port();
    let mut agent = Command::new(env!("CARGO_BIN_EXE_spillway"))
        .arg("run")
        .args([
            "--kubeconfig",
            api.kubeconfig(dir.path(), "bench").to_str().unwrap(),
        ])
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
        let writes_before = api.with(|st| st.gateway.as_ref().unwrap().replica_writes.len());
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
            let done = api.with(|st| {
                let w = &st.gateway.as_ref().unwrap().replica_writes;
                w.len() > writes_before && w.last() == Some(&(want as i32))
            });
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
