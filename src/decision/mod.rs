//! The decision core: given what was observed of a Canary and its objects, what happens next. Pure: no I/O,
//! no clock, no randomness, so every tick can be tested without a server.
//!
//! The controller observes (watch caches), calls [`decide`], and acts on the [`Decision`]: it brings the
//! objects to the desired state, writes the status once, records the events, sends the notices, and
//! requeues. When the tick needs evidence only I/O can bring (the metric checks, a kind of webhook), [`decide`]
//! answers [`Outcome::Need`] first; the controller gathers it and calls it again with the answer, until it
//! decides. It never asks for the same evidence twice in a tick.

mod conditions;
pub mod settings;
pub mod support;
#[cfg(test)]
mod tests;
mod tick;

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use std::collections::BTreeMap;

use crate::api::analysis::{HookType, Severity};
use crate::api::{CanarySpec, CanaryStatus, Phase};
pub use crate::vocabulary::{CheckRound, Checks, HookCall, Readiness, Traffic, Weights};
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
    /// The apex Service, as the cache holds it, selects the primary's pods (false while it does not exist,
    /// or still selects the target's, as the user's own Service before Serin takes it over).
    pub apex_to_primary: bool,
    /// The checks' results, when the controller has run them this tick.
    pub checks: Option<CheckRound>,
    /// The webhooks called this tick, by type, in the order called (a list stops where its type's rule
    /// says: gates and checks at the first failure, rollback webhooks at the first pass).
    pub hooks: BTreeMap<HookType, Vec<HookCall>>,
    /// The serin.dev/retry annotation: a new value retries a failed revision.
    pub retry: Option<String>,
    /// The manual control annotations.
    pub manual: Manual,
    /// Each container's image (init containers included), in the target's and the primary's templates:
    /// what a roll forward in git restores.
    pub images: Images,
    /// The roll forward in git (spec.writeBack).
    pub write_back: WriteBackObserved,
}

/// Container name → image, in template order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Images {
    pub target: Vec<(String, String)>,
    pub primary: Vec<(String, String)>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteBackObserved {
    /// spec.writeBack is set (or the controller writes back every Canary: --write-back-default=on).
    pub enabled: bool,
    /// The writer's latest word on status.writeBack.forRevision, when it has one.
    pub report: Option<crate::api::write_back::WriteBackStatus>,
}

impl Observed {
    /// A Canary seen for the first time: no status, its target ready at `revision`, no primary, no route,
    /// no checks, webhooks or annotations yet.
    pub fn first_sight(
        now: Timestamp,
        spec: CanarySpec,
        defaults: ControllerDefaults,
        revision: &str,
    ) -> Self {
        Observed {
            now,
            generation: 1,
            spec,
            status: CanaryStatus::default(),
            defaults,
            target: Target {
                revision: revision.into(),
                ready: Readiness::Ready,
                missing_configs: vec![],
            },
            primary: Primary {
                revision: None,
                ready: Readiness::NotReady("not created".into()),
            },
            routed: None,
            apex_to_primary: false,
            checks: None,
            hooks: Default::default(),
            retry: None,
            manual: Manual::default(),
            images: Images::default(),
            write_back: WriteBackObserved::default(),
        }
    }
}

/// The manual control annotations as the Canary carries them now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Manual {
    /// serin.dev/promote: a new value promotes the revision under analysis now.
    pub promote: Option<String>,
    /// serin.dev/abort: a new value rolls it back now.
    pub abort: Option<String>,
    /// serin.dev/pause is "true": the analysis holds its weight.
    pub pause: bool,
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
    /// Gather this and decide again.
    Need(Need),
    Act(Box<Decision>),
}

/// Evidence the core asks the controller for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Run the metric checks (into [`Observed::checks`]).
    Checks,
    /// Call the webhooks of this type (into [`Observed::hooks`]).
    Hooks(HookType),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The status to write; the controller skips the write when it is unchanged.
    pub status: CanaryStatus,
    pub desired: Desired,
    pub events: Vec<Event>,
    /// Alerts for the Canary's alert providers (or the controller's default ones).
    pub notices: Vec<Notice>,
    /// Call the post-rollout webhooks with this phase (Succeeded or Failed): the analysis just ended.
    pub post_rollout: Option<Phase>,
    /// Keep a writer at work on the roll forward in git of this failed revision (status.writeBack): only
    /// the leader decides, so only the leader writes.
    pub write_back: Option<String>,
    pub requeue_after: Duration,
}

