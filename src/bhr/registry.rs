//! The block registry: BHR's data and rules, in memory, with time as an argument.
//!
//! [`Registry`] holds every block, block entry, whitelist and source-blacklist entry and
//! answers BHR's questions (what is expected, pending, current, pending removal; what is in
//! an ident's queue) from incremental indexes rather than table scans. Every mutation
//! returns the rows it changed as [`Change`]s, which the store persists before the API
//! answers.
//!
//! # Time-dependent state
//!
//! Whether a block is *expected* (`unblock_at` in the future) and whether an entry is *due*
//! (its `unblock_at` has passed) change as time passes, without any event. Each operation
//! first calls [`Registry::advance`], which moves blocks and entries whose time has come out
//! of the time-ordered `expiring` / `not_due` indexes, in order. Each block's contributions
//! to the counters are kept consistent by `detach_block` / `attach_block`: every change to
//! a block or its entries happens between the two.
//!
//! The registry does no I/O and reads no clock.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use std::net::IpAddr;

use ipnet::IpNet;

use crate::time::{Interval, Time};

use super::model::{Block, Entry, Settings, SourceBlacklistEntry, UserId, WhitelistEntry};

/// At most this many rows in a block or unblock queue.
pub const QUEUE_LIMIT: usize = 200;

/// A row that changed and must be persisted (inserted or replaced whole).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A block row.
    Block(Block),
    /// A block-entry row.
    Entry(Entry),
    /// A whitelist row.
    Whitelist(WhitelistEntry),
    /// A whitelist row was deleted.
    WhitelistDeleted(u64),
    /// A source-blacklist row.
    SourceBlacklist(SourceBlacklistEntry),
    /// A source-blacklist row was deleted.
    SourceBlacklistDeleted(u64),
}

/// A validated block request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewBlock {
    /// The network (canonical).
    pub cidr: IpNet,
    /// The network as the request spelled it (echoed in a create response, and in the
    /// prefix-length error message).
    pub cidr_text: String,
    /// Who asks.
    pub who: UserId,
    /// Source.
    pub source: String,
    /// Why.
    pub why: String,
    /// Requested seconds; 0 is indefinite, negative gives an already-expired block.
    pub seconds: i64,
    /// An explicit end instead of `seconds`.
    pub until: Option<Time>,
    /// Skip the whitelist, prefix-length and source-blacklist checks.
    pub skip_whitelist: bool,
    /// Extend an existing expected block for the same network.
    pub extend: bool,
    /// Scale the duration by the network's history.
    pub autoscale: bool,
}

impl NewBlock {
    /// A request made inside catchd rather than read from a request body: `cidr` spelled
    /// as it is, indefinite until [`until`](NewBlock::until) says otherwise, every check
    /// applied, an existing block returned as it is.
    pub fn new(cidr: IpNet, who: UserId, source: &str, why: impl Into<String>) -> NewBlock {
        NewBlock {
            cidr,
            cidr_text: cidr.to_string(),
            who,
            source: source.to_string(),
            why: why.into(),
            seconds: 0,
            until: None,
            skip_whitelist: false,
            extend: false,
            autoscale: false,
        }
    }

    /// Ends the block at `until` (`None`: indefinite).
    #[must_use]
    pub fn until(mut self, until: Option<Time>) -> NewBlock {
        self.until = until;
        self
    }

    /// Extends an expected block for the same network instead of returning it as it is.
    #[must_use]
    pub fn extending(mut self) -> NewBlock {
        self.extend = true;
        self
    }
}

/// The result of adding a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Added {
    /// The block created, or the existing one returned (perhaps extended).
    pub id: u64,
    /// Whether it was created now.
    pub created: bool,
}

/// The counts `/bhr/api/stats` reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Expected and not in place anywhere.
    pub block_pending: u64,
    /// In place somewhere and due for removal.
    pub unblock_pending: u64,
    /// In place somewhere.
    pub current: u64,
    /// Expected (should be blocked).
    pub expected: u64,
    /// Expected blocks per source, sorted by source.
    pub sources: BTreeMap<Arc<str>, u64>,
}

/// A block with its derived state.
#[derive(Clone, Debug)]
struct BlockState {
    block: Block,
    /// Entry ids, in creation order.
    entries: Vec<u64>,
    /// Entries not removed.
    active: u32,
    /// Active entries whose `unblock_at` has passed.
    due: u32,
    /// Whether the block counts as expected (as of the last attach).
    expected: bool,
}

/// Stored rows that cannot form a registry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("inconsistent stored registry: {0}")]
pub struct Inconsistent(pub String);

/// Why a block request is refused by the registry's rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused(pub String);

