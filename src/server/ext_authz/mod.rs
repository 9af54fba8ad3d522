//! Envoy's external authorization over gRPC
//! (`envoy.service.auth.v3.Authorization/Check`): the wire format only.
//!
//! The messages are written here from the proto field numbers of
//! `envoy/service/auth/v3/external_auth.proto` and its imports, with only
//! the fields the sidecar reads or writes (prost skips the rest), so no
//! `protoc` and no generated code are needed. What a check decides is the
//! data plane's business (`server::data`); this module reads a request's
//! input and words the answer.
//!
//! * [`request`]: the project and environment read straight from a
//!   request's bytes (the hot path; the [`CheckRequest`] message describes
//!   the same fields, and is what clients and the tests encode).
//! * this module: the framing, and the replies (the OK reply encoded
//!   straight from the answer, the rest through prost).

pub mod request;

use std::collections::{BTreeMap, HashMap};

use bytes::{BufMut, Bytes, BytesMut};
use http::{header, HeaderName, HeaderValue, Response, StatusCode};
use prost::Message;

use super::error::ApiError;
use super::headers::PointersLimit;
use super::Body;
use crate::protobuf::{self, ValueKind};
use crate::store::{AnswerRef, StructBytes};

/// The RPC's path (HTTP/2 `:path`).
pub const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

/// gRPC status codes used here (`google.rpc.Code`).
pub mod code {
    pub const OK: i32 = 0;
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const NOT_FOUND: i32 = 5;
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    pub const UNIMPLEMENTED: i32 = 12;
    pub const UNAVAILABLE: i32 = 14;
}

/// `envoy.config.core.v3.HeaderValueOption.HeaderAppendAction`.
const OVERWRITE_IF_EXISTS_OR_ADD: i32 = 2;

#[derive(Clone, PartialEq, Message)]
pub struct CheckRequest {
    #[prost(message, optional, tag = "1")]
    pub attributes: Option<AttributeContext>,
}

#[derive(Clone, PartialEq, Message)]
pub struct AttributeContext {
    #[prost(message, optional, tag = "4")]
    pub request: Option<AttributeRequest>,
    /// Set per route by the operator (`ExtAuthzPerRoute.check_settings`).
    #[prost(map = "string, string", tag = "10")]
    pub context_extensions: HashMap<String, String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct AttributeRequest {
    #[prost(message, optional, tag = "2")]
    pub http: Option<HttpRequest>,
}

#[derive(Clone, PartialEq, Message)]
pub struct HttpRequest {
    #[prost(string, tag = "2")]
    pub method: String,
    /// Lower-case names; Envoy joins repeated headers with `,`.
    #[prost(map = "string, string", tag = "3")]
    pub headers: HashMap<String, String>,
    #[prost(string, tag = "4")]
    pub path: String,
    /// Set instead of `headers` when Envoy encodes raw headers.
    #[prost(message, optional, tag = "13")]
    pub header_map: Option<HeaderMap>,
}

#[derive(Clone, PartialEq, Message)]
pub struct HeaderMap {
    #[prost(message, repeated, tag = "1")]
    pub headers: Vec<HeaderValueProto>,
}

/// `envoy.config.core.v3.HeaderValue`.
#[derive(Clone, PartialEq, Message)]
pub struct HeaderValueProto {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
    #[prost(bytes = "vec", tag = "3")]
    pub raw_value: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
pub struct CheckResponse {
    #[prost(message, optional, tag = "1")]
    pub status: Option<RpcStatus>,
    #[prost(oneof = "HttpResponse", tags = "2, 3")]
    pub http_response: Option<HttpResponse>,
    #[prost(message, optional, tag = "4")]
    pub dynamic_metadata: Option<Struct>,
}

/// `google.rpc.Status`.
#[derive(Clone, PartialEq, Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum HttpResponse {
    #[prost(message, tag = "2")]
    Denied(DeniedHttpResponse),
    #[prost(message, tag = "3")]
    Ok(OkHttpResponse),
}

#[derive(Clone, PartialEq, Message)]
pub struct DeniedHttpResponse {
    #[prost(message, optional, tag = "1")]
    pub status: Option<HttpStatus>,
    #[prost(message, repeated, tag = "2")]
    pub headers: Vec<HeaderValueOption>,
    #[prost(string, tag = "3")]
    pub body: String,
}

/// `envoy.type.v3.HttpStatus`: the code is the HTTP status number.
#[derive(Clone, PartialEq, Message)]
pub struct HttpStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct OkHttpResponse {
    #[prost(message, repeated, tag = "2")]
    pub headers: Vec<HeaderValueOption>,
}

#[derive(Clone, PartialEq, Message)]
pub struct HeaderValueOption {
    #[prost(message, optional, tag = "1")]
    pub header: Option<HeaderValueProto>,
    #[prost(int32, tag = "3")]
    pub append_action: i32,
}

/// `google.protobuf.Struct`.
#[derive(Clone, PartialEq, Message)]
pub struct Struct {
    #[prost(btree_map = "string, message", tag = "1")]
    pub fields: BTreeMap<String, Value>,
}

/// `google.protobuf.Value` (the kinds used here).
#[derive(Clone, PartialEq, Message)]
pub struct Value {
    #[prost(oneof = "Kind", tags = "3, 5")]
    pub kind: Option<Kind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Kind {
    #[prost(string, tag = "3")]
    String(String),
    #[prost(message, tag = "5")]
    Struct(Struct),
}

/// A request that cannot be taken as a `Check` call at all (the RPC fails
/// with this status; a check that merely denies is a `CheckResponse`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    pub code: i32,
    pub message: String,
}

impl RpcError {
    pub fn new(code: i32, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
        }
    }
}

