use super::*;
use crate::model::{Taint, TaintEffect};
use crate::policy::ElasticGateway;
use proptest::prelude::*;

const GI: i64 = 1 << 30;
const GW: Resources = Resources::pod(2000, 2 * GI);

fn policy() -> ElasticGatewaySpec {
    let mut p = ElasticGateway::scenario_default().spec;
    // Short hysteresis, so the weight tests stay readable.
    p.placement.exhausted_after_seconds = 600;
    p.placement.recovered_after_seconds = 300;
    p.placement.min_weight_change_interval_seconds = 1800;
    p.min_replicas = 2;
    p.max_replicas = 40;
    p.eci.max_replicas = None;
    p.behavior.lead_time.seconds = 0;
    p.metrics[0].target_per_replica = 500.0;
    p
}

/// The opt-in mode that yields ECS after it stayed exhausted.
fn yield_mode() -> ElasticGatewaySpec {
    let mut p = policy();
    p.placement.exhausted_weights = PoolWeights { ecs: 20, eci: 80 };
    p
}

/// A cluster of `ecs` dedicated nodes (8 vCPU, 32 GiB, `other_cpu` used by other workloads)
/// and one virtual node, with `on_ecs` gateway pods spread over ECS and `on_eci` on the
/// virtual node.
struct Cluster {
    nodes: Vec<Node>,
    pods: Vec<GatewayPod>,
}

fn cluster(ecs: usize, other_cpu: i64, on_ecs: usize, on_eci: usize) -> Cluster {
    let mut nodes: Vec<Node> = (0..ecs)
        .map(|i| Node {
            name: format!("ecs-{i}"),
            labels: [("mykey4pod".to_string(), "asmgateway".to_string())].into(),
            taints: vec![Taint {
                key: "mykey".into(),
                value: "myvalue".into(),
                effect: TaintEffect::NoSchedule,
            }],
            allocatable: Resources::new(8000, 32 * GI, 110),
            requested: Resources::new(other_cpu, 2 * GI, 3),
            unschedulable: false,
        })
        .collect();
    nodes.push(Node {
        name: "virtual-kubelet".into(),
        labels: [("type".to_string(), "virtual-kubelet".to_string())].into(),
        taints: vec![Taint {
            key: "virtual-kubelet.io/provider".into(),
            value: "alibabacloud".into(),
            effect: TaintEffect::NoSchedule,
        }],
        allocatable: Resources::new(2_000_000, 8192 * GI, 20_000),
        requested: Resources::default(),
        unschedulable: false,
    });
    let mut pods = Vec::new();
    for i in 0..on_ecs {
        let n = i % ecs;
        nodes[n].requested.add(&GW);
        pods.push(pod(
            &format!("gw-ecs-{i}"),
            Some(&format!("ecs-{n}")),
            Pool::Ecs,
            i as f64,
        ));
    }
    for i in 0..on_eci {
        nodes[ecs].requested.add(&GW);
        pods.push(pod(
            &format!("gw-eci-{i}"),
            Some("virtual-kubelet"),
            Pool::Eci,
            100.0 + i as f64,
        ));
    }
    Cluster { nodes, pods }
}

fn pod(name: &str, node: Option<&str>, pool: Pool, created_at: f64) -> GatewayPod {
    GatewayPod {
        name: name.into(),
        node: node.map(String::from),
        pool,
        ready: true,
        pending: false,
        terminating: false,
        requests: GW,
        deletion_cost: None,
        created_at,
        ready_since: None,
        drain: None,
    }
}

fn obs<'a>(now: f64, c: &'a Cluster, loads: &'a [LoadSample], spec: i32) -> Observation<'a> {
    Observation {
        now,
        loads,
        fast: None,
        spec_replicas: spec,
        pod_requests: GW,
        weights: Some(PoolWeights { ecs: 80, eci: 20 }),
        rollout_in_progress: false,
        pods: &c.pods,
        nodes: &c.nodes,
        ecs_claimed_elsewhere: 0,
        spread_missing: false,
        planned: &[],
        pool_usage: None,
    }
}

fn once(p: &ElasticGatewaySpec, c: &Cluster, load: LoadSample, spec: i32) -> Decision {
    decide(p, &obs(1000.0, c, &[load], spec), &EngineState::default()).decision
}

#[test]
fn hpa_parity_table() {
    let p = policy();
    let c = cluster(3, 0, 4, 0);
    // (load, current, want desired, want why)
    let cases = [
        (2000.0, 4, 4, Why::Steady),        // on target
        (2100.0, 4, 4, Why::Steady),        // ratio 1.05, within tolerance
        (2300.0, 4, 5, Why::Load),          // ratio 1.15: ceil(4.6)
        (4000.0, 4, 8, Why::Load),          // double
        (20_000.0, 4, 8, Why::RateLimited), // 40 asked; +100% or +4 per 15 s allows 8
        (100.0, 4, 4, Why::Stabilized),     // scale-down waits for the 300 s window
    ];
    for (load, current, want, why) in cases {
        let d = once(&p, &c, LoadSample::Total(load), current);
        assert_eq!(
            (d.replicas.desired, d.replicas.why),
            (want, why),
            "load {load}: {}",
            d.replicas.reason
        );
    }
}

#[test]
fn missing_data_never_scales_down() {
    let mut p = policy();
    p.metrics.push(crate::policy::MetricSpec {
        name: Some("connections".into()),
        preset: Some(crate::policy::Preset::ActiveConnections),
        query: None,
        target_per_replica: 1000.0,
    });
    let c = cluster(3, 0, 6, 0);
    // Everything missing: hold, and say which query and why.
    let all = [
        LoadSample::Missing("prometheus unreachable".into()),
        LoadSample::Missing("empty result".into()),
    ];
    let d = decide(&p, &obs(0.0, &c, &all, 6), &EngineState::default()).decision;
    assert_eq!(
        (d.replicas.desired, d.replicas.why, d.phase),
        (6, Why::MissingData, Phase::Holding)
    );
    assert!(
        d.replicas
            .reason
            .contains("request_rate: prometheus unreachable"),
        "{}",
        d.replicas.reason
    );
    assert!(d.replicas.reason.contains("connections: empty result"));
    // One missing and the other asks for less: still hold.
    let partial = [LoadSample::Total(500.0), LoadSample::Missing("NaN".into())];
    let d = decide(&p, &obs(0.0, &c, &partial, 6), &EngineState::default()).decision;
    assert_eq!((d.replicas.desired, d.replicas.why), (6, Why::MissingData));
    // One missing and the other asks for more: scale up.
    let partial = [LoadSample::Total(5000.0), LoadSample::Missing("NaN".into())];
    let d = decide(&p, &obs(0.0, &c, &partial, 6), &EngineState::default()).decision;
    assert_eq!(d.replicas.desired, 10);
    assert!(d.replicas.reason.contains("missing"));
    // NaN and negative totals are missing, not zero.
    let d = once(&policy(), &c, LoadSample::Total(f64::NAN), 6);
    assert_eq!((d.replicas.desired, d.replicas.why), (6, Why::MissingData));
    // The largest metric wins.
    let both = [LoadSample::Total(1000.0), LoadSample::Total(9000.0)];
    let d = decide(&p, &obs(0.0, &c, &both, 6), &EngineState::default()).decision;
    assert_eq!(d.replicas.hpa, Some(9));
}

/// A fresh memory (a restart, a new leader) waits one window before scaling down, as the HPA's
/// `recordInitialRecommendation`; the pods ECS holds wait the ECS hold (twice the window).
#[test]
fn scale_down_after_stabilization_window() {
    let c = cluster(3, 0, 10, 0);
    let loads = [LoadSample::Total(1000.0)];
    let first_drop = |p: &ElasticGatewaySpec| {
        let mut state = EngineState::default();
        for t in (0..=700).step_by(15) {
            let out = decide(p, &obs(f64::from(t), &c, &loads, 10), &state);
            state = out.state;
            if out.decision.replicas.desired < 10 {
                return Some((t, out.decision.replicas.desired));
            }
        }
        None
    };
    let mut p = policy();
    assert_eq!(first_drop(&p), Some((600, 2)));
    p.behavior.ecs_hold_seconds = Some(0);
    assert_eq!(first_drop(&p), Some((300, 2)));
}

/// After a gap in the data (a Prometheus restart), the first readings are partial: `rate()`
/// needs two fresh samples per series, so a sum over the pods comes back low for a few seconds.
/// They must not shrink the fleet before a full scale-down window of fresh readings.
#[test]
fn readings_right_after_a_data_gap_wait_a_full_window_before_scale_down() {
    let mut p = policy();
    p.behavior.scale_down.stabilization_window_seconds = Some(20);
    // The window alone: no ECS hold beyond it.
    p.behavior.ecs_hold_seconds = Some(0);
    let c = cluster(3, 0, 40, 0);
    let mut state = EngineState::default();
    let mut desired = vec![];
    for t in 0..=150 {
        let load = match t {
            0..60 => LoadSample::Total(20_000.0),
            60..90 => LoadSample::Missing("Prometheus unreachable".into()),
            // The partial sums right after it comes back, then the real load has gone.
            90..93 => LoadSample::Total(500.0),
            _ => LoadSample::Total(1_000.0),
        };
        let out = decide(&p, &obs(f64::from(t), &c, &[load], 40), &state);
        state = out.state;
        desired.push(out.decision.replicas.desired);
    }
    // Held through the gap and for the 20 s window after its last held run (t=89).
    assert!(desired[..109].iter().all(|d| *d == 40), "{desired:?}");
    // Then the real scale-down happens: the hold is not forever.
    assert!(desired[109..].iter().any(|d| *d < 40), "{desired:?}");
    // Without the gap, the same partial reading would have been obeyed at once (stabilization
    // window long passed): this is what the held runs prevent.
    let mut fresh = EngineState::default();
    for t in 0..60 {
        fresh = decide(
            &p,
            &obs(f64::from(t), &c, &[LoadSample::Total(20_000.0)], 40),
            &fresh,
        )
        .state;
    }
    let d = decide(&p, &obs(90.0, &c, &[LoadSample::Total(500.0)], 40), &fresh).decision;
    assert!(d.replicas.desired < 40, "control: {}", d.replicas.desired);
}

/// A gap also breaks the lead-time trend: the ramp of partial sums after it is not a surge.
#[test]
fn a_data_gap_resets_the_lead_time_trend() {
    let mut p = policy();
    p.behavior.lead_time.seconds = 30;
    p.behavior.lead_time.window_seconds = 12;
    let c = cluster(3, 0, 4, 0);
    let mut state = EngineState::default();
    for t in 0..30 {
        state = decide(
            &p,
            &obs(f64::from(t), &c, &[LoadSample::Total(2000.0)], 4),
            &state,
        )
        .state;
    }
    for t in 30..40 {
        let gap = [LoadSample::Missing("Prometheus unreachable".into())];
        state = decide(&p, &obs(f64::from(t), &c, &gap, 4), &state).state;
    }
    // Back: the sum climbs from partial to full over a few seconds.
    let mut most = 0;
    let ramp = [(40, 400.0), (41, 1200.0), (42, 1900.0)];
    for (t, v) in ramp.into_iter().chain((43..80).map(|t| (t, 2000.0))) {
        let out = decide(
            &p,
            &obs(f64::from(t), &c, &[LoadSample::Total(v)], 4),
            &state,
        );
        state = out.state;
        most = most.max(out.decision.replicas.desired);
    }
    assert_eq!(
        most, 4,
        "a post-gap ramp of partial sums was taken for a surge"
    );
}

