//! HTTP/1.1 connections: the accept loop, and everything that bounds what one client can
//! hold. The only module that drives hyper directly; the routes are an axum [`Router`].
//!
//! * **Connections** are capped ([`Settings::max_connections`], never more than half the
//!   file descriptors the process may open): past the cap, new connections wait in the
//!   kernel's backlog until one closes. A failed `accept` (out of descriptors) backs off
//!   instead of spinning.
//! * **Request heads** must arrive whole within [`Settings::header_timeout`] of the
//!   connection opening, or of the first byte of a later request. A connection that
//!   trickles bytes (slowloris) is closed then.
//! * **Idle keep-alive connections** are closed after [`Settings::idle_timeout`].
//! * **Slow readers**: a response whose writing makes no progress for
//!   [`Settings::write_timeout`] ends the connection, so a client that stops reading
//!   cannot hold a large answer in memory. Bodies are streamed with backpressure.
//! * **Shutdown**: once `shutdown` completes no connection is accepted, idle ones close at
//!   once, and requests in flight get [`Settings::shutdown_grace`] to finish; what is
//!   left then is closed.
//! * **Errors hyper answers itself** (a request line or header it cannot parse: 400, a URI
//!   over 64 KiB: 414, too many or too large headers: 431) get a JSON body in BHR's error
//!   shape, like every other error: hyper writes them with an empty body before any
//!   handler runs, and `Io` replaces them on the way out.
//!
//! Every request carries the client's address as a [`ClientAddr`] extension.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// The address of the client a request came from (an extension of every request).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// What a connection may hold, and for how long.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// A request head must arrive whole within this.
    pub header_timeout: Duration,
    /// A keep-alive connection with no request is closed after this.
    pub idle_timeout: Duration,
    /// A response that cannot be written for this long ends the connection.
    pub write_timeout: Duration,
    /// Connections open at once, at most (further ones wait in the backlog).
    pub max_connections: usize,
    /// On shutdown, requests in flight get this long to finish.
    pub shutdown_grace: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(30),
            max_connections: 1024,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Counters of the connection layer.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections open now.
    pub open: AtomicU64,
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// `accept` failures (out of file descriptors, …).
    pub accept_errors: AtomicU64,
    /// Closed because a request head did not arrive in time.
    pub header_timeouts: AtomicU64,
    /// Closed because they were idle.
    pub idle_closed: AtomicU64,
    /// Closed because a response could not be written in time.
    pub write_timeouts: AtomicU64,
    /// Requests hyper refused before any handler (400, 414, 431).
    pub refused: AtomicU64,
    /// Closed at shutdown with a request still in flight.
    pub cut_at_shutdown: AtomicU64,
    /// The cap in force.
    pub max_connections: AtomicU64,
}

impl Stats {
    /// The counters, for `/metrics`.
    pub fn collect(&self, m: &mut crate::telemetry::Metrics) {
        use crate::telemetry::Kind;
        let v = |a: &AtomicU64| a.load(Ordering::Relaxed);
        for (name, kind, help, n) in [
            (
                "connections_open",
                Kind::Gauge,
                "HTTP connections open",
                v(&self.open),
            ),
            (
                "connections_max",
                Kind::Gauge,
                "HTTP connections allowed at once",
                v(&self.max_connections),
            ),
            (
                "connections_total",
                Kind::Counter,
                "HTTP connections accepted",
                v(&self.accepted),
            ),
            (
                "accept_errors_total",
                Kind::Counter,
                "failed accepts (such as running out of file descriptors)",
                v(&self.accept_errors),
            ),
            (
                "header_timeouts_total",
                Kind::Counter,
                "connections closed because a request head was not sent in time",
                v(&self.header_timeouts),
            ),
            (
                "idle_closed_total",
                Kind::Counter,
                "idle keep-alive connections closed",
                v(&self.idle_closed),
            ),
            (
                "write_timeouts_total",
                Kind::Counter,
                "connections closed because the client did not read the answer",
                v(&self.write_timeouts),
            ),
            (
                "refused_total",
                Kind::Counter,
                "requests refused before any handler (unreadable, URI or headers too large)",
                v(&self.refused),
            ),
            (
                "cut_at_shutdown_total",
                Kind::Counter,
                "requests still in flight when the shutdown grace ran out",
                v(&self.cut_at_shutdown),
            ),
        ] {
            m.of(kind, &format!("catchd_http_{name}"), help)
                .value(crate::telemetry::count(n));
        }
    }
}

/// The connection cap in force: the setting, but never more than half the file
/// descriptors this process may open (the rest are for the database, captures, logs and
/// sockets of its own), and at least 16.
pub fn connection_cap(configured: usize) -> usize {
    let fds = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(1024, |(soft, _)| soft);
    let half = usize::try_from(fds / 2).unwrap_or(usize::MAX);
    configured.min(half).max(16)
}

