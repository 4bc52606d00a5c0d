//! Zeek's connection life cycle, for the connections of watched originators.
//!
//! Catch-and-release hears of an address from Zeek's connection events: `new_connection`,
//! `connection_established`, `partial_connection`, `connection_attempt`,
//! `connection_rejected`, `connection_reset` and `connection_pending` each call
//! `catch_release_seen(c$id$orig_h)`. When they fire is decided by Zeek's sessions:
//!
//! * a connection is one 5-tuple (for ICMP: addresses, type and the type's counterpart)
//!   until Zeek removes it; a packet of a removed one starts a new connection;
//! * its originator is decided at its first packet, and `likely_server_ports` may flip the
//!   roles of a first packet that is not a bare SYN (TCP) or that comes from a server port
//!   (UDP);
//! * TCP endpoints go through Zeek's states (inactive, SYN sent, established, partial,
//!   closed, reset); a SYN with a new sequence number on a closed connection is a reuse;
//! * timers report what no packet does: an attempt unanswered for `tcp_attempt_delay`, a
//!   reset after a close; and they remove connections: UDP and ICMP after a minute without
//!   packets, TCP five seconds after its close or reset, after five idle minutes, or by
//!   the expire timer that runs every `tcp_session_timer` after `tcp_SYN_timeout`;
//! * at the end of a trace, every TCP connection still active and not closed on both
//!   sides raises `connection_pending`.
//!
//! [`ConnTable`] follows that life cycle as Zeek 8.2's `IPBasedAnalyzer`, `Connection` and
//! `TCPSessionAdapter` do, for the connections with a watched end when they start (so
//! unwatched traffic costs nothing beyond the caller's watch check), and reports each
//! event that calls `catch_release_seen`. Like the engine it does no I/O and takes
//! time as an argument.
//!
//! Left out, because catch-and-release cannot tell the difference or catchd cannot see
//! it: checksums (every packet is taken as valid), reassembly of IP fragments (a first
//! fragment stands for its datagram, later ones are not looked at), tunnels (the outer
//! header is the connection), TCP data still waiting for reassembly at a close, and the
//! connections of an address that began before it was watched (taken up at their first
//! packet after).

mod timers;

use std::collections::HashMap;

use crate::addr::Addr;
use crate::packet::{Observation, Sightings, tcp};
use crate::time::{Interval, Time};

use crate::hot::HotAddrs;
use timers::TimerQueue;

const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_ICMP6: u8 = 58;

/// The most connections a table tracks; beyond it, a new connection is not tracked and
/// its first packet is reported as a `new_connection` (so a flood of connections from
/// watched addresses costs bounded memory and still re-blocks).
pub const DEFAULT_MAX_CONNS: usize = 1 << 20;

/// Zeek's `likely_server_ports`, as bitmaps for TCP and UDP.
#[derive(Clone)]
pub struct ServerPorts {
    tcp: Box<[u64; 1024]>,
    udp: Box<[u64; 1024]>,
}

/// `likely_server_ports` of Zeek 8.2.2 with its default scripts (what a sensor running
/// `zeek local` has): the TCP ports of the analyzers it registers.
const ZEEK_DEFAULT_TCP: &[u16] = &[
    21, 22, 25, 53, 79, 80, 81, 88, 135, 139, 143, 443, 445, 465, 502, 563, 585, 587, 614, 631,
    636, 989, 990, 992, 993, 995, 1080, 1434, 1883, 2811, 3128, 3306, 3389, 5222, 5223, 5269, 6666,
    6667, 6668, 6669, 8000, 8080, 8888, 20000,
];

/// The UDP ports of the same set.
const ZEEK_DEFAULT_UDP: &[u16] = &[
    53, 67, 88, 123, 137, 161, 162, 443, 514, 1812, 2123, 2152, 3389, 3544, 4011, 4754, 4789, 5060,
    5072, 5353, 5355, 6081, 20000,
];

/// `likely_server_ports` of `zeek -b` (bare mode): only the tunnel ports, all UDP.
const ZEEK_BARE_UDP: &[u16] = &[2123, 2152, 3544, 4754, 4789, 5072, 6081];

impl ServerPorts {
    /// The set from lists of TCP and UDP ports.
    pub fn new(tcp: &[u16], udp: &[u16]) -> ServerPorts {
        let mut s = ServerPorts {
            tcp: Box::new([0; 1024]),
            udp: Box::new([0; 1024]),
        };
        for p in tcp {
            s.tcp[usize::from(*p) / 64] |= 1 << (p % 64);
        }
        for p in udp {
            s.udp[usize::from(*p) / 64] |= 1 << (p % 64);
        }
        s
    }

    /// Zeek 8.2.2's set with its default scripts loaded, as on a sensor.
    pub fn zeek_default() -> ServerPorts {
        ServerPorts::new(ZEEK_DEFAULT_TCP, ZEEK_DEFAULT_UDP)
    }

    /// Zeek 8.2.2's set in bare mode (`zeek -b`).
    pub fn zeek_bare() -> ServerPorts {
        ServerPorts::new(&[], ZEEK_BARE_UDP)
    }

    /// Every port in the set, TCP then UDP, each ascending.
    pub fn ports(&self) -> (Vec<u16>, Vec<u16>) {
        let list = |m: &[u64; 1024]| (0..=u16::MAX).filter(|p| bit(m, *p)).collect();
        (list(&self.tcp), list(&self.udp))
    }

    #[inline]
    fn is_tcp(&self, p: u16) -> bool {
        bit(&self.tcp, p)
    }

    #[inline]
    fn is_udp(&self, p: u16) -> bool {
        bit(&self.udp, p)
    }
}

#[inline]
fn bit(m: &[u64; 1024], p: u16) -> bool {
    m[usize::from(p) / 64] & (1 << (p % 64)) != 0
}

