//! `catchd run`: the daemon. One process with live capture, catch-and-release on the BHR
//! registry, the BHR and catch-and-release APIs, the store, and the Zeek logs.
//!
//! Threads: one capture thread per interface ([`crate::sensor`]), the core thread that
//! owns the engine ([`core`]), the store's writer (and its checkpointer), and the tokio
//! runtime serving HTTP. Start-up opens everything that needs privileges or can fail on a
//! bad setting first (database, captures, logs, listening socket), then drops privileges,
//! then starts the threads. SIGTERM/SIGINT stop in order: capture and intake first, then
//! requests in flight finish, then the core persists, closes the logs and waits for the
//! store. SIGHUP rotates the logs.

pub mod cluster;
pub mod core;
pub mod effects;
pub mod http;
pub mod logscan;
pub mod replica;
pub mod workers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::bhr::api::{self, AppState, Users};
use crate::capture::{Live, LiveError, LiveOptions};
use crate::cnr::{Backend, Config as EngineConfig, Engine};
use crate::config::Config;
use crate::packet::Sightings;
use crate::sensor::Sighting;
use crate::server::{self, Opened};
use crate::zeeklog::{Format, LogSet};

use self::core::{Command, Core, CoreMetrics};
use self::effects::{Effects, ManagerPlugin, RegistryIds};
use self::workers::{Policy, Workers};

/// The user the registry blocks of catch-and-release are made as.
pub const CNR_USER: &str = "catch-and-release";

