//! `conformance --redis URL`: a keyspace as a writer left it, against
//! writer rules 1 and 2 (docs/control-plane.md, "Keys, and the rules for
//! a writer"): the keys' types, the population marker, the documents, the
//! stream against the hash, and the change positions. Read-only, with the
//! sidecar's own readers.

use std::collections::{BTreeMap, BTreeSet};

use std::io::Write;

use redis::aio::ConnectionLike;

use super::{documents, fail, pass, report, Finding, Verdict, UNREACHABLE};
use crate::config::secret::Env;
use crate::model::wire::{published_revision, BodyReader, Incoming};
use crate::ops::target::RedisTarget;
use crate::redis_client::{
    read_projects, EntryChange, RedisKeys, StreamBackwards, StreamEntry, STREAM_MAX_LEN,
};
use crate::sync::error::describe;

const KEYS: &str = "docs/control-plane.md#keys-and-the-rules-for-a-writer";

/// How many offenders a failing line names.
const SHOWN: usize = 5;

/// Connects to `target`, runs every check, one line each on `out`, then
/// a summary; returns the exit status.
pub async fn run(target: &RedisTarget, env: &Env, out: &mut dyn Write) -> u8 {
    let mut con = match target.connect(env).await {
        Ok(con) => con,
        Err(e) => {
            let _ = writeln!(out, "error: {}", describe(&e));
            return UNREACHABLE;
        }
    };
    match check(&mut con, &target.keys()).await {
        Ok(findings) => report(&findings, out),
        Err(e) => {
            let _ = writeln!(out, "error: reading Redis: {}", describe(&e));
            UNREACHABLE
        }
    }
}

/// Every check of the keyspace under `keys`.
pub async fn check(
    con: &mut (impl ConnectionLike + Send),
    keys: &RedisKeys,
) -> redis::RedisResult<Vec<Finding>> {
    let mut findings = Vec::new();
    let types = key_types(con, keys).await?;
    findings.push(types_finding(&types));
    let reader = BodyReader::default();
    let held = read_projects(con, keys, reader, &|_| None).await?;
    let marker: Option<String> = redis::cmd("GET")
        .arg(&keys.population)
        .query_async(con)
        .await
        .unwrap_or(None);
    findings.push(marker_finding(marker.as_deref(), held.len()));
    findings.push(documents("hash documents", None, held.clone()));
    let mut entries: Vec<StreamEntry> = Vec::new();
    let mut stream = StreamBackwards::new(keys);
    while let Some(chunk) = stream.next(con, reader.max_document_bytes).await? {
        entries.extend(chunk);
    }
    findings.push(stream_finding(&held, &entries, reader));
    let positions: Option<BTreeMap<String, String>> = match types.get(&keys.positions) {
        Some(kind) if kind == "hash" => Some(
            redis::cmd("HGETALL")
                .arg(&keys.positions)
                .query_async(con)
                .await?,
        ),
        _ => None,
    };
    findings.push(positions_finding(positions.as_ref(), &entries));
    Ok(findings)
}

/// `TYPE` of each key a writer writes.
async fn key_types(
    con: &mut (impl ConnectionLike + Send),
    keys: &RedisKeys,
) -> redis::RedisResult<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for key in [
        &keys.projects,
        &keys.changes,
        &keys.population,
        &keys.positions,
    ] {
        let kind: String = redis::cmd("TYPE").arg(key).query_async(con).await?;
        out.insert(key.clone(), kind);
    }
    Ok(out)
}

fn types_finding(types: &BTreeMap<String, String>) -> Finding {
    const CHECK: &str = "keys";
    let wanted = |key: &str| {
        if key.ends_with(":projects") || key.ends_with(":positions") {
            "hash"
        } else if key.ends_with(":changes") {
            "stream"
        } else {
            "string"
        }
    };
    let wrong: Vec<String> = types
        .iter()
        .filter(|(key, kind)| *kind != "none" && *kind != wanted(key))
        .map(|(key, kind)| format!("{key} is a {kind}, not a {}", wanted(key)))
        .collect();
    if !wrong.is_empty() {
        return fail(CHECK, KEYS, wrong.join("; "));
    }
    let present: Vec<String> = types
        .iter()
        .map(|(key, kind)| format!("{key} {kind}"))
        .collect();
    pass(CHECK, present.join(", "))
}

