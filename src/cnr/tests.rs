//! Engine tests: one table-driven test per rule of `zeek-netcontrol.md` §1, and a
//! property test against a deliberately naive model.

use super::*;
use crate::time::{Interval, Time};

const T0: Time = Time::from_timeval(1_700_000_000, 0);

fn secs(s: f64) -> Interval {
    Interval::from_micros((s * 1e6).round() as i64)
}

fn at(s: f64) -> Time {
    T0 + secs(s)
}

fn addr(s: &str) -> Addr {
    s.parse().unwrap()
}

/// What a test does at one moment.
#[derive(Clone, Debug)]
enum Op {
    /// `drop_address_catch_release(a, loc)` from a handler in the first drain round.
    Drop(&'static str, &'static str),
    /// A packet from `a` that counts as a connection originator.
    Packet(&'static str),
    /// A packet from nobody we watch: time passes.
    Tick,
    /// `unblock_address_catch_release(a, reason)`.
    Unblock(&'static str, &'static str),
    /// `NetControl::drop_address(a, secs)` outside catch-and-release.
    OutsideDrop(&'static str, f64),
}

fn engine(intervals: &str) -> Engine {
    let cfg = Config {
        intervals: intervals.parse().unwrap(),
        ..Config::default()
    };
    Engine::with_accepting_backend(cfg, "Debug-All")
}

/// Runs a timeline as a replay would, and renders the catch-and-release log as
/// `seconds-after-T0 ACTION rule k num_blocked [message] [plugin]` lines, plus errors.
fn run(e: &mut Engine, steps: &[(f64, Op)]) -> Vec<String> {
    let mut lines = Vec::new();
    for (s, op) in steps {
        let now = at(*s);
        e.advance(now);
        match op {
            Op::Drop(a, loc) => {
                e.drop_catch_release(now, addr(a), loc);
                e.drain(ZEEK_ROUNDS_PER_PACKET - 1);
            }
            Op::Packet(a) => {
                let s = e.sighting(now, addr(a));
                e.drain(s.rounds(ZEEK_ROUNDS_PER_PACKET));
            }
            Op::Tick => e.drain(ZEEK_ROUNDS_PER_PACKET),
            Op::Unblock(a, reason) => {
                e.unblock_catch_release(now, addr(a), reason);
                e.drain(ZEEK_ROUNDS_PER_PACKET - 1);
            }
            Op::OutsideDrop(a, len) => {
                let net = host_net(addr(a));
                e.drop_address(now, net, secs(*len), "outside");
                e.drain(ZEEK_ROUNDS_PER_PACKET - 1);
            }
        }
        while let Some(o) = e.poll_output() {
            match o {
                Output::CatchRelease(r) => {
                    let mut l = format!(
                        "{} {} {} {} {} {}",
                        fmt_rel(r.ts),
                        r.ip,
                        r.action.as_str().trim_start_matches("NetControl::"),
                        r.rule_id.map_or("-".to_string(), |i| i.to_string()),
                        e.config()
                            .intervals
                            .as_slice()
                            .iter()
                            .position(|i| *i == r.block_interval)
                            .unwrap(),
                        r.num_blocked
                    );
                    if let Some(m) = r.message {
                        l.push_str(&format!(" [{m}]"));
                    }
                    if let Some(p) = r.plugin {
                        l.push_str(&format!(" <{p}>"));
                    }
                    lines.push(l);
                }
                Output::Error(m) => lines.push(format!("{} error: {m}", fmt_rel(e.now()))),
                _ => {}
            }
        }
    }
    lines
}

fn fmt_rel(t: Time) -> String {
    let d = t - T0;
    format!("+{}", d.as_secs_f64())
}

#[track_caller]
fn check(intervals: &str, steps: &[(f64, Op)], expect: &[&str]) {
    let mut e = engine(intervals);
    let got = run(&mut e, steps);
    assert_eq!(got, expect, "\n got: {got:#?}");
}

#[test]
fn first_drop_requests_and_backend_confirms() {
    check(
        "10m,1h,24h,7d",
        &[(0.0, Op::Drop("10.1.1.1", "scan"))],
        &[
            "+0 10.1.1.1 DROP_REQUESTED 2 0 1",
            "+0 10.1.1.1 DROPPED 2 0 1 <Debug-All>",
        ],
    );
    let mut e = engine("10m,1h,24h,7d");
    run(&mut e, &[(0.0, Op::Drop("10.1.1.1", "scan"))]);
    let bi = e.info(addr("10.1.1.1"));
    assert_eq!(bi.block_until, Some(at(600.0)));
    assert_eq!(bi.watch_until, at(3600.0));
    assert_eq!(bi.location.as_deref(), Some("scan"));
    assert_eq!(bi.current_block_id, RuleId::new(2));
}

#[test]
fn duplicate_drop_is_info_and_changes_nothing() {
    check(
        "10m,1h",
        &[
            (0.0, Op::Drop("10.1.1.1", "")),
            (5.0, Op::Drop("10.1.1.1", "again")),
        ],
        &[
            "+0 10.1.1.1 DROP_REQUESTED 2 0 1",
            "+0 10.1.1.1 DROPPED 2 0 1 <Debug-All>",
            "+5 10.1.1.1 INFO 2 0 1 [Already blocked using catch-and-release - ignoring duplicate]",
        ],
    );
}

#[test]
fn drop_of_an_address_blocked_outside_is_added_without_block_until() {
    let mut e = engine("10m,1h,24h");
    let lines = run(
        &mut e,
        &[
            (0.0, Op::OutsideDrop("10.1.1.1", 120.0)),
            (1.0, Op::Drop("10.1.1.1", "adopt")),
        ],
    );
    assert_eq!(
        lines,
        [
            "+1 10.1.1.1 ADDED 2 0 1 [Address already blocked outside of catch-and-release. Catch and release will monitor and only actively block if it appears in network traffic.]"
        ]
    );
    let bi = e.info(addr("10.1.1.1"));
    assert_eq!(bi.block_until, None);
    assert_eq!(bi.watch_until, at(1.0 + 3600.0));
    // Seen while the outside block is in place: nothing. Its timeout is logged, as the
    // address is tracked. After it ends: step 1 at once.
    let lines = run(
        &mut e,
        &[
            (60.0, Op::Packet("10.1.1.1")),
            (121.0, Op::Tick),
            (200.0, Op::Packet("10.1.1.1")),
        ],
    );
    assert_eq!(
        lines,
        [
            "+121 10.1.1.1 UNBLOCK 2 0 1 <Debug-All>",
            "+200 10.1.1.1 SEEN_AGAIN 3 1 2",
            "+200 10.1.1.1 DROPPED 3 1 2 <Debug-All>",
        ]
    );
}

#[test]
fn seen_unknown_or_still_blocked_does_nothing() {
    check(
        "10m,1h",
        &[
            (0.0, Op::Packet("10.9.9.9")),
            (1.0, Op::Drop("10.1.1.1", "")),
            (2.0, Op::Packet("10.1.1.1")),
            (599.0, Op::Packet("10.1.1.1")),
        ],
        &[
            "+1 10.1.1.1 DROP_REQUESTED 2 0 1",
            "+1 10.1.1.1 DROPPED 2 0 1 <Debug-All>",
        ],
    );
}

#[test]
fn seen_while_blocked_warns_when_asked() {
    let mut e = Engine::with_accepting_backend(
        Config {
            warn_blocked: true,
            ..Config::default()
        },
        "Debug-All",
    );
    let lines = run(
        &mut e,
        &[
            (0.0, Op::Drop("10.1.1.1", "")),
            (2.0, Op::Packet("10.1.1.1")),
            (3.0, Op::Packet("10.1.1.1")),
        ],
    );
    assert_eq!(
        &lines[2..],
        [
            "+2 10.1.1.1 INFO 2 0 1 [Block seen while in rule_entities. No action taken.]",
            "+3 10.1.1.1 INFO 2 0 1 [Block seen while in rule_entities. No action taken.]",
        ]
    );
}

#[test]
fn release_then_return_escalates_and_saturates() {
    // 1s,2s,4s: block 1s watch 2s; then block 2s watch 4s; then 4s/4s (last step).
    check(
        "1s,2s,4s",
        &[
            (0.0, Op::Drop("10.1.1.1", "")),
            (1.0, Op::Tick),
            (1.5, Op::Packet("10.1.1.1")),
            (3.5, Op::Tick),
            (4.0, Op::Packet("10.1.1.1")),
            (8.0, Op::Tick),
            (8.5, Op::Packet("10.1.1.1")),
        ],
        &[
            "+0 10.1.1.1 DROP_REQUESTED 2 0 1",
            "+0 10.1.1.1 DROPPED 2 0 1 <Debug-All>",
            "+1 10.1.1.1 UNBLOCK 2 0 1 <Debug-All>",
            "+1.5 10.1.1.1 SEEN_AGAIN 3 1 2",
            "+1.5 10.1.1.1 DROPPED 3 1 2 <Debug-All>",
            "+3.5 10.1.1.1 UNBLOCK 3 1 2 <Debug-All>",
            "+4 10.1.1.1 SEEN_AGAIN 4 2 3",
            "+4 10.1.1.1 DROPPED 4 2 3 <Debug-All>",
            "+8 10.1.1.1 UNBLOCK 4 2 3 <Debug-All>",
            // watch_until == block_until at the last step; the first sweep after release
            // (t = 0, 10, 20 ... here) has not come yet, so the address is still known
            // and escalation saturates at step 2.
            "+8.5 10.1.1.1 SEEN_AGAIN 5 2 4",
            "+8.5 10.1.1.1 DROPPED 5 2 4 <Debug-All>",
        ],
    );
}

#[test]
fn a_sighting_on_the_packet_that_expires_the_block_still_finds_it_in_place() {
    // The expiry timer fires on the packet at +600, but the rule is only gone after that
    // packet's events ran (rule_expire -> rule_timeout -> remove -> rule_removed), so this
    // sighting is ignored, exactly as in Zeek. The next one re-blocks.
    check(
        "10m,1h",
        &[
            (0.0, Op::Drop("10.1.1.1", "")),
            (600.0, Op::Packet("10.1.1.1")),
            (600.1, Op::Packet("10.1.1.1")),
        ],
        &[
            "+0 10.1.1.1 DROP_REQUESTED 2 0 1",
            "+0 10.1.1.1 DROPPED 2 0 1 <Debug-All>",
            "+600 10.1.1.1 UNBLOCK 2 0 1 <Debug-All>",
            "+600.1 10.1.1.1 SEEN_AGAIN 3 1 2",
            "+600.1 10.1.1.1 DROPPED 3 1 2 <Debug-All>",
        ],
    );
}

#[test]
fn forgotten_at_the_first_sweep_after_watch_until() {
    // Sweeps at +0 (first packet), then every 10 s of packet time after the previous one.
    check(
        "1s,5s",
        &[
            (0.0, Op::Drop("10.1.1.1", "")),
            (4.0, Op::Tick),
            (9.9, Op::Tick),
            (10.0, Op::Tick),
        ],
        &[
            "+0 10.1.1.1 DROP_REQUESTED 2 0 1",
            "+0 10.1.1.1 DROPPED 2 0 1 <Debug-All>",
            "+4 10.1.1.1 UNBLOCK 2 0 1 <Debug-All>",
            "+10 10.1.1.1 FORGOTTEN 2 0 1",
        ],
    );
}

#[test]
fn a_trace_gap_delays_timers_and_notes_the_difference() {
    // No packet for 700 s: the expiry fires on the next packet, which the UNBLOCK line
    // flags as a large difference; the sweep on the same packet forgets the address
    // first (sweeps run during timer dispatch, expiry only in the drain after it).
    check(
        "10m,15m",
        &[(0.0, Op::Drop("10.1.1.1", "")), (1300.0, Op::Tick)],
        &[
            "+0 10.1.1.1 DROP_REQUESTED 2 0 1",
            "+0 10.1.1.1 DROPPED 2 0 1 <Debug-All>",
            "+1300 10.1.1.1 FORGOTTEN 2 0 1",
        ],
    );
    check(
        "10m,1h",
        &[(0.0, Op::Drop("10.1.1.1", "")), (1300.0, Op::Tick)],
        &[
            "+0 10.1.1.1 DROP_REQUESTED 2 0 1",
            "+0 10.1.1.1 DROPPED 2 0 1 <Debug-All>",
            "+1300 10.1.1.1 UNBLOCK 2 0 1 [Difference between network_time and block time excessive: 700.000000] <Debug-All>",
        ],
    );
}

#[test]
fn sweep_period_is_configurable() {
    let mut e = Engine::with_accepting_backend(
        Config {
            intervals: "1s,2s".parse().unwrap(),
            sweep_interval: Interval::from_secs(3),
            ..Config::default()
        },
        "Debug-All",
    );
    let lines = run(
        &mut e,
        &[
            (0.0, Op::Drop("10.1.1.1", "")),
            (2.5, Op::Tick),
            (3.0, Op::Tick),
        ],
    );
    assert_eq!(lines.last().unwrap(), "+3 10.1.1.1 FORGOTTEN 2 0 1");
}

#[test]
fn unblock_logs_and_removes_only_a_live_block_it_created() {
    let mut e = engine("10m,1h");
    let lines = run(
        &mut e,
        &[
            (0.0, Op::Drop("10.1.1.1", "")),
            (1.0, Op::Unblock("10.1.1.1", "false positive")),
            (2.0, Op::Unblock("10.1.1.1", "again")),
        ],
    );
    assert_eq!(&lines[2..], ["+1 10.1.1.1 UNBLOCK 2 0 1 [false positive]"]);
    assert!(!e.info(addr("10.1.1.1")).is_known());
    assert_eq!(e.rule_count(), 0, "the live block was removed");
    assert!(!e.unblock_catch_release(at(3.0), addr("10.1.1.1"), ""));

    // An adopted (ADDED) block is left alone.
    let mut e = engine("10m,1h");
    run(
        &mut e,
        &[
            (0.0, Op::OutsideDrop("10.2.2.2", 3600.0)),
            (1.0, Op::Drop("10.2.2.2", "")),
            (2.0, Op::Unblock("10.2.2.2", "")),
        ],
    );
    assert_eq!(e.rule_count(), 1, "the outside block stays");
}

#[test]
fn unblock_removes_the_block_through_the_backend() {
    let mut e = engine("10m,1h");
    run(&mut e, &[(0.0, Op::Drop("10.1.1.1", ""))]);
    let _ = std::iter::from_fn(|| e.poll_output()).count();
    e.unblock_catch_release(at(1.0), addr("10.1.1.1"), "ops");
    e.drain_all();
    let nc: Vec<String> = std::iter::from_fn(|| e.poll_output())
        .filter_map(|o| match o {
            Output::NetControl(r) => Some(format!(
                "{} {} {}",
                r.cmd.unwrap_or("-"),
                r.state.map_or("-", |s| s.as_str()),
                r.msg.unwrap_or_default()
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        nc,
        [
            "REMOVE NetControl::REQUESTED ops",
            "REMOVE NetControl::SUCCEEDED "
        ]
    );
}

#[test]
fn info_of_an_unknown_address_has_watch_until_zero() {
    let e = engine("10m,1h");
    let bi = e.info(addr("2001:db8::1"));
    assert_eq!(bi, BlockInfo::unknown());
    assert_eq!(bi.watch_until, Time::ZERO);
}

#[test]
fn ipv6_addresses_work_like_ipv4() {
    check(
        "1s,2s",
        &[
            (0.0, Op::Drop("2001:db8::7", "")),
            (1.0, Op::Tick),
            (1.5, Op::Packet("2001:db8::7")),
        ],
        &[
            "+0 2001:db8::7 DROP_REQUESTED 2 0 1",
            "+0 2001:db8::7 DROPPED 2 0 1 <Debug-All>",
            "+1 2001:db8::7 UNBLOCK 2 0 1 <Debug-All>",
            "+1.5 2001:db8::7 SEEN_AGAIN 3 1 2",
            "+1.5 2001:db8::7 DROPPED 3 1 2 <Debug-All>",
        ],
    );
}

#[test]
fn duplicate_rules_consume_ids() {
    let mut e = engine("10m,1h");
    let net = host_net(addr("10.1.1.1"));
    assert_eq!(e.drop_address(T0, net, secs(60.0), ""), RuleId::new(2));
    assert_eq!(e.drop_address(T0, net, secs(60.0), ""), None);
    let failed = std::iter::from_fn(|| e.poll_output()).any(|o| {
        matches!(o, Output::NetControl(r) if r.msg.as_deref() == Some("discarded duplicate insertion") && r.rule_id == RuleId::new(3))
    });
    assert!(failed);
    assert_eq!(
        e.drop_address(T0, host_net(addr("10.1.1.2")), secs(60.0), ""),
        RuleId::new(4)
    );
}

#[test]
fn without_backends_a_drop_fails_and_nothing_is_tracked() {
    let mut e = Engine::new(Config::default(), Vec::new());
    let bi = e.drop_catch_release(T0, addr("10.1.1.1"), "scanner");
    assert!(!bi.is_known());
    assert!(e.watched().is_empty());
    // The location was interned for the rule and is given back with it.
    assert_eq!(e.watched().location(1), None);
    let outs: Vec<Output> = std::iter::from_fn(|| e.poll_output()).collect();
    assert!(
        outs.iter().any(
            |o| matches!(o, Output::NetControl(r) if r.msg.as_deref() == Some("not supported"))
        )
    );
    assert!(outs.contains(&Output::Error(
        "Catch and release could not add block for 10.1.1.1; failing.".into()
    )));
}

/// A backend that answers later, as a block manager does: it remembers the rules it took
/// and the test answers for it through `Engine::answer`.
#[derive(Default)]
struct Deferred {
    taken: Arc<std::sync::Mutex<Vec<Arc<Rule>>>>,
}
impl Plugin for Deferred {
    fn name(&self) -> &str {
        "manager"
    }
    fn add_rule(&mut self, _now: Time, r: &Arc<Rule>, _: &mut Answers) -> bool {
        self.taken.lock().unwrap().push(r.clone());
        true
    }
    fn remove_rule(&mut self, _now: Time, _: &Arc<Rule>, _: &str, _: &mut Answers) -> bool {
        true
    }
}

#[test]
fn a_late_answer_confirms_the_drop_when_it_comes() {
    let taken = Arc::new(std::sync::Mutex::new(Vec::new()));
    let backend = Deferred {
        taken: taken.clone(),
    };
    let mut e = Engine::new(Config::default(), vec![(Box::new(backend), 0)]);
    let lines = run(&mut e, &[(0.0, Op::Drop("10.1.1.1", ""))]);
    assert_eq!(lines, ["+0 10.1.1.1 DROP_REQUESTED 2 0 1"], "no answer yet");
    let rule = taken.lock().unwrap()[0].clone();
    let plugin = PluginId::first();
    e.answer(at(3.0), rule, plugin, Answer::Added("installed".into()));
    e.drain_all();
    let lines = run(&mut e, &[]);
    assert!(lines.is_empty());
    let got: Vec<String> = std::iter::from_fn(|| e.poll_output())
        .filter_map(|o| match o {
            Output::CatchRelease(r) => Some(format!(
                "{} {} {}",
                r.action.as_str(),
                r.message.unwrap_or_default(),
                r.plugin.as_deref().unwrap_or("-")
            )),
            _ => None,
        })
        .collect();
    assert_eq!(got, ["NetControl::DROPPED installed manager"]);
    // NetControl now expires the block 10 minutes after the answer, not the request.
    assert_eq!(e.next_deadline(), Some(at(10.0)), "the next forget sweep");
    let _ = run(&mut e, &[(10.0, Op::Tick)]);
    assert_eq!(e.next_deadline(), Some(at(20.0)));
    let lines = run(&mut e, &[(602.9, Op::Tick), (603.0, Op::Tick)]);
    assert_eq!(lines, ["+603 10.1.1.1 UNBLOCK 2 0 1 <manager>"]);
}

#[test]
fn the_watchlist_lists_every_tracked_address() {
    let mut e = engine("10m,1h");
    run(
        &mut e,
        &[
            (0.0, Op::Drop("10.1.1.2", "b")),
            (0.0, Op::Drop("2001:db8::1", "")),
            (1.0, Op::Drop("10.1.1.1", "a")),
        ],
    );
    let snap: Vec<(String, Option<String>, Time)> = e
        .watched()
        .snapshot()
        .into_iter()
        .map(|(a, bi)| {
            (
                a.to_string(),
                bi.location.as_deref().map(String::from),
                bi.watch_until,
            )
        })
        .collect();
    assert_eq!(
        snap,
        [
            ("10.1.1.1".to_string(), Some("a".to_string()), at(3601.0)),
            ("10.1.1.2".to_string(), Some("b".to_string()), at(3600.0)),
            ("2001:db8::1".to_string(), None, at(3600.0)),
        ]
    );
}

/// A backend that errors on every add.
struct Failing;
impl Plugin for Failing {
    fn name(&self) -> &str {
        "failing"
    }
    fn add_rule(&mut self, _now: Time, _: &Arc<Rule>, a: &mut Answers) -> bool {
        a.push(Answer::Error("no route".into()));
        true
    }
    fn remove_rule(&mut self, _now: Time, _: &Arc<Rule>, _: &str, _: &mut Answers) -> bool {
        true
    }
}

#[test]
fn a_backend_error_leaves_the_address_watched_and_the_next_sighting_escalates() {
    let mut e = Engine::new(Config::default(), vec![(Box::new(Failing), 0)]);
    let lines = run(
        &mut e,
        &[
            (0.0, Op::Drop("10.1.1.1", "")),
            (1.0, Op::Packet("10.1.1.1")),
        ],
    );
    assert_eq!(
        lines,
        [
            "+0 10.1.1.1 DROP_REQUESTED 2 0 1",
            "+0 10.1.1.1 INFO 2 0 1 [Error occurred during rule operation: no route] <failing>",
            "+1 10.1.1.1 SEEN_AGAIN 3 1 2",
            "+1 10.1.1.1 INFO 3 1 2 [Error occurred during rule operation: no route] <failing>",
        ]
    );
}

/// A backend that reports every rule as already present.
struct Existing;
impl Plugin for Existing {
    fn name(&self) -> &str {
        "exists"
    }
    fn add_rule(&mut self, _now: Time, _: &Arc<Rule>, a: &mut Answers) -> bool {
        a.push(Answer::Exists("old: ".into()));
        true
    }
    fn remove_rule(&mut self, _now: Time, _: &Arc<Rule>, _: &str, _: &mut Answers) -> bool {
        true
    }
}

#[test]
fn an_existing_rule_is_never_expired_on_its_backend() {
    let mut e = Engine::new(
        Config {
            intervals: "1s,10s".parse().unwrap(),
            ..Config::default()
        },
        vec![(Box::new(Existing), 0)],
    );
    let lines = run(
        &mut e,
        &[
            (0.0, Op::Drop("10.1.1.1", "")),
            (1.0, Op::Tick),
            (2.0, Op::Tick),
        ],
    );
    assert_eq!(
        lines,
        [
            "+0 10.1.1.1 DROP_REQUESTED 2 0 1",
            "+0 10.1.1.1 INFO 2 0 1 [old: Existing rule encountered while inserting rule] <exists>",
        ],
        "no UNBLOCK: the rule is dropped from NetControl silently"
    );
    assert_eq!(e.rule_count(), 0);
}

#[test]
fn timers_fire_at_most_max_timer_expires_per_packet() {
    let mut e = Engine::with_accepting_backend(
        Config {
            intervals: "1s,1h".parse().unwrap(),
            max_timer_expires: Some(3),
            ..Config::default()
        },
        "Debug-All",
    );
    e.advance(T0);
    for i in 0..5 {
        e.drop_catch_release(T0, addr(&format!("10.0.0.{i}")), "");
    }
    e.drain_all();
    let _ = std::iter::from_fn(|| e.poll_output()).count();
    assert!(
        e.advance(at(2.0)),
        "more timers are due after the first three"
    );
    e.drain_all();
    // Not at the same packet again, however often it is asked: at the next one.
    assert!(e.advance(at(2.0)), "the limit is per network time");
    e.drain_all();
    assert!(!e.advance(at(2.5)));
    e.drain_all();
    let unblocks = std::iter::from_fn(|| e.poll_output())
        .filter(|o| matches!(o, Output::CatchRelease(r) if r.action == Action::Unblock))
        .count();
    assert_eq!(unblocks, 5);
}

#[test]
fn finish_runs_queued_events_but_no_timers() {
    let mut e = engine("1s,2s");
    e.advance(T0);
    e.drop_catch_release(T0, addr("10.1.1.1"), "");
    e.finish();
    let actions: Vec<Action> = std::iter::from_fn(|| e.poll_output())
        .filter_map(|o| match o {
            Output::CatchRelease(r) => Some(r.action),
            _ => None,
        })
        .collect();
    assert_eq!(actions, [Action::DropRequested, Action::Dropped]);
}

#[test]
fn non_monotonic_intervals_follow_zeeks_expiry_reference() {
    // 10s, 100s, 20s: step 0 watches 100 s, step 1 only 20 s. After a sweep set the
    // reference to the old watch_until (+100), a re-block at +30 ending its watch at +50
    // is not looked at again until the first sweep after +100.
    check(
        "10s,100s,20s",
        &[
            (0.0, Op::Drop("10.1.1.1", "")),
            (10.0, Op::Tick),
            (30.0, Op::Packet("10.1.1.1")),
            (60.0, Op::Tick),
            (101.0, Op::Tick),
        ],
        &[
            "+0 10.1.1.1 DROP_REQUESTED 2 0 1",
            "+0 10.1.1.1 DROPPED 2 0 1 <Debug-All>",
            "+10 10.1.1.1 UNBLOCK 2 0 1 <Debug-All>",
            "+30 10.1.1.1 SEEN_AGAIN 3 1 2",
            "+30 10.1.1.1 DROPPED 3 1 2 <Debug-All>",
            // The step-1 block (100 s) ends at +130, after the last packet of this test.
            "+101 10.1.1.1 FORGOTTEN 3 1 2",
        ],
    );
}

mod model {
    //! A naive model of catch-and-release for property testing: absolute times, a flat
    //! list of rules, no event queue. Each step is: fire the sweep, note which rules have
    //! expired, run the operation, then let backends answer and expired rules time out.

    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Debug)]
    pub(super) enum MOp {
        Drop(usize),
        Seen(usize),
        Unblock(usize),
        Tick,
    }

    #[derive(Clone, Debug)]
    struct MEntry {
        block_until: Option<Time>,
        watch_until: Time,
        k: usize,
        reblocked: u64,
        rule: Option<u32>,
        reference: Time,
    }

    #[derive(Clone, Debug)]
    struct MRule {
        id: u32,
        addr: usize,
        expires: Time,
    }

    pub(super) struct Model {
        iv: Vec<Interval>,
        sweep_every: Interval,
        warn: bool,
        now: Time,
        next_sweep: Time,
        counter: u32,
        blocks: BTreeMap<usize, MEntry>,
        rules: Vec<MRule>,
        pub(super) log: Vec<String>,
    }

    const ADDRS: [&str; 3] = ["10.0.0.1", "10.0.0.2", "2001:db8::3"];

    impl Model {
        fn watch(&self, k: usize) -> Interval {
            *self.iv.get(k + 1).unwrap_or(&self.iv[k])
        }

        fn line(&mut self, a: usize, action: &str, msg: Option<String>, plugin: bool) {
            let e = &self.blocks[&a];
            let l = format!(
                "{} {} {} {:?} {}/{} {:?} {:?} {} {:?} {}",
                self.now.as_micros(),
                ADDRS[a],
                action,
                e.rule,
                self.iv[e.k].as_micros(),
                self.watch(e.k).as_micros(),
                e.block_until.map(Time::as_micros),
                e.watch_until.as_micros(),
                e.reblocked + 1,
                msg,
                plugin
            );
            self.log.push(l);
        }

        fn rule_for(&self, a: usize) -> Option<u32> {
            self.rules.iter().find(|r| r.addr == a).map(|r| r.id)
        }

        fn new_rule(&mut self, a: usize, len: Interval) -> u32 {
            self.counter += 1;
            self.rules.push(MRule {
                id: self.counter,
                addr: a,
                expires: self.now + len,
            });
            self.counter
        }

        pub(super) fn step(&mut self, now: Time, op: &MOp) {
            self.now = self.now.max(now);
            let now = self.now;
            if self.next_sweep <= now {
                let mut gone: Vec<(Time, usize)> = Vec::new();
                for (a, e) in self.blocks.iter_mut() {
                    if e.reference < now {
                        if e.watch_until <= now {
                            gone.push((e.watch_until, *a));
                        } else {
                            e.reference = e.watch_until;
                        }
                    }
                }
                gone.sort_by_key(|(w, a)| (*w, ADDRS[*a].parse::<Addr>().unwrap()));
                for (_, a) in gone {
                    self.line(a, "FORGOTTEN", None, false);
                    self.blocks.remove(&a);
                }
                self.next_sweep = now + self.sweep_every;
            }
            let mut expiring: Vec<MRule> = self
                .rules
                .iter()
                .filter(|r| r.expires <= now)
                .cloned()
                .collect();
            expiring.sort_by_key(|r| (r.expires, r.id));
            let mut added: Vec<u32> = Vec::new();
            match *op {
                MOp::Drop(a) => {
                    if self.blocks.contains_key(&a) {
                        self.line(
                            a,
                            "INFO",
                            Some(
                                "Already blocked using catch-and-release - ignoring duplicate"
                                    .into(),
                            ),
                            false,
                        );
                    } else if let Some(id) = self.rule_for(a) {
                        self.blocks.insert(
                            a,
                            MEntry {
                                block_until: None,
                                watch_until: now + self.iv[1],
                                k: 0,
                                reblocked: 0,
                                rule: Some(id),
                                reference: now,
                            },
                        );
                        self.line(a, "ADDED", Some("Address already blocked outside of catch-and-release. Catch and release will monitor and only actively block if it appears in network traffic.".into()), false);
                    } else {
                        let id = self.new_rule(a, self.iv[0]);
                        added.push(id);
                        self.blocks.insert(
                            a,
                            MEntry {
                                block_until: Some(now + self.iv[0]),
                                watch_until: now + self.iv[1],
                                k: 0,
                                reblocked: 0,
                                rule: Some(id),
                                reference: now,
                            },
                        );
                        self.line(a, "DROP_REQUESTED", None, false);
                    }
                }
                MOp::Seen(a) => {
                    if self.blocks.contains_key(&a) {
                        if self.rule_for(a).is_some() {
                            if self.warn {
                                self.line(
                                    a,
                                    "INFO",
                                    Some(
                                        "Block seen while in rule_entities. No action taken."
                                            .into(),
                                    ),
                                    false,
                                );
                            }
                        } else {
                            let k = (self.blocks[&a].k + 1).min(self.iv.len() - 1);
                            let id = self.new_rule(a, self.iv[k]);
                            added.push(id);
                            let (block, watch) = (self.iv[k], self.watch(k));
                            let e = self.blocks.get_mut(&a).unwrap();
                            e.k = k;
                            e.block_until = Some(now + block);
                            e.watch_until = now + watch;
                            e.reblocked += 1;
                            e.rule = Some(id);
                            self.line(a, "SEEN_AGAIN", None, false);
                        }
                    }
                }
                MOp::Unblock(a) => {
                    if self.blocks.contains_key(&a) {
                        self.line(a, "UNBLOCK", Some("reason".into()), false);
                        let e = self.blocks.remove(&a).unwrap();
                        if let (Some(bu), Some(id)) = (e.block_until, e.rule)
                            && bu > now
                        {
                            self.rules.retain(|r| r.id != id);
                        }
                    }
                }
                MOp::Tick => {}
            }
            for id in added {
                let a = self.rules.iter().find(|r| r.id == id).unwrap().addr;
                if self.blocks.contains_key(&a) {
                    self.line(a, "DROPPED", None, true);
                }
            }
            for r in expiring {
                if !self.rules.iter().any(|x| x.id == r.id) {
                    continue;
                }
                if self.blocks.contains_key(&r.addr) {
                    let e = &self.blocks[&r.addr];
                    let msg = e.block_until.and_then(|bu| {
                        let d = now - bu;
                        (d.abs() > Interval::from_secs(60)).then(|| {
                            format!("Difference between network_time and block time excessive: {d}")
                        })
                    });
                    self.line(r.addr, "UNBLOCK", msg, true);
                }
                self.rules.retain(|x| x.id != r.id);
            }
        }

        pub(super) fn info(&self, a: usize) -> (Option<Time>, Time, u64, usize, Option<u32>) {
            match self.blocks.get(&a) {
                Some(e) => (e.block_until, e.watch_until, e.reblocked, e.k, e.rule),
                None => (None, Time::ZERO, 0, 0, None),
            }
        }
    }

    fn engine_line(r: &CatchReleaseRecord) -> String {
        let a = ADDRS
            .iter()
            .position(|s| s.parse::<Addr>().unwrap() == r.ip)
            .unwrap();
        format!(
            "{} {} {} {:?} {}/{} {:?} {:?} {} {:?} {}",
            r.ts.as_micros(),
            ADDRS[a],
            r.action.as_str().trim_start_matches("NetControl::"),
            r.rule_id.map(RuleId::get),
            r.block_interval.as_micros(),
            r.watch_interval.as_micros(),
            r.blocked_until.map(Time::as_micros),
            r.watched_until.as_micros(),
            r.num_blocked,
            r.message,
            r.plugin.is_some()
        )
    }

    fn op() -> impl Strategy<Value = (i64, MOp)> {
        let kind = prop_oneof![
            3 => (0..3usize).prop_map(MOp::Drop),
            4 => (0..3usize).prop_map(MOp::Seen),
            1 => (0..3usize).prop_map(MOp::Unblock),
            3 => Just(MOp::Tick),
        ];
        // Steps of 250 ms up to 3 s, sometimes none (several things at one moment).
        ((0..=12i64).prop_map(|q| q * 250_000), kind)
    }

    proptest! {
        // 400 cases by default; set PROPTEST_CASES for a longer run.
        #![proptest_config(ProptestConfig {
            cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(400),
            ..ProptestConfig::default()
        })]

        #[test]
        fn engine_matches_naive_model(
            iv in proptest::collection::vec(1..=6i64, 2..=4),
            sweep in 1..=10i64,
            warn in any::<bool>(),
            ops in proptest::collection::vec(op(), 1..60),
        ) {
            let intervals: Vec<Interval> = iv.iter().map(|s| Interval::from_secs(*s)).collect();
            let cfg = Config {
                intervals: Intervals::new(intervals.clone()).unwrap(),
                warn_blocked: warn,
                sweep_interval: Interval::from_secs(sweep),
                max_timer_expires: None,
                watch_capacity: 1000,
                start: Time::ZERO,
                networks: None,
                cluster_outputs: true,
            };
            let mut e = Engine::with_accepting_backend(cfg.clone(), "m");
            let mut m = Model {
                iv: intervals,
                sweep_every: Interval::from_secs(sweep),
                warn,
                now: Time::ZERO,
                next_sweep: Time::from_micros(1_000_000),
                counter: 1,
                blocks: BTreeMap::new(),
                rules: Vec::new(),
                log: Vec::new(),
            };
            let mut now = T0;
            let mut got = Vec::new();
            for (dt, op) in &ops {
                now = now + Interval::from_micros(*dt);
                e.advance(now);
                match *op {
                    MOp::Drop(a) => { e.drop_catch_release(now, ADDRS[a].parse::<Addr>().unwrap(), ""); }
                    MOp::Seen(a) => e.seen(now, ADDRS[a].parse::<Addr>().unwrap()),
                    MOp::Unblock(a) => { e.unblock_catch_release(now, ADDRS[a].parse::<Addr>().unwrap(), "reason"); }
                    MOp::Tick => {}
                }
                e.drain_all();
                m.step(now, op);
                while let Some(o) = e.poll_output() {
                    if let Output::CatchRelease(r) = o {
                        got.push(engine_line(&r));
                    }
                }
                prop_assert_eq!(&got, &m.log);
                for (i, s) in ADDRS.iter().enumerate() {
                    let bi = e.info(s.parse::<Addr>().unwrap());
                    let want = m.info(i);
                    prop_assert_eq!(
                        (bi.block_until, bi.watch_until, u64::from(bi.num_reblocked), bi.current_interval, bi.current_block_id.map(RuleId::get)),
                        want
                    );
                }
            }
        }
    }
}

