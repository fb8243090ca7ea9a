//! Policy validation: every problem, each with the path of the field that has it.

use std::path::Path;

use super::{Behavior, ElasticGateway, ElasticGatewaySpec, PoolWeights, ScalingRules};

pub use crate::config::FieldError;

/// Reads, parses and validates an ElasticGateway manifest file.
pub fn load_policy_file(path: &Path) -> Result<ElasticGateway, Vec<FieldError>> {
    let text = crate::config::read_bounded(path, crate::config::MAX_DOCUMENT_BYTES)
        .map_err(|e| vec![FieldError::new(path.display().to_string(), e)])?;
    parse_policy(&text)
}

/// Parses an ElasticGateway manifest (YAML or JSON) and validates it; on failure returns every
/// problem found. Unknown fields are errors: the API server would prune them silently, so a typo
/// such as `maxReplica` would otherwise go unnoticed.
pub fn parse_policy(text: &str) -> Result<ElasticGateway, Vec<FieldError>> {
    let value = crate::config::parse_value(text).map_err(|e| vec![e])?;
    policy_from_value(value)
}

/// Parses every document of a multi-document manifest (`---` between them), each on its own.
pub fn parse_policies(
    text: &str,
) -> Result<Vec<Result<ElasticGateway, Vec<FieldError>>>, FieldError> {
    let docs = crate::config::parse_values(text)?;
    if docs.is_empty() {
        return Err(FieldError::new("(document)", "holds no document"));
    }
    Ok(docs.into_iter().map(policy_from_value).collect())
}

/// Reads every ElasticGateway of a manifest file.
pub fn load_policy_files(
    path: &Path,
) -> Result<Vec<Result<ElasticGateway, Vec<FieldError>>>, FieldError> {
    let text = crate::config::read_bounded(path, crate::config::MAX_DOCUMENT_BYTES)
        .map_err(|e| FieldError::new(path.display().to_string(), e))?;
    parse_policies(&text)
}

/// Checks one ElasticGateway object as the apiserver hands it to the admission webhook: the
/// whole of [`parse_policy`] but for unknown fields. The CRD already pruned or refused those,
/// and a field it knows that this build does not (a newer CRD, a rollout half done) is not
/// this build's to refuse.
pub fn policy_from_object(value: serde_json::Value) -> Result<ElasticGateway, Vec<FieldError>> {
    checked(value, true)
}

fn policy_from_value(value: serde_json::Value) -> Result<ElasticGateway, Vec<FieldError>> {
    checked(value, false)
}

fn checked(
    value: serde_json::Value,
    unknown_allowed: bool,
) -> Result<ElasticGateway, Vec<FieldError>> {
    let mut errors = Vec::new();
    let expect = |field: &str, want: &str, errors: &mut Vec<FieldError>| match value
        .get(field)
        .and_then(|v| v.as_str())
    {
        Some(v) if v == want => {}
        Some(v) => errors.push(FieldError::new(
            field,
            format!("is {v:?}, expected {want:?}"),
        )),
        None => errors.push(FieldError::new(
            field,
            format!("is missing, expected {want:?}"),
        )),
    };
    expect("apiVersion", "spillway.io/v1alpha1", &mut errors);
    expect("kind", "ElasticGateway", &mut errors);
    if value
        .pointer("/metadata/name")
        .and_then(|v| v.as_str())
        .is_none_or(str::is_empty)
    {
        errors.push(FieldError::new("metadata.name", "is required"));
    }
    // apiVersion and kind were checked above; status is the agent's to write.
    let parsed = crate::config::from_value::<ElasticGateway>(value, |p| {
        unknown_allowed || p.starts_with("status") || p == "apiVersion" || p == "kind"
    });
    match parsed {
        Err(e) => {
            errors.extend(e);
            Err(errors)
        }
        Ok(egw) => {
            let ns = egw
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into());
            if !is_dns_label(&ns) {
                errors.push(FieldError::new(
                    "metadata.namespace",
                    format!("{ns:?} is not a valid namespace name (an RFC 1123 label)"),
                ));
            }
            if let Some(name) = &egw.metadata.name
                && !is_dns_subdomain(name)
            {
                errors.push(FieldError::new(
                    "metadata.name",
                    format!("{name:?} is not a valid Kubernetes object name"),
                ));
            }
            errors.extend(validate(&egw.spec, &ns));
            if errors.is_empty() {
                Ok(egw)
            } else {
                Err(errors)
            }
        }
    }
}

