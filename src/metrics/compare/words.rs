//! The judge's findings in words, for the status, events and the "insufficient evidence" rollback.

use crate::statistics::sequential::{LatencySummary, RateSummary};
use crate::statistics::{LatencyEvidence, RateEvidence, Settings, Verdict, requests_needed};

fn points(rate: f64) -> String {
    format!("{:.2}%", rate * 100.0)
}

fn signed_points(rate: f64) -> String {
    format!("{:+.2}", rate * 100.0)
}

/// The e-value, readable at any size.
pub fn show_e(e: f64) -> String {
    if e >= 1e6 {
        format!("{e:.1e}")
    } else if e >= 10.0 {
        format!("{e:.0}")
    } else {
        format!("{e:.2}")
    }
}

fn verdict_words(verdict: Verdict, tolerance: f64) -> String {
    match verdict {
        Verdict::Fail => "regression proven".into(),
        Verdict::Pass => {
            let points = tolerance * 100.0;
            let unit = if points == 1.0 { "point" } else { "points" };
            format!("no worse than the primary by more than {points} {unit}: proven")
        }
        Verdict::Hold => "not proven either way yet".into(),
    }
}

pub(super) fn rate_message(
    name: &str,
    s: &RateSummary,
    evidence: &RateEvidence,
    settings: &Settings,
    window_requests: u64,
    window_seconds: f64,
) -> String {
    let mut message = format!(
        "{name}: canary {} bad of {} requests, primary {}; canary − primary in [{}, {}] points; e-value {} of {}: {}",
        points(s.canary_rate),
        s.canary_requests,
        points(s.primary_rate),
        signed_points(s.difference.0),
        signed_points(s.difference.1),
        show_e(s.e_value),
        show_e(s.fail_at),
        verdict_words(s.verdict, settings.tolerance)
    );
    if s.verdict == Verdict::Hold {
        message.push_str(&more_needed(
            evidence.expected,
            settings,
            s.canary_requests,
            window_requests,
            window_seconds,
        ));
    }
    message
}

/// "N canary requests, about M more needed at the current rate (about T min)": how far `seen` canary
/// requests are from what the pass test usually needs at rate `expected`, and how long the last window's
/// pace takes to get there.
fn more_needed(
    expected: f64,
    settings: &Settings,
    seen: u64,
    window_requests: u64,
    window_seconds: f64,
) -> String {
    let needed = requests_needed(expected, settings.tolerance, settings.alpha_pass);
    let more = (needed - seen as f64).max(0.0);
    let per_second = window_requests as f64 / window_seconds.max(1.0);
    let when = if per_second > 0.0 && more > 0.0 {
        let minutes = (more / per_second / 60.0).ceil();
        format!(" (about {minutes:.0} min)")
    } else {
        String::new()
    };
    if more > 0.0 {
        format!("; {seen} canary requests, about {more:.0} more needed at the current rate{when}")
    } else {
        format!(
            "; {seen} canary requests, about as many as a clear answer usually needs: a few more rounds"
        )
    }
}

pub(super) fn latency_message(
    name: &str,
    s: &LatencySummary,
    evidence: &LatencyEvidence,
    settings: &Settings,
    window_requests: u64,
    window_seconds: f64,
) -> String {
    let ticks = evidence.ticks;
    if ticks <= settings.warm_up_ticks {
        return format!(
            "{name}: warming up ({ticks} of the first {} rounds with canary traffic not judged: new pods are often slow at first)",
            settings.warm_up_ticks
        );
    }
    let widest = s
        .widest_edge
        .map(|(edge, (low, high))| {
            format!(
                "; slower than {edge}ms, canary − primary in [{}, {}] points",
                signed_points(low),
                signed_points(high)
            )
        })
        .unwrap_or_default();
    let mut message = format!(
        "{name}: {} canary requests{widest}; e-value {} of {}: {}",
        s.canary_requests,
        show_e(s.e_value),
        show_e(s.fail_at),
        verdict_words(s.verdict, settings.tolerance)
    );
    if s.verdict == Verdict::Hold {
        // The edge furthest from passing decides how much more is needed.
        let expected = s
            .widest_edge
            .and_then(|(edge, _)| evidence.edges.iter().position(|e| *e == edge))
            .and_then(|k| evidence.expected.get(k).copied())
            .unwrap_or(0.5);
        message.push_str(&more_needed(
            expected,
            settings,
            s.canary_requests,
            window_requests,
            window_seconds,
        ));
    }
    message
}
