//! The last-known-good cache: written after accepted changes (debounced),
//! loaded first on start so the sidecar serves while the control plane is
//! down, carried on from its cursor, and ignored when damaged.

use crate::common;

use std::sync::atomic::Ordering;

use common::{eventually, http_config, project, simulator, TestSidecar};

fn cached(config: &mut env_sidecar::config::Config, path: &std::path::Path) {
    config.cache.path = path.to_owned();
}

#[tokio::test]
async fn a_restart_serves_from_the_cache_while_the_control_plane_is_down() {
    let keep = tempfile::tempdir().unwrap();
    let cache = keep.path().join("lkg.json");
    let sim = simulator(vec![project("acme", 1), project("globex", 1)], None).await;
    let url = sim.url();
    let first = TestSidecar::follow(&url, |c| cached(c, &cache)).await;
    first.wait_ready().await;
    sim.publish([project("acme", 2)]);
    first.wait_revision("acme", 2).await;
    eventually("the cache written at revision 2", || async {
        common::cache_contains(&cache, "qa-r2")
    })
    .await;
    first.sidecar.shutdown().await;
    sim.stop();

    let second = TestSidecar::follow(&url, |c| cached(c, &cache)).await;
    // Ready at once, before any contact with the (dead) control plane.
    assert_eq!(second.get_admin("/readyz").await.status, 200);
    assert_eq!(second.served("acme", "qa").await, "qa-r2");
    assert_eq!(second.served("globex", "qa").await, "qa-r1");
    assert!(second.sidecar.status().events().last_success.is_none());
    eventually("failures against the dead control plane", || async {
        second.sidecar.status().events().last_error.is_some()
    })
    .await;
    assert_eq!(second.served("acme", "qa").await, "qa-r2", "still serving");
}

#[tokio::test]
async fn a_restart_carries_on_from_the_cached_cursor() {
    let keep = tempfile::tempdir().unwrap();
    let cache = keep.path().join("lkg.json");
    let sim = simulator(vec![project("acme", 1)], None).await;
    let first = TestSidecar::follow(&sim.url(), |c| cached(c, &cache)).await;
    first.wait_ready().await;
    eventually("the cache written", || async {
        first.sidecar.cache().log().successes >= 1
    })
    .await;
    first.sidecar.shutdown().await;

    let snapshots = sim.counters().snapshot.load(Ordering::SeqCst);
    let second = TestSidecar::follow(&sim.url(), |c| cached(c, &cache)).await;
    sim.publish([project("acme", 2)]);
    second.wait_revision("acme", 2).await;
    assert_eq!(
        sim.counters().snapshot.load(Ordering::SeqCst),
        snapshots,
        "no full snapshot needed: the cursor came from the cache"
    );
}

#[tokio::test]
async fn a_burst_of_changes_costs_one_write() {
    let keep = tempfile::tempdir().unwrap();
    let cache = keep.path().join("lkg.json");
    let sim = simulator(vec![project("acme", 1)], None).await;
    let t = TestSidecar::follow(&sim.url(), |c| cached(c, &cache)).await;
    t.wait_ready().await;
    eventually("the first write", || async {
        t.sidecar.cache().log().successes == 1
    })
    .await;
    // 20 revisions in quick succession (well inside the 200 ms debounce).
    for rev in 2..=21 {
        sim.publish([project("acme", rev)]);
    }
    t.wait_revision("acme", 21).await;
    eventually("the burst written", || async {
        common::cache_contains(&cache, "qa-r21")
    })
    .await;
    // One more revision, once the burst is on disk: the writer takes its
    // work in order, so when this one is written every write the burst
    // caused has happened (no window to wait out).
    sim.publish([project("acme", 22)]);
    t.wait_revision("acme", 22).await;
    eventually("the revision after the burst written", || async {
        common::cache_contains(&cache, "qa-r22")
    })
    .await;
    let writes = t.sidecar.cache().log().successes;
    assert!(
        writes <= 4,
        "{writes} writes for the first load, one burst and one change"
    );
    assert!(t.sidecar.cache().log().last_error.is_none());
}

