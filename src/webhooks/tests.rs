//! The webhook client against a real loopback HTTP server.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};

use super::*;

#[derive(Default)]
struct Seen {
    flaky: AtomicU32,
    limited: AtomicU32,
    bodies: std::sync::Mutex<Vec<Value>>,
}

async fn server() -> (String, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let app = Router::new()
        .route("/ok", post(|| async { StatusCode::OK }))
        .route("/accepted", post(|| async { StatusCode::ACCEPTED }))
        .route(
            "/203",
            post(|| async { StatusCode::NON_AUTHORITATIVE_INFORMATION }),
        )
        .route(
            "/closed",
            post(|| async { (StatusCode::FORBIDDEN, "Forbidden: gate closed") }),
        )
        .route("/501", post(|| async { StatusCode::NOT_IMPLEMENTED }))
        .route(
            "/flaky",
            post(|State(s): State<Arc<Seen>>| async move {
                match s.flaky.fetch_add(1, Ordering::SeqCst) {
                    0 | 1 => StatusCode::SERVICE_UNAVAILABLE,
                    _ => StatusCode::OK,
                }
            }),
        )
        .route(
            "/limited",
            post(|State(s): State<Arc<Seen>>| async move {
                let mut headers = HeaderMap::new();
                headers.insert("retry-after", "1".parse().unwrap());
                match s.limited.fetch_add(1, Ordering::SeqCst) {
                    0 => (StatusCode::TOO_MANY_REQUESTS, headers),
                    _ => (StatusCode::OK, headers),
                }
            }),
        )
        .route(
            "/slow",
            post(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                StatusCode::OK
            }),
        )
        .route(
            "/echo",
            post(
                |State(s): State<Arc<Seen>>, body: axum::body::Bytes| async move {
                    s.bodies
                        .lock()
                        .unwrap()
                        .push(serde_json::from_slice(&body).unwrap());
                    StatusCode::OK
                },
            ),
        )
        .with_state(seen.clone());
    (crate::testing::serve(app).await, seen)
}

fn hook(name: &str, url: String, extra: Value) -> Webhook {
    let mut v = json!({"name": name, "url": url, "type": "confirm-rollout"});
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    serde_json::from_value(v).unwrap()
}

fn payload() -> Payload {
    Payload {
        name: "podinfo".into(),
        namespace: "shop".into(),
        phase: Phase::Progressing,
        checksum: "abc123".into(),
        metadata: BTreeMap::new(),
    }
}

fn caller() -> Caller {
    Caller::new()
        .unwrap()
        .with_backoff(Duration::from_millis(20))
}

#[tokio::test]
async fn an_answer_of_202_or_less_passes_and_203_fails() {
    let (base, _) = server().await;
    let c = caller();
    let ok = c
        .call(&hook("a", format!("{base}/ok"), json!({})), &payload())
        .await;
    assert!(ok.passed, "{ok:?}");
    assert_eq!(ok.message, "HTTP 200");
    let accepted = c
        .call(
            &hook("a", format!("{base}/accepted"), json!({})),
            &payload(),
        )
        .await;
    assert!(accepted.passed);
    let not = c
        .call(&hook("a", format!("{base}/203"), json!({})), &payload())
        .await;
    assert!(!not.passed);
    assert_eq!(not.message, "HTTP 203");
    let closed = c
        .call(&hook("a", format!("{base}/closed"), json!({})), &payload())
        .await;
    assert!(!closed.passed);
    assert_eq!(closed.message, "HTTP 403: Forbidden: gate closed");
}

#[tokio::test]
async fn retries_are_extra_attempts_on_server_errors_only() {
    let (base, seen) = server().await;
    let c = caller();
    // Two 503s, then 200: one retry is not enough, two are.
    let once = c
        .call(
            &hook("a", format!("{base}/flaky"), json!({"retries": 1})),
            &payload(),
        )
        .await;
    assert!(!once.passed);
    assert_eq!(once.message, "HTTP 503, giving up after 2 attempts");
    seen.flaky.store(0, Ordering::SeqCst);
    let twice = c
        .call(
            &hook("a", format!("{base}/flaky"), json!({"retries": 2})),
            &payload(),
        )
        .await;
    assert!(twice.passed, "{twice:?}");
    assert_eq!(seen.flaky.load(Ordering::SeqCst), 3);
    // 501 is not retried, nor is a 403.
    let not_impl = c
        .call(
            &hook("a", format!("{base}/501"), json!({"retries": 3})),
            &payload(),
        )
        .await;
    assert_eq!(not_impl.message, "HTTP 501");
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let (base, seen) = server().await;
    let start = Instant::now();
    let call = caller()
        .call(
            &hook("a", format!("{base}/limited"), json!({"retries": 1})),
            &payload(),
        )
        .await;
    assert!(call.passed, "{call:?}");
    assert_eq!(seen.limited.load(Ordering::SeqCst), 2);
    // The server asked for a second's pause, far above the 20 ms backoff.
    assert!(start.elapsed() >= Duration::from_secs(1));
}

#[tokio::test]
async fn the_timeout_bounds_each_attempt_and_no_answer_fails() {
    let (base, _) = server().await;
    let call = caller()
        .call(
            &hook("a", format!("{base}/slow"), json!({"timeout": "200ms"})),
            &payload(),
        )
        .await;
    assert!(!call.passed);
    assert_eq!(call.message, "no answer within 200ms");
    // Nothing listens: a connection error, which does not quote the URL.
    let url = "http://127.0.0.1:9/hook?token=s3cret".to_string();
    let call = caller().call(&hook("a", url, json!({})), &payload()).await;
    assert!(!call.passed);
    assert!(!call.message.contains("s3cret"), "{}", call.message);
}

#[tokio::test]
async fn the_payload_is_flaggers_with_the_webhooks_metadata_added() {
    let (base, seen) = server().await;
    let mut p = payload();
    p.metadata.insert("eventMessage".into(), "ours".into());
    let h = hook(
        "a",
        format!("{base}/echo"),
        json!({"metadata": {"cmd": "hey -z 1m http://podinfo-canary.shop:9898/", "eventMessage": "theirs"}}),
    );
    assert!(caller().call(&h, &p).await.passed);
    let body = seen.bodies.lock().unwrap()[0].clone();
    assert_eq!(
        body,
        json!({"name": "podinfo", "namespace": "shop", "phase": "Progressing", "checksum": "abc123",
            "metadata": {"cmd": "hey -z 1m http://podinfo-canary.shop:9898/", "eventMessage": "ours"}})
    );
}

#[tokio::test]
async fn gates_stop_at_the_first_failure_and_rollback_webhooks_at_the_first_pass() {
    let (base, seen) = server().await;
    let gates: Vec<Webhook> = ["ok", "closed", "echo"]
        .iter()
        .map(|p| hook(p, format!("{base}/{p}"), json!({})))
        .collect();
    let calls = caller()
        .run(&gates, HookType::ConfirmRollout, &payload())
        .await;
    assert_eq!(
        calls
            .iter()
            .map(|c| (c.name.as_str(), c.passed))
            .collect::<Vec<_>>(),
        [("ok", true), ("closed", false)]
    );
    let rollbacks: Vec<Webhook> = ["closed", "ok", "echo"]
        .iter()
        .map(|p| hook(p, format!("{base}/{p}"), json!({"type": "rollback"})))
        .collect();
    let calls = caller()
        .run(&rollbacks, HookType::Rollback, &payload())
        .await;
    assert_eq!(calls.len(), 2);
    assert!(calls[1].passed);
    assert!(
        seen.bodies.lock().unwrap().is_empty(),
        "echo was never called"
    );
}
