//! What each fuzz target checks, shared by the cargo-fuzz targets in
//! `tests/fuzz/` (coverage-guided, run for as long as you like) and by
//! `tests/it/fuzz_inputs.rs` (generated inputs plus every saved crash, on
//! every `cargo test`). Each function takes arbitrary bytes and panics only
//! when the sidecar breaks a property; the sidecar itself must never panic.

use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use env_sidecar::model::origin::{MassRemoval, Origin};
use env_sidecar::model::validate::validate;
use env_sidecar::model::wire::{self, Content, Incoming, SnapshotBody, WireProject};
use env_sidecar::server::data::parse_batch;
use env_sidecar::server::query::{fill_from_headers, parse_query};
use env_sidecar::store::{AnswerRef, Outcome, ResolveError};
use env_sidecar::store::{Contents, Store, Update};
use env_sidecar::store::{PointersStructs, Project};
use env_sidecar::sync::cache;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use super::rules;

/// A project document (what `GET /v1/projects/{id}` answers) and the same
/// bytes read as a snapshot body: parsing never panics, every accepted
/// document keeps every rule, every readable document that keeps every
/// rule is accepted, and the served answers say what the document says.
pub fn document(data: &[u8]) {
    if let Ok(incoming) = std::str::from_utf8(data)
        .map_err(|e| e.to_string())
        .and_then(|text| wire::parse_element(text).map_err(|e| e.to_string()))
    {
        let raw: Value = serde_json::from_slice(data).expect("parsed bytes are JSON");
        check_incoming(&raw, incoming);
    }
    if let Ok(snapshot) = wire::parse_snapshot(data) {
        let raw: Value = serde_json::from_slice(data).expect("parsed bytes are JSON");
        check_snapshot(&raw["projects"], snapshot);
    }
}

