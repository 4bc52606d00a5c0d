//! Memory per watched address at 1M watched (run with `cargo bench --bench memory`).
//!
//! A counting global allocator measures live heap bytes exactly. One million addresses
//! (the same mix as the other benchmarks: two thirds IPv4, a third IPv6, no locations) are
//! dropped through the engine with the built-in backend, then:
//!
//! 1. while all are blocked: the watch table plus NetControl's rules and expiry timers;
//! 2. after the blocks expired (network time moved past the first interval), all still
//!    watched: what catch-and-release keeps for the watch window.
//!
//! The watch table's own share is also shown from its capacity (`WatchTable::heap_bytes`).
//!
//! Then the BHR registry with one million host blocks, as the daemon makes them for
//! catch-and-release drops (one per address, same source and reason): what each block
//! costs in memory on top of the watch state.

mod common;

use common::synth;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use catchd::cnr::Config;
use catchd::time::{Interval, Time};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: delegates to the system allocator and only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: the caller's layout, passed on unchanged.
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let now = LIVE.fetch_add(l.size(), Ordering::Relaxed) + l.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` came from `System` with layout `l` (every allocation here does).
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`; `new` is the caller's size.
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            LIVE.fetch_sub(l.size(), Ordering::Relaxed);
            let now = LIVE.fetch_add(new, Ordering::Relaxed) + new;
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        q
    }
}

#[global_allocator]
static A: Counting = Counting;

const N: u64 = 1_000_000;

fn main() {
    // `cargo bench` passes --bench; nothing to parse.
    let base = LIVE.load(Ordering::Relaxed);
    let mut e = common::engine_watching(N, Config::default());
    let t0 = Time::from_timeval(synth::T0 as i64, 0);
    let blocked = LIVE.load(Ordering::Relaxed) - base;
    let table = e.watched().heap_bytes();

    // Past the 10-minute blocks, inside the 1-hour watch: rules expire, addresses stay.
    // Timers fire 300 at a time and outputs are taken as they come, as the daemon and
    // replay do.
    let later = t0 + Interval::from_secs(601);
    loop {
        let more = e.advance(later);
        e.drain_all();
        while e.poll_output().is_some() {}
        if !more {
            break;
        }
    }
    assert_eq!(e.rule_count(), 0, "all blocks expired");
    assert_eq!(e.watched().len() as u64, N, "all still watched");
    let watched = LIVE.load(Ordering::Relaxed) - base;

    let per = |b: usize| b as f64 / N as f64;
    println!("addresses watched                 {N}");
    println!(
        "heap while all are blocked        {:.1} MB = {:.1} bytes/address (watch table, rules, timers)",
        blocked as f64 / 1e6,
        per(blocked)
    );
    println!(
        "heap once blocks expired          {:.1} MB = {:.1} bytes/address (watch table only)",
        watched as f64 / 1e6,
        per(watched)
    );
    println!(
        "watch table alone (capacity)      {:.1} MB = {:.1} bytes/address (map buckets + filter + locations)",
        table as f64 / 1e6,
        per(table)
    );
    println!(
        "peak heap                         {:.1} MB",
        (PEAK.load(Ordering::Relaxed) - base) as f64 / 1e6
    );
    drop(e);

    use catchd::bhr::model::Settings;
    use catchd::bhr::registry::{NewBlock, Registry};
    let base = LIVE.load(Ordering::Relaxed);
    let mut reg = Registry::new(Settings::default());
    let mut changes = Vec::new();
    for i in 0..N {
        let cidr = ipnet::IpNet::from(synth::watched(i));
        let req = NewBlock {
            cidr,
            cidr_text: String::new(),
            who: 1,
            source: "catch-and-release".into(),
            why: "bench".into(),
            seconds: 600,
            until: None,
            skip_whitelist: false,
            extend: false,
            autoscale: false,
        };
        reg.add_block(&req, t0, &mut changes);
        changes.clear();
    }
    let blocks = LIVE.load(Ordering::Relaxed) - base;
    println!(
        "registry with {N} host blocks   {:.1} MB = {:.1} bytes/block (rows and indexes)",
        blocks as f64 / 1e6,
        per(blocks)
    );
}