impl std::fmt::Debug for ServerPorts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (t, u) = self.ports();
        f.debug_struct("ServerPorts")
            .field("tcp", &t)
            .field("udp", &u)
            .finish()
    }
}

/// Zeek's session timeouts (`init-bare.zeek`; the defaults are Zeek 8.2's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// `tcp_inactivity_timeout`.
    pub tcp_inactivity: Interval,
    /// `udp_inactivity_timeout`.
    pub udp_inactivity: Interval,
    /// `icmp_inactivity_timeout`.
    pub icmp_inactivity: Interval,
    /// `tcp_attempt_delay`: an originator's SYN unanswered this long is an attempt.
    pub tcp_attempt_delay: Interval,
    /// `tcp_close_delay`: a closed connection is removed this long after its last packet.
    pub tcp_close_delay: Interval,
    /// `tcp_reset_delay`.
    pub tcp_reset_delay: Interval,
    /// `tcp_SYN_timeout`: when the expire timer first runs.
    pub tcp_syn_timeout: Interval,
    /// `tcp_session_timer`: how often it runs after that.
    pub tcp_session_timer: Interval,
    /// `tcp_connection_linger`.
    pub tcp_connection_linger: Interval,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        let s = Interval::from_secs;
        Timeouts {
            tcp_inactivity: s(300),
            udp_inactivity: s(60),
            icmp_inactivity: s(60),
            tcp_attempt_delay: s(5),
            tcp_close_delay: s(5),
            tcp_reset_delay: s(5),
            tcp_syn_timeout: s(5),
            tcp_session_timer: s(6),
            tcp_connection_linger: s(5),
        }
    }
}

/// The Zeek event that called `catch_release_seen`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConnEvent {
    /// `new_connection`.
    New,
    /// `connection_established`.
    Established,
    /// `partial_connection`.
    Partial,
    /// `connection_attempt`.
    Attempt,
    /// `connection_rejected`.
    Rejected,
    /// `connection_reset`.
    Reset,
    /// `connection_pending`.
    Pending,
}

impl ConnEvent {
    /// Zeek's name for the event.
    pub fn zeek_name(self) -> &'static str {
        match self {
            ConnEvent::New => "new_connection",
            ConnEvent::Established => "connection_established",
            ConnEvent::Partial => "partial_connection",
            ConnEvent::Attempt => "connection_attempt",
            ConnEvent::Rejected => "connection_rejected",
            ConnEvent::Reset => "connection_reset",
            ConnEvent::Pending => "connection_pending",
        }
    }
}

/// A connection's key, with the two ends in a canonical order (one-way ICMP messages
/// keep theirs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key {
    a: Addr,
    b: Addr,
    pa: u16,
    pb: u16,
    proto: u8,
}

impl Key {
    fn new(src: (Addr, u16), dst: (Addr, u16), proto: u8, one_way: bool) -> Key {
        let (x, y) = if one_way || src <= dst {
            (src, dst)
        } else {
            (dst, src)
        };
        Key {
            a: x.0,
            pa: x.1,
            b: y.0,
            pb: y.1,
            proto,
        }
    }
}

/// A TCP endpoint's state (`TCP_ENDPOINT_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum St {
    Inactive,
    SynSent,
    SynAckSent,
    Partial,
    Established,
    Closed,
    Reset,
}

#[derive(Clone, Copy, Debug)]
struct End {
    state: St,
    prev: St,
    did_close: bool,
    start_seq: u32,
}

impl End {
    const NEW: End = End {
        state: St::Inactive,
        prev: St::Inactive,
        did_close: false,
        start_seq: 0,
    };

    fn set(&mut self, s: St) {
        self.prev = self.state;
        self.state = s;
    }
}

const ORIG: u8 = 1;
const RESP: u8 = 2;

#[derive(Clone, Copy, Debug)]
struct Tcp {
    orig: End,
    resp: End,
    is_active: bool,
    is_partial: bool,
    first_seen: u8,
    /// Bumped when the analyzer's timers are cancelled; a timer of an older generation
    /// does nothing.
    timer_gen: u32,
}

impl Tcp {
    fn both_closed(&self) -> bool {
        self.orig.did_close && self.resp.did_close
    }

    fn is_closed(&self) -> bool {
        self.orig.did_close || self.resp.did_close
    }

    fn flip(&mut self) {
        std::mem::swap(&mut self.orig, &mut self.resp);
        self.first_seen = (if self.first_seen & ORIG != 0 { RESP } else { 0 })
            | (if self.first_seen & RESP != 0 { ORIG } else { 0 });
        self.is_partial = false;
    }
}

#[derive(Clone, Copy, Debug)]
struct Conn {
    /// Which connection of this key (a reused key is a new connection).
    id: u64,
    orig: (Addr, u16),
    resp: (Addr, u16),
    last: Time,
    inactivity: Interval,
    tcp: Option<Tcp>,
    /// Its slot in [`ConnTable::stamps`].
    stamp: u32,
}

