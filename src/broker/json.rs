//! `broker-json-v1`: every value is `{"@data-type": T, "data": D}`.
//!
//! The encoder writes what Broker's writes, byte for byte, for every value catchd sends:
//! reals with six decimals (`%f`), timespans as an integer in the largest exact unit of
//! `ns`/`us`/`ms`/`s`, timestamps as `YYYY-MM-DDThh:mm:ss.sss` (UTC, milliseconds, as
//! Broker prints them on a host in UTC), ports as `80/tcp`. Two deliberate differences:
//! control characters other than `\b \f \n \r \t` are written as `\u00XX` (Broker writes
//! `\v` and leaves the others raw, which is not JSON), and non-finite reals as `null`
//! (Broker writes `inf`/`nan`).

use std::fmt::Write as _;

use chrono::{DateTime, NaiveDateTime};
use serde_json::Value as J;

use super::{DecodeError, Event, MAX_DEPTH, Proto, Value};
use crate::addr::Addr;

fn quoted(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn open(t: &str, out: &mut String) {
    out.push_str("{\"@data-type\":\"");
    out.push_str(t);
    out.push_str("\",\"data\":");
}

/// Broker's timespan text: `0s`, or the largest exact unit.
pub fn timespan_text(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let mut v = ns;
    for unit in ["ns", "us", "ms"] {
        if v % 1000 != 0 {
            return format!("{v}{unit}");
        }
        v /= 1000;
    }
    format!("{v}s")
}

/// Broker's timestamp text: UTC, millisecond resolution.
pub fn timestamp_text(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let ms = ns.rem_euclid(1_000_000_000) / 1_000_000;
    match DateTime::from_timestamp(secs, 0) {
        Some(t) => format!("{}.{ms:03}", t.naive_utc().format("%Y-%m-%dT%H:%M:%S")),
        None => "1970-01-01T00:00:00.000".into(),
    }
}

/// Appends one value.
pub fn encode(v: &Value, out: &mut String) {
    let list = |t: &str, xs: &mut dyn Iterator<Item = &Value>, out: &mut String| {
        open(t, out);
        out.push('[');
        for (i, x) in xs.enumerate() {
            if i > 0 {
                out.push(',');
            }
            encode(x, out);
        }
        out.push_str("]}");
    };
    match v {
        Value::Set(xs) => return list("set", &mut xs.iter(), out),
        Value::Vector(xs) => return list("vector", &mut xs.iter(), out),
        Value::Table(kvs) => {
            open("table", out);
            out.push('[');
            for (i, (k, v)) in kvs.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"key\":");
                encode(k, out);
                out.push_str(",\"value\":");
                encode(v, out);
                out.push('}');
            }
            out.push_str("]}");
            return;
        }
        _ => {}
    }
    open(v.type_name(), out);
    match v {
        Value::None => out.push_str("{}"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Count(n) => {
            let _ = write!(out, "{n}");
        }
        Value::Integer(n) => {
            let _ = write!(out, "{n}");
        }
        Value::Real(x) if x.is_finite() => {
            let _ = write!(out, "{x:.6}");
        }
        Value::Real(_) => out.push_str("null"),
        Value::String(s) | Value::Enum(s) => quoted(s, out),
        Value::Address(a) => quoted(a.text().as_str(), out),
        Value::Subnet(n) => quoted(&n.trunc().to_string(), out),
        Value::Port(n, p) => quoted(&format!("{n}/{}", p.as_str()), out),
        Value::Timestamp(t) => quoted(&timestamp_text(*t), out),
        Value::Timespan(t) => quoted(&timespan_text(*t), out),
        Value::Set(_) | Value::Vector(_) | Value::Table(_) => unreachable!("handled above"),
    }
    out.push('}');
}

/// A value as a JSON string.
pub fn to_string(v: &Value) -> String {
    let mut s = String::new();
    encode(v, &mut s);
    s
}

/// Appends a Zeek event envelope.
pub fn encode_event(e: &Event, out: &mut Vec<u8>) {
    out.extend_from_slice(to_string(&e.to_value()).as_bytes());
}

fn err(m: impl Into<String>) -> DecodeError {
    DecodeError::Json(m.into())
}

