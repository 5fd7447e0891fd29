//! The canary lifecycle end to end: the `serin` binary against the local cluster (real kube-apiserver,
//! controllers and kwok nodes). Each test runs its own controller, scoped to its own namespace.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use serde_json::json;
use serin::api::{Canary, Phase};
use serin_e2e::apps::deployment as app;
use serin_e2e::podinfo::{
    canary, deployment, image_of, route_weight, setup, status, wait_phase, wait_phase_of,
    wait_weight_at_least, weights_until,
};
use serin_e2e::{SerinProcess, apply, wait_for};

const SERIN: &str = env!("CARGO_BIN_EXE_serin");

#[tokio::test]
async fn a_new_image_is_promoted_step_by_step() {
    let (client, ns) = setup(
        "life-promote",
        json!({"interval": "1s", "stepWeight": 10, "maxWeight": 50}),
        json!({}),
    )
    .await;
    let serin = SerinProcess::start(SERIN, &ns, "a").await;
    wait_phase(&client, &ns, Phase::Initialized, Duration::from_secs(30)).await;
    assert_eq!(
        image_of(&client, &ns, "podinfo-primary").await,
        ("podinfo:1.0.0".into(), 3)
    );
    assert_eq!(
        image_of(&client, &ns, "podinfo").await.1,
        0,
        "the target is scaled to zero"
    );

    // Reads of the API server other than the leader Lease's: gets of one object, and lists (which only
    // a watch that had to start over makes).
    let reads = |verb: &'static str| {
        let serin = &serin;
        async move {
            let verb = format!(r#"verb="{verb}""#);
            let all = serin
                .metric_where("serin_api_requests_total", &[&verb])
                .await
                .unwrap_or(0.0);
            let lease = serin
                .metric_where("serin_api_requests_total", &[&verb, r#"resource="leases""#])
                .await
                .unwrap_or(0.0);
            all - lease
        }
    };
    let (gets_before, lists_before) = (reads("get").await, reads("list").await);
    let writes_before = serin.metric("serin_api_writes_total").await.unwrap_or(0.0);
    let reconciles_before = serin
        .metric("serin_reconcile_duration_seconds_count")
        .await
        .unwrap_or(0.0);
    // Recording from before the update: the first step can follow Progressing within milliseconds.
    let (seen, recorder) = serin_e2e::podinfo::record_weights(client.clone(), ns.clone());
    wait_for(
        "the route's weight read",
        Duration::from_secs(10),
        Duration::from_millis(10),
        || async {
            if seen.lock().unwrap().is_empty() {
                Err("no read yet".to_string())
            } else {
                Ok(())
            }
        },
    )
    .await;
    apply::<Deployment>(&client, &ns, deployment("podinfo:2.0.0", json!({}))).await;
    let updated = Instant::now();
    wait_for(
        "Progressing",
        Duration::from_secs(10),
        Duration::from_millis(10),
        || async {
            if status(&client, &ns).await.phase == Some(Phase::Progressing) {
                Ok(())
            } else {
                Err("not yet".to_string())
            }
        },
    )
    .await;
    eprintln!(
        "measured: target update to phase Progressing in {:?}",
        updated.elapsed()
    );

    wait_phase(&client, &ns, Phase::Succeeded, Duration::from_secs(60)).await;
    // One more look at the route: the last weight.
    tokio::time::sleep(Duration::from_millis(100)).await;
    recorder.abort();
    let weights = seen.lock().unwrap().clone();
    let writes = serin.metric("serin_api_writes_total").await.unwrap_or(0.0) - writes_before;
    let reconciles = serin
        .metric("serin_reconcile_duration_seconds_count")
        .await
        .unwrap_or(0.0)
        - reconciles_before;
    let gets = reads("get").await - gets_before;
    let lists = reads("list").await - lists_before;
    eprintln!(
        "measured: the canary run took {reconciles} reconciles, {writes} writes (objects, status, events), {gets} gets and {lists} lists (the leader Lease aside)"
    );
    assert_eq!(gets, 0.0, "every tick reads from the watch caches only");
    // Each step's tick came at its schedule: how late, as serin_tick_lateness_seconds has it.
    let late_ticks = serin
        .metric("serin_tick_lateness_seconds_count")
        .await
        .unwrap_or(0.0);
    let late_sum = serin
        .metric("serin_tick_lateness_seconds_sum")
        .await
        .unwrap_or(0.0);
    assert!(
        late_ticks >= 3.0,
        "the steps' scheduled ticks are measured: {late_ticks}"
    );
    eprintln!(
        "measured: {late_ticks} scheduled ticks ran {:.1} ms late on average",
        1000.0 * late_sum / late_ticks
    );
    if let Some(kib) = serin.peak_memory_kib() {
        eprintln!("measured: serin's peak resident memory over the run: {kib} KiB");
    }
    assert_eq!(weights, vec![0, 10, 20, 30, 40, 50, 0]);
    assert_eq!(
        image_of(&client, &ns, "podinfo-primary").await,
        ("podinfo:2.0.0".into(), 3)
    );
    assert_eq!(image_of(&client, &ns, "podinfo").await.1, 0);
    let s = status(&client, &ns).await;
    assert_eq!(s.last_promoted_spec, s.last_applied_spec);
    let ready = s
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready condition");
    assert_eq!(ready.status, "True");
}

#[tokio::test]
async fn a_canary_that_never_gets_ready_fails_at_the_deadline_with_the_primary_untouched() {
    let (client, ns) = setup(
        "life-deadline",
        json!({"interval": "1s", "stepWeight": 10}),
        json!({"progressDeadlineSeconds": 8}),
    )
    .await;
    let _serin = SerinProcess::start(SERIN, &ns, "a").await;
    wait_phase(&client, &ns, Phase::Initialized, Duration::from_secs(30)).await;
    // No node has this label: the new revision's pods stay Pending.
    apply::<Deployment>(
        &client,
        &ns,
        deployment(
            "podinfo:2.0.0",
            json!({"nodeSelector": {"serin.dev/nowhere": "true"}}),
        ),
    )
    .await;
    let failed = wait_phase(&client, &ns, Phase::Failed, Duration::from_secs(40)).await;
    let ready = failed
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    let message = ready.message.clone().unwrap_or_default();
    assert!(
        message.contains("not ready") && message.contains("progress deadline"),
        "{message}"
    );
    assert_eq!(route_weight(&client, &ns).await, Some(0));
    assert_eq!(
        image_of(&client, &ns, "podinfo-primary").await,
        ("podinfo:1.0.0".into(), 3)
    );
    wait_for(
        "the canary scaled to zero",
        Duration::from_secs(10),
        Duration::from_millis(200),
        || async {
            let replicas = image_of(&client, &ns, "podinfo").await.1;
            if replicas == 0 {
                Ok(())
            } else {
                Err(format!("{replicas} replicas"))
            }
        },
    )
    .await;
}

#[tokio::test]
async fn a_restarted_controller_resumes_at_the_same_weight() {
    let (client, ns) = setup(
        "life-restart",
        json!({"interval": "2s", "stepWeight": 10, "maxWeight": 60}),
        json!({}),
    )
    .await;
    // Settled Canaries beside it: after the restart they wait for the one in flight (backlog.rs), and are
    // still looked at: one given a new image while the controller is down rolls out.
    let settled = ["web-0", "web-1", "web-2"];
    for name in settled {
        apply::<Deployment>(&client, &ns, app(name, 3, "podinfo:1.0.0", json!({}))).await;
        let mut c = canary(json!({"analysis": {"interval": "2s", "stepWeight": 50}}));
        c["metadata"]["name"] = json!(name);
        c["spec"]["targetRef"]["name"] = json!(name);
        apply::<Canary>(&client, &ns, c).await;
    }
    let mut serin = SerinProcess::start(SERIN, &ns, "a").await;
    wait_phase(&client, &ns, Phase::Initialized, Duration::from_secs(30)).await;
    for name in settled {
        wait_phase_of(
            &client,
            &ns,
            name,
            Phase::Initialized,
            Duration::from_secs(30),
        )
        .await;
    }
    apply::<Deployment>(&client, &ns, deployment("podinfo:2.0.0", json!({}))).await;
    wait_weight_at_least(&client, &ns, 30, Duration::from_secs(30)).await;
    serin.kill();
    apply::<Deployment>(&client, &ns, app("web-2", 3, "podinfo:2.0.0", json!({}))).await;
    let at_crash = route_weight(&client, &ns).await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        route_weight(&client, &ns).await,
        Some(at_crash),
        "nothing moves while the controller is down"
    );

    let serin = SerinProcess::start(SERIN, &ns, "b").await;
    let weights = weights_until(&client, &ns, Phase::Succeeded, Duration::from_secs(60)).await;
    let expected: Vec<i64> = (at_crash..=60).step_by(10).chain([0]).collect();
    assert_eq!(
        weights, expected,
        "resumed at {at_crash} without redoing steps"
    );
    // web-2, given a new image while the controller was down, is promoted.
    wait_phase_of(
        &client,
        &ns,
        "web-2",
        Phase::Succeeded,
        Duration::from_secs(60),
    )
    .await;
    // The list brought four Canaries: the three settled waited, the one in flight did not.
    let log = std::fs::read_to_string(&serin.log).unwrap_or_default();
    assert!(
        log.lines()
            .any(|l| l.contains("after those in flight") && l.contains("waiting=3")),
        "the settled Canaries waited for the one in flight: {}",
        serin.log.display()
    );
}

#[tokio::test]
async fn with_two_replicas_only_the_leader_acts() {
    let (client, ns) = setup(
        "life-leader",
        json!({"interval": "1s", "stepWeight": 25}),
        json!({}),
    )
    .await;
    let a = SerinProcess::start(SERIN, &ns, "replica-a").await;
    let b = SerinProcess::start(SERIN, &ns, "replica-b").await;
    wait_phase(&client, &ns, Phase::Initialized, Duration::from_secs(30)).await;
    apply::<Deployment>(&client, &ns, deployment("podinfo:2.0.0", json!({}))).await;
    wait_phase(&client, &ns, Phase::Succeeded, Duration::from_secs(60)).await;

    let lease = Api::<Lease>::namespaced(client.clone(), &ns)
        .get("serin-leader")
        .await
        .expect("the Lease");
    let holder = lease
        .spec
        .and_then(|s| s.holder_identity)
        .expect("a holder");
    let (leader, standby) = if holder == "replica-a" {
        (&a, &b)
    } else {
        (&b, &a)
    };
    assert!(
        ["replica-a", "replica-b"].contains(&holder.as_str()),
        "{holder}"
    );
    let leader_writes = leader.metric("serin_api_writes_total").await.unwrap_or(0.0);
    assert!(leader_writes > 0.0, "the leader wrote");
    assert_eq!(
        standby.metric("serin_api_writes_total").await,
        Some(0.0),
        "the standby wrote nothing"
    );
    assert_eq!(
        standby
            .metric("serin_reconcile_duration_seconds_count")
            .await,
        Some(0.0),
        "the standby reconciled nothing"
    );
    assert_eq!(leader.metric("serin_leader").await, Some(1.0));
    assert_eq!(standby.metric("serin_leader").await, Some(0.0));
    // Both ready: a standby that never got ready would stall a two-replica Deployment's rolling update.
    for replica in [leader, standby] {
        let readyz = replica.metrics_url.replace("/metrics", "/readyz");
        let status = reqwest::get(&readyz)
            .await
            .expect("/readyz answers")
            .status();
        assert_eq!(status, reqwest::StatusCode::OK, "{readyz}");
    }
}

#[tokio::test]
async fn revert_on_deletion_gives_the_target_back_its_replicas_and_the_apex_service() {
    use k8s_openapi::api::core::v1::Service;
    let (client, ns) = setup(
        "life-revert",
        json!({"interval": "1s", "stepWeight": 50}),
        json!({"revertOnDeletion": true}),
    )
    .await;
    let _serin = SerinProcess::start(SERIN, &ns, "a").await;
    wait_phase(&client, &ns, Phase::Initialized, Duration::from_secs(30)).await;
    assert_eq!(image_of(&client, &ns, "podinfo").await.1, 0);
    let canaries: Api<Canary> = Api::namespaced(client.clone(), &ns);
    let finalizers = canaries
        .get("podinfo")
        .await
        .unwrap()
        .metadata
        .finalizers
        .unwrap_or_default();
    assert_eq!(finalizers, ["serin.dev/revert-on-deletion"]);

    canaries
        .delete("podinfo", &Default::default())
        .await
        .expect("deleting the Canary");
    wait_for(
        "the Canary to be gone",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            match canaries.get_opt("podinfo").await {
                Ok(None) => Ok(()),
                other => Err(format!(
                    "{:?}",
                    other.map(|c| c.map(|c| c.metadata.finalizers))
                )),
            }
        },
    )
    .await;
    assert_eq!(
        image_of(&client, &ns, "podinfo").await.1,
        3,
        "the target runs the primary's replicas again"
    );
    // The garbage collector removes what the Canary owned; the apex Service is no longer among it. The
    // collector watches a new CRD's kind only from its next discovery resync (every 30s), so on a cluster
    // whose CRDs are seconds old this takes up to a minute.
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    wait_for(
        "the -primary and -canary Services to be collected",
        Duration::from_secs(75),
        Duration::from_millis(200),
        || async {
            let left = services
                .list(&Default::default())
                .await
                .map_err(|e| e.to_string())?
                .items
                .len();
            if left == 1 {
                Ok(())
            } else {
                Err(format!("{left} Services"))
            }
        },
    )
    .await;
    let apex = services
        .get("podinfo")
        .await
        .expect("the apex Service stays");
    assert_eq!(apex.spec.unwrap().selector.unwrap()["app"], "podinfo");
    assert!(
        apex.metadata
            .owner_references
            .unwrap_or_default()
            .is_empty()
    );
}
