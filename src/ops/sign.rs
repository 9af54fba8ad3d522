//! `env-sidecar sign --key FILE [--expires-in D] [--output FILE] FILE`:
//! signs a snapshot file (or one document) for sidecars that require
//! signatures. Every project is checked first with every rule of the data
//! model (and must not be a signed tombstone already); if any breaks one,
//! nothing is written. The output is the same snapshot whose projects are
//! envelopes, each with `signed_at` set to now (and `expires_at` when
//! asked), written to `--output` atomically or to stdout. A document that
//! came signed is signed again with this key.
//!
//! Verdict lines and the summary go to stdout, like every command's; to
//! stderr when stdout is the signed snapshot itself. Exit 0, 1 when
//! a document is rejected (nothing written), 2 when a file cannot be read
//! or written.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::input::{documents, quoted, read, snapshot_revision, Input};
use super::verdict::{judge_against, Verdict};
use crate::model::keys::SigningKey;
use crate::model::trust::Trust;
use crate::model::wire::{Content, Incoming};
use crate::store::Store;
use crate::sync::cache::write_atomic;

#[derive(Debug)]
pub struct Sign {
    pub key: SigningKey,
    pub expires_in: Option<Duration>,
    pub output: Option<PathBuf>,
    pub file: Input,
}

pub const OK: u8 = 0;
pub const REJECTED: u8 = 1;
pub const FAILED: u8 = 2;

/// Signs; the signed file goes to `--output` or `stdout`. Verdicts and
/// the summary go to `stdout` like every command's, unless `stdout` is the
/// signed snapshot itself: then to `stderr`.
pub fn run(args: &Sign, stdout: &mut dyn Write, stderr: &mut dyn Write) -> u8 {
    match &args.output {
        Some(path) => sign(
            args,
            |text| write_atomic(path, text).map_err(|e| e.to_string()),
            stdout,
        ),
        None => sign(
            args,
            |text| stdout.write_all(text).map_err(|e| e.to_string()),
            stderr,
        ),
    }
}

fn sign(args: &Sign, write: impl FnOnce(&[u8]) -> Result<(), String>, log: &mut dyn Write) -> u8 {
    let name = quoted(&args.file.name());
    let read_all = read(&args.file).and_then(|raw| {
        let revision = snapshot_revision(&raw);
        documents(raw).map(|docs| (revision, docs))
    });
    let (revision, docs) = match read_all {
        Ok(read) => read,
        Err(e) => {
            let _ = writeln!(log, "error file={name} message={}", quoted(&e.to_string()));
            return FAILED;
        }
    };
    let signed = match seal_all(args, docs, log) {
        Ok(signed) => signed,
        Err(rejected) => {
            let _ = writeln!(
                log,
                "refused rejected={rejected} message=\"nothing written\""
            );
            return REJECTED;
        }
    };
    let text = match revision {
        Some(revision) => format!(
            "{{\"revision\":{revision},\"projects\":[\n{}\n]}}\n",
            signed.join(",\n")
        ),
        None => format!("{}\n", signed.concat()),
    };
    if let Err(e) = write(text.as_bytes()) {
        let _ = writeln!(log, "error message={}", quoted(&e));
        return FAILED;
    }
    let _ = writeln!(
        log,
        "signed projects={} keyid={}{}",
        signed.len(),
        quoted(&args.key.keyid),
        args.output.as_ref().map_or(String::new(), |p| format!(
            " output={}",
            quoted(&p.display().to_string())
        ))
    );
    OK
}

/// Every document checked and sealed, or how many were rejected (each
/// named in `log`).
fn seal_all(args: &Sign, docs: Vec<Incoming>, log: &mut dyn Write) -> Result<Vec<String>, usize> {
    let now = SystemTime::now();
    let expires = args.expires_in.map(|d| now + d);
    let nothing = Store::new(1.0).0;
    let mut signed = Vec::with_capacity(docs.len());
    let mut rejected = 0;
    for doc in docs {
        let envelope = match &doc.content {
            Content::Document(d) => Some(args.key.seal_document(d, now, expires)),
            _ => None,
        };
        let (id, rev, verdict) = judge_against(doc, &nothing, &Trust::skip_signatures());
        let rev = rev.map_or("?".to_owned(), |r| r.to_string());
        let (reason, message) = match (verdict, envelope) {
            (Verdict::Accepted { .. }, Some(envelope)) => {
                signed.push(envelope);
                continue;
            }
            (Verdict::Rejected { reason, message }, _) => (reason, message),
            _ => ("malformed", "only project documents are signed".to_owned()),
        };
        rejected += 1;
        let _ = writeln!(
            log,
            "rejected project={} revision={rev} reason={reason} message={}",
            quoted(&id),
            quoted(&message)
        );
    }
    if rejected > 0 {
        Err(rejected)
    } else {
        Ok(signed)
    }
}