#[test]
fn ecs_room_respects_taints_affinity_and_resources() {
    let p = policy();
    let mut c = cluster(3, 3000, 0, 0); // 5 vCPU free each → 2 gateway pods per node
    let d = once(&p, &c, LoadSample::Total(1000.0), 2);
    assert_eq!((d.survey.ecs_nodes, d.survey.ecs_room), (3, 6));
    // A node whose taint the gateway does not tolerate, a cordoned one, and one out of the pool.
    c.nodes[0].taints.push(Taint {
        key: "dedicated".into(),
        value: "db".into(),
        effect: TaintEffect::NoSchedule,
    });
    c.nodes[1].unschedulable = true;
    c.nodes.push(Node {
        name: "plain".into(),
        allocatable: Resources::new(64000, 256 * GI, 110),
        ..Default::default()
    });
    let d = once(&p, &c, LoadSample::Total(1000.0), 2);
    assert_eq!((d.survey.ecs_nodes, d.survey.ecs_room), (1, 2));
    // Memory and pod count limit too.
    let mut c = cluster(1, 0, 0, 0);
    c.nodes[0].requested.memory_bytes = 27 * GI; // 5 GiB left → 2 pods
    assert_eq!(
        once(&p, &c, LoadSample::Total(1000.0), 2).survey.ecs_room,
        2
    );
    c.nodes[0].requested.pods = 109; // one slot left
    assert_eq!(
        once(&p, &c, LoadSample::Total(1000.0), 2).survey.ecs_room,
        1
    );
    // Headroom is kept free for others.
    let mut p = policy();
    p.placement.ecs_headroom_pods = 1;
    let c = cluster(3, 3000, 0, 0);
    assert_eq!(
        once(&p, &c, LoadSample::Total(1000.0), 2).survey.ecs_room,
        5
    );
}

#[test]
fn overflow_count_and_phase() {
    let p = policy();
    // 2 nodes x 4 pods = 8 on ECS; 4 already there, room 4.
    let c = cluster(2, 0, 4, 0);
    let d = once(&p, &c, LoadSample::Total(6000.0), 4);
    assert_eq!(d.replicas.desired, 8); // rate-limited: 4 → 8 first
    assert_eq!(
        (d.survey.ecs_capacity, d.replicas.expected_eci, d.phase),
        (8, 0, Phase::Normal)
    );
    let c = cluster(2, 0, 8, 4);
    let d = once(&p, &c, LoadSample::Total(6000.0), 12);
    assert_eq!(
        (d.replicas.desired, d.replicas.expected_eci, d.phase),
        (12, 4, Phase::Overflow)
    );
    // The peak has passed: ECS could hold it all but ECI pods remain.
    let d = once(&p, &c, LoadSample::Total(3000.0), 12);
    assert_eq!(d.phase, Phase::Draining);
}

#[test]
fn eci_cap_lowers_desired_count() {
    let mut p = policy();
    p.eci.max_replicas = Some(3);
    let c = cluster(2, 0, 8, 0);
    let d = once(&p, &c, LoadSample::Total(10_000.0), 8);
    assert_eq!(
        (d.replicas.desired, d.replicas.why, d.replicas.expected_eci),
        (11, Why::EciCap, 3)
    );
    assert!(
        d.replicas.reason.contains("capped at 11"),
        "{}",
        d.replicas.reason
    );
    // A cost cap: one 2 vCPU/2 GiB ECI pod costs (2*0.000049 + 2*0.00000613)*3600 ≈ 0.397/h.
    let mut p = policy();
    p.eci.max_cost_per_hour = Some(1.0);
    assert_eq!(eci_cap(&p, GW), Some(2));
    let d = once(&p, &c, LoadSample::Total(10_000.0), 8);
    assert_eq!(d.replicas.desired, 10);
}

#[test]
fn weights_change_with_hysteresis_and_not_during_rollout() {
    let p = yield_mode();
    let c = cluster(2, 0, 8, 4); // ECS full, 12 needed
    let loads = [LoadSample::Total(6000.0)];
    let mut state = EngineState::default();
    let mut weights = PoolWeights { ecs: 80, eci: 20 };
    let mut changes = vec![];
    let mut rollout = false;
    for t in (0..=3000).step_by(10) {
        let t = f64::from(t);
        let mut o = obs(t, &c, &loads, 12);
        o.weights = Some(weights);
        o.rollout_in_progress = rollout && t < 700.0;
        let out = decide(&p, &o, &state);
        state = out.state;
        if out.decision.weights.changed() {
            weights = out.decision.weights.target;
            changes.push((t, weights));
            rollout = true;
        }
    }
    // Exhausted from t=0; switched after 600 s, then held (still exhausted).
    assert_eq!(changes, vec![(600.0, PoolWeights { ecs: 20, eci: 80 })]);

    // Recovery: ECS can hold the fleet again, but the last change was recent.
    let roomy = cluster(4, 0, 8, 4);
    let loads = [LoadSample::Total(6000.0)];
    let mut changes = vec![];
    for t in (610..=3000).step_by(10) {
        let t = f64::from(t);
        let mut o = obs(t, &roomy, &loads, 12);
        o.weights = Some(weights);
        let out = decide(&p, &o, &state);
        state = out.state;
        if out.decision.weights.changed() {
            weights = out.decision.weights.target;
            changes.push(t);
        }
    }
    // Recovered from 610 (needs 300 s), but the minimum interval (1800 s after 600) rules.
    assert_eq!(changes, vec![2400.0]);
    assert_eq!(weights, PoolWeights { ecs: 80, eci: 20 });
    assert_eq!(state.weights.changes, 2);
}

/// Exhausted weights that prefer ECI roll the whole fleet onto ECI; above the ECI cap that
/// would cost capacity, so the shift waits.
#[test]
fn weights_do_not_shift_the_fleet_onto_eci_above_its_cap() {
    let mut p = yield_mode();
    let c = cluster(2, 0, 8, 4); // ECS full, 12 needed
    let loads = [LoadSample::Total(6000.0)];
    for (cap, shifts) in [(Some(10), false), (Some(12), true), (None, true)] {
        p.eci.max_replicas = cap;
        let mut state = EngineState::default();
        let (mut changed, mut reason) = (false, String::new());
        for t in (0..=700).step_by(10) {
            let out = decide(&p, &obs(f64::from(t), &c, &loads, 12), &state);
            state = out.state;
            changed |= out.decision.weights.changed();
            reason = out.decision.weights.reason;
        }
        assert_eq!(changed, shifts, "cap {cap:?}: {reason}");
        if !shifts {
            assert!(reason.contains("above its cap of 10"), "{reason}");
        }
    }
}

#[test]
fn weights_do_not_flap_when_capacity_oscillates() {
    let p = yield_mode();
    let full = cluster(2, 0, 8, 4);
    let roomy = cluster(4, 0, 8, 4);
    let loads = [LoadSample::Total(6000.0)];
    let mut state = EngineState::default();
    let mut changes = 0;
    for t in (0..7200).step_by(10) {
        // ECS full for 5 minutes, room for 4, and again: never long enough to switch.
        let c = if (t / 300) % 2 == 0 { &full } else { &roomy };
        let out = decide(&p, &obs(f64::from(t), c, &loads, 12), &state);
        state = out.state;
        changes += usize::from(out.decision.weights.changed());
    }
    assert_eq!(changes, 0);
}

#[test]
fn foreign_weights_are_restored() {
    let p = policy();
    let c = cluster(2, 0, 4, 0);
    let loads = [LoadSample::Total(2000.0)];
    let mut o = obs(0.0, &c, &loads, 4);
    o.weights = Some(PoolWeights { ecs: 50, eci: 50 });
    let d = decide(&p, &o, &EngineState::default()).decision;
    assert_eq!(d.weights.target, PoolWeights { ecs: 80, eci: 20 });
    assert!(d.weights.reason.contains("not the policy's"));
}

#[test]
fn deletion_costs_put_eci_pods_first_and_skip_correct_ones() {
    let p = policy();
    let mut c = cluster(2, 0, 3, 2);
    c.pods[0].deletion_cost = Some(placement::ECS_DELETION_COST);
    c.pods.push(pod("gw-pending", None, Pool::Pending, 500.0));
    let mut leaving = pod("gw-leaving", Some("virtual-kubelet"), Pool::Eci, 1.0);
    leaving.terminating = true;
    c.pods.push(leaving);
    let d = once(&p, &c, LoadSample::Total(2500.0), 5);
    let costs: std::collections::BTreeMap<_, _> = d.deletion_costs.iter().cloned().collect();
    assert_eq!(costs.len(), 4, "{costs:?}"); // gw-ecs-0 already right, pending and terminating skipped
    assert!(costs.iter().all(|(name, cost)| if name.contains("eci") {
        *cost < 0
    } else {
        *cost > 0
    }));
    let max_eci = costs
        .iter()
        .filter(|(n, _)| n.contains("eci"))
        .map(|(_, c)| *c)
        .max();
    let min_ecs = costs
        .iter()
        .filter(|(n, _)| n.contains("ecs"))
        .map(|(_, c)| *c)
        .min();
    assert!(max_eci < min_ecs);
}

#[test]
fn lead_time_sizes_for_the_forecast_on_a_rise() {
    let mut p = policy();
    p.behavior.lead_time.seconds = 45;
    let c = cluster(4, 0, 4, 0);
    let mut state = EngineState::default();
    let mut last = None;
    // Load rising 50/s from 2000 (on target for 4 replicas).
    for t in (0..=60).step_by(5) {
        let load = 2000.0 + 50.0 * f64::from(t);
        let loads = [LoadSample::Total(load)];
        let out = decide(&p, &obs(f64::from(t), &c, &loads, 4), &state);
        state = out.state;
        last = Some(out.decision);
    }
    let d = last.unwrap();
    // Now 5000 → HPA says 10; 45 s ahead ~7250 → 15 (rate limit: 4 → 8 in one step).
    assert_eq!(d.replicas.hpa, Some(10));
    assert_eq!(d.replicas.lead, Some(15));
    assert_eq!(d.replicas.why, Why::RateLimited);
    let f = d.readings[0].forecast.unwrap();
    assert!((f - 7250.0).abs() < 1.0, "{f}");
    // Without the rise there is no lead.
    let flat = [LoadSample::Total(5000.0)];
    let mut state = EngineState::default();
    for t in (0..=60).step_by(5) {
        state = decide(&p, &obs(f64::from(t), &c, &flat, 10), &state).state;
    }
    let d = decide(&p, &obs(65.0, &c, &flat, 10), &state).decision;
    assert_eq!((d.replicas.lead, d.replicas.desired), (None, 10));
    // A steady load at exactly the target, with a little upward noise, is within the HPA's
    // tolerance: the forecast adds no pod.
    let mut state = EngineState::default();
    let mut most = 0;
    for t in 0..=60 {
        let noisy = [LoadSample::Total(1995.0 + 0.2 * f64::from(t))];
        let out = decide(&p, &obs(f64::from(t), &c, &noisy, 4), &state);
        state = out.state;
        most = most.max(out.decision.replicas.desired);
    }
    assert_eq!(most, 4);
}

