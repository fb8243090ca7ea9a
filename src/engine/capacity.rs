//! Per-pool capacity: what one ECI pod serves beside one ECS pod.
//!
//! The policy's `targetPerReplica` is what a gateway pod should carry; it is measured where the
//! gateway lives, on ECS. An ECI pod with the same spec can serve less (a slower or shared
//! vCPU, a bandwidth cap by spec, cold caches), and a fleet that overflows onto ECI counted at
//! the ECS figure is short exactly when it matters. The engine learns the ratio from what both
//! pools' pods show at the same instant: CPU seconds per request on each (the same template
//! asks each pod for the same CPU, so the pool that spends more CPU per request serves fewer
//! requests per pod). The policy can state the ratio instead (`eci.relativeCapacity`).

use serde::{Deserialize, Serialize};

use crate::model::{GatewayPod, Pool};

/// One pool's ready gateway pods that gave both a request rate and a CPU reading, summed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub pods: i32,
    /// Requests per second.
    pub rps: f64,
    /// CPU cores.
    pub cpu: f64,
}

impl Usage {
    /// CPU seconds per request, when the pods carry enough load for it to mean something: an
    /// idle Envoy's own CPU would otherwise pass for the cost of a request.
    fn cost(&self, target: f64) -> Option<f64> {
        let usable = self.pods > 0
            && self.rps.is_finite()
            && self.cpu.is_finite()
            && self.cpu > 0.0
            && self.rps / f64::from(self.pods) >= MIN_LOAD_SHARE * target;
        Some(self.cpu / self.rps).filter(|c| usable && c.is_finite() && *c > 0.0)
    }
}

/// What each pool's pods show at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PoolUsage {
    pub ecs: Usage,
    pub eci: Usage,
}

impl PoolUsage {
    /// Each pool's ready pods that gave both a request rate (`rps`, per pod) and a CPU reading
    /// (`cpu`, cores per pod), summed; `None` unless both pools have one. Pods in neither
    /// pool, not ready or being deleted are left out (a draining pod's CPU is not serving), and
    /// so are pods younger than [`MIN_POD_AGE_SECONDS`] at `now`.
    pub fn of(
        pods: &[GatewayPod],
        rps: &[(String, f64)],
        cpu: &[(String, f64)],
        now: f64,
    ) -> Option<Self> {
        let (rps, cpu) = (index(rps), index(cpu));
        let find = |v: &std::collections::HashMap<&str, f64>, name: &str| {
            v.get(name).copied().filter(|x| x.is_finite() && *x >= 0.0)
        };
        let mut out = PoolUsage::default();
        for p in pods
            .iter()
            .filter(|p| p.ready && !p.terminating && now - p.created_at >= MIN_POD_AGE_SECONDS)
        {
            let u = match p.pool {
                Pool::Ecs => &mut out.ecs,
                Pool::Eci => &mut out.eci,
                _ => continue,
            };
            if let (Some(r), Some(c)) = (find(&rps, &p.name), find(&cpu, &p.name)) {
                u.pods += 1;
                u.rps += r;
                u.cpu += c;
            }
        }
        (out.ecs.pods > 0 && out.eci.pods > 0).then_some(out)
    }
}

fn index(v: &[(String, f64)]) -> std::collections::HashMap<&str, f64> {
    v.iter().map(|(n, x)| (n.as_str(), *x)).collect()
}

/// A pod's CPU counts only once it is this old: its series needs two scrapes (at Prometheus's
/// common 15 s) for `irate` to give a value, and a new Envoy's start-up and cold caches are not
/// its steady cost. (The query takes `irate`, the last two scrapes, not `rate(…[1m])`: over a
/// window a young series does not fill, `rate` reads low, since Prometheus extrapolates a
/// series that starts inside the window by half a scrape interval only, so a pod 10 s old would
/// read about a sixth of its CPU and a pool of new pods would look strong.)
pub const MIN_POD_AGE_SECONDS: f64 = 45.0;

/// A pool's pods count toward learning only while each carries at least this share of the
/// target.
pub const MIN_LOAD_SHARE: f64 = 0.2;

/// Readings (of both pools at once) before the learnt ratio is used.
pub const MIN_SAMPLES: u32 = 3;

/// A reading counts only this long after the last one that counted: decisions come every
/// couple of seconds in a surge, faster than Prometheus scrapes the CPU, and readings of the
/// same scrape are one reading, not several.
pub const READING_SECONDS: f64 = 10.0;

/// A learnt share this close to 1 is taken as 1: the pools are alike within what a reading
/// can tell, and an ECI share of 0.99 would still add a pod to every overflow.
pub const ALIKE: f64 = 0.05;

/// The learnt figures follow the pools over about this long (an exponential average's
/// half-life): long enough to ride out one noisy scrape, short enough to follow a change of
/// ECI specs within a peak.
pub const HALF_LIFE_SECONDS: f64 = 300.0;

