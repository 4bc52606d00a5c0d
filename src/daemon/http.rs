//! The daemon's own HTTP routes, next to the BHR API: catch-and-release (JSON, with the
//! BHR API's tokens and error shapes) and Prometheus metrics.
//!
//! * `POST /api/v1/cr/drop` `{"addr", "location"}` → the BlockInfo (blocker role or above);
//!   a JSON list of such objects → a list of BlockInfos with their `addr` (or `error`);
//! * `POST /api/v1/cr/unblock` `{"addr", "reason"}` → `{"unblocked": bool}` (user role);
//! * `GET /api/v1/cr/<addr>` → the BlockInfo (`watch_until` 0 when unknown);
//! * `GET /api/v1/cr` → every tracked address with its BlockInfo, then every tracked
//!   network (catch-and-release of networks) with `subnet` in place of `addr`;
//! * `GET /api/v1/cr/networks` → the tracked networks alone;
//! * `POST /api/v1/cr/unblock` with a network (`{"addr": "2001:db8::/64"}`) ends
//!   catch-and-release of that network;
//! * `GET /metrics` → capture, engine and API counters (public).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use crossbeam_channel::Sender;
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::oneshot;

use crate::addr::Addr;
use crate::api::bhr::{ApiError, AppState, FieldErrors, Json, authenticate, body, object, text};
use crate::auth::Perm;
use crate::cnr::{Action, BlockInfo};
use crate::sniff::SensorStats;
use crate::telemetry::{Kind, Metrics, count};
use crate::time::Time;

use super::core::{Command, CoreMetrics};

/// What the routes need.
pub struct CrState {
    /// The BHR API's state (users, store).
    pub api: Arc<AppState>,
    /// The core thread.
    pub commands: Sender<Command>,
    /// Counters.
    pub core: Arc<CoreMetrics>,
    /// Capture counters, by interface.
    pub sensors: Vec<(String, Arc<SensorStats>)>,
    /// When the daemon started.
    pub started: std::time::Instant,
    /// The block managers inside the daemon: ident, backend, counters.
    pub blockers: Vec<(String, &'static str, Arc<crate::manager::Counters>)>,
    /// The event bus: node id and counters.
    pub bus: Option<(String, Arc<crate::bus::Stats>)>,
    /// The log scanner's counters.
    pub scan: Arc<super::logscan::ScanMetrics>,
    /// The watchlist.
    pub watchlist: Arc<crate::api::watchlist::WatchlistApi>,
    /// Catch-and-release's watched addresses (read only).
    pub watched: Arc<crate::cnr::WatchTable>,
    /// The escalation ladder.
    pub intervals: crate::cnr::Intervals,
    /// The registry source of catch-and-release's blocks.
    pub cr_source: String,
    /// The daemon's supervised workers.
    pub workers: Arc<super::workers::Workers>,
    /// The process's metrics (see [`register_metrics`]).
    pub metrics: crate::telemetry::Registry,
}

impl crate::web::CatchRelease for CrState {
    fn overview(
        &self,
        limit: usize,
        filter: Option<&ipnet::IpNet>,
        now: Time,
    ) -> crate::web::Overview {
        let top = self.watched.top(limit, now, |a| {
            filter.is_none_or(|n| n.contains(&std::net::IpAddr::from(*a)))
        });
        let c = &self.core;
        let recent = c
            .recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .rev()
            .cloned()
            .collect();
        crate::web::Overview {
            watched: self.watched.len(),
            matched: top.matched,
            blocked: top.blocked,
            rows: top.rows,
            nets: self
                .watched
                .net_snapshot()
                .into_iter()
                .filter(|(n, _)| {
                    filter.is_none_or(|f| f.contains(&n.network()) || n.contains(&f.network()))
                })
                .take(limit)
                .collect(),
            intervals: Some(self.intervals.clone()),
            recent,
            captures: self
                .sensors
                .iter()
                .map(|(iface, st)| crate::web::cr::Capture {
                    interface: iface.clone(),
                    up: !st.failed.load(Ordering::Relaxed),
                    rate: st.rate.load(Ordering::Relaxed),
                    packets: st.packets.load(Ordering::Relaxed),
                    kernel_dropped: st.kernel_dropped.load(Ordering::Relaxed),
                    if_dropped: st.if_dropped.load(Ordering::Relaxed),
                    sightings: st.sightings.load(Ordering::Relaxed),
                    channel_drops: st.channel_drops.load(Ordering::Relaxed),
                    skipped: st.skipped.load(Ordering::Relaxed),
                })
                .collect(),
            actions: Action::ALL
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    (
                        a.as_str().trim_start_matches("NetControl::"),
                        c.actions[i].load(Ordering::Relaxed),
                    )
                })
                .collect(),
            source: self.cr_source.clone(),
        }
    }
}

