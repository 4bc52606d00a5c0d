//! Several catchd API nodes on one PostgreSQL database.
//!
//! Every node keeps the registry in memory, as a single node does. What keeps them one
//! registry:
//! * **One writer at a time, cluster-wide.** A change takes a PostgreSQL advisory lock
//!   (session-level, on a connection of its own) before it touches the registry, and holds
//!   it until its rows are committed. This is the original BHR's `add_block` advisory
//!   lock, taken for every change: no two nodes ever create a block for the same network,
//!   and ids are handed out in one sequence.
//! * **Catch-up before changing.** With the lock held, the node reads the change log
//!   (`catchd_log`, appended in the same transaction as the rows) past the last entry it
//!   applied, and puts those rows into its registry before deciding anything.
//! * **`LISTEN`/`NOTIFY` for the rest.** Every commit that changed registry rows
//!   notifies `catchd_changes`; each node listens and catches up at once, so a long poll
//!   on one node wakes when another node adds a block.
//!
//! A node that cannot reach the database refuses changes (503) and keeps answering reads
//! from memory; it catches up when the database is back.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::{StreamExt, stream};
use tokio_postgres::{AsyncMessage, Client, NoTls};

use super::Error;
use super::postgres::CHANGES_CHANNEL;
use super::schema::{self, Sql, Table};
use crate::bhr::registry::Change;

/// The advisory lock key of registry changes ("catchd registry").
const REGISTRY_LOCK: i64 = 0x6361_7463_7267;

fn db(e: tokio_postgres::Error) -> Error {
    // The server's own message says more than "db error".
    Error::Db(match e.as_db_error() {
        Some(d) => format!("{} ({})", d.message(), d.code().code()),
        None => e.to_string(),
    })
}

/// A node's link to the cluster.
pub struct DbCluster {
    url: String,
    /// The connection that holds the registry lock while a change is made (one change
    /// at a time per node).
    lock: Arc<tokio::sync::Mutex<LockConn>>,
    /// Changes waiting for `lock` on this node.
    waiting: AtomicUsize,
    /// A connection for catching up between changes (kept, not made per call).
    reader: tokio::sync::Mutex<Option<Client>>,
}

/// The lock connection and whether its session holds the registry lock.
#[derive(Default)]
struct LockConn {
    client: Option<Client>,
    /// The session holds the advisory lock (kept from one change to the next while
    /// changes are queued on this node; nobody else can have committed since).
    held: bool,
    /// Changes made since the lock was taken, and when that was.
    streak: u32,
    since: Option<Instant>,
}

/// How many queued changes may follow one another under one acquisition, and for how
/// long, before the lock is given up for other nodes.
const MAX_STREAK: u32 = 64;
const MAX_HOLD: Duration = Duration::from_millis(20);

/// The registry lock, held. It is released when dropped, from a task on the runtime it was
/// taken on, so a guard may be dropped anywhere (async code or the daemon's core thread).
pub struct Guard {
    conn: Option<tokio::sync::OwnedMutexGuard<LockConn>>,
    cluster: Arc<DbCluster>,
    rt: tokio::runtime::Handle,
}

async fn connect(url: &str) -> Result<Client, Error> {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.map_err(db)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

async fn unlock(st: &mut LockConn) {
    st.held = false;
    if let Some(c) = st.client.as_ref()
        && c.execute("SELECT pg_advisory_unlock($1)", &[&REGISTRY_LOCK])
            .await
            .is_err()
    {
        // The session is gone, and the lock with it.
        st.client = None;
    }
}

impl Guard {
    fn conn(&mut self) -> &mut LockConn {
        self.conn.as_mut().expect("held until released")
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            let cluster = self.cluster.clone();
            self.rt.spawn(async move { give_up(&cluster, conn).await });
        }
    }
}

/// Gives the lock to the next change queued on this node when there is one (for a bounded
/// streak, so other nodes get their turn), otherwise to everyone.
async fn give_up(cluster: &DbCluster, mut conn: tokio::sync::OwnedMutexGuard<LockConn>) {
    let queued = cluster.waiting.load(Ordering::Acquire) > 0;
    let young = conn.since.is_some_and(|t| t.elapsed() < MAX_HOLD);
    if queued && young && conn.streak < MAX_STREAK && conn.held {
        // Handed over with the lock held (the janitor gives it up should the waiter
        // have gone away).
        return;
    }
    unlock(&mut conn).await;
}

impl DbCluster {
    /// A node's link to the database at `url`.
    pub fn new(url: &str) -> Arc<DbCluster> {
        Arc::new(DbCluster {
            url: url.to_string(),
            lock: Arc::new(tokio::sync::Mutex::new(LockConn::default())),
            waiting: AtomicUsize::new(0),
            reader: tokio::sync::Mutex::new(None),
        })
    }

