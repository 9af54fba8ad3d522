//! `env-sidecar publish --redis URL [--sign-key FILE] [--trust-key FILE]
//! FILE`: puts a snapshot file into Redis for a fleet that follows it
//! (`[source] kind = "redis"`).
//!
//! Every project of the file is judged as `validate` judges it, against
//! what the fleet can be serving (revision order, slug immutability, a
//! reused revision, the revision a signed tombstone removed). Only if all
//! pass is anything written: each project newer than that written (hash
//! field, stream entry and change position, a batch in one script) and
//! each project absent from the file removed. Every write is fenced on
//! where the stream ended when Redis was read (read before the hash): if
//! Redis no longer ends there (flushed, failed over to a replica that was
//! behind, written by another writer), nothing is written and the whole
//! publish reads and judges again (`ops::retry`), so a diff is never
//! marked as a complete population on a hash that lost data; the stream is trimmed as it grows (`XADD …
//! MAXLEN ~`). Up to [`CHUNK_CHANGES`] changes (and about
//! [`CHUNK_BYTES`]) go in one transaction with the population marker set,
//! so a sidecar taking a full load meanwhile sees the old snapshot or the
//! new one, never half. More are written in transactions of that size:
//! the first removes the marker and the last sets it, so a full load in
//! between finds the population incomplete and removes nothing (a
//! publish of 100 000 signed projects is ~250 MB: one transaction of that
//! size would block Redis for seconds and outlast any timeout). On a
//! terminal, progress is shown on stderr. Removing more than
//! `--max-removed-fraction` of at least 10 projects is refused unless
//! `--allow-mass-removal`.
//!
//! # What the fleet can be serving
//!
//! With `--sign-key` or `--trust-key`, a signed fleet is assumed, and
//! publishing trusts only what it can verify (the public half of the
//! signing key, and every `--trust-key`): a hash value no trusted key
//! signed is named in the output (`unverified`) and never decides
//! anything, since the fleet refuses it as the sidecars do. For such a
//! project the newest verifiable entry of the stream (the change log
//! every publish appends to) stands in: that is what the fleet took last.
//! When neither holds anything verifiable, the fleet serves nothing of
//! the project as far as Redis shows: a file that has it publishes it as
//! new; a file that lacks it removes nothing (no tombstone is signed for
//! an id an attacker invented). Times do not matter here: an expired
//! document still holds its revision on the nodes that took it.
//!
//! Without keys, documents are judged as Redis holds them.
//!
//! With `--sign-key`, every document written is signed (`signed_at` now),
//! a removal is written as a signed tombstone at the next revision above
//! the verified one, and a project Redis holds at the same revision
//! without this key's signature is written re-signed (a key rotation:
//! sidecars take it as the same revision in a newer envelope). Without
//! it, documents (plain or already signed by `env-sidecar sign`) are
//! written as they are.
//!
//! One line per change on stdout; exit 0, 1 when refused (nothing
//! written), 2 when the file is unreadable or malformed or Redis cannot
//! be reached.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::Arc;
use std::time::SystemTime;

use crate::redis_client::Conn;

use super::input::{documents, quoted, read, Input};
use super::retry::RetryFor;
use super::target::{RedisTarget, TargetError};
use super::verdict::{judge_against, published, Verdict};
use crate::config::secret::Env;
use crate::model::keys::{PublicKey, SigningKey};
use crate::model::trust::Trust;
use crate::model::wire::{parse_element, BodyReader, Content, Incoming, Opened, Payload};
use crate::redis_client::{self as redis_source, Change, Population, RedisKeys};
use crate::store::{is_mass_removal, Store};

/// What to publish where.
#[derive(Debug, Clone)]
pub struct Publish {
    pub redis: RedisTarget,
    pub max_removed_fraction: f64,
    pub allow_mass_removal: bool,
    pub file: Input,
    /// Sign what is written with this key.
    pub sign_key: Option<Arc<SigningKey>>,
    /// Keys whose signatures on what Redis holds are believed, beside the
    /// public half of `sign_key`.
    pub trust_keys: Vec<PublicKey>,
}

