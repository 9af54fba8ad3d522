//! The examples of docs/control-plane.md ("Examples" of the sync
//! protocol) say what the sidecar does with each body: every one is read
//! by the sidecar's own parser, and its documents validated, here.

use env_sidecar::model::validate::validate;
use env_sidecar::model::wire::{BodyReader, Content, Incoming};

/// `(kind, outcome, body)` of every `<!-- example: KIND OUTCOME -->`
/// followed by a ```` ```json ```` block.
fn examples() -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/control-plane.md"
    ))
    .unwrap();
    let mut found = Vec::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("<!-- example: ") {
        rest = &rest[at + "<!-- example: ".len()..];
        let (label, after) = rest.split_once(" -->").expect("a closed marker");
        let (kind, outcome) = label.split_once(' ').expect("KIND OUTCOME");
        let body = after
            .trim_start()
            .strip_prefix("```json\n")
            .expect("a json block right after the marker");
        let (body, _) = body.split_once("\n```").expect("a closed block");
        found.push((kind.to_owned(), outcome.to_owned(), body.to_owned()));
        rest = after;
    }
    found
}

/// Every document of an accepted example is a valid project.
fn assert_valid(projects: Vec<Incoming>, body: &str) {
    for incoming in projects {
        let doc = match incoming.content {
            Content::Document(doc) => doc,
            other => panic!("a plain document, not {other:?}, in {body}"),
        };
        if let Err(e) = validate(*doc, &[]) {
            panic!("{e} in {body}");
        }
    }
}

#[test]
fn every_protocol_example_reads_as_the_docs_say() {
    let examples = examples();
    let count = |kind: &str, outcome: &str| {
        examples
            .iter()
            .filter(|(k, o, _)| k == kind && o == outcome)
            .count()
    };
    assert!(count("snapshot", "accepted") >= 1 && count("snapshot", "refused") >= 1);
    assert!(count("changes", "accepted") >= 3 && count("changes", "refused") >= 2);
    let reader = BodyReader::default();
    for (kind, outcome, body) in &examples {
        let read = match kind.as_str() {
            "snapshot" => reader.snapshot(body.as_bytes()).map(|b| b.projects),
            "changes" => reader.changes(body.as_bytes()).map(|b| b.projects),
            other => panic!("unknown example kind {other}"),
        };
        match (outcome.as_str(), read) {
            ("accepted", Ok(projects)) => assert_valid(projects, body),
            ("refused", Err(_)) => {}
            (outcome, read) => panic!("{kind} {outcome}, but read as {read:?}: {body}"),
        }
    }
}
