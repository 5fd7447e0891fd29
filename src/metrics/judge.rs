//! Judging: a check's answer against its range, and a round's verdict from its checks. Pure.
//!
//! Serin's rule on evidence: a value in range passes, a value out of range is a failed check (as in
//! Flagger), and no value — no samples, NaN, a server that can't be reached or refuses the query, a
//! template that can't be rendered — is neither: the canary holds, and says why.

use crate::api::analysis::{Metric, ThresholdRange};
use crate::api::status::EvidenceStatus;
use crate::api::{CheckStatus, CheckVerdict};
use crate::statistics::Verdict;
use crate::vocabulary::{CheckRound, Checks};

use super::builtin::Builtin;
use super::provider::{Answer, NoData};

/// The range a metric's value must lie in: thresholdRange, else the deprecated `threshold` as Flagger reads
/// it (a minimum for request-success-rate, a maximum for everything else).
pub fn effective_range(metric: &Metric) -> ThresholdRange {
    if let Some(range) = &metric.threshold_range {
        return range.clone();
    }
    let threshold = metric.threshold.unwrap_or(0.0);
    match Builtin::from_name(&metric.name) {
        Some(Builtin::RequestSuccessRate) => ThresholdRange {
            min: Some(threshold),
            max: None,
        },
        _ => ThresholdRange {
            min: None,
            max: Some(threshold),
        },
    }
}

/// What is needed to say what was measured.
#[derive(Debug, Clone)]
pub struct Subject<'a> {
    pub name: &'a str,
    /// "%", "ms" or "".
    pub unit: &'a str,
    /// Where traffic should be reaching, for the no-data hint (the canary Service).
    pub canary_service: &'a str,
    /// The rendered query, shown when a template's query finds nothing.
    pub query: Option<&'a str>,
}

fn show(v: f64, unit: &str) -> String {
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.to_string();
    }
    let text = format!("{v:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}{unit}")
}

/// A check whose query answered.
pub fn judge(subject: &Subject, answer: Answer, range: &ThresholdRange) -> CheckStatus {
    let name = subject.name;
    let unit = subject.unit;
    let (value, verdict, message) = match answer {
        Answer::NoData(kind) => {
            let what = match kind {
                NoData::Empty => "",
                NoData::NaN => " (the query returned NaN)",
            };
            let query = subject
                .query
                .map(|q| format!("; query: {q}"))
                .unwrap_or_default();
            let message = format!(
                "no data for {name}{what}: is traffic reaching {}?{query}",
                subject.canary_service
            );
            (None, CheckVerdict::NoData, message)
        }
        Answer::Value(v) => {
            let shown = show(v, unit);
            let below = range.min.filter(|min| v < *min);
            let above = range.max.filter(|max| v > *max);
            let (verdict, message) = match (below, above) {
                (Some(min), _) => (
                    CheckVerdict::Failed,
                    format!("{name} {shown} < {} (min)", show(min, unit)),
                ),
                (_, Some(max)) => (
                    CheckVerdict::Failed,
                    format!("{name} {shown} > {} (max)", show(max, unit)),
                ),
                _ => (
                    CheckVerdict::Passed,
                    format!("{name} {shown} {}", within(range, unit)),
                ),
            };
            (v.is_finite().then_some(v), verdict, message)
        }
    };
    CheckStatus {
        name: name.to_string(),
        value,
        threshold_range: Some(range.clone()),
        verdict,
        message: Some(message),
    }
}

fn within(range: &ThresholdRange, unit: &str) -> String {
    match (range.min, range.max) {
        (Some(min), Some(max)) => format!("within [{}, {}]", show(min, unit), show(max, unit)),
        (Some(min), None) => format!(">= {} (min)", show(min, unit)),
        (None, Some(max)) => format!("<= {} (max)", show(max, unit)),
        (None, None) => "(no range)".to_string(),
    }
}

/// A check that could not be run: its query could not be rendered or answered.
pub fn errored(name: &str, range: ThresholdRange, why: String) -> CheckStatus {
    CheckStatus {
        name: name.to_string(),
        value: None,
        threshold_range: Some(range),
        verdict: CheckVerdict::Error,
        message: Some(format!("{name}: {why}")),
    }
}

