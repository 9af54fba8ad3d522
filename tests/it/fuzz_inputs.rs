//! Generated hostile inputs through the fuzz targets' checks (see
//! `tests/common/targets.rs`), on every `cargo test`: documents built to sit
//! on both sides of every rule, query strings and headers, batch bodies and
//! cache files, plus every input saved under `tests/fuzz/regressions/`
//! (crashes the coverage-guided fuzzers found, kept as regression tests).

use crate::common;

use common::targets;
use proptest::prelude::*;
use serde_json::{json, Value};

fn pick<T: Clone + std::fmt::Debug + 'static>(items: &[T]) -> impl Strategy<Value = T> {
    prop::sample::select(items.to_vec())
}

fn slug() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => pick(&["prod", "staging", "qa", "canary", "eu-1", "a"]).prop_map(String::from),
        1 => pick(&["", "Prod", "1qa", "qa-", "q_a", "q a", "é", "-x"]).prop_map(String::from),
        1 => (1usize..70).prop_map(|n| "s".repeat(n)),
    ]
}

fn id() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => "[a-z]{1,6}",
        1 => pick(&["", "a b", "a/b", "..", "ü", "a\u{0}"]).prop_map(String::from),
        1 => (120usize..135).prop_map(|n| "i".repeat(n)),
    ]
}

fn text(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[A-Za-z ]{1,12}",
        1 => Just(String::new()),
        1 => (max - 1..max + 2).prop_map(|n| "é".repeat(n)),
        1 => (max - 1..max + 2).prop_map(|n| "n".repeat(n)),
    ]
}

fn color() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "#[0-9a-fA-F]{6}",
        1 => pick(&["", "#12345", "#1234567", "123456#", "#gg0000", "#ééé"]).prop_map(String::from),
    ]
}

fn pointer_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z0-9.:/-]{1,10}",
        2 => pick(&["", "a\tb", "\u{7f}", "né", "\u{85}x", " ", "\n", "a\u{0}", "q\"uote", "back\\slash", "\u{1f600}"]).prop_map(String::from),
        1 => (127usize..130).prop_map(|n| "v".repeat(n)),
        1 => (127usize..130).prop_map(|n| "ü".repeat(n)),
    ]
}

fn pointer_map() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(pointer_text(), pointer_text(), 0..4).prop_map(|m| json!(m))
}

fn timestamp() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => pick(&[
            "2026-12-01T10:00:00Z",
            "2026-12-01t10:00:00.25+01:00",
            "2024-02-29 23:59:60z",
            "1969-12-31T23:30:00-01:00",
            "1970-01-01T00:00:00Z",
        ]).prop_map(String::from),
        3 => pick(&[
            "2026-02-29T00:00:00Z",
            "2026-12-01T10:00:00",
            "2026-12-01T24:00:00Z",
            "1970-01-01T00:30:00+01:00",
            "2026-12-01T10:00:00.Z",
            "2026-12-01T10:00:00+1:00",
            "tomorrow",
            "",
        ]).prop_map(String::from),
        1 => "[0-9T:.Z+ -]{18,26}",
    ]
}

fn scheduled() -> impl Strategy<Value = Value> {
    let kind = prop_oneof![
        6 => pick(&["prompts", "routing_rules", "providers"]),
        1 => pick(&["models", "Prompts", ""]),
    ];
    (
        timestamp(),
        prop::collection::btree_map(kind, pointer_map(), 0..3),
    )
        .prop_map(|(at, pointers)| json!({"at": at, "pointers": pointers}))
}

/// A valid environment; prod and staging carry the system flag.
fn environment(slug: &'static str) -> impl Strategy<Value = Value> {
    (
        "[A-Za-z0-9_-]{1,8}",
        "[A-Za-z][A-Za-z ]{0,11}",
        "#[0-9a-fA-F]{6}",
        (any::<bool>(), prop::option::of(-3i64..3)),
        (
            valid_pointers(),
            valid_pointers(),
            prop::collection::vec(valid_scheduled(), 0..2),
        ),
    )
        .prop_map(move |(id, name, color, (production, position), pointers)| {
            let mut env = json!({
                "id": format!("{id}-{slug}"), "slug": slug, "name": name, "color": color,
                "system": slug == "prod" || slug == "staging",
                "gateway_fallback": slug == "prod", "default_publish_target": slug == "staging",
                "production": production,
                "pointers": {"prompts": pointers.0, "routing_rules": pointers.1},
                "scheduled": pointers.2,
            });
            if let Some(p) = position {
                env["position"] = p.into();
            }
            env
        })
}

