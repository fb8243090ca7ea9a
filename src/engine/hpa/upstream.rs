//! Upstream's own replica-calculator cases, transcribed as data (Kubernetes v1.37.2,
//! `pkg/controller/podautoscaler/replica_calculator_test.go`), for the two calculations spillway
//! runs: `GetMetricReplicas` on per-pod values and `GetExternalPerPodMetricReplicas` on a total.
//! The per-pod cases run with upstream's grouping (the drill's `hpa` peer); spillway's own
//! grouping differs on purpose for Running pods that are not Ready (see `PodGrouping`). Left out:
//! the CPU-utilization tests (spillway sizes by load, never by CPU).

use super::*;
use crate::model::{Pool, Resources};

fn pods(n: usize) -> Vec<GatewayPod> {
    (0..n)
        .map(|i| GatewayPod {
            name: format!("test-pod-{i}"),
            node: Some("n".into()),
            pool: Pool::Ecs,
            ready: true,
            pending: false,
            terminating: false,
            requests: Resources::pod(1000, 1 << 30),
            deletion_cost: None,
            created_at: 0.0,
            ready_since: None,
            drain: None,
        })
        .collect()
}

fn tol(up: f64, down: f64) -> Tolerances {
    Tolerances { up, down }
}

const DEFAULT: Tolerances = Tolerances { up: 0.1, down: 0.1 };

/// (name, current replicas, pods, levels of the first pods, Running pods whose Ready condition
/// is False, target, tolerances, expected).
type PodCase = (
    &'static str,
    i32,
    usize,
    &'static [f64],
    &'static [usize],
    f64,
    Tolerances,
    i32,
);

/// `TestReplicaCalcPodMetric`, all eight cases, with upstream's grouping (the drill's `hpa`
/// peer). Pods beyond the levels report no value (missing).
#[test]
fn upstream_replica_calc_pod_metric() {
    let cases: [PodCase; 8] = [
        (
            "scale up",
            3,
            3,
            &[20000.0, 10000.0, 30000.0],
            &[],
            15000.0,
            DEFAULT,
            4,
        ),
        // Readiness is only checked for CPU: the not-ready pod counts at its value.
        (
            "scale up: unready hot-CPU pod scales less",
            3,
            3,
            &[50000.0, 10000.0, 30000.0],
            &[2],
            15000.0,
            DEFAULT,
            6,
        ),
        (
            "scale up: unready hot-CPU pods avoid scale-down",
            3,
            3,
            &[50000.0, 15000.0, 30000.0],
            &[0, 2],
            15000.0,
            DEFAULT,
            7,
        ),
        ("scale down", 5, 5, &[12000.0; 5], &[], 20000.0, DEFAULT, 3),
        (
            "within default tolerance",
            3,
            3,
            &[20000.0, 21000.0, 21000.0],
            &[],
            20000.0,
            DEFAULT,
            3,
        ),
        (
            "outside configurable 1% tolerance",
            3,
            3,
            &[20000.0, 21000.0, 21000.0],
            &[],
            20000.0,
            tol(0.01, 0.1),
            4,
        ),
        (
            "no change: missing metrics",
            5,
            5,
            &[20000.0, 19000.0, 21000.0],
            &[],
            20000.0,
            DEFAULT,
            5,
        ),
        (
            "rolling update with maxSurge: extra pod missing metric",
            2,
            3,
            &[10000.0, 10000.0],
            &[],
            17000.0,
            DEFAULT,
            2,
        ),
    ];
    for (name, current, n, levels, not_ready, target, tol, want) in cases {
        let samples: Vec<(String, f64)> = levels
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("test-pod-{i}"), *v))
            .collect();
        let mut pods = pods(n);
        for i in not_ready {
            pods[*i].ready = false;
        }
        let got =
            replicas_for_per_pod(current, &samples, &pods, target, tol, PodGrouping::Upstream);
        assert_eq!(got, Ok(want), "{name}");
    }
}