/// What the table notes of a connection outside the connection itself: its id and how
/// many packets it has had. Small and dense, so a timer can tell that nothing happened to
/// its connection without looking the connection up.
#[derive(Clone, Copy, Debug, Default)]
struct Stamp {
    /// The connection's id; 0 for a free slot.
    conn: u64,
    packets: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TimerKind {
    /// `Connection::InactivityTimer`.
    Inactivity,
    /// `TCPSessionAdapter::ExpireTimer`.
    Expire,
    /// `TCPSessionAdapter::AttemptTimer`.
    Attempt,
    /// `TCPSessionAdapter::ResetTimer`.
    Reset,
    /// `TCPSessionAdapter::ConnDeleteTimer`.
    Delete,
}

/// The timer lane of the first expire timer (`tcp_SYN_timeout` after the start); the
/// later ones are `tcp_session_timer` apart and have their own.
const LANE_FIRST_EXPIRE: usize = 0;

/// The timer lane of a kind of timer: each is set at "now plus a fixed delay", so a lane
/// of one kind (and, for inactivity, one protocol) stays in deadline order.
fn lane(kind: TimerKind, proto: u8) -> usize {
    match kind {
        TimerKind::Expire => 1,
        TimerKind::Attempt => 2,
        TimerKind::Reset => 3,
        TimerKind::Delete => 4,
        TimerKind::Inactivity => match proto {
            PROTO_TCP => 5,
            PROTO_UDP => 6,
            _ => 7,
        },
    }
}

/// What a timer does.
#[derive(Clone, Copy, Debug)]
struct TimerBody {
    key: Key,
    conn: u64,
    tgen: u32,
    kind: TimerKind,
    /// For an expire timer set by one that found the connection unable to expire: the
    /// connection's stamp slot and packet count then. While the count has not moved, its
    /// state is the same and this one would find the same.
    quiet: Option<(u32, u32)>,
}

/// Counters of a [`ConnTable`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnStats {
    /// Connections of watched originators tracked so far.
    pub tracked: u64,
    /// Connections not tracked because the table was full.
    pub untracked_full: u64,
    /// Connection timers that came due (an expire timer that found its connection
    /// unchanged since the last one did not look it up).
    pub timers_fired: u64,
}

/// The connections of watched originators, with Zeek's life cycle. See the module docs.
pub struct ConnTable {
    ports: ServerPorts,
    timeouts: Timeouts,
    conns: HashMap<Key, Conn, foldhash::fast::FixedState>,
    timers: TimerQueue<TimerBody>,
    /// One per tracked connection, by `Conn::stamp`; `free_stamps` lists unused slots.
    stamps: Vec<Stamp>,
    free_stamps: Vec<u32>,
    next_id: u64,
    max: usize,
    stats: ConnStats,
}

impl ConnTable {
    /// An empty table with the given `likely_server_ports` and timeouts, tracking at most
    /// `max` connections.
    pub fn new(ports: ServerPorts, timeouts: Timeouts, max: usize) -> ConnTable {
        ConnTable {
            ports,
            timeouts,
            conns: HashMap::with_hasher(foldhash::fast::FixedState::default()),
            timers: TimerQueue::new(),
            stamps: Vec::new(),
            free_stamps: Vec::new(),
            next_id: 0,
            max,
            stats: ConnStats::default(),
        }
    }

    /// Connections tracked now.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Whether no connection is tracked.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// The counters.
    pub fn stats(&self) -> ConnStats {
        self.stats
    }

    /// The earliest timer, if any.
    #[inline]
    pub fn next_deadline(&self) -> Option<Time> {
        let t = self.timers.next_deadline();
        (t != Time::MAX).then_some(t)
    }

    fn schedule(&mut self, at: Time, key: Key, conn: u64, tgen: u32, kind: TimerKind) {
        self.schedule_on(lane(kind, key.proto), at, key, conn, tgen, kind);
    }

    fn schedule_on(
        &mut self,
        lane: usize,
        at: Time,
        key: Key,
        conn: u64,
        tgen: u32,
        kind: TimerKind,
    ) {
        let body = TimerBody {
            key,
            conn,
            tgen,
            kind,
            quiet: None,
        };
        self.timers.push(at, lane, body);
    }

    /// Removes a connection and frees its stamp.
    fn remove(&mut self, key: &Key) {
        if let Some(c) = self.conns.remove(key) {
            let st = &mut self.stamps[c.stamp as usize];
            st.conn = 0;
            self.free_stamps.push(c.stamp);
        }
    }

    /// A stamp slot for a new connection `id`.
    fn new_stamp(&mut self, id: u64) -> u32 {
        let st = Stamp {
            conn: id,
            packets: 0,
        };
        match self.free_stamps.pop() {
            Some(i) => {
                self.stamps[i as usize] = st;
                i
            }
            None => {
                // One per tracked connection, at most `max` of them.
                let i = u32::try_from(self.stamps.len()).unwrap_or(u32::MAX);
                self.stamps.push(st);
                i
            }
        }
    }

    /// Fires the timers due at `now`, in deadline order, calling `seen(deadline,
    /// originator, event)` for each that raises an event calling `catch_release_seen`.
    #[inline]
    pub fn advance(&mut self, now: Time, mut seen: impl FnMut(Time, Addr, ConnEvent)) {
        if self.timers.next_deadline() > now {
            return;
        }
        while let Some((at, b)) = self.timers.pop_due(now) {
            self.stats.timers_fired += 1;
            self.fire(now, at, &b, &mut seen);
        }
        self.timers.trim();
    }

