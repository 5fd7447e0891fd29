//! The analysis phases: wait for the canary to be ready, then at each interval run the checks and step
//! traffic (canary), count iterations (blue/green, A/B), hold on no data, or roll back at the threshold.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

use super::{Step, Tick, Why};
use crate::api::analysis::{HookType, Severity};
use crate::api::status::MAX_STATUS_CHECKS;
use crate::api::{CheckStatus, CheckVerdict, Phase};
use crate::decision::settings::Strategy;
use crate::decision::{Checks, Need, Readiness, Reason, Scale, Traffic, Weights};

impl Tick<'_> {
    pub(super) fn analyse(&mut self) -> Step {
        if self.status.last_applied_spec.as_deref() != Some(self.revision()) {
            let msg = format!(
                "New revision {} of {} during analysis: starting over",
                self.revision(),
                self.name()
            );
            self.event(Reason::NewRevision, false, msg);
            return self.begin();
        }
        self.desired.canary_scale = Scale::Up;
        // The route says where traffic is: after a crash between writing it and the status, it is right.
        let current = match (&self.s.strategy, self.o.routed) {
            (Strategy::Canary { .. }, Some(Traffic::Split(w))) => w.canary,
            _ => self.status.canary_weight,
        };
        let matched = self.status.last_step_time.is_some() && !self.pre_rollout_pending();
        // The mirrored step of a canary is over once a weight is set; read back, so a restart keeps it.
        let mirrored = self.o.routed == Some(Traffic::Mirrored);
        let traffic = match self.s.strategy {
            Strategy::AbTesting { .. } if matched => Traffic::Matched,
            Strategy::BlueGreen { .. } if self.s.mirror && matched && current == 0 => {
                Traffic::Mirrored
            }
            Strategy::Canary { .. } if self.s.mirror && mirrored && current == 0 => {
                Traffic::Mirrored
            }
            _ => Traffic::Split(Weights::canary(current)),
        };
        self.set_traffic(traffic);
        if self.s.suspend {
            self.message = format!("Suspended at canary weight {current}");
            return Ok(());
        }
        if self.due() && self.rollback_requested()? {
            return Ok(());
        }
        if let Readiness::NotReady(why) = &self.o.target.ready {
            if self.hold_rollout(&format!("Canary {}", self.name()), why) {
                let why = format!("Canary {} not ready: {why}", self.name());
                self.rollback(Why::Deadline(format!(
                    "{why}, for longer than the progress deadline of {:?}",
                    self.s.progress_deadline
                )));
            }
            return Ok(());
        }
        if !self.step_due() {
            return Ok(());
        }
        let first_step = self.status.last_step_time.is_none();
        if first_step {
            // Waiting for the canary to scale up is over; a later hold (no data) has a clock of its own.
            self.status.holding_since = None;
            let msg = format!("Canary {} is ready: starting analysis", self.name());
            self.event(Reason::CanaryReady, false, msg);
        }
        // The pre-rollout webhooks run before the first traffic, again each step until they pass.
        let starting = first_step || self.pre_rollout_pending();
        if starting && !self.hook_checks(HookType::PreRollout)? {
            return Ok(());
        }
        match &self.s.strategy {
            // Mirroring first: the canary gets a copy of the requests for one step (canary) or every
            // iteration (blue/green), judged from the next step on.
            Strategy::Canary { .. } | Strategy::BlueGreen { .. }
                if self.s.mirror
                    && current == 0
                    && !mirrored
                    && (starting || matches!(self.s.strategy, Strategy::Canary { .. })) =>
            {
                self.stepped();
                self.set_traffic(Traffic::Mirrored);
                let msg = format!("Mirroring requests to canary {}", self.name());
                self.event(Reason::MirroringStarted, false, msg);
                Ok(())
            }
            // At weight 0 no traffic reaches the canary, so there is nothing to judge: no checks.
            Strategy::Canary { .. } if current == 0 && !(self.s.mirror && mirrored) => {
                self.stepped();
                self.advance(current)
            }
            Strategy::AbTesting { .. } if starting => {
                self.stepped();
                self.set_traffic(Traffic::Matched);
                let msg = format!("Routing requests that match to canary {}", self.name());
                self.event(Reason::IterationAdvanced, false, msg);
                Ok(())
            }
            _ => self.judge(current),
        }
    }

    pub(super) fn stepped(&mut self) {
        self.status.last_step_time = Some(MicroTime(self.o.now));
        self.requeue = self.s.interval;
    }

    /// A failed check (a metric out of range, or a pre-rollout or rollout webhook that failed): counted,
    /// and at the threshold the canary is rolled back.
    pub(super) fn fail_check(&mut self, message: String) {
        self.status.holding_since = None;
        self.status.failed_checks += 1;
        let (failed, threshold) = (self.status.failed_checks, self.s.threshold);
        let msg = format!(
            "Halt advancement of {}: {message} (failed checks {failed} of {threshold})",
            self.name()
        );
        self.event(Reason::CheckFailed, true, msg);
        if failed >= threshold {
            self.rollback(Why::Checks(message));
        }
    }

    pub(super) fn judge(&mut self, current: i32) -> Step {
        if !self.hook_checks(HookType::Rollout)? {
            return Ok(());
        }
        let Some(round) = &self.o.checks else {
            return Err(Need::Checks);
        };
        self.stepped();
        self.status.checks = for_status(&round.results);
        if !round.evidence.is_empty() {
            self.status.evidence = round.evidence.clone();
            let summary = round
                .evidence
                .iter()
                .map(|e| e.message.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            self.event(Reason::Evidence, false, summary);
        }
        match &round.verdict {
            Checks::Passed | Checks::Unproven { .. } => {
                self.status.holding_since = None;
                if self.paused() {
                    self.message = format!(
                        "Paused at canary weight {current} by serin.dev/pause: the checks go on"
                    );
                    return Ok(());
                }
                let proven = round.verdict == Checks::Passed;
                if let Checks::Unproven { message } = &round.verdict {
                    // More traffic is more evidence: the steps go on; only the promotion waits for the
                    // proof.
                    let last_step = match self.s.strategy {
                        Strategy::Canary { max_weight, .. } => current >= max_weight,
                        Strategy::BlueGreen { iterations } | Strategy::AbTesting { iterations } => {
                            self.status.iterations >= iterations
                        }
                    };
                    if last_step {
                        self.unproven(message.clone());
                        return Ok(());
                    }
                }
                match self.s.strategy {
                    // Every compared metric has proven the canary good: no need to wait for maxWeight.
                    Strategy::Canary { .. } if proven && self.s.promote_when_proven => {
                        self.promotion_gate()
                    }
                    Strategy::Canary { .. } => self.advance(current),
                    Strategy::BlueGreen { iterations } => self.iterate(iterations, true),
                    Strategy::AbTesting { iterations } => self.iterate(iterations, false),
                }
            }
            Checks::Regressed { message } => {
                self.status.holding_since = None;
                let msg = format!("Halt advancement of {}: {message}", self.name());
                self.event(Reason::Regressed, true, msg);
                self.rollback(Why::Regressed(message.clone()));
                Ok(())
            }
            Checks::Failed { message } => {
                self.fail_check(message.clone());
                Ok(())
            }
            Checks::NoData { message } => {
                if self.message != *message {
                    self.notice(
                        Severity::Warn,
                        format!("Canary is holding: {message}"),
                        false,
                    );
                }
                if self.hold(message.clone()) {
                    self.rollback(Why::Deadline(format!(
                        "{message}, for longer than the progress deadline of {:?}",
                        self.s.progress_deadline
                    )));
                }
                self.requeue = self.s.interval;
                Ok(())
            }
        }
    }

    /// At the last step, a canary not yet proven good holds, until maxDuration from its first judged
    /// traffic, when it is rolled back: never promoted on too little evidence.
    fn unproven(&mut self, message: String) {
        let since = self
            .status
            .evidence
            .iter()
            .map(|e| e.since.0)
            .min()
            .unwrap_or(self.o.now);
        let waited = super::elapsed(self.o.now, &MicroTime(since));
        if waited >= self.s.max_duration {
            self.rollback(Why::Unproven(format!(
                "insufficient evidence after {} (analysis.maxDuration): {message}",
                crate::api::duration::format_duration(self.s.max_duration)
            )));
            return;
        }
        self.message = format!("Holding for evidence: {message}");
        self.requeue = self.s.interval;
    }

    pub(super) fn advance(&mut self, current: i32) -> Step {
        let Strategy::Canary { max_weight, .. } = self.s.strategy else {
            return Ok(());
        };
        if self.paused() {
            self.message = format!("Paused at canary weight {current} by serin.dev/pause");
            return Ok(());
        }
        if current >= max_weight {
            return self.promotion_gate();
        }
        if !self.traffic_increase_gate()? {
            return Ok(());
        }
        let next = self.s.strategy.next_weight(current);
        self.set_traffic(Traffic::Split(Weights::canary(next)));
        self.event(
            Reason::WeightAdvanced,
            false,
            format!("Advance {} canary weight {next}", self.name()),
        );
        Ok(())
    }

    /// Blue/green and A/B: count passed iterations; blue/green then sends all traffic to the canary for one
    /// more iteration before promoting. The confirm-promotion gate comes before that last iteration (blue/green)
    /// or the promotion (A/B), as in Flagger.
    pub(super) fn iterate(&mut self, iterations: i32, blue_green: bool) -> Step {
        let done = self.status.iterations;
        if done < iterations {
            self.status.iterations += 1;
            let msg = format!(
                "Advance {} canary iteration {}/{iterations}",
                self.name(),
                done + 1
            );
            self.event(Reason::IterationAdvanced, false, msg);
        } else if blue_green && done == iterations {
            if !self.promotion_gate_open()? {
                return Ok(());
            }
            self.set_phase(Phase::Progressing);
            self.status.iterations += 1;
            self.set_traffic(Traffic::Split(Weights::canary(
                crate::api::canary::TOTAL_WEIGHT,
            )));
            let msg = if self.s.mirror {
                format!(
                    "Stop mirroring and route all traffic to canary {}",
                    self.name()
                )
            } else {
                format!("Routing all traffic to canary {}", self.name())
            };
            self.event(Reason::IterationAdvanced, false, msg);
        } else if blue_green {
            self.start_promotion();
        } else {
            return self.promotion_gate();
        }
        Ok(())
    }
}

/// The results status.checks can hold: all of them up to its maxItems, else the failed and erring ones
/// first, in their order (a status write over the limit would fail on every tick).
fn for_status(results: &[CheckStatus]) -> Vec<CheckStatus> {
    if results.len() <= MAX_STATUS_CHECKS {
        return results.to_vec();
    }
    let (telling, passed): (Vec<&CheckStatus>, Vec<&CheckStatus>) = results
        .iter()
        .partition(|r| r.verdict != CheckVerdict::Passed);
    telling
        .into_iter()
        .chain(passed)
        .take(MAX_STATUS_CHECKS)
        .cloned()
        .collect()
}
