//! Drill behaviour on the built-in scenario and composed loads.
#![allow(clippy::unwrap_used)]
#![allow(clippy::field_reassign_with_default)]

use spillway::sim::drill::{PolicyRun, Quiet};
use spillway::sim::load::{Component, LoadProfile};
use spillway::sim::{PolicyKind, Scenario, run};

fn by_policy<'a>(runs: &'a [PolicyRun], p: &str) -> &'a PolicyRun {
    runs.iter().find(|r| r.summary.policy == p).unwrap()
}

#[test]
fn builtin_flash_crowd_overflows_to_eci_and_comes_back() {
    let report = run(&Scenario::default(), &mut Quiet);
    let sw = &by_policy(&report.runs, "spillway").summary;
    let hpa = &by_policy(&report.runs, "hpa").summary;
    let st = &by_policy(&report.runs, "static").summary;
    let oracle = &by_policy(&report.runs, "oracle").summary;
    // The peak needs 40 pods; ECS holds 12: the rest overflows onto ECI, and all of it comes back.
    assert!(sw.peak_eci_pods >= 20, "{sw:?}");
    assert_eq!(sw.final_eci_pods, 0);
    assert!(sw.final_replicas <= 6, "{sw:?}");
    // Lead time makes spillway short for less than the HPA, and it costs less than static.
    assert!(
        sw.underprovisioned_pod_seconds < hpa.underprovisioned_pod_seconds,
        "{sw:?}\n{hpa:?}"
    );
    assert!(sw.time_to_capacity_s[0].seconds < hpa.time_to_capacity_s[0].seconds);
    assert!(sw.cost_total < st.cost_total);
    // Perfect foresight is the bound.
    assert!(oracle.underprovisioned_pod_seconds <= sw.underprovisioned_pod_seconds);
    // A 20-minute crowd does not justify rolling the gateway.
    assert_eq!((sw.weight_changes, sw.rollouts), (0, 0));
    // Cost parts add up and ECI was paid for.
    assert!((sw.cost_ecs + sw.cost_eci - sw.cost_total).abs() < 1e-9);
    assert!(sw.cost_eci > 0.0 && sw.eci_pod_seconds > 0.0);
    assert_eq!(report.surges.len(), 1);
}

#[test]
fn a_seed_reproduces_the_whole_drill() {
    let mut s = Scenario::default();
    s.latencies.jitter = 0.3;
    s.duration_seconds = 1800;
    let a = run(&s, &mut Quiet);
    let b = run(&s, &mut Quiet);
    assert_eq!(
        serde_json::to_string(&a).unwrap(),
        serde_json::to_string(&b).unwrap()
    );
    s.seed += 1;
    let c = run(&s, &mut Quiet);
    assert_ne!(
        serde_json::to_string(&a).unwrap(),
        serde_json::to_string(&c).unwrap()
    );
}

#[test]
fn report_json_has_the_promised_fields() {
    let mut s = Scenario::default();
    s.duration_seconds = 1200;
    s.policies = vec![PolicyKind::Spillway, PolicyKind::Hpa];
    let report = run(&s, &mut Quiet);
    let v = serde_json::to_value(&report).unwrap();
    let summary = &v["runs"][0]["summary"];
    for field in [
        "time_to_capacity_s",
        "underprovisioned_pod_seconds",
        "peak_eci_pods",
        "final_eci_pods",
        "eci_pod_seconds",
        "cost_total",
        "cost_ecs",
        "cost_eci",
        "weight_changes",
        "rollouts",
    ] {
        assert!(
            !summary[field].is_null(),
            "summary lacks {field}: {summary}"
        );
    }
    assert!(
        v["runs"][0]["timeline"]
            .as_array()
            .is_some_and(|t| t.len() > 100)
    );
    assert!(
        v["runs"][0]["decisions"]
            .as_array()
            .is_some_and(|d| !d.is_empty())
    );
    let csv = spillway::sim::report::timeline_csv(&report);
    assert!(csv.starts_with("policy,t,load_rps,capacity_rps,desired,ready,ecs_pods,eci_pods"));
    assert_eq!(
        csv.lines().count(),
        1 + report.runs.iter().map(|r| r.timeline.len()).sum::<usize>()
    );
}

