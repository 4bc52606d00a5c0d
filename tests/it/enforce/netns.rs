//! Real blockers in network namespaces: `catchd serve` and `catchd manager` run inside a
//! "guard" namespace whose firewall the manager changes; a "client" namespace connects to
//! the guard over a veth pair (IPv4 and IPv6). The root namespace's firewall and routes are
//! never touched; dropping the value deletes both namespaces.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::eventually;
use crate::serve::process::add_user;

fn ip(args: &[&str]) -> std::process::Output {
    Command::new("ip").args(args).output().expect("iproute2")
}

#[track_caller]
fn must(args: &[&str]) {
    let o = ip(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success(),
        "ip {} failed: {}{}",
        args.join(" "),
        err.trim(),
        crate::daemon::netns::permission_hint(&err)
    );
}

/// Two namespaces joined by a veth pair: the client `10.205.N.1` / `fd00:cd:N::1`, the
/// guard `10.205.N.2` / `fd00:cd:N::2`.
pub struct Pair {
    pub client: String,
    pub guard: String,
    pub net: u8,
    children: Vec<Child>,
}

impl Pair {
    pub fn new(tag: &str, net: u8) -> Pair {
        let id = std::process::id() % 100_000;
        let client = format!("cdc-{tag}-{id}");
        let guard = format!("cdg-{tag}-{id}");
        for n in [&client, &guard] {
            let _ = ip(&["netns", "del", n]);
            must(&["netns", "add", n]);
        }
        let p = Pair {
            client,
            guard,
            net,
            children: Vec::new(),
        };
        let (vc, vg) = (format!("vc{tag}{id}"), format!("vg{tag}{id}"));
        must(&["link", "add", &vc, "type", "veth", "peer", "name", &vg]);
        must(&["link", "set", &vc, "netns", &p.client]);
        must(&["link", "set", &vg, "netns", &p.guard]);
        for (ns, dev, host) in [(&p.client, &vc, 1), (&p.guard, &vg, 2)] {
            must(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("10.205.{net}.{host}/24"),
                "dev",
                dev,
            ]);
            must(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("fd00:cd:{net}::{host}/64"),
                "dev",
                dev,
                "nodad",
            ]);
            must(&["-n", ns, "link", "set", "lo", "up"]);
            must(&["-n", ns, "link", "set", dev, "up"]);
        }
        p
    }

    pub fn client_v4(&self) -> String {
        format!("10.205.{}.1", self.net)
    }

    pub fn client_v6(&self) -> String {
        format!("fd00:cd:{}::1", self.net)
    }

    /// Runs a command inside the guard namespace, in the background.
    pub fn spawn_in_guard(&mut self, argv: &[&str], log: &Path) -> u32 {
        let f = std::fs::File::create(log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.guard])
            .args(argv)
            .env("RUST_LOG", "catchd=info")
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap();
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// Stops a background command with SIGKILL.
    pub fn kill(&mut self, pid: u32) {
        if let Some(i) = self.children.iter().position(|c| c.id() == pid) {
            let mut c = self.children.remove(i);
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs a command inside the guard namespace and returns its stdout.
    pub fn in_guard(&self, argv: &[&str]) -> (bool, String) {
        let o = Command::new("ip")
            .args(["netns", "exec", &self.guard])
            .args(argv)
            .output()
            .unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
        )
    }

    /// Whether a TCP connection from the client to the guard's `port` succeeds (1 s).
    pub fn connects(&self, v6: bool, port: u16) -> bool {
        let host = if v6 {
            format!("fd00:cd:{}::2", self.net)
        } else {
            format!("10.205.{}.2", self.net)
        };
        let script = format!(
            "import socket,sys\ntry:\n    socket.create_connection(('{host}', {port}), timeout=1).close()\n\
             except OSError:\n    sys.exit(1)\n"
        );
        Command::new("ip")
            .args(["netns", "exec", &self.client, "python3", "-c", &script])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    }

    /// An HTTP request to the guard's catchd on its loopback port; (status, body).
    pub fn api(
        &self,
        port: u16,
        method: &str,
        path: &str,
        token: &str,
        form: &str,
    ) -> (u16, String) {
        let script = format!(
            r#"import urllib.request, urllib.error, sys
data = {data}
req = urllib.request.Request('http://127.0.0.1:{port}{path}', data=data, method='{method}')
req.add_header('Authorization', 'Token {token}')
if data is not None:
    req.add_header('Content-Type', 'application/x-www-form-urlencoded')
try:
    r = urllib.request.urlopen(req, timeout=10)
    print(r.status); print(r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code); print(e.read().decode())
"#,
            data = if form.is_empty() {
                "None".to_string()
            } else {
                format!("{form:?}.encode()")
            }
        );
        let (_, out) = self.in_guard(&["python3", "-c", &script]);
        let (status, body) = out.split_once('\n').unwrap_or((&out, ""));
        (status.trim().parse().unwrap_or(0), body.to_string())
    }

    /// Waits for catchd's API in the guard namespace.
    pub fn wait_api(&self, port: u16, token: &str) {
        let t = Instant::now();
        while self.api(port, "GET", "/bhr/api/stats", token, "").0 != 200 {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "catchd did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = ip(&["netns", "del", &self.client]);
        let _ = ip(&["netns", "del", &self.guard]);
    }
}

/// A guard running `catchd serve` on port 8000 (reachable from the client too) with an
/// admin and a manager token.
pub struct Guard {
    pub pair: Pair,
    pub dir: tempfile::TempDir,
    pub admin: String,
    pub manager: String,
}

pub const PORT: u16 = 8000;

impl Guard {
    pub fn new(tag: &str, net: u8) -> Guard {
        let mut pair = Pair::new(tag, net);
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("d.db");
        let admin = add_user(&db, "adm", "admin", None);
        let manager = add_user(&db, "fw", "manager", None);
        let exe = env!("CARGO_BIN_EXE_catchd");
        pair.spawn_in_guard(
            &[
                exe,
                "serve",
                "--listen",
                "[::]:8000",
                "--db",
                db.to_str().unwrap(),
            ],
            &dir.path().join("serve.log"),
        );
        pair.wait_api(PORT, &admin);
        Guard {
            pair,
            dir,
            admin,
            manager,
        }
    }

    /// Starts `catchd manager` in the guard with `backend` and extra flags; returns its pid.
    pub fn manager(&mut self, backend: &str, extra: &[&str], log: &str) -> u32 {
        let exe = env!("CARGO_BIN_EXE_catchd");
        let mut argv = vec![
            exe,
            "manager",
            "--server",
            "http://127.0.0.1:8000",
            "--token",
            &self.manager,
            "--ident",
            "fw",
            "--backend",
            backend,
            "--poll-timeout",
            "2s",
            "--unblock-interval",
            "1s",
        ];
        argv.extend_from_slice(extra);
        let log = self.dir.path().join(log);
        let argv: Vec<String> = argv.iter().map(|s| (*s).to_string()).collect();
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        self.pair.spawn_in_guard(&argv, &log)
    }

    pub fn block(&self, cidr: &str, duration: u32) {
        let form = format!(
            "cidr={}&source=test&why=netns+test&duration={duration}",
            cidr.replace(':', "%3A")
        );
        let (s, b) = self
            .pair
            .api(PORT, "POST", "/bhr/api/block", &self.admin, &form);
        assert_eq!(s, 201, "{b}");
    }

    pub fn unblock(&self, cidr: &str) {
        let form = format!(
            "cidr={}&why=done",
            cidr.replace(':', "%3A").replace('/', "%2F")
        );
        let (s, b) = self
            .pair
            .api(PORT, "POST", "/bhr/api/unblock_now", &self.admin, &form);
        assert_eq!(s, 200, "{b}");
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }
}

/// Block the client's addresses through the API, see connections fail, unblock, see them
/// work again.
fn full_cycle(backend: &str, net: u8) {
    let mut g = Guard::new(&backend[..3], net);
    assert!(g.pair.connects(false, PORT) && g.pair.connects(true, PORT));
    g.manager(backend, &[], "m.log");
    let (v4, v6) = (g.pair.client_v4(), g.pair.client_v6());
    g.block(&v4, 600);
    g.block(&v6, 600);
    eventually(
        &format!("{backend} blocks IPv4\n{}", g.log("m.log")),
        || !g.pair.connects(false, PORT),
    );
    eventually(
        &format!("{backend} blocks IPv6\n{}", g.log("m.log")),
        || !g.pair.connects(true, PORT),
    );
    // Acknowledged: the ident's queue is empty.
    let (_, q) = g.pair.api(PORT, "GET", "/bhr/api/queue/fw", &g.manager, "");
    assert_eq!(q.trim(), "[]");
    g.unblock(&format!("{v4}/32"));
    g.unblock(&format!("{v6}/128"));
    eventually(&format!("{backend} unblocks\n{}", g.log("m.log")), || {
        g.pair.connects(false, PORT) && g.pair.connects(true, PORT)
    });
    let (_, q) = g
        .pair
        .api(PORT, "GET", "/bhr/api/unblock_queue/fw", &g.manager, "");
    assert_eq!(q.trim(), "[]", "unblocks acknowledged");
}

#[test]
fn nftables_blocks_and_unblocks_for_real() {
    full_cycle("nftables", 1);
}

#[test]
fn iptables_blocks_and_unblocks_for_real() {
    full_cycle("iptables", 2);
}

#[test]
fn ipset_blocks_and_unblocks_for_real() {
    full_cycle("ipset", 3);
}

#[test]
fn route_blocks_and_unblocks_for_real() {
    full_cycle("route", 4);
}

#[test]
fn nftables_elements_carry_the_remaining_time() {
    let mut g = Guard::new("nto", 5);
    g.manager("nftables", &[], "m.log");
    g.block("198.51.100.0/24", 3600);
    g.block(&g.pair.client_v4(), 120);
    eventually("elements in the sets", || {
        let (_, out) = g.pair.in_guard(&["nft", "list", "table", "inet", "catchd"]);
        out.contains("198.51.100.0/24 timeout")
            && out.contains(&format!("{} timeout", g.pair.client_v4()))
    });
    let (_, out) = g
        .pair
        .in_guard(&["nft", "-j", "list", "set", "inet", "catchd", "h4"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let elem = &v["nftables"][1]["set"]["elem"][0]["elem"];
    let t = elem["timeout"].as_u64().unwrap();
    assert!((110..=120).contains(&t), "timeout {t}: {out}");
}

#[test]
fn reconcile_fixes_hand_edits_and_what_happened_while_down() {
    let mut g = Guard::new("rec", 6);
    let pid = g.manager("iptables", &[], "m1.log");
    g.block("192.0.2.10", 600); // stays expected; deleted by hand while the manager is down
    g.block("192.0.2.11", 3); // expires while the manager is down
    let rules = |g: &Guard| g.pair.in_guard(&["iptables", "-S", "CATCHD"]).1;
    eventually("both rules in place", || {
        let r = rules(&g);
        r.contains("192.0.2.10/32") && r.contains("192.0.2.11/32")
    });
    g.pair.kill(pid);
    let (ok, out) = g.pair.in_guard(&[
        "iptables",
        "-D",
        "CATCHD",
        "-s",
        "192.0.2.10/32",
        "-j",
        "DROP",
    ]);
    assert!(ok, "{out}");
    let (ok, out) = g.pair.in_guard(&[
        "iptables",
        "-A",
        "CATCHD",
        "-s",
        "203.0.113.99/32",
        "-j",
        "DROP",
    ]);
    assert!(ok, "{out}");
    std::thread::sleep(Duration::from_secs(4));
    g.manager("iptables", &[], "m2.log");
    eventually("reconciled", || {
        let r = rules(&g);
        r.contains("192.0.2.10/32") && !r.contains("192.0.2.11/32") && !r.contains("203.0.113.99")
    });
    // The rules change before the manager logs what it did.
    eventually("the reconcile logged", || {
        g.log("m2.log").contains("Reconciled")
    });
    // The expired block's entry is closed too.
    eventually("unblock queue drained", || {
        g.pair
            .api(PORT, "GET", "/bhr/api/unblock_queue/fw", &g.manager, "")
            .1
            .trim()
            == "[]"
    });
}

#[test]
fn dry_run_prints_and_changes_nothing() {
    let mut g = Guard::new("dry", 7);
    g.manager("nftables", &["--dry-run"], "m.log");
    g.block(&g.pair.client_v4(), 600);
    eventually("the batch is printed", || {
        g.log("m.log").contains("add element inet catchd h4")
    });
    let log = g.log("m.log");
    assert!(log.contains("would run: nft -f -"), "{log}");
    let (ok, _) = g.pair.in_guard(&["nft", "list", "table", "inet", "catchd"]);
    assert!(!ok, "a dry run created the table");
    assert!(g.pair.connects(false, PORT));
}

#[test]
fn nftables_keeps_overlapping_networks_apart() {
    let mut g = Guard::new("nov", 8);
    g.manager("nftables", &[], "m.log");
    let n4 = |g: &Guard| {
        g.pair
            .in_guard(&["nft", "list", "set", "inet", "catchd", "n4"])
            .1
    };
    g.block("198.51.100.0/24", 600);
    eventually("the /24", || n4(&g).contains("198.51.100.0/24"));
    // A /23 around it: the kernel refuses overlapping intervals, so the /23 replaces it.
    g.block("198.51.100.0/23", 600);
    eventually(&format!("the /23 alone\n{}", g.log("m.log")), || {
        let s = n4(&g);
        s.contains("198.51.100.0/23") && !s.contains("198.51.100.0/24")
    });
    // When the /23 goes, the /24 (still expected) comes back.
    g.unblock("198.51.100.0/23");
    eventually(&format!("the /24 again\n{}", g.log("m.log")), || {
        let s = n4(&g);
        s.contains("198.51.100.0/24") && !s.contains("/23")
    });
    assert!(!g.log("m.log").contains("WARN"), "{}", g.log("m.log"));
}
