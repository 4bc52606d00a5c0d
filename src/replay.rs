//! `catchd replay`: catch-and-release over trace files, on packet time.
//!
//! Network time is packet time, as when Zeek reads a trace. For each packet the replay
//! applies the drops that are due, moves the engine's clock to the packet's timestamp
//! (which fires block expiries and the forget sweep in timestamp order), queues a
//! sighting if the packet comes from a watched connection originator, and runs
//! [`ZEEK_ROUNDS_PER_PACKET`] rounds of events. Several files are merged by timestamp, as
//! Zeek does with several `-r` options.
//!
//! Drops are timed inputs: `ADDR[@TIME][=LOCATION]` on the command line or `ts,addr,location`
//! rows in a CSV file. A drop without a time happens at the first packet; `+DURATION`
//! counts from the first packet. Each drop runs like a script handler in the first
//! round of its moment.

use std::collections::VecDeque;
use std::fmt;
use std::io::{IsTerminal, Write as _};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::addr::{Addr, AddrError};
use crate::capture::{self, Frame, TraceFile};
use crate::cnr::{
    Action, Config, Engine, Intervals, Output, ZEEK_MAX_TIMER_EXPIRES, ZEEK_ROUNDS_PER_PACKET,
};
use crate::conn::Sighter;
use crate::packet::{self, LinkType, Sightings, SkipCounts};
use crate::time::{Interval, Time};
use crate::zeeklog::{self, Format, LogSet, LogThread};

/// When a drop happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    /// At the first packet's time.
    FirstPacket,
    /// At an absolute time.
    At(Time),
    /// This long after the first packet.
    AfterFirst(Interval),
}

/// A timed catch-and-release drop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DropSpec {
    /// The address.
    pub addr: Addr,
    /// When.
    pub when: When,
    /// The location text (may be empty). Shared: a list gives most rows the same one.
    pub location: Arc<str>,
}

/// Why a drop specification is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DropSpecError {
    /// Bad address (or a subnet).
    #[error(transparent)]
    Addr(#[from] AddrError),
    /// Bad time.
    #[error("bad drop time: {0}")]
    Time(#[from] crate::time::ParseError),
}

fn parse_when(s: &str) -> Result<When, DropSpecError> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(When::FirstPacket);
    }
    if let Some(rel) = s.strip_prefix('+') {
        return Ok(When::AfterFirst(rel.parse()?));
    }
    Ok(When::At(s.parse()?))
}

impl FromStr for DropSpec {
    type Err = DropSpecError;

    /// `ADDR[@TIME][=LOCATION]`, where TIME is epoch seconds, RFC 3339, or `+DURATION`
    /// after the first packet.
    fn from_str(s: &str) -> Result<DropSpec, DropSpecError> {
        let (head, location) = s.split_once('=').unwrap_or((s, ""));
        let (addr, when) = match head.split_once('@') {
            Some((a, t)) => (a, parse_when(t)?),
            None => (head, When::FirstPacket),
        };
        Ok(DropSpec {
            addr: addr.parse()?,
            when,
            location: location.into(),
        })
    }
}

/// Reads a drops CSV: columns `ts,addr,location` (a header row with those names is
/// skipped; `#` starts a comment line; `ts` may be empty, epoch seconds, RFC 3339 or
/// `+DURATION`; `location` may be missing).
///
/// # Errors
/// [`Error::DropsCsv`] naming the line and the problem.
pub fn read_drops_csv(path: &Path) -> Result<Vec<DropSpec>, Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::DropsCsv {
        path: path.to_path_buf(),
        line: 0,
        msg: e.to_string(),
    })?;
    parse_drops_csv(&bytes, path, SPLIT_DROPS_CSV)
}

/// From this size on, a drops file without quotes is read in two halves at once.
const SPLIT_DROPS_CSV: usize = 256 * 1024;