#[test]
fn diurnal_day_with_two_flash_crowds() {
    let mut s = Scenario::default();
    s.duration_seconds = 86_400;
    s.step_seconds = 5;
    s.policies = vec![PolicyKind::Spillway];
    s.load = LoadProfile {
        components: vec![
            Component::Diurnal {
                mean_rps: 3000.0,
                amplitude_rps: 2000.0,
                period_seconds: 86_400.0,
                peak_at_seconds: 50_400.0,
            },
            Component::Spike {
                at_seconds: 36_000.0,
                rise_seconds: 60.0,
                hold_seconds: 900.0,
                fall_seconds: 600.0,
                rps: 12_000.0,
            },
            Component::Spike {
                at_seconds: 72_000.0,
                rise_seconds: 120.0,
                hold_seconds: 600.0,
                fall_seconds: 600.0,
                rps: 8_000.0,
            },
        ],
    };
    let report = run(&s, &mut Quiet);
    let sw = &report.runs[0].summary;
    assert_eq!(report.surges.len(), 2);
    assert_eq!(sw.time_to_capacity_s.len(), 2);
    // Both crowds overflow onto ECI, and the night ends on ECS alone.
    let eci_during = |from: u64, to: u64| {
        report.runs[0]
            .timeline
            .iter()
            .filter(|p| p.t >= from && p.t <= to)
            .map(|p| p.eci_pods)
            .max()
            .unwrap_or(0)
    };
    assert!(eci_during(36_000, 37_000) > 0);
    assert!(eci_during(72_000, 73_000) > 0);
    assert_eq!(sw.final_eci_pods, 0);
    assert!(
        sw.time_to_capacity_s.iter().all(|r| r.seconds < 300.0),
        "{sw:?}"
    );
}

/// A steady load one pod above what ECS holds. With `placement.poolSpread` (an IstioGateway:
/// the pool affinity) the scheduler fills ECS first: one pod on ECI, never one while ECS has a
/// free slot, no swap needed. Without it the scheduler's topology spreading put two of the 13
/// pods on ECI at the start, leaving an ECS slot free: the HPA keeps them there for the whole
/// run; spillway swaps one back (one pod more, then one fewer), without a reversal or a moment
/// short.
#[test]
fn a_misplaced_eci_pod_is_swapped_back_to_ecs() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/drills/suite/10-one-above-ecs.yaml"
    );
    let mut s = Scenario::load(std::path::Path::new(path)).unwrap();
    s.policies = vec![PolicyKind::Spillway, PolicyKind::Hpa];
    let report = run(&s, &mut Quiet);
    let sw = &by_policy(&report.runs, "spillway").summary;
    let hpa = &by_policy(&report.runs, "hpa").summary;
    assert!(
        hpa.eci_pod_seconds_ecs_free > 0.9 * s.duration_seconds as f64,
        "{hpa:?}"
    );
    assert_eq!(
        (
            sw.eci_pod_seconds_ecs_free,
            sw.swap_changes,
            sw.final_eci_pods
        ),
        (0.0, 0, 1),
        "{sw:?}"
    );

    s.policy.placement.pool_spread = false;
    let report = run(&s, &mut Quiet);
    let sw = &by_policy(&report.runs, "spillway").summary;
    assert!(
        sw.eci_pod_seconds_ecs_free <= 0.02 * sw.eci_pod_seconds,
        "{sw:?}"
    );
    assert!(sw.eci_pod_seconds < 0.6 * hpa.eci_pod_seconds, "{sw:?}");
    assert_eq!(sw.final_eci_pods, 1);
    assert!(sw.swap_changes >= 2, "{sw:?}");
    assert_eq!((sw.reversals, sw.underprovisioned_pod_seconds), (0, 0.0));
    assert_eq!(hpa.swap_changes, 0);
}

