//! The data plane: what gateways call on every request.
//!
//! * `GET  /v1/resolve`        resolve one request (query or headers)
//! * `POST /v1/resolve/batch`  resolve up to 1000 requests, answers in order
//! * `ANY  /v1/authz[/...]`    forward-auth: the configured headers only;
//!   200 with the `x-resolved-*` headers, 404 / 400 to deny, 503 not ready
//! * `POST /envoy.service.auth.v3.Authorization/Check`  Envoy ext_authz
//!   over gRPC (HTTP/2), see [`super::ext_authz`]
//! * `GET  /v1/projects`       ids and revisions of every project
//! * `GET  /v1/projects/{id}`  one project as served now
//!
//! Resolve, forward-auth and `Check` are the hot path: read the input in
//! place, resolve, answer with pre-rendered bytes and headers. No
//! allocation beyond what hyper needs for the response itself (and, for
//! gRPC, the encoded message).

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use percent_encoding::percent_decode_str;
use serde::{Deserialize, Serialize};

use super::error::{clip, json_ok, json_response, ApiError, ErrorCode, JSON};
use super::ext_authz::{self, RpcError};
use super::hot::{self, HotRoutes, Taken};
use super::openapi;
use super::query::{fill_from_headers, parse_query, single_header, Headers, ResolveQuery};
use super::service::{allowed, routed};
use super::views::ProjectView;
use super::{Body, Handler, Reply};
use crate::model::validate::is_valid_id;
use crate::store::{Answer, AnswerRef, Outcome, ResolveError, Store};
use crate::telemetry::{Api, Metrics, ResolveOutcome};

/// Most requests in one batch.
pub const MAX_BATCH_ITEMS: usize = 1000;
/// Largest batch body accepted (1000 maximal items fit comfortably).
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;

pub use super::headers::{
    PointersLimit, RESOLUTION_OUTCOME, RESOLVED_ENVIRONMENT, RESOLVED_POINTERS,
    RESOLVED_POINTERS_OMITTED, SNAPSHOT_REVISION,
};

/// Every route of this plane, as `(method, OpenAPI path)`: the surface
/// `openapi/data.json` must describe (`tests/it/openapi.rs` holds them in
/// step, and probes each one on a live sidecar). `*` is any method.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/v1/resolve"),
    ("POST", "/v1/resolve/batch"),
    ("*", "/v1/authz"),
    ("*", "/v1/authz/{rest}"),
    ("POST", ext_authz::CHECK_PATH),
    ("GET", "/v1/projects"),
    ("GET", "/v1/projects/{id}"),
    ("GET", "/openapi.json"),
];

#[derive(Debug, Clone)]
pub struct DataPlane {
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub project_header: HeaderName,
    pub environment_header: HeaderName,
    /// `server.max_pointers_header_bytes`.
    pub pointers_limit: PointersLimit,
}

impl Handler for DataPlane {
    fn hot_routes(&self) -> Option<&dyn HotRoutes> {
        Some(self)
    }

    fn handle(self: &Arc<Self>, req: Request<Incoming>) -> Reply {
        let path = req.uri().path();
        match (routed(req.method()), path) {
            (&Method::GET, "/v1/resolve") => self.resolve(&req).into(),
            (_, p) if is_authz(p) => self.authz(&req).into(),
            (&Method::POST, ext_authz::CHECK_PATH) => {
                let this = self.clone();
                Reply::later(async move { this.check(req).await })
            }
            (&Method::POST, "/v1/resolve/batch") => {
                let this = self.clone();
                Reply::later(async move { this.batch(req).await })
            }
            (&Method::GET, "/v1/projects") => self.list().into(),
            (&Method::GET, "/openapi.json") => openapi::response(openapi::DATA_PLANE).into(),
            (&Method::GET, p) if p.starts_with("/v1/projects/") => {
                self.project(&p["/v1/projects/".len()..]).into()
            }
            (
                _,
                "/v1/resolve"
                | "/v1/resolve/batch"
                | "/v1/projects"
                | "/openapi.json"
                | ext_authz::CHECK_PATH,
            ) => not_allowed(req.method(), path),
            (_, p) if p.starts_with("/v1/projects/") => {
                not_allowed(req.method(), "/v1/projects/{id}")
            }
            _ => ApiError::no_route(path).into_response().into(),
        }
    }
}

