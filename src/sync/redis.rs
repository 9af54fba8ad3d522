//! The Redis source: follows a `{P}:projects` hash and a `{P}:changes`
//! stream that a publisher (`env-sidecar publish`, the control plane, the
//! simulator) writes in one `MULTI`/`EXEC` per change, with a population
//! marker (`{P}:population`) saying when the hash holds a complete
//! population. For fleets: every sidecar follows Redis (a replica, a
//! cluster, a sentinel-managed set: see [`crate::redis_client`]) instead of the
//! control plane.
//!
//! * **Full load**: the stream's last generated id becomes the cursor
//!   (`0-0` when the stream is missing), then the hash is read in bounded
//!   chunks ([`read_projects`]). When the marker is there, matches
//!   the fields read and did not move meanwhile, the population is
//!   complete: applied as a full snapshot (absent projects removed, under
//!   the blast-radius guard). Otherwise Redis lost data, is being
//!   repopulated, or its writer does not mark: what is there is applied,
//!   **nothing is removed**, and the population is incomplete.
//! * **Follow**: `XREAD BLOCK <long_poll_wait> COUNT 512 STREAMS
//!   {P}:changes <cursor>` on a connection of its own (a forced refresh
//!   never waits behind it); each batch is a change batch, explicit
//!   removals included. While the population is incomplete the stream is
//!   followed all the same; the same round trip also reads the marker and
//!   the hash's length (never the hash), the read blocks at most
//!   `backoff_max`, and one full load is taken as soon as the marker
//!   matches: then, and only then, is anything removed for being absent.
//! * **Lost entries**: the read is pipelined with `XLEN`. A stream that
//!   holds fewer entries than it did plus those just read (trimmed past,
//!   deleted, recreated while the read blocked, a Redis that came back
//!   empty), or a read that was a full batch, is checked thoroughly
//!   ([`stream_state`], ids only): missing while the cursor is past
//!   `0-0`, its first entry newer than the cursor, or empty while its
//!   last generated id is newer: entries may be gone, so a full load (the
//!   Redis form of `410`). The thorough check also runs on start and
//!   after a reconnect. A missing stream with the cursor at `0-0` is
//!   nothing new: the `XREAD` waits for it.
//! * Every failed step backs off ([`super::run`]); every request is
//!   counted once ([`SyncContext::request`]).
//!
//! The cursor (a stream id `ms-seq`) is kept as one
//! ([`Cursor::Stream`]) in the store, the last-known-good cache, the
//! status and the node report. A cache written by an earlier version
//! holds it packed into a number; it is unpacked when the sidecar starts.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::redis_client::read::{
    changes, read_after, read_project, read_projects, stream_state, Delivery, StreamState,
};
use crate::redis_client::{population, Connector, Lazy, RedisKeys, Role};

use super::{summary, Contact, Fetch, FetchError, QuietPace, Stepped, SyncContext, SyncError};
use crate::config::RedisConfig;
use crate::model::cursor::Cursor;
pub use crate::model::cursor::StreamId;
use crate::model::origin::{MassRemoval, Origin};
use crate::model::wire::{BodyReader, SnapshotBody};
use crate::store::{ApplyReport, Contents, Update};
use crate::telemetry::{SyncKind, SyncResult};

/// The Redis source's state.
#[derive(Debug)]
pub struct RedisSource {
    /// Full loads, checks, forced refreshes.
    reads: Lazy,
    /// `XREAD BLOCK` only.
    follow: Lazy,
    keys: RedisKeys,
    long_poll_wait: Duration,
    backoff_max: Duration,
    /// `None`: a full load is needed.
    cursor: Option<StreamId>,
    /// The cursor the stream was last found to continue: the thorough
    /// check before the next read is skipped for it (the check made with
    /// that read catches any loss in between).
    checked: Option<StreamId>,
    /// How many entries the stream held at the last look (see
    /// [`Delivery::continues`]); `None` after a reconnect.
    known_len: Option<u64>,
    /// The last full load found the population incomplete: the stream is
    /// followed, and the marker read with every delivery, until it is
    /// complete.
    incomplete: bool,
    /// How large one document may be.
    reader: BodyReader,
    /// Paces reads that come back empty before their block.
    quiet: QuietPace,
}

/// Stream entries one `XREAD` takes at most.
pub const XREAD_COUNT: usize = 512;

/// What a full load found.
#[derive(Debug)]
struct Loaded {
    report: ApplyReport,
    tip: StreamId,
    /// The population was complete (absent projects were removed).
    complete: bool,
}