/// Why the daemon could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Start-up or serving failed (store, listener …).
    #[error(transparent)]
    Server(#[from] server::Error),
    /// A capture could not be opened.
    #[error(transparent)]
    Capture(#[from] LiveError),
    /// The logs could not be opened.
    #[error(transparent)]
    Logs(#[from] crate::zeeklog::Error),
    /// Switching to the configured user failed.
    #[error("cannot run as user {user}: {msg}")]
    Privileges {
        /// The user.
        user: String,
        /// Why.
        msg: String,
    },
    /// A thread could not be started.
    #[error("cannot start a thread: {0}")]
    Thread(#[from] std::io::Error),
    /// A `[[blocker]]` cannot be set up.
    #[error("{0}")]
    Blocker(String),
    /// The event bus could not start.
    #[error(transparent)]
    Bus(#[from] crate::bus::Error),
    /// The log scanner could not start.
    #[error("scan: {0}")]
    Scan(String),
}

/// Opens the configured interfaces.
fn open_captures(config: &Config) -> Result<Vec<Live>, Error> {
    let mut lives = Vec::new();
    for iface in &config.capture.interfaces {
        let o = LiveOptions {
            interface: iface.clone(),
            snaplen: config.capture.snaplen,
            promisc: config.capture.promisc,
            buffer_size: config.capture.buffer_size,
            filter: config.capture.filter.clone(),
        };
        lives.push(Live::open(&o)?);
        tracing::info!(interface = %iface, "Capturing.");
    }
    Ok(lives)
}

/// Starts the in-process proxy (if configured) and joins the bus as `role`, subscribed to
/// `subscribe`.
fn join_bus(
    config: &Config,
    role: &str,
    subscribe: Vec<String>,
) -> Result<
    (
        Option<crate::bus::proxy::Proxy>,
        crate::bus::Node,
        crossbeam_channel::Receiver<crate::bus::Received>,
    ),
    Error,
> {
    let b = &config.bus;
    let proxy = if b.proxy {
        Some(crate::bus::proxy::start(&b.xpub, &b.xsub)?)
    } else {
        None
    };
    let (node, rx) = crate::bus::Node::start(crate::bus::Options {
        xpub: b.xpub.clone(),
        xsub: b.xsub.clone(),
        node_id: b
            .node_id
            .clone()
            .unwrap_or_else(|| crate::bus::default_node_id(role)),
        format: if b.json {
            crate::broker::Format::Json
        } else {
            crate::broker::Format::Bin
        },
        subscribe,
        queue: b.queue,
    })?;
    Ok((proxy, node, rx))
}

/// Runs as `user` from now on (the captures, database, logs and socket stay open).
fn drop_privileges(user: &str) -> Result<(), Error> {
    use nix::unistd::{Uid, User as PwUser, setgid, setgroups, setuid};
    let err = |msg: String| Error::Privileges {
        user: user.to_string(),
        msg,
    };
    let pw = PwUser::from_name(user)
        .map_err(|e| err(e.to_string()))?
        .ok_or_else(|| err("no such user".into()))?;
    if Uid::effective() == pw.uid {
        return Ok(());
    }
    setgroups(&[pw.gid]).map_err(|e| err(format!("setgroups: {e}")))?;
    setgid(pw.gid).map_err(|e| err(format!("setgid: {e}")))?;
    setuid(pw.uid).map_err(|e| err(format!("setuid: {e}")))?;
    tracing::info!(user, "Running as {user}.");
    Ok(())
}

/// Runs the daemon until SIGTERM/SIGINT. `on_listening` is called with the bound HTTP
/// address once everything runs.
///
/// # Errors
/// [`Error`].
pub fn run(config: &Config, on_listening: impl FnOnce(SocketAddr)) -> Result<(), Error> {
    if config.bus.enabled && config.bus.role == crate::config::Role::Sensor {
        return replica::run(config, on_listening);
    }
    // In a cluster, catch-and-release has one owner: wait to be it before loading its
    // state (the previous owner is gone by then, and wrote all it had).
    let lease = match config.server.db.to_str().filter(|_| config.server.cluster) {
        Some(url) => match wait_for_lease(url, config.server.lease_ttl)? {
            Some(l) => Some(l),
            None => {
                tracing::info!("Stopped (still standby).");
                return Ok(());
            }
        },
        None => None,
    };
    // Everything that needs privileges, or can fail on a bad setting, before any thread;
    // the captures first, so that a wrong interface leaves nothing behind.
    let lives = open_captures(config)?;
    let Opened {
        lock: _lock,
        store,
        registry,
        mut users,
        watch,
        cr_clock,
        scan_positions,
        watchlist: watch_entries,
        cluster: db_cluster,
    } = server::open(config)?;
    let watchlist_who = server::system_user(&store, &mut users, server::WATCHLIST_USER)?;
    let who = server::system_user(&store, &mut users, CNR_USER)?;
    let format = if config.logs.json {
        Format::Json
    } else {
        Format::Tsv
    };
    let logs = LogSet::open_append(&config.logs.dir, format)?;
    let rt = server::runtime()?;
    let (listener, local) = rt.block_on(server::bind(config.server.listen))?;
    if let Some(user) = &config.daemon.user {
        drop_privileges(user)?;
    }

    let state = AppState::new(
        registry,
        store.clone(),
        Users::new(users),
        api::system_clock(),
        config.server.limits.clone(),
    );
    if let Some((c, head)) = db_cluster {
        // Before the core starts: its registry changes take the cluster's lock too.
        let _enter = rt.enter();
        state.join_cluster(c, head);
    }
    let workers = {
        let st = state.clone();
        Workers::new(Arc::new(move |why| st.abort(why)))
    };
    let effects = Effects::new(state.clone(), who, &config.cnr.source, &config.cnr.why);
    // The blockers inside the daemon are block managers of catch-and-release's drops.
    let mut idents = config.cnr.block_managers.clone();
    for b in &config.blockers {
        if !idents.contains(&b.ident) {
            idents.push(b.ident.clone());
        }
    }
    // Each blocker is made by a function, so that one that stops (a panic in a backend)
    // can be made and started again, counting on where it stopped.
    let mut managers = Vec::new();
    let mut blockers = Vec::new();
    for b in &config.blockers {
        let counters = Arc::new(crate::manager::Counters::default());
        let make = {
            let (state, b, counters) = (state.clone(), b.clone(), counters.clone());
            move || {
                let runner = crate::enforce::Runner::new(b.options.command_timeout, b.dry_run);
                crate::enforce::Backend::new(b.kind, &b.options, runner)
                    .map(|backend| {
                        crate::manager::Manager::with_counters(
                            crate::manager::local::Local::new(state.clone(), &b.ident),
                            backend,
                            b.settings.clone(),
                            counters.clone(),
                        )
                    })
                    .map_err(|m| format!("blocker {}: {m}", b.ident))
            }
        };
        let first = make().map_err(Error::Blocker)?;
        blockers.push((b.ident.clone(), first.backend_name(), counters));
        managers.push((b.ident.clone(), first, make));
    }
    let mut backends: Vec<(Box<dyn Backend>, i64)> = Vec::new();
    if idents.is_empty() {
        backends.push((Box::new(ManagerPlugin::auto(effects.clone())), 0));
    } else {
        for ident in &idents {
            backends.push((Box::new(ManagerPlugin::ident(ident, effects.clone())), 0));
        }
    }
    let mut engine = Engine::new(
        EngineConfig {
            intervals: config.cnr.intervals.clone(),
            warn_blocked: config.cnr.warn_blocked,
            sweep_interval: config.cnr.sweep_interval,
            max_timer_expires: None,
            start: cr_clock.unwrap_or_else(crate::time::Time::now),
            ..EngineConfig::default()
        },
        backends,
    );
    engine.set_rule_ids(Box::new(RegistryIds(effects.clone())));
    let watchlist = engine.watchlist().clone();
    let metrics = Arc::new(CoreMetrics::default());
    let mut bus = None;
    let (cluster, bus_rx) = if config.bus.enabled {
        let mut topics = vec![
            crate::broker::zeek::MANAGER_TOPIC.to_string(),
            crate::broker::zeek::CONTROL_MANAGER_TOPIC.to_string(),
        ];
        if config.bus.netcontrol {
            topics.push(config.bus.netcontrol_topic.clone());
        }
        let (proxy, node, rx) = join_bus(config, "manager", topics)?;
        let c = self::cluster::Cluster::new(
            node.publisher(),
            node.node_id().to_string(),
            config.bus.netcontrol,
            config.bus.netcontrol_source.clone(),
            who,
        );
        bus = Some((proxy, node));
        (Some(c), rx)
    } else {
        (None, crossbeam_channel::never())
    };
    let bus_stats = bus
        .as_ref()
        .map(|(_, n)| (n.node_id().to_string(), n.publisher().stats().clone()));
    let core = Core::start(
        engine,
        effects,
        state.clone(),
        store.clone(),
        logs,
        core::Settings {
            block_managers: idents.clone(),
            hand_over_sources: config.cnr.hand_over_sources.clone(),
            rotate_interval: config.logs.rotate_interval,
            rotate_size: config.logs.rotate_size,
        },
        watch,
        cr_clock,
        metrics.clone(),
        cluster,
    );

    let (sight_tx, sight_rx) = crossbeam_channel::bounded::<Sighting>(config.capture.queue);
    let (cmd_tx, cmd_rx) = crossbeam_channel::unbounded::<Command>();
    // The core owns the engine: if it stops, nothing can take its place, so the daemon
    // stops with an error (to be restarted from what is durable).
    let mut core = Some((core, sight_rx, cmd_rx, bus_rx));
    let core_thread = workers.thread(
        "catchd-core",
        workers.add("core", None),
        Policy::Fatal,
        move || match core.take() {
            Some((core, sightings, commands, bus)) => core.run(sightings, commands, bus),
            None => Ok(()),
        },
    )?;
    {
        let tx = cmd_tx.clone();
        state.set_listener(Box::new(move |changes| {
            let _ = tx.send(Command::Registry(changes.to_vec()));
        }));
    }
    let stop_capture = Arc::new(AtomicBool::new(false));
    let scan_metrics = Arc::new(logscan::ScanMetrics::default());
    let scan_thread = logscan::spawn(
        config,
        &scan_positions,
        cmd_tx.clone(),
        stop_capture.clone(),
        scan_metrics.clone(),
        &workers,
    )
    .map_err(Error::Scan)?;
    let (watchlist_routes, wl_api) =
        server::watchlist(config, &state, watch_entries, watchlist_who)?;
    let rule = Sightings {
        any_packet: config.capture.any_packet,
    };
    let sensors = crate::sensor::spawn_all(lives, &watchlist, rule, &sight_tx, &stop_capture)?;
    drop(sight_tx);
    let cr = Arc::new(http::CrState {
        api: state.clone(),
        commands: cmd_tx.clone(),
        core: metrics,
        sensors: sensors
            .iter()
            .map(|s| (s.interface().to_string(), s.stats().clone()))
            .collect(),
        started: std::time::Instant::now(),
        blockers,
        bus: bus_stats,
        scan: scan_metrics,
        watchlist: wl_api.clone(),
        watched: watchlist.clone(),
        intervals: config.cnr.intervals.clone(),
        cr_source: config.cnr.source.clone(),
        workers: workers.clone(),
    });
    let (stop_managers, managers_stop) = tokio::sync::watch::channel(false);

    rt.block_on(async {
        if let Some((c, holder)) = lease.clone() {
            tokio::spawn(keep_lease(c, holder, config.server.lease_ttl));
        }
        {
            let (state, store) = (state.clone(), store.clone());
            workers.task(workers.add("users", None), Policy::Restart, move || {
                let (state, store) = (state.clone(), store.clone());
                async move {
                    server::reload_users(state, store).await;
                    Ok(())
                }
            });
        }
        {
            let tx = cmd_tx.clone();
            workers.task(workers.add("sighup", None), Policy::Restart, move || {
                let tx = tx.clone();
                async move {
                    rotate_on_hup(tx).await;
                    Ok(())
                }
            });
        }
        workers.task(workers.add("watchlist_sweep", None), Policy::Restart, move || {
            let wl = wl_api.clone();
            async move {
                crate::watchlist::api::sweep(wl, std::time::Duration::from_secs(60)).await;
                Ok(())
            }
        });
        let mut running = Vec::new();
        for (ident, first, make) in managers {
            let mut first = Some(first);
            let stop = managers_stop.clone();
            running.push(workers.task(
                workers.add("blocker", Some(("ident", ident))),
                Policy::Restart,
                move || {
                    let m = first.take().map_or_else(&make, Ok);
                    let stop = stop.clone();
                    async move {
                        m?.run(stop).await;
                        Ok(())
                    }
                },
            ));
        }
        tracing::info!(
            "catchd running: BHR API on http://{local}/bhr/api/, catch-and-release on http://{local}/api/v1/cr"
        );
        on_listening(local);
        let stop = stop_capture.clone();
        let grace = config.server.limits.connections.shutdown_grace;
        let shutdown = async move {
            server::signal().await;
            tracing::info!(
                "Stopping: finishing requests in flight (for at most {}).",
                humantime::format_duration(grace)
            );
            // Capture first: no new sightings while requests finish.
            stop.store(true, Ordering::Relaxed);
        };
        api::serve(listener, state.clone(), Some(
                http::router(cr.clone())
                    .merge(watchlist_routes)
                    .merge(crate::web::router(state.clone(), Some(cr.clone()))),
            ), shutdown).await;
        // From here on, workers end because the daemon stops.
        workers.stop();
        // Block managers finish the step they are in (a batch is applied and
        // acknowledged, or not applied) before the store closes.
        let _ = stop_managers.send(true);
        for r in running {
            let _ = r.await;
        }
    });
    stop_capture.store(true, Ordering::Relaxed);
    for s in sensors {
        s.join();
    }
    if let Some(t) = scan_thread {
        let _ = t.join();
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    if cmd_tx.send(Command::Stop { reply: tx }).is_ok() {
        let _ = rx.blocking_recv();
    }
    let _ = core_thread.join();
    if let Some((proxy, node)) = bus {
        node.stop();
        if let Some(p) = proxy {
            p.stop();
        }
    }
    match state.failure() {
        Some(why) => Err(server::Error::Failed(why).into()),
        None => {
            tracing::info!("Stopped.");
            Ok(())
        }
    }
}

/// The lease that makes a node catch-and-release's owner in a cluster.
const CNR_LEASE: &str = "catch-and-release";

/// Blocks until this node holds catch-and-release's lease (`None`: a signal said stop
/// first).
fn wait_for_lease(
    url: &str,
    ttl: std::time::Duration,
) -> Result<Option<(Arc<crate::store::cluster::Cluster>, String)>, Error> {
    // The schema (and its lease table) first.
    drop(
        crate::store::Store::open_for_users(std::path::Path::new(url))
            .map_err(server::Error::Store)?,
    );
    let cluster = crate::store::cluster::Cluster::new(url);
    let holder = crate::bus::default_node_id("run");
    let rt = server::runtime()?;
    let mut said = String::new();
    rt.block_on(async {
        let stop = server::signal();
        tokio::pin!(stop);
        loop {
            match cluster.lease(CNR_LEASE, &holder, ttl).await {
                Ok(None) => {
                    tracing::info!(node = %holder, "Holding the catch-and-release lease.");
                    return Ok(Some((cluster.clone(), holder.clone())));
                }
                Ok(Some(other)) => {
                    if other != said {
                        tracing::info!(
                            owner = %other,
                            "Standby: catch-and-release runs on another node; waiting for its lease."
                        );
                        said = other;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "Cannot reach the cluster's database; retrying."),
            }
            tokio::select! {
                () = tokio::time::sleep(ttl / 3) => {}
                () = &mut stop => return Ok(None),
            }
        }
    })
}

/// Renews the lease every third of its time; a node that cannot (another took it, or the
/// database was unreachable for a whole lease) stops at once rather than run
/// catch-and-release next to a new owner.
async fn keep_lease(
    cluster: Arc<crate::store::cluster::Cluster>,
    holder: String,
    ttl: std::time::Duration,
) {
    let mut last_ok = std::time::Instant::now();
    loop {
        tokio::time::sleep(ttl / 3).await;
        match cluster.lease(CNR_LEASE, &holder, ttl).await {
            Ok(None) => last_ok = std::time::Instant::now(),
            Ok(Some(other)) => {
                tracing::error!(owner = %other, "Lost the catch-and-release lease; stopping.");
                std::process::exit(1);
            }
            Err(e) => {
                tracing::warn!(error = %e, "Cannot renew the catch-and-release lease.");
                if last_ok.elapsed() >= ttl {
                    tracing::error!("The lease ran out; stopping.");
                    std::process::exit(1);
                }
            }
        }
    }
}

/// Asks the core to rotate the logs on every SIGHUP.
async fn rotate_on_hup(commands: crossbeam_channel::Sender<Command>) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        if commands.send(Command::Rotate).is_err() {
            return;
        }
    }
}
