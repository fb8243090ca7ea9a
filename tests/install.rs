//! What an operator installs, on a real kube-apiserver: the CRD's bounds and CEL rules are
//! enforced by the apiserver itself, with the messages a user sees from `kubectl apply`; and the
//! Helm chart installs with the real helm (built by `testbed/helm/build.sh`).
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;

use support::live::workdir;
use support::testbed::Testbed;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

const VALID: &str = "apiVersion: spillway.io/v1alpha1
kind: ElasticGateway
metadata: {name: gw, namespace: istio-system}
spec:
  target: {name: istio-ingressgateway}
  minReplicas: 2
  maxReplicas: 40
  eci: {maxReplicas: 30}
  metrics: [{preset: RequestRate, targetPerReplica: 500}]
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apiserver_enforces_the_crds_bounds_and_rules() {
    let dir = workdir("crd-rules");
    let tb = Testbed::start_apiserver_only(dir.path()).await;
    tb.kubectl_ok(&["create", "namespace", "istio-system"], None);
    tb.apply_deploy();
    // The shipped example and a plain policy are accepted.
    tb.kubectl_ok(
        &[
            "apply",
            "--dry-run=server",
            "-f",
            &format!("{ROOT}/deploy/examples/elasticgateway.yaml"),
        ],
        None,
    );
    tb.kubectl_ok(&["apply", "-f", "-"], Some(VALID));
    // Each broken policy is refused by the apiserver, and the user reads why.
    for (change, (from, to), message) in [
        (
            "minReplicas above maxReplicas",
            ("minReplicas: 2", "minReplicas: 50"),
            "minReplicas must not be greater than maxReplicas",
        ),
        (
            "an ECI cap above maxReplicas",
            ("eci: {maxReplicas: 30}", "eci: {maxReplicas: 41}"),
            "eci.maxReplicas must not be greater than maxReplicas",
        ),
        (
            "normal weights preferring ECI",
            (
                "eci: {maxReplicas: 30}",
                "eci: {maxReplicas: 30}\n  placement: {normalWeights: {ecs: 20, eci: 80}}",
            ),
            "placement.normalWeights must prefer ECS",
        ),
        (
            "a weight of 0",
            (
                "eci: {maxReplicas: 30}",
                "eci: {maxReplicas: 30}\n  placement: {normalWeights: {ecs: 80, eci: 0}}",
            ),
            "should be greater than or equal to 1",
        ),
        (
            "maxReplicas beyond 10,000",
            ("maxReplicas: 40", "maxReplicas: 20000"),
            "should be less than or equal to 10000",
        ),
        (
            "a metric with neither preset nor query",
            (
                "metrics: [{preset: RequestRate, targetPerReplica: 500}]",
                "metrics: [{targetPerReplica: 500}]",
            ),
            "each metric needs a preset or a PromQL query",
        ),
        (
            "a target of 0 per replica",
            ("targetPerReplica: 500", "targetPerReplica: 0"),
            "targetPerReplica must be greater than 0",
        ),
    ] {
        let bad = VALID.replace(from, to).replace("name: gw,", "name: bad,");
        assert_ne!(bad, VALID.replace("name: gw,", "name: bad,"), "{change}");
        let out = tb.kubectl(&["apply", "-f", "-"], Some(&bad));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{change} was accepted");
        assert!(
            err.contains(message),
            "{change}: the apiserver said {err:?}, not {message:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_helm_chart_installs_on_a_real_control_plane() {
    let helm = Command::new("bash")
        .arg(format!("{ROOT}/testbed/helm/build.sh"))
        .output()
        .expect("bash runs testbed/helm/build.sh");
    assert!(
        helm.status.success(),
        "helm is not built: {} (bash testbed/helm/build.sh; .ci/run does it)",
        String::from_utf8_lossy(&helm.stderr)
    );
    let helm = String::from_utf8_lossy(&helm.stdout)
        .lines()
        .last()
        .unwrap()
        .to_string();
    let dir = workdir("helm-install");
    let tb = Testbed::start_apiserver_only(dir.path()).await;
    tb.kubectl_ok(&["create", "namespace", "istio-system"], None);
    let out = Command::new(&helm)
        .args(["install", "spillway", &format!("{ROOT}/charts/spillway")])
        .args(["--namespace", "spillway-system", "--create-namespace"])
        .arg("--kubeconfig")
        .arg(tb.kubeconfig())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "helm install failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    tb.kubectl_ok(
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/elasticgateways.spillway.io",
        ],
        None,
    );
    for (ns, object) in [
        ("spillway-system", "deployment/spillway"),
        ("spillway-system", "serviceaccount/spillway"),
        ("spillway-system", "service/spillway"),
        ("istio-system", "role/spillway-gateway"),
        (
            "spillway-system",
            "validatingadmissionpolicybinding/spillway-pod-deletion-cost-only",
        ),
    ] {
        tb.kubectl_ok(&["-n", ns, "get", object], None);
    }
    // The installed CRD is the one deploy/ ships: the policy the README shows is accepted.
    tb.kubectl_ok(&["apply", "-f", "-"], Some(VALID));
    let out = Command::new(&helm)
        .args(["uninstall", "spillway", "--namespace", "spillway-system"])
        .arg("--kubeconfig")
        .arg(tb.kubeconfig())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