/// [`read_drops_csv`] on the file's bytes. A file of at least `split` bytes with no quote
/// in it is read in two halves, on two threads: without quotes every line break ends a
/// record, so a cut after one splits no record. The halves' results are joined as one read
/// would have made them, with the first error by line winning.
fn parse_drops_csv(bytes: &[u8], path: &Path, split: usize) -> Result<Vec<DropSpec>, Error> {
    let cut = (bytes.len() >= split && !bytes.contains(&b'"'))
        .then(|| {
            let mid = bytes.len() / 2;
            bytes[mid..]
                .iter()
                .position(|&b| b == b'\n')
                .map(|i| mid + i + 1)
        })
        .flatten()
        .filter(|&c| c < bytes.len());
    let Some(cut) = cut else {
        return parse_drops_part(bytes, 0..bytes.len(), path, true);
    };
    let (head, tail) = (0..cut, cut..bytes.len());
    let (first, second) = std::thread::scope(|s| {
        let second = std::thread::Builder::new()
            .name("drops-csv".into())
            .spawn_scoped(s, || parse_drops_part(bytes, tail.clone(), path, false));
        let first = parse_drops_part(bytes, head, path, true);
        let second = match second {
            Ok(h) => h.join().ok(),
            Err(_) => None,
        };
        (first, second)
    });
    let mut out = first?;
    if out.is_empty() {
        // Nothing but comments and blank lines before the cut: a header row may still
        // come, so the rest is read as the start of the file.
        return parse_drops_part(bytes, tail, path, true);
    }
    let rest = match second {
        Some(rest) => rest?,
        // The thread could not be started or did not finish: read the half here.
        None => parse_drops_part(bytes, tail, path, false)?,
    };
    out.extend(rest);
    Ok(out)
}

/// Reads the records of `file[part]`, a run of whole lines of a drops file; `at_start`
/// when no record came before it (a header may come).
fn parse_drops_part(
    file: &[u8],
    part: std::ops::Range<usize>,
    path: &Path,
    at_start: bool,
) -> Result<Vec<DropSpec>, Error> {
    let start = part.start;
    let bytes = &file[part];
    // csv's own line numbers skip comment lines, so lines are counted here, in the whole
    // file up to where the bad record starts (only for an error).
    let err = |pos: Option<&csv::Position>, msg: String| Error::DropsCsv {
        path: path.to_path_buf(),
        line: pos.map_or(0, |p| {
            let at = usize::try_from(p.byte()).map_or(bytes.len(), |b| b.min(bytes.len()));
            lines_in(&file[..start + record_start(bytes, at)]) + 1
        }),
        msg,
    };
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .comment(Some(b'#'))
        .from_reader(bytes);
    // Rows are at least "x,y" and a line break, most much longer.
    let mut out: Vec<DropSpec> = Vec::with_capacity(bytes.len() / 16);
    let mut rec = csv::StringRecord::new();
    let mut location: Arc<str> = Arc::from("");
    loop {
        match rdr.read_record(&mut rec) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(err(e.position(), e.to_string())),
        }
        let line = rec.position();
        if rec.iter().all(str::is_empty) {
            continue;
        }
        if at_start && out.is_empty() && rec.get(0) == Some("ts") && rec.get(1) == Some("addr") {
            continue;
        }
        if rec.len() < 2 {
            return Err(err(line, "expected ts,addr[,location]".into()));
        }
        let when = parse_when(&rec[0]).map_err(|e| err(line, e.to_string()))?;
        let addr: Addr = rec[1]
            .parse()
            .map_err(|e: AddrError| err(line, e.to_string()))?;
        let here = rec.get(2).unwrap_or("");
        if *location != *here {
            location = Arc::from(here);
        }
        out.push(DropSpec {
            addr,
            when,
            location: Arc::clone(&location),
        });
    }
    Ok(out)
}

/// Where the record csv reports at byte `at` starts: csv's position is where it began
/// reading, before the blank and comment lines it skipped on the way (a comment runs to a
/// `\n`, as csv reads it).
fn record_start(bytes: &[u8], mut at: usize) -> usize {
    while let Some(&b) = bytes.get(at) {
        match b {
            b'\r' | b'\n' => at += 1,
            b'#' => {
                at += bytes[at..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .unwrap_or(bytes.len() - at);
            }
            _ => break,
        }
    }
    at
}

/// How many line breaks `bytes` holds, as csv reads them: `\r\n`, `\n` or a lone `\r`.
fn lines_in(bytes: &[u8]) -> u64 {
    let mut n = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\n' || (b == b'\r' && bytes.get(i + 1) != Some(&b'\n')) {
            n += 1;
        }
    }
    n
}

/// Everything a replay needs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Trace files, merged by timestamp.
    pub files: Vec<PathBuf>,
    /// Timed drops.
    pub drops: Vec<DropSpec>,
    /// Timed unblocks (`location` is the reason), placed in time as drops are.
    pub unblocks: Vec<DropSpec>,
    /// The escalation ladder.
    pub intervals: Intervals,
    /// Forget-sweep period.
    pub sweep_interval: Interval,
    /// Log INFO when a blocked address is seen.
    pub warn_blocked: bool,
    /// What counts as a sighting.
    pub sightings: Sightings,
    /// Catch-and-release of networks (`None`: off, as in Zeek).
    pub networks: Option<crate::cnr::Networks>,
    /// Where the logs go.
    pub log_dir: PathBuf,
    /// TSV or JSON.
    pub format: Format,
    /// The built-in backend's name in the `plugin` columns.
    pub plugin_name: String,
    /// Draw a progress line on stderr (only if it is a terminal).
    pub progress: bool,
}

