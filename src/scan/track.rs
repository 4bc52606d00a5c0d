//! Per-address failure counting: when does an address cross a jail's threshold?
//!
//! Three models:
//! * [`Mode::Window`]: an exact sliding window, `maxretry` failures within `findtime`
//!   (the failure times kept, at most `maxretry` of them);
//! * [`Mode::Fail2ban`]: fail2ban's ticket, whose count is rescaled as a rate once the
//!   first failure falls out of `findtime` (`FailTicket.adjustTime`), so its results match
//!   fail2ban's exactly, including its approximations;
//! * [`Mode::BlockHosts`]: BlockHosts' count, blocked when it is *greater* than
//!   `threshold`, forgotten `age` after the last failure.
//!
//! State is bounded: at most `max_addresses` addresses are tracked. Past that, the one
//! whose last failure is oldest is evicted (and counted), so an attack from millions of
//! addresses costs a fixed amount of memory. Addresses whose failures have all aged out
//! are dropped as time moves on.

use std::collections::{HashMap, VecDeque};

use crate::addr::Addr;
use crate::time::{Interval, Time};

/// A threshold model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `maxretry` failures within `findtime`, exactly.
    Window {
        /// Failures that block.
        maxretry: u32,
        /// The window.
        findtime: Interval,
    },
    /// fail2ban's rate-rescaled ticket.
    Fail2ban {
        /// Failures that block.
        maxretry: u32,
        /// The window.
        findtime: Interval,
    },
    /// Blocked when the count exceeds `threshold`; forgotten `age` after the last failure.
    BlockHosts {
        /// Blocked above this count.
        threshold: u32,
        /// Forget this long after the last failure.
        age: Interval,
    },
}

impl Mode {
    /// How long a failure matters.
    fn horizon(self) -> Interval {
        match self {
            Mode::Window { findtime, .. } | Mode::Fail2ban { findtime, .. } => findtime,
            Mode::BlockHosts { age, .. } => age,
        }
    }
}

/// The most failures a window keeps.
pub const MAX_RETRY: u32 = 10_000;

#[derive(Clone, Debug, Default)]
struct Track {
    first: Time,
    last: Time,
    count: u32,
    /// Window mode: failure times, oldest first.
    times: VecDeque<Time>,
    last_pid: Option<u32>,
}

/// An address that crossed the threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Crossed {
    /// Failures counted.
    pub count: u32,
    /// The first of them.
    pub first: Time,
    /// The last.
    pub last: Time,
}

/// Failure counts for one jail.
#[derive(Debug)]
pub struct Tracker {
    mode: Mode,
    max: usize,
    map: HashMap<Addr, Track, foldhash::fast::RandomState>,
    /// (address, its last failure then), oldest first; entries are stale when the address
    /// failed again since (checked when they reach the front).
    order: VecDeque<(Addr, Time)>,
    evictions: u64,
}

impl Tracker {
    /// A tracker for `mode` keeping at most `max_addresses` addresses.
    pub fn new(mode: Mode, max_addresses: usize) -> Tracker {
        Tracker {
            mode,
            max: max_addresses.max(1),
            map: HashMap::default(),
            order: VecDeque::new(),
            evictions: 0,
        }
    }

    /// Addresses evicted for lack of room.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Addresses tracked.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }

    /// Drops what has aged out by `t`, and makes room for one more.
    fn housekeeping(&mut self, t: Time, adding: bool) {
        let horizon = self.mode.horizon();
        while let Some(&(a, at)) = self.order.front() {
            let live = self.map.get(&a).is_some_and(|tr| tr.last == at);
            if !live {
                self.order.pop_front();
                continue;
            }
            let full = adding && self.map.len() >= self.max;
            if full || at < t - horizon {
                self.order.pop_front();
                self.map.remove(&a);
                if full && at >= t - horizon {
                    self.evictions += 1;
                }
                continue;
            }
            break;
        }
        if self.order.len() > 2 * self.map.len() + 1024 {
            let map = &self.map;
            self.order
                .retain(|(a, at)| map.get(a).is_some_and(|tr| tr.last == *at));
        }
    }

    /// Forgets an address (it was blocked).
    pub fn forget(&mut self, a: &Addr) {
        self.map.remove(a);
    }

