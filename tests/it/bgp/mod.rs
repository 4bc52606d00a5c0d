//! BGP black-holing against real routing daemons (ExaBGP, BIRD, FRR) in network
//! namespaces.
//!
//! The topology ([`Border`]): a border router namespace (BIRD or FRR) between an attacker
//! namespace and a server namespace, and a link from the router to the root namespace,
//! where ExaBGP and catchd run (so that catchd's API is on the tests' loopback). The
//! router forwards between attacker and server, takes black-hole routes from ExaBGP
//! (iBGP, AS 65001, one IPv4 and one IPv6 session) when they carry the BLACKHOLE
//! community, and installs them in its kernel as blackhole routes; `rp_filter` is loose,
//! so traffic *from* a black-holed source is dropped too.

mod exabgp;
mod inside;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn ip(args: &[&str]) -> std::process::Output {
    Command::new("ip").args(args).output().expect("running ip")
}

#[track_caller]
fn must(args: &[&str]) {
    let o = ip(args);
    assert!(
        o.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Runs `argv` in namespace `ns`, returning its output.
pub fn in_ns(ns: &str, argv: &[&str]) -> std::process::Output {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .args(argv)
        .output()
        .expect("ip netns exec")
}

/// A process killed (SIGTERM, then SIGKILL) when dropped, with its output collected.
pub struct Daemon {
    child: Child,
    log: Arc<Mutex<String>>,
    name: &'static str,
}

impl Daemon {
    pub fn spawn(name: &'static str, mut cmd: Command) -> Daemon {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let log = Arc::new(Mutex::new(String::new()));
        for r in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let sink = log.clone();
            std::thread::spawn(move || {
                for l in BufReader::new(r).lines().map_while(Result::ok) {
                    let mut s = sink.lock().unwrap();
                    s.push_str(&l);
                    s.push('\n');
                }
            });
        }
        Daemon { child, log, name }
    }

    pub fn log(&self) -> String {
        format!("--- {} ---\n{}", self.name, self.log.lock().unwrap())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, up to 10 s, then SIGKILL.
    pub fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Which routing daemon is the border router.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Router {
    Bird,
    Frr,
}

/// The namespaces, links and addresses of one test.
pub struct Border {
    pub rtr: String,
    pub att: String,
    pub srv: String,
    /// The root end of the router link (ExaBGP's side).
    root_if: String,
    pub dir: tempfile::TempDir,
    n: u8,
    router: Option<Vec<Daemon>>,
    kind: Router,
    servers: Vec<Daemon>,
}

impl Border {
    /// Builds the namespaces for test number `n` (each test its own, so they run in
    /// parallel).
    pub fn new(tag: &str, n: u8, kind: Router) -> Border {
        let id = std::process::id() % 100_000;
        let name = |role: &str| format!("cb-{tag}{role}-{id}");
        let b = Border {
            rtr: name("r"),
            att: name("a"),
            srv: name("s"),
            root_if: format!("cbg{tag}{id}"),
            dir: tempfile::tempdir().unwrap(),
            n,
            router: None,
            kind,
            servers: Vec::new(),
        };
        assert!(b.root_if.len() <= 15);
        for ns in [&b.rtr, &b.att, &b.srv] {
            let _ = ip(&["netns", "del", ns]);
            must(&["netns", "add", ns]);
            must(&["-n", ns, "link", "set", "lo", "up"]);
        }
        // root <-> rtr (10.213.n.0/24, fd13:213:n::/64)
        let r_in = format!("cbx{tag}{id}");
        must(&[
            "link", "add", &b.root_if, "type", "veth", "peer", "name", &r_in,
        ]);
        must(&["link", "set", &r_in, "netns", &b.rtr]);
        b.addr(
            "",
            &b.root_if,
            &format!("10.213.{n}.2/24"),
            &format!("fd13:213:{n}::2/64"),
        );
        b.addr(
            &b.rtr,
            &r_in,
            &format!("10.213.{n}.1/24"),
            &format!("fd13:213:{n}::1/64"),
        );
        // rtr <-> att (10.214.n.0/24) and rtr <-> srv (10.215.n.0/24)
        for (ns, net) in [(&b.att, 214), (&b.srv, 215)] {
            let (a, z) = (format!("cbv{net}"), format!("cbw{net}"));
            must(&[
                "-n", &b.rtr, "link", "add", &a, "type", "veth", "peer", "name", &z,
            ]);
            must(&["-n", &b.rtr, "link", "set", &z, "netns", ns]);
            b.addr(
                &b.rtr,
                &a,
                &format!("10.{net}.{n}.1/24"),
                &format!("fd13:{net}:{n}::1/64"),
            );
            b.addr(
                ns,
                &z,
                &format!("10.{net}.{n}.2/24"),
                &format!("fd13:{net}:{n}::2/64"),
            );
            must(&[
                "-n",
                ns,
                "route",
                "add",
                "default",
                "via",
                &format!("10.{net}.{n}.1"),
            ]);
            must(&[
                "-n",
                ns,
                "-6",
                "route",
                "add",
                "default",
                "via",
                &format!("fd13:{net}:{n}::1"),
            ]);
        }
        for (k, v) in [
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv6.conf.all.forwarding", "1"),
            // Loose uRPF: a packet whose source has only a black-hole route is dropped.
            ("net.ipv4.conf.all.rp_filter", "2"),
            ("net.ipv4.conf.default.rp_filter", "2"),
        ] {
            let o = in_ns(&b.rtr, &["sysctl", "-qw", &format!("{k}={v}")]);
            assert!(
                o.status.success(),
                "sysctl {k}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        b
    }

    fn addr(&self, ns: &str, dev: &str, v4: &str, v6: &str) {
        let pre: Vec<&str> = if ns.is_empty() {
            vec![]
        } else {
            vec!["-n", ns]
        };
        let run = |rest: &[&str]| {
            let mut a = pre.clone();
            a.extend_from_slice(rest);
            must(&a);
        };
        run(&["addr", "add", v4, "dev", dev]);
        run(&["-6", "addr", "add", v6, "dev", dev, "nodad"]);
        run(&["link", "set", dev, "up"]);
    }

    /// The attacker's addresses (IPv4, IPv6).
    pub fn attacker(&self) -> (String, String) {
        (
            format!("10.214.{}.2", self.n),
            format!("fd13:214:{}::2", self.n),
        )
    }

    /// ExaBGP's side of the router link, and the router's (IPv4, IPv6).
    #[allow(clippy::type_complexity)]
    pub fn link(&self) -> ((String, String), (String, String)) {
        let n = self.n;
        (
            (format!("10.213.{n}.2"), format!("fd13:213:{n}::2")),
            (format!("10.213.{n}.1"), format!("fd13:213:{n}::1")),
        )
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts the border router.
    pub fn start_router(&mut self) {
        let daemons = match self.kind {
            Router::Bird => self.start_bird(),
            Router::Frr => self.start_frr(),
        };
        self.router = Some(daemons);
    }

    /// Stops the border router (its BGP sessions drop, and with them its routes).
    pub fn stop_router(&mut self) {
        self.router = None;
    }

    fn start_bird(&self) -> Vec<Daemon> {
        let conf = self.path("bird.conf");
        std::fs::write(&conf, bird_conf(self)).unwrap();
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.rtr, "bird", "-f", "-c"])
            .arg(&conf)
            .arg("-s")
            .arg(self.path("bird.ctl"));
        let d = Daemon::spawn("bird", c);
        wait_for(10, "bird's control socket", || {
            self.path("bird.ctl").exists()
        });
        vec![d]
    }

    fn start_frr(&self) -> Vec<Daemon> {
        // FRR's daemons run as user frr (root is not in its vty group).
        let dir = self.path("frr");
        std::fs::create_dir_all(&dir).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(self.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let (statics, bgp) = frr_conf(self);
        std::fs::write(dir.join("zebra.conf"), "hostname rtr\n").unwrap();
        std::fs::write(dir.join("staticd.conf"), statics).unwrap();
        std::fs::write(dir.join("bgpd.conf"), bgp).unwrap();
        let o = Command::new("chown")
            .args(["-R", "frr:frr"])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "chown frr: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let daemon = |d: &'static str| {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &self.rtr, &format!("/usr/lib/frr/{d}")])
                .arg("-f")
                .arg(dir.join(format!("{d}.conf")))
                .arg("-i")
                .arg(dir.join(format!("{d}.pid")))
                .arg("-z")
                .arg(dir.join("zserv.api"))
                .arg("--vty_socket")
                .arg(&dir)
                .args(["-u", "frr", "-g", "frr", "--log", "stdout"]);
            Daemon::spawn(d, c)
        };
        let zebra = daemon("zebra");
        wait_for(10, "zebra's socket", || dir.join("zserv.api").exists());
        let staticd = daemon("staticd");
        let bgpd = daemon("bgpd");
        wait_for(10, "bgpd's vty socket", || dir.join("bgpd.vty").exists());
        // Dropped in this order: bgpd first.
        vec![bgpd, staticd, zebra]
    }

    /// The router's BGP table (its routes with their communities), as its CLI shows it.
    pub fn bgp_table(&self) -> String {
        let out = match self.kind {
            Router::Bird => Command::new("birdc")
                .arg("-s")
                .arg(self.path("bird.ctl"))
                .args(["show", "route", "all"])
                .output()
                .unwrap(),
            Router::Frr => {
                let mut text = String::new();
                for af in ["ipv4", "ipv6"] {
                    let o = in_ns(
                        &self.rtr,
                        &[
                            "vtysh",
                            "--vty_socket",
                            self.path("frr").to_str().unwrap(),
                            "-c",
                            &format!("show bgp {af} unicast"),
                        ],
                    );
                    text.push_str(&String::from_utf8_lossy(&o.stdout));
                }
                return text;
            }
        };
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// What the router's BGP table shows for `addr` (with its communities), or an empty
    /// text when it has no route for it.
    pub fn bgp_route(&self, addr: &str) -> String {
        let v6 = addr.contains(':');
        let out = match self.kind {
            Router::Bird => Command::new("birdc")
                .arg("-s")
                .arg(self.path("bird.ctl"))
                .args(["show", "route", "all", "for", addr])
                .output()
                .unwrap(),
            Router::Frr => in_ns(
                &self.rtr,
                &[
                    "vtysh",
                    "--vty_socket",
                    self.path("frr").to_str().unwrap(),
                    "-c",
                    &format!(
                        "show bgp {} unicast {addr}/{}",
                        if v6 { "ipv6" } else { "ipv4" },
                        if v6 { 128 } else { 32 }
                    ),
                ],
            ),
        };
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let has_route = match self.kind {
            Router::Bird => text.contains(addr) && text.contains("BGP"),
            Router::Frr => !text.contains("Network not in table") && text.contains("Paths:"),
        };
        if has_route { text } else { String::new() }
    }

    /// Whether the router's table shows `addr` with the BLACKHOLE community.
    pub fn has_blackhole_community(&self, addr: &str) -> bool {
        let t = self.bgp_route(addr);
        match self.kind {
            Router::Bird => t.contains("(65535,666)"),
            // FRR names the well-known community.
            Router::Frr => t.contains("Community: blackhole"),
        }
    }

    /// The router kernel's blackhole routes (IPv4 and IPv6) that came from BGP, as
    /// addresses (host routes) or networks.
    pub fn blackholes(&self) -> Vec<String> {
        let mut out = Vec::new();
        for fam in ["-4", "-6"] {
            let o = ip(&["-n", &self.rtr, fam, "route", "show", "type", "blackhole"]);
            // FRR's discard next hops are static blackholes of their own.
            for l in String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| !l.contains("proto static"))
            {
                if let Some(dst) = l.split_whitespace().nth(1) {
                    out.push(
                        dst.trim_end_matches("/32")
                            .trim_end_matches("/128")
                            .to_string(),
                    );
                }
            }
        }
        out
    }

    /// Starts a TCP server in the server namespace on port 8080 (IPv4 and IPv6), which
    /// answers `ok` to each connection.
    pub fn start_server(&mut self) {
        let script = "import socket, threading\n\
            def serve(fam, addr):\n\
            \x20   s = socket.socket(fam, socket.SOCK_STREAM)\n\
            \x20   s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
            \x20   if fam == socket.AF_INET6:\n\
            \x20       s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)\n\
            \x20   s.bind((addr, 8080)); s.listen(64)\n\
            \x20   while True:\n\
            \x20       c, _ = s.accept(); c.sendall(b'ok'); c.close()\n\
            def udp(fam, addr):\n\
            \x20   s = socket.socket(fam, socket.SOCK_DGRAM)\n\
            \x20   if fam == socket.AF_INET6:\n\
            \x20       s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)\n\
            \x20   s.bind((addr, 8081))\n\
            \x20   while True:\n\
            \x20       d, a = s.recvfrom(100); print('udp', d.decode(errors='replace'), flush=True)\n\
            threading.Thread(target=serve, args=(socket.AF_INET6, '::'), daemon=True).start()\n\
            threading.Thread(target=udp, args=(socket.AF_INET6, '::'), daemon=True).start()\n\
            threading.Thread(target=udp, args=(socket.AF_INET, '0.0.0.0'), daemon=True).start()\n\
            print('listening', flush=True)\n\
            serve(socket.AF_INET, '0.0.0.0')\n";
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.srv, "python3", "-c", script]);
        let d = Daemon::spawn("server", c);
        wait_for(10, "the test server", || d.log().contains("listening"));
        self.servers.push(d);
    }

    /// Whether the attacker can open a TCP connection to the server through the router
    /// (and read its `ok`) within 2 s.
    pub fn attacker_connects(&self, v6: bool) -> bool {
        let dst = if v6 {
            format!("fd13:215:{}::2", self.n)
        } else {
            format!("10.215.{}.2", self.n)
        };
        let script = format!(
            "import socket, sys\n\
             try:\n\
             \x20   s = socket.create_connection(('{dst}', 8080), timeout=2)\n\
             \x20   sys.exit(0 if s.recv(2) == b'ok' else 1)\n\
             except OSError:\n\
             \x20   sys.exit(1)\n"
        );
        in_ns(&self.att, &["python3", "-c", &script])
            .status
            .success()
    }

    /// Sends one UDP datagram saying `tag` from the attacker to the server, and tells
    /// whether it arrived within 2 s (traffic *from* the attacker, which only uRPF stops).
    pub fn attacker_datagram_arrives(&self, v6: bool, tag: &str) -> bool {
        let dst = if v6 {
            format!("fd13:215:{}::2", self.n)
        } else {
            format!("10.215.{}.2", self.n)
        };
        let fam = if v6 { "AF_INET6" } else { "AF_INET" };
        let script = format!(
            "import socket\ns = socket.socket(socket.{fam}, socket.SOCK_DGRAM)\n\
             s.sendto(b'{tag}', ('{dst}', 8081))\n"
        );
        in_ns(&self.att, &["python3", "-c", &script]);
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if self
                .servers
                .iter()
                .any(|d| d.log().contains(&format!("udp {tag}")))
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Runs the README's uRPF commands for a Linux router in the router's namespace.
    pub fn loose_urpf(&self) {
        let readme = std::fs::read_to_string(crate::support::root().join("README.md")).unwrap();
        let block = readme
            .split("reverse-path filtering in loose mode")
            .nth(1)
            .and_then(|s| s.split("```sh\n").nth(1))
            .and_then(|s| s.split("```").next())
            .expect("the README's uRPF commands");
        for line in block.lines().filter(|l| !l.trim().is_empty()) {
            let o = in_ns(&self.rtr, &["sh", "-c", line]);
            assert!(
                o.status.success(),
                "{line}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }

    /// What the router daemons logged.
    pub fn router_log(&self) -> String {
        self.router
            .iter()
            .flatten()
            .map(Daemon::log)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Border {
    fn drop(&mut self) {
        self.router = None;
        self.servers.clear();
        for ns in [&self.rtr, &self.att, &self.srv] {
            let _ = ip(&["netns", "del", ns]);
        }
        let _ = ip(&["link", "del", &self.root_if]);
    }
}

/// The README's example that starts with `first_line`, with its documentation addresses
/// replaced by the test's: ExaBGP's end of the router link (`198.51.100.10`,
/// `2001:db8:1::10`) and the router's (`198.51.100.1`, `2001:db8:1::1`).
fn readme_example(first_line: &str, b: &Border) -> String {
    let readme = std::fs::read_to_string(crate::support::root().join("README.md")).unwrap();
    let example = readme
        .split(&format!("```\n{first_line}"))
        .nth(1)
        .and_then(|s| s.split("```").next())
        .unwrap_or_else(|| panic!("the README's example `{first_line}`"));
    let ((x4, x6), (r4, r6)) = b.link();
    // The longer addresses first: 198.51.100.1 is a prefix of 198.51.100.10.
    format!("{first_line}{example}")
        .replace("198.51.100.10", "X4")
        .replace("2001:db8:1::10", "X6")
        .replace("198.51.100.1", &r4)
        .replace("2001:db8:1::1", &r6)
        .replace("X4", &x4)
        .replace("X6", &x6)
}

/// The router's BIRD configuration: the README's, with the test's addresses.
pub fn bird_conf(b: &Border) -> String {
    readme_example("# bird.conf on the border router", b)
}

/// The router's FRR configuration (the README's, with the test's addresses), split as
/// the daemons read it: (staticd's static routes, bgpd's rest).
pub fn frr_conf(b: &Border) -> (String, String) {
    let all = readme_example("! frr.conf on the border router", b);
    let (mut statics, mut bgp) = (
        String::from("hostname rtr\n"),
        String::from("hostname rtr\n"),
    );
    for l in all.lines() {
        if l.starts_with("ip route ") || l.starts_with("ipv6 route ") {
            statics.push_str(l);
            statics.push('\n');
        } else {
            bgp.push_str(l);
            bgp.push('\n');
        }
    }
    (statics, bgp)
}

/// Polls `f` every 50 ms for up to `secs`.
#[track_caller]
pub fn wait_for(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// ExaBGP in the root namespace, peering with the router over IPv4 and IPv6 (the
/// README's configuration with the test's addresses), running `process` as its API
/// process, with `env`.
pub fn start_exabgp(b: &Border, process: &str, env: &[(&str, String)]) -> Daemon {
    let conf = b.path("exabgp.conf");
    std::fs::write(&conf, exabgp_conf(b, process)).unwrap();
    let mut c = Command::new("exabgp");
    c.arg(&conf)
        .env("exabgp.daemon.user", "root")
        .env("exabgp.log.destination", "stdout")
        .env("exabgp.api.cli", "false")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    Daemon::spawn("exabgp", c)
}

/// The README's ExaBGP configuration with the test's addresses and `process` run.
pub fn exabgp_conf(b: &Border, process: &str) -> String {
    readme_example("# exabgp.conf\n", b)
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("run ") {
                format!("    run {process};")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The catchd binary's path, for ExaBGP's `run`.
pub fn catchd_bin() -> String {
    env!("CARGO_BIN_EXE_catchd").to_string()
}

/// Whether ExaBGP and the routers are installed (`./x test` installs them).
pub fn tools() -> bool {
    for t in ["exabgp", "bird", "birdc", "vtysh"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .output()
            .map(|o| !o.status.success())
            .unwrap_or(true)
        {
            panic!("{t} is not installed (./x test installs exabgp, bird2 and frr)");
        }
    }
    Path::new("/usr/lib/frr/bgpd").exists() || panic!("FRR's bgpd is not installed")
}
