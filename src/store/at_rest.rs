//! A project's accepted document at rest: the text the cache writes,
//! `publish` reads back and scheduled changes re-validate, kept
//! LZ4-compressed.
//!
//! Resolving never reads it (the answers are rendered), so it only has
//! to be small while it waits: about half of what a project held in
//! memory was this text. LZ4 (`lz4_flex`, pure Rust) keeps a generated
//! 1.85 KB document in about 0.76 KB, compressing in a few microseconds
//! and decompressing in under one; the writer pays the compression once
//! per accepted revision, off the request threads, and the cache writer
//! the decompression (see docs/performance.md for the figures). With
//! these features the crate brings no dependency of its own and adds
//! under a second to a clean build on two cores.
//!
//! A signed envelope is kept as its parts ([`AtRest::envelope`]): the
//! text around the payload, then the payload decoded. Base64 hides the
//! repetition LZ4 finds in a document, so a payload compressed as the
//! document it is takes about half the space; reading it back encodes
//! the payload again and gives the envelope byte for byte as received.
//!
//! ```text
//! plain:    u32 text length                   LZ4 block of the text
//! envelope: u32 text length | bit 31, u32 where the payload's base64
//!           starts, u32 its length, u32 the payload's length,
//!           LZ4 block of (text before ++ text after ++ payload)
//! ```

use std::cell::RefCell;
use std::ops::Range;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// The text, compressed, in one allocation of exactly its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AtRest(Box<[u8]>);