/// A cache file: raw, or with the rest framed by a valid version 1
/// header and checksum, or by a valid version 2 header and checksum
/// (first byte modulo 3), so the fuzzer reaches both bodies.
pub fn cache_file(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let bytes = match mode % 3 {
        0 => rest.to_vec(),
        1 => frame(rest),
        _ => frame_binary(rest),
    };
    let path = Path::new("fuzz.cache");
    match cache::decode(path, &bytes) {
        // A version 2 body that passed its checksum is the sidecar's own
        // disk: whatever it says is served, so the rule is only that
        // reading it and answering from it never panics.
        Ok(cached) if bytes.starts_with(cache::binary::MAGIC) => {
            for project in &cached.projects {
                let _ = project.answer(None, false).map(|a| a.body());
                let _ = project.stored_text();
            }
        }
        Ok(cached) => {
            let raw: Value = serde_json::from_slice(&bytes).expect("decoded bytes are JSON");
            assert!(cached.projects.is_empty(), "a JSON file restores documents");
            let snapshot = SnapshotBody {
                cursor: cached.cursor,
                projects: cached.documents,
                unattributed: cached.unattributed,
                partial: false,
            };
            check_snapshot(&raw["body"]["projects"], snapshot);
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

/// `body` behind a valid version 2 header: magic, version, checksum.
fn frame_binary(body: &[u8]) -> Vec<u8> {
    let mut out = cache::binary::MAGIC.to_vec();
    out.extend_from_slice(&cache::binary::VERSION.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// The key the `envelope` target trusts (RFC 8410's example key), named
/// `fuzz`: seeds signed with it let the fuzzer start from envelopes that
/// verify.
pub const FUZZ_KEY: &str = "keyid: fuzz
-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC
-----END PRIVATE KEY-----
";

/// One project element (a document or a signed envelope) applied to a
/// sidecar that requires signatures by [`FUZZ_KEY`]: reading and checking
/// it never panics, and whatever it serves carries a signature that an
/// independent check (base64, DSSE's encoding and ring, written here and
/// not taken from the sidecar) verifies, of the project type, over a
/// payload that keeps every rule.
pub fn envelope(data: &[u8]) {
    envelope_served(data);
}

/// [`envelope`], answering whether the element was served.
pub fn envelope_served(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let Ok(incoming) = wire::parse_element(text) else {
        return false;
    };
    let signer = env_sidecar::model::keys::parse_private(FUZZ_KEY).expect("the fuzz key reads");
    let (store, mut writer) = Store::new(1.0);
    writer.set_trust(std::sync::Arc::new(env_sidecar::model::trust::Trust::new(
        vec![signer.public()],
        true,
        None,
    )));
    let body = SnapshotBody {
        projects: vec![incoming],
        ..SnapshotBody::default()
    };
    writer
        .apply(refresh(body), SystemTime::now())
        .expect("one element cannot trip the guard");
    let Some(served) = store.projects().into_iter().next() else {
        return false;
    };
    let raw: Value = serde_json::from_str(text).expect("a served element is JSON");
    let payload_type = raw["payloadType"]
        .as_str()
        .expect("served only from an envelope");
    assert_eq!(payload_type, "application/vnd.env-sidecar.project+json");
    let payload = b64(raw["payload"].as_str().expect("a payload string"));
    // Under DSSE a signature may name no key: it is then the key's if it
    // verifies with it.
    let mut message = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    message.extend_from_slice(&payload);
    let key = signer.public().key;
    let verified = raw["signatures"]
        .as_array()
        .expect("signatures")
        .iter()
        .any(|s| {
            (s["keyid"] == "fuzz" || s["keyid"].is_null() || s["keyid"] == "")
                && s["sig"].as_str().is_some_and(|sig| {
                    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, key)
                        .verify(&message, &b64(sig))
                        .is_ok()
                })
        });
    assert!(verified, "served without a verifying signature: {text}");
    let doc: Value = serde_json::from_slice(&payload).expect("the payload is JSON");
    assert_eq!(
        rules::violation(&doc),
        None,
        "served a payload that breaks a rule"
    );
    assert_eq!(doc["id"], served.id());
    assert_eq!(doc["revision"], served.revision());
    true
}

/// Base64 as DSSE allows it (the standard or the URL-safe alphabet, one
/// of them throughout; padded or not), decoded by hand (so the check does
/// not share the sidecar's decoder); panics on anything else.
fn b64(text: &str) -> Vec<u8> {
    const STANDARD: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const URL_SAFE: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = text.trim_end_matches('=').as_bytes();
    let alphabet = if bytes.iter().any(|c| b"-_".contains(c)) {
        URL_SAFE
    } else {
        STANDARD
    };
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3 + 2);
    for chunk in bytes.chunks(4) {
        assert!(chunk.len() >= 2, "a lone base64 character");
        let mut n = 0u32;
        for &c in chunk {
            n = n << 6
                | alphabet
                    .iter()
                    .position(|&a| a == c)
                    .expect("one base64 alphabet") as u32;
        }
        n <<= 6 * (4 - chunk.len() as u32);
        let three = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&three[..chunk.len() - 1]);
    }
    out
}

/// A resolve request: `query \n project-header \n environment-header`.
/// Reading it never panics; an answer always names an environment of the
/// project, and an exact answer is the one that was asked for.
pub fn request(data: &[u8]) {
    let mut parts = data.splitn(3, |&b| b == b'\n');
    let Ok(query) = std::str::from_utf8(parts.next().unwrap_or_default()) else {
        return;
    };
    let mut headers = HeaderMap::new();
    for name in [PROJECT_HEADER, ENVIRONMENT_HEADER] {
        if let Some(value) = parts.next().and_then(|v| HeaderValue::from_bytes(v).ok()) {
            headers.insert(name, value);
        }
    }
    let mut parsed = match parse_query(query) {
        Ok(parsed) => parsed,
        Err(message) => {
            assert!(!message.is_empty(), "a refused query says why");
            return;
        }
    };
    let (project_header, environment_header) = (
        HeaderName::from_static(PROJECT_HEADER),
        HeaderName::from_static(ENVIRONMENT_HEADER),
    );
    if let Err(message) =
        fill_from_headers(&mut parsed, &headers, &project_header, &environment_header)
    {
        assert!(!message.is_empty(), "a refused header says why");
        return;
    }
    let project = parsed.project.as_deref().unwrap_or("");
    let environment = parsed.environment.as_deref().filter(|e| !e.is_empty());
    check_resolve(project, environment, parsed.strict);
}

/// A batch body: reading it never panics, errors are 400 or 413 with a
/// message, and every item resolves like a single request.
pub fn batch(data: &[u8]) {
    match parse_batch(data) {
        Ok(items) => {
            for item in items {
                let environment = item.environment.as_deref().filter(|e| !e.is_empty());
                check_resolve(
                    item.project.as_deref().unwrap_or(""),
                    environment,
                    item.strict,
                );
            }
        }
        Err(err) => {
            let status = err.status();
            assert!(
                status == 400 || status == 413,
                "batch error status {status}"
            );
            assert!(!err.message.is_empty());
        }
    }
}

/// Raw bytes on one HTTP/1 connection to the data plane, answered with
/// the hot path and by hyper alone: the same bytes come back (`date`
/// aside), the connection is left in the same state (closed by the
/// server, or open), and the same resolve requests are counted.
pub fn http1(data: &[u8]) {
    use env_sidecar::server::Http1;
    let (hot, hot_counts) = converse(data, Http1::HotPath);
    let (hyper, hyper_counts) = converse(data, Http1::HyperOnly);
    assert_eq!(
        String::from_utf8_lossy(&masked_dates(hot)),
        String::from_utf8_lossy(&masked_dates(hyper)),
        "the hot path and hyper answer {:?} differently",
        String::from_utf8_lossy(data)
    );
    assert_eq!(hot_counts, hyper_counts, "the metrics differ");
}

/// Sends `data` on one in-memory connection to a data plane serving the
/// fixture and reads until the server closes (`<closed>`) or has nothing
/// more to say (`<open>`: the runtime's clock is paused, so a second of
/// silence passes only once every task waits); returns that, and the
/// resolve counters afterwards.
fn converse(data: &[u8], http1: env_sidecar::server::Http1) -> (Vec<u8>, Vec<String>) {
    use env_sidecar::server::data::{DataPlane, PointersLimit};
    use env_sidecar::server::{serve, Limits};
    use env_sidecar::telemetry::metrics::{Gauges, Listener, Metrics, PROVENANCES};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    thread_local! {
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a runtime");
    }
    RUNTIME.with(|runtime| {
        runtime.block_on(async {
            let metrics = Metrics::new();
            let plane = Arc::new(DataPlane {
                store: served().clone(),
                metrics: metrics.clone(),
                project_header: HeaderName::from_static(PROJECT_HEADER),
                environment_header: HeaderName::from_static(ENVIRONMENT_HEADER),
                pointers_limit: PointersLimit(3072),
            });
            let (mut client, server) = tokio::io::duplex(1 << 20);
            let (stop, shutdown) = tokio::sync::watch::channel(false);
            let limits = Limits {
                http1,
                ..Limits::default()
            };
            let serving = tokio::spawn(serve(
                OneConnection(Some(server)),
                plane,
                limits,
                Some((metrics.clone(), Listener::Data)),
                shutdown,
            ));
            let _ = client.write_all(data).await;
            let mut out = Vec::new();
            let mut chunk = [0u8; 8192];
            loop {
                let read = client.read(&mut chunk);
                match tokio::time::timeout(Duration::from_secs(1), read).await {
                    Ok(Ok(0) | Err(_)) => break out.extend_from_slice(b"<closed>"),
                    Ok(Ok(n)) => out.extend_from_slice(&chunk[..n]),
                    Err(_) => break out.extend_from_slice(b"<open>"),
                }
            }
            drop(client);
            let _ = stop.send(true);
            serving.await.expect("the server stops");
            let gauges = Gauges {
                revision: 0.0,
                age_seconds: 0.0,
                projects: 0,
                environments: 0,
                provenance: PROVENANCES[0],
            };
            let mut counts: Vec<String> = metrics
                .render(gauges)
                .lines()
                .filter(|l| l.starts_with("env_sidecar_resolve_requests_total"))
                .filter(|l| !l.ends_with(" 0"))
                .map(str::to_owned)
                .collect();
            counts.sort();
            (out, counts)
        })
    })
}

/// A listener that yields one connection, then none.
struct OneConnection(Option<tokio::io::DuplexStream>);

impl env_sidecar::server::Listener for OneConnection {
    type Io = tokio::io::DuplexStream;
    async fn accept(&mut self) -> std::io::Result<Self::Io> {
        match self.0.take() {
            Some(io) => Ok(io),
            None => std::future::pending().await,
        }
    }
}

/// `bytes` with every `date` header's value blanked.
fn masked_dates(mut bytes: Vec<u8>) -> Vec<u8> {
    const DATE: &[u8] = b"\r\ndate: ";
    let mut at = 0;
    while let Some(i) = bytes[at..].windows(DATE.len()).position(|w| w == DATE) {
        let start = at + i + DATE.len();
        let end = (start + 29).min(bytes.len());
        bytes[start..end].fill(b'#');
        at = end;
    }
    bytes
}

const PROJECT_HEADER: &str = "x-project-id";
const ENVIRONMENT_HEADER: &str = "x-environment";

fn check_resolve(project: &str, environment: Option<&str>, strict: bool) {
    match served().resolve_with(project, environment, strict, |answer| {
        check_answer(project, environment, answer)
    }) {
        Ok(()) => {}
        Err(ResolveError::NotReady) => panic!("the fixture store is loaded"),
        Err(ResolveError::UnknownEnvironment) => {
            assert!(strict, "only strict requests miss an environment")
        }
        Err(_) => {}
    }
}

/// The pointers struct a gRPC `Check` carries (the writer's bytes when
/// it rendered them, else measured now) is as long as it says and
/// decodes, by prost, to `parsed`, the body's pointers.
fn check_pointers_struct(answer: &AnswerRef<'_>, parsed: &[(String, String, String)]) {
    use env_sidecar::server::ext_authz::{Kind, Struct};
    use prost::Message;
    let pointers = answer.pointers_struct();
    let mut bytes = Vec::new();
    pointers.put(&mut bytes);
    assert_eq!(bytes.len(), pointers.len());
    let decoded = Struct::decode(bytes.as_slice()).expect("the struct decodes");
    let mut from_struct = Vec::new();
    for (kind, value) in decoded.fields {
        let Some(Kind::Struct(map)) = value.kind else {
            panic!("{kind} is not a struct")
        };
        for (key, value) in map.fields {
            let Some(Kind::String(value)) = value.kind else {
                panic!("{kind}.{key} is not a string")
            };
            from_struct.push((kind.clone(), key, value));
        }
    }
    let mut expected = parsed.to_vec();
    expected.sort();
    from_struct.sort();
    assert_eq!(from_struct, expected);
}

fn check_answer(project: &str, environment: Option<&str>, answer: AnswerRef<'_>) {
    let body: Value = serde_json::from_slice(&answer.body()).expect("answers are JSON");
    assert_eq!(body["project"], project);
    let slug = answer.environment.to_str().expect("slug header is ASCII");
    assert_eq!(body["environment"]["slug"], slug);
    let revision = answer.revision.to_str().expect("revision header is ASCII");
    assert_eq!(body["revision"].to_string(), revision);
    assert_eq!(body["outcome"], answer.outcome.as_str());
    // The pointers read back from the answer's text are the body's.
    let scanned: Vec<(String, String, String)> = answer
        .pointers()
        .map(|(kind, key, value)| {
            (
                kind.as_str().to_owned(),
                key.into_owned(),
                value.into_owned(),
            )
        })
        .collect();
    let mut parsed = Vec::new();
    for kind in ["prompts", "routing_rules", "providers"] {
        for (key, value) in body["pointers"][kind].as_object().expect("three maps") {
            parsed.push((
                kind.to_owned(),
                key.clone(),
                value.as_str().unwrap().to_owned(),
            ));
        }
    }
    assert_eq!(scanned, parsed);
    check_pointers_header(&answer);
    check_pointers_struct(&answer, &parsed);
    // Lookups scan: sample a few (first, last, and some between).
    let step = (parsed.len() / 8).max(1);
    for (kind, key, value) in parsed.iter().step_by(step).chain(parsed.last()) {
        let kind = env_sidecar::store::PointerKind::ALL
            .into_iter()
            .find(|k| k.as_str() == kind)
            .unwrap();
        assert_eq!(answer.pointer(kind, key).as_deref(), Some(value.as_str()));
    }
    match answer.outcome {
        Outcome::Exact => {
            assert_eq!(
                Some(slug.to_string()),
                environment.map(str::to_ascii_lowercase)
            );
            assert_eq!(body["reason"], Value::Null);
        }
        Outcome::NotRequested => {
            assert!(environment.is_none());
            assert_eq!(body["reason"], "not_requested");
        }
        Outcome::UnknownEnvironment => {
            assert!(environment.is_some());
            assert_eq!(body["reason"], "unknown_environment");
        }
    }
}

/// `x-resolved-pointers` is the body's `pointers` object byte for byte,
/// printable ASCII whatever the keys, and means what the body says.
fn check_pointers_header(answer: &AnswerRef<'_>) {
    let header = answer.pointers.as_bytes();
    assert!(
        header.iter().all(|b| (0x20..=0x7e).contains(b)),
        "the pointers header is printable ASCII: {:?}",
        String::from_utf8_lossy(header)
    );
    let body = answer.body();
    let mut tail = b"\"pointers\":".to_vec();
    tail.extend_from_slice(header);
    tail.extend_from_slice(b"}");
    assert!(
        body.ends_with(&tail),
        "the body ends with the header's bytes: {}",
        String::from_utf8_lossy(&body)
    );
    let from_header: Value = serde_json::from_slice(header).expect("the header is JSON");
    let from_body: Value = serde_json::from_slice(&body).expect("answers are JSON");
    assert_eq!(from_header, from_body["pointers"]);
}

/// The store the request and batch targets resolve against: the documentation's
/// sample projects, loaded once.
fn served() -> &'static Store {
    static STORE: OnceLock<Store> = OnceLock::new();
    STORE.get_or_init(|| {
        let (store, mut writer) = Store::new(0.5);
        let docs: Vec<Value> = ["acme", "globex", "x"]
            .iter()
            .map(|id| fixture(id))
            .collect();
        let body = serde_json::json!({"revision": 1, "projects": docs});
        let snapshot = wire::parse_snapshot(body.to_string().as_bytes()).expect("fixture parses");
        let report = writer
            .apply(refresh(snapshot), at_start())
            .expect("fixture applies");
        assert_eq!(report.added, 3);
        store
    })
}

/// prod (fallback), staging (publish target) and qa.
fn fixture(id: &str) -> Value {
    let env = |slug: &str, system: bool| {
        serde_json::json!({
            "id": format!("{id}_{slug}"), "slug": slug, "name": slug, "color": "#112233",
            "system": system, "pointers": {"prompts": {"p": format!("{slug}-v1")}},
        })
    };
    let mut prod = env("prod", true);
    prod["gateway_fallback"] = true.into();
    let mut staging = env("staging", true);
    staging["default_publish_target"] = true.into();
    serde_json::json!({"id": id, "revision": 3, "environments": [prod, staging, env("qa", false)]})
}

/// A full snapshot applied as an operator's refresh that lifts the
/// blast-radius guard.
fn refresh(body: SnapshotBody) -> Update {
    Update::new(
        Origin::Refresh(MassRemoval::Allowed),
        Contents::Snapshot(body),
    )
}

/// The instant fixed-time applies run at.
fn at_start() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1)
}

