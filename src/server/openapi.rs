//! The OpenAPI 3.1 descriptions of both planes, served at `GET
//! /openapi.json` on each. They are files in `openapi/` beside this one;
//! `tests/it/openapi.rs` keeps them in step with each plane's `ROUTES`, and
//! CI runs schemathesis against the real sidecar with them.

use bytes::Bytes;
use http::{Response, StatusCode};

use super::error::json_response;
use super::Body;

pub const DATA_PLANE: &str = include_str!("openapi/data.json");
pub const OPERATOR_PLANE: &str = include_str!("openapi/admin.json");

pub fn response(document: &'static str) -> Response<Body> {
    json_response(StatusCode::OK, Bytes::from_static(document.as_bytes()))
}
