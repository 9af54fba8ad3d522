//! Embedded resolve: the handle an embedding gateway gets from
//! `app::embed::embed` (a file source of 1k / 10k / 100k generated
//! projects, the writer, the scheduler: the whole machinery), resolving
//! hit, fallback, unknown project and strict miss with the answer lent,
//! not copied; `hit_owned` is the owned answer the HTTP layer takes (four
//! reference-count bumps more); `hit_pointer` also reads one pointer back
//! out of the answer. Ids cycle over 1024 projects spread through the
//! store, so lookups are not all cache-hot.

use std::time::{Duration, Instant};

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use env_sidecar::app::embed::{embed, EmbedOptions, Embedded};
use env_sidecar::config::Config;
use env_sidecar::sim::generate;
use env_sidecar::store::PointerKind;
use env_sidecar::telemetry::{Api, Metrics, ResolveOutcome};

/// The sidecar embedded over a file of `n` generated projects, ready.
fn embedded(runtime: &tokio::runtime::Runtime, dir: &std::path::Path, n: usize) -> Embedded {
    let path = dir.join(format!("snapshot-{n}.json"));
    std::fs::write(&path, generate::snapshot_json(n, 1)).unwrap();
    let mut config = Config::default();
    config.source.kind =
        env_sidecar::config::Source::File(env_sidecar::config::FileConfig { path });
    config.cache.path = Default::default();
    runtime.block_on(async {
        let embedded = embed(config, EmbedOptions::default())
            .await
            .expect("embeds");
        while embedded.ready().is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        embedded
    })
}

fn resolve(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut group = c.benchmark_group("resolve");
    for n in [1_000, 10_000, 100_000] {
        let handle = embedded(&runtime, dir.path(), n);
        let store = handle.store().clone();
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
        group.bench_function(BenchmarkId::new("hit_pointer", n), |b| {
            b.iter(|| {
                black_box(
                    store.resolve_with(&ids[next()], Some("Staging"), false, |a| {
                        a.pointer(PointerKind::Prompts, "prompt-1").map(|v| v.len())
                    }),
                )
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
        runtime.block_on(handle.shutdown());
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
