//! `serin loadtester`: Flagger's load tester API, served by Serin. Flagger manifests that point their
//! webhooks at flagger-loadtester work unchanged: `POST /` with a `cmd` starts a load in the background
//! (202 at once, one run per canary and command at a time), and the gates (`/gate/...`, `/rollback/...`)
//! answer as Flagger's do. `hey` and `ghz` command lines are parsed and run by Serin's own clients (HTTP,
//! and gRPC over plaintext HTTP/2); nothing goes through a shell unless `--allow-shell` says so.

pub mod command;
pub mod gates;
pub mod grpc;
pub mod load;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::future::BoxFuture;
use serde::Deserialize;
use tracing::{info, warn};

use command::{CommandError, parse};
use gates::Gates;
use load::LoadRunner;

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// The longest a command may run.
    pub timeout: Duration,
    /// Payloads from namespaces that don't match are refused (403).
    pub namespaces: Option<regex::Regex>,
    /// Run commands other than hey and ghz through a shell (Flagger's cmd, bash, helm, kubectl tasks).
    pub allow_shell: bool,
    /// Where the gates are kept across restarts; None: in memory only, as Flagger's.
    pub state_file: Option<PathBuf>,
    /// Log each command's output, as metadata logCmdOutput asks per webhook.
    pub log_output: bool,
}

/// The webhook payload, as Flagger sends it.
#[derive(Debug, Deserialize)]
struct Payload {
    name: String,
    namespace: String,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

pub struct LoadTester {
    gates: Gates,
    runner: Arc<dyn LoadRunner>,
    /// The loads running, by `<name>.<namespace>` and command.
    running: Mutex<BTreeSet<(String, String)>>,
    config: Config,
}

impl LoadTester {
    pub fn new(config: Config, runner: Arc<dyn LoadRunner>) -> std::io::Result<Arc<Self>> {
        Ok(Arc::new(LoadTester {
            gates: Gates::new(config.state_file.clone())?,
            runner,
            running: Mutex::new(BTreeSet::new()),
            config,
        }))
    }

    /// Whether a load for this canary and command is running.
    pub fn is_running(&self, canary: &str, cmd: &str) -> bool {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&(canary.to_string(), cmd.to_string()))
    }
}

/// The load tester's routes, on any runner.
pub fn router(lt: Arc<LoadTester>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "OK" }))
        .route("/gate/approve", post(|| async { (StatusCode::OK, "OK") }))
        .route(
            "/gate/halt",
            post(|| async { (StatusCode::FORBIDDEN, "Forbidden") }),
        )
        .route("/gate/check", post(|s, b| gate(s, b, "", Gate::Check)))
        .route("/gate/open", post(|s, b| gate(s, b, "", Gate::Open)))
        .route("/gate/close", post(|s, b| gate(s, b, "", Gate::Close)))
        .route(
            "/rollback/check",
            post(|s, b| gate(s, b, "rollback.", Gate::Check)),
        )
        .route(
            "/rollback/open",
            post(|s, b| gate(s, b, "rollback.", Gate::Open)),
        )
        .route(
            "/rollback/close",
            post(|s, b| gate(s, b, "rollback.", Gate::Close)),
        )
        .route("/", post(task))
        .with_state(lt)
}

pub async fn serve(config: Config, runner: Arc<dyn LoadRunner>) -> anyhow::Result<()> {
    let listen = config.listen;
    let lt = LoadTester::new(config, runner)?;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    info!(%listen, "load tester listening");
    axum::serve(listener, router(lt)).await?;
    Ok(())
}

enum Gate {
    Check,
    Open,
    Close,
}

/// The payload, or the answer that refuses it.
fn payload(lt: &LoadTester, body: &[u8]) -> Result<Payload, (StatusCode, String)> {
    let p: Payload = serde_json::from_slice(body)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("bad payload: {e}")))?;
    if let Some(re) = &lt.config.namespaces
        && !re.is_match(&p.namespace)
    {
        return Err((StatusCode::FORBIDDEN, "Forbidden".into()));
    }
    Ok(p)
}

async fn gate(
    State(lt): State<Arc<LoadTester>>,
    body: Bytes,
    prefix: &'static str,
    action: Gate,
) -> Response {
    let p = match payload(&lt, &body) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let key = format!("{prefix}{}.{}", p.name, p.namespace);
    let set = |open: bool| match lt.gates.set(&key, open) {
        Ok(()) => {
            info!(gate = %key, open, "gate set");
            StatusCode::ACCEPTED.into_response()
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("keeping the gate: {e}"),
        )
            .into_response(),
    };
    match action {
        Gate::Check if lt.gates.is_open(&key) => (StatusCode::OK, "Approved").into_response(),
        Gate::Check => (StatusCode::FORBIDDEN, "Forbidden").into_response(),
        Gate::Open => set(true),
        Gate::Close => set(false),
    }
}

