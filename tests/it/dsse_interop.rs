//! Signed documents against an implementation nobody here wrote: PyPI's
//! `securesystemslib` verifies the envelopes `env-sidecar sign` writes,
//! and the envelopes it makes (as it writes them, in URL-safe base64, and
//! with a signature naming no key) pass `env-sidecar validate` and are
//! served by a running sidecar that requires signatures. The private key
//! `keygen` writes is read by OpenSSL 3 (`openssl pkey`).

use crate::common;

use std::path::Path;
use std::process::Command;

use common::{project, snapshot, TestSidecar};
use serde_json::Value;

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/dsse/interop.py"
);

/// `python3 interop.py ARGS…`, asserting it succeeds; its output.
fn interop(python: &Path, args: &[&str]) -> String {
    let out = Command::new(python)
        .arg(SCRIPT)
        .args(args)
        .output()
        .expect("python runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "interop.py {args:?} failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn securesystemslib_verifies_what_the_sidecar_signs_and_openssl_reads_its_key() {
    let Some(python) = common::python_with("securesystemslib", "securesystemslib") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = (dir.path().join("cp.key"), dir.path().join("cp.pub"));
    let path = |p: &Path| p.to_str().unwrap().to_owned();
    let (code, out) = common::fleet::run(&[
        "keygen",
        "--key-id",
        "cp-2026",
        "--private",
        &path(&private),
        "--public",
        &path(&public),
    ]);
    assert_eq!(code, 0, "{out}");
    if let Some(openssl) = common::system_tool("openssl", "openssl") {
        let read = Command::new(openssl)
            .args(["pkey", "-in", &path(&private), "-noout", "-text"])
            .output()
            .unwrap();
        assert!(read.status.success(), "{read:?}");
        assert!(String::from_utf8_lossy(&read.stdout).contains("ED25519 Private-Key"));
    }
    let plain = dir.path().join("plain.json");
    common::write_json(
        &plain,
        &snapshot(1, vec![project("acme", 1), project("globex", 2)]),
    );
    let signed = dir.path().join("signed.json");
    let (code, out) = common::fleet::run(&[
        "sign",
        "--key",
        &path(&private),
        &path(&plain),
        "-o",
        &path(&signed),
    ]);
    assert_eq!(code, 0, "{out}");
    let body: Value = serde_json::from_slice(&std::fs::read(&signed).unwrap()).unwrap();
    let mut files = Vec::new();
    for (i, envelope) in body["projects"].as_array().unwrap().iter().enumerate() {
        let file = dir.path().join(format!("envelope-{i}.json"));
        common::write_json(&file, envelope);
        files.push(path(&file));
    }
    let public_file = path(&public);
    let mut args = vec!["verify", &public_file, "cp-2026"];
    args.extend(files.iter().map(String::as_str));
    let out = interop(&python, &args);
    assert_eq!(out.matches("verified ").count(), 2, "{out}");

    // A payload changed after signing: securesystemslib refuses it too,
    // so the check above can fail.
    let mut changed = body["projects"][0].clone();
    let payload = changed["payload"].as_str().unwrap().to_owned();
    changed["payload"] = format!("{}AA==", &payload[..payload.len() - 4]).into();
    let tampered = dir.path().join("tampered.json");
    common::write_json(&tampered, &changed);
    let refused = Command::new(&python)
        .args([
            SCRIPT,
            "verify",
            &path(&public),
            "cp-2026",
            &path(&tampered),
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success(), "a changed payload verified");
}

#[tokio::test]
async fn envelopes_securesystemslib_makes_are_validated_and_served() {
    let Some(python) = common::python_with("securesystemslib", "securesystemslib") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = |p: &Path| p.to_str().unwrap().to_owned();
    let ids = ["standard", "urlsafe", "nokeyid"];
    let mut docs = Vec::new();
    for id in ids {
        let file = dir.path().join(format!("{id}.doc.json"));
        common::write_json(&file, &project(id, 3));
        docs.push(path(&file));
    }
    let mut args = vec!["sign", dir.path().to_str().unwrap()];
    args.extend(docs.iter().map(String::as_str));
    interop(&python, &args);
    let key = dir.path().join("sslib.pub");

    // Each project in the form its name says: `<id>.<id>.json`.
    let envelopes: Vec<Value> = ids
        .iter()
        .map(|id| {
            let file = dir.path().join(format!("{id}.{id}.json"));
            serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap()
        })
        .collect();
    let url_safe = envelopes[1]["payload"].as_str().unwrap();
    assert!(!url_safe.contains(['+', '/', '=']), "{url_safe}");
    assert!(envelopes[2]["signatures"][0].get("keyid").is_none());
    let signed = dir.path().join("signed.json");
    common::write_json(&signed, &snapshot(1, envelopes));
    let (code, out) = common::fleet::run(&["validate", "--trust-key", &path(&key), &path(&signed)]);
    assert_eq!(code, 0, "{out}");
    for id in ids {
        assert!(
            out.contains(&format!("ok project={id} revision=3 signed_by=sslib")),
            "{out}"
        );
    }

    let body: Value = serde_json::from_slice(&std::fs::read(&signed).unwrap()).unwrap();
    let t = TestSidecar::start_with(Some(&body), |c| {
        c.trust.keys = vec![key.clone()];
        c.trust.require_signatures = true;
    })
    .await;
    for id in ids {
        assert_eq!(t.served(id, "qa").await, "qa-r3", "{id}");
    }
}