fn valid_pointers() -> impl Strategy<Value = Value> {
    prop::collection::btree_map("[a-z0-9.:/-]{1,10}", "[a-z0-9.:/-]{1,10}", 0..4)
        .prop_map(|m| json!(m))
}

fn valid_scheduled() -> impl Strategy<Value = Value> {
    (
        pick(&["2026-12-01T10:00:00Z", "2027-01-01T00:00:00.5+02:00"]),
        pick(&["prompts", "routing_rules", "providers"]),
        valid_pointers(),
    )
        .prop_map(|(at, kind, map)| json!({"at": at, "pointers": {kind: map}}))
}

/// One edit aimed at one rule, with a value from either side of it.
#[derive(Debug, Clone)]
enum Edit {
    ProjectId(String),
    EnvironmentId(usize, String),
    Slug(usize, String),
    FlipSystem(usize),
    Name(usize, String),
    Description(usize, String),
    Color(usize, String),
    FlipFallback(usize),
    FlipTarget(usize),
    Pointer(usize, String, String),
    Scheduled(usize, Value),
    CopyEnvironmentId(usize, usize),
    Drop(usize),
    ManyPointers(usize, usize),
    Clone(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let at = || 0usize..6;
    prop_oneof![
        id().prop_map(Edit::ProjectId),
        (at(), id()).prop_map(|(i, v)| Edit::EnvironmentId(i, v)),
        (at(), slug()).prop_map(|(i, v)| Edit::Slug(i, v)),
        at().prop_map(Edit::FlipSystem),
        (at(), text(64)).prop_map(|(i, v)| Edit::Name(i, v)),
        (at(), text(280)).prop_map(|(i, v)| Edit::Description(i, v)),
        (at(), color()).prop_map(|(i, v)| Edit::Color(i, v)),
        at().prop_map(Edit::FlipFallback),
        at().prop_map(Edit::FlipTarget),
        (at(), pointer_text(), pointer_text()).prop_map(|(i, k, v)| Edit::Pointer(i, k, v)),
        (at(), scheduled()).prop_map(|(i, v)| Edit::Scheduled(i, v)),
        (at(), at()).prop_map(|(i, j)| Edit::CopyEnvironmentId(i, j)),
        at().prop_map(Edit::Drop),
        (at(), 4094usize..4099).prop_map(|(i, n)| Edit::ManyPointers(i, n)),
        (at(), 250usize..260).prop_map(|(i, n)| Edit::Clone(i, n)),
    ]
}

fn apply(doc: &mut Value, edit: Edit) {
    let envs = doc["environments"].as_array_mut().expect("array");
    let n = envs.len();
    let env = |i: usize| i % n;
    match edit {
        Edit::ProjectId(v) => doc["id"] = v.into(),
        Edit::EnvironmentId(i, v) => envs[env(i)]["id"] = v.into(),
        Edit::Slug(i, v) => envs[env(i)]["slug"] = v.into(),
        Edit::FlipSystem(i) => flip(&mut envs[env(i)]["system"]),
        Edit::Name(i, v) => envs[env(i)]["name"] = v.into(),
        Edit::Description(i, v) => envs[env(i)]["description"] = v.into(),
        Edit::Color(i, v) => envs[env(i)]["color"] = v.into(),
        Edit::FlipFallback(i) => flip(&mut envs[env(i)]["gateway_fallback"]),
        Edit::FlipTarget(i) => flip(&mut envs[env(i)]["default_publish_target"]),
        Edit::Pointer(i, k, v) => envs[env(i)]["pointers"]["providers"][k] = v.into(),
        Edit::Scheduled(i, v) => envs[env(i)]["scheduled"] = json!([v]),
        Edit::CopyEnvironmentId(i, j) => envs[env(j)]["id"] = envs[env(i)]["id"].clone(),
        Edit::Drop(i) => {
            envs.remove(env(i));
        }
        Edit::ManyPointers(i, total) => {
            // Half direct, the rest (plus a few overlaps) from a schedule.
            let keys = |range: std::ops::Range<usize>| -> Value {
                json!(range
                    .map(|k| (format!("k{k}"), "v"))
                    .collect::<std::collections::BTreeMap<_, _>>())
            };
            let e = &mut envs[env(i)];
            e["pointers"] = json!({"prompts": keys(0..total / 2)});
            e["scheduled"] = json!([{"at": "2026-12-01T10:00:00Z", "pointers": {"prompts": keys(total / 2 - 3..total)}}]);
        }
        Edit::Clone(i, count) => {
            let template = envs[env(i)].clone();
            for k in n..count {
                let mut extra = template.clone();
                extra["id"] = format!("x{k}").into();
                extra["slug"] = format!("x{k}").into();
                extra["system"] = false.into();
                extra["gateway_fallback"] = false.into();
                extra["default_publish_target"] = false.into();
                envs.push(extra);
            }
        }
    }
}

fn flip(v: &mut Value) {
    *v = (!v.as_bool().unwrap_or(false)).into();
}

/// A valid project document (prod, staging and up to four more
/// environments, in any order), then zero to two edits aimed at rules.
fn document() -> impl Strategy<Value = Value> {
    let extras = prop::sample::subsequence(vec!["qa", "canary", "eu-1", "a"], 0..=4);
    (
        "[A-Za-z0-9_-]{1,12}",
        0u64..5,
        environment("prod"),
        environment("staging"),
        extras.prop_flat_map(|slugs| slugs.into_iter().map(environment).collect::<Vec<_>>()),
        any::<bool>(),
        prop::collection::vec(edit(), 0..3),
    )
        .prop_map(
            |(id, revision, prod, staging, mut envs, prod_first, edits)| {
                if prod_first {
                    envs.splice(0..0, [prod, staging]);
                } else {
                    envs.push(staging);
                    envs.push(prod);
                }
                let mut doc = json!({"id": id, "revision": revision, "environments": envs});
                for e in edits {
                    apply(&mut doc, e);
                }
                doc
            },
        )
}

/// Byte-level damage to a serialised document: truncation or one flipped byte.
/// One HTTP/1 request, mostly well formed, from the parts where the hot
/// path and hyper could part ways: methods, target forms, versions,
/// framing, connection and identity headers, bodies.
fn http1_request() -> impl Strategy<Value = Vec<u8>> {
    let method = prop_oneof![
        6 => pick(&["GET", "HEAD"]),
        1 => pick(&["POST", "get", "OPTIONS", "CONNECT"]),
    ];
    let target = pick(&[
        "/v1/resolve?project=acme",
        "/v1/resolve?project=acme&environment=qa",
        "/v1/resolve?project=acme&environment=nope&strict=true",
        "/v1/resolve?project=ac%6De&environment=%FF",
        "/v1/resolve?project=acme&project=x",
        "/v1/resolve",
        "/v1/resolve?",
        "/v1/resolve?project=acme#frag",
        "/v1/resolve?project={acme}",
        "/v1/authz",
        "/v1/authz/any/path?q=1",
        "/v1/authzx",
        "http://sidecar/v1/resolve?project=acme",
        "/v1/projects",
        "/v1/resolve/batch",
        "/nope",
        "*",
    ]);
    let version = prop_oneof![
        6 => pick(&["HTTP/1.1", "HTTP/1.0"]),
        1 => pick(&["HTTP/2.0", "HTTP/1.2", "http/1.1"]),
    ];
    let header = pick(&[
        "x-project-id: acme",
        "X-Project-Id:   globex  ",
        "x-project-id: bad id",
        "x-project-id: caf\u{e9}",
        "x-environment: qa",
        "X-ENVIRONMENT: staging",
        "x-environment:",
        "Host: sidecar",
        "Connection: close",
        "connection: Keep-Alive",
        "Connection: keep-alive, Upgrade",
        "Connection: close, keep-alive",
        "Content-Length: 0",
        "Content-Length: 5",
        "Content-Length: 5\r\nContent-Length: 6",
        "Transfer-Encoding: chunked",
        "Transfer-Encoding: gzip",
        "Expect: 100-continue",
        "Upgrade: h2c",
        "X-Odd : value",
        " folded",
        "x-empty:",
    ]);
    let body = pick(&[
        "",
        "hello",
        "0\r\n\r\n",
        "5\r\nhello\r\n0\r\n\r\n",
        "GET /v1/resolve HTTP/1.1\r\n\r\n",
    ]);
    (
        method,
        target,
        version,
        prop::collection::vec(header, 0..5),
        body,
    )
        .prop_map(|(method, target, version, headers, body)| {
            let mut request = format!("{method} {target} {version}\r\n");
            for header in headers {
                request.push_str(header);
                request.push_str("\r\n");
            }
            request.push_str("\r\n");
            request.push_str(body);
            request.into_bytes()
        })
}

fn damaged(doc: Value, cut: usize, flip: Option<(usize, u8)>) -> Vec<u8> {
    let mut bytes = doc.to_string().into_bytes();
    if let Some((at, byte)) = flip {
        let at = at % bytes.len();
        bytes[at] = byte;
    }
    bytes.truncate(bytes.len() - cut % bytes.len());
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: common::scaled(1000), ..ProptestConfig::default() })]

    #[test]
    fn documents_are_accepted_exactly_when_they_keep_every_rule(doc in document()) {
        targets::document(doc.to_string().as_bytes());
    }

    #[test]
    fn snapshots_serve_only_documents_that_keep_every_rule(
        docs in prop::collection::vec(document(), 0..4),
        revision in 0u64..3,
    ) {
        let body = json!({"revision": revision, "projects": docs});
        targets::document(body.to_string().as_bytes());
    }

    #[test]
    fn damaged_documents_never_panic(
        doc in document(),
        cut in 0usize..2000,
        flip in prop::option::of((any::<usize>(), any::<u8>())),
    ) {
        targets::document(&damaged(doc, cut, flip));
    }

    #[test]
    fn cache_files_are_loaded_only_when_intact_and_valid(
        docs in prop::collection::vec(document(), 0..3),
        cut in prop::option::of(0usize..500),
        flip in prop::option::of((any::<usize>(), any::<u8>())),
        framed in any::<bool>(),
    ) {
        let body = json!({"cursor": 7, "projects": docs});
        let mut input = vec![u8::from(framed)];
        match cut {
            None if flip.is_none() => input.extend(body.to_string().into_bytes()),
            _ => input.extend(damaged(body, cut.unwrap_or(0), flip)),
        }
        targets::cache_file(&input);
    }

    #[test]
    fn the_hot_path_answers_every_conversation_as_hyper_does(
        requests in prop::collection::vec(http1_request(), 1..4),
        cut in prop::option::weighted(0.2, any::<usize>()),
        flip in prop::option::weighted(0.2, (any::<usize>(), any::<u8>())),
    ) {
        let mut input: Vec<u8> = requests.concat();
        if let Some((at, byte)) = flip {
            let at = at % input.len();
            input[at] = byte;
        }
        if let Some(cut) = cut {
            input.truncate(cut % (input.len() + 1));
        }
        targets::http1(&input);
    }

    #[test]
    fn resolve_requests_never_panic_and_answer_what_was_asked(
        params in prop::collection::vec(
            (
                pick(&["project", "environment", "strict", "other", "", "project%3D"]),
                pick(&["acme", "globex", "x", "nope", "", "PROD", "qa", "prod", "true", "false",
                       "%", "%zz", "%ff", "%C3%A9", "a%20b", "..", "%2e%2e", "qa-", "Qa", "acme&"]),
            ),
            0..5,
        ),
        project_header in prop::option::of(pick(&["acme", "x", "bad id", "\u{e9}", ""])),
        environment_header in prop::option::of(pick(&["staging", "STAGING", "nope", "-", ""])),
    ) {
        let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut input = query.join("&").into_bytes();
        input.push(b'\n');
        input.extend(project_header.unwrap_or("").bytes());
        input.push(b'\n');
        input.extend(environment_header.unwrap_or("").bytes());
        targets::request(&input);
    }

    #[test]
    fn check_messages_are_read_as_prost_reads_them(
        headers in prop::collection::vec(
            (pick(&["x-project-id", "X-Project-Id", "x-environment", "other"]),
             pick(&["acme", "qa", "a,b", "", "\u{e9}"])),
            0..4,
        ),
        raw in prop::collection::vec(
            (pick(&["x-project-id", "x-environment", "X-ENVIRONMENT", "other"]),
             pick(&["acme", "", "qa"]),
             prop_oneof![Just(Vec::new()), Just(b"acme".to_vec()), Just(vec![0xff, b'a'])]),
            0..3,
        ),
        extensions in prop::collection::vec(
            (pick(&["project", "environment", "other"]), pick(&["acme", "qa", ""])),
            0..3,
        ),
        splice in prop::option::of((any::<usize>(), prop::collection::vec(any::<u8>(), 1..6))),
        unknown in pick(&[&[][..], &[0x13, 0x08, 0x01, 0x14], &[0x13, 0x14], &[0x14], &[0x1d, 1, 2, 3, 4], &[0x12, 0x05, 1]]),
        merged in prop::option::of((
            pick(&["x-project-id", "X-Project-Id", "x-environment"]),
            pick(&["project", "other"]),
        )),
        cut in prop::option::of(any::<usize>()),
        flip in prop::option::of((any::<usize>(), any::<u8>())),
    ) {
        use env_sidecar::server::ext_authz::*;
        use prost::Message;
        let request = CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(AttributeRequest {
                    http: Some(HttpRequest {
                        method: "GET".into(),
                        headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                        path: "/".into(),
                        header_map: (!raw.is_empty()).then(|| HeaderMap {
                            headers: raw
                                .iter()
                                .map(|(k, v, r)| HeaderValueProto {
                                    key: k.to_string(),
                                    value: v.to_string(),
                                    raw_value: r.clone(),
                                })
                                .collect(),
                        }),
                    }),
                }),
                context_extensions: extensions.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            }),
        };
        let mut input = request.encode_to_vec();
        input.extend_from_slice(unknown);
        // A second message appended is merged into the first: its map
        // entries replace those of the same key.
        if let Some((header, extension)) = merged {
            let mut more = request.clone();
            let attributes = more.attributes.as_mut().unwrap();
            attributes.context_extensions = [(extension.to_string(), "globex".to_string())].into();
            let http = attributes.request.as_mut().unwrap().http.as_mut().unwrap();
            http.headers = [(header.to_string(), "globex".to_string())].into();
            http.header_map = None;
            input.extend(more.encode_to_vec());
        }
        if let Some((at, bytes)) = splice {
            let at = at % (input.len() + 1);
            input.splice(at..at, bytes);
        }
        if let Some((at, byte)) = flip {
            if !input.is_empty() {
                let at = at % input.len();
                input[at] ^= byte;
            }
        }
        if let Some(cut) = cut {
            input.truncate(cut % (input.len() + 1));
        }
        targets::check(&input);
    }

    #[test]
    fn batch_bodies_never_panic_and_each_item_resolves(
        items in prop::collection::vec(
            (
                prop::option::of(pick(&["acme", "x", "nope", "bad id", ""])),
                prop::option::of(pick(&["qa", "QA", "nope", "-", ""])),
                prop_oneof![Just(json!(true)), Just(json!(false)), Just(json!("yes")), Just(Value::Null)],
            ),
            0..6,
        ),
        cut in prop::option::of(0usize..50),
    ) {
        let requests: Vec<Value> = items
            .into_iter()
            .map(|(p, e, s)| json!({"project": p, "environment": e, "strict": s}))
            .collect();
        let body = json!({"requests": requests});
        targets::batch(&damaged(body, cut.unwrap_or(0), None));
    }
}

