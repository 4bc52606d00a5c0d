//! Block managers: pull work from a BHR API and apply it with an [`crate::enforce::Enforcer`], as
//! BHR's `BlockManager` does, but without ever exiting on a transient error.
//!
//! One manager serves one ident. Its loop:
//!
//! 1. on start (and every `reconcile_interval`), **reconcile**: read every expected block,
//!    list what the backend holds, install what is missing (or whose end was extended
//!    past the backend's timeout) and remove what is no longer expected;
//! 2. every `unblock_interval`, drain `unblock_queue/<ident>`, remove, then
//!    `set_unblocked_multi`;
//! 3. long-poll `queue/<ident>` (`added_since` rewound 5 minutes behind the last row, as
//!    the original does), apply the batch, then `set_blocked_multi` for what was applied.
//!
//! A batch the backend refuses is retried one rule at a time, so one bad rule does not hold
//! up the others; nothing that failed is acknowledged. Errors are logged and counted and
//! the loop backs off with the original's `Delayer` (0, 1, 2, 4 … 60 s).
//!
//! The work comes from a [`Source`]: [`remote::Remote`] over HTTP (catchd's API or the
//! original BHR's), or [`local::Local`] inside `catchd run` (no HTTP hop).

pub mod local;
pub mod remote;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ipnet::IpNet;

use crate::enforce::{Enforcer, Rule};
use crate::time::{Interval, Time};

/// A row of `queue/<ident>`, with the block's end and reason.
#[derive(Clone, Debug)]
pub struct QueueRow {
    /// The block id (what `set_blocked_multi` takes).
    pub id: u64,
    /// When the block was added.
    pub added: Time,
    /// What to put in place.
    pub rule: Rule,
}

/// A row of `unblock_queue/<ident>`.
#[derive(Clone, Copy, Debug)]
pub struct UnblockRow {
    /// The entry id (what `set_unblocked_multi` takes).
    pub id: u64,
    /// What to remove.
    pub cidr: IpNet,
}

/// Why the source could not answer.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The request did not get an answer (connection, timeout).
    #[error("{0}")]
    Transport(String),
    /// The server answered with an error status.
    #[error("{what}: HTTP {status}: {body}")]
    Status {
        /// The request.
        what: String,
        /// The status code.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// The answer could not be understood.
    #[error("{what}: unexpected answer: {detail}")]
    Answer {
        /// The request.
        what: String,
        /// What was wrong.
        detail: String,
    },
    /// The store failed (in-process source).
    #[error("store: {0}")]
    Store(String),
}

/// Where a manager gets its work.
pub trait Source: Send + Sync {
    /// The ident whose queues this is.
    fn ident(&self) -> &str;
    /// Now, on the source's clock.
    fn now(&self) -> Time;
    /// `queue/<ident>?timeout=..&added_since=..` with each block's end and reason.
    fn queue(
        &self,
        wait: Duration,
        since: Time,
    ) -> impl Future<Output = Result<Vec<QueueRow>, SourceError>> + Send;
    /// `set_blocked_multi/<ident>`.
    fn set_blocked(&self, ids: &[u64]) -> impl Future<Output = Result<(), SourceError>> + Send;
    /// `unblock_queue/<ident>`.
    fn unblock_queue(&self) -> impl Future<Output = Result<Vec<UnblockRow>, SourceError>> + Send;
    /// `set_unblocked_multi`.
    fn set_unblocked(&self, ids: &[u64]) -> impl Future<Output = Result<(), SourceError>> + Send;
    /// Every expected block (`list.csv`).
    fn expected(&self) -> impl Future<Output = Result<Vec<Rule>, SourceError>> + Send;
    /// Rows of the source's answers that could not be read and were skipped, so far.
    fn bad_rows(&self) -> u64 {
        0
    }
}

/// How a manager runs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The long poll of `queue/<ident>` (the original: 32 s).
    pub poll_timeout: Duration,
    /// How often the unblock queue is drained (the original: 30 s).
    pub unblock_interval: Duration,
    /// How often the backend is reconciled with the expected blocks (0: only on start).
    pub reconcile_interval: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            poll_timeout: Duration::from_secs(32),
            unblock_interval: Duration::from_secs(30),
            reconcile_interval: Duration::from_secs(300),
        }
    }
}

