//! Log records, as values: one struct per Zeek log stream.
//!
//! The engine fills these in and hands them out through [`Output`](super::Output); the
//! `zeeklog` module turns them into TSV or JSON lines. Field order and optionality follow
//! Zeek's record types (`NetControl::CatchReleaseInfo`, `NetControl::Info`,
//! `NetControl::DropInfo`), because that is the log schema.

use std::sync::Arc;

use ipnet::IpNet;

use crate::addr::Addr;
use crate::time::{Interval, Time};

use super::netcontrol::{RuleId, RuleType, Target};

/// `NetControl::CatchReleaseActions`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Informational: duplicate drop, backend exists/error answers, blocked address seen.
    Info,
    /// An address already blocked outside catch-and-release was adopted.
    Added,
    /// A first drop was requested.
    DropRequested,
    /// A backend confirmed a drop.
    Dropped,
    /// A block was lifted: by timeout (with a plugin) or by an explicit unblock.
    Unblock,
    /// The watch window ended; the address is no longer tracked.
    Forgotten,
    /// A released address came back and was re-dropped one step higher.
    SeenAgain,
}

impl Action {
    /// Every action, in declaration order.
    pub const ALL: [Action; 7] = [
        Action::Info,
        Action::Added,
        Action::DropRequested,
        Action::Dropped,
        Action::Unblock,
        Action::Forgotten,
        Action::SeenAgain,
    ];

    /// The enum value as Zeek logs it.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Info => "NetControl::INFO",
            Action::Added => "NetControl::ADDED",
            Action::DropRequested => "NetControl::DROP_REQUESTED",
            Action::Dropped => "NetControl::DROPPED",
            Action::Unblock => "NetControl::UNBLOCK",
            Action::Forgotten => "NetControl::FORGOTTEN",
            Action::SeenAgain => "NetControl::SEEN_AGAIN",
        }
    }
}

/// One line of `netcontrol_catch_release.log`.
#[derive(Clone, Debug, PartialEq)]
pub struct CatchReleaseRecord {
    /// Network time when the line was written.
    pub ts: Time,
    /// `current_block_id`, unset when empty.
    pub rule_id: Option<RuleId>,
    /// The address.
    pub ip: Addr,
    /// What happened.
    pub action: Action,
    /// `I[k]`.
    pub block_interval: Interval,
    /// `W(k)`.
    pub watch_interval: Interval,
    /// End of the current block; unset for ADDED.
    pub blocked_until: Option<Time>,
    /// End of watching.
    pub watched_until: Time,
    /// `num_reblocked + 1`.
    pub num_blocked: u64,
    /// Where the drop came from.
    pub location: Option<Arc<str>>,
    /// Free text.
    pub message: Option<String>,
    /// The backend that answered, for DROPPED, INFO (exists/error) and UNBLOCK (timeout).
    pub plugin: Option<Arc<str>>,
}

/// `NetControl::InfoCategory`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Category {
    /// A framework message.
    Message,
    /// An error.
    Error,
    /// A rule event.
    Rule,
}

impl Category {
    /// The enum value as Zeek logs it.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Message => "NetControl::MESSAGE",
            Category::Error => "NetControl::ERROR",
            Category::Rule => "NetControl::RULE",
        }
    }
}

/// `NetControl::InfoState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Sent to a backend.
    Requested,
    /// A backend added it.
    Succeeded,
    /// A backend already had it.
    Exists,
    /// Could not be added.
    Failed,
    /// Deleted without telling backends.
    Removed,
    /// Expired.
    Timeout,
}

impl State {
    /// The enum value as Zeek logs it.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Requested => "NetControl::REQUESTED",
            State::Succeeded => "NetControl::SUCCEEDED",
            State::Exists => "NetControl::EXISTS",
            State::Failed => "NetControl::FAILED",
            State::Removed => "NetControl::REMOVED",
            State::Timeout => "NetControl::TIMEOUT",
        }
    }
}

/// One line of `netcontrol.log`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NetControlRecord {
    /// Network time.
    pub ts: Time,
    /// The rule, if the line is about one.
    pub rule_id: Option<RuleId>,
    /// Line category.
    pub category: Option<Category>,
    /// `ADD`, `REMOVE` or `EXPIRE`.
    pub cmd: Option<&'static str>,
    /// Rule state.
    pub state: Option<State>,
    /// The rule type.
    pub action: Option<RuleType>,
    /// The rule target.
    pub target: Option<Target>,
    /// The entity, rendered as Zeek does (`192.168.18.50/32`).
    pub entity: Option<IpNet>,
    /// Free text.
    pub msg: Option<String>,
    /// Rule priority.
    pub priority: Option<i64>,
    /// Rule expiry.
    pub expire: Option<Interval>,
    /// Where the rule came from, if non-empty.
    pub location: Option<Arc<str>>,
    /// Plugin name.
    pub plugin: Option<Arc<str>>,
}

/// One line of `netcontrol_drop.log`: a successful `NetControl::drop_address`.
#[derive(Clone, Debug, PartialEq)]
pub struct DropRecord {
    /// Network time.
    pub ts: Time,
    /// The new rule.
    pub rule_id: RuleId,
    /// The dropped address.
    pub orig_h: Addr,
    /// Drop length (zero: indefinite).
    pub expire: Interval,
    /// Where the drop came from, if non-empty.
    pub location: Option<Arc<str>>,
}

/// One line of `netcontrol_catch_release_net.log`: catchd's catch-and-release of networks
/// (`[cnr.networks]`). The fields of [`CatchReleaseRecord`], with the network in `subnet`
/// where an address has `ip`.
#[derive(Clone, Debug, PartialEq)]
pub struct CatchReleaseNetRecord {
    /// When.
    pub ts: Time,
    /// The rule of the current block.
    pub rule_id: Option<RuleId>,
    /// The network.
    pub subnet: IpNet,
    /// What happened.
    pub action: Action,
    /// The current block's length (on the networks' ladder).
    pub block_interval: Interval,
    /// The current watch's length.
    pub watch_interval: Interval,
    /// When the block ends.
    pub blocked_until: Option<Time>,
    /// When watching ends.
    pub watched_until: Time,
    /// Blocks so far.
    pub num_blocked: u64,
    /// Why the network was dropped.
    pub location: Option<Arc<str>>,
    /// Details.
    pub message: Option<String>,
    /// The answering backend.
    pub plugin: Option<Arc<str>>,
}
