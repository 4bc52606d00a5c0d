//! BGP black-holing through ExaBGP's text API, as the block manager bhr-client-exabgp
//! does it: each blocked network is announced to the border routers with a community
//! that makes them drop its traffic (remotely triggered black-holing, RTBH; RFC 7999's
//! BLACKHOLE, `65535:666`, by default), and withdrawn when its block ends.
//!
//! The API is lines of text. catchd writes `announce attributes next-hop <nh> community
//! [<c> …] nlri <cidr> …` and `withdraw attributes next-hop <nh> nlri <cidr> …`, IPv4 and
//! IPv6 apart, at most `batch` networks a line, and ExaBGP answers each line with `done`
//! or `error` (in order, so lines are pipelined). `show adj-rib out` lists what ExaBGP
//! announces (`neighbor <peer> ipv4 unicast <cidr> …` lines, then `done`), so a manager
//! can reconcile: announce what is missing, withdraw what is no longer expected. ExaBGP
//! keeps nothing across its own restarts; a new session therefore asks for a
//! reconciliation ([`ExaBgp::take_new_session`]), which announces every expected block.
//!
//! Two links to ExaBGP:
//!
//! * **standard input and output**, when ExaBGP runs `catchd manager --backend exabgp` as
//!   one of its `process`es (as it runs bhr-client-exabgp). ExaBGP closing standard input
//!   (or saying `shutdown`) ends the manager ([`ExaBgp::closed`]);
//! * **a Unix socket** that `catchd run` listens on, for a `[[blocker]]`: ExaBGP runs
//!   `catchd exabgp-bridge`, which relays its API to the socket. A new connection (ExaBGP
//!   or the bridge restarted) replaces the old one and is reconciled.
//!
//! Nothing is announced outside the prefix rules: IPv4 /32 up to `/minimum_prefixlen`,
//! IPv6 /128 up to `/minimum_prefixlen_v6`, never `0.0.0.0/0` or `::/0`.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, watch};

use super::{Error, Held, Rule};

/// The well-known BLACKHOLE community (RFC 7999).
pub const BLACKHOLE: &str = "65535:666";

/// bhr-client-exabgp's batch size (`BHR_EXABGP_BATCH_SIZE`).
pub const DEFAULT_BATCH: usize = 50;

/// Where `catchd run` listens for `catchd exabgp-bridge` by default.
pub const DEFAULT_SOCKET: &str = "/run/catchd/exabgp.sock";

/// How long ExaBGP may take to answer a line.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// Lines longer than this from ExaBGP are cut (a route line is well under 1 KiB).
const MAX_LINE: usize = 64 * 1024;

/// What goes into each announcement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announce {
    /// The IPv4 next hop: `self`, or an address (often a discard address the routers
    /// route to null).
    pub next_hop: String,
    /// The IPv6 next hop.
    pub next_hop6: String,
    /// Communities, each `ASN:VALUE` or a well-known name (`no-export`, `no-advertise`,
    /// `no-export-subconfed`, `blackhole`).
    pub communities: Vec<String>,
    /// Networks per line.
    pub batch: usize,
    /// The shortest IPv4 prefix announced.
    pub minimum_prefixlen: u8,
    /// The shortest IPv6 prefix announced.
    pub minimum_prefixlen_v6: u8,
}

impl Default for Announce {
    fn default() -> Announce {
        Announce {
            next_hop: "self".into(),
            next_hop6: "self".into(),
            communities: vec![BLACKHOLE.into()],
            batch: DEFAULT_BATCH,
            minimum_prefixlen: 23,
            minimum_prefixlen_v6: 64,
        }
    }
}

