//! nginx (Debian's `nginx-light`) as the gateway, running the documented (docs/gateways.md)
//! `auth_request` recipe word for word: it asks the sidecar about every
//! request with the client's own headers and forwards the resolved
//! environment to a real upstream, which echoes what it received.

use crate::common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering::SeqCst;

use common::gateway::{
    check_pointer_cases, echo_upstream, pointer_projects, substitute, wait_listening, Proc,
};
use common::shared::{free_addr, readme_block};
use common::{project, snapshot, system_tool, TestSidecar};

#[tokio::test]
async fn the_resolved_environment_reaches_the_upstream_through_nginx() {
    let Some(nginx) = system_tool("nginx", "nginx-light") else {
        return;
    };
    let mut projects = vec![project("acme", 6), project("globex", 9)];
    projects.extend(pointer_projects());
    let t = TestSidecar::start(Some(&snapshot(1, projects))).await;
    let (upstream, upstream_requests) = echo_upstream();
    let dir = tempfile::tempdir().unwrap();
    let listen = free_addr();
    let _nginx = start(&nginx, dir.path(), listen, t.sidecar.data_addr(), upstream);

    let client = reqwest::Client::new();
    let ask = |method: reqwest::Method, project: &str, environment: Option<&str>| {
        let mut req = client
            .request(method, format!("http://{listen}/chat/completions"))
            .header("x-project-id", project)
            // A client trying to pick its own answer.
            .header("x-resolved-environment", "smuggled");
        if let Some(env) = environment {
            req = req.header("x-environment", env);
        }
        req.send()
    };

    // Exact: the client's environment, resolved, reaches the upstream, for
    // any method (the check itself goes to /v1/authz).
    for method in [reqwest::Method::GET, reqwest::Method::POST] {
        let resp = ask(method, "acme", Some("Staging")).await.unwrap();
        assert_eq!(resp.status(), 200);
        let seen = resp.text().await.unwrap();
        assert!(seen.contains("x-resolved-environment: staging\n"), "{seen}");
        assert!(
            !seen.contains("smuggled"),
            "the client's value is replaced: {seen}"
        );
        assert!(seen.contains("x-resolution-outcome: exact\n"), "{seen}");
        assert!(seen.contains("x-snapshot-revision: 6\n"), "{seen}");
        assert!(seen.contains("path: /chat/completions\n"), "{seen}");
    }

    // The versions travel too, within nginx's default buffers; a client's
    // own copy never passes.
    check_pointer_cases(&format!("http://{listen}/chat/completions")).await;

    // No or unknown environment: the fallback's slug goes upstream.
    for env in [None, Some("nope")] {
        let seen = ask(reqwest::Method::GET, "globex", env)
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(seen.contains("x-resolved-environment: prod\n"), "{seen}");
        assert!(seen.contains("x-resolution-outcome: fallback\n"), "{seen}");
        assert!(seen.contains("x-snapshot-revision: 9\n"), "{seen}");
    }

    // An unknown project is refused at nginx and never reaches the upstream.
    let passed = upstream_requests.load(SeqCst);
    let resp = ask(reqwest::Method::GET, "nobody", Some("prod"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    assert_eq!(upstream_requests.load(SeqCst), passed);
    let m = t.get_admin("/metrics").await.text;
    assert!(
        m.contains(
            "env_sidecar_resolve_requests_total{outcome=\"unknown_project\",api=\"authz_http\"} 1"
        ),
        "the sidecar was asked through /v1/authz: {m}"
    );

    // The sidecar down: nginx fails closed.
    t.sidecar.shutdown().await;
    let resp = ask(reqwest::Method::GET, "acme", Some("qa")).await.unwrap();
    assert_eq!(resp.status(), 500);
    assert_eq!(upstream_requests.load(SeqCst), passed);
}

fn start(
    nginx: &Path,
    dir: &Path,
    listen: SocketAddr,
    sidecar: SocketAddr,
    upstream: SocketAddr,
) -> Proc {
    let recipe = readme_block("# nginx: auth_request to /v1/authz");
    let recipe = substitute(
        &recipe,
        "server 127.0.0.1:8080;",
        &format!("server {sidecar};"),
    );
    let recipe = substitute(&recipe, "listen 80;", &format!("listen {listen};"));
    let recipe = substitute(
        &recipe,
        "http://127.0.0.1:9000",
        &format!("http://{upstream}"),
    );
    let p = dir.display();
    let conf = dir.join("nginx.conf");
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nworker_processes 1;\npid {p}/nginx.pid;\nerror_log {p}/logs/error.log;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {p}; proxy_temp_path {p};\n  \
             fastcgi_temp_path {p}; uwsgi_temp_path {p}; scgi_temp_path {p};\n{recipe}\n}}\n"
        ),
    )
    .unwrap();
    let child = Command::new(nginx)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx starts");
    let proc = Proc(child);
    wait_listening(listen, "nginx", || {
        std::fs::read_to_string(dir.join("logs/error.log")).unwrap_or_default()
    });
    proc
}
