//! Calling a Canary's webhooks as Flagger does: POST of `{name, namespace, phase, checksum, metadata}` as
//! JSON; an answer of 202 or less passes, anything else (203 included) or no answer fails. `retries` extra
//! attempts on connection errors, timeouts, 429 and 5xx (not 501), backing off from 1s, doubling up to 30s
//! and honouring Retry-After; `timeout` bounds each attempt. `disableTLS` skips certificate verification.
//!
//! The gates, checks and rollback webhooks decide the tick, so the tick waits for them; post-rollout and
//! event webhooks do not hold anything up.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::api::Phase;
use crate::api::analysis::{HookType, Webhook};
use crate::decision::settings::webhook_timeout;
use crate::vocabulary::HookCall;

/// The first wait between attempts; each further one doubles, up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How much of an answer's body a failure's message quotes.
const BODY_QUOTE: usize = 200;

/// What every webhook receives.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Payload {
    pub name: String,
    pub namespace: String,
    pub phase: Phase,
    /// Identifies the revision and its configs (Serin's revision hash).
    pub checksum: String,
    pub metadata: BTreeMap<String, String>,
}

impl Payload {
    /// The payload with a webhook's own metadata added; the payload's keys win.
    pub fn with_metadata(mut self, hook: Option<&BTreeMap<String, String>>) -> Self {
        for (k, v) in hook.into_iter().flatten() {
            self.metadata.entry(k.clone()).or_insert_with(|| v.clone());
        }
        self
    }
}

/// The HTTP clients for webhooks, built once: one verifying certificates, one not (disableTLS).
#[derive(Clone)]
pub struct Caller {
    verified: reqwest::Client,
    unverified: reqwest::Client,
    /// The first wait between attempts (shorter in tests).
    backoff: Duration,
}

impl Caller {
    pub fn new() -> Result<Self, reqwest::Error> {
        let build = |insecure: bool| {
            reqwest::Client::builder()
                .tls_danger_accept_invalid_certs(insecure)
                .build()
        };
        Ok(Caller {
            verified: build(false)?,
            unverified: build(true)?,
            backoff: MIN_BACKOFF,
        })
    }

    /// The same clients with a shorter first backoff, for tests.
    pub fn with_backoff(mut self, backoff: Duration) -> Self {
        self.backoff = backoff;
        self
    }

    /// Calls the webhooks of `kind` in spec order, stopping where the type's rule says: the gates and the
    /// checks at the first failure, rollback webhooks at the first pass; post-rollout and event webhooks
    /// all run.
    pub async fn run(&self, hooks: &[Webhook], kind: HookType, payload: &Payload) -> Vec<HookCall> {
        let mut calls = Vec::new();
        for hook in hooks.iter().filter(|h| h.kind() == kind) {
            let call = self.call(hook, payload).await;
            let stop = kind.stops_after(call.passed);
            calls.push(call);
            if stop {
                break;
            }
        }
        calls
    }

    /// One webhook, with its retries. The metadata of the webhook is added to the payload's, which wins.
    pub async fn call(&self, hook: &Webhook, payload: &Payload) -> HookCall {
        let body = payload.clone().with_metadata(hook.metadata.as_ref());
        let timeout =
            webhook_timeout(hook).unwrap_or(crate::decision::settings::DEFAULT_WEBHOOK_TIMEOUT);
        let client = if hook.disable_tls {
            &self.unverified
        } else {
            &self.verified
        };
        let attempts = 1 + hook.retries.unwrap_or(0).max(0) as u32;
        let mut wait = self.backoff;
        let mut attempt = 1;
        loop {
            let (answer, retry_after) = attempt_once(client, &hook.url, &body, timeout).await;
            let retryable = match &answer {
                Answer::Status(code, _) => retryable(*code),
                Answer::NoAnswer(_) => true,
            };
            if !retryable || attempt >= attempts {
                let (passed, message) = match answer {
                    Answer::Status(code, _) if code <= 202 => (true, format!("HTTP {code}")),
                    Answer::Status(code, body) if !retryable => (false, quote(code, &body)),
                    Answer::Status(code, _) => (
                        false,
                        format!("HTTP {code}, giving up after {attempt} attempts"),
                    ),
                    Answer::NoAnswer(why) if attempts > 1 => {
                        (false, format!("{why}, giving up after {attempt} attempts"))
                    }
                    Answer::NoAnswer(why) => (false, why),
                };
                return HookCall {
                    name: hook.name.clone(),
                    passed,
                    message,
                };
            }
            let pause = retry_after.map_or(wait, |r| r.min(MAX_BACKOFF));
            tokio::time::sleep(pause).await;
            wait = (wait * 2).min(MAX_BACKOFF);
            attempt += 1;
        }
    }
}

enum Answer {
    Status(u16, String),
    /// Why there was no answer, without the URL (it may carry a token).
    NoAnswer(String),
}

async fn attempt_once(
    client: &reqwest::Client,
    url: &str,
    body: &Payload,
    timeout: Duration,
) -> (Answer, Option<Duration>) {
    let sent = client.post(url).json(body).timeout(timeout).send().await;
    match sent {
        Ok(response) => {
            let code = response.status().as_u16();
            // Flagger's client honours it on these two only.
            let retry_after =
                retry_after(response.headers()).filter(|_| code == 429 || code == 503);
            let text = if code <= 202 {
                String::new()
            } else {
                tokio::time::timeout(timeout, response.text())
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or_default()
            };
            (Answer::Status(code, text), retry_after)
        }
        Err(e) => (Answer::NoAnswer(no_answer(e, timeout)), None),
    }
}

/// Whether an answer is worth another attempt: 429, and server errors but 501 (not implemented stays so).
pub(crate) fn retryable(code: u16) -> bool {
    code == 429 || (code >= 500 && code != 501)
}

/// The wait an answer asks for before the next attempt (Retry-After, in seconds).
pub(crate) fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    headers
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// Why a request bounded by `timeout` got no answer, in words, without its URL (it may carry a token).
pub(crate) fn no_answer(e: reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("no answer within {timeout:?}");
    }
    let e = e.without_url();
    let mut why = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        why = format!("{why}: {s}");
        source = s.source();
    }
    why
}

fn quote(code: u16, body: &str) -> String {
    let body = body.trim();
    if body.is_empty() {
        return format!("HTTP {code}");
    }
    let mut end = body.len().min(BODY_QUOTE);
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    let more = if end < body.len() { "…" } else { "" };
    format!("HTTP {code}: {}{more}", &body[..end])
}

/// The phase Flagger sends with a webhook of this kind: the gates and checks say Progressing; confirm-rollout
/// and rollback the Canary's phase; post-rollout how the analysis ended.
pub fn payload_phase(kind: HookType, current: Phase, ended: Option<Phase>) -> Phase {
    match kind {
        HookType::ConfirmRollout | HookType::Rollback | HookType::Event => current,
        HookType::PostRollout => ended.unwrap_or(current),
        _ => Phase::Progressing,
    }
}

#[cfg(test)]
mod tests;
