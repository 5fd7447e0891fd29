//! Two SVG plots: detection of a +1 point error regression against traffic, and false rollbacks of good
//! canaries against traffic (calm, and through a shared incident), one line per judge.

use std::path::Path;

use plotters::prelude::*;

use crate::run::{JUDGES, Outcome};
use crate::world::Scenario;

const COLORS: [RGBColor; 5] = [
    RGBColor(230, 159, 0),
    RGBColor(213, 94, 0),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(0, 114, 178),
];

/// Which outcomes a panel shows.
type Pick<'a> = &'a dyn Fn(&Outcome) -> bool;

/// One panel per (title, pick): P(rollback) against req/s, a line per judge.
fn panels(
    outcomes: &[Outcome],
    path: &Path,
    y_label: &str,
    panels: &[(&str, Pick)],
) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (520 * panels.len() as u32, 400)).into_drawing_area();
    root.fill(&WHITE)?;
    let areas = root.split_evenly((1, panels.len()));
    for (area, (title, pick)) in areas.iter().zip(panels) {
        let mut chart = ChartBuilder::on(area)
            .caption(*title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(48)
            .build_cartesian_2d((1f64..500f64).log_scale(), 0f64..100f64)?;
        chart
            .configure_mesh()
            .x_desc("requests per second")
            .y_desc(y_label)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .draw()?;
        for (judge, color) in JUDGES.iter().zip(COLORS) {
            let mut points: Vec<(f64, f64)> = outcomes
                .iter()
                .filter(|o| o.judge == *judge && pick(o))
                .map(|o| (o.cell.rps, 100.0 * o.rolled_back()))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
                .label(*judge)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                });
            chart.draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 3, color.filled())),
            )?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

pub fn detection(outcomes: &[Outcome], path: &Path) -> anyhow::Result<()> {
    let plus_one = |baseline: f64| {
        move |o: &Outcome| {
            o.cell.scenario == Scenario::Calm
                && o.cell.error_effect == 0.01
                && o.cell.baseline == baseline
        }
    };
    let (low, high) = (plus_one(0.001), plus_one(0.01));
    panels(
        outcomes,
        path,
        "% rolled back",
        &[("errors 0.1% -> 1.1%", &low), ("errors 1% -> 2%", &high)],
    )
}

pub fn false_rollbacks(outcomes: &[Outcome], path: &Path) -> anyhow::Result<()> {
    let good = |scenario: Scenario| {
        move |o: &Outcome| {
            o.cell.scenario == scenario && o.cell.is_good() && o.cell.baseline == 0.01
        }
    };
    let (calm, incident) = (good(Scenario::Calm), good(Scenario::SharedIncident));
    panels(
        outcomes,
        path,
        "% of good canaries rolled back",
        &[
            ("good canary, 1% errors", &calm),
            ("shared incident (+10 pt, 3 min)", &incident),
        ],
    )
}
