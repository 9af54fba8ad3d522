//! The operator plane (default `127.0.0.1:9901`).
//!
//! * `GET  /metrics`        Prometheus text exposition (open, for scrapers)
//! * `GET  /healthz`        200 while the process runs (open)
//! * `GET  /readyz`         200 once a snapshot is loaded and not stale (open)
//! * `GET  /admin/status`   source, cursor, last success / error, counts,
//!   rejections, cache, readiness, version
//! * `POST /admin/refresh[?project=P][&allow_mass_removal=true]`
//!   fetch now and answer what changed; concurrent calls coalesce
//!
//! `/admin/*` requires `Authorization: Bearer <token>` when the admin token
//! variable is set (compared in constant time). Nothing here is on the
//! resolve path.

use std::path::PathBuf;
use std::sync::Arc;

use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;

use super::error::{clip, json_ok, json_response, ApiError};
use super::openapi;
use super::query::{flag, params};
use super::service::{allowed, routed};
use super::views::{RefreshView, RejectionView};
use super::{Body, Handler, Reply};
use crate::config::secret::Secret;
use crate::config::Source;
use crate::model::cursor::Cursor;
use crate::model::origin::MassRemoval;
use crate::model::timestamp::format_rfc3339;
use crate::model::validate::is_valid_id;
use crate::sync::key_watch::TrustState;
use crate::sync::readiness::Readiness;
use crate::sync::refresh::{RefreshRequest, Refresher, Scope};
use crate::sync::report::ReportState;
use crate::sync::status::Event;
use crate::sync::status::Provenance;
use crate::sync::status::{Activity, ActivityLog};
use crate::telemetry::{Gauges, Metrics, RefreshLabel};

/// What `/admin/status` reports about the configuration.
#[derive(Debug, Clone)]
pub struct StatusInfo {
    /// The source followed, as configured.
    pub source: Source,
    pub cache_path: Option<PathBuf>,
    pub cache: Arc<Activity>,
    pub trust: Arc<TrustState>,
    pub report: Arc<ReportState>,
    pub node: String,
    pub labels: std::collections::BTreeMap<String, String>,
}

/// Every route of this plane, as `(method, OpenAPI path)`: the surface
/// `openapi/admin.json` must describe (see `tests/it/openapi.rs`).
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/metrics"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/admin/status"),
    ("POST", "/admin/refresh"),
    ("GET", "/openapi.json"),
];

#[derive(Debug)]
pub struct AdminPlane {
    pub readiness: Readiness,
    pub metrics: Arc<Metrics>,
    pub refresher: Refresher,
    pub token: Option<Secret>,
    pub info: StatusInfo,
}

impl Handler for AdminPlane {
    fn handle(self: &Arc<Self>, req: Request<Incoming>) -> Reply {
        let path = req.uri().path();
        if path.starts_with("/admin/") && !self.authorized(&req) {
            if path == "/admin/refresh" {
                self.metrics.refreshed(RefreshLabel::Unauthorized);
            }
            return ApiError::unauthorized().into_response().into();
        }
        let response = match (routed(req.method()), path) {
            (&Method::GET, "/healthz") => {
                json_response(StatusCode::OK, &b"{\"status\":\"ok\"}"[..])
            }
            (&Method::GET, "/readyz") => match self.readiness.check() {
                Ok(()) => {
                    let p = self.provenance().as_str();
                    json_response(
                        StatusCode::OK,
                        format!("{{\"ready\":true,\"provenance\":\"{p}\"}}"),
                    )
                }
                Err(why) => ApiError::not_ready(why).into_response(),
            },
            (&Method::GET, "/metrics") => {
                let r = &self.readiness;
                let text = self.metrics.render(Gauges {
                    // Exact in a float64 (docs/operations.md says what it
                    // is for each source); NaN only past 2^53.
                    revision: r.store.cursor().gauge().unwrap_or(f64::NAN),
                    // Before any contact there is no age; 0 rather than a lie.
                    age_seconds: r.status.age(r.clock.now()).map_or(0.0, |a| a.as_secs_f64()),
                    projects: r.store.project_count(),
                    environments: r.store.environment_count(),
                    provenance: self.provenance().as_str(),
                });
                let mut response = Response::new(Body::new(text));
                response.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                response
            }
            (&Method::GET, "/admin/status") => self.status(),
            (&Method::GET, "/openapi.json") => openapi::response(openapi::OPERATOR_PLANE),
            (&Method::POST, "/admin/refresh") => {
                let (this, query) = (self.clone(), req.uri().query().unwrap_or("").to_owned());
                return Reply::later(async move { this.refresh(&query).await });
            }
            (
                _,
                "/healthz" | "/readyz" | "/metrics" | "/admin/status" | "/admin/refresh"
                | "/openapi.json",
            ) => ApiError::method_not_allowed(req.method(), path, allowed(ROUTES, path))
                .into_response(),
            _ => ApiError::no_route(path).into_response(),
        };
        response.into()
    }
}

