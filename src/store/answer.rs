//! Resolve answers: what a project pre-renders for each way it can be
//! asked, and why a request could not be answered.
//!
//! [`Project`](super::project::Project) builds the parts once per accepted
//! revision; [`Store::resolve_with`](super::Store::resolve_with) lends them.
//! Nothing here formats, parses or allocates per request: an owned
//! [`Answer`] is reference-count bumps.

use bytes::Bytes;
use http::HeaderValue;

/// What kind of answer this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The requested environment exists.
    Exact,
    /// No environment was requested: the gateway fallback serves.
    NotRequested,
    /// The requested environment does not exist: the gateway fallback serves.
    UnknownEnvironment,
}

impl Outcome {
    /// The `outcome` field: `exact` or `fallback`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Exact => "exact",
            Outcome::NotRequested | Outcome::UnknownEnvironment => "fallback",
        }
    }

    /// The answer's `"outcome":…,"reason":…,` fragment.
    pub fn fragment(self) -> &'static [u8] {
        match self {
            Outcome::Exact => br#""outcome":"exact","reason":null,"#,
            Outcome::NotRequested => br#""outcome":"fallback","reason":"not_requested","#,
            Outcome::UnknownEnvironment => {
                br#""outcome":"fallback","reason":"unknown_environment","#
            }
        }
    }
}

/// A pre-rendered resolve answer, lent by the snapshot. The body is three
/// parts sent in order: the project's prefix (`{"project":…,"revision":…,`),
/// the outcome's fixed fragment (`"outcome":…,"reason":…,`) and the serving
/// environment's tail (`"environment":{…},"pointers":{…}}`). The parts are
/// shared by every answer that uses them, so a project holds each byte
/// once and serving one copies nothing.
#[derive(Debug, Clone, Copy)]
pub struct AnswerRef<'a> {
    pub outcome: Outcome,
    pub prefix: &'a Bytes,
    pub tail: &'a Bytes,
    /// `x-resolved-environment`: the slug that serves.
    pub environment: &'a HeaderValue,
    /// `x-snapshot-revision`: the project's accepted revision.
    pub revision: &'a HeaderValue,
    /// `x-resolved-pointers`: the served pointers object as compact JSON,
    /// byte for byte as at the end of the body, printable ASCII only (a
    /// non-ASCII key is `\u`-escaped in both). The HTTP data plane
    /// leaves it out above `server.max_pointers_header_bytes`.
    pub pointers: &'a HeaderValue,
    /// The same pointers as a gRPC `Check`'s metadata struct, when the
    /// writer rendered it ([`PointersStructs::Prerendered`](super::PointersStructs)).
    pub pointers_struct: Option<&'a Bytes>,
}

impl<'a> AnswerRef<'a> {
    /// The slug that serves (`x-resolved-environment`).
    pub fn slug(&self) -> &'a str {
        std::str::from_utf8(self.environment.as_bytes()).unwrap_or_default()
    }

    /// The project's accepted revision, as the digits of
    /// `x-snapshot-revision`.
    pub fn revision_str(&self) -> &'a str {
        std::str::from_utf8(self.revision.as_bytes()).unwrap_or_default()
    }

    /// The served pointers as JSON (`{"prompts":{…},"routing_rules":{…},
    /// "providers":{…}}`), scheduled changes that are due merged in: a
    /// slice of the pre-rendered answer, the text of `x-resolved-pointers`.
    pub fn pointers_json(&self) -> &'a str {
        std::str::from_utf8(self.pointers.as_bytes()).unwrap_or_default()
    }

    /// The pointers' metadata struct: the writer's bytes, or measured
    /// from the text now.
    pub fn pointers_struct(&self) -> StructBytes<'a> {
        match self.pointers_struct {
            Some(bytes) => StructBytes::Rendered(bytes),
            None => StructBytes::Measured(super::pointers_struct::PointersStruct::measure(
                self.pointers_json(),
            )),
        }
    }

    /// Every served pointer, read back from the answer's text.
    pub fn pointers(&self) -> super::pointers::PointerIter<'a> {
        super::pointers::PointerIter::new(self.pointers_json())
    }

    /// One served pointer (`prompts` / `summarize` → `"17"`), borrowed
    /// from the answer unless its JSON needed escapes.
    pub fn pointer(
        &self,
        kind: super::PointerKind,
        key: &str,
    ) -> Option<std::borrow::Cow<'a, str>> {
        super::pointers::lookup(self.pointers_json(), kind, key)
    }

    /// Length of the body in bytes.
    pub fn len(&self) -> usize {
        self.prefix.len() + self.outcome.fragment().len() + self.tail.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the body to `out`.
    pub fn write_body(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.prefix);
        out.extend_from_slice(self.outcome.fragment());
        out.extend_from_slice(self.tail);
    }

    /// The body as one buffer (a copy: for callers off the hot path).
    pub fn body(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        self.write_body(&mut out);
        out
    }

    /// An owned answer: reference-count bumps, no copy. It leaves the
    /// writer's pointers struct behind (an HTTP answer has no use for
    /// it): a `Check` encodes from the borrowed answer.
    pub fn owned(self) -> Answer {
        Answer {
            outcome: self.outcome,
            prefix: self.prefix.clone(),
            tail: self.tail.clone(),
            environment: self.environment.clone(),
            revision: self.revision.clone(),
            pointers: self.pointers.clone(),
        }
    }
}

/// An answer's pointers struct, ready to write.
#[derive(Debug, Clone)]
pub enum StructBytes<'a> {
    /// Rendered by the writer: copied as they are.
    Rendered(&'a Bytes),
    /// Measured from the answer's text, written from it.
    Measured(super::pointers_struct::PointersStruct<'a>),
}

impl StructBytes<'_> {
    /// The length of the struct's fields.
    pub fn len(&self) -> usize {
        match self {
            StructBytes::Rendered(bytes) => bytes.len(),
            StructBytes::Measured(m) => m.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the struct's fields ([`len`](Self::len) bytes).
    pub fn put(&self, out: &mut impl bytes::BufMut) {
        match self {
            StructBytes::Rendered(bytes) => out.put_slice(bytes),
            StructBytes::Measured(m) => m.put(out),
        }
    }
}

/// An owned [`AnswerRef`], for handing to a connection.
#[derive(Debug, Clone)]
pub struct Answer {
    pub outcome: Outcome,
    pub prefix: Bytes,
    pub tail: Bytes,
    pub environment: HeaderValue,
    pub revision: HeaderValue,
    pub pointers: HeaderValue,
}

impl Answer {
    /// The borrowed form.
    pub fn borrowed(&self) -> AnswerRef<'_> {
        AnswerRef {
            outcome: self.outcome,
            prefix: &self.prefix,
            tail: &self.tail,
            environment: &self.environment,
            revision: &self.revision,
            pointers: &self.pointers,
            pointers_struct: None,
        }
    }

    /// The body as one buffer (a copy: for callers off the hot path).
    pub fn body(&self) -> Vec<u8> {
        self.borrowed().body()
    }
}

/// Why a request could not be resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("project id must be 1-128 characters of A-Z a-z 0-9 _ -")]
    InvalidProject,
    #[error("environment must be 1-64 characters of a-z 0-9 -, starting with a letter and not ending with '-'")]
    InvalidEnvironment,
    #[error("unknown project")]
    UnknownProject,
    #[error("unknown environment (strict mode)")]
    UnknownEnvironment,
    #[error("no snapshot loaded yet")]
    NotReady,
}
