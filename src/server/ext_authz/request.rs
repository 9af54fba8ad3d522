//! Reading a `CheckRequest` for the two things a check needs, the project
//! and the environment, straight from the message bytes.
//!
//! Decoding the whole message with prost builds every header Envoy sends
//! as two `String`s in a `HashMap` (docs/performance.md has what that
//! cost, from `cargo bench --bench instructions`); this walks the same
//! bytes once and borrows the few values it keeps. It accepts and refuses
//! exactly what prost's decoding of [`CheckRequest`](super::CheckRequest)
//! followed by the identity rules accepts and refuses, with the same
//! answers: `tests/common/targets.rs` (`check`, fuzzed and run on every
//! `cargo test`) holds the two equal on arbitrary bytes, with prost as the
//! oracle.
//!
//! What prost refuses, and so this: a truncated or over-long varint, a key
//! with field number 0 or wire type 6 or 7, a length past the end of its
//! message, an unmatched group end, a known field sent with the wrong wire
//! type, invalid UTF-8 in a known string field, and nesting deeper than
//! prost's recursion limit. Fields it does not know are skipped after
//! their framing is checked, as prost skips them. A message field sent
//! twice is merged (its entries accumulate), a string field sent twice
//! keeps the last value, and a map keeps the last value of a key.

use std::borrow::Cow;

use http::HeaderName;

/// The route's `context_extensions` and the configured headers, as sent.
pub type Identity<'a> = (Option<Cow<'a, str>>, Option<Cow<'a, str>>);

/// Why the bytes are not a `CheckRequest` (the RPC fails with
/// `INVALID_ARGUMENT` and this text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

/// prost's recursion limit: a message nested deeper is refused.
const RECURSION_LIMIT: u32 = 100;

/// The project and environment a check asks about: the route's
/// `context_extensions` first, then the configured request headers. The
/// outer error is a message that cannot be decoded; the inner one a
/// header sent more than once (Envoy joins repeats with `,` in `headers`
/// and lists them apart in `header_map`), which the check denies.
pub fn identity<'a>(
    message: &'a [u8],
    project_header: &HeaderName,
    environment_header: &HeaderName,
) -> Result<Result<Identity<'a>, String>, Malformed> {
    let mut seen = Seen {
        names: [project_header.as_str(), environment_header.as_str()],
        extensions: [None, None],
        headers: [Found::None, Found::None],
    };
    let mut reader = Reader::new(message);
    while let Some((field, value)) = reader.field()? {
        match (field, value) {
            (1, Value::Bytes(attributes)) => seen.attribute_context(attributes)?,
            (1, _) => return Err(WRONG_WIRE_TYPE),
            _ => {}
        }
    }
    let mut pick = |i: usize| -> Result<Option<Cow<'a, str>>, String> {
        if let Some(extension) = seen.extensions[i] {
            return Ok(Some(Cow::Borrowed(extension)));
        }
        match std::mem::replace(&mut seen.headers[i], Found::None) {
            Found::None => Ok(None),
            Found::One { value, .. } if !value.contains(',') => Ok(Some(value)),
            _ => Err(format!("header {} is repeated", seen.names[i])),
        }
    };
    Ok(pick(0).and_then(|project| Ok((project, pick(1)?))))
}

const WRONG_WIRE_TYPE: Malformed = Malformed("a field has the wrong wire type");