/// What a manager has done, for logs and `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Rules put in place from the queue.
    pub blocked: AtomicU64,
    /// Rules removed from the unblock queue.
    pub unblocked: AtomicU64,
    /// Rules added by reconciling.
    pub reconcile_added: AtomicU64,
    /// Rules removed by reconciling.
    pub reconcile_removed: AtomicU64,
    /// Completed reconciliations.
    pub reconciles: AtomicU64,
    /// Batches the backend refused (each then retried rule by rule).
    pub batch_failures: AtomicU64,
    /// Rules the backend could not apply (not acknowledged; retried).
    pub rule_failures: AtomicU64,
    /// Requests to the source that failed.
    pub source_errors: AtomicU64,
    /// Rows of the source's answers skipped because they could not be read.
    pub bad_rows: AtomicU64,
    /// Unix time of the last failure of any kind (0: none).
    pub last_failure: AtomicU64,
}

impl Counters {
    fn add(c: &AtomicU64, n: usize) {
        c.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn failed(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.last_failure.store(now, Ordering::Relaxed);
    }
}

/// The counters of the managers `(ident, backend, counters)`, for `/metrics`.
pub fn collect_metrics(
    managers: &[(String, &'static str, Arc<Counters>)],
    m: &mut crate::telemetry::Metrics,
) {
    use crate::telemetry::Kind;
    type Pick = fn(&Counters) -> &AtomicU64;
    let families: [(&str, Kind, &str, Pick); 10] = [
        (
            "blocked_total",
            Kind::Counter,
            "rules put in place from the block queue",
            |c| &c.blocked,
        ),
        (
            "unblocked_total",
            Kind::Counter,
            "rules removed from the unblock queue",
            |c| &c.unblocked,
        ),
        (
            "reconcile_added_total",
            Kind::Counter,
            "rules added by reconciling",
            |c| &c.reconcile_added,
        ),
        (
            "reconcile_removed_total",
            Kind::Counter,
            "stale rules removed by reconciling",
            |c| &c.reconcile_removed,
        ),
        (
            "reconciles_total",
            Kind::Counter,
            "reconciliations completed",
            |c| &c.reconciles,
        ),
        (
            "batch_failures_total",
            Kind::Counter,
            "batches the backend refused",
            |c| &c.batch_failures,
        ),
        (
            "rule_failures_total",
            Kind::Counter,
            "rules the backend could not apply",
            |c| &c.rule_failures,
        ),
        (
            "source_errors_total",
            Kind::Counter,
            "failed requests to the BHR API",
            |c| &c.source_errors,
        ),
        (
            "bad_rows_total",
            Kind::Counter,
            "rows of the BHR API's answers skipped because they could not be read",
            |c| &c.bad_rows,
        ),
        (
            "last_failure_seconds",
            Kind::Gauge,
            "unix time of the last failure (0: none)",
            |c| &c.last_failure,
        ),
    ];
    for (name, kind, help, pick) in families {
        let mut f = m.of(kind, &format!("catchd_blocker_{name}"), help);
        for (ident, backend, c) in managers {
            f.sample(
                &[("ident", ident), ("backend", backend)],
                crate::telemetry::count(pick(c).load(Ordering::Relaxed)),
            );
        }
    }
}

/// The original's back-off: 0, then 1, 2, 4 … up to 60 seconds; reset by success.
#[derive(Clone, Copy, Debug)]
pub struct Delayer {
    current: Duration,
}

impl Delayer {
    const LOWER: Duration = Duration::from_secs(1);
    const UPPER: Duration = Duration::from_secs(60);

    /// A delayer at 0.
    pub fn new() -> Delayer {
        Delayer {
            current: Duration::ZERO,
        }
    }

    /// The delay to wait now; the next one doubles (from 1 s, capped at 60 s).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.current;
        self.current = if d.is_zero() {
            Self::LOWER
        } else {
            (d * 2).min(Self::UPPER)
        };
        d
    }

    /// Back to 0.
    pub fn reset(&mut self) {
        self.current = Duration::ZERO;
    }
}

impl Default for Delayer {
    fn default() -> Delayer {
        Delayer::new()
    }
}

/// The original's `added_since` before any row was seen.
const START: Time = Time::from_timeval(1_409_529_600, 0);

/// How far `added_since` is rewound behind the last row (commits are not in `added` order).
const REWIND: Interval = Interval::from_secs(300);

/// A backend timeout this much short of a block's end counts as extended and is renewed.
const SLACK: Interval = Interval::from_secs(5);

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("{failed} of {total} rules could not be applied; first error: {first}")]
    Enforcer {
        failed: usize,
        total: usize,
        first: String,
    },
}

/// A block manager.
pub struct Manager<S: Source> {
    source: S,
    backend: Enforcer,
    settings: Settings,
    counters: Arc<Counters>,
    added_since: Time,
    last_unblock: Option<Instant>,
    last_reconcile: Option<Instant>,
    backfilled: bool,
    set_up: bool,
}

