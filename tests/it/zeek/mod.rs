//! catchd against the real Zeek.
//!
//! The tests here run a Zeek binary. They find it through `ZEEK` (a path to the binary),
//! else `zeek` on `PATH`, else `/opt/zeek/bin/zeek` (where `../shared/zeek/install.sh`, run
//! by `.ci/run`, unpacks Zeek 8.2.2). With none they print one line saying how to enable
//! them and pass, unless `CATCHD_REQUIRE_ZEEK` is set (CI sets it), which makes a missing
//! Zeek a failure.

mod cluster;
mod differential;
mod manager;
mod package;
mod plugin;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A Zeek binary and its version.
pub struct Zeek {
    pub bin: PathBuf,
    pub version: String,
}

fn find() -> Option<Zeek> {
    let candidates = std::env::var_os("ZEEK")
        .map(PathBuf::from)
        .into_iter()
        .chain(std::env::var_os("PATH").into_iter().flat_map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("zeek"))
                .collect::<Vec<_>>()
        }))
        .chain([PathBuf::from("/opt/zeek/bin/zeek")]);
    for bin in candidates {
        let Ok(out) = Command::new(&bin).arg("--version").output() else {
            continue;
        };
        if out.status.success() {
            let text = String::from_utf8_lossy(&out.stdout);
            let version = text.split_whitespace().last().unwrap_or("").to_string();
            return Some(Zeek { bin, version });
        }
    }
    None
}

/// The Zeek to test against, or `None` (after saying how to get one) to skip.
pub fn zeek() -> Option<&'static Zeek> {
    static ZEEK: OnceLock<Option<Zeek>> = OnceLock::new();
    let z = ZEEK.get_or_init(find).as_ref();
    if z.is_none() {
        assert!(
            std::env::var_os("CATCHD_REQUIRE_ZEEK").is_none(),
            "CATCHD_REQUIRE_ZEEK is set but no Zeek was found (ZEEK, PATH, /opt/zeek/bin/zeek)"
        );
        eprintln!(
            "skipped: no Zeek found; set ZEEK=/path/to/zeek, put zeek on PATH, or run \
             ../shared/zeek/install.sh to run the tests against the real Zeek"
        );
    }
    z
}

/// Runs `zeek args…` in `dir`, failing the test with Zeek's output if it fails or warns.
#[track_caller]
pub fn run_zeek(z: &Zeek, dir: &Path, args: &[&str]) -> String {
    let out = Command::new(&z.bin)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running zeek");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "zeek {args:?} failed ({}):\n{stderr}",
        out.status
    );
    assert!(
        !stderr.contains("warning") && !stderr.contains("error"),
        "zeek {args:?} complained:\n{stderr}"
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Zeek {
    /// Zeek's script path (from the `zeek-config` beside the binary) with `extra` in
    /// front, for `ZEEKPATH`.
    pub fn path_with(&self, extra: &Path) -> String {
        let out = Command::new(self.bin.with_file_name("zeek-config"))
            .arg("--zeekpath")
            .output()
            .expect("running zeek-config");
        let default = String::from_utf8_lossy(&out.stdout).trim().to_string();
        format!("{}:{default}", extra.display())
    }
}

/// A Zeek process, stopped with SIGTERM (so it writes its logs out) when dropped.
pub struct Running(pub Child);

impl Running {
    /// SIGTERM, then up to 10 s to exit, then SIGKILL.
    pub fn stop(&mut self) {
        let pid = self.0.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}
