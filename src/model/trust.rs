//! Trust: which keys a sidecar believes, whether it insists on
//! signatures, and the checks of a signed envelope against them.
//!
//! Pure: the keys are handed in (the sync layer reads and re-reads the
//! key files), and the checks run where validation runs, on the writer
//! thread, never on a request thread.
//!
//! Two steps, in this order, because nothing an attacker wrote is parsed
//! before a trusted key vouches for it:
//!
//! 1. [`Trust::verify`], over the raw payload bytes: at least one
//!    signature by a trusted key verifies (a signature naming no key id
//!    is tried against every trusted key), and the payload type is one
//!    this sidecar reads. Reasons `unsigned`, `unknown_key`,
//!    `bad_signature`.
//! 2. [`Trust::stamps`], once the payload is parsed: it carries a
//!    readable `signed_at` no further ahead than `max_clock_skew`
//!    (`not_yet_valid`), its `expires_at` (if any) is still ahead, and
//!    (for documents arriving from the source) it was signed within
//!    `max_signature_age` (`expired`).

use std::time::{Duration, SystemTime};

use super::envelope::{Seal, Stamps, PROJECT_TYPE, TOMBSTONE_TYPE};
use super::keys::PublicKey;
use super::origin::Origin;
use super::rejection::{Reason, ValidationError};
use super::timestamp::{format_rfc3339, parse_rfc3339};

/// How far ahead of this clock a `signed_at` may be, by default.
pub const DEFAULT_MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);

/// What a sidecar (or a tool) trusts.
#[derive(Debug, Clone)]
pub struct Trust {
    keys: Vec<PublicKey>,
    /// Unsigned documents, and removals that are not signed tombstones,
    /// are rejected.
    pub require_signatures: bool,
    /// Documents from the source signed longer ago are rejected
    /// (`expired`); `None`: no limit.
    pub max_signature_age: Option<Duration>,
    /// A `signed_at` further ahead of the local clock is rejected
    /// (`not_yet_valid`).
    pub max_clock_skew: Duration,
    mode: Mode,
}

/// Which checks a trust makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A sidecar's: signatures, then times.
    Sidecar,
    /// A publisher reading back what it published: signatures only (an
    /// expired document still holds its revision on the nodes that took
    /// it).
    Publisher,
    /// Tooling that judges what it holds without keys (`validate`
    /// without `--trust-key`): seals are taken as they are.
    Unchecked,
}

impl Default for Trust {
    fn default() -> Trust {
        Trust {
            keys: Vec::new(),
            require_signatures: false,
            max_signature_age: None,
            max_clock_skew: DEFAULT_MAX_CLOCK_SKEW,
            mode: Mode::Sidecar,
        }
    }
}

/// What a believed seal was signed by and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Trusted key ids whose signature verified.
    pub keyids: Vec<String>,
    pub signed_at: SystemTime,
    pub expires_at: Option<SystemTime>,
}

impl Trust {
    /// Trust in exactly `keys`.
    pub fn new(
        keys: Vec<PublicKey>,
        require_signatures: bool,
        max_signature_age: Option<Duration>,
    ) -> Trust {
        Trust {
            keys,
            require_signatures,
            max_signature_age,
            ..Trust::default()
        }
    }

    /// The same trust with another allowed clock skew.
    pub fn with_max_clock_skew(self, max_clock_skew: Duration) -> Trust {
        Trust {
            max_clock_skew,
            ..self
        }
    }

    /// For tooling that judges documents without keys (`validate`
    /// without `--trust-key`): seals are taken as they are, unchecked,
    /// and nothing is required.
    pub fn skip_signatures() -> Trust {
        Trust {
            mode: Mode::Unchecked,
            ..Trust::default()
        }
    }

    /// For a publisher judging what a signed fleet can be serving: only
    /// what `keys` signed counts, whenever it was signed.
    pub fn for_publisher(keys: Vec<PublicKey>) -> Trust {
        Trust {
            keys,
            require_signatures: true,
            mode: Mode::Publisher,
            ..Trust::default()
        }
    }

    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    /// The same trust with other keys (a key file changed).
    pub fn with_keys(&self, keys: Vec<PublicKey>) -> Trust {
        Trust {
            keys,
            ..self.clone()
        }
    }

