//! The manager's side of the event bus: what the core publishes, and the NetControl
//! backend contract (Zeek's broker plugin events) on top of the registry.
//!
//! Published, as a Zeek cluster manager does: `catch_release_block_new` and
//! `catch_release_block_delete` on the worker topic. Also, on catchd's own topic,
//! `catch_release_forgotten` and every catch-and-release log record as Zeek's log event
//! `log_netcontrol_catch_release`, so a subscriber sees everything the log shows.
//!
//! NetControl backend: `broker_add_rule(id, r)` for an address DROP becomes a registry
//! block (source `bus.netcontrol_source`, why the rule's location, duration its expire);
//! the answer is `broker_rule_added` (a new block), `broker_rule_exists` (the network was
//! already blocked) or `broker_rule_error` (not a DROP of an address, or refused by the
//! whitelist or prefix rules), sent once the block is durable, with the rule echoed
//! unchanged. `broker_remove_rule` ends the block and answers `broker_rule_removed`. When
//! the block ends by itself catchd sends `broker_rule_timeout` (the plugin in
//! `zeek-scripts/` is created with `can_expire = T`); when someone unblocks it in catchd
//! (the BHR API, the pages), `broker_rule_removed` with the unblock's reason, so Zeek's
//! `netcontrol.log` shows `REMOVE REMOVED` rather than a timeout that did not happen.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::api::bhr::{AppState, Tell};
use crate::bhr::model::{Block, UserId};
use crate::bhr::registry::NewBlock;
use crate::broker::zeek::{self, RuleView};
use crate::broker::{Event, Value};
use crate::bus::Publisher;
use crate::cnr::{CatchReleaseRecord, Output, WatchTable};
use crate::daemon::effects::Effects;
use crate::time::Time;

/// A rule Zeek gave catchd, kept to answer about it later.
#[derive(Clone, Debug)]
struct ZeekRule {
    /// The plugin's `broker_id`.
    plugin: u64,
    /// The rule as received.
    raw: Value,
    /// Its `id`.
    id: String,
    /// The topic to answer on.
    topic: Arc<str>,
    /// Whether this rule made the block (an `exists` answer means someone else did, and
    /// removing the rule leaves the block alone).
    owns: bool,
}

/// A NetControl request as received: where it came from and the rule.
pub struct RuleRequest<'a> {
    /// The topic to answer on.
    pub topic: &'a str,
    /// The plugin's `broker_id`.
    pub plugin: u64,
    /// The rule as received (echoed back).
    pub raw: Value,
    /// What catchd reads of it.
    pub rule: Result<RuleView, &'static str>,
}

/// The bus side of the manager.
pub struct ManagerBus {
    publisher: Publisher,
    node_id: String,
    netcontrol: bool,
    source: String,
    who: UserId,
    /// Registry block → the Zeek rules it stands for.
    rules: HashMap<u64, Vec<ZeekRule>>,
    /// Zeek rule id → registry block.
    by_id: HashMap<String, u64>,
    /// Block ends to report as timeouts.
    ends: BTreeSet<(Time, u64)>,
    /// Answers waiting for their block to be durable.
    pending: Vec<(Arc<str>, Event)>,
}

impl ManagerBus {
    /// The manager's bus side, publishing through `publisher`; NetControl rules become
    /// blocks made as `who` with `source`.
    pub fn new(
        publisher: Publisher,
        node_id: String,
        netcontrol: bool,
        source: String,
        who: UserId,
    ) -> ManagerBus {
        ManagerBus {
            publisher,
            node_id,
            netcontrol,
            source,
            who,
            rules: HashMap::new(),
            by_id: HashMap::new(),
            ends: BTreeSet::new(),
            pending: Vec::new(),
        }
    }

    /// Tells sensors a manager is (back) up, so they ask for the watched set.
    pub fn announce(&self) {
        self.publisher
            .publish(zeek::CONTROL_SENSOR_TOPIC, zeek::manager_up(&self.node_id));
    }

    /// Publishes what an engine output means on the bus.
    pub fn output(&self, o: &Output) {
        match o {
            Output::CatchRelease(r) => self.record(r),
            Output::Forgotten { addr, info } => {
                self.publisher
                    .publish(zeek::CATCHD_TOPIC, zeek::forgotten(*addr, info));
            }
            Output::BlockNew { addr, info } => {
                self.publisher
                    .publish(zeek::WORKER_TOPIC, zeek::block_new(*addr, info));
            }
            Output::BlockDelete { addr } => {
                self.publisher
                    .publish(zeek::WORKER_TOPIC, zeek::block_delete(*addr));
            }
            Output::CatchReleaseNet(r) => {
                self.publisher
                    .publish(zeek::CATCHD_TOPIC, zeek::log_net_record(r));
            }
            Output::NetBlockNew { net, info } => {
                self.publisher
                    .publish(zeek::CATCHD_TOPIC, zeek::net_block_new(*net, info));
            }
            Output::NetBlockDelete { net } => {
                self.publisher
                    .publish(zeek::CATCHD_TOPIC, zeek::net_block_delete(*net));
            }
            Output::NetForgotten { net, info } => {
                self.publisher
                    .publish(zeek::CATCHD_TOPIC, zeek::net_forgotten(*net, info));
            }
            Output::NetControl(_) | Output::Drop(_) | Output::Error(_) => {}
        }
    }

