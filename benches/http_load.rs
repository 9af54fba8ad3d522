//! HTTP comparison: the sidecar against the floor (a bare hyper server
//! answering a fixed body of the same size as a resolve answer, in its own
//! process) and two peers (nginx, one worker, answering that body with
//! `return 200` from its configuration and as a static file), under the
//! same load, alternating rounds (sidecar, floor, nginx, sidecar, ...) so
//! machine drift falls on all alike; with one and two wrk
//! threads; then the churn variant (the sidecar in watch mode while the
//! simulator publishes 1% of projects every 100 ms). Every row has the
//! server's CPU per request (from `/proc/PID/stat`) beside throughput and
//! p99. Then one generator, h2load, for every protocol and transport, and
//! for the tail at a fixed offered load (16k and 48k req/s over 32
//! connections, sidecar and floor alternating): with wrk driving both as
//! fast as they answer, p99 measures how three busy threads share two
//! cores more than it measures either server (docs/performance.md, "Where the tail
//! comes from").
//!
//! The sidecar runs twice: as configured by default (HTTP/1.1 requests
//! read by its hot path) and with `server.http1 = "hyper_only"`.
//!
//! Run: `cargo bench --bench http_load` (`-- --quick` for a short run);
//! `ENV_SIDECAR_BENCH_BASELINE=path` adds another build's resolve and
//! forward-auth rows to the same rounds (a before/after in one run).
//! Needs `wrk` (Debian `wrk`) and, for the nginx column, `nginx` (Debian
//! `nginx-light`); it installs nothing and says what is missing.

#[path = "support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use env_sidecar::model::origin::Origin;
use env_sidecar::model::wire::parse_snapshot;
use env_sidecar::sim::generate;
use env_sidecar::store::{Contents, Store, Update};
use support::{Load, Target};

const PROJECTS: usize = 10_000;
const CONNECTIONS: u32 = 32;

