//! The part of Zeek's NetControl framework that catch-and-release stands on.
//!
//! NetControl owns *rules*: a DROP of an address entity, sent to *backends* (Zeek calls
//! them plugins), which answer asynchronously (`rule_added`, `rule_exists`, `rule_error`,
//! `rule_removed`, `rule_timeout`). Catch-and-release asks "is there a DROP rule for this
//! address?" (`rule_entities`) and reacts to the answers. This module reproduces the rule
//! bookkeeping of zeek/zeek:`scripts/base/frameworks/netcontrol/main.zeek` and
//! `non-cluster.zeek`: rule ids counting from 2, plugin priorities, the plugin sets on each
//! rule, expiry scheduled by NetControl for backends that cannot expire rules themselves,
//! and every `netcontrol.log` / `netcontrol_drop.log` line those scripts write.
//!
//! Only address DROP rules exist here: they are the only rules catch-and-release and the
//! BHR registry deal in.

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;

use ipnet::IpNet;

use crate::addr::Addr;
use crate::time::{Interval, Time};

use super::record::{Category, DropRecord, NetControlRecord, State};
use super::{Engine, Event, Output, TimerKind};

/// A NetControl rule id. Ids count up from 2 (`rule_counter` starts at 1 and is
/// pre-incremented); 0 never occurs and stands for "none" where ids are stored packed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleId(NonZeroU32);

impl RuleId {
    /// A rule id, or `None` for 0.
    pub fn new(v: u32) -> Option<RuleId> {
        NonZeroU32::new(v).map(RuleId)
    }

    /// The number.
    pub fn get(self) -> u32 {
        self.0.get()
    }
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// `NetControl::RuleType`. Only DROP is used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RuleType {
    /// Stop forwarding traffic of the entity.
    Drop,
}

impl RuleType {
    /// The enum value as Zeek logs it.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleType::Drop => "NetControl::DROP",
        }
    }
}

/// `NetControl::TargetType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// The forwarding path (what drops act on).
    Forward,
}

impl Target {
    /// The enum value as Zeek logs it.
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Forward => "NetControl::FORWARD",
        }
    }
}

/// An installed or requested rule, as handed to backends and carried by events. Rules are
/// immutable once created; NetControl's own bookkeeping lives beside them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// The rule id.
    pub id: RuleId,
    /// What the rule does.
    pub ty: RuleType,
    /// Where it acts.
    pub target: Target,
    /// The address entity: a host (`/32`, `/128`) or a subnet.
    pub entity: IpNet,
    /// How long the rule lasts; zero means until removed.
    pub expire: Interval,
    /// Rule priority (logged; plugins do not use it here).
    pub priority: i64,
    /// Where the rule came from, when given.
    pub location: Option<Arc<str>>,
}

impl Rule {
    /// The single address of a host entity (`/32` or `/128`).
    pub fn host(&self) -> Option<Addr> {
        (self.entity.prefix_len() == self.entity.max_prefix_len())
            .then(|| Addr::from(self.entity.addr()))
    }
}

/// Identifies an activated backend. Ids count from 1 in activation order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PluginId(u8);

impl PluginId {
    /// The number.
    pub fn get(self) -> u8 {
        self.0
    }

    /// The id of the first backend activated.
    pub fn first() -> PluginId {
        PluginId(1)
    }
}

/// The most backends one engine can activate (plugin ids are bits of a `u64`).
pub const MAX_BACKENDS: usize = 63;

/// A small set of plugin ids.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct PluginSet(u64);

impl PluginSet {
    fn insert(&mut self, p: PluginId) {
        self.0 |= 1 << p.0;
    }
    fn remove(&mut self, p: PluginId) {
        self.0 &= !(1 << p.0);
    }
    fn contains(self, p: PluginId) -> bool {
        self.0 & (1 << p.0) != 0
    }
    fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// Members in ascending id order.
    fn iter(self) -> impl Iterator<Item = PluginId> {
        (1..=MAX_BACKENDS as u8)
            .filter(move |i| self.0 & (1 << i) != 0)
            .map(PluginId)
    }
}

