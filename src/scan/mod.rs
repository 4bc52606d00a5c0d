//! Detection from logs, BlockHosts and fail2ban style: lines in, addresses to block out.
//!
//! * [`prefix`]: the time and program at the start of a line, parsed by hand.
//! * [`pattern`]: BlockHosts' pattern language (`{LOG_PREFIX{service}}`, `{HOST_IP}`) on
//!   linear-time regexes.
//! * [`rules`]: rule files (jails and rules), the bundled rule set and the matcher.
//! * `track`: per-address counting (exact window, fail2ban's ticket, BlockHosts'
//!   count and age), bounded in memory.
//! * [`tail`]: following files across appends, rotation and truncation (the only part
//!   here that does I/O).
//!
//! [`Scanner`] puts the pure parts together: give it lines, get [`Detection`]s.

pub mod pattern;
pub mod prefix;
pub mod rules;
pub mod tail;
pub(crate) mod track;

use std::net::IpAddr;

use crate::addr::Addr;
use crate::time::Time;

use self::prefix::Clock;
use self::rules::{Action, Matcher, Rules, RulesError};
use self::track::Tracker;

/// The longest line looked at; the rest of a longer line is ignored (and counted).
pub const MAX_LINE: usize = 8192;

/// Addresses tracked per jail by default.
pub const MAX_ADDRESSES: usize = 100_000;

/// An address to block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Detection {
    /// The address.
    pub addr: IpAddr,
    /// The jail.
    pub jail: String,
    /// The rule of the last failure.
    pub rule: String,
    /// Failures counted (1 for a denied address).
    pub count: u32,
    /// The first counted failure.
    pub first: Time,
    /// The last.
    pub last: Time,
    /// It was on the jail's deny list.
    pub denied: bool,
    /// What to do with it.
    pub action: Action,
}

impl Detection {
    /// The `source` of the block or drop it becomes: `scan:<rule>`.
    pub fn source(&self) -> String {
        format!("scan:{}", self.rule)
    }

    /// The `why` of the block it becomes.
    pub fn why(&self) -> String {
        format!(
            "{} failures ({}) from {} to {}",
            self.count,
            self.rule,
            crate::time::Iso(self.first),
            crate::time::Iso(self.last)
        )
    }

    /// The registry block it becomes, made as `who` at `now` for `len`.
    pub fn block_request(
        &self,
        who: crate::bhr::model::UserId,
        now: Time,
        len: crate::time::Interval,
    ) -> crate::bhr::registry::NewBlock {
        let net = crate::addr::canonical_net(ipnet::IpNet::from(self.addr));
        crate::bhr::registry::NewBlock::new(net, who, &self.source(), self.why())
            .until(Some(now + len))
            .extending()
    }
}

/// What a scanner has seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Lines read.
    pub lines: u64,
    /// Lines a rule matched.
    pub matched: u64,
    /// Matches of allowed addresses (not counted).
    pub allowed: u64,
    /// Matches before `--since` (not counted).
    pub too_old: u64,
    /// Lines longer than [`MAX_LINE`], cut.
    pub long_lines: u64,
    /// Addresses crossing a threshold (or denied).
    pub detections: u64,
    /// Addresses evicted for lack of room, over all jails.
    pub evictions: u64,
}

/// Lines in, detections out.
pub struct Scanner {
    matcher: Matcher,
    rules: Rules,
    trackers: Vec<Tracker>,
    since: Option<Time>,
    stats: Stats,
}

impl Scanner {
    /// A scanner over these rules, tracking at most `max_addresses` addresses per jail,
    /// ignoring failures before `since`.
    ///
    /// # Errors
    /// The rules' regex sets cannot be built.
    pub fn new(
        rules: Rules,
        max_addresses: usize,
        since: Option<Time>,
    ) -> Result<Scanner, RulesError> {
        let matcher = Matcher::new(&rules)?;
        let trackers = rules
            .jails
            .iter()
            .map(|j| Tracker::new(j.mode, max_addresses))
            .collect();
        Ok(Scanner {
            matcher,
            rules,
            trackers,
            since,
            stats: Stats::default(),
        })
    }

