//! The load commands Flagger users put in their webhooks' metadata, parsed so Serin runs them itself:
//! `hey` (HTTP) and `ghz` (gRPC) command lines, with the flags that shape the load. Anything else is refused
//! with the reason; no shell is involved.

use std::collections::BTreeMap;
use std::time::Duration;

use super::grpc::{HEALTH_CHECK, request_message};
use crate::api::duration::parse_duration;

/// A load to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadSpec {
    pub tool: Tool,
    /// The target: a URL for hey, `host:port` for ghz.
    pub target: String,
    /// Run this long; when None, send `requests` requests.
    pub duration: Option<Duration>,
    pub requests: u64,
    pub concurrency: u32,
    /// Requests per second, in all (hey's -q is per worker, so it is multiplied out here); None: as fast
    /// as the workers go.
    pub rate: Option<f64>,
    pub method: String,
    pub headers: BTreeMap<String, String>,
    pub body: Option<String>,
    /// How long one request may take.
    pub timeout: Duration,
    /// ghz: the full method name (`package.Service/Method`); default the standard health check.
    pub call: Option<String>,
    /// ghz --insecure: plaintext.
    pub insecure: bool,
}

impl LoadSpec {
    /// What both tools do unless told otherwise: 200 requests from 50 workers, as fast as they go, 20s
    /// per request.
    fn defaults(tool: Tool, method: &str) -> Self {
        LoadSpec {
            tool,
            target: String::new(),
            duration: None,
            requests: 200,
            concurrency: 50,
            rate: None,
            method: method.into(),
            headers: BTreeMap::new(),
            body: None,
            timeout: Duration::from_secs(20),
            call: None,
            insecure: false,
        }
    }

