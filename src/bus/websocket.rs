//! The bus through Zeek's WebSocket API (`Cluster::listen_websocket`, Zeek 7.2 and later;
//! zeekctl's `UseWebSocket`), for sites that do not expose their ZeroMQ proxy.
//!
//! The client connects to `ws://HOST:PORT/v1/messages/json` (or `wss://` with TLS), sends
//! the topic prefixes it subscribes to as a JSON array, and waits for Zeek's `ack`. After
//! that each text frame is one event in either direction, a `data-message` in
//! `broker-json-v1` with its topic. Zeek turns each event a client publishes into a Zeek
//! event on the host node and publishes it to the cluster from there, so the host must
//! declare it (load `policy/frameworks/netcontrol/catch-and-release` on the manager, and
//! the catchd package for the NetControl plugin's events); Zeek answers an undeclared one
//! with an `error` message, which catchd counts as refused.
//!
//! The events, topics, queues and counters are the ZeroMQ node's ([`super::Node`]);
//! what differs: there is no sender id (Zeek does not send one back), a client never
//! receives what it published itself, and the subscriptions of other nodes are not
//! visible, so events are sent as soon as the connection is up. While it is down, events
//! are held as for a topic without subscribers (up to [`BACKLOG`] for [`GRACE`]). The
//! connection is retried with a back-off from 1 s to 30 s; a failed attempt is logged and
//! counted (`catchd_bus_handshake_failures_total`).

use std::collections::VecDeque;
use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

use super::{BACKLOG, Ends, GRACE, Outgoing, TURN, count, deliver, worth_logging};
use crate::broker::json::{self, WsMessage};

/// The path of Zeek's JSON WebSocket API; Zeek refuses any other.
pub const PATH: &str = "/v1/messages/json";

/// Zeek's default WebSocket port (zeekctl `WebSocketPort`).
pub const DEFAULT_PORT: u16 = 27759;

/// The largest message read from Zeek (a catch-and-release event is well under 1 KiB).
const MAX_MESSAGE: usize = 1 << 20;

/// What is buffered towards Zeek before sending waits.
const MAX_WRITE_BUFFER: usize = 4 << 20;

/// How long connecting, the TLS and WebSocket handshakes and the `ack` may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Back-off between connection attempts.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// How to reach Zeek's WebSocket API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The URL as given, with Zeek's path when none was given.
    pub url: String,
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// `wss://`.
    pub tls: bool,
    /// PEM file of the CA (or self-signed certificate) to trust for `wss://` instead of
    /// the system's CA store.
    pub ca_file: Option<PathBuf>,
}

impl Target {
    /// Reads `ws://HOST[:PORT][/v1/messages/json]` or the same with `wss://`.
    ///
    /// # Errors
    /// A message saying what is wrong with the URL.
    pub fn parse(url: &str, ca_file: Option<&Path>) -> Result<Target, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("ws://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("wss://") {
            (true, r)
        } else {
            return Err(format!(
                "`{url}` is not a WebSocket URL (ws://HOST:PORT{PATH} or wss://…)"
            ));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if !(path.is_empty() || path == "/" || path == PATH) {
            return Err(format!(
                "the path must be {PATH} (Zeek's JSON API refuses any other), not `{path}`"
            ));
        }
        let (host, port) = split_host_port(authority)?;
        if ca_file.is_some() && !tls {
            return Err("a CA file is only for wss:// URLs".into());
        }
        let scheme = if tls { "wss" } else { "ws" };
        let shown = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        Ok(Target {
            url: format!("{scheme}://{shown}:{port}{PATH}"),
            host,
            port,
            tls,
            ca_file: ca_file.map(Path::to_path_buf),
        })
    }
}

fn split_host_port(authority: &str) -> Result<(String, u16), String> {
    if authority.contains('@') {
        return Err("user information in the URL is not supported".into());
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or_else(|| "an IPv6 address needs its closing `]`".to_string())?;
        (h, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("no host in the URL".into());
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("`{p}` is not a port"))?,
    };
    Ok((host.to_string(), port))
}

