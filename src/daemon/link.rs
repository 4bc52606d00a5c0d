//! Catch-and-release's NetControl on top of the BHR registry.
//!
//! * [`RegistryIds`] gives each DROP rule its id by making the rule a registry block for
//!   exactly that `/32` or `/128`: rule id = block id. The registry's checks apply, so a
//!   whitelisted address is never blocked (the rule is FAILED with BHR's message).
//! * [`ManagerPlugin`] is one NetControl plugin per block-manager ident: it accepts every
//!   rule and answers later, when that ident calls `set_blocked` (the core feeds the
//!   answer in). With no idents configured, one plugin named `catchd` answers at once.
//!   Either way the registry expires blocks (`can_expire`): the core reports a timeout when
//!   a block's `unblock_at` passes.
//!
//! Both sides share a [`Link`] to the registry; the core thread is the only caller.

use std::sync::{Arc, Mutex, MutexGuard};

use ipnet::IpNet;

use crate::bhr::api::{AppState, Receipt};
use crate::bhr::model::UserId;
use crate::bhr::registry::NewBlock;
use crate::cnr::{Answer, Answers, Backend, Rule, RuleId, RuleIds};
use crate::time::{Interval, Time};

/// The plugin name when no block managers are configured.
pub const AUTO_PLUGIN: &str = "catchd";

/// The registry as catch-and-release's backends see it.
pub struct Link {
    api: Arc<AppState>,
    /// The user blocks are made as.
    who: UserId,
    /// Their `source`.
    source: String,
    /// Their `why` when the rule has no location.
    why: String,
    /// Network time of the engine call in progress.
    pub now: Time,
    /// Blocks made since the core last looked: id and `unblock_at`.
    pub made: Vec<(RuleId, Option<Time>)>,
    /// Why the last rule was refused.
    pub refusal: Option<String>,
    /// The receipt of the last change submitted.
    pub last: Option<Receipt>,
}

/// A [`Link`] shared by the id source and the plugins.
pub type Shared = Arc<Mutex<Link>>;

impl Link {
    /// A link making blocks as `who` with `source`, and `why` when a drop has no location.
    pub fn new(api: Arc<AppState>, who: UserId, source: &str, why: &str) -> Shared {
        Arc::new(Mutex::new(Link {
            api,
            who,
            source: source.to_string(),
            why: why.to_string(),
            now: Time::ZERO,
            made: Vec::new(),
            refusal: None,
            last: None,
        }))
    }

    /// The user blocks are made as.
    pub fn who(&self) -> UserId {
        self.who
    }

    /// Ends the registry block of a rule (a NetControl removal), if it is still in force.
    fn end(&mut self, id: RuleId, reason: &str) {
        let why = if reason.is_empty() {
            "removed by catch-and-release"
        } else {
            reason
        };
        if let Some(rx) = self
            .api
            .end_block_at(u64::from(id.get()), self.who, why, self.now)
        {
            self.last = Some(rx);
        }
    }
}

/// Locks a shared link (a poisoned lock is still usable: the link has no invariants a
/// panic could break half way).
pub fn lock(l: &Shared) -> MutexGuard<'_, Link> {
    l.lock().unwrap_or_else(|p| p.into_inner())
}

/// Rule ids from the registry (see the module docs).
pub struct RegistryIds(pub Shared);

impl RuleIds for RegistryIds {
    fn assign(
        &mut self,
        entity: IpNet,
        expire: Interval,
        location: Option<&str>,
    ) -> Result<RuleId, String> {
        let mut l = lock(&self.0);
        let why = match location {
            Some(loc) if !loc.is_empty() => loc.to_string(),
            _ => l.why.clone(),
        };
        let until = (expire > Interval::ZERO).then(|| l.now + expire);
        let req = NewBlock {
            cidr: entity,
            cidr_text: entity.to_string(),
            who: l.who,
            source: l.source.clone(),
            why,
            seconds: 0,
            until,
            skip_whitelist: false,
            extend: false,
            autoscale: false,
        };
        match l.api.add_block_at(&req, l.now) {
            Ok((id, _created, rx)) => {
                let id = u32::try_from(id)
                    .ok()
                    .and_then(RuleId::new)
                    .ok_or_else(|| format!("block id {id} is beyond NetControl's rule ids"))?;
                let end = l.api.block(u64::from(id.get())).and_then(|b| b.unblock_at);
                l.made.push((id, end));
                l.last = Some(rx);
                l.refusal = None;
                Ok(id)
            }
            Err(refused) => {
                l.refusal = Some(refused.0.clone());
                Err(refused.0)
            }
        }
    }
}

/// A NetControl plugin standing for a block manager ident, or for the registry itself
/// (see the module docs).
pub struct ManagerPlugin {
    name: String,
    /// Answers at once (no block managers configured).
    auto: bool,
    link: Shared,
}

impl ManagerPlugin {
    /// The plugin for block manager `ident`.
    pub fn ident(ident: &str, link: Shared) -> ManagerPlugin {
        ManagerPlugin {
            name: ident.to_string(),
            auto: false,
            link,
        }
    }

    /// The plugin that accepts for the registry at once.
    pub fn auto(link: Shared) -> ManagerPlugin {
        ManagerPlugin {
            name: AUTO_PLUGIN.to_string(),
            auto: true,
            link,
        }
    }
}

impl Backend for ManagerPlugin {
    fn name(&self) -> &str {
        &self.name
    }

    fn can_expire(&self) -> bool {
        true
    }

    fn add_rule(&mut self, _rule: &Arc<Rule>, answers: &mut Answers) -> bool {
        if self.auto {
            answers.push(Answer::Added(String::new()));
        }
        true
    }

    fn remove_rule(&mut self, rule: &Arc<Rule>, reason: &str, answers: &mut Answers) -> bool {
        lock(&self.link).end(rule.id, reason);
        if self.auto {
            answers.push(Answer::Removed(String::new()));
        }
        true
    }
}