/// Raises the soft limit on open files to the hard limit (systemd starts services with a
/// soft limit of 1024). Returns the soft limit now in force.
pub fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(_) => soft,
        },
        Ok((soft, _)) => soft,
        Err(_) => 1024,
    }
}

/// Milliseconds since a connection began (the clock of [`Shared`]).
fn ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
}

const NONE: u64 = u64::MAX;

/// The longest a watchdog sleeps on a busy connection before it looks again.
const RECHECK: Duration = Duration::from_secs(1);

/// What a connection's parts (its socket, its service, its response bodies) tell its
/// watchdog. Times are milliseconds since `born`.
struct Shared {
    born: Instant,
    /// A request is being served: its head was read, its response is not finished.
    busy: AtomicBool,
    /// Requests whose service was called.
    requests: AtomicU64,
    /// Final response heads written (each answers one of `requests`).
    heads: AtomicU64,
    /// When waiting for the next head began (the start, or the end of a response).
    waiting_since: AtomicU64,
    /// When the first byte of the next head arrived (`NONE`: none yet).
    first_byte: AtomicU64,
    /// When a write began to wait for the client (`NONE`: not waiting).
    write_blocked: AtomicU64,
    /// Told of every change above that can bring a deadline closer.
    wake: tokio::sync::Notify,
    /// One of hyper's own error answers was replaced.
    refused: AtomicBool,
}

impl Shared {
    fn new() -> Shared {
        Shared {
            born: Instant::now(),
            busy: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            heads: AtomicU64::new(0),
            waiting_since: AtomicU64::new(0),
            first_byte: AtomicU64::new(NONE),
            write_blocked: AtomicU64::new(NONE),
            wake: tokio::sync::Notify::new(),
            refused: AtomicBool::new(false),
        }
    }

    fn now(&self) -> u64 {
        ms(self.born)
    }

    // Starting and finishing a request only move deadlines later (the watchdog re-checks
    // a busy connection at least every `RECHECK`), so they wake nobody: the watchdog costs
    // one wake-up per request, on the first byte of its head.

    fn request_started(&self) {
        self.busy.store(true, Ordering::Release);
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.first_byte.store(NONE, Ordering::Relaxed);
    }

    fn response_finished(&self) {
        self.waiting_since.store(self.now(), Ordering::Relaxed);
        self.first_byte.store(NONE, Ordering::Relaxed);
        self.busy.store(false, Ordering::Release);
    }

    fn read_some(&self) {
        if !self.busy.load(Ordering::Acquire) && self.first_byte.load(Ordering::Relaxed) == NONE {
            self.first_byte.store(self.now(), Ordering::Relaxed);
            self.wake.notify_one();
        }
    }

    fn write_waits(&self) {
        if self.write_blocked.load(Ordering::Relaxed) == NONE {
            self.write_blocked.store(self.now(), Ordering::Relaxed);
            self.wake.notify_one();
        }
    }

    fn write_went(&self) {
        self.write_blocked.store(NONE, Ordering::Relaxed);
    }

    /// When to look again: the next deadline, or for a busy connection a re-check (its
    /// idle deadline will start from the end of the response, later than that).
    fn wake_at(&self, s: &Settings) -> u64 {
        match self.deadline(s) {
            Some((t, _)) => t,
            None => self.now().saturating_add(
                u64::try_from(RECHECK.min(s.idle_timeout).as_millis()).unwrap_or(NONE),
            ),
        }
    }

