//! Turning signatures on, as an operator does it with docs/trust.md, on
//! the real binary with its cache, over the file source and over Redis:
//!
//! * the staged migration: trust a key, publish the same revisions
//!   signed (they replace the plain ones), then require signatures and
//!   restart;
//! * the direct switch: require signatures and restart first. Everything
//!   cached is refused: the sidecar is not ready (it serves nothing)
//!   until its source answers, and the cache's cursor does not stand in
//!   for it; the same revisions published signed then serve.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::fleet::run;
use common::process::SidecarProcess;
use common::redis::{RedisServer, Setup};
use serde_json::Value;

const IDS: [&str; 3] = ["acme-chat", "globex-support", "initech-search"];

/// The config of a sidecar on ports 0, its cache in `dir`, with `source`
/// lines and `trust` lines.
fn config(dir: &Path, source: &str, trust: &str) -> PathBuf {
    let path = dir.join("sidecar.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [source]\n{source}\npoll_interval = \"100ms\"\nbackoff_max = \"300ms\"\n\
             long_poll_wait = \"1s\"\n[cache]\npath = \"{}\"\n[report]\nenabled = false\n{trust}",
            dir.join("lkg.json").display()
        ),
    )
    .unwrap();
    path
}

/// `[trust]` with the key file `key`, signatures required or not.
fn trusting(key: &Path, required: bool) -> String {
    format!(
        "[trust]\nkeys = [\"{}\"]\nrequire_signatures = {required}\n",
        key.display()
    )
}