#[tokio::test]
async fn a_damaged_cache_is_ignored_and_the_source_still_loads() {
    let sim = simulator(vec![project("acme", 1)], None).await;
    for damage in ["corrupt", "truncated", "checksum", "version", "empty"] {
        let keep = tempfile::tempdir().unwrap();
        let cache = keep.path().join("lkg.json");
        // A valid cache of a different state, then damaged.
        let good = valid_cache_bytes().await;
        let bytes: Vec<u8> = match damage {
            "corrupt" => b"\x00\x01 not a cache at all".to_vec(),
            "truncated" => good[..good.len() / 2].to_vec(),
            "checksum" => {
                // A rendered answer changed after the checksum was taken.
                let at = good
                    .windows(5)
                    .position(|w| w == b"qa-r7")
                    .expect("the answers are kept as rendered");
                let mut bytes = good.clone();
                bytes[at + 4] = b'8';
                bytes
            }
            "version" => {
                let mut bytes = good.clone();
                bytes[16..20].copy_from_slice(&99u32.to_le_bytes());
                bytes
            }
            _ => Vec::new(),
        };
        std::fs::write(&cache, bytes).unwrap();
        let t = TestSidecar::follow(&sim.url(), |c| cached(c, &cache)).await;
        t.wait_ready().await;
        assert_eq!(
            t.served("acme", "qa").await,
            "qa-r1",
            "{damage}: served what the control plane has"
        );
        t.sidecar.shutdown().await;
    }
}

#[tokio::test]
async fn a_damaged_cache_with_no_control_plane_leaves_the_sidecar_not_ready() {
    let keep = tempfile::tempdir().unwrap();
    let cache = keep.path().join("lkg.json");
    let good = valid_cache_bytes().await;
    std::fs::write(&cache, &good[..good.len() - 10]).unwrap();
    let t = TestSidecar::follow("http://127.0.0.1:9", |c| cached(c, &cache)).await;
    eventually("a failed fetch", || async {
        t.sidecar.status().events().last_error.is_some()
    })
    .await;
    assert_eq!(t.get_admin("/readyz").await.status, 503);
    assert_eq!(
        t.get("/v1/resolve?project=acme").await.error_code(),
        "not_ready"
    );
}

/// `dir/sidecar.toml` for the binary: any free ports, the snapshot file
/// read every `poll`, the cache at `cache`. Returns its path.
fn process_config(
    dir: &std::path::Path,
    snapshot: &std::path::Path,
    poll: &str,
    cache: &std::path::Path,
) -> std::path::PathBuf {
    let config = dir.join("sidecar.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [source]\npath = \"{}\"\npoll_interval = \"{poll}\"\n[cache]\npath = \"{}\"\n",
            snapshot.display(),
            cache.display()
        ),
    )
    .unwrap();
    config
}

/// The bytes of a real cache file holding `acme` at revision 7.
async fn valid_cache_bytes() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("lkg.json");
    let sim = simulator(vec![project("acme", 7)], None).await;
    let mut config = http_config(dir.path(), &sim.url());
    config.cache.path = cache.clone();
    let t = TestSidecar::launch(config, tempfile::tempdir().unwrap()).await;
    t.wait_ready().await;
    eventually("cache written", || async {
        t.sidecar.cache().log().successes >= 1
    })
    .await;
    t.sidecar.shutdown().await;
    sim.stop();
    std::fs::read(&cache).unwrap()
}

