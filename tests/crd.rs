//! The checked-in CRD as `kubectl explain` and the API server see it: every property described,
//! bounds on counts, weights and durations, and the cross-field rules as CEL with messages a
//! user can act on.
#![allow(clippy::unwrap_used)]

use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn schema() -> Value {
    let crd: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(format!("{ROOT}/deploy/crd.yaml")).unwrap(),
    )
    .unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// Every property under `node`, with its path.
fn properties(node: &Value, path: &str, out: &mut Vec<(String, Value)>) {
    if let Some(props) = node["properties"].as_object() {
        for (k, v) in props {
            let p = format!("{path}.{k}");
            out.push((p.clone(), v.clone()));
            properties(v, &p, out);
        }
    }
    if node["items"].is_object() {
        properties(&node["items"], &format!("{path}[]"), out);
    }
    if node["additionalProperties"].is_object() {
        properties(&node["additionalProperties"], &format!("{path}{{}}"), out);
    }
}

fn at<'a>(schema: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(schema, |n, k| {
        if k == "[]" {
            &n["items"]
        } else {
            &n["properties"][k]
        }
    })
}

#[test]
fn every_property_is_described() {
    let mut props = vec![];
    properties(&schema(), "", &mut props);
    assert!(props.len() > 80, "{}", props.len());
    let bare: Vec<&String> = props
        .iter()
        .filter(|(p, v)| {
            // metadata is the API server's; apiVersion and kind are described by kube.
            p != ".metadata" && v["description"].as_str().is_none_or(|d| d.trim().len() < 3)
        })
        .map(|(p, _)| p)
        .collect();
    assert!(
        bare.is_empty(),
        "properties without a description: {bare:#?}"
    );
}

#[test]
fn counts_weights_and_durations_are_bounded() {
    let s = schema();
    for (path, min, max) in [
        ("spec.minReplicas", Some(1.0), Some(10000.0)),
        ("spec.maxReplicas", Some(1.0), Some(10000.0)),
        ("spec.eci.maxReplicas", Some(0.0), Some(10000.0)),
        ("spec.placement.normalWeights.ecs", Some(1.0), Some(100.0)),
        ("spec.placement.normalWeights.eci", Some(1.0), Some(100.0)),
        (
            "spec.placement.exhaustedWeights.ecs",
            Some(1.0),
            Some(100.0),
        ),
        (
            "spec.placement.exhaustedWeights.eci",
            Some(1.0),
            Some(100.0),
        ),
        ("spec.placement.exhaustedAfterSeconds", Some(0.0), None),
        ("spec.placement.rebalanceIntervalSeconds", Some(0.0), None),
        (
            "spec.behavior.scaleUp.stabilizationWindowSeconds",
            Some(0.0),
            Some(3600.0),
        ),
        (
            "spec.behavior.scaleDown.policies.[].periodSeconds",
            Some(1.0),
            Some(1800.0),
        ),
        ("spec.behavior.scaleDown.policies.[].value", Some(1.0), None),
        ("spec.behavior.leadTime.seconds", Some(0.0), Some(900.0)),
        (
            "spec.behavior.leadTime.windowSeconds",
            Some(10.0),
            Some(3600.0),
        ),
        ("spec.cost.eciVcpuPricePerSecond", Some(0.0), None),
    ] {
        let node = at(&s, path);
        assert_eq!(node["minimum"].as_f64(), min, "{path} minimum: {node}");
        assert_eq!(node["maximum"].as_f64(), max, "{path} maximum: {node}");
    }
}

#[test]
fn cross_field_rules_are_cel_with_user_messages() {
    let s = schema();
    let rules: Vec<(String, String)> = at(&s, "spec")["x-kubernetes-validations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["rule"].as_str().unwrap().to_string(),
                r["message"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let find = |needle: &str| {
        rules
            .iter()
            .find(|(r, _)| r.contains(needle))
            .unwrap_or_else(|| panic!("no rule on {needle}: {rules:#?}"))
    };
    assert_eq!(
        find("self.minReplicas <= self.maxReplicas").1,
        "minReplicas must not be greater than maxReplicas"
    );
    assert!(
        find("self.eci.maxReplicas <= self.maxReplicas")
            .1
            .starts_with("eci.maxReplicas must not be greater than maxReplicas")
    );
    assert!(find("normalWeights.ecs > ").1.contains("must prefer ECS"));
    for (rule, message) in &rules {
        // A message names the fields in the user's terms, never the CEL.
        assert!(!message.contains("self."), "{rule}: {message}");
    }
    let metric = at(&s, "spec.metrics.[]")["x-kubernetes-validations"]
        .as_array()
        .unwrap();
    assert!(
        metric
            .iter()
            .any(|r| r["message"] == "each metric needs a preset or a PromQL query")
    );
    // Conditions merge by type under server-side apply.
    let conditions = at(&s, "status.conditions");
    assert_eq!(conditions["x-kubernetes-list-type"], "map");
    assert_eq!(
        conditions["x-kubernetes-list-map-keys"],
        serde_json::json!(["type"])
    );
    assert!(
        at(&s, "status.conditions.[]")["required"]
            .as_array()
            .unwrap()
            .contains(&Value::from("lastTransitionTime"))
    );
}
