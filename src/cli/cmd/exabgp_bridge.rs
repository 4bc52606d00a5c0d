//! `catchd exabgp-bridge`: ExaBGP's API process for a `[[blocker]] backend = "exabgp"`
//! inside `catchd run`. ExaBGP runs it (`process catchd { run catchd exabgp-bridge; }`);
//! it relays ExaBGP's API between its standard input and output and the Unix socket
//! `catchd run` listens on, so ExaBGP and catchd can each restart on their own.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use tokio::io::AsyncWriteExt;

/// `catchd exabgp-bridge`.
#[derive(Debug, Args)]
pub struct ExabgpBridgeArgs {
    /// The socket `catchd run` listens on (its blocker's `exabgp_socket`).
    #[arg(long, default_value = crate::enforce::exabgp::DEFAULT_SOCKET, value_name = "PATH")]
    pub socket: PathBuf,
}

pub(in crate::cli) fn exabgp_bridge_cmd(a: &ExabgpBridgeArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(relay(&a.socket));
    Ok(())
}

/// Relays until ExaBGP closes standard input. While catchd is not listening it waits,
/// trying every second; when catchd goes away it waits for the next one.
async fn relay(path: &std::path::Path) {
    let mut stdin = tokio::io::stdin();
    let mut stdout = tokio::io::stdout();
    let mut tries = 0u64;
    loop {
        let sock = match tokio::net::UnixStream::connect(path).await {
            Ok(s) => s,
            Err(e) => {
                tries += 1;
                if tries == 1 || tries.is_multiple_of(60) {
                    tracing::warn!(
                        socket = %path.display(),
                        "ExaBGP bridge: catchd is not listening ({e}); retrying every second."
                    );
                }
                // ExaBGP closing standard input ends the wait too.
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    closed = stdin_closed(&mut stdin) => if closed { return } else { continue },
                }
            }
        };
        tries = 0;
        tracing::info!(socket = %path.display(), "ExaBGP bridge: connected to catchd.");
        let (mut from_catchd, mut to_catchd) = sock.into_split();
        tokio::select! {
            // catchd went away: wait for it to come back.
            _ = tokio::io::copy(&mut from_catchd, &mut stdout) => {
                let _ = stdout.flush().await;
                tracing::warn!("ExaBGP bridge: catchd closed the connection; waiting for it.");
            }
            // ExaBGP closed standard input: its process ends.
            _ = tokio::io::copy(&mut stdin, &mut to_catchd) => {
                let _ = to_catchd.shutdown().await;
                return;
            }
        }
    }
}

/// Reads (and drops) what ExaBGP says while catchd is away; true at end of input.
async fn stdin_closed(stdin: &mut tokio::io::Stdin) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    matches!(stdin.read(&mut buf).await, Ok(0) | Err(_))
}
