//! Durable storage. The only module that talks to a database.
//!
//! A [`Store`] is a handle to one writer thread that owns the database connection. Callers
//! hand it batches of [`Write`]s and await the answer, which comes only after the batch is
//! committed to disk. The thread takes every batch waiting when it starts a transaction
//! (group commit): many concurrent requests share one commit and one `fsync`, so durability
//! before the answer costs little throughput.
//!
//! The SQL lives behind [`Driver`]: [`Sqlite`] (the embedded default) and PostgreSQL
//! (`postgres.rs`, chosen by a `postgres://` URL). The writer thread, group commit and
//! every caller above it are the same for both, and so are the tables: `schema.rs`
//! describes them once, with how each [`Write`] becomes rows and how rows read back.

pub mod bhr_import;
pub(crate) mod cluster;
mod postgres;
mod schema;
mod sqlite;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use ipnet::IpNet;
use tokio::sync::oneshot;

use crate::addr::Addr;
use crate::auth::User;
use crate::bhr::model::{Block, Entry, SourceBlacklistEntry, UserId, WhitelistEntry};
use crate::bhr::registry::Change;
use crate::cnr::WatchState;

pub use postgres::{Postgres, redact};
pub use sqlite::Sqlite;

/// Whether a database setting is a PostgreSQL URL rather than a SQLite file.
pub fn is_postgres(db: &Path) -> bool {
    db.to_str()
        .is_some_and(|s| s.starts_with("postgres://") || s.starts_with("postgresql://"))
}

/// Which database the store uses: the setting (`server.db`, `store`, `--db`) read once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Database {
    /// A SQLite file (created if missing).
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL (`postgres://…`).
    Postgres(String),
}

impl Database {
    /// The PostgreSQL URL, if it is one.
    pub fn postgres_url(&self) -> Option<&str> {
        match self {
            Database::Postgres(u) => Some(u),
            Database::Sqlite(_) => None,
        }
    }

    /// The setting as a path (a URL is kept as written), for errors and for tools that
    /// take either.
    pub fn as_path(&self) -> &Path {
        match self {
            Database::Sqlite(p) => p,
            Database::Postgres(u) => Path::new(u),
        }
    }
}

impl From<&Path> for Database {
    fn from(p: &Path) -> Database {
        match p.to_str().filter(|_| is_postgres(p)) {
            Some(url) => Database::Postgres(url.to_string()),
            None => Database::Sqlite(p.to_path_buf()),
        }
    }
}

impl From<&PathBuf> for Database {
    fn from(p: &PathBuf) -> Database {
        Database::from(p.as_path())
    }
}

impl From<PathBuf> for Database {
    fn from(p: PathBuf) -> Database {
        Database::from(p.as_path())
    }
}

impl From<&Database> for Database {
    fn from(d: &Database) -> Database {
        d.clone()
    }
}

/// Shown with any password in a URL hidden.
impl std::fmt::Display for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Sqlite(p) => write!(f, "{}", p.display()),
            Database::Postgres(u) => f.write_str(&redact(u)),
        }
    }
}

/// Jobs the writer takes into one transaction at most.
const MAX_BATCH: usize = 4096;

/// One row to persist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    /// A registry row.
    Bhr(Change),
    /// A user row (inserted or replaced).
    User(User),
    /// A user removed, by id.
    UserDeleted(UserId),
    /// Catch-and-release's state of a watched address (inserted or replaced).
    Watch(Addr, WatchState),
    /// A network catch-and-release tracks (catch-and-release of networks), in the same
    /// table as addresses, keyed by its text (`a.b.c.d/len`).
    WatchNet(IpNet, WatchState),
    /// A network no longer tracked.
    UnwatchNet(IpNet),
    /// An address catch-and-release no longer tracks.
    Unwatch(Addr),
    /// The network time catch-and-release's stored state is current to.
    CrClock(crate::time::Time),
    /// Where the log scanner is in a file (by path).
    ScanPosition(String, crate::scan::tail::Position),
    /// A watchlist entry by key (`None`: deleted).
    WatchItem(String, Option<crate::watchlist::Entry>),
}