pub const OK: u8 = 0;
pub const REFUSED: u8 = 1;
pub const FAILED: u8 = 2;

/// What `--wait` waits for: `(project, revision)` of every document
/// written; when nothing was written (the file is what Redis holds
/// already, as when a pipeline runs again after a wait timed out), of
/// every document of the file.
pub type Published = Vec<(String, u64)>;

/// Publishes, retrying what a failover makes fail for up to `retry`
/// (saying on `note` what it waits for; see [`super::retry`] for why a
/// retry never writes twice): what was written, or the exit status once
/// the reason is on `out`.
pub async fn run(
    args: &Publish,
    env: &Env,
    retry: RetryFor,
    out: &mut dyn Write,
    note: &mut dyn Write,
) -> Result<Published, u8> {
    let mut retrier = retry.retrier();
    loop {
        match publish(args, env, out).await {
            Ok(published) => return Ok(published),
            Err(e) if retrier.again(&e, note).await => continue,
            Err(e) => return Err(e.report(out)),
        }
    }
}

/// Why nothing was published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("{source}")]
    File {
        name: String,
        #[source]
        source: super::input::InputError,
    },
    #[error(transparent)]
    Connect(#[from] TargetError),
    #[error("cannot read {what}: {source}")]
    Read {
        what: String,
        #[source]
        source: redis::RedisError,
    },
    #[error(
        "writing {count} changes: {source}; {written} were written before it (the population \
         stays marked incomplete, so sidecars remove nothing, until a publish completes)"
    )]
    Write {
        count: usize,
        written: usize,
        #[source]
        source: redis::RedisError,
    },
    /// Documents of the file were rejected (each said why on its line).
    #[error("nothing written")]
    Rejected { count: usize },
    #[error(
        "would remove more than {fraction} of the projects in Redis; nothing written \
         (--allow-mass-removal if intended)"
    )]
    MassRemoval {
        removing: usize,
        of: usize,
        fraction: f64,
    },
}

impl super::retry::MaybeTransient for PublishError {
    fn redis_error(&self) -> Option<&redis::RedisError> {
        match self {
            PublishError::Connect(TargetError::Connect(e))
            | PublishError::Read { source: e, .. }
            | PublishError::Write { source: e, .. } => Some(e),
            _ => None,
        }
    }
}

impl PublishError {
    /// The exit status: 1 when refused (nothing written), 2 when the file
    /// or Redis could not be used.
    pub fn status(&self) -> u8 {
        match self {
            PublishError::Rejected { .. } | PublishError::MassRemoval { .. } => REFUSED,
            _ => FAILED,
        }
    }

    /// Writes the error's line (the one rendering); the exit status.
    pub fn report(&self, out: &mut dyn Write) -> u8 {
        let message = quoted(&self.to_string());
        let _ = match self {
            PublishError::File { name, .. } => {
                writeln!(out, "error file={} message={message}", quoted(name))
            }
            PublishError::Rejected { count } => {
                writeln!(out, "refused rejected={count} message={message}")
            }
            PublishError::MassRemoval { removing, of, .. } => {
                writeln!(out, "refused removing={removing} of={of} message={message}")
            }
            _ => writeln!(out, "error redis message={message}"),
        };
        self.status()
    }
}

/// What one write does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// A new revision, or a new project.
    Published,
    /// The served revision, re-signed.
    Resealed,
    /// A removal (a signed tombstone, or a plain delete).
    Removed,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Published => "published",
            Action::Resealed => "resealed",
            Action::Removed => "removed",
        }
    }
}

/// At most this many changes in one transaction.
pub const CHUNK_CHANGES: usize = 1000;
/// A transaction is closed once its documents reach this many bytes.
pub const CHUNK_BYTES: usize = 8 << 20;

