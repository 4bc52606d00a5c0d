//! PostgreSQL, for sites that keep their data in a database server (as the original BHR
//! does). Selected by a `postgres://` URL in `server.db` / `store` or `--db`.
//!
//! The schema mirrors SQLite's (times as microseconds, networks as text) and is brought
//! up to date by versioned migrations under an advisory lock, so nodes starting at once
//! do not race. Every write is an upsert or a delete, so a batch whose commit went
//! unanswered (the connection broke) can be applied again safely: the writer reconnects,
//! with back-off, and retries the whole batch before it answers anyone. An acknowledged
//! write is therefore committed; a request whose write is still being retried waits.
//!
//! One catchd writes a database at a time: the backend holds a session advisory lock
//! (taken again after a reconnect; if another process took it meanwhile, the store
//! fails and the server stops rather than write next to it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use postgres::{Client, NoTls, Row, Transaction};

use super::{Backend, Error, Snapshot, Write};
use crate::addr::Addr;
use crate::auth::{Role, User};
use crate::bhr::model::{Block, Entry, SourceBlacklistEntry, UserId, WhitelistEntry};
use crate::bhr::registry::Change;
use crate::cnr::{RuleId, WatchState};
use crate::time::Time;

/// The advisory lock key of the single writer ("catchd").
const WRITER_LOCK: i64 = 0x6361_7463_6864;

/// The advisory lock key migrations run under.
const MIGRATION_LOCK: i64 = 0x6361_7463_6d67;

/// How long the writer keeps trying to reconnect before the store fails.
const RECONNECT_FOR: Duration = Duration::from_secs(120);

/// Schema versions, applied in order; `catchd_schema` records how many ran.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE users (
        id BIGINT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL,
        token_hash BYTEA UNIQUE,
        password_hash TEXT
    );
    CREATE TABLE blocks (
        id BIGINT PRIMARY KEY,
        cidr TEXT NOT NULL,
        who BIGINT NOT NULL,
        source TEXT NOT NULL,
        why TEXT NOT NULL,
        added BIGINT NOT NULL,
        unblock_at BIGINT,
        skip_whitelist BOOLEAN NOT NULL,
        forced_unblock BOOLEAN NOT NULL,
        unblock_why TEXT NOT NULL,
        unblock_who BIGINT
    );
    CREATE INDEX blocks_cidr ON blocks (cidr);
    CREATE TABLE block_entries (
        id BIGINT PRIMARY KEY,
        block BIGINT NOT NULL REFERENCES blocks (id),
        ident TEXT NOT NULL,
        added BIGINT NOT NULL,
        removed BIGINT,
        unblock_at BIGINT,
        UNIQUE (block, ident)
    );
    CREATE TABLE whitelist (
        id BIGINT PRIMARY KEY,
        cidr TEXT NOT NULL,
        who BIGINT NOT NULL,
        why TEXT NOT NULL,
        added BIGINT NOT NULL
    );
    CREATE TABLE source_blacklist (
        id BIGINT PRIMARY KEY,
        source TEXT NOT NULL UNIQUE,
        who BIGINT NOT NULL,
        why TEXT NOT NULL,
        added BIGINT NOT NULL
    );
    CREATE TABLE cr_watch (
        addr TEXT PRIMARY KEY,
        start BIGINT NOT NULL,
        expire_ref BIGINT NOT NULL,
        rule BIGINT,
        location TEXT,
        reblocked BIGINT NOT NULL,
        step INTEGER NOT NULL,
        adopted BOOLEAN NOT NULL
    );
    CREATE TABLE cr_meta (
        key TEXT PRIMARY KEY,
        value BIGINT NOT NULL
    );
    CREATE TABLE scan_position (
        path TEXT PRIMARY KEY,
        dev BIGINT NOT NULL,
        inode BIGINT NOT NULL,
        first_line BIGINT NOT NULL,
        off BIGINT NOT NULL
    );
    CREATE TABLE watchlist (
        key TEXT PRIMARY KEY,
        failures BIGINT NOT NULL,
        watch_until BIGINT,
        block_until BIGINT
    );",
    // 2: the change log nodes of a cluster catch up from (in commit order).
    "CREATE TABLE catchd_log (
        seq BIGSERIAL PRIMARY KEY,
        kind TEXT NOT NULL,
        id BIGINT NOT NULL,
        at TIMESTAMPTZ NOT NULL DEFAULT now()
    );",
    // 3: leases (one catch-and-release owner per database).
    "CREATE TABLE catchd_lease (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        expires TIMESTAMPTZ NOT NULL
    );",
];

