//! From a captured frame to an [`Observation`]: the addresses, protocol, ports and TCP
//! flags catch-and-release needs, read in place with etherparse slices.
//!
//! [`parse`] never allocates and never panics: a frame it cannot use yields a [`Skip`]
//! reason, which callers count in a [`SkipCounts`]. It is lenient where captures are
//! legitimately short: a snap length that cuts off TCP options or the payload does not
//! matter, because only the first 14 bytes of a TCP header (ports and flags) and the first
//! 4 of a UDP header are read.
//!
//! Link layers: Ethernet (with any number of 802.1Q / 802.1ad / QinQ tags, and MPLS or
//! PPPoE inside), Linux cooked captures (SLL and SLL2), raw IP (`DLT_RAW`, `DLT_IPV4`,
//! `DLT_IPV6`) and BSD loopback (`DLT_NULL` in either byte order, `DLT_LOOP`). Tunnels are
//! not decapsulated: the outer addresses are the ones observed.
//!
//! [`Sightings`] decides which observations count as a connection originator being seen,
//! following Zeek's `watch_connections` (see its docs).

use std::fmt;

use etherparse::{
    EtherType, Ethernet2HeaderSlice, IpAuthHeaderSlice, IpNumber, Ipv4HeaderSlice,
    Ipv6ExtensionSlice, Ipv6ExtensionsSlice, Ipv6HeaderSlice, LinuxSllHeaderSlice,
    LinuxSllProtocolType, SingleVlanHeaderSlice,
};

use crate::addr::Addr;

/// The link layer of a capture, from its DLT / LINKTYPE value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkType {
    /// `DLT_EN10MB` (1).
    Ethernet,
    /// `DLT_LINUX_SLL` (113): Linux cooked capture v1, as `tcpdump -i any` writes.
    LinuxSll,
    /// `DLT_LINUX_SLL2` (276): Linux cooked capture v2.
    LinuxSll2,
    /// `DLT_RAW` (12 on Linux, 14 on OpenBSD; `LINKTYPE_RAW` 101 in files): bare IPv4 or IPv6.
    Raw,
    /// `DLT_IPV4` (228).
    Ipv4,
    /// `DLT_IPV6` (229).
    Ipv6,
    /// `DLT_NULL` (0): BSD loopback, a 4-byte address family in the writer's byte order.
    Null,
    /// `DLT_LOOP` (108): OpenBSD loopback, the family in network byte order.
    Loop,
}

impl LinkType {
    /// The link type for a libpcap DLT value, if catchd reads it.
    pub fn from_dlt(dlt: i32) -> Option<LinkType> {
        Some(match dlt {
            1 => LinkType::Ethernet,
            113 => LinkType::LinuxSll,
            276 => LinkType::LinuxSll2,
            12 | 14 | 101 => LinkType::Raw,
            228 => LinkType::Ipv4,
            229 => LinkType::Ipv6,
            0 => LinkType::Null,
            108 => LinkType::Loop,
            _ => return None,
        })
    }

    /// A short human name.
    pub fn name(self) -> &'static str {
        match self {
            LinkType::Ethernet => "Ethernet",
            LinkType::LinuxSll => "Linux cooked (SLL)",
            LinkType::LinuxSll2 => "Linux cooked v2 (SLL2)",
            LinkType::Raw => "raw IP",
            LinkType::Ipv4 => "raw IPv4",
            LinkType::Ipv6 => "raw IPv6",
            LinkType::Null => "BSD loopback (NULL)",
            LinkType::Loop => "OpenBSD loopback (LOOP)",
        }
    }
}

/// What catch-and-release needs from one IP packet. `Copy`, 40 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observation {
    /// Source address.
    pub src: Addr,
    /// Destination address.
    pub dst: Addr,
    /// IP protocol number of the transport (after IPv6 extension headers).
    pub proto: u8,
    /// Source port (TCP, UDP, SCTP); for ICMP and ICMPv6, the message type (as Zeek's
    /// `conn_id` has it); 0 otherwise.
    pub src_port: u16,
    /// Destination port; for ICMP and ICMPv6, the message code; 0 otherwise.
    pub dst_port: u16,
    /// TCP flags; 0 for other protocols.
    pub tcp_flags: u8,
    /// TCP sequence number; 0 for other protocols.
    pub tcp_seq: u32,
    /// TCP acknowledgement number; 0 for other protocols.
    pub tcp_ack: u32,
    /// Whether a TCP segment carries no payload (as far as it was captured).
    pub tcp_payload_empty: bool,
    /// A fragment other than the first: it carries no transport header.
    pub later_fragment: bool,
}

