//! ASM as it really is: two API servers. The mesh control plane (the test bed's apiserver
//! alone, with an IstioGateway CRD written from ASM's field reference and `deploy/mesh/rbac.yaml`)
//! holds the IstioGateway; the data plane (the full test bed: scheduler, controllers, kwok nodes)
//! holds the nodes, the pods and the Deployment ASM renders. A small renderer in the test stands
//! in for ASM's controller (IstioGateway → Deployment `istio-<name>`: replicas, affinity,
//! tolerations). The real `spillway run` binary scales the IstioGateway on the mesh apiserver
//! with a token of the mesh ServiceAccount; the renderer renders; the real scheduler places the
//! pods on ECS and ECI. ASM's own autoscaling on the IstioGateway makes spillway hold.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use spillway::k8s::target::istio_gateway_resource;
use spillway::sim::Scenario;
use support::live::{agent, condition, event_reasons, latencies, status, wait_for, workdir};
use support::prom::{LoadExporter, Prom};
use support::testbed::{Testbed, gateway_json, pool_counts};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The live tests' policy, aimed at the IstioGateway.
fn policy() -> Value {
    let mut p = support::live::policy();
    p["spec"]["target"] = json!({"kind": "IstioGateway", "name": "ingressgateway"});
    p
}

/// The IstioGateway from which ASM would render the data plane's `istio-ingressgateway` as the
/// test bed seeds it: the same replicas, requests, tolerations and affinity.
fn istio_gateway(scenario: &Scenario) -> Value {
    let d = gateway_json(scenario, &latencies());
    let pod = &d["spec"]["template"]["spec"];
    json!({
        "apiVersion": "istio.alibabacloud.com/v1beta1", "kind": "IstioGateway",
        "metadata": {"name": "ingressgateway", "namespace": "istio-system"},
        "spec": {
            "clusterIds": ["c-data-plane"],
            "gatewayType": "ingress",
            "replicaCount": d["spec"]["replicas"],
            "resources": pod["containers"][0]["resources"],
            "tolerations": pod["tolerations"],
            "affinity": pod["affinity"],
            "ports": [{"name": "http2", "port": 80, "targetPort": 80}]
        }
    })
}

