//! The daemon's core driven in-process on a paused clock: the same [`Core`], store,
//! registry, effects and logs as `catchd run`, but every step is taken by the test (a
//! command, a batch of sightings, a tick after moving the clock), so catch-and-release's
//! behaviour over hours of network time is checked in milliseconds and exactly.

use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::core::{Command, Core, Saved, Settings, Setup};
use super::effects::Effects;
use crate::addr::Addr;
use crate::api::bhr::{AppState, Users};
use crate::bhr::registry::Change;
use crate::cnr::{BlockInfo, Config as EngineConfig};
use crate::config::Config;
use crate::sniff::Sighting;
use crate::time::Time;
use crate::zeeklog::{Format, LogSet};

/// The first moment of every test.
const T0: i64 = 1_700_000_000;

fn at(secs: i64) -> Time {
    Time::from_micros((T0 + secs) * 1_000_000)
}

/// The daemon's parts around a core, on a clock only the test moves.
struct Harness {
    config: Config,
    clock: Arc<Mutex<Time>>,
    state: Arc<AppState>,
    /// Registry changes made through the API, for the core's next step (what the
    /// daemon's listener sends it).
    changes: Arc<Mutex<Vec<Change>>>,
    core: Option<Core>,
    rt: tokio::runtime::Runtime,
    _lock: crate::store::OwnerLock,
}

impl Harness {
    /// The daemon's configuration in `dir`, with block manager `bgp1` and Zeek's ladder.
    fn config(dir: &std::path::Path) -> Config {
        let mut c = Config::default();
        c.server.db = crate::store::Database::Sqlite(dir.join("catchd.db"));
        c.logs.dir = dir.join("logs");
        c.cnr.block_managers = vec!["bgp1".into()];
        c
    }

    /// Opens what `dir` holds at `now`, as `catchd run` does on start.
    fn open(config: Config, now: Time) -> Harness {
        let opened = crate::server::open(&config, now).expect("open the store");
        let mut users = opened.users;
        let who = opened
            .store
            .system_user(&mut users, super::CNR_USER)
            .unwrap();
        let clock = Arc::new(Mutex::new(now));
        let read = clock.clone();
        let state = AppState::new(
            opened.registry,
            opened.store.clone(),
            Users::new(users),
            Arc::new(move || *read.lock().unwrap()),
            config.server.limits.clone(),
        );
        let changes = Arc::new(Mutex::new(Vec::new()));
        {
            let changes = changes.clone();
            state.set_listener(Box::new(move |c| {
                changes.lock().unwrap().extend_from_slice(c)
            }));
        }
        let logs = LogSet::open_append(&config.logs.dir, Format::Tsv).unwrap();
        let core = Core::start(
            Setup {
                engine: EngineConfig {
                    intervals: config.cnr.intervals.clone(),
                    sweep_interval: config.cnr.sweep_interval,
                    max_timer_expires: None,
                    ..EngineConfig::default()
                },
                settings: Settings {
                    block_managers: config.cnr.block_managers.clone(),
                    hand_over_sources: Vec::new(),
                    rotate_interval: None,
                    rotate_size: None,
                },
                effects: Effects::new(state.clone(), who, &config.cnr.source, &config.cnr.why),
                api: state.clone(),
                store: opened.store,
                logs,
                cluster: None,
            },
            Saved {
                watch: opened.watch,
                nets: opened.watch_nets,
                clock: opened.cr_clock,
            },
        );
        let mut h = Harness {
            config,
            clock,
            state,
            changes,
            core: Some(core),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            _lock: opened.lock,
        };
        h.settle();
        h
    }

    fn core(&mut self) -> &mut Core {
        self.core.as_mut().expect("running")
    }

    /// Hands the core what the API changed, fires what is due, and waits until the step
    /// is durable and logged.
    fn settle(&mut self) {
        let changes = std::mem::take(&mut *self.changes.lock().unwrap());
        if !changes.is_empty() {
            self.core().on_command(Command::Registry(changes));
        }
        self.core().tick();
        assert!(self.core().settle(), "the store confirms the step");
    }

