//! The served pointers as the `google.protobuf.Struct` that a gRPC
//! `Check` reply carries in its dynamic metadata (kind → key → version),
//! encoded from the answer's pointers text: one pass to measure, one to
//! write, the bytes exactly as prost writes that struct.
//!
//! Where the encoding happens is the operator's choice
//! ([`PointersStructs`]): on each `Check`, from the text every answer
//! already holds (no memory), or once per accepted revision by the
//! writer ([`Project`](super::Project) keeps the bytes beside the text,
//! about their size again per environment), so a `Check` only copies
//! them. Both go through [`PointersStruct`], so they cannot differ.

use bytes::BufMut;

use super::pointers::{PointerIter, PointerKind};
use crate::protobuf::{self, ValueKind};

/// When a project's pointers structs are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PointersStructs {
    /// On each gRPC `Check`, from the answer's text.
    #[default]
    PerCheck,
    /// By the writer, once per accepted revision and environment.
    Prerendered,
}

/// An answer's pointers text, measured once for its struct encoding:
/// each kind's inner struct length, in the answer's kind order.
#[derive(Debug, Clone)]
pub struct PointersStruct<'a> {
    json: &'a str,
    kinds: [usize; 3],
}

impl<'a> PointersStruct<'a> {
    /// One pass over the answer's pointers text
    /// ([`AnswerRef::pointers_json`](super::AnswerRef::pointers_json)).
    pub fn measure(json: &'a str) -> PointersStruct<'a> {
        let mut kinds = [0; 3];
        for (kind, key, value) in PointerIter::new(json) {
            kinds[kind as usize] +=
                protobuf::message_len(protobuf::struct_entry_len(key.as_bytes(), value.len()));
        }
        PointersStruct { json, kinds }
    }

    /// The length of the struct's fields: one entry per kind.
    pub fn len(&self) -> usize {
        PointerKind::ALL
            .iter()
            .map(|&kind| {
                let inner = self.kinds[kind as usize];
                protobuf::message_len(protobuf::struct_entry_len(kind.as_str().as_bytes(), inner))
            })
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the struct's fields ([`len`](Self::len) bytes): the kinds in
    /// the answer's order (a map's order means nothing on the wire), each
    /// with its entries, in one more pass over the text.
    pub fn put(&self, out: &mut impl BufMut) {
        let mut entries = PointerIter::new(self.json).peekable();
        for kind in PointerKind::ALL {
            let inner = self.kinds[kind as usize];
            protobuf::put_struct_entry_head(
                out,
                kind.as_str().as_bytes(),
                ValueKind::Struct,
                inner,
            );
            while let Some((_, key, value)) = entries.next_if(|(k, _, _)| *k == kind) {
                protobuf::put_string_entry(out, key.as_bytes(), value.as_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_written_is_what_was_measured() {
        for json in [
            r#"{"prompts":{},"routing_rules":{},"providers":{}}"#,
            r#"{"prompts":{"a":"1"},"routing_rules":{"default":"r-1"},"providers":{"openai":"act-9"}}"#,
            r#"{"prompts":{"q\"uote":"x\\y","\u00e9t\u00e9":"1"},"routing_rules":{},"providers":{"\ud83d\ude00":"2"}}"#,
        ] {
            let measured = PointersStruct::measure(json);
            let mut out = Vec::new();
            measured.put(&mut out);
            assert_eq!(out.len(), measured.len(), "{json}");
        }
    }
}
