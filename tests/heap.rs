//! A replay's small allocations land in huge pages: once `hugepages::advise` is called, the
//! heap glibc grows is advised `MADV_HUGEPAGE` (see `catchd::hugepages`).
//!
//! A binary of its own, without the test harness: glibc serves the main thread from the
//! heap at the program break, which is what is followed, and the harness runs each test on
//! a thread of its own, which glibc serves from a separate arena.

use catchd::hugepages::{HugePageAlloc, advise};

#[global_allocator]
static ALLOC: HugePageAlloc = HugePageAlloc;

/// The `VmFlags` and `AnonHugePages` (KiB) of the mapping that holds `p`.
fn mapping_of(p: usize) -> (Vec<String>, u64) {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("/proc/self/smaps");
    let mut inside = false;
    let (mut flags, mut huge) = (None, 0);
    for l in smaps.lines() {
        let first = l.split_whitespace().next().unwrap_or("");
        if let Some((lo, hi)) = first.split_once('-')
            && let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
        {
            inside = (lo..hi).contains(&p);
            continue;
        }
        if !inside {
            continue;
        }
        if let Some(v) = l.strip_prefix("AnonHugePages:") {
            huge = v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
        } else if let Some(v) = l.strip_prefix("VmFlags:") {
            flags = Some(v.split_whitespace().map(str::to_owned).collect());
        }
    }
    (
        flags.unwrap_or_else(|| panic!("no mapping holds {p:#x}")),
        huge,
    )
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn main() {
    // As many rule-sized objects as 200,000 drops make, before and after the advice.
    let before: Vec<Box<[u64; 9]>> = (0..1000).map(|i| Box::new([i; 9])).collect();
    advise();
    let after: Vec<Box<[u64; 9]>> = (0..200_000).map(|i| Box::new([i; 9])).collect();
    let old = &*before[before.len() - 1] as *const _ as usize;
    let new = &*after[after.len() - 1] as *const _ as usize;
    let (old_flags, _) = mapping_of(old);
    let (new_flags, huge_kib) = mapping_of(new);
    assert!(
        !old_flags.iter().any(|f| f == "hg"),
        "heap from before the advice is advised: {old_flags:?}"
    );
    assert!(
        new_flags.iter().any(|f| f == "hg"),
        "small allocations after the advice are not in advised heap: {new_flags:?}"
    );
    assert!(after.iter().enumerate().all(|(i, b)| b[8] == i as u64));
    println!(
        "test small_allocations_after_advise_are_in_huge_page_advised_heap ... ok \
         ({huge_kib} KiB of that heap in huge pages)"
    );
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn main() {
    println!(
        "test small_allocations_after_advise_are_in_huge_page_advised_heap ... skipped (glibc only)"
    );
}
