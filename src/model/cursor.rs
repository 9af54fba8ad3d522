//! Where a sidecar is in its source's history: a control plane's
//! revision, or a Redis stream entry id. Kept as it is from the source to
//! the store, the cache, the status page, the logs and the node report,
//! and shown in its natural form in each (`57`, `1700000000000-3`).
//!
//! Pure value types: no I/O.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A Redis stream entry id, `ms-seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl StreamId {
    pub fn parse(text: &str) -> Option<StreamId> {
        let (ms, seq) = text.split_once('-')?;
        Some(StreamId {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }

    /// The id a cache written by an earlier version packed into a number
    /// (`ms · 2²⁰ + seq`).
    pub fn unpack_legacy(packed: u64) -> StreamId {
        StreamId {
            ms: packed >> 20,
            seq: packed & ((1 << 20) - 1),
        }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// The position of the last applied snapshot or change batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Cursor {
    /// Nothing applied yet.
    #[default]
    None,
    /// A control plane's revision (the HTTP and file sources).
    Revision(u64),
    /// The Redis stream entry read last (`0-0`: before any entry).
    Stream(StreamId),
}

/// The largest integer a float64 holds exactly (2⁵³).
const EXACT_IN_F64: u64 = 1 << 53;

impl Cursor {
    /// The value of `env_sidecar_snapshot_revision`, exact in a float64:
    /// a revision as it is (`None` above 2⁵³, which a float64 would
    /// round); for a stream id, its millisecond part (when the change
    /// read last was appended; always below 2⁵³).
    pub fn gauge(&self) -> Option<f64> {
        match *self {
            Cursor::None => Some(0.0),
            Cursor::Revision(r) => (r <= EXACT_IN_F64).then_some(r as f64),
            Cursor::Stream(id) => (id.ms <= EXACT_IN_F64).then_some(id.ms as f64),
        }
    }

    /// The stream id, if this is one.
    pub fn stream(&self) -> Option<StreamId> {
        match *self {
            Cursor::Stream(id) => Some(id),
            _ => None,
        }
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cursor::None => f.write_str("none"),
            Cursor::Revision(r) => write!(f, "{r}"),
            Cursor::Stream(id) => write!(f, "{id}"),
        }
    }
}

/// JSON: a revision is a number, a stream id a string, none is null.
impl Serialize for Cursor {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        match self {
            Cursor::None => ser.serialize_none(),
            Cursor::Revision(r) => ser.serialize_u64(*r),
            Cursor::Stream(id) => ser.collect_str(id),
        }
    }
}

/// Reads what [`Serialize`] writes. A number is a revision, also the 0
/// earlier versions wrote for "none" and the packed stream ids they
/// wrote for Redis (the Redis source unpacks those, see
/// [`StreamId::unpack_legacy`]).
impl<'de> Deserialize<'de> for Cursor {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
            Null(()),
        }
        match Raw::deserialize(de)? {
            Raw::Number(0) | Raw::Null(()) => Ok(Cursor::None),
            Raw::Number(r) => Ok(Cursor::Revision(r)),
            Raw::Text(t) => StreamId::parse(&t)
                .map(Cursor::Stream)
                .ok_or_else(|| serde::de::Error::custom(format!("{t:?} is not a stream id"))),
        }
    }
}

impl Cursor {
    /// Reads the form [`Display`](fmt::Display) writes: `none`, a revision,
    /// or a stream id.
    pub fn parse(text: &str) -> Option<Cursor> {
        match text {
            "none" => Some(Cursor::None),
            t if t.contains('-') => StreamId::parse(t).map(Cursor::Stream),
            t => t.parse().ok().map(|r| match r {
                0 => Cursor::None,
                r => Cursor::Revision(r),
            }),
        }
    }

    /// An order among cursors of one source (a stream id, or a revision;
    /// `none` before both).
    pub fn order(&self) -> (u64, u64) {
        match *self {
            Cursor::None => (0, 0),
            Cursor::Revision(r) => (r, 0),
            Cursor::Stream(id) => (id.ms, id.seq),
        }
    }

