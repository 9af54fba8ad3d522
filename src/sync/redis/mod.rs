//! The Redis source: follows a `{P}:projects` hash and a `{P}:changes`
//! stream that a publisher (`env-sidecar publish`, the control plane, the
//! simulator) writes in one `MULTI`/`EXEC` per change, with a population
//! marker (`{P}:population`) saying when the hash holds a complete
//! population. For fleets: every sidecar follows Redis (a replica, a
//! cluster, a sentinel-managed set: see [`connection`]) instead of the
//! control plane.
//!
//! * **Full load**: the stream's last generated id becomes the cursor
//!   (`0-0` when the stream is missing), then the hash is read in bounded
//!   chunks ([`read::read_projects`]). When the marker is there, matches
//!   the fields read and did not move meanwhile, the population is
//!   complete: applied as a full snapshot (absent projects removed, under
//!   the blast-radius guard). Otherwise Redis lost data or is being
//!   repopulated: what is there is applied, **nothing is removed**, and
//!   the step is inconclusive, so full loads repeat with backoff until the
//!   population is complete again.
//! * **Follow**: `XREAD BLOCK <long_poll_wait> COUNT 512 STREAMS
//!   {P}:changes <cursor>` on a connection of its own (a forced refresh
//!   never waits behind it); each batch is a change batch.
//! * **Lost entries**: after an `XREAD` returns entries (the stream may
//!   have been deleted and recreated while it blocked), and before the
//!   next `XREAD` unless that check just found the stream continuing,
//!   the stream is checked: missing while the cursor is past `0-0`, its
//!   first entry newer than the cursor, or empty while its last generated
//!   id is newer: entries may be gone, so a full load (the Redis form of
//!   `410`). A missing stream with the cursor at `0-0` is nothing new:
//!   the `XREAD` waits for it.
//! * Every failed or inconclusive step backs off ([`super::run`]); every
//!   request is counted once ([`SyncContext::request`]).
//!
//! The cursor (a stream id `ms-seq`) is kept as one
//! ([`Cursor::Stream`]) in the store, the last-known-good cache, the
//! status and the node report. A cache written by an earlier version
//! holds it packed into a number; it is unpacked when the sidecar starts.

use std::sync::Arc;
use std::time::Duration;

pub mod connection;
pub mod keys;
pub mod read;

pub use connection::{Conn, Connector, Lazy, Role};
pub use keys::{
    population, remove_project, write_changes, write_project, Change, Population, RedisKeys,
    STREAM_MAX_LEN,
};
use read::{changes, stream_entries, stream_state, StreamState};
pub use read::{read_project, read_projects, StreamBackwards};

use redis::Value;

use super::refresh::{RefreshRequest, Scope};
use super::{summary, Contact, FetchError, Origin, Source, Stepped, SyncContext, SyncError};
use crate::config::RedisConfig;
use crate::model::cursor::Cursor;
pub use crate::model::cursor::StreamId;
use crate::model::wire::{Reader, SnapshotBody};
use crate::store::{ApplyReport, Update};
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
    /// The cursor the stream was last found to continue, right after the
    /// read that moved the cursor there: the check before the next read
    /// would ask the same again (the check after that read catches any
    /// loss in between), so it is skipped once.
    checked: Option<StreamId>,
    /// The last full load found the population incomplete: full loads
    /// repeat until it is complete.
    incomplete: bool,
    /// How large one document may be.
    reader: Reader,
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

