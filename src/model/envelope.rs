//! Signed envelopes: a project document (or a removal) wrapped the DSSE
//! way, so that a sidecar can tell who wrote it.
//!
//! ```json
//! {"payloadType": "application/vnd.env-sidecar.project+json",
//!  "payload": "<standard base64 of the document bytes>",
//!  "signatures": [{"keyid": "cp-2026", "sig": "<standard base64>"}]}
//! ```
//!
//! Each signature is Ed25519 over the pre-authentication encoding
//! ([`pae`]) of the type and the payload bytes, so the type is part of
//! what is signed: a removal ([`TOMBSTONE_TYPE`]) can never be passed off
//! as a document, nor the other way round.
//!
//! This module only reads and writes the shape; whether a signature holds
//! is [`super::trust`]'s business. Base64 is read strictly (the standard
//! alphabet, padded, canonical trailing bits): every change to the
//! encoded text either fails to decode or decodes to other bytes, so it
//! cannot leave a signature valid.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};

/// The payload type of a signed project document.
pub const PROJECT_TYPE: &str = "application/vnd.env-sidecar.project+json";
/// The payload type of a signed removal: `{"id", "revision", "signed_at"}`.
pub const TOMBSTONE_TYPE: &str = "application/vnd.env-sidecar.tombstone+json";

/// Key ids are 1–64 of `A-Z a-z 0-9 . _ : -` (they appear in logs, status
/// and file names).
pub const MAX_KEYID_LEN: usize = 64;

/// One signature of an envelope, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub keyid: String,
    pub sig: Vec<u8>,
}

/// What an envelope carries, decoded, and the envelope's own text as it
/// was received (what the last-known-good cache keeps, so a restart
/// verifies exactly what arrived).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seal {
    pub payload_type: String,
    /// The payload bytes: the exact bytes that were signed.
    pub payload: Vec<u8>,
    pub signatures: Vec<Signature>,
    /// The envelope JSON as received.
    pub envelope: Box<str>,
}

/// The signature times a signed payload carries (as text: the writer
/// parses them when it checks the seal).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stamps<'a> {
    pub signed_at: Option<&'a str>,
    pub expires_at: Option<&'a str>,
}

/// The envelope as JSON. Field names are DSSE's.
#[derive(Debug, Deserialize, Serialize)]
struct RawEnvelope {
    #[serde(rename = "payloadType")]
    payload_type: String,
    payload: String,
    #[serde(default)]
    signatures: Vec<RawSignature>,
}

#[derive(Debug, Deserialize, Serialize)]
struct RawSignature {
    keyid: String,
    sig: String,
}

/// Just enough to tell an envelope from a document: a top-level
/// `payloadType` string.
#[derive(Deserialize)]
struct Probe {
    #[serde(rename = "payloadType")]
    payload_type: Option<serde::de::IgnoredAny>,
}

/// Why an envelope could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("not a signed envelope: {0}")]
    Shape(String),
    #[error("envelope {field} is not standard padded base64")]
    Base64 { field: &'static str },
    #[error("envelope payload is not UTF-8")]
    NotUtf8,
}

/// True when `json` (one JSON value) is an object with a top-level
/// `payloadType`: it is then read as an envelope, whatever else it holds.
pub fn is_envelope(json: &str) -> bool {
    // A document never names the field at all, so a plain one costs only
    // the substring search.
    json.contains("\"payloadType\"")
        && serde_json::from_str::<Probe>(json).is_ok_and(|p| p.payload_type.is_some())
}

/// Reads an envelope; `json` is kept as the envelope's text.
pub fn parse(json: &str) -> Result<Seal, EnvelopeError> {
    let raw: RawEnvelope =
        serde_json::from_str(json).map_err(|e| EnvelopeError::Shape(e.to_string()))?;
    let payload = decode(&raw.payload, "payload")?;
    if std::str::from_utf8(&payload).is_err() {
        return Err(EnvelopeError::NotUtf8);
    }
    let signatures = raw
        .signatures
        .into_iter()
        .map(|s| {
            Ok(Signature {
                keyid: s.keyid,
                sig: decode(&s.sig, "sig")?,
            })
        })
        .collect::<Result<Vec<_>, EnvelopeError>>()?;
    Ok(Seal {
        payload_type: raw.payload_type,
        payload,
        signatures,
        envelope: json.into(),
    })
}

