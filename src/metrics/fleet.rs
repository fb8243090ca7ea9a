//! The fleet: where the gateway's pods run, the counts decided and allowed, the pools' room and
//! the affinity weights.

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::{FGauge, GatewayLabels, HistFamily, PhaseLabels, PodLabels, PoolLabels};
use crate::engine::{Decision, Phase};
use crate::model::{GatewayKey, GatewayPod, Pool};
use crate::policy::ElasticGatewaySpec;

/// The pools a pod is counted in, and its states.
const POOLS: [Pool; 4] = [Pool::Ecs, Pool::Eci, Pool::Pending, Pool::Other];
const STATES: [&str; 3] = ["ready", "starting", "terminating"];

pub struct FleetMetrics {
    pods: Family<PodLabels, Gauge>,
    phase: Family<PhaseLabels, Gauge>,
    desired: Family<GatewayLabels, Gauge>,
    current: Family<GatewayLabels, Gauge>,
    max: Family<GatewayLabels, Gauge>,
    min: Family<GatewayLabels, Gauge>,
    ecs_free: Family<GatewayLabels, Gauge>,
    ecs_capacity: Family<GatewayLabels, Gauge>,
    eci_cap: Family<GatewayLabels, Gauge>,
    weight: Family<PoolLabels, Gauge>,
    claimed_elsewhere: Family<GatewayLabels, Gauge>,
    pod_share: Family<PoolLabels, FGauge>,
    eci_share_learnt: Family<GatewayLabels, Gauge>,
    ready_serves: Family<GatewayLabels, FGauge>,
    starts: HistFamily<PoolLabels>,
    start_planned: Family<PoolLabels, FGauge>,
}

/// Creation to Ready: seconds for an ECS pod whose node has the image, a minute or more for an
/// ECI pod that pulls it.
fn start_histogram() -> Histogram {
    Histogram::new([
        2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0,
    ])
}

impl Default for FleetMetrics {
    fn default() -> Self {
        Self {
            pods: Family::default(),
            phase: Family::default(),
            desired: Family::default(),
            current: Family::default(),
            max: Family::default(),
            min: Family::default(),
            ecs_free: Family::default(),
            ecs_capacity: Family::default(),
            eci_cap: Family::default(),
            weight: Family::default(),
            claimed_elsewhere: Family::default(),
            pod_share: Family::default(),
            eci_share_learnt: Family::default(),
            ready_serves: Family::default(),
            starts: Family::new_with_constructor(start_histogram),
            start_planned: Family::default(),
        }
    }
}

impl FleetMetrics {
    pub fn register(r: &mut Registry) -> Self {
        let m = Self::default();
        r.register(
            "gateway_pods",
            "Gateway pods by pool (ecs: dedicated ECS nodes, eci: virtual-kubelet nodes, pending: not yet scheduled, other: neither pool) and state (ready, starting, terminating)",
            m.pods.clone(),
        );
        r.register(
            "phase",
            "1 for the gateway's current phase: Normal (all on ECS), Overflow (the peak runs on ECI), Draining (ECI pods wait to go), Holding (load data missing), Paused",
            m.phase.clone(),
        );
        r.register(
            "replicas_desired",
            "Replica count spillway decided for the gateway",
            m.desired.clone(),
        );
        r.register(
            "replicas_current",
            "Replica count of the gateway workload (spec.replicas) when spillway decided",
            m.current.clone(),
        );
        r.register("replicas_max", "The policy's maxReplicas", m.max.clone());
        r.register("replicas_min", "The policy's minReplicas", m.min.clone());
        r.register(
            "ecs_free_pods",
            "More gateway pods the dedicated ECS nodes can take now, after headroom",
            m.ecs_free.clone(),
        );
        r.register(
            "ecs_capacity_pods",
            "Gateway pods the ECS pool can hold: those running there plus the free slots",
            m.ecs_capacity.clone(),
        );
        r.register(
            "eci_cap_pods",
            "Most gateway pods allowed on ECI (from the pod and cost caps); absent when uncapped",
            m.eci_cap.clone(),
        );
        r.register(
            "affinity_weight",
            "Preferred node-affinity weight in the gateway's pod template, per pool",
            m.weight.clone(),
        );
        r.register(
            "ecs_claimed_elsewhere_pods",
            "ECS slots on the gateway's nodes that other gateways claimed for pods not placed yet (first come, first served); not free for this one",
            m.claimed_elsewhere.clone(),
        );
        r.register(
            "pod_capacity_share",
            "What one gateway pod of the pool serves as a share of an ECS pod, as spillway counts it when it sizes the overflow (ecs: 1; eci: spec.eci.relativeCapacity, else learnt from each pool's CPU per request, else 1)",
            m.pod_share.clone(),
        );
        r.register(
            "eci_capacity_learnt",
            "1 when the ECI pods' share of an ECS pod comes from what both pools' pods showed (CPU per request), 0 when it comes from the policy or is the default 1",
            m.eci_share_learnt.clone(),
        );
        r.register(
            "ready_capacity_pods",
            "What the gateway's ready pods serve, in warm ECS pods: an ECI pod at its share, a pod on a slow start's ramp (spec.warmup) at its weight; below the ready count while new pods ramp",
            m.ready_serves.clone(),
        );
        r.register(
            "pod_start_seconds",
            "Creation to Ready of each gateway pod spillway saw start, per pool (pods created while it watched; each once)",
            m.starts.clone(),
        );
        r.register(
            "pod_start_expected_seconds",
            "How long a gateway pod of the pool is expected to take from creation to Ready: the 95th percentile of its last 20 starts once 3 are seen, else the default (ecs 15; eci the policy's eci.startSeconds, 40 unless set). Reported; not yet used to decide",
            m.start_planned.clone(),
        );
        m
    }

