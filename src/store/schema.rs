//! The one description of what catchd stores, for both databases: the tables and their
//! columns, how each [`Write`] becomes a row to put or a key to delete, and how rows read
//! back into the domain's types.
//!
//! [`sqlite`](super::sqlite) and [`postgres`](super::postgres) keep only what really
//! differs: how they connect, lock and migrate, and how they spell a parameter
//! ([`Dialect`]). Both put a row the same way: delete the rows that clash with it on a
//! unique constraint other than the key, then `INSERT … ON CONFLICT (key) DO UPDATE`.
//! Adding a column is one edit here (its name in the [`Table`], its value in [`op`], its
//! reading in the row function) plus one migration per dialect.
//!
//! Numbers cross the boundary checked: an id that does not fit the other side's width is
//! an error, never a wrapped value. Device and inode numbers are the exception: they are
//! opaque 64-bit values, stored as their bit pattern ([`bits`]).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use ipnet::IpNet;

use super::{Error, Snapshot, Write};
use crate::addr::Addr;
use crate::auth::{Role, User};
use crate::bhr::model::{Block, Entry, SourceBlacklistEntry, UserId, WhitelistEntry};
use crate::bhr::registry::Change;
use crate::cnr::{RuleId, WatchState};
use crate::scan::tail::Position;
use crate::time::Time;

/// A stored table.
#[derive(Debug)]
pub(super) struct Table {
    /// Its name.
    pub name: &'static str,
    /// Its columns in order; the first is the primary key.
    pub columns: &'static [&'static str],
    /// Unique constraints besides the key: putting a row replaces rows that clash on one.
    pub unique: &'static [&'static [&'static str]],
}

impl Table {
    /// The columns, comma-separated.
    pub fn column_list(&self) -> String {
        self.columns.join(", ")
    }

    fn key(&self) -> &'static str {
        self.columns[0]
    }

    fn position(&self, column: &str) -> usize {
        self.columns
            .iter()
            .position(|c| *c == column)
            .expect("a unique constraint names a column of its table")
    }
}

/// User accounts.
pub(super) const USERS: Table = Table {
    name: "users",
    columns: &["id", "name", "role", "token_hash", "password_hash"],
    unique: &[&["name"], &["token_hash"]],
};

/// BHR blocks.
pub(super) const BLOCKS: Table = Table {
    name: "blocks",
    columns: &[
        "id",
        "cidr",
        "who",
        "source",
        "why",
        "added",
        "unblock_at",
        "skip_whitelist",
        "forced_unblock",
        "unblock_why",
        "unblock_who",
    ],
    unique: &[],
};

/// A block's entry in one block manager's queue.
pub(super) const ENTRIES: Table = Table {
    name: "block_entries",
    columns: &["id", "block", "ident", "added", "removed", "unblock_at"],
    unique: &[&["block", "ident"]],
};

/// Whitelisted networks.
pub(super) const WHITELIST: Table = Table {
    name: "whitelist",
    columns: &["id", "cidr", "who", "why", "added"],
    unique: &[],
};

/// Sources whose blocks are refused.
pub(super) const SOURCE_BLACKLIST: Table = Table {
    name: "source_blacklist",
    columns: &["id", "source", "who", "why", "added"],
    unique: &[&["source"]],
};

/// Catch-and-release's watched addresses.
pub(super) const CR_WATCH: Table = Table {
    name: "cr_watch",
    columns: &[
        "addr",
        "start",
        "expire_ref",
        "rule",
        "location",
        "reblocked",
        "step",
        "adopted",
    ],
    unique: &[],
};

/// Catch-and-release's single values (the time its state is current to).
pub(super) const CR_META: Table = Table {
    name: "cr_meta",
    columns: &["key", "value"],
    unique: &[],
};

/// Where the log scanner is in each file.
pub(super) const SCAN_POSITION: Table = Table {
    name: "scan_position",
    columns: &["path", "dev", "inode", "first_line", "off"],
    unique: &[],
};

/// The watchlist.
pub(super) const WATCHLIST: Table = Table {
    name: "watchlist",
    columns: &["key", "failures", "watch_until", "block_until"],
    unique: &[],
};

