//! Per-pool capacity (issue 27) on real parts. Through a real Prometheus (Debian's package):
//! cAdvisor's per-container CPU counters, scraped every second, queried with the agent's own
//! per-pod CPU query, joined with per-pod rates and learnt by the engine's own code; other
//! containers of the pods, other namespaces and pods of no gateway are in the scrape too, and
//! must not count. And the live agent on the real control plane: a peak overflows onto the
//! virtual node, whose pods spend twice the CPU per request; the agent learns it from the
//! Envoys' per-pod counters (its fast path) and their CPU (Prometheus), and sizes the overflow
//! in ECI pods at half an ECS pod each. And (issue 29) pods on a slow start's ramp, counted by
//! their Ready condition's last transition as the kubelet (kwok) stamps it.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use spillway::engine::capacity::{CapacityMemory, PoolUsage, Source, relative};
use spillway::model::{GatewayPod, LoadSample, Pool, Resources};
use spillway::prom::{PromAuth, PromConfig, Prometheus};
use support::envoy::Envoys;
use support::live::{agent, bed, metric_sum, policy, wait_for, workdir};
use support::prom::{CadvisorExporter, LoadExporter, Prom};
use support::testbed::pool_counts;

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn pod(name: &str, pool: Pool) -> GatewayPod {
    GatewayPod {
        name: name.into(),
        node: Some(format!("{}-node", pool.as_str())),
        pool,
        ready: true,
        pending: false,
        terminating: false,
        requests: Resources::pod(2000, 2 << 30),
        deletion_cost: None,
        created_at: 0.0,
        ready_since: None,
        drain: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eci_pods_that_spend_more_cpu_per_request_are_counted_as_weaker() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ns = "istio-system";
    let cadvisor = CadvisorExporter::start();
    // Each pod serves 400 rps; an ECS pod's Envoy spends 0.8 cores on it, an ECI pod's 1.25
    // (it serves 0.64 of an ECS pod).
    let gateway = [
        ("istio-ingressgateway-7d9f-ecs01", Pool::Ecs, 0.8),
        ("istio-ingressgateway-7d9f-ecs02", Pool::Ecs, 0.8),
        ("istio-ingressgateway-7d9f-eci01", Pool::Eci, 1.25),
        ("istio-ingressgateway-7d9f-eci02", Pool::Eci, 1.25),
    ];
    for (name, _, cores) in gateway {
        cadvisor.set(ns, name, "istio-proxy", cores);
        // The pod's other containers are not the gateway's work.
        cadvisor.set(ns, name, "", 3.0);
        cadvisor.set(ns, name, "POD", 0.01);
    }
    // A pod of the gateway's name in another namespace, and one of another workload.
    cadvisor.set(
        "default",
        "istio-ingressgateway-7d9f-ecs01",
        "istio-proxy",
        9.0,
    );
    cadvisor.set(ns, "istiod-5c4f-abcde", "discovery", 9.0);
    let work = workdir("capacity");
    let prom = Prom::start(work.path(), &[cadvisor.port]);
    let client = Prometheus::new(PromConfig {
        url: prom.url(),
        timeout: Duration::from_secs(10),
        auth: PromAuth::default(),
        ca_pem: None,
        max_skew: Duration::from_secs(60),
    })
    .unwrap();
    let query = spillway::policy::cpu_per_pod_query(ns, "istio-ingressgateway");
    // Until Prometheus has two scrapes of every series, `rate()` has nothing to say.
    let deadline = Instant::now() + Duration::from_secs(60);
    let cpu = loop {
        match client.query(&query, now()).await {
            LoadSample::PerPod(v) if v.len() == gateway.len() => break v,
            other => assert!(
                Instant::now() < deadline,
                "no per-pod CPU for the gateway's pods: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    // `irate` over the last two scrapes: each pod's cores as set, from the first answer on.
    for (name, _, cores) in gateway {
        let got = cpu.iter().find(|(n, _)| n == name).unwrap().1;
        assert!(
            (got - cores).abs() < 0.05 * cores,
            "{name}: {got} cores, set {cores}"
        );
    }
    let pods: Vec<GatewayPod> = gateway.iter().map(|(n, p, _)| pod(n, *p)).collect();
    let rates: Vec<(String, f64)> = gateway
        .iter()
        .map(|(n, ..)| (n.to_string(), 400.0))
        .collect();
    let usage = PoolUsage::of(&pods, &rates, &cpu, now()).unwrap();
    assert_eq!((usage.ecs.pods, usage.eci.pods), (2, 2));
    let mut memory = CapacityMemory::default();
    for i in 0..spillway::engine::capacity::MIN_SAMPLES {
        memory.learn(Some(usage), 500.0, f64::from(i) * 15.0);
    }
    let r = relative(None, &memory);
    assert_eq!(r.source, Source::Learnt);
    assert!((r.eci - 0.64).abs() <= 0.05, "ECI share {}", r.eci);
}

/// The p95 (nearest rank) of creation to Ready of the gateway pods created since `since`
/// (unix seconds), per pool, from the apiserver's objects.
async fn starts_p95(
    tb: &support::testbed::Testbed,
    since: f64,
) -> std::collections::BTreeMap<Pool, f64> {
    use k8s_openapi::api::core::v1::Pod;
    let pools = tb.node_pools().await;
    let pods: kube::Api<Pod> = kube::Api::namespaced(tb.client.clone(), "istio-system");
    let list = pods
        .list(&kube::api::ListParams::default().labels("app=istio-ingressgateway"))
        .await
        .unwrap();
    let mut by_pool: std::collections::BTreeMap<Pool, Vec<f64>> = Default::default();
    for p in list.items {
        let created = p.metadata.creation_timestamp.unwrap().0.as_second() as f64;
        let ready = p
            .status
            .and_then(|s| s.conditions)
            .and_then(|cs| {
                cs.into_iter()
                    .find(|c| c.type_ == "Ready" && c.status == "True")
            })
            .and_then(|c| c.last_transition_time);
        let pool = p
            .spec
            .and_then(|s| s.node_name)
            .and_then(|n| pools.get(&n).copied());
        if let (Some(ready), Some(pool)) = (ready, pool)
            && created >= since
        {
            by_pool
                .entry(pool)
                .or_default()
                .push(ready.0.as_second() as f64 - created);
        }
    }
    by_pool
        .into_iter()
        .filter(|(_, s)| s.len() >= spillway::engine::starts::MIN_SAMPLES)
        .map(|(pool, mut s)| {
            s.sort_by(f64::total_cmp);
            let rank = (0.95 * s.len() as f64).ceil() as usize;
            (pool, s[rank - 1])
        })
        .collect()
}

/// The start the live agent counts a pod of `pool` to take, from its own `/metrics`.
fn planned_start(a: &support::live::Agent, pool: &str) -> Option<f64> {
    let (_, text) = support::prom::try_http_get(a.admin, "/metrics")?;
    text.lines()
        .find(|l| {
            l.starts_with("spillway_pod_start_expected_seconds{")
                && l.contains(&format!("pool=\"{pool}\""))
        })?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

/// The live agent's reading of the ECI share, from its own `/metrics`.
fn eci_share(a: &support::live::Agent) -> Option<f64> {
    let (_, text) = support::prom::try_http_get(a.admin, "/metrics")?;
    text.lines()
        .find(|l| l.starts_with("spillway_pod_capacity_share{") && l.contains("pool=\"eci\""))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_agent_learns_that_eci_pods_serve_half_and_sizes_the_overflow_for_it() {
    let dir = workdir("capacity-live");
    // The Envoys of the gateway's pods: request counters for the fast path and Prometheus, and
    // the CPU the kubelet's cAdvisor would report (0.001 s a request on ECS, twice on ECI).
    let envoy_sd = dir.path().join("envoy-sd.json");
    let envoys = Envoys::start(envoy_sd.clone());
    envoys.set_load(2000.0);
    envoys.set_cpu(0.001, 0.5);
    let prom = Prom::scraping_envoys(dir.path(), &[&envoy_sd]);
    // The request-rate preset (the fast path reads it), over a 10 s window for 1 s scrapes.
    let mut egw = policy();
    egw["spec"]["metrics"] = serde_json::json!([{"name": "rps", "preset": "RequestRate",
        "query": "sum(rate(istio_requests_total{reporter=\"source\",source_workload=\"istio-ingressgateway\",source_workload_namespace=\"istio-system\"}[10s]))",
        "targetPerReplica": 500}]);
    egw["spec"]["maxReplicas"] = serde_json::json!(40);
    let tb = bed(dir.path(), egw).await;
    let _feeder = envoys.follow(tb.handle(), "istio-ingressgateway");
    let port = envoys.port.to_string();
    let a = agent(
        &tb,
        dir.path(),
        &prom.url(),
        "agent",
        false,
        &["--fast-path-port", &port],
    )
    .await;
    // No ECI pod yet: an ECI pod counts as an ECS pod.
    wait_for(
        "a decision at rest: 4 pods on ECS, the ECI share 1",
        90,
        || async {
            let pods = tb.gateway_pods().await;
            pods.len() == 4
                && pods.iter().all(|p| p.ready)
                && pool_counts(&pods).1 == 0
                && eci_share(&a) == Some(1.0)
        },
    )
    .await;

    // 9,000 rps: 18 pods' worth at 500 each; ECS holds 12 of the scenario's gateway pods.
    let raised = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as f64;
    envoys.set_load(9000.0);
    wait_for("ECI pods serving beside ECS pods", 90, || async {
        let pods = tb.gateway_pods().await;
        pods.iter().any(|p| p.ready && p.pool == Some(Pool::Eci))
    })
    .await;
    // Issue 28's groundwork: how long each pool takes to start a pod, learnt from the pods
    // the agent saw start, is what the apiserver's objects say (creation to the Ready
    // condition kwok stamps), not the default.
    wait_for(
        "the agent's start latencies = the new pods' own",
        90,
        || async {
            let truth = starts_p95(&tb, raised).await;
            [(Pool::Ecs, "ecs"), (Pool::Eci, "eci")]
                .iter()
                .all(|(pool, label)| {
                    let planned = planned_start(&a, label);
                    truth.get(pool).is_some_and(|t| planned == Some(*t))
                })
        },
    )
    .await;
    println!(
        "start latency p95 as the agent counts it: ECS {:?} s, ECI {:?} s (the pods' own: {:?})",
        planned_start(&a, "ecs"),
        planned_start(&a, "eci"),
        starts_p95(&tb, raised).await
    );
    // Learnt, not the policy's default of 40 s.
    assert!(planned_start(&a, "eci").unwrap() < 40.0);
    // Once the ECI pods are old enough for their CPU to count, the share is learnt…
    wait_for("the agent learns the ECI pods' share", 150, || async {
        metric_sum(&a, "spillway_eci_capacity_learnt") == 1.0
            && eci_share(&a).is_some_and(|s| s < 0.6)
    })
    .await;
    let share = eci_share(&a).unwrap();
    assert!((share - 0.5).abs() <= 0.05, "ECI share {share}");
    // The status keeps it, for a restarted agent or a new leader to start from.
    wait_for("the status to carry the learnt share", 30, || async {
        support::live::status(&tb).await["eciRelativeCapacity"]
            .as_f64()
            .is_some_and(|s| (s - share).abs() < 0.03)
    })
    .await;
    // …and the overflow sized for it: the pods serve what 18 ECS pods serve (counted as ECS
    // pods, 12 + 6 would serve 15), and not a pod's worth more than the HPA's tolerance allows.
    let serves = |ecs: usize, eci: usize| ecs as f64 + 0.5 * eci as f64;
    let sized = support::live::try_wait_for(60, || async {
        let pods = tb.gateway_pods().await;
        let (ecs, eci) = pool_counts(&pods);
        ecs >= 12 && serves(ecs, eci) >= 18.0 && pods.iter().all(|p| p.ready)
    })
    .await;
    let (ecs, eci) = pool_counts(&tb.gateway_pods().await);
    println!(
        "9,000 rps: ECS {ecs} + ECI {eci} pods, ECI counted at {share} of an ECS pod: {} ECS pods' worth",
        serves(ecs, eci)
    );
    assert!(
        sized && serves(ecs, eci) <= 18.0 * 1.1 + 1.0,
        "ECS {ecs} + ECI {eci} at a true ECI share of 0.5 serve {} ECS pods' worth; the load needs 18",
        serves(ecs, eci)
    );
    drop(a);
}

/// Issue 29: with a slow start stated (`spec.warmup`, 40 s from 10 %), the live agent counts a
/// pod by how long it has been Ready, from its Ready condition's `lastTransitionTime` as the
/// node's kubelet (kwok here) stamps it: after a scale-out, what the ready pods serve
/// (`spillway_ready_capacity_pods`) stands well below their count while the new ones ramp, and
/// equals it once the ramp is over. Without the condition's time read, it would equal the count
/// throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_agent_counts_new_pods_at_their_ramp() {
    let dir = workdir("warmup-live");
    let load = LoadExporter::start(2000.0);
    let prom = Prom::start(dir.path(), &[load.port]);
    let mut egw = policy();
    egw["spec"]["warmup"] = serde_json::json!({"seconds": 40, "minWeightPercent": 10});
    let tb = bed(dir.path(), egw).await;
    let a = agent(&tb, dir.path(), &prom.url(), "agent", false, &[]).await;
    // The ready pods the agent saw and what it counted them for, at one decision: two scrapes
    // in a row that agree (the decision's time included), so that no decision was being
    // recorded between the two figures.
    let scrape = || {
        let (_, text) = support::prom::try_http_get(a.admin, "/metrics")?;
        let value = |l: &str| l.rsplit(' ').next()?.parse::<f64>().ok();
        let find = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
                .and_then(value)
        };
        let ready: f64 = text
            .lines()
            .filter(|l| l.starts_with("spillway_gateway_pods{") && l.contains("state=\"ready\""))
            .filter_map(value)
            .sum();
        Some((
            ready,
            find("spillway_ready_capacity_pods")?,
            find("spillway_last_decision_timestamp_seconds")?,
        ))
    };
    let seen = || {
        let first = scrape()?;
        (scrape()? == first).then_some((first.0, first.1))
    };
    wait_for("4 ready pods, counted in full", 120, || async {
        seen() == Some((4.0, 4.0))
    })
    .await;
    // 6,000 rps: 12 pods at 500 each, all on ECS.
    load.set(6000.0);
    wait_for("the new pods counted at their ramp", 90, || async {
        seen().is_some_and(|(r, c)| r >= 8.0 && c < r - 2.0)
    })
    .await;
    if let Some((r, c)) = seen() {
        println!("after the scale-out: {r} ready pods serve {c:.2} warm pods' worth");
    }
    wait_for("the fleet warm again", 120, || async {
        seen() == Some((12.0, 12.0))
    })
    .await;
    drop(a);
}