/// The channel a commit that changed registry rows notifies.
pub const CHANGES_CHANNEL: &str = "catchd_changes";

/// The log kind and row id of a registry change.
pub fn log_key(ch: &Change) -> (&'static str, i64) {
    match ch {
        Change::Block(b) => ("block", b.id as i64),
        Change::Entry(e) => ("entry", e.id as i64),
        Change::Whitelist(w) => ("whitelist", w.id as i64),
        Change::WhitelistDeleted(id) => ("whitelist", *id as i64),
        Change::SourceBlacklist(s) => ("source_blacklist", s.id as i64),
        Change::SourceBlacklistDeleted(id) => ("source_blacklist", *id as i64),
    }
}

fn db(e: postgres::Error) -> Error {
    // The server's own message says more than "db error".
    Error::Db(match e.as_db_error() {
        Some(d) => format!("{} ({})", d.message(), d.code().code()),
        None => e.to_string(),
    })
}

/// Whether an error means the connection is gone or the server is going away (rather
/// than a bad statement): retrying on a new connection is right.
fn is_connection(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        None => true,
        // Class 08: connection exception; class 57: operator intervention (shutdown,
        // crash, cannot connect now); 40001/40P01: serialization failure, deadlock.
        Some(c) => {
            let c = c.code();
            c.starts_with("08") || c.starts_with("57") || c == "40001" || c == "40P01"
        }
    }
}

/// A PostgreSQL database.
pub struct Postgres {
    url: String,
    client: Option<Client>,
    /// Commits since the change log was last pruned.
    since_prune: u32,
    /// Holds the writer lock (a `catchd user` connection does not).
    writer: bool,
}

fn connect(url: &str) -> Result<Client, postgres::Error> {
    let mut cfg: postgres::Config = url.parse()?;
    if cfg.get_connect_timeout().is_none() {
        cfg.connect_timeout(Duration::from_secs(10));
    }
    // A statement that hangs (a lock held by someone else) fails instead of stalling the
    // writer forever.
    let mut c = cfg.connect(NoTls)?;
    c.batch_execute("SET statement_timeout = '60s'")?;
    Ok(c)
}

fn migrate(c: &mut Client) -> Result<(), Error> {
    let mut tx = c.transaction().map_err(db)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(db)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS catchd_schema (version INTEGER NOT NULL)")
        .map_err(db)?;
    let have = tx
        .query_opt("SELECT version FROM catchd_schema", &[])
        .map_err(db)?
        .map_or(0, |r| r.get::<_, i32>(0) as usize);
    if have > MIGRATIONS.len() {
        return Err(Error::Corrupt(format!(
            "schema version {have} is newer than this catchd knows ({})",
            MIGRATIONS.len()
        )));
    }
    for sql in &MIGRATIONS[have..] {
        tx.batch_execute(sql).map_err(db)?;
    }
    tx.execute("DELETE FROM catchd_schema", &[]).map_err(db)?;
    tx.execute(
        "INSERT INTO catchd_schema (version) VALUES ($1)",
        &[&(MIGRATIONS.len() as i32)],
    )
    .map_err(db)?;
    tx.commit().map_err(db)
}

