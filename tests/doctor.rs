//! `spillway doctor` against the real control plane (the test bed, `deploy/` applied, the
//! agent's own ServiceAccount token) and a real Prometheus: a healthy setup passes every check
//! with the values it found; a broken one (a query that matches nothing, an HPA on the gateway,
//! a token without RBAC) names each failing check and exits 1.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::json;
use spillway::sim::Scenario;
use support::envoy::Envoys;
use support::live::{latencies, wait_for, workdir};
use support::prom::{LoadExporter, Prom, encode, http_get};
use support::testbed::Testbed;

fn policy(dir: &Path, file: &str, query: &str) -> String {
    let p = json!({
        "apiVersion": "spillway.io/v1alpha1", "kind": "ElasticGateway",
        "metadata": {"name": "ingressgateway", "namespace": "istio-system"},
        "spec": {
            "target": {"kind": "Deployment", "name": "istio-ingressgateway"},
            "minReplicas": 2, "maxReplicas": 30,
            "metrics": [{"name": "rps", "preset": "RequestRate", "query": query, "targetPerReplica": 500}]
        }
    });
    let path = dir.join(file);
    std::fs::write(&path, serde_json::to_string(&p).unwrap()).unwrap();
    path.to_str().unwrap().to_string()
}

/// Runs `spillway doctor`, reading the pods' counters on `fast_path_port`; returns the exit
/// code and what it printed.
fn doctor(kubeconfig: &Path, prom: &str, policy: &str, fast_path_port: u16) -> (i32, String) {
    doctor_with(kubeconfig, prom, policy, fast_path_port, &[])
}