/// Why a replay failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A trace could not be opened.
    #[error(transparent)]
    Capture(#[from] capture::Error),
    /// A log could not be written.
    #[error(transparent)]
    Log(#[from] zeeklog::Error),
    /// A bad drops CSV.
    #[error("{path}:{line}: {msg}")]
    DropsCsv {
        /// The file.
        path: PathBuf,
        /// The line (1-based; 0 if unknown).
        line: u64,
        /// What is wrong.
        msg: String,
    },
}

/// What a replay did.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Trace files read.
    pub files: usize,
    /// Packets read.
    pub packets: u64,
    /// Captured bytes.
    pub bytes: u64,
    /// Skipped frames by reason.
    pub skips: SkipCounts,
    /// Sightings of watched addresses.
    pub sightings: u64,
    /// Connections followed through Zeek's life cycle (a watched end when they started),
    /// and those not followed because the table was full.
    pub connections: (u64, u64),
    /// Connection timers that came due (Zeek's inactivity, expire, attempt, reset and
    /// delete timers of the followed connections).
    pub conn_timers: u64,
    /// Catch-and-release log lines by action (indexed like [`Action::ALL`]).
    pub actions: [u64; 7],
    /// The same for networks (catch-and-release of networks).
    pub net_actions: [u64; 7],
    /// `Reporter::error` messages (e.g. drops no backend took).
    pub errors: u64,
    /// Drops that could not be placed in time (no packets to anchor them).
    pub drops_skipped: usize,
    /// Damaged trace files, with the message.
    pub damaged: Vec<String>,
    /// First and last packet times.
    pub span: Option<(Time, Time)>,
    /// Wall-clock time of the run.
    pub wall: Duration,
    /// The part of `wall` spent applying the drops made at the first packet (and writing
    /// their log lines) and scheduling the later ones.
    pub drops_wall: Duration,
    /// Where the logs are.
    pub log_dir: PathBuf,
    /// The log format.
    pub json: bool,
}

impl Summary {
    /// The count of one action.
    pub fn action(&self, a: Action) -> u64 {
        self.actions[Action::ALL.iter().position(|x| *x == a).unwrap_or(0)]
    }

    /// Packets per second of wall time.
    pub fn packets_per_sec(&self) -> f64 {
        let s = self.wall.as_secs_f64();
        if s > 0.0 {
            self.packets as f64 / s
        } else {
            0.0
        }
    }

    /// Packets per second of the time not spent applying drops.
    pub fn packet_phase_per_sec(&self) -> f64 {
        let s = self.wall.saturating_sub(self.drops_wall).as_secs_f64();
        if s > 0.0 {
            self.packets as f64 / s
        } else {
            0.0
        }
    }
}

fn human(n: f64) -> String {
    if n >= 1e9 {
        format!("{:.2}G", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.2}M", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1}k", n / 1e3)
    } else {
        format!("{n:.0}")
    }
}

