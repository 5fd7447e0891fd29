//! Metrics providers: where a check's query is answered. One trait, one file per provider, and a typed
//! registry: a MetricTemplate whose provider Serin has no implementation for is an error that names it,
//! never a silent fallback to another.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::BoxFuture;
use secrecy::SecretSlice;

use crate::api::metric_template::MetricProviderType;

/// What an instant query answered, as a check reads it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Answer {
    /// One value: a single-sample vector or a scalar. ±Inf is a value (a p99 beyond the last bucket, say)
    /// and is judged like any other.
    Value(f64),
    /// Nothing to judge: an empty vector, or NaN (0/0: a ratio over no requests).
    NoData(NoData),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoData {
    Empty,
    NaN,
}

/// Why a query got no answer. `server` names the provider and its address ("Prometheus at http://...").
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QueryError {
    #[error("{server} could not be reached: {reason}")]
    Unreachable { server: String, reason: String },
    #[error("{server} did not answer within {timeout:?}")]
    Timeout { server: String, timeout: Duration },
    #[error("{server} refused the query ({status}): {message}")]
    Refused {
        server: String,
        status: u16,
        message: String,
    },
    #[error("{server}: {message}")]
    BadAnswer { server: String, message: String },
    #[error("{0}")]
    Settings(String),
}

/// A provider's settings for one query: the MetricTemplate's provider fields (or, for the built-in checks,
/// just the address) and the data of its Secret. The Secret's values print as redacted.
#[derive(Debug, Clone, Default)]
pub struct ProviderSettings {
    pub address: String,
    pub headers: BTreeMap<String, Vec<String>>,
    /// The secretRef's data, by key; empty without a secretRef.
    pub secret: BTreeMap<String, SecretSlice<u8>>,
    /// Where the secret came from, for error messages ("Secret test/prom-auth").
    pub secret_name: Option<String>,
    pub insecure_skip_verify: bool,
    pub region: Option<String>,
}

pub trait MetricsProvider: Send + Sync {
    /// Runs `query` as an instant query at `at` (seconds since the epoch).
    fn query<'a>(
        &'a self,
        settings: &'a ProviderSettings,
        query: &'a str,
        at: f64,
    ) -> BoxFuture<'a, Result<Answer, QueryError>>;
}

/// The providers Serin has, by MetricTemplate provider type.
pub struct Providers {
    pub prometheus: super::prometheus::Prometheus,
}

impl Providers {
    pub fn new(timeout: Duration) -> Self {
        Self {
            prometheus: super::prometheus::Prometheus::new(timeout),
        }
    }

    pub fn get(&self, kind: MetricProviderType) -> Result<&dyn MetricsProvider, String> {
        match kind {
            MetricProviderType::Prometheus => Ok(&self.prometheus),
            other => Err(format!(
                "{} is not supported yet (supported: prometheus)",
                serde_json::to_value(other)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_else(|| format!("{other:?}"))
            )),
        }
    }
}

/// For tests: a loopback HTTP server that answers every request with `response` (a whole HTTP/1.1
/// answer) and keeps each request's head (request line and headers), to see what reached it.
#[cfg(test)]
pub(crate) async fn recording_server(
    response: String,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            log.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&head).into_owned());
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
    });
    (address, seen)
}

/// For tests: the address of a port just released, where nothing listens.
#[cfg(test)]
pub(crate) fn nowhere() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    format!("http://127.0.0.1:{port}")
}
