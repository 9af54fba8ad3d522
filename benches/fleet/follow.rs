//! What following costs Redis, and the routine events of a fleet,
//! measured (`cargo bench --bench fleet -- --only follow`):
//!
//! * Redis CPU (Redis pinned to a core of its own) with N sidecars
//!   following the stream (reports off) against N bare `XREAD BLOCK`
//!   clients on the same stream (a floor: the read itself, and nothing
//!   more), once as threads of this bench and once as processes of their
//!   own (as followers are), under the same churn (1 % of the projects a second),
//!   alternating `--rounds` times (three by default) in one run (with
//!   another build's sidecars too when `ENV_SIDECAR_BENCH_BASELINE` names
//!   one); the ratio of the medians (goal: ≤ 1.2).
//! * Redis's own instructions per delivery (callgrind, Redis under
//!   `valgrind`, so up to 10 of each), followers against bare reader
//!   processes under the same churn: what the followers ask of Redis,
//!   free of what the other core's load does to Redis's CPU time.
//! * A writer that never marks its population: one sidecar that found it
//!   incomplete; changes and explicit removals written one at a time,
//!   each timed until the sidecar serves it (p50 / p99; goal: p99 ≤ 50 ms
//!   on loopback), and the hash reads (`HSCAN`) meanwhile (goal: none).
//! * A rolling deploy: `publish` then `fleet wait` for the new revision
//!   right after one of ten reporting nodes got SIGTERM (started again
//!   under the same id after), against the same with every node running
//!   (goal: as fast).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{cpu_of, signal_usr1, start_member, wait_ready, Args, Member};
use env_sidecar::redis_client::{write_changes, Change, Population, RedisKeys};
use env_sidecar::sim::generate;

/// Rounds of each latency measure.
const ROUNDS: usize = 200;

