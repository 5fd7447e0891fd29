//! The backtest in words: a summary table of what each judge decided and when, then each judge's ticks.

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{ContentArrangement, Table};
use k8s_openapi::jiff::Timestamp;

use super::replay::{Ending, TickRow};
use super::{JudgeReplay, Report};
use crate::api::CheckVerdict;
use crate::statistics::Verdict;

/// Seconds since the epoch as RFC 3339, to the second.
fn time(at: f64) -> String {
    Timestamp::from_second(at.round() as i64)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| at.to_string())
}

/// Seconds as "4m05s".
fn elapsed(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m{:02}s", s / 3600, s % 3600 / 60, s % 60)
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

fn ending(e: Ending) -> &'static str {
    match e {
        Ending::Promoted => "promoted",
        Ending::RolledBack => "rolled back",
        Ending::Undecided => "undecided",
        Ending::Invalid => "invalid spec",
    }
}

fn new_table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(160)
        .set_header(header.to_vec());
    t
}

/// The whole report: the summary, then each judge's metrics and ticks.
pub fn render_table(report: &Report) -> String {
    let mut out = format!(
        "Canary {}, from {} to {} ({} queries)\n",
        report.canary,
        time(report.from),
        time(report.to),
        report.queries
    );
    let mut summary = new_table(&["judge", "decision", "after", "weight", "why"]);
    for r in &report.replays {
        summary.add_row(vec![
            r.judge.title().to_string(),
            ending(r.replay.ending).to_string(),
            elapsed(r.replay.at - report.from),
            r.replay.weight.to_string(),
            r.replay.message.clone(),
        ]);
    }
    out.push_str(&summary.to_string());
    out.push('\n');
    for r in &report.replays {
        out.push_str(&timeline(r, report.from));
    }
    out
}

/// One judge: how it checks each metric, and a row per tick that ran the checks or changed the phase.
fn timeline(r: &JudgeReplay, from: f64) -> String {
    let mut out = format!("\n{}:\n", r.judge.title());
    for m in &r.metrics {
        out.push_str(&format!("  {m}\n"));
    }
    let mut t = new_table(&["after", "phase", "weight", "checks"]);
    for tick in &r.replay.ticks {
        t.add_row(vec![
            elapsed(tick.at - from),
            format!("{:?}", tick.phase),
            tick.weight.to_string(),
            checks(tick),
        ]);
    }
    out.push_str(&t.to_string());
    out.push('\n');
    out
}

/// A tick's checks, one line each: a fixed check's value and verdict, a compared metric's e-value.
fn checks(tick: &TickRow) -> String {
    let mut lines: Vec<String> = tick
        .checks
        .iter()
        .map(|c| {
            let verdict = match c.verdict {
                CheckVerdict::Passed => "passed",
                CheckVerdict::Failed => "FAILED",
                CheckVerdict::NoData => "no data",
                CheckVerdict::Error => "error",
            };
            match &c.message {
                Some(m) => format!("{verdict}: {m}"),
                None => format!("{}: {verdict}", c.name),
            }
        })
        .collect();
    lines.extend(tick.evidence.iter().map(|e| {
        let verdict = match e.verdict {
            Verdict::Fail => "regression proven",
            Verdict::Pass => "proven within the tolerance",
            Verdict::Hold => "not proven yet",
        };
        format!(
            "{}: e-value {} of {}, {} canary requests: {verdict}",
            e.name,
            crate::metrics::compare::show_e(e.e_value),
            crate::metrics::compare::show_e(e.fail_at),
            e.canary_requests
        )
    }));
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elapsed_reads_as_minutes_and_seconds() {
        assert_eq!(elapsed(0.0), "0m00s");
        assert_eq!(elapsed(245.4), "4m05s");
        assert_eq!(elapsed(3725.0), "1h02m05s");
    }
}
