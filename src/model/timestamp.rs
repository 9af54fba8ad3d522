//! RFC 3339 timestamps: parsing what the control plane sends (`at`,
//! `published_at`) and formatting what we show (`accepted_at`, status times).
//!
//! Parsing accepts the full RFC 3339 grammar (fractional seconds, `Z` or a
//! numeric offset, `T`/`t`/space separator) and never panics on any input.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Why a string is not an RFC 3339 timestamp.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an RFC 3339 timestamp: {0}")]
pub struct TimestampError(&'static str);

/// Parses `2026-12-01T10:00:00Z`, `2026-12-01T11:00:00.250+01:00`, ...
pub fn parse_rfc3339(text: &str) -> Result<SystemTime, TimestampError> {
    let b = text.as_bytes();
    if b.len() < 20 {
        return Err(TimestampError("too short"));
    }
    let year = digits(b, 0, 4)?;
    expect(b, 4, b'-')?;
    let month = digits(b, 5, 2)?;
    expect(b, 7, b'-')?;
    let day = digits(b, 8, 2)?;
    if !matches!(b[10], b'T' | b't' | b' ') {
        return Err(TimestampError("expected 'T' between date and time"));
    }
    let hour = digits(b, 11, 2)?;
    expect(b, 13, b':')?;
    let minute = digits(b, 14, 2)?;
    expect(b, 16, b':')?;
    // A leap second (60) is accepted and folded into the next second.
    let second = digits(b, 17, 2)?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return Err(TimestampError("date out of range"));
    }
    if hour > 23 || minute > 59 || second > 60 {
        return Err(TimestampError("time out of range"));
    }
    let mut pos = 19;
    let mut nanos: u64 = 0;
    if b[pos] == b'.' {
        pos += 1;
        let start = pos;
        while pos < b.len() && b[pos].is_ascii_digit() {
            if pos - start < 9 {
                nanos = nanos * 10 + u64::from(b[pos] - b'0');
            }
            pos += 1;
        }
        let count = pos - start;
        if count == 0 {
            return Err(TimestampError("empty fraction"));
        }
        for _ in count..9 {
            nanos *= 10;
        }
    }
    let offset_secs: i64 = match b.get(pos) {
        Some(b'Z' | b'z') if pos + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if pos + 6 == b.len() => {
            let oh = digits(b, pos + 1, 2)?;
            expect(b, pos + 3, b':')?;
            let om = digits(b, pos + 4, 2)?;
            if oh > 23 || om > 59 {
                return Err(TimestampError("offset out of range"));
            }
            let secs = i64::from(oh * 3600 + om * 60);
            if *sign == b'+' {
                secs
            } else {
                -secs
            }
        }
        _ => return Err(TimestampError("expected 'Z' or a ±HH:MM offset at the end")),
    };
    let days = days_from_civil(i64::from(year), month, day);
    let secs = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second) - offset_secs;
    if secs < 0 {
        return Err(TimestampError("before 1970"));
    }
    // `secs` is non-negative here and `nanos` below 1e9.
    Ok(UNIX_EPOCH + Duration::new(secs as u64, nanos as u32))
}

/// Formats as `2026-12-01T10:00:00.123Z` (milliseconds, UTC).
pub fn format_rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

fn digits(b: &[u8], at: usize, len: usize) -> Result<u32, TimestampError> {
    let slice = b.get(at..at + len).ok_or(TimestampError("truncated"))?;
    slice.iter().try_fold(0u32, |acc, &c| {
        if c.is_ascii_digit() {
            Ok(acc * 10 + u32::from(c - b'0'))
        } else {
            Err(TimestampError("expected a digit"))
        }
    })
}

fn expect(b: &[u8], at: usize, want: u8) -> Result<(), TimestampError> {
    match b.get(at) {
        Some(&c) if c == want => Ok(()),
        _ => Err(TimestampError("unexpected separator")),
    }
}

fn is_leap(year: u32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(text: &str) -> u64 {
        parse_rfc3339(text)
            .unwrap()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn parses_utc_and_offsets_to_the_same_instant() {
        assert_eq!(secs("2026-12-01T10:00:00Z"), 1_796_119_200);
        assert_eq!(secs("2026-12-01T11:30:00+01:30"), 1_796_119_200);
        assert_eq!(secs("2026-12-01T08:00:00-02:00"), 1_796_119_200);
        assert_eq!(secs("2026-12-01 10:00:00z"), 1_796_119_200);
    }

    #[test]
    fn keeps_fractional_seconds() {
        let t = parse_rfc3339("1970-01-01T00:00:01.5Z").unwrap();
        assert_eq!(t.duration_since(UNIX_EPOCH).unwrap().as_millis(), 1500);
    }

    #[test]
    fn round_trips_through_the_formatter() {
        let t = parse_rfc3339("2024-02-29T23:59:59.123Z").unwrap();
        assert_eq!(format_rfc3339(t), "2024-02-29T23:59:59.123Z");
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        for bad in [
            "",
            "2026-12-01",
            "2026-13-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-12-01T24:00:00Z",
            "2026-12-01T10:00:00",
            "2026-12-01T10:00:00+0100",
            "2026-12-01T10:00:00.Z",
            "2026-12-01X10:00:00Z",
            "1969-12-31T23:59:59Z",
            "２０２６-12-01T10:00:00Z",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