/// A time as `2023-11-14 22:13:20.000000 UTC`.
fn utc(t: Time) -> String {
    chrono::DateTime::from_timestamp_micros(t.as_micros()).map_or_else(
        || t.to_string(),
        |d| d.format("%Y-%m-%d %H:%M:%S%.6f UTC").to_string(),
    )
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "replayed     {} packets, {}B from {} file{} in {:.3} s ({} packets/s)",
            self.packets,
            human(self.bytes as f64),
            self.files,
            if self.files == 1 { "" } else { "s" },
            self.wall.as_secs_f64(),
            human(self.packets_per_sec())
        )?;
        if let Some((a, b)) = self.span {
            writeln!(
                f,
                "trace time   {} .. {} ({} s)",
                utc(a),
                utc(b),
                (b - a).as_secs_f64()
            )?;
        }
        let skipped: u64 = self.skips.nonzero().map(|(_, n)| n).sum();
        write!(f, "skipped      {skipped}")?;
        let parts: Vec<String> = self
            .skips
            .nonzero()
            .map(|(s, n)| format!("{s} {n}"))
            .collect();
        if !parts.is_empty() {
            write!(f, " ({})", parts.join(", "))?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "sightings    {} (connection events of watched originators)",
            self.sightings
        )?;
        if self.connections != (0, 0) {
            write!(f, "connections  {} followed", self.connections.0)?;
            if self.connections.1 > 0 {
                write!(f, ", {} not (the table was full)", self.connections.1)?;
            }
            write!(f, "; {} timers came due", self.conn_timers)?;
            writeln!(f)?;
        }
        writeln!(
            f,
            "drops        {} (added {}), re-drops {}, dropped {}, unblocked {}, forgotten {}, info {}",
            self.action(Action::DropRequested),
            self.action(Action::Added),
            self.action(Action::SeenAgain),
            self.action(Action::Dropped),
            self.action(Action::Unblock),
            self.action(Action::Forgotten),
            self.action(Action::Info),
        )?;
        if self.net_actions.iter().any(|n| *n > 0) {
            let n =
                |a: Action| self.net_actions[Action::ALL.iter().position(|x| *x == a).unwrap_or(0)];
            writeln!(
                f,
                "networks     {} (added {}), re-drops {}, dropped {}, unblocked {}, forgotten {}, info {}",
                n(Action::DropRequested),
                n(Action::Added),
                n(Action::SeenAgain),
                n(Action::Dropped),
                n(Action::Unblock),
                n(Action::Forgotten),
                n(Action::Info),
            )?;
        }
        let applied = self.action(Action::DropRequested) + self.action(Action::Added);
        if applied > 0 {
            writeln!(
                f,
                "timing       {:.3} s applying drops, {:.3} s on packets ({} packets/s)",
                self.drops_wall.as_secs_f64(),
                self.wall.saturating_sub(self.drops_wall).as_secs_f64(),
                human(self.packet_phase_per_sec())
            )?;
        }
        if self.errors > 0 {
            writeln!(f, "errors       {}", self.errors)?;
        }
        if self.drops_skipped > 0 {
            writeln!(
                f,
                "not applied  {} drops (no packet to time them by)",
                self.drops_skipped
            )?;
        }
        for d in &self.damaged {
            writeln!(f, "damaged      {d}")?;
        }
        write!(
            f,
            "logs         {} ({})",
            self.log_dir.display(),
            if self.json { "JSON" } else { "TSV" }
        )
    }
}

/// A progress line on stderr for long replays.
struct Progress {
    total: u64,
    done: u64,
    started: Instant,
    last: Instant,
    drawn: bool,
}

impl Progress {
    /// Only for inputs of at least this size, and only on a terminal.
    const MIN_BYTES: u64 = 64 << 20;

    fn new(total: u64, wanted: bool) -> Option<Progress> {
        (wanted && total >= Progress::MIN_BYTES && std::io::stderr().is_terminal()).then(|| {
            let now = Instant::now();
            Progress {
                total,
                done: 0,
                started: now,
                last: now,
                drawn: false,
            }
        })
    }

    fn tick(&mut self, packets: u64) {
        let now = Instant::now();
        if now.duration_since(self.last) < Duration::from_millis(200) {
            return;
        }
        self.last = now;
        let frac = (self.done as f64 / self.total as f64).min(1.0);
        let width = 30;
        let filled = (frac * width as f64) as usize;
        let rate = packets as f64 / now.duration_since(self.started).as_secs_f64().max(1e-9);
        eprint!(
            "\r[{}{}] {:3.0}%  {} packets  {} packets/s ",
            "#".repeat(filled),
            "-".repeat(width - filled),
            frac * 100.0,
            human(packets as f64),
            human(rate)
        );
        let _ = std::io::stderr().flush();
        self.drawn = true;
    }

    fn clear(&self) {
        if self.drawn {
            eprint!("\r{}\r", " ".repeat(78));
        }
    }
}

/// One frame held back while several files are merged.
struct Pending {
    ts: Time,
    wire_len: u32,
    data: Vec<u8>,
}

/// Drives an engine with packets and drops on packet time, writing its logs.
pub struct Replay {
    engine: Engine,
    /// The logs, written on a thread of their own.
    logs: LogThread,
    /// An empty queue to give the engine when its outputs are taken.
    spare: VecDeque<Output>,
    sighter: Sighter,
    /// Every drop, until the first packet places them in time.
    unanchored: Vec<DropSpec>,
    /// Every unblock, likewise.
    unblocks: Vec<DropSpec>,
    summary: Summary,
}

impl Replay {
    /// Builds the engine (built-in backend at priority 0) and creates the logs.
    ///
    /// # Errors
    /// [`Error::Log`] if the logs cannot be created.
    pub fn new(opts: Options) -> Result<Replay, Error> {
        let cfg = Config {
            intervals: opts.intervals,
            warn_blocked: opts.warn_blocked,
            sweep_interval: opts.sweep_interval,
            max_timer_expires: Some(ZEEK_MAX_TIMER_EXPIRES),
            // A replay watches exactly the dropped addresses. A filter sized for them stays
            // in cache while the trace streams through it.
            watch_capacity: opts.drops.len(),
            start: Time::ZERO,
            networks: opts.networks,
            // No cluster to publish to.
            cluster_outputs: false,
        };
        let engine = Engine::with_accepting_backend(cfg, &opts.plugin_name);
        let logs = LogThread::spawn(LogSet::create_deferred(&opts.log_dir, opts.format)?)?;
        let mut r = Replay {
            engine,
            logs,
            spare: VecDeque::new(),
            sighter: Sighter::new(opts.sightings),
            unanchored: opts.drops,
            unblocks: opts.unblocks,
            summary: Summary {
                log_dir: opts.log_dir,
                json: opts.format == Format::Json,
                ..Summary::default()
            },
        };
        r.hand_over()?;
        Ok(r)
    }

