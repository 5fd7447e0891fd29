//! The Grafana dashboard shipped with the chart (charts/serin/files/dashboard.json). Grafana can't run
//! here, so: its structure (current panel types only, one data source variable, unique ids, no overlapping
//! panels, every variable defined), then every panel's every query run against the test world's real
//! Prometheus, which scrapes a `serin run` with a canary in flight: each must parse, and each that a
//! running canary feeds must return series.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use serde_json::{Value, json};
use serin::api::Phase;
use serin_e2e::podinfo::{wait_phase, wait_progressing_at};
use serin_e2e::rollout::{podinfo_canary, roll_out, send_through_route};
use serin_e2e::{SerinProcess, client, install_crds, namespace, prometheus_query, repo_dir};

const SERIN: &str = env!("CARGO_BIN_EXE_serin");

fn dashboard() -> Value {
    let path = repo_dir().join("charts/serin/files/dashboard.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).expect("the dashboard is JSON")
}

fn panels(d: &Value) -> Vec<&Value> {
    d["panels"].as_array().expect("panels").iter().collect()
}

/// Every query of the dashboard: (panel title, expression).
fn queries(d: &Value) -> Vec<(String, String)> {
    panels(d)
        .into_iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or_default().to_string();
            p["targets"].as_array().into_iter().flatten().map(move |t| {
                (
                    title.clone(),
                    t["expr"]
                        .as_str()
                        .expect("each target has an expr")
                        .to_string(),
                )
            })
        })
        .collect()
}

#[test]
fn the_dashboard_is_well_formed() {
    let d = dashboard();
    assert!(
        d["schemaVersion"].as_i64().unwrap() >= 36,
        "a recent schema"
    );
    let allowed = [
        "row",
        "timeseries",
        "stat",
        "state-timeline",
        "table",
        "bargauge",
        "text",
    ];
    let mut ids = HashSet::new();
    let mut cells = HashSet::new();
    for p in panels(&d) {
        let kind = p["type"].as_str().unwrap();
        assert!(
            allowed.contains(&kind),
            "panel type {kind}: only current ones (no Angular graph/singlestat)"
        );
        assert!(
            ids.insert(p["id"].as_i64().unwrap()),
            "duplicate id {}",
            p["id"]
        );
        let g = &p["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_i64().unwrap(),
            g["y"].as_i64().unwrap(),
            g["w"].as_i64().unwrap(),
            g["h"].as_i64().unwrap(),
        );
        assert!(x + w <= 24, "{} is wider than the grid", p["title"]);
        for cx in x..x + w {
            for cy in y..y + h {
                assert!(
                    cells.insert((cx, cy)),
                    "{} overlaps another panel at ({cx}, {cy})",
                    p["title"]
                );
            }
        }
        if kind != "row" {
            assert_eq!(
                p["datasource"]["uid"], "${datasource}",
                "{} uses the data source variable",
                p["title"]
            );
            for t in p["targets"].as_array().expect("targets") {
                assert_eq!(t["datasource"]["uid"], "${datasource}", "{}", p["title"]);
            }
        }
    }
    let defined: BTreeSet<String> = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        defined,
        BTreeSet::from(["canary".into(), "datasource".into(), "namespace".into()])
    );
    let builtin = ["__rate_interval", "__interval", "__range"];
    let text = d.to_string();
    let used = regex::Regex::new(r"\$\{?([A-Za-z_]+)").unwrap();
    for var in used.captures_iter(&text).map(|c| c[1].to_string()) {
        assert!(
            defined.contains(&var) || builtin.contains(&var.as_str()),
            "${var} is not defined"
        );
    }
    // Nothing hard-coded that differs between installs.
    assert!(
        !text.contains("job=\""),
        "no job label: scrape configs name it differently"
    );
}

/// The variables as Grafana would fill them for one canary.
fn substituted(expr: &str, ns: &str) -> String {
    expr.replace("$namespace", ns)
        .replace("$canary", "podinfo")
        .replace("$__rate_interval", "10s")
        .replace("$__interval", "5s")
        .replace("$__range", "1h")
}

#[tokio::test]
async fn every_panel_query_returns_series_with_a_canary_in_flight() {
    let client = client().await;
    install_crds(&client).await;
    let ns = namespace(&client, "dashboard").await;
    podinfo_canary(&client, &ns, json!({"interval": "2s", "stepWeight": 10, "maxWeight": 50, "threshold": 3,
                "metrics": [{"name": "request-success-rate", "interval": "10s", "thresholdRange": {"min": 90}, "compareToPrimary": {}},
                            {"name": "request-duration", "interval": "10s", "thresholdRange": {"max": 500}}]})).await;
    let mut serin = SerinProcess::start(SERIN, &ns, "a").await;
    serin.scraped().await;
    wait_phase(&client, &ns, Phase::Initialized, Duration::from_secs(30)).await;
    send_through_route(&client, &ns, 100).await;
    roll_out(&client, &ns, "podinfo:2.0.0", 0.0).await;
    // In flight, and long enough for the rates and the checks' series.
    wait_progressing_at(&client, &ns, 30, Duration::from_secs(60)).await;
    serin_e2e::podinfo::annotate_canary(&client, &ns, "serin.dev/pause", Some("true")).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let d = dashboard();
    // Fed only when those features are used (no webhook nor alert in this canary): they must parse.
    let optional = ["serin_webhook_calls_total", "serin_notifications_total"];
    let mut fed = 0;
    for (title, expr) in queries(&d) {
        let expr = substituted(&expr, &ns);
        let result = prometheus_query(&expr).await;
        let series = result.unwrap_or_else(|e| panic!("{title}: {expr}: {e}"));
        if optional.iter().any(|o| expr.contains(o)) {
            continue;
        }
        assert!(!series.is_empty(), "{title}: no series for {expr}");
        fed += 1;
    }
    let variables = [
        "label_values(serin_canary_status, namespace)",
        "label_values(serin_canary_status{namespace=\"$namespace\"}, name)",
    ];
    for v in d["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"]["query"].as_str() {
            assert!(variables.contains(&q), "{q}");
        }
    }
    let names = prometheus_query(&format!(
        "count by (name) (serin_canary_status{{namespace=\"{ns}\"}})"
    ))
    .await
    .unwrap();
    assert_eq!(names.len(), 1, "the canary variable has a value to offer");
    eprintln!(
        "measured: dashboard: {fed} of {} queries returned series with a canary in flight",
        queries(&d).len()
    );
}
