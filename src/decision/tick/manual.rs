//! Manual control: annotations on the Canary that a person (or `kubectl serin`) sets. serin.dev/promote and
//! serin.dev/abort act once per new value, at once (no interval to wait for); serin.dev/pause holds the
//! analysis while it is "true". Every value acted on is recorded in status.manual, so a value seen again
//! (a restart, a re-apply) does nothing, and a value set while nothing is analysed is refused, never kept
//! for the next revision.

use super::{Tick, Why};
use crate::api::analysis::Severity;
use crate::api::{CheckVerdict, HookResult, Phase};
use crate::decision::Reason;

/// A promote value that starts with this promotes even while checks fail.
pub const FORCE_PREFIX: &str = "force";

impl Tick<'_> {
    pub(super) fn paused(&self) -> bool {
        self.status.manual.as_ref().is_some_and(|m| m.paused)
    }

    /// Acts on new annotation values; true when that decided the tick (a promotion or rollback began).
    pub(super) fn manual(&mut self, phase: Phase) -> bool {
        let wanted = self.o.manual.clone();
        let mut seen = self.status.manual.clone().unwrap_or_default();
        let analysing = matches!(
            phase,
            Phase::Waiting | Phase::Progressing | Phase::WaitingPromotion
        );
        let mut acted = false;
        if wanted.pause != seen.paused {
            seen.paused = wanted.pause;
            let (reason, what) = if wanted.pause {
                (Reason::Paused, "paused")
            } else {
                (Reason::Resumed, "resumed")
            };
            let msg = format!(
                "Analysis of {} {what} by hand (serin.dev/pause) at canary weight {}",
                self.name(),
                self.status.canary_weight
            );
            self.event(reason, false, msg);
            self.notice(
                Severity::Info,
                format!("Canary analysis {what} by hand."),
                false,
            );
        }
        let new = |now: &Option<String>, before: &Option<String>| now.is_some() && now != before;
        if new(&wanted.abort, &seen.abort) {
            seen.abort = wanted.abort.clone();
            let value = wanted.abort.clone().unwrap_or_default();
            if analysing {
                let msg = format!(
                    "Aborting the analysis of {} revision {} by hand (serin.dev/abort: {value})",
                    self.name(),
                    self.revision()
                );
                self.event(Reason::ManualAbort, true, msg);
                self.rollback(Why::Aborted(value));
                acted = true;
            } else {
                self.refuse(
                    "abort",
                    &value,
                    &format!("no analysis is under way (phase {phase})"),
                );
            }
        }
        if new(&wanted.promote, &seen.promote) {
            seen.promote = wanted.promote.clone();
            let value = wanted.promote.clone().unwrap_or_default();
            match self.promotion_refused(phase, acted, &value) {
                Some(why) => self.refuse("promote", &value, &why),
                None => {
                    let msg = format!(
                        "Promoting {} revision {} by hand (serin.dev/promote: {value}): the remaining steps are skipped",
                        self.name(),
                        self.revision()
                    );
                    self.event(Reason::ManualPromotion, false, msg);
                    self.notice(
                        Severity::Info,
                        "Canary promotion requested by hand, skipping the remaining steps.".into(),
                        false,
                    );
                    self.status.last_applied_spec = Some(self.revision().to_string());
                    self.desired.canary_scale = crate::decision::Scale::Up;
                    self.start_promotion();
                    acted = true;
                }
            }
        }
        self.status.manual = (seen != Default::default()).then_some(seen);
        acted
    }

    /// Why serin.dev/promote can't act now, if it can't.
    fn promotion_refused(&self, phase: Phase, aborted: bool, value: &str) -> Option<String> {
        if aborted {
            return Some("serin.dev/abort was set as well, and wins".into());
        }
        match phase {
            Phase::Waiting => {}
            Phase::Progressing | Phase::WaitingPromotion => {
                if self.status.last_applied_spec.as_deref() != Some(self.revision()) {
                    return Some(format!(
                        "a newer revision {} arrived; its analysis starts over",
                        self.revision()
                    ));
                }
            }
            _ => return Some(format!("no analysis is under way (phase {phase})")),
        }
        if value.starts_with(FORCE_PREFIX) {
            return None;
        }
        let failing: Vec<String> = self
            .status
            .checks
            .iter()
            .filter(|c| c.verdict == CheckVerdict::Failed)
            .map(|c| c.message.clone().unwrap_or_else(|| c.name.clone()))
            .chain(
                self.status
                    .webhooks
                    .iter()
                    .filter(|w| {
                        w.result == HookResult::Failed
                            && matches!(
                                w.hook_type,
                                crate::api::analysis::HookType::PreRollout
                                    | crate::api::analysis::HookType::Rollout
                            )
                    })
                    .map(|w| format!("{} webhook {}: {}", w.hook_type, w.name, w.message)),
            )
            .collect();
        (!failing.is_empty()).then(|| {
            format!(
                "checks fail ({}); set a value starting with \"{FORCE_PREFIX}\" to promote anyway",
                failing.join("; ")
            )
        })
    }

    fn refuse(&mut self, what: &str, value: &str, why: &str) {
        let msg = format!("serin.dev/{what}: {value} refused: {why}");
        self.event(Reason::ManualRefused, true, msg);
    }
}
