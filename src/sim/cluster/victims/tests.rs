//! Upstream's own table tests, transcribed as data (Kubernetes v1.37.2):
//! `pkg/controller/controller_utils_test.go` `TestSortingActivePodsWithRanks` and
//! `pkg/controller/replicaset/replica_set_test.go` `TestGetPodsToDelete`.

use super::*;

/// The upstream test's `now` (whole seconds, so truncation changes nothing), and its offsets.
const NOW: f64 = 2_000_000_000.0;
const HOUR: f64 = 3600.0;
const MONTH: f64 = 30.0 * 24.0 * HOUR;

fn pod(
    node: Option<usize>,
    phase: Phase,
    ready: bool,
    ready_since: Option<f64>,
    created: Option<f64>,
) -> Candidate {
    Candidate {
        node,
        phase,
        ready,
        ready_since,
        restarts: (0, 0),
        deletion_cost: 0,
        created,
        // The upstream test leaves every UID empty: equal.
        uid: 0,
    }
}

/// `TestSortingActivePodsWithRanks`'s pods, by the names the test gives them.
fn sorting_pods(name: &str) -> Candidate {
    let n = Some(0);
    let (now, then) = (Some(NOW), Some(NOW - MONTH));
    use Phase::*;
    match name {
        "unscheduled" => pod(None, Pending, false, None, None),
        "pending" => pod(n, Pending, false, None, None),
        "unknown-phase" => pod(n, Unknown, false, None, None),
        "not-ready" => pod(n, Running, false, None, None),
        "ready-no-last-transition-time" => pod(n, Running, true, None, None),
        "ready-now" => pod(n, Running, true, now, now),
        "ready-then" => pod(n, Running, true, then, then),
        "ready-high-restarts" => Candidate {
            restarts: (9001, 0),
            ..pod(n, Running, true, now, now)
        },
        "ready-high-side-restarts" => Candidate {
            restarts: (9001, 9001),
            ..pod(n, Running, true, now, now)
        },
        "ready-now-created-then" => pod(n, Running, true, now, then),
        "low-deletion-cost" => Candidate {
            deletion_cost: 10,
            ..pod(n, Running, true, now, then)
        },
        "high-deletion-cost" => Candidate {
            deletion_cost: 100,
            ..pod(n, Running, true, now, then)
        },
        "unscheduled-5-hours" => pod(
            None,
            Pending,
            false,
            Some(NOW - 5.0 * HOUR),
            Some(NOW - 5.0 * HOUR),
        ),
        // The upstream test names it "10 hours" and sets 8.
        "unscheduled-10-hours" => pod(
            None,
            Pending,
            false,
            Some(NOW - 8.0 * HOUR),
            Some(NOW - 8.0 * HOUR),
        ),
        "ready-2-hours" => pod(None, Running, true, Some(NOW - 2.0 * HOUR), then),
        "ready-5-hours" => pod(None, Running, true, Some(NOW - 5.0 * HOUR), then),
        "ready-10-hours" => pod(None, Running, true, Some(NOW - 8.0 * HOUR), then),
        other => panic!("no pod {other}"),
    }
}

#[test]
fn upstream_sorting_active_pods_with_ranks() {
    let equal = [
        ("unscheduled", "unscheduled"),
        ("pending", "pending"),
        ("unknown-phase", "unknown-phase"),
        ("not-ready", "not-ready"),
        ("ready-now-created-then", "ready-now-created-then"),
        ("ready-now", "ready-now"),
        ("ready-then", "ready-then"),
        ("ready-high-restarts", "ready-high-restarts"),
        ("unscheduled-5-hours", "unscheduled-10-hours"),
        ("ready-5-hours", "ready-10-hours"),
    ];
    for (a, b) in equal {
        let got = order(&sorting_pods(a), 1, &sorting_pods(b), 1, NOW);
        assert_eq!(got, Ordering::Equal, "{a} vs {b}");
        let back = order(&sorting_pods(b), 1, &sorting_pods(a), 1, NOW);
        assert_eq!(back, Ordering::Equal, "{b} vs {a}");
    }
    // (lesser, its rank, greater, its rank): the lesser is deleted first.
    let less = [
        ("unscheduled", 1, "pending", 2),
        ("unscheduled", 2, "pending", 1),
        ("pending", 1, "unknown-phase", 2),
        ("unknown-phase", 1, "not-ready", 2),
        ("not-ready", 1, "ready-no-last-transition-time", 1),
        ("ready-no-last-transition-time", 1, "ready-now", 1),
        ("ready-now", 2, "ready-no-last-transition-time", 1),
        ("ready-now", 1, "ready-then", 1),
        ("ready-now", 2, "ready-then", 1),
        ("ready-high-restarts", 1, "ready-now", 1),
        ("ready-high-side-restarts", 1, "ready-high-restarts", 1),
        ("ready-now", 2, "ready-high-restarts", 1),
        ("ready-now", 1, "ready-now-created-then", 1),
        ("ready-now-created-then", 2, "ready-now", 1),
        ("low-deletion-cost", 2, "high-deletion-cost", 1),
        ("ready-2-hours", 1, "ready-5-hours", 1),
    ];
    for (a, ra, b, rb) in less {
        let (pa, pb) = (sorting_pods(a), sorting_pods(b));
        assert_eq!(
            order(&pa, ra, &pb, rb, NOW),
            Ordering::Less,
            "{a}/{ra} < {b}/{rb}"
        );
        assert_eq!(
            order(&pb, rb, &pa, ra, NOW),
            Ordering::Greater,
            "{b}/{rb} > {a}/{ra}"
        );
    }
}

