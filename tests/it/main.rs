//! The one integration-test binary (see Cargo.toml `[[test]]`).

mod baselines;
mod replay;
mod support;