impl AdminPlane {
    fn authorized(&self, req: &Request<Incoming>) -> bool {
        match &self.token {
            None => true,
            Some(token) => {
                token.matches_bearer(req.headers().get(AUTHORIZATION).map(HeaderValue::as_bytes))
            }
        }
    }

    fn provenance(&self) -> Provenance {
        Provenance::of(&self.readiness.store, &self.readiness.status)
    }

    async fn refresh(&self, query: &str) -> Response<Body> {
        let request = match parse_refresh(query) {
            Ok(r) => r,
            Err(message) => return ApiError::invalid(message).into_response(),
        };
        let outcome = self.refresher.refresh(request).await;
        self.metrics.refreshed(outcome.result.into());
        json_ok(&RefreshView::from(&*outcome))
    }

    fn status(&self) -> Response<Body> {
        let r = &self.readiness;
        let now = r.clock.now();
        let events = r.status.events();
        let readiness = r.check();
        let view = StatusView {
            version: env!("CARGO_PKG_VERSION"),
            node: NodeView {
                id: &self.info.node,
                labels: &self.info.labels,
            },
            provenance: self.provenance().as_str(),
            ready: readiness.is_ok(),
            not_ready_reason: readiness.err().map(|e| e.to_string()),
            source: SourceView::new(&self.info.source, r.store.cursor()),
            cursor: r.store.cursor(),
            last_success: events.last_success.as_ref().map(EventView::from),
            last_error: events.last_error.as_ref().map(EventView::from),
            population_incomplete: r.status.incomplete().as_ref().map(EventView::from),
            snapshot_age_seconds: r.status.age(now).map(|a| a.as_secs_f64()),
            projects: r.store.project_count(),
            environments: r.store.environment_count(),
            rejected: r
                .store
                .all_rejections()
                .iter()
                .map(RejectionView::from)
                .collect(),
            next_scheduled_change: r.store.next_scheduled().map(|(project, at)| {
                ScheduledChangeView {
                    project,
                    at: format_rfc3339(at),
                }
            }),
            trust: {
                let t = self.info.trust.keys();
                let reloads = self.info.trust.reloads.log();
                TrustView {
                    require_signatures: t.require_signatures,
                    keys: t.keyids,
                    max_signature_age_seconds: t.max_signature_age.map(|d| d.as_secs()),
                    last_change: reloads.last_success.as_ref().map(EventView::from),
                    last_error: reloads.last_error.as_ref().map(EventView::from),
                }
            },
            report: ReportStatusView {
                target: self.info.report.target(),
                writes: WritesView::from(&self.info.report.writes.log()),
            },
            cache: CacheView {
                path: self
                    .info
                    .cache_path
                    .as_ref()
                    .map(|p| p.display().to_string()),
                writes: WritesView::from(&self.info.cache.log()),
            },
        };
        json_ok(&view)
    }
}

