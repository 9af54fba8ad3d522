//! Sync: keeping the store fresh from its source, and what is known about
//! how that goes.
//!
//! Every source has the same shape ([`Fetch`]): one step fetches whatever
//! is new and hands it to the writer, a forced refresh fetches now, and
//! [`run`] drives either with shared backoff, status, logging, "check now"
//! and shutdown. Sources fetch and parse (off the request threads) and
//! never touch the store directly: the [`writer`] thread owns every change.
//!
//! * [`configured`]: the source a config names (the one dispatch on the
//!   kind).
//! * [`file`](mod@file): a JSON snapshot file, re-read when it changes (the default).
//! * [`http`]: a control plane, in `watch` or `poll` mode.
//! * [`redis`](mod@redis): a hash and a stream in Redis (fleets).
//! * [`writer`]: applies updates and runs scheduled cutovers, on its own
//!   thread.
//! * [`backoff`], [`error`]: retry timing; why an attempt failed.
//! * [`refresh`]: forced refreshes, coalesced.
//! * [`status`], [`readiness`]: what the source last did; are we ready.
//! * [`cache`]: the last-known-good file. [`memory`]: giving memory back
//!   after a large update.
//! * [`key_watch`]: the trusted keys, read again when their files change.
//! * [`report`]: what this node serves, published for fleet commands.
//! * [`runtime`]: the sync thread, where the source and the cache writer
//!   run, away from the request threads.
//!
//! Sync depends on the store, the model, the config, telemetry and the
//! Redis client; never on the server.

pub mod backoff;
pub mod cache;
pub mod configured;
pub mod error;
pub mod file;
pub mod http;
pub mod key_watch;
pub mod memory;
pub mod readiness;
pub mod redis;
pub mod refresh;
pub mod report;
pub mod runtime;
pub mod status;
pub mod writer;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

pub use error::{describe, FetchError, SyncError};
use refresh::{Position, RefreshOutcome, RefreshRequest, Scope};
use status::SyncStatus;
use writer::WriterHandle;

use crate::model::clock::SharedClock;
use crate::model::origin::{MassRemoval, Origin};
use crate::model::wire::{Incoming, MalformedBody};
use crate::store::{ApplyReport, Contents, Store, Update};
use crate::telemetry::{Metrics, SyncKind, SyncResult};

/// What every source works with.
#[derive(Debug, Clone)]
pub struct SyncContext {
    pub store: Store,
    pub writer: WriterHandle,
    pub status: Arc<SyncStatus>,
    pub metrics: Arc<Metrics>,
    pub clock: SharedClock,
}

impl SyncContext {
    /// Hands `update` to the writer and waits for what it changed.
    pub async fn apply(&self, update: Update) -> Result<ApplyReport, SyncError> {
        Ok(self.writer.apply(update).await?)
    }

    /// Hands a fetched body to the writer, which parses it with `parse`
    /// (on its own thread: large bodies never occupy a request thread)
    /// and applies it as news from `origin`. `what` names the body in
    /// errors.
    pub async fn parse_and_apply(
        &self,
        what: &'static str,
        parse: impl FnOnce() -> Result<Contents, MalformedBody> + Send + 'static,
        origin: Origin,
    ) -> Result<ApplyReport, SyncError> {
        let name = origin.as_str();
        let parse = move || parse().map(|contents| Update::new(origin, contents));
        let parsed = self
            .writer
            .parse_and_apply(name, parse)
            .await
            .map_err(SyncError::from)?;
        let applied = parsed.map_err(|source| FetchError::Malformed { what, source })?;
        applied.map_err(SyncError::Refused)
    }

    /// A forced refresh of project `id`: `fetch` gets its document
    /// (`None`: the source no longer has it), which is applied; one
    /// `project` request. Returns what changed and the status line.
    pub async fn refresh_project(
        &self,
        id: &str,
        mass_removal: MassRemoval,
        fetch: impl Future<Output = Result<Option<Incoming>, SyncError>>,
    ) -> Result<(ApplyReport, String), SyncError> {
        let apply = async {
            let contents = Contents::Project {
                id: id.to_owned(),
                document: fetch.await?,
            };
            self.apply(Update::new(Origin::Refresh(mass_removal), contents))
                .await
        };
        let report = self
            .request(SyncKind::Project, |_| SyncResult::Ok, apply)
            .await?;
        let message = format!("forced project {id}: {}", summary(&report));
        Ok((report, message))
    }

