use super::*;
use crate::policy::{ElasticGateway, PoolWeights};
use crate::sim::Scenario;

fn scenario_cluster(replicas: i32, jitter: f64, seed: u64) -> SimCluster {
    let s = Scenario::default();
    let p = &s.policy;
    let template = p.gateway_template(s.gateway_requests(), p.placement.normal_weights);
    let lat = Latencies {
        jitter,
        ..Latencies::default()
    };
    let classify = pool_classifier(
        p.pools.ecs.node_selector.clone(),
        p.pools.eci.node_selector.clone(),
    );
    let mut c = SimCluster::new(s.nodes(), template, replicas, lat, seed, classify);
    c.settle();
    c
}

fn count(c: &SimCluster, pool: Pool) -> usize {
    c.live().filter(|p| c.pool_of(p.node) == pool).count()
}

fn run_until(c: &mut SimCluster, from: u64, to: u64) {
    for t in from..=to {
        c.step(t as f64);
    }
}

#[test]
fn ecs_fills_first_then_the_overflow_goes_to_eci() {
    // 4 ECS nodes × (8 − 2 others) vCPU / 2 vCPU = 12 gateway pods on ECS.
    let mut c = scenario_cluster(4, 0.0, 1);
    assert_eq!((count(&c, Pool::Ecs), count(&c, Pool::Eci)), (4, 0));
    c.replicas = 20;
    c.step(0.0);
    assert_eq!((count(&c, Pool::Ecs), count(&c, Pool::Eci)), (12, 8));
    // Least-allocated spreads the gateway evenly over the ECS nodes.
    let per_node: Vec<i64> = c
        .nodes
        .iter()
        .take(4)
        .map(|n| (n.requested.cpu_millis - 2000) / 2000)
        .collect();
    assert_eq!(per_node, vec![3, 3, 3, 3]);
}

#[test]
fn start_latency_depends_on_the_pool() {
    let mut c = scenario_cluster(10, 0.0, 1);
    c.replicas = 24;
    c.step(100.0);
    let ready_at = |c: &SimCluster, pool: Pool| -> Vec<f64> {
        c.live()
            .filter(|p| c.pool_of(p.node) == pool && p.created_at == 100.0)
            .filter_map(|p| p.ready_at)
            .collect()
    };
    let (ecs, eci) = (ready_at(&c, Pool::Ecs), ready_at(&c, Pool::Eci));
    assert!(!ecs.is_empty() && !eci.is_empty(), "{ecs:?} {eci:?}");
    assert!(ecs.iter().all(|t| *t == 105.0), "{ecs:?}");
    assert!(eci.iter().all(|t| *t == 140.0), "{eci:?}");
    assert!(
        !c.live()
            .filter(|p| p.created_at == 100.0)
            .any(|p| p.ready(139.0) && c.pool_of(p.node) == Pool::Eci)
    );
}

fn pod(
    name: &str,
    node: Option<usize>,
    created: f64,
    ready_at: Option<f64>,
    cost: Option<i32>,
) -> SimPod {
    SimPod {
        name: name.into(),
        revision: 1,
        node,
        created_at: created,
        ready_at,
        gone_at: None,
        deletion_cost: cost,
        uid: victims::uid(name.bytes().map(u64::from).sum()),
        connections: 0.0,
        cohorts: Vec::new(),
    }
}