fn take_writer_lock(c: &mut Client) -> Result<(), Error> {
    let ok: bool = c
        .query_one("SELECT pg_try_advisory_lock($1)", &[&WRITER_LOCK])
        .map_err(db)?
        .get(0);
    if ok {
        Ok(())
    } else {
        Err(Error::Db(
            "another catchd is using this database (it holds the writer lock)".into(),
        ))
    }
}

impl Postgres {
    /// Connects, brings the schema up to date and takes the writer lock.
    ///
    /// # Errors
    /// [`Error::Open`].
    pub fn open(url: &str) -> Result<Postgres, Error> {
        Postgres::open_with(url, true)
    }

    /// Connects and migrates without taking the writer lock: for `catchd user`, which
    /// only touches user rows.
    ///
    /// # Errors
    /// [`Error::Open`].
    pub fn open_shared(url: &str) -> Result<Postgres, Error> {
        Postgres::open_with(url, false)
    }

    fn open_with(url: &str, writer: bool) -> Result<Postgres, Error> {
        let open_err = |msg: String| Error::Open {
            path: redact(url).into(),
            msg,
        };
        let mut c = connect(url).map_err(|e| open_err(e.to_string()))?;
        migrate(&mut c).map_err(|e| open_err(e.to_string()))?;
        if writer {
            take_writer_lock(&mut c).map_err(|e| open_err(e.to_string()))?;
        }
        Ok(Postgres {
            url: url.to_string(),
            client: Some(c),
            since_prune: 0,
            writer,
        })
    }

