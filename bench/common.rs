//! Shared by the benchmarks: the synthetic traffic and an engine watching many addresses.

#![allow(dead_code)]

#[path = "../fixtures/synth.rs"]
pub mod synth;

use catchd::addr::Addr;
use catchd::cnr::{Config, Engine};
use catchd::time::Time;

/// An engine with the built-in backend that has dropped `n` addresses ([`synth::watched`])
/// at trace time 0, with every output taken and discarded.
pub fn engine_watching(n: u64, cfg: Config) -> Engine {
    let mut e = Engine::with_accepting_backend(cfg, "bench");
    let t = Time::from_timeval(synth::T0 as i64, 0);
    e.advance(t);
    for i in 0..n {
        e.drop_catch_release(t, Addr::from(synth::watched(i)), "");
        if i % 4096 == 0 {
            e.drain_all();
            while e.poll_output().is_some() {}
        }
    }
    e.drain_all();
    while e.poll_output().is_some() {}
    assert_eq!(e.watched().len() as u64, n, "every address is distinct");
    e
}