    /// Step 1: the trusted key ids whose signature over the raw payload
    /// verifies (at least one), for a payload type this sidecar reads.
    pub fn verify(&self, seal: &Seal) -> Result<Vec<String>, ValidationError> {
        if self.mode == Mode::Unchecked {
            return Ok(seal.signatures.iter().map(|s| s.keyid.clone()).collect());
        }
        let keyids = self.signatures(seal)?;
        if seal.payload_type != PROJECT_TYPE && seal.payload_type != TOMBSTONE_TYPE {
            return reject(
                Reason::BadSignature,
                format!(
                    "payloadType {} is neither {PROJECT_TYPE} nor {TOMBSTONE_TYPE}",
                    clip(&seal.payload_type)
                ),
            );
        }
        Ok(keyids)
    }

    /// Step 1 for the sidecar's own last-known-good cache: the key ids
    /// among `recorded` (the keys that verified this envelope when it was
    /// accepted) still trusted, for a payload type this sidecar reads;
    /// `None` when none is (then the signature must verify again). The
    /// signature itself is not checked: whoever can write the cache
    /// already owns the node.
    pub fn recorded(&self, seal: &Seal, recorded: &[String]) -> Option<Vec<String>> {
        if seal.payload_type != PROJECT_TYPE && seal.payload_type != TOMBSTONE_TYPE {
            return None;
        }
        self.still_trusted(recorded)
    }

    /// The keys among `recorded` still trusted, `None` when none is (or
    /// outside the sidecar, which always verifies).
    pub fn still_trusted(&self, recorded: &[String]) -> Option<Vec<String>> {
        if self.mode != Mode::Sidecar {
            return None;
        }
        let trusted: Vec<String> = recorded
            .iter()
            .filter(|id| self.keys.iter().any(|k| k.keyid == **id))
            .cloned()
            .collect();
        (!trusted.is_empty()).then_some(trusted)
    }

    /// Step 2: the times of a verified payload, as of `now`; news from
    /// the source ([`Origin::is_news`]) is held to `max_signature_age` and
    /// `max_clock_skew` (a document the sidecar accepted before, reloaded
    /// from its cache, is neither aged out nor judged against a clock that
    /// moved since).
    pub fn stamps(
        &self,
        keyids: Vec<String>,
        stamps: Stamps<'_>,
        now: SystemTime,
        origin: &Origin,
    ) -> Result<Verified, ValidationError> {
        let from_source = origin.is_news();
        let time = |t: Option<&str>| t.and_then(|t| parse_rfc3339(t).ok());
        if self.mode != Mode::Sidecar {
            return Ok(Verified {
                keyids,
                signed_at: time(stamps.signed_at).unwrap_or(std::time::UNIX_EPOCH),
                expires_at: time(stamps.expires_at),
            });
        }
        let Some(signed_at) = stamps.signed_at else {
            return reject(
                Reason::Malformed,
                "a signed document must carry \"signed_at\" (RFC 3339)".into(),
            );
        };
        let signed_at = parse_rfc3339(signed_at).or_else(|e| {
            reject(
                Reason::Malformed,
                format!("\"signed_at\" {}: {e}", clip(signed_at)),
            )
        })?;
        let expires_at = match stamps.expires_at {
            None => None,
            Some(text) => Some(parse_rfc3339(text).or_else(|e| {
                reject(
                    Reason::Malformed,
                    format!("\"expires_at\" {}: {e}", clip(text)),
                )
            })?),
        };
        if from_source {
            if let Ok(ahead) = signed_at.duration_since(now) {
                if ahead > self.max_clock_skew {
                    return reject(
                        Reason::NotYetValid,
                        format!(
                            "signed at {}, {}s ahead of this clock (trust.max_clock_skew is {}s)",
                            format_rfc3339(signed_at),
                            ahead.as_secs(),
                            self.max_clock_skew.as_secs()
                        ),
                    );
                }
            }
        }
        if let Some(expires) = expires_at.filter(|e| *e <= now) {
            return reject(
                Reason::Expired,
                format!("the signature expired at {}", format_rfc3339(expires)),
            );
        }
        if let (true, Some(max)) = (from_source, self.max_signature_age) {
            let age = now.duration_since(signed_at).unwrap_or_default();
            if age > max {
                return reject(
                    Reason::Expired,
                    format!(
                        "signed {}s ago, longer than max_signature_age ({}s)",
                        age.as_secs(),
                        max.as_secs()
                    ),
                );
            }
        }
        Ok(Verified {
            keyids,
            signed_at,
            expires_at,
        })
    }

    /// Both steps: `seal`, whose payload carries `stamps`, as of `now`.
    pub fn check(
        &self,
        seal: &Seal,
        stamps: Stamps<'_>,
        now: SystemTime,
        origin: &Origin,
    ) -> Result<Verified, ValidationError> {
        let keyids = self.verify(seal)?;
        self.stamps(keyids, stamps, now, origin)
    }