impl<S: Source> Manager<S> {
    /// A manager of `source`'s ident applying work with `backend`.
    pub fn new(source: S, backend: Enforcer, settings: Settings) -> Manager<S> {
        Manager {
            source,
            backend,
            settings,
            counters: Arc::new(Counters::default()),
            added_since: START,
            last_unblock: None,
            last_reconcile: None,
            backfilled: false,
            set_up: false,
        }
    }

    /// [`new`](Manager::new), counting into `counters` (a manager started again keeps
    /// its predecessor's counts).
    pub fn with_counters(
        source: S,
        backend: Enforcer,
        settings: Settings,
        counters: Arc<Counters>,
    ) -> Manager<S> {
        Manager {
            counters,
            ..Manager::new(source, backend, settings)
        }
    }

    /// The counters (shared; they keep counting while the manager runs).
    pub fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.counters)
    }

    /// The backend's name.
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// Runs until `stop` turns true. Never returns early on an error.
    pub async fn run(mut self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let ident = self.source.ident().to_string();
        let backend = self.backend.name();
        tracing::info!(%ident, backend, "Block manager started.");
        let mut delayer = Delayer::new();
        while !*stop.borrow() {
            let step = tokio::select! {
                r = self.step() => r,
                _ = stop.changed() => break,
            };
            match step {
                Ok(did) => {
                    delayer.reset();
                    if !did {
                        tokio::select! {
                            () = tokio::time::sleep(Duration::from_millis(100)) => {}
                            _ = stop.changed() => break,
                        }
                    }
                }
                Err(e) => {
                    self.counters.failed();
                    let wait = delayer.next_delay();
                    tracing::warn!(%ident, backend, retry_in = ?wait, "Block manager: {e}");
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        // The backend's peer is back (ExaBGP's bridge): go on at once.
                        () = self.backend.new_session() => delayer.reset(),
                        _ = stop.changed() => break,
                    }
                }
            }
        }
        tracing::info!(%ident, backend, "Block manager stopped.");
    }

    /// One pass: reconcile if due, unblock if due, then one (long-polled) block batch.
    /// Returns whether it did any work.
    async fn step(&mut self) -> Result<bool, Failure> {
        if !self.set_up {
            self.backend.setup().await.map_err(|e| Failure::Enforcer {
                failed: 0,
                total: 0,
                first: format!("setting up: {e}"),
            })?;
            self.set_up = true;
        }
        let due = |last: Option<Instant>, every: Duration| {
            last.is_none_or(|t| !every.is_zero() && t.elapsed() >= every)
        };
        // A new session with the backend's peer (a restarted ExaBGP holds nothing):
        // reconcile now, before the queues.
        if self.backend.take_new_session() {
            self.last_reconcile = None;
        }
        if due(self.last_reconcile, self.settings.reconcile_interval) {
            match self.reconcile().await {
                Ok(()) => {}
                // Some blocks were refused (logged and counted rule by rule): the queues
                // go on, and retry those blocks from there. Only a reconciliation that
                // could not start (source or listing failed) is retried at once.
                Err(Failure::Enforcer {
                    failed,
                    total,
                    first,
                }) if failed > 0 => {
                    tracing::warn!(
                        ident = self.source.ident(),
                        backend = self.backend.name(),
                        "Reconciling: {failed} of {total} rules could not be applied; first error: {first}"
                    );
                }
                Err(e) => return Err(e),
            }
            self.last_reconcile = Some(Instant::now());
        }
        let mut did = false;
        if due(self.last_unblock, self.settings.unblock_interval) {
            did |= self.do_unblock().await?;
            self.last_unblock = Some(Instant::now());
        }
        did |= self.do_block().await?;
        Ok(did)
    }

    /// Applies a batch; if the backend refuses it, rule by rule. Returns which rules (by
    /// index into `add`, then into `remove`) were applied, and the failure if any.
    async fn apply(
        &mut self,
        add: &[Rule],
        remove: &[IpNet],
    ) -> (Vec<bool>, Vec<bool>, Option<Failure>) {
        let now = self.source.now();
        match self.backend.apply(add, remove, now).await {
            Ok(()) => return (vec![true; add.len()], vec![true; remove.len()], None),
            Err(e) => {
                Counters::add(&self.counters.batch_failures, 1);
                tracing::warn!(
                    ident = self.source.ident(),
                    backend = self.backend.name(),
                    adds = add.len(),
                    removes = remove.len(),
                    "Batch refused, retrying rule by rule: {e}"
                );
            }
        }
        let mut first = None;
        let mut failed = 0;
        let mut ok_add = Vec::with_capacity(add.len());
        for r in add {
            let now = self.source.now();
            let res = self.backend.apply(std::slice::from_ref(r), &[], now).await;
            if let Err(e) = &res {
                failed += 1;
                tracing::warn!(cidr = %r.cidr, backend = self.backend.name(), "Block failed: {e}");
                first.get_or_insert_with(|| format!("block {}: {e}", r.cidr));
            }
            ok_add.push(res.is_ok());
        }
        let mut ok_remove = Vec::with_capacity(remove.len());
        for c in remove {
            let now = self.source.now();
            let res = self.backend.apply(&[], std::slice::from_ref(c), now).await;
            if let Err(e) = &res {
                failed += 1;
                tracing::warn!(cidr = %c, backend = self.backend.name(), "Unblock failed: {e}");
                first.get_or_insert_with(|| format!("unblock {c}: {e}"));
            }
            ok_remove.push(res.is_ok());
        }
        Counters::add(&self.counters.rule_failures, failed);
        let failure = first.map(|first| Failure::Enforcer {
            failed,
            total: add.len() + remove.len(),
            first,
        });
        (ok_add, ok_remove, failure)
    }

    fn source_error(&self, e: SourceError) -> Failure {
        Counters::add(&self.counters.source_errors, 1);
        Failure::Source(e)
    }

    async fn do_block(&mut self) -> Result<bool, Failure> {
        // The long poll ends in time for the next unblock pass.
        let mut wait = self.settings.poll_timeout;
        if let Some(t) = self.last_unblock
            && !self.settings.unblock_interval.is_zero()
        {
            let next = self.settings.unblock_interval.saturating_sub(t.elapsed());
            wait = wait.min(next.max(Duration::from_millis(100)));
        }
        let rows = {
            let Manager {
                source,
                backend,
                added_since,
                ..
            } = &mut *self;
            tokio::select! {
                rows = source.queue(wait, *added_since) => rows,
                // A new session with the backend's peer: back to `step`, which reconciles.
                () = backend.new_session() => return Ok(true),
            }
        }
        .map_err(|e| self.source_error(e))?;
        self.counters
            .bad_rows
            .store(self.source.bad_rows(), Ordering::Relaxed);
        let Some(last) = rows.last() else {
            return Ok(false);
        };
        let last_added = last.added;
        let rules: Vec<Rule> = rows.iter().map(|r| r.rule.clone()).collect();
        let (ok, _, failure) = self.apply(&rules, &[]).await;
        let ids: Vec<u64> = rows
            .iter()
            .zip(&ok)
            .filter(|(_, ok)| **ok)
            .map(|(r, _)| r.id)
            .collect();
        Counters::add(&self.counters.blocked, ids.len());
        for (r, _) in rows.iter().zip(&ok).filter(|(_, ok)| **ok) {
            tracing::info!(
                ident = self.source.ident(),
                "block {} ({})",
                r.rule.cidr,
                r.rule.why
            );
        }
        if !ids.is_empty() {
            self.source
                .set_blocked(&ids)
                .await
                .map_err(|e| self.source_error(e))?;
        }
        if let Some(f) = failure {
            // Rows that failed stay in the queue; keep asking from where they are.
            return Err(f);
        }
        self.added_since = last_added - REWIND;
        Ok(true)
    }

    async fn do_unblock(&mut self) -> Result<bool, Failure> {
        let rows = self
            .source
            .unblock_queue()
            .await
            .map_err(|e| self.source_error(e))?;
        if rows.is_empty() {
            return Ok(false);
        }
        let cidrs: Vec<IpNet> = rows.iter().map(|r| r.cidr).collect();
        let (_, ok, failure) = self.apply(&[], &cidrs).await;
        let ids: Vec<u64> = rows
            .iter()
            .zip(&ok)
            .filter(|(_, ok)| **ok)
            .map(|(r, _)| r.id)
            .collect();
        Counters::add(&self.counters.unblocked, ids.len());
        for (r, _) in rows.iter().zip(&ok).filter(|(_, ok)| **ok) {
            tracing::info!(ident = self.source.ident(), "unblock {}", r.cidr);
        }
        if !ids.is_empty() {
            self.source
                .set_unblocked(&ids)
                .await
                .map_err(|e| self.source_error(e))?;
        }
        match failure {
            Some(f) => Err(f),
            None => Ok(true),
        }
    }

    /// Makes the backend hold exactly the expected blocks.
    async fn reconcile(&mut self) -> Result<(), Failure> {
        let expected = self
            .source
            .expected()
            .await
            .map_err(|e| self.source_error(e))?;
        self.counters
            .bad_rows
            .store(self.source.bad_rows(), Ordering::Relaxed);
        let now = self.source.now();
        if let Enforcer::Nftables(n) = &mut self.backend {
            n.expect(&expected);
        }
        let held = self
            .backend
            .list(now)
            .await
            .map_err(|e| Failure::Enforcer {
                failed: 0,
                total: 0,
                first: format!("listing rules: {e}"),
            })?;
        // The listing opened any new session: this reconciliation covers it.
        self.backend.take_new_session();
        let (add, remove) = match held {
            Some(held) => plan(&expected, &held.iter().map(|h| (h.cidr, h.until)).collect()),
            // A command backend cannot list: it gets every expected block once (the
            // original's `block_all_expected` backfill) and nothing removed. stdout gets
            // only the queues, as the original.
            None if !self.backfilled && matches!(self.backend, Enforcer::Exec(_)) => {
                (expected, Vec::new())
            }
            None => (Vec::new(), Vec::new()),
        };
        let (ok_add, ok_remove, failure) = self.apply(&add, &remove).await;
        let added = ok_add.iter().filter(|o| **o).count();
        let removed = ok_remove.iter().filter(|o| **o).count();
        Counters::add(&self.counters.reconcile_added, added);
        Counters::add(&self.counters.reconcile_removed, removed);
        if added + removed > 0 || self.last_reconcile.is_none() {
            tracing::info!(
                ident = self.source.ident(),
                backend = self.backend.name(),
                added,
                removed,
                "Reconciled the backend with the expected blocks."
            );
        }
        if let Some(f) = failure {
            return Err(f);
        }
        self.backfilled = true;
        Counters::add(&self.counters.reconciles, 1);
        Ok(())
    }
}

