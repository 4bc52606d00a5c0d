//! The HTTP APIs over the registry: BHR's ([`bhr`]: its endpoints, and the one change
//! path every writer of the registry goes through) and BlackRed's watchlist
//! ([`watchlist`]). Both sit above the store: a change is answered after it is durable.

pub mod bhr;
pub mod watchlist;
