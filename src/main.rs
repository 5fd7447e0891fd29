//! Serin: a progressive-delivery controller for Kubernetes.

use std::process::ExitCode;
use std::time::Duration;

use std::net::SocketAddr;

use clap::{Parser, Subcommand};
use serin::api::Provider;
use serin::api::crds::crds_yaml;
use serin::api::duration::parse_duration;
use serin::controller::RunConfig;
use serin::decision::ControllerDefaults;
use serin::telemetry::{LogFormat, init_logging};
use serin::workload::metadata::IncludePrefixes;

/// Serin runs new revisions of a workload as canaries beside the stable primary, shifts traffic to them step
/// by step, and promotes or rolls them back on what the metrics say.
#[derive(Parser, Debug)]
#[command(name = "serin", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the controller (kubeconfig from KUBECONFIG, ~/.kube/config, or the in-cluster service account).
    Run(Box<RunArgs>),
    /// Serve Flagger's load tester API: load commands (hey, ghz) run by Serin's own client, and the gates.
    Loadtester(LoadtesterArgs),
    /// Replay a past rollout: what fixed thresholds and the sequential judge would each have decided,
    /// and when, from the Prometheus data of the time range.
    Backtest(BacktestArgs),
    /// Print the CustomResourceDefinitions (Canary, MetricTemplate, AlertProvider) as YAML.
    Crds {
        /// The smallest analysis interval the API server accepts; match the controller's --min-interval.
        #[arg(long, default_value = "10s", value_parser = duration_arg)]
        min_interval: Duration,
    },
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// The routing provider of Canaries that don't name one.
    #[arg(long, default_value = "gatewayapi", value_parser = provider_arg)]
    provider: Provider,
    /// The smallest analysis interval a Canary may use; a smaller one is reported as an invalid spec.
    #[arg(long, default_value = "10s", value_parser = duration_arg)]
    min_interval: Duration,
    /// The annotations prefix of NGINX ingresses (ingress-nginx's --annotations-prefix), provider nginx.
    #[arg(long, default_value = "nginx.ingress.kubernetes.io")]
    ingress_annotations_prefix: String,
    /// The ingressClassName of the HTTPProxies Serin writes, provider contour (none by default).
    #[arg(long)]
    ingress_class: Option<String>,
    /// Address for /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Run only while holding the Lease serin-leader, so several replicas can run.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Every replica acts, each on its own share of the Canaries (rendezvous hashing over the live
    /// replicas' Leases serin-shard-<identity>), instead of one leader: replaces --leader-elect.
    #[arg(long)]
    sharding: bool,
    /// Namespace of the leader election Lease (and of the shard Leases).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    leader_election_namespace: String,
    /// This replica's name in the Lease.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Watch and act in this namespace only (default: every namespace).
    #[arg(long)]
    namespace: Option<String>,
    /// How many Canaries are reconciled at once. A tick mostly waits on the API server and Prometheus; the
    /// bound keeps a restart over thousands of Canaries from sending them all at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..))]
    max_concurrent_reconciles: u16,
    /// The Prometheus of the built-in checks, for Canaries without spec.metricsServer (and of
    /// MetricTemplates without an address).
    #[arg(long, default_value = "http://prometheus:9090")]
    metrics_server: String,
    /// How long one metrics query may take; a slower one holds the canary, as no data does.
    #[arg(long, default_value = "5s", value_parser = duration_arg)]
    metrics_timeout: Duration,
    /// Which of a target's labels and annotations its primary carries: a comma-separated list of key
    /// prefixes, `*` for all (Flux's keys never). As Flagger, none by default.
    #[arg(long, default_value = "")]
    include_label_prefix: String,
    /// A file holding the default Slack webhook URL, for Canaries without alerts (env SLACK_URL wins). URLs
    /// are never taken on the command line, where any process could read them.
    #[arg(long)]
    slack_url_file: Option<std::path::PathBuf>,
    /// A file holding a Slack token, sent as a bearer token (env SLACK_TOKEN wins).
    #[arg(long)]
    slack_token_file: Option<std::path::PathBuf>,
    /// An HTTP proxy for the default Slack target.
    #[arg(long, env = "SLACK_PROXY_URL")]
    slack_proxy_url: Option<String>,
    /// The default Slack target's user name.
    #[arg(long, default_value = "flagger")]
    slack_user: String,
    /// The default Slack target's channel (required with a Slack URL).
    #[arg(long)]
    slack_channel: Option<String>,
    /// A file holding the default Microsoft Teams URL (env MSTEAMS_URL wins); Teams wins over Slack.
    #[arg(long)]
    msteams_url_file: Option<std::path::PathBuf>,
    /// An HTTP proxy for the default Teams target.
    #[arg(long, env = "MSTEAMS_PROXY_URL")]
    msteams_proxy_url: Option<String>,
    /// A file holding the URL every event of Canaries without event webhooks is posted to (env
    /// EVENT_WEBHOOK_URL wins).
    #[arg(long)]
    event_webhook_file: Option<std::path::PathBuf>,
    /// Adds a Cluster field with this name to every alert.
    #[arg(long)]
    cluster_name: Option<String>,
    /// Roll forward in git for Canaries without spec.writeBack too: off (the default) or on.
    #[arg(long, value_enum, default_value = "off")]
    write_back_default: OnOff,
    /// The author of roll-forward commits (a Canary's writeBack.commit.author wins).
    #[arg(long, default_value = "serin")]
    write_back_author_name: String,
    #[arg(long, default_value = "serin@noreply.invalid")]
    write_back_author_email: String,
    /// The message of roll-forward commits, with {{ placeholders }} (README "Roll forward in git"); Serin-*
    /// trailers are always added.
    #[arg(long)]
    write_back_message_template: Option<String>,
    /// Read a GitRepository's credentials only from the Canary's own namespace (Flux's flag of that name).
    #[arg(long)]
    no_cross_namespace_refs: bool,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum OnOff {
    On,
    Off,
}

