//! Cache hints: telling the CPU which memory the next steps will touch, so that its loads
//! overlap with work instead of stalling it.
//!
//! Applying a batch of drops (a replay's, at its first packet) writes one new entry into
//! each of two big hash tables per address: the watch table and NetControl's `rule_entities`.
//! Their slots are spread at random over megabytes, so each write waits for a cache miss.
//! The addresses of the whole batch are known in advance, though, so the caller asks for
//! the slots of an address a few drops ahead ([`insert_slot`]) and by the time that drop is
//! made, they are in cache.
//!
//! A hint changes nothing that any code can observe: a prefetch never faults, whatever the
//! address, and a wrong guess only costs the load. On targets other than x86-64 the hints
//! do nothing.

use hashbrown::raw::RawTable;

/// Starts loading the cache line that holds `p` into every cache level. `p` need not point
/// to anything.
#[inline(always)]
pub(crate) fn line<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: a prefetch only loads into the cache; it never faults and has no effect
        // a program can observe, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Starts loading what inserting an element with `hash` into `table` will touch: the
/// control bytes of its home bucket, and the three cache lines from the home bucket on,
/// which hold the bucket the element lands in for most inserts (home, or the first free
/// one after it). Filling a table reserved for 100,000 entries, they held it for three
/// inserts in four with the watch table's 44-byte entries and seven in eight with
/// `rule_entities`' 24-byte ones.
///
/// hashbrown 0.14 probes for the element of hash `h` from bucket `h & (buckets - 1)`; its
/// control bytes start at [`RawTable::data_end`], and bucket `i` is the element just below
/// `data_end - i`, so the buckets after home lie below it in memory.
#[inline(always)]
pub(crate) fn insert_slot<T>(table: &RawTable<T>, hash: u64) {
    for p in insert_lines(table, hash) {
        line(p);
    }
}

/// The addresses [`insert_slot`] loads: the home bucket's control byte, then the last byte
/// of the home bucket and the two lines below it.
#[inline(always)]
fn insert_lines<T>(table: &RawTable<T>, hash: u64) -> [*const u8; 4] {
    let home = (hash as usize) & table.buckets().wrapping_sub(1);
    let end = table.data_end().as_ptr().cast_const();
    let top = end.wrapping_sub(home).cast::<u8>().wrapping_sub(1);
    [
        end.cast::<u8>().wrapping_add(home),
        top,
        top.wrapping_sub(64),
        top.wrapping_sub(128),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(i: u64) -> u64 {
        i.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29)
    }

    /// The lines [`insert_slot`] loads hold the element hashbrown then inserts, and its
    /// control byte: in a table far from full, almost every element lands in its home
    /// bucket. If a hashbrown update changed its layout, the hints would silently miss;
    /// this fails instead.
    #[test]
    fn the_lines_loaded_are_where_hashbrown_inserts() {
        type Elem = (u64, [u8; 20]);
        let line_of = |p: usize| p / 64;
        let mut table: RawTable<Elem> = RawTable::with_capacity(1000);
        let mut covered = 0;
        for i in 0..100 {
            let h = hash(i);
            let lines = insert_lines(&table, h).map(|p| line_of(p as usize));
            let b = table.insert(h, (i, [0; 20]), |e| hash(e.0));
            let first = b.as_ptr() as usize;
            let last = first + size_of::<Elem>() - 1;
            // SAFETY: the bucket was just filled and the table is not changed meanwhile.
            let ctrl = table.data_end().as_ptr() as usize + unsafe { table.bucket_index(&b) };
            if lines[1..].contains(&line_of(first))
                && lines[1..].contains(&line_of(last))
                && lines[0] == line_of(ctrl)
            {
                covered += 1;
            }
        }
        assert!(
            covered >= 90,
            "{covered} of 100 inserts in the lines loaded"
        );
    }

    /// Hints on an empty table (whose control bytes are a shared static) and on wild
    /// addresses are harmless.
    #[test]
    fn hints_never_fault() {
        let empty: RawTable<u64> = RawTable::new();
        for h in [0, 1, u64::MAX, hash(7)] {
            insert_slot(&empty, h);
        }
        line(std::ptr::null::<u8>());
        line(usize::MAX as *const u8);
    }
}
