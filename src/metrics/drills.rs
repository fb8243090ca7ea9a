//! The drills marked on each gateway (`spillway drill mark`): active or not, and their windows,
//! for the dashboard's annotations and `spillway drill score --name`.

use std::collections::HashMap;
use std::sync::Mutex;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use super::{DrillLabels, FGauge, GatewayLabels, lock};
use crate::model::GatewayKey;
use crate::policy::marks::Mark;

/// Most marked drills exported per gateway (three series each): the running ones, then the
/// latest. Annotations are anyone's to write; 4,000 of them made 8,005 series.
pub const MAX_MARKS: usize = 16;

#[derive(Default)]
pub struct DrillMetrics {
    active: Family<DrillLabels, Gauge>,
    /// Marks on the gateway beyond [`MAX_MARKS`], not exported.
    ignored: Family<GatewayLabels, Gauge>,
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
        r.register(
            "drill_marks_ignored",
            "Drills marked on the gateway beyond the 16 exported (the running ones, then the latest): too many drill.spillway.io annotations",
            m.ignored.clone(),
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

    /// Exports the drills marked on the gateway at `now` (at most [`MAX_MARKS`]: the running
    /// ones, then the latest); marks gone since the last call go.
    pub fn record(&self, key: &GatewayKey, marks: &[Mark], now: f64) {
        let mut marks: Vec<&Mark> = marks.iter().collect();
        marks.sort_by(|a, b| {
            b.active(now)
                .cmp(&a.active(now))
                .then(b.start.total_cmp(&a.start))
        });
        let ignored = marks.len().saturating_sub(MAX_MARKS);
        marks.truncate(MAX_MARKS);
        let gw = GatewayLabels::from(key);
        if ignored > 0 {
            self.ignored
                .get_or_create(&gw)
                .set(i64::try_from(ignored).unwrap_or(i64::MAX));
        } else {
            self.ignored.remove(&gw);
        }
        let now_names: Vec<String> = marks.iter().map(|k| k.name.clone()).collect();
        let before = lock(&self.names).insert(key.clone(), now_names.clone());
        for old in before.iter().flatten().filter(|o| !now_names.contains(o)) {
            self.remove(key, old);
        }
        for k in &marks {
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
        self.ignored.remove(&GatewayLabels::from(key));
        let names = lock(&self.names).remove(key).unwrap_or_default();
        for drill in &names {
            self.remove(key, drill);
        }
    }
}
