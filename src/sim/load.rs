//! Scripted load, and what Prometheus would report of it.
//!
//! A profile is a sum of components (a diurnal day plus two flash crowds is three components).
//! The gateway's Envoys count requests; Prometheus scrapes the counters every
//! `scrapeIntervalSeconds`, and `rate(..[window])` over those scrapes is what the engine reads:
//! late by up to a scrape interval, and smoothed over the window.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::model::LoadSample;
use crate::policy::{MetricSpec, Preset};

/// One part of a load profile, in requests per second.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all_fields = "camelCase", deny_unknown_fields)]
pub enum Component {
    /// A flat load.
    Constant { rps: f64 },
    /// Adds `rps` from `atSeconds` on.
    Step { at_seconds: f64, rps: f64 },
    /// Adds 0 growing linearly to `rps` between the two times, then `rps`.
    Ramp {
        start_seconds: f64,
        end_seconds: f64,
        rps: f64,
    },
    /// A flash crowd: rises to `+rps` in `riseSeconds`, holds, falls back in `fallSeconds`.
    Spike {
        at_seconds: f64,
        rise_seconds: f64,
        hold_seconds: f64,
        fall_seconds: f64,
        rps: f64,
    },
    /// `meanRps + amplitudeRps * cos(2π (t - peakAtSeconds) / periodSeconds)`.
    Diurnal {
        mean_rps: f64,
        amplitude_rps: f64,
        #[serde(default = "day")]
        period_seconds: f64,
        #[serde(default)]
        peak_at_seconds: f64,
    },
    /// Adds noise uniform in `±rps`, drawn afresh every `everySeconds` (a deterministic hash of
    /// the interval and `seed`, so a run is reproducible).
    Noise {
        rps: f64,
        #[serde(default = "noise_every")]
        every_seconds: f64,
        #[serde(default)]
        seed: u64,
    },
    /// A load recorded by Prometheus (`spillway drill --load-from-prometheus`): one value every
    /// `stepSeconds` from 0, linearly interpolated, with the surges found in it.
    Recorded {
        /// Where it came from: the query, the Prometheus and the window.
        #[serde(default)]
        source: String,
        /// Unix time of the first value (for the report's clock).
        #[serde(default)]
        start_unix: f64,
        step_seconds: f64,
        rps: Vec<f64>,
        #[serde(default)]
        surges: Vec<Surge>,
    },
    /// Replays a CSV time series `seconds,rps` (header optional), linearly interpolated.
    Csv {
        path: String,
        #[serde(skip)]
        points: Vec<(f64, f64)>,
    },
}

fn day() -> f64 {
    86_400.0
}

fn noise_every() -> f64 {
    15.0
}

/// A number in `[-1, 1)` from a bucket index and a seed (splitmix64).
fn noise_unit(bucket: i64, seed: u64) -> f64 {
    let mut z = (bucket as u64)
        .wrapping_add(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 52) as f64 - 1.0
}

/// A window in which the load surges: the report measures how fast each is absorbed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Surge {
    pub name: String,
    pub start: f64,
    pub end: f64,
}

impl Component {
    pub fn at(&self, t: f64) -> f64 {
        match self {
            Component::Constant { rps } => *rps,
            Component::Step { at_seconds, rps } => {
                if t >= *at_seconds {
                    *rps
                } else {
                    0.0
                }
            }
            Component::Ramp {
                start_seconds,
                end_seconds,
                rps,
            } => {
                let span = (end_seconds - start_seconds).max(1e-9);
                rps * ((t - start_seconds) / span).clamp(0.0, 1.0)
            }
            Component::Spike {
                at_seconds,
                rise_seconds,
                hold_seconds,
                fall_seconds,
                rps,
            } => {
                let x = t - at_seconds;
                let top = rise_seconds + hold_seconds;
                if x < 0.0 || x > top + fall_seconds {
                    0.0
                } else if x < *rise_seconds {
                    rps * x / rise_seconds.max(1e-9)
                } else if x <= top {
                    *rps
                } else {
                    rps * (1.0 - (x - top) / fall_seconds.max(1e-9))
                }
            }
            Component::Diurnal {
                mean_rps,
                amplitude_rps,
                period_seconds,
                peak_at_seconds,
            } => {
                let phase =
                    2.0 * std::f64::consts::PI * (t - peak_at_seconds) / period_seconds.max(1.0);
                mean_rps + amplitude_rps * phase.cos()
            }
            Component::Noise {
                rps,
                every_seconds,
                seed,
            } => rps * noise_unit((t / every_seconds.max(1.0)).floor() as i64, *seed),
            Component::Csv { points, .. } => interpolate(points, t),
            Component::Recorded {
                step_seconds, rps, ..
            } => interpolate_even(rps, *step_seconds, t),
        }
    }

