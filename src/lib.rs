//! catchd: Zeek's catch-and-release as a standalone daemon.
//!
//! # Layout
//!
//! The public modules are the library's surface: what `catchd`'s commands, the
//! integration tests (`tests/it`) and the benchmarks drive. The private ones are glue
//! only the commands use.
//!
//! Domain, no I/O:
//! * [`cnr`]: the catch-and-release engine and the NetControl rule model beneath it. A
//!   deterministic state machine: time passed in, log records and rule requests out.
//! * [`bhr`]: BHR's block registry (model, rules, queues) and BHR's duration syntax.
//! * [`packet`]: turns a captured frame into an [`packet::Observation`] (addresses,
//!   protocol, ports, TCP flags) with etherparse slices, without allocating; decides what
//!   counts as a sighting of a connection originator.
//! * [`broker`]: Broker's data model and its `broker-bin-v1` and JSON encodings, Zeek's
//!   event envelope and the catch-and-release and NetControl events.
//! * [`scan`]: detection from logs (BlockHosts / fail2ban style): patterns, thresholds,
//!   following files.
//! * [`watchlist`]: BlackRed's watchlist → blacklist.
//! * [`zeeklog`]: Zeek's TSV and JSON log formats for the three NetControl logs.
//! * [`auth`]: users, roles, tokens and passwords.
//! * [`addr`], [`time`]: the address key, the microsecond time types and their formats.
//!
//! Each outside system in exactly one module:
//! * `capture` (private): libpcap. Opens trace files and live interfaces and yields
//!   frames with their timestamps and link type.
//! * [`bus`]: ZeroMQ: a node on Zeek's cluster bus, and the proxy.
//! * [`store`]: catchd's database (SQLite, or PostgreSQL with several nodes): one schema
//!   description, group commit, migrations, the cluster lock and change log; also the
//!   reader of an original BHR database (`catchd import-bhr`).
//! * [`enforce`]: firewall commands (nftables, iptables, ipset, ip route, hosts.allow,
//!   exec, stdout).
//! * `manager` (private): block managers, BHR's HTTP API as a client: queues in,
//!   enforcer changes out.
//!
//! Services and processes:
//! * [`api`]: the HTTP APIs over the registry (BHR's, with the one change path every
//!   writer goes through, and the watchlist's); `httpd` (private) holds the connections.
//! * [`web`]: the web pages.
//! * `sniff` (private): capture threads: frames in, sightings of watched addresses out.
//! * [`replay`]: `catchd replay`: merges traces and timed drops on packet time and drives
//!   the engine exactly as Zeek does when it reads a trace.
//! * [`daemon`]: `catchd run`: capture, catch-and-release on the registry, the APIs, logs,
//!   persistence and restarts in one process, stopped by a [`shutdown`] future.
//! * `server` (private): `catchd serve`, and opening the durable state (shared with the
//!   daemon).
//! * [`config`]: the TOML configuration, checked section by section.
//! * [`caps`]: the Linux capabilities the process holds and what the configuration
//!   needs of them; [`systemd`]: the service manager's notify protocol and the journal.
//! * `telemetry` (private): the process's metrics registry; `runtime` (private): the tokio
//!   runtime.
//! * [`cli`]: the command line, one file per command.

pub mod addr;
pub mod api;
pub mod auth;
pub mod bhr;
pub mod broker;
pub mod bus;
pub mod caps;
mod capture;
pub mod cli;
pub mod cnr;
pub mod config;
pub mod conn;
pub mod daemon;
pub mod enforce;
mod hot;
mod httpd;
pub mod hugepages;
mod manager;
pub mod packet;
mod prefetch;
pub mod replay;
mod runtime;
pub mod scan;
mod server;
pub mod shutdown;
mod sniff;
pub mod store;
pub mod systemd;
mod telemetry;
pub mod time;
pub mod watchlist;
pub mod web;
pub mod zeeklog;
