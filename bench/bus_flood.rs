//! Event-bus benchmark peer: one process publishes, another receives, through a
//! `catchd proxy` (see bench/bus.sh, which starts all three).
//!
//!   bus_flood send XSUB N [RATE]   publish N catch_release_encountered events (RATE per
//!                                  second, 0 = as fast as possible), each carrying its
//!                                  send time as network-timestamp metadata
//!   bus_flood recv XPUB N          receive N events; print events/s and one-way latency
//!
//! Both ends use catchd's bus module (the same code as `catchd run --bus`).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use catchd::addr::Addr;
use catchd::broker::zeek::{self, Incoming};
use catchd::broker::{Format, META_NETWORK_TIMESTAMP, Value};
use catchd::bus::{Node, Options};

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

fn options(xpub: &str, xsub: &str, id: &str, subscribe: Vec<String>) -> Options {
    Options {
        xpub: xpub.into(),
        xsub: xsub.into(),
        node_id: id.into(),
        format: Format::Bin,
        subscribe,
        queue: 65_536,
        curve: None,
        websocket: None,
    }
}

fn send(xsub: &str, n: u64, rate: u64) {
    let (node, _rx) =
        Node::start(options("tcp://127.0.0.1:1", xsub, "bench_send", vec![])).expect("bus");
    let p = node.publisher();
    // Wait until the receiver's subscription has come through (held events are sent
    // then anyway, but the timing should not include the start).
    while p
        .stats()
        .subscriptions
        .load(std::sync::atomic::Ordering::Relaxed)
        == 0
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    let start = Instant::now();
    for i in 0..n {
        // Paced in steps of a millisecond's worth of events (sleeping, not spinning:
        // the three processes share the machine).
        if rate > 0 && i % (rate / 1000).max(1) == 0 {
            let due = start + Duration::from_nanos(i * 1_000_000_000 / rate);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        let a = Addr::from_v4((0x0a00_0000u32 + (i as u32 % 65536)).to_be_bytes());
        let mut e = zeek::encountered(a);
        e.metadata
            .push((META_NETWORK_TIMESTAMP, Value::Timestamp(now_ns())));
        p.publish_waiting(zeek::MANAGER_TOPIC, e);
    }
    // Let the socket thread send the rest.
    while p
        .stats()
        .published
        .load(std::sync::atomic::Ordering::Relaxed)
        + p.stats()
            .xpub_drops
            .load(std::sync::atomic::Ordering::Relaxed)
        < n
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let st = p.stats();
    eprintln!(
        "sent {n} in {:.3} s, xpub drops {}",
        start.elapsed().as_secs_f64(),
        st.xpub_drops.load(std::sync::atomic::Ordering::Relaxed)
    );
    std::thread::sleep(Duration::from_millis(500));
    node.stop();
}

fn recv(xpub: &str, n: u64) {
    let (node, rx) = Node::start(options(
        xpub,
        "tcp://127.0.0.1:1",
        "bench_recv",
        vec![zeek::MANAGER_TOPIC.into()],
    ))
    .expect("bus");
    println!("ready");
    let mut lat = Vec::with_capacity(n as usize);
    let mut first = None;
    let mut got = 0u64;
    let mut last = Instant::now();
    while got < n {
        let Ok(r) = rx.recv_timeout(Duration::from_secs(20)) else {
            break;
        };
        let t = now_ns();
        first.get_or_insert_with(Instant::now);
        if let Incoming::Encountered(_) = r.event {
            got += 1;
            last = Instant::now();
            if let Some(sent) = r.network_time {
                lat.push(t - sent);
            }
        }
    }
    let secs = first.map_or(0.0, |f| (last - f).as_secs_f64());
    lat.sort_unstable();
    let q = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map_or(0.0, |ns| *ns as f64 / 1e6)
    };
    println!(
        "received {got} of {n} in {secs:.3} s: {:.0} events/s; latency ms p50 {:.3} p99 {:.3} max {:.3}",
        got as f64 / secs.max(1e-9),
        q(0.5),
        q(0.99),
        q(1.0)
    );
    node.stop();
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // cargo bench passes --bench; ignore flags.
    let args: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with("--"))
        .collect();
    match args.as_slice() {
        ["send", xsub, n, rest @ ..] => send(
            xsub,
            n.parse().unwrap(),
            rest.first().map_or(0, |r| r.parse().unwrap()),
        ),
        ["recv", xpub, n] => recv(xpub, n.parse().unwrap()),
        _ => eprintln!("usage: bus_flood send XSUB N [RATE] | recv XPUB N"),
    }
}