/// A full disk, as the process sees it: the file-size limit (`ulimit -f`,
/// with SIGXFSZ ignored) makes every write past 4 KiB fail, as ENOSPC
/// would. The sidecar must keep serving what it accepted, report the
/// failed write, and leave the previous cache file whole.
#[tokio::test]
async fn a_cache_write_that_runs_out_of_space_keeps_serving_and_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let snapshot_path = dir.path().join("snapshot.json");
    let cache = dir.path().join("lkg.json");
    common::write_json(
        &snapshot_path,
        &common::snapshot(1, vec![project("small", 1)]),
    );
    let config = process_config(dir.path(), &snapshot_path, "100ms", &cache);
    let mut command = std::process::Command::new("sh");
    command
        .arg("-c")
        .arg(r#"trap '' XFSZ; ulimit -f 8; exec "$0" --config "$1""#)
        .arg(env!("CARGO_BIN_EXE_env-sidecar"))
        .arg(&config);
    let mut sidecar = common::process::SidecarProcess::spawn(command);
    eventually("the small snapshot cached", || async {
        env_sidecar::sync::cache::load(&cache).is_ok()
    })
    .await;
    let small = std::fs::read(&cache).unwrap();
    assert!(small.len() < 4096, "the first cache file fits the limit");

    // Twenty projects: the cache file would be well over the limit.
    common::write_json(&snapshot_path, &common::snapshot(2, common::numbered(20)));
    let client = reqwest::Client::new();
    let status_url = format!("http://{}/admin/status", sidecar.admin_addr);
    eventually("the failed cache write reported", || async {
        let Ok(resp) = client.get(&status_url).send().await else {
            return false;
        };
        let status: serde_json::Value =
            serde_json::from_str(&resp.text().await.unwrap_or_default()).unwrap_or_default();
        status["cache"]["last_error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("lkg.json"))
    })
    .await;
    let resolve = format!(
        "http://{}/v1/resolve?project=p19&environment=qa",
        sidecar.data_addr
    );
    let served = client.get(&resolve).send().await.unwrap();
    assert_eq!(served.status(), 200, "the new snapshot is served");
    assert!(sidecar.is_running());
    assert_eq!(
        std::fs::read(&cache).unwrap(),
        small,
        "the old cache file is whole"
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[tokio::test]
async fn a_restart_removes_temp_files_a_crashed_writer_left_behind() {
    let keep = tempfile::tempdir().unwrap();
    let cache = keep.path().join("lkg.json");
    let sim = simulator(vec![project("acme", 1)], None).await;
    let first = TestSidecar::follow(&sim.url(), |c| cached(c, &cache)).await;
    first.wait_ready().await;
    eventually("the cache written", || async { cache.exists() }).await;
    first.sidecar.shutdown().await;
    // What a process killed in the middle of a write leaves: its own
    // temporary file, named after its pid. Files that merely look alike
    // belong to someone else and stay.
    let orphan = keep.path().join(".lkg.json.tmp.4242");
    std::fs::write(&orphan, vec![b'x'; 1 << 20]).unwrap();
    let strangers = [
        ".lkg.json.tmp.notapid",
        ".other.json.tmp.4242",
        "lkg.json.bak",
    ];
    for name in strangers {
        std::fs::write(keep.path().join(name), b"mine").unwrap();
    }
    sim.stop();

    let second = TestSidecar::follow(&sim.url(), |c| cached(c, &cache)).await;
    assert!(!orphan.exists(), "the orphaned temp file is gone");
    for name in strangers {
        assert!(keep.path().join(name).exists(), "{name} must be left alone");
    }
    // The cache itself was untouched and serves.
    assert_eq!(second.served("acme", "qa").await, "qa-r1");
}

/// A sidecar whose control plane is down, over the cache file `bytes`,
/// with `tweak` applied; ready when the cache serves.
async fn restarted_over(
    bytes: &[u8],
    tweak: impl FnOnce(&mut env_sidecar::config::Config),
) -> (TestSidecar, tempfile::TempDir) {
    let keep = tempfile::tempdir().unwrap();
    let cache = keep.path().join("lkg.json");
    std::fs::write(&cache, bytes).unwrap();
    let t = TestSidecar::follow("http://127.0.0.1:9", |c| {
        cached(c, &cache);
        tweak(c)
    })
    .await;
    (t, keep)
}

/// `bytes`, a version 2 cache file, with `from` replaced by `to` (the same
/// length) and its checksum made right again: an edit the checksum does
/// not catch, as by someone who can write the disk.
fn edited(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let at = bytes
        .windows(from.len())
        .position(|w| w == from)
        .unwrap_or_else(|| panic!("{} is in the file", String::from_utf8_lossy(from)));
    let mut out = bytes.to_vec();
    out[at..at + to.len()].copy_from_slice(to);
    let crc = crc32fast::hash(&out[24..]);
    out[20..24].copy_from_slice(&crc.to_le_bytes());
    out
}

#[tokio::test]
async fn a_cache_written_by_the_previous_version_still_loads() {
    // Written by the build before version 2 (JSON): acme at revision 3,
    // globex at 5.
    let v1 = include_bytes!("../fixtures/last-known-good-v1.json");
    assert!(v1.starts_with(b"{\"format\":\"env-sidecar-last-known-good\",\"version\":1"));
    let (t, _keep) = restarted_over(v1, |_| {}).await;
    t.wait_ready().await;
    assert_eq!(t.served("acme", "qa").await, "qa-r3");
    assert_eq!(t.served("globex", "prod").await, "prod-r5");
    t.sidecar.shutdown().await;

    // Its documents go through today's trust rules: unsigned ones are
    // refused once signatures are required, and nothing is served.
    let keys = tempfile::tempdir().unwrap();
    let key = common::signing::TestKey::new(keys.path(), "cp-2026");
    let (t, _keep) = restarted_over(v1, |c| {
        c.trust.keys = vec![key.public_file.clone()];
        c.trust.require_signatures = true;
    })
    .await;
    t.wait_rejection("acme", "unsigned").await;
    assert_eq!(
        t.get("/v1/resolve?project=acme").await.error_code(),
        "not_ready"
    );
}

#[tokio::test]
async fn the_same_build_serves_its_cache_as_rendered_another_build_from_the_documents() {
    let good = valid_cache_bytes().await;
    // Someone with the disk changes a rendered answer (the boundary
    // docs/trust.md draws: the disk is out of scope). The same build
    // serves it as rendered: nothing was parsed or rendered again.
    let tampered = edited(&good, b"qa-r7", b"qa-r6");
    let (t, _keep) = restarted_over(&tampered, |_| {}).await;
    t.wait_ready().await;
    assert_eq!(t.served("acme", "qa").await, "qa-r6");
    t.sidecar.shutdown().await;

    // Said to be another build's, the same file is restored from its
    // documents, which still say revision 7.
    let build = format!("\"build\":\"{}\"", env!("CARGO_PKG_VERSION"));
    let other = format!(
        "\"build\":\"{}\"",
        "9".repeat(env!("CARGO_PKG_VERSION").len())
    );
    let another = edited(&tampered, build.as_bytes(), other.as_bytes());
    let (t, _keep) = restarted_over(&another, |_| {}).await;
    t.wait_ready().await;
    assert_eq!(t.served("acme", "qa").await, "qa-r7");
}

/// `kill -9` while the cache is being written: the file on disk is the
/// previous one whole (the new one was a temp file, renamed only once
/// synced), so a restart serves one consistent revision, never a mix and
/// never a half-written file. Caught in the act: the test waits for the
/// writer's temp file to appear, then kills.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_during_a_cache_write_leaves_a_cache_that_loads_or_is_ignored() {
    use env_sidecar::sim::generate;
    const PROJECTS: usize = 3_000;
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("snapshot.json");
    let cache = dir.path().join("lkg.json");
    // Every project at `revision`.
    let at = |revision: u64| {
        let projects: Vec<_> = (0..PROJECTS)
            .map(|i| generate::project(i, revision, None))
            .collect();
        serde_json::to_vec(&serde_json::json!({"revision": revision, "projects": projects}))
            .unwrap()
    };
    std::fs::write(&snapshot, at(1)).unwrap();
    let config = process_config(dir.path(), &snapshot, "50ms", &cache);
    let mut sidecar = common::process::SidecarProcess::start(&config, &[]);
    let revisions = |path: &std::path::Path| {
        env_sidecar::sync::cache::load(path).map(|c| {
            let mut revisions: Vec<Option<u64>> =
                c.revisions().into_iter().map(|(_, r)| r).collect();
            revisions.dedup();
            (c.len(), revisions)
        })
    };
    eventually("revision 1 cached", || async {
        revisions(&cache).is_ok_and(|r| r == (PROJECTS, vec![Some(1)]))
    })
    .await;
    let temp = dir
        .path()
        .join(format!(".lkg.json.tmp.{}", sidecar.child.id()));
    std::fs::write(&snapshot, at(2)).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !temp.exists() {
        if std::time::Instant::now() > deadline {
            let names: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            panic!("no cache write seen: {names:?}\n{}", sidecar.log());
        }
        std::hint::spin_loop();
    }
    sidecar.child.kill().unwrap();
    sidecar.child.wait().unwrap();
    // Usually killed mid-write; the write may also have just finished.
    let caught = temp.exists();

    let (len, kept) = revisions(&cache).expect("the previous cache file is whole");
    assert_eq!(len, PROJECTS);
    assert!(
        kept == [Some(1)] || kept == [Some(2)],
        "one revision, not a mix: {kept:?}"
    );
    // A restart over it serves that revision (and clears the temp file).
    let t = TestSidecar::follow("http://127.0.0.1:9", |c| cached(c, &cache)).await;
    t.wait_ready().await;
    let served = t.get("/v1/resolve?project=proj-000042").await;
    assert_eq!(served.body["revision"], serde_json::json!(kept[0]));
    if caught {
        assert!(!temp.exists(), "the dead writer's temp file is removed");
    }
}
