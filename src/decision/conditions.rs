//! Conditions kept in step with the phase: Flagger's Promoted, and Ready / Reconciling / Stalled as
//! kstatus (Flux), Argo CD and `kubectl wait --for=condition=...` read them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::api::{CanaryStatus, Condition, ConditionType, Phase};

/// Sets a condition; its transition time moves only when its status does.
pub fn set(
    status: &mut CanaryStatus,
    kind: ConditionType,
    value: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
    generation: i64,
) {
    let kind = kind.as_str();
    let i = match status.conditions.iter().position(|c| c.type_ == kind) {
        Some(i) => i,
        None => {
            status.conditions.push(Condition {
                type_: kind.to_string(),
                ..Condition::default()
            });
            status.conditions.len() - 1
        }
    };
    let c = &mut status.conditions[i];
    let changed = c.status != value
        || c.reason.as_deref() != Some(reason)
        || c.message.as_deref() != Some(message);
    if c.status != value {
        c.last_transition_time = Some(Time(now));
    }
    if changed {
        c.last_update_time = Some(Time(now));
    }
    c.status = value.to_string();
    c.reason = Some(reason.to_string());
    c.message = Some(message.to_string());
    c.observed_generation = Some(generation);
}

pub fn remove(status: &mut CanaryStatus, kind: &str) {
    status.conditions.retain(|c| c.type_ != kind);
}

/// The conditions that follow from a phase, with `message` saying what is happening.
pub fn for_phase(
    status: &mut CanaryStatus,
    phase: Phase,
    message: &str,
    now: Timestamp,
    generation: i64,
) {
    use ConditionType::*;
    let reason = phase.as_str();
    let (promoted, ready, reconciling, stalled) = match phase {
        Phase::Initializing => ("Unknown", "False", "True", "False"),
        Phase::Initialized | Phase::Succeeded => ("True", "True", "False", "False"),
        Phase::Waiting
        | Phase::Progressing
        | Phase::WaitingPromotion
        | Phase::Promoting
        | Phase::Finalising => ("Unknown", "False", "True", "False"),
        Phase::Failed => ("False", "False", "False", "True"),
        Phase::Terminating | Phase::Terminated => ("Unknown", "False", "True", "False"),
    };
    set(status, Promoted, promoted, reason, message, now, generation);
    set(status, Ready, ready, reason, message, now, generation);
    set(
        status,
        Reconciling,
        reconciling,
        reason,
        message,
        now,
        generation,
    );
    set(status, Stalled, stalled, reason, message, now, generation);
}

/// Why the controller could not act on a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActFailure {
    /// The API server could not be reached, timed out, was busy or conflicted: the next try may pass.
    Transient,
    /// An object Serin would write exists and is not the Canary's.
    NotOwned,
    /// Another field manager owns a field Serin sets.
    FieldConflict,
    /// The spec can't be turned into objects (a router or workload refused it).
    InvalidSpec,
    /// The API server refused the write for good (forbidden, invalid).
    Rejected,
}

impl ActFailure {
    pub fn reason(self) -> &'static str {
        match self {
            ActFailure::Transient => "APIError",
            ActFailure::NotOwned => "ObjectNotOwned",
            ActFailure::FieldConflict => "FieldConflict",
            ActFailure::InvalidSpec => "InvalidSpec",
            ActFailure::Rejected => "APIRejected",
        }
    }
}

/// The status after an act failed: nothing moved, so the old status stays, and says why unless the failure
/// is transient. A transient error changes no condition: GitOps health (Ready) does not flap on a blip of
/// the API server; the error is logged, and the next try comes with backoff.
pub fn after_failed_act(
    mut status: CanaryStatus,
    failure: ActFailure,
    message: &str,
    now: Timestamp,
    generation: i64,
) -> CanaryStatus {
    if failure == ActFailure::Transient {
        return status;
    }
    not_ready(
        &mut status,
        failure.reason(),
        true,
        message,
        now,
        generation,
    );
    status
}

/// Ready False, and Stalled as `stalled` says, both for `reason`.
fn not_ready(
    status: &mut CanaryStatus,
    reason: &str,
    stalled: bool,
    message: &str,
    now: Timestamp,
    generation: i64,
) {
    set(
        status,
        ConditionType::Ready,
        "False",
        reason,
        message,
        now,
        generation,
    );
    let s = if stalled { "True" } else { "False" };
    set(
        status,
        ConditionType::Stalled,
        s,
        reason,
        message,
        now,
        generation,
    );
}

/// The status of a Canary that can't be observed yet: its target is missing (it may come: not stalled),
/// or its target can't be used (stalled until its spec changes).
pub fn blocked(
    mut status: CanaryStatus,
    reason: &str,
    stalled: bool,
    message: &str,
    now: Timestamp,
    generation: i64,
) -> CanaryStatus {
    not_ready(&mut status, reason, stalled, message, now, generation);
    status.observed_generation = Some(generation);
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settled() -> CanaryStatus {
        let mut s = CanaryStatus::default();
        for_phase(&mut s, Phase::Succeeded, "done", Timestamp::UNIX_EPOCH, 1);
        s
    }

    /// Defect 11: a blip of the API server does not flip Ready (GitOps health would flap).
    #[test]
    fn a_transient_api_error_changes_no_condition() {
        let s = settled();
        let after = after_failed_act(
            s.clone(),
            ActFailure::Transient,
            "connection refused",
            Timestamp::UNIX_EPOCH,
            1,
        );
        assert_eq!(after, s);
        let after = after_failed_act(
            s,
            ActFailure::Rejected,
            "forbidden",
            Timestamp::UNIX_EPOCH,
            1,
        );
        let ready = after
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_deref()),
            ("False", Some("APIRejected"))
        );
    }
}
