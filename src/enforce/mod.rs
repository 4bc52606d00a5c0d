//! Enforcement: the backends that make blocks real on this host or router (nftables,
//! iptables, ipset, `ip route` blackholes, hosts.allow, a configured command, or standard
//! output), driven by a block manager (`catchd manager`, or the daemon's blockers).
//!
//! Every backend is idempotent (adding a rule that is there, or removing one that is not,
//! succeeds), handles IPv4 and IPv6 networks of any prefix length, and applies a batch in
//! one operation where its tool allows (one `nft -f -` transaction, one `ipset restore`).
//! Backends that hold state can list it, so a manager can reconcile what the kernel holds
//! with what the registry expects. All commands go through [`command::Runner`].

pub(crate) mod command;
pub mod exabgp;
mod exec;
mod hosts_allow;
mod iptables;
mod nft;
mod route;

use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::time::Time;

pub use command::{CommandError, Runner};
pub use hosts_allow::{MARKER, render as render_hosts_allow};

/// A block to put in place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// What to block.
    pub cidr: IpNet,
    /// When the block ends (`None`: indefinite). Backends with timeouts expire it then
    /// even if catchd is not running.
    pub until: Option<Time>,
    /// Why (for the exec backend's placeholders and for logs).
    pub why: String,
}

/// A rule a backend holds now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    /// The network.
    pub cidr: IpNet,
    /// When the backend itself will drop it, if it has a timeout.
    pub until: Option<Time>,
}

/// Why a backend could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A command failed, timed out or could not start.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// ExaBGP is not there, went away, or refused a line; or a network is outside the
    /// prefix rules for announcements.
    #[error("{0}")]
    Exabgp(String),
    /// A tool's output could not be understood.
    #[error("cannot read the output of {tool}: {detail}")]
    Output {
        /// The tool.
        tool: &'static str,
        /// What was wrong.
        detail: String,
    },
}

/// The kinds of backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// An nftables table of catchd's own, with v4/v6 sets whose elements time out.
    Nftables,
    /// A chain `CATCHD` (iptables and ip6tables) hooked into INPUT and FORWARD.
    Iptables,
    /// ipset sets with timeouts, matched by one iptables rule per family and hook.
    Ipset,
    /// `ip route` blackhole routes.
    Route,
    /// `ALL: <addr> : deny` lines between BlockHosts' markers in hosts.allow.
    HostsAllow,
    /// A configured command per block and per unblock.
    Exec,
    /// Prints `<ctime> block <cidr>` / `<ctime> unblock <cidr>`.
    Stdout,
    /// BGP black-holing through ExaBGP's API: announces each blocked network with a
    /// black-hole community (standard input and output for `catchd manager`, which ExaBGP
    /// runs as its process; a Unix socket for `catchd exabgp-bridge` inside `catchd run`).
    Exabgp,
}

impl Kind {
    /// The name used on the command line and in the config.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Nftables => "nftables",
            Kind::Iptables => "iptables",
            Kind::Ipset => "ipset",
            Kind::Route => "route",
            Kind::HostsAllow => "hosts-allow",
            Kind::Exec => "exec",
            Kind::Stdout => "stdout",
            Kind::Exabgp => "exabgp",
        }
    }

    /// Whether its commands change the kernel's firewall or routes (and so need
    /// `CAP_NET_ADMIN`); `exec` runs whatever it is given and is not guessed at.
    pub fn needs_net_admin(self) -> bool {
        matches!(
            self,
            Kind::Nftables | Kind::Iptables | Kind::Ipset | Kind::Route
        )
    }
}

/// A backend's settings (a `[[blocker]]` section, or `catchd manager`'s flags).
#[derive(Clone, Debug)]
pub struct Options {
    /// nftables: the table (family `inet`).
    pub nft_table: String,
    /// iptables and ipset: the chain of catchd's own.
    pub chain: String,
    /// iptables and ipset: the built-in chains that jump to it.
    pub hooks: Vec<String>,
    /// iptables: the programs (for example `iptables-legacy`, `ip6tables-legacy`).
    pub iptables: String,
    /// See `iptables`.
    pub ip6tables: String,
    /// ipset: the name prefix of the sets (`<name>4`, `<name>6`).
    pub ipset_name: String,
    /// route: the routing protocol number that marks catchd's routes.
    pub route_proto: u8,
    /// hosts.allow: the file.
    pub hosts_allow: String,
    /// exec: the command per block, as an argument vector with placeholders `{cidr}`,
    /// `{addr}`, `{prefixlen}`, `{family}` (`inet`/`inet6`), `{duration}` (seconds left,
    /// 0 for indefinite), `{until}` (epoch seconds, 0 for indefinite) and `{why}`.
    pub exec_block: Vec<String>,
    /// exec: the command per unblock (placeholders `{cidr}`, `{addr}`, `{prefixlen}`,
    /// `{family}`).
    pub exec_unblock: Vec<String>,
    /// Longest a command may run before it is killed.
    pub command_timeout: Duration,
    /// exabgp: what goes into each announcement.
    pub announce: exabgp::Announce,
    /// exabgp inside `catchd run`: the socket `catchd exabgp-bridge` connects to.
    pub exabgp_socket: String,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            nft_table: "catchd".into(),
            chain: "CATCHD".into(),
            hooks: vec!["INPUT".into(), "FORWARD".into()],
            iptables: "iptables".into(),
            ip6tables: "ip6tables".into(),
            ipset_name: "catchd".into(),
            route_proto: 99,
            hosts_allow: "/etc/hosts.allow".into(),
            exec_block: Vec::new(),
            exec_unblock: Vec::new(),
            command_timeout: Duration::from_secs(10),
            announce: exabgp::Announce::default(),
            exabgp_socket: exabgp::DEFAULT_SOCKET.into(),
        }
    }
}

