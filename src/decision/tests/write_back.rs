//! The roll forward in git as the core sees it: a rollback opens status.writeBack with the images to
//! restore; the writer's reports are folded in, each new phase told once; the writer is kept while it
//! has work, and never for a suspended Canary.

use serde_json::json;

use super::*;
use crate::api::Phase;
use crate::api::write_back::{WriteBackPhase, WriteBackStatus};
use crate::decision::*;

const FAILED: &str = "ghcr.io/stefanprodan/podinfo:6.0.2";
const PROMOTED: &str = "ghcr.io/stefanprodan/podinfo:6.0.1";

/// r2 (6.0.2) rolled back with write-back on; the primary on r1 (6.0.1).
fn rolled_back(enabled: bool) -> (World, Decision) {
    let mut w = World::progressing(json!({"interval": "10s", "stepWeight": 10, "threshold": 1}));
    w.o.write_back.enabled = enabled;
    w.o.images = Images {
        target: vec![
            ("init".into(), "busybox:1".into()),
            ("podinfod".into(), FAILED.into()),
            ("sidecar".into(), "envoy:1".into()),
        ],
        primary: vec![
            ("init".into(), "busybox:1".into()),
            ("podinfod".into(), PROMOTED.into()),
            ("sidecar".into(), "envoy:1".into()),
        ],
    };
    w.tick(None);
    w.later(10);
    let d = w.tick(Some(failed(
        "request-success-rate 71.2% is below the minimum 99%",
    )));
    assert_eq!(w.phase(), Phase::Failed);
    (w, d)
}

fn write_back(w: &World) -> WriteBackStatus {
    w.o.status.write_back.clone().expect("status.writeBack")
}

fn condition(w: &World) -> (String, String) {
    let c =
        w.o.status
            .conditions
            .iter()
            .find(|c| c.type_ == "WrittenBack")
            .expect("condition WrittenBack");
    (c.status.clone(), c.reason.clone().unwrap_or_default())
}

#[test]
fn a_rollback_opens_the_write_back_of_the_changed_images() {
    let (w, d) = rolled_back(true);
    let wb = write_back(&w);
    assert_eq!(wb.phase, WriteBackPhase::Pending);
    assert_eq!(wb.for_revision, "r2");
    assert_eq!(
        wb.changes.len(),
        1,
        "only the image that differs: {:?}",
        wb.changes
    );
    assert_eq!(
        (
            wb.changes[0].container.as_str(),
            wb.changes[0].from.as_str(),
            wb.changes[0].to.as_str()
        ),
        ("podinfod", FAILED, PROMOTED)
    );
    assert!(wb.cause.contains("71.2%"), "{}", wb.cause);
    assert_eq!(
        d.write_back.as_deref(),
        Some("r2"),
        "a writer is kept at work"
    );
    assert_eq!(condition(&w), ("Unknown".into(), "Pending".into()));
}

#[test]
fn off_by_default() {
    let (w, d) = rolled_back(false);
    assert!(w.o.status.write_back.is_none());
    assert_eq!(d.write_back, None);
}

#[test]
fn each_report_is_folded_in_and_told_once() {
    let (mut w, _) = rolled_back(true);
    let mut report = write_back(&w);
    report.phase = WriteBackPhase::Pushed;
    report.commit = Some("4964e59a1b2c3d4e5f60718293a4b5c6d7e8f901".into());
    report.branch = Some("main".into());
    report.repository = Some("http://127.0.0.1/fleet.git".into());
    report.message = "pushed 4964e59a1b2c to main (apps/podinfo/deployment.yaml)".into();
    w.o.write_back.report = Some(report.clone());
    w.events.clear();
    w.notices.clear();
    w.later(10);
    let d = w.tick(None);
    assert_eq!(write_back(&w), report);
    assert_eq!(w.reasons(), vec![Reason::WriteBackPushed], "{:?}", w.events);
    assert!(w.events[0].message.contains(PROMOTED), "{:?}", w.events);
    assert_eq!(condition(&w), ("True".into(), "Pushed".into()));
    assert_eq!(d.write_back.as_deref(), Some("r2"), "kept until applied");
    // The notification carries the commit.
    assert_eq!(w.notices.len(), 1, "{:?}", w.notices);
    assert!(
        w.notices[0]
            .details
            .iter()
            .any(|(k, v)| k == "Commit" && v.starts_with("4964e59"))
    );
    // The same report again: nothing more said.
    w.later(10);
    w.tick(None);
    assert_eq!(w.events.len(), 1);
    // Applied: said, and the writer is let go.
    report.phase = WriteBackPhase::Applied;
    report.message = "main@sha1:4964e59 applied by Kustomization flux-system/podinfo".into();
    w.o.write_back.report = Some(report);
    w.later(10);
    let d = w.tick(None);
    assert_eq!(
        w.reasons(),
        vec![Reason::WriteBackPushed, Reason::WriteBackApplied]
    );
    assert_eq!(condition(&w), ("True".into(), "Applied".into()));
    assert_eq!(d.write_back, None);
    assert_eq!(w.phase(), Phase::Failed, "the rollout did fail");
}

