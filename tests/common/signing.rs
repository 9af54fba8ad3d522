//! Keys and signed documents for tests: a key pair written to files the
//! way `env-sidecar keygen` writes them, envelopes made with it, and
//! tampering (another key, a changed payload, a retyped envelope).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use env_sidecar::model::envelope::{self, Signature, PROJECT_TYPE};
use env_sidecar::model::keys::{self, PublicKey, SigningKey};
use env_sidecar::model::timestamp::format_rfc3339;
use env_sidecar::model::wire::WireProject;
use serde_json::Value;

/// Signatures required, keys from `keys` (files or folders), the cache at
/// `cache` when given.
pub fn requiring(config: &mut env_sidecar::config::Config, keys: &[&Path], cache: Option<&Path>) {
    config.trust.keys = keys.iter().map(|k| k.to_path_buf()).collect();
    config.trust.require_signatures = true;
    if let Some(cache) = cache {
        config.cache.path = cache.to_owned();
    }
}

/// A sidecar following Redis at `url`, requiring signatures by `keys`,
/// its cache at `cache`.
pub fn signed_redis_follower(
    dir: &Path,
    url: &str,
    keys: &[&Path],
    cache: &Path,
) -> env_sidecar::config::Config {
    let mut config = super::redis_config(dir, url);
    requiring(&mut config, keys, Some(cache));
    config
}

/// A key rotation's start: a trusted keys folder holding the old key
/// `cp-2026` (its private file beside it), and the new key `cp-2027`
/// outside the folder.
pub fn rotation(dir: &Path) -> (PathBuf, TestKey, TestKey) {
    let keys = dir.join("keys");
    std::fs::create_dir(&keys).unwrap();
    let old = TestKey::new(&keys, "cp-2026");
    let new = TestKey::new(dir, "cp-2027");
    (keys, old, new)
}

/// A key pair and its files.
pub struct TestKey {
    pub signer: SigningKey,
    pub public: PublicKey,
    /// The private key file (mode 0600).
    pub private_file: PathBuf,
    /// The public key file.
    pub public_file: PathBuf,
}

impl TestKey {
    /// A new key `keyid`, its files `<keyid>.key` / `<keyid>.pub` in `dir`.
    pub fn new(dir: &Path, keyid: &str) -> TestKey {
        let (private, public) = keys::generate(Some(keyid)).expect("a key pair");
        let private_file = dir.join(format!("{keyid}.key"));
        let public_file = dir.join(format!("{keyid}.pub"));
        std::fs::write(&private_file, &private).unwrap();
        std::fs::write(&public_file, public.to_pem()).unwrap();
        TestKey {
            signer: keys::parse_private(&private).unwrap(),
            public,
            private_file,
            public_file,
        }
    }

    /// `doc` signed now, as a JSON value (an envelope).
    pub fn sign(&self, doc: &Value) -> Value {
        self.sign_at(doc, SystemTime::now(), None)
    }

    /// `doc` signed as of `at`, expiring at `expires`.
    pub fn sign_at(&self, doc: &Value, at: SystemTime, expires: Option<SystemTime>) -> Value {
        let wire: WireProject = serde_json::from_value(doc.clone()).expect("a readable document");
        let text = self.signer.seal_document(&wire, at, expires);
        serde_json::from_str(&text).unwrap()
    }

    /// The envelope text of `doc` signed now.
    pub fn sign_text(&self, doc: &Value) -> String {
        self.sign(doc).to_string()
    }

    /// A signed removal of `id` at `revision`.
    pub fn tombstone(&self, id: &str, revision: u64) -> Value {
        serde_json::from_str(&self.signer.seal_tombstone(id, revision, SystemTime::now())).unwrap()
    }
}

/// An envelope of `doc` whose signature claims `keyid` but is not that
/// key's (an attacker who knows the key id, not the key).
pub fn forged(doc: &Value, keyid: &str) -> Value {
    let mut doc = doc.clone();
    doc["signed_at"] = format_rfc3339(SystemTime::now()).into();
    let payload = serde_json::to_vec(&doc).unwrap();
    let text = envelope::encode(
        PROJECT_TYPE,
        &payload,
        &[Signature {
            keyid: keyid.into(),
            sig: vec![7; 64],
        }],
    );
    serde_json::from_str(&text).unwrap()
}

/// `envelope` with its payload replaced by `doc` (signatures kept): what a
/// writer without the key makes of a signed document.
pub fn with_payload(envelope: &Value, doc: &Value) -> Value {
    use base64::Engine;
    let mut out = envelope.clone();
    let mut doc = doc.clone();
    doc["signed_at"] = format_rfc3339(SystemTime::now()).into();
    out["payload"] = base64::engine::general_purpose::STANDARD
        .encode(serde_json::to_vec(&doc).unwrap())
        .into();
    out
}

/// A time `secs` ago.
pub fn ago(secs: u64) -> SystemTime {
    SystemTime::now() - Duration::from_secs(secs)
}