/// TCP flag bits.
pub mod tcp {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
}

const PROTO_TCP: u8 = 6;

/// Why a frame was skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Skip {
    /// Not IP (ARP, LLDP, STP, unknown loopback family …). Not an error.
    NotIp,
    /// Shorter than its link-layer header (or a VLAN/MPLS/PPPoE header inside it).
    LinkTruncated,
    /// A link-layer header with invalid contents.
    LinkMalformed,
    /// Cut off inside the IP header.
    IpTruncated,
    /// An invalid IP header (version, header length, extension headers).
    IpMalformed,
    /// Cut off before the TCP flags or UDP ports.
    TransportTruncated,
}

impl Skip {
    /// Every reason, in counter order.
    pub const ALL: [Skip; 6] = [
        Skip::NotIp,
        Skip::LinkTruncated,
        Skip::LinkMalformed,
        Skip::IpTruncated,
        Skip::IpMalformed,
        Skip::TransportTruncated,
    ];

    /// A snake_case name for summaries and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::NotIp => "not_ip",
            Skip::LinkTruncated => "link_truncated",
            Skip::LinkMalformed => "link_malformed",
            Skip::IpTruncated => "ip_truncated",
            Skip::IpMalformed => "ip_malformed",
            Skip::TransportTruncated => "transport_truncated",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Per-reason skip counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SkipCounts([u64; Skip::ALL.len()]);

impl SkipCounts {
    /// Counts one skip.
    #[inline]
    pub fn add(&mut self, s: Skip) {
        self.0[s.index()] += 1;
    }

    /// The count for one reason.
    pub fn get(&self, s: Skip) -> u64 {
        self.0[s.index()]
    }

    /// Non-zero counters, in [`Skip::ALL`] order.
    pub fn nonzero(&self) -> impl Iterator<Item = (Skip, u64)> + '_ {
        Skip::ALL
            .iter()
            .map(|s| (*s, self.get(*s)))
            .filter(|(_, n)| *n > 0)
    }
}

/// Which observations count as seeing an address again.
///
/// Zeek's `watch_connections` calls `catch_release_seen` with the originator of new,
/// attempted, established, rejected, reset, partial and pending connections. The default,
/// [`Sightings::Connections`], follows Zeek's connection life cycle for that
/// ([`crate::conn`]); the others are simpler rules.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Sightings {
    /// Zeek's connection events, with `likely_server_ports` as Zeek's default scripts
    /// set it (as on a sensor).
    #[default]
    Connections,
    /// Zeek's connection events with bare mode's `likely_server_ports` (`zeek -b`).
    ConnectionsBare,
    /// A packet that could start a connection: a TCP SYN without ACK, or any UDP, ICMP or
    /// other IP packet (the first fragment of a datagram included, later ones not).
    Starts,
    /// Every packet from the address, replies and mid-connection segments included.
    AnyPacket,
}

impl Sightings {
    /// The names used in configuration and on the command line.
    pub const NAMES: [&'static str; 4] = ["connections", "connections-bare", "starts", "any"];

    /// The rule for a configuration name.
    pub fn from_name(s: &str) -> Option<Sightings> {
        Some(match s {
            "connections" => Sightings::Connections,
            "connections-bare" => Sightings::ConnectionsBare,
            "starts" => Sightings::Starts,
            "any" => Sightings::AnyPacket,
            _ => return None,
        })
    }

    /// The rule's configuration name.
    pub fn name(self) -> &'static str {
        match self {
            Sightings::Connections => "connections",
            Sightings::ConnectionsBare => "connections-bare",
            Sightings::Starts => "starts",
            Sightings::AnyPacket => "any",
        }
    }

    /// For [`Sightings::Starts`] and [`Sightings::AnyPacket`], which need no connection
    /// state: the address this packet counts as a sighting of, if any. The connection
    /// rules take a packet that could start a connection, as `Starts` does.
    #[inline]
    pub fn originator(&self, o: &Observation) -> Option<Addr> {
        if *self == Sightings::AnyPacket {
            return Some(o.src);
        }
        if o.later_fragment {
            return None;
        }
        if o.proto == PROTO_TCP {
            let syn_only = o.tcp_flags & (tcp::SYN | tcp::ACK) == tcp::SYN;
            return syn_only.then_some(o.src);
        }
        Some(o.src)
    }
}

