//! Riding out a failover: what the one-shot commands (`publish`,
//! `publish --wait`, `fleet …`) do when Redis is between primaries.
//!
//! A Sentinel or Cluster failover, or a managed Redis' maintenance, makes
//! requests fail for a few seconds in a handful of known ways: the
//! connection is refused or reset, the old primary answers `READONLY`
//! (it is a replica now), the cluster answers `CLUSTERDOWN` or
//! `TRYAGAIN`, a restarted node answers `LOADING`, the sentinels know no
//! primary yet. Those are [`transient`]: the command says on stderr what
//! it waits for, backs off, and tries again, for up to `--retry-for`
//! (default 30 s) from the first of them; after that, or on any other
//! error, it fails as before (exit 2). Anything else (a refused write, a
//! bad password, a malformed file) is never retried.
//!
//! Retrying `publish` is safe even when the outcome of the last attempt
//! is unknown (the connection dropped after `EXEC`): every attempt reads
//! what Redis holds first and writes only what is newer than that, so a
//! transaction that did land is read back as unchanged and not written
//! twice, and one that did not is written now.

use std::io::Write;
use std::time::Duration;

use tokio::time::Instant;

use crate::sync::backoff::Backoff;

/// The default of `--retry-for`.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(30);

/// The first wait after a transient failure, doubled up to [`MAX_WAIT`].
const BASE: Duration = Duration::from_millis(200);
const MAX_WAIT: Duration = Duration::from_secs(2);

/// What a transient failure waits for, if `e` is one (see the module
/// doc); `None` for an error that retrying cannot help.
pub fn transient(e: &redis::RedisError) -> Option<&'static str> {
    use redis::{ErrorKind, ServerErrorKind};
    match e.kind() {
        ErrorKind::Io if e.is_timeout() => Some("Redis to answer (timed out)"),
        // Refused, reset, dropped: a server going away or not yet there. A
        // TLS handshake refused is an I/O error too, but a setting to fix.
        ErrorKind::Io if e.is_connection_refusal() || e.is_connection_dropped() => {
            Some("Redis to accept connections (refused or reset)")
        }
        _ if crate::redis_client::is_fenced(e) => Some(
            "Redis to hold what was read (it changed between the read and the write: flushed, \
             failed over to a replica that was behind, or written by another writer; nothing \
             was written)",
        ),
        ErrorKind::Server(ServerErrorKind::ReadOnly) => {
            Some("a primary (READONLY: this node became a replica in a failover)")
        }
        ErrorKind::Server(ServerErrorKind::ClusterDown) => {
            Some("the cluster to cover every slot (CLUSTERDOWN)")
        }
        ErrorKind::Server(ServerErrorKind::TryAgain) => {
            Some("the cluster to finish moving a slot (TRYAGAIN)")
        }
        ErrorKind::Server(ServerErrorKind::BusyLoading) => {
            Some("Redis to finish loading its data (LOADING)")
        }
        ErrorKind::Server(ServerErrorKind::MasterDown) => {
            Some("the replica's primary (MASTERDOWN)")
        }
        ErrorKind::MasterNameNotFoundBySentinel | ErrorKind::NoValidReplicasFoundBySentinel => {
            Some("the sentinels to name a primary")
        }
        ErrorKind::ClusterConnectionNotFound => Some("a reachable cluster node"),
        // A transaction (or a pipeline) sent by the old slot map after a
        // failover: its commands were redirected, not run.
        ErrorKind::Server(ServerErrorKind::ExecAbort | ServerErrorKind::Moved) if redirected(e) => {
            Some("the cluster's new slot owner (MOVED)")
        }
        _ => None,
    }
}

/// True when the commands of a failed transaction or pipeline were
/// refused because their slot moved (or the cluster is reconfiguring).
fn redirected(e: &redis::RedisError) -> bool {
    use redis::ServerErrorKind::{Ask, ClusterDown, Moved, TryAgain};
    e.clone().into_server_errors().is_some_and(|errors| {
        errors
            .iter()
            .any(|(_, err)| matches!(err.kind(), Some(Moved | Ask | TryAgain | ClusterDown)))
    })
}

/// An error that may be a failover's: it names the Redis error under it.
pub trait MaybeTransient {
    fn redis_error(&self) -> Option<&redis::RedisError>;

    /// What it waits for, when retrying may help.
    fn waits_for(&self) -> Option<&'static str> {
        self.redis_error().and_then(transient)
    }
}

/// How long transient failures are retried (`--retry-for`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryFor(pub Duration);

impl Default for RetryFor {
    fn default() -> RetryFor {
        RetryFor(DEFAULT_WINDOW)
    }
}

/// The retries of one command: the window starts at the first transient
/// failure and is not renewed by a success in between (a flapping Redis
/// does not keep a pipeline waiting forever).
#[derive(Debug)]
pub struct Retrier {
    window: Duration,
    started: Option<Instant>,
    backoff: Backoff,
    /// What the last note said it waits for: a note is written when that
    /// changes, not on every retry.
    said: Option<&'static str>,
}

