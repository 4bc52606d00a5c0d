//! Zeek's own btest baselines (zeek-netcontrol.md §2.6), reproduced through the engine.
//!
//! Each test plays the Zeek test script: the calls it makes in `connection_established`
//! (the first drain round of the first packet), and its `rule_added` handler, which runs
//! after catch-and-release's own handler (`Engine::drain_with`'s hook). Later packets each
//! drain `ZEEK_ROUNDS_PER_PACKET` rounds, as Zeek does when reading a trace. Logs are
//! compared in full after btest's canonifiers (masked `#open`/`#close` and first
//! timestamp); the masked timestamps are then checked separately.

use catchd::addr::Addr;
use catchd::cnr::{
    Action, Answer, Answers, BlockInfo, Config, Engine, Event, Intervals, Output, Plugin, Rule,
    ZEEK_ROUNDS_PER_PACKET,
};
use catchd::time::{Interval, Time};
use std::sync::Arc;

use crate::support::{Collected, assert_text_eq, fixture, read, t, tsv_lines, tsv_log};

const IP: &str = "192.168.18.50";

/// Packet times after the first: `ecdhe.pcap`'s second packet is at .678429 (the
/// baseline's SEEN_AGAIN lines for rules 6 and 7 say so); the rest only need to follow.
fn later_packets() -> Vec<Time> {
    let t1 = t("1398529018.678429");
    (0..8)
        .map(|i| t1 + Interval::from_micros(i * 1000))
        .collect()
}

/// Plays a Zeek test over `ecdhe.pcap`'s packets: `first` is what the test does in
/// `connection_established` on the first packet (an event of the first drain round), then
/// that packet's remaining rounds and `ZEEK_ROUNDS_PER_PACKET` rounds for each later
/// packet run, with `hook` as the test's own `rule_added` handler. Returns what was logged.
fn play(
    e: &mut Engine,
    first: impl FnOnce(&mut Engine, Time),
    mut hook: impl FnMut(&mut Engine, &Event),
) -> Collected {
    let t0 = t("1398529018.678276");
    e.advance(t0);
    first(e, t0);
    e.drain_with(ZEEK_ROUNDS_PER_PACKET - 1, &mut hook);
    for p in later_packets() {
        e.advance(p);
        e.drain_with(ZEEK_ROUNDS_PER_PACKET, &mut hook);
    }
    let mut c = Collected::default();
    c.take(e);
    c
}

/// Runs a `rule_added` test handler: for the first `limit` events from `plugin` (any plugin
/// when `None`), `delete_rule(r$id, reason)` then `catch_release_seen(ip)`.
fn delete_then_seen(
    limit: usize,
    reason: &'static str,
    plugin: Option<&'static str>,
) -> impl FnMut(&mut Engine, &Event) {
    let ip: Addr = IP.parse().unwrap();
    let mut handled = 0;
    move |e: &mut Engine, ev: &Event| {
        if let Event::RuleAdded {
            rule, plugin: p, ..
        } = ev
        {
            if let Some(name) = plugin
                && e.plugin_name(*p).as_deref() != Some(name)
            {
                return;
            }
            if handled < limit {
                handled += 1;
                let now = e.now();
                e.delete_rule(now, rule.id, reason);
                e.seen(now, ip);
            }
        }
    }
}

