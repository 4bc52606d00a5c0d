//! Block durations, as BHR's `expand_time` reads them, plus humantime forms.

/// Seconds per suffix, tried in this order (`mo` before `m`), as BHR does.
const SUFFIXES: [(&str, i64); 6] = [
    ("y", 365 * 86_400),
    ("mo", 30 * 86_400),
    ("d", 86_400),
    ("h", 3_600),
    ("m", 60),
    ("s", 1),
];

/// The longest block, either way: 1000 years. Python's datetime (BHR) ends at year 9999
/// and answers 500 beyond it; catchd refuses such durations as invalid and caps
/// autoscaling here.
pub const MAX_SECONDS: i64 = 1000 * 365 * 86_400;

/// Parses a duration the way BHR does, returning seconds (0 means indefinite). A sign is
/// read, as BHR reads it, but the API refuses negative durations (BHR would make a block
/// that ended before it began):
///
/// * an integer with optional sign and surrounding whitespace: `300`, ` -5 `;
/// * an integer followed by one of `y` (365 days), `mo` (30 days), `d`, `h`, `m`, `s`:
///   `10s`, `7m`, `4h`, `3d`, `3mo`, `2y`;
/// * beyond BHR, humantime forms with several units or long names: `1h 30m`,
///   `2days 4h`, `90min`.
///
/// Returns `None` for anything else (`1.5h`, `5w`, `h`, `5ms`), which the API reports as
/// `{"duration":["Invalid duration"]}`.
pub fn parse(text: &str) -> Option<i64> {
    parse_unbounded(text.trim()).filter(|s| s.unsigned_abs() <= MAX_SECONDS.unsigned_abs())
}

fn parse_unbounded(t: &str) -> Option<i64> {
    if let Ok(v) = t.parse::<i64>() {
        return Some(v);
    }
    for (suffix, secs) in SUFFIXES {
        if let Some(num) = t.strip_suffix(suffix) {
            // Python's int() rules: digits with an optional sign, nothing else.
            let num = num.trim();
            if !num.is_empty()
                && num
                    .strip_prefix(['+', '-'])
                    .unwrap_or(num)
                    .bytes()
                    .all(|b| b.is_ascii_digit())
            {
                return num.parse::<i64>().ok().and_then(|n| n.checked_mul(secs));
            }
            // `5ms` ends in `s` but is not an integer of seconds; BHR rejects it too.
            return humantime_secs(t);
        }
    }
    humantime_secs(t)
}

/// Whole seconds of a humantime duration with more than one part or long unit names;
/// fractions, sub-second units and weeks are refused, to match BHR's vocabulary.
fn humantime_secs(t: &str) -> Option<i64> {
    if t.is_empty()
        || t.contains(['w', '.'])
        || t.contains("ms")
        || t.contains("us")
        || t.contains("ns")
    {
        return None;
    }
    let d = humantime::parse_duration(t).ok()?;
    if d.subsec_nanos() != 0 {
        return None;
    }
    i64::try_from(d.as_secs()).ok()
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn durations_beyond_a_thousand_years_are_refused() {
        assert_eq!(parse("1000y"), Some(super::MAX_SECONDS));
        for text in [
            "1001y",
            "-1001y",
            "99999999999999",
            "9223372036854775807s",
            "200000mo",
        ] {
            assert_eq!(parse(text), None, "{text}");
        }
    }

    #[test]
    fn bhr_examples() {
        for (text, secs) in [
            ("10", 10),
            ("10s", 10),
            ("7m", 420),
            ("4h", 14_400),
            ("3d", 259_200),
            ("3mo", 7_776_000),
            ("2y", 63_072_000),
            ("0", 0),
            (" 300 ", 300),
            ("-5", -5),
            ("+5", 5),
        ] {
            assert_eq!(parse(text), Some(secs), "{text}");
        }
    }

    #[test]
    fn bhr_rejects() {
        for text in ["1.5h", "5w", "h", "5ms", "", "abc", "1 h x"] {
            assert_eq!(parse(text), None, "{text}");
        }
    }

    #[test]
    fn humantime_forms() {
        assert_eq!(parse("1h 30m"), Some(5400));
        assert_eq!(parse("2days 4h"), Some(187_200));
        assert_eq!(parse("90min"), Some(5400));
    }
}
