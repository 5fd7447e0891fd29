//! Roll forward in git, end to end, against real Flux (source- and kustomize-controller v1.9, built from the
//! Go module proxy) and a real git server (git http-backend behind basic auth): the team pushes 6.0.2,
//! Flux applies it, Serin rolls it back and commits 6.0.1 back, Flux applies that, and nothing restarts.
//! Then the failure cases: a push race, wrong credentials and someone moving on, a dry run, a kill right
//! after the push.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::Client;
use kube::api::Api;
use serde_json::{Value, json};
use serin::api::write_back::{WriteBackPhase, WriteBackStatus};
use serin::api::{Canary, Phase};
use serin_e2e::gitops::{
    FAULTY, GOOD, NEWER, Repo, deployment_yaml, flux, flux_app, git_secret, last_applied,
    request_fetch, wait_applied,
};
use serin_e2e::podinfo::{image_of, status, wait_phase};
use serin_e2e::rollout::send_through_route;
use serin_e2e::{SerinProcess, apply, client, event_notes, install_crds, namespace, wait_for};

const SERIN: &str = env!("CARGO_BIN_EXE_serin");
struct World {
    client: Client,
    ns: String,
    repo: Repo,
    serin: SerinProcess,
    /// The commit that brought 6.0.2.
    faulty: String,
}

/// A namespace with the app in its own repository applied by Flux, its Canary (`write_back`), Serin, and
/// traffic through the route; `prepare` runs before Serin starts (Secrets, git server switches).
async fn setup(prefix: &str, write_back: Value) -> (Client, String, Repo) {
    let client = client().await;
    install_crds(&client).await;
    flux().await;
    let ns = namespace(&client, prefix).await;
    let repo = Repo::create(&ns).await;
    repo.write(
        "apps/podinfo/kustomization.yaml",
        "resources:\n  - deployment.yaml\n",
    );
    repo.write("apps/podinfo/deployment.yaml", &deployment_yaml(GOOD));
    let first = repo.commit_and_push("podinfo 6.0.1");
    flux_app(&client, &ns, &repo, "./apps/podinfo").await;
    wait_applied(&client, &ns, &first, Duration::from_secs(60)).await;
    apply::<Canary>(&client, &ns, json!({"apiVersion": "serin.dev/v1beta1", "kind": "Canary", "metadata": {"name": "podinfo"},
        "spec": {"provider": "gatewayapi", "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898, "gatewayRefs": [{"name": "gateway"}]},
            "analysis": {"interval": "2s", "stepWeight": 20, "maxWeight": 50, "threshold": 1,
                "metrics": [{"name": "request-success-rate", "interval": "10s", "thresholdRange": {"min": 99}}]},
            "writeBack": write_back}})).await;
    (client, ns, repo)
}

/// Serin started, the Canary initialized, traffic on, 6.0.2 pushed and rolled back.
async fn rolled_back_after_setup(client: Client, ns: String, repo: Repo) -> World {
    let serin = SerinProcess::start(SERIN, &ns, "writer").await;
    wait_phase(&client, &ns, Phase::Initialized, Duration::from_secs(60)).await;
    send_through_route(&client, &ns, 100).await;
    repo.write("apps/podinfo/deployment.yaml", &deployment_yaml(FAULTY));
    let faulty = repo.commit_and_push("podinfo 6.0.2");
    request_fetch(&client, &ns).await;
    wait_phase(&client, &ns, Phase::Failed, Duration::from_secs(90)).await;
    World {
        client,
        ns,
        repo,
        serin,
        faulty,
    }
}

async fn rolled_back(prefix: &str, write_back: Value) -> World {
    let (client, ns, repo) = setup(prefix, write_back).await;
    rolled_back_after_setup(client, ns, repo).await
}

