//! `env-sidecar publish --redis URL [--sign-key FILE] FILE`: puts a
//! snapshot file into Redis for a fleet that follows it (`[source] kind =
//! "redis"`).
//!
//! Every project of the file is judged as `validate` judges it, against
//! what Redis holds (revision order, slug immutability, a reused
//! revision, the revision a signed tombstone removed). Only if all pass is
//! anything written: each project newer than Redis' written (hash field
//! and stream entry) and each project absent from the file removed, all
//! in one `MULTI`/`EXEC`, so a sidecar taking a full load meanwhile sees
//! the old snapshot or the new one, never half; the stream is trimmed as
//! it grows (`XADD … MAXLEN ~`). Removing more than
//! `--max-removed-fraction` of at least 10 projects is refused unless
//! `--allow-mass-removal`.
//!
//! With `--sign-key`, every document written is signed (`signed_at` now),
//! a removal is written as a signed tombstone (the next revision, kept in
//! the hash so a full load sees it too), and a project Redis holds at the
//! same revision without this key's signature is written re-signed (a key
//! rotation: sidecars take it as the same revision in a new envelope).
//! Without it, documents (plain or already signed by `env-sidecar sign`)
//! are written as they are.
//!
//! One line per change on stdout; exit 0, 1 when refused (nothing
//! written), 2 when the file is unreadable or malformed or Redis cannot
//! be reached.

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::input::{documents, quoted, read, Input};
use super::verdict::{judge_against, published, Verdict};
use crate::config::secret::Env;
use crate::model::keys::SigningKey;
use crate::model::trust::Trust;
use crate::model::wire::{parse_element, Content, Incoming};
use crate::store::MASS_REMOVAL_MIN_LOADED;
use crate::sync::redis::{self as redis_source, Change, RedisKeys};

/// What to publish where.
#[derive(Debug, Clone)]
pub struct Publish {
    pub redis: String,
    pub key_prefix: String,
    /// The variable holding the Redis password.
    pub password_env: String,
    pub max_removed_fraction: f64,
    pub allow_mass_removal: bool,
    pub file: Input,
    /// Sign what is written with this key.
    pub sign_key: Option<Arc<SigningKey>>,
}

pub const OK: u8 = 0;
pub const REFUSED: u8 = 1;
pub const FAILED: u8 = 2;

/// What was written, for `--wait`: `(project, revision)` of every
/// document published.
pub type Published = Vec<(String, u64)>;

pub async fn run(args: &Publish, env: &Env, out: &mut dyn Write) -> u8 {
    match publish(args, env, out).await {
        Ok(_) => OK,
        Err(status) => status,
    }
}

