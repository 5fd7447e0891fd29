//! The chart installed for real on the local cluster: a server-side dry run, `helm install --wait` into a
//! namespace that enforces Pod Security "restricted" (kwok runs the pods on paper), then Serin run with a
//! token of the chart's ServiceAccount through a promotion and a rollback (the chart's RBAC is enough),
//! `kubectl auth can-i` as that ServiceAccount (what it may not do), an upgrade that changes the CRDs and
//! the RBAC mode, and an uninstall that leaves the CRDs and the Canaries. One test: the CRDs are shared.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::rbac::v1::{ClusterRole, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use serin::api::{Canary, Phase};
use serin_e2e::helm::{chart_dir, helm, output_text, service_account_kubeconfig};
use serin_e2e::podinfo::{wait_phase, wait_promoted};
use serin_e2e::rollout::{
    faulty_rolled_back, podinfo_canary, roll_out, send_through_route, wait_window_empty,
};
use serin_e2e::{
    E2E_MIN_INTERVAL, SerinProcess, apply, apply_crds, client, cluster, install_crds, namespace,
    wait_for,
};

const SERIN: &str = env!("CARGO_BIN_EXE_serin");

/// `kubectl auth can-i <what> --as <user>`: true for "yes".
async fn can_i(user: &str, what: &[&str]) -> bool {
    let env = cluster().await;
    let out = std::process::Command::new(env.get("SERIN_BIN").to_string() + "/kubectl")
        .args(["auth", "can-i"])
        .args(what)
        .args(["--as", user])
        .env("KUBECONFIG", env.kubeconfig())
        .output()
        .expect("kubectl");
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        answer == "yes" || answer == "no",
        "can-i {what:?}: {}",
        output_text(&out)
    );
    answer == "yes"
}

async fn helm_ok(args: &[&str]) -> String {
    let env = cluster().await;
    let out = helm(args, Some(env.kubeconfig()));
    assert!(out.status.success(), "helm {args:?}: {}", output_text(&out));
    output_text(&out)
}

