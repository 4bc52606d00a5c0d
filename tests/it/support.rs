//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};

use catchd::cnr::{CatchReleaseRecord, DropRecord, Engine, NetControlRecord, Output};
use catchd::time::Time;
use catchd::zeeklog::{self, ZeekRecord};

/// A Python venv under `target/tmp/<name>` with `packages` from PyPI, made once (under a
/// file lock, so parallel tests share it); returns its `bin/` directory. `CATCHD_PYTHON`
/// names the interpreter (default `python3`).
pub fn venv(name: &str, packages: &[&str]) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let bin = dir.join("bin");
    let ready = dir.join(".catchd-ready");
    std::fs::create_dir_all(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let lock = std::fs::File::create(dir.with_extension("lock")).unwrap();
    lock.lock().unwrap();
    if !ready.exists() {
        let python = std::env::var("CATCHD_PYTHON").unwrap_or_else(|_| "python3".into());
        let _ = std::fs::remove_dir_all(&dir);
        let st = std::process::Command::new(&python)
            .args(["-m", "venv"])
            .arg(&dir)
            .status();
        assert!(
            st.is_ok_and(|s| s.success()),
            "cannot create a venv with {python} (on Debian: apt-get install python3-venv)"
        );
        let st = std::process::Command::new(bin.join("pip"))
            .args(["install", "-q", "--disable-pip-version-check"])
            .args(packages)
            .status()
            .unwrap();
        assert!(
            st.success(),
            "pip install {packages:?} failed (is PyPI reachable?)"
        );
        std::fs::write(&ready, "").unwrap();
    }
    bin
}

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A file under `fixtures/`.
pub fn fixture(rel: &str) -> PathBuf {
    root().join("fixtures").join(rel)
}

/// Reads a file to a string, naming it on failure.
#[track_caller]
pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// Parses a time, for readable test tables.
#[track_caller]
pub fn t(s: &str) -> Time {
    s.parse().unwrap()
}

/// Everything an engine produced, sorted by log.
#[derive(Default, Debug)]
pub struct Collected {
    pub cr: Vec<CatchReleaseRecord>,
    pub nc: Vec<NetControlRecord>,
    pub drops: Vec<DropRecord>,
    pub other: Vec<Output>,
}

impl Collected {
    /// Takes every pending output from the engine.
    pub fn take(&mut self, e: &mut Engine) {
        while let Some(o) = e.poll_output() {
            match o {
                Output::CatchRelease(r) => self.cr.push(r),
                Output::NetControl(r) => self.nc.push(r),
                Output::Drop(r) => self.drops.push(r),
                other => self.other.push(other),
            }
        }
    }
}

/// A whole TSV log as Zeek would write it, with btest's masked `#open`/`#close`.
pub fn tsv_log<R: ZeekRecord>(records: &[R]) -> String {
    let mut s = zeeklog::tsv_header(&R::SCHEMA, "XXXX");
    for r in records {
        s.push_str(&zeeklog::tsv_line(r));
        s.push('\n');
    }
    s.push_str("#close\tXXXX\n");
    canonify(&s)
}

/// Only the data lines of a TSV log (what `grep -v ^#` leaves).
pub fn tsv_lines<R: ZeekRecord>(records: &[R]) -> String {
    let mut s = String::new();
    for r in records {
        s.push_str(&zeeklog::tsv_line(r));
        s.push('\n');
    }
    canonify(&s)
}

/// btest's canonifiers: the `#open`/`#close` dates and the first timestamp of each line
/// are masked.
pub fn canonify(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if let Some(rest) = line
            .strip_prefix("#open")
            .or_else(|| line.strip_prefix("#close"))
        {
            let _ = rest;
            let key = if line.starts_with("#open") {
                "#open"
            } else {
                "#close"
            };
            out.push_str(key);
            out.push_str(" XXXX-XX-XX-XX-XX-XX\n");
            continue;
        }
        let first = line.split('\t').next().unwrap_or("");
        let is_ts = first.len() == 17
            && first.as_bytes()[10] == b'.'
            && first
                .bytes()
                .enumerate()
                .all(|(i, b)| i == 10 || b.is_ascii_digit());
        if is_ts {
            out.push_str("XXXXXXXXXX.XXXXXX");
            out.push_str(&line[17..]);
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// Compares two texts and prints both in full when they differ.
#[track_caller]
pub fn assert_text_eq(actual: &str, expected: &str) {
    if actual != expected {
        let mut diff = String::new();
        for (i, (a, e)) in actual.lines().zip(expected.lines()).enumerate() {
            if a != e {
                diff.push_str(&format!(
                    "line {}:\n  actual:   {a:?}\n  expected: {e:?}\n",
                    i + 1
                ));
            }
        }
        panic!(
            "texts differ ({} vs {} lines)\n{diff}\n--- actual ---\n{actual}\n--- expected ---\n{expected}",
            actual.lines().count(),
            expected.lines().count()
        );
    }
}
