//! The start of a log line: its time and, for syslog-style lines, the program that wrote
//! it. Parsed by hand (no regex, no allocation), because every line goes through it.
//!
//! Forms read:
//! * classic syslog: `Oct  4 12:04:50 host prog[pid]: message` (local time; the year is
//!   inferred: the latest year that does not put the line after the reference time, which
//!   is the file's modification time or now), optionally followed by Solaris'
//!   `[ID 800047 auth.info]`;
//! * RFC 3339 (rsyslog's high-precision format, journald exports):
//!   `2024-05-01T12:00:00.123456+02:00 host prog[pid]: message`;
//! * metalog: `Oct  4 12:04:50 [prog] message`;
//! * multilog: `@4000000065a1b2c3d4e5f607 message` (TAI64N);
//! * ctime, as vsftpd's own log writes it: `Mon Jan  1 10:00:00 2024 message`, and in
//!   brackets with optional fractions, as Apache's error log does:
//!   `[Tue Mar 12 10:00:00.123456 2024] message`.

use chrono::{FixedOffset, Local, NaiveDate, NaiveDateTime, TimeZone};

use crate::time::Time;

/// What a line's prefix says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefix<'a> {
    /// The line's time, if it has one catchd reads.
    pub ts: Option<Time>,
    /// The program (`sshd`, `vsftpd(pam_unix)`, `postfix/smtpd`), for syslog and metalog
    /// lines.
    pub program: Option<&'a str>,
    /// Where the text after the prefix begins (the byte after `prog[pid]:`); 0 when the
    /// line has no prefix catchd knows.
    pub rest: usize,
    /// Whether the prefix is one `{LOG_PREFIX{…}}` stands for (syslog, metalog, multilog).
    pub log_prefix: bool,
}

/// Resolves dates without a year or zone.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// Lines are not later than this (a day of slack for clock skew).
    reference: Time,
    /// Its year, local time.
    year: i32,
}

impl Clock {
    /// A clock for a file last written at `reference`.
    pub fn new(reference: Time) -> Clock {
        let year = Local
            .timestamp_micros(reference.as_micros())
            .single()
            .map_or(1970, |t| {
                use chrono::Datelike;
                t.year()
            });
        Clock { reference, year }
    }

    /// A local date and time in the latest year that does not put it more than a day
    /// after the reference.
    fn local_without_year(&self, month: u32, day: u32, secs: u32) -> Option<Time> {
        let slack = crate::time::Interval::from_secs(86_400);
        for year in [self.year, self.year - 1] {
            let Some(d) = NaiveDate::from_ymd_opt(year, month, day) else {
                continue;
            };
            let Some(dt) = d.and_hms_opt(secs / 3600, secs / 60 % 60, secs % 60) else {
                continue;
            };
            let Some(t) = local(dt) else { continue };
            if t <= self.reference + slack {
                return Some(t);
            }
        }
        None
    }
}

fn local(dt: NaiveDateTime) -> Option<Time> {
    Local
        .from_local_datetime(&dt)
        .earliest()
        .map(|t| Time::from_micros(t.timestamp_micros()))
}

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

fn month(b: &[u8]) -> Option<u32> {
    let m = b.get(..3)?;
    MONTHS
        .iter()
        .position(|x| x.as_slice() == m)
        .map(|i| i as u32 + 1)
}

fn digits(b: &[u8], from: usize, n: usize) -> Option<u32> {
    let s = b.get(from..from + n)?;
    let mut v = 0u32;
    for c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(c - b'0');
    }
    Some(v)
}

/// `hh:mm:ss` at `at`: seconds of the day.
fn clock_time(b: &[u8], at: usize) -> Option<u32> {
    let h = digits(b, at, 2)?;
    let m = digits(b, at + 3, 2)?;
    let s = digits(b, at + 6, 2)?;
    (b.get(at + 2) == Some(&b':') && b.get(at + 5) == Some(&b':') && h < 24 && m < 60 && s < 61)
        .then_some(h * 3600 + m * 60 + s.min(59))
}

