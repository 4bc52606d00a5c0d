//! CURVE encryption and authentication on the bus, as Zeek 8.2's ZeroMQ backend does it:
//! the proxy's XPUB and XSUB are CURVE servers holding the server secret key, and a ZAP
//! handler admits only the cluster's one client public key; every node connects with the
//! server public key and the shared client keypair.
//!
//! Keys are written in Z85 (40 characters for 32 bytes), the form Zeek's
//! `Cluster::Backend::ZeroMQ::generate_keypair()` and `catchd curve-keypair` print.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

/// The environment variables Zeek reads its keys from (when its script-level options are
/// unset), in the order of [`Keys`]'s fields.
pub const ENV: [&str; 4] = [
    "ZEEK_CLUSTER_BACKEND_ZEROMQ_CURVE_SERVER_PUBLICKEY",
    "ZEEK_CLUSTER_BACKEND_ZEROMQ_CURVE_SERVER_SECRETKEY",
    "ZEEK_CLUSTER_BACKEND_ZEROMQ_CURVE_CLIENT_PUBLICKEY",
    "ZEEK_CLUSTER_BACKEND_ZEROMQ_CURVE_CLIENT_SECRETKEY",
];

/// The `[bus]` keys for the same four values.
pub const KEYS: [&str; 4] = [
    "bus.curve_server_publickey",
    "bus.curve_server_secretkey",
    "bus.curve_client_publickey",
    "bus.curve_client_secretkey",
];

// libzmq's, linked through zmq-sys (which declares it but does not export it).
unsafe extern "C" {
    fn zmq_curve_public(
        z85_public_key: *mut std::ffi::c_char,
        z85_secret_key: *const std::ffi::c_char,
    ) -> std::ffi::c_int;
}

/// Where libzmq looks for the ZAP handler of a context (RFC 27).
const ZAP_ENDPOINT: &str = "inproc://zeromq.zap.01";

/// A CURVE key: 32 bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Key([u8; 32]);

impl Key {
    /// Reads a key in Z85.
    ///
    /// # Errors
    /// A message saying what is wrong with the text.
    pub fn from_z85(s: &str) -> Result<Key, String> {
        if s.len() != 40 {
            return Err(format!(
                "a CURVE key is 40 Z85 characters, this is {} long",
                s.len()
            ));
        }
        const Z85: &[u8] =
            b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";
        if let Some(c) = s.bytes().find(|b| !Z85.contains(b)) {
            return Err(format!(
                "is not Z85: `{}` is not one of its characters",
                c.escape_ascii()
            ));
        }
        let bytes = zmq::z85_decode(s).map_err(|_| "is not valid Z85".to_string())?;
        <[u8; 32]>::try_from(bytes.as_slice())
            .map(Key)
            .map_err(|_| "is not valid Z85".to_string())
    }

    /// The key in Z85.
    pub fn z85(&self) -> String {
        zmq::z85_encode(&self.0).expect("32 bytes are a multiple of 4")
    }

    /// The public key that belongs to this secret key.
    pub fn public_of(secret: &Key) -> Key {
        let mut public = [0u8; 41];
        let mut z85 = [0u8; 41];
        z85[..40].copy_from_slice(secret.z85().as_bytes());
        // SAFETY: both buffers are 41 bytes, NUL-terminated Z85 as zmq_curve_public
        // expects; it writes 40 characters and a NUL into `public`.
        let rc = unsafe { zmq_curve_public(public.as_mut_ptr().cast(), z85.as_ptr().cast()) };
        assert_eq!(rc, 0, "libzmq has CURVE (checked by available())");
        let text = std::str::from_utf8(&public[..40]).expect("Z85 is ASCII");
        Key::from_z85(text).expect("libzmq writes valid Z85")
    }

    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Key {
    // Secret keys must not reach a log through `{:?}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(..)")
    }
}

/// A new keypair: (public, secret).
///
/// # Errors
/// libzmq's error (no CURVE in this libzmq).
pub fn keypair() -> Result<(Key, Key), zmq::Error> {
    let pair = zmq::CurveKeyPair::new()?;
    Ok((Key(pair.public_key), Key(pair.secret_key)))
}

/// Whether this build's libzmq has CURVE (Debian's has; the zmq-sys crate's bundled
/// build has not).
pub fn available() -> bool {
    zmq::has("curve").unwrap_or(false)
}