    /// The rules.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        let mut s = self.stats;
        s.evictions = self.trackers.iter().map(Tracker::evictions).sum();
        s
    }

    /// One line (without its newline). `clock` resolves dates without a year; `now` is
    /// the time of lines without one.
    pub fn line(&mut self, line: &str, clock: &Clock, now: Time) -> Option<Detection> {
        self.stats.lines += 1;
        let line = if line.len() > MAX_LINE {
            self.stats.long_lines += 1;
            let mut end = MAX_LINE;
            while !line.is_char_boundary(end) {
                end -= 1;
            }
            &line[..end]
        } else {
            line
        };
        let hit = self.matcher.find(line, clock)?;
        self.stats.matched += 1;
        let t = hit.ts.unwrap_or(now);
        if self.since.is_some_and(|s| t < s) {
            self.stats.too_old += 1;
            return None;
        }
        let rule = &self.rules.rules[hit.rule];
        let jail = &self.rules.jails[rule.jail];
        if jail.allow.contains(hit.host) {
            self.stats.allowed += 1;
            return None;
        }
        let addr = Addr::from(hit.host);
        let detection = |count, first, last, denied| Detection {
            addr: hit.host,
            jail: jail.name.clone(),
            rule: rule.name.clone(),
            count,
            first,
            last,
            denied,
            action: jail.action.clone(),
        };
        let d = if jail.deny.contains(hit.host) {
            self.trackers[rule.jail].forget(&addr);
            detection(1, t, t, true)
        } else {
            let c = self.trackers[rule.jail].fail(addr, t, hit.pid)?;
            detection(c.count, c.first, c.last, false)
        };
        self.stats.detections += 1;
        Some(d)
    }
}

/// What [`scan_files`] read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Read {
    /// Lines read.
    pub lines: u64,
    /// Lines cut at [`MAX_LINE`] while reading (the scanner's own cuts are in its stats).
    pub cut: u64,
}

/// Reads one line of at most [`MAX_LINE`] bytes into `buf` (without its newline),
/// skipping the rest of a longer line without holding it. `Ok(None)` at the end of the
/// input; otherwise whether the line was cut.
fn read_line_capped(
    r: &mut impl std::io::BufRead,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<bool>> {
    buf.clear();
    let mut cut = false;
    let mut any = false;
    loop {
        let chunk = match r.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok(any.then_some(cut));
        }
        any = true;
        let (piece, done) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (&chunk[..i], Some(i + 1)),
            None => (chunk, None),
        };
        let room = MAX_LINE.saturating_sub(buf.len());
        if piece.len() > room {
            cut = true;
        }
        buf.extend_from_slice(&piece[..piece.len().min(room)]);
        let used = done.unwrap_or(chunk.len());
        r.consume(used);
        if done.is_some() {
            return Ok(Some(cut));
        }
    }
}