#[test]
fn victim_order_follows_the_replicaset_controller() {
    let now = 1000.0;
    let sorted = |mut v: Vec<(SimPod, usize)>| -> Vec<String> {
        v.sort_by(|a, b| {
            victims::order(&candidate(&a.0, now), a.1, &candidate(&b.0, now), b.1, now)
        });
        v.into_iter().map(|(p, _)| p.name).collect()
    };
    // 1. unassigned first; 2. not running before running; 3. not ready before ready.
    let v = vec![
        (pod("ready", Some(0), 0.0, Some(10.0), None), 1),
        (pod("unassigned", None, 0.0, None, None), 1),
        (pod("starting", Some(0), 990.0, Some(1010.0), None), 1),
    ];
    assert_eq!(sorted(v), vec!["unassigned", "starting", "ready"]);
    // 4. deletion cost beats everything after readiness: rank and age would pick "crowded".
    let v = vec![
        (
            pod("crowded-ecs", Some(0), 900.0, Some(905.0), Some(100)),
            5,
        ),
        (pod("lonely-eci", Some(1), 0.0, Some(40.0), Some(-100)), 1),
    ];
    assert_eq!(sorted(v), vec!["lonely-eci", "crowded-ecs"]);
    // 5. equal cost: more pods on the same node first.
    let v = vec![
        (pod("alone", Some(0), 0.0, Some(1.0), None), 1),
        (pod("doubled", Some(1), 0.0, Some(1.0), None), 3),
    ];
    assert_eq!(sorted(v), vec!["doubled", "alone"]);
    // 6. ready for less time first (log2 buckets); 8. newer first.
    let v = vec![
        (pod("old", Some(0), 0.0, Some(10.0), None), 1),
        (pod("recent", Some(0), 800.0, Some(990.0), None), 1),
    ];
    assert_eq!(sorted(v), vec!["recent", "old"]);
}

#[test]
fn scale_in_honours_deletion_cost() {
    let mut c = scenario_cluster(16, 0.0, 3); // 12 on ECS, 4 on ECI
    run_until(&mut c, 0, 60);
    // Make two ECS pods the cheapest to delete: they go before the ECI pods.
    let ecs: Vec<String> = c
        .live()
        .filter(|p| c.pool_of(p.node) == Pool::Ecs)
        .map(|p| p.name.clone())
        .take(2)
        .collect();
    for p in c.live().map(|p| p.name.clone()).collect::<Vec<_>>() {
        c.set_deletion_cost(&p, 0);
    }
    for p in &ecs {
        c.set_deletion_cost(p, -500);
    }
    c.replicas = 14;
    c.step(61.0);
    let leaving: Vec<String> = c
        .pods
        .iter()
        .filter(|p| p.gone_at.is_some())
        .map(|p| p.name.clone())
        .collect();
    assert_eq!(leaving.len(), 2);
    assert!(
        ecs.iter().all(|p| leaving.contains(p)),
        "{leaving:?} vs {ecs:?}"
    );
    // Terminating pods hold their node until the grace period ends.
    let held = c
        .nodes
        .iter()
        .take(4)
        .map(|n| n.requested.pods)
        .sum::<i64>();
    run_until(&mut c, 62, 61 + 15);
    let after = c
        .nodes
        .iter()
        .take(4)
        .map(|n| n.requested.pods)
        .sum::<i64>();
    assert_eq!(held - after, 2);
}

#[test]
fn template_change_rolls_out_with_surge_and_unavailability_limits() {
    let mut c = scenario_cluster(8, 0.0, 5);
    run_until(&mut c, 0, 10);
    c.set_weights(PoolWeights { ecs: 20, eci: 80 });
    assert_eq!(c.rollouts, 1);
    assert!(c.rollout_in_progress());
    let mut max_live = 0;
    let mut min_ready = usize::MAX;
    for t in 11..=600 {
        c.step(f64::from(t));
        max_live = max_live.max(c.live().count());
        min_ready = min_ready.min(c.live().filter(|p| p.ready(f64::from(t))).count());
    }
    assert!(!c.rollout_in_progress());
    assert!(c.live().all(|p| p.revision == 2));
    // maxSurge 25% of 8 = 2 extra; maxUnavailable 25% = 2.
    assert!(max_live <= 10, "{max_live}");
    assert!(min_ready >= 6, "{min_ready}");
    // The new weights prefer ECI, so the new pods went there.
    assert_eq!(count(&c, Pool::Eci), 8);
    // Setting the same weights again is not a change.
    c.set_weights(PoolWeights { ecs: 20, eci: 80 });
    assert_eq!(c.rollouts, 1);
}

