//! The roll forward in git, as the core sees it: a rollback opens status.writeBack for the failed revision
//! (the images to restore: each container whose image differs between the failed target and the primary);
//! the writer's reports are folded into it, each new phase told once (event, condition WrittenBack, a
//! notice with the commit); and while it is open the decision keeps a writer at work.

use super::Tick;
use crate::api::ConditionType;
use crate::api::analysis::Severity;
use crate::api::write_back::{ImageChange, WriteBackPhase, WriteBackStatus};
use crate::decision::{Reason, conditions};

impl Tick<'_> {
    /// On a rollback: what git is to say again.
    pub(super) fn open_write_back(&mut self, cause: &str) {
        if !self.o.write_back.enabled {
            return;
        }
        let for_revision = self.status.last_applied_spec.clone().unwrap_or_default();
        let images = &self.o.images;
        let changes: Vec<ImageChange> = images
            .target
            .iter()
            .filter_map(|(container, failed)| {
                let (_, promoted) = images.primary.iter().find(|(c, _)| c == container)?;
                (promoted != failed).then(|| ImageChange {
                    container: container.clone(),
                    from: failed.clone(),
                    to: promoted.clone(),
                })
            })
            .collect();
        let mut wb = WriteBackStatus {
            phase: WriteBackPhase::Pending,
            for_revision,
            opened: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
                self.o.now,
            )),
            cause: cause.to_string(),
            changes,
            message: "to be written".into(),
            ..WriteBackStatus::default()
        };
        if wb.changes.is_empty() {
            wb.phase = WriteBackPhase::Failed;
            wb.reason = Some("NothingToRestore".into());
            wb.message = format!(
                "{} runs the images {}-primary runs: the failed revision differs in other fields, which a roll forward of images does not restore",
                self.name(),
                self.name()
            );
            self.event(Reason::WriteBackSkipped, true, wb.message.clone());
        }
        self.status.write_back = Some(wb);
    }

    /// Folds the writer's report in, says what changed, sets WrittenBack; the writer to keep, if any.
    pub(super) fn fold_write_back(&mut self) -> Option<String> {
        let (now, generation) = (self.o.now, self.o.generation);
        let current = self.status.write_back.clone()?;
        let mut next = current.clone();
        // A report of this roll forward's writer: the same revision failing again (after a retry) is a new
        // one, which an earlier writer's report must not close.
        if let Some(report) = &self.o.write_back.report
            && report.for_revision == current.for_revision
            && report.opened == current.opened
        {
            next = report.clone();
        }
        if next.is_open() && !self.o.write_back.enabled {
            next.phase = WriteBackPhase::Failed;
            next.reason = Some("Disabled".into());
            next.message = "spec.writeBack was removed before the roll forward was written".into();
        }
        let told = (current.phase, current.reason.as_deref());
        if (next.phase, next.reason.as_deref()) != told {
            self.tell_write_back(&next);
        }
        let (status, reason) = match next.phase {
            WriteBackPhase::Pending => ("Unknown", next.reason.as_deref().unwrap_or("Pending")),
            WriteBackPhase::Pushed | WriteBackPhase::Applied | WriteBackPhase::AlreadyUpToDate => {
                ("True", next.phase.as_str())
            }
            WriteBackPhase::Superseded | WriteBackPhase::DryRun => ("False", next.phase.as_str()),
            WriteBackPhase::Failed => ("False", next.reason.as_deref().unwrap_or("Failed")),
        };
        let message = next.message.clone();
        conditions::set(
            &mut self.status,
            ConditionType::WrittenBack,
            status,
            reason,
            &message,
            now,
            generation,
        );
        let keep = (next.is_open() && !self.s.suspend).then(|| next.for_revision.clone());
        self.status.write_back = Some(next);
        keep
    }

    fn tell_write_back(&mut self, wb: &WriteBackStatus) {
        let restored = wb
            .changes
            .iter()
            .map(|c| c.to.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let commit = wb
            .commit
            .as_deref()
            .map(crate::api::write_back::short)
            .unwrap_or("");
        let (reason, warning, msg) = match wb.phase {
            WriteBackPhase::Pending => return,
            WriteBackPhase::Pushed => (
                Reason::WriteBackPushed,
                false,
                format!("Rolled forward in git to {restored}: {}", wb.message),
            ),
            WriteBackPhase::Applied => (
                Reason::WriteBackApplied,
                false,
                format!("Roll-forward commit {commit} applied: {}", wb.message),
            ),
            WriteBackPhase::AlreadyUpToDate
            | WriteBackPhase::Superseded
            | WriteBackPhase::DryRun => (
                Reason::WriteBackSkipped,
                wb.phase == WriteBackPhase::Superseded,
                format!("Roll forward in git {}: {}", wb.phase, wb.message),
            ),
            WriteBackPhase::Failed => (
                Reason::WriteBackFailed,
                true,
                format!(
                    "Roll forward in git failed ({}): {}",
                    wb.reason.as_deref().unwrap_or("Failed"),
                    wb.message
                ),
            ),
        };
        self.event(reason, warning, msg.clone());
        if wb.phase == WriteBackPhase::Pushed {
            let mut details = vec![
                ("Commit".to_string(), wb.commit.clone().unwrap_or_default()),
                ("Restored".to_string(), restored),
            ];
            if let Some(repo) = &wb.repository {
                let at = wb.branch.as_deref().unwrap_or("");
                details.push(("Repository".to_string(), format!("{repo} {at}")));
            }
            self.notice_with(
                Severity::Info,
                format!("Rolled back revision written to git: commit {commit}"),
                false,
                details,
            );
        } else if wb.phase == WriteBackPhase::Failed {
            self.notice_with(Severity::Warn, msg, false, vec![]);
        }
    }
}
