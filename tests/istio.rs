//! Istio end to end: the `serin` binary against the local cluster with Istio's CRDs, the traffic simulator
//! splitting requests by the VirtualService Serin writes, and Prometheus judging the canary through Istio's
//! built-in queries (`istio_requests_total`, `istio_request_duration_milliseconds`).

use std::time::Duration;

use kube::Client;
use kube::api::{Api, DynamicObject};
use serde_json::{Value, json};
use serin::api::{Canary, Phase};
use serin::routing::istio::{destination_rules, virtual_services};
use serin_e2e::podinfo::{image_of, wait_phase, wait_promoted};
use serin_e2e::rollout::{
    WeightRecorder, faulty_rolled_back, hold_and_measure, resume, roll_out, wait_weight,
    wait_window_empty,
};
use serin_e2e::{
    SerinProcess, annotate, apply, client, install_crds, namespace, prometheus_value, wait_for,
};

const SERIN: &str = env!("CARGO_BIN_EXE_serin");

/// A namespace with podinfo 1.0.0 and an istio Canary with `analysis`, and Serin running for it.
async fn start(prefix: &str, service: Value, analysis: Value) -> (Client, String, SerinProcess) {
    let client = client().await;
    install_crds(&client).await;
    let ns = namespace(&client, prefix).await;
    roll_out(&client, &ns, "podinfo:1.0.0", 0.0).await;
    let mut svc = json!({"port": 9898});
    if let (Some(s), Some(extra)) = (svc.as_object_mut(), service.as_object()) {
        s.extend(extra.clone());
    }
    apply::<Canary>(&client, &ns, json!({"apiVersion": "serin.dev/v1beta1", "kind": "Canary", "metadata": {"name": "podinfo"},
        "spec": {"provider": "istio", "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": svc, "analysis": analysis}}))
    .await;
    let serin = SerinProcess::start(SERIN, &ns, "a").await;
    wait_phase(&client, &ns, Phase::Initialized, Duration::from_secs(30)).await;
    (client, ns, serin)
}

async fn virtual_service(client: &Client, ns: &str) -> Option<DynamicObject> {
    Api::<DynamicObject>::namespaced_with(client.clone(), ns, &virtual_services())
        .get_opt("podinfo")
        .await
        .ok()
        .flatten()
}

/// The canary's weight in the VirtualService's split (its last HTTP route), as the mesh would read it.
async fn canary_weight(client: &Client, ns: &str) -> Option<i64> {
    let vs = virtual_service(client, ns).await?;
    let route = vs.data["spec"]["http"].as_array()?.last()?["route"].clone();
    route
        .as_array()?
        .iter()
        .find(|d| d["destination"]["host"] == "podinfo-canary")
        .map(|d| d["weight"].as_i64().unwrap_or(0))
}

/// The simulator's annotations on the VirtualService, under a field manager of the test's own (Serin owns
/// only the fields it sets).
async fn annotate_virtual_service(client: &Client, ns: &str, annotations: Value) {
    annotate(client, ns, &virtual_services(), "podinfo", annotations).await;
}

/// A query of the canary workload's share of the requests Istio's series count over the last 5s, in
/// percent.
fn canary_share(ns: &str) -> String {
    let sel = |w: &str| {
        format!(
            r#"reporter="destination", destination_workload_namespace="{ns}", destination_workload=~"{w}""#
        )
    };
    format!(
        "sum(increase(istio_requests_total{{{}}}[5s])) / sum(increase(istio_requests_total{{{}}}[5s])) * 100",
        sel("podinfo"),
        sel("podinfo|podinfo-primary")
    )
}