/// BHR's registry.
#[derive(Debug)]
pub struct Registry {
    settings: Settings,
    /// The addresses of the host catchd runs on (never blocked, with
    /// `never_block_host`).
    host: Vec<IpAddr>,
    now: Time,
    blocks: Vec<BlockState>,
    entries: Vec<(Entry, bool)>,
    /// Every block per exact network, oldest first.
    by_cidr: BTreeMap<IpNet, Vec<u64>>,
    /// The entry of each (block, ident) pair.
    entry_of: HashMap<(u64, Arc<str>), u64>,
    /// Expected blocks with an `unblock_at`, by `unblock_at`.
    expiring: BTreeSet<(Time, u64)>,
    /// Expected blocks, by `added`.
    expected_by_added: BTreeSet<(Time, u64)>,
    /// Active entries with a future `unblock_at`, by it.
    not_due: BTreeSet<(Time, u64)>,
    /// Active entries whose `unblock_at` has passed, by it.
    due: BTreeSet<(Time, u64)>,
    /// Active entries with an `unblock_at`, per ident, by it (the unblock queues).
    ident_active: HashMap<Arc<str>, BTreeSet<(Time, u64)>>,
    /// Blocks in place somewhere.
    current: BTreeSet<u64>,
    counts: Stats,
    whitelist: Vec<WhitelistEntry>,
    source_blacklist: Vec<SourceBlacklistEntry>,
    next_whitelist: u64,
    next_blacklist: u64,
    /// Interned strings (sources, idents).
    strings: HashMap<Arc<str>, ()>,
}

fn idx(id: u64) -> usize {
    (id - 1) as usize
}

/// Whether two networks overlap: one's first or last address lies in the other (BHR's
/// `is_whitelisted`, which matches sub- and super-networks). Families never overlap.
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    match (a, b) {
        (IpNet::V4(_), IpNet::V4(_)) | (IpNet::V6(_), IpNet::V6(_)) => {
            b.contains(&a.network())
                || b.contains(&a.broadcast())
                || a.contains(&b.network())
                || a.contains(&b.broadcast())
        }
        _ => false,
    }
}

impl Registry {
    /// An empty registry.
    pub fn new(settings: Settings) -> Registry {
        Registry {
            settings,
            host: Vec::new(),
            now: Time::ZERO,
            blocks: Vec::new(),
            entries: Vec::new(),
            by_cidr: BTreeMap::new(),
            entry_of: HashMap::new(),
            expiring: BTreeSet::new(),
            expected_by_added: BTreeSet::new(),
            not_due: BTreeSet::new(),
            due: BTreeSet::new(),
            ident_active: HashMap::new(),
            current: BTreeSet::new(),
            counts: Stats::default(),
            whitelist: Vec::new(),
            source_blacklist: Vec::new(),
            next_whitelist: 1,
            next_blacklist: 1,
            strings: HashMap::new(),
        }
    }

    /// Rebuilds a registry from stored rows (ids dense from 1, as the store keeps them).
    ///
    /// # Errors
    /// [`Inconsistent`] if block or entry ids are not dense from 1, an entry names a
    /// missing block, or two expected blocks share a network.
    pub fn restore(
        settings: Settings,
        now: Time,
        blocks: Vec<Block>,
        entries: Vec<Entry>,
        whitelist: Vec<WhitelistEntry>,
        source_blacklist: Vec<SourceBlacklistEntry>,
    ) -> Result<Registry, Inconsistent> {
        let mut r = Registry::new(settings);
        r.now = now;
        for b in blocks {
            if b.id as usize != r.blocks.len() + 1 {
                return Err(Inconsistent(format!(
                    "block ids are not dense: found {} after {}",
                    b.id,
                    r.blocks.len()
                )));
            }
            if r.is_expected(&b) && r.expected_for(&b.cidr).is_some() {
                return Err(Inconsistent(format!(
                    "two expected blocks for {} (the second is {})",
                    b.cidr, b.id
                )));
            }
            r.insert_block(b);
        }
        for mut e in entries {
            if e.id as usize != r.entries.len() + 1 {
                return Err(Inconsistent(format!(
                    "block entry ids are not dense: found {} after {}",
                    e.id,
                    r.entries.len()
                )));
            }
            if e.block == 0 || e.block as usize > r.blocks.len() {
                return Err(Inconsistent(format!(
                    "block entry {} names block {}, which does not exist",
                    e.id, e.block
                )));
            }
            e.ident = r.intern(&e.ident);
            r.insert_entry(e);
        }
        r.next_whitelist = whitelist.iter().map(|w| w.id).max().unwrap_or(0) + 1;
        r.whitelist = whitelist;
        r.next_blacklist = source_blacklist.iter().map(|s| s.id).max().unwrap_or(0) + 1;
        r.source_blacklist = source_blacklist;
        Ok(r)
    }