/// The text could not be read back (a bug, never input: this type wrote
/// what it reads).
#[derive(Debug, thiserror::Error)]
pub enum AtRestError {
    #[error("the stored text does not decompress: {0}")]
    Decompress(#[from] lz4_flex::block::DecompressError),
    #[error("the stored text has lost its length")]
    Truncated,
    #[error("the stored text decompresses to {got} bytes, not the {kept} it had")]
    Length { kept: usize, got: usize },
    #[error("the stored text is not UTF-8: {0}")]
    Utf8(#[from] std::string::FromUtf8Error),
}

/// Bit 31 of the length word: an envelope kept as its parts.
const ENVELOPE: u32 = 1 << 31;

/// The most an LZ4 block expands: a match of length 255·n + 19 takes
/// n + 3 bytes.
const MAX_RATIO: usize = 255;

thread_local! {
    /// The compressor's output buffer, reused: each kept text is then
    /// one exact-size allocation, and nothing is freed beside it.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// An envelope's parts laid end to end before compression, reused.
    static PARTS: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl AtRest {
    pub fn new(text: &str) -> AtRest {
        AtRest::of_bytes(text.as_bytes())
    }

    /// [`AtRest::new`] of text as bytes (read back as UTF-8 by
    /// [`AtRest::text`], which checks it).
    pub fn of_bytes(text: &[u8]) -> AtRest {
        // Documents are bounded far below 2 GiB; a longer text keeps a
        // length it does not have, and reads back as a length error, never
        // as another text or as an envelope.
        let len = u32::try_from(text.len()).map_or(ENVELOPE - 1, |l| l.min(ENVELOPE - 1));
        AtRest::compressed(&[len], text)
    }

    /// A signed envelope's `text`, which spells its payload at `span` as
    /// `payload` encoded, kept as its parts (see the module). An envelope
    /// that does not spell it as standard padded base64 is kept as text.
    pub fn envelope(text: &str, span: Range<usize>, payload: &[u8]) -> AtRest {
        let encoded = STANDARD.encode(payload);
        if text.len() >= ENVELOPE as usize || text.get(span.clone()) != Some(encoded.as_str()) {
            return AtRest::new(text);
        }
        let at = span.start;
        let (before, after) = (&text[..at], &text[span.end..]);
        PARTS.with_borrow_mut(|packed| {
            packed.clear();
            packed.extend_from_slice(before.as_bytes());
            packed.extend_from_slice(after.as_bytes());
            packed.extend_from_slice(payload);
            let header = [
                text.len() as u32 | ENVELOPE,
                at as u32,
                encoded.len() as u32,
                payload.len() as u32,
            ];
            AtRest::compressed(&header, packed)
        })
    }

    /// `header` then `bytes` as one LZ4 block, in one exact-size
    /// allocation.
    fn compressed(header: &[u32], bytes: &[u8]) -> AtRest {
        SCRATCH.with_borrow_mut(|scratch| {
            // Grown, never cleared: compression writes before it reads.
            let needed = lz4_flex::block::get_maximum_output_size(bytes.len());
            if scratch.len() < needed {
                scratch.resize(needed, 0);
            }
            // The output is sized for the worst case: this cannot fail.
            let n = lz4_flex::block::compress_into(bytes, &mut scratch[..needed]).unwrap_or(0);
            let mut kept = Vec::with_capacity(4 * header.len() + n);
            for word in header {
                kept.extend_from_slice(&word.to_le_bytes());
            }
            kept.extend_from_slice(&scratch[..n]);
            AtRest(kept.into_boxed_slice())
        })
    }

    /// The text as it was given.
    pub fn text(&self) -> Result<String, AtRestError> {
        let Some((len, blocks)) = self.0.split_first_chunk::<4>() else {
            return Err(AtRestError::Truncated);
        };
        let len = u32::from_le_bytes(*len);
        if len & ENVELOPE != 0 {
            return envelope_text((len & !ENVELOPE) as usize, blocks);
        }
        Ok(String::from_utf8(decompressed(len as usize, blocks)?)?)
    }

    /// The compressed size in bytes.
    pub fn compressed_len(&self) -> usize {
        self.0.len()
    }

    /// The stored bytes as they are (length and LZ4 block), for the
    /// cache to keep without decompressing.
    pub fn stored(&self) -> &[u8] {
        &self.0
    }

    /// Bytes [`stored`](Self::stored) gave out, taken back unchecked:
    /// [`text`](Self::text) finds out if they are not what they were.
    pub fn from_stored(bytes: Box<[u8]>) -> AtRest {
        AtRest(bytes)
    }
}

/// `kept` bytes decompressed from `blocks`.
fn decompressed(kept: usize, blocks: &[u8]) -> Result<Vec<u8>, AtRestError> {
    // An LZ4 block expands at most about 255 times: a length beyond
    // that is not what was stored (bytes kept on disk and read back,
    // [`AtRest::from_stored`]), and is not allocated.
    if kept > blocks.len().saturating_mul(MAX_RATIO).saturating_add(16) {
        return Err(AtRestError::Length { kept, got: 0 });
    }
    let bytes = lz4_flex::block::decompress(blocks, kept)?;
    if bytes.len() != kept {
        return Err(AtRestError::Length {
            kept,
            got: bytes.len(),
        });
    }
    Ok(bytes)
}

/// An envelope of `len` bytes put back together from its parts.
fn envelope_text(len: usize, rest: &[u8]) -> Result<String, AtRestError> {
    let mut words = rest
        .chunks_exact(4)
        .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
    let (Some(at), Some(encoded), Some(payload)) = (words.next(), words.next(), words.next())
    else {
        return Err(AtRestError::Truncated);
    };
    let (at, encoded, payload) = (at as usize, encoded as usize, payload as usize);
    // The text around the payload, which `at` must fall within.
    let around = len
        .checked_sub(encoded)
        .filter(|around| at <= *around)
        .ok_or(AtRestError::Length { kept: len, got: 0 })?;
    let packed = decompressed(around + payload, &rest[12..])?;
    let (text, payload) = packed.split_at(around);
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&text[..at]);
    out.extend_from_slice(STANDARD.encode(payload).as_bytes());
    out.extend_from_slice(&text[at..]);
    if out.len() != len {
        return Err(AtRestError::Length {
            kept: len,
            got: out.len(),
        });
    }
    Ok(String::from_utf8(out)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_length_no_block_could_hold_is_refused_unallocated() {
        let mut kept = AtRest::new("x").stored().to_vec();
        kept[..4].copy_from_slice(&(u32::MAX >> 1).to_le_bytes());
        assert!(matches!(
            AtRest::from_stored(kept.into()).text(),
            Err(AtRestError::Length { got: 0, .. })
        ));
        // The most a block can expand to still reads.
        let zeros = "0".repeat(100_000);
        assert_eq!(AtRest::new(&zeros).text().unwrap(), zeros);
    }

    #[test]
    fn gives_back_what_it_was_given() {
        for text in [
            String::new(),
            "x".into(),
            r#"{"id":"acme","revision":1}"#.into(),
            "é€😀".repeat(300),
            "prod staging canary ".repeat(200),
        ] {
            let kept = AtRest::new(&text);
            assert_eq!(kept.text().unwrap(), text);
        }
    }

    #[test]
    fn a_repetitive_document_is_kept_smaller() {
        let text = r#"{"id":"e","slug":"prod","pointers":{"prompts":{"a":"v1"}}},"#.repeat(30);
        let kept = AtRest::new(&text);
        assert!(
            kept.compressed_len() * 3 < text.len(),
            "{}",
            kept.compressed_len()
        );
    }

    #[test]
    fn equal_texts_compare_equal_and_different_ones_do_not() {
        assert_eq!(AtRest::new("abc abc abc"), AtRest::new("abc abc abc"));
        assert_ne!(AtRest::new("abc abc abc"), AtRest::new("abc abc abd"));
    }

    /// An envelope whose payload is spelt `encoded`, text around it.
    fn envelope_with(encoded: &str) -> String {
        format!(
            r#"{{"payloadType":"application/vnd.env-sidecar.project+json", "payload" : "{encoded}","signatures":[{{"keyid":"cp-2026","sig":"{}"}}]}}"#,
            STANDARD.encode([7u8; 64])
        )
    }

    /// `text` kept as the store keeps a signed document.
    fn kept_envelope(text: &str) -> AtRest {
        let (span, payload) = crate::model::envelope::payload_of(text).unwrap();
        AtRest::envelope(text, span, &payload)
    }

    fn document() -> String {
        r#"{"id":"e","slug":"prod","pointers":{"prompts":{"a":"v1"}}},"#.repeat(30)
    }

    #[test]
    fn an_envelope_is_given_back_byte_for_byte_and_kept_smaller_than_its_text() {
        let payload = document();
        let text = envelope_with(&STANDARD.encode(&payload));
        let kept = kept_envelope(&text);
        assert_eq!(kept.text().unwrap(), text);
        let as_text = AtRest::new(&text);
        assert!(
            kept.compressed_len() * 3 < as_text.compressed_len() * 2,
            "{} against {}",
            kept.compressed_len(),
            as_text.compressed_len()
        );
        // Kept from disk and read back, the same.
        let back = AtRest::from_stored(kept.stored().into());
        assert_eq!(back.text().unwrap(), text);
    }

    #[test]
    fn an_envelope_spelling_its_payload_otherwise_is_kept_as_text() {
        use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE};
        let payload = b"{\"id\":\"a\"}??>>".repeat(20);
        for encoded in [STANDARD_NO_PAD.encode(&payload), URL_SAFE.encode(&payload)] {
            let text = envelope_with(&encoded);
            let kept = kept_envelope(&text);
            assert_eq!(kept, AtRest::new(&text), "{encoded}");
            assert_eq!(kept.text().unwrap(), text);
        }
    }

    #[test]
    fn a_damaged_envelope_is_an_error_not_a_panic() {
        let payload = document();
        let text = envelope_with(&STANDARD.encode(&payload));
        let good = kept_envelope(&text).stored().to_vec();
        for cut in 0..16 {
            let cut = AtRest::from_stored(good[..cut].into());
            assert!(cut.text().is_err());
        }
        for word in 0..4 {
            for value in [0, 1, u32::MAX >> 1, u32::MAX] {
                let mut bad = good.clone();
                bad[word * 4..word * 4 + 4].copy_from_slice(&value.to_le_bytes());
                // Either an error or, by chance, some text: never a panic,
                // never more than the blocks can hold.
                let _ = AtRest::from_stored(bad.into()).text();
            }
        }
        let mut longer = good.clone();
        longer[4..8].copy_from_slice(&(text.len() as u32).to_le_bytes());
        assert!(AtRest::from_stored(longer.into()).text().is_err());
    }

    #[test]
    fn a_damaged_text_is_an_error_not_a_panic() {
        let mut kept = AtRest::new(&"abc ".repeat(100));
        // Claim a longer text than the blocks hold.
        kept.0[0] = 0xff;
        assert!(kept.text().is_err());
        let truncated = AtRest(kept.0[..3].into());
        assert!(truncated.text().is_err());
    }
}
