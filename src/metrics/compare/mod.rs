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

use super::builtin::Family;
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
use crate::vocabulary::Builtin;
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

/// Where a compared metric's counts come from: per variant, the texts of the total and bad queries
/// (rates), or of the bucket query (latency), with the provider that answers them.
enum Queries<'a> {
    Rate {
        canary: (String, String),
        primary: (String, String),
        provider: &'a dyn MetricsProvider,
        settings: ProviderSettings,
    },
    Latency {
        canary: String,
        primary: String,
        ms_per_unit: f64,
        settings: ProviderSettings,
    },
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

impl Analyzer {
    /// One round of a compared metric, `compared` being how many metrics the analysis compares.
    pub(super) async fn compare(
        &self,
        canary: &Canary,
        metric: &Metric,
        source: Source<'_>,
        compared: usize,
        at: f64,
    ) -> Compared {
        let name = metric.name.as_str();
        let status = canary.status.clone().unwrap_or_default();
        let revision = status.last_applied_spec.clone().unwrap_or_default();
        let prior = status
            .evidence
            .iter()
            .find(|e| e.name == name && e.revision == revision)
            .cloned();
        let held = |verdict: CheckVerdict, message: String| CheckStatus {
            name: name.to_string(),
            value: None,
            threshold_range: None,
            verdict,
            message: Some(message),
        };
        let queries = match self.comparison_queries(canary, source) {
            Ok(q) => q,
            Err(why) => {
                return Compared {
                    evidence: prior,
                    held: Some(held(CheckVerdict::Error, format!("{name}: {why}"))),
                };
            }
        };
        let start = match &prior {
            Some(p) => seconds(&p.window_end),
            None => status
                .last_step_time
                .as_ref()
                .map(seconds)
                .unwrap_or(at - 60.0),
        };
        if at - start < MIN_WINDOW_SECONDS {
            return Compared {
                evidence: prior,
                held: None,
            };
        }
        let mut vars = super::variables(canary, metric);
        let target = vars.target.clone();
        let for_variant = |vars: &Variables, variant: Variant, interval: String| Variables {
            interval,
            variant: Some(match variant {
                Variant::Canary => (target.clone(), "canary"),
                Variant::Primary => (format!("{target}-primary"), "primary"),
            }),
            ..vars.clone()
        };
        vars.variant = None;
        let window = window_text(at - start);
        let outcome = match &queries {
            Queries::Rate {
                canary: canary_q,
                primary: primary_q,
                provider,
                settings,
            } => {
                let run = |text: &str, variant: Variant, interval: String, t: f64| {
                    let vars = for_variant(&vars, variant, interval);
                    let text = text.to_string();
                    async move {
                        let query =
                            render(&text, &vars).map_err(|e| format!("spec.counts: {e}"))?;
                        let answer = provider.query(settings, &query, t).await;
                        self.count(&answer);
                        value(answer, &query)
                    }
                };
                let mut evidence = match prior.as_ref().and_then(|p| p.errors.clone()) {
                    Some(e) => e,
                    None => {
                        let before = window_text(BEFORE_SECONDS);
                        let total = run(&primary_q.0, Variant::Primary, before.clone(), start);
                        let bad = run(&primary_q.1, Variant::Primary, before, start);
                        let (total, bad) = futures::join!(total, bad);
                        let (total, bad) = match (total, bad) {
                            (Ok(t), Ok(b)) => (t.unwrap_or(0.0), b.unwrap_or(0.0)),
                            (Err(e), _) | (_, Err(e)) => {
                                return self.unjudged(
                                    prior,
                                    held(
                                        CheckVerdict::Error,
                                        format!("{name}: the primary before the canary: {e}"),
                                    ),
                                );
                            }
                        };
                        let mut evidence = RateEvidence::before(Counts::measured(total, bad));
                        let windows = join_all((0..BEFORE_WINDOWS).map(|j| {
                            let t = start - 60.0 * j as f64;
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
                let (ct, cb, pt, pb) = futures::join!(
                    run(&canary_q.0, Variant::Canary, window.clone(), at),
                    run(&canary_q.1, Variant::Canary, window.clone(), at),
                    run(&primary_q.0, Variant::Primary, window.clone(), at),
                    run(&primary_q.1, Variant::Primary, window.clone(), at),
                );
                let (ct, cb, pt, pb) = match (ct, cb, pt, pb) {
                    (Ok(ct), Ok(cb), Ok(pt), Ok(pb)) => (ct, cb, pt, pb),
                    (Err(e), ..) | (_, Err(e), ..) | (_, _, Err(e), _) | (.., Err(e)) => {
                        return self
                            .unjudged(prior, held(CheckVerdict::Error, format!("{name}: {e}")));
                    }
                };
                let Some(ct) = ct.filter(|t| Counts::measured(*t, 0.0).requests > 0) else {
                    let message = no_canary_requests(name, at - start, canary);
                    return self.unjudged(prior, held(CheckVerdict::NoData, message));
                };
                let tick = counts::error_tick(
                    (ct, cb.unwrap_or(0.0)),
                    (pt.unwrap_or(0.0), pb.unwrap_or(0.0)),
                );
                let settings = judge_settings(metric, compared, false);
                evidence.update(&tick, &settings);
                // The primary's window joins its scatter estimate for the next rounds' bets.
                evidence.observe_windows(&[tick.primary]);
                let summary = evidence.summary(&settings);
                let message = rate_message(
                    name,
                    &summary,
                    &evidence,
                    &settings,
                    tick.canary.requests,
                    at - start,
                );
                Judged {
                    verdict: summary.verdict,
                    e_value: summary.e_value,
                    fail_at: summary.fail_at,
                    canary_requests: summary.canary_requests,
                    message,
                    errors: Some(evidence),
                    latency: None,
                }
            }
            Queries::Latency {
                canary: canary_q,
                primary: primary_q,
                ms_per_unit,
                settings,
            } => {
                let run = |text: &str, variant: Variant, interval: String, t: f64| {
                    let vars = for_variant(&vars, variant, interval);
                    let text = text.to_string();
                    async move {
                        let query = render(&text, &vars).map_err(|e| e.to_string())?;
                        let endpoint = endpoint(settings).map_err(|e| e.to_string())?;
                        let answer = self
                            .providers
                            .prometheus
                            .instant_vector(&endpoint, &query, t)
                            .await;
                        self.count(&answer);
                        answer
                            .map(|samples| Buckets::from_samples(&samples, *ms_per_unit))
                            .map_err(|e| failure(&e, &query))
                    }
                };
                let (c, p) = futures::join!(
                    run(canary_q, Variant::Canary, window.clone(), at),
                    run(primary_q, Variant::Primary, window.clone(), at),
                );
                let (c, p) = match (c, p) {
                    (Ok(c), Ok(p)) => (c, p),
                    (Err(e), _) | (_, Err(e)) => {
                        return self
                            .unjudged(prior, held(CheckVerdict::Error, format!("{name}: {e}")));
                    }
                };
                if Counts::measured(c.total, 0.0).requests == 0 {
                    let message = no_canary_requests(name, at - start, canary);
                    return self.unjudged(prior, held(CheckVerdict::NoData, message));
                }
                let mut evidence = match prior.as_ref().and_then(|p| p.latency.clone()) {
                    Some(e) => e,
                    None => {
                        let before = match run(
                            primary_q,
                            Variant::Primary,
                            window_text(BEFORE_SECONDS),
                            start,
                        )
                        .await
                        {
                            Ok(b) => b,
                            Err(e) => {
                                return self.unjudged(
                                    prior,
                                    held(
                                        CheckVerdict::Error,
                                        format!("{name}: the primary before the canary: {e}"),
                                    ),
                                );
                            }
                        };
                        // A primary without requests before the canary (just created): its edges and
                        // shares come from this first window instead.
                        let before = if before.edges_ms.is_empty() || before.total <= 0.0 {
                            p.clone()
                        } else {
                            before
                        };
                        if before.edges_ms.is_empty() || before.total <= 0.0 {
                            let message = format!(
                                "{name}: the primary answered no requests: no histogram edges to judge latency at"
                            );
                            return self.unjudged(prior, held(CheckVerdict::NoData, message));
                        }
                        let edges: Vec<f64> =
                            before.edges_ms.iter().copied().take(MAX_EDGES).collect();
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
                let settings = judge_settings(metric, compared, true);
                evidence.update(&tick, &settings);
                let summary = evidence.summary(&settings);
                let window_requests = Counts::measured(c.total, 0.0).requests;
                let message = latency_message(
                    name,
                    &summary,
                    &evidence,
                    &settings,
                    window_requests,
                    at - start,
                );
                Judged {
                    verdict: summary.verdict,
                    e_value: summary.e_value,
                    fail_at: summary.fail_at,
                    canary_requests: summary.canary_requests,
                    message,
                    errors: None,
                    latency: Some(evidence),
                }
            }
        };
        let since = prior
            .as_ref()
            .map(|p| p.since.clone())
            .unwrap_or_else(|| micro_time(start));
        Compared {
            evidence: Some(EvidenceStatus {
                name: name.to_string(),
                revision,
                since,
                window_end: micro_time(at),
                verdict: outcome.verdict,
                // JSON has no infinity: an e-value past any bar is shown as 1e300.
                e_value: outcome.e_value.min(1e300),
                fail_at: outcome.fail_at,
                canary_requests: outcome.canary_requests,
                message: outcome.message,
                errors: outcome.errors,
                latency: outcome.latency,
            }),
            held: None,
        }
    }

    fn unjudged(&self, prior: Option<EvidenceStatus>, held: CheckStatus) -> Compared {
        Compared {
            evidence: prior,
            held: Some(held),
        }
    }

    /// The per-variant queries of a compared metric, or why it has none.
    fn comparison_queries<'a>(
        &'a self,
        canary: &Canary,
        source: Source<'_>,
    ) -> Result<Queries<'a>, String> {
        match source {
            Source::Builtin(check) => {
                let provider = canary.spec.provider.unwrap_or(self.default_provider);
                let family = Family::of(provider).map_err(|e| e.to_string())?;
                let settings = ProviderSettings {
                    address: self.canary_server(canary),
                    ..ProviderSettings::default()
                };
                match check {
                    Builtin::RequestSuccessRate => Ok(Queries::Rate {
                        canary: (
                            counts::requests_query(family, Variant::Canary),
                            counts::bad_query(family, Variant::Canary),
                        ),
                        primary: (
                            counts::requests_query(family, Variant::Primary),
                            counts::bad_query(family, Variant::Primary),
                        ),
                        provider: &self.providers.prometheus,
                        settings,
                    }),
                    Builtin::RequestDuration => {
                        let (canary_q, ms_per_unit) = counts::buckets_query(family, Variant::Canary)
                            .ok_or_else(|| format!("{provider}'s telemetry has no latency histogram to compare"))?;
                        let (primary_q, _) = counts::buckets_query(family, Variant::Primary)
                            .ok_or_else(|| format!("{provider}'s telemetry has no latency histogram to compare"))?;
                        Ok(Queries::Latency {
                            canary: canary_q,
                            primary: primary_q,
                            ms_per_unit,
                            settings,
                        })
                    }
                }
            }
            Source::Template(r) => {
                let (template, provider, settings, origin) = self.template(canary, r)?;
                let counts = template.spec.counts.clone().ok_or_else(|| {
                    format!("{origin} has no spec.counts: compareToPrimary needs its total and bad queries, run once per variant")
                })?;
                Ok(Queries::Rate {
                    canary: (counts.total.clone(), counts.bad.clone()),
                    primary: (counts.total, counts.bad),
                    provider,
                    settings,
                })
            }
            Source::Query(_) => Err(
                "an inline query gives one number, not counts per variant: compare with a templateRef to a MetricTemplate with counts".into(),
            ),
        }
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

/// Why a round added nothing: the canary answered no requests in the window.
fn no_canary_requests(name: &str, window_seconds: f64, canary: &Canary) -> String {
    format!(
        "no canary requests for {name} in the last {}: nothing to judge; is traffic reaching {}?",
        window_text(window_seconds),
        crate::routing::ServiceNames::of(canary).canary
    )
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

mod words;
pub use words::show_e;

#[cfg(test)]
mod tests;
