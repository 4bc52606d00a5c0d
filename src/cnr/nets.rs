//! Catch-and-release for networks: catchd's extension, off unless configured.
//!
//! An attacker that owns a network can use a new address for every connection, so the
//! addresses' ladder never climbs past its first step. When catch-and-release has blocked
//! [`Networks::threshold`] distinct addresses of one network (a /24 or /64 by default)
//! within [`Networks::window`], it drops the network itself, on a ladder of its own, with
//! the addresses' semantics: block, release, watch; a sighting of any address inside a
//! released, still-watched network re-blocks the network one step up; a network not seen
//! during its watch is forgotten. Member addresses keep their own entries.
//!
//! The network's rule is an ordinary NetControl DROP of a subnet entity, so every backend
//! (the BHR registry, with its whitelist and prefix rules) sees it as it sees any. Its lines
//! go to `netcontrol_catch_release_net.log`; `netcontrol.log` shows its rule as Zeek shows a
//! subnet entity. The counts towards the threshold live in memory only: after a restart
//! they start again (the networks already tracked are kept).

use std::collections::HashMap;

use ipnet::IpNet;

use super::intervals::Intervals;
use super::record::{Action, CatchReleaseNetRecord};
use super::watch::{Entry, NetShape, Sweep};
use super::{BlockInfo, Engine, Output, PluginId, Rule, RuleType, WatchState, non_empty};
use crate::addr::Addr;
use crate::time::{Interval, Time};

/// The most networks counted towards the threshold at once: past it, addresses of new
/// networks are not counted until older counts leave the window.
pub const MAX_COUNTED: usize = 1_000_000;

/// `[cnr.networks]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Networks {
    /// How networks are formed from addresses.
    pub shape: NetShape,
    /// Distinct addresses of one network blocked within `window` that drop the network.
    pub threshold: usize,
    /// The window.
    pub window: Interval,
    /// The networks' ladder.
    pub intervals: Intervals,
}

impl Networks {
    /// The defaults: /24 and /64, 5 addresses within 10 minutes, the addresses' ladder.
    pub fn with_intervals(intervals: Intervals) -> Networks {
        Networks {
            shape: NetShape::default(),
            threshold: 5,
            window: Interval::from_secs(600),
            intervals,
        }
    }
}

/// Addresses of one network blocked recently: (address, when).
pub(super) type Counted = HashMap<IpNet, Vec<(Addr, Time)>, foldhash::fast::RandomState>;

impl Engine {
    fn net_intervals(&self) -> &Intervals {
        match &self.cfg.networks {
            Some(n) => &n.intervals,
            None => &self.cfg.intervals,
        }
    }

