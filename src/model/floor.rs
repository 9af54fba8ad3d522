//! Revision floors: how a project that is not served may come back.
//!
//! A project leaves the served set in two ways that must not be undone by
//! replaying something older: a signed tombstone removed it, or a
//! document this sidecar accepted once can no longer be served (its cache
//! is checked again at a restart: the key that signed it is no longer
//! trusted, it is not signed while signatures are now required, it
//! expired). The floor remembers which, because they admit different
//! things at their own revision:
//!
//! * after a tombstone, nothing up to its revision comes back;
//! * after a refusal, nothing older comes back, and of the same revision
//!   a believed signed copy does ("signed outranks unsigned": turning
//!   `require_signatures` on and publishing the same revisions signed
//!   serves them again), unless the refused copy was itself believed and
//!   refused for its times (it expired): then only a copy signed later,
//!   so an earlier envelope never returns and expiry keeps its meaning.

use std::time::SystemTime;

/// The floor of one project not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Floor {
    /// A signed tombstone removed the project at this revision.
    Removed(u64),
    /// A document of `revision` was accepted once and is refused now;
    /// `signed_at` is its signing time when its signature was believed
    /// and only its times were refused (`None`: unsigned, or a key no
    /// longer trusted).
    Refused {
        revision: u64,
        signed_at: Option<SystemTime>,
    },
}

impl Floor {
    pub fn revision(self) -> u64 {
        match self {
            Floor::Removed(revision) | Floor::Refused { revision, .. } => revision,
        }
    }

    /// True when a believed signed copy of the floor's own revision,
    /// signed at `signed_at`, may serve.
    pub fn admits(self, signed_at: SystemTime) -> bool {
        match self {
            Floor::Removed(_) => false,
            Floor::Refused {
                signed_at: None, ..
            } => true,
            Floor::Refused {
                signed_at: Some(refused),
                ..
            } => signed_at > refused,
        }
    }

    /// The stricter of two floors of one project: the higher revision;
    /// at one revision a removal, else the later refused signature.
    pub fn max(self, other: Floor) -> Floor {
        use std::cmp::Ordering::*;
        match self.revision().cmp(&other.revision()) {
            Greater => self,
            Less => other,
            Equal => match (self, other) {
                (Floor::Removed(_), _) => self,
                (_, Floor::Removed(_)) => other,
                (Floor::Refused { signed_at: a, .. }, Floor::Refused { signed_at: b, .. }) => {
                    if b > a {
                        other
                    } else {
                        self
                    }
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    #[test]
    fn a_removal_admits_nothing_of_its_revision_and_a_refusal_admits_a_signed_copy() {
        assert!(!Floor::Removed(5).admits(at(100)));
        let unsigned = Floor::Refused {
            revision: 5,
            signed_at: None,
        };
        assert!(unsigned.admits(at(1)));
        let expired = Floor::Refused {
            revision: 5,
            signed_at: Some(at(50)),
        };
        assert!(expired.admits(at(51)));
        assert!(!expired.admits(at(50)), "the same envelope never returns");
        assert!(!expired.admits(at(49)), "an earlier one never returns");
    }

    #[test]
    fn the_stricter_floor_wins() {
        let refused = |revision, s: Option<u64>| Floor::Refused {
            revision,
            signed_at: s.map(at),
        };
        assert_eq!(Floor::Removed(4).max(refused(5, None)), refused(5, None));
        assert_eq!(
            refused(5, Some(9)).max(Floor::Removed(5)),
            Floor::Removed(5)
        );
        assert_eq!(
            refused(5, None).max(refused(5, Some(3))),
            refused(5, Some(3))
        );
        assert_eq!(
            refused(5, Some(7)).max(refused(5, Some(3))),
            refused(5, Some(7))
        );
        assert_eq!(
            Floor::Removed(6).max(refused(5, Some(7))),
            Floor::Removed(6)
        );
    }
}
