//! Route-level tests of the BHR API (bhr.md §4-§8), in-process with a driven clock.

pub mod harness;

mod auth;
mod blocks;
mod managers;
mod reads;
mod store;
