//! A suite of drills: every scenario file of a folder, each run under spillway, the HPA, the
//! reactive bound and the oracle, summed up in one scorecard against issue 12's targets.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::drill::{DrillReport, Observer, Summary};
use super::scenario::{PolicyKind, Scenario};

/// The policies every load of a suite runs under.
pub const SUITE_POLICIES: [PolicyKind; 4] = [
    PolicyKind::Spillway,
    PolicyKind::Hpa,
    PolicyKind::Reactive,
    PolicyKind::Oracle,
];

/// Ratios of two figures that may be zero are taken with this much added to both sides, in the
/// figure's unit (CNY for spend, pod·s for shortage), so that 0 against 0 counts as 1.
const SPEND_EPSILON: f64 = 0.01;
const SHORT_EPSILON: f64 = 1.0;
/// A load "has surges" for the shortage target when the HPA is short for at least this long.
const SURGE_SHORT_POD_SECONDS: f64 = 100.0;

#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    #[error("cannot read the suite folder {0}: {1}")]
    Folder(PathBuf, std::io::Error),
    #[error("no *.yaml scenario in {0}")]
    Empty(PathBuf),
    #[error("{0}: invalid scenario\n{1}")]
    Scenario(PathBuf, String),
}

/// The scenario files of a folder, sorted by name.
pub fn scenario_files(dir: &Path) -> Result<Vec<PathBuf>, SuiteError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| SuiteError::Folder(dir.to_path_buf(), e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(SuiteError::Empty(dir.to_path_buf()));
    }
    Ok(files)
}

/// Loads every scenario of the folder (all of them, before running any).
pub fn load(dir: &Path) -> Result<Vec<(String, Scenario)>, SuiteError> {
    scenario_files(dir)?
        .into_iter()
        .map(|path| {
            let name = path
                .file_stem()
                .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
            let mut s = Scenario::load(&path).map_err(|errors| {
                SuiteError::Scenario(path.clone(), crate::config::render(&errors))
            })?;
            s.policies = SUITE_POLICIES.to_vec();
            Ok((name, s))
        })
        .collect()
}

/// One load's results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoadResult {
    pub load: String,
    /// The load runs the opt-in yield mode (exhausted weights differ from the normal ones): it
    /// is shown for its consequences and left out of the targets.
    #[serde(default)]
    pub opt_in: bool,
    pub report: DrillReport,
}

/// Runs every load.
pub fn run(loads: &[(String, Scenario)], observer: &mut dyn Observer) -> Vec<LoadResult> {
    loads
        .iter()
        .map(|(name, s)| LoadResult {
            load: name.clone(),
            opt_in: s.policy.placement.exhausted_weights != s.policy.placement.normal_weights,
            report: super::drill::run(s, observer),
        })
        .collect()
}

fn summary<'a>(r: &'a LoadResult, policy: &str) -> Option<&'a Summary> {
    r.report
        .runs
        .iter()
        .map(|run| &run.summary)
        .find(|s| s.policy == policy)
}

/// The slowest surge's time to capacity, if the load declares surges.
pub fn time_to_capacity(s: &Summary) -> Option<f64> {
    s.time_to_capacity_s
        .iter()
        .map(|r| r.seconds)
        .reduce(f64::max)
}

fn geomean(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 1.0;
    }
    (values.iter().map(|v| v.ln()).sum::<f64>() / values.len() as f64).exp()
}

/// How the suite fares against issue 12's targets.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Loads where spillway's ECI spend exceeds the HPA's.
    pub eci_spend_over_hpa: Vec<String>,
    pub eci_spend_geomean: f64,
    /// Loads where spillway is short for longer than the HPA.
    pub short_over_hpa: Vec<String>,
    /// Over the loads where the HPA is short for at least 100 pod·s.
    pub short_geomean: f64,
    /// Worst (spillway − reactive) time to capacity over the loads with declared surges.
    pub ttc_over_reactive_s: f64,
    /// Loads where spillway reverses more than the HPA + 1.
    pub reversals_over_hpa: Vec<String>,
    pub rollouts_under_load: u32,
    /// Σ ECI pod·s while ECS had a free slot over Σ ECI pod·s.
    pub eci_while_ecs_free_fraction: f64,
    /// spillway's swaps back to ECS over all loads (`placement.swapBack`).
    #[serde(default)]
    pub swaps: super::drill::SwapTally,
    /// Issue 27's limits, per load. Loads where spillway's ECI spend exceeds the reactive
    /// bound's × [`REACTIVE_SPEND_SLACK`] (less is only fair through foresight, more is waste).
    #[serde(default)]
    pub eci_spend_over_reactive: Vec<String>,
    /// Loads where spillway is short for more than the reactive bound's × 1.1 + 60 pod·s.
    #[serde(default)]
    pub short_over_reactive: Vec<String>,
    /// Loads where ECI pod·s while ECS had a free slot pass 2 % of spillway's ECI pod·s.
    #[serde(default)]
    pub eci_while_ecs_free_over: Vec<String>,
    /// Geometric mean over the loads of spillway's total cost over the oracle's.
    #[serde(default)]
    pub cost_vs_oracle_geomean: f64,
}

