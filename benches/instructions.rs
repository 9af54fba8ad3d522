//! User-space instructions per request, counted by callgrind: the same on a
//! busy machine, where CPU time per request moves by ±5 % between runs.
//! The sidecar (10 000 generated projects, file source) and the floor (a
//! bare hyper server answering one real resolve answer, the `http_load`
//! floor) each run under `valgrind --tool=callgrind`; after a warm-up of
//! 2 000 requests the counters are zeroed (`callgrind_control -z`),
//! `h2load --h1 -c 8` sends 20 000 keep-alive resolves for random
//! projects and slugs (a fixed list, the same for every run), and the
//! counters are dumped (`callgrind_control -d`). The sidecar is then
//! counted the same way over HTTP/2 (4 connections × 8 streams, one
//! project) for a resolve and for an Envoy ext_authz gRPC `Check` of that
//! project, the pair behind the goal "CPU per `Check` ≤ 1.10 × CPU per
//! resolve", and over HTTP/1.1 for a forward-auth `GET /v1/authz` of
//! that project. A second sidecar with `server.http1 = "hyper_only"` is
//! counted like the first for HTTP/1.1 resolves: what the hot path saves.
//! Last, the functions that cost the most (self cost, generic parameters
//! folded) in the sidecar's, the hyper-only sidecar's and the floor's
//! HTTP/1.1 dumps, and in the sidecar's `Check` dump.
//!
//! Run: `cargo bench --bench instructions`. Needs `valgrind` and `h2load`
//! (Debian `valgrind`, `nghttp2-client`); it installs nothing and says
//! what is missing. `ENV_SIDECAR_BENCH_BIN` measures another build of the
//! sidecar (an older commit) for a before/after.

#[path = "support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use env_sidecar::sim::generate;
use support::callgrind;

const PROJECTS: usize = 10_000;
const WARM_UP: u32 = 2_000;
const REQUESTS: u32 = 20_000;

