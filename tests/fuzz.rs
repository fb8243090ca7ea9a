//! Fuzzing the parsers at the edge (proptest; cargo-fuzz needs a nightly toolchain): the
//! ElasticGateway and scenario parsers, PromQL validation and the Prometheus answer decoder
//! must never panic and must answer each input within a bound, whatever the input. Every
//! policy the validator accepts must also run through the engine without overflow (debug
//! builds check arithmetic).
//!
//! Short by default (a few hundred cases per target); for a long run:
//! `PROPTEST_CASES=100000 cargo test --release --test fuzz`.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use proptest::prelude::*;
use serde_json::{Value, json};

use spillway::engine::{self, EngineState, Observation};
use spillway::model::LoadSample;
use spillway::model::Resources;
use spillway::policy::{ElasticGateway, check_query, parse_policies, parse_policy};
use spillway::prom::decode;
use spillway::sim::Scenario;

/// Generous: a bound on the time per input, not a speed target (the other core may be busy).
const BOUND: Duration = Duration::from_secs(5);

fn bounded<T>(what: &str, input: &str, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = f();
    let took = started.elapsed();
    assert!(
        took < BOUND,
        "{what} took {took:?} on a {}-byte input",
        input.len()
    );
    out
}

fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Any JSON value, numbers at their extremes included.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        prop_oneof![
            Just(i32::MAX as i64),
            Just(i32::MIN as i64),
            Just(0i64),
            Just(-1i64),
            Just(1i64)
        ]
        .prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("JSON holds finite numbers", |x| x.is_finite())
            .prop_map(|x| json!(x)),
        prop_oneof![Just(1e308), Just(-1e308), Just(5e-324), Just(1e15)].prop_map(|x| json!(x)),
        ".{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z]{1,12}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Paths of the ElasticGateway's fields, where a fuzzed value goes.
const POLICY_PATHS: &[&str] = &[
    "/metadata/name",
    "/metadata/namespace",
    "/spec/target/name",
    "/spec/target/kind",
    "/spec/minReplicas",
    "/spec/maxReplicas",
    "/spec/eci/maxReplicas",
    "/spec/eci/maxCostPerHour",
    "/spec/metrics/0/query",
    "/spec/metrics/0/targetPerReplica",
    "/spec/metrics/0/preset",
    "/spec/placement/normalWeights/ecs",
    "/spec/placement/exhaustedWeights/eci",
    "/spec/placement/ecsHeadroomPods",
    "/spec/placement/minWeightChangeIntervalSeconds",
    "/spec/behavior/scaleUp/policies/0/value",
    "/spec/behavior/scaleUp/policies/0/periodSeconds",
    "/spec/behavior/scaleUp/stabilizationWindowSeconds",
    "/spec/behavior/scaleDown/policies/0/value",
    "/spec/behavior/scaleDown/policies/0/type",
    "/spec/behavior/tolerance",
    "/spec/behavior/leadTime/seconds",
    "/spec/behavior/leadTime/maxGrowth",
    "/spec/cost/ecsDefaultNodePricePerHour",
    "/spec/cost/eciVcpuPricePerSecond",
    "/spec/cost/eciGibPricePerSecond",
    "/spec/eci/relativeCapacity",
    "/spec/metrics/0/preset",
];

