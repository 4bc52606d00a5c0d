//! Big tables in transparent huge pages: the binary's global allocator.
//!
//! catchd's large tables (the watch table's shards, NetControl's rules and entities, the
//! timer heap, the event queue, a replay's list of drops) are written and read at random.
//! In 4 KiB pages each first touch is a page fault and each lookup a likely TLB miss:
//! applying 100,000 drops takes about 14,000 faults, a quarter of the engine thread's time.
//! [`HugePageAlloc`] maps every allocation of at least [`HUGE_PAGE`] bytes itself, aligned
//! to 2 MiB, and once [`advise`] has been called it also advises them `MADV_HUGEPAGE`, so
//! that with transparent huge pages in `madvise` mode (Debian's default) the kernel backs
//! them with 2 MiB pages: one fault per 2 MiB and one TLB entry for what took 512.
//! Everything smaller goes to the system allocator unchanged, so small objects cost what
//! they did.
//!
//! The price is memory, as a touched huge page is resident as a whole: about 10 % more for
//! a replay's tables. `catchd replay`, a batch job whose tables live only as long as it
//! does, turns the advice on; the daemon leaves it off and keeps its resident set to what
//! it holds (its big tables are then ordinary pages, unless THP is set to `always`). With
//! THP set to `never` the advice is ignored.
//!
//! With glibc, [`advise`] also follows the main heap, where the small allocations go: glibc
//! grows it 32 MiB at a time from then on, and the first small allocation seen in new heap
//! advises that part `MADV_HUGEPAGE` too (what glibc's `glibc.malloc.hugetlb=1` tunable
//! does, which only the environment a process starts with can set).
//!
//! Growing a big allocation first tries to extend the mapping where it is; if the
//! neighbouring addresses are taken, the old pages are moved (not copied) into a new
//! aligned mapping. This module owns the `mmap` family of calls; nothing else in catchd
//! maps anonymous memory.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ffi::c_void;
use std::num::NonZeroUsize;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::mman::{self, MRemapFlags, MapFlags, MmapAdvise, ProtFlags};

/// The size of a transparent huge page on x86-64 and of the smallest allocation mapped
/// here.
pub const HUGE_PAGE: usize = 2 << 20;

/// The base page size the kernel guarantees for any mapping's address.
const PAGE: usize = 4096;

/// Whether new big mappings are advised `MADV_HUGEPAGE`.
static ADVISE: AtomicBool = AtomicBool::new(false);

