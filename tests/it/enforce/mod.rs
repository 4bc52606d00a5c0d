//! Enforcement: blockers and block managers. Real firewalls in network namespaces
//! (`netns`), hosts.allow golden files, and `catchd manager` against `catchd serve` end
//! to end (two idents, failures, the blockers inside `catchd run`).

mod netns;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use catchd::enforce::render_hosts_allow;
use ipnet::IpNet;

use crate::serve::process::{Server, add_user, catchd, http};
use crate::support::fixture;

fn nets(s: &[&str]) -> Vec<IpNet> {
    s.iter().map(|c| c.parse().unwrap()).collect()
}

#[track_caller]
fn golden(name: &str, add: &[&str], remove: &[&str]) {
    let read =
        |ext: &str| std::fs::read_to_string(fixture(&format!("hosts_allow/{name}.{ext}"))).unwrap();
    let out = render_hosts_allow(&read("in"), &nets(add), &nets(remove));
    assert_eq!(out, read("out"), "{name}");
    // Applying the same change again changes nothing.
    assert_eq!(render_hosts_allow(&out, &nets(add), &nets(remove)), out);
}

#[test]
fn hosts_allow_golden_files() {
    golden("empty", &["192.0.2.1/32", "2001:db8::5/128"], &[]);
    golden("no_markers", &["192.0.2.1/32", "2001:db8::5/128"], &[]);
    golden(
        "user_rules",
        &["192.0.2.1/32", "2001:db8::5/128"],
        &["198.51.100.3/32", "198.51.100.200/32"],
    );
    golden(
        "ipv6",
        &["2001:db8::5/128", "2001:db8:1::/48", "203.0.113.0/25"],
        &[],
    );
}

/// Waits until `f` holds (20 s at most).
#[track_caller]
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(20), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `catchd manager` as a child process, logging to a file; killed on drop.
struct ManagerProc {
    child: Child,
    log: std::path::PathBuf,
}