impl Options {
    /// Checks what the kind needs, naming the option at fault.
    ///
    /// # Errors
    /// A description of the first problem.
    pub fn check(&self, kind: Kind) -> Result<(), String> {
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 28
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        match kind {
            Kind::Nftables if !name_ok(&self.nft_table) => {
                Err("nft_table: letters, digits, '_' and '-' only".into())
            }
            Kind::Iptables | Kind::Ipset if !name_ok(&self.chain) => {
                Err("chain: letters, digits, '_' and '-' only, at most 28".into())
            }
            Kind::Ipset if !name_ok(&self.ipset_name) => {
                Err("ipset_name: letters, digits, '_' and '-' only".into())
            }
            Kind::Route if self.route_proto == 0 => Err("route_proto: must be 1-255".into()),
            Kind::HostsAllow if self.hosts_allow.is_empty() => {
                Err("hosts_allow: a file is needed".into())
            }
            Kind::Exec if self.exec_block.is_empty() || self.exec_unblock.is_empty() => {
                Err("exec_block and exec_unblock: both commands are needed".into())
            }
            Kind::Exabgp => self.announce.check(),
            _ if self.command_timeout.is_zero() => Err("command_timeout: must be above 0".into()),
            _ => Ok(()),
        }
    }
}

/// One backend, ready to use.
#[derive(Debug)]
pub enum Enforcer {
    /// See [`Kind::Nftables`].
    Nftables(nft::Nft),
    /// See [`Kind::Iptables`] and [`Kind::Ipset`].
    Iptables(iptables::Iptables),
    /// See [`Kind::Route`].
    Route(route::Route),
    /// See [`Kind::HostsAllow`].
    HostsAllow(hosts_allow::HostsAllow),
    /// See [`Kind::Exec`].
    Exec(exec::Exec),
    /// See [`Kind::Stdout`].
    Stdout(Runner),
    /// See [`Kind::Exabgp`].
    Exabgp(exabgp::ExaBgp),
}

impl Enforcer {
    /// A backend of `kind` (nothing is changed before [`Enforcer::setup`]).
    ///
    /// # Errors
    /// The options do not suit the kind.
    pub fn new(kind: Kind, o: &Options, runner: Runner) -> Result<Enforcer, String> {
        o.check(kind)?;
        Ok(match kind {
            Kind::Nftables => Enforcer::Nftables(nft::Nft::new(&o.nft_table, runner)),
            Kind::Iptables => Enforcer::Iptables(iptables::Iptables::new(o, None, runner)),
            Kind::Ipset => {
                Enforcer::Iptables(iptables::Iptables::new(o, Some(&o.ipset_name), runner))
            }
            Kind::Route => Enforcer::Route(route::Route::new(o.route_proto, runner)),
            Kind::HostsAllow => Enforcer::HostsAllow(hosts_allow::HostsAllow::new(
                o.hosts_allow.clone().into(),
                runner,
            )),
            Kind::Exec => Enforcer::Exec(exec::Exec::new(
                o.exec_block.clone(),
                o.exec_unblock.clone(),
                runner,
            )),
            Kind::Stdout => Enforcer::Stdout(runner),
            // `catchd manager`: ExaBGP's process, on standard input and output. Inside
            // `catchd run`, [`Enforcer::exabgp_socket`] makes the socket link instead.
            Kind::Exabgp => {
                Enforcer::Exabgp(exabgp::ExaBgp::stdio(o.announce.clone(), runner.dry_run()))
            }
        })
    }

    /// An ExaBGP backend listening on `o.exabgp_socket` for `catchd exabgp-bridge`.
    ///
    /// # Errors
    /// The options are wrong or the socket cannot be made.
    pub fn exabgp_socket(o: &Options, dry_run: bool) -> Result<Enforcer, String> {
        o.check(Kind::Exabgp)?;
        exabgp::ExaBgp::socket(o.announce.clone(), o.exabgp_socket.clone().into(), dry_run)
            .map(Enforcer::Exabgp)
            .map_err(|m| format!("exabgp_socket: {m}"))
    }