    /// The message of a `bad_signature`: the key ids tried, whether a
    /// signature named one, what a signature covers, and the encoding
    /// mistake when one of the usual ones explains it.
    fn why_bad(&self, seal: &Seal, tried: &[(&PublicKey, &[u8])]) -> String {
        let mut keyids: Vec<&str> = tried.iter().map(|(k, _)| k.keyid.as_str()).collect();
        keyids.dedup();
        let named = seal
            .signatures
            .iter()
            .any(|s| !s.keyid.is_empty() && self.keys.iter().any(|k| k.keyid == s.keyid));
        let matched = if named {
            "a signature names that key id, and it does not verify with that key"
        } else {
            "the signatures name no key id, so every trusted key was tried"
        };
        // At most a few: an envelope may carry many signatures, and an
        // attacker's must not cost many times the verification.
        let mistake = tried
            .iter()
            .take(2)
            .find_map(|(key, sig)| key.misencoding(&seal.payload_type, &seal.payload, sig));
        let cause = match mistake {
            Some(mistake) => mistake.to_owned(),
            None => "if the encoding is right, the key is not the one the key id names, or the \
                     payload or its type changed after signing"
                .to_owned(),
        };
        format!(
            "no signature verifies with the trusted keys tried ({}): {matched}. A signature is \
             Ed25519 over DSSE's pre-authentication encoding of the payload type and the decoded \
             payload (\"DSSEv1 <len> <payloadType> <len> <payload>\", lengths in decimal \
             bytes); {cause}",
            keyids.join(", ")
        )
    }