/// `env-sidecar keygen`: the private and public files of key `cp-1`.
fn keygen(dir: &Path) -> (PathBuf, PathBuf) {
    let (private, public) = (dir.join("cp-1.key"), dir.join("cp-1.pub"));
    let (code, out) = run(&[
        "keygen",
        "--key-id",
        "cp-1",
        "--private",
        private.to_str().unwrap(),
        "--public",
        public.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    (private, public)
}

/// `env-sidecar sign --key KEY FILE -o OUT`.
fn sign(key: &Path, file: &Path, out: &Path) {
    let (code, text) = run(&[
        "sign",
        "--key",
        key.to_str().unwrap(),
        file.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{text}");
}

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, Value) {
    let resp = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Waits until every sample project is served signed, revision as in the
/// sample, and the sidecar is ready.
async fn wait_served_signed(node: &SidecarProcess) {
    common::eventually("every project served signed", || async {
        let mut all = true;
        for id in IDS {
            let (status, view) = get(node.data_addr, &format!("/v1/projects/{id}")).await;
            all &= status == 200 && view["signature"]["keys"][0] == "cp-1";
        }
        all && get(node.admin_addr, "/readyz").await.0 == 200
    })
    .await;
}

/// Serving nothing: not ready, and no project answers.
async fn assert_not_ready_with_nothing(node: &SidecarProcess) {
    let (status, body) = get(node.admin_addr, "/readyz").await;
    assert_eq!(status, 503, "{body}\n{}", node.log());
    let (status, body) = get(node.data_addr, "/v1/resolve?project=acme-chat").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "not_ready");
}

/// Stops `node` with SIGTERM (its cache written).
fn stop(mut node: SidecarProcess) {
    node.terminate();
    assert_eq!(node.wait_exit(Duration::from_secs(20)).code(), Some(0));
}

/// A sidecar serving the unsigned sample from `snapshot`, stopped again:
/// its cache holds the sample.
async fn served_unsigned_then_stopped(dir: &Path, source: &str) {
    let node = SidecarProcess::start(&config(dir, source, ""), &[]);
    common::eventually("the sample served", || async {
        get(node.data_addr, "/v1/projects").await.1["projects"]
            .as_array()
            .is_some_and(|p| p.len() == 3)
    })
    .await;
    stop(node);
    assert!(dir.join("lkg.json").exists());
}

/// The sample copied to `snapshot.json` in `dir` and served unsigned by
/// a sidecar that then stopped (its cache holds it): the file's path and
/// the `[source]` lines reading it.
async fn file_served_unsigned_then_stopped(dir: &Path) -> (PathBuf, String) {
    let snapshot = dir.join("snapshot.json");
    std::fs::copy(sample(), &snapshot).unwrap();
    let source = format!("kind = \"file\"\npath = \"{}\"", snapshot.display());
    served_unsigned_then_stopped(dir, &source).await;
    (snapshot, source)
}

fn sample() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/snapshot.json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_direct_switch_over_a_file_serves_nothing_until_the_signed_file_then_all_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let (snapshot, source) = file_served_unsigned_then_stopped(dir.path()).await;

    let (private, public) = keygen(dir.path());
    // Restarted requiring signatures while the file is being replaced
    // (not there yet): the cache is refused, the source has not answered,
    // nothing is served: not ready (it said ready with nothing before).
    let signed = dir.path().join("signed.json");
    sign(&private, &snapshot, &signed);
    std::fs::remove_file(&snapshot).unwrap();
    let node = SidecarProcess::start(&config(dir.path(), &source, &trusting(&public, true)), &[]);
    common::eventually("the cached documents refused", || async {
        node.log()
            .contains("refused under the current trust settings")
    })
    .await;
    assert_not_ready_with_nothing(&node).await;
    // The same revisions, signed: served again (a signed copy outranks
    // the refused plain one).
    std::fs::rename(&signed, &snapshot).unwrap();
    wait_served_signed(&node).await;
    stop(node);
    // And across another restart, from the cache alone.
    std::fs::remove_file(&snapshot).unwrap();
    let node = SidecarProcess::start(&config(dir.path(), &source, &trusting(&public, true)), &[]);
    wait_served_signed(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_staged_migration_over_a_file_keeps_every_project_served() {
    let dir = tempfile::tempdir().unwrap();
    let (snapshot, source) = file_served_unsigned_then_stopped(dir.path()).await;
    let (private, public) = keygen(dir.path());
    // A key trusted, not required: the signed copies replace the plain.
    let node = SidecarProcess::start(&config(dir.path(), &source, &trusting(&public, false)), &[]);
    let signed = dir.path().join("signed.json");
    sign(&private, &snapshot, &signed);
    std::fs::rename(&signed, &snapshot).unwrap();
    wait_served_signed(&node).await;
    stop(node);
    // Then required: nothing changes.
    let node = SidecarProcess::start(&config(dir.path(), &source, &trusting(&public, true)), &[]);
    wait_served_signed(&node).await;
    assert!(!node
        .log()
        .contains("refused under the current trust settings"));
}

/// `publish --redis URL [--sign-key KEY] --wait --timeout 20s` of the
/// sample: its output.
fn publish(url: &str, key: Option<&Path>) -> String {
    let sample = sample();
    let mut args = vec!["publish", "--redis", url];
    if let Some(key) = key {
        args.extend(["--sign-key", key.to_str().unwrap()]);
    }
    args.push(sample.to_str().unwrap());
    let (code, out) = run(&args);
    assert_eq!(code, 0, "{out}");
    out
}

/// A Redis holding the unsigned sample (`publish`), and the `[source]`
/// lines following it; `None` without `redis-server`.
fn redis_with_the_sample(dir: &Path) -> Option<(RedisServer, String)> {
    let redis = RedisServer::start(dir, Setup::default())?;
    publish(&redis.url, None);
    let source = format!("kind = \"redis\"\nurl = \"{}\"", redis.url);
    Some((redis, source))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_direct_switch_over_redis_serves_the_same_revisions_published_signed() {
    let dir = tempfile::tempdir().unwrap();
    let Some((redis, source)) = redis_with_the_sample(dir.path()) else {
        return;
    };
    served_unsigned_then_stopped(dir.path(), &source).await;

    let (private, public) = keygen(dir.path());
    // Restarted requiring signatures while Redis is down: the cache is
    // refused, nothing is served, not ready.
    let mut redis = redis;
    redis.kill();
    let node = SidecarProcess::start(&config(dir.path(), &source, &trusting(&public, true)), &[]);
    common::eventually("the cached documents refused", || async {
        node.log()
            .contains("refused under the current trust settings")
    })
    .await;
    assert_not_ready_with_nothing(&node).await;
    // Redis back (empty: no persistence here), the unsigned sample written
    // again, then the same revisions signed.
    redis.restart();
    publish(&redis.url, None);
    // The same revisions, signed (publish believes only what its key
    // signed in Redis: the plain ones are `unverified`, and written anew).
    let out = publish(&redis.url, Some(&private));
    assert!(out.contains("done published=3"), "{out}");
    wait_served_signed(&node).await;
    stop(node);
    let node = SidecarProcess::start(&config(dir.path(), &source, &trusting(&public, true)), &[]);
    wait_served_signed(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_staged_migration_over_redis_keeps_every_project_served() {
    let dir = tempfile::tempdir().unwrap();
    let Some((redis, source)) = redis_with_the_sample(dir.path()) else {
        return;
    };
    let (private, public) = keygen(dir.path());
    let node = SidecarProcess::start(&config(dir.path(), &source, &trusting(&public, false)), &[]);
    let out = publish(&redis.url, Some(&private));
    assert!(out.contains("done published=3"), "{out}");
    wait_served_signed(&node).await;
    stop(node);
    let node = SidecarProcess::start(&config(dir.path(), &source, &trusting(&public, true)), &[]);
    wait_served_signed(&node).await;
}
