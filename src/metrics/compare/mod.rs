//! The sequential judge at work (`compareToPrimary`): each round, one window of counts per variant — from
//! the end of the last window counted to the round's time, so that windows tile and every request is
//! counted once — is added to the evidence the status keeps, and the judge says Fail, Pass or Hold.
//!
//! The first round also reads the primary before the canary had traffic: its rates over 10 minutes (what
//! the tolerance is relative to) and, for error rates, its ten 1-minute windows (how much its errors
//! scatter beyond independent requests). A query that fails, or a canary without requests in the window,
//! adds nothing: the window is counted by the next round that has an answer.

use futures::future::join_all;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

use super::counts::{self, Buckets, Variant};
use super::prometheus::endpoint;
use super::provider::{Answer, MetricsProvider, ProviderSettings, QueryError};
use super::template::{Variables, render};
use super::{Analyzer, Source, failure};
use crate::api::analysis::Metric;
use crate::api::status::EvidenceStatus;
use crate::api::{Canary, CheckStatus, CheckVerdict};
use crate::statistics::sequential::MAX_EDGES;
use crate::statistics::{Counts, LatencyEvidence, RateEvidence, Settings, Verdict};
use crate::workload::primary::primary_name;
use queries::Queries;
use words::{latency_message, rate_message};

/// How long before the canary's first window the primary is read for its expected rates.
const BEFORE_SECONDS: f64 = 600.0;
/// The primary's windows before the canary, for the scatter of its errors (1 minute each).
const BEFORE_WINDOWS: usize = 10;
/// A window shorter than this waits for the next round (a round run twice in quick succession).
const MIN_WINDOW_SECONDS: f64 = 1.0;

/// One compared metric after a round: the evidence (new, updated, or as it was when the round could not
/// add to it), and a check when the round could not judge (no data, or a query that failed), which holds.
pub struct Compared {
    pub evidence: Option<EvidenceStatus>,
    pub held: Option<CheckStatus>,
}

/// The judge's settings for one metric: the reference's defaults, overridden by compareToPrimary.
pub fn judge_settings(metric: &Metric, compared: usize, latency: bool) -> Settings {
    let base = if latency {
        Settings::latency(compared)
    } else {
        Settings::errors(compared)
    };
    let c = metric.compare_to_primary.clone().unwrap_or_default();
    let probability =
        |v: Option<f64>, default: f64| v.filter(|v| *v > 0.0 && *v < 1.0).unwrap_or(default);
    Settings {
        alpha_fail: probability(c.false_rollback_rate, base.alpha_fail),
        alpha_pass: probability(c.false_promotion_rate, base.alpha_pass),
        tolerance: probability(c.tolerance.map(|t| t / 100.0), base.tolerance),
        fail_margin: c
            .fail_margin
            .filter(|m| (1.0..=100.0).contains(m))
            .unwrap_or(base.fail_margin),
        ..base
    }
}

/// A window's length as Prometheus reads it.
fn window_text(seconds: f64) -> String {
    format!("{}ms", (seconds * 1000.0).round().max(1.0) as u64)
}

/// What every query of one round of a compared metric shares.
struct Round<'a> {
    name: &'a str,
    canary: &'a Canary,
    /// The metric's variables; each query sets the variant's.
    vars: Variables,
    /// The evidence before this round, for this revision.
    prior: Option<EvidenceStatus>,
    /// The window judged: (start, at].
    start: f64,
    at: f64,
}

