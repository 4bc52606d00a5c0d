//! What catch-and-release's NetControl does to the BHR registry, one step of the core at a
//! time.
//!
//! * [`RegistryIds`] gives each DROP rule its id by making the rule a registry block for
//!   exactly that `/32` or `/128`: rule id = block id. The registry's checks apply, so a
//!   whitelisted address is never blocked (the rule is FAILED with BHR's message).
//! * [`ManagerPlugin`] is one NetControl plugin per block-manager ident: it accepts every
//!   rule and answers later, when that ident calls `set_blocked` (the core feeds the
//!   answer in). With no idents configured, one plugin named `catchd` answers at once.
//!   Either way the registry expires blocks (`can_expire`): the core reports a timeout when
//!   a block's `unblock_at` passes. A removal is only recorded; the core applies it once
//!   the engine call returns.
//!
//! Nothing here waits. The core takes the step's cluster guard before it calls the engine
//! ([`Effects::begin`]); a new block is an in-memory registry change whose rows are handed
//! to the store's queue; and [`Effects::finish`] hands the core what the step did: the
//! blocks made, the receipts to watch (or, in a cluster, to wait for before the guard is
//! dropped).

use std::sync::{Arc, Mutex, MutexGuard};

use ipnet::IpNet;

use crate::api::bhr::{AppState, ClusterGuard, Receipt, Tell};
use crate::bhr::model::UserId;
use crate::bhr::registry::{NewBlock, Refused};
use crate::cnr::{Answer, Answers, Plugin, Rule, RuleId, RuleIds};
use crate::time::{Interval, Time};

/// The plugin name when no block managers are configured.
pub const AUTO_PLUGIN: &str = "catchd";

/// Why a change is refused when the step holds no cluster lock (the database is down).
const UNREACHABLE: &str = "the cluster's database is unreachable";

/// A registry block id as a NetControl rule id (ids past `u32::MAX` have none).
pub fn rule_id(block: u64) -> Option<RuleId> {
    u32::try_from(block).ok().and_then(RuleId::new)
}

/// A NetControl rule id as the registry block id it stands for.
pub fn block_id(rule: RuleId) -> u64 {
    u64::from(rule.get())
}

/// A removal the engine asked for, applied once its call has returned.
struct End {
    id: RuleId,
    why: String,
    at: Time,
}

/// The registry side of catch-and-release during one step of the core.
pub struct Effects {
    api: Arc<AppState>,
    /// The user blocks are made as.
    who: UserId,
    /// Their `source`.
    source: String,
    /// Their `why` when the rule has no location.
    why: String,
    /// The step's cluster guard: `None` between steps, `Some(Err)` when the database could
    /// not be reached (changes are then refused).
    held: Option<Result<ClusterGuard, ()>>,
    /// Blocks made in this step: id and `unblock_at`.
    made: Vec<(RuleId, Option<Time>)>,
    ends: Vec<End>,
    receipts: Vec<Receipt>,
    /// Why the last rule was refused.
    refusal: Option<String>,
}

/// What a step did to the registry (see [`Effects::finish`]).
pub struct Done {
    /// Blocks made: id and `unblock_at`.
    pub made: Vec<(RuleId, Option<Time>)>,
    /// The receipts of the step's registry changes.
    pub receipts: Vec<Receipt>,
    /// The step's cluster guard, to be dropped once the receipts are in (in a cluster).
    pub held: Option<ClusterGuard>,
}

/// [`Effects`] shared by the id source and the plugins (the core thread is the only user).
pub type Shared = Arc<Mutex<Effects>>;

/// Locks shared effects (a poisoned lock is still usable: nothing in them can be left
/// half-changed by a panic).
pub fn lock(l: &Shared) -> MutexGuard<'_, Effects> {
    l.lock().unwrap_or_else(|p| p.into_inner())
}

impl Effects {
    /// Effects making blocks as `who` with `source`, and `why` when a drop has no location.
    pub fn new(api: Arc<AppState>, who: UserId, source: &str, why: &str) -> Shared {
        Arc::new(Mutex::new(Effects {
            api,
            who,
            source: source.to_string(),
            why: why.to_string(),
            held: None,
            made: Vec::new(),
            ends: Vec::new(),
            receipts: Vec::new(),
            refusal: None,
        }))
    }

    /// The user blocks are made as.
    pub fn who(&self) -> UserId {
        self.who
    }

    /// Starts a step that may change the registry, holding `held` (taken by the core
    /// before it calls the engine).
    pub fn begin(&mut self, held: Result<ClusterGuard, ()>) {
        self.held = Some(held);
    }

    /// Whether a step holding the cluster guard is in progress.
    pub fn holding(&self) -> bool {
        self.held.is_some()
    }