/// ASM's controller, as far as spillway can tell: renders the IstioGateway's replica count,
/// affinity and tolerations into the data plane's Deployment `istio-<name>` (server-side apply,
/// its own field manager), whenever the IstioGateway changes.
fn renderer(mesh: kube::Client, data: kube::Client) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let gws: Api<DynamicObject> =
            Api::namespaced_with(mesh, "istio-system", &istio_gateway_resource());
        let deployments: Api<Deployment> = Api::namespaced(data, "istio-system");
        let mut rendered = String::new();
        loop {
            if let Ok(g) = gws.get("ingressgateway").await {
                let version = g.metadata.resource_version.clone().unwrap_or_default();
                if version != rendered {
                    let spec = &g.data["spec"];
                    // With replicas-managed-by-asm "false", ASM leaves the count as it is.
                    let managed = spillway::k8s::target::replicas_managed_by_asm(&g);
                    let replicas = if managed {
                        spec["replicaCount"].clone()
                    } else {
                        match deployments.get("istio-ingressgateway").await {
                            Ok(d) => json!(d.spec.replicas),
                            Err(_) => continue,
                        }
                    };
                    let patch = json!({
                        "apiVersion": "apps/v1", "kind": "Deployment",
                        "metadata": {"name": "istio-ingressgateway", "namespace": "istio-system"},
                        "spec": {
                            "replicas": replicas,
                            "template": {"spec": {
                                "containers": [{"name": "istio-proxy", "image": "istio/proxyv2:1.27.0"}],
                                "affinity": spec["affinity"],
                                "tolerations": spec["tolerations"]
                            }}
                        }
                    });
                    let pp = PatchParams::apply("asm-gateway-controller").force();
                    if deployments
                        .patch("istio-ingressgateway", &pp, &Patch::Apply(&patch))
                        .await
                        .is_ok()
                    {
                        rendered = version;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

async fn replica_count(mesh: &Testbed) -> i64 {
    let gws: Api<DynamicObject> = Api::namespaced_with(
        mesh.client.clone(),
        "istio-system",
        &istio_gateway_resource(),
    );
    gws.get("ingressgateway").await.unwrap().data["spec"]["replicaCount"]
        .as_i64()
        .unwrap_or(-1)
}

/// The mesh control plane: the IstioGateway CRD, `gateway`, spillway's RBAC there, and a
/// kubeconfig with the mesh ServiceAccount's token.
async fn mesh_plane(dir: &std::path::Path, gateway: Value) -> (Testbed, std::path::PathBuf) {
    // The mesh control plane: IstioGateway CRD, the gateway, and spillway's RBAC there.
    std::fs::create_dir_all(dir.join("mesh")).unwrap();
    let mesh = Testbed::start_apiserver_only(&dir.join("mesh")).await;
    mesh.kubectl_ok(&["create", "namespace", "istio-system"], None);
    mesh.kubectl_ok(
        &[
            "apply",
            "-f",
            &format!("{ROOT}/tests/fixtures/istiogateway-crd.yaml"),
        ],
        None,
    );
    mesh.kubectl_ok(
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/istiogateways.istio.alibabacloud.com",
        ],
        None,
    );
    mesh.kubectl_ok(
        &["apply", "-f", &format!("{ROOT}/deploy/mesh/rbac.yaml")],
        None,
    );
    Api::<DynamicObject>::namespaced_with(
        mesh.client.clone(),
        "istio-system",
        &istio_gateway_resource(),
    )
    .create(
        &PostParams::default(),
        &serde_json::from_value(gateway).unwrap(),
    )
    .await
    .unwrap();
    let token = mesh
        .kubectl_ok(
            &[
                "create",
                "token",
                "spillway",
                "-n",
                "istio-system",
                "--duration=2h",
            ],
            None,
        )
        .trim()
        .to_string();
    let mesh_kubeconfig = mesh.kubeconfig_for(
        &dir.join("mesh-kubeconfig"),
        &format!("https://127.0.0.1:{}", mesh.api_port()),
        &token,
    );

    (mesh, mesh_kubeconfig)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spillway_scales_the_istio_gateway_on_the_mesh_and_asm_renders_it_into_the_data_plane() {
    let dir = workdir("mesh");
    let scenario = Scenario::default();
    let load = LoadExporter::start(2000.0);
    let prom = Prom::start(dir.path(), &[load.port]);

    let (mesh, mesh_kubeconfig) = mesh_plane(dir.path(), istio_gateway(&scenario)).await;

    // The data plane, with the gateway ASM rendered and the ElasticGateway.
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    let tb = Testbed::start(&dir.path().join("data"), &scenario, &latencies()).await;
    tb.seed(&scenario, &latencies(), Some(policy())).await;
    let _asm = renderer(mesh.client.clone(), tb.client.clone());

    let a = agent(
        &tb,
        dir.path(),
        &prom.url(),
        "agent-a",
        false,
        &["--mesh-kubeconfig", mesh_kubeconfig.to_str().unwrap()],
    )
    .await;

    // Steady: 2,000 rps at 500 per replica is the 4 replicas running, all on ECS.
    wait_for("the first status", 90, || async {
        status(&tb).await["phase"] == "Normal"
    })
    .await;
    assert_eq!(replica_count(&mesh).await, 4);
    let c = condition(&tb, "AsmAutoscaling").await.unwrap();
    assert_eq!(
        (c["status"].as_str(), c["reason"].as_str()),
        (Some("False"), Some("NoAsmAutoscaling"))
    );

    // The spike: spillway writes replicaCount on the mesh; ASM's stand-in renders it; the real
    // scheduler fills ECS's 12 slots and sends the rest to ECI.
    load.set(10_000.0);
    wait_for("replicaCount 20 on the mesh", 40, || async {
        replica_count(&mesh).await == 20
    })
    .await;
    wait_for("the rendered Deployment at 20", 20, || async {
        tb.replicas().await == 20
    })
    .await;
    wait_for("12 pods on ECS and 8 on ECI", 60, || async {
        pool_counts(&tb.gateway_pods().await) == (12, 8)
    })
    .await;
    wait_for("status shows the overflow", 30, || async {
        let s = status(&tb).await;
        s["phase"] == "Overflow" && s["eciReplicas"] == 8
    })
    .await;
    // spillway never wrote the rendered Deployment: ASM owns it.
    let writes = a.writes();
    assert!(
        writes.iter().all(|w| !w.path.contains("/deployments")),
        "spillway wrote the data plane's Deployment: {:?}",
        writes.iter().map(|w| &w.path).collect::<Vec<_>>()
    );

    // ASM's autoscaling turned on in the IstioGateway: spillway holds the count while the load
    // drops, says so in a condition and an Event.
    Api::<DynamicObject>::namespaced_with(
        mesh.client.clone(),
        "istio-system",
        &istio_gateway_resource(),
    )
    .patch(
        "ingressgateway",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"cpu": {"targetAverageUtilization": 80}}})),
    )
    .await
    .unwrap();
    wait_for("AsmAutoscaling=True", 30, || async {
        condition(&tb, "AsmAutoscaling").await.is_some_and(|c| {
            c["status"] == "True"
                && c["message"]
                    .as_str()
                    .unwrap()
                    .contains("spec.cpu.targetAverageUtilization=80")
        })
    })
    .await;
    load.set(1000.0);
    // Held through more than a stabilisation window (4 s) of decisions (every 1 s).
    let held_since = Instant::now();
    while held_since.elapsed() < Duration::from_secs(6) {
        assert_eq!(replica_count(&mesh).await, 20, "scaled against ASM's HPA");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        event_reasons(&tb)
            .await
            .iter()
            .any(|r| r == "AsmAutoscalingEnabled")
    );

    // Autoscaling removed: spillway scales again (1,000 rps is 2 replicas).
    Api::<DynamicObject>::namespaced_with(
        mesh.client.clone(),
        "istio-system",
        &istio_gateway_resource(),
    )
    .patch(
        "ingressgateway",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"cpu": null}})),
    )
    .await
    .unwrap();
    wait_for("scaled down to 2 on the mesh", 40, || async {
        replica_count(&mesh).await == 2
    })
    .await;
    wait_for("2 pods left in the data plane", 60, || async {
        tb.gateway_pods().await.len() == 2
    })
    .await;

    // ASM's replica synchronisation off (the annotation ASM documents for HPAs and manual
    // scaling): spillway scales the rendered Deployment in the data plane, and leaves
    // replicaCount alone (3,000 rps is 6 replicas).
    Api::<DynamicObject>::namespaced_with(
        mesh.client.clone(),
        "istio-system",
        &istio_gateway_resource(),
    )
    .patch(
        "ingressgateway",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {
                "asm.alibabacloud.com/replicas-managed-by-asm": "false"}}})),
    )
    .await
    .unwrap();
    load.set(3000.0);
    wait_for(
        "the rendered Deployment scaled to 6 by spillway",
        40,
        || async { tb.replicas().await == 6 },
    )
    .await;
    assert_eq!(replica_count(&mesh).await, 2);
    assert!(
        a.writes()
            .iter()
            .any(|w| w.path.contains("/deployments/istio-ingressgateway/scale")),
        "spillway did not scale the rendered Deployment"
    );
    wait_for("6 pods in the data plane", 60, || async {
        tb.gateway_pods().await.len() == 6
    })
    .await;
}

