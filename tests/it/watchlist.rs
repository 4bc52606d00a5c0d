//! The watchlist → blacklist API on a running `catchd serve`: BlackRed's semantics, roles,
//! bad input, restarts, concurrency, anonymisation.

use serde_json::{Value, json};

use crate::serve::process::{Server, add_user};

struct Setup {
    dir: tempfile::TempDir,
    db: std::path::PathBuf,
    conf: std::path::PathBuf,
    blocker: String,
    user: String,
    manager: String,
}

fn setup(conf: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("w.db");
    let path = dir.path().join("c.toml");
    std::fs::write(&path, conf.replace("{dir}", dir.path().to_str().unwrap())).unwrap();
    Setup {
        blocker: format!("Token {}", add_user(&db, "app", "blocker", None)),
        user: format!("Token {}", add_user(&db, "ops", "user", None)),
        manager: format!("Token {}", add_user(&db, "bgp", "manager", None)),
        dir,
        db,
        conf: path,
    }
}

impl Setup {
    fn start(&self) -> Server {
        Server::start(&self.db, &["--config", self.conf.to_str().unwrap()])
    }
}

fn call(s: &Server, method: &str, path: &str, auth: &str) -> (u16, Value) {
    let (st, body) = s.request(method, path, Some(auth), None);
    (
        st,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

#[test]
fn three_failures_blacklist_an_item_until_unblocked() {
    let w = setup("[watchlist]\nblock_ttl = \"1h\"\n");
    let s = w.start();
    let fail = |item: &str| {
        call(
            &s,
            "POST",
            &format!("/api/v1/watchlist/{item}/fail"),
            &w.blocker,
        )
    };
    assert_eq!(
        fail("198.51.100.9"),
        (200, json!({"blocked": false, "failures": 1}))
    );
    assert_eq!(
        fail("198.51.100.9"),
        (200, json!({"blocked": false, "failures": 2}))
    );
    let (_, v) = call(&s, "GET", "/api/v1/watchlist/198.51.100.9", &w.user);
    assert_eq!(v["blocked"], false);
    assert_eq!(v["failures"], 2);
    let ttl = v["watch_ttl"].as_f64().unwrap();
    assert!(ttl > 170.0 && ttl <= 180.0, "{v}");
    assert_eq!(v["block_ttl"], Value::Null);
    assert_eq!(
        fail("198.51.100.9"),
        (200, json!({"blocked": true, "failures": 3}))
    );
    let (_, v) = call(&s, "GET", "/api/v1/watchlist/198.51.100.9", &w.user);
    assert_eq!(v["blocked"], true);
    assert!(v["block_ttl"].as_f64().unwrap() > 3590.0, "{v}");
    assert_eq!(v["watch_ttl"], Value::Null);
    // Items are any string (percent-encoded in the path).
    for _ in 0..3 {
        fail("alice%40example.org");
    }
    let (st, v) = s.post(
        "/api/v1/watchlist/check",
        &w.user,
        &json!(["198.51.100.9", "alice@example.org", "nobody"]),
    );
    assert_eq!(st, 200);
    let blocked: Vec<(String, bool)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["item"].as_str().unwrap().to_string(),
                x["blocked"] == true,
            )
        })
        .collect();
    assert_eq!(
        blocked,
        [
            ("198.51.100.9".to_string(), true),
            ("alice@example.org".to_string(), true),
            ("nobody".to_string(), false)
        ]
    );
    let (st, v) = s.post("/api/v1/watchlist/check", &w.user, &json!({"items": ["x"]}));
    assert_eq!((st, v[0]["blocked"].clone()), (200, json!(false)));
    // Unblock clears both lists.
    assert_eq!(
        call(&s, "DELETE", "/api/v1/watchlist/198.51.100.9", &w.user),
        (200, json!({"unblocked": true}))
    );
    assert_eq!(
        call(&s, "DELETE", "/api/v1/watchlist/198.51.100.9", &w.user),
        (200, json!({"unblocked": false}))
    );
    assert_eq!(
        fail("198.51.100.9"),
        (200, json!({"blocked": false, "failures": 1}))
    );

    // Survives a restart (and a SIGKILL: every answer came after its commit).
    s.kill();
    let s = w.start();
    let (_, v) = call(&s, "GET", "/api/v1/watchlist/alice@example.org", &w.user);
    assert_eq!(v["blocked"], true, "{v}");
    let (_, v) = call(&s, "GET", "/api/v1/watchlist/198.51.100.9", &w.user);
    assert_eq!(v["failures"], 1, "{v}");
    assert!(s.terminate().success());
}

