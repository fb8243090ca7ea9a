//! A load recorded by Prometheus: range queries in chunks, checked, on an even grid.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Error, Window};
use crate::clock::rfc3339;
use crate::prom::{Prometheus, RangeSeries};
use crate::sim::Scenario;
use crate::sim::load::{Component, LoadProfile, Surge};

/// Points per range query: well under Prometheus's 11,000 per series, and small enough that a
/// day at 15 s shows progress.
pub const CHUNK_POINTS: usize = 1000;

/// What was done to the data to make it whole; listed in the report beside the figures.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataQuality {
    pub query: String,
    pub window: String,
    /// Series added up (1 unless --sum).
    pub series: usize,
    /// The query returned a raw counter, turned into a per-second rate here.
    pub counter: bool,
    /// Counter resets found (and counted from zero), as RFC 3339 times.
    pub counter_resets: Vec<String>,
    /// Holes bridged by linear interpolation: `(from, to)` as RFC 3339 times.
    pub gaps_bridged: Vec<(String, String)>,
    /// Seconds of the window without data, bridged.
    pub gap_seconds: f64,
    /// Samples left out, by why ([`Dropped::describe`]); empty when every sample was used.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub samples_dropped: String,
}

/// The samples a series held that cannot be a rate to replay, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Dropped {
    not_a_number: usize,
    infinite: usize,
    negative: usize,
    outside: usize,
}

impl Dropped {
    /// Sorts one sample: its value, or the kind of garbage it is (counted).
    fn take(&mut self, t: f64, v: &str, w: &Window) -> Option<(f64, f64)> {
        let Ok(x) = v.parse::<f64>() else {
            self.not_a_number += 1;
            return None;
        };
        if x.is_nan() {
            self.not_a_number += 1;
        } else if x.is_infinite() {
            self.infinite += 1;
        } else if x < 0.0 {
            self.negative += 1;
        } else if !t.is_finite() || t < w.start - w.step || t > w.end + w.step {
            self.outside += 1;
        } else {
            return Some((t, x));
        }
        None
    }

    fn total(&self) -> usize {
        self.not_a_number + self.infinite + self.negative + self.outside
    }