    /// Puts a stored row another node wrote into this registry (an upsert; deletions of
    /// whitelist and source-blacklist rows too), keeping every index right. Rows arrive in
    /// the order they were committed, so a new block or entry is always the next id.
    ///
    /// # Errors
    /// A row that does not fit (an id beyond the next one, an entry of an unknown block,
    /// a block whose network changed).
    pub fn apply_stored(&mut self, ch: Change) -> Result<(), Inconsistent> {
        match ch {
            Change::Block(mut b) => {
                let id = b.id;
                let n = self.blocks.len() as u64;
                if id == n + 1 {
                    self.insert_block(b);
                } else if id >= 1 && id <= n {
                    if self.blocks[idx(id)].block.cidr != b.cidr {
                        return Err(Inconsistent(format!("block {id} changed its network")));
                    }
                    b.source = self.intern(&b.source);
                    b.why = self.intern(&b.why);
                    b.unblock_why = self.intern(&b.unblock_why);
                    self.modify_block(id, |blk, _, _| *blk = b);
                } else {
                    return Err(Inconsistent(format!(
                        "block {id} arrived before block {}",
                        n + 1
                    )));
                }
            }
            Change::Entry(mut e) => {
                let (eid, bid) = (e.id, e.block);
                if bid == 0 || bid as usize > self.blocks.len() {
                    return Err(Inconsistent(format!(
                        "block entry {eid} names block {bid}, which does not exist"
                    )));
                }
                e.ident = self.intern(&e.ident);
                let n = self.entries.len() as u64;
                if eid == n + 1 {
                    self.insert_entry(e);
                } else if eid >= 1 && eid <= n {
                    self.detach_block(bid);
                    self.detach_entry(eid);
                    self.entries[idx(eid)].0 = e;
                    self.attach_entry(eid);
                    self.attach_block(bid);
                } else {
                    return Err(Inconsistent(format!(
                        "block entry {eid} arrived before entry {}",
                        n + 1
                    )));
                }
            }
            Change::Whitelist(w) => {
                self.next_whitelist = self.next_whitelist.max(w.id + 1);
                match self.whitelist.iter_mut().find(|x| x.id == w.id) {
                    Some(x) => *x = w,
                    None => self.whitelist.push(w),
                }
            }
            Change::WhitelistDeleted(id) => self.whitelist.retain(|w| w.id != id),
            Change::SourceBlacklist(sb) => {
                self.next_blacklist = self.next_blacklist.max(sb.id + 1);
                match self.source_blacklist.iter_mut().find(|x| x.id == sb.id) {
                    Some(x) => *x = sb,
                    None => self.source_blacklist.push(sb),
                }
            }
            Change::SourceBlacklistDeleted(id) => self.source_blacklist.retain(|x| x.id != id),
        }
        Ok(())
    }

