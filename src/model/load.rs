//! What the load sources read: one sample per policy metric (Prometheus, or the drill's model of
//! it) and the fast path's reading of the pods' own counters. Plain data, shared by the sources
//! that produce it and the engine that reads it.

use serde::{Deserialize, Serialize};

/// One metric's reading.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum LoadSample {
    /// The gateway's total load (an External metric with an `AverageValue` target).
    Total(f64),
    /// One value per pod (a Pods metric): the HPA's missing- and unready-pod rules apply.
    PerPod(Vec<(String, f64)>),
    /// No usable value, and why (empty result, NaN, stale, query error, timeout).
    Missing(String),
}

impl LoadSample {
    /// The total, where there is one.
    pub fn total(&self) -> Option<f64> {
        match self {
            LoadSample::Total(v) => Some(*v),
            LoadSample::PerPod(v) => Some(v.iter().map(|(_, x)| x).sum()),
            LoadSample::Missing(_) => None,
        }
    }
}

/// The gateway's request rate read from the pods' own counters (Istio's
/// `:15090/stats/prometheus`) over the last second or two, scaled from the pods read to the
/// ready fleet.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct FastSample {
    pub rps: f64,
    /// Pods whose counters made the reading.
    pub pods_read: i32,
}