    /// Makes one request to the source: `request` is the fetch and the
    /// applying of what it brought. This is the one place
    /// `env_sidecar_sync_requests_total` and `_sync_duration_seconds` are
    /// recorded, from the request's typed outcome: `count` names the
    /// result of one that succeeded (`ok`, or `not_modified` when nothing
    /// new came); every failure is `error`: unreachable, timed out, an
    /// error answer, a check before a read that could not be made, a body
    /// that does not parse, a fetch refused whole. The duration runs from
    /// sending the request to having applied it.
    pub async fn request<T>(
        &self,
        kind: SyncKind,
        count: impl FnOnce(&T) -> SyncResult,
        request: impl Future<Output = Result<T, SyncError>>,
    ) -> Result<T, SyncError> {
        let started = Instant::now();
        let outcome = request.await;
        let result = match &outcome {
            Ok(value) => count(value),
            Err(_) => SyncResult::Error,
        };
        self.metrics.sync_request(kind, result, started.elapsed());
        outcome
    }
}

/// What a successful step tells about the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contact {
    /// The source was reached; the message says what came of it.
    Reached(String),
    /// Nothing new, and what is served is what the source holds (an
    /// unchanged file that read fine): fresh, but not worth an event.
    Unchanged,
    /// Nothing was learnt (an unchanged file whose last read failed).
    Nothing,
}

/// A successful step: when to step again, and what it learnt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stepped {
    pub next: Duration,
    pub contact: Contact,
}

/// What the driver steps: a source of snapshots (the file, a control
/// plane, Redis), as `config::Source` names one.
pub trait Fetch: Send + 'static {
    /// How long to wait before the first step (a fleet restarted together
    /// from its caches must not poll in lockstep).
    fn first_delay(&mut self, _ctx: &SyncContext) -> Duration {
        Duration::ZERO
    }

    /// Fetches whatever is new and applies it. A step may be abandoned
    /// (dropped) at any await point when a command arrives.
    fn step(
        &mut self,
        ctx: &SyncContext,
    ) -> impl Future<Output = Result<Stepped, SyncError>> + Send;

    /// Fetches everything now, ignoring any conditional state (ETag,
    /// fingerprint); returns what changed and a line for the status.
    fn refresh_all(
        &mut self,
        ctx: &SyncContext,
        mass_removal: MassRemoval,
    ) -> impl Future<Output = Result<(ApplyReport, String), SyncError>> + Send;

    /// Fetches project `id` now, as [`Fetch::refresh_all`] does all.
    fn refresh_project(
        &mut self,
        ctx: &SyncContext,
        id: &str,
        mass_removal: MassRemoval,
    ) -> impl Future<Output = Result<(ApplyReport, String), SyncError>> + Send;

    /// Forget anything that would let the next step skip a fetch.
    fn check_now(&mut self) {}

    /// The longest wait between failed attempts.
    fn backoff_max(&self) -> Duration;
}

/// What the sidecar asks of its source.
#[derive(Debug)]
pub enum SourceCommand {
    /// Look for changes now instead of at the next poll or retry.
    CheckNow,
    /// Fetch now and answer what changed.
    Refresh(RefreshRequest, oneshot::Sender<RefreshOutcome>),
}

/// An inconclusive step (the source reached, its data not settled yet) is
/// retried no sooner than this.
pub const INCONCLUSIVE_RETRY: Duration = Duration::from_secs(1);

/// Drives `source` until `shutdown` flips: steps, with full-jitter
/// backoff after failures; commands are served at once, even in the
/// middle of a step (which is abandoned and retried).
pub async fn run<S: Fetch>(
    mut source: S,
    ctx: SyncContext,
    mut commands: mpsc::Receiver<SourceCommand>,
    mut shutdown: watch::Receiver<bool>,
) {
    enum Event {
        Step(Result<Stepped, SyncError>),
        Command(SourceCommand),
        Shutdown,
    }
    let mut backoff = backoff::Backoff::new(backoff::BASE, source.backoff_max());
    let mut next = Instant::now() + source.first_delay(&ctx);
    let mut failing: Option<String> = None;
    loop {
        let event = tokio::select! {
            _ = until(next) => {
                tokio::select! {
                    r = source.step(&ctx) => Event::Step(r),
                    Some(c) = commands.recv() => Event::Command(c),
                    _ = shutdown.changed() => Event::Shutdown,
                }
            }
            Some(c) = commands.recv() => Event::Command(c),
            _ = shutdown.changed() => Event::Shutdown,
        };
        match event {
            Event::Shutdown => return,
            Event::Command(SourceCommand::CheckNow) => {
                source.check_now();
                next = Instant::now();
            }
            Event::Command(SourceCommand::Refresh(request, reply)) => {
                let outcome = forced(&mut source, &ctx, &request).await;
                let _ = reply.send(outcome);
            }
            Event::Step(Ok(stepped)) => {
                if stepped.contact != Contact::Nothing {
                    ctx.status.hold(None);
                    backoff.reset();
                    if let Some(was) = failing.take() {
                        tracing::info!(was = %was, "sync recovered");
                    }
                }
                match stepped.contact {
                    Contact::Reached(message) => ctx.status.success(ctx.clock.now(), message),
                    Contact::Unchanged => {
                        ctx.status.confirm();
                        ctx.status.baseline(ctx.clock.now());
                    }
                    Contact::Nothing => {}
                }
                next = Instant::now() + stepped.next;
            }
            Event::Step(Err(e)) => {
                if matches!(e, SyncError::Refused(_)) {
                    ctx.metrics.mass_removal_refused();
                    ctx.status.hold(Some(describe(&e)));
                }
                let mut delay = backoff.next_delay();
                if matches!(e, SyncError::Inconclusive(_)) {
                    // A population being rewritten takes its writer a
                    // while: no point asking ten times a second.
                    delay = delay.max(INCONCLUSIVE_RETRY);
                }
                let text = describe(&e);
                ctx.status.error(ctx.clock.now(), text.clone());
                // One line per distinct problem, not one per retry.
                if failing.as_deref() != Some(text.as_str()) {
                    tracing::warn!(error = %text, failures = backoff.failures(), retry_in = ?delay, "sync failed; serving the last good snapshot");
                } else {
                    tracing::debug!(error = %text, failures = backoff.failures(), retry_in = ?delay, "sync still failing");
                }
                failing = Some(text);
                next = Instant::now() + delay;
            }
        }
    }
}

