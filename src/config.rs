//! The configuration file (TOML): what it may contain, its defaults, and its checks.
//!
//! Every table refuses keys it does not know, and every error names the key
//! (`bhr.minimum_prefixlen: must be at most 32`), so a typo never silently falls back to a
//! default. Command-line flags override the file; the file overrides the built-in defaults.
//!
//! ```toml
//! [server]
//! listen = "127.0.0.1:8000"
//! db = "catchd-data/catchd.db"  # or postgres://user:pass@host/db (also top-level `store`)
//! cluster = false             # several nodes share the PostgreSQL database
//! lease_ttl = "15s"           # catch-and-release's lease (clustered catchd run)
//! max_body = 4194304          # bytes
//! request_timeout = "90s"
//! max_long_poll = "60s"
//! max_concurrent = 1024
//! max_long_polls_per_user = 16  # more answer at once with what is queued
//! header_timeout = "10s"      # a request head must arrive whole within this
//! idle_timeout = "60s"        # idle keep-alive connections are closed after this
//! write_timeout = "30s"       # a client that reads nothing for this long is cut off
//! max_connections = 1024      # open at once (never more than half the fd limit)
//! shutdown_grace = "5s"       # SIGTERM: requests in flight get this long
//! sign_in_failures = 10       # wrong passwords per address (IPv6: per /64) …
//! sign_in_failures_per_user = 20  # … and per user name, before 429s …
//! sign_in_window = "5m"       # … forgiven over this time
//!
//! [capture]
//! interfaces = ["eth1"]       # none: no capture (the API and timers still run)
//! snaplen = 256
//! promisc = true
//! buffer_size = 67108864      # bytes of kernel buffer per interface
//! filter = ""                 # BPF, tcpdump syntax
//! sightings = "connections"   # Zeek's connection events; "connections-bare" (zeek -b),
//!                             # "starts" (connection-starting packets) or "any" (every packet)
//! queue = 65536               # sightings waiting for the engine; more are dropped
//!
//! [cnr]
//! intervals = "10m,1h,24h,7d"
//! sweep_interval = "10s"
//! warn_blocked = false
//! source = "catch-and-release"   # source of the registry blocks it makes
//! why = "catch-and-release"      # their why when a drop gives no location
//! block_managers = []            # idents whose set_blocked confirms a drop
//! hand_over_sources = []         # BHR requests for single addresses from these sources
//!                                # are handed to catch-and-release
//!
//! [logs]
//! dir = "catchd-data/logs"
//! json = false
//! rotate_interval = "0s"      # 0: never (SIGHUP always rotates)
//! rotate_size = 0             # bytes; 0: never
//!
//! [daemon]
//! user = ""                   # run as this user once the captures are open
//!
//! [bus]                       # the ZeroMQ event bus (Zeek's cluster wire format)
//! enabled = false
//! xpub = "tcp://127.0.0.1:5555"  # the proxy's XPUB (this node's XSUB connects)
//! xsub = "tcp://127.0.0.1:5556"  # the proxy's XSUB (this node's XPUB connects)
//! proxy = false               # host the proxy here (bind xpub and xsub)
//! role = "manager"            # or "sensor": capture only, report sightings
//! node_id = ""                # default catchd_<role>_<host>_<pid>
//! format = "broker-bin-v1"    # or "broker-json-v1" (every node must agree)
//! netcontrol = true           # answer NetControl's broker-plugin events (manager)
//! netcontrol_topic = "catchd.netcontrol"
//! netcontrol_source = "zeek"  # source of the blocks NetControl rules become
//! notify_interval = "30s"     # a sensor reports an address at most this often
//! queue = 65536               # events waiting to be sent or handled
//!
//! [scan]                      # log scanning inside `catchd run`
//! files = ["/var/log/auth.log"]
//! rules = ""                  # a rule file instead of the bundled rules
//! jails = []                  # only these jails (default: all)
//! poll_interval = "250ms"
//! max_addresses = 100000      # per jail; the oldest are evicted past it
//! from_start = false          # read files seen for the first time from their start
//!
//! [watchlist]                 # BlackRed-style watchlist → blacklist API
//! threshold = 3
//! watch_ttl = "180s"
//! block_ttl = "24h"
//! refresh_on_hit = true
//! anonymize = false           # store HMAC-SHA256 keys, not items
//! key_file = ""               # the HMAC key (needed to anonymize; made if missing)
//! block_addresses = false     # blacklisted IP addresses also become registry blocks
//!
//! [[blocker]]                 # repeatable: block managers run inside `catchd run`
//! ident = "fw"                # its queues are queue/fw and unblock_queue/fw
//! backend = "nftables"        # nftables, iptables, ipset, route, hosts-allow, exec, stdout
//! dry_run = false
//! poll_timeout = "32s"
//! unblock_interval = "30s"
//! reconcile_interval = "5m"   # 0s: only at start
//! command_timeout = "10s"
//! nft_table = "catchd"        # nftables
//! chain = "CATCHD"            # iptables, ipset
//! hooks = ["INPUT", "FORWARD"]
//! iptables = "iptables"
//! ip6tables = "ip6tables"
//! ipset_name = "catchd"       # sets catchd4 and catchd6
//! route_proto = 99            # route: marks catchd's blackhole routes
//! hosts_allow = "/etc/hosts.allow"
//! exec_block = ["/usr/local/bin/block", "{cidr}", "{duration}", "{why}"]
//! exec_unblock = ["/usr/local/bin/unblock", "{cidr}"]
//!
//! [bhr]
//! time_window_factor = 2.0
//! minimum_time_window = 43200  # seconds, or a duration such as "12h"
//! penalty_time_multiplier = 2.0
//! return_to_base_multiplier = 2.0
//! return_to_base_factor = 2.0
//! minimum_prefixlen = 23
//! minimum_prefixlen_v6 = 64
//! local_networks = ["10.0.0.0/8"]
//! unauthenticated_limited_query = false
//! # No block may overlap these, skip_whitelist or not (and /0 never may). The default:
//! never_block = ["127.0.0.0/8", "::1/128", "169.254.0.0/16", "fe80::/10", "224.0.0.0/4",
//!                "ff00::/8", "0.0.0.0/32", "::/128", "255.255.255.255/32"]
//! never_block_host = true        # nor hold an address of this host (at start)
//! skip_whitelist_roles = ["admin"]  # who may set skip_whitelist
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::api::bhr::Limits;
use crate::bhr::model::Settings;
use crate::cnr::Intervals;
use crate::time::Interval;

/// Where the database lives unless told otherwise.
pub const DEFAULT_DB: &str = "catchd-data/catchd.db";

/// Where the API listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8000";

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML, has an unknown key, or a value of the wrong type.
    #[error("{path}: {msg}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, which names the key, line and column.
        msg: String,
    },
    /// A value of the right type that is out of range.
    #[error("{path}: {key}: {msg}")]
    Invalid {
        /// The file (or `<defaults>`).
        path: PathBuf,
        /// The dotted key.
        key: String,
        /// What is wrong.
        msg: String,
    },
    /// Several values are wrong: each with its key, on one line.
    #[error("{path}: {}", .problems.iter().map(|(k, m)| format!("{k}: {m}")).collect::<Vec<_>>().join("; "))]
    Several {
        /// The file.
        path: PathBuf,
        /// The dotted keys and what is wrong with each, in the file's section order.
        problems: Vec<(String, String)>,
    },
}

/// What is wrong with one key (the file is named once, at the end).
#[derive(Debug)]
struct Bad {
    key: String,
    msg: String,
}

/// A positive duration (`1s`, `250ms`, `2h` …).
fn duration(key: &str, text: &str) -> Result<Duration, Bad> {
    let i: Interval = text.parse().map_err(|e| bad(key, format!("{e}")))?;
    let us = i.as_micros();
    if us <= 0 {
        return Err(bad(key, "must be positive".into()));
    }
    Ok(Duration::from_micros(us.unsigned_abs()))
}

fn bad(key: &str, msg: String) -> Bad {
    Bad {
        key: key.to_string(),
        msg,
    }
}

/// The problems found so far: every check runs, so one pass reports them all.
#[derive(Debug, Default)]
struct Checks(Vec<Bad>);

impl Checks {
    /// Runs one check; a problem is kept and the next check runs.
    fn run(&mut self, check: impl FnOnce() -> Result<(), Bad>) {
        if let Err(b) = check() {
            self.0.push(b);
        }
    }

    /// Every problem, or none.
    fn finish(self, path: &Path) -> Result<(), Error> {
        let mut all = self.0;
        match all.len() {
            0 => Ok(()),
            1 => {
                let b = all.remove(0);
                Err(Error::Invalid {
                    path: path.to_path_buf(),
                    key: b.key,
                    msg: b.msg,
                })
            }
            _ => Err(Error::Several {
                path: path.to_path_buf(),
                problems: all.into_iter().map(|b| (b.key, b.msg)).collect(),
            }),
        }
    }
}

