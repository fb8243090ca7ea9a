//! Hand-over and hand-back with the real `spillway run` binary on the test bed's real control
//! plane (`deploy/`'s RBAC and ServiceAccount token, server-side apply, the real Deployment and
//! ReplicaSet controllers): SIGTERM releases the Lease and the standby takes over within its
//! retry period; a restart reads the conditions back from status (same `lastTransitionTime`, no
//! second Event) and a steady gateway's status is not rewritten; deleting the ElasticGateway
//! restores the preferred terms spillway found and removes its deletion costs before the object
//! goes.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use serde_json::{Value, json};
use spillway::model::POD_DELETION_COST;
use support::live::{
    Agent, agent, bed, condition, egw, lease_holder, policy, terminate, wait_for, workdir,
};
use support::prom::{LoadExporter, Prom, http_get, try_http_get};
use support::testbed::Testbed;

/// The agent's flags here: a Lease that would take 15 s to expire, looked at every 0.5 s.
const LEASE: [&str; 4] = ["--lease-duration", "15s", "--lease-retry-period", "500ms"];

/// The status writes this agent sent.
fn status_writes(a: &Agent) -> usize {
    a.proxy.with(|st| {
        st.log
            .iter()
            .filter(|l| {
                l.method == "PATCH" && l.path.contains("/elasticgateways/ingressgateway/status")
            })
            .count()
    })
}

fn egw_resource() -> ApiResource {
    ApiResource {
        group: "spillway.io".into(),
        version: "v1alpha1".into(),
        api_version: "spillway.io/v1alpha1".into(),
        kind: "ElasticGateway".into(),
        plural: "elasticgateways".into(),
    }
}

/// The ElasticGateway, or `None` once it is gone.
async fn egw_opt(tb: &Testbed) -> Option<Value> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(tb.client.clone(), "istio-system", &egw_resource());
    api.get_opt("ingressgateway")
        .await
        .unwrap()
        .map(|o| serde_json::to_value(o).unwrap())
}

/// The Events in istio-system with `reason` (events.k8s.io/v1, as the agent writes them).
async fn events(tb: &Testbed, reason: &str) -> Vec<Event> {
    let api: Api<Event> = Api::namespaced(tb.client.clone(), "istio-system");
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect()
}

