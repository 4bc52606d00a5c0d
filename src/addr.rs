//! A compact, canonical IP address key.
//!
//! [`Addr`] stores every address in 16 bytes with IPv4 as an IPv4-mapped IPv6 address
//! (`::ffff:a.b.c.d`), exactly as Zeek's `addr` type does internally. So `10.0.0.1` and
//! `::ffff:10.0.0.1` are the same key and both print as `10.0.0.1`. The byte array has
//! alignment 1, which keeps catch-and-release table slots small (see `cnr::watch`), and it
//! hashes as one `u128`, which keeps the per-packet lookup cheap.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::IpNet;

/// The one rule for IPv4-mapped IPv6 addresses everywhere (API, registry, whitelist,
/// catch-and-release, watchlist, scan, enforcement): `::ffff:a.b.c.d` is the IPv4
/// address `a.b.c.d`.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// [`canonical_ip`] for networks: `::ffff:a.b.c.d/(96+n)` is `a.b.c.d/n`, so that every
/// check made on IPv4 networks applies to it. A shorter IPv6 prefix that only partly
/// covers the mapped space stays IPv6.
pub fn canonical_net(n: IpNet) -> IpNet {
    match n {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.network().to_ipv4_mapped() {
            Some(v4) => {
                ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(n, |m| IpNet::V4(m.trunc()))
            }
            None => n,
        },
        _ => n,
    }
}

/// An IPv4 or IPv6 address in canonical 16-byte form.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Addr([u8; 16]);

const V4_MAPPED_PREFIX: [u8; 12] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];

impl Addr {
    /// An IPv4 address from its four network-order bytes.
    #[inline]
    pub const fn from_v4(b: [u8; 4]) -> Addr {
        Addr([
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, b[0], b[1], b[2], b[3],
        ])
    }

    /// An IPv6 address from its sixteen network-order bytes. IPv4-mapped addresses are
    /// IPv4 addresses.
    #[inline]
    pub const fn from_v6(b: [u8; 16]) -> Addr {
        Addr(b)
    }

    /// Whether this is an IPv4 address.
    #[inline]
    pub fn is_v4(&self) -> bool {
        self.0[..12] == V4_MAPPED_PREFIX
    }

    /// The prefix length of a host route for this address: 32 or 128.
    pub fn host_prefix_len(&self) -> u8 {
        if self.is_v4() { 32 } else { 128 }
    }

    /// The standard-library form, with IPv4-mapped addresses as IPv4.
    pub fn to_ip(self) -> IpAddr {
        if self.is_v4() {
            IpAddr::V4(Ipv4Addr::new(
                self.0[12], self.0[13], self.0[14], self.0[15],
            ))
        } else {
            IpAddr::V6(Ipv6Addr::from(self.0))
        }
    }

    /// The sixteen canonical bytes.
    pub fn octets(&self) -> [u8; 16] {
        self.0
    }

    /// The network of `len4` (IPv4) or `len6` (IPv6) bits this address is in, as its
    /// first address: the host bits cleared. A branch and two shifts, for the packet path.
    #[inline]
    pub fn masked(&self, len4: u8, len6: u8) -> Addr {
        let bits = u128::from_be_bytes(self.0);
        let keep = if self.is_v4() {
            96 + u32::from(len4.min(32))
        } else {
            u32::from(len6.min(128))
        };
        let mask = if keep == 0 {
            0
        } else {
            u128::MAX << (128 - keep)
        };
        Addr((bits & mask).to_be_bytes())
    }

    /// [`Addr::masked`] as a network.
    pub fn network(&self, len4: u8, len6: u8) -> IpNet {
        let m = self.masked(len4, len6);
        let len = if self.is_v4() {
            len4.min(32)
        } else {
            len6.min(128)
        };
        IpNet::new(m.to_ip(), len).unwrap_or_else(|_| IpNet::from(m.to_ip()))
    }
}

impl Hash for Addr {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u128(u128::from_ne_bytes(self.0));
    }
}

