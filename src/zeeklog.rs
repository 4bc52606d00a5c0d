//! Zeek's ASCII log writer, in its TSV and JSON flavours.
//!
//! Each record type from `crate::cnr::record` gets a [`Schema`] (path, field names, Zeek
//! types) and a way to visit its values; [`LogFile`] renders them:
//!
//! * **TSV**: the eight `#` header lines (`#separator \x09` … `#types`), one line per record
//!   with fields separated by tabs, `%.6f` times and intervals, `-` for unset fields,
//!   `(empty)` for empty strings, enums with their `NetControl::` prefix, and a `#close`
//!   footer. Strings are escaped as Zeek does: non-printable bytes and backslashes become
//!   `\xNN`, and a string that is exactly `-` is written `\x2d` so it cannot be mistaken
//!   for "unset". `#open`/`#close` carry the local wall-clock time, like Zeek's.
//! * **JSON** (`LogAscii::use_json = T`): one object per line, keys in field order, unset
//!   fields left out, times and intervals as seconds in shortest round-trip form, counts as
//!   numbers, addresses and enums as strings.
//!
//! This module is the only one that writes log files.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ipnet::IpNet;

use crate::addr::Addr;
use crate::cnr::{
    CatchReleaseNetRecord, CatchReleaseRecord, DropRecord, NetControlRecord, Output, RuleId,
};
use crate::time::{Interval, Time};

/// Log file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Zeek's tab-separated format with `#` headers.
    Tsv,
    /// Zeek's JSON format: one object per line.
    Json,
}

/// A field value, typed the way Zeek's log writer sees it.
#[derive(Clone, Copy, Debug)]
pub enum Value<'a> {
    /// An unset optional field.
    Unset,
    /// A `time`.
    Time(Time),
    /// An `interval`.
    Interval(Interval),
    /// A `string`.
    Str(&'a str),
    /// A `string` shared by many records (a location, a plugin's name): its text is
    /// formatted once per allocation, see [`TextCache`].
    Shared(&'a Arc<str>),
    /// A rule id, logged as a `string`.
    Rule(RuleId),
    /// An `addr`.
    Addr(Addr),
    /// A `subnet`.
    Subnet(IpNet),
    /// An `enum`, with its module prefix, or another constant text that needs no escaping
    /// (Zeek logs some enums as strings made with `fmt("%s", …)`).
    Enum(&'static str),
    /// A `count`.
    Count(u64),
    /// An `int`.
    Int(i64),
}

impl<'a, T: Into<Value<'a>>> From<Option<T>> for Value<'a> {
    fn from(v: Option<T>) -> Value<'a> {
        v.map_or(Value::Unset, Into::into)
    }
}
impl From<Time> for Value<'_> {
    fn from(v: Time) -> Self {
        Value::Time(v)
    }
}
impl From<Interval> for Value<'_> {
    fn from(v: Interval) -> Self {
        Value::Interval(v)
    }
}
impl<'a> From<&'a str> for Value<'a> {
    fn from(v: &'a str) -> Self {
        Value::Str(v)
    }
}
impl<'a> From<&'a Arc<str>> for Value<'a> {
    fn from(v: &'a Arc<str>) -> Self {
        Value::Shared(v)
    }
}
impl From<RuleId> for Value<'_> {
    fn from(v: RuleId) -> Self {
        Value::Rule(v)
    }
}
impl From<Addr> for Value<'_> {
    fn from(v: Addr) -> Self {
        Value::Addr(v)
    }
}

/// A log stream's name and columns.
#[derive(Debug)]
pub struct Schema {
    /// The stream path: file name without `.log`.
    pub path: &'static str,
    /// Column names, in order.
    pub fields: &'static [&'static str],
    /// Zeek type names, in order.
    pub types: &'static [&'static str],
}

/// A record that can be written to a Zeek log.
pub trait ZeekRecord {
    /// Its stream.
    const SCHEMA: Schema;
    /// Calls `f` with every field value, in schema order.
    fn visit<'a, F: FnMut(Value<'a>)>(&'a self, f: &mut F);
}

impl ZeekRecord for CatchReleaseRecord {
    const SCHEMA: Schema = Schema {
        path: "netcontrol_catch_release",
        fields: &[
            "ts",
            "rule_id",
            "ip",
            "action",
            "block_interval",
            "watch_interval",
            "blocked_until",
            "watched_until",
            "num_blocked",
            "location",
            "message",
            "plugin",
        ],
        types: &[
            "time", "string", "addr", "enum", "interval", "interval", "time", "time", "count",
            "string", "string", "string",
        ],
    };

    fn visit<'a, F: FnMut(Value<'a>)>(&'a self, f: &mut F) {
        f(self.ts.into());
        f(self.rule_id.into());
        f(self.ip.into());
        f(Value::Enum(self.action.as_str()));
        f(self.block_interval.into());
        f(self.watch_interval.into());
        f(self.blocked_until.into());
        f(self.watched_until.into());
        f(Value::Count(self.num_blocked));
        f(self.location.as_ref().into());
        f(self.message.as_deref().into());
        f(self.plugin.as_ref().into());
    }
}

impl ZeekRecord for CatchReleaseNetRecord {
    const SCHEMA: Schema = Schema {
        path: "netcontrol_catch_release_net",
        fields: &[
            "ts",
            "rule_id",
            "subnet",
            "action",
            "block_interval",
            "watch_interval",
            "blocked_until",
            "watched_until",
            "num_blocked",
            "location",
            "message",
            "plugin",
        ],
        types: &[
            "time", "string", "subnet", "enum", "interval", "interval", "time", "time", "count",
            "string", "string", "string",
        ],
    };

    fn visit<'a, F: FnMut(Value<'a>)>(&'a self, f: &mut F) {
        f(self.ts.into());
        f(self.rule_id.into());
        f(Value::Subnet(self.subnet));
        f(Value::Enum(self.action.as_str()));
        f(self.block_interval.into());
        f(self.watch_interval.into());
        f(self.blocked_until.into());
        f(self.watched_until.into());
        f(Value::Count(self.num_blocked));
        f(self.location.as_ref().into());
        f(self.message.as_deref().into());
        f(self.plugin.as_ref().into());
    }
}

impl ZeekRecord for NetControlRecord {
    const SCHEMA: Schema = Schema {
        path: "netcontrol",
        fields: &[
            "ts",
            "rule_id",
            "category",
            "cmd",
            "state",
            "action",
            "target",
            "entity_type",
            "entity",
            "mod",
            "msg",
            "priority",
            "expire",
            "location",
            "plugin",
        ],
        types: &[
            "time", "string", "enum", "string", "enum", "string", "enum", "string", "string",
            "string", "string", "int", "interval", "string", "string",
        ],
    };

    fn visit<'a, F: FnMut(Value<'a>)>(&'a self, f: &mut F) {
        f(self.ts.into());
        f(self.rule_id.into());
        f(self
            .category
            .map_or(Value::Unset, |c| Value::Enum(c.as_str())));
        f(self.cmd.into());
        f(self.state.map_or(Value::Unset, |s| Value::Enum(s.as_str())));
        // `action` and `entity_type` are strings made with fmt("%s", enum) in Zeek.
        f(self.action.map(|a| a.as_str()).into());
        f(self
            .target
            .map_or(Value::Unset, |t| Value::Enum(t.as_str())));
        f(self.entity.map(|_| "NetControl::ADDRESS").into());
        f(self.entity.map_or(Value::Unset, Value::Subnet));
        f(Value::Unset); // mod: only for MODIFY and REDIRECT rules, which catchd never makes.
        f(self.msg.as_deref().into());
        f(self.priority.map_or(Value::Unset, Value::Int));
        f(self.expire.into());
        f(self.location.as_ref().into());
        f(self.plugin.as_ref().into());
    }
}

impl ZeekRecord for DropRecord {
    const SCHEMA: Schema = Schema {
        path: "netcontrol_drop",
        fields: &[
            "ts", "rule_id", "orig_h", "orig_p", "resp_h", "resp_p", "expire", "location",
        ],
        types: &[
            "time", "string", "addr", "port", "addr", "port", "interval", "string",
        ],
    };

    fn visit<'a, F: FnMut(Value<'a>)>(&'a self, f: &mut F) {
        f(self.ts.into());
        f(self.rule_id.into());
        f(self.orig_h.into());
        f(Value::Unset);
        f(Value::Unset);
        f(Value::Unset);
        f(self.expire.into());
        f(self.location.as_ref().into());
    }
}

// Lines are rendered into a byte buffer: every piece pushed is ASCII or a Rust string, so
// the buffer is always valid UTF-8, and nothing goes through `core::fmt`'s padding
// machinery, which dominated log writing when a hundred thousand drops were replayed.

/// Appends what `put` writes into an `N`-byte window at the end of `out`, keeping the
/// length it returns. The digits are stored straight into the buffer: assembling them on
/// the stack and copying them over read back bytes just stored one by one, which stalls
/// the processor on every number.
#[inline(always)]
fn push_fixed<const N: usize>(out: &mut Vec<u8>, put: impl FnOnce(&mut [u8; N]) -> usize) {
    let at = out.len();
    out.resize(at + N, 0);
    let n = match <&mut [u8; N]>::try_from(&mut out[at..]) {
        Ok(window) => put(window),
        Err(_) => 0,
    };
    out.truncate(at + n);
}