/// What one blocking read came to.
#[derive(Debug)]
enum Followed {
    /// Entries applied up to `last`.
    Applied {
        report: Box<ApplyReport>,
        last: StreamId,
        /// Read with them while the population is incomplete: whether it
        /// is complete now.
        complete: Option<bool>,
    },
    /// Nothing came within the wait.
    Quiet { complete: Option<bool> },
    /// Entries after the cursor may be gone: a full load is needed.
    Lost,
}

impl Followed {
    /// The population was found complete with this read.
    fn completes(&self) -> bool {
        matches!(
            self,
            Followed::Applied {
                complete: Some(true),
                ..
            } | Followed::Quiet {
                complete: Some(true)
            }
        )
    }
}

impl RedisSource {
    /// Follows `config` through `connector` (whose response timeout must
    /// be longer than `long_poll_wait`).
    pub fn new(connector: Arc<Connector>, config: &RedisConfig, reader: BodyReader) -> RedisSource {
        RedisSource {
            reads: Lazy::new(connector.clone(), Role::Follow),
            follow: Lazy::new(connector, Role::Follow),
            keys: RedisKeys::new(&config.key_prefix),
            long_poll_wait: config.timing.long_poll_wait,
            backoff_max: config.timing.backoff_max,
            cursor: None,
            checked: None,
            known_len: None,
            incomplete: false,
            reader,
            quiet: QuietPace::default(),
        }
    }

    /// How long one read blocks: `long_poll_wait`, and at most
    /// `backoff_max` while the population is incomplete (the marker is
    /// read with every delivery).
    fn block(&self) -> Duration {
        if self.incomplete {
            self.long_poll_wait.min(self.backoff_max)
        } else {
            self.long_poll_wait
        }
    }

    /// After an error on the read connection: the next use connects again
    /// (perhaps to a failed-over primary, another replica).
    fn failed<T>(&mut self, e: redis::RedisError) -> Result<T, SyncError> {
        self.reads.reset();
        Err(FetchError::Redis(e).into())
    }

    /// A full load, counted: `ok` when it found a complete population,
    /// `error` when not (nothing was removed; the step backs off).
    async fn full_load(&mut self, ctx: &SyncContext, origin: Origin) -> Result<Loaded, SyncError> {
        let count = |l: &Loaded| {
            if l.complete {
                SyncResult::Ok
            } else {
                SyncResult::Error
            }
        };
        let load = self.load_all(ctx, origin);
        ctx.request(SyncKind::Snapshot, count, load).await
    }

    /// [`full_load`](Self::full_load), uncounted.
    async fn load_all(&mut self, ctx: &SyncContext, origin: Origin) -> Result<Loaded, SyncError> {
        let mut con = match self.reads.get().await {
            Ok(con) => con,
            Err(e) => return self.failed(e),
        };
        let read = async {
            // The stream's last generated id first: a write after it is
            // replayed from the stream (harmless), a write before it is in
            // what is read next. For a stream emptied by trimming this is
            // newer than its (gone) last entry; taking `0-0` there would
            // find the cursor lost again on the next check and reload in a
            // loop.
            let state = stream_state(&mut con, &self.keys).await?;
            let tip = match state {
                StreamState::Missing => StreamId::default(),
                StreamState::Present { last_generated, .. } => last_generated,
            };
            let (marker, fields) = population(&mut con, &self.keys).await?;
            let all = if fields == 0 {
                Vec::new()
            } else {
                let reader = self.reader.on_every_core(!ctx.store.is_loaded());
                // What is served byte for byte as stored is not read again.
                let served = |id: &str| ctx.store.project(id).and_then(|p| p.raw());
                read_projects(&mut con, &self.keys, reader, &served).await?
            };
            // Complete when the marker is there, matches what was read and
            // did not move meanwhile.
            let complete = match marker {
                None => false,
                Some(m) => m == all.len() && population(&mut con, &self.keys).await?.0 == Some(m),
            };
            Ok::<_, redis::RedisError>((tip, state.length(), all, complete))
        };
        let (tip, length, all, complete) = match read.await {
            Ok(v) => v,
            Err(e) => return self.failed(e),
        };
        let cursor = Cursor::Stream(tip);
        let parse = move || {
            Ok(Contents::Snapshot(SnapshotBody {
                cursor,
                projects: all,
                partial: !complete,
                ..SnapshotBody::default()
            }))
        };
        let mut report = ctx
            .parse_and_apply("redis hash", parse, origin.clone())
            .await?;
        // Skipped as served, but what is served changed before the writer
        // got to them (a key removed meanwhile): each read and judged now.
        for id in std::mem::take(&mut report.reread) {
            let document = match read_project(&mut con, &self.keys, &id, self.reader).await {
                Ok(document) => document,
                Err(e) => return self.failed(e),
            };
            let update = Update::new(origin.clone(), Contents::Project { id, document });
            report.absorb(ctx.apply(update).await?);
        }
        self.cursor = Some(tip);
        self.checked = Some(tip);
        self.known_len = Some(length);
        self.incomplete = !complete;
        Ok(Loaded {
            report,
            tip,
            complete,
        })
    }

