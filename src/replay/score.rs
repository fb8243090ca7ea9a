//! `spillway drill score`: a real drill's figures from Prometheus history, beside the simulator's
//! prediction for the same recorded load.
//!
//! The load comes from the policy's own query (or `--query`); the fleet from spillway's exported
//! metrics (`spillway_gateway_pods`, `spillway_replicas_desired`, `spillway_ecs_free_pods`,
//! `spillway_cost_rate_per_second`, `spillway_decisions_total`, `spillway_affinity_weight`). The
//! figures follow the simulated drill's definitions ([`crate::sim::drill::Summary`]), one step of
//! the window at a time instead of one second.

use std::collections::BTreeMap;

use super::recorded::{self, DataQuality, ReadOptions, Recorded};
use super::{Error, Window};
use crate::prom::{Prometheus, RangeSeries};
use crate::sim::drill::{
    DecisionLog, DrillReport, Point, PolicyRun, REVERSAL_WINDOW_SECONDS, Summary, pods_needed,
    surge_result,
};
use crate::sim::load::Surge;

/// The gateway scored and how its figures are read.
#[derive(Clone, Debug)]
pub struct Target {
    pub namespace: String,
    pub name: String,
    /// The load query (requests per second).
    pub load_query: String,
    pub capacity_per_pod_rps: f64,
    pub currency: String,
}

/// spillway's own series for one gateway, as the score reads them.
pub fn queries(t: &Target) -> Vec<(&'static str, String)> {
    let sel = format!("namespace=\"{}\",name=\"{}\"", t.namespace, t.name);
    // `max by` rather than `sum`: two replicas exporting during a hand-over count once.
    let pods =
        |extra: &str| format!("sum(max by (pool, state) (spillway_gateway_pods{{{sel},{extra}}}))");
    vec![
        ("ready", pods("state=\"ready\"")),
        ("ecs", pods("pool=\"ecs\"")),
        ("eci", pods("pool=\"eci\"")),
        ("pending", pods("pool=\"pending\"")),
        (
            "desired",
            format!("max(spillway_replicas_desired{{{sel}}})"),
        ),
        ("ecs_free", format!("max(spillway_ecs_free_pods{{{sel}}})")),
        (
            "cost_ecs",
            format!(
                "sum(max by (pool, currency) (spillway_cost_rate_per_second{{{sel},pool=\"ecs\"}}))"
            ),
        ),
        (
            "cost_eci",
            format!(
                "sum(max by (pool, currency) (spillway_cost_rate_per_second{{{sel},pool=\"eci\"}}))"
            ),
        ),
    ]
}

/// The decisions counter by action and reason (its increase per step is taken here: an
/// `increase()` over one step finds nothing when the step is the scrape interval).
pub fn decisions_query(t: &Target) -> String {
    format!(
        "max by (action, reason) (spillway_decisions_total{{namespace=\"{}\",name=\"{}\",action!=\"hold\"}})",
        t.namespace, t.name
    )
}

/// The pods' preferred-affinity weights per pool.
pub fn weights_query(t: &Target) -> String {
    format!(
        "max by (pool) (spillway_affinity_weight{{namespace=\"{}\",name=\"{}\"}})",
        t.namespace, t.name
    )
}

/// Everything fetched for a score, before it is turned into figures.
#[derive(Clone, Debug, Default)]
pub struct History {
    pub load: Option<Recorded>,
    /// One grid per name of [`queries`].
    pub series: BTreeMap<String, Vec<f64>>,
    pub decisions: Vec<RangeSeries>,
    pub weights: Vec<RangeSeries>,
    pub quality: Vec<DataQuality>,
}

