//! Signed-in browsers: sessions kept in memory, each with its CSRF token and a one-shot
//! message for the next page.
//!
//! The cookie holds 32 random bytes (hex); the table is keyed by their SHA-256, so a
//! memory dump does not hand out live cookies. Sessions end after [`IDLE`] without a
//! request, after [`MAX_AGE`] in any case, on sign-out, and when the server restarts.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::bhr::model::UserId;

/// A session ends after this long without a request.
pub const IDLE: Duration = Duration::from_secs(8 * 3600);
/// A session ends this long after sign-in, used or not.
pub const MAX_AGE: Duration = Duration::from_secs(7 * 86_400);
/// Sessions kept at most (the oldest goes first).
const MAX_SESSIONS: usize = 100_000;

/// The session cookie's name.
pub const COOKIE: &str = "catchd_session";
/// The cookie carrying the sign-in form's CSRF token (before there is a session).
pub const CSRF_COOKIE: &str = "catchd_csrf";

/// One signed-in browser.
#[derive(Clone, Debug)]
pub struct Session {
    /// Who.
    pub user: UserId,
    /// The token every form of this session must carry.
    pub csrf: String,
    /// A message for the next page shown.
    pub flash: Option<String>,
    started: Instant,
    seen: Instant,
}

/// The sessions of this process.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<[u8; 32], Session>>,
}

/// 32 random bytes as 64 hex digits.
pub fn random_token() -> String {
    let b: [u8; 32] = rand::random();
    let mut s = String::with_capacity(64);
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

fn key(cookie: &str) -> [u8; 32] {
    Sha256::digest(cookie.as_bytes()).into()
}

/// Compares two secrets in time independent of where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a session for `user`; returns the cookie value.
    pub fn start(&self, user: UserId) -> String {
        let cookie = random_token();
        let now = Instant::now();
        let mut m = self.lock();
        if m.len() >= MAX_SESSIONS {
            m.retain(|_, s| live(s, now));
            if m.len() >= MAX_SESSIONS
                && let Some(oldest) = m.iter().min_by_key(|(_, s)| s.seen).map(|(k, _)| *k)
            {
                m.remove(&oldest);
            }
        }
        m.insert(
            key(&cookie),
            Session {
                user,
                csrf: random_token(),
                flash: None,
                started: now,
                seen: now,
            },
        );
        cookie
    }

    /// The live session of a cookie (marking it used), taking its flash message.
    pub fn get(&self, cookie: &str) -> Option<Session> {
        let now = Instant::now();
        let mut m = self.lock();
        let k = key(cookie);
        let s = m.get_mut(&k)?;
        if !live(s, now) {
            m.remove(&k);
            return None;
        }
        s.seen = now;
        let out = s.clone();
        s.flash = None;
        Some(out)
    }

    /// The user of a live session (marking it used), leaving its flash message.
    pub fn user(&self, cookie: &str) -> Option<UserId> {
        let now = Instant::now();
        let mut m = self.lock();
        let s = m.get_mut(&key(cookie))?;
        if !live(s, now) {
            return None;
        }
        s.seen = now;
        Some(s.user)
    }

    /// Leaves a message for the session's next page.
    pub fn flash(&self, cookie: &str, msg: String) {
        if let Some(s) = self.lock().get_mut(&key(cookie)) {
            s.flash = Some(msg);
        }
    }

    /// Ends a session.
    pub fn end(&self, cookie: &str) {
        self.lock().remove(&key(cookie));
    }
}

fn live(s: &Session, now: Instant) -> bool {
    now.duration_since(s.seen) < IDLE && now.duration_since(s.started) < MAX_AGE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_start_end_and_carry_one_flash() {
        let s = Sessions::default();
        let c = s.start(7);
        assert_eq!(c.len(), 64);
        let got = s.get(&c).unwrap();
        assert_eq!(got.user, 7);
        assert_eq!(got.csrf.len(), 64);
        assert!(s.get("nope").is_none());
        s.flash(&c, "done".into());
        assert_eq!(s.get(&c).unwrap().flash.as_deref(), Some("done"));
        assert_eq!(s.get(&c).unwrap().flash, None);
        s.end(&c);
        assert!(s.get(&c).is_none());
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
    }
}
