//! The drill chart: one row per policy; load vs serving capacity, pods on ECS and ECI stacked,
//! and cumulative cost, sharing the time axis.

use plotters::prelude::*;

use super::drill::DrillReport;

const ROW_HEIGHT: u32 = 260;
const WIDTH: u32 = 1500;
const ECS_COLOR: RGBColor = RGBColor(46, 125, 50);
const ECI_COLOR: RGBColor = RGBColor(239, 108, 0);
const LOAD_COLOR: RGBColor = RGBColor(25, 25, 25);
const CAPACITY_COLOR: RGBColor = RGBColor(30, 100, 200);
const COST_COLOR: RGBColor = RGBColor(140, 40, 140);

/// Renders the chart as SVG text.
pub fn svg(report: &DrillReport) -> Result<String, String> {
    let mut out = String::new();
    {
        let rows = report.runs.len().max(1) as u32;
        let root =
            SVGBackend::with_string(&mut out, (WIDTH, ROW_HEIGHT * rows + 40)).into_drawing_area();
        draw(report, &root).map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

fn draw(report: &DrillReport, root: &Area<'_>) -> Result<(), Box<dyn std::error::Error>> {
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(40);
    title.titled(
        &format!("spillway drill: {} (seed {})", report.scenario, report.seed),
        ("sans-serif", 20).into_font(),
    )?;
    let rows = body.split_evenly((report.runs.len().max(1), 1));
    let t_max = report.duration_s.max(1) as f64 / 60.0;
    let load_max = report
        .runs
        .iter()
        .flat_map(|r| r.timeline.iter().map(|p| p.load_rps.max(p.capacity_rps)))
        .fold(1.0, f64::max)
        * 1.05;
    let pods_max = report
        .runs
        .iter()
        .flat_map(|r| {
            r.timeline
                .iter()
                .map(|p| p.ecs_pods + p.eci_pods + p.pending_pods)
        })
        .max()
        .unwrap_or(1)
        .max(1) as f64
        * 1.1;
    let cost_max = report
        .runs
        .iter()
        .flat_map(|r| r.timeline.last().map(|p| p.cost_cumulative))
        .fold(1e-9, f64::max)
        * 1.1;
    // Tick labels as a person reads them: whole minutes, requests and pods; money to the cent
    // only when the amounts are small.
    let whole = |v: &f64| format!("{v:.0}");
    let money = |v: &f64| {
        if cost_max >= 10.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.2}")
        }
    };
    for (run, row) in report.runs.iter().zip(rows.iter()) {
        let s = &run.summary;
        let cols = row.split_evenly((1, 3));
        let name = s.policy.as_str();
        let tl = &run.timeline;

        let mut c = ChartBuilder::on(&cols[0])
            .caption(
                format!("{name}: load vs serving capacity (rps)"),
                ("sans-serif", 14),
            )
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..t_max, 0.0..load_max)?;
        c.configure_mesh()
            .x_desc("minutes")
            .x_label_formatter(&whole)
            .y_label_formatter(&whole)
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        c.draw_series(LineSeries::new(
            tl.iter().map(|p| (p.t as f64 / 60.0, p.capacity_rps)),
            CAPACITY_COLOR.stroke_width(2),
        ))?
        .label("ready capacity")
        .legend(|(x, y)| {
            PathElement::new(vec![(x, y), (x + 16, y)], CAPACITY_COLOR.stroke_width(2))
        });
        c.draw_series(LineSeries::new(
            tl.iter().map(|p| (p.t as f64 / 60.0, p.load_rps)),
            LOAD_COLOR.stroke_width(1),
        ))?
        .label("load")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], LOAD_COLOR));
        c.configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;

        let mut c = ChartBuilder::on(&cols[1])
            .caption(
                format!(
                    "{name}: pods (peak ECI {}, final ECI {})",
                    s.peak_eci_pods, s.final_eci_pods
                ),
                ("sans-serif", 14),
            )
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(40)
            .build_cartesian_2d(0.0..t_max, 0.0..pods_max)?;
        c.configure_mesh()
            .x_desc("minutes")
            .x_label_formatter(&whole)
            .y_label_formatter(&whole)
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        c.draw_series(AreaSeries::new(
            tl.iter()
                .map(|p| (p.t as f64 / 60.0, f64::from(p.ecs_pods + p.eci_pods))),
            0.0,
            ECI_COLOR.mix(0.7),
        ))?
        .label("ECI")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 16, y + 5)], ECI_COLOR.filled()));
        c.draw_series(AreaSeries::new(
            tl.iter()
                .map(|p| (p.t as f64 / 60.0, f64::from(p.ecs_pods))),
            0.0,
            ECS_COLOR.mix(0.8),
        ))?
        .label("ECS")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 16, y + 5)], ECS_COLOR.filled()));
        c.configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;

        let mut c = ChartBuilder::on(&cols[2])
            .caption(
                format!("{name}: cumulative cost {:.2} {}", s.cost_total, s.currency),
                ("sans-serif", 14),
            )
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..t_max, 0.0..cost_max)?;
        c.configure_mesh()
            .x_desc("minutes")
            .x_label_formatter(&whole)
            .y_label_formatter(&money)
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        c.draw_series(LineSeries::new(
            tl.iter().map(|p| (p.t as f64 / 60.0, p.cost_cumulative)),
            COST_COLOR.stroke_width(2),
        ))?;
    }
    Ok(())
}
