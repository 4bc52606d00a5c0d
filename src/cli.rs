//! The command line: argument definitions and the mapping from them to library calls.
//!
//! This is the one place where flags turn into library options, and where errors turn
//! into exit codes: 0 on success, 2 for bad input (arguments, files, drops), 1 for
//! failures while running (such as a log that cannot be written).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::auth::{self, Role, User};
use crate::cnr::Intervals;
use crate::config::{self, Config};
use crate::packet::Sightings;
use crate::replay::{self, DropSpec};
use crate::shutdown::Shutdown;
use crate::store::{Store, Write};
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

    /// Scan log files for failed logins (BlockHosts / fail2ban style) and block the
    /// addresses that cross a jail's threshold, through a running catchd.
    Scan(Box<ScanArgs>),

    /// Import an original BHR (bhr-site) PostgreSQL database: blocks, entries, whitelist,
    /// source blacklist, users and their tokens (run while catchd is stopped).
    ImportBhr(ImportBhrArgs),
}

/// `catchd import-bhr`.
#[derive(Debug, Args)]
pub struct ImportBhrArgs {
    /// The BHR database, e.g. `postgres://bhr:secret@db.example.org/bhr`.
    #[arg(value_name = "URL")]
    pub url: String,

    /// Read and check everything, write nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Where the configuration and database are.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `catchd scan`.
#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Log files, read start to end in order (`-`: standard input).
    #[arg(value_name = "FILE", required_unless_present_any = ["check", "print_rules"])]
    pub files: Vec<PathBuf>,

    /// A rule file (jails and rules) instead of the bundled one (see `--print-rules`).
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,

    /// Only these jails (repeatable, or comma-separated) [default: all].
    #[arg(long = "jail", value_name = "NAME", value_delimiter = ',')]
    pub jails: Vec<String>,

    /// Failures within --findtime that block (window and fail2ban modes).
    #[arg(long, value_name = "N")]
    pub maxretry: Option<u32>,

    /// The window for --maxretry (`10m`, `1h`, seconds).
    #[arg(long, value_name = "DUR")]
    pub findtime: Option<Interval>,

    /// Counting model: window (exact), fail2ban (fail2ban's rescaled count), blockhosts
    /// (count above --threshold, forgotten --age after the last failure).
    #[arg(long, value_name = "MODE")]
    pub mode: Option<String>,

    /// blockhosts mode: blocked when the count is greater than this [default: 7].
    #[arg(long, value_name = "N")]
    pub threshold: Option<u32>,

    /// blockhosts mode: forget an address this long after its last failure [default: 12h].
    #[arg(long, value_name = "DUR")]
    pub age: Option<Interval>,

    /// Never count these: addresses, CIDR networks or regexes, comma-separated.
    #[arg(long, value_name = "LIST")]
    pub allow: Option<String>,

    /// Block these on their first failure: addresses, CIDR networks or regexes.
    #[arg(long, value_name = "LIST")]
    pub deny: Option<String>,

    /// Ignore failures before this time (RFC 3339, epoch seconds, or a duration ago
    /// such as `2h`).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,

    /// Print what would be blocked; block nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// One JSON object per line (addr, rule, count, first, last, jail, denied).
    #[arg(long)]
    pub json: bool,

    /// Addresses tracked per jail at most; the oldest are evicted past it.
    #[arg(long, value_name = "N", default_value_t = crate::scan::MAX_ADDRESSES)]
    pub max_addresses: usize,

    /// Run every rule's test lines and exit.
    #[arg(long)]
    pub check: bool,

    /// Print the bundled rule file and exit.
    #[arg(long)]
    pub print_rules: bool,

    /// The catchd to block through (as BHR_HOST).
    #[arg(
        long,
        env = "BHR_HOST",
        value_name = "URL",
        default_value = "http://127.0.0.1:8000"
    )]
    pub server: String,

    /// An API token of a user with the blocker role or above (as BHR_TOKEN).
    #[arg(long, env = "BHR_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// `catchd proxy`.
#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// Where subscribers connect (nodes' XSUB) [Zeek's listen_xpub_endpoint].
    #[arg(long, value_name = "URL", default_value = crate::bus::DEFAULT_XPUB)]
    pub xpub: String,

    /// Where publishers connect (nodes' XPUB) [Zeek's listen_xsub_endpoint].
    #[arg(long, value_name = "URL", default_value = crate::bus::DEFAULT_XSUB)]
    pub xsub: String,
}

/// `catchd manager`.
#[derive(Debug, Args)]
pub struct ManagerArgs {
    /// The BHR server, as bhr-client's BHR_HOST (`http://127.0.0.1:8000`).
    #[arg(long, env = "BHR_HOST", value_name = "URL")]
    pub server: String,