fn check_incoming(raw: &Value, incoming: Incoming) {
    // Plain documents only: an envelope is judged by the signed targets.
    let Content::Document(doc) = incoming.content else {
        return;
    };
    check_document(raw, *doc);
}

/// Validation agrees with the independent checker, and an accepted
/// document serves exactly its own environments.
fn check_document(raw: &Value, doc: WireProject) {
    let verdict = rules::violation(raw);
    let valid = match validate(doc, &[]) {
        Ok(valid) => valid,
        Err(e) => {
            assert!(
                verdict.is_some(),
                "rejected ({}: {}) a document the checker accepts: {raw}",
                e.reason.as_str(),
                e.message
            );
            return;
        }
    };
    if let Some(broken) = verdict {
        panic!("accepted a document that breaks a rule ({broken}): {raw}");
    }
    // Prerendered: the writer's struct bytes go through the same checks
    // as the text (the resolve target covers the per-check encoding).
    let project = Project::build(
        &valid,
        SystemTime::now(),
        UNIX_EPOCH,
        PointersStructs::Prerendered,
    );
    let stored = project.reparse().expect("the stored form reads back");
    assert_eq!(stored, valid, "the stored form is the accepted project");
    let keys: Vec<(&str, &str)> = valid
        .environments()
        .iter()
        .map(|e| (e.id.as_str(), e.slug.as_str()))
        .collect();
    assert_eq!(
        project.environment_keys(),
        keys,
        "slug immutability sees every (id, slug)"
    );
    for env in valid.environments() {
        let answer = project
            .answer(Some(env.slug.as_bytes()), true)
            .expect("every slug resolves strictly");
        check_answer(project.id(), Some(&env.slug), answer);
    }
    let fallback = project.answer(None, false).expect("there is a fallback");
    let body: Value = serde_json::from_slice(&fallback.body()).expect("answers are JSON");
    let fallback_env = valid
        .environments()
        .iter()
        .find(|e| e.gateway_fallback)
        .expect("one fallback");
    assert_eq!(body["environment"]["slug"], fallback_env.slug.as_str());
}

