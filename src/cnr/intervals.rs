//! The escalation ladder: `NetControl::catch_release_intervals`.

use std::fmt;
use std::str::FromStr;

use crate::time::Interval;

/// Zeek's default: `vector(10min, 1hr, 24hrs, 7days)`.
pub const DEFAULT_INTERVALS: [Interval; 4] = [
    Interval::from_secs(600),
    Interval::from_secs(3600),
    Interval::from_secs(86_400),
    Interval::from_secs(604_800),
];

/// The most steps a ladder may have. The step index is stored in seven bits of each
/// watched address's slot (see `cnr::watch`); no real policy comes near this.
pub const MAX_STEPS: usize = 127;

/// A validated escalation ladder: at least two strictly positive intervals.
///
/// Step `k` blocks for [`block`](Intervals::block)`(k)` = `I[k]` and watches until
/// [`watch`](Intervals::watch)`(k)` = `I[k+1]` after the start of the (re)block, or `I[k]`
/// at the last step, exactly as Zeek's `get_watch_interval`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Intervals(Vec<Interval>);

/// Why an interval list was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntervalsError {
    /// Fewer than two entries. Zeek indexes `I[1]` on every first drop, so a one-entry
    /// ladder fails there at run time; catchd refuses it up front.
    #[error(
        "catch-and-release needs at least two intervals (block, then watch), got {0}: e.g. 10m,1h,24h,7d"
    )]
    TooFew(usize),
    /// More entries than a slot can index.
    #[error("catch-and-release supports at most {MAX_STEPS} intervals, got {0}")]
    TooMany(usize),
    /// An entry that does not parse.
    #[error("interval {index} ({text:?}): {source}")]
    Parse {
        /// One-based position in the list.
        index: usize,
        /// The offending text.
        text: String,
        /// What was wrong with it.
        source: crate::time::ParseError,
    },
    /// A zero or negative entry: a zero-length drop would never expire.
    #[error("interval {index} ({}) must be greater than zero", humantime::format_duration(std::time::Duration::from_micros(value.as_micros().max(0) as u64)))]
    NotPositive {
        /// One-based position in the list.
        index: usize,
        /// The value in seconds.
        value: Interval,
    },
}

impl Intervals {
    /// Validates a ladder.
    ///
    /// # Errors
    /// [`IntervalsError`] when it has fewer than two or more than [`MAX_STEPS`] entries, or
    /// an entry is not positive.
    pub fn new(steps: Vec<Interval>) -> Result<Intervals, IntervalsError> {
        if steps.len() < 2 {
            return Err(IntervalsError::TooFew(steps.len()));
        }
        if steps.len() > MAX_STEPS {
            return Err(IntervalsError::TooMany(steps.len()));
        }
        if let Some((i, v)) = steps.iter().enumerate().find(|(_, v)| v.as_micros() <= 0) {
            return Err(IntervalsError::NotPositive {
                index: i + 1,
                value: *v,
            });
        }
        Ok(Intervals(steps))
    }

    /// Number of steps.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a ladder has at least two steps. Present for clippy's sake.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The index of the last step, where escalation saturates.
    pub fn last(&self) -> usize {
        self.0.len() - 1
    }

    /// Block length at step `k` (`I[k]`).
    ///
    /// # Panics
    /// If `k` is out of range; steps come from the engine, which keeps them in range.
    pub fn block(&self, k: usize) -> Interval {
        self.0[k]
    }

    /// Watch length at step `k`, measured from the start of the block: `I[k+1]`, or `I[k]`
    /// at the last step.
    pub fn watch(&self, k: usize) -> Interval {
        self.0.get(k + 1).copied().unwrap_or(self.0[k])
    }

    /// The next step after a sighting: `min(k + 1, last)`.
    pub fn escalate(&self, k: usize) -> usize {
        (k + 1).min(self.last())
    }

    /// The steps, in order.
    pub fn as_slice(&self) -> &[Interval] {
        &self.0
    }
}

impl Default for Intervals {
    fn default() -> Intervals {
        Intervals(DEFAULT_INTERVALS.to_vec())
    }
}

impl FromStr for Intervals {
    type Err = IntervalsError;

    /// Parses a comma-separated list such as `10m,1h,24h,7d` or `1,2,2` (seconds).
    fn from_str(s: &str) -> Result<Intervals, IntervalsError> {
        let mut steps = Vec::new();
        for (i, part) in s.split(',').enumerate() {
            let v = part.parse().map_err(|source| IntervalsError::Parse {
                index: i + 1,
                text: part.trim().to_string(),
                source,
            })?;
            steps.push(v);
        }
        Intervals::new(steps)
    }
}

impl fmt::Display for Intervals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let d = std::time::Duration::from_micros(v.as_micros() as u64);
            write!(f, "{}", humantime::format_duration(d))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ladder_matches_zeek() {
        let i = Intervals::default();
        assert_eq!(i.block(0), Interval::from_secs(600));
        assert_eq!(i.watch(0), Interval::from_secs(3600));
        assert_eq!(i.watch(3), Interval::from_secs(604_800));
        assert_eq!(i.escalate(3), 3);
        assert_eq!(i.to_string(), "10m,1h,1day,7days");
    }

    #[test]
    fn parses_and_validates() {
        let i: Intervals = "1s, 2s,2".parse().unwrap();
        assert_eq!(
            i.as_slice(),
            &[
                Interval::from_secs(1),
                Interval::from_secs(2),
                Interval::from_secs(2)
            ]
        );
        assert_eq!("10m".parse::<Intervals>(), Err(IntervalsError::TooFew(1)));
        assert!(matches!(
            "10m,0s".parse::<Intervals>(),
            Err(IntervalsError::NotPositive { index: 2, .. })
        ));
        let e = "10m,soon".parse::<Intervals>().unwrap_err();
        assert!(e.to_string().starts_with("interval 2 (\"soon\")"), "{e}");
    }
}
