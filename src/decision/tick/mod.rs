//! One tick of a Canary's lifecycle: the phase machine of Flagger's canary, blue/green and A/B strategies,
//! with Serin's rules where Flagger falls short (no data holds instead of failing, retries without a spec
//! change, weights capped at maxWeight).

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;

mod analysis;
mod gates;
mod manual;
mod promotion;
mod write_back;

use super::conditions;
use super::settings::{Settings, SpecProblem};
use super::support::{blocking, unsupported_fields};
use super::{
    Decision, Desired, Event, Need, Notice, Observed, Outcome, Readiness, Reason, Scale, Traffic,
    Weights,
};
use crate::api::analysis::Severity;
use crate::api::{CanaryStatus, ConditionType, HookResult, Phase, WebhookStatus};

/// How often to look again while waiting on something a watch will also report (readiness).
const POLL: Duration = Duration::from_secs(5);
/// How often to look at a stuck Canary, or one waiting on something only a look tells (a gate, a
/// rollback's aftermath); watches bring changes sooner.
const RESYNC: Duration = Duration::from_secs(300);
/// How often to look at a settled Canary (Initialized, Succeeded, Failed, nothing new): every change that
/// could move it comes by a watch, so this look is only a safety net, and ten thousand of them at
/// RESYNC's pace cost a few percent of a core for nothing.
const SETTLED: Duration = Duration::from_secs(1800);

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
    if let Some(why) = blocking(settings.provider) {
        return Outcome::Act(Box::new(stalled(o, Reason::NotSupported, &why)));
    }
    let mut t = Tick::new(o, &settings);
    let phase = o.status.phase.unwrap_or(Phase::Initializing);
    if matches!(phase, Phase::Terminating | Phase::Terminated) {
        // Deletion is the finalizer's: nothing moves.
        t.desired.bootstrap = false;
        t.desired.apex = false;
        t.desired.traffic = None;
        t.desired.canary_scale = Scale::Keep;
        return Outcome::Act(Box::new(t.finish()));
    }
    if o.primary.revision.is_none()
        && let Some(promoted) = o.status.last_promoted_spec.as_deref()
    {
        if promoted != o.target.revision || !o.target.missing_configs.is_empty() {
            return Outcome::Act(Box::new(stalled(
                o,
                Reason::PrimaryMissing,
                &primary_missing(o, promoted),
            )));
        }
        // The target holds the last promoted revision: the primary is rebuilt from it.
        t.desired.create_primary = Some(promoted.to_string());
    }
    if !o.target.missing_configs.is_empty() {
        t.hold_for_configs(phase);
        return Outcome::Act(Box::new(t.finish()));
    }
    if let Err(need) = t.step(phase) {
        return Outcome::Need(need);
    }
    Outcome::Act(Box::new(t.finish()))
}

fn primary_missing(o: &Observed, promoted: &str) -> String {
    let target = &o.spec.target_ref.name;
    let runs = if o.target.missing_configs.is_empty() {
        format!("runs revision {}", o.target.revision)
    } else {
        format!("needs {}, which", o.target.missing_configs.join(", ")) + " does not exist"
    };
    format!(
        "Deployment {target}-primary is missing, and {target} {runs}, not the last promoted revision \
         {promoted}: Serin rebuilds the primary only from the last promoted revision. Restore {target} to \
         revision {promoted} (e.g. revert it in git) for Serin to rebuild {target}-primary, or delete and \
         re-create the Canary to start over from {target} as it is"
    )
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
            apex: false,
            create_primary: None,
            primary_configs: false,
            promote_primary: None,
            canary_scale: Scale::Keep,
            traffic: None,
        },
        events: vec![Event {
            reason,
            warning: true,
            message: message.to_string(),
        }],
        notices: Vec::new(),
        post_rollout: None,
        write_back: None,
        requeue_after: RESYNC,
    }
}

/// A step of the tick: done, or it needs evidence first (and the tick starts over with it).
pub(super) type Step = Result<(), Need>;