    /// The time the registry was last moved to.
    pub fn now(&self) -> Time {
        self.now
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some((k, ())) = self.strings.get_key_value(s) {
            return k.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.strings.insert(a.clone(), ());
        a
    }

    // ----- derived state -----

    fn is_expected(&self, b: &Block) -> bool {
        !b.forced_unblock && b.unblock_at.is_none_or(|u| u > self.now)
    }

    /// Removes a block's contributions to the counters and indexes.
    fn detach_block(&mut self, id: u64) {
        let st = &self.blocks[idx(id)];
        let b = &st.block;
        if st.expected {
            self.counts.expected -= 1;
            if let Some(n) = self.counts.sources.get_mut(&b.source) {
                *n -= 1;
                if *n == 0 {
                    self.counts.sources.remove(&b.source);
                }
            }
            self.expected_by_added.remove(&(b.added, id));
            if let Some(u) = b.unblock_at {
                self.expiring.remove(&(u, id));
            }
            if st.active == 0 {
                self.counts.block_pending -= 1;
            }
        }
        if st.active > 0 {
            self.counts.current -= 1;
            self.current.remove(&id);
        }
        if st.due > 0 {
            self.counts.unblock_pending -= 1;
        }
    }

    /// Adds a block's contributions, recomputing whether it is expected.
    fn attach_block(&mut self, id: u64) {
        let expected = self.is_expected(&self.blocks[idx(id)].block);
        let st = &mut self.blocks[idx(id)];
        st.expected = expected;
        let (added, unblock_at, source) =
            (st.block.added, st.block.unblock_at, st.block.source.clone());
        let (active, due) = (st.active, st.due);
        if expected {
            self.counts.expected += 1;
            *self.counts.sources.entry(source).or_insert(0) += 1;
            self.expected_by_added.insert((added, id));
            if let Some(u) = unblock_at {
                self.expiring.insert((u, id));
            }
            if active == 0 {
                self.counts.block_pending += 1;
            }
        }
        if active > 0 {
            self.counts.current += 1;
            self.current.insert(id);
        }
        if due > 0 {
            self.counts.unblock_pending += 1;
        }
    }

    /// Removes an entry's contributions to its block and the indexes. The block must be
    /// detached.
    fn detach_entry(&mut self, eid: u64) {
        let (e, is_due) = self.entries[idx(eid)].clone();
        if e.removed.is_some() {
            return;
        }
        let st = &mut self.blocks[idx(e.block)];
        st.active -= 1;
        if let Some(u) = e.unblock_at {
            if is_due {
                st.due -= 1;
                self.due.remove(&(u, eid));
            } else {
                self.not_due.remove(&(u, eid));
            }
            if let Some(set) = self.ident_active.get_mut(&e.ident) {
                set.remove(&(u, eid));
            }
        }
    }

    /// Adds an entry's contributions. The block must be detached.
    fn attach_entry(&mut self, eid: u64) {
        let e = self.entries[idx(eid)].0.clone();
        let mut is_due = false;
        if e.removed.is_none() {
            let st = &mut self.blocks[idx(e.block)];
            st.active += 1;
            if let Some(u) = e.unblock_at {
                is_due = u <= self.now;
                if is_due {
                    st.due += 1;
                    self.due.insert((u, eid));
                } else {
                    self.not_due.insert((u, eid));
                }
                self.ident_active
                    .entry(e.ident.clone())
                    .or_default()
                    .insert((u, eid));
            }
        }
        self.entries[idx(eid)].1 = is_due;
    }

    /// The registry as of `now`: moved there first, so that a read can never see a block
    /// as expected after its end.
    pub fn at(&mut self, now: Time) -> &Registry {
        self.advance(now);
        self
    }

    /// Moves time forward (never back): blocks whose `unblock_at` has passed stop being
    /// expected and entries whose `unblock_at` has passed become due.
    pub fn advance(&mut self, now: Time) {
        if now <= self.now {
            return;
        }
        self.now = now;
        while let Some(&(t, id)) = self.expiring.first() {
            if t > now {
                break;
            }
            self.detach_block(id);
            self.attach_block(id);
        }
        while let Some(&(t, eid)) = self.not_due.first() {
            if t > now {
                break;
            }
            let bid = self.entries[idx(eid)].0.block;
            self.detach_block(bid);
            self.detach_entry(eid);
            self.attach_entry(eid);
            self.attach_block(bid);
        }
    }

    /// Changes a block and its entries through `f`, keeping every index right.
    fn modify_block(&mut self, id: u64, f: impl FnOnce(&mut Block, &mut [(Entry, bool)], &[u64])) {
        self.detach_block(id);
        let eids = self.blocks[idx(id)].entries.clone();
        for &e in &eids {
            self.detach_entry(e);
        }
        {
            let (blocks, entries) = (&mut self.blocks, &mut self.entries);
            f(&mut blocks[idx(id)].block, entries, &eids);
        }
        for &e in &eids {
            self.attach_entry(e);
        }
        self.attach_block(id);
    }

    fn insert_block(&mut self, mut b: Block) -> u64 {
        b.source = self.intern(&b.source);
        b.why = self.intern(&b.why);
        b.unblock_why = self.intern(&b.unblock_why);
        let id = b.id;
        self.by_cidr.entry(b.cidr).or_default().push(id);
        self.blocks.push(BlockState {
            block: b,
            entries: Vec::new(),
            active: 0,
            due: 0,
            expected: false,
        });
        self.attach_block(id);
        id
    }

    fn insert_entry(&mut self, e: Entry) -> u64 {
        let (eid, bid) = (e.id, e.block);
        self.entry_of.insert((bid, e.ident.clone()), eid);
        self.detach_block(bid);
        self.blocks[idx(bid)].entries.push(eid);
        self.entries.push((e, false));
        self.attach_entry(eid);
        self.attach_block(bid);
        eid
    }

    // ----- reads -----

    /// A block by id.
    pub fn block(&self, id: u64) -> Option<&Block> {
        id.checked_sub(1)
            .and_then(|i| self.blocks.get(i as usize))
            .map(|s| &s.block)
    }

    /// An entry by id.
    pub fn entry(&self, id: u64) -> Option<&Entry> {
        id.checked_sub(1)
            .and_then(|i| self.entries.get(i as usize))
            .map(|(e, _)| e)
    }

    /// All blocks, by id.
    pub fn blocks(&self) -> impl DoubleEndedIterator<Item = &Block> {
        self.blocks.iter().map(|s| &s.block)
    }

    /// All entries, by id.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().map(|(e, _)| e)
    }

    /// The entries of a block.
    pub fn entries_of(&self, block: u64) -> impl Iterator<Item = &Entry> {
        self.blocks
            .get(idx(block))
            .map(|s| s.entries.as_slice())
            .unwrap_or(&[])
            .iter()
            .map(|e| &self.entries[idx(*e)].0)
    }

    /// The newest expected block for exactly this network.
    pub fn expected_for(&self, cidr: &IpNet) -> Option<&Block> {
        self.by_cidr
            .get(&crate::addr::canonical_net(*cidr))?
            .iter()
            .rev()
            .find_map(|id| {
                let st = &self.blocks[idx(*id)];
                st.expected.then_some(&st.block)
            })
    }

    /// Counts for `/bhr/api/stats` (call [`advance`](Registry::advance) first).
    pub fn stats(&self) -> &Stats {
        &self.counts
    }

    /// Expected blocks, oldest first.
    pub fn expected(&self) -> impl DoubleEndedIterator<Item = &Block> {
        self.expected_by_added
            .iter()
            .map(|(_, id)| &self.blocks[idx(*id)].block)
    }

    /// Expected blocks added at or after `since`, oldest first.
    pub fn expected_since(&self, since: Time) -> impl Iterator<Item = &Block> {
        self.expected_by_added
            .range((since, 0)..)
            .map(|(_, id)| &self.blocks[idx(*id)].block)
    }