/// What the walk keeps: index 0 is the project, 1 the environment.
struct Seen<'a, 'n> {
    names: [&'n str; 2],
    extensions: [Option<&'a str>; 2],
    headers: [Found<'a>; 2],
}

/// The values of one configured header met so far.
enum Found<'a> {
    None,
    /// `key` is set when the value came from the `headers` map, whose
    /// later entry for the same key replaces an earlier one.
    One {
        key: Option<&'a str>,
        value: Cow<'a, str>,
    },
    Many,
}

impl<'a> Seen<'a, '_> {
    /// `AttributeContext`: request = 4, context_extensions = 10.
    fn attribute_context(&mut self, mut reader: Reader<'a>) -> Result<(), Malformed> {
        while let Some((field, value)) = reader.field()? {
            match (field, value) {
                (4, Value::Bytes(request)) => self.attribute_request(request)?,
                (10, Value::Bytes(entry)) => {
                    let (key, value) = map_entry(entry)?;
                    match key {
                        "project" => self.extensions[0] = Some(value),
                        "environment" => self.extensions[1] = Some(value),
                        _ => {}
                    }
                }
                (4 | 10, _) => return Err(WRONG_WIRE_TYPE),
                _ => {}
            }
        }
        Ok(())
    }

    /// `AttributeContext.Request`: http = 2.
    fn attribute_request(&mut self, mut reader: Reader<'a>) -> Result<(), Malformed> {
        while let Some((field, value)) = reader.field()? {
            match (field, value) {
                (2, Value::Bytes(http)) => self.http_request(http)?,
                (2, _) => return Err(WRONG_WIRE_TYPE),
                _ => {}
            }
        }
        Ok(())
    }

    /// `AttributeContext.HttpRequest`: method = 2, headers = 3, path = 4,
    /// header_map = 13.
    fn http_request(&mut self, mut reader: Reader<'a>) -> Result<(), Malformed> {
        while let Some((field, value)) = reader.field()? {
            match (field, value) {
                (2 | 4, Value::Bytes(text)) => {
                    utf8(text.buf)?;
                }
                (3, Value::Bytes(entry)) => {
                    let (key, value) = map_entry(entry)?;
                    self.header(key, Cow::Borrowed(value), true);
                }
                (13, Value::Bytes(map)) => self.header_map(map)?,
                (2 | 3 | 4 | 13, _) => return Err(WRONG_WIRE_TYPE),
                _ => {}
            }
        }
        Ok(())
    }

    /// `HeaderMap`: headers = 1, each a `HeaderValue` (key = 1, value = 2,
    /// raw_value = 3; the raw value wins when it is not empty).
    fn header_map(&mut self, mut reader: Reader<'a>) -> Result<(), Malformed> {
        while let Some((field, value)) = reader.field()? {
            match (field, value) {
                (1, Value::Bytes(header)) => {
                    let (mut key, mut text, mut raw) = ("", "", &[][..]);
                    let mut fields = header;
                    while let Some((field, value)) = fields.field()? {
                        match (field, value) {
                            (1, Value::Bytes(b)) => key = utf8(b.buf)?,
                            (2, Value::Bytes(b)) => text = utf8(b.buf)?,
                            (3, Value::Bytes(b)) => raw = b.buf,
                            (1..=3, _) => return Err(WRONG_WIRE_TYPE),
                            _ => {}
                        }
                    }
                    let value = if raw.is_empty() {
                        Cow::Borrowed(text)
                    } else {
                        String::from_utf8_lossy(raw)
                    };
                    self.header(key, value, false);
                }
                (1, _) => return Err(WRONG_WIRE_TYPE),
                _ => {}
            }
        }
        Ok(())
    }

    /// One header met in either encoding.
    fn header(&mut self, key: &'a str, value: Cow<'a, str>, from_map: bool) {
        let map_key = from_map.then_some(key);
        // Both configured names may be the same header: check each.
        for (name, found) in self.names.iter().zip(&mut self.headers) {
            if !key.eq_ignore_ascii_case(name) {
                continue;
            }
            *found = match found {
                Found::None => Found::One {
                    key: map_key,
                    value: value.clone(),
                },
                // The same key again in the map: the later entry replaces it.
                Found::One {
                    key: Some(seen), ..
                } if map_key == Some(*seen) => Found::One {
                    key: map_key,
                    value: value.clone(),
                },
                _ => Found::Many,
            };
        }
    }
}

/// A `map<string, string>` entry: key = 1, value = 2, both defaulting to
/// empty.
fn map_entry(mut reader: Reader<'_>) -> Result<(&str, &str), Malformed> {
    let (mut key, mut value) = ("", "");
    while let Some((field, v)) = reader.field()? {
        match (field, v) {
            (1, Value::Bytes(b)) => key = utf8(b.buf)?,
            (2, Value::Bytes(b)) => value = utf8(b.buf)?,
            (1 | 2, _) => return Err(WRONG_WIRE_TYPE),
            _ => {}
        }
    }
    Ok((key, value))
}

fn utf8(bytes: &[u8]) -> Result<&str, Malformed> {
    std::str::from_utf8(bytes).map_err(|_| Malformed("a string field is not valid UTF-8"))
}

/// One field's value, as far as the walk needs it.
enum Value<'a> {
    Scalar,
    Bytes(Reader<'a>),
}

/// A cursor over one message's fields.
#[derive(Clone, Copy)]
struct Reader<'a> {
    buf: &'a [u8],
    /// How deeply this message is nested (prost counts the same way).
    depth: u32,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, depth: 0 }
    }

    /// The next field of this message, `None` at its end; a
    /// length-delimited value comes as a reader one level deeper.
    fn field(&mut self) -> Result<Option<(u32, Value<'a>)>, Malformed> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let (number, wire_type) = self.key()?;
        let value = match wire_type {
            0 => {
                self.varint()?;
                Value::Scalar
            }
            1 => self.take(8).map(|_| Value::Scalar)?,
            2 => {
                let len = self.varint()?;
                let len = usize::try_from(len).map_err(|_| UNDERFLOW)?;
                Value::Bytes(Reader {
                    buf: self.take(len)?,
                    depth: self.depth + 1,
                })
            }
            3 => {
                // prost skips a group's fields one level deeper each.
                self.skip_group(number, RECURSION_LIMIT - self.depth - 1)?;
                Value::Scalar
            }
            4 => return Err(Malformed("a group ends that was not started")),
            5 => self.take(4).map(|_| Value::Scalar)?,
            _ => return Err(Malformed("a field has an unknown wire type")),
        };
        Ok(Some((number, value)))
    }

    fn key(&mut self) -> Result<(u32, u8), Malformed> {
        let key = self.varint()?;
        let key = u32::try_from(key).map_err(|_| Malformed("a field key is too large"))?;
        let (number, wire_type) = (key >> 3, (key & 7) as u8);
        if number == 0 {
            return Err(Malformed("a field number is 0"));
        }
        Ok((number, wire_type))
    }

    /// Skips a group's fields up to its end (wire type 4, same number).
    /// `budget` is what is left of prost's recursion limit for the fields
    /// inside: at 0 any field but the end is refused.
    fn skip_group(&mut self, number: u32, budget: u32) -> Result<(), Malformed> {
        loop {
            if self.buf.is_empty() {
                return Err(UNDERFLOW);
            }
            let (inner, wire_type) = self.key()?;
            if wire_type == 4 {
                if inner == number {
                    return Ok(());
                }
                return Err(Malformed("a group ends that was not started"));
            }
            if budget == 0 {
                return Err(Malformed("the message is nested too deeply"));
            }
            match wire_type {
                0 => {
                    self.varint()?;
                }
                1 => {
                    self.take(8)?;
                }
                2 => {
                    let len = usize::try_from(self.varint()?).map_err(|_| UNDERFLOW)?;
                    self.take(len)?;
                }
                3 => self.skip_group(inner, budget - 1)?,
                5 => {
                    self.take(4)?;
                }
                _ => return Err(Malformed("a field has an unknown wire type")),
            }
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if n > self.buf.len() {
            return Err(UNDERFLOW);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// A base-128 varint of at most ten bytes, the tenth at most 1.
    fn varint(&mut self) -> Result<u64, Malformed> {
        let mut value = 0u64;
        for (i, &byte) in self.buf.iter().enumerate().take(10) {
            if i == 9 && byte > 1 {
                break;
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                self.buf = &self.buf[i + 1..];
                return Ok(value);
            }
        }
        Err(Malformed("a varint is invalid"))
    }
}

const UNDERFLOW: Malformed = Malformed("a length runs past the end of the message");
