//! `env-sidecar validate [--previous FILE] FILE…`: what a control plane's
//! CI runs before publishing. Each file holds a snapshot body or a single
//! project document (`-` is stdin); every project is judged exactly as
//! the sidecar would judge it (`store::judge`, one implementation), against
//! the project in `--previous` when given (revision order, slug
//! immutability).
//!
//! Output, one line per project, on stdout (easy to read, and to grep:
//! the first word is the verdict, the rest `key=value`):
//!
//! ```text
//! ok project=acme-chat revision=58
//! rejected project=globex revision=13 reason=slug_changed message="environment \"gx_staging\" has slug \"stage\"; ..."
//! ```
//!
//! and one `error file=… message=…` line per file that could not be
//! read at all. Exit 0 when every project passes, 1 when any is rejected,
//! 2 when a file is missing, unreadable, or not JSON of either shape.

use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::model::wire::{parse_project, parse_snapshot, Incoming, SnapshotBody};
use crate::store::{judge, ApplyOptions, Judged, Store, Update};

/// A file or `-` for stdin.
#[derive(Debug, Clone)]
pub enum Input {
    Stdin,
    File(PathBuf),
}

impl Input {
    pub fn parse(arg: &Path) -> Input {
        if arg == Path::new("-") {
            Input::Stdin
        } else {
            Input::File(arg.to_owned())
        }
    }

    pub fn name(&self) -> String {
        match self {
            Input::Stdin => "-".into(),
            Input::File(p) => p.display().to_string(),
        }
    }
}