/// The ratio is never taken below this: a reading that says an ECI pod serves a quarter of
/// an ECS pod is more likely a broken metric than a pool, and would quadruple the overflow.
pub const MIN_RELATIVE: f64 = 0.25;

/// What the engine learnt of the two pools; kept in the engine state across peaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CapacityMemory {
    /// CPU seconds per request on each pool, averaged.
    pub ecs: Option<f64>,
    pub eci: Option<f64>,
    /// Readings of both pools at once so far.
    pub samples: u32,
    /// When the last reading was taken.
    pub at: Option<f64>,
    /// The share learnt before this memory started (the ElasticGateway's status), used until
    /// this memory has learnt its own.
    #[serde(default)]
    pub seeded: Option<f64>,
}

impl CapacityMemory {
    /// Takes one reading at `now`; readings where either pool carries too little are skipped.
    pub fn learn(&mut self, usage: Option<PoolUsage>, target: f64, now: f64) {
        let Some(u) = usage else { return };
        let (Some(ecs), Some(eci)) = (u.ecs.cost(target), u.eci.cost(target)) else {
            return;
        };
        // The first readings are averaged alike, then each weighs by the time since the last.
        let w = match self.at {
            Some(at) if now - at >= READING_SECONDS => (1.0
                - 0.5f64.powf((now - at) / HALF_LIFE_SECONDS))
            .max(1.0 / f64::from(self.samples.saturating_add(1))),
            Some(_) => return,
            None => 1.0,
        };
        let mix = |old: Option<f64>, new: f64| Some(old.map_or(new, |o| o + w * (new - o)));
        self.ecs = mix(self.ecs, ecs);
        self.eci = mix(self.eci, eci);
        self.samples = self.samples.saturating_add(1);
        self.at = Some(now);
    }

    /// Starts a fresh memory from the share learnt before, if it is a usable one.
    pub fn seed(&mut self, learnt: Option<f64>) {
        if self.samples == 0 {
            self.seeded = learnt.filter(|r| r.is_finite() && (MIN_RELATIVE..=1.0).contains(r));
        }
    }

    /// The learnt ratio, once there are enough readings, to the nearest hundredth (a finer
    /// figure is noise); within [`ALIKE`] of 1, 1. Before that, the one learnt before, if any.
    pub fn relative(&self) -> Option<f64> {
        let own = self.ecs.zip(self.eci).map(|(ecs, eci)| ecs / eci);
        let ratio = match own {
            Some(r) if self.samples >= MIN_SAMPLES && r.is_finite() => r,
            _ => return self.seeded,
        };
        let r = (ratio.clamp(MIN_RELATIVE, 1.0) * 100.0).round() / 100.0;
        Some(if r >= 1.0 - ALIKE { 1.0 } else { r })
    }
}

/// Where the ECI pods' figure comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Source {
    /// `eci.relativeCapacity`.
    Policy,
    /// Learnt from both pools' CPU per request.
    Learnt,
    /// Nothing to go by yet: an ECI pod counts as an ECS pod.
    Default,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Policy => "policy",
            Source::Learnt => "learnt",
            Source::Default => "default",
        }
    }
}

/// What an ECI pod serves as a share of an ECS pod, and where that comes from.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Relative {
    pub eci: f64,
    pub source: Source,
}

impl Default for Relative {
    fn default() -> Self {
        Self {
            eci: 1.0,
            source: Source::Default,
        }
    }
}

/// The policy's figure if it states one, else the learnt one, else 1.
pub fn relative(stated: Option<f64>, memory: &CapacityMemory) -> Relative {
    if let Some(eci) = stated.filter(|r| r.is_finite() && *r > 0.0) {
        return Relative {
            eci: eci.min(1.0),
            source: Source::Policy,
        };
    }
    memory
        .relative()
        .map_or_else(Relative::default, |eci| Relative {
            eci,
            source: Source::Learnt,
        })
}

/// A fleet as the pools hold it: ECS takes the first `ecs_capacity` pods, ECI the rest, each
/// ECI pod serving `relative` of an ECS pod.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Mix {
    pub relative: f64,
    pub ecs_capacity: i32,
}

impl Mix {
    /// Replicas that serve what `pods` ECS pods serve.
    pub fn replicas(&self, pods: i32) -> i32 {
        let ecs = self.ecs_capacity.max(0);
        if self.relative >= 1.0 || pods <= ecs {
            return pods;
        }
        // Less a hair: a share given to the hundredth must not round 1.0 / 0.5 up to 3.
        let eci = (f64::from(pods - ecs) / self.relative - 1e-9).ceil();
        ecs.saturating_add(eci.min(f64::from(i32::MAX)) as i32)
    }