/// What a backend reports about a rule. Each answer becomes the NetControl event of the
/// same name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The rule is in place (`rule_added`).
    Added(String),
    /// The rule was already in place (`rule_exists`); NetControl will never expire it on
    /// this backend.
    Exists(String),
    /// The operation failed (`rule_error`).
    Error(String),
    /// The rule was removed after a remove request (`rule_removed`).
    Removed(String),
    /// The backend expired the rule itself (`rule_timeout`); for backends that can expire.
    Timeout,
}

/// Answers a backend gives while it is being called. The engine queues them as events
/// once the call returns, as Zeek's plugins raise events from `add_rule`.
#[derive(Debug, Default)]
pub struct Answers(Vec<Answer>);

impl Answers {
    /// Reports an answer.
    pub fn push(&mut self, a: Answer) {
        self.0.push(a);
    }
}

/// Where rule ids come from when NetControl's own counter is not wanted: the daemon makes
/// each DROP rule a block in the BHR registry, and the block id is the rule id.
pub trait RuleIds: Send {
    /// An id for a new rule, or why there must be no such rule (logged as FAILED).
    ///
    /// # Errors
    /// The refusal, for the log.
    fn assign(
        &mut self,
        now: Time,
        entity: IpNet,
        expire: Interval,
        location: Option<&str>,
    ) -> Result<RuleId, String>;
}

/// A NetControl plugin: something that puts drop rules in place.
///
/// Calls are synchronous, get the engine's `now`, and must not wait on I/O: a backend
/// accepts or declines at once and
/// answers either during the call (through [`Answers`]) or later (through
/// [`Engine::answer`]).
pub trait Plugin: Send {
    /// The plugin name logged in the `plugin` columns (Zeek's `p$plugin$name(p)`).
    fn name(&self) -> &str;

    /// Whether the backend expires rules itself and reports [`Answer::Timeout`]. If not,
    /// NetControl schedules the expiry and asks the backend to remove the rule.
    fn can_expire(&self) -> bool {
        false
    }

    /// Offers a rule. Returns whether the backend takes it.
    fn add_rule(&mut self, now: Time, rule: &Arc<Rule>, answers: &mut Answers) -> bool;

    /// Asks the backend to remove a rule it accepted. Returns whether it will.
    fn remove_rule(
        &mut self,
        now: Time,
        rule: &Arc<Rule>,
        reason: &str,
        answers: &mut Answers,
    ) -> bool;
}

/// The built-in backend: accepts every rule at once and removes it when asked, leaving
/// expiry to NetControl. It behaves like Zeek's debug plugin (`create_debug(T)`), whose
/// name, `Debug-All`, is its default so replays line up with Zeek's own test baselines.
#[derive(Debug, Clone)]
pub struct AcceptingPlugin {
    name: String,
}

impl AcceptingPlugin {
    /// The name Zeek's debug plugin logs.
    pub const DEFAULT_NAME: &'static str = "Debug-All";

    /// A backend logging as `name`.
    pub fn new(name: impl Into<String>) -> AcceptingPlugin {
        AcceptingPlugin { name: name.into() }
    }
}

impl Default for AcceptingPlugin {
    fn default() -> AcceptingPlugin {
        AcceptingPlugin::new(AcceptingPlugin::DEFAULT_NAME)
    }
}

impl Plugin for AcceptingPlugin {
    fn name(&self) -> &str {
        &self.name
    }

    fn add_rule(&mut self, _now: Time, _rule: &Arc<Rule>, answers: &mut Answers) -> bool {
        answers.push(Answer::Added(String::new()));
        true
    }

    fn remove_rule(
        &mut self,
        _now: Time,
        _rule: &Arc<Rule>,
        _reason: &str,
        answers: &mut Answers,
    ) -> bool {
        answers.push(Answer::Removed(String::new()));
        true
    }
}

pub(super) struct Registered {
    id: PluginId,
    priority: i64,
    name: Arc<str>,
    can_expire: bool,
    backend: Box<dyn Plugin>,
}

struct RuleState {
    rule: Arc<Rule>,
    /// `_plugin_ids`: backends that accepted the rule.
    plugins: PluginSet,
    /// `_active_plugin_ids`: backends on which the rule is in place.
    active: PluginSet,
    /// `_no_expire_plugins`: backends that reported the rule as pre-existing.
    no_expire: PluginSet,
}