    fn surges(&self, i: usize) -> Vec<Surge> {
        match self {
            Component::Recorded { surges, .. } => surges.clone(),
            other => other.surge(i).into_iter().collect(),
        }
    }

    fn surge(&self, i: usize) -> Option<Surge> {
        match self {
            Component::Spike {
                at_seconds,
                rise_seconds,
                hold_seconds,
                ..
            } => Some(Surge {
                name: format!("spike[{i}]@{at_seconds}s"),
                start: *at_seconds,
                end: at_seconds + rise_seconds + hold_seconds,
            }),
            Component::Step { at_seconds, rps } if *rps > 0.0 => Some(Surge {
                name: format!("step[{i}]@{at_seconds}s"),
                start: *at_seconds,
                end: at_seconds + 600.0,
            }),
            Component::Ramp {
                start_seconds,
                end_seconds,
                rps,
            } if *rps > 0.0 => Some(Surge {
                name: format!("ramp[{i}]@{start_seconds}s"),
                start: *start_seconds,
                end: *end_seconds,
            }),
            _ => None,
        }
    }
}

/// Values every `step` seconds from 0, linearly interpolated; flat beyond the ends.
fn interpolate_even(values: &[f64], step: f64, t: f64) -> f64 {
    let Some(last) = values.len().checked_sub(1) else {
        return 0.0;
    };
    let x = (t / step.max(1e-9)).max(0.0);
    let i = (x.floor() as usize).min(last);
    let (y0, y1) = (values[i], values[(i + 1).min(last)]);
    y0 + (y1 - y0) * (x - i as f64).min(1.0)
}

fn interpolate(points: &[(f64, f64)], t: f64) -> f64 {
    let idx = points.partition_point(|(x, _)| *x <= t);
    match (
        idx.checked_sub(1).and_then(|i| points.get(i)),
        points.get(idx),
    ) {
        (Some((x0, y0)), Some((x1, y1))) => y0 + (y1 - y0) * (t - x0) / (x1 - x0).max(1e-9),
        (Some((_, y)), None) | (None, Some((_, y))) => *y,
        (None, None) => 0.0,
    }
}

/// The sum of its components, never negative.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadProfile {
    pub components: Vec<Component>,
}

impl LoadProfile {
    pub fn at(&self, t: f64) -> f64 {
        self.components
            .iter()
            .map(|c| c.at(t))
            .sum::<f64>()
            .max(0.0)
    }

    pub fn surges(&self) -> Vec<Surge> {
        self.components
            .iter()
            .enumerate()
            .flat_map(|(i, c)| c.surges(i))
            .collect()
    }

    /// Loads CSV replays, relative to `base` (the scenario file's folder).
    pub fn resolve(&mut self, base: &Path) -> Result<(), crate::config::FieldError> {
        for (i, c) in self.components.iter_mut().enumerate() {
            if let Component::Csv { path, points } = c {
                let at = format!("load.components[{i}].path");
                let full = base.join(&*path);
                let text = crate::config::read_bounded(&full, crate::config::MAX_CSV_BYTES)
                    .map_err(|e| {
                        crate::config::FieldError::new(&at, format!("{}: {e}", full.display()))
                    })?;
                *points = parse_csv(&text).map_err(|e| crate::config::FieldError::new(&at, e))?;
            }
        }
        Ok(())
    }
}

/// `seconds,rps` lines; a first line that does not parse is a header.
pub fn parse_csv(text: &str) -> Result<Vec<(f64, f64)>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut cols = line.split(',').map(str::trim);
        let parsed = match (
            cols.next().map(str::parse::<f64>),
            cols.next().map(str::parse::<f64>),
        ) {
            (Some(Ok(t)), Some(Ok(v))) if t.is_finite() && v.is_finite() => Some((t, v)),
            _ => None,
        };
        match parsed {
            Some(p) => out.push(p),
            None if n == 0 => {}
            None => {
                return Err(format!(
                    "line {}: expected `seconds,rps`, got {line:?}",
                    n + 1
                ));
            }
        }
    }
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    if out.is_empty() {
        return Err("no data rows".into());
    }
    Ok(out)
}