/// `/v1/authz` and everything under it: forward-auth, any method.
fn is_authz(path: &str) -> bool {
    path.strip_prefix("/v1/authz")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

fn not_allowed(method: &Method, route: &str) -> Reply {
    ApiError::method_not_allowed(method, route, allowed(ROUTES, route))
        .into_response()
        .into()
}

/// Resolve and forward-auth on the HTTP/1.1 hot path: the same rules as
/// through hyper (`resolve_query`, `authz_query`, `resolve_one`), the
/// answer written from the writer's pre-rendered parts.
impl HotRoutes for DataPlane {
    fn answer(&self, request: &hot::Request<'_>, out: &mut hot::Out<'_>) -> Taken {
        let started = Instant::now();
        let (api, query) = match request.path {
            "/v1/resolve" => (
                Api::Resolve,
                self.resolve_query(request.query, request.headers),
            ),
            p if is_authz(p) => (Api::AuthzHttp, self.authz_query(request.headers)),
            _ => return Taken::NotHot,
        };
        let limit = self.pointers_limit;
        let answered = match query {
            Ok(query) => self.resolve_one(api, &query, started, |a| write_answer(out, &a, limit)),
            Err(message) => Err(self.invalid(api, message, started)),
        };
        if let Err(err) = answered {
            out.respond_with(&err.into_response());
        }
        Taken::Answered
    }
}

impl DataPlane {
    fn resolve(&self, req: &Request<Incoming>) -> Response<Body> {
        let started = Instant::now();
        let query = req.uri().query().unwrap_or("");
        let query = match self.resolve_query(query, req.headers()) {
            Ok(query) => query,
            Err(message) => return self.invalid(Api::Resolve, message, started).into_response(),
        };
        match self.resolve_one(Api::Resolve, &query, started, |a| a.owned()) {
            Ok(answer) => answer_response(answer, self.pointers_limit),
            Err(err) => err.into_response(),
        }
    }

    /// Forward-auth: any method, project and environment from the
    /// configured headers only (the query and body are the client's).
    fn authz(&self, req: &Request<Incoming>) -> Response<Body> {
        let started = Instant::now();
        let query = match self.authz_query(req.headers()) {
            Ok(query) => query,
            Err(message) => {
                return self
                    .invalid(Api::AuthzHttp, message, started)
                    .into_response()
            }
        };
        match self.resolve_one(Api::AuthzHttp, &query, started, |a| a.owned()) {
            Ok(answer) => answer_response(answer, self.pointers_limit),
            Err(err) => err.into_response(),
        }
    }

    /// A resolve request: the query's parameters, then the configured
    /// headers for what it left out.
    fn resolve_query<'a, H: Headers + ?Sized>(
        &self,
        query: &'a str,
        headers: &'a H,
    ) -> Result<ResolveQuery<'a>, String> {
        let mut query = parse_query(query)?;
        fill_from_headers(
            &mut query,
            headers,
            &self.project_header,
            &self.environment_header,
        )?;
        Ok(query)
    }

    /// A forward-auth request: the configured headers only.
    fn authz_query<'a, H: Headers + ?Sized>(
        &self,
        headers: &'a H,
    ) -> Result<ResolveQuery<'a>, String> {
        Ok(ResolveQuery {
            project: single_header(headers, &self.project_header)?.map(Cow::Borrowed),
            environment: single_header(headers, &self.environment_header)?.map(Cow::Borrowed),
            strict: false,
        })
    }

    /// Envoy ext_authz `Check` over gRPC.
    async fn check(&self, req: Request<Incoming>) -> Response<Body> {
        let started = Instant::now();
        let grpc = req
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        if !grpc {
            return ApiError::invalid("content-type must be application/grpc").into_response();
        }
        let body = match read_body(req.into_body(), MAX_BATCH_BYTES).await {
            Ok(body) => body,
            Err(BodyError::TooLarge) => {
                return ext_authz::failure(&RpcError::new(
                    ext_authz::code::RESOURCE_EXHAUSTED,
                    format!("request larger than {MAX_BATCH_BYTES} bytes"),
                ))
            }
            Err(BodyError::Read(e)) => {
                return ext_authz::failure(&RpcError::new(
                    ext_authz::code::INVALID_ARGUMENT,
                    format!("cannot read the request: {e}"),
                ))
            }
        };
        let message = match ext_authz::grpc_message(&body) {
            Ok(message) => message,
            Err(e) => return ext_authz::failure(&e),
        };
        let query =
            match ext_authz::identity(message, &self.project_header, &self.environment_header) {
                Ok(Ok((project, environment))) => ResolveQuery {
                    project,
                    environment,
                    strict: false,
                },
                Ok(Err(message)) => {
                    let err = self.invalid(Api::AuthzGrpc, message, started);
                    return ext_authz::reply(&ext_authz::denied(&err));
                }
                Err(e) => return ext_authz::failure(&e),
            };
        let project = query.project.as_deref().unwrap_or_default();
        let reply =
            |answer: AnswerRef<'_>| ext_authz::allowed_reply(&answer, project, self.pointers_limit);
        match self.resolve_one(Api::AuthzGrpc, &query, started, reply) {
            Ok(reply) => reply,
            // Envoy's failure_mode_allow decides.
            Err(err) if err.code == ErrorCode::NotReady => {
                ext_authz::failure(&RpcError::new(ext_authz::code::UNAVAILABLE, err.message))
            }
            Err(err) => ext_authz::reply(&ext_authz::denied(&err)),
        }
    }

    /// Resolves one request, records it in the metrics, and lends the
    /// answer to `f` (as [`Store::resolve_with`] does).
    fn resolve_one<R>(
        &self,
        api: Api,
        query: &ResolveQuery<'_>,
        started: Instant,
        f: impl FnOnce(AnswerRef<'_>) -> R,
    ) -> Result<R, ApiError> {
        let Some(project) = query.project.as_deref() else {
            let header = &self.project_header;
            let message = match api {
                Api::Resolve => {
                    format!("project is required (query parameter \"project\" or header {header})")
                }
                Api::Batch => "project is required in every batch item".to_owned(),
                Api::AuthzHttp => format!("header {header} is required"),
                Api::AuthzGrpc => format!(
                    "project is required (context extension \"project\" or header {header})"
                ),
            };
            return Err(self.invalid(api, message, started));
        };
        // An empty environment is the same as none: proxies often forward
        // an empty header for an absent one.
        let environment = query.environment.as_deref().filter(|e| !e.is_empty());
        let result = self
            .store
            .resolve_with(project, environment, query.strict, |a| (a.outcome, f(a)));
        let outcome = match &result {
            Ok((Outcome::Exact, _)) => ResolveOutcome::Exact,
            Ok(_) => ResolveOutcome::Fallback,
            Err(ResolveError::InvalidProject | ResolveError::InvalidEnvironment) => {
                ResolveOutcome::InvalidRequest
            }
            Err(ResolveError::UnknownProject) => ResolveOutcome::UnknownProject,
            Err(ResolveError::UnknownEnvironment) => ResolveOutcome::UnknownEnvironment,
            Err(ResolveError::NotReady) => ResolveOutcome::NotReady,
        };
        self.metrics.resolved(api, outcome, started.elapsed());
        result
            .map(|(_, r)| r)
            .map_err(|err| ApiError::from_resolve(err, project, environment))
    }

    fn invalid(&self, api: Api, message: String, started: Instant) -> ApiError {
        self.metrics
            .resolved(api, ResolveOutcome::InvalidRequest, started.elapsed());
        ApiError::invalid(message)
    }

    async fn batch(&self, req: Request<Incoming>) -> Response<Body> {
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_BATCH_BYTES as u64) {
            return too_large_body().into_response();
        }
        let bytes = match read_body(req.into_body(), MAX_BATCH_BYTES).await {
            Ok(bytes) => bytes,
            Err(BodyError::TooLarge) => return too_large_body().into_response(),
            Err(BodyError::Read(e)) => {
                return ApiError::invalid(format!("cannot read body: {e}")).into_response()
            }
        };
        let requests = match parse_batch(&bytes) {
            Ok(requests) => requests,
            Err(err) => return err.into_response(),
        };
        let mut out = Vec::with_capacity(32 + requests.len() * 320);
        out.extend_from_slice(b"{\"results\":[");
        for (i, item) in requests.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let query = ResolveQuery {
                project: item.project.as_deref().map(Cow::Borrowed),
                environment: item.environment.as_deref().map(Cow::Borrowed),
                strict: item.strict,
            };
            match self.resolve_one(Api::Batch, &query, Instant::now(), |a| {
                a.write_body(&mut out)
            }) {
                Ok(()) => {}
                Err(err) => out.extend_from_slice(&err.body()),
            }
        }
        out.extend_from_slice(b"]}");
        json_response(StatusCode::OK, out)
    }

    fn list(&self) -> Response<Body> {
        if !self.store.is_loaded() {
            return ApiError::from(ResolveError::NotReady).into_response();
        }
        #[derive(Serialize)]
        struct Item<'a> {
            id: &'a str,
            revision: u64,
        }
        #[derive(Serialize)]
        struct List<'a> {
            projects: Vec<Item<'a>>,
        }
        let all = self.store.projects();
        json_ok(&List {
            projects: all
                .iter()
                .map(|p| Item {
                    id: p.id(),
                    revision: p.revision(),
                })
                .collect(),
        })
    }

    fn project(&self, raw_id: &str) -> Response<Body> {
        let id = match percent_decode_str(raw_id).decode_utf8() {
            Ok(id) => id,
            Err(_) => {
                return ApiError::invalid("project id is not valid UTF-8 once percent-decoded")
                    .into_response()
            }
        };
        if !is_valid_id(&id) {
            return ApiError::invalid(format!(
                "invalid project id {:?}: must be 1-128 characters of A-Z a-z 0-9 _ -",
                clip(&id)
            ))
            .into_response();
        }
        if !self.store.is_loaded() {
            return ApiError::from(ResolveError::NotReady).into_response();
        }
        let rejection = self.store.rejection(&id);
        match self.store.project(&id) {
            Some(project) => match project.reparse() {
                Ok(valid) => json_ok(&ProjectView::new(&project, &valid, rejection.as_ref())),
                Err(e) => ApiError::internal(e.to_string()).into_response(),
            },
            None => {
                let mut message = format!("unknown project {id:?}");
                if let Some(r) = rejection {
                    message.push_str(&format!(
                        "; its document (revision {}) was rejected: {}: {}",
                        r.revision.map_or("?".to_string(), |r| r.to_string()),
                        r.reason.as_str(),
                        r.message
                    ));
                }
                ApiError::new(ErrorCode::UnknownProject, message).into_response()
            }
        }
    }
}