fn main() {
    if support::serve_floor_if_asked() {
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let missing: Vec<_> = ["valgrind", "callgrind_control", "h2load"]
        .into_iter()
        .filter(|tool| support::which(tool).is_none())
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "instructions needs {} (apt-get install valgrind nghttp2-client); nothing was run",
            missing.join(", ")
        );
        std::process::exit(2);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("snapshot.json"),
        generate::snapshot_json(PROJECTS, 1),
    )
    .unwrap();

    let (addr, sidecar) = start_sidecar(dir.path(), "sidecar", "");
    let (_, body) = support::http_get(addr, "/v1/resolve?project=proj-000001").unwrap();
    // 2 000 random projects and slugs (exact, fallback and unknown ones),
    // the same list on every run; `-B` says where to send them.
    let urls = dir.path().join("urls.txt");
    std::fs::write(&urls, support::resolve_uris(PROJECTS, 2_000)).unwrap();
    let base = format!("http://{addr}");
    let check = dir.path().join("check.bin");
    std::fs::write(&check, support::grpc_check_body()).unwrap();
    let h2_resolve = format!("http://{addr}/v1/resolve?project=proj-000042&environment=staging");
    let h2_check = format!(
        "http://{addr}{}",
        env_sidecar::server::ext_authz::CHECK_PATH
    );
    let authz = format!("http://{addr}/v1/authz");
    let check_path = check.to_str().unwrap();
    let check_load = |url: &str| -> Vec<String> {
        [
            "-c",
            "4",
            "-m",
            "8",
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
            "-d",
            check_path,
            url,
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let checks = check_load(&h2_check);
    let checks = as_args(&checks);
    let counts = measure(
        dir.path(),
        "sidecar",
        sidecar,
        &[
            &as_args(&random_resolves(&base, &urls)),
            &["-c", "4", "-m", "8", &h2_resolve],
            &checks,
            &[
                "--h1",
                "-c",
                "8",
                "-H",
                "x-project-id: proj-000042",
                "-H",
                "x-environment: staging",
                &authz,
            ],
        ],
    );
    let (sidecar_per_request, h2_per_resolve, per_check, per_authz) =
        (counts[0], counts[1], counts[2], counts[3]);

    // The same build with hyper reading every request: what the HTTP/1.1
    // hot path saves.
    let (addr, hyper_only) = start_sidecar(dir.path(), "hyper-only", "http1 = \"hyper_only\"\n");
    let hyper_only_load = random_resolves(&format!("http://{addr}"), &urls);
    let hyper_only_per_request = measure(
        dir.path(),
        "hyper-only",
        hyper_only,
        &[&as_args(&hyper_only_load)],
    )[0];

    // The same Check against a sidecar whose writer renders the struct.
    let (addr, prerendered) = start_sidecar(
        dir.path(),
        "prerendered",
        "grpc_pointers_struct = \"prerendered\"\n",
    );
    let checks = check_load(&format!(
        "http://{addr}{}",
        env_sidecar::server::ext_authz::CHECK_PATH
    ));
    let checks = as_args(&checks);
    let per_prerendered_check = measure(dir.path(), "prerendered", prerendered, &[&checks])[0];

    let body_path = dir.path().join("floor-body.json");
    std::fs::write(&body_path, &body).unwrap();
    let floor_addr = support::shared::free_addr();
    let floor = callgrind::under_callgrind(
        dir.path(),
        "floor",
        Command::new(std::env::current_exe().unwrap())
            .arg("--serve-floor")
            .arg(floor_addr.to_string())
            .arg(&body_path),
    );
    support::wait_ok(floor_addr, "/", Duration::from_secs(60));
    let floor_load = random_resolves(&format!("http://{floor_addr}"), &urls);
    let floor_per_request = measure(dir.path(), "floor", floor, &[&as_args(&floor_load)])[0];

    println!(
        "user-space instructions per keep-alive resolve ({REQUESTS} requests, h2load --h1 -c 8, {PROJECTS} projects)"
    );
    println!("| target | instructions per request | ratio |");
    println!("|---|---|---|");
    println!(
        "| sidecar /v1/resolve | {sidecar_per_request:.0} | {:.2} |",
        sidecar_per_request / floor_per_request
    );
    println!(
        "| sidecar /v1/resolve, `server.http1 = \"hyper_only\"` | {hyper_only_per_request:.0} | {:.2} |",
        hyper_only_per_request / floor_per_request
    );
    println!(
        "| sidecar /v1/authz, one project (headers) | {per_authz:.0} | {:.2} |",
        per_authz / floor_per_request
    );
    println!("| floor (hyper) | {floor_per_request:.0} | 1.00 |");
    println!();
    println!("HTTP/2, 4 connections x 8 streams, one project ({REQUESTS} requests each)");
    println!("| call | instructions per request | ratio |");
    println!("|---|---|---|");
    println!("| resolve | {h2_per_resolve:.0} | 1.00 |");
    println!(
        "| gRPC Check | {per_check:.0} | {:.2} |",
        per_check / h2_per_resolve
    );
    println!(
        "| gRPC Check, `grpc_pointers_struct = \"prerendered\"` | {per_prerendered_check:.0} | {:.2} |",
        per_prerendered_check / h2_per_resolve
    );
    for (name, dump, what) in [
        ("sidecar", 1, "HTTP/1.1 resolve"),
        ("hyper-only", 1, "HTTP/1.1 resolve, hyper only"),
        ("floor", 1, "HTTP/1.1 resolve"),
        ("sidecar", 3, "gRPC Check"),
        ("prerendered", 1, "gRPC Check, prerendered struct"),
    ] {
        let dump = dir.path().join(format!("{name}.callgrind.{dump}"));
        let (total, top) = top_functions(&dump, 12);
        println!();
        println!("{name}, {what}: top functions by self cost");
        println!("| share | instructions per request | function |");
        println!("|---|---|---|");
        for (function, cost) in top {
            println!(
                "| {:.1} % | {:.0} | `{function}` |",
                cost as f64 * 100.0 / total as f64,
                cost as f64 / f64::from(REQUESTS)
            );
        }
    }
}

/// h2load's arguments for the HTTP/1.1 resolves every server is counted
/// on: 8 keep-alive connections to `base`, the URIs of `urls` in turn.
fn random_resolves(base: &str, urls: &Path) -> Vec<String> {
    ["--h1", "-c", "8", "-B", base, "-i", urls.to_str().unwrap()]
        .map(str::to_owned)
        .to_vec()
}

fn as_args(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// The `n` functions with the largest self cost in a callgrind dump, and
/// the dump's total. Names have their generic parameters removed, and the
/// costs of a function's monomorphic copies are added up.
fn top_functions(dump: &Path, n: usize) -> (u64, Vec<(String, u64)>) {
    let text = std::fs::read_to_string(dump).expect("a callgrind dump");
    let mut names: HashMap<String, String> = HashMap::new();
    let mut costs: HashMap<String, u64> = HashMap::new();
    let mut current = String::new();
    // The cost line after `calls=` is the call's inclusive cost: not self.
    let mut after_call = false;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("fn=") {
            current = compressed_name(rest, &mut names);
            after_call = false;
        } else if let Some(rest) = line.strip_prefix("cfn=") {
            compressed_name(rest, &mut names);
        } else if line.starts_with("calls=") {
            after_call = true;
        } else if line.starts_with(|c: char| c.is_ascii_digit() || "+-*".contains(c)) {
            if std::mem::take(&mut after_call) {
                continue;
            }
            let cost = line.split_whitespace().nth(1).and_then(|c| c.parse().ok());
            *costs.entry(without_generics(&current)).or_default() += cost.unwrap_or(0);
        }
    }
    let total = costs.values().sum();
    let mut top: Vec<(String, u64)> = costs.into_iter().collect();
    top.sort_by_key(|(_, cost)| std::cmp::Reverse(*cost));
    top.truncate(n);
    (total, top)
}

/// `(id) name` defines a name, `(id)` refers to one defined earlier.
fn compressed_name(field: &str, names: &mut HashMap<String, String>) -> String {
    match field.split_once(' ') {
        Some((id, name)) => {
            names.insert(id.to_owned(), name.to_owned());
            name.to_owned()
        }
        None => names
            .get(field)
            .cloned()
            .unwrap_or_else(|| field.to_owned()),
    }
}

/// `a::f<T>` as `a::f`, and `<A<T> as B<U>>::f` as `<A as B>::f`.
fn without_generics(name: &str) -> String {
    let keep = usize::from(name.starts_with('<'));
    let mut depth = 0usize;
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if c == '<' {
            depth += 1;
        }
        if depth <= keep {
            out.push(c);
        }
        if c == '>' {
            depth = depth.saturating_sub(1);
        }
    }
    out
}

