//! The embedded store: SQLite (bundled) in WAL mode with `synchronous = FULL`, so a
//! committed transaction is on disk before the commit returns.

use std::path::Path;
use std::sync::Arc;

use ipnet::IpNet;
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::addr::Addr;
use crate::auth::{Role, User};
use crate::bhr::model::{Block, Entry, SourceBlacklistEntry, UserId, WhitelistEntry};
use crate::bhr::registry::Change;
use crate::cnr::{RuleId, WatchState};
use crate::time::Time;

use super::{Backend, Error, Snapshot, Write};

/// Schema versions, applied in order; `PRAGMA user_version` records how many ran.
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
    match e {
        rusqlite::Error::FromSqlConversionFailure(_, _, why) => Error::Corrupt(why.to_string()),
        e => Error::Db(e.to_string()),
    }
}

/// Stored data that does not parse, as a row-reading error (see [`db`]).
fn corrupt(column: usize, why: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, why.into())
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
        .map_err(db)? as usize;
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

fn time(v: i64) -> Time {
    Time::from_micros(v)
}

/// A network column.
fn net(r: &Row<'_>, column: usize) -> rusqlite::Result<IpNet> {
    let s: String = r.get(column)?;
    s.parse()
        .map_err(|_| corrupt(column, format!("bad network `{s}`")))
}

/// A `users` row (in [`USER_COLUMNS`] order).
fn user(r: &Row<'_>) -> rusqlite::Result<User> {
    let name: String = r.get(1)?;
    let role: String = r.get(2)?;
    let role: Role = role
        .parse()
        .map_err(|e: crate::auth::UnknownRole| corrupt(2, e.to_string()))?;
    let token_hash = match r.get::<_, Option<Vec<u8>>>(3)? {
        Some(t) => Some(
            <[u8; 32]>::try_from(t.as_slice())
                .map_err(|_| corrupt(3, format!("bad token hash for user {name}")))?,
        ),
        None => None,
    };
    Ok(User {
        id: r.get(0)?,
        name,
        role,
        token_hash,
        password_hash: r.get(4)?,
    })
}