    /// True when entries after `cursor` may be gone (trimmed, deleted, a
    /// Redis that came back empty, a stream recreated). A request of its
    /// own: counted as `changes`, an error when it cannot be made.
    async fn cursor_lost(
        &mut self,
        ctx: &SyncContext,
        cursor: StreamId,
    ) -> Result<bool, SyncError> {
        let check = async {
            let mut con = match self.reads.get().await {
                Ok(con) => con,
                Err(e) => return self.failed(e),
            };
            match stream_state(&mut con, &self.keys).await {
                Ok(state) => {
                    self.known_len = Some(state.length());
                    Ok(lost(&state, cursor))
                }
                Err(e) => self.failed(e),
            }
        };
        ctx.request(SyncKind::Changes, |_| SyncResult::Ok, check)
            .await
    }

    /// One read blocking up to `block`, applied (see [`Followed`]).
    async fn follow(
        &mut self,
        ctx: &SyncContext,
        cursor: StreamId,
        block: Duration,
    ) -> Result<Followed, SyncError> {
        let count = |got: &Followed| match got {
            Followed::Quiet { .. } => SyncResult::NotModified,
            _ => SyncResult::Ok,
        };
        let read = self.read_changes(ctx, cursor, block);
        ctx.request(SyncKind::Changes, count, read).await
    }

    /// [`follow`](Self::follow), uncounted.
    async fn read_changes(
        &mut self,
        ctx: &SyncContext,
        cursor: StreamId,
        block: Duration,
    ) -> Result<Followed, SyncError> {
        let mut con = match self.follow.get().await {
            Ok(con) => con,
            Err(e) => {
                self.follow.reset();
                self.known_len = None;
                return Err(FetchError::Redis(e).into());
            }
        };
        let max = self.reader.max_document_bytes;
        let delivery = match read_after(
            &mut con,
            &self.keys,
            cursor,
            block,
            XREAD_COUNT,
            self.incomplete,
            max,
        )
        .await
        {
            Ok(d) => d,
            Err(e) => {
                self.follow.reset();
                self.known_len = None;
                return Err(FetchError::Redis(e).into());
            }
        };
        let complete = delivery
            .population
            .map(|(marker, fields)| marker == Some(fields));
        if !delivery.continues(self.known_len, XREAD_COUNT) {
            // Entries may be gone (or the stream was recreated while the
            // read blocked): the thorough check decides.
            let mut check = match self.reads.get().await {
                Ok(con) => con,
                Err(e) => return self.failed(e),
            };
            match stream_state(&mut check, &self.keys).await {
                Ok(state) if lost(&state, cursor) => {
                    self.cursor = None;
                    return Ok(Followed::Lost);
                }
                Ok(state) => self.known_len = Some(state.length()),
                Err(e) => return self.failed(e),
            }
        } else {
            self.known_len = Some(delivery.length);
        }
        let Delivery { entries, .. } = delivery;
        let Some(last) = entries.last().map(|(id, _, _)| *id) else {
            self.checked = Some(cursor);
            return Ok(Followed::Quiet { complete });
        };
        let next = Cursor::Stream(last);
        let reader = self.reader;
        let parse = move || Ok(Contents::Changes(changes(next, entries, reader)));
        let report = ctx
            .parse_and_apply("stream entries", parse, Origin::Changes)
            .await?;
        self.cursor = Some(last);
        self.checked = Some(last);
        Ok(Followed::Applied {
            report: Box::new(report),
            last,
            complete,
        })
    }

