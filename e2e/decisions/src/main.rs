//! `make bench-decisions`: how well each judge decides, over the reference's grid of traffic, baselines,
//! regressions and troubles; seeded and deterministic. Writes `e2e/decisions/results/` (a TSV, committed
//! so that a change of the judge shows in review, and two SVG plots) and prints the table and the goals.
//!
//! Our judge is compiled from its own source file below, not through the `serin` crate, so that this
//! benchmark builds in release without the controller's dependencies (Kubernetes, TLS) in a few seconds.

#[path = "../../../src/statistics/mod.rs"]
#[allow(dead_code, unused_imports)]
mod statistics;

mod judges;
mod kayenta;
mod plot;
mod report;
mod run;
mod world;

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use world::{Cell, Scenario};

const RATES: [f64; 4] = [1.0, 5.0, 50.0, 500.0];
const BASELINES: [f64; 2] = [0.001, 0.01];

fn grid() -> Vec<Cell> {
    let cell = |scenario, rps, baseline, error_effect, latency_factor| Cell {
        scenario,
        rps,
        baseline,
        error_effect,
        latency_factor,
    };
    let mut cells = Vec::new();
    for baseline in BASELINES {
        for effect in [0.0, 0.005, 0.01, 0.02, 0.05] {
            for rps in RATES {
                cells.push(cell(Scenario::Calm, rps, baseline, effect, 1.0));
            }
        }
    }
    for factor in [1.1, 1.25, 1.5] {
        for rps in RATES {
            cells.push(cell(Scenario::Calm, rps, 0.001, 0.0, factor));
        }
    }
    for scenario in [
        Scenario::SharedIncident,
        Scenario::Overdispersion,
        Scenario::PrometheusGap,
    ] {
        for baseline in BASELINES {
            for rps in RATES {
                cells.push(cell(scenario, rps, baseline, 0.0, 1.0));
            }
        }
    }
    for rps in RATES {
        cells.push(cell(Scenario::WarmUp, rps, 0.001, 0.0, 1.0));
        cells.push(cell(Scenario::NoCanaryTraffic, rps, 0.01, 0.0, 1.0));
    }
    cells
}

fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(2_000);
    let out = std::path::PathBuf::from(
        std::env::var("OUT")
            .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/results").to_string()),
    );
    let started = Instant::now();
    let cells = grid();
    let tasks: Vec<(usize, Cell, &'static str)> = cells
        .iter()
        .enumerate()
        .flat_map(|(i, cell)| run::JUDGES.iter().map(move |judge| (i, *cell, *judge)))
        .collect();
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::new());
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((cell_index, cell, judge)) = tasks.get(i) else {
                        break;
                    };
                    // One seed per cell: every judge faces the same draws as far as their paths agree.
                    let outcome = run::run(*cell, judge, runs, 0x5e51_0000 + *cell_index as u64);
                    results.lock().unwrap().push((i, outcome));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(i, _)| *i);
    let outcomes: Vec<run::Outcome> = results.into_iter().map(|(_, o)| o).collect();
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("decisions.tsv"), report::tsv(&outcomes))?;
    plot::detection(&outcomes, &out.join("detection.svg"))?;
    plot::false_rollbacks(&outcomes, &out.join("false-rollbacks.svg"))?;
    print!("{}", report::table(&outcomes));
    println!();
    print!("{}", report::goals(&outcomes));
    println!(
        "\n{} cells x {} judges x {runs} runs in {:.0} s on {threads} threads; written to {}",
        cells.len(),
        run::JUDGES.len(),
        started.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(())
}
