//! Replaying past ticks (`serin backtest`): the checks ask instant queries at each tick's time, as the
//! controller does; when a query comes back at a later tick of the replay's grid, it is sent once more as a
//! range query over the rest of the grid, and its later ticks are answered from that. Prometheus evaluates
//! a range query as the instant query at each step, so the answers are the same, for two requests a query
//! instead of one a tick. A query asked once (the primary's minutes before the canary), or off the grid,
//! stays an instant query; a range query that fails leaves its query to instant queries.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::prometheus::{Auth, Endpoint, Prometheus};

/// The replay's ticks: `start`, then every `step` seconds up to `end`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Grid {
    pub start: f64,
    pub end: f64,
    pub step: f64,
}

impl Grid {
    /// The grid's index of `at`, when it is on the grid.
    fn index(&self, at: f64) -> Option<i64> {
        if self.step <= 0.0 || at < self.start - 1e-3 || at > self.end + 1e-3 {
            return None;
        }
        let k = ((at - self.start) / self.step).round();
        ((self.start + k * self.step - at).abs() < 1e-3).then_some(k as i64)
    }
}

/// A query's instant answers by grid index, each an instant query's body.
type Answers = BTreeMap<i64, String>;

enum Seen {
    /// Asked once, at this grid index.
    Once(i64),
    Fetched(Arc<Answers>),
    /// The range query failed: instant queries only.
    Refused,
}

/// What identifies a query's answers: the address, who asks (headers and credentials: one tenant of a
/// multi-tenant Prometheus never answers another's), and the query.
type Key = (String, String, String);

pub struct RangeCache {
    /// The grid, its start moved to the first time asked (the replay's first check, which may fall after
    /// `start`: its ticks are `interval` apart from there).
    grid: Mutex<(Grid, bool)>,
    seen: Mutex<HashMap<Key, Seen>>,
}

