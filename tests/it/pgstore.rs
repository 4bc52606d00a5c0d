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
                r#"{"cidr": "192.0.2.2", "source": "t", "why": "x", "duration": 600}"#,
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
    assert_eq!(cidrs, ["192.0.2.1/32", "192.0.2.2/32"], "{q}");
    assert!(s.terminate().success());
}
