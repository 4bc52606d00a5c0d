//! The watch table: Zeek's `blocks: table[addr] of BlockInfo`, shared for reading.
//!
//! [`WatchTable`] is a `DashMap` from [`Addr`] to a packed 28-byte [`Slot`]. Only the engine
//! writes to it; capture threads ask [`WatchTable::contains`] for every candidate packet and
//! the API reads [`WatchTable::get`] concurrently. That is what the sharded map buys.
//!
//! # Why the slot is packed
//!
//! hashbrown keeps its load factor between 7/16 and 7/8, so at 1M entries a table has 2^21
//! buckets and each entry costs about 2.1 × (key + value + 1) bytes. With a 16-byte key the
//! value must stay at or under 28 bytes for the 100 bytes-per-address budget. A slot
//! therefore stores:
//!
//! * `start`: when the current (re)block was requested. `block_until` and `watch_until` are
//!   derived from it and the step (`start + I[k]`, `start + W(k)`), which is exactly how Zeek
//!   computes them;
//! * `expire_ref`: Zeek's table-expiry reference time (see `Engine::sweep`);
//! * the rule id, an interned location, and one word holding `num_reblocked` (24 bits,
//!   saturating), the step (7 bits) and the "adopted" flag (no `block_until`, from ADDED).
//!
//! Times are split into two `u32`s so the slot has alignment 4 and no padding.
//!
//! # Why there is a filter in front of the map
//!
//! Almost every packet comes from an address nobody watches, and a `DashMap` read costs
//! two atomic read-modify-writes on a shard lock. [`Filter`] answers "certainly not
//! watched" with one plain load from a bitmap indexed by a hash of the address (four bits
//! in one 64-bit word: a register-blocked Bloom filter), so only
//! addresses that may be watched reach the map. Bits are set on insert and left stale on
//! removal; once removals pile up, the writer recomputes the bitmap and stores it word by
//! word. A word then goes from a superset of the live bits straight to exactly the live
//! bits, so a concurrent reader never misses a watched address.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use dashmap::DashMap;
use ipnet::IpNet;

use crate::addr::Addr;
use crate::time::Time;

use super::intervals::Intervals;
use super::netcontrol::RuleId;

/// Zeek's `NetControl::BlockInfo`: everything catch-and-release knows about an address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockInfo {
    /// Absolute end of the current block. Unset for an adopted (ADDED) block.
    pub block_until: Option<Time>,
    /// Absolute end of watching. [`Time::ZERO`] means "unknown to catch-and-release".
    pub watch_until: Time,
    /// How many times the address was re-blocked after being seen again.
    pub num_reblocked: u32,
    /// Index into the intervals (`k`).
    pub current_interval: usize,
    /// The rule of the current block, if any.
    pub current_block_id: Option<RuleId>,
    /// Where the first drop came from.
    pub location: Option<Arc<str>>,
}

/// What [`WatchTable::top`] found.
#[derive(Clone, Debug, Default)]
pub struct Top {
    /// Addresses accepted by the filter.
    pub matched: usize,
    /// Of those, blocked now.
    pub blocked: usize,
    /// The most recent ones, with their state.
    pub rows: Vec<(Addr, BlockInfo)>,
}

impl BlockInfo {
    /// What Zeek's `get_catch_release_info` returns for an unknown address.
    pub fn unknown() -> BlockInfo {
        BlockInfo {
            block_until: None,
            watch_until: Time::ZERO,
            num_reblocked: 0,
            current_interval: 0,
            current_block_id: None,
            location: None,
        }
    }

    /// Whether catch-and-release knows the address (`watch_until != 0`).
    pub fn is_known(&self) -> bool {
        self.watch_until != Time::ZERO
    }
}

/// Everything the engine keeps about one watched address, unpacked: what a store persists
/// so that catch-and-release survives a restart ([`Engine::watch_state`],
/// [`Engine::restore_watch`]).
///
/// [`Engine::watch_state`]: super::Engine::watch_state
/// [`Engine::restore_watch`]: super::Engine::restore_watch
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchState {
    /// When the current (re)block was requested; `block_until` and `watch_until` derive
    /// from it and the step.
    pub start: Time,
    /// Zeek's table-expiry reference time.
    pub expire_ref: Time,
    /// `current_block_id`.
    pub rule: Option<RuleId>,
    /// Where the first drop came from.
    pub location: Option<Arc<str>>,
    /// `num_reblocked`.
    pub reblocked: u32,
    /// `current_interval`.
    pub step: u8,
    /// Adopted from a block made outside catch-and-release (ADDED): no `block_until`.
    pub adopted: bool,
}

const REBLOCKED_BITS: u32 = 24;
const REBLOCKED_MAX: u32 = (1 << REBLOCKED_BITS) - 1;
const STEP_SHIFT: u32 = REBLOCKED_BITS;
const STEP_MASK: u32 = 0x7f;
const ADOPTED_BIT: u32 = 1 << 31;

