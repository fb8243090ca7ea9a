//! Planned events (issue 28) with the real `spillway run` binary on the test bed's real control
//! plane (`deploy/`'s CRDs, RBAC and ServiceAccount token): a PlannedEvent raises the gateway a
//! start latency before its window, not at once; its status shows the plan per pool and
//! whether it is at risk; a bad event and one naming no gateway say so; and without the
//! PlannedEvent CRD the gateway is decided on its load alone and says why.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{SystemTime, UNIX_EPOCH};

use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, PostParams};
use serde_json::{Value, json};
use support::live::{agent, bed, condition, metric_sum, policy, status, wait_for, workdir};
use support::prom::{LoadExporter, Prom};
use support::testbed::Testbed;

fn resource() -> ApiResource {
    ApiResource {
        group: "spillway.io".into(),
        version: "v1alpha1".into(),
        api_version: "spillway.io/v1alpha1".into(),
        kind: "PlannedEvent".into(),
        plural: "plannedevents".into(),
    }
}

fn api(tb: &Testbed) -> Api<DynamicObject> {
    Api::namespaced_with(tb.client.clone(), "istio-system", &resource())
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn rfc3339(t: f64) -> String {
    jiff::Timestamp::from_second(t as i64).unwrap().to_string()
}

/// Creates a PlannedEvent in istio-system with `spec`.
async fn plan(tb: &Testbed, name: &str, spec: Value) {
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "spillway.io/v1alpha1", "kind": "PlannedEvent",
        "metadata": {"name": name, "namespace": "istio-system"},
        "spec": spec,
    }))
    .unwrap();
    api(tb).create(&PostParams::default(), &obj).await.unwrap();
}

async fn event_status(tb: &Testbed, name: &str) -> Value {
    serde_json::to_value(api(tb).get(name).await.unwrap()).unwrap()["status"].clone()
}

/// `(status, reason)` of the condition `kind` in `status`.
fn cond(status: &Value, kind: &str) -> Option<(String, String)> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_string(),
                c["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
}

