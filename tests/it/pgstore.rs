//! `catchd serve` on PostgreSQL (`--db postgres://…`): durable across SIGKILL, riding out
//! a database restart without losing an acknowledged write, one writer at a time, and
//! `catchd user` next to a running server.

use serde_json::json;

use crate::pg::Cluster;
use crate::serve::process::{Server, add_user, catchd};

#[test]
fn serve_on_postgres_survives_a_database_restart_and_sigkill() {
    let pg = Cluster::start();
    pg.sql("postgres", "CREATE DATABASE c");
    let url = pg.url("c");
    let db = std::path::PathBuf::from(&url);
    let token = format!("Token {}", add_user(&db, "zeek", "blocker", None));
    let s = Server::start(&db, &[]);
    let block = |s: &Server, ip: &str| {
        s.post(
            "/bhr/api/block",
            &token,
            &json!({"cidr": ip, "source": "t", "why": "x", "duration": 600}),
        )
    };
    assert_eq!(block(&s, "192.0.2.1").0, 201);
    // A second server on the same database is refused.
    let o = catchd()
        .args(["serve", "--listen", "127.0.0.1:0", "--db", &url])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("another catchd"));
    // Users can be added while it runs.
    let late = format!("Token {}", add_user(&db, "late", "blocker", None));

    // The database goes away; a request made meanwhile waits and is answered once the
    // write is committed after the restart.
    pg.stop();
    let addr = s.addr;
    let t = token.clone();
    let pending = std::thread::spawn(move || {
        crate::serve::process::http(
            addr,
            "POST",
            "/bhr/api/block",
            Some(&t),
            Some((
                "application/json",
                r#"{"cidr": "192.0.2.3", "source": "t", "why": "x", "duration": 600}"#,
            )),
        )
    });
    std::thread::sleep(std::time::Duration::from_secs(2));
    if pending.is_finished() {
        panic!(
            "answered before the write was durable: {:?}",
            pending.join()
        );
    }
    pg.start_again();
    let (st, body) = pending.join().unwrap();
    assert_eq!(st, 201, "{body}");
    assert!(s.log().contains("reconnected to PostgreSQL"), "{}", s.log());

    // SIGKILL: everything acknowledged is there after a restart.
    s.kill();
    let s = crate::api::harness::retry_start(&db);
    let q = s.json("/bhr/api/blocks/", &late);
    let cidrs: Vec<&str> = q
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["cidr"].as_str().unwrap())
        .collect();
    assert_eq!(cidrs, ["192.0.2.1/32", "192.0.2.3/32"], "{q}");
    assert!(s.terminate().success());
}

