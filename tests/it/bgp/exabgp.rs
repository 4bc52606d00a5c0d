//! `catchd manager --backend exabgp`: ExaBGP runs it as its process, against `catchd
//! serve`, with BIRD as the border router.

use std::time::Duration;

use serde_json::json;

use super::{Border, Daemon, Router, catchd_bin, start_exabgp, tools, wait_for};
use crate::serve::process::{Server, add_user};

struct Setup {
    b: Border,
    srv: Server,
    admin: String,
    token: String,
    _db_dir: tempfile::TempDir,
}

fn setup(tag: &str, n: u8, router: Router) -> Setup {
    tools();
    let mut b = Border::new(tag, n, router);
    b.start_router();
    b.start_server();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("d.db");
    let admin = format!("Token {}", add_user(&db, "adm", "admin", None));
    let token = add_user(&db, "bgp", "manager", None);
    let srv = Server::start(&db, &[]);
    Setup {
        b,
        srv,
        admin,
        token,
        _db_dir: dir,
    }
}

impl Setup {
    fn exabgp(&self, extra: &str) -> Daemon {
        start_exabgp(
            &self.b,
            &format!(
                "{} manager --backend exabgp --poll-timeout 2s --unblock-interval 1s{extra}",
                catchd_bin()
            ),
            &[
                ("BHR_HOST", self.srv.url()),
                ("BHR_TOKEN", self.token.clone()),
                ("BHR_IDENT", "bgp".into()),
                ("RUST_LOG", "catchd=info".into()),
            ],
        )
    }

    fn block(&self, cidr: &str) {
        let (st, b) = self.srv.post(
            "/bhr/api/block",
            &self.admin,
            &json!({"cidr": cidr, "source": "test", "why": "bgp test", "duration": 600}),
        );
        assert_eq!(st, 201, "{b}");
    }

    fn unblock(&self, cidr: &str) {
        let (st, b) = self.srv.post(
            "/bhr/api/unblock_now",
            &self.admin,
            &json!({"cidr": cidr, "why": "done"}),
        );
        assert_eq!(st, 200, "{b}");
    }

    /// Rows still waiting in the block queue of ident `bgp`.
    fn queued(&self) -> usize {
        let (_, body) = self.srv.request(
            "GET",
            "/bhr/api/queue/bgp?timeout=0",
            Some(&self.admin),
            None,
        );
        serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.as_array().map(Vec::len))
            .unwrap_or(usize::MAX)
    }
}

#[test]
fn a_block_is_announced_black_holed_and_withdrawn_ipv4_and_ipv6_with_bird() {
    announce_and_withdraw("m", 1, Router::Bird);
}

#[test]
fn the_same_with_frr() {
    announce_and_withdraw("f", 2, Router::Frr);
}

fn announce_and_withdraw(tag: &str, n: u8, router: Router) {
    let s = setup(tag, n, router);
    let ex = s.exabgp("");
    let (a4, a6) = s.b.attacker();
    // The sessions are up and the path works before anything is blocked.
    wait_for(30, "the attacker reaching the server", || {
        s.b.attacker_connects(false) && s.b.attacker_connects(true)
    });
    s.block(&a4);
    s.block(&a6);
    let shown = || {
        format!(
            "{}\n{}\nrouter table:\n{}\nblackholes: {:?}",
            ex.log(),
            s.b.router_log(),
            s.b.bgp_table(),
            s.b.blackholes()
        )
    };
    wait_for_or(
        30,
        "both black-hole routes in the router's kernel",
        &shown,
        || {
            let bh = s.b.blackholes();
            bh.contains(&a4) && bh.contains(&a6)
        },
    );
    assert!(s.b.has_blackhole_community(&a4), "{}", s.b.bgp_route(&a4));
    assert!(s.b.has_blackhole_community(&a6), "{}", s.b.bgp_route(&a6));
    assert!(!s.b.attacker_connects(false), "IPv4 still connects");
    assert!(!s.b.attacker_connects(true), "IPv6 still connects");
    // With loose uRPF (the README's commands), traffic from the attacker is dropped too.
    s.b.loose_urpf();
    assert!(!s.b.attacker_datagram_arrives(false, "v4-blocked"));
    assert!(!s.b.attacker_datagram_arrives(true, "v6-blocked"));
    // Acknowledged to BHR once ExaBGP said done.
    wait_for_or(10, "the queue acknowledged", &shown, || s.queued() == 0);

    s.unblock(&a4);
    s.unblock(&a6);
    wait_for_or(30, "the routes withdrawn", &shown, || {
        s.b.blackholes().is_empty()
    });
    assert!(s.b.bgp_route(&a4).is_empty());
    assert!(s.b.attacker_connects(false) && s.b.attacker_connects(true));
    assert!(s.b.attacker_datagram_arrives(false, "v4-free"));
    assert!(s.b.attacker_datagram_arrives(true, "v6-free"));
}