/// Why a request body could not be read.
enum BodyError {
    TooLarge,
    Read(hyper::Error),
}

/// A request body, whole, refused past `limit` bytes. A body that arrives
/// in one frame (a gRPC call's usual shape) is that frame's bytes, not a
/// copy; trailers are ignored.
async fn read_body(mut body: Incoming, limit: usize) -> Result<Bytes, BodyError> {
    let mut first = Bytes::new();
    let mut more: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(BodyError::Read)?.into_data() else {
            continue;
        };
        if first.len() + more.len() + data.len() > limit {
            return Err(BodyError::TooLarge);
        }
        if first.is_empty() && more.is_empty() {
            first = data;
        } else {
            // A second frame: from here on the body is gathered in `more`.
            more.extend_from_slice(&std::mem::take(&mut first));
            more.extend_from_slice(&data);
        }
    }
    Ok(if more.is_empty() { first } else { more.into() })
}

fn too_large_body() -> ApiError {
    ApiError::too_large(format!("batch body larger than {MAX_BATCH_BYTES} bytes"))
}

#[derive(Deserialize)]
struct BatchBody {
    requests: Vec<BatchItem>,
}

/// One request of a batch, as the client sent it.
#[derive(Debug, Deserialize)]
pub struct BatchItem {
    #[serde(default)]
    pub project: Option<String>,
    #[serde(default)]
    pub environment: Option<String>,
    #[serde(default)]
    pub strict: bool,
}