impl ManagerProc {
    fn start(server: &Server, token: &str, ident: &str, args: &[&str], log: &Path) -> ManagerProc {
        let f = std::fs::File::create(log).unwrap();
        let child = catchd()
            .args([
                "manager",
                "--server",
                &server.url(),
                "--token",
                token,
                "--ident",
                ident,
            ])
            .args(["--poll-timeout", "2s", "--unblock-interval", "1s"])
            .args(args)
            .env("RUST_LOG", "catchd=info")
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap();
        ManagerProc {
            child,
            log: log.to_path_buf(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ManagerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn block(s: &Server, admin: &str, cidr: &str, duration: u32) {
    let (st, b) = s.post(
        "/bhr/api/block",
        admin,
        &serde_json::json!({"cidr": cidr, "source": "test", "why": "enforce test", "duration": duration}),
    );
    assert_eq!(st, 201, "{b}");
}

fn unblock(s: &Server, admin: &str, cidr: &str) {
    let (st, b) = s.post(
        "/bhr/api/unblock_now",
        admin,
        &serde_json::json!({"cidr": cidr, "why": "done"}),
    );
    assert_eq!(st, 200, "{b}");
}

#[test]
fn two_idents_each_apply_their_own_queue() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("d.db");
    let admin = format!("Token {}", add_user(&db, "adm", "admin", None));
    let t1 = add_user(&db, "m1", "manager", None);
    let t2 = add_user(&db, "m2", "manager", None);
    let s = Server::start(&db, &[]);
    let (f1, f2) = (dir.path().join("h1.allow"), dir.path().join("h2.allow"));
    std::fs::write(&f1, "ALL: 127.0.0.1 : allow\n").unwrap();
    block(&s, &admin, "192.0.2.50", 600);
    let m1 = ManagerProc::start(
        &s,
        &t1,
        "h1",
        &[
            "--backend",
            "hosts-allow",
            "--hosts-allow",
            f1.to_str().unwrap(),
        ],
        &dir.path().join("m1.log"),
    );
    let m2 = ManagerProc::start(
        &s,
        &t2,
        "h2",
        &[
            "--backend",
            "hosts-allow",
            "--hosts-allow",
            f2.to_str().unwrap(),
        ],
        &dir.path().join("m2.log"),
    );
    block(&s, &admin, "2001:db8::77", 600);
    let has = |f: &Path, line: &str| {
        std::fs::read_to_string(f)
            .unwrap_or_default()
            .contains(line)
    };
    for f in [&f1, &f2] {
        eventually(&format!("{}\n{}", m1.log(), m2.log()), || {
            has(f, "ALL: 192.0.2.50 : deny") && has(f, "ALL: [2001:db8::77] : deny")
        });
    }
    assert!(has(
        &f1,
        "ALL: 127.0.0.1 : allow\n#---- BlockHosts Additions\n"
    ));
    // Each ident acknowledged both blocks: its queue is empty, both are current.
    for ident in ["h1", "h2"] {
        eventually("acknowledged", || {
            s.json(&format!("/bhr/api/queue/{ident}"), &admin) == serde_json::json!([])
        });
    }
    assert_eq!(s.json("/bhr/api/stats", &admin)["current"], 2);
    // A third ident that runs nothing still has both in its queue.
    assert_eq!(
        s.json("/bhr/api/queue/h3", &admin)
            .as_array()
            .unwrap()
            .len(),
        2
    );
    unblock(&s, &admin, "192.0.2.50/32");
    for f in [&f1, &f2] {
        eventually("unblocked in both", || !has(f, "192.0.2.50"));
    }
    eventually("both entries closed", || {
        s.json("/bhr/api/unblock_queue/h1", &admin) == serde_json::json!([])
            && s.json("/bhr/api/unblock_queue/h2", &admin) == serde_json::json!([])
    });
    assert!(has(&f1, "[2001:db8::77]"));
}

/// An exec backend whose block command fails until a flag file exists.
fn flaky_script(dir: &Path, body: &str) -> String {
    let script = dir.join("block.sh");
    std::fs::write(&script, body).unwrap();
    format!("/bin/sh {} {{cidr}} {{duration}} {{why}}", script.display())
}

fn metric(addr: std::net::SocketAddr, name: &str) -> u64 {
    let (_, text) = http(addr, "GET", "/metrics", None, None);
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

fn free_port() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], crate::bus::free_port()))
}

#[test]
fn a_failing_backend_acknowledges_nothing_and_retries() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("d.db");
    let admin = format!("Token {}", add_user(&db, "adm", "admin", None));
    let tok = add_user(&db, "m", "manager", None);
    let s = Server::start(&db, &[]);
    let flag = dir.path().join("ok");
    let applied = dir.path().join("applied");
    let cmd = flaky_script(
        dir.path(),
        &format!(
            "test -e {} || {{ echo firewall says no >&2; exit 1; }}\necho \"$1 $2 $3\" >> {}\n",
            flag.display(),
            applied.display()
        ),
    );
    let metrics = free_port();
    let m = ManagerProc::start(
        &s,
        &tok,
        "ex",
        &[
            "--backend",
            "exec",
            "--exec-block",
            &cmd,
            "--exec-unblock",
            "/bin/true {cidr}",
            "--metrics-listen",
            &metrics.to_string(),
        ],
        &dir.path().join("m.log"),
    );
    block(&s, &admin, "192.0.2.60", 600);
    eventually("the failure is logged", || {
        m.log().contains("firewall says no")
    });
    eventually("and counted", || {
        metric(metrics, "catchd_blocker_rule_failures_total") >= 1
    });
    assert!(metric(metrics, "catchd_blocker_last_failure_seconds") > 0);
    // Nothing acknowledged: the block is still in the ident's queue.
    std::thread::sleep(Duration::from_millis(500));
    let q = s.json("/bhr/api/queue/ex", &admin);
    assert_eq!(q.as_array().unwrap().len(), 1, "{q}");
    assert_eq!(s.json("/bhr/api/stats", &admin)["current"], 0);
    // The firewall recovers: the manager's back-off retries and acknowledges.
    std::fs::write(&flag, "").unwrap();
    eventually(&format!("retried\n{}", m.log()), || {
        s.json("/bhr/api/queue/ex", &admin) == serde_json::json!([])
    });
    let got = std::fs::read_to_string(&applied).unwrap();
    assert!(got.starts_with("192.0.2.60/32 "), "{got}");
    assert!(got.trim_end().ends_with(" enforce test"), "{got}");
    assert!(metric(metrics, "catchd_blocker_blocked_total") >= 1);
}