    /// A log record for network `n` in state `e`.
    fn net_record(&self, n: IpNet, e: &Entry, action: Action) -> CatchReleaseNetRecord {
        let iv = self.net_intervals();
        let k = usize::from(e.step);
        CatchReleaseNetRecord {
            ts: self.now,
            rule_id: e.rule,
            subnet: n,
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

    fn net_emit(&mut self, mut rec: CatchReleaseNetRecord, message: Option<String>) {
        rec.message = message;
        self.out.push_back(Output::CatchReleaseNet(rec));
    }

    /// An address was blocked (DROP_REQUESTED or SEEN_AGAIN): counts it for its network,
    /// and drops the network once enough distinct addresses of it were blocked in the
    /// window.
    pub(super) fn net_note_block(&mut self, a: Addr) {
        let Some(nw) = &self.cfg.networks else {
            return;
        };
        let (threshold, window) = (nw.threshold, nw.window);
        let net = self.watch.network_of(&a);
        if self.watch.net_entry(&net).is_some() {
            // Tracked already: its own ladder decides.
            return;
        }
        let horizon = self.now - window;
        if !self.counted.contains_key(&net) && self.counted.len() >= MAX_COUNTED {
            self.counted
                .retain(|_, v| v.iter().any(|(_, t)| *t > horizon));
            if self.counted.len() >= MAX_COUNTED {
                return;
            }
        }
        let now = self.now;
        let hits = self.counted.entry(net).or_default();
        hits.retain(|(_, t)| *t > horizon);
        match hits.iter_mut().find(|(x, _)| *x == a) {
            Some(h) => h.1 = now,
            None => hits.push((a, now)),
        }
        if hits.len() >= threshold {
            self.counted.remove(&net);
            let within = std::time::Duration::from_micros(window.as_micros().max(0) as u64);
            let location = format!(
                "catch-and-release: {threshold} addresses blocked within {}",
                humantime::format_duration(within)
            );
            self.net_drop(net, &location);
        }
    }

    /// Drops network `n` with catch-and-release (the addresses' `drop_now`, for a
    /// network): step 0, or adopts a DROP rule already in place for it (ADDED).
    fn net_drop(&mut self, n: IpNet, location: &str) -> BlockInfo {
        if let Some(e) = self.watch.net_entry(&n) {
            let rec = self.net_record(n, &e, Action::Info);
            self.net_emit(
                rec,
                Some("Already blocked using catch-and-release - ignoring duplicate".into()),
            );
            return self.watch.net_block_info(&e);
        }
        let t = self.now;
        let mut e = Entry {
            start: t,
            expire_ref: t,
            rule: None,
            location: 0,
            reblocked: 0,
            step: 0,
            adopted: false,
        };
        if let Some(existing) = self.nc.drop_rule_for_net(n) {
            e.rule = Some(existing);
            e.adopted = true;
            e.location = self.watch.intern_location(location);
            let rec = self.net_record(n, &e, Action::Added);
            self.net_emit(rec, Some("Network already blocked outside of catch-and-release. Catch and release will monitor and only actively block if it appears in network traffic.".into()));
            self.watch.put_net(n, &e);
            let info = self.watch.net_block_info(&e);
            self.cluster_output(|| Output::NetBlockNew {
                net: n,
                info: info.clone(),
            });
            return info;
        }
        let block = self.net_intervals().block(0);
        self.last_refusal = None;
        match self.nc_drop_net(n, block, location) {
            Some(id) => {
                e.rule = Some(id);
                e.location = self.watch.intern_location(location);
                self.watch.put_net(n, &e);
                let info = self.watch.net_block_info(&e);
                self.cluster_output(|| Output::NetBlockNew {
                    net: n,
                    info: info.clone(),
                });
                let rec = self.net_record(n, &e, Action::DropRequested);
                self.net_emit(rec, None);
                info
            }
            None => {
                // Refused (the registry's whitelist, prefix rules …): say why in this log
                // too, and track nothing.
                let why = self
                    .last_refusal
                    .take()
                    .unwrap_or_else(|| "no backend took the rule".into());
                let rec = self.net_record(n, &e, Action::Info);
                self.net_emit(rec, Some(format!("Network not dropped: {why}")));
                BlockInfo::unknown()
            }
        }
    }

    /// A sighting of `a` for its network: re-blocks the network one step up if it is
    /// watched and no DROP rule for it is in place. Returns whether it is tracked.
    pub(super) fn net_seen(&mut self, a: Addr) -> bool {
        if self.cfg.networks.is_none() {
            return false;
        }
        let generation = self.state_generation();
        if !self.cfg.warn_blocked && self.net_blocked_seen.contains(&a, generation) {
            return true;
        }
        let Some(n) = self.watch.net_of(&a) else {
            return false;
        };
        let Some(mut e) = self.watch.net_entry(&n) else {
            return false;
        };
        if self.nc.drop_rule_for_net(n).is_some() {
            if !self.cfg.warn_blocked {
                self.net_blocked_seen.insert(a, generation);
            } else {
                let rec = self.net_record(n, &e, Action::Info);
                self.net_emit(
                    rec,
                    Some(format!(
                        "Block seen while in rule_entities (from {a}). No action taken."
                    )),
                );
            }
            return true;
        }
        let k = self.net_intervals().escalate(usize::from(e.step));
        e.step = k as u8;
        e.start = self.now;
        e.adopted = false;
        e.count_reblock();
        let location = self.watch.location(e.location);
        let redrop = format!(
            "Re-drop by catch-and-release: {}",
            location.as_deref().unwrap_or("")
        );
        let block = self.net_intervals().block(k);
        e.rule = self.nc_drop_net(n, block, &redrop);
        self.watch.put_net(n, &e);
        let rec = self.net_record(n, &e, Action::SeenAgain);
        self.net_emit(rec, Some(format!("seen: {a}")));
        let info = self.watch.net_block_info(&e);
        self.cluster_output(|| Output::NetBlockNew { net: n, info });
        true
    }

    /// The network a rule is for, when catch-and-release tracks it.
    fn net_check_rule(&self, r: &Rule) -> Option<(IpNet, Entry)> {
        if r.ty != RuleType::Drop || r.host().is_some() {
            return None;
        }
        Some((r.entity, self.watch.net_entry(&r.entity)?))
    }

    /// The `rule_added`/`rule_exists`/`rule_error` handler, for a tracked network.
    pub(super) fn net_rule_answer(
        &mut self,
        r: &Rule,
        p: PluginId,
        action: Action,
        message: Option<String>,
    ) {
        let Some((n, e)) = self.net_check_rule(r) else {
            return;
        };
        let mut rec = self.net_record(n, &e, action);
        rec.plugin = self.nc.plugin_name(p);
        self.net_emit(rec, message);
    }

    /// The `rule_timeout` handler, for a tracked network: UNBLOCK.
    pub(super) fn net_rule_timeout(&mut self, r: &Rule, p: PluginId) {
        let Some((n, e)) = self.net_check_rule(r) else {
            return;
        };
        let mut rec = self.net_record(n, &e, Action::Unblock);
        rec.plugin = self.nc.plugin_name(p);
        self.net_emit(rec, None);
    }

    /// The forget sweep over the networks (after the addresses', same rules).
    pub(super) fn sweep_nets(&mut self) {
        if self.watch.net_len() == 0 {
            return;
        }
        let now = self.now;
        let iv = self.net_intervals().clone();
        let mut gone: Vec<(IpNet, Entry)> = Vec::new();
        self.watch.sweep_nets(now, |n, e| {
            let verdict = e.sweep(now, &iv);
            if verdict == Sweep::Remove {
                gone.push((n, *e));
            }
            verdict
        });
        gone.sort_unstable_by_key(|(n, e)| (e.watch_until(&iv), *n));
        for (n, e) in gone {
            let rec = self.net_record(n, &e, Action::Forgotten);
            let info = self.watch.net_block_info(&e);
            self.net_emit(rec, None);
            self.cluster_output(|| Output::NetForgotten { net: n, info });
            self.watch.release_location(e.location);
        }
    }

    /// Stops tracking network `n`, removing its block if catch-and-release put one in
    /// place that has not ended. Returns false if `n` was not tracked.
    pub fn unblock_net_catch_release(&mut self, now: Time, n: IpNet, reason: &str) -> bool {
        self.advance(now);
        let n = n.trunc();
        let Some(e) = self.watch.net_entry(&n) else {
            return false;
        };
        let rec = self.net_record(n, &e, Action::Unblock);
        self.net_emit(rec, non_empty(reason));
        self.watch.remove_net(&n);
        let iv = self.net_intervals();
        if let (Some(bu), Some(id)) = (e.block_until(iv), e.rule)
            && bu > self.now
        {
            self.nc_remove_rule(id, reason);
        }
        self.cluster_output(|| Output::NetBlockDelete { net: n });
        true
    }

    /// Drops network `n` with catch-and-release at `now`, as the threshold would (for the
    /// API and tests).
    pub fn drop_net_catch_release(&mut self, now: Time, n: IpNet, location: &str) -> BlockInfo {
        self.advance(now);
        self.net_drop(n.trunc(), location)
    }

    /// The [`BlockInfo`] of network `n` (`watch_until` 0 when unknown).
    pub fn net_info(&self, n: IpNet) -> BlockInfo {
        self.watch
            .get_net(&n.trunc())
            .unwrap_or_else(BlockInfo::unknown)
    }

    /// The full state of a tracked network, for a store.
    pub fn net_state(&self, n: IpNet) -> Option<WatchState> {
        let e = self.watch.net_entry(&n)?;
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

    /// Puts a tracked network back as a store kept it, without logging.
    pub fn restore_net(&mut self, n: IpNet, st: &WatchState) {
        let last = self.net_intervals().len().saturating_sub(1);
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
        if let Some(old) = self.watch.net_entry(&n) {
            self.watch.release_location(old.location);
        }
        self.watch.put_net(n.trunc(), &e);
    }

    /// Whether a sighting of `a` now would re-drop its network.
    pub(super) fn may_redrop_net(&self, a: Addr) -> bool {
        self.cfg.networks.is_some()
            && self
                .watch
                .net_of(&a)
                .is_some_and(|n| self.nc.drop_rule_for_net(n).is_none())
    }

    /// How long networks are counted towards the threshold (for messages).
    pub fn networks(&self) -> Option<&Networks> {
        self.cfg.networks.as_ref()
    }
}
