//! Password checks that an attacker cannot turn into memory, CPU or knowledge.
//!
//! * **Bounded.** argon2 runs on a small pool of threads of its own (one per core, at most
//!   eight), each reusing one memory area for every check, fed by a bounded queue. However
//!   many wrong passwords arrive at once, argon2 holds at most `threads × m_cost` of memory
//!   (19 MiB each with argon2's default parameters) and the queue a few kilobytes; a check
//!   that finds the queue full is refused (503) at once.
//! * **Equal work.** A name nobody has, and a user without a password, are checked against
//!   a hash made with the same parameters as real ones, so the answer takes as long as for
//!   a wrong password: names cannot be told apart by timing.
//! * **Throttled.** Failures are counted per client address and per user name
//!   ([`super::throttle`]); past the limit the caller is told to wait (429) before any
//!   argon2 work is done.

use std::sync::{Arc, OnceLock};

use tokio::sync::oneshot;

use super::throttle::{Settings, Throttle};

/// Checks waiting for a verifier thread, at most.
pub const QUEUE: usize = 64;

/// The largest argon2 memory cost accepted from a stored hash, in KiB (256 MiB): a hash
/// put in the database cannot make one check take gigabytes.
const MAX_M_COST: u32 = 256 * 1024;

/// Why a password could not be checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    /// Too many failures from this address or for this name: wait this many seconds.
    #[error("too many failed sign-ins; try again in {0} s")]
    Throttled(u64),
    /// Every verifier is busy and the queue is full.
    #[error("too many password checks at once")]
    Busy,
}

struct Job {
    password: Vec<u8>,
    hash: Arc<str>,
    reply: oneshot::Sender<bool>,
}

/// The verifier threads (one pool per process, started on first use).
struct Pool {
    tx: crossbeam_channel::Sender<Job>,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = crossbeam_channel::bounded::<Job>(QUEUE);
        let n = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 8));
        for i in 0..n {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("catchd-argon2-{i}"))
                .spawn(move || {
                    let mut memory = Vec::new();
                    for job in rx {
                        let ok = verify_with(&job.password, &job.hash, &mut memory);
                        let _ = job.reply.send(ok);
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "Cannot start a password-check thread.");
            }
        }
        Pool { tx }
    })
}

/// Whether `password` matches `hash` (argon2 PHC string or Django's PBKDF2), with argon2's
/// memory taken from `memory` (grown as needed, kept for the next check).
fn verify_with(password: &[u8], hash: &str, memory: &mut Vec<argon2::Block>) -> bool {
    use argon2::{Algorithm, Argon2, Params, PasswordHash, Version};
    if hash.starts_with("pbkdf2_sha256$") {
        return std::str::from_utf8(password).is_ok_and(|p| super::verify_password(p, hash));
    }
    let Ok(h) = PasswordHash::new(hash) else {
        return false;
    };
    let (Some(salt), Some(want)) = (&h.salt, &h.hash) else {
        return false;
    };
    let Ok(alg) = Algorithm::try_from(h.algorithm.as_str()) else {
        return false;
    };
    let version = match h.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let Ok(params) = Params::try_from(&h) else {
        return false;
    };
    if params.m_cost() > MAX_M_COST {
        return false;
    }
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, argon2::Block::default());
    }
    let mut out = [0u8; 64];
    let Some(out) = out.get_mut(..want.len()) else {
        return false;
    };
    if Argon2::new(alg, version, params)
        .hash_password_into_with_memory(password, salt, out, &mut memory[..blocks])
        .is_err()
    {
        return false;
    }
    // Constant time.
    want.as_bytes()
        .iter()
        .zip(out.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

/// The hash names without a password are checked against (argon2's default parameters,
/// as real users' hashes have; made once).
fn decoy() -> Arc<str> {
    static DECOY: OnceLock<Arc<str>> = OnceLock::new();
    DECOY
        .get_or_init(|| {
            let mut pw = [0u8; 24];
            rand::fill(&mut pw[..]);
            let pw: String = pw.iter().map(|b| format!("{b:02x}")).collect();
            Arc::from(super::hash_password(&pw))
        })
        .clone()
}

/// Password checks for one server: the shared verifier pool, and this server's throttle.
#[derive(Debug)]
pub struct Passwords {
    throttle: Throttle,
}

impl Passwords {
    /// Checks with these throttling settings.
    pub fn new(settings: Settings) -> Passwords {
        Passwords {
            throttle: Throttle::new(settings),
        }
    }

    /// The throttle.
    pub fn throttle(&self) -> &Throttle {
        &self.throttle
    }

    /// Whether `password` is right for `name`, whose stored hash is `hash` (`None`: no
    /// such user, or no password: checked against a decoy, always wrong). `client` is the
    /// caller's address. A failure is counted; a throttled caller is refused before any
    /// work.
    ///
    /// # Errors
    /// [`CheckError`].
    pub async fn check(
        &self,
        client: Option<std::net::IpAddr>,
        name: &str,
        password: &str,
        hash: Option<&str>,
        now: crate::time::Time,
    ) -> Result<bool, CheckError> {
        if let Some(secs) = self.throttle.wait(client, name, now) {
            return Err(CheckError::Throttled(secs));
        }
        let (real, hash) = match hash {
            Some(h) => (true, Arc::from(h)),
            None => (false, decoy()),
        };
        let (reply, rx) = oneshot::channel();
        let job = Job {
            password: password.as_bytes().to_vec(),
            hash,
            reply,
        };
        if pool().tx.try_send(job).is_err() {
            return Err(CheckError::Busy);
        }
        let ok = rx.await.unwrap_or(false) && real;
        if !ok {
            self.throttle.fail(client, name, now);
        }
        Ok(ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_with_reused_memory() {
        let h = super::super::hash_password("hunter42");
        let mut mem = Vec::new();
        assert!(verify_with(b"hunter42", &h, &mut mem));
        let used = mem.len();
        assert!(used > 0);
        assert!(!verify_with(b"hunter43", &h, &mut mem));
        assert_eq!(mem.len(), used, "the memory is reused, not grown");
        assert!(!verify_with(b"x", "not a hash", &mut mem));
        assert!(!verify_with(
            b"x",
            "$argon2id$v=19$m=99999999,t=1,p=1$c2FsdHNhbHQ$aGFzaA",
            &mut mem
        ));
    }

    #[tokio::test]
    async fn unknown_names_are_wrong_and_counted() {
        let p = Passwords::new(Settings {
            per_address: 2,
            per_user: 100,
            window: std::time::Duration::from_secs(60),
        });
        let ip = Some("192.0.2.7".parse().unwrap());
        let now = crate::time::Time::from_micros(1_000_000_000_000_000);
        assert_eq!(p.check(ip, "nobody", "pw", None, now).await, Ok(false));
        let h = super::super::hash_password("right");
        assert_eq!(p.check(ip, "alice", "right", Some(&h), now).await, Ok(true));
        assert_eq!(
            p.check(ip, "alice", "wrong", Some(&h), now).await,
            Ok(false)
        );
        assert!(matches!(
            p.check(ip, "alice", "right", Some(&h), now).await,
            Err(CheckError::Throttled(_))
        ));
    }
}
