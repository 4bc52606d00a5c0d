//! Throttling of failed sign-ins, per client address and per user name.
//!
//! Each key has a leaky bucket: a failure adds one, and the level drains at
//! `max_failures` per `window`. A key whose level has reached its limit is refused (429)
//! until it has drained below it; refused attempts are not counted, so a client that waits
//! as told gets its next try. IPv6 clients are keyed by their /64 (one host usually has a
//! whole /64), user names by a hash (any length costs the same). Both maps are bounded:
//! when one is full, keys that have drained are dropped, and a new key that still finds no
//! room is not tracked (the other map and the bounded password checks still hold).
//!
//! No I/O, no clock: time is an argument.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::time::Time;

/// Keys tracked per map at most.
pub const MAX_KEYS: usize = 100_000;

/// How many failures are tolerated, and how fast they are forgiven.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Failures from one address (an IPv6 /64) before it is refused.
    pub per_address: u32,
    /// Failures for one user name, from anywhere, before it is refused.
    pub per_user: u32,
    /// The time over which a full bucket drains.
    pub window: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            per_address: 10,
            per_user: 20,
            window: Duration::from_secs(300),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    level: f64,
    at: Time,
}

impl Bucket {
    fn drained(&self, now: Time, rate: f64) -> f64 {
        let secs = (now - self.at).as_secs_f64().max(0.0);
        (self.level - secs * rate).max(0.0)
    }
}

#[derive(Debug, Default)]
struct Map {
    buckets: HashMap<[u8; 16], Bucket>,
}

impl Map {
    /// Seconds until `key` may try again (`None`: it may now).
    fn wait(&self, key: &[u8; 16], now: Time, max: u32, rate: f64) -> Option<u64> {
        let b = self.buckets.get(key)?;
        // One more failure must still fit under the limit.
        let room = f64::from(max) - 1.0;
        let level = b.drained(now, rate);
        if level <= room + 1e-9 {
            return None;
        }
        let secs = (level - room) / rate;
        Some(secs.ceil().max(1.0) as u64)
    }

    fn fail(&mut self, key: [u8; 16], now: Time, rate: f64) {
        if !self.buckets.contains_key(&key) && self.buckets.len() >= MAX_KEYS {
            self.buckets.retain(|_, b| b.drained(now, rate) > 0.0);
            if self.buckets.len() >= MAX_KEYS {
                return;
            }
        }
        let b = self.buckets.entry(key).or_insert(Bucket {
            level: 0.0,
            at: now,
        });
        b.level = b.drained(now, rate) + 1.0;
        b.at = now;
    }
}

/// The key of a client address: IPv4 as is (or IPv4-mapped), IPv6 by its /64.
pub fn address_key(ip: IpAddr) -> [u8; 16] {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let mut k = [0u8; 16];
            k[..4].copy_from_slice(&v4.octets());
            k[4] = 4;
            k
        }
        IpAddr::V6(v6) => {
            let mut k = v6.octets();
            k[8..].fill(0);
            k[15] = 6;
            k
        }
    }
}

fn user_key(name: &str) -> [u8; 16] {
    let d = Sha256::digest(name.as_bytes());
    let mut k = [0u8; 16];
    k.copy_from_slice(&d[..16]);
    k
}

/// Failed sign-ins by address and by user name.
#[derive(Debug)]
pub struct Throttle {
    settings: Settings,
    addresses: Mutex<Map>,
    users: Mutex<Map>,
}

impl Throttle {
    /// An empty throttle.
    pub fn new(settings: Settings) -> Throttle {
        Throttle {
            settings,
            addresses: Mutex::default(),
            users: Mutex::default(),
        }
    }

    fn rate(&self, max: u32) -> f64 {
        f64::from(max.max(1)) / self.settings.window.as_secs_f64().max(0.001)
    }

