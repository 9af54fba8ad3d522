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
//! is [`super::trust`]'s business, and the payload is not parsed here:
//! it is parsed only once a signature over its raw bytes has verified.
//!
//! Base64 is read as DSSE allows it: the standard or the URL-safe
//! alphabet (one per field, never mixed), padded or not, with canonical
//! trailing bits. Any change to the encoded text then either fails to
//! decode or decodes to other bytes, so it cannot leave a signature
//! valid. What the sidecar writes is standard and padded.
//!
//! Telling an envelope from a plain document is structural: an object
//! with a top-level `payloadType` key, however that key is escaped and
//! however often it appears ([`is_envelope`]); an envelope with a key
//! given twice is then refused ([`parse`]), since DSSE readers disagree
//! on which copy counts.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use std::borrow::Cow;

/// The payload type of a signed project document.
pub const PROJECT_TYPE: &str = "application/vnd.env-sidecar.project+json";
/// The payload type of a signed removal: `{"id", "revision", "signed_at"}`.
pub const TOMBSTONE_TYPE: &str = "application/vnd.env-sidecar.tombstone+json";

/// Key ids are 1–128 of `A-Z a-z 0-9 . _ : -` (they appear in logs, status
/// and file names).
pub const MAX_KEYID_LEN: usize = 128;

/// One signature of an envelope, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// The key id the signer named; empty when the envelope names none
    /// (DSSE makes it optional: such a signature is checked against every
    /// trusted key). Untrusted text: never printed unescaped.
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    keyid: Option<String>,
    sig: String,
}

/// Why an envelope could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("not a signed envelope: {0}")]
    Shape(String),
    #[error("envelope {field} is not base64 (standard or URL-safe alphabet)")]
    Base64 { field: &'static str },
    #[error("envelope payload is not UTF-8")]
    NotUtf8,
    /// More signatures than anyone signs with: each would be verified, so
    /// a crafted envelope could cost many verifications per fetch.
    #[error("envelope has {0} signatures; at most {MAX_SIGNATURES} are read")]
    TooManySignatures(usize),
}

/// The most signatures an envelope may carry (a key rotation needs two).
pub const MAX_SIGNATURES: usize = 16;

/// True when `json` (one JSON value) is an object with a top-level
/// `payloadType` key: it is then read as an envelope, whatever else it
/// holds. The key is compared as serde reads it, so `"payload\u0054ype"`
/// counts, and so does a key given twice.
pub fn is_envelope(json: &str) -> bool {
    // Without a backslash no key can be escaped, so a document that never
    // names the field costs only this search; anything else is read.
    if !json.contains('\\') && !json.contains("\"payloadType\"") {
        return false;
    }
    let mut de = serde_json::Deserializer::from_str(json);
    de.deserialize_any(TopLevelKey("payloadType"))
        .unwrap_or(false)
}

/// Visits one JSON value: true when it is an object with the key (at the
/// top level, any number of times).
struct TopLevelKey(&'static str);

impl<'de> Visitor<'de> for TopLevelKey {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let mut found = false;
        while let Some(key) = map.next_key::<KeyText<'de>>()? {
            found |= key.0 == self.0;
            map.next_value::<IgnoredAny>()?;
        }
        Ok(found)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }

    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_str<E>(self, _: &str) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(false)
    }
}

/// A key, borrowed when it has no escapes.
struct KeyText<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for KeyText<'de> {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KeyText<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<KeyText<'de>, E> {
                Ok(KeyText(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<KeyText<'de>, E> {
                Ok(KeyText(Cow::Owned(v.to_owned())))
            }
        }
        de.deserialize_str(V)
    }
}