/// Why a file could not be judged at all.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot read it: {0}")]
    Read(#[source] std::io::Error),
    #[error("is a directory")]
    Directory,
    #[error("is empty")]
    Empty,
    #[error("is not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    #[error("is neither a snapshot body {{\"revision\", \"projects\"}} nor a project document {{\"id\", \"revision\", \"environments\"}}")]
    Shape,
    #[error("{0}")]
    Malformed(#[source] crate::model::wire::MalformedBody),
}

/// Exit statuses.
pub const OK: u8 = 0;
pub const REJECTED: u8 = 1;
pub const UNREADABLE: u8 = 2;

/// Judges every project of `inputs` (against `previous` when given) and
/// writes the verdicts to `out`; returns the exit status.
pub fn run(previous: Option<&Input>, inputs: &[Input], out: &mut dyn Write) -> u8 {
    let served = match previous {
        None => Store::new(1.0).0,
        Some(input) => match read(input).and_then(documents) {
            Ok(docs) => served(docs),
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
            if !verdict(doc, &served, out) && status == OK {
                status = REJECTED;
            }
        }
    }
    status
}

/// What publishing one document would do, judged against what is served.
#[derive(Debug)]
pub enum Verdict {
    /// A new revision (or a new project): it would be applied.
    Accepted,
    /// The very revision and document already served: nothing to do.
    Unchanged,
    Rejected {
        reason: &'static str,
        message: String,
    },
}

/// One document judged against `served`: its id, its revision and the
/// verdict (the sidecar's own judgement, plus what only a publisher can
/// see: a stale or reused revision).
pub fn judge_against(doc: Incoming, served: &Store) -> (String, Option<u64>, Verdict) {
    let (id, revision) = match &doc {
        Ok(d) => (d.id.clone(), Some(d.revision)),
        Err(u) => (u.id.clone(), u.revision),
    };
    let previous = served.project(&id);
    let revision_text = revision.map_or("?".to_owned(), |r| r.to_string());
    let candidate = doc.clone();
    let verdict = match judge(doc, previous.as_deref()) {
        Judged::Valid(_) => Verdict::Accepted,
        Judged::Rejected { error, .. } => Verdict::Rejected {
            reason: error.reason.as_str(),
            message: error.message,
        },
        Judged::Stale => Verdict::Rejected {
            reason: "stale_revision",
            message: format!(
                "revision {revision_text} is older than the published {}; the fleet would ignore it",
                previous.as_ref().map_or(0, |p| p.revision())
            ),
        },
        // Equal revision: fine if it is the very same document.
        Judged::Unchanged => match judge(candidate, None) {
            Judged::Valid(valid)
                if previous
                    .as_ref()
                    .is_some_and(|p| *valid.to_json() == *p.document_json()) =>
            {
                Verdict::Unchanged
            }
            Judged::Rejected { error, .. } => Verdict::Rejected {
                reason: error.reason.as_str(),
                message: error.message,
            },
            _ => Verdict::Rejected {
                reason: "revision_reused",
                message: format!("revision {revision_text} is already published with a different document; the fleet would ignore this one (raise the revision)"),
            },
        },
    };
    (id, revision, verdict)
}

/// Writes one project's line; true when it passes.
fn verdict(doc: Incoming, served: &Store, out: &mut dyn Write) -> bool {
    let (id, revision, verdict) = judge_against(doc, served);
    let revision = revision.map_or("?".to_owned(), |r| r.to_string());
    match verdict {
        Verdict::Accepted => {
            let _ = writeln!(out, "ok project={} revision={revision}", quoted(&id));
            true
        }
        Verdict::Unchanged => {
            let _ = writeln!(
                out,
                "ok project={} revision={revision} unchanged=true",
                quoted(&id)
            );
            true
        }
        Verdict::Rejected { reason, message } => {
            let _ = writeln!(
                out,
                "rejected project={} revision={revision} reason={reason} message={}",
                quoted(&id),
                quoted(&message)
            );
            false
        }
    }
}

/// A store serving `docs` (what is published), to judge against.
pub fn served(docs: Vec<Incoming>) -> Store {
    let (store, mut writer) = Store::new(1.0);
    let body = SnapshotBody {
        revision: 0,
        projects: docs,
    };
    let opts = ApplyOptions {
        now: SystemTime::now(),
        allow_mass_removal: true,
    };
    // A full snapshot with removals allowed cannot be refused.
    let _ = writer.apply(Update::Snapshot(body), opts);
    store
}

/// `key=value` values: bare when plain, else a JSON string.
pub fn quoted(text: &str) -> String {
    if !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:".contains(&b))
    {
        text.to_owned()
    } else {
        serde_json::to_string(text).unwrap_or_default()
    }
}

/// The whole input, checked to be JSON while it is read: garbage fails at
/// its first bad byte, without reading (or holding) the rest.
pub fn read(input: &Input) -> Result<Box<RawValue>, InputError> {
    let reader: Box<dyn Read> = match input {
        Input::Stdin => Box::new(std::io::stdin().lock()),
        Input::File(path) => {
            let meta = std::fs::metadata(path).map_err(InputError::Read)?;
            if meta.is_dir() {
                return Err(InputError::Directory);
            }
            if meta.len() == 0 {
                return Err(InputError::Empty);
            }
            Box::new(std::fs::File::open(path).map_err(InputError::Read)?)
        }
    };
    let mut de = serde_json::Deserializer::from_reader(BufReader::with_capacity(64 * 1024, reader));
    let raw = Box::<RawValue>::deserialize(&mut de).map_err(|e| {
        if e.is_eof() && e.line() == 1 && e.column() == 0 {
            InputError::Empty
        } else {
            InputError::NotJson(e)
        }
    })?;
    de.end().map_err(InputError::NotJson)?;
    Ok(raw)
}

/// The project documents of a snapshot body or of a single document.
#[allow(clippy::boxed_local)] // the box is what `read` hands over
pub fn documents(raw: Box<RawValue>) -> Result<Vec<Incoming>, InputError> {
    #[derive(Deserialize)]
    struct Shape {
        #[serde(default)]
        projects: Option<serde::de::IgnoredAny>,
        #[serde(default)]
        environments: Option<serde::de::IgnoredAny>,
    }
    let shape: Shape = serde_json::from_str(raw.get()).map_err(|_| InputError::Shape)?;
    if shape.projects.is_some() {
        Ok(parse_snapshot(raw.get().as_bytes())
            .map_err(InputError::Malformed)?
            .projects)
    } else if shape.environments.is_some() {
        Ok(vec![
            parse_project(raw.get().as_bytes()).map_err(InputError::Malformed)?
        ])
    } else {
        Err(InputError::Shape)
    }
}
