//! catchd: Zeek's catch-and-release as a standalone daemon.
//!
//! # Layout
//!
//! * [`cnr`]: the catch-and-release engine and the NetControl rule model beneath it. A
//!   deterministic state machine: no I/O, time passed in, log records passed out.
//! * [`packet`]: turns a captured frame into an [`packet::Observation`] (addresses, protocol,
//!   ports, TCP flags) with etherparse slices, without allocating; decides what counts as a
//!   sighting of a connection originator.
//! * [`capture`]: the only user of libpcap. Opens trace files and yields frames with their
//!   timestamps and link type.
//! * [`replay`]: `catchd replay`: merges traces and timed drops on packet time and drives
//!   the engine exactly as Zeek does when it reads a trace.
//! * [`zeeklog`]: Zeek's TSV and JSON log formats for the three NetControl logs.
//! * [`addr`], [`time`]: the address key and the microsecond time types everything shares.
//! * [`cli`]: the command line.

#![warn(missing_docs)]

pub mod addr;
pub mod auth;
pub mod bhr;
pub mod capture;
pub mod cli;
pub mod cnr;
pub mod config;
pub mod daemon;
pub mod packet;
pub mod replay;
pub mod sensor;
pub mod server;
pub mod store;
pub mod time;
pub mod zeeklog;
