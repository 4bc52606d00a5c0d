//! The one integration-test binary (see Cargo.toml `[[test]]`).

mod abuse;
mod api;
mod arbitrary;
mod baselines;
mod bgp;
mod bus;
mod daemon;
mod enforce;
mod import;
mod networks;
mod package;
mod pg;
mod pgstore;
mod replay;
mod scan;
mod serve;
mod support;
mod watchlist;
mod web;
mod zeek;
mod zeek_scripts;