#[test]
fn roles_and_bad_input() {
    let w = setup("");
    let s = w.start();
    // Recording failures takes the blocker role (as blocking does); unblocking takes the
    // users role; anyone signed in may check.
    let (st, v) = call(&s, "POST", "/api/v1/watchlist/x/fail", &w.manager);
    assert_eq!(st, 403, "{v}");
    assert!(v["detail"].is_string(), "{v}");
    let (st, _) = call(&s, "DELETE", "/api/v1/watchlist/x", &w.blocker);
    assert_eq!(st, 403);
    let (st, _) = call(&s, "GET", "/api/v1/watchlist/x", &w.manager);
    assert_eq!(st, 200);
    let (st, _) = s.request("GET", "/api/v1/watchlist/x", None, None);
    assert_eq!(st, 401);
    let long = "a".repeat(2000);
    let (st, v) = call(&s, "GET", &format!("/api/v1/watchlist/{long}"), &w.user);
    assert_eq!(st, 400, "{v}");
    assert!(v["item"][0].as_str().unwrap().contains("1 to 1024"), "{v}");
    for body in [
        json!("x"),
        json!({"items": "x"}),
        json!([1, 2]),
        json!([""]),
    ] {
        let (st, v) = s.post("/api/v1/watchlist/check", &w.user, &body);
        assert_eq!(st, 400, "{body}: {v}");
        assert!(v.is_object(), "{v}");
    }
    let (st, _) = s.request(
        "POST",
        "/api/v1/watchlist/check",
        Some(&w.user),
        Some(("application/json", "[\"unterminated")),
    );
    assert_eq!(st, 400);
    assert!(s.terminate().success());
}

#[test]
fn concurrent_failures_are_counted_exactly() {
    let w = setup("[watchlist]\nthreshold = 100000\n");
    let s = w.start();
    let addr = s.addr;
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let auth = w.blocker.clone();
            std::thread::spawn(move || {
                for _ in 0..25 {
                    let (st, _) = crate::serve::process::http(
                        addr,
                        "POST",
                        "/api/v1/watchlist/hot/fail",
                        Some(&auth),
                        None,
                    );
                    assert_eq!(st, 200);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let (_, v) = call(&s, "GET", "/api/v1/watchlist/hot", &w.user);
    assert_eq!(v["failures"], 400);
    // And the stored count is the same after a restart.
    s.kill();
    let s = w.start();
    let (_, v) = call(&s, "GET", "/api/v1/watchlist/hot", &w.user);
    assert_eq!(v["failures"], 400);
    assert!(s.terminate().success());
}

#[test]
fn anonymised_items_never_reach_the_database() {
    let w = setup("[watchlist]\nanonymize = true\nkey_file = \"{dir}/watchlist.key\"\n");
    let s = w.start();
    for _ in 0..3 {
        call(
            &s,
            "POST",
            "/api/v1/watchlist/secret-user-42/fail",
            &w.blocker,
        );
    }
    let (_, v) = call(&s, "GET", "/api/v1/watchlist/secret-user-42", &w.user);
    assert_eq!(v["blocked"], true);
    assert!(s.terminate().success());
    // The key lives in its own file, readable by the owner only.
    let key = w.dir.path().join("watchlist.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // No trace of the item in the database files.
    for f in std::fs::read_dir(w.dir.path()).unwrap() {
        let p = f.unwrap().path();
        if p.file_name().unwrap().to_str().unwrap().starts_with("w.db") {
            let bytes = std::fs::read(&p).unwrap();
            assert!(
                !bytes.windows(14).any(|x| x == b"secret-user-42"),
                "{} holds the item",
                p.display()
            );
        }
    }
    // With the same key it is found again after a restart; without it catchd refuses to
    // start rather than silently using another key.
    let s = w.start();
    let (_, v) = call(&s, "GET", "/api/v1/watchlist/secret-user-42", &w.user);
    assert_eq!(v["blocked"], true);
    assert!(s.terminate().success());
    std::fs::rename(&key, w.dir.path().join("elsewhere.key")).unwrap();
    let o = crate::serve::process::catchd()
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(&w.db)
        .arg("--config")
        .arg(&w.conf)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("watchlist.key_file") && err.contains("is missing"),
        "{err}"
    );
    std::fs::write(
        w.dir.path().join("bad.toml"),
        "[watchlist]\nanonymize = true\n",
    )
    .unwrap();
    let o = crate::serve::process::catchd()
        .args(["check-config"])
        .arg(w.dir.path().join("bad.toml"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("watchlist.key_file"));
}

#[test]
fn blacklisted_addresses_can_become_registry_blocks() {
    let w = setup("[watchlist]\nblock_addresses = true\nblock_ttl = \"2h\"\n");
    let s = w.start();
    for _ in 0..3 {
        call(
            &s,
            "POST",
            "/api/v1/watchlist/203.0.113.77/fail",
            &w.blocker,
        );
        call(&s, "POST", "/api/v1/watchlist/bob/fail", &w.blocker);
    }
    let (_, q) = call(&s, "GET", "/bhr/api/query/203.0.113.77", &w.user);
    assert_eq!(q[0]["source"], "watchlist", "{q}");
    assert_eq!(q[0]["who"], "watchlist");
    let (_, stats) = call(&s, "GET", "/bhr/api/stats", &w.user);
    assert_eq!(stats["expected"], 1, "only the address: {stats}");
    assert!(s.terminate().success());
}
