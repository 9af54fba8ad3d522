//! HTTP comparison: the sidecar against the floor (a bare hyper server
//! answering a fixed body of the same size as a resolve answer, in its own
//! process) and a peer (nginx serving that body as a static file, one
//! worker), under the same load, alternating rounds (sidecar, floor, nginx,
//! sidecar, ...) so machine drift falls on all alike; with one and two wrk
//! threads; then the churn variant (the sidecar in watch mode while the
//! simulator publishes 1% of projects every 100 ms). Every row has the
//! server's CPU per request (from `/proc/PID/stat`) beside throughput and
//! p99.
//!
//! Run: `cargo bench --bench http_load` (`-- --quick` for a short run).
//! Needs `wrk` (Debian `wrk`) and, for the nginx column, `nginx` (Debian
//! `nginx-light`); it installs nothing and says what is missing.

#[path = "support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use env_sidecar::model::wire::parse_snapshot;
use env_sidecar::sim::generate;
use env_sidecar::store::{ApplyOptions, Store, Update};
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
    let sidecar_addr = support::free_addr();
    let sidecar = start_sidecar(dir.path(), sidecar_addr, None);
    support::wait_ok(
        sidecar_addr,
        "/v1/resolve?project=proj-000001",
        Duration::from_secs(60),
    );
    let mut targets = vec![
        Target::new("sidecar", format!("http://{sidecar_addr}"), Some(sidecar)),
        Target::new("floor (hyper)", format!("http://{floor_addr}"), Some(floor)),
    ];
    if let Some(nginx) = &nginx {
        let addr = support::free_addr();
        targets.push(Target::new(
            "nginx (static)",
            format!("http://{addr}"),
            Some(start_nginx(nginx, dir.path(), addr)),
        ));
        support::wait_listening(addr);
    }
    for threads in [1, 2] {
        let load = Load {
            threads,
            connections: CONNECTIONS,
            secs,
        };
        let results = support::alternate(&targets, rounds, load, &script);
        support::print_table(
            &format!("static snapshot, wrk -t{threads} -c{CONNECTIONS}"),
            "floor",
            &results,
        );
    }
    // Keep the floor for the churn comparison.
    let floor = targets.remove(1);
    drop(targets);

    // Churn: watch mode while 1% of projects change every 100 ms.
    let per_second = (PROJECTS / 100 * 10).to_string();
    let (sim, sim_url) =
        support::start_simulator(&["--generate", &PROJECTS.to_string(), "--mutate", &per_second]);
    let churn_addr = support::free_addr();
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

fn start_sidecar(dir: &Path, addr: SocketAddr, control_plane: Option<&str>) -> Child {
    let source = match control_plane {
        Some(url) => format!("kind = \"http\"\nurl = \"{url}\"\n"),
        None => format!(
            "kind = \"file\"\npath = \"{}\"\n",
            dir.join("snapshot.json").display()
        ),
    };
    let admin = support::free_addr();
    let config = format!(
        "[server]\nlisten = \"{addr}\"\n[admin]\nlisten = \"{admin}\"\n[source]\n{source}[cache]\npath = \"\"\n"
    );
    support::start_sidecar(dir, &format!("sidecar-{}", addr.port()), &config)
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
