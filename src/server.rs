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

use crate::api::bhr::{self as api, AppState, Users};
use crate::api::watchlist::WATCHLIST_USER;
use crate::bhr::registry::{Inconsistent, Registry};
use crate::config::Config;
use crate::store::{self, OwnerLock, Store};
use crate::time::Time;

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
    /// Something made going on unsafe while serving (a failed commit, a worker that
    /// cannot be restarted); the server stopped.
    #[error("stopped because {0}")]
    Failed(String),
    /// The watchlist cannot start (its key file).
    #[error(transparent)]
    Watchlist(#[from] crate::watchlist::Error),
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
    /// Its stored networks.
    pub watch_nets: Vec<(ipnet::IpNet, crate::cnr::WatchState)>,
    /// The time that state is current to.
    pub cr_clock: Option<Time>,
    /// The log scanner's positions, by path.
    pub scan_positions: Vec<(String, crate::scan::tail::Position)>,
    /// The watchlist's entries.
    pub watchlist: Vec<(String, crate::watchlist::Entry)>,
    /// The cluster to join (several API nodes on one database), and the change-log
    /// position the loaded state is current to.
    pub cluster: Option<(Arc<store::cluster::DbCluster>, i64)>,
}

/// Takes the database's owner lock, opens and migrates the store, and rebuilds the
/// registry from it at `now` (the process's clock).
///
/// # Errors
/// [`Error`].
pub fn open(config: &Config, now: Time) -> Result<Opened, Error> {
    let db = &config.server.db;
    if config.server.cluster && db.postgres_url().is_none() {
        return Err(Error::Store(store::Error::Open {
            path: db.as_path().to_path_buf(),
            msg: "server.cluster needs a postgres:// database".into(),
        }));
    }
    let lock = OwnerLock::acquire(db)?;
    let (store, cluster) = match db.postgres_url().filter(|_| config.server.cluster) {
        Some(url) => {
            // The log position first: what commits after it is loaded now and replayed
            // from the log again (harmless), never missed.
            let cluster = store::cluster::DbCluster::new(url);
            let head = crate::runtime::build()?.block_on(cluster.head())?;
            (Store::open_for_users(db)?, Some((cluster, head)))
        }
        None => (Store::open(db)?, None),
    };
    let snap = store.load_blocking()?;
    let (blocks, entries) = (snap.blocks.len(), snap.entries.len());
    let mut registry = Registry::restore(
        config.bhr.clone(),
        now,
        snap.blocks,
        snap.entries,
        snap.whitelist,
        snap.source_blacklist,
    )?;
    registry.set_host_addresses(host_addresses());
    let shown = db.to_string();
    tracing::info!(db = %shown, blocks, entries, "Store opened.");
    Ok(Opened {
        lock,
        store,
        registry,
        users: snap.users,
        watch: snap.watch,
        watch_nets: snap.watch_nets,
        cr_clock: snap.cr_clock,
        scan_positions: snap.scan_positions,
        watchlist: snap.watchlist,
        cluster,
    })
}

/// The addresses of this host's interfaces (none if they cannot be read).
pub fn host_addresses() -> Vec<std::net::IpAddr> {
    let Ok(ifs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut v: Vec<std::net::IpAddr> = ifs
        .filter_map(|i| {
            let a = i.address?;
            if let Some(s) = a.as_sockaddr_in() {
                Some(std::net::IpAddr::V4(s.ip()))
            } else {
                a.as_sockaddr_in6().map(|s| std::net::IpAddr::V6(s.ip()))
            }
        })
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Opens the store and registry for `config` and serves the API until `shutdown` fires
/// (or the store fails). `on_listening` is called with the bound address (useful with
/// port 0).
///
/// # Errors
/// [`Error`].
pub fn run(
    config: &Config,
    clock: api::Clock,
    shutdown: crate::shutdown::Shutdown,
    on_listening: impl FnOnce(SocketAddr),
) -> Result<(), Error> {
    let Opened {
        lock: _lock,
        store,
        registry,
        mut users,
        watchlist: entries,
        cluster,
        ..
    } = open(config, clock())?;
    let who = store.system_user(&mut users, WATCHLIST_USER)?;
    if users.is_empty() {
        tracing::warn!(
            "No users yet: only the public endpoints answer. Add one with \
             `catchd user add NAME --role blocker`."
        );
    }
    let users = Users::new(users);
    let rt = crate::runtime::build()?;
    rt.block_on(async {
        let (listener, local) = bind(config.server.listen).await?;
        let state = AppState::new(
            registry,
            store.clone(),
            users,
            clock,
            config.server.limits.clone(),
        );
        if let Some((c, head)) = cluster {
            state.join_cluster(c, head);
            tracing::info!("Joined the cluster: other nodes' changes are followed.");
        }
        tokio::spawn(api::reload_users(state.clone(), store));
        let (routes, wl) = crate::api::watchlist::start(&config.watchlist, &state, entries, who)?;
        tokio::spawn(crate::api::watchlist::sweep(wl, Duration::from_secs(60)));
        tracing::info!(
            "Serving the BHR API on http://{local}/bhr/api/ and its pages on http://{local}/bhr/"
        );
        on_listening(local);
        let routes = routes.merge(crate::web::router(state.clone(), None));
        let grace = config.server.limits.connections.shutdown_grace;
        api::serve(listener, state.clone(), Some(routes), async move {
            shutdown.wait().await;
            tracing::info!(
                "Stopping: finishing requests in flight (for at most {}).",
                humantime::format_duration(grace)
            );
        })
        .await;
        match state.failure() {
            Some(why) => Err(Error::Failed(why)),
            None => {
                tracing::info!("Stopped.");
                Ok(())
            }
        }
    })
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
