//! A Flagger user's manifest with load-tester webhooks, run on the local cluster through the traffic
//! simulator's load-tester API: Flagger's blue/green tutorial (provider kubernetes), so no route sends the
//! canary anything and every request its checks see comes from the load the webhook asked for.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use serde_json::{Value, json};
use serin::api::{Canary, HookResult, Phase};
use serin_e2e::podinfo::{deployment, image_of, status, wait_phase};
use serin_e2e::{
    SerinProcess, apply, client, cluster, install_crds, namespace, prometheus_value, wait_for,
};

const SERIN: &str = env!("CARGO_BIN_EXE_serin");

/// Flagger's docs/gitbook/tutorials/kubernetes-blue-green.md Canary, changed only where the test world
/// needs it: the namespace, the load tester's address, a 1s interval and 3 iterations (for 30s and 10),
/// 10s metric windows (for 1m and 30s), and without the `smoke-test` bash hook, which curls a real pod. The
/// confirm-promotion gate is Flagger's manual gating (docs/gitbook/usage/webhooks.md).
const FLAGGER_BLUE_GREEN: &str = r#"
apiVersion: serin.dev/v1beta1
kind: Canary
metadata:
  name: podinfo
  namespace: NAMESPACE
spec:
  provider: kubernetes
  targetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: podinfo
  progressDeadlineSeconds: 60
  autoscalerRef:
    apiVersion: autoscaling/v2
    kind: HorizontalPodAutoscaler
    name: podinfo
  service:
    port: 9898
    portDiscovery: true
  analysis:
    interval: 1s
    threshold: 2
    iterations: 3
    metrics:
      - name: request-success-rate
        thresholdRange:
          min: 99
        interval: 10s
      - name: request-duration
        thresholdRange:
          max: 500
        interval: 10s
    webhooks:
      - name: load-test
        url: LOADTESTER/
        timeout: 5s
        metadata:
          type: cmd
          cmd: "hey -z 1m -q 10 -c 2 http://podinfo-canary.NAMESPACE:9898/"
      - name: promotion-gate
        type: confirm-promotion
        url: LOADTESTER/gate/check
"#;

#[tokio::test]
async fn flaggers_blue_green_manifest_is_promoted_on_the_load_its_webhook_asks_the_simulator_for() {
    let client = client().await;
    install_crds(&client).await;
    let lt = cluster().await.loadtester().to_string();
    let ns = namespace(&client, "flagger-lt").await;
    apply::<Deployment>(&client, &ns, deployment("podinfo:1.0.0", json!({}))).await;
    apply::<HorizontalPodAutoscaler>(
        &client,
        &ns,
        json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "podinfo"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                "minReplicas": 2, "maxReplicas": 4,
                "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 99}}}]}}),
    )
    .await;
    let manifest = FLAGGER_BLUE_GREEN
        .replace("NAMESPACE", &ns)
        .replace("LOADTESTER", &lt);
    let canary: Value = serde_saphyr::from_str(&manifest).expect("the manifest is YAML");
    apply::<Canary>(&client, &ns, canary).await;
    let _serin = SerinProcess::start(SERIN, &ns, "a").await;
    wait_phase(&client, &ns, Phase::Initialized, Duration::from_secs(30)).await;

    apply::<Deployment>(&client, &ns, deployment("podinfo:2.0.0", json!({}))).await;
    // The gate is closed: the checks pass on the load, and the revision waits for a person.
    let s = wait_phase(
        &client,
        &ns,
        Phase::WaitingPromotion,
        Duration::from_secs(60),
    )
    .await;
    let gate = s
        .webhooks
        .iter()
        .find(|w| w.name == "promotion-gate")
        .expect("the gate's last call is in status");
    assert_eq!(gate.result, HookResult::Failed);
    let load = s
        .webhooks
        .iter()
        .find(|w| w.name == "load-test")
        .expect("the load test's last call is in status");
    assert_eq!(load.result, HookResult::Passed, "{}", load.message);

    // Every request the canary's checks saw came from the load: no route leads to it.
    let canary_requests =
        format!(r#"sum(trafficsim_requests_total{{namespace="{ns}", backend="podinfo-canary"}})"#);
    let sent = prometheus_value(&canary_requests)
        .await
        .expect("the simulator counted the load's requests");
    assert!(
        sent >= 10.0,
        "the load sent {sent} requests to podinfo-canary"
    );
    assert_eq!(
        image_of(&client, &ns, "podinfo-primary").await.0,
        "podinfo:1.0.0"
    );

    let opened = reqwest::Client::new()
        .post(format!("{lt}/gate/open"))
        .json(&json!({"name": "podinfo", "namespace": ns}))
        .send()
        .await
        .expect("the load tester answers");
    assert_eq!(opened.status(), 202);
    wait_phase(&client, &ns, Phase::Succeeded, Duration::from_secs(30)).await;
    assert_eq!(
        image_of(&client, &ns, "podinfo-primary").await.0,
        "podinfo:2.0.0"
    );
    wait_for(
        "the canary scaled down after the promotion",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || async {
            match image_of(&client, &ns, "podinfo").await.1 {
                0 => Ok(()),
                n => Err(format!(
                    "{n} replicas; {:?}",
                    status(&client, &ns).await.phase
                )),
            }
        },
    )
    .await;
}
