//! Prometheus's HTTP query API: one instant query per check, at the tick's time. Every failure names the
//! server, the rendered query and, when Prometheus refused it, Prometheus's own message.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::provider::{Answer, MetricsProvider, NoData, ProviderSettings, QueryError};

/// The most of an answer Serin reads: far above any instant query's single value, far below what would
/// hurt the controller if a server (or whatever answers at its address) sent without end.
pub const MAX_ANSWER_BYTES: usize = 4 << 20;

/// How to reach one Prometheus: its base URL and what to present to it (credentials print as redacted).
#[derive(Debug, Clone, Default)]
pub struct Endpoint {
    /// Base URL, e.g. `http://prometheus.monitoring:9090` (a trailing slash is fine).
    pub address: String,
    pub auth: Auth,
    /// PEM CA bundle trusted besides the system's roots.
    pub ca_pem: Option<Vec<u8>>,
    pub insecure_skip_verify: bool,
    pub headers: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Default)]
pub enum Auth {
    #[default]
    None,
    Bearer(SecretString),
    Basic {
        username: String,
        password: SecretString,
    },
}

#[derive(Deserialize)]
struct Body {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data {
    result_type: String,
    result: serde_json::Value,
}

/// The data of a successful answer of `/api/v1/query`, or why there is none.
fn data_of(address: &str, http_status: u16, body: &str) -> Result<Data, QueryError> {
    let server = format!("Prometheus at {address}");
    let bad = |message: String| QueryError::BadAnswer {
        server: server.clone(),
        message,
    };
    let parsed: Body = match serde_json::from_str(body) {
        Ok(b) => b,
        Err(_) if !(200..300).contains(&http_status) => {
            return Err(QueryError::Refused {
                server,
                status: http_status,
                message: body
                    .chars()
                    .take(300)
                    .collect::<String>()
                    .trim()
                    .to_string(),
            });
        }
        Err(e) => return Err(bad(format!("the answer is not Prometheus's JSON: {e}"))),
    };
    if parsed.status != "success" {
        let kind = parsed.error_type.unwrap_or_else(|| "error".into());
        let message = parsed.error.unwrap_or_else(|| "no message".into());
        return Err(QueryError::Refused {
            server,
            status: http_status,
            message: format!("{kind}: {message}"),
        });
    }
    parsed
        .data
        .ok_or_else(|| bad("a successful answer without data".into()))
}

/// The value of a `[time, "value"]` pair.
fn sample_value(address: &str, pair: &serde_json::Value) -> Result<f64, QueryError> {
    let bad = |message: String| QueryError::BadAnswer {
        server: format!("Prometheus at {address}"),
        message,
    };
    let text = pair
        .get(1)
        .and_then(|v| v.as_str())
        .ok_or_else(|| bad(format!("a sample without a value: {pair}")))?;
    // Prometheus writes "NaN", "+Inf" and "-Inf"; Rust's parser reads those spellings too.
    text.parse::<f64>()
        .map_err(|_| bad(format!("a sample value that is not a number: {text:?}")))
}

/// Reads the body of `/api/v1/query`. Pure, so every shape is tested without a server.
pub fn parse_answer(address: &str, http_status: u16, body: &str) -> Result<Answer, QueryError> {
    let server = format!("Prometheus at {address}");
    let bad = |message: String| QueryError::BadAnswer {
        server: server.clone(),
        message,
    };
    let data = data_of(address, http_status, body)?;
    let sample_value = |pair: &serde_json::Value| sample_value(address, pair);
    let value = match data.result_type.as_str() {
        "scalar" => sample_value(&data.result)?,
        "vector" => {
            let series = data
                .result
                .as_array()
                .ok_or_else(|| bad("a vector answer whose result is not a list".into()))?;
            match series.as_slice() {
                [] => return Ok(Answer::NoData(NoData::Empty)),
                [one] => sample_value(&one["value"])?,
                many => {
                    let labels: Vec<String> = many
                        .iter()
                        .take(3)
                        .map(|s| s["metric"].to_string())
                        .collect();
                    return Err(bad(format!(
                        "the query returned {} series ({}{}); a check needs one value: aggregate them, e.g. with sum() or max()",
                        many.len(),
                        labels.join(", "),
                        if many.len() > 3 { ", ..." } else { "" }
                    )));
                }
            }
        }
        "matrix" => {
            return Err(bad(
                "the query returned a range vector; a check needs an instant value: wrap the range selector in a function such as rate()".into(),
            ));
        }
        other => {
            return Err(bad(format!(
                "the query returned a {other}; a check needs a number"
            )));
        }
    };
    Ok(if value.is_nan() {
        Answer::NoData(NoData::NaN)
    } else {
        Answer::Value(value)
    })
}

/// One series of an instant vector: its labels and its value.
pub type Sample = (BTreeMap<String, String>, f64);

/// Reads the body of `/api/v1/query` as an instant vector of any number of series (an empty vector is no
/// series; a scalar is one series without labels). Pure.
pub fn parse_vector(
    address: &str,
    http_status: u16,
    body: &str,
) -> Result<Vec<Sample>, QueryError> {
    let bad = |message: String| QueryError::BadAnswer {
        server: format!("Prometheus at {address}"),
        message,
    };
    let data = data_of(address, http_status, body)?;
    let value = |pair: &serde_json::Value| sample_value(address, pair);
    match data.result_type.as_str() {
        "scalar" => Ok(vec![(BTreeMap::new(), value(&data.result)?)]),
        "vector" => data
            .result
            .as_array()
            .ok_or_else(|| bad("a vector answer whose result is not a list".into()))?
            .iter()
            .map(|series| {
                let labels = series["metric"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                            .collect()
                    })
                    .unwrap_or_default();
                Ok((labels, value(&series["value"])?))
            })
            .collect(),
        other => Err(bad(format!(
            "the query returned a {other}; the judge needs an instant vector"
        ))),
    }
}

