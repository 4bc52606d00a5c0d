//! A small cache of addresses whose answer is known, for the packet path.
//!
//! A watched address that keeps sending is looked at on every connection it makes: is it
//! tracked (the connection table's question), is it blocked (catch-and-release's)? The
//! answers sit in large tables, a cache miss each, and while nothing is blocked or
//! released they do not change. [`HotAddrs`] remembers addresses whose answer was "yes",
//! each with the *generation* of the state it was learnt at; a lookup counts only while
//! the caller's generation is the same, so any change that could turn a "yes" into "no"
//! (an entry overwritten or removed, a rule removed) empties the cache at once without
//! touching it.

use crate::addr::Addr;

/// A direct-mapped set of addresses tagged with a generation.
pub(crate) struct HotAddrs {
    slots: Box<[(Addr, u64)]>,
    /// `64 - log2(slots)`: the hash's top bits pick the slot.
    shift: u32,
}

/// No generation is ever this, so a fresh slot never matches.
const EMPTY: u64 = u64::MAX;

impl HotAddrs {
    /// A cache of `2^log2` slots.
    pub(crate) fn new(log2: u32) -> HotAddrs {
        HotAddrs {
            slots: vec![(Addr::from_v6([0; 16]), EMPTY); 1 << log2].into_boxed_slice(),
            shift: 64 - log2,
        }
    }

    #[inline(always)]
    fn index(&self, a: &Addr) -> usize {
        let b = a.octets();
        let hi = u64::from_ne_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        let lo = u64::from_ne_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]);
        let h = (lo ^ hi.rotate_left(29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        h.checked_shr(self.shift).unwrap_or(0) as usize
    }

    /// Whether `a` was added at generation `generation`.
    #[inline]
    pub(crate) fn contains(&self, a: &Addr, generation: u64) -> bool {
        let (k, g) = &self.slots[self.index(a)];
        *g == generation && k == a
    }

    /// Adds `a` at `generation`, in place of whatever shared its slot.
    #[inline]
    pub(crate) fn insert(&mut self, a: Addr, generation: u64) {
        if generation == EMPTY {
            return;
        }
        let i = self.index(&a);
        self.slots[i] = (a, generation);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generation_change_forgets_everything() {
        let mut h = HotAddrs::new(4);
        let a = Addr::from_v4([192, 0, 2, 1]);
        let b = Addr::from_v4([192, 0, 2, 2]);
        assert!(!h.contains(&a, 0));
        h.insert(a, 7);
        assert!(h.contains(&a, 7));
        assert!(!h.contains(&a, 8));
        assert!(!h.contains(&b, 7));
        h.insert(a, EMPTY);
        assert!(h.contains(&a, 7));
    }

    #[test]
    fn colliding_addresses_replace_each_other() {
        let mut h = HotAddrs::new(0);
        let a = Addr::from_v4([192, 0, 2, 1]);
        let b = Addr::from_v6([0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        h.insert(a, 1);
        h.insert(b, 1);
        assert!(h.contains(&b, 1));
        assert!(!h.contains(&a, 1));
    }
}
