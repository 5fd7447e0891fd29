//! The decision core: given what was observed of a Canary and its objects, what happens next. Pure: no I/O,
//! no clock, no randomness, so every tick can be tested without a server.
//!
//! The controller observes (watch caches), calls [`decide`], and acts on the [`Decision`]: it brings the
//! objects to the desired state, writes the status once, records the events, and requeues. When the
//! analysis needs evidence, [`decide`] answers [`Outcome::RunChecks`] first; the controller runs the checks
//! and calls it again with their result.

mod conditions;
pub mod settings;
pub mod support;
#[cfg(test)]
mod tests;
mod tick;

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::api::{CanarySpec, CanaryStatus};
pub use crate::vocabulary::{CheckRound, Checks, Readiness, Traffic, Weights};
pub use conditions::{ActFailure, after_failed_act, blocked, set as set_condition};
pub use settings::{ControllerDefaults, Settings, SpecProblem, Steps, Strategy};
pub use tick::decide;

/// What the controller saw this tick.
#[derive(Debug, Clone)]
pub struct Observed {
    pub now: Timestamp,
    pub generation: i64,
    pub spec: CanarySpec,
    /// The status as last written (default for a new Canary).
    pub status: CanaryStatus,
    pub defaults: ControllerDefaults,
    pub target: Target,
    pub primary: Primary,
    /// The traffic the route sends now, read back as the API server stores it; None when there is no
    /// route (yet), or the provider routes nothing.
    pub routed: Option<Traffic>,
    /// The checks' results, when the controller has run them this tick.
    pub checks: Option<CheckRound>,
    /// The serin.dev/retry annotation: a new value retries a failed revision.
    pub retry: Option<String>,
}

/// The target workload: its revision (a hash of its pod template and the configs it uses) and readiness.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub revision: String,
    pub ready: Readiness,
    /// The ConfigMaps and Secrets the target's pods need that do not exist ("ConfigMap shop/app"): while
    /// any is missing the revision is not known, so nothing moves.
    pub missing_configs: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Primary {
    /// The revision the primary was last given; None while it does not exist (an existing primary without
    /// Serin's revision annotation reads as an empty revision, which never equals the target's).
    pub revision: Option<String>,
    pub ready: Readiness,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    RunChecks,
    Act(Box<Decision>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The status to write; the controller skips the write when it is unchanged.
    pub status: CanaryStatus,
    pub desired: Desired,
    pub events: Vec<Event>,
    pub requeue_after: Duration,
}

/// The state the controller brings the objects to this tick. None of it is done when the spec is invalid.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// Create the Services and route if they are missing (never overwriting what exists).
    pub bootstrap: bool,
    /// Create the missing primary from the target, which holds this revision: at initialization, or
    /// rebuilding it from the last promoted revision. Never from a revision not analysed.
    pub create_primary: Option<String>,
    /// Create the primary's copies of the target's configs where missing: only while the target runs the
    /// primary's revision, so the copies hold what the primary was built with.
    pub primary_configs: bool,
    /// Copy the target's pod template and configs into the primary, at this revision.
    pub promote_primary: Option<String>,
    pub canary_scale: Scale,
    /// None: leave the route alone (no route, or the provider does not shift traffic).
    pub traffic: Option<Traffic>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Leave the target's replicas as they are.
    Keep,
    /// Run the canary (the target) at its desired replicas.
    Up,
    Zero,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub reason: Reason,
    pub warning: bool,
    pub message: String,
}

/// Each event has a reason of its own, so `kubectl get events --field-selector reason=...` finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    InvalidSpec,
    NotSupported,
    Initializing,
    Initialized,
    NewRevision,
    Retrying,
    CanaryReady,
    Holding,
    WeightAdvanced,
    IterationAdvanced,
    CheckFailed,
    Promoting,
    RoutingToPrimary,
    Promoted,
    RolledBack,
    PrimaryMissing,
    ConfigNotFound,
    ProgressDeadlineExceeded,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidSpec => "InvalidSpec",
            Reason::NotSupported => "NotSupported",
            Reason::Initializing => "Initializing",
            Reason::Initialized => "Initialized",
            Reason::NewRevision => "NewRevision",
            Reason::Retrying => "Retrying",
            Reason::CanaryReady => "CanaryReady",
            Reason::Holding => "Holding",
            Reason::WeightAdvanced => "WeightAdvanced",
            Reason::IterationAdvanced => "IterationAdvanced",
            Reason::CheckFailed => "CheckFailed",
            Reason::Promoting => "Promoting",
            Reason::RoutingToPrimary => "RoutingToPrimary",
            Reason::Promoted => "Promoted",
            Reason::RolledBack => "RolledBack",
            Reason::PrimaryMissing => "PrimaryMissing",
            Reason::ConfigNotFound => "ConfigNotFound",
            Reason::ProgressDeadlineExceeded => "ProgressDeadlineExceeded",
        }
    }
}
