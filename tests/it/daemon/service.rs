//! `catchd run` as systemd runs it (dist/systemd/catchd.service): as an unprivileged
//! user with only the unit's ambient capability, the `sd_notify` protocol on a socket the
//! test listens on, and log lines for the journal.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use super::netns::Netns;
use super::{Files, cr_lines, wait_for};
use crate::serve::process::{Server, catchd};

/// The unprivileged user the tests run catchd as (the package makes `catchd`; any
/// non-root user shows the same).
const NOBODY: &str = "65534";

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// `setpriv` as the unit's `User=`/`AmbientCapabilities=` do it: another user, no
/// supplementary groups, and `caps` (e.g. `+net_raw`, or none) inheritable, ambient and
/// in the bounding set, nothing else.
fn setpriv(caps: &[&str]) -> Command {
    let mut set = String::from("-all");
    for c in caps {
        set.push(',');
        set.push_str(c);
    }
    let mut c = Command::new("setpriv");
    c.args([
        &format!("--reuid={NOBODY}"),
        &format!("--regid={NOBODY}"),
        "--clear-groups",
        &format!("--inh-caps={set}"),
        &format!("--ambient-caps={set}"),
        &format!("--bounding-set={set}"),
        "--",
        env!("CARGO_BIN_EXE_catchd"),
    ]);
    c
}

/// Gives the test's files to the unprivileged user.
fn chown_to_nobody(f: &Files) {
    let o = Command::new("chown")
        .args(["-R", &format!("{NOBODY}:{NOBODY}")])
        .arg(f.dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// A capability set of a process (`CapEff`, `CapAmb` …) from /proc.
fn cap_set(pid: u32, which: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{which}:")))
        .unwrap();
    u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
}

const CAP_NET_RAW: u64 = 1 << 13;

#[test]
fn runs_unprivileged_with_only_cap_net_raw_captures_and_reblocks() {
    if !is_root() {
        eprintln!("skipped: setpriv to another user needs root");
        return;
    }
    let ns = Netns::new("sp", 41);
    let f = Files::new("[cnr]\nsweep_interval = \"1s\"\n");
    chown_to_nobody(&f);
    let d = Server::launch_with(
        setpriv(&["+net_raw"]),
        "run",
        &f.db,
        &[
            "--config",
            f.conf.to_str().unwrap(),
            "--log-dir",
            f.logs.to_str().unwrap(),
            "-i",
            &ns.root_if,
            "--intervals",
            "1s,30s",
        ],
    );
    // Exactly the unit's privileges: user 65534, CAP_NET_RAW and nothing else.
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.contains(NOBODY)),
        "{status}"
    );
    assert_eq!(cap_set(d.pid(), "CapEff"), CAP_NET_RAW);
    assert_eq!(cap_set(d.pid(), "CapAmb"), CAP_NET_RAW);

    // Dropped for 1 s, released, then seen on the capture: re-blocked one step up.
    let (status, info) = d.post(
        "/api/v1/cr/drop",
        &f.ops,
        &json!({"addr": ns.addr, "location": "setpriv test"}),
    );
    assert_eq!(status, 200, "{info}\n{}", d.log());
    wait_for(10, "UNBLOCK", || cr_lines(&f.logs, "UNBLOCK").pop());
    ns.send_udp(3);
    let seen = wait_for(10, "SEEN_AGAIN", || cr_lines(&f.logs, "SEEN_AGAIN").pop());
    assert_eq!(seen[2], ns.addr);
    assert_eq!(seen[4], "30.000000", "re-blocked one step up: {seen:?}");
    // The store and logs it wrote belong to the user.
    assert_eq!(
        std::fs::metadata(f.logs.join("netcontrol_catch_release.log"))
            .unwrap()
            .uid(),
        65534
    );
    assert!(d.terminate().success());
}

#[test]
fn without_cap_net_raw_it_fails_at_start_naming_the_capability() {
    if !is_root() {
        eprintln!("skipped: setpriv to another user needs root");
        return;
    }
    let ns = Netns::new("sq", 42);
    let f = Files::new("");
    chown_to_nobody(&f);
    let out = setpriv(&[])
        .args(["run", "--listen", "127.0.0.1:0", "--db"])
        .arg(&f.db)
        .args(["--log-dir", f.logs.to_str().unwrap(), "-i", &ns.root_if])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("missing CAP_NET_RAW to capture on {}", ns.root_if)),
        "{err}"
    );
    assert!(err.contains("AmbientCapabilities=CAP_NET_RAW"), "{err}");
    // Nothing was made before it stopped.
    assert!(!f.logs.exists(), "no logs for a daemon that did not start");
}

