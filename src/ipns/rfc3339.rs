//! The `Validity` timestamp of an IPNS record: RFC 3339 in UTC with
//! nanoseconds, formatted as kubo formats it (Go's `time.RFC3339Nano`:
//! trailing zeros of the fraction dropped, no fraction at all on a whole
//! second, `Z` for UTC) and parsed as strictly as Go parses it (upper-case
//! `T` and `Z`, or a numeric offset; 1 to 9 fraction digits; no leap
//! seconds).
//!
//! Years 0000 to 9999 only: that is what the notation can write.

use std::time::{Duration, SystemTime, UNIX_EPOCH};
use thiserror::Error;

/// Why a timestamp could not be parsed or formatted.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Rfc3339Error {
    /// The text is not `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)`.
    #[error("expected YYYY-MM-DDTHH:MM:SS[.nnnnnnnnn]Z, {0}")]
    Syntax(&'static str),
    /// A field is out of its range (month 13, February 30, hour 24, ...).
    #[error("{0} is out of range")]
    Range(&'static str),
    /// The time is before year 0 or after year 9999.
    #[error("the time is outside years 0000 to 9999")]
    Year,
}

const SECS_PER_DAY: i64 = 86_400;

/// Seconds from the epoch to 0000-01-01T00:00:00Z.
const MIN_SECS: i64 = -62_167_219_200;
/// Seconds from the epoch to 9999-12-31T23:59:59Z.
const MAX_SECS: i64 = 253_402_300_799;

/// Days from 1970-01-01 to the given proleptic Gregorian date (Howard
/// Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date `days` after 1970-01-01 (Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Splits a time into whole seconds since the epoch (floored) and
/// nanoseconds within that second.
fn split(t: SystemTime) -> Option<(i64, u32)> {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Some((i64::try_from(d.as_secs()).ok()?, d.subsec_nanos())),
        Err(e) => {
            let d = e.duration();
            let secs = i64::try_from(d.as_secs()).ok()?;
            Some(match d.subsec_nanos() {
                0 => (-secs, 0),
                n => (-secs - 1, 1_000_000_000 - n),
            })
        }
    }
}

fn join(secs: i64, nanos: u32) -> Option<SystemTime> {
    let whole = Duration::from_secs(secs.unsigned_abs());
    let t = if secs >= 0 {
        UNIX_EPOCH.checked_add(whole)?
    } else {
        UNIX_EPOCH.checked_sub(whole)?
    };
    t.checked_add(Duration::from_nanos(u64::from(nanos)))
}

/// Formats `t` in UTC as kubo does, e.g. `2025-01-02T03:04:05.5Z`.
pub fn format(t: SystemTime) -> Result<String, Rfc3339Error> {
    let (secs, nanos) = split(t).ok_or(Rfc3339Error::Year)?;
    if !(MIN_SECS..=MAX_SECS).contains(&secs) {
        return Err(Rfc3339Error::Year);
    }
    let (year, month, day) = civil_from_days(secs.div_euclid(SECS_PER_DAY));
    let s = secs.rem_euclid(SECS_PER_DAY);
    let mut out = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        s / 3600,
        s / 60 % 60,
        s % 60
    );
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push('Z');
    Ok(out)
}

/// A cursor over the ASCII text of a timestamp.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn digits(&mut self, n: usize, what: &'static str) -> Result<u32, Rfc3339Error> {
        let Some(d) = self.0.get(..n).filter(|d| d.iter().all(u8::is_ascii_digit)) else {
            return Err(Rfc3339Error::Syntax(what));
        };
        self.0 = &self.0[n..];
        Ok(d.iter().fold(0, |v, b| v * 10 + u32::from(b - b'0')))
    }

    fn literal(&mut self, c: u8, what: &'static str) -> Result<(), Rfc3339Error> {
        match self.0.split_first() {
            Some((&b, rest)) if b == c => {
                self.0 = rest;
                Ok(())
            }
            _ => Err(Rfc3339Error::Syntax(what)),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.0.first().copied()
    }
}

