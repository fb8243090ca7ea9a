//! The live agent end to end: the real `spillway run` binary, a kubeconfig for the stand-in API
//! server (which animates the gateway with the simulator's scheduler and ReplicaSet logic), and
//! a real Prometheus scraping the gateway's load.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use spillway::model::Pool;
use spillway::sim::Scenario;
use spillway::sim::cluster::Latencies;
use support::apiserver::{ApiServer, Fault};
use support::prom::{Killed, LoadExporter, Prom, free_port};

/// A temporary folder; kept at $SPILLWAY_TEST_KEEP/<name> when that is set, to read the agents' logs.
struct Workdir {
    _tmp: Option<tempfile::TempDir>,
    path: std::path::PathBuf,
}

impl Workdir {
    fn path(&self) -> &std::path::Path {
        &self.path
    }
}

fn workdir(name: &str) -> Workdir {
    if let Ok(keep) = std::env::var("SPILLWAY_TEST_KEEP") {
        let path = std::path::Path::new(&keep).join(name);
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        return Workdir { _tmp: None, path };
    }
    let tmp = tempfile::tempdir().unwrap();
    Workdir {
        path: tmp.path().to_path_buf(),
        _tmp: Some(tmp),
    }
}

fn latencies() -> Latencies {
    Latencies {
        ecs_start_seconds: 1.0,
        eci_start_seconds: 3.0,
        jitter: 0.0,
        termination_seconds: 1.0,
    }
}

fn policy() -> Value {
    json!({
        "apiVersion": "spillway.io/v1alpha1", "kind": "ElasticGateway",
        "metadata": {"name": "ingressgateway", "namespace": "istio-system", "generation": 1},
        "spec": {
            "target": {"kind": "Deployment", "name": "istio-ingressgateway"},
            "minReplicas": 2, "maxReplicas": 30,
            "metrics": [{"name": "rps", "query": "sum(spillway_test_gateway_requests_per_second)", "targetPerReplica": 500}],
            "behavior": {
                "leadTime": {"seconds": 0},
                "scaleUp": {"policies": [{"type": "Pods", "value": 30, "periodSeconds": 1}]},
                "scaleDown": {"stabilizationWindowSeconds": 4, "policies": [{"type": "Pods", "value": 30, "periodSeconds": 1}]}
            }
        }
    })
}

struct Agent(Killed);

