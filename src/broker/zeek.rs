//! The Zeek events catchd sends and receives, and the records inside them, as Broker values.
//!
//! Records are vectors of every field in declaration order (unset optional fields are
//! `none`); when reading, a record must have at least as many elements as catchd reads,
//! and extra trailing ones are ignored (later Zeek versions add fields with `redef`).
//! Times are nanoseconds on the wire and microseconds in catchd; reading rounds to the
//! nearest microsecond (Zeek truncates `double * 1e9`, which is off by up to 1 µs).

use std::sync::Arc;

use ipnet::IpNet;

use super::{Event, Value};
use crate::addr::Addr;
use crate::cnr::{BlockInfo, CatchReleaseNetRecord, CatchReleaseRecord, RuleId};
use crate::time::{Interval, Time};

/// `Cluster::manager_topic` under the ZeroMQ backend.
pub const MANAGER_TOPIC: &str = "zeek.cluster.manager";
/// `Cluster::worker_topic` under the ZeroMQ backend.
pub const WORKER_TOPIC: &str = "zeek.cluster.worker";
/// catchd's topic for what only its log shows in Zeek: forgotten addresses and every
/// catch-and-release log record.
pub const CATCHD_TOPIC: &str = "catchd.catch_release";
/// The topic of the NetControl backend contract (requests and answers), as the Zeek
/// package's plugin uses by default.
pub const NETCONTROL_TOPIC: &str = "catchd.netcontrol";
/// catchd's control topic for its managers (replica sync requests from sensors).
pub const CONTROL_MANAGER_TOPIC: &str = "catchd.control.manager";
/// catchd's control topic for its sensors (a manager came up).
pub const CONTROL_SENSOR_TOPIC: &str = "catchd.control.sensor";
/// Prefix of a node's own topic (`catchd.node.<id>.`), where sync answers go.
pub const NODE_TOPIC_PREFIX: &str = "catchd.node.";

/// `NetControl::catch_release_add(a: addr, location: string)`
pub const CATCH_RELEASE_ADD: &str = "NetControl::catch_release_add";
/// `NetControl::catch_release_delete(a: addr, reason: string)`
pub const CATCH_RELEASE_DELETE: &str = "NetControl::catch_release_delete";
/// `NetControl::catch_release_encountered(a: addr)`
pub const CATCH_RELEASE_ENCOUNTERED: &str = "NetControl::catch_release_encountered";
/// `NetControl::catch_release_block_new(a: addr, b: BlockInfo)`
pub const CATCH_RELEASE_BLOCK_NEW: &str = "NetControl::catch_release_block_new";
/// `NetControl::catch_release_block_delete(a: addr)`
pub const CATCH_RELEASE_BLOCK_DELETE: &str = "NetControl::catch_release_block_delete";
/// `NetControl::catch_release_forgotten(a: addr, bi: BlockInfo)`
pub const CATCH_RELEASE_FORGOTTEN: &str = "NetControl::catch_release_forgotten";
/// `NetControl::log_netcontrol_catch_release(rec: CatchReleaseInfo)`: Zeek's log event.
pub const LOG_CATCH_RELEASE: &str = "NetControl::log_netcontrol_catch_release";
/// `NetControl::broker_add_rule(id: count, r: Rule)`
pub const BROKER_ADD_RULE: &str = "NetControl::broker_add_rule";
/// `NetControl::broker_remove_rule(id: count, r: Rule, reason: string)`
pub const BROKER_REMOVE_RULE: &str = "NetControl::broker_remove_rule";
/// `NetControl::broker_rule_added(id: count, r: Rule, msg: string)`
pub const BROKER_RULE_ADDED: &str = "NetControl::broker_rule_added";
/// `NetControl::broker_rule_exists(id: count, r: Rule, msg: string)`
pub const BROKER_RULE_EXISTS: &str = "NetControl::broker_rule_exists";
/// `NetControl::broker_rule_removed(id: count, r: Rule, msg: string)`
pub const BROKER_RULE_REMOVED: &str = "NetControl::broker_rule_removed";
/// `NetControl::broker_rule_error(id: count, r: Rule, msg: string)`
pub const BROKER_RULE_ERROR: &str = "NetControl::broker_rule_error";
/// `NetControl::broker_rule_timeout(id: count, r: Rule, i: FlowInfo)`
pub const BROKER_RULE_TIMEOUT: &str = "NetControl::broker_rule_timeout";
/// `Catchd::sync_request(node: string)`: a sensor asks managers for the watched set.
pub const SYNC_REQUEST: &str = "Catchd::sync_request";
/// `Catchd::sync_begin(n: count)`: a full snapshot of `n` `block_new` events follows.
pub const SYNC_BEGIN: &str = "Catchd::sync_begin";
/// `Catchd::sync_end(n: count)`: the snapshot is complete.
pub const SYNC_END: &str = "Catchd::sync_end";
/// `Catchd::manager_up(node: string)`: a manager (re)started; sensors resynchronise.
pub const MANAGER_UP: &str = "Catchd::manager_up";