async fn write_back_in(
    client: &Client,
    ns: &str,
    what: &str,
    done: impl Fn(&WriteBackStatus) -> bool,
) -> WriteBackStatus {
    wait_for(
        what,
        Duration::from_secs(90),
        Duration::from_millis(50),
        || async {
            let s = status(client, ns).await;
            match s.write_back {
                Some(wb) if done(&wb) => Ok(wb),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await
}

fn condition(s: &serin::api::CanaryStatus, kind: &str) -> (String, String, String) {
    let c = s.conditions.iter().find(|c| c.type_ == kind).expect(kind);
    (
        c.status.clone(),
        c.reason.clone().unwrap_or_default(),
        c.message.clone().unwrap_or_default(),
    )
}

/// Serin's roll-forward commits on main.
fn serin_commits(repo: &Repo) -> usize {
    repo.bare_git(&["log", "--format=%H", "--grep", "^Serin-Canary:", "main"])
        .lines()
        .count()
}

#[tokio::test]
async fn a_failed_canary_is_rolled_forward_in_git_and_flux_applies_it() {
    let rolled = Instant::now();
    let w = rolled_back("wb-main", json!({})).await;
    let (client, ns) = (&w.client, w.ns.as_str());
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let primary_generation = deployments
        .get("podinfo-primary")
        .await
        .unwrap()
        .metadata
        .generation;
    let failed_at = Instant::now();
    let pushed = write_back_in(client, ns, "the roll forward pushed", |wb| {
        matches!(wb.phase, WriteBackPhase::Pushed | WriteBackPhase::Applied)
    })
    .await;
    let pushed_after = failed_at.elapsed();
    let applied = write_back_in(client, ns, "the roll forward applied", |wb| {
        wb.phase == WriteBackPhase::Applied
    })
    .await;
    let applied_after = failed_at.elapsed();
    eprintln!(
        "measured: roll forward: rollback seen to commit pushed {:.1}s, to applied by Flux {:.1}s (setup and rollback {:.0}s)",
        pushed_after.as_secs_f64(),
        applied_after.as_secs_f64(),
        (failed_at - rolled).as_secs_f64()
    );

    // git: exactly one new commit, on the 6.0.2 one, by the bot; one line changed, its comment kept.
    let head = w.repo.head();
    assert_eq!(
        w.repo.bare_git(&["rev-list", "--count", "main"]).trim(),
        "3"
    );
    assert_eq!(w.repo.bare_git(&["rev-parse", "main^"]).trim(), w.faulty);
    assert_eq!(
        w.repo
            .bare_git(&["log", "-1", "--format=%an <%ae>", "main"])
            .trim(),
        "serin <serin@noreply.invalid>"
    );
    assert_eq!(
        w.repo
            .bare_git(&["diff", "--name-only", "main^", "main"])
            .trim(),
        "apps/podinfo/deployment.yaml"
    );
    let diff = w.repo.bare_git(&["diff", "--unified=0", "main^", "main"]);
    let changed: Vec<&str> = diff
        .lines()
        .filter(|l| {
            (l.starts_with('+') || l.starts_with('-'))
                && !l.starts_with("+++")
                && !l.starts_with("---")
        })
        .collect();
    assert_eq!(
        changed,
        vec![
            format!("-          image: {FAULTY} # the app, bumped by CI"),
            format!("+          image: {GOOD} # the app, bumped by CI"),
        ],
        "{diff}"
    );
    assert_eq!(
        w.repo
            .bare_git(&["show", "main:apps/podinfo/deployment.yaml"]),
        deployment_yaml(GOOD),
        "every other byte as the team wrote it"
    );
    let message = w.repo.bare_git(&["log", "-1", "--format=%B", "main"]);
    assert!(
        message.starts_with(&format!("Roll back {ns}/podinfo to {GOOD}")),
        "{message}"
    );
    assert!(
        message.contains("request-success-rate"),
        "names the failing check: {message}"
    );
    assert!(
        message.contains(&format!("Serin-Canary: {ns}/podinfo")),
        "{message}"
    );
    assert!(
        message.contains("Serin-Failed-Revision: ")
            && message.contains("Serin-Restored-Revision: "),
        "{message}"
    );

    // Status and signals.
    assert_eq!(pushed.commit.as_deref(), Some(head.as_str()));
    assert_eq!(applied.commit.as_deref(), Some(head.as_str()));
    assert_eq!(
        applied.files,
        vec!["apps/podinfo/deployment.yaml".to_string()]
    );
    assert_eq!(applied.changes.len(), 1);
    assert_eq!(
        (
            applied.changes[0].from.as_str(),
            applied.changes[0].to.as_str()
        ),
        (FAULTY, GOOD)
    );
    let s = status(client, ns).await;
    let (st, reason, _) = condition(&s, "WrittenBack");
    assert_eq!((st.as_str(), reason.as_str()), ("True", "Applied"));
    assert_eq!(event_notes(client, ns, "WriteBackPushed").await.len(), 1);
    assert_eq!(event_notes(client, ns, "WriteBackApplied").await.len(), 1);
    assert_eq!(
        w.serin
            .metric_where("serin_writeback_total", &["result=\"Pushed\""])
            .await,
        Some(1.0)
    );

    // Convergence: Flux applied that commit; the target says 6.0.1 again and is not analysed; the primary
    // was never touched.
    assert!(
        last_applied(client, ns).await.contains(&head),
        "{}",
        last_applied(client, ns).await
    );
    assert_eq!(image_of(client, ns, "podinfo").await.0, GOOD);
    wait_for(
        "the target back at the promoted revision",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            let notes = event_notes(client, ns, "BackAtPromoted").await;
            if notes.is_empty() {
                Err("no BackAtPromoted event".to_string())
            } else {
                Ok(())
            }
        },
    )
    .await;
    let new_revisions = event_notes(client, ns, "NewRevision").await.len();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        event_notes(client, ns, "NewRevision").await.len(),
        new_revisions,
        "no analysis starts"
    );
    assert_eq!(
        deployments
            .get("podinfo-primary")
            .await
            .unwrap()
            .metadata
            .generation,
        primary_generation,
        "the primary is not restarted"
    );
    assert_eq!(image_of(client, ns, "podinfo-primary").await.0, GOOD);
    assert_eq!(serin_e2e::podinfo::route_weight(client, ns).await, Some(0));

    // Loop guard: image automation pushes 6.0.2 again: held, no second roll forward.
    w.repo.sync();
    w.repo
        .write("apps/podinfo/deployment.yaml", &deployment_yaml(FAULTY));
    let again = w.repo.commit_and_push("podinfo 6.0.2 (automation)");
    request_fetch(client, ns).await;
    wait_applied(client, ns, &again, Duration::from_secs(60)).await;
    wait_for(
        "the failed revision held",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            let notes = event_notes(client, ns, "FailedRevisionHeld").await;
            if notes.is_empty() {
                Err("no FailedRevisionHeld event".to_string())
            } else {
                Ok(())
            }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(serin_commits(&w.repo), 1, "no second roll-forward commit");
    assert_eq!(w.repo.head(), again);
    assert_eq!(
        status(client, ns).await.write_back.unwrap().phase,
        WriteBackPhase::Applied
    );
}

/// The team's commit lands between Serin's fetch and its push (the git server's switch runs it as the
/// push starts): the push is rejected, Serin fetches again and its commit lands on top; the other kept.
#[tokio::test]
async fn a_push_race_is_retried_and_lands_on_top() {
    let (client, ns, repo) = setup("wb-race", json!({})).await;
    repo.before_push(&format!(
        "export GIT_CONFIG_GLOBAL=/dev/null GIT_AUTHOR_NAME=other GIT_AUTHOR_EMAIL=other@example.com GIT_COMMITTER_NAME=other GIT_COMMITTER_EMAIL=other@example.com\n\
         unset GIT_DIR\n\
         cd {work} && git fetch -q origin main && git reset -q --hard origin/main && echo notes > NOTES.md && git add NOTES.md && git commit -qm 'docs: notes' && git push -q origin main",
        work = repo.work.path().display()
    ));
    let w = rolled_back_after_setup(client, ns, repo).await;
    let (client, ns) = (&w.client, w.ns.as_str());
    let wb = write_back_in(client, ns, "the roll forward applied", |wb| {
        wb.phase == WriteBackPhase::Applied
    })
    .await;
    assert_eq!(wb.attempts, 2, "{wb:?}");
    assert_eq!(
        w.repo
            .bare_git(&["log", "--format=%s", "-3", "main"])
            .lines()
            .collect::<Vec<_>>(),
        vec![
            format!("Roll back {ns}/podinfo to {GOOD}").as_str(),
            "docs: notes",
            "podinfo 6.0.2"
        ]
    );
    assert_eq!(w.repo.bare_git(&["rev-parse", "main^^"]).trim(), w.faulty);
    assert_eq!(wb.commit.as_deref(), Some(w.repo.head().as_str()));
    assert_eq!(w.repo.bare_git(&["show", "main:NOTES.md"]).trim(), "notes");
    assert_eq!(serin_commits(&w.repo), 1);
    eprintln!(
        "measured: push race: {} attempts, Serin's commit on top of the other",
        wb.attempts
    );
}

/// Wrong credentials: a clear condition and no secret anywhere; the team then fixes forward to 6.0.3
/// while Serin cannot push, and once the Secret is right Serin finds git moved on: Superseded, no commit.
#[tokio::test]
async fn wrong_credentials_then_someone_moved_on() {
    const WRONG: &str = "not-the-password-4242";
    let (client, ns, repo) = setup("wb-auth", json!({"secretRef": {"name": "serin-git"}})).await;
    let env = flux().await;
    git_secret(&client, &ns, "serin-git", &env.user, WRONG).await;
    let w = rolled_back_after_setup(client, ns, repo).await;
    let (client, ns) = (&w.client, w.ns.as_str());
    let failed = write_back_in(client, ns, "the roll forward refused", |wb| {
        wb.phase == WriteBackPhase::Failed && wb.reason.as_deref() == Some("AuthFailed")
    })
    .await;
    let s = status(client, ns).await;
    let (st, reason, message) = condition(&s, "WrittenBack");
    assert_eq!(
        (st.as_str(), reason.as_str()),
        ("False", "AuthFailed"),
        "{message}"
    );
    assert!(message.contains("refused the credentials"), "{message}");
    eprintln!("measured: wrong credentials: WrittenBack False/AuthFailed: {message}");
    let status_json = serde_json::to_string(&s).unwrap();
    let events = event_notes(client, ns, "WriteBackFailed").await.join("\n");
    assert!(!events.is_empty());
    let log = std::fs::read_to_string(&w.serin.log).unwrap();
    for (what, text) in [("status", &status_json), ("events", &events), ("log", &log)] {
        assert!(!text.contains(WRONG), "the password in the {what}");
        assert!(
            !text.contains(&env.password),
            "the real password in the {what}"
        );
    }
    assert_eq!(serin_commits(&w.repo), 0);
    // The team fixes forward (Flux paused, so no new analysis starts meanwhile), then the Secret is fixed.
    let ks: Api<kube::api::DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &serin_e2e::gitops::kustomizations());
    ks.patch(
        "app",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({"spec": {"suspend": true}})),
    )
    .await
    .unwrap();
    w.repo.sync();
    w.repo
        .write("apps/podinfo/deployment.yaml", &deployment_yaml(NEWER));
    let newer = w.repo.commit_and_push("podinfo 6.0.3");
    git_secret(client, ns, "serin-git", &env.user, &env.password).await;
    let wb = write_back_in(client, ns, "the roll forward superseded", |wb| {
        wb.phase == WriteBackPhase::Superseded
    })
    .await;
    assert!(wb.message.contains(NEWER), "{}", wb.message);
    assert!(wb.attempts > failed.attempts);
    assert_eq!(w.repo.head(), newer, "nothing committed");
    assert_eq!(serin_commits(&w.repo), 0);
    assert!(!event_notes(client, ns, "WriteBackSkipped").await.is_empty());
    eprintln!("measured: someone moved on: Superseded: {}", wb.message);
}

