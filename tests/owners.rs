//! One owner of each gateway's replica count, and an answer for every ElasticGateway, on the
//! real control plane: another writer of `spec.replicas` is named and left alone, two policies
//! on one workload are both held, and a workload spillway may not change is named with the RBAC
//! rule to add, and its policy can still be deleted.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::json;
use support::live::{
    agent, bed, condition, egw_resource, event_reasons, policy, status, wait_for, workdir,
};
use support::prom::{LoadExporter, Prom};

fn egws(tb: &support::testbed::Testbed) -> Api<DynamicObject> {
    Api::namespaced_with(tb.client.clone(), "istio-system", &egw_resource())
}

/// The condition `kind` of the ElasticGateway `name`.
async fn condition_of(
    tb: &support::testbed::Testbed,
    name: &str,
    kind: &str,
) -> Option<serde_json::Value> {
    let o = egws(tb).get_opt(name).await.ok().flatten()?;
    let v = serde_json::to_value(o).unwrap();
    v["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind).cloned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_writer_of_the_count_is_named_and_left_alone() {
    let dir = workdir("owners-writer");
    let load = LoadExporter::start(2000.0);
    let prom = Prom::start(dir.path(), &[load.port]);
    let tb = bed(dir.path(), policy()).await;
    let a = agent(&tb, dir.path(), &prom.url(), "agent-a", false, &[]).await;
    wait_for("the first status", 60, || async {
        status(&tb).await["phase"] == "Normal"
    })
    .await;
    // A second writer: a loop that sets the count every 3 s through the scale subresource, as a
    // CronHPA or a script would.
    let deployments: Api<Deployment> = Api::namespaced(tb.client.clone(), "istio-system");
    let writer = {
        let deployments = deployments.clone();
        tokio::spawn(async move {
            let pp = PatchParams {
                field_manager: Some("cron-scaler".into()),
                ..PatchParams::default()
            };
            for i in 0u32.. {
                let replicas = 5 + i % 2;
                let patch = json!({"spec": {"replicas": replicas}});
                let _ = deployments
                    .patch_scale("istio-ingressgateway", &pp, &Patch::Merge(&patch))
                    .await;
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
        })
    };
    let first_write = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let managed = deployments
        .get("istio-ingressgateway")
        .await
        .unwrap()
        .metadata
        .managed_fields;
    eprintln!(
        "managedFields: {}",
        serde_json::to_string(&managed).unwrap()
    );
    wait_for("the other writer named", 30, || async {
        condition(&tb, "ReplicasContested").await.is_some_and(|c| {
            c["status"] == "True" && c["message"].as_str().unwrap().contains("cron-scaler")
        })
    })
    .await;
    let detected = first_write.elapsed();
    // The load now asks for 12: spillway decides so, and writes no count while the other writes.
    load.set(6000.0);
    let spillway_scales = || {
        a.writes()
            .into_iter()
            .filter(|w| {
                w.method == "PATCH" && w.path.contains("/scale") && w.at > first_write + detected
            })
            .count()
    };
    wait_for("the decision sees 12", 30, || async {
        status(&tb).await["desiredReplicas"] == 12
    })
    .await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    writer.abort();
    assert_eq!(
        spillway_scales(),
        0,
        "spillway wrote the count while another writer did"
    );
    let replicas = deployments
        .get("istio-ingressgateway")
        .await
        .unwrap()
        .spec
        .replicas;
    assert!(matches!(replicas, Some(5 | 6)), "{replicas:?}");
    assert!(event_reasons(&tb).await.iter().any(|r| r == "OtherWriter"));
    eprintln!(
        "owners: another writer named {:.1} s after its first write (interval 1 s); 0 scale writes by spillway after",
        detected.as_secs_f64()
    );
    // Two decision periods, and the time the status write takes to show.
    assert!(
        detected <= Duration::from_secs(4),
        "detected after {detected:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_policies_on_one_workload_are_both_held() {
    let dir = workdir("owners-shared");
    let load = LoadExporter::start(2000.0);
    let prom = Prom::start(dir.path(), &[load.port]);
    let tb = bed(dir.path(), policy()).await;
    let _a = agent(&tb, dir.path(), &prom.url(), "agent-a", false, &[]).await;
    wait_for("the first status", 60, || async {
        status(&tb).await["phase"] == "Normal"
    })
    .await;
    let mut second = policy();
    second["metadata"]["name"] = json!("ingressgateway-2");
    egws(&tb)
        .create(
            &PostParams::default(),
            &serde_json::from_value(second).unwrap(),
        )
        .await
        .unwrap();
    for name in ["ingressgateway", "ingressgateway-2"] {
        wait_for(&format!("{name} held"), 30, || async {
            condition_of(&tb, name, "Ready")
                .await
                .is_some_and(|c| c["reason"] == "TargetShared")
        })
        .await;
    }
    let msg = condition_of(&tb, "ingressgateway", "Ready").await.unwrap()["message"].clone();
    assert!(msg.as_str().unwrap().contains("ingressgateway-2"), "{msg}");
    // One goes: the other decides again.
    egws(&tb)
        .delete("ingressgateway-2", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("the remaining one decides again", 30, || async {
        condition_of(&tb, "ingressgateway", "Ready")
            .await
            .is_some_and(|c| c["status"] == "True")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_spillway_may_not_change_is_named_and_its_policy_deletes() {
    let dir = workdir("owners-forbidden");
    let load = LoadExporter::start(6000.0);
    let prom = Prom::start(dir.path(), &[load.port]);
    let tb = bed(dir.path(), policy()).await;
    // A gateway whose name is not in deploy/'s Role, and a policy for it.
    let deployments: Api<Deployment> = Api::namespaced(tb.client.clone(), "istio-system");
    let mut other: serde_json::Value = serde_json::to_value(tb.gateway().await).unwrap();
    other["metadata"] = json!({"name": "other-gateway", "namespace": "istio-system"});
    other["spec"]["replicas"] = json!(2);
    other.as_object_mut().unwrap().remove("status");
    deployments
        .create(
            &PostParams::default(),
            &serde_json::from_value(other).unwrap(),
        )
        .await
        .unwrap();
    let mut p = policy();
    p["metadata"]["name"] = json!("other");
    p["spec"]["target"]["name"] = json!("other-gateway");
    p["spec"]["target"]["podSelector"] = json!({"app": "no-such-pods"});
    egws(&tb)
        .create(&PostParams::default(), &serde_json::from_value(p).unwrap())
        .await
        .unwrap();
    let _a = agent(&tb, dir.path(), &prom.url(), "agent-a", false, &[]).await;
    let asked = Instant::now();
    wait_for("the refused write names the rule to add", 30, || async {
        condition_of(&tb, "other", "Applied")
            .await
            .is_some_and(|c| {
                let m = c["message"].as_str().unwrap_or_default();
                c["status"] == "False" && m.contains("resourceNames") && m.contains("other-gateway")
            })
    })
    .await;
    let named = asked.elapsed();
    let deleting = Instant::now();
    egws(&tb)
        .delete("other", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("the policy deleted", 120, || async {
        egws(&tb).get_opt("other").await.unwrap().is_none()
    })
    .await;
    eprintln!(
        "owners: the forbidden workload named {:.1} s after the agent started; its policy deleted in {:.1} s",
        named.as_secs_f64(),
        deleting.elapsed().as_secs_f64()
    );
    assert!(deleting.elapsed() <= Duration::from_secs(120));
}