/// The packed per-address record stored in the map. 28 bytes, alignment 4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    start: [u32; 2],
    expire_ref: [u32; 2],
    rule: u32,
    location: u32,
    meta: u32,
}

/// The engine's unpacked working copy of a [`Slot`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    /// When the current (re)block was requested.
    pub(crate) start: Time,
    /// Zeek's table-expiry reference time.
    pub(crate) expire_ref: Time,
    /// `current_block_id`.
    pub(crate) rule: Option<RuleId>,
    /// Interned location (0 = none).
    pub(crate) location: u32,
    /// `num_reblocked`, saturating at 2^24 - 1.
    pub(crate) reblocked: u32,
    /// `current_interval`.
    pub(crate) step: u8,
    /// Adopted from an outside block (ADDED): no `block_until`.
    pub(crate) adopted: bool,
}

fn split(t: Time) -> [u32; 2] {
    let v = t.as_micros() as u64;
    [v as u32, (v >> 32) as u32]
}

fn join(p: [u32; 2]) -> Time {
    Time::from_micros(((u64::from(p[1]) << 32) | u64::from(p[0])) as i64)
}

impl Entry {
    fn pack(&self) -> Slot {
        let mut meta = self.reblocked.min(REBLOCKED_MAX);
        meta |= (u32::from(self.step) & STEP_MASK) << STEP_SHIFT;
        if self.adopted {
            meta |= ADOPTED_BIT;
        }
        Slot {
            start: split(self.start),
            expire_ref: split(self.expire_ref),
            rule: self.rule.map_or(0, RuleId::get),
            location: self.location,
            meta,
        }
    }

    fn unpack(s: &Slot) -> Entry {
        Entry {
            start: join(s.start),
            expire_ref: join(s.expire_ref),
            rule: RuleId::new(s.rule),
            location: s.location,
            reblocked: s.meta & REBLOCKED_MAX,
            step: ((s.meta >> STEP_SHIFT) & STEP_MASK) as u8,
            adopted: s.meta & ADOPTED_BIT != 0,
        }
    }

    /// `block_until`, derived: `start + I[k]`, unset when adopted.
    pub(crate) fn block_until(&self, iv: &Intervals) -> Option<Time> {
        (!self.adopted).then(|| self.start + iv.block(usize::from(self.step)))
    }

    /// `watch_until`, derived: `start + W(k)`.
    pub(crate) fn watch_until(&self, iv: &Intervals) -> Time {
        self.start + iv.watch(usize::from(self.step))
    }

    /// Adds one re-block, saturating where the slot runs out of bits.
    pub(crate) fn count_reblock(&mut self) {
        self.reblocked = (self.reblocked + 1).min(REBLOCKED_MAX);
    }

    /// What the expiry sweep at `now` does with this entry (Zeek's `&create_expire`
    /// function): kept while its reference is ahead (an entry made before network time
    /// existed keeps reference 0 and never expires, as in Zeek); its reference moved to
    /// `watch_until` while that is ahead; else removed.
    pub(crate) fn sweep(&mut self, now: Time, iv: &Intervals) -> Sweep {
        if self.expire_ref == Time::ZERO || self.expire_ref >= now {
            return Sweep::Keep;
        }
        let wu = self.watch_until(iv);
        if wu > now {
            self.expire_ref = wu;
            return Sweep::Update;
        }
        Sweep::Remove
    }
}

/// What the sweep does with one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sweep {
    /// Leave it as it is.
    Keep,
    /// Keep it, with the changes made to the working copy.
    Update,
    /// Remove it.
    Remove,
}

/// Interned location strings with reference counts. Locations repeat a lot in practice
/// (script names, notice types), and a `u32` id keeps them out of the slot.
#[derive(Default, Debug)]
struct Locations {
    ids: HashMap<Arc<str>, u32>,
    /// Index `id - 1`: the string and how many slots use it.
    strings: Vec<Option<(Arc<str>, u32)>>,
    free: Vec<u32>,
}

impl Locations {
    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.ids.get(s) {
            if let Some((_, refs)) = self.strings[id as usize - 1].as_mut() {
                *refs += 1;
            }
            return id;
        }
        let arc: Arc<str> = Arc::from(s);
        let id = match self.free.pop() {
            Some(id) => {
                self.strings[id as usize - 1] = Some((arc.clone(), 1));
                id
            }
            None => {
                self.strings.push(Some((arc.clone(), 1)));
                self.strings.len() as u32
            }
        };
        self.ids.insert(arc, id);
        id
    }

    fn release(&mut self, id: u32) {
        if id == 0 {
            return;
        }
        let cell = &mut self.strings[id as usize - 1];
        if let Some((s, refs)) = cell.as_mut() {
            *refs -= 1;
            if *refs == 0 {
                self.ids.remove(s);
                *cell = None;
                self.free.push(id);
            }
        }
    }

    fn get(&self, id: u32) -> Option<Arc<str>> {
        if id == 0 {
            return None;
        }
        self.strings
            .get(id as usize - 1)
            .and_then(|c| c.as_ref().map(|(s, _)| s.clone()))
    }
}