fn agent(
    api: &ApiServer,
    dir: &std::path::Path,
    prom: &str,
    who: &str,
    leader_election: bool,
) -> (Agent, u16) {
    let admin = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_spillway"))
        .arg("run")
        .args(["--kubeconfig", api.kubeconfig(dir, who).to_str().unwrap()])
        .args([
            "--prometheus-url",
            prom,
            "--prometheus-timeout",
            "1s",
            "--interval",
            "1s",
        ])
        .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
        .args([
            "--leader-election",
            if leader_election { "true" } else { "false" },
        ])
        .args([
            "--lease-duration",
            "4s",
            "--lease-namespace",
            "spillway-system",
            "--identity",
            who,
        ])
        .env("SPILLWAY_LOG", "info,spillway=debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("{who}.log"))).unwrap())
        .spawn()
        .unwrap();
    (Agent(Killed(child)), admin)
}

async fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {secs}s waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn replicas(api: &ApiServer) -> i64 {
    api.with(|st| {
        st.get("deployments", "istio-system", "istio-ingressgateway")
            .unwrap()["spec"]["replicas"]
            .as_i64()
            .unwrap()
    })
}

fn pool_counts(api: &ApiServer) -> (usize, usize) {
    api.with(|st| {
        let g = st.gateway.as_ref().unwrap();
        let ecs = g
            .cluster
            .live()
            .filter(|p| g.cluster.pool_of(p.node) == Pool::Ecs)
            .count();
        let eci = g
            .cluster
            .live()
            .filter(|p| g.cluster.pool_of(p.node) == Pool::Eci)
            .count();
        (ecs, eci)
    })
}

fn status(api: &ApiServer) -> Value {
    api.with(|st| {
        st.get("elasticgateways", "istio-system", "ingressgateway")
            .unwrap()["status"]
            .clone()
    })
}

fn condition(api: &ApiServer, kind: &str) -> Option<Value> {
    status(api)["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind).cloned())
}

fn event_reasons(api: &ApiServer) -> Vec<String> {
    api.with(|st| {
        st.list("events", Some("istio-system"))
            .iter()
            .map(|e| e["reason"].as_str().unwrap_or("").to_string())
            .collect()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scales_through_a_spike_onto_eci_and_back_and_holds_without_prometheus() {
    let dir = workdir("spike");
    let load = LoadExporter::start(2000.0);
    let mut prom = Prom::start(dir.path(), &[load.port]);
    let api = ApiServer::start(&Scenario::default(), latencies(), Some(policy())).await;
    let (_agent, admin) = agent(&api, dir.path(), &prom.url(), "agent-a", false);

    // Steady: 2,000 rps at 500 per replica is the 4 replicas already running, all on ECS.
    wait_until("the first status", 30, || status(&api)["phase"] == "Normal").await;
    assert_eq!(replicas(&api), 4);
    wait_until("readiness", 10, || {
        std::net::TcpStream::connect(("127.0.0.1", admin)).is_ok()
    })
    .await;

    // The spike: 10,000 rps needs 20 replicas; ECS holds 12, the rest overflows onto ECI.
    load.set(10_000.0);
    wait_until("20 replicas", 30, || replicas(&api) == 20).await;
    wait_until("pods on ECS and ECI", 30, || pool_counts(&api) == (12, 8)).await;
    wait_until("ECI pods annotated to go first", 15, || {
        api.with(|st| {
            let pods = st.list("pods", Some("istio-system"));
            let g = st.gateway.as_ref().unwrap();
            g.cluster.live().all(|p| {
                let want = if g.cluster.pool_of(p.node) == Pool::Eci {
                    "-100"
                } else {
                    "100"
                };
                pods.iter().any(|o| {
                    o["metadata"]["name"] == p.name.as_str()
                        && o["metadata"]["annotations"][spillway::model::POD_DELETION_COST] == want
                })
            })
        })
    })
    .await;
    wait_until("status shows the overflow", 10, || {
        status(&api)["phase"] == "Overflow" && status(&api)["eciReplicas"] == 8
    })
    .await;
    let reasons = event_reasons(&api);
    assert!(reasons.iter().any(|r| r == "ScaledUp"), "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r == "DeletionCostsSet"),
        "{reasons:?}"
    );

    // Prometheus goes away while the load drops: spillway cannot see it, so it holds.
    prom.stop();
    load.set(1000.0);
    wait_until("the missing metric reported", 15, || {
        condition(&api, "MetricsAvailable").is_some_and(|c| {
            c["status"] == "False" && c["message"].as_str().unwrap().contains("unreachable")
        })
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(replicas(&api), 20, "scaled down on missing data");
    assert_eq!(status(&api)["phase"], "Holding");
    assert!(event_reasons(&api).iter().any(|r| r == "QueryFailed"));

    // Back: 1,000 rps needs 2; after the 4 s window the fleet shrinks, ECI first, to ECS only.
    prom.resume();
    wait_until("scaled back to 2", 60, || replicas(&api) == 2).await;
    wait_until("nothing left on ECI", 30, || pool_counts(&api).1 == 0).await;
    let deletions = api.with(|st| st.gateway.as_ref().unwrap().deletions.clone());
    let ecs_deleted_early: Vec<_> = deletions
        .iter()
        .filter(|d| d.pool == Pool::Ecs && d.eci_left > 0 && !d.rolled)
        .collect();
    assert!(
        ecs_deleted_early.is_empty(),
        "ECS pods went while ECI pods remained: {ecs_deleted_early:?}"
    );
    assert!(deletions.iter().filter(|d| d.pool == Pool::Eci).count() >= 8);
    assert!(event_reasons(&api).iter().any(|r| r == "ScaledDown"));
    assert_eq!(
        condition(&api, "MetricsAvailable").unwrap()["status"],
        "True"
    );
    // Nothing the agent asked was refused.
    let refused: Vec<_> = api.with(|st| {
        st.log
            .iter()
            .filter(|l| l.status >= 400 && l.status != 404)
            .map(|l| format!("{} {} {}", l.method, l.path, l.status))
            .collect::<Vec<_>>()
    });
    assert!(refused.is_empty(), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_injected_faults_without_losing_or_doubling_a_change() {
    let dir = workdir("faults");
    let load = LoadExporter::start(2000.0);
    let prom = Prom::start(dir.path(), &[load.port]);
    let api = ApiServer::start(&Scenario::default(), latencies(), Some(policy())).await;
    api.with(|st| {
        st.faults.push(Fault {
            method: "PATCH",
            path_contains: "/scale".into(),
            status: 409,
            times: 1,
        });
        st.faults.push(Fault {
            method: "PATCH",
            path_contains: "/scale".into(),
            status: 500,
            times: 2,
        });
        st.faults.push(Fault {
            method: "PATCH",
            path_contains: "/pods/".into(),
            status: 500,
            times: 3,
        });
        st.faults.push(Fault {
            method: "PATCH",
            path_contains: "/status".into(),
            status: 429,
            times: 2,
        });
        st.faults.push(Fault {
            method: "GET",
            path_contains: "/deployments/".into(),
            status: 503,
            times: 2,
        });
    });
    let (mut agent, _) = agent(&api, dir.path(), &prom.url(), "agent-a", false);
    wait_until("the first status", 30, || status(&api)["phase"] == "Normal").await;

    api.with(|st| st.delay = Duration::from_millis(150));
    load.set(6000.0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    api.with(|st| st.drop_watches());
    wait_until("12 replicas despite the faults", 40, || {
        replicas(&api) == 12
    })
    .await;
    api.with(|st| {
        st.drop_watches();
        st.delay = Duration::ZERO;
    });
    // Every fault fired; the agent is alive; no write overshot the decision.
    let (faults_left, writes) = api.with(|st| {
        (
            st.faults.iter().map(|f| f.times).sum::<usize>(),
            st.gateway.as_ref().unwrap().replica_writes.clone(),
        )
    });
    assert_eq!(faults_left, 0, "some faults never met a request");
    assert!(
        writes.iter().all(|w| *w <= 12),
        "a write overshot: {writes:?}"
    );
    assert_eq!(writes.last(), Some(&12));
    // After the dropped watches the agent still sees pod changes: deletion costs reach new pods.
    wait_until("every pod annotated after the faults", 20, || {
        api.with(|st| {
            st.list("pods", Some("istio-system")).iter().all(|p| {
                !p["metadata"]["annotations"][spillway::model::POD_DELETION_COST].is_null()
            })
        })
    })
    .await;
    assert!(agent.0.0.try_wait().unwrap().is_none(), "the agent exited");
    assert!(
        event_reasons(&api).iter().any(|r| r == "WriteFailed"),
        "a failed write is announced"
    );
}

fn lease_holder(api: &ApiServer) -> Option<String> {
    api.with(|st| {
        st.get("leases", "spillway-system", "spillway")
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(String::from))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_one_lease_one_writer_and_a_fast_takeover() {
    let dir = workdir("lease");
    let load = LoadExporter::start(2000.0);
    let prom = Prom::start(dir.path(), &[load.port]);
    let api = ApiServer::start(&Scenario::default(), latencies(), Some(policy())).await;
    let (agent_a, _) = agent(&api, dir.path(), &prom.url(), "agent-a", true);
    let (agent_b, _) = agent(&api, dir.path(), &prom.url(), "agent-b", true);
    wait_until("a leader", 30, || lease_holder(&api).is_some()).await;
    load.set(5000.0);
    wait_until("the leader scales", 30, || replicas(&api) == 10).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let leader = lease_holder(&api).unwrap();
    let follower = if leader == "agent-a" {
        "agent-b"
    } else {
        "agent-a"
    };
    let (leader_writes, follower_writes) =
        api.with(|st| (st.writes_by(&leader).len(), st.writes_by(follower).len()));
    assert!(leader_writes > 0);
    assert_eq!(
        follower_writes, 0,
        "{follower} wrote while {leader} held the Lease"
    );

    // Kill the leader without a chance to release: the follower takes over within the Lease.
    let killed_at = Instant::now();
    let (mut dead, _alive) = if leader == "agent-a" {
        (agent_a, agent_b)
    } else {
        (agent_b, agent_a)
    };
    dead.0.0.kill().unwrap();
    wait_until("the follower takes the Lease", 12, || {
        lease_holder(&api).as_deref() == Some(follower)
    })
    .await;
    let takeover = killed_at.elapsed();
    assert!(
        takeover < Duration::from_secs(9),
        "takeover took {takeover:?}"
    );
    load.set(3000.0);
    wait_until("the new leader acts", 30, || replicas(&api) == 6).await;
    assert!(api.with(|st| st.writes_by(follower).len()) > 0);
    eprintln!("leader takeover after a kill: {takeover:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_shift_by_server_side_apply_and_roll_the_gateway() {
    let dir = workdir("weights");
    let load = LoadExporter::start(2000.0);
    let prom = Prom::start(dir.path(), &[load.port]);
    let mut egw = policy();
    egw["spec"]["placement"] = json!({"exhaustedWeights": {"ecs": 20, "eci": 80}, "exhaustedAfterSeconds": 3, "recoveredAfterSeconds": 3, "minWeightChangeIntervalSeconds": 1});
    let api = ApiServer::start(&Scenario::default(), latencies(), Some(egw)).await;
    let (_agent, _) = agent(&api, dir.path(), &prom.url(), "agent-a", false);
    wait_until("the first status", 30, || status(&api)["phase"] == "Normal").await;
    load.set(10_000.0);
    let weights = |api: &ApiServer| {
        api.with(|st| {
            let d = st.get("deployments", "istio-system", "istio-ingressgateway").unwrap();
            let terms = &d["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"];
            (terms[0]["weight"].as_i64(), terms[1]["weight"].as_i64(), d["metadata"]["generation"].as_i64())
        })
    };
    wait_until("ECS exhausted long enough: weights 20/80", 40, || {
        weights(&api).0 == Some(20)
    })
    .await;
    let (ecs, eci, generation) = weights(&api);
    assert_eq!((ecs, eci), (Some(20), Some(80)));
    assert!(
        generation > Some(1),
        "a template change bumps the generation"
    );
    // Applied with spillway's field manager, forced (it owns the preferred terms), nothing else.
    let applies: Vec<String> = api.with(|st| {
        st.log
            .iter()
            .filter(|l| {
                l.method == "PATCH" && l.path.contains("/deployments/istio-ingressgateway?")
            })
            .map(|l| l.path.clone())
            .collect()
    });
    assert!(
        applies
            .iter()
            .any(|p| p.contains("fieldManager=spillway") && p.contains("force=true")),
        "{applies:?}"
    );
    let d = api.with(|st| {
        st.get("deployments", "istio-system", "istio-ingressgateway")
            .unwrap()
            .clone()
    });
    assert_eq!(
        d["spec"]["template"]["spec"]["tolerations"]
            .as_array()
            .map(Vec::len),
        Some(2),
        "the user's fields survive"
    );
    assert!(event_reasons(&api).iter().any(|r| r == "WeightsChanged"));
    // Back to normal weights once ECS can hold the fleet again.
    load.set(2000.0);
    wait_until("normal weights again", 60, || weights(&api).0 == Some(80)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_decides_and_reports_but_changes_nothing() {
    let dir = workdir("dryrun");
    let load = LoadExporter::start(2000.0);
    let prom = Prom::start(dir.path(), &[load.port]);
    let mut egw = policy();
    egw["spec"]["dryRun"] = json!(true);
    let api = ApiServer::start(&Scenario::default(), latencies(), Some(egw)).await;
    let (_agent, _) = agent(&api, dir.path(), &prom.url(), "agent-a", false);
    wait_until("the first status", 30, || status(&api)["phase"] == "Normal").await;
    load.set(10_000.0);
    wait_until("the decision reported", 30, || {
        status(&api)["desiredReplicas"] == 20
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(replicas(&api), 4);
    let writes: Vec<String> = api.with(|st| {
        st.writes_by("agent-a")
            .iter()
            .filter(|l| !l.path.contains("/status") && !l.path.contains("/events"))
            .map(|l| format!("{} {}", l.method, l.path))
            .collect()
    });
    assert!(writes.is_empty(), "dry run wrote: {writes:?}");
}