/// The HPA peer takes per-direction tolerances as its HorizontalPodAutoscaler sets them
/// (`behavior.scaleUp.tolerance`, `scaleDown.tolerance`): a wide scale-down tolerance keeps
/// more pods after the crowd, and a negative one is refused.
#[test]
fn the_hpa_peer_takes_per_direction_tolerances() {
    let mut s = Scenario::default();
    s.policies = vec![PolicyKind::Hpa];
    let plain = run(&s, &mut Quiet);
    s.controllers.hpa_scale_up_tolerance = Some(0.0);
    s.controllers.hpa_scale_down_tolerance = Some(0.6);
    let wide = run(&s, &mut Quiet);
    let (p, w) = (&plain.runs[0].summary, &wide.runs[0].summary);
    assert!(w.eci_pod_seconds > p.eci_pod_seconds, "{p:?}\n{w:?}");
    assert!(w.final_replicas >= p.final_replicas, "{p:?}\n{w:?}");
    s.controllers.hpa_scale_down_tolerance = Some(-1.0);
    let errors = s.validate();
    assert!(
        errors
            .iter()
            .any(|e| e.path == "controllers.hpaScaleDownTolerance"),
        "{errors:?}"
    );
}

/// Every spillway decision of a two-gateway drill, per second: the gateway, the ECS pods it
/// counts on (its count, up to the ECS capacity it planned with), and the slots it saw claimed.
#[derive(Default)]
struct Fleet {
    decisions: Vec<(u64, String, i32, i32, bool)>,
}

impl spillway::sim::drill::Observer for Fleet {
    fn decision(
        &mut self,
        policy: PolicyKind,
        gateway: &str,
        obs: &spillway::engine::Observation<'_>,
        d: &spillway::engine::Decision,
        plan: &spillway::act::Plan,
        _seconds: f64,
    ) {
        if policy == PolicyKind::Spillway {
            let count = plan.replicas.unwrap_or(d.replicas.current);
            self.decisions.push((
                obs.now as u64,
                gateway.into(),
                count.min(d.survey.ecs_capacity),
                d.survey.ecs_claimed_elsewhere,
                plan.replicas.is_some(),
            ));
        }
    }
}

/// Two gateways on the same dedicated ECS nodes (12 slots) step from 2k to 10k rps in the same
/// second (20 pods each). One agent, one ledger: no two decisions count on the same free slot,
/// the scheduler never puts more gateway pods on ECS than fit (the nodes are shared, not
/// copied), the rest overflows to ECI and comes back, and each gateway sizes its burst in a
/// few writes, not a tug of war (issue 26: 4 → 14 and 4 → 15 for 16 slots, then a collapse).
#[test]
fn gateways_bursting_into_shared_ecs_never_count_on_the_same_slot() {
    let burst = |at: f64| LoadProfile {
        components: vec![
            Component::Constant { rps: 2000.0 },
            Component::Spike {
                at_seconds: at,
                rise_seconds: 0.0,
                hold_seconds: 900.0,
                fall_seconds: 60.0,
                rps: 8000.0,
            },
        ],
    };
    let mut s = Scenario::default();
    s.duration_seconds = 2400;
    s.load = burst(600.0);
    s.neighbours = vec![spillway::sim::scenario::Neighbour {
        name: "gateway-b".into(),
        gateway: None,
        load: burst(600.0),
        policy: None,
    }];
    s.policies = vec![PolicyKind::Spillway, PolicyKind::Hpa];
    assert_eq!(s.validate(), vec![]);
    let mut fleet = Fleet::default();
    let report = run(&s, &mut fleet);
    let slots = 12;
    let mut by_second = std::collections::BTreeMap::<u64, i32>::new();
    for (t, _, on_ecs, _, _) in &fleet.decisions {
        *by_second.entry(*t).or_default() += on_ecs;
    }
    let worst = by_second.values().max().copied().unwrap_or(0);
    assert!(
        worst <= slots,
        "the gateways counted on {worst} ECS slots of {slots}"
    );
    assert_eq!(
        worst, slots,
        "both wanted more ECS than there is: {by_second:?}"
    );
    assert!(
        fleet.decisions.iter().any(|d| d.3 > 0),
        "the second gateway saw the first one's claim"
    );
    for gw in ["gateway", "gateway-b"] {
        let writes = fleet
            .decisions
            .iter()
            .filter(|d| d.1 == gw && d.4 && (600..720).contains(&d.0))
            .count();
        assert!(
            writes <= 3,
            "{gw}: {writes} scale writes in the burst's first 2 minutes"
        );
    }
    for policy in ["spillway", "hpa"] {
        let r = by_policy(&report.runs, policy);
        let most_on_ecs = r.timeline.iter().map(|p| p.ecs_pods).max().unwrap();
        assert!(
            most_on_ecs <= slots,
            "{policy}: {most_on_ecs} pods on 12 ECS slots"
        );
        assert!(r.summary.peak_eci_pods >= 20, "{policy}: {:?}", r.summary);
        assert_eq!(r.summary.final_eci_pods, 0, "{policy}: {:?}", r.summary);
    }
    let sw = &by_policy(&report.runs, "spillway").summary;
    assert_eq!(sw.eci_pod_seconds_ecs_free, 0.0, "{sw:?}");
    // The fleet's surges, named per gateway, and its decisions.
    assert_eq!(report.surges.len(), 2);
    assert!(
        report.surges[1].name.starts_with("gateway-b: "),
        "{:?}",
        report.surges
    );
    assert_eq!(sw.time_to_capacity_s.len(), 2);
}

