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

    /// The `reason` field (`null` for exact answers).
    pub fn reason(self) -> Option<&'static str> {
        match self {
            Outcome::Exact => None,
            Outcome::NotRequested => Some("not_requested"),
            Outcome::UnknownEnvironment => Some("unknown_environment"),
        }
    }
}

/// A pre-rendered resolve answer. Cloning is cheap (reference counts).
#[derive(Debug, Clone)]
pub struct Answer {
    pub outcome: Outcome,
    /// The JSON body.
    pub body: Bytes,
    /// `x-resolved-environment`: the slug that serves.
    pub environment: HeaderValue,
    /// `x-snapshot-revision`: the project's accepted revision.
    pub revision: HeaderValue,
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
    f: impl FnOnce(&Answer) -> R,
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
    resolve_with(store, project, environment, strict, Answer::clone)
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
