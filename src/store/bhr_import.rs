//! `catchd import-bhr`: a site's history from an original BHR (bhr-site) PostgreSQL
//! database, so it can switch to catchd with its blocks, whitelist, users and block
//! managers' tokens intact. The only module that reads BHR's own database.
//!
//! What is read (tables of bhr.md §2): `bhr_block`, `bhr_blockentry`,
//! `bhr_whitelistentry`, `bhr_sourceblacklistentry`, Django's `auth_user` with its groups,
//! and DRF's `authtoken_token`. Rows keep their ids, so `url` links, queue ids and the
//! ids block managers remember stay valid. Tokens keep working (catchd stores their
//! SHA-256), and passwords too (catchd verifies Django's `pbkdf2_sha256` hashes).
//!
//! Roles follow BHR's groups: superusers → admin, "BHR Users" → user, "BHR Block
//! Managers" → manager, "BHR Blockers" → blocker (the most powerful group wins). Inactive
//! users and users in no BHR group (who could only read) are imported without a token or
//! password, so they cannot sign in but the blocks they made still name them; they are
//! listed.
//!
//! Block and block-entry ids are kept when BHR's are dense. catchd numbers them without
//! gaps, so where BHR has gaps (deleted rows, rolled-back inserts) later rows are
//! renumbered in order, and the import says how many were.
//!
//! Idempotent: importing the same database twice gives the same catchd database. Rows
//! catchd made since an import are kept; an id that catchd and BHR both use for
//! different rows stops the import before anything is written, as does anything the
//! registry would not restore (two expected blocks for one network).

use std::collections::HashMap;
use std::sync::Arc;

use ipnet::IpNet;

use crate::auth::{Role, User, hash_token};
use crate::bhr::model::{Block, Entry, SourceBlacklistEntry, UserId, WhitelistEntry};
use crate::bhr::registry::Change;
use crate::store::{Snapshot, Write};
use crate::time::Time;

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The BHR database cannot be reached or read.
    #[error("BHR database: {0}")]
    Source(String),
    /// A row that does not make sense.
    #[error("BHR database: {table} row {id}: {msg}")]
    Row {
        /// The table.
        table: &'static str,
        /// The row id.
        id: i64,
        /// What is wrong.
        msg: String,
    },
    /// The catchd database holds rows that conflict with BHR's.
    #[error("{0}")]
    Conflict(String),
}

/// What was read from BHR.
#[derive(Clone, Debug, Default)]
pub struct Imported {
    /// Users (with token hashes and passwords).
    pub users: Vec<User>,
    /// Blocks.
    pub blocks: Vec<Block>,
    /// Block entries.
    pub entries: Vec<Entry>,
    /// Whitelist entries.
    pub whitelist: Vec<WhitelistEntry>,
    /// Source blacklist entries.
    pub source_blacklist: Vec<SourceBlacklistEntry>,
    /// Users imported without credentials, and why.
    pub skipped_users: Vec<String>,
    /// Blocks and entries whose ids changed to close gaps.
    pub renumbered: usize,
}

impl Imported {
    /// Closes gaps in block and entry ids (in id order), fixing the references.
    pub fn renumber(&mut self) {
        self.blocks.sort_by_key(|b| b.id);
        self.entries.sort_by_key(|e| e.id);
        let mut map = HashMap::new();
        for (i, b) in self.blocks.iter_mut().enumerate() {
            let new = i as u64 + 1;
            if b.id != new {
                self.renumbered += 1;
            }
            map.insert(b.id, new);
            b.id = new;
        }
        for (i, e) in self.entries.iter_mut().enumerate() {
            let new = i as u64 + 1;
            if e.id != new {
                self.renumbered += 1;
            }
            e.id = new;
            e.block = map.get(&e.block).copied().unwrap_or(0);
        }
    }
}

fn src(e: tokio_postgres::Error) -> ImportError {
    ImportError::Source(e.to_string())
}

fn micros(v: Option<i64>) -> Option<Time> {
    v.map(Time::from_micros)
}

fn net(table: &'static str, id: i64, text: &str) -> Result<IpNet, ImportError> {
    text.parse::<IpNet>()
        .map(|n| n.trunc())
        .map_err(|_| ImportError::Row {
            table,
            id,
            msg: format!("bad cidr `{text}`"),
        })
}

fn uid(table: &'static str, id: i64, v: i64) -> Result<UserId, ImportError> {
    UserId::try_from(v).map_err(|_| ImportError::Row {
        table,
        id,
        msg: format!("user id {v} out of range"),
    })
}

fn rid(table: &'static str, id: i64) -> Result<u64, ImportError> {
    u64::try_from(id).map_err(|_| ImportError::Row {
        table,
        id,
        msg: "negative id".into(),
    })
}

/// Times as microseconds, exactly (`extract` returns numeric since PostgreSQL 14).
fn us(col: &str) -> String {
    format!("(extract(epoch from {col}) * 1000000)::bigint")
}