fn marker_finding(marker: Option<&str>, fields: usize) -> Finding {
    const CHECK: &str = "population marker";
    match marker.map(|m| m.parse::<usize>()) {
        Some(Ok(n)) if n == fields => pass(CHECK, format!("{n}, the hash's field count")),
        Some(Ok(n)) => fail(
            CHECK,
            KEYS,
            format!("{n}, but the hash holds {fields} fields: Redis lost data, or a writer changed the hash without rule 2 (sidecars remove nothing for being absent until it matches)"),
        ),
        Some(Err(_)) => fail(CHECK, KEYS, format!("{:?} is not a field count", marker.unwrap_or_default())),
        None => fail(
            CHECK,
            KEYS,
            format!("absent (the hash holds {fields} fields): set it to HLEN in the transaction that completes the population (rule 2); until then sidecars remove nothing for being absent"),
        ),
    }
}

/// Every entry names its project; each project's newest entry is what
/// the hash holds (its document, or its absence for a removal); while
/// the stream is shorter than its trimming length, every hash field
/// has an entry.
fn stream_finding(held: &[Incoming], entries: &[StreamEntry], reader: BodyReader) -> Finding {
    const CHECK: &str = "stream";
    let hash: BTreeMap<&str, &Incoming> = held.iter().map(|i| (i.id.as_str(), i)).collect();
    let mut problems = Vec::new();
    let nameless = entries.iter().filter(|e| e.project.is_none()).count();
    if nameless > 0 {
        problems.push(format!("{nameless} entries have no project field"));
    }
    let mut newest: BTreeMap<&str, &StreamEntry> = BTreeMap::new();
    for entry in entries {
        if let Some(project) = &entry.project {
            newest.entry(project.as_str()).or_insert(entry);
        }
    }
    let mut differ = Vec::new();
    for (project, entry) in &newest {
        let agrees = match (&entry.change, hash.get(project)) {
            (EntryChange::Document(json), Some(value)) => reader.filed(project, json) == **value,
            (EntryChange::Removed, None) => true,
            (EntryChange::TooLarge(_), Some(_)) => true,
            _ => false,
        };
        if !agrees {
            differ.push(format!("{project} (entry {})", entry.id));
        }
    }
    if !differ.is_empty() {
        problems.push(format!(
            "{} projects' newest entry is not what the hash holds: {}",
            differ.len(),
            differ
                .iter()
                .take(SHOWN)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let trimmed = entries.len() as u64 >= STREAM_MAX_LEN;
    if !trimmed {
        let missing: Vec<&str> = hash
            .keys()
            .filter(|id| !newest.contains_key(*id))
            .copied()
            .collect();
        if !missing.is_empty() {
            problems.push(format!(
                "{} hash fields have no stream entry, so no follower learnt of them: {}",
                missing.len(),
                missing
                    .iter()
                    .take(SHOWN)
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    if problems.is_empty() {
        pass(
            CHECK,
            format!(
                "{} entries; every project's newest one is what the hash holds",
                entries.len()
            ),
        )
    } else {
        fail(
            CHECK,
            KEYS,
            format!(
                "{} (rule 1: each change writes the hash field and its entry together)",
                problems.join("; ")
            ),
        )
    }
}

/// Each project's position names its newest entry and the revision
/// that entry published.
fn positions_finding(
    positions: Option<&BTreeMap<String, String>>,
    entries: &[StreamEntry],
) -> Finding {
    const CHECK: &str = "positions";
    let Some(positions) = positions else {
        return Finding {
            check: CHECK,
            verdict: Verdict::Skipped(
                "no positions hash: the fleet is fed, but fleet wait and fleet status cannot \
                 tell which nodes serve what was written (rule 1)"
                    .into(),
            ),
        };
    };
    let mut seen = BTreeSet::new();
    let mut wrong = Vec::new();
    for entry in entries {
        let Some(project) = &entry.project else {
            continue;
        };
        if !seen.insert(project.as_str()) {
            continue;
        }
        let revision = match &entry.change {
            EntryChange::Document(json) => {
                published_revision(json).map_or("-".to_owned(), |r| r.to_string())
            }
            EntryChange::TooLarge(_) => continue,
            EntryChange::Removed => "-".to_owned(),
        };
        let expected = format!("{revision} {}", entry.id);
        match positions.get(project) {
            Some(got) if *got == expected => {}
            Some(got) => wrong.push(format!("{project}: {got:?}, not {expected:?}")),
            None => wrong.push(format!("{project}: none, not {expected:?}")),
        }
    }
    if wrong.is_empty() {
        pass(
            CHECK,
            format!("{} projects, each at its newest entry", seen.len()),
        )
    } else {
        fail(
            CHECK,
            KEYS,
            format!(
                "{} positions do not name the project's newest entry and its revision: {}",
                wrong.len(),
                wrong
                    .iter()
                    .take(SHOWN)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        )
    }
}
