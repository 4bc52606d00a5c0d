//! The daemon's core thread: catch-and-release on the real clock, over the registry.
//!
//! It owns the [`Engine`] and is the only thread that touches it. Inputs arrive on two
//! channels: sightings from the capture threads, and [`Command`]s (from the
//! catch-and-release API, from the BHR API's change listener, and from signals). Between
//! inputs it sleeps until the next deadline: the engine's timers, the end of a rule's
//! registry block, or log rotation. After each step it writes the engine's records to the
//! Zeek logs and persists every address whose state changed, with the network time the
//! state is current to, in one store job.
//!
//! On start it restores the watched addresses and the rules they refer to, then replays
//! what came due while catchd was down (block ends, forgets) at the times they came due.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, select};
use tokio::sync::oneshot;

use crate::addr::Addr;
use crate::api::bhr::{AppState, Receipt, Tell};
use crate::bhr::model::Block;
use crate::bhr::registry::Change;
use crate::cnr::{
    Action, Answer, BlockInfo, Config as EngineConfig, Engine, Output, PluginId, Rule, RuleId,
    RuleType, Target, WatchState,
};
use crate::sniff::Sighting;
use crate::store::{Store, Write};
use crate::time::{Interval, Time};
use crate::zeeklog::LogSet;

use super::cluster::{ManagerBus, RuleRequest};
use super::effects::{self, Shared, block_id, rule_id};
use crate::broker::zeek::Incoming;
use crate::bus::Received;

/// A value whose changes are durable once `receipt` answers.
pub struct Durable<T> {
    /// The value.
    pub value: T,
    /// Answers when everything the command changed is on disk.
    pub receipt: Receipt,
}

/// What the core thread is asked to do.
pub enum Command {
    /// `drop_address_catch_release`.
    Drop {
        /// The address.
        addr: Addr,
        /// Where the drop came from.
        location: String,
        /// The resulting state, or why nothing is tracked.
        reply: oneshot::Sender<Result<Durable<BlockInfo>, String>>,
    },
    /// `unblock_address_catch_release`.
    Unblock {
        /// The address.
        addr: Addr,
        /// Why.
        reason: String,
        /// Whether it was tracked.
        reply: oneshot::Sender<Durable<bool>>,
    },
    /// Ends catch-and-release of a network (catch-and-release of networks).
    UnblockNet {
        /// The network.
        net: ipnet::IpNet,
        /// Why.
        reason: String,
        /// Whether it was tracked.
        reply: oneshot::Sender<Durable<bool>>,
    },
    /// Many drops in one go (flushed together).
    DropMany {
        /// Addresses and locations.
        items: Vec<(Addr, String)>,
        /// Per item, the resulting state or why nothing is tracked.
        reply: oneshot::Sender<Durable<Vec<Result<BlockInfo, String>>>>,
    },
    /// `get_catch_release_info`.
    Info {
        /// The address.
        addr: Addr,
        /// Its state (`watch_until` 0 when unknown).
        reply: oneshot::Sender<BlockInfo>,
    },
    /// Rows the BHR API changed.
    Registry(Vec<Change>),
    /// What the log scanner found, and where it read to.
    Scan(super::logscan::Batch),
    /// Rotate the logs (SIGHUP).
    Rotate,
    /// Answer when the core gets to it (the service watchdog's sign of life).
    Ping {
        /// Answered at once.
        reply: oneshot::Sender<()>,
    },
    /// Persist, close the logs and end the thread.
    Stop {
        /// Answered when done.
        reply: oneshot::Sender<()>,
    },
}

impl Command {
    /// Whether acting on it may change the registry (its step then holds the cluster
    /// lock).
    fn may_change_registry(&self) -> bool {
        matches!(
            self,
            Command::Drop { .. }
                | Command::DropMany { .. }
                | Command::Unblock { .. }
                | Command::UnblockNet { .. }
                | Command::Registry(_)
                | Command::Scan(_)
        )
    }
}

/// The core's counters, readable from any thread.
#[derive(Debug, Default)]
pub struct CoreMetrics {
    /// Catch-and-release log lines by action, in [`Action::ALL`] order.
    pub actions: [AtomicU64; 7],
    /// Sightings of watched addresses processed.
    pub sightings: AtomicU64,
    /// Engine errors (drops no backend took …).
    pub errors: AtomicU64,
    /// Log write failures.
    pub log_errors: AtomicU64,
    /// Addresses tracked.
    pub watched: AtomicU64,
    /// Live NetControl rules.
    pub rules: AtomicU64,
    /// Log rotations.
    pub rotations: AtomicU64,
    /// The latest catch-and-release log records (at most [`RECENT`]), oldest first.
    pub recent: std::sync::Mutex<std::collections::VecDeque<crate::cnr::CatchReleaseRecord>>,
}