/// A neighbour is checked as the drill's own gateway is, each error under its own path.
#[test]
fn a_bad_neighbour_is_named() {
    let text = r#"
neighbours:
  - name: gateway
    load: {components: []}
    gateway: {replicas: 0}
"#;
    let errors = Scenario::parse(text).unwrap_err();
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    for want in [
        "neighbours[0].name",
        "neighbours[0].gateway.replicas",
        "neighbours[0].load.components",
    ] {
        assert!(paths.contains(&want), "{want} missing from {errors:?}");
    }
    // Its own policy may differ, but not in the pools the nodes are labelled for.
    let mut s = Scenario::default();
    let mut policy = s.policy.clone();
    policy.max_replicas = 30;
    s.neighbours = vec![spillway::sim::scenario::Neighbour {
        name: "b".into(),
        gateway: None,
        load: s.load.clone(),
        policy: Some(policy.clone()),
    }];
    assert_eq!(s.validate(), vec![]);
    policy.pools.ecs.node_selector = [("pool".to_string(), "other".to_string())].into();
    policy.min_replicas = 0;
    s.neighbours[0].policy = Some(policy);
    let paths: Vec<String> = s.validate().into_iter().map(|e| e.path).collect();
    assert!(
        paths.contains(&"neighbours[0].policy.pools".into()),
        "{paths:?}"
    );
    assert!(
        paths.contains(&"neighbours[0].policy.minReplicas".into()),
        "{paths:?}"
    );
}

/// The suite keeps the limits it meets today (issue 27): on every load, reversals at most the
/// HPA's + 1, no rollout under load, ECI while ECS had a free slot within 2 %, ECI spend within
/// the reactive bound's × 1.05; the total cost within 1.02× the oracle's (geometric mean). The
/// short-pod·s limit against the reactive bound is not met on every load yet (docs/drills.md).
#[test]
fn the_suite_keeps_the_limits_it_meets() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("drills/suite");
    let loads = spillway::sim::suite::load(&dir).unwrap();
    assert!(loads.len() >= 20, "{} loads", loads.len());
    let results = spillway::sim::suite::run(&loads, &mut Quiet);
    let v = spillway::sim::suite::verdict(&results);
    assert_eq!(v.reversals_over_hpa, Vec::<String>::new());
    assert_eq!(v.rollouts_under_load, 0);
    assert_eq!(v.eci_while_ecs_free_over, Vec::<String>::new());
    assert_eq!(v.eci_spend_over_reactive, Vec::<String>::new());
    assert!(v.cost_vs_oracle_geomean <= 1.02, "{v:?}");
}

/// Half the requests on long-lived connections (`drills/connections`): spillway removes the
/// pods it chose by their connections, every one of them, and a policy that never scales in
/// resets nothing.
#[test]
fn scale_ins_remove_the_pods_chosen_by_their_connections() {
    let s = Scenario::load(std::path::Path::new(
        "drills/connections/01-peak-half-long-lived.yaml",
    ))
    .unwrap();
    let report = run(&s, &mut Quiet);
    assert!(report.connections);
    let sw = &by_policy(&report.runs, "spillway").summary;
    let hpa = &by_policy(&report.runs, "hpa").summary;
    let st = &by_policy(&report.runs, "static").summary;
    assert!(sw.victims.as_chosen >= 10, "{:?}", sw.victims);
    assert_eq!(sw.victims.kept, 0, "the ReplicaSet took other pods");
    assert_eq!(hpa.victims.as_chosen + hpa.victims.kept, 0);
    assert_eq!(st.connection_resets, 0.0);
    assert!(sw.connection_resets > 0.0 && hpa.connection_resets > 0.0);
    let table = spillway::sim::report::table(&report);
    assert!(
        table.contains("spillway: long-lived connections reset"),
        "{table}"
    );
}

