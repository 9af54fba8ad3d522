//! Footprint of the real binary: resident memory after loading a snapshot
//! (against the snapshot JSON's size) at 10k and 100k projects, and the
//! time from process start to ready when it starts from a 10k-project
//! last-known-good cache with the control plane unreachable. It also
//! counts, in process, the bytes and allocations a loaded project holds,
//! and a parsed one before it is judged, as a full load holds every
//! project at once (requested sizes, before any allocator rounding).
//!
//! Run: `cargo bench --bench footprint`

#[path = "../tests/common/shared.rs"]
mod shared;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime};

use env_sidecar::model::origin::Origin;
use env_sidecar::model::wire::parse_snapshot;
use env_sidecar::sim::generate;
use env_sidecar::store::{Contents, PointersStructs, Store, Update};

/// The system allocator, counting live bytes and allocations.
struct Counting;
static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
static LIVE_ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to `System` unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size(), Relaxed);
        LIVE_ALLOCATIONS.fetch_add(1, Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size(), Relaxed);
        LIVE_ALLOCATIONS.fetch_sub(1, Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> (usize, usize) {
    (LIVE_BYTES.load(Relaxed), LIVE_ALLOCATIONS.load(Relaxed))
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    println!("resident memory after loading (file source, metrics on):");
    for (n, with_cache) in [(10_000, false), (10_000, true), (100_000, false)] {
        let json = generate::snapshot_json(n, 1);
        let path = dir.path().join(format!("snapshot-{n}.json"));
        std::fs::write(&path, &json).unwrap();
        let source = format!("kind = \"file\"\npath = \"{}\"\n", path.display());
        // With the cache on (as in the default config), after it is written.
        let cache = dir.path().join(format!("footprint-lkg-{n}.json"));
        let cache_path = if with_cache {
            cache.display().to_string()
        } else {
            String::new()
        };
        let (mut child, admin) = spawn(dir.path(), &source, &cache_path);
        wait_ready(admin, Duration::from_secs(120));
        while with_cache && !cache.exists() {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(500));
        let rss = rss_bytes(child.id());
        println!(
            "  {n:>7} projects{}: snapshot JSON {:>6.1} MiB, RSS {:>6.1} MiB, ratio {:.2}",
            if with_cache { ", cache written" } else { "" },
            mib(json.len() as u64),
            mib(rss),
            rss as f64 / json.len() as f64
        );
        stop(&mut child);
    }

    println!("ready from a 10k-project last-known-good cache (control plane down):");
    let cache = dir.path().join("lkg.json");
    let json = generate::snapshot_json(10_000, 1);
    let load = |structs: PointersStructs| {
        let (bytes_before, allocations_before) = live();
        let (store, mut writer) = Store::new(0.5);
        writer.set_pointers_structs(structs);
        let contents = Contents::Snapshot(parse_snapshot(&json).unwrap());
        writer
            .apply(Update::new(Origin::Snapshot, contents), SystemTime::now())
            .unwrap();
        let (bytes_after, allocations_after) = live();
        println!(
            "  (in process, {structs:?}: a loaded project holds {} B in {} allocations, requested sizes; its JSON is {} B)",
            (bytes_after - bytes_before) / 10_000,
            (allocations_after - allocations_before) / 10_000,
            json.len() / 10_000
        );
        store
    };
    drop(load(PointersStructs::Prerendered));
    let store = load(PointersStructs::PerCheck);
    // What a full load holds before it is judged: every document parsed
    // at once (the reload peak's share beside the store being served).
    let (bytes_before, allocations_before) = live();
    let parsed = parse_snapshot(&json).unwrap();
    let (bytes_after, allocations_after) = live();
    println!(
        "  (in process: a parsed project, before judging, holds {} B in {} allocations)",
        (bytes_after - bytes_before) / 10_000,
        (allocations_after - allocations_before) / 10_000,
    );
    drop(parsed);
    std::fs::write(
        &cache,
        env_sidecar::sync::cache::encode(env_sidecar::sync::cache::State {
            cursor: store.cursor(),
            projects: &store.projects(),
            floors: &[],
        }),
    )
    .unwrap();
    let mut times = Vec::new();
    for _ in 0..7 {
        let source = "kind = \"http\"\nurl = \"http://127.0.0.1:9\"\n".to_string();
        let started = Instant::now();
        let (mut child, admin) = spawn(dir.path(), &source, &cache.display().to_string());
        wait_ready(admin, Duration::from_secs(30));
        times.push(started.elapsed());
        stop(&mut child);
    }
    times.sort();
    println!(
        "  cache {:.1} MiB: median {:?}, min {:?}, max {:?} from spawn to /readyz 200 (7 starts)",
        mib(std::fs::metadata(&cache).unwrap().len()),
        times[times.len() / 2],
        times[0],
        times[times.len() - 1]
    );

    // A restart that reaches its source: the cache, then the same snapshot
    // again from the file (every project unchanged). Two loads' worth of
    // parsing has come and gone.
    let source = format!(
        "kind = \"file\"\npath = \"{}\"\n",
        dir.path().join("snapshot-10000.json").display()
    );
    let (mut child, admin) = spawn(dir.path(), &source, &cache.display().to_string());
    wait_ready(admin, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(1500));
    let rss = rss_bytes(child.id());
    stop(&mut child);
    println!(
        "  RSS after the cache and then the same snapshot from the file: {:.1} MiB, ratio {:.2}",
        mib(rss),
        rss as f64 / json.len() as f64
    );
}

fn spawn(dir: &Path, source: &str, cache: &str) -> (Child, SocketAddr) {
    let data = shared::free_addr();
    let admin = shared::free_addr();
    let config = dir.join(format!("footprint-{}.toml", admin.port()));
    let mut f = std::fs::File::create(&config).unwrap();
    write!(f, "[server]\nlisten = \"{data}\"\n[admin]\nlisten = \"{admin}\"\n[source]\n{source}[cache]\npath = \"{cache}\"\n").unwrap();
    let child = shared::sidecar_command()
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sidecar starts");
    (child, admin)
}

fn wait_ready(admin: SocketAddr, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let ready = TcpStream::connect(admin)
            .and_then(|mut s| {
                s.write_all(b"GET /readyz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")?;
                let mut head = [0u8; 12];
                s.read_exact(&mut head)?;
                Ok(&head == b"HTTP/1.1 200")
            })
            .unwrap_or(false);
        if ready {
            return;
        }
        assert!(Instant::now() < deadline, "not ready within {limit:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
