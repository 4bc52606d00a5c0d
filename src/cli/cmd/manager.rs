//! `catchd manager`: a block manager against a BHR API.

use super::super::*;

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

pub(in crate::cli) fn manager_cmd(a: ManagerArgs) -> anyhow::Result<()> {
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
