//! A Canary's analysis: how traffic moves to a new revision, what is checked at each step, and who hears
//! about it. Flagger v1beta1's fields and defaults.

use std::collections::BTreeMap;

use kube::KubeSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::canary::CrossNamespaceRef;
use super::schema::any_object_list;

/// Go-style durations as Flagger reads them ("30s", "1m", "1h30m", "500ms"). `[.]`, not `\.`: the pattern goes
/// into CEL string literals, where `\.` is not a valid escape.
pub const DURATION_PATTERN: &str = "^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$";

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.maxWeight) || !has(self.stepWeight) || self.maxWeight >= self.stepWeight").message("maxWeight must not be below stepWeight"))]
pub struct Analysis {
    /// Time between checks (default 60s); at least the controller's minimum interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Blue/green (without `match`) or A/B (with `match`): checks to pass with all traffic on the canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0").message("iterations must not be negative"))]
    pub iterations: Option<i32>,
    /// Mirror traffic to the canary for one step before shifting any.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mirror: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 100").message("mirrorWeight must be between 0 and 100"))]
    pub mirror_weight: Option<i32>,
    /// The canary's weight at which it is promoted (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 100").message("maxWeight must be between 1 and 100"))]
    pub max_weight: Option<i32>,
    /// Weight added to the canary at each passed check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 100").message("stepWeight must be between 1 and 100"))]
    pub step_weight: Option<i32>,
    /// The canary's weights, step by step; the last is the weight at which it is promoted.
    // Lists are bounded so the API server's CEL cost estimate of the rules inside them fits its budget.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    #[x_kube(
        validation = Rule::new("self.all(w, w >= 1 && w <= 100)").message("every stepWeights entry must be between 1 and 100"),
        validation = Rule::new("self.isSorted() && self.all(w, self.indexOf(w) == self.lastIndexOf(w))").message("stepWeights must be strictly increasing")
    )]
    pub step_weights: Vec<i32>,
    /// Weight moved back to the primary per interval during promotion (default: all at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 100").message("stepWeightPromotion must be between 1 and 100"))]
    pub step_weight_promotion: Option<i32>,
    /// Failed checks after which the canary is rolled back (0 or absent means 1).
    #[serde(default)]
    #[x_kube(validation = Rule::new("self >= 0").message("threshold must not be negative"))]
    pub threshold: i32,
    /// Percent of the primary's replicas that must be available for it to count as ready (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 100").message("primaryReadyThreshold is a percentage, 0 to 100"))]
    pub primary_ready_threshold: Option<i32>,
    /// Percent of the canary's replicas that must be available for it to count as ready (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 100").message("canaryReadyThreshold is a percentage, 0 to 100"))]
    pub canary_ready_threshold: Option<i32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub alerts: Vec<Alert>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub metrics: Vec<Metric>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub webhooks: Vec<Webhook>,
    /// A/B: requests that go to the canary (Istio HTTPMatchRequest: headers, cookies via the cookie header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_object_list")]
    pub r#match: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity: Option<SessionAffinity>,
    /// Serin: how long metrics compared with the primary may hold a canary at its last step without
    /// proving it good (default 60m); past it the canary is rolled back for insufficient evidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration: Option<String>,
    /// Serin: promote as soon as every metric compared with the primary has passed, before maxWeight
    /// (fast at high traffic). Off by default: the steps run to maxWeight as in Flagger.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub promote_when_proven: bool,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Metric {
    /// A built-in check (request-success-rate, request-duration) or a name for a templated one.
    #[x_kube(validation = Rule::new("self != ''").message("a metric needs a name"))]
    pub name: String,
    /// The query's range (default 1m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Deprecated, read when thresholdRange is absent: the minimum for request-success-rate, the maximum for
    /// every other check. Use thresholdRange.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_range: Option<ThresholdRange>,
    /// Deprecated inline query. Use templateRef.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_ref: Option<CrossNamespaceRef>,
    /// Values for `{{ variables.<key> }}` in the template.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub template_variables: BTreeMap<String, String>,
    /// Serin: judge this metric canary against primary with the sequential judge (README "Statistical
    /// judge"): rolled back once a regression is proven, promoted only once "no worse than the tolerance" is
    /// proven, held while neither is. For request-success-rate, request-duration, and templates with
    /// `counts`. A thresholdRange given beside it is still checked as in Flagger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compare_to_primary: Option<PrimaryComparison>,
}