/// The TLS set-up for `wss://`: the CA file's certificates, or the system's CA store.
fn tls_connector(t: &Target) -> Result<Option<tungstenite::Connector>, String> {
    if !t.tls {
        return Ok(None);
    }
    let mut roots = rustls::RootCertStore::empty();
    match &t.ca_file {
        Some(path) => {
            use rustls_pki_types::CertificateDer;
            use rustls_pki_types::pem::PemObject;
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            for c in certs {
                let c = c.map_err(|e| format!("{}: {e}", path.display()))?;
                roots
                    .add(c)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("{}: no certificate in it", path.display()));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(
                    "no CA certificates in the system's store (install ca-certificates, \
                     or give bus.websocket_ca_file)"
                        .into(),
                );
            }
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Some(tungstenite::Connector::Rustls(Arc::new(config))))
}

type Ws = WebSocket<MaybeTlsStream<TcpStream>>;

/// The WebSocket client's thread: one connection at a time, retried while it is down.
pub(super) struct Worker {
    target: Target,
    subscribe: Vec<String>,
    node_id: String,
    ends: Ends,
    ws: Option<Ws>,
    /// Events waiting for the connection (oldest first), with when they were queued.
    held: VecDeque<(Instant, Outgoing)>,
    next_try: Instant,
    backoff: Duration,
    /// Whether written frames wait in the socket's buffer.
    want_write: bool,
    failures: u64,
    text: String,
}

impl Worker {
    pub(super) fn new(
        target: Target,
        subscribe: Vec<String>,
        node_id: String,
        ends: Ends,
    ) -> Worker {
        Worker {
            target,
            subscribe,
            node_id,
            ends,
            ws: None,
            held: VecDeque::new(),
            next_try: Instant::now(),
            backoff: RETRY_MIN,
            want_write: false,
            failures: 0,
            text: String::with_capacity(1024),
        }
    }

    pub(super) fn run(&mut self) {
        while !self.ends.stop.load(Ordering::Acquire) {
            if self.ws.is_none() && Instant::now() >= self.next_try {
                self.connect();
            }
            self.wait();
            self.ends.pending.store(false, Ordering::Release);
            if self.ws.is_some() {
                self.receive();
            }
            self.take_queued();
            if self.ws.is_some() {
                self.send_held();
            }
            self.expire_held();
        }
        // Send what is queued, briefly, and say goodbye.
        self.take_queued();
        self.send_held();
        if let Some(ws) = self.ws.as_mut() {
            let _ = ws.close(None);
            let deadline = Instant::now() + Duration::from_millis(500);
            while Instant::now() < deadline {
                match ws.flush() {
                    Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    _ => break,
                }
            }
        }
    }

    /// Waits for the socket, the wake-up pipe or the next attempt (at most 200 ms).
    fn wait(&mut self) {
        let mut wake_buf = [0u8; 256];
        let mut timeout = 200u16;
        if self.ws.is_none() {
            let left = self.next_try.saturating_duration_since(Instant::now());
            timeout = timeout.min(u16::try_from(left.as_millis()).unwrap_or(u16::MAX));
        }
        {
            let sock = self.ws.as_ref().map(tcp_of);
            let mut fds = vec![PollFd::new(self.ends.wake.as_fd(), PollFlags::POLLIN)];
            if let Some(s) = sock {
                let mut ev = PollFlags::POLLIN;
                if self.want_write {
                    ev |= PollFlags::POLLOUT;
                }
                fds.push(PollFd::new(s.as_fd(), ev));
            }
            // Work already queued: look without waiting.
            let t = if self.ends.out.is_empty() || self.ws.is_none() {
                timeout
            } else {
                0
            };
            let _ = poll(&mut fds, PollTimeout::from(t));
        }
        while matches!((&self.ends.wake).read(&mut wake_buf), Ok(n) if n > 0) {}
    }

    fn connect(&mut self) {
        match open(&self.target, &self.subscribe) {
            Ok((ws, endpoint, version)) => {
                tracing::info!(
                    node = %self.node_id,
                    url = %self.target.url,
                    endpoint = %endpoint,
                    zeek = %version,
                    "Bus: joined Zeek's WebSocket API."
                );
                self.ends
                    .stats
                    .subscriptions
                    .store(self.subscribe.len() as u64, Ordering::Relaxed);
                self.ws = Some(ws);
                self.backoff = RETRY_MIN;
                self.failures = 0;
                self.want_write = false;
            }
            Err(msg) => {
                self.failures += 1;
                count(&self.ends.stats.handshake_failures);
                if worth_logging(self.failures) {
                    tracing::error!(
                        url = %self.target.url,
                        failures = self.failures,
                        retry_in = ?self.backoff,
                        "Bus: cannot join Zeek's WebSocket API: {msg}"
                    );
                }
                self.next_try = Instant::now() + self.backoff;
                self.backoff = (self.backoff * 2).min(RETRY_MAX);
            }
        }
    }

