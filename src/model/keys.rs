//! Ed25519 keys and their files: what a sidecar trusts and what a
//! publisher signs with. The crypto is `ring`'s (already in the tree for
//! rustls); this module only reads and writes the files and names keys.
//!
//! Files are PEM, so `openssl` can make and read them too: a public key
//! is a `PUBLIC KEY` block (SubjectPublicKeyInfo), a private key a
//! `PRIVATE KEY` block (PKCS#8). Keys are written as PKCS#8 v1 (RFC 8410,
//! the seed only), what OpenSSL 3 and the common crypto libraries read;
//! v2 (with the public key, as ring writes it and as keygen wrote before)
//! is read too. A line `keyid: NAME` before a block names that key; without
//! one, the key id is derived from the key ([`derive_keyid`]). A public
//! key file may hold several blocks (a key ring). Parsing is pure: the
//! caller reads the bytes.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};

use std::time::SystemTime;

use super::envelope::{self, is_valid_keyid, pae, Signature, PROJECT_TYPE, TOMBSTONE_TYPE};
use super::timestamp::format_rfc3339;
use super::wire::WireProject;

/// The DER of an Ed25519 SubjectPublicKeyInfo, up to the 32 key bytes.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The DER of an Ed25519 PKCS#8 v1 private key (RFC 8410 §7), up to the
/// 32 seed bytes.
const PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Why a key file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("no {0} block")]
    NoKey(&'static str),
    #[error("a {0} block without its END line")]
    Unterminated(&'static str),
    #[error("a {0} block that is not base64")]
    Base64(&'static str),
    #[error("a PUBLIC KEY block that is not an Ed25519 key")]
    NotEd25519Public,
    #[error("a PRIVATE KEY block that is not an Ed25519 PKCS#8 key: {0}")]
    NotEd25519Private(String),
    #[error("key id {0:?} is not 1-64 of A-Z a-z 0-9 . _ : -")]
    BadKeyId(String),
    #[error("key id {0:?} names two different keys")]
    DuplicateKeyId(String),
    #[error("the system random generator failed")]
    Random,
}

/// A key a sidecar trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub keyid: String,
    pub key: [u8; 32],
}

impl PublicKey {
    /// True when `signature` is this key's over the DSSE encoding of
    /// `payload_type` and `payload`. ring checks that S is canonical and
    /// that R re-encodes to what was sent, so a signature cannot be
    /// altered and stay valid.
    pub fn verifies(&self, payload_type: &str, payload: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.key)
            .verify(&pae(payload_type, payload), signature)
            .is_ok()
    }

    /// For a signature that does not verify: the encoding mistake it was
    /// made with, when it verifies over one of the usual ones (the
    /// payload without DSSE's pre-authentication encoding, the encoding
    /// with its lengths in hex, or the payload's base64 text in place of
    /// its bytes). Run only on the refusal path, for its message.
    pub fn misencoding(
        &self,
        payload_type: &str,
        payload: &[u8],
        signature: &[u8],
    ) -> Option<&'static str> {
        use base64::Engine;
        let key = UnparsedPublicKey::new(&ED25519, &self.key);
        let hex_lengths = {
            let mut out = format!(
                "DSSEv1 {:x} {payload_type} {:x} ",
                payload_type.len(),
                payload.len()
            )
            .into_bytes();
            out.extend_from_slice(payload);
            out
        };
        let base64_text = base64::engine::general_purpose::STANDARD.encode(payload);
        [
            (
                payload.to_vec(),
                "it verifies over the payload alone: sign the pre-authentication encoding",
            ),
            (
                hex_lengths,
                "it verifies over an encoding with lengths in hex: they are decimal",
            ),
            (
                pae(payload_type, base64_text.as_bytes()),
                "it verifies over the payload's base64 text: sign the decoded bytes",
            ),
        ]
        .into_iter()
        .find(|(message, _)| key.verify(message, signature).is_ok())
        .map(|(_, mistake)| mistake)
    }

    /// The key as a PEM file (with its `keyid:` line).
    pub fn to_pem(&self) -> String {
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.key);
        format!("keyid: {}\n{}", self.keyid, pem("PUBLIC KEY", &der))
    }
}