    /// Ends the step: applies the removals still recorded and hands over what the step did.
    pub fn finish(&mut self) -> Done {
        self.apply_ends();
        Done {
            made: std::mem::take(&mut self.made),
            receipts: std::mem::take(&mut self.receipts),
            held: self.held.take().and_then(Result::ok),
        }
    }

    /// Why the last rule was refused (taken).
    pub fn take_refusal(&mut self) -> Option<String> {
        self.refusal.take()
    }

    /// The guard to change the registry under: the step's, or outside a cluster a free
    /// one (a change made between steps: nothing to coordinate with).
    fn guard(&mut self) -> Result<&ClusterGuard, Refused> {
        if self.held.is_none() {
            if self.api.in_cluster() {
                debug_assert!(false, "a registry change outside a core step");
                return Err(Refused(UNREACHABLE.into()));
            }
            self.held = Some(Ok(ClusterGuard::none()));
        }
        match self.held.as_ref() {
            Some(Ok(g)) => Ok(g),
            _ => Err(Refused(UNREACHABLE.into())),
        }
    }

    /// Checks and adds a block (see [`AppState::add_block`]) in this step; the receipt is
    /// kept for [`finish`](Effects::finish).
    ///
    /// # Errors
    /// The registry's refusal.
    pub fn add_block(
        &mut self,
        req: &NewBlock,
        now: Time,
        tell: Tell,
    ) -> Result<(u64, bool), Refused> {
        self.apply_ends();
        let api = self.api.clone();
        let g = self.guard()?;
        let (id, created, rx) = api.add_block(g, req, now, tell)?;
        self.receipts.push(rx);
        Ok((id, created))
    }

    /// Ends block `id` at once as `who`, if it is the expected block for its network;
    /// returns whether it was.
    pub fn end_block(&mut self, id: u64, who: UserId, why: &str, now: Time) -> bool {
        let api = self.api.clone();
        let Ok(g) = self.guard() else {
            return false;
        };
        match api.end_block(g, id, who, why, now, Tell::Nobody) {
            Some((_, rx)) => {
                self.receipts.push(rx);
                true
            }
            None => false,
        }
    }

    /// Applies the recorded removals, in order.
    fn apply_ends(&mut self) {
        for e in std::mem::take(&mut self.ends) {
            let why = if e.why.is_empty() {
                "removed by catch-and-release"
            } else {
                &e.why
            };
            self.end_block(block_id(e.id), self.who, why, e.at);
        }
    }
}

/// Rule ids from the registry (see the module docs).
pub struct RegistryIds(pub Shared);

impl RuleIds for RegistryIds {
    fn assign(
        &mut self,
        now: Time,
        entity: IpNet,
        expire: Interval,
        location: Option<&str>,
    ) -> Result<RuleId, String> {
        let mut e = lock(&self.0);
        let why = match location {
            Some(loc) if !loc.is_empty() => loc.to_string(),
            _ => e.why.clone(),
        };
        let until = (expire > Interval::ZERO).then(|| now + expire);
        let req = NewBlock::new(entity, e.who, &e.source, why).until(until);
        match e.add_block(&req, now, Tell::Nobody) {
            Ok((id, _created)) => {
                let rule = rule_id(id)
                    .ok_or_else(|| format!("block id {id} is beyond NetControl's rule ids"))?;
                let end = e.api.block(id).and_then(|b| b.unblock_at);
                e.made.push((rule, end));
                e.refusal = None;
                Ok(rule)
            }
            Err(refused) => {
                e.refusal = Some(refused.0.clone());
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
    effects: Shared,
}

impl ManagerPlugin {
    /// The plugin for block manager `ident`.
    pub fn ident(ident: &str, effects: Shared) -> ManagerPlugin {
        ManagerPlugin {
            name: ident.to_string(),
            auto: false,
            effects,
        }
    }

    /// The plugin that accepts for the registry at once.
    pub fn auto(effects: Shared) -> ManagerPlugin {
        ManagerPlugin {
            name: AUTO_PLUGIN.to_string(),
            auto: true,
            effects,
        }
    }
}

impl Plugin for ManagerPlugin {
    fn name(&self) -> &str {
        &self.name
    }

    fn can_expire(&self) -> bool {
        true
    }

    fn add_rule(&mut self, _now: Time, _rule: &Arc<Rule>, answers: &mut Answers) -> bool {
        if self.auto {
            answers.push(Answer::Added(String::new()));
        }
        true
    }

    fn remove_rule(
        &mut self,
        now: Time,
        rule: &Arc<Rule>,
        reason: &str,
        answers: &mut Answers,
    ) -> bool {
        lock(&self.effects).ends.push(End {
            id: rule.id,
            why: reason.to_string(),
            at: now,
        });
        if self.auto {
            answers.push(Answer::Removed(String::new()));
        }
        true
    }
}
