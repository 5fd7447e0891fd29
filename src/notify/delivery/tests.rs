//! The delivery queue against a real loopback receiver: retries, Retry-After, a hanging receiver, and a
//! full queue, a proxy.

use std::sync::atomic::{AtomicU32, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;

use super::*;

#[derive(Default)]
struct Seen {
    calls: AtomicU32,
    auth: Mutex<Vec<String>>,
    /// The request targets a proxy was asked for.
    proxied: Mutex<Vec<String>>,
}

#[derive(Default)]
struct Counts(Mutex<Vec<(String, String)>>);

impl Counter for Counts {
    fn count(&self, provider: &str, _: Severity, outcome: &str) {
        self.0
            .lock()
            .unwrap()
            .push((provider.into(), outcome.into()));
    }
    fn depth(&self, _: usize) {}
}

async fn receiver() -> (String, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let app = Router::new()
        .route(
            "/ok",
            post(|State(s): State<Arc<Seen>>, h: HeaderMap| async move {
                s.calls.fetch_add(1, Ordering::SeqCst);
                if let Some(a) = h.get("authorization") {
                    s.auth.lock().unwrap().push(a.to_str().unwrap().into());
                }
                StatusCode::OK
            }),
        )
        .route(
            "/via-proxy",
            post(
                |State(s): State<Arc<Seen>>, uri: axum::http::Uri| async move {
                    s.proxied.lock().unwrap().push(uri.to_string());
                    StatusCode::OK
                },
            ),
        )
        .route(
            "/down",
            post(|State(s): State<Arc<Seen>>| async move {
                s.calls.fetch_add(1, Ordering::SeqCst);
                StatusCode::INTERNAL_SERVER_ERROR
            }),
        )
        .route(
            "/busy-once",
            post(|State(s): State<Arc<Seen>>| async move {
                let mut h = HeaderMap::new();
                h.insert("retry-after", "1".parse().unwrap());
                match s.calls.fetch_add(1, Ordering::SeqCst) {
                    0 => (StatusCode::TOO_MANY_REQUESTS, h),
                    _ => (StatusCode::OK, h),
                }
            }),
        )
        .route(
            "/hang",
            post(|State(s): State<Arc<Seen>>| async move {
                s.calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(3600)).await;
                StatusCode::OK
            }),
        )
        .with_state(seen.clone());
    (crate::testing::serve(app).await, seen)
}

fn delivery(url: String, severity: Severity) -> Delivery {
    Delivery {
        provider: "slack",
        target: "AlertProvider test/slack".into(),
        url: url.into(),
        token: Some("xoxb-secret".to_string().into()),
        proxy: None,
        body: b"{}".to_vec(),
        severity,
        accept_up_to: 299,
        regarding: ObjectReference::default(),
    }
}

fn retry() -> Retry {
    Retry {
        attempts: 3,
        timeout: Duration::from_millis(300),
        first_backoff: Duration::from_millis(20),
        deadline: Duration::from_secs(10),
    }
}

fn queue(counts: Arc<Counts>, failures: Arc<Mutex<Vec<String>>>) -> Arc<Queue> {
    Queue::start(
        4,
        2,
        retry(),
        counts,
        Arc::new(move |d: &Delivery, why: &str| {
            failures
                .lock()
                .unwrap()
                .push(format!("{}: {why}", d.target));
        }),
    )
}