/// A dry run: the diff in status, nothing committed.
#[tokio::test]
async fn a_dry_run_shows_the_diff_and_commits_nothing() {
    let w = rolled_back("wb-dry", json!({"dryRun": true})).await;
    let (client, ns) = (&w.client, w.ns.as_str());
    let wb = write_back_in(client, ns, "the dry run", |wb| {
        wb.phase == WriteBackPhase::DryRun
    })
    .await;
    let diff = wb.diff.clone().unwrap_or_default();
    assert!(
        diff.contains(&format!(
            "-          image: {FAULTY} # the app, bumped by CI"
        )),
        "{diff}"
    );
    assert!(
        diff.contains(&format!("+          image: {GOOD} # the app, bumped by CI")),
        "{diff}"
    );
    assert_eq!(wb.files, vec!["apps/podinfo/deployment.yaml".to_string()]);
    assert_eq!(w.repo.head(), w.faulty);
    let (st, reason, _) = condition(&status(client, ns).await, "WrittenBack");
    assert_eq!((st.as_str(), reason.as_str()), ("False", "DryRun"));
}

/// Serin killed right after its push, before it could say so: the next leader recognises its own commit
/// at the tip and goes on to Applied; still one commit.
#[tokio::test]
async fn killed_right_after_the_push_one_commit_still() {
    let (client, ns, repo) = setup("wb-kill", json!({})).await;
    let pushed = repo.work.path().join("serin-pushed");
    // The ref is updated before post-receive runs, and the client waits for it: the push has landed, and
    // Serin has not heard so.
    // Only for pushes through the server (the team's own pushes go to the bare repository directly).
    repo.hook(
        "post-receive",
        &format!(
            "[ -n \"$REMOTE_USER\" ] || exit 0\ntouch {}\nsleep 15",
            pushed.display()
        ),
    );
    let mut w = rolled_back_after_setup(client, ns, repo).await;
    let (client, ns) = (w.client.clone(), w.ns.clone());
    wait_for(
        "Serin's push to land",
        Duration::from_secs(60),
        Duration::from_millis(20),
        || async {
            if pushed.exists() {
                Ok(())
            } else {
                Err("not yet".to_string())
            }
        },
    )
    .await;
    w.serin.kill();
    let landed = w.repo.head();
    let left = status(&client, &ns).await.write_back.unwrap();
    assert_eq!(
        left.phase,
        WriteBackPhase::Pending,
        "killed before the status said Pushed: {left:?}"
    );
    assert_eq!(serin_commits(&w.repo), 1);
    std::fs::remove_file(w.repo.bare.join("hooks/post-receive")).unwrap();
    let _again = SerinProcess::start(SERIN, &ns, "writer-2").await;
    let wb = write_back_in(
        &client,
        &ns,
        "the roll forward applied after the restart",
        |wb| wb.phase == WriteBackPhase::Applied,
    )
    .await;
    assert_eq!(wb.commit.as_deref(), Some(landed.as_str()));
    assert_eq!(serin_commits(&w.repo), 1, "one commit still");
    assert_eq!(w.repo.head(), landed);
    let pushed_events = event_notes(&client, &ns, "WriteBackPushed").await;
    assert!(
        pushed_events.iter().any(|n| n.contains("already pushed")),
        "{pushed_events:?}"
    );
}

