//! The embedded store: SQLite (bundled) in WAL mode with `synchronous = FULL`, so a
//! committed transaction is on disk before the commit returns.

use std::path::Path;
use std::sync::Arc;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, Row, ToSql, params_from_iter};

use crate::auth::User;
use crate::bhr::model::UserId;

use super::schema::{self, Dialect, Sql, Value};
use super::{Driver, Error, Snapshot, Write};

/// Schema versions, applied in order; `PRAGMA user_version` records how many ran. The
/// tables are described once, in [`schema`]; these create them.
const MIGRATIONS: &[&str] = &[
    // 1: the BHR model, times in microseconds since the epoch.
    "CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL,
        token_hash BLOB UNIQUE,
        password_hash TEXT
    );
    CREATE TABLE blocks (
        id INTEGER PRIMARY KEY,
        cidr TEXT NOT NULL,
        who INTEGER NOT NULL,
        source TEXT NOT NULL,
        why TEXT NOT NULL,
        added INTEGER NOT NULL,
        unblock_at INTEGER,
        skip_whitelist INTEGER NOT NULL,
        forced_unblock INTEGER NOT NULL,
        unblock_why TEXT NOT NULL,
        unblock_who INTEGER
    );
    CREATE INDEX blocks_cidr ON blocks (cidr);
    CREATE TABLE block_entries (
        id INTEGER PRIMARY KEY,
        block INTEGER NOT NULL REFERENCES blocks (id),
        ident TEXT NOT NULL,
        added INTEGER NOT NULL,
        removed INTEGER,
        unblock_at INTEGER,
        UNIQUE (block, ident)
    );
    CREATE TABLE whitelist (
        id INTEGER PRIMARY KEY,
        cidr TEXT NOT NULL,
        who INTEGER NOT NULL,
        why TEXT NOT NULL,
        added INTEGER NOT NULL
    );
    CREATE TABLE source_blacklist (
        id INTEGER PRIMARY KEY,
        source TEXT NOT NULL UNIQUE,
        who INTEGER NOT NULL,
        why TEXT NOT NULL,
        added INTEGER NOT NULL
    );",
    // 2: catch-and-release's watched addresses, and the time they are current to.
    "CREATE TABLE cr_watch (
        addr TEXT PRIMARY KEY,
        start INTEGER NOT NULL,
        expire_ref INTEGER NOT NULL,
        rule INTEGER,
        location TEXT,
        reblocked INTEGER NOT NULL,
        step INTEGER NOT NULL,
        adopted INTEGER NOT NULL
    );
    CREATE TABLE cr_meta (
        key TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    );",
    // 3: where the log scanner is in each file, and the watchlist.
    "CREATE TABLE scan_position (
        path TEXT PRIMARY KEY,
        dev INTEGER NOT NULL,
        inode INTEGER NOT NULL,
        first_line INTEGER NOT NULL,
        offset INTEGER NOT NULL
    );
    CREATE TABLE watchlist (
        key TEXT PRIMARY KEY,
        failures INTEGER NOT NULL,
        watch_until INTEGER,
        block_until INTEGER
    );",
    // 4: the column PostgreSQL cannot call `offset` is `off` in both.
    "ALTER TABLE scan_position RENAME COLUMN offset TO off;",
];

/// A SQLite database file.
pub struct Sqlite {
    conn: Connection,
    _checkpointer: Checkpointer,
}

/// How often the WAL is copied back into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// WAL frames (pages) past which a checkpoint makes the writer start the WAL over.
const WAL_RESTART_FRAMES: i64 = 16_384;

