//! `e2e/cluster/down` stops every process `up` started and frees every port. It ends the shared cluster, so
//! `make test` runs it alone, last: `cargo test -p serin-e2e --test teardown -- --ignored`.

use std::collections::HashMap;
use std::path::Path;

use serin_e2e::{cluster, repo_dir};

fn listening(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

#[tokio::test]
#[ignore = "tears down the shared cluster: make test runs it last"]
async fn down_leaves_no_process_and_no_listening_port() {
    let env = cluster().await;
    let state = env.get("SERIN_CLUSTER_STATE").to_string();
    // Every component's pid, and every port of the cluster, before.
    let mut pids = HashMap::new();
    for entry in std::fs::read_dir(Path::new(&state).join("pids")).expect("pid files") {
        let entry = entry.unwrap();
        let text = std::fs::read_to_string(entry.path()).unwrap();
        let pid: u32 = text.split_whitespace().next().unwrap().parse().unwrap();
        pids.insert(entry.file_name().to_string_lossy().to_string(), pid);
    }
    // The cluster's 7, and the write-back tests' add-on (git server, Flux's two controllers) when they ran.
    let addons = ["gitserver", "source-controller", "kustomize-controller"];
    let core = pids
        .keys()
        .filter(|n| !addons.contains(&n.as_str()))
        .count();
    assert_eq!(core, 7, "components: {pids:?}");
    let mut env_file = std::fs::read_to_string(Path::new(&state).join("env")).unwrap();
    env_file
        .push_str(&std::fs::read_to_string(Path::new(&state).join("flux/env")).unwrap_or_default());
    let ports: Vec<u16> = env_file
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.ends_with("_PORT"))
        .map(|(_, v)| v.parse().unwrap())
        .collect();
    assert!(
        ports.iter().filter(|p| listening(**p)).count() >= 6,
        "the cluster listens on its ports: {ports:?}"
    );

    let status = std::process::Command::new(repo_dir().join("e2e/cluster/down"))
        .status()
        .expect("running down");
    assert!(status.success());

    for (name, pid) in &pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists() || is_zombie(*pid),
            "{name} (pid {pid}) still runs"
        );
    }
    for port in ports {
        assert!(!listening(port), "port {port} still listens");
    }
    assert!(!Path::new(&state).exists(), "{state} still exists");
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z'))
    })
}