/// A key a publisher signs with. Never printed: `Debug` shows the key id.
pub struct SigningKey {
    pub keyid: String,
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.keyid)
    }
}

impl SigningKey {
    /// Signs the DSSE encoding of `payload_type` and `payload`.
    pub fn sign(&self, payload_type: &str, payload: &[u8]) -> Signature {
        Signature {
            keyid: self.keyid.clone(),
            sig: self
                .pair
                .sign(&pae(payload_type, payload))
                .as_ref()
                .to_vec(),
        }
    }

    /// A signature over `bytes` as given: how the tests make the
    /// encoding mistakes integrators make.
    #[cfg(test)]
    pub(crate) fn sign_bytes(&self, bytes: &[u8]) -> Vec<u8> {
        self.pair.sign(bytes).as_ref().to_vec()
    }

    /// `doc` signed as of `now` (its `signed_at` set, `expires_at` set or
    /// cleared): the envelope's JSON text.
    pub fn seal_document(
        &self,
        doc: &WireProject,
        now: SystemTime,
        expires_at: Option<SystemTime>,
    ) -> String {
        let doc = WireProject {
            signed_at: Some(format_rfc3339(now)),
            expires_at: expires_at.map(format_rfc3339),
            ..doc.clone()
        };
        // Plain data: cannot fail.
        let payload = serde_json::to_vec(&doc).unwrap_or_default();
        let sig = self.sign(PROJECT_TYPE, &payload);
        envelope::encode(PROJECT_TYPE, &payload, &[sig])
    }

    /// A signed removal of project `id` at `revision`, as of `now`.
    pub fn seal_tombstone(&self, id: &str, revision: u64, now: SystemTime) -> String {
        let payload = serde_json::json!({
            "id": id,
            "revision": revision,
            "signed_at": format_rfc3339(now),
        })
        .to_string();
        let sig = self.sign(TOMBSTONE_TYPE, payload.as_bytes());
        envelope::encode(TOMBSTONE_TYPE, payload.as_bytes(), &[sig])
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        let mut key = [0u8; 32];
        key.copy_from_slice(self.pair.public_key().as_ref());
        PublicKey {
            keyid: self.keyid.clone(),
            key,
        }
    }
}

/// A new key pair: the private key file's text and the public key.
/// `keyid` names it, or the id is derived from the key.
pub fn generate(keyid: Option<&str>) -> Result<(String, PublicKey), KeyError> {
    let mut seed = [0u8; 32];
    ring::rand::SecureRandom::fill(&SystemRandom::new(), &mut seed)
        .map_err(|_| KeyError::Random)?;
    let mut pkcs8 = PKCS8_V1_PREFIX.to_vec();
    pkcs8.extend_from_slice(&seed);
    let pair = Ed25519KeyPair::from_seed_unchecked(&seed)
        .map_err(|e| KeyError::NotEd25519Private(e.to_string()))?;
    let mut key = [0u8; 32];
    key.copy_from_slice(pair.public_key().as_ref());
    let keyid = match keyid {
        Some(id) if is_valid_keyid(id) => id.to_owned(),
        Some(id) => return Err(KeyError::BadKeyId(id.to_owned())),
        None => derive_keyid(&key),
    };
    let private = format!("keyid: {keyid}\n{}", pem("PRIVATE KEY", &pkcs8));
    Ok((private, PublicKey { keyid, key }))
}

/// `ed25519:` and the first 8 bytes of the SHA-256 of the raw 32-byte
/// key (not its DER form), in lowercase hex.
pub fn derive_keyid(key: &[u8; 32]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, key);
    let hex: String = digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("ed25519:{hex}")
}

/// Every public key in a key file (at least one).
pub fn parse_public(text: &str) -> Result<Vec<PublicKey>, KeyError> {
    let blocks = blocks(text, "PUBLIC KEY")?;
    if blocks.is_empty() {
        return Err(KeyError::NoKey("PUBLIC KEY"));
    }
    blocks
        .into_iter()
        .map(|(keyid, der)| {
            let raw = der
                .strip_prefix(&SPKI_PREFIX[..])
                .filter(|k| k.len() == 32)
                .ok_or(KeyError::NotEd25519Public)?;
            let mut key = [0u8; 32];
            key.copy_from_slice(raw);
            let keyid = named(keyid, &key)?;
            Ok(PublicKey { keyid, key })
        })
        .collect()
}

