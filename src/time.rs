//! Network time and intervals, in whole microseconds.
//!
//! Zeek keeps time as a `double` of seconds, but every time it ever sees comes from a pcap
//! header (`tv_sec`, `tv_usec`) or from adding an interval to one, and every log prints it with
//! `%.6f`. Integer microseconds give the same printed values exactly, make arithmetic
//! associative, and let the catch-and-release table store a time in eight bytes.
//!
//! [`Time`] is a point (microseconds since the Unix epoch); [`Interval`] is a signed span.
//! Neither type reads a clock; [`Time::now`] is the one exception and is only used by
//! callers outside the engine.

use std::fmt;
use std::ops::{Add, Sub};
use std::str::FromStr;

const MICROS_PER_SEC: i64 = 1_000_000;

/// A point in network time: microseconds since the Unix epoch.
///
/// `Time::ZERO` doubles as Zeek's "unset" time (`watch_until == 0` means "unknown to
/// catch-and-release").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(i64);

/// A signed span of network time, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Interval(i64);

impl Time {
    /// The epoch; also Zeek's network time before the first packet.
    pub const ZERO: Time = Time(0);

    /// The latest representable time ("never").
    pub const MAX: Time = Time(i64::MAX);

    /// Builds a time from microseconds since the epoch.
    pub const fn from_micros(us: i64) -> Time {
        Time(us)
    }

    /// Builds a time from a `struct timeval` as found in pcap headers. A damaged header's
    /// absurd value saturates at the ends of time rather than overflow.
    pub const fn from_timeval(sec: i64, usec: i64) -> Time {
        Time(sec.saturating_mul(MICROS_PER_SEC).saturating_add(usec))
    }

    /// Microseconds since the epoch.
    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// Seconds since the epoch as a double, computed the way Zeek converts a pcap timestamp
    /// (`tv_sec + tv_usec / 1e6`), which keeps JSON output closest to Zeek's.
    pub fn as_secs_f64(self) -> f64 {
        let secs = self.0.div_euclid(MICROS_PER_SEC);
        let us = self.0.rem_euclid(MICROS_PER_SEC);
        secs as f64 + us as f64 / 1e6
    }

    /// The wall clock. Only for code outside the engine (live capture, log headers).
    pub fn now() -> Time {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Time(d.as_micros() as i64)
    }
}

impl Interval {
    /// The empty interval.
    pub const ZERO: Interval = Interval(0);

    /// Builds an interval from microseconds.
    pub const fn from_micros(us: i64) -> Interval {
        Interval(us)
    }

    /// Builds an interval from whole seconds.
    pub const fn from_secs(secs: i64) -> Interval {
        Interval(secs.saturating_mul(MICROS_PER_SEC))
    }

    /// Microseconds.
    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// Seconds as a double.
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e6
    }

    /// Absolute value.
    pub const fn abs(self) -> Interval {
        Interval(self.0.abs())
    }
}

impl Add<Interval> for Time {
    type Output = Time;
    fn add(self, rhs: Interval) -> Time {
        Time(self.0.saturating_add(rhs.0))
    }
}

impl Sub<Interval> for Time {
    type Output = Time;
    fn sub(self, rhs: Interval) -> Time {
        Time(self.0.saturating_sub(rhs.0))
    }
}

impl Sub<Time> for Time {
    type Output = Interval;
    fn sub(self, rhs: Time) -> Interval {
        Interval(self.0.saturating_sub(rhs.0))
    }
}

/// Writes microseconds as seconds with exactly six decimals, like C's `%.6f`.
fn fmt_micros(us: i64, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let sign = if us < 0 { "-" } else { "" };
    let abs = us.unsigned_abs();
    write!(
        f,
        "{sign}{}.{:06}",
        abs / MICROS_PER_SEC as u64,
        abs % MICROS_PER_SEC as u64
    )
}

/// `%.6f` seconds, as in Zeek's TSV logs (`1398529618.678276`).
impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_micros(self.0, f)
    }
}