/// `placement.poolSpread` for an IstioGateway (issue 34): at a quiet time spillway writes a
/// preferred pod affinity to the gateway's own pods on the ECS pool's label key into the
/// IstioGateway's `affinity`, beside the gateway's own pod-affinity entry (kept as it is), once;
/// ASM's stand-in renders it into the data plane's template; the hand-back takes spillway's term
/// away and leaves the gateway's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spillway_writes_the_pool_affinity_into_the_istio_gateway_and_hands_it_back() {
    let dir = workdir("mesh-affinity");
    let scenario = Scenario::default();
    // 800 rps on 4 pods: 40 % of the ready capacity, a quiet time.
    let load = LoadExporter::start(800.0);
    let prom = Prom::start(dir.path(), &[load.port]);
    let own = json!({"weight": 10, "podAffinityTerm": {"topologyKey": "topology.kubernetes.io/zone",
        "labelSelector": {"matchLabels": {"app": "cache"}}}});
    let mut gateway = istio_gateway(&scenario);
    gateway["spec"]["affinity"]["podAffinity"] =
        json!({"preferredDuringSchedulingIgnoredDuringExecution": [own.clone()]});
    let (mesh, mesh_kubeconfig) = mesh_plane(dir.path(), gateway).await;
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    let tb = Testbed::start(&dir.path().join("data"), &scenario, &latencies()).await;
    let mut egw = policy();
    egw["spec"]["minReplicas"] = json!(4);
    tb.seed(&scenario, &latencies(), Some(egw)).await;
    let _asm = renderer(mesh.client.clone(), tb.client.clone());
    let a = agent(
        &tb,
        dir.path(),
        &prom.url(),
        "agent-a",
        false,
        &["--mesh-kubeconfig", mesh_kubeconfig.to_str().unwrap()],
    )
    .await;
    let gws: Api<DynamicObject> = Api::namespaced_with(
        mesh.client.clone(),
        "istio-system",
        &istio_gateway_resource(),
    );
    let entries = || async {
        gws.get("ingressgateway").await.unwrap().data["spec"]["affinity"]["podAffinity"]
            ["preferredDuringSchedulingIgnoredDuringExecution"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let ours = |e: &Value| {
        e["weight"] == 100
            && e["podAffinityTerm"]["topologyKey"] == "mykey4pod"
            && e["podAffinityTerm"]["labelSelector"]["matchLabels"]["istio"] == "ingressgateway"
    };
    wait_for("the pool affinity in the IstioGateway", 90, || async {
        entries().await.iter().any(ours)
    })
    .await;
    let written = entries().await;
    assert_eq!(written.len(), 2, "{written:?}");
    assert_eq!(written[0], own, "the gateway's own entry, as it was");
    wait_for("the rendered template with it", 30, || async {
        let d = serde_json::to_value(tb.gateway().await).unwrap();
        d["spec"]["template"]["spec"]["affinity"]["podAffinity"]
            ["preferredDuringSchedulingIgnoredDuringExecution"]
            .as_array()
            .is_some_and(|l| l.iter().any(ours))
    })
    .await;
    wait_for("PoolSpread=True", 30, || async {
        condition(&tb, "PoolSpread")
            .await
            .is_some_and(|c| c["status"] == "True")
    })
    .await;
    // Written once: the IstioGateway's spec does not change again over a dozen decisions.
    let generation = || async {
        gws.get("ingressgateway")
            .await
            .unwrap()
            .metadata
            .generation
            .unwrap_or_default()
    };
    let (before, seen) = (generation().await, a.decisions());
    wait_for("a dozen more decisions", 60, || async {
        a.decisions() >= seen + 12.0
    })
    .await;
    assert_eq!(
        generation().await,
        before,
        "the IstioGateway was written again"
    );

    // Hand-back: spillway's term goes, the gateway's own stays.
    let egws: Api<DynamicObject> = Api::namespaced_with(
        tb.client.clone(),
        "istio-system",
        &support::live::egw_resource(),
    );
    egws.delete("ingressgateway", &Default::default())
        .await
        .unwrap();
    wait_for("the ElasticGateway handed back and gone", 90, || async {
        egws.get_opt("ingressgateway").await.unwrap().is_none()
    })
    .await;
    assert_eq!(entries().await, vec![own]);
}
