//! In-process resolve: hit, fallback, unknown project and strict miss, at
//! 1k / 10k / 100k projects, through the library call (`resolve_with`, the
//! answer lent, not copied); `hit_owned` is the owned answer the HTTP layer
//! takes (three reference-count bumps more). Ids cycle over 1024 projects
//! spread through the store, so lookups are not all cache-hot.

use std::time::{Duration, Instant, SystemTime};

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use env_sidecar::model::wire::SnapshotBody;
use env_sidecar::sim::generate;
use env_sidecar::store::{ApplyOptions, Store, Update};
use env_sidecar::telemetry::{Api, Metrics, ResolveOutcome};

fn loaded_store(n: usize) -> Store {
    let (store, mut writer) = Store::new(0.5);
    let body = SnapshotBody {
        revision: 1,
        projects: (0..n).map(|i| Ok(generate::project(i, 1, None))).collect(),
    };
    let opts = ApplyOptions {
        now: SystemTime::now(),
        allow_mass_removal: false,
    };
    writer.apply(Update::Snapshot(body), opts).expect("applies");
    store
}

fn resolve(c: &mut Criterion) {
    let mut group = c.benchmark_group("resolve");
    for n in [1_000, 10_000, 100_000] {
        let store = loaded_store(n);
        let ids: Vec<String> = (0..1024)
            .map(|i| generate::project_id((i * 7919) % n))
            .collect();
        let mut k = 0usize;
        let mut next = move || {
            k = (k + 1) & 1023;
            k
        };
        group.bench_function(BenchmarkId::new("hit", n), |b| {
            b.iter(|| {
                black_box(store.resolve_with(&ids[next()], Some("Staging"), false, |a| a.len()))
            })
        });
        group.bench_function(BenchmarkId::new("hit_owned", n), |b| {
            b.iter(|| {
                black_box(store.resolve_with(&ids[next()], Some("Staging"), false, |a| a.owned()))
            })
        });
        group.bench_function(BenchmarkId::new("fallback", n), |b| {
            b.iter(|| black_box(store.resolve_with(&ids[next()], Some("nope"), false, |a| a.len())))
        });
        group.bench_function(BenchmarkId::new("unknown_project", n), |b| {
            b.iter(|| {
                black_box(store.resolve_with("proj-missing", Some("prod"), false, |a| a.len()))
            })
        });
        group.bench_function(BenchmarkId::new("strict_miss", n), |b| {
            b.iter(|| black_box(store.resolve_with(&ids[next()], Some("nope"), true, |a| a.len())))
        });
    }
    group.finish();
}

/// What the data plane adds per resolve for metrics: one counter add and
/// one histogram push (plus reading the clock twice, measured apart).
fn metrics_recording(c: &mut Criterion) {
    let metrics = Metrics::new();
    let mut group = c.benchmark_group("metrics");
    group.bench_function("record_resolve", |b| {
        b.iter(|| {
            metrics.resolved(
                black_box(Api::Resolve),
                black_box(ResolveOutcome::Exact),
                black_box(Duration::from_nanos(700)),
            )
        })
    });
    group.bench_function("instant_now_and_elapsed", |b| {
        b.iter(|| {
            let started = Instant::now();
            black_box(started.elapsed())
        })
    });
    // Samples pile up between scrapes; fold them as the upkeep task does.
    metrics.upkeep();
    group.finish();
}

criterion_group!(benches, resolve, metrics_recording);
criterion_main!(benches);
