//! A bounded soak of the real binary: while gateways-like clients resolve
//! continuously, the control plane mutates projects and cycles through
//! every fault it can show (errors, slowness past the timeout, malformed
//! bodies, hangs, going down, 410 Gone, invalid documents, a mass deletion).
//! Every answer must be a 200 from an accepted document; memory and open
//! file descriptors must stay flat; once the faults stop the sidecar must
//! converge on the control plane's final state and cache it.
//!
//! 30 s under `ENV_SIDECAR_LONG_TESTS` (CI), 10 s in a plain `cargo
//! test` (two cycles of every fault either way); `SOAK_SECONDS=600 cargo test --release --test it soak::
//! -- --nocapture` soaks longer and prints the figures.
//!
//! A second soak does the same with the sidecar following Redis as a
//! fleet runs it (a primary, a replica and three sentinels, named by a
//! `redis-sentinel://` URL) that the simulator publishes to, through
//! Redis' own faults: clients paused (`CLIENT PAUSE`), the primary
//! stalled (`DEBUG SLEEP`), the primary killed (the sentinels fail over;
//! it comes back empty and rejoins as a replica), everything flushed
//! (the simulator repopulates in several transactions). No project that
//! exists may ever answer anything but a 200. 30 s or 10 s like the
//! first (`REDIS_SOAK_SECONDS`).
//!
//! `SOAK_SIGNED=1` runs both signed: the simulator signs every document
//! (removals become signed tombstones) and the sidecar requires
//! signatures.

use crate::common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::attacker::redis_cli;
use common::process::SidecarProcess;
use env_sidecar::sim::generate;
use env_sidecar::sim::simulator::{Faults, Simulator};
use serde_json::Value;

/// Projects the load asks about and the mutator republishes.
const SERVED: usize = 100;
/// Projects 100..200 exist too; the mass deletion removes them.
const ALL: usize = 200;
const FINAL_REVISION: u64 = 1_000_000;
/// A pointer value only rejected documents carry.
const MARKER: &str = "FROM-A-REJECTED-DOCUMENT";

/// A soak's length unless `SOAK_SECONDS` / `REDIS_SOAK_SECONDS` say.
fn default_seconds() -> u64 {
    if common::long_tests() {
        30
    } else {
        10
    }
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Clean,
    Errors,
    SlowPastTimeout,
    Malformed,
    Hangs,
    Down,
    Gone,
    InvalidDocuments,
    MassDeletion,
}