/// Hashes rule ids so that ids made one after the other land in neighbouring buckets:
/// the low bits are the id itself (the bucket), the top bits a mix of it (the tag a
/// probe compares first). Drops made together are answered together, in id order, so their
/// rules are then read from consecutive memory instead of one cache miss each. Rule ids
/// are made here (or by the registry), never taken from outside, so the hash needs no
/// protection against chosen keys.
#[derive(Clone, Copy, Default)]
struct SequentialIds;

impl std::hash::BuildHasher for SequentialIds {
    type Hasher = IdHasher;

    fn build_hasher(&self) -> IdHasher {
        IdHasher(0)
    }
}

#[derive(Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        const TAG: u64 = 0xFE00_0000_0000_0000;
        self.0 | (self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15) & TAG)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u32(&mut self, v: u32) {
        self.0 = u64::from(v);
    }
}

/// NetControl's state: activated backends and live rules.
pub(super) struct NetControl {
    /// Sorted by descending priority; activation order within a priority.
    plugins: Vec<Registered>,
    rules: HashMap<RuleId, RuleState, SequentialIds>,
    /// `rule_entities`: at most one rule per (entity, type).
    /// (hashbrown's own map, whose table [`crate::prefetch`] can see into.)
    entities: hashbrown::HashMap<(IpNet, RuleType), RuleId, foldhash::fast::RandomState>,
    /// `rule_counter`.
    counter: u32,
    /// Assigns ids instead of the counter, when set.
    pub(super) ids: Option<Box<dyn RuleIds>>,
    /// Set at shutdown: scheduled expiries then do nothing (`zeek_is_terminating()`).
    pub(super) terminating: bool,
    /// Rules removed from `entities` so far.
    entity_removals: u64,
    /// An empty buffer for the next backend call's [`Answers`], kept so that a call does
    /// not allocate.
    spare_answers: Vec<Answer>,
}

impl NetControl {
    pub(super) fn new() -> NetControl {
        NetControl {
            plugins: Vec::new(),
            rules: HashMap::default(),
            entities: hashbrown::HashMap::default(),
            counter: 1,
            ids: None,
            terminating: false,
            entity_removals: 0,
            spare_answers: Vec::new(),
        }
    }

    /// Makes room for `n` more rules.
    pub(super) fn reserve(&mut self, n: usize) {
        self.rules.reserve(n);
        self.entities.reserve(n);
    }

    fn plugin(&self, id: PluginId) -> Option<&Registered> {
        self.plugins.iter().find(|p| p.id == id)
    }

    fn plugin_mut(&mut self, id: PluginId) -> Option<&mut Registered> {
        self.plugins.iter_mut().find(|p| p.id == id)
    }

    /// How many rules left `rule_entities` so far: while this stays, every DROP found
    /// there is still there.
    #[inline]
    pub(super) fn entity_removals(&self) -> u64 {
        self.entity_removals
    }

    /// Starts loading what adding a DROP rule for the host `a` will touch in
    /// `rule_entities` (a hint: see [`crate::prefetch`]).
    #[inline]
    pub(super) fn prefetch_drop_rule(&self, a: Addr) {
        use std::hash::BuildHasher as _;
        let hash = self
            .entities
            .hasher()
            .hash_one((host_net(a), RuleType::Drop));
        crate::prefetch::insert_slot(self.entities.raw_table(), hash);
    }

    /// Whether a DROP rule exists for exactly this host (`[e, DROP] in rule_entities`).
    pub(super) fn drop_rule_for(&self, a: Addr) -> Option<RuleId> {
        self.entities.get(&(host_net(a), RuleType::Drop)).copied()
    }

    /// The DROP rule in place for exactly this network, if any.
    pub(super) fn drop_rule_for_net(&self, n: IpNet) -> Option<RuleId> {
        self.entities.get(&(n.trunc(), RuleType::Drop)).copied()
    }

    /// The live rule with this id.
    pub(super) fn rule(&self, id: RuleId) -> Option<&Arc<Rule>> {
        self.rules.get(&id).map(|s| &s.rule)
    }

    /// The number of live rules.
    pub(super) fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// The name of a backend.
    pub(super) fn plugin_name(&self, id: PluginId) -> Option<Arc<str>> {
        self.plugin(id).map(|p| p.name.clone())
    }

    /// The backend with this name.
    pub(super) fn plugin_id(&self, name: &str) -> Option<PluginId> {
        self.plugins.iter().find(|p| &*p.name == name).map(|p| p.id)
    }

