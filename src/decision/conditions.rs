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