/// Reads a batch body: `{"requests": [...]}` with at most
/// [`MAX_BATCH_ITEMS`] items (the byte limit is enforced while reading).
pub fn parse_batch(bytes: &[u8]) -> Result<Vec<BatchItem>, ApiError> {
    let body: BatchBody = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::invalid(format!(
            "body must be {{\"requests\": [{{\"project\": ..., \"environment\": ...}}, ...]}}: {e}"
        ))
    })?;
    if body.requests.len() > MAX_BATCH_ITEMS {
        return Err(ApiError::too_large(format!(
            "{} requests in one batch; at most {MAX_BATCH_ITEMS}",
            body.requests.len()
        )));
    }
    Ok(body.requests)
}

/// A 200 resolve answer: pre-rendered body and headers, no formatting.
pub fn answer_response(answer: Answer, limit: PointersLimit) -> Response<Body> {
    let Answer {
        outcome,
        prefix,
        tail,
        environment,
        revision,
        pointers,
    } = answer;
    let fragment = Bytes::from_static(outcome.fragment());
    let mut response = Response::new(Body::chunks([prefix, fragment, tail]));
    let (pointers_name, pointers) = limit.header(&pointers);
    let pointers = pointers.clone();
    // The template's names are hashed once; here the values are set in
    // place (no hashing, no probing, as five inserts would).
    let mut headers = answer_headers(pointers_name == RESOLVED_POINTERS).clone();
    let (mut environment, mut revision, mut pointers) =
        (Some(environment), Some(revision), Some(pointers));
    for (name, value) in headers.iter_mut() {
        let set = if *name == RESOLVED_ENVIRONMENT {
            environment.take()
        } else if *name == SNAPSHOT_REVISION {
            revision.take()
        } else if *name == RESOLUTION_OUTCOME {
            Some(outcome_header(outcome))
        } else if *name == pointers_name {
            pointers.take()
        } else {
            None
        };
        if let Some(set) = set {
            *value = set;
        }
    }
    *response.headers_mut() = headers;
    response
}

