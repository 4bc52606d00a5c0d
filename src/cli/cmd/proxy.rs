//! `catchd proxy`: the ZeroMQ XPUB/XSUB proxy.

use clap::Args;

use crate::cli::InputError;
use crate::config;
use crate::shutdown::Shutdown;

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

pub(in crate::cli) fn proxy_cmd(a: &ProxyArgs) -> anyhow::Result<()> {
    for (flag, v) in [("--xpub", &a.xpub), ("--xsub", &a.xsub)] {
        config::check_endpoint(v).map_err(|m| InputError(format!("{flag}: {m}")))?;
    }
    let (_trigger, shutdown) = Shutdown::on_signals()?;
    let proxy = crate::bus::proxy::start(&a.xpub, &a.xsub)?;
    let rt = crate::runtime::build()?;
    rt.block_on(shutdown.wait());
    tracing::info!("Stopping.");
    proxy.stop();
    Ok(())
}
