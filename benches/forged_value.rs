//! Peak memory of a sidecar sent a forged document far over
//! `source.max_document_bytes` (issue 26's fourth attack: a 104 MB forged
//! envelope used to be decoded and parsed before its signature was
//! checked, 1.03 GB peak RSS).
//!
//! A real `redis-server` holds 200 signed projects; a writer without the
//! key then writes a forged envelope of 1 MB, then one of 100 MB, as a
//! publisher writes (the hash field and a stream entry). Two paths, each
//! on a fresh sidecar process (release build, signatures required):
//!
//! * `follow`: the sidecar is running and reads the forged value from the
//!   stream (`XREAD` has no length-first form: it arrives whole, and is
//!   refused before it is decoded);
//! * `cold start`: a new sidecar's full load reads the hash, where each
//!   value's size is checked before it is fetched (never transferred).
//!
//! For each: the process's peak RSS (`VmHWM`) once it has recorded the
//! rejection (`bad_signature` for 1 MB, under the limit: decoded, its
//! signature checked, never parsed; `too_large` for 100 MB: never
//! decoded), beside the same path with no forged value.
//!
//! Run: `cargo bench --bench forged_value` (`-- --mb 1,100` sets the
//! sizes, in MB).

#[path = "support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant, SystemTime};

use env_sidecar::model::keys;
use env_sidecar::sim::generate;
use support::redis::start_redis;

const PROJECTS: usize = 200;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let sizes: Vec<usize> = args
        .iter()
        .position(|a| a == "--mb")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.split(',').filter_map(|s| s.parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 100]);
    let dir = tempfile::tempdir().expect("a temp dir");
    let (_redis, url) = start_redis(dir.path());
    let mut con = redis::Client::open(url.as_str())
        .and_then(|c| c.get_connection())
        .expect("connects to redis");

    let (private, public) = keys::generate(Some("bench")).expect("a key");
    let signer = keys::parse_private(&private).expect("the key reads");
    let key_file = dir.path().join("bench.pub");
    std::fs::write(&key_file, public.to_pem()).unwrap();
    let now = SystemTime::now();
    let mut pipe = redis::pipe();
    for i in 0..PROJECTS {
        let doc = generate::project(i, 1, None);
        let text = signer.seal_document(&doc, now, None);
        write(&mut pipe, &doc.id, text.as_bytes());
    }
    let _: () = pipe.query(&mut con).expect("published");

    println!(
        "peak RSS (VmHWM) of one sidecar, {PROJECTS} signed projects, max_document_bytes 4 MiB"
    );
    println!("| forged value | path | peak RSS | against none |");
    println!("|---|---|---|---|");
    let mut baseline = [0u64; 2];
    for (p, path) in ["follow", "cold start"].iter().enumerate() {
        baseline[p] = measure(dir.path(), &url, &key_file, &mut con, None, p == 1);
        println!("| none | {path} | {} | 1.00 × |", mib(baseline[p]));
    }
    for mb in sizes {
        for (p, path) in ["follow", "cold start"].iter().enumerate() {
            let peak = measure(dir.path(), &url, &key_file, &mut con, Some(mb), p == 1);
            println!(
                "| {mb} MB | {path} | {} | {:.2} × |",
                mib(peak),
                peak as f64 / baseline[p] as f64
            );
        }
    }
}

/// A hash write and its stream entry, as a publisher writes them.
fn write(pipe: &mut redis::Pipeline, id: &str, value: &[u8]) {
    pipe.atomic()
        .hset("{env-sidecar}:projects", id, value)
        .ignore()
        .cmd("XADD")
        .arg("{env-sidecar}:changes")
        .arg("*")
        .arg("project")
        .arg(id)
        .arg("document")
        .arg(value)
        .ignore();
}

/// Peak RSS (KiB) of a fresh sidecar that, with `forged` MB written as
/// `p0`'s value (after it started, or before for a cold start), has
/// recorded the rejection; with `None`, once it is ready and idle.
fn measure(
    dir: &Path,
    url: &str,
    key: &Path,
    con: &mut redis::Connection,
    forged: Option<usize>,
    cold: bool,
) -> u64 {
    let id = generate::project_id(0);
    // A forged envelope: the shape, a payload of `mb` MB, no valid
    // signature.
    let forged_text = |mb: usize| {
        let payload = "A".repeat(mb << 20);
        format!(
            r#"{{"payloadType":"application/vnd.env-sidecar.project+json","payload":"{payload}","signatures":[{{"keyid":"bench","sig":"AAAA"}}]}}"#
        )
    };
    let forge = |con: &mut redis::Connection, mb: usize| {
        let mut pipe = redis::pipe();
        write(&mut pipe, &id, forged_text(mb).as_bytes());
        let _: () = pipe.query(con).expect("forged value written");
    };
    if let (Some(mb), true) = (forged, cold) {
        forge(con, mb);
    }
    let (data, admin) = (support::shared::free_addr(), support::shared::free_addr());
    let config = format!(
        "[server]\nlisten = \"{data}\"\n[admin]\nlisten = \"{admin}\"\n\
         [source]\nkind = \"redis\"\nurl = \"{url}\"\nlong_poll_wait = \"1s\"\n\
         [trust]\nkeys = [\"{}\"]\nrequire_signatures = true\n\
         [cache]\npath = \"\"\n[report]\nenabled = false\n",
        key.display()
    );
    let stamp = || env_sidecar::model::timestamp::format_rfc3339(SystemTime::now());
    let mut since = stamp();
    let mut child = support::start_sidecar(dir, "forged", &config);
    support::wait_ok(admin, "/readyz", Duration::from_secs(60));
    if !cold {
        // What the start-up full load refused (an earlier round's value)
        // does not count.
        std::thread::sleep(Duration::from_millis(10));
        since = stamp();
    }
    match forged {
        Some(mb) => {
            if !cold {
                forge(con, mb);
            }
            wait_rejected(admin, &id, since);
        }
        None => std::thread::sleep(Duration::from_millis(500)),
    }
    let peak = vm_hwm(&child);
    support::stop(&mut child);
    peak
}

/// Waits until `/admin/status` shows `id` rejected at or after `since`
/// (RFC 3339: the text orders as the time does).
fn wait_rejected(admin: SocketAddr, id: &str, since: String) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some((200, body)) = support::http_get(admin, "/admin/status") {
            let status: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let refused = status["rejected"].as_array().is_some_and(|all| {
                all.iter()
                    .any(|r| r["project"] == id && r["at"].as_str().is_some_and(|at| *at >= *since))
            });
            if refused {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{id} was never refused");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `VmHWM` of the process, in KiB.
fn vm_hwm(child: &Child) -> u64 {
    std::fs::read_to_string(format!("/proc/{}/status", child.id()))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}