    fn fire(
        &mut self,
        now: Time,
        at: Time,
        t: &TimerBody,
        seen: &mut impl FnMut(Time, Addr, ConnEvent),
    ) {
        let tm = self.timeouts;
        if let Some((slot, packets)) = t.quiet {
            let st = self.stamps.get(slot as usize).copied().unwrap_or_default();
            if st.conn == t.conn && st.packets == packets {
                // Nothing happened to the connection since an expire timer found it could
                // not expire: this one finds the same and sets the next.
                self.timers.push(
                    now + tm.tcp_session_timer,
                    lane(TimerKind::Expire, PROTO_TCP),
                    *t,
                );
                return;
            }
        }
        let Some(c) = self.conns.get_mut(&t.key) else {
            return;
        };
        if c.id != t.conn {
            return;
        }
        if t.kind == TimerKind::Inactivity {
            if c.last + c.inactivity <= now {
                self.remove(&t.key);
            } else {
                let at = c.last + c.inactivity;
                let (key, id) = (t.key, c.id);
                self.schedule(at, key, id, 0, TimerKind::Inactivity);
            }
            return;
        }
        let orig = c.orig.0;
        let last = c.last;
        let id = c.id;
        let stamp = c.stamp;
        let Some(s) = c.tcp.as_mut() else {
            return;
        };
        if s.timer_gen != t.tgen {
            return;
        }
        match t.kind {
            // Handled above: it is the connection's, not the TCP analyzer's.
            TimerKind::Inactivity => {}
            TimerKind::Attempt => {
                if !s.is_active {
                    return;
                }
                if matches!(s.orig.state, St::SynSent | St::SynAckSent)
                    && s.resp.state == St::Inactive
                {
                    seen(at, orig, ConnEvent::Attempt);
                    self.remove(&t.key);
                }
            }
            TimerKind::Reset => {
                if !s.is_active {
                    return;
                }
                if !s.both_closed() {
                    s.is_active = false;
                    seen(at, orig, ConnEvent::Reset);
                }
                self.remove(&t.key);
            }
            TimerKind::Delete => {
                self.remove(&t.key);
            }
            TimerKind::Expire => {
                if !s.is_active {
                    return;
                }
                let (o, r) = (s.orig, s.resp);
                // What `ExpireTimer` removes once the connection has been idle for
                // `tcp_connection_linger`; only a packet changes it.
                let may_expire = ((o.did_close || r.did_close)
                    && ((o.did_close && r.did_close)
                        || o.state == St::Reset
                        || r.state == St::Reset
                        || o.state == St::Inactive
                        || r.state == St::Inactive))
                    || (r.state == St::Inactive && o.state == St::Inactive);
                if may_expire && last + tm.tcp_connection_linger < now {
                    self.remove(&t.key);
                    return;
                }
                let next = TimerBody {
                    key: t.key,
                    conn: id,
                    tgen: s.timer_gen,
                    kind: TimerKind::Expire,
                    quiet: (!may_expire).then(|| (stamp, self.stamps[stamp as usize].packets)),
                };
                self.timers.push(
                    now + tm.tcp_session_timer,
                    lane(TimerKind::Expire, PROTO_TCP),
                    next,
                );
            }
        }
    }

    /// One packet at `now`: updates its connection, starting one if its originator is
    /// `watched`, and calls `seen(originator, event)` for each event it raises that calls
    /// `catch_release_seen`, in Zeek's order. Call [`ConnTable::advance`] for `now` first.
    #[inline]
    pub fn packet(
        &mut self,
        now: Time,
        o: &Observation,
        mut watched: impl FnMut(&Addr) -> bool,
        mut seen: impl FnMut(Addr, ConnEvent),
    ) {
        if o.later_fragment {
            return;
        }
        let (sport, dport, one_way, inactivity) = match o.proto {
            PROTO_TCP => (o.src_port, o.dst_port, false, self.timeouts.tcp_inactivity),
            PROTO_UDP => (o.src_port, o.dst_port, false, self.timeouts.udp_inactivity),
            PROTO_ICMP | PROTO_ICMP6 => {
                let (other, one_way) =
                    icmp_counterpart(o.proto == PROTO_ICMP6, o.src_port, o.dst_port);
                (o.src_port, other, one_way, self.timeouts.icmp_inactivity)
            }
            // Zeek keeps no session for other protocols: no connection events.
            _ => return,
        };
        let key = Key::new((o.src, sport), (o.dst, dport), o.proto, one_way);
        if let Some(c) = self.conns.get_mut(&key) {
            let reuse = c.tcp.as_ref().is_some_and(|s| is_reuse(s, o));
            if !reuse {
                if c.tcp.is_none() {
                    c.last = now;
                    return;
                }
                let is_orig = (o.src, sport) == c.orig;
                let id = c.id;
                let st = &mut self.stamps[c.stamp as usize];
                st.packets = st.packets.wrapping_add(1);
                let asks = tcp_packet(c, now, is_orig, o, &self.timeouts, &mut seen);
                self.apply(key, id, &asks);
                return;
            }
            self.remove(&key);
        }
        // A new connection.
        let flip = self.flips(o) && !is_broadcast(&o.dst);
        let (orig, resp) = if flip {
            ((o.dst, dport), (o.src, sport))
        } else {
            ((o.src, sport), (o.dst, dport))
        };
        // A connection is kept when either end is watched: the packets of a connection a
        // watched address answers must not look like connections it starts.
        if !watched(&orig.0) && !watched(&resp.0) {
            return;
        }
        if self.conns.len() >= self.max {
            self.stats.untracked_full += 1;
            seen(orig.0, ConnEvent::New);
            return;
        }
        self.stats.tracked += 1;
        self.next_id += 1;
        let id = self.next_id;
        let stamp = self.new_stamp(id);
        let mut c = Conn {
            id,
            orig,
            resp,
            last: now,
            inactivity,
            stamp,
            tcp: (o.proto == PROTO_TCP).then_some(Tcp {
                orig: End::NEW,
                resp: End::NEW,
                is_active: true,
                is_partial: false,
                first_seen: 0,
                timer_gen: 0,
            }),
        };
        if c.tcp.is_some() {
            // The adapter's constructor sets the expire timer before anything else.
            self.schedule_on(
                LANE_FIRST_EXPIRE,
                now + self.timeouts.tcp_syn_timeout,
                key,
                id,
                0,
                TimerKind::Expire,
            );
        }
        self.schedule(now + inactivity, key, id, 0, TimerKind::Inactivity);
        seen(orig.0, ConnEvent::New);
        let asks = if c.tcp.is_some() {
            let is_orig = (o.src, sport) == orig;
            tcp_packet(&mut c, now, is_orig, o, &self.timeouts, &mut seen)
        } else {
            Asks::default()
        };
        self.conns.insert(key, c);
        self.apply(key, id, &asks);
    }

    fn apply(&mut self, key: Key, id: u64, asks: &Asks) {
        if asks.is_empty() {
            return;
        }
        let Some(c) = self.conns.get(&key) else {
            return;
        };
        let tgen = c.tcp.map_or(0, |s| s.timer_gen);
        for (at, kind) in asks.iter() {
            self.schedule(at, key, id, tgen, kind);
        }
    }

