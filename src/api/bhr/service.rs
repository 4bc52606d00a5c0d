//! The one way the registry changes, and the one way it is read.
//!
//! Every change — an API request, a web page's form, an in-process block manager, the
//! watchlist, the daemon's catch-and-release — goes through [`AppState::apply`]:
//!
//! 1. the cluster's registry lock is held (a [`ClusterGuard`]: in a cluster, taken and
//!    caught up with the other nodes' changes first; outside one, nothing), which `apply`
//!    asks for as an argument so it cannot be forgotten;
//! 2. under the registry mutex, the registry is moved to `now`, the change is made, and its
//!    rows are handed to the store (and to the listener, when the change is to be told)
//!    while the mutex is still held, so commits keep the order of the changes;
//! 3. the caller waits for the receipt before it answers ([`AppState::change`] does all
//!    three for async callers), and only then drops the guard, so no other node reads the
//!    log past a change that is not stored.
//!
//! Reads go through [`AppState::read`], which moves the registry to now first.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

use crate::bhr::model::{Block, UserId};
use crate::bhr::registry::{Change, NewBlock, Refused, Registry};
use crate::store::{self, Write};
use crate::time::Time;

use super::{ApiError, AppState};

/// Answers once a change is durable (or the store failed).
pub type Receipt = tokio::sync::oneshot::Receiver<Result<(), store::Error>>;

/// Told of the rows each change touched, in the order the changes were made, while
/// the registry lock is held: it must not block (send to a channel).
pub type Listener = Box<dyn Fn(&[Change]) + Send + Sync>;

/// Whether the listener (the daemon's catch-and-release) hears of a change: it hears of
/// everything but its own changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tell {
    /// The API's own changes, log scans, the watchlist, the web pages.
    Listener,
    /// Catch-and-release's own blocks and unblocks, and the Zeek bus's rules.
    Nobody,
}

/// The cluster's registry lock while a change is made; released when dropped. Outside a
/// cluster it holds nothing.
pub struct ClusterGuard(Option<store::cluster::Guard>);

impl ClusterGuard {
    /// The guard outside a cluster.
    pub fn none() -> ClusterGuard {
        ClusterGuard(None)
    }

    /// Whether this node is in a cluster (and the guard holds its lock).
    pub fn in_cluster(&self) -> bool {
        self.0.is_some()
    }
}

impl AppState {
    /// Subscribes to the changes made with [`Tell::Listener`] (once; later calls are
    /// ignored).
    pub fn set_listener(&self, l: Listener) {
        let _ = self.listener.set(l);
    }

    /// Whether this node is one of several on one PostgreSQL database.
    pub fn in_cluster(&self) -> bool {
        self.cluster.get().is_some()
    }

    /// Takes the cluster's registry lock and catches up with the other nodes, when this
    /// node is in a cluster.
    ///
    /// # Errors
    /// [`ApiError::Unavailable`] when the database cannot be reached.
    pub async fn lock_cluster(&self) -> Result<ClusterGuard, ApiError> {
        let Some((c, _)) = self.cluster.get() else {
            return Ok(ClusterGuard(None));
        };
        let (guard, rows) = c.lock(self.cluster_seq()).await.map_err(|e| {
            tracing::warn!(error = %e, "Cluster: cannot take the registry lock.");
            ApiError::Unavailable
        })?;
        self.catch_up(rows);
        Ok(ClusterGuard(Some(guard)))
    }

    /// [`lock_cluster`](AppState::lock_cluster) from a thread outside the runtime (the
    /// daemon's core, once per step, before it calls the engine).
    ///
    /// # Errors
    /// [`ApiError::Unavailable`].
    pub fn lock_cluster_blocking(&self) -> Result<ClusterGuard, ApiError> {
        match self.cluster_rt.get() {
            None => Ok(ClusterGuard(None)),
            Some(rt) => rt.block_on(self.lock_cluster()),
        }
    }

    /// Makes a change: under the registry mutex, moved to `now`, `f` changes the registry
    /// and records the rows it touched; they go to the store (and to the listener, per
    /// `tell`) before the mutex is released. Returns `f`'s value and the receipt of the
    /// commit, which the caller awaits before answering and before dropping `held`.
    ///
    /// # Errors
    /// `f`'s error; nothing is stored then.
    pub fn apply<T, E>(
        &self,
        held: &ClusterGuard,
        now: Time,
        tell: Tell,
        f: impl FnOnce(&mut Registry, Time, &mut Vec<Change>) -> Result<T, E>,
    ) -> Result<(T, Receipt), E> {
        let _ = held;
        let mut reg = self.registry();
        reg.advance(now);
        let mut ch = Vec::new();
        let out = f(&mut reg, now, &mut ch)?;
        if tell == Tell::Listener
            && !ch.is_empty()
            && let Some(l) = self.listener.get()
        {
            l(&ch);
        }
        // An empty batch still waits for everything queued before it, so that nothing an
        // answer reveals is less durable than the answer.
        let rx = self.store.submit(ch.into_iter().map(Write::Bhr).collect());
        Ok((out, rx))
    }