impl RetryFor {
    pub fn retrier(self) -> Retrier {
        Retrier {
            window: self.0,
            started: None,
            backoff: Backoff::new(BASE, MAX_WAIT),
            said: None,
        }
    }
}

impl Retrier {
    /// After a failure `e`: `true` (having waited, and said so on
    /// `note`) when the command should try again.
    pub async fn again(&mut self, e: &impl MaybeTransient, note: &mut dyn Write) -> bool {
        let Some(what) = e.waits_for() else {
            return false;
        };
        let started = *self.started.get_or_insert_with(Instant::now);
        let left = self.window.saturating_sub(started.elapsed());
        if left.is_zero() {
            let _ = writeln!(
                note,
                "env-sidecar: gave up waiting for {what} after {}",
                humantime::format_duration(self.window)
            );
            return false;
        }
        let delay = self.backoff.next_delay().min(left);
        if self.said != Some(what) {
            self.said = Some(what);
            let detail = e
                .redis_error()
                .map(|r| r.to_string().chars().take(160).collect::<String>())
                .unwrap_or_default();
            let _ = writeln!(
                note,
                "env-sidecar: waiting for {what}: {detail}; retrying for up to {}s more",
                left.as_secs()
            );
            let _ = note.flush();
        }
        tokio::time::sleep(delay).await;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Failed(redis::RedisError);

    impl MaybeTransient for Failed {
        fn redis_error(&self) -> Option<&redis::RedisError> {
            Some(&self.0)
        }
    }

    fn server(code: &str) -> Failed {
        Failed(redis::RedisError::from((
            redis::ErrorKind::Server(match code {
                "READONLY" => redis::ServerErrorKind::ReadOnly,
                "CLUSTERDOWN" => redis::ServerErrorKind::ClusterDown,
                "LOADING" => redis::ServerErrorKind::BusyLoading,
                "TRYAGAIN" => redis::ServerErrorKind::TryAgain,
                _ => redis::ServerErrorKind::NoPerm,
            }),
            "from the server",
        )))
    }

    #[test]
    fn what_a_failover_does_is_transient_and_nothing_else() {
        for code in ["READONLY", "CLUSTERDOWN", "LOADING", "TRYAGAIN"] {
            assert!(server(code).waits_for().is_some(), "{code}");
        }
        let refused = Failed(redis::RedisError::from(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        assert!(refused.waits_for().is_some());
        let sentinels = Failed(redis::RedisError::from((
            redis::ErrorKind::MasterNameNotFoundBySentinel,
            "no primary",
        )));
        assert!(sentinels.waits_for().is_some());
        assert_eq!(server("NOPERM").waits_for(), None);
        let auth = Failed(redis::RedisError::from((
            redis::ErrorKind::AuthenticationFailed,
            "WRONGPASS",
        )));
        assert_eq!(auth.waits_for(), None);
    }

    /// Tries `fail(n)` (the n-th attempt's error, if it fails) as the
    /// commands do: how many attempts were made, and whether the last
    /// succeeded.
    async fn attempts(
        retry: RetryFor,
        note: &mut Vec<u8>,
        fail: impl Fn(u32) -> Option<Failed>,
    ) -> (u32, bool) {
        let mut retrier = retry.retrier();
        let mut tries = 0;
        loop {
            tries += 1;
            match fail(tries) {
                None => return (tries, true),
                Some(e) if retrier.again(&e, note).await => continue,
                Some(_) => return (tries, false),
            }
        }
    }

    /// In paused time: transient failures are retried with backoff until
    /// the window has passed since the first, then the error stands; a
    /// lasting error is never retried.
    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_for_the_window_and_no_longer() {
        let mut note = Vec::new();
        let started = Instant::now();
        let window = RetryFor(Duration::from_secs(10));
        let (tries, ok) = attempts(window, &mut note, |_| Some(server("READONLY"))).await;
        assert!(!ok);
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(10) && waited < Duration::from_secs(13),
            "{waited:?}"
        );
        assert!((5..=60).contains(&tries), "{tries} tries");
        let text = String::from_utf8(note).unwrap();
        assert!(text.contains("waiting for a primary (READONLY"), "{text}");
        assert!(text.contains("gave up waiting"), "{text}");
        assert_eq!(text.lines().count(), 2, "one note per reason: {text}");

        let (tries, ok) = attempts(RetryFor::default(), &mut Vec::new(), |_| {
            Some(server("NOPERM"))
        })
        .await;
        assert_eq!((tries, ok), (1, false));

        // A failover that ends within the window: the attempt after it wins.
        let (tries, ok) = attempts(RetryFor::default(), &mut Vec::new(), |n| {
            (n < 4).then(|| server("CLUSTERDOWN"))
        })
        .await;
        assert_eq!((tries, ok), (4, true));
    }
}