pub fn run(args: &Args, dir: &Path) {
    // Redis alone on the first core, everything else (the bench, so the
    // bare clients, and every process it starts: the simulator, the
    // sidecars) on the others, as on a fleet where the followers run on
    // other hosts: what is measured is Redis's own work, not how 100
    // processes sharing its core slow it down (unpinned, the same run
    // varies by ±10 %).
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let others = format!("1-{}", cpus - 1);
    if cpus > 1 {
        pin(std::process::id(), &others);
    }
    let (redis, url, sim, rate) = super::churning_redis(args, dir);
    let redis_pid = redis.0.id();
    if cpus > 1 {
        pin(redis_pid, "0");
    }
    println!(
        "\n## following — {} followers on Redis, {} projects, {rate} changes/s",
        args.sidecars, args.projects
    );
    // Floor, this build, and the baseline build when one is named
    // (ENV_SIDECAR_BENCH_BASELINE), alternating.
    let source = format!("kind = \"redis\"\nurl = \"{url}\"\n");
    let builds: Vec<(&str, std::path::PathBuf)> =
        std::iter::once(("sidecars", super::support::shared::binary()))
            .chain(super::support::baseline().map(|b| ("baseline sidecars", b)))
            .collect();
    let (mut floor, mut process_floor, mut busy_floor) = (Vec::new(), Vec::new(), Vec::new());
    let mut followers = vec![Vec::new(); builds.len()];
    for round in 0..args.rounds {
        let readers = BareReaders::start(&url, args.sidecars);
        floor.push(churn_cpu(redis_pid, sim.0.id(), args.churn, &[]).0);
        drop(readers);
        let readers = BareReaderProcesses::start(&url, args.sidecars, Duration::ZERO);
        process_floor.push(churn_cpu(redis_pid, sim.0.id(), args.churn, &[]).0);
        drop(readers);
        let mut line = format!(
            "round {}: Redis CPU {:.1} ms/s with {} bare XREAD clients (threads), {:.1} ms/s as processes",
            round + 1,
            floor[round] * 1e3,
            args.sidecars,
            process_floor[round] * 1e3,
        );
        // The CPU this build's followers spent per delivery this round.
        let mut spin = Duration::ZERO;
        for (k, (name, binary)) in builds.iter().enumerate() {
            let members: Vec<Member> = (0..args.sidecars)
                .map(|i| {
                    let report = "[report]\nenabled = false\n";
                    super::start_member_of(binary, dir, i, &source, report)
                })
                .collect();
            wait_ready(&members);
            let pids: Vec<u32> = members.iter().map(|m| m.child.id()).collect();
            let reads = super::reports::command_calls(&url, "xread");
            let (cpu, own) = churn_cpu(redis_pid, sim.0.id(), args.churn, &pids);
            let reads = super::reports::command_calls(&url, "xread").saturating_sub(reads);
            followers[k].push(cpu);
            drop(members);
            let per_delivery = own / reads.max(1) as u32;
            if k == 0 {
                spin = per_delivery;
            }
            line.push_str(&format!(
                ", {:.1} ms/s with {} {name} ({:.2}x / {:.2}x; {:.0} µs of their own CPU per delivery)",
                followers[k][round] * 1e3,
                args.sidecars,
                followers[k][round] / floor[round].max(1e-9),
                followers[k][round] / process_floor[round].max(1e-9),
                per_delivery.as_secs_f64() * 1e6,
            ));
        }
        let readers = BareReaderProcesses::start(&url, args.sidecars, spin);
        busy_floor.push(churn_cpu(redis_pid, sim.0.id(), args.churn, &[]).0);
        drop(readers);
        line.push_str(&format!(
            ", {:.1} ms/s with {} bare + busy processes ({:.2}x)",
            busy_floor[round] * 1e3,
            args.sidecars,
            followers[0][round] / busy_floor[round].max(1e-9),
        ));
        println!("{line}");
    }
    let floors = [
        ("threads", median(floor)),
        ("processes", median(process_floor)),
        ("processes + busy", median(busy_floor)),
    ];
    for ((name, _), cpu) in builds.iter().zip(followers) {
        let cpu = median(cpu);
        for (kind, floor) in floors {
            let against = if kind.ends_with("busy") {
                "a control: the floor with the followers' CPU on the other core"
            } else {
                "goal ≤ 1.2"
            };
            println!(
                "Redis CPU, {} {name} / {} bare XREAD clients ({kind}) under churn (medians of {}): {:.1} / {:.1} ms/s = {:.2}x ({against})",
                args.sidecars,
                args.sidecars,
                args.rounds,
                cpu * 1e3,
                floor * 1e3,
                cpu / floor.max(1e-9)
            );
        }
    }
    unmarked_writer(dir, &url);
    stop_during_wait(dir, &url);
    drop(sim);
    drop(redis);
    if cpus > 1 {
        pin(std::process::id(), &format!("0-{}", cpus - 1));
    }
    redis_instructions(args, dir);
}

/// Every thread of process `pid` on `cpus` (`taskset -a -p -c`); what it
/// starts from then on inherits it.
fn pin(pid: u32, cpus: &str) {
    let ok = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "taskset -a -p -c {cpus} {pid}");
}

