//! The simulator's side of fleet reports: `POST /v1/nodes/{id}/status`
//! keeps each node's latest report (what a sidecar following it over
//! HTTP sends), and `GET /v1/nodes` answers `{"nodes": [report…]}` with
//! every report received in the last hour ([`LOST_RETENTION`]), expired
//! ones included: the fleet commands tell a reporting node from a lost
//! one by the report's age, so `fleet status` and `fleet wait
//! --control-plane URL` work against it the way they work against Redis
//! (with the change positions the simulator answers at `GET
//! /v1/positions`). `DELETE /v1/nodes/{id}?started_at=T` forgets a node
//! that stopped gracefully (`409` when the report kept is of another
//! `started_at`: a node restarted under the same id). A control plane of
//! one's own implements the same requests.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use bytes::Bytes;
use http::{Method, StatusCode};

use crate::server::error::json_response;
use crate::server::Body;
use crate::sync::report::{NodeReport, LOST_RETENTION};

/// The largest report body taken: a report lists only exceptions, and
/// this holds tens of thousands of them (or an older-layout report of
/// ~50 000 projects).
pub const MAX_REPORT_BYTES: usize = 8 << 20;

/// Reports by node id, with when each arrived.
#[derive(Debug, Default)]
pub struct NodeBoard {
    reports: Mutex<BTreeMap<String, (Instant, NodeReport)>>,
    received: std::sync::atomic::AtomicU64,
}

impl NodeBoard {
    /// Reports received so far.
    pub fn received(&self) -> u64 {
        self.received.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The latest report of every node heard from within
    /// [`LOST_RETENTION`].
    pub fn current(&self) -> Vec<NodeReport> {
        let now = Instant::now();
        let mut reports = self.lock();
        reports.retain(|_, (at, _)| now.duration_since(*at) < LOST_RETENTION);
        reports.values().map(|(_, r)| r.clone()).collect()
    }

    /// Answers `method path?query` with `body` (for `/v1/nodes…` paths).
    pub fn answer(
        &self,
        method: &Method,
        path: &str,
        query: &str,
        body: &[u8],
    ) -> http::Response<Body> {
        match (method, path.strip_prefix("/v1/nodes")) {
            (&Method::DELETE, Some(rest)) => {
                let Some(id) = rest.strip_prefix('/').filter(|id| !id.contains('/')) else {
                    return plain(StatusCode::NOT_FOUND, "no such route");
                };
                let id = percent_encoding::percent_decode_str(id).decode_utf8_lossy();
                let started_at = query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("started_at="))
                    .map(|v| percent_encoding::percent_decode_str(v).decode_utf8_lossy());
                let mut reports = self.lock();
                match (reports.get(id.as_ref()), started_at) {
                    (None, _) => plain(StatusCode::NOT_FOUND, "no such node"),
                    (Some((_, kept)), Some(t)) if kept.summary.started_at != t => plain(
                        StatusCode::CONFLICT,
                        "the report kept is of another process of this node id",
                    ),
                    (Some(_), _) => {
                        reports.remove(id.as_ref());
                        plain(StatusCode::NO_CONTENT, "")
                    }
                }
            }
            (&Method::GET, Some("")) => {
                let nodes = self.current();
                json_response(
                    StatusCode::OK,
                    serde_json::json!({ "nodes": nodes }).to_string(),
                )
            }
            (&Method::POST, Some(rest)) => {
                let Some(id) = rest
                    .strip_prefix('/')
                    .and_then(|r| r.strip_suffix("/status"))
                else {
                    return plain(StatusCode::NOT_FOUND, "no such route");
                };
                let id = percent_encoding::percent_decode_str(id).decode_utf8_lossy();
                let report: NodeReport = match serde_json::from_slice(body) {
                    Ok(r) => r,
                    Err(_) => return plain(StatusCode::BAD_REQUEST, "not a node report"),
                };
                if report.summary.node != id {
                    return plain(StatusCode::BAD_REQUEST, "the report names another node");
                }
                self.received
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                self.lock()
                    .insert(id.into_owned(), (Instant::now(), report));
                plain(StatusCode::NO_CONTENT, "")
            }
            _ => plain(
                StatusCode::METHOD_NOT_ALLOWED,
                "GET /v1/nodes, POST /v1/nodes/{id}/status or DELETE /v1/nodes/{id}",
            ),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (Instant, NodeReport)>> {
        crate::lock::lock(&self.reports)
    }
}

fn plain(status: StatusCode, message: &'static str) -> http::Response<Body> {
    let mut r = http::Response::new(Body::new(Bytes::from_static(message.as_bytes())));
    *r.status_mut() = status;
    r
}
