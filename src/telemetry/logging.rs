//! Log output: `tracing` events to stderr, as text lines or JSON objects
//! (`log.format`), at the configured level (`log.level`; `RUST_LOG` wins).
//! The same events either way: one per applied update, per rejection and
//! per sync problem; never one per resolve at `info`.
//!
//! Log lines carry text an attacker chose (project ids from a Redis
//! stream, key ids, messages quoting documents). No such text can end a
//! line or forge another: every event is escaped as it is written
//! ([`Escaping`]), in either format, so one event is always one line.

use std::io::Write;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::prelude::*;

use crate::config::{LogConfig, LogFormat};

/// Installs the process-wide subscriber (once; later calls do nothing).
pub fn init(log: &LogConfig) {
    let filter = log.filter();
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match log.format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(Escaping::new(std::io::stderr, Style::Text))
                    .with_ansi(false),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_writer(Escaping::new(std::io::stderr, Style::Json)),
            )
            .try_init(),
    };
}

/// How an event's control characters are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `\n`, `\r`, `\t`, `\x1b`, `\u{2028}`: readable, and never a line
    /// break or a terminal escape.
    Text,
    /// JSON string escapes (`\u007f`, `\u2028`): the JSON encoder escapes
    /// the C0 controls itself; these are the ones it leaves raw.
    Json,
}

/// A `MakeWriter` that escapes every control character of an event but
/// the newline ending it. The formatter writes one whole event per
/// `write` call, so the event is escaped as one piece.
#[derive(Debug, Clone, Copy)]
pub struct Escaping<M> {
    inner: M,
    style: Style,
}

impl<M> Escaping<M> {
    pub fn new(inner: M, style: Style) -> Escaping<M> {
        Escaping { inner, style }
    }
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Escaping<M> {
    type Writer = EscapingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        EscapingWriter {
            inner: self.inner.make_writer(),
            style: self.style,
        }
    }
}

/// The writer [`Escaping`] makes.
#[derive(Debug)]
pub struct EscapingWriter<W> {
    inner: W,
    style: Style,
}

impl<W: Write> Write for EscapingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write_all(&escape(buf, self.style))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// `event` with every control character escaped, but its last newline.
pub fn escape(event: &[u8], style: Style) -> Vec<u8> {
    let (body, end): (&[u8], &[u8]) = match event.strip_suffix(b"\n") {
        Some(body) => (body, b"\n"),
        None => (event, b""),
    };
    let Ok(text) = std::str::from_utf8(body) else {
        // Not UTF-8 (the formatter only writes UTF-8): escape bytes.
        let mut out: Vec<u8> = body
            .iter()
            .flat_map(|b| std::ascii::escape_default(*b))
            .collect();
        out.extend_from_slice(end);
        return out;
    };
    if !text.chars().any(needs_escape) {
        return event.to_vec();
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if !needs_escape(c) {
            out.push(c);
            continue;
        }
        match (style, c) {
            (Style::Text, '\n') => out.push_str("\\n"),
            (Style::Text, '\r') => out.push_str("\\r"),
            (Style::Text, '\t') => out.push_str("\\t"),
            (Style::Text, c) => out.push_str(&c.escape_unicode().to_string()),
            (Style::Json, c) => out.push_str(&format!("\\u{:04x}", c as u32)),
        }
    }
    let mut out = out.into_bytes();
    out.extend_from_slice(end);
    out
}

/// C0 and C1 controls, DEL, and the Unicode line and paragraph
/// separators (some log pipelines split on them).
fn needs_escape(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forged_line_stays_inside_its_event() {
        let event = b"WARN project=\"a\nINFO forged\" key=\x1b[31m\n";
        let text = escape(event, Style::Text);
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "WARN project=\"a\\nINFO forged\" key=\\u{1b}[31m\n"
        );
        let sep = escape("a\u{2028}b\u{7f}\n".as_bytes(), Style::Json);
        assert_eq!(String::from_utf8(sep).unwrap(), "a\\u2028b\\u007f\n");
        assert_eq!(escape(b"plain line\n", Style::Text), b"plain line\n");
    }

    #[test]
    fn escaped_json_events_still_parse() {
        let event = serde_json::json!({"project": "a\u{2028}\u{7f}\nb"}).to_string() + "\n";
        let escaped = escape(event.as_bytes(), Style::Json);
        assert_eq!(escaped.iter().filter(|b| **b == b'\n').count(), 1);
        let back: serde_json::Value = serde_json::from_slice(&escaped).unwrap();
        assert_eq!(back["project"], "a\u{2028}\u{7f}\nb");
    }
}