/// The message of a unary request body: one uncompressed,
/// length-prefixed message, returned without its 5-byte prefix.
pub fn grpc_message(body: &[u8]) -> Result<&[u8], RpcError> {
    let invalid = |m: &str| RpcError::new(code::INVALID_ARGUMENT, m);
    let Some((&[flag, a, b, c, d], message)) = body.split_first_chunk::<5>() else {
        return Err(invalid("a gRPC message needs its 5-byte prefix"));
    };
    if flag != 0 {
        return Err(RpcError::new(
            code::UNIMPLEMENTED,
            "compressed messages are not supported",
        ));
    }
    let len = u32::from_be_bytes([a, b, c, d]) as usize;
    if len != message.len() {
        return Err(invalid(&format!(
            "the message prefix says {len} bytes, {} followed",
            message.len()
        )));
    }
    Ok(message)
}

/// The project and environment a `Check` message asks about (see
/// [`request::identity`]); a message that is not a `CheckRequest` is an
/// `INVALID_ARGUMENT` failure.
pub fn identity<'a>(
    message: &'a [u8],
    project_header: &HeaderName,
    environment_header: &HeaderName,
) -> Result<Result<request::Identity<'a>, String>, RpcError> {
    request::identity(message, project_header, environment_header).map_err(|e| {
        RpcError::new(
            code::INVALID_ARGUMENT,
            format!("not a CheckRequest: {}", e.0),
        )
    })
}