/// The four keys as given (each may be missing), from the configuration or from Zeek's
/// environment variables.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Keys {
    /// The proxy's public key.
    pub server_public: Option<Key>,
    /// The proxy's secret key (only a process hosting the proxy needs it).
    pub server_secret: Option<Key>,
    /// The cluster's client public key (the proxy admits only it).
    pub client_public: Option<Key>,
    /// The cluster's client secret key.
    pub client_secret: Option<Key>,
}

/// What a process uses CURVE for: nodes connect as clients; a proxy is a server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Curve {
    /// The proxy's public key.
    pub server_public: Key,
    /// The proxy's secret key, when this process hosts the proxy.
    pub server_secret: Option<Key>,
    /// The client keypair: public.
    pub client_public: Key,
    /// The client keypair: secret (`None` in a process that only hosts the proxy).
    pub client_secret: Option<Key>,
}

impl Keys {
    /// Reads the four values from Zeek's environment variables (through `get`).
    ///
    /// # Errors
    /// `(variable, problem)` for a value that is not a key.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Keys, (String, String)> {
        let mut k = [None; 4];
        for (slot, var) in k.iter_mut().zip(ENV) {
            if let Some(v) = get(var).filter(|v| !v.is_empty()) {
                *slot = Some(Key::from_z85(v.trim()).map_err(|m| (var.to_string(), m))?);
            }
        }
        Ok(Keys {
            server_public: k[0],
            server_secret: k[1],
            client_public: k[2],
            client_secret: k[3],
        })
    }

    /// Whether no key is given.
    pub fn is_empty(&self) -> bool {
        self == &Keys::default()
    }

    /// What a process needs, checked: `proxy` when it hosts the proxy, `node` when it
    /// joins the bus. `names` names the four values for messages ([`KEYS`] or [`ENV`]).
    /// `Ok(None)` when no key is given: the bus is not encrypted.
    ///
    /// # Errors
    /// `(name, problem)` for the first missing or inconsistent value.
    pub fn resolve(
        &self,
        proxy: bool,
        node: bool,
        names: &[&str; 4],
    ) -> Result<Option<Curve>, (String, String)> {
        if self.is_empty() {
            return Ok(None);
        }
        if !available() {
            return Err((
                names[0].into(),
                "this catchd's libzmq has no CURVE (build it against Debian's libzmq3-dev)".into(),
            ));
        }
        let missing = |i: usize, why: &str| (names[i].to_string(), format!("is needed {why}"));
        if proxy && self.server_secret.is_none() {
            return Err(missing(1, "to host the proxy with CURVE"));
        }
        let server_public = match (self.server_public, self.server_secret) {
            (Some(p), Some(s)) => {
                if Key::public_of(&s) != p {
                    return Err((
                        names[0].into(),
                        format!("is not the public key of {}", names[1]),
                    ));
                }
                p
            }
            (Some(p), None) => p,
            (None, Some(s)) => Key::public_of(&s),
            (None, None) => return Err(missing(0, "for CURVE (the proxy's public key)")),
        };
        let client_public = match (self.client_public, self.client_secret) {
            (Some(p), Some(s)) => {
                if Key::public_of(&s) != p {
                    return Err((
                        names[2].into(),
                        format!("is not the public key of {}", names[3]),
                    ));
                }
                p
            }
            (Some(p), None) if !node => p,
            (None, Some(s)) => Key::public_of(&s),
            (_, None) => {
                return Err(missing(
                    3,
                    "to join the bus with CURVE (the client keypair)",
                ));
            }
        };
        Ok(Some(Curve {
            server_public,
            server_secret: self.server_secret.filter(|_| proxy),
            client_public,
            client_secret: self.client_secret,
        }))
    }
}

impl Curve {
    /// Makes `s` a CURVE client of the proxy.
    pub(crate) fn client(&self, s: &zmq::Socket) -> zmq::Result<()> {
        let secret = self.client_secret.as_ref().ok_or(zmq::Error::EINVAL)?;
        s.set_curve_serverkey(self.server_public.bytes())?;
        s.set_curve_publickey(self.client_public.bytes())?;
        s.set_curve_secretkey(secret.bytes())
    }

