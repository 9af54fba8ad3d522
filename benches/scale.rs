//! A large tenant base end to end: N generated projects (default
//! 100 000: 4 environments and 7 pointers each, as `sim::generate` makes
//! them), published to a real `redis-server` with `env-sidecar publish`,
//! unsigned and signed, then one sidecar (the real binary) started on it
//! cold and again from its own cache. Every row is printed beside its
//! goal:
//!
//! * `publish` (with `--sign-key` when signed): wall time and whether it
//!   succeeded;
//! * cold start (no cache) and restart from the cache: process start to
//!   `/readyz` 200, and the sidecar's CPU meanwhile;
//! * RSS once ready, against the unsigned snapshot JSON's size, and the
//!   cold start's peak;
//! * a forced full reload of all N, unchanged (`POST /admin/refresh`):
//!   its time and CPU, and its peak RSS against the steady RSS (`VmHWM`
//!   reset first);
//! * Redis per cold start: its CPU, and the longest command in its slow
//!   log (threshold 0: every command is logged);
//! * resolve at N against 10 000 projects (file source, same build),
//!   alternating `wrk` rounds: server CPU per resolve and p99 (needs
//!   `wrk`; skipped without it).
//!
//! Run: `cargo bench --bench scale` (`-- --projects N`, `-- --only
//! unsigned|signed`, `-- --no-resolve`, `-- --rounds R`). 1 000 000
//! projects need about 4 GiB of memory per sidecar and several minutes.

#[path = "support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use env_sidecar::model::keys;
use env_sidecar::sim::generate;
use support::redis::{redis_command, start_redis};
use support::shared::{free_addr, sidecar_command};
use support::{
    alternate, cpu_time, http_request, lua_script, medians, mib, proc_status_bytes, reset_peak_rss,
    stop, wait_ready, Load, Target,
};

/// How long any one start may take before the bench gives up.
const START_LIMIT: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Unsigned,
    Signed,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Unsigned => "unsigned",
            Mode::Signed => "signed",
        }
    }
}

/// One mode's figures.
#[derive(Debug, Default)]
struct Figures {
    publish: Option<Duration>,
    publish_error: Option<String>,
    cold_ready: Duration,
    cold_cpu: Duration,
    ready_rss: u64,
    /// The cold start's peak RSS (`VmHWM` at ready).
    cold_peak: u64,
    steady_rss: u64,
    reload_peak: u64,
    /// How long the forced full reload took to apply, and the sidecar's
    /// CPU meanwhile.
    reload_time: Duration,
    reload_cpu: Duration,
    restart_ready: Duration,
    restart_cpu: Duration,
    redis_cpu_cold: Duration,
    redis_longest: Duration,
    /// `MEMORY USAGE` of the restarted node's report, and its fields.
    report_bytes: u64,
    report_fields: u64,
}

struct Args {
    projects: usize,
    modes: Vec<Mode>,
    resolve: bool,
    rounds: usize,
}

