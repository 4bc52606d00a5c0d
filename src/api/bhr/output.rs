//! Response shapes, in BHR's field order and formats (bhr.md §8.2).
//!
//! JSON times are what Django REST framework writes: `isoformat()` with `+00:00` turned
//! into `Z` (`2026-11-21T13:51:53.360815Z`, and no fraction when the microseconds are 0).
//! CSV times are Python's `str(datetime)` (`2026-11-21 13:51:53.360815+00:00`). Links are
//! absolute, built from the request's `Host`.

use std::fmt;

use ipnet::IpNet;
use serde::{Serialize, Serializer};

use crate::bhr::model::{Block, Entry, SourceBlacklistEntry, WhitelistEntry};
use crate::time::Time;
pub use crate::time::{Iso, PyStr};

/// A network, written as it displays (`192.0.2.1/32`).
#[derive(Clone, Copy, Debug)]
pub struct Net<'a>(&'a IpNet);

impl Serialize for Net<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self.0)
    }
}

/// Builds absolute links.
#[derive(Clone, Debug)]
pub struct Links {
    base: String,
}

/// One absolute link: `<base>/bhr/api/<collection>/<id>/<action>`.
#[derive(Clone, Copy, Debug)]
pub struct Link<'a> {
    base: &'a str,
    collection: &'static str,
    id: u64,
    action: &'static str,
}

impl fmt::Display for Link<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.base)?;
        f.write_str("/bhr/api/")?;
        f.write_str(self.collection)?;
        f.write_str("/")?;
        f.write_str(itoa::Buffer::new().format(self.id))?;
        f.write_str("/")?;
        f.write_str(self.action)
    }
}

impl Serialize for Link<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Links {
    /// Links for requests that came to `scheme://host`.
    pub fn new(scheme: &str, host: &str) -> Links {
        Links {
            base: format!("{scheme}://{host}"),
        }
    }

    /// `…/bhr/api/<path>`.
    pub fn api(&self, path: &str) -> String {
        format!("{}/bhr/api/{path}", self.base)
    }

    fn link(&self, collection: &'static str, id: u64, action: &'static str) -> Link<'_> {
        Link {
            base: &self.base,
            collection,
            id,
            action,
        }
    }
}

/// `BlockSerializer`.
#[derive(Serialize)]
pub struct BlockOut<'a> {
    who: &'a str,
    url: Link<'a>,
    cidr: CidrOut<'a>,
    source: &'a str,
    why: &'a str,
    added: Iso,
    unblock_at: Option<Iso>,
    skip_whitelist: bool,
    set_blocked: Link<'a>,
}

/// The network of a block, or the text a create request sent.
#[derive(Serialize)]
#[serde(untagged)]
enum CidrOut<'a> {
    Net(Net<'a>),
    Text(&'a str),
}

/// A block as BHR shows it. `cidr` overrides the canonical network (a create echoes the
/// request's text).
pub fn block<'a>(
    b: &'a Block,
    who: &'a str,
    links: &'a Links,
    cidr: Option<&'a str>,
) -> BlockOut<'a> {
    BlockOut {
        who,
        url: links.link("blocks", b.id, ""),
        cidr: cidr.map_or(CidrOut::Net(Net(&b.cidr)), CidrOut::Text),
        source: &b.source,
        why: &b.why,
        added: Iso(b.added),
        unblock_at: b.unblock_at.map(Iso),
        skip_whitelist: b.skip_whitelist,
        set_blocked: links.link("blocks", b.id, "set_blocked/"),
    }
}

/// `BlockLimitedSerializer`.
#[derive(Serialize)]
pub struct LimitedOut<'a> {
    cidr: Net<'a>,
    source: &'a str,
    added: Iso,
    unblock_at: Option<Iso>,
}

/// The public view of a block.
pub fn limited(b: &Block) -> LimitedOut<'_> {
    LimitedOut {
        cidr: Net(&b.cidr),
        source: &b.source,
        added: Iso(b.added),
        unblock_at: b.unblock_at.map(Iso),
    }
}

/// `BlockBriefSerializer`.
#[derive(Serialize)]
pub struct BriefOut<'a> {
    cidr: Net<'a>,
}

/// Just the network.
pub fn brief(b: &Block) -> BriefOut<'_> {
    BriefOut { cidr: Net(&b.cidr) }
}

/// `BlockQueueSerializer`: `id` is the block's.
#[derive(Serialize)]
pub struct QueueOut<'a> {
    id: u64,
    cidr: Net<'a>,
    set_blocked: Link<'a>,
    added: Iso,
}

/// A block-queue row.
pub fn queue_row<'a>(b: &'a Block, links: &'a Links) -> QueueOut<'a> {
    QueueOut {
        id: b.id,
        cidr: Net(&b.cidr),
        set_blocked: links.link("blocks", b.id, "set_blocked/"),
        added: Iso(b.added),
    }
}

