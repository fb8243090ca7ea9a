//! One self-contained HTML page for a drill report: the figures, the chart (inline SVG), the
//! notes on the data and the decisions with their reasons. Nothing is loaded from elsewhere, so
//! the page can be attached to a post-drill review as it is.

use std::fmt::Write as _;

use crate::sim::drill::DrillReport;

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Decisions listed per run, at most.
pub const MAX_DECISIONS: usize = 300;

/// The page.
pub fn page(report: &DrillReport) -> Result<String, String> {
    let chart = crate::sim::chart::svg(report)?;
    // The SVG element alone (plotters writes no XML prolog, but be safe).
    let chart = chart
        .find("<svg")
        .map_or(chart.as_str(), |i| &chart[i..])
        .to_string();
    let mut h = String::new();
    let title = format!("spillway drill report: {}", report.scenario);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\n<style>\
body{{font-family:sans-serif;margin:24px;color:#222}}table{{border-collapse:collapse;margin:12px 0}}\
td,th{{border:1px solid #bbb;padding:4px 8px;text-align:right}}th{{background:#eee}}\
td:first-child,th:first-child{{text-align:left}}.chart svg{{max-width:100%;height:auto}}\
.notes li{{color:#8a4b00}}.decisions td{{text-align:left;font-family:monospace;font-size:12px}}\
</style></head><body>\n<h1>{}</h1>\n<p>{} s, seed {}, {} rps per pod.</p>\n",
        esc(&title),
        esc(&title),
        report.duration_s,
        report.seed,
        report.capacity_per_pod_rps
    );
    if let Some(start) = report.start_unix {
        let _ = writeln!(
            h,
            "<p>From {} to {} (UTC); times below are minutes:seconds from the start and the clock time.</p>",
            esc(&crate::clock::rfc3339(start)),
            esc(&crate::clock::rfc3339(start + report.duration_s as f64))
        );
    }
    if report.data_notes.is_empty() {
        h.push_str("<p>The recorded data was whole: nothing bridged or corrected.</p>\n");
    } else {
        h.push_str("<h2>What was done to the data</h2>\n<ul class=\"notes\">\n");
        for n in &report.data_notes {
            let _ = writeln!(h, "<li>{}</li>", esc(n));
        }
        h.push_str("</ul>\n");
    }
    h.push_str("<h2>Figures</h2>\n<table id=\"figures\"><tr><th>run</th><th>time to capacity per surge</th><th>under-provisioned pod·s</th><th>short s</th><th>peak pods</th><th>peak ECI</th><th>ECI pod·s</th><th>ECI pod·s while ECS free</th><th>spend ECI</th><th>spend total</th><th>scale changes</th><th>weight changes</th></tr>\n");
    for run in &report.runs {
        let s = &run.summary;
        let ttc = if s.time_to_capacity_s.is_empty() {
            "no surge".to_string()
        } else {
            s.time_to_capacity_s
                .iter()
                .map(|r| format!("{}: {:.0} s", r.surge, r.seconds))
                .collect::<Vec<_>>()
                .join("<br>")
        };
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{:.0}</td><td>{:.0}</td><td>{}</td><td>{}</td><td>{:.0}</td><td>{:.0}</td><td>{:.2} {cur}</td><td>{:.2} {cur}</td><td>{}</td><td>{}</td></tr>",
            esc(&s.policy),
            esc(&ttc).replace("&lt;br&gt;", "<br>"),
            s.underprovisioned_pod_seconds,
            s.short_seconds,
            s.peak_replicas,
            s.peak_eci_pods,
            s.eci_pod_seconds,
            s.eci_pod_seconds_ecs_free,
            s.cost_eci,
            s.cost_total,
            s.scale_changes,
            s.weight_changes,
            cur = esc(&s.currency)
        );
    }
    h.push_str("</table>\n<h2>Chart</h2>\n<div class=\"chart\">\n");
    h.push_str(&chart);
    h.push_str("\n</div>\n<h2>Decisions and their reasons</h2>\n");
    for run in &report.runs {
        let _ = writeln!(
            h,
            "<h3>{} ({} changes)</h3>\n<table class=\"decisions\"><tr><th>t</th><th>decision</th></tr>",
            esc(&run.summary.policy),
            run.decisions.len()
        );
        for d in run.decisions.iter().take(MAX_DECISIONS) {
            let clock = report.start_unix.map_or(String::new(), |s| {
                let at = crate::clock::rfc3339(s + d.t as f64);
                format!(" ({})", at.get(11..19).unwrap_or(&at))
            });
            let _ = writeln!(
                h,
                "<tr><td>{}:{:02}{}</td><td>{}</td></tr>",
                d.t / 60,
                d.t % 60,
                esc(&clock),
                esc(&d.summary)
            );
        }
        if run.decisions.len() > MAX_DECISIONS {
            let _ = writeln!(
                h,
                "<tr><td></td><td>… {} more in report.json</td></tr>",
                run.decisions.len() - MAX_DECISIONS
            );
        }
        h.push_str("</table>\n");
    }
    h.push_str("</body></html>\n");
    Ok(h)
}

/// Writes `report.html` beside the drill's other outputs; returns its path.
pub fn write(report: &DrillReport, dir: &std::path::Path) -> std::io::Result<std::path::PathBuf> {
    let path = dir.join("report.html");
    std::fs::write(&path, page(report).map_err(std::io::Error::other)?)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_self_contained_and_escaped() {
        let s = crate::sim::Scenario {
            duration_seconds: 300,
            policies: vec![crate::sim::PolicyKind::Spillway],
            name: "a <b> & c".into(),
            ..Default::default()
        };
        let mut r = crate::sim::run(&s, &mut crate::sim::drill::Quiet);
        r.data_notes = vec!["1 gap(s) bridged <here>".into()];
        r.start_unix = Some(1_795_165_200.0);
        let p = page(&r).unwrap();
        assert!(p.contains("<svg"));
        assert!(p.contains("a &lt;b&gt; &amp; c"));
        assert!(p.contains("bridged &lt;here&gt;"));
        assert!(p.contains("<table id=\"figures\">"));
        assert!(p.contains("From 2026-11-20T09:00:00Z to 2026-11-20T09:05:00Z"));
        for external in ["src=\"http", "href=\"http", "<script", "<link"] {
            assert!(!p.contains(external), "{external}");
        }
    }
}