/// The bitmap pre-filter in front of the map (see the module docs).
#[derive(Debug)]
struct Filter {
    words: Box<[AtomicU64]>,
    /// `64 - log2(bits)`: the hash's top bits pick the bit.
    shift: u32,
    seed: [u64; 2],
    /// Removals since the bitmap was last recomputed (stale bits).
    stale: AtomicUsize,
}

/// The smallest filter: 2^20 bits (128 KiB).
const MIN_FILTER_BITS: u32 = 20;
/// Bits per address of the capacity the filter is sized for. With four bits set per
/// address in one 64-bit word, 8 bits per watched address let about 2.5 % of unwatched
/// lookups through to the map (two bits would let 5 % through, one 12 %), and a million
/// addresses need 1 MiB, which stays in a core's L2 cache.
const FILTER_BITS_PER_ADDR: usize = 8;

#[inline(always)]
fn folded_mul(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

impl Filter {
    fn new(capacity: usize) -> Filter {
        let want = capacity
            .saturating_mul(FILTER_BITS_PER_ADDR)
            .max(1 << MIN_FILTER_BITS);
        let log2 = want.next_power_of_two().trailing_zeros().min(40);
        let words = (1usize << log2) / 64;
        let rs = foldhash::fast::RandomState::default();
        use std::hash::BuildHasher;
        let seed = [rs.hash_one(0x5eed_u64) | 1, rs.hash_one(0xfeed_u64) | 1];
        Filter {
            words: (0..words).map(|_| AtomicU64::new(0)).collect(),
            shift: 64 - log2,
            seed,
            stale: AtomicUsize::new(0),
        }
    }

    /// The word an address hashes to, and the four bits it sets in that word (a
    /// register-blocked Bloom filter: four hash functions, one memory access).
    #[inline(always)]
    fn slot(&self, a: &Addr) -> (usize, u64) {
        let b = a.octets();
        let hi = u64::from_ne_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        let lo = u64::from_ne_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]);
        let h =
            folded_mul(lo ^ self.seed[0], hi ^ self.seed[1]).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let word = (h >> (self.shift + 6)) as usize;
        let mask = (1u64 << (h & 63))
            | (1u64 << ((h >> 6) & 63))
            | (1u64 << ((h >> 12) & 63))
            | (1u64 << ((h >> 18) & 63));
        (word, mask)
    }

    #[inline(always)]
    fn may_contain(&self, a: &Addr) -> bool {
        let (w, m) = self.slot(a);
        self.words[w].load(Ordering::Acquire) & m == m
    }

    fn insert(&self, a: &Addr) {
        let (w, m) = self.slot(a);
        self.words[w].fetch_or(m, Ordering::Release);
    }

    /// Recomputes the bitmap from the live addresses.
    fn rebuild<'a>(&self, live: impl Iterator<Item = &'a Addr>) {
        let mut fresh = vec![0u64; self.words.len()];
        for a in live {
            let (w, m) = self.slot(a);
            fresh[w] |= m;
        }
        for (word, v) in self.words.iter().zip(fresh) {
            word.store(v, Ordering::Release);
        }
        self.stale.store(0, Ordering::Relaxed);
    }

    fn bytes(&self) -> usize {
        self.words.len() * 8
    }
}

type Map = DashMap<Addr, Slot, foldhash::fast::RandomState>;

/// The set of addresses catch-and-release currently tracks, readable from any thread,
/// and the networks it tracks (`[cnr.networks]`).
#[derive(Debug)]
pub struct WatchTable {
    map: Map,
    filter: Filter,
    locations: RwLock<Locations>,
    intervals: Intervals,
    nets: Nets,
    /// No address's expiry reference is earlier than this: see [`SweepFloor`].
    floor: SweepFloor,
    /// Overwrites and removals of entries (addresses' and networks') so far, new entries
    /// not counted: a copy of an entry taken when this read `c` is still the table's entry
    /// while it reads `c`. See [`WatchTable::changes`].
    changes: AtomicU64,
}

/// A lower bound of the expiry references (other than zero) in one map, in microseconds:
/// until network time passes it, the expiry sweep would keep every entry as it is, so it
/// is skipped. Lowered by every write, set exactly by every sweep. Only the engine writes
/// the table, so a sweep and a write never race.
#[derive(Debug)]
struct SweepFloor(AtomicI64);

impl SweepFloor {
    fn new() -> SweepFloor {
        SweepFloor(AtomicI64::new(i64::MAX))
    }

    fn note(&self, e: &Entry) {
        if e.expire_ref != Time::ZERO {
            self.0
                .fetch_min(e.expire_ref.as_micros(), Ordering::Relaxed);
        }
    }

    /// Whether a sweep at `now` may find anything to do.
    fn due(&self, now: Time) -> bool {
        now.as_micros() > self.0.load(Ordering::Relaxed)
    }