/// Everything stored, as loaded at start-up.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Blocks, by id.
    pub blocks: Vec<Block>,
    /// Block entries, by id.
    pub entries: Vec<Entry>,
    /// Whitelist entries.
    pub whitelist: Vec<WhitelistEntry>,
    /// Blacklisted sources.
    pub source_blacklist: Vec<SourceBlacklistEntry>,
    /// Users.
    pub users: Vec<User>,
    /// Catch-and-release's watched addresses.
    pub watch: Vec<(Addr, WatchState)>,
    /// Catch-and-release's watched networks.
    pub watch_nets: Vec<(IpNet, WatchState)>,
    /// The time that state is current to (`None` before catch-and-release first ran).
    pub cr_clock: Option<crate::time::Time>,
    /// The log scanner's positions, by path.
    pub scan_positions: Vec<(String, crate::scan::tail::Position)>,
    /// The watchlist's entries, by key.
    pub watchlist: Vec<(String, crate::watchlist::Entry)>,
}

/// Why the store failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    /// The database could not be opened or created.
    #[error("cannot open the database {path}: {msg}")]
    Open {
        /// Its path.
        path: PathBuf,
        /// Why.
        msg: String,
    },
    /// A database error.
    #[error("database error: {0}")]
    Db(String),
    /// Stored data that does not parse (a damaged or foreign database).
    #[error("bad stored data: {0}")]
    Corrupt(String),
    /// An earlier commit failed; the store takes no more writes until restarted.
    #[error("the store failed earlier and accepts no more writes")]
    Failed,
    /// The writer thread is gone.
    #[error("the store is closed")]
    Closed,
}

/// A database the writer thread can drive.
pub trait Driver: Send + 'static {
    /// Reads everything.
    ///
    /// # Errors
    /// [`Error::Db`] or [`Error::Corrupt`].
    fn load(&mut self) -> Result<Snapshot, Error>;

    /// Applies the writes of several jobs in one transaction and commits it durably.
    ///
    /// # Errors
    /// [`Error::Db`]; nothing is committed then.
    fn apply(&mut self, batch: &[&[Write]]) -> Result<(), Error>;

    /// Looks a user up by token hash (for users added while the server runs).
    ///
    /// # Errors
    /// [`Error::Db`] or [`Error::Corrupt`].
    fn user_by_token(&mut self, hash: &[u8; 32]) -> Result<Option<User>, Error>;

    /// Looks a user up by name.
    ///
    /// # Errors
    /// [`Error::Db`] or [`Error::Corrupt`].
    fn user_by_name(&mut self, name: &str) -> Result<Option<User>, Error>;

    /// Every user, by id.
    ///
    /// # Errors
    /// [`Error::Db`] or [`Error::Corrupt`].
    fn users(&mut self) -> Result<Vec<User>, Error>;

    /// The next unused user id.
    ///
    /// # Errors
    /// [`Error::Db`].
    fn next_user_id(&mut self) -> Result<UserId, Error>;
}

/// Who hears how a write job ended.
enum Done {
    /// An awaited receipt.
    Receipt(oneshot::Sender<Result<(), Error>>),
    /// A function run on the writer thread once the job is committed (or failed); it must
    /// not block.
    Call(Box<dyn FnOnce(Result<(), Error>) + Send>),
}

impl Done {
    fn send(self, r: Result<(), Error>) {
        match self {
            Done::Receipt(tx) => {
                let _ = tx.send(r);
            }
            Done::Call(f) => f(r),
        }
    }
}

enum Job {
    Write(Vec<Write>, Done),
    UserByToken([u8; 32], oneshot::Sender<Result<Option<User>, Error>>),
    UserByName(String, oneshot::Sender<Result<Option<User>, Error>>),
    NextUserId(oneshot::Sender<Result<UserId, Error>>),
    Users(oneshot::Sender<Result<Vec<User>, Error>>),
    Load(oneshot::Sender<Result<Snapshot, Error>>),
}