#[tokio::test]
async fn a_good_image_steps_through_the_virtual_service_and_a_faulty_one_is_rolled_back() {
    let checks = json!([
        {"name": "request-success-rate", "interval": "10s", "thresholdRange": {"min": 99}},
        {"name": "request-duration", "interval": "10s", "thresholdRange": {"max": 500}}]);
    let (client, ns, serin) = start(
        "istio",
        json!({"trafficPolicy": {"tls": {"mode": "DISABLE"}}, "retries": {"attempts": 3, "perTryTimeout": "1s"}}),
        json!({"interval": "2s", "stepWeight": 25, "maxWeight": 50, "threshold": 1, "metrics": checks}),
    )
    .await;
    let vs = virtual_service(&client, &ns)
        .await
        .expect("Serin made the VirtualService");
    assert_eq!(vs.data["spec"]["hosts"], json!(["podinfo"]));
    assert_eq!(vs.data["spec"]["gateways"], json!(["mesh"]));
    assert_eq!(
        vs.data["spec"]["http"][0]["retries"],
        json!({"attempts": 3, "perTryTimeout": "1s"})
    );
    for host in ["podinfo-primary", "podinfo-canary"] {
        let rule = Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &destination_rules())
            .get(host)
            .await
            .expect("Serin made a DestinationRule per host");
        assert_eq!(
            rule.data["spec"],
            json!({"host": host, "trafficPolicy": {"tls": {"mode": "DISABLE"}}})
        );
    }
    annotate_virtual_service(&client, &ns, json!({"trafficsim.serin.dev/rps": "100"})).await;

    // Every weight the VirtualService holds, as the mesh would see it.
    let recorder = {
        let (client, ns) = (client.clone(), ns.clone());
        WeightRecorder::start(move || {
            let (client, ns) = (client.clone(), ns.clone());
            async move { canary_weight(&client, &ns).await }
        })
    };
    roll_out(&client, &ns, "podinfo:2.0.0", 0.0).await;
    // Held at 25% (pause), the split the mesh would make is measured in Istio's series.
    wait_weight("the VirtualService", 25, || canary_weight(&client, &ns)).await;
    let share = hold_and_measure(&client, &ns, &canary_share(&ns)).await;
    eprintln!("measured: istio canary share {share:.1}% at weight 25");
    assert!((share - 25.0).abs() <= 6.0, "the canary got {share:.1}%");
    // A new Serin process resumes where the VirtualService says.
    drop(serin);
    let _serin = SerinProcess::start(SERIN, &ns, "b").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(canary_weight(&client, &ns).await, Some(25));
    resume(&client, &ns).await;
    wait_promoted(&client, &ns, "podinfo:2.0.0", Duration::from_secs(60)).await;
    assert_eq!(recorder.stop().await, [0, 25, 50, 0]);

    wait_window_empty(&format!(
        r#"sum(rate(istio_requests_total{{reporter="destination", destination_workload_namespace="{ns}", destination_workload="podinfo"}}[10s]))"#
    ))
    .await;
    faulty_rolled_back(&client, &ns, "podinfo:3.0.0", "podinfo:2.0.0").await;
    assert_eq!(canary_weight(&client, &ns).await, Some(0));
}