/// The answer for a resolved check as a framed gRPC reply: OK, the
/// `x-resolved-*` headers set (replacing whatever the client sent), and
/// the resolution as dynamic metadata (`pointers` as a struct, kind → key
/// → version: the writer's bytes, or encoded from the answer's text, see
/// [`PointersStructs`](crate::store::PointersStructs)). Encoded straight
/// from the answer into one buffer, without the allocations of building
/// the message first: the message prost reads back is the one the tests
/// build. This is the `Check` hot path.
pub fn allowed_reply(
    answer: &AnswerRef<'_>,
    project: &str,
    limit: PointersLimit,
) -> Response<Body> {
    let environment = answer.environment.as_bytes();
    let revision = answer.revision.as_bytes();
    let outcome = answer.outcome.as_str().as_bytes();
    let (pointers_name, pointers_header) = limit.header(answer.pointers);
    // The names of `headers::RESOLVED_ENVIRONMENT` and the others (the test
    // against `allowed` holds them equal).
    let headers: [(&[u8], &[u8]); 4] = [
        (b"x-resolved-environment", environment),
        (b"x-resolution-outcome", outcome),
        (b"x-snapshot-revision", revision),
        (
            pointers_name.as_str().as_bytes(),
            pointers_header.as_bytes(),
        ),
    ];
    let pointers = answer.pointers_struct();
    // Struct fields, in the key order of prost's BTreeMap.
    let metadata: [(&[u8], Field); 5] = [
        (b"environment", Field::String(environment)),
        (b"outcome", Field::String(outcome)),
        (b"pointers", Field::Struct(&pointers)),
        (b"project", Field::String(project.as_bytes())),
        (b"revision", Field::String(revision)),
    ];
    let header_option_len = |k: &[u8], v: &[u8]| {
        protobuf::message_len(protobuf::string_len(k) + protobuf::string_len(v))
            + protobuf::varint_field_len(OVERWRITE_IF_EXISTS_OR_ADD as u64)
    };
    let ok_len: usize = headers
        .iter()
        .map(|(k, v)| protobuf::message_len(header_option_len(k, v)))
        .sum();
    let metadata: [(&[u8], Field, usize); 5] = metadata.map(|(k, v)| (k, v, v.len()));
    let struct_len: usize = metadata
        .iter()
        .map(|(k, _, len)| protobuf::message_len(protobuf::struct_entry_len(k, *len)))
        .sum();
    // status = 1 (an empty RpcStatus: code OK), ok_response = 3,
    // dynamic_metadata = 4.
    let len = protobuf::message_len(0)
        + protobuf::message_len(ok_len)
        + protobuf::message_len(struct_len);
    let mut out = BytesMut::with_capacity(5 + len);
    out.put_u8(0);
    out.put_u32(len as u32);
    protobuf::put_message(&mut out, 1, 0);
    protobuf::put_message(&mut out, 3, ok_len);
    for (k, v) in headers {
        protobuf::put_message(&mut out, 2, header_option_len(k, v));
        protobuf::put_message(
            &mut out,
            1,
            protobuf::string_len(k) + protobuf::string_len(v),
        );
        protobuf::put_string(&mut out, 1, k);
        protobuf::put_string(&mut out, 2, v);
        protobuf::put_varint_field(&mut out, 3, OVERWRITE_IF_EXISTS_OR_ADD as u64);
    }
    protobuf::put_message(&mut out, 4, struct_len);
    for (k, v, len) in metadata {
        protobuf::put_struct_entry_head(&mut out, k, v.kind(), len);
        v.put(&mut out);
    }
    debug_assert_eq!(out.len(), 5 + len);
    let mut trailers = http::HeaderMap::new();
    trailers.insert(GRPC_STATUS, HeaderValue::from_static("0"));
    let mut response = Response::new(Body::with_trailers(out.freeze(), trailers));
    response.headers_mut().insert(header::CONTENT_TYPE, GRPC);
    response
}

/// A `google.protobuf.Value` of the dynamic metadata, before encoding.
#[derive(Clone, Copy)]
enum Field<'a> {
    /// `string_value`.
    String(&'a [u8]),
    /// `struct_value`: the answer's pointers as a struct of structs.
    Struct(&'a StructBytes<'a>),
}

impl Field<'_> {
    /// The length of what the `Value` holds (the string, or the struct's
    /// fields).
    fn len(self) -> usize {
        match self {
            Field::String(v) => v.len(),
            Field::Struct(p) => p.len(),
        }
    }

    fn kind(self) -> ValueKind {
        match self {
            Field::String(_) => ValueKind::String,
            Field::Struct(_) => ValueKind::Struct,
        }
    }

    /// Writes what the `Value` holds (`len` bytes, from [`Field::len`]).
    fn put(self, out: &mut BytesMut) {
        match self {
            Field::String(v) => out.put_slice(v),
            Field::Struct(p) => p.put(out),
        }
    }
}