#[test]
fn scenario_a_duplicate_drop_then_five_delete_and_seen_cycles() {
    let ip: Addr = IP.parse().unwrap();
    let mut e = Engine::with_accepting_backend(Config::default(), "Debug-All");
    // connection_established: drop twice.
    let c = play(
        &mut e,
        |e, t0| {
            let first = e.drop_catch_release(t0, ip, "");
            let dup = e.drop_catch_release(t0, ip, "");
            assert_eq!(
                first, dup,
                "a duplicate drop returns the existing BlockInfo"
            );
        },
        delete_then_seen(5, "testing", None),
    );

    assert_text_eq(
        &tsv_log(&c.cr),
        &read(&fixture(
            "zeek-baselines/catch-and-release/netcontrol_catch_release.log",
        )),
    );
    assert_text_eq(
        &tsv_lines(&c.nc),
        &read(&fixture("zeek-baselines/catch-and-release/netcontrol.log")),
    );

    // The masked timestamps: rules 3-5 re-dropped on the first packet, 6-7 on the second.
    let seen: Vec<(String, String)> =
        c.cr.iter()
            .filter(|r| r.action == Action::SeenAgain)
            .map(|r| (r.rule_id.unwrap().to_string(), r.ts.to_string()))
            .collect();
    let expect = [
        ("3", "1398529018.678276"),
        ("4", "1398529018.678276"),
        ("5", "1398529018.678276"),
        ("6", "1398529018.678429"),
        ("7", "1398529018.678429"),
    ];
    assert_eq!(
        seen,
        expect
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect::<Vec<_>>()
    );
    for r in
        c.cr.iter()
            .filter(|r| matches!(r.action, Action::SeenAgain | Action::DropRequested))
    {
        if let Some(bu) = r.blocked_until {
            assert_eq!(r.ts, bu - r.block_interval, "ts = block start for {r:?}");
        }
    }

    // One netcontrol_drop.log line per successful drop, re-drops included.
    let drops: Vec<String> = c
        .drops
        .iter()
        .map(|d| format!("{} {} {}", d.rule_id, d.orig_h, d.expire))
        .collect();
    assert_eq!(
        drops,
        [
            "2 192.168.18.50 600.000000",
            "3 192.168.18.50 3600.000000",
            "4 192.168.18.50 86400.000000",
            "5 192.168.18.50 604800.000000",
            "6 192.168.18.50 604800.000000",
            "7 192.168.18.50 604800.000000",
        ]
    );
    assert!(
        c.drops[1..]
            .iter()
            .all(|d| d.location.as_deref() == Some("Re-drop by catch-and-release: "))
    );

    // Rule 7 is still in place and the address is watched at the last step.
    let bi = e.info(ip);
    assert_eq!(bi.current_block_id.unwrap().get(), 7);
    assert_eq!(bi.current_interval, 3);
    assert_eq!(bi.num_reblocked, 5);
}

#[test]
fn scenario_b_adopts_an_outside_block_then_escalates_from_step_one() {
    let ip: Addr = IP.parse().unwrap();
    let mut e = Engine::with_accepting_backend(Config::default(), "Debug-All");
    // connection_established: NetControl::drop_address first, then catch-and-release.
    let c = play(
        &mut e,
        |e, t0| {
            let rule = e
                .drop_address(
                    t0,
                    "192.168.18.50/32".parse().unwrap(),
                    Interval::from_secs(120),
                    "",
                )
                .expect("the debug backend accepts");
            let bi = e.drop_catch_release(t0, ip, "test drop");
            assert_eq!(bi.block_until, None, "ADDED has no block_until");
            assert_eq!(bi.current_block_id, Some(rule));
        },
        delete_then_seen(2, "", None),
    );

    assert_text_eq(
        &tsv_log(&c.cr),
        &read(&fixture(
            "zeek-baselines/catch-and-release-2/netcontrol_catch_release.log",
        )),
    );
    assert_text_eq(
        &tsv_lines(&c.nc),
        &read(&fixture(
            "zeek-baselines/catch-and-release-2/netcontrol.log",
        )),
    );
}