/// Why an analysis is rolled back: each has Flagger's alert.
pub(super) enum Why {
    /// Failed checks reached the threshold; the last failure in words.
    Checks(String),
    /// A wait outlasted the progress deadline.
    Deadline(String),
    /// The primary did not become ready during the promotion.
    PrimaryNotReady(String),
    /// A rollback webhook asked for it (its name).
    Webhook(String),
    /// serin.dev/abort (its value).
    Aborted(String),
    /// The sequential judge proved a regression against the primary (its finding).
    Regressed(String),
    /// maxDuration passed without the judge proving the canary good (what it lacks).
    Unproven(String),
}

struct Tick<'a> {
    o: &'a Observed,
    s: &'a Settings,
    status: CanaryStatus,
    desired: Desired,
    events: Vec<Event>,
    notices: Vec<Notice>,
    post_rollout: Option<Phase>,
    requeue: Duration,
    /// What is happening, for the conditions' message.
    message: String,
    /// The message as the tick found it (what the last tick said).
    said: String,
    /// Why the canary can't be Ready though its phase would say so (a config missing), as a reason.
    blocked: Option<Reason>,
    /// A wait that outlasted the progress deadline where there is nothing to roll back (initialization,
    /// a settled canary): Stalled says so, and the wait goes on.
    overdue: bool,
}

/// True once the apex Service selects the primary and the route sends nothing to the canary (or there is
/// no route to read), both read back from the API server: only then may the canary's pods go. At
/// initialization the target's pods are all the apex has until then.
fn routed_to_primary(o: &Observed, s: &Settings) -> bool {
    o.apex_to_primary
        && (!s.routes_traffic()
            || match o.routed {
                None => true,
                Some(Traffic::Split(w)) => w.canary == 0,
                Some(Traffic::Matched | Traffic::Mirrored) => false,
            })
}