/// Every project the snapshot makes served keeps every rule, and every
/// project served came from the snapshot.
fn check_snapshot(raw_projects: &Value, snapshot: SnapshotBody) {
    let raw: Vec<Value> = raw_projects.as_array().cloned().unwrap_or_default();
    let (store, mut writer) = Store::new(1.0);
    let report = writer.apply(refresh(snapshot), at_start());
    let Ok(report) = report else {
        return;
    };
    assert!(store.is_loaded());
    for project in store.projects() {
        let sources: Vec<&Value> = raw
            .iter()
            .filter(|r| r["id"] == project.id() && r["revision"] == project.revision())
            .collect();
        assert!(
            !sources.is_empty(),
            "{} is served but not in the snapshot",
            project.id()
        );
        assert!(
            sources.iter().any(|s| rules::violation(s).is_none()),
            "served a document that breaks a rule: {}",
            sources[0]
        );
    }
    assert!(report.added <= raw.len());
}

/// Wraps `body` in a cache file header with a correct checksum.
fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        r#"{{"format":"{}","version":{},"crc32":"{:08x}","body":"#,
        cache::FORMAT,
        cache::VERSION,
        crc32fast::hash(body)
    )
    .into_bytes();
    out.extend_from_slice(body);
    out.push(b'}');
    out
}

