//! HTTP comparison: the sidecar against the floor (a bare hyper server
//! answering a fixed body of the same size as a resolve answer) and a peer
//! (nginx serving that body as a static file, one worker), under the same
//! load, alternating rounds (sidecar, floor, nginx, sidecar, ...) so machine
//! drift cancels out; then the churn variant (the sidecar in watch mode
//! while the simulator publishes 1% of projects every 100 ms).
//!
//! Run: `cargo bench --bench http_load` (`-- --quick` for a short run).
//! Needs `wrk` (Debian `wrk`) and, for the nginx column, `nginx` (Debian
//! `nginx-light`); it installs nothing and says what is missing.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use env_sidecar::model::wire::parse_snapshot;
use env_sidecar::sim::generate;
use env_sidecar::store::{ApplyOptions, Store, Update};
use http_body_util::Full;

const PROJECTS: usize = 10_000;
const CONNECTIONS: u32 = 32;

struct Run {
    rps: f64,
    p50: Duration,
    p99: Duration,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let (rounds, secs) = if quick { (3, 2) } else { (5, 5) };
    if which("wrk").is_none() {
        eprintln!("http_load needs wrk: apt-get install wrk (nothing was run)");
        std::process::exit(2);
    }
    let nginx = which("nginx");
    if nginx.is_none() {
        eprintln!("nginx not found: the nginx column is skipped (apt-get install nginx-light)");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let snapshot = generate::snapshot_json(PROJECTS, 1);
    std::fs::write(dir.path().join("snapshot.json"), &snapshot).unwrap();
    let body = typical_answer(&snapshot);
    std::fs::write(dir.path().join("body.json"), &body).unwrap();
    std::fs::write(dir.path().join("load.lua"), lua_script()).unwrap();
    println!(
        "{PROJECTS} projects x 4 environments, snapshot {} bytes, answer {} bytes, {CONNECTIONS} connections, {rounds} rounds of {secs}s",
        snapshot.len(),
        body.len()
    );

    let floor = start_floor(Bytes::from(body.clone()));
    let mut targets: Vec<(&str, String, Option<Child>)> = Vec::new();
    let sidecar_addr = free_addr();
    let sidecar = start_sidecar(dir.path(), sidecar_addr, None);
    wait_listening(sidecar_addr);
    targets.push(("sidecar", format!("http://{sidecar_addr}"), Some(sidecar)));
    targets.push(("floor (hyper)", format!("http://{floor}"), None));
    if let Some(nginx) = &nginx {
        let addr = free_addr();
        targets.push((
            "nginx (static)",
            format!("http://{addr}"),
            Some(start_nginx(nginx, dir.path(), addr)),
        ));
        wait_listening(addr);
    }
    let script = dir.path().join("load.lua");
    let results = alternate(&targets, rounds, secs, &script);
    print_table("static snapshot", &results);
    for (_, _, child) in &mut targets {
        if let Some(c) = child {
            stop(c);
        }
    }

    // Churn: watch mode while 1% of projects change every 100 ms.
    let (mut sim, sim_url) = start_simulator();
    let churn_addr = free_addr();
    let churn_sidecar = start_sidecar(dir.path(), churn_addr, Some(&sim_url));
    wait_ready(churn_addr);
    let mut churn_targets = vec![
        (
            "sidecar (churn)",
            format!("http://{churn_addr}"),
            Some(churn_sidecar),
        ),
        ("floor (hyper)", format!("http://{floor}"), None),
    ];
    let results = alternate(&churn_targets, rounds, secs, &script);
    print_table(
        "churn: 1% of projects republished every 100 ms (watch mode)",
        &results,
    );
    for (_, _, child) in &mut churn_targets {
        if let Some(c) = child {
            stop(c);
        }
    }
    stop(&mut sim);
}

/// SIGTERM, so that nginx's master takes its worker down with it (SIGKILL
/// would orphan the worker).
fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn alternate(
    targets: &[(&str, String, Option<Child>)],
    rounds: usize,
    secs: u64,
    script: &Path,
) -> Vec<(String, Vec<Run>)> {
    let mut results: Vec<(String, Vec<Run>)> = targets
        .iter()
        .map(|(n, _, _)| (n.to_string(), Vec::new()))
        .collect();
    for round in 0..rounds {
        for (i, (name, url, _)) in targets.iter().enumerate() {
            let run = wrk(url, secs, script);
            eprintln!(
                "round {}: {name:>16}: {:>9.0} req/s  p50 {:>8.1?}  p99 {:>8.1?}",
                round + 1,
                run.rps,
                run.p50,
                run.p99
            );
            results[i].1.push(run);
        }
    }
    results
}

fn print_table(title: &str, results: &[(String, Vec<Run>)]) {
    let floor = results
        .iter()
        .find(|(n, _)| n.starts_with("floor"))
        .map(|(_, r)| medians(r));
    println!("\n{title} (medians)");
    println!("| target | req/s | p50 | p99 | throughput / floor | p99 / floor |");
    println!("|---|---|---|---|---|---|");
    for (name, runs) in results {
        let (rps, p50, p99) = medians(runs);
        let (tr, lr) = match floor {
            Some((frps, _, fp99)) => (rps / frps, p99.as_secs_f64() / fp99.as_secs_f64()),
            None => (f64::NAN, f64::NAN),
        };
        println!("| {name} | {rps:.0} | {p50:.1?} | {p99:.1?} | {tr:.2} | {lr:.2} |");
    }
}

fn medians(runs: &[Run]) -> (f64, Duration, Duration) {
    let mid = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    (
        mid(runs.iter().map(|r| r.rps).collect()),
        Duration::from_secs_f64(mid(runs.iter().map(|r| r.p50.as_secs_f64()).collect())),
        Duration::from_secs_f64(mid(runs.iter().map(|r| r.p99.as_secs_f64()).collect())),
    )
}

fn wrk(url: &str, secs: u64, script: &Path) -> Run {
    let out = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{CONNECTIONS}"),
            &format!("-d{secs}s"),
            "--latency",
            "-s",
        ])
        .arg(script)
        .arg(url)
        .output()
        .expect("wrk runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    let pct = |p: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(p).map(|v| parse_latency(v.trim())))
            .unwrap_or_default()
    };
    if text.contains("Non-2xx") {
        eprintln!("warning: non-2xx answers from {url}:\n{text}");
    }
    Run {
        rps,
        p50: pct("50%"),
        p99: pct("99%"),
    }
}

