//! The figures: a TSV of every cell and judge, a table to read, and the goals of the issue against ours.

use std::fmt::Write;

use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};

use crate::run::{JUDGES, Outcome};
use crate::world::{Cell, Scenario};

pub fn label(cell: &Cell) -> String {
    let mut label = format!(
        "{} {} rps, base {}%",
        cell.scenario.name(),
        cell.rps,
        cell.baseline * 100.0
    );
    if cell.error_effect > 0.0 {
        write!(label, ", errors +{} pt", cell.error_effect * 100.0).unwrap();
    }
    if cell.latency_factor != 1.0 {
        write!(label, ", latency x{}", cell.latency_factor).unwrap();
    }
    label
}

fn minutes(m: Option<f64>) -> String {
    m.map_or("-".to_string(), |m| format!("{m}"))
}

pub fn tsv(outcomes: &[Outcome]) -> String {
    let mut out = String::from(
        "scenario\trps\tbaseline\terror_effect\tlatency_factor\tjudge\truns\trolled_back\tpromoted\ttimed_out\tmedian_rollback_min\tmedian_promotion_min\n",
    );
    for o in outcomes {
        let c = &o.cell;
        writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{:.4}\t{:.4}\t{:.4}\t{}\t{}",
            c.scenario.name(),
            c.rps,
            c.baseline,
            c.error_effect,
            c.latency_factor,
            o.judge,
            o.runs(),
            o.rolled_back(),
            o.promoted(),
            o.timed_out(),
            minutes(o.median_rollback()),
            minutes(o.median_promotion()),
        )
        .unwrap();
    }
    out
}

/// One row per cell, one column per judge: rolled back (median minute) / promoted (median minute).
pub fn table(outcomes: &[Outcome]) -> String {
    let mut table = Table::new();
    table.load_preset(UTF8_BORDERS_ONLY);
    let mut header = vec!["cell (good: rollbacks are false)".to_string()];
    header.extend(JUDGES.iter().map(|j| j.to_string()));
    table.set_header(header);
    for chunk in outcomes.chunks(JUDGES.len()) {
        let cell = &chunk[0].cell;
        let mut row = vec![format!(
            "{}{}",
            label(cell),
            if cell.is_good() { " (good)" } else { "" }
        )];
        for o in chunk {
            let mut entry = format!(
                "rb {:.1}% ({}) pr {:.1}% ({})",
                100.0 * o.rolled_back(),
                minutes(o.median_rollback()),
                100.0 * o.promoted(),
                minutes(o.median_promotion())
            );
            if o.timed_out() > 0.0 {
                write!(entry, " to {:.1}%", 100.0 * o.timed_out()).unwrap();
            }
            row.push(entry);
        }
        table.add_row(row);
    }
    format!(
        "rb: rolled back (median minute), pr: promoted (median minute), to: timed out at 60 min\n{table}\n"
    )
}

struct Goal {
    what: &'static str,
    target: f64,
    /// True when the measured value must be at most the target.
    at_most: bool,
    /// The worst cell and its value.
    worst: Option<(String, f64)>,
}

fn ours(outcomes: &[Outcome]) -> impl Iterator<Item = &Outcome> {
    outcomes.iter().filter(|o| o.judge == "ours")
}

fn worst<'a>(
    cells: impl Iterator<Item = &'a Outcome>,
    value: impl Fn(&Outcome) -> Option<f64>,
    at_most: bool,
) -> Option<(String, f64)> {
    cells
        .filter_map(|o| value(o).map(|v| (label(&o.cell), v)))
        .max_by(|a, b| {
            if at_most {
                a.1.total_cmp(&b.1)
            } else {
                b.1.total_cmp(&a.1)
            }
        })
}

