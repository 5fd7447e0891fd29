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

use crate::api::{CanarySpec, CanaryStatus, CheckStatus};
pub use conditions::set as set_condition;
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
    /// The weights in the route, read back; None when the route does not exist (yet).
    pub weights: Option<Weights>,
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
}

#[derive(Debug, Clone, PartialEq)]
pub struct Primary {
    /// The revision the primary was last given; None while it does not exist.
    pub revision: Option<String>,
    pub ready: Readiness,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// Not ready, and why (e.g. "1 of 3 updated replicas available").
    NotReady(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Weights {
    pub primary: i32,
    pub canary: i32,
}

impl Weights {
    pub fn canary(canary: i32) -> Self {
        Self {
            primary: crate::api::canary::TOTAL_WEIGHT - canary,
            canary,
        }
    }
}

/// One round of checks: the verdict, and each check's result for the status.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckRound {
    pub verdict: Checks,
    pub results: Vec<CheckStatus>,
}

impl From<Checks> for CheckRound {
    fn from(verdict: Checks) -> Self {
        CheckRound {
            verdict,
            results: Vec::new(),
        }
    }
}

/// The verdict of one round of checks.
#[derive(Debug, Clone, PartialEq)]
pub enum Checks {
    Passed,
    /// A check's value was out of range (a failed check).
    Failed {
        message: String,
    },
    /// A check had nothing to judge (no data, or its metrics server could not be reached): never a pass,
    /// never a failure; the canary holds.
    NoData {
        message: String,
    },
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
    /// Create the primary, Services and route if they are missing (never overwriting what exists).
    pub bootstrap: bool,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Traffic {
    Split(Weights),
    /// A/B: requests matching the analysis' match go to the canary, the rest to the primary.
    Matched,
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
    Suspended,
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
            Reason::Suspended => "Suspended",
        }
    }
}