/// A secret setting from the environment (which wins) or a file, trimmed; None when neither gives one.
fn secret_setting(
    env: &str,
    file: &Option<std::path::PathBuf>,
    flag: &str,
) -> Result<Option<secrecy::SecretString>, String> {
    if let Ok(v) = std::env::var(env)
        && !v.trim().is_empty()
    {
        return Ok(Some(v.trim().to_string().into()));
    }
    match file {
        None => Ok(None),
        Some(path) => std::fs::read_to_string(path)
            .map(|v| Some(v.trim().to_string().into()))
            .map_err(|e| format!("{flag} {}: {e}", path.display())),
    }
}

fn notify_defaults(args: &RunArgs) -> Result<serin::notify::Defaults, String> {
    let slack = match secret_setting("SLACK_URL", &args.slack_url_file, "--slack-url-file")? {
        None => None,
        Some(url) => Some(serin::notify::DefaultSlack {
            url,
            token: secret_setting("SLACK_TOKEN", &args.slack_token_file, "--slack-token-file")?,
            proxy: args.slack_proxy_url.clone(),
            username: args.slack_user.clone(),
            // Slack refuses a message without a channel; Flagger then goes silent after one log line.
            channel: args
                .slack_channel
                .clone()
                .filter(|c| !c.is_empty())
                .ok_or("--slack-channel is required with a Slack URL")?,
        }),
    };
    let msteams =
        secret_setting("MSTEAMS_URL", &args.msteams_url_file, "--msteams-url-file")?.map(|url| {
            serin::notify::DefaultTeams {
                url,
                proxy: args.msteams_proxy_url.clone(),
            }
        });
    Ok(serin::notify::Defaults {
        slack,
        msteams,
        event_webhook: secret_setting(
            "EVENT_WEBHOOK_URL",
            &args.event_webhook_file,
            "--event-webhook-file",
        )?,
        cluster_name: args.cluster_name.clone().filter(|c| !c.is_empty()),
    })
}

#[derive(clap::Args, Debug)]
struct LoadtesterArgs {
    /// Address to serve on (Flagger's chart: port 8080 behind a Service on port 80).
    #[arg(long, default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// The longest a command may run.
    #[arg(long, default_value = "1h", value_parser = duration_arg)]
    timeout: Duration,
    /// Refuse (403) payloads from namespaces that do not match this regular expression.
    #[arg(long, value_parser = regex_arg)]
    namespace_regexp: Option<regex::Regex>,
    /// Run commands other than hey and ghz through a shell, and the bash, helm and kubectl task types, as
    /// Flagger's load tester does. Off: such payloads are refused (400).
    #[arg(long)]
    allow_shell: bool,
    /// Keep the gates in this file, so they survive a restart (default: in memory, as Flagger's).
    #[arg(long)]
    state_file: Option<std::path::PathBuf>,
    /// Log every command's output.
    #[arg(long)]
    log_cmd_output: bool,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(clap::Args, Debug)]