/// `TestGetPodsToDelete`'s pods: U unscheduled pending, SP scheduled pending, NR running not
/// ready, R1 and R2 running ready on nodes 1 and 2 (upstream's `newPod`: random UIDs, no times).
fn to_delete_pod(name: &str, uid: u64) -> Candidate {
    use Phase::*;
    let p = match name {
        "U" => pod(None, Pending, false, None, None),
        "SP" => pod(Some(0), Pending, false, None, None),
        "NR" => pod(Some(0), Running, false, None, None),
        "R1" => pod(Some(1), Running, true, None, None),
        "R2" => pod(Some(2), Running, true, None, None),
        other => panic!("no pod {other}"),
    };
    Candidate { uid, ..p }
}

#[test]
fn upstream_get_pods_to_delete() {
    // (test name, candidates, related (None: the candidates), diff, expected victims)
    type Case = (
        &'static str,
        &'static [&'static str],
        Option<&'static [&'static str]>,
        usize,
        &'static [&'static str],
    );
    let cases: [Case; 10] = [
        ("len(pods) = 0 (i.e., diff = 0 too)", &[], None, 0, &[]),
        ("diff = len(pods)", &["NR", "R1"], None, 2, &["NR", "R1"]),
        ("diff < len(pods)", &["R1", "NR"], None, 1, &["NR"]),
        (
            "various pod phases and conditions, diff = len(pods)",
            &["R1", "R1", "R2", "NR", "SP", "U"],
            None,
            6,
            &["R1", "R1", "R2", "NR", "SP", "U"],
        ),
        (
            "various pod phases and conditions, diff = len(pods), relatedPods empty",
            &["R1", "R1", "R2", "NR", "SP", "U"],
            Some(&[]),
            6,
            &["R1", "R1", "R2", "NR", "SP", "U"],
        ),
        (
            "scheduled vs unscheduled, diff < len(pods)",
            &["SP", "U"],
            None,
            1,
            &["U"],
        ),
        (
            "ready vs not-ready, diff < len(pods)",
            &["R1", "NR", "NR"],
            None,
            2,
            &["NR", "NR"],
        ),
        (
            "ready and colocated with another ready pod vs not colocated, diff < len(pods)",
            &["R1", "R2"],
            Some(&["R1", "R2", "R2"]),
            1,
            &["R2"],
        ),
        (
            "pending vs running, diff < len(pods)",
            &["SP", "NR"],
            None,
            1,
            &["SP"],
        ),
        (
            "various pod phases and conditions, diff < len(pods)",
            &["R1", "R2", "NR", "SP", "U"],
            None,
            3,
            &["U", "SP", "NR"],
        ),
    ];
    for (name, pods, related, diff, want) in cases {
        // Whatever UIDs the apiserver gives: the answer must not depend on them here.
        for seed in 0..8u64 {
            let candidates: Vec<Candidate> = pods
                .iter()
                .enumerate()
                .map(|(i, p)| to_delete_pod(p, uid(seed * 100 + i as u64)))
                .collect();
            let related: Vec<Option<usize>> = related
                .unwrap_or(pods)
                .iter()
                .map(|p| to_delete_pod(p, 0).node)
                .collect();
            let got: Vec<&str> = to_delete(&candidates, &related, diff, NOW)
                .into_iter()
                .map(|i| pods[i])
                .collect();
            assert_eq!(got, want, "{name} (UIDs seed {seed})");
        }
    }
}

/// Ages are bucketed by log2 of nanoseconds from whole-second timestamps: 500 s and 530 s
/// share a bucket (2^38 ns ≈ 274.9 s up to 549.8 s), 530 s and 560 s do not; within a bucket
/// the smaller UID goes first, whatever the ages; to the second equal times fall through.
#[test]
fn log2_nanosecond_buckets_and_uid_within_a_bucket() {
    let ready = |ago: f64, uid: u64| Candidate {
        uid,
        ..pod(
            Some(0),
            Phase::Running,
            true,
            Some(NOW - ago),
            Some(NOW - 1e5),
        )
    };
    assert_eq!(
        order(&ready(500.0, 2), 1, &ready(530.0, 1), 1, NOW),
        Ordering::Greater
    );
    assert_eq!(
        order(&ready(500.0, 1), 1, &ready(530.0, 2), 1, NOW),
        Ordering::Less
    );
    assert_eq!(
        order(&ready(530.0, 9), 1, &ready(560.0, 1), 1, NOW),
        Ordering::Less
    );
    // 105.3 s and 105.7 s ago are one whole second: equal ready times, then equal creation.
    assert_eq!(
        order(&ready(105.3, 1), 1, &ready(105.1, 2), 1, NOW + 0.4),
        Ordering::Equal
    );
}

/// Ties upstream leaves open are not decided by the order pods came in.
#[test]
fn open_ties_do_not_follow_input_order() {
    let same = |u: u64| Candidate {
        uid: uid(u),
        ..pod(
            Some(0),
            Phase::Running,
            true,
            Some(NOW - 100.0),
            Some(NOW - 200.0),
        )
    };
    let pods: Vec<Candidate> = (0..6).map(same).collect();
    let related = vec![Some(0); 6];
    let forward = to_delete(&pods, &related, 3, NOW);
    let reversed: Vec<Candidate> = pods.iter().rev().cloned().collect();
    let backward: Vec<usize> = to_delete(&reversed, &related, 3, NOW)
        .into_iter()
        .map(|i| 5 - i)
        .collect();
    assert_eq!(forward, backward);
    assert_ne!(forward, vec![0, 1, 2], "not simply the first ones made");
}