impl Round<'_> {
    /// `text` rendered for `variant`, with `{{ interval }}` = `interval`.
    fn render(&self, text: &str, variant: Variant, interval: String) -> Result<String, String> {
        let workload = match variant {
            Variant::Canary => (self.vars.target.clone(), "canary"),
            Variant::Primary => (primary_name(&self.vars.target), "primary"),
        };
        let vars = Variables {
            interval,
            variant: Some(workload),
            ..self.vars.clone()
        };
        render(text, &vars).map_err(|e| e.to_string())
    }

    /// The window judged, as Prometheus reads it.
    fn window(&self) -> String {
        window_text(self.at - self.start)
    }

    /// The round adds nothing and the canary holds, saying why; the evidence stays as it was.
    fn hold(&self, verdict: CheckVerdict, message: String) -> Compared {
        Compared {
            evidence: self.prior.clone(),
            held: Some(CheckStatus {
                name: self.name.to_string(),
                value: None,
                threshold_range: None,
                verdict,
                message: Some(message),
            }),
        }
    }

    fn failed_before(&self, e: &str) -> Compared {
        self.hold(
            CheckVerdict::Error,
            format!("{}: the primary before the canary: {e}", self.name),
        )
    }

    fn failed(&self, e: &str) -> Compared {
        self.hold(CheckVerdict::Error, format!("{}: {e}", self.name))
    }

    /// The canary answered no requests in the window.
    fn no_canary_requests(&self) -> Compared {
        let message = format!(
            "no canary requests for {} in the last {}: nothing to judge; is traffic reaching {}?",
            self.name,
            self.window(),
            crate::routing::ServiceNames::of(self.canary).canary
        );
        self.hold(CheckVerdict::NoData, message)
    }
}

impl Analyzer {
    /// Whether `metric` can be compared with the primary, as `compareToPrimary` would compare it: a
    /// built-in check on a provider whose telemetry the built-in queries read, or a template with counts.
    pub fn can_compare(&self, canary: &Canary, metric: &Metric) -> bool {
        self.comparison_queries(canary, super::compared_source(metric))
            .is_ok()
    }

    /// One round of a compared metric, `compared` being how many metrics the analysis compares.
    pub(super) async fn compare(
        &self,
        canary: &Canary,
        metric: &Metric,
        source: Source<'_>,
        compared: usize,
        at: f64,
    ) -> Compared {
        let status = canary.status.as_ref();
        let revision = status
            .and_then(|s| s.last_applied_spec.clone())
            .unwrap_or_default();
        let prior = status
            .into_iter()
            .flat_map(|s| &s.evidence)
            .find(|e| e.name == metric.name && e.revision == revision)
            .cloned();
        let start = match &prior {
            Some(p) => seconds(&p.window_end),
            None => status
                .and_then(|s| s.last_step_time.as_ref())
                .map(seconds)
                .unwrap_or(at - 60.0),
        };
        let round = Round {
            name: &metric.name,
            canary,
            vars: super::variables(canary, metric),
            prior,
            start,
            at,
        };
        let queries = match self.comparison_queries(canary, source) {
            Ok(q) => q,
            Err(why) => return round.failed(&why),
        };
        if at - start < MIN_WINDOW_SECONDS {
            return Compared {
                evidence: round.prior,
                held: None,
            };
        }
        let judged = match &queries {
            Queries::Rate {
                canary,
                primary,
                provider,
                settings,
            } => {
                let queries = (canary, primary, *provider, settings);
                let settings = judge_settings(metric, compared, false);
                self.judge_rate(&round, queries, &settings).await
            }
            Queries::Latency {
                canary,
                primary,
                ms_per_unit,
                settings: provider_settings,
            } => {
                let settings = judge_settings(metric, compared, true);
                let queries = (canary.as_str(), primary.as_str(), *ms_per_unit);
                self.judge_latency(&round, queries, provider_settings, &settings)
                    .await
            }
        };
        let judged = match judged {
            Ok(j) => j,
            Err(held) => return held,
        };
        let since = round
            .prior
            .as_ref()
            .map(|p| p.since.clone())
            .unwrap_or_else(|| micro_time(start));
        Compared {
            evidence: Some(EvidenceStatus {
                name: metric.name.clone(),
                revision,
                since,
                window_end: micro_time(at),
                verdict: judged.verdict,
                // JSON has no infinity: an e-value past any bar is shown as 1e300.
                e_value: judged.e_value.min(1e300),
                fail_at: judged.fail_at,
                canary_requests: judged.canary_requests,
                message: judged.message,
                errors: judged.errors,
                latency: judged.latency,
            }),
            held: None,
        }
    }

