//! `catchd run`: the daemon.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use crate::cli::{InputError, StoreArgs};
use crate::cnr::Intervals;
use crate::config;
use crate::shutdown::Shutdown;

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

    /// Join through Zeek's WebSocket API instead of a ZeroMQ proxy:
    /// ws://HOST:PORT/v1/messages/json, or wss://… [default: bus.websocket].
    #[arg(long, value_name = "URL", conflicts_with_all = ["bus_xpub", "bus_xsub", "bus_proxy"])]
    pub bus_websocket: Option<String>,

    /// `manager` holds the catch-and-release state; `sensor` only captures and reports
    /// to it [default: manager, or bus.role].
    #[arg(long, value_name = "ROLE")]
    pub role: Option<config::ClusterRole>,

    /// This node's id on the bus [default: catchd_ROLE_HOST_PID, or bus.node_id].
    #[arg(long, value_name = "ID")]
    pub node_id: Option<String>,

    /// Where the configuration and database are.
    #[command(flatten)]
    pub store: StoreArgs,
}

pub(in crate::cli) fn run_cmd(a: &RunArgs) -> anyhow::Result<()> {
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
    if a.bus || a.bus_proxy || a.bus_websocket.is_some() || a.role.is_some() {
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
    if let Some(url) = &a.bus_websocket {
        let ca = c.bus.websocket.as_ref().and_then(|t| t.ca_file.clone());
        let t = crate::bus::websocket::Target::parse(url, ca.as_deref())
            .map_err(|m| InputError(format!("--bus-websocket: {m}")))?;
        if c.bus.proxy {
            return Err(InputError(
                "--bus-websocket: a node joining through Zeek's WebSocket API does not host a \
                 ZeroMQ proxy (bus.proxy is set)"
                    .into(),
            )
            .into());
        }
        c.bus.websocket = Some(t);
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
    if crate::systemd::enabled() {
        say_stopping(shutdown.clone())?;
    }
    let captures = if c.capture.interfaces.is_empty() {
        "no capture".to_string()
    } else {
        format!("capturing on {}", c.capture.interfaces.join(", "))
    };
    crate::daemon::run(&c, crate::api::bhr::system_clock(), shutdown, |local| {
        // Captures, store and logs are open and the listener accepts connections.
        crate::systemd::ready(&format!("{captures}; API on http://{local}/"));
    })?;
    Ok(())
}

/// Tells the service manager STOPPING=1 as soon as the shutdown fires (a signal, or the
/// daemon stopping by itself).
fn say_stopping(shutdown: Shutdown) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    std::thread::Builder::new()
        .name("catchd-notify".into())
        .spawn(move || {
            rt.block_on(shutdown.wait());
            crate::systemd::stopping();
        })?;
    Ok(())
}