/// Appends the first `len` bytes of `text`. All 32 are copied when there is room (and the
/// length then set), which the compiler does with two stores instead of a call to
/// `memcpy` for a length it does not know.
#[inline(always)]
fn push_padded(out: &mut Vec<u8>, text: &[u8; 32], len: usize) {
    let at = out.len();
    let len = len.min(32);
    match out.spare_capacity_mut().first_chunk_mut::<32>() {
        Some(window) => {
            for (w, b) in window.iter_mut().zip(text) {
                w.write(*b);
            }
            // SAFETY: the first `len` (at most 32) bytes past the length were just written.
            unsafe { out.set_len(at + len) };
        }
        None => out.extend_from_slice(&text[..len]),
    }
}

/// "00" to "99", for writing two digits at a time.
const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

#[inline(always)]
fn put_pair(buf: &mut [u8; 32], at: usize, v: u64) {
    let i = (v as usize) * 2;
    buf[at] = PAIRS[i];
    buf[at + 1] = PAIRS[i + 1];
}

/// How many decimal digits `v` has.
#[inline(always)]
fn digit_count(v: u64) -> usize {
    v.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// Writes the decimal digits of `v` at `buf[at..]`, two at a time from the end; returns
/// the index after them.
#[inline]
fn put_digits(buf: &mut [u8; 32], at: usize, v: u64) -> usize {
    let end = at + digit_count(v);
    let mut i = end;
    let mut v = v;
    while v >= 100 {
        i -= 2;
        put_pair(buf, i, v % 100);
        v /= 100;
    }
    if v >= 10 {
        i -= 2;
        put_pair(buf, i, v);
    } else {
        i -= 1;
        buf[i] = b'0' + v as u8;
    }
    end
}

/// Appends an unsigned integer.
#[inline]
fn push_u64(out: &mut Vec<u8>, v: u64) {
    push_fixed(out, |buf| put_digits(buf, 0, v));
}

fn push_i64(out: &mut Vec<u8>, v: i64) {
    push_fixed(out, |buf| {
        let at = usize::from(v < 0);
        buf[0] = b'-';
        put_digits(buf, at, v.unsigned_abs())
    });
}

/// Microseconds as `%.6f` seconds.
#[inline]
fn push_micros(out: &mut Vec<u8>, us: i64) {
    push_fixed(out, |buf| {
        let at = usize::from(us < 0);
        buf[0] = b'-';
        let abs = us.unsigned_abs();
        let n = put_digits(buf, at, abs / 1_000_000);
        buf[n] = b'.';
        let f = abs % 1_000_000;
        put_pair(buf, n + 1, f / 10_000);
        put_pair(buf, n + 3, f / 100 % 100);
        put_pair(buf, n + 5, f % 100);
        n + 7
    });
}

/// An address as Zeek prints it (see [`Addr::text`]).
#[inline]
fn push_addr(out: &mut Vec<u8>, a: &Addr) {
    push_fixed(out, |buf| a.put_text(buf));
}

fn push_subnet(out: &mut Vec<u8>, n: &IpNet) {
    push_addr(out, &Addr::from(n.addr()));
    out.push(b'/');
    push_u64(out, u64::from(n.prefix_len()));
}

fn push_hex_escape(out: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.extend_from_slice(&[
        b'\\',
        b'x',
        HEX[usize::from(b >> 4)],
        HEX[usize::from(b & 15)],
    ]);
}

/// Whether Zeek's ASCII writer escapes byte `b` (outside a lone `-` or an empty string).
#[inline(always)]
fn needs(b: u8) -> bool {
    b == b'\\' || b < 0x20 || b == 0x7f
}

/// Whether any byte of eight needs escaping, all eight at once: a byte below 0x20, or
/// equal to `\` or DEL (the usual "has a zero byte" test on the word, and on the word
/// XORed with each of the two). Exact as a yes or no.
#[inline(always)]
fn word_needs(x: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero = |y: u64| y.wrapping_sub(ONES) & !y;
    let below = x.wrapping_sub(ONES * 0x20) & !x;
    (below | zero(x ^ (ONES * u64::from(b'\\'))) | zero(x ^ (ONES * 0x7f))) & HIGH != 0
}

/// Whether any byte of `bytes` needs escaping, eight bytes at a time: log strings are
/// short, and a byte loop was a third of the time spent formatting a line.
#[inline]
fn any_escaped(bytes: &[u8]) -> bool {
    let word = |b: &[u8]| -> u64 {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[..8]);
        u64::from_le_bytes(w)
    };
    let half = |b: &[u8]| -> u64 {
        let mut w = [0u8; 4];
        w.copy_from_slice(&b[..4]);
        u64::from(u32::from_le_bytes(w))
    };
    let n = bytes.len();
    if n >= 8 {
        let mut chunks = bytes.chunks_exact(8);
        if chunks.by_ref().any(|c| word_needs(word(c))) {
            return true;
        }
        // The last eight bytes, overlapping what was checked.
        !chunks.remainder().is_empty() && word_needs(word(&bytes[n - 8..]))
    } else if n >= 4 {
        // Two overlapping halves cover the four to seven bytes.
        word_needs(half(bytes) | half(&bytes[n - 4..]) << 32)
    } else {
        bytes.iter().any(|&b| needs(b))
    }
}

/// Appends `s` with Zeek's ASCII-writer escaping: `(empty)` for the empty string, `\x2d`
/// for a lone `-`, `\xNN` for backslashes and non-printable ASCII (the separator
/// included); UTF-8 passes through.
fn escape_tsv(s: &str, out: &mut Vec<u8>) {
    if s.is_empty() {
        out.extend_from_slice(b"(empty)");
        return;
    }
    if s == "-" {
        out.extend_from_slice(b"\\x2d");
        return;
    }
    let bytes = s.as_bytes();
    if !any_escaped(bytes) {
        out.extend_from_slice(bytes);
        return;
    }
    for &b in bytes {
        if needs(b) {
            push_hex_escape(out, b);
        } else {
            out.push(b);
        }
    }
}

/// The formatted text of values a log wrote lately: shared strings by allocation, times
/// and intervals by value.
///
/// Every record of a replay carries the same location and plugin name, as clones of one
/// `Arc<str>`. Formatting them anew reads the string, which sits in the cache line of its
/// reference count: the engine's thread writes that count for every record it makes, so
/// on a writer thread each read waited for the line to come over from the other core.
/// Matching by pointer reads only the records. An entry keeps its string alive, so its
/// address cannot be reused for another text while it is cached.
///
/// Times repeat too: the drops of one moment share their `ts`, their intervals and the
/// ends of their blocks and watches, so a line's five times are usually five of the last
/// few written. The last eight are kept, the oldest replaced first.
#[derive(Default)]
pub struct TextCache {
    slots: [(Option<Arc<str>>, Vec<u8>); 4],
    next: usize,
    times: [TimeText; TextCache::TIMES],
    next_time: usize,
}

/// One formatted time or interval: its microseconds, which of the two it is (JSON writes
/// them by different conversions to a double), and up to 32 bytes of text (`len` 0 when
/// unused; no formatted time is empty).
#[derive(Clone, Copy, Default)]
struct TimeText {
    micros: i64,
    interval: bool,
    len: u8,
    text: [u8; 32],
}

impl TextCache {
    const TIMES: usize = 8;

    /// Appends the time (or, with `interval`, the interval) of `micros` as `format` writes
    /// it, from the cache when it holds that value.
    #[inline]
    fn push_time(
        &mut self,
        micros: i64,
        interval: bool,
        out: &mut Vec<u8>,
        format: fn(&mut Vec<u8>, i64),
    ) {
        for t in &self.times {
            if t.micros == micros && t.interval == interval && t.len != 0 {
                push_padded(out, &t.text, usize::from(t.len));
                return;
            }
        }
        let t = &mut self.times[self.next_time];
        self.next_time = (self.next_time + 1) % TextCache::TIMES;
        let start = out.len();
        format(out, micros);
        let text = &out[start..];
        if let (Ok(len), Some(dst)) = (u8::try_from(text.len()), t.text.get_mut(..text.len())) {
            dst.copy_from_slice(text);
            t.len = len;
            t.micros = micros;
            t.interval = interval;
        }
    }

    /// Appends `s` as `format` writes it, from the cache when it holds `s`'s allocation.
    #[inline]
    fn push(&mut self, s: &Arc<str>, out: &mut Vec<u8>, format: fn(&str, &mut Vec<u8>)) {
        for (k, text) in &self.slots {
            if k.as_ref().is_some_and(|k| Arc::ptr_eq(k, s)) {
                out.extend_from_slice(text);
                return;
            }
        }
        let start = out.len();
        format(s, out);
        let (k, text) = &mut self.slots[self.next];
        self.next = (self.next + 1) % 4;
        *k = Some(Arc::clone(s));
        text.clear();
        text.extend_from_slice(&out[start..]);
    }
}

