//! `catchd scan` end to end: a generated auth.log with known attackers.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;

use serde_json::{Value, json};

use crate::daemon::Files;
use crate::serve::process::catchd;

/// Attackers and what the bundled sshd jail (5 failures within 10 minutes, exactly)
/// must make of them.
const BLOCKED_FAST: &str = "203.0.113.1"; // 5 failures in 2 minutes
const FOUR_ONLY: &str = "203.0.113.2"; // 4 failures in 5 minutes
const EDGE: &str = "203.0.113.3"; // 5 failures 150 s apart: exactly 600 s
const SLOW: &str = "203.0.113.4"; // 6 failures 180 s apart: never 5 in 600 s
const V6: &str = "2001:db8::66"; // 5 "Invalid user" lines
const ALLOWED: &str = "198.51.100.7"; // 20 failures, allowed
const DENIED: &str = "192.0.2.99"; // 1 failure, denied

fn line(t: u32, msg: &str) -> String {
    format!(
        "Nov 20 {:02}:{:02}:{:02} gw {msg}",
        10 + t / 3600,
        t / 60 % 60,
        t % 60
    )
}

fn failed(t: u32, ip: &str) -> String {
    line(
        t,
        &format!(
            "sshd[{}]: Failed password for root from {ip} port 4242 ssh2",
            1000 + t
        ),
    )
}

/// The log, in time order, with noise between the failures.
fn auth_log(dir: &Path) -> std::path::PathBuf {
    let mut ev: Vec<(u32, String)> = Vec::new();
    for i in 0..5 {
        ev.push((i * 30, failed(i * 30, BLOCKED_FAST)));
        ev.push((100 + i * 150, failed(100 + i * 150, EDGE)));
        ev.push((
            200 + i * 20,
            line(
                200 + i * 20,
                &format!(
                    "sshd[{}]: Invalid user admin{i} from {V6} port 22",
                    2000 + i
                ),
            ),
        ));
    }
    for i in 0..4 {
        ev.push((10 + i * 75, failed(10 + i * 75, FOUR_ONLY)));
    }
    for i in 0..6 {
        ev.push((20 + i * 180, failed(20 + i * 180, SLOW)));
    }
    for i in 0..20 {
        ev.push((5 + i * 10, failed(5 + i * 10, ALLOWED)));
    }
    ev.push((400, failed(400, DENIED)));
    for t in (0..1200).step_by(7) {
        ev.push((
            t,
            line(
                t,
                "sshd[9]: Accepted publickey for deploy from 192.0.2.10 port 5 ssh2",
            ),
        ));
        ev.push((
            t,
            line(
                t,
                "CRON[7]: pam_unix(cron:session): session opened for user root",
            ),
        ));
    }
    ev.sort_by_key(|(t, _)| *t);
    let p = dir.join("auth.log");
    let text: String = ev.into_iter().map(|(_, l)| l + "\n").collect();
    std::fs::write(&p, text).unwrap();
    // Dates without a year are read against the file's modification time: pin it to
    // 2026-11-21, so "Nov 20" is always 2026.
    std::fs::File::options()
        .write(true)
        .open(&p)
        .unwrap()
        .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_219_200))
        .unwrap();
    p
}

fn scan(args: &[&str]) -> Output {
    catchd()
        .arg("scan")
        .args(args)
        .env_remove("BHR_TOKEN")
        .env_remove("BHR_HOST")
        // The log's classic timestamps are local time.
        .env("TZ", "UTC")
        .output()
        .unwrap()
}

fn addrs_json(o: &Output) -> BTreeSet<String> {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["addr"].as_str().unwrap().to_string()
        })
        .collect()
}

