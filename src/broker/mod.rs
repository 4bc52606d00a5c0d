//! Broker's data model and its two encodings, as Zeek's cluster backends put them on the
//! wire: `broker-bin-v1` ([`bin`]) and `broker-json-v1` (`json`), plus the Zeek event
//! envelope ([`Event`]) and the records catch-and-release and NetControl send ([`zeek`]).
//!
//! No I/O: bytes in, values out, and back. Decoding never panics and never allocates more
//! than the input can justify (every element takes at least one input byte, so a length
//! larger than what is left is rejected before anything is reserved), and nesting is
//! limited to [`MAX_DEPTH`].

pub mod bin;
pub(crate) mod json;

pub use json::{WsMessage, decode_ws};
pub mod zeek;

use ipnet::IpNet;

use crate::addr::Addr;

/// The deepest nesting of containers a decoder accepts. NetControl's `Rule` is 4 deep.
pub const MAX_DEPTH: usize = 32;

/// A port's transport protocol, as Broker numbers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    /// `?`
    Unknown,
    /// `tcp`
    Tcp,
    /// `udp`
    Udp,
    /// `icmp`
    Icmp,
}

impl Proto {
    fn from_u8(b: u8) -> Option<Proto> {
        Some(match b {
            0 => Proto::Unknown,
            1 => Proto::Tcp,
            2 => Proto::Udp,
            3 => Proto::Icmp,
            _ => return None,
        })
    }

    fn as_u8(self) -> u8 {
        self as u8
    }

    /// The name Broker prints after the slash.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Unknown => "?",
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
        }
    }
}

/// A Broker value (`broker::data`).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `none`: an unset optional field.
    None,
    /// `boolean`
    Bool(bool),
    /// `count`: Zeek's `count`.
    Count(u64),
    /// `integer`: Zeek's `int`.
    Integer(i64),
    /// `real`: Zeek's `double`.
    Real(f64),
    /// `string`
    String(String),
    /// `address`, IPv4 v4-mapped as Zeek keeps it.
    Address(Addr),
    /// `subnet`
    Subnet(IpNet),
    /// `port`: number and protocol.
    Port(u16, Proto),
    /// `timestamp`: nanoseconds since the epoch (Zeek's `time`).
    Timestamp(i64),
    /// `timespan`: nanoseconds (Zeek's `interval`).
    Timespan(i64),
    /// `enum_value`: the full name, e.g. `NetControl::DROP`.
    Enum(String),
    /// `set`
    Set(Vec<Value>),
    /// `table`: key and value pairs.
    Table(Vec<(Value, Value)>),
    /// `vector`: Zeek's vectors and records (fields in declaration order).
    Vector(Vec<Value>),
}

impl Value {
    /// The Broker type name, as the JSON encoding spells it.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::None => "none",
            Value::Bool(_) => "boolean",
            Value::Count(_) => "count",
            Value::Integer(_) => "integer",
            Value::Real(_) => "real",
            Value::String(_) => "string",
            Value::Address(_) => "address",
            Value::Subnet(_) => "subnet",
            Value::Port(..) => "port",
            Value::Timestamp(_) => "timestamp",
            Value::Timespan(_) => "timespan",
            Value::Enum(_) => "enum-value",
            Value::Set(_) => "set",
            Value::Table(_) => "table",
            Value::Vector(_) => "vector",
        }
    }

    /// A string value.
    pub fn string(s: impl Into<String>) -> Value {
        Value::String(s.into())
    }

    /// An enum value.
    pub fn enum_value(s: impl Into<String>) -> Value {
        Value::Enum(s.into())
    }
}

/// Why bytes or text are not a Broker value or event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended inside a value.
    #[error("truncated at byte {0}")]
    Truncated(usize),
    /// A type tag Broker does not have.
    #[error("unknown type tag {tag} at byte {at}")]
    Tag {
        /// The tag.
        tag: u8,
        /// Where.
        at: usize,
    },
    /// A length larger than the rest of the input could hold, or a bad varint.
    #[error("bad length at byte {0}")]
    Length(usize),
    /// A value that is not valid for its type (port protocol, subnet length …).
    #[error("invalid {what} at byte {at}")]
    Invalid {
        /// The type.
        what: &'static str,
        /// Where.
        at: usize,
    },
    /// Containers nested deeper than [`MAX_DEPTH`].
    #[error("nested deeper than {MAX_DEPTH}")]
    TooDeep,
    /// Bytes after the value.
    #[error("{0} bytes after the value")]
    Trailing(usize),
    /// Not JSON, or JSON that is not a Broker value.
    #[error("JSON: {0}")]
    Json(String),
    /// A value that is not a Zeek event envelope.
    #[error("not a Zeek event: {0}")]
    Envelope(&'static str),
}

