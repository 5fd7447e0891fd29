//! A loopback HTTP receiver standing in for Slack, Teams, Discord, Rocket.Chat, Google Chat and webhook
//! endpoints: it records every POST (path, headers, body) in order. Paths starting with /hang never
//! answer; paths starting with /fail answer 500.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::Uri;
use axum::http::{HeaderMap, StatusCode};

#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

pub struct Receiver {
    pub url: String,
    seen: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    pub async fn start() -> Self {
        let seen: Arc<Mutex<Vec<Received>>> = Arc::default();
        let app = Router::new()
            .fallback(
                |State(seen): State<Arc<Mutex<Vec<Received>>>>,
                 uri: Uri,
                 headers: HeaderMap,
                 body: Bytes| async move {
                    let path = uri.path().to_string();
                    seen.lock().unwrap().push(Received {
                        path: path.clone(),
                        headers: headers
                            .iter()
                            .map(|(k, v)| {
                                (k.to_string(), v.to_str().unwrap_or_default().to_string())
                            })
                            .collect(),
                        body: String::from_utf8_lossy(&body).into_owned(),
                    });
                    if path.starts_with("/hang") {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                    }
                    if path.starts_with("/fail") {
                        return StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    StatusCode::OK
                },
            )
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("its address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            url: format!("http://{addr}"),
            seen,
        }
    }

    /// What was POSTed to paths starting with `prefix`, in order.
    pub fn received(&self, prefix: &str) -> Vec<Received> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path.starts_with(prefix))
            .cloned()
            .collect()
    }
}
