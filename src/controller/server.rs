//! /metrics, /healthz and /readyz.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use tracing::{error, info};

use crate::telemetry::Metrics;

pub async fn serve(listen: SocketAddr, metrics: Arc<Metrics>, ready: Arc<AtomicBool>) {
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        metrics.render(),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.load(Ordering::Relaxed);
                async move {
                    if ready {
                        (StatusCode::OK, "ok")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
                    }
                }
            }),
        );
    match tokio::net::TcpListener::bind(listen).await {
        Ok(listener) => {
            info!(%listen, "serving /metrics, /healthz, /readyz");
            if let Err(e) = axum::serve(listener, app).await {
                error!(error = %e, "metrics server stopped");
            }
        }
        Err(e) => error!(%listen, error = %e, "cannot listen for /metrics"),
    }
}