    /// One round of an error rate: the first also reads the primary before the canary (its rate, and its
    /// 1-minute windows for the scatter of its errors).
    async fn judge_rate(
        &self,
        round: &Round<'_>,
        (canary_q, primary_q, provider, provider_settings): (
            &(String, String),
            &(String, String),
            &dyn MetricsProvider,
            &ProviderSettings,
        ),
        settings: &Settings,
    ) -> Result<Judged, Compared> {
        let run = |text: &str, variant: Variant, interval: String, t: f64| {
            let query = round.render(text, variant, interval);
            async move {
                let query = query.map_err(|e| format!("spec.counts: {e}"))?;
                let answer = provider.query(provider_settings, &query, t).await;
                self.count(&answer);
                value(answer, &query)
            }
        };
        let mut evidence = match round.prior.as_ref().and_then(|p| p.errors.clone()) {
            Some(e) => e,
            None => {
                let before = window_text(BEFORE_SECONDS);
                let (total, bad) = futures::join!(
                    run(&primary_q.0, Variant::Primary, before.clone(), round.start),
                    run(&primary_q.1, Variant::Primary, before, round.start),
                );
                let (total, bad) = match (total, bad) {
                    (Ok(t), Ok(b)) => (t.unwrap_or(0.0), b.unwrap_or(0.0)),
                    (Err(e), _) | (_, Err(e)) => return Err(round.failed_before(&e)),
                };
                let mut evidence = RateEvidence::before(Counts::measured(total, bad));
                let windows = join_all((0..BEFORE_WINDOWS).map(|j| {
                    let t = round.start - 60.0 * j as f64;
                    let total = run(&primary_q.0, Variant::Primary, "1m".into(), t);
                    let bad = run(&primary_q.1, Variant::Primary, "1m".into(), t);
                    async move { futures::join!(total, bad) }
                }))
                .await;
                let windows: Vec<Counts> = windows
                    .into_iter()
                    .filter_map(|(t, b)| match (t, b) {
                        (Ok(Some(t)), Ok(b)) => Some(Counts::measured(t, b.unwrap_or(0.0))),
                        _ => None,
                    })
                    .collect();
                evidence.observe_windows(&windows);
                evidence
            }
        };
        let window = round.window();
        let at = round.at;
        let (ct, cb, pt, pb) = futures::join!(
            run(&canary_q.0, Variant::Canary, window.clone(), at),
            run(&canary_q.1, Variant::Canary, window.clone(), at),
            run(&primary_q.0, Variant::Primary, window.clone(), at),
            run(&primary_q.1, Variant::Primary, window, at),
        );
        let (ct, cb, pt, pb) = match (ct, cb, pt, pb) {
            (Ok(ct), Ok(cb), Ok(pt), Ok(pb)) => (ct, cb, pt, pb),
            (Err(e), ..) | (_, Err(e), ..) | (_, _, Err(e), _) | (.., Err(e)) => {
                return Err(round.failed(&e));
            }
        };
        let Some(ct) = ct.filter(|t| Counts::measured(*t, 0.0).requests > 0) else {
            return Err(round.no_canary_requests());
        };
        let tick = counts::error_tick(
            (ct, cb.unwrap_or(0.0)),
            (pt.unwrap_or(0.0), pb.unwrap_or(0.0)),
        );
        // The scatter of the primary's errors is learned before the canary only: across the rounds, a rate
        // both variants share may change (an incident downstream), which is not scatter, and the bets on
        // the canary's share of the bad requests are immune to it.
        evidence.update(&tick, settings);
        let summary = evidence.summary(settings);
        let message = rate_message(
            round.name,
            &summary,
            &evidence,
            settings,
            tick.canary.requests,
            at - round.start,
        );
        Ok(Judged {
            verdict: summary.verdict,
            e_value: summary.e_value,
            fail_at: summary.fail_at,
            canary_requests: summary.canary_requests,
            message,
            errors: Some(evidence),
            latency: None,
        })
    }

