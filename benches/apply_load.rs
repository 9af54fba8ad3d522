//! Resolve latency while the writer re-applies a 100 000-project snapshot
//! again and again, against the same sidecar idle: the proof that applying
//! (parse, validate, render, trim) runs off the threads that serve
//! requests.
//!
//! The sidecar binary follows the control-plane simulator (in this
//! process) in watch mode. Idle and churn rounds alternate; in a churn
//! round the simulator publishes a new revision of every project, waits
//! until the sidecar serves it, and publishes the next, for as long as
//! wrk runs. Revision sets are generated before any round, so the harness
//! does little more than hand over prepared strings while measuring.
//!
//! It runs twice: with the runtime's default worker count (one per core),
//! and with one worker (`TOKIO_WORKER_THREADS=1`, what a sidecar limited to
//! one CPU gets), where an apply on a worker would stall every request.
//!
//! Run: `cargo bench --bench apply_load` (`-- --quick`: fewer, shorter
//! rounds). Needs `wrk`. `ENV_SIDECAR_BENCH_BIN=path` measures another
//! build of the sidecar (an older commit) with the same harness.

#[path = "support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use env_sidecar::sim::generate;
use env_sidecar::sim::simulator::Simulator;
use support::{Load, Run};

const PROJECTS: usize = 100_000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    if support::which("wrk").is_none() {
        eprintln!("apply_load needs wrk: apt-get install wrk (nothing was run)");
        std::process::exit(2);
    }
    let quick = args.iter().any(|a| a == "--quick");
    let (rounds, secs) = if quick { (2, 6) } else { (3, 10) };
    let load = Load {
        threads: 1,
        connections: 16,
        secs,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let sim = runtime.block_on(async {
        let sim = Simulator::start("127.0.0.1:0".parse().unwrap(), None)
            .await
            .expect("simulator");
        sim.generate(PROJECTS);
        sim
    });
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("load.lua");
    std::fs::write(&script, support::lua_script(PROJECTS, "/v1/resolve", false)).unwrap();
    // Enough revision sets for every churn round of both variants (an
    // apply cycle takes well over a second at this size).
    let per_round = secs as usize + 1;
    let sets_needed = 2 * rounds * per_round;
    eprintln!("generating {sets_needed} revision sets of {PROJECTS} projects ...");
    let mut sets: Vec<Vec<(String, u64, String)>> = (0..sets_needed)
        .map(|k| {
            let revision = k as u64 + 2;
            (0..PROJECTS)
                .map(|i| {
                    let doc = generate::project(i, revision, None);
                    (
                        doc.id.clone(),
                        revision,
                        serde_json::to_string(&doc).unwrap(),
                    )
                })
                .collect()
        })
        .collect();
    sets.reverse();

    for (variant, envs) in [
        ("default workers (one per core)", &[][..]),
        ("one runtime worker", &[("TOKIO_WORKER_THREADS", "1")][..]),
    ] {
        let data = support::shared::free_addr();
        let admin = support::shared::free_addr();
        let sidecar = support::start_sidecar_with(
            dir.path(),
            "sidecar",
            &format!(
                "[server]\nlisten = \"{data}\"\n[admin]\nlisten = \"{admin}\"\n[source]\nkind = \"http\"\nurl = \"{}\"\nrequest_timeout = \"60s\"\n[cache]\npath = \"\"\n",
                sim.url()
            ),
            envs,
        );
        let target = support::Target::new("sidecar", format!("http://{data}"), Some(sidecar));
        support::wait_ok(
            data,
            "/v1/resolve?project=proj-099999",
            Duration::from_secs(120),
        );

        let mut idle = Vec::new();
        let mut churn = Vec::new();
        let mut applied_per_round = Vec::new();
        for round in 0..rounds {
            let run = support::wrk(&target.url, load, &script, target.pid);
            report(round, "idle", &run);
            idle.push(run);

            let stop = Arc::new(AtomicBool::new(false));
            let applied = Arc::new(AtomicUsize::new(0));
            // In revision order: an older one after a newer would be stale.
            let round_sets: Vec<_> = (0..per_round).filter_map(|_| sets.pop()).collect();
            let publisher = {
                let (sim, stop, applied) = (sim.clone(), stop.clone(), applied.clone());
                std::thread::spawn(move || {
                    for set in round_sets {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let revision = set[0].1;
                        sim.publish_raw(set);
                        wait_served(data, revision);
                        applied.fetch_add(1, Ordering::Relaxed);
                    }
                })
            };
            let run = support::wrk(&target.url, load, &script, target.pid);
            stop.store(true, Ordering::Relaxed);
            // The apply in flight finishes before the next idle round.
            publisher.join().unwrap();
            report(round, "while re-applying", &run);
            applied_per_round.push(applied.load(Ordering::Relaxed));
            churn.push(run);
        }
        let (i, c) = (support::medians(&idle), support::medians(&churn));
        println!(
            "\n{variant}: {PROJECTS} projects; wrk -t{} -c{} for {secs}s per round; {rounds} rounds of each (medians)",
            load.threads, load.connections
        );
        println!("| state | req/s | p50 | p99 | sidecar CPU/req (applies included) | full applies during the round |");
        println!("|---|---|---|---|---|---|");
        let cpu = |m: &support::Medians| {
            m.cpu
                .map_or("-".into(), |c| format!("{:.2} µs", c.as_secs_f64() * 1e6))
        };
        println!(
            "| idle | {:.0} | {:.1?} | {:.1?} | {} | 0 |",
            i.rps,
            i.p50,
            i.p99,
            cpu(&i)
        );
        println!(
            "| re-applying 100k projects in a loop | {:.0} | {:.1?} | {:.1?} | {} | {:?} |",
            c.rps,
            c.p50,
            c.p99,
            cpu(&c),
            applied_per_round
        );
        println!(
            "p99 while re-applying / idle p99: {:.2} (goal: at most 2)",
            c.p99.as_secs_f64() / i.p99.as_secs_f64()
        );
    }
    sim.stop();
}

fn report(round: usize, what: &str, run: &Run) {
    eprintln!(
        "round {}: {what:>18}: {:>8.0} req/s  p50 {:>8.1?}  p99 {:>8.1?}",
        round + 1,
        run.rps,
        run.p50,
        run.p99
    );
}

/// Waits until the last project of the set is served at `revision`.
fn wait_served(data: SocketAddr, revision: u64) {
    let needle = format!("\"revision\":{revision},");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if support::http_get(data, "/v1/resolve?project=proj-099999")
            .is_some_and(|(_, body)| body.contains(&needle))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "revision {revision} never served"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