fn parse_timespan(s: &str) -> Option<i64> {
    let digits = s
        .char_indices()
        .find(|(i, c)| !(c.is_ascii_digit() || (*i == 0 && *c == '-')))
        .map_or(s.len(), |(i, _)| i);
    let (n, unit) = s.split_at(digits);
    let n: i64 = n.parse().ok()?;
    let mult: i64 = match unit {
        "ns" => 1,
        "us" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "min" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        "d" => 86_400_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

fn parse_timestamp(s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z').unwrap_or(s);
    let t = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").ok()?;
    t.and_utc().timestamp_nanos_opt()
}

fn parse_port(s: &str) -> Option<Value> {
    let (n, p) = s.split_once('/')?;
    let p = match p {
        "tcp" => Proto::Tcp,
        "udp" => Proto::Udp,
        "icmp" => Proto::Icmp,
        "?" | "unknown" => Proto::Unknown,
        _ => return None,
    };
    Some(Value::Port(n.parse().ok()?, p))
}

fn from_json(j: &J, depth: usize) -> Result<Value, DecodeError> {
    let J::Object(o) = j else {
        return Err(err("a value is not an object"));
    };
    let Some(J::String(t)) = o.get("@data-type") else {
        return Err(err("no @data-type"));
    };
    let d = o
        .get("data")
        .ok_or_else(|| err(format!("{t} without data")))?;
    let bad = || err(format!("bad {t}: {d}"));
    let text = || d.as_str().ok_or_else(bad);
    Ok(match t.as_str() {
        "none" => Value::None,
        "boolean" => Value::Bool(d.as_bool().ok_or_else(bad)?),
        "count" => Value::Count(d.as_u64().ok_or_else(bad)?),
        "integer" => Value::Integer(d.as_i64().ok_or_else(bad)?),
        "real" => Value::Real(d.as_f64().ok_or_else(bad)?),
        "string" => Value::String(text()?.to_string()),
        "enum-value" => Value::Enum(text()?.to_string()),
        "address" => Value::Address(
            text()?
                .parse::<std::net::IpAddr>()
                .map(Addr::from)
                .map_err(|_| bad())?,
        ),
        "subnet" => Value::Subnet(text()?.parse::<ipnet::IpNet>().map_err(|_| bad())?.trunc()),
        "port" => parse_port(text()?).ok_or_else(bad)?,
        "timestamp" => Value::Timestamp(parse_timestamp(text()?).ok_or_else(bad)?),
        "timespan" => Value::Timespan(parse_timespan(text()?).ok_or_else(bad)?),
        "vector" | "set" | "table" => {
            if depth >= MAX_DEPTH {
                return Err(DecodeError::TooDeep);
            }
            let xs = d.as_array().ok_or_else(bad)?;
            match t.as_str() {
                "table" => Value::Table(
                    xs.iter()
                        .map(|kv| {
                            let k = kv.get("key").ok_or_else(bad)?;
                            let v = kv.get("value").ok_or_else(bad)?;
                            Ok((from_json(k, depth + 1)?, from_json(v, depth + 1)?))
                        })
                        .collect::<Result<_, DecodeError>>()?,
                ),
                _ => {
                    let vs = xs
                        .iter()
                        .map(|x| from_json(x, depth + 1))
                        .collect::<Result<_, _>>()?;
                    if t == "set" {
                        Value::Set(vs)
                    } else {
                        Value::Vector(vs)
                    }
                }
            }
        }
        other => return Err(err(format!("unknown @data-type {other:?}"))),
    })
}

/// Decodes one value from JSON text.
///
/// # Errors
/// [`DecodeError::Json`] for text that is not JSON or not a Broker value.
pub fn decode(b: &[u8]) -> Result<Value, DecodeError> {
    let j: J = serde_json::from_slice(b).map_err(|e| err(e.to_string()))?;
    from_json(&j, 0)
}

/// Decodes a Zeek event envelope from JSON text. A WebSocket `data-message` wrapper
/// (`{"type":"data-message","topic":…,"@data-type":"vector","data":[…]}`) is accepted too.
///
/// # Errors
/// [`DecodeError`].
pub fn decode_event(b: &[u8]) -> Result<Event, DecodeError> {
    Event::from_value(decode(b)?)
}

/// A message of Zeek's WebSocket API (`/v1/messages/json`), as a client receives it.
#[derive(Clone, Debug, PartialEq)]
pub enum WsMessage {
    /// The answer to the subscriptions: the endpoint id Zeek gave the client, and Zeek's
    /// version.
    Ack {
        /// `endpoint`.
        endpoint: String,
        /// `version`.
        version: String,
    },
    /// An event published on a topic the client subscribed to.
    Data {
        /// `topic`.
        topic: String,
        /// The event.
        event: Event,
    },
    /// Zeek refused something the client sent (or failed), in Broker's error shape.
    Error {
        /// `code`, e.g. `deserialization_failed`.
        code: String,
        /// `context`: what went wrong.
        context: String,
    },
}

/// Reads one WebSocket API message.
///
/// # Errors
/// [`DecodeError::Json`] for text that is not one of the three messages, or whose event
/// does not decode.
pub fn decode_ws(b: &[u8]) -> Result<WsMessage, DecodeError> {
    let j: J = serde_json::from_slice(b).map_err(|e| err(e.to_string()))?;
    let field = |k: &str| j.get(k).and_then(J::as_str).unwrap_or("").to_string();
    match j.get("type").and_then(J::as_str) {
        Some("ack") => Ok(WsMessage::Ack {
            endpoint: field("endpoint"),
            version: field("version"),
        }),
        Some("error") => Ok(WsMessage::Error {
            code: field("code"),
            context: field("context"),
        }),
        Some("data-message") => {
            let topic = j
                .get("topic")
                .and_then(J::as_str)
                .ok_or_else(|| err("a data-message without a topic"))?
                .to_string();
            let event = Event::from_value(from_json(&j, 0)?)?;
            Ok(WsMessage::Data { topic, event })
        }
        Some(t) => Err(err(format!("unknown WebSocket message type {t:?}"))),
        None => Err(err("a WebSocket message without a type")),
    }
}

/// Appends a WebSocket API `data-message` publishing `e` on `topic`.
pub fn encode_ws_data(topic: &str, e: &Event, out: &mut String) {
    out.push_str("{\"type\":\"data-message\",\"topic\":");
    quoted(topic, out);
    out.push(',');
    let mut body = String::new();
    encode(&e.to_value(), &mut body);
    // `{"@data-type":"vector","data":[…]}` without its opening brace.
    out.push_str(&body[1..]);
}

/// The first message a WebSocket client sends: the topic prefixes it subscribes to.
pub fn ws_subscriptions(topics: &[String]) -> String {
    let mut out = String::from("[");
    for (i, t) in topics.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        quoted(t, &mut out);
    }
    out.push(']');
    out
}
