//! The command line: argument definitions and the mapping from them to library calls.
//!
//! This is the one place where flags turn into library options, and where errors turn
//! into exit codes: 0 on success, 2 for bad input (arguments, files, drops), 1 for
//! failures while running (such as a log that cannot be written).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{self, Config};
use crate::replay;

mod cmd;

pub use cmd::check_config::CheckConfigArgs;
pub use cmd::docs::{CompletionsArgs, ManPagesArgs};
pub use cmd::exabgp_bridge::ExabgpBridgeArgs;
pub use cmd::import_bhr::ImportBhrArgs;
pub use cmd::manager::ManagerArgs;
pub use cmd::proxy::{CurveKeypairArgs, ProxyArgs};
pub use cmd::replay::ReplayArgs;
pub use cmd::run::RunArgs;
pub use cmd::scan::ScanArgs;
pub use cmd::serve::ServeArgs;
pub use cmd::user::UserCommand;

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

    /// Run the daemon: live capture, catch-and-release on the BHR registry, the BHR and
    /// catch-and-release APIs, and the Zeek logs.
    Run(RunArgs),

    /// Serve the BHR HTTP API on the durable store (no capture, no catch-and-release).
    Serve(ServeArgs),

    /// Check a configuration file and print the settings it gives.
    CheckConfig(CheckConfigArgs),

    /// Manage the API's users and their tokens.
    #[command(subcommand)]
    User(UserCommand),

    /// Run a block manager: pull an ident's block and unblock queues from a BHR API
    /// (catchd's or the original's) and apply them with a firewall backend.
    Manager(Box<ManagerArgs>),

    /// Host the ZeroMQ XPUB/XSUB proxy that Zeek's manager runs in a cluster with the
    /// ZeroMQ backend, for deployments without a Zeek manager.
    Proxy(ProxyArgs),

    /// ExaBGP's API process for a `[[blocker]] backend = "exabgp"` of `catchd run`:
    /// relays ExaBGP's API to the blocker's socket (ExaBGP runs it; see README "BGP").
    ExabgpBridge(ExabgpBridgeArgs),

    /// Make a CURVE keypair for an encrypted bus (Zeek 8.2's ZeroMQ CURVE): one for the
    /// proxy (`--for server`) and one shared by every node (`--for client`).
    CurveKeypair(CurveKeypairArgs),

    /// Scan log files for failed logins (BlockHosts / fail2ban style) and block the
    /// addresses that cross a jail's threshold, through a running catchd.
    Scan(Box<ScanArgs>),

    /// Import an original BHR (bhr-site) PostgreSQL database: blocks, entries, whitelist,
    /// source blacklist, users and their tokens (run while catchd is stopped).
    ImportBhr(ImportBhrArgs),

    /// Print a shell completion script (bash: `catchd completions bash >
    /// /etc/bash_completion.d/catchd`).
    Completions(CompletionsArgs),

    /// Write the manual pages (catchd.1 and one per command) into a directory.
    #[command(hide = true)]
    ManPages(ManPagesArgs),
}

/// Where the configuration and the database are.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// The SQLite database [default: catchd-data/catchd.db, or server.db].
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,

    /// Configuration file (TOML).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl StoreArgs {
    /// The configuration, with `--db` applied.
    fn load(&self) -> anyhow::Result<Config> {
        let mut c = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        if let Some(db) = &self.db {
            c.server.db = crate::store::Database::from(db);
        }
        Ok(c)
    }
}

/// A mistake in what the user asked for (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct InputError(String);

/// Errors that are the user's input, as opposed to failures while running.
fn is_input_error(e: &anyhow::Error) -> bool {
    if e.is::<InputError>() || e.is::<config::Error>() {
        return true;
    }
    match e.downcast_ref::<crate::daemon::Error>() {
        Some(crate::daemon::Error::Capture(c)) => {
            return !matches!(c, crate::capture::LiveError::Read { .. });
        }
        // Not transient: a restart would fail the same way.
        Some(crate::daemon::Error::Capabilities(_)) => return true,
        _ => {}
    }
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
    // No timestamps: a terminal user does not need them, and the journal (or whatever
    // collects stderr) stamps lines itself.
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false);
    if crate::systemd::stderr_is_journal() {
        // The journal files each line at its `<N>` priority: no level word, no colours.
        let _ = fmt
            .with_ansi(false)
            .event_format(crate::systemd::JournalPriority(
                tracing_subscriber::fmt::format()
                    .without_time()
                    .with_target(false)
                    .with_level(false),
            ))
            .try_init();
    } else {
        let _ = fmt
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init();
    }
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
    // systemd and shells start processes with a soft limit of 1024 open files; the hard
    // limit is what the administrator allows.
    crate::httpd::raise_fd_limit();
    match cli.command {
        Command::Replay(args) => cmd::replay::replay_cmd(args),
        Command::Run(args) => cmd::run::run_cmd(&args),
        Command::Serve(args) => cmd::serve::serve_cmd(&args),
        Command::CheckConfig(args) => cmd::check_config::check_config_cmd(&args),
        Command::User(cmd) => cmd::user::user_cmd(cmd),
        Command::Manager(args) => cmd::manager::manager_cmd(*args),
        Command::Proxy(args) => cmd::proxy::proxy_cmd(&args),
        Command::CurveKeypair(args) => cmd::proxy::curve_keypair_cmd(&args),
        Command::ExabgpBridge(args) => cmd::exabgp_bridge::exabgp_bridge_cmd(&args),
        Command::Scan(args) => cmd::scan::scan_cmd(*args),
        Command::ImportBhr(args) => cmd::import_bhr::import_bhr_cmd(&args),
        Command::Completions(args) => cmd::docs::completions_cmd(&args),
        Command::ManPages(args) => cmd::docs::man_pages_cmd(&args),
    }
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
    use crate::cnr::Intervals;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_match_zeek() {
        let cli = Cli::parse_from(["catchd", "replay", "x.pcap"]);
        let Command::Replay(a) = cli.command else {
            panic!("not replay");
        };
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
