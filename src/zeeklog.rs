//! Zeek's ASCII log writer, in its TSV and JSON flavours.
//!
//! Each record type from [`crate::cnr::record`] gets a [`Schema`] (path, field names, Zeek
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

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use ipnet::IpNet;

use crate::addr::Addr;
use crate::cnr::{CatchReleaseRecord, DropRecord, NetControlRecord, Output, RuleId};
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
    /// A rule id, logged as a `string`.
    Rule(RuleId),
    /// An `addr`.
    Addr(Addr),
    /// A `subnet`.
    Subnet(IpNet),
    /// An `enum`, with its module prefix.
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
    fn visit<'a>(&'a self, f: &mut dyn FnMut(Value<'a>));
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

    fn visit<'a>(&'a self, f: &mut dyn FnMut(Value<'a>)) {
        f(self.ts.into());
        f(self.rule_id.into());
        f(self.ip.into());
        f(Value::Enum(self.action.as_str()));
        f(self.block_interval.into());
        f(self.watch_interval.into());
        f(self.blocked_until.into());
        f(self.watched_until.into());
        f(Value::Count(self.num_blocked));
        f(self.location.as_deref().into());
        f(self.message.as_deref().into());
        f(self.plugin.as_deref().into());
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

    fn visit<'a>(&'a self, f: &mut dyn FnMut(Value<'a>)) {
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
        f(self.location.as_deref().into());
        f(self.plugin.as_deref().into());
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

    fn visit<'a>(&'a self, f: &mut dyn FnMut(Value<'a>)) {
        f(self.ts.into());
        f(self.rule_id.into());
        f(self.orig_h.into());
        f(Value::Unset);
        f(Value::Unset);
        f(Value::Unset);
        f(self.expire.into());
        f(self.location.as_deref().into());
    }
}

/// Appends `s` to `out` with Zeek's ASCII-writer escaping.
fn escape_tsv(s: &str, out: &mut String) {
    if s.is_empty() {
        out.push_str("(empty)");
        return;
    }
    if s == "-" {
        out.push_str("\\x2d");
        return;
    }
    for c in s.chars() {
        if c == '\\' || (c.is_ascii() && !(' '..='~').contains(&c)) {
            let _ = write!(out, "\\x{:02x}", c as u32);
        } else {
            out.push(c);
        }
    }
}

/// Appends one value in TSV form.
fn push_tsv(v: Value<'_>, out: &mut String) {
    match v {
        Value::Unset => out.push('-'),
        Value::Time(t) => {
            let _ = write!(out, "{t}");
        }
        Value::Interval(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Str(s) => escape_tsv(s, out),
        Value::Rule(r) => {
            let _ = write!(out, "{r}");
        }
        Value::Addr(a) => {
            let _ = write!(out, "{a}");
        }
        Value::Subnet(n) => {
            let _ = write!(out, "{n}");
        }
        Value::Enum(e) => out.push_str(e),
        Value::Count(c) => {
            let _ = write!(out, "{c}");
        }
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
    }
}

/// A double as rapidjson writes it: shortest round-trip digits, always with a decimal
/// point or exponent.
fn push_json_double(d: f64, out: &mut String) {
    let _ = write!(out, "{d:?}");
}

fn push_json_str(s: &str, out: &mut String) {
    // serde_json's escaping is standard JSON: quotes, backslashes, control characters.
    out.push_str(&serde_json::Value::from(s).to_string());
}

/// Appends one `"key":value` pair, or nothing for an unset field. Returns whether it wrote.
fn push_json(key: &str, v: Value<'_>, first: bool, out: &mut String) -> bool {
    if matches!(v, Value::Unset) {
        return false;
    }
    if !first {
        out.push(',');
    }
    out.push('"');
    out.push_str(key);
    out.push_str("\":");
    match v {
        Value::Unset => {}
        Value::Time(t) => push_json_double(t.as_secs_f64(), out),
        Value::Interval(i) => push_json_double(i.as_secs_f64(), out),
        Value::Str(s) => push_json_str(s, out),
        Value::Rule(r) => {
            let _ = write!(out, "\"{r}\"");
        }
        Value::Addr(a) => {
            let _ = write!(out, "\"{a}\"");
        }
        Value::Subnet(n) => {
            let _ = write!(out, "\"{n}\"");
        }
        Value::Enum(e) => {
            let _ = write!(out, "\"{e}\"");
        }
        Value::Count(c) => {
            let _ = write!(out, "{c}");
        }
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
    }
    true
}

/// Renders one record as a TSV line (no newline).
pub fn tsv_line<R: ZeekRecord>(rec: &R) -> String {
    let mut out = String::with_capacity(160);
    let mut first = true;
    rec.visit(&mut |v| {
        if !first {
            out.push('\t');
        }
        first = false;
        push_tsv(v, &mut out);
    });
    out
}

/// Renders one record as a JSON object (no newline).
pub fn json_line<R: ZeekRecord>(rec: &R) -> String {
    let mut out = String::with_capacity(200);
    out.push('{');
    let mut i = 0;
    let mut first = true;
    rec.visit(&mut |v| {
        if push_json(R::SCHEMA.fields[i], v, first, &mut out) {
            first = false;
        }
        i += 1;
    });
    out.push('}');
    out
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
}

/// One open log file.
pub struct LogFile {
    path: PathBuf,
    schema: &'static Schema,
    format: Format,
    out: BufWriter<File>,
    line: String,
}

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
        let mut lf = LogFile {
            path,
            schema,
            format,
            out: BufWriter::with_capacity(64 * 1024, file),
            line: String::new(),
        };
        if format == Format::Tsv {
            let header = tsv_header(schema, &header_timestamp());
            lf.put(header.as_bytes())?;
        }
        Ok(lf)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.out.write_all(bytes).map_err(|source| Error::Write {
            path: self.path.clone(),
            source,
        })
    }

    /// Appends one record.
    ///
    /// # Errors
    /// [`Error::Write`] on an I/O error.
    pub fn write<R: ZeekRecord>(&mut self, rec: &R) -> Result<(), Error> {
        debug_assert_eq!(R::SCHEMA.path, self.schema.path);
        let mut line = std::mem::take(&mut self.line);
        line.clear();
        line.push_str(&match self.format {
            Format::Tsv => tsv_line(rec),
            Format::Json => json_line(rec),
        });
        line.push('\n');
        let r = self.put(line.as_bytes());
        self.line = line;
        r
    }

    /// Writes the `#close` footer (TSV) and flushes.
    ///
    /// # Errors
    /// [`Error::Write`] on an I/O error.
    pub fn close(mut self) -> Result<(), Error> {
        if self.format == Format::Tsv {
            let footer = format!("#close\t{}\n", header_timestamp());
            self.put(footer.as_bytes())?;
        }
        self.out.flush().map_err(|source| Error::Write {
            path: self.path.clone(),
            source,
        })
    }
}

static CR_SCHEMA: Schema = CatchReleaseRecord::SCHEMA;
static NC_SCHEMA: Schema = NetControlRecord::SCHEMA;
static DROP_SCHEMA: Schema = DropRecord::SCHEMA;

/// The three NetControl logs of a run.
pub struct LogSet {
    catch_release: LogFile,
    netcontrol: LogFile,
    drop: LogFile,
}

impl LogSet {
    /// Creates the directory if needed and the three log files in it.
    ///
    /// # Errors
    /// [`Error`] if the directory or a file cannot be created.
    pub fn create(dir: &Path, format: Format) -> Result<LogSet, Error> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(LogSet {
            catch_release: LogFile::create(dir, &CR_SCHEMA, format)?,
            netcontrol: LogFile::create(dir, &NC_SCHEMA, format)?,
            drop: LogFile::create(dir, &DROP_SCHEMA, format)?,
        })
    }

    /// Writes an engine output to its log; outputs that are not log lines are ignored.
    ///
    /// # Errors
    /// [`Error::Write`] on an I/O error.
    pub fn write(&mut self, o: &Output) -> Result<(), Error> {
        match o {
            Output::CatchRelease(r) => self.catch_release.write(r),
            Output::NetControl(r) => self.netcontrol.write(r),
            Output::Drop(r) => self.drop.write(r),
            Output::Forgotten { .. } | Output::Error(_) => Ok(()),
        }
    }

    /// Closes all three logs.
    ///
    /// # Errors
    /// [`Error::Write`] on an I/O error.
    pub fn close(self) -> Result<(), Error> {
        self.catch_release.close()?;
        self.netcontrol.close()?;
        self.drop.close()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_zeek() {
        let mut s = String::new();
        escape_tsv("a\tb\\c", &mut s);
        assert_eq!(s, "a\\x09b\\x5cc");
        s.clear();
        escape_tsv("-", &mut s);
        assert_eq!(s, "\\x2d");
        s.clear();
        escape_tsv("", &mut s);
        assert_eq!(s, "(empty)");
        s.clear();
        escape_tsv("Re-drop by catch-and-release: ", &mut s);
        assert_eq!(s, "Re-drop by catch-and-release: ");
        s.clear();
        escape_tsv("blåbær,x", &mut s);
        assert_eq!(s, "blåbær,x");
    }

    #[test]
    fn json_doubles_are_shortest_round_trip() {
        let mut s = String::new();
        push_json_double(600.0, &mut s);
        s.push(' ');
        push_json_double(Time::from_timeval(1254722767, 492060).as_secs_f64(), &mut s);
        assert_eq!(s, "600.0 1254722767.49206");
    }

    #[test]
    fn header_matches_zeek_layout() {
        let h = tsv_header(&CR_SCHEMA, "XXXX-XX-XX-XX-XX-XX");
        assert!(h.starts_with("#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tnetcontrol_catch_release\n#open\tXXXX-XX-XX-XX-XX-XX\n#fields\tts\trule_id\tip\taction\t"));
        assert!(h.ends_with("#types\ttime\tstring\taddr\tenum\tinterval\tinterval\ttime\ttime\tcount\tstring\tstring\tstring\n"));
    }
}
