//! A `serin loadtester` process on a loopback port, as Flagger manifests' webhooks reach
//! flagger-loadtester; and calls of its gate API, as a person (or a script) opens and closes gates.

use std::time::Duration;

use serde_json::json;

use crate::wait_for;

/// Killed when dropped.
pub struct LoadTester {
    child: std::process::Child,
    pub url: String,
}

impl LoadTester {
    /// Starts `serin loadtester` (the binary at `bin`) with `args`, and waits until it answers.
    pub async fn start(bin: &str, args: &[&str]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log = std::env::temp_dir().join(format!("serin-loadtester-{port}.log"));
        let out = std::fs::File::create(&log).expect("load tester log file");
        let child = std::process::Command::new(bin)
            .args(["loadtester", "--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {bin} loadtester: {e}"));
        let url = format!("http://127.0.0.1:{port}");
        let health = format!("{url}/healthz");
        wait_for(
            "the load tester to answer",
            Duration::from_secs(10),
            Duration::from_millis(50),
            || async {
                reqwest::get(&health)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            },
        )
        .await;
        LoadTester { child, url }
    }

    /// POSTs `{name, namespace}` to a gate endpoint (`gate/open`, `rollback/open`, ...); returns the status.
    pub async fn gate(&self, path: &str, name: &str, namespace: &str) -> u16 {
        reqwest::Client::new()
            .post(format!("{}/{path}", self.url))
            .json(&json!({"name": name, "namespace": namespace}))
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
            .status()
            .as_u16()
    }
}

impl Drop for LoadTester {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