    /// Expected blocks not in place anywhere, oldest first.
    pub fn pending(&self) -> impl Iterator<Item = &Block> {
        self.expected_by_added.iter().filter_map(|(_, id)| {
            let st = &self.blocks[idx(*id)];
            (st.active == 0).then_some(&st.block)
        })
    }

    /// Blocks in place somewhere, by id.
    pub fn current(&self) -> impl Iterator<Item = &Block> {
        self.current.iter().map(|id| &self.blocks[idx(*id)].block)
    }

    /// Blocks with an entry due for removal, by the earliest such entry's `unblock_at`.
    pub fn pending_removal(&self) -> Vec<&Block> {
        let mut seen = std::collections::HashSet::new();
        self.due
            .iter()
            .filter_map(|(_, eid)| {
                let b = self.entries[idx(*eid)].0.block;
                seen.insert(b).then(|| &self.blocks[idx(b)].block)
            })
            .collect()
    }

    /// An ident's block queue: expected blocks added at or after `since` that this ident has
    /// no entry for (removed or not), oldest first, at most [`QUEUE_LIMIT`].
    pub fn queue(&self, ident: &str, since: Time) -> Vec<&Block> {
        let key: Arc<str> = self
            .strings
            .get_key_value(ident)
            .map_or_else(|| Arc::from(ident), |(k, ())| k.clone());
        self.expected_by_added
            .range((since, 0)..)
            .filter(|(_, id)| !self.entry_of.contains_key(&(*id, key.clone())))
            .take(QUEUE_LIMIT)
            .map(|(_, id)| &self.blocks[idx(*id)].block)
            .collect()
    }

    /// An ident's unblock queue: its entries in place whose `unblock_at` has passed, by
    /// `unblock_at`, at most [`QUEUE_LIMIT`].
    pub fn unblock_queue(&self, ident: &str) -> Vec<&Entry> {
        let Some(set) = self.ident_active.get(ident) else {
            return Vec::new();
        };
        set.range(..=(self.now, u64::MAX))
            .take(QUEUE_LIMIT)
            .map(|(_, eid)| &self.entries[idx(*eid)].0)
            .collect()
    }

    /// Every block (any state) whose network lies within `net` (or equals it): BHR's
    /// `cidr <<= query`. Ordered by network, then id.
    pub fn query(&self, net: &IpNet) -> Vec<&Block> {
        self.query_after(&crate::addr::canonical_net(*net), None)
            .collect()
    }

    // ----- reads from a cursor (for answers streamed in pieces) -----
    //
    // Each takes the key of the last row already sent (`None`: from the start) and gives
    // the rows after it, in the same order as the whole read. Keys never change for a row,
    // so a listing read in pieces (with changes in between) never repeats a row.

    /// [`blocks`](Registry::blocks) after block `after`.
    pub fn blocks_after(&self, after: Option<u64>) -> impl Iterator<Item = &Block> {
        let from = after.map_or(0, |id| usize::try_from(id).unwrap_or(usize::MAX));
        self.blocks.iter().skip(from).map(|s| &s.block)
    }

    /// [`entries`](Registry::entries) after entry `after`.
    pub fn entries_after(&self, after: Option<u64>) -> impl Iterator<Item = &Entry> {
        let from = after.map_or(0, |id| usize::try_from(id).unwrap_or(usize::MAX));
        self.entries.iter().skip(from).map(|(e, _)| e)
    }

    /// [`expected`](Registry::expected) after the block keyed `(added, id)`, from `since`.
    pub fn expected_after(
        &self,
        since: Option<Time>,
        after: Option<(Time, u64)>,
    ) -> impl Iterator<Item = &Block> {
        use std::ops::Bound;
        let lo = match (after, since) {
            (Some(k), _) => Bound::Excluded(k),
            (None, Some(t)) => Bound::Included((t, 0)),
            (None, None) => Bound::Unbounded,
        };
        self.expected_by_added
            .range((lo, Bound::Unbounded))
            .map(|(_, id)| &self.blocks[idx(*id)].block)
    }

    /// Whether a block is in place nowhere (what [`pending`](Registry::pending) keeps).
    pub fn is_pending(&self, id: u64) -> bool {
        id.checked_sub(1)
            .and_then(|i| self.blocks.get(usize::try_from(i).ok()?))
            .is_some_and(|st| st.expected && st.active == 0)
    }

    /// [`current`](Registry::current) after block `after`.
    pub fn current_after(&self, after: Option<u64>) -> impl Iterator<Item = &Block> {
        use std::ops::Bound;
        let lo = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.current
            .range((lo, Bound::Unbounded))
            .map(|id| &self.blocks[idx(*id)].block)
    }