pub fn goals(outcomes: &[Outcome]) -> String {
    let calm = |o: &&Outcome| o.cell.scenario == Scenario::Calm;
    let errors = |effect: f64| {
        move |o: &&Outcome| {
            calm(o)
                && o.cell.rps >= 5.0
                && o.cell.error_effect == effect
                && o.cell.latency_factor == 1.0
        }
    };
    let latency = |factor: f64| {
        move |o: &&Outcome| calm(o) && o.cell.rps >= 5.0 && o.cell.latency_factor == factor
    };
    let good_at = |rps: f64, baseline: Option<f64>| {
        move |o: &&Outcome| {
            calm(o)
                && o.cell.is_good()
                && o.cell.rps == rps
                && baseline.is_none_or(|b| o.cell.baseline == b)
        }
    };
    let caught = |o: &Outcome| Some(o.rolled_back());
    let list = [
        Goal {
            what: "false rollbacks, every good cell (incident, gap, overdispersion, warm-up included)",
            target: 0.01,
            at_most: true,
            worst: worst(
                ours(outcomes).filter(|o| o.cell.is_good()),
                |o| Some(o.rolled_back()),
                true,
            ),
        },
        Goal {
            what: "+1 pt errors caught, >= 5 rps, both baselines",
            target: 0.95,
            at_most: false,
            worst: worst(ours(outcomes).filter(errors(0.01)), caught, false),
        },
        Goal {
            what: "+2 pt errors caught, >= 5 rps",
            target: 0.99,
            at_most: false,
            worst: worst(ours(outcomes).filter(errors(0.02)), caught, false),
        },
        Goal {
            what: "+5 pt errors caught, >= 5 rps",
            target: 0.99,
            at_most: false,
            worst: worst(ours(outcomes).filter(errors(0.05)), caught, false),
        },
        Goal {
            what: "latency +10% caught, >= 5 rps",
            target: 0.95,
            at_most: false,
            worst: worst(ours(outcomes).filter(latency(1.1)), caught, false),
        },
        Goal {
            what: "latency +25% caught, >= 5 rps",
            target: 0.99,
            at_most: false,
            worst: worst(ours(outcomes).filter(latency(1.25)), caught, false),
        },
        Goal {
            what: "latency +50% caught, >= 5 rps",
            target: 0.99,
            at_most: false,
            worst: worst(ours(outcomes).filter(latency(1.5)), caught, false),
        },
        Goal {
            what: "median minutes to roll back +5 pt errors at 5 rps",
            target: 3.0,
            at_most: true,
            worst: worst(
                ours(outcomes)
                    .filter(|o| calm(o) && o.cell.rps == 5.0 && o.cell.error_effect == 0.05),
                Outcome::median_rollback,
                true,
            ),
        },
        Goal {
            what: "good canaries promoted within 60 min, 5 rps, 1% base",
            target: 0.93,
            at_most: false,
            worst: worst(
                ours(outcomes).filter(good_at(5.0, Some(0.01))),
                |o| Some(o.promoted()),
                false,
            ),
        },
        Goal {
            what: "good canaries promoted within 60 min, 5 rps, 0.1% base",
            target: 0.98,
            at_most: false,
            worst: worst(
                ours(outcomes).filter(good_at(5.0, Some(0.001))),
                |o| Some(o.promoted()),
                false,
            ),
        },
        Goal {
            what: "good canaries promoted within 60 min, >= 50 rps",
            target: 0.99,
            at_most: false,
            worst: worst(
                ours(outcomes).filter(|o| calm(o) && o.cell.is_good() && o.cell.rps >= 50.0),
                |o| Some(o.promoted()),
                false,
            ),
        },
        Goal {
            what: "median minutes to promote a good canary, >= 50 rps (the schedule: 5)",
            target: 5.0,
            at_most: true,
            worst: worst(
                ours(outcomes).filter(|o| calm(o) && o.cell.is_good() && o.cell.rps >= 50.0),
                Outcome::median_promotion,
                true,
            ),
        },
    ];
    let mut table = Table::new();
    table.load_preset(UTF8_BORDERS_ONLY);
    table.set_header(["goal (ours)", "target", "worst cell", "measured", "met"]);
    for goal in list {
        let (cell, value) = goal
            .worst
            .unwrap_or_else(|| ("no cell".to_string(), f64::NAN));
        let met = if goal.at_most {
            value <= goal.target
        } else {
            value >= goal.target
        };
        let show = |v: f64| {
            if goal.target < 1.0 {
                format!("{:.1}%", 100.0 * v)
            } else {
                format!("{v}")
            }
        };
        let verdict = if met {
            "yes".to_string()
        } else {
            format!("no, by {}", show((value - goal.target).abs()))
        };
        table.add_row([
            goal.what.to_string(),
            format!(
                "{}{}",
                if goal.at_most { "<= " } else { ">= " },
                show(goal.target)
            ),
            cell,
            show(value),
            verdict,
        ]);
    }
    format!("{table}\n")
}