const TABLES: [&Table; 9] = [
    &USERS,
    &BLOCKS,
    &ENTRIES,
    &WHITELIST,
    &SOURCE_BLACKLIST,
    &CR_WATCH,
    &CR_META,
    &SCAN_POSITION,
    &WATCHLIST,
];

/// A value bound to a parameter.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Value<'a> {
    /// SQL `NULL`.
    Null,
    /// An integer (`INTEGER` / `BIGINT`, or narrower in PostgreSQL).
    Int(i64),
    /// A boolean (`INTEGER` 0/1 in SQLite, `BOOLEAN` in PostgreSQL).
    Bool(bool),
    /// Text.
    Text(Cow<'a, str>),
    /// Bytes (`BLOB` / `BYTEA`).
    Bytes(&'a [u8]),
}

impl<'a> Value<'a> {
    fn text(s: &'a str) -> Value<'a> {
        Value::Text(Cow::Borrowed(s))
    }

    fn owned(s: String) -> Value<'static> {
        Value::Text(Cow::Owned(s))
    }

    fn opt<T>(v: Option<T>, f: impl FnOnce(T) -> Value<'a>) -> Value<'a> {
        v.map_or(Value::Null, f)
    }
}

/// A time, as microseconds since the epoch.
fn us(t: Time) -> Value<'static> {
    Value::Int(t.as_micros())
}

/// A row id as the databases hold it (`BIGINT`).
///
/// # Errors
/// [`Error::Db`] for an id past `i64::MAX`, which the registry never hands out.
pub(super) fn key(id: u64) -> Result<i64, Error> {
    i64::try_from(id).map_err(|_| Error::Db(format!("id {id} does not fit a BIGINT column")))
}

/// An opaque 64-bit number (device, inode) stored in a signed column: its bit pattern.
pub(super) fn bits(v: u64) -> i64 {
    i64::from_ne_bytes(v.to_ne_bytes())
}

/// The inverse of [`bits`].
fn unbits(v: i64) -> u64 {
    u64::from_ne_bytes(v.to_ne_bytes())
}

/// What one [`Write`] does to the tables.
#[derive(Debug)]
pub(super) enum Op<'a> {
    /// Insert or replace a row (values in the table's column order).
    Put(&'static Table, Vec<Value<'a>>),
    /// Delete the row with this key.
    Delete(&'static Table, Value<'a>),
}

