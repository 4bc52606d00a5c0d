//! `zeek-scripts/` as a Zeek package, in the real Zeek: every script parses
//! (`zeek --parse-only`), `zkg` (Debian's) installs it from a git clone, and `zeek -b`
//! loads the installed package without a warning.

use std::path::Path;
use std::process::Command;

use super::{run_zeek, zeek};
use crate::support::root;

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A copy of `zeek-scripts/` as a git repository named `catchd`, as zkg installs from.
fn clone_of_package(dir: &Path) -> std::path::PathBuf {
    let pkg = dir.join("catchd");
    std::fs::create_dir_all(&pkg).unwrap();
    for e in std::fs::read_dir(root().join("zeek-scripts")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), pkg.join(e.file_name())).unwrap();
    }
    git(&pkg, &["init", "-q"]);
    git(&pkg, &["add", "-A"]);
    git(
        &pkg,
        &[
            "-c",
            "user.email=ci@catchd.invalid",
            "-c",
            "user.name=ci",
            "commit",
            "-qm",
            "package",
        ],
    );
    pkg
}

#[test]
fn every_script_parses_in_zeek() {
    let Some(z) = zeek() else { return };
    let dir = root().join("zeek-scripts");
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "zeek") {
            let name = format!("./{}", p.file_name().unwrap().to_string_lossy());
            run_zeek(z, &dir, &["-b", "--parse-only", &name]);
        }
    }
}

#[test]
fn zkg_installs_the_package_and_zeek_loads_it_without_a_warning() {
    let Some(z) = zeek() else { return };
    let Ok(v) = Command::new("zkg").arg("--version").output() else {
        assert!(
            std::env::var_os("CATCHD_REQUIRE_ZEEK").is_none(),
            "zkg is missing (Debian package zkg)"
        );
        eprintln!("skipped: no zkg (Debian package zkg)");
        return;
    };
    assert!(v.status.success());
    let dir = tempfile::tempdir().unwrap();
    let pkg = clone_of_package(dir.path());
    let state = dir.path().join("state");
    let conf = dir.path().join("zkg.conf");
    std::fs::write(
        &conf,
        format!(
            "[sources]\n[paths]\nstate_dir = {s}\nscript_dir = {s}/script_dir\n\
             plugin_dir = {s}/plugin_dir\nbin_dir = {s}/bin\n",
            s = state.display()
        ),
    )
    .unwrap();
    // zkg checks `depends = zeek >=7.1.0` with the zeek-config it finds on PATH.
    let path = format!(
        "{}:{}",
        z.bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("zkg")
        .arg("--configfile")
        .arg(&conf)
        .args(["install", "--force"])
        .arg(&pkg)
        .env("PATH", &path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "zkg install: {text}");
    assert!(text.contains("Installed"), "{text}");
    let scripts = state.join("script_dir");
    assert!(scripts.join("catchd").exists(), "{text}");
    // Loaded by name from the installed packages, in bare mode.
    let zeekpath = z.path_with(&scripts);
    let out = Command::new(&z.bin)
        .args(["-b", "catchd"])
        .current_dir(dir.path())
        .env("ZEEKPATH", zeekpath)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "zeek -b catchd: {stderr}");
    assert!(
        stderr.trim().is_empty(),
        "zeek -b catchd said something:\n{stderr}"
    );
}