fn main() {
    if support::serve_floor_if_asked() {
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let (rounds, secs) = if quick { (3, 2) } else { (5, 5) };
    if support::which("wrk").is_none() {
        eprintln!("http_load needs wrk: apt-get install wrk (nothing was run)");
        std::process::exit(2);
    }
    let nginx = support::which("nginx");
    if nginx.is_none() {
        eprintln!("nginx not found: the nginx column is skipped (apt-get install nginx-light)");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let snapshot = generate::snapshot_json(PROJECTS, 1);
    std::fs::write(dir.path().join("snapshot.json"), &snapshot).unwrap();
    let body = typical_answer(&snapshot);
    std::fs::write(dir.path().join("body.json"), &body).unwrap();
    let script = dir.path().join("load.lua");
    std::fs::write(&script, support::lua_script(PROJECTS, "/v1/resolve", false)).unwrap();
    println!(
        "{PROJECTS} projects x 4 environments, snapshot {} bytes, answer {} bytes, {CONNECTIONS} connections, {rounds} rounds of {secs}s",
        snapshot.len(),
        body.len()
    );

    let (floor, floor_addr) = support::start_floor(dir.path(), &body);
    let sidecar_addr = support::shared::free_addr();
    let sidecar = start_sidecar(dir.path(), sidecar_addr, None);
    support::wait_ok(
        sidecar_addr,
        "/v1/resolve?project=proj-000001",
        Duration::from_secs(60),
    );
    let sidecar_pid = sidecar.id();
    let authz_script = dir.path().join("authz.lua");
    std::fs::write(
        &authz_script,
        support::lua_script(PROJECTS, "/v1/authz", true),
    )
    .unwrap();
    let mut targets = vec![
        Target::new(
            "sidecar /v1/resolve",
            format!("http://{sidecar_addr}"),
            Some(sidecar),
        ),
        Target::new("floor (hyper)", format!("http://{floor_addr}"), Some(floor)),
        Target::alias(
            "sidecar /v1/authz",
            format!("http://{sidecar_addr}"),
            Some(sidecar_pid),
            &authz_script,
        ),
    ];
    // One project over and over: the same code with every answer in the
    // cache, beside the floor's one fixed body (what random projects
    // cost in memory traffic).
    let one_project = dir.path().join("one-project.lua");
    std::fs::write(
        &one_project,
        "request = function()\n  return wrk.format(\"GET\", \"/v1/resolve?project=proj-000042&environment=staging\")\nend\n",
    )
    .unwrap();
    targets.push(Target::alias(
        "sidecar /v1/resolve, one project",
        format!("http://{sidecar_addr}"),
        Some(sidecar_pid),
        &one_project,
    ));
    // Another build (today's, say) in the same rounds: a before/after.
    let mut baseline = None;
    if let Some(binary) = support::baseline() {
        let (addr, pid, rows) = resolve_and_authz(
            |route| format!("baseline {route}"),
            &binary,
            dir.path(),
            "",
            &authz_script,
        );
        baseline = Some((addr, pid));
        targets.extend(rows);
    }
    // The same build with hyper reading every request: what the HTTP/1.1
    // hot path saves, in the same rounds.
    let (.., rows) = resolve_and_authz(
        |route| format!("sidecar {route}, hyper only"),
        &support::shared::binary(),
        dir.path(),
        "http1 = \"hyper_only\"\n",
        &authz_script,
    );
    targets.extend(rows);
    if let Some(nginx) = &nginx {
        for answer in [NginxAnswer::Return(&body), NginxAnswer::StaticFile] {
            let addr = support::shared::free_addr();
            targets.push(Target::new(
                answer.name(),
                format!("http://{addr}"),
                Some(start_nginx(nginx, dir.path(), addr, answer)),
            ));
            support::wait_listening(addr);
        }
    }
    for threads in [1, 2] {
        let load = Load {
            threads,
            connections: CONNECTIONS,
            secs,
        };
        let results = support::alternate(&targets, rounds, load, &script);
        let title = format!("static snapshot, wrk -t{threads} -c{CONNECTIONS}");
        support::print_table(&title, "floor", &results);
        if nginx.is_some() {
            support::print_table(&title, "nginx (return 200)", &results);
        }
    }
    protocols(
        dir.path(),
        (sidecar_addr, sidecar_pid),
        floor_addr,
        targets[1].pid,
        baseline,
        rounds,
        secs,
    );
    // Keep the floor for the churn comparison.
    let floor = targets.remove(1);
    drop(targets);

    // Churn: watch mode while 1% of projects change every 100 ms.
    let per_second = (PROJECTS / 100 * 10).to_string();
    let (sim, sim_url) =
        support::start_simulator(&["--generate", &PROJECTS.to_string(), "--mutate", &per_second]);
    let churn_addr = support::shared::free_addr();
    let churn_sidecar = start_sidecar(dir.path(), churn_addr, Some(&sim_url));
    support::wait_ok(
        churn_addr,
        "/v1/resolve?project=proj-000001",
        Duration::from_secs(60),
    );
    let churn_targets = vec![
        Target::new(
            "sidecar (churn)",
            format!("http://{churn_addr}"),
            Some(churn_sidecar),
        ),
        floor,
    ];
    let load = Load {
        threads: 2,
        connections: CONNECTIONS,
        secs,
    };
    let results = support::alternate(&churn_targets, rounds, load, &script);
    support::print_table(
        "churn: 1% of projects republished every 100 ms (watch mode), wrk -t2",
        "floor",
        &results,
    );
    drop(churn_targets);
    drop(Target::new("simulator", sim_url, Some(sim)));
}

fn typical_answer(snapshot: &[u8]) -> Vec<u8> {
    let (store, mut writer) = Store::new(0.5);
    let body = parse_snapshot(snapshot).unwrap();
    let update = Update::new(Origin::Snapshot, Contents::Snapshot(body));
    writer.apply(update, std::time::SystemTime::now()).unwrap();
    store
        .resolve_with(&generate::project_id(42), Some("staging"), false, |a| {
            a.body()
        })
        .unwrap()
}

/// One generator (h2load) for HTTP/1.1 and HTTP/2, over TCP and the Unix
/// socket, and for gRPC `Check`: CPU per request side by side (with the
/// baseline build's HTTP/2 and `Check` rows when there is one).
fn protocols(
    dir: &Path,
    (sidecar, sidecar_pid): (SocketAddr, u32),
    floor: SocketAddr,
    floor_pid: Option<u32>,
    baseline: Option<(SocketAddr, u32)>,
    rounds: usize,
    secs: u64,
) {
    if support::which("h2load").is_none() {
        eprintln!(
            "h2load not found: the protocol table is skipped (apt-get install nghttp2-client)"
        );
        return;
    }
    let uris = dir.join("uris.txt");
    std::fs::write(&uris, support::resolve_uris(PROJECTS, 10_000)).unwrap();
    let fixed = dir.join("fixed.txt");
    std::fs::write(
        &fixed,
        "http://localhost/v1/resolve?project=proj-000042&environment=staging\n",
    )
    .unwrap();
    let check = dir.join("check.txt");
    std::fs::write(
        &check,
        format!(
            "http://localhost{}\n",
            env_sidecar::server::ext_authz::CHECK_PATH
        ),
    )
    .unwrap();
    let body = dir.join("check.bin");
    std::fs::write(&body, support::grpc_check_body()).unwrap();
    let socket = data_socket(dir, sidecar);
    let tcp = format!("http://{sidecar}");
    let unix = format!("unix:{}", socket.display());
    let load = |base: &str, http1: bool, extra: &[&str]| support::H2Load {
        threads: 1,
        clients: if http1 { 32 } else { 4 },
        streams: if http1 { 1 } else { 8 },
        secs,
        http1,
        base: base.to_owned(),
        extra: extra.iter().map(|s| s.to_string()).collect(),
        rps_per_client: None,
    };
    let grpc = [
        "-H",
        "content-type: application/grpc",
        "-H",
        "te: trailers",
        "-d",
        body.to_str().unwrap(),
    ];
    let mut rows: Vec<(&str, support::H2Load, &Path, Option<u32>)> = vec![
        (
            "sidecar, TCP, HTTP/1.1",
            load(&tcp, true, &[]),
            &uris,
            Some(sidecar_pid),
        ),
        (
            "floor, TCP, HTTP/1.1",
            load(&format!("http://{floor}"), true, &[]),
            &uris,
            floor_pid,
        ),
        (
            "sidecar, TCP, HTTP/2 (4 conns x 8 streams)",
            load(&tcp, false, &[]),
            &uris,
            Some(sidecar_pid),
        ),
        (
            "sidecar, Unix socket, HTTP/1.1",
            load(&unix, true, &[]),
            &uris,
            Some(sidecar_pid),
        ),
        (
            "sidecar, Unix socket, HTTP/2",
            load(&unix, false, &[]),
            &uris,
            Some(sidecar_pid),
        ),
        (
            "sidecar, HTTP/2, one project",
            load(&tcp, false, &[]),
            &fixed,
            Some(sidecar_pid),
        ),
        (
            "sidecar, gRPC Check, one project",
            load(&tcp, false, &grpc),
            &check,
            Some(sidecar_pid),
        ),
    ];
    // The same Check against a sidecar whose writer renders the struct.
    let prerendered_addr = support::shared::free_addr();
    let mut prerendered = start_sidecar_from(
        &support::shared::binary(),
        dir,
        prerendered_addr,
        None,
        "grpc_pointers_struct = \"prerendered\"\n",
    );
    support::wait_ok(
        prerendered_addr,
        "/v1/resolve?project=proj-000001",
        Duration::from_secs(60),
    );
    let prerendered_base = format!("http://{prerendered_addr}");
    rows.push((
        "sidecar, gRPC Check, prerendered struct",
        load(&prerendered_base, false, &grpc),
        &check,
        Some(prerendered.id()),
    ));
    if let Some((addr, pid)) = baseline {
        let base = format!("http://{addr}");
        rows.push((
            "baseline, HTTP/2, one project",
            load(&base, false, &[]),
            &fixed,
            Some(pid),
        ));
        rows.push((
            "baseline, gRPC Check, one project",
            load(&base, false, &grpc),
            &check,
            Some(pid),
        ));
    }
    let mut results: Vec<(String, Vec<support::Run>)> = rows
        .iter()
        .map(|(n, ..)| (n.to_string(), Vec::new()))
        .collect();
    for round in 0..rounds {
        for (i, (name, load, uris, pid)) in rows.iter().enumerate() {
            let run = support::h2load(load, uris, *pid);
            eprintln!(
                "round {}: {name:>44}: {:>9.0} req/s  p99 {:>8.1?}  cpu/req {:>8.1?}",
                round + 1,
                run.rps,
                run.p99,
                run.cpu_per_request.unwrap_or_default()
            );
            results[i].1.push(run);
        }
    }
    support::stop(&mut prerendered);
    support::print_table(
        "protocols and transports, one generator (h2load -t1, 32 HTTP/1.1 connections or 4 x 8 HTTP/2 streams)",
        "sidecar, TCP, HTTP/1.1",
        &results,
    );

    // The tail at the same offered load: a fixed rate per connection, below
    // what either server can answer, sidecar and floor alternating.
    for per_client in [500, 1500] {
        let rate = |base: String| support::H2Load {
            rps_per_client: Some(per_client),
            ..load(&base, true, &[])
        };
        let total = per_client * 32 / 1000;
        let rows = [
            (
                format!("floor, {total}k req/s"),
                rate(format!("http://{floor}")),
                floor_pid,
            ),
            (
                format!("sidecar, {total}k req/s"),
                rate(tcp.clone()),
                Some(sidecar_pid),
            ),
        ];
        let mut results: Vec<(String, Vec<support::Run>)> =
            rows.iter().map(|(n, ..)| (n.clone(), Vec::new())).collect();
        for round in 0..rounds {
            for (i, (name, load, pid)) in rows.iter().enumerate() {
                let run = support::h2load(load, &uris, *pid);
                eprintln!(
                    "round {}: {name:>44}: {:>9.0} req/s  p99 {:>8.1?}",
                    round + 1,
                    run.rps,
                    run.p99
                );
                results[i].1.push(run);
            }
        }
        support::print_table(
            &format!("the tail at a fixed offered load: {total}k req/s over 32 HTTP/1.1 connections (h2load --rps {per_client} per connection)"),
            "floor",
            &results,
        );
    }
}

/// A sidecar of the build at `binary` with `server` lines, started and
/// ready, as two rows named by `name` from the route: resolve (charged
/// the process) and forward-auth (`authz_script` against the same
/// process).
fn resolve_and_authz(
    name: impl Fn(&str) -> String,
    binary: &Path,
    dir: &Path,
    server: &str,
    authz_script: &Path,
) -> (SocketAddr, u32, [Target; 2]) {
    let addr = support::shared::free_addr();
    let child = start_sidecar_from(binary, dir, addr, None, server);
    support::wait_ok(
        addr,
        "/v1/resolve?project=proj-000001",
        Duration::from_secs(60),
    );
    let pid = child.id();
    let url = format!("http://{addr}");
    let rows = [
        Target::new(&name("/v1/resolve"), url.clone(), Some(child)),
        Target::alias(&name("/v1/authz"), url, Some(pid), authz_script),
    ];
    (addr, pid, rows)
}

fn start_sidecar(dir: &Path, addr: SocketAddr, control_plane: Option<&str>) -> Child {
    start_sidecar_from(&support::shared::binary(), dir, addr, control_plane, "")
}

/// [`start_sidecar`] running the build at `binary`, with `server` lines
/// added to its `[server]` section.
fn start_sidecar_from(
    binary: &Path,
    dir: &Path,
    addr: SocketAddr,
    control_plane: Option<&str>,
    server: &str,
) -> Child {
    let source = match control_plane {
        Some(url) => format!("kind = \"http\"\nurl = \"{url}\"\n"),
        None => format!(
            "kind = \"file\"\npath = \"{}\"\n",
            dir.join("snapshot.json").display()
        ),
    };
    let admin = support::shared::free_addr();
    let socket = data_socket(dir, addr);
    let config = format!(
        "[server]\nlisten = \"{addr}\"\nunix_socket = \"{}\"\n{server}[admin]\nlisten = \"{admin}\"\n[source]\n{source}[cache]\npath = \"\"\n",
        socket.display()
    );
    support::start_sidecar_from(binary, dir, &format!("sidecar-{}", addr.port()), &config)
}

/// The Unix socket of the sidecar listening on `addr`.
fn data_socket(dir: &Path, addr: SocketAddr) -> std::path::PathBuf {
    dir.join(format!("data-{}.sock", addr.port()))
}

/// How nginx answers every request with the typical answer's bytes.
#[derive(Clone, Copy)]
enum NginxAnswer<'a> {
    /// `return 200 '<body>'`: from its configuration, nothing read per
    /// request (the cheapest answer nginx gives).
    Return(&'a [u8]),
    /// `body.json` from the directory, opened per request.
    StaticFile,
}

impl NginxAnswer<'_> {
    fn name(self) -> &'static str {
        match self {
            NginxAnswer::Return(_) => "nginx (return 200)",
            NginxAnswer::StaticFile => "nginx (static)",
        }
    }

    /// The `location /` block's directives.
    fn directives(self, dir: &Path) -> String {
        match self {
            NginxAnswer::Return(body) => {
                let text = String::from_utf8_lossy(body);
                assert!(!text.contains('$'), "nginx would read `$` as a variable");
                let quoted = text.replace('\\', "\\\\").replace('\'', "\\'");
                format!("default_type application/json; return 200 '{quoted}';")
            }
            NginxAnswer::StaticFile => format!(
                "default_type application/json; root {}; try_files /body.json =404;",
                dir.display()
            ),
        }
    }
}

fn start_nginx(nginx: &Path, dir: &Path, addr: SocketAddr, answer: NginxAnswer) -> Child {
    let prefix = dir.join(format!("nginx-{}", addr.port()));
    std::fs::create_dir_all(prefix.join("logs")).unwrap();
    let conf = prefix.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "worker_processes 1;\ndaemon off;\npid {p}/nginx.pid;\nerror_log {p}/logs/error.log;\nevents {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {p}; proxy_temp_path {p}; fastcgi_temp_path {p}; uwsgi_temp_path {p}; scgi_temp_path {p};\n\
             server {{ listen {addr}; keepalive_requests 1000000;\n    location / {{ {a} }} }}\n}}\n",
            p = prefix.display(),
            a = answer.directives(dir)
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