    /// One round of a latency histogram: the first also reads the primary's buckets before the canary (the
    /// edges judged, and the share slower than each), or this window's when it had no requests before.
    async fn judge_latency(
        &self,
        round: &Round<'_>,
        (canary_q, primary_q, ms_per_unit): (&str, &str, f64),
        provider_settings: &ProviderSettings,
        settings: &Settings,
    ) -> Result<Judged, Compared> {
        let run = |text: &str, variant: Variant, interval: String, t: f64| {
            let query = round.render(text, variant, interval);
            async move {
                let query = query?;
                let endpoint = endpoint(provider_settings).map_err(|e| e.to_string())?;
                let answer = self
                    .providers
                    .prometheus
                    .instant_vector(&endpoint, &query, t)
                    .await;
                self.count(&answer);
                answer
                    .map(|samples| Buckets::from_samples(&samples, ms_per_unit))
                    .map_err(|e| failure(&e, &query))
            }
        };
        let window = round.window();
        let (c, p) = futures::join!(
            run(canary_q, Variant::Canary, window.clone(), round.at),
            run(primary_q, Variant::Primary, window, round.at),
        );
        let (c, p) = match (c, p) {
            (Ok(c), Ok(p)) => (c, p),
            (Err(e), _) | (_, Err(e)) => return Err(round.failed(&e)),
        };
        let window_requests = Counts::measured(c.total, 0.0).requests;
        if window_requests == 0 {
            return Err(round.no_canary_requests());
        }
        let mut evidence = match round.prior.as_ref().and_then(|p| p.latency.clone()) {
            Some(e) => e,
            None => {
                let before = run(
                    primary_q,
                    Variant::Primary,
                    window_text(BEFORE_SECONDS),
                    round.start,
                )
                .await
                .map_err(|e| round.failed_before(&e))?;
                // A primary without requests before the canary (just created): its edges and shares
                // come from this first window instead.
                let answered = |b: &Buckets| !b.edges_ms.is_empty() && b.total > 0.0;
                let before = if answered(&before) { before } else { p.clone() };
                if !answered(&before) {
                    let message = format!(
                        "{}: the primary answered no requests: no histogram edges to judge latency at",
                        round.name
                    );
                    return Err(round.hold(CheckVerdict::NoData, message));
                }
                let edges: Vec<f64> = before.edges_ms.iter().copied().take(MAX_EDGES).collect();
                let expected = before
                    .at_or_below
                    .iter()
                    .take(MAX_EDGES)
                    .map(|below| ((before.total - below) / before.total).clamp(0.0, 1.0))
                    .collect();
                LatencyEvidence::new(edges, expected)
            }
        };
        let tick = counts::latency_tick(&evidence.edges, &c, &p);
        evidence.update(&tick, settings);
        let summary = evidence.summary(settings);
        let message = latency_message(
            round.name,
            &summary,
            &evidence,
            settings,
            window_requests,
            round.at - round.start,
        );
        Ok(Judged {
            verdict: summary.verdict,
            e_value: summary.e_value,
            fail_at: summary.fail_at,
            canary_requests: summary.canary_requests,
            message,
            errors: None,
            latency: Some(evidence),
        })
    }
}

/// What a round made of a compared metric.
struct Judged {
    verdict: Verdict,
    e_value: f64,
    fail_at: f64,
    canary_requests: u64,
    message: String,
    errors: Option<RateEvidence>,
    latency: Option<LatencyEvidence>,
}

/// A query's single number: None when it found nothing (no series), an error when it failed.
fn value(answer: Result<Answer, QueryError>, query: &str) -> Result<Option<f64>, String> {
    match answer {
        Ok(Answer::Value(v)) if v.is_finite() => Ok(Some(v)),
        Ok(_) => Ok(None),
        Err(e) => Err(failure(&e, query)),
    }
}

fn seconds(t: &MicroTime) -> f64 {
    t.0.as_millisecond() as f64 / 1000.0
}

fn micro_time(seconds: f64) -> MicroTime {
    let micros = (seconds * 1e6).round() as i64;
    MicroTime(
        k8s_openapi::jiff::Timestamp::from_microsecond(micros)
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
}

mod queries;
mod words;
pub use words::show_e;

#[cfg(test)]
mod tests;
