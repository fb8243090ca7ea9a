//! The drills marked on each gateway (`spillway drill mark`): active or not, and their windows,
//! for the dashboard's annotations and `spillway drill score --name`.

use std::collections::HashMap;
use std::sync::Mutex;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use super::{DrillLabels, FGauge, lock};
use crate::model::GatewayKey;
use crate::policy::marks::Mark;

#[derive(Default)]
pub struct DrillMetrics {
    active: Family<DrillLabels, Gauge>,
    start: Family<DrillLabels, FGauge>,
    end: Family<DrillLabels, FGauge>,
    /// The drills exported last time, per gateway.
    names: Mutex<HashMap<GatewayKey, Vec<String>>>,
}

impl DrillMetrics {
    pub fn register(r: &mut Registry) -> Self {
        let m = Self::default();
        r.register(
            "drill_active",
            "1 while a drill marked on the gateway (`spillway drill mark`, annotation drill.spillway.io/NAME) is running, else 0",
            m.active.clone(),
        );
        r.register_with_unit(
            "drill_start_timestamp",
            "Unix time at which a marked drill starts",
            Unit::Seconds,
            m.start.clone(),
        );
        r.register_with_unit(
            "drill_end_timestamp",
            "Unix time at which a marked drill ends (absent while it is open)",
            Unit::Seconds,
            m.end.clone(),
        );
        m
    }

    /// Exports the drills marked on the gateway at `now`; marks gone since the last call go.
    pub fn record(&self, key: &GatewayKey, marks: &[Mark], now: f64) {
        let now_names: Vec<String> = marks.iter().map(|k| k.name.clone()).collect();
        let before = lock(&self.names).insert(key.clone(), now_names.clone());
        for old in before.iter().flatten().filter(|o| !now_names.contains(o)) {
            self.remove(key, old);
        }
        for k in marks {
            let l = DrillLabels::new(key, &k.name);
            self.active.get_or_create(&l).set(i64::from(k.active(now)));
            self.start.get_or_create(&l).set(k.start);
            match k.end {
                Some(e) => {
                    self.end.get_or_create(&l).set(e);
                }
                None => {
                    self.end.remove(&l);
                }
            }
        }
    }

    fn remove(&self, key: &GatewayKey, drill: &str) {
        let l = DrillLabels::new(key, drill);
        self.active.remove(&l);
        self.start.remove(&l);
        self.end.remove(&l);
    }

    pub fn forget(&self, key: &GatewayKey) {
        let names = lock(&self.names).remove(key).unwrap_or_default();
        for drill in &names {
            self.remove(key, drill);
        }
    }
}