#[tokio::test]
async fn ab_sends_the_requests_with_the_header_to_the_canary_through_the_virtual_service() {
    let analysis = json!({"interval": "2s", "iterations": 6,
        "match": [{"headers": {"x-canary": {"exact": "insider"}}}]});
    let (client, ns, _serin) = start("istio-ab", json!({}), analysis).await;
    let mix = json!([{"share": 0.25, "headers": {"x-canary": "insider"}}]).to_string();
    annotate_virtual_service(
        &client,
        &ns,
        json!({"trafficsim.serin.dev/request-mix": mix, "trafficsim.serin.dev/rps": "200"}),
    )
    .await;
    roll_out(&client, &ns, "podinfo:2.0.0", 0.0).await;
    wait_for(
        "the VirtualService to send the matching requests to the canary",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            let vs = virtual_service(&client, &ns)
                .await
                .ok_or("no VirtualService")?;
            let first = &vs.data["spec"]["http"][0];
            if first["match"][0]["headers"]["x-canary"]["exact"] == "insider" {
                Ok(())
            } else {
                Err(vs.data["spec"].to_string())
            }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let share = prometheus_value(&canary_share(&ns))
        .await
        .expect("the canary's share");
    eprintln!("measured: istio A/B canary share {share:.1}% (25% of requests match)");
    assert!(
        (share - 25.0).abs() <= 6.0,
        "the canary got {share:.1}% of requests; 25% carry the header"
    );
    wait_phase(&client, &ns, Phase::Succeeded, Duration::from_secs(60)).await;
    assert_eq!(
        image_of(&client, &ns, "podinfo-primary").await.0,
        "podinfo:2.0.0"
    );
    let vs = virtual_service(&client, &ns).await.unwrap();
    assert_eq!(
        vs.data["spec"]["http"].as_array().map(Vec::len),
        Some(1),
        "the match route is gone after promotion: {}",
        vs.data["spec"]
    );
}

/// The canary's weight, or -1 while the VirtualService mirrors to it (with the primary at 100).
async fn weight_or_mirrored(client: &Client, ns: &str) -> Option<i64> {
    let vs = virtual_service(client, ns).await?;
    let last = vs.data["spec"]["http"].as_array()?.last()?.clone();
    if last["mirror"]["host"] == "podinfo-canary" {
        return Some(-1);
    }
    canary_weight(client, ns).await
}

#[tokio::test]
async fn mirroring_copies_requests_to_the_canary_whose_errors_never_reach_users() {
    let checks =
        json!([{"name": "request-success-rate", "interval": "10s", "thresholdRange": {"min": 99}}]);
    let (client, ns, _serin) = start(
        "istio-mirror",
        json!({}),
        json!({"interval": "2s", "iterations": 3, "threshold": 1, "mirror": true, "mirrorWeight": 50,
            "metrics": checks}),
    )
    .await;
    annotate_virtual_service(&client, &ns, json!({"trafficsim.serin.dev/rps": "100"})).await;
    let recorder = {
        let (client, ns) = (client.clone(), ns.clone());
        WeightRecorder::start(move || {
            let (client, ns) = (client.clone(), ns.clone());
            async move { weight_or_mirrored(&client, &ns).await }
        })
    };
    // A revision failing half its requests: judged on the copies alone (half of the requests, Istio's
    // mirrorPercentage), and rolled back; no user request reaches it.
    let (copies_failed, users) =
        serin_e2e::rollout::mirrored_faulty_rolled_back(&client, &ns, "podinfo", || async {
            virtual_service(&client, &ns).await.is_some_and(|vs| {
                let split = &vs.data["spec"]["http"][0];
                split["mirror"]["host"] == "podinfo-canary"
                    && split["mirrorPercentage"]["value"].as_f64() == Some(50.0)
            })
        })
        .await;
    wait_weight("the mirror to be removed", 0, || {
        weight_or_mirrored(&client, &ns)
    })
    .await;
    assert_eq!(recorder.stop().await, [0, -1, 0]);
    let canary_errors = prometheus_value(&format!(
        r#"sum(istio_requests_total{{reporter="destination", destination_workload_namespace="{ns}", destination_workload="podinfo", response_code="500"}})"#
    ))
    .await
    .expect("Istio's series count the mirrored copies");
    eprintln!(
        "measured: istio mirroring: {copies_failed} failed copies at the canary's pods ({canary_errors} in Istio's series); 0 of {users} user requests failed"
    );

    // A good revision is mirrored through the iterations, then gets all traffic, then is promoted.
    wait_window_empty(&format!(
        r#"sum(rate(istio_requests_total{{reporter="destination", destination_workload_namespace="{ns}", destination_workload="podinfo"}}[10s]))"#
    ))
    .await;
    let recorder = {
        let (client, ns) = (client.clone(), ns.clone());
        WeightRecorder::start(move || {
            let (client, ns) = (client.clone(), ns.clone());
            async move { weight_or_mirrored(&client, &ns).await }
        })
    };
    roll_out(&client, &ns, "podinfo:3.0.0", 0.0).await;
    wait_promoted(&client, &ns, "podinfo:3.0.0", Duration::from_secs(60)).await;
    assert_eq!(recorder.stop().await, [0, -1, 100, 0]);
}

/// A switches counter of the simulator's clients of the VirtualService, summed; empty when no client
/// ever switched that way.
async fn client_switches(ns: &str, from: &str, to: &str) -> Vec<f64> {
    serin_e2e::prometheus_query(&format!(
        r#"sum(trafficsim_client_switches_total{{namespace="{ns}", route="podinfo", from="{from}", to="{to}"}})"#
    ))
    .await
    .expect("Prometheus answers")
}

/// Session affinity: 40 clients keeping their cookies, as browsers do. A client the split sent to the
/// canary stays on it through the analysis, so the canary's share of requests grows past its weight; once
/// the canary is promoted its cookie is expired and the clients go back to the primary.
#[tokio::test]
async fn session_affinity_keeps_the_users_who_reached_the_canary_on_it() {
    let (client, ns, _serin) = start(
        "istio-sticky",
        json!({}),
        json!({"interval": "2s", "stepWeight": 20, "maxWeight": 40, "threshold": 1,
            "sessionAffinity": {"cookieName": "canary", "maxAge": 600}}),
    )
    .await;
    annotate_virtual_service(
        &client,
        &ns,
        json!({"trafficsim.serin.dev/rps": "100", "trafficsim.serin.dev/clients": "40"}),
    )
    .await;
    roll_out(&client, &ns, "podinfo:2.0.0", 0.0).await;
    wait_weight("the VirtualService", 20, || canary_weight(&client, &ns)).await;
    let vs = virtual_service(&client, &ns).await.unwrap();
    let http = vs.data["spec"]["http"].as_array().unwrap();
    assert_eq!(http.len(), 2, "the canary's cookie route, then the split");
    let share = hold_and_measure(&client, &ns, &canary_share(&ns)).await;
    let to_canary = client_switches(&ns, "podinfo-primary", "podinfo-canary").await;
    let back = client_switches(&ns, "podinfo-canary", "podinfo-primary").await;
    eprintln!(
        "measured: session affinity at weight 20: canary share {share:.1}%, clients switched to the canary {to_canary:?}, back {back:?}"
    );
    assert!(
        to_canary.first().is_some_and(|n| *n > 0.0),
        "the split sent clients to the canary: {to_canary:?}"
    );
    assert!(back.is_empty(), "a client left the canary: {back:?}");
    assert!(
        share > 40.0,
        "clients stay on the canary: {share:.1}% at weight 20"
    );

    resume(&client, &ns).await;
    wait_promoted(&client, &ns, "podinfo:2.0.0", Duration::from_secs(60)).await;
    let vs = virtual_service(&client, &ns).await.unwrap();
    let expire = vs.data["spec"]["http"][0]["headers"]["response"]["add"]["Set-Cookie"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        expire.starts_with("canary=") && expire.ends_with("; Max-Age=0"),
        "{expire}"
    );
    wait_for(
        "the clients to go back to the primary",
        Duration::from_secs(20),
        Duration::from_millis(500),
        || async {
            match client_switches(&ns, "podinfo-canary", "podinfo-primary")
                .await
                .first()
            {
                Some(n) if *n > 0.0 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
}

/// A route field taken out of the Canary leaves the VirtualService: server-side apply drops a field only
/// when its manager applies without it, and the VirtualService held every field still wanted.
#[tokio::test]
async fn a_route_option_removed_from_the_canary_leaves_the_virtual_service() {
    let (client, ns, _serin) = start(
        "istio-removed",
        json!({"retries": {"attempts": 3, "perTryTimeout": "1s"}, "timeout": "30s"}),
        json!({"interval": "2s", "stepWeight": 25, "maxWeight": 50}),
    )
    .await;
    let vs = virtual_service(&client, &ns).await.unwrap();
    assert_eq!(vs.data["spec"]["http"][0]["timeout"], "30s");
    assert_eq!(vs.data["spec"]["http"][0]["retries"]["attempts"], 3);
    kube::Api::<Canary>::namespaced(client.clone(), &ns)
        .patch(
            "podinfo",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&json!({"spec": {"service": {"retries": null}}})),
        )
        .await
        .unwrap();
    wait_for(
        "the VirtualService without retries",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || async {
            let vs = virtual_service(&client, &ns)
                .await
                .ok_or("no VirtualService")?;
            let route = &vs.data["spec"]["http"][0];
            if route.get("retries").is_none() && route["timeout"] == "30s" {
                Ok(())
            } else {
                Err(route.to_string())
            }
        },
    )
    .await;
}
