use serde_json::{Value, json};

use super::*;

const EXAMPLE: &str = include_str!("../../deploy/examples/elasticgateway.yaml");

fn example() -> Value {
    serde_saphyr::from_str(EXAMPLE).expect("the shipped example parses")
}

/// An AdmissionReview as the apiserver sends it (admission.k8s.io/v1).
fn review_of(operation: &str, object: Option<Value>, old: Option<Value>) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "0d5f8c2e-1111-4c1e-9a52-7d1a9e1b0001",
            "kind": {"group": "spillway.io", "version": "v1alpha1", "kind": "ElasticGateway"},
            "resource": {"group": "spillway.io", "version": "v1alpha1", "resource": "elasticgateways"},
            "name": "ingressgateway",
            "namespace": "istio-system",
            "operation": operation,
            "userInfo": {"username": "alice"},
            "object": object,
            "oldObject": old,
            "dryRun": false
        }
    })
}

fn answer(review: &Value) -> (Value, &'static str) {
    let (out, result) = super::review(&serde_json::to_vec(review).unwrap());
    (serde_json::to_value(out).unwrap(), result)
}

#[test]
fn the_shipped_example_is_admitted_without_warnings() {
    let (out, result) = answer(&review_of("CREATE", Some(example()), None));
    assert_eq!(result, "allowed");
    let resp = &out["response"];
    assert_eq!(resp["uid"], "0d5f8c2e-1111-4c1e-9a52-7d1a9e1b0001");
    assert_eq!(resp["allowed"], true);
    assert!(resp.get("warnings").is_none(), "{resp}");
    assert_eq!(out["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(out["kind"], "AdmissionReview");
}

/// What only a PromQL parser can judge: refused with the field, as `spillway check` says it.
#[test]
fn a_query_that_does_not_parse_and_a_range_vector_are_denied_with_their_fields() {
    for (query, says) in [
        ("sum(rate(x[5m])", "is not valid PromQL"),
        ("x[5m]", "returns a matrix"),
    ] {
        let mut egw = example();
        egw["spec"]["metrics"] = json!([{"query": query, "targetPerReplica": 500}]);
        let (out, result) = answer(&review_of("CREATE", Some(egw), None));
        assert_eq!(result, "denied", "{query}");
        let resp = &out["response"];
        assert_eq!(resp["allowed"], false);
        let status = &resp["status"];
        assert_eq!(status["code"], 422);
        assert_eq!(status["reason"], "Invalid");
        let message = status["message"].as_str().unwrap();
        assert!(
            message.starts_with("spec.metrics[0].query: ") && message.contains(says),
            "{query}: {message}"
        );
        let cause = &status["details"]["causes"][0];
        assert_eq!(cause["field"], "spec.metrics[0].query");
        assert_eq!(status["details"]["kind"], "ElasticGateway");
    }
}

/// Every error is reported, not the first.
#[test]
fn every_field_error_is_in_the_denial() {
    let mut egw = example();
    egw["spec"]["metrics"] = json!([{"query": "x[5m]", "targetPerReplica": 500}]);
    egw["spec"]["minReplicas"] = json!(50);
    let (out, _) = answer(&review_of("CREATE", Some(egw), None));
    let causes = out["response"]["status"]["details"]["causes"]
        .as_array()
        .unwrap();
    let fields: Vec<&str> = causes.iter().filter_map(|c| c["field"].as_str()).collect();
    assert!(fields.contains(&"spec.metrics[0].query"), "{fields:?}");
    // minReplicas above maxReplicas is reported at maxReplicas, as `check` reports it.
    assert!(fields.contains(&"spec.maxReplicas"), "{fields:?}");
}

/// A configuration the agent runs but `check` warns about: admitted, with the same warnings
/// (kubectl prints them).
#[test]
fn eci_preferring_weights_are_admitted_with_a_warning() {
    let mut egw = example();
    egw["spec"]["placement"] = json!({"exhaustedWeights": {"ecs": 20, "eci": 80}});
    let (out, result) = answer(&review_of("CREATE", Some(egw), None));
    assert_eq!(result, "allowed");
    let warnings = out["response"]["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0]
            .as_str()
            .unwrap()
            .starts_with("spec.placement.exhaustedWeights")
    );
}

/// An object admitted while the webhook was away keeps its spec through metadata writes (a
/// finalizer's removal above all: it must be deletable); a change to its spec is judged.
#[test]
fn an_update_is_judged_only_when_the_spec_changes() {
    let mut bad = example();
    bad["spec"]["metrics"] = json!([{"query": "x[5m]", "targetPerReplica": 500}]);
    let mut relabelled = bad.clone();
    relabelled["metadata"]["finalizers"] = json!([]);
    relabelled["metadata"]["labels"] = json!({"team": "edge"});
    let (_, result) = answer(&review_of("UPDATE", Some(relabelled), Some(bad.clone())));
    assert_eq!(result, "allowed");
    let mut respecced = bad.clone();
    respecced["spec"]["maxReplicas"] = json!(30);
    let (_, result) = answer(&review_of("UPDATE", Some(respecced), Some(bad.clone())));
    assert_eq!(result, "denied");
    let mut deleting = bad.clone();
    deleting["metadata"]["deletionTimestamp"] = json!("2026-12-07T00:00:00Z");
    deleting["spec"]["maxReplicas"] = json!(30);
    let (_, result) = answer(&review_of("UPDATE", Some(deleting), Some(bad.clone())));
    assert_eq!(result, "allowed");
    let (_, result) = answer(&review_of("DELETE", None, Some(bad)));
    assert_eq!(result, "allowed");
}

#[test]
fn a_status_write_is_not_judged() {
    let mut bad = example();
    bad["spec"]["metrics"] = json!([{"query": "x[5m]", "targetPerReplica": 500}]);
    let mut review = review_of("UPDATE", Some(bad.clone()), Some(bad));
    review["request"]["subResource"] = json!("status");
    review["request"]["object"]["spec"]["maxReplicas"] = json!(30);
    assert_eq!(answer(&review).1, "allowed");
}

/// A field the CRD knows and this build does not (a newer CRD while old replicas still serve
/// the webhook) is not refused: the CRD's schema judged it. A known field's bad value still is.
#[test]
fn a_field_of_a_newer_crd_is_not_refused() {
    let mut egw = example();
    egw["spec"]["futureField"] = json!("kept");
    let (_, result) = answer(&review_of("CREATE", Some(egw.clone()), None));
    assert_eq!(result, "allowed");
    egw["spec"]["maxReplicas"] = json!(0);
    let (_, result) = answer(&review_of("CREATE", Some(egw), None));
    assert_eq!(result, "denied");
}

#[test]
fn what_is_not_an_admission_review_is_invalid() {
    for body in [
        &b"{"[..],
        b"[]",
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
    ] {
        let (out, result) = super::review(body);
        assert_eq!(result, "invalid");
        let out = serde_json::to_value(out).unwrap();
        assert_eq!(out["response"]["allowed"], false);
    }
}

fn copy_pair(dir: &Path, which: &str) {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for (from, to) in [("crt", CERT_FILE), ("key", KEY_FILE)] {
        let text = std::fs::read(fixtures.join(format!("webhook-{which}.{from}"))).unwrap();
        // Written aside and renamed in, as the kubelet swaps a Secret volume's files.
        let aside = dir.join(format!(".{to}.new"));
        std::fs::write(&aside, text).unwrap();
        std::fs::rename(&aside, dir.join(to)).unwrap();
    }
}

fn leaf(k: &CertifiedKey) -> Vec<u8> {
    k.cert[0].as_ref().to_vec()
}

/// cert-manager and the chart's Secret rotate the pair in place: the next handshake serves the
/// new one; a broken pair keeps the last good one; none at all is not a crash.
#[test]
fn the_certificate_is_read_again_when_its_files_change() {
    let dir = tempfile::tempdir().unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let files = CertFiles::new(dir.path(), provider);
    assert!(files.current().is_none(), "no files yet");
    copy_pair(dir.path(), "a");
    let a = files.current().expect("pair a loads");
    copy_pair(dir.path(), "b");
    let b = files.current().expect("pair b loads");
    assert_ne!(leaf(&a), leaf(&b), "the new pair is served");
    std::fs::write(
        dir.path().join(CERT_FILE),
        "not a certificate, and longer than one",
    )
    .unwrap();
    let kept = files.current().expect("the last good pair is kept");
    assert_eq!(leaf(&kept), leaf(&b));
    copy_pair(dir.path(), "a");
    assert_eq!(leaf(&files.current().unwrap()), leaf(&a));
}