/// The sample project signed with the `envelope` target's key: the seed
/// the tampering below starts from.
fn signed_seed() -> String {
    let key = env_sidecar::model::keys::parse_private(targets::FUZZ_KEY).unwrap();
    let doc: env_sidecar::model::wire::WireProject =
        serde_json::from_value(common::project("acme", 1)).unwrap();
    key.seal_document(&doc, std::time::SystemTime::now(), None)
}

/// Where the string value of `"field":"` sits in `text`.
fn value_range(text: &str, field: &str) -> std::ops::Range<usize> {
    let key = format!("\"{field}\":\"");
    let start = text.find(&key).expect("the field") + key.len();
    let end = start + text[start..].find('"').expect("its end");
    start..end
}

#[test]
fn the_signed_seed_is_served_and_an_unsigned_copy_is_not() {
    assert!(targets::envelope_served(signed_seed().as_bytes()));
    let plain = common::project("acme", 1).to_string();
    assert!(!targets::envelope_served(plain.as_bytes()));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(common::scaled(512)))]

    /// Any single-byte change inside the payload or the signature of a
    /// signed document is rejected: it either no longer decodes, or
    /// decodes to bytes the signature does not cover.
    #[test]
    fn any_single_byte_change_of_payload_or_signature_is_rejected(
        in_signature in any::<bool>(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let seed = signed_seed();
        let range = value_range(&seed, if in_signature { "sig" } else { "payload" });
        let i = range.start + at.index(range.len());
        let mut bytes = seed.into_bytes();
        prop_assume!(bytes[i] != byte);
        bytes[i] = byte;
        prop_assert!(!targets::envelope_served(&bytes), "served after byte {i} became {byte:#04x}");
    }

    /// Arbitrary damage to a signed document never panics, and whatever is
    /// served verifies independently (`targets::envelope`).
    #[test]
    fn damaged_envelopes_never_panic(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let mut bytes = signed_seed().into_bytes();
        for (at, byte) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= byte;
        }
        if let Some(cut) = cut {
            let at = cut.index(bytes.len() + 1);
            bytes.truncate(at);
        }
        targets::envelope(&bytes);
    }
}

