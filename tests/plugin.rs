//! `kubectl serin` end to end: kubectl finds the plugin on PATH and runs it against the local cluster while
//! Serin rolls revisions out. `status` exits 0 for a promotion (and not before it), 1 for a rollback;
//! `get` shows the Canary and its route; `pause`, `abort`, `promote` and `retry` act through the
//! annotations and wait for the controller to acknowledge them; `lint` and `convert` work offline.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use serde_json::json;
use serin::api::Phase;
use serin_e2e::podinfo::{image_of, wait_phase, wait_progressing_at};
use serin_e2e::rollout::{podinfo_canary, roll_out, send_through_route, wait_window_empty};
use serin_e2e::{SerinProcess, client, cluster, install_crds, namespace, repo_dir};

const SERIN: &str = env!("CARGO_BIN_EXE_serin");
const PLUGIN: &str = env!("CARGO_BIN_EXE_kubectl-serin");

/// `kubectl serin <args>`, kubectl finding the plugin on PATH.
async fn kubectl_serin(args: &[&str]) -> Output {
    let env = cluster().await;
    let plugin_dir = Path::new(PLUGIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        plugin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    tokio::process::Command::new(format!("{}/kubectl", env.get("SERIN_BIN")))
        .arg("serin")
        .args(args)
        .env("KUBECONFIG", env.kubeconfig())
        .env("PATH", path)
        .output()
        .await
        .expect("kubectl")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn kubectl_serin_follows_and_drives_a_canary() {
    let client = client().await;
    install_crds(&client).await;
    let ns = namespace(&client, "plugin").await;
    podinfo_canary(&client, &ns, json!({"interval": "2s", "stepWeight": 25, "maxWeight": 50, "threshold": 1,
                "metrics": [{"name": "request-success-rate", "interval": "10s", "thresholdRange": {"min": 99}}]})).await;
    let _serin = SerinProcess::start(SERIN, &ns, "a").await;
    wait_phase(&client, &ns, Phase::Initialized, Duration::from_secs(30)).await;
    send_through_route(&client, &ns, 100).await;

    // Nothing to roll out: done at once.
    let out = kubectl_serin(&["status", "podinfo", "-n", &ns, "--timeout", "30s"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // A good image: status returns only once it is promoted, even asked the moment it is applied.
    roll_out(&client, &ns, "podinfo:2.0.0", 0.0).await;
    let out = kubectl_serin(&["status", "podinfo", "-n", &ns, "--timeout", "90s"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        image_of(&client, &ns, "podinfo-primary").await.0,
        "podinfo:2.0.0",
        "{}",
        text(&out)
    );
    let progress = text(&out);
    assert!(
        progress.contains("Progressing weight 25%"),
        "one line per change: {progress}"
    );

    let out = kubectl_serin(&["get", "podinfo", "-n", &ns]).await;
    let screen = text(&out);
    eprintln!("measured: kubectl serin get after a promotion:\n{screen}");
    assert!(out.status.success(), "{screen}");
    for want in [
        "✔ Succeeded",
        "HTTPRoute podinfo: primary 100 / canary 0 (in sync)",
        "primary Deployment podinfo-primary",
        "podinfo:2.0.0",
        "request-success-rate",
    ] {
        assert!(screen.contains(want), "{want:?} in:\n{screen}");
    }
    // Nothing under analysis: the controller refuses a promotion, and the plugin says so (exit 1).
    let out = kubectl_serin(&["promote", "podinfo", "-n", &ns]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("refused"), "{}", text(&out));
    let list = text(&kubectl_serin(&["get", "-n", &ns]).await);
    assert!(
        list.contains("podinfo") && list.contains("Succeeded"),
        "{list}"
    );

    // A faulty image: status exits 1 with the reason.
    wait_window_empty(&format!(
        r#"sum(rate(http_request_duration_seconds_count{{kubernetes_namespace="{ns}", kubernetes_pod_name=~"podinfo-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"}}[10s]))"#
    ))
    .await;
    roll_out(&client, &ns, "podinfo:3.0.0", 0.5).await;
    let out = kubectl_serin(&["status", "podinfo", "-n", &ns, "--timeout", "90s"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("rolled back") && text(&out).contains("request-success-rate"),
        "{}",
        text(&out)
    );
    let out = kubectl_serin(&["retry", "podinfo", "-n", &ns]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "retry acknowledged: {}",
        text(&out)
    );
    // Analysed again, and rolled back again.
    wait_phase(&client, &ns, Phase::Progressing, Duration::from_secs(30)).await;
    wait_phase(&client, &ns, Phase::Failed, Duration::from_secs(60)).await;

    // Pause, then abort, a good revision under analysis, once the faulty one's requests have left the
    // checks' 10-s window (so the query below reads the good one's): its pods are deleted with the
    // rollback, and a rate over their vanished series is no sign the window is clear.
    tokio::time::sleep(Duration::from_secs(11)).await;
    roll_out(&client, &ns, "podinfo:4.0.0", 0.0).await;
    wait_progressing_at(&client, &ns, 25, Duration::from_secs(30)).await;
    let out = kubectl_serin(&["pause", "podinfo", "-n", &ns]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "pause acknowledged: {}",
        text(&out)
    );
    let out = kubectl_serin(&["get", "podinfo", "-n", &ns]).await;
    assert!(
        text(&out).contains("paused: serin.dev/pause"),
        "{}",
        text(&out)
    );
    // The checks, run now from here against the test world's Prometheus (with a few seconds of the
    // canary's traffic in their window).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let prometheus = cluster().await.prometheus().to_string();
    let out = kubectl_serin(&[
        "query",
        "podinfo",
        "-n",
        &ns,
        "--metrics-server",
        &prometheus,
    ])
    .await;
    let checks = text(&out);
    eprintln!("measured: kubectl serin query:\n{checks}");
    assert_eq!(out.status.code(), Some(0), "{checks}");
    assert!(
        checks.contains("request-success-rate") && checks.contains("✔ Passed"),
        "{checks}"
    );
    let out = kubectl_serin(&["abort", "podinfo", "-n", &ns]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "abort acknowledged: {}",
        text(&out)
    );
    wait_phase(&client, &ns, Phase::Failed, Duration::from_secs(30)).await;
    assert_eq!(
        image_of(&client, &ns, "podinfo-primary").await.0,
        "podinfo:2.0.0"
    );
    // Each command changes its own annotation only: the abort left the pause in place.
    let annotations = kube::Api::<serin::api::Canary>::namespaced(client.clone(), &ns)
        .get("podinfo")
        .await
        .unwrap()
        .metadata
        .annotations
        .unwrap_or_default();
    assert_eq!(
        annotations.get("serin.dev/pause").map(String::as_str),
        Some("true"),
        "{annotations:?}"
    );
    let out = kubectl_serin(&["resume", "podinfo", "-n", &ns]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "resume acknowledged: {}",
        text(&out)
    );

    // Promote a revision under analysis at once.
    roll_out(&client, &ns, "podinfo:5.0.0", 0.0).await;
    wait_phase(&client, &ns, Phase::Progressing, Duration::from_secs(30)).await;
    let out = kubectl_serin(&["promote", "podinfo", "-n", &ns]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "promote acknowledged: {}",
        text(&out)
    );
    let out = kubectl_serin(&["status", "podinfo", "-n", &ns, "--timeout", "60s"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        image_of(&client, &ns, "podinfo-primary").await.0,
        "podinfo:5.0.0"
    );

    // A timeout is 2; a usage error 64; an unknown Canary (the API server's 404) 69.
    roll_out(&client, &ns, "podinfo:6.0.0", 0.0).await;
    let out = kubectl_serin(&["status", "podinfo", "-n", &ns, "--timeout", "1s"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(kubectl_serin(&["status"]).await.status.code(), Some(64));
    assert_eq!(
        kubectl_serin(&["get", "nothing", "-n", &ns])
            .await
            .status
            .code(),
        Some(69)
    );
}

#[tokio::test]
async fn lint_and_convert_work_offline() {
    let example = repo_dir().join("examples/gatewayapi/canary.yaml");
    let out = kubectl_serin(&["lint", "-f", example.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let flagger = std::env::temp_dir().join(format!("flagger-{}.yaml", std::process::id()));
    std::fs::write(
        &flagger,
        std::fs::read_to_string(&example)
            .unwrap()
            .replace("serin.dev/v1beta1", "flagger.app/v1beta1"),
    )
    .unwrap();
    let out = kubectl_serin(&["lint", "-f", flagger.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let out = kubectl_serin(&["convert", "-f", flagger.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        std::fs::read_to_string(&example).unwrap(),
        "converting back gives the example, comments and all"
    );
    let _ = std::fs::remove_file(flagger);
}
