//! The HTTP/1.1 hot path: a plain `GET` or `HEAD` of a hot route (resolve,
//! forward-auth) is read in place and answered straight into the
//! connection's write buffer, without hyper's per-request machinery
//! (header map, request and response objects, body polling, service call).
//!
//! It takes only what it fully understands: a complete request head,
//! `GET` or `HEAD`, an origin-form target of plain URI characters, no
//! body (`Content-Length`, `Transfer-Encoding`), no `Expect`, no
//! `Upgrade`, at most one `Connection: close` or `keep-alive` (HTTP/1.1;
//! an HTTP/1.0 request that keeps the connection open goes to hyper), a
//! route the plane calls hot. At the first request that is anything else, the
//! connection goes to hyper with every byte not yet answered, so hyper
//! answers it, and everything after it, as it always did. Where both can
//! answer, they answer alike: the same status line, headers in the same
//! order (the plane's, then `connection`, `content-length`, `date`), the
//! same body and the same connection fate (`tests/it/wire_http1.rs`
//! pins the wire; the `http1` fuzz target compares the two on arbitrary
//! bytes, `date` aside).
//!
//! Limits hold as under hyper: the header-read timeout runs from when a
//! request is awaited; a head that outgrows the read buffer, or a request
//! of more than hyper's 100 headers, goes to hyper, which refuses it;
//! shutdown answers what has arrived with `connection: close` and closes.

use std::mem::MaybeUninit;
use std::time::{Duration, SystemTime};

use bytes::{Buf, Bytes, BytesMut};
use http::{Response, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

use super::Body;

/// Most headers a request may carry (hyper's default).
const MAX_HEADERS: usize = 100;
/// Longest request target hyper takes.
const MAX_TARGET: usize = 65534;
/// Free room kept in the read buffer before each read.
const READ_ROOM: usize = 4096;
/// Most of the write buffer's capacity kept between reads.
const OUT_KEPT: usize = 16 * 1024;

/// The methods the hot path answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
}

/// The HTTP/1 versions, which decide the status line and the default
/// connection fate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    Http10,
    Http11,
}

/// A request head as read, borrowed from the connection's buffer.
#[derive(Debug)]
pub struct Request<'a> {
    pub method: Method,
    /// The target's path, not decoded.
    pub path: &'a str,
    /// The target's query, not decoded (`""` when there is none).
    pub query: &'a str,
    pub headers: &'a [httparse::Header<'a>],
}

/// Whether a plane answered a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    Answered,
    /// Not a hot route: hyper answers it (nothing was written).
    NotHot,
}

/// A plane's hot routes.
pub trait HotRoutes: Send + Sync {
    /// Answers `request` through `out` exactly once, or says it is not
    /// hot and writes nothing.
    fn answer(&self, request: &Request<'_>, out: &mut Out<'_>) -> Taken;
}

/// Where an answer is written, and how: the request's version, whether
/// the connection stays open, whether the body is left out (`HEAD`).
pub struct Out<'b> {
    buf: &'b mut Vec<u8>,
    version: Version,
    keep_alive: bool,
    head_only: bool,
}

impl Out<'_> {
    /// Writes one whole answer: `headers` in order, then `connection`
    /// when the fate needs saying, `content-length`, `date`, and the body
    /// (left out for `HEAD`, its length still announced).
    pub fn respond<'v>(
        &mut self,
        status: StatusCode,
        headers: impl IntoIterator<Item = (&'v str, &'v [u8])>,
        body: impl IntoIterator<Item = &'v [u8]> + Clone,
    ) {
        let buf = &mut *self.buf;
        match (self.version, status) {
            (Version::Http11, StatusCode::OK) => buf.extend_from_slice(b"HTTP/1.1 200 OK\r\n"),
            (version, status) => {
                buf.extend_from_slice(match version {
                    Version::Http10 => b"HTTP/1.0 ",
                    Version::Http11 => b"HTTP/1.1 ",
                });
                buf.extend_from_slice(status.as_str().as_bytes());
                buf.push(b' ');
                let reason = status.canonical_reason().unwrap_or("<none>");
                buf.extend_from_slice(reason.as_bytes());
                buf.extend_from_slice(b"\r\n");
            }
        }
        for (name, value) in headers {
            buf.extend_from_slice(name.as_bytes());
            buf.extend_from_slice(b": ");
            buf.extend_from_slice(value);
            buf.extend_from_slice(b"\r\n");
        }
        match (self.version, self.keep_alive) {
            (Version::Http11, false) => buf.extend_from_slice(b"connection: close\r\n"),
            (Version::Http10, true) => buf.extend_from_slice(b"connection: keep-alive\r\n"),
            _ => {}
        }
        let length: usize = body.clone().into_iter().map(<[u8]>::len).sum();
        buf.extend_from_slice(b"content-length: ");
        buf.extend_from_slice(itoa::Buffer::new().format(length).as_bytes());
        buf.extend_from_slice(b"\r\ndate: ");
        DATE.with(|date| buf.extend_from_slice(&date.now()));
        buf.extend_from_slice(b"\r\n\r\n");
        if !self.head_only {
            for part in body {
                buf.extend_from_slice(part);
            }
        }
    }

    /// Writes `response`, a whole answer built for hyper (the rare ones:
    /// refusals and errors).
    pub fn respond_with(&mut self, response: &Response<Body>) {
        let headers = response
            .headers()
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_bytes()));
        let Some(parts) = response.body().parts() else {
            debug_assert!(false, "a hot answer with trailers");
            return self.respond(response.status(), headers, []);
        };
        self.respond(response.status(), headers, parts);
    }
}