/// `UnBlockEntrySerializer`: `id` is the entry's.
#[derive(Serialize)]
pub struct UnblockOut<'a> {
    id: u64,
    block: BriefOut<'a>,
    ident: &'a str,
    added: Iso,
    set_unblocked: Link<'a>,
}

/// An unblock-queue row.
pub fn unblock_row<'a>(e: &'a Entry, b: &'a Block, links: &'a Links) -> UnblockOut<'a> {
    UnblockOut {
        id: e.id,
        block: brief(b),
        ident: &e.ident,
        added: Iso(e.added),
        set_unblocked: links.link("blockentries", e.id, "set_unblocked/"),
    }
}

/// `BlockEntrySerializer` (no id).
#[derive(Serialize)]
pub struct EntryOut<'a> {
    block: BriefOut<'a>,
    ident: &'a str,
    added: Iso,
    removed: Option<Iso>,
    set_unblocked: Link<'a>,
}

/// A block entry.
pub fn entry<'a>(e: &'a Entry, b: &'a Block, links: &'a Links) -> EntryOut<'a> {
    EntryOut {
        block: brief(b),
        ident: &e.ident,
        added: Iso(e.added),
        removed: e.removed.map(Iso),
        set_unblocked: links.link("blockentries", e.id, "set_unblocked/"),
    }
}

/// The whitelist shape: `added` is `str(datetime)` here, and there is no id.
#[derive(Serialize)]
pub struct WhitelistOut<'a> {
    cidr: Net<'a>,
    who: &'a str,
    why: &'a str,
    added: PyStr,
}

/// A whitelist entry.
pub fn whitelist<'a>(w: &'a WhitelistEntry, who: &'a str) -> WhitelistOut<'a> {
    WhitelistOut {
        cidr: Net(&w.cidr),
        who,
        why: &w.why,
        added: PyStr(w.added),
    }
}

/// A source-blacklist entry (catchd's own endpoint; BHR manages these in its admin).
#[derive(Serialize)]
pub struct SourceBlacklistOut<'a> {
    source: &'a str,
    who: &'a str,
    why: &'a str,
    added: Iso,
}

/// A source-blacklist entry.
pub fn source_blacklist<'a>(s: &'a SourceBlacklistEntry, who: &'a str) -> SourceBlacklistOut<'a> {
    SourceBlacklistOut {
        source: &s.source,
        who,
        why: &s.why,
        added: Iso(s.added),
    }
}

/// One CSV cell.
#[derive(Clone, Copy, Debug)]
pub enum Cell<'a> {
    /// Free text, quoted when it must be.
    Text(&'a str),
    /// A network.
    Net(&'a IpNet),
    /// A time, as Python's `str(datetime)`; `None` is an empty cell.
    Time(Option<Time>),
}

/// Appends a CSV row ending in CRLF, quoted as Python's `csv` module does
/// (`QUOTE_MINIMAL`).
pub fn csv_row(out: &mut String, cells: &[Cell<'_>]) {
    use std::fmt::Write as _;
    for (i, c) in cells.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match *c {
            Cell::Text(s) if s.contains([',', '"', '\r', '\n']) => {
                out.push('"');
                out.push_str(&s.replace('"', "\"\""));
                out.push('"');
            }
            Cell::Text(s) => out.push_str(s),
            Cell::Net(n) => {
                let _ = write!(out, "{n}");
            }
            Cell::Time(Some(t)) => {
                let _ = write!(out, "{}", PyStr(t));
            }
            Cell::Time(None) => {}
        }
    }
    out.push_str("\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iso(t: Time) -> String {
        Iso(t).to_string()
    }

    fn pystr(t: Time) -> String {
        PyStr(t).to_string()
    }

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
    fn dates_match_chrono_across_the_calendar() {
        let mut t = -86_400 * 719_000i64; // year 1 (Python has no earlier years)
        while t < 86_400 * 2_900_000 {
            let us = t * 1_000_000 + (t.rem_euclid(7) * 123_457) % 1_000_000;
            let d = chrono::DateTime::from_timestamp_micros(us).unwrap();
            let want = if us % 1_000_000 == 0 {
                d.format("%Y-%m-%dT%H:%M:%SZ").to_string()
            } else {
                d.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
            };
            assert_eq!(iso(Time::from_micros(us)), want, "{us}");
            t += 86_400 * 37 + 3_611;
        }
    }

    #[test]
    fn csv_quotes_minimally() {
        let mut s = String::new();
        let net: IpNet = "192.0.2.0/24".parse().unwrap();
        let t = Time::from_timeval(1_795_269_113, 0);
        csv_row(
            &mut s,
            &[
                Cell::Text("a"),
                Cell::Text("b,c"),
                Cell::Text("say \"hi\""),
                Cell::Text(""),
                Cell::Net(&net),
                Cell::Time(Some(t)),
                Cell::Time(None),
            ],
        );
        assert_eq!(
            s,
            "a,\"b,c\",\"say \"\"hi\"\"\",,192.0.2.0/24,2026-11-21 13:51:53+00:00,\r\n"
        );
    }
}
