//! What a Canary's status says: Flagger's phase and counters, and conditions both Flagger users and
//! GitOps health checks (Ready, Reconciling, Stalled) read.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::analysis::{HookType, ThresholdRange};
use crate::statistics::{LatencyEvidence, RateEvidence, Verdict};

/// The most check results status.checks holds (the CRD's maxItems).
pub const MAX_STATUS_CHECKS: usize = 32;

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Failed checks in the current analysis.
    #[serde(default)]
    pub failed_checks: i32,
    /// The canary's share of traffic, percent.
    #[serde(default)]
    pub canary_weight: i32,
    /// Checks passed with all traffic on the canary (blue/green, A/B).
    #[serde(default)]
    pub iterations: i32,
    /// Checksums of the ConfigMaps and Secrets the target uses, by `<kind>/<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracked_configs: Option<BTreeMap<String, String>>,
    /// The revision under analysis (or last analysed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_spec: Option<String>,
    /// The revision the primary runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_promoted_spec: Option<String>,
    /// When the phase last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    /// Serin: when the analysis last took a step (ran its checks or moved traffic), so a restart never
    /// takes a step early or twice. Microseconds: a time in whole seconds would let the next step come up to
    /// a second early.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_step_time: Option<MicroTime>,
    /// Serin: since when the canary has been held without progress (not ready, or no data to judge); after
    /// progressDeadlineSeconds of holding, it fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holding_since: Option<MicroTime>,
    /// Serin: the value of the serin.dev/retry annotation last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_retry: Option<String>,
    /// Serin: revisions rolled back, newest last (at most 8), each with the analysis that failed it. One
    /// that comes back (image automation pushing it again, a revert of the revert) is held, not analysed
    /// again, until serin.dev/retry or a change of the analysis.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_FAILED_REVISIONS))]
    pub failed_revisions: Vec<FailedRevision>,
    /// Serin: the last result of each metric check (its value, range and verdict), so the status shows why
    /// the canary advanced, held or was rolled back.
    // Bounded like analysis.metrics, so the CEL rule of thresholdRange inside fits the cost budget. A
    // metric entry can run up to three checks, so the decision keeps the most telling MAX_STATUS_CHECKS.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_STATUS_CHECKS))]
    pub checks: Vec<CheckStatus>,
    /// Serin: what the sequential judge has gathered on each metric compared with the primary
    /// (`compareToPrimary`), for the revision under analysis: kept across steps and controller restarts,
    /// cleared when a new revision starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_STATUS_EVIDENCE))]
    pub evidence: Vec<EvidenceStatus>,
    /// Serin: each webhook's last call, so `kubectl get canary -o yaml` says which gate is closed and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub webhooks: Vec<WebhookStatus>,
    /// Serin: the manual control annotations (serin.dev/promote, abort, pause) last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manual: Option<ManualStatus>,
    /// Serin: the roll forward in git of the last failed revision (spec.writeBack).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_back: Option<super::write_back::WriteBackStatus>,
    /// The Canary generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// The last result of one metric check.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CheckStatus {
    /// The metric's name in the analysis.
    pub name: String,
    /// The value measured (absent when there was none, or it was not finite: see the message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The range the value had to lie in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_range: Option<ThresholdRange>,
    pub verdict: CheckVerdict,
    /// What was measured or what went wrong, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The most metrics compared with the primary that status.evidence holds (as analysis.metrics).
pub const MAX_STATUS_EVIDENCE: usize = 32;
/// The rolled-back revisions status.failedRevisions remembers.
pub const MAX_FAILED_REVISIONS: usize = 8;

/// What the sequential judge knows of one metric, canary against primary (README "Statistical judge").
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EvidenceStatus {
    /// The metric's name in the analysis.
    pub name: String,
    /// The revision judged (status.lastAppliedSpec then).
    pub revision: String,
    /// The start of the first window judged: the analysis' maxDuration runs from here.
    pub since: MicroTime,
    /// The end of the last window counted; the next window starts here, so that every request is counted
    /// once.
    pub window_end: MicroTime,
    pub verdict: Verdict,
    /// The fail e-value: how many times over the canary's bet against "no worse than the primary" has
    /// paid. A regression is proven when it reaches `failAt`.
    pub e_value: f64,
    pub fail_at: f64,
    /// Requests the canary has answered in the windows judged.
    pub canary_requests: u64,
    /// The estimates and their bounds, in words.
    pub message: String,
    /// The state of an error-rate judge (request-success-rate, templates with counts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<RateEvidence>,
    /// The state of a latency judge (request-duration), per histogram bucket edge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencyEvidence>,
}

/// A revision that was rolled back, and a digest of the analysis spec it failed under.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FailedRevision {
    pub revision: String,
    /// SHA-256 (first 16 hex digits) of spec.analysis as it was.
    pub analysis: String,
}

