//! How long each pool takes to start a gateway pod, creation to Ready, learnt from the pods the
//! engine saw being born. Capacity asked for ahead of a known peak must be asked for that long
//! before it is needed, per pool: an ECI pod (an instance created, its image pulled) starts far
//! slower than a pod on an ECS node that has the image. Until a pool has
//! [`MIN_SAMPLES`] starts, the policy's `eci.startSeconds` (40 unless set) stands for ECI and
//! [`DEFAULT_ECS_SECONDS`] for ECS.
//!
//! Only pods created after the engine's first decision count: an older pod's Ready time may
//! be its last restart's, not its start's. A pod is counted once, at the first decision that
//! sees it Ready (one Ready and unready again between two decisions counts at its next Ready).
//! With fewer than 20 starts, the nearest-rank p95 is the slowest one.
//!
//! They are how far ahead a planned event's pods go up ([`super::planned`]); the live agent
//! reads no planned events yet, so there they are reported only (metrics).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::model::{GatewayPod, Pool};

/// Starts kept per pool: the p95 of the most recent ones.
pub const SAMPLES: usize = 20;
/// Starts a pool needs before its own p95 replaces the default.
pub const MIN_SAMPLES: usize = 3;
/// An ECS pod's start until learnt: a node with the image, the proxy's readiness probe.
pub const DEFAULT_ECS_SECONDS: f64 = 15.0;
/// A start longer than this is not a start (a pod stuck for a day and fixed by hand); it would
/// make every planned lead absurd. The longest `eci.startSeconds` a policy may state.
pub const MAX_SECONDS: f64 = 3600.0;
/// Ready this much before its creation is two clocks that disagree (the kubelet stamps Ready,
/// the apiserver the creation, each to the second): a start of 0. Earlier still is not a start.
const SKEW_SECONDS: f64 = 5.0;

/// The starts of one pool.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PoolStarts {
    /// The latest starts, oldest first, at most [`SAMPLES`].
    pub recent: Vec<f64>,
    /// Starts counted in all.
    pub count: u64,
}

impl PoolStarts {
    fn push(&mut self, seconds: f64) {
        if self.recent.len() == SAMPLES {
            self.recent.remove(0);
        }
        self.recent.push(seconds);
        self.count += 1;
    }

    /// The nearest-rank 95th percentile of the recent starts, once there are enough.
    pub fn p95(&self) -> Option<f64> {
        if self.recent.len() < MIN_SAMPLES {
            return None;
        }
        let mut s = self.recent.clone();
        s.sort_by(f64::total_cmp);
        let rank = (0.95 * s.len() as f64).ceil() as usize;
        s.get(rank.clamp(1, s.len()) - 1).copied()
    }
}

/// What the engine remembers of starts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StartMemory {
    /// The first decision's time: pods created since were born under observation.
    pub since: Option<f64>,
    /// Pods whose start is counted, by name, with their creation time (a pod of the same name
    /// created again is another pod); forgotten once gone.
    pub counted: HashMap<String, f64>,
    pub ecs: PoolStarts,
    pub eci: PoolStarts,
}

/// Each pool's start latency as a decision counts it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Starts {
    /// The p95 learnt, `None` while the default stands.
    pub ecs_learnt: Option<f64>,
    pub eci_learnt: Option<f64>,
    /// The start a pod of each pool is counted to take: learnt, else the default.
    pub ecs: f64,
    pub eci: f64,
    /// The starts this decision counted, `(pool, seconds)`: each pod once.
    pub new: Vec<(Pool, f64)>,
}

