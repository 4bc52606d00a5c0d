//! The Debian package (`./x package`) on a fresh Debian bookworm: a `debootstrap
//! --variant=minbase` tree made by the test (kept as a tarball under target/tmp for the
//! next run), the package installed with apt from the archive's mirror, then checked as
//! an operator would: its configuration checks, its manual page renders, its bash
//! completion completes, `systemd-analyze verify` accepts both units, the service's
//! command line runs as the `catchd` user with the unit's capability, `apt-get remove`
//! keeps the data and `dpkg --purge` removes user, configuration and directories.
//!
//! `./x test` builds the package and passes its path in `CATCHD_TEST_DEB`; without it
//! (or without root and debootstrap) the test is skipped with one line, unless
//! `CATCHD_REQUIRE_PACKAGE` is set (CI sets it).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The package to test, or why not.
fn setup() -> Result<PathBuf, String> {
    let deb = std::env::var_os("CATCHD_TEST_DEB")
        .map(PathBuf::from)
        .ok_or("CATCHD_TEST_DEB is not set (`./x test` builds the package with `./x package` and sets it)")?;
    if !deb.is_file() {
        return Err(format!("CATCHD_TEST_DEB: no file {}", deb.display()));
    }
    if !nix::unistd::Uid::effective().is_root() {
        return Err("debootstrap and chroot need root".into());
    }
    if Command::new("debootstrap")
        .arg("--version")
        .output()
        .is_err()
    {
        return Err("debootstrap is not installed (apt-get install debootstrap)".into());
    }
    Ok(std::fs::canonicalize(deb).unwrap())
}

/// A fresh minbase bookworm, unpacked from the cached debootstrap tarball (made first if
/// missing), with /proc, /sys and /dev mounted; unmounted and removed on drop.
struct Bookworm {
    root: PathBuf,
}

/// One debootstrap at a time (the tests share its tarball).
static BASE: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Bookworm {
    fn new() -> Bookworm {
        let base = crate::support::root().join("target/tmp/bookworm-minbase.tar");
        let guard = BASE.lock().unwrap_or_else(|p| p.into_inner());
        if !base.is_file() {
            std::fs::create_dir_all(base.parent().unwrap()).unwrap();
            let d = tempfile::tempdir().unwrap();
            let o = Command::new("debootstrap")
                .args(["--variant=minbase", "bookworm"])
                .arg(d.path())
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "debootstrap: {}",
                String::from_utf8_lossy(&o.stdout)
            );
            let tmp = base.with_extension("tar.part");
            run_ok(
                Command::new("tar")
                    .arg("-C")
                    .arg(d.path())
                    .arg("-cf")
                    .arg(&tmp)
                    .arg("."),
            );
            std::fs::rename(&tmp, &base).unwrap();
        }
        drop(guard);
        let root = tempfile::Builder::new()
            .prefix("catchd-bookworm-")
            .tempdir()
            .unwrap()
            .keep();
        run_ok(
            Command::new("tar")
                .arg("-C")
                .arg(&root)
                .arg("-xf")
                .arg(&base),
        );
        // apt reaches the mirror this machine uses, with its settings.
        for (from, to) in [
            ("/etc/resolv.conf", "etc/resolv.conf"),
            ("/etc/apt/sources.list", "etc/apt/sources.list"),
        ] {
            if Path::new(from).is_file() {
                std::fs::copy(from, root.join(to)).unwrap();
            }
        }
        for d in ["/etc/apt/sources.list.d", "/etc/apt/apt.conf.d"] {
            if Path::new(d).is_dir() {
                run_ok(
                    Command::new("cp")
                        .arg("-r")
                        .arg(format!("{d}/."))
                        .arg(root.join(&d[1..])),
                );
            }
        }
        let b = Bookworm { root };
        for m in ["proc", "sys", "dev"] {
            run_ok(
                Command::new("mount")
                    .arg("--bind")
                    .arg(format!("/{m}"))
                    .arg(b.root.join(m)),
            );
        }
        b
    }
}

impl Shell for Bookworm {
    fn command(&self, script: &str) -> Command {
        let mut c = Command::new("chroot");
        c.arg(&self.root)
            .args(["/bin/bash", "-c", script])
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("HOME", "/root")
            .env("LANG", "C.UTF-8");
        c
    }
}

impl Bookworm {
    /// Takes back the host's /proc, /sys and /dev (a container mounts its own).
    fn unmount(&self) {
        for m in ["dev", "sys", "proc"] {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.root.join(m))
                .status();
        }
    }
}

impl Drop for Bookworm {
    fn drop(&mut self) {
        self.unmount();
        let _ = std::fs::remove_file(self.root.with_extension("nspawn.log"));
        let _ = Command::new("rm")
            .args(["-rf", "--one-file-system"])
            .arg(&self.root)
            .status();
    }
}

