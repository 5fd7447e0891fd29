//! Real load from Serin's own HTTP client, shaped as hey shapes it: workers, a rate, a duration or a count.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::Instant;

use super::command::{LoadSpec, Tool};

/// What a load run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    pub requests: u64,
    /// Answers below 400.
    pub ok: u64,
    /// Answers of 400 and above.
    pub failed: u64,
    /// No answer (refused, timed out).
    pub errors: u64,
}

/// Runs a load to its end: real requests here, simulated ones in the test world's traffic simulator.
pub trait LoadRunner: Send + Sync + 'static {
    fn run(&self, spec: LoadSpec) -> BoxFuture<'static, Result<LoadReport, String>>;
}

/// HTTP load with reqwest.
pub struct HttpLoad {
    client: reqwest::Client,
}

impl HttpLoad {
    pub fn new() -> Result<Self, reqwest::Error> {
        Ok(HttpLoad {
            client: reqwest::Client::builder().build()?,
        })
    }
}

impl LoadRunner for HttpLoad {
    fn run(&self, spec: LoadSpec) -> BoxFuture<'static, Result<LoadReport, String>> {
        let client = self.client.clone();
        Box::pin(async move {
            if spec.tool == Tool::Ghz {
                return Err("ghz (gRPC) load is not available in this build".into());
            }
            let method = reqwest::Method::from_bytes(spec.method.as_bytes())
                .map_err(|_| format!("{:?} is not an HTTP method", spec.method))?;
            let url = reqwest::Url::parse(&spec.target)
                .map_err(|e| format!("{:?} is not a URL: {e}", spec.target))?;
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
                let (client, method, url, spec, counts) = (
                    client.clone(),
                    method.clone(),
                    url.clone(),
                    spec.clone(),
                    counts.clone(),
                );
                tasks.push(tokio::spawn(async move {
                    let mut next = Instant::now();
                    loop {
                        match spec.duration {
                            Some(d) if started.elapsed() >= d => break,
                            None if counts[0].fetch_add(1, Ordering::Relaxed) >= spec.requests => {
                                break;
                            }
                            Some(_) => {
                                counts[0].fetch_add(1, Ordering::Relaxed);
                            }
                            None => {}
                        }
                        let mut req = client
                            .request(method.clone(), url.clone())
                            .timeout(spec.timeout);
                        for (k, v) in &spec.headers {
                            req = req.header(k, v);
                        }
                        if let Some(body) = &spec.body {
                            req = req.body(body.clone());
                        }
                        let slot = match req.send().await {
                            Ok(r) if r.status().as_u16() < 400 => 1,
                            Ok(_) => 2,
                            Err(_) => 3,
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
            Ok(LoadReport {
                requests: get(1) + get(2) + get(3),
                ok: get(1),
                failed: get(2),
                errors: get(3),
            })
        })
    }
}