    /// Moves the clock to `t` (never back) and lets the core act on it.
    fn set_time(&mut self, t: Time) {
        *self.clock.lock().unwrap() = t;
        self.settle();
    }

    /// `drop_address_catch_release` through the core, as the API sends it.
    fn drop_address(&mut self, addr: &str, location: &str) -> BlockInfo {
        let (reply, rx) = oneshot::channel();
        self.core().on_command(Command::Drop {
            addr: addr.parse().unwrap(),
            location: location.into(),
            reply,
        });
        self.settle();
        rx.blocking_recv().unwrap().expect("dropped").value
    }

    fn info(&mut self, addr: &str) -> BlockInfo {
        let (reply, rx) = oneshot::channel();
        self.core().on_command(Command::Info {
            addr: addr.parse().unwrap(),
            reply,
        });
        rx.blocking_recv().unwrap()
    }

    /// A packet from `addr` at the current time, as a capture thread reports it.
    fn see(&mut self, addr: &str) {
        let s = Sighting {
            addr: addr.parse::<Addr>().unwrap(),
            ts: *self.clock.lock().unwrap(),
        };
        self.core().on_sightings(std::iter::once(s));
        self.settle();
    }

    /// Block manager `ident` confirms the blocks in its queue are in place.
    fn confirm_queue(&mut self, ident: &str) -> Vec<u64> {
        let ids: Vec<u64> = self
            .rt
            .block_on(self.state.manager_queue(
                ident,
                Time::from_micros(0),
                std::time::Duration::ZERO,
            ))
            .iter()
            .map(|b| b.id)
            .collect();
        self.rt
            .block_on(self.state.manager_set_blocked(ident, &ids))
            .unwrap();
        self.settle();
        ids
    }

    /// Stops as on SIGTERM: the core persists, closes the logs and waits for the store.
    fn stop(mut self) -> Config {
        if let Some(mut core) = self.core.take() {
            core.shutdown();
        }
        self.config.clone()
    }

    /// The records of `netcontrol_catch_release.log` with action `action`, as
    /// `(ts, ip, block_interval, location)`.
    fn cr(&self, action: &str) -> Vec<(f64, String, String, String)> {
        let text =
            std::fs::read_to_string(self.config.logs.dir.join("netcontrol_catch_release.log"))
                .unwrap_or_default();
        let action = format!("NetControl::{action}");
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split('\t').collect::<Vec<_>>())
            .filter(|f| f[3] == action)
            .map(|f| (f[0].parse().unwrap(), f[2].into(), f[4].into(), f[9].into()))
            .collect()
    }
}

fn secs(t: Time) -> f64 {
    t.as_secs_f64()
}

