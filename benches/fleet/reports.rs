//! The fleet's node reports, measured (`cargo bench --bench fleet --
//! --only reports`): the same N sidecars on Redis under the same 1 %/s
//! churn twice in one run, reports off and on, for
//!
//! * report writes per second at the Redis server (its `PEXPIRE` calls:
//!   one per report write, and only reporters send them) and as the
//!   sidecars count them;
//! * Redis CPU with reports off and on, and the ratio (goal: ≤ 1.10);
//! * publish → `fleet wait` returns: a single project republished while
//!   the churn is paused, timed from the write to the command's exit
//!   (p50 / p99 over the rounds; goal: as fast as delivery plus the
//!   coalescing window);
//! * `fleet status` at N nodes, then `fleet status` and one poll of
//!   `fleet wait` at 10 000 synthetic nodes written straight into Redis
//!   as sidecars write them (every node at the stream's last entry, 1 %
//!   of them with 10 exceptions), with Redis' memory for them (goals:
//!   ≤ 500 ms, ≤ 100 ms, ≤ 50 MB).

use std::path::Path;
use std::time::{Duration, Instant};

use super::{
    cpu_of, redis_info, signal_usr1, start_member, start_redis, wait_ready, Args, Member, Peer,
};

/// Rounds of publish → `fleet wait`.
const WAIT_ROUNDS: usize = 20;
/// Synthetic nodes for the large `fleet status`.
const SYNTHETIC: usize = 10_000;
/// Exceptions of each synthetic node that has any.
const EXCEPTIONS: usize = 10;

pub fn run(args: &Args, dir: &Path) {
    let (redis, url, sim, rate) = super::churning_redis(args, dir);
    let redis_pid = redis.0.id();
    println!(
        "\n## node reports — {} sidecars on Redis, {} projects, {rate} changes/s",
        args.sidecars, args.projects
    );
    let mut cpu = [0.0f64; 2];
    let mut zadd_rate = [0.0f64; 2];
    for (k, enabled) in [false, true].into_iter().enumerate() {
        let source = format!("kind = \"redis\"\nurl = \"{url}\"\n");
        let extra = format!("[report]\nenabled = {enabled}\n");
        let members: Vec<Member> = (0..args.sidecars)
            .map(|i| start_member(dir, i, &source, &extra))
            .collect();
        wait_ready(&members);
        // Let the first (full) reports land before measuring.
        std::thread::sleep(Duration::from_secs(3));
        eprintln!(
            "[reports {}] churn for {:?}",
            if enabled { "on" } else { "off" },
            args.churn
        );
        let calls0 = command_calls(&url, "pexpire");
        let writes0 = report_writes(&members);
        let (c0, t0) = (cpu_of(&[redis_pid]), Instant::now());
        signal_usr1(sim.0.id());
        std::thread::sleep(args.churn);
        signal_usr1(sim.0.id());
        let secs = t0.elapsed().as_secs_f64();
        cpu[k] = cpu_of(&[redis_pid]).saturating_sub(c0).as_secs_f64() / secs;
        zadd_rate[k] = command_calls(&url, "pexpire").saturating_sub(calls0) as f64 / secs;
        let writes = report_writes(&members).saturating_sub(writes0) as f64 / secs;
        println!(
            "reports {}: Redis CPU {:.1} ms/s; report writes {:.1}/s at Redis (PEXPIRE calls), {writes:.1}/s counted by the sidecars ({:.2}/s per sidecar)",
            if enabled { "on " } else { "off" },
            cpu[k] * 1e3,
            zadd_rate[k],
            writes / args.sidecars as f64
        );
        if enabled {
            wait_rounds(&url, args);
            let status = time_status(&url, 5);
            println!(
                "fleet status at {} nodes: median {:.0} ms over 5 runs",
                args.sidecars,
                status * 1e3
            );
        }
        drop(members);
    }
    println!(
        "Redis CPU, reports on / off under churn: {:.2}x (goal ≤ 1.05)",
        cpu[1] / cpu[0].max(1e-9)
    );
    synthetic(&url, args.projects);
    drop(sim);
    drop(redis);
}

/// Only [`synthetic`]: `args.projects` generated and mirrored into a
/// Redis of its own, no sidecar.
pub fn run_synthetic(args: &Args, dir: &Path) {
    let (redis, url) = start_redis(dir);
    let projects = args.projects.to_string();
    let (sim, _) = super::support::start_simulator(&["--generate", &projects, "--redis", &url]);
    let sim = Peer(sim);
    super::wait_mirrored(&url, args.projects);
    println!("\n## synthetic node reports — {} projects", args.projects);
    synthetic(&url, args.projects);
    drop(sim);
    drop(redis);
}