/// Reads files once, start to end (`-` is standard input), through a scanner; calls
/// `found` for every detection. Dates without a year are resolved against each file's
/// modification time. Lines longer than [`MAX_LINE`] are cut (and counted) as they are
/// read, so a huge line is never held whole.
///
/// # Errors
/// A file that cannot be read, named.
pub fn scan_files(
    scanner: &mut Scanner,
    files: &[std::path::PathBuf],
    mut found: impl FnMut(Detection),
) -> Result<Read, String> {
    let mut read = Read::default();
    for path in files {
        let now = Time::now();
        if path.as_os_str() == "-" {
            let clock = Clock::new(now);
            let stdin = std::io::stdin();
            let mut r = stdin.lock();
            let mut buf = Vec::with_capacity(256);
            while let Some(cut) =
                read_line_capped(&mut r, &mut buf).map_err(|e| format!("standard input: {e}"))?
            {
                read.lines += 1;
                read.cut += u64::from(cut);
                if let Some(d) = scanner.line(&String::from_utf8_lossy(&buf), &clock, now) {
                    found(d);
                }
            }
            continue;
        }
        let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if !meta.is_file() {
            return Err(format!("{}: not a file", path.display()));
        }
        let mtime = meta
            .modified()
            .ok()
            .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(now, |d| Time::from_micros(d.as_micros() as i64));
        let clock = Clock::new(mtime);
        let mut f = tail::Follower::new(path, None, false);
        let mut lines = 0u64;
        let mut each = |l: &str| {
            lines += 1;
            if let Some(d) = scanner.line(l, &clock, mtime) {
                found(d);
            }
        };
        f.poll(&mut each)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        f.finish(&mut each);
        read.lines += lines;
        read.cut += f.stats().long_lines;
    }
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scanner(text: &str) -> Scanner {
        Scanner::new(Rules::parse(text, "t").unwrap(), 1000, None).unwrap()
    }

    const RULES: &str = r#"
[[jail]]
name = "ssh"
maxretry = 3
findtime = "10m"
allow = ["10\\..*", "192.0.2.0/24"]
deny = ["198.51.100.66"]

[[rule]]
name = "failed"
jail = "ssh"
pattern = '{LOG_PREFIX{sshd}} Failed password for .* from {HOST_IP} port'
"#;

    fn feed(s: &mut Scanner, lines: &[String]) -> Vec<Detection> {
        let clock = Clock::new(Time::from_micros(1_795_219_200_000_000));
        lines
            .iter()
            .filter_map(|l| s.line(l, &clock, Time::ZERO))
            .collect()
    }

    fn failed(t: &str, ip: &str) -> String {
        format!("Nov 20 {t} gw sshd[1]: Failed password for root from {ip} port 22 ssh2")
    }

    #[test]
    fn threshold_allow_and_deny() {
        let mut s = scanner(RULES);
        let lines: Vec<String> = [
            ("10:00:00", "203.0.113.1"),
            ("10:00:01", "10.1.1.1"),
            ("10:00:02", "203.0.113.1"),
            ("10:00:03", "10.1.1.1"),
            ("10:00:04", "198.51.100.66"),
            ("10:00:05", "10.1.1.1"),
            ("10:00:06", "192.0.2.5"),
            ("10:00:07", "192.0.2.5"),
            ("10:00:08", "192.0.2.5"),
            ("10:00:09", "203.0.113.1"),
        ]
        .iter()
        .map(|(t, ip)| failed(t, ip))
        .collect();
        let d = feed(&mut s, &lines);
        let got: Vec<(String, u32, bool)> = d
            .iter()
            .map(|d| (d.addr.to_string(), d.count, d.denied))
            .collect();
        assert_eq!(
            got,
            vec![
                ("198.51.100.66".to_string(), 1, true),
                ("203.0.113.1".to_string(), 3, false),
            ]
        );
        assert_eq!(d[1].rule, "failed");
        assert_eq!(d[1].jail, "ssh");
        assert_eq!(d[1].last - d[1].first, crate::time::Interval::from_secs(9));
        let st = s.stats();
        assert_eq!(
            (st.lines, st.matched, st.allowed, st.detections),
            (10, 10, 6, 2)
        );
    }

    #[test]
    fn log_time_not_wall_time() {
        // Three failures an hour apart never cross a 10-minute window, however fast
        // they are read.
        let mut s = scanner(RULES);
        let lines: Vec<String> = ["10:00:00", "11:00:00", "12:00:00", "13:00:00"]
            .iter()
            .map(|t| failed(t, "203.0.113.2"))
            .collect();
        assert!(feed(&mut s, &lines).is_empty());
    }

    #[test]
    fn since_skips_older_failures() {
        let rules = Rules::parse(RULES, "t").unwrap();
        let clock = Clock::new(Time::from_micros(1_795_219_200_000_000));
        let since = prefix::parse(&failed("10:00:02", "x"), &clock).ts;
        let mut s = Scanner::new(rules, 10, since).unwrap();
        let lines: Vec<String> = ["10:00:00", "10:00:01", "10:00:02", "10:00:03"]
            .iter()
            .map(|t| failed(t, "203.0.113.3"))
            .collect();
        assert!(feed(&mut s, &lines).is_empty());
        assert_eq!(s.stats().too_old, 2);
    }

    #[test]
    fn standard_input_lines_are_capped_as_they_are_read() {
        let long = "z".repeat(MAX_LINE * 3);
        let text = format!("a\n{long}\nb\n\nlast");
        let mut r = std::io::BufReader::with_capacity(64, text.as_bytes());
        let mut buf = Vec::new();
        let mut got = Vec::new();
        while let Some(cut) = read_line_capped(&mut r, &mut buf).unwrap() {
            got.push((buf.len(), cut));
        }
        assert_eq!(
            got,
            vec![
                (1, false),
                (MAX_LINE, true),
                (1, false),
                (0, false),
                (4, false)
            ]
        );
    }

    #[test]
    fn long_lines_are_cut_and_counted() {
        let mut s = scanner(RULES);
        let mut l = failed("10:00:00", "203.0.113.4");
        l.push_str(&"x".repeat(MAX_LINE * 4));
        let _ = feed(&mut s, &[l]);
        assert_eq!(s.stats().long_lines, 1);
        assert_eq!(s.stats().matched, 1);
    }
}