/// Reads an envelope; `json` is kept as the envelope's text.
pub fn parse(json: &str) -> Result<Seal, EnvelopeError> {
    let raw: RawEnvelope =
        serde_json::from_str(json).map_err(|e| EnvelopeError::Shape(e.to_string()))?;
    if raw.signatures.len() > MAX_SIGNATURES {
        return Err(EnvelopeError::TooManySignatures(raw.signatures.len()));
    }
    let payload = decode(&raw.payload, "payload")?;
    if std::str::from_utf8(&payload).is_err() {
        return Err(EnvelopeError::NotUtf8);
    }
    let signatures = raw
        .signatures
        .into_iter()
        .map(|s| {
            Ok(Signature {
                keyid: s.keyid.unwrap_or_default(),
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
                keyid: (!s.keyid.is_empty()).then(|| s.keyid.clone()),
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

/// True for a key id of 1–128 of `A-Z a-z 0-9 . _ : -`.
pub fn is_valid_keyid(keyid: &str) -> bool {
    (1..=MAX_KEYID_LEN).contains(&keyid.len())
        && keyid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

/// Either alphabet, padded or not; canonical trailing bits in both.
const LENIENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const STANDARD_ANY_PAD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
const URL_SAFE_ANY_PAD: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);

/// Where an envelope's text spells its payload (a byte range of `json`)
/// and the bytes it decodes to, reading nothing else of it; `None` when
/// it does not read (or spells its payload with escapes).
pub fn payload_of(json: &str) -> Option<(std::ops::Range<usize>, Vec<u8>)> {
    #[derive(Deserialize)]
    struct Payload<'a> {
        payload: &'a str,
    }
    let read: Payload = serde_json::from_str(json).ok()?;
    // Borrowed from `json`, so it lies within it.
    let start = read.payload.as_ptr() as usize - json.as_ptr() as usize;
    let bytes = decode(read.payload, "payload").ok()?;
    Some((start..start + read.payload.len(), bytes))
}

fn decode(text: &str, field: &'static str) -> Result<Vec<u8>, EnvelopeError> {
    STANDARD_ANY_PAD
        .decode(text)
        .or_else(|_| URL_SAFE_ANY_PAD.decode(text))
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
    fn base64_is_read_in_either_dsse_alphabet_and_canonically() {
        let ok = encode(PROJECT_TYPE, b"ab", &[]);
        assert!(parse(&ok).is_ok());
        // "~~~" is "fn5+" in the standard alphabet, "fn5-" URL-safe; "??"
        // is "Pz8=" padded, "Pz8" not.
        for payload in ["fn5+", "fn5-", "Pz8=", "Pz8", "YWI"] {
            let text = format!(r#"{{"payloadType":"t","payload":"{payload}","signatures":[]}}"#);
            assert!(parse(&text).is_ok(), "{payload:?} was refused");
        }
        assert_eq!(
            parse(r#"{"payloadType":"t","payload":"fn5-","signatures":[]}"#)
                .unwrap()
                .payload,
            b"~~~"
        );
        // Mixed alphabets, non-canonical trailing bits, bad padding, spaces.
        for payload in ["fn5+fn5-", "YWJ=", "YW-=", "YWI==", " YWI=", "YWI=\\n", "Y"] {
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

    /// A crafted envelope cannot make the writer verify thousands of
    /// signatures: more than [`MAX_SIGNATURES`] is refused unread.
    #[test]
    fn an_envelope_with_too_many_signatures_is_refused() {
        let sig = Signature {
            keyid: String::new(),
            sig: vec![0; 64],
        };
        let text = encode("t", b"{}", &vec![sig.clone(); MAX_SIGNATURES]);
        assert_eq!(parse(&text).unwrap().signatures.len(), MAX_SIGNATURES);
        let text = encode("t", b"{}", &vec![sig; MAX_SIGNATURES + 1]);
        assert_eq!(
            parse(&text).unwrap_err(),
            EnvelopeError::TooManySignatures(MAX_SIGNATURES + 1)
        );
    }

    #[test]
    fn key_ids_have_a_small_alphabet() {
        for ok in ["cp-2026", "ed25519:0a1b", "a.b_c"] {
            assert!(is_valid_keyid(ok), "{ok}");
        }
        assert!(is_valid_keyid(&"k".repeat(128)));
        for bad in ["", "a b", "x\"y", "a\nINFO", &"k".repeat(129)] {
            assert!(!is_valid_keyid(bad), "{bad}");
        }
    }

    #[test]
    fn escaped_or_repeated_payload_type_keys_still_make_an_envelope() {
        for text in [
            r#"{"payload\u0054ype":"x","id":"a"}"#,
            r#"{"\u0070ayloadType":"x"}"#,
            r#"{"payloadType":"x","payloadType":"y","id":"a"}"#,
            r#"{"id":"a\\","payloadType":"x"}"#,
        ] {
            assert!(is_envelope(text), "{text}");
        }
        // Nested, or only in a value: not an envelope.
        assert!(!is_envelope(r#"{"environments":[{"payloadType":"x"}]}"#));
        assert!(!is_envelope(r#"{"id":"\"payloadType\""}"#));
        // An envelope that repeats a key is refused, not read either way.
        let twice = r#"{"payloadType":"t","payloadType":"u","payload":"","signatures":[]}"#;
        assert!(matches!(parse(twice), Err(EnvelopeError::Shape(_))));
    }

    #[test]
    fn a_signature_without_keyid_reads_as_an_empty_one_and_is_written_without() {
        let text = r#"{"payloadType":"t","payload":"YWI=","signatures":[{"sig":"AAAA"}]}"#;
        let seal = parse(text).unwrap();
        assert_eq!(seal.signatures[0].keyid, "");
        let again = encode("t", b"ab", &seal.signatures);
        assert!(!again.contains("keyid"), "{again}");
    }
}