/// Fetches the window's history: every query in chunks, `progress(done, total)` per query.
pub async fn fetch(
    prom: &Prometheus,
    t: &Target,
    w: &Window,
    opts: ReadOptions,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<History, Error> {
    let mut h = History::default();
    let raw = recorded::fetch(prom, &t.load_query, w, &mut |d, n| progress("load", d, n)).await?;
    let load = recorded::to_grid(raw, &t.load_query, w, opts)?;
    h.quality.push(load.quality.clone());
    h.load = Some(load);
    for (name, q) in queries(t) {
        let raw = recorded::fetch(prom, &q, w, &mut |d, n| progress(name, d, n)).await?;
        let grid = recorded::to_grid(raw, &q, w, ReadOptions { sum: false, ..opts }).map_err(
            |e| match e {
                Error::EmptyWindow { query, start, end } => Error::Prometheus(format!(
                    "no spillway metrics for ElasticGateway {}/{} between {start} and {end} (`{query}` is empty): was spillway running, scraped by this Prometheus, and leading?",
                    t.namespace, t.name
                )),
                other => other,
            },
        )?;
        if !grid.quality.gaps_bridged.is_empty() {
            h.quality.push(grid.quality.clone());
        }
        h.series.insert(name.into(), grid.values);
    }
    let q = decisions_query(t);
    h.decisions = recorded::fetch(prom, &q, w, &mut |d, n| progress("decisions", d, n)).await?;
    let q = weights_query(t);
    h.weights = recorded::fetch(prom, &q, w, &mut |d, n| progress("weights", d, n)).await?;
    Ok(h)
}

/// The slots at which a counter went up (a drop is a reset: the new value is the increase).
fn slots_with_increase(s: &RangeSeries, w: &Window) -> Vec<usize> {
    let mut out = Vec::new();
    let mut last: Option<f64> = None;
    for (t, v) in &s.values {
        let Ok(x) = v.parse::<f64>() else { continue };
        let increase = match last {
            Some(l) if x >= l => x - l,
            Some(_) => x,
            None => 0.0,
        };
        last = Some(x);
        if increase > 0.5 {
            out.push(((t - w.start) / w.step).round().max(0.0) as usize);
        }
    }
    out
}

/// The observed run: the same [`Summary`] and [`Point`]s as a simulated one, named `observed`.
pub fn observed_run(h: &History, t: &Target, w: &Window, surges: &[Surge]) -> PolicyRun {
    let step = w.step;
    let load: &[f64] = h.load.as_ref().map_or(&[], |l| &l.values);
    let n = load.len();
    let get = |name: &str, i: usize| -> f64 {
        h.series
            .get(name)
            .and_then(|v| v.get(i))
            .copied()
            .unwrap_or(0.0)
    };
    // Reasons of non-hold decisions, by slot.
    let mut reasons: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for s in &h.decisions {
        let label = |k: &str| s.metric.get(k).cloned().unwrap_or_default();
        for i in slots_with_increase(s, w) {
            reasons.entry(i).or_default().push(format!(
                "{} ({})",
                label("action"),
                label("reason")
            ));
        }
    }
    // Weights per slot, ECS then ECI.
    let mut weights: Vec<(Option<f64>, Option<f64>)> = vec![(None, None); n];
    for s in &h.weights {
        let pool = s.metric.get("pool").map(String::as_str);
        for (ts, v) in &s.values {
            let i = ((ts - w.start) / step).round();
            let (Ok(x), true) = (v.parse::<f64>(), i >= 0.0 && (i as usize) < n) else {
                continue;
            };
            match pool {
                Some("ecs") => weights[i as usize].0 = Some(x),
                Some("eci") => weights[i as usize].1 = Some(x),
                _ => {}
            }
        }
    }
    let mut timeline = Vec::with_capacity(n);
    let mut decisions = Vec::new();
    let mut last_short = vec![None; surges.len()];
    let (mut under, mut short_seconds, mut eci_pod_s, mut eci_free_s) = (0.0, 0.0, 0.0, 0.0);
    let (mut pending_s, mut cost_ecs, mut cost_eci) = (0.0, 0.0, 0.0);
    let (mut peak_replicas, mut peak_eci, mut peak_pending) = (0, 0, 0);
    let (mut scale_changes, mut reversals, mut weight_changes, mut under_load) = (0, 0, 0, 0);
    let mut last_scale: Option<(u64, i32)> = None;
    let mut last_weights: Option<(f64, f64)> = None;
    for i in 0..n {
        let tt = (i as f64 * step) as u64;
        let now = i as f64 * step;
        let ready = get("ready", i).round() as i32;
        let ecs = get("ecs", i).round() as i32;
        let eci = get("eci", i).round() as i32;
        let pending = get("pending", i).round() as i32;
        let desired = get("desired", i).round() as i32;
        let (rate_ecs, rate_eci) = (get("cost_ecs", i), get("cost_eci", i));
        let needed = pods_needed(load[i], t.capacity_per_pod_rps);
        if needed > ready {
            under += f64::from(needed - ready) * step;
            short_seconds += step;
            for (k, s) in surges.iter().enumerate() {
                if now >= s.start && now <= s.end {
                    last_short[k] = Some(tt);
                }
            }
        }
        eci_pod_s += f64::from(eci) * step;
        eci_free_s += f64::from(eci).min(get("ecs_free", i).max(0.0)) * step;
        pending_s += f64::from(pending) * step;
        cost_ecs += rate_ecs * step;
        cost_eci += rate_eci * step;
        peak_replicas = peak_replicas.max(ecs + eci + pending);
        peak_eci = peak_eci.max(eci);
        peak_pending = peak_pending.max(pending);
        if i > 0 {
            let before = get("desired", i - 1).round() as i32;
            if before != desired {
                scale_changes += 1;
                let dir = if desired > before { 1 } else { -1 };
                if let Some((at, d)) = last_scale
                    && d != dir
                    && tt.saturating_sub(at) <= REVERSAL_WINDOW_SECONDS
                {
                    reversals += 1;
                }
                last_scale = Some((tt, dir));
                let why: Vec<String> = [i, i + 1]
                    .iter()
                    .flat_map(|k| reasons.get(k).cloned().unwrap_or_default())
                    .collect();
                decisions.push(DecisionLog {
                    t: tt,
                    summary: format!(
                        "replicas {before}→{desired}{}",
                        if why.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", why.join(", "))
                        }
                    ),
                });
            }
        }
        if let (Some(e), Some(v)) = weights[i] {
            if let Some((pe, pv)) = last_weights
                && (pe, pv) != (e, v)
            {
                weight_changes += 1;
                if load[i] > 0.5 * f64::from(ready) * t.capacity_per_pod_rps {
                    under_load += 1;
                }
                decisions.push(DecisionLog {
                    t: tt,
                    summary: format!("affinity weights ECS/ECI {pe}/{pv} → {e}/{v}"),
                });
            }
            last_weights = Some((e, v));
        }
        timeline.push(Point {
            t: tt,
            load_rps: load[i],
            capacity_rps: f64::from(ready) * t.capacity_per_pod_rps,
            desired,
            ready,
            ecs_pods: ecs,
            eci_pods: eci,
            pending_pods: pending,
            cost_rate_ecs_per_hour: rate_ecs * 3600.0,
            cost_rate_eci_per_hour: rate_eci * 3600.0,
            cost_cumulative: cost_ecs + cost_eci,
        });
    }
    let last = timeline.last();
    let summary = Summary {
        eci_capacity: None,
        starts: None,
        events: Vec::new(),
        policy: "observed".into(),
        time_to_capacity_s: surges
            .iter()
            .zip(&last_short)
            .map(|(s, l)| surge_result(s, *l, step))
            .collect(),
        underprovisioned_pod_seconds: under,
        short_seconds,
        peak_replicas,
        peak_eci_pods: peak_eci,
        final_eci_pods: last.map_or(0, |p| p.eci_pods),
        final_replicas: last.map_or(0, |p| p.ecs_pods + p.eci_pods + p.pending_pods),
        eci_pod_seconds: eci_pod_s,
        cost_total: cost_ecs + cost_eci,
        cost_ecs,
        cost_eci,
        currency: t.currency.clone(),
        weight_changes,
        rollouts: weight_changes,
        scale_changes,
        reversals,
        rollouts_under_load: under_load,
        eci_pod_seconds_ecs_free: eci_free_s,
        pending_pod_seconds: pending_s,
        // Recorded history does not tell a swap from a scale: any are in `reversals`.
        swap_changes: 0,
        swaps: Default::default(),
        // A recording has no connection counts.
        connection_resets: 0.0,
        unbalanced_seconds: 0.0,
        unbalanced_spells: 0,
        longest_unbalanced_seconds: 0.0,
        connections_aged_out: 0.0,
        victims: Default::default(),
        peak_pending_pods: peak_pending,
        cost_ecs_fixed: cost_ecs,
    };
    decisions.sort_by_key(|d| d.t);
    PolicyRun {
        summary,
        timeline,
        decisions,
    }
}