/// Resolves at `at`, or at once when `at` has come. Tokio's timer rounds
/// every deadline up to its next millisecond tick, so sleeping until a
/// deadline already passed would add a millisecond, a timer and two
/// wake-ups to every change a follower applies.
async fn until(at: Instant) {
    if at > Instant::now() {
        tokio::time::sleep_until(at).await;
    }
}

/// Whether a long poll that asked to wait `wait` and came back empty
/// after `waited` held it: at least half of it (timers round, and a
/// server may cap the wait), as the sidecar and `conformance` judge it.
pub fn held(waited: Duration, wait: Duration) -> bool {
    waited >= wait / 2
}

/// Paces long polls that bring nothing: the next one starts at once when
/// the last [`held`] its wait, and after [`backoff::BASE`] when it came
/// back sooner, so a source that ignores the wait (a proxy that does not
/// block, a control plane that answers at once) is asked ten times a
/// second, never in a loop. Said once at `warn`.
#[derive(Debug, Default)]
pub(crate) struct QuietPace {
    warned: bool,
}

impl QuietPace {
    /// The delay before the next long poll after an empty one that
    /// started at `started` and asked to wait `wait`.
    pub(crate) fn next(&mut self, started: Instant, wait: Duration, what: &str) -> Duration {
        let waited = started.elapsed();
        if held(waited, wait) {
            return Duration::ZERO;
        }
        if !std::mem::replace(&mut self.warned, true) {
            tracing::warn!(
                waited = ?waited,
                wait = ?wait,
                "{what} came back empty before its wait; asking again every {:?} instead of back to back",
                backoff::BASE
            );
        }
        backoff::BASE
    }
}

/// Carries out a forced refresh and words its outcome.
async fn forced<S: Fetch>(
    source: &mut S,
    ctx: &SyncContext,
    request: &RefreshRequest,
) -> RefreshOutcome {
    let revision = |ctx: &SyncContext| match &request.scope {
        Scope::All => Some(Position::Cursor(ctx.store.cursor())),
        Scope::Project(id) => ctx
            .store
            .project(id)
            .map(|p| Position::Revision(p.revision())),
    };
    let before = revision(ctx);
    let allow = request.mass_removal;
    let refreshed = match &request.scope {
        Scope::All => source.refresh_all(ctx, allow).await,
        Scope::Project(id) => source.refresh_project(ctx, id, allow).await,
    };
    match refreshed {
        Ok((report, message)) => {
            ctx.status.hold(None);
            ctx.status.success(ctx.clock.now(), message);
            RefreshOutcome::applied(&report, before, revision(ctx))
        }
        Err(e) => {
            let text = describe(&e);
            ctx.status.error(ctx.clock.now(), text.clone());
            match e {
                SyncError::Refused(_) => {
                    ctx.metrics.mass_removal_refused();
                    ctx.status.hold(Some(text.clone()));
                    RefreshOutcome::refused(text, before)
                }
                _ => RefreshOutcome::failed(text, before),
            }
        }
    }
}