async fn preferred_terms(tb: &Testbed) -> Value {
    serde_json::to_value(tb.gateway().await).unwrap()["spec"]["template"]["spec"]["affinity"]
        ["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_the_lease_over_within_the_retry_period() {
    let dir = workdir("handover-sigterm");
    let load = LoadExporter::start(2000.0);
    let prom = Prom::start(dir.path(), &[load.port]);
    let tb = bed(dir.path(), policy()).await;
    let mut a = agent(&tb, dir.path(), &prom.url(), "agent-a", true, &LEASE).await;
    wait_for("agent-a leads", 60, || async {
        lease_holder(&tb).await.as_deref() == Some("agent-a")
    })
    .await;
    let b = agent(&tb, dir.path(), &prom.url(), "agent-b", true, &LEASE).await;
    wait_for("agent-b decides as a standby", 30, || async {
        try_http_get(b.admin, "/metrics").is_some_and(|(_, m)| m.contains("spillway_leader 0"))
    })
    .await;

    let stopped_at = Instant::now();
    let exit = terminate(&mut a);
    let stopped = stopped_at.elapsed();
    assert!(exit.success(), "agent-a exited with {exit:?}");
    wait_for("agent-b takes the released Lease", 10, || async {
        lease_holder(&tb).await.as_deref() == Some("agent-b")
    })
    .await;
    let takeover = stopped_at.elapsed();
    eprintln!("SIGTERM → agent-a exited in {stopped:?}; agent-b held the Lease after {takeover:?}");
    // A Lease left to expire would take 15 s; a released one takes a retry period (0.5 s) plus
    // the acquisition.
    assert!(
        takeover < Duration::from_secs(5),
        "takeover took {takeover:?}: the Lease was not released"
    );
    load.set(5000.0);
    wait_for("the new leader acts", 40, || async {
        tb.replicas().await == 10
    })
    .await;
    assert!(
        http_get(b.admin, "/metrics")
            .1
            .contains("spillway_leader 1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_conditions_and_sends_no_event_twice() {
    let dir = workdir("handover-restart");
    let load = LoadExporter::start(2000.0);
    let mut prom = Prom::start(dir.path(), &[load.port]);
    let tb = bed(dir.path(), policy()).await;
    let mut first = agent(&tb, dir.path(), &prom.url(), "agent-a", false, &[]).await;
    wait_for("the first status with the load", 60, || async {
        condition(&tb, "Ready")
            .await
            .is_some_and(|c| c["status"] == "True")
            && condition(&tb, "MetricsAvailable")
                .await
                .is_some_and(|c| c["status"] == "True")
    })
    .await;
    let ready = condition(&tb, "Ready").await.unwrap();
    assert_eq!(ready["observedGeneration"], 1);
    assert!(
        !ready["message"].as_str().unwrap().contains("rps"),
        "no live values in Ready: {ready}"
    );

    // A steady gateway: no status writes at all.
    let decided = first.decisions();
    wait_for("three more decisions", 30, || async {
        first.decisions() >= decided + 3.0
    })
    .await;
    let before = (status_writes(&first), egw(&tb).await["status"].clone());
    let decided = first.decisions();
    wait_for("three more decisions", 30, || async {
        first.decisions() >= decided + 3.0
    })
    .await;
    let after = (status_writes(&first), egw(&tb).await["status"].clone());
    assert_eq!(
        after.0, before.0,
        "a steady gateway's status was rewritten:\n{}\n{}",
        before.1, after.1
    );

    // Prometheus goes: one Warning, one transition.
    prom.stop();
    wait_for("MetricsAvailable False", 30, || async {
        condition(&tb, "MetricsAvailable")
            .await
            .is_some_and(|c| c["status"] == "False")
    })
    .await;
    let failed = condition(&tb, "MetricsAvailable").await.unwrap();
    wait_for("the QueryFailed Event", 10, || async {
        !events(&tb, "QueryFailed").await.is_empty()
    })
    .await;
    assert_eq!(events(&tb, "QueryFailed").await.len(), 1);

    // Restart: the new process reads the conditions back.
    assert!(terminate(&mut first).success());
    let second = agent(&tb, dir.path(), &prom.url(), "agent-a", false, &[]).await;
    wait_for("the restarted agent decides three times", 30, || async {
        second.decisions() >= 3.0
    })
    .await;
    let again = condition(&tb, "MetricsAvailable").await.unwrap();
    assert_eq!(again["status"], "False");
    assert_eq!(
        again["lastTransitionTime"], failed["lastTransitionTime"],
        "the restart reset lastTransitionTime"
    );
    assert_eq!(
        events(&tb, "QueryFailed").await.len(),
        1,
        "the restart sent the Warning again"
    );
    // And a real transition is still one.
    prom.resume();
    wait_for("MetricsAvailable True", 30, || async {
        condition(&tb, "MetricsAvailable")
            .await
            .is_some_and(|c| c["status"] == "True")
    })
    .await;
    assert_ne!(
        condition(&tb, "MetricsAvailable").await.unwrap()["lastTransitionTime"],
        Value::Null
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_policy_hands_the_gateway_back() {
    let dir = workdir("handover-delete");
    let load = LoadExporter::start(2000.0);
    let prom = Prom::start(dir.path(), &[load.port]);
    let mut policy = policy();
    // Weights other than the gateway's 80/20, so that spillway changes them at once.
    policy["spec"]["placement"] = json!({"normalWeights": {"ecs": 90, "eci": 10}, "exhaustedWeights": {"ecs": 90, "eci": 10}});
    let tb = bed(dir.path(), policy).await;
    let found = preferred_terms(&tb).await;
    assert_eq!(found[0]["weight"], 80);
    let agent = agent(&tb, dir.path(), &prom.url(), "agent-a", false, &[]).await;
    wait_for("spillway's weights applied", 60, || async {
        preferred_terms(&tb).await[0]["weight"] == 90
    })
    .await;
    load.set(5000.0);
    wait_for("scaled, with deletion costs", 60, || async {
        tb.replicas().await == 10 && !events(&tb, "DeletionCostsSet").await.is_empty()
    })
    .await;
    // Pods carry spillway's deletion costs (new pods of the weights' rollout get theirs on a
    // later decision; all that matters here is that there are costs to remove).
    wait_for("annotated gateway pods", 60, || async {
        tb.gateway_pods()
            .await
            .iter()
            .any(|p| p.annotations.contains_key(POD_DELETION_COST))
    })
    .await;
    let e = egw(&tb).await;
    assert_eq!(
        e["metadata"]["finalizers"],
        json!(["spillway.io/restore-gateway"])
    );
    assert_eq!(
        e["status"]["original"]["preferredTerms"], found,
        "status.original records the terms spillway found"
    );

    // `kubectl delete egw`: the apiserver marks it and waits for the finalizer.
    let marked = agent.proxy.with(|st| st.log.len());
    tb.kubectl_ok(
        &[
            "-n",
            "istio-system",
            "delete",
            "elasticgateway",
            "ingressgateway",
            "--wait=false",
        ],
        None,
    );
    wait_for("the ElasticGateway is gone", 60, || async {
        egw_opt(&tb).await.is_none()
    })
    .await;
    assert_eq!(
        preferred_terms(&tb).await,
        found,
        "the original terms are back"
    );
    let handed = events(&tb, "HandedBack").await;
    assert_eq!(handed.len(), 1, "{handed:?}");
    // Published once: a second hand-back (a Cleanup of the cache's stale copy) would make it a
    // series, its note still the first one's.
    assert!(handed[0].series.is_none(), "handed back twice: {handed:?}");
    let note = handed[0].note.clone().unwrap_or_default();
    assert!(
        note.contains("restored the 2 preferred affinity term(s)"),
        "{note}"
    );
    // Restoring the terms starts a rollout, so some old pods may already be going when the
    // costs are cleared: every pod that is not being deleted has lost its cost, by one patch
    // each, as many as the note says.
    let cleared: usize = note
        .split("removed pod-deletion-cost from ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{note}"));
    assert!(cleared > 0, "{note}");
    // Counted from the hand-back's first write, the restored terms (the last write to the
    // Deployment): decisions still running when the delete was marked may set costs on the
    // rollout's new pods before the agent sees the deletion.
    let pod_patches = agent.proxy.with(|st| {
        let log = &st.log[marked..];
        let restore = log
            .iter()
            .rposition(|l| {
                l.method == "PATCH"
                    && l.path.contains("/deployments/istio-ingressgateway")
                    && l.status < 300
            })
            .unwrap_or(0);
        log[restore..]
            .iter()
            .filter(|l| l.method == "PATCH" && l.path.contains("/pods/") && l.status < 300)
            .count()
    });
    // (A pod the rollout removed meanwhile answers 404 and needs no clearing.)
    assert_eq!(pod_patches, cleared, "{note}");
    let pods: Api<Pod> = Api::namespaced(tb.client.clone(), "istio-system");
    let kept: Vec<String> = pods
        .list(&ListParams::default().labels("app=istio-ingressgateway"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.metadata
                    .annotations
                    .as_ref()
                    .is_some_and(|a| a.contains_key(POD_DELETION_COST))
        })
        .filter_map(|p| p.metadata.name)
        .collect();
    assert!(
        kept.is_empty(),
        "pods still carrying a deletion cost: {kept:?}"
    );
    // The replica count stays where spillway left it.
    assert_eq!(tb.replicas().await, 10);
}
