//! Serin's CRDs on a real API server: a Flagger Canary is accepted and kept whole, and each invalid spec is
//! refused with a message that says what is wrong.

use kube::api::{ApiResource, DynamicObject, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use serin::api::{AlertProvider, Canary};
use serin_e2e::{client, install_crds, namespace};

fn canary_resource() -> ApiResource {
    ApiResource::erase::<Canary>(&())
}

/// A valid Canary to break one field at a time.
fn base() -> Value {
    json!({
        "apiVersion": "serin.dev/v1beta1", "kind": "Canary",
        "metadata": {"name": "podinfo"},
        "spec": {
            "provider": "gatewayapi",
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898},
            "analysis": {
                "interval": "10s", "threshold": 2, "maxWeight": 50, "stepWeight": 10,
                "metrics": [{"name": "request-success-rate", "interval": "1m", "thresholdRange": {"min": 99}}]
            }
        }
    })
}

async fn dry_run_create(
    client: &Client,
    ns: &str,
    ar: &ApiResource,
    object: Value,
) -> Result<(), String> {
    let object: DynamicObject = serde_json::from_value(object).expect("test object");
    let pp = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    Api::<DynamicObject>::namespaced_with(client.clone(), ns, ar)
        .create(&pp, &object)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn a_flagger_canary_is_accepted_and_kept_whole() {
    let client = client().await;
    install_crds(&client).await;
    let ns = namespace(&client, "api-flagger").await;
    let text =
        std::fs::read_to_string(serin_e2e::repo_dir().join("tests/fixtures/flagger-canary.yaml"))
            .unwrap();
    let given: Value = serde_saphyr::from_str(&text).unwrap();
    let object: DynamicObject = serde_json::from_value(given.clone()).unwrap();
    let stored = Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &canary_resource())
        .create(&PostParams::default(), &object)
        .await
        .expect("the API server accepts a Flagger Canary");
    let stored = serde_json::to_value(&stored).unwrap();
    // The API server prunes fields its schema does not name: a field missing here would be lost silently.
    assert_eq!(normalized(&stored["spec"]), normalized(&given["spec"]));
    // And Serin's types read what was stored.
    let typed: Canary = serde_json::from_value(stored).expect("typed read of the stored Canary");
    assert_eq!(typed.spec.analysis.unwrap().webhooks.len(), 3);
}

