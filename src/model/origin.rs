//! Where an update came from, and what that permits: the one answer to
//! "from the cache or from the source?".
//!
//! The sources name it, the writer carries it inside every update, and
//! the judgement reads what it permits from it alone:
//!
//! * news from the source is judged against `max_signature_age` and the
//!   clock skew; the sidecar's own cache is not (its documents were
//!   accepted before, and the clock moved since), and an envelope whose
//!   recorded signer is still trusted is believed without a second
//!   verification ([`CacheRecord`]);
//! * only an operator's forced refresh lifts the blast-radius guard
//!   ([`MassRemoval`]), and the cache, which is loaded into an empty
//!   store at start;
//! * only changes seen as they happen count for propagation, and
//!   everything but the cache is written back to the cache.

use std::collections::HashMap;

use super::floor::Floor;

/// Project id → the trusted key ids that verified its envelope, as the
/// last-known-good cache recorded them.
pub type Signers = HashMap<String, Vec<String>>;

/// Where an update came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The last-known-good file, at start, with what it recorded.
    Cache(CacheRecord),
    /// The snapshot file, as first read.
    File,
    /// The snapshot file, changed since it was read.
    FileChange,
    /// A full snapshot from the control plane (or a full load from Redis).
    Snapshot,
    /// A change batch (a long poll's changes, stream entries).
    Changes,
    /// A forced refresh.
    Refresh(MassRemoval),
}

/// What the last-known-good cache recorded beside the documents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheRecord {
    /// Who had verified each envelope.
    pub signers: Signers,
    /// The floors of the projects it did not serve (removed by signed
    /// tombstones, or whose cached document could no longer be served).
    pub floors: Vec<(String, Floor)>,
}

/// Whether an update may remove more than `source.max_removed_fraction`
/// of the projects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MassRemoval {
    /// No: the guard refuses it whole.
    Guarded,
    /// Yes: an operator asked (`allow_mass_removal`).
    Allowed,
}

impl MassRemoval {
    /// `allow_mass_removal` as an operator's request spells it.
    pub fn from_flag(allowed: bool) -> MassRemoval {
        if allowed {
            MassRemoval::Allowed
        } else {
            MassRemoval::Guarded
        }
    }
}

impl Origin {
    /// The name logs use.
    pub fn as_str(&self) -> &'static str {
        match self {
            Origin::Cache(_) => "cache",
            Origin::File | Origin::FileChange => "file",
            Origin::Snapshot => "snapshot",
            Origin::Changes => "changes",
            Origin::Refresh(_) => "refresh",
        }
    }

    /// News from the source, not the sidecar's own cache: judged against
    /// `max_signature_age` and the clock skew, and written to the cache
    /// once applied.
    pub fn is_news(&self) -> bool {
        !matches!(self, Origin::Cache(_))
    }

    /// A change seen as it happened: publication → served is
    /// `env_sidecar_propagation_delay_seconds`. A full load, the cache or
    /// a forced refresh brings documents published any time before (a
    /// cold start would report weeks), so they do not count.
    pub fn is_live(&self) -> bool {
        matches!(self, Origin::Changes | Origin::FileChange)
    }

    /// Whether the blast-radius guard applies: not to an operator's
    /// refresh that lifts it, nor to the cache (loaded at start, into an
    /// empty store).
    pub fn mass_removal(&self) -> MassRemoval {
        match self {
            Origin::Refresh(allowed) => *allowed,
            Origin::Cache(_) => MassRemoval::Allowed,
            _ => MassRemoval::Guarded,
        }
    }

    /// Who had verified each cached envelope (the cache only).
    pub fn signers(&self) -> Option<&Signers> {
        match self {
            Origin::Cache(record) if !record.signers.is_empty() => Some(&record.signers),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_cache_is_old_news_and_only_a_refresh_lifts_the_guard() {
        let cache = Origin::Cache(CacheRecord {
            signers: Signers::from([("acme".to_owned(), vec!["k1".to_owned()])]),
            floors: Vec::new(),
        });
        assert!(!cache.is_news());
        assert_eq!(cache.signers().map(|s| s.len()), Some(1));
        let all = [
            Origin::File,
            Origin::FileChange,
            Origin::Snapshot,
            Origin::Changes,
            Origin::Refresh(MassRemoval::Guarded),
            Origin::Refresh(MassRemoval::Allowed),
        ];
        for origin in &all {
            assert!(origin.is_news(), "{origin:?}");
            assert_eq!(origin.signers(), None, "{origin:?}");
        }
        let allowed: Vec<_> = all
            .iter()
            .chain([&cache])
            .filter(|o| o.mass_removal() == MassRemoval::Allowed)
            .collect();
        assert_eq!(allowed, [&Origin::Refresh(MassRemoval::Allowed), &cache]);
        let live: Vec<_> = all.iter().filter(|o| o.is_live()).collect();
        assert_eq!(live, [&Origin::FileChange, &Origin::Changes]);
    }
}