struct BacktestArgs {
    /// The Canary in the cluster (kubeconfig from KUBECONFIG or ~/.kube/config); with -f, which of the
    /// file's Canaries.
    canary: Option<String>,
    /// The Canary's namespace in the cluster.
    #[arg(short, long, default_value = "default")]
    namespace: String,
    /// A YAML file with the Canary (and any MetricTemplates it uses) instead of the cluster's.
    #[arg(short = 'f', long)]
    file: Option<std::path::PathBuf>,
    /// When the new revision appeared (the NewRevision event): RFC 3339 (2026-11-24T10:00:00Z), or a
    /// duration ago (90m).
    #[arg(long, value_parser = time_arg)]
    from: f64,
    /// When to stop replaying (RFC 3339, or a duration ago; default now).
    #[arg(long, value_parser = time_arg)]
    to: Option<f64>,
    /// The Prometheus of the built-in checks, inline queries and templates without an address; it
    /// replaces the Canary's metricsServer (default: the Canary's, else http://prometheus:9090).
    #[arg(long, alias = "prometheus")]
    metrics_server: Option<String>,
    /// The routing provider of a Canary that names none.
    #[arg(long, default_value = "gatewayapi", value_parser = provider_arg)]
    provider: Provider,
    /// How long one metrics query may take.
    #[arg(long, default_value = "10s", value_parser = duration_arg)]
    metrics_timeout: Duration,
    /// table, or json (every tick of both replays).
    #[arg(short, long, value_enum, default_value = "table")]
    output: BacktestOutput,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum BacktestOutput {
    Table,
    Json,
}

fn time_arg(s: &str) -> Result<f64, String> {
    serin::backtest::parse_time(s, std::time::SystemTime::now())
}

async fn backtest(args: BacktestArgs) -> anyhow::Result<()> {
    use serin::backtest::{CanarySource, Options};
    let canary = match (args.file, args.canary) {
        (Some(path), name) => CanarySource::File { path, name },
        (None, Some(name)) => CanarySource::Cluster {
            namespace: args.namespace,
            name,
        },
        (None, None) => anyhow::bail!("name a Canary of the cluster, or give a file with -f"),
    };
    let options = Options {
        canary,
        metrics_server: args.metrics_server,
        from: args.from,
        to: match args.to {
            Some(to) => to,
            None => time_arg("0s").map_err(anyhow::Error::msg)?,
        },
        provider: args.provider,
        timeout: args.metrics_timeout,
    };
    let report = serin::backtest::backtest(options).await?;
    match args.output {
        BacktestOutput::Table => print!("{}", serin::backtest::render_table(&report)),
        BacktestOutput::Json => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    Ok(())
}

fn provider_arg(s: &str) -> Result<Provider, String> {
    serde_json::from_value(serde_json::Value::String(s.into()))
        .map_err(|_| format!("{s:?} is not a provider Serin knows"))
}

fn regex_arg(s: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(s).map_err(|e| e.to_string())
}

fn duration_arg(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}

/// Runs `work` on a multi-threaded runtime; its error, if any, is printed after `command`.
fn run_until_done(
    command: &str,
    work: impl std::future::Future<Output = anyhow::Result<()>>,
) -> ExitCode {
    let result = tokio::runtime::Runtime::new()
        .map_err(|e| anyhow::anyhow!("starting the runtime: {e}"))
        .and_then(|rt| rt.block_on(work));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{command}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run(args) => {
            init_logging(args.log_format);
            let notify = match notify_defaults(&args) {
                Ok(n) => n,
                Err(e) => {
                    eprintln!("serin run: {e}");
                    return ExitCode::FAILURE;
                }
            };
            if let Some(template) = &args.write_back_message_template
                && let Err(e) = serin::writeback::message::check(template)
            {
                eprintln!("serin run: --write-back-message-template: {e}");
                return ExitCode::FAILURE;
            }
            let identity = args
                .identity
                .unwrap_or_else(|| format!("serin-{}", std::process::id()));
            serin::routing::configure(serin::routing::RouterFlags {
                ingress_annotations_prefix: Some(args.ingress_annotations_prefix.clone()),
                ingress_class: args.ingress_class.clone().filter(|c| !c.is_empty()),
            });
            let config = RunConfig {
                defaults: ControllerDefaults {
                    provider: args.provider,
                    min_interval: args.min_interval,
                },
                listen: args.listen,
                leader_elect: args.leader_elect && !args.sharding,
                sharding: args.sharding,
                leader_election_namespace: args.leader_election_namespace,
                identity,
                namespace: args.namespace,
                metrics_server: args.metrics_server,
                metrics_timeout: args.metrics_timeout,
                max_concurrent_reconciles: args.max_concurrent_reconciles,
                include_label_prefix: IncludePrefixes::parse(&args.include_label_prefix),
                notify,
                write_back: serin::controller::writer::WriteBackDefaults {
                    default_on: args.write_back_default == OnOff::On,
                    author_name: args.write_back_author_name,
                    author_email: args.write_back_author_email,
                    message_template: args
                        .write_back_message_template
                        .unwrap_or_else(|| serin::writeback::message::DEFAULT_TEMPLATE.to_string()),
                    cross_namespace: !args.no_cross_namespace_refs,
                },
            };
            run_until_done("serin run", serin::controller::run(config))
        }
        Command::Loadtester(args) => {
            init_logging(args.log_format);
            let config = serin::loadtester::Config {
                listen: args.listen,
                timeout: args.timeout,
                namespaces: args.namespace_regexp,
                allow_shell: args.allow_shell,
                state_file: args.state_file,
                log_output: args.log_cmd_output,
            };
            run_until_done("serin loadtester", async {
                let runner = std::sync::Arc::new(serin::loadtester::load::NativeLoad::new()?);
                serin::loadtester::serve(config, runner).await
            })
        }
        Command::Backtest(args) => {
            init_logging(LogFormat::Text);
            run_until_done("serin backtest", backtest(args))
        }
        Command::Crds { min_interval } => match crds_yaml(min_interval) {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("serin crds: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
