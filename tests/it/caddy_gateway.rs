//! Caddy (Debian's `caddy`) as the gateway, running the documented (docs/gateways.md)
//! `forward_auth` recipe word for word (addresses substituted) in front of
//! an upstream that echoes what reached it.

use crate::common;

use std::process::{Command, Stdio};
use std::sync::atomic::Ordering::SeqCst;

use common::gateway::{
    check_pointer_cases, echo_upstream, pointer_projects, substitute, wait_listening, Proc,
};
use common::shared::{free_addr, readme_block};
use common::{project, snapshot, system_tool, TestSidecar};

#[tokio::test]
async fn caddy_forward_auth_passes_the_resolved_environment_and_denies_the_rest() {
    let Some(caddy) = system_tool("caddy", "caddy") else {
        return;
    };
    let mut projects = vec![project("acme", 6)];
    projects.extend(pointer_projects());
    let t = TestSidecar::start(Some(&snapshot(1, projects))).await;
    let (upstream, upstream_requests) = echo_upstream();
    let listen = free_addr();
    let recipe = readme_block("# caddy: forward_auth to /v1/authz");
    let recipe = substitute(&recipe, ":80 {", &format!("http://{listen} {{"));
    let recipe = substitute(
        &recipe,
        "reverse_proxy 127.0.0.1:8080",
        &format!("reverse_proxy {}", t.sidecar.data_addr()),
    );
    let recipe = substitute(
        &recipe,
        "reverse_proxy 127.0.0.1:9000",
        &format!("reverse_proxy {upstream}"),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("Caddyfile");
    // Test-only globals: no admin endpoint (tests run side by side), no HTTPS.
    std::fs::write(
        &config,
        format!("{{\n\tadmin off\n\tauto_https off\n}}\n{recipe}"),
    )
    .unwrap();
    let log = dir.path().join("caddy.log");
    let child = Command::new(&caddy)
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&config)
        .env("XDG_DATA_HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path())
        .env("HOME", dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("caddy starts");
    let _caddy = Proc(child);
    wait_listening(listen, "caddy", || {
        std::fs::read_to_string(&log).unwrap_or_default()
    });

    let client = reqwest::Client::new();
    let ask = |project: &str, environment: &str| {
        client
            .post(format!("http://{listen}/v1/chat/completions"))
            .header("x-project-id", project)
            .header("x-environment", environment)
            .header("x-resolved-environment", "smuggled")
            .header("x-snapshot-revision", "999")
            .send()
    };
    let resp = ask("acme", "QA").await.unwrap();
    assert_eq!(resp.status(), 200);
    let seen = resp.text().await.unwrap();
    assert!(seen.contains("x-resolved-environment: qa\n"), "{seen}");
    assert!(seen.contains("x-resolution-outcome: exact\n"), "{seen}");
    assert!(seen.contains("x-snapshot-revision: 6\n"), "{seen}");
    assert!(
        !seen.contains("smuggled") && !seen.contains("999"),
        "{seen}"
    );

    // The versions travel too, within the proxy's default buffers; a
    // client's own copy never passes.
    check_pointer_cases(&format!("http://{listen}/v1/chat/completions")).await;

    let before = upstream_requests.load(SeqCst);
    let resp = ask("nobody", "qa").await.unwrap();
    assert_eq!(resp.status(), 404);
    assert!(resp.text().await.unwrap().contains("unknown_project"));
    let resp = ask("acme", "Bad_Slug").await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(upstream_requests.load(SeqCst), before);
}
