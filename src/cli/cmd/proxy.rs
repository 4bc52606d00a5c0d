//! `catchd proxy`: the ZeroMQ XPUB/XSUB proxy.

use clap::Args;

use crate::bus::curve::{ENV, Keys};
use crate::cli::InputError;
use crate::config;
use crate::shutdown::Shutdown;

/// `catchd proxy`. With Zeek's `ZEEK_CLUSTER_BACKEND_ZEROMQ_CURVE_SERVER_SECRETKEY` and
/// `…_CLIENT_PUBLICKEY` in the environment, it is a CURVE server admitting only that
/// client key, as Zeek's own proxy is.
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
    // CURVE keys come from Zeek's environment variables (not flags, which `ps` shows).
    let curve = Keys::from_env(|v| std::env::var(v).ok())
        .and_then(|k| k.resolve(true, false, &ENV))
        .map_err(|(key, msg)| InputError(format!("{key}: {msg}")))?;
    let (_trigger, shutdown) = Shutdown::on_signals()?;
    let proxy = crate::bus::proxy::start(&a.xpub, &a.xsub, curve.as_ref())?;
    let rt = crate::runtime::build()?;
    rt.block_on(shutdown.wait());
    tracing::info!("Stopping.");
    proxy.stop();
    Ok(())
}

/// `catchd curve-keypair`.
#[derive(Debug, Args)]
pub struct CurveKeypairArgs {
    /// Whose keypair: the proxy's (`server`) or the cluster's shared client keypair.
    #[arg(long = "for", value_name = "ROLE", default_value = "server",
          value_parser = ["server", "client"])]
    pub role: String,

    /// Print it as Zeek's environment variables instead of `[bus]` settings.
    #[arg(long)]
    pub env: bool,
}

pub(in crate::cli) fn curve_keypair_cmd(a: &CurveKeypairArgs) -> anyhow::Result<()> {
    if !crate::bus::curve::available() {
        return Err(InputError("this catchd's libzmq has no CURVE".into()).into());
    }
    let (public, secret) = crate::bus::curve::keypair()?;
    let (public, secret) = (public.z85(), secret.z85());
    let text = if a.env {
        // Single quotes: Z85 has `$`, `&`, `#` and brackets but no `'`, and both a shell
        // and a systemd EnvironmentFile= take the value literally.
        let r = a.role.to_uppercase();
        format!(
            "ZEEK_CLUSTER_BACKEND_ZEROMQ_CURVE_{r}_PUBLICKEY='{public}'\n\
             ZEEK_CLUSTER_BACKEND_ZEROMQ_CURVE_{r}_SECRETKEY='{secret}'\n"
        )
    } else {
        let r = &a.role;
        format!("curve_{r}_publickey = \"{public}\"\ncurve_{r}_secretkey = \"{secret}\"\n")
    };
    crate::cli::print_stdout(&text)
}