#[test]
fn a_hanging_backend_is_killed_and_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("d.db");
    let admin = format!("Token {}", add_user(&db, "adm", "admin", None));
    let tok = add_user(&db, "m", "manager", None);
    let s = Server::start(&db, &[]);
    let cmd = flaky_script(dir.path(), "sleep 60\n");
    let m = ManagerProc::start(
        &s,
        &tok,
        "hang",
        &[
            "--backend",
            "exec",
            "--exec-block",
            &cmd,
            "--exec-unblock",
            "/bin/true",
            "--command-timeout",
            "300ms",
        ],
        &dir.path().join("m.log"),
    );
    block(&s, &admin, "192.0.2.61", 600);
    eventually("the timeout is logged", || {
        m.log().contains("did not finish within")
    });
    assert_eq!(
        s.json("/bhr/api/queue/hang", &admin)
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(s.json("/bhr/api/stats", &admin)["current"], 0);
}

#[test]
fn a_server_outage_is_ridden_out() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("d.db");
    let admin = format!("Token {}", add_user(&db, "adm", "admin", None));
    let tok = add_user(&db, "m", "manager", None);
    let s = Server::start(&db, &[]);
    let addr = s.addr;
    let f = dir.path().join("h.allow");
    let m = ManagerProc::start(
        &s,
        &tok,
        "h",
        &[
            "--backend",
            "hosts-allow",
            "--hosts-allow",
            f.to_str().unwrap(),
        ],
        &dir.path().join("m.log"),
    );
    eventually("started", || m.log().contains("Reconciled"));
    s.kill();
    eventually("the outage is logged", || m.log().contains("retry_in"));
    // The same database on the same port: the manager carries on.
    let s = Server::start(&db, &["--listen", &addr.to_string()]);
    block(&s, &admin, "192.0.2.62", 600);
    eventually(&format!("applied after the outage\n{}", m.log()), || {
        std::fs::read_to_string(&f)
            .unwrap_or_default()
            .contains("192.0.2.62")
    });
}

#[test]
fn blockers_inside_catchd_run_apply_catch_and_release_drops() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("hosts.allow");
    let conf = format!(
        "[cnr]\nintervals = \"1h,2h\"\n\n[[blocker]]\nident = \"wrappers\"\nbackend = \"hosts-allow\"\n\
         hosts_allow = \"{}\"\nunblock_interval = \"1s\"\n",
        f.display()
    );
    let files = crate::daemon::Files::new(&conf);
    let d = Server::run(
        &files.db,
        &[
            "--config",
            files.conf.to_str().unwrap(),
            "--log-dir",
            files.logs.to_str().unwrap(),
        ],
    );
    let (st, b) = d.post(
        "/api/v1/cr/drop",
        &files.zeek,
        &serde_json::json!({"addr": "192.0.2.70", "location": "ssh scan"}),
    );
    assert_eq!(st, 200, "{b}");
    eventually("in hosts.allow", || {
        std::fs::read_to_string(&f)
            .unwrap_or_default()
            .contains("ALL: 192.0.2.70 : deny")
    });
    // The ident is catch-and-release's plugin: the drop is confirmed by it.
    let log = files.logs.join("netcontrol.log");
    eventually("confirmed by the blocker", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains("SUCCEEDED") && l.contains("wrappers"))
    });
    // The counter moves once the backend has applied the batch, a moment
    // after the file is written.
    eventually("counted", || {
        let (_, metrics) = d.request("GET", "/metrics", None, None);
        metrics
            .contains("catchd_blocker_blocked_total{ident=\"wrappers\",backend=\"hosts-allow\"} 1")
    });
    let (st, b) = d.post(
        "/api/v1/cr/unblock",
        &files.ops,
        &serde_json::json!({"addr": "192.0.2.70", "reason": "test"}),
    );
    assert_eq!(st, 200, "{b}");
    let why = format!(
        "removed\n{}\n{}",
        d.log(),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    eventually(&why, || {
        !std::fs::read_to_string(&f)
            .unwrap_or_default()
            .contains("192.0.2.70")
    });
}