const PHASES: [Phase; 9] = [
    Phase::Clean,
    Phase::Errors,
    Phase::SlowPastTimeout,
    Phase::Malformed,
    Phase::Hangs,
    Phase::Down,
    Phase::Gone,
    Phase::InvalidDocuments,
    Phase::MassDeletion,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soak_under_every_fault_loses_nothing_leaks_nothing_and_converges() {
    let total: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(default_seconds);
    let cycles = (total / 30).max(2);
    let phase_len = Duration::from_secs(total) / (cycles as u32 * PHASES.len() as u32);

    let sim = Simulator::start("127.0.0.1:0".parse().unwrap(), None)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let trust = signing(&sim, dir.path());
    sim.generate(ALL);
    let cache = dir.path().join("lkg.json");
    let config = dir.path().join("sidecar.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [source]\nkind = \"http\"\nurl = \"{}\"\nmode = \"watch\"\nrequest_timeout = \"1s\"\n\
             long_poll_wait = \"2s\"\nbackoff_max = \"500ms\"\nmax_removed_fraction = 0.3\n\
             [cache]\npath = \"{}\"\n{trust}",
            sim.url(),
            cache.display()
        ),
    )
    .unwrap();
    let mut sidecar = SidecarProcess::start(&config, &[("RUST_LOG", "info")]);
    let data = sidecar.data_addr;
    let admin = sidecar.admin_addr;
    common::eventually_within(Duration::from_secs(20), "ready", || async {
        reqwest::get(format!("http://{admin}/readyz"))
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    let fds_before_load = sidecar.open_fds();

    let stop = Arc::new(AtomicBool::new(false));
    let load = Load::default();
    let workers: Vec<_> = (0..4u64)
        .map(|seed| tokio::spawn(load.clone().run(data, seed, stop.clone())))
        .collect();
    let mutator = sim.spawn_mutator(SERVED, 20.0);

    let mut samples = Vec::new();
    for cycle in 0..cycles {
        for (index, phase) in PHASES.iter().enumerate() {
            let started = Instant::now();
            run_phase(
                *phase,
                &sim,
                admin,
                data,
                cycle * 10 + index as u64,
                phase_len,
            )
            .await;
            tokio::time::sleep(phase_len.saturating_sub(started.elapsed())).await;
            assert!(sidecar.is_running(), "the sidecar died:\n{}", sidecar.log());
        }
        samples.push((sidecar.rss_kib(), sidecar.open_fds()));
    }

    // Faults off, mutation stopped, one final valid revision of everything.
    sim.set_faults(Faults::default());
    mutator.abort();
    publish(&sim, 0..ALL, FINAL_REVISION);
    let expected: Vec<(String, u64)> = (0..ALL)
        .map(|i| (generate::project_id(i), FINAL_REVISION))
        .collect();
    let client = reqwest::Client::new();
    common::eventually_within(Duration::from_secs(30), "convergence", || async {
        served_revisions(&client, data).await.as_ref() == Some(&expected)
    })
    .await;
    common::eventually_within(
        Duration::from_secs(10),
        "the final state cached",
        || async {
            env_sidecar::sync::cache::load(&cache).is_ok_and(|cached| {
                let revisions = cached.revisions();
                revisions.len() == ALL
                    && revisions
                        .iter()
                        .all(|(_, revision)| *revision == Some(FINAL_REVISION))
            })
        },
    )
    .await;

    stop.store(true, SeqCst);
    for worker in workers {
        worker.await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fds_after_load = sidecar.open_fds();

    let (rss_start, fds_start) = samples[0];
    let (rss_end, fds_end) = *samples.last().unwrap();
    let unexpected = load.unexpected.lock().unwrap().clone();
    println!("RSS KiB and fds after each cycle: {samples:?}");
    println!(
        "soak {total}s, {cycles} cycles of {} phases of {phase_len:?}: {} answers, {} unexpected; \
         RSS {rss_start} KiB after cycle 1 -> {rss_end} KiB at the end; \
         fds {fds_start} -> {fds_end} under load, {fds_before_load} before load, {fds_after_load} after",
        PHASES.len(),
        load.ok.load(SeqCst),
        unexpected.len(),
    );
    assert!(unexpected.is_empty(), "unexpected answers: {unexpected:#?}");
    assert!(load.ok.load(SeqCst) > 1000, "the load hardly ran");
    assert!(
        rss_end <= rss_start + 16 * 1024,
        "resident memory grew from {rss_start} KiB to {rss_end} KiB"
    );
    assert!(
        fds_end <= fds_start + 8,
        "fds grew from {fds_start} to {fds_end}"
    );
    assert!(
        fds_after_load <= fds_before_load + 4,
        "fds {fds_before_load} before the load, {fds_after_load} after it"
    );
    assert!(!sidecar.log().contains("panicked"), "{}", sidecar.log());
    sim.stop();
}

async fn run_phase(
    phase: Phase,
    sim: &Simulator,
    admin: std::net::SocketAddr,
    data: std::net::SocketAddr,
    step: u64,
    len: Duration,
) {
    let faults = match phase {
        Phase::Errors => Faults {
            error_rate: 0.5,
            error_status: 503,
            ..Faults::default()
        },
        Phase::SlowPastTimeout => Faults {
            latency: Duration::from_millis(1500),
            ..Faults::default()
        },
        Phase::Malformed => Faults {
            malformed_rate: 0.5,
            ..Faults::default()
        },
        Phase::Hangs => Faults {
            hang_rate: 0.5,
            ..Faults::default()
        },
        _ => Faults::default(),
    };
    sim.set_faults(faults);
    match phase {
        Phase::Down => sim.go_down(len / 2),
        Phase::Gone => sim.compact(),
        Phase::InvalidDocuments => {
            // Newer revisions of ten served projects, each breaking a rule.
            let docs = (0..10).map(|i| {
                let mut doc = serde_json::to_value(generate::project(i, 500_000 + step, None))
                    .expect("a generated project serialises");
                for env in doc["environments"].as_array_mut().expect("environments") {
                    env["pointers"]["prompts"]["marker"] = MARKER.into();
                }
                doc["environments"][0]["color"] = "BAD".into();
                doc
            });
            sim.publish(docs);
        }
        Phase::MassDeletion => mass_deletion(sim, admin, data, step).await,
        _ => {}
    }
}

/// Half the projects vanish while the sidecar cannot see it happen, so it
/// can only learn of it from a full snapshot: the blast-radius guard must
/// refuse that snapshot and keep serving them; then they come back.
async fn mass_deletion(
    sim: &Simulator,
    admin: std::net::SocketAddr,
    data: std::net::SocketAddr,
    step: u64,
) {
    sim.go_down(Duration::from_millis(800));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let removed: Vec<String> = (SERVED..ALL).map(generate::project_id).collect();
    sim.remove(removed.iter().map(String::as_str));
    sim.compact();
    let client = reqwest::Client::new();
    common::eventually_within(Duration::from_secs(10), "the guard refusing", || async {
        let status = client
            .get(format!("http://{admin}/admin/status"))
            .send()
            .await;
        match status {
            Ok(r) => r
                .text()
                .await
                .unwrap_or_default()
                .contains("refusing to remove"),
            Err(_) => false,
        }
    })
    .await;
    let still = client
        .get(format!("http://{data}/v1/resolve?project={}", removed[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(
        still.status(),
        200,
        "a refused mass deletion removed a project"
    );
    // They come back with a newer revision.
    let revision = 600_000 + step;
    publish(sim, SERVED..ALL, revision);
}

/// Valid generated projects `range` at `revision`.
fn publish(sim: &Simulator, range: std::ops::Range<usize>, revision: u64) {
    sim.publish(
        range.map(|i| {
            serde_json::to_value(generate::project(i, revision, None)).expect("serialises")
        }),
    );
}

/// With `SOAK_SIGNED=1`: the simulator signs everything it publishes and
/// the sidecar requires signatures (the `[trust]` section to add).
fn signing(sim: &Simulator, dir: &std::path::Path) -> String {
    if std::env::var_os("SOAK_SIGNED").is_none() {
        return String::new();
    }
    let key = common::signing::TestKey::new(dir, "soak");
    let text = std::fs::read_to_string(&key.private_file).unwrap();
    sim.sign_with(Arc::new(
        env_sidecar::model::keys::parse_private(&text).unwrap(),
    ));
    format!(
        "[trust]\nkeys = [\"{}\"]\nrequire_signatures = true\n",
        key.public_file.display()
    )
}

/// `(id, revision)` of every served project, sorted.
async fn served_revisions(
    client: &reqwest::Client,
    data: std::net::SocketAddr,
) -> Option<Vec<(String, u64)>> {
    let resp = client
        .get(format!("http://{data}/v1/projects"))
        .send()
        .await
        .ok()?;
    let body: Value = serde_json::from_str(&resp.text().await.ok()?).ok()?;
    let mut list: Vec<(String, u64)> = body["projects"]
        .as_array()?
        .iter()
        .map(|p| Some((p["id"].as_str()?.to_string(), p["revision"].as_u64()?)))
        .collect::<Option<_>>()?;
    list.sort();
    Some(list)
}

#[derive(Clone, Default)]
struct Load {
    ok: Arc<AtomicU64>,
    unexpected: Arc<Mutex<Vec<String>>>,
}

impl Load {
    /// Resolves random served projects over one keep-alive client until
    /// stopped; anything but a well-formed 200 is unexpected.
    async fn run(self, data: std::net::SocketAddr, seed: u64, stop: Arc<AtomicBool>) {
        let client = reqwest::Client::new();
        let mut rng = generate::Rng(seed + 1);
        while !stop.load(SeqCst) {
            let id = generate::project_id(rng.below(SERVED));
            let env = ["qa", "staging", "prod", "nope"][rng.below(4)];
            let url = format!("http://{data}/v1/resolve?project={id}&environment={env}");
            let problem = match client.get(&url).send().await {
                Err(e) => Some(format!("{url}: {e}")),
                Ok(resp) if resp.status() != 200 => {
                    Some(format!("{url}: status {}", resp.status()))
                }
                Ok(resp) => {
                    let text = resp.text().await.unwrap_or_default();
                    let body: Value = serde_json::from_str(&text).unwrap_or_default();
                    if body["project"] != id.as_str() || text.contains(MARKER) {
                        Some(format!("{url}: {text}"))
                    } else {
                        None
                    }
                }
            };
            match problem {
                None => {
                    self.ok.fetch_add(1, SeqCst);
                }
                Some(p) => {
                    let mut list = self.unexpected.lock().unwrap();
                    if list.len() < 20 {
                        list.push(p);
                    }
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum RedisPhase {
    Clean,
    ClientPause,
    DebugSleep,
    Failover,
    Flushed,
    InvalidDocuments,
}

const REDIS_PHASES: [RedisPhase; 6] = [
    RedisPhase::Clean,
    RedisPhase::ClientPause,
    RedisPhase::DebugSleep,
    RedisPhase::Failover,
    RedisPhase::Flushed,
    RedisPhase::InvalidDocuments,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_soak_under_redis_faults_loses_nothing_and_converges() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut redis) = common::topology::Sentinels::start(dir.path(), 1) else {
        return;
    };
    let url = redis.url();
    let total: u64 = std::env::var("REDIS_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(default_seconds);
    let cycles = (total / 15).max(2);
    let phase_len = Duration::from_secs(total) / (cycles as u32 * REDIS_PHASES.len() as u32);
    let sim = Simulator::start("127.0.0.1:0".parse().unwrap(), None)
        .await
        .unwrap();
    sim.mirror_to_redis(&url, None, "env-sidecar")
        .await
        .unwrap();
    let trust = signing(&sim, dir.path());
    sim.generate(ALL);
    let cache = dir.path().join("lkg.json");
    let config = dir.path().join("sidecar.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [source]\nkind = \"redis\"\nurl = \"{}\"\nrequest_timeout = \"1s\"\n\
             long_poll_wait = \"2s\"\nbackoff_max = \"500ms\"\nmax_removed_fraction = 0.3\n\
             [cache]\npath = \"{}\"\n{trust}",
            url,
            cache.display()
        ),
    )
    .unwrap();
    let mut sidecar = SidecarProcess::start(&config, &[("RUST_LOG", "info")]);
    let (data, admin) = (sidecar.data_addr, sidecar.admin_addr);
    common::eventually_within(Duration::from_secs(20), "ready", || async {
        reqwest::get(format!("http://{admin}/readyz"))
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = Load::default();
    let workers: Vec<_> = (0..4u64)
        .map(|seed| tokio::spawn(load.clone().run(data, seed, stop.clone())))
        .collect();
    let mutator = sim.spawn_mutator(SERVED, 20.0);
    let mut samples = Vec::new();
    for cycle in 0..cycles {
        for (index, phase) in REDIS_PHASES.iter().enumerate() {
            let started = Instant::now();
            let step = cycle * 10 + index as u64;
            match phase {
                RedisPhase::Clean => {}
                // The load keeps running on the other worker while these
                // block this one.
                RedisPhase::ClientPause => tokio::task::block_in_place(|| {
                    redis_cli(redis.primary(), &["CLIENT", "PAUSE", "1500", "ALL"]);
                }),
                RedisPhase::DebugSleep => tokio::task::block_in_place(|| {
                    redis_cli(redis.primary(), &["DEBUG", "SLEEP", "1.5"]);
                }),
                RedisPhase::Failover => tokio::task::block_in_place(|| {
                    // The sentinels promote the replica; the old primary
                    // comes back empty and is made a replica again.
                    let old = redis.kill_primary_now();
                    redis.wait_new_primary(old);
                    redis.restart(old);
                }),
                RedisPhase::Flushed => tokio::task::block_in_place(|| {
                    // Everything gone at once; the simulator's next write
                    // finds the population marker missing and writes it
                    // all again, 500 projects a transaction.
                    redis_cli(redis.primary(), &["FLUSHALL"]);
                }),
                RedisPhase::InvalidDocuments => {
                    let docs = (0..10).map(|i| {
                        let mut doc =
                            serde_json::to_value(generate::project(i, 800_000 + step, None))
                                .expect("a generated project serialises");
                        for env in doc["environments"].as_array_mut().expect("environments") {
                            env["pointers"]["prompts"]["marker"] = MARKER.into();
                        }
                        doc["environments"][0]["color"] = "BAD".into();
                        doc
                    });
                    sim.publish(docs);
                }
            }
            tokio::time::sleep(phase_len.saturating_sub(started.elapsed())).await;
            assert!(sidecar.is_running(), "the sidecar died:\n{}", sidecar.log());
        }
        samples.push((sidecar.rss_kib(), sidecar.open_fds()));
    }
    mutator.abort();
    publish(&sim, 0..ALL, FINAL_REVISION);
    let expected: Vec<(String, u64)> = (0..ALL)
        .map(|i| (generate::project_id(i), FINAL_REVISION))
        .collect();
    let client = reqwest::Client::new();
    common::eventually_within(Duration::from_secs(30), "convergence", || async {
        served_revisions(&client, data).await.as_ref() == Some(&expected)
    })
    .await;
    stop.store(true, SeqCst);
    for worker in workers {
        worker.await.unwrap();
    }
    let unexpected = load.unexpected.lock().unwrap().clone();
    println!(
        "redis soak {total}s, {cycles} cycles: {} answers, {} unexpected; RSS KiB and fds per cycle: {samples:?}",
        load.ok.load(SeqCst),
        unexpected.len()
    );
    assert!(unexpected.is_empty(), "unexpected answers: {unexpected:#?}");
    assert!(load.ok.load(SeqCst) > 1000, "the load hardly ran");
    let (rss_start, _) = samples[0];
    let (rss_end, _) = *samples.last().unwrap();
    assert!(
        rss_end <= rss_start + 16 * 1024,
        "RSS {rss_start} -> {rss_end} KiB"
    );
    assert!(!sidecar.log().contains("panicked"), "{}", sidecar.log());
    sim.stop();
}
