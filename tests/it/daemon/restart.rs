//! Persistence: SIGKILL with addresses blocked and watched, restart, same state, same
//! queues, the next step escalates; what came due while down is replayed at its time;
//! SIGTERM closes the logs and loses no acknowledged write.

use std::net::UdpSocket;

use serde_json::{Value, json};

use super::*;

/// Sends a datagram from `from` (a loopback address) to 127.0.0.1.
fn send_from(from: &str) {
    let s = UdpSocket::bind((from, 0)).unwrap();
    for _ in 0..3 {
        s.send_to(b"catchd test", "127.0.0.1:9").unwrap();
    }
}

fn setup() -> Files {
    Files::new(
        "[cnr]\nsweep_interval = \"1s\"\nintervals = \"3s,6s,12s\"\nblock_managers = [\"bgp1\"]\n\
         [capture]\ninterfaces = [\"lo\"]\n",
    )
}

fn ids(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect()
}

#[test]
fn state_survives_sigkill_and_the_next_step_escalates() {
    let s = setup();
    let d = s.start(&[]);
    let a = "127.0.0.66";
    let b = "127.0.0.67";
    let (st, ia) = d.post(
        "/api/v1/cr/drop",
        &s.ops,
        &json!({"addr": a, "location": "first"}),
    );
    assert_eq!(st, 200, "{ia}");
    d.post(
        "/bhr/api/set_blocked_multi/bgp1",
        &s.bgp,
        &json!({"ids": [1]}),
    );
    wait_for(5, "DROPPED", || cr_lines(&s.logs, "DROPPED").pop());
    let (_, ib) = d.post(
        "/api/v1/cr/drop",
        &s.ops,
        &json!({"addr": b, "location": "second"}),
    );
    assert_eq!(ib["current_block_id"], 2);
    let list_before = d.json("/api/v1/cr", &s.ops);
    d.kill();

    // At once: everything is as it was.
    let d = s.start(&[]);
    assert_eq!(d.json("/api/v1/cr", &s.ops), list_before);
    assert_eq!(
        ids(&d.json("/bhr/api/queue/bgp1", &s.bgp)),
        [2],
        "block 1 is in place, 2 is not"
    );
    // Block 1 ends (3 s after its drop) on the restarted daemon.
    let unblock = wait_for(8, "UNBLOCK of a", || {
        cr_lines(&s.logs, "UNBLOCK").into_iter().find(|f| f[2] == a)
    });
    assert!((secs(&unblock[0]) - ia["block_until"].as_f64().unwrap()).abs() < 1e-6);
    // Seen again: step 1, a 6 s block, in bgp1's queue.
    send_from(a);
    let seen = wait_for(5, "SEEN_AGAIN", || cr_lines(&s.logs, "SEEN_AGAIN").pop());
    assert_eq!(seen[2], a);
    assert_eq!(seen[4], "6.000000");
    let info = d.json(&format!("/api/v1/cr/{a}"), &s.ops);
    assert_eq!(info["current_interval"], 1);
    assert_eq!(info["num_reblocked"], 1);
    let new_block = info["current_block_id"].as_u64().unwrap();
    assert!(ids(&d.json("/bhr/api/queue/bgp1", &s.bgp)).contains(&new_block));
    assert!(d.terminate().success());
}

#[test]
fn what_came_due_while_down_is_replayed_at_its_time() {
    let s = setup();
    let d = s.start(&[]);
    let a = "127.0.0.68";
    let (_, ia) = d.post(
        "/api/v1/cr/drop",
        &s.ops,
        &json!({"addr": a, "location": "down"}),
    );
    d.post(
        "/bhr/api/set_blocked_multi/bgp1",
        &s.bgp,
        &json!({"ids": [1]}),
    );
    wait_for(5, "DROPPED", || cr_lines(&s.logs, "DROPPED").pop());
    d.kill();
    // Down past the end of the 3 s block, still inside the 6 s watch.
    std::thread::sleep(std::time::Duration::from_millis(3500));
    let d = s.start(&[]);
    let unblock = wait_for(5, "UNBLOCK", || cr_lines(&s.logs, "UNBLOCK").pop());
    assert!(
        (secs(&unblock[0]) - ia["block_until"].as_f64().unwrap()).abs() < 1e-6,
        "replayed at block_until, not at the restart: {unblock:?}"
    );
    assert_eq!(unblock[11], "bgp1");
    // The block manager was not told anything new: its unblock queue has the entry.
    let uq = d.json("/bhr/api/unblock_queue/bgp1", &s.bgp);
    assert_eq!(uq[0]["block"]["cidr"], format!("{a}/32"));
    // Still watched: a sighting escalates.
    send_from(a);
    let seen = wait_for(5, "SEEN_AGAIN", || cr_lines(&s.logs, "SEEN_AGAIN").pop());
    assert_eq!(seen[4], "6.000000");
    assert!(d.terminate().success());
    // One UNBLOCK for block 1 in all: the replay happened once.
    let n = cr_lines(&s.logs, "UNBLOCK")
        .iter()
        .filter(|f| f[1] == "1")
        .count();
    assert_eq!(n, 1);
}

#[test]
fn sigterm_closes_the_logs_and_keeps_every_acknowledged_write() {
    let s = setup();
    let d = s.start(&[]);
    for i in 0..20 {
        let (st, v) = d.post(
            "/api/v1/cr/drop",
            &s.ops,
            &json!({"addr": format!("127.0.1.{i}"), "location": "burst"}),
        );
        assert_eq!(st, 200, "{v}");
    }
    let (st, _) = d.post(
        "/bhr/api/block",
        &s.ops,
        &json!({"cidr": "198.51.100.0/24", "source": "feed", "why": "list", "duration": "1h"}),
    );
    assert_eq!(st, 201);
    assert!(d.terminate().success());
    for name in ["netcontrol", "netcontrol_catch_release", "netcontrol_drop"] {
        let text = std::fs::read_to_string(s.logs.join(format!("{name}.log"))).unwrap();
        assert!(
            text.lines().last().unwrap().starts_with("#close\t"),
            "{name}: {text}"
        );
    }
    let d = s.start(&[]);
    let list = d.json("/api/v1/cr", &s.ops);
    assert_eq!(list.as_array().unwrap().len(), 20);
    let q = d.json("/bhr/api/query/198.51.100.0/24", &s.ops);
    assert_eq!(q.as_array().unwrap().len(), 1);
    assert!(d.terminate().success());
    // Appended across the restart: one header, one footer.
    let text = std::fs::read_to_string(s.logs.join("netcontrol_drop.log")).unwrap();
    assert_eq!(text.matches("#fields").count(), 1);
    assert_eq!(text.matches("#close").count(), 1);
    assert_eq!(text.lines().filter(|l| !l.starts_with('#')).count(), 20);
}
