//! `env-sidecar validate [--previous FILE] [--trust-key FILE…] FILE…`:
//! what a control plane's CI runs before publishing. Each file holds a
//! snapshot body, a single project document or a single signed envelope
//! (`-` is stdin); every project is judged exactly as the sidecar would
//! judge it (`store::Judge`, one implementation), against the project in
//! `--previous` when given (revision order, slug immutability). With
//! `--trust-key`, every document must be signed by one of those keys, as
//! a sidecar with `require_signatures` would insist; without, signatures
//! are not checked (`signature=unchecked`).
//!
//! Output, one line per project, on stdout (easy to read, and to grep:
//! the first word is the verdict, the rest `key=value`):
//!
//! ```text
//! ok project=acme-chat revision=58 signed_by=cp-2026
//! rejected project=globex revision=13 reason=slug_changed message="environment \"gx_staging\" has slug \"stage\"; ..."
//! ```
//!
//! and one `error file=… message=…` line per file that could not be
//! read at all. Exit 0 when every project passes, 1 when any is rejected,
//! 2 when a file is missing, unreadable, or not JSON of either shape.

use std::io::Write;

use super::input::{documents, quoted, read, Input};
use super::verdict::{judge_against, published, Verdict};
use crate::model::trust::Trust;
use crate::model::wire::Incoming;
use crate::store::Store;

/// Exit statuses.
pub const OK: u8 = 0;
pub const REJECTED: u8 = 1;
pub const UNREADABLE: u8 = 2;

/// Judges every project of `inputs` (against `previous` when given) and
/// writes the verdicts to `out`; returns the exit status.
/// `trust` is what documents must be signed with (`Trust::skip_signatures`
/// when no key is given).
pub fn run(previous: Option<&Input>, inputs: &[Input], trust: &Trust, out: &mut dyn Write) -> u8 {
    let served = match previous {
        None => Store::new(1.0).0,
        Some(input) => match read(input).and_then(documents) {
            Ok(docs) => published(docs, &[], &Trust::skip_signatures()),
            Err(e) => {
                let _ = writeln!(
                    out,
                    "error file={} message={}",
                    quoted(&input.name()),
                    quoted(&format!("--previous {e}"))
                );
                return UNREADABLE;
            }
        },
    };
    let mut status = OK;
    for input in inputs {
        let docs = match read(input).and_then(documents) {
            Ok(docs) => docs,
            Err(e) => {
                let _ = writeln!(
                    out,
                    "error file={} message={}",
                    quoted(&input.name()),
                    quoted(&e.to_string())
                );
                status = UNREADABLE;
                continue;
            }
        };
        for doc in docs {
            if !verdict(doc, &served, trust, out) && status == OK {
                status = REJECTED;
            }
        }
    }
    status
}

/// Writes one project's line; true when it passes.
fn verdict(doc: Incoming, served: &Store, trust: &Trust, out: &mut dyn Write) -> bool {
    let (id, revision, verdict) = judge_against(doc, served, trust);
    let revision = revision.map_or("?".to_owned(), |r| r.to_string());
    let id = quoted(&id);
    let line = match verdict {
        Verdict::Accepted { signature } => {
            format!("ok project={id} revision={revision}{}", signature.suffix())
        }
        Verdict::Removal { signature } => format!(
            "ok project={id} revision={revision} removal=true{}",
            signature.suffix()
        ),
        Verdict::Resealed { signature } => format!(
            "ok project={id} revision={revision} resealed=true{}",
            signature.suffix()
        ),
        Verdict::Unchanged => format!("ok project={id} revision={revision} unchanged=true"),
        Verdict::Rejected { reason, message } => {
            let _ = writeln!(
                out,
                "rejected project={id} revision={revision} reason={reason} message={}",
                quoted(&message)
            );
            return false;
        }
    };
    let _ = writeln!(out, "{line}");
    true
}