    /// The next deadline, and why the connection would be closed at it.
    fn deadline(&self, s: &Settings) -> Option<(u64, Why)> {
        let add =
            |t: u64, d: Duration| t.saturating_add(u64::try_from(d.as_millis()).unwrap_or(NONE));
        let mut next: Option<(u64, Why)> = None;
        let mut consider = |t: u64, why: Why| {
            if next.is_none_or(|(n, _)| t < n) {
                next = Some((t, why));
            }
        };
        let wb = self.write_blocked.load(Ordering::Relaxed);
        if wb != NONE {
            consider(add(wb, s.write_timeout), Why::WriteTimeout);
        }
        if !self.busy.load(Ordering::Acquire) {
            let first = self.first_byte.load(Ordering::Relaxed);
            if first != NONE {
                consider(add(first, s.header_timeout), Why::HeaderTimeout);
            } else if self.requests.load(Ordering::Relaxed) == 0 {
                consider(
                    add(self.waiting_since.load(Ordering::Relaxed), s.header_timeout),
                    Why::HeaderTimeout,
                );
            } else {
                consider(
                    add(self.waiting_since.load(Ordering::Relaxed), s.idle_timeout),
                    Why::Idle,
                );
            }
        }
        next
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Why {
    HeaderTimeout,
    Idle,
    WriteTimeout,
}

/// Serves `app` on `listener` until `shutdown` completes, then lets requests in flight
/// finish for at most [`Settings::shutdown_grace`] and closes what is left.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    settings: Settings,
    stats: Arc<Stats>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let cap = connection_cap(settings.max_connections);
    stats.max_connections.store(cap as u64, Ordering::Relaxed);
    if cap < settings.max_connections {
        tracing::warn!(
            configured = settings.max_connections,
            cap,
            "server.max_connections is more than half the open-file limit allows; raise \
             the limit (LimitNOFILE= in systemd) to serve that many."
        );
    }
    let permits = Arc::new(tokio::sync::Semaphore::new(cap));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut conns = tokio::task::JoinSet::new();
    let settings = Arc::new(settings);
    tokio::pin!(shutdown);
    let mut backoff = Duration::from_millis(10);
    loop {
        let permit = tokio::select! {
            biased;
            () = &mut shutdown => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            a = listener.accept() => a,
        };
        // Reap what has finished, so the set holds only live connections.
        while conns.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(a) => {
                backoff = Duration::from_millis(10);
                a
            }
            Err(e) => {
                stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "Cannot accept a connection; backing off.");
                drop(permit);
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        stats.open.fetch_add(1, Ordering::Relaxed);
        let (app, settings, stats, stop) = (
            app.clone(),
            settings.clone(),
            stats.clone(),
            stop_rx.clone(),
        );
        conns.spawn(async move {
            let refused = connection(stream, peer, app, &settings, &stats, stop).await;
            if refused {
                stats.refused.fetch_add(1, Ordering::Relaxed);
            }
            stats.open.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Each connection ends itself within the grace; this is a backstop.
    let backstop = settings.shutdown_grace + Duration::from_secs(1);
    if tokio::time::timeout(backstop, async {
        while conns.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        conns.abort_all();
    }
}

/// One connection: hyper serving `app`, watched for the deadlines of [`Settings`].
/// Returns whether one of hyper's own error answers was replaced on it.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    settings: &Settings,
    stats: &Stats,
    stop: tokio::sync::watch::Receiver<bool>,
) -> bool {
    let shared = Arc::new(Shared::new());
    watch(stream, peer, app, settings, stats, stop, &shared).await;
    shared.refused.load(Ordering::Relaxed)
}

async fn watch(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    settings: &Settings,
    stats: &Stats,
    mut stop: tokio::sync::watch::Receiver<bool>,
    shared: &Arc<Shared>,
) {
    let io = Io {
        inner: stream,
        shared: shared.clone(),
        rewrite: None,
        swallow: false,
        retrying: false,
    };
    let svc_shared = shared.clone();
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            svc_shared.request_started();
            req.extensions_mut().insert(ClientAddr(peer));
            let shared = svc_shared.clone();
            let call = tower::ServiceExt::oneshot(app.clone(), req.map(axum::body::Body::new));
            async move {
                let r = match call.await {
                    Ok(r) => r,
                    Err(never) => match never {},
                };
                Ok::<_, std::convert::Infallible>(r.map(|body| Watched {
                    inner: body,
                    shared: Some(shared),
                }))
            }
        });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.keep_alive(true).header_read_timeout(None);
    let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut grace: Option<Instant> = None;
    loop {
        let at = shared.born + Duration::from_millis(shared.wake_at(settings));
        let at = grace.map_or(at, |g| at.min(g));
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "HTTP connection ended with an error.");
                }
                return;
            }
            () = shared.wake.notified() => {}
            r = stop.changed(), if grace.is_none() => {
                let _ = r;
                grace = Some(Instant::now() + settings.shutdown_grace);
                conn.as_mut().graceful_shutdown();
            }
            () = tokio::time::sleep_until(at) => {
                if grace.is_some_and(|g| Instant::now() >= g) {
                    if shared.busy.load(Ordering::Acquire) {
                        stats.cut_at_shutdown.fetch_add(1, Ordering::Relaxed);
                    }
                    return;
                }
                // Recheck: activity may have moved the deadline on since it was read.
                if let Some((t, why)) = shared.deadline(settings)
                    && shared.now() >= t
                {
                    let counter = match why {
                        Why::HeaderTimeout => &stats.header_timeouts,
                        Why::Idle => &stats.idle_closed,
                        Why::WriteTimeout => &stats.write_timeouts,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, ?why, "Closing an HTTP connection.");
                    return;
                }
            }
        }
    }
}

/// A response body that tells the connection when it is done (finished or dropped).
struct Watched {
    inner: axum::body::Body,
    shared: Option<Arc<Shared>>,
}

impl Watched {
    fn done(&mut self) {
        if let Some(s) = self.shared.take() {
            s.response_finished();
        }
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.done();
    }
}