    /// Places the drops in time once the first packet is seen, as the driver of a Zeek
    /// run would: a drop at or before the first packet is made in that step, in the order
    /// given, like calls from one `network_time_init` handler; a later one is a scheduled
    /// event ([`Engine::schedule_drop`]), made at the first packet that reaches its time,
    /// with that packet's time.
    #[inline(never)]
    fn anchor(&mut self, first: Time) -> Result<(), Error> {
        let started = Instant::now();
        let n_drops = self.unanchored.len();
        let mut all: Vec<(Time, usize)> = self
            .unanchored
            .iter()
            .chain(&self.unblocks)
            .enumerate()
            .map(|(i, d)| {
                let t = match d.when {
                    When::FirstPacket => first,
                    When::AfterFirst(i) => first + i,
                    When::At(t) => t,
                };
                (t.max(first), i)
            })
            .collect();
        // Stable: at one time, drops before unblocks, each in the order given.
        all.sort_by_key(|(t, _)| *t);
        let mut specs = std::mem::take(&mut self.unanchored);
        specs.append(&mut self.unblocks);
        self.engine.advance(first);
        let at_first = all.iter().take_while(|(t, _)| *t == first).count();
        self.engine.reserve_drops(at_first);
        let mut made = 0;
        for (k, &(t, i)) in all.iter().enumerate() {
            // The tables' slots for a drop a few ahead start loading now.
            if let Some(&(ahead_t, ahead)) = all.get(k + PREFETCH_AHEAD)
                && ahead_t == first
                && ahead < n_drops
            {
                self.engine.prefetch_drop(specs[ahead].addr);
            }
            let d = &specs[i];
            match (t == first, i < n_drops) {
                (true, true) => {
                    self.engine.drop_catch_release(first, d.addr, &d.location);
                    made += 1;
                    // Lines already made are final: hand them to the writer as they come,
                    // so the output queue stays small however many drops there are.
                    if made % BATCH == 0 {
                        self.flush()?;
                    }
                }
                (true, false) => {
                    self.engine
                        .unblock_catch_release(first, d.addr, &d.location);
                    made += 1;
                }
                (false, true) => self.engine.schedule_drop(t, d.addr, &d.location),
                (false, false) => self.engine.schedule_unblock(t, d.addr, &d.location),
            }
        }
        if made > 0 {
            // The calls ran as a handler in the first round of this moment. Their answers
            // are written out as they come, as the calls' lines were.
            let Replay {
                engine,
                logs,
                spare,
                summary,
                ..
            } = self;
            let mut failed = None;
            engine.drain_with(ZEEK_ROUNDS_PER_PACKET - 1, |e, _| {
                if failed.is_none() && e.pending_outputs() >= BATCH {
                    failed = Replay::hand_over_from(e, logs, spare, summary).err();
                }
            });
            if let Some(e) = failed {
                return Err(e);
            }
        }
        self.summary.drops_wall += started.elapsed();
        Ok(())
    }

    /// Processes one packet.
    ///
    /// # Errors
    /// [`Error::Log`] if a log line cannot be written.
    #[inline(always)]
    pub fn packet(&mut self, link: LinkType, f: Frame<'_>) -> Result<(), Error> {
        match &mut self.summary.span {
            Some((_, last)) => *last = (*last).max(f.ts),
            None => {
                self.summary.span = Some((f.ts, f.ts));
                self.anchor(f.ts)?;
            }
        }
        self.summary.packets += 1;
        self.summary.bytes += f.data.len() as u64;
        let Replay {
            engine,
            sighter,
            summary,
            ..
        } = self;
        // Connection timers and the engine's fire in deadline order: a connection's event
        // queues behind the engine timers due before it.
        let mut from_timers = 0u64;
        sighter.advance(f.ts, |at, a, _| {
            engine.advance_until(f.ts, at);
            if engine.queue_sighting(a) {
                from_timers += 1;
            }
        });
        engine.advance(f.ts);
        let mut rounds = ZEEK_ROUNDS_PER_PACKET;
        match packet::parse(link, f.data) {
            Ok(obs) => {
                let mut seen = [Addr::from_v6([0; 16]); MAX_PACKET_SIGHTINGS];
                let mut n = 0;
                let watch = engine.watched();
                sighter.packet(
                    f.ts,
                    &obs,
                    watch.changes(),
                    |a| watch.may_contain(a),
                    |a| watch.contains(a),
                    |a, _| {
                        if n < seen.len() {
                            seen[n] = a;
                            n += 1;
                        }
                    },
                );
                if n == 1 && from_timers == 0 {
                    let s = engine.sighting(f.ts, seen[0]);
                    if s.watched() {
                        summary.sightings += 1;
                        rounds = s.rounds(rounds);
                    }
                } else {
                    for a in &seen[..n] {
                        if engine.queue_sighting(*a) {
                            summary.sightings += 1;
                        }
                    }
                }
            }
            Err(skip) => summary.skips.add(skip),
        }
        summary.sightings += from_timers;
        if self.engine.has_pending_events() {
            self.engine.drain(rounds);
        }
        self.flush()
    }

