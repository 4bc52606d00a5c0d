//! What an attacker and a careless operator did to catchd, as tests: floods of wrong
//! passwords, idle and trickling connections under a low file-descriptor limit, hostile
//! request heads, slow readers of big listings, long polls hogging the server, SIGTERM
//! with requests half sent, and every route tried by every role. Loops are bounded, all
//! on loopback; memory is read from `/proc/<pid>/status`, and no test measures time.
//! (SIGKILL during drops is in `daemon::restart`, two servers on one database through
//! another path in `serve::cli`, open redirects in `web::pages`.)

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::serve::process::{Server, add_user, catchd};

/// A `VmRSS`/`VmHWM`-style field of `/proc/<pid>/status`, in MiB.
fn mem_mib(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = s
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {s}"));
    kb / 1024
}

fn basic(user: &str, pw: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
    )
}

/// One raw exchange: sends `bytes`, reads until the server closes (or 20 s pass);
/// `None` if nothing came back.
fn raw(addr: SocketAddr, bytes: &[u8]) -> Option<String> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    (!out.is_empty()).then(|| String::from_utf8_lossy(&out).into_owned())
}

/// The status and the body of a raw answer.
fn split(resp: &str) -> (u16, &str) {
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((resp, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, body)
}

fn config(dir: &Path, text: &str) -> std::path::PathBuf {
    let p = dir.join("c.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// Runs `catchd serve` with at most `nofile` open files (soft and hard, as
/// `ulimit -n` sets them).
fn serve_limited(db: &Path, conf: &Path, nofile: u64) -> Server {
    use std::os::unix::process::CommandExt;
    let mut cmd = catchd();
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::resource::setrlimit(
                nix::sys::resource::Resource::RLIMIT_NOFILE,
                nofile,
                nofile,
            )
            .map_err(std::io::Error::from)
        });
    }
    Server::launch_with(cmd, "serve", db, &["--config", conf.to_str().unwrap()])
}

#[test]
fn wrong_passwords_cost_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("d.db");
    add_user(&db, "alice", "user", Some("the-right-password"));
    // No throttling here: every wrong password is checked.
    let conf = config(
        dir.path(),
        "[server]\nsign_in_failures = 1000000\nsign_in_failures_per_user = 1000000\n",
    );
    let s = Server::start(&db, &["--config", conf.to_str().unwrap()]);
    let before = mem_mib(s.pid(), "VmRSS:");
    let threads: Vec<_> = (0..100)
        .map(|i| {
            let addr = s.addr;
            std::thread::spawn(move || {
                let mut statuses = Vec::new();
                for j in 0..2 {
                    let a = basic("alice", &format!("wrong-{i}-{j}"));
                    let (st, body) = crate::serve::process::http(
                        addr,
                        "GET",
                        "/bhr/api/blocks/",
                        Some(&a),
                        None,
                    );
                    assert!(serde_json::from_str::<Value>(&body).is_ok(), "{st} {body}");
                    statuses.push(st);
                }
                statuses
            })
        })
        .collect();
    let statuses: Vec<u16> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 503),
        "{statuses:?}"
    );
    assert!(statuses.contains(&401));
    // argon2 needs 19 MiB a check; 200 at once once took the server to gigabytes. Now a
    // few threads, each with one reused buffer.
    let peak = mem_mib(s.pid(), "VmHWM:");
    assert!(
        peak < before + 150,
        "peak RSS {peak} MiB (it was {before} MiB before the flood)"
    );
    // And the right password still works.
    let (st, _) = s.request(
        "GET",
        "/bhr/api/blocks/",
        Some(&basic("alice", "the-right-password")),
        None,
    );
    assert_eq!(st, 200);
}

