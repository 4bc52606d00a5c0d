//! Capture threads: packets from an interface in, sightings of watched addresses out.
//!
//! One thread per interface runs [`Live::poll`] in a loop. For every frame it parses the
//! headers and applies the sighting rule ([`Sighter`]: Zeek's connection events by
//! default), which asks the shared [`WatchTable`] whether the packet's ends are watched
//! (usually one load each from its pre-filter) before it looks at its connection table.
//! Only sightings of watched addresses leave the thread, through a bounded channel with
//! `try_send`: a busy engine costs dropped sightings (counted), never a stalled capture.
//! Counters are kept in plain locals and published to atomics once per batch.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TrySendError};

use crate::addr::Addr;
use crate::capture::{Live, LiveError, LiveStats};
use crate::cnr::WatchTable;
use crate::conn::Sighter;
use crate::packet::{self, Sightings};
use crate::time::Time;

/// A packet from a watched address that counts as a sighting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sighting {
    /// The address.
    pub addr: Addr,
    /// The packet's capture time.
    pub ts: Time,
}

/// The set a capture thread checks each originator against: the engine's [`WatchTable`],
/// or a sensor's replica of a manager's.
pub trait Watched: Send + Sync + 'static {
    /// Whether `a` is tracked. Must not allocate or block.
    fn contains(&self, a: &Addr) -> bool;

    /// A cheaper pre-check, called per packet: `false` means certainly not tracked.
    #[inline]
    fn may_contain(&self, a: &Addr) -> bool {
        self.contains(a)
    }

    /// A count that moves whenever an address may have stopped being tracked: while it
    /// stays, a "yes" from [`contains`](Watched::contains) still holds and is not asked
    /// again. `u64::MAX` (the default) means "always ask".
    #[inline]
    fn changes(&self) -> u64 {
        u64::MAX
    }
}

impl Watched for WatchTable {
    #[inline]
    fn contains(&self, a: &Addr) -> bool {
        WatchTable::contains(self, a)
    }

    #[inline]
    fn may_contain(&self, a: &Addr) -> bool {
        WatchTable::may_contain(self, a)
    }

    #[inline]
    fn changes(&self) -> u64 {
        WatchTable::changes(self)
    }
}

/// Frames handled per poll before the stop flag is looked at again.
const BATCH: usize = 4096;

/// How long a poll waits on a quiet interface.
const POLL_WAIT: Duration = Duration::from_millis(100);

/// The first and the longest wait before a failed capture is opened again.
const RESTART_WAIT: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(30));

/// Sleeps `d`, or less if `stop` is set; whether to go on.
fn wait(stop: &AtomicBool, d: Duration) -> bool {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    !stop.load(Ordering::Relaxed)
}

/// How often libpcap's counters are read.
const STATS_EVERY: Duration = Duration::from_secs(1);

/// One capture thread's counters, readable from any thread.
#[derive(Debug, Default)]
pub struct SensorStats {
    /// Frames captured.
    pub packets: AtomicU64,
    /// Bytes captured (up to the snap length).
    pub bytes: AtomicU64,
    /// Frames that yielded no IP header catchd could read.
    pub skipped: AtomicU64,
    /// Sightings of watched addresses handed to the engine.
    pub sightings: AtomicU64,
    /// Sightings lost because the engine's channel was full.
    pub channel_drops: AtomicU64,
    /// libpcap: packets the kernel passed to the capture.
    pub kernel_received: AtomicU64,
    /// libpcap: packets dropped for lack of buffer space.
    pub kernel_dropped: AtomicU64,
    /// libpcap: packets dropped by the interface or driver.
    pub if_dropped: AtomicU64,
    /// Frames per second over the last second.
    pub rate: AtomicU64,
    /// Set while the capture is down (it failed and is not open again yet).
    pub failed: AtomicBool,
    /// Times the capture was opened again after it failed.
    pub restarts: AtomicU64,
}

impl SensorStats {
    fn publish_pcap(&self, s: LiveStats) {
        self.kernel_received.store(s.received, Ordering::Relaxed);
        self.kernel_dropped.store(s.dropped, Ordering::Relaxed);
        self.if_dropped.store(s.if_dropped, Ordering::Relaxed);
    }
}

/// A running capture thread.
pub struct Sensor {
    interface: String,
    stats: Arc<SensorStats>,
    thread: Option<JoinHandle<()>>,
}

