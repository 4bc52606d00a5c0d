//! The real `bhr-client==1.6` Python package (library, BlockManager and CLI) against a
//! live `catchd serve`.
//!
//! The venv is made once under `target/tmp/bhr-client-venv` (python3 -m venv, then pip from
//! PyPI); `CATCHD_PYTHON` names another interpreter.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::process::*;

/// The venv's `bin/` directory, created on first use.
fn venv() -> PathBuf {
    crate::support::venv("bhr-client-venv", &["bhr-client[cli]==1.6"])
}

/// Runs the `bhr-client` CLI and returns its stdout lines (it must succeed).
#[track_caller]
fn cli(
    bin: &Path,
    server: &Server,
    auth: &[&str],
    args: &[&str],
    stdin: Option<&str>,
) -> Vec<String> {
    use std::io::Write as _;
    let mut c = Command::new(bin.join("bhr-client"));
    c.arg("--host").arg(server.url()).args(auth).args(args);
    c.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "bhr-client {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn the_bhr_client_package_works_against_catchd() {
    let bin = venv();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("py.db");
    let blocker = add_user(&db, "blocker", "blocker", None);
    let manager = add_user(&db, "manager", "manager", None);
    add_user(&db, "admin", "admin", Some("adminpw"));
    let server = Server::start(&db, &[]);

    // The library and a BlockManager cycle, checked in Python.
    let out = Command::new(bin.join("python"))
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/bhr_client_drive.py"
        ))
        .env("BHR_HOST", server.url())
        .env("BLOCKER_TOKEN", &blocker)
        .env("MANAGER_TOKEN", &manager)
        .env("ADMIN_PASSWORD", "adminpw")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}\n--- server log ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    assert!(stdout.contains("checks passed"), "{stdout}");

    // The CLI, as a person with a password (-u/-p) and as a blocker with a token (-t).
    let person = ["-u", "admin", "-p", "adminpw"];
    let token = ["-t", blocker.as_str()];
    let lines = cli(
        &bin,
        &server,
        &person,
        &["block", "-w", "cli test", "-d", "2h", "192.0.2.20"],
        None,
    );
    assert_eq!(lines.len(), 1);
    let f: Vec<&str> = lines[0].split(' ').collect();
    assert_eq!(
        &f[..5],
        ["192.0.2.20", "cli", "admin", "cli", "test"],
        "{lines:?}"
    );
    let (added, until) = (f[5], f[6]);
    let secs = |s: &str| {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_micros()
    };
    assert_eq!(secs(until) - secs(added), 7_200_000_000);

    let lines = cli(&bin, &server, &token, &["query", "192.0.2.20"], None);
    assert_eq!(
        lines,
        [format!("192.0.2.20/32 {added} {until} cli admin cli test")]
    );

    let lines = cli(&bin, &server, &token, &["list"], None);
    assert!(lines.contains(&"192.0.2.20/32".to_string()), "{lines:?}");
    assert!(lines.iter().all(|l| l.contains('/')), "{lines:?}");

    let lines = cli(&bin, &server, &token, &["stats"], None);
    assert_eq!(
        lines[0].split(": ").next(),
        Some("block_pending"),
        "{lines:?}"
    );
    assert!(lines.contains(&"source cli: 1".to_string()), "{lines:?}");
    assert!(
        lines.iter().any(|l| l.starts_with("expected: ")),
        "{lines:?}"
    );

    let lines = cli(
        &bin,
        &server,
        &person,
        &["unblock", "-w", "done", "192.0.2.20"],
        None,
    );
    assert_eq!(lines, ["{'status': 'ok'}"]);
    let lines = cli(&bin, &server, &token, &["list"], None);
    assert!(!lines.contains(&"192.0.2.20/32".to_string()));

    let lines = cli(
        &bin,
        &server,
        &token,
        &["batch", "-w", "from a file", "-s", "batchsrc", "-d", "1h"],
        Some("198.51.100.1\n198.51.100.2\n2001:db8::7\n"),
    );
    assert_eq!(lines.len(), 3, "{lines:?}");
    for (line, cidr) in lines
        .iter()
        .zip(["198.51.100.1", "198.51.100.2", "2001:db8::7"])
    {
        assert!(
            line.starts_with(&format!("{cidr} batchsrc blocker from a file ")),
            "{line}"
        );
    }
    let lines = cli(&bin, &server, &token, &["query", "198.51.100.0/24"], None);
    let mut cidrs: Vec<&str> = lines.iter().map(|l| l.split(' ').next().unwrap()).collect();
    cidrs.sort_unstable();
    // .9 is the block the Python script made during its long poll.
    assert_eq!(
        cidrs,
        ["198.51.100.1/32", "198.51.100.2/32", "198.51.100.9/32"]
    );

    assert!(server.terminate().success());
}
