//! gRPC load as ghz sends it, from Serin's own client: unary calls over HTTP/2 in plaintext (ghz's
//! `--insecure`, how in-cluster load tests reach a Service), each a POST of one length-prefixed message to
//! `/<package.Service>/<Method>`. A call succeeded when its `grpc-status` (in the trailers, or in the headers
//! of a trailers-only answer) is 0.
//!
//! Without the method's proto Serin can't encode an arbitrary message, so it sends only what needs none: an
//! empty message (`-d '{}'` or no data; any method whose request fields are all defaults) and the standard
//! health check's `{"service": "..."}`. Anything else is refused at parse time, and runs through the `ghz`
//! program only when the load tester allows shell commands.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The method ghz calls when a command names none: the standard health check, which every gRPC server
/// that Kubernetes probes serves.
pub const HEALTH_CHECK: &str = "grpc.health.v1.Health/Check";

/// How one call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// grpc-status 0.
    Ok,
    /// An answer with another grpc-status, or not a gRPC answer (HTTP status other than 200).
    Failed,
    /// No answer: refused, reset, timed out.
    NoAnswer,
}

/// The request message for `call` with ghz's `-d` JSON `data`, protobuf-encoded; Err says why Serin
/// can't encode it without the proto.
pub fn request_message(call: &str, data: Option<&str>) -> Result<Bytes, String> {
    let Some(data) = data.map(str::trim).filter(|d| !d.is_empty()) else {
        return Ok(Bytes::new());
    };
    let value: serde_json::Value =
        serde_json::from_str(data).map_err(|e| format!("-d {data:?} is not JSON: {e}"))?;
    let Some(fields) = value.as_object() else {
        return Err(format!("-d {data:?} is not a JSON object"));
    };
    if fields.is_empty() {
        return Ok(Bytes::new());
    }
    let health = call.trim_start_matches('/') == HEALTH_CHECK;
    match (health, fields.get("service")) {
        (true, Some(serde_json::Value::String(service))) if fields.len() == 1 => {
            // HealthCheckRequest { string service = 1; }: tag 1, length-delimited; empty is the default.
            let mut out = Vec::new();
            if !service.is_empty() {
                out.push(0x0a);
                varint(service.len() as u64, &mut out);
                out.extend_from_slice(service.as_bytes());
            }
            Ok(Bytes::from(out))
        }
        _ => Err(format!(
            "a message other than an empty one or the health check's service needs {call}'s proto"
        )),
    }
}

fn varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// A message in gRPC's framing: not compressed, a 4-byte big-endian length, the bytes.
fn framed(message: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(5 + message.len());
    out.push(0);
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    Bytes::from(out)
}

/// HTTP/2 with prior knowledge (no TLS, no upgrade), as gRPC clients speak to plaintext servers.
#[derive(Clone)]
pub struct GrpcClient {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for GrpcClient {
    fn default() -> Self {
        GrpcClient {
            client: Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build_http(),
        }
    }
}

impl GrpcClient {
    /// One unary call of `method` (`package.Service/Method`) at `target` (`host:port`).
    pub async fn call(
        &self,
        target: &str,
        method: &str,
        message: Bytes,
        timeout: Duration,
    ) -> Outcome {
        let uri = format!("http://{target}/{}", method.trim_start_matches('/'));
        let Ok(request) = http::Request::post(uri)
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("grpc-timeout", format!("{}m", timeout.as_millis()))
            .body(Full::new(framed(&message)))
        else {
            return Outcome::Failed;
        };
        let call = async {
            let response = self.client.request(request).await.ok()?;
            if response.status() != http::StatusCode::OK {
                return Some(Outcome::Failed);
            }
            let in_headers = grpc_status(response.headers());
            let body = response.into_body().collect().await.ok()?;
            let status = body.trailers().and_then(grpc_status).or(in_headers);
            Some(if status == Some(0) {
                Outcome::Ok
            } else {
                Outcome::Failed
            })
        };
        tokio::time::timeout(timeout, call)
            .await
            .ok()
            .flatten()
            .unwrap_or(Outcome::NoAnswer)
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<u32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

#[cfg(test)]
mod tests;
