//! Flagger's webhooks as the analysis consults them: the gates (confirm-rollout, confirm-traffic-increase,
//! confirm-promotion), the checks (pre-rollout, rollout) and the rollback webhooks. The core asks for a kind's
//! calls only when the tick reaches the point where Flagger calls them; the controller calls them and the
//! tick starts over with their answers.

use super::{Step, Tick, Why};
use crate::api::Phase;
use crate::api::analysis::{HookType, Severity};
use crate::decision::{HookCall, Need, Reason};

/// A gate's state this tick.
pub(super) enum Gate<'a> {
    Open,
    /// Closed by this webhook's answer.
    Closed(&'a HookCall),
}

impl<'a> Tick<'a> {
    /// This tick's calls of the webhooks of `kind`: None when the analysis has none; asks for them when not
    /// called yet.
    fn calls(&self, kind: HookType) -> Result<Option<&'a [HookCall]>, Need> {
        if !self.s.has_hooks(kind) {
            return Ok(None);
        }
        match self.o.hooks.get(&kind) {
            Some(calls) => Ok(Some(calls.as_slice())),
            None => Err(Need::Hooks(kind)),
        }
    }

    pub(super) fn gate(&self, kind: HookType) -> Result<Gate<'a>, Need> {
        Ok(
            match self.calls(kind)?.and_then(|c| c.iter().find(|c| !c.passed)) {
                Some(closed) => Gate::Closed(closed),
                None => Gate::Open,
            },
        )
    }

    /// Whether the webhook's alerts are muted (muteAlert).
    fn muted(&self, kind: HookType, name: &str) -> bool {
        self.s
            .webhooks
            .iter()
            .any(|h| h.kind() == kind && h.name == name && h.mute_alert)
    }

    /// The pre-rollout or rollout webhooks: true when all passed (or there are none). A failure is a failed
    /// check, and the step is taken (the next comes an interval later).
    pub(super) fn hook_checks(&mut self, kind: HookType) -> Result<bool, Need> {
        let Some(failed) = self.calls(kind)?.and_then(|c| c.iter().find(|c| !c.passed)) else {
            return Ok(true);
        };
        self.stepped();
        self.fail_check(format!(
            "{kind} webhook {} failed: {}",
            failed.name, failed.message
        ));
        Ok(false)
    }

    /// Whether a pre-rollout webhook has not passed yet in this analysis (its results are cleared when an
    /// analysis starts).
    pub(super) fn pre_rollout_pending(&self) -> bool {
        self.s
            .webhooks
            .iter()
            .filter(|h| h.kind() == HookType::PreRollout)
            .any(|h| {
                !self.status.webhooks.iter().any(|w| {
                    w.hook_type == HookType::PreRollout
                        && w.name == h.name
                        && w.result == crate::api::HookResult::Passed
                })
            })
    }

    /// The rollback webhooks: the first that answers 202 or less rolls the canary back now.
    pub(super) fn rollback_requested(&mut self) -> Result<bool, Need> {
        let Some(asked) = self
            .calls(HookType::Rollback)?
            .and_then(|c| c.iter().find(|c| c.passed))
        else {
            return Ok(false);
        };
        let msg = format!(
            "Rolling back {}: rollback webhook {} answered {}",
            self.name(),
            asked.name,
            asked.message
        );
        self.event(Reason::RollbackRequested, true, msg);
        self.rollback(Why::Webhook(asked.name.clone()));
        Ok(true)
    }

    /// A revision to analyse: through the confirm-rollout gate, then the analysis.
    pub(super) fn begin(&mut self) -> Step {
        match self.gate(HookType::ConfirmRollout)? {
            Gate::Open => self.start_analysis(),
            Gate::Closed(call) => {
                self.set_phase(Phase::Waiting);
                self.stepped();
                self.scale_down();
                self.set_traffic(crate::decision::Traffic::Split(
                    crate::decision::Weights::canary(0),
                ));
                let msg = format!(
                    "Halt {} advancement: revision {} waits for approval by confirm-rollout webhook {} ({})",
                    self.name(),
                    self.revision(),
                    call.name,
                    call.message
                );
                self.event(Reason::GateClosed, true, msg);
                if !self.muted(HookType::ConfirmRollout, &call.name) {
                    self.notice(
                        Severity::Warn,
                        "Canary is waiting for approval.".into(),
                        false,
                    );
                }
            }
        }
        Ok(())
    }

    /// Phase Waiting: the confirm-rollout gate is asked again each interval; the canary is not scaled up.
    pub(super) fn waiting(&mut self) -> Step {
        self.scale_down();
        if self.status.last_promoted_spec.as_deref() == Some(self.revision()) {
            // Back to what the primary runs (a revert): nothing waits for approval any more.
            self.status.last_applied_spec = Some(self.revision().to_string());
            self.set_phase(Phase::Succeeded);
            self.requeue = super::RESYNC.max(self.s.interval);
            self.message = self.back_at_promoted_message();
            let msg = self.message.clone();
            self.event(Reason::BackAtPromoted, false, msg);
            return Ok(());
        }
        if self.suspended_before_analysis() || !self.step_due() {
            return Ok(());
        }
        if self.rollback_requested()? {
            return Ok(());
        }
        match self.gate(HookType::ConfirmRollout)? {
            Gate::Open => {
                let msg = format!(
                    "Confirm-rollout gate open: starting the analysis of revision {} of {}",
                    self.revision(),
                    self.name()
                );
                self.event(Reason::GateOpened, false, msg);
                self.start_analysis();
            }
            Gate::Closed(call) => {
                self.stepped();
                self.message = format!(
                    "Revision {} of {} waits for approval by confirm-rollout webhook {} ({})",
                    self.revision(),
                    self.name(),
                    call.name,
                    call.message
                );
            }
        }
        Ok(())
    }

    /// Before each weight increase: true when the confirm-traffic-increase gate is open. Closed, the weight
    /// holds this step (the checks ran), with an event and an alert once per wait.
    pub(super) fn traffic_increase_gate(&mut self) -> Result<bool, Need> {
        let call = match self.gate(HookType::ConfirmTrafficIncrease)? {
            Gate::Open => return Ok(true),
            Gate::Closed(call) => call,
        };
        let msg = format!(
            "Halt {} advancement at canary weight {}: waiting for approval of the traffic increase by confirm-traffic-increase webhook {} ({})",
            self.name(),
            self.status.canary_weight,
            call.name,
            call.message
        );
        if self.message != msg {
            self.event(Reason::GateClosed, true, msg);
            if !self.muted(HookType::ConfirmTrafficIncrease, &call.name) {
                self.notice(
                    Severity::Warn,
                    "Canary traffic increase is waiting for approval.".into(),
                    false,
                );
            }
        }
        Ok(false)
    }

    /// At the end of the analysis: true when the confirm-promotion gate is open. Closed, the phase is
    /// WaitingPromotion (the checks go on each interval), with an event and an alert on entering it.
    pub(super) fn promotion_gate_open(&mut self) -> Result<bool, Need> {
        let call = match self.gate(HookType::ConfirmPromotion)? {
            Gate::Open => {
                if self.status.phase == Some(Phase::WaitingPromotion) {
                    let msg = format!("Confirm-promotion gate open for {}", self.name());
                    self.event(Reason::GateOpened, false, msg);
                }
                return Ok(true);
            }
            Gate::Closed(call) => call,
        };
        let msg = format!(
            "Halt {} advancement: waiting for approval of the promotion by confirm-promotion webhook {} ({})",
            self.name(),
            call.name,
            call.message
        );
        if self.status.phase != Some(Phase::WaitingPromotion) {
            self.set_phase(Phase::WaitingPromotion);
            self.event(Reason::GateClosed, true, msg);
            if !self.muted(HookType::ConfirmPromotion, &call.name) {
                self.notice(
                    Severity::Warn,
                    "Canary promotion is waiting for approval.".into(),
                    false,
                );
            }
        } else {
            self.message = msg;
        }
        Ok(false)
    }

    /// The confirm-promotion gate, then the promotion.
    pub(super) fn promotion_gate(&mut self) -> Step {
        if self.promotion_gate_open()? {
            self.start_promotion();
        }
        Ok(())
    }
}
