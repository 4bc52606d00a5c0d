//! The catch-and-release engine: Zeek's state machine, with no I/O and no clock.
//!
//! [`Engine`] reproduces zeek/zeek:`scripts/policy/frameworks/netcontrol/catch-and-release.zeek`
//! on top of the NetControl rule model in `netcontrol`, on a standalone node. It is a
//! sans-I/O state machine in the quinn-proto mould:
//!
//! * **Time comes in as an argument.** Every mutating call takes `now`; network time only
//!   moves forward. [`Engine::advance`] fires due timers (block expiries scheduled by
//!   NetControl, the table-expiry sweep that forgets addresses) the way Zeek does when a
//!   packet arrives.
//! * **Zeek's event queue is modelled.** Plugin answers and packet sightings are queued
//!   [`Event`]s, and [`Engine::drain`] runs them in rounds, each round taking every event
//!   queued before it began. That is what decides, for example, that a sighting on the very
//!   packet that expires a block still finds the rule in place. Replays drain
//!   [`ZEEK_ROUNDS_PER_PACKET`] rounds per packet, as Zeek does.
//! * **Decisions come out as values.** Log records and notifications are [`Output`]s,
//!   collected with [`Engine::poll_output`]; the caller decides where they go.
//!
//! NetControl plugins ([`Plugin`]) are the only plug-in point. They are called
//! synchronously and must not block (the daemon's record what the engine asks for and
//! carry it out after the step); the built-in [`AcceptingPlugin`] does no I/O, so an engine built with it is
//! entirely deterministic.
//!
//! The table of watched addresses is a [`WatchTable`] behind an `Arc`, so capture threads
//! and the API can read it while the engine, its only writer, changes it.

mod intervals;
pub(crate) mod netcontrol;
mod nets;
pub(crate) mod record;
mod watch;

#[cfg(test)]
mod nets_tests;
#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;

pub use intervals::{DEFAULT_INTERVALS, Intervals, IntervalsError, MAX_STEPS};
pub use netcontrol::{
    AcceptingPlugin, Answer, Answers, MAX_BACKENDS, Plugin, PluginId, Rule, RuleId, RuleIds,
    RuleType, Target,
};
pub use nets::Networks;
pub use record::{
    Action, CatchReleaseNetRecord, CatchReleaseRecord, Category, DropRecord, NetControlRecord,
    State,
};
pub use watch::{BlockInfo, NetShape, Top, WatchState, WatchTable};

use crate::addr::Addr;
use crate::time::{Interval, Time};
use netcontrol::{NetControl, host_net};
use watch::{Entry, Sweep};

/// Rounds of queued events Zeek runs per packet when reading a trace: `dispatch_packet`
/// drains the queue (two rounds) and the main loop drains it again (two more). Zeek's own
/// catch-and-release baseline shows it: re-drops chained through `rule_added` handlers
/// advance three steps on the first packet and two on the next.
pub const ZEEK_ROUNDS_PER_PACKET: usize = 4;

/// Zeek's `table_expire_interval`: how often the watch table is swept for addresses whose
/// watch has ended.
pub const DEFAULT_SWEEP_INTERVAL: Interval = Interval::from_secs(10);

/// Zeek's `max_timer_expires`: at most this many timers fire per packet.
pub const ZEEK_MAX_TIMER_EXPIRES: usize = 300;

/// A guard against a backend that answers every answer with another: the most rounds a
/// full drain ([`Engine::drain_all`]) runs.
const MAX_DRAIN_ROUNDS: usize = 10_000;

/// Engine settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// The escalation ladder (`NetControl::catch_release_intervals`).
    pub intervals: Intervals,
    /// Log an INFO line when a still-blocked address is seen
    /// (`catch_release_warn_blocked_ip_encountered`).
    pub warn_blocked: bool,
    /// Period of the forget sweep (`table_expire_interval`).
    pub sweep_interval: Interval,
    /// Timers fired per [`Engine::advance`] (`max_timer_expires`); `None` for no limit.
    pub max_timer_expires: Option<usize>,
    /// How many watched addresses to size the per-packet pre-filter for (one byte each).
    /// More addresses still work; lookups of unwatched ones just reach the map more often.
    pub watch_capacity: usize,
    /// Network time when the engine starts ([`Time::ZERO`] for a trace, as in Zeek, where
    /// network time only begins with the first packet; a daemon starts at the clock).
    pub start: Time,
    /// Catch-and-release of networks (`[cnr.networks]`); `None`: off, as in Zeek.
    pub networks: Option<Networks>,
    /// Whether to output what a cluster manager publishes to its workers
    /// ([`Output::BlockNew`], [`Output::BlockDelete`], [`Output::Forgotten`] and their
    /// network kinds). On by default; `catchd replay`, which has no cluster, turns it off
    /// (one output fewer per drop).
    pub cluster_outputs: bool,
}

/// The default [`Config::watch_capacity`]: a million addresses (a 1 MiB filter).
pub const DEFAULT_WATCH_CAPACITY: usize = 1_000_000;

impl Default for Config {
    fn default() -> Config {
        Config {
            intervals: Intervals::default(),
            warn_blocked: false,
            sweep_interval: DEFAULT_SWEEP_INTERVAL,
            max_timer_expires: Some(ZEEK_MAX_TIMER_EXPIRES),
            watch_capacity: DEFAULT_WATCH_CAPACITY,
            start: Time::ZERO,
            networks: None,
            cluster_outputs: true,
        }
    }
}