/// Issue 29: a slow start in front of the pods (the load balancer ramps each new pod from 10 %
/// over a minute, as Envoy's slow start) leaves the warm pods carrying a surge: the same flash
/// crowd is short for longer, for every policy that adds pods. Counting the ramp
/// (`spec.warmup`) makes it less short. `drills/warmup/01` is that crowd, told.
#[test]
fn a_slow_start_makes_a_surge_short_for_longer_and_counting_it_makes_it_less_so() {
    let told = Scenario::load(std::path::Path::new(
        "drills/warmup/01-flash-crowd-slow-start.yaml",
    ))
    .unwrap();
    assert!(told.gateway.warmup.is_some() && told.policy.warmup == told.gateway.warmup);
    let mut plain = told.clone();
    plain.gateway.warmup = None;
    plain.policy.warmup = None;
    let plain = run(&plain, &mut Quiet);
    let mut untold = told.clone();
    untold.policy.warmup = None;
    let unaware = run(&untold, &mut Quiet);
    let counted = run(&told, &mut Quiet);
    let short = |r: &spillway::sim::drill::DrillReport, p: &str| {
        by_policy(&r.runs, p).summary.underprovisioned_pod_seconds
    };
    for p in ["spillway", "hpa"] {
        assert!(
            short(&unaware, p) > short(&plain, p) + 100.0,
            "{p}: {} with the ramp, {} without",
            short(&unaware, p),
            short(&plain, p)
        );
    }
    // The HPA knows nothing of it either way.
    assert_eq!(short(&counted, "hpa"), short(&unaware, "hpa"));
    // Told, a surge on the ramping fleet reads as the burst it is: less short.
    assert!(
        short(&counted, "spillway") < short(&unaware, "spillway"),
        "{} counted, {} not",
        short(&counted, "spillway"),
        short(&unaware, "spillway")
    );
}

/// Issue 29, item 3: after a scale-out, long-lived connections stay on the old pods. Dealt in
/// turn (the cloud's default), the spread above 1.25 lasts about a connection lifetime; dealt
/// to the pods with the fewest (`wlc`, `drills/connections/02`), a fraction of it, closing
/// nothing; a 5-minute maximum connection age (Envoy's `max_connection_duration`) shortens it
/// too, by closing tens of thousands of connections.
#[test]
fn least_connections_rebalances_a_scale_out_without_closing_connections() {
    let wlc = Scenario::load(std::path::Path::new(
        "drills/connections/02-scale-out-least-connections.yaml",
    ))
    .unwrap();
    let conn = wlc.gateway.connections.unwrap();
    let mut rr = wlc.clone();
    rr.gateway.connections = Some(spillway::sim::cluster::Connections {
        dealing: spillway::sim::cluster::Dealing::RoundRobin,
        ..conn
    });
    let mut aged = rr.clone();
    aged.gateway.connections = Some(spillway::sim::cluster::Connections {
        max_age_seconds: Some(300.0),
        ..rr.gateway.connections.unwrap()
    });
    let [wlc, rr, aged] = [wlc, rr, aged].map(|s| {
        let r = run(&s, &mut Quiet);
        by_policy(&r.runs, "spillway").summary.clone()
    });
    assert!(
        wlc.longest_unbalanced_seconds * 3.0 < rr.longest_unbalanced_seconds,
        "wlc {} s, round robin {} s",
        wlc.longest_unbalanced_seconds,
        rr.longest_unbalanced_seconds
    );
    assert!(rr.longest_unbalanced_seconds > 400.0, "{rr:?}");
    assert!(aged.longest_unbalanced_seconds < rr.longest_unbalanced_seconds);
    // The age closes ten times more connections than every scale-in of the run resets.
    assert!(
        aged.connections_aged_out > 10.0 * aged.connection_resets,
        "{} closed at their age, {} reset",
        aged.connections_aged_out,
        aged.connection_resets
    );
    // Where the connections go barely changes what the fleet costs.
    assert!(
        (wlc.eci_pod_seconds - rr.eci_pod_seconds).abs() <= 0.02 * rr.eci_pod_seconds,
        "{} vs {}",
        wlc.eci_pod_seconds,
        rr.eci_pod_seconds
    );
}

