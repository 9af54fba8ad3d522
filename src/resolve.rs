//! Resolution: which environment, and which pointers, serve a request.
//!
//! The answer is one of the project's pre-rendered [`Answer`]s, so resolving
//! is a syntax check, two lock-free loads and a binary search. This path
//! never locks against the writer, never parses the snapshot and never
//! allocates (cloning an answer bumps reference counts).

use bytes::Bytes;
use http::HeaderValue;

use crate::store::Store;
use crate::validate::{is_valid_id, MAX_SLUG_LEN};

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
}

impl AnswerRef<'_> {
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

    /// An owned answer: reference-count bumps, no copy.
    pub fn owned(self) -> Answer {
        Answer {
            outcome: self.outcome,
            prefix: self.prefix.clone(),
            tail: self.tail.clone(),
            environment: self.environment.clone(),
            revision: self.revision.clone(),
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

/// Resolves against the store's current snapshot and hands the answer to
/// `f` without copying it (the library call for embedders: a syntax check,
/// two lock-free loads, a hash lookup and a binary search). `environment`
/// is the slug as the client sent it (any ASCII case); `None` means not
/// requested.
#[inline]
pub fn resolve_with<R>(
    store: &Store,
    project: &str,
    environment: Option<&str>,
    strict: bool,
    f: impl FnOnce(AnswerRef<'_>) -> R,
) -> Result<R, ResolveError> {
    if !is_valid_id(project) {
        return Err(ResolveError::InvalidProject);
    }
    let mut buf = [0u8; MAX_SLUG_LEN];
    let slug = match environment {
        None => None,
        Some(raw) => Some(lower_slug(raw, &mut buf).ok_or(ResolveError::InvalidEnvironment)?),
    };
    if !store.is_loaded() {
        return Err(ResolveError::NotReady);
    }
    store.with_project(project, |p| match p {
        None => Err(ResolveError::UnknownProject),
        Some(p) => p
            .answer(slug, strict)
            .map(f)
            .ok_or(ResolveError::UnknownEnvironment),
    })
}

/// [`resolve_with`], returning an owned answer (reference-count bumps): what
/// the HTTP layer needs to hand bytes to the connection.
#[inline]
pub fn resolve(
    store: &Store,
    project: &str,
    environment: Option<&str>,
    strict: bool,
) -> Result<Answer, ResolveError> {
    resolve_with(store, project, environment, strict, |a| a.owned())
}

/// Checks slug syntax (case-insensitively) and writes its lower-case form
/// into `buf`. `None` for anything that cannot be a slug.
#[inline]
pub fn lower_slug<'b>(raw: &str, buf: &'b mut [u8; MAX_SLUG_LEN]) -> Option<&'b [u8]> {
    let bytes = raw.as_bytes();
    let len = bytes.len();
    if len == 0 || len > MAX_SLUG_LEN || !bytes[0].is_ascii_alphabetic() || bytes[len - 1] == b'-' {
        return None;
    }
    for (dst, &c) in buf.iter_mut().zip(bytes) {
        if !(c.is_ascii_alphanumeric() || c == b'-') {
            return None;
        }
        *dst = c.to_ascii_lowercase();
    }
    Some(&buf[..len])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_lowered_and_checked() {
        let mut buf = [0u8; MAX_SLUG_LEN];
        assert_eq!(lower_slug("Canary-2", &mut buf), Some(&b"canary-2"[..]));
        for bad in ["", "2x", "x-", "x_y", "x y", "é", &"a".repeat(65)] {
            assert_eq!(lower_slug(bad, &mut buf), None, "{bad:?}");
        }
        assert!(lower_slug(&"a".repeat(64), &mut buf).is_some());
    }
}
