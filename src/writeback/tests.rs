//! The locator and splicer on fixture files, and the writer against real bare repositories (file://, the
//! git CLI): compare-and-swap, retry, idempotence. No cluster.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use super::*;
use crate::api::write_back::ImageChange;
use locate::{Located, Query, apply_edits, locate};

const FROM: &str = "ghcr.io/stefanprodan/podinfo:6.0.2";
const TO: &str = "ghcr.io/stefanprodan/podinfo:6.0.1";

fn change() -> Vec<ImageChange> {
    vec![ImageChange {
        container: "podinfod".into(),
        from: FROM.into(),
        to: TO.into(),
    }]
}

fn query<'a>(changes: &'a [ImageChange], origin: Option<&'a str>) -> Query<'a> {
    Query {
        canary_namespace: "test",
        canary_name: "podinfo",
        kind: "Deployment",
        name: "podinfo",
        origin,
        root: "",
        changes,
    }
}

fn files(list: &[(&str, &str)]) -> BTreeMap<String, String> {
    list.iter()
        .map(|(p, t)| (p.to_string(), t.to_string()))
        .collect()
}

const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: podinfo\nspec:\n  template:\n    spec:\n      containers:\n        - name: podinfod\n          image: ghcr.io/stefanprodan/podinfo:6.0.2 # the app\n          ports:\n            - containerPort: 9898\n";

#[test]
fn the_manifest_by_kind_name_and_container_with_its_comment_kept() {
    let changes = change();
    let f = files(&[("apps/podinfo/deployment.yaml", DEPLOYMENT)]);
    let out = locate(&f, &query(&changes, None));
    assert!(
        matches!(
            &out[0].1,
            Located::Edit {
                line: 10,
                how: "manifest",
                ..
            }
        ),
        "{out:?}"
    );
    let edited = apply_edits(&f, &out).unwrap();
    assert_eq!(
        edited["apps/podinfo/deployment.yaml"],
        DEPLOYMENT.replace("podinfo:6.0.2 # the app", "podinfo:6.0.1 # the app")
    );
}

#[test]
fn compare_and_swap_already_restored_or_moved_on() {
    let changes = change();
    let restored = files(&[("d.yaml", &DEPLOYMENT.replace("6.0.2", "6.0.1"))]);
    assert!(matches!(
        locate(&restored, &query(&changes, None))[0].1,
        Located::UpToDate { .. }
    ));
    let newer = files(&[("d.yaml", &DEPLOYMENT.replace("6.0.2", "6.0.3"))]);
    assert!(matches!(
        &locate(&newer, &query(&changes, None))[0].1,
        Located::Superseded { value, .. } if value.ends_with("6.0.3")
    ));
}

#[test]
fn a_marker_wins_and_may_hold_a_tag_alone() {
    let changes = change();
    let values = "image:\n  repository: ghcr.io/stefanprodan/podinfo\n  tag: \"6.0.2\" # {\"$serin\": \"test:podinfo\"}\n";
    let f = files(&[("values.yaml", values), ("d.yaml", DEPLOYMENT)]);
    let out = locate(&f, &query(&changes, None));
    assert!(
        matches!(&out[0].1, Located::Edit { how: "marker", file, .. } if file == "values.yaml"),
        "{out:?}"
    );
    let edited = apply_edits(&f, &out).unwrap();
    assert!(edited["values.yaml"].contains("tag: \"6.0.1\" # {\"$serin\": \"test:podinfo\"}"));
    assert!(!edited.contains_key("d.yaml"));
    // Another canary's marker is not ours.
    let other = files(&[("values.yaml", &values.replace("test:podinfo", "test:other"))]);
    assert!(matches!(
        locate(&other, &query(&changes, None))[0].1,
        Located::NotFound(_)
    ));
}

#[test]
fn a_kustomization_images_entry_overrides_the_manifest() {
    let changes = change();
    let k = "resources:\n  - deployment.yaml\nimages:\n  - name: ghcr.io/stefanprodan/podinfo\n    newTag: 6.0.2\n";
    let f = files(&[
        ("app/kustomization.yaml", k),
        ("app/deployment.yaml", DEPLOYMENT),
    ]);
    let out = locate(&f, &query(&changes, Some("app/deployment.yaml")));
    assert!(
        matches!(
            &out[0].1,
            Located::Edit {
                how: "kustomization newTag",
                ..
            }
        ),
        "{out:?}"
    );
    assert!(apply_edits(&f, &out).unwrap()["app/kustomization.yaml"].ends_with("newTag: 6.0.1\n"));
}