/// The whole configuration, checked.
#[derive(Clone, Debug)]
pub struct Config {
    /// The HTTP server.
    pub server: Server,
    /// BHR's settings.
    pub bhr: Settings,
    /// Live capture.
    pub capture: Capture,
    /// Catch-and-release.
    pub cnr: Cnr,
    /// The Zeek logs.
    pub logs: Logs,
    /// The process.
    pub daemon: Daemon,
    /// Block managers run inside `catchd run` (`[[blocker]]`).
    pub blockers: Vec<Blocker>,
    /// The ZeroMQ event bus (Zeek's cluster wire format).
    pub bus: Bus,
    /// Log scanning inside `catchd run`.
    pub scan: Scan,
    /// The watchlist → blacklist API.
    pub watchlist: crate::watchlist::Settings,
    /// The file it was read from, if any (SIGHUP re-reads it).
    pub path: Option<PathBuf>,
}

/// Log scanning inside `catchd run` (`[scan]`).
#[derive(Clone, Debug)]
pub struct Scan {
    /// Files to follow (none: no scanning).
    pub files: Vec<PathBuf>,
    /// The rule file read instead of the bundled rules.
    pub rules_file: Option<PathBuf>,
    /// Only these jails.
    pub jails: Vec<String>,
    /// The rules in force: the file's (or the bundled ones), narrowed to `jails`.
    pub rules: crate::scan::rules::Rules,
    /// How often the files are looked at.
    pub poll_interval: Duration,
    /// Addresses tracked per jail.
    pub max_addresses: usize,
    /// Files seen for the first time are read from their start (default: from their
    /// end, as `tail -F`).
    pub from_start: bool,
}

impl Default for Scan {
    fn default() -> Scan {
        Scan {
            files: Vec::new(),
            rules_file: None,
            jails: Vec::new(),
            rules: crate::scan::rules::Rules::bundled(),
            poll_interval: Duration::from_millis(250),
            max_addresses: crate::scan::MAX_ADDRESSES,
            from_start: false,
        }
    }
}

/// What a `catchd run` is in a multi-node deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterRole {
    /// Holds the catch-and-release state (the default).
    Manager,
    /// Captures only; reports sightings to the manager, keeps a replica of the watched set.
    Sensor,
}

impl std::str::FromStr for ClusterRole {
    type Err = String;
    fn from_str(s: &str) -> Result<ClusterRole, String> {
        match s {
            "manager" => Ok(ClusterRole::Manager),
            "sensor" => Ok(ClusterRole::Sensor),
            _ => Err(format!("must be `manager` or `sensor`, not `{s}`")),
        }
    }
}

/// The event bus settings (`[bus]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bus {
    /// Join a proxy.
    pub enabled: bool,
    /// The proxy's XPUB (this node's XSUB connects to it).
    pub xpub: String,
    /// The proxy's XSUB (this node's XPUB connects to it).
    pub xsub: String,
    /// Host the proxy in this process (bind `xpub` and `xsub`).
    pub proxy: bool,
    /// Manager or sensor.
    pub role: ClusterRole,
    /// This node's id (`None`: `catchd_<role>_<host>_<pid>`).
    pub node_id: Option<String>,
    /// Send `broker-json-v1` instead of `broker-bin-v1`.
    pub json: bool,
    /// Answer NetControl's broker-plugin contract (manager).
    pub netcontrol: bool,
    /// The topic of that contract.
    pub netcontrol_topic: String,
    /// `source` of the registry blocks NetControl rules become.
    pub netcontrol_source: String,
    /// A sensor reports a watched address at most this often (Zeek: 30 s).
    pub notify_interval: Duration,
    /// Capacity of the outgoing and incoming queues.
    pub queue: usize,
    /// CURVE keys (none: the bus is not encrypted).
    pub curve: crate::bus::curve::Keys,
    /// Whether those came from Zeek's environment variables rather than `[bus]`.
    pub curve_from_env: bool,
    /// Join through Zeek's WebSocket API instead of a ZeroMQ proxy.
    pub websocket: Option<crate::bus::websocket::Target>,
}

impl Default for Bus {
    fn default() -> Bus {
        Bus {
            enabled: false,
            xpub: crate::bus::DEFAULT_XPUB.into(),
            xsub: crate::bus::DEFAULT_XSUB.into(),
            proxy: false,
            role: ClusterRole::Manager,
            node_id: None,
            json: false,
            netcontrol: true,
            netcontrol_topic: crate::broker::zeek::NETCONTROL_TOPIC.into(),
            netcontrol_source: "zeek".into(),
            notify_interval: Duration::from_secs(30),
            queue: 65_536,
            curve: crate::bus::curve::Keys::default(),
            curve_from_env: false,
            websocket: None,
        }
    }
}

/// A block manager inside `catchd run`: an ident's queues applied with a backend, with no
/// HTTP hop.
#[derive(Clone, Debug)]
pub struct Blocker {
    /// The ident (its queues are `queue/<ident>` and `unblock_queue/<ident>`).
    pub ident: String,
    /// The backend.
    pub kind: crate::enforce::Kind,
    /// The backend's options.
    pub options: crate::enforce::Options,
    /// Print what would run; change nothing.
    pub dry_run: bool,
    /// Timings.
    pub settings: crate::manager::Settings,
}

/// Live capture settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capture {
    /// Interfaces to capture on.
    pub interfaces: Vec<String>,
    /// Bytes kept per packet.
    pub snaplen: i32,
    /// Promiscuous mode.
    pub promisc: bool,
    /// Kernel buffer per interface, bytes.
    pub buffer_size: i32,
    /// BPF filter.
    pub filter: Option<String>,
    /// Which packets count as sightings (`sightings`; `any_packet = true`, the older key,
    /// is `"any"`).
    pub sightings: crate::packet::Sightings,
    /// Capacity of the sighting channel.
    pub queue: usize,
}

/// Catch-and-release settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cnr {
    /// The escalation ladder.
    pub intervals: Intervals,
    /// Period of the forget sweep.
    pub sweep_interval: Interval,
    /// Log sightings of still-blocked addresses.
    pub warn_blocked: bool,
    /// `source` of the registry blocks catch-and-release makes.
    pub source: String,
    /// `why` of those blocks when the drop gives no location.
    pub why: String,
    /// Block-manager idents whose `set_blocked` confirms a drop (NetControl plugins).
    pub block_managers: Vec<String>,
    /// BHR block requests of single addresses from these sources go to catch-and-release.
    pub hand_over_sources: Vec<String>,
    /// Catch-and-release of networks (`[cnr.networks]`); `None`: off.
    pub networks: Option<crate::cnr::Networks>,
}

/// Log settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Logs {
    /// Where the three NetControl logs go.
    pub dir: PathBuf,
    /// Zeek's JSON format instead of TSV.
    pub json: bool,
    /// Rotate this often (`None`: only on SIGHUP or size).
    pub rotate_interval: Option<Duration>,
    /// Rotate when a file reaches this many bytes (`None`: never).
    pub rotate_size: Option<u64>,
}

/// Process settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Daemon {
    /// Switch to this user once the captures are open.
    pub user: Option<String>,
}

/// Where the logs go unless told otherwise.
pub const DEFAULT_LOG_DIR: &str = "catchd-data/logs";

impl Default for Capture {
    fn default() -> Capture {
        Capture {
            interfaces: Vec::new(),
            snaplen: 256,
            promisc: true,
            buffer_size: 64 << 20,
            filter: None,
            sightings: crate::packet::Sightings::Connections,
            queue: 65_536,
        }
    }
}

impl Default for Cnr {
    fn default() -> Cnr {
        Cnr {
            intervals: Intervals::default(),
            sweep_interval: crate::cnr::DEFAULT_SWEEP_INTERVAL,
            warn_blocked: false,
            source: "catch-and-release".into(),
            why: "catch-and-release".into(),
            block_managers: Vec::new(),
            hand_over_sources: Vec::new(),
            networks: None,
        }
    }
}

impl Default for Logs {
    fn default() -> Logs {
        Logs {
            dir: PathBuf::from(DEFAULT_LOG_DIR),
            json: false,
            rotate_interval: None,
            rotate_size: None,
        }
    }
}

/// The HTTP server's settings.
#[derive(Clone, Debug)]
pub struct Server {
    /// Listening address.
    pub listen: SocketAddr,
    /// The database: a SQLite file or a `postgres://` URL.
    pub db: crate::store::Database,
    /// Share the PostgreSQL database with other nodes.
    pub cluster: bool,
    /// How long catch-and-release's lease lasts without renewal (a standby `catchd run`
    /// takes over this long after the owner died).
    pub lease_ttl: Duration,
    /// Body size, time and concurrency limits.
    pub limits: Limits,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            server: Server {
                listen: DEFAULT_LISTEN.parse().expect("valid address"),
                db: crate::store::Database::Sqlite(PathBuf::from(DEFAULT_DB)),
                cluster: false,
                lease_ttl: Duration::from_secs(15),
                limits: Limits::default(),
            },
            bhr: Settings::default(),
            capture: Capture::default(),
            cnr: Cnr::default(),
            logs: Logs::default(),
            daemon: Daemon { user: None },
            blockers: Vec::new(),
            bus: Bus::default(),
            scan: Scan::default(),
            watchlist: crate::watchlist::Settings::default(),
            path: None,
        }
    }
}

