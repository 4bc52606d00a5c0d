//! The Zeek package in `zeek-scripts/`: every script parses (`zeek-script parse`, from
//! the PyPI package zeekscript), and the events it declares and publishes have the names,
//! arities and argument types catchd's codec sends and reads.

use std::path::PathBuf;
use std::process::Command;

use catchd::addr::Addr;
use catchd::broker::zeek::{self, Incoming, SIGNATURES};
use catchd::broker::{Event, Value, bin};
use catchd::cnr::{Action, BlockInfo, CatchReleaseNetRecord, CatchReleaseRecord, RuleId};
use catchd::time::{Interval, Time};

fn scripts() -> Vec<PathBuf> {
    let dir = crate::support::root().join("zeek-scripts");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "zeek"))
        .collect();
    v.sort();
    assert!(v.len() >= 3, "{v:?}");
    v
}

fn parse(path: &std::path::Path) -> std::process::Output {
    Command::new(crate::bus::venv().join("zeek-script"))
        .args(["parse", "-q"])
        .arg(path)
        .output()
        .unwrap()
}

#[test]
fn every_script_parses() {
    for p in scripts() {
        let o = parse(&p);
        assert!(
            o.status.success(),
            "{}: {}{}",
            p.display(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    // The check can fail: a script with a missing brace does not parse.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.zeek");
    let text = std::fs::read_to_string(crate::support::root().join("zeek-scripts/plugin.zeek"))
        .unwrap()
        .replacen("return F;\n\t}", "return F;\n", 1);
    std::fs::write(&bad, text).unwrap();
    assert!(!parse(&bad).status.success());
}

/// `global <name>: event(<params>);` declarations, with their module.
fn declarations(text: &str) -> Vec<(String, Vec<String>)> {
    let mut module = "GLOBAL".to_string();
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("module ") {
            module = m.trim_end_matches(';').to_string();
        }
        let Some(rest) = line.strip_prefix("global ") else {
            continue;
        };
        let Some((name, sig)) = rest.split_once(": event(") else {
            continue;
        };
        let params = sig.trim_end_matches(");");
        let types = params
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(|p| p.split_once(':').unwrap().1.trim().to_string())
            .collect();
        out.push((format!("{module}::{name}"), types));
    }
    out
}

/// `Cluster::publish(topic, EVENT, args...)` calls: event name and argument count.
fn publishes(text: &str) -> Vec<(String, usize)> {
    text.split("Cluster::publish(")
        .skip(1)
        .map(|call| {
            let args = call.split(");").next().unwrap();
            let parts: Vec<&str> = args.split(',').map(str::trim).collect();
            (parts[1].to_string(), parts.len() - 2)
        })
        .collect()
}

fn signature(name: &str) -> Option<&'static [&'static str]> {
    SIGNATURES.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

#[test]
fn declared_and_published_events_match_the_codec() {
    let mut declared = 0;
    let mut published = 0;
    for p in scripts() {
        let text = std::fs::read_to_string(&p).unwrap();
        for (name, types) in declarations(&text) {
            if let Some(sig) = signature(&name) {
                assert_eq!(types, sig, "{name} in {}", p.display());
                declared += 1;
            } else {
                // The package's own local events never go over the wire.
                assert!(
                    name.starts_with("NetControl::catchd_"),
                    "{name} unknown to catchd"
                );
            }
        }
        for (name, n) in publishes(&text) {
            let sig = signature(&name).unwrap_or_else(|| panic!("{name} unknown to catchd"));
            assert_eq!(n, sig.len(), "arity of {name} in {}", p.display());
            published += 1;
        }
    }
    assert_eq!(
        declared, 10,
        "netcontrol_hello, netcontrol_ready, sync_request, sync_begin, sync_end, manager_up, \
         and the four of catch-and-release of networks"
    );
    assert_eq!(
        published, 3,
        "broker_add_rule, broker_remove_rule, netcontrol_hello"
    );
}

/// The Broker type a Zeek type travels as.
fn broker_type(zeek_type: &str) -> &'static str {
    match zeek_type {
        "addr" => "address",
        "string" => "string",
        "count" => "count",
        "subnet" => "subnet",
        "BlockInfo"
        | "NetControl::BlockInfo"
        | "Rule"
        | "FlowInfo"
        | "CatchReleaseInfo"
        | "CatchReleaseNetInfo" => "vector",
        other => panic!("no mapping for {other}"),
    }
}

#[test]
fn every_event_catchd_knows_has_the_declared_argument_types() {
    let a = Addr::from(std::net::Ipv4Addr::new(10, 0, 0, 1));
    let info = BlockInfo {
        block_until: Some(Time::from_micros(1_000_000)),
        watch_until: Time::from_micros(2_000_000),
        num_reblocked: 0,
        current_interval: 0,
        current_block_id: RuleId::new(2),
        location: None,
    };
    let rec = CatchReleaseRecord {
        ts: Time::from_micros(1),
        rule_id: RuleId::new(2),
        ip: a,
        action: Action::DropRequested,
        block_interval: Interval::from_secs(600),
        watch_interval: Interval::from_secs(3600),
        blocked_until: None,
        watched_until: Time::from_micros(2),
        num_blocked: 1,
        location: None,
        message: None,
        plugin: None,
    };
    let rule = zeek::drop_rule(
        "10.0.0.1/32".parse().unwrap(),
        Interval::from_secs(600),
        "",
        "2",
        2,
    );
    let events: Vec<Event> = vec![
        zeek::add(a, "x"),
        zeek::delete(a, "x"),
        zeek::encountered(a),
        zeek::block_new(a, &info),
        zeek::block_delete(a),
        zeek::forgotten(a, &info),
        zeek::log_record(&rec),
        Event::new(zeek::BROKER_ADD_RULE, vec![Value::Count(0), rule.clone()]),
        Event::new(
            zeek::BROKER_REMOVE_RULE,
            vec![Value::Count(0), rule.clone(), Value::string("")],
        ),
        zeek::rule_answer(zeek::BROKER_RULE_ADDED, 0, rule.clone(), ""),
        zeek::rule_answer(zeek::BROKER_RULE_EXISTS, 0, rule.clone(), ""),
        zeek::rule_answer(zeek::BROKER_RULE_REMOVED, 0, rule.clone(), ""),
        zeek::rule_answer(zeek::BROKER_RULE_ERROR, 0, rule.clone(), ""),
        zeek::rule_timeout(0, rule),
        zeek::netcontrol_hello(0),
        zeek::netcontrol_ready(0),
        zeek::sync_request("s1"),
        zeek::sync_mark(zeek::SYNC_BEGIN, 0),
        zeek::sync_mark(zeek::SYNC_END, 0),
        zeek::manager_up("m"),
        zeek::net_block_new("2001:db8::/64".parse().unwrap(), &info),
        zeek::net_block_delete("10.0.0.0/24".parse().unwrap()),
        zeek::net_forgotten("10.0.0.0/24".parse().unwrap(), &info),
        zeek::log_net_record(&CatchReleaseNetRecord {
            ts: rec.ts,
            rule_id: rec.rule_id,
            subnet: "10.0.0.0/24".parse().unwrap(),
            action: rec.action,
            block_interval: rec.block_interval,
            watch_interval: rec.watch_interval,
            blocked_until: rec.blocked_until,
            watched_until: rec.watched_until,
            num_blocked: rec.num_blocked,
            location: None,
            message: None,
            plugin: None,
        }),
    ];
    assert_eq!(events.len(), SIGNATURES.len());
    for e in &events {
        let sig = signature(&e.name).unwrap();
        let types: Vec<&str> = e.args.iter().map(Value::type_name).collect();
        let want: Vec<&str> = sig.iter().map(|t| broker_type(t)).collect();
        assert_eq!(types, want, "{}", e.name);
        // Records have Zeek's field counts.
        for (v, t) in e.args.iter().zip(sig.iter()) {
            let fields = match *t {
                "BlockInfo" | "NetControl::BlockInfo" => 6,
                "Rule" => 14,
                "FlowInfo" => 3,
                "CatchReleaseInfo" | "CatchReleaseNetInfo" => 12,
                _ => continue,
            };
            let Value::Vector(f) = v else { panic!() };
            assert_eq!(f.len(), fields, "{} {t}", e.name);
        }
        // Events catchd reads come back through the wire format as themselves.
        let mut b = Vec::new();
        bin::encode_event(e, &mut b);
        let back = bin::decode_event(&b).unwrap();
        assert_eq!(&back, e);
        let reads = !matches!(
            e.name.as_str(),
            zeek::CATCH_RELEASE_FORGOTTEN
                | zeek::LOG_CATCH_RELEASE
                | zeek::BROKER_RULE_ADDED
                | zeek::BROKER_RULE_EXISTS
                | zeek::BROKER_RULE_REMOVED
                | zeek::BROKER_RULE_ERROR
                | zeek::BROKER_RULE_TIMEOUT
                | zeek::NETCONTROL_READY
                | zeek::NET_BLOCK_NEW
                | zeek::NET_BLOCK_DELETE
                | zeek::NET_FORGOTTEN
                | zeek::LOG_CATCH_RELEASE_NET
        );
        assert_eq!(Incoming::read(back).is_ok(), reads, "{}", e.name);
    }
}
