//! A fleet on one machine: N real sidecar processes (100 by default)
//! following one source, first the control-plane simulator over HTTP in
//! watch mode, then Redis (`redis-server`, the simulator mirroring every
//! change into it). The simulator holds 1 000 generated projects and, once
//! the whole fleet is ready, changes 1% of them per second for a minute.
//!
//! Reported per source:
//! * publish → served delay across the fleet: p50, p99 and max, from the
//!   sum of every sidecar's `env_sidecar_propagation_delay_seconds`
//!   histogram over the churn (the difference of two scrapes; quantiles
//!   interpolated within a bucket as Prometheus does, max as the bound of
//!   the highest bucket reached);
//! * CPU of the source (simulator or `redis-server`) from its threads'
//!   `/proc/PID/task/TID/schedstat` (nanoseconds), idle with no followers, with a tenth of the fleet
//!   and with all of it, and under churn, per sidecar per second;
//! * the sidecars' own CPU per sidecar per second, idle and under churn;
//! * memory per sidecar (RSS and PSS, medians).
//!
//! Then the node reports (`fleet/reports.rs`): Redis CPU with reports off
//! and on under the same churn, report writes per second, publish →
//! `fleet wait` returns, and `fleet status` at the fleet's size and at
//! 10 000 synthetic nodes. Then following (`fleet/follow.rs`): Redis CPU
//! of the followers against bare `XREAD BLOCK` clients, a writer that
//! never marks, `fleet wait` right after a node's SIGTERM.
//!
//! Run: `cargo bench --bench fleet` (about twelve minutes).
//! Flags after `--`: `--sidecars N`, `--projects N`, `--churn-seconds S`,
//! `--idle-seconds S`, `--only http|redis|reports|synthetic|follow` (synthetic:
//! the 10 000 synthetic reports alone, with no sidecar, so `--projects
//! 100000` fits), `--long-poll-wait S`
//! (the sidecars' `source.long_poll_wait`), `--rounds N` (alternating
//! rounds of `--only follow`, default 3), `--sign` (every document
//! signed by the simulator, every sidecar requiring signatures).

#[path = "fleet/follow.rs"]
mod follow;
#[path = "fleet/reports.rs"]
mod reports;
#[path = "support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::redis::{redis_command, redis_info, start_redis, Peer};
use support::{cpu_time, http_get};

const HISTOGRAM: &str = "env_sidecar_propagation_delay_seconds_bucket";
const SUM: &str = "env_sidecar_propagation_delay_seconds_sum";

#[derive(Debug, Clone)]
struct Args {
    sidecars: usize,
    projects: usize,
    churn: Duration,
    idle: Duration,
    sources: Vec<Source>,
    /// `source.long_poll_wait` of every sidecar (how often an idle
    /// follower renews its long poll or `XREAD BLOCK`); default 30 s.
    long_poll_wait: Option<u64>,
    /// The simulator signs, the sidecars require signatures.
    sign: bool,
    /// Alternating rounds of the follow bench (`fleet/follow.rs`).
    rounds: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Http,
    Redis,
    /// The node reports on Redis (`fleet/reports.rs`).
    Reports,
    /// What following costs Redis, and routine events (`fleet/follow.rs`).
    Follow,
    /// Only the 10 000 synthetic reports (no sidecars): `--projects` may
    /// then be 100 000.
    Synthetic,
}

impl Source {
    fn name(self) -> &'static str {
        match self {
            Source::Http => "HTTP watch (simulator)",
            Source::Redis => "Redis (redis-server)",
            Source::Reports => "node reports (Redis)",
            Source::Follow => "following (Redis)",
            Source::Synthetic => "synthetic node reports (Redis)",
        }
    }
}