/// A thread with its own connection that checkpoints the WAL in the background, so that
/// commits do not pay for checkpoints (SQLite's automatic checkpoint runs inside the
/// commit that crosses its threshold). Checkpoints are `PASSIVE` (they neither wait for
/// nor block the writer); under sustained writes that never lets the WAL start over, so
/// once it holds [`WAL_RESTART_FRAMES`] a `RESTART` checkpoint waits for the writer once.
/// The last checkpoint, when the store closes, truncates the WAL.
struct Checkpointer {
    stop: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    fn start(path: &Path) -> Result<Checkpointer, String> {
        let conn = Connection::open(path).map_err(|e| e.to_string())?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(|e| e.to_string())?;
        let stop = Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("catchd-checkpoint".into())
            .spawn(move || {
                let (m, cv) = &*flag;
                let mut stopped = m.lock().unwrap_or_else(|p| p.into_inner());
                while !*stopped {
                    stopped = cv
                        .wait_timeout(stopped, CHECKPOINT_EVERY)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                    let mode = if *stopped { "TRUNCATE" } else { "PASSIVE" };
                    let checkpoint = |mode: &str| {
                        conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
                            r.get::<_, i64>(1)
                        })
                    };
                    let r = checkpoint(mode).and_then(|frames| {
                        if frames > WAL_RESTART_FRAMES && !*stopped {
                            checkpoint("RESTART")
                        } else {
                            Ok(frames)
                        }
                    });
                    if let Err(e) = r {
                        tracing::warn!(error = %e, "WAL checkpoint failed");
                    }
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(Checkpointer {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        *self.stop.0.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.stop.1.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn db(e: rusqlite::Error) -> Error {
    Error::Db(e.to_string())
}

impl Sqlite {
    /// Opens or creates the database and brings its schema up to date.
    ///
    /// # Errors
    /// [`Error::Open`].
    pub fn open(path: &Path) -> Result<Sqlite, Error> {
        let open_err = |msg: String| Error::Open {
            path: path.to_path_buf(),
            msg,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
        }
        let mut conn = Connection::open(path).map_err(|e| open_err(e.to_string()))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(|e| open_err(e.to_string()))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(|e| open_err(e.to_string()))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(open_err(format!("could not switch to WAL mode ({mode})")));
        }
        conn.execute_batch(
            "PRAGMA synchronous = FULL; PRAGMA wal_autocheckpoint = 0;
             PRAGMA journal_size_limit = 67108864;",
        )
        .map_err(|e| open_err(e.to_string()))?;
        migrate(&mut conn).map_err(|e| open_err(e.to_string()))?;
        let checkpointer = Checkpointer::start(path).map_err(open_err)?;
        Ok(Sqlite {
            conn,
            _checkpointer: checkpointer,
        })
    }
}

fn migrate(conn: &mut Connection) -> Result<(), Error> {
    let version: usize = conn
        .query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))
        .map_err(db)
        .map(|v| usize::try_from(v).unwrap_or(usize::MAX))?;
    if version > MIGRATIONS.len() {
        return Err(Error::Corrupt(format!(
            "schema version {version} is newer than this catchd knows ({})",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction().map_err(db)?;
        tx.execute_batch(sql).map_err(db)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))
            .map_err(db)?;
        tx.commit().map_err(db)?;
    }
    Ok(())
}

impl schema::Columns for Row<'_> {
    fn int(&self, i: usize) -> Result<Option<i64>, Error> {
        match self.get_ref(i).map_err(db)? {
            ValueRef::Null => Ok(None),
            ValueRef::Integer(v) => Ok(Some(v)),
            other => Err(unexpected("an integer", other)),
        }
    }

    fn text(&self, i: usize) -> Result<Option<String>, Error> {
        match self.get_ref(i).map_err(db)? {
            ValueRef::Null => Ok(None),
            ValueRef::Text(t) => String::from_utf8(t.to_vec())
                .map(Some)
                .map_err(|_| Error::Corrupt("text that is not UTF-8".into())),
            other => Err(unexpected("text", other)),
        }
    }

    fn flag(&self, i: usize) -> Result<Option<bool>, Error> {
        Ok(schema::Columns::int(self, i)?.map(|v| v != 0))
    }

    fn bytes(&self, i: usize) -> Result<Option<Vec<u8>>, Error> {
        match self.get_ref(i).map_err(db)? {
            ValueRef::Null => Ok(None),
            ValueRef::Blob(b) => Ok(Some(b.to_vec())),
            other => Err(unexpected("bytes", other)),
        }
    }
}

fn unexpected(want: &str, got: ValueRef<'_>) -> Error {
    Error::Corrupt(format!("{} where {want} belongs", got.data_type()))
}

impl ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Int(v) => ValueRef::Integer(*v),
            Value::Bool(b) => ValueRef::Integer(i64::from(*b)),
            Value::Text(t) => ValueRef::Text(t.as_bytes()),
            Value::Bytes(b) => ValueRef::Blob(b),
        }))
    }
}

impl schema::Query for Connection {
    fn rows(
        &mut self,
        sql: &str,
        params: &[&Value<'_>],
        each: &mut dyn FnMut(&dyn schema::Columns) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let mut q = self.prepare_cached(sql).map_err(db)?;
        let mut rows = q.query(params_from_iter(params)).map_err(db)?;
        while let Some(r) = rows.next().map_err(db)? {
            each(r)?;
        }
        Ok(())
    }
}

impl Driver for Sqlite {
    fn load(&mut self) -> Result<Snapshot, Error> {
        schema::load(&mut self.conn, Dialect::Sqlite)
    }