/// Issue 27: ECI spend within the reactive bound's × 1.05 on every load.
pub const REACTIVE_SPEND_SLACK: f64 = 1.05;

/// Issue 27: under-provisioned pod·s within the reactive bound's × 1.1 + 60 on every load.
pub fn short_limit(reactive: f64) -> f64 {
    reactive * 1.1 + 60.0
}

/// Issue 27: ECI pod·s while ECS had a free slot within 2 % of the ECI pod·s on every load.
pub const ECI_WHILE_ECS_FREE_LIMIT: f64 = 0.02;

pub fn verdict(results: &[LoadResult]) -> Verdict {
    let mut v = Verdict::default();
    let (mut spend, mut short, mut cost) = (Vec::new(), Vec::new(), Vec::new());
    let (mut eci_free, mut eci_all) = (0.0, 0.0);
    v.ttc_over_reactive_s = f64::NEG_INFINITY;
    for r in results.iter().filter(|r| !r.opt_in) {
        let (Some(sw), Some(hpa)) = (summary(r, "spillway"), summary(r, "hpa")) else {
            continue;
        };
        if sw.cost_eci > hpa.cost_eci + 1e-9 {
            v.eci_spend_over_hpa.push(r.load.clone());
        }
        spend.push((sw.cost_eci + SPEND_EPSILON) / (hpa.cost_eci + SPEND_EPSILON));
        if sw.underprovisioned_pod_seconds > hpa.underprovisioned_pod_seconds + 1e-9 {
            v.short_over_hpa.push(r.load.clone());
        }
        if hpa.underprovisioned_pod_seconds >= SURGE_SHORT_POD_SECONDS {
            short.push(
                (sw.underprovisioned_pod_seconds + SHORT_EPSILON)
                    / (hpa.underprovisioned_pod_seconds + SHORT_EPSILON),
            );
        }
        if let (Some(a), Some(b)) = (
            time_to_capacity(sw),
            summary(r, "reactive").and_then(time_to_capacity),
        ) {
            v.ttc_over_reactive_s = v.ttc_over_reactive_s.max(a - b);
        }
        if let Some(re) = summary(r, "reactive") {
            if sw.cost_eci > re.cost_eci * REACTIVE_SPEND_SLACK + 1e-9 {
                v.eci_spend_over_reactive.push(r.load.clone());
            }
            if sw.underprovisioned_pod_seconds > short_limit(re.underprovisioned_pod_seconds) {
                v.short_over_reactive.push(r.load.clone());
            }
        }
        if let Some(o) = summary(r, "oracle").filter(|o| o.cost_total > 0.0) {
            cost.push(sw.cost_total / o.cost_total);
        }
        if sw.eci_pod_seconds_ecs_free > ECI_WHILE_ECS_FREE_LIMIT * sw.eci_pod_seconds {
            v.eci_while_ecs_free_over.push(r.load.clone());
        }
        if sw.reversals > hpa.reversals + 1 {
            v.reversals_over_hpa.push(r.load.clone());
        }
        v.rollouts_under_load += sw.rollouts_under_load;
        eci_free += sw.eci_pod_seconds_ecs_free;
        eci_all += sw.eci_pod_seconds;
        v.swaps.add(&sw.swaps);
    }
    if v.ttc_over_reactive_s == f64::NEG_INFINITY {
        v.ttc_over_reactive_s = 0.0;
    }
    v.eci_spend_geomean = geomean(&spend);
    v.short_geomean = geomean(&short);
    v.cost_vs_oracle_geomean = geomean(&cost);
    v.eci_while_ecs_free_fraction = if eci_all > 0.0 {
        eci_free / eci_all
    } else {
        0.0
    };
    v
}