/// `Check` messages: the walk over the bytes (`ext_authz::request`) and
/// prost's decoding of `CheckRequest` followed by the identity rules (the
/// oracle, [`check_oracle`]) accept and refuse the same messages, and
/// agree on the project, the environment and a repeated header. The first
/// byte, also part of the message, picks the header names: the defaults,
/// or one name for both.
pub fn check(data: &[u8]) {
    use env_sidecar::server::ext_authz::request;
    let project_header = HeaderName::from_static(PROJECT_HEADER);
    let environment_header = match data.first() {
        Some(b) if b % 2 == 1 => project_header.clone(),
        _ => HeaderName::from_static(ENVIRONMENT_HEADER),
    };
    let walked = request::identity(data, &project_header, &environment_header);
    let oracle = check_oracle(data, &project_header, &environment_header);
    match (walked, oracle) {
        (Err(_), Err(_)) => {}
        (Ok(walked), Ok(oracle)) => {
            let walked =
                walked.map(|(p, e)| (p.map(|p| p.into_owned()), e.map(|e| e.into_owned())));
            assert_eq!(
                walked.is_err(),
                oracle.is_err(),
                "{walked:?} against {oracle:?}"
            );
            if let (Ok(walked), Ok(oracle)) = (walked, oracle) {
                assert_eq!(walked, oracle);
            }
        }
        (walked, oracle) => panic!(
            "the walk says {:?}, prost says {:?}",
            walked.map(|_| "decoded"),
            oracle.map(|_| "decoded")
        ),
    }
}