#[test]
fn a_seed_makes_a_run_reproducible() {
    let trace = |seed: u64| -> Vec<(String, Option<usize>, Option<f64>)> {
        let mut c = scenario_cluster(4, 0.3, seed);
        c.replicas = 30;
        run_until(&mut c, 0, 100);
        c.replicas = 6;
        run_until(&mut c, 101, 200);
        c.pods
            .iter()
            .map(|p| (p.name.clone(), p.node, p.ready_at))
            .collect()
    };
    assert_eq!(trace(11), trace(11));
    assert_ne!(trace(11), trace(12));
}

#[test]
fn pending_when_nothing_fits() {
    let s = Scenario::default();
    let mut p = ElasticGateway::scenario_default().spec;
    p.pools.eci.tolerations.clear(); // the gateway no longer tolerates the virtual node
    let template = p.gateway_template(s.gateway_requests(), p.placement.normal_weights);
    let classify = pool_classifier(
        p.pools.ecs.node_selector.clone(),
        p.pools.eci.node_selector.clone(),
    );
    let mut c = SimCluster::new(s.nodes(), template, 14, Latencies::default(), 1, classify);
    c.step(0.0);
    assert_eq!((count(&c, Pool::Ecs), count(&c, Pool::Pending)), (12, 2));
    // Scale-in removes the unscheduled pods first.
    c.replicas = 12;
    c.step(1.0);
    assert_eq!((count(&c, Pool::Ecs), count(&c, Pool::Pending)), (12, 0));
}

/// Half the load on connections of 1 rps each, living `lifetime` seconds on average.
fn half_long_lived(lifetime: f64, max_age: Option<f64>, dealing: Dealing) -> Connections {
    Connections {
        long_lived_share: 0.5,
        requests_per_connection: 1.0,
        mean_lifetime_seconds: lifetime,
        max_age_seconds: max_age,
        dealing,
    }
}

#[test]
fn long_lived_connections_settle_spread_and_are_reset_with_their_pod() {
    let mut c = scenario_cluster(4, 0.0, 3);
    c.connections = Some(half_long_lived(60.0, None, Dealing::default()));
    // 2,000 rps, half on connections of 1 rps each: 1,000 open at the steady state.
    for t in 0..1200u64 {
        c.step(t as f64);
        c.flow(t as f64, 1.0, 2000.0);
    }
    let open: f64 = c.pods.iter().map(|p| p.connections).sum();
    assert!((900.0..1100.0).contains(&open), "{open} open");
    let per_pod: Vec<f64> = c.pods.iter().map(|p| p.connections).collect();
    assert!(
        per_pod.iter().all(|n| (180.0..320.0).contains(n)),
        "{per_pod:?}"
    );
    // What the fast path reads: ready pods by name, at most the sample.
    let read = c.gateway_pods_read(1200.0, 2000.0, 3);
    assert_eq!(read.iter().filter(|p| p.drain.is_some()).count(), 3);
    assert_eq!(read[0].drain.unwrap().connections, per_pod[0].round());
    // A scale-in resets what the removed pod still holds when it is gone (it drains for the
    // termination grace first: no new connections, some close).
    assert_eq!(c.connection_tally.resets, 0.0);
    c.replicas = 3;
    let mut t = 1200u64;
    while c.pods.len() > 3 {
        c.step(t as f64);
        c.flow(t as f64, 1.0, 2000.0);
        t += 1;
    }
    let reset = c.connection_tally.resets;
    assert!((100.0..320.0).contains(&reset), "{reset} reset");
}

/// Four pods carrying 1,000 connections at the steady state of 2,000 rps (60 s lifetimes),
/// then a scale-out to eight: the spread after it, under `dealing` and an optional maximum
/// age, as (seconds until max/mean < 1.25, connections closed at their age, resets).
fn scale_out(dealing: Dealing, max_age: Option<f64>) -> (f64, f64, f64) {
    scale_out_cluster(dealing, max_age).0
}