    fn set(&self, micros: i64) {
        self.0.store(micros, Ordering::Relaxed);
    }
}

/// How networks are formed from addresses: one prefix length per family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetShape {
    /// IPv4 prefix length.
    pub len4: u8,
    /// IPv6 prefix length.
    pub len6: u8,
}

impl Default for NetShape {
    fn default() -> NetShape {
        NetShape { len4: 24, len6: 64 }
    }
}

/// The tracked networks: a map keyed by network with its own pre-filter, keyed by an
/// address masked to the network's length, so that a packet asks "is its network
/// tracked?" with one bitmap load once any is, and with one relaxed load of `live` while
/// none is.
#[derive(Debug)]
struct Nets {
    map: DashMap<IpNet, Slot, foldhash::fast::RandomState>,
    filter: Filter,
    /// In front of `filter`: see [`Coarse`].
    coarse: Coarse,
    shape: NetShape,
    /// Tracked networks; 0 keeps the packet path at a single load.
    live: AtomicUsize,
    intervals: Intervals,
    floor: SweepFloor,
}

/// Which wide prefixes (an IPv4 /16, an IPv6 /48, or the network length where that is
/// shorter) hold a tracked network: 2^16 bits (8 KiB), indexed by the IPv4 /16 itself
/// and by a hash of the IPv6 /48. Tracked networks sit in few of them, so most packets'
/// addresses are turned away here, with one load from a bitmap small enough to stay in
/// the nearest caches (and, for IPv6, one multiplication), before the networks' filter
/// and its 128-bit hash are asked.
#[derive(Debug)]
struct Coarse {
    words: Box<[AtomicU64]>,
    /// The prefix lengths, within the 16-byte (v4-mapped) address: `96 + min(16, len4)`
    /// and `min(48, len6)`.
    keep4: u32,
    keep6: u32,
}

impl Coarse {
    const BITS: usize = 1 << 16;

    fn new(shape: NetShape) -> Coarse {
        Coarse {
            words: (0..Coarse::BITS / 64).map(|_| AtomicU64::new(0)).collect(),
            keep4: 96 + u32::from(shape.len4.min(16)),
            keep6: u32::from(shape.len6.min(48)),
        }
    }

    #[inline(always)]
    fn bit(&self, a: &Addr) -> usize {
        let v = u128::from_be_bytes(a.octets());
        if a.is_v4() {
            // The /16 itself (shorter networks keep fewer of its bits).
            let top = (v >> 16) as u32 & 0xffff;
            let drop = 112 - self.keep4.min(112);
            ((top >> drop) << drop) as usize
        } else {
            let keep = self.keep6;
            let p = if keep == 0 {
                0
            } else {
                (v >> (128 - keep)) as u64
            };
            (p.wrapping_add(u64::from(keep))
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                >> 48) as usize
        }
    }

    #[inline(always)]
    fn may_contain(&self, a: &Addr) -> bool {
        let b = self.bit(a);
        self.words[b / 64].load(Ordering::Acquire) & (1 << (b % 64)) != 0
    }

    fn insert(&self, a: &Addr) {
        let b = self.bit(a);
        self.words[b / 64].fetch_or(1 << (b % 64), Ordering::Release);
    }

    fn rebuild<'a>(&self, live: impl Iterator<Item = &'a Addr>) {
        let mut fresh = vec![0u64; self.words.len()];
        for a in live {
            let b = self.bit(a);
            fresh[b / 64] |= 1 << (b % 64);
        }
        for (word, v) in self.words.iter().zip(fresh) {
            word.store(v, Ordering::Release);
        }
    }
}

impl Nets {
    #[inline]
    fn may_contain(&self, a: &Addr) -> bool {
        self.live.load(Ordering::Relaxed) != 0
            && self.coarse.may_contain(a)
            && self
                .filter
                .may_contain(&a.masked(self.shape.len4, self.shape.len6))
    }

    fn key(&self, a: &Addr) -> IpNet {
        a.network(self.shape.len4, self.shape.len6)
    }
}

impl WatchTable {
    /// A table whose pre-filter is sized for `capacity` addresses (more still work, with
    /// more lookups reaching the map).
    pub(crate) fn new(intervals: Intervals, capacity: usize) -> WatchTable {
        WatchTable::with_nets(intervals.clone(), capacity, NetShape::default(), intervals)
    }

    /// A table that also tracks networks of `shape`, on the ladder `net_intervals`.
    pub(crate) fn with_nets(
        intervals: Intervals,
        capacity: usize,
        shape: NetShape,
        net_intervals: Intervals,
    ) -> WatchTable {
        WatchTable {
            map: DashMap::with_hasher(foldhash::fast::RandomState::default()),
            filter: Filter::new(capacity),
            locations: RwLock::new(Locations::default()),
            intervals,
            nets: Nets {
                map: DashMap::with_hasher(foldhash::fast::RandomState::default()),
                // Networks are far fewer than addresses: the smallest filter serves
                // 100 000 of them.
                filter: Filter::new(capacity / 8),
                coarse: Coarse::new(shape),
                shape,
                live: AtomicUsize::new(0),
                intervals: net_intervals,
                floor: SweepFloor::new(),
            },
            floor: SweepFloor::new(),
            changes: AtomicU64::new(0),
        }
    }