/// Key of the network-timestamp entry in an event's metadata.
pub const META_NETWORK_TIMESTAMP: u64 = 1;

/// A Zeek event as the cluster backends carry it: name, arguments, metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// The full event name, e.g. `NetControl::catch_release_add`.
    pub name: String,
    /// The arguments, records as vectors.
    pub args: Vec<Value>,
    /// `[key, value]` pairs; key 1 is the network timestamp. Empty: the envelope has no
    /// third element (Zeek 8.1 and later without metadata).
    pub metadata: Vec<(u64, Value)>,
}

impl Event {
    /// An event without metadata.
    pub fn new(name: impl Into<String>, args: Vec<Value>) -> Event {
        Event {
            name: name.into(),
            args,
            metadata: Vec::new(),
        }
    }

    /// The network timestamp from the metadata, in nanoseconds.
    pub fn network_timestamp(&self) -> Option<i64> {
        self.metadata.iter().find_map(|(k, v)| match (k, v) {
            (&META_NETWORK_TIMESTAMP, Value::Timestamp(t)) => Some(*t),
            _ => None,
        })
    }

    /// The envelope: `[1, 1, [name, args, metadata?]]`.
    pub fn to_value(&self) -> Value {
        let mut inner = vec![
            Value::String(self.name.clone()),
            Value::Vector(self.args.clone()),
        ];
        if !self.metadata.is_empty() {
            inner.push(Value::Vector(
                self.metadata
                    .iter()
                    .map(|(k, v)| Value::Vector(vec![Value::Count(*k), v.clone()]))
                    .collect(),
            ));
        }
        Value::Vector(vec![Value::Count(1), Value::Count(1), Value::Vector(inner)])
    }

    /// Reads an envelope. Accepts two or three inner elements (Zeek 7.1 to 9.x);
    /// metadata entries that are not `[count, value]` are skipped.
    ///
    /// # Errors
    /// [`DecodeError::Envelope`] naming what is wrong.
    pub fn from_value(v: Value) -> Result<Event, DecodeError> {
        let Value::Vector(outer) = v else {
            return Err(DecodeError::Envelope("not a vector"));
        };
        let [version, kind, inner]: [Value; 3] = outer
            .try_into()
            .map_err(|_| DecodeError::Envelope("not 3 elements"))?;
        if version != Value::Count(1) {
            return Err(DecodeError::Envelope("format version is not 1"));
        }
        if kind != Value::Count(1) {
            return Err(DecodeError::Envelope("message type is not an event"));
        }
        let Value::Vector(inner) = inner else {
            return Err(DecodeError::Envelope("event body is not a vector"));
        };
        if !(2..=3).contains(&inner.len()) {
            return Err(DecodeError::Envelope("event body is not 2 or 3 elements"));
        }
        let mut it = inner.into_iter();
        let Some(Value::String(name)) = it.next() else {
            return Err(DecodeError::Envelope("event name is not a string"));
        };
        let Some(Value::Vector(args)) = it.next() else {
            return Err(DecodeError::Envelope("event arguments are not a vector"));
        };
        let mut metadata = Vec::new();
        match it.next() {
            None | Some(Value::None) => {}
            Some(Value::Vector(entries)) => {
                for e in entries {
                    if let Value::Vector(kv) = e
                        && let Ok([Value::Count(k), v]) = <[Value; 2]>::try_from(kv)
                    {
                        metadata.push((k, v));
                    }
                }
            }
            Some(_) => return Err(DecodeError::Envelope("metadata is not a vector")),
        }
        Ok(Event {
            name,
            args,
            metadata,
        })
    }
}

/// The serializer names of the 4-frame messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `broker-bin-v1`, Zeek's default.
    Bin,
    /// `broker-json-v1`
    Json,
}

impl Format {
    /// The frame's text.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Bin => "broker-bin-v1",
            Format::Json => "broker-json-v1",
        }
    }

    /// The format a frame names.
    pub fn from_frame(b: &[u8]) -> Option<Format> {
        match b {
            b"broker-bin-v1" => Some(Format::Bin),
            b"broker-json-v1" => Some(Format::Json),
            _ => None,
        }
    }

    /// Encodes an event.
    pub fn encode(self, e: &Event, out: &mut Vec<u8>) {
        match self {
            Format::Bin => bin::encode_event(e, out),
            Format::Json => json::encode_event(e, out),
        }
    }

    /// Decodes an event.
    ///
    /// # Errors
    /// [`DecodeError`].
    pub fn decode(self, b: &[u8]) -> Result<Event, DecodeError> {
        match self {
            Format::Bin => bin::decode_event(b),
            Format::Json => json::decode_event(b),
        }
    }
}

#[cfg(test)]
mod tests;
