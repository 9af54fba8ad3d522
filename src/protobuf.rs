//! Protobuf's wire format, written by hand for the one message family the
//! sidecar sends: Envoy's ext_authz `CheckResponse` and the
//! `google.protobuf.Struct` of its dynamic metadata. Everything is
//! written exactly as prost writes it (fields numbered 1 to 15, so
//! one-byte keys; proto3 defaults, empty strings and zero, left out), so
//! a message is measured first and then written into a buffer of its
//! exact size, without building the message as values.
//!
//! Layer 0: imports nothing of the crate. The store uses it to render a
//! project's pointers struct once (`store::pointers_struct`); the gRPC
//! data plane to frame the reply (`server::ext_authz`).

use bytes::BufMut;

pub fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

pub fn put_varint(out: &mut impl BufMut, mut v: u64) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

/// A length-delimited field holding `len` bytes: key, length, bytes.
pub fn message_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

/// A string field; an empty one is not written.
pub fn string_len(s: &[u8]) -> usize {
    if s.is_empty() {
        0
    } else {
        message_len(s.len())
    }
}

/// An integer field; zero is not written.
pub fn varint_field_len(v: u64) -> usize {
    if v == 0 {
        0
    } else {
        1 + varint_len(v)
    }
}

/// The key and length of a length-delimited field; its `len` bytes follow.
pub fn put_message(out: &mut impl BufMut, tag: u8, len: usize) {
    out.put_u8(tag << 3 | 2);
    put_varint(out, len as u64);
}

pub fn put_string(out: &mut impl BufMut, tag: u8, s: &[u8]) {
    if !s.is_empty() {
        put_message(out, tag, s.len());
        out.put_slice(s);
    }
}

pub fn put_varint_field(out: &mut impl BufMut, tag: u8, v: u64) {
    if v != 0 {
        out.put_u8(tag << 3);
        put_varint(out, v);
    }
}

/// Which member of a `google.protobuf.Value`'s `kind` oneof an entry
/// holds (the two the sidecar writes), by field number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// `string_value`: the bytes are the string.
    String = 3,
    /// `struct_value`: the bytes are the inner `Struct`'s fields.
    Struct = 5,
}

/// The length of one `Struct.fields` map entry: the key (1) and the
/// `Value` (2), whose oneof member holds `len` bytes. A oneof member is
/// written even when empty.
pub fn struct_entry_len(key: &[u8], len: usize) -> usize {
    string_len(key) + message_len(message_len(len))
}

/// Writes a `Struct.fields` entry (field 1 of the `Struct`) up to its
/// value's content: the caller writes the `len` bytes next.
pub fn put_struct_entry_head(out: &mut impl BufMut, key: &[u8], kind: ValueKind, len: usize) {
    put_message(out, 1, struct_entry_len(key, len));
    put_string(out, 1, key);
    put_message(out, 2, message_len(len));
    put_message(out, kind as u8, len);
}

/// Writes a whole `Struct.fields` entry whose value is a string.
pub fn put_string_entry(out: &mut impl BufMut, key: &[u8], value: &[u8]) {
    put_struct_entry_head(out, key, ValueKind::String, value.len());
    out.put_slice(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_take_seven_bits_a_byte() {
        for (v, bytes) in [
            (0u64, &[0x00][..]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (300, &[0xac, 0x02]),
            (
                u64::MAX,
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out, bytes, "{v}");
            assert_eq!(varint_len(v), bytes.len(), "{v}");
        }
    }

    #[test]
    fn a_string_entry_is_what_its_length_says() {
        for (key, value) in [
            (&b"k"[..], &b""[..]),
            (b"", b"v"),
            (&[b'x'; 200], &[b'y'; 300]),
        ] {
            let mut out = Vec::new();
            put_string_entry(&mut out, key, value);
            assert_eq!(out.len(), message_len(struct_entry_len(key, value.len())));
        }
    }
}