/// Parses an RFC 3339 timestamp with optional fraction and a `Z` or numeric
/// offset.
pub fn parse(text: &str) -> Result<SystemTime, Rfc3339Error> {
    let mut c = Cursor(text.as_bytes());
    let year = i64::from(c.digits(4, "a four-digit year first")?);
    c.literal(b'-', "'-' after the year")?;
    let month = c.digits(2, "a two-digit month")?;
    c.literal(b'-', "'-' after the month")?;
    let day = c.digits(2, "a two-digit day")?;
    c.literal(b'T', "'T' after the date")?;
    let hour = c.digits(2, "a two-digit hour")?;
    c.literal(b':', "':' after the hour")?;
    let minute = c.digits(2, "two-digit minutes")?;
    c.literal(b':', "':' after the minutes")?;
    let second = c.digits(2, "two-digit seconds")?;
    let mut nanos = 0;
    if c.peek() == Some(b'.') {
        c.0 = &c.0[1..];
        let n = c.0.iter().take_while(|b| b.is_ascii_digit()).count();
        if !(1..=9).contains(&n) {
            return Err(Rfc3339Error::Syntax("1 to 9 digits after '.'"));
        }
        nanos = c.digits(n, "fraction digits")? * 10u32.pow(9 - n as u32);
    }
    let offset = match c.peek() {
        Some(b'Z') => {
            c.0 = &c.0[1..];
            0
        }
        Some(sign @ (b'+' | b'-')) => {
            c.0 = &c.0[1..];
            let h = c.digits(2, "a two-digit offset hour")?;
            c.literal(b':', "':' in the offset")?;
            let m = c.digits(2, "two-digit offset minutes")?;
            if h > 23 || m > 59 {
                return Err(Rfc3339Error::Range("the offset"));
            }
            let o = i64::from(h * 3600 + m * 60);
            if sign == b'-' {
                -o
            } else {
                o
            }
        }
        _ => return Err(Rfc3339Error::Syntax("'Z' or an offset after the time")),
    };
    if !c.0.is_empty() {
        return Err(Rfc3339Error::Syntax("nothing after the offset"));
    }
    if !(1..=12).contains(&month) {
        return Err(Rfc3339Error::Range("the month"));
    }
    if day == 0 || day > days_in_month(year, month) {
        return Err(Rfc3339Error::Range("the day"));
    }
    if hour > 23 {
        return Err(Rfc3339Error::Range("the hour"));
    }
    if minute > 59 {
        return Err(Rfc3339Error::Range("the minutes"));
    }
    if second > 59 {
        return Err(Rfc3339Error::Range("the seconds"));
    }
    let secs = days_from_civil(year, month, day) * SECS_PER_DAY
        + i64::from(hour * 3600 + minute * 60 + second)
        - offset;
    join(secs, nanos).ok_or(Rfc3339Error::Year)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(secs: i64, nanos: u32) -> SystemTime {
        join(secs, nanos).unwrap()
    }

    #[test]
    fn formats_as_go_rfc3339nano() {
        assert_eq!(format(UNIX_EPOCH).unwrap(), "1970-01-01T00:00:00Z");
        assert_eq!(format(at(0, 1)).unwrap(), "1970-01-01T00:00:00.000000001Z");
        assert_eq!(
            format(at(1_700_000_000, 500_000_000)).unwrap(),
            "2023-11-14T22:13:20.5Z"
        );
        assert_eq!(
            format(at(951_782_400, 123_456_789)).unwrap(),
            "2000-02-29T00:00:00.123456789Z"
        );
        assert_eq!(format(at(-1, 0)).unwrap(), "1969-12-31T23:59:59Z");
        assert_eq!(
            format(at(-1, 999_999_999)).unwrap(),
            "1969-12-31T23:59:59.999999999Z"
        );
        assert_eq!(format(at(MIN_SECS, 0)).unwrap(), "0000-01-01T00:00:00Z");
        assert_eq!(format(at(MAX_SECS, 0)).unwrap(), "9999-12-31T23:59:59Z");
        assert_eq!(format(at(MAX_SECS + 1, 0)), Err(Rfc3339Error::Year));
        assert_eq!(format(at(MIN_SECS - 1, 0)), Err(Rfc3339Error::Year));
    }

    #[test]
    fn parses_what_kubo_and_js_write() {
        // Go trims the fraction; JS (timestamp-nano) always writes nine digits.
        assert_eq!(
            parse("2023-11-14T22:13:20.5Z").unwrap(),
            at(1_700_000_000, 500_000_000)
        );
        assert_eq!(
            parse("2023-11-14T22:13:20.500000000Z").unwrap(),
            at(1_700_000_000, 500_000_000)
        );
        assert_eq!(parse("2023-11-14T22:13:20Z").unwrap(), at(1_700_000_000, 0));
        assert_eq!(
            parse("2023-11-14T23:13:20+01:00").unwrap(),
            at(1_700_000_000, 0)
        );
        assert_eq!(
            parse("2023-11-14T21:43:20-00:30").unwrap(),
            at(1_700_000_000, 0)
        );
    }

    #[test]
    fn rejects_what_go_rejects() {
        for bad in [
            "",
            "2023-11-14",
            "2023-11-14 22:13:20Z",
            "2023-11-14t22:13:20Z",
            "2023-11-14T22:13:20z",
            "2023-11-14T22:13:20",
            "2023-11-14T22:13:20.Z",
            "2023-11-14T22:13:20.1234567890Z",
            "2023-11-14T22:13:20Zjunk",
            "2023-13-14T22:13:20Z",
            "2023-02-29T22:13:20Z",
            "1900-02-29T00:00:00Z",
            "2023-11-00T22:13:20Z",
            "2023-11-14T24:00:00Z",
            "2023-11-14T22:60:20Z",
            "2023-11-14T22:13:60Z",
            "2023-11-14T22:13:20+24:00",
            "+2023-11-14T22:13:20Z",
            "२०२३-11-14T22:13:20Z",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
        assert!(parse("2000-02-29T00:00:00Z").is_ok());
    }

    proptest! {
        #[test]
        fn format_then_parse_is_identity(secs in MIN_SECS..=MAX_SECS, nanos in 0u32..1_000_000_000) {
            let t = at(secs, nanos);
            let text = format(t).unwrap();
            prop_assert_eq!(parse(&text).unwrap(), t);
            prop_assert!(text.len() <= "0000-01-01T00:00:00.000000001Z".len());
        }

        #[test]
        fn civil_round_trip(days in -800_000i64..3_000_000) {
            let (y, m, d) = civil_from_days(days);
            prop_assert!((1..=12).contains(&m) && d >= 1 && d <= days_in_month(y, m));
            prop_assert_eq!(days_from_civil(y, m, d), days);
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,40}") {
            let _ = parse(&text);
        }

        #[test]
        fn parse_never_panics_near_valid(text in "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{0,11})?(Z|[+-][0-9]{2}:[0-9]{2})") {
            if let Ok(t) = parse(&text) {
                // Whatever parses names a real instant that formats again.
                let _ = format(t);
            }
        }
    }
}
