//! The operator plane (default `127.0.0.1:9901`).
//!
//! * `GET /healthz`  200 while the process runs
//! * `GET /readyz`   200 once a snapshot is loaded and not stale, else 503
//!
//! Probes stay open; nothing here is on the resolve path.

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::api::{clip, json_response, ApiError};
use super::{Body, Handler};
use crate::readiness::Readiness;

#[derive(Debug, Clone)]
pub struct AdminPlane {
    pub readiness: Readiness,
}

impl Handler for AdminPlane {
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path();
        match (req.method(), path) {
            (&Method::GET, "/healthz") => {
                json_response(StatusCode::OK, &b"{\"status\":\"ok\"}"[..])
            }
            (&Method::GET, "/readyz") => match self.readiness.check() {
                Ok(()) => json_response(StatusCode::OK, &b"{\"ready\":true}"[..]),
                Err(why) => {
                    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", why).into_response()
                }
            },
            (m, "/healthz" | "/readyz") => ApiError::method_not_allowed(m, path).into_response(),
            _ => ApiError::not_found(format!("no route for {}", clip(path))).into_response(),
        }
    }
}