    /// Counts a failure of `a` at `t` (with the process id, when the rule names one:
    /// the same id twice in a row counts once). Returns the counts if `a` crossed the
    /// threshold; its state is then cleared.
    pub fn fail(&mut self, a: Addr, t: Time, pid: Option<u32>) -> Option<Crossed> {
        let adding = !self.map.contains_key(&a);
        self.housekeeping(t, adding);
        let mode = self.mode;
        let tr = self.map.entry(a).or_default();
        if pid.is_some() && tr.last_pid == pid && tr.count > 0 {
            return None;
        }
        tr.last_pid = pid;
        let fresh = tr.count == 0;
        let crossed = match mode {
            Mode::Window { maxretry, findtime } => {
                // Keep the times sorted (merged logs can be slightly out of order).
                let pos = tr.times.partition_point(|x| *x <= t);
                tr.times.insert(pos, t);
                let newest = *tr.times.back().expect("just inserted");
                while tr.times.front().is_some_and(|x| *x < newest - findtime) {
                    tr.times.pop_front();
                }
                while tr.times.len() > maxretry.clamp(1, MAX_RETRY) as usize {
                    tr.times.pop_front();
                }
                tr.count = tr.times.len() as u32;
                tr.first = *tr.times.front().expect("not empty");
                tr.last = newest;
                tr.count >= maxretry
            }
            Mode::Fail2ban { maxretry, findtime } => {
                if fresh || tr.last < t - findtime {
                    tr.count = 0;
                    tr.first = t;
                } else if tr.first < t - findtime {
                    let span = (t - tr.first).as_micros() as f64;
                    let scaled = f64::from(tr.count) / span * findtime.as_micros() as f64;
                    tr.count = scaled.round() as u32;
                    tr.first = t - findtime;
                }
                tr.count += 1;
                tr.last = tr.last.max(t);
                tr.count >= maxretry
            }
            Mode::BlockHosts { threshold, age } => {
                if fresh || tr.last < t - age {
                    tr.count = 0;
                    tr.first = t;
                }
                tr.count = tr.count.saturating_add(1);
                tr.last = tr.last.max(t);
                tr.count > threshold
            }
        };
        let out = Crossed {
            count: tr.count,
            first: tr.first,
            last: tr.last,
        };
        let last = tr.last;
        if crossed {
            self.map.remove(&a);
            return Some(out);
        }
        self.order.push_back((a, last));
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(n: u32) -> Addr {
        Addr::from_v4(n.to_be_bytes())
    }

    fn s(secs: i64) -> Time {
        Time::from_micros(secs * 1_000_000)
    }

    /// Feeds failure times (seconds) for one address; returns the index that crossed.
    fn run(mode: Mode, times: &[i64]) -> Option<(usize, Crossed)> {
        let mut t = Tracker::new(mode, 100);
        times
            .iter()
            .enumerate()
            .find_map(|(i, x)| t.fail(a(1), s(*x), None).map(|c| (i, c)))
    }

    #[test]
    fn exact_window_table() {
        let w = Mode::Window {
            maxretry: 5,
            findtime: Interval::from_secs(600),
        };
        for (times, want) in [
            (&[0, 1, 2, 3, 4][..], Some(4)),
            (&[0, 165, 330, 495, 660][..], None), // only 4 in any 600 s
            (&[0, 150, 300, 450, 600][..], Some(4)), // exactly 600 s apart: inclusive
            (&[0, 200, 400, 600, 800, 1000, 1200][..], None),
            (&[0, 700, 701, 702, 703, 704][..], Some(5)),
            (&[4, 3, 2, 1, 0][..], Some(4)), // out of order
        ] {
            assert_eq!(run(w, times).map(|(i, _)| i), want, "{times:?}");
        }
        let (_, c) = run(w, &[0, 700, 701, 702, 703, 704]).unwrap();
        assert_eq!(
            c,
            Crossed {
                count: 5,
                first: s(700),
                last: s(704)
            }
        );
    }

    #[test]
    fn fail2ban_ticket_matches_fail2ban() {
        // peers.md §2.2, measured against fail2ban 1.0.2's FailManager.
        let f = Mode::Fail2ban {
            maxretry: 5,
            findtime: Interval::from_secs(600),
        };
        let (i, c) = run(f, &[0, 165, 330, 495, 660]).unwrap();
        assert_eq!((i, c.count, c.first), (4, 5, s(60)));
        let every = |gap: i64| (0..50).map(|k| k * gap).collect::<Vec<_>>();
        assert_eq!(run(f, &every(200)), None, "plateaus at 4");
        assert_eq!(run(f, &every(300)), None, "plateaus at 3");
        assert_eq!(run(f, &every(100)).map(|(i, _)| i), Some(4));
        // A failure after findtime of silence starts over.
        assert_eq!(
            run(f, &[0, 1, 2, 3, 700, 701, 702, 703]).map(|(i, _)| i),
            None
        );
    }

    #[test]
    fn blockhosts_count_and_age() {
        let b = Mode::BlockHosts {
            threshold: 7,
            age: Interval::from_secs(12 * 3600),
        };
        // Strictly greater than 7: the 8th failure.
        assert_eq!(run(b, &[0, 1, 2, 3, 4, 5, 6, 7]).map(|(i, _)| i), Some(7));
        assert_eq!(run(b, &[0, 1, 2, 3, 4, 5, 6]), None);
        // Failures keep it alive however far apart, as long as each is within 12 h of
        // the previous one.
        let spaced: Vec<i64> = (0..8).map(|k| k * 11 * 3600).collect();
        assert_eq!(run(b, &spaced).map(|(i, _)| i), Some(7));
        let gap: Vec<i64> = (0..8).map(|k| k * 13 * 3600).collect();
        assert_eq!(run(b, &gap), None);
    }

    #[test]
    fn same_pid_counts_once() {
        let w = Mode::Window {
            maxretry: 3,
            findtime: Interval::from_secs(600),
        };
        let mut t = Tracker::new(w, 10);
        assert_eq!(t.fail(a(1), s(0), Some(7)), None);
        assert_eq!(t.fail(a(1), s(1), Some(7)), None);
        assert_eq!(t.fail(a(1), s(2), Some(7)), None);
        assert_eq!(t.fail(a(1), s(3), Some(8)), None);
        assert!(t.fail(a(1), s(4), Some(9)).is_some());
    }

    #[test]
    fn memory_is_bounded_and_evictions_counted() {
        let w = Mode::Window {
            maxretry: 3,
            findtime: Interval::from_secs(600),
        };
        let mut t = Tracker::new(w, 1000);
        for i in 0..100_000u32 {
            t.fail(a(i), s(i64::from(i) / 1000), None);
            assert!(t.len() <= 1000);
        }
        assert_eq!(t.evictions(), 99_000);
        // The most recent ones are still there and can cross.
        t.fail(a(99_999), s(100), None);
        assert!(t.fail(a(99_999), s(100), None).is_some());
        // Aged-out addresses go without counting as evictions.
        let mut t = Tracker::new(w, 1000);
        for i in 0..5000u32 {
            t.fail(a(i), s(i64::from(i) * 1000), None);
        }
        assert_eq!(t.evictions(), 0);
        assert!(t.len() <= 2);
    }
}
