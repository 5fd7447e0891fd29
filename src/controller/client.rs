//! The API client Serin acts with, counting every request by verb and resource
//! (`serin_api_requests_total`): the evidence that a tick reads from the watch caches only.

use std::task::{Context, Poll};

use http::{Method, Request};
use kube::client::ClientBuilder;
use kube::{Client, Config};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tower::Service;

use crate::telemetry::RequestLabels;

/// A client from the usual kubeconfig resolution, whose requests are counted into `requests`.
pub async fn counted_client(
    requests: Family<RequestLabels, Counter>,
) -> Result<Client, kube::Error> {
    let config = Config::infer().await.map_err(kube::Error::InferConfig)?;
    let layer = tower::layer::layer_fn(move |inner| Counted {
        inner,
        requests: requests.clone(),
    });
    Ok(ClientBuilder::try_from(config)?.with_layer(&layer).build())
}

#[derive(Clone)]
struct Counted<S> {
    inner: S,
    requests: Family<RequestLabels, Counter>,
}

impl<S, B> Service<Request<B>> for Counted<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let uri = request.uri();
        let (resource, named) = resource(uri.path());
        let labels = RequestLabels {
            verb: verb(request.method(), uri.query().unwrap_or_default(), named).into(),
            resource: resource.into(),
        };
        self.requests.get_or_create(&labels).inc();
        self.inner.call(request)
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