/// A queued event, named after the Zeek event it stands for.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// `NetControl::rule_added`.
    RuleAdded {
        /// The rule.
        rule: Arc<Rule>,
        /// The answering backend.
        plugin: PluginId,
        /// Its message.
        msg: String,
    },
    /// `NetControl::rule_exists`.
    RuleExists {
        /// The rule.
        rule: Arc<Rule>,
        /// The answering backend.
        plugin: PluginId,
        /// Its message.
        msg: String,
    },
    /// `NetControl::rule_removed`.
    RuleRemoved {
        /// The rule.
        rule: Arc<Rule>,
        /// The answering backend.
        plugin: PluginId,
        /// Its message.
        msg: String,
    },
    /// `NetControl::rule_timeout`.
    RuleTimeout {
        /// The rule.
        rule: Arc<Rule>,
        /// The backend whose copy expired.
        plugin: PluginId,
    },
    /// `NetControl::rule_error`.
    RuleError {
        /// The rule.
        rule: Arc<Rule>,
        /// The answering backend.
        plugin: PluginId,
        /// Its message.
        msg: String,
    },
    /// `NetControl::rule_expire`: NetControl's own expiry, scheduled at `rule_added`.
    RuleExpire {
        /// The rule.
        rule: Arc<Rule>,
        /// The backend it expires on.
        plugin: PluginId,
    },
    /// A connection originator was seen (`new_connection` and friends calling
    /// `catch_release_seen`).
    Seen(Addr),
    /// A scheduled drop came due: its handler calls `drop_address_catch_release`.
    Drop {
        /// The address.
        addr: Addr,
        /// The location.
        location: Arc<str>,
    },
    /// A scheduled unblock came due: its handler calls `unblock_address_catch_release`.
    Unblock {
        /// The address.
        addr: Addr,
        /// The reason.
        reason: Arc<str>,
    },
}

impl Event {
    fn from_answer(rule: Arc<Rule>, plugin: PluginId, a: Answer) -> Event {
        match a {
            Answer::Added(msg) => Event::RuleAdded { rule, plugin, msg },
            Answer::Exists(msg) => Event::RuleExists { rule, plugin, msg },
            Answer::Error(msg) => Event::RuleError { rule, plugin, msg },
            Answer::Removed(msg) => Event::RuleRemoved { rule, plugin, msg },
            Answer::Timeout => Event::RuleTimeout { rule, plugin },
        }
    }
}

/// Something the engine produced for the outside world.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// A `netcontrol_catch_release.log` line.
    CatchRelease(CatchReleaseRecord),
    /// A `netcontrol.log` line.
    NetControl(NetControlRecord),
    /// A `netcontrol_drop.log` line.
    Drop(DropRecord),
    /// `NetControl::catch_release_forgotten(a, bi)`: the address is no longer tracked.
    Forgotten {
        /// The address.
        addr: Addr,
        /// Its last state.
        info: BlockInfo,
    },
    /// A `Reporter::error` message, e.g. a drop no backend would take.
    Error(String),
    /// `NetControl::catch_release_block_new(a, bi)`, which a cluster manager publishes to
    /// its workers: the address is now tracked with this state.
    BlockNew {
        /// The address.
        addr: Addr,
        /// Its state.
        info: BlockInfo,
    },
    /// `NetControl::catch_release_block_delete(a)`: the address was unblocked and is no
    /// longer tracked.
    BlockDelete {
        /// The address.
        addr: Addr,
    },
    /// A `netcontrol_catch_release_net.log` line (catch-and-release of networks).
    CatchReleaseNet(CatchReleaseNetRecord),
    /// A network is now tracked with this state (catchd's `Catchd::net_block_new`).
    NetBlockNew {
        /// The network.
        net: ipnet::IpNet,
        /// Its state.
        info: BlockInfo,
    },
    /// A network was unblocked and is no longer tracked.
    NetBlockDelete {
        /// The network.
        net: ipnet::IpNet,
    },
    /// A network's watch ended: no longer tracked.
    NetForgotten {
        /// The network.
        net: ipnet::IpNet,
        /// Its last state.
        info: BlockInfo,
    },
}

/// What [`Engine::sighting`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Sighting {
    /// The address is not tracked: nothing happened.
    Unwatched,
    /// `catch_release_seen` ran at once, as the first round's only event: drain one round
    /// fewer this moment.
    Ran,
    /// Queued behind earlier events: drain as usual.
    Queued,
}

impl Sighting {
    /// Whether the address is tracked.
    pub fn watched(self) -> bool {
        self != Sighting::Unwatched
    }