/// The answer for a denied check: NOT_FOUND (404) or INVALID_ARGUMENT
/// (400), with the sidecar's JSON error as the body Envoy sends back.
pub fn denied(error: &ApiError) -> CheckResponse {
    let code = if error.status() == StatusCode::NOT_FOUND {
        code::NOT_FOUND
    } else {
        code::INVALID_ARGUMENT
    };
    CheckResponse {
        status: Some(RpcStatus {
            code,
            message: error.message.clone(),
        }),
        http_response: Some(HttpResponse::Denied(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: i32::from(error.status().as_u16()),
            }),
            headers: vec![HeaderValueOption {
                header: Some(HeaderValueProto {
                    key: "content-type".into(),
                    value: "application/json".into(),
                    raw_value: Vec::new(),
                }),
                append_action: OVERWRITE_IF_EXISTS_OR_ADD,
            }],
            body: String::from_utf8_lossy(&error.body()).into_owned(),
        })),
        dynamic_metadata: None,
    }
}

const GRPC: HeaderValue = HeaderValue::from_static("application/grpc");
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// A successful call carrying `message`, with `grpc-status: 0` trailers.
pub fn reply(message: &CheckResponse) -> Response<Body> {
    let len = message.encoded_len();
    let mut out = BytesMut::with_capacity(5 + len);
    out.put_u8(0);
    out.put_u32(len as u32);
    // Into a buffer of the right size: cannot fail.
    let _ = message.encode(&mut out);
    let mut trailers = http::HeaderMap::new();
    trailers.insert(GRPC_STATUS, HeaderValue::from_static("0"));
    let mut response = Response::new(Body::with_trailers(out.freeze(), trailers));
    response.headers_mut().insert(header::CONTENT_TYPE, GRPC);
    response
}

/// A failed call (trailers only: the status is in the response headers).
pub fn failure(error: &RpcError) -> Response<Body> {
    let mut response = Response::new(Body::new(Bytes::new()));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, GRPC);
    headers.insert(GRPC_STATUS, HeaderValue::from(error.code));
    if let Ok(message) = HeaderValue::from_str(&percent_encode(&error.message)) {
        headers.insert(GRPC_MESSAGE, message);
    }
    response
}