/// Groups nested around prost's recursion limit (100), at the top level
/// and inside the request's attributes: the walk refuses exactly the
/// depths prost refuses.
#[test]
fn check_groups_nested_near_the_recursion_limit_are_judged_as_prost_judges_them() {
    for depth in 95..=101 {
        // Field 2 (unknown) opened `depth` times, a varint inside, closed.
        let mut groups = vec![0x13; depth];
        groups.extend([0x08, 0x01]);
        groups.extend(std::iter::repeat_n(0x14, depth));
        targets::check(&groups);
        // The same inside field 1 (attributes), one level deeper.
        let mut nested = vec![0x0a];
        prost::encoding::encode_varint(groups.len() as u64, &mut nested);
        nested.extend(&groups);
        targets::check(&nested);
    }
}

#[test]
fn a_batch_over_the_item_limit_is_refused_as_too_large() {
    let requests: Vec<Value> = (0..1001).map(|_| json!({"project": "x"})).collect();
    let body = json!({"requests": requests}).to_string();
    let err = env_sidecar::server::data::parse_batch(body.as_bytes()).unwrap_err();
    assert_eq!(err.status(), 413);
}

/// Every saved fuzzer input (seeds and past crashes) still passes.
#[test]
fn saved_fuzzer_inputs_still_pass() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/regressions");
    let mut count = 0;
    for (target, run) in [
        ("document", targets::document as fn(&[u8])),
        ("request", targets::request),
        ("batch", targets::batch),
        ("cache_file", targets::cache_file),
        ("check", targets::check),
        ("envelope", targets::envelope),
        ("http1", targets::http1),
    ] {
        let Ok(entries) = std::fs::read_dir(root.join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("readable directory").path();
            run(&std::fs::read(&path).expect("readable input"));
            count += 1;
        }
    }
    assert!(count > 0, "no saved inputs under {}", root.display());
}

/// The document generator is only worth something if it lands on both
/// sides of the rules often: count, with a fixed seed.
#[test]
fn the_document_generator_reaches_both_sides_of_the_rules() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{RngAlgorithm, TestRng, TestRunner};
    let mut runner = TestRunner::new_with_rng(
        ProptestConfig::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
    );
    let strategy = document();
    let mut reasons = std::collections::BTreeMap::new();
    let total = common::scaled(2000);
    let mut accepted = 0;
    for _ in 0..total {
        let doc = strategy.new_tree(&mut runner).expect("generates").current();
        match common::rules::violation(&doc) {
            None => accepted += 1,
            Some(v) => {
                *reasons
                    .entry(v.split(' ').next().unwrap_or("").to_string())
                    .or_insert(0) += 1
            }
        }
    }
    println!("accepted {accepted} of {total}; first broken rule: {reasons:?}");
    assert!(accepted * 10 >= total, "only {accepted} of {total} valid");
    assert!(accepted * 10 <= total * 9, "{accepted} of {total} valid");
}