async fn settle(counts: &Counts, n: usize) {
    for _ in 0..100 {
        if counts.0.lock().unwrap().len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{:?}", counts.0.lock().unwrap());
}

#[tokio::test]
async fn delivered_with_the_token_and_failures_retried_then_told() {
    let (base, seen) = receiver().await;
    let counts = Arc::new(Counts::default());
    let failures = Arc::new(Mutex::new(Vec::new()));
    let q = queue(counts.clone(), failures.clone());
    q.push(delivery(format!("{base}/ok"), Severity::Info));
    settle(&counts, 1).await;
    assert_eq!(*seen.auth.lock().unwrap(), ["Bearer xoxb-secret"]);
    seen.calls.store(0, Ordering::SeqCst);
    q.push(delivery(format!("{base}/down?token=hush"), Severity::Error));
    settle(&counts, 2).await;
    assert_eq!(seen.calls.load(Ordering::SeqCst), 3, "three attempts");
    let told = failures.lock().unwrap().clone();
    assert_eq!(
        told,
        ["AlertProvider test/slack: HTTP 500 (after 3 attempts)"]
    );
    assert!(!told[0].contains("hush"));
    assert_eq!(
        counts.0.lock().unwrap().clone(),
        [
            ("slack".into(), "delivered".into()),
            ("slack".into(), "failed".into())
        ]
    );
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let (base, seen) = receiver().await;
    let counts = Arc::new(Counts::default());
    let q = queue(counts.clone(), Arc::default());
    let start = std::time::Instant::now();
    q.push(delivery(format!("{base}/busy-once"), Severity::Warn));
    settle(&counts, 1).await;
    assert_eq!(counts.0.lock().unwrap()[0].1, "delivered");
    assert_eq!(seen.calls.load(Ordering::SeqCst), 2);
    assert!(start.elapsed() >= Duration::from_secs(1));
}

#[tokio::test]
async fn pushing_never_waits_on_a_hanging_receiver_and_a_full_queue_drops_info_first() {
    let (base, _) = receiver().await;
    let counts = Arc::new(Counts::default());
    let q = queue(counts.clone(), Arc::default());
    let start = std::time::Instant::now();
    // Two workers hang on the first two (two targets: one delivery per target at a time); four wait in
    // the queue; more push out info items first.
    for target in ["hanging a", "hanging b"] {
        let mut d = delivery(format!("{base}/hang"), Severity::Error);
        d.target = target.into();
        q.push(d);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    q.push(delivery(format!("{base}/hang"), Severity::Info));
    for _ in 0..3 {
        q.push(delivery(format!("{base}/hang"), Severity::Error));
    }
    q.push(delivery(format!("{base}/hang"), Severity::Error));
    assert!(
        start.elapsed() < Duration::from_millis(200),
        "push never waits"
    );
    let dropped: Vec<_> = counts
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, o)| o == "dropped")
        .cloned()
        .collect();
    assert_eq!(dropped.len(), 1);
    assert_eq!(
        q.items
            .lock()
            .unwrap()
            .iter()
            .filter(|d| d.severity == Severity::Info)
            .count(),
        0,
        "the info item went first"
    );
}

#[tokio::test]
async fn a_providers_proxy_carries_the_delivery() {
    let (proxy, seen) = receiver().await;
    let counts = Arc::new(Counts::default());
    let q = queue(counts.clone(), Arc::default());
    // A host that resolves nowhere: only the proxy can deliver it.
    let mut d = delivery(
        "http://hooks.slack.invalid/via-proxy".into(),
        Severity::Info,
    );
    d.proxy = Some(proxy);
    q.push(d);
    settle(&counts, 1).await;
    assert_eq!(counts.0.lock().unwrap()[0].1, "delivered");
    assert_eq!(
        *seen.proxied.lock().unwrap(),
        ["http://hooks.slack.invalid/via-proxy"]
    );
}

#[tokio::test]
async fn a_hanging_target_holds_one_worker_and_the_others_deliver_in_order() {
    let (base, seen) = receiver().await;
    let counts = Arc::new(Counts::default());
    let q = queue(counts.clone(), Arc::default());
    // Four items: the queue holds four.
    for _ in 0..2 {
        let mut d = delivery(format!("{base}/hang"), Severity::Error);
        d.target = "dead".into();
        q.push(d);
    }
    for _ in 0..2 {
        let mut d = delivery(format!("{base}/ok"), Severity::Info);
        d.target = "live".into();
        q.push(d);
    }
    // Two workers: the dead target's first delivery takes one (three attempts of 300 ms), the live
    // target's go through the other, before anything of the dead one's ends.
    settle(&counts, 2).await;
    assert_eq!(
        counts.0.lock().unwrap()[..2],
        [
            ("slack".to_string(), "delivered".to_string()),
            ("slack".to_string(), "delivered".to_string())
        ]
    );
    assert_eq!(
        seen.calls.load(Ordering::SeqCst),
        3,
        "one dead call, two live"
    );
}