/// Like [`wait_for`], with what to show when it times out.
#[track_caller]
pub fn wait_for_or(secs: u64, what: &str, shown: &dyn Fn() -> String, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out: {what}\n{}",
            shown()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The pid of the `catchd manager` ExaBGP runs.
fn manager_pid(exabgp: &Daemon) -> Option<u32> {
    let out = std::process::Command::new("pgrep")
        .args(["-f", "manager --backend exabgp"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|l| l.trim().parse::<u32>().ok())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|st| st.rsplit(')').next().map(str::to_string))
                .and_then(|rest| rest.split_whitespace().nth(1).map(str::to_string))
                .is_some_and(|ppid| ppid == exabgp.pid().to_string())
        })
}

#[test]
fn restarts_of_exabgp_the_manager_and_the_session_lose_nothing_and_leave_nothing_stale() {
    let mut s = setup("r", 3, Router::Bird);
    let n = 3;
    let (a, b, c) = (
        format!("10.214.{n}.2"),
        format!("10.214.{n}.3"),
        format!("10.214.{n}.4"),
    );
    let mut ex = s.exabgp("");
    s.block(&a);
    s.block(&b);
    let has = |s: &Setup, want: &[&String], not: &[&String]| {
        let bh = s.b.blackholes();
        want.iter().all(|w| bh.contains(w)) && not.iter().all(|w| !bh.contains(w))
    };
    wait_for_or(30, "a and b black-holed", &|| ex.log(), || {
        has(&s, &[&a, &b], &[])
    });

    // 1. ExaBGP restarts (its session and routes go with it); meanwhile c is blocked and
    // b unblocked. The new ExaBGP starts a new manager, which announces what is expected.
    ex.stop();
    wait_for(30, "the routes gone with the session", || {
        s.b.blackholes().is_empty()
    });
    s.block(&c);
    s.unblock(&b);
    let mut ex = s.exabgp("");
    wait_for_or(30, "a and c again, b not", &|| ex.log(), || {
        has(&s, &[&a, &c], &[&b])
    });
    wait_for_or(10, "the queue acknowledged", &|| ex.log(), || {
        s.queued() == 0
    });

    // 2. The manager dies (ExaBGP starts it again); meanwhile a is unblocked.
    let pid = manager_pid(&ex).unwrap_or_else(|| panic!("no manager under ExaBGP\n{}", ex.log()));
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
    s.unblock(&a);
    wait_for_or(
        30,
        "a withdrawn by the new manager, c kept",
        &|| ex.log(),
        || has(&s, &[&c], &[&a]),
    );
    wait_for_or(30, "a new manager", &|| ex.log(), || {
        manager_pid(&ex).is_some_and(|p| p != pid)
    });

    // 3. The BGP session restarts (the router restarts): ExaBGP announces again what it
    // holds, and nothing else.
    s.b.stop_router();
    s.b.start_router();
    wait_for_or(
        60,
        "c again after the session restart",
        &|| format!("{}\n{}", ex.log(), s.b.router_log()),
        || has(&s, &[&c], &[&a, &b]),
    );
    ex.stop();
}

#[test]
fn a_refused_block_is_not_acknowledged_and_holds_up_no_other() {
    let s = setup("x", 4, Router::Bird);
    // The manager announces nothing wider than /24; the registry allows a /23.
    let ex = s.exabgp(" --minimum-prefixlen 24");
    let (a4, _) = s.b.attacker();
    s.block("10.214.4.0/23");
    s.block(&a4);
    wait_for_or(30, "the /32 black-holed", &|| ex.log(), || {
        s.b.blackholes().contains(&a4)
    });
    wait_for_or(
        10,
        "the /32 acknowledged, the /23 not",
        &|| {
            let (_, q) = s
                .srv
                .request("GET", "/bhr/api/queue/bgp?timeout=0", Some(&s.admin), None);
            format!("{}\nqueue: {q}", ex.log())
        },
        || s.queued() == 1,
    );
    assert!(!s.b.blackholes().iter().any(|r| r.starts_with("10.214.4.0")));
    assert!(ex.log().contains("wider than /24"), "{}", ex.log());
    // It stays refused.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(s.queued(), 1);
}
