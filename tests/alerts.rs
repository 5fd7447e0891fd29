//! Alerts end to end: the `serin` controller against the local cluster, AlertProviders of every type
//! pointing at a loopback receiver, a promotion and a rollback judged by Prometheus.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use serde_json::{Value, json};
use serin::api::{AlertProvider, Phase};
use serin_e2e::podinfo::{annotated, deployment, setup, wait_phase, wait_promoted};
use serin_e2e::receiver::Receiver;
use serin_e2e::rollout::wait_window_empty;
use serin_e2e::{SerinProcess, apply, event_notes, wait_for};

const SERIN: &str = env!("CARGO_BIN_EXE_serin");

fn provider(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "serin.dev/v1beta1", "kind": "AlertProvider", "metadata": {"name": name}, "spec": spec})
}

/// The alerts' texts at `path`, but Serin's warnings for a hold on no data (which come or not, as the
/// first check after a step finds data in its window or not).
fn texts(rx: &Receiver, path: &str) -> Vec<String> {
    alerts(rx, path)
        .iter()
        .map(|r| {
            let body: Value = serde_json::from_str(&r.body).unwrap();
            body["attachments"][0]["text"]
                .as_str()
                .or_else(|| body["sections"][0]["activityTitle"].as_str())
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

fn alerts(rx: &Receiver, path: &str) -> Vec<serin_e2e::receiver::Received> {
    rx.received(path)
        .into_iter()
        .filter(|r| !r.body.contains("Canary is holding: "))
        .collect()
}

#[tokio::test]
async fn a_promotion_and_a_rollback_reach_every_provider_in_flaggers_shapes() {
    let rx = Receiver::start().await;
    let url = |p: &str| format!("{}{p}", rx.url);
    let entries = json!([
        {"name": "slack", "severity": "info", "providerRef": {"name": "slack"}},
        {"name": "teams", "severity": "info", "providerRef": {"name": "teams"}},
        {"name": "discord", "severity": "info", "providerRef": {"name": "discord"}},
        {"name": "rocket", "severity": "info", "providerRef": {"name": "rocket"}},
        {"name": "gchat", "severity": "info", "providerRef": {"name": "gchat"}},
        {"name": "on-call", "severity": "error", "providerRef": {"name": "on-call"}},
        {"name": "dead", "providerRef": {"name": "dead"}},
        {"name": "failing", "severity": "error", "providerRef": {"name": "failing"}}
    ]);
    let (client, ns) = setup(
        "alerts",
        json!({"interval": "1s", "stepWeight": 50, "threshold": 1, "alerts": entries,
            "webhooks": [{"name": "events", "type": "event", "url": url("/events"), "metadata": {"team": "web"}}],
            "metrics": [{"name": "request-success-rate", "interval": "10s", "thresholdRange": {"min": 99}}]}),
        json!({}),
    )
    .await;
    apply::<Secret>(
        &client,
        &ns,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "slack-url"},
        "stringData": {"address": url("/slack"), "token": "xoxb-e2e"}}),
    )
    .await;
    for (name, spec) in [
        (
            "slack",
            json!({"type": "slack", "channel": "deploys", "username": "serin-e2e", "secretRef": {"name": "slack-url"}}),
        ),
        (
            "teams",
            json!({"type": "msteams", "address": url("/teams/webhookb2/x")}),
        ),
        (
            "discord",
            json!({"type": "discord", "address": url("/discord")}),
        ),
        (
            "rocket",
            json!({"type": "rocket", "address": url("/rocket")}),
        ),
        (
            "gchat",
            json!({"type": "gchat", "address": url("/gchat"), "format": "cards"}),
        ),
        (
            "on-call",
            json!({"type": "slack", "address": url("/on-call")}),
        ),
        // Never answers: nothing may wait on it.
        ("dead", json!({"type": "slack", "address": url("/hang")})),
        // Answers 500 to every try.
        ("failing", json!({"type": "slack", "address": url("/fail")})),
    ] {
        apply::<AlertProvider>(&client, &ns, provider(name, spec)).await;
    }
    let _serin = SerinProcess::start(SERIN, &ns, "a").await;
    wait_phase(&client, &ns, Phase::Initialized, Duration::from_secs(30)).await;

    let sim = |error_rate: f64| json!({"trafficsim.serin.dev/error-rate": error_rate.to_string(), "trafficsim.serin.dev/latency-ms": "5"});
    let rolled = Instant::now();
    apply::<Deployment>(
        &client,
        &ns,
        annotated(deployment("podinfo:2.0.0", json!({})), sim(0.0)),
    )
    .await;
    wait_phase(&client, &ns, Phase::Succeeded, Duration::from_secs(60)).await;
    eprintln!(
        "measured: a 3-step promotion with a receiver that never answers took {:?}",
        rolled.elapsed()
    );
    // The check's 10 s window still holds the promoted revision's clean canary traffic for a while: a
    // faulty revision checked within it would pass on that (as in Flagger, whose window is the same).
    // Wait until the window is empty, so the rollback below is judged on the faulty revision alone.
    wait_window_empty(&format!(
        r#"sum(rate(http_request_duration_seconds_count{{kubernetes_namespace="{ns}", kubernetes_pod_name=~"podinfo-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"}}[10s]))"#
    ))
    .await;
    apply::<Deployment>(
        &client,
        &ns,
        annotated(deployment("podinfo:3.0.0", json!({})), sim(0.5)),
    )
    .await;
    wait_phase(&client, &ns, Phase::Failed, Duration::from_secs(60)).await;

    let expected = [
        "New Deployment detected, initialization completed.",
        "New revision detected, progressing canary analysis.",
        "Canary analysis completed successfully, promotion finished.",
        "New revision detected, progressing canary analysis.",
        "Failed checks threshold reached 1",
    ];
    wait_for(
        "every alert at every receiver",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || async {
            let short: Vec<_> = ["/slack", "/teams", "/discord", "/rocket", "/gchat"]
                .into_iter()
                .map(|p| (p, alerts(&rx, p).len()))
                .filter(|(_, n)| *n < expected.len())
                .collect();
            if short.is_empty() {
                Ok(())
            } else {
                Err(format!("{short:?}"))
            }
        },
    )
    .await;
    assert_eq!(texts(&rx, "/slack"), expected);
    assert_eq!(texts(&rx, "/teams"), expected);

    let slack = alerts(&rx, "/slack");
    assert_eq!(slack[0].headers["authorization"], "Bearer xoxb-e2e");
    assert_eq!(slack[0].headers["content-type"], "application/json");
    // Flagger's bytes up to Serin's added fields (the revision, the traffic).
    let prefix = format!(
        r#"{{"channel":"deploys","username":"serin-e2e","icon_url":"","icon_emoji":":rocket:","attachments":[{{"color":"good","author_name":"podinfo.{ns}","text":"New Deployment detected, initialization completed.","mrkdwn_in":["text"],"fields":[{{"title":"Target","value":"Deployment/podinfo.{ns}","short":false}},{{"title":"Failed checks threshold","value":"1","short":false}},{{"title":"Progress deadline","value":"600s","short":false}},{{"title":"Traffic routing","value":"Weight step: 50 max: 100","short":false}},{{"title":"Revision","#
    );
    assert!(slack[0].body.starts_with(&prefix), "{}", slack[0].body);
    let rollback: Value = serde_json::from_str(&slack[4].body).unwrap();
    let attachment = &rollback["attachments"][0];
    assert_eq!(attachment["color"], "danger");
    assert_eq!(attachment["fields"][0]["title"], "Failed check");
    let failed = attachment["fields"][0]["value"].as_str().unwrap();
    assert!(failed.contains("request-success-rate"), "{failed}");
    eprintln!(
        "sample: the rollback as Slack received it: {}",
        slack[4].body
    );

    let discord = alerts(&rx, "/discord");
    assert_eq!(discord.len(), expected.len());
    assert!(discord.iter().all(|r| r.path == "/discord/slack"));
    assert!(!discord[0].headers.contains_key("authorization"));
    let rocket: Value = serde_json::from_str(&alerts(&rx, "/rocket")[4].body).unwrap();
    assert_eq!(rocket["attachments"][0]["color"], "#FF0000");
    let teams: Value = serde_json::from_str(&rx.received("/teams")[0].body).unwrap();
    assert_eq!(teams["@type"], "MessageCard");
    let gchat = alerts(&rx, "/gchat");
    assert_eq!(gchat.len(), expected.len());
    assert!(gchat[0].body.contains(r#""title":"Flagger""#));
    // The error-only entry got the rollback alone; the dead receiver was tried.
    assert_eq!(
        texts(&rx, "/on-call"),
        ["Failed checks threshold reached 1"]
    );
    assert!(!rx.received("/hang").is_empty());

    // Every event went to the event webhook, in Flagger's payload with the hook's metadata added.
    let events: Vec<Value> = rx
        .received("/events")
        .iter()
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect();
    let progressing = events
        .iter()
        .find(|e| e["metadata"]["eventReason"] == "NewRevision")
        .unwrap_or_else(|| {
            panic!("the new revision's event reached the event webhook: {events:?}")
        });
    assert_eq!(progressing["name"], "podinfo");
    assert_eq!(progressing["namespace"], ns.as_str());
    assert_eq!(progressing["phase"], "Progressing");
    assert_eq!(progressing["metadata"]["eventType"], "Normal");
    assert!(
        progressing["metadata"]["eventMessage"]
            .as_str()
            .is_some_and(|m| m.starts_with("New revision")),
        "{progressing}"
    );
    assert_eq!(progressing["metadata"]["team"], "web");
    assert!(
        events
            .iter()
            .any(|e| e["phase"] == "Failed" && e["metadata"]["eventType"] == "Warning"),
        "{events:?}"
    );

    // The receiver answering 500 was retried, then given up on with a Warning event on the Canary, which
    // names the target, never its URL.
    let failed = wait_for(
        "a NotificationFailed event",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            let notes = event_notes(&client, &ns, "NotificationFailed").await;
            if notes.is_empty() {
                Err(format!("{} tries so far", rx.received("/fail").len()))
            } else {
                Ok(notes)
            }
        },
    )
    .await;
    assert!(failed[0].contains("failing"), "{failed:?}");
    assert!(!failed[0].contains(&rx.url), "{failed:?}");
    let tries = rx.received("/fail");
    assert!(tries.len() >= 2, "retried: {} tries", tries.len());
    assert!(tries.iter().all(|t| t.body == tries[0].body));
}

/// A rollout with every alert going to a receiver that never answers, beside the same rollout without
/// alerts, in the same run: the steps' schedule is the same (printed for `make bench`; not a timed assert).
/// Two rounds, the alerts moved from one Canary to the other between them: one namespace's rollout tends
/// to finish first whatever it sends (an A/A run showed it), and the swap cancels that out.
#[tokio::test]
async fn a_receiver_that_never_answers_leaves_the_steps_on_schedule() {
    let rx = Receiver::start().await;
    let analysis = json!({"interval": "1s", "stepWeight": 20, "threshold": 1,
        "metrics": [{"name": "request-duration", "interval": "10s", "thresholdRange": {"max": 500}}]});
    let (client, a) = setup("alerts-a", analysis.clone(), json!({})).await;
    let (_, b) = setup("alerts-b", analysis, json!({})).await;
    for ns in [&a, &b] {
        let dead = json!({"type": "slack", "address": format!("{}/hang", rx.url)});
        apply::<AlertProvider>(&client, ns, provider("dead", dead)).await;
    }
    let alerts = |ns: &str, on: bool| {
        let (client, ns) = (client.clone(), ns.to_string());
        let entries = if on {
            json!([{"name": "dead", "severity": "info", "providerRef": {"name": "dead"}}])
        } else {
            json!([])
        };
        async move {
            kube::Api::<serin::api::Canary>::namespaced(client, &ns)
                .patch(
                    "podinfo",
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(json!({"spec": {"analysis": {"alerts": entries}}})),
                )
                .await
                .expect("setting the alerts");
        }
    };
    let _a = SerinProcess::start(SERIN, &a, "a").await;
    let _b = SerinProcess::start(SERIN, &b, "a").await;
    for ns in [&a, &b] {
        wait_phase(&client, ns, Phase::Initialized, Duration::from_secs(30)).await;
    }
    let sim = json!({"trafficsim.serin.dev/latency-ms": "5"});
    // The window holds the first revision's canary traffic when the second is checked; the check passes
    // either way (5 ms against 500), and the comparison is what matters here.
    let rollout = |ns: String, image: &'static str| {
        let client = client.clone();
        let sim = sim.clone();
        async move {
            let started = Instant::now();
            apply::<Deployment>(&client, &ns, annotated(deployment(image, json!({})), sim)).await;
            wait_promoted(&client, &ns, image, Duration::from_secs(60)).await;
            started.elapsed().as_secs_f64()
        }
    };
    alerts(&a, true).await;
    let (dead_1, none_1) = tokio::join!(
        rollout(a.clone(), "podinfo:2.0.0"),
        rollout(b.clone(), "podinfo:2.0.0")
    );
    // One delivery per target at a time: the dead receiver holds its first alert, the rest wait behind it.
    let sent = rx.received("/hang").len();
    assert!(sent >= 1, "a's alerts went to the hanging receiver: {sent}");
    alerts(&a, false).await;
    alerts(&b, true).await;
    let (none_2, dead_2) = tokio::join!(
        rollout(a.clone(), "podinfo:3.0.0"),
        rollout(b.clone(), "podinfo:3.0.0")
    );
    let hanging_b = rx
        .received("/hang")
        .iter()
        .filter(|r| r.body.contains(&format!("podinfo.{b}")))
        .count();
    assert!(hanging_b >= 1, "b's alerts went to the hanging receiver");
    let (dead, none) = ((dead_1 + dead_2) / 2.0, (none_1 + none_2) / 2.0);
    eprintln!(
        "measured: a 5-step rollout (interval 1s) took {dead:.2}s with every alert sent to a receiver that never answers, {none:.2}s without alerts (means of 2 side-by-side runs, the alerts swapped between them: {dead_1:.2}s beside {none_1:.2}s, then {dead_2:.2}s beside {none_2:.2}s)"
    );
}