#[tokio::test]
async fn the_chart_installs_restricted_and_its_rbac_is_enough_to_promote_and_roll_back() {
    let client = client().await;
    install_crds(&client).await;
    let env = cluster().await;
    let release_ns = namespace(&client, "serin-system").await;
    let apps = namespace(&client, "chart-apps").await;
    Api::<Namespace>::all(client.clone())
        .patch(
            &release_ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest"}}})),
        )
        .await
        .expect("labelling the release namespace");
    // The namespace enforces: a pod without the restricted settings is refused.
    let bare: Pod = serde_json::from_value(json!({"metadata": {"name": "bare"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}}))
    .unwrap();
    let refused = Api::<Pod>::namespaced(client.clone(), &release_ns)
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &bare,
        )
        .await
        .expect_err("a pod violating restricted is refused");
    assert!(refused.to_string().contains("PodSecurity"), "{refused}");

    let chart = chart_dir();
    let chart = chart.to_str().unwrap();
    // The release is named after its namespace, unique per run, and so are the chart's cluster-scoped
    // objects (ClusterRoles) and its ServiceAccount and Deployment (the release's full name).
    let release = release_ns.clone();
    let namespaced = format!(
        "namespace={apps},minInterval={}s",
        E2E_MIN_INTERVAL.as_secs()
    );
    let started = std::time::Instant::now();
    // The CRDs exist already (every test binary applies them): --take-ownership adopts them, as a user
    // who applied crds/ by hand before the chart does.
    let install = [
        "install",
        &release,
        chart,
        "-n",
        &release_ns,
        "--set",
        &namespaced,
        "--take-ownership",
    ];
    helm_ok(&[&install[..], &["--dry-run=server"]].concat()).await;
    let notes = helm_ok(&[&install[..], &["--wait", "--timeout", "3m"]].concat()).await;
    eprintln!("measured: helm install --wait took {:?}", started.elapsed());
    assert!(notes.contains("kubectl serin get"), "{notes}");
    let installed = Api::<Deployment>::namespaced(client.clone(), &release_ns)
        .get(&release)
        .await
        .expect("the chart's Deployment");
    let status = installed.status.clone().unwrap_or_default();
    assert_eq!(
        status.available_replicas,
        Some(2),
        "both replicas admitted and available: {status:?}"
    );

    // The controller, as the chart's ServiceAccount, with the chart's arguments (its own port, this
    // cluster's Prometheus, and the identity and Lease namespace the pod gets from the downward API).
    let sa_config = std::env::temp_dir().join(format!("serin-chart-{release_ns}.kubeconfig"));
    service_account_kubeconfig(&client, &release_ns, &release, &sa_config).await;
    let chart_args: Vec<String> = installed.spec.unwrap().template.spec.unwrap().containers[0]
        .args
        .clone()
        .unwrap();
    assert_eq!(chart_args[0], "run");
    let mut args: Vec<String> = chart_args[1..]
        .iter()
        .filter(|a| !a.starts_with("--listen=") && !a.starts_with("--metrics-server="))
        .cloned()
        .collect();
    args.extend([
        format!("--metrics-server={}", env.prometheus()),
        "--identity=chart-replica".to_string(),
        format!("--leader-election-namespace={release_ns}"),
    ]);
    assert!(args.contains(&format!("--namespace={apps}")), "{args:?}");

    podinfo_canary(&client, &apps, json!({"interval": "2s", "stepWeight": 25, "maxWeight": 50, "threshold": 1,
                "metrics": [{"name": "request-success-rate", "interval": "10s", "thresholdRange": {"min": 99}}]})).await;
    let serin = SerinProcess::spawn(
        SERIN,
        &args,
        sa_config.to_str().unwrap(),
        &format!("{apps}-chart"),
    );
    wait_phase(&client, &apps, Phase::Initialized, Duration::from_secs(30)).await;
    send_through_route(&client, &apps, 100).await;
    roll_out(&client, &apps, "podinfo:2.0.0", 0.0).await;
    wait_promoted(&client, &apps, "podinfo:2.0.0", Duration::from_secs(60)).await;
    wait_window_empty(&format!(
        r#"sum(rate(http_request_duration_seconds_count{{kubernetes_namespace="{apps}", kubernetes_pod_name=~"podinfo-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"}}[10s]))"#
    ))
    .await;
    faulty_rolled_back(&client, &apps, "podinfo:3.0.0", "podinfo:2.0.0").await;
    let log = std::fs::read_to_string(&serin.log).unwrap();
    let forbidden: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("forbidden") || l.contains("403"))
        .collect();
    eprintln!(
        "measured: serin as the chart's ServiceAccount: {} log lines about refused requests",
        forbidden.len()
    );
    assert!(
        forbidden.is_empty(),
        "requests the chart's RBAC refused:\n{}",
        forbidden.join("\n")
    );
    drop(serin);

    // What the ServiceAccount may and may not do.
    let sa = format!("system:serviceaccount:{release_ns}:{release}");
    for (what, allowed) in [
        (vec!["patch", "canaries.serin.dev", "-n", &apps], true),
        (
            vec!["patch", "canaries.serin.dev/status", "-n", &apps],
            true,
        ),
        (vec!["list", "secrets", "-n", &apps], true),
        (vec!["create", "deployments.apps", "-n", &apps], true),
        (vec!["create", "events.events.k8s.io", "-n", &apps], true),
        (
            vec![
                "update",
                "leases.coordination.k8s.io/serin-leader",
                "-n",
                &release_ns,
            ],
            true,
        ),
        // No delete anywhere, no update of what server-side apply patches, no core events.
        (vec!["delete", "deployments.apps", "-n", &apps], false),
        (vec!["delete", "services", "-n", &apps], false),
        (vec!["delete", "canaries.serin.dev", "-n", &apps], false),
        (vec!["delete", "secrets", "-n", &apps], false),
        (vec!["deletecollection", "pods", "-n", &apps], false),
        (vec!["update", "canaries.serin.dev", "-n", &apps], false),
        (
            vec!["patch", "metrictemplates.serin.dev", "-n", &apps],
            false,
        ),
        (vec!["create", "events", "-n", &apps], false),
        (
            vec![
                "update",
                "leases.coordination.k8s.io/another",
                "-n",
                &release_ns,
            ],
            false,
        ),
        // Namespaced mode: nothing outside the namespace, Secrets least of all.
        (vec!["list", "secrets", "-n", "default"], false),
        (vec!["get", "secrets", "-n", &release_ns], false),
        (vec!["list", "secrets", "--all-namespaces"], false),
        (
            vec!["list", "canaries.serin.dev", "--all-namespaces"],
            false,
        ),
    ] {
        assert_eq!(can_i(&sa, &what).await, allowed, "can-i {what:?} as {sa}");
    }

    // People: the built-in edit and view roles take the chart's aggregated rules (the controller
    // manager's aggregation), so a team's ordinary edit role drives `kubectl serin`, and view reads.
    for (user, role) in [("alice", "edit"), ("bob", "view")] {
        apply::<RoleBinding>(&client, &apps, json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": user},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]}))
        .await;
    }
    wait_for(
        "edit to take the chart's rules",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || async {
            if can_i("alice", &["patch", "canaries.serin.dev", "-n", &apps]).await {
                Ok(())
            } else {
                Err("not yet".to_string())
            }
        },
    )
    .await;
    assert!(
        can_i(
            "alice",
            &["create", "metrictemplates.serin.dev", "-n", &apps]
        )
        .await
    );
    assert!(can_i("bob", &["list", "canaries.serin.dev", "-n", &apps]).await);
    assert!(!can_i("bob", &["patch", "canaries.serin.dev", "-n", &apps]).await);

    // Upgrade: cluster-wide mode and a new minimum interval, which the CRDs must take.
    let canary_crd = || async {
        Api::<CustomResourceDefinition>::all(client.clone())
            .get("canaries.serin.dev")
            .await
            .expect("the Canary CRD")
    };
    // --force-conflicts: the test binaries' own apply of the CRDs ("serin-e2e") shares their fields.
    helm_ok(&[
        "upgrade",
        &release,
        chart,
        "-n",
        &release_ns,
        "--set",
        "minInterval=2s",
        "--force-conflicts",
        "--wait",
        "--timeout",
        "3m",
    ])
    .await;
    let crd = serde_json::to_string(&canary_crd().await.spec).unwrap();
    assert!(
        crd.contains("must be at least 2s, the controller's minimum interval"),
        "the upgrade changed the CRD"
    );
    let upgraded = Api::<Deployment>::namespaced(client.clone(), &release_ns)
        .get(&release)
        .await
        .unwrap();
    let upgraded_args = upgraded.spec.unwrap().template.spec.unwrap().containers[0]
        .args
        .clone()
        .unwrap();
    assert!(
        upgraded_args.contains(&"--min-interval=2s".to_string()),
        "{upgraded_args:?}"
    );
    assert!(
        !upgraded_args.iter().any(|a| a.starts_with("--namespace")),
        "{upgraded_args:?}"
    );
    Api::<ClusterRole>::all(client.clone())
        .get(&release)
        .await
        .expect("cluster-wide mode's ClusterRole");
    assert!(can_i(&sa, &["list", "secrets", "-n", "default"]).await);
    assert!(!can_i(&sa, &["delete", "deployments.apps", "-n", "default"]).await);

    // Uninstall: the controller goes, the CRDs (helm.sh/resource-policy: keep) and the Canaries stay.
    helm_ok(&["uninstall", &release, "-n", &release_ns, "--wait"]).await;
    assert!(
        Api::<Deployment>::namespaced(client.clone(), &release_ns)
            .get_opt(&release)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        Api::<ClusterRole>::all(client.clone())
            .get_opt(&release)
            .await
            .unwrap()
            .is_none()
    );
    canary_crd().await;
    let canary = Api::<Canary>::namespaced(client.clone(), &apps)
        .get("podinfo")
        .await
        .expect("the Canary stays");
    assert_eq!(canary.status.and_then(|s| s.phase), Some(Phase::Failed));
    // The CRDs back as every other test binary installs them (the upgrade changed the interval rule).
    apply_crds(&client).await;
}