/// A branch of Serin's own, for review: main untouched, the branch = main + the commit; not applied (Flux
/// applies main), so it stays Pushed.
#[tokio::test]
async fn a_separate_push_branch_leaves_main_alone() {
    let w = rolled_back(
        "wb-branch",
        json!({"push": {"branch": "serin/rollback-podinfo"}}),
    )
    .await;
    let (client, ns) = (&w.client, w.ns.as_str());
    let wb = write_back_in(client, ns, "the roll forward pushed", |wb| {
        wb.phase == WriteBackPhase::Pushed
    })
    .await;
    assert_eq!(wb.branch.as_deref(), Some("serin/rollback-podinfo"));
    assert_eq!(w.repo.head(), w.faulty, "main untouched");
    assert_eq!(
        w.repo
            .bare_git(&["rev-parse", "serin/rollback-podinfo^"])
            .trim(),
        w.faulty
    );
    assert_eq!(
        w.repo
            .bare_git(&["rev-parse", "serin/rollback-podinfo"])
            .trim(),
        wb.commit.as_deref().unwrap()
    );
}

/// Someone who may edit Deployments in another namespace copies the Flux labels of the victim's podinfo
/// onto a podinfo of their own, running an image of their choosing as its primary, then aborts a canary of
/// the image git names: without the Kustomization's inventory vouching for the target, that roll forward
/// would push their image into the victim's repository with the victim's credentials (a Serin watching every
/// namespace reads that Secret; this test's Serin watches the attacker's namespace only, so without the
/// check it stops at the Secret instead: SourceUnreadable). Refused before any of that: NoSource.
#[tokio::test]
async fn a_target_that_only_claims_flux_labels_is_not_written_back() {
    const EVIL: &str = "registry.example/attacker/podinfo:evil";
    let (client, victim, repo) = setup("wb-victim", json!({})).await;
    let labels = Api::<Deployment>::namespaced(client.clone(), &victim)
        .get("podinfo")
        .await
        .unwrap()
        .metadata
        .labels
        .unwrap_or_default();
    assert!(
        labels.contains_key("kustomize.toolkit.fluxcd.io/name"),
        "{labels:?}"
    );
    let ns = namespace(&client, "wb-attacker").await;
    let forged = |image: &str| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "podinfo", "labels": labels},
            "spec": {"selector": {"matchLabels": {"app": "podinfo"}},
                "template": {"metadata": {"labels": {"app": "podinfo"}},
                    "spec": {"containers": [{"name": "podinfod", "image": image,
                        "ports": [{"name": "http", "containerPort": 9898}]}]}}}})
    };
    apply::<Deployment>(&client, &ns, forged(EVIL)).await;
    apply::<Canary>(&client, &ns, json!({"apiVersion": "serin.dev/v1beta1", "kind": "Canary", "metadata": {"name": "podinfo"},
        "spec": {"provider": "gatewayapi", "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898, "gatewayRefs": [{"name": "gateway"}]},
            "analysis": {"interval": "2s", "stepWeight": 20, "maxWeight": 50, "threshold": 1},
            "writeBack": {}}})).await;
    let _serin = SerinProcess::start(SERIN, &ns, "writer").await;
    wait_phase(&client, &ns, Phase::Initialized, Duration::from_secs(60)).await;
    let head = repo.head();
    // The image git names for the victim's podinfo, as the "failed" revision; the primary runs EVIL.
    apply::<Deployment>(&client, &ns, forged(GOOD)).await;
    wait_phase(&client, &ns, Phase::Progressing, Duration::from_secs(60)).await;
    serin_e2e::podinfo::annotate_canary(&client, &ns, "serin.dev/abort", Some("1")).await;
    wait_phase(&client, &ns, Phase::Failed, Duration::from_secs(60)).await;
    let wb = write_back_in(
        &client,
        &ns,
        "the forged target's write-back refused",
        |wb| wb.phase == WriteBackPhase::Failed,
    )
    .await;
    assert_eq!(
        (wb.changes[0].from.as_str(), wb.changes[0].to.as_str()),
        (GOOD, EVIL)
    );
    assert_eq!(wb.reason.as_deref(), Some("NoSource"), "{wb:?}");
    assert!(wb.message.contains("inventory"), "{}", wb.message);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        repo.head(),
        head,
        "nothing pushed to the victim's repository"
    );
    assert!(
        !repo
            .bare_git(&["show", "main:apps/podinfo/deployment.yaml"])
            .contains(EVIL)
    );
    eprintln!("measured: forged Flux labels: {}", wb.message);
}