/// `Mmm dd hh:mm:ss` (day space-padded or not): (month, day, seconds, length).
fn classic(b: &[u8]) -> Option<(u32, u32, u32, usize)> {
    let mo = month(b)?;
    if b.get(3) != Some(&b' ') {
        return None;
    }
    let (day, at) = if b.get(4) == Some(&b' ') {
        (digits(b, 5, 1)?, 7)
    } else if let Some(d) = digits(b, 4, 2) {
        (d, 7)
    } else {
        (digits(b, 4, 1)?, 6)
    };
    if b.get(at - 1) != Some(&b' ') {
        return None;
    }
    Some((mo, day, clock_time(b, at)?, at + 8))
}

/// An optional `.digits` at `*i` as microseconds (extra digits ignored); moves `*i`
/// past it.
fn fraction(b: &[u8], i: &mut usize) -> u32 {
    let mut micros = 0u32;
    if b.get(*i) == Some(&b'.') {
        *i += 1;
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            if *i - start < 6 {
                micros = micros * 10 + u32::from(b[*i] - b'0');
            }
            *i += 1;
        }
        for _ in (*i - start).min(6)..6 {
            micros *= 10;
        }
    }
    micros
}

/// `YYYY-MM-DDThh:mm:ss[.frac](Z|±hh:mm)`: (time, length).
fn rfc3339(b: &[u8]) -> Option<(Time, usize)> {
    let y = digits(b, 0, 4)?;
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') || !matches!(b.get(10), Some(b'T' | b' '))
    {
        return None;
    }
    let mo = digits(b, 5, 2)?;
    let d = digits(b, 8, 2)?;
    let secs = clock_time(b, 11)?;
    let mut i = 19;
    let micros = fraction(b, &mut i);
    let offset = match b.get(i) {
        Some(b'Z' | b'z') => {
            i += 1;
            0
        }
        Some(&c @ (b'+' | b'-')) => {
            let oh = digits(b, i + 1, 2)?;
            let (om, len) = if b.get(i + 3) == Some(&b':') {
                (digits(b, i + 4, 2)?, 6)
            } else {
                (digits(b, i + 3, 2)?, 5)
            };
            i += len;
            let s = (oh * 3600 + om * 60) as i32;
            if c == b'-' { -s } else { s }
        }
        _ => return None,
    };
    let dt = NaiveDate::from_ymd_opt(y as i32, mo, d)?.and_hms_micro_opt(
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        micros,
    )?;
    let t = FixedOffset::east_opt(offset)?
        .from_local_datetime(&dt)
        .single()?;
    Some((Time::from_micros(t.timestamp_micros()), i))
}