/// The `date` value, rendered once a second per thread as hyper does.
struct CachedDate {
    second: std::cell::Cell<u64>,
    text: std::cell::Cell<[u8; 29]>,
}

impl CachedDate {
    fn now(&self) -> [u8; 29] {
        let now = SystemTime::now();
        let second = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if second != self.second.get() {
            let mut text = [0u8; 29];
            let rendered = httpdate::fmt_http_date(now);
            let n = rendered.len().min(text.len());
            text[..n].copy_from_slice(&rendered.as_bytes()[..n]);
            self.text.set(text);
            self.second.set(second);
        }
        self.text.get()
    }
}

thread_local! {
    static DATE: CachedDate = const {
        CachedDate {
            second: std::cell::Cell::new(u64::MAX),
            text: std::cell::Cell::new([0; 29]),
        }
    };
}

/// How a connection left the hot path.
pub enum Ended<I> {
    /// Closed: by the client, by its fate, by the timeout or by shutdown.
    Closed,
    /// For hyper: the stream and the bytes read but not answered.
    Handoff(I, Bytes),
}

/// What one pass over the buffer made of its first request.
enum Step {
    /// Answered; `len` bytes consumed.
    Answered { len: usize, keep_alive: bool },
    /// The head is not complete yet.
    Partial,
    /// Not for the hot path.
    Handoff,
}

/// Serves `io` (whose first bytes, `prefix`, were already read) on the
/// hot path until it closes or needs hyper.
pub async fn serve<I: AsyncRead + AsyncWrite + Unpin>(
    mut io: I,
    prefix: Bytes,
    routes: &dyn HotRoutes,
    header_read_timeout: Duration,
    max_head_bytes: usize,
    mut shutdown: watch::Receiver<bool>,
) -> Ended<I> {
    let mut buf = BytesMut::with_capacity(prefix.len().max(8192));
    buf.extend_from_slice(&prefix);
    let mut out = Vec::with_capacity(2048);
    let deadline = tokio::time::sleep(header_read_timeout);
    tokio::pin!(deadline);
    let mut draining = *shutdown.borrow_and_update();
    // One wait for the signal, kept across requests (registered once).
    let stopping = shutdown.changed();
    tokio::pin!(stopping);
    // The buffer's length when the head in it was last found partial.
    let mut partial_len = None;
    loop {
        // An empty buffer holds no partial head (as in hyper): read.
        while !buf.is_empty() {
            let step = match partial_len {
                // As hyper does: a partial head is read again only once
                // its end may have arrived (which also decides when a
                // malformed head is refused).
                Some(len) if !head_may_be_complete(&buf, len) => Step::Partial,
                _ => step(&buf, routes, draining, &mut out),
            };
            match step {
                Step::Answered { len, keep_alive } => {
                    partial_len = None;
                    buf.advance(len);
                    if !keep_alive {
                        let _ = io.write_all(&out).await;
                        let _ = io.shutdown().await;
                        return Ended::Closed;
                    }
                    deadline
                        .as_mut()
                        .reset(Instant::now() + header_read_timeout);
                }
                Step::Partial if buf.len() < max_head_bytes => {
                    partial_len = Some(buf.len());
                    break;
                }
                Step::Partial | Step::Handoff => return handoff(io, buf, &out).await,
            }
        }
        if !out.is_empty() {
            if io.write_all(&out).await.is_err() {
                return Ended::Closed;
            }
            out.clear();
            // A burst of pipelined answers does not stay allocated for
            // the connection's life.
            out.shrink_to(OUT_KEPT);
        }
        if draining && buf.is_empty() {
            let _ = io.shutdown().await;
            return Ended::Closed;
        }
        buf.reserve(READ_ROOM);
        tokio::select! {
            biased;
            read = io.read_buf(&mut buf) => match read {
                // The client is done; a head it cut short is dropped
                // unanswered, as hyper drops it.
                Ok(0) => return Ended::Closed,
                Ok(_) => {}
                Err(_) => return Ended::Closed,
            },
            () = &mut deadline => return Ended::Closed,
            _ = &mut stopping, if !draining => draining = true,
        }
    }
}