/// Catch-and-release log records kept for the web page.
pub const RECENT: usize = 100;

/// Settings of the core.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Block-manager idents (plugins); empty: the automatic plugin.
    pub block_managers: Vec<String>,
    /// Sources whose single-address BHR blocks are handed to catch-and-release.
    pub hand_over_sources: Vec<String>,
    /// Rotate logs this often.
    pub rotate_interval: Option<Duration>,
    /// Rotate logs at this size.
    pub rotate_size: Option<u64>,
}

/// What the core is made of.
pub struct Setup {
    /// The engine's settings (`start` is set from the saved clock).
    pub engine: EngineConfig,
    /// The core's own settings.
    pub settings: Settings,
    /// Where the engine's rule installs and removals go.
    pub effects: Shared,
    /// The registry and its change path.
    pub api: Arc<AppState>,
    /// The store the watch state is saved to.
    pub store: Store,
    /// The Zeek logs.
    pub logs: LogSet,
    /// The event bus, when this manager is on one.
    pub cluster: Option<ManagerBus>,
}

/// The state saved by the previous run.
#[derive(Debug, Default)]
pub struct Saved {
    /// The watched addresses.
    pub watch: Vec<(Addr, WatchState)>,
    /// The watched networks (catch-and-release of networks).
    pub nets: Vec<(ipnet::IpNet, WatchState)>,
    /// The network time that state is current to.
    pub clock: Option<Time>,
}

/// Sightings handled before the core persists and looks at its commands again.
const SIGHTING_BATCH: usize = 4096;

/// The longest the core sleeps without looking at the clock.
const MAX_SLEEP: Duration = Duration::from_secs(1);

/// How long a stopping core waits for the store to make its last steps durable.
const STOP_WAIT: Duration = Duration::from_secs(30);

/// What one step of the engine produced, held until the store has made the step's writes
/// durable: only then are its records written to the logs and published on the bus, and
/// the replies waiting for it answered. So a log line never tells of a drop the store
/// does not hold, and a rule id in a log is never handed out again after a crash.
struct Step {
    seq: u64,
    outputs: Vec<Output>,
    replies: Vec<oneshot::Sender<Result<(), crate::store::Error>>>,
}

/// The catch-and-release core.
pub struct Core {
    engine: Engine,
    effects: Shared,
    api: Arc<AppState>,
    store: Store,
    logs: LogSet,
    /// Every plugin, in activation order.
    plugins: Vec<PluginId>,
    /// The automatic plugin, when no block managers are configured.
    auto: Option<PluginId>,
    idents: HashMap<String, PluginId>,
    hand_over: HashSet<String>,
    /// Registry block ends of live rules.
    expiries: BTreeSet<(Time, RuleId)>,
    ends: HashMap<RuleId, Time>,
    dirty: HashSet<Addr>,
    /// Networks whose catch-and-release state changed in this step.
    dirty_nets: HashSet<ipnet::IpNet>,
    /// The receipt of the last job the core submitted, watched for a store failure.
    last: Option<Receipt>,
    metrics: Arc<CoreMetrics>,
    settings: Settings,
    next_rotation: Option<Instant>,
    /// The event bus, when this manager is on one.
    cluster: Option<ManagerBus>,
    /// Steps waiting for the store, oldest first.
    steps: std::collections::VecDeque<Step>,
    next_step: u64,
    /// The store's word on each step: its number and the commit's result.
    durable_tx: crossbeam_channel::Sender<(u64, Result<(), crate::store::Error>)>,
    durable_rx: Receiver<(u64, Result<(), crate::store::Error>)>,
}

fn is_host(net: &ipnet::IpNet) -> bool {
    net.prefix_len() == net.max_prefix_len()
}