/// The notes on the data: the load's, then spillway's metrics' (the same gap in every one of
/// them said once, with the series it was in).
fn notes(h: &History) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut seen: Vec<(String, Vec<&str>)> = Vec::new();
    for (i, q) in h.quality.iter().enumerate() {
        for n in q.notes() {
            if i == 0 {
                out.push(format!("load: {n}"));
                continue;
            }
            let name = q
                .query
                .split(['(', '{'])
                .find(|w| w.starts_with("spillway_"))
                .unwrap_or(q.query.as_str());
            match seen.iter_mut().find(|(note, _)| *note == n) {
                Some((_, names)) if !names.contains(&name) => names.push(name),
                Some(_) => {}
                None => seen.push((n, vec![name])),
            }
        }
    }
    out.extend(
        seen.into_iter()
            .map(|(n, names)| format!("spillway's metrics ({}): {n}", names.join(", "))),
    );
    out
}

/// The whole score: the observed run first, then the simulator's runs on the recorded load
/// (renamed `predicted <policy>`), and every note on the data.
pub fn report(
    h: &History,
    t: &Target,
    w: &Window,
    base: &crate::sim::Scenario,
    observer: &mut dyn crate::sim::drill::Observer,
) -> Result<DrillReport, Error> {
    let load = h
        .load
        .as_ref()
        .ok_or_else(|| Error::Prometheus("no load was fetched".into()))?;
    let mut scenario = recorded::replay_scenario(base, load, &t.load_query);
    scenario.gateway.capacity_per_pod_rps = t.capacity_per_pod_rps;
    let surges = scenario.load.surges();
    let observed = observed_run(h, t, w, &surges);
    // The simulated fleet starts as the real one did.
    if let Some(p) = observed.timeline.first() {
        let live = p.ecs_pods + p.eci_pods + p.pending_pods;
        if live > 0 {
            scenario.gateway.replicas = live.clamp(1, scenario.policy.max_replicas.max(1));
        }
    }
    let errors = scenario.validate();
    if !errors.is_empty() {
        return Err(Error::Window(format!(
            "the scenario for the prediction is invalid:\n{}",
            crate::config::render(&errors)
        )));
    }
    let mut predicted = crate::sim::run(&scenario, observer);
    for run in &mut predicted.runs {
        run.summary.policy = format!("predicted {}", run.summary.policy);
    }
    let mut runs = vec![observed];
    runs.append(&mut predicted.runs);
    Ok(DrillReport {
        scenario: format!("real drill of {}/{}, {}", t.namespace, t.name, w.describe()),
        runs,
        data_notes: notes(h),
        ..predicted
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observed_figures_follow_the_drill_definitions() {
        // 10 steps of 15 s: load 1,000 → 3,000 at step 2; ready capacity catches up at step 5.
        let w = Window::new(0.0, 135.0, 15.0).unwrap();
        let load = vec![
            1000.0, 1000.0, 3000.0, 3000.0, 3000.0, 3000.0, 3000.0, 3000.0, 1000.0, 1000.0,
        ];
        let ready = [2.0, 2.0, 2.0, 2.0, 4.0, 5.0, 5.0, 5.0, 5.0, 5.0];
        let eci = [0.0, 0.0, 0.0, 1.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0];
        let mut h = History {
            load: Some(Recorded {
                window: w,
                values: load.clone(),
                quality: DataQuality::default(),
            }),
            ..History::default()
        };
        h.series.insert("ready".into(), ready.to_vec());
        h.series.insert("ecs".into(), vec![2.0; 10]);
        h.series.insert("eci".into(), eci.to_vec());
        h.series.insert(
            "desired".into(),
            vec![2.0, 2.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0],
        );
        h.series
            .insert("cost_eci".into(), eci.iter().map(|e| e * 0.001).collect());
        h.decisions = vec![RangeSeries {
            metric: [("action", "scale_up"), ("reason", "load")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            values: vec![(15.0, "3".into()), (30.0, "4".into())],
        }];
        let t = Target {
            namespace: "istio-system".into(),
            name: "gw".into(),
            load_query: "q".into(),
            capacity_per_pod_rps: 700.0,
            currency: "CNY".into(),
        };
        let surges = crate::replay::recorded::detect_surges(&load, 15.0, 700.0, 0.0);
        assert_eq!(surges.len(), 1);
        let run = observed_run(&h, &t, &w, &surges);
        let s = &run.summary;
        // Needed 5 from step 2: short 3 pods at steps 2, 3 and 1 pod at step 4.
        assert_eq!(s.underprovisioned_pod_seconds, (3.0 + 3.0 + 1.0) * 15.0);
        assert_eq!(s.short_seconds, 45.0);
        // Surge starts at step 1 (15 s, the last low point); short until step 4 (60 s) + 15.
        assert_eq!(s.time_to_capacity_s[0].seconds, 60.0);
        assert_eq!(s.peak_eci_pods, 3);
        assert_eq!(s.eci_pod_seconds, (1.0 + 3.0 * 6.0) * 15.0);
        assert!((s.cost_eci - 19.0 * 0.015).abs() < 1e-9);
        assert_eq!(s.scale_changes, 1);
        assert_eq!(run.decisions[0].summary, "replicas 2→5: scale_up (load)");
        assert_eq!(run.timeline.len(), 10);
    }

    #[test]
    fn the_same_gap_in_every_metric_is_said_once() {
        let gap = |query: &str| DataQuality {
            query: query.into(),
            series: 1,
            gaps_bridged: vec![("a".into(), "b".into())],
            gap_seconds: 30.0,
            ..DataQuality::default()
        };
        let h = History {
            quality: vec![
                gap("sum(rate(x[1m]))"),
                gap("sum(max by (pool) (spillway_gateway_pods{namespace=\"n\"}))"),
                gap("max(spillway_replicas_desired{namespace=\"n\"})"),
            ],
            ..History::default()
        };
        let n = notes(&h);
        assert_eq!(n.len(), 2, "{n:?}");
        assert!(n[0].starts_with("load: 1 gap(s) bridged"), "{n:?}");
        assert!(
            n[1].starts_with(
                "spillway's metrics (spillway_gateway_pods, spillway_replicas_desired): 1 gap(s)"
            ),
            "{n:?}"
        );
    }
}