/// Runs a query and reads every row.
fn all<T>(
    c: &Connection,
    sql: &str,
    read: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>, Error> {
    let mut q = c.prepare_cached(sql).map_err(db)?;
    let rows = q.query_map([], read).map_err(db)?;
    rows.map(|r| r.map_err(db)).collect()
}

const USER_COLUMNS: &str = "id, name, role, token_hash, password_hash";

impl Backend for Sqlite {
    fn load(&mut self) -> Result<Snapshot, Error> {
        let c = &self.conn;
        let blocks = all(
            c,
            "SELECT id, cidr, who, source, why, added, unblock_at, skip_whitelist,
                    forced_unblock, unblock_why, unblock_who FROM blocks ORDER BY id",
            |r| {
                Ok(Block {
                    id: r.get::<_, i64>(0)? as u64,
                    cidr: net(r, 1)?,
                    who: r.get(2)?,
                    source: Arc::from(r.get::<_, String>(3)?),
                    why: Arc::from(r.get::<_, String>(4)?),
                    added: time(r.get(5)?),
                    unblock_at: r.get::<_, Option<i64>>(6)?.map(time),
                    skip_whitelist: r.get(7)?,
                    forced_unblock: r.get(8)?,
                    unblock_why: Arc::from(r.get::<_, String>(9)?),
                    unblock_who: r.get(10)?,
                })
            },
        )?;
        let entries = all(
            c,
            "SELECT id, block, ident, added, removed, unblock_at FROM block_entries ORDER BY id",
            |r| {
                Ok(Entry {
                    id: r.get::<_, i64>(0)? as u64,
                    block: r.get::<_, i64>(1)? as u64,
                    ident: Arc::from(r.get::<_, String>(2)?),
                    added: time(r.get(3)?),
                    removed: r.get::<_, Option<i64>>(4)?.map(time),
                    unblock_at: r.get::<_, Option<i64>>(5)?.map(time),
                })
            },
        )?;
        let whitelist = all(
            c,
            "SELECT id, cidr, who, why, added FROM whitelist ORDER BY id",
            |r| {
                Ok(WhitelistEntry {
                    id: r.get::<_, i64>(0)? as u64,
                    cidr: net(r, 1)?,
                    who: r.get(2)?,
                    why: Arc::from(r.get::<_, String>(3)?),
                    added: time(r.get(4)?),
                })
            },
        )?;
        let source_blacklist = all(
            c,
            "SELECT id, source, who, why, added FROM source_blacklist ORDER BY id",
            |r| {
                Ok(SourceBlacklistEntry {
                    id: r.get::<_, i64>(0)? as u64,
                    source: Arc::from(r.get::<_, String>(1)?),
                    who: r.get(2)?,
                    why: Arc::from(r.get::<_, String>(3)?),
                    added: time(r.get(4)?),
                })
            },
        )?;
        let watch = all(
            c,
            "SELECT addr, start, expire_ref, rule, location, reblocked, step, adopted
             FROM cr_watch",
            |r| {
                let text: String = r.get(0)?;
                let addr: Addr = text
                    .parse()
                    .map_err(|_| corrupt(0, format!("bad address `{text}`")))?;
                let rule: Option<i64> = r.get(3)?;
                Ok((
                    addr,
                    WatchState {
                        start: time(r.get(1)?),
                        expire_ref: time(r.get(2)?),
                        rule: rule
                            .and_then(|v| u32::try_from(v).ok())
                            .and_then(RuleId::new),
                        location: r.get::<_, Option<String>>(4)?.map(Arc::from),
                        reblocked: r.get(5)?,
                        step: r.get(6)?,
                        adopted: r.get(7)?,
                    },
                ))
            },
        )?;
        let cr_clock = c
            .query_row("SELECT value FROM cr_meta WHERE key = 'clock'", [], |r| {
                r.get::<_, i64>(0)
            })
            .optional()
            .map_err(db)?
            .map(time);
        let scan_positions = all(
            c,
            "SELECT path, dev, inode, first_line, offset FROM scan_position",
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    crate::scan::tail::Position {
                        dev: r.get::<_, i64>(1)? as u64,
                        inode: r.get::<_, i64>(2)? as u64,
                        first_line: r.get::<_, i64>(3)? as u64,
                        offset: r.get::<_, i64>(4)? as u64,
                    },
                ))
            },
        )?;
        let watchlist = all(
            c,
            "SELECT key, failures, watch_until, block_until FROM watchlist",
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    crate::watchlist::Entry {
                        failures: r.get(1)?,
                        watch_until: r.get::<_, Option<i64>>(2)?.map(time),
                        block_until: r.get::<_, Option<i64>>(3)?.map(time),
                    },
                ))
            },
        )?;
        Ok(Snapshot {
            blocks,
            entries,
            whitelist,
            source_blacklist,
            users: self.users()?,
            watch,
            cr_clock,
            scan_positions,
            watchlist,
        })
    }

    fn apply(&mut self, batch: &[&[Write]]) -> Result<(), Error> {
        let tx = self.conn.transaction().map_err(db)?;
        for writes in batch {
            for w in *writes {
                apply_one(&tx, w).map_err(db)?;
            }
        }
        tx.commit().map_err(db)
    }

    fn user_by_token(&mut self, hash: &[u8; 32]) -> Result<Option<User>, Error> {
        self.conn
            .query_row(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE token_hash = ?1"),
                [hash.as_slice()],
                user,
            )
            .optional()
            .map_err(db)
    }

    fn user_by_name(&mut self, name: &str) -> Result<Option<User>, Error> {
        self.conn
            .query_row(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE name = ?1"),
                [name],
                user,
            )
            .optional()
            .map_err(db)
    }

    fn users(&mut self) -> Result<Vec<User>, Error> {
        all(
            &self.conn,
            &format!("SELECT {USER_COLUMNS} FROM users ORDER BY id"),
            user,
        )
    }

    fn next_user_id(&mut self) -> Result<UserId, Error> {
        self.conn
            .query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM users", [], |r| {
                r.get(0)
            })
            .map_err(db)
    }
}

