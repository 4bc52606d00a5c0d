//! BHR's records and settings (bhr.md §2-§3).

use std::sync::Arc;

use ipnet::IpNet;

use crate::time::Time;

pub use crate::auth::UserId;

/// A block request's outcome record: BHR's `Block` row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// Serial id, from 1.
    pub id: u64,
    /// The network, canonical (host bits clear).
    pub cidr: IpNet,
    /// Who asked.
    pub who: UserId,
    /// Free text such as `bro`, `cli`, `web` (at most 30 characters).
    pub source: Arc<str>,
    /// Free text.
    pub why: Arc<str>,
    /// When it was created.
    pub added: Time,
    /// When it ends; `None` is indefinite.
    pub unblock_at: Option<Time>,
    /// Whether the whitelist, prefix-length and source-blacklist checks were skipped.
    pub skip_whitelist: bool,
    /// Set by `unblock_now`.
    pub forced_unblock: bool,
    /// Why `unblock_now` was called.
    pub unblock_why: Arc<str>,
    /// Who called `unblock_now`.
    pub unblock_who: Option<UserId>,
}

impl Block {
    /// `unblock_at - added`, in microseconds; `None` for an indefinite block.
    pub fn duration_micros(&self) -> Option<i64> {
        self.unblock_at.map(|u| (u - self.added).as_micros())
    }
}

/// A block manager's record that it put a block in place: BHR's `BlockEntry` row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Serial id, from 1: what unblock-queue rows carry and `set_unblocked` takes.
    pub id: u64,
    /// The block.
    pub block: u64,
    /// The block manager's ident (at most 50 characters).
    pub ident: Arc<str>,
    /// When the ident reported it blocked.
    pub added: Time,
    /// When the ident reported it removed; `None` while installed.
    pub removed: Option<Time>,
    /// A copy of the block's `unblock_at`, refreshed on extend and `unblock_now`.
    pub unblock_at: Option<Time>,
}

/// A network that must never be blocked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WhitelistEntry {
    /// Serial id.
    pub id: u64,
    /// The network.
    pub cidr: IpNet,
    /// Who added it.
    pub who: UserId,
    /// Why.
    pub why: Arc<str>,
    /// When.
    pub added: Time,
}

/// A block source whose requests are refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceBlacklistEntry {
    /// Serial id.
    pub id: u64,
    /// The source name (unique).
    pub source: Arc<str>,
    /// Who added it.
    pub who: UserId,
    /// Why.
    pub why: Arc<str>,
    /// When.
    pub added: Time,
}

/// BHR's settings (`settings.BHR`), with its documented defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Autoscale: a repeat within `max(minimum_time_window, factor × last)` doubles.
    pub time_window_factor: f64,
    /// Autoscale: the shortest window, in seconds (12 h).
    pub minimum_time_window: f64,
    /// Autoscale: the multiplier for a quick repeat.
    pub penalty_time_multiplier: f64,
    /// Autoscale: repeats within `factor × multiplier × last` keep the last duration.
    pub return_to_base_multiplier: f64,
    /// Autoscale: later repeats get `last / factor`.
    pub return_to_base_factor: f64,
    /// Shortest IPv4 prefix that may be blocked.
    pub minimum_prefixlen: u8,
    /// Shortest IPv6 prefix that may be blocked.
    pub minimum_prefixlen_v6: u8,
    /// Networks counted as local on the list pages.
    pub local_networks: Vec<IpNet>,
    /// Whether the limited views (`publist.csv`, `query_limited`) are public.
    pub unauthenticated_limited_query: bool,
    /// Networks no block may overlap, `skip_whitelist` or not (`/0` never may either).
    pub never_block: Vec<IpNet>,
    /// No block may hold an address of the host catchd runs on.
    pub never_block_host: bool,
    /// The roles whose requests may set `skip_whitelist` (BHR: anyone who may block).
    pub skip_whitelist_roles: Vec<crate::auth::Role>,
}

/// The networks never blocked unless `bhr.never_block` says otherwise: loopback,
/// link-local, multicast, the unspecified and broadcast addresses.
pub const NEVER_BLOCK: [&str; 9] = [
    "127.0.0.0/8",
    "::1/128",
    "169.254.0.0/16",
    "fe80::/10",
    "224.0.0.0/4",
    "ff00::/8",
    "0.0.0.0/32",
    "::/128",
    "255.255.255.255/32",
];

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            time_window_factor: 2.0,
            minimum_time_window: 43_200.0,
            penalty_time_multiplier: 2.0,
            return_to_base_multiplier: 2.0,
            return_to_base_factor: 2.0,
            minimum_prefixlen: 23,
            minimum_prefixlen_v6: 64,
            local_networks: vec!["10.0.0.0/8".parse().expect("valid network")],
            unauthenticated_limited_query: false,
            never_block: NEVER_BLOCK
                .iter()
                .map(|n| n.parse().expect("valid network"))
                .collect(),
            never_block_host: true,
            skip_whitelist_roles: vec![crate::auth::Role::Admin],
        }
    }
}
