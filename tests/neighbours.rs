//! Gateways that share ECS nodes, on the real control plane: two, then three gateways in one
//! namespace, one pool of 12 ECS slots (4 nodes × 3), 6 (then 4) of them free, all bursting at
//! once, each with an ECI cap. Each must plan without the slots the others have just counted on
//! (the shared ledger), reach what its room and cap allow, write at most twice, and never write a
//! lower count while the load holds (issue 26: 4 → 14 and 4 → 15 in the same second for 16
//! slots, then 26 scale writes in 25 s down to 4 + 6).
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

/// The gateways (ElasticGateway, Deployment): the scenario's own, then its neighbours.
const GATEWAYS: [(&str, &str); 3] = [
    ("ingressgateway", "istio-ingressgateway"),
    ("gateway-b", "gateway-b"),
    ("gateway-c", "gateway-c"),
];
/// Each gateway's ECI cap: the free ECS slots go to whoever decides first (the ledger's rule),
/// the others are held to their own ECS pods and the cap (with two: 12 and 8, or 10 and 12).
const ECI_CAP: i32 = 6;
/// One test bed at a time: the two tests of this file each run a control plane.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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

/// Another gateway Deployment, `app=<name>`, with the first one's pod template (same
/// requests, pools and affinity) and 2 replicas; and deploy/'s Role extended to name it, as
/// the Role's comment tells a user with a second gateway to do.
async fn another_gateway(tb: &Testbed, name: &str) {
    let deployments: Api<Deployment> = Api::namespaced(tb.client.clone(), "istio-system");
    let mut d: Value = serde_json::to_value(tb.gateway().await).unwrap();
    let labels = json!({"app": name});
    d["metadata"] = json!({"name": name, "namespace": "istio-system", "labels": labels});
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
            names.push(name.into());
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
    let _one = SERIAL.lock().await;
    burst(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gateways_bursting_into_shared_ecs_room_neither_overcommit_nor_collapse() {
    let _one = SERIAL.lock().await;
    burst(3).await;
}

/// `n` gateways at rest (4, 2, 2 replicas on ECS), then each asks for 12 at once.
async fn burst(n: usize) {
    let gateways = &GATEWAYS[..n];
    let dir = workdir(&format!("neighbours-{n}"));
    let loads: Vec<LoadExporter> = (0..n)
        .map(|i| LoadExporter::start(if i == 0 { 2000.0 } else { 1000.0 }))
        .collect();
    let ports: Vec<u16> = loads.iter().map(|l| l.port).collect();
    let prom = Prom::start(dir.path(), &ports);
    let (egw0, deploy0) = gateways[0];
    let tb = bed(dir.path(), policy_for(egw0, deploy0, ports[0])).await;
    let api: Api<DynamicObject> =
        Api::namespaced_with(tb.client.clone(), "istio-system", &egw_resource());
    for (&(egw, deploy), port) in gateways.iter().zip(&ports).skip(1) {
        another_gateway(&tb, deploy).await;
        api.create(
            &PostParams::default(),
            &serde_json::from_value(policy_for(egw, deploy, *port)).unwrap(),
        )
        .await
        .unwrap();
    }
    let a = agent(&tb, dir.path(), &prom.url(), "agent-a", false, &[]).await;
    let at_rest = |i: usize| if i == 0 { 4 } else { 2 };
    wait_for("every gateway decides at rest (4, 2, 2)", 90, || async {
        for (i, &(egw, deploy)) in gateways.iter().enumerate() {
            if phase(&tb, egw).await != "Normal"
                || replicas(&tb, deploy).await != Some(at_rest(i))
                || tb.pods_of(deploy).await.iter().filter(|p| p.ready).count()
                    != at_rest(i) as usize
            {
                return false;
            }
        }
        true
    })
    .await;
    let mut on_ecs = 0;
    for &(_, deploy) in gateways {
        on_ecs += pool_counts(&tb.pods_of(deploy).await).0;
    }
    let rest: i32 = (0..n).map(at_rest).sum();
    assert_eq!(on_ecs, rest as usize, "at rest all live on ECS");

    // All burst at once: each asks for 12; 12 - rest ECS slots are free between them, and each
    // may put 6 on ECI.
    let burst = Instant::now();
    for l in &loads {
        l.set(6000.0);
    }
    let mut seen: Vec<Vec<i32>> = vec![];
    let mut claimed_max: f64 = 0.0;
    let mut changed_at = Instant::now();
    // Sampled until the counts have risen and then held for 15 s (the load holds): nothing may
    // come back down meanwhile.
    loop {
        let mut now = vec![];
        for &(_, deploy) in gateways {
            now.push(replicas(&tb, deploy).await.unwrap_or(0));
        }
        let total: i32 = now.iter().sum();
        if seen.last() != Some(&now) {
            seen.push(now);
            changed_at = Instant::now();
        }
        claimed_max = claimed_max.max(metric_sum(&a, "spillway_ecs_claimed_elsewhere_pods"));
        // At least the least the gateways can reach: the 12 slots, the first decider's share
        // of them topped up to 12, the others 2 + 6 each (one short allowed, as below).
        if total >= 12 + 8 * (n as i32 - 1) - 1 && changed_at.elapsed() >= Duration::from_secs(15) {
            break;
        }
        assert!(
            burst.elapsed() < Duration::from_secs(120),
            "the counts did not settle within 120 s: {seen:?}"
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
    let writes: Vec<usize> = gateways.iter().map(|(_, d)| scale_writes(d)).collect();
    let placements = || async {
        let mut placed = vec![];
        for &(_, deploy) in gateways {
            placed.push(pool_counts(&tb.pods_of(deploy).await));
        }
        placed
    };
    let burst_placed = placements().await;
    // A pod a gateway counted on an ECS slot that the scheduler gave to another gateway's pod
    // (or sent to the virtual node) leaves it one over its ECI cap: the engine lowers the count
    // once the excess has lasted the ECI window (40 s), as a falling load would, not at once.
    wait_for(
        "every gateway within its ECI cap (an excess goes after the ECI window)",
        90,
        || async {
            placements()
                .await
                .iter()
                .all(|(_, eci)| *eci <= ECI_CAP as usize)
        },
    )
    .await;
    let placed = placements().await;
    let mut settled = vec![];
    for &(_, deploy) in gateways {
        settled.push(replicas(&tb, deploy).await.unwrap_or(0));
    }
    eprintln!(
        "neighbours ({n}): counts {seen:?}, then {settled:?}; scale writes {writes:?}; (ECS, ECI) {burst_placed:?}, then {placed:?}; most slots seen claimed by the others: {claimed_max}"
    );
    // Never a lower count while the load holds: the counts only rise.
    for w in seen.windows(2) {
        assert!(
            w[1].iter()
                .zip(&w[0])
                .all(|(after, before)| after >= before),
            "a count went down under load: {seen:?}"
        );
    }
    assert!(
        writes.iter().all(|w| *w <= 2),
        "more than two scale writes each for one step of load: {writes:?}"
    );
    // Whether a decision came while another's pods were still unplaced (and so planned without
    // the slots claimed) depends on timing; the outcome above must hold either way.
    // Every ECS slot holds a gateway pod, the rest overflowed to ECI, the caps held, and each
    // gateway has what its load asks, as far as its ECS pods and its cap allow.
    let counts = &settled;
    let ecs: usize = placed.iter().map(|(e, _)| e).sum();
    assert_eq!(ecs, 12, "ECS left with room: {placed:?}");
    for (count, (ecs, eci)) in counts.iter().zip(&placed) {
        assert_eq!(ecs + eci, *count as usize, "{placed:?}");
        assert!(*eci <= ECI_CAP as usize, "{placed:?}");
        // Within one pod: when the scheduler's spreading sends pods a gateway counted on ECS to
        // ECI (issue 34), another may stop one short of its cap for a while (seen once: 12 and
        // 11 with 6 + 6 on ECS).
        let reach = 12.min(ecs + ECI_CAP as usize);
        assert!(
            *count as usize + 1 >= reach && *count as usize <= reach,
            "{seen:?} {placed:?}"
        );
    }
}