    /// [`query`](Registry::query) after the block keyed `(cidr, id)`.
    pub fn query_after(
        &self,
        net: &IpNet,
        after: Option<(IpNet, u64)>,
    ) -> impl Iterator<Item = &Block> {
        use std::ops::Bound;
        let (lo, hi) = match net {
            IpNet::V4(n) => (
                IpNet::V4(ipnet::Ipv4Net::new_assert(n.network(), 0)),
                IpNet::V4(ipnet::Ipv4Net::new_assert(n.broadcast(), 32)),
            ),
            IpNet::V6(n) => (
                IpNet::V6(ipnet::Ipv6Net::new_assert(n.network(), 0)),
                IpNet::V6(ipnet::Ipv6Net::new_assert(n.broadcast(), 128)),
            ),
        };
        let start = match after {
            Some((c, _)) if c >= lo => Bound::Included(c),
            _ => Bound::Included(lo),
        };
        let net = *net;
        self.by_cidr
            .range((start, Bound::Included(hi)))
            .filter(move |(c, _)| net.contains(*c))
            .flat_map(move |(c, ids)| {
                let floor = match after {
                    Some((ac, aid)) if ac == *c => aid,
                    _ => 0,
                };
                ids.iter().filter(move |id| **id > floor)
            })
            .map(|id| &self.blocks[idx(*id)].block)
    }

    /// The whitelist.
    pub fn whitelist(&self) -> &[WhitelistEntry] {
        &self.whitelist
    }

    /// The source blacklist.
    pub fn source_blacklist(&self) -> &[SourceBlacklistEntry] {
        &self.source_blacklist
    }

    // ----- rules -----

    /// Replaces the settings (a reload): the rules apply to requests from now on; blocks
    /// already made stay as they are.
    pub fn set_settings(&mut self, settings: Settings) {
        self.settings = settings;
    }

    /// Makes these the addresses of the host catchd runs on (never blocked while
    /// `never_block_host` is on).
    pub fn set_host_addresses(&mut self, host: Vec<IpAddr>) {
        self.host = host.into_iter().map(crate::addr::canonical_ip).collect();
    }

    /// Why a network may never be blocked, flag or not: it is all of a family (`/0`), it
    /// overlaps `never_block` (loopback, link-local, multicast … by default), or it holds
    /// an address of this host.
    pub fn never(&self, cidr: &IpNet) -> Option<String> {
        let cidr = crate::addr::canonical_net(*cidr);
        if cidr.prefix_len() == 0 {
            return Some(format!("Refusing to block {cidr}: it is every address"));
        }
        if let Some(n) = self
            .settings
            .never_block
            .iter()
            .find(|n| overlaps(&cidr, n))
        {
            return Some(format!(
                "Refusing to block {cidr}: it overlaps {n}, which is never blocked (bhr.never_block)"
            ));
        }
        if self.settings.never_block_host
            && let Some(a) = self.host.iter().find(|a| cidr.contains(*a))
        {
            return Some(format!(
                "Refusing to block {cidr}: it holds {a}, an address of this host (bhr.never_block_host)"
            ));
        }
        None
    }

    /// BHR's object-level checks, in its order (whitelist, prefix length, source
    /// blacklist), skipped with `skip_whitelist`; after them, and never skipped, the
    /// networks that may never be blocked ([`never`](Registry::never)). `who_name` turns
    /// a user id into the name the messages show.
    pub fn check(
        &self,
        req: &NewBlock,
        who_name: impl Fn(UserId) -> String,
    ) -> Result<(), Refused> {
        if !req.skip_whitelist {
            self.bhr_checks(req, who_name)?;
        }
        match self.never(&req.cidr) {
            Some(why) => Err(Refused(why)),
            None => Ok(()),
        }
    }

    /// BHR's own checks.
    fn bhr_checks(
        &self,
        req: &NewBlock,
        who_name: impl Fn(UserId) -> String,
    ) -> Result<(), Refused> {
        let cidr = crate::addr::canonical_net(req.cidr);
        if let Some(w) = self.whitelist.iter().find(|w| overlaps(&cidr, &w.cidr)) {
            return Err(Refused(format!(
                "whitelisted: {}: {}",
                who_name(w.who),
                w.why
            )));
        }
        let min = match cidr {
            IpNet::V4(_) => self.settings.minimum_prefixlen,
            IpNet::V6(_) => self.settings.minimum_prefixlen_v6,
        };
        if cidr.prefix_len() < min {
            return Err(Refused(format!(
                "Prefix length in {} is too small",
                req.cidr_text
            )));
        }
        if let Some(s) = self
            .source_blacklist
            .iter()
            .find(|s| *s.source == *req.source)
        {
            return Err(Refused(format!(
                "Source {} is blacklisted: {}: {}",
                req.source,
                who_name(s.who),
                s.why
            )));
        }
        Ok(())
    }

    /// The autoscaled duration in seconds for a request of `seconds` (BHR §4.2): based on
    /// the network's most recent block (any state), a quick repeat doubles its duration, a
    /// later one keeps it, a much later one halves it; never below the request.
    fn autoscale(&self, cidr: &IpNet, seconds: f64) -> f64 {
        let Some(lb) = self
            .by_cidr
            .get(cidr)
            .and_then(|ids| ids.last())
            .map(|id| &self.blocks[idx(*id)].block)
        else {
            return seconds;
        };
        let (Some(dur), Some(until)) = (lb.duration_micros(), lb.unblock_at) else {
            return seconds;
        };
        let s = &self.settings;
        let last = if dur == 0 { seconds } else { dur as f64 / 1e6 };
        let age = (self.now - until).as_micros() as f64 / 1e6;
        let d = last.round_ties_even();
        let scaled = if age <= s.minimum_time_window.max(s.time_window_factor * d) {
            s.penalty_time_multiplier * d
        } else if age <= s.time_window_factor * s.return_to_base_multiplier * d {
            d
        } else {
            d / s.return_to_base_factor
        };
        seconds.max(scaled)
    }