/// Appends one value in TSV form.
fn push_tsv(v: Value<'_>, out: &mut Vec<u8>, cache: &mut TextCache) {
    match v {
        Value::Unset => out.push(b'-'),
        Value::Time(t) => cache.push_time(t.as_micros(), false, out, push_micros),
        Value::Interval(i) => cache.push_time(i.as_micros(), true, out, push_micros),
        Value::Str(s) => escape_tsv(s, out),
        Value::Shared(s) => cache.push(s, out, escape_tsv),
        Value::Rule(r) => push_u64(out, u64::from(r.get())),
        Value::Addr(a) => push_addr(out, &a),
        Value::Subnet(n) => push_subnet(out, &n),
        Value::Enum(e) => out.extend_from_slice(e.as_bytes()),
        Value::Count(c) => push_u64(out, c),
        Value::Int(i) => push_i64(out, i),
    }
}

/// A double as rapidjson writes it: shortest round-trip digits, always with a decimal
/// point or exponent.
fn push_json_double(d: f64, out: &mut Vec<u8>) {
    let _ = write!(out, "{d:?}");
}

/// A time of `micros` microseconds as a JSON double (seconds).
fn push_json_time(out: &mut Vec<u8>, micros: i64) {
    push_json_double(Time::from_micros(micros).as_secs_f64(), out);
}

/// An interval of `micros` microseconds as a JSON double (seconds).
fn push_json_interval(out: &mut Vec<u8>, micros: i64) {
    push_json_double(Interval::from_micros(micros).as_secs_f64(), out);
}

/// A JSON string: quotes, backslashes and control characters escaped.
fn push_json_str(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    if !s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        return;
    }
    for &b in s.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            0..=0x1f => {
                let _ = write!(out, "\\u{b:04x}");
            }
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

fn quoted(out: &mut Vec<u8>, f: impl FnOnce(&mut Vec<u8>)) {
    out.push(b'"');
    f(out);
    out.push(b'"');
}

/// Appends one `"key":value` pair, or nothing for an unset field. Returns whether it wrote.
fn push_json(
    key: &str,
    v: Value<'_>,
    first: bool,
    out: &mut Vec<u8>,
    cache: &mut TextCache,
) -> bool {
    if matches!(v, Value::Unset) {
        return false;
    }
    if !first {
        out.push(b',');
    }
    quoted(out, |o| o.extend_from_slice(key.as_bytes()));
    out.push(b':');
    match v {
        Value::Unset => {}
        Value::Time(t) => cache.push_time(t.as_micros(), false, out, push_json_time),
        Value::Interval(i) => cache.push_time(i.as_micros(), true, out, push_json_interval),
        Value::Str(s) => push_json_str(s, out),
        Value::Shared(s) => cache.push(s, out, push_json_str),
        Value::Rule(r) => quoted(out, |o| push_u64(o, u64::from(r.get()))),
        Value::Addr(a) => quoted(out, |o| push_addr(o, &a)),
        Value::Subnet(n) => quoted(out, |o| push_subnet(o, &n)),
        Value::Enum(e) => quoted(out, |o| o.extend_from_slice(e.as_bytes())),
        Value::Count(c) => push_u64(out, c),
        Value::Int(i) => push_i64(out, i),
    }
    true
}

/// Appends one record as a TSV line (no newline).
pub fn push_tsv_line<R: ZeekRecord>(rec: &R, out: &mut Vec<u8>) {
    push_tsv_line_with(rec, out, &mut TextCache::default());
}

/// [`push_tsv_line`] with a log's [`TextCache`].
pub fn push_tsv_line_with<R: ZeekRecord>(rec: &R, out: &mut Vec<u8>, cache: &mut TextCache) {
    let mut first = true;
    rec.visit(&mut |v| {
        if !first {
            out.push(b'\t');
        }
        first = false;
        push_tsv(v, out, cache);
    });
}

/// Appends one record as a JSON object (no newline).
pub fn push_json_line<R: ZeekRecord>(rec: &R, out: &mut Vec<u8>) {
    push_json_line_with(rec, out, &mut TextCache::default());
}

/// [`push_json_line`] with a log's [`TextCache`].
pub fn push_json_line_with<R: ZeekRecord>(rec: &R, out: &mut Vec<u8>, cache: &mut TextCache) {
    out.push(b'{');
    let mut i = 0;
    let mut first = true;
    rec.visit(&mut |v| {
        if push_json(R::SCHEMA.fields[i], v, first, out, cache) {
            first = false;
        }
        i += 1;
    });
    out.push(b'}');
}

/// Appends one record as a line of a log in `format`, newline included.
#[inline]
fn push_line<R: ZeekRecord>(format: Format, rec: &R, out: &mut Vec<u8>, cache: &mut TextCache) {
    match format {
        Format::Tsv => push_tsv_line_with(rec, out, cache),
        Format::Json => push_json_line_with(rec, out, cache),
    }
    out.push(b'\n');
}

fn into_string(v: Vec<u8>) -> String {
    // Only ASCII and whole Rust strings are ever pushed.
    String::from_utf8(v).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// One record as a TSV line (no newline).
pub fn tsv_line<R: ZeekRecord>(rec: &R) -> String {
    let mut out = Vec::with_capacity(160);
    push_tsv_line(rec, &mut out);
    into_string(out)
}

/// The TSV header for a stream, opened at `open` (already formatted).
pub fn tsv_header(schema: &Schema, open: &str) -> String {
    format!(
        "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\t{}\n#open\t{open}\n#fields\t{}\n#types\t{}\n",
        schema.path,
        schema.fields.join("\t"),
        schema.types.join("\t"),
    )
}

/// The local wall-clock time as Zeek stamps `#open` and `#close`.
pub fn header_timestamp() -> String {
    chrono::Local::now().format("%Y-%m-%d-%H-%M-%S").to_string()
}

/// Why a log could not be written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The log directory could not be created.
    #[error("cannot create log directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A log file could not be created or written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The log writer's thread could not be started.
    #[error("cannot start the log writer thread: {0}")]
    Spawn(io::Error),
    /// The log writer's thread panicked; lines it had not written are lost.
    #[error("the log writer thread panicked")]
    WriterPanicked,
}

/// One open log file.
pub struct LogFile {
    dir: PathBuf,
    path: PathBuf,
    schema: &'static Schema,
    format: Format,
    file: File,
    /// Lines not yet handed to the file: formatted straight into this buffer, which is
    /// written out whole when it passes [`LogFile::BUF`] (one copy, not two).
    buf: Vec<u8>,
    /// The formatted text of the shared strings and times lately written.
    cache: TextCache,
    /// When the file was opened (its `#open`), for the rotated file's name.
    opened: chrono::DateTime<chrono::Local>,
    /// Bytes in the file.
    size: u64,
    /// The file still holds an earlier run's bytes, to be cut before anything is written
    /// (see [`LogSet::create_deferred`]).
    stale: bool,
}

/// Zeek's header and rotation time format.
const STAMP: &str = "%Y-%m-%d-%H-%M-%S";

impl LogFile {
    /// Creates (truncating) `<dir>/<path>.log` and writes the TSV header.
    ///
    /// # Errors
    /// [`Error::Write`] if the file cannot be created.
    pub fn create(dir: &Path, schema: &'static Schema, format: Format) -> Result<LogFile, Error> {
        let path = dir.join(format!("{}.log", schema.path));
        let file = File::create(&path).map_err(|source| Error::Write {
            path: path.clone(),
            source,
        })?;
        LogFile::start(dir, path, file, schema, format)
    }