    fn record(&self, r: &CatchReleaseRecord) {
        self.publisher
            .publish(zeek::CATCHD_TOPIC, zeek::log_record(r));
    }

    /// Answers the Zeek plugin's hello, so it activates.
    pub fn hello(&self, topic: &str, id: u64) {
        if self.netcontrol {
            self.publisher
                .publish(topic.to_string(), zeek::netcontrol_ready(id));
        }
    }

    /// Answers a sensor's sync request with the whole watched set, framed by
    /// `sync_begin(n)` and `sync_end(n)`, on the sensor's own topic.
    pub fn sync(&self, node: &str, watch: &WatchTable) {
        let topic: Arc<str> = Arc::from(format!("{}{node}.", zeek::NODE_TOPIC_PREFIX));
        let all = watch.snapshot();
        let n = all.len() as u64;
        self.publisher
            .publish(topic.clone(), zeek::sync_mark(zeek::SYNC_BEGIN, n));
        for (a, b) in &all {
            self.publisher
                .publish(topic.clone(), zeek::block_new(*a, b));
        }
        self.publisher
            .publish(topic, zeek::sync_mark(zeek::SYNC_END, n));
        tracing::info!(node, watched = n, "Bus: sent the watched set to a sensor.");
    }

    /// `broker_add_rule`: returns the block it made or found, for the core to mirror into
    /// catch-and-release.
    pub fn add_rule(
        &mut self,
        api: &AppState,
        effects: &mut Effects,
        req: RuleRequest<'_>,
        now: Time,
    ) -> Option<Block> {
        let RuleRequest {
            topic,
            plugin,
            raw,
            rule,
        } = req;
        let topic: Arc<str> = Arc::from(topic);
        if !self.netcontrol {
            return None;
        }
        let answer = |name, msg: &str, raw: Value| zeek::rule_answer(name, plugin, raw, msg);
        let r = match rule {
            Ok(r) => r,
            Err(field) => {
                let msg = format!("catchd cannot read the rule's {field}");
                self.answer_now(&topic, answer(zeek::BROKER_RULE_ERROR, &msg, raw));
                return None;
            }
        };
        let net = match (&*r.ty, &*r.entity_ty, r.ip) {
            ("NetControl::DROP", "NetControl::ADDRESS", Some(net)) => net,
            ("NetControl::DROP", _, _) => {
                let msg = "catchd drops addresses and networks only";
                self.answer_now(&topic, answer(zeek::BROKER_RULE_ERROR, msg, raw));
                return None;
            }
            _ => {
                let msg = format!("catchd handles DROP rules only, not {}", r.ty);
                self.answer_now(&topic, answer(zeek::BROKER_RULE_ERROR, &msg, raw));
                return None;
            }
        };
        let expire = r.expire.filter(|e| e.as_micros() > 0);
        let why = r
            .location
            .clone()
            .filter(|l| !l.is_empty())
            .unwrap_or_else(|| format!("NetControl rule {}", r.id));
        let mut req =
            NewBlock::new(net.trunc(), self.who, &self.source, why).until(expire.map(|e| now + e));
        req.cidr_text = net.to_string();
        match effects.add_block(&req, now, Tell::Nobody) {
            Ok((id, created)) => {
                let block = api.block(id);
                let name = if created {
                    zeek::BROKER_RULE_ADDED
                } else {
                    zeek::BROKER_RULE_EXISTS
                };
                let msg = if created {
                    format!("registry block {id}")
                } else {
                    format!("already blocked by registry block {id}")
                };
                self.pending
                    .push((topic.clone(), answer(name, &msg, raw.clone())));
                if let Some(old) = self.by_id.insert(r.id.clone(), id) {
                    self.forget(old, &r.id);
                }
                self.rules.entry(id).or_default().push(ZeekRule {
                    plugin,
                    raw,
                    id: r.id,
                    topic,
                    owns: created,
                });
                if let Some(u) = block.as_ref().and_then(|b| b.unblock_at) {
                    self.ends.insert((u, id));
                }
                block
            }
            Err(refused) => {
                let msg = refused.0;
                self.answer_now(&topic, answer(zeek::BROKER_RULE_ERROR, &msg, raw));
                None
            }
        }
    }

