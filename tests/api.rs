//! The API without a server: crds/ matches the Rust types, and a Flagger Canary reads and writes back with
//! every field kept.

use std::time::Duration;

use serde_json::Value;
use serin::api::crds::crds_yaml;
use serin::api::{Canary, Provider};

const CRDS_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/crds.yaml");

#[test]
fn crds_directory_matches_the_types() {
    let generated = crds_yaml(Duration::from_secs(10)).expect("rendering the CRDs");
    let committed = std::fs::read_to_string(CRDS_FILE).unwrap_or_default();
    assert!(
        generated == committed,
        "crds/crds.yaml is stale: run `make crds` and commit it"
    );
}

/// Numbers compared by value (99 and 99.0 are the same threshold), everything else exactly.
pub fn normalized(v: &Value) -> Value {
    match v {
        Value::Number(n) => serde_json::json!(n.as_f64()),
        Value::Array(items) => Value::Array(items.iter().map(normalized).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), normalized(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[test]
fn a_flagger_canary_round_trips_through_the_types() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/flagger-canary.yaml"
    ))
    .unwrap();
    let given: Value = serde_saphyr::from_str(&text).expect("fixture is YAML");
    let canary: Canary =
        serde_json::from_value(given.clone()).expect("a Flagger Canary deserializes");
    assert_eq!(canary.spec.provider, Some(Provider::GatewayApiV1));
    assert_eq!(canary.spec.target_ref.name, "podinfo");
    let analysis = canary.spec.analysis.as_ref().expect("analysis");
    assert_eq!(
        (
            analysis.step_weight,
            analysis.max_weight,
            analysis.threshold
        ),
        (Some(10), Some(50), 5)
    );
    assert_eq!(
        analysis.metrics[0]
            .threshold_range
            .as_ref()
            .and_then(|r| r.min),
        Some(99.0)
    );

    let written = serde_json::to_value(&canary).unwrap();
    assert_eq!(
        normalized(&written["spec"]),
        normalized(&given["spec"]),
        "a field was lost or changed"
    );
}

#[test]
fn providers_are_spelled_as_flagger_spells_them() {
    for (name, provider) in [
        ("gatewayapi:v1", Provider::GatewayApiV1),
        ("smi:v1alpha3", Provider::SmiV1alpha3),
        ("kubernetes", Provider::Kubernetes),
    ] {
        assert_eq!(
            serde_json::from_value::<Provider>(Value::String(name.into())).unwrap(),
            provider
        );
        assert_eq!(provider.as_str(), name);
    }
    assert!(serde_json::from_value::<Provider>(Value::String("envoy".into())).is_err());
}