    /// True when this cursor is at or past `position`: a follower here has
    /// taken the change there.
    pub fn reached(&self, position: &Cursor) -> bool {
        *position != Cursor::None && self.order() >= position.order()
    }
}

/// Where a project's last write sits in the source's change log: the
/// revision it published (`None` for a removal or a tombstone) and the
/// cursor of that change. A writer records one per project
/// (`{P}:positions` in Redis, `GET /v1/positions` from a control plane).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub revision: Option<u64>,
    pub at: Cursor,
}

impl Position {
    /// Reads `57 1796307806929-2` (`- …` for a removal), as Redis keeps it.
    pub fn parse(text: &str) -> Option<Position> {
        let (revision, at) = text.split_once(' ')?;
        Some(Position {
            revision: match revision {
                "-" => None,
                r => Some(r.parse().ok()?),
            },
            at: Cursor::parse(at).filter(|c| *c != Cursor::None)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_read_and_cursors_reach_them() {
        let p = Position::parse("57 1700000000000-3").unwrap();
        assert_eq!(p.revision, Some(57));
        let gone = Position::parse("- 1700000000000-4").unwrap();
        assert_eq!(gone.revision, None);
        assert!(Position::parse("57").is_none() && Position::parse("x 1-2").is_none());
        assert!(Position::parse("57 none").is_none());
        let at = |t: &str| Cursor::parse(t).unwrap();
        assert!(at("1700000000000-3").reached(&p.at));
        assert!(at("1700000000001-0").reached(&p.at));
        assert!(!at("1700000000000-2").reached(&p.at));
        assert!(!at("none").reached(&p.at));
        assert!(
            at("12").reached(&Cursor::Revision(12)) && !at("11").reached(&Cursor::Revision(12))
        );
        assert!(!at("12").reached(&Cursor::None));
        for c in ["none", "57", "1700000000000-3"] {
            assert_eq!(Cursor::parse(c).unwrap().to_string(), c);
        }
    }

    #[test]
    fn stream_ids_parse_and_order() {
        let a = StreamId::parse("1700000000000-0").unwrap();
        let b = StreamId::parse("1700000000000-7").unwrap();
        let c = StreamId::parse("1700000000001-0").unwrap();
        assert!(a < b && b < c);
        assert_eq!(b.to_string(), "1700000000000-7");
        assert!(StreamId::parse("x-1").is_none() && StreamId::parse("17").is_none());
        // What an earlier version packed.
        assert_eq!(StreamId::unpack_legacy((1700000000000 << 20) | 7), b);
    }

    #[test]
    fn cursors_show_and_store_in_their_natural_form() {
        let id = StreamId::parse("1883552264980-2").unwrap();
        for (cursor, json, text) in [
            (Cursor::Revision(57), "57", "57"),
            (Cursor::Stream(id), "\"1883552264980-2\"", "1883552264980-2"),
            (Cursor::None, "null", "none"),
        ] {
            assert_eq!(serde_json::to_string(&cursor).unwrap(), json);
            assert_eq!(cursor.to_string(), text);
            assert_eq!(serde_json::from_str::<Cursor>(json).unwrap(), cursor);
        }
        assert_eq!(serde_json::from_str::<Cursor>("0").unwrap(), Cursor::None);
    }

    #[test]
    fn the_gauge_is_exact_in_a_float64() {
        // The packed stream id an earlier version showed lost its low bits
        // in the gauge (1883552264980791298 read 1883552264980791300).
        let id = StreamId::parse("1796300713335-2").unwrap();
        let g = Cursor::Stream(id).gauge().unwrap();
        assert_eq!(g as u64, 1796300713335);
        assert_eq!(g, 1796300713335.0);
        assert_eq!(Cursor::Revision(1 << 53).gauge(), Some(9007199254740992.0));
        assert_eq!(Cursor::Revision((1 << 53) + 1).gauge(), None);
    }
}