impl Core {
    /// Builds the core and its engine, whose backends are the effects' plugins (one per
    /// block manager in `settings.block_managers`, in that order, or the automatic one),
    /// restores the saved state and replays what came due since it was saved.
    pub fn start(setup: Setup, saved: Saved) -> Core {
        let Setup {
            mut engine,
            settings,
            effects,
            api,
            store,
            logs,
            cluster,
        } = setup;
        let mut backends: Vec<(Box<dyn crate::cnr::Plugin>, i64)> = Vec::new();
        if settings.block_managers.is_empty() {
            backends.push((Box::new(effects::ManagerPlugin::auto(effects.clone())), 0));
        } else {
            for ident in &settings.block_managers {
                backends.push((
                    Box::new(effects::ManagerPlugin::ident(ident, effects.clone())),
                    0,
                ));
            }
        }
        engine.start = saved.clock.unwrap_or_else(|| api.now());
        let mut engine = Engine::new(engine, backends);
        engine.set_rule_ids(Box::new(effects::RegistryIds(effects.clone())));
        let mut idents = HashMap::new();
        let mut plugins = Vec::new();
        let mut auto = None;
        if settings.block_managers.is_empty() {
            auto = engine.plugin_id(effects::AUTO_PLUGIN);
            plugins.extend(auto);
        } else {
            for ident in &settings.block_managers {
                if let Some(p) = engine.plugin_id(ident) {
                    idents.insert(ident.clone(), p);
                    plugins.push(p);
                }
            }
        }
        let next_rotation = settings.rotate_interval.map(|d| Instant::now() + d);
        let (durable_tx, durable_rx) = crossbeam_channel::unbounded();
        let mut core = Core {
            engine,
            effects,
            api,
            store,
            logs,
            plugins,
            auto,
            idents,
            hand_over: settings.hand_over_sources.iter().cloned().collect(),
            expiries: BTreeSet::new(),
            ends: HashMap::new(),
            dirty: HashSet::new(),
            dirty_nets: HashSet::new(),
            last: None,
            metrics: Arc::default(),
            settings,
            next_rotation,
            cluster,
            steps: std::collections::VecDeque::new(),
            next_step: 0,
            durable_tx,
            durable_rx,
        };
        core.restore(saved.watch, saved.nets, saved.clock);
        if let Some(c) = &core.cluster {
            c.announce();
        }
        core
    }

    /// The core's counters (shared with the status pages and `/metrics`).
    pub fn metrics(&self) -> Arc<CoreMetrics> {
        self.metrics.clone()
    }

    /// The watched addresses (shared with the capture threads).
    pub fn watched(&self) -> Arc<crate::cnr::WatchTable> {
        self.engine.watched().clone()
    }

    /// The time: the process's one clock (the API's), never behind the engine.
    fn now(&self) -> Time {
        self.api.now().max(self.engine.now())
    }

    /// Puts the stored state back and replays the time catchd was down.
    fn restore(
        &mut self,
        watch: Vec<(Addr, WatchState)>,
        nets: Vec<(ipnet::IpNet, WatchState)>,
        clock: Option<Time>,
    ) {
        let now = self.api.now();
        let since = clock.unwrap_or(now).min(now);
        self.engine.advance(since);
        let rules: BTreeSet<RuleId> = watch
            .iter()
            .map(|(_, st)| st)
            .chain(nets.iter().map(|(_, st)| st))
            .filter_map(|st| st.rule)
            .collect();
        for (a, st) in &watch {
            self.engine.restore_watch(*a, st);
        }
        if self.engine.networks().is_some() {
            for (n, st) in &nets {
                self.engine.restore_net(*n, st);
            }
        }
        for id in rules {
            if let Some(b) = self.api.block(block_id(id)) {
                self.restore_block(&b, since);
            }
        }
        if !watch.is_empty() || !nets.is_empty() {
            // The stored clock is the time of the last change stored before the stop (not
            // when the process stopped): that is where the replay starts.
            tracing::info!(
                watched = watch.len(),
                networks = nets.len(),
                rules = self.engine.rule_count(),
                last_change_ago = %(now - since),
                "Catch-and-release state restored; replaying what came due since its last change."
            );
        }
        self.process_expiries(now);
        self.engine.advance(now);
        self.engine.drain_all();
        self.flush();
        self.finish_step();
    }

    /// The plugins that have block `id` in place.
    fn in_place(&self, id: u64) -> Vec<PluginId> {
        let mut v: Vec<PluginId> = self.auto.into_iter().collect();
        for ident in self.api.idents_in_place(id) {
            if let Some(p) = self.idents.get(&ident) {
                v.push(*p);
            }
        }
        v
    }

    fn rule_of(b: &Block) -> Option<Rule> {
        let id = rule_id(b.id)?;
        Some(Rule {
            id,
            ty: RuleType::Drop,
            target: Target::Forward,
            entity: b.cidr,
            expire: b.unblock_at.map_or(Interval::ZERO, |u| u - b.added),
            priority: 0,
            location: (!b.why.is_empty()).then(|| b.why.clone()),
        })
    }

    /// Restores the rule of a stored block a watched address refers to.
    fn restore_block(&mut self, b: &Block, since: Time) {
        let Some(rule) = Core::rule_of(b) else {
            return;
        };
        if !is_host(&b.cidr) {
            return;
        }
        let active = self.in_place(b.id);
        if b.forced_unblock {
            // Ended by unblock_now; block managers that still have it in place have yet to
            // report its removal.
            let pending: Vec<PluginId> = active
                .into_iter()
                .filter(|p| Some(*p) != self.auto)
                .collect();
            if !pending.is_empty() {
                self.engine
                    .restore_rule(rule, &self.plugins, &pending, None);
            }
            return;
        }
        if b.unblock_at.is_some_and(|u| u <= since) {
            return;
        }
        let id = rule.id;
        self.engine.restore_rule(rule, &self.plugins, &active, None);
        if let Some(u) = b.unblock_at {
            self.set_end(id, u);
        }
    }

