//! One tick of a Canary's lifecycle: the phase machine of Flagger's canary, blue/green and A/B strategies,
//! with Serin's rules where Flagger falls short (no data holds instead of failing, retries without a spec
//! change, weights capped at maxWeight).

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

mod analysis;
mod promotion;

use super::conditions;
use super::settings::{Settings, SpecProblem};
use super::support::{blocking, unsupported_fields};
use super::{
    Decision, Desired, Event, Observed, Outcome, Readiness, Reason, Scale, Traffic, Weights,
};
use crate::api::{CanaryStatus, ConditionType, Phase};

/// How often to look again while waiting on something a watch will also report (readiness).
const POLL: Duration = Duration::from_secs(5);
/// How often to look at a settled or stuck Canary; watches bring changes sooner.
const RESYNC: Duration = Duration::from_secs(300);

pub fn decide(o: &Observed) -> Outcome {
    let settings = match Settings::resolve(&o.spec, &o.defaults) {
        Ok(s) => s,
        Err(problems) => {
            return Outcome::Act(Box::new(stalled(
                o,
                Reason::InvalidSpec,
                &describe(&problems),
            )));
        }
    };
    if let Some(why) = blocking(&o.spec, settings.provider) {
        return Outcome::Act(Box::new(stalled(o, Reason::NotSupported, &why)));
    }
    let mut t = Tick::new(o, &settings);
    let phase = o.status.phase.unwrap_or(Phase::Initializing);
    match phase {
        Phase::Initializing => t.initialize(),
        Phase::Initialized | Phase::Succeeded | Phase::Failed => t.idle(phase),
        Phase::Waiting | Phase::Progressing | Phase::WaitingPromotion => {
            if t.analyse() == Step::NeedChecks {
                return Outcome::RunChecks;
            }
        }
        Phase::Promoting => t.promote(),
        Phase::Finalising => t.finalise(),
        // Deletion is the finalizer's: nothing moves.
        Phase::Terminating | Phase::Terminated => t.desired.bootstrap = false,
    }
    Outcome::Act(Box::new(t.finish()))
}