    /// How many rounds to drain this moment, given the usual number.
    pub fn rounds(self, usual: usize) -> usize {
        match self {
            Sighting::Ran => usual.saturating_sub(1),
            _ => usual,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum TimerKind {
    /// The watch-table sweep (`TableValTimer`).
    Sweep,
    /// A scheduled `rule_expire` event.
    RuleExpire { rule: Arc<Rule>, plugin: PluginId },
    /// A scheduled event whose handler drops an address with catch-and-release.
    Drop { addr: Addr, location: Arc<str> },
    /// A scheduled event whose handler unblocks an address of catch-and-release.
    Unblock { addr: Addr, reason: Arc<str> },
}

#[derive(Debug)]
struct Timer {
    at: Time,
    seq: u64,
    kind: TimerKind,
}

impl PartialEq for Timer {
    fn eq(&self, other: &Timer) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Timer {}
impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Timer) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timer {
    fn cmp(&self, other: &Timer) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// Zeek's catch-and-release, standalone, as a deterministic state machine.
pub struct Engine {
    cfg: Config,
    /// Network time.
    now: Time,
    watch: Arc<WatchTable>,
    nc: NetControl,
    queue: VecDeque<Event>,
    timers: BinaryHeap<Reverse<Timer>>,
    timer_seq: u64,
    /// Scheduled drops and unblocks not yet made ([`Engine::schedule_drop`]).
    scheduled_calls: usize,
    /// Timers fired at the current network time (against `max_timer_expires`).
    fired_now: usize,
    /// The earliest timer (`Time::MAX` when none): what [`Engine::advance`] compares
    /// against on every packet, without touching the heap.
    next_timer: Time,
    out: VecDeque<Output>,
    /// Addresses blocked recently, by network (catch-and-release of networks).
    counted: nets::Counted,
    /// Why the last rule was refused by the rule ids' source (the registry).
    last_refusal: Option<String>,
    /// The entries written with a new DROP rule whose answer has not come yet, in rule id
    /// order: see [`RecentDrop`].
    recent: VecDeque<RecentDrop>,
    /// Addresses seen while tracked and blocked, at [`Engine::state_generation`]: a
    /// sighting of one of them changes nothing.
    blocked_seen: crate::hot::HotAddrs,
    /// The same for addresses whose network was tracked and blocked.
    net_blocked_seen: crate::hot::HotAddrs,
}

/// An address entry as the engine wrote it together with a new DROP rule. Backends answer
/// rules in the order they were made, so when the answer comes, the entry is at the front
/// of [`Engine::recent`], and while the table has had no overwrite or removal since
/// (`changes`), it is still the table's entry: the answer's handler reads it from here
/// instead of looking it up in a table that has left the cache since.
#[derive(Clone, Copy, Debug)]
struct RecentDrop {
    rule: RuleId,
    addr: Addr,
    entry: Entry,
    changes: u64,
}

/// The most entries [`Engine::recent`] keeps (under 20 MiB): beyond it the oldest are
/// dropped and their answers look the table up.
const MAX_RECENT_DROPS: usize = 1 << 18;

impl Engine {
    /// Builds an engine and activates `backends` (with their priorities), logging the
    /// plugin activation lines at network time 0 as Zeek does from `zeek_init`.
    ///
    /// # Panics
    /// With more than [`MAX_BACKENDS`] backends.
    pub fn new(cfg: Config, backends: Vec<(Box<dyn Plugin>, i64)>) -> Engine {
        let start = cfg.start;
        let watch = match &cfg.networks {
            Some(n) => WatchTable::with_nets(
                cfg.intervals.clone(),
                cfg.watch_capacity,
                n.shape,
                n.intervals.clone(),
            ),
            None => WatchTable::new(cfg.intervals.clone(), cfg.watch_capacity),
        };
        let mut e = Engine {
            watch: Arc::new(watch),
            cfg,
            now: start,
            nc: NetControl::new(),
            queue: VecDeque::new(),
            timers: BinaryHeap::new(),
            timer_seq: 0,
            scheduled_calls: 0,
            fired_now: 0,
            next_timer: Time::MAX,
            out: VecDeque::new(),
            counted: nets::Counted::default(),
            last_refusal: None,
            recent: VecDeque::new(),
            blocked_seen: crate::hot::HotAddrs::new(12),
            net_blocked_seen: crate::hot::HotAddrs::new(12),
        };
        // Zeek arms the sweep timer at time 1 so that it fires on the first packet; an
        // engine started at a real time sweeps one interval later.
        let first = if start == Time::ZERO {
            Time::from_micros(1_000_000)
        } else {
            start + e.cfg.sweep_interval
        };
        e.schedule(first, TimerKind::Sweep);
        e.activate(backends);
        e
    }

    /// An engine with the built-in [`AcceptingPlugin`] at priority 0.
    pub fn with_accepting_backend(cfg: Config, name: &str) -> Engine {
        Engine::new(cfg, vec![(Box::new(AcceptingPlugin::new(name)), 0)])
    }

    /// Makes room for `n` drops about to be made at once (a replay knows how many), so the
    /// maps and queues grow once instead of by doubling while they are made.
    pub fn reserve_drops(&mut self, n: usize) {
        self.watch.reserve(n);
        self.nc.reserve(n);
        self.queue.reserve(n);
        // Each new rule sets its expiry timer.
        self.timers.reserve(n);
        self.recent.reserve(n.min(MAX_RECENT_DROPS));
    }

    /// Starts loading the table slots that dropping the new address `a` will write, for a
    /// caller making many drops at once: called a few drops ahead, it lets the cache misses
    /// of one drop overlap with the work of the ones before. A hint: it changes nothing.
    #[inline]
    pub fn prefetch_drop(&self, a: Addr) {
        self.watch.prefetch_put(&a);
        self.nc.prefetch_drop_rule(a);
    }

    /// How many outputs wait for [`Engine::poll_output`].
    pub fn pending_outputs(&self) -> usize {
        self.out.len()
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Current network time.
    pub fn now(&self) -> Time {
        self.now
    }

    /// The shared table of watched addresses.
    pub fn watched(&self) -> &Arc<WatchTable> {
        &self.watch
    }

    /// The earliest pending timer, i.e. when [`advance`](Engine::advance) next has work.
    pub fn next_deadline(&self) -> Option<Time> {
        (self.next_timer != Time::MAX).then_some(self.next_timer)
    }

    /// Whether events are waiting for [`drain`](Engine::drain).
    #[inline]
    pub fn has_pending_events(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Takes the next output.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        let o = self.out.pop_front();
        if o.is_none() {
            shrink_deque(&mut self.out);
        }
        o
    }

    /// Takes every waiting output at once, in order, leaving `spare` (emptied) as the
    /// queue: for a consumer that hands outputs on in batches, this moves none of them.
    pub fn swap_outputs(&mut self, mut spare: VecDeque<Output>) -> VecDeque<Output> {
        spare.clear();
        std::mem::replace(&mut self.out, spare)
    }

    /// Whether outputs are waiting for [`poll_output`](Engine::poll_output).
    #[inline]
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// Moves network time to `now` (it never goes back) and fires due timers in time
    /// order, at most `max_timer_expires` of them per network time, as Zeek fires at most
    /// that many per packet (the rest wait for a later time, however often this is called
    /// at the same one). The forget sweep runs at once (FORGOTTEN lines come out now);
    /// block expiries are queued as events for the next drain.
    ///
    /// Returns whether more timers are due (only possible with a timer limit).
    #[inline]
    pub fn advance(&mut self, now: Time) -> bool {
        if now > self.now {
            self.now = now;
            self.fired_now = 0;
        }
        if self.next_timer > self.now {
            return false;
        }
        self.fire_timers(self.now)
    }

    /// [`Engine::advance`], firing only the timers due by `upto` (at most `now`): what
    /// fires before a timer outside the engine (a connection's) that is due at `upto`.
    #[inline]
    pub fn advance_until(&mut self, now: Time, upto: Time) -> bool {
        if now > self.now {
            self.now = now;
            self.fired_now = 0;
        }
        let upto = upto.min(self.now);
        if self.next_timer > upto {
            return false;
        }
        self.fire_timers(upto)
    }

    /// Fires timers due by `upto`, at most `max_timer_expires` per network time; returns
    /// whether more are due.
    fn fire_timers(&mut self, upto: Time) -> bool {
        let limit = self.cfg.max_timer_expires.unwrap_or(usize::MAX);
        let mut fired = self.fired_now;
        while fired < limit {
            match self.timers.peek() {
                Some(Reverse(t)) if t.at <= upto => {}
                _ => {
                    self.fired_now = fired;
                    return false;
                }
            }
            let Some(Reverse(timer)) = self.timers.pop() else {
                self.fired_now = fired;
                return false;
            };
            if should_shrink(self.timers.len(), self.timers.capacity()) {
                self.timers.shrink_to(self.timers.len() * 2);
            }
            self.next_timer = self.timers.peek().map_or(Time::MAX, |t| t.0.at);
            fired += 1;
            match timer.kind {
                TimerKind::Sweep => {
                    self.sweep();
                    self.schedule(self.now + self.cfg.sweep_interval, TimerKind::Sweep);
                }
                TimerKind::RuleExpire { rule, plugin } => {
                    self.queue.push_back(Event::RuleExpire { rule, plugin });
                }
                TimerKind::Drop { addr, location } => {
                    self.scheduled_calls -= 1;
                    self.queue.push_back(Event::Drop { addr, location });
                }
                TimerKind::Unblock { addr, reason } => {
                    self.scheduled_calls -= 1;
                    self.queue.push_back(Event::Unblock { addr, reason });
                }
            }
        }
        self.fired_now = fired;
        self.timers.peek().is_some_and(|t| t.0.at <= self.now)
    }

    fn schedule(&mut self, at: Time, kind: TimerKind) {
        self.next_timer = self.next_timer.min(at);
        self.timer_seq += 1;
        self.timers.push(Reverse(Timer {
            at,
            seq: self.timer_seq,
            kind,
        }));
    }

    /// Runs up to `rounds` rounds of queued events.
    pub fn drain(&mut self, rounds: usize) {
        self.drain_with(rounds, |_, _| {});
    }

    /// Runs queued events until none are left (bounded, against runaway backends).
    pub fn drain_all(&mut self) {
        self.drain(MAX_DRAIN_ROUNDS);
    }

    /// Runs up to `rounds` rounds of queued events, calling `hook` after each event's
    /// handlers, as a lower-priority Zeek handler of that event would run.
    pub fn drain_with(&mut self, rounds: usize, mut hook: impl FnMut(&mut Engine, &Event)) {
        for _ in 0..rounds {
            let n = self.queue.len();
            if n == 0 {
                shrink_deque(&mut self.queue);
                return;
            }
            for _ in 0..n {
                let Some(ev) = self.queue.pop_front() else {
                    break;
                };
                self.dispatch(&ev);
                hook(self, &ev);
            }
        }
    }

    /// Shuts down as Zeek does at the end of a trace: network time stays where it is,
    /// the timers still pending are dispatched (their events run: a scheduled drop is
    /// made, an expiry does nothing since Zeek is terminating; the sweep does not run), and
    /// queued events run; no timer set meanwhile fires.
    pub fn finish(&mut self) {
        self.finish_then(|_| {});
    }

    /// [`Engine::finish`], with `then` run after the pending timers' events are queued
    /// and before they run: where Zeek's end-of-trace connection events
    /// (`connection_pending`) come.
    pub fn finish_then(&mut self, then: impl FnOnce(&mut Engine)) {
        self.nc.terminating = true;
        self.next_timer = Time::MAX;
        if self.scheduled_calls == 0 {
            // Nothing pending would do anything: leave the timers be.
            then(self);
            self.drain_all();
            return;
        }
        let timers = std::mem::take(&mut self.timers);
        let mut pending: Vec<Timer> = timers
            .into_iter()
            .map(|Reverse(t)| t)
            .filter(|t| matches!(t.kind, TimerKind::Drop { .. } | TimerKind::Unblock { .. }))
            .collect();
        pending.sort_unstable();
        for t in pending {
            match t.kind {
                TimerKind::Drop { addr, location } => {
                    self.queue.push_back(Event::Drop { addr, location });
                }
                TimerKind::Unblock { addr, reason } => {
                    self.queue.push_back(Event::Unblock { addr, reason });
                }
                TimerKind::Sweep | TimerKind::RuleExpire { .. } => {}
            }
        }
        then(self);
        self.drain_all();
    }

    /// Zeek's `schedule` of an event whose handler calls `drop_address_catch_release`:
    /// the drop is made at the first step whose network time reaches `at` (with that
    /// step's time), after the timers due before it and subject to the same
    /// `max_timer_expires`; one still pending at [`Engine::finish`] is made then.
    pub fn schedule_drop(&mut self, at: Time, a: impl Into<Addr>, location: &str) {
        self.scheduled_calls += 1;
        let kind = TimerKind::Drop {
            addr: a.into(),
            location: Arc::from(location),
        };
        self.schedule(at, kind);
    }

    /// [`Engine::schedule_drop`] for `unblock_address_catch_release`.
    pub fn schedule_unblock(&mut self, at: Time, a: impl Into<Addr>, reason: &str) {
        self.scheduled_calls += 1;
        let kind = TimerKind::Unblock {
            addr: a.into(),
            reason: Arc::from(reason),
        };
        self.schedule(at, kind);
    }

    /// Runs one event's handlers in Zeek's priority order.
    fn dispatch(&mut self, ev: &Event) {
        match ev {
            Event::RuleAdded { rule, plugin, msg } => {
                self.nc_rule_added(rule, *plugin, false, msg);
                self.cr_rule_answer(rule, *plugin, Action::Dropped, non_empty(msg));
            }
            Event::RuleExists { rule, plugin, msg } => {
                self.nc_rule_added(rule, *plugin, true, msg);
                let text = format!("{msg}Existing rule encountered while inserting rule");
                self.cr_rule_answer(rule, *plugin, Action::Info, Some(text));
            }
            Event::RuleError { rule, plugin, msg } => {
                let text = format!("Error occurred during rule operation: {msg}");
                self.cr_rule_answer(rule, *plugin, Action::Info, Some(text));
                self.nc_rule_error(rule, *plugin, msg);
            }
            Event::RuleTimeout { rule, plugin } => {
                self.cr_rule_timeout(rule, *plugin);
                self.nc_rule_timeout(rule, *plugin);
            }
            Event::RuleRemoved { rule, plugin, msg } => self.nc_rule_removed(rule, *plugin, msg),
            Event::RuleExpire { rule, plugin } => self.nc_rule_expire(rule, *plugin),
            Event::Seen(a) => {
                self.seen_impl(*a);
            }
            Event::Drop { addr, location } => {
                self.drop_now(*addr, location);
            }
            Event::Unblock { addr, reason } => {
                self.unblock_now(*addr, reason);
            }
        }
    }

    /// A backend's late answer about a rule it accepted, queued like the event Zeek's
    /// plugins raise.
    pub fn answer(&mut self, now: Time, rule: Arc<Rule>, plugin: PluginId, answer: Answer) {
        self.advance(now);
        self.queue
            .push_back(Event::from_answer(rule, plugin, answer));
    }

    fn report(&mut self, msg: String) {
        self.out.push_back(Output::Error(msg));
    }

    // ----- catch-and-release -----

    /// A log record for `a` in state `e` (`populate_log_record`).
    fn cr_record(&self, a: Addr, e: &Entry, action: Action) -> CatchReleaseRecord {
        let iv = &self.cfg.intervals;
        let k = usize::from(e.step);
        CatchReleaseRecord {
            ts: self.now,
            rule_id: e.rule,
            ip: a,
            action,
            block_interval: iv.block(k),
            watch_interval: iv.watch(k),
            blocked_until: e.block_until(iv),
            watched_until: e.watch_until(iv),
            num_blocked: u64::from(e.reblocked) + 1,
            location: self.watch.location(e.location),
            message: None,
            plugin: None,
        }
    }

    fn emit(&mut self, mut rec: CatchReleaseRecord, message: Option<String>) {
        rec.message = message;
        self.out.push_back(Output::CatchRelease(rec));
    }

    /// `drop_address_catch_release`: starts catch-and-release for `a` at step 0, or adopts
    /// an existing DROP rule for it (ADDED), or reports the duplicate (INFO). Returns the
    /// resulting [`BlockInfo`]; `watch_until` is 0 if no backend took the drop.
    pub fn drop_catch_release(
        &mut self,
        now: Time,
        a: impl Into<Addr>,
        location: &str,
    ) -> BlockInfo {
        self.advance(now);
        self.drop_now(a.into(), location)
    }

    /// `drop_address_catch_release` at the engine's current time.
    fn drop_now(&mut self, a: Addr, location: &str) -> BlockInfo {
        if let Some(e) = self.watch.entry(&a) {
            let rec = self.cr_record(a, &e, Action::Info);
            self.emit(
                rec,
                Some("Already blocked using catch-and-release - ignoring duplicate".into()),
            );
            return self.watch.block_info(&e);
        }
        let t = self.now;
        if let Some(existing) = self.nc.drop_rule_for(a) {
            let e = Entry {
                start: t,
                expire_ref: t,
                rule: Some(existing),
                location: self.watch.intern_location(location),
                reblocked: 0,
                step: 0,
                adopted: true,
            };
            let rec = self.cr_record(a, &e, Action::Added);
            self.emit(rec, Some("Address already blocked outside of catch-and-release. Catch and release will monitor and only actively block if it appears in network traffic.".into()));
            self.watch.put(a, &e);
            let info = self.watch.block_info(&e);
            self.publish_block_new(a, &info);
            return info;
        }
        let block = self.cfg.intervals.block(0);
        let (location_id, location) = self.watch.intern_location_shared(location);
        match self.nc_drop_shared(host_net(a), block, location) {
            Some(id) => {
                let e = Entry {
                    start: t,
                    expire_ref: t,
                    rule: Some(id),
                    location: location_id,
                    reblocked: 0,
                    step: 0,
                    adopted: false,
                };
                self.watch.put(a, &e);
                self.note_recent(id, a, &e);
                let info = self.watch.block_info(&e);
                self.publish_block_new(a, &info);
                let rec = self.cr_record(a, &e, Action::DropRequested);
                self.emit(rec, None);
                self.net_note_block(a);
                info
            }
            None => {
                self.watch.release_location(location_id);
                self.report(format!(
                    "Catch and release could not add block for {a}; failing."
                ));
                BlockInfo::unknown()
            }
        }
    }

    /// `catch_release_seen`, called directly: re-blocks one step higher if `a` is watched
    /// and no DROP rule for it is in place.
    pub fn seen(&mut self, now: Time, a: impl Into<Addr>) {
        self.advance(now);
        self.seen_impl(a.into());
    }

    /// A sighting from traffic: `catch_release_seen(a)` as a connection event calls it,
    /// i.e. as an event in the first round of this moment's drain. Returns what happened;
    /// see [`Sighting`] for how many rounds the caller then drains.
    ///
    /// When nothing is queued yet, the sighting would be the only event of that round, so
    /// it runs at once, which spares the queue for the common case of an unwatched or
    /// still-blocked address. Otherwise it is queued behind what is already there.
    #[inline]
    pub fn sighting(&mut self, now: Time, a: Addr) -> Sighting {
        self.advance(now);
        if !self.watch.may_contain(&a) {
            return Sighting::Unwatched;
        }
        if self.queue.is_empty() {
            return if self.seen_impl(a) {
                Sighting::Ran
            } else {
                Sighting::Unwatched
            };
        }
        if !self.watch.contains(&a) {
            return Sighting::Unwatched;
        }
        self.queue.push_back(Event::Seen(a));
        Sighting::Queued
    }

    /// A sighting queued as an event of this moment's first round, behind what is queued
    /// already (for a moment with more than one sighting, or sightings from timers).
    /// Returns whether `a` is tracked.
    #[inline]
    pub fn queue_sighting(&mut self, a: Addr) -> bool {
        if !self.watch.contains(&a) {
            return false;
        }
        self.queue.push_back(Event::Seen(a));
        true
    }

    /// Whether a sighting of `a` now would re-drop it: it is watched and no DROP rule for
    /// it is in place.
    pub fn may_redrop(&self, a: Addr) -> bool {
        (self.watch.contains_address(&a) && self.nc.drop_rule_for(a).is_none())
            || self.may_redrop_net(a)
    }

    /// `catch_release_seen` for the address, then for its network (catch-and-release of
    /// networks); returns whether either is tracked.
    fn seen_impl(&mut self, a: Addr) -> bool {
        let address = self.seen_address(a);
        let network = self.net_seen(a);
        address || network
    }

    /// Changes whenever an entry is overwritten or removed or a rule leaves
    /// `rule_entities`: what could make "tracked and blocked" false for an address or a
    /// network.
    #[inline]
    fn state_generation(&self) -> u64 {
        self.watch.changes().wrapping_add(self.nc.entity_removals())
    }

    /// `catch_release_seen`; returns whether `a` is tracked.
    fn seen_address(&mut self, a: Addr) -> bool {
        let generation = self.state_generation();
        if !self.cfg.warn_blocked && self.blocked_seen.contains(&a, generation) {
            return true;
        }
        let Some(mut e) = self.watch.entry(&a) else {
            return false;
        };
        if self.nc.drop_rule_for(a).is_some() {
            if self.cfg.warn_blocked {
                let rec = self.cr_record(a, &e, Action::Info);
                self.emit(
                    rec,
                    Some("Block seen while in rule_entities. No action taken.".into()),
                );
            } else {
                self.blocked_seen.insert(a, generation);
            }
            return true;
        }
        let k = self.cfg.intervals.escalate(usize::from(e.step));
        e.step = k as u8;
        e.start = self.now;
        e.adopted = false;
        e.count_reblock();
        let location = self.watch.location(e.location);
        let redrop = format!(
            "Re-drop by catch-and-release: {}",
            location.as_deref().unwrap_or("")
        );
        e.rule = self.nc_drop(host_net(a), self.cfg.intervals.block(k), &redrop);
        self.watch.put(a, &e);
        let rec = self.cr_record(a, &e, Action::SeenAgain);
        self.emit(rec, None);
        let info = self.watch.block_info(&e);
        self.publish_block_new(a, &info);
        self.net_note_block(a);
        true
    }

    /// `unblock_address_catch_release`: stops tracking `a`, removing its block if
    /// catch-and-release put one in place that has not ended. Returns false if `a` was not
    /// tracked.
    pub fn unblock_catch_release(&mut self, now: Time, a: impl Into<Addr>, reason: &str) -> bool {
        self.advance(now);
        self.unblock_now(a.into(), reason)
    }

    /// `unblock_address_catch_release` at the engine's current time.
    fn unblock_now(&mut self, a: Addr, reason: &str) -> bool {
        let Some(e) = self.watch.entry(&a) else {
            return false;
        };
        let rec = self.cr_record(a, &e, Action::Unblock);
        self.emit(rec, non_empty(reason));
        self.watch.remove(&a);
        let block_until = e.block_until(&self.cfg.intervals);
        if let (Some(bu), Some(id)) = (block_until, e.rule)
            && bu > self.now
        {
            self.nc_remove_rule(id, reason);
        }
        self.cluster_output(|| Output::BlockDelete { addr: a });
        true
    }

    /// What a cluster manager publishes to its workers after DROP_REQUESTED, ADDED and
    /// SEEN_AGAIN.
    fn publish_block_new(&mut self, addr: Addr, info: &BlockInfo) {
        if self.cfg.cluster_outputs {
            self.out.push_back(Output::BlockNew {
                addr,
                info: info.clone(),
            });
        }
    }

    /// Queues an output that only a cluster manager uses (see [`Config::cluster_outputs`]).
    fn cluster_output(&mut self, o: impl FnOnce() -> Output) {
        if self.cfg.cluster_outputs {
            self.out.push_back(o());
        }
    }

    /// `get_catch_release_info`: the [`BlockInfo`] of `a`, with `watch_until` 0 when unknown.
    pub fn info(&self, a: impl Into<Addr>) -> BlockInfo {
        self.watch.get(&a.into()).unwrap_or_else(BlockInfo::unknown)
    }

    /// The catch-and-release handler of `rule_added`, `rule_exists` and `rule_error`: one
    /// DROPPED or INFO line per answering backend, if the rule is for a watched host.
    fn cr_rule_answer(&mut self, r: &Rule, p: PluginId, action: Action, message: Option<String>) {
        let Some((a, e)) = self.cr_check_rule(r) else {
            self.net_rule_answer(r, p, action, message);
            return;
        };
        let mut rec = self.cr_record(a, &e, action);
        rec.plugin = self.nc.plugin_name(p);
        self.emit(rec, message);
    }

    /// The catch-and-release handler of `rule_timeout`: UNBLOCK, with a note when network
    /// time is more than a minute away from `block_until`.
    fn cr_rule_timeout(&mut self, r: &Rule, p: PluginId) {
        let Some((a, e)) = self.cr_check_rule(r) else {
            self.net_rule_timeout(r, p);
            return;
        };
        let mut rec = self.cr_record(a, &e, Action::Unblock);
        rec.plugin = self.nc.plugin_name(p);
        let message = rec.blocked_until.and_then(|bu| {
            let diff = self.now - bu;
            (diff.abs() > Interval::from_secs(60)).then(|| {
                format!("Difference between network_time and block time excessive: {diff}")
            })
        });
        self.emit(rec, message);
    }

    /// `cr_check_rule`: a DROP of a single host that catch-and-release tracks.
    fn cr_check_rule(&mut self, r: &Rule) -> Option<(Addr, Entry)> {
        if r.ty != RuleType::Drop {
            return None;
        }
        let a = r.host()?;
        if let Some(e) = self.take_recent(r.id, a) {
            return Some((a, e));
        }
        Some((a, self.watch.entry(&a)?))
    }

    /// Remembers the entry just written for `a` with its new rule `rule`.
    fn note_recent(&mut self, rule: RuleId, a: Addr, e: &Entry) {
        let changes = self.watch.changes();
        if self
            .recent
            .back()
            .is_some_and(|b| b.changes != changes || b.rule >= rule)
        {
            // Older copies are stale (or ids went back, which a registry may do).
            self.recent.clear();
        }
        if self.recent.len() >= MAX_RECENT_DROPS {
            self.recent.pop_front();
        }
        self.recent.push_back(RecentDrop {
            rule,
            addr: a,
            entry: *e,
            changes,
        });
    }

    /// The entry remembered for `rule`, if it is still the table's entry for `a`.
    #[inline]
    fn take_recent(&mut self, rule: RuleId, a: Addr) -> Option<Entry> {
        while let Some(f) = self.recent.front() {
            if f.rule > rule {
                return None;
            }
            let f = *f;
            self.recent.pop_front();
            if f.rule == rule {
                return (f.addr == a && f.changes == self.watch.changes()).then_some(f.entry);
            }
        }
        None
    }

    /// The table-expiry sweep over `blocks` with `per_block_interval` as expire function:
    /// an entry is looked at when its reference time has passed; it is forgotten if its
    /// watch has ended (`watch_until <= now`), otherwise its reference moves to
    /// `watch_until`. Forgotten addresses come out ordered by `watch_until`, then address,
    /// so logs are reproducible (Zeek's order is its hash order).
    ///
    /// Zeek sweeps large tables in chunks of 5000 entries, 10 ms apart; this sweep visits
    /// every entry at once, which gives the same result for up to 5000 watched addresses.
    fn sweep(&mut self) {
        let now = self.now;
        let iv = self.cfg.intervals.clone();
        let mut gone: Vec<(Addr, Entry)> = Vec::new();
        self.watch.sweep(now, |a, e| {
            let verdict = e.sweep(now, &iv);
            if verdict == Sweep::Remove {
                gone.push((a, *e));
            }
            verdict
        });
        gone.sort_unstable_by_key(|(a, e)| (e.watch_until(&iv), *a));
        for (a, e) in gone {
            let rec = self.cr_record(a, &e, Action::Forgotten);
            let info = self.watch.block_info(&e);
            self.emit(rec, None);
            self.cluster_output(|| Output::Forgotten { addr: a, info });
            self.watch.release_location(e.location);
        }
        self.sweep_nets();
    }

    // ----- NetControl, for callers -----

    /// `NetControl::drop_address` for an address or subnet, outside catch-and-release.
    /// Returns the rule id, or `None` if the drop was refused (logged as FAILED).
    pub fn drop_address(
        &mut self,
        now: Time,
        entity: ipnet::IpNet,
        expire: Interval,
        location: &str,
    ) -> Option<RuleId> {
        self.advance(now);
        self.nc_drop(entity.trunc(), expire, location)
    }

    /// `NetControl::remove_rule`: asks backends to remove a rule.
    pub fn remove_rule(&mut self, now: Time, id: RuleId, reason: &str) -> bool {
        self.advance(now);
        self.nc_remove_rule(id, reason)
    }

    /// `NetControl::delete_rule`: forgets a rule without telling backends.
    pub fn delete_rule(&mut self, now: Time, id: RuleId, reason: &str) -> bool {
        self.advance(now);
        self.nc_delete_rule(id, reason)
    }

    /// The live rule with this id.
    pub fn rule(&self, id: RuleId) -> Option<Arc<Rule>> {
        self.nc.rule(id).cloned()
    }

    /// The DROP rule in place for exactly this address, if any.
    pub fn drop_rule_for(&self, a: IpAddr) -> Option<RuleId> {
        self.nc.drop_rule_for(Addr::from(a))
    }

    /// The `plugin` column name of a backend.
    pub fn plugin_name(&self, id: PluginId) -> Option<Arc<str>> {
        self.nc.plugin_name(id)
    }

    /// The number of live NetControl rules.
    pub fn rule_count(&self) -> usize {
        self.nc.rule_count()
    }

    /// The backends that accepted a live rule, and those on which it is in place.
    pub fn rule_plugins(&self, id: RuleId) -> Option<(Vec<PluginId>, Vec<PluginId>)> {
        self.nc.rule_plugins(id)
    }

    /// The backend logging as `name`.
    pub fn plugin_id(&self, name: &str) -> Option<PluginId> {
        self.nc.plugin_id(name)
    }

    /// Lets `ids` assign rule ids (and veto rules) instead of NetControl's counter.
    pub fn set_rule_ids(&mut self, ids: Box<dyn RuleIds>) {
        self.nc.ids = Some(ids);
    }

    // ----- persistence -----

    /// The full state of a watched address, for a store.
    pub fn watch_state(&self, a: impl Into<Addr>) -> Option<WatchState> {
        let e = self.watch.entry(&a.into())?;
        Some(WatchState {
            start: e.start,
            expire_ref: e.expire_ref,
            rule: e.rule,
            location: self.watch.location(e.location),
            reblocked: e.reblocked,
            step: e.step,
            adopted: e.adopted,
        })
    }

    /// Puts a watched address back as a store kept it, without logging anything. A step
    /// beyond the ladder (the intervals were shortened) is clamped to its last step.
    pub fn restore_watch(&mut self, a: impl Into<Addr>, st: &WatchState) {
        let a = a.into();
        let last = self.cfg.intervals.len().saturating_sub(1);
        let e = Entry {
            start: st.start,
            expire_ref: st.expire_ref,
            rule: st.rule,
            location: self
                .watch
                .intern_location(st.location.as_deref().unwrap_or("")),
            reblocked: st.reblocked,
            step: st.step.min(u8::try_from(last).unwrap_or(u8::MAX)),
            adopted: st.adopted,
        };
        if let Some(old) = self.watch.entry(&a) {
            self.watch.release_location(old.location);
        }
        self.watch.put(a, &e);
    }

    /// Puts a live rule back (after a restart, or a block made elsewhere that NetControl
    /// must know about), without logging or asking backends. `accepted` are the backends
    /// that took it, `active` those on which it is in place. Backends that cannot expire
    /// rules get NetControl's expiry at `expires_at`.
    pub fn restore_rule(
        &mut self,
        rule: Rule,
        accepted: &[PluginId],
        active: &[PluginId],
        expires_at: Option<Time>,
    ) {
        let rule = Arc::new(rule);
        let expiring: Vec<PluginId> = active
            .iter()
            .copied()
            .filter(|p| !self.nc.can_expire(*p))
            .collect();
        self.nc.restore(rule.clone(), accepted, active);
        if let Some(at) = expires_at {
            for plugin in expiring {
                self.schedule(
                    at,
                    TimerKind::RuleExpire {
                        rule: rule.clone(),
                        plugin,
                    },
                );
            }
        }
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// Collections keep their peak capacity; after a burst (a mass expiry, a bulk drop) a
/// long-running engine would hold on to it for good. These return most of it once the
/// collection is mostly empty. Shrinking to twice the length costs O(len) and can only
/// happen again after the length has shrunk by half or grown by a quarter of the
/// capacity, so it is amortised O(1) per operation.
const SHRINK_ABOVE: usize = 4096;

pub(crate) fn should_shrink(len: usize, capacity: usize) -> bool {
    capacity > SHRINK_ABOVE && len < capacity / 4
}

fn shrink_deque<T>(d: &mut VecDeque<T>) {
    if should_shrink(d.len(), d.capacity()) {
        d.shrink_to(d.len() * 2);
    }
}