    /// [`create`](LogFile::create), but an existing file is only opened: its old bytes are
    /// cut by [`cut_stale`](LogFile::cut_stale) or the first flush, whichever comes first.
    fn create_deferred(
        dir: &Path,
        schema: &'static Schema,
        format: Format,
    ) -> Result<LogFile, Error> {
        let path = dir.join(format!("{}.log", schema.path));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|source| Error::Write {
                path: path.clone(),
                source,
            })?;
        // A new (or empty) file has nothing to cut; truncating it anyway would also make
        // ext4 write it back on close, as it does for a file replaced by truncation.
        let stale = file.metadata().map_or(true, |m| m.len() > 0);
        let mut lf = LogFile::start(dir, path, file, schema, format)?;
        lf.stale = stale;
        Ok(lf)
    }

    /// Cuts what an earlier run left in the file, if that is still to do.
    fn cut_stale(&mut self) -> Result<(), Error> {
        if self.stale {
            self.file.set_len(0).map_err(|source| Error::Write {
                path: self.path.clone(),
                source,
            })?;
            self.stale = false;
        }
        Ok(())
    }

    fn start(
        dir: &Path,
        path: PathBuf,
        file: File,
        schema: &'static Schema,
        format: Format,
    ) -> Result<LogFile, Error> {
        let opened = chrono::Local::now();
        let mut lf = LogFile::wrap(dir, path, file, schema, format, opened, 0);
        if format == Format::Tsv {
            let header = tsv_header(schema, &opened.format(STAMP).to_string());
            lf.put(header.as_bytes())?;
        }
        Ok(lf)
    }

    /// Opens `<dir>/<path>.log` to append to it, as a daemon does across restarts. A TSV
    /// file that was closed (`#close`) loses that footer and continues; a line cut off by a
    /// crash is dropped; a file with another header (or format) is rotated away first. A
    /// missing or empty file is created with a header.
    ///
    /// # Errors
    /// [`Error::Write`] if the file cannot be read, renamed or written.
    pub fn open_append(
        dir: &Path,
        schema: &'static Schema,
        format: Format,
    ) -> Result<LogFile, Error> {
        let path = dir.join(format!("{}.log", schema.path));
        let werr = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Write { path, source }
        };
        let existing = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(werr(&path)(e)),
        };
        if existing.is_empty() {
            return LogFile::create(dir, schema, format);
        }
        let text = String::from_utf8_lossy(&existing);
        let is_tsv = text.starts_with("#separator");
        let same = match format {
            Format::Tsv => {
                is_tsv
                    && text
                        .lines()
                        .find(|l| l.starts_with("#fields\t"))
                        .is_some_and(|l| l == format!("#fields\t{}", schema.fields.join("\t")))
            }
            Format::Json => !is_tsv,
        };
        let opened_text = text
            .lines()
            .find_map(|l| l.strip_prefix("#open\t"))
            .map(str::to_string);
        if !same {
            let old = LogFile::archive_name(
                dir,
                schema,
                &opened_text.unwrap_or_else(|| chrono::Local::now().format(STAMP).to_string()),
            );
            std::fs::rename(&path, &old).map_err(werr(&path))?;
            return LogFile::create(dir, schema, format);
        }
        // Keep whole lines only, and reopen a closed log by dropping its footer.
        let mut keep = existing.len();
        if existing.last() != Some(&b'\n') {
            keep = existing
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
        }
        let body = &existing[..keep];
        let last_start = body[..body.len().saturating_sub(1)]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        if body[last_start..].starts_with(b"#close") {
            keep = last_start;
        }
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(werr(&path))?;
        file.set_len(keep as u64).map_err(werr(&path))?;
        drop(file);
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(werr(&path))?;
        let opened = opened_text
            .and_then(|t| chrono::NaiveDateTime::parse_from_str(&t, STAMP).ok())
            .and_then(|n| n.and_local_timezone(chrono::Local).earliest())
            .unwrap_or_else(chrono::Local::now);
        Ok(LogFile::wrap(
            dir,
            path,
            file,
            schema,
            format,
            opened,
            keep as u64,
        ))
    }

    fn wrap(
        dir: &Path,
        path: PathBuf,
        file: File,
        schema: &'static Schema,
        format: Format,
        opened: chrono::DateTime<chrono::Local>,
        size: u64,
    ) -> LogFile {
        LogFile {
            dir: dir.to_path_buf(),
            path,
            schema,
            format,
            file,
            buf: Vec::new(),
            cache: TextCache::default(),
            opened,
            size,
            stale: false,
        }
    }

    /// `<dir>/<path>.<stamp>.log`, with `-N` added while that name is taken.
    fn archive_name(dir: &Path, schema: &Schema, stamp: &str) -> PathBuf {
        let mut p = dir.join(format!("{}.{stamp}.log", schema.path));
        let mut n = 1;
        while p.exists() {
            p = dir.join(format!("{}.{stamp}-{n}.log", schema.path));
            n += 1;
        }
        p
    }

    /// How much is buffered before it is written out.
    const BUF: usize = 256 * 1024;

    fn put(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.buf.extend_from_slice(bytes);
        self.size += bytes.len() as u64;
        self.spill()
    }

    /// Writes the buffer out once it is full enough.
    #[inline]
    fn spill(&mut self) -> Result<(), Error> {
        if self.buf.len() >= LogFile::BUF {
            self.flush()?;
        }
        Ok(())
    }

    /// Appends one record.
    ///
    /// # Errors
    /// [`Error::Write`] on an I/O error.
    pub fn write<R: ZeekRecord>(&mut self, rec: &R) -> Result<(), Error> {
        debug_assert_eq!(R::SCHEMA.path, self.schema.path);
        if self.buf.capacity() == 0 {
            self.buf.reserve(LogFile::BUF + 4096);
        }
        let before = self.buf.len();
        push_line(self.format, rec, &mut self.buf, &mut self.cache);
        self.size += (self.buf.len() - before) as u64;
        self.spill()
    }

    /// Hands what is buffered to the operating system.
    ///
    /// # Errors
    /// [`Error::Write`] on an I/O error.
    pub fn flush(&mut self) -> Result<(), Error> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.cut_stale()?;
        // Written bytes leave the buffer; on an error the rest stays, to be written by the
        // next flush (as a BufWriter keeps it).
        let mut done = 0;
        let r = loop {
            match self.file.write(&self.buf[done..]) {
                Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    done += n;
                    if done == self.buf.len() {
                        break Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        self.buf.drain(..done);
        r.map_err(|source| Error::Write {
            path: self.path.clone(),
            source,
        })
    }

    /// Bytes in the file.
    pub fn size(&self) -> u64 {
        self.size
    }

    fn footer(&mut self) -> Result<(), Error> {
        if self.format == Format::Tsv {
            let footer = format!("#close\t{}\n", header_timestamp());
            self.put(footer.as_bytes())?;
        }
        self.flush()
    }

    /// Closes the file (`#close`) under the name `<path>.<open time>.log`, as Zeek's
    /// rotation does, and starts a new `<path>.log` with a fresh header. Returns the name
    /// the old file got.
    ///
    /// # Errors
    /// [`Error::Write`] on an I/O error.
    pub fn rotate(&mut self) -> Result<PathBuf, Error> {
        self.footer()?;
        let old = LogFile::archive_name(
            &self.dir,
            self.schema,
            &self.opened.format(STAMP).to_string(),
        );
        std::fs::rename(&self.path, &old).map_err(|source| Error::Write {
            path: self.path.clone(),
            source,
        })?;
        let file = File::create(&self.path).map_err(|source| Error::Write {
            path: self.path.clone(),
            source,
        })?;
        *self = LogFile::start(
            &self.dir.clone(),
            self.path.clone(),
            file,
            self.schema,
            self.format,
        )?;
        Ok(old)
    }

    /// Writes the `#close` footer (TSV) and flushes.
    ///
    /// # Errors
    /// [`Error::Write`] on an I/O error.
    pub fn close(mut self) -> Result<(), Error> {
        self.footer()
    }
}

static CR_SCHEMA: Schema = CatchReleaseRecord::SCHEMA;
static NC_SCHEMA: Schema = NetControlRecord::SCHEMA;
static DROP_SCHEMA: Schema = DropRecord::SCHEMA;

/// The log line an engine output is, if it is one.
enum LogLine<'a> {
    CatchRelease(&'a CatchReleaseRecord),
    NetControl(&'a NetControlRecord),
    Drop(&'a DropRecord),
    CatchReleaseNet(&'a CatchReleaseNetRecord),
}

impl LogLine<'_> {
    #[inline]
    fn of(o: &Output) -> Option<LogLine<'_>> {
        match o {
            Output::CatchRelease(r) => Some(LogLine::CatchRelease(r)),
            Output::NetControl(r) => Some(LogLine::NetControl(r)),
            Output::Drop(r) => Some(LogLine::Drop(r)),
            Output::CatchReleaseNet(r) => Some(LogLine::CatchReleaseNet(r)),
            Output::Forgotten { .. }
            | Output::Error(_)
            | Output::BlockNew { .. }
            | Output::BlockDelete { .. }
            | Output::NetBlockNew { .. }
            | Output::NetBlockDelete { .. }
            | Output::NetForgotten { .. } => None,
        }
    }
}

/// The three NetControl logs of a run, and catchd's fourth for catch-and-release of
/// networks, which is made (as Zeek makes a log) with its first line.
pub struct LogSet {
    catch_release: LogFile,
    netcontrol: LogFile,
    drop: LogFile,
    net: Option<LogFile>,
    dir: PathBuf,
    format: Format,
    /// How its files are opened, the network log's too when its first line comes.
    opening: Opening,
}

/// How a [`LogSet`] opens its files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Opening {
    /// Made anew (truncated): [`LogFile::create`].
    Create,
    /// Made anew, an earlier run's bytes cut later: [`LogFile::create_deferred`].
    CreateDeferred,
    /// Appended to, as a daemon does across restarts: [`LogFile::open_append`].
    Append,
}

static NET_SCHEMA: Schema = CatchReleaseNetRecord::SCHEMA;

impl LogSet {
    /// Creates the directory if needed and the three log files in it.
    ///
    /// # Errors
    /// [`Error`] if the directory or a file cannot be created.
    pub fn create(dir: &Path, format: Format) -> Result<LogSet, Error> {
        LogSet::open_with(dir, format, Opening::Create)
    }

    /// [`create`](LogSet::create) for a [`LogThread`]: the files are opened (so a log
    /// that cannot be written is an error here) but what an earlier run left in them is
    /// cut by the writer's thread, since freeing a large file's cached pages takes a
    /// while.
    ///
    /// # Errors
    /// [`Error`] if the directory or a file cannot be created or opened.
    pub fn create_deferred(dir: &Path, format: Format) -> Result<LogSet, Error> {
        LogSet::open_with(dir, format, Opening::CreateDeferred)
    }

    /// Cuts what an earlier run left in files opened by
    /// [`create_deferred`](LogSet::create_deferred).
    fn cut_stale(&mut self) -> Result<(), Error> {
        self.files().try_for_each(LogFile::cut_stale)
    }

    fn open_file(
        dir: &Path,
        schema: &'static Schema,
        format: Format,
        opening: Opening,
    ) -> Result<LogFile, Error> {
        match opening {
            Opening::Create => LogFile::create(dir, schema, format),
            Opening::CreateDeferred => LogFile::create_deferred(dir, schema, format),
            Opening::Append => LogFile::open_append(dir, schema, format),
        }
    }

    fn open_with(dir: &Path, format: Format, opening: Opening) -> Result<LogSet, Error> {
        let open = |schema| LogSet::open_file(dir, schema, format, opening);
        std::fs::create_dir_all(dir).map_err(|source| Error::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        // A network log kept from an earlier run is appended to from the start.
        let net_path = dir.join(format!("{}.log", NET_SCHEMA.path));
        let net = if opening == Opening::Append && net_path.exists() {
            Some(open(&NET_SCHEMA)?)
        } else {
            None
        };
        Ok(LogSet {
            catch_release: open(&CR_SCHEMA)?,
            netcontrol: open(&NC_SCHEMA)?,
            drop: open(&DROP_SCHEMA)?,
            net,
            dir: dir.to_path_buf(),
            format,
            opening,
        })
    }

    /// Writes an engine output to its log; outputs that are not log lines are ignored.
    ///
    /// # Errors
    /// [`Error::Write`] on an I/O error.
    pub fn write(&mut self, o: &Output) -> Result<(), Error> {
        match LogLine::of(o) {
            Some(LogLine::CatchRelease(r)) => self.catch_release.write(r),
            Some(LogLine::NetControl(r)) => self.netcontrol.write(r),
            Some(LogLine::Drop(r)) => self.drop.write(r),
            Some(LogLine::CatchReleaseNet(r)) => self.net_log()?.write(r),
            None => Ok(()),
        }
    }

    /// Opens the three logs to append to them (see [`LogFile::open_append`]), and the
    /// network log if there is one.
    ///
    /// # Errors
    /// [`Error`] if the directory or a file cannot be created or opened.
    pub fn open_append(dir: &Path, format: Format) -> Result<LogSet, Error> {
        LogSet::open_with(dir, format, Opening::Append)
    }

    /// Appends lines formatted elsewhere (see [`Lines`]), each buffer to its log.
    ///
    /// # Errors
    /// [`Error`] on an I/O error, or if the network log cannot be created.
    pub fn write_lines(&mut self, lines: &Lines) -> Result<(), Error> {
        for (f, bytes) in [
            (&mut self.catch_release, &lines.catch_release),
            (&mut self.netcontrol, &lines.netcontrol),
            (&mut self.drop, &lines.drop),
        ] {
            if !bytes.is_empty() {
                f.put(bytes)?;
            }
        }
        if !lines.net.is_empty() {
            self.net_log()?.put(&lines.net)?;
        }
        Ok(())
    }

    /// The network log, made with its first line.
    fn net_log(&mut self) -> Result<&mut LogFile, Error> {
        let net = match self.net.take() {
            Some(f) => f,
            None => LogSet::open_file(&self.dir, &NET_SCHEMA, self.format, self.opening)?,
        };
        Ok(self.net.insert(net))
    }

    fn files(&mut self) -> impl Iterator<Item = &mut LogFile> {
        [
            &mut self.catch_release,
            &mut self.netcontrol,
            &mut self.drop,
        ]
        .into_iter()
        .chain(self.net.as_mut())
    }

    /// Hands what is buffered to the operating system.
    ///
    /// # Errors
    /// [`Error::Write`] on an I/O error.
    pub fn flush(&mut self) -> Result<(), Error> {
        self.files().try_for_each(LogFile::flush)
    }

    /// The largest of the files, in bytes.
    pub fn largest(&self) -> u64 {
        self.catch_release
            .size()
            .max(self.netcontrol.size())
            .max(self.drop.size())
            .max(self.net.as_ref().map_or(0, LogFile::size))
    }

    /// Rotates every log (see [`LogFile::rotate`]).
    ///
    /// # Errors
    /// [`Error::Write`] on an I/O error.
    pub fn rotate(&mut self) -> Result<(), Error> {
        self.files().try_for_each(|f| f.rotate().map(|_| ()))
    }

    /// Writes the footers and flushes, in place (for an owner that cannot give the set
    /// up); nothing more should be written after it.
    ///
    /// # Errors
    /// [`Error::Write`] on an I/O error.
    pub fn finish(&mut self) -> Result<(), Error> {
        self.files().try_for_each(LogFile::footer)
    }

    /// Closes every log.
    ///
    /// # Errors
    /// [`Error::Write`] on an I/O error.
    pub fn close(mut self) -> Result<(), Error> {
        self.finish()
    }
}

/// Log lines formatted away from a [`LogSet`], one buffer per log, for
/// [`LogSet::write_lines`]: what a [`LogThread`]'s producer makes of a batch when the
/// writer is behind.
#[derive(Default)]
pub struct Lines {
    catch_release: Vec<u8>,
    netcontrol: Vec<u8>,
    drop: Vec<u8>,
    net: Vec<u8>,
}

impl Lines {
    /// Bytes held, all logs together.
    pub fn bytes(&self) -> usize {
        self.catch_release.len() + self.netcontrol.len() + self.drop.len() + self.net.len()
    }

    /// Empties the buffers, keeping their memory.
    pub fn clear(&mut self) {
        self.catch_release.clear();
        self.netcontrol.clear();
        self.drop.clear();
        self.net.clear();
    }
}

/// Formats engine outputs into [`Lines`] exactly as a [`LogSet`] of the same format
/// writes them (the caches only spare work; they never change a byte).
pub struct Formatter {
    format: Format,
    caches: [TextCache; 4],
}

impl Formatter {
    /// A formatter for logs in `format`.
    pub fn new(format: Format) -> Formatter {
        Formatter {
            format,
            caches: Default::default(),
        }
    }

    /// Appends the log lines of `outputs` to `lines`; outputs that are not log lines are
    /// skipped, as [`LogSet::write`] skips them.
    pub fn format<'a>(&mut self, outputs: impl IntoIterator<Item = &'a Output>, lines: &mut Lines) {
        let [cr, nc, drop, net] = &mut self.caches;
        let f = self.format;
        for o in outputs {
            match LogLine::of(o) {
                Some(LogLine::CatchRelease(r)) => push_line(f, r, &mut lines.catch_release, cr),
                Some(LogLine::NetControl(r)) => push_line(f, r, &mut lines.netcontrol, nc),
                Some(LogLine::Drop(r)) => push_line(f, r, &mut lines.drop, drop),
                Some(LogLine::CatchReleaseNet(r)) => push_line(f, r, &mut lines.net, net),
                None => {}
            }
        }
    }
}

/// What the producer hands the writer: outputs to format and write, or lines it
/// formatted itself.
enum Batch {
    Outputs(VecDeque<Output>),
    Lines(Box<Lines>),
}

/// A [`LogSet`] on a thread of its own, as Zeek runs each log writer in a thread: the
/// producer hands over whole batches of engine outputs, and formatting and writing the
/// lines overlap with its work on another core.
///
/// When the writer is behind (its queue is full), the producer formats the batch itself
/// instead of waiting idle, and hands over the lines: the two threads then share the
/// formatting, and the writer, which also does the `write` calls, stops being the one
/// the other waits for. Batches are written in the order they were sent either way.
///
/// A batch comes back once written, still holding its outputs, so they are dropped (and
/// their strings freed) on the thread that made them, and its memory is used again. At
/// most [`LogThread::IN_FLIGHT`] batches wait to be written: a producer faster than the
/// disk waits instead of queueing without bound. After a write error the thread stops
/// and the next [`send`](LogThread::send) or [`close`](LogThread::close) returns it;
/// lines of batches still queued then are not written.
pub struct LogThread {
    to: Option<std::sync::mpsc::SyncSender<Batch>>,
    back: std::sync::mpsc::Receiver<Batch>,
    thread: Option<std::thread::JoinHandle<Result<LogSet, Error>>>,
    formatter: Formatter,
    /// Emptied queues and line buffers come back here to be used again.
    spare_outputs: Vec<VecDeque<Output>>,
    spare_lines: Vec<Lines>,
    /// Batches the producer formatted itself (see [`LogThread::formatted_here`]).
    formatted_here: u64,
}

impl LogThread {
    /// Batches queued for the writer, beyond the one it is writing.
    pub const IN_FLIGHT: usize = 4;

    /// Starts the thread, which owns `logs` until [`close`](LogThread::close).
    ///
    /// # Errors
    /// [`Error::Spawn`] if the thread cannot be started.
    pub fn spawn(logs: LogSet) -> Result<LogThread, Error> {
        LogThread::spawn_gated(logs, None)
    }

    /// [`spawn`](LogThread::spawn), with a writer that starts only once `gate` yields
    /// (or is dropped): lets a test fill the queue.
    fn spawn_gated(
        mut logs: LogSet,
        gate: Option<std::sync::mpsc::Receiver<()>>,
    ) -> Result<LogThread, Error> {
        let (to, from) = std::sync::mpsc::sync_channel::<Batch>(LogThread::IN_FLIGHT);
        let (give_back, back) = std::sync::mpsc::channel();
        let format = logs.format;
        let thread = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || {
                if let Some(gate) = gate {
                    let _ = gate.recv();
                }
                logs.cut_stale()?;
                for batch in from {
                    match &batch {
                        Batch::Outputs(outputs) => {
                            outputs.iter().try_for_each(|o| logs.write(o))?;
                        }
                        Batch::Lines(lines) => logs.write_lines(lines)?,
                    }
                    // The producer may be gone already (it stopped on an error of its
                    // own); the batch is then dropped here.
                    let _ = give_back.send(batch);
                }
                Ok(logs)
            })
            .map_err(Error::Spawn)?;
        Ok(LogThread {
            to: Some(to),
            back,
            thread: Some(thread),
            formatter: Formatter::new(format),
            spare_outputs: Vec::new(),
            spare_lines: Vec::new(),
            formatted_here: 0,
        })
    }

    /// Queues `batch` to be written and returns an empty queue to fill next. When
    /// [`IN_FLIGHT`](LogThread::IN_FLIGHT) batches are queued already, formats `batch`
    /// here and queues the lines, waiting only if the writer is still that far behind
    /// after that.
    ///
    /// # Errors
    /// The error that stopped the writer, if it stopped.
    pub fn send(&mut self, batch: VecDeque<Output>) -> Result<VecDeque<Output>, Error> {
        let next = match self.try_queue(batch)? {
            None => None,
            Some(batch) => Some(self.format_and_queue(batch)?),
        };
        Ok(self.take_back(next))
    }

    /// Queues `batch` unless the queue is full, when it is given back.
    fn try_queue(&mut self, batch: VecDeque<Output>) -> Result<Option<VecDeque<Output>>, Error> {
        use std::sync::mpsc::TrySendError;
        match self
            .to
            .as_ref()
            .map(|to| to.try_send(Batch::Outputs(batch)))
        {
            Some(Ok(())) => Ok(None),
            Some(Err(TrySendError::Full(Batch::Outputs(batch)))) => Ok(Some(batch)),
            Some(Err(_)) | None => Err(self.join().err().unwrap_or(Error::WriterPanicked)),
        }
    }

    /// Formats `batch` here, queues its lines (waiting for room), and returns it emptied.
    fn format_and_queue(&mut self, mut batch: VecDeque<Output>) -> Result<VecDeque<Output>, Error> {
        let mut lines = self.spare_lines.pop().unwrap_or_default();
        self.formatter.format(&batch, &mut lines);
        self.formatted_here += 1;
        let sent = self
            .to
            .as_ref()
            .map(|to| to.send(Batch::Lines(Box::new(lines))));
        if !matches!(sent, Some(Ok(()))) {
            return Err(self.join().err().unwrap_or(Error::WriterPanicked));
        }
        batch.clear();
        Ok(batch)
    }

    /// Takes back what the writer is done with, emptied, to use again, and returns a
    /// queue to fill next: `next` if it is one already.
    fn take_back(&mut self, next: Option<VecDeque<Output>>) -> VecDeque<Output> {
        while let Ok(done) = self.back.try_recv() {
            match done {
                Batch::Outputs(mut outputs) => {
                    outputs.clear();
                    self.spare_outputs.push(outputs);
                }
                Batch::Lines(mut lines) => {
                    lines.clear();
                    self.spare_lines.push(*lines);
                }
            }
        }
        next.or_else(|| self.spare_outputs.pop())
            .unwrap_or_default()
    }

    /// How many batches were formatted by the producer because the writer was behind.
    pub fn formatted_here(&self) -> u64 {
        self.formatted_here
    }

    fn join(&mut self) -> Result<LogSet, Error> {
        self.to = None;
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) | None => Err(Error::WriterPanicked),
        }
    }

    /// Waits for every queued line to be written, then closes the logs.
    ///
    /// # Errors
    /// The error that stopped the writer, or one closing the logs.
    pub fn close(mut self) -> Result<(), Error> {
        self.join()?.close()
    }
}

