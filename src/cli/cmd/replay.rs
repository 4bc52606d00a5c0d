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

    /// Catch-and-release of networks: when --net-threshold distinct addresses of one
    /// network were blocked within --net-window, the network is dropped on a ladder of its
    /// own (netcontrol_catch_release_net.log). Any --net-* flag turns it on.
    #[arg(long)]
    pub networks: bool,

    /// Distinct blocked addresses of one network that drop it.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub net_threshold: Option<u32>,

    /// The window those addresses must be blocked within.
    #[arg(long, value_name = "DURATION")]
    pub net_window: Option<Interval>,

    /// The IPv4 networks' prefix length.
    #[arg(long, value_name = "LEN", value_parser = clap::value_parser!(u8).range(1..=32))]
    pub net_prefix4: Option<u8>,

    /// The IPv6 networks' prefix length.
    #[arg(long, value_name = "LEN", value_parser = clap::value_parser!(u8).range(1..=128))]
    pub net_prefix6: Option<u8>,

    /// The networks' ladder [default: --intervals].
    #[arg(long, value_name = "LIST")]
    pub net_intervals: Option<Intervals>,
}

fn parse_sightings(s: &str) -> Result<Sightings, String> {
    Sightings::from_name(s).ok_or_else(|| format!("one of {}", Sightings::NAMES.join(", ")))
}

pub(in crate::cli) fn replay_cmd(a: ReplayArgs) -> anyhow::Result<()> {
    // A replay's tables (the drops, the engine's) are built at once and read at random.
    crate::hugepages::advise();
    let mut drops = a.drops;
    for csv in &a.drops_csv {
        let read = replay::read_drops_csv(csv)?;
        if drops.is_empty() {
            drops = read;
        } else {
            drops.extend(read);
        }
    }
    let on = a.networks
        || a.net_threshold.is_some()
        || a.net_window.is_some()
        || a.net_prefix4.is_some()
        || a.net_prefix6.is_some()
        || a.net_intervals.is_some();
    let networks = on.then(|| {
        let d = crate::cnr::Networks::with_intervals(a.intervals.clone());
        crate::cnr::Networks {
            shape: crate::cnr::NetShape {
                len4: a.net_prefix4.unwrap_or(d.shape.len4),
                len6: a.net_prefix6.unwrap_or(d.shape.len6),
            },
            threshold: a.net_threshold.map_or(d.threshold, |n| n as usize),
            window: a.net_window.unwrap_or(d.window),
            intervals: a.net_intervals.clone().unwrap_or(d.intervals),
        }
    });
    if let Some(w) = networks.as_ref().map(|n| n.window)
        && w.as_micros() <= 0
    {
        return Err(crate::cli::InputError("--net-window: must be positive".into()).into());
    }
    let opts = replay::Options {
        networks,
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
    let summary = replay::run(opts)?;
    print_stdout(&format!("{summary}\n"))
}