impl RedisSource {
    /// Follows `config` through `connector` (whose response timeout must
    /// be longer than `long_poll_wait`).
    pub fn new(connector: Arc<Connector>, config: &RedisConfig, reader: Reader) -> RedisSource {
        RedisSource {
            reads: Lazy::new(connector.clone(), Role::Reader),
            follow: Lazy::new(connector, Role::Reader),
            keys: RedisKeys::new(&config.key_prefix),
            long_poll_wait: config.timing.long_poll_wait,
            backoff_max: config.timing.backoff_max,
            cursor: None,
            checked: None,
            incomplete: false,
            reader,
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
    async fn full_load(
        &mut self,
        ctx: &SyncContext,
        origin: Origin,
        allow: bool,
    ) -> Result<Loaded, SyncError> {
        let count = |l: &Loaded| {
            if l.complete {
                SyncResult::Ok
            } else {
                SyncResult::Error
            }
        };
        let load = self.load_all(ctx, origin, allow);
        ctx.request(SyncKind::Snapshot, count, load).await
    }

    /// [`full_load`](Self::full_load), uncounted.
    async fn load_all(
        &mut self,
        ctx: &SyncContext,
        origin: Origin,
        allow: bool,
    ) -> Result<Loaded, SyncError> {
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
            let tip = match stream_state(&mut con, &self.keys).await? {
                StreamState::Missing => StreamId::default(),
                StreamState::Present { last_generated, .. } => last_generated,
            };
            let (marker, fields) = population(&mut con, &self.keys).await?;
            let all = if fields == 0 {
                Vec::new()
            } else {
                let reader = self.reader.on_every_core(!ctx.store.is_loaded());
                read_projects(&mut con, &self.keys, reader).await?
            };
            // Complete when the marker is there, matches what was read and
            // did not move meanwhile.
            let complete = match marker {
                None => false,
                Some(m) => m == all.len() && population(&mut con, &self.keys).await?.0 == Some(m),
            };
            Ok::<_, redis::RedisError>((tip, all, complete))
        };
        let (tip, all, complete) = match read.await {
            Ok(v) => v,
            Err(e) => return self.failed(e),
        };
        let cursor = Cursor::Stream(tip);
        let parse = move || {
            Ok(Update::Snapshot(SnapshotBody {
                cursor,
                projects: all,
                partial: !complete,
                ..SnapshotBody::default()
            }))
        };
        let report = ctx
            .parse_and_apply("redis hash", parse, origin, allow)
            .await?;
        self.cursor = Some(tip);
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
                Ok(state) => Ok(lost(&state, cursor)),
                Err(e) => self.failed(e),
            }
        };
        ctx.request(SyncKind::Changes, |_| SyncResult::Ok, check)
            .await
    }

    /// One `XREAD BLOCK`, applied; `None` when nothing came, `Some(None)`
    /// when what came does not continue the cursor (the stream was
    /// recreated meanwhile: a full load is needed).
    async fn follow(
        &mut self,
        ctx: &SyncContext,
        cursor: StreamId,
    ) -> Result<Option<Option<(ApplyReport, StreamId)>>, SyncError> {
        let count = |got: &Option<Option<_>>| match got {
            Some(_) => SyncResult::Ok,
            None => SyncResult::NotModified,
        };
        let read = self.read_changes(ctx, cursor);
        ctx.request(SyncKind::Changes, count, read).await
    }

    /// [`follow`](Self::follow), uncounted.
    async fn read_changes(
        &mut self,
        ctx: &SyncContext,
        cursor: StreamId,
    ) -> Result<Option<Option<(ApplyReport, StreamId)>>, SyncError> {
        let mut con = match self.follow.get().await {
            Ok(con) => con,
            Err(e) => {
                self.follow.reset();
                return Err(FetchError::Redis(e).into());
            }
        };
        let reply: Value = match redis::cmd("XREAD")
            .arg("BLOCK")
            .arg(self.long_poll_wait.as_millis() as u64)
            .arg("COUNT")
            .arg(XREAD_COUNT)
            .arg("STREAMS")
            .arg(&self.keys.changes)
            .arg(cursor.to_string())
            .query_async(&mut con)
            .await
        {
            Ok(v) => v,
            Err(e) => {
                self.follow.reset();
                return Err(FetchError::Redis(e).into());
            }
        };
        let entries = stream_entries(reply, self.reader.max_document_bytes);
        let Some(last) = entries.last().map(|(id, _, _)| *id) else {
            return Ok(None);
        };
        // The stream may have been deleted and recreated while the read
        // blocked: then these entries do not continue the cursor.
        let mut check = match self.reads.get().await {
            Ok(con) => con,
            Err(e) => return self.failed(e),
        };
        match stream_state(&mut check, &self.keys).await {
            Ok(state) if lost(&state, cursor) => {
                self.cursor = None;
                return Ok(Some(None));
            }
            Ok(_) => {}
            Err(e) => return self.failed(e),
        }
        let cursor = Cursor::Stream(last);
        let reader = self.reader;
        let parse = move || Ok(Update::Changes(changes(cursor, entries, reader)));
        let report = ctx
            .parse_and_apply("stream entries", parse, Origin::Changes, false)
            .await?;
        self.cursor = Some(last);
        self.checked = Some(last);
        Ok(Some(Some((report, last))))
    }

    /// A full load as a step: inconclusive (an error, so the loop backs
    /// off) while the population is incomplete.
    async fn load_step(&mut self, ctx: &SyncContext, why: &str) -> Result<Stepped, SyncError> {
        let loaded = self.full_load(ctx, Origin::Snapshot, false).await?;
        if !loaded.complete {
            return Err(SyncError::Inconclusive(format!(
                "{why}the Redis population is incomplete ({}; {}): nothing removed, loading again",
                self.keys.population,
                summary(&loaded.report)
            )));
        }
        Ok(Stepped {
            next: Duration::ZERO,
            contact: Contact::Reached(format!(
                "{why}full load at {}: {}",
                loaded.tip,
                summary(&loaded.report)
            )),
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
        } => *last_generated > cursor,
    }
}

impl Source for RedisSource {
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
        let cursor = match self.cursor {
            Some(_) if self.incomplete => return self.load_step(ctx, "").await,
            None => return self.load_step(ctx, "").await,
            Some(cursor) => cursor,
        };
        let checked = self.checked.take() == Some(cursor);
        if !checked && self.cursor_lost(ctx, cursor).await? {
            self.cursor = None;
            return self
                .load_step(ctx, "entries after the cursor are gone; ")
                .await;
        }
        match self.follow(ctx, cursor).await? {
            Some(Some((report, last))) => Ok(Stepped {
                next: Duration::ZERO,
                contact: Contact::Reached(format!("changes up to {last}: {}", summary(&report))),
            }),
            Some(None) => Ok(Stepped {
                next: Duration::ZERO,
                contact: Contact::Reached(format!(
                    "the stream no longer continues {cursor}; taking a full load"
                )),
            }),
            None => Ok(Stepped {
                next: Duration::ZERO,
                contact: Contact::Reached(format!("no changes after {cursor}")),
            }),
        }
    }

    async fn refresh(
        &mut self,
        ctx: &SyncContext,
        request: &RefreshRequest,
    ) -> Result<(ApplyReport, String), SyncError> {
        let allow = request.allow_mass_removal;
        match &request.scope {
            Scope::All => {
                let loaded = self.full_load(ctx, Origin::Refresh, allow).await?;
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
            Scope::Project(id) => {
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
                ctx.refresh_project(id, allow, fetch).await
            }
        }
    }

    fn backoff_max(&self) -> Duration {
        self.backoff_max
    }
}