/// Issue 28's groundwork: spillway learns how long each pool takes to start a pod from the pods
/// it sees start, and the figure it plans with is the drill's own p95 within 15 %, whatever the
/// latencies; a pool that started nothing keeps its default.
#[test]
fn each_pools_start_latency_is_learnt_from_the_pods_it_starts() {
    // spillway alone on `s`: what it expects of each pool's starts, against the drill's.
    let starts = |mut s: Scenario| {
        s.policies = vec![PolicyKind::Spillway];
        let report = run(&s, &mut Quiet);
        by_policy(&report.runs, "spillway")
            .summary
            .starts
            .clone()
            .unwrap()
    };
    for (ecs, eci) in [(5.0, 40.0), (20.0, 90.0), (2.0, 15.0)] {
        let mut s = Scenario::default();
        s.latencies.ecs_start_seconds = ecs;
        s.latencies.eci_start_seconds = eci;
        let e = starts(s);
        for (pool, p) in [("ECS", &e.ecs), ("ECI", &e.eci)] {
            let truth = p.truth.unwrap();
            assert!(p.starts >= 3, "{pool}: {p:?}");
            let learnt = p.learnt.unwrap();
            assert!(
                (learnt - truth).abs() <= 0.15 * truth,
                "{pool} at {ecs}/{eci}: learnt {learnt}, the drill's p95 {truth}"
            );
            assert_eq!(p.planned, learnt);
        }
    }
    // No surge: no pod starts, and the defaults stand.
    let mut s = Scenario::default();
    s.load = LoadProfile {
        components: vec![Component::Constant { rps: 2000.0 }],
    };
    let e = starts(s);
    assert_eq!((e.ecs.learnt, e.eci.learnt), (None, None));
    assert_eq!(
        (e.ecs.planned, e.eci.planned),
        (15.0, 40.0),
        "eci.startSeconds unset: 40"
    );
}

fn events_drill(name: &str) -> spillway::sim::drill::DrillReport {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("drills/events")
        .join(name);
    run(&Scenario::load(&path).unwrap(), &mut Quiet)
}

/// spillway's first decision for the planned event `name`.
fn first_planned(
    report: &spillway::sim::drill::DrillReport,
    name: &str,
) -> spillway::sim::drill::DecisionLog {
    let needle = format!("planned event {name}");
    by_policy(&report.runs, "spillway")
        .decisions
        .iter()
        .find(|d| d.summary.contains(&needle))
        .unwrap()
        .clone()
}

fn event(report: &spillway::sim::drill::DrillReport, p: &str) -> spillway::sim::drill::EventResult {
    let s = &by_policy(&report.runs, p).summary;
    assert_eq!(s.events.len(), 1, "{s:?}");
    s.events[0].clone()
}

/// Issue 28: a planned event, on time. spillway has the capacity ready when the doors open,
/// each pool raised its learnt start latency ahead, at no more pod·s ahead of the start than
/// 1.2× the oracle's (perfect foresight); `cron` (the replicas at the start, as KEDA's cron
/// scaler or CronHPA) is late by the start latency. When the load rises over 30 s where the plan
/// said a step, the plan still serves it all.
#[test]
fn a_planned_event_is_ready_at_its_start_and_cron_is_late() {
    let report = events_drill("07-doors-open.yaml");
    let (sw, cron, oracle) = (
        event(&report, "spillway"),
        event(&report, "cron"),
        event(&report, "oracle"),
    );
    assert!(sw.served >= 0.99, "{sw:?}");
    assert!(
        sw.pod_seconds_before <= 1.2 * oracle.pod_seconds_before,
        "{sw:?}\n{oracle:?}"
    );
    assert!(cron.served < 0.99 && cron.short_seconds >= 40.0, "{cron:?}");
    assert_eq!(cron.pod_seconds_before, 0.0, "cron raises nothing ahead");
    let risen = events_drill("01-on-time.yaml");
    assert!(event(&risen, "spillway").served >= 0.99);
    // The plan held through the window, then the count left by the normal scale-down.
    let s = &by_policy(&report.runs, "spillway").summary;
    assert!(s.final_replicas <= 6 && s.final_eci_pods == 0, "{s:?}");
}