/// Longest PromQL query accepted (the CRD says the same): parsing is not linear in the length.
pub const MAX_QUERY_LEN: usize = 4096;
/// Most replicas a policy may ask for (the CRD's bound too); far beyond any gateway, well within
/// i32 arithmetic.
pub const MAX_REPLICAS: i32 = 10_000;
/// Largest value of one scaling policy (pods or percent per period).
pub const MAX_RATE_VALUE: i32 = 100_000;
/// Highest price per hour accepted for a node, and per second for an ECI vCPU or GiB: far above
/// any real price, low enough that every cost stays finite.
pub const MAX_NODE_PRICE_PER_HOUR: f64 = 1e6;
/// Most labels in a pool's node selector, and most tolerations (the CRD's bound too).
pub const MAX_POOL_ENTRIES: usize = 32;
/// Most instance types priced in `cost.ecsNodePricePerHour` (the CRD's bound too).
pub const MAX_PRICED_TYPES: usize = 256;
pub const MAX_ECI_PRICE_PER_SECOND: f64 = 1e3;

/// Checks a PromQL query: parses, and returns a value spillway can use (an instant vector or a
/// scalar; a range vector or a string can only fail at run time).
pub fn check_query(q: &str) -> Result<(), String> {
    if q.len() > MAX_QUERY_LEN {
        return Err(format!(
            "is {} bytes long; at most {MAX_QUERY_LEN} are accepted",
            q.len()
        ));
    }
    let expr = promql_parser::parser::parse(q)
        .map_err(|e| format!("is not valid PromQL: {}", e.trim()))?;
    match expr.value_type() {
        promql_parser::parser::value::ValueType::Vector
        | promql_parser::parser::value::ValueType::Scalar => Ok(()),
        other => Err(format!(
            "returns a {other}, not an instant vector or scalar (drop the [range], or wrap it in rate() or sum())"
        )),
    }
}