/// Sends what was answered, then gives the rest to hyper.
async fn handoff<I: AsyncWrite + Unpin>(mut io: I, buf: BytesMut, out: &[u8]) -> Ended<I> {
    if io.write_all(out).await.is_err() {
        return Ended::Closed;
    }
    Ended::Handoff(io, buf.freeze())
}

/// Whether a head first found partial at `prev_len` bytes may be
/// complete now: hyper's test before it parses again (`\r\n\r\n` or a
/// bare `\n\n` or `\n\r\n` after the old end).
fn head_may_be_complete(buf: &[u8], prev_len: usize) -> bool {
    let bytes = &buf[prev_len.saturating_sub(3)..];
    bytes.iter().enumerate().any(|(i, &b)| {
        let rest = &bytes[i + 1..];
        match b {
            b'\r' => rest.starts_with(b"\n\r\n"),
            b'\n' => rest.starts_with(b"\n") || rest.starts_with(b"\r\n"),
            _ => false,
        }
    })
}

/// Reads the first request in `buf` and, if it is hot, answers it.
fn step(buf: &[u8], routes: &dyn HotRoutes, draining: bool, out: &mut Vec<u8>) -> Step {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut parsed,
        buf,
        &mut slots,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Step::Partial,
        Err(_) => return Step::Handoff,
    };
    let Some(head) = Head::of(&parsed) else {
        return Step::Handoff;
    };
    let keep_alive = head.keep_alive && !draining;
    let mut out = Out {
        buf: out,
        version: head.version,
        keep_alive,
        head_only: head.request.method == Method::Head,
    };
    match routes.answer(&head.request, &mut out) {
        Taken::Answered => Step::Answered { len, keep_alive },
        Taken::NotHot => Step::Handoff,
    }
}

/// A parsed request the hot path may answer, with its connection fate.
struct Head<'a> {
    request: Request<'a>,
    version: Version,
    keep_alive: bool,
}

impl<'a> Head<'a> {
    /// `None` for anything that is not a plain, bodiless `GET` or `HEAD`.
    fn of(parsed: &'a httparse::Request<'a, 'a>) -> Option<Head<'a>> {
        let method = match parsed.method? {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            _ => return None,
        };
        let version = match parsed.version? {
            1 => Version::Http11,
            0 => Version::Http10,
            _ => return None,
        };
        let target = parsed.path?;
        if target.len() > MAX_TARGET
            || !target.starts_with('/')
            || !target.bytes().all(plain_uri_byte)
        {
            return None;
        }
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let mut connection = None;
        for header in parsed.headers.iter() {
            match Framing::of(header.name) {
                Framing::Other => {}
                Framing::Refused => return None,
                Framing::Connection => {
                    let value = header.value;
                    let wants = if value.eq_ignore_ascii_case(b"close") {
                        Connection::Close
                    } else if value.eq_ignore_ascii_case(b"keep-alive") {
                        Connection::KeepAlive
                    } else {
                        return None;
                    };
                    if connection.replace(wants).is_some() {
                        return None;
                    }
                }
            }
        }
        let keep_alive = match (version, connection) {
            (_, Some(Connection::Close)) => false,
            (Version::Http11, _) => true,
            // hyper words its own refusal of a later request on the
            // connection by the version of the one before (HTTP/1.0,
            // no `connection` header), which a hyper taking over
            // mid-connection cannot know: such a connection is hyper's
            // from its first HTTP/1.0 request that stays open.
            (Version::Http10, Some(Connection::KeepAlive)) => return None,
            (Version::Http10, None) => false,
        };
        Some(Head {
            request: Request {
                method,
                path,
                query,
                headers: parsed.headers,
            },
            version,
            keep_alive,
        })
    }
}

/// What a request header means to the hot path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// `Content-Length`, `Transfer-Encoding`, `Expect`, `Upgrade`: hyper's.
    Refused,
    Connection,
    /// Anything else: the plane's to read.
    Other,
}