/// `grpc-message` is percent-encoded (the gRPC spec: bytes outside
/// printable ASCII, and `%`).
fn percent_encode(text: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Answer, Outcome, PointersStruct};
    use http_body_util::BodyExt;

    /// What [`allowed_reply`] encodes, as a message: the oracle for its
    /// bytes. The pointers struct is built from serde_json's reading of
    /// the header text, not from the reply's own reader.
    fn allowed(answer: &Answer, project: &str, limit: PointersLimit) -> CheckResponse {
        let text = |v: &HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned();
        let set = |key: &HeaderName, value: String| HeaderValueOption {
            header: Some(HeaderValueProto {
                key: key.as_str().to_owned(),
                value,
                raw_value: Vec::new(),
            }),
            append_action: OVERWRITE_IF_EXISTS_OR_ADD,
        };
        let string = |v: String| Value {
            kind: Some(Kind::String(v)),
        };
        let environment = text(&answer.environment);
        let revision = text(&answer.revision);
        let outcome = answer.outcome.as_str().to_owned();
        let json: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(answer.pointers.as_bytes()).unwrap();
        let pointers = json
            .into_iter()
            .map(|(kind, map)| {
                let fields = map
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), string(v.as_str().unwrap().to_owned())))
                    .collect();
                let value = Value {
                    kind: Some(Kind::Struct(Struct { fields })),
                };
                (kind, value)
            })
            .collect();
        let mut metadata: BTreeMap<String, Value> = [
            ("project", project.to_owned()),
            ("revision", revision.clone()),
            ("environment", environment.clone()),
            ("outcome", outcome.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), string(v)))
        .collect();
        metadata.insert(
            "pointers".into(),
            Value {
                kind: Some(Kind::Struct(Struct { fields: pointers })),
            },
        );
        let (name, value) = limit.header(&answer.pointers);
        CheckResponse {
            status: Some(RpcStatus {
                code: code::OK,
                message: String::new(),
            }),
            http_response: Some(HttpResponse::Ok(OkHttpResponse {
                headers: vec![
                    set(&crate::server::headers::RESOLVED_ENVIRONMENT, environment),
                    set(&crate::server::headers::RESOLUTION_OUTCOME, outcome),
                    set(&crate::server::headers::SNAPSHOT_REVISION, revision),
                    set(&name, text(value)),
                ],
            })),
            dynamic_metadata: Some(Struct { fields: metadata }),
        }
    }

    #[tokio::test]
    async fn the_direct_encoding_of_an_allowed_check_is_the_message_prost_reads() {
        let long_project = "p".repeat(128); // lengths over 127: two-byte varints
        let many: String = (0..40)
            .map(|i| format!("\"prompt-{i:02}\":\"v{i}\""))
            .collect::<Vec<_>>()
            .join(",");
        let many = format!(r#"{{"prompts":{{{many}}},"routing_rules":{{}},"providers":{{}}}}"#);
        for (project, slug, revision, outcome, pointers) in [
            (
                "acme",
                "qa",
                "3",
                Outcome::Exact,
                r#"{"prompts":{"a":"1"},"routing_rules":{"default":"r-1"},"providers":{"openai":"act-9"}}"#,
            ),
            (
                "proj-000042",
                "staging",
                "18446744073709551615",
                Outcome::NotRequested,
                r#"{"prompts":{},"routing_rules":{},"providers":{}}"#,
            ),
            (
                long_project.as_str(),
                "eu-canary",
                "7",
                Outcome::UnknownEnvironment,
                many.as_str(),
            ),
            (
                "escapes",
                "prod",
                "1",
                Outcome::Exact,
                r#"{"prompts":{"q\"uote":"x\\y","\u00e9t\u00e9":"1"},"routing_rules":{},"providers":{"\ud83d\ude00":"2"}}"#,
            ),
        ] {
            let answer = Answer {
                outcome,
                prefix: Bytes::new(),
                tail: Bytes::new(),
                environment: HeaderValue::from_str(slug).unwrap(),
                revision: HeaderValue::from_str(revision).unwrap(),
                pointers: HeaderValue::from_str(pointers).unwrap(),
            };
            // The struct as the writer renders it: the same reply.
            let mut rendered = Vec::new();
            PointersStruct::measure(pointers).put(&mut rendered);
            let rendered = Bytes::from(rendered);
            let prerendered = AnswerRef {
                pointers_struct: Some(&rendered),
                ..answer.borrowed()
            };
            // Under the limit, exactly at it, and one byte over.
            for limit in [3072, pointers.len(), pointers.len() - 1].map(PointersLimit) {
                let response = allowed_reply(&answer.borrowed(), project, limit);
                let same = allowed_reply(&prerendered, project, limit);
                let same = same.into_body().collect().await.unwrap().to_bytes();
                assert_eq!(response.headers()[header::CONTENT_TYPE], "application/grpc");
                let collected = response.into_body().collect().await.unwrap();
                let trailers = collected.trailers().cloned().unwrap();
                assert_eq!(trailers[GRPC_STATUS], "0");
                let bytes = collected.to_bytes();
                assert_eq!(same, bytes, "{project}: prerendered and per check differ");
                let expected = allowed(&answer, project, limit);
                let HttpResponse::Ok(ok) = expected.http_response.as_ref().unwrap() else {
                    unreachable!()
                };
                let last = ok.headers[3].header.as_ref().unwrap();
                if limit.0 >= pointers.len() {
                    assert_eq!(
                        (last.key.as_str(), last.value.as_str()),
                        ("x-resolved-pointers", pointers)
                    );
                } else {
                    assert_eq!(
                        (last.key.as_str(), last.value.as_str()),
                        ("x-resolved-pointers-omitted", "too_large")
                    );
                }
                // The frame's length prefix is right, and prost reads the
                // message the oracle builds (a map's order is free on the
                // wire, so bytes would say too much).
                assert_eq!(bytes[0], 0);
                let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
                assert_eq!(len as usize, bytes.len() - 5);
                let decoded = CheckResponse::decode(&bytes[5..]).unwrap();
                assert_eq!(decoded, expected, "{project} {slug} {revision} {limit:?}");
            }
        }
    }

    fn framed(message: &impl Message) -> Vec<u8> {
        let body = message.encode_to_vec();
        let mut out = vec![0];
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    fn request(headers: &[(&str, &str)], extensions: &[(&str, &str)]) -> CheckRequest {
        CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(AttributeRequest {
                    http: Some(HttpRequest {
                        method: "GET".into(),
                        headers: headers
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect(),
                        path: "/v1/chat".into(),
                        header_map: None,
                    }),
                }),
                context_extensions: extensions
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            }),
        }
    }

    const P: HeaderName = HeaderName::from_static("x-project-id");
    const E: HeaderName = HeaderName::from_static("x-environment");

    #[test]
    fn a_framed_message_is_unwrapped_and_bad_frames_are_refused() {
        let req = request(&[("x-project-id", "acme")], &[]);
        let bytes = framed(&req);
        assert_eq!(grpc_message(&bytes).unwrap(), &req.encode_to_vec()[..]);
        assert_eq!(
            grpc_message(&bytes[..3]).unwrap_err().code,
            code::INVALID_ARGUMENT
        );
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(
            grpc_message(&long).unwrap_err().code,
            code::INVALID_ARGUMENT
        );
        let mut compressed = bytes.clone();
        compressed[0] = 1;
        assert_eq!(
            grpc_message(&compressed).unwrap_err().code,
            code::UNIMPLEMENTED
        );
        let garbage = [0xff, 0xff, 0xff];
        assert_eq!(
            identity(&garbage, &P, &E).unwrap_err().code,
            code::INVALID_ARGUMENT
        );
    }

    fn ask(req: &CheckRequest) -> Result<(Option<String>, Option<String>), String> {
        let bytes = req.encode_to_vec();
        identity(&bytes, &P, &E)
            .unwrap()
            .map(|(p, e)| (p.map(Into::into), e.map(Into::into)))
    }

    #[test]
    fn context_extensions_win_over_headers() {
        let req = request(
            &[("x-project-id", "from-header"), ("x-environment", "qa")],
            &[("project", "from-route")],
        );
        assert_eq!(
            ask(&req).unwrap(),
            (Some("from-route".into()), Some("qa".into()))
        );
        let headers_only = request(&[("X-Project-Id", "acme")], &[]);
        assert_eq!(ask(&headers_only).unwrap(), (Some("acme".into()), None));
    }

    #[test]
    fn repeated_identity_headers_are_refused_in_both_encodings() {
        let joined = request(&[("x-project-id", "acme,globex")], &[]);
        assert!(ask(&joined).is_err());
        let cased = request(&[("x-project-id", "acme"), ("X-Project-Id", "acme")], &[]);
        assert!(ask(&cased).is_err());
        let mut raw = request(&[], &[]);
        let http = raw.attributes.as_mut().unwrap().request.as_mut().unwrap();
        http.http.as_mut().unwrap().header_map = Some(HeaderMap {
            headers: ["acme", "globex"]
                .iter()
                .map(|v| HeaderValueProto {
                    key: "x-project-id".into(),
                    value: String::new(),
                    raw_value: v.as_bytes().to_vec(),
                })
                .collect(),
        });
        assert!(ask(&raw).is_err());
        // One raw header alone is read, the raw value winning.
        let only = raw.attributes.as_mut().unwrap().request.as_mut().unwrap();
        let map = only.http.as_mut().unwrap().header_map.as_mut().unwrap();
        map.headers.truncate(1);
        map.headers[0].value = "ignored".into();
        assert_eq!(ask(&raw).unwrap(), (Some("acme".into()), None));
    }

    #[test]
    fn grpc_messages_are_percent_encoded() {
        assert_eq!(percent_encode("a b%c\né"), "a b%25c%0A%C3%A9");
    }
}