/// `Catchd::netcontrol_hello(id: count)`: the Zeek package's plugin `id` looks for catchd.
pub const NETCONTROL_HELLO: &str = "Catchd::netcontrol_hello";
/// `Catchd::netcontrol_ready(id: count)`: catchd's answer; the plugin activates.
pub const NETCONTROL_READY: &str = "Catchd::netcontrol_ready";

/// `Catchd::net_block_new(n: subnet, bi: NetControl::BlockInfo)`: catch-and-release of
/// networks tracks `n` with this state (on [`CATCHD_TOPIC`]).
pub const NET_BLOCK_NEW: &str = "Catchd::net_block_new";
/// `Catchd::net_block_delete(n: subnet)`: `n` was unblocked and is no longer tracked.
pub const NET_BLOCK_DELETE: &str = "Catchd::net_block_delete";
/// `Catchd::net_forgotten(n: subnet, bi: NetControl::BlockInfo)`: `n`'s watch ended.
pub const NET_FORGOTTEN: &str = "Catchd::net_forgotten";
/// `Catchd::log_catch_release_net(rec: Catchd::CatchReleaseNetInfo)`: one line of
/// `netcontrol_catch_release_net.log`.
pub const LOG_CATCH_RELEASE_NET: &str = "Catchd::log_catch_release_net";

/// Every event catchd sends or reads, with its Zeek parameter types, in the spelling of
/// Zeek's declarations (the Zeek package's declarations are checked against this).
pub const SIGNATURES: &[(&str, &[&str])] = &[
    (CATCH_RELEASE_ADD, &["addr", "string"]),
    (CATCH_RELEASE_DELETE, &["addr", "string"]),
    (CATCH_RELEASE_ENCOUNTERED, &["addr"]),
    (CATCH_RELEASE_BLOCK_NEW, &["addr", "BlockInfo"]),
    (CATCH_RELEASE_BLOCK_DELETE, &["addr"]),
    (CATCH_RELEASE_FORGOTTEN, &["addr", "BlockInfo"]),
    (LOG_CATCH_RELEASE, &["CatchReleaseInfo"]),
    (BROKER_ADD_RULE, &["count", "Rule"]),
    (BROKER_REMOVE_RULE, &["count", "Rule", "string"]),
    (BROKER_RULE_ADDED, &["count", "Rule", "string"]),
    (BROKER_RULE_EXISTS, &["count", "Rule", "string"]),
    (BROKER_RULE_REMOVED, &["count", "Rule", "string"]),
    (BROKER_RULE_ERROR, &["count", "Rule", "string"]),
    (BROKER_RULE_TIMEOUT, &["count", "Rule", "FlowInfo"]),
    (NETCONTROL_HELLO, &["count"]),
    (NETCONTROL_READY, &["count"]),
    (SYNC_REQUEST, &["string"]),
    (SYNC_BEGIN, &["count"]),
    (SYNC_END, &["count"]),
    (MANAGER_UP, &["string"]),
    (NET_BLOCK_NEW, &["subnet", "NetControl::BlockInfo"]),
    (NET_BLOCK_DELETE, &["subnet"]),
    (NET_FORGOTTEN, &["subnet", "NetControl::BlockInfo"]),
    (LOG_CATCH_RELEASE_NET, &["CatchReleaseNetInfo"]),
];

