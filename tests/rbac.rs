//! `deploy/`'s RBAC, enforced by the stand-in API server: the agent needs nothing more than it
//! grants, and gets nothing more.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams, EvictParams, ListParams, Patch, PatchParams};
use serde_json::json;
use spillway::sim::Scenario;
use spillway::sim::cluster::Latencies;
use support::apiserver::ApiServer;
use support::prom::{Killed, LoadExporter, Prom, free_port};
use support::rbac::Rbac;

fn deploy_rbac() -> Rbac {
    let out = Command::new("kubectl")
        .args(["kustomize", concat!(env!("CARGO_MANIFEST_DIR"), "/deploy")])
        .output();
    let out = out.expect("kubectl is needed to build deploy/ (kubectl kustomize)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Rbac::from_manifests(
        &String::from_utf8(out.stdout).unwrap(),
        "spillway-system",
        "spillway",
    )
}

fn policy() -> serde_json::Value {
    json!({
        "apiVersion": "spillway.io/v1alpha1", "kind": "ElasticGateway",
        "metadata": {"name": "ingressgateway", "namespace": "istio-system", "generation": 1},
        "spec": {
            "target": {"kind": "Deployment", "name": "istio-ingressgateway"},
            "minReplicas": 2, "maxReplicas": 30,
            "metrics": [{"name": "rps", "query": "sum(spillway_test_gateway_requests_per_second)", "targetPerReplica": 500}],
            "placement": {"exhaustedAfterSeconds": 2, "recoveredAfterSeconds": 2, "minWeightChangeIntervalSeconds": 1},
            "behavior": {"leadTime": {"seconds": 0}, "scaleUp": {"policies": [{"type": "Pods", "value": 30, "periodSeconds": 1}]},
                         "scaleDown": {"stabilizationWindowSeconds": 2}}
        }
    })
}

fn latencies() -> Latencies {
    Latencies {
        ecs_start_seconds: 1.0,
        eci_start_seconds: 2.0,
        jitter: 0.0,
        termination_seconds: 1.0,
    }
}

async fn client(api: &ApiServer, dir: &std::path::Path, token: &str) -> kube::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kc = kube::config::Kubeconfig::read_from(api.kubeconfig(dir, token)).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(cfg).unwrap()
}

async fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {secs}s waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_needs_nothing_beyond_deploys_rbac() {
    let dir = tempfile::tempdir().unwrap();
    let load = LoadExporter::start(2000.0);
    let prom = Prom::start(dir.path(), &[load.port]);
    let api = ApiServer::start(&Scenario::default(), latencies(), Some(policy())).await;
    api.with(|st| st.rbac = Some(deploy_rbac()));
    let mut agents = vec![];
    for who in ["spillway-a", "spillway-b"] {
        let child = Command::new(env!("CARGO_BIN_EXE_spillway"))
            .arg("run")
            .args([
                "--kubeconfig",
                api.kubeconfig(dir.path(), who).to_str().unwrap(),
            ])
            .args([
                "--prometheus-url",
                &prom.url(),
                "--interval",
                "1s",
                "--lease-duration",
                "4s",
                "--identity",
                who,
            ])
            .args(["--admin-addr", &format!("127.0.0.1:{}", free_port())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        agents.push(Killed(child));
    }
    let replicas = |api: &ApiServer| {
        api.with(|st| {
            st.get("deployments", "istio-system", "istio-ingressgateway")
                .unwrap()["spec"]["replicas"]
                .as_i64()
                .unwrap()
        })
    };
    // A spike onto ECI long enough for the weights to shift, and back.
    load.set(10_000.0);
    wait_until("scaled up", 30, || replicas(&api) == 20).await;
    let weights_applied = |api: &ApiServer| {
        api.with(|st| {
            st.log.iter().any(|l| {
                l.path.contains("/deployments/istio-ingressgateway?")
                    && l.path.contains("force=true")
                    && l.status == 200
            })
        })
    };
    wait_until("weights shifted by server-side apply", 30, || {
        weights_applied(&api)
    })
    .await;
    load.set(1000.0);
    wait_until("scaled down", 40, || replicas(&api) == 2).await;
    // An eviction, as a move back to ECS would send it, with the agent's identity.
    let c = client(&api, dir.path(), "spillway-a").await;
    let pod = api.with(|st| {
        st.gateway
            .as_ref()
            .unwrap()
            .cluster
            .live()
            .next()
            .unwrap()
            .name
            .clone()
    });
    Api::<Pod>::namespaced(c, "istio-system")
        .evict(&pod, &EvictParams::default())
        .await
        .unwrap();

    let log = api.with(|st| st.log.clone());
    let denied: Vec<String> = log
        .iter()
        .filter(|l| l.status == 403)
        .map(|l| format!("{} {}", l.method, l.path))
        .collect();
    assert!(
        denied.is_empty(),
        "deploy/'s RBAC denied the agent: {denied:#?}"
    );
    // No Deployment is read cluster-wide any more.
    assert!(
        !log.iter()
            .any(|l| l.path.starts_with("/apis/apps/v1/deployments")),
        "the agent listed every Deployment"
    );
    // The run used every kind of request the agent makes, so the check covered them all.
    for (method, fragment) in [
        ("GET", "/api/v1/nodes"),
        ("GET", "/api/v1/pods"),
        (
            "GET",
            "/apis/apps/v1/namespaces/istio-system/deployments/istio-ingressgateway",
        ),
        ("GET", "/apis/spillway.io/v1alpha1/elasticgateways"),
        ("GET", "/horizontalpodautoscalers"),
        ("PATCH", "/deployments/istio-ingressgateway/scale"),
        ("PATCH", "/deployments/istio-ingressgateway?"),
        ("PATCH", "/namespaces/istio-system/pods/"),
        ("PATCH", "/elasticgateways/ingressgateway/status"),
        (
            "POST",
            "/apis/events.k8s.io/v1/namespaces/istio-system/events",
        ),
        ("POST", "/eviction"),
        ("GET", "/leases/spillway"),
        ("PATCH", "/leases/spillway"),
    ] {
        assert!(
            log.iter()
                .any(|l| l.method == method && l.path.contains(fragment) && l.status < 400),
            "never exercised: {method} {fragment}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_outside_the_role_are_denied() {
    let dir = tempfile::tempdir().unwrap();
    let api = ApiServer::start(&Scenario::default(), latencies(), Some(policy())).await;
    api.with(|st| st.rbac = Some(deploy_rbac()));
    let c = client(&api, dir.path(), "spillway").await;
    let forbidden =
        |r: Result<(), kube::Error>| matches!(r, Err(kube::Error::Api(s)) if s.code == 403);
    let deployments = Api::<Deployment>::namespaced(c.clone(), "istio-system");
    // Only the gateway's Deployment may be changed in istio-system, not istiod.
    assert!(forbidden(
        deployments
            .patch(
                "istiod",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": 0}}))
            )
            .await
            .map(|_| ())
    ));
    assert!(forbidden(
        Api::<Deployment>::all(c.clone())
            .list(&ListParams::default())
            .await
            .map(|_| ())
    ));
    assert!(forbidden(
        deployments
            .delete("istio-ingressgateway", &DeleteParams::default())
            .await
            .map(|_| ())
    ));
    assert!(forbidden(
        Api::<Secret>::all(c.clone())
            .list(&ListParams::default())
            .await
            .map(|_| ())
    ));
    let pods_elsewhere = Api::<Pod>::namespaced(c.clone(), "default");
    let patch = json!({"metadata": {"annotations": {"x": "y"}}});
    assert!(forbidden(
        pods_elsewhere
            .patch("other-x", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
    ));
    let scale_elsewhere = Api::<Deployment>::namespaced(c.clone(), "default");
    assert!(forbidden(
        scale_elsewhere
            .patch_scale(
                "x",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": 1}}))
            )
            .await
            .map(|_| ())
    ));
    // And what it does need is allowed.
    assert!(
        Api::<Pod>::all(c.clone())
            .list(&ListParams::default().limit(5))
            .await
            .is_ok()
    );
    assert!(deployments.get("istio-ingressgateway").await.is_ok());
}
