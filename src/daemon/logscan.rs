//! The log-scan thread of `catchd run`: follows the configured files, runs the lines
//! through a [`Scanner`], and hands detections and file positions to the core in one
//! command, which acts on the detections first and then stores the positions (so a
//! position is never durable before what was found up to it).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::Sender;

use crate::config::Config;
use crate::scan::prefix::Clock;
use crate::scan::rules::Rules;
use crate::scan::tail::{Follower, Position};
use crate::scan::{Detection, Scanner};
use crate::time::Time;

use super::core::Command;

/// The scan thread's counters.
#[derive(Debug, Default)]
pub struct ScanMetrics {
    /// Lines read.
    pub lines: AtomicU64,
    /// Lines a rule matched.
    pub matched: AtomicU64,
    /// Addresses that crossed a threshold.
    pub detections: AtomicU64,
    /// Addresses evicted for lack of room.
    pub evictions: AtomicU64,
    /// Lines cut at the length limit.
    pub long_lines: AtomicU64,
    /// Rotations and truncations seen.
    pub rotations: AtomicU64,
    /// Read errors.
    pub errors: AtomicU64,
}

impl ScanMetrics {
    /// Prometheus text.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        for (name, help, v) in [
            ("lines_total", "log lines read", &self.lines),
            ("matched_total", "log lines a rule matched", &self.matched),
            (
                "detections_total",
                "addresses that crossed a jail's threshold",
                &self.detections,
            ),
            (
                "evictions_total",
                "addresses evicted from the failure counts for lack of room",
                &self.evictions,
            ),
            (
                "long_lines_total",
                "log lines cut at the length limit",
                &self.long_lines,
            ),
            (
                "rotations_total",
                "log rotations and truncations seen",
                &self.rotations,
            ),
            ("read_errors_total", "log file read errors", &self.errors),
        ] {
            let _ = writeln!(
                out,
                "# HELP catchd_scan_{name} {help}\n# TYPE catchd_scan_{name} counter\ncatchd_scan_{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
    }
}

/// Detections and where each file was read to.
pub struct Batch {
    /// Addresses to act on.
    pub detections: Vec<Detection>,
    /// Positions to store after acting on them.
    pub positions: Vec<(String, Position)>,
}

/// Starts the thread if files are configured.
///
/// # Errors
/// The rule file cannot be read or the rules compiled (already checked with the config).
pub fn spawn(
    config: &Config,
    stored: &[(String, Position)],
    commands: Sender<Command>,
    stop: Arc<AtomicBool>,
    metrics: Arc<ScanMetrics>,
) -> Result<Option<JoinHandle<()>>, String> {
    let sc = &config.scan;
    if sc.files.is_empty() {
        return Ok(None);
    }
    let mut rules = match &sc.rules {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
            Rules::parse(&text, &p.display().to_string()).map_err(|e| e.0)?
        }
        None => Rules::bundled(),
    };
    if !sc.jails.is_empty() {
        rules.select(&sc.jails).map_err(|e| e.0)?;
    }
    let mut scanner = Scanner::new(rules, sc.max_addresses, None).map_err(|e| e.0)?;
    let mut followers: Vec<(String, Follower)> = sc
        .files
        .iter()
        .map(|p: &PathBuf| {
            let key = p.display().to_string();
            let resume = stored
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.clone());
            let f = Follower::new(p, resume.clone(), !sc.from_start && resume.is_none());
            if resume.is_some() {
                tracing::info!(file = %key, offset = f.position().offset, "Scan: resuming.");
            } else {
                tracing::info!(file = %key, "Scan: following.");
            }
            (key, f)
        })
        .collect();
    let every = sc.poll_interval;
    let thread = std::thread::Builder::new()
        .name("catchd-scan".into())
        .spawn(move || {
            let mut last: Vec<Position> = followers
                .iter()
                .map(|(_, f)| f.position().clone())
                .collect();
            let mut rotations = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let now = Time::now();
                let clock = Clock::new(now);
                let mut found = Vec::new();
                for (key, f) in &mut followers {
                    let r = f.poll(|l| {
                        if let Some(d) = scanner.line(l, &clock, now) {
                            found.push(d);
                        }
                    });
                    if let Err(e) = r {
                        metrics.errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(file = %key, "Scan: cannot read: {e}");
                    }
                }
                let st = scanner.stats();
                metrics.lines.store(st.lines, Ordering::Relaxed);
                metrics.matched.store(st.matched, Ordering::Relaxed);
                metrics.detections.store(st.detections, Ordering::Relaxed);
                metrics.evictions.store(st.evictions, Ordering::Relaxed);
                let tail: u64 = followers.iter().map(|(_, f)| f.stats().long_lines).sum();
                metrics
                    .long_lines
                    .store(st.long_lines + tail, Ordering::Relaxed);
                let rot: u64 = followers
                    .iter()
                    .map(|(_, f)| f.stats().rotations + f.stats().truncations)
                    .sum();
                if rot != rotations {
                    rotations = rot;
                    metrics.rotations.store(rot, Ordering::Relaxed);
                }
                let positions: Vec<(String, Position)> = followers
                    .iter()
                    .zip(&mut last)
                    .filter_map(|((k, f), l)| {
                        (f.position() != l).then(|| {
                            *l = f.position().clone();
                            (k.clone(), l.clone())
                        })
                    })
                    .collect();
                for d in &found {
                    tracing::info!(
                        addr = %d.addr,
                        rule = %d.rule,
                        count = d.count,
                        denied = d.denied,
                        "Scan: blocking."
                    );
                }
                if (!found.is_empty() || !positions.is_empty())
                    && commands
                        .send(Command::Scan(Batch {
                            detections: found,
                            positions,
                        }))
                        .is_err()
                {
                    return;
                }
                std::thread::sleep(every);
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(Some(thread))
}