/// Checks the meaning of a deserialised spec. An empty result means the engine can run it.
pub fn validate(spec: &ElasticGatewaySpec, namespace: &str) -> Vec<FieldError> {
    let mut v = Validator::default();
    if spec.target.name.trim().is_empty() {
        v.err("spec.target.name", "must name the gateway workload");
    } else if !is_dns_subdomain(&spec.target.name) {
        v.err(
            "spec.target.name",
            format!(
                "{:?} is not a valid Kubernetes object name",
                spec.target.name
            ),
        );
    }
    if spec.min_replicas < 1 {
        v.err(
            "spec.minReplicas",
            format!(
                "must be at least 1, got {}: the gateway is the front door",
                spec.min_replicas
            ),
        );
    }
    if spec.max_replicas > MAX_REPLICAS {
        v.err(
            "spec.maxReplicas",
            format!("must be at most {MAX_REPLICAS}, got {}", spec.max_replicas),
        );
    } else if spec.max_replicas < spec.min_replicas {
        v.err(
            "spec.maxReplicas",
            format!(
                "must be at least minReplicas ({}), got {}",
                spec.min_replicas, spec.max_replicas
            ),
        );
    }
    match spec.eci.max_replicas {
        Some(m) if m < 0 => v.err(
            "spec.eci.maxReplicas",
            format!("must be 0 or more, got {m}"),
        ),
        Some(m) if m > spec.max_replicas => v.err(
            "spec.eci.maxReplicas",
            format!(
                "must not be greater than maxReplicas ({}), got {m}: the ECI pods are part of the gateway's replicas",
                spec.max_replicas
            ),
        ),
        _ => {}
    }
    if let Some(c) = spec.eci.max_cost_per_hour {
        v.price(
            "spec.eci.maxCostPerHour",
            c,
            MAX_NODE_PRICE_PER_HOUR * 1000.0,
        );
    }
    if spec.metrics.is_empty() {
        v.err("spec.metrics", "needs at least one load metric");
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, m) in spec.metrics.iter().enumerate() {
        let at = format!("spec.metrics[{i}]");
        if !names.insert(m.display_name()) {
            v.err(
                format!("{at}.name"),
                format!("{:?} is used by another metric", m.display_name()),
            );
        }
        match (&m.query, m.preset) {
            (None, None) => v.err(format!("{at}.query"), "give a PromQL query or a preset"),
            (Some(q), _) if q.trim().is_empty() => v.err(format!("{at}.query"), "is empty"),
            (Some(q), _) => {
                if let Err(e) = check_query(q) {
                    v.err(format!("{at}.query"), e);
                }
            }
            // A preset renders the namespace and the target's name: those are checked (and
            // blamed) where they are set.
            (None, Some(p)) if is_dns_label(namespace) && is_dns_subdomain(&spec.target.name) => {
                let q = p.query(namespace, &spec.target.name);
                if let Err(e) = check_query(&q) {
                    v.err(format!("{at}.preset"), format!("renders {q:?}, which {e}"));
                }
            }
            (None, Some(_)) => {}
        }
        if !(m.target_per_replica.is_finite()
            && m.target_per_replica > 0.0
            && m.target_per_replica <= 1e15)
        {
            v.err(
                format!("{at}.targetPerReplica"),
                format!(
                    "must be greater than 0 (and at most 1e15), got {}",
                    m.target_per_replica
                ),
            );
        }
    }
    for (pool, spec_pool) in [("ecs", &spec.pools.ecs), ("eci", &spec.pools.eci)] {
        if spec_pool.node_selector.is_empty() {
            v.err(
                format!("spec.pools.{pool}.nodeSelector"),
                "needs at least one label to recognise the pool's nodes",
            );
        }
        for (field, n) in [
            ("nodeSelector", spec_pool.node_selector.len()),
            ("tolerations", spec_pool.tolerations.len()),
        ] {
            if n > MAX_POOL_ENTRIES {
                v.err(
                    format!("spec.pools.{pool}.{field}"),
                    format!("must have at most {MAX_POOL_ENTRIES} entries, got {n}"),
                );
            }
        }
        for (i, t) in spec_pool.tolerations.iter().enumerate() {
            if t.key.is_empty() && t.operator == crate::model::TolerationOperator::Equal {
                v.err(
                    format!("spec.pools.{pool}.tolerations[{i}].key"),
                    "an empty key needs operator Exists",
                );
            }
            if t.operator == crate::model::TolerationOperator::Exists && !t.value.is_empty() {
                v.err(
                    format!("spec.pools.{pool}.tolerations[{i}].value"),
                    "must be empty with operator Exists",
                );
            }
        }
    }
    if spec.pools.ecs.node_selector == spec.pools.eci.node_selector {
        v.err(
            "spec.pools.eci.nodeSelector",
            "must differ from spec.pools.ecs.nodeSelector",
        );
    }
    let p = &spec.placement;
    v.weights("spec.placement.normalWeights", p.normal_weights);
    v.weights("spec.placement.exhaustedWeights", p.exhausted_weights);
    v.weights("spec.placement.strongWeights", p.strong_weights);
    if p.strong_weights.ecs <= p.strong_weights.eci {
        v.err(
            "spec.placement.strongWeights",
            format!("must prefer ECS (ecs > eci), got {}", p.strong_weights),
        );
    }
    for (field, value) in [
        ("startSeconds", spec.eci.start_seconds),
        ("scaleDownWindowSeconds", spec.eci.scale_down_window_seconds),
    ] {
        if let Some(x) = value.filter(|x| !(0..=3600).contains(x)) {
            v.err(
                format!("spec.eci.{field}"),
                format!("must be within 0..3600 seconds, got {x}"),
            );
        }
    }
    if let Some(x) = spec
        .eci
        .relative_capacity
        .filter(|x| !(x.is_finite() && (0.1..=1.0).contains(x)))
    {
        v.err(
            "spec.eci.relativeCapacity",
            format!("must be within 0.1..1 (an ECI pod's share of an ECS pod), got {x}"),
        );
    }
    if let Some(x) = spec
        .behavior
        .ecs_hold_seconds
        .filter(|x| !(0..=86400).contains(x))
    {
        v.err(
            "spec.behavior.ecsHoldSeconds",
            format!("must be within 0..86400 seconds, got {x}"),
        );
    }
    for (field, problem) in spec.warmup.iter().flat_map(|w| w.problems()) {
        v.err(format!("spec.warmup.{field}"), problem);
    }
    if let Some(x) = spec
        .behavior
        .reset_budget_percent
        .filter(|x| !(x.is_finite() && *x > 0.0 && *x <= 100.0))
    {
        v.err(
            "spec.behavior.resetBudgetPercent",
            format!("must be above 0 and at most 100 (percent of the open connections a minute), got {x}"),
        );
    }
    if p.normal_weights.ecs <= p.normal_weights.eci {
        v.err(
            "spec.placement.normalWeights",
            format!(
                "must prefer ECS (ecs > eci), got {}: normal times live on ECS",
                p.normal_weights
            ),
        );
    }
    if p.ecs_headroom_pods < 0 {
        v.err(
            "spec.placement.ecsHeadroomPods",
            format!("must be 0 or more, got {}", p.ecs_headroom_pods),
        );
    }
    for (field, s) in [
        ("exhaustedAfterSeconds", p.exhausted_after_seconds),
        ("recoveredAfterSeconds", p.recovered_after_seconds),
        (
            "minWeightChangeIntervalSeconds",
            p.min_weight_change_interval_seconds,
        ),
        ("rebalanceIntervalSeconds", p.rebalance_interval_seconds),
    ] {
        if s < 0 {
            v.err(
                format!("spec.placement.{field}"),
                format!("must be 0 or more, got {s}"),
            );
        }
    }
    v.behavior(&spec.behavior);
    let c = &spec.cost;
    if c.currency.trim().is_empty() {
        v.err("spec.cost.currency", "is empty");
    }
    if c.ecs_node_price_per_hour.len() > MAX_PRICED_TYPES {
        v.err(
            "spec.cost.ecsNodePricePerHour",
            format!(
                "must price at most {MAX_PRICED_TYPES} instance types, got {}",
                c.ecs_node_price_per_hour.len()
            ),
        );
    }
    for (t, price) in &c.ecs_node_price_per_hour {
        v.price(
            &format!("spec.cost.ecsNodePricePerHour[{t}]"),
            *price,
            MAX_NODE_PRICE_PER_HOUR,
        );
    }
    v.price(
        "spec.cost.ecsDefaultNodePricePerHour",
        c.ecs_default_node_price_per_hour,
        MAX_NODE_PRICE_PER_HOUR,
    );
    v.price(
        "spec.cost.eciVcpuPricePerSecond",
        c.eci_vcpu_price_per_second,
        MAX_ECI_PRICE_PER_SECOND,
    );
    v.price(
        "spec.cost.eciGibPricePerSecond",
        c.eci_gib_price_per_second,
        MAX_ECI_PRICE_PER_SECOND,
    );
    v.errors
}

