//! The XPUB/XSUB proxy Zeek's manager runs (`zmq_proxy_steerable(xsub, xpub)`), for
//! deployments without one: publishers connect to its XSUB, subscribers to its XPUB, and
//! subscriptions flow back from subscribers to publishers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use super::curve::{Curve, Zap};
use super::{Error, set_int_option, socket_err};

/// A running proxy.
pub struct Proxy {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// The ZAP handler, when the proxy is encrypted; stopped after the relay.
    zap: Option<Zap>,
    ctx: zmq::Context,
    control: String,
}

/// Binds the proxy's XPUB (subscribers connect) and XSUB (publishers connect) and relays
/// between them on a thread of its own. With `curve` (which must hold the server secret
/// key) both sockets are CURVE servers and only the client public key is admitted.
///
/// # Errors
/// [`Error`] when an endpoint cannot be bound (in use, bad address).
pub fn start(
    xpub_endpoint: &str,
    xsub_endpoint: &str,
    curve: Option<&Curve>,
) -> Result<Proxy, Error> {
    let ctx = zmq::Context::new();
    ctx.set_io_threads(2)
        .map_err(socket_err("io threads", xpub_endpoint))?;
    // The ZAP handler must be bound before a CURVE server socket takes a connection.
    let zap = curve
        .map(|c| Zap::start(&ctx, c.client_public))
        .transpose()?;
    let mut xpub = ctx
        .socket(zmq::XPUB)
        .map_err(socket_err("socket", xpub_endpoint))?;
    // Forward every subscription and unsubscription to the publishers, and never drop
    // at the high-water mark (as Zeek's proxy does).
    set_int_option(&mut xpub, zmq_sys::ZMQ_XPUB_VERBOSER, 1)
        .map_err(socket_err("XPUB_VERBOSER", xpub_endpoint))?;
    set_int_option(&mut xpub, zmq_sys::ZMQ_XPUB_NODROP, 1)
        .map_err(socket_err("XPUB_NODROP", xpub_endpoint))?;
    xpub.set_linger(0)
        .map_err(socket_err("LINGER", xpub_endpoint))?;
    xpub.set_sndhwm(super::HWM)
        .map_err(socket_err("SNDHWM", xpub_endpoint))?;
    if let Some(c) = curve {
        c.server(&xpub)
            .map_err(socket_err("CURVE", xpub_endpoint))?;
    }
    xpub.bind(xpub_endpoint)
        .map_err(socket_err("bind", xpub_endpoint))?;
    let xsub = ctx
        .socket(zmq::XSUB)
        .map_err(socket_err("socket", xsub_endpoint))?;
    xsub.set_linger(0)
        .map_err(socket_err("LINGER", xsub_endpoint))?;
    xsub.set_rcvhwm(super::HWM)
        .map_err(socket_err("RCVHWM", xsub_endpoint))?;
    if let Some(c) = curve {
        c.server(&xsub)
            .map_err(socket_err("CURVE", xsub_endpoint))?;
    }
    xsub.bind(xsub_endpoint)
        .map_err(socket_err("bind", xsub_endpoint))?;
    let control = format!("inproc://catchd-proxy-{}", std::process::id());
    let ctl = ctx
        .socket(zmq::PAIR)
        .map_err(socket_err("socket", &control))?;
    ctl.bind(&control).map_err(socket_err("bind", &control))?;
    let stop = Arc::new(AtomicBool::new(false));
    let thread = std::thread::Builder::new()
        .name("catchd-proxy".into())
        .spawn(move || {
            let (mut xsub, mut xpub, mut ctl) = (xsub, xpub, ctl);
            if let Err(e) = zmq::proxy_steerable(&mut xsub, &mut xpub, &mut ctl) {
                tracing::error!("Bus proxy stopped: {e}");
            }
        })?;
    tracing::info!(
        xpub = xpub_endpoint,
        xsub = xsub_endpoint,
        curve = curve.is_some(),
        "Bus proxy listening."
    );
    Ok(Proxy {
        stop,
        thread: Some(thread),
        zap,
        ctx,
        control,
    })
}

impl Proxy {
    /// Stops relaying and closes the sockets.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if self.stop.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Ok(s) = self.ctx.socket(zmq::PAIR)
            && s.connect(&self.control).is_ok()
        {
            let _ = s.set_linger(0);
            let _ = s.send("TERMINATE", 0);
            // Give the proxy a moment to take the command before the socket goes.
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.zap.take();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shutdown();
    }
}
