//! Issue 34's measurement: loads and clusters nobody tuned for. Each seed draws a cluster whose
//! ECS nodes carry other workloads (CPU-heavy or memory-heavy) and hold many gateway pods each,
//! ECS room for 0.3–1× of the peak's pods, and a load shape (a flash crowd, a slow ramp, a
//! sawtooth of short spikes, a compressed day with noise); spillway and the HPA run it with
//! every policy field at its default but `maxReplicas` (sized for the peak).
//!
//! `placement.poolSpread` gives a Deployment gateway its own spread constraints and an
//! IstioGateway a preferred pod affinity on the pool label: either way the scheduler keeps the
//! pods on ECS while ECS has room, so ECI pod·s while ECS had a free slot stay within 2 % of the
//! ECI pod·s on every load. A third of the seeds turn it off: the scheduler's default spreading
//! then sends pods to the virtual node as it does for the HPA, and spillway's swaps back,
//! planned with the scheduler model, must not do worse than the HPA, and almost never miss.
//!
//! `cargo test --release --test generated -- --ignored --nocapture` runs 60 seeds and prints a
//! line per load; the default run takes 12.
#![allow(clippy::unwrap_used)]

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};
use spillway::policy::TargetKind;
use spillway::sim::drill::{Quiet, Summary};
use spillway::sim::load::{Component, LoadProfile};
use spillway::sim::{PolicyKind, Scenario, run};

/// What spillway controls of the gateway's placement on a load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    /// A Deployment: the pool spread constraints.
    Deployment,
    /// An IstioGateway: the pool affinity in its `affinity`.
    IstioGateway,
    /// An IstioGateway with `placement.poolSpread: false`: the scheduler's defaults, and the
    /// swaps back planned with the scheduler model.
    NoPoolSpread,
}