/// The scorecard: one block per load, a total per policy, and the verdict.
pub fn scorecard(results: &[LoadResult]) -> String {
    let mut out = String::new();
    let header = format!(
        "{:<9} {:>6} {:>9} {:>9} {:>8} {:>9} {:>4} {:>4} {:>8} {:>8}",
        "policy",
        "ttc s",
        "short·s",
        "ECI·s",
        "ECI ¥",
        "total ¥",
        "rev",
        "rul",
        "ECIfree",
        "pend·s"
    );
    let row = |out: &mut String, name: &str, s: &Summary| {
        let _ = writeln!(
            out,
            "{:<9} {:>6} {:>9.0} {:>9.0} {:>8.2} {:>9.2} {:>4} {:>4} {:>8.0} {:>8.0}",
            name,
            time_to_capacity(s).map_or_else(|| "-".to_string(), |t| format!("{t:.0}")),
            s.underprovisioned_pod_seconds,
            s.eci_pod_seconds,
            s.cost_eci,
            s.cost_total,
            s.reversals,
            s.rollouts_under_load,
            s.eci_pod_seconds_ecs_free,
            s.pending_pod_seconds,
        );
    };
    let _ = writeln!(
        out,
        "columns: time to capacity (slowest surge), under-provisioned pod·s, ECI pod·s, ECI spend, \
         total cost (fixed ECS nodes + ECI), reversals within 10 min, rollouts while load > 50% \
         of ready capacity, ECI pod·s while ECS had a free slot, pending pod·s"
    );
    let mut totals: Vec<(String, Summary)> = Vec::new();
    for r in results {
        let _ = writeln!(
            out,
            "\n## {} ({} s){}",
            r.load,
            r.report.duration_s,
            if r.opt_in {
                " — opt-in yield mode, not in the totals or targets"
            } else {
                ""
            }
        );
        let _ = writeln!(out, "{header}");
        for run in &r.report.runs {
            let s = &run.summary;
            row(&mut out, &s.policy, s);
            if r.opt_in {
                continue;
            }
            match totals.iter_mut().find(|(p, _)| *p == s.policy) {
                Some((_, t)) => {
                    t.underprovisioned_pod_seconds += s.underprovisioned_pod_seconds;
                    t.eci_pod_seconds += s.eci_pod_seconds;
                    t.cost_eci += s.cost_eci;
                    t.cost_total += s.cost_total;
                    t.reversals += s.reversals;
                    t.rollouts_under_load += s.rollouts_under_load;
                    t.eci_pod_seconds_ecs_free += s.eci_pod_seconds_ecs_free;
                    t.pending_pod_seconds += s.pending_pod_seconds;
                    t.time_to_capacity_s.extend(s.time_to_capacity_s.clone());
                }
                None => totals.push((s.policy.clone(), s.clone())),
            }
        }
    }
    let counted = results.iter().filter(|r| !r.opt_in).count();
    let _ = writeln!(out, "\n## total over {counted} loads");
    let _ = writeln!(out, "{header}");
    for (p, t) in &totals {
        row(&mut out, p, t);
    }
    let v = verdict(results);
    let list = |l: &[String]| {
        if l.is_empty() {
            "none".to_string()
        } else {
            l.join(", ")
        }
    };
    let _ = writeln!(
        out,
        "\nsummary: ECI spend vs hpa geomean {:.2}x (over hpa on: {}); short pod·s vs hpa geomean \
         {:.2}x on surging loads (over hpa on: {}); time to capacity ≤ reactive + {:.0} s; \
         reversals > hpa+1 on: {}; rollouts under load {}; ECI while ECS free {:.1}%; swaps: \
         {} started, ended on ECS {}, missed {}, not ready {}, held {}\n\
         against the limits: ECI spend > reactive × 1.05 on: {}; short pod·s > reactive × 1.1 + \
         60 on: {}; ECI while ECS free > 2% on: {}; total cost vs oracle geomean {:.3}x",
        v.eci_spend_geomean,
        list(&v.eci_spend_over_hpa),
        v.short_geomean,
        list(&v.short_over_hpa),
        v.ttc_over_reactive_s,
        list(&v.reversals_over_hpa),
        v.rollouts_under_load,
        100.0 * v.eci_while_ecs_free_fraction,
        v.swaps.started,
        v.swaps.landed_ecs,
        v.swaps.missed,
        v.swaps.gave_up,
        v.swaps.held,
        list(&v.eci_spend_over_reactive),
        list(&v.short_over_reactive),
        list(&v.eci_while_ecs_free_over),
        v.cost_vs_oracle_geomean,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geomean_of_ratios() {
        assert!((geomean(&[2.0, 0.5]) - 1.0).abs() < 1e-12);
        assert!((geomean(&[4.0]) - 4.0).abs() < 1e-12);
        assert_eq!(geomean(&[]), 1.0);
    }

    #[test]
    fn an_empty_or_missing_folder_is_an_error() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(load(dir.path()), Err(SuiteError::Empty(_))));
        assert!(matches!(
            load(&dir.path().join("nope")),
            Err(SuiteError::Folder(..))
        ));
    }
}