impl Sensor {
    /// Starts a thread capturing from `live` until `stop` is set. A capture that fails
    /// (the interface went away, a bug) is logged, shown as down (`catchd_capture_up 0`)
    /// and opened again, after 1 s, then 2, 4 … up to 30 s between attempts.
    ///
    /// # Errors
    /// If the thread cannot be started.
    pub fn spawn<W: Watched>(
        live: Live,
        watch: Arc<W>,
        rule: Sightings,
        tx: Sender<Sighting>,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<Sensor> {
        let interface = live.interface().to_string();
        let stats = Arc::new(SensorStats::default());
        let st = stats.clone();
        let thread = std::thread::Builder::new()
            .name(format!("catchd-capture-{interface}"))
            .spawn(move || {
                let options = live.options().clone();
                let mut live = Some(live);
                let mut backoff = RESTART_WAIT.0;
                while !stop.load(Ordering::Relaxed) {
                    if let Some(l) = live.as_mut() {
                        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            capture_loop(l, &*watch, rule, &tx, &stop, &st)
                        }));
                        if let Ok(s) = l.stats() {
                            st.publish_pcap(s);
                        }
                        let why = match r {
                            Ok(Ok(())) => return,
                            Ok(Err(e)) => e.to_string(),
                            Err(p) => format!(
                                "panicked: {}",
                                crate::shutdown::panic_text(&*p)
                            ),
                        };
                        // Logged first: once the capture shows as down, why is in the log.
                        tracing::error!(interface = %options.interface, "Capture stopped: {why}; opening it again.");
                        st.failed.store(true, Ordering::Relaxed);
                        live = None;
                    }
                    if !wait(&stop, backoff) {
                        return;
                    }
                    match Live::open(&options) {
                        Ok(l) => {
                            tracing::info!(interface = %options.interface, "Capturing again.");
                            st.restarts.fetch_add(1, Ordering::Relaxed);
                            st.failed.store(false, Ordering::Relaxed);
                            backoff = RESTART_WAIT.0;
                            live = Some(l);
                        }
                        Err(e) => {
                            tracing::warn!(interface = %options.interface, "Cannot capture yet: {e}");
                            backoff = (backoff * 2).min(RESTART_WAIT.1);
                        }
                    }
                }
            })?;
        Ok(Sensor {
            interface,
            stats,
            thread: Some(thread),
        })
    }

    /// The interface.
    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<SensorStats> {
        &self.stats
    }

    /// Waits for the thread to end (after the stop flag is set).
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts one capture thread per interface, all checking `watch` and sending to `tx`
/// until `stop` is set.
///
/// # Errors
/// If a thread cannot be started.
pub fn spawn_all<W: Watched>(
    lives: Vec<Live>,
    watch: &Arc<W>,
    rule: Sightings,
    tx: &Sender<Sighting>,
    stop: &Arc<AtomicBool>,
) -> std::io::Result<Vec<Sensor>> {
    lives
        .into_iter()
        .map(|live| Sensor::spawn(live, watch.clone(), rule, tx.clone(), stop.clone()))
        .collect()
}

fn capture_loop<W: Watched>(
    live: &mut Live,
    watch: &W,
    rule: Sightings,
    tx: &Sender<Sighting>,
    stop: &AtomicBool,
    st: &SensorStats,
) -> Result<(), LiveError> {
    let link = live.link();
    let mut sighter = Sighter::new(rule);
    let mut last_stats = Instant::now();
    let mut last_packets = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let (mut packets, mut bytes, mut skipped, mut seen, mut lost) =
            (0u64, 0u64, 0u64, 0u64, 0u64);
        let mut send = |addr: Addr, ts: Time| {
            if watch.contains(&addr) {
                match tx.try_send(Sighting { addr, ts }) {
                    Ok(()) => seen += 1,
                    Err(TrySendError::Full(_)) => lost += 1,
                    Err(TrySendError::Disconnected(_)) => {}
                }
            }
        };
        live.poll(POLL_WAIT, BATCH, |f| {
            packets += 1;
            bytes += f.data.len() as u64;
            sighter.advance(f.ts, |_, a, _| send(a, f.ts));
            match packet::parse(link, f.data) {
                Ok(obs) => sighter.packet(
                    f.ts,
                    &obs,
                    watch.changes(),
                    |a| watch.may_contain(a),
                    |a| watch.contains(a),
                    |a, _| send(a, f.ts),
                ),
                Err(_) => skipped += 1,
            }
        })?;
        if packets == 0 {
            // A quiet interface: connection timers (an unanswered SYN's attempt) run on
            // the clock, as Zeek's do on a live interface.
            let now = Time::now();
            sighter.advance(now, |_, a, _| send(a, now));
        }
        if packets > 0 {
            st.packets.fetch_add(packets, Ordering::Relaxed);
            st.bytes.fetch_add(bytes, Ordering::Relaxed);
            st.skipped.fetch_add(skipped, Ordering::Relaxed);
            st.sightings.fetch_add(seen, Ordering::Relaxed);
            st.channel_drops.fetch_add(lost, Ordering::Relaxed);
        }
        let since = last_stats.elapsed();
        if since >= STATS_EVERY {
            last_stats = Instant::now();
            let total = st.packets.load(Ordering::Relaxed);
            let rate = (total - last_packets) as f64 / since.as_secs_f64();
            st.rate.store(rate.round() as u64, Ordering::Relaxed);
            last_packets = total;
            st.publish_pcap(live.stats()?);
        }
    }
    Ok(())
}