/// The private key of a key file (its first `PRIVATE KEY` block).
pub fn parse_private(text: &str) -> Result<SigningKey, KeyError> {
    let (keyid, der) = blocks(text, "PRIVATE KEY")?
        .into_iter()
        .next()
        .ok_or(KeyError::NoKey("PRIVATE KEY"))?;
    let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
        .map_err(|e| KeyError::NotEd25519Private(e.to_string()))?;
    let mut key = [0u8; 32];
    key.copy_from_slice(pair.public_key().as_ref());
    Ok(SigningKey {
        keyid: named(keyid, &key)?,
        pair,
    })
}

/// Checks that no key id names two different keys; returns the keys with
/// exact duplicates dropped.
pub fn ring_of(keys: Vec<PublicKey>) -> Result<Vec<PublicKey>, KeyError> {
    let mut out: Vec<PublicKey> = Vec::with_capacity(keys.len());
    for key in keys {
        match out.iter().find(|k| k.keyid == key.keyid) {
            Some(k) if k.key == key.key => {}
            Some(_) => return Err(KeyError::DuplicateKeyId(key.keyid)),
            None => out.push(key),
        }
    }
    Ok(out)
}

fn named(keyid: Option<String>, key: &[u8; 32]) -> Result<String, KeyError> {
    match keyid {
        Some(id) if is_valid_keyid(&id) => Ok(id),
        Some(id) => Err(KeyError::BadKeyId(id)),
        None => Ok(derive_keyid(key)),
    }
}

/// A PEM block's DER, and the key id named before it.
type Block = (Option<String>, Vec<u8>);