/// The Events on PlannedEvent `name`.
async fn warnings_on(tb: &Testbed, name: &str) -> Vec<String> {
    let events: Api<Event> = Api::namespaced(tb.client.clone(), "istio-system");
    events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                && e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("PlannedEvent")
        })
        .filter_map(|e| e.reason)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planned_event_is_ready_by_its_start_and_not_long_before() {
    let dir = workdir("planned-event");
    // 1,000 rps at 500 per pod: the gateway sits at its minimum, 2.
    let load = LoadExporter::start(1000.0);
    let prom = Prom::start(dir.path(), &[load.port]);
    let tb = bed(dir.path(), policy()).await;
    let a = agent(&tb, dir.path(), &prom.url(), "agent", false, &[]).await;
    wait_for(
        "the agent scales the gateway to its minimum",
        60,
        || async { tb.replicas().await == 2 },
    )
    .await;

    // 6,000 rps in the policy's "rps" unit: 12 pods, a minute and a half from now.
    let planned_at = unix_now();
    let start = planned_at + 90.0;
    plan(
        &tb,
        "sale",
        json!({
            "gateway": "ingressgateway", "metric": "rps", "requestsPerSecond": 6000,
            "start": rfc3339(start), "end": rfc3339(start + 600.0),
        }),
    )
    .await;
    // Beyond maxReplicas (30 pods serve 15,000): planned, and at risk.
    plan(
        &tb,
        "launch",
        json!({
            "gateway": "ingressgateway", "metric": "rps", "requestsPerSecond": 100000,
            "start": "2030-01-01T20:00:00", "end": "2030-01-01T22:00:00",
            "timeZone": "Asia/Shanghai",
        }),
    )
    .await;
    // A time zone that does not exist, and a gateway that does not.
    plan(
        &tb,
        "typo",
        json!({
            "gateway": "ingressgateway", "metric": "rps", "requestsPerSecond": 100,
            "start": "2030-01-01T20:00:00", "end": "2030-01-01T22:00:00",
            "timeZone": "Asia/Shangai",
        }),
    )
    .await;
    plan(
        &tb,
        "elsewhere",
        json!({
            "gateway": "no-such-gateway", "requestsPerSecond": 100,
            "start": "2030-01-01T20:00:00Z", "end": "2030-01-01T22:00:00Z",
        }),
    )
    .await;

    wait_for("the sale's plan on its status", 30, || async {
        event_status(&tb, "sale").await["plan"]["replicas"] == 12
    })
    .await;
    let sale = event_status(&tb, "sale").await;
    eprintln!("sale: {sale:#}");
    assert_eq!(sale["phase"], "Scheduled", "{sale:#}");
    assert_eq!(
        cond(&sale, "EventAtRisk"),
        Some(("False".into(), "OnTrack".into()))
    );
    assert_eq!(cond(&sale, "Accepted").unwrap().0, "True");
    let pools = sale["plan"]["ecs"]["replicas"].as_i64().unwrap()
        + sale["plan"]["eci"]["replicas"].as_i64().unwrap();
    assert_eq!(pools, 12, "{sale:#}");
    assert_eq!(sale["start"], rfc3339(start));
    assert_eq!(tb.replicas().await, 2, "not raised at once");

    wait_for("the launch is at risk", 30, || async {
        cond(&event_status(&tb, "launch").await, "EventAtRisk")
            == Some(("True".into(), "MaxReplicas".into()))
    })
    .await;
    assert_eq!(
        event_status(&tb, "launch").await["start"],
        "2030-01-01T12:00:00Z",
        "20:00 in Shanghai"
    );
    wait_for("a Warning Event on the launch", 30, || async {
        warnings_on(&tb, "launch")
            .await
            .contains(&"MaxReplicas".to_string())
    })
    .await;
    assert_eq!(metric_sum(&a, "spillway_planned_event_at_risk"), 1.0);
    wait_for("the typo is refused by field", 30, || async {
        cond(&event_status(&tb, "typo").await, "Accepted")
            == Some(("False".into(), "InvalidSpec".into()))
    })
    .await;
    let typo = event_status(&tb, "typo").await;
    assert!(
        typo["conditions"][0]["message"]
            .as_str()
            .unwrap()
            .contains("spec.timeZone"),
        "{typo:#}"
    );
    wait_for("the event naming no gateway says so", 30, || async {
        cond(&event_status(&tb, "elsewhere").await, "Accepted")
            == Some(("False".into(), "GatewayNotFound".into()))
    })
    .await;
    assert_eq!(
        condition(&tb, "PlannedEvents")
            .await
            .map(|c| c["reason"].clone()),
        Some(json!("EventAtRisk")),
        "{:#}",
        status(&tb).await
    );

    // Raised a start latency ahead (15 s on ECS, 40 s on ECI by default, plus a decision's
    // gap), not when it was planned, and ready by the start.
    wait_for("the sale raises the gateway", 120, || async {
        tb.replicas().await >= 12
    })
    .await;
    let raised = unix_now();
    eprintln!(
        "raised {:.1} s before the start, {:.1} s after it was planned",
        start - raised,
        raised - planned_at
    );
    assert!(
        start - raised <= 41.0 + 5.0,
        "raised {:.0} s early",
        start - raised
    );
    assert!(
        start - raised >= 10.0,
        "raised {:.0} s late",
        raised - start
    );
    wait_for("12 gateway pods ready", 60, || async {
        tb.gateway_pods().await.iter().filter(|p| p.ready).count() >= 12
    })
    .await;
    assert!(unix_now() < start, "ready after the start");
    let sale = event_status(&tb, "sale").await;
    assert_eq!(sale["phase"], "Raising", "{sale:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_planned_event_crd_the_gateway_decides_on_its_load_and_says_why() {
    let dir = workdir("planned-no-crd");
    let load = LoadExporter::start(3000.0);
    let prom = Prom::start(dir.path(), &[load.port]);
    let tb = bed(dir.path(), policy()).await;
    tb.kubectl_ok(
        &["delete", "crd", "plannedevents.spillway.io", "--wait=true"],
        None,
    );
    let _a = agent(&tb, dir.path(), &prom.url(), "agent", false, &[]).await;
    wait_for("the agent scales on the load", 60, || async {
        tb.replicas().await == 6
    })
    .await;
    wait_for(
        "the gateway says it cannot see planned events",
        30,
        || async {
            condition(&tb, "PlannedEvents")
                .await
                .is_some_and(|c| c["reason"] == "PlannedEventsUnavailable")
        },
    )
    .await;
    let ready = condition(&tb, "Ready").await.unwrap();
    assert_eq!(ready["status"], "True", "{ready:#}");
}