    /// Ends the trace, as Zeek does at termination: every TCP connection still active and
    /// not closed on both sides raises `connection_pending`. Calls `seen` for each, in the
    /// order the connections started, and empties the table.
    pub fn finish(&mut self, mut seen: impl FnMut(Addr, ConnEvent)) {
        let mut pending: Vec<(u64, Addr)> = self
            .conns
            .values()
            .filter(|c| c.tcp.is_some_and(|s| s.is_active && !s.both_closed()))
            .map(|c| (c.id, c.orig.0))
            .collect();
        pending.sort_unstable();
        for (_, a) in pending {
            seen(a, ConnEvent::Pending);
        }
        self.conns.clear();
        self.timers.clear();
        self.stamps.clear();
        self.free_stamps.clear();
    }

    /// Whether Zeek would flip the roles of a connection starting with this packet.
    #[inline]
    fn flips(&self, o: &Observation) -> bool {
        let (s, d) = (o.src_port, o.dst_port);
        match o.proto {
            PROTO_TCP => {
                let f = o.tcp_flags;
                let bare_syn = f & tcp::SYN != 0 && f & tcp::ACK == 0;
                if bare_syn || !self.ports.is_tcp(s) {
                    return false;
                }
                if self.ports.is_tcp(d) {
                    f & tcp::SYN == 0 && s < d
                } else {
                    true
                }
            }
            PROTO_UDP => self.ports.is_udp(s) && !self.ports.is_udp(d),
            _ => false,
        }
    }
}

/// Timers a TCP packet asks for: at most two (an attempt or reset timer, then a delete or
/// expire timer from its close); a cancel empties the list first.
struct Asks {
    n: usize,
    list: [(Time, TimerKind); 3],
}

impl Default for Asks {
    fn default() -> Asks {
        Asks {
            n: 0,
            list: [(Time::ZERO, TimerKind::Delete); 3],
        }
    }
}

impl Asks {
    fn push(&mut self, at: Time, kind: TimerKind) {
        debug_assert!(
            self.n < self.list.len(),
            "more timers than a packet can ask for"
        );
        if self.n < self.list.len() {
            self.list[self.n] = (at, kind);
            self.n += 1;
        }
    }

    fn is_empty(&self) -> bool {
        self.n == 0
    }

    fn iter(&self) -> impl Iterator<Item = (Time, TimerKind)> + '_ {
        self.list[..self.n].iter().copied()
    }
}

fn is_broadcast(a: &Addr) -> bool {
    a.is_v4() && a.octets()[12..] == [255, 255, 255, 255]
}

/// `ICMP4_counterpart` / `ICMP6_counterpart`: the type a message pairs with, or, for a
/// one-way message, its code (and `true`).
fn icmp_counterpart(v6: bool, ty: u16, code: u16) -> (u16, bool) {
    let pair = if v6 {
        match ty {
            128 => Some(129),
            129 => Some(128),
            133 => Some(134),
            134 => Some(133),
            135 => Some(136),
            136 => Some(135),
            130 => Some(131),
            131 => Some(130),
            139 => Some(140),
            140 => Some(139),
            144 => Some(145),
            145 => Some(144),
            _ => None,
        }
    } else {
        match ty {
            8 => Some(0),
            0 => Some(8),
            13 => Some(14),
            14 => Some(13),
            15 => Some(16),
            16 => Some(15),
            10 => Some(9),
            9 => Some(10),
            17 => Some(18),
            18 => Some(17),
            _ => None,
        }
    };
    match pair {
        Some(p) => (p, false),
        None => (code, true),
    }
}

/// `TCPSessionAdapter::IsReuse`: whether this packet on an existing connection starts a
/// new one.
fn is_reuse(s: &Tcp, o: &Observation) -> bool {
    let f = o.tcp_flags;
    if f & tcp::SYN == 0 {
        return false;
    }
    let mut conn_orig = s.orig;
    if f & tcp::ACK != 0 {
        if s.orig.state != St::Inactive {
            return false;
        }
        conn_orig = s.resp;
    }
    if !s.is_closed() {
        if o.tcp_seq == conn_orig.start_seq {
            return false;
        }
        if f & tcp::ACK == 0
            && conn_orig.state == St::SynAckSent
            && s.resp.state == St::Inactive
            && o.tcp_seq == s.resp.start_seq
        {
            return false;
        }
    }
    true
}