#[test]
fn cost_arithmetic() {
    let mut p = policy();
    p.cost.ecs_default_node_price_per_hour = 2.0;
    p.cost.eci_vcpu_price_per_second = 0.00005;
    p.cost.eci_gib_price_per_second = 0.000005;
    let c = cluster(2, 0, 4, 2);
    let d = once(&p, &c, LoadSample::Total(3000.0), 6);
    // ECS: two dedicated nodes at 2.0/h, paid whatever runs there; ECI: 2 × (2×0.00005 +
    // 2×0.000005) × 3600 = 0.792.
    assert!((d.cost.ecs_per_hour - 4.0).abs() < 1e-9, "{:?}", d.cost);
    assert!((d.cost.eci_per_hour - 0.792).abs() < 1e-9);
    // All-ECS at the peak of 6 pods: 4 fit a node, so 2 nodes: 4.0; saving 4.0 - 4.792.
    assert!((d.cost.all_ecs_peak_per_hour - 4.0).abs() < 1e-9);
    assert!((d.cost.saving_per_hour + 0.792).abs() < 1e-9);
    assert_eq!(d.cost.currency, "CNY");
}

#[test]
fn emptying_ecs_never_looks_cheaper() {
    let p = policy();
    for on_ecs in 0..8 {
        let more_on_ecs = once(
            &p,
            &cluster(2, 0, on_ecs + 1, 7 - on_ecs),
            LoadSample::Total(4000.0),
            8,
        );
        let fewer_on_ecs = once(
            &p,
            &cluster(2, 0, on_ecs, 8 - on_ecs),
            LoadSample::Total(4000.0),
            8,
        );
        let total = |d: &Decision| d.cost.ecs_per_hour + d.cost.eci_per_hour;
        assert!(total(&more_on_ecs) < total(&fewer_on_ecs));
        assert_eq!(
            more_on_ecs.cost.ecs_per_hour,
            fewer_on_ecs.cost.ecs_per_hour
        );
    }
}

#[test]
fn peak_eci_spend_adds_up_over_a_peak_and_is_kept_after() {
    let p = policy();
    let peak = cluster(2, 0, 8, 2);
    let calm = cluster(2, 0, 8, 0);
    let loads = [LoadSample::Total(5000.0)];
    let mut state = EngineState::default();
    let mut last = 0.0;
    for t in 0..=10 {
        let c = if t < 10 { &peak } else { &calm };
        let out = decide(&p, &obs(f64::from(t) * 60.0, c, &loads, 10), &state);
        state = out.state;
        last = out.decision.cost.peak_eci_spend;
    }
    // Two ECI pods for 9 minutes (the first decision starts the clock).
    let per_pod = cost::eci_pod_per_second(&GW, &p.cost);
    assert!((last - 2.0 * per_pod * 540.0).abs() < 1e-9, "{last}");
}

#[test]
fn paused_holds_and_touches_nothing() {
    let mut p = policy();
    p.paused = true;
    let c = cluster(2, 0, 2, 2);
    let d = once(&p, &c, LoadSample::Total(50_000.0), 4);
    assert_eq!(
        (d.replicas.desired, d.replicas.why, d.phase),
        (4, Why::Paused, Phase::Paused)
    );
    assert!(d.deletion_costs.is_empty() && d.moves.is_empty() && !d.weights.changed());
}

#[test]
fn bounds_are_restored_first() {
    let p = policy();
    let c = cluster(2, 0, 1, 0);
    let d = once(&p, &c, LoadSample::Total(0.0), 1);
    assert_eq!((d.replicas.desired, d.replicas.why), (2, Why::Bounds));
    let d = once(&p, &c, LoadSample::Total(0.0), 0);
    assert_eq!((d.replicas.desired, d.replicas.why), (0, Why::ScaledToZero));
}

#[test]
fn rebalance_moves_one_eci_pod_when_steady_with_room() {
    let mut p = policy();
    p.placement.rebalance = true;
    let c = cluster(4, 0, 6, 2); // room for 10 more on ECS
    let loads = [LoadSample::Total(4000.0)]; // 8 replicas on target
    let d = decide(&p, &obs(1000.0, &c, &loads, 8), &EngineState::default()).decision;
    assert_eq!(d.moves, vec!["gw-eci-1".to_string()], "{}", d.move_reason);
    // Not while a pod is not ready.
    let mut c2 = cluster(4, 0, 6, 2);
    c2.pods[0].ready = false;
    let d = decide(&p, &obs(1000.0, &c2, &loads, 8), &EngineState::default()).decision;
    assert!(d.moves.is_empty());
    // Not when scaling.
    let up = [LoadSample::Total(8000.0)];
    assert!(
        decide(&p, &obs(1000.0, &c, &up, 8), &EngineState::default())
            .decision
            .moves
            .is_empty()
    );
    // Off by default.
    assert!(
        decide(
            &policy(),
            &obs(1000.0, &c, &loads, 8),
            &EngineState::default()
        )
        .decision
        .moves
        .is_empty()
    );
}

/// `cluster` plus one more gateway pod, on ECS or on the virtual node, ready or not.
fn with_added(mut c: Cluster, on_ecs: bool, ready: bool, name: &str) -> Cluster {
    let (node, pool) = if on_ecs {
        ("ecs-3", Pool::Ecs)
    } else {
        ("virtual-kubelet", Pool::Eci)
    };
    if let Some(n) = c.nodes.iter_mut().find(|n| n.name == node) {
        n.requested.add(&GW);
    }
    let mut p = pod(name, Some(node), pool, 900.0);
    p.ready = ready;
    c.pods.push(p);
    c
}

#[test]
fn swap_back_adds_pods_then_gives_back_as_many_eci_ones() {
    let p = policy();
    let loads = [LoadSample::Total(4000.0)]; // 8 replicas on target
    // 6 on ECS (room for 6 more), 2 on ECI, steady: as many more as run on ECI, at most a
    // quarter of the count.
    let c = cluster(4, 0, 6, 2);
    let out = decide(&p, &obs(1000.0, &c, &loads, 8), &EngineState::default());
    let d = &out.decision;
    assert_eq!(
        (d.replicas.desired, d.replicas.why),
        (10, Why::Rebalance),
        "{}",
        d.replicas.reason
    );
    assert!(d.moves.is_empty(), "no eviction: make-before-break");
    // While the added pods start, the count holds at 10 though the load asks for 8.
    let starting = with_added(
        with_added(cluster(4, 0, 6, 2), true, false, "gw-new-1"),
        true,
        false,
        "gw-new-2",
    );
    let out = decide(&p, &obs(1002.0, &starting, &loads, 10), &out.state);
    assert_eq!(
        (out.decision.replicas.desired, out.decision.replicas.why),
        (10, Why::Rebalance),
        "{}",
        out.decision.replicas.reason
    );
    // Ready on ECS: back to 8 (the ReplicaSet removes the ECI pods: lowest deletion cost).
    let landed = with_added(
        with_added(cluster(4, 0, 6, 2), true, true, "gw-new-1"),
        true,
        true,
        "gw-new-2",
    );
    let out = decide(&p, &obs(1010.0, &landed, &loads, 10), &out.state);
    let d = &out.decision;
    assert_eq!((d.replicas.desired, d.replicas.why), (8, Why::Rebalance));
    for eci in ["gw-eci-0", "gw-eci-1"] {
        assert!(
            d.deletion_costs
                .iter()
                .any(|(n, c)| n == eci && *c == placement::ECI_DELETION_COST)
        );
    }
    assert_eq!((out.state.swap, out.state.swap_misses), (None, 0));
    // Had the load risen meanwhile to need the added pods (9.6 of them), the swap ends there:
    // the count goes back only as far as the load allows.
    let started = decide(&p, &obs(1000.0, &c, &loads, 8), &EngineState::default()).state;
    let risen = [LoadSample::Total(4800.0)];
    let d = decide(&p, &obs(1010.0, &landed, &risen, 10), &started).decision;
    assert_eq!(
        (d.replicas.desired, d.swap),
        (10, Some(placement::SwapEvent::LandedEcs)),
        "{}",
        d.replicas.reason
    );
    // Every added pod landed: the next swap need not wait (one pod when one runs on ECI).
    let after = cluster(4, 0, 7, 1);
    let d = decide(&p, &obs(1012.0, &after, &loads, 8), &out.state).decision;
    assert_eq!((d.replicas.desired, d.replicas.why), (9, Why::Rebalance));
    // One that did not land them all waits the rebalance interval.
    let partly = with_added(
        with_added(cluster(4, 0, 6, 2), true, true, "gw-new-1"),
        false,
        true,
        "gw-new-2",
    );
    let started = decide(&p, &obs(1000.0, &c, &loads, 8), &EngineState::default()).state;
    let out = decide(&p, &obs(1010.0, &partly, &loads, 10), &started);
    assert_eq!(
        out.decision.replicas.desired, 8,
        "{}",
        out.decision.replicas.reason
    );
    let d = decide(&p, &obs(1030.0, &after, &loads, 8), &out.state).decision;
    assert_eq!(d.replicas.desired, 8, "{}", d.replicas.reason);
    let d = decide(&p, &obs(1070.0, &after, &loads, 8), &out.state).decision;
    assert_eq!((d.replicas.desired, d.replicas.why), (9, Why::Rebalance));
    // The standard window holding the count above what the load asks (7 of 8, not low enough
    // for the ECI pods' early release) is no reason to wait: they may stay five minutes.
    let d = decide(
        &p,
        &obs(1000.0, &c, &[LoadSample::Total(3400.0)], 8),
        &EngineState::default(),
    )
    .decision;
    assert_eq!(d.replicas.desired, 10, "{}", d.replicas.reason);
    // A larger fleet: a quarter of the count at once, however many run on ECI.
    let big = cluster(8, 0, 12, 12);
    let d = decide(
        &p,
        &obs(1000.0, &big, &[LoadSample::Total(12_000.0)], 24),
        &EngineState::default(),
    )
    .decision;
    assert_eq!(
        (d.replicas.desired, d.replicas.why),
        (30, Why::Rebalance),
        "{}",
        d.replicas.reason
    );
}

#[test]
fn swap_back_adds_up_to_three_while_they_land_on_eci_then_backs_off() {
    let p = policy();
    let loads = [LoadSample::Total(4000.0)];
    let out = decide(
        &p,
        &obs(1000.0, &cluster(4, 0, 6, 2), &loads, 8),
        &EngineState::default(),
    );
    assert_eq!(out.decision.replicas.desired, 10);
    // Both added pods landed on ECI, against the model: one more, three in all.
    let c = with_added(
        with_added(cluster(4, 0, 6, 2), false, true, "gw-new-1"),
        false,
        true,
        "gw-new-2",
    );
    let out = decide(&p, &obs(1050.0, &c, &loads, 10), &out.state);
    assert_eq!(
        (out.decision.replicas.desired, out.decision.replicas.why),
        (11, Why::Rebalance),
        "{}",
        out.decision.replicas.reason
    );
    // The third landed on ECI too: back to 8, and the next try waits twice as long.
    let c = with_added(c, false, true, "gw-new-3");
    let out = decide(&p, &obs(1100.0, &c, &loads, 11), &out.state);
    assert_eq!(
        (out.decision.replicas.desired, out.decision.replicas.why),
        (8, Why::Rebalance)
    );
    assert_eq!(out.state.swap_misses, 1);
    let back = cluster(4, 0, 6, 2);
    let d = decide(&p, &obs(1100.0 + 90.0, &back, &loads, 8), &out.state).decision;
    assert_eq!(d.replicas.desired, 8, "{}", d.replicas.reason);
    let d = decide(&p, &obs(1100.0 + 120.0, &back, &loads, 8), &out.state).decision;
    assert_eq!(d.replicas.desired, 10, "{}", d.replicas.reason);
    assert_eq!(placement::swap_wait(60, 0), 60.0);
    assert_eq!(placement::swap_wait(60, 3), 480.0);
    assert_eq!(placement::swap_wait(60, 30), 3600.0);
}

