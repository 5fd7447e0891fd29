//! The load tester over real HTTP: its gates as Flagger's answer, and a hey command turned into real
//! requests against a loopback server.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::json;

use super::load::NativeLoad;
use super::*;

async fn start(config: Config) -> String {
    let lt = LoadTester::new(config, Arc::new(NativeLoad::new().unwrap())).unwrap();
    crate::testing::serve(router(lt)).await
}

fn config() -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        timeout: Duration::from_secs(60),
        namespaces: None,
        allow_shell: false,
        state_file: None,
        log_output: false,
    }
}

async fn post(url: &str, body: serde_json::Value) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn canary() -> serde_json::Value {
    json!({"name": "podinfo", "namespace": "test", "phase": "Progressing", "checksum": "x", "metadata": {}})
}

#[tokio::test]
async fn gates_answer_as_flaggers() {
    let base = start(config()).await;
    assert_eq!(post(&format!("{base}/gate/approve"), canary()).await.0, 200);
    assert_eq!(post(&format!("{base}/gate/halt"), canary()).await.0, 403);
    assert_eq!(
        post(&format!("{base}/gate/check"), canary()).await,
        (403, "Forbidden".into())
    );
    assert_eq!(
        post(
            &format!("{base}/gate/open"),
            json!({"name": "podinfo", "namespace": "test"})
        )
        .await
        .0,
        202
    );
    assert_eq!(
        post(&format!("{base}/gate/check"), canary()).await,
        (200, "Approved".into())
    );
    // The rollback gate is a separate one, closed by default.
    assert_eq!(
        post(&format!("{base}/rollback/check"), canary()).await.0,
        403
    );
    assert_eq!(
        post(&format!("{base}/rollback/open"), canary()).await.0,
        202
    );
    assert_eq!(
        post(&format!("{base}/rollback/check"), canary()).await.0,
        200
    );
    assert_eq!(post(&format!("{base}/gate/close"), canary()).await.0, 202);
    assert_eq!(post(&format!("{base}/gate/check"), canary()).await.0, 403);
    assert_eq!(
        post(&format!("{base}/gate/check"), json!("junk")).await.0,
        400
    );
}

#[tokio::test]
async fn other_namespaces_are_refused() {
    let mut c = config();
    c.namespaces = Some(regex::Regex::new("^prod-").unwrap());
    let base = start(c).await;
    assert_eq!(post(&format!("{base}/gate/open"), canary()).await.0, 403);
}

#[tokio::test]
async fn tasks_are_checked_and_shell_commands_need_the_flag() {
    let base = start(config()).await;
    assert_eq!(
        post(&base, canary()).await,
        (400, "metadata not found in payload".into())
    );
    let mut p = canary();
    p["metadata"] = json!({"type": "cmd", "cmd": "curl http://podinfo-canary.test/"});
    let (code, text) = post(&base, p.clone()).await;
    assert_eq!(code, 400);
    assert!(text.contains("--allow-shell"), "{text}");
    p["metadata"] = json!({"type": "bash", "cmd": "echo hi"});
    assert_eq!(post(&base, p.clone()).await.0, 400);
    p["metadata"] = json!({"type": "ngrinder", "cmd": "x"});
    assert_eq!(
        post(&base, p).await,
        (400, "unknown task type ngrinder".into())
    );
}

#[tokio::test]
async fn a_blocking_bash_task_reports_its_outcome_with_the_flag() {
    let mut c = config();
    c.allow_shell = true;
    let base = start(c).await;
    let mut p = canary();
    p["metadata"] = json!({"type": "bash", "cmd": "echo ready", "returnCmdOutput": "true"});
    assert_eq!(post(&base, p.clone()).await, (200, "ready\n".into()));
    p["metadata"] = json!({"type": "bash", "cmd": "exit 3"});
    assert_eq!(post(&base, p).await.0, 500);
}

#[tokio::test]
async fn a_hey_command_sends_real_requests_once_per_canary_and_command() {
    // The application under load.
    let hits = Arc::new(AtomicU64::new(0));
    let app = {
        let hits = hits.clone();
        Router::new().route(
            "/",
            get(move || {
                let hits = hits.clone();
                async move {
                    hits.fetch_add(1, Ordering::Relaxed);
                    "ok"
                }
            }),
        )
    };
    let app_url = crate::testing::serve(app).await;

    let base = start(config()).await;
    let mut p = canary();
    let cmd = format!("hey -z 1s -q 20 -c 2 {app_url}/");
    p["metadata"] = json!({"cmd": cmd});
    assert_eq!(post(&base, p.clone()).await.0, 202);
    // Sent again while it runs: not started twice.
    assert_eq!(post(&base, p).await.0, 202);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let n = hits.load(Ordering::Relaxed);
    // 2 workers at 20 requests per second each for a second: about 40, and never two runs' worth.
    assert!((30..=50).contains(&n), "{n} requests");
}