type St = State<Arc<CrState>>;
type Result<T> = std::result::Result<T, ApiError>;

/// The routes.
pub fn router(state: Arc<CrState>) -> Router {
    Router::new()
        .route("/api/v1/cr", get(list))
        .route("/api/v1/cr/", get(list))
        .route("/api/v1/cr/drop", post(drop))
        .route("/api/v1/cr/unblock", post(unblock))
        .route("/api/v1/cr/networks", get(networks))
        .route("/api/v1/cr/{addr}", get(info))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// BlockInfo as JSON: times in epoch seconds.
#[derive(Serialize)]
pub(crate) struct InfoOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    addr: Option<String>,
    block_until: Option<f64>,
    watch_until: f64,
    num_reblocked: u32,
    current_interval: usize,
    current_block_id: Option<u32>,
    location: Option<String>,
}

fn secs(t: Time) -> f64 {
    t.as_secs_f64()
}

pub(crate) fn info_out(addr: Option<Addr>, i: &BlockInfo) -> InfoOut {
    InfoOut {
        addr: addr.map(|a| a.to_string()),
        block_until: i.block_until.map(secs),
        watch_until: secs(i.watch_until),
        num_reblocked: i.num_reblocked,
        current_interval: i.current_interval,
        current_block_id: i.current_block_id.map(|r| r.get()),
        location: i.location.as_deref().map(str::to_string),
    }
}

pub(crate) fn parse_addr(field: &str, raw: &str) -> Result<Addr> {
    let t = raw.trim();
    let t = t
        .strip_suffix("/32")
        .or_else(|| t.strip_suffix("/128"))
        .unwrap_or(t);
    t.parse::<std::net::IpAddr>().map(Addr::from).map_err(|_| {
        ApiError::Invalid(FieldErrors::one(
            field,
            format!("'{raw}' does not appear to be an IPv4 or IPv6 address"),
        ))
    })
}

