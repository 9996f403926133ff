//! Time as stored in records, and RFC 3339 parsing for `containerd.io/gc.expire`.
//!
//! Records store instants as signed nanoseconds since the Unix epoch (UTC),
//! which covers the years 1678 to 2262 exactly. Times read back from a
//! record are the stored nanoseconds, so a record returned by a write equals
//! the same record read later.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `t` as nanoseconds since the Unix epoch, saturating outside 1678..2262.
pub(crate) fn to_nanos(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_nanos()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_nanos())
            .map(|n| -n)
            .unwrap_or(i64::MIN),
    }
}

/// The instant `nanos` nanoseconds after (or, if negative, before) the Unix epoch.
pub(crate) fn from_nanos(nanos: i64) -> SystemTime {
    let magnitude = Duration::from_nanos(nanos.unsigned_abs());
    if nanos >= 0 {
        UNIX_EPOCH + magnitude
    } else {
        UNIX_EPOCH - magnitude
    }
}

/// Parses an RFC 3339 timestamp such as `2024-05-01T12:00:00Z` or
/// `2024-05-01T14:00:00.5+02:00`; `None` if it is not one.
///
/// Accepts what Go's `time.Parse(time.RFC3339, ..)` accepts for the values
/// containerd clients write (`WithExpiration` formats local time with its
/// offset): a `T` (or `t`) separator, optional fractional seconds, and `Z`
/// (or `z`) or a `±HH:MM` offset. Seconds must be below 60.
pub(crate) fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let year = digits(b, 0, 4)?;
    let month = digits(b, 5, 2)?;
    let day = digits(b, 8, 2)?;
    let hour = digits(b, 11, 2)?;
    let minute = digits(b, 14, 2)?;
    let second = digits(b, 17, 2)?;
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }

    // Fractional seconds: any number of digits, nanosecond precision kept.
    let mut i = 19;
    let mut nanos: i64 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while let Some(d) = b.get(i).filter(|d| d.is_ascii_digit()) {
            if i - start < 9 {
                nanos = nanos * 10 + i64::from(d - b'0');
            }
            i += 1;
        }
        let kept = (i - start).min(9);
        if kept == 0 {
            return None;
        }
        for _ in kept..9 {
            nanos *= 10;
        }
    }

    let offset_seconds = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), ..] => {
            let rest = &b[i..];
            if rest.len() != 6 || rest[3] != b':' {
                return None;
            }
            let (h, m) = (digits(rest, 1, 2)?, digits(rest, 4, 2)?);
            if h > 23 || m > 59 {
                return None;
            }
            let magnitude = h * 3600 + m * 60;
            if *sign == b'+' { magnitude } else { -magnitude }
        }
        _ => return None,
    };

    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_seconds;
    let fraction = Duration::from_nanos(u64::try_from(nanos).ok()?);
    if seconds >= 0 {
        UNIX_EPOCH
            .checked_add(Duration::from_secs(seconds.unsigned_abs()))?
            .checked_add(fraction)
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(seconds.unsigned_abs()))?
            .checked_add(fraction)
    }
}

/// The `len` ASCII digits of `b` starting at `at`, as a number.
fn digits(b: &[u8], at: usize, len: usize) -> Option<i64> {
    b.get(at..at + len)?.iter().try_fold(0i64, |n, d| {
        d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0'))
    })
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`, <https://howardhinnant.github.io/date_algorithms.html>).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12; // March = 0
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: &str) -> i64 {
        to_nanos(parse_rfc3339(s).unwrap_or_else(|| panic!("{s:?} should parse"))) / 1_000_000_000
    }

    #[test]
    fn nanos_round_trip() {
        for n in [0, 1, -1, 1_700_000_000_123_456_789, -86_400_000_000_000] {
            assert_eq!(to_nanos(from_nanos(n)), n);
        }
        let now = from_nanos(to_nanos(SystemTime::now()));
        assert_eq!(from_nanos(to_nanos(now)), now);
    }

    #[test]
    fn parses_utc_and_offsets() {
        assert_eq!(secs("1970-01-01T00:00:00Z"), 0);
        assert_eq!(secs("2000-03-01T00:00:00Z"), 951_868_800);
        assert_eq!(secs("2024-02-29T12:00:00+02:00"), 1_709_200_800);
        assert_eq!(secs("2024-02-29T05:00:00-05:00"), 1_709_200_800);
        assert_eq!(secs("2024-02-29t10:00:00z"), 1_709_200_800);
        assert_eq!(secs("1969-12-31T23:59:59Z"), -1);
        // Beyond the i64-nanosecond range of stored times, still comparable.
        let far = parse_rfc3339("2999-01-01T00:00:00Z").unwrap();
        let farther = parse_rfc3339("2999-01-01T00:00:00.5Z").unwrap();
        assert!(farther > far && far > SystemTime::now());
        let t = parse_rfc3339("2024-02-29T10:00:00.25Z").unwrap();
        assert_eq!(to_nanos(t), 1_709_200_800_250_000_000);
        let t = parse_rfc3339("2024-02-29T10:00:00.1234567891Z").unwrap();
        assert_eq!(to_nanos(t), 1_709_200_800_123_456_789);
    }

    #[test]
    fn rejects_non_rfc3339() {
        for bad in [
            "",
            "tomorrow",
            "2024-02-29",
            "2024-02-29T10:00:00",
            "2024-02-29 10:00:00Z",
            "2023-02-29T10:00:00Z",
            "2024-13-01T10:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T10:60:00Z",
            "2024-01-01T10:00:60Z",
            "2024-01-01T10:00:00.Z",
            "2024-01-01T10:00:00+0200",
            "2024-01-01T10:00:00+02:00x",
            "2024-01-01T10:00:00ZZ",
            "２０２４-01-01T10:00:00Z",
        ] {
            assert!(parse_rfc3339(bad).is_none(), "{bad:?} should not parse");
        }
    }
}