/// `TestReplicaCalcExternalPerPodMetric`: (name, status replicas, total, target per pod,
/// tolerances, expected replicas).
#[test]
fn upstream_replica_calc_external_per_pod_metric() {
    let max64 = i64::MAX as f64;
    let cases = [
        (
            "replica count overflow saturates to MaxInt32",
            1,
            max64,
            1.0,
            DEFAULT,
            i32::MAX,
        ),
        (
            "usage overflow with huge target leaves replicas unchanged",
            1,
            max64,
            max64,
            DEFAULT,
            1,
        ),
        ("scale up", 3, 8600.0, 2150.0, DEFAULT, 4),
        ("scale down", 5, 8600.0, 2867.0, DEFAULT, 3),
        ("within default tolerance", 3, 8600.0, 2900.0, DEFAULT, 3),
        (
            "outside configurable 1% tolerance",
            3,
            8600.0,
            2800.0,
            tol(0.01, 0.1),
            4,
        ),
    ];
    for (name, status, total, target, tol, want) in cases {
        assert_eq!(
            replicas_for_total(status, total, target, tol),
            want,
            "{name}"
        );
    }
}

/// The bounds are inclusive (`1-down <= ratio <= 1+up`): a ratio of exactly 1.1 keeps the count.
/// With no replicas in the status the ratio is infinite: always outside the tolerance.
#[test]
fn tolerance_bounds_are_inclusive_and_zero_replicas_scale() {
    assert_eq!(replicas_for_total(10, 1100.0, 100.0, DEFAULT), 10);
    assert_eq!(replicas_for_total(10, 900.0, 100.0, DEFAULT), 10);
    assert_eq!(replicas_for_total(10, 1101.0, 100.0, DEFAULT), 12);
    assert_eq!(replicas_for_total(0, 105.0, 100.0, DEFAULT), 2);
    assert_eq!(replicas_for_total(0, 0.0, 100.0, DEFAULT), 0);
    // Per direction: no tolerance up, a wide one down.
    let t = tol(0.0, 0.3);
    assert_eq!(replicas_for_total(10, 1001.0, 100.0, t), 11);
    assert_eq!(replicas_for_total(10, 750.0, 100.0, t), 10);
    assert_eq!(replicas_for_total(10, 690.0, 100.0, t), 7);
}

/// `groupPods` for a Pods metric (`TestGroupPods`'s non-CPU rules, on the calculation): a pod
/// being deleted is ignored even with a sample, a Pending pod is unready (0 on a scale-up), and a
/// sample of a pod the lister does not have counts in the average but not in the ready count.
#[test]
fn upstream_group_pods_for_a_pods_metric() {
    let s = |v: &[(&str, f64)]| {
        v.iter()
            .map(|(n, x)| ((*n).to_string(), *x))
            .collect::<Vec<_>>()
    };
    let mut p = pods(3);
    p[2].terminating = true;
    // The deleted pod's 90000 is ignored: (30000 + 30000) / 2 / 15000 = 2 -> 4.
    let samples = s(&[
        ("test-pod-0", 30000.0),
        ("test-pod-1", 30000.0),
        ("test-pod-2", 90000.0),
    ]);
    assert_eq!(
        replicas_for_per_pod(3, &samples, &p, 15000.0, DEFAULT, PodGrouping::Upstream),
        Ok(4)
    );
    let mut p = pods(3);
    p[2].pending = true;
    p[2].ready = false;
    // Pending at 0 on a scale-up: (30000 + 30000 + 0) / 3 / 15000 = 1.33 -> 4.
    assert_eq!(
        replicas_for_per_pod(3, &samples, &p, 15000.0, DEFAULT, PodGrouping::Upstream),
        Ok(4)
    );
    // An unlisted pod's sample: (30000 + 30000 + 60000) / 3 = 40000 -> ratio 2.67 x 2 ready -> 6.
    let p = pods(2);
    let samples = s(&[
        ("test-pod-0", 30000.0),
        ("test-pod-1", 30000.0),
        ("gone", 60000.0),
    ]);
    assert_eq!(
        replicas_for_per_pod(2, &samples, &p, 15000.0, DEFAULT, PodGrouping::Upstream),
        Ok(6)
    );
    // spillway's own grouping drops it: 30000 / 15000 x 2 -> 4.
    assert_eq!(
        replicas_for_per_pod(2, &samples, &p, 15000.0, DEFAULT, PodGrouping::Serving),
        Ok(4)
    );
    // No pods at all is an error upstream, whatever the metrics API returned.
    assert!(
        replicas_for_per_pod(2, &samples, &[], 15000.0, DEFAULT, PodGrouping::Upstream).is_err()
    );
}
