//! A private PostgreSQL cluster for a test: `initdb` in a temporary directory, `pg_ctl`
//! on a free loopback port, stopped (and deleted) on drop. Needs root (to run the server
//! as `postgres`) and Debian's `postgresql` package, which `./x test` installs.

use std::path::PathBuf;
use std::process::Command;

pub struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
}

fn pg_ctl_start(bin: &std::path::Path, dir: &std::path::Path, port: u16) {
    as_postgres(&format!(
        "{}/pg_ctl -D {} -l {} -w -o '-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off' start >/dev/null",
        bin.display(),
        dir.join("data").display(),
        dir.join("pg.log").display(),
        dir.join("sock").display()
    ));
}

fn pg_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed (apt-get install postgresql)")
        .map(|e| e.unwrap().path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().expect("no PostgreSQL server binaries")
}

fn as_postgres(cmd: &str) {
    let o = Command::new("su")
        .args(["postgres", "-s", "/bin/sh", "-c", cmd])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{cmd}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

impl Cluster {
    pub fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let data = dir.path().join("data");
        let sock = dir.path().join("sock");
        std::fs::create_dir(&data).unwrap();
        std::fs::create_dir(&sock).unwrap();
        let log = dir.path().join("pg.log");
        std::fs::write(&log, "").unwrap();
        for p in [&data, &sock, &log] {
            let o = Command::new("chown")
                .arg("postgres:")
                .arg(p)
                .output()
                .unwrap();
            assert!(o.status.success());
        }
        let bin = pg_bin();
        as_postgres(&format!(
            "{}/initdb -D {} -A trust -U postgres --no-sync -E UTF8 >/dev/null",
            bin.display(),
            data.display()
        ));
        let port = crate::bus::free_port();
        pg_ctl_start(&bin, dir.path(), port);
        Cluster { dir, bin, port }
    }

    /// Stops the server (fast shutdown: connections are cut).
    pub fn stop(&self) {
        as_postgres(&format!(
            "{}/pg_ctl -D {} -m fast -w stop >/dev/null",
            self.bin.display(),
            self.dir.path().join("data").display()
        ));
    }

    /// Starts it again on the same port.
    pub fn start_again(&self) {
        pg_ctl_start(&self.bin, self.dir.path(), self.port);
    }

    /// A connection URL for database `db`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs SQL with psql (stops on the first error).
    pub fn sql(&self, db: &str, sql: &str) -> String {
        let o = Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
            ])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = Command::new("su")
            .args([
                "postgres",
                "-s",
                "/bin/sh",
                "-c",
                &format!(
                    "{}/pg_ctl -D {} -m immediate -w stop >/dev/null 2>&1",
                    self.bin.display(),
                    data.display()
                ),
            ])
            .status();
    }
}