/// Nanoseconds from catchd's microseconds.
pub fn ns(t: Time) -> i64 {
    t.as_micros().saturating_mul(1000)
}

/// catchd's microseconds from nanoseconds, to the nearest microsecond.
pub fn time(ns: i64) -> Time {
    Time::from_micros(ns.saturating_add(500).div_euclid(1000))
}

fn span(i: Interval) -> Value {
    Value::Timespan(i.as_micros().saturating_mul(1000))
}

fn opt<T>(v: Option<T>, f: impl FnOnce(T) -> Value) -> Value {
    v.map_or(Value::None, f)
}

/// `NetControl::BlockInfo` as a record.
pub fn block_info(b: &BlockInfo) -> Value {
    Value::Vector(vec![
        opt(b.block_until, |t| Value::Timestamp(ns(t))),
        Value::Timestamp(ns(b.watch_until)),
        Value::Count(u64::from(b.num_reblocked)),
        Value::Count(b.current_interval as u64),
        Value::String(
            b.current_block_id
                .map_or(String::new(), |id| id.to_string()),
        ),
        opt(b.location.as_ref(), |l| Value::String(l.to_string())),
    ])
}

/// A `NetControl::BlockInfo` record, or `None` if the value is not one.
pub fn read_block_info(v: &Value) -> Option<BlockInfo> {
    let Value::Vector(f) = v else { return None };
    if f.len() < 6 {
        return None;
    }
    let block_until = match &f[0] {
        Value::None => None,
        Value::Timestamp(t) => Some(time(*t)),
        _ => return None,
    };
    let Value::Timestamp(w) = f[1] else {
        return None;
    };
    let Value::Count(n) = f[2] else { return None };
    let Value::Count(k) = f[3] else { return None };
    let Value::String(id) = &f[4] else {
        return None;
    };
    let location = match &f[5] {
        Value::None => None,
        Value::String(s) => Some(Arc::from(s.as_str())),
        _ => return None,
    };
    Some(BlockInfo {
        block_until,
        watch_until: time(w),
        num_reblocked: u32::try_from(n).unwrap_or(u32::MAX),
        current_interval: usize::try_from(k).unwrap_or(usize::MAX),
        current_block_id: id.parse().ok().and_then(RuleId::new),
        location,
    })
}

/// `NetControl::CatchReleaseInfo` (the `netcontrol_catch_release.log` record).
pub fn catch_release_info(r: &CatchReleaseRecord) -> Value {
    let s = |v: &Option<Arc<str>>| opt(v.as_ref(), |s| Value::String(s.to_string()));
    Value::Vector(vec![
        Value::Timestamp(ns(r.ts)),
        opt(r.rule_id, |id| Value::String(id.to_string())),
        Value::Address(r.ip),
        Value::Enum(r.action.as_str().to_string()),
        span(r.block_interval),
        span(r.watch_interval),
        opt(r.blocked_until, |t| Value::Timestamp(ns(t))),
        Value::Timestamp(ns(r.watched_until)),
        Value::Count(r.num_blocked),
        s(&r.location),
        opt(r.message.as_ref(), |m| Value::String(m.clone())),
        s(&r.plugin),
    ])
}

/// `catch_release_add(a, location)`
pub fn add(a: Addr, location: &str) -> Event {
    Event::new(
        CATCH_RELEASE_ADD,
        vec![Value::Address(a), Value::string(location)],
    )
}

/// `catch_release_delete(a, reason)`
pub fn delete(a: Addr, reason: &str) -> Event {
    Event::new(
        CATCH_RELEASE_DELETE,
        vec![Value::Address(a), Value::string(reason)],
    )
}

/// `catch_release_encountered(a)`
pub fn encountered(a: Addr) -> Event {
    Event::new(CATCH_RELEASE_ENCOUNTERED, vec![Value::Address(a)])
}

/// `catch_release_block_new(a, b)`
pub fn block_new(a: Addr, b: &BlockInfo) -> Event {
    Event::new(
        CATCH_RELEASE_BLOCK_NEW,
        vec![Value::Address(a), block_info(b)],
    )
}

