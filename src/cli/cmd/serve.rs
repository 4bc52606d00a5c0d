//! `catchd serve`: the BHR API alone.

use std::net::SocketAddr;

use clap::Args;

use crate::cli::StoreArgs;
use crate::shutdown::Shutdown;

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

pub(in crate::cli) fn serve_cmd(a: &ServeArgs) -> anyhow::Result<()> {
    let mut c = a.store.load()?;
    if let Some(l) = a.listen {
        c.server.listen = l;
    }
    let (_trigger, shutdown) = Shutdown::on_signals()?;
    crate::server::run(&c, crate::api::bhr::system_clock(), shutdown, |_| ())?;
    Ok(())
}
