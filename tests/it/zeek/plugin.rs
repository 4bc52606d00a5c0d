//! The NetControl plugin of `zeek-scripts/` in a real Zeek, against `catchd run` hosting
//! the bus proxy: the README's standalone example, as written (the package loaded as
//! `catchd` from `ZEEKPATH`), with drops that catchd blocks, times out, unblocks and
//! refuses.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use super::{Running, zeek};
use crate::bus::free_port;
use crate::daemon::Files;
use crate::serve::process::add_user;
use crate::support::root;

/// `netcontrol.log` lines (no `#` lines) as tab-separated fields.
fn netcontrol_lines(dir: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(dir.join("netcontrol.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

#[test]
fn the_readme_standalone_example_blocks_times_out_unblocks_and_refuses() {
    let Some(z) = zeek() else { return };
    let (xpub, xsub) = (
        format!("tcp://127.0.0.1:{}", free_port()),
        format!("tcp://127.0.0.1:{}", free_port()),
    );
    readme_example(
        z,
        "## Example: a standalone Zeek with catchd",
        &[
            "--bus",
            "--bus-proxy",
            "--bus-xpub",
            &xpub,
            "--bus-xsub",
            &xsub,
        ],
        &format!(
            "redef Cluster::Backend::ZeroMQ::connect_xpub_endpoint = \"{xsub}\";\n\
             redef Cluster::Backend::ZeroMQ::connect_xsub_endpoint = \"{xpub}\";\n"
        ),
        &[],
    );
}

/// The same through Zeek's WebSocket API: Zeek serves it (with a ZeroMQ proxy of its
/// own, on ports of the test's), and `catchd run --bus-websocket` joins it.
#[test]
fn the_readme_websocket_example_does_the_same_through_zeeks_websocket_api() {
    let Some(z) = zeek() else { return };
    let ws = free_port().to_string();
    let (xpub, xsub) = (
        format!("tcp://127.0.0.1:{}", free_port()),
        format!("tcp://127.0.0.1:{}", free_port()),
    );
    readme_example(
        z,
        "## Example: a standalone Zeek through its WebSocket API",
        &["--bus-websocket", &format!("ws://127.0.0.1:{ws}")],
        &format!(
            "redef Cluster::Backend::ZeroMQ::listen_xpub_endpoint = \"{xpub}\";\n\
             redef Cluster::Backend::ZeroMQ::listen_xsub_endpoint = \"{xsub}\";\n\
             redef Cluster::Backend::ZeroMQ::connect_xpub_endpoint = \"{xsub}\";\n\
             redef Cluster::Backend::ZeroMQ::connect_xsub_endpoint = \"{xpub}\";\n"
        ),
        &[("ZEEK_WEBSOCKET_LISTEN_PORT", &ws)],
    );
}

/// Runs the `zeek` block of the package README's `section` as written (plus `redefs` for
/// the test's ports and a few drops of its own) against `catchd run catchd_args`, and
/// checks what Zeek logs and catchd holds: a block, a timeout, an unblock in catchd, a
/// refusal.
fn readme_example(
    z: &super::Zeek,
    section: &str,
    catchd_args: &[&str],
    redefs: &str,
    zeek_env: &[(&str, &str)],
) {
    let f = Files::new("");
    let admin = format!("Token {}", add_user(&f.db, "admin", "admin", None));
    let m = f.start(catchd_args);
    let (status, body) = m.post(
        "/bhr/api/whitelist/",
        &admin,
        &json!({"cidr": "198.51.100.0/24", "why": "our servers"}),
    );
    assert_eq!(status, 201, "{body}");

    let work = tempfile::tempdir().unwrap();
    let scripts = work.path().join("site");
    std::fs::create_dir_all(&scripts).unwrap();
    std::os::unix::fs::symlink(root().join("zeek-scripts"), scripts.join("catchd")).unwrap();
    let readme = std::fs::read_to_string(root().join("zeek-scripts/README.md")).unwrap();
    let example = readme
        .split(section)
        .nth(1)
        .and_then(|s| s.split("```zeek\n").nth(1))
        .and_then(|s| s.split("```").next())
        .expect("the README's example");
    assert!(example.contains("NetControl::drop_address(192.0.2.66, 10min, \"example\")"));
    let local = format!(
        "{example}\n\
         {redefs}\
         redef exit_only_after_terminate = T;\n\
         event NetControl::init_done()\n\
         \t{{\n\
         \tNetControl::drop_address(192.0.2.67, 2sec, \"short\");\n\
         \tNetControl::drop_address(198.51.100.7, 10min, \"whitelisted\");\n\
         \t}}\n"
    );
    std::fs::write(work.path().join("local.zeek"), local).unwrap();
    let mut zeek_proc = Running(
        Command::new(&z.bin)
            .args(["-b", "local.zeek"])
            .current_dir(work.path())
            .env("ZEEKPATH", z.path_with(&scripts))
            .envs(zeek_env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting zeek"),
    );

    // catchd holds the block, made by Zeek's drop.
    let deadline = Instant::now() + Duration::from_secs(30);
    let block = loop {
        let q = m.json("/bhr/api/query/192.0.2.66", &f.ops);
        if let Some(b) = q.as_array().and_then(|a| a.first()).cloned() {
            break b;
        }
        assert!(
            Instant::now() < deadline,
            "no block from Zeek:\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(block["source"], "zeek", "{block}");
    assert_eq!(block["why"], "example", "{block}");
    // The short one ends in catchd after 2 s; the first is unblocked in catchd.
    std::thread::sleep(Duration::from_secs(3));
    let (status, body) = m.post(
        "/bhr/api/unblock_now",
        &f.ops,
        &json!({"cidr": "192.0.2.66", "why": "false positive"}),
    );
    assert!(status == 200 || status == 201, "{status} {body}");
    std::thread::sleep(Duration::from_secs(2));
    zeek_proc.stop();
    let mut stderr = String::new();
    if let Some(mut e) = zeek_proc.0.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
    }
    assert!(
        !stderr.contains("error") && !stderr.contains("warning"),
        "zeek complained:\n{stderr}"
    );

    let lines = netcontrol_lines(work.path());
    let has = |ip: &str, cmd: &str, state: &str| {
        lines.iter().any(|l| {
            l.len() > 13
                && l[8] == format!("{ip}/32")
                && l[3] == cmd
                && l[4] == format!("NetControl::{state}")
                && l.last().is_some_and(|p| p == "Catchd-catchd.netcontrol")
        })
    };
    let shown: Vec<String> = lines.iter().map(|l| l.join(" ")).collect();
    let shown = shown.join("\n");
    assert!(has("192.0.2.66", "ADD", "REQUESTED"), "{shown}");
    assert!(has("192.0.2.66", "ADD", "SUCCEEDED"), "{shown}");
    assert!(has("192.0.2.67", "ADD", "SUCCEEDED"), "{shown}");
    assert!(has("192.0.2.67", "EXPIRE", "TIMEOUT"), "{shown}");
    // Unblocked in catchd: Zeek's rule_removed, logged REMOVE SUCCEEDED with the reason.
    assert!(has("192.0.2.66", "REMOVE", "SUCCEEDED"), "{shown}");
    assert!(
        shown.contains("unblocked in catchd: false positive"),
        "{shown}"
    );
    // catchd refused it (whitelisted): Zeek's rule_error, logged as an ERROR line.
    assert!(
        lines.iter().any(|l| l.len() > 13
            && l[2] == "NetControl::ERROR"
            && l[8] == "198.51.100.7/32"
            && l[10].starts_with("whitelisted")),
        "{shown}"
    );
    assert!(m.terminate().success());
}