    /// An API token of a user with the blocker role or above.
    #[arg(long, env = "BHR_TOKEN", hide_env_values = true)]
    pub token: String,

    /// The block manager's ident (its queues are `queue/<ident>` and `unblock_queue/<ident>`).
    #[arg(long, env = "BHR_IDENT")]
    pub ident: String,

    /// What enforces the blocks.
    #[arg(long, value_enum)]
    pub backend: crate::enforce::Kind,

    /// Print what each backend would run (and the files it would write); change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// The long poll of `queue/<ident>`.
    #[arg(long, default_value = "32s", value_parser = humantime::parse_duration)]
    pub poll_timeout: std::time::Duration,

    /// How often the unblock queue is drained.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub unblock_interval: std::time::Duration,

    /// How often the backend is reconciled with the expected blocks (0s: only at start).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub reconcile_interval: std::time::Duration,

    /// Serve Prometheus metrics on this address.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_listen: Option<SocketAddr>,

    /// nftables: the table of catchd's own (family inet).
    #[arg(long, default_value = "catchd")]
    pub nft_table: String,

    /// iptables/ipset: the chain of catchd's own.
    #[arg(long, default_value = "CATCHD")]
    pub chain: String,

    /// iptables/ipset: the built-in chains that jump to it.
    #[arg(long = "hook", value_delimiter = ',', default_value = "INPUT,FORWARD")]
    pub hooks: Vec<String>,

    /// iptables: the IPv4 program (e.g. iptables-legacy).
    #[arg(long, default_value = "iptables")]
    pub iptables: String,

    /// iptables: the IPv6 program (e.g. ip6tables-legacy).
    #[arg(long, default_value = "ip6tables")]
    pub ip6tables: String,

    /// ipset: the sets' name prefix (`<name>4` and `<name>6`).
    #[arg(long, default_value = "catchd")]
    pub ipset_name: String,

    /// route: the protocol number that marks catchd's blackhole routes.
    #[arg(long, default_value_t = 99)]
    pub route_proto: u8,

    /// hosts-allow: the file.
    #[arg(long, default_value = "/etc/hosts.allow")]
    pub hosts_allow: String,

    /// exec: the command per block, split on spaces into an argument vector (no shell);
    /// placeholders {cidr} {addr} {prefixlen} {family} {duration} {until} {why}.
    #[arg(long, value_name = "COMMAND")]
    pub exec_block: Option<String>,

    /// exec: the command per unblock; placeholders {cidr} {addr} {prefixlen} {family}.
    #[arg(long, value_name = "COMMAND")]
    pub exec_unblock: Option<String>,

    /// Longest a backend command may run before it is killed.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub command_timeout: std::time::Duration,
}

/// `catchd serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address and port to listen on [default: 127.0.0.1:8000, or server.listen].
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,

    /// Where the configuration and database are.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `catchd run`. Every flag overrides the configuration file.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Capture on this interface (repeatable) [default: capture.interfaces].
    #[arg(long = "interface", short = 'i', value_name = "IF")]
    pub interfaces: Vec<String>,

    /// Address and port of the HTTP APIs [default: 127.0.0.1:8000, or server.listen].
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,

    /// Directory of the Zeek logs [default: catchd-data/logs, or logs.dir].
    #[arg(long, value_name = "DIR")]
    pub log_dir: Option<PathBuf>,

    /// Catch-and-release block lengths, comma-separated [default: 10m,1h,24h,7d, or
    /// cnr.intervals].
    #[arg(long, value_name = "LIST")]
    pub intervals: Option<Intervals>,

    /// Write the logs in Zeek's JSON format.
    #[arg(long)]
    pub json_logs: bool,

    /// Join a ZeroMQ event bus as a Zeek cluster node does [default: bus.enabled].
    #[arg(long)]
    pub bus: bool,

    /// The proxy's XPUB, which this node's XSUB connects to [default:
    /// tcp://127.0.0.1:5555, or bus.xpub].
    #[arg(long, value_name = "URL")]
    pub bus_xpub: Option<String>,

    /// The proxy's XSUB, which this node's XPUB connects to [default:
    /// tcp://127.0.0.1:5556, or bus.xsub].
    #[arg(long, value_name = "URL")]
    pub bus_xsub: Option<String>,

    /// Host the proxy in this process, bound on --bus-xpub and --bus-xsub.
    #[arg(long)]
    pub bus_proxy: bool,

    /// `manager` holds the catch-and-release state; `sensor` only captures and reports
    /// to it [default: manager, or bus.role].
    #[arg(long, value_name = "ROLE")]
    pub role: Option<config::Role>,

    /// This node's id on the bus [default: catchd_ROLE_HOST_PID, or bus.node_id].
    #[arg(long, value_name = "ID")]
    pub node_id: Option<String>,

    /// Where the configuration and database are.
    #[command(flatten)]
    pub store: StoreArgs,
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
            c.server.db.clone_from(db);
        }
        Ok(c)
    }
}