    /// Makes NetControl aware of a block made outside catch-and-release.
    fn mirror(&mut self, b: &Block) {
        let Some(rule) = Core::rule_of(b) else {
            return;
        };
        if self.engine.rule(rule.id).is_some() || self.engine.drop_rule_for(b.cidr.addr()).is_some()
        {
            return;
        }
        let id = rule.id;
        let active = self.in_place(b.id);
        self.engine.restore_rule(rule, &self.plugins, &active, None);
        if let Some(u) = b.unblock_at {
            self.set_end(id, u);
        }
    }

    fn set_end(&mut self, id: RuleId, at: Time) {
        if let Some(old) = self.ends.insert(id, at) {
            self.expiries.remove(&(old, id));
        }
        self.expiries.insert((at, id));
    }

    fn clear_end(&mut self, id: RuleId) {
        if let Some(old) = self.ends.remove(&id) {
            self.expiries.remove(&(old, id));
        }
    }

    /// Reports the end of every registry block due by `now`, in time order (records are
    /// written out every 1024 ends, and by the caller's flush).
    fn process_expiries(&mut self, now: Time) {
        let mut n = 0usize;
        while let Some(&(t, id)) = self.expiries.first() {
            if t > now {
                break;
            }
            self.expiries.pop_first();
            self.ends.remove(&id);
            self.expire(t, id);
            n += 1;
            if n.is_multiple_of(1024) {
                self.flush();
            }
        }
    }

    /// The registry block of rule `id` ended at `t`: a timeout on the plugins that have it
    /// in place (or on the first that took it, when none confirmed it yet).
    fn expire(&mut self, t: Time, id: RuleId) {
        let Some(rule) = self.engine.rule(id) else {
            return;
        };
        if let Some(b) = self.api.block(block_id(id)) {
            // Extended since: wait for the new end.
            if let Some(u) = b.unblock_at
                && u > t
                && !b.forced_unblock
            {
                self.set_end(id, u);
                return;
            }
            if b.unblock_at.is_none() && !b.forced_unblock {
                return;
            }
        }
        let Some((accepted, active)) = self.engine.rule_plugins(id) else {
            return;
        };
        let targets: Vec<PluginId> = if active.is_empty() {
            accepted.first().copied().into_iter().collect()
        } else {
            active
        };
        for p in targets {
            self.engine.answer(t, rule.clone(), p, Answer::Timeout);
        }
        self.engine.drain_all();
    }

    /// Takes what the engine produced, notes which addresses changed, and hands their
    /// state to the store with the records, which are written once it is durable.
    fn flush(&mut self) {
        let mut outputs = Vec::new();
        while let Some(o) = self.engine.poll_output() {
            match &o {
                Output::CatchRelease(r) => {
                    self.dirty.insert(r.ip);
                }
                Output::Forgotten { addr, .. } => {
                    self.dirty.insert(*addr);
                }
                Output::CatchReleaseNet(r) => {
                    self.dirty_nets.insert(r.subnet);
                }
                Output::NetForgotten { net, .. } | Output::NetBlockDelete { net } => {
                    self.dirty_nets.insert(*net);
                }
                Output::Error(m) => {
                    self.metrics.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("{m}");
                }
                Output::NetControl(_)
                | Output::Drop(_)
                | Output::BlockNew { .. }
                | Output::BlockDelete { .. }
                | Output::NetBlockNew { .. } => {}
            }
            outputs.push(o);
        }
        let mut writes: Vec<Write> = Vec::new();
        if !self.dirty.is_empty() {
            writes = self
                .dirty
                .drain()
                .map(|a| match self.engine.watch_state(a) {
                    Some(st) => Write::Watch(a, st),
                    None => Write::Unwatch(a),
                })
                .collect();
        }
        writes.extend(
            self.dirty_nets
                .drain()
                .map(|n| match self.engine.net_state(n) {
                    Some(st) => Write::WatchNet(n, st),
                    None => Write::UnwatchNet(n),
                }),
        );
        if !writes.is_empty() {
            writes.push(Write::CrClock(self.engine.now()));
        }
        if !writes.is_empty() || !outputs.is_empty() {
            self.step(writes, outputs, Vec::new());
        }
        self.metrics
            .watched
            .store(self.engine.watched().len() as u64, Ordering::Relaxed);
        self.metrics
            .rules
            .store(self.engine.rule_count() as u64, Ordering::Relaxed);
    }

