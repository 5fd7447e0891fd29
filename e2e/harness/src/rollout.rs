//! The shape every provider's end-to-end test shares: record the canary's weight as the provider's object
//! holds it, hold at a weight and measure the split in the provider's own series, promote, wait for the
//! promoted canary's traffic to leave the checks' window, then roll a faulty image back.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::Client;
use serde_json::{Value, json};
use serin::api::Phase;

use crate::podinfo::{annotate_canary, annotated, deployment, image_of, wait_phase};
use crate::{apply, prometheus_query, prometheus_value, wait_for};

/// The simulator's pod annotations: this error rate, 5 ms.
pub fn behaviour(error_rate: f64) -> Value {
    json!({"trafficsim.serin.dev/error-rate": error_rate.to_string(), "trafficsim.serin.dev/latency-ms": "5"})
}

/// Applies podinfo at `image` whose pods fail `error_rate` of requests.
pub async fn roll_out(client: &Client, ns: &str, image: &str, error_rate: f64) {
    apply::<Deployment>(
        client,
        ns,
        annotated(deployment(image, json!({})), behaviour(error_rate)),
    )
    .await;
}

/// podinfo 1.0.0 behind a gatewayapi Canary with `analysis` (its HTTPRoute through the Gateway
/// `gateway`), for tests about what surrounds a rollout rather than a provider.
pub async fn podinfo_canary(client: &Client, ns: &str, analysis: Value) {
    roll_out(client, ns, "podinfo:1.0.0", 0.0).await;
    apply::<serin::api::Canary>(client, ns, json!({"apiVersion": "serin.dev/v1beta1", "kind": "Canary", "metadata": {"name": "podinfo"},
        "spec": {"provider": "gatewayapi", "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898, "gatewayRefs": [{"name": "gateway"}]}, "analysis": analysis}}))
    .await;
}

/// Has the traffic simulator send `rps` requests a second through the Canary's HTTPRoute.
pub async fn send_through_route(client: &Client, ns: &str, rps: u32) {
    crate::annotate(
        client,
        ns,
        &crate::httproute_resource(),
        "podinfo",
        json!({"trafficsim.serin.dev/rps": rps.to_string()}),
    )
    .await;
}

/// Records each distinct weight `probe` reads until stopped (a data plane's view of the object).
pub struct WeightRecorder {
    seen: Arc<Mutex<Vec<i64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl WeightRecorder {
    pub fn start<F, Fut>(probe: F) -> Self
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = Option<i64>> + Send,
    {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                if let Some(w) = probe().await {
                    let mut log = log.lock().unwrap();
                    if log.last() != Some(&w) {
                        log.push(w);
                    }
                }
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        });
        WeightRecorder { seen, task }
    }

    /// The weights seen, after one more look (the last write may be a poll away).
    pub async fn stop(self) -> Vec<i64> {
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.task.abort();
        self.seen.lock().unwrap().clone()
    }
}

/// Waits until `probe` reads `weight`.
pub async fn wait_weight<F, Fut>(what: &str, weight: i64, probe: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Option<i64>>,
{
    wait_for(
        &format!("canary weight {weight} in {what}"),
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async {
            match probe().await {
                Some(w) if w == weight => Ok(()),
                w => Err(format!("{w:?}")),
            }
        },
    )
    .await;
}

/// Holds the analysis (serin.dev/pause) for long enough that Prometheus's last 5s are all at the held
/// weight, and returns `share` (a query of the canary's percent of requests over 5s). [`resume`] goes on.
pub async fn hold_and_measure(client: &Client, ns: &str, share: &str) -> f64 {
    annotate_canary(client, ns, "serin.dev/pause", Some("true")).await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    prometheus_value(share).await.expect("the canary's share")
}

pub async fn resume(client: &Client, ns: &str) {
    annotate_canary(client, ns, "serin.dev/pause", Some("false")).await;
}

/// Waits until `rate` (the promoted canary's requests over the checks' window) has no data: a faulty
/// revision checked before would pass on the clean traffic still in the window (Flagger's semantics too).
pub async fn wait_window_empty(rate: &str) {
    wait_for(
        "the promoted canary's traffic to leave the check window",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || async {
            match prometheus_query(rate).await {
                Ok(v) if v.is_empty() || v == [0.0] => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
}

/// Rolls out `image` failing half its requests and waits for the rollback on request-success-rate, the
/// primary still on `kept`.
pub async fn faulty_rolled_back(client: &Client, ns: &str, image: &str, kept: &str) {
    roll_out(client, ns, image, 0.5).await;
    let failed = wait_phase(client, ns, Phase::Failed, Duration::from_secs(60)).await;
    let why = failed
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .and_then(|c| c.message.clone())
        .unwrap_or_default();
    assert!(why.contains("request-success-rate"), "{why}");
    assert_eq!(image_of(client, ns, "podinfo-primary").await.0, kept);
}

/// Blue/green mirroring of a revision failing half its requests, judged on the copies alone: waits for
/// `mirrored` (the route read back as mirroring) and for the rollback, then returns (failed copies at the
/// canary's pods, the users' requests through route `route`). Asserts no user request was answered by a
/// failing pod (500) or found no ready endpoint (503).
pub async fn mirrored_faulty_rolled_back<F, Fut>(
    client: &Client,
    ns: &str,
    route: &str,
    mirrored: F,
) -> (f64, f64)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    roll_out(client, ns, "podinfo:2.0.0", 0.5).await;
    wait_for(
        "the route to mirror to the canary",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            if mirrored().await {
                Ok(())
            } else {
                Err("not mirroring".to_string())
            }
        },
    )
    .await;
    let failed = wait_phase(client, ns, Phase::Failed, Duration::from_secs(60)).await;
    assert!(
        failed.conditions.iter().any(|c| c
            .message
            .as_deref()
            .unwrap_or("")
            .contains("request-success-rate")),
        "{:?}",
        failed.conditions
    );
    let sel = format!(
        r#"kubernetes_namespace="{ns}", kubernetes_pod_name=~"podinfo-[0-9a-z]+-[0-9a-z]+""#
    );
    // The canary's pods are scaled away by the rollback, and their series go stale with them: read the
    // last value each had, not the instant's (an instant query right after the rollback finds none).
    let copies_failed = prometheus_value(&format!(
        r#"sum(last_over_time(http_request_duration_seconds_count{{{sel}, status="500"}}[5m]))"#
    ))
    .await
    .expect("the canary's pods counted the mirrored copies");
    let users = prometheus_value(&format!(
        r#"sum(trafficsim_requests_total{{namespace="{ns}", route="{route}"}})"#
    ))
    .await
    .expect("the users' requests");
    let users_failed = prometheus_query(&format!(
        r#"sum(trafficsim_requests_total{{namespace="{ns}", route="{route}", code=~"500|503"}})"#
    ))
    .await
    .expect("Prometheus answers");
    assert!(copies_failed > 0.0, "no copy reached the canary");
    assert!(users > 0.0);
    assert!(
        users_failed.iter().all(|n| *n == 0.0),
        "users were answered by the canary or found no endpoint: {users_failed:?}"
    );
    (copies_failed, users)
}
