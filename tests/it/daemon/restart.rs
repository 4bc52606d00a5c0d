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
    Files::new(&format!(
        "[cnr]\nsweep_interval = \"1s\"\nintervals = \"3s,6s,12s\"\nblock_managers = [\"bgp1\"]\n\
         [capture]\ninterfaces = [\"lo\"]\n{LOOPBACK_BLOCKABLE}"
    ))
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
    std::thread::sleep(Duration::from_millis(3500));
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

/// One JSON POST that reports failure instead of panicking (the daemon is killed while
/// these run). `Some(body)` for a 200.
fn try_post(addr: std::net::SocketAddr, path: &str, auth: &str, body: &str) -> Option<Value> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: {auth}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200")
        .then(|| serde_json::from_str(body).ok())
        .flatten()
}

/// `kill -9` in the middle of a stream of drops (six times): after each restart, every
/// address a log line speaks of is stored, every acknowledged drop is stored, a rule id in
/// the logs belongs to one address only, and new drops get ids the logs have never shown.
#[test]
fn after_sigkill_the_logs_tell_only_what_is_stored_and_ids_are_not_reused() {
    use std::collections::{HashMap, HashSet};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let s = Files::new("[cnr]\nintervals = \"10m,1h\"\n");
    let acked = Arc::new(Mutex::new(HashSet::<String>::new()));
    for round in 0..6u32 {
        let d = s.start(&[]);
        let stop = Arc::new(AtomicBool::new(false));
        let n = Arc::new(AtomicUsize::new(0));
        // Batches of drops: each is one engine step with many log lines and rows, so the
        // kill lands while some are between the engine and the disk.
        let workers: Vec<_> = (0..4u32)
            .map(|t| {
                let (acked, stop, n, addr, auth) = (
                    acked.clone(),
                    stop.clone(),
                    n.clone(),
                    d.addr,
                    s.zeek.clone(),
                );
                std::thread::spawn(move || {
                    for i in 0..10_000u32 {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        let batch: Vec<String> = (0..200u32)
                            .map(|j| {
                                let k = i * 200 + j;
                                format!("100.{}.{}.{}", 64 + round * 4 + t, k / 250, 1 + k % 250)
                            })
                            .collect();
                        let body = Value::Array(
                            batch
                                .iter()
                                .map(|a| json!({"addr": a, "location": "burst"}))
                                .collect(),
                        )
                        .to_string();
                        match try_post(addr, "/api/v1/cr/drop", &auth, &body) {
                            Some(_) => {
                                acked.lock().unwrap().extend(batch);
                                n.fetch_add(1, Ordering::Relaxed);
                            }
                            None => return,
                        }
                    }
                })
            })
            .collect();
        wait_for(60, "acknowledged batches", || {
            (n.load(Ordering::Relaxed) >= 6).then_some(())
        });
        d.kill();
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.join().unwrap();
        }

        let d = s.start(&[]);
        let stored: HashSet<String> = d
            .json("/api/v1/cr", &s.ops)
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["addr"].as_str().unwrap().to_string())
            .collect();
        let acked_now = acked.lock().unwrap().clone();
        let missing = acked_now.difference(&stored).count();
        assert_eq!(missing, 0, "round {round}: acknowledged drops lost");
        // What the catch-and-release log says happened, happened.
        let logged: HashSet<String> = log_lines(&s.logs, "netcontrol_catch_release")
            .into_iter()
            .map(|f| f[2].clone())
            .collect();
        let phantom: Vec<&String> = logged.difference(&stored).take(5).collect();
        assert!(
            phantom.is_empty(),
            "round {round}: logged but not stored: {phantom:?}"
        );
        // One address per rule id in netcontrol.log.
        let mut owner: HashMap<String, String> = HashMap::new();
        for f in log_lines(&s.logs, "netcontrol") {
            if f[1] == "-" || f[8] == "-" {
                continue;
            }
            let ip = f[8].trim_end_matches("/32").to_string();
            if let Some(other) = owner.insert(f[1].clone(), ip.clone()) {
                assert_eq!(
                    other, ip,
                    "round {round}: rule {} names two addresses",
                    f[1]
                );
            }
        }
        assert!(!owner.is_empty());
        // New drops after the restart never get an id the logs already used.
        let a = format!("100.100.{round}.1");
        let (st, v) = d.post("/api/v1/cr/drop", &s.zeek, &json!({"addr": a}));
        assert_eq!(st, 200, "{v}");
        let id = v["current_block_id"].to_string();
        assert!(
            !owner.contains_key(&id),
            "round {round}: rule id {id} was used before the crash for {}",
            owner[&id]
        );
        acked.lock().unwrap().insert(a);
        assert!(d.terminate().success());
    }
}
