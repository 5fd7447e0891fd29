//! Serin: a progressive-delivery controller for Kubernetes.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serin::api::crds::crds_yaml;
use serin::api::duration::parse_duration;

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
    /// Print the CustomResourceDefinitions (Canary, MetricTemplate, AlertProvider) as YAML.
    Crds {
        /// The smallest analysis interval the API server accepts; match the controller's --min-interval.
        #[arg(long, default_value = "10s", value_parser = duration_arg)]
        min_interval: Duration,
    },
}

fn duration_arg(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    match Cli::parse().command {
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