/// Dropped without [`close`](LogThread::close) (its owner stopped on an error), the writer
/// still writes out what was queued, without the `#close` footer of a clean end, and ends
/// before the drop returns: no thread outlives it.
impl Drop for LogThread {
    fn drop(&mut self) {
        if self.thread.is_some()
            && let Ok(mut logs) = self.join()
        {
            let _ = logs.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut v = Vec::new();
        f(&mut v);
        String::from_utf8(v).unwrap()
    }

    /// A padded copy appends exactly the bytes asked for, with room for all 32 and without
    /// (when it falls back to a plain copy), after what was there.
    #[test]
    fn a_padded_copy_appends_only_the_length() {
        let mut text = [b'x'; 32];
        text[..5].copy_from_slice(b"12.50");
        for room in [0, 31, 32, 100] {
            let mut out = Vec::with_capacity(3 + room);
            out.extend_from_slice(b"ab\t");
            push_padded(&mut out, &text, 5);
            assert_eq!(out, b"ab\t12.50", "room {room}");
            push_padded(&mut out, &text, 0);
            push_padded(&mut out, &text, 32);
            assert_eq!(out.len(), 8 + 32, "room {room}");
            assert_eq!(&out[8..13], b"12.50");
        }
    }

    #[test]
    fn escapes_like_zeek() {
        assert_eq!(text(|o| escape_tsv("a\tb\\c", o)), "a\\x09b\\x5cc");
        assert_eq!(text(|o| escape_tsv("-", o)), "\\x2d");
        assert_eq!(text(|o| escape_tsv("", o)), "(empty)");
        assert_eq!(
            text(|o| escape_tsv("Re-drop by catch-and-release: ", o)),
            "Re-drop by catch-and-release: "
        );
        assert_eq!(text(|o| escape_tsv("blåbær,x", o)), "blåbær,x");
    }

    proptest::proptest! {
        /// The word-at-a-time check agrees with the byte-by-byte rule on any bytes.
        #[test]
        fn escape_check_matches_the_byte_rule(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
            pick in proptest::collection::vec(
                proptest::sample::select(vec![b'a', b'\\', 0x1f, 0x20, 0x7f, 0x7e, 0x80, 0xff, 0]),
                0..20,
            ),
        ) {
            for b in [&bytes, &pick] {
                proptest::prop_assert_eq!(any_escaped(b), b.iter().any(|&x| needs(x)), "{:?}", b);
            }
        }
    }

    /// Checks that `r` formats with the logs' caches `tsv` and `json` as it does with fresh
    /// ones, in TSV and in JSON.
    fn formats_as_if_new(
        r: &DropRecord,
        tsv: &mut TextCache,
        json: &mut TextCache,
    ) -> Result<(), proptest::test_runner::TestCaseError> {
        let (mut got, mut want) = (Vec::new(), Vec::new());
        push_tsv_line_with(r, &mut got, tsv);
        push_tsv_line(r, &mut want);
        proptest::prop_assert_eq!(&got, &want);
        let (mut got, mut want) = (Vec::new(), Vec::new());
        push_json_line_with(r, &mut got, json);
        push_json_line(r, &mut want);
        proptest::prop_assert_eq!(&got, &want);
        Ok(())
    }

    proptest::proptest! {
        /// A log's cache of shared strings writes what formatting each string anew
        /// writes, in TSV and JSON, whether a record shares its string with earlier ones,
        /// carries an equal copy, or brings one more than the cache holds.
        #[test]
        fn shared_strings_format_as_if_new(
            picks in proptest::collection::vec((0usize..7, proptest::prelude::any::<bool>()), 1..60),
        ) {
            let texts = ["bench", "a\tb", "-", "", "x\\y", "blåbær", "scan=wide"];
            let kept: Vec<Arc<str>> = texts.iter().map(|t| Arc::from(*t)).collect();
            let (mut tsv, mut json) = (TextCache::default(), TextCache::default());
            for (n, (i, fresh)) in picks.into_iter().enumerate() {
                let mut r = rec(n as i64);
                // Either the one shared allocation, or a new one with the same text.
                r.location = Some(if fresh { Arc::from(texts[i]) } else { Arc::clone(&kept[i]) });
                formats_as_if_new(&r, &mut tsv, &mut json)?;
            }
        }
    }

    proptest::proptest! {
        /// A log's cache of times writes what formatting each time anew writes, in TSV
        /// and JSON, for times and intervals drawn from a pool small enough to repeat and
        /// to collide in the cache, the same microseconds as a time and as an interval
        /// among them (JSON converts those two differently).
        #[test]
        fn times_format_as_if_new(
            picks in proptest::collection::vec((0usize..10, 0usize..10), 1..80),
            extra in proptest::prelude::any::<i64>(),
        ) {
            let pool = [
                0i64,
                -1,
                1,
                600_000_000,
                3_600_000_000,
                1_254_722_767_492_060,
                1_700_000_000_123_456,
                1_700_000_600_123_456,
                extra / 2,
                -(1 << 60),
            ];
            let (mut tsv, mut json) = (TextCache::default(), TextCache::default());
            for (t, e) in picks {
                let mut r = rec(0);
                r.ts = Time::from_micros(pool[t]);
                r.expire = Interval::from_micros(pool[e]);
                formats_as_if_new(&r, &mut tsv, &mut json)?;
            }
        }
    }

    #[test]
    fn a_time_and_an_interval_of_the_same_microseconds_differ_in_json() {
        // Why the time cache tells the two apart: a time is whole seconds plus a fraction,
        // an interval one division, and the doubles can differ in the last place.
        let us = -1;
        let mut cache = TextCache::default();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        cache.push_time(us, false, &mut a, push_json_time);
        cache.push_time(us, true, &mut b, push_json_interval);
        assert_eq!(a, text(|o| push_json_time(o, us)).into_bytes());
        assert_eq!(b, text(|o| push_json_interval(o, us)).into_bytes());
        assert_ne!(a, b);
    }

    #[test]
    fn json_strings_are_escaped() {
        let s = "q\"b\\n\nt\tc\u{1}é";
        let got = text(|o| push_json_str(s, o));
        assert_eq!(got, serde_json::Value::from(s).to_string());
    }

    #[test]
    fn fast_formatting_matches_core_fmt() {
        for us in [
            0i64,
            1,
            999_999,
            1_000_000,
            1_398_529_618_678_276,
            -1_500_000,
        ] {
            assert_eq!(
                text(|o| push_micros(o, us)),
                Interval::from_micros(us).to_string()
            );
        }
        for v in [0u64, 7, 10, 255, 65535, u64::MAX] {
            assert_eq!(text(|o| push_u64(o, v)), v.to_string());
        }
        for a in [
            "0.0.0.0",
            "203.0.113.66",
            "255.255.255.255",
            "::ffff:1.2.3.4",
        ] {
            let a: Addr = a.parse().unwrap();
            assert_eq!(text(|o| push_addr(o, &a)), a.to_string());
        }
        let n: IpNet = "203.0.113.66/32".parse().unwrap();
        assert_eq!(text(|o| push_subnet(o, &n)), "203.0.113.66/32");
    }

    proptest::proptest! {
        #[test]
        fn digits_match_core_fmt(v: u64, i: i64, us in -(1i64 << 60)..(1i64 << 60)) {
            proptest::prop_assert_eq!(text(|o| push_u64(o, v)), v.to_string());
            proptest::prop_assert_eq!(text(|o| push_i64(o, i)), i.to_string());
            proptest::prop_assert_eq!(
                text(|o| push_micros(o, us)),
                Interval::from_micros(us).to_string()
            );
        }
    }

    #[test]
    fn json_doubles_are_shortest_round_trip() {
        assert_eq!(text(|o| push_json_double(600.0, o)), "600.0");
        assert_eq!(
            text(|o| push_json_double(Time::from_timeval(1254722767, 492060).as_secs_f64(), o)),
            "1254722767.49206"
        );
    }

    fn rec(ts: i64) -> DropRecord {
        DropRecord {
            ts: Time::from_timeval(ts, 0),
            rule_id: RuleId::new(2).unwrap(),
            orig_h: "192.0.2.1".parse().unwrap(),
            expire: Interval::from_secs(600),
            location: None,
        }
    }

    fn lines(p: &Path) -> Vec<String> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn the_writer_thread_writes_what_the_set_writes_in_order() {
        let direct = tempfile::tempdir().unwrap();
        let threaded = tempfile::tempdir().unwrap();
        let mut set = LogSet::create(direct.path(), Format::Tsv).unwrap();
        let mut writer =
            LogThread::spawn(LogSet::create(threaded.path(), Format::Tsv).unwrap()).unwrap();
        let mut n = 0;
        // More batches than can wait, so the producer also waits for the writer.
        for _ in 0..3 * LogThread::IN_FLIGHT {
            let batch: VecDeque<Output> = (0..500)
                .map(|_| {
                    n += 1;
                    Output::Drop(rec(n))
                })
                .collect();
            for o in &batch {
                set.write(o).unwrap();
            }
            let next = writer.send(batch).unwrap();
            assert!(next.is_empty(), "a queue to fill comes back empty");
        }
        set.close().unwrap();
        writer.close().unwrap();
        let body = |d: &Path| -> Vec<String> {
            lines(&d.join("netcontrol_drop.log"))
                .into_iter()
                .filter(|l| !l.starts_with("#open") && !l.starts_with("#close"))
                .collect()
        };
        let got = body(threaded.path());
        assert_eq!(got, body(direct.path()));
        assert_eq!(
            got.iter().filter(|l| !l.starts_with('#')).count(),
            n as usize
        );
        assert!(
            lines(&threaded.path().join("netcontrol_drop.log"))
                .last()
                .unwrap()
                .starts_with("#close\t")
        );
    }

    /// Outputs of a real engine with every kind of log line: drops of addresses (with a
    /// location, with a quote and a tab in it), their answers, a network caught from
    /// them, sightings, unblocks and forgetting, and outputs that are not log lines.
    fn engine_outputs() -> Vec<Output> {
        use crate::cnr::{Config, Engine, NetShape, Networks, ZEEK_ROUNDS_PER_PACKET};
        let cfg = Config {
            intervals: "10s,1m".parse().unwrap(),
            networks: Some(Networks {
                shape: NetShape::default(),
                threshold: 3,
                window: Interval::from_secs(60),
                intervals: "20s,2m".parse().unwrap(),
            }),
            cluster_outputs: true,
            ..Config::default()
        };
        let mut e = Engine::with_accepting_backend(cfg, "Debug-All");
        let t0 = Time::from_timeval(1_700_000_000, 250_000);
        let at = |s: i64| t0 + Interval::from_secs(s);
        let mut out = Vec::new();
        let take = |e: &mut Engine, out: &mut Vec<Output>| {
            while let Some(o) = e.poll_output() {
                out.push(o);
            }
        };
        for (i, a) in [
            "192.0.2.1",
            "192.0.2.2",
            "2001:db8::1",
            "192.0.2.3",
            "192.0.2.1",
        ]
        .iter()
        .enumerate()
        {
            let location = if i == 1 {
                "scan\t\"q\" \\ é"
            } else {
                "ssh brute force"
            };
            e.drop_catch_release(at(0), a.parse::<Addr>().unwrap(), location);
            e.drain(ZEEK_ROUNDS_PER_PACKET - 1);
            take(&mut e, &mut out);
        }
        for s in [5, 30, 31, 45, 200, 400] {
            let now = at(s);
            e.advance(now);
            let seen = e.sighting(now, "192.0.2.2".parse().unwrap());
            e.drain(seen.rounds(ZEEK_ROUNDS_PER_PACKET));
            take(&mut e, &mut out);
        }
        e.unblock_catch_release(at(401), "2001:db8::1".parse::<Addr>().unwrap(), "operator");
        e.drain(ZEEK_ROUNDS_PER_PACKET - 1);
        e.advance(at(100_000));
        e.drain(ZEEK_ROUNDS_PER_PACKET);
        take(&mut e, &mut out);
        out
    }

    /// The four logs' text, `#open` and `#close` lines left out.
    fn bodies(dir: &Path) -> Vec<(String, Vec<String>)> {
        [
            "netcontrol_catch_release",
            "netcontrol",
            "netcontrol_drop",
            "netcontrol_catch_release_net",
        ]
        .iter()
        .filter_map(|name| {
            let p = dir.join(format!("{name}.log"));
            p.exists().then(|| {
                let body = lines(&p)
                    .into_iter()
                    .filter(|l| !l.starts_with("#open") && !l.starts_with("#close"))
                    .collect();
                (name.to_string(), body)
            })
        })
        .collect()
    }

    /// When the writer is behind, the producer formats the batch itself: the logs are the
    /// same, byte for byte, as a set writing every output, in TSV and in JSON, with the
    /// batches the producer formatted written in their turn.
    #[test]
    fn batches_formatted_by_the_producer_write_the_same_logs() {
        let outputs = engine_outputs();
        let kinds = |f: fn(&Output) -> bool| outputs.iter().filter(|o| f(o)).count();
        assert!(kinds(|o| matches!(o, Output::CatchRelease(_))) > 5);
        assert!(kinds(|o| matches!(o, Output::NetControl(_))) > 5);
        assert!(kinds(|o| matches!(o, Output::Drop(_))) > 3);
        assert!(kinds(|o| matches!(o, Output::CatchReleaseNet(_))) > 1);
        assert!(kinds(|o| matches!(o, Output::BlockNew { .. })) > 1);
        for format in [Format::Tsv, Format::Json] {
            let direct = tempfile::tempdir().unwrap();
            let threaded = tempfile::tempdir().unwrap();
            let mut set = LogSet::create(direct.path(), format).unwrap();
            for o in &outputs {
                set.write(o).unwrap();
            }
            set.close().unwrap();

            // All of them formatted away from the set, then written as lines.
            let formatted = tempfile::tempdir().unwrap();
            let mut set = LogSet::create(formatted.path(), format).unwrap();
            let mut lines = Lines::default();
            Formatter::new(format).format(&outputs, &mut lines);
            set.write_lines(&lines).unwrap();
            set.close().unwrap();
            assert_eq!(
                bodies(formatted.path()),
                bodies(direct.path()),
                "{format:?}"
            );

            // Batches of three outputs; the writer waits at its gate until the queue is
            // full and one batch has come back to be formatted here.
            let (open, gate) = std::sync::mpsc::channel();
            let mut writer = LogThread::spawn_gated(
                LogSet::create(threaded.path(), format).unwrap(),
                Some(gate),
            )
            .unwrap();
            let mut batches = outputs.chunks(3).map(|c| c.iter().cloned().collect());
            for _ in 0..LogThread::IN_FLIGHT {
                let queued = writer.try_queue(batches.next().unwrap()).unwrap();
                assert!(
                    queued.is_none(),
                    "room for {} batches",
                    LogThread::IN_FLIGHT
                );
            }
            let full = writer.try_queue(batches.next().unwrap()).unwrap();
            let full = full.expect("the fifth batch is given back");
            open.send(()).unwrap();
            let emptied = writer.format_and_queue(full).unwrap();
            assert!(emptied.is_empty());
            for b in batches {
                assert!(writer.send(b).unwrap().is_empty());
            }
            assert!(writer.formatted_here() >= 1);
            writer.close().unwrap();
            let (got, want) = (bodies(threaded.path()), bodies(direct.path()));
            assert_eq!(got.len(), 4, "{format:?}: all four logs");
            assert_eq!(got, want, "{format:?}");
        }
    }

    #[test]
    fn a_deferred_set_replaces_an_earlier_runs_logs_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut old = LogSet::create(dir.path(), Format::Tsv).unwrap();
        for ts in 0..2000 {
            old.write(&Output::Drop(rec(ts))).unwrap();
        }
        old.close().unwrap();
        let drop_log = dir.path().join("netcontrol_drop.log");
        let old_len = std::fs::metadata(&drop_log).unwrap().len();

        // A short run into the same directory: nothing of the long one may remain, in the
        // file that gets lines and in those that get only a header and footer.
        let mut writer =
            LogThread::spawn(LogSet::create_deferred(dir.path(), Format::Tsv).unwrap()).unwrap();
        writer
            .send([Output::Drop(rec(7))].into_iter().collect())
            .unwrap();
        writer.close().unwrap();
        let got = lines(&drop_log);
        assert!(std::fs::metadata(&drop_log).unwrap().len() < old_len / 10);
        assert_eq!(got.iter().filter(|l| !l.starts_with('#')).count(), 1);
        assert!(got[0].starts_with("#separator"));
        assert!(got.last().unwrap().starts_with("#close\t"));
        for log in ["netcontrol.log", "netcontrol_catch_release.log"] {
            let got = lines(&dir.path().join(log));
            assert!(got.iter().all(|l| l.starts_with('#')), "{log}: {got:?}");
            assert_eq!(got.iter().filter(|l| l.starts_with("#close")).count(), 1);
        }
    }