/// The rows a write puts or deletes.
///
/// # Errors
/// [`Error::Db`] when an id does not fit its column.
pub(super) fn op(w: &Write) -> Result<Op<'_>, Error> {
    let id = |v: u64| key(v).map(Value::Int);
    Ok(match w {
        Write::Bhr(Change::Block(b)) => Op::Put(
            &BLOCKS,
            vec![
                id(b.id)?,
                Value::owned(b.cidr.to_string()),
                Value::Int(b.who.into()),
                Value::text(&b.source),
                Value::text(&b.why),
                us(b.added),
                Value::opt(b.unblock_at, us),
                Value::Bool(b.skip_whitelist),
                Value::Bool(b.forced_unblock),
                Value::text(&b.unblock_why),
                Value::opt(b.unblock_who, |u| Value::Int(u.into())),
            ],
        ),
        Write::Bhr(Change::Entry(e)) => Op::Put(
            &ENTRIES,
            vec![
                id(e.id)?,
                id(e.block)?,
                Value::text(&e.ident),
                us(e.added),
                Value::opt(e.removed, us),
                Value::opt(e.unblock_at, us),
            ],
        ),
        Write::Bhr(Change::Whitelist(w)) => Op::Put(
            &WHITELIST,
            vec![
                id(w.id)?,
                Value::owned(w.cidr.to_string()),
                Value::Int(w.who.into()),
                Value::text(&w.why),
                us(w.added),
            ],
        ),
        Write::Bhr(Change::WhitelistDeleted(w)) => Op::Delete(&WHITELIST, id(*w)?),
        Write::Bhr(Change::SourceBlacklist(s)) => Op::Put(
            &SOURCE_BLACKLIST,
            vec![
                id(s.id)?,
                Value::text(&s.source),
                Value::Int(s.who.into()),
                Value::text(&s.why),
                us(s.added),
            ],
        ),
        Write::Bhr(Change::SourceBlacklistDeleted(s)) => Op::Delete(&SOURCE_BLACKLIST, id(*s)?),
        Write::User(u) => Op::Put(
            &USERS,
            vec![
                Value::Int(u.id.into()),
                Value::text(&u.name),
                Value::text(u.role.as_str()),
                Value::opt(u.token_hash.as_ref(), |h| Value::Bytes(h)),
                Value::opt(u.password_hash.as_deref(), Value::text),
            ],
        ),
        Write::UserDeleted(u) => Op::Delete(&USERS, Value::Int((*u).into())),
        Write::Watch(a, w) => Op::Put(
            &CR_WATCH,
            vec![
                Value::owned(a.to_string()),
                us(w.start),
                us(w.expire_ref),
                Value::opt(w.rule, |r| Value::Int(r.get().into())),
                Value::opt(w.location.as_deref(), Value::text),
                Value::Int(w.reblocked.into()),
                Value::Int(w.step.into()),
                Value::Bool(w.adopted),
            ],
        ),
        Write::Unwatch(a) => Op::Delete(&CR_WATCH, Value::owned(a.to_string())),
        Write::WatchNet(n, w) => Op::Put(
            &CR_WATCH,
            vec![
                Value::owned(n.to_string()),
                us(w.start),
                us(w.expire_ref),
                Value::opt(w.rule, |r| Value::Int(r.get().into())),
                Value::opt(w.location.as_deref(), Value::text),
                Value::Int(w.reblocked.into()),
                Value::Int(w.step.into()),
                Value::Bool(w.adopted),
            ],
        ),
        Write::UnwatchNet(n) => Op::Delete(&CR_WATCH, Value::owned(n.to_string())),
        Write::CrClock(t) => Op::Put(&CR_META, vec![Value::text("clock"), us(*t)]),
        Write::ScanPosition(path, p) => Op::Put(
            &SCAN_POSITION,
            vec![
                Value::text(path),
                Value::Int(bits(p.dev)),
                Value::Int(bits(p.inode)),
                Value::Int(bits(p.first_line)),
                Value::Int(bits(p.offset)),
            ],
        ),
        Write::WatchItem(k, Some(e)) => Op::Put(
            &WATCHLIST,
            vec![
                Value::text(k),
                Value::Int(e.failures.into()),
                Value::opt(e.watch_until, us),
                Value::opt(e.block_until, us),
            ],
        ),
        Write::WatchItem(k, None) => Op::Delete(&WATCHLIST, Value::text(k)),
    })
}

/// How a database spells what differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Dialect {
    /// `?1`, `?2`, …
    Sqlite,
    /// `$1`, `$2`, …
    Postgres,
}

impl Dialect {
    /// The `n`th parameter (from 1).
    pub fn param(self, n: usize) -> String {
        match self {
            Dialect::Sqlite => format!("?{n}"),
            Dialect::Postgres => format!("${n}"),
        }
    }
}

/// The statements of one table in one dialect.
#[derive(Debug)]
struct Statements {
    put: String,
    delete: String,
    /// One per unique constraint: deletes other rows holding the new row's values.
    clashes: Vec<(String, Vec<usize>)>,
}

/// Every statement of one dialect.
#[derive(Debug)]
pub(super) struct Sql {
    tables: HashMap<&'static str, Statements>,
}