    /// Seconds until a sign-in from `client` as `name` may be tried (`None`: now).
    pub fn wait(&self, client: Option<IpAddr>, name: &str, now: Time) -> Option<u64> {
        let s = &self.settings;
        let by_addr = client.and_then(|ip| {
            self.addresses
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .wait(
                    &address_key(ip),
                    now,
                    s.per_address,
                    self.rate(s.per_address),
                )
        });
        let by_user = self.users.lock().unwrap_or_else(|p| p.into_inner()).wait(
            &user_key(name),
            now,
            s.per_user,
            self.rate(s.per_user),
        );
        by_addr.max(by_user)
    }

    /// Counts a failed sign-in.
    pub fn fail(&self, client: Option<IpAddr>, name: &str, now: Time) {
        let s = &self.settings;
        if let Some(ip) = client {
            self.addresses
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .fail(address_key(ip), now, self.rate(s.per_address));
        }
        self.users.lock().unwrap_or_else(|p| p.into_inner()).fail(
            user_key(name),
            now,
            self.rate(s.per_user),
        );
    }

    /// Keys tracked (addresses, user names).
    pub fn len(&self) -> (usize, usize) {
        (
            self.addresses
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .buckets
                .len(),
            self.users
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .buckets
                .len(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Interval;

    fn t(secs: i64) -> Time {
        Time::ZERO + Interval::from_secs(1_000_000 + secs)
    }

    fn throttle() -> Throttle {
        Throttle::new(Settings {
            per_address: 3,
            per_user: 5,
            window: Duration::from_secs(60),
        })
    }

    #[test]
    fn an_address_is_refused_after_its_failures_and_forgiven_over_the_window() {
        let th = throttle();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for i in 0..3 {
            assert_eq!(th.wait(Some(ip), &format!("u{i}"), t(0)), None);
            th.fail(Some(ip), &format!("u{i}"), t(0));
        }
        // Three failures: refused, for about a third of the window.
        let w = th.wait(Some(ip), "other", t(0)).unwrap();
        assert!((20..=21).contains(&w), "{w}");
        assert!(th.wait(Some(ip), "other", t(19)).is_some());
        assert_eq!(th.wait(Some(ip), "other", t(21)), None);
        // Another address is not affected.
        assert_eq!(th.wait(Some("192.0.2.2".parse().unwrap()), "x", t(0)), None);
        // IPv4-mapped is the same client.
        assert!(
            th.wait(Some("::ffff:192.0.2.1".parse().unwrap()), "y", t(1))
                .is_some()
        );
    }

    #[test]
    fn a_user_is_refused_from_every_address() {
        let th = throttle();
        for i in 0..5u8 {
            th.fail(Some(IpAddr::from([198, 51, 100, i])), "alice", t(0));
        }
        assert!(
            th.wait(Some("203.0.113.9".parse().unwrap()), "alice", t(0))
                .is_some()
        );
        assert!(th.wait(None, "alice", t(0)).is_some());
        assert_eq!(th.wait(None, "bob", t(0)), None);
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        let th = throttle();
        for i in 0..3u16 {
            let ip = IpAddr::from([0x2001, 0xdb8, 0, 1, 0, 0, 0, i + 1]);
            th.fail(Some(ip), &format!("n{i}"), t(0));
        }
        let same_64: IpAddr = "2001:db8:0:1:ffff::1".parse().unwrap();
        let other_64: IpAddr = "2001:db8:0:2::1".parse().unwrap();
        assert!(th.wait(Some(same_64), "z", t(0)).is_some());
        assert_eq!(th.wait(Some(other_64), "z", t(0)), None);
    }

    #[test]
    fn the_maps_are_bounded() {
        let th = throttle();
        for i in 0..(MAX_KEYS as u32 + 500) {
            th.fail(Some(IpAddr::from(i.to_be_bytes())), "x", t(0));
        }
        let (a, _) = th.len();
        assert!(a <= MAX_KEYS, "{a}");
        // Once drained, new keys find room again.
        th.fail(Some("203.0.113.200".parse().unwrap()), "x", t(3600));
        assert!(th.len().0 <= MAX_KEYS);
        assert!(
            th.wait(Some("203.0.113.200".parse().unwrap()), "y", t(3600))
                .is_none()
        );
    }
}
