//! A watchlist that becomes a blacklist, with BlackRed's semantics, done right.
//!
//! Items are strings (an address, a user name …). [`Watchlist::fail`] counts a failure:
//! the watch TTL is re-armed on every failure (an inactivity timeout, as in BlackRed), and
//! the failure that reaches the threshold moves the item to the blacklist for the block
//! TTL. Checking a blacklisted item re-arms its block TTL when `refresh_on_hit` is on.
//! [`Watchlist::unblock`] clears both.
//!
//! Done right where the original is not:
//! * every operation on an item is atomic (one map shard's lock around the whole
//!   read-modify-write), so concurrent failures are all counted;
//! * anonymisation is a keyed hash, HMAC-SHA256 with a key kept outside the data (a key
//!   file), applied exactly once per operation; the stored key cannot be reversed by
//!   anyone holding only the data;
//! * time is an argument: no I/O, no clock (the API and store are around it).

use std::sync::Arc;

use crate::auth::hmac_sha256;
use dashmap::DashMap;

use crate::time::{Interval, Time};

/// The watchlist's settings (`[watchlist]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Failures that blacklist (BlackRed: 3).
    pub threshold: u32,
    /// How long a watched item is remembered after its last failure (180 s).
    pub watch_ttl: Interval,
    /// How long an item stays blacklisted (24 h).
    pub block_ttl: Interval,
    /// Checking a blacklisted item re-arms its block TTL.
    pub refresh_on_hit: bool,
    /// Store keyed hashes of items, not items.
    pub anonymize: bool,
    /// Where the HMAC key is kept (created, mode 0600, if missing).
    pub key_file: Option<std::path::PathBuf>,
    /// Blacklisted items that are IP addresses become registry blocks (source
    /// `watchlist`, for the block TTL).
    pub block_addresses: bool,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            threshold: 3,
            watch_ttl: Interval::from_secs(180),
            block_ttl: Interval::from_secs(86_400),
            refresh_on_hit: true,
            anonymize: false,
            key_file: None,
            block_addresses: false,
        }
    }
}

/// What is stored of an item.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    /// Failures counted while watched (0 once blacklisted).
    pub failures: u32,
    /// When the watch ends (`None`: not watched).
    pub watch_until: Option<Time>,
    /// When the block ends (`None`: not blacklisted).
    pub block_until: Option<Time>,
}

impl Entry {
    fn watched(&self, now: Time) -> bool {
        self.watch_until.is_some_and(|t| t > now)
    }

    fn blocked(&self, now: Time) -> bool {
        self.block_until.is_some_and(|t| t > now)
    }

    /// Forgets what has expired; `true` if nothing is left.
    fn expire(&mut self, now: Time) -> bool {
        if !self.watched(now) {
            self.watch_until = None;
            self.failures = 0;
        }
        if !self.blocked(now) {
            self.block_until = None;
        }
        self.watch_until.is_none() && self.block_until.is_none()
    }
}

/// What [`Watchlist::fail`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failed {
    /// The item is blacklisted (now or already).
    pub blocked: bool,
    /// Failures counted (the threshold when this one blacklisted it).
    pub failures: u32,
    /// This failure blacklisted it.
    pub newly_blocked: bool,
    /// The item was blacklisted already and this failure re-armed its block TTL
    /// (`refresh_on_hit`).
    pub refreshed: bool,
}

/// What [`Watchlist::check`] says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    /// Blacklisted.
    pub blocked: bool,
    /// Failures counted while watched.
    pub failures: u32,
    /// Time left on the watch.
    pub watch_ttl: Option<Interval>,
    /// Time left on the block.
    pub block_ttl: Option<Interval>,
}

/// A stored change: the key and the entry (`None`: deleted).
pub type Change = (String, Option<Entry>);

/// Why the watchlist cannot start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Anonymisation needs a key file.
    #[error("watchlist.anonymize needs watchlist.key_file")]
    NoKeyFile,
    /// The key file could not be read or made.
    #[error("watchlist.key_file {path}: {msg}")]
    Key {
        /// The file.
        path: String,
        /// What went wrong.
        msg: String,
    },
}