#[test]
fn another_apps_kustomization_is_not_the_targets() {
    let changes = change();
    // Under ./apps: frontend pins podinfo by kustomize images:, backend (the target) in its manifest.
    let front = "images:\n  - name: ghcr.io/stefanprodan/podinfo\n    newTag: 6.0.2\n";
    let f = files(&[
        ("apps/frontend/kustomization.yaml", front),
        (
            "apps/backend/kustomization.yaml",
            "resources:\n  - deployment.yaml\n",
        ),
        ("apps/backend/deployment.yaml", DEPLOYMENT),
    ]);
    let mut q = query(&changes, None);
    q.root = "apps";
    let out = locate(&f, &q);
    assert!(
        matches!(&out[0].1, Located::Edit { file, how: "manifest", .. } if file == "apps/backend/deployment.yaml"),
        "{out:?}"
    );
    // An overlay above the manifest's directory does decide it.
    let f = files(&[
        ("apps/kustomization.yaml", front),
        ("apps/backend/deployment.yaml", DEPLOYMENT),
    ]);
    let out = locate(&f, &q);
    assert!(
        matches!(&out[0].1, Located::Edit { file, .. } if file == "apps/kustomization.yaml"),
        "{out:?}"
    );
}

#[test]
fn a_tag_that_yaml_would_read_as_a_number_is_quoted() {
    let changes = vec![ImageChange {
        container: "podinfod".into(),
        from: "ghcr.io/x/app:1.10.1".into(),
        to: "ghcr.io/x/app:1.10".into(),
    }];
    let k = "images:\n  - name: ghcr.io/x/app\n    newTag: 1.10.1 # pinned\n";
    let f = files(&[("kustomization.yaml", k)]);
    let edited = apply_edits(&f, &locate(&f, &query(&changes, None))).unwrap();
    assert_eq!(
        edited["kustomization.yaml"],
        "images:\n  - name: ghcr.io/x/app\n    newTag: \"1.10\" # pinned\n"
    );
}

#[test]
fn the_origin_file_narrows_several_copies() {
    let changes = change();
    let f = files(&[
        ("a/deployment.yaml", DEPLOYMENT),
        ("b/deployment.yaml", DEPLOYMENT),
    ]);
    assert!(
        matches!(&locate(&f, &query(&changes, None))[0].1, Located::Ambiguous(sites) if sites.len() == 2)
    );
    let out = locate(&f, &query(&changes, Some("b/deployment.yaml")));
    assert!(
        matches!(&out[0].1, Located::Edit { file, how: "origin annotation", .. } if file == "b/deployment.yaml")
    );
}

#[test]
fn nothing_found_says_what_was_looked_for() {
    let changes = change();
    let f = files(&[("x.yaml", "kind: ConfigMap\nmetadata:\n  name: podinfo\n")]);
    let Located::NotFound(why) = &locate(&f, &query(&changes, None))[0].1 else {
        panic!()
    };
    assert!(
        why.contains("podinfod") && why.contains("Deployment podinfo"),
        "{why}"
    );
}

#[test]
fn multi_document_crlf_and_flow_style_keep_their_bytes() {
    let changes = change();
    let text = "kind: Service\r\nmetadata: {name: podinfo}\r\n---\r\nkind: Deployment\r\nmetadata: {name: podinfo}\r\nspec: {template: {spec: {containers: [{name: podinfod, image: 'ghcr.io/stefanprodan/podinfo:6.0.2'}]}}}\r\n";
    let f = files(&[("all.yaml", text)]);
    let edited = apply_edits(&f, &locate(&f, &query(&changes, None))).unwrap();
    assert_eq!(edited["all.yaml"], text.replace("6.0.2", "6.0.1"));
}

// The writer against real repositories.

fn sh(dir: &Path, script: &str) -> String {
    let out = Command::new("sh")
        .arg("-ec")
        .arg(script)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "dev")
        .env("GIT_AUTHOR_EMAIL", "dev@example.com")
        .env("GIT_COMMITTER_NAME", "dev")
        .env("GIT_COMMITTER_EMAIL", "dev@example.com")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A bare repository "origin.git" with apps/podinfo/deployment.yaml at 6.0.2 on main (parent: 6.0.1), and
/// a work tree "work" to push other people's commits from.
fn world(dir: &Path) -> String {
    std::fs::create_dir_all(dir.join("work/apps/podinfo")).unwrap();
    std::fs::write(
        dir.join("work/apps/podinfo/deployment.yaml"),
        DEPLOYMENT.replace("6.0.2", "6.0.1"),
    )
    .unwrap();
    sh(
        dir,
        "git init -q --bare -b main origin.git && cd work && git init -q -b main && git add -A && git commit -qm v1 && git remote add origin ../origin.git && git push -q origin main",
    );
    std::fs::write(dir.join("work/apps/podinfo/deployment.yaml"), DEPLOYMENT).unwrap();
    sh(
        dir,
        "cd work && git commit -qam 'podinfo 6.0.2' && git push -q origin main",
    );
    format!("file://{}/origin.git", dir.display())
}

