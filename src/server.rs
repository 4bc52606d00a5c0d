//! `catchd serve`: the BHR API over the durable store, until a signal.
//!
//! Start-up takes the database's owner lock, opens and migrates the store, rebuilds the
//! registry from it, binds the listener and serves. SIGINT or SIGTERM stops accepting,
//! ends long polls and lets requests in flight finish. A failed commit stops the server
//! too (with an error), because memory then holds changes the disk does not: restarting
//! from what is durable is the only safe way on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::bhr::api::{self, AppState, Users};
use crate::bhr::registry::{Inconsistent, Registry};
use crate::config::Config;
use crate::store::{self, OwnerLock, Store};
use crate::time::Time;

/// How often the user table is re-read, so that `catchd user` changes (new tokens, roles)
/// reach a running server.
pub const USER_RELOAD: Duration = Duration::from_secs(2);

/// Why serving failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store could not be opened, read, or failed while running.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The stored rows do not form a registry.
    #[error(transparent)]
    Inconsistent(#[from] Inconsistent),
    /// The listening address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The async runtime or the server failed.
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
    /// A commit failed while serving; the server stopped.
    #[error("stopped because the store failed: {0}")]
    StoreFailed(String),
}

/// What start-up opens: the owner lock, the store, and what it held.
pub struct Opened {
    /// Held while the process runs.
    pub lock: OwnerLock,
    /// The store.
    pub store: Store,
    /// The registry rebuilt from the stored rows.
    pub registry: Registry,
    /// The users.
    pub users: Vec<crate::auth::User>,
    /// Catch-and-release's stored state.
    pub watch: Vec<(crate::addr::Addr, crate::cnr::WatchState)>,
    /// The time that state is current to.
    pub cr_clock: Option<Time>,
}

/// Takes the database's owner lock, opens and migrates the store, and rebuilds the
/// registry from it.
///
/// # Errors
/// [`Error`].
pub fn open(config: &Config) -> Result<Opened, Error> {
    let db = &config.server.db;
    let lock = OwnerLock::acquire(db)?;
    let store = Store::open_sqlite(db)?;
    let snap = store.load_blocking()?;
    let (blocks, entries) = (snap.blocks.len(), snap.entries.len());
    let registry = Registry::restore(
        config.bhr.clone(),
        Time::now(),
        snap.blocks,
        snap.entries,
        snap.whitelist,
        snap.source_blacklist,
    )?;
    tracing::info!(db = %db.display(), blocks, entries, "Store opened.");
    Ok(Opened {
        lock,
        store,
        registry,
        users: snap.users,
        watch: snap.watch,
        cr_clock: snap.cr_clock,
    })
}

/// Opens the store and registry for `config` and serves the API until SIGINT/SIGTERM.
/// `on_listening` is called with the bound address (useful with port 0).
///
/// # Errors
/// [`Error`].
pub fn run(config: &Config, on_listening: impl FnOnce(SocketAddr)) -> Result<(), Error> {
    let Opened {
        lock: _lock,
        store,
        registry,
        users,
        ..
    } = open(config)?;
    if users.is_empty() {
        tracing::warn!(
            "No users yet: only the public endpoints answer. Add one with \
             `catchd user add NAME --role blocker`."
        );
    }
    let users = Users::new(users);
    let rt = runtime()?;
    rt.block_on(async {
        let (listener, local) = bind(config.server.listen).await?;
        let state = AppState::new(
            registry,
            store.clone(),
            users,
            api::system_clock(),
            config.server.limits.clone(),
        );
        tokio::spawn(reload_users(state.clone(), store));
        tracing::info!("Serving the BHR API on http://{local}/bhr/api/");
        on_listening(local);
        api::serve(listener, state.clone(), None, async {
            signal().await;
            tracing::info!("Stopping: finishing requests in flight.");
        })
        .await?;
        match state.failure() {
            Some(why) => Err(Error::StoreFailed(why)),
            None => {
                tracing::info!("Stopped.");
                Ok(())
            }
        }
    })
}

/// The async runtime the servers run on.
///
/// # Errors
/// If it cannot be built.
pub fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("catchd-http")
        .build()?)
}

/// Binds the listener.
///
/// # Errors
/// [`Error::Bind`] naming the address.
pub async fn bind(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), Error> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// Re-reads the users every [`USER_RELOAD`] until the server stops.
pub async fn reload_users(state: Arc<AppState>, store: Store) {
    let mut tick = tokio::time::interval(USER_RELOAD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = state.stopping() => return,
        }
        match store.users().await {
            Ok(users) => {
                if state.users().reload(users) {
                    tracing::info!("Users reloaded.");
                }
            }
            Err(e) => tracing::warn!(error = %e, "Cannot re-read the users."),
        }
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