/// Reads everything catchd takes from a BHR database.
///
/// # Errors
/// [`ImportError`].
pub async fn read(url: &str) -> Result<Imported, ImportError> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(src)?;
    let conn = tokio::spawn(conn);
    let mut out = Imported::default();

    read_users(&client, &mut out).await?;
    read_registry(&client, &mut out).await?;
    drop(client);
    let _ = conn.await;
    out.renumber();
    Ok(out)
}

/// The users, their BHR groups as roles, and their tokens.
async fn read_users(
    client: &tokio_postgres::Client,
    out: &mut Imported,
) -> Result<(), ImportError> {
    let rows = client
        .query(
            "SELECT u.id::bigint, u.username, u.password, u.is_superuser, u.is_active,
                    COALESCE(array_agg(g.name) FILTER (WHERE g.name IS NOT NULL), '{}')
             FROM auth_user u
             LEFT JOIN auth_user_groups ug ON ug.user_id = u.id
             LEFT JOIN auth_group g ON g.id = ug.group_id
             GROUP BY u.id ORDER BY u.id",
            &[],
        )
        .await
        .map_err(src)?;
    let tokens: HashMap<i64, String> = client
        .query("SELECT user_id::bigint, key FROM authtoken_token", &[])
        .await
        .map_err(src)?
        .iter()
        .map(|r| (r.get::<_, i64>(0), r.get::<_, String>(1)))
        .collect();
    for r in rows {
        let id: i64 = r.get(0);
        let name: String = r.get(1);
        let password: String = r.get(2);
        let superuser: bool = r.get(3);
        let active: bool = r.get(4);
        let groups: Vec<String> = r.get(5);
        let has = |g: &str| groups.iter().any(|x| x == g);
        let role = if superuser {
            Some(Role::Admin)
        } else if has("BHR Users") {
            Some(Role::User)
        } else if has("BHR Block Managers") {
            if has("BHR Blockers") {
                out.skipped_users.push(format!(
                    "{name} is both a Block Manager and a Blocker: imported as manager"
                ));
            }
            Some(Role::Manager)
        } else if has("BHR Blockers") {
            Some(Role::Blocker)
        } else {
            None
        };
        let can_sign_in = active && role.is_some();
        if !active {
            out.skipped_users
                .push(format!("{name} is inactive: imported without credentials"));
        } else if role.is_none() {
            out.skipped_users.push(format!(
                "{name} is in no BHR group (it could only read): imported without credentials"
            ));
        }
        out.users.push(User {
            id: uid("auth_user", id, id)?,
            name,
            role: role.unwrap_or(Role::Blocker),
            token_hash: tokens
                .get(&id)
                .filter(|_| can_sign_in)
                .map(|k| hash_token(k)),
            password_hash: (can_sign_in && password.starts_with("pbkdf2_sha256$"))
                .then_some(password),
        });
    }
    Ok(())
}

/// Blocks, entries, the whitelist and the source blacklist.
async fn read_registry(
    client: &tokio_postgres::Client,
    out: &mut Imported,
) -> Result<(), ImportError> {
    let q = format!(
        "SELECT id::bigint, cidr::text, who_id::bigint, source, why, {}, {}, skip_whitelist,
                forced_unblock, unblock_why, unblock_who_id::bigint
         FROM bhr_block ORDER BY id",
        us("added"),
        us("unblock_at")
    );
    for r in client.query(q.as_str(), &[]).await.map_err(src)? {
        let id: i64 = r.get(0);
        out.blocks.push(Block {
            id: rid("bhr_block", id)?,
            cidr: net("bhr_block", id, r.get(1))?,
            who: uid("bhr_block", id, r.get(2))?,
            source: Arc::from(r.get::<_, String>(3)),
            why: Arc::from(r.get::<_, String>(4)),
            added: Time::from_micros(r.get(5)),
            unblock_at: micros(r.get(6)),
            skip_whitelist: r.get(7),
            forced_unblock: r.get(8),
            unblock_why: Arc::from(r.get::<_, String>(9)),
            unblock_who: r
                .get::<_, Option<i64>>(10)
                .map(|v| uid("bhr_block", id, v))
                .transpose()?,
        });
    }
    let q = format!(
        "SELECT id::bigint, block_id::bigint, ident, {}, {}, {} FROM bhr_blockentry ORDER BY id",
        us("added"),
        us("removed"),
        us("unblock_at")
    );
    for r in client.query(q.as_str(), &[]).await.map_err(src)? {
        let id: i64 = r.get(0);
        out.entries.push(Entry {
            id: rid("bhr_blockentry", id)?,
            block: rid("bhr_blockentry", r.get(1))?,
            ident: Arc::from(r.get::<_, String>(2)),
            added: Time::from_micros(r.get(3)),
            removed: micros(r.get(4)),
            unblock_at: micros(r.get(5)),
        });
    }
    let q = format!(
        "SELECT id::bigint, cidr::text, who_id::bigint, why, {} FROM bhr_whitelistentry ORDER BY id",
        us("added")
    );
    for r in client.query(q.as_str(), &[]).await.map_err(src)? {
        let id: i64 = r.get(0);
        out.whitelist.push(WhitelistEntry {
            id: rid("bhr_whitelistentry", id)?,
            cidr: net("bhr_whitelistentry", id, r.get(1))?,
            who: uid("bhr_whitelistentry", id, r.get(2))?,
            why: Arc::from(r.get::<_, String>(3)),
            added: Time::from_micros(r.get(4)),
        });
    }
    let q = format!(
        "SELECT id::bigint, source, who_id::bigint, why, {} FROM bhr_sourceblacklistentry ORDER BY id",
        us("added")
    );
    for r in client.query(q.as_str(), &[]).await.map_err(src)? {
        let id: i64 = r.get(0);
        out.source_blacklist.push(SourceBlacklistEntry {
            id: rid("bhr_sourceblacklistentry", id)?,
            source: Arc::from(r.get::<_, String>(1)),
            who: uid("bhr_sourceblacklistentry", id, r.get(2))?,
            why: Arc::from(r.get::<_, String>(3)),
            added: Time::from_micros(r.get(4)),
        });
    }
    Ok(())
}

