//! Reverse DNS for the "Local Blocks" tables (the only place catchd asks DNS anything).
//!
//! Lookups run on the blocking pool: at most [`MAX_PER_PAGE`] started per page and
//! [`MAX_IN_FLIGHT`] at once, each address once at a time however many pages ask. A page
//! waits for the lookups it started at most [`BUDGET`]: a slow resolver makes the DNS
//! column empty, never the page slow. Answers (and failures) are remembered for [`TTL`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long an answer is kept.
pub const TTL: Duration = Duration::from_secs(3600);
/// The longest a page waits for names.
pub const BUDGET: Duration = Duration::from_millis(500);
/// Lookups started for one page at most.
pub const MAX_PER_PAGE: usize = 64;
/// Lookups running at most.
pub const MAX_IN_FLIGHT: usize = 64;
/// Answers kept at most.
const MAX_CACHED: usize = 10_000;

/// What is known of an address.
enum Known {
    /// A lookup is running.
    Pending,
    /// The name, or that there is none, since when.
    Done(Option<String>, Instant),
}

/// A cache of reverse lookups.
#[derive(Default)]
pub struct Resolver {
    cache: Arc<Mutex<HashMap<IpAddr, Known>>>,
    in_flight: Arc<AtomicUsize>,
}

impl Resolver {
    /// The names of these addresses that are known or can be found within [`BUDGET`].
    pub async fn names(&self, addrs: &[IpAddr]) -> HashMap<IpAddr, String> {
        let now = Instant::now();
        let mut out = HashMap::new();
        let mut todo = Vec::new();
        {
            let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            for a in addrs {
                match c.get(a) {
                    Some(Known::Done(Some(n), at)) if now.duration_since(*at) < TTL => {
                        out.insert(*a, n.clone());
                    }
                    Some(Known::Done(None, at)) if now.duration_since(*at) < TTL => {}
                    Some(Known::Pending) => {}
                    _ if todo.len() < MAX_PER_PAGE
                        && self.in_flight.load(Ordering::Relaxed) < MAX_IN_FLIGHT =>
                    {
                        if c.len() >= MAX_CACHED {
                            c.retain(|_, k| matches!(k, Known::Pending));
                        }
                        c.insert(*a, Known::Pending);
                        self.in_flight.fetch_add(1, Ordering::Relaxed);
                        todo.push(*a);
                    }
                    _ => {}
                }
            }
        }
        if todo.is_empty() {
            return out;
        }
        let mut tasks = tokio::task::JoinSet::new();
        for a in todo {
            let cache = self.cache.clone();
            let in_flight = self.in_flight.clone();
            tasks.spawn_blocking(move || {
                let name = dns_lookup::lookup_addr(&a)
                    .ok()
                    .filter(|n| *n != a.to_string());
                cache
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(a, Known::Done(name.clone(), Instant::now()));
                in_flight.fetch_sub(1, Ordering::Relaxed);
                (a, name)
            });
        }
        let _ = tokio::time::timeout(BUDGET, async {
            while let Some(r) = tasks.join_next().await {
                if let Ok((a, Some(n))) = r {
                    out.insert(a, n);
                }
            }
        })
        .await;
        // Lookups still running finish on their own and fill the cache for next time.
        tasks.detach_all();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn loopback_has_a_name_and_lookups_are_remembered() {
        let r = Resolver::default();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let first = r.names(&[lo, lo]).await;
        // /etc/hosts names 127.0.0.1 on any Linux machine.
        assert!(first.get(&lo).is_some_and(|n| !n.is_empty()), "{first:?}");
        // Answered from the cache: nothing in flight, nothing started.
        let again = r.names(&[lo]).await;
        assert_eq!(again.get(&lo), first.get(&lo));
        assert_eq!(r.in_flight.load(Ordering::Relaxed), 0);
    }
}
