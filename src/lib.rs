//! Serin: a progressive-delivery controller for Kubernetes.

pub mod api;
pub mod backtest;
pub mod controller;
pub mod decision;
pub mod loadtester;
pub mod metrics;
pub mod notify;
pub mod plugin;
pub mod routing;
pub mod statistics;
pub mod telemetry;
pub mod vocabulary;
pub mod webhooks;
pub mod workload;
pub mod writeback;

/// What unit tests against real loopback HTTP servers share.
#[cfg(test)]
pub(crate) mod testing {
    /// Serves `app` on a free loopback port; returns its base URL (`http://127.0.0.1:<port>`).
    pub async fn serve(app: axum::Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("its address");
        tokio::spawn(async move { axum::serve(listener, app).await.expect("serving") });
        format!("http://{addr}")
    }
}