#[test]
fn swap_back_stands_aside() {
    let loads = [LoadSample::Total(4000.0)];
    let c = cluster(4, 0, 6, 2);
    let swapped = |p: &ElasticGatewaySpec, o: Observation<'_>| {
        decide(p, &o, &EngineState::default()).decision.replicas.why == Why::Rebalance
    };
    let p = policy();
    assert!(swapped(&p, obs(1000.0, &c, &loads, 8)));
    // ECS full: no room to move to.
    assert!(!swapped(&p, obs(1000.0, &cluster(2, 0, 8, 2), &loads, 10)));
    // The load asks for more, or less (the scale-down takes ECI pods first anyway).
    assert!(!swapped(
        &p,
        obs(1000.0, &c, &[LoadSample::Total(6000.0)], 8)
    ));
    assert!(!swapped(
        &p,
        obs(1000.0, &c, &[LoadSample::Total(1000.0)], 8)
    ));
    // A pod not ready, a rollout, maxReplicas.
    let mut unready = cluster(4, 0, 6, 2);
    unready.pods[0].ready = false;
    assert!(!swapped(&p, obs(1000.0, &unready, &loads, 8)));
    let mut rolling = obs(1000.0, &c, &loads, 8);
    rolling.rollout_in_progress = true;
    assert!(!swapped(&p, rolling));
    let mut at_max = policy();
    at_max.max_replicas = 8;
    assert!(!swapped(&at_max, obs(1000.0, &c, &loads, 8)));
    // The ECI cap reached: an added pod landing on ECI would pass it.
    let mut capped = policy();
    capped.eci.max_replicas = Some(2);
    assert!(!swapped(&capped, obs(1000.0, &c, &loads, 8)));
    capped.eci.max_replicas = Some(3);
    assert!(swapped(&capped, obs(1000.0, &c, &loads, 8)));
    // Off, eviction mode on, or dry run.
    for f in [
        |p: &mut ElasticGatewaySpec| p.placement.swap_back = false,
        |p: &mut ElasticGatewaySpec| p.placement.rebalance = true,
        |p: &mut ElasticGatewaySpec| p.dry_run = true,
    ] {
        let mut q = policy();
        f(&mut q);
        assert!(!swapped(&q, obs(1000.0, &c, &loads, 8)));
    }
    // The load rises during a swap: the added pod stays, the swap is over.
    let state = decide(&p, &obs(1000.0, &c, &loads, 8), &EngineState::default()).state;
    let added = with_added(cluster(4, 0, 6, 2), true, false, "gw-new");
    let out = decide(
        &p,
        &obs(1002.0, &added, &[LoadSample::Total(8000.0)], 9),
        &state,
    );
    assert!(out.decision.replicas.desired > 9);
    assert_ne!(out.decision.replicas.why, Why::Rebalance);
    assert_eq!(out.state.swap, None);
}