/// Writes an envelope (compact JSON) for `payload` of `payload_type`.
pub fn encode(payload_type: &str, payload: &[u8], signatures: &[Signature]) -> String {
    let raw = RawEnvelope {
        payload_type: payload_type.to_owned(),
        payload: STANDARD.encode(payload),
        signatures: signatures
            .iter()
            .map(|s| RawSignature {
                keyid: s.keyid.clone(),
                sig: STANDARD.encode(&s.sig),
            })
            .collect(),
    };
    // Strings only: cannot fail.
    serde_json::to_string(&raw).unwrap_or_default()
}

/// DSSE's pre-authentication encoding: `DSSEv1 SP LEN(type) SP type SP
/// LEN(body) SP body`, lengths in ASCII decimal bytes.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + payload_type.len() + 32);
    out.extend_from_slice(b"DSSEv1 ");
    out.extend_from_slice(payload_type.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload_type.as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload);
    out
}

/// True for a key id of 1–64 of `A-Z a-z 0-9 . _ : -`.
pub fn is_valid_keyid(keyid: &str) -> bool {
    (1..=MAX_KEYID_LEN).contains(&keyid.len())
        && keyid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

fn decode(text: &str, field: &'static str) -> Result<Vec<u8>, EnvelopeError> {
    STANDARD
        .decode(text)
        .map_err(|_| EnvelopeError::Base64 { field })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_matches_the_dsse_specification_example() {
        // From the DSSE protocol document.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
        );
        assert_eq!(pae("", b""), b"DSSEv1 0  0 ");
    }

    #[test]
    fn an_envelope_round_trips_and_keeps_its_text() {
        let sigs = [Signature {
            keyid: "k1".into(),
            sig: vec![1, 2, 3],
        }];
        let text = encode(PROJECT_TYPE, br#"{"id":"a"}"#, &sigs);
        assert!(is_envelope(&text));
        let seal = parse(&text).unwrap();
        assert_eq!(seal.payload_type, PROJECT_TYPE);
        assert_eq!(seal.payload, br#"{"id":"a"}"#);
        assert_eq!(seal.signatures, sigs);
        assert_eq!(&*seal.envelope, text);
    }

    #[test]
    fn documents_are_not_envelopes_even_when_they_mention_the_field() {
        assert!(!is_envelope(r#"{"id":"a","revision":1}"#));
        assert!(!is_envelope(
            r#"{"id":"a","environments":[{"description":"\"payloadType\""}]}"#
        ));
        assert!(!is_envelope("[1]"));
        assert!(is_envelope(r#"{"payloadType":"x"}"#));
    }

    #[test]
    fn base64_is_read_strictly() {
        let ok = encode(PROJECT_TYPE, b"ab", &[]);
        assert!(parse(&ok).is_ok());
        for payload in ["YWI", "YWJ=", "YW-=", "YWI==", " YWI=", "YWI=\\n"] {
            let text = format!(r#"{{"payloadType":"t","payload":"{payload}","signatures":[]}}"#);
            assert!(
                matches!(parse(&text), Err(EnvelopeError::Base64 { .. })),
                "{payload:?} was accepted"
            );
        }
        let not_utf8 = encode(PROJECT_TYPE, &[0xff, 0xfe], &[]);
        assert_eq!(parse(&not_utf8), Err(EnvelopeError::NotUtf8));
        assert!(matches!(
            parse(r#"{"payloadType":"t"}"#),
            Err(EnvelopeError::Shape(_))
        ));
    }

    #[test]
    fn key_ids_have_a_small_alphabet() {
        for ok in ["cp-2026", "ed25519:0a1b", "a.b_c"] {
            assert!(is_valid_keyid(ok), "{ok}");
        }
        for bad in ["", "a b", "x\"y", &"k".repeat(65)] {
            assert!(!is_valid_keyid(bad), "{bad}");
        }
    }
}