#[test]
fn a_released_address_seen_again_is_blocked_one_step_longer_then_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::open(Harness::config(dir.path()), at(0));
    let a = "192.0.2.7";

    let info = h.drop_address(a, "scanner");
    assert_eq!(info.block_until, Some(at(600)), "Zeek's first step: 10 min");
    assert_eq!(
        info.watch_until,
        at(3600),
        "watched for the next step, from the drop"
    );
    assert_eq!(info.current_block_id.map(super::effects::block_id), Some(1));
    assert_eq!(h.cr("DROP_REQUESTED").len(), 1);
    assert!(
        h.cr("DROPPED").is_empty(),
        "not in place until bgp1 says so"
    );
    assert_eq!(h.confirm_queue("bgp1"), [1]);
    assert_eq!(h.cr("DROPPED").len(), 1);

    // A sighting while blocked changes nothing.
    h.set_time(at(300));
    h.see(a);
    assert!(h.cr("SEEN_AGAIN").is_empty());

    // The block ends at its time, not at the next look at the clock.
    h.set_time(at(601));
    let unblock = h.cr("UNBLOCK");
    assert_eq!(unblock.len(), 1);
    assert_eq!(unblock[0].0, secs(at(600)));
    assert!(
        h.rt.block_on(h.state.manager_queue(
            "bgp1",
            Time::from_micros(0),
            std::time::Duration::ZERO
        ))
        .is_empty()
    );
    assert_eq!(h.state.manager_unblock_queue("bgp1").len(), 1);

    // Seen again while watched: re-blocked one step up (1 h), as block 2, in bgp1's queue.
    h.set_time(at(900));
    h.see(a);
    let seen = h.cr("SEEN_AGAIN");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, secs(at(900)));
    assert_eq!(seen[0].2, "3600.000000");
    let info = h.info(a);
    assert_eq!(info.current_interval, 1);
    assert_eq!(info.num_reblocked, 1);
    assert_eq!(info.current_block_id.map(super::effects::block_id), Some(2));
    assert_eq!(info.block_until, Some(at(900 + 3600)));
    let block = h.state.block(2).expect("a registry block for the re-drop");
    assert_eq!(block.cidr.to_string(), format!("{a}/32"));
    assert_eq!(&*block.why, "Re-drop by catch-and-release: scanner");
    assert_eq!(h.confirm_queue("bgp1"), [2]);

    assert_eq!(
        info.watch_until,
        at(900 + 86_400),
        "watched for the next step (24 h)"
    );

    // Released again, then forgotten at a sweep once the watch is over.
    h.set_time(at(900 + 3600));
    assert_eq!(h.cr("UNBLOCK").len(), 2);
    h.set_time(at(900 + 86_400 - 1));
    assert!(h.cr("FORGOTTEN").is_empty());
    h.set_time(at(900 + 86_400 + 120));
    let forgotten = h.cr("FORGOTTEN");
    assert_eq!(forgotten.len(), 1);
    assert!(forgotten[0].0 >= secs(at(900 + 86_400)));
    assert_eq!(h.info(a).watch_until, Time::from_micros(0));
    h.stop();
}

#[test]
fn a_restart_replays_what_came_due_while_down_at_its_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::open(Harness::config(dir.path()), at(0));
    let (a, b) = ("192.0.2.8", "198.51.100.9");
    h.drop_address(a, "first");
    h.set_time(at(100));
    h.drop_address(b, "second");
    h.confirm_queue("bgp1");
    let config = h.stop();

    // Down from 100 s to 1000 s: a's and b's blocks ended (600 s, 700 s) while down.
    let mut h = Harness::open(config.clone(), at(1000));
    let unblock = h.cr("UNBLOCK");
    assert_eq!(
        unblock
            .iter()
            .map(|u| (u.0, u.1.as_str()))
            .collect::<Vec<_>>(),
        [(secs(at(600)), a), (secs(at(700)), b)],
        "replayed at the block ends, in order, once"
    );
    // Still watched after the restart: a sighting escalates.
    h.see(b);
    assert_eq!(h.cr("SEEN_AGAIN").len(), 1);
    assert_eq!(h.info(b).current_interval, 1);
    let config = h.stop();

    // Down until long after a's watch (to 3600 s) and b's 1 h re-block (to 4600 s): on
    // start a is forgotten at a sweep after its watch ended, b's block ends at its time.
    let h = Harness::open(config, at(10_000));
    let forgotten = h.cr("FORGOTTEN");
    assert_eq!(forgotten.len(), 1, "{forgotten:?}");
    assert_eq!(forgotten[0].1, a);
    assert!(forgotten[0].0 >= secs(at(3600)) && forgotten[0].0 < secs(at(10_000)));
    let unblock = h.cr("UNBLOCK");
    assert_eq!(unblock.len(), 3, "nothing logged twice: {unblock:?}");
    assert_eq!((unblock[2].0, unblock[2].1.as_str()), (secs(at(4600)), b));
    h.stop();
}

#[test]
fn a_wall_clock_stepped_back_across_a_restart_keeps_block_ends_at_their_times() {
    // The engine's time after a restart is at least the stored clock, even when the wall
    // clock went back meanwhile (NTP step): records are never stamped before earlier ones.
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::open(Harness::config(dir.path()), at(0));
    h.drop_address("192.0.2.9", "x");
    h.set_time(at(500));
    let config = h.stop();
    let mut h = Harness::open(config, at(400));
    h.set_time(at(450));
    h.set_time(at(601));
    let unblock = h.cr("UNBLOCK");
    assert_eq!(unblock.len(), 1);
    assert_eq!(unblock[0].0, secs(at(600)));
    h.stop();
}