impl Args {
    fn parse() -> Args {
        let mut args = Args {
            sidecars: 100,
            projects: 1_000,
            churn: Duration::from_secs(60),
            idle: Duration::from_secs(30),
            sources: vec![Source::Http, Source::Redis, Source::Reports, Source::Follow],
            long_poll_wait: None,
            sign: false,
            rounds: 3,
        };
        let argv: Vec<String> = std::env::args().skip(1).collect();
        let mut it = argv.iter();
        while let Some(flag) = it.next() {
            let mut value = || it.next().cloned().unwrap_or_default();
            match flag.as_str() {
                "--sidecars" => args.sidecars = value().parse().expect("--sidecars N"),
                "--projects" => args.projects = value().parse().expect("--projects N"),
                "--churn-seconds" => {
                    args.churn = Duration::from_secs(value().parse().expect("--churn-seconds S"))
                }
                "--idle-seconds" => {
                    args.idle = Duration::from_secs(value().parse().expect("--idle-seconds S"))
                }
                "--long-poll-wait" => {
                    args.long_poll_wait = Some(value().parse().expect("--long-poll-wait S"))
                }
                "--only" => {
                    args.sources = match value().as_str() {
                        "http" => vec![Source::Http],
                        "redis" => vec![Source::Redis],
                        "reports" => vec![Source::Reports],
                        "synthetic" => vec![Source::Synthetic],
                        "follow" => vec![Source::Follow],
                        other => {
                            panic!("--only http|redis|reports|synthetic|follow, not {other:?}")
                        }
                    }
                }
                "--sign" => args.sign = true,
                "--rounds" => args.rounds = value().parse().expect("--rounds N"),
                _ => {} // cargo bench passes `--bench`
            }
        }
        assert!(args.sidecars >= 1 && args.projects >= 100 && args.rounds >= 1);
        args
    }
}

/// One sidecar process and its addresses.
struct Member {
    child: Child,
    admin: SocketAddr,
    data: SocketAddr,
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A sidecar on ports the kernel picks (a free port chosen beforehand can
/// be taken by one of the fleet's own outgoing connections), found from
/// its `listening` log line.
fn start_member(dir: &Path, index: usize, source: &str, extra: &str) -> Member {
    start_member_of(&support::shared::binary(), dir, index, source, extra)
}

/// [`start_member`] running the build at `binary`.
fn start_member_of(binary: &Path, dir: &Path, index: usize, source: &str, extra: &str) -> Member {
    let config = dir.join(format!("member-{index}.toml"));
    let log = dir.join(format!("member-{index}.log"));
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [source]\n{source}[cache]\npath = \"\"\n[log]\nlevel = \"info\"\n\
             [node]\nid = \"member-{index}\"\n{extra}\n"
        ),
    )
    .unwrap();
    let mut child = support::shared::sidecar_command_for(binary)
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("sidecar starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let addr = |field: &str| {
            text.split(field)
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|a| a.parse().ok())
        };
        if let (Some(admin), Some(data)) = (addr("admin_addr="), addr("data_addr=")) {
            return Member { child, admin, data };
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("sidecar {index} exited ({status}):\n{text}");
        }
        assert!(
            Instant::now() < deadline,
            "sidecar {index} never listened:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_ready(members: &[Member]) {
    for m in members {
        support::wait_ok(m.admin, "/readyz", Duration::from_secs(120));
    }
}

/// A `redis-server` the simulator mirrors `args.projects` projects to,
/// ready to change 1 % of them a second from its first SIGUSR1: the
/// Redis, its URL, the simulator and that rate.
fn churning_redis(args: &Args, dir: &Path) -> (Peer, String, Peer, f64) {
    churning(args, start_redis(dir))
}

/// [`churning_redis`] on a Redis already started (its process and URL).
fn churning(args: &Args, (redis, url): (Peer, String)) -> (Peer, String, Peer, f64) {
    let rate = args.projects as f64 / 100.0;
    let (projects, rate_arg) = (args.projects.to_string(), rate.to_string());
    let (sim, _) = support::start_simulator(&[
        "--generate",
        &projects,
        "--mutate",
        &rate_arg,
        "--mutate-paused",
        "--redis",
        &url,
    ]);
    wait_mirrored(&url, args.projects);
    (redis, url, Peer(sim), rate)
}

