//! catchd: Zeek's catch-and-release as a standalone daemon.
//!
//! # Layout
//!
//! * [`cnr`]: the catch-and-release engine and the NetControl rule model beneath it. A
//!   deterministic state machine: no I/O, time passed in, log records passed out.
//! * [`packet`]: turns a captured frame into an [`packet::Observation`] (addresses, protocol,
//!   ports, TCP flags) with etherparse slices, without allocating; decides what counts as a
//!   sighting of a connection originator.
//! * [`capture`]: the only user of libpcap. Opens trace files and live interfaces and
//!   yields frames with their timestamps and link type.
//! * [`sensor`]: capture threads: frames in, sightings of watched addresses out.
//! * [`replay`]: `catchd replay`: merges traces and timed drops on packet time and drives
//!   the engine exactly as Zeek does when it reads a trace.
//! * [`daemon`]: `catchd run`: capture, catch-and-release on the registry, the APIs, logs,
//!   persistence and restarts in one process.
//! * [`bhr`]: BHR's block registry (no I/O) and its HTTP API.
//! * [`broker`]: Broker's data model and its `broker-bin-v1` and JSON encodings, Zeek's
//!   event envelope and the catch-and-release and NetControl events (no I/O).
//! * [`bus`]: the only user of ZeroMQ: a node on Zeek's cluster bus, and the proxy.
//! * [`scan`]: detection from logs (BlockHosts / fail2ban style): patterns, thresholds,
//!   following files.
//! * [`watchlist`]: BlackRed's watchlist → blacklist, and its API.
//! * [`enforce`]: the blockers (nftables, iptables, ipset, ip route, hosts.allow, exec,
//!   stdout); the only module that runs firewall commands.
//! * [`manager`]: block managers: BHR queues in, backend changes out; the only HTTP client.
//! * [`store`]: the only user of catchd's database (SQLite, or PostgreSQL with several
//!   nodes): group commit, migrations, the cluster lock and change log.
//! * [`auth`]: users, roles, tokens and passwords.
//! * [`server`]: `catchd serve`, and start-up shared with the daemon.
//! * [`config`]: the TOML configuration, checked key by key.
//! * [`zeeklog`]: Zeek's TSV and JSON log formats for the three NetControl logs.
//! * [`addr`], [`time`]: the address key and the microsecond time types everything shares.
//! * [`cli`]: the command line.

pub mod addr;
pub mod auth;
pub mod bhr;
pub mod broker;
pub mod bus;
pub mod capture;
pub mod cli;
pub mod cnr;
pub mod config;
pub mod daemon;
pub mod enforce;
pub mod httpd;
pub mod manager;
pub mod packet;
pub mod replay;
pub mod scan;
pub mod sensor;
pub mod server;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod time;
pub mod watchlist;
pub mod web;
pub mod zeeklog;
