//! `kubectl serin`: the kubectl plugin (binary `kubectl-serin`). Reads Canaries and the objects around them
//! through the user's kubeconfig, drives them through the manual-control annotations, and checks Canary
//! files offline. Rendering is in [`view`], pure; this module only talks to the API server and the terminal.

pub mod convert;
pub mod view;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;

use crate::api::canary::TargetKind;
use crate::api::{Canary, Phase, Provider};
use crate::decision::ControllerDefaults;
use crate::decision::settings::Settings;
use crate::routing::router_for;
use view::{EventLine, Related, WorkloadLine};

/// Exit codes, so CI and scripts can tell the outcomes apart (clap's own usage errors would be 2, which
/// `status` uses for a timeout).
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_TIMEOUT: u8 = 2;
pub const EXIT_USAGE: u8 = 64;
pub const EXIT_UNAVAILABLE: u8 = 69;

/// The field manager of the annotations the plugin sets. Not `kubectl-…`: Flux's kustomize-controller takes
/// over fields of managers named kubectl* (to undo `kubectl edit`) and would remove them.
pub const FIELD_MANAGER: &str = "serin-manual";

#[derive(Parser, Debug)]
#[command(
    name = "kubectl serin",
    version,
    about = "Follow and drive Serin's Canaries"
)]
pub struct Cli {
    /// The kubeconfig file (default: KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true)]
    kubeconfig: Option<std::path::PathBuf>,
    /// The kubeconfig context.
    #[arg(long, global = true)]
    context: Option<String>,
    /// The namespace (default: the context's).
    #[arg(short, long, global = true)]
    namespace: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List the Canaries, or show one: phase, weight, the route's weights, each check, the judge, the
    /// objects and recent events.
    Get {
        name: Option<String>,
        /// Every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        #[arg(short, long, value_enum, default_value = "text")]
        output: Output,
        /// Keep showing it until the rollout ends (as `watch`).
        #[arg(short, long)]
        watch: bool,
    },
    /// Show one Canary live until its rollout ends.
    Watch { name: String },
    /// Wait for the rollout to end: exit 0 when it succeeded (or there is nothing to roll out), 1 when it
    /// was rolled back, 2 at the timeout.
    Status {
        name: String,
        #[arg(long, default_value = "10m", value_parser = duration_arg)]
        timeout: Duration,
    },
    /// Promote the revision under analysis now (serin.dev/promote).
    Promote {
        name: String,
        /// Even while its checks fail.
        #[arg(long)]
        force: bool,
    },
    /// Roll the revision under analysis back now (serin.dev/abort).
    Abort { name: String },
    /// Analyse a failed revision again (serin.dev/retry).
    Retry { name: String },
    /// Hold the analysis at its weight; the checks go on (serin.dev/pause).
    Pause { name: String },
    /// Resume a paused analysis.
    Resume { name: String },
    /// Run a Canary's checks over its last intervals, from your machine, and show each value against its
    /// range (the "why is it holding" question). Uses serin backtest's replay of the checks.
    Query {
        name: String,
        /// The Prometheus to ask (e.g. through `kubectl port-forward`); default the Canary's metricsServer,
        /// else http://prometheus:9090.
        #[arg(long)]
        metrics_server: Option<String>,
        /// The controller's --provider, for a Canary that names none.
        #[arg(long, default_value = "gatewayapi", value_parser = provider_arg)]
        provider: Provider,
    },
    /// Check Canary files offline by the rules the controller applies (exit 1 on a problem).
    Lint {
        #[arg(short, long = "filename", required = true)]
        files: Vec<std::path::PathBuf>,
        /// The controller's --provider.
        #[arg(long, default_value = "gatewayapi", value_parser = provider_arg)]
        provider: Provider,
        /// The controller's --min-interval.
        #[arg(long, default_value = "10s", value_parser = duration_arg)]
        min_interval: Duration,
    },
    /// Rewrite Flagger manifests (flagger.app/v1beta1) for Serin, warning where Serin behaves differently.
    Convert {
        #[arg(short, long = "filename")]
        file: std::path::PathBuf,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq)]
enum Output {
    Text,
    Json,
    Yaml,
}

fn duration_arg(s: &str) -> Result<Duration, String> {
    crate::api::duration::parse_duration(s).map_err(|e| e.to_string())
}

fn provider_arg(s: &str) -> Result<Provider, String> {
    serde_json::from_value(json!(s)).map_err(|_| format!("{s:?} is not a provider Serin knows"))
}

