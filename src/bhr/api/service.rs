//! What the rest of catchd (the daemon's catch-and-release) does with the registry without
//! going through HTTP: create and end host blocks, read blocks and entries, and hear about
//! every change the API makes. Same lock, same store, same durability as the handlers.

use std::net::IpAddr;
use std::time::Duration;

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
        self.add_block_with(req, now, false)
    }

    /// [`add_block_at`](AppState::add_block_at), telling the listener as the handlers do
    /// (for blocks made outside catch-and-release: log scans, the watchlist).
    ///
    /// # Errors
    /// The registry's refusal.
    pub fn add_block_published(
        &self,
        req: &NewBlock,
        now: Time,
    ) -> Result<(u64, bool, Receipt), Refused> {
        self.add_block_with(req, now, true)
    }

    /// [`add_block_published`](AppState::add_block_published) from async code, taking
    /// the cluster's registry lock when this node is in one, and returning once durable.
    ///
    /// # Errors
    /// The outer error: the store or the cluster is unavailable; the inner one: the
    /// registry's refusal.
    pub async fn add_block_coordinated(
        &self,
        req: &NewBlock,
        now: Time,
    ) -> Result<Result<(u64, bool), Refused>, super::ApiError> {
        let guard = self.cluster_lock().await?;
        let out = match self.add_block_unlocked(req, now, true) {
            Ok((id, created, rx)) => self.durable(rx).await.map(|()| Ok((id, created))),
            Err(refused) => Ok(Err(refused)),
        };
        if let Some(g) = guard {
            g.release().await;
        }
        out
    }

    fn add_block_with(
        &self,
        req: &NewBlock,
        now: Time,
        publish: bool,
    ) -> Result<(u64, bool, Receipt), Refused> {
        let (r, rx) = self
            .coordinated_blocking(|| match self.add_block_unlocked(req, now, publish) {
                Ok((id, created, rx)) => (Ok((id, created)), Some(rx)),
                Err(e) => (Err(e), None),
            })
            .map_err(|_| Refused("the cluster's database is unreachable".into()))?;
        let (id, created) = r?;
        Ok((id, created, rx.expect("a receipt with every block")))
    }

    fn add_block_unlocked(
        &self,
        req: &NewBlock,
        now: Time,
        publish: bool,
    ) -> Result<(u64, bool, Receipt), Refused> {
        let names = self.users().names();
        let (id, created, rx) = {
            let mut reg = self.registry();
            reg.advance(now);
            reg.check(req, |id| {
                names.get(&id).cloned().unwrap_or_else(|| format!("#{id}"))
            })?;
            let mut ch = Vec::new();
            let added = reg.add_block(req, now, &mut ch);
            if publish {
                self.publish(&ch);
            }
            (added.id, added.created, self.submit_quietly(ch))
        };
        self.new_blocks.notify_waiters();
        Ok((id, created, rx))
    }

    /// Ends block `id` at once as `unblock_now` does, if it is the expected block for its
    /// network. The listener is not told. Returns the receipt, or `None` if there was
    /// nothing to end.
    pub fn end_block_at(&self, id: u64, who: UserId, why: &str, now: Time) -> Option<Receipt> {
        self.coordinated_blocking(|| {
            let rx = self.end_block_unlocked(id, who, why, now, false);
            ((), rx)
        })
        .ok()
        .and_then(|((), rx)| rx)
    }

    /// Ends block `id` as `unblock_now` does (telling the listener, as the handlers do),
    /// taking the cluster's registry lock when in one, and returns once durable: the
    /// network, or `None` if the block was not the expected one for its network (already
    /// ended, or replaced).
    ///
    /// # Errors
    /// The store or the cluster is unavailable.
    pub async fn end_block_coordinated(
        &self,
        id: u64,
        who: UserId,
        why: &str,
        now: Time,
    ) -> Result<Option<IpNet>, super::ApiError> {
        let guard = self.cluster_lock().await?;
        let cidr = self.read(|reg| reg.block(id).map(|b| b.cidr));
        let out = match self.end_block_unlocked(id, who, why, now, true) {
            Some(rx) => self.durable(rx).await.map(|()| cidr),
            None => Ok(None),
        };
        if let Some(g) = guard {
            g.release().await;
        }
        out
    }

    fn end_block_unlocked(
        &self,
        id: u64,
        who: UserId,
        why: &str,
        now: Time,
        publish: bool,
    ) -> Option<Receipt> {
        let mut reg = self.registry();
        reg.advance(now);
        let cidr = reg.block(id)?.cidr;
        if reg.expected_for(&cidr).map(|b| b.id) != Some(id) {
            return None;
        }
        let mut ch = Vec::new();
        reg.unblock_now(&cidr, who, why, now, &mut ch);
        if publish {
            self.publish(&ch);
            tracing::info!("UNBLOCK_NOW ID={id} IP={cidr}");
        }
        Some(self.submit_quietly(ch))
    }

    /// Waits for a change to be durable. A failed commit marks the server failed (it
    /// stops) and answers 503.
    ///
    /// # Errors
    /// [`ApiError::Unavailable`](super::ApiError::Unavailable).
    pub async fn durable(&self, rx: Receipt) -> Result<(), super::ApiError> {
        let r = match rx.await {
            Ok(r) => r,
            Err(_) => Err(store::Error::Closed),
        };
        r.map_err(|e| {
            self.fail(&e.to_string());
            super::ApiError::Unavailable
        })
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

    /// The clock the API reads.
    pub fn clock_now(&self) -> Time {
        self.now()
    }

    /// Hands changes to the store and the listener, under the registry lock the caller
    /// holds, and returns the receipt.
    fn submit_told(&self, changes: Vec<Change>) -> Receipt {
        self.publish(&changes);
        self.submit_quietly(changes)
    }

    /// Waits for a receipt; a failed store stops the server (as the handlers do).
    async fn settle(&self, rx: Receipt) -> Result<(), store::Error> {
        let r = rx.await.unwrap_or(Err(store::Error::Closed));
        if let Err(e) = &r {
            self.fail(&e.to_string());
        }
        r
    }

    /// An in-process block manager's `queue/<ident>`: the blocks `ident` has not put in
    /// place, added at or after `since`, waiting up to `wait` for one to appear (or until
    /// the server stops).
    pub async fn manager_queue(&self, ident: &str, since: Time, wait: Duration) -> Vec<Block> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.new_blocks.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let rows: Vec<Block> = {
                let mut reg = self.registry();
                reg.advance(self.now());
                reg.queue(ident, since).into_iter().cloned().collect()
            };
            if !rows.is_empty() || tokio::time::Instant::now() >= deadline {
                return rows;
            }
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(deadline) => {}
                () = self.stopping() => return Vec::new(),
            }
        }
    }

    /// An in-process `set_blocked_multi/<ident>`; returns once durable.
    ///
    /// # Errors
    /// The store failed (the server then stops).
    pub async fn manager_set_blocked(&self, ident: &str, ids: &[u64]) -> Result<(), store::Error> {
        let guard = self
            .cluster_lock()
            .await
            .map_err(|_| store::Error::Db("the cluster's database is unreachable".into()))?;
        let rx = {
            let mut reg = self.registry();
            let mut ch = Vec::new();
            // Ids come from the queue; one that vanished is skipped, not an error.
            let known: Vec<u64> = ids
                .iter()
                .copied()
                .filter(|id| reg.block(*id).is_some())
                .collect();
            let _ = reg.set_blocked(ident, &known, self.now(), &mut ch);
            for id in &known {
                if let Some(b) = reg.block(*id) {
                    tracing::info!("SET_BLOCKED ID={id} IP={} IDENT={ident}", b.cidr);
                }
            }
            self.submit_told(ch)
        };
        let r = self.settle(rx).await;
        if let Some(g) = guard {
            g.release().await;
        }
        r
    }

    /// An in-process `unblock_queue/<ident>`: entry ids and their networks.
    pub fn manager_unblock_queue(&self, ident: &str) -> Vec<(u64, IpNet)> {
        let mut reg = self.registry();
        reg.advance(self.now());
        reg.unblock_queue(ident)
            .into_iter()
            .filter_map(|e| reg.block(e.block).map(|b| (e.id, b.cidr)))
            .collect()
    }

    /// An in-process `set_unblocked_multi`; returns once durable.
    ///
    /// # Errors
    /// The store failed (the server then stops).
    pub async fn manager_set_unblocked(&self, ids: &[u64]) -> Result<(), store::Error> {
        let guard = self
            .cluster_lock()
            .await
            .map_err(|_| store::Error::Db("the cluster's database is unreachable".into()))?;
        let rx = {
            let mut reg = self.registry();
            let mut ch = Vec::new();
            reg.set_unblocked(ids, self.now(), &mut ch);
            for c in &ch {
                if let Change::Entry(e) = c {
                    tracing::info!("SET_UNBLOCKED ID={}", e.id);
                }
            }
            self.submit_told(ch)
        };
        let r = self.settle(rx).await;
        if let Some(g) = guard {
            g.release().await;
        }
        r
    }

    /// Every expected block (what `list.csv` lists).
    pub fn expected_blocks(&self) -> Vec<Block> {
        let mut reg = self.registry();
        reg.advance(self.now());
        reg.expected().cloned().collect()
    }

    /// Waits until everything submitted so far is durable (blocking; not for async code).
    ///
    /// # Errors
    /// The store's error.
    pub fn sync_blocking(&self) -> Result<(), store::Error> {
        self.store.commit_blocking(Vec::new())
    }
}
