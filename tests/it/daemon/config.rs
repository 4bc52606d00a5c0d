//! Bad configurations: one clear line and exit status 2, before anything starts.

use crate::serve::process::run;

#[test]
fn bad_settings_are_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("never.db");
    let dbs = db.to_str().unwrap();
    let conf = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let unknown = conf("a.toml", "[cnr]\nintervalls = \"1s,2s\"\n");
    let bad_iv = conf("b.toml", "[cnr]\nintervals = \"10m\"\n");
    let bad_if = conf("c.toml", "[capture]\ninterfaces = [\"catchd-nope0\"]\n");
    for (args, needle) in [
        (
            vec!["run", "--config", &unknown, "--db", dbs],
            "cnr.intervalls",
        ),
        (
            vec!["run", "--config", &bad_iv, "--db", dbs],
            "cnr.intervals",
        ),
        (
            vec!["run", "--intervals", "10m", "--db", dbs],
            "--intervals",
        ),
        (vec!["run", "--intervals", "10m,soon", "--db", dbs], "soon"),
        (
            vec!["run", "--interface", "a/b", "--db", dbs],
            "--interface",
        ),
        (
            vec![
                "run",
                "--config",
                &bad_if,
                "--db",
                dbs,
                "--listen",
                "127.0.0.1:0",
            ],
            "catchd-nope0",
        ),
    ] {
        let o = run(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        // clap's own errors add its usual "For more information, try '--help'." hint.
        let lines: Vec<&str> = err
            .lines()
            .filter(|l| {
                !l.trim().is_empty()
                    && !l.contains(" INFO ")
                    && !l.starts_with("For more information")
            })
            .collect();
        assert_eq!(lines.len(), 1, "{args:?}: one line: {err}");
        assert!(!db.exists(), "{args:?} left a database behind");
    }
}