fn normalized(v: &Value) -> Value {
    match v {
        Value::Number(n) => json!(n.as_f64()),
        Value::Array(items) => Value::Array(items.iter().map(normalized).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), normalized(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[tokio::test]
async fn invalid_canaries_are_refused_with_their_reason() {
    let client = client().await;
    install_crds(&client).await;
    let ns = namespace(&client, "api-invalid").await;
    let ar = canary_resource();
    dry_run_create(&client, &ns, &ar, base())
        .await
        .expect("the base Canary is valid");

    type Edit = fn(&mut Value);
    let cases: &[(&str, Edit, &str)] = &[
        (
            "stepWeight 0",
            |c| c["spec"]["analysis"]["stepWeight"] = json!(0),
            "stepWeight must be between 1 and 100",
        ),
        (
            "stepWeight 101",
            |c| c["spec"]["analysis"]["stepWeight"] = json!(101),
            "stepWeight must be between 1 and 100",
        ),
        (
            "maxWeight 101",
            |c| c["spec"]["analysis"]["maxWeight"] = json!(101),
            "maxWeight must be between 1 and 100",
        ),
        (
            "maxWeight below stepWeight",
            |c| c["spec"]["analysis"]["maxWeight"] = json!(5),
            "maxWeight must not be below stepWeight",
        ),
        (
            "stepWeights decreasing",
            |c| c["spec"]["analysis"]["stepWeights"] = json!([10, 5]),
            "stepWeights must be strictly increasing",
        ),
        (
            "stepWeights repeating",
            |c| c["spec"]["analysis"]["stepWeights"] = json!([10, 10, 20]),
            "stepWeights must be strictly increasing",
        ),
        (
            "stepWeights entry 0",
            |c| c["spec"]["analysis"]["stepWeights"] = json!([0, 50]),
            "every stepWeights entry must be between 1 and 100",
        ),
        (
            "thresholdRange min > max",
            |c| {
                c["spec"]["analysis"]["metrics"][0]["thresholdRange"] = json!({"min": 99, "max": 1})
            },
            "thresholdRange min must not be greater than max",
        ),
        (
            "interval not a duration",
            |c| c["spec"]["analysis"]["interval"] = json!("soon"),
            "analysis.interval must be a duration such as 30s",
        ),
        (
            "interval below the minimum",
            |c| c["spec"]["analysis"]["interval"] = json!("500ms"),
            "analysis.interval must be at least 1s",
        ),
        (
            "canaryAnalysis interval below the minimum",
            |c| c["spec"]["canaryAnalysis"] = json!({"interval": "5ms"}),
            "canaryAnalysis.interval must be at least 1s",
        ),
        (
            "metric interval not a duration",
            |c| c["spec"]["analysis"]["metrics"][0]["interval"] = json!("a while"),
            "metrics[].interval must be a duration",
        ),
        (
            "targetRef without name",
            |c| c["spec"]["targetRef"] = json!({"kind": "Deployment"}),
            "spec.targetRef.name: Required value",
        ),
        (
            "targetRef with empty name",
            |c| c["spec"]["targetRef"]["name"] = json!(""),
            "targetRef.name must name the workload",
        ),
        (
            "unknown provider",
            |c| c["spec"]["provider"] = json!("envoy"),
            "spec.provider: Unsupported value: \"envoy\"",
        ),
        (
            "service port 0",
            |c| c["spec"]["service"]["port"] = json!(0),
            "service.port must be a port number",
        ),
        (
            "threshold negative",
            |c| c["spec"]["analysis"]["threshold"] = json!(-1),
            "threshold must not be negative",
        ),
        (
            "no service",
            |c| {
                c["spec"]
                    .as_object_mut()
                    .unwrap()
                    .remove("service")
                    .map(drop)
                    .unwrap_or(())
            },
            "spec.service: Required value",
        ),
    ];
    let mut failures = Vec::new();
    for (what, edit, expected) in cases {
        let mut canary = base();
        edit(&mut canary);
        match dry_run_create(&client, &ns, &ar, canary).await {
            Ok(()) => failures.push(format!("{what}: accepted")),
            Err(message) if message.contains(expected) => {}
            Err(message) => failures.push(format!(
                "{what}: refused, but the message {message:?} does not say {expected:?}"
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn an_alert_provider_needs_somewhere_to_send() {
    let client = client().await;
    install_crds(&client).await;
    let ns = namespace(&client, "api-alerts").await;
    let ar = ApiResource::erase::<AlertProvider>(&());
    let provider = |spec: Value| json!({"apiVersion": "serin.dev/v1beta1", "kind": "AlertProvider", "metadata": {"name": "on-call"}, "spec": spec});
    dry_run_create(
        &client,
        &ns,
        &ar,
        provider(
            json!({"type": "slack", "address": "http://127.0.0.1:1/hook", "channel": "deploys"}),
        ),
    )
    .await
    .expect("a Slack provider with an address");
    dry_run_create(
        &client,
        &ns,
        &ar,
        provider(json!({"type": "msteams", "secretRef": {"name": "teams"}})),
    )
    .await
    .expect("with a secretRef");
    let e = dry_run_create(&client, &ns, &ar, provider(json!({"type": "discord"})))
        .await
        .unwrap_err();
    assert!(
        e.contains("an AlertProvider needs an address, or a secretRef"),
        "{e}"
    );
    let e = dry_run_create(
        &client,
        &ns,
        &ar,
        provider(json!({"type": "pager", "address": "x"})),
    )
    .await
    .unwrap_err();
    assert!(e.contains("spec.type: Unsupported value: \"pager\""), "{e}");
}