/// The `label` blocks of a PEM text, each with the key id named on a
/// `keyid:` line before it (text outside blocks is otherwise ignored, as
/// RFC 7468 allows).
fn blocks(text: &str, label: &'static str) -> Result<Vec<Block>, KeyError> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let mut out = Vec::new();
    let mut keyid = None;
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        if let Some(id) = line
            .strip_prefix("keyid:")
            .or_else(|| line.strip_prefix("KeyId:"))
        {
            keyid = Some(id.trim().to_owned());
        } else if line == begin {
            let mut body = String::new();
            loop {
                match lines.next() {
                    None => return Err(KeyError::Unterminated(label)),
                    Some(l) if l == end => break,
                    Some(l) => body.push_str(l),
                }
            }
            let der = STANDARD.decode(body).map_err(|_| KeyError::Base64(label))?;
            out.push((keyid.take(), der));
        }
    }
    Ok(out)
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_pair_signs_and_verifies_through_its_files() {
        let (private, public) = generate(Some("cp-2026")).unwrap();
        let signer = parse_private(&private).unwrap();
        assert_eq!(signer.keyid, "cp-2026");
        assert_eq!(signer.public(), public);
        let read = parse_public(&public.to_pem()).unwrap();
        assert_eq!(read, vec![public.clone()]);
        let sig = signer.sign("t", b"payload");
        assert_eq!(sig.keyid, "cp-2026");
        assert!(public.verifies("t", b"payload", &sig.sig));
        assert!(
            !public.verifies("u", b"payload", &sig.sig),
            "the type is signed"
        );
        assert!(!public.verifies("t", b"payloaD", &sig.sig));
        assert!(!format!("{signer:?}").contains("PRIVATE"));
    }

    /// The test vector docs/control-plane.md gives: RFC 8032's first
    /// public key, as raw bytes and as the PEM a control plane holds.
    #[test]
    fn the_documented_key_id_test_vector_holds() {
        let raw: [u8; 32] = [
            0xd7, 0x5a, 0x98, 0x01, 0x82, 0xb1, 0x0a, 0xb7, 0xd5, 0x4b, 0xfe, 0xd3, 0xc9, 0x64,
            0x07, 0x3a, 0x0e, 0xe1, 0x72, 0xf3, 0xda, 0xa6, 0x23, 0x25, 0xaf, 0x02, 0x1a, 0x68,
            0xf7, 0x07, 0x51, 0x1a,
        ];
        assert_eq!(derive_keyid(&raw), "ed25519:21fe31dfa154a261");
        let pem = "-----BEGIN PUBLIC KEY-----\n\
                   MCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n\
                   -----END PUBLIC KEY-----\n";
        let keys = parse_public(pem).unwrap();
        assert_eq!(keys[0].keyid, "ed25519:21fe31dfa154a261");
        let docs = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docs/control-plane.md"
        ))
        .unwrap();
        assert!(docs.contains("`ed25519:21fe31dfa154a261`"));
        assert!(docs.contains("MCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="));
    }

    #[test]
    fn key_ids_are_derived_when_not_named() {
        let (private, public) = generate(None).unwrap();
        assert!(public.keyid.starts_with("ed25519:") && public.keyid.len() == 24);
        let unnamed: String = private
            .lines()
            .filter(|l| !l.starts_with("keyid:"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(parse_private(&unnamed).unwrap().keyid, public.keyid);
    }

    #[test]
    fn keys_are_written_as_pkcs8_v1_and_v2_keys_still_read() {
        let (private, _) = generate(None).unwrap();
        let der = blocks(&private, "PRIVATE KEY").unwrap().remove(0).1;
        assert_eq!(der.len(), 48);
        assert_eq!(der[..16], PKCS8_V1_PREFIX);
        // A v2 document (ring's, as keygen wrote them before) still reads.
        let v2 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let old = parse_private(&pem("PRIVATE KEY", v2.as_ref())).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(v2.as_ref()).unwrap();
        assert_eq!(old.public().key, pair.public_key().as_ref());
    }

    #[test]
    fn pkcs8_v1_and_unnamed_files_read_as_openssl_writes_them() {
        // openssl writes PKCS#8 v1 (the seed only) and no keyid line.
        let (private, public) = generate(None).unwrap();
        let v1 = blocks(&private, "PRIVATE KEY").unwrap().remove(0).1;
        let signer = parse_private(&pem("PRIVATE KEY", &v1)).unwrap();
        let unnamed = public
            .to_pem()
            .lines()
            .filter(|l| !l.starts_with("keyid:"))
            .map(|l| format!("{l}\n"))
            .collect::<String>();
        let keys = parse_public(&unnamed).unwrap();
        assert_eq!(signer.public().key, keys[0].key);
        assert_eq!(signer.keyid, keys[0].keyid);
        assert_eq!(keys[0].keyid, public.keyid);
    }

    #[test]
    fn a_key_ring_holds_several_keys_and_refuses_a_reused_id() {
        let (_, a) = generate(Some("a")).unwrap();
        let (_, b) = generate(Some("b")).unwrap();
        let both = parse_public(&format!("{}{}", a.to_pem(), b.to_pem())).unwrap();
        assert_eq!(both, vec![a.clone(), b.clone()]);
        let mut b_as_a = b.clone();
        b_as_a.keyid = "a".into();
        assert_eq!(
            ring_of(vec![a.clone(), a.clone(), b_as_a]),
            Err(KeyError::DuplicateKeyId("a".into()))
        );
        assert_eq!(ring_of(vec![a.clone(), a.clone()]).unwrap(), vec![a]);
    }

    #[test]
    fn broken_files_say_what_is_wrong() {
        assert_eq!(parse_public(""), Err(KeyError::NoKey("PUBLIC KEY")));
        assert_eq!(
            parse_public("-----BEGIN PUBLIC KEY-----\nAAAA\n"),
            Err(KeyError::Unterminated("PUBLIC KEY"))
        );
        assert_eq!(
            parse_public("-----BEGIN PUBLIC KEY-----\n!!\n-----END PUBLIC KEY-----\n"),
            Err(KeyError::Base64("PUBLIC KEY"))
        );
        assert_eq!(
            parse_public("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"),
            Err(KeyError::NotEd25519Public)
        );
        let (_, key) = generate(None).unwrap();
        let bad_id = key.to_pem().replace(&key.keyid, "has space");
        assert!(matches!(parse_public(&bad_id), Err(KeyError::BadKeyId(_))));
        assert!(parse_private(&key.to_pem()).is_err());
    }
}