#[derive(Default)]
struct Validator {
    errors: Vec<FieldError>,
}

impl Validator {
    fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError::new(path, message));
    }

    fn price(&mut self, path: &str, x: f64, max: f64) {
        if !(x.is_finite() && (0.0..=max).contains(&x)) {
            self.err(
                path,
                format!("must be a price of 0 or more (and at most {max:e}), got {x}"),
            );
        }
    }

    fn weights(&mut self, path: &str, w: PoolWeights) {
        for (pool, x) in [("ecs", w.ecs), ("eci", w.eci)] {
            if !(1..=100).contains(&x) {
                self.err(
                    format!("{path}.{pool}"),
                    format!("must be within 1..100 (the API's range), got {x}"),
                );
            }
        }
    }

    fn rules(&mut self, path: &str, r: &ScalingRules) {
        if let Some(w) = r
            .stabilization_window_seconds
            .filter(|w| !(0..=3600).contains(w))
        {
            self.err(
                format!("{path}.stabilizationWindowSeconds"),
                format!("must be within 0..3600, got {w}"),
            );
        }
        if let Some(policies) = &r.policies {
            if policies.is_empty() {
                self.err(
                    format!("{path}.policies"),
                    "must list at least one policy (or be left out)",
                );
            }
            for (i, p) in policies.iter().enumerate() {
                if !(1..=MAX_RATE_VALUE).contains(&p.value) {
                    self.err(
                        format!("{path}.policies[{i}].value"),
                        format!("must be within 1..{MAX_RATE_VALUE}, got {}", p.value),
                    );
                }
                if !(1..=1800).contains(&p.period_seconds) {
                    self.err(
                        format!("{path}.policies[{i}].periodSeconds"),
                        format!("must be within 1..1800, got {}", p.period_seconds),
                    );
                }
            }
        }
    }

    fn behavior(&mut self, b: &Behavior) {
        self.rules("spec.behavior.scaleUp", &b.scale_up);
        self.rules("spec.behavior.scaleDown", &b.scale_down);
        if !(b.tolerance.is_finite() && (0.0..1.0).contains(&b.tolerance)) {
            self.err(
                "spec.behavior.tolerance",
                format!("must be within 0 and 1, got {}", b.tolerance),
            );
        }
        for (path, t) in [
            ("spec.behavior.scaleUp.tolerance", b.scale_up.tolerance),
            ("spec.behavior.scaleDown.tolerance", b.scale_down.tolerance),
        ] {
            if let Some(t) = t.filter(|t| !(t.is_finite() && *t >= 0.0)) {
                self.err(path, format!("must be 0 or more, got {t}"));
            }
        }
        let l = &b.lead_time;
        if !(0..=900).contains(&l.seconds) {
            self.err(
                "spec.behavior.leadTime.seconds",
                format!("must be within 0..900, got {}", l.seconds),
            );
        }
        if l.seconds > 0 && !(10..=3600).contains(&l.window_seconds) {
            self.err(
                "spec.behavior.leadTime.windowSeconds",
                format!("must be within 10..3600, got {}", l.window_seconds),
            );
        }
        if !(l.max_growth.is_finite() && l.max_growth >= 1.0) {
            self.err(
                "spec.behavior.leadTime.maxGrowth",
                format!("must be 1 or more, got {}", l.max_growth),
            );
        }
    }
}

