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

use std::cell::RefCell;

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

/// The most an LZ4 block expands: a match of length 255·n + 19 takes
/// n + 3 bytes.
const MAX_RATIO: usize = 255;

thread_local! {
    /// The compressor's output buffer, reused: each kept text is then
    /// one exact-size allocation, and nothing is freed beside it.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl AtRest {
    pub fn new(text: &str) -> AtRest {
        AtRest::of_bytes(text.as_bytes())
    }

    /// [`AtRest::new`] of text as bytes (read back as UTF-8 by
    /// [`AtRest::text`], which checks it).
    pub fn of_bytes(text: &[u8]) -> AtRest {
        SCRATCH.with_borrow_mut(|scratch| {
            // Grown, never cleared: compression writes before it reads.
            let needed = lz4_flex::block::get_maximum_output_size(text.len());
            if scratch.len() < needed {
                scratch.resize(needed, 0);
            }
            // The output is sized for the worst case: this cannot fail.
            let n = lz4_flex::block::compress_into(text, &mut scratch[..needed]).unwrap_or(0);
            let mut kept = Vec::with_capacity(4 + n);
            // Documents are bounded far below 4 GiB; a longer text would
            // read back as a length error, never as another text.
            kept.extend_from_slice(&(text.len() as u32).to_le_bytes());
            kept.extend_from_slice(&scratch[..n]);
            AtRest(kept.into_boxed_slice())
        })
    }

    /// The text as it was given.
    pub fn text(&self) -> Result<String, AtRestError> {
        let Some((len, blocks)) = self.0.split_first_chunk::<4>() else {
            return Err(AtRestError::Truncated);
        };
        let kept = u32::from_le_bytes(*len) as usize;
        // An LZ4 block expands at most about 255 times: a length beyond
        // that is not what was stored (bytes kept on disk and read back,
        // [`from_stored`](Self::from_stored)), and is not allocated.
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
        Ok(String::from_utf8(bytes)?)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_length_no_block_could_hold_is_refused_unallocated() {
        let mut kept = AtRest::new("x").stored().to_vec();
        kept[..4].copy_from_slice(&u32::MAX.to_le_bytes());
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