#[test]
fn scenario_c_block_expires_then_address_is_forgotten_at_the_next_sweep() {
    let ip: Addr = "10.0.0.1".parse().unwrap();
    let t0 = t("1254722767.492060");
    let cfg = Config {
        intervals: "1sec,2sec,2sec".parse::<Intervals>().unwrap(),
        ..Config::default()
    };
    let mut e = Engine::with_accepting_backend(cfg, "Debug-All");
    let mut c = Collected::default();

    // smtp.pcap, approximated by a packet every 0.5 s for 12 s; the test drops on the first.
    let packets: Vec<Time> = (0..=24)
        .map(|i| t0 + Interval::from_micros(i * 500_000))
        .collect();
    e.advance(packets[0]);
    e.drop_catch_release(packets[0], ip, "");
    e.drain(ZEEK_ROUNDS_PER_PACKET - 1);
    for &p in &packets[1..] {
        e.advance(p);
        e.drain(ZEEK_ROUNDS_PER_PACKET);
    }
    e.finish();
    c.take(&mut e);

    assert_text_eq(
        &tsv_log(&c.cr),
        &read(&fixture(
            "zeek-baselines/catch-and-release-forgotten/netcontrol_catch_release.log",
        )),
    );

    // UNBLOCK on the first packet at or after t0+1; FORGOTTEN at the first sweep after
    // t0+2. Sweeps ran at t0 (the first packet) and next at the first packet >= t0+10.
    let at = |a: Action| c.cr.iter().find(|r| r.action == a).unwrap().ts;
    assert_eq!(at(Action::Unblock), t0 + Interval::from_secs(1));
    assert_eq!(at(Action::Forgotten), t0 + Interval::from_secs(10));

    // The catch_release_forgotten event carries the last BlockInfo (rule 2, step 0).
    let forgotten: Vec<&Output> = c
        .other
        .iter()
        .filter(|o| matches!(o, Output::Forgotten { .. }))
        .collect();
    assert_eq!(
        forgotten,
        [&Output::Forgotten {
            addr: ip,
            info: BlockInfo {
                block_until: Some(t0 + Interval::from_secs(1)),
                watch_until: t("1254722769.49206"),
                num_reblocked: 0,
                current_interval: 0,
                current_block_id: catchd::cnr::RuleId::new(2),
                location: None,
            },
        }]
    );
    assert!(!e.info(ip).is_known());

    // netcontrol.log shows the rule's whole life.
    let states: Vec<String> =
        c.nc.iter()
            .filter_map(|r| Some(format!("{} {}", r.cmd?, r.state?.as_str())))
            .collect();
    assert_eq!(
        states,
        [
            "ADD NetControl::REQUESTED",
            "ADD NetControl::SUCCEEDED",
            "EXPIRE NetControl::TIMEOUT",
            "REMOVE NetControl::REQUESTED",
            "REMOVE NetControl::SUCCEEDED",
        ]
    );
}

#[test]
fn netcontrol_expiry_full_log() {
    let t0 = t("1398529018.678276");
    let mut e = Engine::with_accepting_backend(Config::default(), "Debug-All");
    let mut c = Collected::default();
    e.advance(t0);
    e.drop_address(
        t0,
        "192.168.18.50/32".parse().unwrap(),
        Interval::from_secs(1),
        "",
    );
    e.drain(ZEEK_ROUNDS_PER_PACKET - 1);
    for i in 1..=6 {
        e.advance(t0 + Interval::from_micros(i * 400_000));
        e.drain(ZEEK_ROUNDS_PER_PACKET);
    }
    e.finish();
    c.take(&mut e);
    assert_text_eq(
        &tsv_log(&c.nc),
        &read(&fixture("zeek-baselines/timeout/netcontrol.log")),
    );
    assert!(c.cr.is_empty(), "no catch-and-release involvement");
}

/// A test backend that answers every rule with a fixed answer, like the debug plugins in
/// Zeek's `catch-and-release-two-plugins` tests.
struct Scripted {
    name: &'static str,
    answer: fn() -> Answer,
}

impl Plugin for Scripted {
    fn name(&self) -> &str {
        self.name
    }
    fn add_rule(&mut self, _now: Time, _r: &Arc<Rule>, a: &mut Answers) -> bool {
        a.push((self.answer)());
        true
    }
    fn remove_rule(&mut self, _now: Time, _r: &Arc<Rule>, _reason: &str, a: &mut Answers) -> bool {
        a.push(Answer::Removed(String::new()));
        true
    }
}

