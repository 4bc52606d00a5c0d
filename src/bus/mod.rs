//! The ZeroMQ event bus, in the wire format of Zeek's ZeroMQ cluster backend. The only
//! module that uses ZeroMQ.
//!
//! A [`Node`] joins a proxy as a Zeek node does: its XPUB connects to the proxy's XSUB
//! (`tcp://127.0.0.1:5556` by default) and its XSUB to the proxy's XPUB (`5555`).
//! Messages are 4 frames, `[topic, sender node id, format, payload]`, the payload a Zeek
//! event in `broker-bin-v1` (or `broker-json-v1`). One thread owns both sockets; other
//! threads publish through a [`Publisher`] (a bounded channel: when it is full the event
//! is counted as dropped, the caller never waits) and receive through a bounded channel of
//! decoded [`Incoming`] events.
//!
//! Publishing waits for subscribers as Zeek does: the node's XPUB sees the subscriptions
//! the proxy relays, and an event whose topic no subscriber has asked for is held (up to
//! [`BACKLOG`] events for [`GRACE`]) until one does, so nothing is lost to ZeroMQ's
//! "slow joiner" start-up. After that it is dropped and counted, as ZeroMQ would.
//!
//! `proxy` hosts the XPUB/XSUB proxy itself, for deployments without a Zeek manager.

pub mod curve;
pub(crate) mod proxy;
pub mod websocket;

use std::collections::{HashSet, VecDeque};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::broker::zeek::Incoming;
use crate::broker::{Event, Format};

/// Zeek's default: the proxy's XPUB, which a node's XSUB connects to.
pub const DEFAULT_XPUB: &str = "tcp://127.0.0.1:5555";
/// Zeek's default: the proxy's XSUB, which a node's XPUB connects to.
pub const DEFAULT_XSUB: &str = "tcp://127.0.0.1:5556";

/// Events held for topics nobody has subscribed to yet.
pub const BACKLOG: usize = 10_000;
/// How long such an event is held.
pub const GRACE: Duration = Duration::from_secs(10);

/// ZeroMQ's queue limit per socket and peer, in messages. Zeek uses 1000; more absorbs
/// the scheduling jitter of a busy host (a few MB at most for small events).
pub(crate) const HWM: i32 = 10_000;

/// How long a send at ZeroMQ's high-water mark waits for room before the event is dropped.
const SEND_WAIT_MS: i64 = 100;

/// Messages handled per socket per loop turn, so neither direction starves the other.
const TURN: usize = 1024;

/// Why the bus could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A socket could not be made, configured, connected or bound.
    #[error("ZeroMQ {what} {endpoint}: {err}")]
    Socket {
        /// What was being done.
        what: &'static str,
        /// The endpoint.
        endpoint: String,
        /// libzmq's error.
        err: zmq::Error,
    },
    /// The thread or its wake-up pipe could not be made.
    #[error("cannot start the bus thread: {0}")]
    Thread(#[from] std::io::Error),
    /// The CURVE keys do not fit what this process does.
    #[error("{key}: {msg}")]
    Curve {
        /// The setting or environment variable.
        key: String,
        /// What is wrong.
        msg: String,
    },
}

/// How a node joins the bus.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where the node's XSUB connects: the proxy's XPUB.
    pub xpub: String,
    /// Where the node's XPUB connects: the proxy's XSUB.
    pub xsub: String,
    /// This node's id (frame 2); messages carrying it are ignored.
    pub node_id: String,
    /// Format of what this node sends.
    pub format: Format,
    /// Topic prefixes to receive.
    pub subscribe: Vec<String>,
    /// Capacity of the outgoing and incoming channels.
    pub queue: usize,
    /// CURVE keys, when the proxy is encrypted.
    pub curve: Option<curve::Curve>,
    /// Join through Zeek's WebSocket API instead of a ZeroMQ proxy (`xpub`, `xsub`, `format`
    /// and `curve` are then not used).
    pub websocket: Option<websocket::Target>,
}

/// A node id in Zeek's style: `catchd_<role>_<host>_<pid>`.
pub fn default_node_id(role: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("catchd_{role}_{host}_{}", std::process::id())
}