    /// "3 not a number (NaN or text), 1 negative, …"; empty when nothing was dropped.
    fn describe(&self) -> String {
        [
            (self.not_a_number, "not a number (NaN or text)"),
            (self.infinite, "infinite"),
            (self.negative, "negative"),
            (
                self.outside,
                "timed outside the window (a clock ahead or behind?)",
            ),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect::<Vec<_>>()
        .join(", ")
    }
}

impl DataQuality {
    /// One line per thing done to the data; empty when the data was whole.
    pub fn notes(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.series > 1 {
            out.push(format!("{} series added up (--sum)", self.series));
        }
        if self.counter {
            out.push("the query returns a counter: replayed as its per-second rate".into());
        }
        if !self.counter_resets.is_empty() {
            out.push(format!(
                "{} counter reset(s), counted from zero: {}",
                self.counter_resets.len(),
                self.counter_resets.join(", ")
            ));
        }
        if !self.samples_dropped.is_empty() {
            out.push(format!("samples left out: {}", self.samples_dropped));
        }
        if !self.gaps_bridged.is_empty() {
            out.push(format!(
                "{} gap(s) bridged by interpolation, {:.0} s in all: {}",
                self.gaps_bridged.len(),
                self.gap_seconds,
                self.gaps_bridged
                    .iter()
                    .map(|(a, b)| format!("{a}..{b}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        out
    }
}

/// One value per step of the window, with no hole left.
#[derive(Clone, Debug, PartialEq)]
pub struct Recorded {
    pub window: Window,
    pub values: Vec<f64>,
    pub quality: DataQuality,
}

/// How to read the series.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReadOptions {
    /// Add several series up instead of refusing them.
    pub sum: bool,
    /// Longest hole bridged, in seconds.
    pub max_gap: f64,
}

impl Default for ReadOptions {
    fn default() -> Self {
        Self {
            sum: false,
            max_gap: 300.0,
        }
    }
}

/// Runs `query` over the window in chunks of [`CHUNK_POINTS`], calling `progress(done, total)`
/// after each; the series of all chunks are joined by their labels.
pub async fn fetch(
    prom: &Prometheus,
    query: &str,
    w: &Window,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<RangeSeries>, Error> {
    let slots = w.slots();
    let chunks = slots.div_ceil(CHUNK_POINTS);
    let mut joined: BTreeMap<BTreeMap<String, String>, Vec<(f64, String)>> = BTreeMap::new();
    for c in 0..chunks {
        let first = w.start + (c * CHUNK_POINTS) as f64 * w.step;
        let last = (first + (CHUNK_POINTS - 1) as f64 * w.step).min(w.end);
        let part = prom
            .query_range(query, first, last, w.step)
            .await
            .map_err(|e| Error::Prometheus(format!("range query `{query}`: {e}")))?;
        for s in part {
            joined.entry(s.metric).or_default().extend(s.values);
        }
        progress(c + 1, chunks);
    }
    Ok(joined
        .into_iter()
        .map(|(metric, values)| RangeSeries { metric, values })
        .collect())
}

fn show_labels(m: &BTreeMap<String, String>) -> String {
    let inner: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", inner.join(","))
}

/// Turns a range query's series into one value per step: several series refused unless summed,
/// a raw counter (`__name__` ending in `_total`) turned into its rate with resets counted from
/// zero, holes up to `max_gap` bridged and longer ones refused, all of it recorded.
pub fn to_grid(
    series: Vec<RangeSeries>,
    query: &str,
    w: &Window,
    opts: ReadOptions,
) -> Result<Recorded, Error> {
    let series: Vec<RangeSeries> = series
        .into_iter()
        .filter(|s| !s.values.is_empty())
        .collect();
    if series.is_empty() {
        return Err(Error::EmptyWindow {
            query: query.into(),
            start: rfc3339(w.start),
            end: rfc3339(w.end),
        });
    }
    if series.len() > 1 && !opts.sum {
        let mut labels: Vec<String> = series
            .iter()
            .take(3)
            .map(|s| show_labels(&s.metric))
            .collect();
        if series.len() > 3 {
            labels.push("…".into());
        }
        return Err(Error::SeveralSeries {
            query: query.into(),
            count: series.len(),
            labels: labels.join(", "),
        });
    }
    let counter = series.iter().all(|s| {
        s.metric
            .get("__name__")
            .is_some_and(|n| n.ends_with("_total"))
    });
    let slots = w.slots();
    let mut grid: Vec<Option<f64>> = vec![None; slots];
    let mut resets = Vec::new();
    let mut dropped = Dropped::default();
    let samples: usize = series.iter().map(|s| s.values.len()).sum();
    for s in &series {
        let mut points: Vec<(f64, f64)> = s
            .values
            .iter()
            .filter_map(|(t, v)| dropped.take(*t, v, w))
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        points.dedup_by(|b, a| a.0 == b.0);
        if counter {
            let mut rates = Vec::with_capacity(points.len());
            for pair in points.windows(2) {
                let ((t0, v0), (t1, v1)) = (pair[0], pair[1]);
                let increase = if v1 >= v0 {
                    v1 - v0
                } else {
                    resets.push(t1);
                    v1
                };
                rates.push((t1, increase / (t1 - t0).max(1e-9)));
            }
            points = rates;
        }
        for (t, x) in points {
            let i = ((t - w.start) / w.step).round();
            if i >= 0.0 && (i as usize) < slots {
                let slot = &mut grid[i as usize];
                *slot = Some(slot.unwrap_or(0.0) + x);
            }
        }
    }
    if grid.iter().all(Option::is_none) {
        if dropped.total() == 0 {
            return Err(Error::EmptyWindow {
                query: query.into(),
                start: rfc3339(w.start),
                end: rfc3339(w.end),
            });
        }
        return Err(Error::NoUsableSample {
            query: query.into(),
            start: rfc3339(w.start),
            end: rfc3339(w.end),
            samples,
            why: dropped.describe(),
        });
    }
    // Holes: runs of empty slots, bridged between their neighbours (held flat at the ends).
    let mut gaps = Vec::new();
    let mut gap_seconds = 0.0;
    let mut values = vec![0.0; slots];
    let mut i = 0;
    while i < slots {
        if let Some(x) = grid[i] {
            values[i] = x;
            i += 1;
            continue;
        }
        let from = i;
        while i < slots && grid[i].is_none() {
            i += 1;
        }
        let (before, after) = (from.checked_sub(1), (i < slots).then_some(i));
        // The hole lasts from the last value before it to the first after it.
        let t0 = w.start + before.unwrap_or(from) as f64 * w.step;
        let t1 = w.start + after.unwrap_or(slots - 1) as f64 * w.step;
        let seconds = t1 - t0;
        if seconds > opts.max_gap {
            return Err(Error::Gap {
                query: query.into(),
                from: rfc3339(t0),
                to: rfc3339(t1),
                seconds,
                max: opts.max_gap,
            });
        }
        let y0 = before.and_then(|b| grid[b]);
        let y1 = after.and_then(|a| grid[a]);
        for (k, v) in values.iter_mut().enumerate().take(i).skip(from) {
            *v = match (y0, y1, before) {
                (Some(a), Some(b), Some(bi)) => {
                    let span = (i - bi) as f64;
                    a + (b - a) * (k - bi) as f64 / span
                }
                (Some(a), None, _) => a,
                (None, Some(b), _) | (_, Some(b), None) => b,
                _ => 0.0,
            };
        }
        gaps.push((rfc3339(t0), rfc3339(t1)));
        gap_seconds += seconds;
    }
    resets.sort_by(f64::total_cmp);
    Ok(Recorded {
        window: *w,
        values,
        quality: DataQuality {
            query: query.into(),
            window: w.describe(),
            series: series.len(),
            counter,
            counter_resets: resets.into_iter().map(rfc3339).collect(),
            gaps_bridged: gaps,
            gap_seconds,
            samples_dropped: dropped.describe(),
        },
    })
}

/// Surges in a recorded load: where it rises, within 10 minutes, by half its level and by at
/// least one pod's capacity above the lowest point of those 10 minutes. A surge starts where the
/// rise began (the last value within a tenth of the rise of that lowest point: on a noisy flat
/// load the lowest point itself may be minutes earlier) and lasts until the load falls back
/// below halfway between the lowest point and the peak.
pub fn detect_surges(
    values: &[f64],
    step: f64,
    capacity_per_pod: f64,
    start_unix: f64,
) -> Vec<Surge> {
    let look = ((600.0 / step).ceil() as usize).max(1);
    let mut out = Vec::new();
    let mut i = 0;
    while i < values.len() {
        let lo = i.saturating_sub(look);
        let (base_i, base) =
            values[lo..=i]
                .iter()
                .enumerate()
                .fold((lo, f64::INFINITY), |(bi, b), (k, v)| {
                    if *v <= b { (lo + k, *v) } else { (bi, b) }
                });
        let rise = values[i] - base;
        if rise > 0.0 && rise >= (0.5 * base).max(capacity_per_pod) {
            let began = (base_i..=i)
                .rev()
                .find(|k| values[*k] <= base + 0.1 * rise)
                .unwrap_or(base_i);
            let mut peak = values[i];
            let mut j = i;
            while j + 1 < values.len() {
                j += 1;
                peak = peak.max(values[j]);
                if values[j] < base + 0.5 * (peak - base) {
                    break;
                }
            }
            let (start, end) = (began as f64 * step, j as f64 * step);
            out.push(Surge {
                name: format!("surge {} at {}", out.len() + 1, rfc3339(start_unix + start)),
                start,
                end,
            });
            i = j + 1;
            continue;
        }
        i += 1;
    }
    out
}

/// The scenario with the recorded load in place of its own: the window's length, its surges,
/// and a starting fleet sized for the window's first value.
pub fn replay_scenario(base: &Scenario, rec: &Recorded, source: &str) -> Scenario {
    let mut s = base.clone();
    let step = rec.window.step;
    let surges = detect_surges(
        &rec.values,
        step,
        s.gateway.capacity_per_pod_rps,
        rec.window.start,
    );
    s.duration_seconds = ((rec.values.len().saturating_sub(1)) as f64 * step) as u64;
    s.load = LoadProfile {
        components: vec![Component::Recorded {
            source: source.into(),
            start_unix: rec.window.start,
            step_seconds: step,
            rps: rec
                .values
                .iter()
                .map(|v| (v * 1000.0).round() / 1000.0)
                .collect(),
            surges,
        }],
    };
    let target = s
        .policy
        .metrics
        .first()
        .map_or(1.0, |m| m.target_per_replica)
        .max(1e-9);
    let first = rec.values.first().copied().unwrap_or(0.0);
    s.gateway.replicas = ((first / target).ceil() as i32)
        .clamp(s.policy.min_replicas.max(1), s.policy.max_replicas.max(1));
    s.name = format!("{} + load recorded {}", base.name, rec.window.describe());
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(name: Option<&str>, extra: &[(&str, &str)], points: &[(f64, &str)]) -> RangeSeries {
        let mut metric: BTreeMap<String, String> = extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Some(n) = name {
            metric.insert("__name__".into(), n.into());
        }
        RangeSeries {
            metric,
            values: points.iter().map(|(t, v)| (*t, v.to_string())).collect(),
        }
    }

    fn w() -> Window {
        Window::new(1000.0, 1000.0 + 15.0 * 10.0, 15.0).unwrap()
    }

    #[test]
    fn bad_windows_are_errors_naming_the_problem() {
        let empty = to_grid(vec![], "q", &w(), ReadOptions::default()).unwrap_err();
        assert!(matches!(empty, Error::EmptyWindow { .. }));
        assert!(empty.to_string().contains("empty window"), "{empty}");
        // Data, all of it garbage: each kind named and counted, not an "empty window".
        let garbage = vec![series(
            None,
            &[],
            &[
                (1000.0, "NaN"),
                (1015.0, "+Inf"),
                (1030.0, "-3"),
                (1045.0, "lots"),
                (9e9, "5"),
            ],
        )];
        let e = to_grid(garbage, "q", &w(), ReadOptions::default()).unwrap_err();
        assert!(matches!(e, Error::NoUsableSample { samples: 5, .. }), "{e}");
        let text = e.to_string();
        for part in [
            "2 not a number",
            "1 infinite",
            "1 negative",
            "1 timed outside the window",
        ] {
            assert!(text.contains(part), "{part}: {text}");
        }
        // Some garbage among good data: left out, and said so beside the figures.
        let mixed = vec![series(
            None,
            &[],
            &[(1000.0, "10"), (1015.0, "NaN"), (1030.0, "10")],
        )];
        let r = to_grid(mixed, "q", &w(), ReadOptions::default()).unwrap();
        assert!(
            r.quality
                .notes()
                .contains(&"samples left out: 1 not a number (NaN or text)".to_string()),
            "{:?}",
            r.quality.notes()
        );
        let two = vec![
            series(None, &[("pod", "a")], &[(1000.0, "1")]),
            series(None, &[("pod", "b")], &[(1000.0, "2")]),
        ];
        let e = to_grid(two.clone(), "q", &w(), ReadOptions::default()).unwrap_err();
        assert!(
            e.to_string().contains("2 series") && e.to_string().contains("pod=\"a\""),
            "{e}"
        );
        let summed = to_grid(
            two,
            "q",
            &w(),
            ReadOptions {
                sum: true,
                max_gap: 1e9,
            },
        )
        .unwrap();
        assert_eq!(summed.values[0], 3.0);
        assert_eq!(summed.quality.series, 2);
        // 0 and 150 only: a 150 s hole.
        let holey = vec![series(None, &[], &[(1000.0, "10"), (1150.0, "40")])];
        let e = to_grid(
            holey.clone(),
            "q",
            &w(),
            ReadOptions {
                sum: false,
                max_gap: 60.0,
            },
        )
        .unwrap_err();
        assert!(
            matches!(e, Error::Gap { seconds, .. } if seconds == 150.0),
            "{e}"
        );
        let bridged = to_grid(holey, "q", &w(), ReadOptions::default()).unwrap();
        assert_eq!(bridged.values[1], 13.0);
        assert_eq!(bridged.values[10], 40.0);
        assert_eq!(bridged.quality.gaps_bridged.len(), 1);
        assert_eq!(bridged.quality.gap_seconds, 150.0);
        assert!(bridged.quality.notes()[0].contains("gap"));
    }

    #[test]
    fn counters_become_rates_and_resets_are_counted_from_zero() {
        let pts: Vec<(f64, String)> = [0.0, 1500.0, 3000.0, 300.0, 1800.0]
            .iter()
            .enumerate()
            .map(|(i, v)| (1000.0 + 15.0 * i as f64, v.to_string()))
            .collect();
        let pts: Vec<(f64, &str)> = pts.iter().map(|(t, v)| (*t, v.as_str())).collect();
        let s = vec![series(Some("istio_requests_total"), &[], &pts)];
        let w = Window::new(1000.0, 1060.0, 15.0).unwrap();
        let r = to_grid(s, "istio_requests_total", &w, ReadOptions::default()).unwrap();
        assert!(r.quality.counter);
        assert_eq!(r.quality.counter_resets, vec![rfc3339(1045.0)]);
        // 100/s throughout, the reset counted from zero (300 in 15 s = 20/s).
        assert_eq!(r.values, vec![100.0, 100.0, 100.0, 20.0, 100.0]);
    }

    #[test]
    fn surges_are_found_where_the_load_rises() {
        // 2,000 rps, a surge to 20,000 at 10 min held 10 min, another smaller one later.
        let v: Vec<f64> = (0..=240)
            .map(|i| {
                let t = i as f64 * 15.0;
                if (600.0..1200.0).contains(&t) {
                    20_000.0
                } else if (2400.0..2700.0).contains(&t) {
                    5_000.0
                } else {
                    2_000.0
                }
            })
            .collect();
        let s = detect_surges(&v, 15.0, 700.0, 0.0);
        assert_eq!(s.len(), 2, "{s:?}");
        assert_eq!((s[0].start, s[0].end), (585.0, 1200.0));
        assert_eq!((s[1].start, s[1].end), (2385.0, 2700.0));
        assert!(detect_surges(&[2000.0; 100], 15.0, 700.0, 0.0).is_empty());
        // A noisy flat load: the surge starts where the rise began, not at the lowest point.
        let mut noisy: Vec<f64> = (0..40).map(|i| 2000.0 + 10.0 * f64::from(i % 3)).collect();
        noisy[2] = 1980.0;
        noisy.extend([2010.0, 6000.0, 12_000.0, 12_000.0, 12_000.0, 2000.0]);
        let s = detect_surges(&noisy, 1.0, 700.0, 0.0);
        assert_eq!((s[0].start, s[0].end), (40.0, 45.0), "{s:?}");
    }
}
