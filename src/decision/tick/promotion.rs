//! Promotion and rollback: copy the analysed revision into the primary, wait for it, move traffic back to
//! the primary (at once or step by step), scale the canary down; or send everything back to the primary.

use super::{POLL, RESYNC, Tick, Why};
use crate::api::Phase;
use crate::api::analysis::Severity;
use crate::decision::settings::Strategy;
use crate::decision::{Readiness, Reason, Scale, Traffic, Weights};

impl Tick<'_> {
    pub(super) fn start_promotion(&mut self) {
        let revision = self.revision().to_string();
        self.set_phase(Phase::Promoting);
        self.desired.promote_primary = Some(revision);
        self.requeue = self.s.interval.min(POLL);
        let msg = format!(
            "Copying {} template spec to {}-primary",
            self.name(),
            self.name()
        );
        self.event(Reason::Promoting, false, msg);
    }

    /// All traffic back to the primary; the canary's pods go once the route, read back, says so.
    pub(super) fn rollback(&mut self, why: Why) {
        // The alert tells the traffic the canary had when it failed.
        let (severity, alert, details) = match &why {
            Why::Checks(message) => (
                Severity::Error,
                format!(
                    "Failed checks threshold reached {}",
                    self.status.failed_checks
                ),
                vec![("Failed check".to_string(), message.clone())],
            ),
            Why::Deadline(message) => (
                Severity::Error,
                format!("Progress deadline exceeded {message}"),
                vec![],
            ),
            Why::PrimaryNotReady(message) => (
                Severity::Error,
                format!("Promotion failed, primary not ready: {message}"),
                vec![],
            ),
            Why::Regressed(message) => (
                Severity::Error,
                "Canary proven worse than the primary".to_string(),
                vec![("Regression".to_string(), message.clone())],
            ),
            Why::Unproven(message) => (
                Severity::Error,
                "Canary not proven good within maxDuration".to_string(),
                vec![("Insufficient evidence".to_string(), message.clone())],
            ),
            Why::Webhook(name) => (
                Severity::Warn,
                "Rolling back manual webhook invoked".to_string(),
                vec![("Rollback webhook".to_string(), name.clone())],
            ),
            Why::Aborted(value) => (
                Severity::Warn,
                "Canary aborted by hand, rolling back.".to_string(),
                vec![("serin.dev/abort".to_string(), value.clone())],
            ),
        };
        self.notice_with(severity, alert, false, details);
        let reason = match why {
            Why::Checks(m)
            | Why::Deadline(m)
            | Why::PrimaryNotReady(m)
            | Why::Regressed(m)
            | Why::Unproven(m) => m,
            Why::Webhook(name) => format!("rollback webhook {name} asked for it"),
            Why::Aborted(value) => format!("aborted by hand (serin.dev/abort: {value})"),
        };
        self.set_phase(Phase::Failed);
        self.remember_failed();
        self.open_write_back(&reason);
        self.set_traffic(Traffic::Split(Weights::canary(0)));
        self.status.holding_since = None;
        self.requeue = RESYNC.max(self.s.interval);
        self.scale_down();
        self.post_rollout = Some(Phase::Failed);
        let msg = format!(
            "Rolling back {} revision {}: {reason}",
            self.name(),
            self.revision()
        );
        self.event(Reason::RolledBack, true, msg);
    }

    pub(super) fn promote(&mut self) {
        let revision = self.status.last_applied_spec.clone().unwrap_or_default();
        self.desired.canary_scale = Scale::Up;
        let mut current = match self.o.routed {
            Some(Traffic::Split(w)) => w.canary,
            _ => self.status.canary_weight,
        };
        let matched =
            matches!(self.s.strategy, Strategy::AbTesting { .. }) && !self.s.skip_analysis;
        self.set_traffic(if matched {
            Traffic::Matched
        } else {
            Traffic::Split(Weights::canary(current))
        });
        if self.o.primary.revision.as_deref() != Some(revision.as_str()) {
            if self.revision() == revision {
                self.desired.promote_primary = Some(revision);
                self.requeue = self.s.interval.min(POLL);
            } else {
                let msg = format!(
                    "New revision {} of {} during promotion: starting over",
                    self.revision(),
                    self.name()
                );
                self.event(Reason::NewRevision, false, msg);
                self.start_analysis();
            }
            return;
        }
        if self.revision() != revision {
            // The primary has the analysed revision, but the canary's pods now run one nobody analysed: not
            // one request more for them. The promotion completes; the new revision's analysis follows.
            current = 0;
            self.set_traffic(Traffic::Split(Weights::canary(0)));
            let msg = format!(
                "New revision {} of {} during promotion of {revision}: all traffic to {}-primary now; its analysis starts once the promotion completes",
                self.revision(),
                self.name(),
                self.name()
            );
            if self.message != msg {
                self.event(Reason::NewRevision, false, msg);
            }
        }
        if let Readiness::NotReady(why) = &self.o.primary.ready {
            if self.hold_rollout(&format!("Primary {}-primary", self.name()), why) {
                let why = format!("Primary {}-primary not ready: {why}", self.name());
                self.rollback(Why::PrimaryNotReady(format!(
                    "{why}, for longer than the progress deadline of {:?}",
                    self.s.progress_deadline
                )));
            }
            return;
        }
        self.status.holding_since = None;
        let by_steps = match (self.s.step_weight_promotion, &self.s.strategy) {
            (Some(step), Strategy::Canary { .. }) if self.s.routes_traffic() && current > 0 => {
                Some(step)
            }
            _ => None,
        };
        if let Some(step) = by_steps {
            if !self.step_due() {
                return;
            }
            let next = (current - step).max(0);
            self.stepped();
            self.set_traffic(Traffic::Split(Weights::canary(next)));
            let msg = format!("Advance {}-primary weight {}", self.name(), 100 - next);
            self.event(Reason::RoutingToPrimary, false, msg);
            if next > 0 {
                return;
            }
        } else {
            self.set_traffic(Traffic::Split(Weights::canary(0)));
            let msg = format!("Routing all traffic to primary {}-primary", self.name());
            self.event(Reason::RoutingToPrimary, false, msg);
        }
        self.set_phase(Phase::Finalising);
        self.requeue = self.s.interval.min(POLL);
    }

    pub(super) fn finalise(&mut self) {
        self.set_traffic(Traffic::Split(Weights::canary(0)));
        self.scale_down();
        if self.desired.canary_scale != Scale::Zero {
            self.message = format!(
                "Waiting for the route to send all traffic to {}-primary",
                self.name()
            );
            return;
        }
        self.status.last_promoted_spec = self.status.last_applied_spec.clone();
        // Promoted (after a retry, or under a new analysis): no longer a revision to hold.
        let promoted = self.status.last_promoted_spec.clone();
        self.status
            .failed_revisions
            .retain(|f| Some(&f.revision) != promoted.as_ref());
        self.status.holding_since = None;
        self.set_phase(Phase::Succeeded);
        self.requeue = RESYNC.max(self.s.interval);
        let msg = format!(
            "Promotion of {} revision {} completed",
            self.name(),
            self.status.last_promoted_spec.clone().unwrap_or_default()
        );
        self.event(Reason::Promoted, false, msg);
        self.post_rollout = Some(Phase::Succeeded);
        let alert = if self.s.skip_analysis {
            "Canary analysis was skipped, promotion finished."
        } else {
            "Canary analysis completed successfully, promotion finished."
        };
        self.notice(Severity::Info, alert.into(), false);
    }
}