fn elapsed(now: Timestamp, since: &MicroTime) -> Duration {
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
                apex: true,
                create_primary: None,
                primary_configs: o.primary.revision.as_deref() == Some(o.target.revision.as_str()),
                promote_primary: None,
                canary_scale: if routed_to_primary(o, s) {
                    Scale::Zero
                } else {
                    Scale::Keep
                },
                traffic,
            },
            events: Vec::new(),
            notices: Vec::new(),
            post_rollout: None,
            requeue: s.interval,
            said: message.clone(),
            message,
            blocked: None,
            overdue: false,
        }
    }

    fn step(&mut self, phase: Phase) -> Step {
        if self.manual(phase) {
            return Ok(());
        }
        match phase {
            Phase::Initializing => self.initialize(),
            Phase::Initialized | Phase::Succeeded | Phase::Failed => self.idle(phase),
            Phase::Waiting => self.waiting(),
            Phase::Progressing | Phase::WaitingPromotion => self.analyse(),
            Phase::Promoting => {
                self.promote();
                Ok(())
            }
            Phase::Finalising => {
                self.finalise();
                Ok(())
            }
            Phase::Terminating | Phase::Terminated => Ok(()),
        }
    }

    /// Whether an interval has passed since the last step (or there was none).
    fn due(&self) -> bool {
        self.status
            .last_step_time
            .as_ref()
            .is_none_or(|last| elapsed(self.o.now, last) >= self.s.interval)
    }

    /// Whether a step is due; if not, requeues for when it is.
    fn step_due(&mut self) -> bool {
        if self.due() {
            return true;
        }
        if let Some(last) = &self.status.last_step_time {
            self.requeue = self.s.interval.saturating_sub(elapsed(self.o.now, last));
        }
        false
    }

    /// Holds a revision while the Canary is suspended; true when it is.
    fn suspended_before_analysis(&mut self) -> bool {
        if self.s.suspend {
            self.message = format!(
                "Suspended: revision {} of {} waits",
                self.revision(),
                self.name()
            );
        }
        self.s.suspend
    }

    /// An alert, with the revision and where traffic goes.
    fn notice(&mut self, severity: Severity, message: String, settings: bool) {
        self.notice_with(severity, message, settings, Vec::new());
    }

    fn notice_with(
        &mut self,
        severity: Severity,
        message: String,
        settings: bool,
        mut details: Vec<(String, String)>,
    ) {
        // The revision analysed (a newer one may wait behind it), or the one waiting for approval.
        let revision = match (&self.status.last_applied_spec, self.status.phase) {
            (Some(r), Some(p)) if p != Phase::Waiting => r.clone(),
            _ => self.revision().to_string(),
        };
        details.push(("Revision".into(), revision));
        if self.s.routes_traffic() {
            let traffic = match self.desired.traffic {
                Some(Traffic::Matched) => "requests that match to the canary".to_string(),
                Some(Traffic::Mirrored) => {
                    "primary 100%, a copy of requests to the canary".to_string()
                }
                _ => {
                    let w = Weights::canary(self.status.canary_weight);
                    format!("canary {}% / primary {}%", w.canary, w.primary)
                }
            };
            details.push(("Traffic".into(), traffic));
        }
        self.notices.push(Notice {
            severity,
            message,
            settings,
            details,
        });
    }

    /// Scales the canary to zero once the route sends it nothing; until then its pods stay, and the
    /// controller looks again soon.
    fn scale_down(&mut self) {
        if routed_to_primary(self.o, self.s) {
            self.desired.canary_scale = Scale::Zero;
        } else {
            self.desired.canary_scale = Scale::Keep;
            self.requeue = self.requeue.min(self.s.interval.min(POLL));
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

    /// Holds without progress, with an event; true once the hold has outlasted the progress deadline.
    fn hold(&mut self, why: String) -> bool {
        let new_reason = self.message != why;
        let overdue = self.wait(why.clone());
        if new_reason {
            self.event(Reason::Holding, false, why);
        }
        overdue
    }

    /// Holds while `workload` (the canary, its primary) rolls out: the canary's scale-up, the primary's
    /// update; `progress` is where that rollout stands. Within one interval of the phase's start the hold
    /// is quiet: nothing in the status changes and no event is published, since such a rollout usually
    /// ends within moments and each of its stages ("waiting for the Deployment controller", "0 of 1
    /// replicas updated", "1 old replicas pending termination") cost a status write and an event, most of
    /// a rollout's writes. Past that, the hold is said once, with one Holding event; its progress after
    /// that reaches the status message at most once an interval and publishes no event, because under
    /// load (a thousand canaries rolling out at once) those stages come slowly, one write each, just when
    /// the API server is the bottleneck. The progress deadline counts from the last progress reported.
    fn hold_rollout(&mut self, workload: &str, progress: &str) -> bool {
        let phase_age =
            self.status.last_transition_time.as_ref().map(|t| {
                Duration::try_from(self.o.now.duration_since(t.0)).unwrap_or(Duration::ZERO)
            });
        if let Some(age) = phase_age
            && self.status.holding_since.is_none()
            && age < self.s.interval
        {
            // Looked at again when the workload's watch says it moved, or at the interval's end.
            self.requeue = (self.s.interval - age).min(POLL);
            return false;
        }
        let holding = format!("{workload} not ready: ");
        let why = format!("{holding}{progress}");
        if !self.said.starts_with(&holding) {
            return self.hold(why);
        }
        // Held since an earlier tick: whatever else this tick said (a new revision seen during the
        // promotion) neither says the hold again nor restarts its clock.
        self.message = self.said.clone();
        let reported = self.status.holding_since.as_ref();
        if let Some(age) = reported.map(|t| elapsed(self.o.now, t))
            && age < self.s.interval
            && self.message != why
        {
            // Progress since the last report: not overdue, and said at the interval's end if still held.
            self.requeue = (self.s.interval - age).min(POLL);
            return false;
        }
        self.wait(why)
    }

    /// Waits for `why` to pass; true once it has lasted the progress deadline. The clock starts when the
    /// reason does: a hold for one reason never counts against another (a slow scale-up does not shorten
    /// the wait for data), and progress (a changed message, as "2 of 3 ready" after "1 of 3") restarts it,
    /// as a Deployment's progress deadline does.
    fn wait(&mut self, why: String) -> bool {
        if self.message != why {
            self.status.holding_since = None;
        }
        let since = self
            .status
            .holding_since
            .get_or_insert(MicroTime(self.o.now))
            .clone();
        self.message = why;
        self.requeue = self.s.interval.min(POLL);
        elapsed(self.o.now, &since) >= self.s.progress_deadline
    }

    /// A referenced ConfigMap or Secret does not exist: the target's revision can't be known, so nothing
    /// moves (no step, no promotion, no copy) until it does; past the progress deadline an analysis is
    /// rolled back, and otherwise Stalled says so.
    fn hold_for_configs(&mut self, phase: Phase) {
        let missing = self.o.target.missing_configs.join(", ");
        let why = format!(
            "{missing} used by {} not found: holding until it exists",
            self.name()
        );
        self.desired.traffic = None;
        self.desired.canary_scale = Scale::Keep;
        self.desired.create_primary = None;
        self.desired.primary_configs = false;
        self.blocked = Some(Reason::ConfigNotFound);
        self.set_phase(phase);
        if phase == Phase::Initializing && self.o.primary.ready != Readiness::Ready {
            self.before_primary_serves();
        }
        let new_reason = self.message != why;
        if new_reason {
            self.event(Reason::ConfigNotFound, true, why.clone());
        }
        if !self.wait(why.clone()) {
            return;
        }
        match phase {
            Phase::Waiting | Phase::Progressing | Phase::WaitingPromotion => {
                self.blocked = None;
                self.rollback(Why::Deadline(format!(
                    "{why}, for longer than the progress deadline of {:?}",
                    self.s.progress_deadline
                )));
            }
            _ => self.overdue = true,
        }
    }

    fn revision(&self) -> &str {
        &self.o.target.revision
    }

    fn initialize(&mut self) -> Step {
        self.desired.canary_scale = Scale::Keep;
        if self.o.status.phase.is_none() {
            let primary = format!("{}-primary", self.name());
            self.event(
                Reason::Initializing,
                false,
                format!(
                    "Creating {primary}; the apex Service and the route switch to it once it is ready, while {} serves",
                    self.name()
                ),
            );
        }
        self.set_phase(Phase::Initializing);
        match (&self.o.primary.revision, &self.o.primary.ready) {
            (Some(_), Readiness::Ready) if !routed_to_primary(self.o, self.s) => {
                // The apex Service and the route switch to the primary now (the desired state's
                // default); the target serves until both read back that way.
                let why = format!(
                    "{}-primary is ready: switching the apex Service and the route to it",
                    self.name()
                );
                self.overdue = self.wait(why);
            }
            (Some(running), Readiness::Ready) => {
                // What the primary runs is what was promoted: a target that moved on meanwhile is a new
                // revision, analysed like any other.
                self.status.last_applied_spec = Some(running.clone());
                self.status.last_promoted_spec = Some(running.clone());
                self.status.holding_since = None;
                self.set_phase(Phase::Initialized);
                self.scale_down();
                let msg = format!(
                    "{}-primary is ready: the apex Service and the route send traffic to it, and {} goes to zero until its next revision",
                    self.name(),
                    self.name()
                );
                self.event(Reason::Initialized, false, msg);
                let kind = self
                    .o
                    .spec
                    .target_ref
                    .kind
                    .unwrap_or(crate::api::canary::TargetKind::Deployment);
                self.notice(
                    Severity::Info,
                    format!("New {kind:?} detected, initialization completed."),
                    true,
                );
                if running != self.revision() {
                    return self.idle(Phase::Initialized);
                }
            }
            (None, _) => {
                self.desired.create_primary = Some(self.revision().to_string());
                self.before_primary_serves();
                let why = format!("Waiting for {}-primary to be created", self.name());
                self.overdue = self.wait(why);
            }
            (Some(_), Readiness::NotReady(why)) => {
                self.before_primary_serves();
                let why = format!("Waiting for {}-primary to be ready: {why}", self.name());
                self.overdue = self.wait(why);
            }
        }
        Ok(())
    }

    /// Until the primary is ready, the apex Service and the route stay as they are: the user's own Service
    /// keeps selecting the target's pods, which serve, where a switch would leave requests no endpoint.
    /// Flagger switches both only once the primary is ready, too.
    fn before_primary_serves(&mut self) {
        self.desired.apex = false;
        self.desired.traffic = None;
    }

    fn idle(&mut self, phase: Phase) -> Step {
        self.requeue = SETTLED.max(self.s.interval);
        self.scale_down();
        let new_revision = self.status.last_applied_spec.as_deref() != Some(self.revision());
        let retry = phase == Phase::Failed
            && self.o.retry.is_some()
            && self.o.retry != self.status.last_retry;
        if !retry
            && new_revision
            && self.status.last_promoted_spec.as_deref() == Some(self.revision())
        {
            self.back_at_promoted();
            return Ok(());
        }
        let failed = self.failed_before();
        if !retry && new_revision && failed == Some(true) {
            self.hold_failed_revision();
            return Ok(());
        }
        // Held after failing, and the analysis has changed since: a new chance.
        let reanalyse = phase == Phase::Failed && !new_revision && failed == Some(false);
        let new_revision = new_revision || reanalyse;
        if !(new_revision || retry) || self.suspended_before_analysis() {
            return Ok(());
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
        self.begin()
    }

    /// The analysis spec's digest: a revision that failed under one analysis is held while it is the same.
    fn analysis_digest(&self) -> String {
        use sha2::Digest;
        let analysis = self
            .o
            .spec
            .analysis
            .as_ref()
            .or(self.o.spec.canary_analysis.as_ref());
        let text = serde_json::to_string(&analysis).unwrap_or_default();
        let digest = sha2::Sha256::digest(text.as_bytes());
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }

    /// Whether the target's revision was rolled back before: Some(true) under the same analysis, Some(false)
    /// under another one, None never.
    fn failed_before(&self) -> Option<bool> {
        let digest = self.analysis_digest();
        self.status
            .failed_revisions
            .iter()
            .find(|f| f.revision == self.revision())
            .map(|f| f.analysis == digest)
    }

    /// Records the revision under analysis as rolled back (the newest last, at most MAX_FAILED_REVISIONS).
    fn remember_failed(&mut self) {
        let revision = self.status.last_applied_spec.clone().unwrap_or_default();
        let analysis = self.analysis_digest();
        let failed = &mut self.status.failed_revisions;
        failed.retain(|f| f.revision != revision);
        failed.push(crate::api::status::FailedRevision { revision, analysis });
        let excess = failed
            .len()
            .saturating_sub(crate::api::status::MAX_FAILED_REVISIONS);
        failed.drain(..excess);
    }

    /// The target went back to what the primary runs (a revert in git, Serin's roll forward): nothing to
    /// analyse, no traffic to move.
    fn back_at_promoted(&mut self) {
        self.status.last_applied_spec = Some(self.revision().to_string());
        self.set_phase(Phase::Succeeded);
        let msg = self.back_at_promoted_message();
        self.event(Reason::BackAtPromoted, false, msg.clone());
        self.message = msg;
    }

    /// What a target back at the primary's revision is told (also when it comes back while Waiting).
    pub(super) fn back_at_promoted_message(&self) -> String {
        format!(
            "{} is back at revision {}, the one {}-primary runs: nothing to analyse",
            self.name(),
            self.revision(),
            self.name()
        )
    }

    /// A revision rolled back before came back under the same analysis: held, said once.
    fn hold_failed_revision(&mut self) {
        self.status.last_applied_spec = Some(self.revision().to_string());
        self.set_phase(Phase::Failed);
        let msg = format!(
            "Revision {} of {} was rolled back before and is not analysed again: set serin.dev/retry, or change spec.analysis, to analyse it",
            self.revision(),
            self.name()
        );
        self.event(Reason::FailedRevisionHeld, true, msg.clone());
        self.message = msg;
    }

    fn start_analysis(&mut self) {
        let revision = self.revision().to_string();
        self.status.last_applied_spec = Some(revision.clone());
        self.status.failed_checks = 0;
        self.status.iterations = 0;
        self.status.last_step_time = None;
        self.status.holding_since = None;
        // The last results belong to the previous revision (the confirm-rollout gate's let it in).
        self.status.checks.clear();
        self.status.evidence.clear();
        self.status
            .webhooks
            .retain(|w| w.hook_type == crate::api::analysis::HookType::ConfirmRollout);
        self.notice(
            Severity::Info,
            "New revision detected, progressing canary analysis.".into(),
            true,
        );
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

    /// Each webhook's last call, for the status; entries of webhooks no longer in the spec go.
    fn record_hooks(&mut self) {
        let now = self.o.now;
        for (kind, calls) in &self.o.hooks {
            for call in calls {
                let entry = WebhookStatus {
                    name: call.name.clone(),
                    hook_type: *kind,
                    result: if call.passed {
                        HookResult::Passed
                    } else {
                        HookResult::Failed
                    },
                    message: call.message.clone(),
                    last_call_time: MicroTime(now),
                };
                match self
                    .status
                    .webhooks
                    .iter_mut()
                    .find(|w| w.name == call.name && w.hook_type == *kind)
                {
                    Some(w) => *w = entry,
                    None => self.status.webhooks.push(entry),
                }
            }
        }
        let hooks = &self.s.webhooks;
        self.status.webhooks.retain(|w| {
            hooks
                .iter()
                .any(|h| h.name == w.name && h.kind() == w.hook_type)
        });
    }

    fn finish(mut self) -> Decision {
        self.record_hooks();
        let write_back = self.fold_write_back();

        let (now, generation) = (self.o.now, self.o.generation);
        self.status.observed_generation = Some(generation);
        let phase = self.status.phase.unwrap_or(Phase::Initializing);
        conditions::for_phase(&mut self.status, phase, &self.message, now, generation);
        if let Some(reason) = self.blocked {
            let r = reason.as_str();
            conditions::set(
                &mut self.status,
                ConditionType::Ready,
                "False",
                r,
                &self.message,
                now,
                generation,
            );
        }
        if self.overdue {
            let r = Reason::ProgressDeadlineExceeded;
            let was = self.o.status.conditions.iter().any(|c| {
                c.type_ == ConditionType::Stalled.as_str()
                    && c.reason.as_deref() == Some(r.as_str())
            });
            let msg = format!(
                "{}, for longer than the progress deadline of {:?}",
                self.message, self.s.progress_deadline
            );
            if !was {
                self.events.push(Event {
                    reason: r,
                    warning: true,
                    message: msg.clone(),
                });
            }
            // Ready keeps the reason's own words, so the next tick sees the same wait and its clock goes on.
            let m = self.message.clone();
            conditions::set(
                &mut self.status,
                ConditionType::Ready,
                "False",
                r.as_str(),
                &m,
                now,
                generation,
            );
            conditions::set(
                &mut self.status,
                ConditionType::Stalled,
                "True",
                r.as_str(),
                &msg,
                now,
                generation,
            );
        }
        let unsupported = unsupported_fields(
            &self.o.spec,
            self.o.spec.provider.unwrap_or(self.o.defaults.provider),
        );
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
            notices: self.notices,
            post_rollout: self.post_rollout,
            write_back,
            requeue_after: self.requeue,
        }
    }
}
