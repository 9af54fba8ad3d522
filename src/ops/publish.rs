//! `env-sidecar publish --redis URL FILE`: puts a snapshot file into Redis
//! for a fleet that follows it (`[source] kind = "redis"`).
//!
//! Every project of the file is judged as `validate` judges it, against
//! what Redis holds (revision order, slug immutability, a reused
//! revision). Only if all pass is anything written: each project newer
//! than Redis' written (hash field and stream entry) and each project
//! absent from the file removed, all in one `MULTI`/`EXEC`, so a sidecar
//! taking a full load meanwhile sees the old snapshot or the new one,
//! never half; the stream is trimmed as it grows (`XADD … MAXLEN ~`). Removing more than
//! `--max-removed-fraction` of at least 10 projects is refused unless
//! `--allow-mass-removal`. One line per change on stdout; exit 0, 1 when
//! refused (nothing written), 2 when the file is unreadable or malformed
//! or Redis cannot be reached.

use std::collections::BTreeSet;
use std::io::Write;
use std::time::Duration;

use super::validate::{documents, judge_against, quoted, read, served, Input, Verdict};
use crate::config::secret::Env;
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
}

pub const OK: u8 = 0;
pub const REFUSED: u8 = 1;
pub const FAILED: u8 = 2;

pub async fn run(args: &Publish, env: &Env, out: &mut dyn Write) -> u8 {
    let fail = |out: &mut dyn Write, what: &str, message: String| {
        let _ = writeln!(out, "error {what} message={}", quoted(&message));
        FAILED
    };
    let docs = match read(&args.file).and_then(documents) {
        Ok(docs) => docs,
        Err(e) => {
            return fail(
                out,
                &format!("file={}", quoted(&args.file.name())),
                e.to_string(),
            )
        }
    };
    let password = env.secret(&args.password_env);
    let client = match redis_source::client(&args.redis, password.as_ref(), None) {
        Ok(c) => c,
        Err(e) => return fail(out, "redis", format!("bad URL: {e}")),
    };
    let timeout = Duration::from_secs(5);
    let mut con = match redis_source::connect(&client, timeout, timeout).await {
        Ok(c) => c,
        Err(e) => return fail(out, "redis", format!("cannot reach Redis: {e}")),
    };
    let keys = RedisKeys::new(&args.key_prefix);
    let held = match redis_source::read_all(&mut con, &keys).await {
        Ok(all) => all,
        Err(e) => return fail(out, "redis", format!("cannot read {}: {e}", keys.projects)),
    };
    let held_ids: BTreeSet<String> = held.iter().map(|(id, _)| id.clone()).collect();
    let current = served(
        held.iter()
            .map(|(id, json)| redis_source::incoming(id, json))
            .collect(),
    );

    // Judge everything before writing anything.
    let mut writes = Vec::new();
    let mut unchanged = Vec::new();
    let mut in_file = BTreeSet::new();
    let mut rejected = 0;
    for doc in docs {
        let json = doc
            .as_ref()
            .ok()
            .and_then(|d| serde_json::to_string(d).ok());
        let (id, revision, verdict) = judge_against(doc, &current);
        in_file.insert(id.clone());
        let revision = revision.map_or("?".to_owned(), |r| r.to_string());
        let verdict = match (verdict, json) {
            (Verdict::Accepted, None) => Verdict::Rejected {
                reason: "malformed",
                message: "the document cannot be written back as JSON".into(),
            },
            (verdict, json) => {
                if let (Verdict::Accepted, Some(json)) = (&verdict, json) {
                    writes.push((id.clone(), revision.clone(), json));
                }
                verdict
            }
        };
        match verdict {
            Verdict::Accepted => {}
            Verdict::Unchanged => unchanged.push((id, revision)),
            Verdict::Rejected { reason, message } => {
                rejected += 1;
                let _ = writeln!(
                    out,
                    "rejected project={} revision={revision} reason={reason} message={}",
                    quoted(&id),
                    quoted(&message)
                );
            }
        }
    }
    if rejected > 0 {
        let _ = writeln!(
            out,
            "refused rejected={rejected} message=\"nothing written\""
        );
        return REFUSED;
    }
    let removals: Vec<&String> = held_ids.difference(&in_file).collect();
    let loaded = held_ids.len();
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
        return REFUSED;
    }

    for (id, revision) in &unchanged {
        let _ = writeln!(out, "unchanged project={} revision={revision}", quoted(id));
    }
    // One transaction: a sidecar taking a full load meanwhile sees the
    // snapshot before or after, never half of it.
    let changes: Vec<Change> = writes
        .iter()
        .map(|(id, _, json)| Change {
            project: id.clone(),
            document: Some(json.clone()),
        })
        .chain(removals.iter().map(|id| Change {
            project: (*id).clone(),
            document: None,
        }))
        .collect();
    let entries = match redis_source::write_changes(&mut con, &keys, &changes).await {
        Ok(entries) => entries,
        Err(e) => {
            return fail(
                out,
                "redis",
                format!("writing {} changes: {e}", changes.len()),
            )
        }
    };
    for (change, entry) in changes.iter().zip(&entries) {
        match &change.document {
            Some(_) => {
                let revision = writes
                    .iter()
                    .find(|(id, _, _)| *id == change.project)
                    .map_or("?", |(_, r, _)| r.as_str());
                let _ = writeln!(
                    out,
                    "published project={} revision={revision} entry={entry}",
                    quoted(&change.project)
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "removed project={} entry={entry}",
                    quoted(&change.project)
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "done published={} removed={} unchanged={}",
        writes.len(),
        removals.len(),
        unchanged.len()
    );
    OK
}