/// Checks a community: `ASN:VALUE` (each 0–65535) or a well-known name.
///
/// # Errors
/// What is wrong with it.
pub fn check_community(c: &str) -> Result<(), String> {
    const NAMES: [&str; 4] = [
        "no-export",
        "no-advertise",
        "no-export-subconfed",
        "blackhole",
    ];
    if NAMES.contains(&c) {
        return Ok(());
    }
    let ok = c.split_once(':').is_some_and(|(a, v)| {
        a.parse::<u16>().is_ok() && v.parse::<u16>().is_ok() && !v.starts_with('+')
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{c}` is not a community (ASN:VALUE with both 0-65535, or one of {})",
            NAMES.join(", ")
        ))
    }
}

impl Announce {
    /// Checks the settings, naming the one at fault.
    ///
    /// # Errors
    /// `name: problem`.
    pub fn check(&self) -> Result<(), String> {
        if self.next_hop != "self" && self.next_hop.parse::<Ipv4Addr>().is_err() {
            return Err(format!(
                "next_hop: `{}` is neither `self` nor an IPv4 address",
                self.next_hop
            ));
        }
        if self.next_hop6 != "self" && self.next_hop6.parse::<Ipv6Addr>().is_err() {
            return Err(format!(
                "next_hop6: `{}` is neither `self` nor an IPv6 address",
                self.next_hop6
            ));
        }
        if self.communities.is_empty() {
            return Err(
                "communities: at least one is needed, or the routers cannot tell a \
                        black-hole route from any other"
                    .into(),
            );
        }
        for c in &self.communities {
            check_community(c).map_err(|m| format!("communities: {m}"))?;
        }
        if !(1..=1000).contains(&self.batch) {
            return Err("batch: must be 1 to 1000".into());
        }
        if !(1..=32).contains(&self.minimum_prefixlen) {
            return Err("minimum_prefixlen: must be 1 to 32".into());
        }
        if !(1..=128).contains(&self.minimum_prefixlen_v6) {
            return Err("minimum_prefixlen_v6: must be 1 to 128".into());
        }
        Ok(())
    }

    /// Whether `cidr` may be announced.
    ///
    /// # Errors
    /// Why not.
    pub fn allows(&self, cidr: &IpNet) -> Result<(), String> {
        let (len, min) = match cidr {
            IpNet::V4(n) => (n.prefix_len(), self.minimum_prefixlen),
            IpNet::V6(n) => (n.prefix_len(), self.minimum_prefixlen_v6),
        };
        if len == 0 || len < min {
            return Err(format!(
                "{cidr} is wider than /{min}: not announced to the routers"
            ));
        }
        Ok(())
    }

    /// The lines announcing `add` and withdrawing `remove` (networks normalised to their
    /// prefix; ones the rules refuse are left out and returned apart).
    pub fn lines(&self, add: &[Rule], remove: &[IpNet]) -> (Vec<String>, Vec<(IpNet, String)>) {
        let mut refused = Vec::new();
        let mut ok = |c: IpNet| match self.allows(&c) {
            Ok(()) => Some(c.trunc()),
            Err(m) => {
                refused.push((c, m));
                None
            }
        };
        let add: Vec<IpNet> = add.iter().filter_map(|r| ok(r.cidr)).collect();
        let remove: Vec<IpNet> = remove.iter().filter_map(|c| ok(*c)).collect();
        let mut out = Vec::new();
        for v6 in [false, true] {
            let nh = if v6 { &self.next_hop6 } else { &self.next_hop };
            let fam = |c: &&IpNet| matches!(c, IpNet::V6(_)) == v6;
            let mut attrs = format!("next-hop {nh} community [{}]", self.communities.join(" "));
            let adds: Vec<&IpNet> = add.iter().filter(fam).collect();
            for chunk in adds.chunks(self.batch) {
                out.push(nlri_line("announce", &attrs, chunk));
            }
            attrs = format!("next-hop {nh}");
            let removes: Vec<&IpNet> = remove.iter().filter(fam).collect();
            for chunk in removes.chunks(self.batch) {
                out.push(nlri_line("withdraw", &attrs, chunk));
            }
        }
        (out, refused)
    }
}

fn nlri_line(verb: &str, attrs: &str, cidrs: &[&IpNet]) -> String {
    let mut l = format!("{verb} attributes {attrs} nlri");
    for c in cidrs {
        let _ = write!(l, " {c}");
    }
    l
}

/// One line from ExaBGP.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Line {
    Done,
    Error,
    /// ExaBGP is stopping (`shutdown <pid> <ppid>`).
    Shutdown,
    Text(String),
}

fn classify(l: &str) -> Line {
    match l.trim() {
        "done" => Line::Done,
        "error" => Line::Error,
        s if s.starts_with("shutdown") => Line::Shutdown,
        s => Line::Text(s.to_string()),
    }
}

/// Reads the networks of `show adj-rib out` lines (`neighbor <peer> <afi> <safi> <cidr> …`).
fn adj_rib_network(l: &str) -> Option<IpNet> {
    let mut w = l.split_whitespace();
    if w.next()? != "neighbor" {
        return None;
    }
    let _peer = w.next()?;
    let afi = w.next()?;
    let safi = w.next()?;
    if !matches!(afi, "ipv4" | "ipv6") || safi != "unicast" {
        return None;
    }
    let n = w.next()?;
    n.parse::<IpNet>()
        .ok()
        .or_else(|| n.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

/// An open API session: the lines ExaBGP sends (read by a task of their own, so that
/// its closing is noticed while idle) and where commands go.
struct Session {
    lines: mpsc::Receiver<Line>,
    out: Box<dyn AsyncWrite + Send + Unpin>,
    /// Which session this is (the reader task marks its end with it).
    id: u64,
}

/// How catchd reaches ExaBGP.
enum Link {
    /// Standard input and output: catchd is ExaBGP's process.
    Stdio { used: bool },
    /// A Unix socket `catchd exabgp-bridge` connects to. A task accepts connections
    /// (from the first use on, inside the runtime) and hands them over on `incoming`.
    Socket {
        path: PathBuf,
        listener: Option<std::os::unix::net::UnixListener>,
        incoming: Option<mpsc::Receiver<tokio::net::UnixStream>>,
        acceptor: Option<tokio::task::JoinHandle<()>>,
        /// A connection taken from `incoming`, not yet made the session.
        pending: Option<tokio::net::UnixStream>,
    },
}

/// The ExaBGP backend.
pub struct ExaBgp {
    announce: Announce,
    link: Link,
    session: Option<Session>,
    sessions: u64,
    new_session: bool,
    dry_run: bool,
    /// True once ExaBGP has gone for good (standard input closed, or `shutdown`).
    closed: watch::Sender<bool>,
}

impl std::fmt::Debug for ExaBgp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExaBgp")
            .field("announce", &self.announce)
            .field("connected", &self.session.is_some())
            .finish_non_exhaustive()
    }
}

impl ExaBgp {
    /// A backend talking to ExaBGP on standard input and output.
    pub fn stdio(announce: Announce, dry_run: bool) -> ExaBgp {
        ExaBgp::with_link(announce, Link::Stdio { used: false }, dry_run)
    }

    /// A backend listening on the Unix socket `path` for `catchd exabgp-bridge` (the
    /// socket is made now, for catchd's user and group, mode 0660: put ExaBGP's user in
    /// that group when they differ; a stale socket is replaced).
    ///
    /// # Errors
    /// The socket cannot be made.
    pub fn socket(announce: Announce, path: PathBuf, dry_run: bool) -> Result<ExaBgp, String> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
        let listener = std::os::unix::net::UnixListener::bind(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(ExaBgp::with_link(
            announce,
            Link::Socket {
                path,
                listener: Some(listener),
                incoming: None,
                acceptor: None,
                pending: None,
            },
            dry_run,
        ))
    }

    fn with_link(announce: Announce, link: Link, dry_run: bool) -> ExaBgp {
        ExaBgp {
            announce,
            link,
            session: None,
            sessions: 0,
            new_session: false,
            dry_run,
            closed: watch::channel(false).0,
        }
    }

    /// Turns true when ExaBGP has gone for good: it closed standard input or said
    /// `shutdown` (standard-input link only; a socket waits for the next connection).
    pub fn closed(&self) -> watch::Receiver<bool> {
        self.closed.subscribe()
    }

    /// Whether a new session started since the last call: ExaBGP holds nothing then
    /// (or what a previous catchd left), and the manager should reconcile.
    pub fn take_new_session(&mut self) -> bool {
        std::mem::take(&mut self.new_session)
    }

    fn start_session<R, W>(&mut self, read: R, write: W)
    where
        R: tokio::io::AsyncRead + Send + Unpin + 'static,
        W: AsyncWrite + Send + Unpin + 'static,
    {
        self.sessions += 1;
        let id = self.sessions;
        let (tx, rx) = mpsc::channel(1024);
        let stdio = matches!(self.link, Link::Stdio { .. });
        let closed = self.closed.clone();
        tokio::spawn(async move {
            let mut r = BufReader::new(read);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match (&mut r)
                    .take(MAX_LINE as u64)
                    .read_until(b'\n', &mut buf)
                    .await
                {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let line = classify(&String::from_utf8_lossy(&buf));
                let shutdown = line == Line::Shutdown;
                if tx.send(line).await.is_err() || shutdown {
                    break;
                }
            }
            if stdio {
                let _ = closed.send(true);
            }
        });
        self.session = Some(Session {
            lines: rx,
            out: Box::new(write),
            id,
        });
        self.new_session = true;
        tracing::info!(session = id, "ExaBGP: API session started.");
    }

    /// Makes sure a session is open: standard input and output once; on a socket, the
    /// newest connection (which replaces an older one).
    async fn connect(&mut self) -> Result<(), Error> {
        self.start_acceptor()?;
        if let Link::Stdio { used } = &mut self.link {
            if !*used {
                *used = true;
                self.start_session(tokio::io::stdin(), tokio::io::stdout());
            }
        } else {
            let have_session = self.session.is_some();
            let newest = {
                let Link::Socket {
                    incoming, pending, ..
                } = &mut self.link
                else {
                    unreachable!("not stdio")
                };
                let rx = incoming
                    .as_mut()
                    .ok_or_else(|| Error::Exabgp("the bridge's listener is not running".into()))?;
                let mut newest = pending.take();
                while let Ok(s) = rx.try_recv() {
                    newest = Some(s);
                }
                if newest.is_none() && !have_session {
                    // Nobody connected yet: give the bridge a moment.
                    if let Ok(Some(s)) =
                        tokio::time::timeout(Duration::from_secs(1), rx.recv()).await
                    {
                        newest = Some(s);
                    }
                }
                newest
            };
            if let Some(s) = newest {
                let (r, w) = s.into_split();
                self.session = None;
                self.start_session(r, w);
                // Answers still in flight from an earlier session are not ours.
                self.drain_stale().await;
            }
        }
        if self.session.is_some() {
            Ok(())
        } else {
            Err(Error::Exabgp(
                "ExaBGP is not connected (is it running catchd exabgp-bridge?)".into(),
            ))
        }
    }

    /// Starts the task accepting the bridge's connections (socket link; once).
    fn start_acceptor(&mut self) -> Result<(), Error> {
        let Link::Socket {
            listener,
            incoming,
            acceptor,
            path,
            ..
        } = &mut self.link
        else {
            return Ok(());
        };
        let Some(l) = listener.take() else {
            return Ok(());
        };
        let l = tokio::net::UnixListener::from_std(l)
            .map_err(|e| Error::Exabgp(format!("cannot listen for the bridge: {e}")))?;
        let (tx, rx) = mpsc::channel(8);
        let shown = path.display().to_string();
        *incoming = Some(rx);
        *acceptor = Some(tokio::spawn(async move {
            loop {
                match l.accept().await {
                    Ok((s, _)) => {
                        if tx.send(s).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(socket = %shown, "ExaBGP: accepting the bridge: {e}");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }));
        Ok(())
    }

    /// Resolves when the bridge has made a new connection (socket link; never for
    /// standard input and output), so a manager waiting on its queue can reconcile the
    /// new session at once.
    pub async fn new_connection(&mut self) {
        if self.start_acceptor().is_err() {
            return std::future::pending().await;
        }
        let Link::Socket {
            incoming, pending, ..
        } = &mut self.link
        else {
            return std::future::pending().await;
        };
        if pending.is_some() {
            return;
        }
        match incoming.as_mut() {
            Some(rx) => match rx.recv().await {
                Some(s) => {
                    *pending = Some(s);
                    self.new_session = true;
                }
                None => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    }

    async fn drain_stale(&mut self) {
        let Some(s) = self.session.as_mut() else {
            return;
        };
        while let Ok(Some(_)) =
            tokio::time::timeout(Duration::from_millis(200), s.lines.recv()).await
        {}
    }

    fn lost(&mut self, why: &str) -> Error {
        if let Some(s) = self.session.take() {
            tracing::warn!(session = s.id, "ExaBGP: API session ended ({why}).");
        }
        Error::Exabgp(format!("ExaBGP: {why}"))
    }

    /// Sends `lines` and waits for their answers: `Ok` with the text lines they returned
    /// (for `show`), or the first refusal.
    async fn send(&mut self, lines: &[String]) -> Result<Vec<String>, Error> {
        if lines.is_empty() {
            return Ok(Vec::new());
        }
        if self.dry_run {
            let mut err = std::io::stderr().lock();
            for l in lines {
                let _ =
                    std::io::Write::write_all(&mut err, format!("would send: {l}\n").as_bytes());
            }
            return Ok(Vec::new());
        }
        self.connect().await?;
        let Some(s) = self.session.as_mut() else {
            return Err(self.lost("no session"));
        };
        let mut text = String::new();
        for l in lines {
            text.push_str(l);
            text.push('\n');
        }
        let wrote = async {
            s.out.write_all(text.as_bytes()).await?;
            s.out.flush().await
        };
        if let Err(e) = tokio::time::timeout(ACK_TIMEOUT, wrote)
            .await
            .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
        {
            return Err(self.lost(&format!("cannot write to it: {e}")));
        }
        let mut shown = Vec::new();
        let mut refused = None;
        let mut answered = 0;
        while answered < lines.len() {
            let Some(s) = self.session.as_mut() else {
                return Err(self.lost("no session"));
            };
            match tokio::time::timeout(ACK_TIMEOUT, s.lines.recv()).await {
                Err(_) => return Err(self.lost("no answer within 30 s")),
                Ok(None) => return Err(self.lost("it closed the API")),
                Ok(Some(Line::Shutdown)) => {
                    if matches!(self.link, Link::Stdio { .. }) {
                        let _ = self.closed.send(true);
                    }
                    return Err(self.lost("it is shutting down"));
                }
                Ok(Some(Line::Done)) => answered += 1,
                Ok(Some(Line::Error)) => {
                    refused.get_or_insert(lines[answered].clone());
                    answered += 1;
                }
                Ok(Some(Line::Text(t))) => shown.push(t),
            }
        }
        match refused {
            Some(line) => Err(Error::Exabgp(format!("ExaBGP refused `{line}`"))),
            None => Ok(shown),
        }
    }

    /// Announces `add` and withdraws `remove`. A network outside the prefix rules is an
    /// error (and nothing of it is sent); so is a line ExaBGP refuses.
    ///
    /// # Errors
    /// ExaBGP is not connected, went away, or refused a line.
    pub async fn apply(&mut self, add: &[Rule], remove: &[IpNet]) -> Result<(), Error> {
        let (lines, refused) = self.announce.lines(add, remove);
        self.send(&lines).await?;
        match refused.into_iter().next() {
            Some((_, why)) => Err(Error::Exabgp(why)),
            None => Ok(()),
        }
    }

    /// What ExaBGP announces now, from `show adj-rib out` (a network announced to several
    /// peers is listed once). In a dry run, nothing.
    ///
    /// # Errors
    /// ExaBGP is not connected or went away.
    pub async fn list(&mut self) -> Result<Vec<Held>, Error> {
        let lines = self.send(&["show adj-rib out".to_string()]).await?;
        let mut seen = HashSet::new();
        Ok(lines
            .iter()
            .filter_map(|l| adj_rib_network(l))
            .filter(|c| seen.insert(*c))
            .map(|cidr| Held { cidr, until: None })
            .collect())
    }

    /// The socket path, for messages.
    pub fn socket_path(&self) -> Option<&std::path::Path> {
        match &self.link {
            Link::Socket { path, .. } => Some(path),
            Link::Stdio { .. } => None,
        }
    }
}

impl Drop for ExaBgp {
    fn drop(&mut self) {
        if let Link::Socket { path, acceptor, .. } = &mut self.link {
            if let Some(a) = acceptor.take() {
                a.abort();
            }
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(c: &str) -> Rule {
        Rule {
            cidr: c.parse().unwrap(),
            until: None,
            why: String::new(),
        }
    }

    #[test]
    fn lines_split_families_batch_and_keep_the_prefix_rules() {
        let a = Announce {
            batch: 2,
            communities: vec![BLACKHOLE.into(), "65142:666".into(), "no-export".into()],
            next_hop6: "2001:db8::1".into(),
            ..Announce::default()
        };
        let add: Vec<Rule> = [
            "192.0.2.1/32",
            "2001:db8::5/128",
            "192.0.2.7/31",
            "198.51.100.0/24",
            "0.0.0.0/0",
            "10.0.0.0/8",
            "2001:db8::/32",
        ]
        .iter()
        .map(|c| rule(c))
        .collect();
        let remove: Vec<IpNet> = vec!["203.0.113.9/32".parse().unwrap(), "::/0".parse().unwrap()];
        let (lines, refused) = a.lines(&add, &remove);
        assert_eq!(
            lines,
            [
                "announce attributes next-hop self community [65535:666 65142:666 no-export] nlri 192.0.2.1/32 192.0.2.6/31",
                "announce attributes next-hop self community [65535:666 65142:666 no-export] nlri 198.51.100.0/24",
                "withdraw attributes next-hop self nlri 203.0.113.9/32",
                "announce attributes next-hop 2001:db8::1 community [65535:666 65142:666 no-export] nlri 2001:db8::5/128",
            ]
        );
        let refused: Vec<String> = refused.iter().map(|(c, _)| c.to_string()).collect();
        assert_eq!(
            refused,
            ["0.0.0.0/0", "10.0.0.0/8", "2001:db8::/32", "::/0"]
        );
    }

    #[test]
    fn settings_and_communities_are_checked() {
        assert!(Announce::default().check().is_ok());
        for (a, says) in [
            (
                Announce {
                    next_hop: "x".into(),
                    ..Announce::default()
                },
                "next_hop",
            ),
            (
                Announce {
                    next_hop6: "10.0.0.1".into(),
                    ..Announce::default()
                },
                "next_hop6",
            ),
            (
                Announce {
                    communities: vec![],
                    ..Announce::default()
                },
                "communities",
            ),
            (
                Announce {
                    communities: vec!["65536:1".into()],
                    ..Announce::default()
                },
                "communities",
            ),
            (
                Announce {
                    batch: 0,
                    ..Announce::default()
                },
                "batch",
            ),
            (
                Announce {
                    minimum_prefixlen: 0,
                    ..Announce::default()
                },
                "minimum_prefixlen",
            ),
        ] {
            assert!(a.check().unwrap_err().starts_with(says), "{a:?}");
        }
        for ok in ["65535:666", "0:0", "no-export", "blackhole"] {
            assert!(check_community(ok).is_ok(), "{ok}");
        }
        for bad in ["666", "a:b", "1:2:3", "65535:+6", ""] {
            assert!(check_community(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn answers_and_rib_lines_are_read() {
        assert_eq!(classify("done\n"), Line::Done);
        assert_eq!(classify("error"), Line::Error);
        assert_eq!(classify("shutdown 15505 15504\n"), Line::Shutdown);
        assert_eq!(
            adj_rib_network("neighbor 10.99.1.1 ipv4 unicast 10.99.3.4/32 next-hop self"),
            Some("10.99.3.4/32".parse().unwrap())
        );
        assert_eq!(
            adj_rib_network("neighbor 10.99.1.1 ipv6 unicast 2001:db8::1/128 next-hop self"),
            Some("2001:db8::1/128".parse().unwrap())
        );
        assert_eq!(adj_rib_network("neighbor 1.2.3.4 ipv4 flow x"), None);
        assert_eq!(adj_rib_network("garbage"), None);
        assert_eq!(adj_rib_network(""), None);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_lines_from_exabgp_are_read_without_panicking(l in ".{0,200}") {
            let _ = classify(&l);
            let _ = adj_rib_network(&l);
            let _ = adj_rib_network(&format!("neighbor 10.0.0.1 ipv4 unicast {l}"));
        }
    }

    /// A stand-in for ExaBGP on a pipe: answers `done`, `error` for lines naming
    /// 192.0.2.66, and lists what it holds on `show adj-rib out`.
    async fn fake_exabgp(io: tokio::io::DuplexStream) {
        let (r, mut w) = tokio::io::split(io);
        let mut lines = BufReader::new(r).lines();
        let mut held: Vec<String> = Vec::new();
        while let Ok(Some(l)) = lines.next_line().await {
            let words: Vec<&str> = l.split_whitespace().collect();
            let nets: Vec<String> = words
                .iter()
                .skip_while(|w| **w != "nlri")
                .skip(1)
                .map(|s| (*s).to_string())
                .collect();
            let answer = if l.contains("192.0.2.66") {
                "error\n".to_string()
            } else if l == "show adj-rib out" {
                let mut s: String = held
                    .iter()
                    .map(|n| format!("neighbor 10.0.0.1 ipv4 unicast {n} next-hop self\n"))
                    .collect();
                s.push_str("done\n");
                s
            } else if words.first() == Some(&"announce") {
                held.extend(nets);
                "done\n".into()
            } else {
                held.retain(|h| !nets.contains(h));
                "done\n".into()
            };
            if w.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
        }
    }

    async fn held(x: &mut ExaBgp) -> Vec<String> {
        let h = x.list().await.unwrap();
        h.iter().map(|h| h.cidr.to_string()).collect()
    }

    #[tokio::test]
    async fn a_session_announces_lists_withdraws_and_reports_refusals() {
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        tokio::spawn(fake_exabgp(theirs));
        let mut x = ExaBgp::with_link(Announce::default(), Link::Stdio { used: true }, false);
        let (r, w) = tokio::io::split(ours);
        x.start_session(r, w);
        assert!(x.take_new_session());
        assert!(!x.take_new_session());
        x.apply(&[rule("192.0.2.1/32"), rule("192.0.2.2/32")], &[])
            .await
            .unwrap();
        assert_eq!(held(&mut x).await, ["192.0.2.1/32", "192.0.2.2/32"]);
        let e = x.apply(&[rule("192.0.2.66/32")], &[]).await.unwrap_err();
        assert!(e.to_string().contains("refused"), "{e}");
        let e = x.apply(&[rule("0.0.0.0/0")], &[]).await.unwrap_err();
        assert!(e.to_string().contains("wider than"), "{e}");
        x.apply(&[], &["192.0.2.1/32".parse().unwrap()])
            .await
            .unwrap();
        assert_eq!(held(&mut x).await, ["192.0.2.2/32"]);
    }

    #[tokio::test]
    async fn a_closed_standard_input_ends_the_manager() {
        let (ours, theirs) = tokio::io::duplex(1024);
        let mut x = ExaBgp::with_link(Announce::default(), Link::Stdio { used: true }, false);
        let mut closed = x.closed();
        let (r, w) = tokio::io::split(ours);
        x.start_session(r, w);
        drop(theirs);
        tokio::time::timeout(Duration::from_secs(5), closed.changed())
            .await
            .unwrap()
            .unwrap();
        assert!(*closed.borrow());
        let e = x.apply(&[rule("192.0.2.1/32")], &[]).await.unwrap_err();
        assert!(e.to_string().contains("ExaBGP"), "{e}");
    }
}
