//! The digest of an element's bytes exactly as its source filed them (a
//! Redis hash value): what lets a full reload skip, without reading it,
//! every element that is byte for byte the one a served project was
//! accepted from. At 100 000 projects a reload of an unchanged source
//! then parses nothing and holds no parsed snapshot beside the served
//! one.
//!
//! SHA-256 (truncated to 128 bits), not a fast hash: whoever can write to
//! the source must not be able to make other bytes pass for what is
//! served. (Even then they would only keep what is served, which a
//! trusted key or the control plane put there.)

/// SHA-256 of an element's bytes, truncated to 128 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RawDigest([u8; 16]);

impl RawDigest {
    pub fn of(bytes: &[u8]) -> RawDigest {
        let sha = ring::digest::digest(&ring::digest::SHA256, bytes);
        let mut out = [0; 16];
        out.copy_from_slice(&sha.as_ref()[..16]);
        RawDigest(out)
    }

    /// The digest as kept (the cache file).
    pub fn to_bytes(self) -> [u8; 16] {
        self.0
    }

    /// A digest as kept by [`to_bytes`](Self::to_bytes).
    pub fn from_bytes(bytes: [u8; 16]) -> RawDigest {
        RawDigest(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_byte_apart_is_another_digest() {
        let a = RawDigest::of(br#"{"id":"a","revision":1}"#);
        assert_eq!(a, RawDigest::of(br#"{"id":"a","revision":1}"#));
        assert_ne!(a, RawDigest::of(br#"{"id":"a","revision":2}"#));
        assert_ne!(a, RawDigest::of(br#"{"id":"a","revision":1} "#));
    }
}
