//! Why a sync attempt failed. Each error keeps its cause (the I/O error
//! kind, the status code, the transport error) until it is rendered, once,
//! by [`describe`], for status, logs and refresh answers.

use std::path::PathBuf;
use std::time::Duration;

use http::StatusCode;

use super::writer::WriteError;
use crate::model::wire::MalformedBody;
use crate::store::ApplyError;

/// Fetching from the source failed: nothing was applied.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("request to the control plane failed")]
    Transport(#[source] reqwest::Error),
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
    #[error("control plane answered {0}")]
    Status(StatusCode),
    /// A long poll answered without a body (`204`, or `304`, which the
    /// protocol has only for the snapshot).
    #[error(
        "control plane answered {0} to a long poll; one that times out with nothing new \
         answers 200 with empty lists and the unchanged revision (docs/control-plane.md)"
    )]
    EmptyPoll(StatusCode),
    /// `410` again right after a full snapshot: the control plane cannot
    /// serve changes after the cursor it just gave.
    #[error("control plane answered 410 Gone right after a full snapshot")]
    GoneAgain,
    /// A batch below the cursor right after a full snapshot gave that
    /// cursor: the control plane's snapshot and changes disagree.
    #[error(
        "control plane answered changes after {cursor} at revision {revision}, right after \
         a full snapshot at {cursor}: cursors only grow"
    )]
    WentBackAgain { cursor: u64, revision: u64 },
    #[error("Redis")]
    Redis(#[source] redis::RedisError),
    #[error("{what} is not JSON of the expected shape")]
    Malformed {
        what: &'static str,
        #[source]
        source: MalformedBody,
    },
}

/// A sync attempt failed: the fetch, or the apply of what it brought.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The update was refused whole (the blast-radius guard); the message
    /// says how an operator lets it through.
    #[error("{0}; force it with POST /admin/refresh?allow_mass_removal=true if it is intended")]
    Refused(ApplyError),
    #[error("the writer has stopped")]
    WriterStopped,
    /// The source was reached, but what it holds settles nothing yet (a
    /// Redis population being rewritten): tried again with backoff.
    #[error("{0}")]
    Inconclusive(String),
}

impl From<WriteError> for SyncError {
    fn from(e: WriteError) -> SyncError {
        match e {
            WriteError::Refused(e) => SyncError::Refused(e),
            WriteError::Stopped => SyncError::WriterStopped,
        }
    }
}

/// An error and every cause under it, joined by `": "`: the one rendering
/// of errors for people (status, logs, refresh answers).
pub fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let next = c.to_string();
        // Some errors repeat their cause in their own message.
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_keeps_every_cause() {
        let e = SyncError::from(FetchError::Read {
            path: "snap.json".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
        assert_eq!(describe(&e), "cannot read snap.json: entity not found");
        let e = SyncError::from(FetchError::Malformed {
            what: "snapshot",
            source: MalformedBody("expected value at line 1".into()),
        });
        assert_eq!(
            describe(&e),
            "snapshot is not JSON of the expected shape: malformed body: expected value at line 1"
        );
    }
}