/// Publishes; `Ok` with what was written, or `Err` with the exit status.
pub async fn publish(args: &Publish, env: &Env, out: &mut dyn Write) -> Result<Published, u8> {
    let fail = |out: &mut dyn Write, what: &str, message: String| {
        let _ = writeln!(out, "error {what} message={}", quoted(&message));
        FAILED
    };
    let docs = read(&args.file).and_then(documents).map_err(|e| {
        fail(
            out,
            &format!("file={}", quoted(&args.file.name())),
            e.to_string(),
        )
    })?;
    let password = env.secret(&args.password_env);
    let client = redis_source::client(&args.redis, password.as_ref(), None)
        .map_err(|e| fail(out, "redis", format!("bad URL: {e}")))?;
    let timeout = Duration::from_secs(5);
    let mut con = redis_source::connect(&client, timeout, timeout)
        .await
        .map_err(|e| fail(out, "redis", format!("cannot reach Redis: {e}")))?;
    let keys = RedisKeys::new(&args.key_prefix);
    let held = redis_source::read_all(&mut con, &keys)
        .await
        .map_err(|e| fail(out, "redis", format!("cannot read {}: {e}", keys.projects)))?;
    let current = published(
        held.iter()
            .map(|(id, json)| redis_source::incoming(id, json))
            .collect(),
    );
    let now = SystemTime::now();
    let unchecked = Trust::skip_signatures();

    // Judge everything before writing anything.
    let mut writes: Vec<Outgoing> = Vec::new();
    let mut unchanged = Vec::new();
    let mut in_file = BTreeSet::new();
    let mut rejected = 0;
    for doc in docs {
        let doc = match &args.sign_key {
            Some(key) => signed(doc, key, now),
            None => doc,
        };
        let text = element_text(&doc);
        let (id, revision, verdict) = judge_against(doc, &current, &unchecked);
        in_file.insert(id.clone());
        let revision_text = revision.map_or("?".to_owned(), |r| r.to_string());
        let already_ours = |key: &SigningKey| {
            current
                .project(&id)
                .is_some_and(|p| p.signature().is_some_and(|s| s.keyids.contains(&key.keyid)))
        };
        let what = match verdict {
            Verdict::Accepted { .. } => "published",
            Verdict::Removal { .. } => "removed",
            Verdict::Resealed { .. } if args.sign_key.as_deref().is_some_and(already_ours) => {
                unchanged.push((id, revision_text));
                continue;
            }
            Verdict::Resealed { .. } => "resealed",
            Verdict::Unchanged => {
                unchanged.push((id, revision_text));
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
        writes.push(Outgoing {
            what,
            id,
            revision,
            document: Some(text),
        });
    }
    if rejected > 0 {
        let _ = writeln!(
            out,
            "refused rejected={rejected} message=\"nothing written\""
        );
        return Err(REFUSED);
    }
    let held_ids: BTreeSet<&String> = held.iter().map(|(id, _)| id).collect();
    // Projects Redis serves (a tombstone there is already a removal) that
    // the file no longer has.
    let removals: Vec<(String, u64)> = held_ids
        .into_iter()
        .filter(|id| !in_file.contains(*id))
        .filter_map(|id| current.project(id).map(|p| (id.clone(), p.revision())))
        .collect();
    let loaded = current.project_count();
    if !args.allow_mass_removal
        && loaded >= MASS_REMOVAL_MIN_LOADED
        && removals.len() as f64 > args.max_removed_fraction * loaded as f64
    {
        let _ = writeln!(
            out,
            "refused removing={} of={loaded} message={}",
            removals.len(),
            quoted(&format!(
                "would remove more than {} of the projects in Redis; nothing written (--allow-mass-removal if intended)",
                args.max_removed_fraction
            ))
        );
        return Err(REFUSED);
    }
    for (id, served) in removals {
        // Signed: a tombstone at the next revision; else a plain removal.
        let (revision, document) = match &args.sign_key {
            Some(key) => (
                Some(served + 1),
                Some(key.seal_tombstone(&id, served + 1, now)),
            ),
            None => (None, None),
        };
        writes.push(Outgoing {
            what: "removed",
            id,
            revision,
            document,
        });
    }

    for (id, revision) in &unchanged {
        let _ = writeln!(out, "unchanged project={} revision={revision}", quoted(id));
    }
    // One transaction: a sidecar taking a full load meanwhile sees the
    // snapshot before or after, never half of it.
    let changes: Vec<Change> = writes
        .iter()
        .map(|w| Change {
            project: w.id.clone(),
            document: w.document.clone(),
        })
        .collect();
    let entries = redis_source::write_changes(&mut con, &keys, &changes)
        .await
        .map_err(|e| {
            fail(
                out,
                "redis",
                format!("writing {} changes: {e}", changes.len()),
            )
        })?;
    let mut counts = [0usize; 3];
    for (w, entry) in writes.iter().zip(&entries) {
        let revision = w
            .revision
            .map_or(String::new(), |r| format!(" revision={r}"));
        let signed = if args.sign_key.is_some() {
            " signed=true"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "{} project={}{revision} entry={entry}{signed}",
            w.what,
            quoted(&w.id)
        );
        counts[match w.what {
            "published" => 0,
            "removed" => 1,
            _ => 2,
        }] += 1;
    }
    // `resealed=` only appears when something was re-signed, so the line
    // reads as it always did for unsigned fleets.
    let resealed = match counts[2] {
        0 => String::new(),
        n => format!(" resealed={n}"),
    };
    let _ = writeln!(
        out,
        "done published={} removed={} unchanged={}{resealed}",
        counts[0],
        counts[1],
        unchanged.len()
    );
    Ok(writes
        .into_iter()
        .filter(|w| w.what != "removed")
        .filter_map(|w| Some((w.id, w.revision?)))
        .collect())
}

/// One change to write.
struct Outgoing {
    /// `published`, `removed` or `resealed`.
    what: &'static str,
    id: String,
    revision: Option<u64>,
    /// The hash value and stream document; `None` for a plain removal.
    document: Option<String>,
}

/// `doc` signed with `key` (a document or tombstone; what is not readable
/// is left for the judge to reject).
fn signed(doc: Incoming, key: &SigningKey, now: SystemTime) -> Incoming {
    let text = match &doc.content {
        Content::Document(d) => key.seal_document(d, now, None),
        Content::Tombstone(_) => match doc.revision {
            Some(revision) => key.seal_tombstone(&doc.id, revision, now),
            None => return doc,
        },
        Content::Unreadable(_) => return doc,
    };
    parse_element(&text).unwrap_or(doc)
}

/// The JSON a document is written as: its envelope as it is, or the plain
/// document.
fn element_text(doc: &Incoming) -> String {
    match (&doc.seal, &doc.content) {
        (Some(seal), _) => seal.envelope.to_string(),
        (None, Content::Document(d)) => serde_json::to_string(d).unwrap_or_default(),
        (None, _) => String::new(),
    }
}