/// The writes that bring a catchd database (`have`) to hold everything imported, after
/// checking that no id is used for different rows on the two sides.
///
/// # Errors
/// [`ImportError::Conflict`] naming the rows.
pub fn plan(have: &Snapshot, got: &Imported, now: Time) -> Result<Vec<Write>, ImportError> {
    let mut conflicts = Vec::new();
    let users: HashMap<UserId, &User> = have.users.iter().map(|u| (u.id, u)).collect();
    for u in &got.users {
        if let Some(h) = users.get(&u.id)
            && h.name != u.name
        {
            conflicts.push(format!(
                "user id {} is `{}` here, `{}` in BHR",
                u.id, h.name, u.name
            ));
        }
        if let Some(h) = have.users.iter().find(|h| h.name == u.name && h.id != u.id) {
            conflicts.push(format!(
                "user `{}` has id {} here, {} in BHR",
                u.name, h.id, u.id
            ));
        }
    }
    let blocks: HashMap<u64, &Block> = have.blocks.iter().map(|b| (b.id, b)).collect();
    for b in &got.blocks {
        if let Some(h) = blocks.get(&b.id)
            && (h.cidr != b.cidr || h.added != b.added)
        {
            conflicts.push(format!(
                "block id {} is {} here, {} in BHR",
                b.id, h.cidr, b.cidr
            ));
        }
    }
    let entries: HashMap<u64, &Entry> = have.entries.iter().map(|e| (e.id, e)).collect();
    for e in &got.entries {
        if let Some(h) = entries.get(&e.id)
            && (h.block != e.block || h.ident != e.ident)
        {
            conflicts.push(format!("block entry id {} differs", e.id));
        }
    }
    // The merged rows must make a registry.
    let mut merged_blocks: HashMap<u64, Block> =
        have.blocks.iter().map(|b| (b.id, b.clone())).collect();
    merged_blocks.extend(got.blocks.iter().map(|b| (b.id, b.clone())));
    let mut merged_entries: HashMap<u64, Entry> =
        have.entries.iter().map(|e| (e.id, e.clone())).collect();
    merged_entries.extend(got.entries.iter().map(|e| (e.id, e.clone())));
    let mut blocks: Vec<Block> = merged_blocks.into_values().collect();
    blocks.sort_by_key(|b| b.id);
    let mut entries: Vec<Entry> = merged_entries.into_values().collect();
    entries.sort_by_key(|e| e.id);
    let mut whitelist: HashMap<u64, WhitelistEntry> =
        have.whitelist.iter().map(|w| (w.id, w.clone())).collect();
    whitelist.extend(got.whitelist.iter().map(|w| (w.id, w.clone())));
    let mut sbl: HashMap<u64, SourceBlacklistEntry> = have
        .source_blacklist
        .iter()
        .map(|w| (w.id, w.clone()))
        .collect();
    sbl.extend(got.source_blacklist.iter().map(|w| (w.id, w.clone())));
    if let Err(e) = crate::bhr::registry::Registry::restore(
        crate::bhr::model::Settings::default(),
        now,
        blocks,
        entries,
        whitelist.into_values().collect(),
        sbl.into_values().collect(),
    ) {
        conflicts.push(e.to_string());
    }
    if !conflicts.is_empty() {
        conflicts.truncate(10);
        return Err(ImportError::Conflict(format!(
            "nothing imported: {}",
            conflicts.join("; ")
        )));
    }
    let mut w = Vec::new();
    w.extend(got.users.iter().cloned().map(Write::User));
    w.extend(
        got.blocks
            .iter()
            .cloned()
            .map(|b| Write::Bhr(Change::Block(b))),
    );
    w.extend(
        got.entries
            .iter()
            .cloned()
            .map(|e| Write::Bhr(Change::Entry(e))),
    );
    w.extend(
        got.whitelist
            .iter()
            .cloned()
            .map(|e| Write::Bhr(Change::Whitelist(e))),
    );
    w.extend(
        got.source_blacklist
            .iter()
            .cloned()
            .map(|e| Write::Bhr(Change::SourceBlacklist(e))),
    );
    Ok(w)
}