/// The bus's counters, readable from any thread.
#[derive(Debug, Default)]
pub struct Stats {
    /// Events handed to ZeroMQ.
    pub published: AtomicU64,
    /// Events lost because the outgoing channel was full.
    pub queue_drops: AtomicU64,
    /// Events ZeroMQ refused at its high-water mark.
    pub xpub_drops: AtomicU64,
    /// Events dropped because no subscriber wanted their topic within the grace time.
    pub unsubscribed_drops: AtomicU64,
    /// Events received and understood.
    pub received: AtomicU64,
    /// Messages that were not 4 frames or whose payload did not decode.
    pub malformed: AtomicU64,
    /// Messages in a format catchd does not read.
    pub wrong_format: AtomicU64,
    /// Events catchd does not handle, or with the wrong arguments.
    pub unknown_events: AtomicU64,
    /// Incoming events lost because the consumer was behind.
    pub incoming_drops: AtomicU64,
    /// Topic prefixes subscribers have asked for.
    pub subscriptions: AtomicU64,
    /// Handshakes with the proxy that failed (refused CURVE keys, CURVE mismatch), or
    /// attempts to join Zeek's WebSocket API that failed.
    pub handshake_failures: AtomicU64,
    /// Events Zeek's WebSocket API refused (an error message back, e.g. an event the
    /// host node does not declare).
    pub refused: AtomicU64,
}

fn count(c: &AtomicU64) -> u64 {
    c.fetch_add(1, Ordering::Relaxed) + 1
}

/// Logs the first ten of a kind of problem, then every thousandth.
fn worth_logging(n: u64) -> bool {
    n <= 10 || n.is_multiple_of(1000)
}

/// An event received from the bus.
#[derive(Clone, Debug)]
pub struct Received {
    /// Its topic.
    pub topic: String,
    /// The sender's node id.
    pub sender: String,
    /// The network timestamp the sender attached (nanoseconds), if any.
    pub network_time: Option<i64>,
    /// What it says.
    pub event: Incoming,
}

struct Outgoing {
    topic: Arc<str>,
    event: Event,
}

/// Publishes events from any thread.
#[derive(Clone)]
pub struct Publisher {
    tx: Sender<Outgoing>,
    wake: Arc<UnixStream>,
    pending: Arc<AtomicBool>,
    stats: Arc<Stats>,
}

impl Publisher {
    /// Queues an event for `topic`. Never waits: `false` (and a counted drop) when the
    /// queue is full or the bus has stopped.
    pub fn publish(&self, topic: impl Into<Arc<str>>, event: Event) -> bool {
        let o = Outgoing {
            topic: topic.into(),
            event,
        };
        match self.tx.try_send(o) {
            Ok(()) => {
                if !self.pending.swap(true, Ordering::AcqRel) {
                    let _ = (&*self.wake).write(&[1]);
                }
                true
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                let n = count(&self.stats.queue_drops);
                if worth_logging(n) {
                    tracing::warn!(drops = n, "Bus: outgoing queue full, event dropped.");
                }
                false
            }
        }
    }

    /// Queues an event, waiting while the queue is full: for tools and benchmarks that
    /// must not lose events. The engine uses [`publish`](Publisher::publish).
    pub fn publish_waiting(&self, topic: impl Into<Arc<str>>, event: Event) -> bool {
        let o = Outgoing {
            topic: topic.into(),
            event,
        };
        if self.tx.send(o).is_err() {
            return false;
        }
        if !self.pending.swap(true, Ordering::AcqRel) {
            let _ = (&*self.wake).write(&[1]);
        }
        true
    }

    /// The bus's counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }
}

/// A running bus node.
pub struct Node {
    publisher: Publisher,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    node_id: String,
}

fn socket_err(what: &'static str, endpoint: &str) -> impl FnOnce(zmq::Error) -> Error + use<> {
    let endpoint = endpoint.to_string();
    move |err| Error::Socket {
        what,
        endpoint,
        err,
    }
}