impl Sql {
    /// The statements of `dialect`, written the first time they are asked for.
    pub fn of(dialect: Dialect) -> &'static Sql {
        static SQLITE: OnceLock<Sql> = OnceLock::new();
        static POSTGRES: OnceLock<Sql> = OnceLock::new();
        match dialect {
            Dialect::Sqlite => SQLITE.get_or_init(|| Sql::new(dialect)),
            Dialect::Postgres => POSTGRES.get_or_init(|| Sql::new(dialect)),
        }
    }

    fn new(dialect: Dialect) -> Sql {
        let p = |n| dialect.param(n);
        let tables = TABLES
            .iter()
            .map(|t| {
                let params: Vec<String> = (1..=t.columns.len()).map(p).collect();
                let updates: Vec<String> = t.columns[1..]
                    .iter()
                    .map(|c| format!("{c} = excluded.{c}"))
                    .collect();
                let put = format!(
                    "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) DO UPDATE SET {}",
                    t.name,
                    t.column_list(),
                    params.join(", "),
                    t.key(),
                    updates.join(", "),
                );
                let delete = format!("DELETE FROM {} WHERE {} = {}", t.name, t.key(), p(1));
                let clashes = t
                    .unique
                    .iter()
                    .map(|cols| {
                        let same: Vec<String> = cols
                            .iter()
                            .enumerate()
                            .map(|(i, c)| format!("{c} = {}", p(i + 1)))
                            .collect();
                        let sql = format!(
                            "DELETE FROM {} WHERE {} AND {} <> {}",
                            t.name,
                            same.join(" AND "),
                            t.key(),
                            p(cols.len() + 1),
                        );
                        let mut at: Vec<usize> = cols.iter().map(|c| t.position(c)).collect();
                        at.push(0);
                        (sql, at)
                    })
                    .collect();
                (
                    t.name,
                    Statements {
                        put,
                        delete,
                        clashes,
                    },
                )
            })
            .collect();
        Sql { tables }
    }

    /// Carries out `op` through `exec(statement, parameters)`.
    ///
    /// # Errors
    /// Whatever `exec` returns.
    pub fn run<E>(
        &self,
        op: &Op<'_>,
        mut exec: impl FnMut(&str, &[&Value<'_>]) -> Result<(), E>,
    ) -> Result<(), E> {
        match op {
            Op::Put(t, values) => {
                let s = &self.tables[t.name];
                for (sql, at) in &s.clashes {
                    let params: Vec<&Value<'_>> = at.iter().map(|i| &values[*i]).collect();
                    // A NULL never clashes (and `= NULL` would match nothing anyway).
                    if params.iter().all(|v| **v != Value::Null) {
                        exec(sql, &params)?;
                    }
                }
                let params: Vec<&Value<'_>> = values.iter().collect();
                exec(&s.put, &params)
            }
            Op::Delete(t, k) => exec(&self.tables[t.name].delete, &[k]),
        }
    }

    /// `SELECT <columns> FROM <table>` followed by `rest`.
    pub fn select(t: &Table, rest: &str) -> String {
        format!("SELECT {} FROM {} {rest}", t.column_list(), t.name)
    }
}

/// One row as read back: typed access to its columns, by position.
pub(super) trait Columns {
    /// An integer column (`None` for NULL).
    ///
    /// # Errors
    /// [`Error::Corrupt`] when the column holds something else.
    fn int(&self, i: usize) -> Result<Option<i64>, Error>;
    /// A text column.
    ///
    /// # Errors
    /// [`Error::Corrupt`] when the column holds something else.
    fn text(&self, i: usize) -> Result<Option<String>, Error>;
    /// A boolean column.
    ///
    /// # Errors
    /// [`Error::Corrupt`] when the column holds something else.
    fn flag(&self, i: usize) -> Result<Option<bool>, Error>;
    /// A bytes column.
    ///
    /// # Errors
    /// [`Error::Corrupt`] when the column holds something else.
    fn bytes(&self, i: usize) -> Result<Option<Vec<u8>>, Error>;
}

/// A row of a known table, read with messages that name the table and column.
struct Read<'r> {
    row: &'r dyn Columns,
    table: &'static Table,
}