/// What a command ended with.
enum Outcome {
    Done,
    Failed(String),
    Timeout(String),
}

/// The plugin's entry point.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            let _ = e.print();
            return ExitCode::from(EXIT_USAGE);
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    match runtime.block_on(run(cli)) {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::Failed(why)) => {
            eprintln!("{why}");
            ExitCode::from(EXIT_FAILED)
        }
        Ok(Outcome::Timeout(why)) => {
            eprintln!("{why}");
            ExitCode::from(EXIT_TIMEOUT)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_UNAVAILABLE)
        }
    }
}

async fn client(cli: &Cli) -> anyhow::Result<(Client, String)> {
    let options = KubeConfigOptions {
        context: cli.context.clone(),
        ..Default::default()
    };
    let config = match &cli.kubeconfig {
        Some(path) => {
            Config::from_custom_kubeconfig(Kubeconfig::read_from(path)?, &options).await?
        }
        None => Config::from_kubeconfig(&options)
            .await
            .or_else(|_| Config::incluster())?,
    };
    let namespace = cli
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    Ok((Client::try_from(config)?, namespace))
}

async fn run(cli: Cli) -> anyhow::Result<Outcome> {
    match &cli.command {
        Command::Lint {
            files,
            provider,
            min_interval,
        } => {
            let defaults = ControllerDefaults {
                provider: *provider,
                min_interval: *min_interval,
            };
            return Ok(lint(files, &defaults));
        }
        Command::Convert { file } => {
            let text = std::fs::read_to_string(file)?;
            let converted = convert::convert(&text);
            for warning in &converted.warnings {
                eprintln!("warning: {warning}");
            }
            print!("{}", converted.text);
            return Ok(Outcome::Done);
        }
        _ => {}
    }
    let (client, ns) = client(&cli).await?;
    let canaries: Api<Canary> = Api::namespaced(client.clone(), &ns);
    match &cli.command {
        Command::Get {
            name: None,
            all_namespaces,
            output,
            ..
        } => {
            let api = if *all_namespaces {
                Api::all(client.clone())
            } else {
                canaries
            };
            let list = api.list(&ListParams::default()).await?.items;
            match output {
                Output::Text => print!("{}", view::table(&list, *all_namespaces, Timestamp::now())),
                Output::Json => println!("{}", serde_json::to_string_pretty(&list)?),
                Output::Yaml => print!("{}", serde_saphyr::to_string(&list)?),
            }
            Ok(Outcome::Done)
        }
        Command::Get {
            name: Some(name),
            output,
            watch: false,
            ..
        } => {
            let canary = canaries.get(name).await?;
            match output {
                Output::Text => print!(
                    "{}",
                    view::detail(&canary, &related(&client, &canary).await, Timestamp::now())
                ),
                Output::Json => println!("{}", serde_json::to_string_pretty(&canary)?),
                Output::Yaml => print!("{}", serde_saphyr::to_string(&canary)?),
            }
            Ok(Outcome::Done)
        }
        Command::Get {
            name: Some(name),
            watch: true,
            ..
        }
        | Command::Watch { name } => follow(&client, &canaries, name, None).await,
        Command::Status { name, timeout } => follow(&client, &canaries, name, Some(*timeout)).await,
        Command::Promote { name, force } => {
            let value = format!(
                "{}{}",
                if *force { "force-" } else { "" },
                Timestamp::now().as_second()
            );
            let key = crate::controller::observe::PROMOTE_ANNOTATION;
            annotate(&canaries, name, key, &value).await?;
            answered(&client, &canaries, name, key, &value, "ManualPromotion").await
        }
        Command::Abort { name } => {
            let value = Timestamp::now().as_second().to_string();
            let key = crate::controller::observe::ABORT_ANNOTATION;
            annotate(&canaries, name, key, &value).await?;
            answered(&client, &canaries, name, key, &value, "ManualAbort").await
        }
        Command::Retry { name } => {
            // The controller acts on a retry of a Failed canary only, and says nothing otherwise.
            let phase = canaries.get(name).await?.status.and_then(|s| s.phase);
            if phase != Some(Phase::Failed) {
                return Ok(Outcome::Failed(format!(
                    "retry acts on a Failed canary; {name} is {}",
                    phase.map_or("without a status yet".to_string(), |p| format!("{p:?}"))
                )));
            }
            let value = Timestamp::now().as_second().to_string();
            annotate(
                &canaries,
                name,
                crate::controller::observe::RETRY_ANNOTATION,
                &value,
            )
            .await?;
            acknowledged(&canaries, name, |c| {
                c.status.as_ref().and_then(|s| s.last_retry.as_deref()) == Some(value.as_str())
            })
            .await
        }
        Command::Pause { name } | Command::Resume { name } => {
            let pause = matches!(cli.command, Command::Pause { .. });
            annotate(
                &canaries,
                name,
                crate::controller::observe::PAUSE_ANNOTATION,
                if pause { "true" } else { "false" },
            )
            .await?;
            acknowledged(&canaries, name, |c| manual(c, |m| m.paused == pause)).await
        }
        Command::Query {
            name,
            metrics_server,
            provider,
        } => {
            let canary = canaries.get(name).await?;
            let interval = canary
                .spec
                .active_analysis()
                .and_then(|a| a.interval.as_deref())
                .and_then(|i| crate::api::duration::parse_duration(i).ok())
                .unwrap_or(Duration::from_secs(60));
            let now = Timestamp::now().as_millisecond() as f64 / 1000.0;
            let options = crate::backtest::Options {
                canary: crate::backtest::CanarySource::Cluster {
                    namespace: ns.clone(),
                    name: name.clone(),
                },
                metrics_server: metrics_server.clone(),
                from: now - 3.0 * interval.as_secs_f64(),
                to: now,
                provider: *provider,
                timeout: Duration::from_secs(10),
            };
            let report = crate::backtest::backtest(options).await?;
            let fixed = report
                .replays
                .iter()
                .find(|r| r.judge == crate::backtest::Judge::FixedThresholds)
                .and_then(|r| r.replay.ticks.iter().rev().find(|t| !t.checks.is_empty()));
            match fixed {
                None => Ok(Outcome::Failed("no check ran in the last intervals".into())),
                Some(row) => {
                    print!("{}", view::checks_now(&row.checks, now - row.at));
                    Ok(Outcome::Done)
                }
            }
        }
        Command::Lint { .. } | Command::Convert { .. } => unreachable!("handled above"),
    }
}

