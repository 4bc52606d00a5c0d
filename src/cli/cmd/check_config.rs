//! `catchd check-config`: a configuration checked and shown.

use std::path::PathBuf;

use clap::Args;

use crate::cli::print_stdout;
use crate::config::{self, Config};

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

pub(in crate::cli) fn check_config_cmd(a: &CheckConfigArgs) -> anyhow::Result<()> {
    use std::fmt::Write as _;

    let file = a.file.as_ref().or(a.config.as_ref());
    let c = match file {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{} is valid.",
        file.map_or_else(
            || "The built-in configuration".to_string(),
            |p| p.display().to_string()
        )
    );
    show_server(&c, &mut t);
    show_daemon(&c, &mut t);
    show_scan(&c, &mut t);
    show_watchlist(&c, &mut t);
    show_bus(&c, &mut t);
    show_blockers(&c, &mut t);
    show_bhr(&c, &mut t);
    show_capabilities(&c, &mut t);
    print_stdout(&t)
}

/// What `catchd run` with this configuration needs of Linux capabilities, as comments
/// (a unit's `AmbientCapabilities=` must grant them).
fn show_capabilities(c: &Config, t: &mut String) {
    use std::fmt::Write as _;
    let needs = crate::daemon::capability_needs(c);
    let _ = writeln!(
        t,
        "\n# Capabilities `catchd run` needs with this configuration:"
    );
    if needs.is_empty() {
        let _ = writeln!(t, "#   none");
    }
    for n in &needs {
        let ambient = if n.for_children { " (ambient)" } else { "" };
        let _ = writeln!(t, "#   {}{ambient} {}", n.cap.name(), n.why);
    }
}

fn list(v: &[String]) -> String {
    format!("{v:?}")
}

fn dur(d: Option<std::time::Duration>) -> String {
    d.map_or_else(
        || "0s".to_string(),
        |d| humantime::format_duration(d).to_string(),
    )
}

/// `[server]`, with the connection cap in force.
fn show_server(c: &Config, t: &mut String) {
    use std::fmt::Write as _;
    let l = &c.server.limits;
    let _ = write!(
        t,
        "[server]\nlisten = \"{}\"\ndb = \"{}\"\ncluster = {}\nlease_ttl = \"{}\"\nmax_body = {}\n\
         request_timeout = \"{}\"\nmax_long_poll = \"{}\"\nmax_concurrent = {}\n\
         max_long_polls_per_user = {}\nheader_timeout = \"{}\"\nidle_timeout = \"{}\"\n\
         write_timeout = \"{}\"\nmax_connections = {}  # in force now: {}\n\
         shutdown_grace = \"{}\"\nsign_in_failures = {}\nsign_in_failures_per_user = {}\n\
         sign_in_window = \"{}\"\n",
        c.server.listen,
        c.server.db,
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
}

/// `[capture]`, `[cnr]`, `[logs]` and `[daemon]`: what the daemon runs with.
fn show_daemon(c: &Config, t: &mut String) {
    use std::fmt::Write as _;
    let (cap, cn, lg) = (&c.capture, &c.cnr, &c.logs);
    let _ = write!(
        t,
        "[capture]\ninterfaces = {}\nsnaplen = {}\npromisc = {}\nbuffer_size = {}\nfilter = {:?}\n\
         sightings = {:?}\nqueue = {}\n",
        list(&cap.interfaces),
        cap.snaplen,
        cap.promisc,
        cap.buffer_size,
        cap.filter.clone().unwrap_or_default(),
        cap.sightings.name(),
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
    match &cn.networks {
        None => t.push_str("# [cnr.networks]: off\n"),
        Some(n) => {
            let _ = write!(
                t,
                "[cnr.networks]\nprefix4 = {}\nprefix6 = {}\nthreshold = {}\nwindow = \"{}\"\n\
                 intervals = \"{}\"\n",
                n.shape.len4,
                n.shape.len6,
                n.threshold,
                humantime::format_duration(std::time::Duration::from_micros(
                    n.window.as_micros().unsigned_abs()
                )),
                n.intervals,
            );
        }
    }
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
}

/// `[scan]`.
fn show_scan(c: &Config, t: &mut String) {
    use std::fmt::Write as _;
    let sc = &c.scan;
    let files: Vec<String> = sc.files.iter().map(|p| p.display().to_string()).collect();
    let jails: Vec<&str> = sc.rules.jails.iter().map(|j| j.name.as_str()).collect();
    let _ = write!(
        t,
        "[scan]\nfiles = {}\nrules = {:?}\njails = {:?}\npoll_interval = \"{}\"\n\
         max_addresses = {}\nfrom_start = {}\n",
        list(&files),
        sc.rules_file
            .as_ref()
            .map_or_else(String::new, |p| p.display().to_string()),
        jails,
        dur(Some(sc.poll_interval)),
        sc.max_addresses,
        sc.from_start,
    );
}

/// `[watchlist]`.
fn show_watchlist(c: &Config, t: &mut String) {
    use std::fmt::Write as _;
    let w = &c.watchlist;
    let _ = write!(
        t,
        "[watchlist]\nthreshold = {}\nwatch_ttl = \"{}\"\nblock_ttl = \"{}\"\n\
         refresh_on_hit = {}\nanonymize = {}\nkey_file = {:?}\nblock_addresses = {}\n",
        w.threshold,
        w.watch_ttl,
        w.block_ttl,
        w.refresh_on_hit,
        w.anonymize,
        w.key_file
            .as_ref()
            .map_or_else(String::new, |p| p.display().to_string()),
        w.block_addresses,
    );
}

/// `[bus]`.
fn show_bus(c: &Config, t: &mut String) {
    use std::fmt::Write as _;
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
            config::ClusterRole::Manager => "manager",
            config::ClusterRole::Sensor => "sensor",
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
    if let Some(w) = &bus.websocket {
        let _ = writeln!(t, "websocket = {:?}", w.url);
        if let Some(ca) = &w.ca_file {
            let _ = writeln!(t, "websocket_ca_file = {:?}", ca.display().to_string());
        }
    }
    let k = &bus.curve;
    if k.is_empty() {
        t.push_str("# CURVE: off (no curve_* keys)\n");
        return;
    }
    if bus.curve_from_env {
        t.push_str("# CURVE keys from Zeek's ZEEK_CLUSTER_BACKEND_ZEROMQ_CURVE_* variables\n");
    }
    for (name, public) in [
        ("curve_server_publickey", k.server_public),
        ("curve_client_publickey", k.client_public),
    ] {
        if let Some(p) = public {
            let _ = writeln!(t, "{name} = {:?}", p.z85());
        }
    }
    for (name, secret) in [
        ("curve_server_secretkey", k.server_secret),
        ("curve_client_secretkey", k.client_secret),
    ] {
        if secret.is_some() {
            let _ = writeln!(t, "# {name} is set (not shown)");
        }
    }
}

/// Each `[[blocker]]`.
fn show_blockers(c: &Config, t: &mut String) {
    use std::fmt::Write as _;
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
        let a = &o.announce;
        let _ = write!(
            t,
            "exabgp_socket = {:?}
next_hop = {:?}
next_hop6 = {:?}
communities = {:?}
batch = {}
",
            o.exabgp_socket, a.next_hop, a.next_hop6, a.communities, a.batch,
        );
    }
}

/// `[bhr]`.
fn show_bhr(c: &Config, t: &mut String) {
    use std::fmt::Write as _;
    let b = &c.bhr;
    let nets: Vec<String> = b.local_networks.iter().map(ToString::to_string).collect();
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
}
