//! Gateways that share ECS nodes, on the real control plane: two gateways in one namespace, one
//! pool of 12 ECS slots (4 nodes × 3), 6 of them free, both bursting at once, each with an ECI
//! cap. Each must plan without the slots the other has just counted on (the shared ledger),
//! reach what its room and cap allow, and never write a lower count while the load holds (issue 26: 4 → 14 and 4 → 15 in
//! the same second for 16 slots, then 26 scale writes in 25 s down to 4 + 6).
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::rbac::v1::Role;
use kube::api::{Api, DynamicObject, PostParams};
use serde_json::{Value, json};
use support::live::{agent, bed, egw_resource, metric_sum, policy, wait_for, workdir};
use support::prom::{LoadExporter, Prom};
use support::testbed::{Testbed, pool_counts};

const B: &str = "gateway-b";
/// Each gateway's ECI cap: with 6 free ECS slots between them, the one that decides first takes
/// them, the other is held to its own ECS pods and the cap (12 and 8, or 10 and 12).
const ECI_CAP: i32 = 6;

/// The policy of the gateway that scrapes its load from the exporter on `port`.
fn policy_for(name: &str, target: &str, port: u16) -> Value {
    let mut p = policy();
    p["metadata"]["name"] = json!(name);
    p["spec"]["target"]["name"] = json!(target);
    p["spec"]["eci"] = json!({"maxReplicas": ECI_CAP});
    p["spec"]["metrics"][0]["query"] = json!(format!(
        "sum(spillway_test_gateway_requests_per_second{{instance=\"127.0.0.1:{port}\"}})"
    ));
    p
}

/// A second gateway Deployment, `app=gateway-b`, with the first one's pod template (same
/// requests, pools and affinity) and 2 replicas; and deploy/'s Role extended to name it, as
/// the Role's comment tells a user with a second gateway to do.
async fn second_gateway(tb: &Testbed) {
    let deployments: Api<Deployment> = Api::namespaced(tb.client.clone(), "istio-system");
    let mut d: Value = serde_json::to_value(tb.gateway().await).unwrap();
    let labels = json!({"app": B});
    d["metadata"] = json!({"name": B, "namespace": "istio-system", "labels": labels});
    d["spec"]["replicas"] = json!(2);
    d["spec"]["selector"] = json!({"matchLabels": labels});
    d["spec"]["template"]["metadata"]["labels"] = labels;
    d.as_object_mut().unwrap().remove("status");
    deployments
        .create(&PostParams::default(), &serde_json::from_value(d).unwrap())
        .await
        .unwrap();
    let roles: Api<Role> = Api::namespaced(tb.client.clone(), "istio-system");
    let mut role = roles.get("spillway-gateway").await.unwrap();
    for rule in role.rules.iter_mut().flatten() {
        if let Some(names) = rule.resource_names.as_mut()
            && names.iter().any(|n| n == "istio-ingressgateway")
        {
            names.push(B.into());
        }
    }
    roles
        .replace("spillway-gateway", &PostParams::default(), &role)
        .await
        .unwrap();
}

async fn replicas(tb: &Testbed, name: &str) -> Option<i32> {
    let deployments: Api<Deployment> = Api::namespaced(tb.client.clone(), "istio-system");
    deployments.get(name).await.ok()?.spec.replicas
}