/// `%.6f` seconds, as in Zeek's TSV logs (`600.000000`).
impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_micros(self.0, f)
    }
}

/// Why a time or interval could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Nothing to parse.
    #[error("empty value")]
    Empty,
    /// Neither a number of seconds nor a duration such as `10m` or `1h 30m`.
    #[error("`{0}` is not a duration (use seconds, or units such as 10m, 1h, 24h, 7d)")]
    Duration(String),
    /// Not a timestamp in any accepted form.
    #[error("`{0}` is not a time (use epoch seconds such as 1254722767.492060, or RFC 3339)")]
    Time(String),
    /// More precision than a microsecond, or out of range.
    #[error("`{0}` is out of range or finer than a microsecond")]
    Range(String),
}

/// Parses a decimal number of seconds (`600`, `1.5`, `1254722767.492060`) exactly, without
/// going through floating point. Returns `None` when the text is not such a number.
fn parse_decimal_seconds(s: &str) -> Option<Result<i64, ()>> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = match digits.split_once('.') {
        Some((i, f)) => (i, f),
        None => (digits, ""),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac_trimmed = frac.trim_end_matches('0');
    if frac_trimmed.len() > 6 {
        return Some(Err(()));
    }
    let int_val: i64 = if int.is_empty() {
        0
    } else {
        match int.parse::<i64>() {
            Ok(v) => v,
            Err(_) => return Some(Err(())),
        }
    };
    let mut frac_val: i64 = 0;
    for (i, b) in frac_trimmed.bytes().enumerate() {
        frac_val += i64::from(b - b'0') * 10_i64.pow(5 - i as u32);
    }
    let us = int_val
        .checked_mul(MICROS_PER_SEC)
        .and_then(|v| v.checked_add(frac_val));
    Some(match us {
        Some(v) if neg => Ok(-v),
        Some(v) => Ok(v),
        None => Err(()),
    })
}

impl FromStr for Interval {
    type Err = ParseError;

    /// Accepts a number of seconds (`600`, `0.5`) or a humantime duration (`10m`, `1h 30m`,
    /// `7d`, `250ms`).
    fn from_str(s: &str) -> Result<Interval, ParseError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(ParseError::Empty);
        }
        if let Some(r) = parse_decimal_seconds(s) {
            return r
                .map(Interval)
                .map_err(|()| ParseError::Range(s.to_string()));
        }
        let d = humantime::parse_duration(s).map_err(|_| ParseError::Duration(s.to_string()))?;
        if d.subsec_nanos() % 1000 != 0 {
            return Err(ParseError::Range(s.to_string()));
        }
        i64::try_from(d.as_micros())
            .map(Interval)
            .map_err(|_| ParseError::Range(s.to_string()))
    }
}

impl FromStr for Time {
    type Err = ParseError;

    /// Accepts epoch seconds with up to six decimals (`1254722767.49206`) or an RFC 3339 /
    /// ISO 8601 timestamp (`2009-10-05T06:06:07.492060Z`).
    fn from_str(s: &str) -> Result<Time, ParseError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(ParseError::Empty);
        }
        if let Some(r) = parse_decimal_seconds(s) {
            return r.map(Time).map_err(|()| ParseError::Range(s.to_string()));
        }
        let st = humantime::parse_rfc3339_weak(s).map_err(|_| ParseError::Time(s.to_string()))?;
        let d = st
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|_| ParseError::Range(s.to_string()))?;
        i64::try_from(d.as_micros())
            .map(Time)
            .map_err(|_| ParseError::Range(s.to_string()))
    }
}