    fn disconnect(&mut self, why: &str) {
        tracing::warn!(url = %self.target.url, "Bus: the WebSocket connection ended ({why}); reconnecting.");
        self.ws = None;
        self.ends.stats.subscriptions.store(0, Ordering::Relaxed);
        self.next_try = Instant::now() + RETRY_MIN;
        self.backoff = RETRY_MIN;
    }

    fn receive(&mut self) {
        for _ in 0..TURN {
            let Some(ws) = self.ws.as_mut() else { return };
            match ws.read() {
                Ok(Message::Text(t)) => self.message(t.as_bytes()),
                Ok(Message::Binary(_)) => {
                    let n = count(&self.ends.stats.malformed);
                    if worth_logging(n) {
                        tracing::warn!(
                            malformed = n,
                            "Bus: a binary WebSocket frame (Zeek sends text)."
                        );
                    }
                }
                Ok(Message::Close(_)) => {
                    self.disconnect("Zeek closed it");
                    return;
                }
                // Pings are answered by the library when it next writes.
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {
                    self.want_write = true;
                }
                Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    self.disconnect(&e.to_string());
                    return;
                }
            }
        }
    }

    fn message(&mut self, b: &[u8]) {
        match json::decode_ws(b) {
            Ok(WsMessage::Data { topic, event }) => {
                deliver(
                    &self.ends.stats,
                    &self.ends.incoming,
                    topic,
                    "websocket".into(),
                    event,
                );
            }
            Ok(WsMessage::Error { code, context }) => {
                let n = count(&self.ends.stats.refused);
                if worth_logging(n) {
                    tracing::warn!(refused = n, %code, "Bus: Zeek refused an event: {context}");
                }
            }
            Ok(WsMessage::Ack { .. }) => {}
            Err(e) => {
                let n = count(&self.ends.stats.malformed);
                if worth_logging(n) {
                    tracing::warn!(malformed = n, "Bus: bad WebSocket message: {e}");
                }
            }
        }
    }

    /// Moves what publishers queued to `held`, dropping the oldest beyond [`BACKLOG`].
    fn take_queued(&mut self) {
        for _ in 0..TURN {
            let Ok(o) = self.ends.out.try_recv() else {
                return;
            };
            if self.held.len() >= BACKLOG {
                self.held.pop_front();
                count(&self.ends.stats.unsubscribed_drops);
            }
            self.held.push_back((Instant::now(), o));
        }
    }

    fn send_held(&mut self) {
        let Some(ws) = self.ws.as_mut() else { return };
        while let Some((_, o)) = self.held.front() {
            self.text.clear();
            json::encode_ws_data(&o.topic, &o.event, &mut self.text);
            match ws.write(Message::text(self.text.as_str())) {
                Ok(()) => {
                    self.held.pop_front();
                    count(&self.ends.stats.published);
                }
                // Buffered; it goes out with the next flush.
                Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => {
                    self.held.pop_front();
                    count(&self.ends.stats.published);
                    self.want_write = true;
                }
                // Zeek is not reading: keep the event and try again later.
                Err(tungstenite::Error::WriteBufferFull(_)) => {
                    self.want_write = true;
                    break;
                }
                Err(e) => {
                    self.disconnect(&e.to_string());
                    return;
                }
            }
        }
        match ws.flush() {
            Ok(()) => self.want_write = false,
            Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => {
                self.want_write = true;
            }
            Err(e) => self.disconnect(&e.to_string()),
        }
    }

    fn expire_held(&mut self) {
        while let Some((t, _)) = self.held.front() {
            if t.elapsed() < GRACE {
                break;
            }
            self.held.pop_front();
            count(&self.ends.stats.unsubscribed_drops);
        }
    }
}

