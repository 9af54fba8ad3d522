//! `env-sidecar conformance`: checks a control plane of someone else's
//! against what the sidecar expects of it, read-only and with the
//! sidecar's own clients and parsers, so what it passes a sidecar takes.
//! [`http`] drives the sync protocol of a control plane (`--control-plane
//! URL`); [`redis`] reads a keyspace a writer left (`--redis URL`). Each
//! reports every rule broken, with the section of docs/control-plane.md
//! that states it; this module holds what both share: the findings, their
//! report and exit status, and the judgement of documents.

use std::io::Write;

use crate::model::validate::validate;
use crate::model::wire::{Content, Incoming};

pub mod http;
pub mod redis;

/// Exit statuses: every rule held; a rule broken; the control plane or
/// Redis could not be reached at all.
pub const OK: u8 = 0;
pub const VIOLATION: u8 = 1;
pub const UNREACHABLE: u8 = 2;

const FORMAT: &str = "docs/control-plane.md#snapshot-format";

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass(String),
    /// The rule broken, and where the docs state it.
    Fail {
        detail: String,
        section: &'static str,
    },
    /// Could not be exercised against this control plane (why).
    Skipped(String),
}

/// A named check and its verdict.
#[derive(Debug)]
pub struct Finding {
    pub check: &'static str,
    pub verdict: Verdict,
}

pub(super) fn pass(check: &'static str, detail: impl Into<String>) -> Finding {
    Finding {
        check,
        verdict: Verdict::Pass(detail.into()),
    }
}

pub(super) fn fail(
    check: &'static str,
    section: &'static str,
    detail: impl Into<String>,
) -> Finding {
    Finding {
        check,
        verdict: Verdict::Fail {
            detail: detail.into(),
            section,
        },
    }
}

/// Writes the findings and the summary; the exit status.
pub fn report(findings: &[Finding], out: &mut dyn Write) -> u8 {
    let mut failed = 0;
    for f in findings {
        let _ = match &f.verdict {
            Verdict::Pass(detail) => writeln!(out, "ok    {}: {detail}", f.check),
            Verdict::Fail { detail, section } => {
                failed += 1;
                writeln!(out, "FAIL  {}: {detail} (see {section})", f.check)
            }
            Verdict::Skipped(why) => writeln!(out, "skip  {}: {why}", f.check),
        };
    }
    let _ = writeln!(
        out,
        "{} checks, {} passed, {failed} failed",
        findings.len(),
        findings
            .iter()
            .filter(|f| matches!(f.verdict, Verdict::Pass(_)))
            .count()
    );
    if failed == 0 {
        OK
    } else {
        VIOLATION
    }
}

/// Every document of a body is one the sidecar accepts.
pub(super) fn documents(check: &'static str, at: Option<u64>, projects: Vec<Incoming>) -> Finding {
    let count = projects.len();
    let mut sealed = 0;
    let mut rejected = Vec::new();
    for p in projects {
        let id = p.id.clone();
        match p.content {
            Content::Document(doc) => {
                if let Err(e) = validate(*doc, &[]) {
                    rejected.push(format!("{id}: {e}"));
                }
            }
            Content::Sealed(_) => sealed += 1,
            Content::Unreadable(why) => rejected.push(format!("{id}: {why}")),
            Content::TooLarge(bytes) => rejected.push(format!("{id}: {bytes} bytes, too large")),
            // Only a sidecar's own full load skips what it serves.
            Content::AsServed(_) => {}
        }
    }
    if rejected.is_empty() {
        let signed = if sealed > 0 {
            format!(" ({sealed} signed, their signatures not checked here)")
        } else {
            String::new()
        };
        pass(
            check,
            match at {
                Some(revision) => {
                    format!("revision {revision}, {count} documents the sidecar accepts{signed}")
                }
                None => format!("{count} documents the sidecar accepts{signed}"),
            },
        )
    } else {
        let shown: Vec<_> = rejected.iter().take(5).cloned().collect();
        fail(
            check,
            FORMAT,
            format!(
                "{} of {count} documents would be rejected: {}",
                rejected.len(),
                shown.join("; ")
            ),
        )
    }
}