    /// Whether a backend expires rules itself.
    pub(super) fn can_expire(&self, id: PluginId) -> bool {
        self.plugin(id).is_some_and(|p| p.can_expire)
    }

    /// The accepted and active backends of a live rule.
    pub(super) fn rule_plugins(&self, id: RuleId) -> Option<(Vec<PluginId>, Vec<PluginId>)> {
        let st = self.rules.get(&id)?;
        Some((st.plugins.iter().collect(), st.active.iter().collect()))
    }

    /// Inserts a live rule as it was, replacing any rule for the same entity.
    pub(super) fn restore(&mut self, rule: Arc<Rule>, accepted: &[PluginId], active: &[PluginId]) {
        let mut plugins = PluginSet::default();
        let mut on = PluginSet::default();
        for p in accepted {
            plugins.insert(*p);
        }
        for p in active {
            plugins.insert(*p);
            on.insert(*p);
        }
        if let Some(old) = self.entities.insert((rule.entity, rule.ty), rule.id)
            && old != rule.id
        {
            self.rules.remove(&old);
        }
        self.counter = self.counter.max(rule.id.get());
        self.rules.insert(
            rule.id,
            RuleState {
                rule,
                plugins,
                active: on,
                no_expire: PluginSet::default(),
            },
        );
    }
}

/// The host entity of an address: `a/32` or `a/128`.
pub(crate) fn host_net(a: Addr) -> IpNet {
    IpNet::new(a.to_ip(), a.host_prefix_len()).expect("a host prefix length is always valid")
}