/// Parses one frame of the given link type.
///
/// # Errors
/// A [`Skip`] saying why the frame yields no observation.
#[inline(always)]
pub fn parse(link: LinkType, frame: &[u8]) -> Result<Observation, Skip> {
    match link {
        LinkType::Ethernet => ethernet(frame),
        LinkType::LinuxSll => sll(frame),
        LinkType::LinuxSll2 => sll2(frame),
        LinkType::Raw | LinkType::Ipv4 | LinkType::Ipv6 => ip(frame),
        LinkType::Null => null(frame, false),
        LinkType::Loop => null(frame, true),
    }
}

#[inline(always)]
fn ethernet(frame: &[u8]) -> Result<Observation, Skip> {
    let eth = Ethernet2HeaderSlice::from_slice(frame).map_err(|_| Skip::LinkTruncated)?;
    ether_payload(eth.ether_type(), &frame[eth.slice().len()..])
}

/// Follows VLAN tags, MPLS labels and PPPoE sessions down to IP.
#[inline(always)]
fn ether_payload(mut ether_type: EtherType, mut rest: &[u8]) -> Result<Observation, Skip> {
    loop {
        match ether_type {
            EtherType::IPV4 | EtherType::IPV6 => return ip(rest),
            EtherType::VLAN_TAGGED_FRAME
            | EtherType::PROVIDER_BRIDGING
            | EtherType::VLAN_DOUBLE_TAGGED_FRAME => {
                let vlan =
                    SingleVlanHeaderSlice::from_slice(rest).map_err(|_| Skip::LinkTruncated)?;
                ether_type = vlan.ether_type();
                rest = &rest[vlan.slice().len()..];
            }
            // MPLS unicast and multicast: skip labels to the bottom of the stack; IP follows.
            EtherType(0x8847) | EtherType(0x8848) => {
                loop {
                    let label = rest.get(..4).ok_or(Skip::LinkTruncated)?;
                    rest = &rest[4..];
                    if label[2] & 0x01 != 0 {
                        break;
                    }
                }
                return ip(rest);
            }
            // PPPoE session: 6-byte header, then the PPP protocol.
            EtherType(0x8864) => {
                let hdr = rest.get(..8).ok_or(Skip::LinkTruncated)?;
                rest = &rest[8..];
                return match u16::from_be_bytes([hdr[6], hdr[7]]) {
                    0x0021 | 0x0057 => ip(rest),
                    _ => Err(Skip::NotIp),
                };
            }
            _ => return Err(Skip::NotIp),
        }
    }
}

#[inline(always)]
fn sll(frame: &[u8]) -> Result<Observation, Skip> {
    let hdr = LinuxSllHeaderSlice::from_slice(frame).map_err(|e| match e {
        etherparse::err::linux_sll::HeaderSliceError::Len(_) => Skip::LinkTruncated,
        etherparse::err::linux_sll::HeaderSliceError::Content(_) => Skip::LinkMalformed,
    })?;
    match hdr.protocol_type() {
        LinuxSllProtocolType::EtherType(et) => ether_payload(et, &frame[hdr.slice().len()..]),
        _ => Err(Skip::NotIp),
    }
}

/// SLL2: protocol (2), reserved (2), interface index (4), ARPHRD type (2), packet type
/// (1), address length (1), address (8). etherparse has no slice type for it.
#[inline(always)]
fn sll2(frame: &[u8]) -> Result<Observation, Skip> {
    let hdr = frame.get(..20).ok_or(Skip::LinkTruncated)?;
    let arphrd = u16::from_be_bytes([hdr[8], hdr[9]]);
    // ARPHRD_NETLINK carries netlink, not Ethernet types.
    if arphrd == 824 {
        return Err(Skip::NotIp);
    }
    let et = EtherType(u16::from_be_bytes([hdr[0], hdr[1]]));
    ether_payload(et, &frame[20..])
}