/// A 200 resolve answer on the hot path: the headers of
/// [`answer_response`], in its order, from the same pre-rendered values.
fn write_answer(out: &mut hot::Out<'_>, answer: &AnswerRef<'_>, limit: PointersLimit) {
    let (pointers_name, pointers) = limit.header(answer.pointers);
    out.respond(
        StatusCode::OK,
        [
            (header::CONTENT_TYPE.as_str(), JSON.as_bytes()),
            (RESOLVED_ENVIRONMENT.as_str(), answer.environment.as_bytes()),
            (
                RESOLUTION_OUTCOME.as_str(),
                answer.outcome.as_str().as_bytes(),
            ),
            (SNAPSHOT_REVISION.as_str(), answer.revision.as_bytes()),
            (pointers_name.as_str(), pointers.as_bytes()),
        ],
        [
            answer.prefix.as_ref(),
            answer.outcome.fragment(),
            answer.tail.as_ref(),
        ],
    );
}

/// Every answer's headers, with placeholder values: `content-type`,
/// `x-resolved-environment`, `x-resolution-outcome`,
/// `x-snapshot-revision`, and `x-resolved-pointers` (`with_pointers`) or
/// `x-resolved-pointers-omitted`.
fn answer_headers(with_pointers: bool) -> &'static HeaderMap {
    static TEMPLATES: OnceLock<[HeaderMap; 2]> = OnceLock::new();
    let [with, without] = TEMPLATES.get_or_init(|| {
        [RESOLVED_POINTERS, RESOLVED_POINTERS_OMITTED].map(|pointers| {
            let mut headers = HeaderMap::with_capacity(5);
            headers.insert(header::CONTENT_TYPE, JSON);
            for name in [
                RESOLVED_ENVIRONMENT,
                RESOLUTION_OUTCOME,
                SNAPSHOT_REVISION,
                pointers,
            ] {
                headers.insert(name, HeaderValue::from_static(""));
            }
            headers
        })
    });
    if with_pointers {
        with
    } else {
        without
    }
}

fn outcome_header(outcome: Outcome) -> HeaderValue {
    HeaderValue::from_static(outcome.as_str())
}
