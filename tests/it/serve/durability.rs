//! An acknowledged write is on disk: SIGKILL right after a burst, restart, find it all.

use std::sync::Arc;

use serde_json::Value;

use super::process::*;

/// `POST /bhr/api/mblock` of one-hour blocks for these addresses.
fn mblock(addr: std::net::SocketAddr, auth: &str, cidrs: &[String]) -> (u16, String) {
    let recs: Vec<Value> = cidrs
        .iter()
        .map(|c| serde_json::json!({"cidr": c, "source": "burst", "why": "m", "duration": "1h"}))
        .collect();
    let body = Value::Array(recs).to_string();
    http(
        addr,
        "POST",
        "/bhr/api/mblock",
        Some(auth),
        Some(("application/json", &body)),
    )
}

#[test]
fn acknowledged_blocks_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("k.db");
    let token = add_user(&db, "zeek", "blocker", None);
    let server = Server::start(&db, &[]);
    let addr = server.addr;
    let auth = Arc::new(format!("Token {token}"));
    let form = "application/x-www-form-urlencoded";

    // 8 writers at once, so that commits are shared (group commit): single blocks, and
    // mblocks of 20.
    let writers: Vec<_> = (0..8u32)
        .map(|t| {
            let auth = auth.clone();
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                for i in 0..40u32 {
                    let cidr = format!("10.{t}.{}.{}", i / 250, i % 250);
                    let body = format!("cidr={cidr}&source=burst&why=t{t}&duration=1h");
                    let (status, text) = http(
                        addr,
                        "POST",
                        "/bhr/api/block",
                        Some(&auth),
                        Some((form, &body)),
                    );
                    assert_eq!(status, 201, "{text}");
                    acked.push(cidr);
                }
                let batch: Vec<String> = (0..20u32)
                    .map(|i| format!("10.{}.9.{i}", 100 + t))
                    .collect();
                let (status, text) = mblock(addr, &auth, &batch);
                assert_eq!(status, 201, "{text}");
                acked.extend(batch);
                acked
            })
        })
        .collect();
    let mut acked: Vec<String> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    assert_eq!(acked.len(), 8 * 60);
    // A last, large batch (a long commit), and SIGKILL the moment it is acknowledged.
    let batch: Vec<String> = (0..2000u32)
        .map(|i| format!("10.200.{}.{}", i / 250, i % 250))
        .collect();
    let (status, text) = mblock(addr, &auth, &batch);
    server.kill();
    assert_eq!(status, 201, "{text}");
    acked.extend(batch);

    let server = Server::start(&db, &[]);
    let (status, list) = server.request("GET", "/bhr/list.csv", Some(&auth), None);
    assert_eq!(status, 200);
    let mut found: Vec<String> = list
        .lines()
        .skip(1)
        .map(|l| {
            l.split(',')
                .next()
                .unwrap()
                .trim_end_matches("/32")
                .to_string()
        })
        .collect();
    acked.sort();
    found.sort();
    assert_eq!(found, acked);
    let (_, stats) = server.request("GET", "/bhr/api/stats", None, None);
    assert!(stats.contains("\"expected\":2480"), "{stats}");
}