/// How the simulated gateway turns requests into the other signals.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SignalModel {
    /// Mean downstream connection lifetime: active connections = rps × this.
    #[serde(default = "d_conn")]
    pub seconds_per_connection: f64,
    /// CPU seconds per request: CPU cores = rps × this.
    #[serde(default = "d_cpu")]
    pub cpu_seconds_per_request: f64,
}

fn d_conn() -> f64 {
    0.5
}
fn d_cpu() -> f64 {
    0.002
}

impl Default for SignalModel {
    fn default() -> Self {
        Self {
            seconds_per_connection: d_conn(),
            cpu_seconds_per_request: d_cpu(),
        }
    }
}

/// Scrape and query timing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PromTiming {
    #[serde(default = "d_scrape")]
    pub scrape_interval_seconds: u32,
    /// The `[window]` of `rate()`.
    #[serde(default = "d_window")]
    pub rate_window_seconds: u32,
}

fn d_scrape() -> u32 {
    15
}
fn d_window() -> u32 {
    60
}

impl Default for PromTiming {
    fn default() -> Self {
        Self {
            scrape_interval_seconds: d_scrape(),
            rate_window_seconds: d_window(),
        }
    }
}

/// The load, per second of the drill, with its request counter.
pub struct LoadSeries {
    /// Requests per second at each whole second.
    pub rps: Vec<f64>,
    /// Requests counted up to each second.
    counter: Vec<f64>,
    timing: PromTiming,
    signals: SignalModel,
}

impl LoadSeries {
    pub fn new(
        profile: &LoadProfile,
        seconds: usize,
        timing: PromTiming,
        signals: SignalModel,
    ) -> Self {
        let rps: Vec<f64> = (0..=seconds).map(|t| profile.at(t as f64)).collect();
        let mut counter = Vec::with_capacity(rps.len());
        let mut acc = 0.0;
        for r in &rps {
            counter.push(acc);
            acc += r;
        }
        Self {
            rps,
            counter,
            timing,
            signals,
        }
    }

    pub fn at(&self, t: usize) -> f64 {
        self.rps[t.min(self.rps.len() - 1)]
    }

    /// `rate(counter[window])` as Prometheus evaluates it at `t` from the scrapes it has: the
    /// increase between the first and last scrape inside the window over their distance.
    pub fn observed_rate(&self, t: usize) -> Option<f64> {
        let s = self.timing.scrape_interval_seconds.max(1) as usize;
        let last = t / s * s;
        let window = self.timing.rate_window_seconds as usize;
        let first_allowed = t.saturating_sub(window);
        let first = first_allowed.div_ceil(s) * s;
        if last <= first || last >= self.counter.len() {
            return None;
        }
        Some((self.counter[last] - self.counter[first]) / (last - first) as f64)
    }

    /// The last scraped value of a gauge proportional to the load.
    fn observed_gauge(&self, t: usize) -> f64 {
        let s = self.timing.scrape_interval_seconds.max(1) as usize;
        self.at(t / s * s)
    }

    /// What one policy metric would read at `t`. Custom queries are taken to measure requests
    /// per second.
    pub fn sample(&self, metric: &MetricSpec, t: usize) -> LoadSample {
        let missing = || LoadSample::Missing("no scrapes in the rate window yet".into());
        match metric.preset {
            Some(Preset::ActiveConnections) if metric.query.is_none() => {
                LoadSample::Total(self.observed_gauge(t) * self.signals.seconds_per_connection)
            }
            Some(Preset::Cpu) if metric.query.is_none() => {
                self.observed_rate(t).map_or_else(missing, |r| {
                    LoadSample::Total(r * self.signals.cpu_seconds_per_request)
                })
            }
            _ => self
                .observed_rate(t)
                .map_or_else(missing, LoadSample::Total),
        }
    }

    /// CPU seconds one request costs an ECS pod.
    pub fn cpu_seconds_per_request(&self) -> f64 {
        self.signals.cpu_seconds_per_request
    }

