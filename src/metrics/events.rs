//! Planned events (issue 28): per event, the replicas its plan needs on each pool, when each
//! pool is raised for it, and whether it is at risk (`SpillwayPlannedEventAtRisk` fires on it).

use std::collections::HashMap;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use super::{FGauge, lock};
use crate::engine::planned::Plan;
use crate::model::GatewayKey;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    namespace: String,
    name: String,
    event: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventPoolLabels {
    namespace: String,
    name: String,
    event: String,
    pool: String,
}

#[derive(Default)]
pub struct EventMetrics {
    at_risk: Family<EventLabels, Gauge>,
    replicas: Family<EventPoolLabels, Gauge>,
    start: Family<EventPoolLabels, FGauge>,
    /// The events exported last time, per gateway.
    names: Mutex<HashMap<GatewayKey, Vec<String>>>,
}

impl EventMetrics {
    pub fn register(r: &mut Registry) -> Self {
        let m = Self::default();
        r.register(
            "planned_event_at_risk",
            "1 while a planned event's plan cannot be met (past maxReplicas, past the ECI cap, or planned after its pods had to start), else 0",
            m.at_risk.clone(),
        );
        r.register(
            "planned_event_replicas",
            "Replicas a planned event's demand needs on each pool (ECS up to its room, the rest on ECI)",
            m.replicas.clone(),
        );
        r.register_with_unit(
            "planned_event_pool_start_timestamp",
            "Unix time at which each pool is raised for a planned event: its rise less the pool's start latency",
            Unit::Seconds,
            m.start.clone(),
        );
        m
    }

    /// Exports the gateway's plans; events gone since the last call go.
    pub fn record(&self, key: &GatewayKey, plans: &[Plan]) {
        let names: Vec<String> = plans.iter().map(|p| p.event.clone()).collect();
        let before = lock(&self.names).insert(key.clone(), names.clone());
        for old in before.iter().flatten().filter(|o| !names.contains(o)) {
            self.remove(key, old);
        }
        for p in plans {
            self.at_risk
                .get_or_create(&labels(key, &p.event))
                .set(i64::from(p.risk.is_some()));
            for (pool, n, from) in [("ecs", p.ecs, p.ecs_from), ("eci", p.eci, p.eci_from)] {
                let l = pool_labels(key, &p.event, pool);
                self.replicas.get_or_create(&l).set(i64::from(n));
                match from {
                    Some(t) => {
                        self.start.get_or_create(&l).set(t);
                    }
                    None => {
                        self.start.remove(&l);
                    }
                }
            }
        }
    }

    fn remove(&self, key: &GatewayKey, event: &str) {
        self.at_risk.remove(&labels(key, event));
        for pool in ["ecs", "eci"] {
            let l = pool_labels(key, event, pool);
            self.replicas.remove(&l);
            self.start.remove(&l);
        }
    }

    pub fn forget(&self, key: &GatewayKey) {
        let names = lock(&self.names).remove(key).unwrap_or_default();
        for event in &names {
            self.remove(key, event);
        }
    }
}

fn labels(k: &GatewayKey, event: &str) -> EventLabels {
    EventLabels {
        namespace: k.namespace.clone(),
        name: k.name.clone(),
        event: event.into(),
    }
}

fn pool_labels(k: &GatewayKey, event: &str, pool: &str) -> EventPoolLabels {
    EventPoolLabels {
        namespace: k.namespace.clone(),
        name: k.name.clone(),
        event: event.into(),
        pool: pool.into(),
    }
}