/// `calls` of `cmdstat_<name>` in `INFO commandstats`.
pub(super) fn command_calls(url: &str, name: &str) -> u64 {
    super::support::redis::redis_command(url, "INFO commandstats")
        .lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{name}:calls=")))
        .and_then(|v| v.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

/// The sum of every member's `env_sidecar_report_writes_total{result="ok"}`.
fn report_writes(members: &[Member]) -> u64 {
    members
        .iter()
        .filter_map(|m| super::support::http_get(m.admin, "/metrics"))
        .map(|(_, text)| {
            text.lines()
                .find_map(|l| l.strip_prefix("env_sidecar_report_writes_total{result=\"ok\"} "))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0) as u64
        })
        .sum()
}

fn env_sidecar(args: &[&str]) -> (bool, String) {
    let out = super::support::shared::sidecar_command()
        .args(args)
        .output()
        .expect("env-sidecar runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// A runtime of this thread and a connection to Redis with `timeout`.
pub(super) fn connection(
    url: &str,
    timeout: Duration,
) -> (
    tokio::runtime::Runtime,
    env_sidecar::redis_client::Conn,
    env_sidecar::redis_client::RedisKeys,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tls = env_sidecar::config::TlsFiles::default();
    let connector = env_sidecar::redis_client::Connector::new(
        env_sidecar::redis_client::connection::Settings {
            url,
            password: None,
            tls: &tls,
            read_from: None,
            connect_timeout: timeout,
            response_timeout: timeout,
        },
    )
    .unwrap();
    let con = rt
        .block_on(connector.connect(env_sidecar::redis_client::Role::Write))
        .unwrap();
    (
        rt,
        con,
        env_sidecar::redis_client::RedisKeys::new("env-sidecar"),
    )
}

/// Publish one project's next revision, then `fleet wait` for it.
fn wait_rounds(url: &str, args: &Args) {
    let mut publisher = connection(url, Duration::from_secs(5));
    let mut times = Vec::new();
    for round in 0..WAIT_ROUNDS {
        let i = round * 7 % args.projects;
        times.push(publish_then_wait(
            &mut publisher,
            url,
            i,
            1_000_000 + round as u64,
        ));
        // The coalescing window of every node passes before the next one.
        std::thread::sleep(Duration::from_millis(1100));
    }
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    println!(
        "publish → fleet wait returns ({} sidecars, {WAIT_ROUNDS} rounds): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        args.sidecars,
        at(0.5) * 1e3,
        at(0.99) * 1e3,
        times[times.len() - 1] * 1e3
    );
}

/// Writes generated project `i` at `revision` (the hash field, its
/// stream entry and position) and runs `fleet wait` for it: seconds from
/// the write to the command's exit.
pub(super) fn publish_then_wait(
    (rt, con, keys): &mut (
        tokio::runtime::Runtime,
        env_sidecar::redis_client::Conn,
        env_sidecar::redis_client::RedisKeys,
    ),
    url: &str,
    i: usize,
    revision: u64,
) -> f64 {
    let id = env_sidecar::sim::generate::project_id(i);
    let doc = env_sidecar::sim::generate::project(i, revision, Some(std::time::SystemTime::now()));
    let text = serde_json::to_string(&doc).unwrap();
    let started = Instant::now();
    rt.block_on(env_sidecar::redis_client::write_project(
        con, keys, &id, &text,
    ))
    .unwrap();
    let (ok, out) = fleet_wait(url, &id, revision, &["--timeout", "30s"]);
    assert!(ok, "{out}");
    started.elapsed().as_secs_f64()
}

/// `fleet wait --redis URL --project ID --revision R EXTRA…`.
fn fleet_wait(url: &str, id: &str, revision: u64, extra: &[&str]) -> (bool, String) {
    let revision = revision.to_string();
    let mut args = vec![
        "fleet",
        "wait",
        "--redis",
        url,
        "--project",
        id,
        "--revision",
        &revision,
    ];
    args.extend(extra);
    env_sidecar(&args)
}

/// Median seconds of `runs` runs of `fleet status`.
fn time_status(url: &str, runs: usize) -> f64 {
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            let (ok, out) = env_sidecar(&["fleet", "status", "--redis", url]);
            assert!(ok, "{out}");
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// 10 000 node reports written straight into Redis, as sidecars write
/// them (every node at the stream's last entry; 1 % of them with
/// [`EXCEPTIONS`] rejections each), then `fleet status` and `fleet wait`
/// over them.
fn synthetic(url: &str, projects: usize) {
    use env_sidecar::model::cursor::Position;
    use env_sidecar::sync::report::{digest, Layout, Nack, NodeReport, Summary};
    let (rt, mut con, keys) = connection(url, Duration::from_secs(60));
    // What the source holds now: every project's last write.
    let positions: std::collections::HashMap<String, String> = rt
        .block_on(
            redis::cmd("HGETALL")
                .arg(&keys.positions)
                .query_async(&mut con),
        )
        .unwrap();
    let source: Vec<(String, Position)> = positions
        .iter()
        .filter_map(|(id, v)| Some((id.clone(), Position::parse(v)?)))
        .collect();
    assert_eq!(source.len(), projects);
    let revisions = || {
        source
            .iter()
            .filter_map(|(id, p)| Some((id.as_str(), p.revision?)))
    };
    let tip = source
        .iter()
        .map(|(_, p)| p.at)
        .max_by_key(|c| c.order())
        .unwrap();
    let clean = digest(revisions());
    let memory0 = redis_info(url, "used_memory");
    let now = std::time::SystemTime::now();
    let stamp = env_sidecar::model::timestamp::format_rfc3339(now);
    let written = Instant::now();
    for chunk in (0..SYNTHETIC).collect::<Vec<_>>().chunks(200) {
        let mut pipe = redis::pipe();
        for &n in chunk {
            let rejecting = n % 100 == 0;
            let rejections: std::collections::BTreeMap<String, Nack> = source
                .iter()
                .take(if rejecting { EXCEPTIONS } else { 0 })
                .map(|(id, p)| {
                    let nack = Nack {
                        revision: p.revision,
                        reason: "unsigned".into(),
                    };
                    (id.clone(), nack)
                })
                .collect();
            let node = format!("synthetic-{n:05}");
            // The digest of every project, once; a rejecting node's own.
            let digest = match rejections.is_empty() {
                true => clean.clone(),
                false => digest(revisions().filter(|(id, _)| !rejections.contains_key(*id))),
            };
            let report = NodeReport {
                summary: Summary {
                    layout: Layout::Exceptions,
                    node: node.clone(),
                    labels: [("region".to_owned(), format!("r{}", n % 3))].into(),
                    version: "synthetic".into(),
                    source: "redis".into(),
                    provenance: env_sidecar::sync::status::Provenance::Live,
                    cursor: tip.to_string(),
                    snapshot_age_seconds: Some(1.0),
                    started_at: stamp.clone(),
                    reported_at: stamp.clone(),
                    interval_seconds: 600.0,
                    digest,
                    projects: projects - rejections.len(),
                    rejected: rejections.len(),
                    ahead: 0,
                    held: None,
                },
                served: Default::default(),
                rejections,
                ahead_of_source: Default::default(),
            };
            let key = keys.node(&node);
            let cmd = pipe.cmd("HSET").arg(&key);
            for (k, v) in env_sidecar::sync::report::redis::fields(&report) {
                cmd.arg(k).arg(v);
            }
            cmd.ignore();
            pipe.cmd("PEXPIRE").arg(&key).arg(1_800_000).ignore();
            pipe.cmd("ZADD")
                .arg(&keys.nodes)
                .arg(
                    now.duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_millis() as u64,
                )
                .arg(&node)
                .ignore();
        }
        let () = rt.block_on(pipe.query_async(&mut con)).unwrap();
    }
    let memory = redis_info(url, "used_memory").saturating_sub(memory0);
    println!(
        "{SYNTHETIC} synthetic reports ({projects} projects, 1 % of nodes with {EXCEPTIONS} exceptions) written in {:.1} s; Redis memory for them {:.1} MiB (goal ≤ 50 MB; {:.0} bytes per node)",
        written.elapsed().as_secs_f64(),
        memory as f64 / 1048576.0,
        memory as f64 / SYNTHETIC as f64,
    );
    let status = time_status(url, 3);
    let (_, out) = env_sidecar(&["fleet", "status", "--redis", url]);
    println!(
        "fleet status at {SYNTHETIC} nodes: median {:.0} ms over 3 runs (goal ≤ 500 ms); {}",
        status * 1e3,
        out.lines().last().unwrap_or("")
    );
    let (id, revision) = revisions().next_back().unwrap();
    let t = Instant::now();
    let (ok, out) = fleet_wait(url, id, revision, &["--timeout", "30s"]);
    println!(
        "fleet wait at {SYNTHETIC} nodes (one poll, already converged; the command from start to exit): {:.0} ms (goal ≤ 100 ms; {})",
        t.elapsed().as_secs_f64() * 1e3,
        if ok { "converged" } else { out.as_str() }
    );
}