    /// Takes the registry lock (waiting for other nodes' changes to commit), and returns
    /// it with every change committed after log entry `since`, in commit order.
    ///
    /// # Errors
    /// [`Error::Db`]: the database is unreachable.
    pub async fn lock(self: &Arc<Self>, since: i64) -> Result<(Guard, Vec<(i64, Change)>), Error> {
        self.waiting.fetch_add(1, Ordering::AcqRel);
        let mut st = self.lock.clone().lock_owned().await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        if st.client.as_ref().is_none_or(Client::is_closed) {
            st.client = None;
            st.held = false;
        }
        if st.held {
            // Held since the last change on this node: nobody else committed meanwhile.
            st.streak += 1;
            return Ok((self.guard(st), Vec::new()));
        }
        if st.client.is_none() {
            st.client = Some(connect(&self.url).await?);
        }
        let c = st.client.as_ref().expect("connected");
        let r = tokio::time::timeout(
            Duration::from_secs(30),
            c.execute("SELECT pg_advisory_lock($1)", &[&REGISTRY_LOCK]),
        )
        .await;
        match r {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                st.client = None;
                return Err(db(e));
            }
            Err(_) => {
                st.client = None;
                return Err(Error::Db(
                    "timed out waiting for the cluster's registry lock".into(),
                ));
            }
        }
        st.held = true;
        st.streak = 0;
        st.since = Some(Instant::now());
        let mut guard = self.guard(st);
        let read = {
            let conn = guard.conn();
            changes_since(conn.client.as_ref().expect("connected"), since).await
        };
        match read {
            Ok(rows) => Ok((guard, rows)),
            Err(e) => {
                unlock(guard.conn()).await;
                Err(e)
            }
        }
    }

    fn guard(self: &Arc<Self>, conn: tokio::sync::OwnedMutexGuard<LockConn>) -> Guard {
        Guard {
            conn: Some(conn),
            cluster: self.clone(),
            rt: tokio::runtime::Handle::current(),
        }
    }

    /// Gives the registry lock up if it is held with nobody using it (a change handed
    /// it over to a waiter that went away). Runs until the task is dropped.
    pub async fn janitor(self: Arc<Self>) {
        loop {
            tokio::time::sleep(MAX_HOLD).await;
            if let Ok(mut st) = self.lock.try_lock()
                && st.held
                && self.waiting.load(Ordering::Acquire) == 0
            {
                unlock(&mut st).await;
            }
        }
    }

    /// Every change committed after log entry `since` (no lock taken).
    ///
    /// # Errors
    /// [`Error::Db`].
    pub async fn changes_since(&self, since: i64) -> Result<Vec<(i64, Change)>, Error> {
        let mut conn = self.reader.lock().await;
        if conn.as_ref().is_none_or(Client::is_closed) {
            *conn = Some(connect(&self.url).await?);
        }
        let r = changes_since(conn.as_ref().expect("connected"), since).await;
        if r.is_err() {
            *conn = None;
        }
        r
    }

    /// Takes or renews lease `name` for `holder` for `ttl`: it is taken when free,
    /// expired, or already `holder`'s. Returns `None` when `holder` has it, otherwise the
    /// node that does.
    ///
    /// # Errors
    /// [`Error::Db`].
    pub async fn lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<String>, Error> {
        let mut conn = self.reader.lock().await;
        if conn.as_ref().is_none_or(Client::is_closed) {
            *conn = Some(connect(&self.url).await?);
        }
        let c = conn.as_ref().expect("connected");
        let ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let taken = c
            .query_opt(
                "INSERT INTO catchd_lease (name, holder, expires)
                 VALUES ($1, $2, now() + $3::bigint * interval '1 millisecond')
                 ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder,
                     expires = EXCLUDED.expires
                 WHERE catchd_lease.expires < now() OR catchd_lease.holder = EXCLUDED.holder
                 RETURNING holder",
                &[&name, &holder, &ms],
            )
            .await;
        let taken = match taken {
            Ok(t) => t,
            Err(e) => {
                *conn = None;
                return Err(db(e));
            }
        };
        if taken.is_some() {
            return Ok(None);
        }
        let other = c
            .query_opt("SELECT holder FROM catchd_lease WHERE name = $1", &[&name])
            .await
            .map_err(db)?
            .map_or_else(String::new, |r| r.get(0));
        Ok(Some(other))
    }

    /// The newest log entry (where a node that just loaded everything starts).
    ///
    /// # Errors
    /// [`Error::Db`].
    pub async fn head(&self) -> Result<i64, Error> {
        let c = connect(&self.url).await?;
        let r = c
            .query_one("SELECT COALESCE(MAX(seq), 0) FROM catchd_log", &[])
            .await
            .map_err(db)?;
        Ok(r.get(0))
    }

    /// Listens for other nodes' commits and calls `changed` for each notification
    /// (and once after every reconnect, in case one was missed). Runs until the task is
    /// dropped.
    pub async fn listen(self: Arc<Self>, changed: impl Fn() + Send + Sync + 'static) {
        let mut wait = Duration::from_millis(100);
        loop {
            match tokio_postgres::connect(&self.url, NoTls).await {
                Ok((client, mut conn)) => {
                    wait = Duration::from_millis(100);
                    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                    let pump = tokio::spawn(async move {
                        let mut messages = stream::poll_fn(move |cx| conn.poll_message(cx));
                        while let Some(m) = messages.next().await {
                            match m {
                                Ok(AsyncMessage::Notification(_)) => {
                                    if tx.send(()).is_err() {
                                        return;
                                    }
                                }
                                Ok(_) => {}
                                Err(_) => return,
                            }
                        }
                    });
                    if client
                        .batch_execute(&format!("LISTEN {CHANGES_CHANNEL}"))
                        .await
                        .is_ok()
                    {
                        changed();
                        while rx.recv().await.is_some() {
                            while rx.try_recv().is_ok() {}
                            changed();
                        }
                    }
                    pump.abort();
                    tracing::warn!("Cluster: lost the notification connection; reconnecting.");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Cluster: cannot listen for changes; retrying.");
                }
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
        }
    }
}