/// A TLS error, with what to do about the usual ones.
fn with_hint(msg: String) -> String {
    let hint = if msg.contains("CaUsedAsEndEntity") {
        " (the server's certificate is a CA certificate; a self-signed one needs \
         basicConstraints CA:FALSE, e.g. openssl req -x509 … -addext \
         basicConstraints=critical,CA:FALSE)"
    } else if msg.contains("NotValidForName") {
        " (the certificate does not name the host in the URL)"
    } else if msg.contains("invalid peer certificate") {
        " (not signed by a CA catchd trusts: give its CA, or the self-signed certificate, \
         as bus.websocket_ca_file)"
    } else {
        ""
    };
    msg + hint
}

fn tcp_of(ws: &Ws) -> &TcpStream {
    match ws.get_ref() {
        MaybeTlsStream::Plain(s) => s,
        MaybeTlsStream::Rustls(s) => s.get_ref(),
        _ => unreachable!("only plain and rustls streams are made"),
    }
}

/// Connects, shakes hands, subscribes and waits for the `ack`; returns the socket (now
/// non-blocking), the endpoint id Zeek gave it and Zeek's version.
fn open(t: &Target, subscribe: &[String]) -> Result<(Ws, String, String), String> {
    let addrs: Vec<SocketAddr> = (t.host.as_str(), t.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", t.host))?
        .collect();
    let mut last = format!("{} has no address", t.host);
    let mut stream = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = format!("connect {a}: {e}"),
        }
    }
    let stream = stream.ok_or(last)?;
    stream
        .set_read_timeout(Some(CONNECT_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(CONNECT_TIMEOUT)))
        .and_then(|()| stream.set_nodelay(true))
        .map_err(|e| e.to_string())?;
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
        .max_write_buffer_size(MAX_WRITE_BUFFER);
    let connector = tls_connector(t)?;
    let (mut ws, _response) =
        tungstenite::client_tls_with_config(t.url.as_str(), stream, Some(config), connector)
            .map_err(|e| match e {
                tungstenite::HandshakeError::Failure(e) => with_hint(e.to_string()),
                tungstenite::HandshakeError::Interrupted(_) => "the handshake timed out".into(),
            })?;
    ws.send(Message::text(json::ws_subscriptions(subscribe)))
        .map_err(|e| e.to_string())?;
    let (endpoint, version) = loop {
        match ws
            .read()
            .map_err(|e| format!("waiting for Zeek's ack: {e}"))?
        {
            Message::Text(m) => match json::decode_ws(m.as_bytes()) {
                Ok(WsMessage::Ack { endpoint, version }) => break (endpoint, version),
                Ok(WsMessage::Error { code, context }) => {
                    return Err(format!("Zeek refused the subscription: {code}: {context}"));
                }
                _ => return Err("Zeek's first message was not an ack".into()),
            },
            Message::Close(f) => {
                return Err(format!(
                    "Zeek closed the connection{}",
                    f.map(|f| format!(": {}", f.reason)).unwrap_or_default()
                ));
            }
            _ => {}
        }
    };
    tcp_of(&ws)
        .set_nonblocking(true)
        .map_err(|e| e.to_string())?;
    Ok((ws, endpoint, version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_completed() {
        let t = Target::parse("ws://zeek-manager", None).unwrap();
        assert_eq!(t.url, "ws://zeek-manager:27759/v1/messages/json");
        assert!(!t.tls);
        let t = Target::parse("wss://[::1]:9997/v1/messages/json", None).unwrap();
        assert_eq!((t.host.as_str(), t.port, t.tls), ("::1", 9997, true));
        assert_eq!(t.url, "wss://[::1]:9997/v1/messages/json");
        for (bad, says) in [
            ("http://x", "not a WebSocket URL"),
            ("ws://x/v1/messages/bin", "the path must be"),
            ("ws://:80", "no host"),
            ("ws://x:0", "is not a port"),
            ("ws://x:99999", "is not a port"),
            ("ws://u@x", "user information"),
            ("ws://[::1", "closing"),
        ] {
            let e = Target::parse(bad, None).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert!(
            Target::parse("ws://x", Some(Path::new("/ca.pem")))
                .unwrap_err()
                .contains("only for wss")
        );
    }
}