fn job() -> Job {
    Job {
        canary_namespace: "test".into(),
        canary_name: "podinfo".into(),
        for_revision: "rev-602".into(),
        restored_revision: "rev-601".into(),
        cause: "request-success-rate 81.2 < 99 in 2 of 2 checks".into(),
        changes: change(),
        kind: "Deployment".into(),
        name: "podinfo".into(),
    }
}

fn dest(url: &str) -> Destination {
    Destination {
        remote: git::Remote {
            url: url.into(),
            ..Default::default()
        },
        branch: "main".into(),
        path: "apps/podinfo".into(),
        origin: None,
        push: Push::Branch,
        author_name: "serin".into(),
        author_email: "serin@noreply.invalid".into(),
        message_template: message::DEFAULT_TEMPLATE.into(),
        dry_run: false,
    }
}

#[tokio::test]
async fn one_commit_on_the_failed_one_then_nothing_more() {
    let dir = tempfile::tempdir().unwrap();
    let url = world(dir.path());
    let before = sh(dir.path(), "git --git-dir=origin.git rev-parse main");
    let w = write(&job(), &dest(&url), &Default::default()).await;
    assert_eq!(w.phase, WriteBackPhase::Pushed, "{w:?}");
    assert_eq!(w.attempts, 1);
    let head = sh(dir.path(), "git --git-dir=origin.git rev-parse main");
    assert_eq!(w.commit.as_deref(), Some(head.trim()));
    assert_eq!(
        sh(dir.path(), "git --git-dir=origin.git rev-parse main^"),
        before
    );
    let diff = sh(
        dir.path(),
        "git --git-dir=origin.git diff --unified=0 main^ main",
    );
    assert!(
        diff.contains("-          image: ghcr.io/stefanprodan/podinfo:6.0.2 # the app"),
        "{diff}"
    );
    assert!(
        diff.contains("+          image: ghcr.io/stefanprodan/podinfo:6.0.1 # the app"),
        "{diff}"
    );
    assert_eq!(
        diff.lines()
            .filter(|l| l.starts_with('+') && !l.starts_with("+++"))
            .count(),
        1
    );
    let msg = sh(
        dir.path(),
        "git --git-dir=origin.git log -1 --format='%an <%ae>%n%B' main",
    );
    assert!(msg.starts_with("serin <serin@noreply.invalid>\nRoll back test/podinfo to ghcr.io/stefanprodan/podinfo:6.0.1"), "{msg}");
    assert!(
        msg.contains("request-success-rate 81.2 < 99")
            && msg.contains("Serin-Failed-Revision: rev-602"),
        "{msg}"
    );
    // Again (a restart that lost the status): the tip is ours, recognised, no second commit.
    let again = write(&job(), &dest(&url), &Default::default()).await;
    assert_eq!(again.phase, WriteBackPhase::Pushed, "{again:?}");
    assert_eq!(again.commit.as_deref(), Some(head.trim()));
    // After someone else's unrelated commit on top: already up to date.
    sh(
        dir.path(),
        "cd work && git pull -q --rebase origin main && echo x > README && git add README && git commit -qm readme && git push -q origin main",
    );
    // Flux applying that later commit applies ours too.
    let later = sh(dir.path(), "git --git-dir=origin.git rev-parse main");
    let ws = git::Workspace::open(git::Remote {
        url: url.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        ws.is_ancestor("main", head.trim(), later.trim()).await,
        Ok(true)
    );
    assert_eq!(
        ws.is_ancestor("main", later.trim(), head.trim()).await,
        Ok(false)
    );
    let third = write(&job(), &dest(&url), &Default::default()).await;
    assert_eq!(third.phase, WriteBackPhase::AlreadyUpToDate, "{third:?}");
    assert_eq!(
        sh(dir.path(), "git --git-dir=origin.git rev-list --count main").trim(),
        "4"
    );
}

#[tokio::test]
async fn superseded_dry_run_and_a_missing_branch() {
    let dir = tempfile::tempdir().unwrap();
    let url = world(dir.path());
    let mut d = dest(&url);
    d.dry_run = true;
    let w = write(&job(), &d, &Default::default()).await;
    assert_eq!(w.phase, WriteBackPhase::DryRun, "{w:?}");
    assert!(
        w.diff
            .as_deref()
            .unwrap()
            .contains("+          image: ghcr.io/stefanprodan/podinfo:6.0.1 # the app")
    );
    assert_eq!(
        sh(dir.path(), "git --git-dir=origin.git rev-list --count main").trim(),
        "2"
    );
    std::fs::write(
        dir.path().join("work/apps/podinfo/deployment.yaml"),
        DEPLOYMENT.replace("6.0.2", "6.0.3"),
    )
    .unwrap();
    sh(
        dir.path(),
        "cd work && git commit -qam 6.0.3 && git push -q origin main",
    );
    let w = write(&job(), &dest(&url), &Default::default()).await;
    assert_eq!(w.phase, WriteBackPhase::Superseded, "{w:?}");
    assert!(w.message.contains("6.0.3"), "{}", w.message);
    let mut d = dest(&url);
    d.branch = "nope".into();
    let w = write(&job(), &d, &Default::default()).await;
    assert_eq!(
        (w.phase, w.reason.as_deref()),
        (WriteBackPhase::Failed, Some("NotFound")),
        "{w:?}"
    );
}

#[tokio::test]
async fn a_push_that_loses_the_race_fetches_again_and_lands_on_top() {
    let dir = tempfile::tempdir().unwrap();
    let url = world(dir.path());
    // Someone else's push lands while ours is in flight: the hook moves main once, so our ref update
    // fails and the writer must fetch and try again.
    let hook = dir.path().join("origin.git/hooks/pre-receive");
    std::fs::write(&hook, format!(
        "#!/bin/sh\n[ -e {d}/raced ] && exit 0\ntouch {d}/raced\nenv -i PATH=\"$PATH\" HOME={d} GIT_CONFIG_NOSYSTEM=1 GIT_AUTHOR_NAME=o GIT_AUTHOR_EMAIL=o@x GIT_COMMITTER_NAME=o GIT_COMMITTER_EMAIL=o@x sh -ec 'cd {d}/work && git pull -q --rebase origin main && echo race > RACE && git add RACE && git commit -qm race && git push -q origin HEAD:refs/heads/side && git --git-dir={d}/origin.git update-ref refs/heads/main refs/heads/side' >{d}/hook.log 2>&1\nexit 0\n",
        d = dir.path().display()
    ))
    .unwrap();
    sh(dir.path(), "chmod +x origin.git/hooks/pre-receive");
    let w = write(&job(), &dest(&url), &Default::default()).await;
    assert_eq!(w.phase, WriteBackPhase::Pushed, "{w:?}");
    assert_eq!(w.attempts, 2, "{w:?}");
    let log = sh(dir.path(), "git --git-dir=origin.git log --format=%s main");
    assert!(log.starts_with("Roll back test/podinfo"), "{log}");
    assert!(log.contains("\nrace\n"), "the other commit is kept: {log}");
}

#[tokio::test]
async fn a_separate_branch_leaves_the_base_alone() {
    let dir = tempfile::tempdir().unwrap();
    let url = world(dir.path());
    let before = sh(dir.path(), "git --git-dir=origin.git rev-parse main");
    let mut d = dest(&url);
    d.push = Push::Own("serin/rollback-podinfo".into());
    let w = write(&job(), &d, &Default::default()).await;
    assert_eq!(w.phase, WriteBackPhase::Pushed, "{w:?}");
    assert_eq!(
        sh(dir.path(), "git --git-dir=origin.git rev-parse main"),
        before
    );
    assert_eq!(
        sh(
            dir.path(),
            "git --git-dir=origin.git rev-parse serin/rollback-podinfo^"
        ),
        before
    );
    // Never the branch it reads: that one is never force-pushed.
    d.push = Push::Own("main".into());
    let w = write(&job(), &d, &Default::default()).await;
    assert_eq!(
        (w.phase, w.reason.as_deref()),
        (WriteBackPhase::Failed, Some("InvalidSpec")),
        "{w:?}"
    );
    assert_eq!(
        sh(dir.path(), "git --git-dir=origin.git rev-parse main"),
        before
    );
}

#[tokio::test]
async fn a_review_refspec_gets_a_change_id_and_automation_lines_are_said() {
    let dir = tempfile::tempdir().unwrap();
    let url = world(dir.path());
    // Image automation owns the line.
    std::fs::write(
        dir.path().join("work/apps/podinfo/deployment.yaml"),
        DEPLOYMENT.replace("# the app", "# {\"$imagepolicy\": \"flux-system:podinfo\"}"),
    )
    .unwrap();
    sh(
        dir.path(),
        "cd work && git commit -qam automation && git push -q origin main",
    );
    let before = sh(dir.path(), "git --git-dir=origin.git rev-parse main");
    let mut d = dest(&url);
    d.push = Push::Refspec("refs/for/main".into());
    let w = write(&job(), &d, &Default::default()).await;
    assert_eq!(w.phase, WriteBackPhase::Pushed, "{w:?}");
    assert!(w.message.contains("$imagepolicy"), "{}", w.message);
    assert_eq!(
        sh(dir.path(), "git --git-dir=origin.git rev-parse main"),
        before
    );
    let msg = sh(
        dir.path(),
        "git --git-dir=origin.git log -1 --format=%B refs/for/main",
    );
    let id = format!("Change-Id: I{}", message::change_id(&job()));
    assert!(msg.trim_end().ends_with(&id), "{msg}");
}