    /// Makes room for `n` more addresses, spread over the shards.
    pub(crate) fn reserve(&self, n: usize) {
        let shards = self.map.shards();
        let each = n.div_ceil(shards.len().max(1));
        for s in shards {
            let hasher = self.map.hasher();
            s.write()
                .reserve(each, |(k, _)| std::hash::BuildHasher::hash_one(hasher, k));
        }
    }

    /// Whether `a` is tracked (blocked or watched), itself or through its network. This
    /// is the per-packet check: for an unwatched address usually one load from the filter's
    /// bitmap (and one more while networks are tracked); otherwise one probe of one map
    /// shard under its read lock.
    #[inline(always)]
    pub fn contains(&self, a: &Addr) -> bool {
        (self.filter.may_contain(a) && self.map.contains_key(a))
            || (self.nets.live.load(Ordering::Relaxed) != 0 && self.contains_net_of_live(a))
    }

    /// Whether the address itself is tracked (not counting its network).
    #[inline]
    pub fn contains_address(&self, a: &Addr) -> bool {
        self.filter.may_contain(a) && self.map.contains_key(a)
    }

    /// Whether the network `a` is in is tracked.
    #[inline]
    pub fn contains_net_of(&self, a: &Addr) -> bool {
        self.nets.may_contain(a) && self.nets.map.contains_key(&self.nets.key(a))
    }

    /// [`Self::contains_net_of`] once networks are known to be tracked: kept out of line
    /// so that the address check inlines into the packet loop as small as it was.
    #[inline(never)]
    fn contains_net_of_live(&self, a: &Addr) -> bool {
        self.nets.may_contain(a) && self.nets.map.contains_key(&self.nets.key(a))
    }

    /// The per-packet pre-check alone: `false` means certainly not tracked, itself or
    /// through its network.
    #[inline(always)]
    pub fn may_contain(&self, a: &Addr) -> bool {
        self.filter.may_contain(a) || self.nets.may_contain(a)
    }

    /// The tracked network `a` is in, if any.
    pub fn net_of(&self, a: &Addr) -> Option<IpNet> {
        let n = self.nets.key(a);
        (self.nets.may_contain(a) && self.nets.map.contains_key(&n)).then_some(n)
    }

    /// The network `a` is in, tracked or not.
    pub fn network_of(&self, a: &Addr) -> IpNet {
        self.nets.key(a)
    }

    /// How networks are formed from addresses.
    pub fn net_shape(&self) -> NetShape {
        self.nets.shape
    }

    /// The network's [`BlockInfo`] (on the networks' ladder), if tracked.
    pub fn get_net(&self, n: &IpNet) -> Option<BlockInfo> {
        let e = self.net_entry(n)?;
        Some(self.net_block_info(&e))
    }

    /// How many networks are tracked.
    pub fn net_len(&self) -> usize {
        self.nets.live.load(Ordering::Relaxed)
    }

    /// Every tracked network with its [`BlockInfo`], sorted.
    pub fn net_snapshot(&self) -> Vec<(IpNet, BlockInfo)> {
        let mut v: Vec<(IpNet, Entry)> = self
            .nets
            .map
            .iter()
            .map(|r| (*r.key(), Entry::unpack(r.value())))
            .collect();
        v.sort_unstable_by_key(|(n, _)| *n);
        v.into_iter()
            .map(|(n, e)| (n, self.net_block_info(&e)))
            .collect()
    }

    pub(crate) fn net_entry(&self, n: &IpNet) -> Option<Entry> {
        self.nets.map.get(n).map(|r| Entry::unpack(r.value()))
    }

