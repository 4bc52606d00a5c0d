//! The log-scan thread of `catchd run`: follows the configured files, runs the lines
//! through a [`Scanner`], and hands detections and file positions to the core in one
//! command, which acts on the detections first and then stores the positions (so a
//! position is never durable before what was found up to it).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;

use crate::config::Config;
use crate::scan::prefix::Clock;
use crate::scan::rules::Rules;
use crate::scan::tail::{Follower, Position};
use crate::scan::{Detection, Scanner};
use crate::time::Time;

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
    /// Lines that could not be scanned (a bug, caught) and were skipped.
    pub line_errors: AtomicU64,
}

impl ScanMetrics {
    /// The counters, for `/metrics`.
    pub fn collect(&self, m: &mut crate::telemetry::Metrics) {
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
            (
                "line_errors_total",
                "log lines that could not be scanned and were skipped",
                &self.line_errors,
            ),
        ] {
            m.counter(&format!("catchd_scan_{name}"), help)
                .value(crate::telemetry::count(v.load(Ordering::Relaxed)));
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

/// Hands a batch to the core; `false` once the core is gone.
pub type Deliver = Arc<dyn Fn(Batch) -> bool + Send + Sync>;

/// Starts the thread if files are configured, under `workers` (a scan thread that stops
/// is started again, from the positions it had reached).
///
/// # Errors
/// The rule file cannot be read or the rules compiled (already checked with the config).
pub fn spawn(
    config: &Config,
    stored: &[(String, Position)],
    commands: Deliver,
    stop: Arc<AtomicBool>,
    metrics: Arc<ScanMetrics>,
    workers: &Arc<super::workers::Workers>,
) -> Result<Option<JoinHandle<()>>, String> {
    let sc = config.scan.clone();
    if sc.files.is_empty() {
        return Ok(None);
    }
    let rules = sc.rules.clone();
    // Compiled once here, so that a bad rule is an error at start.
    Scanner::new(rules.clone(), sc.max_addresses, None).map_err(|e| e.0)?;
    // Where each file was read to: the stored positions, then what the thread sent.
    let positions: Vec<(String, Option<Position>)> = sc
        .files
        .iter()
        .map(|p: &PathBuf| {
            let key = p.display().to_string();
            let resume = stored
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.clone());
            (key, resume)
        })
        .collect();
    // The first followers are made now, before the daemon answers: lines written once it
    // runs are read (a follower new to a file starts at its end).
    let mut first = Some(followers(&sc, &positions));
    let positions = Arc::new(std::sync::Mutex::new(positions));
    let worker = workers.add("scan", None);
    let thread = workers
        .thread(
            "catchd-scan",
            worker,
            super::workers::Policy::Restart,
            move || {
                let fs = match first.take() {
                    Some(fs) => fs,
                    None => followers(&sc, &positions.lock().unwrap_or_else(|p| p.into_inner())),
                };
                follow(&sc, &rules, fs, &positions, &commands, &stop, &metrics)
            },
        )
        .map_err(|e| e.to_string())?;
    Ok(Some(thread))
}

/// A follower for each file, from where it was read to.
fn followers(
    sc: &crate::config::Scan,
    positions: &[(String, Option<Position>)],
) -> Vec<(String, Follower)> {
    sc.files
        .iter()
        .zip(positions)
        .map(|(p, (key, resume))| {
            let f = Follower::new(p, resume.clone(), !sc.from_start && resume.is_none());
            if resume.is_some() {
                tracing::info!(file = %key, offset = f.position().offset, "Scan: resuming.");
            } else {
                tracing::info!(file = %key, "Scan: following.");
            }
            (key.clone(), f)
        })
        .collect()
}

/// The scan loop over `followers` until `stop` (or the core is gone); `positions` is
/// kept up to date with what was sent to the core.
fn follow(
    sc: &crate::config::Scan,
    rules: &Rules,
    mut followers: Vec<(String, Follower)>,
    positions: &std::sync::Mutex<Vec<(String, Option<Position>)>>,
    commands: &Deliver,
    stop: &AtomicBool,
    metrics: &ScanMetrics,
) -> Result<(), String> {
    let mut scanner = Scanner::new(rules.clone(), sc.max_addresses, None).map_err(|e| e.0)?;
    let every = sc.poll_interval;
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
                // A line that trips a bug is counted and skipped; scanning goes on.
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    scanner.line(l, &clock, now)
                })) {
                    Ok(Some(d)) => found.push(d),
                    Ok(None) => {}
                    Err(p) => {
                        metrics.line_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(
                            file = %key,
                            line = %l.escape_debug(),
                            "Scan: a line could not be scanned ({}); skipped.",
                            crate::shutdown::panic_text(&*p)
                        );
                    }
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
        let moved: Vec<(String, Position)> = followers
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
        if !found.is_empty() || !moved.is_empty() {
            {
                let mut p = positions.lock().unwrap_or_else(|p| p.into_inner());
                for (k, pos) in &moved {
                    if let Some(slot) = p.iter_mut().find(|(key, _)| key == k) {
                        slot.1 = Some(pos.clone());
                    }
                }
            }
            if !commands(Batch {
                detections: found,
                positions: moved,
            }) {
                return Ok(());
            }
        }
        std::thread::sleep(every);
    }
    Ok(())
}
