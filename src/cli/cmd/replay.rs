//! `catchd replay`: traces on packet time.

use std::path::PathBuf;

use clap::Args;

use crate::cli::print_stdout;
use crate::cnr::Intervals;
use crate::packet::Sightings;
use crate::replay::{self, DropSpec};
use crate::time::Interval;
use crate::zeeklog::Format;

/// `catchd replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Trace files (pcap or pcapng); several are merged by timestamp.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,

    /// Drop an address with catch-and-release. TIME is epoch seconds, RFC 3339, or
    /// +DURATION after the first packet (default: the first packet's time). As in Zeek,
    /// a drop is made at the first packet at or after its time, with that packet's time
    /// (one after the last packet, at the end of the trace).
    #[arg(long = "drop", value_name = "ADDR[@TIME][=LOCATION]")]
    pub drops: Vec<DropSpec>,

    /// End catch-and-release for an address (`unblock_address_catch_release`): TIME as
    /// for --drop, made the same way; REASON is logged in the UNBLOCK line's message.
    #[arg(long = "unblock", value_name = "ADDR[@TIME][=REASON]")]
    pub unblocks: Vec<DropSpec>,

    /// Read more drops from a CSV file with columns ts,addr,location (repeatable).
    #[arg(long = "drops", value_name = "CSV")]
    pub drops_csv: Vec<PathBuf>,

    /// Block lengths of the escalation steps, comma-separated (at least two).
    #[arg(long, value_name = "LIST", default_value = "10m,1h,24h,7d")]
    pub intervals: Intervals,

    /// Directory for netcontrol.log, netcontrol_catch_release.log and netcontrol_drop.log.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub log_dir: PathBuf,

    /// Write the logs in Zeek's JSON format instead of TSV.
    #[arg(long)]
    pub json: bool,

    /// Log an INFO line whenever a still-blocked address is seen
    /// (catch_release_warn_blocked_ip_encountered).
    #[arg(long)]
    pub warn_blocked: bool,

    /// Which packets count as sightings: `connections` (Zeek's connection events, with
    /// the `likely_server_ports` of Zeek's default scripts), `connections-bare` (the same
    /// as `zeek -b` has it), `starts` (a TCP SYN without ACK, or any UDP, ICMP or other
    /// IP packet) or `any` (every packet from a watched address).
    #[arg(long, value_name = "RULE", default_value = "connections", value_parser = parse_sightings)]
    pub sightings: Sightings,

    /// The same as `--sightings any`.
    #[arg(long, conflicts_with = "sightings")]
    pub any_packet: bool,

    /// How often watched addresses are checked for the end of their watch
    /// (Zeek's table_expire_interval).
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    pub sweep_interval: Interval,

    /// Name of the built-in backend in the logs' plugin columns.
    #[arg(long, value_name = "NAME", default_value = crate::cnr::AcceptingPlugin::DEFAULT_NAME)]
    pub plugin: String,

    /// Do not draw a progress line on stderr.
    #[arg(long)]
    pub no_progress: bool,
}

fn parse_sightings(s: &str) -> Result<Sightings, String> {
    Sightings::from_name(s).ok_or_else(|| format!("one of {}", Sightings::NAMES.join(", ")))
}

pub(in crate::cli) fn replay_cmd(a: ReplayArgs) -> anyhow::Result<()> {
    let mut drops = a.drops;
    for csv in &a.drops_csv {
        drops.extend(replay::read_drops_csv(csv)?);
    }
    let opts = replay::Options {
        files: a.files,
        drops,
        unblocks: a.unblocks,
        intervals: a.intervals,
        sweep_interval: a.sweep_interval,
        warn_blocked: a.warn_blocked,
        sightings: if a.any_packet {
            Sightings::AnyPacket
        } else {
            a.sightings
        },
        log_dir: a.log_dir,
        format: if a.json { Format::Json } else { Format::Tsv },
        plugin_name: a.plugin,
        progress: !a.no_progress,
    };
    let summary = replay::run(&opts)?;
    print_stdout(&format!("{summary}\n"))
}
