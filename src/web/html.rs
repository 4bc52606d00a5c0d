//! What the templates need beyond maud's escaping: URL encoding, and the date and
//! duration formats BHR's pages use (Django's `N j, Y, P` and `timesince`).

use std::fmt::{self, Write as _};

use chrono::{DateTime, Datelike, Timelike, Utc};

use crate::time::Time;

/// Percent-encodes every byte but ASCII letters, digits, `-_.~` and those in `keep`.
fn percent(f: &mut fmt::Formatter<'_>, s: &str, keep: &[u8]) -> fmt::Result {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || keep.contains(&b) {
            f.write_char(b as char)?;
        } else {
            write!(f, "%{b:02X}")?;
        }
    }
    Ok(())
}

/// Text made safe for a query-string value (`application/x-www-form-urlencoded`); `/`
/// and `:` stay readable.
pub struct Url<'a>(pub &'a str);

impl fmt::Display for Url<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        percent(f, self.0, b"/:")
    }
}

/// Text made safe for one path segment (`/` is encoded too).
pub struct PathSeg<'a>(pub &'a str);

impl fmt::Display for PathSeg<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        percent(f, self.0, b"")
    }
}

fn utc(t: Time) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_micros(t.as_micros())
}

/// Django's month abbreviations (format character `N`, AP style).
const MONTHS: [&str; 12] = [
    "Jan.", "Feb.", "March", "April", "May", "June", "July", "Aug.", "Sept.", "Oct.", "Nov.",
    "Dec.",
];

/// Django's default `DATETIME_FORMAT` (`N j, Y, P`): `Nov. 21, 2026, 1:51 p.m.`, in UTC.
pub struct Date(pub Time);

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(d) = utc(self.0) else {
            return f.write_str("?");
        };
        write!(
            f,
            "{} {}, {}, ",
            MONTHS[d.month0() as usize],
            d.day(),
            d.year()
        )?;
        let (h, m) = (d.hour(), d.minute());
        match (h, m) {
            (0, 0) => f.write_str("midnight"),
            (12, 0) => f.write_str("noon"),
            _ => {
                let h12 = if h % 12 == 0 { 12 } else { h % 12 };
                let ampm = if h < 12 { "a.m." } else { "p.m." };
                if m == 0 {
                    write!(f, "{h12} {ampm}")
                } else {
                    write!(f, "{h12}:{m:02} {ampm}")
                }
            }
        }
    }
}

/// A `<time>` element: the Django date as text, the ISO time as its machine value.
pub struct TimeTag(pub Time);

impl fmt::Display for TimeTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let iso = crate::api::bhr::Iso(self.0);
        write!(
            f,
            "<time datetime=\"{iso}\" title=\"{iso}\">{}</time>",
            Date(self.0)
        )
    }
}

/// [`TimeTag`] as markup for templates (its text is made of the time alone).
pub fn time_tag(t: Time) -> maud::PreEscaped<String> {
    maud::PreEscaped(TimeTag(t).to_string())
}

/// [`Short`] as markup for templates (its text is made of the time alone).
pub fn short_time(t: Time) -> maud::PreEscaped<String> {
    maud::PreEscaped(Short(t).to_string())
}

/// A compact `<time>` for log lines: `Nov. 21 13:51:53`, the full ISO time as its value.
pub struct Short(pub Time);

impl fmt::Display for Short {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(d) = utc(self.0) else {
            return f.write_str("?");
        };
        let iso = crate::api::bhr::Iso(self.0);
        write!(
            f,
            "<time datetime=\"{iso}\" title=\"{iso}\">{} {} {:02}:{:02}:{:02}</time>",
            MONTHS[d.month0() as usize],
            d.day(),
            d.hour(),
            d.minute(),
            d.second()
        )
    }
}

/// Django's `timesince` from `from` to `to`: the largest unit and the next one if not
/// zero (`4 minutes`, `1 hour, 5 minutes`, `1 week, 2 days`), `0 minutes` when `to` is not
/// after `from`. Leap days between the two are not counted, as Django does.
pub struct Since(pub Time, pub Time);

fn is_leap(y: i32) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

/// Leap years in `[y1, y2)` (Python's `calendar.leapdays`).
fn leapdays(y1: i32, y2: i32) -> i64 {
    let f = |y: i32| {
        let y = i64::from(y) - 1;
        y.div_euclid(4) - y.div_euclid(100) + y.div_euclid(400)
    };
    f(y2) - f(y1)
}

impl fmt::Display for Since {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const CHUNKS: [(i64, &str, &str); 6] = [
            (365 * 86_400, "year", "years"),
            (30 * 86_400, "month", "months"),
            (7 * 86_400, "week", "weeks"),
            (86_400, "day", "days"),
            (3_600, "hour", "hours"),
            (60, "minute", "minutes"),
        ];
        let (Some(a), Some(b)) = (utc(self.0), utc(self.1)) else {
            return f.write_str("?");
        };
        let mut leap = leapdays(a.year(), b.year());
        if leap != 0 {
            if is_leap(a.year()) {
                leap -= 1;
            } else if is_leap(b.year()) {
                leap += 1;
            }
        }
        let since = (self.1 - self.0).as_micros().div_euclid(1_000_000) - leap * 86_400;
        if since <= 0 {
            return f.write_str("0\u{a0}minutes");
        }
        let unit = |f: &mut fmt::Formatter<'_>, n: i64, one: &str, many: &str| {
            write!(f, "{n}\u{a0}{}", if n == 1 { one } else { many })
        };
        for (i, (secs, one, many)) in CHUNKS.iter().enumerate() {
            let n = since / secs;
            if n == 0 {
                continue;
            }
            unit(f, n, one, many)?;
            if let Some((secs2, one2, many2)) = CHUNKS.get(i + 1) {
                let n2 = (since - secs * n) / secs2;
                if n2 != 0 {
                    f.write_str(", ")?;
                    unit(f, n2, one2, many2)?;
                }
            }
            return Ok(());
        }
        f.write_str("0\u{a0}minutes")
    }
}