impl Framing {
    fn of(name: &str) -> Framing {
        // By length first: most headers are ruled out by one comparison.
        let is = |known: &str| name.eq_ignore_ascii_case(known);
        match name.len() {
            6 if is("expect") => Framing::Refused,
            7 if is("upgrade") => Framing::Refused,
            10 if is("connection") => Framing::Connection,
            14 if is("content-length") => Framing::Refused,
            17 if is("transfer-encoding") => Framing::Refused,
            _ => Framing::Other,
        }
    }
}

/// A request's `Connection` header, when it is one the hot path reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Connection {
    Close,
    KeepAlive,
}

/// Bytes a target may hold on the hot path: unreserved and sub-delimiter
/// characters, `%`, `/`, `?`, `:`, `@`. Anything else (a fragment, a
/// quote, a brace) goes to hyper, whose URI parser has the last word.
fn plain_uri_byte(b: u8) -> bool {
    PLAIN_URI[usize::from(b)]
}

/// [`plain_uri_byte`] as a table: one load per byte of every target.
static PLAIN_URI: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let punctuation = b"-._~!$&'()*+,;=%/?:@";
    let mut i = 0;
    while i < punctuation.len() {
        table[punctuation[i] as usize] = true;
        i += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_uri_bytes_are_alphanumerics_and_listed_punctuation() {
        for b in 0..=255u8 {
            let plain = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%/?:@".contains(&b);
            assert_eq!(plain_uri_byte(b), plain, "{b:#x}");
        }
    }

    #[test]
    fn header_names_are_classified_in_any_case() {
        assert_eq!(Framing::of("Content-Length"), Framing::Refused);
        assert_eq!(Framing::of("TRANSFER-ENCODING"), Framing::Refused);
        assert_eq!(Framing::of("expect"), Framing::Refused);
        assert_eq!(Framing::of("Upgrade"), Framing::Refused);
        assert_eq!(Framing::of("Connection"), Framing::Connection);
        for other in ["content-type", "x-project-id", "expects", "host", ""] {
            assert_eq!(Framing::of(other), Framing::Other, "{other}");
        }
    }

    #[test]
    fn a_partial_head_is_read_again_only_once_its_end_may_have_come() {
        assert!(!head_may_be_complete(b"GET / HTTP/1.1\r\nhost: x\r\n", 10));
        assert!(head_may_be_complete(
            b"GET / HTTP/1.1\r\nhost: x\r\n\r\n",
            26
        ));
        assert!(head_may_be_complete(b"GET / HTTP/1.1\n\n", 15));
        assert!(!head_may_be_complete(b"GET / HTTP/1.1\r\n\r\n", 19));
    }

    #[test]
    fn only_plain_bodiless_gets_and_heads_are_hot() {
        let head = |text: &str| {
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut parsed = httparse::Request::new(&mut headers);
            parsed.parse(text.as_bytes()).unwrap();
            let head = Head::of(&parsed);
            head.map(|h| (h.request.path.to_owned(), h.keep_alive))
        };
        let hot = |path: &str, keep_alive| Some((path.to_owned(), keep_alive));
        assert_eq!(head("GET /a?b HTTP/1.1\r\n\r\n"), hot("/a", true));
        assert_eq!(head("HEAD /a HTTP/1.0\r\n\r\n"), hot("/a", false));
        assert_eq!(
            head("GET /a HTTP/1.1\r\nconnection: CLOSE\r\n\r\n"),
            hot("/a", false)
        );
        for cold in [
            "POST /a HTTP/1.1\r\n\r\n",
            "GET http://h/a HTTP/1.1\r\n\r\n",
            "GET /a#f HTTP/1.1\r\n\r\n",
            "GET /a HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            "GET /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /a HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "GET /a HTTP/1.1\r\nUpgrade: h2c\r\n\r\n",
            "GET /a HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\n\r\n",
            "GET /a HTTP/1.1\r\nConnection: close\r\nConnection: close\r\n\r\n",
            "GET /a HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
        ] {
            assert_eq!(head(cold), None, "{cold:?}");
        }
    }
}