fn apply_one(tx: &rusqlite::Transaction<'_>, w: &Write) -> rusqlite::Result<()> {
    let us = |t: Time| t.as_micros();
    match w {
        Write::Bhr(Change::Block(b)) => {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO blocks (id, cidr, who, source, why, added, unblock_at,
                     skip_whitelist, forced_unblock, unblock_why, unblock_who)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?
            .execute(params![
                b.id as i64,
                b.cidr.to_string(),
                b.who,
                &*b.source,
                &*b.why,
                us(b.added),
                b.unblock_at.map(us),
                b.skip_whitelist,
                b.forced_unblock,
                &*b.unblock_why,
                b.unblock_who,
            ])?;
        }
        Write::Bhr(Change::Entry(e)) => {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO block_entries (id, block, ident, added, removed, unblock_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                e.id as i64,
                e.block as i64,
                &*e.ident,
                us(e.added),
                e.removed.map(us),
                e.unblock_at.map(us),
            ])?;
        }
        Write::Bhr(Change::Whitelist(w)) => {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO whitelist (id, cidr, who, why, added) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![w.id as i64, w.cidr.to_string(), w.who, &*w.why, us(w.added)])?;
        }
        Write::Bhr(Change::WhitelistDeleted(id)) => {
            tx.prepare_cached("DELETE FROM whitelist WHERE id = ?1")?
                .execute([*id as i64])?;
        }
        Write::Bhr(Change::SourceBlacklist(s)) => {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO source_blacklist (id, source, who, why, added) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![s.id as i64, &*s.source, s.who, &*s.why, us(s.added)])?;
        }
        Write::Bhr(Change::SourceBlacklistDeleted(id)) => {
            tx.prepare_cached("DELETE FROM source_blacklist WHERE id = ?1")?
                .execute([*id as i64])?;
        }
        Write::User(u) => {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO users (id, name, role, token_hash, password_hash)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                u.id,
                &u.name,
                u.role.as_str(),
                u.token_hash.as_ref().map(|h| h.as_slice()),
                u.password_hash.as_deref(),
            ])?;
        }
        Write::Watch(a, w) => {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO cr_watch
                     (addr, start, expire_ref, rule, location, reblocked, step, adopted)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                a.to_string(),
                us(w.start),
                us(w.expire_ref),
                w.rule.map(RuleId::get),
                w.location.as_deref(),
                w.reblocked,
                w.step,
                w.adopted,
            ])?;
        }
        Write::Unwatch(a) => {
            tx.prepare_cached("DELETE FROM cr_watch WHERE addr = ?1")?
                .execute([a.to_string()])?;
        }
        Write::ScanPosition(path, p) => {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO scan_position (path, dev, inode, first_line, offset)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                path,
                p.dev as i64,
                p.inode as i64,
                p.first_line as i64,
                p.offset as i64
            ])?;
        }
        Write::WatchItem(key, Some(e)) => {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO watchlist (key, failures, watch_until, block_until)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                key,
                e.failures,
                e.watch_until.map(us),
                e.block_until.map(us)
            ])?;
        }
        Write::WatchItem(key, None) => {
            tx.prepare_cached("DELETE FROM watchlist WHERE key = ?1")?
                .execute([key])?;
        }
        Write::CrClock(t) => {
            tx.prepare_cached("INSERT OR REPLACE INTO cr_meta (key, value) VALUES ('clock', ?1)")?
                .execute([us(*t)])?;
        }
        Write::UserDeleted(id) => {
            tx.prepare_cached("DELETE FROM users WHERE id = ?1")?
                .execute([*id])?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bhr::model::Settings;
    use crate::bhr::registry::{NewBlock, Registry};
    use crate::store::Store;
    use crate::time::Interval;

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