/// Reads the key file, or (when `may_create`) makes one with 32 random bytes (mode 0600).
/// A missing key is not replaced while stored entries depend on it: they would no longer
/// be found.
///
/// # Errors
/// [`Error::Key`].
pub fn load_or_create_key(path: &std::path::Path, may_create: bool) -> Result<Vec<u8>, Error> {
    let err = |msg: String| Error::Key {
        path: path.display().to_string(),
        msg,
    };
    match std::fs::read(path) {
        Ok(k) if k.len() >= 16 => Ok(k),
        Ok(_) => Err(err("holds fewer than 16 bytes".into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !may_create => Err(err(
            "is missing, but the database holds entries hashed with it (restore the file, \
             or remove the watchlist entries)"
                .into(),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let key: [u8; 32] = rand::random();
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| err(e.to_string()))?;
            f.write_all(&key).map_err(|e| err(e.to_string()))?;
            f.sync_all().map_err(|e| err(e.to_string()))?;
            Ok(key.to_vec())
        }
        Err(e) => Err(err(e.to_string())),
    }
}

/// The watchlist and blacklist.
pub struct Watchlist {
    settings: Settings,
    key: Option<Arc<[u8]>>,
    map: DashMap<String, Entry, foldhash::fast::RandomState>,
}

impl Watchlist {
    /// A watchlist with these settings and, when anonymising, this HMAC key.
    ///
    /// # Errors
    /// [`Error::NoKeyFile`] when anonymising without a key.
    pub fn new(settings: Settings, key: Option<Vec<u8>>) -> Result<Watchlist, Error> {
        let key = match (settings.anonymize, key) {
            (true, Some(k)) => Some(Arc::from(k)),
            (true, None) => return Err(Error::NoKeyFile),
            (false, _) => None,
        };
        Ok(Watchlist {
            settings,
            key,
            map: DashMap::with_hasher(foldhash::fast::RandomState::default()),
        })
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Puts back stored entries.
    pub fn restore(&self, entries: impl IntoIterator<Item = (String, Entry)>) {
        for (k, e) in entries {
            self.map.insert(k, e);
        }
    }

    /// The stored key of an item: the item, or its HMAC in hex. An item that is an IP
    /// address is keyed by its canonical text (`::ffff:192.0.2.1` and `192.0.2.1` are one
    /// item, as are `2001:DB8::1` and `2001:db8::1`).
    pub fn key(&self, item: &str) -> String {
        let canonical;
        let item = match item.parse::<std::net::IpAddr>() {
            Ok(ip) => {
                canonical = crate::addr::canonical_ip(ip).to_string();
                canonical.as_str()
            }
            Err(_) => item,
        };
        match &self.key {
            None => item.to_string(),
            Some(k) => {
                let mac = hmac_sha256(k, item.as_bytes());
                let mut s = String::with_capacity(64);
                for b in mac {
                    use std::fmt::Write;
                    let _ = write!(s, "{b:02x}");
                }
                s
            }
        }
    }

    /// Items (or keys) stored.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Every stored key with its entry (for tests and inspection).
    pub fn entries(&self) -> Vec<(String, Entry)> {
        self.map
            .iter()
            .map(|r| (r.key().clone(), *r.value()))
            .collect()
    }

    /// Counts a failure of `item` at `now`. `store` gets the change to persist while the
    /// item is still locked, so changes of one item are stored in the order they were
    /// made (it must not block: hand it to the store's queue).
    pub fn fail(&self, item: &str, now: Time, store: impl FnOnce(Change)) -> Failed {
        let key = self.key(item);
        let s = &self.settings;
        let mut e = self.map.entry(key.clone()).or_default();
        e.expire(now);
        if e.blocked(now) {
            // Already blacklisted. BlackRed's log_fail checks first, and that check
            // re-arms the block when refresh_on_hit is on: an item that keeps failing
            // stays blacklisted.
            let refreshed = s.refresh_on_hit && e.block_until != Some(now + s.block_ttl);
            if refreshed {
                e.block_until = Some(now + s.block_ttl);
                store((key, Some(*e)));
            }
            return Failed {
                blocked: true,
                failures: e.failures,
                newly_blocked: false,
                refreshed,
            };
        }
        e.failures += 1;
        let out = if e.failures >= s.threshold.max(1) {
            let failures = e.failures;
            e.failures = 0;
            e.watch_until = None;
            e.block_until = Some(now + s.block_ttl);
            Failed {
                blocked: true,
                failures,
                newly_blocked: true,
                refreshed: false,
            }
        } else {
            e.watch_until = Some(now + s.watch_ttl);
            Failed {
                blocked: false,
                failures: e.failures,
                newly_blocked: false,
                refreshed: false,
            }
        };
        store((key, Some(*e)));
        drop(e);
        out
    }

    /// Looks an item up at `now` (re-arming a block when `refresh_on_hit`); `store` gets
    /// the change, if any, as in [`fail`](Watchlist::fail).
    pub fn check(&self, item: &str, now: Time, store: impl FnOnce(Change)) -> Status {
        let key = self.key(item);
        let nothing = Status {
            blocked: false,
            failures: 0,
            watch_ttl: None,
            block_ttl: None,
        };
        let Some(mut e) = self.map.get_mut(&key) else {
            return nothing;
        };
        let before = *e;
        if e.expire(now) {
            drop(e);
            // Removed only if still empty (another call may have revived it meanwhile).
            if self
                .map
                .remove_if(&key, |_, v| {
                    v.watch_until.is_none() && v.block_until.is_none()
                })
                .is_some()
            {
                store((key, None));
            }
            return nothing;
        }
        if e.blocked(now) && self.settings.refresh_on_hit {
            e.block_until = Some(now + self.settings.block_ttl);
        }
        let st = Status {
            blocked: e.blocked(now),
            failures: e.failures,
            watch_ttl: e.watch_until.map(|t| t - now),
            block_ttl: e.block_until.map(|t| t - now),
        };
        if *e != before {
            store((key, Some(*e)));
        }
        drop(e);
        st
    }

    /// Clears an item. Returns whether it was blacklisted; `store` gets the deletion.
    pub fn unblock(&self, item: &str, now: Time, store: impl FnOnce(Change)) -> bool {
        let key = self.key(item);
        // The deletion is handed over while the shard is still locked.
        let mut blocked = false;
        let removed = self.map.remove_if(&key, |k, e| {
            blocked = e.blocked(now);
            store((k.clone(), None));
            true
        });
        removed.is_some() && blocked
    }

    /// Drops every expired entry; `store` gets each deletion while its shard is locked.
    pub fn sweep(&self, now: Time, mut store: impl FnMut(Change)) -> usize {
        let mut n = 0;
        self.map.retain(|k, e| {
            if e.expire(now) {
                store((k.clone(), None));
                n += 1;
                false
            } else {
                true
            }
        });
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail(w: &Watchlist, item: &str, t: Time) -> (Failed, Option<Change>) {
        let mut c = None;
        let f = w.fail(item, t, |x| c = Some(x));
        (f, c)
    }

    fn check(w: &Watchlist, item: &str, t: Time) -> (Status, Option<Change>) {
        let mut c = None;
        let st = w.check(item, t, |x| c = Some(x));
        (st, c)
    }

    fn unblock(w: &Watchlist, item: &str, t: Time) -> (bool, Option<Change>) {
        let mut c = None;
        let b = w.unblock(item, t, |x| c = Some(x));
        (b, c)
    }

    fn s(secs: i64) -> Time {
        Time::from_micros(secs * 1_000_000)
    }

    fn list(refresh: bool) -> Watchlist {
        Watchlist::new(
            Settings {
                refresh_on_hit: refresh,
                ..Settings::default()
            },
            None,
        )
        .unwrap()
    }

    #[test]
    fn three_failures_blacklist_and_the_watch_ttl_rearms() {
        let w = list(true);
        assert_eq!(fail(&w, "10.0.0.1", s(0)).0.failures, 1);
        // 179 s later: still watched (the TTL was re-armed by each failure).
        assert_eq!(fail(&w, "10.0.0.1", s(179)).0.failures, 2);
        let (f, ch) = fail(&w, "10.0.0.1", s(358));
        assert_eq!(
            f,
            Failed {
                blocked: true,
                failures: 3,
                newly_blocked: true,
                refreshed: false,
            }
        );
        assert_eq!(ch.unwrap().1.unwrap().block_until, Some(s(358 + 86_400)));
        // Blocked: a failure re-arms the block, as BlackRed's log_fail does (it checks
        // first, and the check refreshes): an attacker who keeps failing stays blocked.
        let (f, ch) = fail(&w, "10.0.0.1", s(400));
        assert!(f.blocked && !f.newly_blocked && f.refreshed);
        assert_eq!(ch.unwrap().1.unwrap().block_until, Some(s(400 + 86_400)));
        let (f, _) = fail(&w, "10.0.0.1", s(400 + 86_000));
        assert!(f.blocked && f.refreshed);
        assert!(check(&w, "10.0.0.1", s(400 + 86_400 + 10)).0.blocked);
        // Without refresh_on_hit, failures of a blocked item change nothing.
        let w = list(false);
        for t in 0..3 {
            fail(&w, "z", s(t));
        }
        let (f, ch) = fail(&w, "z", s(100));
        assert!(f.blocked && !f.refreshed);
        assert!(ch.is_none());
        assert!(!check(&w, "z", s(86_403)).0.blocked);
        let w = list(true);
        // A gap longer than the watch TTL starts over.
        fail(&w, "u", s(0));
        fail(&w, "u", s(100));
        assert_eq!(fail(&w, "u", s(281)).0.failures, 1);
    }

    #[test]
    fn checks_refresh_the_block_when_asked() {
        let w = list(true);
        for t in 0..3 {
            fail(&w, "x", s(t));
        }
        let (st, ch) = check(&w, "x", s(80_000));
        assert!(st.blocked);
        assert_eq!(st.block_ttl, Some(Interval::from_secs(86_400)));
        assert!(ch.is_some());
        // Kept alive by checks: blocked long after the first 24 h.
        let (st, _) = check(&w, "x", s(160_000));
        assert!(st.blocked);
        let w = list(false);
        for t in 0..3 {
            fail(&w, "x", s(t));
        }
        assert_eq!(
            check(&w, "x", s(80_000)).0.block_ttl,
            Some(Interval::from_secs(86_402 - 80_000))
        );
        assert!(!check(&w, "x", s(86_403)).0.blocked);
        // Unknown items.
        let (st, ch) = check(&w, "nobody", s(0));
        assert_eq!(
            (st.blocked, st.failures, st.watch_ttl, st.block_ttl),
            (false, 0, None, None)
        );
        assert!(ch.is_none());
        // Watched, not blocked: the watch TTL left.
        fail(&w, "y", s(10));
        let st = check(&w, "y", s(70)).0;
        assert_eq!(
            (st.failures, st.watch_ttl),
            (1, Some(Interval::from_secs(120)))
        );
    }

    #[test]
    fn an_address_is_one_item_however_it_is_written() {
        let w = list(true);
        fail(&w, "::ffff:192.0.2.1", s(0));
        fail(&w, "192.0.2.1", s(1));
        assert_eq!(check(&w, "192.0.2.1", s(2)).0.failures, 2);
        fail(&w, "2001:DB8::1", s(0));
        assert_eq!(check(&w, "2001:db8::1", s(1)).0.failures, 1);
        // Not addresses: kept as they are.
        fail(&w, "Alice", s(0));
        assert_eq!(check(&w, "alice", s(1)).0.failures, 0);
    }

    #[test]
    fn unblock_clears_both() {
        let w = list(true);
        for t in 0..3 {
            fail(&w, "x", s(t));
        }
        assert!(unblock(&w, "x", s(5)).0);
        assert!(!check(&w, "x", s(6)).0.blocked);
        assert_eq!(fail(&w, "x", s(7)).0.failures, 1);
        assert!(!unblock(&w, "x", s(8)).0, "watched only");
        assert!(!unblock(&w, "never", s(8)).0);
    }

    #[test]
    fn concurrent_failures_are_all_counted() {
        let w = Arc::new(
            Watchlist::new(
                Settings {
                    threshold: 1_000_000,
                    ..Settings::default()
                },
                None,
            )
            .unwrap(),
        );
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let w = w.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        fail(&w, "hot", s(1));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(check(&w, "hot", s(2)).0.failures, 80_000);
    }

    #[test]
    fn anonymised_items_are_keyed_hashes_stored_once() {
        let key = b"0123456789abcdef0123456789abcdef".to_vec();
        let w = Watchlist::new(
            Settings {
                anonymize: true,
                ..Settings::default()
            },
            Some(key.clone()),
        )
        .unwrap();
        for t in 0..3 {
            fail(&w, "198.51.100.23", s(t));
        }
        // Blocked, and the block check on the failure path matches (BlackRed hashes twice
        // there and never sees its own block).
        let (f, _) = fail(&w, "198.51.100.23", s(4));
        assert!(f.blocked && !f.newly_blocked);
        let entries = w.entries();
        assert_eq!(entries.len(), 1);
        assert!(!entries[0].0.contains("198.51.100.23"));
        assert_eq!(entries[0].0.len(), 64);
        // RFC 4231 test case 2.
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            mac.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Another key gives other hashes.
        let w2 = Watchlist::new(
            Settings {
                anonymize: true,
                ..Settings::default()
            },
            Some(b"another key, another key, 000000".to_vec()),
        )
        .unwrap();
        assert_ne!(w.key("a"), w2.key("a"));
        assert!(matches!(
            Watchlist::new(
                Settings {
                    anonymize: true,
                    ..Settings::default()
                },
                None
            ),
            Err(Error::NoKeyFile)
        ));
    }

    #[test]
    fn sweep_forgets_expired_entries() {
        let w = list(false);
        fail(&w, "a", s(0));
        for t in 0..3 {
            fail(&w, "b", s(t));
        }
        let mut gone = Vec::new();
        assert_eq!(w.sweep(s(200), |c| gone.push(c)), 1);
        assert_eq!(gone, vec![("a".to_string(), None)]);
        assert_eq!(w.len(), 1);
        assert_eq!(w.sweep(s(90_000), |_| ()), 1);
        assert!(w.is_empty());
    }
}