#[test]
fn a_blocker_needs_cap_net_admin_in_the_ambient_set() {
    if !is_root() {
        eprintln!("skipped: setpriv to another user needs root");
        return;
    }
    let f = Files::new("[[blocker]]\nident = \"fw\"\nbackend = \"nftables\"\n");
    chown_to_nobody(&f);
    let out = setpriv(&["+net_raw"])
        .args(["run", "--listen", "127.0.0.1:0", "--config"])
        .arg(&f.conf)
        .arg("--db")
        .arg(&f.db)
        .args(["--log-dir", f.logs.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("missing CAP_NET_ADMIN in its ambient set (the commands it runs need it) for [[blocker]] fw (nftables)"),
        "{err}"
    );
}

/// A notification socket the test listens on, as systemd's.
struct NotifySocket {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    sock: UnixDatagram,
}

impl NotifySocket {
    fn new() -> NotifySocket {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let sock = UnixDatagram::bind(&path).unwrap();
        NotifySocket {
            _dir: dir,
            path,
            sock,
        }
    }

    /// The next message within `secs`, if any.
    fn next(&self, secs: u64) -> Option<String> {
        self.sock
            .set_read_timeout(Some(Duration::from_secs(secs)))
            .unwrap();
        let mut buf = [0u8; 4096];
        let n = self.sock.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// The next message that is not a watchdog ping.
    fn next_state(&self, secs: u64) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            match self.next(secs) {
                Some(m) if m == "WATCHDOG=1" => {}
                other => return other,
            }
        }
        None
    }
}

/// A loopback port nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn sd_notify_ready_after_the_listener_then_watchdog_reload_and_stopping() {
    let f = Files::new("");
    let notify = NotifySocket::new();
    let port = free_port();
    let mut child = catchd()
        .args(["run", "--listen", &format!("127.0.0.1:{port}"), "--config"])
        .arg(&f.conf)
        .arg("--db")
        .arg(&f.db)
        .args(["--log-dir", f.logs.to_str().unwrap()])
        .env("NOTIFY_SOCKET", &notify.path)
        // systemd's WatchdogSec=1s; no WATCHDOG_PID: it is this process's.
        .env("WATCHDOG_USEC", "1000000")
        .env_remove("WATCHDOG_PID")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    // The first message is READY=1 (watchdog pings start only once it runs), and by then
    // the API accepts connections.
    let first = notify.next(60).expect("READY=1 within a minute");
    assert!(first.starts_with("READY=1\nSTATUS="), "{first:?}");
    assert!(
        first.contains(&format!("API on http://127.0.0.1:{port}/")),
        "{first:?}"
    );
    std::net::TcpStream::connect(("127.0.0.1", port))
        .expect("the listener accepts connections once READY=1 is sent");

    // WATCHDOG=1 at half the watchdog timeout: every 500 ms, so several within 3 s.
    let start = Instant::now();
    let mut pings = 0;
    while start.elapsed() < Duration::from_secs(3) {
        if notify.next(1).as_deref() == Some("WATCHDOG=1") {
            pings += 1;
        }
    }
    assert!(pings >= 3, "{pings} watchdog pings in 3 s at a 1 s timeout");

    // systemctl reload: RELOADING=1 (with the monotonic time), then READY=1.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let reloading = notify.next_state(10).expect("RELOADING=1");
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading:?}"
    );
    let ready = notify.next_state(10).expect("READY=1 after the reload");
    assert!(ready.starts_with("READY=1"), "{ready:?}");

    // systemctl stop: STOPPING=1, then a clean exit.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let stopping = notify.next_state(10).expect("STOPPING=1");
    assert!(stopping.starts_with("STOPPING=1"), "{stopping:?}");
    assert!(child.wait().unwrap().success());
}

#[test]
fn log_lines_for_the_journal_carry_syslog_priorities_and_no_time() {
    let f = Files::new("");
    // stderr is a pipe whose device and inode the child is told, as systemd does for the
    // journal's stream.
    let (reader, writer) = std::io::pipe().unwrap();
    let meta = {
        use std::os::fd::AsRawFd;
        std::fs::metadata(format!("/proc/self/fd/{}", writer.as_raw_fd())).unwrap()
    };
    let mut child = catchd()
        .args(["run", "--listen", "127.0.0.1:0", "--config"])
        .arg(&f.conf)
        .arg("--db")
        .arg(&f.db)
        .args(["--log-dir", f.logs.to_str().unwrap()])
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .env("RUST_LOG", "catchd=info")
        .stdout(Stdio::null())
        .stderr(writer)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(reader).lines();
    let running = lines
        .by_ref()
        .map(Result::unwrap)
        .find(|l| l.contains("catchd running"))
        .expect("the start-up line");
    assert!(
        running.starts_with("<6>catchd running: BHR API on http://127.0.0.1:"),
        "info at priority 6, no level word, no time: {running:?}"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    assert!(child.wait().unwrap().success());
    assert!(
        rest.iter().all(|l| l.starts_with('<')),
        "every line has its priority: {rest:?}"
    );
}

/// The same daemon with stderr on a terminal or a file keeps its usual lines.
#[test]
fn without_the_journal_lines_keep_their_level_word() {
    let f = Files::new("");
    let d = f.start(&[]);
    let log = d.log();
    assert!(
        log.lines()
            .any(|l| l.contains("INFO") && l.contains("catchd running")),
        "{log}"
    );
    assert!(!log.contains("<6>"), "{log}");
    assert!(d.terminate().success());
}