impl From<IpAddr> for Addr {
    fn from(ip: IpAddr) -> Addr {
        match ip {
            IpAddr::V4(v4) => Addr::from_v4(v4.octets()),
            IpAddr::V6(v6) => Addr::from_v6(v6.octets()),
        }
    }
}

impl From<Ipv4Addr> for Addr {
    fn from(ip: Ipv4Addr) -> Addr {
        Addr::from_v4(ip.octets())
    }
}

impl From<Ipv6Addr> for Addr {
    fn from(ip: Ipv6Addr) -> Addr {
        Addr::from_v6(ip.octets())
    }
}

impl From<Addr> for IpAddr {
    fn from(a: Addr) -> IpAddr {
        a.to_ip()
    }
}

/// An address's text, on the stack (see [`Addr::text`]).
#[derive(Clone, Copy)]
pub struct AddrText {
    buf: [u8; 48],
    len: u8,
}

impl AddrText {
    /// The text's bytes (ASCII).
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits, hex letters, dots and colons are ever written.
        std::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or("?")
    }
}

/// Each octet's decimal digits followed by a dot, and how many bytes that is: an address is
/// written four bytes at a time, without a branch on the number of digits.
const OCTETS: [([u8; 4], u8); 256] = {
    let mut t = [([0u8; 4], 0u8); 256];
    let mut o = 0;
    while o < 256 {
        let (mut d, mut n) = ([0u8; 4], 0);
        if o >= 100 {
            d[n] = b'0' + (o / 100) as u8;
            n += 1;
        }
        if o >= 10 {
            d[n] = b'0' + (o / 10 % 10) as u8;
            n += 1;
        }
        d[n] = b'0' + (o % 10) as u8;
        d[n + 1] = b'.';
        t[o] = (d, n as u8 + 2);
        o += 1;
    }
    t
};

/// Writes the four octets `b` as a dotted quad at `buf[*n..]` (at most 16 bytes).
fn push_dotted(buf: &mut [u8; 48], n: &mut usize, b: &[u8; 4]) {
    for o in b {
        let (digits, len) = &OCTETS[usize::from(*o)];
        buf[*n..*n + 4].copy_from_slice(digits);
        *n += usize::from(*len);
    }
    // The dot after the last octet.
    *n -= 1;
}

impl Addr {
    /// The address as Zeek prints it (`IPAddr::AsString`, which is `inet_ntop`): a dotted
    /// quad for IPv4; for IPv6, lowercase hex groups with the longest run of two or more
    /// zero groups (the first, on a tie) written `::`, and the last 32 bits as a dotted
    /// quad when the first 96 are zero (`::1.2.3.4`, as glibc writes IPv4-compatible
    /// addresses; Rust's own `Ipv6Addr` prints `::102:304`). Built on the stack, without
    /// `core::fmt`, because logs print a lot of addresses.
    pub fn text(&self) -> AddrText {
        let mut buf = [0u8; 48];
        let len = self.put_text(&mut buf) as u8;
        AddrText { buf, len }
    }

    /// Writes [`text`](Addr::text) at the start of `buf` (at most 45 bytes), for a
    /// caller that formats into a buffer of its own; returns its length.
    #[inline]
    pub fn put_text(&self, buf: &mut [u8; 48]) -> usize {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let b = self.0;
        let last4 = [b[12], b[13], b[14], b[15]];
        let mut n = 0;
        if self.is_v4() {
            push_dotted(buf, &mut n, &last4);
            return n;
        }
        let w: [u16; 8] = std::array::from_fn(|i| u16::from_be_bytes([b[2 * i], b[2 * i + 1]]));
        // The longest run of zero groups, if at least two long.
        let (mut best, mut best_len, mut cur, mut cur_len) = (usize::MAX, 0, 0, 0);
        for (i, g) in w.iter().enumerate() {
            if *g == 0 {
                if cur_len == 0 {
                    cur = i;
                }
                cur_len += 1;
                if cur_len > best_len {
                    best = cur;
                    best_len = cur_len;
                }
            } else {
                cur_len = 0;
            }
        }
        if best_len < 2 {
            best = usize::MAX;
        }
        let mut i = 0;
        while i < 8 {
            if i == best {
                buf[n] = b':';
                n += 1;
                i += best_len;
                if i == 8 {
                    buf[n] = b':';
                    n += 1;
                }
                continue;
            }
            if i > 0 {
                buf[n] = b':';
                n += 1;
            }
            if i == 6 && best == 0 && best_len == 6 {
                push_dotted(buf, &mut n, &last4);
                break;
            }
            let g = w[i];
            let mut started = false;
            for shift in [12, 8, 4, 0] {
                let d = (g >> shift) & 0xf;
                if d != 0 || started || shift == 0 {
                    buf[n] = HEX[usize::from(d)];
                    n += 1;
                    started = true;
                }
            }
            i += 1;
        }
        n
    }
}

