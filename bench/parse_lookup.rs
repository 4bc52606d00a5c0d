//! Parse + watch lookup per packet, with 1M watched addresses (criterion).
//!
//! The packets are 4096 frames of the same realistic mix as `pcapgen big` (fixtures/
//! synth.rs), about 2 MB, so they stay in cache as a frame libpcap has just copied into its
//! buffer does. The watch table holds 1M addresses (about 45 MB, so lookups miss cache as
//! they would in production), dropped through the real engine; the 40 000 sources of the
//! mix are among them. Three measurements:
//!
//! * `parse`: frame -> Observation only;
//! * `parse+lookup`: plus the sighting rule and `WatchTable::contains` for originators,
//!   which is what the capture path does for every packet;
//! * `parse+lookup/any-packet`: with every packet looked up (`--any-packet`).
//!
//! Per-packet time = reported time / 4096 (criterion's thrpt line gives packets/s).

mod common;

use common::synth;

use std::hint::black_box;

use catchd::cnr::Config;
use catchd::packet::{self, LinkType, Sightings};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const PACKETS: u64 = 4096;
const WATCHED: u64 = 1_000_000;

struct Frames {
    buf: Vec<u8>,
    spans: Vec<(usize, usize)>,
}

fn frames() -> Frames {
    let mut rng = synth::Rng(0x5eed | 1);
    let mut f = Frames {
        buf: Vec::new(),
        spans: Vec::new(),
    };
    for i in 0..PACKETS {
        let p = synth::mix(&mut rng, i);
        let fr = synth::frame(synth::Link::Ethernet, &p);
        f.spans.push((f.buf.len(), fr.len()));
        f.buf.extend_from_slice(&fr);
    }
    f
}

fn bench(c: &mut Criterion) {
    let f = frames();
    let e = common::engine_watching(
        WATCHED,
        Config {
            max_timer_expires: None,
            ..Config::default()
        },
    );
    let watch = e.watched().clone();
    let mut g = c.benchmark_group("per_packet");
    g.throughput(Throughput::Elements(PACKETS));
    g.bench_function("parse", |b| {
        b.iter(|| {
            let mut n = 0u32;
            for &(off, len) in &f.spans {
                if let Ok(o) = packet::parse(LinkType::Ethernet, black_box(&f.buf[off..off + len]))
                {
                    n = n.wrapping_add(u32::from(o.tcp_flags));
                }
            }
            n
        })
    });
    for (name, s) in [
        ("parse+lookup", Sightings::Starts),
        ("parse+lookup/any-packet", Sightings::AnyPacket),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut hits = 0u32;
                for &(off, len) in &f.spans {
                    if let Ok(o) =
                        packet::parse(LinkType::Ethernet, black_box(&f.buf[off..off + len]))
                        && let Some(a) = s.originator(&o)
                    {
                        hits += u32::from(watch.contains(&a));
                    }
                }
                hits
            })
        });
    }
    // Zeek's connection life cycle (the default rule): the connection table is looked at
    // only for packets with a watched end.
    g.bench_function("parse+lookup/connections", |b| {
        b.iter(|| {
            let mut sighter = catchd::conn::Sighter::new(Sightings::Connections);
            let mut hits = 0u32;
            for (i, &(off, len)) in f.spans.iter().enumerate() {
                let now = catchd::time::Time::from_micros(1_700_000_000_000_000 + i as i64);
                sighter.advance(now, |_, _, _| hits += 1);
                if let Ok(o) = packet::parse(LinkType::Ethernet, black_box(&f.buf[off..off + len]))
                {
                    sighter.packet(
                        now,
                        &o,
                        watch.changes(),
                        |a| watch.may_contain(a),
                        |a| watch.contains(a),
                        |_, _| hits += 1,
                    );
                }
            }
            hits
        })
    });
    g.finish();
    networks(c, &f);
}

/// The same lookup with catch-and-release of networks on and 100 000 networks watched
/// (none of which holds the mix's sources, as most watched networks hold none of a
/// trace's traffic): what the second pre-filter costs per packet.
fn networks(c: &mut Criterion, f: &Frames) {
    let mut e = common::engine_watching(
        WATCHED,
        Config {
            max_timer_expires: None,
            // The highest threshold allowed: of the million addresses' networks only
            // the /64s of their IPv6 ones reach it (two); the 100 000 below are dropped
            // directly.
            networks: Some(catchd::cnr::Networks {
                threshold: 1000,
                ..catchd::cnr::Networks::with_intervals(catchd::cnr::Intervals::default())
            }),
            ..Config::default()
        },
    );
    let t = catchd::time::Time::from_timeval(synth::T0 as i64, 0);
    let before = e.watched().net_len() as u64;
    for i in 0..NETWORKS {
        // The /24s of 10.128.0.0/9, then /64s of 2001:db8:fff0::/44: no source of the
        // mix is in them.
        let n: ipnet::IpNet = if i < 32_768 {
            let v = 0x0A80_0000u32 | ((i as u32) << 8);
            format!("{}/24", std::net::Ipv4Addr::from(v))
                .parse()
                .unwrap()
        } else {
            format!("2001:db8:{:x}:{:x}::/64", 0xfff0 + i / 65_536, i % 65_536)
                .parse()
                .unwrap()
        };
        e.drop_net_catch_release(t, n, "bench");
        if i % 4096 == 0 {
            e.drain_all();
            while e.poll_output().is_some() {}
        }
    }
    e.drain_all();
    while e.poll_output().is_some() {}
    assert_eq!(e.watched().net_len() as u64, before + NETWORKS);
    let watch = e.watched().clone();
    let mut g = c.benchmark_group("per_packet");
    g.throughput(Throughput::Elements(PACKETS));
    g.bench_function("parse+lookup/100k-networks", |b| {
        b.iter(|| {
            let mut hits = 0u32;
            for &(off, len) in &f.spans {
                if let Ok(o) = packet::parse(LinkType::Ethernet, black_box(&f.buf[off..off + len]))
                    && let Some(a) = Sightings::Starts.originator(&o)
                {
                    hits += u32::from(watch.contains(&a));
                }
            }
            hits
        })
    });
    g.finish();
}

const NETWORKS: u64 = 100_000;

criterion_group!(benches, bench);
criterion_main!(benches);
