//! What the rest of catchd (the daemon's catch-and-release) does with the registry without
//! going through HTTP: create and end host blocks, read blocks and entries, and hear about
//! every change the API makes. Same lock, same store, same durability as the handlers.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::bhr::model::{Block, UserId};
use crate::bhr::registry::{Change, NewBlock, Refused};
use crate::store::{self, Write};
use crate::time::Time;

use super::AppState;

/// Answers once a change is durable (or the store failed).
pub type Receipt = tokio::sync::oneshot::Receiver<Result<(), store::Error>>;

/// Told of the rows each API change touched, in the order the changes were made, while
/// the registry lock is held: it must not block (send to a channel).
pub type Listener = Box<dyn Fn(&[Change]) + Send + Sync>;

impl AppState {
    /// Subscribes to the changes the API makes (once; later calls are ignored).
    pub fn set_listener(&self, l: Listener) {
        let _ = self.listener.set(l);
    }

    /// Tells the listener, if any.
    pub(super) fn publish(&self, changes: &[Change]) {
        if let Some(l) = self.listener.get()
            && !changes.is_empty()
        {
            l(changes);
        }
    }

    fn submit_quietly(&self, changes: Vec<Change>) -> Receipt {
        self.store
            .submit(changes.into_iter().map(Write::Bhr).collect())
    }

    /// Checks and adds a block as `POST /bhr/api/block` does (whitelist, prefix length,
    /// source blacklist; an expected block for the network is returned as it is), at
    /// `now`. The listener is not told. Returns the block id, whether it is new, and the
    /// receipt of its commit.
    ///
    /// # Errors
    /// The registry's refusal (BHR's `non_field_errors` text).
    pub fn add_block_at(&self, req: &NewBlock, now: Time) -> Result<(u64, bool, Receipt), Refused> {
        let names = self.users().names();
        let (id, created, rx) = {
            let mut reg = self.registry();
            reg.advance(now);
            reg.check(req, |id| {
                names.get(&id).cloned().unwrap_or_else(|| format!("#{id}"))
            })?;
            let mut ch = Vec::new();
            let added = reg.add_block(req, now, &mut ch);
            (added.id, added.created, self.submit_quietly(ch))
        };
        self.new_blocks.notify_waiters();
        Ok((id, created, rx))
    }

    /// Ends block `id` at once as `unblock_now` does, if it is the expected block for its
    /// network. The listener is not told. Returns the receipt, or `None` if there was
    /// nothing to end.
    pub fn end_block_at(&self, id: u64, who: UserId, why: &str, now: Time) -> Option<Receipt> {
        let mut reg = self.registry();
        reg.advance(now);
        let cidr = reg.block(id)?.cidr;
        if reg.expected_for(&cidr).map(|b| b.id) != Some(id) {
            return None;
        }
        let mut ch = Vec::new();
        reg.unblock_now(&cidr, who, why, now, &mut ch);
        Some(self.submit_quietly(ch))
    }

    /// The store.
    pub fn store(&self) -> &store::Store {
        &self.store
    }

    /// The registry's counts now (the numbers of `/bhr/api/stats`).
    pub fn stats_snapshot(&self) -> crate::bhr::registry::Stats {
        let mut reg = self.registry();
        reg.advance(self.now());
        reg.stats().clone()
    }

    /// A block.
    pub fn block(&self, id: u64) -> Option<Block> {
        self.registry().block(id).cloned()
    }

    /// The expected block for exactly this address (`/32` or `/128`), at `now`.
    pub fn expected_host_block(&self, a: IpAddr, now: Time) -> Option<Block> {
        let mut reg = self.registry();
        reg.advance(now);
        reg.expected_for(&IpNet::from(a)).cloned()
    }

    /// The idents that have block `id` in place (entries not removed).
    pub fn idents_in_place(&self, id: u64) -> Vec<String> {
        self.registry()
            .entries_of(id)
            .filter(|e| e.removed.is_none())
            .map(|e| e.ident.to_string())
            .collect()
    }

    /// Waits until everything submitted so far is durable (blocking; not for async code).
    ///
    /// # Errors
    /// The store's error.
    pub fn sync_blocking(&self) -> Result<(), store::Error> {
        self.store.commit_blocking(Vec::new())
    }
}
