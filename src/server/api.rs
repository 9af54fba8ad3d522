//! The HTTP face of errors and JSON: the one place where an error becomes a
//! status code and an error code, in the `{"error": {"code", "message"}}`
//! shape used everywhere.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use serde::Serialize;

use super::Body;
use crate::resolve::ResolveError;

pub const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn not_ready() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "no snapshot loaded yet",
        )
    }

    pub fn too_large(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong bearer token",
        )
    }

    pub fn method_not_allowed(method: &http::Method, path: &str) -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request",
            format!("{method} is not allowed on {path}"),
        )
    }

    /// A resolve failure, with the offending input quoted (bounded).
    pub fn from_resolve(err: ResolveError, project: &str, environment: Option<&str>) -> ApiError {
        let (status, code) = resolve_status(err);
        let message = match err {
            ResolveError::InvalidProject => {
                format!("invalid project id {:?}: {err}", clip(project))
            }
            ResolveError::InvalidEnvironment => {
                format!(
                    "invalid environment {:?}: {err}",
                    clip(environment.unwrap_or_default())
                )
            }
            ResolveError::UnknownProject => format!("unknown project {project:?}"),
            ResolveError::UnknownEnvironment => format!(
                "project {project:?} has no environment {:?} (strict mode)",
                environment.unwrap_or_default()
            ),
            ResolveError::NotReady => err.to_string(),
        };
        ApiError::new(status, code, message)
    }

    /// The error as a JSON value (also embedded in batch results).
    pub fn body(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Inner<'a> {
            code: &'a str,
            message: &'a str,
        }
        #[derive(Serialize)]
        struct Outer<'a> {
            error: Inner<'a>,
        }
        serde_json::to_vec(&Outer {
            error: Inner {
                code: self.code,
                message: &self.message,
            },
        })
        .unwrap_or_default()
    }

    pub fn into_response(self) -> Response<Body> {
        let mut response = json_response(self.status, self.body());
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Status and code for a resolve failure: the single mapping.
pub fn resolve_status(err: ResolveError) -> (StatusCode, &'static str) {
    match err {
        ResolveError::InvalidProject | ResolveError::InvalidEnvironment => {
            (StatusCode::BAD_REQUEST, "invalid_request")
        }
        ResolveError::UnknownProject => (StatusCode::NOT_FOUND, "unknown_project"),
        ResolveError::UnknownEnvironment => (StatusCode::NOT_FOUND, "unknown_environment"),
        ResolveError::NotReady => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
    }
}

pub fn json_response(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Body::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, JSON);
    response
}

/// Serialises `value` as a 200 JSON answer.
pub fn json_ok<T: Serialize>(value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(bytes) => json_response(StatusCode::OK, bytes),
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            .into_response(),
    }
}

/// Bounds how much of a client's input an error message quotes back.
pub fn clip(text: &str) -> &str {
    match text.char_indices().nth(80) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}
