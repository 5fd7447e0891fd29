//! A Canary's spec resolved into what the decision core runs: Flagger's defaults applied, the strategy
//! chosen, and what CEL can't check reported with the field's path.

use std::time::Duration;

use crate::api::analysis::{HookType, Webhook};
use crate::api::canary::{
    DEFAULT_INTERVAL, DEFAULT_PROGRESS_DEADLINE_SECONDS, DEFAULT_READY_THRESHOLD, TOTAL_WEIGHT,
};
use crate::api::duration::parse_duration;
use crate::api::{Analysis, CanarySpec, Provider};
use crate::vocabulary::Builtin;

/// What the controller was started with, that a Canary may override.
#[derive(Debug, Clone, PartialEq)]
pub struct ControllerDefaults {
    pub provider: Provider,
    pub min_interval: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub provider: Provider,
    pub strategy: Strategy,
    pub interval: Duration,
    /// Failed checks that roll the canary back (at least 1).
    pub threshold: i32,
    pub progress_deadline: Duration,
    pub skip_analysis: bool,
    /// `analysis.mirror` where the router mirrors, for canary (one mirrored step before the first weight)
    /// and blue/green (mirrored through the iterations); A/B does not mirror, as in Flagger.
    pub mirror: bool,
    pub suspend: bool,
    /// Weight moved back to the primary per interval after promotion; None: all at once.
    pub step_weight_promotion: Option<i32>,
    /// Percent of replicas available for the canary, and the primary, to count as ready.
    pub canary_ready_threshold: i32,
    pub primary_ready_threshold: i32,
    /// The analysis' webhooks, in spec order.
    pub webhooks: Vec<Webhook>,
    /// Metrics judged against the primary by the sequential judge (`compareToPrimary`).
    pub compared_metrics: usize,
    /// How long, from the canary's first judged traffic, the judge may go without proving the canary good
    /// (`analysis.maxDuration`, default 60m): past it the canary is rolled back for insufficient evidence.
    pub max_duration: Duration,
    /// `analysis.promoteWhenProven`: promote once every compared metric has passed, before maxWeight.
    pub promote_when_proven: bool,
}

/// analysis.maxDuration's default: the reference's deadline, which the benchmark's goals are measured at.
pub const DEFAULT_MAX_DURATION: Duration = Duration::from_secs(60 * 60);

#[derive(Debug, Clone, PartialEq)]
pub enum Strategy {
    /// Traffic shifted step by step up to max_weight.
    Canary { steps: Steps, max_weight: i32 },
    /// `iterations` checks with the traffic on the primary, then all of it on the canary for one more.
    BlueGreen { iterations: i32 },
    /// `iterations` checks with the requests that match routed to the canary.
    AbTesting { iterations: i32 },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Steps {
    /// Add this much weight per step.
    By(i32),
    /// Go through these weights in order.
    Through(Vec<i32>),
}

impl Strategy {
    /// The weight after one more passed step from `weight`, at most `max_weight`.
    pub fn next_weight(&self, weight: i32) -> i32 {
        match self {
            Strategy::Canary {
                steps: Steps::By(step),
                max_weight,
            } => (weight + step).min(*max_weight),
            Strategy::Canary {
                steps: Steps::Through(weights),
                max_weight,
            } => weights
                .iter()
                .copied()
                .find(|w| *w > weight)
                .unwrap_or(*max_weight)
                .min(*max_weight),
            Strategy::BlueGreen { .. } | Strategy::AbTesting { .. } => weight,
        }
    }
}

/// How long one call of a webhook may take: its timeout, 10s by default. As Flagger, a value shorter than
/// two characters ("", "5") means the default.
pub fn webhook_timeout(hook: &Webhook) -> Result<Duration, String> {
    match hook.timeout.as_deref() {
        Some(t) if t.len() >= 2 => parse_duration(t).map_err(|e| e.to_string()),
        _ => Ok(DEFAULT_WEBHOOK_TIMEOUT),
    }
}

pub const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// A spec problem CEL can't catch, with the path of the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct SpecProblem {
    pub path: String,
    pub message: String,
}