#[test]
fn failed_sign_ins_are_throttled_per_address_and_per_user() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("d.db");
    add_user(&db, "alice", "user", Some("the-right-password"));
    let conf = config(dir.path(), "[server]\nsign_in_failures = 5\n");
    let s = Server::start(&db, &["--config", conf.to_str().unwrap()]);
    let get = |user: &str, pw: &str| -> String {
        let req = format!(
            "GET /bhr/api/blocks/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: {}\r\n\r\n",
            basic(user, pw)
        );
        raw(s.addr, req.as_bytes()).unwrap()
    };
    // A name nobody has is answered as a wrong password is.
    let nobody = get("nobody", "x");
    let (st, body) = split(&nobody);
    assert_eq!(st, 401);
    assert_eq!(body, r#"{"detail":"Invalid username/password."}"#);
    for i in 0..4 {
        let r = get("alice", &format!("wrong{i}"));
        assert_eq!(split(&r).0, 401, "{r}");
    }
    // Five failures from this address: the sixth try is refused before any check.
    let r = get("alice", "wrong5");
    let (st, body) = split(&r);
    assert_eq!(st, 429, "{r}");
    let v: Value = serde_json::from_str(body).unwrap();
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .starts_with("Request was throttled."),
        "{v}"
    );
    let retry = r
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("retry-after: ")
                .map(str::to_string)
        })
        .unwrap_or_else(|| panic!("no Retry-After in {r}"));
    assert!(retry.trim().parse::<u64>().unwrap() >= 1, "{r}");
    // Even the right password waits; a token does not.
    assert_eq!(split(&get("alice", "the-right-password")).0, 429);
    let tok = add_user(&db, "bob", "user", None);
    let (st, _) = s.request(
        "GET",
        "/bhr/api/blocks/",
        Some(&format!("Token {tok}")),
        None,
    );
    assert_eq!(st, 200);
}

#[test]
fn idle_and_trickling_connections_under_a_low_fd_limit() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("d.db");
    let conf = config(
        dir.path(),
        "[server]\nheader_timeout = \"2s\"\nidle_timeout = \"2s\"\n",
    );
    let s = serve_limited(&db, &conf, 256);
    // More idle connections than the server has descriptors.
    let idle: Vec<TcpStream> = (0..400)
        .filter_map(|_| TcpStream::connect(s.addr).ok())
        .collect();
    assert!(idle.len() > 256);
    // Others are still answered, once idle connections time out.
    let r = raw(
        s.addr,
        b"GET /bhr/api/stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .expect("an answer while 400 connections sit idle");
    assert_eq!(split(&r).0, 200, "{r}");
    drop(idle);
    // A client that trickles its request head a byte at a time is cut off.
    let mut t = TcpStream::connect(s.addr).unwrap();
    let mut closed = false;
    for b in b"GET /bhr/api/stats HTTP/1.1\r\nHost: trickle.example\r\nX: yyyyyyyyyyy" {
        if t.write_all(&[*b]).is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    if !closed {
        t.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 64];
        closed = matches!(t.read(&mut buf), Ok(0) | Err(_));
    }
    assert!(closed, "a trickling request head was held open");
    assert!(s.log().contains("at most") || !s.log().is_empty());
}

#[test]
fn what_hyper_refuses_is_answered_in_json() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("d.db");
    let s = Server::start(&db, &[]);
    let long_query = format!(
        "GET /bhr/api/stats?{} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(100_000)
    );
    let many_headers = format!(
        "GET /bhr/api/stats HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..500)
            .map(|i| format!("X-{i}: y\r\n"))
            .collect::<String>()
    );
    for (req, want) in [
        (b"BLAH\x00\x01 / HTTP/1.1\r\n\r\n".to_vec(), 400),
        (long_query.into_bytes(), 414),
        (many_headers.into_bytes(), 431),
    ] {
        let r = raw(s.addr, &req).expect("an answer");
        let (st, body) = split(&r);
        assert_eq!(st, want, "{r}");
        let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {r}"));
        assert!(v["detail"].is_string(), "{r}");
        assert!(
            r.to_ascii_lowercase()
                .contains("content-type: application/json")
        );
    }
}