async fn task(State(lt): State<Arc<LoadTester>>, body: Bytes) -> Response {
    let p = match payload(&lt, &body) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    if p.metadata.is_empty() {
        return (StatusCode::BAD_REQUEST, "metadata not found in payload").into_response();
    }
    let canary = format!("{}.{}", p.name, p.namespace);
    let kind = p.metadata.get("type").map_or("cmd", String::as_str);
    let Some(cmd) = p.metadata.get("cmd").cloned() else {
        return (StatusCode::BAD_REQUEST, "cmd not found in metadata").into_response();
    };
    let flag = |key: &str| {
        p.metadata
            .get(key)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    };
    let log_output = lt.config.log_output || flag("logCmdOutput");
    match kind {
        "cmd" => match parse(&cmd) {
            Ok(spec) => {
                let run = lt.runner.run(spec);
                start(
                    &lt,
                    canary,
                    cmd,
                    Box::pin(async move {
                        run.await.map(|r| {
                            format!(
                                "{} requests: {} ok, {} failed, {} without an answer",
                                r.requests, r.ok, r.failed, r.errors
                            )
                        })
                    }),
                );
                StatusCode::ACCEPTED.into_response()
            }
            Err(CommandError::NotLoad(_) | CommandError::NeedsProgram { .. })
                if lt.config.allow_shell =>
            {
                let (command, timeout) = (cmd.clone(), lt.config.timeout);
                start(
                    &lt,
                    canary,
                    cmd,
                    Box::pin(
                        async move { shell("sh", &["-c", &command], timeout, log_output).await },
                    ),
                );
                StatusCode::ACCEPTED.into_response()
            }
            Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        },
        "bash" | "helm" | "helmv3" | "kubectl" if lt.config.allow_shell => {
            // Blocking, as Flagger's: the answer says whether the command succeeded.
            let out = match kind {
                "bash" => shell("bash", &["-c", &cmd], lt.config.timeout, true).await,
                _ => {
                    let program = if kind == "kubectl" { "kubectl" } else { "helm" };
                    let args: Vec<&str> = cmd.split_whitespace().collect();
                    shell(program, &args, lt.config.timeout, true).await
                }
            };
            match out {
                Ok(output) if flag("returnCmdOutput") => (StatusCode::OK, output).into_response(),
                Ok(_) => StatusCode::OK.into_response(),
                Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
            }
        }
        "bash" | "helm" | "helmv3" | "kubectl" => (
            StatusCode::BAD_REQUEST,
            format!(
                "task type {kind} runs a shell command: start the load tester with --allow-shell"
            ),
        )
            .into_response(),
        other => (
            StatusCode::BAD_REQUEST,
            format!("unknown task type {other}"),
        )
            .into_response(),
    }
}

/// Starts `work` in the background unless the same canary's same command is running already.
fn start(
    lt: &Arc<LoadTester>,
    canary: String,
    cmd: String,
    work: BoxFuture<'static, Result<String, String>>,
) {
    let key = (canary.clone(), cmd.clone());
    if !lt
        .running
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key.clone())
    {
        info!(%canary, %cmd, "already running");
        return;
    }
    info!(%canary, %cmd, "starting");
    let lt = lt.clone();
    tokio::spawn(async move {
        let timeout = lt.config.timeout;
        match tokio::time::timeout(timeout, work).await {
            Ok(Ok(report)) => info!(%canary, %cmd, %report, "finished"),
            Ok(Err(e)) => warn!(%canary, %cmd, error = %e, "failed"),
            Err(_) => warn!(%canary, %cmd, ?timeout, "stopped at the timeout"),
        }
        lt.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
    });
}

/// Runs a program (no shell unless it is one), bounded by `timeout`; Ok with its output, or Err with why.
async fn shell(
    program: &str,
    args: &[&str],
    timeout: Duration,
    log_output: bool,
) -> Result<String, String> {
    let run = tokio::process::Command::new(program)
        .args(args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| format!("{program}: no end within {timeout:?}"))?
        .map_err(|e| format!("{program}: {e}"))?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    if log_output {
        info!(%program, output = %text, "command output");
    }
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("{program} failed ({}): {text}", out.status))
    }
}

#[cfg(test)]
mod tests;