    /// Submits a step's writes (after everything submitted before them); its records and
    /// replies wait for their commit.
    fn step(
        &mut self,
        writes: Vec<Write>,
        outputs: Vec<Output>,
        replies: Vec<oneshot::Sender<Result<(), crate::store::Error>>>,
    ) {
        let seq = self.next_step;
        self.next_step += 1;
        let tx = self.durable_tx.clone();
        self.store.submit_then(writes, move |r| {
            let _ = tx.send((seq, r));
        });
        self.steps.push_back(Step {
            seq,
            outputs,
            replies,
        });
    }

    /// The store made steps up to `seq` durable (or failed): their records go to the logs
    /// and the bus, and their replies are answered.
    fn durable(&mut self, seq: u64, r: &Result<(), crate::store::Error>) {
        if let Err(e) = r {
            // Memory is ahead of the disk: nothing of it is logged, and the server stops.
            self.api.fail(&e.to_string());
        }
        let mut wrote = false;
        while self.steps.front().is_some_and(|s| s.seq <= seq) {
            let Some(step) = self.steps.pop_front() else {
                break;
            };
            if r.is_ok() {
                for o in &step.outputs {
                    self.publish(o);
                }
                wrote |= !step.outputs.is_empty();
            }
            for reply in step.replies {
                let _ = reply.send(r.clone());
            }
        }
        if wrote {
            if let Err(e) = self.logs.flush() {
                self.log_failed(&e);
            }
            if self
                .settings
                .rotate_size
                .is_some_and(|max| self.logs.largest() >= max)
            {
                self.rotate();
            }
        }
    }

    /// Handles every answer the store has given so far.
    fn take_durable(&mut self) {
        while let Ok((seq, r)) = self.durable_rx.try_recv() {
            self.durable(seq, &r);
        }
    }