    /// The slots other gateways claimed on this one's nodes, at its last decision.
    pub fn claimed_elsewhere(&self, key: &GatewayKey, slots: i32) {
        self.claimed_elsewhere
            .get_or_create(&GatewayLabels::from(key))
            .set(i64::from(slots));
    }

    /// The fleet as observed at a decision, and what was decided for it.
    pub fn record(
        &self,
        key: &GatewayKey,
        policy: &ElasticGatewaySpec,
        pods: &[GatewayPod],
        d: &Decision,
    ) {
        let gw = GatewayLabels::from(key);
        for pool in POOLS {
            for state in STATES {
                let n = pods
                    .iter()
                    .filter(|p| p.pool == pool && pod_state(p) == state)
                    .count();
                self.pods
                    .get_or_create(&PodLabels::new(key, pool, state))
                    .set(n as i64);
            }
        }
        for phase in Phase::ALL {
            self.phase
                .get_or_create(&PhaseLabels::new(key, phase))
                .set(i64::from(d.phase == phase));
        }
        self.desired
            .get_or_create(&gw)
            .set(i64::from(d.replicas.desired));
        self.current
            .get_or_create(&gw)
            .set(i64::from(d.replicas.current));
        self.min
            .get_or_create(&gw)
            .set(i64::from(policy.min_replicas));
        self.max
            .get_or_create(&gw)
            .set(i64::from(policy.max_replicas));
        self.ecs_free
            .get_or_create(&gw)
            .set(i64::from(d.survey.ecs_room));
        self.ecs_capacity
            .get_or_create(&gw)
            .set(i64::from(d.survey.ecs_capacity));
        match d.replicas.eci_cap {
            Some(cap) => {
                self.eci_cap.get_or_create(&gw).set(i64::from(cap));
            }
            None => {
                self.eci_cap.remove(&gw);
            }
        }
        let w = d.weights.target;
        for (pool, v) in [(Pool::Ecs, w.ecs), (Pool::Eci, w.eci)] {
            self.weight
                .get_or_create(&PoolLabels::new(key, pool))
                .set(i64::from(v));
        }
        for (pool, share) in [(Pool::Ecs, 1.0), (Pool::Eci, d.relative.eci)] {
            self.pod_share
                .get_or_create(&PoolLabels::new(key, pool))
                .set(share);
        }
        let learnt = d.relative.source == crate::engine::capacity::Source::Learnt;
        self.eci_share_learnt
            .get_or_create(&gw)
            .set(i64::from(learnt));
        self.ready_serves.get_or_create(&gw).set(d.ready_serves);
        for (pool, seconds) in &d.starts.new {
            self.starts
                .get_or_create(&PoolLabels::new(key, *pool))
                .observe(*seconds);
        }
        for (pool, seconds) in [(Pool::Ecs, d.starts.ecs), (Pool::Eci, d.starts.eci)] {
            self.start_planned
                .get_or_create(&PoolLabels::new(key, pool))
                .set(seconds);
        }
    }

    pub fn forget(&self, key: &GatewayKey) {
        let gw = GatewayLabels::from(key);
        for pool in POOLS {
            for state in STATES {
                self.pods.remove(&PodLabels::new(key, pool, state));
            }
            self.weight.remove(&PoolLabels::new(key, pool));
            self.pod_share.remove(&PoolLabels::new(key, pool));
            self.starts.remove(&PoolLabels::new(key, pool));
            self.start_planned.remove(&PoolLabels::new(key, pool));
        }
        for phase in Phase::ALL {
            self.phase.remove(&PhaseLabels::new(key, phase));
        }
        for f in [
            &self.desired,
            &self.current,
            &self.min,
            &self.max,
            &self.ecs_free,
            &self.ecs_capacity,
            &self.eci_cap,
            &self.claimed_elsewhere,
            &self.eci_share_learnt,
        ] {
            f.remove(&gw);
        }
        self.ready_serves.remove(&gw);
    }
}

fn pod_state(p: &GatewayPod) -> &'static str {
    if p.terminating {
        "terminating"
    } else if p.ready {
        "ready"
    } else {
        "starting"
    }
}