/// What to add (missing, or held with a timeout that ends too early) and what to remove
/// (held, not expected).
fn plan(expected: &[Rule], held: &HashMap<IpNet, Option<Time>>) -> (Vec<Rule>, Vec<IpNet>) {
    let mut want: HashMap<IpNet, &Rule> = HashMap::with_capacity(expected.len());
    for r in expected {
        let c = r.cidr.trunc();
        // Two expected blocks of one network cannot both be current; keep the later end.
        match want.get(&c) {
            Some(o) if later(o.until, r.until) => {}
            _ => {
                want.insert(c, r);
            }
        }
    }
    let mut add = Vec::new();
    for (c, r) in &want {
        match held.get(c) {
            None => add.push((*r).clone()),
            Some(Some(h)) if r.until.is_none_or(|u| u > *h + SLACK) => add.push((*r).clone()),
            Some(_) => {}
        }
    }
    let remove = held
        .keys()
        .filter(|c| !want.contains_key(&c.trunc()))
        .copied()
        .collect();
    (add, remove)
}

/// Whether end `a` is at least as late as `b` (`None` is never).
fn later(a: Option<Time>, b: Option<Time>) -> bool {
    match (a, b) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(a), Some(b)) => a >= b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delayer_matches_the_original() {
        let mut d = Delayer::new();
        let seq: Vec<u64> = (0..8).map(|_| d.next_delay().as_secs()).collect();
        assert_eq!(seq, [0, 1, 2, 4, 8, 16, 32, 60]);
        d.reset();
        assert_eq!(d.next_delay(), Duration::ZERO);
    }

    #[test]
    fn plan_adds_missing_renews_extended_and_removes_stale() {
        let t = |s| Time::from_timeval(s, 0);
        let r = |c: &str, u: Option<i64>| Rule {
            cidr: c.parse().unwrap(),
            until: u.map(t),
            why: String::new(),
        };
        let expected = vec![
            r("192.0.2.1/32", Some(1000)),
            r("192.0.2.2/32", Some(2000)),
            r("192.0.2.3/32", None),
            r("2001:db8::/64", Some(1000)),
        ];
        let held: HashMap<IpNet, Option<Time>> = [
            ("192.0.2.1/32", Some(t(998))),  // within the slack: left alone
            ("192.0.2.2/32", Some(t(1000))), // extended since: renewed
            ("198.51.100.9/32", None),       // stale
        ]
        .into_iter()
        .map(|(c, u)| (c.parse().unwrap(), u))
        .collect();
        let (mut add, remove) = plan(&expected, &held);
        add.sort_by_key(|r| r.cidr);
        let add: Vec<String> = add.iter().map(|r| r.cidr.to_string()).collect();
        assert_eq!(add, ["192.0.2.2/32", "192.0.2.3/32", "2001:db8::/64"]);
        assert_eq!(remove, vec!["198.51.100.9/32".parse::<IpNet>().unwrap()]);
    }
}