fn arb_sample() -> impl Strategy<Value = LoadSample> {
    prop_oneof![
        4 => (0.0f64..50_000.0).prop_map(LoadSample::Total),
        1 => Just(LoadSample::Missing("timeout".into())),
        1 => Just(LoadSample::Total(f64::NAN)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn decisions_stay_within_bounds_and_caps(
        samples in proptest::collection::vec(arb_sample(), 1..60),
        ecs_nodes in 1usize..5,
        eci_cap in 0i32..10,
        lead in prop_oneof![Just(0i64), Just(45i64)],
    ) {
        let mut p = policy();
        p.eci.max_replicas = Some(eci_cap);
        p.behavior.lead_time.seconds = lead;
        let mut current = 4;
        let mut state = EngineState::default();
        for (i, s) in samples.iter().enumerate() {
            let on_ecs = (current as usize).min(ecs_nodes * 4);
            let c = cluster(ecs_nodes, 0, on_ecs, current as usize - on_ecs);
            let loads = [s.clone()];
            let out = decide(&p, &obs(i as f64 * 15.0, &c, &loads, current), &state);
            let d = out.decision;
            prop_assert!(d.replicas.desired >= p.min_replicas && d.replicas.desired <= p.max_replicas);
            prop_assert!(d.replicas.expected_eci <= eci_cap.max(p.min_replicas));
            if matches!(s, LoadSample::Missing(_)) || matches!(s, LoadSample::Total(v) if v.is_nan()) {
                prop_assert!(d.replicas.desired >= current, "scaled down on missing data: {}", d.replicas.reason);
            }
            // On a rise the lead time never asks for less than the HPA.
            if let (Some(h), Some(l)) = (d.replicas.hpa, d.replicas.lead) {
                prop_assert!(l > h);
                if d.replicas.why == Why::LeadTime {
                    prop_assert!(d.replicas.desired >= h.min(p.max_replicas));
                }
            }
            state = out.state;
            current = d.replicas.desired;
        }
    }

    #[test]
    fn deletion_costs_always_rank_eci_below_ecs(on_ecs in 0usize..12, on_eci in 0usize..12) {
        let c = cluster(3, 0, on_ecs, on_eci);
        let costs = placement::deletion_costs(&c.pods, &[]);
        prop_assert_eq!(costs.len(), on_ecs + on_eci);
        for (name, cost) in costs {
            prop_assert_eq!(cost < 0, name.contains("eci"));
        }
    }
}

#[test]
fn the_eci_cap_limits_eci_pods_never_the_fleet() {
    // ECS has 16 free slots though the fleet sits on ECI (after the yield mode, say): the cap
    // of 30 ECI pods allows 16 + 30.
    let mut p = policy();
    p.eci.max_replicas = Some(30);
    let c = cluster(4, 0, 0, 20);
    let mut o = obs(1000.0, &c, &[LoadSample::Total(20_000.0)], 20);
    o.weights = Some(PoolWeights { ecs: 20, eci: 80 });
    let d = decide(&p, &o, &EngineState::default()).decision;
    assert_eq!(d.replicas.desired, 40, "{}", d.replicas.reason);
    assert_ne!(d.replicas.why, Why::EciCap);
}

#[test]
fn by_default_a_sustained_overflow_never_moves_the_fleet_to_eci() {
    let p = policy();
    let c = cluster(2, 0, 8, 4);
    let loads = [LoadSample::Total(6000.0)];
    let mut state = EngineState::default();
    for t in (0..=7200).step_by(15) {
        let out = decide(&p, &obs(f64::from(t), &c, &loads, 12), &state);
        state = out.state;
        assert!(
            !out.decision.weights.changed(),
            "{}",
            out.decision.weights.reason
        );
    }
}

fn fast(rps: f64) -> Option<FastSample> {
    Some(FastSample { rps, pods_read: 4 })
}

#[test]
fn burst_mode_sizes_at_once_from_the_pod_counters() {
    let p = policy();
    let c = cluster(2, 0, 4, 0);
    // Prometheus still shows 2,000 rps; the pods' counters read 12,000, 6× what 4 pods serve.
    let loads = [LoadSample::Total(2000.0)];
    let mut o = obs(1000.0, &c, &loads, 4);
    o.fast = fast(12_000.0);
    let out = decide(&p, &o, &EngineState::default());
    let d = out.decision;
    // Past the HPA's rate limit (+4 or +100 % per 15 s, so 8): 24 at once.
    assert_eq!(
        (d.replicas.desired, d.replicas.why),
        (24, Why::Burst),
        "{}",
        d.replicas.reason
    );
    // Burst mode then holds the count though Prometheus still lags.
    let c24 = cluster(2, 0, 8, 16);
    let out2 = decide(&p, &obs(1030.0, &c24, &loads, 24), &out.state);
    assert_eq!(
        out2.decision.replicas.desired, 24,
        "{}",
        out2.decision.replicas.reason
    );
}

/// Issue 29: under a slow start (`spec.warmup`), pods that have just become Ready serve a tenth
/// of a warm pod's share: what the ready pods serve, against which a burst is judged, counts the
/// ramp. The same counters that are a mere rise for a warm fleet are a burst for one that is
/// still ramping.
#[test]
fn pods_that_are_still_ramping_count_for_their_ramp() {
    let mut c = cluster(2, 0, 8, 0);
    for (i, p) in c.pods.iter_mut().enumerate() {
        p.ready_since = Some(if i < 4 { 0.0 } else { 999.0 });
    }
    let loads = [LoadSample::Total(4000.0)];
    let mut o = obs(1000.0, &c, &loads, 8);
    o.fast = fast(7000.0);
    let plain = decide(&policy(), &o, &EngineState::default());
    let mut p = policy();
    p.warmup = Some(crate::policy::Warmup {
        seconds: 60,
        min_weight_percent: 10.0,
        aggression: 1.0,
    });
    let ramped = decide(&p, &o, &EngineState::default());
    // Both raise to 14. 8 warm pods serve 4,000 at the target: 7,000 is a rise. 4 warm and 4
    // at 10 % serve 2,200: 7,000 is past twice that, a burst, whose count is then held against
    // Prometheus's lag.
    assert_eq!(plain.decision.replicas.desired, 14);
    assert_eq!(ramped.decision.replicas.desired, 14);
    assert_eq!(plain.state.burst_until, None);
    assert_eq!(ramped.state.burst_until, Some(1000.0 + BURST_HOLD_SECONDS));
    // A minute on, the ramp is over: the same fleet is warm again.
    let mut later = obs(1060.0, &c, &loads, 8);
    later.fast = fast(7000.0);
    let warm = decide(&p, &later, &EngineState::default());
    assert_eq!(warm.state.burst_until, None);
}

#[test]
fn the_fast_path_only_raises_and_ignores_bad_readings() {
    let p = policy();
    let c = cluster(2, 0, 8, 0);
    let loads = [LoadSample::Total(4000.0)];
    let base = decide(&p, &obs(1000.0, &c, &loads, 8), &EngineState::default())
        .decision
        .replicas
        .desired;
    for bad in [
        Some(FastSample {
            rps: f64::NAN,
            pods_read: 4,
        }),
        Some(FastSample {
            rps: -5.0,
            pods_read: 4,
        }),
        Some(FastSample {
            rps: 1e9,
            pods_read: 0,
        }),
        fast(0.0),
        fast(100.0),
        None,
    ] {
        let mut o = obs(1000.0, &c, &loads, 8);
        o.fast = bad;
        let d = decide(&p, &o, &EngineState::default()).decision;
        assert_eq!(d.replicas.desired, base, "{bad:?}: {}", d.replicas.reason);
    }
    // Within 30 % above the current count's capacity the fast path does not add pods:
    // Prometheus decides.
    let mut o = obs(1000.0, &c, &loads, 8);
    o.fast = fast(5000.0);
    let d = decide(&p, &o, &EngineState::default()).decision;
    assert_eq!(d.replicas.desired, base);
    // Well above it, its reading joins the recommendation (within the rate limits).
    o.fast = fast(7000.0);
    let d = decide(&p, &o, &EngineState::default()).decision;
    assert_eq!(d.replicas.desired, 14);
}

#[test]
fn eci_pods_go_after_the_short_window_and_ecs_pods_after_the_ecs_hold() {
    let p = policy();
    assert_eq!(p.eci.scale_down_window(), 40);
    assert_eq!(p.behavior.ecs_hold(), 600);
    // 24 pods: 12 on ECS (full), 12 on ECI; the load falls to 2,000 rps (4 pods) at t=0.
    let c = cluster(4, 2000, 12, 12);
    let high = [LoadSample::Total(12_000.0)];
    let low = [LoadSample::Total(2000.0)];
    let mut state = EngineState::default();
    let out = decide(&p, &obs(-10.0, &c, &high, 24), &state);
    state = out.state;
    let mut desired = Vec::new();
    for t in (0..=700).step_by(20) {
        let out = decide(&p, &obs(f64::from(t), &c, &low, 24), &state);
        state = out.state;
        desired.push((t, out.decision.replicas.desired, out.decision.replicas.why));
    }
    // Held through the ECI window, then down to what ECS holds; the rest waits for the ECS hold
    // (600 s after the load that needed them, at t=-10), past the standard window's 300 s.
    assert!(
        desired
            .iter()
            .filter(|(t, ..)| *t < 40)
            .all(|(_, d, _)| *d == 24),
        "{desired:?}"
    );
    assert!(
        desired
            .iter()
            .any(|(t, d, w)| (40..=60).contains(t) && *d == 12 && *w == Why::EciScaleDown),
        "{desired:?}"
    );
    assert!(
        desired
            .iter()
            .filter(|(t, ..)| (60..580).contains(t))
            .all(|(_, d, _)| *d == 12),
        "{desired:?}"
    );
    assert!(
        desired
            .iter()
            .any(|(t, d, w)| (300..580).contains(t) && *d == 12 && *w == Why::EcsHold),
        "{desired:?}"
    );
    assert!(
        desired.iter().any(|(t, d, _)| *t >= 600 && *d == 4),
        "{desired:?}"
    );
    // With `ecsHoldSeconds` at or below the window, the window alone decides, as the HPA's.
    let mut p = p;
    p.behavior.ecs_hold_seconds = Some(0);
    let mut state = decide(&p, &obs(-10.0, &c, &high, 24), &EngineState::default()).state;
    let mut at_300 = None;
    for t in (0..=320).step_by(20) {
        let out = decide(&p, &obs(f64::from(t), &c, &low, 24), &state);
        state = out.state;
        if t >= 300 {
            at_300.get_or_insert(out.decision.replicas.desired);
        }
    }
    assert_eq!(at_300, Some(4));
}

/// A sawtooth whose teeth come back within ten minutes of each release: the first release of
/// ECS pods is a flap, so the hold grows to bridge the gap and the next tooth finds its pods
/// still there; once the load stays low, releases that stand halve the hold back.
#[test]
fn the_ecs_hold_grows_on_a_flap_and_shrinks_back_when_releases_stand() {
    let p = policy();
    // 20 ECS slots, no ECI; the gateway pods all on ECS.
    let c = cluster(6, 0, 20, 0);
    let high = [LoadSample::Total(9_500.0)];
    let low = [LoadSample::Total(2000.0)];
    let mut state = EngineState::default();
    let mut count = 20;
    let mut changes = vec![];
    // Teeth of 100 s every 1,000 s: a release 600 s after a tooth is reversed 300 s later.
    for t in (0..=6000).step_by(5) {
        let tooth = t % 1000 < 100 && t < 3000;
        let load = if tooth { &high } else { &low };
        let out = decide(&p, &obs(f64::from(t), &c, load, count), &state);
        state = out.state;
        let d = out.decision.replicas.desired;
        if d != count {
            changes.push((t, count, d));
            count = d;
        }
    }
    let downs_before_3000 = changes
        .iter()
        .filter(|(t, from, to)| *t < 3000 && to < from)
        .count();
    // The first release (at 600 s) flaps; after it the hold (1,200 s) bridges every gap.
    assert_eq!(downs_before_3000, 1, "{changes:?}");
    assert!(
        changes.iter().any(|(t, from, to)| *t >= 3000 && to < from),
        "the hold ends once the teeth stop: {changes:?}"
    );
    assert_eq!(count, 4, "{changes:?}");
    assert_eq!(state.ecs_hold, None, "halved back to the default");
}

/// The fast path raises the count on what the pods' counters read; the window then keeps what
/// they read, so a load that keeps touching that level is not scaled down and up again.
#[test]
fn a_level_the_fast_path_keeps_reading_is_not_scaled_away() {
    let mut p = policy();
    // The window alone (the ECS hold would keep the pods too).
    p.behavior.ecs_hold_seconds = Some(0);
    let c = cluster(6, 0, 20, 0);
    // Prometheus reads 5,000 rps (10 pods); the pods' counters touch 7,500 (15 pods) every
    // 60 s, for 5 s.
    let loads = [LoadSample::Total(5000.0)];
    let mut state = EngineState::default();
    let mut count = 10;
    let mut changes = vec![];
    for t in (0..=1800).step_by(2) {
        let mut o = obs(f64::from(t), &c, &loads, count);
        o.fast = fast(if t % 60 < 5 { 7500.0 } else { 5000.0 });
        let out = decide(&p, &o, &state);
        state = out.state;
        let d = out.decision.replicas.desired;
        if d != count {
            changes.push((t, count, d));
            count = d;
        }
    }
    assert_eq!(changes, vec![(0, 10, 15)]);
}

/// Drives a fleet of 24 (12 on ECS, 12 on ECI) through a fall to 4 pods' worth at `fall`;
/// returns when the ECI pods went (the first `EciScaleDown`) and the state after.
fn eci_release_after(p: &ElasticGatewaySpec, state: EngineState, fall: f64) -> (f64, EngineState) {
    let c = cluster(4, 2000, 12, 12);
    let high = [LoadSample::Total(12_000.0)];
    let low = [LoadSample::Total(2000.0)];
    let mut state = decide(p, &obs(fall - 5.0, &c, &high, 24), &state).state;
    for t in (0..=400).step_by(5) {
        let now = fall + f64::from(t);
        let out = decide(p, &obs(now, &c, &low, 24), &state);
        state = out.state;
        if out.decision.replicas.why == Why::EciScaleDown {
            return (f64::from(t), state);
        }
    }
    panic!("no ECI release within 400 s");
}

#[test]
fn a_release_the_load_undoes_within_the_standard_window_stretches_the_eci_window() {
    let p = policy();
    let (after, state) = eci_release_after(&p, EngineState::default(), 0.0);
    assert!((40.0..=45.0).contains(&after), "{after}");
    let released = state.eci_release.expect("the release is noted").at;
    // The load is back 120 s later (within the standard 300 s): a flap.
    let c = cluster(4, 2000, 12, 0);
    let out = decide(
        &p,
        &obs(released + 120.0, &c, &[LoadSample::Total(9000.0)], 12),
        &state,
    );
    assert_eq!(out.decision.replicas.direction, Direction::ScaleUp);
    // Holding 40 s + 120 s would have bridged that dip.
    assert_eq!(out.state.eci_window, Some(160.0));
    // The next fall: the ECI pods wait that long.
    let (after, state) = eci_release_after(&p, out.state, 2000.0);
    assert!((160.0..=165.0).contains(&after), "{after}");
    // That release stands for ten minutes: the window halves back.
    let c = cluster(4, 2000, 12, 0);
    let calm = [LoadSample::Total(2000.0)];
    let mut state = state;
    for t in (0..=700).step_by(15) {
        state = decide(&p, &obs(2100.0 + f64::from(t), &c, &calm, 12), &state).state;
    }
    assert_eq!(state.eci_window, Some(80.0));
}

#[test]
fn a_rise_after_the_standard_window_is_not_a_flap() {
    // Teeth farther apart than the standard window: holding the ECI pods up to it would not
    // have bridged the gap, so the window stays short.
    let p = policy();
    let (_, state) = eci_release_after(&p, EngineState::default(), 0.0);
    let released = state.eci_release.expect("the release is noted").at;
    let c = cluster(4, 2000, 12, 0);
    let out = decide(
        &p,
        &obs(released + 400.0, &c, &[LoadSample::Total(9000.0)], 12),
        &state,
    );
    assert_eq!(out.decision.replicas.direction, Direction::ScaleUp);
    assert_eq!((out.state.eci_window, out.state.eci_release), (None, None));
    // The window stays between `eci.scaleDownWindow` and the standard one.
    let down = p.behavior.scale_down.effective(false);
    assert_eq!(eci_window(&p, &down, None), 40.0);
    assert_eq!(eci_window(&p, &down, Some(160.0)), 160.0);
    assert_eq!(eci_window(&p, &down, Some(1000.0)), 300.0);
    assert_eq!(eci_window(&p, &down, Some(10.0)), 40.0);
}

#[test]
fn noise_around_ecs_capacity_keeps_the_standard_window() {
    let p = policy();
    let c = cluster(4, 2000, 12, 2);
    let mut state = EngineState::default();
    let mut changes = 0;
    for t in (0..3600).step_by(15) {
        // ±8 % around 6,500 rps (13 pods): less than twice the tolerance.
        let v = if (t / 15) % 2 == 0 { 7000.0 } else { 6000.0 };
        let out = decide(
            &p,
            &obs(f64::from(t), &c, &[LoadSample::Total(v)], 14),
            &state,
        );
        state = out.state;
        changes += usize::from(out.decision.replicas.desired != 14);
    }
    assert_eq!(changes, 0);
}

#[test]
fn misplaced_pods_strengthen_the_ecs_preference_at_a_quiet_time_only() {
    let p = policy();
    // ECS has room (2 nodes × 4 slots, 4 used) but a new pod landed on ECI.
    let mut c = cluster(2, 0, 4, 0);
    let mut state = EngineState::default();
    state = decide(&p, &obs(0.0, &c, &[LoadSample::Total(2000.0)], 4), &state).state;
    c.pods
        .push(pod("gw-new", Some("virtual-kubelet"), Pool::Eci, 5.0));
    // Busy: the load is above half the ready capacity: noted, not acted on.
    let busy = decide(&p, &obs(10.0, &c, &[LoadSample::Total(2400.0)], 5), &state);
    assert!(!busy.decision.weights.changed());
    assert!(
        busy.decision.weights.reason.contains("quiet time"),
        "{}",
        busy.decision.weights.reason
    );
    assert_eq!(busy.state.weights.misplaced, 1);
    // Prometheus reads a low load, but the pods' own counters show a surge under way (the
    // smoothed rate lags it): not a quiet time either.
    let mut rising = obs(1000.0, &c, &[LoadSample::Total(500.0)], 5);
    rising.fast = fast(1500.0);
    let rising = decide(&p, &rising, &busy.state);
    assert!(
        !rising.decision.weights.changed(),
        "{}",
        rising.decision.weights.reason
    );
    // Quiet: low load, nothing scaled up for 10 minutes, no rollout.
    let quiet = decide(
        &p,
        &obs(1000.0, &c, &[LoadSample::Total(500.0)], 5),
        &busy.state,
    );
    assert!(
        quiet.decision.weights.changed(),
        "{}",
        quiet.decision.weights.reason
    );
    assert_eq!(quiet.decision.weights.target, p.placement.strong_weights);
    // A pod on ECI while ECS is full is not misplaced.
    let full = cluster(1, 2000, 3, 1);
    assert_eq!(
        placement::misplaced(
            &full.pods,
            &decide(
                &p,
                &obs(0.0, &full, &[LoadSample::Total(2000.0)], 4),
                &EngineState::default()
            )
            .decision
            .survey,
            -1.0
        ),
        0
    );
}

/// The money spent between two decisions is integrated once, in the engine, at the second
/// decision's prices: the metrics' and the drill's totals add these up.
#[test]
fn spend_between_decisions_is_the_price_over_the_time_since() {
    let p = policy();
    let c = cluster(3, 0, 4, 2);
    let first = decide(
        &p,
        &obs(1000.0, &c, &[LoadSample::Total(2000.0)], 6),
        &EngineState::default(),
    );
    assert_eq!(
        (first.decision.cost.ecs_spent, first.decision.cost.eci_spent),
        (0.0, 0.0)
    );
    let second = decide(
        &p,
        &obs(1060.0, &c, &[LoadSample::Total(2000.0)], 6),
        &first.state,
    );
    let cost = &second.decision.cost;
    assert!(
        cost.eci_per_hour > 0.0 && cost.ecs_per_hour > 0.0,
        "{cost:?}"
    );
    assert!(
        (cost.ecs_spent - cost.ecs_per_hour / 60.0).abs() < 1e-9,
        "{cost:?}"
    );
    assert!(
        (cost.eci_spent - cost.eci_per_hour / 60.0).abs() < 1e-9,
        "{cost:?}"
    );
}

/// A rollout moves the capacity, not the count: the gateway's own pending pods and the room its
/// terminating pods are about to free still count as ECS capacity, and the ECI cap cuts no
/// count while pods come and go (issue 26: `kubectl rollout restart` at peak cut 40 → 31).
#[test]
fn a_rollout_neither_shrinks_ecs_capacity_nor_lets_the_cap_cut_the_fleet() {
    let mut p = policy();
    p.eci.max_replicas = Some(3);
    // 8 on ECS (full) and 3 on ECI: the ceiling, 11, is the count the load needs.
    let mut c = cluster(2, 0, 8, 3);
    // Mid-rollout: two old ECS pods terminating (still holding their room), two new pending.
    for pod in c.pods.iter_mut().filter(|p| p.pool == Pool::Ecs).take(2) {
        pod.terminating = true;
    }
    for i in 0..2 {
        let mut new = pod(&format!("gw-new-{i}"), None, Pool::Pending, 2000.0);
        new.ready = false;
        c.pods.push(new);
    }
    let load = [LoadSample::Total(5500.0)];
    let mut o = obs(3000.0, &c, &load, 11);
    o.rollout_in_progress = true;
    let d = decide(&p, &o, &EngineState::default()).decision;
    assert_eq!(
        (
            d.survey.ecs_pods,
            d.survey.pending_pods,
            d.survey.terminating_pods
        ),
        (6, 2, 2)
    );
    assert_eq!(d.survey.ecs_capacity, 8, "{:?}", d.survey);
    assert_eq!(d.survey.ecs_room, 0, "the room is not free yet");
    assert_eq!(d.replicas.desired, 11, "{}", d.replicas.reason);
}

/// Outside a rollout, a ceiling that comes down below the count (the cost cap lowered, ECS
/// room lost for good) brings the count down only once the excess has lasted the ECI window,
/// as a falling load would.
#[test]
fn a_lower_ceiling_brings_the_count_down_through_the_eci_window() {
    let mut p = policy();
    p.eci.max_replicas = Some(1);
    let c = cluster(2, 0, 8, 3);
    let load = [LoadSample::Total(5500.0)];
    let first = decide(&p, &obs(1000.0, &c, &load, 11), &EngineState::default());
    assert_eq!(
        first.decision.replicas.desired, 11,
        "{}",
        first.decision.replicas.reason
    );
    let window = p.eci.scale_down_window_seconds.map_or(40.0, |w| w as f64);
    let soon = decide(&p, &obs(1000.0 + window / 2.0, &c, &load, 11), &first.state);
    assert_eq!(soon.decision.replicas.desired, 11);
    let later = decide(&p, &obs(1001.0 + window, &c, &load, 11), &soon.state);
    assert_eq!(
        (later.decision.replicas.desired, later.decision.replicas.why),
        (9, Why::EciCap),
        "{}",
        later.decision.replicas.reason
    );
}

/// Slots another gateway on the same nodes has claimed are not this one's room: the same burst
/// sees a smaller ECS capacity, and claims only what is left.
#[test]
fn slots_claimed_elsewhere_are_not_free() {
    let p = policy();
    let c = cluster(3, 0, 4, 0);
    let load = [LoadSample::Total(20_000.0)];
    let alone = decide(&p, &obs(1000.0, &c, &load, 4), &EngineState::default()).decision;
    let mut shared = obs(1000.0, &c, &load, 4);
    shared.ecs_claimed_elsewhere = 6;
    let shared = decide(&p, &shared, &EngineState::default()).decision;
    assert_eq!(alone.survey.ecs_room - shared.survey.ecs_room, 6);
    assert_eq!(alone.survey.ecs_capacity - shared.survey.ecs_capacity, 6);
    assert_eq!(shared.survey.ecs_claimed_elsewhere, 6);
    // 4 → 8 (rate limited): alone, 4 more on ECS; sharing, only the 2 slots left.
    let count = alone.replicas.desired;
    assert_eq!(
        (count, alone.survey.ecs_capacity, shared.survey.ecs_capacity),
        (8, 12, 6)
    );
    assert_eq!(alone.ecs_claim(count), 4);
    assert_eq!(shared.ecs_claim(count), 2);
    // Pods already bound claim nothing, wherever they landed: 4 on ECS and 4 sent to ECI by
    // the scheduler, at a count of 8, leave no claim though ECS still had room.
    let spread = cluster(3, 0, 4, 4);
    let placed = decide(&p, &obs(1000.0, &spread, &load, 8), &EngineState::default()).decision;
    assert!(placed.survey.ecs_capacity > 4, "{:?}", placed.survey);
    assert_eq!(placed.ecs_claim(8), 0);
    // Claims never take what the gateway's own pods hold.
    let mut all = obs(1000.0, &c, &load, 4);
    all.ecs_claimed_elsewhere = 1_000;
    let all = decide(&p, &all, &EngineState::default()).decision;
    assert_eq!((all.survey.ecs_room, all.survey.ecs_capacity), (0, 4));
}

/// `placement.poolSpread`: a template without the constraints gets them with one weights apply
/// at a quiet time, never under load, and only once (the next observation has them).
#[test]
fn the_pool_spread_is_adopted_once_at_a_quiet_time() {
    let mut p = policy();
    p.target.kind = crate::policy::TargetKind::Deployment;
    let c = cluster(3, 0, 4, 0);
    let adopt = |load: f64, missing: bool| {
        let loads = [LoadSample::Total(load)];
        let mut o = obs(1000.0, &c, &loads, 4);
        o.spread_missing = missing;
        let planned = crate::act::plan(&p, &o, &EngineState::default(), Default::default());
        (planned.decision.adopt_spread, planned.plan.weights)
    };
    // 4 ready pods of 500 rps: 800 rps is 40 % of the capacity, quiet.
    assert_eq!(
        adopt(800.0, true),
        (true, Some(PoolWeights { ecs: 80, eci: 20 })),
        "the weights as they are, applied with the constraints"
    );
    assert_eq!(adopt(800.0, false), (false, None), "already there");
    assert_eq!(
        adopt(1600.0, true),
        (false, None),
        "80 % of the capacity: not now"
    );
    let mut off = p.clone();
    off.placement.pool_spread = false;
    assert!(off.pool_spread_constraints().is_empty());
    assert!(
        policy().pool_spread_constraints().is_empty(),
        "an IstioGateway: ASM renders the template"
    );
    let on = p.pool_spread_constraints();
    assert_eq!(
        on.iter()
            .map(|c| c.topology_key.as_str())
            .collect::<Vec<_>>(),
        ["mykey4pod", "kubernetes.io/hostname"]
    );
}

/// Issue 34's root: ECS nodes that each hold many gateway pods, a virtual node with few.
/// Under the scheduler's system-default spreading the next pods score best on the virtual node,
/// so a swap would pay ECI starts and deletions for nothing: it is held, and said so. With
/// `placement.poolSpread` (spread constraints for a Deployment, a pod affinity for an
/// IstioGateway), the virtual node lacks the pool's key: the swap goes ahead.
#[test]
fn a_swap_the_scheduler_would_send_to_eci_is_held() {
    let loads = [LoadSample::Total(16000.0)]; // 32 replicas on target
    // 4 ECS nodes of 16 vCPU: eight gateway pods fit on each. 31 run there (one slot free, on
    // a node that holds seven), 1 on ECI.
    let mut c = cluster(4, 0, 31, 1);
    for n in c.nodes.iter_mut().filter(|n| n.name.starts_with("ecs-")) {
        n.allocatable = Resources::new(16000, 64 * GI, 110);
    }
    // placement.poolSpread off: the template is the scheduler's system defaults alone.
    let mut istio = policy();
    istio.placement.pool_spread = false;
    let template = istio.gateway_template(GW, PoolWeights { ecs: 80, eci: 20 });
    assert!(matches!(
        placement::landing(&istio, &template, &c.pods, &c.nodes),
        placement::Landing::Elsewhere {
            pool: Pool::Eci,
            ..
        }
    ));
    assert!(
        placement::pods_until_ecs(&istio, &template, &c.pods, &c.nodes, 3).is_err(),
        "three pods added one by one all go to the virtual node"
    );
    let out = decide(
        &istio,
        &obs(1000.0, &c, &loads, 32),
        &EngineState::default(),
    );
    let d = &out.decision;
    assert_eq!(d.replicas.desired, 32, "{}", d.replicas.reason);
    assert_eq!(d.swap, Some(placement::SwapEvent::Held));
    assert!(
        d.replicas.reason.contains("the first on virtual-kubelet"),
        "{}",
        d.replicas.reason
    );
    // Looked at again only after the rebalance interval.
    let again = decide(&istio, &obs(1010.0, &c, &loads, 32), &out.state).decision;
    assert_eq!(again.swap, None);

    // With it on, an IstioGateway carries the pool affinity: the virtual node lacks the
    // pool's key and scores nothing on it; the swap goes ahead.
    let out = decide(
        &policy(),
        &obs(1000.0, &c, &loads, 32),
        &EngineState::default(),
    );
    assert_eq!(out.decision.swap, Some(placement::SwapEvent::Started));
    // The same cluster, the gateway a Deployment with the pool spread in its template.
    let mut deployment = policy();
    deployment.target.kind = crate::policy::TargetKind::Deployment;
    let out = decide(
        &deployment,
        &obs(1000.0, &c, &loads, 32),
        &EngineState::default(),
    );
    assert_eq!(out.decision.swap, Some(placement::SwapEvent::Started));
    assert_eq!(out.decision.replicas.desired, 33);
    // Not while the constraints are still to be written: the template is as today's.
    let mut missing = obs(1000.0, &c, &loads, 32);
    missing.spread_missing = true;
    let d = decide(&deployment, &missing, &EngineState::default()).decision;
    assert_eq!(d.swap, Some(placement::SwapEvent::Held));

    // The added pod ran on ECS: back to 32, counted as landed on ECS.
    c = with_added(c, true, true, "gw-new");
    let back = decide(&deployment, &obs(1030.0, &c, &loads, 33), &out.state).decision;
    assert_eq!(
        (back.replicas.desired, back.swap),
        (32, Some(placement::SwapEvent::LandedEcs)),
        "{}",
        back.replicas.reason
    );
}

/// Where the first added pod goes to the virtual node but raises its spread count enough for
/// the second to land on ECS, the model plans two, and the swap says so up front.
#[test]
fn a_swap_plans_the_pods_the_scheduler_sends_to_eci_first() {
    let loads = [LoadSample::Total(8000.0)]; // 16 replicas on target
    // 4 ECS nodes of 8 vCPU: four gateway pods fit on each; 15 there, 1 on ECI. The template
    // as the scheduler's defaults leave it (placement.poolSpread off).
    let c = cluster(4, 0, 15, 1);
    let mut p = policy();
    p.placement.pool_spread = false;
    let template = p.gateway_template(GW, PoolWeights { ecs: 80, eci: 20 });
    assert_eq!(
        placement::pods_until_ecs(&p, &template, &c.pods, &c.nodes, 3),
        Ok(2)
    );
    let out = decide(&p, &obs(1000.0, &c, &loads, 16), &EngineState::default());
    assert_eq!(out.decision.swap, Some(placement::SwapEvent::Started));
    assert!(
        out.decision.replicas.reason.contains("2 in all"),
        "{}",
        out.decision.replicas.reason
    );
    // The first landed on the virtual node, as planned: one more.
    let c = with_added(c, false, true, "gw-new-1");
    let out = decide(&p, &obs(1030.0, &c, &loads, 17), &out.state);
    assert_eq!(
        (out.decision.replicas.desired, out.decision.swap),
        (18, Some(placement::SwapEvent::OneMore)),
        "{}",
        out.decision.replicas.reason
    );
    // The second runs on ECS: back to 16, ECI pods first.
    let c = with_added(c, true, true, "gw-new-2");
    let d = decide(&p, &obs(1060.0, &c, &loads, 18), &out.state).decision;
    assert_eq!(
        (d.replicas.desired, d.swap),
        (16, Some(placement::SwapEvent::LandedEcs)),
        "{}",
        d.replicas.reason
    );
}

/// `placement.poolSpread`: written once at a quiet time; once the template showed them, a
/// template without them was replaced by another writer: reported, never written again (each
/// write rolls the gateway), until the field is turned off and on.
#[test]
fn the_pool_spread_is_written_once_and_a_removal_is_reported_not_fought() {
    let mut p = policy();
    p.target.kind = crate::policy::TargetKind::Deployment;
    let c = cluster(4, 0, 4, 0);
    let loads = [LoadSample::Total(800.0)]; // 40 % of the ready capacity: a quiet time
    let at = |now: f64, missing: bool| {
        let mut o = obs(now, &c, &loads, 4);
        o.spread_missing = missing;
        o
    };
    let first = decide(&p, &at(1000.0, true), &EngineState::default());
    assert!(first.decision.adopt_spread && !first.decision.spread_removed);
    assert!(!first.decision.spread_unseen);
    // Not seen yet (the watch lags): no second write, no alarm; a weights write meanwhile
    // carries them (spread_unseen), or the forced apply would take them out.
    let lag = decide(&p, &at(1005.0, true), &first.state);
    assert!(!lag.decision.adopt_spread && !lag.decision.spread_removed);
    assert!(lag.decision.spread_unseen);
    let seen = decide(&p, &at(1010.0, false), &lag.state);
    assert!(!seen.decision.adopt_spread && !seen.decision.spread_removed);
    assert!(!seen.decision.spread_unseen);
    // Gone again: another writer replaced the template; nothing carries them back.
    let gone = decide(&p, &at(2000.0, true), &seen.state);
    assert!(!gone.decision.adopt_spread && gone.decision.spread_removed);
    assert!(!gone.decision.spread_unseen);
    let later = decide(&p, &at(9000.0, true), &gone.state);
    assert!(!later.decision.adopt_spread && later.decision.spread_removed);
    // A write never seen counts as undone after SPREAD_SETTLE_SECONDS.
    let unseen = decide(&p, &at(1000.0 + SPREAD_SETTLE_SECONDS, true), &lag.state);
    assert!(unseen.decision.spread_removed);
    // Off and on again: written once more.
    let mut off = p.clone();
    off.placement.pool_spread = false;
    let reset = decide(&off, &at(9010.0, false), &later.state);
    let again = decide(&p, &at(9020.0, true), &reset.state);
    assert!(again.decision.adopt_spread);
    // Dry-run says it would write, writes nothing, and never takes the template for rewritten.
    let mut dry = p.clone();
    dry.dry_run = true;
    let shown = decide(&dry, &at(1000.0, true), &EngineState::default());
    assert!(shown.decision.adopt_spread);
    let much_later = decide(
        &dry,
        &at(1000.0 + 2.0 * SPREAD_SETTLE_SECONDS, true),
        &shown.state,
    );
    assert!(much_later.decision.adopt_spread && !much_later.decision.spread_removed);
    // A write that failed is not remembered: the next quiet decision writes.
    let mut planned = crate::act::plan(
        &p,
        &at(1000.0, true),
        &EngineState::default(),
        Default::default(),
    );
    let state = crate::act::commit(
        &EngineState::default(),
        &mut planned,
        &p,
        &crate::act::Plan::default(),
    );
    assert!(decide(&p, &at(1010.0, true), &state).decision.adopt_spread);
}

/// The ECS hold follows the policy's window: twice it by default, so a policy that scales down
/// at once (window 0) answers every step down at once, as tests/churn.rs's storm needs.
#[test]
fn the_ecs_hold_is_twice_the_window_and_off_with_it() {
    let mut p = policy();
    assert_eq!(p.behavior.ecs_hold(), 600);
    p.behavior.scale_down.stabilization_window_seconds = Some(4);
    assert_eq!(p.behavior.ecs_hold(), 8);
    p.behavior.scale_down.stabilization_window_seconds = Some(0);
    assert_eq!(p.behavior.ecs_hold(), 0);
    let c = cluster(3, 0, 4, 0);
    let mut state = EngineState::default();
    let mut count = 4;
    let mut downs = vec![];
    for t in 0..200 {
        let rps = if (t / 20) % 2 == 0 { 5000.0 } else { 2000.0 };
        let out = decide(
            &p,
            &obs(f64::from(t), &c, &[LoadSample::Total(rps)], count),
            &state,
        );
        state = out.state;
        let d = out.decision.replicas.desired;
        if d < count {
            downs.push(t);
        }
        count = d;
    }
    assert_eq!(downs, vec![20, 60, 100, 140, 180]);
}

/// Issue 27's per-pool capacity: 12 ECS slots (3 nodes of 4 pods), full; 4 pods on ECI.
#[test]
fn weaker_eci_pods_are_counted_at_their_share_of_an_ecs_pod() {
    let mut p = policy();
    let c = cluster(3, 0, 12, 4);
    let at = |p: &ElasticGatewaySpec, c: &Cluster, rps: f64, spec: i32| {
        once(p, c, LoadSample::Total(rps), spec)
    };
    // Counted as equals, 16 pods serve 8,000 rps at 500 each.
    let d = at(&p, &c, 8000.0, 16);
    assert_eq!(d.replicas.desired, 16, "{}", d.summary());
    assert_eq!(d.relative.source, capacity::Source::Default);
    // Stated at half an ECS pod: the 4 ECI pods serve 2 pods' worth, the 2 more missing
    // take 4 ECI pods.
    p.eci.relative_capacity = Some(0.5);
    let d = at(&p, &c, 8000.0, 16);
    assert_eq!(d.replicas.desired, 20, "{}", d.summary());
    assert_eq!(d.relative.source, capacity::Source::Policy);
    // There, the fleet serves the load: noise within the tolerance moves nothing.
    let c = cluster(3, 0, 12, 8);
    for rps in [7700.0, 8000.0, 8500.0] {
        let d = at(&p, &c, rps, 20);
        assert_eq!(d.replicas.desired, 20, "{rps}: {}", d.summary());
    }
    // Within what ECS holds, the share changes nothing.
    let c = cluster(3, 0, 10, 0);
    assert_eq!(at(&p, &c, 6000.0, 10).replicas.desired, 12);
}

#[test]
fn the_eci_share_is_learnt_from_both_pools_cpu_per_request_and_sizes_the_fast_path() {
    let p = policy();
    let c = cluster(3, 0, 12, 4);
    let loads = [LoadSample::Total(8000.0)];
    // Each pod serves 500 rps; an ECI pod spends twice the CPU on it.
    let usage = capacity::PoolUsage {
        ecs: capacity::Usage {
            pods: 12,
            rps: 6000.0,
            cpu: 6.0,
        },
        eci: capacity::Usage {
            pods: 4,
            rps: 2000.0,
            cpu: 4.0,
        },
    };
    let mut state = EngineState::default();
    let mut last = None;
    for i in 0..capacity::MIN_SAMPLES {
        let mut o = obs(
            1000.0 + f64::from(i) * capacity::READING_SECONDS,
            &c,
            &loads,
            16,
        );
        o.pool_usage = Some(usage);
        o.fast = Some(FastSample {
            rps: 8000.0,
            pods_read: 10,
        });
        let out = decide(&p, &o, &state);
        state = out.state;
        last = Some(out.decision);
    }
    let d = last.unwrap();
    assert_eq!(d.relative.eci, 0.5);
    assert_eq!(d.relative.source, capacity::Source::Learnt);
    assert_eq!(d.replicas.desired, 20, "{}", d.summary());
    // 12 + 12 pods serve 18 pods' worth, 9,000 rps. The fast path reads 12,000 (24 pods'
    // worth, a third over): 12 on ECS and 24 on ECI.
    let c = cluster(3, 0, 12, 12);
    let loads = [LoadSample::Total(9000.0)];
    let mut o = obs(1100.0, &c, &loads, 24);
    o.fast = Some(FastSample {
        rps: 12_000.0,
        pods_read: 10,
    });
    let d = decide(&p, &o, &state).decision;
    assert_eq!(d.replicas.desired, 36, "{}", d.summary());
}

#[test]
fn a_per_pod_metric_counts_weaker_eci_pods_as_a_total_does() {
    let mut p = policy();
    p.eci.relative_capacity = Some(0.5);
    p.metrics[0].preset = None;
    p.metrics[0].query = Some("sum by (pod) (rate(requests[1m]))".into());
    // 12 ECS + 8 ECI pods serve 16 ECS pods' worth.
    let c = cluster(3, 0, 12, 8);
    let each =
        |rps: f64| LoadSample::PerPod(c.pods.iter().map(|p| (p.name.clone(), rps)).collect());
    // 475 a pod is within the tolerance of 500 pod by pod, but 9,500 in all is 19 ECS pods'
    // worth: 12 on ECS and 14 on ECI, as the same total would ask.
    let d = once(&p, &c, each(475.0), 20);
    assert_eq!(d.replicas.desired, 26, "{}", d.summary());
    assert_eq!(
        once(&p, &c, LoadSample::Total(9500.0), 20).replicas.desired,
        26
    );
    // 400 a pod, 8,000 in all: what the 20 serve.
    let d = once(&p, &c, each(400.0), 20);
    assert_eq!(d.replicas.desired, 20, "{}", d.summary());
}

fn read(mut p: GatewayPod, connections: f64, requests: f64) -> GatewayPod {
    p.drain = Some(crate::model::Drain {
        connections,
        requests,
    });
    p
}

#[test]
fn a_scale_in_removes_the_pods_that_cut_least_eci_first() {
    let mut pending = pod("pending", None, Pool::Pending, 0.0);
    pending.ready = false;
    pending.pending = true;
    let mut going = read(pod("going", Some("ecs-1"), Pool::Ecs, 0.0), 0.0, 0.0);
    going.terminating = true;
    let pods = vec![
        read(pod("ecs-busy", Some("ecs-1"), Pool::Ecs, 0.0), 300.0, 9.0),
        read(pod("ecs-idle", Some("ecs-1"), Pool::Ecs, 0.0), 2.0, 0.0),
        read(pod("eci-busy", Some("vk"), Pool::Eci, 0.0), 500.0, 3.0),
        read(pod("eci-quiet", Some("vk"), Pool::Eci, 0.0), 80.0, 5.0),
        read(pod("eci-tie", Some("vk"), Pool::Eci, 0.0), 80.0, 1.0),
        // Not read: counted at its pool's mean of those read (220), between the two.
        pod("eci-unread", Some("vk"), Pool::Eci, 0.0),
        pending,
        going,
    ];
    // The unready pod goes first whatever its cost (the ReplicaSet takes it so): one slot.
    assert_eq!(placement::victims(&pods, 1), Some(vec![]));
    let names = |n: usize| -> Vec<String> {
        placement::victims(&pods, n)
            .unwrap()
            .into_iter()
            .map(|(p, _)| p)
            .collect()
    };
    assert_eq!(names(3), ["eci-tie", "eci-quiet"]);
    assert_eq!(
        names(6),
        ["eci-tie", "eci-quiet", "eci-unread", "eci-busy", "ecs-idle"]
    );
    // The pod not read is counted at its pool's mean; the open count estimates it alike.
    assert_eq!(
        placement::victims(&pods, 4).unwrap()[2],
        ("eci-unread".into(), 220.0)
    );
    assert_eq!(
        placement::open_connections(&pods),
        300.0 + 2.0 + 500.0 + 80.0 + 80.0 + 220.0
    );
    let chosen = names(3);
    assert_eq!(
        placement::cut(&pods, &chosen),
        crate::model::Drain {
            connections: 160.0,
            requests: 6.0
        }
    );
    // Nothing read: nothing to choose by, the pool costs alone.
    let unread: Vec<GatewayPod> = pods
        .iter()
        .cloned()
        .map(|mut p| {
            p.drain = None;
            p
        })
        .collect();
    assert_eq!(placement::victims(&unread, 3), None);
    assert_eq!(placement::victims(&pods, 0), None);
}

#[test]
fn victims_carry_the_lowest_cost_and_a_kept_one_goes_back_to_its_pools() {
    let mut kept = read(pod("kept", Some("ecs-1"), Pool::Ecs, 0.0), 9.0, 0.0);
    kept.deletion_cost = Some(placement::VICTIM_DELETION_COST);
    let mut other = pod("other", Some("x"), Pool::Other, 0.0);
    other.deletion_cost = Some(placement::VICTIM_DELETION_COST);
    let mut eci = pod("eci", Some("vk"), Pool::Eci, 0.0);
    eci.deletion_cost = Some(placement::ECI_DELETION_COST);
    let pods = vec![kept, other, eci];
    let costs = placement::deletion_costs(&pods, &["eci".to_string()]);
    assert_eq!(
        costs,
        vec![
            ("kept".to_string(), placement::ECS_DELETION_COST),
            ("other".to_string(), 0),
            ("eci".to_string(), placement::VICTIM_DELETION_COST),
        ]
    );
    // The next decision checks the choice against the pods then.
    let mut gone = pods.clone();
    gone[2].terminating = true;
    assert_eq!(
        placement::check_victims(&["eci".into(), "kept".into(), "vanished".into()], &gone),
        placement::VictimCheck {
            as_chosen: 2,
            kept: 1
        }
    );
}

/// A scale-in that would reset more than `behavior.resetBudgetPercent` of the open connections
/// in a minute removes what fits (the first pod of a minute always goes) and holds the rest
/// back, saying so; the next minute the rest follows. Without connection counts, no budget.
#[test]
fn the_reset_budget_paces_a_scale_in_and_never_blocks_it() {
    let mut p = policy();
    p.behavior.scale_down.stabilization_window_seconds = Some(0);
    p.behavior.ecs_hold_seconds = Some(0);
    p.behavior.reset_budget_percent = Some(25.0);
    let mut c = cluster(3, 0, 10, 0);
    // 100 connections a pod, 1,000 open: 250 a minute, two pods and a half.
    for pod in &mut c.pods {
        pod.drain = Some(crate::model::Drain {
            connections: 100.0,
            requests: 0.0,
        });
    }
    let loads = [LoadSample::Total(1000.0)];
    let mut state = EngineState::default();
    let mut spec = 10;
    let mut removed_at = vec![];
    for t in (0..=420).step_by(15) {
        let out = decide(&p, &obs(f64::from(t), &c, &loads, spec), &state);
        state = out.state;
        let d = out.decision;
        let before = spec;
        if d.replicas.desired < spec {
            removed_at.push((t, spec - d.replicas.desired));
            assert_eq!(d.victims.len() as i32, spec - d.replicas.desired);
            c.pods.retain(|p| !d.victims.contains(&p.name));
            spec = d.replicas.desired;
        }
        if spec > 2 {
            assert!(d.replicas.held > 0, "at {t}: {}", d.replicas.reason);
            assert!(d.replicas.reason.contains("held back by the reset budget"));
            // The budget is the reason only when nothing goes: a partial scale-in keeps the
            // load's reason (the release bookkeeping reads it).
            assert_eq!(
                d.replicas.why == Why::ResetBudget,
                spec == before,
                "at {t}: {:?} {}",
                d.replicas.why,
                d.replicas.reason
            );
        }
    }
    // Two at once (200 of a budget of 250), then as a quarter of what is left allows, a
    // minute apart: 2 of 800, then 1 a minute (the first of a minute always goes).
    assert_eq!(
        removed_at,
        [(0, 2), (60, 2), (120, 1), (180, 1), (240, 1), (300, 1)]
    );
    assert_eq!(spec, 2, "{removed_at:?}");
    for w in removed_at.windows(2) {
        assert!(w[1].0 - w[0].0 >= 60, "{removed_at:?}");
    }
    // A dry run shows the choice and the pacing, and keeps neither: the same two pods at every
    // decision, no reset counted, no pod carried, no cost written for them.
    let mut dry = p.clone();
    dry.dry_run = true;
    let mut c = cluster(3, 0, 10, 0);
    for pod in &mut c.pods {
        pod.drain = Some(crate::model::Drain {
            connections: 100.0,
            requests: 0.0,
        });
    }
    let mut dry_state = EngineState::default();
    let mut shown: Option<Vec<String>> = None;
    for t in [0.0, 15.0, 30.0] {
        let out = decide(&dry, &obs(t, &c, &loads, 10), &dry_state);
        let d = &out.decision;
        assert_eq!(
            (d.victims.len(), d.replicas.held),
            (2, 6),
            "{}",
            d.replicas.reason
        );
        assert_eq!(shown.get_or_insert_with(|| d.victims.clone()), &d.victims);
        assert!(d.replicas.reason.contains("held back by the reset budget"));
        assert!(d.summary().contains("would remove"), "{}", d.summary());
        assert!(
            d.deletion_costs
                .iter()
                .all(|(_, cost)| *cost != crate::engine::placement::VICTIM_DELETION_COST),
            "{:?}",
            d.deletion_costs
        );
        assert!(out.state.resets.is_empty() && out.state.victims.is_empty());
        dry_state = out.state;
    }
    // Nothing read: the whole scale-in at once.
    let c10 = cluster(3, 0, 10, 0);
    let out = decide(&p, &obs(0.0, &c10, &loads, 10), &EngineState::default());
    assert_eq!(out.decision.replicas.desired, 2);
    // Lowering maxReplicas is not paced.
    let mut capped = p.clone();
    capped.max_replicas = 4;
    let out = decide(&capped, &obs(0.0, &c, &loads, 10), &EngineState::default());
    assert_eq!(
        out.decision.replicas.desired, 4,
        "{}",
        out.decision.replicas.reason
    );
    assert_eq!(out.decision.replicas.held, 0);
}

/// The ReplicaSet may act after the next decision: until it has, the victims keep their cost
/// (a cost put back at once would let it remove other pods), and they are checked only then.
#[test]
fn victims_keep_their_cost_until_the_replicaset_has_had_its_turn() {
    let mut p = policy();
    p.behavior.scale_down.stabilization_window_seconds = Some(0);
    p.behavior.ecs_hold_seconds = Some(0);
    p.behavior.reset_budget_percent = Some(100.0);
    let mut c = cluster(3, 0, 6, 0);
    for (i, pod) in c.pods.iter_mut().enumerate() {
        pod.drain = Some(crate::model::Drain {
            connections: 10.0 * i as f64,
            requests: 0.0,
        });
    }
    let loads = [LoadSample::Total(1000.0)];
    let first = decide(&p, &obs(0.0, &c, &loads, 6), &EngineState::default());
    let chosen = first.decision.victims.clone();
    assert_eq!(chosen.len(), 4, "{}", first.decision.replicas.reason);
    assert_eq!(first.decision.replicas.desired, 2);
    for (pod, cost) in &first.decision.deletion_costs {
        assert_eq!(
            *cost == placement::VICTIM_DELETION_COST,
            chosen.contains(pod),
            "{pod}"
        );
    }
    // Half a second later the pods carry the costs written, the ReplicaSet has not acted.
    for pod in &mut c.pods {
        pod.deletion_cost = first
            .decision
            .deletion_costs
            .iter()
            .find(|(name, _)| *name == pod.name)
            .map(|(_, cost)| *cost);
    }
    let next = decide(&p, &obs(0.5, &c, &loads, 2), &first.state);
    assert_eq!(next.decision.victim_check, None);
    assert!(
        next.decision.deletion_costs.is_empty(),
        "{:?}",
        next.decision.deletion_costs
    );
    assert_eq!(next.state.victims, chosen);
    // A ReplicaSet that never acts: checked (all kept) after VICTIM_SETTLE_SECONDS.
    let stuck = decide(
        &p,
        &obs(0.5 + VICTIM_SETTLE_SECONDS, &c, &loads, 2),
        &next.state,
    );
    assert_eq!(
        stuck.decision.victim_check,
        Some(placement::VictimCheck {
            as_chosen: 0,
            kept: 4
        })
    );
    // It removes three and another pod: checked once the fleet is down to the count.
    let other = c
        .pods
        .iter()
        .find(|p| !chosen.contains(&p.name))
        .map(|p| p.name.clone())
        .unwrap();
    c.pods
        .retain(|p| !chosen[..3].contains(&p.name) && p.name != other);
    let after = decide(&p, &obs(1.0, &c, &loads, 2), &next.state);
    assert_eq!(
        after.decision.victim_check,
        Some(placement::VictimCheck {
            as_chosen: 3,
            kept: 1
        })
    );
    assert!(after.state.victims.is_empty());
}