    /// Hands the engine's outputs to the log writer once a batch has gathered.
    #[inline]
    fn flush(&mut self) -> Result<(), Error> {
        if self.engine.pending_outputs() >= BATCH {
            self.hand_over()?;
        }
        Ok(())
    }

    /// Hands every waiting output to the log writer.
    #[inline(never)]
    fn hand_over(&mut self) -> Result<(), Error> {
        Replay::hand_over_from(
            &mut self.engine,
            &mut self.logs,
            &mut self.spare,
            &mut self.summary,
        )
    }

    /// Takes the engine's outputs, counts them in `summary` and hands them to the log
    /// writer.
    fn hand_over_from(
        engine: &mut Engine,
        logs: &mut LogThread,
        spare: &mut VecDeque<Output>,
        summary: &mut Summary,
    ) -> Result<(), Error> {
        if !engine.has_output() {
            return Ok(());
        }
        let batch = engine.swap_outputs(std::mem::take(spare));
        for o in &batch {
            match o {
                Output::CatchRelease(r) => {
                    if let Some(i) = Action::ALL.iter().position(|a| *a == r.action) {
                        summary.actions[i] += 1;
                    }
                }
                Output::CatchReleaseNet(r) => {
                    if let Some(i) = Action::ALL.iter().position(|a| *a == r.action) {
                        summary.net_actions[i] += 1;
                    }
                }
                Output::Error(msg) => {
                    summary.errors += 1;
                    tracing::warn!("{msg}");
                }
                _ => {}
            }
        }
        *spare = logs.send(batch)?;
        Ok(())
    }

    /// Ends as Zeek does at the end of a trace (the drops still scheduled are made at the
    /// last packet's time; see [`Engine::finish`]), and closes the logs.
    ///
    /// # Errors
    /// [`Error::Log`] if the logs cannot be written.
    pub fn finish(mut self) -> Result<Summary, Error> {
        if self.summary.span.is_none() {
            self.summary.drops_skipped = self.unanchored.len();
            if !self.unanchored.is_empty() {
                tracing::warn!(
                    "{} drops are timed by the first packet, but there are no packets; not applied",
                    self.unanchored.len()
                );
            }
        }
        let Replay {
            engine,
            sighter,
            summary,
            ..
        } = &mut self;
        // At the end, Zeek's pending timers run first, then its connections' end.
        engine.finish_then(|engine| {
            if let Some(c) = sighter.conns() {
                let st = c.stats();
                summary.connections = (st.tracked, st.untracked_full);
                summary.conn_timers = st.timers_fired;
            }
            sighter.finish(|a, _| {
                if engine.queue_sighting(a) {
                    summary.sightings += 1;
                }
            });
        });
        self.hand_over()?;
        self.logs.close()?;
        let Replay {
            engine,
            sighter,
            unanchored,
            unblocks,
            summary,
            ..
        } = self;
        // The tables of a large replay take a while to free: the caller has its answer
        // that much sooner when they are freed on another thread (and a process that
        // exits meanwhile leaves them to the operating system).
        let tables = (engine, sighter, unanchored, unblocks);
        let _ = std::thread::Builder::new()
            .name("replay-free".into())
            .spawn(move || drop(tables));
        Ok(summary)
    }
}

/// How many drops ahead [`Replay::anchor`] asks for the table slots a drop will write
/// ([`Engine::prefetch_drop`]): far enough that they arrive in time (a drop takes about
/// as long as a few cache misses), near enough that they are still in cache when used.
const PREFETCH_AHEAD: usize = 8;

/// How many outputs gather before they go to the log writer: enough that handing over is
/// rare, few enough that a batch stays in cache.
const BATCH: usize = 1024;

