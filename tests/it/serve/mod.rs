//! `catchd serve` as a process: the CLI around it, durability under SIGKILL, and the real
//! Python `bhr-client` package driving it.

pub mod process;

mod bhr_client;
mod cli;
mod durability;