    /// The mean rate between two whole seconds, as two reads of a request counter give it.
    pub fn rate_between(&self, from: usize, to: usize) -> Option<f64> {
        (to > from && to < self.counter.len())
            .then(|| (self.counter[to] - self.counter[from]) / (to - from) as f64)
    }

    /// The largest load in `[t, t + ahead]`: what perfect foresight sizes for.
    pub fn max_ahead(&self, t: usize, ahead: usize) -> f64 {
        let end = (t + ahead).min(self.rps.len() - 1);
        self.rps[t.min(end)..=end]
            .iter()
            .copied()
            .fold(0.0, f64::max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_compose() {
        let p = LoadProfile {
            components: vec![
                Component::Constant { rps: 100.0 },
                Component::Spike {
                    at_seconds: 10.0,
                    rise_seconds: 10.0,
                    hold_seconds: 10.0,
                    fall_seconds: 10.0,
                    rps: 900.0,
                },
                Component::Step {
                    at_seconds: 100.0,
                    rps: 50.0,
                },
            ],
        };
        assert_eq!(p.at(0.0), 100.0);
        assert_eq!(p.at(15.0), 550.0);
        assert_eq!(p.at(25.0), 1000.0);
        assert_eq!(p.at(35.0), 550.0);
        assert_eq!(p.at(41.0), 100.0);
        assert_eq!(p.at(100.0), 150.0);
        assert_eq!(p.surges().len(), 2);
        assert_eq!(p.surges()[0].end, 30.0);
    }

    #[test]
    fn diurnal_and_ramp() {
        let d = Component::Diurnal {
            mean_rps: 100.0,
            amplitude_rps: 50.0,
            period_seconds: 86400.0,
            peak_at_seconds: 0.0,
        };
        assert!((d.at(0.0) - 150.0).abs() < 1e-9);
        assert!((d.at(43200.0) - 50.0).abs() < 1e-9);
        let r = Component::Ramp {
            start_seconds: 0.0,
            end_seconds: 100.0,
            rps: 10.0,
        };
        assert_eq!((r.at(-1.0), r.at(50.0), r.at(500.0)), (0.0, 5.0, 10.0));
    }

    #[test]
    fn csv_replay_interpolates() {
        let pts = parse_csv("seconds,rps\n0,100\n10,200\n").unwrap();
        let c = Component::Csv {
            path: "x".into(),
            points: pts,
        };
        assert_eq!(c.at(5.0), 150.0);
        assert_eq!(c.at(100.0), 200.0);
        assert!(parse_csv("0,1\nx,y\n").unwrap_err().contains("line 2"));
    }

    #[test]
    fn noise_is_bounded_piecewise_and_reproducible() {
        let n = Component::Noise {
            rps: 100.0,
            every_seconds: 15.0,
            seed: 3,
        };
        let values: Vec<f64> = (0..3000).map(|t| n.at(f64::from(t))).collect();
        assert!(values.iter().all(|v| v.abs() <= 100.0));
        assert_eq!(n.at(0.0), n.at(14.0));
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        assert!(mean.abs() < 15.0, "{mean}");
        assert!(values.iter().any(|v| *v > 50.0) && values.iter().any(|v| *v < -50.0));
        let other = Component::Noise {
            rps: 100.0,
            every_seconds: 15.0,
            seed: 4,
        };
        assert_ne!(n.at(0.0), other.at(0.0));
    }

    #[test]
    fn prometheus_rate_lags_and_smooths() {
        let p = LoadProfile {
            components: vec![Component::Step {
                at_seconds: 100.0,
                rps: 1000.0,
            }],
        };
        let s = LoadSeries::new(&p, 300, PromTiming::default(), SignalModel::default());
        assert_eq!(s.observed_rate(10), None); // one scrape only
        assert_eq!(s.observed_rate(99), Some(0.0));
        // At 110 the scrapes in the window are 60..105: 5 s of the step over 45 s.
        let r = s.observed_rate(110).unwrap();
        assert!((r - 5000.0 / 45.0).abs() < 1e-6, "{r}");
        // A full window after the step, the rate is the step.
        assert_eq!(s.observed_rate(180), Some(1000.0));
        assert_eq!(s.max_ahead(50, 60), 1000.0);
    }
}