/// A suspended Kustomization applies nothing: the roll forward is Pushed and says why it is not applied;
/// resumed, Flux applies it and it is Applied.
#[tokio::test]
async fn a_suspended_kustomization_applies_the_roll_forward_when_resumed() {
    let (client, ns, repo) = setup("wb-suspended", json!({})).await;
    let _serin = SerinProcess::start(SERIN, &ns, "writer").await;
    wait_phase(&client, &ns, Phase::Initialized, Duration::from_secs(60)).await;
    send_through_route(&client, &ns, 100).await;
    repo.write("apps/podinfo/deployment.yaml", &deployment_yaml(FAULTY));
    let faulty = repo.commit_and_push("podinfo 6.0.2");
    request_fetch(&client, &ns).await;
    wait_applied(&client, &ns, &faulty, Duration::from_secs(60)).await;
    // Flux paused (the analysis takes a few seconds more to fail).
    let ks: Api<kube::api::DynamicObject> =
        Api::namespaced_with(client.clone(), &ns, &serin_e2e::gitops::kustomizations());
    let suspend = |on: bool| {
        let ks = ks.clone();
        async move {
            ks.patch(
                "app",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({"spec": {"suspend": on}})),
            )
            .await
            .unwrap();
        }
    };
    suspend(true).await;
    wait_phase(&client, &ns, Phase::Failed, Duration::from_secs(90)).await;
    let pushed = write_back_in(&client, &ns, "the roll forward said suspended", |wb| {
        wb.phase == WriteBackPhase::Pushed && wb.message.contains("suspended")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        status(&client, &ns).await.write_back.unwrap().phase,
        WriteBackPhase::Pushed
    );
    assert!(last_applied(&client, &ns).await.contains(&faulty));
    suspend(false).await;
    let applied = write_back_in(
        &client,
        &ns,
        "the roll forward applied once resumed",
        |wb| wb.phase == WriteBackPhase::Applied,
    )
    .await;
    assert_eq!(applied.commit, pushed.commit);
    assert!(
        last_applied(&client, &ns)
            .await
            .contains(pushed.commit.as_deref().unwrap())
    );
}