    /// What `replicas` serve, in ECS pods.
    pub fn serves(&self, replicas: i32) -> f64 {
        let ecs = replicas.min(self.ecs_capacity.max(0)).max(0);
        f64::from(ecs) + f64::from(replicas - ecs).max(0.0) * self.relative.min(1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(ecs: (i32, f64, f64), eci: (i32, f64, f64)) -> Option<PoolUsage> {
        let u = |(pods, rps, cpu)| Usage { pods, rps, cpu };
        Some(PoolUsage {
            ecs: u(ecs),
            eci: u(eci),
        })
    }

    #[test]
    fn the_ratio_is_learnt_from_both_pools_at_once_and_used_after_enough_readings() {
        let mut m = CapacityMemory::default();
        for i in 0..MIN_SAMPLES {
            assert_eq!(m.relative(), None, "after {i} readings");
            // 4 ECS pods at 500 rps each for 1 core each; 2 ECI pods at 500 rps for 1.6 cores.
            m.learn(
                usage((4, 2000.0, 4.0), (2, 1000.0, 3.2)),
                700.0,
                f64::from(i) * 15.0,
            );
        }
        let r = m.relative().expect("learnt");
        assert_eq!(r, 0.63);
        assert_eq!(relative(None, &m).source, Source::Learnt);
        // The policy's figure wins.
        assert_eq!(relative(Some(0.8), &m).eci, 0.8);
        assert_eq!(relative(Some(0.8), &m).source, Source::Policy);
    }

    #[test]
    fn idle_pods_and_bad_numbers_teach_nothing() {
        let mut m = CapacityMemory::default();
        for i in 0..10 {
            let t = f64::from(i) * 15.0;
            // ECI pods nearly idle: their Envoys' own CPU is not the cost of a request.
            m.learn(usage((4, 2000.0, 4.0), (2, 20.0, 0.4)), 700.0, t);
            m.learn(usage((4, 2000.0, 4.0), (0, 0.0, 0.0)), 700.0, t + 1.0);
            m.learn(
                usage((4, 2000.0, f64::NAN), (2, 1000.0, 2.0)),
                700.0,
                t + 2.0,
            );
            m.learn(
                usage((4, 2000.0, 4.0), (2, f64::INFINITY, 2.0)),
                700.0,
                t + 3.0,
            );
            m.learn(None, 700.0, t + 4.0);
        }
        assert_eq!(m, CapacityMemory::default());
        assert_eq!(relative(None, &m), Relative::default());
    }

    #[test]
    fn a_broken_reading_cannot_shrink_eci_pods_to_nothing_nor_make_them_stronger() {
        let mut m = CapacityMemory::default();
        for i in 0..10 {
            m.learn(
                usage((4, 2000.0, 4.0), (2, 1000.0, 200.0)),
                700.0,
                f64::from(i) * 15.0,
            );
        }
        assert_eq!(m.relative(), Some(MIN_RELATIVE));
        let mut m = CapacityMemory::default();
        for i in 0..10 {
            m.learn(
                usage((4, 2000.0, 4.0), (2, 1000.0, 0.5)),
                700.0,
                f64::from(i) * 15.0,
            );
        }
        assert_eq!(m.relative(), Some(1.0));
    }

    #[test]
    fn the_average_follows_a_change_within_a_few_half_lives() {
        let mut m = CapacityMemory::default();
        let mut t = 0.0;
        for _ in 0..20 {
            m.learn(usage((4, 2000.0, 4.0), (2, 1000.0, 2.0)), 700.0, t);
            t += 15.0;
        }
        assert_eq!(m.relative(), Some(1.0));
        // The ECI pods get slower: half as fast.
        for _ in 0..(4.0 * HALF_LIFE_SECONDS / 15.0) as i32 {
            m.learn(usage((4, 2000.0, 4.0), (2, 1000.0, 4.0)), 700.0, t);
            t += 15.0;
        }
        let r = m.relative().expect("learnt");
        assert!((r - 0.5).abs() < 0.05, "{r}");
    }

    #[test]
    fn each_pools_ready_pods_with_both_readings_are_summed() {
        let pod = |name: &str, pool: Pool, ready: bool| GatewayPod {
            name: name.into(),
            node: Some("n".into()),
            pool,
            ready,
            pending: false,
            terminating: false,
            requests: crate::model::Resources::default(),
            deletion_cost: None,
            created_at: 0.0,
            ready_since: None,
            drain: None,
        };
        let pods = [
            pod("a", Pool::Ecs, true),
            pod("b", Pool::Ecs, true),
            pod("c", Pool::Eci, true),
            pod("d", Pool::Eci, false),
            pod("e", Pool::Other, true),
        ];
        let v = |xs: &[(&str, f64)]| -> Vec<(String, f64)> {
            xs.iter().map(|(n, x)| ((*n).to_string(), *x)).collect()
        };
        let rps = v(&[
            ("a", 100.0),
            ("b", 200.0),
            ("c", 150.0),
            ("d", 9.0),
            ("e", 9.0),
        ]);
        // b has no CPU reading; d is not ready; e is in neither pool.
        let cpu = v(&[("a", 0.2), ("c", 0.5), ("d", 9.0), ("e", 9.0)]);
        let now = MIN_POD_AGE_SECONDS;
        let u = PoolUsage::of(&pods, &rps, &cpu, now).expect("both pools");
        assert_eq!(
            u.ecs,
            Usage {
                pods: 1,
                rps: 100.0,
                cpu: 0.2
            }
        );
        assert_eq!(
            u.eci,
            Usage {
                pods: 1,
                rps: 150.0,
                cpu: 0.5
            }
        );
        // No ECI pod with both readings: nothing to compare.
        assert_eq!(PoolUsage::of(&pods[..2], &rps, &cpu, now), None);
        let nan = v(&[("a", 0.2), ("c", f64::NAN)]);
        assert_eq!(PoolUsage::of(&pods, &rps, &nan, now), None);
        // The ECI pod is too young for its CPU rate to cover the window.
        let mut young = pods.clone();
        young[2].created_at = 1.0;
        assert_eq!(PoolUsage::of(&young, &rps, &cpu, now), None);
    }

    #[test]
    fn ecs_holds_the_first_pods_and_eci_pods_count_at_their_share() {
        let mix = Mix {
            relative: 0.5,
            ecs_capacity: 10,
        };
        assert_eq!(mix.replicas(8), 8);
        assert_eq!(mix.replicas(10), 10);
        assert_eq!(mix.replicas(11), 12);
        assert_eq!(mix.replicas(15), 20);
        assert_eq!(mix.serves(20), 15.0);
        assert_eq!(mix.serves(7), 7.0);
        for n in 0..40 {
            assert!(mix.serves(mix.replicas(n)) >= f64::from(n), "{n}");
        }
        let same = Mix {
            relative: 1.0,
            ecs_capacity: 3,
        };
        assert_eq!(same.replicas(30), 30);
        assert_eq!(same.serves(30), 30.0);
    }

    /// 4 ECS pods at 500 rps for 1 core each; 2 ECI pods at 500 rps for `eci_cpu` cores in all.
    fn u(eci_cpu: f64) -> Option<PoolUsage> {
        usage((4, 2000.0, 4.0), (2, 1000.0, eci_cpu))
    }

    #[test]
    fn readings_of_one_scrape_count_once_and_the_first_ones_are_averaged_alike() {
        let mut m = CapacityMemory::default();
        // Decisions every 2 s: five readings within one scrape interval are one.
        for i in 0..5 {
            m.learn(u(4.0), 700.0, f64::from(i) * 2.0);
        }
        assert_eq!(m.samples, 1);
        assert_eq!(m.relative(), None);
        // Two more, READING_SECONDS apart, averaged alike with the first: ECI CPU per request
        // 2, 1 and 1 times ECS's, a mean of 4/3: a share of 0.75.
        m.learn(u(2.0), 700.0, 20.0);
        m.learn(u(2.0), 700.0, 30.0);
        assert_eq!(m.samples, 3);
        assert_eq!(m.relative(), Some(0.75));
        // An infinite cost (a zero rate sneaking through) teaches nothing.
        m.learn(u(f64::INFINITY), 700.0, 45.0);
        assert_eq!(m.samples, 3);
    }

    #[test]
    fn pools_alike_within_a_readings_reach_count_as_equal() {
        let mut m = CapacityMemory::default();
        for i in 0..10 {
            m.learn(u(2.06), 700.0, f64::from(i) * 15.0);
        }
        assert_eq!(m.relative(), Some(1.0));
    }

    #[test]
    fn a_fresh_memory_starts_from_the_share_learnt_before_until_it_learns_its_own() {
        let mut m = CapacityMemory::default();
        m.seed(Some(0.6));
        assert_eq!(m.relative(), Some(0.6));
        assert_eq!(relative(None, &m).source, Source::Learnt);
        // Its own readings take over once there are enough: equal pools.
        let equal = usage((4, 2000.0, 4.0), (2, 1000.0, 2.0));
        for i in 0..MIN_SAMPLES {
            assert_eq!(m.relative(), Some(0.6));
            m.learn(equal, 700.0, f64::from(i) * 15.0);
        }
        assert_eq!(m.relative(), Some(1.0));
        // A memory that has readings is not reseeded; a garbage status is ignored.
        m.seed(Some(0.3));
        assert_eq!(m.relative(), Some(1.0));
        for bad in [f64::NAN, 5.0, 0.0, -1.0] {
            let mut m = CapacityMemory::default();
            m.seed(Some(bad));
            assert_eq!(m.relative(), None, "{bad}");
        }
    }
}
