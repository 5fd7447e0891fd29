//! The sequential judge end to end (`compareToPrimary`): the `serin` binary against the local cluster, its
//! real Prometheus scraping the traffic simulator, at a low rate through the route. The primary's pods
//! fail 1% of requests; each test rolls out a canary that behaves otherwise, or the same.
//!
//! The route's rate is `SERIN_JUDGE_RPS` requests a second: 50 in `make test` (a few minutes), 5 in
//! `make test-judge` (the issue's rate: a +1 point regression then takes about half an hour to prove).

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use serin::api::{CanaryStatus, CheckVerdict, Phase};
use serin::statistics::Verdict;
use serin_e2e::podinfo::{annotated, canary, deployment, route_weight, wait_phase};
use serin_e2e::{SerinProcess, apply, client, event_notes, install_crds, namespace, wait_for};

const SERIN: &str = env!("CARGO_BIN_EXE_serin");

fn rps() -> f64 {
    std::env::var("SERIN_JUDGE_RPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50.0)
}

/// How long a verdict may take: `minutes` at 50 req/s, ten times as long at 5.
fn within(minutes: u64) -> Duration {
    Duration::from_secs_f64(minutes as f64 * 60.0 * (50.0 / rps()).max(1.0))
}

fn behaviour(error_rate: f64, latency_ms: u32) -> Value {
    json!({"trafficsim.serin.dev/error-rate": error_rate.to_string(),
        "trafficsim.serin.dev/latency-ms": latency_ms.to_string()})
}

/// podinfo 1.0.0 (failing 1%, 20 ms) behind a Canary with `analysis`, initialized by its own controller,
/// with the route at `rps` requests a second.
async fn initialized(prefix: &str, analysis: Value, rps: f64) -> (Client, String, SerinProcess) {
    let client = client().await;
    install_crds(&client).await;
    let ns = namespace(&client, prefix).await;
    apply::<Deployment>(
        &client,
        &ns,
        annotated(deployment("podinfo:1.0.0", json!({})), behaviour(0.01, 20)),
    )
    .await;
    apply::<serin::api::Canary>(&client, &ns, canary(json!({"analysis": analysis}))).await;
    let serin = SerinProcess::start(SERIN, &ns, "a").await;
    wait_phase(&client, &ns, Phase::Initialized, Duration::from_secs(30)).await;
    serin_e2e::annotate(
        &client,
        &ns,
        &serin_e2e::httproute_resource(),
        "podinfo",
        json!({"trafficsim.serin.dev/rps": rps.to_string()}),
    )
    .await;
    (client, ns, serin)
}

/// `initialized` with `metrics` at the test's rate; then podinfo 2.0.0 behaving as `pods` say.
async fn roll_out(prefix: &str, metrics: Value, pods: Value) -> (Client, String, SerinProcess) {
    let analysis = json!({"interval": "5s", "stepWeight": 10, "maxWeight": 50, "threshold": 2,
        "metrics": metrics});
    let (client, ns, serin) = initialized(prefix, analysis, rps()).await;
    // The primary serves for a minute first, as a primary does before a new revision: its rate before the
    // canary is what the tolerance is read against.
    tokio::time::sleep(Duration::from_secs(60)).await;
    apply::<Deployment>(
        &client,
        &ns,
        annotated(deployment("podinfo:2.0.0", json!({})), pods),
    )
    .await;
    (client, ns, serin)
}

fn evidence(s: &CanaryStatus) -> &serin::api::status::EvidenceStatus {
    s.evidence
        .first()
        .unwrap_or_else(|| panic!("no evidence in the status: {s:?}"))
}

/// A canary failing 2% against the primary's 1%: the judge proves the regression and rolls it back at
/// once, while the fixed threshold of the same metric (the kind a Flagger user sets to stay clear of
/// noise) passes every round. The tolerance is half a point: one point worse is then clearly beyond it (at
/// the default of one point it would sit on the tolerance, where either verdict is right and a promotion
/// is allowed up to falsePromotionRate).
#[tokio::test]
async fn errors_one_point_worse_are_rolled_back_where_a_fixed_threshold_passes() {
    // Clear of noise depends on the traffic: at 50 req/s a 1-m window holds hundreds of canary requests
    // and 95% is safe; at 5 req/s it holds a few dozen, where two errors in 30 read as 93% and two such
    // windows in a row rolled the canary back on the threshold (make test-judge saw it).
    let min = if rps() >= 50.0 { 95 } else { 80 };
    let metrics = json!([{"name": "request-success-rate", "interval": "1m",
        "thresholdRange": {"min": min}, "compareToPrimary": {"tolerance": 0.5}}]);
    let (client, ns, serin) = roll_out("judge-worse", metrics, behaviour(0.02, 20)).await;
    let s = wait_phase(&client, &ns, Phase::Failed, within(20)).await;
    let e = evidence(&s);
    eprintln!(
        "measured: rolled back on {} canary requests: {}",
        e.canary_requests, e.message
    );
    assert_eq!(
        s.failed_checks, 0,
        "the fixed threshold never failed: {:?}",
        s.conditions
    );
    assert_eq!(e.verdict, Verdict::Fail, "{e:?}");
    assert!(e.e_value >= e.fail_at, "{e:?}");
    let fixed = s
        .checks
        .iter()
        .find(|c| c.name == "request-success-rate")
        .expect("the fixed check's last result");
    assert_eq!(fixed.verdict, CheckVerdict::Passed, "{fixed:?}");
    regressed_event(&client, &ns, "request-success-rate").await;
    assert!(!event_notes(&client, &ns, "Evidence").await.is_empty());
    assert_eq!(route_weight(&client, &ns).await, Some(0));
    let e_value = serin
        .metric_where(
            "serin_canary_evidence",
            &[r#"metric="request-success-rate""#],
        )
        .await
        .expect("serin's /metrics");
    assert!(e_value >= 100.0, "{e_value}");
}

/// Waits for the Regressed event naming `metric` (events are written after the status).
async fn regressed_event(client: &Client, ns: &str, metric: &str) {
    wait_for(
        "a Regressed event",
        Duration::from_secs(10),
        Duration::from_millis(200),
        || async {
            let notes = event_notes(client, ns, "Regressed").await;
            if notes
                .iter()
                .any(|n| n.contains(metric) && n.contains("regression proven"))
            {
                Ok(())
            } else {
                Err(format!("{notes:?}"))
            }
        },
    )
    .await;
}

/// A canary as good as the primary is proven good and promoted.
#[tokio::test]
async fn a_canary_as_good_as_the_primary_is_proven_and_promoted() {
    let metrics = json!([{"name": "request-success-rate", "compareToPrimary": {}}]);
    let (client, ns, _serin) = roll_out("judge-good", metrics, behaviour(0.01, 20)).await;
    let s = wait_phase(&client, &ns, Phase::Succeeded, within(12)).await;
    let e = evidence(&s);
    eprintln!(
        "measured: promoted on {} canary requests: {}",
        e.canary_requests, e.message
    );
    assert_eq!(e.verdict, Verdict::Pass, "{e:?}");
}

/// Both variants' errors raised together (an incident downstream): the judge's bet is on the canary's
/// share of the bad requests, which a shared rate does not move, so the canary is not rolled back.
#[tokio::test]
async fn a_shared_incident_does_not_roll_the_canary_back() {
    let metrics = json!([{"name": "request-success-rate", "compareToPrimary": {}}]);
    let (client, ns, _serin) = roll_out("judge-incident", metrics, behaviour(0.01, 20)).await;
    serin_e2e::podinfo::wait_weight_at_least(&client, &ns, 20, within(2)).await;
    set_error_rate(&client, &ns, 0.10).await;
    tokio::time::sleep(Duration::from_secs(40)).await;
    set_error_rate(&client, &ns, 0.01).await;
    let s = wait_phase(&client, &ns, Phase::Succeeded, within(15)).await;
    let e = evidence(&s);
    eprintln!(
        "measured: promoted through a shared incident on {} canary requests: {}",
        e.canary_requests, e.message
    );
    assert_eq!(e.verdict, Verdict::Pass, "{e:?}");
    assert!(event_notes(&client, &ns, "Regressed").await.is_empty());
}

/// Every pod of both variants now fails `rate` of requests (the simulator reads each pod's annotations).
async fn set_error_rate(client: &Client, ns: &str, rate: f64) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let list = pods
        .list(&ListParams::default())
        .await
        .expect("listing the pods");
    let patch =
        json!({"metadata": {"annotations": {"trafficsim.serin.dev/error-rate": rate.to_string()}}});
    for p in list.items {
        let name = p.metadata.name.unwrap_or_default();
        pods.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap_or_else(|e| panic!("annotating pod {name}: {e}"));
    }
}

/// A canary 50% slower (30 ms against 20): caught from the histogram's buckets, where a p99 threshold of
/// 500 ms would pass it.
#[tokio::test]
async fn a_canary_half_again_as_slow_is_caught_from_the_histogram() {
    let metrics = json!([{"name": "request-duration", "compareToPrimary": {}}]);
    let (client, ns, _serin) = roll_out("judge-slow", metrics, behaviour(0.01, 30)).await;
    let s = wait_phase(&client, &ns, Phase::Failed, within(5)).await;
    let e = evidence(&s);
    eprintln!(
        "measured: rolled back on {} canary requests: {}",
        e.canary_requests, e.message
    );
    assert_eq!(e.verdict, Verdict::Fail, "{e:?}");
    assert!(e.latency.is_some(), "{e:?}");
    regressed_event(&client, &ns, "request-duration").await;
    let _ = wait_for(
        "the route back at 100/0",
        Duration::from_secs(10),
        Duration::from_millis(200),
        || async {
            match route_weight(&client, &ns).await {
                Some(0) => Ok(()),
                w => Err(format!("{w:?}")),
            }
        },
    )
    .await;
}

/// The judge's windows are one analysis interval long, a few requests each, and its bets need every
/// request counted once: the built-in counts queries of consecutive 5-s windows add up to exactly what the
/// counters say over the whole span, for the primary's series (there throughout) and the canary's (born in
/// the span), bad requests included at about one a window.
#[tokio::test]
async fn consecutive_windows_count_every_request_once() {
    use serin::metrics::builtin::Family;
    use serin::metrics::counts::{self, Variant};

    const WINDOW: f64 = 5.0;
    let analysis = json!({"interval": "1m", "stepWeight": 10, "maxWeight": 50, "threshold": 2,
        "metrics": []});
    let (client, ns, _serin) = initialized("judge-counts", analysis, 10.0).await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
            .floor()
    };
    let start = now();
    // The canary fails 20% of its requests, at 10% of 10 requests a second: about one bad request a window.
    apply::<Deployment>(
        &client,
        &ns,
        annotated(deployment("podinfo:2.0.0", json!({})), behaviour(0.2, 20)),
    )
    .await;
    wait_for(
        "the canary's first step",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || async {
            match route_weight(&client, &ns).await {
                Some(w) if w > 0 => Ok(()),
                w => Err(format!("weight {w:?}")),
            }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(70)).await;
    // Windows that ended a few seconds ago: Prometheus (scraping every second) holds all their samples.
    let windows = ((now() - 5.0 - start) / WINDOW).floor() as usize;
    let end = start + WINDOW * windows as f64;
    let value = |query: String, at: f64| async move {
        let values = serin_e2e::prometheus_query_at(&query, Some(at))
            .await
            .unwrap_or_else(|e| panic!("{query}: {e:#}"));
        assert!(values.len() <= 1, "{query} at {at}: {values:?}");
        values.first().copied().unwrap_or(0.0)
    };
    let render = |query: String, window: &str| {
        query
            .replace("{{ namespace }}", &ns)
            .replace("{{ target }}", "podinfo")
            .replace("{{ interval }}", window)
    };
    let mut wrong = Vec::new();
    for variant in [Variant::Primary, Variant::Canary] {
        for (what, query, series) in [
            (
                "requests",
                counts::requests_query(Family::Http, variant),
                counts::requests_series_selector(Family::Http, variant),
            ),
            (
                "bad requests",
                counts::bad_query(Family::Http, variant),
                counts::bad_series_selector(Family::Http, variant),
            ),
        ] {
            let mut summed = 0.0;
            for k in 1..=windows {
                let at = start + WINDOW * k as f64;
                summed += value(render(query.clone(), "5000ms"), at).await.round();
            }
            // What the counters say: their sum at the end minus their sum at the start (a series absent at
            // the start was born in the span, from zero; no pod goes away in it).
            let series = render(series, "");
            let total = format!("sum({series})");
            let counted = value(total.clone(), end).await - value(total, start).await;
            eprintln!(
                "measured: {variant:?} {what} over {windows} windows of {WINDOW} s: {summed} summed, {counted} counted"
            );
            if what == "bad requests" {
                assert!(
                    counted >= 3.0,
                    "{variant:?}: too few bad requests to tell: {counted}"
                );
            }
            if summed != counted {
                wrong.push(format!(
                    "{variant:?} {what}: {summed} summed, {counted} counted by {series}"
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// `serin backtest` over a rollout that fixed thresholds promoted: a canary failing 15% against the
/// primary's 1%, under a minimum success rate of 70% (which it meets every round: at 100 req/s the
/// canary's first 5-s round at 10% holds about 50 requests, so 85% is three standard deviations above
/// the bound; at 50 req/s and 80%, the first rounds' noise failed it twice in three runs). Replayed from the cluster
/// (JSON) and from a file (the table): the fixed thresholds promote it, as they did; the judge would have
/// rolled it back within seconds of its first traffic.
#[tokio::test]
async fn a_backtest_shows_the_judge_rolling_back_what_fixed_thresholds_promoted() {
    let analysis = json!({"interval": "5s", "stepWeight": 10, "maxWeight": 50, "threshold": 2,
        "metrics": [{"name": "request-success-rate", "interval": "1m", "thresholdRange": {"min": 70}}]});
    let (client, ns, _serin) = initialized("judge-backtest", analysis, 100.0).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let now = || k8s_openapi::jiff::Timestamp::now().as_second();
    let from = now() - 1;
    apply::<Deployment>(
        &client,
        &ns,
        annotated(deployment("podinfo:2.0.0", json!({})), behaviour(0.15, 20)),
    )
    .await;
    wait_phase(&client, &ns, Phase::Succeeded, Duration::from_secs(180)).await;
    // The replay's ticks fall where its own clock puts them, a little later than the controller's: a range
    // that ends a little after the rollout, as a user would give it.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let to = now();
    let time = |t: i64| {
        k8s_openapi::jiff::Timestamp::from_second(t)
            .unwrap()
            .to_string()
    };
    let env = serin_e2e::cluster().await;
    let backtest = |source: Vec<String>, output: &str| {
        let mut args: Vec<String> = vec!["backtest".into()];
        args.extend(source);
        args.extend(
            [
                "--from",
                &time(from),
                "--to",
                &time(to),
                "--metrics-server",
                env.prometheus(),
                "-o",
                output,
            ]
            .map(String::from),
        );
        let out = std::process::Command::new(SERIN)
            .args(&args)
            .env("KUBECONFIG", env.kubeconfig())
            .output()
            .expect("running serin backtest");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "serin {args:?}: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };

    let json: Value = serde_json::from_str(&backtest(
        vec!["-n".into(), ns.clone(), "podinfo".into()],
        "json",
    ))
    .expect("JSON");
    let replays = json["replays"].as_array().expect("replays");
    let (fixed, judged) = (&replays[0], &replays[1]);
    eprintln!(
        "measured: fixed thresholds {} at +{:.0} s (weight {}); judge {} at +{:.0} s (weight {}): {}; {} queries",
        fixed["ending"],
        fixed["at"].as_f64().unwrap() - from as f64,
        fixed["weight"],
        judged["ending"],
        judged["at"].as_f64().unwrap() - from as f64,
        judged["weight"],
        judged["message"],
        json["queries"]
    );
    assert_eq!(fixed["judge"], "fixedThresholds");
    assert_eq!(fixed["ending"], "promoted", "{fixed:#}");
    assert_eq!(
        fixed["metrics"],
        json!(["request-success-rate: at least 70"])
    );
    assert_eq!(judged["judge"], "sequentialJudge");
    assert_eq!(judged["ending"], "rolledBack", "{judged:#}");
    assert!(
        judged["message"]
            .as_str()
            .unwrap()
            .contains("regression proven"),
        "{judged:#}"
    );
    assert!(judged["at"].as_f64().unwrap() < fixed["at"].as_f64().unwrap() + 60.0);
    let ticks = judged["ticks"].as_array().unwrap();
    assert!(
        ticks.iter().any(|t| t["evidence"][0]["verdict"] == "Fail"),
        "{ticks:#?}"
    );

    // The same Canary from a file, as a table.
    let canary = Api::<serin::api::Canary>::namespaced(client.clone(), &ns)
        .get("podinfo")
        .await
        .unwrap();
    let file = std::env::temp_dir().join(format!("{ns}-canary.yaml"));
    std::fs::write(&file, serde_json::to_string(&canary).unwrap()).unwrap();
    let table = backtest(vec!["-f".into(), file.display().to_string()], "table");
    let _ = std::fs::remove_file(&file);
    eprintln!("{table}");
    let row = |judge: &str| {
        table
            .lines()
            .find(|l| l.contains(judge) && (l.contains("promoted") || l.contains("rolled back")))
            .unwrap_or_else(|| panic!("no row for {judge} in\n{table}"))
            .to_string()
    };
    assert!(row("fixed thresholds").contains("promoted"), "{table}");
    assert!(row("sequential judge").contains("rolled back"), "{table}");
}