impl RangeCache {
    pub fn new(grid: Grid) -> Self {
        RangeCache {
            grid: Mutex::new((grid, false)),
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// The grid, anchored at the first time asked.
    fn grid(&self, at: f64) -> Grid {
        let mut grid = self.grid.lock().unwrap_or_else(|p| p.into_inner());
        if !grid.1 && at >= grid.0.start {
            grid.0.start = at;
            grid.1 = true;
        }
        grid.0
    }

    /// The answer to `query` at `at` as (address, HTTP status, body), when a range query gives it; None:
    /// send the instant query.
    pub(super) async fn answer(
        &self,
        prometheus: &Prometheus,
        endpoint: &Endpoint,
        query: &str,
        at: f64,
    ) -> Option<(String, u16, String)> {
        // `@ start()` and `@ end()` mean the range's ends in a range query, the query's time in an instant
        // one: such queries are always sent as asked.
        if query.contains('@') {
            return None;
        }
        let grid = self.grid(at);
        let k = grid.index(at)?;
        let address = endpoint.address.trim_end_matches('/').to_string();
        let key = (address.clone(), identity(endpoint), query.to_string());
        let fetch_from = {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            match seen.get(&key) {
                None => {
                    seen.insert(key, Seen::Once(k));
                    return None;
                }
                Some(Seen::Fetched(answers)) => {
                    return answers.get(&k).map(|body| (address, 200, body.clone()));
                }
                Some(Seen::Refused) => return None,
                Some(Seen::Once(first)) if *first >= k => return None,
                Some(Seen::Once(_)) => k,
            }
        };
        let start = grid.start + fetch_from as f64 * grid.step;
        let params = [
            ("query", query.to_string()),
            ("start", format!("{start:.3}")),
            ("end", format!("{:.3}", grid.end)),
            ("step", format!("{:.3}", grid.step)),
        ];
        let fetched = match prometheus.get(endpoint, "query_range", &params).await {
            Ok((_, 200, body)) => by_step(&body, grid, fetch_from),
            _ => None,
        };
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        match fetched {
            Some(answers) => {
                let body = answers.get(&k).cloned();
                seen.insert(key, Seen::Fetched(Arc::new(answers)));
                body.map(|body| (address, 200, body))
            }
            None => {
                seen.insert(key, Seen::Refused);
                None
            }
        }
    }
}

/// Who asks: the headers, and the credentials (hashed: never kept in the clear).
fn identity(endpoint: &Endpoint) -> String {
    use secrecy::ExposeSecret;
    use sha2::{Digest, Sha256};
    let hash = |secret: &str| {
        Sha256::digest(secret.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let auth = match &endpoint.auth {
        Auth::None => String::new(),
        Auth::Bearer(token) => format!("bearer {}", hash(token.expose_secret())),
        Auth::Basic { username, password } => {
            format!("basic {username} {}", hash(password.expose_secret()))
        }
    };
    format!("{:?} {auth}", endpoint.headers)
}

/// A range query's answer as the instant answers at each grid index from `from` on (a step where no series
/// has a value answers an empty vector); None when it is not a matrix.
fn by_step(body: &str, grid: Grid, from: i64) -> Option<Answers> {
    let answer: Value = serde_json::from_str(body).ok()?;
    if answer["status"] != "success" || answer["data"]["resultType"] != "matrix" {
        return None;
    }
    let mut vectors: BTreeMap<i64, Vec<Value>> = BTreeMap::new();
    // The last step Prometheus evaluated: at or before the end.
    let last = (((grid.end - grid.start) / grid.step + 1e-6).floor() as i64).max(from);
    for k in from..=last {
        vectors.insert(k, Vec::new());
    }
    for series in answer["data"]["result"].as_array()? {
        for point in series["values"].as_array()? {
            let k = grid.index(point[0].as_f64()?)?;
            vectors
                .entry(k)
                .or_default()
                .push(json!({"metric": series["metric"], "value": point}));
        }
    }
    Some(
        vectors
            .into_iter()
            .map(|(k, result)| {
                let body = json!({"status": "success",
                    "data": {"resultType": "vector", "result": result}});
                (k, body.to_string())
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRID: Grid = Grid {
        start: 1000.0,
        end: 1050.0,
        step: 10.0,
    };

    /// A Prometheus whose every query answers time / 10 at each time asked; `range` whether it answers
    /// range queries (else 400).
    async fn prometheus(range: bool) -> String {
        use axum::routing::get;
        // The numeric parameters (the query's text is not read).
        fn params(uri: &axum::http::Uri) -> HashMap<String, String> {
            uri.query()
                .unwrap_or("")
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        }
        let instant = |uri: axum::http::Uri| async move {
            let q = params(&uri);
            let t: f64 = q["time"].parse().unwrap();
            json!({"status": "success", "data": {"resultType": "vector",
                "result": [{"metric": {}, "value": [t, (t / 10.0).to_string()]}]}})
            .to_string()
        };
        let ranged = move |uri: axum::http::Uri| async move {
            let q = params(&uri);
            if !range {
                return (axum::http::StatusCode::BAD_REQUEST, "no".to_string());
            }
            let (start, end, step): (f64, f64, f64) = (
                q["start"].parse().unwrap(),
                q["end"].parse().unwrap(),
                q["step"].parse().unwrap(),
            );
            let mut values = vec![];
            let mut t = start;
            while t <= end + 1e-9 {
                values.push(json!([t, (t / 10.0).to_string()]));
                t += step;
            }
            let body = json!({"status": "success", "data": {"resultType": "matrix",
                "result": [{"metric": {}, "values": values}]}});
            (axum::http::StatusCode::OK, body.to_string())
        };
        let app = axum::Router::new()
            .route("/api/v1/query", get(instant))
            .route("/api/v1/query_range", get(ranged));
        crate::testing::serve(app).await
    }

    async fn ask(p: &Prometheus, address: &str, times: &[f64]) -> Vec<f64> {
        let endpoint = Endpoint {
            address: address.to_string(),
            ..Endpoint::default()
        };
        let mut values = vec![];
        for &t in times {
            match p.instant_query(&endpoint, "sum(x)", t).await.unwrap() {
                crate::metrics::provider::Answer::Value(v) => values.push(v),
                other => panic!("{other:?} at {t}"),
            }
        }
        values
    }

    #[tokio::test]
    async fn a_query_asked_again_is_answered_from_one_range_query() {
        let address = prometheus(true).await;
        let p = Prometheus::replaying(std::time::Duration::from_secs(2), GRID);
        let times = [1000.0, 1010.0, 1020.0, 1030.0, 1040.0, 1050.0];
        let values = ask(&p, &address, &times).await;
        assert_eq!(values, times.map(|t| t / 10.0));
        assert_eq!(p.sent(), 2, "one instant query, then one range query");
        // Off the grid: an instant query.
        assert_eq!(ask(&p, &address, &[1035.0]).await, [103.5]);
        assert_eq!(p.sent(), 3);
    }

    #[tokio::test]
    async fn the_grid_starts_at_the_first_time_asked() {
        let address = prometheus(true).await;
        let p = Prometheus::replaying(std::time::Duration::from_secs(2), GRID);
        // The first check falls 5 s after the start; its ticks are 10 s apart from there.
        let times = [1005.0, 1015.0, 1025.0, 1035.0, 1045.0];
        assert_eq!(ask(&p, &address, &times).await, times.map(|t| t / 10.0));
        assert_eq!(p.sent(), 2);
    }

    #[tokio::test]
    async fn a_refused_range_query_leaves_instant_queries() {
        let address = prometheus(false).await;
        let p = Prometheus::replaying(std::time::Duration::from_secs(2), GRID);
        let times = [1000.0, 1010.0, 1020.0, 1030.0];
        assert_eq!(ask(&p, &address, &times).await, times.map(|t| t / 10.0));
        // The instant query, the refused range query and the instant one in its stead, then one a tick.
        assert_eq!(p.sent(), 5);
    }

    #[test]
    fn the_grid_holds_its_ticks_only() {
        assert_eq!(GRID.index(1000.0), Some(0));
        assert_eq!(GRID.index(1030.0004), Some(3));
        assert_eq!(GRID.index(1035.0), None);
        assert_eq!(GRID.index(990.0), None);
        assert_eq!(GRID.index(1060.0), None);
    }

    #[test]
    fn a_matrix_becomes_one_vector_a_step() {
        let body = r#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"le":"0.1"},"values":[[1020,"3"],[1030,"5"]]},
            {"metric":{"le":"+Inf"},"values":[[1030,"9"]]}]}}"#;
        let answers = by_step(body, GRID, 2).unwrap();
        assert_eq!(answers.keys().copied().collect::<Vec<_>>(), [2, 3, 4, 5]);
        let short = Grid {
            end: 1049.0,
            ..GRID
        };
        assert_eq!(
            by_step(body, short, 2).unwrap().len(),
            3,
            "no step past the end"
        );
        let at = |k: i64| serde_json::from_str::<Value>(&answers[&k]).unwrap();
        assert_eq!(at(2)["data"]["result"][0]["value"], json!([1020, "3"]));
        assert_eq!(at(3)["data"]["result"].as_array().unwrap().len(), 2);
        assert_eq!(at(4)["data"]["result"], json!([]));
        assert_eq!(at(3)["data"]["resultType"], "vector");
        assert!(by_step(r#"{"status":"error"}"#, GRID, 0).is_none());
    }
}