/// From now on, advise the big allocations [`HugePageAlloc`] makes to be backed by huge
/// pages, and (with glibc) the main heap as it grows (see the module documentation). Those
/// made before stay as they are.
pub fn advise() {
    ADVISE.store(true, Ordering::Relaxed);
    heap::follow();
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod heap {
    //! Small allocations in huge pages, with glibc: what its `glibc.malloc.hugetlb=1` tunable
    //! does, which can only be set in the environment a process starts with.
    //!
    //! A replay makes one small allocation per rule (the `Arc<Rule>` that events and backends
    //! share): 100,000 drops grow glibc's main heap by 8 MB, 2,000 page faults that took a
    //! tenth of the time applying them. Once [`follow`] is called, glibc grows the heap
    //! [`STEP`] at a time, and the first small allocation that
    //! [`HugePageAlloc`](super::HugePageAlloc) sees land in new heap advises the new part
    //! `MADV_HUGEPAGE`, so that it is faulted in 2 MiB at a time.
    //!
    //! Only the main heap, which grows at the program break, is followed; other threads'
    //! arenas (mappings of their own, far away) are left alone. glibc is told to keep the
    //! heap's top instead of giving it back after each free (`M_TRIM_THRESHOLD`), so the heap
    //! only grows: a replay is a batch job, and its memory goes back when it ends.

    use std::ffi::c_void;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use nix::libc;
    use nix::sys::mman::{self, MmapAdvise};

    use super::{HUGE_PAGE, nonnull};

    /// How much glibc adds to the heap each time it grows it (`M_TOP_PAD`).
    const STEP: usize = 32 << 20;

    /// Addresses this far above [`ADVISED`] may be new heap; beyond are other mappings.
    const WINDOW: usize = 1 << 30;

    /// The program break as last seen: the main heap below it has been advised (0 until
    /// [`follow`]).
    static ADVISED: AtomicUsize = AtomicUsize::new(0);

    unsafe extern "C" {
        fn sbrk(increment: isize) -> *mut c_void;
    }

    fn program_break() -> usize {
        // SAFETY: `sbrk(0)` only reads the current break.
        unsafe { sbrk(0) as usize }
    }

    pub(super) fn follow() {
        // SAFETY: `mallopt` only sets malloc's parameters; both values are in range.
        unsafe {
            libc::mallopt(libc::M_TOP_PAD, STEP as libc::c_int);
            libc::mallopt(libc::M_TRIM_THRESHOLD, (2 * STEP) as libc::c_int);
        }
        ADVISED.store(program_break(), Ordering::Relaxed);
    }

    /// Called with each small allocation's address: advises the heap grown since the
    /// last call when `p` lies in it.
    #[inline(always)]
    pub(super) fn note(p: *mut u8) {
        let seen = ADVISED.load(Ordering::Relaxed);
        if seen != 0 && (p as usize).wrapping_sub(seen) < WINDOW {
            advise_growth(p as usize, seen);
        }
    }

    #[cold]
    #[inline(never)]
    fn advise_growth(p: usize, seen: usize) {
        let brk = program_break();
        if p >= brk {
            return;
        }
        let (from, to) = (
            seen.next_multiple_of(HUGE_PAGE),
            brk / HUGE_PAGE * HUGE_PAGE,
        );
        if from < to {
            // SAFETY: `[seen, brk)` is heap glibc has grown since `seen` was stored, mapped
            // and private; the advice changes no byte in it. An error (a race with a trim)
            // only leaves the pages as they were.
            let _ = unsafe { mman::madvise(nonnull(from), to - from, MmapAdvise::MADV_HUGEPAGE) };
        }
        ADVISED.fetch_max(brk, Ordering::Relaxed);
    }
}

/// Other C libraries: small allocations stay as the system allocator makes them.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod heap {
    pub(super) fn follow() {}

    #[inline(always)]
    pub(super) fn note(_p: *mut u8) {}
}

/// The global allocator of the `catchd` binary: big allocations in huge pages, the rest
/// from [`System`]. See the module documentation.
#[derive(Debug, Default, Clone, Copy)]
pub struct HugePageAlloc;

/// Whether this allocator maps `layout` itself. Alignments above a page are left to the
/// system allocator, because a mapping moved by `mremap` is only page-aligned.
fn is_big(layout: &Layout) -> bool {
    layout.size() >= HUGE_PAGE && layout.align() <= PAGE
}

/// The length of the mapping that holds `size` bytes.
fn mapped_len(size: usize) -> Option<usize> {
    size.checked_next_multiple_of(HUGE_PAGE)
}

/// Maps `len` bytes (a multiple of [`HUGE_PAGE`]) at a 2 MiB boundary and advises huge
/// pages if [`advise`] was called. Null when the kernel refuses.
unsafe fn map_aligned(len: usize) -> *mut u8 {
    let Some(over) = len
        .checked_add(HUGE_PAGE - PAGE)
        .and_then(NonZeroUsize::new)
    else {
        return ptr::null_mut();
    };
    // SAFETY: a fresh anonymous private mapping aliases nothing.
    let Ok(base) = (unsafe {
        mman::mmap_anonymous(
            None,
            over,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_PRIVATE,
        )
    }) else {
        return ptr::null_mut();
    };
    let addr = base.as_ptr() as usize;
    let start = addr.next_multiple_of(HUGE_PAGE);
    let head = start - addr;
    let tail = over.get() - head - len;
    // SAFETY: both ranges lie inside the mapping just made, and nothing points into them.
    // A failed trim only leaves address space mapped that no one uses.
    unsafe {
        if head > 0 {
            let _ = mman::munmap(base, head);
        }
        if tail > 0 {
            let _ = mman::munmap(nonnull(start + len), tail);
        }
        // Advice only: with THP off this changes nothing, and an error is not a failure.
        if ADVISE.load(Ordering::Relaxed) {
            let _ = mman::madvise(nonnull(start), len, MmapAdvise::MADV_HUGEPAGE);
        }
    }
    start as *mut u8
}