/// `catchd check-config`.
#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// The file to check (the built-in defaults if none).
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,

    /// The file to check (the same as FILE).
    #[arg(long = "config", value_name = "FILE", conflicts_with = "file")]
    pub config: Option<PathBuf>,
}

/// `catchd user …`.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user and print its new API token.
    Add {
        /// User name (letters, digits and @.+-_; at most 150 characters).
        name: String,
        /// blocker (BHR Blockers), manager (BHR Block Managers), user (BHR Users) or admin.
        #[arg(long)]
        role: Role,
        /// Also set a password for HTTP Basic and the web pages: asked for on a terminal
        /// (without echo), else read from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
        #[allow(missing_docs)] // StoreArgs documents itself; a doc comment would confuse clap.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List the users.
    List {
        #[allow(missing_docs)] // StoreArgs documents itself; a doc comment would confuse clap.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Give a user a new API token (the old one stops working) and print it.
    Token {
        /// User name.
        name: String,
        #[allow(missing_docs)] // StoreArgs documents itself; a doc comment would confuse clap.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Set a user's password for HTTP Basic and the web pages: asked for twice without
    /// echo on a terminal, else read from the first line of stdin.
    Password {
        /// User name.
        name: String,
        #[allow(missing_docs)] // StoreArgs documents itself; a doc comment would confuse clap.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Remove a user (the blocks it made stay).
    Remove {
        /// User name.
        name: String,
        #[allow(missing_docs)] // StoreArgs documents itself; a doc comment would confuse clap.
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// A mistake in what the user asked for (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct InputError(String);

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
    if e.is::<InputError>() || e.is::<config::Error>() {
        return true;
    }
    if let Some(crate::daemon::Error::Capture(c)) = e.downcast_ref::<crate::daemon::Error>() {
        return !matches!(c, crate::capture::LiveError::Read { .. });
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
    // systemd and shells start processes with a soft limit of 1024 open files; the hard
    // limit is what the administrator allows.
    crate::httpd::raise_fd_limit();
    match cli.command {
        Command::Replay(args) => replay_cmd(args),
        Command::Run(args) => run_cmd(&args),
        Command::Serve(args) => serve_cmd(&args),
        Command::CheckConfig(args) => check_config_cmd(&args),
        Command::User(cmd) => user_cmd(cmd),
        Command::Manager(args) => manager_cmd(*args),
        Command::Proxy(args) => proxy_cmd(&args),
        Command::Scan(args) => scan_cmd(*args),
        Command::ImportBhr(args) => import_bhr_cmd(&args),
    }
}

fn import_bhr_cmd(a: &ImportBhrArgs) -> anyhow::Result<()> {
    use crate::bhr::import;
    if !a.url.starts_with("postgres://") && !a.url.starts_with("postgresql://") {
        return Err(InputError(format!(
            "{:?} is not a postgres:// URL (or the key=value form)",
            a.url
        ))
        .into());
    }
    let c = a.store.load()?;
    let rt = crate::server::runtime()?;
    let got = rt.block_on(import::read(&a.url))?;
    let _lock = crate::store::OwnerLock::acquire(&c.server.db)?;
    let store = Store::open(&c.server.db)?;
    let have = store.load_blocking()?;
    let writes = import::plan(&have, &got, crate::time::Time::now())
        .map_err(|e| InputError(e.to_string()))?;
    let tokens = got.users.iter().filter(|u| u.token_hash.is_some()).count();
    let summary = format!(
        "{} users ({tokens} with tokens), {} blocks, {} block entries, {} whitelist entries, \
         {} blacklisted sources",
        got.users.len(),
        got.blocks.len(),
        got.entries.len(),
        got.whitelist.len(),
        got.source_blacklist.len()
    );
    for s in &got.skipped_users {
        eprintln!("catchd: note: {s}");
    }
    if got.renumbered > 0 {
        eprintln!(
            "catchd: note: {} blocks and entries were renumbered to close gaps in BHR's ids",
            got.renumbered
        );
    }
    if a.dry_run {
        println!("would import {summary} into {}", c.server.db.display());
        return Ok(());
    }
    store.commit_blocking(writes)?;
    println!("imported {summary} into {}", c.server.db.display());
    Ok(())
}

fn scan_rules(a: &ScanArgs) -> anyhow::Result<crate::scan::rules::Rules> {
    use crate::scan::rules::{AddrList, Rules};
    use crate::scan::track::Mode;
    let mut rules = Rules::load(a.rules.as_deref(), &a.jails).map_err(|e| match e {
        crate::scan::rules::LoadError::Jails(e) => InputError(format!("--jail: {}", e.0)),
        e => InputError(format!("--rules {e}")),
    })?;
    let list = |flag: &str, v: &Option<String>| -> anyhow::Result<Vec<String>> {
        let items: Vec<String> = v
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(str::to_string)
            .collect();
        AddrList::parse(&items).map_err(|e| InputError(format!("{flag}: {e}")))?;
        Ok(items)
    };
    let allow = list("--allow", &a.allow)?;
    let deny = list("--deny", &a.deny)?;
    if a.maxretry == Some(0) {
        return Err(InputError("--maxretry: must be at least 1".into()).into());
    }
    for (flag, v) in [("--findtime", a.findtime), ("--age", a.age)] {
        if v.is_some_and(|i| i.as_micros() <= 0) {
            return Err(InputError(format!("{flag}: must be positive")).into());
        }
    }
    for j in &mut rules.jails {
        let (maxretry, findtime) = match j.mode {
            Mode::Window { maxretry, findtime } | Mode::Fail2ban { maxretry, findtime } => {
                (maxretry, findtime)
            }
            Mode::BlockHosts { .. } => (5, Interval::from_secs(600)),
        };
        let maxretry = a.maxretry.unwrap_or(maxretry);
        let findtime = a.findtime.unwrap_or(findtime);
        let mode = match a.mode.as_deref() {
            None => match j.mode {
                Mode::BlockHosts { threshold, age } => Mode::BlockHosts {
                    threshold: a.threshold.unwrap_or(threshold),
                    age: a.age.unwrap_or(age),
                },
                Mode::Window { .. } => Mode::Window { maxretry, findtime },
                Mode::Fail2ban { .. } => Mode::Fail2ban { maxretry, findtime },
            },
            Some("window") => Mode::Window { maxretry, findtime },
            Some("fail2ban") => Mode::Fail2ban { maxretry, findtime },
            Some("blockhosts") => Mode::BlockHosts {
                threshold: a.threshold.unwrap_or(7),
                age: a.age.unwrap_or(Interval::from_secs(12 * 3600)),
            },
            Some(other) => {
                return Err(InputError(format!(
                    "--mode: `{other}` is not window, fail2ban or blockhosts"
                ))
                .into());
            }
        };
        j.mode = mode;
        let mut al = j.allow.entries.clone();
        al.extend(allow.iter().cloned());
        j.allow = AddrList::parse(&al).map_err(InputError)?;
        let mut dl = j.deny.entries.clone();
        dl.extend(deny.iter().cloned());
        j.deny = AddrList::parse(&dl).map_err(InputError)?;
    }
    Ok(rules)
}

fn scan_cmd(a: ScanArgs) -> anyhow::Result<()> {
    use std::io::Write as _;
    if a.print_rules {
        print!("{}", crate::scan::rules::BUNDLED);
        return Ok(());
    }
    let rules = scan_rules(&a)?;
    if a.check {
        let bad = rules.self_test();
        let tested: usize = rules.rules.iter().map(|r| r.tests.len()).sum();
        for b in &bad {
            eprintln!("{b}");
        }
        if !bad.is_empty() {
            return Err(InputError(format!("{} of {tested} test lines failed", bad.len())).into());
        }
        println!(
            "{} rules in {} jails: all {tested} test lines pass",
            rules.rules.len(),
            rules.jails.len()
        );
        return Ok(());
    }
    let since = match &a.since {
        None => None,
        Some(s) => Some(match s.parse::<Interval>() {
            Ok(ago) => crate::time::Time::now() - ago,
            Err(_) => s
                .parse::<crate::time::Time>()
                .map_err(|e| InputError(format!("--since: {e}")))?,
        }),
    };
    let token = match (&a.token, a.dry_run) {
        (_, true) => None,
        (Some(t), false) => Some(t.clone()),
        (None, false) => {
            return Err(InputError(format!(
                "blocking needs --token (or BHR_TOKEN) for the catchd at {}; or use --dry-run",
                a.server
            ))
            .into());
        }
    };
    let mut scanner = crate::scan::Scanner::new(rules, a.max_addresses.max(1), since)
        .map_err(|e| InputError(e.0))?;
    let started = std::time::Instant::now();
    let mut found = Vec::new();
    // One line per address: later crossings of a blocked address add nothing.
    let mut seen = std::collections::HashSet::new();
    let stdout = std::io::stdout();
    let read = crate::scan::scan_files(&mut scanner, &a.files, |d| {
        if !seen.insert(d.addr) {
            return;
        }
        let mut out = stdout.lock();
        let (first, last) = (
            crate::bhr::api::Iso(d.first).to_string(),
            crate::bhr::api::Iso(d.last).to_string(),
        );
        let _ = if a.json {
            writeln!(
                out,
                "{}",
                serde_json::json!({
                    "addr": d.addr.to_string(),
                    "rule": d.rule,
                    "count": d.count,
                    "first": first,
                    "last": last,
                    "jail": d.jail,
                    "denied": d.denied,
                })
            )
        } else {
            writeln!(
                out,
                "{} {} {} jail={} first={first} last={last}{}",
                d.addr,
                d.rule,
                d.count,
                d.jail,
                if d.denied { " denied" } else { "" }
            )
        };
        found.push(d);
    })
    .map_err(InputError)?;
    let st = scanner.stats();
    let mut failed = 0usize;
    if let Some(token) = token {
        let remote = crate::manager::remote::Remote::new(&a.server, &token, "")
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let rt = crate::server::runtime()?;
        rt.block_on(async {
            for d in &found {
                let source = d.source();
                let r = match d.action {
                    crate::scan::rules::Action::CatchRelease => {
                        remote.cr_drop(d.addr, &source).await
                    }
                    crate::scan::rules::Action::Block(len) => {
                        remote
                            .block(
                                ipnet::IpNet::from(d.addr),
                                &source,
                                &d.why(),
                                len.as_micros() / 1_000_000,
                            )
                            .await
                    }
                };
                if let Err(e) = r {
                    failed += 1;
                    eprintln!("catchd: {}: not blocked: {e}", d.addr);
                }
            }
        });
    }
    eprintln!(
        "catchd: {} lines, {} matched, {} addresses {} ({} allowed, {} evicted, {} lines cut) in {:.2} s",
        read.lines,
        st.matched,
        found.len(),
        if a.dry_run {
            "would be blocked"
        } else {
            "blocked"
        },
        st.allowed,
        st.evictions,
        st.long_lines + read.cut,
        started.elapsed().as_secs_f64()
    );
    if failed > 0 {
        anyhow::bail!("{failed} of {} blocks failed", found.len());
    }
    Ok(())
}

fn proxy_cmd(a: &ProxyArgs) -> anyhow::Result<()> {
    for (flag, v) in [("--xpub", &a.xpub), ("--xsub", &a.xsub)] {
        config::check_endpoint(v).map_err(|m| InputError(format!("{flag}: {m}")))?;
    }
    let (_trigger, shutdown) = Shutdown::on_signals()?;
    let proxy = crate::bus::proxy::start(&a.xpub, &a.xsub)?;
    let rt = crate::server::runtime()?;
    rt.block_on(shutdown.wait());
    tracing::info!("Stopping.");
    proxy.stop();
    Ok(())
}

fn manager_cmd(a: ManagerArgs) -> anyhow::Result<()> {
    let words = |s: Option<String>| -> Vec<String> {
        s.map(|s| s.split_whitespace().map(String::from).collect())
            .unwrap_or_default()
    };
    let options = crate::enforce::Options {
        nft_table: a.nft_table,
        chain: a.chain,
        hooks: a.hooks,
        iptables: a.iptables,
        ip6tables: a.ip6tables,
        ipset_name: a.ipset_name,
        route_proto: a.route_proto,
        hosts_allow: a.hosts_allow,
        exec_block: words(a.exec_block),
        exec_unblock: words(a.exec_unblock),
        command_timeout: a.command_timeout,
    };
    if let Err(msg) = options.check(a.backend) {
        return Err(InputError(format!("--backend {}: {msg}", a.backend.name())).into());
    }
    if !a.server.starts_with("http://") && !a.server.starts_with("https://") {
        return Err(InputError(format!(
            "--server: {:?} is not an http:// or https:// URL",
            a.server
        ))
        .into());
    }
    let (_trigger, shutdown) = Shutdown::on_signals()?;
    crate::manager::run_standalone(
        crate::manager::Standalone {
            server: a.server,
            token: a.token,
            ident: a.ident,
            kind: a.backend,
            options,
            dry_run: a.dry_run,
            settings: crate::manager::Settings {
                poll_timeout: a.poll_timeout,
                unblock_interval: a.unblock_interval,
                reconcile_interval: a.reconcile_interval,
            },
            metrics: a.metrics_listen,
        },
        shutdown,
    )?;
    Ok(())
}

fn run_cmd(a: &RunArgs) -> anyhow::Result<()> {
    let mut c = a.store.load()?;
    if !a.interfaces.is_empty() {
        for name in &a.interfaces {
            config::check_interface_name(name)
                .map_err(|msg| InputError(format!("--interface: {msg}")))?;
        }
        c.capture.interfaces.clone_from(&a.interfaces);
    }
    if let Some(l) = a.listen {
        c.server.listen = l;
    }
    if let Some(d) = &a.log_dir {
        c.logs.dir.clone_from(d);
    }
    if let Some(iv) = &a.intervals {
        c.cnr.intervals = iv.clone();
    }
    if a.json_logs {
        c.logs.json = true;
    }
    if a.bus || a.bus_proxy || a.role.is_some() {
        c.bus.enabled = true;
    }
    for (flag, v, slot) in [
        ("--bus-xpub", &a.bus_xpub, &mut c.bus.xpub),
        ("--bus-xsub", &a.bus_xsub, &mut c.bus.xsub),
    ] {
        if let Some(v) = v {
            config::check_endpoint(v).map_err(|m| InputError(format!("{flag}: {m}")))?;
            slot.clone_from(v);
        }
    }
    if a.bus_proxy {
        c.bus.proxy = true;
    }
    if let Some(r) = a.role {
        c.bus.role = r;
    }
    if let Some(id) = &a.node_id {
        if id.is_empty() || id.contains(char::is_whitespace) {
            return Err(InputError("--node-id: must be a word without spaces".into()).into());
        }
        c.bus.node_id = Some(id.clone());
    }
    let (_trigger, shutdown) = Shutdown::on_signals()?;
    crate::daemon::run(&c, crate::bhr::api::system_clock(), shutdown, |_| ())?;
    Ok(())
}

fn serve_cmd(a: &ServeArgs) -> anyhow::Result<()> {
    let mut c = a.store.load()?;
    if let Some(l) = a.listen {
        c.server.listen = l;
    }
    let (_trigger, shutdown) = Shutdown::on_signals()?;
    crate::server::run(&c, crate::bhr::api::system_clock(), shutdown, |_| ())?;
    Ok(())
}

fn check_config_cmd(a: &CheckConfigArgs) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    let file = a.file.as_ref().or(a.config.as_ref());
    let c = match file {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let list = |v: &[String]| format!("{v:?}");
    let dur = |d: Option<std::time::Duration>| {
        d.map_or_else(
            || "0s".to_string(),
            |d| humantime::format_duration(d).to_string(),
        )
    };
    let (b, l, cap, cn, lg) = (&c.bhr, &c.server.limits, &c.capture, &c.cnr, &c.logs);
    let nets: Vec<String> = b.local_networks.iter().map(ToString::to_string).collect();
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{} is valid.",
        file.map_or_else(
            || "The built-in configuration".to_string(),
            |p| p.display().to_string()
        )
    );
    let _ = write!(
        t,
        "[server]\nlisten = \"{}\"\ndb = \"{}\"\ncluster = {}\nlease_ttl = \"{}\"\nmax_body = {}\n\
         request_timeout = \"{}\"\nmax_long_poll = \"{}\"\nmax_concurrent = {}\n\
         max_long_polls_per_user = {}\nheader_timeout = \"{}\"\nidle_timeout = \"{}\"\n\
         write_timeout = \"{}\"\nmax_connections = {}  # in force now: {}\n\
         shutdown_grace = \"{}\"\nsign_in_failures = {}\nsign_in_failures_per_user = {}\n\
         sign_in_window = \"{}\"\n",
        c.server.listen,
        crate::store::redact(&c.server.db.display().to_string()),
        c.server.cluster,
        humantime::format_duration(c.server.lease_ttl),
        l.max_body,
        humantime::format_duration(l.request_timeout),
        humantime::format_duration(l.max_long_poll),
        l.max_concurrent,
        l.max_long_polls_per_user,
        humantime::format_duration(l.connections.header_timeout),
        humantime::format_duration(l.connections.idle_timeout),
        humantime::format_duration(l.connections.write_timeout),
        l.connections.max_connections,
        crate::httpd::connection_cap(l.connections.max_connections),
        humantime::format_duration(l.connections.shutdown_grace),
        l.sign_in.per_address,
        l.sign_in.per_user,
        humantime::format_duration(l.sign_in.window),
    );
    let _ = write!(
        t,
        "[capture]\ninterfaces = {}\nsnaplen = {}\npromisc = {}\nbuffer_size = {}\nfilter = {:?}\n\
         any_packet = {}\nqueue = {}\n",
        list(&cap.interfaces),
        cap.snaplen,
        cap.promisc,
        cap.buffer_size,
        cap.filter.clone().unwrap_or_default(),
        cap.any_packet,
        cap.queue,
    );
    let _ = write!(
        t,
        "[cnr]\nintervals = \"{}\"\nsweep_interval = \"{}\"\nwarn_blocked = {}\nsource = {:?}\n\
         why = {:?}\nblock_managers = {}\nhand_over_sources = {}\n",
        cn.intervals,
        humantime::format_duration(std::time::Duration::from_micros(
            cn.sweep_interval.as_micros().unsigned_abs()
        )),
        cn.warn_blocked,
        cn.source,
        cn.why,
        list(&cn.block_managers),
        list(&cn.hand_over_sources),
    );
    let _ = write!(
        t,
        "[logs]\ndir = \"{}\"\njson = {}\nrotate_interval = \"{}\"\nrotate_size = {}\n",
        lg.dir.display(),
        lg.json,
        dur(lg.rotate_interval),
        lg.rotate_size.unwrap_or(0),
    );
    let _ = write!(
        t,
        "[daemon]\nuser = {:?}\n",
        c.daemon.user.clone().unwrap_or_default()
    );
    let bus = &c.bus;
    let _ = write!(
        t,
        "[bus]\nenabled = {}\nxpub = {:?}\nxsub = {:?}\nproxy = {}\nrole = \"{}\"\nnode_id = {:?}\n\
         format = \"{}\"\nnetcontrol = {}\nnetcontrol_topic = {:?}\nnetcontrol_source = {:?}\n\
         notify_interval = \"{}\"\nqueue = {}\n",
        bus.enabled,
        bus.xpub,
        bus.xsub,
        bus.proxy,
        match bus.role {
            config::Role::Manager => "manager",
            config::Role::Sensor => "sensor",
        },
        bus.node_id.clone().unwrap_or_default(),
        if bus.json {
            "broker-json-v1"
        } else {
            "broker-bin-v1"
        },
        bus.netcontrol,
        bus.netcontrol_topic,
        bus.netcontrol_source,
        humantime::format_duration(bus.notify_interval),
        bus.queue,
    );
    for b in &c.blockers {
        let o = &b.options;
        let _ = write!(
            t,
            "[[blocker]]\nident = {:?}\nbackend = {:?}\ndry_run = {}\npoll_timeout = \"{}\"\n\
             unblock_interval = \"{}\"\nreconcile_interval = \"{}\"\ncommand_timeout = \"{}\"\n\
             nft_table = {:?}\nchain = {:?}\nhooks = {:?}\niptables = {:?}\nip6tables = {:?}\n\
             ipset_name = {:?}\nroute_proto = {}\nhosts_allow = {:?}\nexec_block = {:?}\n\
             exec_unblock = {:?}\n",
            b.ident,
            b.kind.name(),
            b.dry_run,
            dur(Some(b.settings.poll_timeout)),
            dur(Some(b.settings.unblock_interval)),
            dur(Some(b.settings.reconcile_interval)),
            dur(Some(o.command_timeout)),
            o.nft_table,
            o.chain,
            o.hooks,
            o.iptables,
            o.ip6tables,
            o.ipset_name,
            o.route_proto,
            o.hosts_allow,
            o.exec_block,
            o.exec_unblock,
        );
    }
    let _ = write!(
        t,
        "[bhr]\ntime_window_factor = {:?}\nminimum_time_window = {:?}\n\
         penalty_time_multiplier = {:?}\nreturn_to_base_multiplier = {:?}\n\
         return_to_base_factor = {:?}\nminimum_prefixlen = {}\nminimum_prefixlen_v6 = {}\n\
         local_networks = {:?}\nunauthenticated_limited_query = {}\nnever_block = {:?}\n\
         never_block_host = {}\nskip_whitelist_roles = {:?}\n",
        b.time_window_factor,
        b.minimum_time_window,
        b.penalty_time_multiplier,
        b.return_to_base_multiplier,
        b.return_to_base_factor,
        b.minimum_prefixlen,
        b.minimum_prefixlen_v6,
        nets,
        b.unauthenticated_limited_query,
        b.never_block
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        b.never_block_host,
        b.skip_whitelist_roles
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>(),
    );
    print_stdout(&t)
}

/// Django's user name rule: letters, digits and `@.+-_`, 1 to 150 characters.
fn check_user_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.chars().count() <= 150
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || "@.+-_".contains(c));
    if ok {
        Ok(())
    } else {
        Err(InputError(format!(
            "`{name}` is not a valid user name (letters, digits and @.+-_, at most 150)"
        ))
        .into())
    }
}

fn open_store(a: &StoreArgs) -> anyhow::Result<Store> {
    let c = a.load()?;
    Ok(Store::open_for_users(&c.server.db)?)
}

fn find_user(store: &Store, name: &str, db: &Path) -> anyhow::Result<User> {
    store
        .user_by_name_blocking(name)?
        .ok_or_else(|| InputError(format!("no user `{name}` in {}", db.display())).into())
}

/// A password: on a terminal, asked for twice without echo; otherwise the first line of
/// stdin, without its line ending.
fn read_password(name: &str) -> anyhow::Result<String> {
    use std::io::IsTerminal;
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut line = String::new();
        stdin.read_line(&mut line)?;
        let pw = line.trim_end_matches(['\r', '\n']).to_string();
        if pw.is_empty() {
            return Err(InputError("no password on stdin".into()).into());
        }
        return Ok(pw);
    }
    let first = prompt_hidden(&format!("Password for {name}: "))?;
    if first.is_empty() {
        return Err(InputError("no password given".into()).into());
    }
    let again = prompt_hidden("Again: ")?;
    if again != first {
        return Err(InputError("the passwords differ".into()).into());
    }
    Ok(first)
}

/// Asks on stderr and reads a line from the terminal with echo off (restored after, also
/// when reading fails).
fn prompt_hidden(prompt: &str) -> anyhow::Result<String> {
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    use std::io::Write as _;
    let stdin = std::io::stdin();
    let saved = tcgetattr(&stdin)?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    quiet.local_flags.insert(LocalFlags::ECHONL);
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    tcsetattr(&stdin, SetArg::TCSAFLUSH, &quiet)?;
    let mut line = String::new();
    let r = stdin.read_line(&mut line);
    tcsetattr(&stdin, SetArg::TCSAFLUSH, &saved)?;
    r?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

fn user_cmd(cmd: UserCommand) -> anyhow::Result<()> {
    match cmd {
        UserCommand::Add {
            name,
            role,
            password_stdin,
            store: args,
        } => {
            check_user_name(&name)?;
            let password_hash = if password_stdin {
                Some(auth::hash_password(&read_password(&name)?))
            } else {
                None
            };
            let store = open_store(&args)?;
            if store.user_by_name_blocking(&name)?.is_some() {
                return Err(InputError(format!(
                    "user `{name}` exists (use `catchd user token {name}` for a new token)"
                ))
                .into());
            }
            let token = auth::new_token();
            let user = User {
                id: store.next_user_id_blocking()?,
                name,
                role,
                token_hash: Some(auth::hash_token(&token)),
                password_hash,
            };
            store.commit_blocking(vec![Write::User(user)])?;
            print_stdout(&format!("{token}\n"))
        }
        UserCommand::List { store: args } => {
            let store = open_store(&args)?;
            let users = store.users_blocking()?;
            let width = users.iter().map(|u| u.name.len()).max().unwrap_or(4).max(4);
            let mut out = format!("{:<width$}  {:<7}  TOKEN  PASSWORD\n", "NAME", "ROLE");
            for u in users {
                out += &format!(
                    "{:<width$}  {:<7}  {:<5}  {}\n",
                    u.name,
                    u.role.as_str(),
                    if u.token_hash.is_some() { "yes" } else { "no" },
                    if u.password_hash.is_some() {
                        "yes"
                    } else {
                        "no"
                    },
                );
            }
            print_stdout(&out)
        }
        UserCommand::Token { name, store: args } => {
            let c = args.load()?;
            let store = Store::open_for_users(&c.server.db)?;
            let mut user = find_user(&store, &name, &c.server.db)?;
            let token = auth::new_token();
            user.token_hash = Some(auth::hash_token(&token));
            store.commit_blocking(vec![Write::User(user)])?;
            print_stdout(&format!("{token}\n"))
        }
        UserCommand::Password { name, store: args } => {
            let c = args.load()?;
            let store = Store::open_for_users(&c.server.db)?;
            let mut user = find_user(&store, &name, &c.server.db)?;
            user.password_hash = Some(auth::hash_password(&read_password(&name)?));
            store.commit_blocking(vec![Write::User(user)])?;
            Ok(())
        }
        UserCommand::Remove { name, store: args } => {
            let c = args.load()?;
            let store = Store::open_for_users(&c.server.db)?;
            let user = find_user(&store, &name, &c.server.db)?;
            store.commit_blocking(vec![Write::UserDeleted(user.id)])?;
            Ok(())
        }
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