/// Proof that this process is the one that serves a database: an exclusive `flock` on the
/// database file itself, held until dropped. Two servers on one database would hand out
/// the same ids (and, through a hard link, write two different WAL files).
///
/// The lock belongs to the file (its inode), not to the name it was opened by: a second
/// process reaching the same file through a symlink, a hard link or another relative path
/// is refused. (`flock` and SQLite's POSIX locks do not interact on Linux. The descriptor
/// stays open while the store runs: closing a descriptor of the database would drop
/// SQLite's own POSIX locks in this process.)
#[derive(Debug)]
pub struct OwnerLock {
    _file: Option<std::fs::File>,
}

impl OwnerLock {
    /// Takes the lock for the database at `db` (creating an empty database file if there
    /// is none yet), or fails at once if another process has it.
    ///
    /// # Errors
    /// [`Error::Open`], saying another process holds it.
    pub fn acquire(db: impl Into<Database>) -> Result<OwnerLock, Error> {
        let db = match db.into() {
            // PostgreSQL: the backend's advisory lock does this.
            Database::Postgres(_) => return Ok(OwnerLock { _file: None }),
            Database::Sqlite(p) => p,
        };
        let db = db.as_path();
        let open_err = |msg: String| Error::Open {
            path: db.to_path_buf(),
            msg,
        };
        if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
        }
        // Read-write, created if missing (an empty file is an empty SQLite database);
        // never truncated.
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(db)
            .map_err(|e| open_err(e.to_string()))?;
        match file.try_lock() {
            Ok(()) => Ok(OwnerLock { _file: Some(file) }),
            Err(std::fs::TryLockError::WouldBlock) => Err(open_err(
                "another catchd process is serving this database file (perhaps through \
                 another path, a symlink or a hard link to it)"
                    .into(),
            )),
            Err(std::fs::TryLockError::Error(e)) => Err(open_err(e.to_string())),
        }
    }
}

/// Connects on a thread of its own (the synchronous client cannot start inside an async
/// runtime), as the writer or not.
fn postgres_on_thread(url: &str, writer: bool) -> Result<Postgres, Error> {
    let u = url.to_string();
    std::thread::spawn(move || {
        if writer {
            Postgres::open(&u)
        } else {
            Postgres::open_shared(&u)
        }
    })
    .join()
    .map_err(|_| Error::Open {
        path: redact(url).into(),
        msg: "the connection thread panicked".into(),
    })?
}

/// A handle to the writer thread. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    tx: mpsc::Sender<Job>,
    failed: Arc<AtomicBool>,
    /// Cleared when the writer thread ends.
    running: Arc<AtomicBool>,
}

impl Store {
    /// The id of a user catchd makes blocks as (`catch-and-release`, `watchlist`), with
    /// the blocker role and no way to log in; created (and added to `users`) on first
    /// start.
    ///
    /// # Errors
    /// The store failed.
    pub fn system_user(&self, users: &mut Vec<User>, name: &str) -> Result<UserId, Error> {
        if let Some(u) = users.iter().find(|u| u.name == name) {
            return Ok(u.id);
        }
        let u = User {
            id: self.next_user_id_blocking()?,
            name: name.to_string(),
            role: crate::auth::Role::Blocker,
            token_hash: None,
            password_hash: None,
        };
        self.commit_blocking(vec![Write::User(u.clone())])?;
        let id = u.id;
        users.push(u);
        Ok(id)
    }

    /// Opens (creating if needed) the SQLite database at `path`, migrates it, and starts
    /// the writer thread.
    ///
    /// # Errors
    /// [`Error::Open`] if it cannot be opened or migrated.
    pub fn open_sqlite(path: &Path) -> Result<Store, Error> {
        let backend = Sqlite::open(path)?;
        Store::start(backend)
    }

    /// Opens the database `db` names: a `postgres://` URL, or a SQLite file.
    ///
    /// # Errors
    /// [`Error::Open`].
    pub fn open(db: impl Into<Database>) -> Result<Store, Error> {
        match db.into() {
            Database::Postgres(url) => Store::open_postgres(&url),
            Database::Sqlite(p) => Store::open_sqlite(&p),
        }
    }