#[test]
fn bad_manager_arguments_exit_2() {
    let o = catchd()
        .args([
            "manager",
            "--server",
            "127.0.0.1:8000",
            "--token",
            "x",
            "--ident",
            "a",
            "--backend",
            "stdout",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--server"));
    let o = catchd()
        .args([
            "manager",
            "--server",
            "http://127.0.0.1:1",
            "--token",
            "x",
            "--ident",
            "a",
            "--backend",
            "exec",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("exec_block"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let _ = Command::new("true").status();
}

/// A stand-in for a BHR server whose `list.csv` has a row that cannot be read: canned
/// answers over HTTP/1.1, one request per connection.
fn canned_bhr(list_csv: &'static str) -> std::net::SocketAddr {
    use std::io::{BufRead, BufReader, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { return };
            let mut r = BufReader::new(c.try_clone().unwrap());
            let mut first = String::new();
            let _ = r.read_line(&mut first);
            let mut len = 0usize;
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            let _ = std::io::Read::read_exact(&mut r, &mut body);
            let (ctype, text) = if first.contains("/bhr/list.csv") {
                ("text/csv", list_csv)
            } else if first.starts_with("POST") {
                ("application/json", "{\"status\": \"ok\"}")
            } else {
                ("application/json", "[]")
            };
            let _ = write!(
                c,
                "HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            );
        }
    });
    addr
}

#[test]
fn one_unreadable_list_row_does_not_stop_reconciling() {
    let dir = tempfile::tempdir().unwrap();
    let bhr = canned_bhr(
        "cidr,who,source,why,added,unblock_at\r\n\
         192.0.2.81/32,z,s,good,2026-11-21 13:51:53.360815+00:00,\r\n\
         banana,z,s,bad cidr,2026-11-21 13:51:53.360815+00:00,\r\n\
         192.0.2.82/32,z,s,bad end,2026-11-21 13:51:53.360815+00:00,someday\r\n\
         192.0.2.83/32,z,s,\"unterminated\r\n",
    );
    let f = dir.path().join("hosts.allow");
    std::fs::write(&f, "").unwrap();
    let metrics = free_port();
    let log = dir.path().join("m.log");
    let mut child = catchd()
        .args([
            "manager",
            "--server",
            &format!("http://{bhr}"),
            "--token",
            "t",
        ])
        .args([
            "--ident",
            "h",
            "--poll-timeout",
            "1s",
            "--unblock-interval",
            "1s",
        ])
        .args([
            "--backend",
            "hosts-allow",
            "--hosts-allow",
            f.to_str().unwrap(),
        ])
        .args(["--metrics-listen", &metrics.to_string()])
        .env("RUST_LOG", "catchd=info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    eventually("the readable row is put in place", || {
        std::fs::read_to_string(&f)
            .unwrap_or_default()
            .contains("ALL: 192.0.2.81 : deny")
    });
    eventually("the unreadable rows are counted", || {
        metric(metrics, "catchd_blocker_bad_rows_total") >= 3
    });
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("skipping a row"), "{text}");
    assert!(text.contains("banana"), "{text}");
    let held = std::fs::read_to_string(&f).unwrap();
    assert!(
        !held.contains("192.0.2.82") && !held.contains("192.0.2.83"),
        "{held}"
    );
}