    /// Inserts or overwrites a network's entry.
    pub(crate) fn put_net(&self, n: IpNet, e: &Entry) {
        let first = match n.addr() {
            std::net::IpAddr::V4(v4) => Addr::from(v4),
            std::net::IpAddr::V6(v6) => Addr::from(v6),
        };
        self.nets.coarse.insert(&first);
        self.nets.filter.insert(&first);
        self.nets.floor.note(e);
        if self.nets.map.insert(n, e.pack()).is_none() {
            self.nets.live.fetch_add(1, Ordering::Relaxed);
        } else {
            self.changes.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Removes a network's entry and releases its location.
    pub(crate) fn remove_net(&self, n: &IpNet) -> Option<Entry> {
        let (_, slot) = self.nets.map.remove(n)?;
        self.changes.fetch_add(1, Ordering::Relaxed);
        self.nets.live.fetch_sub(1, Ordering::Relaxed);
        let e = Entry::unpack(&slot);
        self.release_location(e.location);
        self.note_net_removed(1);
        Some(e)
    }

    fn note_net_removed(&self, n: usize) {
        let stale = self.nets.filter.stale.fetch_add(n, Ordering::Relaxed) + n;
        if stale >= self.nets.map.len().max(4096) {
            let live: Vec<Addr> = self
                .nets
                .map
                .iter()
                .map(|r| Addr::from(r.key().addr()))
                .collect();
            self.nets.filter.rebuild(live.iter());
            self.nets.coarse.rebuild(live.iter());
        }
    }

    pub(crate) fn net_block_info(&self, e: &Entry) -> BlockInfo {
        BlockInfo {
            block_until: e.block_until(&self.nets.intervals),
            watch_until: e.watch_until(&self.nets.intervals),
            num_reblocked: e.reblocked,
            current_interval: usize::from(e.step),
            current_block_id: e.rule,
            location: self.location(e.location),
        }
    }

    /// [`WatchTable::sweep`] over the networks.
    pub(crate) fn sweep_nets(&self, now: Time, f: impl FnMut(IpNet, &mut Entry) -> Sweep) {
        let removed = self.sweep_in(&self.nets.map, &self.nets.floor, now, f);
        if removed > 0 {
            self.nets.live.fetch_sub(removed, Ordering::Relaxed);
            self.note_net_removed(removed);
        }
    }

    /// Heap bytes held by the table: map buckets (an estimate from their capacity), the
    /// filter, and the interned locations.
    pub fn heap_bytes(&self) -> usize {
        let slot = size_of::<(Addr, Slot)>() + 1;
        let buckets: usize = self
            .map
            .shards()
            .iter()
            .map(|s| {
                let cap = s.read().capacity();
                // hashbrown keeps at most 7/8 of a power-of-two bucket count in use.
                if cap == 0 {
                    0
                } else {
                    (cap * 8 / 7).next_power_of_two()
                }
            })
            .sum();
        let loc = self.locations.read().unwrap_or_else(|p| p.into_inner());
        let loc_bytes: usize = loc
            .strings
            .iter()
            .flatten()
            .map(|(s, _)| s.len() + 16 + 48)
            .sum::<usize>()
            + loc.strings.capacity() * size_of::<Option<(Arc<str>, u32)>>();
        buckets * slot + self.filter.bytes() + loc_bytes
    }

    /// The address's [`BlockInfo`], if tracked.
    pub fn get(&self, a: &Addr) -> Option<BlockInfo> {
        let e = self.entry(a)?;
        Some(self.block_info(&e))
    }

    /// Every tracked address, in no order.
    pub fn addresses(&self) -> Vec<Addr> {
        self.map.iter().map(|r| *r.key()).collect()
    }

    /// How many addresses are tracked.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Every tracked address with its [`BlockInfo`], sorted by address.
    pub fn snapshot(&self) -> Vec<(Addr, BlockInfo)> {
        let mut v: Vec<(Addr, Entry)> = self
            .map
            .iter()
            .map(|r| (*r.key(), Entry::unpack(r.value())))
            .collect();
        v.sort_unstable_by_key(|(a, _)| *a);
        v.into_iter()
            .map(|(a, e)| (a, self.block_info(&e)))
            .collect()
    }

    /// At most `limit` tracked addresses accepted by `keep`, most recent first (by
    /// `watch_until`, then address), with how many `keep` accepted and how many of those
    /// are blocked at `now`. Reads the map once into a bounded heap: cheap enough for a
    /// page refresh at a million addresses.
    pub fn top(&self, limit: usize, now: Time, keep: impl Fn(&Addr) -> bool) -> Top {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        let mut heap: BinaryHeap<Reverse<(Time, Addr)>> = BinaryHeap::with_capacity(limit + 1);
        let (mut matched, mut blocked) = (0, 0);
        for r in &self.map {
            if !keep(r.key()) {
                continue;
            }
            matched += 1;
            let e = Entry::unpack(r.value());
            if e.block_until(&self.intervals).is_some_and(|u| u > now) {
                blocked += 1;
            }
            let k = (e.watch_until(&self.intervals), *r.key());
            if heap.len() < limit {
                heap.push(Reverse(k));
            } else if heap.peek().is_some_and(|Reverse(min)| k > *min) {
                heap.pop();
                heap.push(Reverse(k));
            }
        }
        let mut keys: Vec<(Time, Addr)> = heap.into_iter().map(|Reverse(k)| k).collect();
        keys.sort_unstable_by(|a, b| b.cmp(a));
        // Read again outside the iteration: no shard lock is held while locations are.
        let rows = keys
            .into_iter()
            .filter_map(|(_, a)| self.get(&a).map(|i| (a, i)))
            .collect();
        Top {
            matched,
            blocked,
            rows,
        }
    }

    pub(crate) fn entry(&self, a: &Addr) -> Option<Entry> {
        // Copy out of the guard at once: never hold a shard lock longer than this.
        self.map.get(a).map(|r| Entry::unpack(r.value()))
    }

    /// Starts loading what [`put`](WatchTable::put)ting a new entry for `a` will touch, for
    /// a caller that knows its next addresses (a hint: see [`crate::prefetch`]).
    #[inline]
    pub(crate) fn prefetch_put(&self, a: &Addr) {
        let hash = self.map.hash_usize(a);
        // A shard being written is skipped rather than waited for.
        if let Some(table) = self.map.shards()[self.map.determine_shard(hash)].try_read() {
            crate::prefetch::insert_slot(&table, hash as u64);
        }
    }

    /// Inserts a new entry or overwrites an existing one.
    pub(crate) fn put(&self, a: Addr, e: &Entry) {
        // Filter first: a reader that finds the entry must not be turned away.
        self.filter.insert(&a);
        self.floor.note(e);
        if self.map.insert(a, e.pack()).is_some() {
            self.changes.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// How many times an entry (an address's or a network's) was overwritten or removed
    /// so far. The engine is the only writer, so when this has not moved since it wrote an
    /// entry, that entry is still the table's, and the engine may use its own copy instead
    /// of a lookup; and an address [`contains`](WatchTable::contains) said yes to is still
    /// tracked.
    #[inline]
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
    }

    /// Removes an entry and releases its location.
    pub(crate) fn remove(&self, a: &Addr) -> Option<Entry> {
        let (_, slot) = self.map.remove(a)?;
        self.changes.fetch_add(1, Ordering::Relaxed);
        let e = Entry::unpack(&slot);
        self.release_location(e.location);
        self.note_removed(1);
        Some(e)
    }

    /// Counts removals and recomputes the filter once stale bits outnumber live entries
    /// (and there are at least 4096 of them): amortised O(1) per removal.
    fn note_removed(&self, n: usize) {
        let len = self.map.len();
        if super::should_shrink(len, self.map.capacity()) {
            self.map.shrink_to_fit();
        }
        let stale = self.filter.stale.fetch_add(n, Ordering::Relaxed) + n;
        if stale >= self.map.len().max(4096) {
            // Addresses are copied out of each shard before the filter is touched, so no
            // shard lock is held while the bitmap is rewritten.
            let live: Vec<Addr> = self.map.iter().map(|r| *r.key()).collect();
            self.filter.rebuild(live.iter());
        }
    }

    pub(crate) fn intern_location(&self, s: &str) -> u32 {
        self.intern_location_shared(s).0
    }

    /// Interns `s` as [`intern_location`](WatchTable::intern_location) does, and also
    /// returns the shared text, so a caller that needs it as well does not copy it.
    pub(crate) fn intern_location_shared(&self, s: &str) -> (u32, Option<Arc<str>>) {
        if s.is_empty() {
            return (0, None);
        }
        let mut locations = self.locations.write().unwrap_or_else(|p| p.into_inner());
        let id = locations.intern(s);
        let text = locations.strings[id as usize - 1]
            .as_ref()
            .map(|(text, _)| text.clone());
        (id, text)
    }

    pub(crate) fn release_location(&self, id: u32) {
        if id != 0 {
            self.locations
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .release(id);
        }
    }

    pub(crate) fn location(&self, id: u32) -> Option<Arc<str>> {
        if id == 0 {
            return None;
        }
        self.locations
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
    }

    pub(crate) fn block_info(&self, e: &Entry) -> BlockInfo {
        BlockInfo {
            block_until: e.block_until(&self.intervals),
            watch_until: e.watch_until(&self.intervals),
            num_reblocked: e.reblocked,
            current_interval: usize::from(e.step),
            current_block_id: e.rule,
            location: self.location(e.location),
        }
    }

    /// Visits every entry with a working copy; the closure says what to do with it. Only
    /// updated slots are written back, so a sweep that changes little dirties little
    /// memory. Removed entries keep their location until the caller releases it with
    /// [`release_location`](WatchTable::release_location), so it can still be logged. Used
    /// by the expiry sweep only.
    ///
    /// `f` sees only entries the sweep at `now` may change: while no expiry reference has
    /// passed, it sees none.
    pub(crate) fn sweep(&self, now: Time, f: impl FnMut(Addr, &mut Entry) -> Sweep) {
        let removed = self.sweep_in(&self.map, &self.floor, now, f);
        if removed > 0 {
            self.note_removed(removed);
        }
    }

    /// The sweep of one map with its floor: skipped while nothing can be due, else
    /// [`sweep_map`], the floor set anew and a change counted. How many were removed.
    fn sweep_in<K: Copy + Eq + std::hash::Hash>(
        &self,
        map: &DashMap<K, Slot, foldhash::fast::RandomState>,
        floor: &SweepFloor,
        now: Time,
        f: impl FnMut(K, &mut Entry) -> Sweep,
    ) -> usize {
        if !floor.due(now) {
            return 0;
        }
        let (removed, updated, next) = sweep_map(map, f);
        floor.set(next);
        if removed + updated > 0 {
            self.changes.fetch_add(1, Ordering::Relaxed);
        }
        removed
    }
}

/// Visits every slot of `map` as a working [`Entry`], writing back only updated ones and
/// dropping removed ones; how many were removed and updated, and the earliest expiry
/// reference (other than zero) of those kept, in microseconds (`i64::MAX` for none).
fn sweep_map<K: Copy + Eq + std::hash::Hash>(
    map: &DashMap<K, Slot, foldhash::fast::RandomState>,
    mut f: impl FnMut(K, &mut Entry) -> Sweep,
) -> (usize, usize, i64) {
    let mut removed = 0;
    let mut updated = 0;
    let mut floor = i64::MAX;
    map.retain(|k, slot| {
        let mut e = Entry::unpack(slot);
        let keep = match f(*k, &mut e) {
            Sweep::Keep => true,
            Sweep::Update => {
                *slot = e.pack();
                updated += 1;
                true
            }
            Sweep::Remove => {
                removed += 1;
                false
            }
        };
        if keep && e.expire_ref != Time::ZERO {
            floor = floor.min(e.expire_ref.as_micros());
        }
        keep
    });
    (removed, updated, floor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            start: Time::from_timeval(1, 0),
            expire_ref: Time::from_timeval(1, 0),
            rule: None,
            location: 0,
            reblocked: 0,
            step: 0,
            adopted: false,
        }
    }

    #[test]
    fn filter_never_hides_a_watched_address_and_forgets_removed_ones() {
        let w = WatchTable::new(Intervals::default(), 1000);
        let addrs: Vec<Addr> = (0..20_000u32)
            .map(|i| Addr::from_v4((0x0a00_0000 + i).to_be_bytes()))
            .collect();
        for a in &addrs {
            w.put(*a, &entry());
        }
        assert!(addrs.iter().all(|a| w.contains(a)));
        for a in &addrs[..15_000] {
            w.remove(a);
        }
        assert!(addrs[15_000..].iter().all(|a| w.contains(a)));
        assert!(addrs[..15_000].iter().all(|a| !w.contains(a)));
        // After the rebuild triggered by the removals, most removed addresses no longer
        // pass the filter (the map is not even asked).
        let passing = addrs[..15_000]
            .iter()
            .filter(|a| w.filter.may_contain(a))
            .count();
        assert!(passing < 15_000 / 4, "{passing} stale bits");
    }

    #[test]
    fn the_coarse_prefilter_never_hides_a_tracked_network() {
        let mut rng = 0x1234_5678_9abc_def1u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for (len4, len6) in [(8, 16), (16, 48), (24, 64), (29, 125), (32, 128), (0, 0)] {
            let shape = NetShape { len4, len6 };
            let w = WatchTable::with_nets(Intervals::default(), 1000, shape, Intervals::default());
            let mut members = Vec::new();
            for i in 0..5000u64 {
                let a = if i % 2 == 0 {
                    Addr::from_v4((next() as u32).to_be_bytes())
                } else {
                    let mut o = [0u8; 16];
                    o[..8].copy_from_slice(&next().to_be_bytes());
                    o[8..].copy_from_slice(&next().to_be_bytes());
                    Addr::from_v6(o)
                };
                w.put_net(a.network(len4, len6), &entry());
                members.push(a);
            }
            assert!(
                members
                    .iter()
                    .all(|a| w.contains_net_of(a) && w.may_contain(a))
            );
            let gone: std::collections::HashSet<IpNet> = members[..4500]
                .iter()
                .map(|a| a.network(len4, len6))
                .collect();
            for n in &gone {
                w.remove_net(n);
            }
            assert!(
                members[4500..]
                    .iter()
                    .filter(|a| !gone.contains(&a.network(len4, len6)))
                    .all(|a| w.contains_net_of(a))
            );
        }
    }

    #[test]
    fn slot_is_28_bytes_with_alignment_4() {
        assert_eq!(size_of::<Slot>(), 28);
        assert_eq!(align_of::<Slot>(), 4);
        assert_eq!(size_of::<(Addr, Slot)>(), 44);
    }

    #[test]
    fn pack_round_trips() {
        let e = Entry {
            start: Time::from_timeval(1398529018, 678276),
            expire_ref: Time::from_timeval(1398532618, 678276),
            rule: RuleId::new(7),
            location: 3,
            reblocked: 12345,
            step: 126,
            adopted: true,
        };
        assert_eq!(Entry::unpack(&e.pack()), e);
        let mut big = e;
        big.reblocked = u32::MAX;
        assert_eq!(Entry::unpack(&big.pack()).reblocked, REBLOCKED_MAX);
    }

    #[test]
    fn locations_are_shared_and_freed() {
        let w = WatchTable::new(Intervals::default(), 1000);
        let a = w.intern_location("scan");
        let b = w.intern_location("scan");
        assert_eq!(a, b);
        w.release_location(a);
        assert_eq!(w.location(a).as_deref(), Some("scan"));
        w.release_location(b);
        assert_eq!(w.location(a), None);
        let c = w.intern_location("other");
        assert_eq!(c, a, "freed ids are reused");
    }
}