type Identity = Result<(Option<String>, Option<String>), String>;

/// What a check asks about, the long way: the whole message decoded by
/// prost, then the route's `context_extensions`, then the headers, a
/// header sent more than once (joined with `,`, or listed apart in
/// `header_map`, or under keys differing in case) refused. The outer error
/// is a message prost cannot decode.
pub fn check_oracle(
    message: &[u8],
    project_header: &HeaderName,
    environment_header: &HeaderName,
) -> Result<Identity, prost::DecodeError> {
    use env_sidecar::server::ext_authz::CheckRequest;
    use prost::Message;
    let request = CheckRequest::decode(message)?;
    let attributes = request.attributes.as_ref();
    let http = attributes
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref());
    let header = |name: &HeaderName| -> Result<Option<String>, String> {
        let Some(http) = http else { return Ok(None) };
        let mut found: Vec<String> = http
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name.as_str()))
            .map(|(_, v)| v.clone())
            .collect();
        if let Some(map) = &http.header_map {
            found.extend(
                map.headers
                    .iter()
                    .filter(|h| h.key.eq_ignore_ascii_case(name.as_str()))
                    .map(|h| {
                        if h.raw_value.is_empty() {
                            h.value.clone()
                        } else {
                            String::from_utf8_lossy(&h.raw_value).into_owned()
                        }
                    }),
            );
        }
        match found.as_slice() {
            [] => Ok(None),
            [one] if !one.contains(',') => Ok(Some(one.clone())),
            _ => Err(format!("header {name} is repeated")),
        }
    };
    let extension = |key: &str| attributes.and_then(|a| a.context_extensions.get(key).cloned());
    Ok((|| {
        let project = match extension("project") {
            Some(p) => Some(p),
            None => header(project_header)?,
        };
        let environment = match extension("environment") {
            Some(e) => Some(e),
            None => header(environment_header)?,
        };
        Ok((project, environment))
    })())
}