/// The sidecar under callgrind over `dir`'s snapshot, with `server`
/// lines added to its `[server]` section; its data address, once it
/// answers.
fn start_sidecar(dir: &Path, name: &str, server: &str) -> (std::net::SocketAddr, Child) {
    let addr = support::shared::free_addr();
    let admin = support::shared::free_addr();
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"{addr}\"\n{server}[admin]\nlisten = \"{admin}\"\n[source]\nkind = \"file\"\npath = \"{}\"\n[cache]\npath = \"\"\n",
            dir.join("snapshot.json").display()
        ),
    )
    .unwrap();
    let child = callgrind::under_callgrind(
        dir,
        name,
        Command::new(support::shared::binary())
            .arg("--config")
            .arg(&config),
    );
    support::wait_ok(
        addr,
        "/v1/resolve?project=proj-000001",
        Duration::from_secs(120),
    );
    (addr, child)
}

/// For each load in turn: warms up, zeroes the counters, sends the
/// measured requests and dumps the counters; returns instructions per
/// request for each, and stops the process.
fn measure(dir: &Path, name: &str, mut child: Child, loads: &[&[&str]]) -> Vec<f64> {
    let mut counts = Vec::new();
    for (i, args) in loads.iter().enumerate() {
        h2load(args, WARM_UP);
        callgrind::control("-z", &child);
        h2load(args, REQUESTS);
        callgrind::control("-d", &child);
        let total = callgrind::dumped_total(dir, name, i + 1);
        counts.push(total as f64 / f64::from(REQUESTS));
    }
    let _ = child.kill();
    let _ = child.wait();
    counts
}

fn h2load(args: &[&str], requests: u32) {
    let out = Command::new("h2load")
        .args(["-n", &requests.to_string()])
        .args(args)
        .output()
        .expect("h2load runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("{requests} succeeded")),
        "h2load: not every request succeeded:\n{text}"
    );
}