fn scale_out_cluster(dealing: Dealing, max_age: Option<f64>) -> ((f64, f64, f64), SimCluster) {
    let mut c = scenario_cluster(4, 0.0, 3);
    c.connections = Some(half_long_lived(60.0, max_age, dealing));
    for t in 0..600u64 {
        c.step(t as f64);
        c.flow(t as f64, 1.0, 2000.0);
    }
    c.replicas = 8;
    let spread = |c: &SimCluster, now: f64| {
        let open: Vec<f64> = c
            .pods
            .iter()
            .filter(|p| p.ready(now))
            .map(|p| p.connections)
            .collect();
        let mean = open.iter().sum::<f64>() / open.len() as f64;
        (open.len(), open.iter().copied().fold(0.0, f64::max) / mean)
    };
    let mut balanced = None;
    for t in 600..1800u64 {
        c.step(t as f64);
        c.flow(t as f64, 1.0, 2000.0);
        let (ready, s) = spread(&c, t as f64);
        if ready == 8 && s < UNBALANCED && balanced.is_none() {
            balanced = Some(t as f64);
        }
    }
    let ready_at = c.pods.iter().filter_map(|p| p.ready_at).fold(0.0, f64::max);
    let figures = (
        balanced.expect("never balanced") - ready_at,
        c.connection_tally.aged_out,
        c.connection_tally.resets,
    );
    (figures, c)
}

#[test]
fn least_connections_fills_new_pods_first_where_round_robin_waits_for_lifetimes() {
    let (rr, ..) = scale_out(Dealing::RoundRobin, None);
    let (wlc, ..) = scale_out(Dealing::LeastConnections, None);
    // In turn, the old pods hold 1 + e^(-t/60) times the mean: under 1.25 after 60 × ln 4 ≈
    // 83 s; to the fewest, the new pods take every new connection until they catch up.
    assert!(
        rr > 50.0,
        "round robin balanced {rr} s after the new pods were ready"
    );
    assert!(
        wlc * 2.0 < rr,
        "least connections {wlc} s, round robin {rr} s"
    );
}

#[test]
fn a_maximum_age_closes_connections_and_their_clients_connect_again() {
    let ((aged_s, aged, _), c) = scale_out_cluster(Dealing::RoundRobin, Some(30.0));
    let (plain_s, ..) = scale_out(Dealing::RoundRobin, None);
    assert!(aged_s < plain_s, "max age {aged_s} s vs none {plain_s} s");
    // e^(-1/2) of the 60 s connections reach 30 s and their clients connect again, to age
    // again: 0.61 / 0.39 ≈ 1.5 closes per client, at ~17 new clients a second for 1,800 s.
    assert!(
        (38_000.0..56_000.0).contains(&aged),
        "{aged} closed at their age"
    );
    // The clients came back: the open count stays the load's (1,000), and the cohorts add up.
    let open: f64 = c.pods.iter().map(|p| p.connections).sum();
    assert!((850.0..1150.0).contains(&open), "{open} open");
    for p in &c.pods {
        let cohorts: f64 = p.cohorts.iter().map(|(_, n)| n).sum();
        assert!((cohorts - p.connections).abs() < 1e-6, "{p:?}");
        assert!(
            p.cohorts.iter().all(|(t, _)| 1800.0 - t < 30.0 + 10.0),
            "{p:?}"
        );
    }
}

#[test]
fn clients_of_a_pod_that_goes_connect_again_to_the_others() {
    let mut c = scenario_cluster(4, 0.0, 3);
    c.connections = Some(half_long_lived(1e9, None, Dealing::default()));
    // No arrivals (no load) and lifetimes that never end: only the reconnections move.
    for p in &mut c.pods {
        p.connections = 100.0;
    }
    c.replicas = 3;
    let mut t = 0u64;
    while c.pods.len() > 3 {
        c.step(t as f64);
        c.flow(t as f64, 1.0, 0.0);
        t += 1;
    }
    c.step(t as f64);
    c.flow(t as f64, 1.0, 0.0);
    let open: f64 = c.pods.iter().map(|p| p.connections).sum();
    assert_eq!(c.connection_tally.resets, 100.0);
    assert_eq!(open, 400.0, "the 100 reset came back on the 3 left");
}