/// Ids from a registry: counting from 100, refusing one network.
struct Registry(u32);

impl RuleIds for Registry {
    fn assign(
        &mut self,
        _now: Time,
        entity: ipnet::IpNet,
        _expire: Interval,
        _location: Option<&str>,
    ) -> Result<RuleId, String> {
        if entity.to_string() == "10.9.9.9/32" {
            return Err("whitelisted: admin: ours".into());
        }
        self.0 += 1;
        Ok(RuleId::new(self.0).unwrap())
    }
}

#[test]
fn rule_ids_can_come_from_outside_and_refuse_rules() {
    let mut e = engine("10m,1h,24h,7d");
    e.set_rule_ids(Box::new(Registry(100)));
    let lines = run(
        &mut e,
        &[
            (0.0, Op::Drop("10.1.1.1", "scan")),
            (1.0, Op::Drop("10.9.9.9", "scan")),
        ],
    );
    assert_eq!(
        lines,
        [
            "+0 10.1.1.1 DROP_REQUESTED 101 0 1",
            "+0 10.1.1.1 DROPPED 101 0 1 <Debug-All>",
            "+1 error: Catch and release could not add block for 10.9.9.9; failing.",
        ]
    );
    assert!(!e.info(addr("10.9.9.9")).is_known());
    // The refusal is a FAILED rule line without an id.
    let mut e = engine("10m,1h");
    e.set_rule_ids(Box::new(Registry(100)));
    e.drop_catch_release(at(0.0), addr("10.9.9.9"), "x");
    let nc: Vec<NetControlRecord> = std::iter::from_fn(|| e.poll_output())
        .filter_map(|o| match o {
            Output::NetControl(r) if r.state == Some(State::Failed) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(nc.len(), 1);
    assert_eq!(nc[0].rule_id, None);
    assert_eq!(nc[0].msg.as_deref(), Some("whitelisted: admin: ours"));
}

#[test]
fn a_restored_rule_is_adopted_and_expires_through_its_backend() {
    let mut e = engine("10m,1h,24h,7d");
    e.advance(at(0.0));
    let rule = Rule {
        id: RuleId::new(77).unwrap(),
        ty: RuleType::Drop,
        target: Target::Forward,
        entity: host_net(addr("10.2.2.2")),
        expire: secs(300.0),
        priority: 0,
        location: None,
    };
    let p = e.plugin_id("Debug-All").unwrap();
    e.restore_rule(rule, &[p], &[p], Some(at(300.0)));
    assert_eq!(
        e.rule_plugins(RuleId::new(77).unwrap()),
        Some((vec![p], vec![p]))
    );
    let lines = run(
        &mut e,
        &[
            (1.0, Op::Drop("10.2.2.2", "feed")),
            (300.0, Op::Tick),
            (301.0, Op::Packet("10.2.2.2")),
        ],
    );
    assert_eq!(
        lines,
        [
            "+1 10.2.2.2 ADDED 77 0 1 [Address already blocked outside of catch-and-release. Catch and release will monitor and only actively block if it appears in network traffic.]",
            "+300 10.2.2.2 UNBLOCK 77 0 1 <Debug-All>",
            "+301 10.2.2.2 SEEN_AGAIN 78 1 2",
            "+301 10.2.2.2 DROPPED 78 1 2 <Debug-All>",
        ]
    );
}

#[test]
fn watch_state_round_trips_into_a_new_engine() {
    let mut e = engine("10m,1h,24h,7d");
    run(
        &mut e,
        &[
            (0.0, Op::Drop("10.3.3.3", "scan")),
            (601.0, Op::Tick),
            (700.0, Op::Packet("10.3.3.3")),
        ],
    );
    let st = e.watch_state(addr("10.3.3.3")).unwrap();
    assert_eq!(st.step, 1);
    assert_eq!(st.reblocked, 1);
    assert_eq!(st.location.as_deref(), Some("scan"));
    let mut again = engine("10m,1h,24h,7d");
    again.advance(at(700.0));
    again.restore_watch(addr("10.3.3.3"), &st);
    assert_eq!(again.info(addr("10.3.3.3")), e.info(addr("10.3.3.3")));
    assert_eq!(again.watch_state(addr("10.3.3.3")).unwrap(), st);
    // Without the rule (it lived in the other engine), the next sighting escalates.
    let lines = run(&mut again, &[(701.0, Op::Packet("10.3.3.3"))]);
    assert_eq!(lines[0], "+701 10.3.3.3 SEEN_AGAIN 2 2 3");
    // A step beyond a shortened ladder is clamped.
    let mut short = engine("10m,1h");
    let deep = WatchState { step: 3, ..st };
    short.restore_watch(addr("10.3.3.3"), &deep);
    assert_eq!(short.info(addr("10.3.3.3")).current_interval, 1);
}

#[test]
fn top_lists_the_most_recent_addresses_counts_and_filters() {
    let mut e = engine("10m,1h,24h,7d");
    for (i, a) in ["10.0.0.1", "10.0.0.2", "10.0.1.3", "10.0.0.4"]
        .iter()
        .enumerate()
    {
        let now = at(60.0 * i as f64);
        e.advance(now);
        e.drop_catch_release(now, addr(a), "");
        e.drain_all();
    }
    // At 10.5 minutes the first drop's block (10 min) has ended; the others still block.
    let now = at(630.0);
    e.advance(now);
    e.drain_all();
    let top = e.watched().top(2, now, |_| true);
    assert_eq!((top.matched, top.blocked), (4, 3));
    let shown: Vec<String> = top.rows.iter().map(|(a, _)| a.to_string()).collect();
    assert_eq!(shown, ["10.0.0.4", "10.0.1.3"], "newest watch_until first");
    let net: ipnet::IpNet = "10.0.0.0/24".parse().unwrap();
    let top = e
        .watched()
        .top(10, now, |a| net.contains(&IpAddr::from(*a)));
    assert_eq!(top.matched, 3);
    let shown: Vec<String> = top.rows.iter().map(|(a, _)| a.to_string()).collect();
    assert_eq!(shown, ["10.0.0.4", "10.0.0.2", "10.0.0.1"]);
    assert_eq!(e.watched().top(0, now, |_| true).rows.len(), 0);
}