async fn ask<T>(s: &CrState, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T> {
    let (tx, rx) = oneshot::channel();
    s.commands
        .send(make(tx))
        .map_err(|_| ApiError::Internal("the catch-and-release core is gone".into()))?;
    rx.await
        .map_err(|_| ApiError::Internal("the catch-and-release core is gone".into()))
}

async fn durable(s: &CrState, rx: crate::api::bhr::Receipt) -> Result<()> {
    s.api.durable(rx).await
}

/// One drop request of a list: the address and location, or the field errors.
fn drop_item(v: Value) -> std::result::Result<(Addr, String), Value> {
    let m = match object(v) {
        Ok(m) => m,
        Err(ApiError::Invalid(e)) => return Err(e.to_json()),
        Err(_) => return Err(Value::Null),
    };
    let mut e = FieldErrors::default();
    let raw = text(&m, "addr", true, false, Some(50), &mut e);
    let location = text(&m, "location", false, true, Some(1000), &mut e).unwrap_or_default();
    match (raw, e.is_empty()) {
        (Some(raw), true) => {
            parse_addr("addr", &raw)
                .map(|a| (a, location))
                .map_err(|err| match err {
                    ApiError::Invalid(e) => e.to_json(),
                    _ => Value::Null,
                })
        }
        _ => Err(e.to_json()),
    }
}

/// `POST /api/v1/cr/drop` with a list: every item valid, or nothing happens.
async fn drop_many(s: &CrState, items: Vec<Value>) -> Result<Response> {
    let mut ok = Vec::with_capacity(items.len());
    let mut errors = Vec::with_capacity(items.len());
    let mut bad = false;
    for v in items {
        match drop_item(v) {
            Ok(item) => {
                ok.push(item);
                errors.push(Value::Object(Map::new()));
            }
            Err(e) => {
                bad = true;
                errors.push(e);
            }
        }
    }
    if bad {
        return Err(ApiError::InvalidJson(Value::Array(errors)));
    }
    let addrs: Vec<Addr> = ok.iter().map(|(a, _)| *a).collect();
    let d = ask(s, |reply| Command::DropMany { items: ok, reply }).await?;
    durable(s, d.receipt).await?;
    let out: Vec<Value> = addrs
        .iter()
        .zip(d.value)
        .map(|(a, r)| match r {
            Ok(info) => serde_json::to_value(info_out(Some(*a), &info)).unwrap_or(Value::Null),
            Err(why) => serde_json::json!({"addr": a.to_string(), "error": why}),
        })
        .collect();
    tracing::info!("CR_DROP {} addresses", out.len());
    Ok(Json::of(&out).respond(StatusCode::OK))
}

/// `POST /api/v1/cr/drop`.
async fn drop(State(s): St, h: HeaderMap, b: Bytes) -> Result<Response> {
    authenticate(&s.api, &h).await?.require(&[Perm::AddBlock])?;
    let m = match body(&h, &b)? {
        Value::Array(items) => return drop_many(&s, items).await,
        v => object(v)?,
    };
    let mut e = FieldErrors::default();
    let raw = text(&m, "addr", true, false, Some(50), &mut e);
    let location = text(&m, "location", false, true, Some(1000), &mut e).unwrap_or_default();
    let addr = match (&raw, e.is_empty()) {
        (Some(raw), true) => parse_addr("addr", raw)?,
        _ => return Err(ApiError::Invalid(e)),
    };
    let r = ask(&s, |reply| Command::Drop {
        addr,
        location,
        reply,
    })
    .await?;
    match r {
        Ok(d) => {
            durable(&s, d.receipt).await?;
            tracing::info!("CR_DROP IP={addr}");
            Ok(Json::of(&info_out(None, &d.value)).respond(StatusCode::OK))
        }
        Err(why) => Err(ApiError::Invalid(FieldErrors::one("non_field_errors", why))),
    }
}

/// `POST /api/v1/cr/unblock`.
async fn unblock(State(s): St, h: HeaderMap, b: Bytes) -> Result<Response> {
    authenticate(&s.api, &h)
        .await?
        .require(&[Perm::ChangeBlock])?;
    let m = object(body(&h, &b)?)?;
    let mut e = FieldErrors::default();
    let raw = text(&m, "addr", true, false, Some(50), &mut e);
    let reason = text(&m, "reason", false, true, Some(1000), &mut e).unwrap_or_default();
    let raw = match (raw, e.is_empty()) {
        (Some(raw), true) => raw,
        _ => return Err(ApiError::Invalid(e)),
    };
    let d = match parse_net(&raw) {
        Some(net) => ask(&s, |reply| Command::UnblockNet { net, reason, reply }).await?,
        None => {
            let addr = parse_addr("addr", &raw)?;
            ask(&s, |reply| Command::Unblock {
                addr,
                reason,
                reply,
            })
            .await?
        }
    };
    durable(&s, d.receipt).await?;
    let mut out = Map::new();
    out.insert("unblocked".into(), Value::Bool(d.value));
    Ok(Json::of(&out).respond(StatusCode::OK))
}

/// `GET /api/v1/cr/<addr>`.
async fn info(State(s): St, h: HeaderMap, Path(raw): Path<String>) -> Result<Response> {
    authenticate(&s.api, &h).await?.user()?;
    let addr = parse_addr("addr", &raw)?;
    let i = ask(&s, |reply| Command::Info { addr, reply }).await?;
    Ok(Json::of(&info_out(None, &i)).respond(StatusCode::OK))
}

/// `GET /api/v1/cr`.
async fn list(State(s): St, h: HeaderMap) -> Result<Response> {
    authenticate(&s.api, &h).await?.user()?;
    // Streamed from the watched set (which other threads may read) in address order: the
    // addresses are taken at once (16 bytes each), their state as each page is sent.
    let mut addrs = s.watched.addresses();
    addrs.sort_unstable();
    let watched = s.watched.clone();
    let mut at = 0usize;
    Ok(crate::api::bhr::stream::json_pages(Box::new(
        move |_after: Option<&usize>, p| {
            while at < addrs.len() && p.room() {
                let a = addrs[at];
                at += 1;
                p.looked(at);
                if let Some(i) = watched.get(&a) {
                    p.json(&info_out(Some(a), &i));
                }
            }
            // Then the networks (few: at most one per network of blocked addresses).
            if at == addrs.len() && p.room() {
                at += 1;
                p.looked(at);
                for (n, i) in watched.net_snapshot() {
                    p.json(&net_out(n, &i));
                }
            }
        },
    )))
}

/// A network (`a.b.c.d/len` shorter than a host route), for catch-and-release of
/// networks.
fn parse_net(raw: &str) -> Option<ipnet::IpNet> {
    let n: ipnet::IpNet = raw.trim().parse().ok()?;
    let n = crate::addr::canonical_net(n);
    (n.prefix_len() < n.max_prefix_len()).then(|| n.trunc())
}

/// One tracked network.
#[derive(Serialize)]
pub(crate) struct NetOut {
    subnet: String,
    #[serde(flatten)]
    info: InfoOut,
}

pub(crate) fn net_out(n: ipnet::IpNet, i: &BlockInfo) -> NetOut {
    NetOut {
        subnet: n.to_string(),
        info: info_out(None, i),
    }
}

/// `GET /api/v1/cr/networks`.
async fn networks(State(s): St, h: HeaderMap) -> Result<Response> {
    authenticate(&s.api, &h).await?.user()?;
    let all: Vec<NetOut> = s
        .watched
        .net_snapshot()
        .iter()
        .map(|(n, i)| net_out(*n, i))
        .collect();
    Ok(Json::of(&all).respond(StatusCode::OK))
}

/// `GET /metrics`: the process's registry.
async fn metrics(State(s): St) -> Response {
    s.metrics.response()
}

/// Makes `cr`'s registry read the daemon's counters (held weakly: the registry is part
/// of `cr`).
pub fn register_metrics(cr: &Arc<CrState>) {
    let weak = Arc::downgrade(cr);
    cr.metrics.add(move |m: &mut Metrics| {
        if let Some(s) = weak.upgrade() {
            collect(&s, m);
        }
    });
}

/// Every counter of `catchd run`.
fn collect(s: &CrState, m: &mut Metrics) {
    collect_captures(&s.sensors, m);
    s.workers.collect(m);
    m.gauge(
        "catchd_store_up",
        "whether the store's writer runs and accepts writes",
    )
    .value(f64::from(u8::from(s.api.store().is_up())));
    s.api.connections().collect(m);
    if let Some((node, st)) = &s.bus {
        crate::bus::collect_metrics(st, node, m);
    }
    s.scan.collect(m);
    m.gauge(
        "catchd_watchlist_items",
        "items on the watchlist or blacklist",
    )
    .value(count(s.watchlist.list.len() as u64));
    crate::manager::collect_metrics(&s.blockers, m);
    let c = &s.core;
    let mut f = m.counter(
        "catchd_cnr_actions_total",
        "catch-and-release log lines by action",
    );
    for (i, a) in Action::ALL.iter().enumerate() {
        let name = a.as_str().trim_start_matches("NetControl::");
        f.sample(
            &[("action", name)],
            count(c.actions[i].load(Ordering::Relaxed)),
        );
    }
    let v = |a: &std::sync::atomic::AtomicU64| count(a.load(Ordering::Relaxed));
    for (name, kind, help, n) in [
        (
            "catchd_cnr_watched",
            Kind::Gauge,
            "addresses catch-and-release tracks",
            v(&c.watched),
        ),
        (
            "catchd_cnr_rules",
            Kind::Gauge,
            "live NetControl drop rules",
            v(&c.rules),
        ),
        (
            "catchd_cnr_sightings_total",
            Kind::Counter,
            "sightings of watched addresses processed",
            v(&c.sightings),
        ),
        (
            "catchd_cnr_errors_total",
            Kind::Counter,
            "drops no backend took and other engine errors",
            v(&c.errors),
        ),
        (
            "catchd_log_write_errors_total",
            Kind::Counter,
            "failed log writes",
            v(&c.log_errors),
        ),
        (
            "catchd_log_rotations_total",
            Kind::Counter,
            "log rotations",
            v(&c.rotations),
        ),
    ] {
        m.of(kind, name, help).value(n);
    }
    let st = s.api.stats_snapshot();
    for (name, help, n) in [
        (
            "catchd_bhr_expected_blocks",
            "registry blocks that should be in place",
            st.expected,
        ),
        (
            "catchd_bhr_current_blocks",
            "registry blocks some block manager has in place",
            st.current,
        ),
        (
            "catchd_bhr_block_pending",
            "registry blocks no block manager has put in place yet",
            st.block_pending,
        ),
        (
            "catchd_bhr_unblock_pending",
            "ended blocks a block manager still has to remove",
            st.unblock_pending,
        ),
    ] {
        m.gauge(name, help).value(count(n));
    }
    let mut f = m.counter("catchd_http_answers_total", "HTTP answers by status class");
    for (i, n) in s.api.answers().iter().enumerate() {
        f.sample(&[("code", &format!("{}xx", i + 1))], count(*n));
    }
    uptime(s.started, m);
}

/// `catchd_uptime_seconds`.
pub fn uptime(started: std::time::Instant, m: &mut Metrics) {
    m.gauge("catchd_uptime_seconds", "seconds since start")
        .value(started.elapsed().as_secs_f64());
}

/// A metric family: name, type, help, and how to read it from a capture's counters.
type Series = (&'static str, Kind, &'static str, fn(&SensorStats) -> u64);

/// The capture threads' counters, per interface.
pub fn collect_captures(sensors: &[(String, Arc<SensorStats>)], m: &mut Metrics) {
    let series: [Series; 9] = [
        (
            "catchd_capture_packets_per_second",
            Kind::Gauge,
            "frames captured per second over the last second",
            |x| x.rate.load(Ordering::Relaxed),
        ),
        (
            "catchd_capture_packets_total",
            Kind::Counter,
            "frames captured",
            |x| x.packets.load(Ordering::Relaxed),
        ),
        (
            "catchd_capture_bytes_total",
            Kind::Counter,
            "bytes captured",
            |x| x.bytes.load(Ordering::Relaxed),
        ),
        (
            "catchd_capture_skipped_total",
            Kind::Counter,
            "frames without a readable IP header",
            |x| x.skipped.load(Ordering::Relaxed),
        ),
        (
            "catchd_capture_sightings_total",
            Kind::Counter,
            "sightings of watched addresses sent to the engine",
            |x| x.sightings.load(Ordering::Relaxed),
        ),
        (
            "catchd_capture_channel_drops_total",
            Kind::Counter,
            "sightings lost because the engine was behind",
            |x| x.channel_drops.load(Ordering::Relaxed),
        ),
        (
            "catchd_capture_kernel_received_total",
            Kind::Counter,
            "packets the kernel passed to the capture (libpcap)",
            |x| x.kernel_received.load(Ordering::Relaxed),
        ),
        (
            "catchd_capture_kernel_drops_total",
            Kind::Counter,
            "packets dropped for lack of capture buffer (libpcap)",
            |x| x.kernel_dropped.load(Ordering::Relaxed),
        ),
        (
            "catchd_capture_interface_drops_total",
            Kind::Counter,
            "packets dropped by the interface (libpcap)",
            |x| x.if_dropped.load(Ordering::Relaxed),
        ),
    ];
    for (name, kind, help, get) in series {
        let mut f = m.of(kind, name, help);
        for (iface, st) in sensors {
            f.sample(&[("interface", iface)], count(get(st)));
        }
    }
    let mut f = m.gauge("catchd_capture_up", "whether the capture runs");
    for (iface, st) in sensors {
        let up = !st.failed.load(Ordering::Relaxed);
        f.sample(&[("interface", iface)], f64::from(u8::from(up)));
    }
    let mut f = m.counter(
        "catchd_capture_restarts_total",
        "times a failed capture was opened again",
    );
    for (iface, st) in sensors {
        f.sample(
            &[("interface", iface)],
            count(st.restarts.load(Ordering::Relaxed)),
        );
    }
}