fn args() -> Args {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let modes = match value("--only").as_deref() {
        Some("unsigned") => vec![Mode::Unsigned],
        Some("signed") => vec![Mode::Signed],
        _ => vec![Mode::Unsigned, Mode::Signed],
    };
    Args {
        projects: value("--projects")
            .and_then(|v| v.parse().ok())
            .unwrap_or(100_000),
        modes,
        resolve: !args.iter().any(|a| a == "--no-resolve"),
        rounds: value("--rounds").and_then(|v| v.parse().ok()).unwrap_or(3),
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let args = args();
    let dir = tempfile::tempdir().expect("tempdir");
    let n = args.projects;
    let json = generate::snapshot_json(n, 1);
    let snapshot = dir.path().join("snapshot.json");
    std::fs::write(&snapshot, &json).expect("the snapshot is written");
    let (private, public) = keys::generate(Some("scale")).expect("a key");
    let private_file = dir.path().join("scale.key");
    let public_file = dir.path().join("scale.pub");
    std::fs::write(&private_file, private).unwrap();
    std::fs::write(&public_file, public.to_pem()).unwrap();
    eprintln!(
        "{n} projects, snapshot JSON {:.1} MiB",
        mib(json.len() as u64)
    );

    let mut results = Vec::new();
    for &mode in &args.modes {
        let signed = (mode == Mode::Signed).then_some((&private_file, &public_file));
        results.push((mode, run_mode(dir.path(), &snapshot, n, signed)));
    }
    print_figures(n, json.len() as u64, &results);
    if args.resolve {
        resolve_at_scale(dir.path(), n, args.rounds);
    }
}

/// Publishes `snapshot` to a fresh Redis and measures one sidecar on it.
fn run_mode(
    dir: &Path,
    snapshot: &Path,
    n: usize,
    signed: Option<(&PathBuf, &PathBuf)>,
) -> Figures {
    let mode = if signed.is_some() {
        "signed"
    } else {
        "unsigned"
    };
    let (_redis, url) = start_redis(dir);
    let mut figures = Figures::default();

    let mut publish = sidecar_command();
    publish.args(["publish", "--redis", &url]);
    if let Some((private, _)) = signed {
        publish.arg("--sign-key").arg(private);
    }
    let started = Instant::now();
    let out = publish
        .arg(snapshot)
        .stdin(Stdio::null())
        .output()
        .expect("publish runs");
    if out.status.success() {
        figures.publish = Some(started.elapsed());
    } else {
        let text = String::from_utf8_lossy(&out.stdout);
        figures.publish_error = Some(
            text.lines()
                .last()
                .unwrap_or("no output")
                .chars()
                .take(120)
                .collect(),
        );
        eprintln!("{mode}: publish failed: {text}");
        return figures;
    }
    eprintln!("{mode}: published in {:.1?}", started.elapsed());

    let cache = dir.join(format!("lkg-{mode}.json"));
    let _ = std::fs::remove_file(&cache);
    let trust = match signed {
        Some((_, public)) => format!(
            "[trust]\nkeys = [\"{}\"]\nrequire_signatures = true\n",
            public.display()
        ),
        None => String::new(),
    };
    // Only the restarted node reports (as `scale-<mode>`): the cold start
    // measures the load alone.
    let node = format!("scale-{mode}");
    let reporting = std::cell::Cell::new(false);
    let config = |data: SocketAddr, admin: SocketAddr| {
        format!(
            "[server]\nlisten = \"{data}\"\n[admin]\nlisten = \"{admin}\"\n\
             [node]\nid = \"{node}\"\n\
             [source]\nkind = \"redis\"\nurl = \"{url}\"\n\
             [cache]\npath = \"{}\"\n[report]\nenabled = {}\n{trust}",
            cache.display(),
            reporting.get()
        )
    };

    // Cold: nothing cached. Every command Redis runs goes to its slow log.
    redis_command(&url, "CONFIG SET slowlog-log-slower-than 0");
    redis_command(&url, "CONFIG SET slowlog-max-len 100000");
    redis_command(&url, "SLOWLOG RESET");
    let redis_cpu = redis_cpu(&url);
    let (mut sidecar, _, admin) = start(dir, &format!("{mode}-cold"), &config);
    figures.cold_ready = wait_ready(admin, START_LIMIT);
    figures.cold_cpu = cpu_time(sidecar.id()).unwrap_or_default();
    figures.ready_rss = proc_status_bytes(sidecar.id(), "VmRSS");
    figures.cold_peak = proc_status_bytes(sidecar.id(), "VmHWM");
    figures.redis_cpu_cold = redis_cpu_since(&url, redis_cpu);
    figures.redis_longest = longest_command(&url);
    redis_command(&url, "CONFIG SET slowlog-log-slower-than 10000");
    eprintln!(
        "{mode}: cold start ready in {:.2?} ({:.2?} CPU)",
        figures.cold_ready, figures.cold_cpu
    );

    // The cache written, the process settled: the steady RSS; then the
    // peak of a forced full reload of everything.
    let deadline = Instant::now() + START_LIMIT;
    while !cache.exists() {
        assert!(Instant::now() < deadline, "the cache was never written");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_secs(2));
    figures.steady_rss = proc_status_bytes(sidecar.id(), "VmRSS");
    reset_peak_rss(sidecar.id());
    let (started, cpu) = (Instant::now(), cpu_time(sidecar.id()).unwrap_or_default());
    let reload = http_request(admin, "POST", "/admin/refresh");
    figures.reload_time = started.elapsed();
    figures.reload_cpu = cpu_time(sidecar.id()).unwrap_or_default() - cpu;
    assert!(
        reload.as_ref().is_some_and(|(status, _)| *status == 200),
        "the full reload failed: {reload:?}"
    );
    figures.reload_peak = proc_status_bytes(sidecar.id(), "VmHWM");
    stop(&mut sidecar);

    // Restart from the cache it wrote, reporting what it serves.
    reporting.set(true);
    let (mut sidecar, _, admin) = start(dir, &format!("{mode}-warm"), &config);
    figures.restart_ready = wait_ready(admin, START_LIMIT);
    figures.restart_cpu = cpu_time(sidecar.id()).unwrap_or_default();
    (figures.report_bytes, figures.report_fields) = report_size(&url, &node, n);
    stop(&mut sidecar);
    eprintln!(
        "{mode}: restart from the cache ready in {:.2?}",
        figures.restart_ready
    );
    figures
}

/// `MEMORY USAGE` and `HLEN` of node `node`'s report once it names all
/// `projects`.
fn report_size(url: &str, node: &str, projects: usize) -> (u64, u64) {
    let key = format!("{{env-sidecar}}:node:{node}");
    let deadline = Instant::now() + START_LIMIT;
    let whole = format!("\"projects\":{projects},");
    while !redis_command(url, &format!("HGET {key} report")).contains(&whole) {
        assert!(Instant::now() < deadline, "the node never reported");
        std::thread::sleep(Duration::from_millis(20));
    }
    let number = |command: String| {
        let reply = redis_command(url, &command);
        reply.trim().trim_start_matches(':').parse().unwrap_or(0)
    };
    (
        number(format!("MEMORY USAGE {key}")),
        number(format!("HLEN {key}")),
    )
}

/// The sidecar over `config(data, admin)` on fresh ports.
fn start(
    dir: &Path,
    name: &str,
    config: &dyn Fn(SocketAddr, SocketAddr) -> String,
) -> (Child, SocketAddr, SocketAddr) {
    let (data, admin) = (free_addr(), free_addr());
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config(data, admin)).unwrap();
    let child = sidecar_command()
        .arg("--config")
        .arg(&path)
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the sidecar starts");
    (child, data, admin)
}