fn doctor_with(
    kubeconfig: &Path,
    prom: &str,
    policy: &str,
    fast_path_port: u16,
    extra: &[&str],
) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_spillway"))
        .args(["doctor", "-f", policy])
        .args(extra)
        .args(["--fast-path-port", &fast_path_port.to_string()])
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--prometheus-url", prom, "--api-timeout", "5s"])
        .args(["--lease-namespace", "spillway-system"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

fn line<'a>(text: &'a str, start: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(start))
        .unwrap_or_else(|| panic!("no line starting {start:?} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_passes_a_healthy_setup_and_names_each_broken_check() {
    let dir = workdir("doctor");
    let load = LoadExporter::start(2000.0);
    let prom = Prom::start(dir.path(), &[load.port]);
    let scenario = Scenario::default();
    let tb = Testbed::start(dir.path(), &scenario, &latencies()).await;
    tb.seed(&scenario, &latencies(), None).await;
    let q = "sum(spillway_test_gateway_requests_per_second)";
    wait_for("Prometheus has scraped the load", 60, || async {
        let (_, body) = http_get(prom.port, &format!("/api/v1/query?query={}", encode(q)));
        body.contains("\"2000\"")
    })
    .await;
    // The gateway pods' own stats, at their (loopback) IPs.
    let envoys = Envoys::start(dir.path().join("envoy-sd.json"));
    envoys.set_load(2000.0);
    wait_for("the gateway's pods to have addresses", 60, || async {
        let pods = tb.gateway_pods().await;
        pods.len() == 4 && pods.iter().all(|p| p.ready && p.ip.is_some())
    })
    .await;
    envoys.update(&tb.gateway_pods().await);
    let server = format!("https://127.0.0.1:{}", tb.api_port());
    let agent = tb.kubeconfig_for(&dir.path().join("agent"), &server, &tb.agent_token());

    // Healthy: every check passes, with what it found.
    let (code, out) = doctor(
        &agent,
        &prom.url(),
        &policy(dir.path(), "ok.json", q),
        envoys.port,
    );
    assert_eq!(code, 0, "{out}");
    assert!(line(&out, "ok   prometheus rps:").contains("1 series, value 2000"));
    let pools = line(&out, "ok   pools:");
    assert!(
        pools.contains("4 ECS node(s)")
            && pools.contains("1 virtual node(s)")
            && pools.contains("8 more gateway pod(s) fit on ECS now"),
        "{pools}"
    );
    assert!(
        line(
            &out,
            "ok   target Deployment istio-system/istio-ingressgateway:"
        )
        .contains("4 replicas")
    );
    line(
        &out,
        "ok   target Deployment istio-system/istio-ingressgateway writable:",
    );
    line(&out, "ok   HPA:");
    // Said before the agent writes it: what the template gets, and when.
    assert!(
        line(&out, "ok   pool spread (placement.poolSpread):")
            .contains("to be written with the weights at the next quiet time (one rollout): soft spreading on mykey4pod, kubernetes.io/hostname"),
        "{out}"
    );
    assert!(line(&out, "ok   lease spillway-system/spillway:").contains("writable"));
    let fast = line(&out, "ok   fast path:");
    assert!(fast.contains("from 4 of 4 ready pod(s)"), "{out}");
    // The stand-ins export no listener gauge: scale-ins cannot choose by connections.
    assert!(
        fast.contains("no envoy_listener_downstream_cx_active in their stats"),
        "{fast}"
    );
    // The test bed's pods go 1 s after SIGTERM, before Istio's default 5 s drain.
    assert!(
        line(&out, "warn drain:").contains("the proxy drains 5 s (Istio's default), but the kubelet kills the pod 1 s after SIGTERM"),
        "{out}"
    );
    // No cAdvisor series in this Prometheus: ECI pods would count as ECS pods, and it says so.
    assert!(
        line(&out, "warn per-pool capacity:").contains("container_cpu_usage_seconds_total"),
        "{out}"
    );
    assert!(out.contains("no check would stop the agent"), "{out}");

    // Issue 29: a slow start on the gateway's Service, as Istio's own CRD (istio.io/api, pinned
    // in testbed/istio/go.mod) takes it, read by a user's doctor: the ramp named, and what to
    // put in spec.warmup.
    let crds = support::testbed::prebuilt("testbed/istio/crds.sh", "Istio's CRDs");
    let all = std::fs::read_to_string(&crds).unwrap();
    let dr_crd = all
        .split("\n---\n")
        .find(|d| d.contains("name: destinationrules.networking.istio.io"))
        .unwrap();
    tb.kubectl_ok(&["apply", "--server-side", "-f", "-"], Some(dr_crd));
    wait_for("the DestinationRule API to be served", 60, || async {
        tb.kubectl(&["get", "destinationrules", "-A"], None)
            .status
            .success()
    })
    .await;
    let selector = tb.kubectl_ok(
        &[
            "get",
            "deploy",
            "istio-ingressgateway",
            "-n",
            "istio-system",
            "-o",
            "jsonpath={.spec.selector.matchLabels}",
        ],
        None,
    );
    // The gateway's Service as ACK makes it: a LoadBalancer, the cloud's default scheduler.
    let service = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "istio-ingressgateway", "namespace": "istio-system"},
        "spec": {"type": "LoadBalancer",
                 "selector": serde_json::from_str::<serde_json::Value>(&selector).unwrap(),
                 "ports": [{"name": "http2", "port": 80, "targetPort": 8080}]}});
    tb.kubectl_ok(&["apply", "-f", "-"], Some(&service.to_string()));
    tb.kubectl_ok(
        &["apply", "-f", "-"],
        Some(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: gw-warmup, namespace: istio-system}\nspec:\n  host: istio-ingressgateway\n  trafficPolicy:\n    loadBalancer:\n      simple: LEAST_REQUEST\n      warmup: {duration: 45s, minimumPercent: 20}\n",
        ),
    );
    let admin = tb.kubeconfig();
    let (code, out) = doctor(
        &admin,
        &prom.url(),
        &policy(dir.path(), "ok.json", q),
        envoys.port,
    );
    assert_eq!(code, 0, "{out}");
    let warm = line(&out, "warn warm-up:");
    assert!(
        warm.contains("DestinationRule istio-system/gw-warmup")
            && warm.contains("spec.warmup: {seconds: 45, minWeightPercent: 20, aggression: 1}"),
        "{warm}"
    );
    // Stated as the rule has it: agreed.
    let mut stated: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(policy(dir.path(), "warm.json", q)).unwrap())
            .unwrap();
    stated["spec"]["warmup"] = json!({"seconds": 45, "minWeightPercent": 20});
    let warm_policy = dir.path().join("warm.json");
    std::fs::write(&warm_policy, stated.to_string()).unwrap();
    let (code, out) = doctor(
        &admin,
        &prom.url(),
        warm_policy.to_str().unwrap(),
        envoys.port,
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        line(&out, "ok   warm-up:")
            .contains("spec.warmup matches DestinationRule istio-system/gw-warmup"),
        "{out}"
    );
    // Issue 29, item 3: new connections dealt in turn keep long-lived ones on the old pods
    // after a scale-out; the annotation that deals them to the pods with the fewest is named.
    let lb = line(&out, "warn load balancer:");
    assert!(
        lb.contains("istio-system/istio-ingressgateway (rr)")
            && lb.contains("alibaba-cloud-loadbalancer-scheduler: wlc"),
        "{out}"
    );
    tb.kubectl_ok(
        &[
            "annotate",
            "service",
            "istio-ingressgateway",
            "-n",
            "istio-system",
            "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-scheduler=wlc",
        ],
        None,
    );
    // Read as the runbook runs it, in a spillway pod with the agent's ServiceAccount: deploy/'s
    // Role lets it list the Services and DestinationRules these two checks read.
    let (code, out) = doctor(
        &agent,
        &prom.url(),
        warm_policy.to_str().unwrap(),
        envoys.port,
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        line(&out, "ok   load balancer:").contains("istio-system/istio-ingressgateway deals"),
        "{out}"
    );
    assert!(
        line(&out, "ok   warm-up:").contains("spec.warmup matches DestinationRule"),
        "{out}"
    );

    // A query that matches nothing, and an HPA on the gateway: both named, exit 1.
    tb.kubectl_ok(
        &["apply", "-f", "-"],
        Some(
            "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: gw-hpa, namespace: istio-system}\nspec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: istio-ingressgateway}\n  minReplicas: 2\n  maxReplicas: 10\n",
        ),
    );
    let broken = policy(
        dir.path(),
        "empty.json",
        "sum(spillway_test_no_such_metric)",
    );
    // Nothing answers on the fast path's port: a warning, which does not stop the agent.
    let closed = std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // And a virtual node carrying the ECS pool's label by mistake: a warning naming it.
    let virtual_node = tb
        .node_pools()
        .await
        .into_iter()
        .find(|(_, p)| *p == spillway::model::Pool::Eci)
        .map(|(n, _)| n)
        .unwrap();
    tb.kubectl_ok(
        &["label", "node", &virtual_node, "mykey4pod=asmgateway"],
        None,
    );
    let (code, out) = doctor(&agent, &prom.url(), &broken, closed);
    assert!(
        line(&out, "warn pool labels:").contains(&virtual_node),
        "{out}"
    );
    assert_eq!(code, 1, "{out}");
    assert!(line(&out, "FAIL prometheus rps:").contains("empty result"));
    assert!(line(&out, "FAIL HPA:").contains("gw-hpa"));
    line(&out, "ok   pools:");
    assert!(
        line(&out, "warn fast path:").contains("unreachable"),
        "{out}"
    );
    assert!(out.contains("2 check(s) would stop the agent"), "{out}");
    // The same report for a pipeline: one JSON object, the same exit code.
    let (code, json) = doctor_with(&agent, &prom.url(), &broken, closed, &["-o", "json"]);
    assert_eq!(code, 1, "{json}");
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["failed"], true);
    assert_eq!(report["gateway"], "istio-system/ingressgateway");
    let mut failing: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["outcome"] == "fail")
        .map(|c| c["what"].as_str().unwrap())
        .collect();
    failing.sort_unstable();
    assert_eq!(failing, ["HPA", "prometheus rps"], "{json}");

    // A token without RBAC: every Kubernetes check fails, saying forbidden.
    tb.kubectl_ok(
        &[
            "create",
            "serviceaccount",
            "nobody",
            "-n",
            "spillway-system",
        ],
        None,
    );
    let token = tb
        .kubectl_ok(
            &["create", "token", "nobody", "-n", "spillway-system"],
            None,
        )
        .trim()
        .to_string();
    let nobody = tb.kubeconfig_for(&dir.path().join("nobody"), &server, &token);
    let (code, out) = doctor(
        &nobody,
        &prom.url(),
        &policy(dir.path(), "ok2.json", q),
        envoys.port,
    );
    assert_eq!(code, 1, "{out}");
    for start in [
        "FAIL target Deployment istio-system/istio-ingressgateway:",
        "FAIL pools:",
        "FAIL HPA:",
        "FAIL lease spillway-system/spillway:",
    ] {
        assert!(line(&out, start).contains("forbidden"), "{start}\n{out}");
    }
    line(&out, "ok   prometheus rps:");
}