/// A number in `[lo, hi)`.
fn uniform(rng: &mut ChaCha8Rng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

struct Generated {
    scenario: Scenario,
    what: String,
    ecs_slots: i64,
    peak_pods: i64,
}

/// Pods per replica target of the default policy (`RequestRate`, 500 rps a pod).
const TARGET: f64 = 500.0;

fn generate(seed: u64, variant: Variant) -> Generated {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut s = Scenario {
        seed,
        duration_seconds: 7200,
        policies: vec![PolicyKind::Spillway, PolicyKind::Hpa],
        ..Scenario::default()
    };
    s.policy.target.kind = if variant == Variant::Deployment {
        TargetKind::Deployment
    } else {
        TargetKind::IstioGateway
    };
    s.policy.placement.pool_spread = variant != Variant::NoPoolSpread;
    // ECS: 3–9 nodes of 16 or 32 vCPU (4 GiB a vCPU), other work CPU-heavy or memory-heavy.
    let count = 3 + (rng.next_u64() % 7) as i64;
    let cpu: i64 = if rng.next_u64().is_multiple_of(2) {
        16
    } else {
        32
    };
    let mem = cpu * 4;
    let cpu_heavy = rng.next_u64().is_multiple_of(2);
    let (other_cpu, other_mem) = if cpu_heavy {
        (
            (cpu as f64 * uniform(&mut rng, 0.3, 0.6)).floor() as i64,
            (mem as f64 * uniform(&mut rng, 0.1, 0.2)).floor() as i64,
        )
    } else {
        (
            (cpu as f64 * uniform(&mut rng, 0.1, 0.2)).floor() as i64,
            (mem as f64 * uniform(&mut rng, 0.6, 0.85)).floor() as i64,
        )
    };
    s.cluster.ecs.count = count as u32;
    s.cluster.ecs.cpu = cpu.to_string();
    s.cluster.ecs.memory = format!("{mem}Gi");
    s.cluster.ecs.other_cpu = other_cpu.to_string();
    s.cluster.ecs.other_memory = format!("{other_mem}Gi");
    // The gateway pod: 2 vCPU, 2 GiB (the scenario's).
    let per_node = ((cpu - other_cpu) / 2).min((mem - other_mem) / 2);
    let ecs_slots = count * per_node;
    // ECS holds 0.3–1× of the peak's pods.
    let room = uniform(&mut rng, 0.3, 1.0);
    let peak_pods = ((ecs_slots as f64 / room).ceil() as i64).max(ecs_slots + 1);
    let peak = peak_pods as f64 * TARGET * 0.95;
    let base = peak * uniform(&mut rng, 0.15, 0.4);
    let shape = rng.next_u64() % 4;
    let mut components = vec![Component::Constant { rps: base }];
    let what = match shape {
        0 => {
            let rise = uniform(&mut rng, 30.0, 300.0);
            let hold = uniform(&mut rng, 300.0, 1800.0);
            components.push(Component::Spike {
                at_seconds: uniform(&mut rng, 600.0, 1800.0),
                rise_seconds: rise,
                hold_seconds: hold,
                fall_seconds: uniform(&mut rng, 120.0, 900.0),
                rps: peak - base,
            });
            format!("flash crowd (rise {rise:.0} s, hold {hold:.0} s)")
        }
        1 => {
            let up = uniform(&mut rng, 1200.0, 2400.0);
            components.push(Component::Ramp {
                start_seconds: 300.0,
                end_seconds: 300.0 + up,
                rps: peak - base,
            });
            components.push(Component::Ramp {
                start_seconds: 300.0 + up + 600.0,
                end_seconds: 300.0 + 2.0 * up + 600.0,
                rps: base - peak,
            });
            format!("slow ramp ({up:.0} s up, 10 min held, as long down)")
        }
        2 => {
            let n = 3 + rng.next_u64() % 4;
            let len = uniform(&mut rng, 120.0, 300.0);
            for i in 0..n {
                components.push(Component::Spike {
                    at_seconds: 900.0 + i as f64 * 1200.0,
                    rise_seconds: 20.0,
                    hold_seconds: len,
                    fall_seconds: 30.0,
                    rps: (peak - base) * uniform(&mut rng, 0.6, 1.0),
                });
            }
            format!("sawtooth ({n} spikes of {len:.0} s)")
        }
        _ => {
            components.push(Component::Diurnal {
                mean_rps: (peak - base) / 2.0,
                amplitude_rps: (peak - base) / 2.0,
                period_seconds: 7200.0,
                peak_at_seconds: 3600.0,
            });
            components.push(Component::Noise {
                rps: 0.08 * peak,
                every_seconds: 60.0,
                seed,
            });
            "compressed day with noise".to_string()
        }
    };
    s.load = LoadProfile { components };
    s.gateway.replicas = ((base / TARGET).ceil() as i32).max(2);
    s.policy.max_replicas = (peak_pods as i32 + 10).max(s.policy.max_replicas);
    s.name = format!("seed {seed}: {what}");
    let what = format!(
        "{what}; {count}×{cpu} vCPU ECS, {} other work, {per_node} gateway pods a node, room {:.2}× the peak's {peak_pods} pods",
        if cpu_heavy {
            "CPU-heavy"
        } else {
            "memory-heavy"
        },
        room
    );
    Generated {
        scenario: s,
        what,
        ecs_slots,
        peak_pods,
    }
}

struct Measured {
    name: String,
    variant: Variant,
    spillway: Summary,
    hpa: Summary,
}

fn measure(seeds: std::ops::Range<u64>) -> Vec<Measured> {
    let mut out = vec![];
    for seed in seeds {
        let variant = [
            Variant::Deployment,
            Variant::IstioGateway,
            Variant::NoPoolSpread,
        ][(seed % 3) as usize];
        let g = generate(seed, variant);
        assert!(g.peak_pods > g.ecs_slots, "{}", g.what);
        let report = run(&g.scenario, &mut Quiet);
        let by = |p: &str| {
            report
                .runs
                .iter()
                .find(|r| r.summary.policy == p)
                .unwrap()
                .summary
                .clone()
        };
        let (sw, hpa) = (by("spillway"), by("hpa"));
        println!(
            "seed {seed:>3} {:<12} ECIfree spillway {:>6.0} of {:>7.0} pod·s ({:>4.1} %), hpa {:>6.0} of {:>7.0} ({:>4.1} %); rev {} vs {}; swaps {} started, {} on ECS, {} missed, {} held | {}",
            format!("{variant:?}"),
            sw.eci_pod_seconds_ecs_free,
            sw.eci_pod_seconds,
            100.0 * sw.eci_pod_seconds_ecs_free / sw.eci_pod_seconds.max(1.0),
            hpa.eci_pod_seconds_ecs_free,
            hpa.eci_pod_seconds,
            100.0 * hpa.eci_pod_seconds_ecs_free / hpa.eci_pod_seconds.max(1.0),
            sw.reversals,
            hpa.reversals,
            sw.swaps.started,
            sw.swaps.landed_ecs,
            sw.swaps.missed,
            sw.swaps.held,
            g.what
        );
        out.push(Measured {
            name: g.scenario.name.clone(),
            variant,
            spillway: sw,
            hpa,
        });
    }
    out
}

/// The targets of issue 34 that the drill can check. Reversals are printed, not asserted here:
/// swaps are not counted among them (their replica changes are `swap_changes`), so what remains
/// is the engine's answer to the load (issue 27's subject).
fn check(measured: &[Measured]) {
    for m in measured {
        let (sw, hpa) = (&m.spillway, &m.hpa);
        if m.variant != Variant::NoPoolSpread {
            assert!(
                sw.eci_pod_seconds_ecs_free <= 0.02 * sw.eci_pod_seconds,
                "{}: ECI while ECS free {:.0} of {:.0} pod·s",
                m.name,
                sw.eci_pod_seconds_ecs_free,
                sw.eci_pod_seconds
            );
        } else {
            assert!(
                sw.eci_pod_seconds_ecs_free <= hpa.eci_pod_seconds_ecs_free + 1.0,
                "{}: ECI while ECS free {:.0} vs the HPA's {:.0}",
                m.name,
                sw.eci_pod_seconds_ecs_free,
                hpa.eci_pod_seconds_ecs_free
            );
        }
    }
    let mut swaps = spillway::sim::drill::SwapTally::default();
    for m in measured {
        swaps.add(&m.spillway.swaps);
    }
    for variant in [
        Variant::Deployment,
        Variant::IstioGateway,
        Variant::NoPoolSpread,
    ] {
        let of = |f: fn(&Measured) -> f64| -> f64 {
            measured
                .iter()
                .filter(|m| m.variant == variant)
                .map(f)
                .sum()
        };
        let sw_free = of(|m| m.spillway.eci_pod_seconds_ecs_free);
        let sw_eci = of(|m| m.spillway.eci_pod_seconds);
        let hpa_free = of(|m| m.hpa.eci_pod_seconds_ecs_free);
        let hpa_eci = of(|m| m.hpa.eci_pod_seconds);
        let over = measured
            .iter()
            .filter(|m| m.variant == variant && m.spillway.reversals > m.hpa.reversals + 1)
            .count();
        println!(
            "{variant:?}: ECI pod·s while ECS free: spillway {sw_free:.0} of {sw_eci:.0} ({:.1} %), hpa {hpa_free:.0} of {hpa_eci:.0} ({:.1} %); loads with reversals > hpa+1: {over}",
            100.0 * sw_free / sw_eci.max(1.0),
            100.0 * hpa_free / hpa_eci.max(1.0)
        );
    }
    println!(
        "swaps: {} started, {} ended on ECS, {} missed, {} not ready; {} pods added off ECS as planned; {} held",
        swaps.started, swaps.landed_ecs, swaps.missed, swaps.gave_up, swaps.one_more, swaps.held
    );
    assert!(
        f64::from(swaps.missed + swaps.gave_up) <= 0.05 * f64::from(swaps.started),
        "{swaps:?}"
    );
}

#[test]
fn generated_loads_keep_the_gateway_on_ecs() {
    check(&measure(0..12));
}

#[test]
#[ignore = "60 loads, ~a minute in release: cargo test --release --test generated -- --ignored --nocapture"]
fn sixty_generated_loads_keep_the_gateway_on_ecs() {
    check(&measure(100..160));
}
