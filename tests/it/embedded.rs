//! Embedded mode: a small hyper server acting as a Rust gateway runs the
//! sidecar's machinery in its own process, follows the control-plane
//! simulator, and resolves each request through the handle, with no HTTP
//! hop and no allocation per resolve.

use crate::common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::convert::Infallible;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use common::{eventually, http_config, project, simulator};
use env_sidecar::app::embed::{embed, EmbedOptions};
use env_sidecar::store::{PointerKind, ResolveError, Store};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// The system allocator, counting allocations made by the current thread.
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to `System` unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// The gateway: answers every request with the `summarize` prompt version
/// and the environment that serve it, resolved in process.
async fn gateway(store: Store) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let store = store.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let header = |name: &str| {
                        req.headers()
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned)
                    };
                    let (project, environment) = (header("x-project-id"), header("x-environment"));
                    let resolved = store.resolve_with(
                        project.as_deref().unwrap_or(""),
                        environment.as_deref(),
                        false,
                        |answer| {
                            let prompt = answer.pointer(PointerKind::Prompts, "summarize");
                            format!("{} {}", answer.slug(), prompt.unwrap_or_default())
                        },
                    );
                    let (status, text) = match resolved {
                        Ok(text) => (200, text),
                        Err(ResolveError::UnknownProject) => (404, "unknown project".into()),
                        Err(ResolveError::NotReady) => (503, "not ready".into()),
                        Err(e) => (400, e.to_string()),
                    };
                    let mut resp = http::Response::new(Full::new(Bytes::from(text)));
                    *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
                    async move { Ok::<_, Infallible>(resp) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_gateway_embeds_the_sidecar_and_follows_the_control_plane() {
    let sim = simulator(vec![project("acme", 1)], None).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = http_config(dir.path(), &sim.url());
    config.cache.path = dir.path().join("lkg.json");
    let embedded = embed(
        config,
        EmbedOptions {
            options: common::test_options(),
            operator_plane: false,
        },
    )
    .await
    .expect("embeds");
    assert!(embedded.admin_addr().is_none(), "no listener unless asked");
    let addr = gateway(embedded.store().clone()).await;
    let client = reqwest::Client::new();
    let ask = |project: &'static str, environment: &'static str| {
        let client = client.clone();
        async move {
            let resp = client
                .get(format!("http://{addr}/v1/chat"))
                .header("x-project-id", project)
                .header("x-environment", environment)
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    eventually("embedded and ready", || async { embedded.ready().is_ok() }).await;
    assert_eq!(ask("acme", "QA").await, (200, "qa qa-r1".into()));
    assert_eq!(ask("acme", "nope").await, (200, "prod prod-r1".into()));
    assert_eq!(ask("nobody", "qa").await.0, 404);

    // The control plane publishes; the gateway serves it, with no restart.
    sim.publish([project("acme", 2)]);
    eventually("revision 2 served through the gateway", || async {
        ask("acme", "qa").await == (200, "qa qa-r2".into())
    })
    .await;
    assert!(
        sim.counters().changes.load(Ordering::SeqCst) > 0,
        "it long-polls"
    );
    embedded.shutdown().await;
    assert!(
        dir.path().join("lkg.json").exists(),
        "the cache was written"
    );
}

#[tokio::test]
async fn the_handle_lends_the_answer_without_allocating() {
    let sim = simulator(vec![project("acme", 3)], None).await;
    let dir = tempfile::tempdir().unwrap();
    let embedded = embed(
        http_config(dir.path(), &sim.url()),
        EmbedOptions {
            options: common::test_options(),
            operator_plane: true,
        },
    )
    .await
    .unwrap();
    eventually("ready", || async { embedded.ready().is_ok() }).await;
    let store = embedded.store().clone();
    // The first load on a thread registers it with arc-swap (once).
    store.resolve_with("acme", None, false, |_| ()).unwrap();
    let before = allocations();
    let mut total = 0usize;
    for slug in ["qa", "Canary", "nope", "prod"] {
        let revision = store
            .resolve_with("acme", Some(slug), false, |answer| {
                total += answer.len();
                let v = answer.pointer(PointerKind::Prompts, "summarize").unwrap();
                assert!(matches!(v, std::borrow::Cow::Borrowed(_)));
                answer.revision_str().len()
            })
            .unwrap();
        assert_eq!(revision, 1);
    }
    assert_eq!(allocations() - before, 0, "resolving allocated");
    // And it is the counter that works: a String does allocate.
    let before = allocations();
    drop(std::hint::black_box(String::from("x")));
    assert_eq!(allocations() - before, 1);
    assert!(total > 0);
    // The operator plane was asked for: it answers.
    let readyz = format!("http://{}/readyz", embedded.admin_addr().unwrap());
    assert_eq!(reqwest::get(readyz).await.unwrap().status(), 200);
    embedded.shutdown().await;
}
