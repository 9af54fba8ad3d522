//! Propagation delay, control plane publish → served, in watch mode over
//! loopback: the simulator (10 000 generated projects) publishes one new
//! revision at a time and the bench measures how long until the sidecar's
//! store serves it. Prints median, p90, p99 and max over 300 changes.
//!
//! Run: `cargo bench --bench propagation`

use std::time::{Duration, Instant};

use env_sidecar::app;
use env_sidecar::config::{Config, HttpConfig, Source};
use env_sidecar::sim::simulator::Simulator;

const PROJECTS: usize = 10_000;
const CHANGES: usize = 300;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` probes every bench target
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let sim = Simulator::start("127.0.0.1:0".parse().unwrap(), None)
        .await
        .expect("simulator");
    sim.generate(PROJECTS);
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.admin.listen = "127.0.0.1:0".parse().unwrap();
    config.cache.path = Default::default();
    config.source.kind = Source::Http(HttpConfig::new(sim.url()));
    let sidecar = app::start(config).await.expect("sidecar");
    let store = sidecar.store().clone();
    let started = Instant::now();
    while !store.is_loaded() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!("loaded {PROJECTS} projects in {:?}", started.elapsed());

    let mut delays = Vec::with_capacity(CHANGES);
    for i in 0..CHANGES {
        let n = (i * 7919) % PROJECTS;
        let id = env_sidecar::sim::generate::project_id(n);
        let want = store.project(&id).map_or(1, |p| p.revision()) + 1;
        let doc = env_sidecar::sim::generate::project(n, want, Some(std::time::SystemTime::now()));
        let text = serde_json::to_string(&doc).expect("json");
        let t0 = Instant::now();
        sim.publish_raw(vec![(id.clone(), want, text)]);
        while store.project(&id).map(|p| p.revision()) != Some(want) {
            tokio::task::yield_now().await;
            if t0.elapsed() > Duration::from_secs(10) {
                panic!("change {i} not served after 10 s");
            }
        }
        delays.push(t0.elapsed());
        // Space changes out a little, as real publications are.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    delays.sort();
    let pct = |p: f64| delays[((delays.len() as f64 * p) as usize).min(delays.len() - 1)];
    println!(
        "propagation over {CHANGES} changes (watch mode, loopback, {PROJECTS} projects loaded):"
    );
    println!(
        "  median {:?}  p90 {:?}  p99 {:?}  max {:?}",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        delays[delays.len() - 1]
    );
    sidecar.shutdown().await;
    sim.stop();
}
