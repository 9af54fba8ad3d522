//! What publishing one document would do, judged the way the sidecar
//! judges it (`store::Judge`, one implementation, reused revisions
//! included) against what is published, plus what only a publisher
//! reports as a refusal: a stale revision, which a sidecar ignores.
//! Shared by `validate` and `publish`.

use std::sync::Arc;
use std::time::SystemTime;

use crate::model::floor::Floor;
use crate::model::origin::{MassRemoval, Origin};
use crate::model::trust::Trust;
use crate::model::wire::{Incoming, SnapshotBody};
use crate::store::{Contents, Judge, Judged, Store, Update};

/// What publishing one document would do.
#[derive(Debug)]
pub enum Verdict {
    /// A new revision (or a new project): it would be applied.
    Accepted { signature: Signature },
    /// A signed tombstone of a published project: it would be removed.
    Removal { signature: Signature },
    /// The published revision again, the same document signed anew.
    Resealed { signature: Signature },
    /// The very revision and document already published: nothing to do.
    Unchanged,
    Rejected {
        reason: &'static str,
        message: String,
    },
}

/// What the verdict knows of a document's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature {
    /// Not signed.
    None,
    /// Signed, and it verified with these trusted keys.
    Verified(Vec<String>),
    /// Signed; no keys were given to check it with.
    Unchecked,
}

impl Signature {
    /// ` signed_by=K` or ` signature=unchecked` for output lines.
    pub fn suffix(&self) -> String {
        match self {
            Signature::None => String::new(),
            Signature::Verified(keys) => format!(" signed_by={}", keys.join(",")),
            Signature::Unchecked => " signature=unchecked".into(),
        }
    }
}

/// One document judged against `published` with `trust`: its id, its
/// revision and the verdict.
pub fn judge_against(
    doc: Incoming,
    published: &Store,
    trust: &Trust,
) -> (String, Option<u64>, Verdict) {
    let id = doc.id.clone();
    let revision = doc.revision;
    let previous = published.project(&id);
    let floor = published.floor(&id);
    let floor_revision = floor.map(Floor::revision);
    let revision_text = revision.map_or("?".to_owned(), |r| r.to_string());
    let checked = !trust.keys().is_empty();
    let signature = |keys: Option<&[String]>| match (keys, checked) {
        (None, _) => Signature::None,
        (Some(keys), true) => Signature::Verified(keys.to_vec()),
        (Some(_), false) => Signature::Unchecked,
    };
    // As the fleet judges it: news from the source.
    let judge = Judge {
        trust,
        now: SystemTime::now(),
        origin: &Origin::Changes,
    };
    // A removal's verdict carries no keys; name the trusted ones it claims
    // (with keys given, the judge has checked one of them verifies).
    let claimed: Option<Vec<String>> = doc.seal().map(|s| {
        s.signatures
            .iter()
            .map(|x| x.keyid.clone())
            .filter(|id| !checked || trust.keys().iter().any(|k| k.keyid == *id))
            .collect()
    });
    let verdict = match judge.judge(doc, previous.as_deref(), floor) {
        Judged::Valid(valid) => Verdict::Accepted {
            signature: signature(valid.seal().map(|s| &s.verified.keyids[..])),
        },
        Judged::Removal { .. } => Verdict::Removal {
            signature: signature(claimed.as_deref()),
        },
        Judged::Resealed(valid) => Verdict::Resealed {
            signature: signature(valid.seal().map(|s| &s.verified.keyids[..])),
        },
        Judged::Rejected { error, .. } => Verdict::Rejected {
            reason: error.reason.as_str(),
            message: error.message,
        },
        Judged::OlderEnvelope => Verdict::Rejected {
            reason: "stale_revision",
            message: format!(
                "revision {revision_text} is published in an envelope signed later; the fleet \
                 would ignore this one"
            ),
        },
        Judged::Stale { .. } => Verdict::Rejected {
            reason: "stale_revision",
            message: format!(
                "revision {revision_text} is older than the published {}; the fleet would ignore it",
                previous.as_ref().map(|p| p.revision()).or(floor_revision).unwrap_or(0)
            ),
        },
        // A publisher reads every document (`BodyReader::filed`): none
        // is skipped as served, so none is left to fetch again.
        Judged::Unchanged | Judged::Reread => Verdict::Unchanged,
    };
    (id, revision, verdict)
}

/// A store serving `docs` (what is published), with the revision
/// `floors` of projects removed before, to judge against: the publisher's
/// view of what it holds, with `trust` (what does not verify is rejected,
/// and shows among the store's rejections).
pub fn published(docs: Vec<Incoming>, floors: &[(String, Floor)], trust: &Trust) -> Store {
    let (store, mut writer) = Store::new(1.0);
    writer.set_trust(Arc::new(trust.clone()));
    writer.restore_floors(floors);
    let body = SnapshotBody {
        projects: docs,
        ..SnapshotBody::default()
    };
    // A full snapshot with removals allowed cannot be refused.
    let update = Update::new(
        Origin::Refresh(MassRemoval::Allowed),
        Contents::Snapshot(body),
    );
    let _ = writer.apply(update, SystemTime::now());
    store
}