    /// A target is needed; no workers means one.
    fn checked(mut self, tool: &'static str) -> Result<Self, CommandError> {
        if self.target.is_empty() {
            return Err(CommandError::NoTarget { tool });
        }
        self.concurrency = self.concurrency.max(1);
        Ok(self)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Hey,
    Ghz,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("the command line can't be split: unbalanced quotes")]
    Unbalanced,
    #[error(
        "{0:?} is not a load command Serin runs (hey or ghz); other commands need --allow-shell"
    )]
    NotLoad(String),
    #[error("{tool}: unknown flag {flag}")]
    UnknownFlag { tool: &'static str, flag: String },
    #[error("{tool}: flag {flag} needs a value")]
    MissingValue { tool: &'static str, flag: String },
    #[error("{tool}: flag {flag}: {value:?} is not valid: {why}")]
    BadValue {
        tool: &'static str,
        flag: String,
        value: String,
        why: String,
    },
    #[error("{tool}: no target given")]
    NoTarget { tool: &'static str },
    #[error(
        "{tool}: {why}; Serin's own client can't send this load (with --allow-shell the {tool} program runs it)"
    )]
    NeedsProgram { tool: &'static str, why: String },
    #[error("{tool}: shell syntax ({token:?}) is not supported: give one command")]
    Shell { tool: &'static str, token: String },
}

/// Parses a `cmd` as Flagger's load tester would run it.
pub fn parse(cmd: &str) -> Result<LoadSpec, CommandError> {
    let words = shlex::split(cmd).ok_or(CommandError::Unbalanced)?;
    let (program, args) = words
        .split_first()
        .ok_or_else(|| CommandError::NotLoad(String::new()))?;
    let name = program.rsplit('/').next().unwrap_or(program);
    match name {
        "hey" => hey(args),
        "ghz" => ghz(args),
        _ => Err(CommandError::NotLoad(name.to_string())),
    }
}

/// Walks flags: `-x value`, `-x=value`, `--x value`; boolean flags take no value.
struct Flags<'a> {
    tool: &'static str,
    args: &'a [String],
    i: usize,
}

impl<'a> Flags<'a> {
    fn next(
        &mut self,
        booleans: &[&str],
    ) -> Result<Option<(String, Option<String>)>, CommandError> {
        let Some(arg) = self.args.get(self.i) else {
            return Ok(None);
        };
        self.i += 1;
        if ["|", "&&", "||", ";", ">", "<", "&"].contains(&arg.as_str()) {
            return Err(CommandError::Shell {
                tool: self.tool,
                token: arg.clone(),
            });
        }
        if !arg.starts_with('-') || arg == "-" {
            return Ok(Some((String::new(), Some(arg.clone()))));
        }
        let flag = arg.trim_start_matches('-');
        if let Some((f, v)) = flag.split_once('=') {
            return Ok(Some((f.to_string(), Some(v.to_string()))));
        }
        if booleans.contains(&flag) {
            return Ok(Some((flag.to_string(), None)));
        }
        let value = self
            .args
            .get(self.i)
            .cloned()
            .ok_or_else(|| CommandError::MissingValue {
                tool: self.tool,
                flag: arg.clone(),
            })?;
        self.i += 1;
        Ok(Some((flag.to_string(), Some(value))))
    }
}

fn number<T: std::str::FromStr>(tool: &'static str, flag: &str, v: &str) -> Result<T, CommandError>
where
    T::Err: std::fmt::Display,
{
    v.parse().map_err(|e: T::Err| CommandError::BadValue {
        tool,
        flag: format!("-{flag}"),
        value: v.into(),
        why: e.to_string(),
    })
}

fn duration(tool: &'static str, flag: &str, v: &str) -> Result<Duration, CommandError> {
    parse_duration(v).map_err(|e| CommandError::BadValue {
        tool,
        flag: format!("-{flag}"),
        value: v.into(),
        why: e.to_string(),
    })
}

fn header(tool: &'static str, v: &str) -> Result<(String, String), CommandError> {
    let (k, val) = v.split_once(':').ok_or_else(|| CommandError::BadValue {
        tool,
        flag: "-H".into(),
        value: v.into(),
        why: "a header is \"Name: value\"".into(),
    })?;
    Ok((k.trim().to_string(), val.trim().to_string()))
}

/// hey's flags (github.com/rakyll/hey): -n 200, -c 50, -q per worker, -z, -m GET, -H, -t 20 seconds, -d,
/// -T, -A, -a, -host; -h2, -disable-compression, -disable-keepalive, -disable-redirects, -cpus and -o are
/// accepted and change nothing measurable here.
fn hey(args: &[String]) -> Result<LoadSpec, CommandError> {
    const T: &str = "hey";
    let mut spec = LoadSpec::defaults(Tool::Hey, "GET");
    let mut per_worker = None;
    let mut flags = Flags {
        tool: T,
        args,
        i: 0,
    };
    let booleans = [
        "h2",
        "disable-compression",
        "disable-keepalive",
        "disable-redirects",
    ];
    while let Some((flag, value)) = flags.next(&booleans)? {
        let v = value.unwrap_or_default();
        match flag.as_str() {
            "" => spec.target = v,
            "n" => spec.requests = number(T, &flag, &v)?,
            "c" => spec.concurrency = number(T, &flag, &v)?,
            "q" => per_worker = Some(number::<f64>(T, &flag, &v)?),
            "z" => spec.duration = Some(duration(T, &flag, &v)?),
            "m" => spec.method = v.to_uppercase(),
            "H" => {
                let (k, val) = header(T, &v)?;
                spec.headers.insert(k, val);
            }
            "t" => spec.timeout = Duration::from_secs(number(T, &flag, &v)?),
            "d" => spec.body = Some(v),
            "T" => {
                spec.headers.insert("Content-Type".into(), v);
            }
            "A" => {
                spec.headers.insert("Accept".into(), v);
            }
            "host" => {
                spec.headers.insert("Host".into(), v);
            }
            "a" => {
                let encoded = base64(v.as_bytes());
                spec.headers
                    .insert("Authorization".into(), format!("Basic {encoded}"));
            }
            "cpus" | "o" => {}
            f if booleans.contains(&f) => {}
            _ => {
                return Err(CommandError::UnknownFlag {
                    tool: T,
                    flag: format!("-{flag}"),
                });
            }
        }
    }
    let mut spec = spec.checked(T)?;
    spec.rate = per_worker
        .filter(|q| *q > 0.0)
        .map(|q| q * f64::from(spec.concurrency));
    Ok(spec)
}

/// ghz's flags (ghz.sh): -z, -n 200, -c 50, -q total RPS, --insecure, --call (default the health check),
/// --proto / --protoset (accepted: the call names the method), -d (JSON; see [`request_message`] for what
/// is sent without the proto), -t 20s, --connect-timeout; the target is `host:port`. TLS (no --insecure)
/// and messages that need the proto are left to the ghz program.
fn ghz(args: &[String]) -> Result<LoadSpec, CommandError> {
    const T: &str = "ghz";
    let mut spec = LoadSpec::defaults(Tool::Ghz, "POST");
    let mut flags = Flags {
        tool: T,
        args,
        i: 0,
    };
    let booleans = ["insecure", "skipTLS", "skip-first"];
    while let Some((flag, value)) = flags.next(&booleans)? {
        let v = value.unwrap_or_default();
        match flag.as_str() {
            "" => spec.target = v,
            "z" | "duration" => spec.duration = Some(duration(T, &flag, &v)?),
            "n" | "total" => spec.requests = number(T, &flag, &v)?,
            "c" | "concurrency" => spec.concurrency = number(T, &flag, &v)?,
            "q" | "rps" => {
                let q: f64 = number(T, &flag, &v)?;
                spec.rate = (q > 0.0).then_some(q);
            }
            "t" | "timeout" => spec.timeout = duration(T, &flag, &v)?,
            "insecure" => spec.insecure = true,
            "call" => spec.call = Some(v),
            "d" | "data" => spec.body = Some(v),
            "proto" | "protoset" | "import-paths" | "connect-timeout" | "skipTLS"
            | "skip-first" | "cpus" | "O" | "format" => {}
            _ => {
                return Err(CommandError::UnknownFlag {
                    tool: T,
                    flag: format!("-{flag}"),
                });
            }
        }
    }
    let spec = spec.checked(T)?;
    let needs_program = |why: String| CommandError::NeedsProgram { tool: T, why };
    if !spec.insecure {
        return Err(needs_program(
            "TLS (no --insecure): Serin's gRPC client speaks plaintext HTTP/2".into(),
        ));
    }
    let call = spec.call.as_deref().unwrap_or(HEALTH_CHECK);
    request_message(call, spec.body.as_deref()).map_err(needs_program)?;
    Ok(spec)
}

fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flaggers_documented_hey_command() {
        let s = parse("hey -z 1m -q 10 -c 2 http://podinfo-canary.test:9898/").unwrap();
        assert_eq!(s.tool, Tool::Hey);
        assert_eq!(s.target, "http://podinfo-canary.test:9898/");
        assert_eq!(s.duration, Some(Duration::from_secs(60)));
        assert_eq!(s.concurrency, 2);
        // -q is per worker in hey.
        assert_eq!(s.rate, Some(20.0));
        assert_eq!(s.method, "GET");
    }

    #[test]
    fn hey_with_headers_method_body_and_basic_auth() {
        let s = parse(
            r#"hey -z 30s -q 5 -c 1 -m POST -H "X-Canary: insider" -H 'Cookie: a=b' -d '{"a":1}' -T application/json -a user:pass http://app.ns/api"#,
        )
        .unwrap();
        assert_eq!(s.method, "POST");
        assert_eq!(s.headers["X-Canary"], "insider");
        assert_eq!(s.headers["Cookie"], "a=b");
        assert_eq!(s.headers["Content-Type"], "application/json");
        assert_eq!(s.headers["Authorization"], "Basic dXNlcjpwYXNz");
        assert_eq!(s.body.as_deref(), Some(r#"{"a":1}"#));
        assert_eq!(s.rate, Some(5.0));
    }

    #[test]
    fn flaggers_documented_ghz_command() {
        let s = parse("ghz -z 1m -q 10 -c 2 --insecure podinfo.test:9898").unwrap();
        assert_eq!(s.tool, Tool::Ghz);
        assert_eq!(s.target, "podinfo.test:9898");
        assert!(s.insecure);
        assert_eq!(s.rate, Some(10.0), "ghz's -q is the total");
        let s = parse("/usr/local/bin/ghz --insecure --proto=/tmp/ghz/health.proto --call=grpc.health.v1.Health/Check -d '{\"service\":\"\"}' -n 100 podinfo.test:9898").unwrap();
        assert_eq!(s.call.as_deref(), Some("grpc.health.v1.Health/Check"));
        assert_eq!(s.requests, 100);
    }

    #[test]
    fn ghz_loads_serins_client_cant_send_are_left_to_the_program() {
        let tls = parse("ghz -z 1m podinfo.test:9898").unwrap_err();
        assert!(matches!(tls, CommandError::NeedsProgram { .. }));
        assert!(tls.to_string().contains("TLS"), "{tls}");
        let message =
            parse(r#"ghz --insecure --call hello.Greeter/SayHello -d '{"name":"x"}' a:1"#)
                .unwrap_err();
        assert!(
            message
                .to_string()
                .contains("hello.Greeter/SayHello's proto"),
            "{message}"
        );
    }

    #[test]
    fn anything_else_is_refused_with_the_reason() {
        assert_eq!(
            parse("curl -sd 'test' http://podinfo-canary/token"),
            Err(CommandError::NotLoad("curl".into()))
        );
        assert!(matches!(
            parse("hey -z 1m http://a/ | tee /tmp/x"),
            Err(CommandError::Shell { .. })
        ));
        assert!(matches!(
            parse("hey -x 1 http://a/"),
            Err(CommandError::UnknownFlag { .. })
        ));
        assert!(matches!(
            parse("hey -z 1m"),
            Err(CommandError::NoTarget { .. })
        ));
        assert!(matches!(
            parse("hey -z soon http://a/"),
            Err(CommandError::BadValue { .. })
        ));
        assert_eq!(parse("hey 'http://a/"), Err(CommandError::Unbalanced));
    }
}
