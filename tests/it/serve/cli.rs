//! `catchd user …`, `catchd check-config` and `catchd serve` start-up and shutdown.

use std::time::{Duration, Instant};

use super::process::*;

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn user_commands_manage_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sub/dir/c.db");
    let dbs = db.to_str().unwrap();
    let t1 = add_user(&db, "zeek", "blocker", None);
    add_user(&db, "bgp", "manager", None);
    add_user(&db, "root", "admin", Some("s3cret"));
    let list = run(&["user", "list", "--db", dbs]);
    assert!(list.status.success());
    assert_eq!(
        stdout(&list),
        "NAME  ROLE     TOKEN  PASSWORD\nzeek  blocker  yes    no\nbgp   manager  yes    no\nroot  admin    yes    yes\n"
    );
    // Tokens are stored hashed: the token text is nowhere in the database.
    let raw = std::fs::read(&db).unwrap();
    let wal = std::fs::read(db.with_extension("db-wal")).unwrap_or_default();
    for bytes in [&raw, &wal] {
        assert!(
            !bytes.windows(40).any(|w| w == t1.as_bytes()),
            "token stored in clear"
        );
    }

    for (args, msg) in [
        (
            vec!["user", "add", "zeek", "--role", "user", "--db", dbs],
            "user `zeek` exists",
        ),
        (
            vec!["user", "add", "a b", "--role", "user", "--db", dbs],
            "not a valid user name",
        ),
        (
            vec!["user", "token", "nobody", "--db", dbs],
            "no user `nobody`",
        ),
        (
            vec!["user", "remove", "nobody", "--db", dbs],
            "no user `nobody`",
        ),
    ] {
        let o = run(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(stderr(&o).contains(msg), "{args:?}: {}", stderr(&o));
    }
    let o = run(&["user", "add", "x", "--role", "king", "--db", dbs]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("unknown role `king`"), "{}", stderr(&o));

    // A running server sees new users at once and token changes within seconds.
    let server = Server::start(&db, &[]);
    let late = add_user(&db, "late", "blocker", None);
    let auth = |t: &str| format!("Token {t}");
    assert_eq!(
        server
            .request("GET", "/bhr/api/blocks/", Some(&auth(&late)), None)
            .0,
        200
    );
    assert_eq!(
        server
            .request("GET", "/bhr/api/blocks/", Some(&auth(&t1)), None)
            .0,
        200
    );
    let o = run(&["user", "token", "zeek", "--db", dbs]);
    assert!(o.status.success());
    let t2 = stdout(&o).trim().to_string();
    assert_ne!(t1, t2);
    let deadline = Instant::now() + Duration::from_secs(20);
    while server
        .request("GET", "/bhr/api/blocks/", Some(&auth(&t1)), None)
        .0
        != 401
    {
        assert!(Instant::now() < deadline, "the old token still works");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        server
            .request("GET", "/bhr/api/blocks/", Some(&auth(&t2)), None)
            .0,
        200
    );
    // Basic with the password set on stdin.
    let basic = format!("Basic {}", base64_encode("root:s3cret"));
    assert_eq!(
        server
            .request("GET", "/bhr/api/blocks/", Some(&basic), None)
            .0,
        200
    );
    // Removal.
    assert!(
        run(&["user", "remove", "late", "--db", dbs])
            .status
            .success()
    );
    while server
        .request("GET", "/bhr/api/blocks/", Some(&auth(&late)), None)
        .0
        != 401
    {
        assert!(Instant::now() < deadline, "a removed user still works");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(server.terminate().success());
}

fn base64_encode(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn check_config_names_the_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "[server]\nlisten = \"127.0.0.1:9999\"\n[bhr]\nminimum_prefixlen = 24\nlocal_networks = [\"192.0.2.0/24\"]\n",
    )
    .unwrap();
    let o = run(&["check-config", good.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("is valid"), "{out}");
    assert!(out.contains("minimum_prefixlen = 24\n"), "{out}");
    assert!(
        out.contains("minimum_prefixlen_v6 = 64\n"),
        "defaults are shown: {out}"
    );
    assert!(out.contains("listen = \"127.0.0.1:9999\""), "{out}");

    for (text, key) in [
        ("[bhr]\nminimum_prefixlen = 40\n", "bhr.minimum_prefixlen"),
        ("[bhr]\nminimum_prefix_len = 24\n", "bhr.minimum_prefix_len"),
        (
            "[bhr]\nlocal_networks = [\"10.0.0.0/8\", \"nope\"]\n",
            "bhr.local_networks[1]",
        ),
        ("[server]\nlisten = \"nowhere\"\n", "server.listen"),
        (
            "[bhr]\nunauthenticated_limited_query = 1\n",
            "bhr.unauthenticated_limited_query",
        ),
    ] {
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, text).unwrap();
        let o = run(&["check-config", "--config", bad.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "{text}");
        assert!(stderr(&o).contains(key), "{text}: {}", stderr(&o));
        // serve refuses it the same way, before touching the database.
        let db = dir.path().join("never.db");
        let o = run(&[
            "serve",
            "--config",
            bad.to_str().unwrap(),
            "--db",
            db.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(2));
        assert!(stderr(&o).contains(key));
        assert!(!db.exists());
    }
    let o = run(&["check-config", "/nonexistent.toml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("/nonexistent.toml"));
    let o = run(&["check-config"]);
    assert!(o.status.success());
    assert!(stdout(&o).starts_with("The built-in configuration is valid."));
}

#[test]
fn serve_uses_the_config_file_and_refuses_a_second_server_on_one_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let conf = dir.path().join("c.toml");
    std::fs::write(
        &conf,
        "[bhr]\nminimum_prefixlen = 28\nunauthenticated_limited_query = true\n",
    )
    .unwrap();
    let token = add_user(&db, "zeek", "blocker", None);
    let server = Server::start(&db, &["--config", conf.to_str().unwrap()]);
    let auth = format!("Token {token}");
    let form = "application/x-www-form-urlencoded";
    let (status, body) = server.request(
        "POST",
        "/bhr/api/block",
        Some(&auth),
        Some((form, "cidr=192.0.2.0/27&source=s&why=w&duration=60")),
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body,
        r#"{"non_field_errors":["Prefix length in 192.0.2.0/27 is too small"]}"#
    );
    assert_eq!(
        server
            .request("GET", "/bhr/api/query_limited/192.0.2.0/24", None, None)
            .0,
        200
    );

    let o = run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--db",
        db.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("another catchd process is serving this database"),
        "{}",
        stderr(&o)
    );

    // The lock is the file's, whatever name reaches it: a symlink, a hard link and
    // another spelling of the path are refused too (two servers on one file would hand
    // out the same ids, and a hard link would get a WAL file of its own).
    let sym = dir.path().join("sym.db");
    std::os::unix::fs::symlink(&db, &sym).unwrap();
    let hard = dir.path().join("hard.db");
    std::fs::hard_link(&db, &hard).unwrap();
    let dotted = dir.path().join(".").join(db.file_name().unwrap());
    for other in [&sym, &hard, &dotted] {
        let o = run(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--db",
            other.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(1), "{}", other.display());
        assert!(
            stderr(&o).contains("another catchd process is serving this database"),
            "{}: {}",
            other.display(),
            stderr(&o)
        );
    }

    // A busy port is named.
    let o = run(&[
        "serve",
        "--listen",
        &server.addr.to_string(),
        "--db",
        dir.path().join("other.db").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(&format!("cannot listen on {}", server.addr)),
        "{}",
        stderr(&o)
    );

    let status = server.terminate();
    assert!(status.success());
}

#[test]
fn shutdown_finishes_a_long_poll() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let token = add_user(&db, "bgp", "manager", None);
    let server = Server::start(&db, &[]);
    let addr = server.addr;
    let auth = format!("Token {token}");
    let poll = std::thread::spawn(move || {
        http(
            addr,
            "GET",
            "/bhr/api/queue/bgp1?timeout=50",
            Some(&auth),
            None,
        )
    });
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let log = server.log();
    assert!(server.terminate().success(), "{log}");
    let (status, body) = poll.join().unwrap();
    assert_eq!((status, body.as_str()), (200, "[]"));
    assert!(
        started.elapsed() < Duration::from_secs(50),
        "the poll ended with the server"
    );
}