#[test]
fn a_report_for_another_revision_is_ignored() {
    let (mut w, _) = rolled_back(true);
    let mut report = write_back(&w);
    report.for_revision = "r0".into();
    report.phase = WriteBackPhase::Pushed;
    w.o.write_back.report = Some(report);
    w.later(10);
    w.tick(None);
    assert_eq!(write_back(&w).phase, WriteBackPhase::Pending);
}

#[test]
fn a_failure_that_may_pass_keeps_the_writer_and_one_that_cannot_lets_it_go() {
    let (mut w, _) = rolled_back(true);
    let mut report = write_back(&w);
    report.phase = WriteBackPhase::Failed;
    report.reason = Some("AuthFailed".into());
    report.message = "the git server refused the credentials: HTTP 401".into();
    w.o.write_back.report = Some(report.clone());
    w.events.clear();
    w.later(10);
    let d = w.tick(None);
    assert_eq!(w.reasons(), vec![Reason::WriteBackFailed]);
    assert!(w.events[0].warning);
    assert_eq!(condition(&w), ("False".into(), "AuthFailed".into()));
    assert_eq!(d.write_back.as_deref(), Some("r2"), "tried again later");
    report.reason = Some("Ambiguous".into());
    w.o.write_back.report = Some(report);
    w.later(10);
    let d = w.tick(None);
    assert_eq!(d.write_back, None);
    assert_eq!(condition(&w), ("False".into(), "Ambiguous".into()));
}

#[test]
fn suspended_never_writes_and_removing_write_back_closes_it() {
    let (mut w, _) = rolled_back(true);
    w.o.spec.suspend = true;
    w.later(10);
    assert_eq!(
        w.tick(None).write_back,
        None,
        "a suspended Canary never writes back"
    );
    w.o.spec.suspend = false;
    w.later(10);
    assert_eq!(w.tick(None).write_back.as_deref(), Some("r2"));
    w.o.write_back.enabled = false;
    w.later(10);
    let d = w.tick(None);
    assert_eq!(d.write_back, None);
    assert_eq!(write_back(&w).reason.as_deref(), Some("Disabled"));
}

#[test]
fn nothing_to_restore_when_no_image_changed() {
    let mut w = World::progressing(json!({"interval": "10s", "stepWeight": 10, "threshold": 1}));
    w.o.write_back.enabled = true;
    w.o.images = Images {
        target: vec![("podinfod".into(), PROMOTED.into())],
        primary: vec![("podinfod".into(), PROMOTED.into())],
    };
    w.tick(None);
    w.later(10);
    let d = w.tick(Some(failed(
        "request-success-rate 71.2% is below the minimum 99%",
    )));
    let wb = write_back(&w);
    assert_eq!(
        (wb.phase, wb.reason.as_deref()),
        (WriteBackPhase::Failed, Some("NothingToRestore"))
    );
    assert!(w.reasons().contains(&Reason::WriteBackSkipped));
    assert_eq!(d.write_back, None);
}

#[test]
fn the_same_revision_failing_again_after_a_retry_is_a_new_roll_forward() {
    let (mut w, _) = rolled_back(true);
    let mut report = write_back(&w);
    report.phase = WriteBackPhase::Applied;
    report.commit = Some("4964e59a1b2c".into());
    w.o.write_back.report = Some(report.clone());
    w.later(10);
    w.tick(None);
    assert_eq!(write_back(&w).phase, WriteBackPhase::Applied);
    // serin.dev/retry: analysed again, and rolled back again.
    w.o.retry = Some("1".into());
    w.later(10);
    w.tick(None);
    assert_eq!(w.phase(), Phase::Progressing, "{:?}", w.events);
    w.tick(None);
    w.later(10);
    let d = w.tick(Some(failed(
        "request-success-rate 70.1% is below the minimum 99%",
    )));
    assert_eq!(w.phase(), Phase::Failed);
    // The old writer's report (still the latest the controller holds) does not close the new one.
    let wb = write_back(&w);
    assert_eq!(wb.phase, WriteBackPhase::Pending, "{wb:?}");
    assert_ne!(wb.opened, report.opened);
    assert!(wb.cause.contains("70.1%"));
    assert_eq!(d.write_back.as_deref(), Some("r2"));
}
