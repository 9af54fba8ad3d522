//! What checking signatures costs the writer: the time to parse, check
//! and apply a 100 000-project snapshot whose projects are signed
//! envelopes, against the same snapshot unsigned, in alternating rounds of
//! one run (medians and the ratio), plus re-applying the same snapshot to
//! a loaded store (every project unchanged: a signed one is recognised by
//! its envelope text, not checked again) and the bytes a project keeps at
//! rest (an envelope is the document in base64 plus its signature).
//!
//! Times are wall time and the whole process's CPU time (`/proc/PID/stat`):
//! a first load is judged on every core, a re-apply on the writer's
//! thread alone, as in the sidecar.
//!
//! Run: `cargo bench --bench signatures` (`-- --quick`: 20 000 projects,
//! 3 rounds; `-- --projects N --rounds R`).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use env_sidecar::model::keys;
use env_sidecar::model::origin::{MassRemoval, Origin};
use env_sidecar::model::trust::Trust;
use env_sidecar::model::wire::parse_snapshot;
use env_sidecar::sim::generate;
use env_sidecar::store::{Contents, Store, StoreWriter, Update};

mod support;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<usize>().ok())
    };
    let quick = args.iter().any(|a| a == "--quick");
    let projects = flag("--projects").unwrap_or(if quick { 20_000 } else { 100_000 });
    let rounds = flag("--rounds").unwrap_or(if quick { 3 } else { 5 });

    let (private, public) = keys::generate(Some("bench")).expect("a key");
    let signer = keys::parse_private(&private).expect("the key reads");
    let now = SystemTime::now();
    let docs: Vec<_> = (0..projects)
        .map(|i| generate::project(i, 1, None))
        .collect();
    let plain: Vec<String> = docs
        .iter()
        .map(|d| serde_json::to_string(d).expect("json"))
        .collect();
    let started = Instant::now();
    let sealed: Vec<String> = docs
        .iter()
        .map(|d| signer.seal_document(d, now, None))
        .collect();
    let signing = started.elapsed();
    let body = |items: &[String]| format!(r#"{{"revision":1,"projects":[{}]}}"#, items.join(","));
    let plain = body(&plain);
    let sealed = body(&sealed);
    let trust = Arc::new(Trust::new(vec![public], true, None));
    println!(
        "{projects} projects: unsigned snapshot {:.1} MB, signed {:.1} MB; signing them all took {:.2} s ({:.1} µs each)",
        plain.len() as f64 / 1e6,
        sealed.len() as f64 / 1e6,
        signing.as_secs_f64(),
        signing.as_secs_f64() * 1e6 / projects as f64
    );

    let mut first = [Vec::new(), Vec::new()];
    let mut again = [Vec::new(), Vec::new()];
    let mut at_rest = [0usize; 2];
    for _ in 0..rounds {
        for (k, (json, trust)) in [(&plain, None), (&sealed, Some(trust.clone()))]
            .into_iter()
            .enumerate()
        {
            let (store, mut writer) = Store::new(1.0);
            if let Some(trust) = trust {
                writer.set_trust(trust);
            }
            first[k].push(apply(&mut writer, json, projects));
            again[k].push(apply(&mut writer, json, 0));
            at_rest[k] = store.projects().iter().map(|p| p.stored_len()).sum();
        }
    }
    let row = |what: &str, m: &[Vec<Timing>; 2]| {
        let (u, s) = (median(&m[0]), median(&m[1]));
        println!(
            "{what:<34} unsigned {:>7.0} ms wall {:>7.0} ms CPU | signed {:>7.0} ms wall {:>7.0} ms CPU | signed/unsigned {:.2}x CPU, +{:.1} µs CPU per project",
            u.wall_ms, u.cpu_ms, s.wall_ms, s.cpu_ms,
            s.cpu_ms / u.cpu_ms.max(1e-9),
            (s.cpu_ms - u.cpu_ms) * 1e3 / projects as f64
        );
    };
    println!("medians of {rounds} alternating rounds (process CPU, every thread):");
    row("parse + check + apply, new store", &first);
    row("the same snapshot again (unchanged)", &again);
    println!(
        "kept at rest per project: unsigned {} bytes, signed {} bytes ({:.2}x)",
        at_rest[0] / projects,
        at_rest[1] / projects,
        at_rest[1] as f64 / at_rest[0].max(1) as f64
    );
}

#[derive(Clone, Copy)]
struct Timing {
    wall_ms: f64,
    cpu_ms: f64,
}

/// Parses `json` and applies it as the writer does; checks that
/// `expect_added` projects were added.
fn apply(writer: &mut StoreWriter, json: &str, expect_added: usize) -> Timing {
    let (wall, cpu) = (Instant::now(), process_cpu());
    let body = parse_snapshot(json.as_bytes()).expect("parses");
    let report = writer
        .apply(
            Update::new(
                Origin::Refresh(MassRemoval::Allowed),
                Contents::Snapshot(body),
            ),
            SystemTime::now(),
        )
        .expect("applies");
    let timing = Timing {
        wall_ms: wall.elapsed().as_secs_f64() * 1e3,
        cpu_ms: (process_cpu() - cpu).as_secs_f64() * 1e3,
    };
    assert_eq!(report.added, expect_added, "{:?}", report.rejected.first());
    assert!(report.rejected.is_empty());
    timing
}

fn median(items: &[Timing]) -> Timing {
    let mut wall: Vec<f64> = items.iter().map(|t| t.wall_ms).collect();
    let mut cpu: Vec<f64> = items.iter().map(|t| t.cpu_ms).collect();
    wall.sort_by(f64::total_cmp);
    cpu.sort_by(f64::total_cmp);
    Timing {
        wall_ms: wall[wall.len() / 2],
        cpu_ms: cpu[cpu.len() / 2],
    }
}

/// This process's CPU time, every thread's.
fn process_cpu() -> Duration {
    support::cpu_time(std::process::id()).unwrap_or_default()
}
