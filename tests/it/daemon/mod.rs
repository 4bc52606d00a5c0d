//! `catchd run`, the daemon, as a process: live capture in a network namespace, restarts
//! after SIGKILL, graceful shutdown, configuration errors.

pub mod netns;

mod api;
mod config;
mod live;
mod metrics;
mod restart;
mod service;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::serve::process::{Server, add_user};

/// A daemon's files in a temporary directory (database, logs, configuration), with the
/// tokens (`Token …`) of a person (`ops`, role user), a blocker (`zeek`) and a block
/// manager (`bgp`).
pub struct Files {
    pub dir: tempfile::TempDir,
    pub db: PathBuf,
    pub logs: PathBuf,
    pub conf: PathBuf,
    pub ops: String,
    pub zeek: String,
    pub bgp: String,
}

impl Files {
    pub fn new(conf: &str) -> Files {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("d.db");
        let logs = dir.path().join("logs");
        let conf_path = dir.path().join("catchd.toml");
        std::fs::write(&conf_path, conf).unwrap();
        let token = |name: &str, role: &str| format!("Token {}", add_user(&db, name, role, None));
        Files {
            ops: token("ops", "user"),
            zeek: token("zeek", "blocker"),
            bgp: token("bgp", "manager"),
            dir,
            db,
            logs,
            conf: conf_path,
        }
    }

    /// `catchd run` with this configuration and log directory, and `extra` flags.
    pub fn start(&self, extra: &[&str]) -> Server {
        let mut args = vec![
            "--config",
            self.conf.to_str().unwrap(),
            "--log-dir",
            self.logs.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        Server::run(&self.db, &args)
    }
}

/// A `[bhr]` section that lets tests block loopback addresses (which catchd never blocks
/// by default) so that they can capture on `lo`; as the quick start's demo does.
pub const LOOPBACK_BLOCKABLE: &str =
    "[bhr]\nnever_block = [\"169.254.0.0/16\", \"fe80::/10\", \"224.0.0.0/4\", \"ff00::/8\"]\n";

/// Polls `f` every 50 ms until it returns `Some`, for at most `secs` seconds.
#[track_caller]
pub fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The data lines of a TSV log, split into fields.
pub fn log_lines(dir: &Path, name: &str) -> Vec<Vec<String>> {
    std::fs::read_to_string(dir.join(format!("{name}.log")))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

/// `netcontrol_catch_release.log` lines with this action (`SEEN_AGAIN` …).
pub fn cr_lines(dir: &Path, action: &str) -> Vec<Vec<String>> {
    let a = format!("NetControl::{action}");
    log_lines(dir, "netcontrol_catch_release")
        .into_iter()
        .filter(|f| f[3] == a)
        .collect()
}

/// Seconds as in a log's `ts` column.
pub fn secs(field: &str) -> f64 {
    field.parse().unwrap()
}
