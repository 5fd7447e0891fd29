//! `make demo-gitops`: the roll forward in git, from a push to the roll-forward commit. On the local cluster
//! with a git server and Flux (e2e/cluster/flux): podinfo 6.0.1 in a repository Flux applies, a Canary with
//! `writeBack: {}`; a developer pushes 6.0.2, which fails half its requests; Serin rolls it back, commits
//! 6.0.1 back, Flux applies that commit, and the target is left alone. Prints each step as it happens, then
//! the commit.
//!
//! Usage: serin-demo-gitops <path to the serin binary>

use std::time::{Duration, Instant};

use kube::Client;
use kube::api::Api;
use serde_json::json;
use serin::api::write_back::WriteBackPhase;
use serin::api::{Canary, CanaryStatus, Phase};
use serin_e2e::gitops::{
    FAULTY, GOOD, Repo, deployment_yaml, flux, flux_app, last_applied, request_fetch, wait_applied,
};
use serin_e2e::rollout::send_through_route;
use serin_e2e::{SerinProcess, apply, client, cluster, install_crds};

const NS: &str = "serin-gitops-demo";

async fn status(client: &Client) -> CanaryStatus {
    Api::<Canary>::namespaced(client.clone(), NS)
        .get("podinfo")
        .await
        .ok()
        .and_then(|c| c.status)
        .unwrap_or_default()
}

/// One line per change of the canary's phase, weight or write-back, until `done`.
async fn follow(
    client: &Client,
    clock: &Instant,
    done: impl Fn(&CanaryStatus) -> bool,
) -> CanaryStatus {
    let mut last = String::new();
    loop {
        let s = status(client).await;
        let wb = s.write_back.as_ref().map_or("-".to_string(), |w| {
            let commit = w
                .commit
                .as_deref()
                .map(serin::api::write_back::short)
                .unwrap_or("");
            format!("{} {commit}", w.phase)
        });
        let text = format!(
            "{:>5.1}s  phase {:<12} weight {:>3}  git {}",
            clock.elapsed().as_secs_f64(),
            s.phase.map(|p| p.as_str()).unwrap_or("-"),
            s.canary_weight,
            wb
        );
        let key = text[7..].to_string();
        if key != last {
            println!("{text}");
            last = key;
        }
        if done(&s) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::main]
async fn main() {
    let Some(serin_bin) = std::env::args().nth(1) else {
        eprintln!("usage: serin-demo-gitops <path to the serin binary>");
        std::process::exit(2);
    };
    let env = cluster().await;
    let client = client().await;
    install_crds(&client).await;
    let git = flux().await;
    println!(
        "\nThe local cluster (KUBECONFIG={}), a git server at {} and Flux's source- and kustomize-controller.",
        env.kubeconfig(),
        git.url
    );
    serin_e2e::fresh_namespace(&client, NS).await;
    let repo = Repo::create(NS).await;
    repo.write(
        "apps/podinfo/kustomization.yaml",
        "resources:\n  - deployment.yaml\n",
    );
    repo.write("apps/podinfo/deployment.yaml", &deployment_yaml(GOOD));
    let first = repo.commit_and_push("podinfo 6.0.1");
    flux_app(&client, NS, &repo, "./apps/podinfo").await;
    wait_applied(&client, NS, &first, Duration::from_secs(60)).await;
    println!(
        "\nThe repository {} holds apps/podinfo (podinfo {GOOD}); Flux applied it: {}",
        repo.url,
        last_applied(&client, NS).await
    );
    apply::<Canary>(&client, NS, json!({"apiVersion": "serin.dev/v1beta1", "kind": "Canary", "metadata": {"name": "podinfo"},
        "spec": {"provider": "gatewayapi", "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898, "gatewayRefs": [{"name": "gateway"}]},
            "analysis": {"interval": "3s", "stepWeight": 10, "maxWeight": 50, "threshold": 2,
                "metrics": [{"name": "request-success-rate", "interval": "10s", "thresholdRange": {"min": 99}}]},
            "writeBack": {}}})).await;
    let serin = SerinProcess::start(&serin_bin, NS, "demo").await;
    println!(
        "A Canary with writeBack: {{}} (the repository found from the Deployment's Flux labels); serin run (log: {}).",
        serin.log.display()
    );
    let clock = Instant::now();
    follow(&client, &clock, |s| s.phase == Some(Phase::Initialized)).await;
    send_through_route(&client, NS, 50).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    println!(
        "\nA developer pushes podinfo 6.0.2 (it fails half its requests) and Flux applies it:"
    );
    repo.write("apps/podinfo/deployment.yaml", &deployment_yaml(FAULTY));
    let faulty = repo.commit_and_push("podinfo 6.0.2");
    println!("  git push: {}", &faulty[..12]);
    request_fetch(&client, NS).await;
    let end = follow(&client, &clock, |s| {
        s.write_back
            .as_ref()
            .is_some_and(|w| !w.is_open() || w.phase == WriteBackPhase::Applied)
    })
    .await;
    let wb = end.write_back.clone().unwrap_or_default();
    println!("\nstatus.writeBack: {} — {}", wb.phase, wb.message);
    println!("\ngit log (the server's main):");
    print!(
        "{}",
        repo.bare_git(&["log", "--format=  %h %an: %s", "-3", "main"])
    );
    println!("\nThe roll-forward commit:");
    print!(
        "{}",
        repo.bare_git(&["show", "--format=%B", "--unified=1", "main"])
            .lines()
            .map(|l| format!("  {l}\n"))
            .collect::<String>()
    );
    println!(
        "\nFlux's last applied revision: {}",
        last_applied(&client, NS).await
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    let s = status(&client).await;
    println!(
        "The target is back at the promoted revision: phase {}, weight {} (no analysis started, the primary untouched).",
        s.phase.map(|p| p.as_str()).unwrap_or("-"),
        s.canary_weight
    );
    println!(
        "\nkubectl get canaries.serin.dev -n {NS} -o wide   # column GIT: {}",
        wb.phase
    );
    drop(serin);
}