/// `catch_release_block_delete(a)`
pub fn block_delete(a: Addr) -> Event {
    Event::new(CATCH_RELEASE_BLOCK_DELETE, vec![Value::Address(a)])
}

/// `catch_release_forgotten(a, bi)`
pub fn forgotten(a: Addr, b: &BlockInfo) -> Event {
    Event::new(
        CATCH_RELEASE_FORGOTTEN,
        vec![Value::Address(a), block_info(b)],
    )
}

/// `Catchd::CatchReleaseNetInfo` (the `netcontrol_catch_release_net.log` record).
pub fn catch_release_net_info(r: &CatchReleaseNetRecord) -> Value {
    let s = |v: &Option<Arc<str>>| opt(v.as_ref(), |s| Value::String(s.to_string()));
    Value::Vector(vec![
        Value::Timestamp(ns(r.ts)),
        opt(r.rule_id, |id| Value::String(id.to_string())),
        Value::Subnet(r.subnet),
        Value::Enum(r.action.as_str().to_string()),
        span(r.block_interval),
        span(r.watch_interval),
        opt(r.blocked_until, |t| Value::Timestamp(ns(t))),
        Value::Timestamp(ns(r.watched_until)),
        Value::Count(r.num_blocked),
        s(&r.location),
        opt(r.message.as_ref(), |m| Value::String(m.clone())),
        s(&r.plugin),
    ])
}

/// `Catchd::net_block_new(n, bi)`
pub fn net_block_new(n: IpNet, b: &BlockInfo) -> Event {
    Event::new(NET_BLOCK_NEW, vec![Value::Subnet(n), block_info(b)])
}

/// `Catchd::net_block_delete(n)`
pub fn net_block_delete(n: IpNet) -> Event {
    Event::new(NET_BLOCK_DELETE, vec![Value::Subnet(n)])
}

/// `Catchd::net_forgotten(n, bi)`
pub fn net_forgotten(n: IpNet, b: &BlockInfo) -> Event {
    Event::new(NET_FORGOTTEN, vec![Value::Subnet(n), block_info(b)])
}

/// `Catchd::log_catch_release_net(rec)`
pub fn log_net_record(r: &CatchReleaseNetRecord) -> Event {
    Event::new(LOG_CATCH_RELEASE_NET, vec![catch_release_net_info(r)])
}

/// `log_netcontrol_catch_release(rec)`
pub fn log_record(r: &CatchReleaseRecord) -> Event {
    Event::new(LOG_CATCH_RELEASE, vec![catch_release_info(r)])
}

/// An answer of the NetControl backend contract: `broker_rule_<x>(id, r, msg)`, the rule
/// echoed exactly as received.
pub fn rule_answer(name: &'static str, plugin: u64, rule: Value, msg: &str) -> Event {
    Event::new(name, vec![Value::Count(plugin), rule, Value::string(msg)])
}

/// `broker_rule_timeout(id, r, FlowInfo())`: FlowInfo with every field unset.
pub fn rule_timeout(plugin: u64, rule: Value) -> Event {
    Event::new(
        BROKER_RULE_TIMEOUT,
        vec![
            Value::Count(plugin),
            rule,
            Value::Vector(vec![Value::None, Value::None, Value::None]),
        ],
    )
}

/// `netcontrol_ready(id)`
pub fn netcontrol_ready(id: u64) -> Event {
    Event::new(NETCONTROL_READY, vec![Value::Count(id)])
}

/// `netcontrol_hello(id)`
pub fn netcontrol_hello(id: u64) -> Event {
    Event::new(NETCONTROL_HELLO, vec![Value::Count(id)])
}

/// A sensor's replica request.
pub fn sync_request(node: &str) -> Event {
    Event::new(SYNC_REQUEST, vec![Value::string(node)])
}

/// The start or end of a snapshot of `n` entries.
pub fn sync_mark(name: &'static str, n: u64) -> Event {
    Event::new(name, vec![Value::Count(n)])
}

/// A manager announcing itself.
pub fn manager_up(node: &str) -> Event {
    Event::new(MANAGER_UP, vec![Value::string(node)])
}