/// An alert: Flagger's message at Flagger's severity, on Flagger's occasions (and a few of Serin's).
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub severity: Severity,
    /// Flagger's words where Flagger alerts ("Failed checks threshold reached 2").
    pub message: String,
    /// Carry the Canary's settings (target, threshold, deadline, traffic routing), as Flagger's
    /// initialization and new-revision alerts do.
    pub settings: bool,
    /// Serin's additions, as (title, value): the deciding check, the revision, the traffic split.
    pub details: Vec<(String, String)>,
}

/// The state the controller brings the objects to this tick. None of it is done when the spec is invalid.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// Create the primary's and the canary's Services (and a StatefulSet's governing copy, the primary's
    /// autoscaler): nothing routes to them before the apex or the route does.
    pub bootstrap: bool,
    /// Point the apex Service at the primary's pods (creating it, or taking over the user's own): only once
    /// the primary is ready, so a request to the apex never finds no endpoint.
    pub apex: bool,
    /// Create the missing primary from the target, which holds this revision: at initialization, or
    /// rebuilding it from the last promoted revision. Never from a revision not analysed.
    pub create_primary: Option<String>,
    /// Create the primary's copies of the target's configs where missing: only while the target runs the
    /// primary's revision, so the copies hold what the primary was built with.
    pub primary_configs: bool,
    /// Copy the target's pod template and configs into the primary, at this revision.
    pub promote_primary: Option<String>,
    pub canary_scale: Scale,
    /// None: leave the route alone (no route, the provider does not shift traffic, or the primary the
    /// route would send everything to is not ready yet).
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
    /// The target is back at the revision the primary runs: nothing to analyse.
    BackAtPromoted,
    /// A revision that failed came back: held, not analysed again, until a retry or a new analysis.
    FailedRevisionHeld,
    CanaryReady,
    Holding,
    WeightAdvanced,
    IterationAdvanced,
    MirroringStarted,
    CheckFailed,
    Promoting,
    RoutingToPrimary,
    Promoted,
    RolledBack,
    GateClosed,
    GateOpened,
    RollbackRequested,
    ManualPromotion,
    ManualAbort,
    ManualRefused,
    Paused,
    Resumed,
    PrimaryMissing,
    ConfigNotFound,
    ProgressDeadlineExceeded,
    /// One tick of the sequential judge: per compared metric, the e-value and the estimates.
    Evidence,
    /// The sequential judge proved the canary worse than the primary.
    Regressed,
    /// The roll-forward commit is pushed.
    WriteBackPushed,
    /// The GitOps tool applied the roll-forward commit.
    WriteBackApplied,
    /// Nothing to commit: git already says the restored images, someone moved on, or a dry run.
    WriteBackSkipped,
    WriteBackFailed,
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
            Reason::BackAtPromoted => "BackAtPromoted",
            Reason::FailedRevisionHeld => "FailedRevisionHeld",
            Reason::CanaryReady => "CanaryReady",
            Reason::Holding => "Holding",
            Reason::WeightAdvanced => "WeightAdvanced",
            Reason::IterationAdvanced => "IterationAdvanced",
            Reason::MirroringStarted => "MirroringStarted",
            Reason::CheckFailed => "CheckFailed",
            Reason::Promoting => "Promoting",
            Reason::RoutingToPrimary => "RoutingToPrimary",
            Reason::Promoted => "Promoted",
            Reason::RolledBack => "RolledBack",
            Reason::GateClosed => "GateClosed",
            Reason::GateOpened => "GateOpened",
            Reason::RollbackRequested => "RollbackRequested",
            Reason::ManualPromotion => "ManualPromotion",
            Reason::ManualAbort => "ManualAbort",
            Reason::ManualRefused => "ManualRefused",
            Reason::Paused => "Paused",
            Reason::Resumed => "Resumed",
            Reason::PrimaryMissing => "PrimaryMissing",
            Reason::ConfigNotFound => "ConfigNotFound",
            Reason::ProgressDeadlineExceeded => "ProgressDeadlineExceeded",
            Reason::Evidence => "Evidence",
            Reason::Regressed => "Regressed",
            Reason::WriteBackPushed => "WriteBackPushed",
            Reason::WriteBackApplied => "WriteBackApplied",
            Reason::WriteBackSkipped => "WriteBackSkipped",
            Reason::WriteBackFailed => "WriteBackFailed",
        }
    }
}