/// Redis CPU (seconds per second) over `window` of churn, and the CPU
/// the `watched` processes spent meanwhile.
fn churn_cpu(redis_pid: u32, sim_pid: u32, window: Duration, watched: &[u32]) -> (f64, Duration) {
    let (c0, w0, t0) = (cpu_of(&[redis_pid]), cpu_of(watched), Instant::now());
    signal_usr1(sim_pid);
    std::thread::sleep(window);
    signal_usr1(sim_pid);
    let redis = cpu_of(&[redis_pid]).saturating_sub(c0).as_secs_f64();
    (
        redis / t0.elapsed().as_secs_f64(),
        cpu_of(watched).saturating_sub(w0),
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Readers held while Redis's instructions are counted.
enum Readers {
    Bare(#[allow(dead_code)] BareReaderProcesses),
    Followers(#[allow(dead_code)] Vec<Member>),
}

/// Redis's user-space instructions per delivery, counted by callgrind
/// over one churn window: N bare reader processes, then N followers
/// (reports off), N at most 10 (Redis under valgrind runs about 50 ×
/// slower). Instructions do not move with what runs on the other core;
/// CPU time does (see [`run`]'s "bare + busy" floor).
fn redis_instructions(args: &Args, dir: &Path) {
    use super::support::{callgrind, which};
    if which("valgrind").is_none() || which("callgrind_control").is_none() {
        println!(
            "Redis instructions per delivery: skipped (needs valgrind: apt-get install valgrind)"
        );
        return;
    }
    let n = args.sidecars.min(10);
    let (mut command, addr) = super::support::redis::redis_server(dir);
    let child = callgrind::under_callgrind(dir, "redis", &mut command);
    super::support::wait_listening(addr);
    let redis = super::support::redis::Peer(child);
    let (redis, url, sim, _) = super::churning(args, (redis, format!("redis://{addr}")));
    let source = format!("kind = \"redis\"\nurl = \"{url}\"\n");
    let mut counted = Vec::new();
    for (dump, followers) in [(1, false), (2, true)] {
        let readers = if followers {
            let members: Vec<Member> = (0..n)
                .map(|i| start_member(dir, i, &source, "[report]\nenabled = false\n"))
                .collect();
            wait_ready(&members);
            Readers::Followers(members)
        } else {
            Readers::Bare(BareReaderProcesses::start(&url, n, Duration::ZERO))
        };
        let reads = super::reports::command_calls(&url, "xread");
        callgrind::control("-z", &redis.0);
        signal_usr1(sim.0.id());
        std::thread::sleep(args.churn.min(Duration::from_secs(20)));
        signal_usr1(sim.0.id());
        callgrind::control("-d", &redis.0);
        let reads = super::reports::command_calls(&url, "xread").saturating_sub(reads);
        let total = callgrind::dumped_total(dir, "redis", dump);
        counted.push(total as f64 / reads.max(1) as f64);
        drop(readers);
    }
    println!(
        "Redis instructions per delivery (callgrind), {n} followers / {n} bare XREAD processes under churn: {:.0} / {:.0} = {:.2}x (goal ≤ 1.2)",
        counted[1],
        counted[0],
        counted[1] / counted[0].max(1.0)
    );
    drop(sim);
    drop(redis);
}

/// N connections each in a loop of `XREAD BLOCK 30000 COUNT 512 STREAMS
/// {env-sidecar}:changes <last id>`, on threads of this process: what
/// following costs Redis at the least. Their connections are killed when
/// dropped.
struct BareReaders {
    url: String,
    stop: Arc<AtomicBool>,
    ids: Vec<i64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl BareReaders {
    fn start(url: &str, n: usize) -> BareReaders {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let threads = (0..n)
            .map(|_| {
                let (url, stop, tx) = (url.to_owned(), stop.clone(), tx.clone());
                std::thread::spawn(move || {
                    read_until(
                        &url,
                        Duration::ZERO,
                        |id| tx.send(id).expect("the bench waits"),
                        || stop.load(Ordering::SeqCst),
                    )
                })
            })
            .collect();
        let ids = (0..n).map(|_| rx.recv().expect("a client id")).collect();
        BareReaders {
            url: url.to_owned(),
            stop,
            ids,
            threads,
        }
    }
}

/// One bare reader: connects to `url`, tells `connected` its client id,
/// then reads the stream in the loop [`BareReaders`] describes until
/// `stop` says so or the connection fails.
fn read_until(url: &str, spin: Duration, connected: impl FnOnce(i64), stop: impl Fn() -> bool) {
    let client = redis::Client::open(url).expect("a URL");
    let mut con = client.get_connection().expect("connects");
    let id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut con).unwrap();
    connected(id);
    let mut last = "$".to_owned();
    while !stop() {
        let reply: redis::RedisResult<redis::Value> = redis::cmd("XREAD")
            .arg("BLOCK")
            .arg(30_000)
            .arg("COUNT")
            .arg(512)
            .arg("STREAMS")
            .arg("{env-sidecar}:changes")
            .arg(&last)
            .query(&mut con);
        match reply {
            Ok(value) => {
                if let Some(id) = last_id(&value) {
                    last = id;
                }
                let busy = Instant::now();
                while busy.elapsed() < spin {
                    std::hint::spin_loop();
                }
            }
            Err(_) => return,
        }
    }
}

/// The argument that makes this bench a bare reader process (`--bare-reader
/// URL SPIN_NANOS`), for [`BareReaderProcesses`].
pub const BARE_READER: &str = "--bare-reader";

/// The body of a bare reader process: prints its client id, then reads
/// until killed, spinning `spin` after each read.
pub fn bare_reader_process(url: &str, spin: Duration) {
    read_until(url, spin, |id| println!("{id}"), || false);
}

/// The same N readers as [`BareReaders`], each a process of its own (this
/// bench run again with [`BARE_READER`]), as a fleet's followers are: on
/// loopback, Redis's write wakes the reader's process inside Redis's own
/// system call, and how a process is woken is part of what Redis pays.
/// Each spins `spin` after every read (zero: none). Killed when dropped.
struct BareReaderProcesses(Vec<std::process::Child>);

impl BareReaderProcesses {
    fn start(url: &str, n: usize, spin: Duration) -> BareReaderProcesses {
        let exe = std::env::current_exe().expect("this bench's path");
        let mut children: Vec<_> = (0..n)
            .map(|_| {
                std::process::Command::new(&exe)
                    .args([BARE_READER, url, &spin.as_nanos().to_string()])
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .expect("a bare reader starts")
            })
            .collect();
        for child in &mut children {
            // Its client id, once connected.
            let out = child.stdout.take().expect("piped");
            let mut line = String::new();
            std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line)
                .expect("a bare reader connects");
            assert!(line.trim().parse::<i64>().is_ok(), "a client id: {line:?}");
        }
        BareReaderProcesses(children)
    }
}

impl Drop for BareReaderProcesses {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for BareReaders {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for id in &self.ids {
            super::support::redis::redis_command(&self.url, &format!("CLIENT KILL ID {id}"));
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The id of the last entry of an `XREAD` reply.
fn last_id(value: &redis::Value) -> Option<String> {
    use redis::Value;
    let streams = match value {
        Value::Array(streams) => streams.clone(),
        Value::Map(pairs) => pairs
            .iter()
            .map(|(k, v)| Value::Array(vec![k.clone(), v.clone()]))
            .collect(),
        _ => return None,
    };
    let Value::Array(stream) = streams.last()? else {
        return None;
    };
    let Value::Array(entries) = stream.get(1)? else {
        return None;
    };
    let Value::Array(entry) = entries.last()? else {
        return None;
    };
    match entry.first()? {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// A writer that never marks (prefix `unmarked`): changes and removals
/// timed to a follower that found the population incomplete.
fn unmarked_writer(dir: &Path, url: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = redis::Client::open(url).unwrap();
    let mut con = rt
        .block_on(client.get_multiplexed_async_connection())
        .unwrap();
    let keys = RedisKeys::new("unmarked");
    let mut write = |id: &str, document: Option<String>| {
        let change = Change {
            project: id.to_owned(),
            document,
        };
        rt.block_on(write_changes(
            &mut con,
            &keys,
            &[change],
            Population::Untouched,
        ))
        .unwrap();
    };
    let doc = |i: usize, revision: u64| {
        serde_json::to_string(&generate::project(i, revision, None)).unwrap()
    };
    for i in 0..10 {
        write(&generate::project_id(i), Some(doc(i, 1)));
    }
    let source = format!("kind = \"redis\"\nurl = \"{url}\"\nkey_prefix = \"unmarked\"\n");
    let member = start_member(dir, 9_999, &source, "[report]\nenabled = false\n");
    wait_ready(std::slice::from_ref(&member));
    let hscans = hscan_calls(url);
    let mut changes = Vec::with_capacity(ROUNDS);
    let mut removals = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        let i = round % 10;
        let id = generate::project_id(i);
        let revision = 2 + round as u64;
        let t = Instant::now();
        write(&id, Some(doc(i, revision)));
        wait_revision(&member, &id, Some(revision));
        changes.push(t.elapsed().as_secs_f64());
        // A project added, then removed by an explicit `removed` entry.
        let extra = generate::project_id(1_000 + round);
        write(&extra, Some(doc(1_000 + round, 1)));
        wait_revision(&member, &extra, Some(1));
        let t = Instant::now();
        write(&extra, None);
        wait_revision(&member, &extra, None);
        removals.push(t.elapsed().as_secs_f64());
    }
    let read = hscan_calls(url) - hscans;
    let at = |v: &mut Vec<f64>, q: f64| {
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * q).round() as usize] * 1e3
    };
    println!(
        "a writer that never marks, to a follower that found the population incomplete ({ROUNDS} of each): \
         change → served p50 {:.1} ms, p99 {:.1} ms; removal → gone p50 {:.1} ms, p99 {:.1} ms \
         (goal p99 ≤ 50 ms); hash reads (HSCAN) meanwhile: {read} (goal 0)",
        at(&mut changes, 0.5),
        at(&mut changes, 0.99),
        at(&mut removals, 0.5),
        at(&mut removals, 0.99),
    );
}

/// Polls the member until `id` is served at `revision` (`None`: until it
/// is unknown).
fn wait_revision(member: &Member, id: &str, revision: Option<u64>) {
    let path = format!("/v1/resolve?project={id}");
    let want = revision.map(|r| format!("\"revision\":{r},"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = super::support::http_get(member.data, &path).unwrap_or_default();
        let done = match &want {
            Some(want) => status == 200 && body.contains(want.as_str()),
            None => status == 404,
        };
        if done {
            return;
        }
        assert!(Instant::now() < deadline, "{id} never reached {revision:?}");
        std::hint::spin_loop();
    }
}

fn hscan_calls(url: &str) -> u64 {
    super::support::redis::redis_command(url, "INFO commandstats")
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_hscan:calls="))
        .and_then(|v| v.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

/// A rolling deploy as a pipeline sees it: ten reporting nodes; every
/// other round one of them gets SIGTERM (it drains, leaves the fleet and
/// exits) before `publish` and `fleet wait` for the new revision, and is
/// started again under the same id after. `fleet wait` polls every
/// 200 ms, so a round ends at its first or second poll: the medians, the
/// slowest rounds and how many ended at the first poll are printed side
/// by side.
fn stop_during_wait(dir: &Path, url: &str) {
    const ROUNDS: usize = 20;
    let source = format!("kind = \"redis\"\nurl = \"{url}\"\n");
    let report = "[report]\ninterval = \"1s\"\nmin_interval = \"100ms\"\n";
    let node = |i: usize| start_member(dir, 20_000 + i, &source, report);
    let mut members: Vec<Member> = (0..10).map(node).collect();
    wait_ready(&members);
    let mut publisher = super::reports::connection(url, Duration::from_secs(5));
    let mut times = [Vec::new(), Vec::new()];
    let mut gap = fastrand::Rng::with_seed(34);
    for round in 0..ROUNDS {
        let stopped = (round % 2 == 1).then(|| {
            // SIGTERM: it drains, leaves the fleet and exits.
            let k = round / 2 % members.len();
            let mut m = members.remove(k);
            super::signal(m.child.id(), "TERM");
            let _ = m.child.wait();
            k
        });
        let took = super::reports::publish_then_wait(
            &mut publisher,
            url,
            round * 7,
            3_000_000 + round as u64,
        );
        times[usize::from(stopped.is_some())].push(took);
        if let Some(k) = stopped {
            // The rolling deploy starts it again, under the same id.
            members.insert(k, node(k));
            wait_ready(&members[k..=k]);
        }
        // The coalescing window of every node passes before the next
        // round, which starts at a random point of the nodes' heartbeat
        // (a report written less than `min_interval` before the publish
        // delays the next: the wait's first poll then misses it).
        std::thread::sleep(Duration::from_millis(1_100 + gap.u64(..1_000)));
    }
    let [running, after_stop] = times.map(|t| {
        let first_poll = t.iter().filter(|s| **s < 0.2).count();
        let slowest = t.iter().copied().fold(0.0, f64::max);
        (median(t) * 1e3, slowest * 1e3, first_poll)
    });
    println!(
        "publish → fleet wait, ten reporting nodes ({n} rounds each): all running median {:.0} ms, \
         slowest {:.0} ms, {}/{n} at the first poll; right after a SIGTERM of one median {:.0} ms, \
         slowest {:.0} ms, {}/{n} at the first poll (the stopped node leaves; it used to count as \
         lost for --lost-after)",
        running.0,
        running.1,
        running.2,
        after_stop.0,
        after_stop.1,
        after_stop.2,
        n = ROUNDS / 2,
    );
}