/// RFC 1123 label, as namespace names require.
fn is_dns_label(s: &str) -> bool {
    s.len() <= 63 && !s.contains('.') && is_dns_subdomain(s)
}

/// RFC 1123 subdomain, as object names require.
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
apiVersion: spillway.io/v1alpha1
kind: ElasticGateway
metadata: {name: ingressgateway, namespace: istio-system}
spec:
  target: {kind: IstioGateway, name: ingressgateway}
  maxReplicas: 30
  metrics:
  - preset: RequestRate
    targetPerReplica: 800
"#;

    fn paths(text: &str) -> Vec<String> {
        parse_policy(text)
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.path)
            .collect()
    }

    /// Issue 30: `.nan` and `.inf` were reported at "(document)"; they are the field's error.
    #[test]
    fn non_finite_numbers_are_the_fields_error() {
        let text = GOOD.replace("targetPerReplica: 800", "targetPerReplica: .nan");
        let e = parse_policy(&text).unwrap_err();
        assert_eq!(e[0].path, "spec.metrics[0].targetPerReplica");
        assert_eq!(e[0].message, "must be a finite number, not .nan");
        let text = GOOD.replace("maxReplicas: 30", "maxReplicas: -.inf");
        let e = parse_policy(&text).unwrap_err();
        assert_eq!(e[0].path, "spec.maxReplicas");
        assert!(e[0].message.contains("not -.inf"), "{e:?}");
    }

    #[test]
    fn scenario_policy_is_valid() {
        let egw = parse_policy(GOOD).unwrap();
        assert_eq!(egw.spec.max_replicas, 30);
        assert_eq!(egw.metadata.namespace.as_deref(), Some("istio-system"));
    }

    #[test]
    fn every_semantic_error_is_named() {
        let bad = r#"
apiVersion: spillway.io/v1alpha1
kind: ElasticGateway
metadata: {name: gw}
spec:
  target: {name: ""}
  minReplicas: 5
  maxReplicas: 2
  metrics:
  - query: "sum(rate(foo[1m]"
    targetPerReplica: 0
  - query: "  "
    targetPerReplica: 10
  placement:
    normalWeights: {ecs: 120, eci: 0}
  behavior:
    scaleUp:
      policies: [{type: Pods, value: 0, periodSeconds: 15}]
    scaleDown:
      tolerance: -0.1
    ecsHoldSeconds: -5
  eci:
    relativeCapacity: 0.05
  cost:
    eciVcpuPricePerSecond: -1
"#;
        let got = paths(bad);
        for want in [
            "spec.target.name",
            "spec.maxReplicas",
            "spec.metrics[0].query",
            "spec.metrics[0].targetPerReplica",
            "spec.metrics[1].query",
            "spec.placement.normalWeights.ecs",
            "spec.placement.normalWeights.eci",
            "spec.behavior.scaleUp.policies[0].value",
            "spec.behavior.scaleDown.tolerance",
            "spec.behavior.ecsHoldSeconds",
            "spec.eci.relativeCapacity",
            "spec.cost.eciVcpuPricePerSecond",
        ] {
            assert!(got.iter().any(|p| p == want), "missing {want} in {got:?}");
        }
    }

    #[test]
    fn type_errors_and_typos_name_the_field() {
        let wrong_type = GOOD.replace("maxReplicas: 30", "maxReplicas: thirty");
        assert_eq!(paths(&wrong_type), vec!["spec.maxReplicas"]);
        let typo = GOOD.replace("maxReplicas: 30", "maxReplicas: 30\n  maxReplica: 3");
        assert_eq!(paths(&typo), vec!["spec.maxReplica"]);
        let bad_enum = GOOD.replace("preset: RequestRate", "preset: Rps");
        assert_eq!(paths(&bad_enum), vec!["spec.metrics[0].preset"]);
        let wrong_kind = GOOD.replace("kind: ElasticGateway", "kind: Deployment");
        assert!(paths(&wrong_kind).contains(&"kind".to_string()));
        assert_eq!(paths("a: [1, 2"), vec!["(document)"]);
    }

    #[test]
    fn limits_keep_arithmetic_and_costs_finite() {
        let huge_rate = GOOD.replace(
            "maxReplicas: 30",
            "maxReplicas: 30\n  behavior:\n    scaleUp:\n      policies: [{type: Pods, value: 2147483647, periodSeconds: 15}]",
        );
        assert_eq!(
            paths(&huge_rate),
            vec!["spec.behavior.scaleUp.policies[0].value"]
        );
        let huge_max = GOOD.replace("maxReplicas: 30", "maxReplicas: 2147483647");
        assert_eq!(paths(&huge_max), vec!["spec.maxReplicas"]);
        let price = GOOD.replace(
            "maxReplicas: 30",
            "maxReplicas: 30\n  cost: {eciVcpuPricePerSecond: 1e308, ecsDefaultNodePricePerHour: 2e6}",
        );
        assert_eq!(
            paths(&price),
            vec![
                "spec.cost.ecsDefaultNodePricePerHour",
                "spec.cost.eciVcpuPricePerSecond"
            ]
        );
    }

    #[test]
    fn queries_must_return_an_instant_value_and_stay_short() {
        assert!(check_query("sum(rate(x[1m]))").is_ok());
        assert!(check_query("vector(1)").is_ok());
        assert!(check_query("1").is_ok());
        assert!(check_query("x[5m]").unwrap_err().contains("range"));
        assert!(check_query("\"text\"").unwrap_err().contains("string"));
        let long = format!("sum({})", "x + ".repeat(2000) + "x");
        assert!(check_query(&long).unwrap_err().contains("at most"));
        let range = GOOD.replace("preset: RequestRate", "query: 'rate(x[1m])[5m:]'");
        assert_eq!(paths(&range), vec!["spec.metrics[0].query"]);
    }

    #[test]
    fn a_bad_namespace_is_blamed_on_the_namespace() {
        let bad = GOOD.replace("namespace: istio-system", "namespace: 'Istio\"System'");
        assert_eq!(paths(&bad), vec!["metadata.namespace"]);
    }

    #[test]
    fn several_documents_are_checked_one_by_one() {
        let two = format!(
            "{GOOD}---\n{}",
            GOOD.replace("maxReplicas: 30", "maxReplicas: 0")
        );
        let docs = parse_policies(&two).unwrap();
        assert_eq!(docs.len(), 2);
        assert!(docs[0].is_ok() && docs[1].is_err());
        let err = parse_policy(&two).unwrap_err();
        assert!(err[0].message.contains("2 YAML documents"), "{err:?}");
    }

    #[test]
    fn dns_names() {
        assert!(is_dns_subdomain("istio-ingressgateway"));
        assert!(!is_dns_subdomain("Istio"));
        assert!(!is_dns_subdomain("-a"));
    }
}