    /// Drops the Zeek rule `id` from `block`; returns whether it owned the block.
    fn forget(&mut self, block: u64, id: &str) -> bool {
        let mut owned = false;
        if let Some(v) = self.rules.get_mut(&block) {
            v.retain(|z| {
                owned |= z.id == id && z.owns;
                z.id != id
            });
            if v.is_empty() {
                self.rules.remove(&block);
            }
        }
        owned
    }

    /// `broker_remove_rule`: ends the rule's block if the rule made it (and no other Zeek
    /// rule stands for it) and answers `broker_rule_removed`.
    pub fn remove_rule(
        &mut self,
        effects: &mut Effects,
        req: RuleRequest<'_>,
        reason: &str,
        now: Time,
    ) {
        if !self.netcontrol {
            return;
        }
        let RuleRequest {
            topic,
            plugin,
            raw,
            rule,
        } = req;
        let topic: Arc<str> = Arc::from(topic);
        let id = rule.ok().map(|r| r.id);
        let block = id.as_ref().and_then(|id| self.by_id.remove(id));
        let mut msg = String::new();
        if let (Some(block), Some(id)) = (block, id.as_ref()) {
            let owned = self.forget(block, id);
            if !owned {
                msg = format!("registry block {block} was not made by this rule; left in place");
            } else if !self.rules.contains_key(&block) {
                let why = if reason.is_empty() {
                    "removed by NetControl"
                } else {
                    reason
                };
                msg = if effects.end_block(block, self.who, why, now) {
                    format!("registry block {block} ended")
                } else {
                    format!("registry block {block} had already ended")
                };
            }
        } else {
            msg.push_str("not blocked by catchd");
        }
        self.pending.push((
            topic,
            zeek::rule_answer(zeek::BROKER_RULE_REMOVED, plugin, raw, &msg),
        ));
    }

    fn answer_now(&mut self, topic: &Arc<str>, e: Event) {
        self.pending.push((topic.clone(), e));
    }

    /// Sends the answers, once what they report is durable (everything submitted to
    /// `store` so far).
    pub fn send_answers(&mut self, store: &crate::store::Store) {
        if self.pending.is_empty() {
            return;
        }
        if let Err(e) = store.submit(Vec::new()).blocking_recv().unwrap_or(Ok(())) {
            tracing::error!(error = %e, "Bus: a NetControl block is not durable; not answering.");
            self.pending.clear();
            return;
        }
        for (topic, e) in self.pending.drain(..) {
            self.publisher.publish(topic, e);
        }
    }

    /// The earliest block end to report.
    pub fn next_end(&self) -> Option<Time> {
        self.ends.first().map(|(t, _)| *t)
    }

    /// Reports `broker_rule_timeout` for every Zeek rule whose block ended by `now`.
    pub fn expire(&mut self, api: &AppState, now: Time) {
        while let Some(&(t, id)) = self.ends.first() {
            if t > now {
                break;
            }
            self.ends.pop_first();
            match api.block(id) {
                Some(b) if !b.forced_unblock && b.unblock_at.is_none_or(|u| u > now) => {
                    // Extended since.
                    if let Some(u) = b.unblock_at {
                        self.ends.insert((u, id));
                    }
                }
                Some(b) if b.forced_unblock => self.removed(&b),
                _ => self.timeout(id),
            }
        }
    }

    /// A block Zeek rules stand for changed in the registry (BHR API): a forced unblock
    /// is a removal to Zeek, an end that has come a timeout; a new end is rescheduled.
    pub fn block_changed(&mut self, b: &Block, now: Time) {
        if !self.rules.contains_key(&b.id) {
            return;
        }
        if b.forced_unblock {
            self.removed(b);
        } else if b.unblock_at.is_some_and(|u| u <= now) {
            self.timeout(b.id);
        } else if let Some(u) = b.unblock_at {
            self.ends.retain(|(_, id)| *id != b.id);
            self.ends.insert((u, b.id));
        }
    }

    /// `broker_rule_removed` for every Zeek rule of a block unblocked in catchd.
    fn removed(&mut self, b: &Block) {
        self.ends.retain(|(_, id)| *id != b.id);
        let msg = format!("unblocked in catchd: {}", b.unblock_why);
        for z in self.rules.remove(&b.id).unwrap_or_default() {
            self.by_id.remove(&z.id);
            self.publisher.publish(
                z.topic.clone(),
                zeek::rule_answer(zeek::BROKER_RULE_REMOVED, z.plugin, z.raw, &msg),
            );
        }
    }

    fn timeout(&mut self, block: u64) {
        self.ends.retain(|(_, id)| *id != block);
        for z in self.rules.remove(&block).unwrap_or_default() {
            self.by_id.remove(&z.id);
            self.publisher
                .publish(z.topic.clone(), zeek::rule_timeout(z.plugin, z.raw));
        }
    }
}
