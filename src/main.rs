//! Serin: a progressive-delivery controller for Kubernetes.

use clap::Parser;

/// Serin runs new revisions of a workload as canaries beside the stable primary, shifts traffic to them step
/// by step, and promotes or rolls them back on what the metrics say.
#[derive(Parser, Debug)]
#[command(name = "serin", version, about)]
struct Cli {}

fn main() {
    Cli::parse();
}