fn base_policy() -> Value {
    json!({
        "apiVersion": "spillway.io/v1alpha1", "kind": "ElasticGateway",
        "metadata": {"name": "gw", "namespace": "istio-system"},
        "spec": {
            "target": {"kind": "Deployment", "name": "istio-ingressgateway"},
            "minReplicas": 2, "maxReplicas": 40,
            "metrics": [{"query": "sum(rate(x[1m]))", "targetPerReplica": 500.0}],
            "behavior": {
                "scaleUp": {"policies": [{"type": "Pods", "value": 4, "periodSeconds": 15}]},
                "scaleDown": {"policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]}
            }
        }
    })
}

fn set(v: &mut Value, path: &str, x: Value) {
    if let Some(slot) = v.pointer_mut(path) {
        *slot = x;
        return;
    }
    let (parent, key) = path.rsplit_once('/').unwrap();
    if let Some(Value::Object(m)) = v.pointer_mut(parent) {
        m.insert(key.to_string(), x);
    }
}

/// Runs the engine on a policy the validator accepted: nothing may overflow or panic.
fn decide_once(egw: &ElasticGateway, current: i32, load: f64, now: f64) {
    let loads = vec![LoadSample::Total(load); egw.spec.metrics.len()];
    let mut state = EngineState::default();
    for step in 0..3 {
        let obs = Observation {
            now: now + f64::from(step) * 15.0,
            loads: &loads,
            fast: None,
            spec_replicas: current,
            pod_requests: Resources::pod(1000, 1 << 30),
            weights: None,
            rollout_in_progress: false,
            pods: &[],
            nodes: &[],
            ecs_claimed_elsewhere: 0,
            spread_missing: false,
            // Each pool's usage as hostile as the load: learnt from, it must not overflow.
            planned: &[],
            pool_usage: Some(engine::capacity::PoolUsage {
                ecs: engine::capacity::Usage {
                    pods: current,
                    rps: load,
                    cpu: 1.0,
                },
                eci: engine::capacity::Usage {
                    pods: current,
                    rps: load,
                    cpu: load,
                },
            }),
        };
        state = engine::decide(&egw.spec, &obs, &state).state;
    }
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn policy_parsing_never_panics_on_text(text in "\\PC{0,400}") {
        bounded("parse_policy", &text, || { let _ = parse_policy(&text); });
        bounded("parse_policies", &text, || { let _ = parse_policies(&text); });
    }

    #[test]
    fn accepted_policies_run_through_the_engine(
        fields in prop::collection::vec((prop::sample::select(POLICY_PATHS), any_json()), 1..4),
        current in prop_oneof![Just(0), Just(1), Just(i32::MAX), 0..20_000i32],
        load in prop_oneof![Just(0.0), Just(1e300), Just(f64::MAX), 0.0..1e9f64],
        yaml in any::<bool>(),
    ) {
        let mut v = base_policy();
        for (path, x) in fields {
            set(&mut v, path, x);
        }
        let text = if yaml { serde_saphyr::to_string(&v).unwrap() } else { v.to_string() };
        let parsed = bounded("parse_policy", &text, || parse_policy(&text));
        if let Ok(egw) = parsed {
            bounded("engine::decide", &text, || decide_once(&egw, current, load, 1e9));
        }
    }

    #[test]
    fn promql_validation_never_panics(q in "\\PC{0,200}") {
        bounded("check_query", &q, || { let _ = check_query(&q); });
    }

    #[test]
    fn promql_token_soup_never_panics(
        tokens in prop::collection::vec(prop::sample::select(&[
            "sum", "(", ")", "rate", "[", "]", "1m", "5m:", "{", "}", "x", "=~", "\"a\"", ",",
            "by", "without", "+", "*", "/", "offset", "@", "1e309", "-", "vector(1)", "on",
            "group_left", "topk", "histogram_quantile", "0.9", "'", "#", " ",
        ][..]), 0..80),
    ) {
        let q = tokens.concat();
        bounded("check_query", &q, || { let _ = check_query(&q); });
    }

    #[test]
    fn prometheus_answers_never_panic(body in "\\PC{0,300}", status in 100u16..600) {
        bounded("decode", &body, || { let _ = decode(status, &body, 1e9, 60.0); });
    }

    #[test]
    fn structured_prometheus_answers_are_checked(
        series in prop::collection::vec((
            prop_oneof![Just(None), Just(Some(String::new())), "[a-c]{1,2}".prop_map(Some)],
            prop_oneof![
                Just("NaN".to_string()), Just("-1".into()), Just("+Inf".into()),
                Just("1e309".into()), Just("x".into()), (0.0..1e6f64).prop_map(|x| x.to_string()),
            ],
            prop_oneof![Just(1e9), Just(0.0), Just(f64::MAX), (1e9 - 100.0..1e9 + 100.0)],
        ), 0..6),
        kind in prop::sample::select(&["vector", "scalar", "matrix", "string", "other"][..]),
    ) {
        let result: Vec<Value> = series
            .iter()
            .map(|(pod, v, t)| {
                let metric = pod.as_ref().map_or(json!({}), |p| json!({"pod": p}));
                json!({"metric": metric, "value": [t, v]})
            })
            .collect();
        let body = json!({"status": "success", "data": {"resultType": kind, "result": result}}).to_string();
        let got = bounded("decode", &body, || decode(200, &body, 1e9, 60.0));
        match got {
            LoadSample::Total(x) => prop_assert!(x.is_finite() && x >= 0.0),
            LoadSample::PerPod(pods) => {
                let mut names: Vec<&String> = pods.iter().map(|(n, _)| n).collect();
                names.sort();
                names.dedup();
                prop_assert_eq!(names.len(), pods.len(), "a pod twice");
                prop_assert!(pods.iter().all(|(n, x)| !n.is_empty() && x.is_finite() && *x >= 0.0));
            }
            LoadSample::Missing(_) => {}
        }
    }

    #[test]
    fn scenario_parsing_never_panics(text in "\\PC{0,400}") {
        bounded("Scenario::parse", &text, || { let _ = Scenario::parse(&text); });
    }

    #[test]
    fn mutated_scenarios_never_panic(
        path in prop::sample::select(&[
            "/durationSeconds", "/stepSeconds", "/seed", "/staticReplicas", "/policy/maxReplicas",
            "/load", "/cluster", "/latencies", "/controllers/hpaSyncSeconds", "/gateway",
        ][..]),
        x in any_json(),
    ) {
        let mut v = serde_json::to_value(Scenario::default()).unwrap();
        set(&mut v, path, x);
        let text = v.to_string();
        bounded("Scenario::parse", &text, || {
            if let Ok(s) = Scenario::parse(&text) {
                let _ = s.validate();
            }
        });
    }
}

/// The 570 KB query: refused at once (it froze the agent for 11 s).
#[test]
fn a_huge_query_is_refused_quickly() {
    let q = format!("sum({})", "x + ".repeat(140_000) + "x");
    let err = bounded("check_query", &q, || check_query(&q)).unwrap_err();
    assert!(err.contains("at most"), "{err}");
}