fn problem(path: &str, message: impl Into<String>) -> SpecProblem {
    SpecProblem {
        path: path.to_string(),
        message: message.into(),
    }
}

impl Settings {
    pub fn resolve(
        spec: &CanarySpec,
        defaults: &ControllerDefaults,
    ) -> Result<Settings, Vec<SpecProblem>> {
        let mut problems = Vec::new();
        let provider = spec.provider.unwrap_or(defaults.provider);
        let (path, analysis) = match (&spec.analysis, &spec.canary_analysis) {
            (Some(a), _) => ("spec.analysis", a.clone()),
            (None, Some(a)) => ("spec.canaryAnalysis", a.clone()),
            (None, None) => ("spec.analysis", Analysis::default()),
        };
        // Flagger: a Canary without an analysis promotes new revisions at once.
        let skip_analysis =
            spec.skip_analysis || (spec.analysis.is_none() && spec.canary_analysis.is_none());

        let interval_text = analysis.interval.as_deref().unwrap_or(DEFAULT_INTERVAL);
        let interval = match parse_duration(interval_text) {
            Ok(d) if d < defaults.min_interval => {
                problems.push(problem(
                    &format!("{path}.interval"),
                    format!(
                        "{interval_text} is below the controller's minimum interval of {:?}",
                        defaults.min_interval
                    ),
                ));
                defaults.min_interval
            }
            Ok(d) => d,
            Err(e) => {
                problems.push(problem(&format!("{path}.interval"), e.to_string()));
                defaults.min_interval
            }
        };

        let iterations = analysis.iterations.unwrap_or(0);
        let has_match = analysis.r#match.as_ref().is_some_and(|m| !m.is_empty());
        let strategy = if iterations > 0 && has_match {
            Strategy::AbTesting { iterations }
        } else if iterations > 0 {
            Strategy::BlueGreen { iterations }
        } else if !analysis.step_weights.is_empty() {
            let last = *analysis.step_weights.last().unwrap_or(&TOTAL_WEIGHT);
            Strategy::Canary {
                steps: Steps::Through(analysis.step_weights.clone()),
                max_weight: last.min(TOTAL_WEIGHT),
            }
        } else if let Some(step) = analysis.step_weight {
            Strategy::Canary {
                steps: Steps::By(step),
                max_weight: analysis.max_weight.unwrap_or(TOTAL_WEIGHT),
            }
        } else {
            if !skip_analysis {
                problems.push(problem(
                    path,
                    "set stepWeight or stepWeights (canary), or iterations (blue/green, A/B)",
                ));
            }
            Strategy::Canary {
                steps: Steps::By(TOTAL_WEIGHT),
                max_weight: TOTAL_WEIGHT,
            }
        };
        if provider == Provider::Kubernetes
            && matches!(strategy, Strategy::Canary { .. })
            && !skip_analysis
        {
            problems.push(problem(
                &format!("{path}.iterations"),
                "provider kubernetes does not shift traffic: it runs blue/green, so set iterations",
            ));
        }
        if has_match && iterations == 0 {
            problems.push(problem(
                &format!("{path}.match"),
                "A/B testing needs iterations as well as match",
            ));
        }
        if let Some(bad) = analysis.metrics.iter().position(|m| {
            m.query.is_none() && m.template_ref.is_none() && Builtin::from_name(&m.name).is_none()
        }) {
            problems.push(problem(
                &format!("{path}.metrics[{bad}]"),
                format!("{:?} is not a built-in check (request-success-rate, request-duration): give it a templateRef", analysis.metrics[bad].name),
            ));
        }

        let mut compared_metrics = 0;
        for (i, m) in analysis.metrics.iter().enumerate() {
            if m.compare_to_primary.is_none() {
                continue;
            }
            compared_metrics += 1;
            let field = format!("{path}.metrics[{i}].compareToPrimary");
            match Builtin::from_name(&m.name) {
                Some(_) => {}
                None if m.template_ref.is_none() => problems.push(problem(
                    &field,
                    "only request-success-rate, request-duration and metrics with a templateRef (to a MetricTemplate with counts) can be compared with the primary; an inline query gives one number, not counts per variant",
                )),
                None => {}
            }
        }
        let max_duration = match analysis.max_duration.as_deref() {
            None => DEFAULT_MAX_DURATION,
            Some(text) => match parse_duration(text) {
                Ok(d) if !d.is_zero() => d,
                Ok(_) => {
                    problems.push(problem(
                        &format!("{path}.maxDuration"),
                        "must be longer than 0s",
                    ));
                    DEFAULT_MAX_DURATION
                }
                Err(e) => {
                    problems.push(problem(&format!("{path}.maxDuration"), e.to_string()));
                    DEFAULT_MAX_DURATION
                }
            },
        };
        if analysis.promote_when_proven && compared_metrics == 0 {
            problems.push(problem(
                &format!("{path}.promoteWhenProven"),
                "promotes once every metric compared with the primary has passed: give at least one metric compareToPrimary",
            ));
        }

        for (i, hook) in analysis.webhooks.iter().enumerate() {
            if let Err(e) = webhook_timeout(hook) {
                problems.push(problem(&format!("{path}.webhooks[{i}].timeout"), e));
            }
            if !(hook.url.starts_with("http://") || hook.url.starts_with("https://")) {
                // The URL itself is not repeated: it may carry a token.
                problems.push(problem(
                    &format!("{path}.webhooks[{i}].url"),
                    "must be an http:// or https:// URL",
                ));
            }
        }

        if spec.service.route_kind == Some(crate::api::canary::RouteKind::GrpcRoute) {
            if !matches!(provider, Provider::GatewayApi | Provider::GatewayApiV1) {
                problems.push(problem(
                    "spec.service.routeKind",
                    format!("GRPCRoute is a Gateway API route: use provider gatewayapi or gatewayapi:v1, not {provider}"),
                ));
            }
            if analysis.session_affinity.is_some() {
                problems.push(problem(
                    &format!("{path}.sessionAffinity"),
                    "session affinity keeps browsers on a revision by cookie; a GRPCRoute has no cookies to keep: remove it or route by HTTPRoute",
                ));
            }
        }
        if spec.autoscaler_ref.is_some()
            && spec.target_ref.kind == Some(crate::api::canary::TargetKind::DaemonSet)
        {
            problems.push(problem(
                "spec.autoscalerRef",
                "a DaemonSet has no replicas to autoscale: remove autoscalerRef",
            ));
        }

        if !problems.is_empty() {
            return Err(problems);
        }
        let mirror = analysis.mirror
            && crate::vocabulary::router_for(provider).is_some_and(|r| r.mirrors())
            && !matches!(strategy, Strategy::AbTesting { .. });
        Ok(Settings {
            provider,
            strategy,
            interval,
            threshold: analysis.threshold.max(1),
            progress_deadline: Duration::from_secs(
                spec.progress_deadline_seconds
                    .unwrap_or(DEFAULT_PROGRESS_DEADLINE_SECONDS)
                    .max(1) as u64,
            ),
            skip_analysis,
            mirror,
            suspend: spec.suspend,
            step_weight_promotion: analysis.step_weight_promotion,
            canary_ready_threshold: analysis
                .canary_ready_threshold
                .unwrap_or(DEFAULT_READY_THRESHOLD),
            primary_ready_threshold: analysis
                .primary_ready_threshold
                .unwrap_or(DEFAULT_READY_THRESHOLD),
            webhooks: analysis.webhooks,
            compared_metrics,
            max_duration,
            promote_when_proven: analysis.promote_when_proven,
        })
    }

    /// Whether the analysis has webhooks of this type.
    pub fn has_hooks(&self, kind: HookType) -> bool {
        self.webhooks.iter().any(|h| h.kind() == kind)
    }

    /// Whether the provider moves traffic between primary and canary (provider kubernetes does not).
    pub fn routes_traffic(&self) -> bool {
        self.provider != Provider::Kubernetes
    }
}
