//! The load: each policy metric as read from Prometheus and its target, whether it is missing,
//! and the fast path's reading of the pods' own counters.

use std::collections::HashMap;
use std::sync::Mutex;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{FGauge, GatewayLabels, KindLabels, MetricLabels, lock};
use crate::engine::Decision;
use crate::model::{FastSample, GatewayKey};

#[derive(Default)]
pub struct LoadMetrics {
    load: Family<MetricLabels, FGauge>,
    target: Family<MetricLabels, FGauge>,
    missing: Family<MetricLabels, Gauge>,
    fast_rps: Family<GatewayLabels, FGauge>,
    fast_pods_read: Family<GatewayLabels, Gauge>,
    fast_failures: Family<KindLabels, Counter>,
    /// The policy metrics exported per gateway: a metric renamed or removed from the policy
    /// loses its series (or `SpillwayBlind` would fire on a name nobody queries any more).
    names: Mutex<HashMap<GatewayKey, Vec<String>>>,
}

impl LoadMetrics {
    pub fn register(r: &mut Registry) -> Self {
        let m = Self::default();
        r.register(
            "load",
            "Gateway load per policy metric, as read from Prometheus (the query's unit)",
            m.load.clone(),
        );
        r.register(
            "load_target_per_replica",
            "The load one replica should carry, per policy metric",
            m.target.clone(),
        );
        r.register(
            "load_missing",
            "1 when a policy metric returned no usable value (error, timeout, empty, NaN, stale); spillway then never scales down",
            m.missing.clone(),
        );
        r.register(
            "fast_path_requests_per_second",
            "The gateway's request rate read from its ready pods' own counters (the fast path, between Prometheus scrapes), scaled from the pods read to the ready fleet; absent when the last read gave none",
            m.fast_rps.clone(),
        );
        r.register(
            "fast_path_pods_read",
            "Gateway pods whose counters gave a rate at the last fast-path read (0: none; the fast path then adds nothing)",
            m.fast_pods_read.clone(),
        );
        r.register(
            "fast_path_failures",
            "Gateway pods whose counters the fast path could not use, by kind (unreachable, timeout, http_status, garbage, reset; implausible: a rate far above every peer's, counted at the bound); each is missing from that read, never a reason to scale down",
            m.fast_failures.clone(),
        );
        m
    }

    /// The readings of a decision and the fast path's sample it used.
    pub fn record(&self, key: &GatewayKey, d: &Decision, fast: Option<FastSample>) {
        let gw = GatewayLabels::from(key);
        match fast {
            Some(f) => {
                self.fast_rps.get_or_create(&gw).set(f.rps);
                self.fast_pods_read
                    .get_or_create(&gw)
                    .set(i64::from(f.pods_read));
                // Every kind exported from the first reading on, at 0 until it happens.
                for kind in crate::fastpath::FAILURE_KINDS {
                    let _ = self
                        .fast_failures
                        .get_or_create(&KindLabels::new(key, kind));
                }
            }
            None => {
                self.fast_rps.remove(&gw);
                self.fast_pods_read.get_or_create(&gw).set(0);
            }
        }
        let now: Vec<String> = d.readings.iter().map(|r| r.metric.clone()).collect();
        let before = lock(&self.names).insert(key.clone(), now.clone());
        for gone in before.iter().flatten().filter(|m| !now.contains(m)) {
            self.remove(key, gone);
        }
        for r in &d.readings {
            let l = MetricLabels::new(key, &r.metric);
            // A missing reading keeps the last value; `load_missing` says it is stale.
            if let Some(v) = r.value {
                self.load.get_or_create(&l).set(v);
            }
            self.target.get_or_create(&l).set(r.target_per_replica);
            self.missing
                .get_or_create(&l)
                .set(i64::from(r.missing.is_some()));
        }
    }

    /// One pod the fast path could not read, by [`crate::fastpath::PodError::kind`].
    pub fn fast_path_failure(&self, key: &GatewayKey, kind: &str) {
        self.fast_failures
            .get_or_create(&KindLabels::new(key, kind))
            .inc();
    }

    fn remove(&self, key: &GatewayKey, metric: &str) {
        let l = MetricLabels::new(key, metric);
        self.load.remove(&l);
        self.target.remove(&l);
        self.missing.remove(&l);
    }

    pub fn forget(&self, key: &GatewayKey) {
        let names = lock(&self.names).remove(key).unwrap_or_default();
        for metric in &names {
            self.remove(key, metric);
        }
        let gw = GatewayLabels::from(key);
        self.fast_rps.remove(&gw);
        self.fast_pods_read.remove(&gw);
        for kind in crate::fastpath::FAILURE_KINDS {
            self.fast_failures.remove(&KindLabels::new(key, kind));
        }
    }
}
