//! `catchd run`: the daemon. One process with live capture, catch-and-release on the BHR
//! registry, the BHR and catch-and-release APIs, the store, and the Zeek logs.
//!
//! Threads: one capture thread per interface (`crate::sniff`), the core thread that
//! owns the engine (`core`), the store's writer (and its checkpointer), and the tokio
//! runtime serving HTTP. Start-up opens everything that needs privileges or can fail on a
//! bad setting first (database, captures, logs, listening socket), then drops privileges,
//! then starts the threads. SIGTERM/SIGINT stop in order: capture and intake first, then
//! requests in flight finish, then the core persists, closes the logs and waits for the
//! store. SIGHUP rotates the logs.

pub(crate) mod cluster;
pub(crate) mod core;
pub(crate) mod effects;
pub(crate) mod http;
pub(crate) mod logscan;
pub(crate) mod sensor;
pub(crate) mod workers;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::api::bhr::{self as api, AppState, Clock, Users};
use crate::capture::{Live, LiveError, LiveOptions};
use crate::cnr::Config as EngineConfig;
use crate::config::Config;
use crate::server::{self, Opened};
use crate::shutdown::Shutdown;
use crate::sniff::Sighting;
use crate::zeeklog::{Format, LogSet};

use self::cluster::ManagerBus;
use self::core::{Command, Core, Saved, Setup};
use self::effects::Effects;
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
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    /// The watchlist cannot start (its key file).
    #[error(transparent)]
    Watchlist(#[from] crate::watchlist::Error),
    /// The process lacks capabilities the configuration needs.
    #[error(transparent)]
    Capabilities(#[from] crate::caps::Missing),
}

/// The capabilities `config` needs: `CAP_NET_RAW` per live capture, `CAP_NET_ADMIN`
/// (ambient, for their commands) per firewall or route blocker, `CAP_NET_BIND_SERVICE` for
/// a privileged port, `CAP_SETUID`/`CAP_SETGID` to become `daemon.user`.
pub fn capability_needs(config: &Config) -> Vec<crate::caps::Need> {
    use crate::caps::{Cap, Need};
    let mut needs: Vec<Need> = config
        .capture
        .interfaces
        .iter()
        .map(|i| Need::own(Cap::NetRaw, format!("to capture on {i}")))
        .collect();
    if config.bus.role != crate::config::ClusterRole::Sensor {
        for b in config.blockers.iter().filter(|b| !b.dry_run) {
            if b.kind.needs_net_admin() {
                needs.push(Need::children(
                    Cap::NetAdmin,
                    format!("for [[blocker]] {} ({})", b.ident, b.kind.name()),
                ));
            }
        }
    }
    let port = config.server.listen.port();
    if port != 0 && port < crate::caps::unprivileged_port_start() {
        needs.push(Need::own(
            Cap::NetBindService,
            format!("to listen on port {port} (server.listen)"),
        ));
    }
    if let Some(user) = &config.daemon.user
        && nix::unistd::User::from_name(user)
            .ok()
            .flatten()
            .is_none_or(|pw| pw.uid != nix::unistd::Uid::effective())
    {
        let why = format!("to become daemon.user {user}");
        needs.push(Need::own(Cap::Setuid, why.clone()));
        needs.push(Need::own(Cap::Setgid, why));
    }
    needs
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
    let names = if b.curve_from_env {
        &crate::bus::curve::ENV
    } else {
        &crate::bus::curve::KEYS
    };
    let curve = b
        .curve
        .resolve(b.proxy, true, names)
        .map_err(|(key, msg)| crate::bus::Error::Curve { key, msg })?;
    let proxy = if b.proxy {
        Some(crate::bus::proxy::start(&b.xpub, &b.xsub, curve.as_ref())?)
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
        curve,
        websocket: b.websocket.clone(),
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

/// What `run` opens before any thread starts (everything that needs privileges or can
/// fail on a bad setting), privileges dropped after.
struct Resources {
    lives: Vec<Live>,
    opened: Opened,
    /// The system users of the watchlist and of catch-and-release.
    watchlist_who: crate::bhr::model::UserId,
    cnr_who: crate::bhr::model::UserId,
    logs: LogSet,
    listener: tokio::net::TcpListener,
    local: SocketAddr,
}

impl Resources {
    /// Opens them, the captures first so that a wrong interface leaves nothing behind.
    fn open(
        config: &Config,
        now: crate::time::Time,
        rt: &tokio::runtime::Runtime,
    ) -> Result<Resources, Error> {
        let lives = open_captures(config)?;
        let mut opened = server::open(config, now)?;
        let watchlist_who = opened
            .store
            .system_user(&mut opened.users, crate::api::watchlist::WATCHLIST_USER)?;
        let cnr_who = opened.store.system_user(&mut opened.users, CNR_USER)?;
        let format = if config.logs.json {
            Format::Json
        } else {
            Format::Tsv
        };
        let logs = LogSet::open_append(&config.logs.dir, format)?;
        let (listener, local) = rt.block_on(server::bind(config.server.listen))?;
        if let Some(user) = &config.daemon.user {
            drop_privileges(user)?;
        }
        Ok(Resources {
            lives,
            opened,
            watchlist_who,
            cnr_who,
            logs,
            listener,
            local,
        })
    }
}

/// The blockers of `[[blocker]]`: block managers run inside the daemon.
struct Blockers {
    /// Each with the function that makes it again after a panic.
    managers: Vec<(String, LocalManager, MakeManager)>,
    /// Ident, backend name and counters, for the status page and `/metrics`.
    stats: Vec<(String, &'static str, Arc<crate::manager::Counters>)>,
}

type LocalManager = crate::manager::Manager<crate::manager::local::Local>;
type MakeManager = Box<dyn Fn() -> Result<LocalManager, String> + Send + Sync>;

impl Blockers {
    fn new(config: &Config, state: &Arc<AppState>) -> Result<Blockers, Error> {
        let mut managers = Vec::new();
        let mut stats = Vec::new();
        for b in &config.blockers {
            let counters = Arc::new(crate::manager::Counters::default());
            let make: MakeManager = {
                let (state, b, counters) = (state.clone(), b.clone(), counters.clone());
                Box::new(move || {
                    let runner = crate::enforce::Runner::new(b.options.command_timeout, b.dry_run);
                    let backend = if b.kind == crate::enforce::Kind::Exabgp {
                        // Inside the daemon ExaBGP reaches the blocker through
                        // `catchd exabgp-bridge` on a socket.
                        crate::enforce::Enforcer::exabgp_socket(&b.options, b.dry_run)
                    } else {
                        crate::enforce::Enforcer::new(b.kind, &b.options, runner)
                    };
                    backend
                        .map(|backend| {
                            crate::manager::Manager::with_counters(
                                crate::manager::local::Local::new(state.clone(), &b.ident),
                                backend,
                                b.settings.clone(),
                                counters.clone(),
                            )
                        })
                        .map_err(|m| format!("blocker {}: {m}", b.ident))
                })
            };
            let first = make().map_err(Error::Blocker)?;
            stats.push((b.ident.clone(), first.backend_name(), counters));
            managers.push((b.ident.clone(), first, make));
        }
        Ok(Blockers { managers, stats })
    }
}

/// The block managers catch-and-release's drops go to: `cnr.block_managers`, then the
/// blockers' idents.
fn block_manager_idents(config: &Config) -> Vec<String> {
    let mut idents = config.cnr.block_managers.clone();
    for b in &config.blockers {
        if !idents.contains(&b.ident) {
            idents.push(b.ident.clone());
        }
    }
    idents
}

/// The daemon's end of the event bus, when it is on one.
struct OnBus {
    proxy: Option<crate::bus::proxy::Proxy>,
    node: crate::bus::Node,
}

impl OnBus {
    /// Joins as the catch-and-release manager: the cluster for the core, and its events.
    fn join(
        config: &Config,
        who: crate::bhr::model::UserId,
    ) -> Result<
        (
            OnBus,
            ManagerBus,
            crossbeam_channel::Receiver<crate::bus::Received>,
        ),
        Error,
    > {
        let mut topics = vec![
            crate::broker::zeek::MANAGER_TOPIC.to_string(),
            crate::broker::zeek::CONTROL_MANAGER_TOPIC.to_string(),
        ];
        if config.bus.netcontrol {
            topics.push(config.bus.netcontrol_topic.clone());
        }
        let (proxy, node, rx) = join_bus(config, "manager", topics)?;
        let c = ManagerBus::new(
            node.publisher(),
            node.node_id().to_string(),
            config.bus.netcontrol,
            config.bus.netcontrol_source.clone(),
            who,
        );
        Ok((OnBus { proxy, node }, c, rx))
    }

    fn stop(self) {
        self.node.stop();
        if let Some(p) = self.proxy {
            p.stop();
        }
    }
}

/// Runs the daemon until `shutdown` fires (or it stops by itself with an error: the store
/// failed, the lease was lost, the core stopped). `clock` is the process's one clock (the
/// API's and catch-and-release's); `on_listening` is called with the bound HTTP address
/// once everything runs.
///
/// # Errors
/// [`Error`].
pub fn run(
    config: &Config,
    clock: Clock,
    shutdown: Shutdown,
    on_listening: impl FnOnce(SocketAddr),
) -> Result<(), Error> {
    crate::caps::check(&capability_needs(config))?;
    if config.bus.enabled && config.bus.role == crate::config::ClusterRole::Sensor {
        return sensor::run(config, shutdown, on_listening);
    }
    // In a cluster, catch-and-release has one owner: wait to be it before loading its
    // state (the previous owner is gone by then, and wrote all it had).
    let lease = match config
        .server
        .db
        .postgres_url()
        .filter(|_| config.server.cluster)
    {
        Some(url) => match wait_for_lease(url, config, &shutdown)? {
            Some(l) => Some(l),
            None => {
                tracing::info!("Stopped (still standby).");
                return Ok(());
            }
        },
        None => None,
    };
    let rt = crate::runtime::build()?;
    let res = Resources::open(config, clock(), &rt)?;
    let parts = Parts::assemble(config, res, clock, &rt)?;
    let running = parts.spawn(config)?;
    let state = running.serve(config, &rt, lease, shutdown, on_listening);
    // The lease task (and any other) ends with the runtime.
    drop(rt);
    match state.failure() {
        Some(why) => Err(server::Error::Failed(why).into()),
        None => {
            tracing::info!("Stopped.");
            Ok(())
        }
    }
}

/// The daemon assembled, before any thread runs.
struct Parts {
    _lock: crate::store::OwnerLock,
    state: Arc<AppState>,
    store: crate::store::Store,
    workers: Arc<Workers>,
    blockers: Blockers,
    bus: Option<OnBus>,
    bus_rx: crossbeam_channel::Receiver<crate::bus::Received>,
    core: Core,
    scan_positions: Vec<(String, crate::scan::tail::Position)>,
    watch_entries: Vec<(String, crate::watchlist::Entry)>,
    watchlist_who: crate::bhr::model::UserId,
    lives: Vec<Live>,
    listener: tokio::net::TcpListener,
    local: SocketAddr,
}

impl Parts {
    /// The API's state on `clock`, the blockers, the bus, and the core with its saved
    /// state restored.
    fn assemble(
        config: &Config,
        res: Resources,
        clock: Clock,
        rt: &tokio::runtime::Runtime,
    ) -> Result<Parts, Error> {
        let cnr_who = res.cnr_who;
        let Opened {
            lock,
            store,
            registry,
            users,
            watch,
            watch_nets,
            cr_clock,
            scan_positions,
            watchlist: watch_entries,
            cluster: db_cluster,
        } = res.opened;
        let state = AppState::new(
            registry,
            store.clone(),
            Users::new(users),
            clock,
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
        let blockers = Blockers::new(config, &state)?;
        let (bus, cluster, bus_rx) = if config.bus.enabled {
            let (b, c, rx) = OnBus::join(config, cnr_who)?;
            (Some(b), Some(c), rx)
        } else {
            (None, None, crossbeam_channel::never())
        };
        let setup = Setup {
            engine: engine_config(config),
            settings: core::Settings {
                block_managers: block_manager_idents(config),
                hand_over_sources: config.cnr.hand_over_sources.clone(),
                rotate_interval: config.logs.rotate_interval,
                rotate_size: config.logs.rotate_size,
            },
            effects: Effects::new(state.clone(), cnr_who, &config.cnr.source, &config.cnr.why),
            api: state.clone(),
            store: store.clone(),
            logs: res.logs,
            cluster,
        };
        let saved = Saved {
            watch,
            nets: watch_nets,
            clock: cr_clock,
        };
        Ok(Parts {
            _lock: lock,
            state,
            store,
            workers,
            blockers,
            bus,
            bus_rx,
            core: Core::start(setup, saved),
            scan_positions,
            watch_entries,
            watchlist_who: res.watchlist_who,
            lives: res.lives,
            listener: res.listener,
            local: res.local,
        })
    }

    /// Starts the core thread, the log scanner and the capture threads.
    fn spawn(self, config: &Config) -> Result<Running, Error> {
        let (state, workers) = (&self.state.clone(), &self.workers.clone());
        let (watchlist, metrics) = (self.core.watched(), self.core.metrics());
        let (sight_tx, sight_rx) = crossbeam_channel::bounded::<Sighting>(config.capture.queue);
        let (cmd_tx, cmd_rx) = crossbeam_channel::unbounded::<Command>();
        // The core owns the engine: if it stops, nothing can take its place, so the daemon
        // stops with an error (to be restarted from what is durable).
        let mut core = Some((self.core, sight_rx, cmd_rx, self.bus_rx));
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
            &self.scan_positions,
            {
                let tx = cmd_tx.clone();
                Arc::new(move |b| tx.send(Command::Scan(b)).is_ok())
            },
            stop_capture.clone(),
            scan_metrics.clone(),
            workers,
        )
        .map_err(Error::Scan)?;
        let (watchlist_routes, wl_api) = crate::api::watchlist::start(
            &config.watchlist,
            state,
            self.watch_entries,
            self.watchlist_who,
        )?;
        let rule = config.capture.sightings;
        let sensors =
            crate::sniff::spawn_all(self.lives, &watchlist, rule, &sight_tx, &stop_capture)?;
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
            blockers: self.blockers.stats,
            bus: self.bus.as_ref().map(|b| {
                let n = &b.node;
                (n.node_id().to_string(), n.publisher().stats().clone())
            }),
            scan: scan_metrics,
            watchlist: wl_api.clone(),
            watched: watchlist,
            intervals: config.cnr.intervals.clone(),
            cr_source: config.cnr.source.clone(),
            workers: workers.clone(),
            metrics: crate::telemetry::Registry::new(),
        });
        http::register_metrics(&cr);
        let routes = http::router(cr.clone())
            .merge(watchlist_routes)
            .merge(crate::web::router(state.clone(), Some(cr)));
        Ok(Running {
            _lock: self._lock,
            state: self.state,
            store: self.store,
            workers: self.workers,
            managers: self.blockers.managers,
            routes,
            watchlist: wl_api,
            listener: self.listener,
            local: self.local,
            stop_capture,
            threads: Stopping {
                sensors,
                scan: scan_thread,
                commands: cmd_tx,
                core: core_thread,
                bus: self.bus,
            },
        })
    }
}

/// The daemon with its threads running, about to serve.
struct Running {
    _lock: crate::store::OwnerLock,
    state: Arc<AppState>,
    store: crate::store::Store,
    workers: Arc<Workers>,
    managers: Vec<(String, LocalManager, MakeManager)>,
    routes: axum::Router,
    watchlist: Arc<crate::api::watchlist::WatchlistApi>,
    listener: tokio::net::TcpListener,
    local: SocketAddr,
    stop_capture: Arc<AtomicBool>,
    threads: Stopping,
}

impl Running {
    /// Starts the tasks, serves HTTP until `shutdown` fires or the daemon stops by itself,
    /// then stops everything in order; returns the API's state (for its failure).
    fn serve(
        self,
        config: &Config,
        rt: &tokio::runtime::Runtime,
        lease: Option<(Arc<crate::store::cluster::DbCluster>, String)>,
        shutdown: Shutdown,
        on_listening: impl FnOnce(SocketAddr),
    ) -> Arc<AppState> {
        let (state, workers, local) = (self.state, self.workers, self.local);
        rt.block_on(async {
            let tasks = Tasks {
                workers: &workers,
                state: &state,
                store: &self.store,
                commands: &self.threads.commands,
                watchlist: self.watchlist,
                config_path: config.path.clone(),
            };
            if let Some((c, holder)) = lease {
                tasks.keep_lease(c, holder, config.server.lease_ttl);
            }
            let (stop_managers, running) = tasks.start(self.managers);
            tracing::info!(
                "catchd running: BHR API on http://{local}/bhr/api/, catch-and-release on http://{local}/api/v1/cr"
            );
            on_listening(local);
            tasks.watchdog();
            let stop = self.stop_capture.clone();
            let grace = config.server.limits.connections.shutdown_grace;
            let stopping = async move {
                shutdown.wait().await;
                tracing::info!(
                    "Stopping: finishing requests in flight (for at most {}).",
                    humantime::format_duration(grace)
                );
                // Capture first: no new sightings while requests finish.
                stop.store(true, Ordering::Relaxed);
            };
            api::serve(self.listener, state.clone(), Some(self.routes), stopping).await;
            // From here on, workers end because the daemon stops.
            workers.stop();
            // Block managers finish the step they are in (a batch is applied and
            // acknowledged, or not applied) before the store closes.
            let _ = stop_managers.send(true);
            for r in running {
                let _ = r.await;
            }
        });
        self.stop_capture.store(true, Ordering::Relaxed);
        self.threads.join();
        state
    }
}

/// The engine's settings from the configuration (its start time comes from the store).
/// Says so when catch-and-release of networks would make networks the registry refuses.
fn warn_networks(config: &Config) {
    if let Some(n) = &config.cnr.networks {
        let b = &config.bhr;
        if n.shape.len4 < b.minimum_prefixlen || n.shape.len6 < b.minimum_prefixlen_v6 {
            tracing::warn!(
                prefix4 = n.shape.len4,
                prefix6 = n.shape.len6,
                minimum_prefixlen = b.minimum_prefixlen,
                minimum_prefixlen_v6 = b.minimum_prefixlen_v6,
                "cnr.networks: networks wider than the registry's minimum prefix lengths are refused (netcontrol_catch_release_net.log says so for each)."
            );
        }
    }
}

fn engine_config(config: &Config) -> EngineConfig {
    warn_networks(config);
    EngineConfig {
        intervals: config.cnr.intervals.clone(),
        warn_blocked: config.cnr.warn_blocked,
        sweep_interval: config.cnr.sweep_interval,
        max_timer_expires: None,
        networks: config.cnr.networks.clone(),
        ..EngineConfig::default()
    }
}

/// The threads still to stop once HTTP and the tasks are done, in their order: capture
/// and scan (no new input), the core (persists, closes the logs), then the bus.
struct Stopping {
    sensors: Vec<crate::sniff::Sensor>,
    scan: Option<std::thread::JoinHandle<()>>,
    commands: crossbeam_channel::Sender<Command>,
    core: std::thread::JoinHandle<()>,
    bus: Option<OnBus>,
}

impl Stopping {
    fn join(self) {
        for s in self.sensors {
            s.join();
        }
        if let Some(t) = self.scan {
            let _ = t.join();
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.commands.send(Command::Stop { reply: tx }).is_ok() {
            let _ = rx.blocking_recv();
        }
        let _ = self.core.join();
        if let Some(b) = self.bus {
            b.stop();
        }
    }
}

/// The daemon's async tasks, each watched by [`Workers`].
struct Tasks<'a> {
    workers: &'a Arc<Workers>,
    state: &'a Arc<AppState>,
    store: &'a crate::store::Store,
    commands: &'a crossbeam_channel::Sender<Command>,
    watchlist: Arc<crate::api::watchlist::WatchlistApi>,
    config_path: Option<std::path::PathBuf>,
}

impl Tasks<'_> {
    /// Renews the lease; losing it stops the daemon with an error.
    fn keep_lease(
        &self,
        cluster: Arc<crate::store::cluster::DbCluster>,
        holder: String,
        ttl: std::time::Duration,
    ) {
        let state = self.state.clone();
        self.workers
            .task(self.workers.add("lease", None), Policy::Fatal, move || {
                keep_lease(cluster.clone(), holder.clone(), ttl, state.clone())
            });
    }

    /// Pings systemd's watchdog while the core answers, when systemd asks for it (after
    /// READY=1: the first thing the service manager hears is that start-up is done).
    fn watchdog(&self) {
        if let Some(timeout) = crate::systemd::watchdog_interval() {
            let w = self.workers;
            let tx = self.commands.clone();
            w.task(w.add("watchdog", None), Policy::Restart, move || {
                let tx = tx.clone();
                async move {
                    watchdog(tx, timeout).await;
                    Ok(())
                }
            });
        }
    }

    /// Starts the user reload, SIGHUP rotation, watchlist sweep and the blockers; returns
    /// what stops the blockers and their tasks.
    fn start(
        &self,
        managers: Vec<(String, LocalManager, MakeManager)>,
    ) -> (
        tokio::sync::watch::Sender<bool>,
        Vec<tokio::task::JoinHandle<()>>,
    ) {
        let w = self.workers;
        {
            let (state, store) = (self.state.clone(), self.store.clone());
            w.task(w.add("users", None), Policy::Restart, move || {
                let (state, store) = (state.clone(), store.clone());
                async move {
                    api::reload_users(state, store).await;
                    Ok(())
                }
            });
        }
        {
            let (tx, state, path) = (
                self.commands.clone(),
                self.state.clone(),
                self.config_path.clone(),
            );
            w.task(w.add("sighup", None), Policy::Restart, move || {
                let (tx, state, path) = (tx.clone(), state.clone(), path.clone());
                async move {
                    reload_on_hup(tx, state, path).await;
                    Ok(())
                }
            });
        }
        let wl = self.watchlist.clone();
        w.task(w.add("watchlist_sweep", None), Policy::Restart, move || {
            let wl = wl.clone();
            async move {
                crate::api::watchlist::sweep(wl, std::time::Duration::from_secs(60)).await;
                Ok(())
            }
        });
        let (stop_managers, managers_stop) = tokio::sync::watch::channel(false);
        let mut running = Vec::new();
        for (ident, first, make) in managers {
            let mut first = Some(first);
            let stop = managers_stop.clone();
            running.push(w.task(
                w.add("blocker", Some(("ident", ident))),
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
        (stop_managers, running)
    }
}

/// The lease that makes a node catch-and-release's owner in a cluster.
const CNR_LEASE: &str = "catch-and-release";

/// Blocks until this node holds catch-and-release's lease (`None`: the shutdown fired
/// first).
fn wait_for_lease(
    url: &str,
    config: &Config,
    shutdown: &Shutdown,
) -> Result<Option<(Arc<crate::store::cluster::DbCluster>, String)>, Error> {
    // The schema (and its lease table) first.
    drop(
        crate::store::Store::open_for_users(crate::store::Database::Postgres(url.into()))
            .map_err(server::Error::Store)?,
    );
    let cluster = crate::store::cluster::DbCluster::new(url);
    let ttl = config.server.lease_ttl;
    // The node's name on the bus, if it has one, else host and process.
    let holder = config
        .bus
        .node_id
        .clone()
        .unwrap_or_else(|| crate::bus::default_node_id("run"));
    let rt = crate::runtime::build()?;
    let mut said = String::new();
    rt.block_on(async {
        let stop = shutdown.wait();
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

/// Renews the lease every third of its time until the daemon stops; an error says why it
/// lost it (another node took it, or the database was unreachable for a whole lease): a
/// node that cannot renew stops rather than run catch-and-release next to a new owner.
async fn keep_lease(
    cluster: Arc<crate::store::cluster::DbCluster>,
    holder: String,
    ttl: std::time::Duration,
    state: Arc<AppState>,
) -> Result<(), String> {
    let mut last_ok = std::time::Instant::now();
    loop {
        tokio::select! {
            () = tokio::time::sleep(ttl / 3) => {}
            () = state.stopping() => return Ok(()),
        }
        match cluster.lease(CNR_LEASE, &holder, ttl).await {
            Ok(None) => last_ok = std::time::Instant::now(),
            Ok(Some(other)) => {
                return Err(format!("node {other} took the catch-and-release lease"));
            }
            Err(e) => {
                tracing::warn!(error = %e, "Cannot renew the catch-and-release lease.");
                if last_ok.elapsed() >= ttl {
                    return Err("the catch-and-release lease ran out".into());
                }
            }
        }
    }
}

/// On every SIGHUP (`systemctl reload catchd`): rotates the logs, re-reads the
/// registry's rules (`[bhr]`: never_block, minimum prefix lengths, autoscale, the limited
/// views) from the configuration file and the host's addresses. A file that no longer
/// checks leaves the running rules in place and says why; everything else in the file
/// takes a restart.
async fn reload_on_hup(
    commands: crossbeam_channel::Sender<Command>,
    state: Arc<AppState>,
    path: Option<std::path::PathBuf>,
) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        crate::systemd::reloading();
        if commands.send(Command::Rotate).is_err() {
            return;
        }
        let host = server::host_addresses();
        match path.as_deref().map(Config::load) {
            None => {
                state.reload_rules(state.read(|r| r.settings().clone()), host);
                tracing::info!("SIGHUP: logs rotated (no configuration file to re-read).");
            }
            Some(Ok(c)) => {
                let changed = state.reload_rules(c.bhr, host);
                tracing::info!(
                    rules_changed = changed,
                    "SIGHUP: logs rotated, [bhr] rules and the host's addresses re-read (other settings take a restart)."
                );
            }
            Some(Err(e)) => tracing::warn!(
                error = %e,
                "SIGHUP: logs rotated; the configuration file does not check, the running rules stay."
            ),
        }
        crate::systemd::ready("reloaded");
    }
}

/// Pings systemd's watchdog at half its timeout while the core answers: a core stuck
/// for longer than the timeout gets the daemon restarted by systemd.
async fn watchdog(commands: crossbeam_channel::Sender<Command>, timeout: std::time::Duration) {
    let every = timeout / 2;
    loop {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if commands.send(Command::Ping { reply: tx }).is_err() {
            return;
        }
        match tokio::time::timeout(every, rx).await {
            Ok(Ok(())) => {
                crate::systemd::watchdog();
            }
            Ok(Err(_)) => return,
            Err(_) => tracing::warn!(
                "The core has not answered for {}; not telling the watchdog.",
                humantime::format_duration(every)
            ),
        }
        tokio::time::sleep(every).await;
    }
}
