//! What an operator installs, on a real kube-apiserver: the CRD's bounds and CEL rules are
//! enforced by the apiserver itself, with the messages a user sees from `kubectl apply`; and the
//! Helm chart installs with the real helm (built by `testbed/helm/build.sh`).
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;

use support::live::{wait_for, workdir};
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

/// The real Helm 3, built by testbed/helm/build.sh (which .ci/run runs first).
fn helm_binary() -> String {
    helm_major(3)
}

/// The real Helm of a major version (3 or 4), built by testbed/helm/build.sh.
fn helm_major(major: u8) -> String {
    let helm = Command::new("bash")
        .arg(format!("{ROOT}/testbed/helm/build.sh"))
        .arg(major.to_string())
        .output()
        .expect("bash runs testbed/helm/build.sh");
    assert!(
        helm.status.success(),
        "helm is not built: {} (bash testbed/helm/build.sh; .ci/run does it)",
        String::from_utf8_lossy(&helm.stderr)
    );
    String::from_utf8_lossy(&helm.stdout)
        .lines()
        .last()
        .unwrap()
        .to_string()
}

/// Runs helm against the test bed; fails the test with helm's output unless it succeeds.
fn helm_run(helm: &str, tb: &Testbed, args: &[&str]) {
    let out = Command::new(helm)
        .args(args)
        .arg("--kubeconfig")
        .arg(tb.kubeconfig())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "helm {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Copies the chart into `to`, as it is.
fn copy_chart(to: &std::path::Path) {
    let ok = Command::new("cp")
        .args(["-r", &format!("{ROOT}/charts/spillway")])
        .arg(to)
        .status()
        .unwrap();
    assert!(ok.success());
}

/// Issue 30: the CRD lived in the chart's crds/, which `helm upgrade` never touches, so the
/// first release to add a field would have had it pruned from every ElasticGateway, silently.
/// On the real apiserver with the real helm: the 0.1.0 layout (CRD in crds/) installed, then
/// this chart upgraded over it as CHANGELOG.md says (the CRD adopted by the release), then a
/// next release whose CRD adds a field: `helm upgrade` brings it, and an ElasticGateway keeps
/// it; `helm uninstall` leaves the CRD and the ElasticGateways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_upgrades_its_crd_and_keeps_it_on_uninstall() {
    let bin = helm_binary();
    let dir = workdir("helm-upgrade");
    let tb = Testbed::start_apiserver_only(dir.path()).await;
    tb.kubectl_ok(&["create", "namespace", "istio-system"], None);
    let ns = ["--namespace", "spillway-system"];
    // 0.1.0: the same chart with its CRD in crds/.
    let previous = dir.path().join("previous");
    copy_chart(&previous);
    std::fs::create_dir(previous.join("crds")).unwrap();
    std::fs::rename(
        previous.join("files/crd.yaml"),
        previous.join("crds/elasticgateways.spillway.io.yaml"),
    )
    .unwrap();
    std::fs::remove_file(previous.join("templates/crd.yaml")).unwrap();
    let prev = previous.to_str().unwrap();
    helm_run(
        &bin,
        &tb,
        &[
            "install",
            "spillway",
            prev,
            ns[0],
            ns[1],
            "--create-namespace",
        ],
    );
    // The upgrade notes' step: the release adopts the CRD crds/ made.
    let crd = "crd/elasticgateways.spillway.io";
    tb.kubectl_ok(&["label", crd, "app.kubernetes.io/managed-by=Helm"], None);
    tb.kubectl_ok(
        &[
            "annotate",
            crd,
            "meta.helm.sh/release-name=spillway",
            "meta.helm.sh/release-namespace=spillway-system",
        ],
        None,
    );
    let current = format!("{ROOT}/charts/spillway");
    helm_run(&bin, &tb, &["upgrade", "spillway", &current, ns[0], ns[1]]);
    let webhook_ca = || {
        tb.kubectl_ok(
            &[
                "-n",
                "spillway-system",
                "get",
                "secret",
                "spillway-webhook-tls",
                "-o",
                "jsonpath={.data.ca\\.crt}",
            ],
            None,
        )
    };
    let ca = webhook_ca();
    assert!(!ca.is_empty(), "the chart made the webhook's certificate");
    // The next release adds a field to the spec.
    let next = dir.path().join("next");
    copy_chart(&next);
    let text = std::fs::read_to_string(next.join("files/crd.yaml")).unwrap();
    let mut crd_doc: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    crd_doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        ["futureField"] = serde_json::json!({"type": "string"});
    std::fs::write(next.join("files/crd.yaml"), crd_doc.to_string()).unwrap();
    helm_run(
        &bin,
        &tb,
        &["upgrade", "spillway", next.to_str().unwrap(), ns[0], ns[1]],
    );
    let with_field = format!("{VALID}  futureField: kept\n");
    let kept = || {
        tb.kubectl_ok(&["apply", "-f", "-"], Some(&with_field));
        let read = tb.kubectl_ok(
            &[
                "-n",
                "istio-system",
                "get",
                "egw",
                "gw",
                "-o",
                "jsonpath={.spec.futureField}",
            ],
            None,
        );
        read.trim() == "kept"
    };
    // The apiserver serves an updated CRD's schema moments after the write: a bound, no sleep.
    wait_for("the new field kept, not pruned", 30, || async { kept() }).await;
    // The webhook's certificate survives the upgrade: the apiserver's caBundle stays true.
    assert_eq!(webhook_ca(), ca, "the upgrade made a new webhook CA");
    let bundle = tb.kubectl_ok(
        &[
            "get",
            "validatingwebhookconfiguration",
            "spillway-elasticgateways",
            "-o",
            "jsonpath={.webhooks[0].clientConfig.caBundle}",
        ],
        None,
    );
    assert_eq!(bundle, ca);
    helm_run(&bin, &tb, &["uninstall", "spillway", ns[0], ns[1]]);
    tb.kubectl_ok(&["get", crd], None);
    tb.kubectl_ok(&["-n", "istio-system", "get", "egw", "gw"], None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_helm_chart_installs_on_a_real_control_plane() {
    installs_with(3).await;
}

/// Helm 4 beside Helm 3: it installs with server-side apply by default, which judges the
/// chart's objects field by field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_helm_chart_installs_with_helm_4() {
    installs_with(4).await;
}

async fn installs_with(major: u8) {
    let helm = helm_major(major);
    let dir = workdir(&format!("helm{major}-install"));
    let tb = Testbed::start_apiserver_only(dir.path()).await;
    tb.kubectl_ok(&["create", "namespace", "istio-system"], None);
    let chart = format!("{ROOT}/charts/spillway");
    helm_run(
        &helm,
        &tb,
        &[
            "install",
            "spillway",
            &chart,
            "--namespace",
            "spillway-system",
            "--create-namespace",
        ],
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
        (
            "spillway-system",
            "validatingwebhookconfiguration/spillway-elasticgateways",
        ),
        ("spillway-system", "secret/spillway-webhook-tls"),
        ("spillway-system", "service/spillway-webhook"),
    ] {
        tb.kubectl_ok(&["-n", ns, "get", object], None);
    }
    // The installed CRD is the one deploy/ ships: the policy the README shows is accepted.
    tb.kubectl_ok(&["apply", "-f", "-"], Some(VALID));
    // `kubectl get egw` shows what a person looks for first: ready or not, and the bounds.
    let table = tb.kubectl_ok(&["-n", "istio-system", "get", "egw"], None);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    for column in [
        "NAME", "TARGET", "READY", "PHASE", "MIN", "MAX", "DESIRED", "ECS", "ECI",
    ] {
        assert!(header.contains(&column), "{column} missing: {table}");
    }
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!((row[0], row[1]), ("gw", "istio-ingressgateway"), "{table}");
    assert!(row.contains(&"40"), "maxReplicas shown: {table}");
    helm_run(
        &helm,
        &tb,
        &["uninstall", "spillway", "--namespace", "spillway-system"],
    );
}

/// Serves the chart's admission webhook from a `spillway run` on loopback: the chart's
/// ValidatingWebhookConfiguration as rendered, its Service swapped for this process's URL (the
/// test bed's pods are not real), the process serving the test bed's apiserver certificate
/// (127.0.0.1, signed by the CA the apiserver trusts). Returns the process and its admin port
/// once the apiserver calls it.
fn serve_the_webhook(tb: &Testbed, dir: &std::path::Path) -> (support::prom::Killed, u16) {
    let certs = dir.join("webhook-tls");
    std::fs::create_dir_all(&certs).unwrap();
    let pki = tb.ca_file().parent().unwrap().to_path_buf();
    std::fs::copy(pki.join("apiserver.crt"), certs.join("tls.crt")).unwrap();
    std::fs::copy(pki.join("apiserver.key"), certs.join("tls.key")).unwrap();
    let (port, admin) = (support::prom::free_port(), support::prom::free_port());
    let process = Command::new(env!("CARGO_BIN_EXE_spillway"))
        .arg("run")
        .arg("--kubeconfig")
        .arg(tb.kubeconfig())
        .args(["--leader-election", "false"])
        .args(["--prometheus-url", "http://127.0.0.1:9"])
        .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
        .args(["--webhook-addr", &format!("127.0.0.1:{port}")])
        .arg("--webhook-cert-dir")
        .arg(&certs)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("webhook-agent.log")).unwrap())
        .spawn()
        .unwrap();
    let out = Command::new(helm_binary())
        .args(["template", "spillway", &format!("{ROOT}/charts/spillway")])
        .args(["--namespace", "spillway-system"])
        .args(["--show-only", "templates/webhook.yaml"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut hook: serde_json::Value = serde_saphyr::from_multiple::<serde_json::Value>(&text)
        .unwrap()
        .into_iter()
        .find(|d| d["kind"] == "ValidatingWebhookConfiguration")
        .expect("the chart renders a ValidatingWebhookConfiguration");
    let ca = Command::new("base64")
        .arg("-w0")
        .arg(tb.ca_file())
        .output()
        .unwrap();
    let ca = String::from_utf8(ca.stdout).unwrap();
    hook["webhooks"][0]["clientConfig"] = serde_json::json!({
        "url": format!("https://127.0.0.1:{port}/validate"),
        "caBundle": ca,
    });
    tb.kubectl_ok(&["apply", "-f", "-"], Some(&hook.to_string()));
    (support::prom::Killed(process), admin)
}

/// Issue 30: admission let through specs the agent then refused (28 of 70). A corpus of bad
/// specs, each one change to a valid policy, goes to `spillway check` and to the real
/// apiserver (`kubectl apply --dry-run=server`) with the chart's admission webhook: every spec
/// the agent refuses is refused at admission: by the CRD's schema and CEL, and what only a
/// PromQL parser can judge by the webhook, which runs the agent's own validation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_refuses_what_the_agent_refuses() {
    use serde_json::json;
    let dir = workdir("crd-corpus");
    let tb = Testbed::start_apiserver_only(dir.path()).await;
    tb.kubectl_ok(&["create", "namespace", "istio-system"], None);
    tb.apply_deploy();
    let valid: serde_json::Value = serde_saphyr::from_str(VALID).unwrap();
    let (_webhook, admin) = serve_the_webhook(&tb, dir.path());
    let range_vector = dir.path().join("range-vector.json");
    let mut doc = valid.clone();
    doc["spec"]["metrics"] = json!([{"query": "x[5m]", "targetPerReplica": 500}]);
    std::fs::write(&range_vector, doc.to_string()).unwrap();
    let dry_run = |file: &std::path::Path| {
        tb.kubectl(
            &["apply", "--dry-run=server", "-f", file.to_str().unwrap()],
            None,
        )
    };
    // The webhook answers once the process has bound its port; until then the apiserver
    // ignores it (failurePolicy: Ignore) and admits.
    wait_for("the webhook refuses a range vector", 60, || async {
        !dry_run(&range_vector).status.success()
    })
    .await;
    let refused = String::from_utf8_lossy(&dry_run(&range_vector).stderr).into_owned();
    assert!(
        refused.contains(
            "The ElasticGateway \"gw\" is invalid: spec.metrics[0].query: returns a matrix"
        ),
        "{refused}"
    );
    // A valid policy passes; one the agent runs but `check` warns about passes with the
    // warning, as kubectl prints it.
    let mut eci_first = valid.clone();
    eci_first["spec"]["placement"] = json!({"exhaustedWeights": {"ecs": 20, "eci": 80}});
    let eci_first_file = dir.path().join("eci-first.json");
    std::fs::write(&eci_first_file, eci_first.to_string()).unwrap();
    let warned = dry_run(&eci_first_file);
    assert!(
        warned.status.success(),
        "{}",
        String::from_utf8_lossy(&warned.stderr)
    );
    assert!(
        String::from_utf8_lossy(&warned.stderr)
            .contains("Warning: spec.placement.exhaustedWeights {ecs: 20, eci: 80} prefers ECI"),
        "{}",
        String::from_utf8_lossy(&warned.stderr)
    );
    let corpus: Vec<(&str, serde_json::Value)> = vec![
        (
            "a target name with capitals",
            json!({"target": {"name": "Istio_Gateway"}}),
        ),
        ("minReplicas 0", json!({"minReplicas": 0})),
        ("maxReplicas beyond 10,000", json!({"maxReplicas": 20000})),
        ("minReplicas above maxReplicas", json!({"minReplicas": 50})),
        ("a negative ECI cap", json!({"eci": {"maxReplicas": -1}})),
        (
            "an ECI cap above maxReplicas",
            json!({"eci": {"maxReplicas": 41}}),
        ),
        (
            "an ECI cost cap of 1e308",
            json!({"eci": {"maxCostPerHour": 1e308}}),
        ),
        ("no metric", json!({"metrics": []})),
        (
            "two metrics of one name",
            json!({"metrics": [
            {"preset": "RequestRate", "targetPerReplica": 500},
            {"preset": "RequestRate", "targetPerReplica": 600}]}),
        ),
        (
            "a name clashing with a preset's",
            json!({"metrics": [
            {"preset": "RequestRate", "targetPerReplica": 500},
            {"name": "request_rate", "query": "sum(up)", "targetPerReplica": 600}]}),
        ),
        (
            "a metric with neither preset nor query",
            json!({"metrics": [{"targetPerReplica": 500}]}),
        ),
        (
            "a blank query",
            json!({"metrics": [{"query": "   ", "targetPerReplica": 500}]}),
        ),
        (
            "a query that does not parse",
            json!({"metrics": [{"query": "sum(rate(x[5m])", "targetPerReplica": 500}]}),
        ),
        (
            "a range vector",
            json!({"metrics": [{"query": "x[5m]", "targetPerReplica": 500}]}),
        ),
        (
            "a target of 0 per replica",
            json!({"metrics": [{"preset": "RequestRate", "targetPerReplica": 0}]}),
        ),
        (
            "a target of 1e300 per replica",
            json!({"metrics": [{"preset": "RequestRate", "targetPerReplica": 1e300}]}),
        ),
        (
            "an empty ECS selector",
            json!({"pools": {"ecs": {"nodeSelector": {}}, "eci": {"nodeSelector": {"type": "virtual-kubelet"}}}}),
        ),
        (
            "the same selector for both pools",
            json!({"pools": {"ecs": {"nodeSelector": {"a": "b"}}, "eci": {"nodeSelector": {"a": "b"}}}}),
        ),
        (
            "40 selector labels",
            json!({"pools": {"ecs": {"nodeSelector": (0..40).map(|i| (format!("k{i}"), json!("v"))).collect::<serde_json::Map<_, _>>()}, "eci": {"nodeSelector": {"type": "virtual-kubelet"}}}}),
        ),
        (
            "an empty toleration key with Equal",
            json!({"pools": {"ecs": {"nodeSelector": {"a": "b"}, "tolerations": [{"operator": "Equal", "value": "x"}]}, "eci": {"nodeSelector": {"type": "virtual-kubelet"}}}}),
        ),
        (
            "Exists with a value",
            json!({"pools": {"ecs": {"nodeSelector": {"a": "b"}, "tolerations": [{"key": "k", "operator": "Exists", "value": "x"}]}, "eci": {"nodeSelector": {"type": "virtual-kubelet"}}}}),
        ),
        (
            "10,000 tolerations",
            json!({"pools": {"ecs": {"nodeSelector": {"a": "b"}, "tolerations": vec![json!({"key": "k", "operator": "Exists"}); 10_000]}, "eci": {"nodeSelector": {"type": "virtual-kubelet"}}}}),
        ),
        (
            "normal weights preferring ECI",
            json!({"placement": {"normalWeights": {"ecs": 20, "eci": 80}}}),
        ),
        (
            "strong weights preferring ECI",
            json!({"placement": {"strongWeights": {"ecs": 1, "eci": 100}}}),
        ),
        (
            "a weight of 0",
            json!({"placement": {"exhaustedWeights": {"ecs": 0, "eci": 20}}}),
        ),
        (
            "a weight of 101",
            json!({"placement": {"normalWeights": {"ecs": 101, "eci": 20}}}),
        ),
        (
            "negative headroom",
            json!({"placement": {"ecsHeadroomPods": -1}}),
        ),
        (
            "a negative interval",
            json!({"placement": {"rebalanceIntervalSeconds": -1}}),
        ),
        (
            "an ECI start of 2^63",
            json!({"eci": {"startSeconds": i64::MAX}}),
        ),
        ("a negative ECI start", json!({"eci": {"startSeconds": -1}})),
        (
            "an ECI window of a day",
            json!({"eci": {"scaleDownWindowSeconds": 86400}}),
        ),
        ("an ECI share of 5", json!({"eci": {"relativeCapacity": 5}})),
        (
            "an ECS hold of two days",
            json!({"behavior": {"ecsHoldSeconds": 172800}}),
        ),
        ("a tolerance of 1", json!({"behavior": {"tolerance": 1.0}})),
        (
            "an empty scale-up policy list",
            json!({"behavior": {"scaleUp": {"policies": []}}}),
        ),
        (
            "a rate of 0 pods",
            json!({"behavior": {"scaleUp": {"policies": [{"type": "Pods", "value": 0, "periodSeconds": 15}]}}}),
        ),
        (
            "a period of two hours",
            json!({"behavior": {"scaleDown": {"policies": [{"type": "Pods", "value": 1, "periodSeconds": 7200}]}}}),
        ),
        (
            "a window of two hours",
            json!({"behavior": {"scaleDown": {"stabilizationWindowSeconds": 7200}}}),
        ),
        (
            "a lead time of an hour",
            json!({"behavior": {"leadTime": {"seconds": 3600}}}),
        ),
        (
            "a growth below 1",
            json!({"behavior": {"leadTime": {"maxGrowth": 0.5}}}),
        ),
        ("a blank currency", json!({"cost": {"currency": "  "}})),
        (
            "a node price of 1e308",
            json!({"cost": {"ecsDefaultNodePricePerHour": 1e308}}),
        ),
        (
            "a negative vCPU price",
            json!({"cost": {"eciVcpuPricePerSecond": -1}}),
        ),
        (
            "an instance price of 1e308",
            json!({"cost": {"ecsNodePricePerHour": {"ecs.g7.xlarge": 1e308}}}),
        ),
        ("an unknown field", json!({"maxReplica": 40})),
        ("a warm-up of 0 s", json!({"warmup": {"seconds": 0}})),
        (
            "a warm-up from 150 %",
            json!({"warmup": {"seconds": 60, "minWeightPercent": 150}}),
        ),
        (
            "a warm-up of aggression 0",
            json!({"warmup": {"seconds": 60, "aggression": 0}}),
        ),
        (
            "a warm-up without its length",
            json!({"warmup": {"aggression": 2}}),
        ),
    ];
    let mut admitted = vec![];
    for (i, (what, change)) in corpus.iter().enumerate() {
        let mut doc = valid.clone();
        doc["metadata"]["name"] = json!(format!("bad-{i}"));
        merge(&mut doc["spec"], change);
        let file = dir.path().join(format!("bad-{i}.json"));
        std::fs::write(&file, doc.to_string()).unwrap();
        let check = Command::new(env!("CARGO_BIN_EXE_spillway"))
            .args(["check", file.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(!check.status.success(), "spillway check accepts {what}");
        if dry_run(&file).status.success() {
            admitted.push(*what);
        }
    }
    let (_, metrics) = support::prom::try_http_get(admin, "/metrics").unwrap_or_default();
    let denied = metrics
        .lines()
        .find(|l| l.starts_with("spillway_admission_reviews_total{result=\"denied\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    println!(
        "{} bad specs: all refused by spillway check; {} admitted by the apiserver: {admitted:?}; {denied} denied by the webhook",
        corpus.len(),
        admitted.len()
    );
    assert!(
        admitted.is_empty(),
        "admitted though the agent refuses them: {admitted:?}"
    );
    // The PromQL specs (and the range vector above) reached the webhook and were denied there.
    assert!(denied >= 3.0, "{denied} denials counted");
}

/// A JSON merge patch (RFC 7386) of `patch` into `doc`, arrays replaced whole.
fn merge(doc: &mut serde_json::Value, patch: &serde_json::Value) {
    match (doc, patch) {
        (serde_json::Value::Object(d), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                merge(d.entry(k.clone()).or_insert(serde_json::Value::Null), v);
            }
        }
        (d, p) => *d = p.clone(),
    }
}

/// Issue 30: the manifests were checked against Kubernetes 1.33's schemas while the code and
/// the test bed are 1.37, and the ServiceMonitor and PrometheusRule against nothing. Every
/// kustomization of deploy/ and the chart under several value sets go to the test bed's 1.37
/// apiserver as a server-side dry-run, with the Prometheus Operator's own CRDs (the module
/// pinned in testbed/monitoring/go.mod) installed: the apiserver and those CRDs judge them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_manifest_is_accepted_by_the_apiserver_it_targets() {
    let crds = support::testbed::prebuilt(
        "testbed/monitoring/crds.sh",
        "the Prometheus Operator's CRDs",
    );
    let dir = workdir("manifests-dry-run");
    let tb = Testbed::start_apiserver_only(dir.path()).await;
    for f in [
        "monitoring.coreos.com_servicemonitors.yaml",
        "monitoring.coreos.com_prometheusrules.yaml",
    ] {
        let path = crds.join(f);
        tb.kubectl_ok(
            &["apply", "--server-side", "-f", path.to_str().unwrap()],
            None,
        );
    }
    for ns in ["istio-system", "gateways", "monitoring"] {
        tb.kubectl_ok(&["create", "namespace", ns], None);
    }
    tb.kubectl_ok(
        &[
            "apply",
            "-f",
            &format!("{ROOT}/deploy/namespace.yaml"),
            "-f",
            &format!("{ROOT}/deploy/crd.yaml"),
        ],
        None,
    );
    tb.kubectl_ok(
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/elasticgateways.spillway.io",
            "crd/servicemonitors.monitoring.coreos.com",
            "crd/prometheusrules.monitoring.coreos.com",
        ],
        None,
    );
    let mut rendered: Vec<(String, String)> = vec![];
    for k in [
        "deploy",
        "deploy/monitoring",
        "deploy/overlays/asm-istiogateway",
        "deploy/overlays/dry-run",
        "deploy/overlays/istio-deployment",
    ] {
        let text = tb.kubectl_ok(&["kustomize", &format!("{ROOT}/{k}")], None);
        rendered.push((k.to_string(), text));
    }
    let bin = helm_binary();
    for (name, set) in [
        ("chart defaults", ""),
        (
            "chart with monitoring",
            "serviceMonitor.enabled=true,prometheusRule.enabled=true",
        ),
        (
            "chart options",
            "leaderElection.enabled=false,replicaCount=1,gatewayNamespaces={istio-system,gateways},networkPolicy.prometheusNamespace=monitoring,image.digest=sha256:0000000000000000000000000000000000000000000000000000000000000000",
        ),
    ] {
        let mut cmd = Command::new(&bin);
        cmd.args(["template", "spillway", &format!("{ROOT}/charts/spillway")])
            .args(["--namespace", "spillway-system"]);
        if !set.is_empty() {
            cmd.args(["--set", set]);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        rendered.push((
            name.to_string(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        ));
    }
    for (what, text) in &rendered {
        let out = tb.kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(text));
        assert!(
            out.status.success(),
            "{what}: the 1.37 apiserver refuses it: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let accepted = String::from_utf8_lossy(&out.stdout).lines().count();
        println!("{what}: {accepted} object(s) accepted by a server-side dry-run");
    }
}