/// Counts the starts of the pods that became Ready since the last decision; `eci_stated` is
/// the policy's `eci.startSeconds` (or its default), which stands for ECI until learnt.
pub fn learn(mem: &mut StartMemory, pods: &[GatewayPod], now: f64, eci_stated: f64) -> Starts {
    let since = *mem.since.get_or_insert(now);
    let present: HashMap<&str, f64> = pods
        .iter()
        .map(|p| (p.name.as_str(), p.created_at))
        .collect();
    mem.counted
        .retain(|name, at| present.get(name.as_str()) == Some(at));
    let mut new = vec![];
    for p in pods {
        let Some(ready) = p.ready_since.filter(|_| p.ready) else {
            continue;
        };
        if p.created_at < since || mem.counted.get(&p.name) == Some(&p.created_at) {
            continue;
        }
        mem.counted.insert(p.name.clone(), p.created_at);
        let seconds = ready - p.created_at;
        if !(-SKEW_SECONDS..=MAX_SECONDS).contains(&seconds) {
            continue;
        }
        let seconds = seconds.max(0.0);
        let pool = match p.pool {
            Pool::Ecs => &mut mem.ecs,
            Pool::Eci => &mut mem.eci,
            _ => continue,
        };
        pool.push(seconds);
        new.push((p.pool, seconds));
    }
    let (ecs_learnt, eci_learnt) = (mem.ecs.p95(), mem.eci.p95());
    Starts {
        ecs_learnt,
        eci_learnt,
        ecs: ecs_learnt.unwrap_or(DEFAULT_ECS_SECONDS),
        eci: eci_learnt.unwrap_or(eci_stated),
        new,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Resources;

    fn pod(name: &str, pool: Pool, created: f64, ready: Option<f64>) -> GatewayPod {
        GatewayPod {
            name: name.into(),
            node: None,
            pool,
            ready: ready.is_some(),
            pending: false,
            terminating: false,
            requests: Resources::pod(1000, 1 << 30),
            deletion_cost: None,
            created_at: created,
            ready_since: ready,
            drain: None,
        }
    }

    #[test]
    fn each_pod_counts_once_in_its_pool_and_old_pods_not_at_all() {
        let mut mem = StartMemory::default();
        // Running before the first decision: its Ready time may be a restart's.
        let old = pod("old", Pool::Ecs, -500.0, Some(-10.0));
        let s = learn(&mut mem, std::slice::from_ref(&old), 0.0, 40.0);
        assert!(s.new.is_empty() && s.ecs_learnt.is_none());
        assert_eq!((s.ecs, s.eci), (DEFAULT_ECS_SECONDS, 40.0));
        let mut pods = vec![old];
        for i in 0..4 {
            pods.push(pod(
                &format!("e{i}"),
                Pool::Ecs,
                10.0,
                Some(14.0 + f64::from(i)),
            ));
            pods.push(pod(
                &format!("v{i}"),
                Pool::Eci,
                10.0,
                Some(40.0 + f64::from(i)),
            ));
        }
        pods.push(pod("starting", Pool::Eci, 10.0, None));
        let s = learn(&mut mem, &pods, 60.0, 40.0);
        assert_eq!(s.new.len(), 8);
        assert_eq!((s.ecs_learnt, s.eci_learnt), (Some(7.0), Some(33.0)));
        assert_eq!((s.ecs, s.eci), (7.0, 33.0));
        // Seen again: nothing new.
        assert!(learn(&mut mem, &pods, 62.0, 40.0).new.is_empty());
        // A pod of the same name created again is another pod; one gone is forgotten.
        pods.retain(|p| p.name != "e0");
        pods.push(pod("e0", Pool::Ecs, 70.0, Some(90.0)));
        let s = learn(&mut mem, &pods, 95.0, 40.0);
        assert_eq!(s.new, vec![(Pool::Ecs, 20.0)]);
        assert_eq!(s.ecs_learnt, Some(20.0));
        assert_eq!(mem.counted.len(), 8);
    }

    #[test]
    fn skew_is_a_start_of_0_absurd_starts_teach_nothing_and_the_window_slides() {
        let mut mem = StartMemory::default();
        learn(&mut mem, &[], 0.0, 40.0);
        // A second of skew is a start of 0; an hour before its creation is no start at all.
        let skewed = pod("skewed", Pool::Ecs, 10.0, Some(9.0));
        let backwards = pod("backwards", Pool::Ecs, 3610.0, Some(10.0));
        let stuck = pod("stuck", Pool::Ecs, 10.0, Some(10.0 + MAX_SECONDS + 1.0));
        let s = learn(&mut mem, &[skewed, backwards, stuck], 5000.0, 40.0);
        assert_eq!(s.new, vec![(Pool::Ecs, 0.0)]);
        let pods: Vec<GatewayPod> = (0..30)
            .map(|i| {
                pod(
                    &format!("p{i}"),
                    Pool::Eci,
                    100.0,
                    Some(100.0 + f64::from(i)),
                )
            })
            .collect();
        learn(&mut mem, &pods, 200.0, 40.0);
        assert_eq!(mem.eci.count, 30);
        assert_eq!(mem.eci.recent.len(), SAMPLES);
        // The last 20 starts are 10..=29 s; their p95 by nearest rank is the 19th: 28 s.
        assert_eq!(mem.eci.p95(), Some(28.0));
    }
}
