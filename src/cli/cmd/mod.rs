//! One module per command: its arguments and what it does.

pub(super) mod check_config;
pub(super) mod docs;
pub(super) mod exabgp_bridge;
pub(super) mod import_bhr;
pub(super) mod manager;
pub(super) mod proxy;
pub(super) mod replay;
pub(super) mod run;
pub(super) mod scan;
pub(super) mod serve;
pub(super) mod user;