/// The fields of a `NetControl::Rule` catchd acts on.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleView {
    /// `ty`, e.g. `NetControl::DROP`.
    pub ty: String,
    /// `target`, e.g. `NetControl::FORWARD`.
    pub target: String,
    /// `entity$ty`, e.g. `NetControl::ADDRESS`.
    pub entity_ty: String,
    /// `entity$ip`, for address entities.
    pub ip: Option<IpNet>,
    /// `expire`: unset or zero means no expiry.
    pub expire: Option<Interval>,
    /// `priority`
    pub priority: i64,
    /// `location`
    pub location: Option<String>,
    /// `id`: Zeek matches answers by it.
    pub id: String,
    /// `cid`
    pub cid: u64,
}

/// Reads a `NetControl::Rule` (its first ten fields; the bookkeeping fields Zeek adds
/// after them are ignored). `Err` names the first field that is wrong.
///
/// # Errors
/// The field's name.
pub fn read_rule(v: &Value) -> Result<RuleView, &'static str> {
    let Value::Vector(f) = v else {
        return Err("rule");
    };
    if f.len() < 10 {
        return Err("rule (fewer than 10 fields)");
    }
    let en = |v: &Value, what| match v {
        Value::Enum(s) => Ok(s.clone()),
        _ => Err(what),
    };
    let Value::Vector(entity) = &f[2] else {
        return Err("entity");
    };
    if entity.len() < 5 {
        return Err("entity");
    }
    let ip = match &entity[3] {
        Value::None => None,
        Value::Subnet(n) => Some(*n),
        _ => return Err("entity$ip"),
    };
    let expire = match &f[3] {
        Value::None => None,
        Value::Timespan(t) => Some(Interval::from_micros(t.div_euclid(1000))),
        _ => return Err("expire"),
    };
    let priority = match &f[4] {
        Value::Integer(p) => *p,
        Value::None => 0,
        _ => return Err("priority"),
    };
    let location = match &f[5] {
        Value::None => None,
        Value::String(s) => Some(s.clone()),
        _ => return Err("location"),
    };
    let id = match &f[8] {
        Value::String(s) => s.clone(),
        _ => return Err("id"),
    };
    let cid = match &f[9] {
        Value::Count(c) => *c,
        _ => return Err("cid"),
    };
    Ok(RuleView {
        ty: en(&f[0], "ty")?,
        target: en(&f[1], "target")?,
        entity_ty: en(&entity[0], "entity$ty")?,
        ip,
        expire,
        priority,
        location,
        id,
        cid,
    })
}

/// A `NetControl::Rule` as Zeek sends it for `drop_address(a, expire, location)` with the
/// base scripts: every one of the 14 fields, the bookkeeping sets empty.
pub fn drop_rule(net: IpNet, expire: Interval, location: &str, id: &str, cid: u64) -> Value {
    Value::Vector(vec![
        Value::enum_value("NetControl::DROP"),
        Value::enum_value("NetControl::FORWARD"),
        Value::Vector(vec![
            Value::enum_value("NetControl::ADDRESS"),
            Value::None,
            Value::None,
            Value::Subnet(net),
            Value::None,
        ]),
        span(expire),
        Value::Integer(0),
        Value::string(location),
        Value::None,
        Value::None,
        Value::string(id),
        Value::Count(cid),
        Value::Set(Vec::new()),
        Value::Set(Vec::new()),
        Value::Set(Vec::new()),
        Value::Bool(false),
    ])
}

