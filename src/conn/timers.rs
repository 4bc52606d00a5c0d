//! The connection table's timers, in deadline order.
//!
//! Almost every connection timer is set to "now plus a fixed delay" (`tcp_SYN_timeout`,
//! `tcp_session_timer`, `tcp_attempt_delay`, an inactivity timeout …), and network time
//! does not go back, so the timers of one kind come due in the order they were set. Each
//! kind gets a *lane*: a FIFO that is in deadline order by construction, where setting and
//! firing a timer is a push and a pop at the ends of a ring buffer. A timer that would
//! break a lane's order (an inactivity timer reset to the connection's last packet, a
//! trace whose time steps back) goes to a binary heap instead. The earliest timer is the
//! least of the lanes' fronts and the heap's top.
//!
//! Timers of one deadline fire in the order they were set, as Zeek's timer manager fires
//! them: every timer carries a sequence number, and lanes and heap are ordered by
//! `(deadline, sequence)`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use crate::time::Time;

/// How many lanes a queue has.
pub(super) const LANES: usize = 8;

/// A timer's place in the heap: its deadline, its order among timers of one deadline,
/// and where its body is kept. Kept small (24 bytes) because a heap operation moves a
/// dozen entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct HeapRef {
    at: Time,
    seq: u64,
    slot: u32,
}

/// Timers with bodies of type `T`, fired in `(deadline, order set)` order.
pub(super) struct TimerQueue<T> {
    lanes: [VecDeque<(Time, u64, T)>; LANES],
    heap: BinaryHeap<Reverse<HeapRef>>,
    /// The bodies of the timers in `heap`, by slot; `free` lists unused slots.
    bodies: Vec<T>,
    free: Vec<u32>,
    seq: u64,
    /// The earliest deadline, `Time::MAX` when empty.
    next: Time,
}

impl<T: Copy> TimerQueue<T> {
    pub(super) fn new() -> TimerQueue<T> {
        TimerQueue {
            lanes: std::array::from_fn(|_| VecDeque::new()),
            heap: BinaryHeap::new(),
            bodies: Vec::new(),
            free: Vec::new(),
            seq: 0,
            next: Time::MAX,
        }
    }

    /// The earliest deadline, `Time::MAX` when there is no timer.
    #[inline]
    pub(super) fn next_deadline(&self) -> Time {
        self.next
    }

    /// Timers pending.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lanes.iter().map(VecDeque::len).sum::<usize>() + self.heap.len()
    }

    /// Sets a timer at `at` in `lane` (any lane is correct; timers set in deadline order
    /// on one lane are cheapest).
    pub(super) fn push(&mut self, at: Time, lane: usize, body: T) {
        self.seq += 1;
        self.next = self.next.min(at);
        let q = &mut self.lanes[lane % LANES];
        if q.back().is_none_or(|b| b.0 <= at) {
            q.push_back((at, self.seq, body));
            return;
        }
        let slot = match self.free.pop() {
            Some(slot) => {
                self.bodies[slot as usize] = body;
                slot
            }
            None => {
                // One slot per pending heap timer: at most a few per tracked connection,
                // so far below u32::MAX.
                let slot = u32::try_from(self.bodies.len()).unwrap_or(u32::MAX);
                self.bodies.push(body);
                slot
            }
        };
        self.heap.push(Reverse(HeapRef {
            at,
            seq: self.seq,
            slot,
        }));
    }

    /// Where the earliest timer is: `Some(lane)`, or `None` for the heap (or nothing).
    #[inline]
    fn earliest(&self) -> (Time, u64, Option<usize>) {
        let mut best = self
            .heap
            .peek()
            .map_or((Time::MAX, u64::MAX, None), |r| (r.0.at, r.0.seq, None));
        for (i, q) in self.lanes.iter().enumerate() {
            if let Some(&(at, seq, _)) = q.front()
                && (at, seq) < (best.0, best.1)
            {
                best = (at, seq, Some(i));
            }
        }
        best
    }

    /// Takes the earliest timer if it is due at `now`: its deadline and body.
    #[inline]
    pub(super) fn pop_due(&mut self, now: Time) -> Option<(Time, T)> {
        if self.next > now {
            return None;
        }
        let (at, _, lane) = self.earliest();
        if at > now {
            self.next = at;
            return None;
        }
        let out = match lane {
            Some(i) => self.lanes[i].pop_front().map(|(at, _, body)| (at, body)),
            None => self.heap.pop().map(|Reverse(r)| {
                self.free.push(r.slot);
                (r.at, self.bodies[r.slot as usize])
            }),
        };
        self.next = self.earliest().0;
        out
    }

    /// Gives back memory once most of it is unused (after a burst of connections).
    pub(super) fn trim(&mut self) {
        for q in &mut self.lanes {
            if q.capacity() > 64 && q.len() * 4 < q.capacity() {
                q.shrink_to(q.len() * 2);
            }
        }
        if self.heap.capacity() > 64 && self.heap.len() * 4 < self.heap.capacity() {
            self.heap.shrink_to(self.heap.len() * 2);
        }
        if self.heap.is_empty() {
            self.bodies.clear();
            self.free.clear();
            if self.bodies.capacity() > 64 {
                self.bodies.shrink_to_fit();
                self.free.shrink_to_fit();
            }
        }
    }

    /// Drops every timer.
    pub(super) fn clear(&mut self) {
        for q in &mut self.lanes {
            q.clear();
        }
        self.heap.clear();
        self.bodies.clear();
        self.free.clear();
        self.next = Time::MAX;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(us: i64) -> Time {
        Time::from_micros(1_700_000_000_000_000 + us)
    }

    proptest! {
        /// Whatever the lanes and deadlines, timers come out as a single priority queue
        /// ordered by (deadline, order set) would give them, each once, and only when due.
        #[test]
        fn fires_in_deadline_then_set_order(
            ops in prop::collection::vec((0i64..50, 0usize..LANES, any::<bool>()), 1..300),
        ) {
            let mut q = TimerQueue::new();
            let mut model: Vec<(Time, u64)> = Vec::new();
            let mut now = t(0);
            let mut n = 0u64;
            let mut fired = Vec::new();
            let mut want = Vec::new();
            for (d, lane, advance) in ops {
                if advance {
                    now = now + crate::time::Interval::from_micros(d);
                    while let Some((at, id)) = q.pop_due(now) {
                        prop_assert!(at <= now);
                        fired.push((at, id));
                    }
                    model.sort();
                    let due: Vec<_> = model.iter().copied().filter(|(at, _)| *at <= now).collect();
                    model.retain(|(at, _)| *at > now);
                    want.extend(due);
                    prop_assert_eq!(&fired, &want);
                } else {
                    n += 1;
                    // Mostly "now + a delay per lane", sometimes earlier than the lane's tail.
                    let at = now + crate::time::Interval::from_micros(d * (lane as i64 + 1));
                    q.push(at, lane, n);
                    model.push((at, n));
                }
                prop_assert_eq!(q.len(), model.len());
                let next = model.iter().map(|(at, _)| *at).min().unwrap_or(Time::MAX);
                prop_assert!(q.next_deadline() <= next);
            }
        }
    }

    #[test]
    fn clear_empties() {
        let mut q = TimerQueue::new();
        q.push(t(5), 0, 1u8);
        q.push(t(3), 0, 2u8);
        q.clear();
        assert_eq!(q.len(), 0);
        assert_eq!(q.next_deadline(), Time::MAX);
        assert_eq!(q.pop_due(t(100)), None);
    }
}