    /// The client, reconnecting (and retaking the writer lock) if needed.
    fn client(&mut self) -> Result<&mut Client, Error> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = None;
            let started = Instant::now();
            let mut wait = Duration::from_millis(100);
            let c = loop {
                match connect(&self.url) {
                    Ok(mut c) => {
                        if self.writer {
                            take_writer_lock(&mut c).map_err(|_| Error::Failed)?;
                        }
                        tracing::info!("Store: reconnected to PostgreSQL.");
                        break c;
                    }
                    Err(e) if started.elapsed() < RECONNECT_FOR => {
                        tracing::warn!(error = %e, "Store: PostgreSQL unreachable; retrying.");
                        std::thread::sleep(wait);
                        wait = (wait * 2).min(Duration::from_secs(5));
                    }
                    Err(e) => return Err(Error::Db(format!("PostgreSQL unreachable: {e}"))),
                }
            };
            self.client = Some(c);
        }
        Ok(self.client.as_mut().expect("connected"))
    }

    /// Runs `f`, reconnecting and running it again when the connection broke.
    fn with_retry<T>(
        &mut self,
        mut f: impl FnMut(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, Error> {
        let started = Instant::now();
        loop {
            let c = self.client()?;
            match f(c) {
                Ok(v) => return Ok(v),
                Err(e) if is_connection(&e) && started.elapsed() < RECONNECT_FOR => {
                    tracing::warn!(error = %e, "Store: the PostgreSQL connection broke; retrying.");
                    self.client = None;
                }
                Err(e) => return Err(db(e)),
            }
        }
    }
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

fn time(v: i64) -> Time {
    Time::from_micros(v)
}

fn net(s: &str) -> Result<IpNet, Error> {
    s.parse()
        .map_err(|_| Error::Corrupt(format!("bad network `{s}`")))
}

fn user(r: &Row) -> Result<User, Error> {
    let name: String = r.get(1);
    let role: String = r.get(2);
    let role: Role = role
        .parse()
        .map_err(|e: crate::auth::UnknownRole| Error::Corrupt(e.to_string()))?;
    let token_hash = match r.get::<_, Option<Vec<u8>>>(3) {
        Some(t) => Some(
            <[u8; 32]>::try_from(t.as_slice())
                .map_err(|_| Error::Corrupt(format!("bad token hash for user {name}")))?,
        ),
        None => None,
    };
    Ok(User {
        id: r.get::<_, i64>(0) as UserId,
        name,
        role,
        token_hash,
        password_hash: r.get(4),
    })
}

/// The columns [`block_row`] reads, in order.
pub(super) const BLOCK_COLUMNS: &str = "id, cidr, who, source, why, added, unblock_at, \
     skip_whitelist, forced_unblock, unblock_why, unblock_who";
/// The columns [`entry_row`] reads.
pub(super) const ENTRY_COLUMNS: &str = "id, block, ident, added, removed, unblock_at";
/// The columns [`whitelist_row`] reads.
pub(super) const WHITELIST_COLUMNS: &str = "id, cidr, who, why, added";
/// The columns [`source_blacklist_row`] reads.
pub(super) const SOURCE_BLACKLIST_COLUMNS: &str = "id, source, who, why, added";

/// A `blocks` row ([`BLOCK_COLUMNS`]).
pub(super) fn block_row(r: &Row) -> Result<Block, Error> {
    Ok(Block {
        id: r.get::<_, i64>(0) as u64,
        cidr: net(r.get(1))?,
        who: r.get::<_, i64>(2) as UserId,
        source: Arc::from(r.get::<_, String>(3)),
        why: Arc::from(r.get::<_, String>(4)),
        added: time(r.get(5)),
        unblock_at: r.get::<_, Option<i64>>(6).map(time),
        skip_whitelist: r.get(7),
        forced_unblock: r.get(8),
        unblock_why: Arc::from(r.get::<_, String>(9)),
        unblock_who: r.get::<_, Option<i64>>(10).map(|v| v as UserId),
    })
}

/// A `block_entries` row ([`ENTRY_COLUMNS`]).
pub(super) fn entry_row(r: &Row) -> Entry {
    Entry {
        id: r.get::<_, i64>(0) as u64,
        block: r.get::<_, i64>(1) as u64,
        ident: Arc::from(r.get::<_, String>(2)),
        added: time(r.get(3)),
        removed: r.get::<_, Option<i64>>(4).map(time),
        unblock_at: r.get::<_, Option<i64>>(5).map(time),
    }
}

/// A `whitelist` row ([`WHITELIST_COLUMNS`]).
pub(super) fn whitelist_row(r: &Row) -> Result<WhitelistEntry, Error> {
    Ok(WhitelistEntry {
        id: r.get::<_, i64>(0) as u64,
        cidr: net(r.get(1))?,
        who: r.get::<_, i64>(2) as UserId,
        why: Arc::from(r.get::<_, String>(3)),
        added: time(r.get(4)),
    })
}

/// A `source_blacklist` row ([`SOURCE_BLACKLIST_COLUMNS`]).
pub(super) fn source_blacklist_row(r: &Row) -> SourceBlacklistEntry {
    SourceBlacklistEntry {
        id: r.get::<_, i64>(0) as u64,
        source: Arc::from(r.get::<_, String>(1)),
        who: r.get::<_, i64>(2) as UserId,
        why: Arc::from(r.get::<_, String>(3)),
        added: time(r.get(4)),
    }
}

const USER_COLUMNS: &str = "id, name, role, token_hash, password_hash";

fn load(c: &mut Client) -> Result<Snapshot, Error> {
    let q = |c: &mut Client, sql: &str| c.query(sql, &[]).map_err(db);
    let blocks = q(
        c,
        &format!("SELECT {BLOCK_COLUMNS} FROM blocks ORDER BY id"),
    )?
    .iter()
    .map(block_row)
    .collect::<Result<Vec<_>, _>>()?;
    let entries = q(
        c,
        &format!("SELECT {ENTRY_COLUMNS} FROM block_entries ORDER BY id"),
    )?
    .iter()
    .map(entry_row)
    .collect();
    let whitelist = q(
        c,
        &format!("SELECT {WHITELIST_COLUMNS} FROM whitelist ORDER BY id"),
    )?
    .iter()
    .map(whitelist_row)
    .collect::<Result<Vec<_>, _>>()?;
    let source_blacklist = q(
        c,
        &format!("SELECT {SOURCE_BLACKLIST_COLUMNS} FROM source_blacklist ORDER BY id"),
    )?
    .iter()
    .map(source_blacklist_row)
    .collect();
    let mut watch = Vec::new();
    for r in q(
        c,
        "SELECT addr, start, expire_ref, rule, location, reblocked, step, adopted FROM cr_watch",
    )? {
        let text: String = r.get(0);
        let addr: Addr = text
            .parse()
            .map_err(|_| Error::Corrupt(format!("bad address `{text}`")))?;
        watch.push((
            addr,
            WatchState {
                start: time(r.get(1)),
                expire_ref: time(r.get(2)),
                rule: r
                    .get::<_, Option<i64>>(3)
                    .and_then(|v| u32::try_from(v).ok())
                    .and_then(RuleId::new),
                location: r.get::<_, Option<String>>(4).map(Arc::from),
                reblocked: r.get::<_, i64>(5) as u32,
                step: r.get::<_, i32>(6) as u8,
                adopted: r.get(7),
            },
        ));
    }
    let cr_clock = c
        .query_opt("SELECT value FROM cr_meta WHERE key = 'clock'", &[])
        .map_err(db)?
        .map(|r| time(r.get(0)));
    let scan_positions = q(
        c,
        "SELECT path, dev, inode, first_line, off FROM scan_position",
    )?
    .iter()
    .map(|r| {
        (
            r.get::<_, String>(0),
            crate::scan::tail::Position {
                dev: r.get::<_, i64>(1) as u64,
                inode: r.get::<_, i64>(2) as u64,
                first_line: r.get::<_, i64>(3) as u64,
                offset: r.get::<_, i64>(4) as u64,
            },
        )
    })
    .collect();
    let watchlist = q(
        c,
        "SELECT key, failures, watch_until, block_until FROM watchlist",
    )?
    .iter()
    .map(|r| {
        (
            r.get::<_, String>(0),
            crate::watchlist::Entry {
                failures: r.get::<_, i64>(1) as u32,
                watch_until: r.get::<_, Option<i64>>(2).map(time),
                block_until: r.get::<_, Option<i64>>(3).map(time),
            },
        )
    })
    .collect();
    let mut users = Vec::new();
    for r in q(c, &format!("SELECT {USER_COLUMNS} FROM users ORDER BY id"))? {
        users.push(user(&r)?);
    }
    Ok(Snapshot {
        blocks,
        entries,
        whitelist,
        source_blacklist,
        users,
        watch,
        cr_clock,
        scan_positions,
        watchlist,
    })
}

fn apply_one(tx: &mut Transaction<'_>, w: &Write) -> Result<(), postgres::Error> {
    let us = |t: Time| t.as_micros();
    match w {
        Write::Bhr(Change::Block(b)) => {
            tx.execute(
                "INSERT INTO blocks (id, cidr, who, source, why, added, unblock_at,
                     skip_whitelist, forced_unblock, unblock_why, unblock_who)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                 ON CONFLICT (id) DO UPDATE SET cidr = EXCLUDED.cidr, who = EXCLUDED.who,
                     source = EXCLUDED.source, why = EXCLUDED.why, added = EXCLUDED.added,
                     unblock_at = EXCLUDED.unblock_at, skip_whitelist = EXCLUDED.skip_whitelist,
                     forced_unblock = EXCLUDED.forced_unblock,
                     unblock_why = EXCLUDED.unblock_why, unblock_who = EXCLUDED.unblock_who",
                &[
                    &(b.id as i64),
                    &b.cidr.to_string(),
                    &i64::from(b.who),
                    &&*b.source,
                    &&*b.why,
                    &us(b.added),
                    &b.unblock_at.map(us),
                    &b.skip_whitelist,
                    &b.forced_unblock,
                    &&*b.unblock_why,
                    &b.unblock_who.map(i64::from),
                ],
            )?;
        }
        Write::Bhr(Change::Entry(e)) => {
            tx.execute(
                "DELETE FROM block_entries WHERE id = $1 OR (block = $2 AND ident = $3)",
                &[&(e.id as i64), &(e.block as i64), &&*e.ident],
            )?;
            tx.execute(
                "INSERT INTO block_entries (id, block, ident, added, removed, unblock_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &(e.id as i64),
                    &(e.block as i64),
                    &&*e.ident,
                    &us(e.added),
                    &e.removed.map(us),
                    &e.unblock_at.map(us),
                ],
            )?;
        }
        Write::Bhr(Change::Whitelist(w)) => {
            tx.execute(
                "INSERT INTO whitelist (id, cidr, who, why, added) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (id) DO UPDATE SET cidr = EXCLUDED.cidr, who = EXCLUDED.who,
                     why = EXCLUDED.why, added = EXCLUDED.added",
                &[
                    &(w.id as i64),
                    &w.cidr.to_string(),
                    &i64::from(w.who),
                    &&*w.why,
                    &us(w.added),
                ],
            )?;
        }
        Write::Bhr(Change::WhitelistDeleted(id)) => {
            tx.execute("DELETE FROM whitelist WHERE id = $1", &[&(*id as i64)])?;
        }
        Write::Bhr(Change::SourceBlacklist(s)) => {
            tx.execute(
                "DELETE FROM source_blacklist WHERE id = $1 OR source = $2",
                &[&(s.id as i64), &&*s.source],
            )?;
            tx.execute(
                "INSERT INTO source_blacklist (id, source, who, why, added) VALUES ($1, $2, $3, $4, $5)",
                &[
                    &(s.id as i64),
                    &&*s.source,
                    &i64::from(s.who),
                    &&*s.why,
                    &us(s.added),
                ],
            )?;
        }
        Write::Bhr(Change::SourceBlacklistDeleted(id)) => {
            tx.execute(
                "DELETE FROM source_blacklist WHERE id = $1",
                &[&(*id as i64)],
            )?;
        }
        Write::User(u) => {
            tx.execute(
                "DELETE FROM users WHERE id = $1 OR name = $2 OR token_hash = $3",
                &[&i64::from(u.id), &u.name, &u.token_hash.map(|h| h.to_vec())],
            )?;
            tx.execute(
                "INSERT INTO users (id, name, role, token_hash, password_hash)
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    &i64::from(u.id),
                    &u.name,
                    &u.role.as_str(),
                    &u.token_hash.map(|h| h.to_vec()),
                    &u.password_hash,
                ],
            )?;
        }
        Write::UserDeleted(id) => {
            tx.execute("DELETE FROM users WHERE id = $1", &[&i64::from(*id)])?;
        }
        Write::Watch(a, w) => {
            tx.execute(
                "INSERT INTO cr_watch (addr, start, expire_ref, rule, location, reblocked, step, adopted)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (addr) DO UPDATE SET start = EXCLUDED.start,
                     expire_ref = EXCLUDED.expire_ref, rule = EXCLUDED.rule,
                     location = EXCLUDED.location, reblocked = EXCLUDED.reblocked,
                     step = EXCLUDED.step, adopted = EXCLUDED.adopted",
                &[
                    &a.to_string(),
                    &us(w.start),
                    &us(w.expire_ref),
                    &w.rule.map(|r| i64::from(r.get())),
                    &w.location.as_deref(),
                    &i64::from(w.reblocked),
                    &i32::from(w.step),
                    &w.adopted,
                ],
            )?;
        }
        Write::Unwatch(a) => {
            tx.execute("DELETE FROM cr_watch WHERE addr = $1", &[&a.to_string()])?;
        }
        Write::CrClock(t) => {
            tx.execute(
                "INSERT INTO cr_meta (key, value) VALUES ('clock', $1)
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                &[&us(*t)],
            )?;
        }
        Write::ScanPosition(path, p) => {
            tx.execute(
                "INSERT INTO scan_position (path, dev, inode, first_line, off)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (path) DO UPDATE SET dev = EXCLUDED.dev, inode = EXCLUDED.inode,
                     first_line = EXCLUDED.first_line, off = EXCLUDED.off",
                &[
                    path,
                    &(p.dev as i64),
                    &(p.inode as i64),
                    &(p.first_line as i64),
                    &(p.offset as i64),
                ],
            )?;
        }
        Write::WatchItem(key, Some(e)) => {
            tx.execute(
                "INSERT INTO watchlist (key, failures, watch_until, block_until)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (key) DO UPDATE SET failures = EXCLUDED.failures,
                     watch_until = EXCLUDED.watch_until, block_until = EXCLUDED.block_until",
                &[
                    key,
                    &i64::from(e.failures),
                    &e.watch_until.map(us),
                    &e.block_until.map(us),
                ],
            )?;
        }
        Write::WatchItem(key, None) => {
            tx.execute("DELETE FROM watchlist WHERE key = $1", &[key])?;
        }
    }
    Ok(())
}

