//! The drill's outputs: `report.json`, `timeline.csv`, the chart, and the terminal table.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::drill::DrillReport;

/// Writes `report.json`, `timeline.csv` and `chart.svg` into `dir`; returns the paths written.
pub fn write_all(report: &DrillReport, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let json = dir.join("report.json");
    std::fs::write(
        &json,
        serde_json::to_vec_pretty(report).map_err(std::io::Error::other)?,
    )?;
    let csv = dir.join("timeline.csv");
    std::fs::write(&csv, timeline_csv(report))?;
    let svg = dir.join("chart.svg");
    std::fs::write(
        &svg,
        super::chart::svg(report).map_err(std::io::Error::other)?,
    )?;
    Ok(vec![json, csv, svg])
}

/// One row per policy and sampled second.
pub fn timeline_csv(report: &DrillReport) -> String {
    let mut out = String::from(
        "policy,t,load_rps,capacity_rps,desired,ready,ecs_pods,eci_pods,pending_pods,cost_rate_ecs_per_hour,cost_rate_eci_per_hour,cost_cumulative\n",
    );
    for run in &report.runs {
        for p in &run.timeline {
            let _ = writeln!(
                out,
                "{},{},{:.1},{:.1},{},{},{},{},{},{:.4},{:.4},{:.4}",
                run.summary.policy,
                p.t,
                p.load_rps,
                p.capacity_rps,
                p.desired,
                p.ready,
                p.ecs_pods,
                p.eci_pods,
                p.pending_pods,
                p.cost_rate_ecs_per_hour,
                p.cost_rate_eci_per_hour,
                p.cost_cumulative
            );
        }
    }
    out
}

/// The short summary table for the terminal.
pub fn table(report: &DrillReport) -> String {
    let mut out = String::new();
    let currency = report
        .runs
        .first()
        .map_or("", |r| r.summary.currency.as_str());
    let _ = writeln!(
        out,
        "drill: {} (seed {}, {} s simulated)",
        report.scenario, report.seed, report.duration_s
    );
    let _ = writeln!(
        out,
        "{:<9} {:>13} {:>13} {:>8} {:>9} {:>10} {:>10} {:>12} {:>8} {:>8}",
        "policy",
        "to capacity",
        "short pod·s",
        "peak",
        "peak ECI",
        "final ECI",
        "ECI pod·s",
        format!("cost {currency}"),
        "weights",
        "rollouts"
    );
    for run in &report.runs {
        let s = &run.summary;
        let ttc = s
            .time_to_capacity_s
            .iter()
            .map(|r| format!("{:.0}s", r.seconds))
            .collect::<Vec<_>>()
            .join("/");
        let _ = writeln!(
            out,
            "{:<9} {:>13} {:>13.0} {:>8} {:>9} {:>10} {:>10.0} {:>12.2} {:>8} {:>8}",
            s.policy,
            if ttc.is_empty() { "-".into() } else { ttc },
            s.underprovisioned_pod_seconds,
            s.peak_replicas,
            s.peak_eci_pods,
            s.final_eci_pods,
            s.eci_pod_seconds,
            s.cost_total,
            s.weight_changes,
            s.rollouts
        );
    }
    for run in &report.runs {
        let (s, w) = (&run.summary, &run.summary.swaps);
        if w.started + w.held > 0 {
            let _ = writeln!(
                out,
                "{}: {} swap(s) back to ECS: ended on ECS {}, missed {}, not ready {}; pods \
                 added off ECS as planned {}; held {} (the scheduler would place the pods off ECS)",
                s.policy, w.started, w.landed_ecs, w.missed, w.gave_up, w.one_more, w.held
            );
        }
        if let Some(e) = &s.starts {
            let pool = |name: &str, p: &crate::sim::drill::PoolStartEstimate| match p.truth {
                None => format!("{name} no start"),
                Some(truth) => format!(
                    "{name} {:.1} s {} (the drill's p95 {truth:.1} s over {} starts)",
                    p.planned,
                    if p.learnt.is_some() {
                        "learnt"
                    } else {
                        "by default"
                    },
                    p.starts
                ),
            };
            let _ = writeln!(
                out,
                "{}: start latency expected: {}; {}",
                s.policy,
                pool("ECS", &e.ecs),
                pool("ECI", &e.eci)
            );
        }
        // Said where the pools differ, or were counted as differing.
        if let Some(e) = s
            .eci_capacity
            .as_ref()
            .filter(|e| e.truth != 1.0 || e.last != 1.0)
        {
            let _ = writeln!(
                out,
                "{}: per-pool capacity: ECS pods at the policy's target; ECI pods counted as \
                 {:.2} of one at the end ({}), true {:.2}; error over {} decisions with ECI \
                 pods ready: mean {:+.1} %, mean absolute {:.1} %",
                s.policy,
                e.last,
                e.source,
                e.truth,
                e.decisions,
                e.mean_error * 100.0,
                e.mean_abs_error * 100.0
            );
        }
    }
    // Said where the scenario plans events: how each policy met each.
    for s in report.runs.iter().map(|r| &r.summary) {
        for e in &s.events {
            let _ = writeln!(
                out,
                "{}: planned event {}: capacity for the load {:.1} % of its seconds (short {:.0} s); pod·s ahead of its start {:.0}",
                s.policy,
                e.name,
                e.served * 100.0,
                e.short_seconds,
                e.pod_seconds_before,
            );
        }
    }
    // Said where the scenario models long-lived connections.
    if report.connections {
        for s in report.runs.iter().map(|r| &r.summary) {
            let chosen = if s.victims.as_chosen + s.victims.kept > 0 {
                format!(
                    "; pods chosen by connections: {} removed as chosen, {} kept",
                    s.victims.as_chosen, s.victims.kept
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "{}: long-lived connections reset {:.0}{}; connections spread max/mean ≥ {} for {:.0} s in {} spell(s), the longest {:.0} s{chosen}",
                s.policy,
                s.connection_resets,
                if s.connections_aged_out > 0.0 {
                    format!(
                        ", closed at their maximum age {:.0}",
                        s.connections_aged_out
                    )
                } else {
                    String::new()
                },
                crate::sim::cluster::UNBALANCED,
                s.unbalanced_seconds,
                s.unbalanced_spells,
                s.longest_unbalanced_seconds,
            );
        }
    }
    out
}
