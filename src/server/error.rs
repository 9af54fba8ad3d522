//! Error answers: the one place where an error becomes a status code and
//! an error code, in the `{"error": {"code", "message"}}` shape used on
//! every plane (and inside batch results).

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use serde::Serialize;

use super::Body;
use crate::store::ResolveError;

pub const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// Every error code the sidecar answers, with its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 400: bad syntax, missing or repeated input, a body of the wrong shape.
    InvalidRequest,
    /// 401: `/admin/*` without the right bearer token.
    Unauthorized,
    /// 404: no such project.
    UnknownProject,
    /// 404: strict mode, no such environment in the project.
    UnknownEnvironment,
    /// 404: no such route.
    NotFound,
    /// 405: the route exists, the method does not (an addition to the
    /// contract's codes, so a client can tell it from bad input).
    MethodNotAllowed,
    /// 413: batch over its item or byte limit.
    PayloadTooLarge,
    /// 500: a bug (a stored document that no longer reads back).
    Internal,
    /// 503: no snapshot loaded yet (or stale beyond `max_staleness`).
    NotReady,
    /// 503: more open connections than the limit (an addition to the
    /// contract's codes: `not_ready` would wrongly say the snapshot is gone).
    Overloaded,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 10] = [
        ErrorCode::InvalidRequest,
        ErrorCode::Unauthorized,
        ErrorCode::UnknownProject,
        ErrorCode::UnknownEnvironment,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::PayloadTooLarge,
        ErrorCode::Internal,
        ErrorCode::NotReady,
        ErrorCode::Overloaded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::UnknownProject => "unknown_project",
            ErrorCode::UnknownEnvironment => "unknown_environment",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::Internal => "internal",
            ErrorCode::NotReady => "not_ready",
            ErrorCode::Overloaded => "overloaded",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::InvalidRequest => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::UnknownProject | ErrorCode::UnknownEnvironment | ErrorCode::NotFound => {
                StatusCode::NOT_FOUND
            }
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::NotReady | ErrorCode::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl From<ResolveError> for ErrorCode {
    fn from(err: ResolveError) -> ErrorCode {
        match err {
            ResolveError::InvalidProject | ResolveError::InvalidEnvironment => {
                ErrorCode::InvalidRequest
            }
            ResolveError::UnknownProject => ErrorCode::UnknownProject,
            ResolveError::UnknownEnvironment => ErrorCode::UnknownEnvironment,
            ResolveError::NotReady => ErrorCode::NotReady,
        }
    }
}

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// The methods a 405 names in its `Allow` header.
    pub allow: Option<&'static str>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            allow: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::InvalidRequest, message)
    }

    /// No route for `path`.
    pub fn no_route(path: &str) -> ApiError {
        ApiError::new(ErrorCode::NotFound, format!("no route for {}", clip(path)))
    }

    pub fn not_ready(why: impl std::fmt::Display) -> ApiError {
        ApiError::new(ErrorCode::NotReady, why.to_string())
    }

    pub fn too_large(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::PayloadTooLarge, message)
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(ErrorCode::Unauthorized, "missing or wrong bearer token")
    }

    /// `method` on a route that answers only `allow` (the `Allow` header's
    /// value, e.g. `"GET, HEAD"`).
    pub fn method_not_allowed(method: &http::Method, route: &str, allow: &'static str) -> ApiError {
        ApiError {
            allow: Some(allow),
            ..ApiError::new(
                ErrorCode::MethodNotAllowed,
                format!("{method} is not allowed on {route} (allowed: {allow})"),
            )
        }
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Internal, message)
    }

    /// A resolve failure, with the offending input quoted (bounded).
    pub fn from_resolve(err: ResolveError, project: &str, environment: Option<&str>) -> ApiError {
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
        ApiError::new(err.into(), message)
    }

    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    /// The error as JSON (also embedded in batch results and gRPC denials).
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
                code: self.code.as_str(),
                message: &self.message,
            },
        })
        .unwrap_or_default()
    }

    pub fn into_response(self) -> Response<Body> {
        let mut response = json_response(self.status(), self.body());
        let headers = response.headers_mut();
        if let Some(allow) = self.allow {
            headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        match self.code {
            ErrorCode::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ErrorCode::Overloaded => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }

    /// A whole HTTP/1.1 response that closes the connection, for answering
    /// before any request is read (a connection over the limit).
    pub fn to_http1_bytes(&self) -> Vec<u8> {
        let body = self.body();
        let mut out = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\nconnection: close\r\n{}content-length: {}\r\n\r\n",
            self.status().as_u16(),
            self.status().canonical_reason().unwrap_or(""),
            if self.code == ErrorCode::Overloaded { "retry-after: 1\r\n" } else { "" },
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(&body);
        out
    }
}

impl From<ResolveError> for ApiError {
    /// A resolve failure, worded without its input.
    fn from(err: ResolveError) -> ApiError {
        ApiError::new(err.into(), err.to_string())
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
        Err(e) => ApiError::internal(e.to_string()).into_response(),
    }
}

/// Bounds how much of a client's input an error message quotes back.
pub fn clip(text: &str) -> &str {
    match text.char_indices().nth(80) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_distinct_name_and_an_error_status() {
        let mut names: Vec<_> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ErrorCode::ALL.len());
        for code in ErrorCode::ALL {
            assert!(code.status().is_client_error() || code.status().is_server_error());
        }
    }

    #[test]
    fn the_raw_overloaded_answer_is_well_formed() {
        let raw =
            ApiError::new(ErrorCode::Overloaded, "too many open connections").to_http1_bytes();
        let text = String::from_utf8(raw).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{head}"
        );
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert!(head.contains("retry-after: 1"));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "overloaded");
    }
}