/// The last call of one webhook.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookStatus {
    pub name: String,
    #[serde(rename = "type")]
    pub hook_type: HookType,
    /// Passed: answered 202 or less (a gate is open; a rollback webhook asks for the rollback). Failed:
    /// anything else, or no answer (a gate is closed; a pre-rollout or rollout webhook failed a check).
    pub result: HookResult,
    /// The answer, or why there was none, in words.
    pub message: String,
    pub last_call_time: MicroTime,
}

#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum HookResult {
    #[default]
    Passed,
    Failed,
}

/// The manual control annotations' values Serin last acted on: a value acts once.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ManualStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promote: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<String>,
    /// The analysis is paused (serin.dev/pause): it holds its weight; checks go on.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
}

/// A check's verdict. NoData and Error never pass and never count as a failed check: the canary holds.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum CheckVerdict {
    /// The value lies in the range.
    #[default]
    Passed,
    /// The value lies outside the range: a failed check.
    Failed,
    /// The query ran and returned nothing to judge (no samples, or NaN).
    NoData,
    /// The query could not be run: the metrics server could not be reached or refused it, or the
    /// template could not be rendered.
    Error,
}

/// Flagger's phases.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    Initializing,
    Initialized,
    /// A confirm-rollout gate is closed.
    Waiting,
    Progressing,
    /// A confirm-promotion gate is closed; checks go on.
    WaitingPromotion,
    Promoting,
    Finalising,
    Succeeded,
    Failed,
    Terminating,
    Terminated,
}

impl Phase {
    pub const ALL: [Phase; 11] = [
        Phase::Initializing,
        Phase::Initialized,
        Phase::Waiting,
        Phase::Progressing,
        Phase::WaitingPromotion,
        Phase::Promoting,
        Phase::Finalising,
        Phase::Succeeded,
        Phase::Failed,
        Phase::Terminating,
        Phase::Terminated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Initializing => "Initializing",
            Phase::Initialized => "Initialized",
            Phase::Waiting => "Waiting",
            Phase::Progressing => "Progressing",
            Phase::WaitingPromotion => "WaitingPromotion",
            Phase::Promoting => "Promoting",
            Phase::Finalising => "Finalising",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
            Phase::Terminating => "Terminating",
            Phase::Terminated => "Terminated",
        }
    }

    /// An analysis or promotion is under way.
    pub fn is_running(self) -> bool {
        matches!(
            self,
            Phase::Waiting
                | Phase::Progressing
                | Phase::WaitingPromotion
                | Phase::Promoting
                | Phase::Finalising
        )
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The condition types a Canary carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConditionType {
    /// Flagger's: True when the last revision was promoted; its reason is the phase.
    Promoted,
    /// The Canary is settled and serving its primary (kstatus, Flux and Argo CD health).
    Ready,
    /// Serin is working towards the desired state (kstatus).
    Reconciling,
    /// Serin can't make progress without a change from the user (kstatus).
    Stalled,
    /// Serin: fields the Canary sets that Serin accepts but does not act on yet.
    Unsupported,
    /// Serin: the failed revision's roll forward in git (spec.writeBack) is pushed or applied.
    WrittenBack,
}

impl ConditionType {
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionType::Promoted => "Promoted",
            ConditionType::Ready => "Ready",
            ConditionType::Reconciling => "Reconciling",
            ConditionType::Stalled => "Stalled",
            ConditionType::Unsupported => "Unsupported",
            ConditionType::WrittenBack => "WrittenBack",
        }
    }
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// "True", "False" or "Unknown".
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

#[cfg(test)]
mod step_time_tests {
    use super::*;

    /// The interval between steps is kept to the millisecond: in whole seconds (metav1.Time), a step
    /// taken at 07.9 reads back as 07.0 and the next came up to a second early.
    #[test]
    fn step_and_hold_times_keep_sub_second_precision() {
        let at: k8s_openapi::jiff::Timestamp = "2026-11-24T08:18:07.129333Z".parse().unwrap();
        let status = CanaryStatus {
            last_step_time: Some(MicroTime(at)),
            holding_since: Some(MicroTime(at)),
            ..CanaryStatus::default()
        };
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["lastStepTime"], "2026-11-24T08:18:07.129333Z");
        let back: CanaryStatus = serde_json::from_value(json).unwrap();
        assert_eq!(back.last_step_time, Some(MicroTime(at)));
        // A status written in whole seconds by an earlier Serin still reads.
        let old: CanaryStatus =
            serde_json::from_value(serde_json::json!({"lastStepTime": "2026-11-24T08:18:07Z"}))
                .unwrap();
        assert!(old.last_step_time.is_some());
    }
}
