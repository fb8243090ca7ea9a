//! The ReplicaSet controller's choice of pods to delete on scale-in, as Kubernetes v1.37 makes it
//! (`getPodsToDelete` and `getPodsRankedByRelatedPodsOnSameNode` in
//! `pkg/controller/replicaset/replica_set.go`, `ActivePodsWithRanks.Less` in
//! `pkg/controller/controller_utils.go`), including where upstream leaves the order open.
//!
//! Three details decide most ties and are easy to miss: timestamps are whole seconds (they go
//! through RFC 3339), ages are bucketed by `floor(log2(nanoseconds))` (LogarithmicScaleDown,
//! unconditional since its gate was removed), and two different times in one bucket are ordered
//! by UID and nothing else. Pods equal on every key are in no defined order upstream (the
//! candidates come out of a Go map and `sort.Sort` is not stable past 12 items); the model draws
//! that order from the pods' UIDs, which a seeded run makes pseudo-random, never by name or by
//! the order the pods were made.

use std::cmp::Ordering;

/// A pod's phase as the controller ranks it (`podPhaseToOrdinal`: other phases rank as Pending).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Pending,
    Unknown,
    Running,
}

/// What `ActivePodsWithRanks.Less` reads of one pod. Times are seconds on the caller's clock;
/// `None` is Go's zero time.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub node: Option<usize>,
    pub phase: Phase,
    pub ready: bool,
    /// `lastTransitionTime` of the Ready condition, when ready.
    pub ready_since: Option<f64>,
    /// Highest restart count of the regular containers, then of the sidecars.
    pub restarts: (i32, i32),
    /// `controller.kubernetes.io/pod-deletion-cost` (an invalid value counts as 0 upstream).
    pub deletion_cost: i32,
    pub created: Option<f64>,
    pub uid: u64,
}

/// `floor(log2(age in nanoseconds))` of a whole-second timestamp at `now`; -1 when not in the past.
fn bucket(t: f64, now: f64) -> i64 {
    let ns = (now - t.floor()) * 1e9;
    if ns > 0.0 {
        ns.log2().floor() as i64
    } else {
        -1
    }
}

/// Rules 6 and 8: `afterOrZero` when a time is missing, else the log2 buckets, and within one
/// bucket the UID (and nothing after it). `None` when the two times are equal (to the second).
fn by_time(a: Option<f64>, b: Option<f64>, ua: u64, ub: u64, now: f64) -> Option<Ordering> {
    let (a, b) = (a.map(f64::floor), b.map(f64::floor));
    if a == b {
        return None;
    }
    Some(match (a, b) {
        // "Zero counts as later than any time": it sorts first.
        (None, _) => Ordering::Less,
        (_, None) => Ordering::Greater,
        (Some(x), Some(y)) => match bucket(x, now).cmp(&bucket(y, now)) {
            Ordering::Equal => ua.cmp(&ub),
            o => o,
        },
    })
}

/// `ActivePodsWithRanks.Less` as an ordering: `Less` means `a` is deleted before `b`, `Equal`
/// that upstream holds them equal. `rank` is the number of the Deployment's active pods on the
/// pod's node (more goes first).
pub fn order(a: &Candidate, rank_a: usize, b: &Candidate, rank_b: usize, now: f64) -> Ordering {
    // 1. Unassigned first (node names themselves are not compared).
    if a.node.is_none() != b.node.is_none() {
        return if a.node.is_none() {
            Ordering::Less
        } else {
            Ordering::Greater
        };
    }
    a.phase
        .cmp(&b.phase)
        .then_with(|| a.ready.cmp(&b.ready))
        .then_with(|| a.deletion_cost.cmp(&b.deletion_cost))
        .then_with(|| rank_b.cmp(&rank_a))
        .then_with(|| {
            if a.ready && b.ready {
                by_time(a.ready_since, b.ready_since, a.uid, b.uid, now).unwrap_or(Ordering::Equal)
            } else {
                Ordering::Equal
            }
        })
        // More restarts first: regular containers, then sidecars.
        .then_with(|| b.restarts.cmp(&a.restarts))
        .then_with(|| by_time(a.created, b.created, a.uid, b.uid, now).unwrap_or(Ordering::Equal))
}

/// Each candidate's rank: how many `related` pods (the active pods of every ReplicaSet of the
/// Deployment, the candidates included) are on its node; unassigned pods share one rank.
pub fn ranks(candidates: &[Candidate], related: &[Option<usize>]) -> Vec<usize> {
    candidates
        .iter()
        .map(|c| related.iter().filter(|n| **n == c.node).count())
        .collect()
}

/// `getPodsToDelete`: the indices of the `diff` candidates deleted, in upstream's order. All
/// of them, unsorted, when every candidate goes. Ties upstream leaves open are ordered by UID.
pub fn to_delete(
    candidates: &[Candidate],
    related: &[Option<usize>],
    diff: usize,
    now: f64,
) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..candidates.len()).collect();
    if diff < candidates.len() {
        let rank = ranks(candidates, related);
        let first = |i: usize, j: usize| {
            order(&candidates[i], rank[i], &candidates[j], rank[j], now)
                .then_with(|| candidates[i].uid.cmp(&candidates[j].uid))
                == Ordering::Less
        };
        // An insertion sort, as Go's `sort.Sort` runs on small inputs: upstream's comparison is
        // not transitive (a UID decides within a bucket, restarts or age across pods with equal
        // times), which `slice::sort_by` may reject by panicking.
        for k in 1..idx.len() {
            let mut m = k;
            while m > 0 && first(idx[m], idx[m - 1]) {
                idx.swap(m, m - 1);
                m -= 1;
            }
        }
    }
    idx.truncate(diff);
    idx
}

/// A pseudo-random UID for the `n`th pod of a run (splitmix64): stands for the apiserver's
/// random UIDs without drawing from the run's RNG.
pub fn uid(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests;