/// Where a test runs shell scripts: the chroot, or the booted container.
trait Shell {
    /// `bash -c script` inside.
    fn command(&self, script: &str) -> Command;

    /// Runs `script`; whether it succeeded, and its output (stdout then stderr).
    fn sh(&self, script: &str) -> (bool, String) {
        let o = self.command(script).output().unwrap();
        let mut text = String::from_utf8_lossy(&o.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&o.stderr));
        (o.status.success(), text)
    }

    /// [`sh`](Shell::sh) that must succeed; its output.
    #[track_caller]
    fn ok(&self, script: &str) -> String {
        let (ok, out) = self.sh(script);
        assert!(ok, "`{script}` failed:\n{out}");
        out
    }
}

/// The package, or `None` after saying why the test is skipped (a failure instead when
/// `CATCHD_REQUIRE_PACKAGE` is set).
fn package_or_skip(test: &str) -> Option<PathBuf> {
    let why = match setup() {
        Ok(d) => return Some(d),
        Err(why) => why,
    };
    assert!(
        std::env::var_os("CATCHD_REQUIRE_PACKAGE").is_none(),
        "CATCHD_REQUIRE_PACKAGE is set but {test} cannot run: {why}"
    );
    eprintln!("skipped: {test}: {why}");
    None
}