/// Redis' own CPU so far (`used_cpu_sys` + `used_cpu_user`, INFO gives
/// them in seconds with decimals).
fn redis_cpu(url: &str) -> f64 {
    let info = redis_command(url, "INFO cpu");
    ["used_cpu_sys:", "used_cpu_user:"]
        .iter()
        .filter_map(|f| {
            info.lines()
                .find_map(|l| l.strip_prefix(f))
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .sum()
}

fn redis_cpu_since(url: &str, before: f64) -> Duration {
    Duration::from_secs_f64((redis_cpu(url) - before).max(0.0))
}

/// The longest command in Redis' slow log, from the raw RESP2 reply:
/// each entry is an array whose first three elements are integers (id,
/// timestamp, duration in µs).
fn longest_command(url: &str) -> Duration {
    let reply = redis_command(url, "SLOWLOG GET 100000");
    let mut longest = 0u64;
    let mut lines = reply.lines().peekable();
    while let Some(line) = lines.next() {
        if line.starts_with('*') && lines.peek().is_some_and(|l| l.starts_with(':')) {
            let ints: Vec<u64> = lines
                .by_ref()
                .take(3)
                .filter_map(|l| l.strip_prefix(':')?.parse().ok())
                .collect();
            if let [_, _, micros] = ints[..] {
                longest = longest.max(micros);
            }
        }
    }
    Duration::from_micros(longest)
}

fn print_figures(n: usize, json: u64, results: &[(Mode, Figures)]) {
    println!(
        "\n{n} projects (snapshot JSON {:.1} MiB), one run",
        mib(json)
    );
    let names: Vec<&str> = results.iter().map(|(m, _)| m.name()).collect();
    println!("| measure | goal | {} |", names.join(" | "));
    println!("|---|---|{}", "---|".repeat(names.len()));
    let row = |measure: &str, goal: &str, cell: &dyn Fn(&Figures) -> String| {
        let cells: Vec<String> = results.iter().map(|(_, f)| cell(f)).collect();
        println!("| {measure} | {goal} | {} |", cells.join(" | "));
    };
    let secs = |d: Duration| format!("{:.2} s", d.as_secs_f64());
    row(
        "publish",
        "succeeds",
        &|f| match (&f.publish, &f.publish_error) {
            (Some(d), _) => secs(*d),
            (None, Some(e)) => format!("fails: {e}"),
            _ => "-".into(),
        },
    );
    row(
        "cold start → ready (sidecar CPU)",
        "≤ 1.5 s unsigned, ≤ 2.0 s signed",
        &|f| format!("{} ({})", secs(f.cold_ready), secs(f.cold_cpu)),
    );
    row("restart from cache → ready (CPU)", "≤ 0.3 s", &|f| {
        format!("{} ({})", secs(f.restart_ready), secs(f.restart_cpu))
    });
    row("RSS once ready / JSON", "≤ 1.5× (signed +10 %)", &|f| {
        format!(
            "{:.0} MiB, {:.2}×",
            mib(f.steady_rss),
            f.steady_rss as f64 / json as f64
        )
    });
    row("RSS at /readyz; the cold start's peak", "-", &|f| {
        format!("{:.0} MiB; {:.0} MiB", mib(f.ready_rss), mib(f.cold_peak))
    });
    row("forced full reload, unchanged (sidecar CPU)", "-", &|f| {
        format!(
            "{:.2} s ({:.2} s)",
            f.reload_time.as_secs_f64(),
            f.reload_cpu.as_secs_f64()
        )
    });
    row("peak RSS, full reload / steady", "≤ 1.3×", &|f| {
        format!(
            "{:.0} MiB, {:.2}×",
            mib(f.reload_peak),
            f.reload_peak as f64 / f.steady_rss.max(1) as f64
        )
    });
    row("Redis CPU per cold start", "measured", &|f| {
        format!("{:.0} ms", f.redis_cpu_cold.as_secs_f64() * 1e3)
    });
    row("longest Redis command of a cold start", "≤ 5 ms", &|f| {
        format!("{:.2} ms", f.redis_longest.as_secs_f64() * 1e3)
    });
    row("node report in Redis, no exception", "≤ 2 KB", &|f| {
        format!("{} bytes, {} field(s)", f.report_bytes, f.report_fields)
    });
}

/// Resolve against N projects and against 10 000, alternating wrk rounds.
fn resolve_at_scale(dir: &Path, n: usize, rounds: usize) {
    if support::which("wrk").is_none() {
        println!("\nresolve: skipped (wrk is not installed: apt-get install wrk)");
        return;
    }
    let sizes = [10_000.min(n), n];
    let mut targets = Vec::new();
    for size in sizes {
        let path = dir.join(format!("resolve-{size}.json"));
        std::fs::write(&path, generate::snapshot_json(size, 1)).unwrap();
        let config = move |data: SocketAddr, admin: SocketAddr| {
            format!(
                "[server]\nlisten = \"{data}\"\n[admin]\nlisten = \"{admin}\"\n\
                 [source]\npath = \"{}\"\n[cache]\npath = \"\"\n",
                path.display()
            )
        };
        let (child, data, admin) = start(dir, &format!("resolve-{size}"), &config);
        wait_ready(admin, START_LIMIT);
        let script = dir.join(format!("resolve-{size}.lua"));
        // Every request names one of the 10 000 first projects, so both
        // sidecars answer the same requests.
        std::fs::write(&script, lua_script(sizes[0], "/v1/resolve", false)).unwrap();
        let mut target = Target::new(
            &format!("{size} projects"),
            format!("http://{data}"),
            Some(child),
        );
        target.script = Some(script);
        targets.push(target);
    }
    let load = Load {
        threads: 1,
        connections: 16,
        secs: 5,
    };
    let unused = dir.join("unused.lua");
    let results = alternate(&targets, rounds, load, &unused);
    println!("\nresolve, {rounds} alternating rounds of wrk -t1 -c16 -d5s (medians)");
    println!("| projects | goal | CPU per resolve | p99 | req/s |");
    println!("|---|---|---|---|---|");
    for (name, runs) in &results {
        let m = medians(runs);
        println!(
            "| {name} | within noise of 10 000 | {:.2} µs | {:.2?} | {:.0} |",
            m.cpu.unwrap_or_default().as_secs_f64() * 1e6,
            m.p99,
            m.rps
        );
    }
}