impl http_body::Body for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(r, Poll::Ready(None)) {
            self.done();
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The socket as hyper sees it: reads and writes tell [`Shared`] what happens, and an
/// error answer hyper writes itself (no handler ran) is replaced by a JSON one.
struct Io {
    inner: TcpStream,
    shared: Arc<Shared>,
    /// The JSON answer being written in place of hyper's, and how much of it is out.
    rewrite: Option<(Vec<u8>, usize)>,
    /// Hyper's own answer was replaced: the rest of it goes nowhere.
    swallow: bool,
    /// The last write waited: the next one is hyper trying the same bytes again (already
    /// looked at).
    retrying: bool,
}

/// The JSON answer for an error status hyper writes without a handler.
fn json_error(status: u16) -> Vec<u8> {
    let (reason, detail) = match status {
        400 => (
            "Bad Request",
            "Bad request: the request line or a header could not be read.",
        ),
        414 => ("URI Too Long", "Request URI too long."),
        431 => (
            "Request Header Fields Too Large",
            "Request header fields too large.",
        ),
        505 => ("HTTP Version Not Supported", "HTTP version not supported."),
        _ => ("Error", "The request could not be served."),
    };
    let body = serde_json::json!({ "detail": detail }).to_string();
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Looks at a write that may begin a response head: counts the heads that answer the
/// requests handlers served, and returns the status of one hyper writes on its own (an
/// error answer to a request no handler saw).
///
/// Every final head (status 200 or more) answers one request whose service was called,
/// except hyper's own error answers; those are a whole, short head with an empty body,
/// written when every request so far has had its head.
fn own_error_status(shared: &Shared, buf: &[u8]) -> Option<u16> {
    if !buf.starts_with(b"HTTP/1.") || buf.len() < 12 || buf[8] != b' ' {
        return None;
    }
    let code = std::str::from_utf8(&buf[9..12]).ok()?.parse::<u16>().ok()?;
    if code < 200 {
        return None;
    }
    let (heads, requests) = (
        shared.heads.load(Ordering::Relaxed),
        shared.requests.load(Ordering::Acquire),
    );
    if heads < requests {
        shared.heads.fetch_add(1, Ordering::Relaxed);
        return None;
    }
    let whole_empty_head = buf.len() <= 512
        && buf.ends_with(b"\r\n\r\n")
        && buf
            .windows(19)
            .any(|w| w.eq_ignore_ascii_case(b"content-length: 0\r\n"));
    (whole_empty_head && (400..600).contains(&code)).then_some(code)
}

impl Io {
    /// Writes the pending replacement; `Ready(Ok(()))` once all of it is out.
    fn drain_rewrite(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while let Some((bytes, at)) = &mut self.rewrite {
            if *at >= bytes.len() {
                self.rewrite = None;
                self.swallow = true;
                break;
            }
            match Pin::new(&mut self.inner).poll_write(cx, &bytes[*at..]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => {
                    *at += n;
                    self.shared.write_went();
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    self.shared.write_waits();
                    return Poll::Pending;
                }
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Looks at a fresh write (not a retry of one that waited) for one of hyper's own
    /// error answers, and arranges to replace it.
    fn look(&mut self, first: &[u8]) {
        if self.swallow || self.rewrite.is_some() || self.retrying {
            return;
        }
        if let Some(code) = own_error_status(&self.shared, first) {
            self.rewrite = Some((json_error(code), 0));
            self.shared.refused.store(true, Ordering::Relaxed);
        }
    }

    fn write_one(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        if self.swallow {
            return Poll::Ready(Ok(buf.len()));
        }
        let r = if self.rewrite.is_some() {
            match self.drain_rewrite(cx) {
                Poll::Ready(Ok(())) => Poll::Ready(Ok(buf.len())),
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        } else {
            let r = Pin::new(&mut self.inner).poll_write(cx, buf);
            self.track(r)
        };
        self.retrying = r.is_pending();
        r
    }

    fn track(&self, r: Poll<std::io::Result<usize>>) -> Poll<std::io::Result<usize>> {
        match &r {
            Poll::Pending => self.shared.write_waits(),
            Poll::Ready(Ok(n)) if *n > 0 => self.shared.write_went(),
            Poll::Ready(_) => {}
        }
        r
    }
}

impl AsyncRead for Io {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.shared.read_some();
        }
        r
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.look(buf);
        self.write_one(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let first = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &**b);
        self.look(first);
        if self.swallow || self.rewrite.is_some() {
            return self.write_one(cx, first);
        }
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        let r = self.track(r);
        self.retrying = r.is_pending();
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.rewrite.is_some() {
            match self.drain_rewrite(cx) {
                Poll::Ready(Ok(())) => {}
                other => return other,
            }
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.rewrite.is_some() {
            match self.drain_rewrite(cx) {
                Poll::Ready(Ok(())) => {}
                other => return other,
            }
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