impl Read<'_> {
    fn bad(&self, i: usize, why: impl std::fmt::Display) -> Error {
        Error::Corrupt(format!(
            "{}.{}: {why}",
            self.table.name, self.table.columns[i]
        ))
    }

    fn some<T>(&self, i: usize, v: Option<T>) -> Result<T, Error> {
        v.ok_or_else(|| self.bad(i, "NULL in a NOT NULL column"))
    }

    /// Reads column `i` with `get`, naming the table and column in an error.
    fn get<T>(
        &self,
        i: usize,
        get: fn(&dyn Columns, usize) -> Result<Option<T>, Error>,
    ) -> Result<Option<T>, Error> {
        get(self.row, i).map_err(|e| match e {
            Error::Corrupt(m) => self.bad(i, m),
            e => e,
        })
    }

    fn int(&self, i: usize) -> Result<i64, Error> {
        let v = self.get(i, |r, i| r.int(i))?;
        self.some(i, v)
    }

    fn number<T: TryFrom<i64>>(&self, i: usize) -> Result<T, Error> {
        let v = self.int(i)?;
        T::try_from(v).map_err(|_| self.bad(i, format!("{v} is out of range")))
    }

    fn opt_number<T: TryFrom<i64>>(&self, i: usize) -> Result<Option<T>, Error> {
        match self.get(i, |r, i| r.int(i))? {
            None => Ok(None),
            Some(v) => T::try_from(v)
                .map(Some)
                .map_err(|_| self.bad(i, format!("{v} is out of range"))),
        }
    }

    fn time(&self, i: usize) -> Result<Time, Error> {
        self.int(i).map(Time::from_micros)
    }

    fn opt_time(&self, i: usize) -> Result<Option<Time>, Error> {
        Ok(self.get(i, |r, i| r.int(i))?.map(Time::from_micros))
    }

    fn text(&self, i: usize) -> Result<String, Error> {
        let v = self.get(i, |r, i| r.text(i))?;
        self.some(i, v)
    }

    fn shared(&self, i: usize) -> Result<Arc<str>, Error> {
        self.text(i).map(Arc::from)
    }

    fn flag(&self, i: usize) -> Result<bool, Error> {
        let v = self.get(i, |r, i| r.flag(i))?;
        self.some(i, v)
    }

    fn net(&self, i: usize) -> Result<IpNet, Error> {
        let s = self.text(i)?;
        s.parse()
            .map_err(|_| self.bad(i, format!("bad network `{s}`")))
    }
}

/// A [`BLOCKS`] row.
///
/// # Errors
/// [`Error::Corrupt`].
pub(super) fn block(row: &dyn Columns) -> Result<Block, Error> {
    let r = Read {
        row,
        table: &BLOCKS,
    };
    Ok(Block {
        id: r.number(0)?,
        cidr: r.net(1)?,
        who: r.number(2)?,
        source: r.shared(3)?,
        why: r.shared(4)?,
        added: r.time(5)?,
        unblock_at: r.opt_time(6)?,
        skip_whitelist: r.flag(7)?,
        forced_unblock: r.flag(8)?,
        unblock_why: r.shared(9)?,
        unblock_who: r.opt_number(10)?,
    })
}

/// An [`ENTRIES`] row.
///
/// # Errors
/// [`Error::Corrupt`].
pub(super) fn entry(row: &dyn Columns) -> Result<Entry, Error> {
    let r = Read {
        row,
        table: &ENTRIES,
    };
    Ok(Entry {
        id: r.number(0)?,
        block: r.number(1)?,
        ident: r.shared(2)?,
        added: r.time(3)?,
        removed: r.opt_time(4)?,
        unblock_at: r.opt_time(5)?,
    })
}

/// A [`WHITELIST`] row.
///
/// # Errors
/// [`Error::Corrupt`].
pub(super) fn whitelist(row: &dyn Columns) -> Result<WhitelistEntry, Error> {
    let r = Read {
        row,
        table: &WHITELIST,
    };
    Ok(WhitelistEntry {
        id: r.number(0)?,
        cidr: r.net(1)?,
        who: r.number(2)?,
        why: r.shared(3)?,
        added: r.time(4)?,
    })
}

/// A [`SOURCE_BLACKLIST`] row.
///
/// # Errors
/// [`Error::Corrupt`].
pub(super) fn source_blacklist(row: &dyn Columns) -> Result<SourceBlacklistEntry, Error> {
    let r = Read {
        row,
        table: &SOURCE_BLACKLIST,
    };
    Ok(SourceBlacklistEntry {
        id: r.number(0)?,
        source: r.shared(1)?,
        who: r.number(2)?,
        why: r.shared(3)?,
        added: r.time(4)?,
    })
}