#[track_caller]
fn run_ok(c: &mut Command) {
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn the_package_installs_on_a_fresh_bookworm_runs_and_purges() {
    let Some(deb) = package_or_skip("the Debian package test") else {
        return;
    };
    let b = Bookworm::new();
    std::fs::copy(&deb, b.root.join("tmp/catchd.deb")).unwrap();
    // Not there before: the runtime libraries come from the archive with the package.
    let (had_pcap, _) = b.sh("dpkg -s libpcap0.8");
    assert!(!had_pcap, "a minbase bookworm has no libpcap");
    b.ok("apt-get -o DPkg::Lock::Timeout=600 update -q");
    // Without recommends: the smallest install must work (no CA certificates, no firewall).
    b.ok(
        "apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends /tmp/catchd.deb",
    );
    b.ok("dpkg -s libpcap0.8 libzmq5 | grep -c '^Status: install ok installed' | grep -qx 2");

    // The configuration as shipped checks, with the production paths.
    let checked = b.ok("catchd check-config /etc/catchd/catchd.toml");
    assert!(
        checked.contains("db = \"/var/lib/catchd/catchd.db\""),
        "{checked}"
    );
    assert!(checked.contains("dir = \"/var/log/catchd\""), "{checked}");
    assert!(
        checked.contains("intervals = \"10m,1h,1day,7days\""),
        "{checked}"
    );
    b.ok("dpkg-query --control-show catchd conffiles | grep -qx /etc/catchd/catchd.toml");

    // The system user and its directories.
    let user = b.ok("getent passwd catchd");
    assert!(
        user.contains(":/var/lib/catchd:/usr/sbin/nologin"),
        "{user}"
    );
    let dirs =
        b.ok("stat -c '%U:%G %a %n' /var/lib/catchd /var/log/catchd /etc/catchd/catchd.toml");
    assert_eq!(
        dirs,
        "catchd:catchd 750 /var/lib/catchd\ncatchd:catchd 750 /var/log/catchd\nroot:catchd 640 /etc/catchd/catchd.toml\n"
    );

    // What an operator reads and types: man pages and completions.
    b.ok("apt-get install -y -q man-db bash-completion systemd >/dev/null");
    let man = b.ok("man -P cat catchd 2>/dev/null");
    assert!(
        man.contains("catchd-run(1)") && man.contains("/etc/catchd/catchd.toml"),
        "{man}"
    );
    let man_run = b.ok("man -P cat catchd-run 2>/dev/null");
    assert!(man_run.contains("--interface"), "{man_run}");
    let completed = b.ok(
        "source /usr/share/bash-completion/bash_completion; _completion_loader catchd; \
         COMP_WORDS=(catchd check-c); COMP_CWORD=1; COMP_LINE='catchd check-c'; COMP_POINT=14; \
         _catchd catchd check-c catchd; echo \"${COMPREPLY[*]}\"",
    );
    assert_eq!(completed.trim(), "check-config");
    let readme = b.ok("cat /usr/share/doc/catchd/README.Debian");
    assert!(
        readme.contains("@load /usr/share/catchd/zeek-scripts"),
        "{readme}"
    );
    b.ok("test -f /usr/share/catchd/zeek-scripts/__load__.zeek");
    b.ok("test -s /usr/share/zsh/vendor-completions/_catchd && test -s /usr/share/fish/vendor_completions.d/catchd.fish");

    // Both units pass systemd's own check.
    b.ok("systemd-analyze verify /lib/systemd/system/catchd.service");
    b.ok(
        "cp /usr/share/doc/catchd/examples/manager.env /etc/catchd/manager-fw.env && \
          systemd-analyze verify catchd-manager@fw.service",
    );

    // The unit's command line, as its user with its capability: it starts on the shipped
    // configuration, writes its store and logs where the package made room, and stops.
    let ran = b.ok(
        "setpriv --reuid=catchd --regid=catchd --init-groups --inh-caps=-all,+net_raw \
         --ambient-caps=-all,+net_raw --bounding-set=-all,+net_raw \
         catchd run --config /etc/catchd/catchd.toml --listen 127.0.0.1:0 2>/tmp/run.log & pid=$!; \
         for i in $(seq 300); do grep -q 'catchd running' /tmp/run.log && break; sleep 0.1; done; \
         kill -TERM $pid; wait $pid; echo \"exit $?\"; cat /tmp/run.log; \
         stat -c '%U %n' /var/lib/catchd/catchd.db /var/log/catchd/netcontrol.log",
    );
    assert!(ran.starts_with("exit 0\n"), "{ran}");
    assert!(ran.contains("catchd /var/lib/catchd/catchd.db"), "{ran}");
    assert!(
        ran.contains("catchd /var/log/catchd/netcontrol.log"),
        "{ran}"
    );

    // remove keeps the data and the configuration; purge takes everything.
    b.ok("apt-get remove -y -q catchd >/dev/null");
    b.ok("test -f /var/lib/catchd/catchd.db && test -f /etc/catchd/catchd.toml && getent passwd catchd >/dev/null");
    b.ok("test ! -e /usr/bin/catchd");
    b.ok("dpkg --purge catchd >/dev/null");
    let (user_left, _) = b.sh("getent passwd catchd || getent group catchd");
    assert!(!user_left, "purge removes the user and its group");
    b.ok("test ! -e /etc/catchd && test ! -e /var/lib/catchd && test ! -e /var/log/catchd");
}

/// A booted systemd (systemd-nspawn) in the fresh bookworm, for the units themselves.
struct Booted {
    nspawn: std::process::Child,
    /// The container's PID 1, seen from here.
    init: u32,
}

impl Booted {
    /// Boots `b` with a private network; waits until systemd says it is up.
    fn boot(b: &Bookworm) -> Booted {
        b.unmount();
        let log_path = b.root.with_extension("nspawn.log");
        let log = std::fs::File::create(&log_path).unwrap();
        // In a mount namespace of its own, on a cgroup2 hierarchy of its own: the same on a
        // host with cgroup v1, v2 or hybrid, and in a chroot where none is mounted.
        let nspawn = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "/bin/sh", "-c"])
            .arg(
                "mount -t cgroup2 cgroup2 /sys/fs/cgroup && exec systemd-nspawn -D \"$0\" \
                 --boot --register=no --keep-unit --private-network --quiet",
            )
            .arg(&b.root)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        // From here on, dropping it (a panic included) stops the container.
        let mut booted = Booted { nspawn, init: 0 };
        booted.init = super::daemon::wait_for(60, "the container's init", || {
            if let Ok(Some(status)) = booted.nspawn.try_wait() {
                panic!(
                    "systemd-nspawn ended ({status}): {}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            // nspawn's child is a helper until the container's PID 1 has become systemd.
            let pid = booted.nspawn.id();
            let children =
                std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
            children
                .split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok())
                .find(|c| {
                    std::fs::read_to_string(format!("/proc/{c}/comm"))
                        .is_ok_and(|comm| comm.trim() == "systemd")
                })
        });
        super::daemon::wait_for(120, "systemd to finish booting", || {
            let (_, out) = booted.sh("systemctl is-system-running");
            matches!(out.trim(), "running" | "degraded").then_some(())
        });
        booted
    }
}

impl Shell for Booted {
    fn command(&self, script: &str) -> Command {
        let mut c = Command::new("nsenter");
        // -r -w: the container's root and directory too (in a chroot, entering the mount
        // namespace alone leaves one outside the container's root).
        c.args([
            "-t",
            &self.init.to_string(),
            "-a",
            "-r",
            "-w",
            "/bin/bash",
            "-c",
            script,
        ])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        c
    }
}

