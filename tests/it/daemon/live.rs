//! Live capture in a network namespace: drop, release, seen again, escalation through the
//! registry and a block manager, forgotten.

use serde_json::{Value, json};

use super::netns::Netns;
use super::*;

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn iso_secs(v: &Value) -> f64 {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap())
        .unwrap()
        .timestamp_micros() as f64
        / 1e6
}

#[test]
fn a_released_address_seen_again_is_blocked_longer_then_forgotten() {
    let ns = Netns::new("lv", 1);
    let f = Files::new("[cnr]\nsweep_interval = \"1s\"\nblock_managers = [\"bgp1\"]\n");
    let d = f.start(&["-i", &ns.root_if, "--intervals", "1s,2s,4s"]);
    let (ops, bgp, logs) = (&f.ops, &f.bgp, &f.logs);

    // Dropped through the catch-and-release API: a registry block for the /32.
    let before = unix_now();
    let (status, info) = d.post(
        "/api/v1/cr/drop",
        ops,
        &json!({"addr": ns.addr, "location": "live test"}),
    );
    assert_eq!(status, 200, "{info}\n{}", d.log());
    assert_eq!(info["current_block_id"], 1);
    assert_eq!(info["current_interval"], 0);
    assert_eq!(info["location"], "live test");
    let bu = info["block_until"].as_f64().unwrap();
    assert!(bu >= before + 1.0 && bu < unix_now() + 1.0, "{info}");
    assert!((info["watch_until"].as_f64().unwrap() - bu - 1.0).abs() < 1e-6);

    // The block manager bgp1 (the NetControl plugin) puts it in place.
    let q = d.json("/bhr/api/queue/bgp1", bgp);
    assert_eq!(q[0]["id"], 1);
    assert_eq!(q[0]["cidr"], format!("{}/32", ns.addr));
    let (status, _) = d.post("/bhr/api/set_blocked_multi/bgp1", bgp, &json!({"ids": [1]}));
    assert_eq!(status, 200);
    let dropped = wait_for(5, "DROPPED <bgp1>", || cr_lines(logs, "DROPPED").pop());
    assert_eq!(dropped[11], "bgp1");

    // The block ends: UNBLOCK, and bgp1's unblock queue has it.
    let unblock = wait_for(5, "UNBLOCK", || cr_lines(logs, "UNBLOCK").pop());
    assert!(
        (secs(&unblock[0]) - bu).abs() < 1e-6,
        "UNBLOCK at block_until: {unblock:?}"
    );
    let uq = d.json("/bhr/api/unblock_queue/bgp1", bgp);
    assert_eq!(uq[0]["block"]["cidr"], format!("{}/32", ns.addr));
    d.post(
        "/bhr/api/set_unblocked_multi",
        bgp,
        &json!({"ids": [uq[0]["id"]]}),
    );

    // Traffic from the address while it is watched: SEEN_AGAIN, a 2 s block in bgp1's queue.
    ns.send_udp(3);
    let seen = wait_for(5, "SEEN_AGAIN", || cr_lines(logs, "SEEN_AGAIN").pop());
    assert_eq!(seen[1], "2", "the new rule is block 2: {seen:?}");
    assert_eq!(seen[2], ns.addr);
    assert_eq!(seen[4], "2.000000");
    let q = d.json("/bhr/api/queue/bgp1", bgp);
    assert_eq!(q.as_array().unwrap().len(), 1, "{q}");
    assert_eq!(q[0]["id"], 2);
    let b = d.json("/bhr/api/blocks/2/", ops);
    let len = iso_secs(&b["unblock_at"]) - iso_secs(&b["added"]);
    assert!(
        (len - 2.0).abs() < 0.01,
        "the escalated block lasts 2 s: {b}"
    );
    assert_eq!(b["who"], "catch-and-release");
    assert_eq!(b["why"], "Re-drop by catch-and-release: live test");
    let info = d.json(&format!("/api/v1/cr/{}", ns.addr), ops);
    assert_eq!(info["current_interval"], 1);
    assert_eq!(info["num_reblocked"], 1);
    assert_eq!(info["current_block_id"], 2);

    // Watched for 4 s from the re-block, then forgotten at the next sweep.
    let forgotten = wait_for(10, "FORGOTTEN", || cr_lines(logs, "FORGOTTEN").pop());
    assert!(secs(&forgotten[0]) >= secs(&seen[0]) + 4.0);
    let info = d.json(&format!("/api/v1/cr/{}", ns.addr), ops);
    assert_eq!(info["watch_until"], 0.0);
    assert_eq!(d.json("/api/v1/cr", ops), json!([]));

    // NetControl's view of it, in netcontrol.log.
    let nc = log_lines(logs, "netcontrol");
    let states: Vec<String> = nc
        .iter()
        .filter(|f| f[1] == "2")
        .map(|f| {
            format!(
                "{} {} {}",
                f[3],
                f[4].trim_start_matches("NetControl::"),
                f[14]
            )
        })
        .collect();
    assert_eq!(states[0], "ADD REQUESTED bgp1", "{states:?}");
    assert!(
        states.contains(&"EXPIRE TIMEOUT bgp1".to_string()),
        "{states:?}"
    );

    // Capture counters.
    let (_, m) = d.request("GET", "/metrics", None, None);
    let sightings: u64 = m
        .lines()
        .find(|l| {
            l.starts_with(&format!(
                "catchd_capture_sightings_total{{interface=\"{}\"}}",
                ns.root_if
            ))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(sightings >= 1, "{m}");
    assert!(
        m.contains("catchd_cnr_actions_total{action=\"SEEN_AGAIN\"} 1"),
        "{m}"
    );
    assert!(d.terminate().success());
}

/// A value of `/metrics`.
fn metric(d: &Server, line_start: &str) -> Option<u64> {
    let (_, m) = d.request("GET", "/metrics", None, None);
    m.lines()
        .find(|l| l.starts_with(&format!("{line_start} ")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// No capture stops silently: the interface goes away, the capture shows as down, and it
/// is opened again (and captures) once the interface is back.
#[test]
fn a_capture_whose_interface_goes_away_is_shown_down_and_opened_again() {
    let ns = Netns::new("gone", 31);
    let iface = ns.root_if.clone();
    let f = Files::new("");
    let d = f.start(&["-i", &iface]);
    let up = format!("catchd_capture_up{{interface=\"{iface}\"}}");
    let restarts = format!("catchd_capture_restarts_total{{interface=\"{iface}\"}}");
    let packets = format!("catchd_capture_packets_total{{interface=\"{iface}\"}}");
    assert_eq!(metric(&d, &up), Some(1), "{}", d.log());
    drop(ns);
    wait_for(10, "the capture down", || {
        (metric(&d, &up) == Some(0)).then_some(())
    });
    // The daemon's log reaches this test through a pipe, after the metric may have.
    wait_for(10, "the stop logged", || {
        d.log().contains("Capture stopped").then_some(())
    });
    let ns = Netns::new("gone", 31);
    wait_for(40, "the capture up again", || {
        (metric(&d, &up) == Some(1)).then_some(())
    });
    assert!(metric(&d, &restarts) >= Some(1));
    let before = metric(&d, &packets).unwrap_or(0);
    wait_for(10, "packets captured again", || {
        ns.send_udp(5);
        (metric(&d, &packets).unwrap_or(0) > before).then_some(())
    });
    assert!(d.terminate().success());
}
