//! Real load from Serin's own clients, shaped as hey and ghz shape it: workers, a rate, a duration or a
//! count. HTTP for hey, gRPC over HTTP/2 for ghz.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::Instant;

use super::command::{LoadSpec, Tool};
use super::grpc::{GrpcClient, HEALTH_CHECK, Outcome, request_message};

/// What a load run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    pub requests: u64,
    /// Answers below 400 (gRPC: status 0).
    pub ok: u64,
    /// Answers of 400 and above (gRPC: any other status).
    pub failed: u64,
    /// No answer (refused, timed out).
    pub errors: u64,
}

/// Runs a load to its end: real requests here, simulated ones in the test world's traffic simulator.
pub trait LoadRunner: Send + Sync + 'static {
    fn run(&self, spec: LoadSpec) -> BoxFuture<'static, Result<LoadReport, String>>;
}

/// hey's load with reqwest, ghz's with Serin's gRPC client.
pub struct NativeLoad {
    http: reqwest::Client,
    grpc: GrpcClient,
}

impl NativeLoad {
    pub fn new() -> Result<Self, reqwest::Error> {
        Ok(NativeLoad {
            http: reqwest::Client::builder().build()?,
            grpc: GrpcClient::default(),
        })
    }
}

impl LoadRunner for NativeLoad {
    fn run(&self, spec: LoadSpec) -> BoxFuture<'static, Result<LoadReport, String>> {
        match spec.tool {
            Tool::Hey => http(self.http.clone(), spec),
            Tool::Ghz => grpc(self.grpc.clone(), spec),
        }
    }
}

fn http(client: reqwest::Client, spec: LoadSpec) -> BoxFuture<'static, Result<LoadReport, String>> {
    Box::pin(async move {
        let method = reqwest::Method::from_bytes(spec.method.as_bytes())
            .map_err(|_| format!("{:?} is not an HTTP method", spec.method))?;
        let url = reqwest::Url::parse(&spec.target)
            .map_err(|e| format!("{:?} is not a URL: {e}", spec.target))?;
        let send = {
            let spec = spec.clone();
            move || {
                let mut req = client
                    .request(method.clone(), url.clone())
                    .timeout(spec.timeout);
                for (k, v) in &spec.headers {
                    req = req.header(k, v);
                }
                if let Some(body) = &spec.body {
                    req = req.body(body.clone());
                }
                async move {
                    match req.send().await {
                        Ok(r) if r.status().as_u16() < 400 => Outcome::Ok,
                        Ok(_) => Outcome::Failed,
                        Err(_) => Outcome::NoAnswer,
                    }
                }
            }
        };
        Ok(drive(&spec, send).await)
    })
}

fn grpc(client: GrpcClient, spec: LoadSpec) -> BoxFuture<'static, Result<LoadReport, String>> {
    Box::pin(async move {
        let method = spec.call.clone().unwrap_or_else(|| HEALTH_CHECK.into());
        let message = request_message(&method, spec.body.as_deref())?;
        let (target, timeout) = (spec.target.clone(), spec.timeout);
        let send = move || {
            let (client, target, method, message) = (
                client.clone(),
                target.clone(),
                method.clone(),
                message.clone(),
            );
            async move { client.call(&target, &method, message, timeout).await }
        };
        Ok(drive(&spec, send).await)
    })
}

/// Runs `send` from `spec.concurrency` workers, at `spec.rate` in all when set, for `spec.duration` or
/// until `spec.requests` have been sent.
async fn drive<F, Fut>(spec: &LoadSpec, send: F) -> LoadReport
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Outcome> + Send,
{
    // Sent so far, then the count of each outcome.
    let counts = Arc::new([
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
    ]);
    let started = Instant::now();
    let workers = spec.concurrency.max(1);
    // Each worker sends at rate/workers; the count is shared.
    let gap = spec
        .rate
        .map(|r| Duration::from_secs_f64(f64::from(workers) / r));
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (send, counts, duration, requests) =
            (send.clone(), counts.clone(), spec.duration, spec.requests);
        tasks.push(tokio::spawn(async move {
            let mut next = Instant::now();
            loop {
                let sent = counts[0].fetch_add(1, Ordering::Relaxed);
                match duration {
                    Some(d) if started.elapsed() >= d => break,
                    None if sent >= requests => break,
                    _ => {}
                }
                let slot = match send().await {
                    Outcome::Ok => 1,
                    Outcome::Failed => 2,
                    Outcome::NoAnswer => 3,
                };
                counts[slot].fetch_add(1, Ordering::Relaxed);
                if let Some(gap) = gap {
                    next += gap;
                    tokio::time::sleep_until(next).await;
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let get = |i: usize| counts[i].load(Ordering::Relaxed);
    LoadReport {
        requests: get(1) + get(2) + get(3),
        ok: get(1),
        failed: get(2),
        errors: get(3),
    }
}