/// What an incoming event means to catchd.
#[derive(Clone, Debug, PartialEq)]
pub enum Incoming {
    /// `catch_release_add`
    Add {
        /// The address.
        addr: Addr,
        /// Where the drop came from.
        location: String,
    },
    /// `catch_release_delete`
    Delete {
        /// The address.
        addr: Addr,
        /// Why.
        reason: String,
    },
    /// `catch_release_encountered`
    Encountered(Addr),
    /// `catch_release_block_new`
    BlockNew(Addr, BlockInfo),
    /// `catch_release_block_delete`
    BlockDelete(Addr),
    /// `broker_add_rule`
    AddRule {
        /// The plugin's `broker_id`, echoed back.
        plugin: u64,
        /// The rule as received, echoed back.
        raw: Value,
        /// What catchd reads of it.
        rule: Result<RuleView, &'static str>,
    },
    /// `broker_remove_rule`
    RemoveRule {
        /// The plugin's `broker_id`.
        plugin: u64,
        /// The rule as received.
        raw: Value,
        /// What catchd reads of it.
        rule: Result<RuleView, &'static str>,
        /// Why.
        reason: String,
    },
    /// `Catchd::sync_request`
    SyncRequest(String),
    /// `Catchd::sync_begin` / `sync_end`
    Sync {
        /// Begin (true) or end.
        begin: bool,
        /// Entries in the snapshot.
        n: u64,
    },
    /// `Catchd::manager_up`
    ManagerUp(String),
    /// `Catchd::netcontrol_hello`
    NetControlHello(u64),
}

/// Why an event was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// A name catchd does not handle.
    #[error("unknown event {0}")]
    Unknown(String),
    /// Known name, wrong arguments.
    #[error("{name}: bad arguments ({why})")]
    Arguments {
        /// The event.
        name: String,
        /// What is wrong.
        why: &'static str,
    },
}

impl Incoming {
    /// Reads an event, checking its arguments as strictly as Zeek does (number and types).
    ///
    /// # Errors
    /// [`EventError`].
    pub fn read(e: Event) -> Result<Incoming, EventError> {
        let bad = |why| EventError::Arguments {
            name: e.name.clone(),
            why,
        };
        let a = &e.args;
        let arity = |n: usize| {
            if a.len() == n {
                Ok(())
            } else {
                Err(bad("arity"))
            }
        };
        let addr = |v: &Value| match v {
            Value::Address(x) => Ok(*x),
            _ => Err(bad("address")),
        };
        let string = |v: &Value| match v {
            Value::String(s) => Ok(s.clone()),
            _ => Err(bad("string")),
        };
        let count = |v: &Value| match v {
            Value::Count(n) => Ok(*n),
            _ => Err(bad("count")),
        };
        Ok(match e.name.as_str() {
            CATCH_RELEASE_ADD => {
                arity(2)?;
                Incoming::Add {
                    addr: addr(&a[0])?,
                    location: string(&a[1])?,
                }
            }
            CATCH_RELEASE_DELETE => {
                arity(2)?;
                Incoming::Delete {
                    addr: addr(&a[0])?,
                    reason: string(&a[1])?,
                }
            }
            CATCH_RELEASE_ENCOUNTERED => {
                arity(1)?;
                Incoming::Encountered(addr(&a[0])?)
            }
            CATCH_RELEASE_BLOCK_NEW => {
                arity(2)?;
                let b = read_block_info(&a[1]).ok_or_else(|| bad("BlockInfo"))?;
                Incoming::BlockNew(addr(&a[0])?, b)
            }
            CATCH_RELEASE_BLOCK_DELETE => {
                arity(1)?;
                Incoming::BlockDelete(addr(&a[0])?)
            }
            BROKER_ADD_RULE => {
                arity(2)?;
                Incoming::AddRule {
                    plugin: count(&a[0])?,
                    rule: read_rule(&a[1]),
                    raw: a[1].clone(),
                }
            }
            BROKER_REMOVE_RULE => {
                arity(3)?;
                Incoming::RemoveRule {
                    plugin: count(&a[0])?,
                    rule: read_rule(&a[1]),
                    raw: a[1].clone(),
                    reason: string(&a[2])?,
                }
            }
            SYNC_REQUEST => {
                arity(1)?;
                Incoming::SyncRequest(string(&a[0])?)
            }
            SYNC_BEGIN | SYNC_END => {
                arity(1)?;
                Incoming::Sync {
                    begin: e.name == SYNC_BEGIN,
                    n: count(&a[0])?,
                }
            }
            MANAGER_UP => {
                arity(1)?;
                Incoming::ManagerUp(string(&a[0])?)
            }
            NETCONTROL_HELLO => {
                arity(1)?;
                Incoming::NetControlHello(count(&a[0])?)
            }
            _ => return Err(EventError::Unknown(e.name)),
        })
    }
}