/// Reactive scaling stays on top of a plan: a sale larger than planned is served sooner than
/// `cron` or the HPA serve it; one that never comes costs the plan's pods for its window, and
/// not a minute past the scale-down window after it.
#[test]
fn a_plan_is_a_floor_not_a_ceiling_and_lapses_after_its_window() {
    let larger = events_drill("02-larger-than-planned.yaml");
    let (sw, cron) = (event(&larger, "spillway"), event(&larger, "cron"));
    assert!(sw.served > cron.served, "{sw:?}\n{cron:?}");
    let s = &by_policy(&larger.runs, "spillway").summary;
    assert_eq!(
        s.peak_replicas, 40,
        "the load above the plan was served: {s:?}"
    );
    let cancelled = events_drill("04-cancelled.yaml");
    let run = by_policy(&cancelled.runs, "spillway");
    let count_at = |t: u64| {
        run.timeline
            .iter()
            .rev()
            .find(|p| p.t <= t)
            .map(|p| p.desired)
            .unwrap()
    };
    assert!(count_at(1790) >= 30, "raised ahead for the plan");
    assert!(count_at(2990) >= 30, "held through the window");
    // The window ends at 3000; the HPA's 5-minute window holds the plan's floor, then it goes.
    assert!(count_at(3000 + 300 + 120) <= 6, "{}", count_at(3420));
}

/// A plan made after its pods had to start is at risk, said once it is known, and still
/// served sooner than `cron` serves it; a plan followed on time (a ramp, raised step by step)
/// never is.
#[test]
fn a_plan_made_too_late_is_at_risk_and_one_on_time_never() {
    let report = events_drill("08-planned-late.yaml");
    let first = first_planned(&report, "sale");
    assert!((1790..1800).contains(&first.t), "{}", first.t);
    assert!(
        first.summary.contains("at risk: planned too late"),
        "{}",
        first.summary
    );
    let (sw, cron) = (event(&report, "spillway"), event(&report, "cron"));
    assert!(sw.served > cron.served, "{sw:?}\n{cron:?}");
    let ramp = events_drill("06-ramp-planned.yaml");
    let risky: Vec<_> = by_policy(&ramp.runs, "spillway")
        .decisions
        .iter()
        .filter(|d| d.summary.contains("at risk"))
        .collect();
    assert!(risky.is_empty(), "{risky:?}");
}

/// A plan that cannot be met says so in the decision, with the reason: 24k rps needs 48
/// replicas at the target, maxReplicas is 40.
#[test]
fn a_plan_beyond_max_replicas_is_at_risk() {
    let report = events_drill("05-beyond-max-replicas.yaml");
    let first = first_planned(&report, "sale");
    assert!(
        first
            .summary
            .contains("at risk: 48 replicas serve 24000 rps; maxReplicas is 40"),
        "{}",
        first.summary
    );
    assert!(first.t < 1800, "raised ahead of the start: {}", first.t);
}

/// A scenario's events are checked: an end before the start, no demand, a ramp before the
/// drill, a policy without a request-rate metric.
#[test]
fn bad_planned_events_are_named() {
    let mut s =
        Scenario::parse("events:\n  - {name: a, startSeconds: 100, endSeconds: 200, rps: 1000}\n")
            .unwrap();
    s.policy
        .metrics
        .retain(|m| m.preset != Some(spillway::policy::Preset::RequestRate));
    s.policy.metrics.push(spillway::policy::MetricSpec {
        name: None,
        preset: Some(spillway::policy::Preset::Cpu),
        query: None,
        target_per_replica: 0.5,
    });
    let text = format!("{:?}", s.validate());
    assert!(text.contains("needs a requestRate metric"), "{text}");
    let errors = Scenario::parse(
        "events:\n  - {name: a, startSeconds: 100, endSeconds: 50, rps: 0, rampSeconds: 200}\n",
    )
    .unwrap_err();
    let text = format!("{errors:?}");
    for field in [
        "events[0].endSeconds",
        "events[0].rps",
        "events[0].rampSeconds",
    ] {
        assert!(text.contains(field), "{field}: {text}");
    }
}
