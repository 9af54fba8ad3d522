//! nginx (Debian's `nginx-light`) as the gateway, running the README's
//! `auth_request` recipe word for word: it asks the sidecar about every
//! request with the client's own headers and forwards the resolved
//! environment to a real upstream, which echoes what it received.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{project, snapshot, system_tool, TestSidecar};

#[tokio::test]
async fn the_resolved_environment_reaches_the_upstream_through_nginx() {
    let Some(nginx) = system_tool("nginx", "nginx-light") else {
        return;
    };
    let t = TestSidecar::start(Some(&snapshot(
        1,
        vec![project("acme", 4), project("globex", 9)],
    )))
    .await;
    let (upstream, upstream_requests) = echo_upstream();
    let dir = tempfile::tempdir().unwrap();
    let listen = free_addr();
    let _nginx = Nginx::start(&nginx, dir.path(), listen, t.sidecar.data_addr(), upstream);

    let client = reqwest::Client::new();
    let ask = |project: &str, environment: Option<&str>| {
        let mut req = client
            .get(format!("http://{listen}/chat/completions"))
            .header("x-project-id", project);
        if let Some(env) = environment {
            req = req.header("x-environment", env);
        }
        req.send()
    };

    // Exact: the client's environment, resolved, reaches the upstream.
    let resp = ask("acme", Some("Staging")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let seen = resp.text().await.unwrap();
    assert!(seen.contains("x-resolved-environment: staging\n"), "{seen}");
    assert!(seen.contains("x-resolution-outcome: exact\n"), "{seen}");
    assert!(seen.contains("x-snapshot-revision: 4\n"), "{seen}");
    assert!(seen.contains("path: /chat/completions\n"), "{seen}");

    // No or unknown environment: the fallback's slug goes upstream.
    for env in [None, Some("nope")] {
        let seen = ask("globex", env).await.unwrap().text().await.unwrap();
        assert!(seen.contains("x-resolved-environment: prod\n"), "{seen}");
        assert!(seen.contains("x-resolution-outcome: fallback\n"), "{seen}");
        assert!(seen.contains("x-snapshot-revision: 9\n"), "{seen}");
    }

    // An unknown project is refused at nginx and never reaches the upstream.
    let (asked, passed) = (sidecar_resolves(&t).await, upstream_requests.load(SeqCst));
    let resp = ask("nobody", Some("prod")).await.unwrap();
    assert_eq!(resp.status(), 500);
    assert_eq!(
        sidecar_resolves(&t).await,
        asked + 1,
        "the sidecar was asked"
    );
    assert_eq!(upstream_requests.load(SeqCst), passed);
}

/// Resolve requests the sidecar has answered (its own counter).
async fn sidecar_resolves(t: &TestSidecar) -> u64 {
    let metrics = t.get_admin("/metrics").await.text;
    metrics
        .lines()
        .filter(|l| l.starts_with("env_sidecar_resolve_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A plain HTTP/1.1 upstream that answers each request with the request
/// path and the `x-resolved-*` / `x-resolution-*` / `x-snapshot-*` headers
/// it received, one `name: value` per line; it counts requests.
fn echo_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let counter = counter.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut writer = stream;
                loop {
                    let mut echoed = String::new();
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    counter.fetch_add(1, SeqCst);
                    let path = line.split(' ').nth(1).unwrap_or("").to_string();
                    echoed.push_str(&format!("path: {path}\n"));
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let header = line.trim_end();
                        if header.is_empty() {
                            break;
                        }
                        let lower = header.to_ascii_lowercase();
                        if ["x-resolved-", "x-resolution-", "x-snapshot-"]
                            .iter()
                            .any(|p| lower.starts_with(p))
                        {
                            echoed.push_str(&lower);
                            echoed.push('\n');
                        }
                    }
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{echoed}",
                        echoed.len()
                    );
                    if writer.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, requests)
}

/// The nginx block from the README's "Using it from a proxy" section.
fn readme_recipe() -> String {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md is readable");
    let start = readme
        .find("```nginx\n")
        .expect("the README has an nginx recipe")
        + "```nginx\n".len();
    let end = start + readme[start..].find("```").expect("the recipe block ends");
    readme[start..end].to_string()
}

struct Nginx(Child);

impl Nginx {
    fn start(
        nginx: &Path,
        dir: &Path,
        listen: SocketAddr,
        sidecar: SocketAddr,
        upstream: SocketAddr,
    ) -> Nginx {
        let recipe = readme_recipe()
            .replace("server 127.0.0.1:8080;", &format!("server {sidecar};"))
            .replace("listen 80;", &format!("listen {listen};"))
            .replace("http://gateway_backend", &format!("http://{upstream}"));
        assert!(recipe.contains(&sidecar.to_string()) && recipe.contains(&upstream.to_string()));
        let p = dir.display();
        let conf: PathBuf = dir.join("nginx.conf");
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
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(listen).is_err() {
            let log = std::fs::read_to_string(dir.join("logs/error.log")).unwrap_or_default();
            assert!(Instant::now() < deadline, "nginx did not listen: {log}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Nginx(child)
    }
}

impl Drop for Nginx {
    /// SIGTERM, so the master takes its worker down with it.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}
