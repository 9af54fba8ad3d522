//! Writer-side costs: replacing one project (1k / 10k / 100k loaded, to show
//! it does not depend on the count), applying a full snapshot (parse +
//! validate + index, 10k / 100k), the same snapshot applied again over
//! itself (every project the served revision again: parse and the
//! same-document check; and as a Redis full load applies it, each value
//! hashed and skipped unread as served), snapshot parse+validate throughput, and
//! applying hundreds of scheduled changes due at the same instant.

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use env_sidecar::model::origin::Origin;
use env_sidecar::model::raw::RawDigest;
use env_sidecar::model::validate::validate;
use env_sidecar::model::wire::{parse_snapshot, BodyReader, Content, Incoming, SnapshotBody};
use env_sidecar::sim::generate;
use env_sidecar::store::{Contents, Store, StoreWriter, Update};

/// Applies `contents` as news from the source, now.
fn apply(writer: &mut StoreWriter, contents: Contents) -> env_sidecar::store::ApplyReport {
    writer
        .apply(Update::new(Origin::Snapshot, contents), SystemTime::now())
        .expect("applies")
}

fn loaded(n: usize) -> (Store, StoreWriter) {
    let (store, mut writer) = Store::new(0.5);
    let body = SnapshotBody {
        cursor: env_sidecar::model::cursor::Cursor::Revision(1),
        projects: (0..n)
            .map(|i| Incoming::document(generate::project(i, 1, None)))
            .collect(),
        ..SnapshotBody::default()
    };
    apply(&mut writer, Contents::Snapshot(body));
    (store, writer)
}

fn replace_one(c: &mut Criterion) {
    let mut group = c.benchmark_group("replace_one_project");
    for n in [1_000, 10_000, 100_000] {
        let (_store, mut writer) = loaded(n);
        let mut revision = 1;
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter_batched(
                || {
                    revision += 1;
                    generate::project(n / 2, revision, None)
                },
                |doc| {
                    let contents = Contents::Project {
                        id: doc.id.clone(),
                        document: Some(Incoming::document(doc)),
                    };
                    black_box(apply(&mut writer, contents))
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn full_snapshot(c: &mut Criterion) {
    let mut group = c.benchmark_group("apply_full_snapshot");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    for n in [10_000, 100_000] {
        let json = generate::snapshot_json(n, 1);
        group.throughput(Throughput::Bytes(json.len() as u64));
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter_batched(
                || Store::new(0.5),
                |(store, mut writer)| {
                    let body = parse_snapshot(&json).expect("parses");
                    apply(&mut writer, Contents::Snapshot(body));
                    // Dropping 100k projects is not part of applying them.
                    store
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

fn reapply_unchanged(c: &mut Criterion) {
    let mut group = c.benchmark_group("reapply_unchanged");
    group.sample_size(10);
    let n = 10_000;
    let json = generate::snapshot_json(n, 1);
    let (_store, mut writer) = loaded(n);
    group.throughput(Throughput::Bytes(json.len() as u64));
    group.bench_function(BenchmarkId::from_parameter(n), |b| {
        b.iter(|| {
            let body = parse_snapshot(&json).expect("parses");
            let report = apply(&mut writer, Contents::Snapshot(body));
            assert_eq!(report.unchanged, n);
            black_box(report)
        })
    });
    // As a Redis full load re-applies it: each value filed under its id,
    // hashed, and not read when byte for byte what is served.
    let values: Vec<(String, String)> = (0..n)
        .map(|i| {
            let doc = generate::project(i, 1, None);
            (doc.id.clone(), serde_json::to_string(&doc).expect("writes"))
        })
        .collect();
    let (store, mut writer) = Store::new(0.5);
    let filed = |store: &Store| {
        let reader = BodyReader::default();
        let projects = values
            .iter()
            .map(|(id, json)| {
                reader.filed_unless(id, json, store.project(id).and_then(|p| p.raw()))
            })
            .collect();
        Contents::Snapshot(SnapshotBody {
            cursor: env_sidecar::model::cursor::Cursor::Revision(1),
            projects,
            ..SnapshotBody::default()
        })
    };
    assert_eq!(apply(&mut writer, filed(&store)).added, n);
    // Of which: hashing every value, what a cold start pays for it.
    group.bench_function(format!("{n}_hashed_only"), |b| {
        b.iter(|| {
            let digests = values
                .iter()
                .map(|(_, json)| RawDigest::of(json.as_bytes()));
            black_box(digests.count())
        })
    });
    group.bench_function(format!("{n}_filed_as_served"), |b| {
        b.iter(|| {
            let report = apply(&mut writer, filed(&store));
            assert_eq!(report.unchanged, n);
            black_box(report)
        })
    });
    group.finish();
}

fn parse_validate(c: &mut Criterion) {
    let json = generate::snapshot_json(10_000, 1);
    let mut group = c.benchmark_group("parse_validate");
    group
        .sample_size(10)
        .throughput(Throughput::Bytes(json.len() as u64));
    group.bench_function("10000_projects", |b| {
        b.iter(|| {
            let body = parse_snapshot(&json).expect("parses");
            let valid = body
                .projects
                .into_iter()
                .filter_map(|p| match p.content {
                    Content::Document(doc) => Some(*doc),
                    _ => None,
                })
                .map(|p| validate(p, &[]))
                .filter(|v| v.is_ok());
            black_box(valid.count())
        })
    });
    group.finish();
}

fn scheduled_burst(c: &mut Criterion) {
    const DUE: usize = 300;
    let at = SystemTime::now() + Duration::from_secs(3600);
    let mut group = c.benchmark_group("scheduled");
    group.bench_function(BenchmarkId::new("apply_due_same_instant", DUE), |b| {
        b.iter_batched(
            || {
                let (store, mut writer) = Store::new(0.5);
                let projects = (0..DUE)
                    .map(|i| {
                        let mut doc = generate::project(i, 1, None);
                        let mut overlay = std::collections::BTreeMap::new();
                        overlay.insert(
                            "prompts".to_string(),
                            [("prompt-0".to_string(), "cut".to_string())].into(),
                        );
                        doc.environments[0]
                            .scheduled
                            .push(env_sidecar::model::wire::Scheduled {
                                at: env_sidecar::model::timestamp::format_rfc3339(at),
                                pointers: overlay,
                            });
                        Incoming::document(doc)
                    })
                    .collect();
                let body = SnapshotBody {
                    cursor: env_sidecar::model::cursor::Cursor::Revision(1),
                    projects,
                    ..SnapshotBody::default()
                };
                apply(&mut writer, Contents::Snapshot(body));
                (store, writer)
            },
            |(store, mut writer)| {
                let mut applied = 0;
                for i in 0..DUE {
                    applied += writer
                        .apply_due(&generate::project_id(i), at + Duration::from_millis(1))
                        .applied;
                }
                assert_eq!(applied, DUE);
                store
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(
    benches,
    replace_one,
    full_snapshot,
    reapply_unchanged,
    parse_validate,
    scheduled_burst
);
criterion_main!(benches);
