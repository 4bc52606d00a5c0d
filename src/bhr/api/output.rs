//! Response shapes, in BHR's field order and formats (bhr.md §8.2).
//!
//! JSON times are what Django REST framework writes: `isoformat()` with `+00:00` turned
//! into `Z` (`2026-11-21T13:51:53.360815Z`, and no fraction when the microseconds are 0).
//! CSV times are Python's `str(datetime)` (`2026-11-21 13:51:53.360815+00:00`). Links are
//! absolute, built from the request's `Host`.

use serde::Serialize;

use crate::bhr::model::{Block, Entry, SourceBlacklistEntry, WhitelistEntry};
use crate::time::Time;

fn parts(t: Time) -> (String, u32) {
    let us = t.as_micros();
    let d = chrono::DateTime::from_timestamp_micros(us).unwrap_or_default();
    (
        d.format("%Y-%m-%dT%H:%M:%S").to_string(),
        us.rem_euclid(1_000_000) as u32,
    )
}

/// DRF's JSON timestamp.
pub fn iso(t: Time) -> String {
    let (s, us) = parts(t);
    if us == 0 {
        format!("{s}Z")
    } else {
        format!("{s}.{us:06}Z")
    }
}

/// Python's `str(datetime)` for an aware UTC time.
pub fn pystr(t: Time) -> String {
    let (s, us) = parts(t);
    let s = s.replacen('T', " ", 1);
    if us == 0 {
        format!("{s}+00:00")
    } else {
        format!("{s}.{us:06}+00:00")
    }
}

/// Builds absolute links.
#[derive(Clone, Debug)]
pub struct Links {
    base: String,
}

impl Links {
    /// Links for requests that came to `host`.
    pub fn new(host: &str) -> Links {
        Links {
            base: format!("http://{host}"),
        }
    }

    /// `…/bhr/api/<path>`.
    pub fn api(&self, path: &str) -> String {
        format!("{}/bhr/api/{path}", self.base)
    }

    fn block(&self, id: u64) -> String {
        self.api(&format!("blocks/{id}/"))
    }
}

/// `BlockSerializer`.
#[derive(Serialize)]
pub struct BlockOut<'a> {
    who: &'a str,
    url: String,
    cidr: String,
    source: &'a str,
    why: &'a str,
    added: String,
    unblock_at: Option<String>,
    skip_whitelist: bool,
    set_blocked: String,
}

/// A block as BHR shows it. `cidr` overrides the canonical network (a create echoes the
/// request's text).
pub fn block<'a>(b: &'a Block, who: &'a str, links: &Links, cidr: Option<&str>) -> BlockOut<'a> {
    let url = links.block(b.id);
    BlockOut {
        who,
        set_blocked: format!("{url}set_blocked/"),
        url,
        cidr: cidr.map_or_else(|| b.cidr.to_string(), str::to_string),
        source: &b.source,
        why: &b.why,
        added: iso(b.added),
        unblock_at: b.unblock_at.map(iso),
        skip_whitelist: b.skip_whitelist,
    }
}

/// `BlockLimitedSerializer`.
#[derive(Serialize)]
pub struct LimitedOut<'a> {
    cidr: String,
    source: &'a str,
    added: String,
    unblock_at: Option<String>,
}

/// The public view of a block.
pub fn limited(b: &Block) -> LimitedOut<'_> {
    LimitedOut {
        cidr: b.cidr.to_string(),
        source: &b.source,
        added: iso(b.added),
        unblock_at: b.unblock_at.map(iso),
    }
}

/// `BlockBriefSerializer`.
#[derive(Serialize)]
pub struct BriefOut {
    cidr: String,
}

/// Just the network.
pub fn brief(b: &Block) -> BriefOut {
    BriefOut {
        cidr: b.cidr.to_string(),
    }
}

/// `BlockQueueSerializer`: `id` is the block's.
#[derive(Serialize)]
pub struct QueueOut {
    id: u64,
    cidr: String,
    set_blocked: String,
    added: String,
}