/// `TCPSessionAdapter::Process` for what decides events and timers: the endpoints'
/// states, the partial flag, the last-packet time and closes.
fn tcp_packet(
    c: &mut Conn,
    now: Time,
    sent_by_orig: bool,
    o: &Observation,
    tm: &Timeouts,
    seen: &mut impl FnMut(Addr, ConnEvent),
) -> Asks {
    let Conn {
        orig: c_orig,
        resp: c_resp,
        last,
        tcp,
        ..
    } = c;
    let Some(s) = tcp.as_mut() else {
        return Asks::default();
    };
    let mut is_orig = sent_by_orig;
    let mut asks = Asks::default();
    let f = o.tcp_flags;
    let (syn, ack, fin, rst) = (
        f & tcp::SYN != 0,
        f & tcp::ACK != 0,
        f & tcp::FIN != 0,
        f & tcp::RST != 0,
    );
    // SetPartialStatus.
    if is_orig {
        if s.first_seen & ORIG == 0 {
            s.is_partial = !syn || ack;
        }
    } else if s.first_seen & RESP == 0 && !s.is_partial {
        s.is_partial = !syn;
    }
    // init_endpoint, for the start sequence numbers IsReuse compares.
    {
        let ep = if is_orig { &mut s.orig } else { &mut s.resp };
        match ep.state {
            St::Inactive => {
                ep.start_seq = if syn {
                    o.tcp_seq
                } else {
                    o.tcp_seq.wrapping_sub(1)
                }
            }
            St::SynSent | St::SynAckSent | St::Established | St::Partial => {
                if syn {
                    ep.start_seq = o.tcp_seq;
                }
            }
            St::Reset => {
                if syn && ep.prev == St::Inactive {
                    ep.start_seq = o.tcp_seq;
                }
            }
            St::Closed => {}
        }
    }
    if !s.orig.did_close || !s.resp.did_close {
        *last = now;
    }
    // init_peer: an ACK to a peer not yet seen sets the peer's numbering.
    {
        let peer = if is_orig { &mut s.resp } else { &mut s.orig };
        if ack && peer.state == St::Inactive {
            peer.start_seq = o.tcp_ack.wrapping_sub(1);
        }
    }
    let mut do_close = false;
    let mut gen_event = false;
    let ep_state = if is_orig { s.orig.state } else { s.resp.state };
    match ep_state {
        St::Inactive => {
            if syn {
                if is_orig {
                    s.orig.set(if ack { St::SynAckSent } else { St::SynSent });
                    if tm.tcp_attempt_delay != Interval::ZERO {
                        asks.push(now + tm.tcp_attempt_delay, TimerKind::Attempt);
                    }
                } else {
                    if !ack && s.orig.state == St::SynAckSent && o.tcp_seq == s.resp.start_seq {
                        // A SYN/SYN-ACK reversal: flip the endpoints and establish.
                        s.flip();
                        std::mem::swap(c_orig, c_resp);
                        is_orig = true;
                        s.resp.set(St::Established);
                        s.first_seen |= ORIG;
                    }
                    let (ep, peer) = ends(s, is_orig);
                    if peer.state == St::SynSent {
                        peer.set(St::Established);
                    }
                    ep.set(St::Established);
                    if peer.state != St::Partial {
                        seen(c_orig.0, ConnEvent::Established);
                    }
                }
            }
            if fin {
                let (ep, _) = ends(s, is_orig);
                ep.set(St::Closed);
                do_close = true;
                gen_event = true;
            }
            if rst {
                let (ep, peer) = ends(s, is_orig);
                ep.set(St::Reset);
                let is_reject = if is_orig {
                    peer.state == St::Established
                } else {
                    matches!(peer.state, St::SynSent | St::SynAckSent)
                };
                do_close = true;
                gen_event = !is_reject;
                if is_reject {
                    seen(c_orig.0, ConnEvent::Rejected);
                }
            }
            let payload_empty = o.tcp_payload_empty;
            let orig_state = s.orig.state;
            let (ep, peer) = ends(s, is_orig);
            if ep.state == St::Inactive {
                if !is_orig && payload_empty && orig_state == St::SynSent {
                    // An ACK of the SYN before the SYN-ACK: not partial.
                } else if ack && peer.state == St::Established {
                    ep.set(St::Established);
                    s.is_partial = false;
                    s.first_seen |= if is_orig { ORIG } else { RESP };
                } else {
                    ep.set(St::Partial);
                    if peer.state == St::Partial {
                        seen(c_orig.0, ConnEvent::Partial);
                    }
                }
            }
        }
        St::SynSent | St::SynAckSent => {
            let (ep, _) = ends(s, is_orig);
            if fin {
                ep.set(St::Closed);
                do_close = true;
                gen_event = true;
            }
            if rst {
                ep.set(St::Reset);
                connection_reset(s, c_orig.0, seen);
                do_close = true;
            }
        }
        St::Established | St::Partial => {
            {
                let (ep, peer) = ends(s, is_orig);
                if syn && ep.state == St::Partial && peer.state == St::Inactive && !ack {
                    ep.set(St::SynSent);
                }
                if fin && !rst {
                    ep.set(St::Closed);
                    if peer.state == St::Reset && peer.prev == St::Closed {
                        peer.set(St::Closed);
                    }
                    do_close = true;
                    gen_event = true;
                }
            }
            if rst {
                let (ep, peer) = ends(s, is_orig);
                ep.set(St::Reset);
                do_close = true;
                if peer.state != St::Reset || peer.prev != St::Established {
                    connection_reset(s, c_orig.0, seen);
                }
            }
        }
        St::Closed => {
            let (ep, peer) = ends(s, is_orig);
            if rst && peer.state != St::Closed {
                ep.set(St::Reset);
                if !ep.did_close {
                    do_close = true;
                }
                asks.push(now + tm.tcp_reset_delay, TimerKind::Reset);
            }
        }
        St::Reset => {}
    }
    // CheckPIA_FirstPacket, with the roles the packet came in with.
    s.first_seen |= if sent_by_orig { ORIG } else { RESP };
    if do_close {
        let (ep, peer) = ends(s, is_orig);
        if !ep.did_close {
            ep.did_close = true;
            let complete = ep.state == St::Reset || peer.did_close || peer.state == St::Inactive;
            if complete {
                if gen_event && (ep.prev != St::Inactive || peer.state != St::Inactive) {
                    // connection_finished / connection_half_finished.
                    s.is_active = false;
                }
                // CancelTimers: what this packet asked for so far goes too.
                s.timer_gen = s.timer_gen.wrapping_add(1);
                asks = Asks::default();
                asks.push(*last + tm.tcp_close_delay, TimerKind::Delete);
            } else if ep.prev != St::Inactive {
                asks.push(*last + tm.tcp_session_timer, TimerKind::Expire);
            }
        }
    }
    asks
}

/// `ConnectionReset`.
fn connection_reset(s: &mut Tcp, orig: Addr, seen: &mut impl FnMut(Addr, ConnEvent)) {
    seen(orig, ConnEvent::Reset);
    s.is_active = false;
}

/// The packet's sending endpoint and its peer.
fn ends(s: &mut Tcp, is_orig: bool) -> (&mut End, &mut End) {
    if is_orig {
        (&mut s.orig, &mut s.resp)
    } else {
        (&mut s.resp, &mut s.orig)
    }
}

