//! The command line: argument definitions and the mapping from them to library calls.
//!
//! This is the one place where flags turn into library options, and where errors turn
//! into exit codes: 0 on success, 2 for bad input (arguments, files, drops), 1 for
//! failures while running (such as a log that cannot be written).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::cnr::Intervals;
use crate::packet::Sightings;
use crate::replay::{self, DropSpec};
use crate::time::Interval;
use crate::zeeklog::Format;

/// Zeek's catch-and-release, standalone.
#[derive(Debug, Parser)]
#[command(name = "catchd", version, about, long_about = None)]
pub struct Cli {
    /// More log output on stderr (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run catch-and-release over pcap/pcapng files on packet time and write Zeek's
    /// NetControl logs.
    Replay(ReplayArgs),
}

/// `catchd replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Trace files (pcap or pcapng); several are merged by timestamp.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,

    /// Drop an address with catch-and-release. TIME is epoch seconds, RFC 3339, or
    /// +DURATION after the first packet (default: the first packet's time).
    #[arg(long = "drop", value_name = "ADDR[@TIME][=LOCATION]")]
    pub drops: Vec<DropSpec>,

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

    /// Count every packet from a watched address as a sighting, not only packets that
    /// start connections (TCP SYN without ACK, UDP, ICMP, other IP).
    #[arg(long)]
    pub any_packet: bool,

    /// How often watched addresses are checked for the end of their watch
    /// (Zeek's table_expire_interval).
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    pub sweep_interval: Interval,

    /// Name of the built-in backend in the logs' plugin columns.
    #[arg(long, value_name = "NAME", default_value = crate::cnr::AcceptingBackend::DEFAULT_NAME)]
    pub plugin: String,

    /// Do not draw a progress line on stderr.
    #[arg(long)]
    pub no_progress: bool,
}

/// Errors that are the user's input, as opposed to failures while running.
fn is_input_error(e: &anyhow::Error) -> bool {
    match e.downcast_ref::<replay::Error>() {
        Some(replay::Error::Capture(_) | replay::Error::DropsCsv { .. }) => true,
        Some(replay::Error::Log(_)) | None => false,
    }
}

/// Sets up `tracing` for a command-line run: compact lines on stderr.
pub fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "catchd=info",
        1 => "catchd=debug",
        _ => "catchd=trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .with_target(false)
        .try_init();
}

/// Runs a parsed command line and maps the outcome to an exit code.
pub fn main(cli: Cli) -> ExitCode {
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("catchd: error: {e:#}");
            if is_input_error(&e) {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Replay(args) => replay_cmd(args),
    }
}

fn replay_cmd(a: ReplayArgs) -> anyhow::Result<()> {
    let mut drops = a.drops;
    for csv in &a.drops_csv {
        drops.extend(replay::read_drops_csv(csv)?);
    }
    let opts = replay::Options {
        files: a.files,
        drops,
        intervals: a.intervals,
        sweep_interval: a.sweep_interval,
        warn_blocked: a.warn_blocked,
        sightings: Sightings {
            any_packet: a.any_packet,
        },
        log_dir: a.log_dir,
        format: if a.json { Format::Json } else { Format::Tsv },
        plugin_name: a.plugin,
        progress: !a.no_progress,
    };
    let summary = replay::run(&opts)?;
    print_stdout(&format!("{summary}\n"))
}

/// Writes to stdout; a closed pipe (`catchd replay … | head`) is not an error.
fn print_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_match_zeek() {
        let cli = Cli::parse_from(["catchd", "replay", "x.pcap"]);
        let Command::Replay(a) = cli.command;
        assert_eq!(a.intervals, Intervals::default());
        assert_eq!(a.sweep_interval, crate::cnr::DEFAULT_SWEEP_INTERVAL);
        assert_eq!(a.plugin, "Debug-All");
    }

    #[test]
    fn bad_values_are_rejected_by_the_parser() {
        for args in [
            &["catchd", "replay", "x", "--intervals", "10m"][..],
            &["catchd", "replay", "x", "--drop", "10.0.0.0/8"],
            &["catchd", "replay", "x", "--drop", "nonsense"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?}");
        }
    }
}