/// A block-queue row.
pub fn queue_row(b: &Block, links: &Links) -> QueueOut {
    QueueOut {
        id: b.id,
        cidr: b.cidr.to_string(),
        set_blocked: format!("{}set_blocked/", links.block(b.id)),
        added: iso(b.added),
    }
}

/// `UnBlockEntrySerializer`: `id` is the entry's.
#[derive(Serialize)]
pub struct UnblockOut<'a> {
    id: u64,
    block: BriefOut,
    ident: &'a str,
    added: String,
    set_unblocked: String,
}

/// An unblock-queue row.
pub fn unblock_row<'a>(e: &'a Entry, b: &Block, links: &Links) -> UnblockOut<'a> {
    UnblockOut {
        id: e.id,
        block: brief(b),
        ident: &e.ident,
        added: iso(e.added),
        set_unblocked: links.api(&format!("blockentries/{}/set_unblocked/", e.id)),
    }
}

/// `BlockEntrySerializer` (no id).
#[derive(Serialize)]
pub struct EntryOut<'a> {
    block: BriefOut,
    ident: &'a str,
    added: String,
    removed: Option<String>,
    set_unblocked: String,
}

/// A block entry.
pub fn entry<'a>(e: &'a Entry, b: &Block, links: &Links) -> EntryOut<'a> {
    EntryOut {
        block: brief(b),
        ident: &e.ident,
        added: iso(e.added),
        removed: e.removed.map(iso),
        set_unblocked: links.api(&format!("blockentries/{}/set_unblocked/", e.id)),
    }
}

/// The whitelist shape: `added` is `str(datetime)` here, and there is no id.
#[derive(Serialize)]
pub struct WhitelistOut<'a> {
    cidr: String,
    who: &'a str,
    why: &'a str,
    added: String,
}

/// A whitelist entry.
pub fn whitelist<'a>(w: &'a WhitelistEntry, who: &'a str) -> WhitelistOut<'a> {
    WhitelistOut {
        cidr: w.cidr.to_string(),
        who,
        why: &w.why,
        added: pystr(w.added),
    }
}

/// A source-blacklist entry (catchd's own endpoint; BHR manages these in its admin).
#[derive(Serialize)]
pub struct SourceBlacklistOut<'a> {
    source: &'a str,
    who: &'a str,
    why: &'a str,
    added: String,
}

/// A source-blacklist entry.
pub fn source_blacklist<'a>(s: &'a SourceBlacklistEntry, who: &'a str) -> SourceBlacklistOut<'a> {
    SourceBlacklistOut {
        source: &s.source,
        who,
        why: &s.why,
        added: iso(s.added),
    }
}

/// Appends one CSV field, quoted as Python's `csv` module does (`QUOTE_MINIMAL`).
fn csv_field(out: &mut String, s: &str) {
    if s.contains([',', '"', '\r', '\n']) {
        out.push('"');
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(s);
    }
}

/// Appends a CSV row ending in CRLF.
pub fn csv_row<S: AsRef<str>>(out: &mut String, fields: &[S]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        csv_field(out, f.as_ref());
    }
    out.push_str("\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_like_python() {
        let t = Time::from_timeval(1_795_269_113, 360_815);
        assert_eq!(iso(t), "2026-11-21T13:51:53.360815Z");
        assert_eq!(pystr(t), "2026-11-21 13:51:53.360815+00:00");
        let whole = Time::from_timeval(1_795_269_113, 0);
        assert_eq!(iso(whole), "2026-11-21T13:51:53Z");
        assert_eq!(pystr(whole), "2026-11-21 13:51:53+00:00");
        let small = Time::from_timeval(1_795_269_113, 5);
        assert_eq!(iso(small), "2026-11-21T13:51:53.000005Z");
    }

    #[test]
    fn csv_quotes_minimally() {
        let mut s = String::new();
        csv_row(&mut s, &["a", "b,c", "say \"hi\"", ""]);
        assert_eq!(s, "a,\"b,c\",\"say \"\"hi\"\"\",\r\n");
    }
}