/// Unmaps the big allocation of `size` bytes at `p`.
unsafe fn unmap(p: *mut u8, size: usize) {
    if let Some(len) = mapped_len(size) {
        // SAFETY: `p` is the start of a mapping of `len` bytes made by this module.
        let _ = unsafe { mman::munmap(nonnull(p as usize), len) };
    }
}

fn nonnull(addr: usize) -> NonNull<c_void> {
    NonNull::new(addr as *mut c_void).expect("mappings are never at address 0")
}

/// Resizes the big allocation at `p` from `old` to `new` bytes (both big). Null on
/// failure, in which case the old allocation is untouched.
unsafe fn remap(p: *mut u8, old: usize, new: usize) -> *mut u8 {
    let (Some(old_len), Some(new_len)) = (mapped_len(old), mapped_len(new)) else {
        return ptr::null_mut();
    };
    if new_len == old_len {
        return p;
    }
    if new_len < old_len {
        // SAFETY: the tail past `new_len` belongs to this allocation and is being given up.
        let _ = unsafe { mman::munmap(nonnull(p as usize + new_len), old_len - new_len) };
        return p;
    }
    let old_ptr = nonnull(p as usize);
    // SAFETY: growing in place maps fresh pages after ours only if the range is free.
    if unsafe { mman::mremap(old_ptr, old_len, new_len, MRemapFlags::empty(), None) }.is_ok() {
        return p;
    }
    // SAFETY: `dest` is a fresh mapping of `new_len` bytes; the old pages are moved over its
    // first `old_len` bytes, which unmaps the old range as one step.
    unsafe {
        let dest = map_aligned(new_len);
        if dest.is_null() {
            return ptr::null_mut();
        }
        let moved = mman::mremap(
            old_ptr,
            old_len,
            old_len,
            MRemapFlags::MREMAP_MAYMOVE | MRemapFlags::MREMAP_FIXED,
            Some(nonnull(dest as usize)),
        );
        if moved.is_err() {
            ptr::copy_nonoverlapping(p, dest, old);
            unmap(p, old);
        }
        dest
    }
}