/// Waits until the simulator has mirrored its whole population to Redis,
/// so the idle window measures an idle Redis.
fn wait_mirrored(url: &str, projects: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let want = format!(":{projects}\r\n");
    while redis_command(url, "HLEN {env-sidecar}:projects") != want {
        assert!(
            Instant::now() < deadline,
            "the simulator never mirrored to Redis"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sum of CPU of `pids`, in nanoseconds from each thread's
/// `/proc/PID/task/TID/schedstat` (`/proc/PID/stat` counts 10 ms ticks,
/// too coarse for an idle follower), or from `stat` where that is missing.
fn cpu_of(pids: &[u32]) -> Duration {
    pids.iter()
        .filter_map(|p| schedstat(*p).or_else(|| cpu_time(*p)))
        .sum()
}

fn schedstat(pid: u32) -> Option<Duration> {
    let mut nanos = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let text = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        nanos += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(nanos))
}

/// CPU seconds per wall second of `pids` over `window`.
fn idle_cpu(pids: &[u32], window: Duration) -> f64 {
    let before = cpu_of(pids);
    let t0 = Instant::now();
    std::thread::sleep(window);
    cpu_of(pids).saturating_sub(before).as_secs_f64() / t0.elapsed().as_secs_f64()
}

/// One sidecar's propagation histogram: cumulative (bound, count) and the
/// sum of delays in seconds.
#[derive(Debug, Clone, Default)]
struct Histogram {
    buckets: Vec<(f64, u64)>,
    sum: f64,
}

impl Histogram {
    fn total(&self) -> u64 {
        self.buckets.last().map_or(0, |b| b.1)
    }
}

fn propagation(admin: SocketAddr) -> Histogram {
    let Some((200, text)) = http_get(admin, "/metrics") else {
        panic!("{admin}/metrics did not answer");
    };
    let mut h = Histogram::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(HISTOGRAM) {
            let parsed = (|| {
                let le = rest.split("le=\"").nth(1)?.split('"').next()?;
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((bound, rest.rsplit(' ').next()?.parse().ok()?))
            })();
            h.buckets.extend(parsed);
        } else if let Some(rest) = line.strip_prefix(SUM) {
            h.sum = rest
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
        }
    }
    h
}

fn scrape(members: &[Member]) -> Vec<Histogram> {
    members.iter().map(|m| propagation(m.admin)).collect()
}

/// Waits until no sidecar's propagation count moved between two scrapes
/// half a second apart: every published change has been served.
fn wait_settled(members: &[Member]) -> Vec<Histogram> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = scrape(members);
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = scrape(members);
        let same = now.iter().zip(&last).all(|(a, b)| a.total() == b.total());
        if same || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

/// The fleet's histogram over the churn: the sum of every member's
/// (after − before).
fn fleet_delta(before: &[Histogram], after: &[Histogram]) -> Histogram {
    let mut fleet = Histogram {
        buckets: after[0].buckets.iter().map(|(b, _)| (*b, 0)).collect(),
        sum: 0.0,
    };
    for (a, b) in after.iter().zip(before) {
        for (i, ((_, ca), (_, cb))) in a.buckets.iter().zip(&b.buckets).enumerate() {
            fleet.buckets[i].1 += ca - cb;
        }
        fleet.sum += a.sum - b.sum;
    }
    fleet
}

/// Prometheus' `histogram_quantile`: linear within the bucket.
fn quantile(h: &Histogram, q: f64) -> f64 {
    let n = h.total() as f64;
    let rank = q * n;
    let mut prev = (0.0, 0u64);
    for &(bound, count) in &h.buckets {
        if count as f64 >= rank {
            if bound.is_infinite() {
                return prev.0;
            }
            let inside = (count - prev.1) as f64;
            let frac = if inside > 0.0 {
                (rank - prev.1 as f64) / inside
            } else {
                0.0
            };
            return prev.0 + (bound - prev.0) * frac;
        }
        prev = (bound, count);
    }
    prev.0
}

/// The bound of the highest bucket that received a sample.
fn max_bound(h: &Histogram) -> f64 {
    let mut prev = 0;
    let mut max = 0.0;
    for &(bound, count) in &h.buckets {
        if count > prev {
            max = bound;
        }
        prev = count;
    }
    max
}

/// `VmRSS` and `Pss` of a process, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let field = |file: &str, key: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/{file}"))
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix(key))
                    .and_then(|v| v.split_whitespace().next()?.parse().ok())
            })
            .unwrap_or(0)
    };
    (field("status", "VmRSS:"), field("smaps_rollup", "Pss:"))
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