/// Fills the rule columns of a `netcontrol.log` line (`rule_to_info`).
fn rule_info(ts: Time, r: &Rule) -> NetControlRecord {
    NetControlRecord {
        ts,
        rule_id: Some(r.id),
        action: Some(r.ty),
        target: Some(r.target),
        entity: Some(r.entity),
        priority: Some(r.priority),
        expire: Some(r.expire),
        location: r.location.clone(),
        ..NetControlRecord::default()
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

impl Engine {
    /// Activates backends (`NetControl::activate`) and finishes plugin initialisation,
    /// writing the `netcontrol.log` lines Zeek writes from `zeek_init`.
    pub(super) fn activate(&mut self, backends: Vec<(Box<dyn Plugin>, i64)>) {
        assert!(
            backends.len() <= MAX_BACKENDS,
            "at most {MAX_BACKENDS} backends"
        );
        let any = !backends.is_empty();
        for (i, (backend, priority)) in backends.into_iter().enumerate() {
            let name: Arc<str> = Arc::from(backend.name());
            let plugin = Registered {
                id: PluginId(i as u8 + 1),
                priority,
                can_expire: backend.can_expire(),
                name: name.clone(),
                backend,
            };
            // Stable insertion keeps activation order within one priority.
            let pos = self
                .nc
                .plugins
                .iter()
                .position(|p| p.priority < priority)
                .unwrap_or(self.nc.plugins.len());
            self.nc.plugins.insert(pos, plugin);
            self.log_message(
                format!("activating plugin with priority {priority}"),
                Some(name.clone()),
            );
            self.log_message("activation finished".to_string(), Some(name));
        }
        if any {
            self.log_message("plugin initialization done".to_string(), None);
        }
    }

    fn log_message(&mut self, msg: String, plugin: Option<Arc<str>>) {
        self.out.push_back(Output::NetControl(NetControlRecord {
            ts: self.now,
            category: Some(Category::Message),
            msg: Some(msg),
            plugin,
            ..NetControlRecord::default()
        }));
    }

    fn log_rule(&mut self, r: &Rule, cmd: &'static str, state: State, p: PluginId, msg: &str) {
        let mut rec = rule_info(self.now, r);
        rec.category = Some(Category::Rule);
        rec.cmd = Some(cmd);
        rec.state = Some(state);
        rec.plugin = self.nc.plugin_name(p);
        rec.msg = non_empty(msg);
        self.out.push_back(Output::NetControl(rec));
    }

    fn log_rule_error(&mut self, r: &Rule, msg: String, p: PluginId) {
        let mut rec = rule_info(self.now, r);
        rec.category = Some(Category::Error);
        rec.msg = Some(msg);
        rec.plugin = self.nc.plugin_name(p);
        self.out.push_back(Output::NetControl(rec));
    }

    /// A rule the id source refused: FAILED, without a rule id.
    fn log_refused(
        &mut self,
        entity: IpNet,
        expire: Interval,
        location: Option<Arc<str>>,
        why: String,
    ) {
        self.last_refusal = Some(why.clone());
        self.out.push_back(Output::NetControl(NetControlRecord {
            ts: self.now,
            category: Some(Category::Rule),
            action: Some(RuleType::Drop),
            target: Some(Target::Forward),
            entity: Some(entity),
            priority: Some(0),
            expire: Some(expire),
            location,
            state: Some(State::Failed),
            msg: Some(why),
            ..NetControlRecord::default()
        }));
    }

    fn log_rule_no_plugin(&mut self, r: &Rule, state: State, msg: String) {
        let mut rec = rule_info(self.now, r);
        rec.category = Some(Category::Rule);
        rec.state = Some(state);
        rec.msg = Some(msg);
        self.out.push_back(Output::NetControl(rec));
    }

    fn queue_answers(&mut self, rule: &Arc<Rule>, p: PluginId, mut answers: Answers) {
        for a in answers.0.drain(..) {
            self.queue.push_back(Event::from_answer(rule.clone(), p, a));
        }
        self.nc.spare_answers = answers.0;
    }

    /// `NetControl::add_rule`: offers the rule to backends in priority order. Returns the
    /// new id, or `None` when the rule is a duplicate or no backend takes it (both logged
    /// as FAILED).
    fn add_rule(
        &mut self,
        entity: IpNet,
        expire: Interval,
        location: Option<Arc<str>>,
    ) -> Option<RuleId> {
        let id = match self.nc.ids.as_mut() {
            None => {
                self.nc.counter = self.nc.counter.saturating_add(1);
                RuleId::new(self.nc.counter).expect("the counter starts at 2")
            }
            Some(ids) => {
                if let Some(existing) = self.nc.entities.get(&(entity, RuleType::Drop)) {
                    let msg =
                        format!("discarded duplicate insertion of rule {existing} for {entity}");
                    self.report(msg);
                    return None;
                }
                match ids.assign(self.now, entity, expire, location.as_deref()) {
                    Ok(id) => id,
                    Err(why) => {
                        self.log_refused(entity, expire, location, why);
                        return None;
                    }
                }
            }
        };
        let rule = Arc::new(Rule {
            id,
            ty: RuleType::Drop,
            target: Target::Forward,
            entity,
            expire,
            priority: 0,
            location,
        });
        if self.nc.entities.contains_key(&(entity, rule.ty)) {
            self.log_rule_no_plugin(&rule, State::Failed, "discarded duplicate insertion".into());
            return None;
        }
        let mut accepted: Option<i64> = None;
        let mut plugins = PluginSet::default();
        for i in 0..self.nc.plugins.len() {
            let (id, priority) = (self.nc.plugins[i].id, self.nc.plugins[i].priority);
            if accepted.is_some_and(|prio| prio != priority) {
                break;
            }
            let mut answers = Answers(std::mem::take(&mut self.nc.spare_answers));
            if self.nc.plugins[i]
                .backend
                .add_rule(self.now, &rule, &mut answers)
            {
                accepted = Some(priority);
                self.log_rule(&rule, "ADD", State::Requested, id, "");
                plugins.insert(id);
            }
            self.queue_answers(&rule, id, answers);
        }
        if accepted.is_none() {
            self.log_rule_no_plugin(&rule, State::Failed, "not supported".into());
            return None;
        }
        let id = rule.id;
        self.nc.entities.insert((entity, rule.ty), id);
        self.nc.rules.insert(
            id,
            RuleState {
                rule,
                plugins,
                active: PluginSet::default(),
                no_expire: PluginSet::default(),
            },
        );
        Some(id)
    }

    /// `NetControl::drop_address` for any address entity: adds the rule and, on success,
    /// writes the `netcontrol_drop.log` line.
    pub(super) fn nc_drop(
        &mut self,
        entity: IpNet,
        expire: Interval,
        location: &str,
    ) -> Option<RuleId> {
        let location: Option<Arc<str>> = (!location.is_empty()).then(|| Arc::from(location));
        self.nc_drop_shared(entity, expire, location)
    }

    /// [`nc_drop`](Engine::nc_drop) with the location already shared, as catch-and-release
    /// keeps it.
    pub(super) fn nc_drop_shared(
        &mut self,
        entity: IpNet,
        expire: Interval,
        location: Option<Arc<str>>,
    ) -> Option<RuleId> {
        let id = self.add_rule(entity, expire, location.clone())?;
        self.out.push_back(Output::Drop(DropRecord {
            ts: self.now,
            rule_id: id,
            orig_h: Addr::from(entity.addr()),
            expire,
            location,
        }));
        Some(id)
    }

    /// `NetControl::add_rule` of a DROP of a network: what catch-and-release of networks
    /// does. No `netcontrol_drop.log` line (Zeek writes those only from `drop_address`,
    /// whose argument is an address).
    pub(super) fn nc_drop_net(
        &mut self,
        net: IpNet,
        expire: Interval,
        location: &str,
    ) -> Option<RuleId> {
        let location: Option<Arc<str>> = (!location.is_empty()).then(|| Arc::from(location));
        self.add_rule(net.trunc(), expire, location)
    }

    /// `rule_cleanup`: forgets a rule once no backend has it in place.
    fn rule_cleanup(&mut self, id: RuleId) {
        let Some(st) = self.nc.rules.get(&id) else {
            return;
        };
        if !st.active.is_empty() {
            return;
        }
        let key = (st.rule.entity, st.rule.ty);
        self.nc.rules.remove(&id);
        if self.nc.entities.get(&key) == Some(&id) {
            self.nc.entities.remove(&key);
            self.nc.entity_removals += 1;
        }
        let nc = &mut self.nc;
        if super::should_shrink(nc.rules.len(), nc.rules.capacity()) {
            nc.rules.shrink_to(nc.rules.len() * 2);
            nc.entities.shrink_to(nc.entities.len() * 2);
        }
    }

    /// `NetControl::delete_rule`: forgets a rule without telling backends.
    pub(super) fn nc_delete_rule(&mut self, id: RuleId, reason: &str) -> bool {
        let Some(st) = self.nc.rules.get_mut(&id) else {
            self.report(format!(
                "Rule {id} does not exist in NetControl::delete_rule"
            ));
            return false;
        };
        st.active = PluginSet::default();
        let rule = st.rule.clone();
        self.rule_cleanup(id);
        let msg = if reason.is_empty() {
            "delete_rule".to_string()
        } else {
            format!("delete_rule: {reason}")
        };
        self.log_rule_no_plugin(&rule, State::Removed, msg);
        true
    }

    /// `remove_rule_plugin`.
    fn remove_rule_plugin(&mut self, rule: &Arc<Rule>, p: PluginId, reason: &str) -> bool {
        let mut answers = Answers(std::mem::take(&mut self.nc.spare_answers));
        let ok = match self.nc.plugin_mut(p) {
            Some(plugin) => plugin
                .backend
                .remove_rule(self.now, rule, reason, &mut answers),
            None => false,
        };
        if ok {
            self.log_rule(rule, "REMOVE", State::Requested, p, reason);
        } else if reason.is_empty() {
            self.log_rule_error(rule, "remove failed".into(), p);
        } else {
            self.log_rule_error(
                rule,
                format!("remove failed (original reason: {reason})"),
                p,
            );
        }
        self.queue_answers(rule, p, answers);
        ok
    }

    /// `NetControl::remove_rule`: asks every backend that has the rule in place to remove
    /// it.
    pub(super) fn nc_remove_rule(&mut self, id: RuleId, reason: &str) -> bool {
        let Some(st) = self.nc.rules.get(&id) else {
            self.report(format!(
                "Rule {id} does not exist in NetControl::remove_rule"
            ));
            return false;
        };
        let (rule, active) = (st.rule.clone(), st.active);
        let mut success = true;
        for p in active.iter() {
            // As in Zeek, the result of the last backend wins.
            success = self.remove_rule_plugin(&rule, p, reason);
        }
        success
    }

    /// `rule_added` / `rule_exists`, NetControl's handler (priority 5).
    pub(super) fn nc_rule_added(&mut self, r: &Arc<Rule>, p: PluginId, exists: bool, msg: &str) {
        match self.nc.rules.get(&r.id) {
            None => self.log_rule_error(r, "Addition of unknown rule".into(), p),
            Some(st) if !st.plugins.contains(p) => {
                let rule = st.rule.clone();
                self.log_rule_error(&rule, "Rule added to non-responsible plugin".into(), p);
            }
            Some(_) => {
                if exists {
                    self.log_rule(r, "ADD", State::Exists, p, msg);
                } else {
                    self.log_rule(r, "ADD", State::Succeeded, p, msg);
                }
                if let Some(st) = self.nc.rules.get_mut(&r.id) {
                    if exists {
                        st.no_expire.insert(p);
                    }
                    st.active.insert(p);
                }
            }
        }
        // The handler schedules expiry whatever the implementation decided.
        let can_expire = self.nc.plugin(p).is_some_and(|pl| pl.can_expire);
        if r.expire > Interval::ZERO && !can_expire {
            self.schedule(
                self.now + r.expire,
                TimerKind::RuleExpire {
                    rule: r.clone(),
                    plugin: p,
                },
            );
        }
    }

    /// `rule_removed`, NetControl's handler (priority -5).
    pub(super) fn nc_rule_removed(&mut self, r: &Arc<Rule>, p: PluginId, msg: &str) {
        let Some(st) = self.nc.rules.get_mut(&r.id) else {
            self.log_rule_error(r, "Removal of non-existing rule".into(), p);
            return;
        };
        if !st.plugins.contains(p) {
            self.log_rule_error(r, "Removed from non-assigned plugin".into(), p);
            return;
        }
        st.active.remove(p);
        let rule = st.rule.clone();
        self.log_rule(&rule, "REMOVE", State::Succeeded, p, msg);
        self.rule_cleanup(r.id);
    }

    /// `rule_timeout`, NetControl's handler (priority -5).
    pub(super) fn nc_rule_timeout(&mut self, r: &Arc<Rule>, p: PluginId) {
        let Some(st) = self.nc.rules.get(&r.id) else {
            self.log_rule_error(r, "Timeout of non-existing rule".into(), p);
            return;
        };
        let rule = st.rule.clone();
        self.log_rule(&rule, "EXPIRE", State::Timeout, p, "");
        let can_expire = self.nc.plugin(p).is_some_and(|pl| pl.can_expire);
        if !can_expire {
            // The timeout came from NetControl itself: remove the rule from the backend.
            self.remove_rule_plugin(&rule, p, "");
            return;
        }
        let Some(st) = self.nc.rules.get_mut(&r.id) else {
            return;
        };
        if !st.plugins.contains(p) {
            self.log_rule_error(r, "Timeout from non-assigned plugin".into(), p);
            return;
        }
        st.active.remove(p);
        self.rule_cleanup(r.id);
    }

    /// `rule_error`, NetControl's handler (priority -5).
    pub(super) fn nc_rule_error(&mut self, r: &Arc<Rule>, p: PluginId, msg: &str) {
        let Some(st) = self.nc.rules.get(&r.id) else {
            self.log_rule_error(r, "Error of non-existing rule".into(), p);
            return;
        };
        let rule = st.rule.clone();
        self.log_rule_error(&rule, msg.to_string(), p);
        let Some(st) = self.nc.rules.get_mut(&r.id) else {
            return;
        };
        if !st.plugins.contains(p) {
            self.log_rule_error(r, "Error from non-assigned plugin".into(), p);
            return;
        }
        if st.active.contains(p) {
            // An error during removal: pretend it worked.
            st.plugins.remove(p);
            st.active.remove(p);
            self.rule_cleanup(r.id);
        } else {
            // An error during insertion: drop this backend, and the rule if none is left.
            st.plugins.remove(p);
            if st.plugins.is_empty() {
                self.rule_cleanup(r.id);
            }
        }
    }

    /// `rule_expire`, the event NetControl schedules for backends that cannot expire.
    pub(super) fn nc_rule_expire(&mut self, r: &Arc<Rule>, p: PluginId) {
        if self.nc.terminating {
            return;
        }
        let Some(st) = self.nc.rules.get_mut(&r.id) else {
            return;
        };
        if st.no_expire.contains(p) {
            st.active.remove(p);
            st.no_expire.remove(p);
            self.rule_cleanup(r.id);
        } else {
            self.queue.push_back(Event::RuleTimeout {
                rule: r.clone(),
                plugin: p,
            });
        }
    }
}