    fn apply(&mut self, batch: &[&[Write]]) -> Result<(), Error> {
        let tx = self.conn.transaction().map_err(db)?;
        for w in batch.iter().flat_map(|ws| ws.iter()) {
            Sql::of(Dialect::Sqlite)
                .run(&schema::op(w)?, |sql, params| {
                    tx.prepare_cached(sql)?
                        .execute(params_from_iter(params))
                        .map(drop)
                })
                .map_err(db)?;
        }
        tx.commit().map_err(db)
    }

    fn user_by_token(&mut self, hash: &[u8; 32]) -> Result<Option<User>, Error> {
        let by = ("token_hash", Value::Bytes(hash));
        let users = schema::users(&mut self.conn, Dialect::Sqlite, Some(by))?;
        Ok(users.into_iter().next())
    }

    fn user_by_name(&mut self, name: &str) -> Result<Option<User>, Error> {
        let by = ("name", Value::Text(name.into()));
        let users = schema::users(&mut self.conn, Dialect::Sqlite, Some(by))?;
        Ok(users.into_iter().next())
    }

    fn users(&mut self) -> Result<Vec<User>, Error> {
        schema::users(&mut self.conn, Dialect::Sqlite, None)
    }

    fn next_user_id(&mut self) -> Result<UserId, Error> {
        schema::next_user_id(&mut self.conn)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ipnet::IpNet;
    use rusqlite::Connection;

    use super::*;
    use crate::addr::Addr;
    use crate::auth::Role;
    use crate::bhr::model::Settings;
    use crate::bhr::registry::{NewBlock, Registry};
    use crate::cnr::{RuleId, WatchState};
    use crate::store::Store;
    use crate::time::Interval;
    use crate::time::Time;

    #[test]
    fn round_trips_registry_rows_and_users() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("t.db");
        let store = Store::open_sqlite(&path).unwrap();
        let snap = store.load_blocking().unwrap();
        assert!(snap.blocks.is_empty());
        let t0 = Time::from_timeval(1_700_000_000, 123_456);
        let mut r = Registry::new(Settings::default());
        let mut ch = Vec::new();
        for (i, c) in ["192.0.2.1", "2001:db8::/64"].iter().enumerate() {
            r.add_block(
                &NewBlock {
                    cidr: c
                        .parse::<IpNet>()
                        .or_else(|_| c.parse::<std::net::IpAddr>().map(IpNet::from))
                        .unwrap(),
                    cidr_text: c.to_string(),
                    who: 1,
                    source: "s".into(),
                    why: "w\ttab".into(),
                    seconds: 60 * i as i64,
                    until: None,
                    skip_whitelist: false,
                    extend: true,
                    autoscale: false,
                },
                t0,
                &mut ch,
            );
        }
        r.set_blocked("bgp1", &[1, 2], t0 + Interval::from_secs(1), &mut ch)
            .unwrap();
        r.add_whitelist("203.0.113.0/24".parse().unwrap(), 1, "docs", t0, &mut ch);
        r.blacklist_source("noisy", 1, "feed", t0, &mut ch);
        let mut writes: Vec<Write> = ch.into_iter().map(Write::Bhr).collect();
        let u = User {
            id: 1,
            name: "admin".into(),
            role: Role::Admin,
            token_hash: Some(crate::auth::hash_token("t")),
            password_hash: None,
        };
        writes.push(Write::User(u.clone()));
        store.commit_blocking(writes).unwrap();
        drop(store);

        let store = Store::open_sqlite(&path).unwrap();
        let snap = store.load_blocking().unwrap();
        assert_eq!(snap.blocks, r.blocks().cloned().collect::<Vec<_>>());
        assert_eq!(snap.entries, r.entries().cloned().collect::<Vec<_>>());
        assert_eq!(snap.whitelist, r.whitelist());
        assert_eq!(snap.source_blacklist, r.source_blacklist());
        assert_eq!(snap.users, std::slice::from_ref(&u));
        assert_eq!(
            store.user_by_name_blocking("admin").unwrap(),
            Some(u.clone())
        );
        assert_eq!(store.next_user_id_blocking().unwrap(), 2);
    }

