//! A rollout at peak cuts nothing: `kubectl rollout restart` of a gateway at 40 replicas (12 on
//! ECS, the rest on ECI under a cap of 30) moves pods between terminating, pending and ready for
//! a while; the agent must count the gateway's own pending pods and the room its terminating
//! pods are about to free, and write no lower count because of it (issue 26: 40 → 31 in 10 s).
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use serde_json::json;
use spillway::sim::Scenario;
use spillway::sim::cluster::Latencies;
use support::live::{agent, latencies, policy, status, wait_for, workdir};
use support::prom::{LoadExporter, Prom};
use support::testbed::Testbed;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_restart_at_peak_writes_no_lower_count() {
    let dir = workdir("rollout");
    let load = LoadExporter::start(20_000.0);
    let prom = Prom::start(dir.path(), &[load.port]);
    let mut egw = policy();
    egw["spec"]["maxReplicas"] = json!(40);
    egw["spec"]["eci"] = json!({"maxReplicas": 30});
    // Gateways drain for a while when they go: old pods hold their room for 15 s.
    let lat = Latencies {
        termination_seconds: 15.0,
        ..latencies()
    };
    let scenario = Scenario::default();
    let tb = Testbed::start(dir.path(), &scenario, &lat).await;
    tb.seed(&scenario, &lat, Some(egw)).await;
    let _a = agent(&tb, dir.path(), &prom.url(), "agent-a", false, &[]).await;
    wait_for("40 replicas, all ready", 120, || async {
        let pods = tb.gateway_pods().await;
        tb.replicas().await == 40 && pods.len() == 40 && pods.iter().all(|p| p.ready)
    })
    .await;
    let writes_before = scale_writes(&tb).len();
    tb.kubectl_ok(
        &[
            "-n",
            "istio-system",
            "rollout",
            "restart",
            "deployment/istio-ingressgateway",
        ],
        None,
    );
    // Until the rollout has replaced every pod, and a little after.
    wait_for("the rollout done", 300, || async {
        let d = tb.gateway().await;
        let s = d.status.unwrap_or_default();
        s.observed_generation == d.metadata.generation
            && s.updated_replicas == Some(40)
            && s.replicas == Some(40)
            && s.ready_replicas == Some(40)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let during: Vec<i64> = scale_writes(&tb).into_iter().skip(writes_before).collect();
    eprintln!("rollout: scale writes during the rollout at peak: {during:?}");
    assert!(
        during.iter().all(|r| *r >= 40),
        "a lower count written during the rollout: {during:?}"
    );
    assert_eq!(tb.replicas().await, 40);
    assert_eq!(status(&tb).await["desiredReplicas"], 40);
}

/// The replica counts written to the gateway's scale subresource, from the audit log.
fn scale_writes(tb: &support::testbed::Testbed) -> Vec<i64> {
    tb.audit()
        .iter()
        .filter(|e| e["verb"] == "patch" && e["objectRef"]["subresource"] == "scale")
        .filter(|e| e["responseStatus"]["code"] == 200)
        .filter_map(|e| e["responseObject"]["spec"]["replicas"].as_i64())
        .collect()
}
