//! catchd against the real Zeek.
//!
//! The tests here run a Zeek binary. They find it through `ZEEK` (a path to the binary),
//! else `zeek` on `PATH`, else `/opt/zeek/bin/zeek` (where `../shared/zeek/install.sh`, run
//! by `.ci/run`, unpacks Zeek 8.2.2). With none they print one line saying how to enable
//! them and pass, unless `CATCHD_REQUIRE_ZEEK` is set (CI sets it), which makes a missing
//! Zeek a failure.

mod cluster;
pub(crate) mod differential;
mod manager;
mod package;
mod plugin;
mod websocket;

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
        if let Ok(Some(_)) = self.0.try_wait() {
            return;
        }
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

/// A CURVE setup as Zeek 8.2 uses it: the proxy's keypair and the one client keypair
/// every node shares (Z85).
pub struct CurveKeys {
    pub server_public: String,
    pub server_secret: String,
    pub client_public: String,
    pub client_secret: String,
}

impl CurveKeys {
    pub fn new() -> CurveKeys {
        let (sp, ss) = catchd::bus::curve::keypair().unwrap();
        let (cp, cs) = catchd::bus::curve::keypair().unwrap();
        CurveKeys {
            server_public: sp.z85(),
            server_secret: ss.z85(),
            client_public: cp.z85(),
            client_secret: cs.z85(),
        }
    }

    /// The same server key with another client keypair (one the proxy does not admit).
    pub fn with_other_client(&self) -> CurveKeys {
        let (cp, cs) = catchd::bus::curve::keypair().unwrap();
        CurveKeys {
            server_public: self.server_public.clone(),
            server_secret: self.server_secret.clone(),
            client_public: cp.z85(),
            client_secret: cs.z85(),
        }
    }

    /// Zeek's script-level options; `server_secret` for a node that hosts the proxy.
    pub fn zeek_redefs(&self, server_secret: bool) -> String {
        let mut s = format!(
            "redef Cluster::Backend::ZeroMQ::curve_server_publickey = \"{}\";\n\
             redef Cluster::Backend::ZeroMQ::curve_client_publickey = \"{}\";\n\
             redef Cluster::Backend::ZeroMQ::curve_client_secretkey = \"{}\";\n",
            self.server_public, self.client_public, self.client_secret
        );
        if server_secret {
            s += &format!(
                "redef Cluster::Backend::ZeroMQ::curve_server_secretkey = \"{}\";\n",
                self.server_secret
            );
        }
        s
    }

    /// `[bus]` settings for a catchd node (not hosting the proxy).
    pub fn bus_toml(&self) -> String {
        format!(
            "[bus]\ncurve_server_publickey = \"{}\"\ncurve_client_publickey = \"{}\"\n\
             curve_client_secretkey = \"{}\"\n",
            self.server_public, self.client_public, self.client_secret
        )
    }

    /// Zeek's environment variables for `catchd proxy` (what a proxy needs).
    pub fn proxy_env(&self) -> [(&'static str, &str); 2] {
        [
            (
                "ZEEK_CLUSTER_BACKEND_ZEROMQ_CURVE_SERVER_SECRETKEY",
                &self.server_secret,
            ),
            (
                "ZEEK_CLUSTER_BACKEND_ZEROMQ_CURVE_CLIENT_PUBLICKEY",
                &self.client_public,
            ),
        ]
    }
}
