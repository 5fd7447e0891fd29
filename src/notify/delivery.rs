//! Delivery off the reconcile path: a bounded queue and workers that POST with retries. Nothing waits on
//! it: a dead or hanging receiver costs a worker's attempt timeouts, never a tick. One delivery per target
//! at a time: each target gets its messages in order, and a dead one holds one worker, not all of them. Full, the queue drops
//! its oldest info alert first (else its oldest item), and counts the drop.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{Notify, Semaphore};
use tracing::warn;

use crate::api::analysis::Severity;
use crate::webhooks::{no_answer, retry_after, retryable};

/// One POST to make.
pub struct Delivery {
    /// What the receiver is, for metrics and messages: slack, msteams, ..., or webhook.
    pub provider: &'static str,
    /// Who it is, in words without the URL ("AlertProvider shop/on-call", "event webhook audit").
    pub target: String,
    pub url: SecretString,
    /// Sent as `Authorization: Bearer <token>`.
    pub token: Option<SecretString>,
    pub proxy: Option<String>,
    pub body: Vec<u8>,
    pub severity: Severity,
    /// The highest status that counts as delivered (299 for alerts, 202 for webhooks, as Flagger).
    pub accept_up_to: u16,
    /// The Canary it is about, for the NotificationFailed event.
    pub regarding: ObjectReference,
}

/// Told once a delivery has failed for good.
pub type OnFailure = Arc<dyn Fn(&Delivery, &str) + Send + Sync>;

/// How deliveries are retried.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub attempts: u32,
    pub timeout: Duration,
    pub first_backoff: Duration,
    /// No attempt starts after this long since the first.
    pub deadline: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 5,
            timeout: Duration::from_secs(5),
            first_backoff: Duration::from_secs(1),
            deadline: Duration::from_secs(120),
        }
    }
}

/// Counts by provider and outcome (delivered, failed, dropped), and the queue's depth.
pub trait Counter: Send + Sync {
    fn count(&self, provider: &str, severity: Severity, outcome: &str);
    fn depth(&self, depth: usize);
}

pub struct Queue {
    items: Mutex<VecDeque<Delivery>>,
    /// The targets with a delivery in flight.
    busy: Mutex<BTreeSet<String>>,
    ready: Notify,
    capacity: usize,
    counter: Arc<dyn Counter>,
}

impl Queue {
    /// Starts `workers` delivery workers on a queue of `capacity`.
    pub fn start(
        capacity: usize,
        workers: usize,
        retry: Retry,
        counter: Arc<dyn Counter>,
        on_failure: OnFailure,
    ) -> Arc<Queue> {
        let q = Arc::new(Queue {
            items: Mutex::new(VecDeque::new()),
            busy: Mutex::new(BTreeSet::new()),
            ready: Notify::new(),
            capacity,
            counter,
        });
        let clients = Arc::new(Clients::default());
        let slots = Arc::new(Semaphore::new(workers.max(1)));
        let worker = q.clone();
        tokio::spawn(async move {
            loop {
                let permit = match slots.clone().acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => return,
                };
                let item = worker.pop().await;
                let (clients, counter, on_failure, queue) = (
                    clients.clone(),
                    worker.counter.clone(),
                    on_failure.clone(),
                    worker.clone(),
                );
                tokio::spawn(async move {
                    let outcome = send(&clients, &item, retry).await;
                    match outcome {
                        Ok(()) => counter.count(item.provider, item.severity, "delivered"),
                        Err(why) => {
                            counter.count(item.provider, item.severity, "failed");
                            warn!(target = %item.target, provider = item.provider, error = %why, "notification not delivered");
                            on_failure(&item, &why);
                        }
                    }
                    queue.done(&item.target);
                    drop(permit);
                });
            }
        });
        q
    }

    /// Queues a delivery; never waits.
    pub fn push(&self, d: Delivery) {
        let mut items = self.items.lock().unwrap_or_else(|p| p.into_inner());
        if items.len() >= self.capacity {
            let drop_at = items
                .iter()
                .position(|i| i.severity == Severity::Info)
                .unwrap_or(0);
            if let Some(dropped) = items.remove(drop_at) {
                self.counter
                    .count(dropped.provider, dropped.severity, "dropped");
            }
        }
        items.push_back(d);
        self.counter.depth(items.len());
        drop(items);
        self.ready.notify_one();
    }

    /// The oldest delivery whose target has none in flight, marked in flight.
    async fn pop(&self) -> Delivery {
        loop {
            {
                let mut items = self.items.lock().unwrap_or_else(|p| p.into_inner());
                let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(i) = items.iter().position(|d| !busy.contains(&d.target))
                    && let Some(d) = items.remove(i)
                {
                    busy.insert(d.target.clone());
                    self.counter.depth(items.len());
                    return d;
                }
            }
            self.ready.notified().await;
        }
    }

    /// A delivery to `target` ended: its next one may go.
    fn done(&self, target: &str) {
        self.busy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(target);
        self.ready.notify_one();
    }
}

/// One HTTP client per proxy (and one without), built once.
#[derive(Default)]
struct Clients {
    by_proxy: Mutex<BTreeMap<Option<String>, reqwest::Client>>,
}

impl Clients {
    fn get(&self, proxy: &Option<String>) -> Result<reqwest::Client, String> {
        let mut map = self.by_proxy.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(proxy) {
            return Ok(c.clone());
        }
        let mut b = reqwest::Client::builder().redirect(reqwest::redirect::Policy::limited(3));
        if let Some(p) = proxy {
            b = b.proxy(reqwest::Proxy::all(p).map_err(|e| format!("proxy: {e}"))?);
        }
        let c = b.build().map_err(|e| format!("HTTP client: {e}"))?;
        map.insert(proxy.clone(), c.clone());
        Ok(c)
    }
}

/// Sends with retries on connection errors, timeouts, 429 and 5xx, backing off with jitter and honouring
/// Retry-After; Err says why the last attempt failed, without the URL.
async fn send(clients: &Clients, d: &Delivery, retry: Retry) -> Result<(), String> {
    let client = clients.get(&d.proxy)?;
    let started = tokio::time::Instant::now();
    let mut wait = retry.first_backoff;
    let mut attempt = 1;
    loop {
        let mut req = client
            .post(d.url.expose_secret())
            .header(http::header::CONTENT_TYPE, "application/json")
            .timeout(retry.timeout)
            .body(d.body.clone());
        if let Some(t) = &d.token {
            req = req.bearer_auth(t.expose_secret());
        }
        let (why, retryable, after) = match req.send().await {
            Ok(r) if r.status().as_u16() <= d.accept_up_to && r.status().is_success() => {
                return Ok(());
            }
            Ok(r) => {
                let code = r.status().as_u16();
                (
                    format!("HTTP {code}"),
                    retryable(code),
                    retry_after(r.headers()),
                )
            }
            Err(e) => (no_answer(e, retry.timeout), true, None),
        };
        let pause = after
            .unwrap_or_else(|| jitter(wait))
            .min(Duration::from_secs(30));
        if !retryable || attempt >= retry.attempts || started.elapsed() + pause >= retry.deadline {
            return Err(if attempt > 1 {
                format!("{why} (after {attempt} attempts)")
            } else {
                why
            });
        }
        tokio::time::sleep(pause).await;
        wait = (wait * 2).min(Duration::from_secs(30));
        attempt += 1;
    }
}

/// `d` plus up to half of it, so receivers that come back are not hit by every sender at once.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    d + d.mul_f64(f64::from(nanos % 1000) / 2000.0)
}

#[cfg(test)]
mod tests;