impl Drop for Booted {
    fn drop(&mut self) {
        if self.init != 0 {
            let _ = self.sh("systemctl poweroff");
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.nspawn.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        // It did not stop: kill the container's processes, then nspawn.
        if self.init != 0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.init as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
    }
}

#[test]
fn the_units_run_hardened_under_systemd() {
    let Some(deb) = package_or_skip("the systemd unit test") else {
        return;
    };
    if Command::new("systemd-nspawn")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("CATCHD_REQUIRE_PACKAGE").is_none(),
            "CATCHD_REQUIRE_PACKAGE is set but systemd-nspawn is missing (apt-get install systemd-container)"
        );
        eprintln!(
            "skipped: the systemd unit test: no systemd-nspawn (apt-get install systemd-container)"
        );
        return;
    }
    let b = Bookworm::new();
    std::fs::copy(&deb, b.root.join("tmp/catchd.deb")).unwrap();
    b.ok("apt-get -o DPkg::Lock::Timeout=600 update -q");
    b.ok(
        "apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends \
         systemd systemd-sysv dbus nftables /tmp/catchd.deb",
    );
    // The sensor captures on the container's loopback (its only interface).
    b.ok("sed -i 's/^interfaces = \\[\\]/interfaces = [\"lo\"]/' /etc/catchd/catchd.toml");
    let c = Booted::boot(&b);

    // Type=notify: `systemctl start` returns once READY=1 came, with its status line.
    c.ok("systemctl enable --now catchd");
    let show = c.ok("systemctl show catchd -p ActiveState -p SubState -p StatusText -p User");
    assert!(
        show.contains("ActiveState=active\nSubState=running\n"),
        "{show}"
    );
    assert!(
        show.contains("StatusText=capturing on lo; API on http://127.0.0.1:8000/"),
        "{show}"
    );
    // Exactly the unit's privileges, under its seccomp filter.
    let status = c.ok("grep -E '^(Uid|CapEff|CapAmb|CapBnd|NoNewPrivs|Seccomp):' /proc/$(systemctl show catchd -p MainPID --value)/status");
    let uid = c.ok("id -u catchd");
    assert!(
        status.contains(&format!("Uid:\t{0}\t{0}\t{0}\t{0}", uid.trim())),
        "{status}"
    );
    for line in [
        "CapEff:\t0000000000002000",
        "CapAmb:\t0000000000002000",
        "CapBnd:\t0000000000002000",
        "NoNewPrivs:\t1",
        "Seccomp:\t2",
    ] {
        assert!(status.contains(line), "{line} in {status}");
    }

    // systemctl reload: SIGHUP, answered with RELOADING=1 … READY=1; logged at info.
    c.ok("systemctl reload catchd");
    let journal = c.ok("journalctl -u catchd -o cat --no-pager");
    assert!(journal.contains("SIGHUP: logs rotated"), "{journal}");
    // A configuration that no longer checks: a warning, and the service keeps running.
    c.ok(
        "cp /etc/catchd/catchd.toml /tmp/good.toml && echo 'bogus = 1' >> /etc/catchd/catchd.toml",
    );
    c.ok("systemctl reload catchd");
    let warned = c.ok("journalctl -u catchd -p warning -o cat --no-pager");
    assert!(warned.contains("the running rules stay"), "{warned}");
    c.ok("cp /tmp/good.toml /etc/catchd/catchd.toml && systemctl is-active catchd");

    // A block manager instance with nftables: a block made through the API is applied.
    let manager = c.ok(
        "runuser -u catchd -- catchd user add fw --role manager --config /etc/catchd/catchd.toml",
    );
    let blocker = c.ok(
        "runuser -u catchd -- catchd user add zeek --role blocker --config /etc/catchd/catchd.toml",
    );
    c.ok(&format!(
        "printf 'BHR_HOST=http://127.0.0.1:8000\\nBHR_TOKEN={}\\nCATCHD_MANAGER_ARGS=--backend nftables\\n' \
         > /etc/catchd/manager-fw.env && systemctl start catchd-manager@fw",
        manager.trim()
    ));
    let body = "cidr=203.0.113.9/32&source=test&why=unit&duration=300";
    let answer = c.ok(&format!(
        "exec 3<>/dev/tcp/127.0.0.1/8000; printf 'POST /bhr/api/block HTTP/1.1\\r\\nHost: x\\r\\n\
         Authorization: Token {}\\r\\nContent-Type: application/x-www-form-urlencoded\\r\\n\
         Content-Length: {}\\r\\nConnection: close\\r\\n\\r\\n{body}' >&3; head -1 <&3",
        blocker.trim(),
        body.len()
    ));
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    super::daemon::wait_for(30, "the block in nftables", || {
        let (_, set) = c.sh("nft list set inet catchd h4");
        set.contains("203.0.113.9").then_some(())
    });

    // systemctl stop: a clean exit (STOPPING=1, then status 0).
    c.ok("systemctl stop catchd-manager@fw catchd");
    let result = c.ok("systemctl show catchd -p Result -p ExecMainStatus");
    assert_eq!(result, "Result=success\nExecMainStatus=0\n");
}
