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
    Run(RunArgs),
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
    /// Address for /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Run only while holding the Lease serin-leader, so several replicas can run.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Namespace of the leader election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    leader_election_namespace: String,
    /// This replica's name in the Lease.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Watch and act in this namespace only (default: every namespace).
    #[arg(long)]
    namespace: Option<String>,
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
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

fn provider_arg(s: &str) -> Result<Provider, String> {
    serde_json::from_value(serde_json::Value::String(s.into()))
        .map_err(|_| format!("{s:?} is not a provider Serin knows"))
}

fn duration_arg(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run(args) => {
            init_logging(args.log_format);
            let identity = args
                .identity
                .unwrap_or_else(|| format!("serin-{}", std::process::id()));
            let config = RunConfig {
                defaults: ControllerDefaults {
                    provider: args.provider,
                    min_interval: args.min_interval,
                },
                listen: args.listen,
                leader_elect: args.leader_elect,
                leader_election_namespace: args.leader_election_namespace,
                identity,
                namespace: args.namespace,
                metrics_server: args.metrics_server,
                metrics_timeout: args.metrics_timeout,
                include_label_prefix: IncludePrefixes::parse(&args.include_label_prefix),
            };
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("serin run: starting the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(serin::controller::run(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("serin run: {e:#}");
                    ExitCode::FAILURE
                }
            }
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