#[derive(Debug, Default)]
struct Report {
    /// The source's CPU/s idle with 0, a tenth and all followers.
    source_idle: [f64; 3],
    /// Wave sizes of `source_idle`.
    waves: [usize; 3],
    /// The source's CPU/s under churn with the whole fleet following,
    /// and with no follower (the publishing alone).
    source_churn: f64,
    source_churn_alone: f64,
    rate: f64,
    /// The simulator's CPU/s under churn, all of it (with Redis: the
    /// publisher's own cost, no followers).
    publisher_churn: f64,
    members_idle: f64,
    members_churn: f64,
    served: u64,
    changes_published: u64,
    p50: f64,
    p99: f64,
    max: f64,
    mean: f64,
    rss_kib: u64,
    pss_kib: u64,
    ready_after: Duration,
    /// Redis: `used_memory` with no followers and with all of them, and
    /// `blocked_clients` with all of them (idle).
    redis_memory: Option<(u64, u64, u64)>,
}

fn run(source: Source, args: &Args, dir: &Path) -> Report {
    let mut report = Report::default();
    let redis = (source == Source::Redis).then(|| start_redis(dir));
    let rate = args.projects as f64 / 100.0;
    let (projects, rate_arg) = (args.projects.to_string(), rate.to_string());
    let mut sim_args = vec![
        "--generate",
        &projects,
        "--mutate",
        &rate_arg,
        "--mutate-paused",
    ];
    if let Some((_, url)) = &redis {
        sim_args.extend(["--redis", url.as_str()]);
    }
    let signing = args.sign.then(|| keys(dir));
    let sign_key = signing
        .as_ref()
        .map(|(private, _)| private.display().to_string());
    if let Some(key) = &sign_key {
        sim_args.extend(["--sign-key", key.as_str()]);
    }
    let extra = match &signing {
        Some((_, public)) => format!(
            "[trust]\nkeys = [\"{}\"]\nrequire_signatures = true\n",
            public.display()
        ),
        None => String::new(),
    };
    let (sim, url) = support::start_simulator(&sim_args);
    let sim = Peer(sim);
    let source_pid = redis.as_ref().map_or(sim.0.id(), |(p, _)| p.0.id());
    let mut member_source = match &redis {
        Some((_, url)) => format!("kind = \"redis\"\nurl = \"{url}\"\n"),
        None => format!("kind = \"http\"\nurl = \"{url}\"\nmode = \"watch\"\n"),
    };
    if let Some(wait) = args.long_poll_wait {
        member_source.push_str(&format!("long_poll_wait = \"{wait}s\"\n"));
    }

    if let Some((_, url)) = &redis {
        wait_mirrored(url, args.projects);
    }
    eprintln!("[{}] source idle, no followers", source.name());
    report.source_idle[0] = idle_cpu(&[source_pid], args.idle);
    let used_memory_alone = redis
        .as_ref()
        .map(|(_, url)| redis_info(url, "used_memory"));

    report.rate = rate;
    eprintln!("[{}] churn with no followers", source.name());
    signal_usr1(sim.0.id());
    report.source_churn_alone = idle_cpu(&[source_pid], args.idle);
    signal_usr1(sim.0.id());

    let first = (args.sidecars / 10).max(1);
    report.waves = [0, first, args.sidecars];
    let mut members: Vec<Member> = (0..first)
        .map(|i| start_member(dir, i, &member_source, &extra))
        .collect();
    wait_ready(&members);
    eprintln!("[{}] idle with {first} followers", source.name());
    report.source_idle[1] = idle_cpu(&[source_pid], args.idle);

    let started = Instant::now();
    members.extend((first..args.sidecars).map(|i| start_member(dir, i, &member_source, &extra)));
    wait_ready(&members);
    report.ready_after = started.elapsed();
    let member_pids: Vec<u32> = members.iter().map(|m| m.child.id()).collect();
    eprintln!(
        "[{}] idle with {} followers (all ready)",
        source.name(),
        members.len()
    );
    let (s0, m0, t0) = (cpu_of(&[source_pid]), cpu_of(&member_pids), Instant::now());
    std::thread::sleep(args.idle);
    let idle_secs = t0.elapsed().as_secs_f64();
    report.source_idle[2] = cpu_of(&[source_pid]).saturating_sub(s0).as_secs_f64() / idle_secs;
    report.members_idle =
        cpu_of(&member_pids).saturating_sub(m0).as_secs_f64() / idle_secs / members.len() as f64;

    if let (Some((_, url)), Some(alone)) = (&redis, used_memory_alone) {
        report.redis_memory = Some((
            alone,
            redis_info(url, "used_memory"),
            redis_info(url, "blocked_clients"),
        ));
    }
    let before = scrape(&members);
    let (s0, m0, t0) = (cpu_of(&[source_pid]), cpu_of(&member_pids), Instant::now());
    let p0 = cpu_of(&[sim.0.id()]);
    eprintln!(
        "[{}] churn: {rate} changes/s for {:?}",
        source.name(),
        args.churn
    );
    signal_usr1(sim.0.id());
    std::thread::sleep(args.churn);
    signal_usr1(sim.0.id());
    let after = wait_settled(&members);
    let churn_secs = t0.elapsed().as_secs_f64();
    let n = members.len() as f64;
    report.publisher_churn = cpu_of(&[sim.0.id()]).saturating_sub(p0).as_secs_f64() / churn_secs;
    report.source_churn = cpu_of(&[source_pid]).saturating_sub(s0).as_secs_f64() / churn_secs;
    report.members_churn = cpu_of(&member_pids).saturating_sub(m0).as_secs_f64() / churn_secs / n;

    let fleet = fleet_delta(&before, &after);
    report.served = fleet.total();
    report.changes_published = after
        .iter()
        .zip(&before)
        .map(|(a, b)| a.total() - b.total())
        .max()
        .unwrap_or(0);
    report.p50 = quantile(&fleet, 0.5);
    report.p99 = quantile(&fleet, 0.99);
    report.max = max_bound(&fleet);
    report.mean = fleet.sum / fleet.total().max(1) as f64;
    let memory: Vec<(u64, u64)> = member_pids.iter().map(|p| memory_kib(*p)).collect();
    report.rss_kib = median(memory.iter().map(|m| m.0).collect());
    report.pss_kib = median(memory.iter().map(|m| m.1).collect());
    drop(members);
    drop(sim);
    drop(redis);
    report
}