    /// Makes a change from async code, at the API's clock: takes the cluster guard,
    /// [`apply`](AppState::apply)s `f`, waits until the change is durable, releases the
    /// guard, and wakes the queue readers.
    ///
    /// # Errors
    /// `f`'s error, or [`ApiError::Unavailable`] (the cluster cannot be reached, or the
    /// store failed: the server then stops).
    pub async fn change<T, E: From<ApiError>>(
        &self,
        tell: Tell,
        f: impl FnOnce(&mut Registry, Time, &mut Vec<Change>) -> Result<T, E>,
    ) -> Result<T, E> {
        let guard = self.lock_cluster().await?;
        let mut added = false;
        let (out, rx) = self.apply(&guard, self.now(), tell, |reg, now, ch| {
            let out = f(reg, now, ch);
            added = ch.iter().any(|c| matches!(c, Change::Block(_)));
            out
        })?;
        self.durable(rx).await?;
        drop(guard);
        if added {
            self.wake_queues();
        }
        Ok(out)
    }

    /// Waits for a change to be durable. A failed commit marks the server failed (it
    /// stops, to be restarted from what is durable) and answers 503.
    ///
    /// # Errors
    /// [`ApiError::Unavailable`].
    pub async fn durable(&self, rx: Receipt) -> Result<(), ApiError> {
        let r = rx.await.unwrap_or(Err(store::Error::Closed));
        r.map_err(|e| {
            self.fail(&e.to_string());
            ApiError::Unavailable
        })
    }

    /// Wakes the long polls of `queue/<ident>`: blocks were added.
    pub(crate) fn wake_queues(&self) {
        self.new_blocks.notify_waiters();
    }

    /// Reads the registry, moved to now first, under its lock (keep `f` short: every
    /// request waits for it).
    pub fn read<T>(&self, f: impl FnOnce(&Registry) -> T) -> T {
        f(self.registry().at(self.now()))
    }

