//! Reverse DNS for the "Local Blocks" tables (the only place catchd asks DNS anything).
//!
//! Lookups run on the blocking pool, at most [`MAX_PER_PAGE`] per page, and a page waits
//! for them at most [`BUDGET`]: a slow resolver makes the DNS column empty, never the page
//! slow. Answers (and failures) are remembered for [`TTL`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long an answer is kept.
pub const TTL: Duration = Duration::from_secs(3600);
/// The longest a page waits for names.
pub const BUDGET: Duration = Duration::from_millis(1500);
/// Lookups started for one page at most.
pub const MAX_PER_PAGE: usize = 64;
/// Answers kept at most.
const MAX_CACHED: usize = 10_000;

/// Names (or their absence) by address, with when they were looked up.
type Cache = Arc<Mutex<HashMap<IpAddr, (Option<String>, Instant)>>>;

/// A cache of reverse lookups.
#[derive(Default)]
pub struct Resolver {
    cache: Cache,
}

impl Resolver {
    /// The names of these addresses that are known or can be found within [`BUDGET`].
    pub async fn names(&self, addrs: &[IpAddr]) -> HashMap<IpAddr, String> {
        let now = Instant::now();
        let mut out = HashMap::new();
        let mut todo = Vec::new();
        {
            let c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            for a in addrs {
                match c.get(a) {
                    Some((Some(n), at)) if now.duration_since(*at) < TTL => {
                        out.insert(*a, n.clone());
                    }
                    Some((None, at)) if now.duration_since(*at) < TTL => {}
                    _ if todo.len() < MAX_PER_PAGE && !todo.contains(a) => todo.push(*a),
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
            tasks.spawn_blocking(move || {
                let name = dns_lookup::lookup_addr(&a)
                    .ok()
                    .filter(|n| *n != a.to_string());
                let mut c = cache.lock().unwrap_or_else(|p| p.into_inner());
                if c.len() >= MAX_CACHED {
                    c.clear();
                }
                c.insert(a, (name.clone(), Instant::now()));
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