/// A `/metrics` value of a running daemon.
fn metric(s: &Server, name: &str) -> u64 {
    let (_, m) = s.request("GET", "/metrics", None, None);
    m.lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name}"))
}

#[test]
fn slow_readers_of_big_listings_hold_little_and_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("d.db");
    let admin = format!("Token {}", add_user(&db, "adm", "admin", None));
    let conf = config(dir.path(), "[server]\nwrite_timeout = \"3s\"\n");
    let s = Server::run(&db, &["--config", conf.to_str().unwrap()]);
    // 30 000 blocks (about 11 MB as /bhr/api/blocks/).
    for k in 0..30 {
        let items: Vec<Value> = (0..1000)
            .map(|i| {
                json!({"cidr": format!("100.{}.{}.{}", 64 + k / 8, (k % 8) * 4 + i / 250, 1 + i % 250),
                       "source": "flood", "why": "many", "duration": "1d"})
            })
            .collect();
        let (st, v) = s.post("/bhr/api/mblock", &admin, &Value::Array(items));
        assert_eq!(st, 201, "{v}");
    }
    let before = mem_mib(s.pid(), "VmRSS:");
    // Forty clients ask for every block and read nothing.
    let readers: Vec<TcpStream> = (0..40)
        .map(|_| {
            let mut c = TcpStream::connect(s.addr).unwrap();
            write!(
                c,
                "GET /bhr/api/blocks/ HTTP/1.1\r\nHost: x\r\nAuthorization: {admin}\r\n\r\n"
            )
            .unwrap();
            c
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let held = mem_mib(s.pid(), "VmRSS:");
    assert!(
        held < before + 60,
        "40 unread listings took RSS from {before} to {held} MiB"
    );
    // The write timeout cuts them off: what a reader gets then is less than the listing.
    let cut_before = metric(&s, "catchd_http_write_timeouts_total");
    std::thread::sleep(Duration::from_secs(5));
    let mut short = 0;
    for mut c in readers {
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut got = Vec::new();
        let _ = c.read_to_end(&mut got);
        if !got.ends_with(b"]\r\n0\r\n\r\n") {
            short += 1;
        }
    }
    assert!(short > 0, "no slow reader was cut off");
    assert!(metric(&s, "catchd_http_write_timeouts_total") > cut_before);
    // A reader that reads gets everything.
    let (st, body) = s.request("GET", "/bhr/api/blocks/", Some(&admin), None);
    assert_eq!(st, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 30_000);
    assert!(s.terminate().success());
}

#[test]
fn one_token_cannot_take_every_long_poll() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("d.db");
    let greedy = format!("Token {}", add_user(&db, "greedy", "manager", None));
    let other = format!("Token {}", add_user(&db, "other", "manager", None));
    let conf = config(dir.path(), "[server]\nmax_concurrent = 32\n");
    let s = Server::start(&db, &["--config", conf.to_str().unwrap()]);
    // 40 long polls from one token (more than the server serves at once).
    let polls: Vec<TcpStream> = (0..40)
        .map(|_| {
            let mut c = TcpStream::connect(s.addr).unwrap();
            write!(
                c,
                "GET /bhr/api/queue/bgp?timeout=50 HTTP/1.1\r\nHost: x\r\nAuthorization: {greedy}\r\n\r\n"
            )
            .unwrap();
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    // Another manager is still served.
    for _ in 0..5 {
        let (st, body) = s.request("GET", "/bhr/api/queue/fw?timeout=0", Some(&other), None);
        assert_eq!(st, 200, "{body}");
    }
    drop(polls);
}

#[test]
fn sigterm_with_requests_half_sent_still_stops() {
    for command in ["serve", "run"] {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("d.db");
        let tok = add_user(&db, "z", "blocker", None);
        let logs = dir.path().join("logs");
        let conf = config(
            dir.path(),
            &format!(
                "[server]\nshutdown_grace = \"1s\"\n[logs]\ndir = \"{}\"\n",
                logs.display()
            ),
        );
        let extra = ["--config", conf.to_str().unwrap()];
        let s = if command == "serve" {
            Server::start(&db, &extra)
        } else {
            Server::run(&db, &extra)
        };
        let (st, _) = s.post(
            "/bhr/api/block",
            &format!("Token {tok}"),
            &json!({"cidr": "203.0.113.9", "source": "t", "why": "w", "duration": "1h"}),
        );
        assert_eq!(st, 201);
        let mut half_head = TcpStream::connect(s.addr).unwrap();
        half_head.write_all(b"GET /bhr/api/st").unwrap();
        let mut half_body = TcpStream::connect(s.addr).unwrap();
        half_body
            .write_all(
                b"POST /bhr/api/block HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\ncidr=",
            )
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        // terminate() waits for the exit: before, it waited for the clients to go away.
        assert!(s.terminate().success(), "{command}");
        if command == "run" {
            let text = std::fs::read_to_string(logs.join("netcontrol.log")).unwrap();
            assert!(text.lines().last().unwrap().starts_with("#close"), "{text}");
        }
        // The acknowledged block is there after a restart.
        let s = Server::start(&db, &[]);
        let q = s.json("/bhr/api/query/203.0.113.9", &format!("Token {tok}"));
        assert_eq!(q.as_array().unwrap().len(), 1);
        drop((half_head, half_body));
    }
}

/// Every route, every role: anonymous callers get 401 where a user is needed, roles
/// without the permission 403, and nobody a 5xx (bhr.md §7.3, plus catchd's own routes).
#[tokio::test]
async fn every_route_checks_the_role() {
    use crate::api::harness::{Api, Who};
    use axum::http::Method;
    let api = Api::new().await;
    api.block_ok("192.0.2.1", "1h").await;
    let (wl, _) = catchd::api::watchlist::start(
        &catchd::config::Config::default().watchlist,
        &api.state,
        vec![],
        1,
    )
    .unwrap();
    let app = catchd::api::bhr::app(api.state.clone(), Some(wl));
    let block = json!({"cidr": "192.0.2.2", "source": "s", "why": "w", "duration": "1h"});
    use Who::{Admin, Blocker, Manager, Person};
    // (method, path, body, roles allowed; None: public)
    let routes: Vec<(Method, &str, Value, Option<Vec<Who>>)> = vec![
        (Method::GET, "/bhr/api/", json!(null), None),
        (Method::GET, "/bhr/api/stats", json!(null), None),
        (Method::GET, "/bhr/api/source_stats", json!(null), None),
        (Method::GET, "/bhr/api/metrics", json!(null), None),
        (
            Method::POST,
            "/bhr/api/block",
            block.clone(),
            Some(vec![Blocker, Person, Admin]),
        ),
        (
            Method::POST,
            "/bhr/api/mblock",
            json!([block.clone()]),
            Some(vec![Blocker, Person, Admin]),
        ),
        (
            Method::POST,
            "/bhr/api/blocks/",
            json!({"cidr": "192.0.2.3", "source": "s", "why": "w"}),
            Some(vec![Blocker, Person, Admin]),
        ),
        (
            Method::POST,
            "/bhr/api/unblock_now",
            json!({"cidr": "192.0.2.250", "why": "x"}),
            Some(vec![Person, Admin]),
        ),
        (
            Method::GET,
            "/bhr/api/queue/i",
            json!(null),
            Some(vec![Manager, Person, Admin]),
        ),
        (
            Method::POST,
            "/bhr/api/set_blocked_multi/i",
            json!({"ids": [1]}),
            Some(vec![Manager, Person, Admin]),
        ),
        (
            Method::GET,
            "/bhr/api/unblock_queue/i",
            json!(null),
            Some(vec![Manager, Person, Admin]),
        ),
        (
            Method::POST,
            "/bhr/api/set_unblocked_multi",
            json!({"ids": [1]}),
            Some(vec![Manager, Person, Admin]),
        ),
        (
            Method::POST,
            "/bhr/api/blocks/1/set_blocked/",
            json!({"ident": "j"}),
            Some(vec![Person, Admin]),
        ),
        (
            Method::POST,
            "/bhr/api/blockentries/1/set_unblocked/",
            json!(null),
            Some(vec![Manager, Person, Admin]),
        ),
        (
            Method::POST,
            "/bhr/api/whitelist/",
            json!({"cidr": "198.51.100.0/24", "why": "x"}),
            Some(vec![Person, Admin]),
        ),
        (
            Method::DELETE,
            "/bhr/api/whitelist/99/",
            json!(null),
            Some(vec![Person, Admin]),
        ),
        (
            Method::POST,
            "/bhr/api/source_blacklist/",
            json!({"source": "feedx", "why": "x"}),
            Some(vec![Person, Admin]),
        ),
        (
            Method::DELETE,
            "/bhr/api/source_blacklist/nothing/",
            json!(null),
            Some(vec![Person, Admin]),
        ),
        (
            Method::POST,
            "/api/v1/watchlist/x/fail",
            json!(null),
            Some(vec![Blocker, Person, Admin]),
        ),
        (
            Method::DELETE,
            "/api/v1/watchlist/x",
            json!(null),
            Some(vec![Person, Admin]),
        ),
    ];
    let mut readers = vec![];
    for path in [
        "/bhr/api/query/192.0.2.0/24",
        "/bhr/list.csv",
        "/bhr/api/blocks/",
        "/bhr/api/blocks/1/",
        "/bhr/api/blockentries/",
        "/bhr/api/current_blocks/",
        "/bhr/api/expected_blocks/",
        "/bhr/api/pending_blocks/",
        "/bhr/api/pending_removal_blocks/",
        "/bhr/api/current_blocks_brief/",
        "/bhr/api/whitelist/",
        "/bhr/api/source_blacklist/",
        "/bhr/publist.csv",
        "/api/v1/watchlist/x",
    ] {
        readers.push((
            Method::GET,
            path,
            json!(null),
            Some(vec![Blocker, Manager, Person, Admin]),
        ));
    }
    for (method, path, body, allowed) in routes.into_iter().chain(readers) {
        for who in [Who::Anonymous, Blocker, Manager, Person, Admin] {
            use axum::body::Body;
            use axum::http::{Request, header};
            use tower::ServiceExt;
            let mut b = Request::builder()
                .method(method.clone())
                .uri(path)
                .header(header::HOST, "testserver");
            if let Some(t) = who.token() {
                b = b.header(header::AUTHORIZATION, format!("Token {t}"));
            }
            let req = if body.is_null() {
                b.body(Body::empty()).unwrap()
            } else {
                b.header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(body.to_string()))
                    .unwrap()
            };
            let r = app.clone().oneshot(req).await.unwrap();
            let st = r.status().as_u16();
            let text = axum::body::to_bytes(r.into_body(), usize::MAX)
                .await
                .unwrap();
            let text = String::from_utf8_lossy(&text);
            assert!(st < 500, "{who:?} {method} {path}: {st} {text}");
            match &allowed {
                None => assert!(st < 400, "{who:?} {method} {path}: {st} {text}"),
                Some(_) if who == Who::Anonymous => {
                    assert_eq!(st, 401, "anonymous {method} {path}: {text}")
                }
                Some(roles) if roles.contains(&who) => {
                    assert!(
                        st != 401 && st != 403,
                        "{who:?} {method} {path}: {st} {text}"
                    )
                }
                Some(_) => assert_eq!(st, 403, "{who:?} {method} {path}: {text}"),
            }
        }
    }
}
