//! Formatting Zeek log lines (criterion): the five lines a catch-and-release drop writes
//! (`netcontrol.log` REQUESTED and SUCCEEDED, `netcontrol_drop.log`, and
//! `netcontrol_catch_release.log` DROP_REQUESTED and DROPPED), in TSV and in JSON, into
//! memory. This is the log writer thread's work apart from the `write` calls, and with the
//! engine's it bounds how fast a replay applies drops.
//!
//! Per-line time = reported time / lines (criterion's thrpt line gives lines/s).

use std::hint::black_box;
use std::net::Ipv4Addr;

use catchd::cnr::{Config, Engine, Output};
use catchd::time::Time;
use catchd::zeeklog::{Format, Formatter, Lines};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const DROPS: u32 = 1024;

/// The outputs of `DROPS` drops made at once and answered, as a replay makes them.
fn outputs() -> Vec<Output> {
    let mut e = Engine::with_accepting_backend(Config::default(), "Debug-All");
    let t = Time::from_micros(1_700_000_000_000_000);
    for i in 0..DROPS {
        let a = Ipv4Addr::from(0x0a00_0000 + i * 7919);
        e.drop_catch_release(t, a, "bench");
    }
    e.drain(2);
    std::iter::from_fn(|| e.poll_output()).collect()
}

fn bench(c: &mut Criterion) {
    let outs = outputs();
    let lines = outs
        .iter()
        .filter(|o| {
            matches!(
                o,
                Output::CatchRelease(_) | Output::NetControl(_) | Output::Drop(_)
            )
        })
        .count();
    // Five per drop, and the plugin's three activation messages.
    assert_eq!(lines, 5 * DROPS as usize + 3);
    let mut g = c.benchmark_group("log_lines");
    g.throughput(Throughput::Elements(lines as u64));
    for (name, format) in [("tsv", Format::Tsv), ("json", Format::Json)] {
        // What a log writer does with a batch, or the replay when the writer is behind.
        let mut formatter = Formatter::new(format);
        let mut lines = Lines::default();
        g.bench_function(name, |b| {
            b.iter(|| {
                lines.clear();
                formatter.format(black_box(&outs), &mut lines);
                black_box(lines.bytes())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
