//! The API clients Serin acts with. The controller's counts every request by verb and resource
//! (`serin_api_requests_total`: the evidence that a tick reads from the watch caches only), and refuses
//! every write but the Lease's while the leader [`Fence`] is closed, so a replica that lost its lease (or was
//! frozen past its renew deadline) writes nothing. The leader election's own client times out fast.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use http::{Method, Request};
use kube::client::ClientBuilder;
use kube::{Client, Config};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tower::{BoxError, Service};

use super::leader::Fence;
use crate::telemetry::RequestLabels;

/// Connecting to the API server; a server that does not accept within this is down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// No answer at all within this means a dead connection. Above the watches' 290 s server timeout, since
/// an idle watch is a response in progress.
const READ_TIMEOUT: Duration = Duration::from_secs(295);
/// The leader election's requests: a renewal that hangs must not outlast the renew deadline.
const LEASE_TIMEOUT: Duration = Duration::from_secs(4);

/// The controller's client, from the usual kubeconfig resolution: requests counted into `requests`,
/// writes refused (and counted into `fenced`) while `fence` is closed.
pub async fn controller_client(
    requests: Family<RequestLabels, Counter>,
    fence: Arc<Fence>,
    fenced: Counter,
) -> Result<Client, kube::Error> {
    let mut config = Config::infer().await.map_err(kube::Error::InferConfig)?;
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    config.read_timeout = Some(READ_TIMEOUT);
    config.reset_reader_on_write = true;
    let layer = tower::layer::layer_fn(move |inner| Counted {
        inner,
        requests: requests.clone(),
        fence: fence.clone(),
        fenced: fenced.clone(),
    });
    Ok(ClientBuilder::try_from(config)?.with_layer(&layer).build())
}

/// The leader election's client: every request times out within a few seconds.
pub async fn lease_client() -> Result<Client, kube::Error> {
    let mut config = Config::infer().await.map_err(kube::Error::InferConfig)?;
    config.connect_timeout = Some(LEASE_TIMEOUT);
    config.read_timeout = Some(LEASE_TIMEOUT);
    config.write_timeout = Some(LEASE_TIMEOUT);
    config.reset_reader_on_write = true;
    Client::try_from(config)
}

#[derive(Clone)]
struct Counted<S> {
    inner: S,
    requests: Family<RequestLabels, Counter>,
    fence: Arc<Fence>,
    fenced: Counter,
}

/// A write refused because this replica does not lead.
#[derive(Debug, thiserror::Error)]
#[error("not the leader (the lease was lost or not renewed in time): {method} {path} refused")]
pub struct NotLeader {
    method: Method,
    path: String,
}

impl<S, B> Service<Request<B>> for Counted<S>
where
    S: Service<Request<B>, Error = BoxError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<S::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let uri = request.uri();
        let (resource, named) = resource(uri.path());
        let verb = verb(request.method(), uri.query().unwrap_or_default(), named);
        let write = !matches!(verb, "watch" | "list" | "get");
        if write && resource != "leases" && !self.fence.is_open() {
            self.fenced.inc();
            let refused = NotLeader {
                method: request.method().clone(),
                path: uri.path().to_string(),
            };
            return Box::pin(std::future::ready(Err(refused.into())));
        }
        let labels = RequestLabels {
            verb: verb.into(),
            resource: resource.into(),
        };
        self.requests.get_or_create(&labels).inc();
        Box::pin(self.inner.call(request))
    }
}

/// What a request does: a watch or list (the caches' feed), a get of one object, or a write.
fn verb(method: &Method, query: &str, named: bool) -> &'static str {
    let watch = query
        .split('&')
        .any(|p| p == "watch=true" || p == "watch=1");
    match *method {
        Method::GET if watch => "watch",
        Method::GET if named => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PATCH => "patch",
        Method::PUT => "update",
        Method::DELETE => "delete",
        _ => "other",
    }
}

/// The resource a path names (`/api/v1/namespaces/ns/pods/x` and `/apis/apps/v1/deployments` alike), and
/// whether it names one object of it.
fn resource(path: &str) -> (&str, bool) {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let start = match segments.first() {
        Some(&"api") => 2,
        Some(&"apis") => 3,
        _ => return ("other", false),
    };
    match segments.get(start..) {
        Some(["namespaces", _, resource, rest @ ..]) => (resource, !rest.is_empty()),
        Some([resource, rest @ ..]) => (resource, !rest.is_empty()),
        _ => ("other", false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_told_apart_by_verb_and_resource() {
        assert_eq!(
            verb(&Method::GET, "watch=true&resourceVersion=1", false),
            "watch"
        );
        assert_eq!(verb(&Method::GET, "labelSelector=a", false), "list");
        assert_eq!(verb(&Method::GET, "", true), "get");
        assert_eq!(verb(&Method::PATCH, "fieldManager=serin", true), "patch");
        assert_eq!(resource("/api/v1/namespaces/shop/pods/x"), ("pods", true));
        assert_eq!(
            resource("/apis/apps/v1/namespaces/shop/deployments"),
            ("deployments", false)
        );
        assert_eq!(
            resource("/apis/serin.dev/v1beta1/canaries"),
            ("canaries", false)
        );
        assert_eq!(
            resource("/apis/serin.dev/v1beta1/namespaces/shop/canaries/podinfo/status"),
            ("canaries", true)
        );
        assert_eq!(resource("/api/v1/namespaces"), ("namespaces", false));
        assert_eq!(resource("/version"), ("other", false));
    }
}