    /// The trusted key ids whose signature verifies, at least one.
    fn signatures(&self, seal: &Seal) -> Result<Vec<String>, ValidationError> {
        if seal.signatures.is_empty() {
            return reject(Reason::Unsigned, "the envelope has no signature".into());
        }
        let mut tried: Vec<(&PublicKey, &[u8])> = Vec::new();
        let mut good: Vec<String> = Vec::new();
        for sig in &seal.signatures {
            // A signature naming no key is tried with every trusted key.
            let candidates = self
                .keys
                .iter()
                .filter(|k| sig.keyid.is_empty() || k.keyid == sig.keyid);
            for key in candidates {
                tried.push((key, &sig.sig));
                if key.verifies(&seal.payload_type, &seal.payload, &sig.sig)
                    && !good.contains(&key.keyid)
                {
                    good.push(key.keyid.clone());
                }
            }
        }
        if !good.is_empty() {
            return Ok(good);
        }
        if !tried.is_empty() {
            return reject(Reason::BadSignature, self.why_bad(seal, &tried));
        }
        let named: Vec<String> = seal
            .signatures
            .iter()
            .take(4)
            .map(|s| clip(&s.keyid))
            .collect();
        reject(
            Reason::UnknownKey,
            format!(
                "signed by {} only; trusted: {}",
                named.join(", "),
                if self.keys.is_empty() {
                    "no key (trust.keys is empty)".to_owned()
                } else {
                    self.keys
                        .iter()
                        .map(|k| k.keyid.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ),
        )
    }
}

fn reject<T>(reason: Reason, message: String) -> Result<T, ValidationError> {
    Err(ValidationError { reason, message })
}

/// Untrusted text for a message: at most 64 characters, quoted and
/// escaped, so it can never end a line or pass for something else.
pub fn clip(text: &str) -> String {
    format!("{:?}", text.chars().take(64).collect::<String>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::envelope::{self, Signature};
    use crate::model::keys::{generate, parse_private};
    use crate::model::timestamp::format_rfc3339;
    use std::time::UNIX_EPOCH;

    const NOW: Duration = Duration::from_secs(1_800_000_000);

    /// A document reloaded from the sidecar's own cache.
    fn cached() -> Origin {
        Origin::Cache(crate::model::origin::CacheRecord::default())
    }

    fn signed(keyid: &str, payload: &[u8]) -> (Seal, PublicKey) {
        let (private, public) = generate(Some(keyid)).unwrap();
        let signer = parse_private(&private).unwrap();
        let sig = signer.sign(PROJECT_TYPE, payload);
        let text = envelope::encode(PROJECT_TYPE, payload, &[sig]);
        (envelope::parse(&text).unwrap(), public)
    }

    /// `bad_signature` names the keys tried, whether a key id matched,
    /// what a signature covers, and the usual encoding mistakes by name.
    #[test]
    fn a_bad_signature_says_which_check_failed() {
        use base64::Engine;
        let (private, public) = generate(Some("cp-1")).unwrap();
        let signer = parse_private(&private).unwrap();
        let payload = br#"{"id":"acme","revision":1}"#;
        let message = |sig: Vec<u8>, keyid: &str| {
            let seal = envelope::parse(&envelope::encode(
                PROJECT_TYPE,
                payload,
                &[Signature {
                    keyid: keyid.into(),
                    sig,
                }],
            ))
            .unwrap();
            let trust = Trust::new(vec![public.clone()], true, None);
            let error = trust.verify(&seal).unwrap_err();
            assert_eq!(error.reason, Reason::BadSignature);
            error.message
        };
        let hex = {
            let mut m = format!(
                "DSSEv1 {:x} {PROJECT_TYPE} {:x} ",
                PROJECT_TYPE.len(),
                payload.len()
            )
            .into_bytes();
            m.extend_from_slice(payload);
            m
        };
        let base64_text = base64::engine::general_purpose::STANDARD.encode(payload);
        for (sig, says) in [
            (signer.sign_bytes(payload), "over the payload alone"),
            (signer.sign_bytes(&hex), "lengths in hex"),
            (
                signer.sign_bytes(&envelope::pae(PROJECT_TYPE, base64_text.as_bytes())),
                "base64 text",
            ),
        ] {
            let text = message(sig, "cp-1");
            assert!(text.contains(says), "{text}");
            assert!(text.contains("tried (cp-1)"), "{text}");
            assert!(text.contains("a signature names that key id"), "{text}");
            assert!(text.contains("pre-authentication encoding"), "{text}");
        }
        // Another key claiming the trusted key id, and no key id at all.
        let (stranger, _) = generate(Some("cp-1")).unwrap();
        let stranger = parse_private(&stranger).unwrap();
        let text = message(stranger.sign(PROJECT_TYPE, payload).sig, "cp-1");
        assert!(
            text.contains("the key is not the one the key id names"),
            "{text}"
        );
        let text = message(stranger.sign(PROJECT_TYPE, payload).sig, "");
        assert!(
            text.contains("name no key id, so every trusted key was tried"),
            "{text}"
        );
    }

    fn at(secs_before_now: u64) -> String {
        format_rfc3339(UNIX_EPOCH + NOW - Duration::from_secs(secs_before_now))
    }

    fn check(
        trust: &Trust,
        seal: &Seal,
        signed_at: &str,
        expires: Option<&str>,
    ) -> Result<Verified, Reason> {
        let stamps = Stamps {
            signed_at: Some(signed_at),
            expires_at: expires,
        };
        trust
            .check(seal, stamps, UNIX_EPOCH + NOW, &Origin::Snapshot)
            .map_err(|e| e.reason)
    }

    #[test]
    fn a_trusted_signature_verifies_and_names_its_key() {
        let (seal, key) = signed("cp-1", b"{}");
        let trust = Trust::new(vec![key], true, None);
        let v = check(&trust, &seal, &at(5), None).unwrap();
        assert_eq!(v.keyids, ["cp-1"]);
    }

    #[test]
    fn each_failure_has_its_reason() {
        let (seal, key) = signed("cp-1", b"{}");
        let (_, other) = signed("cp-2", b"{}");
        let trust = Trust::new(vec![key.clone()], true, Some(Duration::from_secs(60)));
        let untrusted = Trust::new(vec![other.clone()], true, None);
        assert_eq!(
            check(&untrusted, &seal, &at(5), None),
            Err(Reason::UnknownKey)
        );
        assert_eq!(
            check(&Trust::default(), &seal, &at(5), None),
            Err(Reason::UnknownKey)
        );

        let mut unsigned = seal.clone();
        unsigned.signatures.clear();
        assert_eq!(
            check(&trust, &unsigned, &at(5), None),
            Err(Reason::Unsigned)
        );

        let mut changed = seal.clone();
        changed.payload = b"{ }".to_vec();
        assert_eq!(
            check(&trust, &changed, &at(5), None),
            Err(Reason::BadSignature)
        );

        let mut retyped = seal.clone();
        retyped.payload_type = TOMBSTONE_TYPE.into();
        assert_eq!(
            check(&trust, &retyped, &at(5), None),
            Err(Reason::BadSignature)
        );

        // A right key id with another key's signature.
        let mut impostor = seal.clone();
        impostor.signatures = vec![Signature {
            keyid: "cp-1".into(),
            sig: vec![0; 64],
        }];
        assert_eq!(
            check(&trust, &impostor, &at(5), None),
            Err(Reason::BadSignature)
        );

        assert_eq!(check(&trust, &seal, &at(61), None), Err(Reason::Expired));
        assert_eq!(
            check(&trust, &seal, &at(5), Some(&at(1))),
            Err(Reason::Expired)
        );
        let ahead = format_rfc3339(UNIX_EPOCH + NOW + Duration::from_secs(60));
        assert!(check(&trust, &seal, &at(5), Some(&ahead)).is_ok());
        assert_eq!(
            check(&trust, &seal, "yesterday", None),
            Err(Reason::Malformed)
        );
        let no_stamp = trust.check(
            &seal,
            Stamps::default(),
            UNIX_EPOCH + NOW,
            &Origin::Snapshot,
        );
        assert_eq!(no_stamp.unwrap_err().reason, Reason::Malformed);
    }

    #[test]
    fn a_reloaded_document_is_not_aged_out_but_still_expires() {
        let (seal, key) = signed("cp-1", b"{}");
        let trust = Trust::new(vec![key], true, Some(Duration::from_secs(60)));
        let old = at(3600);
        let stamps = Stamps {
            signed_at: Some(&old),
            expires_at: None,
        };
        assert!(trust
            .check(&seal, stamps, UNIX_EPOCH + NOW, &cached())
            .is_ok());
        let expired = at(1);
        let stamps = Stamps {
            signed_at: Some(&old),
            expires_at: Some(&expired),
        };
        assert_eq!(
            trust
                .check(&seal, stamps, UNIX_EPOCH + NOW, &cached())
                .unwrap_err()
                .reason,
            Reason::Expired
        );
    }

    #[test]
    fn one_good_signature_among_several_is_enough() {
        let (mut seal, key) = signed("cp-new", b"{}");
        seal.signatures.insert(
            0,
            Signature {
                keyid: "cp-old".into(),
                sig: vec![1; 64],
            },
        );
        let trust = Trust::new(vec![key], true, None);
        assert_eq!(
            check(&trust, &seal, &at(5), None).unwrap().keyids,
            ["cp-new"]
        );
    }

    #[test]
    fn a_signature_without_keyid_is_tried_with_every_trusted_key() {
        let (mut seal, key) = signed("cp-1", b"{}");
        let (_, other) = signed("cp-2", b"{}");
        seal.signatures[0].keyid.clear();
        let trust = Trust::new(vec![other.clone(), key], true, None);
        assert_eq!(check(&trust, &seal, &at(5), None).unwrap().keyids, ["cp-1"]);
        let untrusted = Trust::new(vec![other], true, None);
        assert_eq!(
            check(&untrusted, &seal, &at(5), None),
            Err(Reason::BadSignature)
        );
        assert_eq!(
            check(&Trust::default(), &seal, &at(5), None),
            Err(Reason::UnknownKey)
        );
    }

    #[test]
    fn a_signature_from_the_future_is_not_yet_valid_beyond_the_skew() {
        let (seal, key) = signed("cp-1", b"{}");
        let trust = Trust::new(vec![key], true, Some(Duration::from_secs(60)));
        let ahead = |secs| format_rfc3339(UNIX_EPOCH + NOW + Duration::from_secs(secs));
        assert!(check(&trust, &seal, &ahead(299), None).is_ok());
        assert_eq!(
            check(&trust, &seal, &ahead(301), None),
            Err(Reason::NotYetValid)
        );
        assert_eq!(
            check(&trust, &seal, &ahead(70 * 365 * 86_400), None),
            Err(Reason::NotYetValid)
        );
        let strict = trust.clone().with_max_clock_skew(Duration::from_secs(1));
        assert_eq!(
            check(&strict, &seal, &ahead(2), None),
            Err(Reason::NotYetValid)
        );
    }

    #[test]
    fn untrusted_key_ids_are_quoted_in_messages() {
        let (mut seal, _) = signed("cp-1", b"{}");
        seal.signatures[0].keyid = "x\nINFO forged line".into();
        let (_, key) = signed("cp-2", b"{}");
        let err = Trust::new(vec![key], true, None)
            .check(
                &seal,
                Stamps::default(),
                UNIX_EPOCH + NOW,
                &Origin::Snapshot,
            )
            .unwrap_err();
        assert!(!err.message.contains('\n'), "{}", err.message);
        assert!(
            err.message.contains(r#""x\nINFO forged line""#),
            "{}",
            err.message
        );
    }

    #[test]
    fn tooling_takes_seals_as_they_are() {
        let (mut seal, _) = signed("cp-1", b"{}");
        seal.payload = b"changed".to_vec();
        let v = check(&Trust::skip_signatures(), &seal, &at(5), None).unwrap();
        assert_eq!(v.keyids, ["cp-1"]);
    }
}
