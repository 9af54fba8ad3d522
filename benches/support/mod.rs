//! What the load benchmarks share: starting the sidecar binary, the floor
//! and peers as separate processes, driving them with `wrk`, and reading
//! each server's CPU time from `/proc/PID/stat` so CPU per request sits
//! beside throughput and latency. Included by each bench with
//! `#[path = "support/mod.rs"] mod support;`.
#![allow(dead_code)]

pub mod callgrind;
pub mod redis;
#[path = "../../tests/common/shared.rs"]
pub mod shared;
use shared::{free_addr, sidecar_command};

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One measured run against one target.
#[derive(Debug, Clone, Copy, Default)]
pub struct Run {
    pub rps: f64,
    pub requests: u64,
    pub p50: Duration,
    pub p99: Duration,
    /// Server CPU (user + system) per request served, when the server's
    /// pid is known.
    pub cpu_per_request: Option<Duration>,
}

/// A server under test.
pub struct Target {
    pub name: String,
    pub url: String,
    /// The process whose CPU is charged to the requests.
    pub pid: Option<u32>,
    pub child: Option<Child>,
    /// A wrk script of its own (the run's script otherwise).
    pub script: Option<PathBuf>,
}

impl Target {
    pub fn new(name: &str, url: String, child: Option<Child>) -> Target {
        Target {
            name: name.to_owned(),
            url,
            pid: child.as_ref().map(Child::id),
            child,
            script: None,
        }
    }

    /// The same server under another name, driven with `script`, its CPU
    /// charged to `pid` (the process stays owned by the first target).
    pub fn alias(name: &str, url: String, pid: Option<u32>, script: &Path) -> Target {
        Target {
            name: name.to_owned(),
            url,
            pid,
            child: None,
            script: Some(script.to_owned()),
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            stop(c);
        }
    }
}

/// `utime + stime` of a process and its direct children (nginx's worker),
/// from `/proc/PID/stat`.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let own = process_cpu_time(pid)?;
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    Some(
        children
            .split_whitespace()
            .filter_map(|c| c.parse().ok())
            .filter_map(process_cpu_time)
            .fold(own, |sum, c| sum + c),
    )
}

fn process_cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; fields count from after its ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_secs_f64(
        (utime + stime) as f64 / clock_ticks(),
    ))
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// wrk's shape of load.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub threads: u32,
    pub connections: u32,
    pub secs: u64,
}

/// Runs wrk against `url` with `script`, charging `pid`'s CPU.
pub fn wrk(url: &str, load: Load, script: &Path, pid: Option<u32>) -> Run {
    let before = pid.and_then(cpu_time);
    let out = Command::new("wrk")
        .args([
            format!("-t{}", load.threads),
            format!("-c{}", load.connections),
            format!("-d{}s", load.secs),
            "--latency".into(),
            "-s".into(),
        ])
        .arg(script)
        .arg(url)
        .output()
        .expect("wrk runs");
    let after = pid.and_then(cpu_time);
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    // "  123456 requests in 5.00s, 45.67MB read"
    let requests = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let pct = |p: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(p).map(|v| parse_latency(v.trim())))
            .unwrap_or_default()
    };
    if text.contains("Non-2xx") || text.contains("Socket errors") {
        eprintln!("warning: errors from {url}:\n{text}");
    }
    let cpu_per_request = match (before, after) {
        (Some(b), Some(a)) if requests > 0 => Some((a - b) / requests as u32),
        _ => None,
    };
    Run {
        rps,
        requests,
        p50: pct("50%"),
        p99: pct("99%"),
        cpu_per_request,
    }
}

pub fn parse_latency(v: &str) -> Duration {
    let (num, unit) = v.split_at(v.find(|c: char| c.is_alphabetic()).unwrap_or(v.len()));
    let n: f64 = num.parse().unwrap_or(0.0);
    Duration::from_secs_f64(match unit {
        "us" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        _ => 0.0,
    })
}