/// The round's verdict: a regression the judge proved rolls back; else any failed check fails it; else
/// anything without a value holds it; else a compared metric not yet proven good leaves it unproven.
pub fn verdict(results: Vec<CheckStatus>, evidence: Vec<EvidenceStatus>) -> CheckRound {
    let messages = |wanted: &[CheckVerdict]| {
        results
            .iter()
            .filter(|r| wanted.contains(&r.verdict))
            .filter_map(|r| r.message.clone())
            .collect::<Vec<_>>()
            .join("; ")
    };
    let failed = messages(&[CheckVerdict::Failed]);
    let held = messages(&[CheckVerdict::NoData, CheckVerdict::Error]);
    let judged = |wanted: Verdict| {
        evidence
            .iter()
            .filter(|e| e.verdict == wanted)
            .map(|e| e.message.clone())
            .collect::<Vec<_>>()
            .join("; ")
    };
    let regressed = judged(Verdict::Fail);
    let unproven = judged(Verdict::Hold);
    let verdict = if !regressed.is_empty() {
        Checks::Regressed { message: regressed }
    } else if !failed.is_empty() {
        Checks::Failed { message: failed }
    } else if !held.is_empty() {
        Checks::NoData { message: held }
    } else if !unproven.is_empty() {
        Checks::Unproven { message: unproven }
    } else {
        Checks::Passed
    };
    CheckRound {
        verdict,
        results,
        evidence,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(json: serde_json::Value) -> Metric {
        serde_json::from_value(json).unwrap()
    }

    fn range(min: Option<f64>, max: Option<f64>) -> ThresholdRange {
        ThresholdRange { min, max }
    }

    const SR: Subject = Subject {
        name: "request-success-rate",
        unit: "%",
        canary_service: "podinfo-canary",
        query: None,
    };

    #[test]
    fn threshold_range_wins_over_the_deprecated_threshold() {
        let m = metric(
            serde_json::json!({"name": "request-success-rate", "threshold": 50, "thresholdRange": {"min": 99}}),
        );
        assert_eq!(effective_range(&m), range(Some(99.0), None));
    }

    #[test]
    fn the_deprecated_threshold_reads_as_flagger_reads_it() {
        let sr = metric(serde_json::json!({"name": "request-success-rate", "threshold": 99}));
        assert_eq!(effective_range(&sr), range(Some(99.0), None));
        let d = metric(serde_json::json!({"name": "request-duration", "threshold": 500}));
        assert_eq!(effective_range(&d), range(None, Some(500.0)));
        let t = metric(serde_json::json!({"name": "errors", "threshold": 5}));
        assert_eq!(effective_range(&t), range(None, Some(5.0)));
        // Neither: Flagger's unset threshold is 0, a maximum for templates.
        let none = metric(serde_json::json!({"name": "errors"}));
        assert_eq!(effective_range(&none), range(None, Some(0.0)));
    }

    #[test]
    fn values_in_range_pass_and_the_bounds_are_inclusive() {
        let r = range(Some(99.0), Some(100.0));
        for v in [99.0, 99.5, 100.0] {
            let s = judge(&SR, Answer::Value(v), &r);
            assert_eq!(s.verdict, CheckVerdict::Passed, "{v}");
            assert_eq!(s.value, Some(v));
        }
        let s = judge(&SR, Answer::Value(99.5), &r);
        assert_eq!(
            s.message.as_deref(),
            Some("request-success-rate 99.5% within [99%, 100%]")
        );
    }

    #[test]
    fn values_out_of_range_fail_with_the_value_and_the_bound() {
        let s = judge(&SR, Answer::Value(80.123), &range(Some(99.0), None));
        assert_eq!(s.verdict, CheckVerdict::Failed);
        assert_eq!(s.value, Some(80.123));
        assert_eq!(
            s.message.as_deref(),
            Some("request-success-rate 80.12% < 99% (min)")
        );
        let d = Subject {
            name: "request-duration",
            unit: "ms",
            ..SR
        };
        let s = judge(&d, Answer::Value(912.0), &range(None, Some(500.0)));
        assert_eq!(
            s.message.as_deref(),
            Some("request-duration 912ms > 500ms (max)")
        );
    }

    #[test]
    fn infinities_are_judged_and_shown_but_not_stored_as_values() {
        let d = Subject {
            name: "request-duration",
            unit: "ms",
            ..SR
        };
        let s = judge(&d, Answer::Value(f64::INFINITY), &range(None, Some(500.0)));
        assert_eq!(s.verdict, CheckVerdict::Failed);
        assert_eq!(s.value, None);
        assert_eq!(
            s.message.as_deref(),
            Some("request-duration +Inf > 500ms (max)")
        );
        let s = judge(
            &d,
            Answer::Value(f64::NEG_INFINITY),
            &range(Some(0.0), None),
        );
        assert_eq!(s.verdict, CheckVerdict::Failed);
    }

    #[test]
    fn no_data_holds_and_says_where_traffic_should_be() {
        let s = judge(&SR, Answer::NoData(NoData::Empty), &range(Some(99.0), None));
        assert_eq!(s.verdict, CheckVerdict::NoData);
        assert_eq!(
            s.message.as_deref(),
            Some("no data for request-success-rate: is traffic reaching podinfo-canary?")
        );
        let t = Subject {
            name: "errors",
            unit: "",
            query: Some("sum(x)"),
            ..SR
        };
        let s = judge(&t, Answer::NoData(NoData::NaN), &range(None, Some(1.0)));
        assert_eq!(
            s.message.as_deref(),
            Some(
                "no data for errors (the query returned NaN): is traffic reaching podinfo-canary?; query: sum(x)"
            )
        );
    }

    #[test]
    fn a_failure_outweighs_no_data_and_no_data_outweighs_a_pass() {
        let pass = judge(&SR, Answer::Value(100.0), &range(Some(99.0), None));
        let fail = judge(&SR, Answer::Value(50.0), &range(Some(99.0), None));
        let none = judge(&SR, Answer::NoData(NoData::Empty), &range(Some(99.0), None));
        let err = errored("lat", range(None, Some(1.0)), "Prometheus down".into());
        assert_eq!(err.message.as_deref(), Some("lat: Prometheus down"));

        let all = verdict(
            vec![pass.clone(), none.clone(), fail.clone(), err.clone()],
            vec![],
        );
        assert_eq!(
            all.verdict,
            Checks::Failed {
                message: "request-success-rate 50% < 99% (min)".into()
            }
        );
        assert_eq!(all.results.len(), 4);
        let held = verdict(vec![pass.clone(), none, err], vec![]);
        assert_eq!(
            held.verdict,
            Checks::NoData {
                message: "no data for request-success-rate: is traffic reaching podinfo-canary?; lat: Prometheus down".into()
            }
        );
        assert_eq!(verdict(vec![pass], vec![]).verdict, Checks::Passed);
        assert_eq!(verdict(vec![], vec![]).verdict, Checks::Passed);
    }
}
