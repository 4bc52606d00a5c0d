//! `broker-bin-v1`: a one-byte type tag, then the body; integers big-endian; lengths as
//! 7-bit varints (least significant group first), which Broker caps at 32 bits.

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::{DecodeError, Event, MAX_DEPTH, Proto, Value};
use crate::addr::Addr;

const NONE: u8 = 0;
const BOOL: u8 = 1;
const COUNT: u8 = 2;
const INTEGER: u8 = 3;
const REAL: u8 = 4;
const STRING: u8 = 5;
const ADDRESS: u8 = 6;
const SUBNET: u8 = 7;
const PORT: u8 = 8;
const TIMESTAMP: u8 = 9;
const TIMESPAN: u8 = 10;
const ENUM: u8 = 11;
const SET: u8 = 12;
const TABLE: u8 = 13;
const VECTOR: u8 = 14;

fn varint(mut n: usize, out: &mut Vec<u8>) {
    // Broker writes lengths as 32-bit values.
    n = n.min(u32::MAX as usize);
    while n > 0x7f {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn bytes(b: &[u8], out: &mut Vec<u8>) {
    varint(b.len(), out);
    out.extend_from_slice(b);
}

fn subnet_bytes(n: &IpNet) -> ([u8; 16], u8) {
    match n {
        IpNet::V4(v4) => (Addr::from(v4.addr()).octets(), v4.prefix_len() + 96),
        IpNet::V6(v6) => (v6.addr().octets(), v6.prefix_len()),
    }
}

/// Appends one value, with its tag.
pub fn encode(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::None => out.push(NONE),
        Value::Bool(b) => out.extend_from_slice(&[BOOL, u8::from(*b)]),
        Value::Count(n) => {
            out.push(COUNT);
            out.extend_from_slice(&n.to_be_bytes());
        }
        Value::Integer(n) => {
            out.push(INTEGER);
            out.extend_from_slice(&n.to_be_bytes());
        }
        Value::Real(x) => {
            out.push(REAL);
            out.extend_from_slice(&x.to_bits().to_be_bytes());
        }
        Value::String(s) => {
            out.push(STRING);
            bytes(s.as_bytes(), out);
        }
        Value::Address(a) => {
            out.push(ADDRESS);
            out.extend_from_slice(&a.octets());
        }
        Value::Subnet(n) => {
            let (b, len) = subnet_bytes(n);
            out.push(SUBNET);
            out.extend_from_slice(&b);
            out.push(len);
        }
        Value::Port(n, p) => {
            out.push(PORT);
            out.extend_from_slice(&n.to_be_bytes());
            out.push(p.as_u8());
        }
        Value::Timestamp(t) => {
            out.push(TIMESTAMP);
            out.extend_from_slice(&t.to_be_bytes());
        }
        Value::Timespan(t) => {
            out.push(TIMESPAN);
            out.extend_from_slice(&t.to_be_bytes());
        }
        Value::Enum(s) => {
            out.push(ENUM);
            bytes(s.as_bytes(), out);
        }
        Value::Set(xs) => {
            out.push(SET);
            varint(xs.len(), out);
            xs.iter().for_each(|x| encode(x, out));
        }
        Value::Table(kvs) => {
            out.push(TABLE);
            varint(kvs.len(), out);
            for (k, v) in kvs {
                encode(k, out);
                encode(v, out);
            }
        }
        Value::Vector(xs) => {
            out.push(VECTOR);
            varint(xs.len(), out);
            xs.iter().for_each(|x| encode(x, out));
        }
    }
}

/// Appends a Zeek event envelope (without building it as a [`Value`] first).
pub fn encode_event(e: &Event, out: &mut Vec<u8>) {
    // [count 1, count 1, [name, args, metadata?]]
    out.extend_from_slice(&[VECTOR, 3, COUNT, 0, 0, 0, 0, 0, 0, 0, 1]);
    out.extend_from_slice(&[COUNT, 0, 0, 0, 0, 0, 0, 0, 1]);
    out.push(VECTOR);
    out.push(if e.metadata.is_empty() { 2 } else { 3 });
    out.push(STRING);
    bytes(e.name.as_bytes(), out);
    out.push(VECTOR);
    varint(e.args.len(), out);
    e.args.iter().for_each(|a| encode(a, out));
    if !e.metadata.is_empty() {
        out.push(VECTOR);
        varint(e.metadata.len(), out);
        for (k, v) in &e.metadata {
            out.push(VECTOR);
            out.push(2);
            encode(&Value::Count(*k), out);
            encode(v, out);
        }
    }
}

/// A value encoded into a new buffer.
pub fn to_vec(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    encode(v, &mut out);
    out
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.b.len())
            .ok_or(DecodeError::Truncated(self.b.len()))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn remaining(&self) -> usize {
        self.b.len() - self.at
    }

    /// A length no larger than what is left, each element taking at least `min` bytes.
    fn len(&mut self, min: usize) -> Result<usize, DecodeError> {
        let start = self.at;
        let mut n: u64 = 0;
        for i in 0..5 {
            let b = self.u8()?;
            n |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                if n > u64::from(u32::MAX) {
                    return Err(DecodeError::Length(start));
                }
                let n = n as usize;
                if n.saturating_mul(min) > self.remaining() {
                    return Err(DecodeError::Length(start));
                }
                return Ok(n);
            }
        }
        Err(DecodeError::Length(start))
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let n = self.len(1)?;
        let s = self.take(n)?;
        Ok(String::from_utf8_lossy(s).into_owned())
    }

    fn value(&mut self, depth: usize) -> Result<Value, DecodeError> {
        let at = self.at;
        let tag = self.u8()?;
        Ok(match tag {
            NONE => Value::None,
            BOOL => match self.u8()? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                _ => {
                    return Err(DecodeError::Invalid {
                        what: "boolean",
                        at,
                    });
                }
            },
            COUNT => Value::Count(u64::from_be_bytes(self.array()?)),
            INTEGER => Value::Integer(i64::from_be_bytes(self.array()?)),
            REAL => Value::Real(f64::from_bits(u64::from_be_bytes(self.array()?))),
            STRING => Value::String(self.string()?),
            ADDRESS => Value::Address(Addr::from_v6(self.array()?)),
            SUBNET => {
                let b: [u8; 16] = self.array()?;
                let len = self.u8()?;
                Value::Subnet(subnet(b, len).ok_or(DecodeError::Invalid { what: "subnet", at })?)
            }
            PORT => {
                let n = u16::from_be_bytes(self.array()?);
                let p =
                    Proto::from_u8(self.u8()?).ok_or(DecodeError::Invalid { what: "port", at })?;
                Value::Port(n, p)
            }
            TIMESTAMP => Value::Timestamp(i64::from_be_bytes(self.array()?)),
            TIMESPAN => Value::Timespan(i64::from_be_bytes(self.array()?)),
            ENUM => Value::Enum(self.string()?),
            SET | VECTOR | TABLE => {
                if depth >= MAX_DEPTH {
                    return Err(DecodeError::TooDeep);
                }
                if tag == TABLE {
                    let n = self.len(2)?;
                    let mut kvs = Vec::with_capacity(n);
                    for _ in 0..n {
                        let k = self.value(depth + 1)?;
                        let v = self.value(depth + 1)?;
                        kvs.push((k, v));
                    }
                    Value::Table(kvs)
                } else {
                    let n = self.len(1)?;
                    let mut xs = Vec::with_capacity(n);
                    for _ in 0..n {
                        xs.push(self.value(depth + 1)?);
                    }
                    if tag == SET {
                        Value::Set(xs)
                    } else {
                        Value::Vector(xs)
                    }
                }
            }
            _ => return Err(DecodeError::Tag { tag, at }),
        })
    }
}

/// A subnet from Broker's 16 bytes and raw length (IPv4: v4-mapped, length + 96).
fn subnet(b: [u8; 16], len: u8) -> Option<IpNet> {
    let a = Addr::from_v6(b);
    if a.is_v4() && len >= 96 {
        let std::net::IpAddr::V4(v4) = a.to_ip() else {
            return None;
        };
        Ipv4Net::new(v4, len - 96).ok().map(IpNet::V4)
    } else {
        Ipv6Net::new(std::net::Ipv6Addr::from(b), len)
            .ok()
            .map(IpNet::V6)
    }
}

/// Decodes exactly one value.
///
/// # Errors
/// [`DecodeError`]: truncated input, unknown tags, impossible lengths, trailing bytes.
pub fn decode(b: &[u8]) -> Result<Value, DecodeError> {
    let mut r = Reader { b, at: 0 };
    let v = r.value(0)?;
    match r.remaining() {
        0 => Ok(v),
        n => Err(DecodeError::Trailing(n)),
    }
}

/// Decodes a Zeek event envelope.
///
/// # Errors
/// [`DecodeError`].
pub fn decode_event(b: &[u8]) -> Result<Event, DecodeError> {
    Event::from_value(decode(b)?)
}