/// `Www Mmm dd hh:mm:ss[.frac] YYYY`: (time, length).
fn ctime(b: &[u8]) -> Option<(Time, usize)> {
    if b.get(3) != Some(&b' ') || !b.first()?.is_ascii_uppercase() {
        return None;
    }
    let (mo, day, secs, mut i) = classic(b.get(4..)?)?;
    i += 4;
    let micros = fraction(b, &mut i);
    if b.get(i) != Some(&b' ') {
        return None;
    }
    let y = digits(b, i + 1, 4)?;
    let dt = NaiveDate::from_ymd_opt(y as i32, mo, day)?.and_hms_micro_opt(
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        micros,
    )?;
    Some((local(dt)?, i + 5))
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// `@` and 24 hex digits (TAI64N): (time, length).
fn tai64n(b: &[u8]) -> Option<(Time, usize)> {
    if b.first() != Some(&b'@') {
        return None;
    }
    let hex = b.get(1..25)?;
    // Bytes, not text: a multi-byte character among the digits must not be sliced.
    let mut secs = 0u64;
    for &c in &hex[..16] {
        secs = (secs << 4) | u64::from(hex_digit(c)?);
    }
    let mut nanos = 0u32;
    for &c in &hex[16..] {
        nanos = (nanos << 4) | u32::from(hex_digit(c)?);
    }
    // TAI64 labels are 2^62 + TAI seconds; TAI ran 10 s ahead of UTC in 1970.
    let unix = secs.checked_sub(0x4000_0000_0000_000a)?;
    let us = i64::try_from(unix)
        .ok()?
        .checked_mul(1_000_000)?
        .checked_add(i64::from(nanos / 1000))?;
    Some((Time::from_micros(us), 25))
}

/// `host prog[pid]:` after a syslog timestamp (at `i`, which is a space): the program
/// and where the message starts.
fn host_program(b: &[u8], mut i: usize) -> Option<(usize, usize, usize)> {
    if b.get(i) != Some(&b' ') {
        return None;
    }
    i += 1;
    // The host name.
    let h = i;
    while b.get(i).is_some_and(|c| *c != b' ') {
        i += 1;
    }
    if i == h || b.get(i) != Some(&b' ') {
        return None;
    }
    i += 1;
    let p = i;
    while let Some(&c) = b.get(i) {
        if c == b'[' || c == b':' || c == b' ' {
            break;
        }
        i += 1;
    }
    let pe = i;
    if pe == p {
        return None;
    }
    if b.get(i) == Some(&b'[') {
        i += 1;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if b.get(i) != Some(&b']') {
            return None;
        }
        i += 1;
    }
    if b.get(i) != Some(&b':') {
        return None;
    }
    i += 1;
    // Solaris: ` [ID 800047 auth.info]`.
    if b[i..].starts_with(b" [ID ")
        && let Some(end) = b[i..].iter().position(|c| *c == b']')
    {
        i += end + 1;
    }
    Some((p, pe, i))
}

/// Reads the prefix of `line`.
pub fn parse<'a>(line: &'a str, clock: &Clock) -> Prefix<'a> {
    let b = line.as_bytes();
    let none = Prefix {
        ts: None,
        program: None,
        rest: 0,
        log_prefix: false,
    };
    let syslog = |ts: Option<Time>, end: usize| {
        if let Some((p, pe, rest)) = host_program(b, end) {
            return Some(Prefix {
                ts,
                program: Some(&line[p..pe]),
                rest,
                log_prefix: true,
            });
        }
        None
    };
    if let Some((mo, day, secs, end)) = classic(b) {
        let ts = clock.local_without_year(mo, day, secs);
        // metalog: `Mmm dd hh:mm:ss [prog] message` (no syslog host starts with `[`).
        if b.get(end..end + 2) == Some(b" [")
            && let Some(close) = b[end + 2..].iter().position(|c| *c == b']')
        {
            let pe = end + 2 + close;
            return Prefix {
                ts,
                program: Some(&line[end + 2..pe]),
                rest: pe + 1,
                log_prefix: true,
            };
        }
        if let Some(p) = syslog(ts, end) {
            return p;
        }
        return Prefix {
            ts,
            program: None,
            rest: end,
            log_prefix: false,
        };
    }
    if let Some((t, end)) = rfc3339(b) {
        return syslog(Some(t), end).unwrap_or(Prefix {
            ts: Some(t),
            program: None,
            rest: end,
            log_prefix: false,
        });
    }
    if let Some((t, end)) = tai64n(b) {
        return Prefix {
            ts: Some(t),
            program: None,
            rest: end,
            log_prefix: true,
        };
    }
    if let Some((t, end)) = ctime(b) {
        return Prefix {
            ts: Some(t),
            program: None,
            rest: end,
            log_prefix: false,
        };
    }
    if b.first() == Some(&b'[')
        && let Some((t, end)) = ctime(&b[1..])
        && b.get(end + 1) == Some(&b']')
    {
        return Prefix {
            ts: Some(t),
            program: None,
            rest: end + 2,
            log_prefix: false,
        };
    }
    none
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc_clock() -> Clock {
        // 2026-11-21T00:00:00Z.
        Clock::new(Time::from_micros(1_795_219_200_000_000))
    }

    fn p(line: &str) -> Prefix<'_> {
        parse(line, &utc_clock())
    }

    #[test]
    fn syslog_lines_give_program_and_message() {
        let l = "Oct  4 12:04:50 host.example.com sshd[1110]: Invalid user x from 192.0.2.1";
        let x = p(l);
        assert_eq!(x.program, Some("sshd"));
        assert_eq!(&l[x.rest..], " Invalid user x from 192.0.2.1");
        assert!(x.log_prefix);
        let l = "Dec 25 21:18:58 host vsftpd(pam_unix)[21989]: authentication failure";
        assert_eq!(p(l).program, Some("vsftpd(pam_unix)"));
        let l = "Oct  4 12:04:50 host sshd[1110]: [ID 800047 auth.info] Failed password";
        assert_eq!(&l[p(l).rest..], " Failed password");
        let l = "Jan 14 03:00:00 mail postfix/smtpd[42]: warning: x";
        assert_eq!(p(l).program, Some("postfix/smtpd"));
        let l = "Jan 14 03:00:00 mail dovecot: imap-login: Disconnected";
        assert_eq!(p(l).program, Some("dovecot"));
        let l = "2024-05-01T12:00:00.123456+02:00 box sshd[7]: Failed password";
        let x = p(l);
        assert_eq!(x.program, Some("sshd"));
        // 10:00:00.123456 UTC.
        assert_eq!(x.ts, Some(Time::from_micros(1_714_557_600_123_456)));
        let l = "Oct 18 04:21:52 [xinetd] START: ftp";
        assert_eq!(p(l).program, Some("xinetd"));
        assert_eq!(&l[p(l).rest..], " START: ftp");
    }

    #[test]
    fn other_timestamps() {
        let x = p("@400000006655c2a0000f4240 sshd: hello");
        assert!(x.log_prefix);
        assert_eq!(x.ts, Some(Time::from_micros(1_716_896_406_001_000)));
        let x = p("Mon Jan  1 10:00:00 2024 [pid 12] [ftp] FAIL LOGIN: Client \"192.0.2.9\"");
        assert!(x.ts.is_some());
        assert!(!x.log_prefix);
        let l =
            "[Tue Mar 12 10:00:00.123456 2024] [auth_basic:error] [pid 1] [client 192.0.2.1:5] x";
        let x = p(l);
        assert!(x.ts.is_some());
        assert_eq!(
            &l[x.rest..],
            " [auth_basic:error] [pid 1] [client 192.0.2.1:5] x"
        );
        assert_eq!(p("garbage line").rest, 0);
        assert_eq!(p("").ts, None);
    }

    #[test]
    fn classic_dates_take_the_latest_year_not_in_the_future() {
        // Reference 2026-11-21: "Nov 20" is 2026, "Dec 25" is 2025.
        let nov = p("Nov 20 00:00:00 h a: x").ts.unwrap();
        let dec = p("Dec 25 00:00:00 h a: x").ts.unwrap();
        assert!(nov > dec);
        assert!(nov.as_micros() > 1_795_000_000_000_000);
        assert!(dec.as_micros() < 1_795_000_000_000_000 - 300 * 86_400_000_000);
        // Feb 29 only in leap years: 2024 is the latest one not in the future... from 2026
        // only 2026 and 2025 are tried, neither has it.
        assert_eq!(p("Feb 29 00:00:00 h a: x").ts, None);
    }

    #[test]
    fn damaged_prefixes_do_not_panic() {
        for l in [
            "Oct",
            "Oct  ",
            "Oct 4 1",
            "Oct 44 12:00:00",
            "2024-13-01T00:00:00Z h p: x",
            "2024-01-01T00:00:00",
            "@4000",
            "@zzzzzzzzzzzzzzzzzzzzzzzz x",
            "[Tue",
            "Tue Mar",
            "Oct  4 12:04:50 host",
            "Oct  4 12:04:50 host sshd[12",
            "Oct  4 12:04:50  sshd: x",
            "\u{1F600}\u{1F600}\u{1F600}\u{1F600}",
            // A multi-byte character where the TAI64N digits would be (a panic once).
            "@aaaaaaaaaaaaaaa\u{20AC}aaaaaa",
            "@aaaaaaaaaaaaaaaaaaaaaa\u{20AC}",
            "@\u{20AC}aaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ] {
            let _ = p(l);
        }
    }
}