/// `writes` in transactions of at most [`CHUNK_CHANGES`] changes and
/// about [`CHUNK_BYTES`]; one (empty) when there is nothing to write, so
/// the marker is still set.
fn chunks(writes: &[Outgoing]) -> Vec<&[Outgoing]> {
    let mut chunks = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, w) in writes.iter().enumerate() {
        let size = w.document.as_ref().map_or(0, String::len) + w.id.len();
        if i > start && (i - start == CHUNK_CHANGES || bytes + size > CHUNK_BYTES) {
            chunks.push(&writes[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    chunks.push(&writes[start..]);
    chunks
}

/// `written/total changes` on stderr, redrawn in place, when stderr is a
/// terminal and the write takes several transactions.
struct Progress {
    total: Option<usize>,
}

impl Progress {
    fn on_terminal(total: usize) -> Progress {
        use std::io::IsTerminal;
        let shown = std::io::stderr().is_terminal() && total > CHUNK_CHANGES;
        Progress {
            total: shown.then_some(total),
        }
    }

    fn show(&self, written: usize) {
        if let Some(total) = self.total {
            eprint!("\rwriting to Redis: {written}/{total} changes");
        }
    }

    fn done(&self) {
        if self.total.is_some() {
            eprintln!();
        }
    }
}

/// One change to write.
struct Outgoing {
    action: Action,
    id: String,
    revision: Option<u64>,
    /// The hash value and stream document; `None` for a plain removal.
    document: Option<String>,
}

/// Publishes; `Ok` with what was written, or why nothing was (the lines
/// of what was judged are written to `out` either way). The phases: read
/// the file and what Redis holds (the fence first), judge every document
/// against it, add the removals, then write, fenced.
pub async fn publish(
    args: &Publish,
    env: &Env,
    out: &mut dyn Write,
) -> Result<Published, PublishError> {
    let docs = read(&args.file)
        .and_then(documents)
        .map_err(|source| PublishError::File {
            name: args.file.name(),
            source,
        })?;
    let mut con = args.redis.connect(env).await?;
    let keys = args.redis.keys();
    let trust = args.reading_trust();
    // Where the stream ends, read before the hash: every write below is
    // fenced on it, so Redis losing or changing what was read (a flush, a
    // failover to a replica that was behind, another writer) aborts the
    // write instead of getting a diff marked complete (`ops::retry` then
    // reads again).
    let fence = redis_source::stream_end(&mut con, &keys)
        .await
        .map_err(|source| PublishError::Read {
            what: keys.changes.clone(),
            source,
        })?;
    let truth = Truth::read(&mut con, &keys, &trust)
        .await
        .map_err(|source| PublishError::Read {
            what: keys.projects.clone(),
            source,
        })?;
    for (id, why) in &truth.unverified {
        let _ = writeln!(
            out,
            "unverified project={} message={}",
            quoted(id),
            quoted(why)
        );
    }
    let now = SystemTime::now();
    let mut plan = args.judge(docs, &truth.store, &trust, now, out)?;
    plan.writes
        .extend(args.removals(&truth.store, &plan.in_file, now)?);
    for (id, revision) in &plan.unchanged {
        let _ = writeln!(out, "unchanged project={} revision={revision}", quoted(id));
    }
    let counts = args
        .write(&mut con, &keys, &plan.writes, fence, out)
        .await?;
    let count = |action: Action| counts.get(action.as_str()).copied().unwrap_or(0);
    // `resealed=` only appears when something was re-signed, so the line
    // reads as it always did for unsigned fleets.
    let resealed = match count(Action::Resealed) {
        0 => String::new(),
        n => format!(" resealed={n}"),
    };
    let _ = writeln!(
        out,
        "done published={} removed={} unchanged={}{resealed}",
        count(Action::Published),
        count(Action::Removed),
        plan.unchanged.len()
    );
    Ok(plan.published())
}

/// What judging the file against Redis gave.
struct Plan {
    writes: Vec<Outgoing>,
    /// `(project, revision)` of what Redis holds already.
    unchanged: Vec<(String, String)>,
    in_file: BTreeSet<String>,
}

impl Plan {
    /// What `--wait` waits for: every document written (removals aside),
    /// or, when nothing was, every unchanged one.
    fn published(self) -> Published {
        let written: Published = self
            .writes
            .into_iter()
            .filter(|w| w.action != Action::Removed)
            .filter_map(|w| Some((w.id, w.revision?)))
            .collect();
        if !written.is_empty() {
            return written;
        }
        self.unchanged
            .into_iter()
            .filter_map(|(id, revision)| Some((id, revision.parse().ok()?)))
            .collect()
    }
}

impl Publish {
    /// Judges every document of the file (signed first with `--sign-key`)
    /// against `current`, before anything is written: the writes, or
    /// `Rejected` once every rejection is on `out`.
    fn judge(
        &self,
        docs: Vec<Incoming>,
        current: &Store,
        trust: &Trust,
        now: SystemTime,
        out: &mut dyn Write,
    ) -> Result<Plan, PublishError> {
        let mut plan = Plan {
            writes: Vec::new(),
            unchanged: Vec::new(),
            in_file: BTreeSet::new(),
        };
        let mut rejected = 0;
        for doc in docs {
            let doc = match &self.sign_key {
                Some(key) => signed(doc, key, now),
                None => doc,
            };
            let text = element_text(&doc);
            let (id, revision, verdict) = judge_against(doc, current, trust);
            plan.in_file.insert(id.clone());
            let revision_text = revision.map_or("?".to_owned(), |r| r.to_string());
            let already_ours = |key: &SigningKey| {
                current
                    .project(&id)
                    .is_some_and(|p| p.signature().is_some_and(|s| s.keyids.contains(&key.keyid)))
            };
            let action = match verdict {
                Verdict::Accepted { .. } => Action::Published,
                Verdict::Removal { .. } => Action::Removed,
                Verdict::Resealed { .. } if self.sign_key.as_deref().is_some_and(already_ours) => {
                    plan.unchanged.push((id, revision_text));
                    continue;
                }
                Verdict::Resealed { .. } => Action::Resealed,
                Verdict::Unchanged => {
                    plan.unchanged.push((id, revision_text));
                    continue;
                }
                Verdict::Rejected { reason, message } => {
                    rejected += 1;
                    let _ = writeln!(
                        out,
                        "rejected project={} revision={revision_text} reason={reason} message={}",
                        quoted(&id),
                        quoted(&message)
                    );
                    continue;
                }
            };
            plan.writes.push(Outgoing {
                action,
                id,
                revision,
                document: Some(text),
            });
        }
        if rejected > 0 {
            return Err(PublishError::Rejected { count: rejected });
        }
        Ok(plan)
    }

    /// The removal of every project the fleet can be serving that the
    /// file no longer has (a signed tombstone at the next revision with
    /// `--sign-key`, else a plain removal), unless that is a mass removal.
    fn removals(
        &self,
        current: &Store,
        in_file: &BTreeSet<String>,
        now: SystemTime,
    ) -> Result<Vec<Outgoing>, PublishError> {
        let removals: Vec<(String, u64)> = current
            .projects()
            .iter()
            .filter(|p| !in_file.contains(p.id()))
            .map(|p| (p.id().to_owned(), p.revision()))
            .collect();
        let loaded = current.project_count();
        if !self.allow_mass_removal
            && is_mass_removal(removals.len(), loaded, self.max_removed_fraction)
        {
            return Err(PublishError::MassRemoval {
                removing: removals.len(),
                of: loaded,
                fraction: self.max_removed_fraction,
            });
        }
        Ok(removals
            .into_iter()
            .map(|(id, served)| {
                let (revision, document) = match &self.sign_key {
                    Some(key) => (
                        Some(served + 1),
                        Some(key.seal_tombstone(&id, served + 1, now)),
                    ),
                    None => (None, None),
                };
                Outgoing {
                    action: Action::Removed,
                    id,
                    revision,
                    document,
                }
            })
            .collect())
    }

    /// Writes `writes` in bounded transactions, each fenced on where the
    /// stream ended (`fence`, then the last entry the previous one added),
    /// one line each on `out`; how many of each action were written.
    async fn write(
        &self,
        con: &mut Conn,
        keys: &RedisKeys,
        writes: &[Outgoing],
        mut fence: String,
        out: &mut dyn Write,
    ) -> Result<BTreeMap<&'static str, usize>, PublishError> {
        let progress = Progress::on_terminal(writes.len());
        let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
        let chunks = chunks(writes);
        let mut written = 0;
        for (i, chunk) in chunks.iter().enumerate() {
            // The file is the whole population: Redis holds it complete
            // after the last write (also when nothing changed but Redis had
            // lost its marker); while a write of several transactions is
            // under way it is marked incomplete.
            let population = match (i, chunks.len()) {
                (_, 1) => Population::Complete,
                (0, _) => Population::Incomplete,
                (i, n) if i + 1 == n => Population::Complete,
                _ => Population::Untouched,
            };
            let changes: Vec<Change> = chunk
                .iter()
                .map(|w| Change {
                    project: w.id.clone(),
                    document: w.document.clone(),
                })
                .collect();
            let entries =
                redis_source::write_changes_after(con, keys, &changes, population, &fence)
                    .await
                    .map_err(|source| PublishError::Write {
                        count: writes.len(),
                        written,
                        source,
                    })?;
            if let Some(last) = entries.last() {
                fence.clone_from(last);
            }
            for (w, entry) in chunk.iter().zip(&entries) {
                let revision = w
                    .revision
                    .map_or(String::new(), |r| format!(" revision={r}"));
                let signed = if self.sign_key.is_some() {
                    " signed=true"
                } else {
                    ""
                };
                let _ = writeln!(
                    out,
                    "{} project={}{revision} entry={entry}{signed}",
                    w.action.as_str(),
                    quoted(&w.id)
                );
                *counts.entry(w.action.as_str()).or_default() += 1;
            }
            written += chunk.len();
            progress.show(written);
        }
        progress.done();
        Ok(counts)
    }
}

impl Publish {
    /// What judges Redis' content: the signing key's public half and the
    /// trusted keys (a signed fleet), or nothing checked (no keys given).
    fn reading_trust(&self) -> Trust {
        let mut keys = self.trust_keys.clone();
        if let Some(key) = &self.sign_key {
            let public = key.public();
            if !keys.contains(&public) {
                keys.push(public);
            }
        }
        if keys.is_empty() {
            Trust::skip_signatures()
        } else {
            Trust::for_publisher(keys)
        }
    }
}

/// What the fleet can be serving, as far as Redis shows it verifiably.
struct Truth {
    /// The verified projects (and the floors of verified tombstones).
    store: Store,
    /// Projects whose hash value no trusted key signed, and what was
    /// wrong with it.
    unverified: Vec<(String, String)>,
}

impl Truth {
    async fn read(con: &mut Conn, keys: &RedisKeys, trust: &Trust) -> redis::RedisResult<Truth> {
        let held = redis_source::read_projects(con, keys, BodyReader::default(), &|_| None).await?;
        let store = published(held, &[], trust);
        // What the hash holds that did not verify: the stream's newest
        // verifiable entry of that project stands in for it.
        let rejected: Vec<(String, String)> = store
            .all_rejections()
            .into_iter()
            .map(|r| (r.project, format!("{}: {}", r.reason.as_str(), r.message)))
            .collect();
        if rejected.is_empty() {
            return Ok(Truth {
                store,
                unverified: Vec::new(),
            });
        }
        let wanted: BTreeSet<String> = rejected.iter().map(|(id, _)| id.clone()).collect();
        let found = newest_verified(con, keys, trust, &wanted).await?;
        let unverified = rejected
            .into_iter()
            .map(|(id, why)| {
                let stands_in = found
                    .iter()
                    .find(|d| d.id == id)
                    .and_then(|d| d.clone().open()?.ok())
                    .map(|opened| opened.revision);
                let message = match stands_in {
                    Some(revision) => format!(
                        "the hash value is not believed ({why}); judged against the stream's \
                         last verified change of it (revision {revision})"
                    ),
                    None => format!(
                        "Redis holds nothing a trusted key signed for this project ({why}); \
                         judged as if the fleet serves none of it"
                    ),
                };
                (id, message)
            })
            .collect();
        let mut docs: Vec<Incoming> = store
            .projects()
            .iter()
            .filter_map(|p| parse_element(&p.stored_text().ok()?).ok())
            .collect();
        docs.extend(found);
        let store = published(docs, &store.floors(), trust);
        Ok(Truth { store, unverified })
    }
}

/// For each project of `wanted`, its newest stream entry that a trusted
/// key signed (a document or a tombstone), read from the newest back.
async fn newest_verified(
    con: &mut Conn,
    keys: &RedisKeys,
    trust: &Trust,
    wanted: &BTreeSet<String>,
) -> redis::RedisResult<Vec<Incoming>> {
    let mut missing = wanted.clone();
    let mut found = Vec::new();
    let reader = BodyReader::default();
    let mut entries = redis_source::StreamBackwards::new(keys);
    while !missing.is_empty() {
        let Some(batch) = entries.next(con, reader.max_document_bytes).await? else {
            break;
        };
        for entry in batch {
            let (Some(project), redis_source::EntryChange::Document(json)) =
                (entry.project, entry.change)
            else {
                continue;
            };
            if !missing.contains(&project) {
                continue;
            }
            let incoming = reader.filed(&project, &json);
            if verified(trust, &incoming) {
                missing.remove(&project);
                found.push(incoming);
            }
        }
    }
    Ok(found)
}

/// True when `incoming` is an envelope a trusted key signed, and it reads.
fn verified(trust: &Trust, incoming: &Incoming) -> bool {
    incoming
        .seal()
        .is_some_and(|seal| trust.verify(seal).is_ok())
        && incoming.clone().open().is_some_and(|opened| opened.is_ok())
}

/// `doc` signed with `key` (a document or tombstone, opened unchecked:
/// the operator re-signs what the file holds; what is not readable is
/// left for the judge to reject).
fn signed(doc: Incoming, key: &SigningKey, now: SystemTime) -> Incoming {
    let text = match &doc.content {
        Content::Document(d) => key.seal_document(d, now, None),
        Content::Sealed(_) => match doc.clone().open() {
            Some(Ok(Opened {
                payload: Payload::Document(d),
                ..
            })) => key.seal_document(&d, now, None),
            Some(Ok(Opened {
                id,
                revision,
                payload: Payload::Tombstone(_),
                ..
            })) => key.seal_tombstone(&id, revision, now),
            _ => return doc,
        },
        Content::Unreadable(_) | Content::TooLarge(_) | Content::AsServed(_) => return doc,
    };
    parse_element(&text).unwrap_or(doc)
}

/// The JSON a document is written as: its envelope as it is, or the plain
/// document.
fn element_text(doc: &Incoming) -> String {
    match &doc.content {
        Content::Sealed(seal) => seal.envelope.to_string(),
        Content::Document(d) => serde_json::to_string(d).unwrap_or_default(),
        Content::Unreadable(_) | Content::TooLarge(_) | Content::AsServed(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(id: usize, bytes: usize) -> Outgoing {
        Outgoing {
            action: Action::Published,
            id: format!("p{id}"),
            revision: Some(1),
            document: Some("x".repeat(bytes)),
        }
    }

    #[test]
    fn transactions_are_bounded_by_count_and_bytes_and_cover_every_write() {
        let many: Vec<Outgoing> = (0..2500).map(|i| write(i, 10)).collect();
        let sizes: Vec<usize> = chunks(&many).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, [1000, 1000, 500]);
        // 3 MB documents: two fit under 8 MiB, the third opens a new one.
        let large: Vec<Outgoing> = (0..5).map(|i| write(i, 3 << 20)).collect();
        let sizes: Vec<usize> = chunks(&large).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, [2, 2, 1]);
        // One larger than the bound still goes, alone.
        let huge = vec![write(0, 9 << 20), write(1, 10)];
        let sizes: Vec<usize> = chunks(&huge).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, [1, 1]);
        // Nothing to write: one empty transaction (it sets the marker).
        assert_eq!(chunks(&[]).len(), 1);
        assert!(chunks(&[])[0].is_empty());
    }
}