#[test]
fn scenario_d_two_backends_give_two_dropped_lines_per_step() {
    let ip: Addr = IP.parse().unwrap();
    let added = || Answer::Added(String::new());
    let backends: Vec<(Box<dyn Plugin>, i64)> = vec![
        (
            Box::new(Scripted {
                name: "plugin-1",
                answer: added,
            }),
            0,
        ),
        (
            Box::new(Scripted {
                name: "plugin-2",
                answer: added,
            }),
            0,
        ),
    ];
    let mut e = Engine::new(Config::default(), backends);
    let c = play(
        &mut e,
        |e, t0| {
            e.drop_catch_release(t0, ip, "");
            e.drop_catch_release(t0, ip, "");
        },
        delete_then_seen(5, "testing", Some("plugin-2")),
    );

    // Identical to A, except that each DROPPED line comes once per backend.
    let baseline = read(&fixture(
        "zeek-baselines/catch-and-release/netcontrol_catch_release.log",
    ));
    let mut expected = String::new();
    for line in baseline.lines() {
        if line.contains("NetControl::DROPPED") {
            expected.push_str(&line.replace("Debug-All", "plugin-1"));
            expected.push('\n');
            expected.push_str(&line.replace("Debug-All", "plugin-2"));
        } else {
            expected.push_str(line);
        }
        expected.push('\n');
    }
    assert_text_eq(&tsv_log(&c.cr), &expected);
    let requested =
        c.nc.iter()
            .filter(|r| {
                r.cmd == Some("ADD") && r.state.map(|s| s.as_str()) == Some("NetControl::REQUESTED")
            })
            .count();
    assert_eq!(requested, 12, "six rules, each sent to both backends");
}

#[test]
fn scenario_e_exists_error_and_added_answers_each_get_their_line() {
    let ip: Addr = IP.parse().unwrap();
    let backends: Vec<(Box<dyn Plugin>, i64)> = vec![
        (
            Box::new(Scripted {
                name: "exists",
                answer: || Answer::Exists(String::new()),
            }),
            0,
        ),
        (
            Box::new(Scripted {
                name: "error",
                answer: || Answer::Error("debug error".into()),
            }),
            0,
        ),
        (
            Box::new(Scripted {
                name: "plugin-1",
                answer: || Answer::Added(String::new()),
            }),
            0,
        ),
    ];
    let mut e = Engine::new(Config::default(), backends);
    let c = play(
        &mut e,
        |e, t0| {
            e.drop_catch_release(t0, ip, "");
        },
        delete_then_seen(5, "testing", Some("plugin-1")),
    );

    let steps: Vec<(String, String, String)> =
        c.cr.iter()
            .map(|r| {
                (
                    r.action
                        .as_str()
                        .trim_start_matches("NetControl::")
                        .to_string(),
                    r.message.clone().unwrap_or_default(),
                    r.plugin.as_deref().unwrap_or("-").to_string(),
                )
            })
            .collect();
    let per_step = [
        (
            "INFO",
            "Existing rule encountered while inserting rule",
            "exists",
        ),
        (
            "INFO",
            "Error occurred during rule operation: debug error",
            "error",
        ),
        ("DROPPED", "", "plugin-1"),
    ];
    assert_eq!(steps[0].0, "DROP_REQUESTED");
    for (i, chunk) in steps[1..].chunks(4).enumerate() {
        let answers: Vec<(&str, &str, &str)> = chunk
            .iter()
            .take(3)
            .map(|(a, m, p)| (a.as_str(), m.as_str(), p.as_str()))
            .collect();
        assert_eq!(answers, per_step, "step {i}");
        if chunk.len() == 4 {
            assert_eq!(chunk[3].0, "SEEN_AGAIN");
        }
    }
    let nc: Vec<String> =
        c.nc.iter()
            .filter(|r| r.rule_id.is_some_and(|id| id.get() == 2))
            .map(|r| {
                format!(
                    "{} {} {} {}",
                    r.category.unwrap().as_str(),
                    r.cmd.unwrap_or("-"),
                    r.state.map_or("-", |s| s.as_str()),
                    r.plugin.as_deref().unwrap_or("-")
                )
            })
            .collect();
    assert_eq!(
        nc,
        [
            "NetControl::RULE ADD NetControl::REQUESTED exists",
            "NetControl::RULE ADD NetControl::REQUESTED error",
            "NetControl::RULE ADD NetControl::REQUESTED plugin-1",
            "NetControl::RULE ADD NetControl::EXISTS exists",
            "NetControl::ERROR - - error",
            "NetControl::RULE ADD NetControl::SUCCEEDED plugin-1",
            "NetControl::RULE - NetControl::REMOVED -",
        ]
    );
}