// SAFETY: every allocation is either the system allocator's or a private mapping of at
// least `layout.size()` bytes at an address aligned to a page (and so to `layout.align()`,
// which `is_big` limits to a page). Which of the two owns a pointer follows from its layout
// alone, which every call passes back.
unsafe impl GlobalAlloc for HugePageAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_big(&layout) {
            match mapped_len(layout.size()) {
                // SAFETY: see `map_aligned`.
                Some(len) => unsafe { map_aligned(len) },
                None => ptr::null_mut(),
            }
        } else {
            // SAFETY: forwarded as received.
            let p = unsafe { System.alloc(layout) };
            heap::note(p);
            p
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_big(&layout) {
            // Fresh anonymous pages are zero.
            // SAFETY: as in `alloc`.
            unsafe { self.alloc(layout) }
        } else {
            // SAFETY: forwarded as received.
            let p = unsafe { System.alloc_zeroed(layout) };
            heap::note(p);
            p
        }
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        if is_big(&layout) {
            // SAFETY: a big layout was allocated by `map_aligned` or `remap`.
            unsafe { unmap(p, layout.size()) }
        } else {
            // SAFETY: a small layout came from the system allocator.
            unsafe { System.dealloc(p, layout) }
        }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return ptr::null_mut();
        };
        // SAFETY: each branch hands `p` back to the allocator that made it, and copies at
        // most the bytes both allocations hold.
        unsafe {
            match (is_big(&layout), is_big(&new_layout)) {
                (false, false) => {
                    let q = System.realloc(p, layout, new_size);
                    heap::note(q);
                    q
                }
                (true, true) => remap(p, layout.size(), new_size),
                (old_big, _) => {
                    let q = self.alloc(new_layout);
                    if !q.is_null() {
                        ptr::copy_nonoverlapping(p, q, layout.size().min(new_size));
                        if old_big {
                            unmap(p, layout.size());
                        } else {
                            System.dealloc(p, layout);
                        }
                    }
                    q
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Fills `len` bytes at `p` with a pattern derived from `seed`.
    ///
    /// # Safety
    /// `p` points to `len` writable bytes.
    unsafe fn fill(p: *mut u8, len: usize, seed: u8) {
        // SAFETY: the caller's promise.
        let bytes = unsafe { std::slice::from_raw_parts_mut(p, len) };
        for i in (0..len).step_by(509) {
            bytes[i] = seed.wrapping_add(i as u8);
        }
        if let Some(last) = bytes.last_mut() {
            *last = seed ^ 0x5a;
        }
    }

    /// Whether the first `len` bytes at `p` hold the pattern of `fill(_, full, seed)`.
    ///
    /// # Safety
    /// `p` points to `len` readable bytes.
    unsafe fn holds(p: *const u8, len: usize, full: usize, seed: u8) -> bool {
        // SAFETY: the caller's promise.
        let bytes = unsafe { std::slice::from_raw_parts(p, len) };
        (0..len)
            .step_by(509)
            .filter(|&i| i != full - 1)
            .all(|i| bytes[i] == seed.wrapping_add(i as u8))
            && (len < full || bytes[full - 1] == seed ^ 0x5a)
    }

    /// The `VmFlags` of the mapping that holds `p`, from `/proc/self/smaps` (the kernel may
    /// have merged it with a neighbour).
    fn vm_flags(p: *const u8) -> String {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let holds_p = |l: &&str| {
            let range = l.split_whitespace().next().unwrap_or("");
            let Some((lo, hi)) = range.split_once('-') else {
                return false;
            };
            match (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16)) {
                (Ok(lo), Ok(hi)) => (lo..hi).contains(&(p as usize)),
                _ => false,
            }
        };
        let mut lines = smaps.lines().skip_while(|l| !holds_p(l));
        lines
            .find_map(|l| l.strip_prefix("VmFlags:"))
            .unwrap_or_else(|| panic!("no mapping holds {p:?}"))
            .to_string()
    }

    #[test]
    fn big_allocations_are_advised_huge_pages_once_asked() {
        let a = HugePageAlloc;
        let layout = Layout::from_size_align(3 * HUGE_PAGE, 16).unwrap();
        // SAFETY: the pointers are only compared and freed with their layout.
        unsafe {
            let before = a.alloc(layout);
            advise();
            let after = a.alloc(layout);
            assert!(!vm_flags(before).split_whitespace().any(|f| f == "hg"));
            assert!(vm_flags(after).split_whitespace().any(|f| f == "hg"));
            a.dealloc(before, layout);
            a.dealloc(after, layout);
        }
    }

    #[test]
    fn big_allocations_are_mapped_at_huge_page_boundaries_and_zeroed() {
        let a = HugePageAlloc;
        for size in [HUGE_PAGE, HUGE_PAGE + 1, 5 * HUGE_PAGE + 12345] {
            let layout = Layout::from_size_align(size, 16).unwrap();
            // SAFETY: every pointer is used within the layout it was allocated with.
            unsafe {
                let p = a.alloc_zeroed(layout);
                assert!(!p.is_null());
                assert_eq!(p as usize % HUGE_PAGE, 0, "{size}");
                assert!((0..size).step_by(4096).all(|i| *p.add(i) == 0));
                assert_eq!(*p.add(size - 1), 0);
                fill(p, size, 7);
                assert!(holds(p, size, size, 7));
                a.dealloc(p, layout);
            }
        }
    }

    #[test]
    fn small_and_over_aligned_allocations_go_to_the_system_allocator() {
        let a = HugePageAlloc;
        assert!(!is_big(&Layout::from_size_align(HUGE_PAGE - 1, 8).unwrap()));
        assert!(!is_big(&Layout::from_size_align(HUGE_PAGE, 8192).unwrap()));
        let layout = Layout::from_size_align(3 * HUGE_PAGE, 8192).unwrap();
        // SAFETY: the pointer is used within its layout.
        unsafe {
            let p = a.alloc(layout);
            assert!(!p.is_null());
            assert_eq!(p as usize % 8192, 0);
            fill(p, layout.size(), 3);
            assert!(holds(p, layout.size(), layout.size(), 3));
            a.dealloc(p, layout);
        }
    }

    #[test]
    fn an_impossible_size_is_refused_with_null() {
        let a = HugePageAlloc;
        let layout = Layout::from_size_align(isize::MAX as usize - 4095, 4096).unwrap();
        // SAFETY: only the allocation that succeeded is used, within its layout.
        unsafe {
            assert!(a.alloc(layout).is_null());
            let small = Layout::from_size_align(HUGE_PAGE, 16).unwrap();
            let p = a.alloc(small);
            fill(p, HUGE_PAGE, 1);
            assert!(a.realloc(p, small, isize::MAX as usize - 4095).is_null());
            // The old allocation is still intact after a refused growth.
            assert!(holds(p, HUGE_PAGE, HUGE_PAGE, 1));
            a.dealloc(p, small);
        }
    }

    #[test]
    fn growth_moves_pages_when_the_neighbourhood_is_taken() {
        let a = HugePageAlloc;
        let l1 = Layout::from_size_align(HUGE_PAGE, 8).unwrap();
        // SAFETY: pointers are used within their layouts; the blocking page is mapped at an
        // address nothing uses (`MAP_FIXED_NOREPLACE` refuses a taken one).
        unsafe {
            let p = a.alloc(l1);
            fill(p, HUGE_PAGE, 9);
            // A mapping right after `p` blocks growth in place, whatever the kernel chose.
            let blocker = mman::mmap_anonymous(
                Some(NonZeroUsize::new(p as usize + HUGE_PAGE).unwrap()),
                NonZeroUsize::new(PAGE).unwrap(),
                ProtFlags::PROT_READ,
                MapFlags::MAP_PRIVATE | MapFlags::MAP_FIXED_NOREPLACE,
            );
            let q = a.realloc(p, l1, 3 * HUGE_PAGE);
            assert!(!q.is_null());
            assert_eq!(q as usize % HUGE_PAGE, 0);
            assert!(holds(q, HUGE_PAGE, HUGE_PAGE, 9));
            if blocker.is_ok() {
                assert_ne!(p, q, "growth in place past a taken page");
            }
            fill(q, 3 * HUGE_PAGE, 4);
            a.dealloc(q, Layout::from_size_align(3 * HUGE_PAGE, 8).unwrap());
            if let Ok(b) = blocker {
                let _ = mman::munmap(b, PAGE);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any sequence of reallocations across the threshold keeps the bytes both sizes
        /// hold, and keeps big allocations page-aligned.
        #[test]
        fn realloc_keeps_contents_across_sizes(
            sizes in proptest::collection::vec(
                prop_oneof![1usize..4096, HUGE_PAGE - 64..HUGE_PAGE + 64, 1usize..(9 * HUGE_PAGE)],
                1..8,
            ),
            align in prop_oneof![Just(1usize), Just(8), Just(16), Just(4096)],
        ) {
            let a = HugePageAlloc;
            let mut layout = Layout::from_size_align(sizes[0], align).unwrap();
            // SAFETY: each pointer is used within the layout it currently has.
            unsafe {
                let mut p = a.alloc(layout);
                prop_assert!(!p.is_null());
                fill(p, layout.size(), 11);
                for (n, &size) in sizes[1..].iter().enumerate() {
                    let q = a.realloc(p, layout, size);
                    prop_assert!(!q.is_null());
                    prop_assert_eq!(q as usize % align, 0);
                    prop_assert!(holds(q, layout.size().min(size), layout.size(), 11 + n as u8));
                    layout = Layout::from_size_align(size, align).unwrap();
                    fill(q, size, 12 + n as u8);
                    p = q;
                }
                a.dealloc(p, layout);
            }
        }
    }
}