/// A key pair made with `env-sidecar keygen` (made once per run).
fn keys(dir: &Path) -> (PathBuf, PathBuf) {
    let (private, public) = (dir.join("bench.key"), dir.join("bench.pub"));
    if !private.exists() {
        let ok = support::shared::sidecar_command()
            .args(["keygen", "--key-id", "bench", "--private"])
            .arg(&private)
            .arg("--public")
            .arg(&public)
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "keygen");
    }
    (private, public)
}

/// `kill -SIGNAL pid`.
fn signal(pid: u32, signal: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{signal} {pid}");
}

/// Pauses or resumes the simulator's churn.
fn signal_usr1(pid: u32) {
    signal(pid, "USR1");
}

fn ms(seconds: f64) -> String {
    format!("{:.1} ms", seconds * 1e3)
}

fn us(seconds: f64) -> String {
    format!("{:.1} µs", seconds * 1e6)
}

fn print(source: Source, args: &Args, r: &Report) {
    let n = args.sidecars as f64;
    println!(
        "\n## {} — {} sidecars, {} projects",
        source.name(),
        args.sidecars,
        args.projects
    );
    println!(
        "the last {} sidecars started and ready after {:.1} s",
        args.sidecars - r.waves[1],
        r.ready_after.as_secs_f64()
    );
    println!(
        "publish → served over the churn: {} samples ({} changes at the busiest sidecar)",
        r.served, r.changes_published
    );
    println!(
        "  p50 {}   p99 {}   max ≤ {}   mean {}",
        ms(r.p50),
        ms(r.p99),
        ms(r.max),
        ms(r.mean)
    );
    println!("source CPU per second (all followers together):");
    for (w, cpu) in r.waves.iter().zip(r.source_idle) {
        println!("  idle, {w:>4} followers: {}/s", us(cpu));
    }
    let per_follower = (r.source_churn - r.source_churn_alone).max(0.0) / n;
    println!(
        "source CPU under churn: {}/s with no follower, {}/s with {} followers",
        us(r.source_churn_alone),
        us(r.source_churn),
        args.sidecars
    );
    println!(
        "source CPU per follower: idle {}/s; churn {}/s, {} per change delivered",
        us((r.source_idle[2] - r.source_idle[0]).max(0.0) / n),
        us(per_follower),
        us(per_follower / r.rate)
    );
    if source == Source::Redis {
        println!(
            "publisher (simulator mirroring to Redis) CPU under churn: {}/s",
            us(r.publisher_churn)
        );
    }
    if let Some((alone, all, blocked)) = r.redis_memory {
        println!(
            "redis used_memory: {:.1} MiB alone, {:.1} MiB with {blocked} blocked followers \
             ({:.1} KiB per follower)",
            alone as f64 / 1048576.0,
            all as f64 / 1048576.0,
            (all.saturating_sub(alone)) as f64 / 1024.0 / n
        );
    }
    println!(
        "sidecar CPU per sidecar per second: idle {}, churn {}",
        us(r.members_idle),
        us(r.members_churn)
    );
    println!(
        "memory per sidecar (median): RSS {:.1} MiB, PSS {:.1} MiB",
        r.rss_kib as f64 / 1024.0,
        r.pss_kib as f64 / 1024.0
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` probes every bench target
    }
    let argv: Vec<String> = std::env::args().collect();
    if let [_, flag, url, spin] = argv.as_slice() {
        if flag == follow::BARE_READER {
            let spin = Duration::from_nanos(spin.parse().expect("nanoseconds"));
            return follow::bare_reader_process(url, spin);
        }
    }
    let args = Args::parse();
    let dir: PathBuf = tempfile::tempdir().expect("tempdir").keep();
    println!(
        "fleet: {} sidecars, {} projects, {}%/s churn for {:?}, idle windows {:?}{}",
        args.sidecars,
        args.projects,
        1,
        args.churn,
        args.idle,
        if args.sign { ", signed" } else { "" }
    );
    for source in args.sources.clone() {
        match source {
            Source::Reports => {
                reports::run(&args, &dir);
                continue;
            }
            Source::Synthetic => {
                reports::run_synthetic(&args, &dir);
                continue;
            }
            Source::Follow => {
                follow::run(&args, &dir);
                continue;
            }
            Source::Http | Source::Redis => {}
        }
        let report = run(source, &args, &dir);
        print(source, &args, &report);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