    /// A durable record: logged, published, counted.
    fn publish(&mut self, o: &Output) {
        if let Some(c) = &self.cluster {
            c.output(o);
        }
        if let Output::CatchRelease(r) = o {
            let mut recent = self
                .metrics
                .recent
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if recent.len() >= RECENT {
                recent.pop_front();
            }
            recent.push_back(r.clone());
            drop(recent);
            if let Some(i) = Action::ALL.iter().position(|a| *a == r.action) {
                self.metrics.actions[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Err(e) = self.logs.write(o) {
            self.log_failed(&e);
        }
    }

    fn log_failed(&self, e: &crate::zeeklog::Error) {
        self.metrics.log_errors.fetch_add(1, Ordering::Relaxed);
        tracing::error!(error = %e, "Cannot write a log.");
    }

    fn rotate(&mut self) {
        match self.logs.rotate().and_then(|()| self.logs.flush()) {
            Ok(()) => {
                self.metrics.rotations.fetch_add(1, Ordering::Relaxed);
                tracing::info!("Logs rotated.");
            }
            Err(e) => self.log_failed(&e),
        }
        self.next_rotation = self.settings.rotate_interval.map(|d| Instant::now() + d);
    }

    /// Takes the cluster's registry lock for the step in progress, unless it holds it
    /// already: outside the engine, before a call that may change the registry. (Outside
    /// a cluster there is nothing to take.)
    fn hold_lock(&mut self) {
        let mut fx = effects::lock(&self.effects);
        if !fx.holding() {
            fx.begin(self.api.lock_cluster_blocking().map_err(|_| ()));
        }
    }

    /// Ends a step: what the engine asked of the registry is applied, the ends of the
    /// blocks it made are scheduled, and in a cluster the lock is released once the
    /// step's registry changes are durable (outside one, the core goes on and watches the
    /// last receipt for a store failure).
    fn finish_step(&mut self) {
        let done = effects::lock(&self.effects).finish();
        for (id, end) in &done.made {
            if let Some(end) = end {
                self.set_end(*id, *end);
            }
        }
        if !done.made.is_empty() {
            self.api.wake_queues();
        }
        match done.held {
            Some(guard) if guard.in_cluster() => {
                for rx in done.receipts {
                    if let Err(e) = rx
                        .blocking_recv()
                        .unwrap_or(Err(crate::store::Error::Closed))
                    {
                        self.api.fail(&e.to_string());
                    }
                }
                drop(guard);
            }
            _ => {
                if let Some(rx) = done.receipts.into_iter().last() {
                    self.last = Some(rx);
                }
            }
        }
    }

    /// Whether a sighting of `addr` at `now` may re-drop it (it is watched and not
    /// blocked), so its step needs the cluster lock.
    fn may_redrop(&mut self, s: &Sighting) -> bool {
        let now = s.ts.max(self.engine.now());
        self.engine.advance(now);
        self.engine.may_redrop(s.addr)
    }

    /// A receipt for the reply to a command: answers once everything submitted so far
    /// (the command's own changes included) is durable and its records are in the logs.
    fn receipt(&mut self) -> Receipt {
        let (tx, rx) = oneshot::channel();
        self.step(Vec::new(), Vec::new(), vec![tx]);
        rx
    }

    fn sighting(&mut self, s: Sighting) {
        let now = s.ts.max(self.engine.now());
        let _ = self.engine.sighting(now, s.addr);
        self.engine.drain_all();
        self.metrics.sightings.fetch_add(1, Ordering::Relaxed);
    }

    fn drop_address(&mut self, addr: Addr, location: &str) -> Result<BlockInfo, String> {
        let r = self.drop_one(addr, location);
        self.flush();
        r
    }

    /// A drop whose records stay queued for the next [`flush`](Core::flush).
    fn drop_one(&mut self, addr: Addr, location: &str) -> Result<BlockInfo, String> {
        let now = self.now();
        let ip: IpAddr = addr.to_ip();
        if self.engine.drop_rule_for(ip).is_none()
            && let Some(b) = self.api.expected_host_block(ip)
        {
            self.mirror(&b);
        }
        let info = self.engine.drop_catch_release(now, addr, location);
        self.engine.drain_all();
        if info.is_known() {
            Ok(info)
        } else {
            Err(effects::lock(&self.effects)
                .take_refusal()
                .unwrap_or_else(|| "no backend took the drop".into()))
        }
    }

    fn registry_changes(&mut self, changes: Vec<Change>) {
        let now = self.now();
        self.engine.advance(now);
        for ch in changes {
            if let (Change::Block(b), Some(c)) = (&ch, self.cluster.as_mut()) {
                c.block_changed(b, now);
            }
            match ch {
                Change::Block(b) if is_host(&b.cidr) => self.block_changed(&b, now),
                Change::Entry(e) => {
                    let (Some(id), Some(p)) =
                        (rule_id(e.block), self.idents.get(&*e.ident).copied())
                    else {
                        continue;
                    };
                    let Some(rule) = self.engine.rule(id) else {
                        continue;
                    };
                    let Some((_, active)) = self.engine.rule_plugins(id) else {
                        continue;
                    };
                    let on = active.contains(&p);
                    if e.removed.is_none() && !on {
                        self.engine
                            .answer(now, rule, p, Answer::Added(String::new()));
                    } else if e.removed.is_some() && on {
                        self.engine
                            .answer(now, rule, p, Answer::Removed(String::new()));
                    }
                }
                _ => {}
            }
        }
        self.engine.drain_all();
        self.flush();
    }

    fn block_changed(&mut self, b: &Block, now: Time) {
        let Some(id) = rule_id(b.id) else {
            return;
        };
        if self.engine.rule(id).is_some() {
            if b.forced_unblock {
                self.clear_end(id);
                let why = format!("unblock_now: {}", b.unblock_why);
                self.engine.remove_rule(now, id, &why);
            } else if let Some(u) = b.unblock_at {
                self.set_end(id, u);
            } else {
                self.clear_end(id);
            }
            return;
        }
        let expected = !b.forced_unblock && b.unblock_at.is_none_or(|u| u > now);
        if !expected {
            return;
        }
        let addr = Addr::from(b.cidr.addr());
        if self.hand_over.contains(&*b.source) && !self.engine.watched().contains(&addr) {
            self.mirror(b);
            let _ = self.engine.drop_catch_release(now, addr, &b.why);
        } else if self.engine.watched().contains(&addr) {
            self.mirror(b);
        }
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::Drop {
                addr,
                location,
                reply,
            } => {
                let r = self.drop_address(addr, &location).map(|value| Durable {
                    value,
                    receipt: self.receipt(),
                });
                let _ = reply.send(r);
            }
            Command::DropMany { items, reply } => {
                let mut out = Vec::with_capacity(items.len());
                for (i, (addr, location)) in items.iter().enumerate() {
                    out.push(self.drop_one(*addr, location));
                    if i % 1024 == 1023 {
                        self.flush();
                    }
                }
                self.flush();
                let _ = reply.send(Durable {
                    value: out,
                    receipt: self.receipt(),
                });
            }
            Command::UnblockNet { net, reason, reply } => {
                let now = self.now();
                let value = self.engine.unblock_net_catch_release(now, net, &reason);
                self.engine.drain_all();
                self.flush();
                let _ = reply.send(Durable {
                    value,
                    receipt: self.receipt(),
                });
            }
            Command::Unblock {
                addr,
                reason,
                reply,
            } => {
                let now = self.now();
                let value = self.engine.unblock_catch_release(now, addr, &reason);
                self.engine.drain_all();
                self.flush();
                let _ = reply.send(Durable {
                    value,
                    receipt: self.receipt(),
                });
            }
            Command::Info { addr, reply } => {
                let _ = reply.send(self.engine.info(addr));
            }
            Command::Registry(changes) => self.registry_changes(changes),
            Command::Scan(batch) => self.scan_batch(batch),
            Command::Rotate => self.rotate(),
            Command::Ping { reply } => {
                let _ = reply.send(());
            }
            Command::Stop { reply } => {
                let _ = reply.send(());
            }
        }
    }

    /// Fires what is due and checks on the store.
    pub(super) fn tick(&mut self) {
        let now = self.now();
        self.process_expiries(now);
        if let Some(c) = self.cluster.as_mut() {
            c.expire(&self.api, now);
        }
        self.engine.advance(now);
        self.engine.drain_all();
        self.flush();
        self.finish_step();
        if self.next_rotation.is_some_and(|t| Instant::now() >= t) {
            self.rotate();
        }
        if let Some(rx) = self.last.as_mut() {
            match rx.try_recv() {
                Ok(Ok(())) | Err(oneshot::error::TryRecvError::Closed) => self.last = None,
                Ok(Err(e)) => {
                    self.last = None;
                    self.api.fail(&e.to_string());
                }
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
        }
    }

    fn sleep_for(&self) -> Duration {
        let now = self.api.now();
        let next = [
            self.engine.next_deadline(),
            self.expiries.first().map(|(t, _)| *t),
            self.cluster.as_ref().and_then(ManagerBus::next_end),
        ]
        .into_iter()
        .flatten()
        .min();
        let mut d = match next {
            Some(t) if t <= now => Duration::ZERO,
            Some(t) => Duration::from_micros((t - now).as_micros().unsigned_abs()),
            None => MAX_SLEEP,
        };
        if let Some(r) = self.next_rotation {
            d = d.min(r.saturating_duration_since(Instant::now()));
        }
        d.min(MAX_SLEEP)
    }

    /// Runs until [`Command::Stop`] (or until every command sender is gone), then
    /// persists, closes the logs and waits for the store.
    ///
    /// # Errors
    /// The event bus stopped under it (the daemon cannot go on without it).
    pub fn run(
        mut self,
        sightings: Receiver<Sighting>,
        commands: Receiver<Command>,
        bus: Receiver<Received>,
    ) -> Result<(), String> {
        let durable = self.durable_rx.clone();
        loop {
            let wait = self.sleep_for();
            select! {
                recv(durable) -> d => {
                    if let Ok((seq, r)) = d {
                        self.durable(seq, &r);
                    }
                    self.take_durable();
                    continue;
                }
                recv(commands) -> c => match c {
                    Ok(Command::Stop { reply }) => {
                        self.shutdown();
                        let _ = reply.send(());
                        return Ok(());
                    }
                    Ok(c) => self.on_command(c),
                    Err(_) => {
                        self.shutdown();
                        return Ok(());
                    }
                },
                recv(bus) -> r => match r {
                    Ok(r) => self.on_bus(std::iter::once(r).chain(bus.try_iter().take(SIGHTING_BATCH - 1))),
                    Err(_) => {
                        // The bus's socket thread is gone.
                        self.shutdown();
                        return Err("the event bus stopped".into());
                    }
                },
                recv(sightings) -> s => {
                    self.on_sightings(s.into_iter().chain(sightings.try_iter().take(SIGHTING_BATCH - 1)));
                }
                default(wait) => {}
            }
            self.tick();
        }
    }

    /// One command, as one step (not [`Command::Stop`], which ends [`Core::run`]).
    pub(super) fn on_command(&mut self, c: Command) {
        if c.may_change_registry() {
            self.hold_lock();
        }
        self.command(c);
        self.finish_step();
    }

    /// A batch of events from the bus, as one step.
    pub(super) fn on_bus(&mut self, events: impl Iterator<Item = Received>) {
        self.hold_lock();
        for r in events {
            self.bus_event(r);
        }
        self.engine.drain_all();
        self.flush();
        self.finish_step();
        if let Some(c) = self.cluster.as_mut() {
            c.send_answers(&self.store);
        }
    }

    /// A batch of sightings, as one step.
    pub(super) fn on_sightings(&mut self, batch: impl Iterator<Item = Sighting>) {
        let clustered = self.api.in_cluster();
        for s in batch {
            if clustered && self.may_redrop(&s) {
                self.hold_lock();
            }
            self.sighting(s);
        }
        self.flush();
        self.finish_step();
    }

    /// Waits (for at most [`STOP_WAIT`]) until the store has made every step durable and
    /// their records are in the logs; false if it did not in time.
    pub(super) fn settle(&mut self) -> bool {
        let until = Instant::now() + STOP_WAIT;
        while !self.steps.is_empty() {
            let left = until.saturating_duration_since(Instant::now());
            match self.durable_rx.recv_timeout(left) {
                Ok((seq, r)) => self.durable(seq, &r),
                Err(_) => return false,
            }
        }
        true
    }

    /// Acts on what the log scanner found, then stores where it read to (after the
    /// changes it caused, so a stored position never runs ahead of them).
    fn scan_batch(&mut self, b: super::logscan::Batch) {
        let now = self.now();
        self.engine.advance(now);
        for d in b.detections {
            let location = d.source();
            match d.action {
                crate::scan::rules::Action::CatchRelease => {
                    if let Err(e) = self.drop_one(Addr::from(d.addr), &location) {
                        tracing::warn!(addr = %d.addr, rule = %d.rule, "Scan: not blocked: {e}");
                    }
                }
                crate::scan::rules::Action::Block(len) => {
                    let made = {
                        let mut fx = effects::lock(&self.effects);
                        let req = d.block_request(fx.who(), now, len);
                        fx.add_block(&req, now, Tell::Nobody)
                    };
                    match made {
                        Ok((id, _)) => {
                            if let Some(block) = self.api.block(id)
                                && is_host(&block.cidr)
                            {
                                self.block_changed(&block, now);
                            }
                        }
                        Err(r) => {
                            tracing::warn!(addr = %d.addr, rule = %d.rule, "Scan: not blocked: {}", r.0);
                        }
                    }
                }
            }
        }
        self.engine.drain_all();
        self.flush();
        if !b.positions.is_empty() {
            let writes = b
                .positions
                .into_iter()
                .map(|(path, p)| Write::ScanPosition(path, p))
                .collect();
            self.last = Some(self.store.submit(writes));
        }
    }

    /// An event from the bus (the manager's side of Zeek's cluster events, and the
    /// NetControl backend contract). Records stay queued for the caller's flush.
    fn bus_event(&mut self, r: Received) {
        let now = self.now();
        self.engine.advance(now);
        match r.event {
            Incoming::Add { addr, location } => {
                if let Err(e) = self.drop_one(addr, &location) {
                    tracing::warn!(%addr, sender = %r.sender, "Bus: catch_release_add refused: {e}");
                }
            }
            Incoming::Delete { addr, reason } => {
                let _ = self.engine.unblock_catch_release(now, addr, &reason);
            }
            Incoming::Encountered(addr) => {
                let _ = self.engine.sighting(now, addr);
                self.metrics.sightings.fetch_add(1, Ordering::Relaxed);
            }
            Incoming::AddRule { plugin, raw, rule } => {
                let Some(c) = self.cluster.as_mut() else {
                    return;
                };
                let req = RuleRequest {
                    topic: &r.topic,
                    plugin,
                    raw,
                    rule,
                };
                let mut fx = effects::lock(&self.effects);
                let made = c.add_rule(&self.api, &mut fx, req, now);
                drop(fx);
                if let Some(b) = made
                    && is_host(&b.cidr)
                {
                    self.block_changed(&b, now);
                }
            }
            Incoming::RemoveRule {
                plugin,
                raw,
                rule,
                reason,
            } => {
                if let Some(c) = self.cluster.as_mut() {
                    let req = RuleRequest {
                        topic: &r.topic,
                        plugin,
                        raw,
                        rule,
                    };
                    c.remove_rule(&mut effects::lock(&self.effects), req, &reason, now);
                }
            }
            Incoming::NetControlHello(id) => {
                if let Some(c) = &self.cluster {
                    c.hello(&r.topic, id);
                }
            }
            Incoming::SyncRequest(node) => {
                if let Some(c) = &self.cluster {
                    c.sync(&node, self.engine.watched());
                }
            }
            Incoming::BlockNew(..)
            | Incoming::BlockDelete(_)
            | Incoming::Sync { .. }
            | Incoming::ManagerUp(_) => {}
        }
        self.engine.drain_all();
    }

    pub(super) fn shutdown(&mut self) {
        self.tick();
        drop(self.receipt());
        // What is still on its way to the disk, then into the logs.
        if !self.settle() {
            tracing::error!(
                steps = self.steps.len(),
                "The store did not confirm the last changes; their log lines are not written."
            );
        }
        if let Err(e) = self.logs.finish() {
            self.log_failed(&e);
        }
        if let Err(e) = self.api.sync_blocking() {
            tracing::error!(error = %e, "The last changes may not be on disk.");
        }
    }
}