fn parse_latency(v: &str) -> Duration {
    let (num, unit) = v.split_at(v.find(|c: char| c.is_alphabetic()).unwrap_or(v.len()));
    let n: f64 = num.parse().unwrap_or(0.0);
    Duration::from_secs_f64(match unit {
        "us" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        _ => 0.0,
    })
}

/// Random project among all, random slug (some unknown: fallbacks), so
/// lookups are not all cache-hot.
fn lua_script() -> String {
    format!(
        r#"math.randomseed(os.time())
local slugs = {{"prod", "staging", "qa", "canary", "dev", "perf", "eu-canary", "sandbox", "Staging", "unknown"}}
request = function()
  local path = string.format("/v1/resolve?project=proj-%06d&environment=%s", math.random(0, {}), slugs[math.random(#slugs)])
  return wrk.format("GET", path)
end
"#,
        PROJECTS - 1
    )
}

fn typical_answer(snapshot: &[u8]) -> Vec<u8> {
    let (store, mut writer) = Store::new(0.5);
    let body = parse_snapshot(snapshot).unwrap();
    let opts = ApplyOptions {
        now: std::time::SystemTime::now(),
        allow_mass_removal: false,
    };
    writer.apply(Update::Snapshot(body), opts).unwrap();
    store
        .resolve_with(&generate::project_id(42), Some("staging"), false, |a| {
            a.body()
        })
        .unwrap()
}

/// The floor: hyper 1, http1, keep-alive, a fixed JSON body.
fn start_floor(body: Bytes) -> SocketAddr {
    let std_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = std_listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            std_listener.set_nonblocking(true).unwrap();
            let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let body = body.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_req| {
                        let body = body.clone();
                        async move {
                            let mut r = http::Response::new(Full::new(body));
                            r.headers_mut().insert(
                                http::header::CONTENT_TYPE,
                                http::HeaderValue::from_static("application/json"),
                            );
                            Ok::<_, std::convert::Infallible>(r)
                        }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
    });
    addr
}

fn start_sidecar(dir: &Path, addr: SocketAddr, control_plane: Option<&str>) -> Child {
    let config = dir.join(format!("sidecar-{}.toml", addr.port()));
    let source = match control_plane {
        Some(url) => format!("kind = \"http\"\nurl = \"{url}\"\n"),
        None => format!(
            "kind = \"file\"\npath = \"{}\"\n",
            dir.join("snapshot.json").display()
        ),
    };
    let admin = free_addr();
    let mut f = std::fs::File::create(&config).unwrap();
    write!(f, "[server]\nlisten = \"{addr}\"\n[admin]\nlisten = \"{admin}\"\n[source]\n{source}[cache]\npath = \"\"\n").unwrap();
    Command::new(env!("CARGO_BIN_EXE_env-sidecar"))
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sidecar starts")
}

fn start_nginx(nginx: &Path, dir: &Path, addr: SocketAddr) -> Child {
    let prefix = dir.join(format!("nginx-{}", addr.port()));
    std::fs::create_dir_all(prefix.join("logs")).unwrap();
    let conf = prefix.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "worker_processes 1;\ndaemon off;\npid {p}/nginx.pid;\nerror_log {p}/logs/error.log;\nevents {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {p}; proxy_temp_path {p}; fastcgi_temp_path {p}; uwsgi_temp_path {p}; scgi_temp_path {p};\n\
             server {{ listen {addr}; keepalive_requests 1000000;\n    location / {{ default_type application/json; root {d}; try_files /body.json =404; }} }}\n}}\n",
            p = prefix.display(),
            d = dir.display()
        ),
    )
    .unwrap();
    Command::new(nginx)
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx starts")
}

fn start_simulator() -> (Child, String) {
    let per_second = (PROJECTS / 100 * 10).to_string(); // 1% every 100 ms
    let mut child = Command::new(env!("CARGO_BIN_EXE_control-plane-sim"))
        .args(["--generate", &PROJECTS.to_string(), "--mutate", &per_second])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("simulator starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim().trim_start_matches("listening on ").to_string();
    (child, url)
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn wait_listening(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{addr} never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
}

fn wait_ready(addr: SocketAddr) {
    wait_listening(addr);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ok = std::net::TcpStream::connect(addr)
            .and_then(|mut s| {
                use std::io::Read;
                s.write_all(b"GET /v1/resolve?project=proj-000001 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")?;
                let mut t = String::new();
                s.read_to_string(&mut t)?;
                Ok(t.starts_with("HTTP/1.1 200"))
            })
            .unwrap_or(false);
        if ok {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "sidecar at {addr} never became ready"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .chain([std::path::PathBuf::from("/usr/sbin")])
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}