    #[test]
    fn a_deferred_set_that_cannot_open_a_log_fails_at_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("netcontrol.log")).unwrap();
        match LogSet::create_deferred(dir.path(), Format::Json) {
            Err(Error::Write { path, .. }) => assert!(path.ends_with("netcontrol.log")),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("a directory opened as a log"),
        }
    }

    #[test]
    fn a_dropped_writer_writes_what_was_queued_without_a_footer() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer =
            LogThread::spawn(LogSet::create(dir.path(), Format::Tsv).unwrap()).unwrap();
        writer
            .send((1..=3).map(|i| Output::Drop(rec(i))).collect())
            .unwrap();
        drop(writer);
        let l = lines(&dir.path().join("netcontrol_drop.log"));
        assert_eq!(
            l.iter().filter(|x| !x.starts_with('#')).count(),
            3,
            "{l:#?}"
        );
        assert!(!l.iter().any(|x| x.starts_with("#close")), "{l:#?}");
    }

    #[test]
    fn a_write_error_stops_the_writer_and_comes_back_to_the_producer() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/dev/full", dir.path().join("netcontrol_drop.log")).unwrap();
        let mut writer =
            LogThread::spawn(LogSet::create(dir.path(), Format::Tsv).unwrap()).unwrap();
        // Enough lines to fill the file's buffer, so the writer writes while it runs.
        let mut failed = None;
        for k in 0..100i64 {
            let batch = (0..1000)
                .map(|i| Output::Drop(rec(k * 1000 + i + 1)))
                .collect();
            if let Err(e) = writer.send(batch) {
                failed = Some(e);
                break;
            }
        }
        let e = match failed {
            Some(e) => e,
            None => writer.close().unwrap_err(),
        };
        assert!(
            matches!(&e, Error::Write { path, .. } if path.ends_with("netcontrol_drop.log")),
            "{e}"
        );
    }

    #[test]
    fn appending_continues_a_closed_or_cut_off_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("netcontrol_drop.log");
        let mut f = LogFile::create(dir.path(), &DROP_SCHEMA, Format::Tsv).unwrap();
        f.write(&rec(1)).unwrap();
        f.close().unwrap();
        assert!(lines(&path).last().unwrap().starts_with("#close\t"));
        let mut f = LogFile::open_append(dir.path(), &DROP_SCHEMA, Format::Tsv).unwrap();
        f.write(&rec(2)).unwrap();
        f.flush().unwrap();
        drop(f);
        // A crash mid-line.
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"3.000000\t2\t192.0")
            .unwrap();
        let mut f = LogFile::open_append(dir.path(), &DROP_SCHEMA, Format::Tsv).unwrap();
        f.write(&rec(4)).unwrap();
        f.close().unwrap();
        let l = lines(&path);
        assert_eq!(
            l.iter().filter(|x| x.starts_with("#fields")).count(),
            1,
            "one header"
        );
        let data: Vec<&String> = l.iter().filter(|x| !x.starts_with('#')).collect();
        assert_eq!(data.len(), 3, "{l:#?}");
        assert!(data[0].starts_with("1.000000\t") && data[2].starts_with("4.000000\t"));
        assert!(l.last().unwrap().starts_with("#close\t"));
        assert_eq!(l.iter().filter(|x| x.starts_with("#close")).count(), 1);
    }

    #[test]
    fn a_log_in_another_format_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = LogFile::create(dir.path(), &DROP_SCHEMA, Format::Tsv).unwrap();
        f.write(&rec(1)).unwrap();
        f.close().unwrap();
        let mut f = LogFile::open_append(dir.path(), &DROP_SCHEMA, Format::Json).unwrap();
        f.write(&rec(2)).unwrap();
        f.close().unwrap();
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        let json = std::fs::read_to_string(dir.path().join("netcontrol_drop.log")).unwrap();
        assert!(json.starts_with("{\"ts\":2.0"), "{json}");
    }

    #[test]
    fn rotation_closes_renames_and_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = LogFile::create(dir.path(), &DROP_SCHEMA, Format::Tsv).unwrap();
        f.write(&rec(1)).unwrap();
        let old = f.rotate().unwrap();
        f.write(&rec(2)).unwrap();
        let old2 = f.rotate().unwrap();
        f.close().unwrap();
        assert_ne!(old, old2, "names never collide");
        let name = old.file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with("netcontrol_drop.20") && name.ends_with(".log"),
            "{name}"
        );
        let l = lines(&old);
        assert!(l.iter().any(|x| x.starts_with("1.000000")));
        assert!(l.last().unwrap().starts_with("#close"));
        let cur = lines(&dir.path().join("netcontrol_drop.log"));
        assert!(cur[0].starts_with("#separator"));
        assert!(
            !cur.iter()
                .any(|x| x.starts_with("1.000000") || x.starts_with("2.000000"))
        );
    }

    #[test]
    fn header_matches_zeek_layout() {
        let h = tsv_header(&CR_SCHEMA, "XXXX-XX-XX-XX-XX-XX");
        assert!(h.starts_with("#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tnetcontrol_catch_release\n#open\tXXXX-XX-XX-XX-XX-XX\n#fields\tts\trule_id\tip\taction\t"));
        assert!(h.ends_with("#types\ttime\tstring\taddr\tenum\tinterval\tinterval\ttime\ttime\tcount\tstring\tstring\tstring\n"));
    }
}