#[test]
fn two_api_nodes_share_one_database() {
    let pg = Cluster::start();
    pg.sql("postgres", "CREATE DATABASE c");
    let url = pg.url("c");
    let db = std::path::PathBuf::from(&url);
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("c.toml");
    std::fs::write(&conf, "[server]\ncluster = true\n").unwrap();
    let zeek = format!("Token {}", add_user(&db, "zeek", "blocker", None));
    let bgp = format!("Token {}", add_user(&db, "bgp1", "manager", None));
    let args = ["--config", conf.to_str().unwrap()];
    let a = Server::start(&db, &args);
    let b = Server::start(&db, &args);

    // A long poll on node A ...
    let (addr_a, t) = (a.addr, bgp.clone());
    let poll = std::thread::spawn(move || {
        let start = std::time::Instant::now();
        let r = crate::serve::process::http(
            addr_a,
            "GET",
            "/bhr/api/queue/bgp1?timeout=30",
            Some(&t),
            None,
        );
        (r, start.elapsed())
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    // ... ends when node B adds a block.
    let (st, body) = b.post(
        "/bhr/api/block",
        &zeek,
        &json!({"cidr": "198.51.100.1", "source": "t", "why": "x", "duration": 600}),
    );
    assert_eq!(st, 201, "{body}");
    let ((st, rows), took) = poll.join().unwrap();
    assert_eq!(st, 200);
    assert!(rows.contains("198.51.100.1"), "{rows}");
    assert!(took.as_secs() < 10, "woken by the other node: {took:?}");

    // Both nodes block the same 40 addresses at once: one block per address, ids in one
    // sequence, and both nodes agree.
    let addrs: Vec<String> = (1..=40).map(|i| format!("203.0.113.{i}")).collect();
    let mut threads = Vec::new();
    for node in [a.addr, b.addr] {
        for chunk in addrs.chunks(10) {
            let (chunk, t) = (chunk.to_vec(), zeek.clone());
            threads.push(std::thread::spawn(move || {
                for ip in chunk {
                    let body = format!(
                        r#"{{"cidr": "{ip}", "source": "t", "why": "x", "duration": 600}}"#
                    );
                    let (st, b) = crate::serve::process::http(
                        node,
                        "POST",
                        "/bhr/api/block",
                        Some(&t),
                        Some(("application/json", &body)),
                    );
                    assert!(st == 201 || st == 200, "{st} {b}");
                }
            }));
        }
    }
    for t in threads {
        t.join().unwrap();
    }
    let count = pg.sql(
        "c",
        "SELECT count(*), count(DISTINCT cidr), max(id) FROM blocks",
    );
    assert_eq!(count.trim(), "41|41|41", "no duplicates, no gaps");
    // Node A sees node B's blocks (after its notification) and vice versa.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let sa = a.json("/bhr/api/stats", &zeek);
        let sb = b.json("/bhr/api/stats", &zeek);
        if sa["expected"] == 41 && sb["expected"] == 41 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{sa} {sb}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Acknowledgements made on one node are seen on the other.
    let q = a.json("/bhr/api/queue/bgp1", &bgp);
    let ids: Vec<u64> = q
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), 41);
    let (st, _) = b.post(
        "/bhr/api/set_blocked_multi/bgp1",
        &bgp,
        &json!({"ids": ids}),
    );
    assert_eq!(st, 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while a.json("/bhr/api/queue/bgp1", &bgp) != json!([]) {
        assert!(
            std::time::Instant::now() < deadline,
            "node A still queues them"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(a.terminate().success());
    assert!(b.terminate().success());
}

#[test]
fn a_standby_takes_over_catch_and_release_and_carries_on() {
    let pg = Cluster::start();
    pg.sql("postgres", "CREATE DATABASE c");
    let url = pg.url("c");
    let db = std::path::PathBuf::from(&url);
    let ns = crate::daemon::netns::Netns::new("lt", 9);
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("c.toml");
    std::fs::write(
        &conf,
        "[server]\ncluster = true\nlease_ttl = \"2s\"\n[cnr]\nsweep_interval = \"1s\"\n",
    )
    .unwrap();
    let ops = format!("Token {}", add_user(&db, "ops", "user", None));
    let node = |logs: &str| -> Vec<String> {
        [
            "--config",
            conf.to_str().unwrap(),
            "--log-dir",
            dir.path().join(logs).to_str().unwrap(),
            "--intervals",
            "2s,60s,120s",
            "-i",
            &ns.root_if,
        ]
        .map(str::to_string)
        .to_vec()
    };
    let a_args = node("a");
    let a = Server::run(&db, &a_args.iter().map(String::as_str).collect::<Vec<_>>());
    // The standby waits for the lease (it prints nothing it serves until then).
    let (db2, b_args) = (db.clone(), node("b"));
    let standby = std::thread::spawn(move || {
        Server::run(&db2, &b_args.iter().map(String::as_str).collect::<Vec<_>>())
    });
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(
        !standby.is_finished(),
        "the standby started while A held the lease"
    );

    let (st, info) = a.post(
        "/api/v1/cr/drop",
        &ops,
        &json!({"addr": ns.addr, "location": "takeover"}),
    );
    assert_eq!(st, 200, "{info}");
    a.kill();
    let b = standby.join().unwrap();
    assert!(
        b.log().contains("Holding the catch-and-release lease"),
        "{}",
        b.log()
    );
    // B carries on with A's state ...
    let info = b.json(&format!("/api/v1/cr/{}", ns.addr), &ops);
    assert_eq!(info["location"], "takeover", "{info}");
    assert_eq!(info["current_interval"], 0);
    // ... and, once the 2 s block is over, escalates when the address comes back.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        ns.send_udp(2);
        let info = b.json(&format!("/api/v1/cr/{}", ns.addr), &ops);
        if info["current_interval"] == 1 {
            assert_eq!(info["num_reblocked"], 1);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{info}\n{}", b.log());
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    // One registry: A's block and B's re-block, in one id sequence.
    let ids = pg.sql(
        "c",
        "SELECT string_agg(id::text, ',' ORDER BY id) FROM blocks",
    );
    assert_eq!(ids.trim(), "1,2");
    assert!(b.terminate().success());
}

/// A `catchd run` node inside this test process: its shutdown trigger, its address, and
/// the thread that returns what `daemon::run` returned.
struct Node {
    stop: catchd::shutdown::Trigger,
    addr: std::sync::mpsc::Receiver<std::net::SocketAddr>,
    done: std::thread::JoinHandle<Result<(), String>>,
}

impl Node {
    fn start(url: &str, name: &str, logs: &std::path::Path) -> Node {
        let mut c = catchd::config::Config::default();
        c.server.db = catchd::store::Database::Postgres(url.into());
        c.server.cluster = true;
        c.server.lease_ttl = std::time::Duration::from_millis(600);
        c.server.listen = "127.0.0.1:0".parse().unwrap();
        c.bus.node_id = Some(name.into());
        c.logs.dir = logs.join(name);
        let (stop, shutdown) = catchd::shutdown::Shutdown::new();
        let (tx, addr) = std::sync::mpsc::channel();
        let done = std::thread::spawn(move || {
            catchd::daemon::run(&c, catchd::api::bhr::system_clock(), shutdown, |a| {
                let _ = tx.send(a);
            })
            .map_err(|e| e.to_string())
        });
        Node { stop, addr, done }
    }

    /// Its address once it serves (`None`: not within `secs`).
    fn serving(&self, secs: u64) -> Option<std::net::SocketAddr> {
        self.addr
            .recv_timeout(std::time::Duration::from_secs(secs))
            .ok()
    }
}

#[test]
fn in_process_the_lease_passes_on_shutdown_and_a_node_that_loses_it_stops_with_an_error() {
    use crate::serve::process::http;
    let pg = Cluster::start();
    pg.sql("postgres", "CREATE DATABASE l");
    let url = pg.url("l");
    let ops = format!(
        "Token {}",
        add_user(std::path::Path::new(&url), "ops", "user", None)
    );
    let logs = tempfile::tempdir().unwrap();
    let a = Node::start(&url, "node-a", logs.path());
    let a_addr = a.serving(30).expect("A serves");
    let b = Node::start(&url, "node-b", logs.path());
    assert!(b.serving(2).is_none(), "B waits while A holds the lease");
    let (st, body) = http(
        a_addr,
        "POST",
        "/api/v1/cr/drop",
        Some(&ops),
        Some((
            "application/json",
            r#"{"addr": "192.0.2.44", "location": "handover"}"#,
        )),
    );
    assert_eq!(st, 200, "{body}");

    // A stops by its trigger: it lets go, B takes over with A's state.
    a.stop.fire();
    assert_eq!(a.done.join().unwrap(), Ok(()));
    let b_addr = b.serving(10).expect("B takes over");
    let (st, body) = http(b_addr, "GET", "/api/v1/cr/192.0.2.44", Some(&ops), None);
    assert_eq!(st, 200, "{body}");
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["location"], "handover", "{info}");
    assert_eq!(info["current_block_id"], 1);

    // Another node takes the lease under B (as one would after B's database link was
    // down for a whole lease): B stops by itself, with an error, and the process lives on.
    pg.sql(
        "l",
        "UPDATE catchd_lease SET holder = 'node-c', expires = now() + interval '1 hour'",
    );
    let r = b.done.join().unwrap();
    let e = r.expect_err("B stops with an error");
    assert!(e.contains("node-c took the catch-and-release lease"), "{e}");
    drop(b.stop);
}