    /// A full load as a step. A population found incomplete is followed
    /// from here on (see [`Followed`]), and said so in the status; when
    /// the marker had just matched (`expected`), it is inconclusive
    /// instead, so a marker that keeps matching and then not is retried
    /// with backoff, never in a loop.
    async fn load_step(
        &mut self,
        ctx: &SyncContext,
        why: &str,
        expected: bool,
    ) -> Result<Stepped, SyncError> {
        let loaded = self.full_load(ctx, Origin::Snapshot).await?;
        let at = ctx.clock.now();
        if loaded.complete {
            ctx.status.population(at, None);
            return Ok(Stepped {
                next: Duration::ZERO,
                contact: Contact::Reached(format!(
                    "{why}full load at {}: {}",
                    loaded.tip,
                    summary(&loaded.report)
                )),
            });
        }
        let message = format!(
            "{why}the Redis population is incomplete ({}; {}): nothing removed for being absent; \
             following the stream until its writer marks it complete",
            self.keys.population,
            summary(&loaded.report)
        );
        ctx.status.population(at, Some(message.clone()));
        if expected {
            return Err(SyncError::Inconclusive(message));
        }
        tracing::warn!(marker = %self.keys.population, "{message}");
        Ok(Stepped {
            next: Duration::ZERO,
            contact: Contact::Reached(message),
        })
    }
}

/// True when `state` says entries after `cursor` may be gone.
fn lost(state: &StreamState, cursor: StreamId) -> bool {
    match state {
        // Nothing was appended since a load that found no stream either.
        StreamState::Missing => cursor != StreamId::default(),
        StreamState::Present {
            first: Some(first), ..
        } => *first > cursor,
        StreamState::Present {
            first: None,
            last_generated,
            ..
        } => *last_generated > cursor,
    }
}

impl Fetch for RedisSource {
    fn first_delay(&mut self, ctx: &SyncContext) -> Duration {
        if ctx.store.is_loaded() {
            // Loaded from the cache: carry on from its cursor (checked
            // against the stream before the first read).
            self.cursor = match ctx.store.cursor() {
                Cursor::Stream(id) => Some(id),
                // An earlier version's cache: the id packed in a number.
                Cursor::Revision(packed) => Some(StreamId::unpack_legacy(packed)),
                Cursor::None => None,
            };
        }
        Duration::ZERO
    }

    async fn step(&mut self, ctx: &SyncContext) -> Result<Stepped, SyncError> {
        let Some(cursor) = self.cursor else {
            return self.load_step(ctx, "", false).await;
        };
        let checked = self.checked.take() == Some(cursor);
        if !checked {
            if self.cursor_lost(ctx, cursor).await? {
                self.cursor = None;
                return self
                    .load_step(ctx, "entries after the cursor are gone; ", false)
                    .await;
            }
            // Reached, and it continues what is served (after a start from
            // the cache or a reconnect): live now, not after the read's
            // wait.
            let message = format!("reached: the stream continues from {cursor}");
            ctx.status.success(ctx.clock.now(), message);
        }
        let (started, block) = (Instant::now(), self.block());
        let followed = self.follow(ctx, cursor, block).await?;
        if self.incomplete && followed.completes() {
            return self
                .load_step(ctx, "the population is marked complete again; ", true)
                .await;
        }
        let (message, next) = match followed {
            Followed::Applied { report, last, .. } => (
                format!("changes up to {last}: {}", summary(&report)),
                Duration::ZERO,
            ),
            Followed::Lost => (
                format!("the stream no longer continues {cursor}; taking a full load"),
                Duration::ZERO,
            ),
            Followed::Quiet { .. } => (
                format!("no changes after {cursor}"),
                self.quiet.next(started, block, "an XREAD BLOCK"),
            ),
        };
        Ok(Stepped {
            next,
            contact: Contact::Reached(message),
        })
    }

    async fn refresh_all(
        &mut self,
        ctx: &SyncContext,
        mass_removal: MassRemoval,
    ) -> Result<(ApplyReport, String), SyncError> {
        let loaded = self.full_load(ctx, Origin::Refresh(mass_removal)).await?;
        let message = if loaded.complete {
            format!(
                "forced full load at {}: {}",
                loaded.tip,
                summary(&loaded.report)
            )
        } else {
            format!(
                "forced full load at {}: {}; the population is incomplete, nothing removed",
                loaded.tip,
                summary(&loaded.report)
            )
        };
        Ok((loaded.report, message))
    }

    async fn refresh_project(
        &mut self,
        ctx: &SyncContext,
        id: &str,
        mass_removal: MassRemoval,
    ) -> Result<(ApplyReport, String), SyncError> {
        let fetch = async {
            let mut con = match self.reads.get().await {
                Ok(con) => con,
                Err(e) => return self.failed(e),
            };
            match read_project(&mut con, &self.keys, id, self.reader).await {
                Ok(value) => Ok(value),
                Err(e) => self.failed(e),
            }
        };
        ctx.refresh_project(id, mass_removal, fetch).await
    }

    fn backoff_max(&self) -> Duration {
        self.backoff_max
    }
}