fn parse_refresh(query: &str) -> Result<RefreshRequest, String> {
    let [project, allow] = params(query, ["project", "allow_mass_removal"])?;
    let scope = match project {
        None => Scope::All,
        Some(id) if is_valid_id(&id) => Scope::Project(id.into_owned()),
        Some(id) => return Err(format!("invalid project id {:?}", clip(&id))),
    };
    Ok(RefreshRequest {
        scope,
        mass_removal: MassRemoval::from_flag(flag("allow_mass_removal", allow.as_deref())?),
    })
}

#[derive(Serialize)]
struct StatusView<'a> {
    version: &'static str,
    node: NodeView<'a>,
    provenance: &'static str,
    ready: bool,
    not_ready_reason: Option<String>,
    source: SourceView<'a>,
    cursor: Cursor,
    last_success: Option<EventView>,
    last_error: Option<EventView>,
    /// Since when and why the source's population is incomplete (Redis):
    /// nothing is removed for being absent meanwhile.
    #[serde(skip_serializing_if = "Option::is_none")]
    population_incomplete: Option<EventView>,
    snapshot_age_seconds: Option<f64>,
    projects: usize,
    environments: usize,
    rejected: Vec<RejectionView>,
    next_scheduled_change: Option<ScheduledChangeView>,
    trust: TrustView,
    report: ReportStatusView,
    cache: CacheView,
}

#[derive(Serialize)]
struct NodeView<'a> {
    id: &'a str,
    labels: &'a std::collections::BTreeMap<String, String>,
}

#[derive(Serialize)]
struct ReportStatusView {
    /// Where the node report goes; `null` when none is written.
    target: Option<String>,
    #[serde(flatten)]
    writes: WritesView,
}

/// A writer's record (the cache writer, the reporter), as status shows it.
#[derive(Serialize)]
struct WritesView {
    writes: u64,
    last_write: Option<EventView>,
    last_error: Option<EventView>,
}

impl From<&ActivityLog> for WritesView {
    fn from(log: &ActivityLog) -> WritesView {
        WritesView {
            writes: log.successes,
            last_write: log.last_success.as_ref().map(EventView::from),
            last_error: log.last_error.as_ref().map(EventView::from),
        }
    }
}

#[derive(Serialize)]
struct TrustView {
    require_signatures: bool,
    /// Key ids in use.
    keys: Vec<String>,
    max_signature_age_seconds: Option<u64>,
    last_change: Option<EventView>,
    last_error: Option<EventView>,
}

#[derive(Serialize)]
struct ScheduledChangeView {
    project: String,
    at: String,
}

#[derive(Serialize)]
struct SourceView<'a> {
    kind: &'static str,
    url: Option<&'a str>,
    path: Option<String>,
    mode: Option<&'static str>,
    /// The cursor as a stream id (Redis), as `cursor` shows it too.
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_cursor: Option<String>,
}

impl<'a> SourceView<'a> {
    fn new(source: &'a Source, cursor: Cursor) -> SourceView<'a> {
        let (url, path, mode) = match source {
            Source::File(f) => (None, Some(f.path.display().to_string()), None),
            Source::Http(h) => (Some(h.url.as_str()), None, Some(h.mode.as_str())),
            Source::Redis(r) => (Some(r.url.as_str()), None, None),
        };
        SourceView {
            kind: source.kind().as_str(),
            url,
            path,
            mode,
            stream_cursor: cursor.stream().map(|id| id.to_string()),
        }
    }
}

#[derive(Serialize)]
struct CacheView {
    path: Option<String>,
    #[serde(flatten)]
    writes: WritesView,
}

#[derive(Serialize)]
struct EventView {
    at: String,
    message: String,
}

impl From<&Event> for EventView {
    fn from(e: &Event) -> Self {
        EventView {
            at: format_rfc3339(e.at),
            message: e.message.clone(),
        }
    }
}