/// A sighting rule with the state it needs: the front of catch-and-release on traffic.
pub struct Sighter {
    rule: Sightings,
    conns: Option<ConnTable>,
    /// Addresses found watched, at the watch table's generation: a watched address starts
    /// many connections, and each asks.
    watched: HotAddrs,
}

impl Sighter {
    /// A sighter for `rule`, with Zeek's timeouts and [`DEFAULT_MAX_CONNS`].
    pub fn new(rule: Sightings) -> Sighter {
        let ports = match rule {
            Sightings::Connections => Some(ServerPorts::zeek_default()),
            Sightings::ConnectionsBare => Some(ServerPorts::zeek_bare()),
            Sightings::Starts | Sightings::AnyPacket => None,
        };
        Sighter {
            rule,
            conns: ports.map(|p| ConnTable::new(p, Timeouts::default(), DEFAULT_MAX_CONNS)),
            watched: HotAddrs::new(10),
        }
    }

    /// The rule.
    pub fn rule(&self) -> Sightings {
        self.rule
    }

    /// The connection table, for the connection rules.
    pub fn conns(&self) -> Option<&ConnTable> {
        self.conns.as_ref()
    }

    /// Fires the connection timers due at `now`; see [`ConnTable::advance`].
    #[inline]
    pub fn advance(&mut self, now: Time, seen: impl FnMut(Time, Addr, ConnEvent)) {
        if let Some(c) = self.conns.as_mut() {
            c.advance(now, seen);
        }
    }

    /// One packet: calls `seen` for each sighting it makes. `may_watch` is the cheap
    /// pre-check (false: certainly not watched), `watched` the exact one; the connection
    /// table is looked at only when the source or the destination may be watched.
    /// `generation` is the watch table's count of changes (`WatchTable::changes`): an
    /// address `watched` said yes to is not asked again while it stays the same.
    #[inline]
    pub fn packet(
        &mut self,
        now: Time,
        o: &Observation,
        generation: u64,
        may_watch: impl Fn(&Addr) -> bool,
        watched: impl Fn(&Addr) -> bool,
        mut seen: impl FnMut(Addr, ConnEvent),
    ) {
        match self.conns.as_mut() {
            None => {
                if let Some(a) = self.rule.originator(o)
                    && may_watch(&a)
                {
                    seen(a, ConnEvent::New);
                }
            }
            Some(c) => {
                if may_watch(&o.src) || may_watch(&o.dst) {
                    let hot = &mut self.watched;
                    let watched = |a: &Addr| {
                        if hot.contains(a, generation) {
                            return true;
                        }
                        let yes = watched(a);
                        if yes {
                            hot.insert(*a, generation);
                        }
                        yes
                    };
                    c.packet(now, o, watched, seen);
                }
            }
        }
    }