impl Backend for Postgres {
    fn load(&mut self) -> Result<Snapshot, Error> {
        let c = self.client()?;
        load(c)
    }

    fn apply(&mut self, batch: &[&[Write]]) -> Result<(), Error> {
        self.with_retry(|c| {
            let mut tx = c.transaction()?;
            let mut logged = false;
            for writes in batch {
                for w in *writes {
                    apply_one(&mut tx, w)?;
                    if let Write::Bhr(ch) = w {
                        let (kind, id) = log_key(ch);
                        tx.execute(
                            "INSERT INTO catchd_log (kind, id) VALUES ($1, $2)",
                            &[&kind, &id],
                        )?;
                        logged = true;
                    }
                }
            }
            if logged {
                tx.batch_execute(&format!("NOTIFY {CHANGES_CHANNEL}"))?;
            }
            tx.commit()
        })?;
        // Nodes catch up within seconds, and load everything when they start: a day of
        // change log is plenty.
        self.since_prune += 1;
        if self.since_prune >= 4096 {
            self.since_prune = 0;
            self.with_retry(|c| {
                c.execute(
                    "DELETE FROM catchd_log WHERE at < now() - interval '1 day'",
                    &[],
                )
            })?;
        }
        Ok(())
    }

    fn user_by_token(&mut self, hash: &[u8; 32]) -> Result<Option<User>, Error> {
        let row = self.with_retry(|c| {
            c.query_opt(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE token_hash = $1"),
                &[&hash.as_slice()],
            )
        })?;
        row.as_ref().map(user).transpose()
    }

    fn user_by_name(&mut self, name: &str) -> Result<Option<User>, Error> {
        let row = self.with_retry(|c| {
            c.query_opt(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE name = $1"),
                &[&name],
            )
        })?;
        row.as_ref().map(user).transpose()
    }

    fn users(&mut self) -> Result<Vec<User>, Error> {
        let rows = self.with_retry(|c| {
            c.query(
                &format!("SELECT {USER_COLUMNS} FROM users ORDER BY id"),
                &[],
            )
        })?;
        rows.iter().map(user).collect()
    }

    fn next_user_id(&mut self) -> Result<UserId, Error> {
        let v: i64 = self
            .with_retry(|c| c.query_one("SELECT COALESCE(MAX(id), 0) + 1 FROM users", &[]))?
            .get(0);
        Ok(v as UserId)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            super::redact("postgres://bhr:s3cret@db:5432/bhr"),
            "postgres://bhr:***@db:5432/bhr"
        );
        assert_eq!(
            super::redact("postgres://bhr@db/bhr"),
            "postgres://bhr@db/bhr"
        );
    }
}
