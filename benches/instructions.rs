//! User-space instructions per request, counted by callgrind: the same on a
//! busy machine, where CPU time per request moves by ±5 % between runs.
//! The sidecar (10 000 generated projects, file source) and the floor (a
//! bare hyper server answering one real resolve answer, the `http_load`
//! floor) each run under `valgrind --tool=callgrind`; after a warm-up of
//! 2 000 requests the counters are zeroed (`callgrind_control -z`),
//! `h2load --h1 -c 8` sends 20 000 keep-alive resolves for random
//! projects and slugs (a fixed list, the same for every run), and the
//! counters are dumped (`callgrind_control -d`).
//!
//! Run: `cargo bench --bench instructions`. Needs `valgrind` and `h2load`
//! (Debian `valgrind`, `nghttp2-client`); it installs nothing and says
//! what is missing. `ENV_SIDECAR_BENCH_BIN` measures another build of the
//! sidecar (an older commit) for a before/after.

#[path = "support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use env_sidecar::sim::generate;

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

    let addr = support::free_addr();
    let admin = support::free_addr();
    let config = dir.path().join("sidecar.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"{addr}\"\n[admin]\nlisten = \"{admin}\"\n[source]\nkind = \"file\"\npath = \"{}\"\n[cache]\npath = \"\"\n",
            dir.path().join("snapshot.json").display()
        ),
    )
    .unwrap();
    let bin = std::env::var_os("ENV_SIDECAR_BENCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_env-sidecar")));
    let sidecar = under_callgrind(
        dir.path(),
        "sidecar",
        Command::new(bin).arg("--config").arg(&config),
    );
    support::wait_ok(
        addr,
        "/v1/resolve?project=proj-000001",
        Duration::from_secs(120),
    );
    let (_, body) = support::http_get(addr, "/v1/resolve?project=proj-000001").unwrap();
    let sidecar_per_request = measure(dir.path(), "sidecar", sidecar, addr);

    let body_path = dir.path().join("floor-body.json");
    std::fs::write(&body_path, &body).unwrap();
    let floor_addr = support::free_addr();
    let floor = under_callgrind(
        dir.path(),
        "floor",
        Command::new(std::env::current_exe().unwrap())
            .arg("--serve-floor")
            .arg(floor_addr.to_string())
            .arg(&body_path),
    );
    support::wait_ok(floor_addr, "/", Duration::from_secs(60));
    let floor_per_request = measure(dir.path(), "floor", floor, floor_addr);

    println!(
        "user-space instructions per keep-alive resolve ({REQUESTS} requests, h2load --h1 -c 8, {PROJECTS} projects)"
    );
    println!("| target | instructions per request | ratio |");
    println!("|---|---|---|");
    println!(
        "| sidecar /v1/resolve | {sidecar_per_request:.0} | {:.2} |",
        sidecar_per_request / floor_per_request
    );
    println!("| floor (hyper) | {floor_per_request:.0} | 1.00 |");
}

fn under_callgrind(dir: &Path, name: &str, command: &mut Command) -> Child {
    let program = command.get_program().to_owned();
    let args: Vec<_> = command.get_args().map(|a| a.to_owned()).collect();
    Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!(
            "--callgrind-out-file={}",
            dir.join(format!("{name}.callgrind")).display()
        ))
        .arg(program)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("valgrind starts")
}

/// Warms up, zeroes the counters, sends the measured requests, dumps the
/// counters and returns instructions per request; stops the process.
fn measure(dir: &Path, name: &str, mut child: Child, addr: SocketAddr) -> f64 {
    let urls = dir.join("urls.txt");
    std::fs::write(&urls, url_list(addr)).unwrap();
    h2load(&urls, WARM_UP);
    callgrind_control("-z", &child);
    h2load(&urls, REQUESTS);
    callgrind_control("-d", &child);
    // The dump is written as `<name>.callgrind.1` once the process takes
    // the command; its `totals:` line is the last one written.
    let dump = dir.join(format!("{name}.callgrind.1"));
    let deadline = Instant::now() + Duration::from_secs(60);
    let total = loop {
        let text = std::fs::read_to_string(&dump).unwrap_or_default();
        if let Some(total) = text
            .lines()
            .find_map(|l| l.strip_prefix("totals: "))
            .and_then(|t| t.trim().parse::<u64>().ok())
        {
            break total;
        }
        assert!(Instant::now() < deadline, "{name}: no callgrind dump");
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    total as f64 / f64::from(REQUESTS)
}

fn h2load(urls: &Path, requests: u32) {
    let out = Command::new("h2load")
        .args(["--h1", "-c", "8", "-n", &requests.to_string(), "-i"])
        .arg(urls)
        .output()
        .expect("h2load runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("{requests} succeeded")),
        "h2load: not every request succeeded:\n{text}"
    );
}

fn callgrind_control(flag: &str, child: &Child) {
    let status = Command::new("callgrind_control")
        .arg(flag)
        .arg(child.id().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("callgrind_control runs");
    assert!(status.success(), "callgrind_control {flag} failed");
}

/// 2 000 resolves of random projects and slugs (exact, fallback and
/// unknown ones), the same list on every run (a fixed-seed LCG).
fn url_list(addr: SocketAddr) -> String {
    const SLUGS: [&str; 10] = [
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
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as usize
    };
    (0..2_000)
        .map(|_| {
            let project = next() % PROJECTS;
            let slug = SLUGS[next() % SLUGS.len()];
            format!("http://{addr}/v1/resolve?project=proj-{project:06}&environment={slug}\n")
        })
        .collect()
}