/// BSD loopback: a 4-byte address family. `DLT_NULL` uses the writer's byte order (libpcap
/// swaps it for files written on a machine of the other order, but not always), so both
/// orders are accepted; `DLT_LOOP` is network order.
#[inline(always)]
fn null(frame: &[u8], network_order: bool) -> Result<Observation, Skip> {
    let hdr = frame.get(..4).ok_or(Skip::LinkTruncated)?;
    let b = [hdr[0], hdr[1], hdr[2], hdr[3]];
    let family = if network_order {
        u32::from_be_bytes(b)
    } else {
        let le = u32::from_le_bytes(b);
        if le <= 0xffff {
            le
        } else {
            u32::from_be_bytes(b)
        }
    };
    match family {
        // AF_INET everywhere; AF_INET6 on Linux (10), NetBSD/OpenBSD (24), FreeBSD (28),
        // macOS (30).
        2 | 10 | 24 | 28 | 30 => ip(&frame[4..]),
        _ => Err(Skip::NotIp),
    }
}

/// An IPv4 or IPv6 packet, by its version nibble.
#[inline(always)]
fn ip(pkt: &[u8]) -> Result<Observation, Skip> {
    match pkt.first().map(|b| b >> 4) {
        Some(4) => ipv4(pkt),
        Some(6) => ipv6(pkt),
        Some(_) => Err(Skip::IpMalformed),
        None => Err(Skip::IpTruncated),
    }
}

/// The IP payload, leniently: a length field pointing past the capture (a snap length) or
/// inside the header is replaced by what was captured, as etherparse's lax slicing does.
#[inline(always)]
fn ip_payload(pkt: &[u8], header_len: usize, total_len: usize) -> &[u8] {
    let end = if total_len < header_len || total_len > pkt.len() {
        pkt.len()
    } else {
        total_len
    };
    &pkt[header_len..end]
}

#[inline(always)]
fn ipv4(pkt: &[u8]) -> Result<Observation, Skip> {
    use etherparse::err::ipv4::HeaderSliceError as E;
    let h = Ipv4HeaderSlice::from_slice(pkt).map_err(|e| match e {
        E::Len(_) => Skip::IpTruncated,
        E::Content(_) => Skip::IpMalformed,
    })?;
    let hl = h.slice().len();
    let mut payload = ip_payload(pkt, hl, usize::from(h.total_len()));
    let mut proto = h.protocol();
    if proto == IpNumber::AUTHENTICATION_HEADER {
        let ah = IpAuthHeaderSlice::from_slice(payload).map_err(|_| Skip::IpMalformed)?;
        proto = ah.next_header();
        payload = &payload[ah.slice().len()..];
    }
    transport(
        Addr::from_v4(h.source()),
        Addr::from_v4(h.destination()),
        proto,
        payload,
        h.fragments_offset().value() != 0,
    )
}

#[inline(always)]
fn ipv6(pkt: &[u8]) -> Result<Observation, Skip> {
    use etherparse::err::ipv6::HeaderSliceError as E;
    let h = Ipv6HeaderSlice::from_slice(pkt).map_err(|e| match e {
        E::Len(_) => Skip::IpTruncated,
        E::Content(_) => Skip::IpMalformed,
    })?;
    let len = usize::from(h.payload_length());
    // A payload length of 0 is a jumbogram (or unset): use what was captured.
    let total = if len == 0 { pkt.len() } else { 40 + len };
    let mut payload = ip_payload(pkt, 40, total);
    let mut proto = h.next_header();
    let mut later_fragment = false;
    if proto.is_ipv6_ext_header_value() {
        use etherparse::err::ipv6_exts::HeaderSliceError as X;
        let (exts, next, rest, err) = Ipv6ExtensionsSlice::from_slice_lax(proto, payload);
        match err {
            Some((X::Len(_), _)) => return Err(Skip::IpTruncated),
            Some((X::Content(_), _)) => return Err(Skip::IpMalformed),
            None => {}
        }
        later_fragment = exts.is_fragmenting_payload()
            && exts.into_iter().any(|ext| match ext {
                Ipv6ExtensionSlice::Fragment(f) => f.fragment_offset().value() != 0,
                _ => false,
            });
        proto = next;
        payload = rest;
    }
    transport(
        Addr::from_v6(h.source()),
        Addr::from_v6(h.destination()),
        proto,
        payload,
        later_fragment,
    )
}