fn manual(canary: &Canary, test: impl Fn(&crate::api::status::ManualStatus) -> bool) -> bool {
    let m = canary
        .status
        .as_ref()
        .and_then(|s| s.manual.clone())
        .unwrap_or_default();
    test(&m)
}

/// Sets one annotation under the plugin's field manager, with a merge patch: it changes that key alone
/// (a server-side apply of one key would remove the other keys the same manager set before, so a
/// promote would have resumed a paused canary).
async fn annotate(
    canaries: &Api<Canary>,
    name: &str,
    key: &str,
    value: &str,
) -> anyhow::Result<()> {
    let patch = json!({"metadata": {"annotations": {key: value}}});
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    canaries.patch(name, &params, &Patch::Merge(&patch)).await?;
    Ok(())
}

/// Waits for the controller's answer to `key: value`: the event that acts on it (`acted`), or its
/// ManualRefused event, both of which quote the value.
async fn answered(
    client: &Client,
    canaries: &Api<Canary>,
    name: &str,
    key: &str,
    value: &str,
    acted: &str,
) -> anyhow::Result<Outcome> {
    let quoted = format!("{key}: {value}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let canary = canaries.get(name).await?;
        let answer = events(client.clone(), &canary).await.into_iter().find(|e| {
            e.note.contains(&quoted) && (e.reason == acted || e.reason == "ManualRefused")
        });
        match answer {
            Some(e) if e.reason == acted => {
                println!("{}: {}", e.reason, e.note);
                return Ok(Outcome::Done);
            }
            Some(e) => return Ok(Outcome::Failed(format!("refused: {}", e.note))),
            None if std::time::Instant::now() > deadline => {
                return Ok(Outcome::Timeout(NOT_ACTED.into()));
            }
            None => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

const NOT_ACTED: &str = "the annotation is set, but the controller has not acted on it within 30s (is Serin running and watching this namespace?)";

/// Waits up to 30s for the status to show the controller acted (`done`).
async fn acknowledged(
    canaries: &Api<Canary>,
    name: &str,
    done: impl Fn(&Canary) -> bool,
) -> anyhow::Result<Outcome> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let canary = canaries.get(name).await?;
        if done(&canary) {
            println!("{}", view::status_line(&canary));
            return Ok(Outcome::Done);
        }
        if std::time::Instant::now() > deadline {
            return Ok(Outcome::Timeout(NOT_ACTED.into()));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The rollout is over: Succeeded (or Initialized) with the target at the promoted revision, or Failed.
fn ended(canary: &Canary, target_revision: Option<&str>) -> Option<bool> {
    let status = canary.status.as_ref()?;
    let settled = target_revision.is_none_or(|r| {
        status.last_promoted_spec.as_deref() == Some(r)
            || status.last_applied_spec.as_deref() == Some(r)
    });
    match status.phase? {
        Phase::Succeeded | Phase::Initialized if settled => Some(true),
        Phase::Failed if settled => Some(false),
        _ => None,
    }
}

/// The revision Serin computes for the target as it is now (its pod template, and the configs' checksums
/// Serin last saw), so a rollout applied a moment ago is not taken for the last one's end. None for a
/// Service target, which has no revisions. (A change of configs alone shows once Serin has seen it.)
async fn target_revision(client: &Client, canary: &Canary) -> anyhow::Result<Option<String>> {
    let kind = match canary
        .spec
        .target_ref
        .kind
        .unwrap_or(TargetKind::Deployment)
    {
        TargetKind::Service => return Ok(None),
        TargetKind::Deployment => crate::workload::WorkloadKind::Deployment,
        TargetKind::DaemonSet => crate::workload::WorkloadKind::DaemonSet,
        TargetKind::StatefulSet => crate::workload::WorkloadKind::StatefulSet,
    };
    let ns = canary.metadata.namespace.clone().unwrap_or_default();
    let name = &canary.spec.target_ref.name;
    let object = Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &kind.resource())
        .get(name)
        .await?;
    let workload = crate::workload::Workload::from_dynamic(kind, object)
        .map_err(|e| anyhow::anyhow!("target {kind} {ns}/{name}: {e}"))?;
    let configs = canary
        .status
        .as_ref()
        .and_then(|s| s.tracked_configs.clone())
        .unwrap_or_default();
    Ok(Some(crate::workload::revision::revision(
        &workload.revision_template(),
        &configs,
    )))
}

/// `watch` and `status`: redraws on a terminal (one line per change otherwise) until the rollout ends.
async fn follow(
    client: &Client,
    canaries: &Api<Canary>,
    name: &str,
    timeout: Option<Duration>,
) -> anyhow::Result<Outcome> {
    let tty = std::io::stdout().is_terminal() && timeout.is_none();
    let deadline = timeout.map(|t| std::time::Instant::now() + t);
    let mut last = String::new();
    // Once the Canary has been read, a failed request (an API server restart, a network blip) is retried
    // rather than ending a wait that CI depends on.
    let (mut seen, mut failures) = (false, 0);
    loop {
        let read = async {
            let canary = canaries.get(name).await?;
            let revision = target_revision(client, &canary).await?;
            anyhow::Ok((canary, revision))
        };
        let (canary, revision) = match read.await {
            Ok(read) => read,
            Err(e)
                if seen
                    && failures < 30
                    && deadline.is_none_or(|d| std::time::Instant::now() < d) =>
            {
                failures += 1;
                eprintln!("retrying: {e:#}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        (seen, failures) = (true, 0);
        if tty {
            let screen = view::detail(&canary, &related(client, &canary).await, Timestamp::now());
            if screen != last {
                print!("\x1b[2J\x1b[H{screen}");
                last = screen;
            }
        } else {
            let line = view::status_line(&canary);
            if line != last {
                println!("{line}");
                last = line;
            }
        }
        match ended(&canary, revision.as_deref()) {
            Some(true) => return Ok(Outcome::Done),
            Some(false) => {
                let why = canary
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
                    .and_then(|c| c.message.clone())
                    .unwrap_or_default();
                return Ok(Outcome::Failed(format!("rolled back: {why}")));
            }
            None => {}
        }
        if deadline.is_some_and(|d| std::time::Instant::now() > d) {
            return Ok(Outcome::Timeout(format!(
                "timed out: {}",
                view::status_line(&canary)
            )));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The route, workloads and events of a Canary, as far as they can be read (a missing one is left out).
async fn related(client: &Client, canary: &Canary) -> Related {
    let ns = canary.metadata.namespace.clone().unwrap_or_default();
    let mut related = Related::default();
    let provider = canary.spec.provider.unwrap_or(Provider::GatewayApi);
    if let Some(kind) = router_for(provider) {
        let router = kind.router();
        if let Some((ar, route_name)) = router.objects(canary).into_iter().next() {
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
            if let Ok(Some(route)) = api.get_opt(&route_name).await {
                related.route = Some((
                    format!("{} {route_name}", ar.kind),
                    router.traffic(canary, &route),
                ));
            }
        }
    }
    let target = &canary.spec.target_ref;
    let kind = format!("{:?}", target.kind.unwrap_or(TargetKind::Deployment));
    let workloads = [
        ("primary", format!("{}-primary", target.name)),
        ("target", target.name.clone()),
    ];
    for (role, name) in workloads {
        let ar = ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk("apps", "v1", &kind));
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
        if let Ok(Some(w)) = api.get_opt(&name).await {
            let image = w.data["spec"]["template"]["spec"]["containers"][0]["image"]
                .as_str()
                .unwrap_or("?")
                .to_string();
            let ready = ["readyReplicas", "numberReady"]
                .iter()
                .find_map(|k| w.data["status"][k].as_i64())
                .unwrap_or(0) as i32;
            let desired = ["replicas", "desiredNumberScheduled"]
                .iter()
                .find_map(|k| w.data["status"][k].as_i64().or(w.data["spec"][k].as_i64()))
                .unwrap_or(0) as i32;
            related.workloads.push(WorkloadLine {
                role,
                kind: kind.clone(),
                name,
                image,
                ready,
                desired,
            });
        }
    }
    related.events = events(client.clone(), canary).await;
    related
}

/// The Canary's events, oldest first.
async fn events(client: Client, canary: &Canary) -> Vec<EventLine> {
    let ns = canary.metadata.namespace.clone().unwrap_or_default();
    let name = canary.metadata.name.clone().unwrap_or_default();
    let api: Api<Event> = Api::namespaced(client, &ns);
    let selector = format!("regarding.kind=Canary,regarding.name={name}");
    let mut lines: Vec<EventLine> = api
        .list(&ListParams::default().fields(&selector))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| {
            let at = e
                .series
                .as_ref()
                .map(|s| s.last_observed_time.0)
                .or(e.event_time.as_ref().map(|t| t.0))
                .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0))?;
            Some(EventLine {
                at,
                reason: e.reason.unwrap_or_default(),
                note: e.note.unwrap_or_default(),
                count: e.series.map_or(1, |s| s.count),
            })
        })
        .collect();
    lines.sort_by_key(|e| e.at);
    lines
}

/// `lint`: each Canary of each file through serde (the CRD's types) and the controller's own checks.
fn lint(files: &[std::path::PathBuf], defaults: &ControllerDefaults) -> Outcome {
    let mut problems = Vec::new();
    let mut checked = 0;
    for file in files {
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) => return Outcome::Failed(format!("{}: {e}", file.display())),
        };
        for found in lint_text(&text, defaults) {
            match found {
                Ok(name) => {
                    checked += 1;
                    println!("{}: Canary {name}: ok", file.display());
                }
                Err(problem) => problems.push(format!("{}: {problem}", file.display())),
            }
        }
    }
    if problems.is_empty() {
        if checked == 0 {
            return Outcome::Failed("no Canary in the files".into());
        }
        Outcome::Done
    } else {
        Outcome::Failed(problems.join("\n"))
    }
}

/// The Canaries of a YAML stream: Ok(name) for a sound one, Err(what is wrong, naming the field).
pub fn lint_text(text: &str, defaults: &ControllerDefaults) -> Vec<Result<String, String>> {
    let documents: Vec<serde_json::Value> = match serde_saphyr::from_multiple(text) {
        Ok(d) => d,
        Err(e) => return vec![Err(format!("not YAML: {e}"))],
    };
    documents
        .into_iter()
        .filter(|d| d["kind"] == "Canary")
        .map(|doc| {
            let name = doc["metadata"]["name"].as_str().unwrap_or("(no name)").to_string();
            let api_version = doc["apiVersion"].as_str().unwrap_or_default();
            if api_version != "serin.dev/v1beta1" {
                return Err(format!("Canary {name}: apiVersion {api_version:?} is not serin.dev/v1beta1 (`kubectl serin convert` rewrites Flagger's)"));
            }
            let canary: Canary = serde_json::from_value(doc).map_err(|e| format!("Canary {name}: {e}"))?;
            Settings::resolve(&canary.spec, defaults).map_err(|problems| {
                let list: Vec<String> = problems.iter().map(|p| format!("{}: {}", p.path, p.message)).collect();
                format!("Canary {name}: {}", list.join("; "))
            })?;
            Ok(name)
        })
        .collect()
}

#[cfg(test)]
mod tests;