/// The most sightings one packet makes (`new_connection` and an event of the same
/// packet, e.g. `connection_established` for a first SYN-ACK whose roles were flipped).
const MAX_PACKET_SIGHTINGS: usize = 4;

/// Replays `opts.files` and writes the three NetControl logs.
///
/// # Errors
/// [`Error::Capture`] if a file cannot be opened (before anything is written), or
/// [`Error::Log`] on a write error. A file damaged part way is not an error: it is read up
/// to the damage, with a warning, and listed in the summary.
pub fn run(opts: Options) -> Result<Summary, Error> {
    let mut files = opts
        .files
        .iter()
        .map(|p| TraceFile::open(p))
        .collect::<Result<Vec<_>, _>>()?;
    let total: u64 = files.iter().map(TraceFile::size).sum();
    let mut progress = Progress::new(total, opts.progress);
    let started = Instant::now();
    let mut replay = Replay::new(opts)?;
    replay.summary.files = files.len();
    let mut damaged = Vec::new();
    if files.len() == 1 {
        // The common case, read in place without copying frames.
        let file = &mut files[0];
        let link = file.link();
        let mut failed = None;
        file.for_each_frame(|frame| {
            if let Err(e) = replay.packet(link, frame) {
                failed = Some(e);
                return false;
            }
            if replay.summary.packets & 0xffff == 0
                && let Some(p) = progress.as_mut()
            {
                p.done = replay.summary.bytes + 16 * replay.summary.packets;
                p.tick(replay.summary.packets);
            }
            true
        });
        if let Some(e) = failed {
            return Err(e);
        }
        if let Some(e) = file.damage() {
            damaged.push(e.to_string());
        }
    } else {
        merge(&mut files, &mut replay, &mut damaged, &mut progress)?;
    }
    if let Some(p) = &progress {
        p.clear();
    }
    for d in &damaged {
        tracing::warn!("{d}; processed the packets before it");
    }
    replay.summary.damaged = damaged;
    let mut summary = replay.finish()?;
    summary.wall = started.elapsed();
    Ok(summary)
}