fn set(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn exactly_the_attackers_over_the_threshold_are_blocked() {
    let dir = tempfile::tempdir().unwrap();
    let log = auth_log(dir.path());
    let l = log.to_str().unwrap();
    let o = scan(&[
        "--dry-run",
        "--json",
        "--allow",
        ALLOWED,
        "--deny",
        DENIED,
        l,
    ]);
    assert_eq!(
        addrs_json(&o),
        set(&[BLOCKED_FAST, EDGE, V6, DENIED]),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    // The JSON fields.
    let first: Value = serde_json::from_str(
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .find(|x| x.contains(BLOCKED_FAST))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(first["rule"], "sshd-failed");
    assert_eq!(first["count"], 5);
    assert_eq!(first["jail"], "sshd");
    assert!(
        first["first"].as_str().unwrap().ends_with("10:00:00Z"),
        "{first}"
    );
    assert!(
        first["last"].as_str().unwrap().ends_with("10:02:00Z"),
        "{first}"
    );
    let denied: Value = serde_json::from_str(
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .find(|x| x.contains(DENIED))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        (denied["count"].clone(), denied["denied"].clone()),
        (json!(1), json!(true))
    );
    // Without the allow list the allowed address is blocked too, so the list matters.
    assert!(addrs_json(&scan(&["--dry-run", "--json", l])).contains(ALLOWED));

    // Plain output: address, rule, count first.
    let o = scan(&["--dry-run", "--allow", "198.51.100.0/24", l]);
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    let row = text.lines().find(|x| x.starts_with(BLOCKED_FAST)).unwrap();
    let cols: Vec<&str> = row.split(' ').collect();
    assert_eq!(&cols[..3], [BLOCKED_FAST, "sshd-failed", "5"]);
    assert!(!text.contains(ALLOWED));
    let summary = String::from_utf8_lossy(&o.stderr);
    assert!(summary.contains("would be blocked"), "{summary}");

    // Thresholds from the command line.
    let o = scan(&[
        "--dry-run",
        "--json",
        "--maxretry",
        "4",
        "--allow",
        ALLOWED,
        l,
    ]);
    assert!(addrs_json(&o).contains(FOUR_ONLY));
    let o = scan(&[
        "--dry-run",
        "--json",
        "--findtime",
        "20m",
        "--allow",
        ALLOWED,
        l,
    ]);
    assert!(addrs_json(&o).contains(SLOW));
    // fail2ban's rescaled count: 6 failures 180 s apart still do not reach 5.
    let o = scan(&[
        "--dry-run",
        "--json",
        "--mode",
        "fail2ban",
        "--allow",
        ALLOWED,
        l,
    ]);
    assert!(!addrs_json(&o).contains(SLOW));
    // BlockHosts: more than 7 failures, whatever the spacing.
    let o = scan(&["--dry-run", "--json", "--mode", "blockhosts", l]);
    assert_eq!(addrs_json(&o), set(&[ALLOWED]));
    // Another jail sees nothing here.
    let o = scan(&["--dry-run", "--json", "--jail", "dovecot", l]);
    assert!(addrs_json(&o).is_empty());
    // Failures before --since do not count: only 3 of the fast attacker's are after
    // 10:01:00, and the others' windows are unchanged.
    let o = scan(&[
        "--dry-run",
        "--json",
        "--since",
        "2026-11-20T10:01:00Z",
        "--allow",
        ALLOWED,
        l,
    ]);
    assert_eq!(addrs_json(&o), set(&[EDGE, V6]));
}

#[test]
fn bad_arguments_exit_2_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let log = auth_log(dir.path());
    let l = log.to_str().unwrap();
    for (args, want) in [
        (vec!["--dry-run", "--jail", "ssh", l], "no jail named `ssh`"),
        (vec!["--dry-run", "--allow", "10.0.0.0/8(", l], "--allow"),
        (vec!["--dry-run", "--mode", "leaky", l], "--mode"),
        (vec!["--dry-run", "--maxretry", "0", l], "--maxretry"),
        (
            vec!["--dry-run", "/nonexistent/auth.log"],
            "/nonexistent/auth.log",
        ),
        (vec![l], "--token"),
    ] {
        let o = scan(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let rules = dir.path().join("r.toml");
    std::fs::write(
        &rules,
        "[[rule]]\nname = \"x\"\npattern = \"no host here\"\n",
    )
    .unwrap();
    let o = scan(&["--dry-run", "--rules", rules.to_str().unwrap(), l]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("rule[0] (x).pattern"));
    let o = scan(&["--check"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("test lines pass"));
}

/// Runs `catchd scan ARGS` with `input` on standard input.
fn scan_stdin(args: &[&str], input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = catchd()
        .arg("scan")
        .args(args)
        .env_remove("BHR_TOKEN")
        .env_remove("BHR_HOST")
        .env("TZ", "UTC")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).unwrap();
    drop(stdin);
    child.wait_with_output().unwrap()
}

#[test]
fn hostile_lines_are_scanned_past() {
    // A 26-byte line with a multi-byte character where TAI64N's digits would be: this
    // once sliced a str inside the character and panicked.
    let mut input = b"@aaaaaaaaaaaaaaa\xe2\x82\xacaaaaaa\n".to_vec();
    // Invalid UTF-8, NULs, a lone @, control characters.
    input.extend_from_slice(b"\xff\xfe\x00garbage\n@\n\x1b[31m\r\n");
    // A 20 kB line, cut as it is read.
    input.extend_from_slice(&vec![b'q'; 20_000]);
    input.push(b'\n');
    // And then five real failures: scanning carried on.
    for i in 0..5 {
        input.extend_from_slice(failed(i, "203.0.113.77").as_bytes());
        input.push(b'\n');
    }
    let o = scan_stdin(&["--dry-run", "--json", "-"], &input);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(addrs_json(&o), set(&["203.0.113.77"]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("10 lines"), "{err}");
    assert!(
        err.contains("1 lines cut"),
        "the 20 kB line is counted: {err}"
    );
    // The same from a file (the follower cuts it).
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("hostile.log");
    std::fs::write(&p, &input).unwrap();
    let o = scan(&["--dry-run", "--json", p.to_str().unwrap()]);
    assert_eq!(addrs_json(&o), set(&["203.0.113.77"]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("1 lines cut"), "{err}");
}

#[test]
fn print_rules_needs_no_file() {
    let o = scan(&["--print-rules"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("[[jail]]") && text.contains("[[rule]]"));
    assert_eq!(text, catchd::scan::rules::BUNDLED);
}

#[test]
fn scan_blocks_through_a_running_catchd() {
    let dir = tempfile::tempdir().unwrap();
    let log = auth_log(dir.path());
    let f = Files::new("");
    let d = f.start(&[]);
    let token = f.zeek.trim_start_matches("Token ").to_string();
    // A rule file whose jail makes fixed-length BHR blocks.
    let rules = dir.path().join("r.toml");
    std::fs::write(
        &rules,
        "[[jail]]\nname = \"ssh\"\naction = \"block\"\nduration = \"2h\"\n\
         [[rule]]\nname = \"pw\"\njail = \"ssh\"\n\
         pattern = '{LOG_PREFIX{sshd}} Failed password for .* from {HOST_IP} port'\n",
    )
    .unwrap();
    let o = catchd()
        .args([
            "scan",
            "--server",
            &d.url(),
            "--token",
            &token,
            "--allow",
            ALLOWED,
        ])
        .arg(&log)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Catch-and-release by default, located by rule.
    let info = d.json(&format!("/api/v1/cr/{BLOCKED_FAST}"), &f.ops);
    assert_eq!(info["location"], "scan:sshd-failed");
    assert_eq!(info["current_interval"], 0);
    let info = d.json(&format!("/api/v1/cr/{FOUR_ONLY}"), &f.ops);
    assert_eq!(info["watch_until"], 0.0);
    // A `block` jail: a BHR block with source scan:<rule>.
    let o = catchd()
        .args(["scan", "--server", &d.url(), "--token", &token, "--rules"])
        .arg(&rules)
        .args(["--allow", ALLOWED, "--deny", DENIED])
        .arg(&log)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let q = d.json(&format!("/bhr/api/query/{DENIED}"), &f.ops);
    assert_eq!(q[0]["source"], "scan:pw");
    assert!(
        q[0]["why"].as_str().unwrap().contains("1 failures (pw)"),
        "{q}"
    );
    // The registry's rules apply: a whitelisted address is refused, said so, and the
    // exit status says some blocks failed.
    let admin = format!(
        "Token {}",
        crate::serve::process::add_user(&f.db, "adm", "admin", None)
    );
    let (st, b) = d.post(
        "/bhr/api/whitelist/",
        &admin,
        &json!({"cidr": "203.0.113.0/24", "why": "partners"}),
    );
    assert_eq!(st, 201, "{b}");
    let o = catchd()
        .args([
            "scan",
            "--server",
            &d.url(),
            "--token",
            &token,
            "--maxretry",
            "4",
        ])
        .args(["--allow", ALLOWED])
        .arg(&log)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("{FOUR_ONLY}: not blocked")), "{err}");
    assert_eq!(
        d.json(&format!("/api/v1/cr/{FOUR_ONLY}"), &f.ops)["watch_until"],
        0.0
    );
    assert!(d.terminate().success());
}

fn now_line(msg: &str) -> String {
    format!(
        "{} gw {msg}\n",
        chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6f+00:00")
    )
}

fn append(p: &Path, lines: &[String]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
        .unwrap();
    for l in lines {
        f.write_all(l.as_bytes()).unwrap();
    }
}

fn failures(ip: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            now_line(&format!(
                "sshd[{}]: Failed password for root from {ip} port 22 ssh2",
                100 + i
            ))
        })
        .collect()
}

fn scan_metric(d: &crate::serve::process::Server, name: &str) -> u64 {
    let (_, m) = d.request("GET", "/metrics", None, None);
    m.lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn catchd_run_follows_logs_across_restarts_and_rotation() {
    let logdir = tempfile::tempdir().unwrap();
    let auth = logdir.path().join("auth.log");
    append(
        &auth,
        &[now_line("sshd[1]: Server listening on 0.0.0.0 port 22.")],
    );
    let f = Files::new(&format!(
        "[scan]\nfiles = [\"{}\"]\npoll_interval = \"50ms\"\n",
        auth.display()
    ));
    let watched = |d: &crate::serve::process::Server, ip: &str| {
        d.json(&format!("/api/v1/cr/{ip}"), &f.ops)["watch_until"]
            .as_f64()
            .unwrap()
            > 0.0
    };
    let wait = |what: &str, mut c: Box<dyn FnMut() -> bool + '_>| {
        let t = std::time::Instant::now();
        while !c() {
            assert!(t.elapsed().as_secs() < 10, "timed out: {what}");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    let d = f.start(&[]);
    // Started at the end of the file (as tail -F): the old line is not read.
    append(&auth, &failures("203.0.113.31", 5));
    wait("A blocked", Box::new(|| watched(&d, "203.0.113.31")));
    let info = d.json("/api/v1/cr/203.0.113.31", &f.ops);
    assert_eq!(info["location"], "scan:sshd-failed");
    assert_eq!(scan_metric(&d, "catchd_scan_lines_total"), 5);
    // Two failures of B, then a restart, with three more written while down.
    append(&auth, &failures("203.0.113.32", 2));
    wait(
        "read",
        Box::new(|| scan_metric(&d, "catchd_scan_lines_total") == 7),
    );
    assert!(d.terminate().success());
    append(&auth, &failures("203.0.113.32", 3));
    let d = f.start(&[]);
    // Only the three new lines are read: nothing twice, nothing missed.
    wait(
        "resumed",
        Box::new(|| scan_metric(&d, "catchd_scan_lines_total") == 3),
    );
    assert!(
        !watched(&d, "203.0.113.32"),
        "counts start over after a restart"
    );
    append(&auth, &failures("203.0.113.32", 2));
    wait("B blocked", Box::new(|| watched(&d, "203.0.113.32")));
    // Rotation: the old file's last lines and the new file's are both read.
    append(&auth, &failures("203.0.113.33", 2));
    std::fs::rename(&auth, logdir.path().join("auth.log.1")).unwrap();
    append(&auth, &failures("203.0.113.33", 3));
    wait(
        "C blocked across the rotation",
        Box::new(|| watched(&d, "203.0.113.33")),
    );
    assert!(scan_metric(&d, "catchd_scan_rotations_total") >= 1);
    assert!(d.terminate().success());
}

/// The line that once killed the scan thread of `catchd run` for good: it is read past,
/// the scanner stays up, and later failures still block.
#[test]
fn catchd_run_scans_past_a_hostile_line() {
    let logdir = tempfile::tempdir().unwrap();
    let auth = logdir.path().join("auth.log");
    append(&auth, &[now_line("sshd[1]: Server listening.")]);
    let f = Files::new(&format!(
        "[scan]\nfiles = [\"{}\"]\npoll_interval = \"50ms\"\n",
        auth.display()
    ));
    let d = f.start(&[]);
    {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&auth)
            .unwrap();
        file.write_all(b"@aaaaaaaaaaaaaaa\xe2\x82\xacaaaaaa\n\xff\xfe\x00\n")
            .unwrap();
    }
    append(&auth, &failures("203.0.113.41", 5));
    let t = std::time::Instant::now();
    while d.json("/api/v1/cr/203.0.113.41", &f.ops)["watch_until"]
        .as_f64()
        .unwrap()
        == 0.0
    {
        assert!(t.elapsed().as_secs() < 10, "not blocked:\n{}", d.log());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(scan_metric(&d, "catchd_scan_lines_total"), 7);
    assert_eq!(scan_metric(&d, "catchd_scan_up"), 1);
    assert_eq!(scan_metric(&d, "catchd_scan_line_errors_total"), 0);
    assert!(d.terminate().success());
}
