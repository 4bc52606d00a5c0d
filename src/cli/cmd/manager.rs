//! `catchd manager`: a block manager against a BHR API.

use std::net::SocketAddr;

use clap::Args;

use crate::cli::InputError;
use crate::shutdown::Shutdown;

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

    /// exabgp: the IPv4 next hop of the announcements (`self`, or an address such as a
    /// discard address the routers send to null).
    #[arg(long, default_value = "self", value_name = "ADDR")]
    pub next_hop: String,

    /// exabgp: the IPv6 next hop.
    #[arg(long, default_value = "self", value_name = "ADDR")]
    pub next_hop6: String,

    /// exabgp: a community to attach (repeatable): ASN:VALUE or no-export, no-advertise,
    /// no-export-subconfed, blackhole [default: 65535:666, RFC 7999's BLACKHOLE].
    #[arg(long = "community", value_name = "COMMUNITY")]
    pub communities: Vec<String>,

    /// exabgp: networks per announce or withdraw line.
    #[arg(long, default_value_t = crate::enforce::exabgp::DEFAULT_BATCH)]
    pub batch: usize,

    /// exabgp: the shortest IPv4 prefix ever announced (wider blocks are refused and
    /// stay in the queue).
    #[arg(long, default_value_t = 23, value_name = "LEN")]
    pub minimum_prefixlen: u8,

    /// exabgp: the shortest IPv6 prefix ever announced.
    #[arg(long, default_value_t = 64, value_name = "LEN")]
    pub minimum_prefixlen_v6: u8,
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
        announce: crate::enforce::exabgp::Announce {
            next_hop: a.next_hop,
            next_hop6: a.next_hop6,
            communities: if a.communities.is_empty() {
                vec![crate::enforce::exabgp::BLACKHOLE.into()]
            } else {
                a.communities
            },
            batch: a.batch,
            minimum_prefixlen: a.minimum_prefixlen,
            minimum_prefixlen_v6: a.minimum_prefixlen_v6,
        },
        exabgp_socket: crate::enforce::exabgp::DEFAULT_SOCKET.into(),
    };
    if let Err(msg) = options.check(a.backend) {
        return Err(InputError(format!("--backend {}: {msg}", a.backend.name())).into());
    }
    if a.backend.needs_net_admin() && !a.dry_run {
        let why = format!("for --backend {}", a.backend.name());
        crate::caps::check(&[crate::caps::Need::children(crate::caps::Cap::NetAdmin, why)])
            .map_err(|e| InputError(e.to_string()))?;
    }
    if !a.server.starts_with("http://") && !a.server.starts_with("https://") {
        return Err(InputError(format!(
            "--server: {:?} is not an http:// or https:// URL",
            a.server
        ))
        .into());
    }
    let (_trigger, shutdown) = Shutdown::on_signals()?;
    run_standalone(
        Standalone {
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

/// Why `catchd manager` could not start.
#[derive(Debug, thiserror::Error)]
enum StartError {
    /// The backend's options are wrong.
    #[error("{0}")]
    Options(String),
    /// The HTTP client could not be built.
    #[error(transparent)]
    Source(#[from] crate::manager::SourceError),
    /// The runtime or the metrics listener could not be set up.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// What `catchd manager` runs.
#[derive(Clone, Debug)]
struct Standalone {
    /// The BHR server (`http://host:port`).
    pub server: String,
    /// An API token.
    pub token: String,
    /// The ident whose queues are served.
    pub ident: String,
    /// The backend.
    pub kind: crate::enforce::Kind,
    /// Its options.
    pub options: crate::enforce::Options,
    /// Print what would run; change nothing.
    pub dry_run: bool,
    /// Timings.
    pub settings: crate::manager::Settings,
    /// Where to serve `/metrics`, if anywhere.
    pub metrics: Option<SocketAddr>,
}

/// Runs one manager against a remote BHR API until `shutdown` fires.
///
/// # Errors
/// The options are wrong, or the runtime or the metrics listener could not start.
fn run_standalone(s: Standalone, shutdown: Shutdown) -> Result<(), StartError> {
    let runner = crate::enforce::Runner::new(s.options.command_timeout, s.dry_run);
    let backend =
        crate::enforce::Enforcer::new(s.kind, &s.options, runner).map_err(StartError::Options)?;
    let source = crate::manager::remote::Remote::new(&s.server, &s.token, &s.ident)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("catchd-manager")
        .build()?;
    rt.block_on(async move {
        // ExaBGP closing the manager's standard input ends it, cleanly.
        let mut gone = backend.closed();
        let manager = crate::manager::Manager::new(source, backend, s.settings.clone());
        let counters = manager.counters();
        let name = manager.backend_name();
        let (tx, rx) = tokio::sync::watch::channel(false);
        if let Some(addr) = s.metrics {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            tracing::info!("Metrics on http://{}/metrics", listener.local_addr()?);
            let registry = crate::telemetry::Registry::new();
            let managers = [(s.ident.clone(), name, counters)];
            registry.add(move |m: &mut crate::telemetry::Metrics| {
                crate::manager::collect_metrics(&managers, m)
            });
            let app = axum::Router::new().route(
                "/metrics",
                axum::routing::get(move || {
                    let registry = registry.clone();
                    async move { registry.response() }
                }),
            );
            let mut stop = rx.clone();
            tokio::spawn(async move {
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stop.changed().await;
                    })
                    .await;
            });
        }
        let run = tokio::spawn(manager.run(rx));
        match gone.as_mut() {
            Some(g) => {
                tokio::select! {
                    () = shutdown.wait() => {}
                    _ = g.wait_for(|closed| *closed) => {
                        tracing::info!("ExaBGP closed the API.");
                    }
                }
            }
            None => shutdown.wait().await,
        }
        tracing::info!("Stopping.");
        let _ = tx.send(true);
        let _ = run.await;
        Ok(())
    })
}