/// A [`USERS`] row.
///
/// # Errors
/// [`Error::Corrupt`].
pub(super) fn user(row: &dyn Columns) -> Result<User, Error> {
    let r = Read { row, table: &USERS };
    let name = r.text(1)?;
    let role: Role = r
        .text(2)?
        .parse()
        .map_err(|e: crate::auth::UnknownRole| r.bad(2, e))?;
    let token_hash = match r.get(3, |r, i| r.bytes(i))? {
        Some(t) => Some(
            <[u8; 32]>::try_from(t.as_slice())
                .map_err(|_| r.bad(3, format!("bad token hash for user {name}")))?,
        ),
        None => None,
    };
    Ok(User {
        id: r.number::<UserId>(0)?,
        name,
        role,
        token_hash,
        password_hash: r.get(4, |r, i| r.text(i))?,
    })
}

/// What `cr_watch` keys: an address, or a network (catch-and-release of networks).
pub(crate) enum Watched {
    Addr(Addr),
    Net(IpNet),
}

fn watch(row: &dyn Columns) -> Result<(Watched, WatchState), Error> {
    let r = Read {
        row,
        table: &CR_WATCH,
    };
    let text = r.text(0)?;
    let addr = if text.contains('/') {
        Watched::Net(
            text.parse::<IpNet>()
                .map_err(|_| r.bad(0, format!("bad network `{text}`")))?
                .trunc(),
        )
    } else {
        Watched::Addr(
            text.parse()
                .map_err(|_| r.bad(0, format!("bad address `{text}`")))?,
        )
    };
    let rule = match r.opt_number::<u32>(3)? {
        None => None,
        Some(v) => Some(RuleId::new(v).ok_or_else(|| r.bad(3, "rule id 0"))?),
    };
    Ok((
        addr,
        WatchState {
            start: r.time(1)?,
            expire_ref: r.time(2)?,
            rule,
            location: r.get(4, |r, i| r.text(i))?.map(Arc::from),
            reblocked: r.number(5)?,
            step: r.number(6)?,
            adopted: r.flag(7)?,
        },
    ))
}

fn scan_position(row: &dyn Columns) -> Result<(String, Position), Error> {
    let r = Read {
        row,
        table: &SCAN_POSITION,
    };
    Ok((
        r.text(0)?,
        Position {
            dev: unbits(r.int(1)?),
            inode: unbits(r.int(2)?),
            first_line: unbits(r.int(3)?),
            offset: unbits(r.int(4)?),
        },
    ))
}

fn watch_item(row: &dyn Columns) -> Result<(String, crate::watchlist::Entry), Error> {
    let r = Read {
        row,
        table: &WATCHLIST,
    };
    Ok((
        r.text(0)?,
        crate::watchlist::Entry {
            failures: r.number(1)?,
            watch_until: r.opt_time(2)?,
            block_until: r.opt_time(3)?,
        },
    ))
}