    /// Opens `db` to manage users while a server may be running (`catchd user`): SQLite
    /// allows that, and on PostgreSQL the writer lock is not taken (user rows are
    /// independent of the registry; servers reload them).
    ///
    /// # Errors
    /// [`Error::Open`].
    pub fn open_for_users(db: impl Into<Database>) -> Result<Store, Error> {
        match db.into() {
            Database::Postgres(url) => Store::start(postgres_on_thread(&url, false)?),
            Database::Sqlite(p) => Store::open_sqlite(&p),
        }
    }

    /// Connects to PostgreSQL, migrates, takes the writer lock and starts the writer
    /// thread. (The connection is made on a thread of its own: the synchronous client
    /// cannot start inside an async runtime.)
    ///
    /// # Errors
    /// [`Error::Open`].
    pub fn open_postgres(url: &str) -> Result<Store, Error> {
        Store::start(postgres_on_thread(url, true)?)
    }

    /// Starts the writer thread on a backend.
    ///
    /// # Errors
    /// If the thread cannot be started.
    pub fn start(backend: impl Driver) -> Result<Store, Error> {
        let (tx, rx) = mpsc::channel::<Job>();
        let failed = Arc::new(AtomicBool::new(false));
        let running = Arc::new(AtomicBool::new(true));
        let (flag, alive) = (failed.clone(), running.clone());
        std::thread::Builder::new()
            .name("catchd-store".into())
            .spawn(move || {
                // A panic in the writer is a bug: say so; the jobs left are answered
                // "closed", so whoever waits on them stops the server.
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    writer(backend, rx, flag.clone());
                }));
                if let Err(p) = r {
                    let why = p
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_string())
                        .or_else(|| p.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic".into());
                    tracing::error!("The store's writer stopped: {why}.");
                    flag.store(true, Ordering::Release);
                }
                alive.store(false, Ordering::Release);
            })
            .map_err(|e| Error::Db(format!("cannot start the store thread: {e}")))?;
        Ok(Store {
            tx,
            failed,
            running,
        })
    }

    /// Whether the writer runs and takes writes.
    pub fn is_up(&self) -> bool {
        self.running.load(Ordering::Acquire) && !self.failed.load(Ordering::Acquire)
    }

    /// Reads everything stored.
    ///
    /// # Errors
    /// [`Error::Db`] or [`Error::Corrupt`].
    pub async fn load(&self) -> Result<Snapshot, Error> {
        let (tx, rx) = oneshot::channel();
        self.send(Job::Load(tx))?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Reads everything stored (at start-up; blocking).
    ///
    /// # Errors
    /// [`Error::Db`] or [`Error::Corrupt`].
    pub fn load_blocking(&self) -> Result<Snapshot, Error> {
        let (tx, rx) = oneshot::channel();
        self.send(Job::Load(tx))?;
        rx.blocking_recv().map_err(|_| Error::Closed)?
    }

    fn send(&self, job: Job) -> Result<(), Error> {
        self.tx.send(job).map_err(|_| Error::Closed)
    }

    /// Queues writes. The returned receiver answers once they are durable. Calls made in
    /// some order are committed in that order.
    pub fn submit(&self, writes: Vec<Write>) -> oneshot::Receiver<Result<(), Error>> {
        let (done, rx) = oneshot::channel();
        if self.failed.load(Ordering::Acquire) {
            let _ = done.send(Err(Error::Failed));
            return rx;
        }
        if let Err(Error::Closed) = self.send(Job::Write(writes, Done::Receipt(done))) {
            // The sender went with the job; the receiver reports the closed channel.
        }
        rx
    }

    /// Queues writes; `then` is called on the writer thread once they are durable (or
    /// failed). It must not block: send to a channel. Calls made in some order are
    /// committed, and `then` called, in that order.
    pub fn submit_then(
        &self,
        writes: Vec<Write>,
        then: impl FnOnce(Result<(), Error>) + Send + 'static,
    ) {
        if self.failed.load(Ordering::Acquire) {
            then(Err(Error::Failed));
            return;
        }
        if let Err(mpsc::SendError(Job::Write(_, done))) =
            self.tx.send(Job::Write(writes, Done::Call(Box::new(then))))
        {
            done.send(Err(Error::Closed));
        }
    }

    /// Writes and waits until they are durable.
    ///
    /// # Errors
    /// The commit's error.
    pub async fn commit(&self, writes: Vec<Write>) -> Result<(), Error> {
        self.submit(writes).await.map_err(|_| Error::Closed)?
    }

    /// [`commit`](Store::commit) for code outside an async runtime (the CLI).
    ///
    /// # Errors
    /// The commit's error.
    pub fn commit_blocking(&self, writes: Vec<Write>) -> Result<(), Error> {
        self.submit(writes)
            .blocking_recv()
            .map_err(|_| Error::Closed)?
    }

    /// Looks a user up by token hash in the database.
    ///
    /// # Errors
    /// A database error.
    pub async fn user_by_token(&self, hash: [u8; 32]) -> Result<Option<User>, Error> {
        let (tx, rx) = oneshot::channel();
        self.send(Job::UserByToken(hash, tx))?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Looks a user up by name in the database (blocking; for the CLI).
    ///
    /// # Errors
    /// A database error.
    pub fn user_by_name_blocking(&self, name: &str) -> Result<Option<User>, Error> {
        let (tx, rx) = oneshot::channel();
        self.send(Job::UserByName(name.to_string(), tx))?;
        rx.blocking_recv().map_err(|_| Error::Closed)?
    }

    /// Looks a user up by name in the database.
    ///
    /// # Errors
    /// A database error.
    pub async fn user_by_name(&self, name: &str) -> Result<Option<User>, Error> {
        let (tx, rx) = oneshot::channel();
        self.send(Job::UserByName(name.to_string(), tx))?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Every user, read from the database (which other processes, such as `catchd user`,
    /// may have changed).
    ///
    /// # Errors
    /// A database error.
    pub async fn users(&self) -> Result<Vec<User>, Error> {
        let (tx, rx) = oneshot::channel();
        self.send(Job::Users(tx))?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// [`users`](Store::users) outside an async runtime (the CLI).
    ///
    /// # Errors
    /// A database error.
    pub fn users_blocking(&self) -> Result<Vec<User>, Error> {
        let (tx, rx) = oneshot::channel();
        self.send(Job::Users(tx))?;
        rx.blocking_recv().map_err(|_| Error::Closed)?
    }

    /// The next unused user id (blocking; for the CLI).
    ///
    /// # Errors
    /// A database error.
    pub fn next_user_id_blocking(&self) -> Result<UserId, Error> {
        let (tx, rx) = oneshot::channel();
        self.send(Job::NextUserId(tx))?;
        rx.blocking_recv().map_err(|_| Error::Closed)?
    }
}

/// The writer thread: takes every job waiting, commits the writes among them in one
/// transaction, then answers.
fn writer(mut db: impl Driver, rx: mpsc::Receiver<Job>, failed: Arc<AtomicBool>) {
    let mut jobs = Vec::with_capacity(64);
    while let Ok(first) = rx.recv() {
        jobs.push(first);
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let writes: Vec<&[Write]> = jobs
            .iter()
            .filter_map(|j| match j {
                Job::Write(w, _) => Some(w.as_slice()),
                _ => None,
            })
            .collect();
        let result = if writes.is_empty() {
            Ok(())
        } else if failed.load(Ordering::Acquire) {
            Err(Error::Failed)
        } else {
            db.apply(&writes)
        };
        if let Err(e) = &result {
            tracing::error!(error = %e, "Commit failed; refusing further writes.");
            failed.store(true, Ordering::Release);
        }
        for job in jobs.drain(..) {
            match job {
                Job::Write(_, done) => done.send(result.clone()),
                Job::UserByToken(h, tx) => {
                    let _ = tx.send(db.user_by_token(&h));
                }
                Job::UserByName(n, tx) => {
                    let _ = tx.send(db.user_by_name(&n));
                }
                Job::NextUserId(tx) => {
                    let _ = tx.send(db.next_user_id());
                }
                Job::Users(tx) => {
                    let _ = tx.send(db.users());
                }
                Job::Load(tx) => {
                    let _ = tx.send(db.load());
                }
            }
        }
    }
}