    /// Ends the trace; see [`ConnTable::finish`].
    pub fn finish(&mut self, seen: impl FnMut(Addr, ConnEvent)) {
        if let Some(c) = self.conns.as_mut() {
            c.finish(seen);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Addr = Addr::from_v4([203, 0, 113, 1]);
    const S: Addr = Addr::from_v4([198, 51, 100, 2]);

    fn t(ms: i64) -> Time {
        Time::from_micros(1_700_000_000_000_000 + ms * 1000)
    }

    fn obs(
        src: Addr,
        dst: Addr,
        proto: u8,
        sport: u16,
        dport: u16,
        flags: u8,
        seq: u32,
    ) -> Observation {
        Observation {
            src,
            dst,
            proto,
            src_port: sport,
            dst_port: dport,
            tcp_flags: flags,
            tcp_seq: seq,
            tcp_ack: 0,
            tcp_payload_empty: true,
            later_fragment: false,
        }
    }

    /// Runs packets `(ms, observation)` through a table watching `A` and returns every
    /// sighting `(ms, address, event)`, the end of the trace included.
    fn run(ports: ServerPorts, pkts: &[(i64, Observation)]) -> Vec<(i64, Addr, ConnEvent)> {
        let mut c = ConnTable::new(ports, Timeouts::default(), 100);
        let mut out = Vec::new();
        let ms = |x: Time| (x.as_micros() - t(0).as_micros()) / 1000;
        let mut last = t(0);
        for (at, o) in pkts {
            let now = t(*at);
            last = now;
            c.advance(now, |_, a, e| out.push((ms(now), a, e)));
            c.packet(now, o, |a| *a == A, |a, e| out.push((ms(now), a, e)));
        }
        c.finish(|a, e| out.push((ms(last), a, e)));
        out
    }

    const SYN: u8 = tcp::SYN;
    const SYNACK: u8 = tcp::SYN | tcp::ACK;
    const ACK: u8 = tcp::ACK;
    const RST: u8 = tcp::RST;
    const FINACK: u8 = tcp::FIN | tcp::ACK;

    #[test]
    fn an_unanswered_syn_is_an_attempt_five_seconds_later_at_the_next_packet() {
        let syn = obs(A, S, PROTO_TCP, 40000, 22, SYN, 1);
        let other = obs(S, Addr::from_v4([192, 0, 2, 9]), PROTO_UDP, 1, 2, 0, 0);
        let got = run(
            ServerPorts::zeek_default(),
            &[(0, syn), (1000, syn), (7000, other)],
        );
        // The retransmitted SYN (same sequence number) is the same connection.
        assert_eq!(got, [(0, A, ConnEvent::New), (7000, A, ConnEvent::Attempt)]);
    }

    #[test]
    fn a_handshake_is_established_and_pending_at_the_end() {
        let got = run(
            ServerPorts::zeek_default(),
            &[
                (0, obs(A, S, PROTO_TCP, 40000, 22, SYN, 1)),
                (10, obs(S, A, PROTO_TCP, 22, 40000, SYNACK, 9)),
                (20, obs(A, S, PROTO_TCP, 40000, 22, ACK, 2)),
            ],
        );
        assert_eq!(
            got,
            [
                (0, A, ConnEvent::New),
                (10, A, ConnEvent::Established),
                (20, A, ConnEvent::Pending)
            ]
        );
    }

    #[test]
    fn a_reset_answer_is_a_rejection_and_a_new_syn_after_it_a_new_connection() {
        let got = run(
            ServerPorts::zeek_default(),
            &[
                (0, obs(A, S, PROTO_TCP, 40000, 22, SYN, 1)),
                (10, obs(S, A, PROTO_TCP, 22, 40000, RST | ACK, 0)),
                (20, obs(A, S, PROTO_TCP, 40000, 22, SYN, 1)),
            ],
        );
        assert_eq!(
            got,
            [
                (0, A, ConnEvent::New),
                (10, A, ConnEvent::Rejected),
                (20, A, ConnEvent::New),
                (20, A, ConnEvent::Pending)
            ]
        );
    }

    #[test]
    fn a_first_syn_ack_from_a_server_port_flips_roles_with_the_default_scripts_only() {
        let synack = obs(S, A, PROTO_TCP, 22, 40000, SYNACK, 9);
        let got = run(ServerPorts::zeek_default(), &[(0, synack)]);
        assert_eq!(
            got,
            [
                (0, A, ConnEvent::New),
                (0, A, ConnEvent::Established),
                (0, A, ConnEvent::Pending)
            ]
        );
        // In bare mode the sender, S, is the originator: nothing about A.
        let got = run(ServerPorts::zeek_bare(), &[(0, synack)]);
        assert!(got.iter().all(|(_, a, _)| *a == S), "{got:?}");
    }

    #[test]
    fn udp_is_one_connection_until_a_minute_without_packets() {
        let u = obs(A, S, PROTO_UDP, 5000, 53, 0, 0);
        let got = run(
            ServerPorts::zeek_default(),
            &[(0, u), (30_000, u), (89_999, u), (149_999, u), (150_000, u)],
        );
        assert_eq!(got, [(0, A, ConnEvent::New), (149_999, A, ConnEvent::New)]);
    }

    #[test]
    fn a_closed_connection_is_removed_five_seconds_after_its_last_packet() {
        let got = run(
            ServerPorts::zeek_default(),
            &[
                (0, obs(A, S, PROTO_TCP, 40000, 22, SYN, 1)),
                (10, obs(S, A, PROTO_TCP, 22, 40000, SYNACK, 9)),
                (20, obs(A, S, PROTO_TCP, 40000, 22, FINACK, 2)),
                (30, obs(S, A, PROTO_TCP, 22, 40000, FINACK, 10)),
                // A bare ACK on the same 5-tuple: still the old connection at 5 s…
                (5_029, obs(A, S, PROTO_TCP, 40000, 22, ACK, 3)),
                // …a new, partial one after.
                (10_100, obs(A, S, PROTO_TCP, 40000, 22, ACK, 3)),
            ],
        );
        assert_eq!(
            got,
            [
                (0, A, ConnEvent::New),
                (10, A, ConnEvent::Established),
                (10_100, A, ConnEvent::New),
                (10_100, A, ConnEvent::Pending)
            ]
        );
    }

    #[test]
    fn an_idle_connection_outlives_its_expire_timers_and_still_closes_on_time() {
        // Idle for 100 s: its expire timer comes due every 6 s and finds nothing to do
        // (after the first, without looking the connection up). A packet wakes it; the
        // close that follows removes it five seconds after the last packet, as before.
        let other = |ms: i64| {
            (
                ms,
                obs(S, Addr::from_v4([192, 0, 2, 9]), PROTO_UDP, 1, 2, 0, 0),
            )
        };
        let got = run(
            ServerPorts::zeek_default(),
            &[
                (0, obs(A, S, PROTO_TCP, 40000, 22, SYN, 1)),
                (10, obs(S, A, PROTO_TCP, 22, 40000, SYNACK, 9)),
                (20, obs(A, S, PROTO_TCP, 40000, 22, ACK, 2)),
                other(30_000),
                other(60_000),
                (100_000, obs(A, S, PROTO_TCP, 40000, 22, ACK, 2)),
                (100_010, obs(A, S, PROTO_TCP, 40000, 22, FINACK, 2)),
                (100_020, obs(S, A, PROTO_TCP, 22, 40000, FINACK, 10)),
                // Still the old connection 5 s after its last packet…
                (105_019, obs(A, S, PROTO_TCP, 40000, 22, ACK, 3)),
                // …a new one after.
                (110_100, obs(A, S, PROTO_TCP, 40000, 22, ACK, 3)),
            ],
        );
        assert_eq!(
            got,
            [
                (0, A, ConnEvent::New),
                (10, A, ConnEvent::Established),
                (110_100, A, ConnEvent::New),
                (110_100, A, ConnEvent::Pending)
            ]
        );
    }

    #[test]
    fn icmp_echo_and_reply_are_one_connection_and_other_protocols_none() {
        let req = obs(A, S, PROTO_ICMP, 8, 0, 0, 0);
        let rep = obs(S, A, PROTO_ICMP, 0, 0, 0, 0);
        let gre = obs(A, S, 47, 0, 0, 0, 0);
        let got = run(
            ServerPorts::zeek_default(),
            &[(0, req), (1, rep), (2, req), (3, gre)],
        );
        assert_eq!(got, [(0, A, ConnEvent::New)]);
    }

    #[test]
    fn a_full_table_still_reports_new_connections() {
        let mut c = ConnTable::new(ServerPorts::zeek_default(), Timeouts::default(), 1);
        let mut n = 0;
        for port in 1..=3 {
            c.packet(
                t(0),
                &obs(A, S, PROTO_UDP, port, 53, 0, 0),
                |_| true,
                |_, _| n += 1,
            );
        }
        assert_eq!((n, c.len(), c.stats().untracked_full), (3, 1, 2));
    }
}