// ----- the file as written -----

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    /// The database: a SQLite path or a `postgres://` URL (same as `server.db`).
    store: Option<String>,
    #[serde(default)]
    server: ServerFile,
    #[serde(default)]
    bhr: BhrFile,
    #[serde(default)]
    capture: CaptureFile,
    #[serde(default)]
    cnr: CnrFile,
    #[serde(default)]
    logs: LogsFile,
    #[serde(default)]
    daemon: DaemonFile,
    #[serde(default)]
    blocker: Vec<BlockerFile>,
    #[serde(default)]
    bus: BusFile,
    #[serde(default)]
    scan: ScanFile,
    #[serde(default)]
    watchlist: WatchlistFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScanFile {
    files: Option<Vec<PathBuf>>,
    rules: Option<PathBuf>,
    jails: Option<Vec<String>>,
    poll_interval: Option<String>,
    max_addresses: Option<i64>,
    from_start: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WatchlistFile {
    threshold: Option<i64>,
    watch_ttl: Option<String>,
    block_ttl: Option<String>,
    refresh_on_hit: Option<bool>,
    anonymize: Option<bool>,
    key_file: Option<PathBuf>,
    block_addresses: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BusFile {
    enabled: Option<bool>,
    xpub: Option<String>,
    xsub: Option<String>,
    proxy: Option<bool>,
    role: Option<ClusterRole>,
    node_id: Option<String>,
    format: Option<String>,
    netcontrol: Option<bool>,
    netcontrol_topic: Option<String>,
    netcontrol_source: Option<String>,
    notify_interval: Option<String>,
    queue: Option<i64>,
    curve_server_publickey: Option<String>,
    curve_server_secretkey: Option<String>,
    curve_client_publickey: Option<String>,
    curve_client_secretkey: Option<String>,
    websocket: Option<String>,
    websocket_ca_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BlockerFile {
    ident: String,
    backend: crate::enforce::Kind,
    dry_run: Option<bool>,
    poll_timeout: Option<String>,
    unblock_interval: Option<String>,
    reconcile_interval: Option<String>,
    nft_table: Option<String>,
    chain: Option<String>,
    hooks: Option<Vec<String>>,
    iptables: Option<String>,
    ip6tables: Option<String>,
    ipset_name: Option<String>,
    route_proto: Option<u8>,
    hosts_allow: Option<String>,
    exec_block: Option<Vec<String>>,
    exec_unblock: Option<Vec<String>>,
    command_timeout: Option<String>,
    next_hop: Option<String>,
    next_hop6: Option<String>,
    communities: Option<Vec<String>>,
    batch: Option<i64>,
    exabgp_socket: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaptureFile {
    interfaces: Option<Vec<String>>,
    snaplen: Option<i64>,
    promisc: Option<bool>,
    buffer_size: Option<i64>,
    filter: Option<String>,
    any_packet: Option<bool>,
    sightings: Option<String>,
    queue: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CnrFile {
    intervals: Option<StringOrList>,
    sweep_interval: Option<String>,
    warn_blocked: Option<bool>,
    source: Option<String>,
    why: Option<String>,
    block_managers: Option<Vec<String>>,
    hand_over_sources: Option<Vec<String>>,
    networks: Option<NetworksFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworksFile {
    enabled: Option<bool>,
    prefix4: Option<i64>,
    prefix6: Option<i64>,
    threshold: Option<i64>,
    window: Option<String>,
    intervals: Option<StringOrList>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogsFile {
    dir: Option<PathBuf>,
    json: Option<bool>,
    rotate_interval: Option<String>,
    rotate_size: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DaemonFile {
    user: Option<String>,
}

/// `"10m,1h"` or `["10m", "1h"]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StringOrList {
    Text(String),
    List(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerFile {
    listen: Option<String>,
    db: Option<PathBuf>,
    cluster: Option<bool>,
    lease_ttl: Option<String>,
    max_body: Option<u64>,
    request_timeout: Option<String>,
    max_long_poll: Option<String>,
    max_concurrent: Option<u64>,
    max_long_polls_per_user: Option<u64>,
    header_timeout: Option<String>,
    idle_timeout: Option<String>,
    write_timeout: Option<String>,
    max_connections: Option<u64>,
    shutdown_grace: Option<String>,
    sign_in_failures: Option<u64>,
    sign_in_failures_per_user: Option<u64>,
    sign_in_window: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BhrFile {
    time_window_factor: Option<f64>,
    minimum_time_window: Option<Seconds>,
    penalty_time_multiplier: Option<f64>,
    return_to_base_multiplier: Option<f64>,
    return_to_base_factor: Option<f64>,
    minimum_prefixlen: Option<i64>,
    minimum_prefixlen_v6: Option<i64>,
    local_networks: Option<Vec<String>>,
    unauthenticated_limited_query: Option<bool>,
    never_block: Option<Vec<String>>,
    never_block_host: Option<bool>,
    skip_whitelist_roles: Option<Vec<String>>,
}

/// Seconds as a number, or a duration string.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Seconds {
    Int(i64),
    Float(f64),
    Text(String),
}

impl Config {
    /// Reads and checks a configuration file.
    ///
    /// # Errors
    /// [`Error`], naming the key at fault.
    pub fn load(path: &Path) -> Result<Config, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut c = Config::parse(&text, path)?;
        c.path = Some(path.to_path_buf());
        Ok(c)
    }

    /// Parses and checks configuration text (`path` is only for messages).
    ///
    /// # Errors
    /// [`Error`], naming the key at fault.
    pub fn parse(text: &str, path: &Path) -> Result<Config, Error> {
        let file: File = toml::from_str(text).map_err(|e| Error::Parse {
            path: path.to_path_buf(),
            msg: describe(text, &e),
        })?;
        let mut c = Config::default();
        let mut ck = Checks::default();
        server(file.server, file.store, &mut c, &mut ck);
        bhr(file.bhr, &mut c, &mut ck);
        capture(file.capture, &mut c, &mut ck);
        cnr(file.cnr, &mut c, &mut ck);
        logs(file.logs, &mut c, &mut ck);
        daemon(file.daemon, &mut c, &mut ck);
        scan(file.scan, &mut c, &mut ck);
        watchlist(file.watchlist, &mut c, &mut ck);
        bus(file.bus, &mut c, &mut ck);
        blockers(file.blocker, &mut c, &mut ck);
        across(&c, &mut ck);
        ck.finish(path)?;
        Ok(c)
    }
}

// ----- the checks, one function per section -----

/// `[server]` and the top-level `store`.
fn server(s: ServerFile, store: Option<String>, c: &mut Config, ck: &mut Checks) {
    limits(&s, c, ck);
    ck.run(|| {
        if let Some(l) = s.listen {
            c.server.listen = l.parse().map_err(|_| {
                bad(
                    "server.listen",
                    format!("`{l}` is not an address and port such as 127.0.0.1:8000"),
                )
            })?;
        }
        Ok(())
    });
    ck.run(|| {
        if let Some(db) = s.db {
            if db.as_os_str().is_empty() {
                return Err(bad("server.db", "must not be empty".into()));
            }
            c.server.db = crate::store::Database::from(db);
        }
        Ok(())
    });
    ck.run(|| {
        if let Some(v) = s.cluster {
            c.server.cluster = v;
        }
        Ok(())
    });
    ck.run(|| {
        if let Some(t) = s.lease_ttl {
            let d = humantime::parse_duration(t.trim())
                .map_err(|e| bad("server.lease_ttl", format!("`{t}`: {e}")))?;
            if d < Duration::from_secs(1) {
                return Err(bad("server.lease_ttl", "must be at least 1s".into()));
            }
            c.server.lease_ttl = d;
        }
        Ok(())
    });
    ck.run(|| {
        if let Some(store) = store {
            if store.is_empty() {
                return Err(bad("store", "must not be empty".into()));
            }
            if store.contains("://") && !crate::store::is_postgres(Path::new(&store)) {
                return Err(bad(
                    "store",
                    format!(
                        "`{}` is neither a file nor a postgres:// URL",
                        crate::store::redact(&store)
                    ),
                ));
            }
            c.server.db = crate::store::Database::from(PathBuf::from(store));
        }
        Ok(())
    });
}

/// `[server]`: the HTTP limits.
fn limits(s: &ServerFile, c: &mut Config, ck: &mut Checks) {
    let l = &mut c.server.limits;
    ck.run(|| {
        if let Some(n) = s.max_body {
            if n < 1024 {
                return Err(bad("server.max_body", "must be at least 1024 bytes".into()));
            }
            l.max_body = usize::try_from(n).unwrap_or(usize::MAX);
        }
        Ok(())
    });
    ck.run(|| {
        if let Some(t) = s.request_timeout.clone() {
            l.request_timeout = duration("server.request_timeout", &t)?;
        }
        Ok(())
    });
    ck.run(|| {
        if let Some(t) = s.max_long_poll.clone() {
            l.max_long_poll = duration("server.max_long_poll", &t)?;
        }
        Ok(())
    });
    ck.run(|| {
        if l.max_long_poll >= l.request_timeout {
            return Err(bad(
                "server.max_long_poll",
                format!(
                    "must be shorter than server.request_timeout ({})",
                    humantime::format_duration(l.request_timeout)
                ),
            ));
        }
        Ok(())
    });
    ck.run(|| {
        if let Some(n) = s.max_concurrent {
            if n == 0 {
                return Err(bad("server.max_concurrent", "must be at least 1".into()));
            }
            l.max_concurrent = usize::try_from(n).unwrap_or(usize::MAX);
        }
        Ok(())
    });
    ck.run(|| {
        if let Some(n) = s.max_long_polls_per_user {
            l.max_long_polls_per_user = usize::try_from(n).unwrap_or(usize::MAX);
        }
        Ok(())
    });
    let conn = &mut l.connections;
    ck.run(|| {
        if let Some(t) = s.header_timeout.clone() {
            conn.header_timeout = duration("server.header_timeout", &t)?;
        }
        Ok(())
    });
    ck.run(|| {
        if let Some(t) = s.idle_timeout.clone() {
            conn.idle_timeout = duration("server.idle_timeout", &t)?;
        }
        Ok(())
    });
    ck.run(|| {
        if let Some(t) = s.write_timeout.clone() {
            conn.write_timeout = duration("server.write_timeout", &t)?;
        }
        Ok(())
    });
    ck.run(|| {
        if let Some(n) = s.max_connections {
            if n < 16 {
                return Err(bad("server.max_connections", "must be at least 16".into()));
            }
            conn.max_connections = usize::try_from(n).unwrap_or(usize::MAX);
        }
        Ok(())
    });
    ck.run(|| {
        if let Some(t) = s.shutdown_grace.clone() {
            let d = humantime::parse_duration(t.trim())
                .map_err(|e| bad("server.shutdown_grace", format!("`{t}`: {e}")))?;
            conn.shutdown_grace = d;
        }
        Ok(())
    });
    let th = &mut l.sign_in;
    ck.run(|| {
        if let Some(n) = s.sign_in_failures {
            if n == 0 {
                return Err(bad("server.sign_in_failures", "must be at least 1".into()));
            }
            th.per_address = u32::try_from(n).unwrap_or(u32::MAX);
        }
        Ok(())
    });
    ck.run(|| {
        if let Some(n) = s.sign_in_failures_per_user {
            if n == 0 {
                return Err(bad(
                    "server.sign_in_failures_per_user",
                    "must be at least 1".into(),
                ));
            }
            th.per_user = u32::try_from(n).unwrap_or(u32::MAX);
        }
        Ok(())
    });
    ck.run(|| {
        if let Some(t) = s.sign_in_window.clone() {
            th.window = duration("server.sign_in_window", &t)?;
        }
        Ok(())
    });
}

/// A finite number above zero.
fn positive(key: &str, v: f64) -> Result<f64, Bad> {
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(bad(key, format!("must be a positive number, not {v}")))
    }
}

/// A prefix length from 0 to `max`.
fn prefix(key: &str, v: i64, max: i64) -> Result<u8, Bad> {
    if (0..=max).contains(&v) {
        Ok(u8::try_from(v).expect("in range"))
    } else {
        Err(bad(key, format!("must be between 0 and {max}, not {v}")))
    }
}

/// Networks (an address is its host network), without host bits set.
fn networks(key: &str, nets: &[String]) -> Result<Vec<IpNet>, Bad> {
    let mut out = Vec::with_capacity(nets.len());
    for (i, n) in nets.iter().enumerate() {
        let net: IpNet = n
            .parse()
            .or_else(|_| n.parse::<std::net::IpAddr>().map(IpNet::from))
            .map_err(|_| {
                bad(
                    &format!("{key}[{i}]"),
                    format!("`{n}` is not a network such as 10.0.0.0/8"),
                )
            })?;
        if net.trunc() != net {
            return Err(bad(
                &format!("{key}[{i}]"),
                format!("`{n}` has host bits set (did you mean {}?)", net.trunc()),
            ));
        }
        out.push(crate::addr::canonical_net(net));
    }
    Ok(out)
}

/// `[bhr]`: BHR's settings.
fn bhr(b: BhrFile, c: &mut Config, ck: &mut Checks) {
    let st = &mut c.bhr;
    ck.run(|| {
        if let Some(v) = b.time_window_factor {
            st.time_window_factor = positive("bhr.time_window_factor", v)?;
        }
        Ok(())
    });
    ck.run(|| {
        if let Some(v) = b.penalty_time_multiplier {
            st.penalty_time_multiplier = positive("bhr.penalty_time_multiplier", v)?;
        }
        Ok(())
    });
    ck.run(|| {
        if let Some(v) = b.return_to_base_multiplier {
            st.return_to_base_multiplier = positive("bhr.return_to_base_multiplier", v)?;
        }
        Ok(())
    });
    ck.run(|| {
        if let Some(v) = b.return_to_base_factor {
            st.return_to_base_factor = positive("bhr.return_to_base_factor", v)?;
        }
        Ok(())
    });
    ck.run(|| {
        if let Some(w) = b.minimum_time_window {
            let key = "bhr.minimum_time_window";
            let secs = match w {
                #[allow(clippy::cast_precision_loss)]
                Seconds::Int(n) => n as f64,
                Seconds::Float(f) => f,
                Seconds::Text(t) => crate::bhr::duration::parse(&t)
                    .map(|n| n as f64)
                    .ok_or_else(|| {
                        bad(
                            key,
                            format!("`{t}` is not a duration (seconds, or such as 12h, 1d)"),
                        )
                    })?,
            };
            if !secs.is_finite() || secs < 0.0 {
                return Err(bad(
                    key,
                    format!("must be zero or more seconds, not {secs}"),
                ));
            }
            st.minimum_time_window = secs;
        }
        Ok(())
    });
    ck.run(|| {
        if let Some(v) = b.minimum_prefixlen {
            st.minimum_prefixlen = prefix("bhr.minimum_prefixlen", v, 32)?;
        }
        Ok(())
    });
    ck.run(|| {
        if let Some(v) = b.minimum_prefixlen_v6 {
            st.minimum_prefixlen_v6 = prefix("bhr.minimum_prefixlen_v6", v, 128)?;
        }
        Ok(())
    });
    ck.run(|| {
        if let Some(nets) = b.local_networks {
            st.local_networks = networks("bhr.local_networks", &nets)?;
        }
        Ok(())
    });
    ck.run(|| {
        if let Some(v) = b.unauthenticated_limited_query {
            st.unauthenticated_limited_query = v;
        }
        Ok(())
    });
    ck.run(|| {
        if let Some(nets) = b.never_block {
            st.never_block = networks("bhr.never_block", &nets)?;
        }
        Ok(())
    });
    ck.run(|| {
        if let Some(v) = b.never_block_host {
            st.never_block_host = v;
        }
        Ok(())
    });
    ck.run(|| {
        if let Some(roles) = b.skip_whitelist_roles {
            let mut out = Vec::with_capacity(roles.len());
            for (i, r) in roles.iter().enumerate() {
                out.push(
                    r.parse::<crate::auth::Role>().map_err(|e| {
                        bad(&format!("bhr.skip_whitelist_roles[{i}]"), e.to_string())
                    })?,
                );
            }
            st.skip_whitelist_roles = out;
        }
        Ok(())
    });
}

/// `[capture]`.
fn capture(cap: CaptureFile, c: &mut Config, ck: &mut Checks) {
    let cc = &mut c.capture;
    ck.run(|| {
        if let Some(ifs) = cap.interfaces {
            for (i, name) in ifs.iter().enumerate() {
                if let Err(msg) = check_interface_name(name) {
                    return Err(bad(&format!("capture.interfaces[{i}]"), msg));
                }
            }
            cc.interfaces = ifs;
        }
        Ok(())
    });
    ck.run(|| {
        if let Some(v) = cap.snaplen {
            if !(64..=65_535).contains(&v) {
                return Err(bad(
                    "capture.snaplen",
                    format!("must be between 64 and 65535, not {v}"),
                ));
            }
            cc.snaplen = i32::try_from(v).expect("in range");
        }
        Ok(())
    });
    ck.run(|| {
        if let Some(v) = cap.promisc {
            cc.promisc = v;
        }
        Ok(())
    });
    ck.run(|| {
        if let Some(v) = cap.buffer_size {
            if !(65_536..=(1 << 30)).contains(&v) {
                return Err(bad(
                    "capture.buffer_size",
                    format!("must be between 65536 and 1073741824 bytes, not {v}"),
                ));
            }
            cc.buffer_size = i32::try_from(v).expect("in range");
        }
        Ok(())
    });
    ck.run(|| {
        if let Some(f) = cap.filter {
            cc.filter = (!f.trim().is_empty()).then_some(f);
        }
        Ok(())
    });
    ck.run(|| {
        use crate::packet::Sightings;
        match (&cap.sightings, cap.any_packet) {
            (Some(_), Some(_)) => {
                return Err(bad(
                    "capture.any_packet",
                    "give `sightings` or the older `any_packet`, not both".to_string(),
                ));
            }
            (Some(name), None) => {
                cc.sightings = Sightings::from_name(name).ok_or_else(|| {
                    bad(
                        "capture.sightings",
                        format!(
                            "must be one of {}, not {name:?}",
                            Sightings::NAMES.join(", ")
                        ),
                    )
                })?;
            }
            (None, Some(true)) => cc.sightings = Sightings::AnyPacket,
            (None, Some(false) | None) => {}
        }
        Ok(())
    });
    ck.run(|| {
        if let Some(v) = cap.queue {
            if !(16..=16_777_216).contains(&v) {
                return Err(bad(
                    "capture.queue",
                    format!("must be between 16 and 16777216, not {v}"),
                ));
            }
            cc.queue = usize::try_from(v).expect("in range");
        }
        Ok(())
    });
}

/// `[cnr]`: catch-and-release.
fn cnr(cnr: CnrFile, c: &mut Config, ck: &mut Checks) {
    let cn = &mut c.cnr;
    ck.run(|| {
        if let Some(iv) = cnr.intervals {
            let text = match iv {
                StringOrList::Text(t) => t,
                StringOrList::List(l) => l.join(","),
            };
            cn.intervals = text
                .parse()
                .map_err(|e: crate::cnr::IntervalsError| bad("cnr.intervals", e.to_string()))?;
        }
        Ok(())
    });
    ck.run(|| {
        if let Some(t) = cnr.sweep_interval {
            let d = duration("cnr.sweep_interval", &t)?;
            cn.sweep_interval =
                Interval::from_micros(i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
        }
        Ok(())
    });
    ck.run(|| {
        if let Some(v) = cnr.warn_blocked {
            cn.warn_blocked = v;
        }
        Ok(())
    });
    ck.run(|| {
        if let Some(v) = cnr.source {
            let n = v.trim().chars().count();
            if n == 0 || n > 30 {
                return Err(bad(
                    "cnr.source",
                    "must be 1 to 30 characters (a BHR source)".into(),
                ));
            }
            cn.source = v.trim().to_string();
        }
        Ok(())
    });
    ck.run(|| {
        if let Some(v) = cnr.why {
            if v.trim().is_empty() {
                return Err(bad(
                    "cnr.why",
                    "must not be empty (BHR requires a why)".into(),
                ));
            }
            cn.why = v.trim().to_string();
        }
        Ok(())
    });
    ck.run(|| {
        if let Some(v) = cnr.block_managers {
            for (i, ident) in v.iter().enumerate() {
                let n = ident.chars().count();
                if n == 0 || n > 50 {
                    return Err(bad(
                        &format!("cnr.block_managers[{i}]"),
                        "must be 1 to 50 characters (a BHR ident)".into(),
                    ));
                }
            }
            if v.len() > crate::cnr::MAX_BACKENDS {
                return Err(bad(
                    "cnr.block_managers",
                    format!("at most {} idents", crate::cnr::MAX_BACKENDS),
                ));
            }
            cn.block_managers = v;
        }
        Ok(())
    });
    ck.run(|| {
        if let Some(v) = cnr.hand_over_sources {
            cn.hand_over_sources = v;
        }
        Ok(())
    });
    if let Some(nf) = cnr.networks {
        cnr_networks(nf, cn, ck);
    }
}

/// `[cnr.networks]`: on once the section is there (unless `enabled = false`).
fn cnr_networks(nf: NetworksFile, cn: &mut Cnr, ck: &mut Checks) {
    let mut n = crate::cnr::Networks::with_intervals(cn.intervals.clone());
    let mut ok = true;
    let mut check = |r: Result<(), Bad>| {
        if r.is_err() {
            ok = false;
        }
        ck.run(|| r);
    };
    let len = |key: &str, v: Option<i64>, max: i64, slot: &mut u8| {
        if let Some(v) = v {
            if !(1..=max).contains(&v) {
                return Err(bad(key, format!("must be 1 to {max}")));
            }
            *slot = v as u8;
        }
        Ok(())
    };
    check(len(
        "cnr.networks.prefix4",
        nf.prefix4,
        32,
        &mut n.shape.len4,
    ));
    check(len(
        "cnr.networks.prefix6",
        nf.prefix6,
        128,
        &mut n.shape.len6,
    ));
    check((|| {
        if let Some(v) = nf.threshold {
            if !(1..=1000).contains(&v) {
                return Err(bad(
                    "cnr.networks.threshold",
                    "must be 1 to 1000 distinct addresses".into(),
                ));
            }
            n.threshold = v as usize;
        }
        Ok(())
    })());
    check((|| {
        if let Some(t) = &nf.window {
            let d = duration("cnr.networks.window", t)?;
            if d.is_zero() {
                return Err(bad("cnr.networks.window", "must be positive".into()));
            }
            n.window = Interval::from_micros(i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
        }
        Ok(())
    })());
    check((|| {
        if let Some(iv) = nf.intervals {
            let text = match iv {
                StringOrList::Text(t) => t,
                StringOrList::List(l) => l.join(","),
            };
            n.intervals = text.parse().map_err(|e: crate::cnr::IntervalsError| {
                bad("cnr.networks.intervals", e.to_string())
            })?;
        }
        Ok(())
    })());
    if ok && nf.enabled.unwrap_or(true) {
        cn.networks = Some(n);
    }
}

/// `[logs]`.
fn logs(logs: LogsFile, c: &mut Config, ck: &mut Checks) {
    let lg = &mut c.logs;
    ck.run(|| {
        if let Some(d) = logs.dir {
            if d.as_os_str().is_empty() {
                return Err(bad("logs.dir", "must not be empty".into()));
            }
            lg.dir = d;
        }
        Ok(())
    });
    ck.run(|| {
        if let Some(v) = logs.json {
            lg.json = v;
        }
        Ok(())
    });
    ck.run(|| {
        if let Some(t) = logs.rotate_interval {
            lg.rotate_interval = if t.trim() == "0" || t.trim() == "0s" {
                None
            } else {
                Some(duration("logs.rotate_interval", &t)?)
            };
        }
        Ok(())
    });
    ck.run(|| {
        if let Some(v) = logs.rotate_size {
            if v < 0 {
                return Err(bad(
                    "logs.rotate_size",
                    format!("must be zero or more bytes, not {v}"),
                ));
            }
            lg.rotate_size = (v > 0).then_some(v.unsigned_abs());
        }
        Ok(())
    });
}

/// `[daemon]`.
fn daemon(daemon: DaemonFile, c: &mut Config, ck: &mut Checks) {
    ck.run(|| {
        if let Some(u) = daemon.user {
            let u = u.trim().to_string();
            c.daemon.user = (!u.is_empty()).then_some(u);
        }
        Ok(())
    });
}

/// `[scan]`: the log scanner.
fn scan(scan: ScanFile, c: &mut Config, ck: &mut Checks) {
    let sc = &mut c.scan;
    ck.run(|| {
        if let Some(v) = scan.files {
            for (i, f) in v.iter().enumerate() {
                if f.as_os_str().is_empty() {
                    return Err(bad(&format!("scan.files[{i}]"), "must not be empty".into()));
                }
            }
            sc.files = v;
        }
        Ok(())
    });
    sc.rules_file = scan.rules.filter(|p| !p.as_os_str().is_empty());
    sc.jails = scan.jails.unwrap_or_default();
    ck.run(|| {
        use crate::scan::rules::{LoadError, Rules};
        // Read once, here: the daemon uses what is read now.
        sc.rules = Rules::load(sc.rules_file.as_deref(), &sc.jails).map_err(|e| match e {
            LoadError::Jails(e) => bad("scan.jails", e.0),
            e => bad("scan.rules", e.to_string()),
        })?;
        Ok(())
    });
    ck.run(|| {
        if let Some(t) = scan.poll_interval {
            sc.poll_interval = duration("scan.poll_interval", &t)?;
            if sc.poll_interval.is_zero() {
                return Err(bad("scan.poll_interval", "must be positive".into()));
            }
        }
        Ok(())
    });
    ck.run(|| {
        if let Some(v) = scan.max_addresses {
            if !(1..=100_000_000).contains(&v) {
                return Err(bad(
                    "scan.max_addresses",
                    format!("must be between 1 and 100000000, not {v}"),
                ));
            }
            sc.max_addresses = usize::try_from(v).expect("in range");
        }
        Ok(())
    });
    ck.run(|| {
        if let Some(v) = scan.from_start {
            sc.from_start = v;
        }
        Ok(())
    });
}

/// `[watchlist]`.
fn watchlist(wl: WatchlistFile, c: &mut Config, ck: &mut Checks) {
    let w = &mut c.watchlist;
    ck.run(|| {
        if let Some(v) = wl.threshold {
            if !(1..=1_000_000).contains(&v) {
                return Err(bad(
                    "watchlist.threshold",
                    format!("must be between 1 and 1000000, not {v}"),
                ));
            }
            w.threshold = u32::try_from(v).expect("in range");
        }
        Ok(())
    });
    ck.run(|| {
        for (key, v, slot) in [
            ("watchlist.watch_ttl", wl.watch_ttl, &mut w.watch_ttl),
            ("watchlist.block_ttl", wl.block_ttl, &mut w.block_ttl),
        ] {
            if let Some(t) = v {
                let d = duration(key, &t)?;
                if d.is_zero() {
                    return Err(bad(key, "must be positive".into()));
                }
                *slot = Interval::from_micros(i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
            }
        }
        Ok(())
    });
    ck.run(|| {
        if let Some(v) = wl.refresh_on_hit {
            w.refresh_on_hit = v;
        }
        Ok(())
    });
    ck.run(|| {
        if let Some(v) = wl.anonymize {
            w.anonymize = v;
        }
        Ok(())
    });
    ck.run(|| {
        if let Some(v) = wl.key_file {
            w.key_file = (!v.as_os_str().is_empty()).then_some(v);
        }
        Ok(())
    });
    ck.run(|| {
        if let Some(v) = wl.block_addresses {
            w.block_addresses = v;
        }
        Ok(())
    });
    ck.run(|| {
        if w.anonymize && w.key_file.is_none() {
            return Err(bad(
                "watchlist.key_file",
                "is needed when watchlist.anonymize is true (keep it apart from the database)"
                    .into(),
            ));
        }
        Ok(())
    });
}

/// `[bus]`: the event bus.
fn bus(bus: BusFile, c: &mut Config, ck: &mut Checks) {
    let b = &mut c.bus;
    ck.run(|| {
        if let Some(v) = bus.enabled {
            b.enabled = v;
        }
        Ok(())
    });
    ck.run(|| {
        for (key, v, slot) in [
            ("bus.xpub", bus.xpub, &mut b.xpub),
            ("bus.xsub", bus.xsub, &mut b.xsub),
        ] {
            if let Some(v) = v {
                check_endpoint(&v).map_err(|m| bad(key, m))?;
                *slot = v;
            }
        }
        Ok(())
    });
    ck.run(|| {
        if let Some(v) = bus.proxy {
            b.proxy = v;
        }
        Ok(())
    });
    ck.run(|| {
        if let Some(v) = bus.role {
            b.role = v;
        }
        Ok(())
    });
    ck.run(|| {
        if let Some(v) = bus.node_id {
            let v = v.trim().to_string();
            if v.contains(|c: char| c.is_whitespace() || c.is_control()) {
                return Err(bad("bus.node_id", "must not contain spaces".into()));
            }
            b.node_id = (!v.is_empty()).then_some(v);
        }
        Ok(())
    });
    ck.run(|| {
        if let Some(v) = bus.format {
            b.json = match v.as_str() {
                "broker-bin-v1" => false,
                "broker-json-v1" => true,
                _ => {
                    return Err(bad(
                        "bus.format",
                        format!("must be `broker-bin-v1` or `broker-json-v1`, not `{v}`"),
                    ));
                }
            };
        }
        Ok(())
    });
    ck.run(|| {
        if let Some(v) = bus.netcontrol {
            b.netcontrol = v;
        }
        Ok(())
    });
    ck.run(|| {
        if let Some(v) = bus.netcontrol_topic {
            if v.is_empty() {
                return Err(bad("bus.netcontrol_topic", "must not be empty".into()));
            }
            b.netcontrol_topic = v;
        }
        Ok(())
    });
    ck.run(|| {
        if let Some(v) = bus.netcontrol_source {
            let n = v.trim().chars().count();
            if n == 0 || n > 30 {
                return Err(bad(
                    "bus.netcontrol_source",
                    "must be 1 to 30 characters (a BHR source)".into(),
                ));
            }
            b.netcontrol_source = v.trim().to_string();
        }
        Ok(())
    });
    ck.run(|| {
        if let Some(t) = bus.notify_interval {
            b.notify_interval = duration("bus.notify_interval", &t)?;
        }
        Ok(())
    });
    ck.run(|| {
        if let Some(v) = bus.queue {
            if !(16..=16_777_216).contains(&v) {
                return Err(bad(
                    "bus.queue",
                    format!("must be between 16 and 16777216, not {v}"),
                ));
            }
            b.queue = usize::try_from(v).expect("in range");
        }
        Ok(())
    });
    ck.run(|| {
        use crate::bus::curve::{ENV, KEYS, Key, Keys};
        let given = [
            bus.curve_server_publickey,
            bus.curve_server_secretkey,
            bus.curve_client_publickey,
            bus.curve_client_secretkey,
        ];
        let mut k = [None; 4];
        for ((slot, v), key) in k.iter_mut().zip(given).zip(KEYS) {
            if let Some(v) = v {
                *slot = Some(Key::from_z85(v.trim()).map_err(|m| bad(key, m))?);
            }
        }
        let file = Keys {
            server_public: k[0],
            server_secret: k[1],
            client_public: k[2],
            client_secret: k[3],
        };
        let env = Keys::from_env(|v| std::env::var(v).ok()).map_err(|(v, m)| bad(&v, m))?;
        (b.curve, b.curve_from_env) = match (file.is_empty(), env.is_empty()) {
            (_, true) => (file, false),
            (true, false) => (env, true),
            (false, false) => {
                return Err(bad(
                    "bus.curve_*",
                    format!(
                        "CURVE keys are set here and in Zeek's {}… environment variables; \
                         use one or the other",
                        ENV[0].trim_end_matches("SERVER_PUBLICKEY")
                    ),
                ));
            }
        };
        let names = if b.curve_from_env { &ENV } else { &KEYS };
        if bus.websocket.is_some() {
            // Checked with the WebSocket URL below.
            return Ok(());
        }
        if b.enabled || b.proxy {
            b.curve
                .resolve(b.proxy, b.enabled, names)
                .map_err(|(k, m)| bad(&k, m))?;
        }
        Ok(())
    });
    ck.run(|| {
        if bus.websocket_ca_file.is_some() && bus.websocket.is_none() {
            return Err(bad(
                "bus.websocket_ca_file",
                "is for a wss:// bus.websocket, which is not set".into(),
            ));
        }
        let Some(url) = &bus.websocket else {
            return Ok(());
        };
        let t = crate::bus::websocket::Target::parse(url, bus.websocket_ca_file.as_deref())
            .map_err(|m| bad("bus.websocket", m))?;
        if b.proxy {
            return Err(bad(
                "bus.proxy",
                "a node joining through Zeek's WebSocket API does not host a ZeroMQ proxy".into(),
            ));
        }
        if !b.curve.is_empty() {
            return Err(bad(
                if b.curve_from_env {
                    "ZEEK_CLUSTER_BACKEND_ZEROMQ_CURVE_*"
                } else {
                    "bus.curve_*"
                },
                "CURVE is ZeroMQ's; Zeek's WebSocket API is encrypted with TLS (a wss:// URL)"
                    .into(),
            ));
        }
        b.websocket = Some(t);
        Ok(())
    });
}

/// `[[blocker]]`, each on its own (one bad blocker does not hide the next one's problems).
fn blockers(blockers: Vec<BlockerFile>, c: &mut Config, ck: &mut Checks) {
    for (i, b) in blockers.into_iter().enumerate() {
        ck.run(|| {
            let key = |k: &str| format!("blocker[{i}].{k}");
            let ident = b.ident.trim().to_string();
            if ident.is_empty() || ident.chars().count() > 50 {
                return Err(bad(&key("ident"), "must be 1 to 50 characters".into()));
            }
            if c.blockers.iter().any(|o| o.ident == ident) {
                return Err(bad(&key("ident"), format!("`{ident}` is used twice")));
            }
            let time = |k: &str, v: Option<String>, d: Duration, zero_ok: bool| {
                let Some(t) = v else { return Ok(d) };
                let i: Interval = t.parse().map_err(|e| bad(&key(k), format!("{e}")))?;
                let us = i.as_micros();
                if us < 0 || (us == 0 && !zero_ok) {
                    return Err(bad(&key(k), "must be positive".into()));
                }
                Ok(Duration::from_micros(us.unsigned_abs()))
            };
            let ds = crate::manager::Settings::default();
            let settings = crate::manager::Settings {
                poll_timeout: time("poll_timeout", b.poll_timeout, ds.poll_timeout, true)?,
                unblock_interval: time(
                    "unblock_interval",
                    b.unblock_interval,
                    ds.unblock_interval,
                    true,
                )?,
                reconcile_interval: time(
                    "reconcile_interval",
                    b.reconcile_interval,
                    ds.reconcile_interval,
                    true,
                )?,
            };
            let mut o = crate::enforce::Options::default();
            o.command_timeout = time(
                "command_timeout",
                b.command_timeout,
                o.command_timeout,
                false,
            )?;
            macro_rules! take {
                    ($($f:ident),*) => { $( if let Some(v) = b.$f { o.$f = v; } )* };
                }
            take!(
                nft_table,
                chain,
                hooks,
                iptables,
                ip6tables,
                ipset_name,
                route_proto,
                hosts_allow,
                exec_block,
                exec_unblock
            );
            if let Some(v) = b.next_hop {
                o.announce.next_hop = v;
            }
            if let Some(v) = b.next_hop6 {
                o.announce.next_hop6 = v;
            }
            if let Some(v) = b.communities {
                o.announce.communities = v;
            }
            if let Some(v) = b.batch {
                o.announce.batch = usize::try_from(v).unwrap_or(0);
            }
            if let Some(v) = b.exabgp_socket {
                if v.is_empty() {
                    return Err(bad(&key("exabgp_socket"), "a path is needed".into()));
                }
                o.exabgp_socket = v;
            }
            // Announcements keep the registry's prefix rules.
            o.announce.minimum_prefixlen = c.bhr.minimum_prefixlen;
            o.announce.minimum_prefixlen_v6 = c.bhr.minimum_prefixlen_v6;
            if let Err(msg) = o.check(b.backend) {
                // The message starts with the option's name.
                let (k, m) = msg.split_once(": ").unwrap_or(("backend", &msg));
                let k = k.split(' ').next().unwrap_or(k);
                return Err(bad(&key(k), m.to_string()));
            }
            c.blockers.push(Blocker {
                ident,
                kind: b.backend,
                options: o,
                dry_run: b.dry_run.unwrap_or(false),
                settings,
            });
            Ok(())
        });
    }
}

/// What one section asks of another.
fn across(c: &Config, ck: &mut Checks) {
    ck.run(|| {
            if let (Some(u), Some(b)) = (
                &c.daemon.user,
                c.blockers
                    .iter()
                    .find(|b| {
                        // stdout and ExaBGP (a socket catchd makes) need no privilege.
                        !b.dry_run
                            && !matches!(
                                b.kind,
                                crate::enforce::Kind::Stdout | crate::enforce::Kind::Exabgp
                            )
                    }),
            ) {
                return Err(bad(
                    "daemon.user",
                    format!(
                        "blocker {} ({}) needs root to change the firewall, but catchd would run as {u}; \
                         run it as `catchd manager` in a process of its own",
                        b.ident,
                        b.kind.name()
                    ),
                ));
            }
            Ok(())
        });
}

/// Checks a ZeroMQ endpoint (`tcp://host:port`, `ipc://path`, `inproc://name`).
///
/// # Errors
/// What is wrong.
pub fn check_endpoint(e: &str) -> Result<(), String> {
    let ok = ["tcp://", "ipc://", "inproc://"]
        .iter()
        .any(|p| e.strip_prefix(p).is_some_and(|rest| !rest.is_empty()));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{e}` is not a ZeroMQ endpoint (tcp://host:port, ipc://path)"
        ))
    }
}

/// Whether a name can be an interface name (Linux: 1 to 15 bytes, no `/`, `:` or space).
pub fn check_interface_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 15 || name.contains(['/', ' ', '\t', '\n']) {
        Err(format!("`{name}` is not an interface name"))
    } else {
        Ok(())
    }
}

/// The TOML parser's error as `LINE:COL: KEY: message`, naming the dotted key the error is
/// on (found from the table header and the `key =` of the line it points at).
fn describe(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim().replace('\n', " ");
    let Some(span) = e.span() else {
        return msg;
    };
    let start = span.start.min(text.len());
    let before = &text[..start];
    let line_no = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = text[line_start..start].chars().count() + 1;
    let line = text[line_start..].lines().next().unwrap_or("");
    let table = before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && l.ends_with(']'))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"').to_string())
        .filter(|k| !k.is_empty() && !k.starts_with('['));
    let name = match (table, key) {
        (Some(t), Some(k)) => format!("{t}.{k}: "),
        (None, Some(k)) => format!("{k}: "),
        _ => String::new(),
    };
    format!("line {line_no}, column {col}: {name}{msg}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, Error> {
        Config::parse(text, Path::new("test.toml"))
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn every_bad_value_is_reported_at_once_each_with_its_key() {
        let e = parse(
            "[server]\nmax_body = 10\nlease_ttl = \"soon\"\n\
             [bhr]\nminimum_prefixlen = 40\n\
             [capture]\nsnaplen = 1\n\
             [[blocker]]\nident = \"\"\nbackend = \"stdout\"\n\
             [[blocker]]\nident = \"b\"\nbackend = \"stdout\"\ncommand_timeout = \"0s\"\n",
        )
        .unwrap_err();
        let Error::Several { path, problems } = &e else {
            panic!("{e:?}");
        };
        assert_eq!(path, Path::new("test.toml"));
        let keys: Vec<&str> = problems.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "server.max_body",
                "server.lease_ttl",
                "bhr.minimum_prefixlen",
                "capture.snaplen",
                "blocker[0].ident",
                "blocker[1].command_timeout"
            ]
        );
        let line = e.to_string();
        assert!(!line.contains('\n'), "one line: {line}");
        assert!(
            line.starts_with("test.toml: server.max_body: must be at least 1024 bytes; ")
                && line.contains("; server.lease_ttl: `soon`: "),
            "{line}"
        );
        // One bad value reads as before.
        assert_eq!(
            err("[capture]\nsnaplen = 1\n"),
            format!("test.toml: capture.snaplen: {}", {
                let Error::Invalid { msg, .. } = parse("[capture]\nsnaplen = 1\n").unwrap_err()
                else {
                    unreachable!()
                };
                msg
            })
        );
    }

    #[test]
    fn empty_file_gives_the_documented_defaults() {
        let c = parse("").unwrap();
        let d = Settings::default();
        assert_eq!(c.bhr.time_window_factor, 2.0);
        assert_eq!(c.bhr.minimum_time_window, 43_200.0);
        assert_eq!(c.bhr.minimum_prefixlen, 23);
        assert_eq!(c.bhr.minimum_prefixlen_v6, 64);
        assert_eq!(c.bhr.local_networks, d.local_networks);
        assert!(!c.bhr.unauthenticated_limited_query);
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8000");
        assert_eq!(
            c.server.db,
            crate::store::Database::Sqlite(PathBuf::from("catchd-data/catchd.db"))
        );
    }

    #[test]
    fn the_documented_example_parses() {
        let doc = include_str!("config.rs");
        let example: String = doc
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| l.trim_start_matches("//!").trim_start().to_string() + "\n")
            .collect();
        assert!(example.contains("[bhr]"));
        let c = parse(&example).unwrap();
        assert_eq!(c.server.limits.request_timeout, Duration::from_secs(90));
    }

    #[test]
    fn the_bundled_example_is_the_defaults() {
        let c = parse(include_str!("../catchd.toml")).unwrap();
        let d = Config::default();
        assert_eq!(c.capture, d.capture);
        assert_eq!(c.cnr, d.cnr);
        assert_eq!(c.logs, d.logs);
        assert_eq!(c.daemon, d.daemon);
        assert_eq!(c.bhr, d.bhr);
        assert_eq!(c.server.listen, d.server.listen);
    }

    #[test]
    fn values_are_applied() {
        let c = parse(
            r#"
            [server]
            listen = "[::1]:9000"
            db = "/tmp/x.db"
            request_timeout = "2m"
            max_long_poll = "30s"
            [bhr]
            minimum_time_window = "1d"
            minimum_prefixlen = 24
            minimum_prefixlen_v6 = 48
            local_networks = ["192.0.2.0/24", "2001:db8::/32", "198.51.100.7"]
            unauthenticated_limited_query = true
            return_to_base_factor = 3
            "#,
        )
        .unwrap();
        assert_eq!(c.server.listen.to_string(), "[::1]:9000");
        assert_eq!(c.server.limits.request_timeout, Duration::from_secs(120));
        assert_eq!(c.bhr.minimum_time_window, 86_400.0);
        assert_eq!(c.bhr.minimum_prefixlen, 24);
        assert_eq!(c.bhr.minimum_prefixlen_v6, 48);
        assert_eq!(c.bhr.local_networks.len(), 3);
        assert_eq!(c.bhr.return_to_base_factor, 3.0);
        assert!(c.bhr.unauthenticated_limited_query);
    }

    #[test]
    fn errors_name_the_key() {
        for (text, key) in [
            ("[bus]\nxpub = \"localhost:5555\"", "bus.xpub"),
            ("[bus]\nxsub = \"tcp://\"", "bus.xsub"),
            ("[bus]\nformat = \"msgpack\"", "bus.format"),
            ("[bus]\nnode_id = \"a b\"", "bus.node_id"),
            ("[bus]\nnotify_interval = \"often\"", "bus.notify_interval"),
            ("[bus]\nqueue = 1", "bus.queue"),
            (
                "[bus]\ncurve_client_secretkey = \"abc\"",
                "bus.curve_client_secretkey",
            ),
            (
                "[bus]\nenabled = true\ncurve_server_publickey = \"0000000000000000000000000000000000000000\"\n\
                 curve_client_publickey = \"0000000000000000000000000000000000000000\"",
                "bus.curve_client_secretkey",
            ),
            ("[bus]\nnetcontrol_source = \"\"", "bus.netcontrol_source"),
            ("[bus]\nrole = \"worker\"", "role"),
            ("[bhr]\nminimum_prefixlen = 33", "bhr.minimum_prefixlen"),
            ("[cnr.networks]\nthreshold = 0", "cnr.networks.threshold"),
            ("[cnr.networks]\nprefix6 = 129", "cnr.networks.prefix6"),
            ("[cnr.networks]\nwindow = \"0s\"", "cnr.networks.window"),
            (
                "[cnr.networks]\nintervals = \"1m\"",
                "cnr.networks.intervals",
            ),
            ("[cnr.networks]\nfoo = 1", "foo"),
            (
                "[[blocker]]\nident = \"b\"\nbackend = \"exabgp\"\ncommunities = [\"666\"]",
                "blocker[0].communities",
            ),
            (
                "[[blocker]]\nident = \"b\"\nbackend = \"exabgp\"\nnext_hop = \"::1\"",
                "blocker[0].next_hop",
            ),
            (
                "[[blocker]]\nident = \"b\"\nbackend = \"exabgp\"\nbatch = 0",
                "blocker[0].batch",
            ),
            (
                "[bhr]\nminimum_prefixlen_v6 = -1",
                "bhr.minimum_prefixlen_v6",
            ),
            ("[bhr]\ntime_window_factor = 0", "bhr.time_window_factor"),
            (
                "[bhr]\nreturn_to_base_factor = -2.0",
                "bhr.return_to_base_factor",
            ),
            (
                "[bhr]\nminimum_time_window = \"soon\"",
                "bhr.minimum_time_window",
            ),
            (
                "[bhr]\nlocal_networks = [\"10.0.0.0/8\", \"banana\"]",
                "bhr.local_networks[1]",
            ),
            (
                "[bhr]\nlocal_networks = [\"10.0.0.1/8\"]",
                "bhr.local_networks[0]",
            ),
            ("[server]\nlisten = \"localhost\"", "server.listen"),
            ("[server]\nmax_long_poll = \"5m\"", "server.max_long_poll"),
            ("[server]\nmax_concurrent = 0", "server.max_concurrent"),
            ("[cnr]\nintervals = \"10m\"", "cnr.intervals"),
            ("[cnr]\nintervals = \"10m,soon\"", "cnr.intervals"),
            ("[cnr]\nsource = \"\"", "cnr.source"),
            ("[cnr]\nsweep_interval = \"never\"", "cnr.sweep_interval"),
            (
                "[capture]\ninterfaces = [\"eth0\", \"a/b\"]",
                "capture.interfaces[1]",
            ),
            ("[capture]\nsnaplen = 10", "capture.snaplen"),
            ("[capture]\nqueue = 1", "capture.queue"),
            (
                "[logs]\nrotate_interval = \"sometimes\"",
                "logs.rotate_interval",
            ),
            ("[logs]\nrotate_size = -1", "logs.rotate_size"),
        ] {
            let e = err(text);
            assert!(e.contains(&format!("{key}: ")), "{text:?}: {e}");
        }
    }

    #[test]
    fn daemon_sections_are_applied() {
        let c = parse(
            r#"
            [capture]
            interfaces = ["eth1", "eth2"]
            filter = "not port 22"
            any_packet = true
            [cnr]
            intervals = ["1s", "2s", "4s"]
            sweep_interval = "1s"
            block_managers = ["bgp1", "fw"]
            hand_over_sources = ["bro"]
            [logs]
            dir = "/var/log/catchd"
            json = true
            rotate_interval = "1h"
            rotate_size = 1000000
            [daemon]
            user = "catchd"
            "#,
        )
        .unwrap();
        assert_eq!(c.capture.interfaces, ["eth1", "eth2"]);
        assert_eq!(c.capture.filter.as_deref(), Some("not port 22"));
        assert_eq!(c.capture.sightings, crate::packet::Sightings::AnyPacket);
        assert_eq!(c.cnr.intervals.to_string(), "1s,2s,4s");
        assert_eq!(c.cnr.sweep_interval, Interval::from_secs(1));
        assert_eq!(c.cnr.block_managers, ["bgp1", "fw"]);
        assert_eq!(c.logs.rotate_interval, Some(Duration::from_secs(3600)));
        assert_eq!(c.logs.rotate_size, Some(1_000_000));
        assert!(c.logs.json);
        assert_eq!(c.daemon.user.as_deref(), Some("catchd"));
        let d = parse("").unwrap();
        assert_eq!(d.cnr.intervals, Intervals::default());
        assert!(d.capture.interfaces.is_empty());
        assert_eq!(d.logs.rotate_interval, None);
    }

    #[test]
    fn sightings_names_a_rule_and_conflicts_with_any_packet() {
        use crate::packet::Sightings;
        let c = parse("[capture]\nsightings = \"connections-bare\"\n").unwrap();
        assert_eq!(c.capture.sightings, Sightings::ConnectionsBare);
        assert_eq!(parse("").unwrap().capture.sightings, Sightings::Connections);
        let Error::Invalid { key, msg, .. } =
            parse("[capture]\nsightings = \"every\"\n").unwrap_err()
        else {
            panic!()
        };
        assert_eq!(key, "capture.sightings");
        assert!(msg.contains("connections-bare"), "{msg}");
        let Error::Invalid { key, .. } =
            parse("[capture]\nsightings = \"any\"\nany_packet = true\n").unwrap_err()
        else {
            panic!()
        };
        assert_eq!(key, "capture.any_packet");
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_refused_by_name() {
        let e = err("[bhr]\nminimum_prefix_len = 24");
        assert!(e.contains("minimum_prefix_len"), "{e}");
        assert!(e.contains("line 2"), "{e}");
        let e = err("[bhrr]\n");
        assert!(e.contains("bhrr"), "{e}");
        let e = err("[bhr]\nunauthenticated_limited_query = \"yes\"");
        assert!(e.contains("bhr.unauthenticated_limited_query: "), "{e}");
        assert!(!e.contains('\n'), "{e}");
        let e = err("[bhr]\ntime_multiplier = 2.0");
        assert!(e.contains("time_multiplier"), "{e}");
    }

    #[test]
    fn blockers_are_read_and_checked() {
        let c = parse(
            "[[blocker]]\nident = \"fw\"\nbackend = \"nftables\"\nreconcile_interval = \"0s\"\n\
             [[blocker]]\nident = \"run\"\nbackend = \"exec\"\n\
             exec_block = [\"/bin/b\", \"{cidr}\"]\nexec_unblock = [\"/bin/u\", \"{cidr}\"]\n",
        )
        .unwrap();
        assert_eq!(c.blockers.len(), 2);
        assert_eq!(c.blockers[0].kind, crate::enforce::Kind::Nftables);
        assert_eq!(c.blockers[0].settings.reconcile_interval, Duration::ZERO);
        assert_eq!(c.blockers[0].options.nft_table, "catchd");
        assert_eq!(c.blockers[1].options.exec_block, ["/bin/b", "{cidr}"]);
        let e = err("[[blocker]]\nident = \"x\"\nbackend = \"pf\"\n");
        assert!(e.contains("backend") && e.contains("pf"), "{e}");
        let e = err("[[blocker]]\nident = \"x\"\nbackend = \"exec\"\n");
        assert!(e.contains("blocker[0].exec_block"), "{e}");
        let e = err("[[blocker]]\nident = \"x\"\nbackend = \"route\"\nchian = \"X\"\n");
        assert!(e.contains("chian"), "{e}");
        let e = err(
            "[[blocker]]\nident = \"x\"\nbackend = \"stdout\"\n[[blocker]]\nident = \"x\"\nbackend = \"stdout\"\n",
        );
        assert!(e.contains("blocker[1].ident"), "{e}");
        let e = err(
            "[daemon]\nuser = \"nobody\"\n[[blocker]]\nident = \"x\"\nbackend = \"iptables\"\n",
        );
        assert!(e.contains("daemon.user") && e.contains("root"), "{e}");
    }
}