    /// BHR's `add_block` (§4): returns an existing expected block for the same network
    /// (extended when asked and later), or creates one (autoscaled when asked), and stamps
    /// the in-place entries of earlier blocks for the network removed (the re-block race
    /// fix). The caller has already run [`check`](Registry::check).
    pub fn add_block(&mut self, req: &NewBlock, now: Time, changes: &mut Vec<Change>) -> Added {
        // An IPv4-mapped network is the IPv4 one.
        let canonical;
        let req = match crate::addr::canonical_net(req.cidr) {
            c if c == req.cidr => req,
            c => {
                canonical = NewBlock {
                    cidr: c,
                    cidr_text: c.to_string(),
                    ..req.clone()
                };
                &canonical
            }
        };
        self.advance(now);
        let now = self.now;
        let mut unblock_at = match req.until {
            Some(u) => Some(u),
            None => (req.seconds != 0).then(|| now + Interval::from_secs(req.seconds)),
        };
        if let Some(dup) = self.expected_for(&req.cidr) {
            let id = dup.id;
            let later = match (unblock_at, dup.unblock_at) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some(new), Some(old)) => new > old,
            };
            if req.extend && later {
                self.modify_block(id, |b, entries, eids| {
                    b.unblock_at = unblock_at;
                    for e in eids {
                        entries[idx(*e)].0.unblock_at = unblock_at;
                    }
                });
                changes.push(Change::Block(self.blocks[idx(id)].block.clone()));
                for e in self.entries_of(id).cloned().collect::<Vec<_>>() {
                    changes.push(Change::Entry(e));
                }
            }
            return Added { id, created: false };
        }
        if req.autoscale && req.until.is_none() && req.seconds != 0 {
            let secs = self
                .autoscale(&req.cidr, req.seconds as f64)
                .min(crate::bhr::duration::MAX_SECONDS as f64);
            unblock_at = Some(now + Interval::from_micros((secs * 1e6).round() as i64));
        }
        // The re-block race fix: a manager that has not yet processed the unblock of an
        // earlier block for this network must not remove the new one.
        let earlier: Vec<u64> = self.by_cidr.get(&req.cidr).cloned().unwrap_or_default();
        for bid in earlier {
            let active: Vec<u64> = self
                .entries_of(bid)
                .filter(|e| e.removed.is_none())
                .map(|e| e.id)
                .collect();
            if active.is_empty() {
                continue;
            }
            self.modify_block(bid, |_, entries, _| {
                for e in &active {
                    entries[idx(*e)].0.removed = Some(now);
                }
            });
            for e in active {
                changes.push(Change::Entry(self.entries[idx(e)].0.clone()));
            }
        }
        let id = self.blocks.len() as u64 + 1;
        let source = self.intern(&req.source);
        // Creation times are unique and increase with the id (a batch made in one instant
        // is spread over microseconds), so `list.csv?since=` readers that skip the row they
        // saw last never see one twice.
        let added = match self.blocks.last() {
            Some(last) if last.block.added >= now => last.block.added + Interval::from_micros(1),
            _ => now,
        };
        let block = Block {
            id,
            cidr: req.cidr,
            who: req.who,
            source,
            why: self.intern(&req.why),
            added,
            unblock_at,
            skip_whitelist: req.skip_whitelist,
            forced_unblock: false,
            unblock_why: self.intern(""),
            unblock_who: None,
        };
        self.insert_block(block.clone());
        changes.push(Change::Block(block));
        Added { id, created: true }
    }

    /// BHR's `unblock_now` (§5.2): ends the newest expected block for exactly `cidr` at
    /// once, with its entries. Returns false if none is expected.
    pub fn unblock_now(
        &mut self,
        cidr: &IpNet,
        who: UserId,
        why: &str,
        now: Time,
        changes: &mut Vec<Change>,
    ) -> bool {
        self.advance(now);
        let now = self.now;
        let cidr = crate::addr::canonical_net(*cidr);
        let Some(id) = self.expected_for(&cidr).map(|b| b.id) else {
            return false;
        };
        let why = self.intern(why);
        self.modify_block(id, |b, entries, eids| {
            b.forced_unblock = true;
            b.unblock_who = Some(who);
            b.unblock_why = why;
            b.unblock_at = Some(now);
            for e in eids {
                entries[idx(*e)].0.unblock_at = Some(now);
            }
        });
        changes.push(Change::Block(self.blocks[idx(id)].block.clone()));
        for e in self.entries_of(id).cloned().collect::<Vec<_>>() {
            changes.push(Change::Entry(e));
        }
        true
    }

    /// Marks blocks as put in place by `ident` (`set_blocked_multi`). Ids that do not exist
    /// are returned as an error and nothing changes. A pair that already has an entry is
    /// left as it is.
    pub fn set_blocked(
        &mut self,
        ident: &str,
        ids: &[u64],
        now: Time,
        changes: &mut Vec<Change>,
    ) -> Result<(), u64> {
        self.advance(now);
        if let Some(bad) = ids.iter().find(|id| self.block(**id).is_none()) {
            return Err(*bad);
        }
        let ident = self.intern(ident);
        for &bid in ids {
            if self.entry_of.contains_key(&(bid, ident.clone())) {
                continue;
            }
            let e = Entry {
                id: self.entries.len() as u64 + 1,
                block: bid,
                ident: ident.clone(),
                added: self.now,
                removed: None,
                unblock_at: self.blocks[idx(bid)].block.unblock_at,
            };
            changes.push(Change::Entry(e.clone()));
            self.insert_entry(e);
        }
        Ok(())
    }

    /// Marks entries as removed (`set_unblocked_multi`); unknown ids are ignored, and an
    /// entry already removed gets the new time.
    pub fn set_unblocked(&mut self, ids: &[u64], now: Time, changes: &mut Vec<Change>) {
        self.advance(now);
        let now = self.now;
        for &eid in ids {
            let Some(e) = self.entry(eid) else { continue };
            let bid = e.block;
            self.detach_block(bid);
            self.detach_entry(eid);
            self.entries[idx(eid)].0.removed = Some(now);
            self.attach_entry(eid);
            self.attach_block(bid);
            changes.push(Change::Entry(self.entries[idx(eid)].0.clone()));
        }
    }

    /// Adds a whitelist entry.
    pub fn add_whitelist(
        &mut self,
        cidr: IpNet,
        who: UserId,
        why: &str,
        now: Time,
        changes: &mut Vec<Change>,
    ) -> &WhitelistEntry {
        self.advance(now);
        let w = WhitelistEntry {
            id: self.next_whitelist,
            cidr: crate::addr::canonical_net(cidr),
            who,
            why: Arc::from(why),
            added: self.now,
        };
        self.next_whitelist += 1;
        changes.push(Change::Whitelist(w.clone()));
        self.whitelist.push(w);
        self.whitelist.last().expect("just pushed")
    }

    /// Deletes a whitelist entry; false if there is none with that id.
    pub fn delete_whitelist(&mut self, id: u64, changes: &mut Vec<Change>) -> bool {
        let before = self.whitelist.len();
        self.whitelist.retain(|w| w.id != id);
        let deleted = self.whitelist.len() != before;
        if deleted {
            changes.push(Change::WhitelistDeleted(id));
        }
        deleted
    }

    /// Adds (or replaces) a source-blacklist entry.
    pub fn blacklist_source(
        &mut self,
        source: &str,
        who: UserId,
        why: &str,
        now: Time,
        changes: &mut Vec<Change>,
    ) {
        self.advance(now);
        let id = match self
            .source_blacklist
            .iter()
            .position(|s| *s.source == *source)
        {
            Some(i) => self.source_blacklist.remove(i).id,
            None => {
                self.next_blacklist += 1;
                self.next_blacklist - 1
            }
        };
        let s = SourceBlacklistEntry {
            id,
            source: Arc::from(source),
            who,
            why: Arc::from(why),
            added: self.now,
        };
        changes.push(Change::SourceBlacklist(s.clone()));
        self.source_blacklist.push(s);
    }

    /// Removes a source from the blacklist; false if it was not there.
    pub fn unblacklist_source(&mut self, source: &str, changes: &mut Vec<Change>) -> bool {
        match self
            .source_blacklist
            .iter()
            .position(|s| *s.source == *source)
        {
            Some(i) => {
                let s = self.source_blacklist.remove(i);
                changes.push(Change::SourceBlacklistDeleted(s.id));
                true
            }
            None => false,
        }
    }

    /// Recomputes every counter from scratch and compares: a check for tests.
    #[cfg(test)]
    fn assert_consistent(&self) {
        let mut expected = 0;
        let mut pending = 0;
        let mut current = 0;
        let mut unblock_pending = 0;
        for st in &self.blocks {
            let b = &st.block;
            let exp = self.is_expected(b);
            let active: Vec<&Entry> = st
                .entries
                .iter()
                .map(|e| &self.entries[idx(*e)].0)
                .filter(|e| e.removed.is_none())
                .collect();
            let due = active
                .iter()
                .filter(|e| e.unblock_at.is_some_and(|u| u <= self.now))
                .count();
            assert_eq!(st.expected, exp, "block {}", b.id);
            assert_eq!(st.active as usize, active.len(), "block {}", b.id);
            assert_eq!(st.due as usize, due, "block {}", b.id);
            expected += u64::from(exp);
            pending += u64::from(exp && active.is_empty());
            current += u64::from(!active.is_empty());
            unblock_pending += u64::from(due > 0);
        }
        assert_eq!(
            (
                self.counts.expected,
                self.counts.block_pending,
                self.counts.current,
                self.counts.unblock_pending
            ),
            (expected, pending, current, unblock_pending)
        );
    }
}

#[cfg(test)]
mod tests;