/// Year, month, day of a count of days since 1970-01-01 (proleptic Gregorian; Howard
/// Hinnant's `civil_from_days`).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Writes `YYYY-MM-DD<sep>HH:MM:SS[.ffffff]<zone>` without allocating.
fn write_time(f: &mut fmt::Formatter<'_>, t: Time, sep: u8, zone: &str) -> fmt::Result {
    let us = t.as_micros();
    let secs = us.div_euclid(1_000_000);
    let frac = us.rem_euclid(1_000_000) as u32;
    let (y, mo, d) = civil(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400) as u32;
    if !(0..=9999).contains(&y) {
        return write!(
            f,
            "{y:04}-{mo:02}-{d:02}{}{:02}:{:02}:{:02}",
            sep as char,
            sod / 3600,
            sod / 60 % 60,
            sod % 60
        )
        .and_then(|()| {
            if frac == 0 {
                Ok(())
            } else {
                write!(f, ".{frac:06}")
            }
        })
        .and_then(|()| f.write_str(zone));
    }
    let mut b = *b"0000-00-00T00:00:00.000000";
    let mut put = |at: usize, width: usize, mut v: u32| {
        for k in (at..at + width).rev() {
            b[k] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, y as u32);
    put(5, 2, mo);
    put(8, 2, d);
    put(11, 2, sod / 3600);
    put(14, 2, sod / 60 % 60);
    put(17, 2, sod % 60);
    put(20, 6, frac);
    b[10] = sep;
    let len = if frac == 0 { 19 } else { 26 };
    f.write_str(std::str::from_utf8(&b[..len]).map_err(|_| fmt::Error)?)?;
    f.write_str(zone)
}

/// DRF's JSON timestamp (BHR's API and CSV lists use it): `isoformat()` with `Z` for `+00:00`.
#[derive(Clone, Copy, Debug)]
pub struct Iso(pub Time);

impl fmt::Display for Iso {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_time(f, self.0, b'T', "Z")
    }
}

impl serde::Serialize for Iso {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Python's `str(datetime)` of an aware UTC time.
#[derive(Clone, Copy, Debug)]
pub struct PyStr(pub Time);

impl fmt::Display for PyStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_time(f, self.0, b' ', "+00:00")
    }
}

impl serde::Serialize for PyStr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_printf_six_decimals() {
        assert_eq!(
            Time::from_timeval(1398529018, 678276).to_string(),
            "1398529018.678276"
        );
        assert_eq!(Interval::from_secs(600).to_string(), "600.000000");
        assert_eq!(Interval::from_micros(-1_500_000).to_string(), "-1.500000");
        assert_eq!(Time::ZERO.to_string(), "0.000000");
    }

    #[test]
    fn parses_seconds_exactly() {
        let t: Time = "1254722767.49206".parse().unwrap();
        assert_eq!(t, Time::from_timeval(1254722767, 492060));
        assert_eq!("600".parse::<Interval>().unwrap(), Interval::from_secs(600));
        assert_eq!(
            ".5".parse::<Interval>().unwrap(),
            Interval::from_micros(500_000)
        );
        assert!(matches!(
            "1.0000001".parse::<Interval>(),
            Err(ParseError::Range(_))
        ));
    }

    #[test]
    fn parses_humantime_durations() {
        assert_eq!("10m".parse::<Interval>().unwrap(), Interval::from_secs(600));
        assert_eq!(
            "1h 30m".parse::<Interval>().unwrap(),
            Interval::from_secs(5400)
        );
        assert_eq!(
            "7d".parse::<Interval>().unwrap(),
            Interval::from_secs(604800)
        );
        assert!(matches!(
            "ten minutes".parse::<Interval>(),
            Err(ParseError::Duration(_))
        ));
    }

    #[test]
    fn parses_rfc3339() {
        let t: Time = "2009-10-05T06:06:07.492060Z".parse().unwrap();
        assert_eq!(t, Time::from_timeval(1254722767, 492060));
    }

    #[test]
    fn secs_f64_matches_zeek_conversion() {
        let t = Time::from_timeval(1254722767, 492060);
        assert_eq!(t.as_secs_f64(), 1254722767.0 + 492060.0 / 1e6);
    }
}
