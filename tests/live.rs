//! The live agent on a real control plane: the `spillway run` binary with `deploy/`'s
//! ServiceAccount token, a real kube-apiserver (RBAC, admission, server-side apply), the real
//! scheduler placing the gateway's pods, the real Deployment and ReplicaSet controllers scaling
//! and rolling them, kwok starting pods after each pool's latency, and a real Prometheus. Each
//! agent talks through its own fault proxy, which logs its requests and injects faults.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use spillway::model::{POD_DELETION_COST, Pool};
use support::faultproxy::Fault;
use support::live::{
    agent, bed, condition, event_reasons, lease_holder, policy, status, wait_for, workdir,
};
use support::prom::{LoadExporter, Prom};
use support::testbed::{Testbed, pool_counts};

/// Every gateway pod carries the deletion cost of its pool: ECI pods go first on a scale-in.
async fn deletion_costs_match_pools(tb: &Testbed) -> bool {
    tb.gateway_pods().await.iter().all(|p| {
        let want = match p.pool {
            Some(Pool::Eci) => "-100",
            Some(Pool::Ecs) => "100",
            _ => return true,
        };
        p.annotations.get(POD_DELETION_COST).map(String::as_str) == Some(want)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scales_through_a_spike_onto_eci_and_back_and_holds_without_prometheus() {
    let dir = workdir("spike");
    let load = LoadExporter::start(2000.0);
    let mut prom = Prom::start(dir.path(), &[load.port]);
    let tb = bed(dir.path(), policy()).await;
    let deletions = tb.track_deletions().await;
    let a = agent(&tb, dir.path(), &prom.url(), "agent-a", false, &[]).await;

    // Steady: 2,000 rps at 500 per replica is the 4 replicas already running, all on ECS.
    wait_for("the first status", 60, || async {
        status(&tb).await["phase"] == "Normal"
    })
    .await;
    assert_eq!(tb.replicas().await, 4);
    wait_for("the admin server", 10, || async {
        std::net::TcpStream::connect(("127.0.0.1", a.admin)).is_ok()
    })
    .await;

    // The spike: 10,000 rps needs 20 replicas; the real scheduler fills the ECS nodes' 12 slots
    // (4 nodes, 3 gateway pods' room each beside the other work) and the rest goes to ECI.
    load.set(10_000.0);
    wait_for("20 replicas", 40, || async { tb.replicas().await == 20 }).await;
    wait_for("12 pods on ECS and 8 on ECI", 60, || async {
        pool_counts(&tb.gateway_pods().await) == (12, 8)
    })
    .await;
    wait_for("ECI pods annotated to go first", 30, || {
        deletion_costs_match_pools(&tb)
    })
    .await;
    wait_for("status shows the overflow", 30, || async {
        let s = status(&tb).await;
        s["phase"] == "Overflow" && s["eciReplicas"] == 8
    })
    .await;
    let reasons = event_reasons(&tb).await;
    assert!(reasons.iter().any(|r| r == "ScaledUp"), "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r == "DeletionCostsSet"),
        "{reasons:?}"
    );

    // Prometheus goes away while the load drops: spillway cannot see it, so it holds.
    prom.stop();
    load.set(1000.0);
    wait_for("the missing metric reported", 30, || async {
        condition(&tb, "MetricsAvailable").await.is_some_and(|c| {
            c["status"] == "False" && c["message"].as_str().unwrap().contains("unreachable")
        })
    })
    .await;
    // Held through more than a stabilisation window (4 s) of decisions (every 1 s).
    let held_since = Instant::now();
    while held_since.elapsed() < Duration::from_secs(6) {
        assert_eq!(tb.replicas().await, 20, "scaled down on missing data");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(status(&tb).await["phase"], "Holding");
    assert!(event_reasons(&tb).await.iter().any(|r| r == "QueryFailed"));

    // Back: 1,000 rps needs 2; after the window the fleet shrinks, and the real ReplicaSet
    // controller removes ECI pods first, by their deletion cost.
    prom.resume();
    wait_for("scaled back to 2", 90, || async {
        tb.replicas().await == 2
    })
    .await;
    wait_for("nothing left on ECI", 60, || async {
        pool_counts(&tb.gateway_pods().await).1 == 0
    })
    .await;
    let deletions = deletions.lock().unwrap().list();
    let ecs_early: Vec<_> = deletions
        .iter()
        .filter(|d| d.pool == Some(Pool::Ecs) && d.eci_left > 0 && !d.during_rollout)
        .collect();
    assert!(
        ecs_early.is_empty(),
        "ECS pods went while ECI pods remained: {ecs_early:?}"
    );
    assert!(
        deletions
            .iter()
            .filter(|d| d.pool == Some(Pool::Eci))
            .count()
            >= 8
    );
    assert!(event_reasons(&tb).await.iter().any(|r| r == "ScaledDown"));
    assert_eq!(
        condition(&tb, "MetricsAvailable").await.unwrap()["status"],
        "True"
    );
    // Nothing the agent asked was refused by the real apiserver (RBAC, validation, conflicts).
    let refused: Vec<String> = a.proxy.with(|st| {
        st.log
            .iter()
            .filter(|l| l.status >= 400 && l.status != 404)
            .map(|l| format!("{} {} {}", l.method, l.path, l.status))
            .collect()
    });
    assert!(refused.is_empty(), "{refused:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_injected_faults_without_losing_or_doubling_a_change() {
    let dir = workdir("faults");
    let load = LoadExporter::start(2000.0);
    let prom = Prom::start(dir.path(), &[load.port]);
    let tb = bed(dir.path(), policy()).await;
    let a = agent(&tb, dir.path(), &prom.url(), "agent-a", false, &[]).await;
    wait_for("the first status", 60, || async {
        status(&tb).await["phase"] == "Normal"
    })
    .await;
    a.proxy.with(|st| {
        for (method, path, status, times) in [
            ("PATCH", "/scale", 409, 1),
            ("PATCH", "/scale", 500, 2),
            ("PATCH", "/pods/", 500, 3),
            ("PATCH", "/status", 429, 2),
            ("GET", "/deployments?", 503, 2),
        ] {
            st.faults.push(Fault {
                method,
                path_contains: path.into(),
                status,
                times,
            });
        }
        st.delay = Duration::from_millis(150);
    });
    load.set(6000.0);
    wait_for("a scale request met the faults", 30, || async {
        a.proxy.with(|st| {
            st.log
                .iter()
                .any(|l| l.path.contains("/scale") && l.status == 409)
        })
    })
    .await;
    a.proxy.with(|st| st.drop_watches());
    wait_for("12 replicas despite the faults", 60, || async {
        tb.replicas().await == 12
    })
    .await;
    a.proxy.with(|st| {
        st.truncate_watches();
        st.delay = Duration::ZERO;
    });
    // After dropped and truncated watches the agent still sees pod changes: deletion costs reach
    // the new pods.
    wait_for("every pod annotated after the faults", 40, || {
        deletion_costs_match_pools(&tb)
    })
    .await;
    let faults_left = a
        .proxy
        .with(|st| st.faults.iter().map(|f| f.times).sum::<usize>());
    assert_eq!(faults_left, 0, "some faults never met a request");
    // No write overshot the decision: the apiserver's audit log has every scale the agent sent.
    let scales: Vec<i64> = tb
        .audit()
        .iter()
        .filter(|e| {
            e["verb"] == "patch"
                && e["objectRef"]["subresource"] == "scale"
                && e["user"]["username"] == "system:serviceaccount:spillway-system:spillway"
                && e["responseStatus"]["code"] == 200
        })
        .filter_map(|e| e["responseObject"]["spec"]["replicas"].as_i64())
        .collect();
    let spec = tb.replicas().await;
    assert_eq!(spec, 12);
    assert!(
        scales.iter().all(|r| *r <= 12),
        "a write overshot: {scales:?}"
    );
    assert!(a.process.0.id() > 0);
    assert!(
        event_reasons(&tb).await.iter().any(|r| r == "WriteFailed"),
        "a failed write is announced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_one_lease_one_writer_and_a_fast_takeover() {
    let dir = workdir("lease");
    let load = LoadExporter::start(2000.0);
    let prom = Prom::start(dir.path(), &[load.port]);
    let tb = bed(dir.path(), policy()).await;
    let a = agent(&tb, dir.path(), &prom.url(), "agent-a", true, &[]).await;
    let b = agent(&tb, dir.path(), &prom.url(), "agent-b", true, &[]).await;
    wait_for("a leader", 60, || async {
        lease_holder(&tb).await.is_some()
    })
    .await;
    load.set(5000.0);
    wait_for("the leader scales", 40, || async {
        tb.replicas().await == 10
    })
    .await;
    let leader = lease_holder(&tb).await.unwrap();
    let (mut dead, alive) = if leader == "agent-a" { (a, b) } else { (b, a) };
    wait_for("the leader's deletion costs", 30, || {
        deletion_costs_match_pools(&tb)
    })
    .await;
    assert!(!dead.writes().is_empty());
    assert!(
        alive.writes().is_empty(),
        "{} wrote while {leader} held the Lease: {:?}",
        alive.who,
        alive.writes()
    );

    // Kill the leader without a chance to release: the follower takes over within the Lease.
    let killed_at = Instant::now();
    dead.process.0.kill().unwrap();
    wait_for("the follower takes the Lease", 15, || async {
        lease_holder(&tb).await.as_deref() == Some(alive.who.as_str())
    })
    .await;
    let takeover = killed_at.elapsed();
    assert!(
        takeover < Duration::from_secs(9),
        "takeover took {takeover:?}"
    );
    load.set(3000.0);
    wait_for("the new leader acts", 40, || async {
        tb.replicas().await == 6
    })
    .await;
    assert!(!alive.writes().is_empty());
    eprintln!("leader takeover after a kill: {takeover:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_are_applied_server_side_and_keep_the_users_fields() {
    let dir = workdir("weights");
    let load = LoadExporter::start(2000.0);
    let prom = Prom::start(dir.path(), &[load.port]);
    let mut egw = policy();
    egw["spec"]["placement"] = json!({"exhaustedWeights": {"ecs": 20, "eci": 80}, "exhaustedAfterSeconds": 3, "recoveredAfterSeconds": 3, "minWeightChangeIntervalSeconds": 1});
    let tb = bed(dir.path(), egw).await;
    // The user's own change to the template, made with kubectl before spillway starts.
    tb.kubectl_ok(
        &[
            "-n",
            "istio-system",
            "annotate",
            "deployment/istio-ingressgateway",
            "owner=platform-team",
        ],
        None,
    );
    let _a = agent(&tb, dir.path(), &prom.url(), "agent-a", false, &[]).await;
    wait_for("the first status", 60, || async {
        status(&tb).await["phase"] == "Normal"
    })
    .await;
    let generation_before = tb.gateway().await.metadata.generation;
    load.set(10_000.0);
    let weights = support::live::weights_of;
    wait_for("spillway changes the preferred weights", 60, || async {
        weights(&tb.gateway().await) != vec![80, 20]
    })
    .await;
    let d = tb.gateway().await;
    assert!(
        d.metadata.generation > generation_before,
        "a template change bumps the generation"
    );
    // The real server-side apply: spillway's field manager owns the preferred terms; the user's
    // tolerations, required affinity, requests and annotation are untouched and still theirs.
    let managers: Vec<String> = d
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(managers.iter().any(|m| m == "spillway"), "{managers:?}");
    let spec = d.spec.template.spec.as_ref().unwrap();
    assert_eq!(spec.tolerations.as_ref().map(Vec::len), Some(2));
    let required = spec
        .affinity
        .as_ref()
        .unwrap()
        .node_affinity
        .as_ref()
        .unwrap()
        .required_during_scheduling_ignored_during_execution
        .as_ref()
        .unwrap();
    assert_eq!(required.node_selector_terms.len(), 2);
    assert_eq!(
        d.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("owner"))
            .map(String::as_str),
        Some("platform-team")
    );
    assert!(
        event_reasons(&tb)
            .await
            .iter()
            .any(|r| r == "WeightsChanged")
    );
    // A user who later edits their own part of the template keeps it; spillway's apply does
    // not take it back.
    let deployments: Api<Deployment> = Api::namespaced(tb.client.clone(), "istio-system");
    deployments
        .patch(
            "istio-ingressgateway",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"template": {"metadata": {"annotations": {"team": "edge"}}}}}),
            ),
        )
        .await
        .unwrap();
    load.set(2000.0);
    wait_for("normal weights again", 90, || async {
        weights(&tb.gateway().await) == vec![80, 20]
    })
    .await;
    let d = tb.gateway().await;
    assert_eq!(
        d.spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .and_then(|a| a.get("team"))
            .map(String::as_str),
        Some("edge")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_decides_and_reports_but_changes_nothing() {
    let dir = workdir("dryrun");
    let load = LoadExporter::start(2000.0);
    let prom = Prom::start(dir.path(), &[load.port]);
    let mut egw = policy();
    egw["spec"]["dryRun"] = json!(true);
    let tb = bed(dir.path(), egw).await;
    let a = agent(&tb, dir.path(), &prom.url(), "agent-a", false, &[]).await;
    wait_for("the first status", 60, || async {
        status(&tb).await["phase"] == "Normal"
    })
    .await;
    load.set(10_000.0);
    wait_for("the decision reported", 40, || async {
        status(&tb).await["desiredReplicas"] == 20
    })
    .await;
    // Several more decisions (one a second) change nothing either.
    let since = Instant::now();
    while since.elapsed() < Duration::from_secs(3) {
        assert_eq!(tb.replicas().await, 4);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let writes: Vec<String> = a
        .writes()
        .iter()
        .filter(|l| !l.path.contains("/status") && !l.path.contains("/events"))
        .map(|l| format!("{} {}", l.method, l.path))
        .collect();
    assert!(writes.is_empty(), "dry run wrote: {writes:?}");
}