fn describe(problems: &[SpecProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// A spec Serin can't run: say why, touch nothing.
fn stalled(o: &Observed, reason: Reason, message: &str) -> Decision {
    let mut status = o.status.clone();
    status.observed_generation = Some(o.generation);
    let r = reason.as_str();
    conditions::set(
        &mut status,
        ConditionType::Stalled,
        "True",
        r,
        message,
        o.now,
        o.generation,
    );
    conditions::set(
        &mut status,
        ConditionType::Ready,
        "False",
        r,
        message,
        o.now,
        o.generation,
    );
    conditions::set(
        &mut status,
        ConditionType::Reconciling,
        "False",
        r,
        message,
        o.now,
        o.generation,
    );
    Decision {
        status,
        desired: Desired {
            bootstrap: false,
            promote_primary: None,
            canary_scale: Scale::Keep,
            traffic: None,
        },
        events: vec![Event {
            reason,
            warning: true,
            message: message.to_string(),
        }],
        requeue_after: RESYNC,
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step {
    Done,
    NeedChecks,
}

struct Tick<'a> {
    o: &'a Observed,
    s: &'a Settings,
    status: CanaryStatus,
    desired: Desired,
    events: Vec<Event>,
    requeue: Duration,
    /// What is happening, for the conditions' message.
    message: String,
}

fn elapsed(now: Timestamp, since: &Time) -> Duration {
    Duration::try_from(now.duration_since(since.0)).unwrap_or(Duration::ZERO)
}

impl<'a> Tick<'a> {
    fn new(o: &'a Observed, s: &'a Settings) -> Self {
        let message = o
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == ConditionType::Ready.as_str())
            .and_then(|c| c.message.clone())
            .unwrap_or_default();
        let traffic = s
            .routes_traffic()
            .then_some(Traffic::Split(Weights::canary(0)));
        Tick {
            o,
            s,
            status: o.status.clone(),
            desired: Desired {
                bootstrap: true,
                promote_primary: None,
                canary_scale: Scale::Zero,
                traffic,
            },
            events: Vec::new(),
            requeue: s.interval,
            message,
        }
    }

    fn name(&self) -> &str {
        &self.o.spec.target_ref.name
    }

    fn event(&mut self, reason: Reason, warning: bool, message: String) {
        self.message = message.clone();
        self.events.push(Event {
            reason,
            warning,
            message,
        });
    }

    fn set_phase(&mut self, phase: Phase) {
        if self.status.phase != Some(phase) {
            self.status.phase = Some(phase);
            self.status.last_transition_time = Some(Time(self.o.now));
        }
    }

    fn set_traffic(&mut self, traffic: Traffic) {
        if self.s.routes_traffic() {
            self.desired.traffic = Some(traffic);
        }
        if let Traffic::Split(w) = traffic {
            self.status.canary_weight = w.canary;
        }
    }

    /// Holds without progress; true once the hold has outlasted the progress deadline.
    fn hold(&mut self, why: String) -> bool {
        let since = self
            .status
            .holding_since
            .get_or_insert(Time(self.o.now))
            .clone();
        if self.message != why {
            self.event(Reason::Holding, false, why);
        }
        self.requeue = self.s.interval.min(POLL);
        elapsed(self.o.now, &since) >= self.s.progress_deadline
    }

    fn revision(&self) -> &str {
        &self.o.target.revision
    }

    fn initialize(&mut self) {
        self.desired.canary_scale = Scale::Keep;
        if self.o.status.phase.is_none() {
            let primary = format!("{}-primary", self.name());
            self.event(
                Reason::Initializing,
                false,
                format!(
                    "Creating {primary}, the Services and the route for {}",
                    self.name()
                ),
            );
        }
        self.set_phase(Phase::Initializing);
        match (&self.o.primary.revision, &self.o.primary.ready) {
            (Some(_), Readiness::Ready) => {
                self.desired.canary_scale = Scale::Zero;
                self.status.last_applied_spec = Some(self.revision().to_string());
                self.status.last_promoted_spec = Some(self.revision().to_string());
                self.status.holding_since = None;
                self.set_phase(Phase::Initialized);
                let msg = format!(
                    "{}-primary is ready; {} scaled to zero until its next revision",
                    self.name(),
                    self.name()
                );
                self.event(Reason::Initialized, false, msg);
            }
            (None, _) => {
                self.message = format!("Waiting for {}-primary to be created", self.name())
            }
            (Some(_), Readiness::NotReady(why)) => {
                self.message = format!("Waiting for {}-primary to be ready: {why}", self.name())
            }
        }
        if self.status.phase == Some(Phase::Initializing) {
            self.requeue = self.s.interval.min(POLL);
        }
    }

    fn idle(&mut self, phase: Phase) {
        self.requeue = RESYNC.max(self.s.interval);
        let new_revision = self.status.last_applied_spec.as_deref() != Some(self.revision());
        let retry = phase == Phase::Failed
            && self.o.retry.is_some()
            && self.o.retry != self.status.last_retry;
        if !(new_revision || retry) {
            return;
        }
        if self.s.suspend {
            self.message = format!(
                "Suspended: revision {} of {} waits",
                self.revision(),
                self.name()
            );
            return;
        }
        if retry {
            self.status.last_retry = self.o.retry.clone();
        }
        if new_revision {
            let msg = format!(
                "New revision {} of {} detected",
                self.revision(),
                self.name()
            );
            self.event(Reason::NewRevision, false, msg);
        } else {
            let msg = format!("Retrying revision {} of {}", self.revision(), self.name());
            self.event(Reason::Retrying, false, msg);
        }
        self.start_analysis();
    }

    fn start_analysis(&mut self) {
        let revision = self.revision().to_string();
        self.status.last_applied_spec = Some(revision.clone());
        self.status.failed_checks = 0;
        self.status.iterations = 0;
        self.status.last_step_time = None;
        self.status.holding_since = None;
        // The last results belong to the previous revision.
        self.status.checks.clear();
        self.set_traffic(Traffic::Split(Weights::canary(0)));
        self.requeue = self.s.interval.min(POLL);
        if self.s.skip_analysis {
            self.set_phase(Phase::Promoting);
            self.desired.promote_primary = Some(revision.clone());
            let msg = format!(
                "Analysis skipped: promoting revision {revision} of {}",
                self.name()
            );
            self.event(Reason::Promoting, false, msg);
        } else {
            self.set_phase(Phase::Progressing);
            self.desired.canary_scale = Scale::Up;
        }
    }

    fn finish(mut self) -> Decision {
        let (now, generation) = (self.o.now, self.o.generation);
        self.status.observed_generation = Some(generation);
        let phase = self.status.phase.unwrap_or(Phase::Initializing);
        conditions::for_phase(&mut self.status, phase, &self.message, now, generation);
        let unsupported = unsupported_fields(&self.o.spec);
        if unsupported.is_empty() {
            conditions::remove(&mut self.status, ConditionType::Unsupported.as_str());
        } else {
            let msg = format!("Accepted but not acted on yet: {}", unsupported.join(", "));
            conditions::set(
                &mut self.status,
                ConditionType::Unsupported,
                "True",
                "NotSupportedYet",
                &msg,
                now,
                generation,
            );
        }
        Decision {
            status: self.status,
            desired: self.desired,
            events: self.events,
            requeue_after: self.requeue,
        }
    }
}