/// The rows behind log entries after `since`, in log order (a row changed several times
/// is read once, as it is now).
async fn changes_since(c: &Client, since: i64) -> Result<Vec<(i64, Change)>, Error> {
    let log = c
        .query(
            "SELECT seq, kind, id FROM catchd_log WHERE seq > $1 ORDER BY seq",
            &[&since],
        )
        .await
        .map_err(db)?;
    if log.is_empty() {
        return Ok(Vec::new());
    }
    let mut want: HashMap<&'static str, Vec<i64>> = HashMap::new();
    let entries: Vec<(i64, String, i64)> =
        log.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    for (_, kind, id) in &entries {
        let k: &'static str = match kind.as_str() {
            "block" => "block",
            "entry" => "entry",
            "whitelist" => "whitelist",
            "source_blacklist" => "source_blacklist",
            other => return Err(Error::Corrupt(format!("unknown change kind `{other}`"))),
        };
        want.entry(k).or_default().push(*id);
    }
    let mut rows: HashMap<(&'static str, i64), Change> = HashMap::new();
    let fetch = |t: &Table| Sql::select(t, "WHERE id = ANY($1)");
    let tables: [(&str, &Table, Read); 4] = [
        ("block", &schema::BLOCKS, |r| {
            schema::block(r).map(Change::Block)
        }),
        ("entry", &schema::ENTRIES, |r| {
            schema::entry(r).map(Change::Entry)
        }),
        ("whitelist", &schema::WHITELIST, |r| {
            schema::whitelist(r).map(Change::Whitelist)
        }),
        ("source_blacklist", &schema::SOURCE_BLACKLIST, |r| {
            schema::source_blacklist(r).map(Change::SourceBlacklist)
        }),
    ];
    for (kind, table, read) in tables {
        let Some(ids) = want.get(kind) else { continue };
        for r in c.query(&fetch(table), &[ids]).await.map_err(db)? {
            let ch = read(&r)?;
            rows.insert((kind_static(kind), change_id(&ch)?), ch);
        }
    }
    let mut out = Vec::with_capacity(entries.len());
    for (seq, kind, id) in entries {
        let ch = match (kind.as_str(), rows.get(&(kind_static(&kind), id))) {
            (_, Some(ch)) => ch.clone(),
            ("whitelist", None) => Change::WhitelistDeleted(logged_id(id)?),
            ("source_blacklist", None) => Change::SourceBlacklistDeleted(logged_id(id)?),
            (k, None) => {
                return Err(Error::Corrupt(format!(
                    "the change log names {k} {id}, which is gone"
                )));
            }
        };
        out.push((seq, ch));
    }
    Ok(out)
}

/// Reads a row of one registry table as a change.
type Read = fn(&dyn schema::Columns) -> Result<Change, Error>;

/// The row id of a change read back, as the change log holds it.
fn change_id(ch: &Change) -> Result<i64, Error> {
    schema::key(match ch {
        Change::Block(b) => b.id,
        Change::Entry(e) => e.id,
        Change::Whitelist(w) => w.id,
        Change::SourceBlacklist(s) => s.id,
        Change::WhitelistDeleted(id) | Change::SourceBlacklistDeleted(id) => *id,
    })
}

/// A row id the change log names.
fn logged_id(id: i64) -> Result<u64, Error> {
    u64::try_from(id).map_err(|_| Error::Corrupt(format!("catchd_log.id: {id} is out of range")))
}

fn kind_static(k: &str) -> &'static str {
    match k {
        "block" => "block",
        "entry" => "entry",
        "whitelist" => "whitelist",
        _ => "source_blacklist",
    }
}