/// How a metric is judged against the primary. Every field has a default; `compareToPrimary: {}` is enough.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PrimaryComparison {
    /// How much worse than the primary the canary may be and still be promoted, in percentage points:
    /// of requests failing (request-success-rate and templates; default 1), or of requests slower than
    /// any of the histogram's bucket edges (request-duration; default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0.0 && self < 100.0").message("compareToPrimary.tolerance is in percentage points: above 0 and below 100"))]
    pub tolerance: Option<f64>,
    /// The chance of rolling back a canary that is no worse than its primary, however long the analysis
    /// runs and however often it looks (default 0.01), shared between the metrics compared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0.0 && self < 1.0").message("compareToPrimary.falseRollbackRate is a probability: above 0 and below 1"))]
    pub false_rollback_rate: Option<f64>,
    /// The chance of promoting a canary worse than the tolerance (default 0.05).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0.0 && self < 1.0").message("compareToPrimary.falsePromotionRate is a probability: above 0 and below 1"))]
    pub false_promotion_rate: Option<f64>,
    /// The odds ratio of bad requests, canary over primary, that is not yet a regression (default 1: any
    /// proven increase is one). 1.2 lets very busy services ignore tiny, real differences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1.0 && self <= 100.0").message("compareToPrimary.failMargin is an odds ratio from 1 to 100"))]
    pub fail_margin: Option<f64>,
}

/// The range a check's value must lie in; either bound may be absent.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("!has(self.min) || !has(self.max) || self.min <= self.max").message("thresholdRange min must not be greater than max"))]
pub struct ThresholdRange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub name: String,
    /// info (default: every event), warn (warnings and errors), error (errors only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    pub provider_ref: CrossNamespaceRef,
}

#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord,
)]
pub enum Severity {
    /// Flagger's CRD admits the empty string, meaning info.
    #[serde(rename = "")]
    Unset,
    #[serde(rename = "info")]
    Info,
    #[serde(rename = "warn")]
    Warn,
    #[serde(rename = "error")]
    Error,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    /// When it runs; absent or "" means rollout, as in Flagger.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub hook_type: Option<HookType>,
    pub name: String,
    pub url: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mute_alert: bool,
    /// Default 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<i32>,
    #[serde(
        default,
        rename = "disableTLS",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub disable_tls: bool,
}

impl Webhook {
    /// When the webhook runs, with Flagger's default.
    pub fn kind(&self) -> HookType {
        match self.hook_type {
            None | Some(HookType::Unset) => HookType::Rollout,
            Some(kind) => kind,
        }
    }
}

#[derive(
    schemars::JsonSchema,
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
)]
#[serde(rename_all = "kebab-case")]
pub enum HookType {
    /// Flagger's CRD admits the empty string, meaning rollout.
    #[serde(rename = "")]
    Unset,
    ConfirmRollout,
    PreRollout,
    Rollout,
    ConfirmTrafficIncrease,
    ConfirmPromotion,
    PostRollout,
    Rollback,
    Event,
}

impl HookType {
    /// Whether a list of webhooks of this type stops after a call that passed or not, as Flagger runs
    /// them: gates and checks at the first failure, rollback webhooks at the first pass (it decides),
    /// post-rollout and event webhooks never.
    pub fn stops_after(self, passed: bool) -> bool {
        match self {
            HookType::Rollback => passed,
            HookType::PostRollout | HookType::Event => false,
            _ => !passed,
        }
    }

    /// The name Flagger's manifests give the type.
    pub fn as_str(self) -> &'static str {
        match self {
            HookType::Unset | HookType::Rollout => "rollout",
            HookType::ConfirmRollout => "confirm-rollout",
            HookType::PreRollout => "pre-rollout",
            HookType::ConfirmTrafficIncrease => "confirm-traffic-increase",
            HookType::ConfirmPromotion => "confirm-promotion",
            HookType::PostRollout => "post-rollout",
            HookType::Rollback => "rollback",
            HookType::Event => "event",
        }
    }
}

impl std::fmt::Display for HookType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Severity {
    /// Whether an alert entry of this severity receives an alert of severity `alert`: info receives
    /// everything, warn receives warnings and errors, error only errors. An entry without a severity is
    /// info, as Flagger documents (Flagger v1.44 itself sends such an entry nothing).
    pub fn receives(self, alert: Severity) -> bool {
        let rank = |s: Severity| match s {
            Severity::Unset | Severity::Info => 0,
            Severity::Warn => 1,
            Severity::Error => 2,
        };
        rank(alert) >= rank(self)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Unset | Severity::Info => "info",
            Severity::Warn => "warn",
            Severity::Error => "error",
        }
    }
}

/// Session affinity (Flagger's): users who reached the canary stay on it while it has weight.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.cookieName)").message("sessionAffinity.cookieName is required"))]
pub struct SessionAffinity {
    /// The cookie the canary's answers set; requests carrying it go to the canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9!#$%&*+.^_`|~-]+$')").message("cookieName must be a cookie name (letters, digits and !#$%&*+.^_`|~-)"))]
    pub cookie_name: Option<String>,
    /// The cookie the primary's answers set for an analysis interval; requests carrying it stay on the
    /// primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9!#$%&*+.^_`|~-]+$')").message("primaryCookieName must be a cookie name (letters, digits and !#$%&*+.^_`|~-)"))]
    pub primary_cookie_name: Option<String>,
    /// Seconds the canary's cookie lasts (default 86400, a day).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("maxAge must be at least 1 second"))]
    pub max_age: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub same_site: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub http_only: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub secure: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partitioned: bool,
}