/// A PAIR socket receiving `s`'s handshake events.
fn monitor(
    ctx: &zmq::Context,
    s: &zmq::Socket,
    which: &str,
    endpoint: &str,
) -> Result<zmq::Socket, Error> {
    static N: AtomicU64 = AtomicU64::new(0);
    let inproc = format!(
        "inproc://catchd-monitor-{which}-{}",
        N.fetch_add(1, Ordering::Relaxed)
    );
    let events = (zmq_sys::ZMQ_EVENT_HANDSHAKE_SUCCEEDED
        | zmq_sys::ZMQ_EVENT_HANDSHAKE_FAILED_AUTH
        | zmq_sys::ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) as i32;
    s.monitor(&inproc, events)
        .map_err(socket_err("monitor", endpoint))?;
    let m = ctx
        .socket(zmq::PAIR)
        .map_err(socket_err("monitor socket", endpoint))?;
    m.set_linger(0).map_err(socket_err("LINGER", endpoint))?;
    m.connect(&inproc)
        .map_err(socket_err("monitor connect", endpoint))?;
    Ok(m)
}

/// Sets an integer socket option the `zmq` crate has no setter for.
pub(crate) fn set_int_option(s: &mut zmq::Socket, option: u32, value: i32) -> zmq::Result<()> {
    // SAFETY: the socket pointer is live for the duration of the call (we hold `&mut`),
    // and the option value is a plain `int` whose size we pass.
    let rc = unsafe {
        zmq_sys::zmq_setsockopt(
            s.as_mut_ptr(),
            option as i32,
            (&raw const value).cast(),
            size_of::<i32>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        // SAFETY: zmq_errno takes no arguments and only reads libzmq's thread-local errno.
        Err(zmq::Error::from_raw(unsafe { zmq_sys::zmq_errno() }))
    }
}

impl Node {
    /// Connects to the proxy and starts the socket thread. Incoming events go to the
    /// returned receiver (bounded by `options.queue`).
    ///
    /// # Errors
    /// [`Error`] for a bad endpoint or a thread that cannot start.
    pub fn start(options: Options) -> Result<(Node, Receiver<Received>), Error> {
        let (wake_tx, wake_rx) = UnixStream::pair()?;
        wake_tx.set_nonblocking(true)?;
        wake_rx.set_nonblocking(true)?;
        let (out_tx, out_rx) = crossbeam_channel::bounded(options.queue);
        let (in_tx, in_rx) = crossbeam_channel::bounded(options.queue);
        let stats = Arc::new(Stats::default());
        let pending = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let publisher = Publisher {
            tx: out_tx,
            wake: Arc::new(wake_tx),
            pending: pending.clone(),
            stats: stats.clone(),
        };
        let node_id = options.node_id.clone();
        let ends = Ends {
            wake: wake_rx,
            pending,
            out: out_rx,
            incoming: in_tx,
            stats,
            stop: stop.clone(),
        };
        let thread = match options.websocket.clone() {
            Some(target) => {
                tracing::info!(node = %node_id, url = %target.url, "Bus: joining Zeek's WebSocket API.");
                let mut w =
                    websocket::Worker::new(target, options.subscribe, node_id.clone(), ends);
                std::thread::Builder::new()
                    .name("catchd-bus".into())
                    .spawn(move || w.run())?
            }
            None => {
                let mut worker = Worker::new(options, ends)?;
                let thread = std::thread::Builder::new()
                    .name("catchd-bus".into())
                    .spawn(move || worker.run())?;
                tracing::info!(node = %node_id, "Bus: joining the proxy.");
                thread
            }
        };
        Ok((
            Node {
                publisher,
                stop,
                thread: Some(thread),
                node_id,
            },
            in_rx,
        ))
    }

    /// A handle for publishing.
    pub fn publisher(&self) -> Publisher {
        self.publisher.clone()
    }
}

/// The thread's ends of the channels, shared by both transports.
struct Ends {
    /// Readable when a publisher queued something (or the node stops).
    wake: UnixStream,
    /// Set by publishers when they wrote to `wake`, so a burst writes once.
    pending: Arc<AtomicBool>,
    /// What publishers queued.
    out: Receiver<Outgoing>,
    /// Where decoded events go.
    incoming: Sender<Received>,
    stats: Arc<Stats>,
    /// Set when the node stops.
    stop: Arc<AtomicBool>,
}

impl Worker {
    /// Makes and connects the ZeroMQ sockets.
    fn new(options: Options, ends: Ends) -> Result<Worker, Error> {
        let ctx = zmq::Context::new();
        let mut xpub = ctx
            .socket(zmq::XPUB)
            .map_err(socket_err("socket", &options.xsub))?;
        xpub.set_xpub_verbose(true)
            .map_err(socket_err("XPUB_VERBOSE", &options.xsub))?;
        set_int_option(&mut xpub, zmq_sys::ZMQ_XPUB_NODROP, 1)
            .map_err(socket_err("XPUB_NODROP", &options.xsub))?;
        xpub.set_sndhwm(HWM)
            .map_err(socket_err("SNDHWM", &options.xsub))?;
        xpub.set_linger(500)
            .map_err(socket_err("LINGER", &options.xsub))?;
        if let Some(c) = &options.curve {
            c.client(&xpub)
                .map_err(socket_err("CURVE", &options.xsub))?;
        }
        let xpub_monitor = monitor(&ctx, &xpub, "xpub", &options.xsub)?;
        xpub.connect(&options.xsub)
            .map_err(socket_err("connect", &options.xsub))?;
        let xsub = ctx
            .socket(zmq::XSUB)
            .map_err(socket_err("socket", &options.xpub))?;
        xsub.set_rcvhwm(HWM)
            .map_err(socket_err("RCVHWM", &options.xpub))?;
        xsub.set_linger(0)
            .map_err(socket_err("LINGER", &options.xpub))?;
        if let Some(c) = &options.curve {
            c.client(&xsub)
                .map_err(socket_err("CURVE", &options.xpub))?;
        }
        let xsub_monitor = monitor(&ctx, &xsub, "xsub", &options.xpub)?;
        xsub.connect(&options.xpub)
            .map_err(socket_err("connect", &options.xpub))?;
        for t in &options.subscribe {
            let mut frame = Vec::with_capacity(t.len() + 1);
            frame.push(1);
            frame.extend_from_slice(t.as_bytes());
            xsub.send(frame, 0)
                .map_err(socket_err("subscribe", &options.xpub))?;
        }
        Ok(Worker {
            monitors: [xpub_monitor, xsub_monitor],
            handshake_failures: 0,
            xpub,
            xsub,
            _ctx: ctx,
            ends,
            subs: HashSet::new(),
            backlog: VecDeque::new(),
            options,
            buf: Vec::with_capacity(4096),
        })
    }
}

impl Node {
    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Sends what is queued (for up to the socket linger) and stops the thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = (&*self.publisher.wake).write(&[1]);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Worker {
    // Sockets before the context: fields drop in order, and a context waits for its sockets.
    /// The monitors of `xpub` and `xsub`: handshakes.
    monitors: [zmq::Socket; 2],
    handshake_failures: u64,
    xpub: zmq::Socket,
    xsub: zmq::Socket,
    _ctx: zmq::Context,
    ends: Ends,
    subs: HashSet<Vec<u8>>,
    backlog: VecDeque<(Instant, Outgoing)>,
    options: Options,
    buf: Vec<u8>,
}

impl Worker {
    fn run(&mut self) {
        loop {
            let (r_in, r_sub, r_wake, r_mon) = {
                let mut items = [
                    self.xsub.as_poll_item(zmq::POLLIN),
                    self.xpub.as_poll_item(zmq::POLLIN),
                    zmq::PollItem::from_fd(self.ends.wake.as_raw_fd(), zmq::POLLIN),
                    self.monitors[0].as_poll_item(zmq::POLLIN),
                    self.monitors[1].as_poll_item(zmq::POLLIN),
                ];
                // Work left in the queue: look at the sockets without waiting.
                let wait = if self.ends.out.is_empty() { 200 } else { 0 };
                if let Err(e) = zmq::poll(&mut items, wait)
                    && e != zmq::Error::EINTR
                {
                    tracing::error!("Bus: poll failed: {e}");
                    return;
                }
                (
                    items[0].is_readable(),
                    items[1].is_readable(),
                    items[2].is_readable(),
                    items[3].is_readable() || items[4].is_readable(),
                )
            };
            if r_mon {
                self.monitor_events();
            }
            if r_wake {
                let mut b = [0u8; 256];
                while matches!(self.ends.wake.read(&mut b), Ok(n) if n > 0) {}
                self.ends.pending.store(false, Ordering::Release);
            }
            if r_sub {
                self.subscriptions();
            }
            self.expire_backlog();
            let stopping = self.ends.stop.load(Ordering::Acquire);
            self.send_queued(if stopping { usize::MAX } else { TURN });
            if stopping {
                return;
            }
            if r_in {
                self.receive();
            }
        }
    }

    /// Reports handshake failures (first ten, then every thousandth) and counts them.
    fn monitor_events(&mut self) {
        for m in &self.monitors {
            while let Ok(frames) = m.recv_multipart(zmq::DONTWAIT) {
                let (Some(event), Some(addr)) = (frames.first(), frames.get(1)) else {
                    continue;
                };
                match curve::handshake(event, addr) {
                    Some(curve::Handshake::Failed(msg)) => {
                        self.handshake_failures += 1;
                        self.ends
                            .stats
                            .handshake_failures
                            .fetch_add(1, Ordering::Relaxed);
                        let n = self.handshake_failures;
                        if n <= 10 || n.is_multiple_of(1000) {
                            tracing::error!(failures = n, "{msg}");
                        }
                    }
                    Some(curve::Handshake::Succeeded(addr)) => {
                        tracing::info!(
                            node = %self.options.node_id,
                            curve = self.options.curve.is_some(),
                            "Bus: connected to {addr}."
                        );
                    }
                    None => {}
                }
            }
        }
    }

    fn subscribed(&self, topic: &str) -> bool {
        self.subs.iter().any(|p| topic.as_bytes().starts_with(p))
    }

    fn subscriptions(&mut self) {
        let mut changed = false;
        for _ in 0..TURN {
            let Ok(frame) = self.xpub.recv_bytes(zmq::DONTWAIT) else {
                break;
            };
            match frame.split_first() {
                Some((1, t)) => changed |= self.subs.insert(t.to_vec()),
                Some((0, t)) => changed |= self.subs.remove(t),
                _ => {}
            }
        }
        if changed {
            self.ends
                .stats
                .subscriptions
                .store(self.subs.len() as u64, Ordering::Relaxed);
            // Send what waited for these subscribers, in order.
            let held = std::mem::take(&mut self.backlog);
            for (t, o) in held {
                if self.subscribed(&o.topic) {
                    self.send(&o);
                } else {
                    self.backlog.push_back((t, o));
                }
            }
        }
    }

    fn expire_backlog(&mut self) {
        while let Some((t, _)) = self.backlog.front() {
            if t.elapsed() < GRACE {
                break;
            }
            self.backlog.pop_front();
            count(&self.ends.stats.unsubscribed_drops);
        }
    }

    fn send_queued(&mut self, max: usize) {
        for _ in 0..max {
            let Ok(o) = self.ends.out.try_recv() else {
                return;
            };
            if self.subscribed(&o.topic) {
                self.send(&o);
            } else if self.backlog.len() < BACKLOG {
                self.backlog.push_back((Instant::now(), o));
            } else {
                count(&self.ends.stats.unsubscribed_drops);
            }
        }
    }

    fn send(&mut self, o: &Outgoing) {
        self.buf.clear();
        self.options.format.encode(&o.event, &mut self.buf);
        let frames: [&[u8]; 4] = [
            o.topic.as_bytes(),
            self.options.node_id.as_bytes(),
            self.options.format.as_str().as_bytes(),
            &self.buf,
        ];
        let mut sent = self.xpub.send_multipart(frames, zmq::DONTWAIT);
        if sent == Err(zmq::Error::EAGAIN) {
            // At the high-water mark: give the I/O thread a moment before dropping.
            let _ = self.xpub.poll(zmq::POLLOUT, SEND_WAIT_MS);
            sent = self.xpub.send_multipart(frames, zmq::DONTWAIT);
        }
        match sent {
            Ok(()) => {
                count(&self.ends.stats.published);
            }
            Err(e) => {
                let n = count(&self.ends.stats.xpub_drops);
                if worth_logging(n) {
                    tracing::warn!(drops = n, topic = %o.topic, "Bus: send failed: {e}");
                }
            }
        }
    }

    fn receive(&mut self) {
        for _ in 0..TURN {
            let frames = match self.xsub.recv_multipart(zmq::DONTWAIT) {
                Ok(f) => f,
                Err(zmq::Error::EAGAIN) => return,
                Err(e) => {
                    tracing::warn!("Bus: receive failed: {e}");
                    return;
                }
            };
            self.message(frames);
        }
    }

    fn message(&mut self, frames: Vec<Vec<u8>>) {
        let Ok([topic, sender, format, payload]) = <[Vec<u8>; 4]>::try_from(frames) else {
            let n = count(&self.ends.stats.malformed);
            if worth_logging(n) {
                tracing::warn!(malformed = n, "Bus: a message that is not 4 frames.");
            }
            return;
        };
        if sender == self.options.node_id.as_bytes() {
            return;
        }
        let topic = String::from_utf8_lossy(&topic).into_owned();
        let sender = String::from_utf8_lossy(&sender).into_owned();
        let Some(f) = Format::from_frame(&format) else {
            let n = count(&self.ends.stats.wrong_format);
            if worth_logging(n) {
                tracing::warn!(
                    wrong_format = n,
                    %sender,
                    format = %String::from_utf8_lossy(&format),
                    "Bus: a message in a format catchd does not read."
                );
            }
            return;
        };
        let event = match f.decode(&payload) {
            Ok(e) => e,
            Err(e) => {
                let n = count(&self.ends.stats.malformed);
                if worth_logging(n) {
                    tracing::warn!(malformed = n, %sender, %topic, "Bus: bad payload: {e}");
                }
                return;
            }
        };
        deliver(&self.ends.stats, &self.ends.incoming, topic, sender, event);
    }
}

/// Reads a decoded event as one catchd handles and passes it on, counting what is not.
fn deliver(
    stats: &Stats,
    incoming: &Sender<Received>,
    topic: String,
    sender: String,
    event: Event,
) {
    let network_time = event.network_timestamp();
    let event = match Incoming::read(event) {
        Ok(e) => e,
        Err(e) => {
            let n = count(&stats.unknown_events);
            if worth_logging(n) {
                tracing::warn!(unknown = n, %sender, %topic, "Bus: {e}");
            }
            return;
        }
    };
    count(&stats.received);
    let r = Received {
        topic,
        sender,
        network_time,
        event,
    };
    if let Err(TrySendError::Full(_)) = incoming.try_send(r) {
        let n = count(&stats.incoming_drops);
        if worth_logging(n) {
            tracing::warn!(drops = n, "Bus: incoming queue full, event dropped.");
        }
    }
}

/// The bus's counters, for `/metrics`.
pub fn collect_metrics(s: &Stats, node: &str, m: &mut crate::telemetry::Metrics) {
    use crate::telemetry::Kind;
    let rows: [(&str, Kind, &str, &AtomicU64); 12] = [
        (
            "published_total",
            Kind::Counter,
            "events sent",
            &s.published,
        ),
        (
            "queue_drops_total",
            Kind::Counter,
            "events lost to a full outgoing queue",
            &s.queue_drops,
        ),
        (
            "xpub_drops_total",
            Kind::Counter,
            "events ZeroMQ refused at its high-water mark",
            &s.xpub_drops,
        ),
        (
            "unsubscribed_drops_total",
            Kind::Counter,
            "events no subscriber asked for within the grace time",
            &s.unsubscribed_drops,
        ),
        (
            "received_total",
            Kind::Counter,
            "events received and understood",
            &s.received,
        ),
        (
            "malformed_total",
            Kind::Counter,
            "messages not of 4 frames or with a payload that does not decode",
            &s.malformed,
        ),
        (
            "wrong_format_total",
            Kind::Counter,
            "messages in a format catchd does not read",
            &s.wrong_format,
        ),
        (
            "unknown_events_total",
            Kind::Counter,
            "events catchd does not handle or with wrong arguments",
            &s.unknown_events,
        ),
        (
            "incoming_drops_total",
            Kind::Counter,
            "incoming events lost because catchd was behind",
            &s.incoming_drops,
        ),
        (
            "handshake_failures_total",
            Kind::Counter,
            "failed handshakes with the proxy (CURVE keys refused or mismatched) or attempts to join Zeek's WebSocket API",
            &s.handshake_failures,
        ),
        (
            "refused_total",
            Kind::Counter,
            "events Zeek's WebSocket API refused (not declared on the node serving it)",
            &s.refused,
        ),
        (
            "subscriptions",
            Kind::Gauge,
            "topic prefixes subscribers asked for",
            &s.subscriptions,
        ),
    ];
    for (name, kind, help, v) in rows {
        let name = format!("catchd_bus_{name}");
        m.of(kind, &name, help).sample(
            &[("node", node)],
            crate::telemetry::count(v.load(Ordering::Relaxed)),
        );
    }
}