/// Reads several files in timestamp order (ties go to the file given first).
fn merge(
    files: &mut [TraceFile],
    replay: &mut Replay,
    damaged: &mut Vec<String>,
    progress: &mut Option<Progress>,
) -> Result<(), Error> {
    fn refill(f: &mut TraceFile, slot: &mut Option<Pending>, damaged: &mut Vec<String>) {
        match f.next_frame() {
            Some(frame) => {
                let p = slot.get_or_insert_with(|| Pending {
                    ts: frame.ts,
                    wire_len: 0,
                    data: Vec::with_capacity(2048),
                });
                p.ts = frame.ts;
                p.wire_len = frame.wire_len;
                p.data.clear();
                p.data.extend_from_slice(frame.data);
            }
            None => {
                if let Some(e) = f.damage() {
                    damaged.push(e.to_string());
                }
                *slot = None;
            }
        }
    }
    let mut pending: Vec<Option<Pending>> = Vec::with_capacity(files.len());
    for f in files.iter_mut() {
        let mut slot = None;
        refill(f, &mut slot, damaged);
        pending.push(slot);
    }
    loop {
        let next = pending
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.as_ref().map(|p| (p.ts, i)))
            .min();
        let Some((_, i)) = next else {
            return Ok(());
        };
        if let Some(p) = &pending[i] {
            let frame = Frame {
                ts: p.ts,
                data: &p.data,
                wire_len: p.wire_len,
            };
            replay.packet(files[i].link(), frame)?;
        }
        refill(&mut files[i], &mut pending[i], damaged);
        if replay.summary.packets & 0xffff == 0
            && let Some(p) = progress.as_mut()
        {
            p.done = replay.summary.bytes + 16 * replay.summary.packets;
            p.tick(replay.summary.packets);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_specs_parse() {
        let d: DropSpec = "10.0.0.1".parse().unwrap();
        assert_eq!(d.when, When::FirstPacket);
        assert_eq!(&*d.location, "");
        let d: DropSpec = "2001:db8::1@1254722767.5=scan=wide".parse().unwrap();
        assert_eq!(d.addr.to_string(), "2001:db8::1");
        assert_eq!(d.when, When::At(Time::from_timeval(1254722767, 500_000)));
        assert_eq!(&*d.location, "scan=wide");
        let d: DropSpec = "10.0.0.1@+10m=later".parse().unwrap();
        assert_eq!(d.when, When::AfterFirst(Interval::from_secs(600)));
        assert!(matches!(
            "10.0.0.0/8".parse::<DropSpec>(),
            Err(DropSpecError::Addr(AddrError::Subnet(_)))
        ));
        assert!(matches!(
            "10.0.0.1@yesterday".parse::<DropSpec>(),
            Err(DropSpecError::Time(_))
        ));
    }

    #[test]
    fn drops_csv_reads_header_comments_and_quotes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.csv");
        std::fs::write(
            &p,
            "ts,addr,location\n# a comment\n1254722767.5,10.0.0.1,\"scan, wide\"\n,2001:db8::2\n+5s,10.0.0.3,later\n",
        )
        .unwrap();
        let d = read_drops_csv(&p).unwrap();
        assert_eq!(d.len(), 3);
        assert_eq!(&*d[0].location, "scan, wide");
        assert_eq!(d[1].when, When::FirstPacket);
        assert_eq!(d[2].when, When::AfterFirst(Interval::from_secs(5)));
        std::fs::write(&p, "ts,addr\n1,10.0.0.0/24\n").unwrap();
        let e = read_drops_csv(&p).unwrap_err().to_string();
        assert!(e.ends_with(":2: `10.0.0.0/24` is a subnet: catch-and-release works on single addresses (a /32 or /128), not subnets"), "{e}");
        // Lines are the file's, comment and blank lines and every kind of line end
        // counted.
        std::fs::write(
            &p,
            "# one\r\n# two\n\n,10.0.0.1\r,10.0.0.2\n# three\nts,addr\n",
        )
        .unwrap();
        let e = read_drops_csv(&p).unwrap_err().to_string();
        assert!(e.contains("d.csv:7: bad drop time"), "{e}");
    }

    /// A drops file as lines of pieces: rows good and bad, headers, comments, blank lines,
    /// and the three line endings.
    fn drops_file() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let row = prop_oneof![
            4 => (
                prop_oneof![Just(""), Just("1254722767.5"), Just("+5s"), Just("2023-11-14T22:13:20Z")],
                prop_oneof![Just("10.0.0.1"), Just("2001:db8::2"), Just("198.18.0.9"), Just("::ffff:10.1.2.3")],
                prop_oneof![Just(""), Just(",bench"), Just(",scan wide"), Just(",x,extra")],
            )
                .prop_map(|(t, a, l)| format!("{t},{a}{l}")),
            1 => Just("ts,addr,location".to_string()),
            1 => Just("# a comment, with commas".to_string()),
            1 => Just(String::new()),
            1 => Just(",,".to_string()),
            1 => prop_oneof![
                Just("1,10.0.0.0/24".to_string()),
                Just("yesterday,10.0.0.1".to_string()),
                Just("only-one-field".to_string()),
                Just("1,not-an-address".to_string()),
            ],
        ];
        let end = prop_oneof![8 => Just("\n"), 1 => Just("\r\n"), 1 => Just("\r")];
        proptest::collection::vec((row, end), 0..40).prop_map(|lines| {
            let mut f = Vec::new();
            for (row, end) in lines {
                f.extend_from_slice(row.as_bytes());
                f.extend_from_slice(end.as_bytes());
            }
            f
        })
    }

    proptest::proptest! {
        /// Read in two halves, a file gives what one read gives: the same drops, or the
        /// same first error on the same line.
        #[test]
        fn a_split_read_of_a_drops_file_is_one_read(file in drops_file()) {
            let path = Path::new("d.csv");
            let whole = parse_drops_csv(&file, path, usize::MAX);
            let split = parse_drops_csv(&file, path, 0);
            match (whole, split) {
                (Ok(a), Ok(b)) => proptest::prop_assert_eq!(a, b),
                (Err(a), Err(b)) => proptest::prop_assert_eq!(a.to_string(), b.to_string()),
                (a, b) => proptest::prop_assert!(false, "{:?} vs {:?}", a, b),
            }
        }
    }

    #[test]
    fn a_large_drops_file_is_read_in_halves_with_the_right_line_numbers() {
        let mut f = String::from("ts,addr,location\n");
        for i in 0..40_000u32 {
            f.push_str(&format!(
                ",10.{}.{}.{},bench\n",
                i >> 16,
                (i >> 8) & 255,
                i & 255
            ));
        }
        f.push_str(",10.0.0.300,bad\n");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.csv");
        std::fs::write(&p, &f[..f.len() - ",10.0.0.300,bad\n".len()]).unwrap();
        assert!(std::fs::metadata(&p).unwrap().len() as usize >= SPLIT_DROPS_CSV);
        let d = read_drops_csv(&p).unwrap();
        assert_eq!(d.len(), 40_000);
        assert_eq!(d[39_999].addr, "10.0.156.63".parse().unwrap());
        std::fs::write(&p, &f).unwrap();
        let e = read_drops_csv(&p).unwrap_err().to_string();
        assert!(e.contains(":40002: "), "{e}");
    }
}