/// A database that runs a query and hands each row to `each`.
pub(super) trait Query {
    /// Runs `sql` with `params`.
    ///
    /// # Errors
    /// [`Error::Db`], or what `each` returns.
    fn rows(
        &mut self,
        sql: &str,
        params: &[&Value<'_>],
        each: &mut dyn FnMut(&dyn Columns) -> Result<(), Error>,
    ) -> Result<(), Error>;
}

/// Every row of a query, read by `read`.
///
/// # Errors
/// [`Error::Db`] or [`Error::Corrupt`].
pub(super) fn all<T>(
    db: &mut dyn Query,
    sql: &str,
    params: &[&Value<'_>],
    read: fn(&dyn Columns) -> Result<T, Error>,
) -> Result<Vec<T>, Error> {
    let mut out = Vec::new();
    db.rows(sql, params, &mut |r| {
        out.push(read(r)?);
        Ok(())
    })?;
    Ok(out)
}

/// Users matching `column = value` (every user, by id, for `None`).
///
/// # Errors
/// [`Error::Db`] or [`Error::Corrupt`].
pub(super) fn users(
    db: &mut dyn Query,
    dialect: Dialect,
    by: Option<(&str, Value<'_>)>,
) -> Result<Vec<User>, Error> {
    match by {
        None => all(db, &Sql::select(&USERS, "ORDER BY id"), &[], user),
        Some((column, value)) => {
            let sql = Sql::select(&USERS, &format!("WHERE {column} = {}", dialect.param(1)));
            all(db, &sql, &[&value], user)
        }
    }
}

/// The next free user id.
///
/// # Errors
/// [`Error::Db`] or [`Error::Corrupt`].
pub(super) fn next_user_id(db: &mut dyn Query) -> Result<UserId, Error> {
    let max = all(db, "SELECT MAX(id) FROM users", &[], |r| r.int(0))?;
    let next = max.first().copied().flatten().unwrap_or(0) + 1;
    UserId::try_from(next).map_err(|_| Error::Corrupt(format!("users.id: {next} is out of range")))
}

/// Everything stored.
///
/// # Errors
/// [`Error::Db`] or [`Error::Corrupt`].
pub(super) fn load(db: &mut dyn Query, dialect: Dialect) -> Result<Snapshot, Error> {
    let by_id = |t: &Table| Sql::select(t, "ORDER BY id");
    let clock = all(
        db,
        &format!("SELECT value FROM {} WHERE key = 'clock'", CR_META.name),
        &[],
        |r| r.int(0),
    )?;
    let watched = all(db, &Sql::select(&CR_WATCH, ""), &[], watch)?;
    Ok(Snapshot {
        blocks: all(db, &by_id(&BLOCKS), &[], block)?,
        entries: all(db, &by_id(&ENTRIES), &[], entry)?,
        whitelist: all(db, &by_id(&WHITELIST), &[], whitelist)?,
        source_blacklist: all(db, &by_id(&SOURCE_BLACKLIST), &[], source_blacklist)?,
        users: users(db, dialect, None)?,
        watch: watched
            .iter()
            .filter_map(|(w, st)| match w {
                Watched::Addr(a) => Some((*a, st.clone())),
                Watched::Net(_) => None,
            })
            .collect(),
        watch_nets: watched
            .iter()
            .filter_map(|(w, st)| match w {
                Watched::Net(n) => Some((*n, st.clone())),
                Watched::Addr(_) => None,
            })
            .collect(),
        cr_clock: clock.first().copied().flatten().map(Time::from_micros),
        scan_positions: all(db, &Sql::select(&SCAN_POSITION, ""), &[], scan_position)?,
        watchlist: all(db, &Sql::select(&WATCHLIST, ""), &[], watch_item)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_spelled_per_dialect() {
        let sql = Sql::new(Dialect::Postgres);
        let s = &sql.tables["block_entries"];
        assert_eq!(
            s.put,
            "INSERT INTO block_entries (id, block, ident, added, removed, unblock_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO UPDATE SET \
             block = excluded.block, ident = excluded.ident, added = excluded.added, \
             removed = excluded.removed, unblock_at = excluded.unblock_at"
        );
        assert_eq!(
            s.clashes,
            [(
                "DELETE FROM block_entries WHERE block = $1 AND ident = $2 AND id <> $3".into(),
                vec![1, 2, 0]
            )]
        );
        let sql = Sql::new(Dialect::Sqlite);
        assert_eq!(
            sql.tables["whitelist"].delete,
            "DELETE FROM whitelist WHERE id = ?1"
        );
    }

    #[test]
    fn every_write_fills_every_column_of_its_table() {
        let t = Time::from_micros(5);
        let writes = [
            Write::CrClock(t),
            Write::Unwatch("192.0.2.1".parse().unwrap()),
            Write::UserDeleted(3),
            Write::WatchItem("k".into(), None),
            Write::WatchItem(
                "k".into(),
                Some(crate::watchlist::Entry {
                    failures: 2,
                    watch_until: Some(t),
                    block_until: None,
                }),
            ),
            Write::ScanPosition(
                "/var/log/auth.log".into(),
                Position {
                    dev: u64::MAX,
                    inode: 7,
                    first_line: 0,
                    offset: 9,
                },
            ),
        ];
        for w in &writes {
            match op(w).unwrap() {
                Op::Put(table, values) => assert_eq!(values.len(), table.columns.len(), "{w:?}"),
                Op::Delete(..) => {}
            }
        }
        assert_eq!(unbits(bits(u64::MAX)), u64::MAX);
        assert!(key(u64::MAX).is_err());
        assert!(op(&Write::Bhr(Change::WhitelistDeleted(u64::MAX))).is_err());
    }
}
