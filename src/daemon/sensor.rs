//! `catchd run` as a sensor (`bus.role = "sensor"`): capture only, as a Zeek worker does
//! in catch-and-release.
//!
//! The sensor keeps a [`Replica`] of the manager's watched set from
//! `catch_release_block_new` / `catch_release_block_delete` on the worker topic, and its
//! capture threads check originators against it. A sighting of a replicated address is
//! reported to the manager as `catch_release_encountered` on the manager topic, at most
//! once per `bus.notify_interval` (30 s, Zeek's `catch_release_recently_notified`) per
//! address. Entries expire on their own at their `watch_until`, as Zeek's workers expire
//! their replica (FORGOTTEN is not published).
//!
//! Because the events are Zeek's, the manager can be a Zeek manager running
//! catch-and-release. With a catchd manager the sensor also catches up at start (and
//! whenever a manager announces itself): it asks for the whole watched set, which the
//! manager sends framed by `Catchd::sync_begin` and `sync_end`; entries the snapshot did
//! not mention are then dropped.
//!
//! No database, no BHR API: the sensor serves `/metrics` and a read-only view of its
//! replica (`GET /api/v1/cr`, `GET /api/v1/cr/<addr>`) on `server.listen`, unauthenticated
//! (there are no users on a sensor; keep it on loopback or a management network).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use dashmap::DashMap;

use crate::addr::Addr;
use crate::api::bhr::{ApiError, Json};
use crate::broker::zeek::{self, Incoming};
use crate::bus::{Publisher, Received};
use crate::cnr::BlockInfo;
use crate::config::Config;
use crate::server;
use crate::sniff::{SensorStats, Sighting, Watched};
use crate::time::Time;

use super::Error;

/// A sensor's copy of the manager's watched set.
#[derive(Debug, Default)]
pub struct Replica {
    map: DashMap<Addr, (BlockInfo, u64), foldhash::fast::RandomState>,
    /// The snapshot being received (entries marked with it survive its end).
    generation: AtomicU64,
}

impl Watched for Replica {
    #[inline]
    fn contains(&self, a: &Addr) -> bool {
        self.map.contains_key(a)
    }
}

impl Replica {
    /// Takes a `block_new`.
    pub fn put(&self, a: Addr, b: BlockInfo) {
        let g = self.generation.load(Ordering::Relaxed);
        self.map.insert(a, (b, g));
    }

    /// Takes a `block_delete`.
    pub fn remove(&self, a: &Addr) -> bool {
        self.map.remove(a).is_some()
    }