    #[test]
    fn a_version_3_database_keeps_its_scan_positions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let c = Connection::open(&path).unwrap();
        for sql in &MIGRATIONS[..3] {
            c.execute_batch(sql).unwrap();
        }
        c.execute_batch(
            "PRAGMA user_version = 3;
             INSERT INTO scan_position (path, dev, inode, first_line, offset)
             VALUES ('/var/log/auth.log', -1, 7, 3, 4096);",
        )
        .unwrap();
        drop(c);
        let mut db = Sqlite::open(&path).unwrap();
        let snap = db.load().unwrap();
        assert_eq!(
            snap.scan_positions,
            [(
                "/var/log/auth.log".to_string(),
                crate::scan::tail::Position {
                    dev: u64::MAX,
                    inode: 7,
                    first_line: 3,
                    offset: 4096,
                }
            )]
        );
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        drop(Sqlite::open(&path).unwrap());
        let c = Connection::open(&path).unwrap();
        c.execute_batch("PRAGMA user_version = 99").unwrap();
        drop(c);
        let e = Sqlite::open(&path).err().unwrap().to_string();
        assert!(e.contains("schema version 99 is newer"), "{e}");
    }

    #[test]
    fn damaged_rows_are_reported_as_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        drop(Sqlite::open(&path).unwrap());
        let c = Connection::open(&path).unwrap();
        c.execute_batch(
            "INSERT INTO blocks (id, cidr, who, source, why, added, unblock_at, skip_whitelist,
                 forced_unblock, unblock_why, unblock_who)
             VALUES (1, 'not a net', 1, 's', 'w', 0, NULL, 0, 0, '', NULL);
             INSERT INTO users (id, name, role) VALUES (1, 'x', 'emperor');",
        )
        .unwrap();
        drop(c);
        let mut db = Sqlite::open(&path).unwrap();
        match db.load() {
            Err(Error::Corrupt(m)) => assert!(m.contains("bad network `not a net`"), "{m}"),
            other => panic!("{other:?}"),
        }
        match db.users() {
            Err(Error::Corrupt(m)) => assert!(m.contains("unknown role `emperor`"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_wal_is_truncated_on_close() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let wal = dir.path().join("t.db-wal");
        let mut db = Sqlite::open(&path).unwrap();
        let users: Vec<Write> = (1..=2000)
            .map(|id| {
                Write::User(User {
                    id,
                    name: format!("u{id}"),
                    role: Role::Blocker,
                    token_hash: None,
                    password_hash: None,
                })
            })
            .collect();
        db.apply(&[&users]).unwrap();
        assert!(std::fs::metadata(&wal).unwrap().len() > 0);
        drop(db);
        assert_eq!(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0), 0);
        let db = Sqlite::open(&path).unwrap();
        assert_eq!(
            db.conn
                .query_row("SELECT COUNT(*) FROM users", [], |r| r.get::<_, i64>(0))
                .unwrap(),
            2000
        );
    }

    #[test]
    fn catch_and_release_state_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let mut db = Sqlite::open(&path).unwrap();
        let st = |step: u8, loc: Option<&str>| WatchState {
            start: Time::from_timeval(1_700_000_000, 5),
            expire_ref: Time::from_timeval(1_700_000_600, 0),
            rule: RuleId::new(42),
            location: loc.map(Arc::from),
            reblocked: 3,
            step,
            adopted: step == 0,
        };
        let a: Addr = "192.0.2.7".parse().unwrap();
        let b: Addr = "2001:db8::9".parse().unwrap();
        let c: Addr = "198.51.100.1".parse().unwrap();
        db.apply(&[&[
            Write::Watch(a, st(1, Some("scan"))),
            Write::Watch(b, st(0, None)),
            Write::Watch(c, st(2, None)),
            Write::CrClock(Time::from_timeval(1_700_000_100, 0)),
        ]])
        .unwrap();
        db.apply(&[&[
            Write::Unwatch(c),
            Write::Watch(a, st(2, Some("scan"))),
            Write::CrClock(Time::from_timeval(1_700_000_200, 0)),
        ]])
        .unwrap();
        drop(db);
        let mut db = Sqlite::open(&path).unwrap();
        let snap = db.load().unwrap();
        let mut watch = snap.watch;
        watch.sort_by_key(|(a, _)| *a);
        assert_eq!(watch, [(a, st(2, Some("scan"))), (b, st(0, None))]);
        assert_eq!(snap.cr_clock, Some(Time::from_timeval(1_700_000_200, 0)));
    }
}