    /// Waits up to `wait` for `f` to find something in the registry (it is asked again
    /// each time blocks are added); `None` when time is up or the server is stopping.
    pub(crate) async fn wait_for<T>(
        &self,
        wait: Duration,
        mut f: impl FnMut(&Registry) -> Option<T>,
    ) -> Option<T> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.new_blocks.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(found) = self.read(&mut f) {
                return Some(found);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(deadline) => {}
                () = self.stopping() => return None,
            }
        }
    }

    // ----- the changes other parts of catchd make -----

    /// Checks and adds a block as `POST /bhr/api/block` does (whitelist, never-block,
    /// prefix length, source blacklist; an expected block for the network is returned as
    /// it is), under `held`. Returns the block id, whether it is new, and the receipt.
    ///
    /// # Errors
    /// The registry's refusal (BHR's `non_field_errors` text).
    pub fn add_block(
        &self,
        held: &ClusterGuard,
        req: &NewBlock,
        now: Time,
        tell: Tell,
    ) -> Result<(u64, bool, Receipt), Refused> {
        let names = self.users().names();
        let ((id, created), rx) = self.apply(held, now, tell, |reg, now, ch| {
            reg.check(req, |id| {
                names.get(&id).cloned().unwrap_or_else(|| format!("#{id}"))
            })?;
            let added = reg.add_block(req, now, ch);
            Ok::<_, Refused>((added.id, added.created))
        })?;
        Ok((id, created, rx))
    }

    /// Ends block `id` at once as `unblock_now` does, under `held`, if it is the expected
    /// block for its network. Returns its network and the receipt, or `None` if there was
    /// nothing to end (already ended, or replaced).
    pub fn end_block(
        &self,
        held: &ClusterGuard,
        id: u64,
        who: UserId,
        why: &str,
        now: Time,
        tell: Tell,
    ) -> Option<(IpNet, Receipt)> {
        let ended = self.apply(held, now, tell, |reg, now, ch| {
            let cidr = reg.block(id).ok_or(())?.cidr;
            if reg.expected_for(&cidr).map(|b| b.id) != Some(id) {
                return Err(());
            }
            reg.unblock_now(&cidr, who, why, now, ch);
            Ok(cidr)
        });
        let (cidr, rx) = ended.ok()?;
        if tell == Tell::Listener {
            tracing::info!("UNBLOCK_NOW ID={id} IP={cidr}");
        }
        Some((cidr, rx))
    }

    /// [`add_block`](AppState::add_block) from async code, told to the listener, returning
    /// once durable (the web pages, the watchlist).
    ///
    /// # Errors
    /// The outer error: the store or the cluster is unavailable; the inner one: the
    /// registry's refusal.
    pub async fn add_block_durably(
        &self,
        req: &NewBlock,
    ) -> Result<Result<(u64, bool), Refused>, ApiError> {
        let guard = self.lock_cluster().await?;
        let out = match self.add_block(&guard, req, self.now(), Tell::Listener) {
            Ok((id, created, rx)) => self.durable(rx).await.map(|()| Ok((id, created))),
            Err(refused) => Ok(Err(refused)),
        };
        drop(guard);
        self.wake_queues();
        out
    }

    /// [`end_block`](AppState::end_block) from async code, told to the listener, returning
    /// once durable: the network, or `None` if there was nothing to end.
    ///
    /// # Errors
    /// The store or the cluster is unavailable.
    pub async fn end_block_durably(
        &self,
        id: u64,
        who: UserId,
        why: &str,
    ) -> Result<Option<IpNet>, ApiError> {
        let guard = self.lock_cluster().await?;
        match self.end_block(&guard, id, who, why, self.now(), Tell::Listener) {
            Some((cidr, rx)) => self.durable(rx).await.map(|()| Some(cidr)),
            None => Ok(None),
        }
    }

    // ----- in-process block managers -----

    /// An in-process block manager's `queue/<ident>`: the blocks `ident` has not put in
    /// place, added at or after `since`, waiting up to `wait` for one to appear (or until
    /// the server stops).
    pub async fn manager_queue(&self, ident: &str, since: Time, wait: Duration) -> Vec<Block> {
        self.wait_for(wait, |reg| {
            let rows = reg.queue(ident, since);
            (!rows.is_empty()).then(|| rows.into_iter().cloned().collect())
        })
        .await
        .unwrap_or_default()
    }

    /// An in-process `set_blocked_multi/<ident>`; returns once durable. Ids that vanished
    /// from the queue are skipped, not an error.
    ///
    /// # Errors
    /// The store or the cluster failed.
    pub async fn manager_set_blocked(&self, ident: &str, ids: &[u64]) -> Result<(), ApiError> {
        self.change(Tell::Listener, |reg, now, ch| {
            let known: Vec<u64> = ids
                .iter()
                .copied()
                .filter(|id| reg.block(*id).is_some())
                .collect();
            let _ = reg.set_blocked(ident, &known, now, ch);
            log_set_blocked(reg, ident, &known);
            Ok::<_, ApiError>(())
        })
        .await
    }

    /// An in-process `unblock_queue/<ident>`: entry ids and their networks.
    pub fn manager_unblock_queue(&self, ident: &str) -> Vec<(u64, IpNet)> {
        self.read(|reg| {
            reg.unblock_queue(ident)
                .into_iter()
                .filter_map(|e| reg.block(e.block).map(|b| (e.id, b.cidr)))
                .collect()
        })
    }

    /// An in-process `set_unblocked_multi`; returns once durable.
    ///
    /// # Errors
    /// The store or the cluster failed.
    pub async fn manager_set_unblocked(&self, ids: &[u64]) -> Result<(), ApiError> {
        self.change(Tell::Listener, |reg, now, ch| {
            reg.set_unblocked(ids, now, ch);
            log_set_unblocked(ch);
            Ok::<_, ApiError>(())
        })
        .await
    }

    // ----- reads for the rest of catchd -----

    /// The store.
    pub fn store(&self) -> &store::Store {
        &self.store
    }

    /// The registry's counts now (the numbers of `/bhr/api/stats`).
    pub fn stats_snapshot(&self) -> crate::bhr::registry::Stats {
        self.read(|reg| reg.stats().clone())
    }

    /// A block.
    pub fn block(&self, id: u64) -> Option<Block> {
        self.read(|reg| reg.block(id).cloned())
    }

    /// The expected block for exactly this address (`/32` or `/128`).
    pub fn expected_host_block(&self, a: IpAddr) -> Option<Block> {
        self.read(|reg| reg.expected_for(&IpNet::from(a)).cloned())
    }

    /// The idents that have block `id` in place (entries not removed).
    pub fn idents_in_place(&self, id: u64) -> Vec<String> {
        self.read(|reg| {
            reg.entries_of(id)
                .filter(|e| e.removed.is_none())
                .map(|e| e.ident.to_string())
                .collect()
        })
    }

    /// Every expected block (what `list.csv` lists).
    pub fn expected_blocks(&self) -> Vec<Block> {
        self.read(|reg| reg.expected().cloned().collect())
    }

    /// Waits until everything submitted so far is durable (blocking; not for async code).
    ///
    /// # Errors
    /// The store's error.
    pub fn sync_blocking(&self) -> Result<(), store::Error> {
        self.store.commit_blocking(Vec::new())
    }
}

/// The log line BHR writes for each id `set_blocked` recorded.
pub(crate) fn log_set_blocked(reg: &Registry, ident: &str, ids: &[u64]) {
    for id in ids {
        if let Some(b) = reg.block(*id) {
            tracing::info!("SET_BLOCKED ID={id} IP={} IDENT={ident}", b.cidr);
        }
    }
}

/// The log line BHR writes for each entry `set_unblocked` ended.
pub(crate) fn log_set_unblocked(changes: &[Change]) {
    for c in changes {
        if let Change::Entry(e) = c {
            tracing::info!("SET_UNBLOCKED ID={}", e.id);
        }
    }
}