async fn phase(tb: &Testbed, name: &str) -> Value {
    let api: Api<DynamicObject> =
        Api::namespaced_with(tb.client.clone(), "istio-system", &egw_resource());
    match api.get_opt(name).await.ok().flatten() {
        Some(o) => serde_json::to_value(o).unwrap()["status"]["phase"].clone(),
        None => Value::Null,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_bursting_into_shared_ecs_room_neither_overcommit_nor_collapse() {
    let dir = workdir("neighbours");
    let (load_a, load_b) = (LoadExporter::start(2000.0), LoadExporter::start(1000.0));
    let prom = Prom::start(dir.path(), &[load_a.port, load_b.port]);
    let tb = bed(
        dir.path(),
        policy_for("ingressgateway", "istio-ingressgateway", load_a.port),
    )
    .await;
    second_gateway(&tb).await;
    let api: Api<DynamicObject> =
        Api::namespaced_with(tb.client.clone(), "istio-system", &egw_resource());
    api.create(
        &PostParams::default(),
        &serde_json::from_value(policy_for(B, B, load_b.port)).unwrap(),
    )
    .await
    .unwrap();
    let a = agent(&tb, dir.path(), &prom.url(), "agent-a", false, &[]).await;
    wait_for("both gateways decide at rest (4 and 2)", 60, || async {
        phase(&tb, "ingressgateway").await == "Normal"
            && phase(&tb, B).await == "Normal"
            && replicas(&tb, "istio-ingressgateway").await == Some(4)
            && replicas(&tb, B).await == Some(2)
            && tb.pods_of(B).await.iter().filter(|p| p.ready).count() == 2
    })
    .await;
    let (ecs_a, _) = pool_counts(&tb.gateway_pods().await);
    let (ecs_b, _) = pool_counts(&tb.pods_of(B).await);
    assert_eq!(ecs_a + ecs_b, 6, "at rest both live on ECS (6 of 12 slots)");

    // Both burst at once: each asks for 12, 6 ECS slots are free between them, and each may
    // put 6 on ECI.
    let burst = Instant::now();
    load_a.set(6000.0);
    load_b.set(6000.0);
    let mut seen: Vec<(i32, i32)> = vec![];
    let mut claimed_max: f64 = 0.0;
    let mut changed_at = Instant::now();
    // Sampled until the counts have risen and then held for 15 s (the load holds): nothing may
    // come back down meanwhile.
    loop {
        let now = (
            replicas(&tb, "istio-ingressgateway").await.unwrap_or(0),
            replicas(&tb, B).await.unwrap_or(0),
        );
        if seen.last() != Some(&now) {
            seen.push(now);
            changed_at = Instant::now();
        }
        claimed_max = claimed_max.max(metric_sum(&a, "spillway_ecs_claimed_elsewhere_pods"));
        if now.0 + now.1 >= 20 && changed_at.elapsed() >= Duration::from_secs(15) {
            break;
        }
        assert!(
            burst.elapsed() < Duration::from_secs(90),
            "the counts did not settle at 20 or more within 90 s: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let scale_writes = |name: &str| {
        a.writes()
            .into_iter()
            .filter(|w| {
                w.method == "PATCH"
                    && w.path.contains(&format!("/deployments/{name}/scale"))
                    && w.at > burst
            })
            .count()
    };
    let pods_a = tb.gateway_pods().await;
    let pods_b = tb.pods_of(B).await;
    let ((ecs_a, eci_a), (ecs_b, eci_b)) = (pool_counts(&pods_a), pool_counts(&pods_b));
    eprintln!(
        "neighbours: counts {seen:?}; scale writes {} and {}; ECS {ecs_a} + {ecs_b}, ECI {eci_a} + {eci_b}; most slots seen claimed by the other: {claimed_max}",
        scale_writes("istio-ingressgateway"),
        scale_writes(B)
    );
    // Never a lower count while the load holds: the counts only rise.
    for w in seen.windows(2) {
        assert!(
            w[1].0 >= w[0].0 && w[1].1 >= w[0].1,
            "a count went down under load: {seen:?}"
        );
    }
    assert!(
        scale_writes("istio-ingressgateway") <= 2 && scale_writes(B) <= 2,
        "more than two scale writes each for one step of load: {} and {}",
        scale_writes("istio-ingressgateway"),
        scale_writes(B)
    );
    // Whether the second decision came while the first one's pods were still unplaced (and so
    // planned without the slots claimed) depends on timing; the outcome above must hold either way.
    // Every ECS slot holds a gateway pod, the rest overflowed to ECI, the caps held, and each
    // gateway has what its load asks, as far as its ECS pods and its cap allow.
    let (count_a, count_b) = *seen.last().unwrap();
    assert_eq!(ecs_a + ecs_b, 12, "ECS left with room: {ecs_a} + {ecs_b}");
    assert_eq!(ecs_a + eci_a, count_a as usize);
    assert_eq!(ecs_b + eci_b, count_b as usize);
    assert!(eci_a <= ECI_CAP as usize && eci_b <= ECI_CAP as usize);
    // Within one pod: when the scheduler's spreading sends pods the first gateway counted on ECS
    // to ECI (issue 34), the second may stop one short of its cap for a while (seen once: 12 and
    // 11 with 6 + 6 on ECS).
    for (count, ecs) in [(count_a, ecs_a), (count_b, ecs_b)] {
        let reach = 12.min(ecs + ECI_CAP as usize);
        assert!(
            count as usize + 1 >= reach && count as usize <= reach,
            "{seen:?}"
        );
    }
}