    /// Whether the backend started a new session with its peer since the last call (a
    /// restarted ExaBGP holds nothing): the manager then reconciles at once.
    pub fn take_new_session(&mut self) -> bool {
        match self {
            Enforcer::Exabgp(x) => x.take_new_session(),
            _ => false,
        }
    }

    /// Resolves when the backend's peer opened a new session while the manager waits for
    /// work (a bridge from a restarted ExaBGP); never for other backends.
    pub async fn new_session(&mut self) {
        match self {
            Enforcer::Exabgp(x) => x.new_connection().await,
            _ => std::future::pending().await,
        }
    }

    /// Turns true when the backend's peer has gone for good (ExaBGP closed the manager's
    /// standard input); `None` for backends without one.
    pub fn closed(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
        match self {
            Enforcer::Exabgp(x) => Some(x.closed()),
            _ => None,
        }
    }

    /// The kind's name.
    pub fn name(&self) -> &'static str {
        match self {
            Enforcer::Nftables(_) => "nftables",
            Enforcer::Iptables(b) if b.uses_ipset() => "ipset",
            Enforcer::Iptables(_) => "iptables",
            Enforcer::Route(_) => "route",
            Enforcer::HostsAllow(_) => "hosts-allow",
            Enforcer::Exec(_) => "exec",
            Enforcer::Stdout(_) => "stdout",
            Enforcer::Exabgp(_) => "exabgp",
        }
    }

    /// Creates what the backend needs (table, sets, chains and the jumps to them, the
    /// markers); idempotent.
    ///
    /// # Errors
    /// A command or the file failed.
    pub async fn setup(&mut self) -> Result<(), Error> {
        match self {
            Enforcer::Nftables(b) => b.setup().await,
            Enforcer::Iptables(b) => b.setup().await,
            Enforcer::Route(_) | Enforcer::Exec(_) | Enforcer::Stdout(_) | Enforcer::Exabgp(_) => {
                Ok(())
            }
            Enforcer::HostsAllow(b) => b.setup(),
        }
    }

    /// The rules the backend holds now, or `None` for backends that cannot tell (exec,
    /// stdout: a manager then installs every expected block on start and removes nothing).
    ///
    /// # Errors
    /// A command or the file failed, or its output was not understood.
    pub async fn list(&mut self, now: Time) -> Result<Option<Vec<Held>>, Error> {
        match self {
            Enforcer::Nftables(b) => b.list(now).await.map(Some),
            Enforcer::Iptables(b) => b.list(now).await.map(Some),
            Enforcer::Route(b) => b.list().await.map(Some),
            Enforcer::HostsAllow(b) => b.list().map(Some),
            // In a dry run nothing was announced: list nothing, so every expected block
            // is shown once.
            Enforcer::Exabgp(b) => b.list().await.map(Some),
            Enforcer::Exec(_) | Enforcer::Stdout(_) => Ok(None),
        }
    }

    /// Puts `add` in place (a rule already there gets the new end time where the backend
    /// has timeouts) and takes `remove` away, at `now`.
    ///
    /// # Errors
    /// The batch failed. Transactional backends (nftables, ipset, hosts.allow) then
    /// changed nothing; the others may have applied part of it (applying again is safe).
    pub async fn apply(&mut self, add: &[Rule], remove: &[IpNet], now: Time) -> Result<(), Error> {
        if add.is_empty() && remove.is_empty() {
            return Ok(());
        }
        match self {
            Enforcer::Nftables(b) => b.apply(add, remove, now).await,
            Enforcer::Iptables(b) => b.apply(add, remove, now).await,
            Enforcer::Route(b) => b.apply(add, remove).await,
            Enforcer::HostsAllow(b) => b.apply(add, remove),
            Enforcer::Exec(b) => b.apply(add, remove, now).await,
            Enforcer::Stdout(_) => {
                stdout_lines(add, remove);
                Ok(())
            }
            Enforcer::Exabgp(b) => b.apply(add, remove).await,
        }
    }
}

/// The original `DummyStdoutBlocker`'s lines.
fn stdout_lines(add: &[Rule], remove: &[IpNet]) {
    use std::io::Write as _;
    let now = chrono::Local::now().format("%a %b %e %H:%M:%S %Y");
    let mut out = std::io::stdout().lock();
    for r in add {
        let _ = writeln!(out, "{now} block {}", r.cidr);
    }
    for c in remove {
        let _ = writeln!(out, "{now} unblock {c}");
    }
    let _ = out.flush();
}

/// Seconds from `now` to `until`, rounded up, at least 1 (`None`: indefinite).
pub(crate) fn seconds_left(until: Option<Time>, now: Time) -> Option<u64> {
    until.map(|u| {
        let us = (u - now).as_micros().max(0) as u64;
        us.div_ceil(1_000_000).max(1)
    })
}
