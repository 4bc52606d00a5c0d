//! PostgreSQL, for sites that keep their data in a database server (as the original BHR
//! does). Selected by a `postgres://` URL in `server.db` / `store` or `--db`.
//!
//! The tables are SQLite's, described once in [`schema`] (times as
//! microseconds, networks as text), and are brought up to date by versioned migrations under an advisory lock, so nodes starting at once
//! do not race. Every write is an upsert or a delete, so a batch whose commit went
//! unanswered (the connection broke) can be applied again safely: the writer reconnects,
//! with back-off, and retries the whole batch before it answers anyone. An acknowledged
//! write is therefore committed; a request whose write is still being retried waits.
//!
//! One catchd writes a database at a time: the backend holds a session advisory lock
//! (taken again after a reconnect; if another process took it meanwhile, the store
//! fails and the server stops rather than write next to it).

use std::time::{Duration, Instant};

use bytes::BytesMut;
use postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use postgres::{Client, NoTls, Row};

use super::schema::{self, Dialect, Sql, Value};
use super::{Driver, Error, Snapshot, Write};
use crate::auth::User;
use crate::bhr::model::UserId;
use crate::bhr::registry::Change;

/// The advisory lock key of the single writer ("catchd").
const WRITER_LOCK: i64 = 0x6361_7463_6864;

/// The advisory lock key migrations run under.
const MIGRATION_LOCK: i64 = 0x6361_7463_6d67;

/// How long the writer keeps trying to reconnect before the store fails.
const RECONNECT_FOR: Duration = Duration::from_secs(120);

/// Schema versions, applied in order; `catchd_schema` records how many ran. The tables
/// are described once, in [`schema`]; these create them (and PostgreSQL's own tables).
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
///
/// # Errors
/// [`Error::Db`] for an id past `i64::MAX`.
fn log_key(ch: &Change) -> Result<(&'static str, i64), Error> {
    let (kind, id) = match ch {
        Change::Block(b) => ("block", b.id),
        Change::Entry(e) => ("entry", e.id),
        Change::Whitelist(w) => ("whitelist", w.id),
        Change::WhitelistDeleted(id) => ("whitelist", *id),
        Change::SourceBlacklist(s) => ("source_blacklist", s.id),
        Change::SourceBlacklistDeleted(id) => ("source_blacklist", *id),
    };
    Ok((kind, schema::key(id)?))
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
        .map_or(0, |r| {
            usize::try_from(r.get::<_, i32>(0)).unwrap_or(usize::MAX)
        });
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
        &[&i32::try_from(MIGRATIONS.len()).expect("a few migrations")],
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

impl schema::Columns for Row {
    fn int(&self, i: usize) -> Result<Option<i64>, Error> {
        let ty = self.columns()[i].type_();
        let v = if *ty == Type::INT2 {
            self.try_get::<_, Option<i16>>(i).map(|v| v.map(i64::from))
        } else if *ty == Type::INT4 {
            self.try_get::<_, Option<i32>>(i).map(|v| v.map(i64::from))
        } else {
            self.try_get::<_, Option<i64>>(i)
        };
        v.map_err(unexpected)
    }

    fn text(&self, i: usize) -> Result<Option<String>, Error> {
        self.try_get(i).map_err(unexpected)
    }

    fn flag(&self, i: usize) -> Result<Option<bool>, Error> {
        self.try_get(i).map_err(unexpected)
    }

    fn bytes(&self, i: usize) -> Result<Option<Vec<u8>>, Error> {
        self.try_get(i).map_err(unexpected)
    }
}

fn unexpected(e: postgres::Error) -> Error {
    Error::Corrupt(e.to_string())
}

impl ToSql for Value<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            // The column decides the width; a value that does not fit it is an error.
            Value::Int(v) if *ty == Type::INT2 => i16::try_from(*v)?.to_sql(ty, out),
            Value::Int(v) if *ty == Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
            Value::Int(v) => v.to_sql(ty, out),
            Value::Bool(b) => b.to_sql(ty, out),
            Value::Text(t) => t.as_ref().to_sql(ty, out),
            Value::Bytes(b) => b.to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        [Type::INT2, Type::INT4, Type::INT8, Type::BOOL, Type::BYTEA].contains(ty)
            || <&str as ToSql>::accepts(ty)
    }

    to_sql_checked!();
}

/// Parameters as the client takes them.
fn params<'v>(values: &'v [&Value<'_>]) -> Vec<&'v (dyn ToSql + Sync)> {
    values.iter().map(|v| *v as &(dyn ToSql + Sync)).collect()
}

impl schema::Query for Postgres {
    fn rows(
        &mut self,
        sql: &str,
        values: &[&Value<'_>],
        each: &mut dyn FnMut(&dyn schema::Columns) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let rows = self.with_retry(|c| c.query(sql, &params(values)))?;
        rows.iter().try_for_each(|r| each(r))
    }
}

impl Driver for Postgres {
    fn load(&mut self) -> Result<Snapshot, Error> {
        schema::load(self, Dialect::Postgres)
    }

    fn apply(&mut self, batch: &[&[Write]]) -> Result<(), Error> {
        // Everything that can fail without the database is worked out first, so the
        // retried transaction only repeats statements.
        let mut ops = Vec::new();
        for w in batch.iter().flat_map(|ws| ws.iter()) {
            let logged = match w {
                Write::Bhr(ch) => Some(log_key(ch)?),
                _ => None,
            };
            ops.push((schema::op(w)?, logged));
        }
        let sql = Sql::of(Dialect::Postgres);
        self.with_retry(|c| {
            let mut tx = c.transaction()?;
            for (op, _) in &ops {
                sql.run(op, |s, values| tx.execute(s, &params(values)).map(drop))?;
            }
            for (kind, id) in ops.iter().filter_map(|(_, logged)| *logged) {
                tx.execute(
                    "INSERT INTO catchd_log (kind, id) VALUES ($1, $2)",
                    &[&kind, &id],
                )?;
            }
            if ops.iter().any(|(_, logged)| logged.is_some()) {
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
        let by = ("token_hash", Value::Bytes(hash));
        Ok(schema::users(self, Dialect::Postgres, Some(by))?
            .into_iter()
            .next())
    }

    fn user_by_name(&mut self, name: &str) -> Result<Option<User>, Error> {
        let by = ("name", Value::Text(name.into()));
        Ok(schema::users(self, Dialect::Postgres, Some(by))?
            .into_iter()
            .next())
    }

    fn users(&mut self) -> Result<Vec<User>, Error> {
        schema::users(self, Dialect::Postgres, None)
    }

    fn next_user_id(&mut self) -> Result<UserId, Error> {
        schema::next_user_id(self)
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