    /// Makes `s` a CURVE server (a proxy socket).
    pub(crate) fn server(&self, s: &zmq::Socket) -> zmq::Result<()> {
        let secret = self.server_secret.as_ref().ok_or(zmq::Error::EINVAL)?;
        s.set_curve_server(true)?;
        s.set_curve_secretkey(secret.bytes())
    }
}

/// The ZAP handler of a proxy's context: admits the one client public key, refuses every
/// other (and every mechanism but CURVE). Must be started before the sockets bind.
pub(crate) struct Zap {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Zap {
    pub(crate) fn start(ctx: &zmq::Context, admit: Key) -> Result<Zap, super::Error> {
        let rep = ctx
            .socket(zmq::REP)
            .map_err(super::socket_err("socket", ZAP_ENDPOINT))?;
        rep.set_linger(0)
            .map_err(super::socket_err("LINGER", ZAP_ENDPOINT))?;
        rep.bind(ZAP_ENDPOINT)
            .map_err(super::socket_err("bind", ZAP_ENDPOINT))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("catchd-zap".into())
            .spawn(move || {
                let mut refused = 0u64;
                while !stopping.load(Ordering::Acquire) {
                    match rep.poll(zmq::POLLIN, 200) {
                        Ok(n) if n > 0 => {}
                        _ => continue,
                    }
                    let Ok(req) = rep.recv_multipart(0) else {
                        continue;
                    };
                    let (reply, ok) = zap_reply(&req, &admit);
                    if !ok {
                        refused += 1;
                        if refused <= 10 || refused.is_multiple_of(1000) {
                            let peer = req.get(3).map(|a| String::from_utf8_lossy(a).into_owned());
                            tracing::warn!(
                                peer = peer.as_deref().unwrap_or("?"),
                                refused,
                                "Bus proxy: refused a peer whose CURVE client key is not the cluster's."
                            );
                        }
                    }
                    if rep.send_multipart(reply, 0).is_err() {
                        tracing::error!("Bus proxy: the ZAP reply could not be sent.");
                    }
                }
            })?;
        Ok(Zap {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Zap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The reply to one ZAP request (RFC 27: version, request id, domain, address, identity,
/// mechanism, credentials…) and whether it admits the peer.
fn zap_reply(req: &[Vec<u8>], admit: &Key) -> (Vec<Vec<u8>>, bool) {
    let version = req.first().cloned().unwrap_or_default();
    let id = req.get(1).cloned().unwrap_or_default();
    let ok = req.len() >= 7
        && version == b"1.0"
        && req[5] == b"CURVE"
        && req[6].as_slice() == admit.bytes();
    let (code, text): (&[u8], &[u8]) = if ok {
        (b"200", b"OK")
    } else {
        (b"400", b"not the cluster's client key")
    };
    let reply = vec![
        b"1.0".to_vec(),
        id,
        code.to_vec(),
        text.to_vec(),
        Vec::new(),
        Vec::new(),
    ];
    (reply, ok)
}

/// What a node's socket monitor said about a handshake.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Handshake {
    /// It succeeded: the node is connected to `addr`.
    Succeeded(String),
    /// It failed; the message says why, for the operator (as Zeek's `monitoring_event`).
    Failed(String),
}

/// ZMTP's "security mechanism mismatch" (`ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH`).
const MECHANISM_MISMATCH: u32 = 0x1100_0002;

/// Reads one monitor event (its two frames); `None` for events of no interest.
pub(crate) fn handshake(event: &[u8], addr: &[u8]) -> Option<Handshake> {
    let raw = u16::from_le_bytes(event.get(..2)?.try_into().ok()?);
    let value = u32::from_le_bytes(event.get(2..6)?.try_into().ok()?);
    let addr = String::from_utf8_lossy(addr).into_owned();
    match u32::from(raw) {
        zmq_sys::ZMQ_EVENT_HANDSHAKE_SUCCEEDED => Some(Handshake::Succeeded(addr)),
        zmq_sys::ZMQ_EVENT_HANDSHAKE_FAILED_AUTH => Some(Handshake::Failed(format!(
            "Bus: the proxy at {addr} refused this node's CURVE keys (ZAP status {value}); \
             check the client keypair"
        ))),
        zmq_sys::ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL if value == MECHANISM_MISMATCH => {
            Some(Handshake::Failed(format!(
                "Bus: the handshake with {addr} failed: one end uses CURVE and the other \
                 does not (set the same curve_* keys on both)"
            )))
        }
        zmq_sys::ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL => Some(Handshake::Failed(format!(
            "Bus: the handshake with {addr} failed (ZMTP protocol error {value:#x}); \
             check that both ends use CURVE and the same server key"
        ))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_bad_text_is_named() {
        let (p, s) = keypair().unwrap();
        assert_eq!(Key::from_z85(&p.z85()).unwrap(), p);
        assert_eq!(Key::public_of(&s), p);
        assert!(Key::from_z85("short").unwrap_err().contains("40 Z85"));
        assert!(Key::from_z85(&"\"".repeat(40)).unwrap_err().contains("Z85"));
        assert_eq!(format!("{s:?}"), "Key(..)");
    }

    #[test]
    fn resolve_asks_for_what_each_role_needs() {
        let (sp, ss) = keypair().unwrap();
        let (cp, cs) = keypair().unwrap();
        assert_eq!(Keys::default().resolve(true, true, &KEYS), Ok(None));
        let node = Keys {
            server_public: Some(sp),
            client_public: Some(cp),
            client_secret: Some(cs),
            ..Keys::default()
        };
        let c = node.resolve(false, true, &KEYS).unwrap().unwrap();
        assert_eq!(c.server_secret, None);
        let e = node.resolve(true, true, &KEYS).unwrap_err();
        assert_eq!(e.0, "bus.curve_server_secretkey");
        let proxy_only = Keys {
            server_secret: Some(ss),
            client_public: Some(cp),
            ..Keys::default()
        };
        let c = proxy_only.resolve(true, false, &ENV).unwrap().unwrap();
        assert_eq!(c.server_public, sp);
        let e = proxy_only.resolve(true, true, &ENV).unwrap_err();
        assert_eq!(e.0, ENV[3]);
        let mismatched = Keys {
            server_public: Some(cp),
            server_secret: Some(ss),
            ..node
        };
        let e = mismatched.resolve(false, true, &KEYS).unwrap_err();
        assert!(e.1.contains("not the public key"), "{e:?}");
    }

    #[test]
    fn zap_admits_only_the_client_key() {
        let (cp, _) = keypair().unwrap();
        let (other, _) = keypair().unwrap();
        let req = |k: &Key, mech: &[u8]| {
            vec![
                b"1.0".to_vec(),
                b"7".to_vec(),
                Vec::new(),
                b"127.0.0.1".to_vec(),
                Vec::new(),
                mech.to_vec(),
                k.bytes().to_vec(),
            ]
        };
        let (r, ok) = zap_reply(&req(&cp, b"CURVE"), &cp);
        assert!(ok);
        assert_eq!(r[1], b"7");
        assert_eq!(r[2], b"200");
        assert!(!zap_reply(&req(&other, b"CURVE"), &cp).1);
        assert!(!zap_reply(&req(&cp, b"PLAIN"), &cp).1);
        assert!(!zap_reply(&[b"1.0".to_vec()], &cp).1);
        assert!(!zap_reply(&[], &cp).1);
    }

    #[test]
    fn monitor_events_name_the_failure() {
        let ev = |raw: u32, v: u32| {
            let mut b = (raw as u16).to_le_bytes().to_vec();
            b.extend_from_slice(&v.to_le_bytes());
            b
        };
        let Some(Handshake::Failed(m)) = handshake(
            &ev(zmq_sys::ZMQ_EVENT_HANDSHAKE_FAILED_AUTH, 400),
            b"tcp://127.0.0.1:5556",
        ) else {
            panic!("not a failure")
        };
        assert!(m.contains("refused") && m.contains("400"), "{m}");
        let Some(Handshake::Failed(m)) = handshake(
            &ev(
                zmq_sys::ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL,
                MECHANISM_MISMATCH,
            ),
            b"x",
        ) else {
            panic!("not a failure")
        };
        assert!(m.contains("one end uses CURVE"), "{m}");
        assert_eq!(
            handshake(&ev(zmq_sys::ZMQ_EVENT_HANDSHAKE_SUCCEEDED, 0), b"x"),
            Some(Handshake::Succeeded("x".into()))
        );
        assert!(handshake(&ev(zmq_sys::ZMQ_EVENT_CONNECTED, 0), b"x").is_none());
        assert!(handshake(&[1], b"x").is_none());
    }
}