/// Runs every target in turn, `rounds` times (A, B, C, A, B, C, ...), so
/// that drift of the machine falls on all of them alike.
pub fn alternate(
    targets: &[Target],
    rounds: usize,
    load: Load,
    script: &Path,
) -> Vec<(String, Vec<Run>)> {
    let mut results: Vec<(String, Vec<Run>)> = targets
        .iter()
        .map(|t| (t.name.clone(), Vec::new()))
        .collect();
    for round in 0..rounds {
        for (i, t) in targets.iter().enumerate() {
            let run = wrk(&t.url, load, t.script.as_deref().unwrap_or(script), t.pid);
            eprintln!(
                "round {}: {:>22}: {:>9.0} req/s  p50 {:>8.1?}  p99 {:>8.1?}  cpu/req {:>8.1?}",
                round + 1,
                t.name,
                run.rps,
                run.p50,
                run.p99,
                run.cpu_per_request.unwrap_or_default(),
            );
            results[i].1.push(run);
        }
    }
    results
}

/// Medians of a target's runs.
#[derive(Debug, Clone, Copy)]
pub struct Medians {
    pub rps: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub cpu: Option<Duration>,
}

pub fn medians(runs: &[Run]) -> Medians {
    let mid = |mut v: Vec<f64>| {
        if v.is_empty() {
            return f64::NAN;
        }
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let cpus: Vec<f64> = runs
        .iter()
        .filter_map(|r| r.cpu_per_request.map(|c| c.as_secs_f64()))
        .collect();
    Medians {
        rps: mid(runs.iter().map(|r| r.rps).collect()),
        p50: Duration::from_secs_f64(mid(runs.iter().map(|r| r.p50.as_secs_f64()).collect())),
        p99: Duration::from_secs_f64(mid(runs.iter().map(|r| r.p99.as_secs_f64()).collect())),
        cpu: (!cpus.is_empty()).then(|| Duration::from_secs_f64(mid(cpus))),
    }
}

/// Prints medians with ratios against the row named `base`.
pub fn print_table(title: &str, base: &str, results: &[(String, Vec<Run>)]) {
    let floor = results
        .iter()
        .find(|(n, _)| n.starts_with(base))
        .map(|(_, r)| medians(r));
    println!("\n{title} (medians; ratios against {base})");
    println!(
        "| target | req/s | p50 | p99 | CPU/req | throughput ratio | p99 ratio | CPU/req ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (name, runs) in results {
        let m = medians(runs);
        let ratio = |a: f64, b: f64| {
            if b > 0.0 {
                format!("{:.2}", a / b)
            } else {
                "-".into()
            }
        };
        let (tr, lr, cr) = match floor {
            Some(f) => (
                ratio(m.rps, f.rps),
                ratio(m.p99.as_secs_f64(), f.p99.as_secs_f64()),
                match (m.cpu, f.cpu) {
                    (Some(a), Some(b)) => ratio(a.as_secs_f64(), b.as_secs_f64()),
                    _ => "-".into(),
                },
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        let cpu = m
            .cpu
            .map_or("-".into(), |c| format!("{:.2} µs", c.as_secs_f64() * 1e6));
        println!(
            "| {name} | {:.0} | {:.1?} | {:.1?} | {cpu} | {tr} | {lr} | {cr} |",
            m.rps, m.p50, m.p99
        );
    }
}

/// SIGTERM, so that nginx's master takes its worker down with it (SIGKILL
/// would orphan the worker).
pub fn stop(child: &mut Child) {
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

pub fn wait_listening(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{addr} never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `GET path` on `addr` answers 200.
pub fn wait_ok(addr: SocketAddr, path: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        if http_get(addr, path).is_some_and(|(status, _)| status == 200) {
            return;
        }
        assert!(Instant::now() < deadline, "{addr}{path} never answered 200");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A one-off `GET` over a fresh connection: status and body.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    http_request(addr, "GET", path)
}

/// `METHOD path` with an empty body: status and body.
pub fn http_request(addr: SocketAddr, method: &str, path: &str) -> Option<(u16, String)> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.get(9..12)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .chain([PathBuf::from("/usr/sbin")])
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

/// The sidecar binary over `config` (TOML text written into `dir`).
/// `ENV_SIDECAR_BENCH_BIN` names another build to measure instead (an
/// older commit, for a before/after in one run).
pub fn start_sidecar(dir: &Path, name: &str, config: &str) -> Child {
    start_sidecar_with(dir, name, config, &[])
}

/// `ENV_SIDECAR_BENCH_BASELINE`: another build of the binary (today's,
/// say) that a bench measures beside this one, in the same alternating
/// rounds, for a before/after in one run.
pub fn baseline() -> Option<PathBuf> {
    std::env::var_os("ENV_SIDECAR_BENCH_BASELINE").map(PathBuf::from)
}

/// [`start_sidecar`] running the build at `binary`.
pub fn start_sidecar_from(binary: &Path, dir: &Path, name: &str, config: &str) -> Child {
    spawn_sidecar(shared::sidecar_command_for(binary), dir, name, config, &[])
}

/// [`start_sidecar`] with extra environment variables.
pub fn start_sidecar_with(dir: &Path, name: &str, config: &str, envs: &[(&str, &str)]) -> Child {
    spawn_sidecar(sidecar_command(), dir, name, config, envs)
}

fn spawn_sidecar(
    mut command: Command,
    dir: &Path,
    name: &str,
    config: &str,
    envs: &[(&str, &str)],
) -> Child {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config).unwrap();
    command
        .arg("--config")
        .arg(&path)
        .env("RUST_LOG", "warn")
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sidecar starts")
}

/// `control-plane-sim` with `args`; returns it and its URL.
pub fn start_simulator(args: &[&str]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_control-plane-sim"))
        .args(args)
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

/// Random project among `projects`, random slug (some unknown: fallbacks),
/// so lookups are not all cache-hot. `path` is the route, `headers` sends
/// project and environment as headers (forward-auth) instead of the query.
pub fn lua_script(projects: usize, path: &str, headers: bool) -> String {
    let request = if headers {
        format!(
            r#"  wrk.headers["x-project-id"] = string.format("proj-%06d", math.random(0, {max}))
  wrk.headers["x-environment"] = slugs[math.random(#slugs)]
  return wrk.format("GET", "{path}")"#,
            max = projects - 1
        )
    } else {
        format!(
            r#"  local p = string.format("{path}?project=proj-%06d&environment=%s", math.random(0, {max}), slugs[math.random(#slugs)])
  return wrk.format("GET", p)"#,
            max = projects - 1
        )
    };
    format!(
        r#"math.randomseed(os.time())
local slugs = {{"prod", "staging", "qa", "canary", "dev", "perf", "eu-canary", "sandbox", "Staging", "unknown"}}
request = function()
{request}
end
"#
    )
}

/// Runs the floor when this bench binary was started as one (see
/// [`start_floor`]); returns false otherwise.
pub fn serve_floor_if_asked() -> bool {
    let args: Vec<String> = std::env::args().collect();
    let Some(at) = args.iter().position(|a| a == "--serve-floor") else {
        return false;
    };
    let addr: SocketAddr = args[at + 1].parse().expect("floor address");
    let body = bytes::Bytes::from(std::fs::read(&args[at + 2]).expect("floor body"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
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
                        let mut r = http::Response::new(http_body_util::Full::new(body));
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
    true
}

/// The floor: a bare hyper 1 server (multi-thread runtime, HTTP/1.1,
/// keep-alive) answering `body` to every request, in its own process (this
/// bench binary, re-executed) so its CPU is measured alone.
pub fn start_floor(dir: &Path, body: &[u8]) -> (Child, SocketAddr) {
    let path = dir.join("floor-body.json");
    std::fs::write(&path, body).unwrap();
    let addr = free_addr();
    let child = Command::new(std::env::current_exe().unwrap())
        .arg("--serve-floor")
        .arg(addr.to_string())
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("floor starts");
    wait_listening(addr);
    (child, addr)
}

/// Starts a process with its output discarded.
pub fn spawn_quiet(program: &Path, args: &[&str]) -> Child {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{} starts: {e}", program.display()))
}

/// h2load's shape of load (one generator for HTTP/1.1 and HTTP/2, TCP
/// and Unix socket, so those rows compare like for like).
#[derive(Debug, Clone)]
pub struct H2Load {
    pub threads: u32,
    pub clients: u32,
    /// Concurrent streams per connection (1 for HTTP/1.1).
    pub streams: u32,
    pub secs: u64,
    pub http1: bool,
    /// `unix:PATH` or `http://ADDR`.
    pub base: String,
    /// Extra arguments (`-H`, `-d`).
    pub extra: Vec<String>,
    /// A fixed request rate per connection (`--rps`) instead of as fast
    /// as the server answers.
    pub rps_per_client: Option<u32>,
}

/// Runs h2load over the request URIs in `uris` (cycled), charging `pid`'s
/// CPU. Latency percentiles come from h2load's per-request log.
pub fn h2load(load: &H2Load, uris: &Path, pid: Option<u32>) -> Run {
    let log = uris.with_extension(format!("{}.log", std::process::id()));
    let before = pid.and_then(cpu_time);
    let mut cmd = Command::new("h2load");
    cmd.args(["-t", &load.threads.to_string()])
        .args(["-c", &load.clients.to_string()])
        .args(["-m", &load.streams.to_string()])
        .args(["-D", &load.secs.to_string()])
        .args(["-B", &load.base])
        .arg("-i")
        .arg(uris)
        .arg("--log-file")
        .arg(&log)
        .args(&load.extra);
    if load.http1 {
        cmd.arg("--h1");
    }
    if let Some(rps) = load.rps_per_client {
        cmd.args(["--rps", &rps.to_string()]);
    }
    let out = cmd.output().expect("h2load runs");
    let after = pid.and_then(cpu_time);
    let text = String::from_utf8_lossy(&out.stdout);
    // "requests: 100 total, 100 started, 100 done, 100 succeeded, 0 failed, ..."
    let succeeded = text
        .lines()
        .find(|l| l.starts_with("requests:"))
        .and_then(|l| l.split(", ").find(|p| p.ends_with(" succeeded")))
        .and_then(|p| p.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    let rps = text
        .lines()
        .find(|l| l.starts_with("finished in"))
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|p| p.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0);
    if succeeded == 0 || text.contains("errored") && !text.contains(" 0 errored") {
        eprintln!("warning: h2load against {}:\n{text}", load.base);
    }
    // Log lines: start time (µs), status, duration (µs).
    let mut durations: Vec<u64> = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split('\t').nth(2)?.trim().parse().ok())
        .collect();
    let _ = std::fs::remove_file(&log);
    durations.sort_unstable();
    let pct = |p: f64| {
        durations
            .get(((durations.len() as f64 * p) as usize).min(durations.len().saturating_sub(1)))
            .map(|us| Duration::from_micros(*us))
            .unwrap_or_default()
    };
    let cpu_per_request = match (before, after) {
        (Some(b), Some(a)) if succeeded > 0 => Some((a - b) / succeeded as u32),
        _ => None,
    };
    Run {
        rps,
        requests: succeeded,
        p50: pct(0.5),
        p99: pct(0.99),
        cpu_per_request,
    }
}

/// `count` random resolve URIs over `projects` (the host is a
/// placeholder: h2load's `-B` says where to connect).
pub fn resolve_uris(projects: usize, count: usize) -> String {
    let slugs = [
        "prod",
        "staging",
        "qa",
        "canary",
        "dev",
        "perf",
        "eu-canary",
        "sandbox",
        "Staging",
        "unknown",
    ];
    let mut rng = fastrand::Rng::with_seed(7);
    (0..count)
        .map(|_| {
            format!(
                "http://localhost/v1/resolve?project=proj-{:06}&environment={}\n",
                rng.usize(..projects),
                slugs[rng.usize(..slugs.len())]
            )
        })
        .collect()
}

/// A `Check` call for proj-000042 / staging, framed for gRPC.
pub fn grpc_check_body() -> Vec<u8> {
    use env_sidecar::server::ext_authz::*;
    use prost::Message;
    let request = CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(AttributeRequest {
                http: Some(HttpRequest {
                    method: "POST".into(),
                    headers: [
                        ("x-project-id".to_owned(), "proj-000042".to_owned()),
                        ("x-environment".to_owned(), "staging".to_owned()),
                    ]
                    .into(),
                    path: "/v1/chat/completions".into(),
                    header_map: None,
                }),
            }),
            context_extensions: Default::default(),
        }),
    };
    let message = request.encode_to_vec();
    let mut out = vec![0];
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(&message);
    out
}

/// A field of `/proc/PID/status` in bytes (`VmRSS`, `VmHWM`: given in
/// kB there); 0 when the process is gone.
pub fn proc_status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Resets the process's peak RSS (`VmHWM`) to its current RSS
/// (`/proc/PID/clear_refs`, value 5), so a later `VmHWM` is the peak of
/// what happened in between.
pub fn reset_peak_rss(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

/// Waits until the operator plane at `admin` answers `/readyz` with 200;
/// how long that took.
pub fn wait_ready(admin: SocketAddr, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if http_get(admin, "/readyz").is_some_and(|(status, _)| status == 200) {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "not ready within {limit:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
