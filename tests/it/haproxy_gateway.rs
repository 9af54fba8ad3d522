//! HAProxy (Debian's `haproxy`, 2.6, with its built-in Lua) as the
//! gateway, running the documented (docs/gateways.md) auth-request recipe and Lua action word
//! for word (addresses and the script path substituted); and the exact
//! request HAProxy's auth-request sends (`HEAD` with the client's
//! headers), answered as a proxy needs it.

use crate::common;

use std::process::{Command, Stdio};
use std::sync::atomic::Ordering::SeqCst;

use common::gateway::{
    check_pointer_cases, echo_upstream, pointer_projects, substitute, wait_listening, Proc,
};
use common::shared::{free_addr, readme_block};
use common::{project, raw_request, snapshot, system_tool, TestSidecar};

#[tokio::test]
async fn haproxy_auth_request_passes_the_resolved_environment_and_denies_the_rest() {
    let Some(haproxy) = system_tool("haproxy", "haproxy") else {
        return;
    };
    let mut projects = vec![project("acme", 6)];
    projects.extend(pointer_projects());
    let t = TestSidecar::start(Some(&snapshot(1, projects))).await;
    let (upstream, upstream_requests) = echo_upstream();
    let listen = free_addr();
    let dir = tempfile::tempdir().unwrap();
    let lua = readme_block("-- haproxy: env-sidecar-auth.lua");
    let lua = substitute(
        &lua,
        "http://127.0.0.1:8080/v1/authz",
        &format!("http://{}/v1/authz", t.sidecar.data_addr()),
    );
    let lua_path = dir.path().join("env-sidecar-auth.lua");
    std::fs::write(&lua_path, lua).unwrap();
    let config = readme_block("# haproxy: auth-request with a HEAD to /v1/authz");
    let config = substitute(
        &config,
        "/etc/haproxy/env-sidecar-auth.lua",
        &lua_path.display().to_string(),
    );
    let config = substitute(&config, "bind :80", &format!("bind {listen}"));
    let config = substitute(
        &config,
        "server upstream 127.0.0.1:9000",
        &format!("server upstream {upstream}"),
    );
    let config_path = dir.path().join("haproxy.cfg");
    std::fs::write(&config_path, config).unwrap();
    let log = dir.path().join("haproxy.log");
    let child = Command::new(&haproxy)
        .arg("-f")
        .arg(&config_path)
        .arg("-db")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.path().join("haproxy.err")).unwrap())
        .spawn()
        .expect("haproxy starts");
    let _haproxy = Proc(child);
    wait_listening(listen, "haproxy", || {
        std::fs::read_to_string(dir.path().join("haproxy.err")).unwrap_or_default()
    });

    let client = reqwest::Client::new();
    let ask = |project: &str, environment: &str| {
        client
            .post(format!("http://{listen}/v1/chat/completions"))
            .header("x-project-id", project)
            .header("x-environment", environment)
            .header("x-resolved-environment", "smuggled")
            .send()
    };
    let resp = ask("acme", "Canary").await.unwrap();
    assert_eq!(resp.status(), 200);
    let seen = resp.text().await.unwrap();
    assert!(seen.contains("x-resolved-environment: canary\n"), "{seen}");
    assert!(seen.contains("x-resolution-outcome: exact\n"), "{seen}");
    assert!(seen.contains("x-snapshot-revision: 6\n"), "{seen}");
    assert!(!seen.contains("smuggled"), "{seen}");

    // The versions travel too, within the proxy's default buffers; a
    // client's own copy never passes.
    check_pointer_cases(&format!("http://{listen}/v1/chat/completions")).await;

    let before = upstream_requests.load(SeqCst);
    for (project, env) in [("nobody", "qa"), ("acme", "Bad_Slug")] {
        let resp = ask(project, env).await.unwrap();
        assert_eq!(resp.status(), 403, "{project}/{env}");
    }
    assert_eq!(upstream_requests.load(SeqCst), before);
    let m = t.get_admin("/metrics").await.text;
    // One exact check, and four of the pointer cases.
    assert!(m.contains("outcome=\"exact\",api=\"authz_http\"} 5"), "{m}");
}

#[tokio::test]
async fn the_head_request_haproxy_sends_is_answered_with_headers_only() {
    let t = TestSidecar::start(Some(&snapshot(1, vec![project("acme", 3)]))).await;
    // What HAProxy 2.6's Lua httpclient sent in the recipe above (seen on
    // the wire): HEAD, the identity headers, its own host and user-agent.
    let (status, text) = raw_request(
        t.sidecar.data_addr(),
        b"HEAD /v1/authz HTTP/1.1\r\nx-project-id: acme\r\nx-environment: staging\r\nhost: 127.0.0.1:8080\r\naccept: */*\r\nuser-agent: HAProxy\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains("x-resolved-environment: staging\r\n"),
        "{text}"
    );
    assert!(text.contains("x-snapshot-revision: 3\r\n"), "{text}");
    assert!(
        text.contains(
            "x-resolved-pointers: {\"prompts\":{\"summarize\":\"staging-r3\"},\"routing_rules\":{},\"providers\":{}}\r\n"
        ),
        "{text}"
    );
    assert!(text.ends_with("\r\n\r\n"), "headers only: {text:?}");
}