    /// A snapshot begins: entries it (re)sends are marked with a new generation.
    pub fn begin_snapshot(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// A snapshot ended: entries it did not mention are gone from the manager.
    /// Returns how many were dropped.
    pub fn end_snapshot(&self) -> usize {
        let g = self.generation.load(Ordering::Relaxed);
        let before = self.map.len();
        self.map.retain(|_, (_, eg)| *eg >= g);
        before - self.map.len()
    }

    /// Drops entries whose watch ended before `now`. Returns how many.
    pub fn expire(&self, now: Time) -> usize {
        let before = self.map.len();
        self.map.retain(|_, (b, _)| b.watch_until >= now);
        before - self.map.len()
    }

    /// The entry for `a`.
    pub fn get(&self, a: &Addr) -> Option<BlockInfo> {
        self.map.get(a).map(|r| r.value().0.clone())
    }

    /// Every entry, sorted by address.
    pub fn snapshot(&self) -> Vec<(Addr, BlockInfo)> {
        let mut v: Vec<_> = self
            .map
            .iter()
            .map(|r| (*r.key(), r.value().0.clone()))
            .collect();
        v.sort_unstable_by_key(|(a, _)| *a);
        v
    }

    /// How many addresses are replicated.
    pub fn len(&self) -> usize {
        self.map.len()
    }
}

/// The sensor's counters.
#[derive(Debug, Default)]
pub struct SensorRoleStats {
    /// `catch_release_encountered` events sent.
    pub encounters_sent: AtomicU64,
    /// Sightings not reported because the address was reported recently.
    pub encounters_suppressed: AtomicU64,
    /// `block_new` events taken.
    pub block_new: AtomicU64,
    /// `block_delete` events taken.
    pub block_delete: AtomicU64,
    /// Entries whose watch ended.
    pub expired: AtomicU64,
    /// Snapshots received.
    pub syncs: AtomicU64,
}

/// Reports sightings, applies replica updates, expires entries.
struct Loop {
    replica: Arc<Replica>,
    publisher: Publisher,
    node_id: String,
    notify_interval: crate::time::Interval,
    notified: HashMap<Addr, Time>,
    stats: Arc<SensorRoleStats>,
}

impl Loop {
    fn sighting(&mut self, s: Sighting) {
        let now = s.ts.max(Time::now());
        if let Some(t) = self.notified.get(&s.addr)
            && now - *t < self.notify_interval
        {
            self.stats
                .encounters_suppressed
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.notified.insert(s.addr, now);
        if self
            .publisher
            .publish(zeek::MANAGER_TOPIC, zeek::encountered(s.addr))
        {
            self.stats.encounters_sent.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn request_sync(&self) {
        self.publisher.publish(
            zeek::CONTROL_MANAGER_TOPIC,
            zeek::sync_request(&self.node_id),
        );
    }

    fn event(&mut self, r: Received) {
        match r.event {
            Incoming::BlockNew(a, b) => {
                self.replica.put(a, b);
                self.stats.block_new.fetch_add(1, Ordering::Relaxed);
            }
            Incoming::BlockDelete(a) => {
                self.replica.remove(&a);
                self.notified.remove(&a);
                self.stats.block_delete.fetch_add(1, Ordering::Relaxed);
            }
            Incoming::Sync { begin: true, .. } => self.replica.begin_snapshot(),
            Incoming::Sync { begin: false, n } => {
                let dropped = self.replica.end_snapshot();
                self.stats.syncs.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    from = %r.sender,
                    entries = n,
                    dropped,
                    "Sensor: replica synchronised."
                );
            }
            Incoming::ManagerUp(node) => {
                tracing::info!(manager = %node, "Sensor: a manager came up; asking for the watched set.");
                self.request_sync();
            }
            other => {
                tracing::debug!(?other, "Sensor: ignoring an event meant for managers.");
            }
        }
    }

    fn tick(&mut self) {
        let now = Time::now();
        let n = self.replica.expire(now);
        self.stats.expired.fetch_add(n as u64, Ordering::Relaxed);
        let keep = self.notify_interval;
        self.notified.retain(|_, t| now - *t < keep);
    }
}

struct SensorHttp {
    replica: Arc<Replica>,
    captures: Vec<(String, Arc<SensorStats>)>,
    bus: (String, Arc<crate::bus::Stats>),
    stats: Arc<SensorRoleStats>,
    started: std::time::Instant,
    metrics: crate::telemetry::Registry,
}

type St = State<Arc<SensorHttp>>;

async fn list(State(s): St) -> Response {
    let all = s.replica.snapshot();
    Json::seq(all.iter().map(|(a, i)| super::http::info_out(Some(*a), i))).respond(StatusCode::OK)
}

async fn info(State(s): St, Path(raw): Path<String>) -> Result<Response, ApiError> {
    let addr = super::http::parse_addr("addr", &raw)?;
    let i = s.replica.get(&addr).unwrap_or_else(BlockInfo::unknown);
    Ok(Json::of(&super::http::info_out(None, &i)).respond(StatusCode::OK))
}

async fn metrics(State(s): St) -> Response {
    s.metrics.response()
}

/// Every counter of a sensor.
fn collect(s: &SensorHttp, m: &mut crate::telemetry::Metrics) {
    use crate::telemetry::{Kind, count};
    super::http::collect_captures(&s.captures, m);
    crate::bus::collect_metrics(&s.bus.1, &s.bus.0, m);
    let st = &s.stats;
    for (name, kind, help, v) in [
        (
            "catchd_sensor_replica_watched",
            Kind::Gauge,
            "addresses in the replica of the manager's watched set",
            s.replica.len() as u64,
        ),
        (
            "catchd_sensor_encounters_sent_total",
            Kind::Counter,
            "catch_release_encountered events sent to the manager",
            st.encounters_sent.load(Ordering::Relaxed),
        ),
        (
            "catchd_sensor_encounters_suppressed_total",
            Kind::Counter,
            "sightings not reported because the address was reported recently",
            st.encounters_suppressed.load(Ordering::Relaxed),
        ),
        (
            "catchd_sensor_block_new_total",
            Kind::Counter,
            "catch_release_block_new events applied",
            st.block_new.load(Ordering::Relaxed),
        ),
        (
            "catchd_sensor_block_delete_total",
            Kind::Counter,
            "catch_release_block_delete events applied",
            st.block_delete.load(Ordering::Relaxed),
        ),
        (
            "catchd_sensor_expired_total",
            Kind::Counter,
            "replica entries whose watch ended",
            st.expired.load(Ordering::Relaxed),
        ),
        (
            "catchd_sensor_syncs_total",
            Kind::Counter,
            "snapshots of the watched set received",
            st.syncs.load(Ordering::Relaxed),
        ),
    ] {
        m.of(kind, name, help).value(count(v));
    }
    super::http::uptime(s.started, m);
}

/// Runs a sensor until `shutdown` fires.
///
/// # Errors
/// [`Error`]: a capture, the bus or the listener could not start.
pub fn run(
    config: &Config,
    shutdown: crate::shutdown::Shutdown,
    on_listening: impl FnOnce(SocketAddr),
) -> Result<(), Error> {
    let lives = super::open_captures(config)?;
    let rt = crate::runtime::build()?;
    let (listener, local) = rt.block_on(server::bind(config.server.listen))?;
    let node_id = config
        .bus
        .node_id
        .clone()
        .unwrap_or_else(|| crate::bus::default_node_id("sensor"));
    let mut config = config.clone();
    config.bus.node_id = Some(node_id.clone());
    let (proxy, node, bus_rx) = super::join_bus(
        &config,
        "sensor",
        vec![
            zeek::WORKER_TOPIC.to_string(),
            zeek::CONTROL_SENSOR_TOPIC.to_string(),
            format!("{}{node_id}.", zeek::NODE_TOPIC_PREFIX),
        ],
    )?;
    if let Some(user) = &config.daemon.user {
        super::drop_privileges(user)?;
    }
    let replica = Arc::new(Replica::default());
    let stats = Arc::new(SensorRoleStats::default());
    let mut lp = Loop {
        replica: replica.clone(),
        publisher: node.publisher(),
        node_id: node_id.clone(),
        notify_interval: crate::time::Interval::from_micros(
            i64::try_from(config.bus.notify_interval.as_micros()).unwrap_or(i64::MAX),
        ),
        notified: HashMap::new(),
        stats: stats.clone(),
    };
    lp.request_sync();

    let (sight_tx, sight_rx) = crossbeam_channel::bounded::<Sighting>(config.capture.queue);
    let stop = Arc::new(AtomicBool::new(false));
    let rule = config.capture.sightings;
    let sensors = crate::sniff::spawn_all(lives, &replica, rule, &sight_tx, &stop)?;
    drop(sight_tx);
    let loop_stop = stop.clone();
    let loop_thread = std::thread::Builder::new()
        .name("catchd-sensor".into())
        .spawn(move || {
            let tick = crossbeam_channel::tick(Duration::from_secs(1));
            while !loop_stop.load(Ordering::Relaxed) {
                crossbeam_channel::select! {
                    recv(sight_rx) -> s => match s {
                        Ok(s) => lp.sighting(s),
                        Err(_) => std::thread::sleep(Duration::from_millis(100)),
                    },
                    recv(bus_rx) -> r => if let Ok(r) = r { lp.event(r) },
                    recv(tick) -> _ => lp.tick(),
                }
            }
        })?;

    let http = Arc::new(SensorHttp {
        replica,
        captures: sensors
            .iter()
            .map(|s| (s.interface().to_string(), s.stats().clone()))
            .collect(),
        bus: (node_id.clone(), node.publisher().stats().clone()),
        stats,
        started: std::time::Instant::now(),
        metrics: crate::telemetry::Registry::new(),
    });
    {
        let weak = Arc::downgrade(&http);
        http.metrics.add(move |m: &mut crate::telemetry::Metrics| {
            if let Some(s) = weak.upgrade() {
                collect(&s, m);
            }
        });
    }
    let app = Router::new()
        .route("/api/v1/cr", get(list))
        .route("/api/v1/cr/", get(list))
        .route("/api/v1/cr/{addr}", get(info))
        .route("/metrics", get(metrics))
        .with_state(http);
    tracing::info!(node = %node_id, "catchd sensor running: replica on http://{local}/api/v1/cr");
    on_listening(local);
    if let Some(timeout) = crate::systemd::watchdog_interval() {
        // A sensor has no core to ask: the runtime serving HTTP is its sign of life.
        rt.spawn(async move {
            loop {
                crate::systemd::watchdog();
                tokio::time::sleep(timeout / 2).await;
            }
        });
    }
    let served = rt.block_on(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                shutdown.wait().await;
                tracing::info!("Stopping.");
            })
            .await
    });
    stop.store(true, Ordering::Relaxed);
    for s in sensors {
        s.join();
    }
    let _ = loop_thread.join();
    node.stop();
    if let Some(p) = proxy {
        p.stop();
    }
    served.map_err(server::Error::Io)?;
    tracing::info!("Stopped.");
    Ok(())
}