/// Zeek's text form, see [`Addr::text`].
impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.text().as_str())
    }
}

impl fmt::Debug for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a string is not a single address that catch-and-release can watch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    /// Not an IP address at all.
    #[error("`{0}` is not an IP address")]
    Invalid(String),
    /// A subnet wider than one host.
    #[error(
        "`{0}` is a subnet: catch-and-release works on single addresses (a /32 or /128), not subnets"
    )]
    Subnet(String),
}

impl FromStr for Addr {
    type Err = AddrError;

    /// Parses a single address. A host prefix (`/32` for IPv4, `/128` for IPv6) is accepted
    /// as the address itself; any wider prefix is rejected with [`AddrError::Subnet`].
    fn from_str(s: &str) -> Result<Addr, AddrError> {
        let s = s.trim();
        if let Some((addr, len)) = s.split_once('/') {
            let net: IpNet = s.parse().map_err(|_| AddrError::Invalid(s.to_string()))?;
            let ip: IpAddr = addr
                .parse()
                .map_err(|_| AddrError::Invalid(s.to_string()))?;
            if net.prefix_len() != net.max_prefix_len() || len.is_empty() {
                return Err(AddrError::Subnet(s.to_string()));
            }
            return Ok(Addr::from(ip));
        }
        // Accept bracketed IPv6 as people paste it from URLs.
        let bare = s
            .strip_prefix('[')
            .and_then(|r| r.strip_suffix(']'))
            .unwrap_or(s);
        bare.parse::<IpAddr>()
            .map(Addr::from)
            .map_err(|_| AddrError::Invalid(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_prefixes_padding_and_leading_zeros() {
        assert_eq!(
            "1.1.1.1/32".parse::<Addr>().unwrap(),
            Addr::from_v4([1, 1, 1, 1])
        );
        assert!("01.1.1.1".parse::<Addr>().is_err());
        assert!(" 192.0.2.1 ".parse::<Addr>().is_ok());
    }

    #[test]
    fn mapped_networks_are_ipv4_networks() {
        let n = |s: &str| s.parse::<IpNet>().unwrap();
        for (given, want) in [
            ("::ffff:198.51.100.200/128", "198.51.100.200/32"),
            ("::ffff:198.51.100.0/120", "198.51.100.0/24"),
            ("::ffff:0:0/96", "0.0.0.0/0"),
            ("2001:db8::/32", "2001:db8::/32"),
            ("::/0", "::/0"),
            ("::ffff:0:0/95", "::ffff:0:0/95"),
            ("192.0.2.0/24", "192.0.2.0/24"),
        ] {
            assert_eq!(canonical_net(n(given)), n(want), "{given}");
        }
        assert_eq!(
            canonical_ip("::ffff:10.1.2.3".parse().unwrap()),
            "10.1.2.3".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn v4_is_v4_mapped_and_prints_as_v4() {
        let a: Addr = "10.0.0.1".parse().unwrap();
        let b: Addr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(a, b);
        assert!(a.is_v4());
        assert_eq!(b.to_string(), "10.0.0.1");
        assert_eq!(a.host_prefix_len(), 32);
    }

    #[test]
    fn v6_round_trips() {
        let a: Addr = "2001:db8::1".parse().unwrap();
        assert!(!a.is_v4());
        assert_eq!(a.to_string(), "2001:db8::1");
        assert_eq!(a.host_prefix_len(), 128);
    }

    #[test]
    fn host_prefixes_accepted_subnets_rejected() {
        assert_eq!(
            "10.0.0.1/32".parse::<Addr>().unwrap(),
            "10.0.0.1".parse::<Addr>().unwrap()
        );
        assert!("2001:db8::1/128".parse::<Addr>().is_ok());
        assert!(matches!(
            "10.0.0.0/24".parse::<Addr>(),
            Err(AddrError::Subnet(_))
        ));
        assert!(matches!(
            "2001:db8::/64".parse::<Addr>(),
            Err(AddrError::Subnet(_))
        ));
        assert!(matches!(
            "10.0.0.300".parse::<Addr>(),
            Err(AddrError::Invalid(_))
        ));
    }

    /// glibc's `inet_ntop`, which Zeek uses.
    fn inet_ntop6(b: [u8; 16]) -> String {
        let mut buf = [0 as libc_char; 64];
        // SAFETY: the buffer is large enough for any IPv6 address (INET6_ADDRSTRLEN = 46).
        let r = unsafe { inet_ntop(10, b.as_ptr().cast(), buf.as_mut_ptr(), buf.len() as u32) };
        assert!(!r.is_null());
        // SAFETY: inet_ntop wrote a NUL-terminated string.
        unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
            .to_str()
            .unwrap()
            .to_string()
    }

    #[allow(non_camel_case_types)]
    type libc_char = std::ffi::c_char;

    unsafe extern "C" {
        fn inet_ntop(
            af: i32,
            src: *const std::ffi::c_void,
            dst: *mut libc_char,
            size: u32,
        ) -> *const libc_char;
    }

    proptest::proptest! {
        #[test]
        fn ipv6_text_matches_inet_ntop(groups in proptest::collection::vec(
            proptest::prop_oneof![3 => proptest::prelude::Just(0u16), 1 => proptest::prelude::Just(1u16), 2 => proptest::prelude::any::<u16>()], 8)) {
            let mut b = [0u8; 16];
            for (i, g) in groups.iter().enumerate() {
                b[2 * i..2 * i + 2].copy_from_slice(&g.to_be_bytes());
            }
            let a = Addr::from_v6(b);
            let want = if a.is_v4() { a.to_ip().to_string() } else { inet_ntop6(b) };
            proptest::prop_assert_eq!(a.to_string(), want);
        }
    }

    proptest::proptest! {
        #[test]
        fn ipv4_text_matches_std(b in proptest::prelude::any::<[u8; 4]>()) {
            proptest::prop_assert_eq!(
                Addr::from_v4(b).to_string(),
                Ipv4Addr::from(b).to_string()
            );
        }
    }

    #[test]
    fn every_octet_is_written_as_std_writes_it() {
        for o in 0..=255u8 {
            for at in 0..4 {
                let mut b = [1, 22, 203, 4];
                b[at] = o;
                assert_eq!(Addr::from_v4(b).to_string(), Ipv4Addr::from(b).to_string());
            }
        }
    }

    #[test]
    fn ipv6_text_examples() {
        for (a, want) in [
            ("2001:db8::1", "2001:db8::1"),
            ("::", "::"),
            ("::1", "::1"),
            ("1::", "1::"),
            ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
            ("2001:0:0:1:0:0:0:1", "2001:0:0:1::1"),
            ("1:0:2:3:4:5:6:7", "1:0:2:3:4:5:6:7"),
            ("::102:304", "::1.2.3.4"),
        ] {
            let a: Addr = a.parse().unwrap();
            assert_eq!(a.to_string(), want);
        }
    }

    #[test]
    fn addr_is_sixteen_bytes_with_alignment_one() {
        assert_eq!(size_of::<Addr>(), 16);
        assert_eq!(align_of::<Addr>(), 1);
    }
}