/// A short, exact remaining time: `3d 4h`, `9m 12s`, `41s`; `now` at or below zero.
pub struct Left(pub i64);

impl fmt::Display for Left {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        if s <= 0 {
            return f.write_str("now");
        }
        let (d, h, m, sec) = (s / 86_400, s / 3_600 % 24, s / 60 % 60, s % 60);
        if d > 0 {
            write!(f, "{d}d {h}h")
        } else if h > 0 {
            write!(f, "{h}h {m}m")
        } else if m > 0 {
            write!(f, "{m}m {sec}s")
        } else {
            write!(f, "{sec}s")
        }
    }
}

/// A whole number of seconds in a compact human form: `10m`, `1h`, `24h`, `7d`, `90s`.
pub struct Span(pub i64);

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        if s > 0 && s % 86_400 == 0 && s >= 2 * 86_400 {
            write!(f, "{}d", s / 86_400)
        } else if s > 0 && s % 3_600 == 0 {
            write!(f, "{}h", s / 3_600)
        } else if s > 0 && s % 60 == 0 {
            write!(f, "{}m", s / 60)
        } else {
            write!(f, "{s}s")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Time {
        let d = DateTime::parse_from_rfc3339(s).unwrap();
        Time::from_micros(d.timestamp_micros())
    }

    #[test]
    fn templates_escape_markup_and_urls_are_percent_encoded() {
        let hostile = "<script>alert('x')</script> & \"q\"";
        assert_eq!(
            maud::html! { p title=(hostile) { (hostile) } }.into_string(),
            "<p title=\"&lt;script&gt;alert('x')&lt;/script&gt; &amp; &quot;q&quot;\">\
             &lt;script&gt;alert('x')&lt;/script&gt; &amp; &quot;q&quot;</p>"
        );
        assert_eq!(Url("a b&c=d/é").to_string(), "a%20b%26c%3Dd/%C3%A9");
    }

    #[test]
    fn django_dates() {
        assert_eq!(
            Date(t("2026-11-21T13:51:53.360815Z")).to_string(),
            "Nov. 21, 2026, 1:51 p.m."
        );
        assert_eq!(
            Date(t("2026-03-01T00:00:00Z")).to_string(),
            "March 1, 2026, midnight"
        );
        assert_eq!(
            Date(t("2026-09-30T12:00:00Z")).to_string(),
            "Sept. 30, 2026, noon"
        );
        assert_eq!(
            Date(t("2026-06-05T09:00:59Z")).to_string(),
            "June 5, 2026, 9 a.m."
        );
        assert_eq!(
            Date(t("2026-12-31T00:07:00Z")).to_string(),
            "Dec. 31, 2026, 12:07 a.m."
        );
    }

    #[test]
    fn django_timesince() {
        let a = t("2026-11-21T13:51:53.360815Z");
        let s = |secs: i64| {
            Since(a, a + crate::time::Interval::from_secs(secs))
                .to_string()
                .replace('\u{a0}', " ")
        };
        assert_eq!(s(300), "5 minutes");
        assert_eq!(s(299), "4 minutes");
        assert_eq!(s(59), "0 minutes");
        assert_eq!(s(-10), "0 minutes");
        assert_eq!(s(3_600), "1 hour");
        assert_eq!(s(3_900), "1 hour, 5 minutes");
        assert_eq!(s(86_400), "1 day");
        assert_eq!(s(7 * 86_400), "1 week");
        assert_eq!(s(9 * 86_400 + 7_200), "1 week, 2 days");
        assert_eq!(s(30 * 86_400), "1 month");
        assert_eq!(s(90 * 86_400), "3 months");
        assert_eq!(s(365 * 86_400), "1 year");
        // Across 29 Feb 2028 a 366-day span is one year, as in Django.
        let b = t("2027-06-01T00:00:00Z");
        let c = t("2028-06-01T00:00:00Z");
        assert_eq!(Since(b, c).to_string().replace('\u{a0}', " "), "1 year");
    }

    #[test]
    fn remaining_and_spans() {
        assert_eq!(Left(0).to_string(), "now");
        assert_eq!(Left(41).to_string(), "41s");
        assert_eq!(Left(552).to_string(), "9m 12s");
        assert_eq!(Left(3 * 86_400 + 4 * 3_600 + 5).to_string(), "3d 4h");
        assert_eq!(Span(600).to_string(), "10m");
        assert_eq!(Span(86_400).to_string(), "24h");
        assert_eq!(Span(7 * 86_400).to_string(), "7d");
        assert_eq!(Span(90).to_string(), "90s");
    }
}
