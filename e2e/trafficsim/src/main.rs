use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::routing::get;
use clap::Parser;
use serin_trafficsim::cluster::ClusterView;
use serin_trafficsim::engine::Engine;
use serin_trafficsim::loadtester::{Loads, SimulatedLoad};
use tracing::info;

/// Simulated traffic through the cluster's routing objects, served as Prometheus metrics.
#[derive(Parser, Debug)]
#[command(name = "serin-trafficsim", version)]
struct Args {
    /// Address to serve /metrics and /healthz on.
    #[arg(long, default_value = "127.0.0.1:9901")]
    listen: SocketAddr,
    /// Requests per second per route, unless the route's trafficsim.serin.dev/rps annotation says otherwise.
    #[arg(long, default_value_t = 50.0)]
    rps: f64,
    /// Seed of the simulated outcomes: the same seed gives the same requests.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Address to serve Flagger's load-tester API on (Serin's load tester, with simulated load).
    #[arg(long)]
    loadtester_listen: Option<SocketAddr>,
    /// The most requests a second simulated over all routes together; when the routes ask for more, each
    /// gets its rate scaled down in proportion (a benchmark's thousands of routes would otherwise take the
    /// simulator's whole core).
    #[arg(long, default_value_t = 20_000.0)]
    max_rps: f64,
    /// Milliseconds between simulation steps.
    #[arg(long, default_value_t = 100)]
    tick_ms: u64,
}

type Shared = Arc<Mutex<Engine>>;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let client = kube::Client::try_default()
        .await
        .context("connecting to the cluster (KUBECONFIG)")?;
    let view = ClusterView::start(&client, args.rps);
    let engine: Shared = Arc::new(Mutex::new(
        Engine::new(args.seed).with_max_rps(args.max_rps),
    ));

    let app = Router::new()
        .route(
            "/metrics",
            get(
                |axum::extract::State(engine): axum::extract::State<Shared>| async move {
                    let text = engine
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .metrics
                        .render();
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4",
                        )],
                        text,
                    )
                },
            ),
        )
        .route("/healthz", get(|| async { "ok" }))
        .with_state(engine.clone());
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    info!(listen = %args.listen, rps = args.rps, seed = args.seed, "serving simulated traffic metrics");
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let loads = Arc::new(Loads::default());
    let loadtester = match args.loadtester_listen {
        Some(listen) => {
            let runner = Arc::new(SimulatedLoad::new(loads.clone(), engine.clone()));
            let config = serin::loadtester::Config {
                listen,
                timeout: Duration::from_secs(3600),
                namespaces: None,
                allow_shell: false,
                state_file: None,
                log_output: false,
            };
            let lt = serin::loadtester::LoadTester::new(config, runner)?;
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("listening on {listen}"))?;
            info!(%listen, "serving the load-tester API");
            Some(tokio::spawn(async move {
                axum::serve(listener, serin::loadtester::router(lt)).await
            }))
        }
        None => None,
    };

    let mut ticker = tokio::time::interval(Duration::from_millis(args.tick_ms.max(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = Instant::now();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let world = view.world(loads.routes());
                let now = Instant::now();
                engine.lock().unwrap_or_else(|p| p.into_inner()).step(&world, now - last);
                last = now;
            }
            _ = terminate.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    server.abort();
    if let Some(lt) = loadtester {
        lt.abort();
    }
    info!("stopped");
    Ok(())
}