/// `"3 changed, 0 rejected"`: how status lines summarise an apply.
pub fn summary(report: &ApplyReport) -> String {
    format!(
        "{} changed, {} rejected",
        report.changed(),
        report.rejected.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::clock::SystemClock;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn a_long_poll_held_its_wait_from_half_of_it() {
        let wait = Duration::from_secs(1);
        assert!(!held(Duration::from_millis(499), wait));
        assert!(held(Duration::from_millis(500), wait));
        assert!(
            held(Duration::ZERO, Duration::ZERO),
            "a poll asked not to wait"
        );
    }

    #[tokio::test]
    async fn an_empty_poll_that_did_not_hold_delays_the_next() {
        let mut pace = QuietPace::default();
        let wait = Duration::from_secs(30);
        assert_eq!(pace.next(Instant::now(), wait, "a poll"), backoff::BASE);
        let long_ago = Instant::now() - wait;
        assert_eq!(pace.next(long_ago, wait, "a poll"), Duration::ZERO);
        assert!(pace.warned, "said once");
    }

    /// A context over an empty store, on the system clock.
    fn context() -> SyncContext {
        let (store, writer) = Store::new(0.5);
        let metrics = Metrics::new();
        let clock: SharedClock = Arc::new(SystemClock);
        let (writer, _stopped) =
            writer::spawn(writer, clock.clone(), Default::default(), metrics.clone()).unwrap();
        SyncContext {
            store,
            writer,
            status: Arc::new(SyncStatus::default()),
            metrics,
            clock,
        }
    }

    /// A source whose steps fail (with `error`) until `failing` is false.
    struct Flaky {
        steps: Arc<AtomicUsize>,
        failing: Arc<std::sync::atomic::AtomicBool>,
        error: fn() -> SyncError,
    }

    impl Fetch for Flaky {
        async fn step(&mut self, _: &SyncContext) -> Result<Stepped, SyncError> {
            let n = self.steps.fetch_add(1, Ordering::SeqCst);
            // A loop that spins would never give the timer a chance.
            assert!(n < 10_000, "the sync loop is spinning");
            if self.failing.load(Ordering::SeqCst) {
                Err((self.error)())
            } else {
                Ok(Stepped {
                    next: Duration::from_secs(30),
                    contact: Contact::Reached("ok".into()),
                })
            }
        }

        async fn refresh_all(
            &mut self,
            _: &SyncContext,
            _: MassRemoval,
        ) -> Result<(ApplyReport, String), SyncError> {
            Err(FetchError::GoneAgain.into())
        }

        async fn refresh_project(
            &mut self,
            _: &SyncContext,
            _: &str,
            _: MassRemoval,
        ) -> Result<(ApplyReport, String), SyncError> {
            Err(FetchError::GoneAgain.into())
        }

        fn backoff_max(&self) -> Duration {
            Duration::from_secs(5)
        }
    }

    /// Failed steps back off (100 ms doubling, with full jitter, at most
    /// 5 s), and a success resets to the source's own pace: in tokio's
    /// paused time, so no real second passes.
    #[tokio::test(start_paused = true)]
    async fn failures_back_off_and_a_success_resets() {
        let ctx = context();
        let steps = Arc::new(AtomicUsize::new(0));
        let failing = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let source = Flaky {
            steps: steps.clone(),
            failing: failing.clone(),
            error: || FetchError::Timeout(Duration::from_secs(1)).into(),
        };
        let (_commands, commands_rx) = mpsc::channel(1);
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(source, ctx, commands_rx, stopped));

        // In 60 s: windows of 0.1, 0.2, 0.4 … 3.2 s, then 5 s each, a
        // uniform draw in each: a few dozen steps at most.
        tokio::time::sleep(Duration::from_secs(60)).await;
        let failed = steps.load(Ordering::SeqCst);
        assert!((8..=60).contains(&failed), "{failed} steps in 60 s");

        // Once the source answers, steps come at its pace (every 30 s).
        failing.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(10)).await;
        let recovered = steps.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(90)).await;
        let later = steps.load(Ordering::SeqCst) - recovered;
        assert!(
            (2..=4).contains(&later),
            "{later} steps in 90 s at a 30 s pace"
        );
        let _ = stop.send(true);
        task.await.unwrap();
    }

    /// An inconclusive step (a Redis population being rewritten) is
    /// retried at most once a second, however early in the backoff.
    #[tokio::test(start_paused = true)]
    async fn inconclusive_steps_wait_at_least_a_second() {
        let ctx = context();
        let steps = Arc::new(AtomicUsize::new(0));
        let source = Flaky {
            steps: steps.clone(),
            failing: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            error: || SyncError::Inconclusive("incomplete".into()),
        };
        let (_commands, commands_rx) = mpsc::channel(1);
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(source, ctx, commands_rx, stopped));
        tokio::time::sleep(Duration::from_millis(4_500)).await;
        let n = steps.load(Ordering::SeqCst);
        // The first step at once, then one a second at most.
        assert!((2..=5).contains(&n), "{n} steps in 4.5 s");
        let _ = stop.send(true);
        task.await.unwrap();
    }
}