/// Reads ports and TCP flags from the transport header. Only the fixed part is needed:
/// 14 bytes of TCP (ports, sequence numbers, flags), 4 of UDP or SCTP (ports), 2 of ICMP
/// (type and code).
#[inline(always)]
fn transport(
    src: Addr,
    dst: Addr,
    proto: IpNumber,
    l4: &[u8],
    later_fragment: bool,
) -> Result<Observation, Skip> {
    let mut o = Observation {
        src,
        dst,
        proto: proto.0,
        src_port: 0,
        dst_port: 0,
        tcp_flags: 0,
        tcp_seq: 0,
        tcp_ack: 0,
        tcp_payload_empty: true,
        later_fragment,
    };
    if later_fragment {
        return Ok(o);
    }
    match proto {
        IpNumber::TCP => {
            let h = l4.get(..14).ok_or(Skip::TransportTruncated)?;
            o.src_port = u16::from_be_bytes([h[0], h[1]]);
            o.dst_port = u16::from_be_bytes([h[2], h[3]]);
            o.tcp_flags = h[13];
            o.tcp_seq = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
            o.tcp_ack = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
            o.tcp_payload_empty = l4.len() <= usize::from(h[12] >> 4) * 4;
        }
        IpNumber::ICMP | IpNumber::IPV6_ICMP => {
            let h = l4.get(..2).ok_or(Skip::TransportTruncated)?;
            o.src_port = u16::from(h[0]);
            o.dst_port = u16::from(h[1]);
        }
        IpNumber::UDP | IpNumber::SCTP => {
            let h = l4.get(..4).ok_or(Skip::TransportTruncated)?;
            o.src_port = u16::from_be_bytes([h[0], h[1]]);
            o.dst_port = u16::from_be_bytes([h[2], h[3]]);
        }
        _ => {}
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;
    use proptest::prelude::*;

    fn tcp_v4(flags_syn: bool, flags_ack: bool) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4([192, 0, 2, 1], [198, 51, 100, 2], 64)
            .tcp(40000, 443, 1, 1024);
        let b = if flags_syn { b.syn() } else { b };
        let b = if flags_ack { b.ack(7) } else { b };
        let mut v = Vec::new();
        b.write(&mut v, &[]).unwrap();
        v
    }

    #[test]
    fn tcp_syn_is_an_originator_syn_ack_is_not() {
        let s = Sightings::Starts;
        let syn = parse(LinkType::Ethernet, &tcp_v4(true, false)).unwrap();
        assert_eq!(syn.src.to_string(), "192.0.2.1");
        assert_eq!((syn.src_port, syn.dst_port, syn.proto), (40000, 443, 6));
        assert_eq!(s.originator(&syn), Some(syn.src));
        let synack = parse(LinkType::Ethernet, &tcp_v4(true, true)).unwrap();
        assert_eq!(s.originator(&synack), None);
        let ack = parse(LinkType::Ethernet, &tcp_v4(false, true)).unwrap();
        assert_eq!(s.originator(&ack), None);
        assert_eq!(Sightings::AnyPacket.originator(&ack), Some(ack.src));
    }

    #[test]
    fn vlan_and_qinq_tags_are_followed() {
        let mut v = Vec::new();
        PacketBuilder::ethernet2([1; 6], [2; 6])
            .double_vlan(100.try_into().unwrap(), 200.try_into().unwrap())
            .ipv6(
                [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5],
                [0xfe; 16],
                64,
            )
            .udp(5353, 53)
            .write(&mut v, b"q")
            .unwrap();
        let o = parse(LinkType::Ethernet, &v).unwrap();
        assert_eq!(o.src.to_string(), "2001:db8::5");
        assert_eq!((o.proto, o.dst_port), (17, 53));
    }

    #[test]
    fn cooked_raw_and_loopback_links() {
        let mut ipv4 = Vec::new();
        PacketBuilder::ipv4([203, 0, 113, 9], [198, 51, 100, 1], 64)
            .udp(1, 2)
            .write(&mut ipv4, &[])
            .unwrap();
        assert_eq!(
            parse(LinkType::Raw, &ipv4).unwrap().src.to_string(),
            "203.0.113.9"
        );
        // SLL: packet type 0 (host), ARPHRD_ETHER 1, address length 6, protocol 0x0800.
        let mut sll = vec![0, 0, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0, 0x08, 0x00];
        sll.extend_from_slice(&ipv4);
        assert_eq!(
            parse(LinkType::LinuxSll, &sll).unwrap().src.to_string(),
            "203.0.113.9"
        );
        // SLL2: protocol 0x0800, reserved, ifindex 2, ARPHRD_ETHER, outgoing, len 6.
        let mut sll2 = vec![
            0x08, 0, 0, 0, 0, 0, 0, 2, 0, 1, 4, 6, 1, 2, 3, 4, 5, 6, 0, 0,
        ];
        sll2.extend_from_slice(&ipv4);
        assert_eq!(
            parse(LinkType::LinuxSll2, &sll2).unwrap().src.to_string(),
            "203.0.113.9"
        );
        for hdr in [[2u8, 0, 0, 0], [0, 0, 0, 2]] {
            let mut null = hdr.to_vec();
            null.extend_from_slice(&ipv4);
            assert!(parse(LinkType::Null, &null).is_ok(), "{hdr:?}");
        }
        let mut lo = vec![0, 0, 0, 2];
        lo.extend_from_slice(&ipv4);
        assert!(parse(LinkType::Loop, &lo).is_ok());
    }

    #[test]
    fn mpls_and_pppoe_carry_ip() {
        let mut ipv4 = Vec::new();
        PacketBuilder::ipv4([203, 0, 113, 9], [198, 51, 100, 1], 64)
            .icmpv4_echo_request(1, 1)
            .write(&mut ipv4, &[])
            .unwrap();
        let mut mpls = vec![2u8; 12];
        mpls.extend_from_slice(&[0x88, 0x47, 0, 0x01, 0x00, 64, 0, 0x02, 0x01, 64]);
        mpls.extend_from_slice(&ipv4);
        let o = parse(LinkType::Ethernet, &mpls).unwrap();
        assert_eq!((o.src.to_string().as_str(), o.proto), ("203.0.113.9", 1));
        let mut pppoe = vec![2u8; 12];
        pppoe.extend_from_slice(&[0x88, 0x64, 0x11, 0, 0, 1, 0, 30, 0x00, 0x21]);
        pppoe.extend_from_slice(&ipv4);
        assert!(parse(LinkType::Ethernet, &pppoe).is_ok());
    }

    #[test]
    fn damage_is_classified() {
        let full = tcp_v4(true, false);
        assert_eq!(
            parse(LinkType::Ethernet, &full[..10]),
            Err(Skip::LinkTruncated)
        );
        assert_eq!(
            parse(LinkType::Ethernet, &full[..20]),
            Err(Skip::IpTruncated)
        );
        assert_eq!(
            parse(LinkType::Ethernet, &full[..14 + 20 + 10]),
            Err(Skip::TransportTruncated)
        );
        // A snap length that cuts TCP options but keeps the flags is fine.
        assert!(parse(LinkType::Ethernet, &full[..14 + 20 + 14]).is_ok());
        let mut bad = full.clone();
        bad[14] = 0x42; // version 4, IHL 2
        assert_eq!(parse(LinkType::Ethernet, &bad), Err(Skip::IpMalformed));
        let mut arp = full.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(parse(LinkType::Ethernet, &arp), Err(Skip::NotIp));
    }

    #[test]
    fn later_fragments_are_not_sightings() {
        let mut v = tcp_v4(true, false);
        v[14 + 6] = 0x00;
        v[14 + 7] = 0x10; // fragment offset 16 (x8 bytes)
        let o = parse(LinkType::Ethernet, &v).unwrap();
        assert!(o.later_fragment);
        assert_eq!(Sightings::Starts.originator(&o), None);
    }

    proptest! {
        #[test]
        fn never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200), link in 0usize..8) {
            let links = [LinkType::Ethernet, LinkType::LinuxSll, LinkType::LinuxSll2, LinkType::Raw,
                         LinkType::Ipv4, LinkType::Ipv6, LinkType::Null, LinkType::Loop];
            let _ = parse(links[link], &bytes);
        }

        #[test]
        fn never_panics_on_damaged_real_frames(cut in 0usize..80, flip in 0usize..80, val in any::<u8>()) {
            let mut v = tcp_v4(true, false);
            if flip < v.len() { v[flip] = val; }
            v.truncate(cut.min(v.len()));
            let _ = parse(LinkType::Ethernet, &v);
        }
    }
}