/// A TLS setup: the CA bundle to trust (PEM), and whether to skip verification.
type TlsSetup = (Option<Vec<u8>>, bool);

/// Sends instant queries; one HTTP client per distinct TLS setup, reused across ticks and canaries.
pub struct Prometheus {
    timeout: Duration,
    clients: Mutex<BTreeMap<TlsSetup, reqwest::Client>>,
    /// Replaying past ticks (`serin backtest`): instant queries on the ticks' grid answered from range
    /// queries.
    replay: Option<super::replayed::RangeCache>,
    /// HTTP requests sent.
    sent: AtomicU64,
}

impl Prometheus {
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            clients: Mutex::new(BTreeMap::new()),
            replay: None,
            sent: AtomicU64::new(0),
        }
    }

    /// For replaying past ticks on `grid`: a query asked again at a later tick of the grid is sent once
    /// more, as a range query over the rest of the grid, and answered from it from then on.
    pub fn replaying(timeout: Duration, grid: super::replayed::Grid) -> Self {
        Self {
            replay: Some(super::replayed::RangeCache::new(grid)),
            ..Self::new(timeout)
        }
    }

    /// How many HTTP requests were sent.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    fn client(&self, endpoint: &Endpoint) -> Result<reqwest::Client, QueryError> {
        let key = (endpoint.ca_pem.clone(), endpoint.insecure_skip_verify);
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        // No redirects: credentials and headers go to the address the template names and nowhere else.
        let mut builder = reqwest::Client::builder()
            .timeout(self.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .tls_danger_accept_invalid_certs(endpoint.insecure_skip_verify);
        if let Some(pem) = &endpoint.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| QueryError::Settings(format!("the CA bundle is not PEM: {e}")))?;
            builder = builder.tls_certs_merge(certs);
        }
        let client = builder
            .build()
            .map_err(|e| QueryError::Settings(format!("building an HTTP client: {e}")))?;
        clients.insert(key, client.clone());
        Ok(client)
    }

    /// Runs `query` as an instant query at `at` (seconds since the epoch).
    pub async fn instant_query(
        &self,
        endpoint: &Endpoint,
        query: &str,
        at: f64,
    ) -> Result<Answer, QueryError> {
        let (address, status, body) = self.fetch(endpoint, query, at).await?;
        parse_answer(&address, status, &body)
    }

    /// Runs `query` as an instant query at `at` and reads every series it returns.
    pub async fn instant_vector(
        &self,
        endpoint: &Endpoint,
        query: &str,
        at: f64,
    ) -> Result<Vec<Sample>, QueryError> {
        let (address, status, body) = self.fetch(endpoint, query, at).await?;
        parse_vector(&address, status, &body)
    }

    /// Sends an instant query (or, replaying, answers it from a range query); the address, the HTTP status
    /// and the body.
    async fn fetch(
        &self,
        endpoint: &Endpoint,
        query: &str,
        at: f64,
    ) -> Result<(String, u16, String), QueryError> {
        if let Some(replay) = &self.replay
            && let Some(answer) = replay.answer(self, endpoint, query, at).await
        {
            return Ok(answer);
        }
        self.get(
            endpoint,
            "query",
            &[("query", query.to_string()), ("time", format!("{at:.3}"))],
        )
        .await
    }

    /// Sends a GET to `/api/v1/<path>`; the address, the HTTP status and the body.
    pub(super) async fn get(
        &self,
        endpoint: &Endpoint,
        path: &str,
        params: &[(&str, String)],
    ) -> Result<(String, u16, String), QueryError> {
        let address = endpoint.address.trim_end_matches('/').to_string();
        let url = format!("{address}/api/v1/{path}");
        let mut request = self.client(endpoint)?.get(&url).query(params);
        self.sent.fetch_add(1, Ordering::Relaxed);
        for (name, values) in &endpoint.headers {
            for v in values {
                request = request.header(name.as_str(), v.as_str());
            }
        }
        request = match &endpoint.auth {
            Auth::None => request,
            Auth::Bearer(token) => request.bearer_auth(token.expose_secret()),
            Auth::Basic { username, password } => {
                request.basic_auth(username, Some(password.expose_secret()))
            }
        };
        // Sending, or reading the answer, can time out or break off alike.
        let transport = |e: reqwest::Error| {
            let server = format!("Prometheus at {address}");
            if e.is_timeout() {
                QueryError::Timeout {
                    server,
                    timeout: self.timeout,
                }
            } else {
                // Without the URL: it carries the query's time, which would make each round's message
                // (and so each Holding event) new.
                QueryError::Unreachable {
                    server,
                    reason: error_chain(&e.without_url()),
                }
            }
        };
        let mut response = request.send().await.map_err(transport)?;
        let status = response.status().as_u16();
        let server = || format!("Prometheus at {address}");
        if response.status().is_redirection() {
            let to = response
                .headers()
                .get(http::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .unwrap_or("nowhere said");
            return Err(QueryError::Refused {
                server: server(),
                status,
                message: format!(
                    "redirected to {to}; Serin does not follow redirects (credentials go only to the address given): set the address to where Prometheus answers"
                ),
            });
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(QueryError::BadAnswer {
                    server: server(),
                    message: format!(
                        "the answer is larger than {} MiB; a check needs one value",
                        MAX_ANSWER_BYTES >> 20
                    ),
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok((address, status, String::from_utf8_lossy(&body).into_owned()))
    }
}

impl MetricsProvider for Prometheus {
    fn query<'a>(
        &'a self,
        settings: &'a ProviderSettings,
        query: &'a str,
        at: f64,
    ) -> BoxFuture<'a, Result<Answer, QueryError>> {
        Box::pin(async move {
            let endpoint = endpoint(settings)?;
            self.instant_query(&endpoint, query, at).await
        })
    }
}

/// The Secret keys read for Prometheus: `token` (a bearer token), else `username` and `password` (basic
/// auth), as Flagger reads them; and `caCert`, a PEM CA bundle trusted besides the system's roots.
pub const TOKEN_KEY: &str = "token";
pub const USERNAME_KEY: &str = "username";
pub const PASSWORD_KEY: &str = "password";
pub const CA_KEY: &str = "caCert";

/// How to reach Prometheus with these settings.
pub fn endpoint(settings: &ProviderSettings) -> Result<Endpoint, QueryError> {
    let address = settings.address.trim();
    if !(address.starts_with("http://") || address.starts_with("https://")) {
        return Err(QueryError::Settings(format!(
            "the Prometheus address {address:?} is not an http:// or https:// URL"
        )));
    }
    let from = settings.secret_name.as_deref().unwrap_or("the secretRef");
    let text = |key: &str| -> Result<Option<String>, QueryError> {
        settings
            .secret
            .get(key)
            .map(|v| {
                String::from_utf8(v.expose_secret().to_vec()).map_err(|_| {
                    QueryError::Settings(format!("{from}: key {key} is not UTF-8 text"))
                })
            })
            .transpose()
    };
    let auth = match (text(TOKEN_KEY)?, text(USERNAME_KEY)?, text(PASSWORD_KEY)?) {
        (Some(token), _, _) => Auth::Bearer(token.trim().into()),
        (None, Some(username), Some(password)) => Auth::Basic {
            username,
            password: password.into(),
        },
        (None, Some(_), None) => {
            return Err(QueryError::Settings(format!(
                "{from} has a {USERNAME_KEY} but no {PASSWORD_KEY}"
            )));
        }
        (None, None, Some(_)) => {
            return Err(QueryError::Settings(format!(
                "{from} has a {PASSWORD_KEY} but no {USERNAME_KEY}"
            )));
        }
        (None, None, None)
            if settings.secret_name.is_some() && !settings.secret.contains_key(CA_KEY) =>
        {
            return Err(QueryError::Settings(format!(
                "{from} has none of the keys {TOKEN_KEY}, {USERNAME_KEY} and {PASSWORD_KEY}, {CA_KEY}"
            )));
        }
        (None, None, None) => Auth::None,
    };
    for (name, values) in &settings.headers {
        let bad_name = http::HeaderName::from_bytes(name.as_bytes()).is_err();
        if bad_name
            || values
                .iter()
                .any(|v| http::HeaderValue::from_str(v).is_err())
        {
            return Err(QueryError::Settings(format!(
                "spec.provider.headers: {name:?} is not a valid HTTP header name and value"
            )));
        }
    }
    Ok(Endpoint {
        address: address.to_string(),
        auth,
        ca_pem: settings
            .secret
            .get(CA_KEY)
            .map(|c| c.expose_secret().to_vec()),
        insecure_skip_verify: settings.insecure_skip_verify,
        headers: settings.headers.clone(),
    })
}

/// The error and its causes on one line ("error sending request: connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "http://prom:9090";

    fn ok(result_type: &str, result: &str) -> String {
        format!(
            r#"{{"status":"success","data":{{"resultType":"{result_type}","result":{result}}}}}"#
        )
    }

    #[test]
    fn the_judges_vectors_are_read_series_by_series() {
        let body = ok(
            "vector",
            r#"[{"metric":{"le":"0.1"},"value":[1,"90"]},{"metric":{"le":"+Inf"},"value":[1,"100.5"]}]"#,
        );
        let samples = parse_vector(A, 200, &body).unwrap();
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[1].0.get("le").map(String::as_str), Some("+Inf"));
        assert_eq!(samples[1].1, 100.5);
        assert_eq!(parse_vector(A, 200, &ok("vector", "[]")), Ok(vec![]));
        assert_eq!(
            parse_vector(A, 200, &ok("scalar", r#"[1,"3"]"#)).unwrap()[0].1,
            3.0
        );
        assert!(matches!(
            parse_vector(A, 200, &ok("matrix", "[]")),
            Err(QueryError::BadAnswer { .. })
        ));
        assert!(matches!(
            parse_vector(
                A,
                400,
                r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#
            ),
            Err(QueryError::Refused { .. })
        ));
    }

    #[test]
    fn a_vector_of_one_sample_is_its_value() {
        let body = ok("vector", r#"[{"metric":{},"value":[1700000000.1,"99.5"]}]"#);
        assert_eq!(parse_answer(A, 200, &body), Ok(Answer::Value(99.5)));
    }

    #[test]
    fn a_scalar_is_its_value() {
        let body = ok("scalar", r#"[1700000000.1,"42"]"#);
        assert_eq!(parse_answer(A, 200, &body), Ok(Answer::Value(42.0)));
    }

    #[test]
    fn an_empty_vector_is_no_data() {
        assert_eq!(
            parse_answer(A, 200, &ok("vector", "[]")),
            Ok(Answer::NoData(NoData::Empty))
        );
    }

    #[test]
    fn nan_is_no_data() {
        let body = ok("vector", r#"[{"metric":{},"value":[1,"NaN"]}]"#);
        assert_eq!(parse_answer(A, 200, &body), Ok(Answer::NoData(NoData::NaN)));
        assert_eq!(
            parse_answer(A, 200, &ok("scalar", r#"[1,"NaN"]"#)),
            Ok(Answer::NoData(NoData::NaN))
        );
    }

    #[test]
    fn infinities_are_values() {
        let body = ok("vector", r#"[{"metric":{},"value":[1,"+Inf"]}]"#);
        assert_eq!(
            parse_answer(A, 200, &body),
            Ok(Answer::Value(f64::INFINITY))
        );
        let body = ok("scalar", r#"[1,"-Inf"]"#);
        assert_eq!(
            parse_answer(A, 200, &body),
            Ok(Answer::Value(f64::NEG_INFINITY))
        );
    }

    #[test]
    fn several_series_are_refused_with_their_labels() {
        let body = ok(
            "vector",
            r#"[{"metric":{"pod":"a"},"value":[1,"1"]},{"metric":{"pod":"b"},"value":[1,"2"]}]"#,
        );
        let err = parse_answer(A, 200, &body).unwrap_err().to_string();
        assert!(err.contains("2 series"), "{err}");
        assert!(err.contains(r#"{"pod":"a"}"#), "{err}");
        assert!(err.contains("sum()"), "{err}");
    }

    #[test]
    fn a_range_vector_or_string_is_refused() {
        let err = parse_answer(A, 200, &ok("matrix", "[]")).unwrap_err();
        assert!(err.to_string().contains("range vector"), "{err}");
        let err = parse_answer(A, 200, &ok("string", r#"[1,"x"]"#)).unwrap_err();
        assert!(err.to_string().contains("string"), "{err}");
    }

    #[test]
    fn prometheus_own_error_is_reported() {
        let body = r#"{"status":"error","errorType":"bad_data","error":"1:5: parse error: unexpected \"}\""}"#;
        let err = parse_answer(A, 400, body).unwrap_err();
        assert_eq!(
            err,
            QueryError::Refused {
                server: format!("Prometheus at {A}"),
                status: 400,
                message: "bad_data: 1:5: parse error: unexpected \"}\"".into()
            }
        );
    }

    #[test]
    fn a_non_json_error_page_is_reported_as_refused() {
        let err = parse_answer(A, 502, "<html>Bad Gateway</html>\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "Prometheus at http://prom:9090 refused the query (502): <html>Bad Gateway</html>"
        );
    }

    #[test]
    fn a_sample_that_is_not_a_number_is_refused() {
        let body = ok("vector", r#"[{"metric":{},"value":[1,"fast"]}]"#);
        let err = parse_answer(A, 200, &body).unwrap_err();
        assert!(err.to_string().contains("\"fast\""), "{err}");
    }

    fn settings(secret: &[(&str, &str)]) -> ProviderSettings {
        ProviderSettings {
            address: "https://prom.example:9090".into(),
            secret: secret
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec().into()))
                .collect(),
            secret_name: (!secret.is_empty()).then(|| "Secret test/prom".to_string()),
            ..ProviderSettings::default()
        }
    }

    #[test]
    fn credentials_come_from_the_secret_as_flagger_reads_them() {
        let e = endpoint(&settings(&[("token", "abc\n"), ("username", "u")])).unwrap();
        assert!(matches!(&e.auth, Auth::Bearer(t) if t.expose_secret() == "abc"));
        let e = endpoint(&settings(&[("username", "u"), ("password", "p")])).unwrap();
        assert!(matches!(&e.auth, Auth::Basic { username, password }
            if username == "u" && password.expose_secret() == "p"));
        let e = endpoint(&settings(&[("caCert", "PEM")])).unwrap();
        assert!(matches!(e.auth, Auth::None));
        assert_eq!(e.ca_pem, Some(b"PEM".to_vec()));
        assert!(matches!(endpoint(&settings(&[])).unwrap().auth, Auth::None));
    }

    #[test]
    fn secrets_print_as_redacted() {
        let s = settings(&[("token", "s3cr3t-token"), ("caCert", "PEM")]);
        let e = endpoint(&s).unwrap();
        for printed in [format!("{s:?}"), format!("{e:?}")] {
            assert!(!printed.contains("s3cr3t"), "{printed}");
            assert!(printed.contains("REDACTED"), "{printed}");
        }
        let basic = endpoint(&settings(&[("username", "u"), ("password", "pa55word")])).unwrap();
        assert!(!format!("{basic:?}").contains("pa55word"));
    }

    #[tokio::test]
    async fn redirects_are_not_followed_with_credentials() {
        let (elsewhere, reached) = crate::metrics::provider::recording_server(String::new()).await;
        let (address, asked) = crate::metrics::provider::recording_server(format!(
            "HTTP/1.1 307 Temporary Redirect\r\nLocation: {elsewhere}/api/v1/query\r\nContent-Length: 0\r\n\r\n"
        ))
        .await;
        let mut s = settings(&[("token", "s3cr3t-token")]);
        s.address = address;
        s.headers
            .insert("X-Scope-OrgID".into(), vec!["tenant-a".into()]);
        let err = Prometheus::new(Duration::from_secs(2))
            .query(&s, "up", 0.0)
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("does not follow redirects"),
            "{err}"
        );
        assert!(asked.lock().unwrap()[0].contains("s3cr3t-token"));
        assert!(
            reached.lock().unwrap().is_empty(),
            "{:?}",
            reached.lock().unwrap()
        );
    }

    #[tokio::test]
    async fn an_endless_answer_is_cut_off() {
        let huge = "x".repeat(MAX_ANSWER_BYTES + 1);
        let (address, _) = crate::metrics::provider::recording_server(format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{huge}",
            huge.len()
        ))
        .await;
        let endpoint = Endpoint {
            address,
            ..Endpoint::default()
        };
        let err = Prometheus::new(Duration::from_secs(5))
            .instant_query(&endpoint, "up", 0.0)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("larger than 4 MiB"), "{err}");
    }

    #[test]
    fn incomplete_credentials_and_bad_addresses_are_errors_that_say_so() {
        let err = endpoint(&settings(&[("username", "u")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Secret test/prom has a username but no password"
        );
        let err = endpoint(&settings(&[("user", "u")])).unwrap_err();
        assert!(err.to_string().contains("has none of the keys"), "{err}");
        let mut s = settings(&[]);
        s.headers.insert("X-Scope".into(), vec!["a\nb".into()]);
        let err = endpoint(&s).unwrap_err();
        assert!(
            err.to_string()
                .contains("\"X-Scope\" is not a valid HTTP header"),
            "{err}"
        );
        let mut s = settings(&[]);
        s.address = "prometheus:9090".into();
        assert!(
            endpoint(&s)
                .unwrap_err()
                .to_string()
                .contains("not an http")
        );
    }

    #[tokio::test]
    async fn a_server_that_is_not_there_is_unreachable() {
        let address = crate::metrics::provider::nowhere();
        let endpoint = Endpoint {
            address: format!("{address}/"),
            ..Endpoint::default()
        };
        let prometheus = Prometheus::new(Duration::from_secs(2));
        let err = prometheus
            .instant_query(&endpoint, "up", 0.0)
            .await
            .unwrap_err();
        // The same failure at another time says the same thing, so a hold makes one event, not one a tick.
        let again = prometheus
            .instant_query(&endpoint, "up", 60.0)
            .await
            .unwrap_err();
        assert_eq!(err, again);
        assert!(!err.to_string().contains("time="), "{err}");
        assert!(matches!(err, QueryError::Unreachable { .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with(&format!("Prometheus at {address} could not")),
            "{err}"
        );
    }
}
