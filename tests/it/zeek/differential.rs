//! Catch-and-release, differential: the same trace and the same drop schedule through
//! Zeek (`zeek -b -r TRACE`, NetControl, catch-and-release and the debug plugin, with a
//! driver script that makes the drops at their network times) and through
//! `catchd replay`; the three NetControl logs must be the same line for line, headers
//! included (only `#open`/`#close` differ), in TSV and in JSON.
//!
//! Zeek runs in bare mode (`-b`), with `likely_server_ports` set as Zeek's default scripts
//! set it, which is what `catchd replay`'s default sighting rule (`connections`) follows:
//! Zeek's connection life cycle on a sensor.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use proptest::prelude::*;
use proptest::test_runner::Config;

use super::{Zeek, run_zeek, zeek};
use crate::support::{fixture, read};

#[path = "../../../fixtures/synth.rs"]
#[allow(unreachable_pub)]
pub(crate) mod synth;

use synth::{L4, Link, Pkt, Vlan};

/// One drop (or, with `unblock`, an unblock whose reason is `location`): at the first
/// packet (`None`) or at an absolute network time.
#[derive(Clone, Debug)]
pub struct Drop {
    pub at: Option<f64>,
    pub addr: String,
    pub location: String,
    pub unblock: bool,
}

/// A trace, a drop schedule and the settings both sides run with.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub trace: PathBuf,
    pub drops: Vec<Drop>,
    /// The escalation ladder, in milliseconds.
    pub intervals_ms: Vec<u64>,
    pub json: bool,
}

const LOGS: [&str; 3] = [
    "netcontrol_catch_release.log",
    "netcontrol.log",
    "netcontrol_drop.log",
];

/// The Zeek script that makes `s`'s drops at their network times.
fn driver(s: &Scenario) -> String {
    let mut z = String::from(
        "@load base/frameworks/netcontrol\n\
         @load policy/frameworks/netcontrol/catch-and-release\n",
    );
    let ladder: Vec<String> = s
        .intervals_ms
        .iter()
        .map(|ms| format!("{ms}msec"))
        .collect();
    let _ = writeln!(
        z,
        "redef NetControl::catch_release_intervals = vector({});",
        ladder.join(", ")
    );
    if s.json {
        z.push_str("redef LogAscii::use_json = T;\n");
    }
    let (tcp, udp) = catchd::conn::ServerPorts::zeek_default().ports();
    let ports: Vec<String> = tcp
        .iter()
        .map(|p| format!("{p}/tcp"))
        .chain(udp.iter().map(|p| format!("{p}/udp")))
        .collect();
    let _ = writeln!(
        z,
        "redef likely_server_ports += {{ {} }};",
        ports.join(", ")
    );
    z.push_str(
        "event NetControl::init() { NetControl::activate(NetControl::create_debug(T), 0); }\n",
    );
    // Zeek warns about a handler of an event nothing generates.
    let scheduled = |unblock: bool| {
        s.drops
            .iter()
            .any(|d| d.at.is_some() && d.unblock == unblock)
    };
    if scheduled(false) {
        z.push_str(
            "event catchd_drop(a: addr, loc: string) \
             { NetControl::drop_address_catch_release(a, loc); }\n",
        );
    }
    if scheduled(true) {
        z.push_str(
            "event catchd_unblock(a: addr, reason: string) \
             { NetControl::unblock_address_catch_release(a, reason); }\n",
        );
    }
    z.push_str("event network_time_init() {\n");
    // As catchd places them: at one time, drops before unblocks.
    let ordered = s
        .drops
        .iter()
        .filter(|d| !d.unblock)
        .chain(s.drops.iter().filter(|d| d.unblock));
    for d in ordered {
        let (function, event) = if d.unblock {
            (
                "NetControl::unblock_address_catch_release",
                "catchd_unblock",
            )
        } else {
            ("NetControl::drop_address_catch_release", "catchd_drop")
        };
        // An IPv6 literal is bracketed in Zeek's script language.
        let addr = if d.addr.contains(':') {
            format!("[{}]", d.addr)
        } else {
            d.addr.clone()
        };
        let call = format!("{addr}, \"{}\"", d.location);
        match d.at {
            // At the first packet: in the same step, as catchd applies it.
            None => {
                let _ = writeln!(z, "  {function}({call});");
            }
            Some(t) => {
                let _ = writeln!(
                    z,
                    "  if ( double_to_time({t:.6}) <= network_time() ) {function}({call});\n  \
                     else schedule double_to_time({t:.6}) - network_time() {{ {event}({call}) }};"
                );
            }
        }
    }
    z.push_str("}\n");
    z
}

fn drops_csv(s: &Scenario) -> String {
    let mut c = String::from("ts,addr,location\n");
    for d in s.drops.iter().filter(|d| !d.unblock) {
        let ts = d.at.map(|t| format!("{t:.6}")).unwrap_or_default();
        let _ = writeln!(c, "{ts},{},{}", d.addr, d.location);
    }
    c
}

/// A log's lines without `#open`/`#close` (and nothing for a log that was not written),
/// with the two orders Zeek itself does not fix put in a canonical order:
///
/// * Zeek forgets the addresses one sweep expires in its table's hash order, seeded at
///   random per process: a run of FORGOTTEN lines with one timestamp is sorted.
/// * Zeek's timer heap orders timers with equal deadlines by its shape, which depends on
///   every timer Zeek holds (connections' included). Blocks that began at one packet with
///   one length end together, in either order: in a run of block-end lines (EXPIRE and
///   REMOVE in `netcontrol.log`, UNBLOCK in `netcontrol_catch_release.log`) with one
///   timestamp, the lines are grouped by rule id, each rule's lines keeping their order.
fn body(dir: &Path, name: &str) -> String {
    let p = dir.join(name);
    if !p.exists() {
        return String::new();
    }
    let text = read(&p);
    let mut lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("#open") && !l.starts_with("#close"))
        .collect();
    canonical_runs(&mut lines, |l| l.contains("NetControl::FORGOTTEN"), None);
    canonical_runs(
        &mut lines,
        |l| {
            [
                "\tEXPIRE\t",
                "\tREMOVE\t",
                "\"cmd\":\"EXPIRE\"",
                "\"cmd\":\"REMOVE\"",
            ]
            .iter()
            .any(|k| l.contains(k))
                || l.contains("NetControl::UNBLOCK")
        },
        Some(rule_id),
    );
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// The first field of a TSV or JSON line (the timestamp).
fn first_field(l: &str) -> &str {
    l.trim_start_matches("{\"ts\":")
        .split(['\t', ','])
        .next()
        .unwrap_or("")
}

/// The rule id of a TSV or JSON line (0 if none).
fn rule_id(l: &str) -> u64 {
    let field = match l.split_once("\"rule_id\":\"") {
        Some((_, rest)) => rest.split('"').next(),
        None => l.split('\t').nth(1),
    };
    field.and_then(|f| f.parse().ok()).unwrap_or(0)
}

/// Sorts each run of consecutive lines with one timestamp that all match `within`: by
/// `key`, stably, or (with no key) wholly.
fn canonical_runs(lines: &mut [&str], within: impl Fn(&str) -> bool, key: Option<fn(&str) -> u64>) {
    let mut i = 0;
    while i < lines.len() {
        if !within(lines[i]) {
            i += 1;
            continue;
        }
        let ts = first_field(lines[i]).to_string();
        let mut j = i + 1;
        while j < lines.len() && within(lines[j]) && first_field(lines[j]) == ts {
            j += 1;
        }
        let run = &mut lines[i..j];
        match key {
            Some(key) => run.sort_by_key(|l| key(l)),
            None => run.sort_unstable(),
        }
        i = j;
    }
}

/// Whether a log holds any record.
fn has_records(text: &str) -> bool {
    text.lines().any(|l| !l.starts_with('#'))
}

/// Runs both and returns the first log that differs, as a readable report.
fn differ(z: &Zeek, s: &Scenario) -> Option<String> {
    let dir = tempfile::tempdir().unwrap();
    let (zd, cd) = (dir.path().join("zeek"), dir.path().join("catchd"));
    std::fs::create_dir_all(&zd).unwrap();
    std::fs::create_dir_all(&cd).unwrap();
    std::fs::write(zd.join("driver.zeek"), driver(s)).unwrap();
    let trace = s.trace.to_str().unwrap();
    run_zeek(z, &zd, &["-b", "-r", trace, "driver.zeek"]);
    std::fs::write(dir.path().join("drops.csv"), drops_csv(s)).unwrap();
    let ladder: Vec<String> = s.intervals_ms.iter().map(|ms| format!("{ms}ms")).collect();
    let mut c = Command::new(env!("CARGO_BIN_EXE_catchd"));
    c.args(["replay", "--no-progress", "--intervals", &ladder.join(",")])
        .arg("--drops")
        .arg(dir.path().join("drops.csv"))
        .arg("--log-dir")
        .arg(&cd)
        .arg(&s.trace);
    if s.json {
        c.arg("--json");
    }
    for d in s.drops.iter().filter(|d| d.unblock) {
        let at = d.at.map(|t| format!("@{t:.6}")).unwrap_or_default();
        c.arg("--unblock")
            .arg(format!("{}{at}={}", d.addr, d.location));
    }
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "catchd replay failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for log in LOGS {
        let (want, got) = (body(&zd, log), body(&cd, log));
        // Zeek only creates a log when it writes a record to it.
        if want.is_empty() && !has_records(&got) {
            continue;
        }
        if want != got {
            let mut report = format!("{log} differs (Zeek {}):\n", z.version);
            for (i, (w, g)) in want.lines().zip(got.lines()).enumerate() {
                if w != g {
                    let _ = writeln!(report, "line {}:\n  zeek:   {w}\n  catchd: {g}", i + 1);
                }
            }
            let (nw, ng) = (want.lines().count(), got.lines().count());
            if nw != ng {
                let _ = writeln!(report, "zeek wrote {nw} lines, catchd {ng}");
                let longer = if nw > ng { &want } else { &got };
                for l in longer.lines().skip(nw.min(ng)) {
                    let _ = writeln!(
                        report,
                        "  only in {}: {l}",
                        if nw > ng { "zeek" } else { "catchd" }
                    );
                }
            }
            let _ = writeln!(report, "driver:\n{}drops:\n{}", driver(s), drops_csv(s));
            return Some(report);
        }
    }
    None
}

#[track_caller]
fn same(s: &Scenario) {
    let Some(z) = zeek() else { return };
    for json in [false, true] {
        let s = Scenario { json, ..s.clone() };
        if let Some(report) = differ(z, &s) {
            panic!("{}: {report}", s.trace.display());
        }
    }
}

fn read_drops(csv: &str) -> Vec<Drop> {
    read(&fixture(csv))
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut f = l.splitn(3, ',');
            let ts = f.next().unwrap();
            Drop {
                at: (!ts.is_empty()).then(|| ts.parse().unwrap()),
                addr: f.next().unwrap().to_string(),
                location: f.next().unwrap_or("").to_string(),
                unblock: false,
            }
        })
        .collect()
}

fn fixture_scenario(trace: &str, drops: &str, intervals_ms: &[u64]) -> Scenario {
    Scenario {
        trace: fixture(trace),
        drops: read_drops(drops),
        intervals_ms: intervals_ms.to_vec(),
        json: false,
    }
}

#[test]
fn the_bundled_traces_log_as_zeek_logs_them() {
    let fast = [10_000, 30_000, 60_000];
    for trace in [
        "returning.pcap",
        "returning.pcapng",
        "returning-vlan.pcap",
        "returning-sll.pcap",
        "returning-sll2.pcap",
        "returning-raw.pcap",
        "returning-null.pcap",
    ] {
        same(&fixture_scenario(trace, "returning.drops.csv", &fast));
    }
    same(&fixture_scenario(
        "returning-v6.pcap",
        "returning-v6.drops.csv",
        &fast,
    ));
}

#[test]
fn zeeks_own_ladder_on_the_bundled_trace() {
    same(&fixture_scenario(
        "returning.pcap",
        "returning.drops.csv",
        &[600_000, 3_600_000, 86_400_000, 604_800_000],
    ));
}

#[test]
fn drops_between_packets_at_one_packet_and_after_the_trace() {
    let t = |s: f64| Some(synth::T0 as f64 + s);
    let d = |at, addr: &str, location: &str| Drop {
        at,
        addr: addr.into(),
        location: location.into(),
        unblock: false,
    };
    same(&Scenario {
        trace: fixture("returning.pcap"),
        drops: vec![
            // Before the first packet: made at it, in this order.
            d(t(-30.0), "192.0.2.1", "early"),
            d(None, "192.0.2.2", "first"),
            // Twice at the first packet: the second is a duplicate.
            d(None, "192.0.2.2", "again"),
            // Three between two packets (T+5 and T+5.5): all made at T+5.5, every
            // DROP_REQUESTED before every DROPPED.
            d(t(5.1), "192.0.2.3", "a"),
            d(t(5.2), "192.0.2.4", "b"),
            d(t(5.3), "192.0.2.6", "c"),
            // After the last packet (T+130.5): made at termination.
            d(t(500.0), "192.0.2.5", "late"),
        ],
        intervals_ms: vec![10_000, 30_000, 60_000],
        json: false,
    });
}

#[test]
fn unblocks_while_blocked_while_watched_of_unknown_addresses_and_after_the_trace() {
    let t = |s: f64| Some(synth::T0 as f64 + s);
    let d = |at, addr: &str, location: &str, unblock| Drop {
        at,
        addr: addr.into(),
        location: location.into(),
        unblock,
    };
    same(&Scenario {
        trace: fixture("returning.pcap"),
        drops: vec![
            d(None, "203.0.113.66", "scan detected", false),
            d(t(5.0), "203.0.113.77", "brute force", false),
            // Never dropped: nothing to unblock.
            d(None, "192.0.2.9", "nothing", true),
            // While blocked, between packets.
            d(t(3.3), "203.0.113.77", "too early", true),
            // B again, then unblocked while released and watched.
            d(t(20.0), "203.0.113.77", "again", false),
            d(t(33.7), "203.0.113.77", "operator", true),
            // A, after its re-blocks; and one after the last packet.
            d(t(70.0), "203.0.113.66", "done", true),
            d(t(80.0), "192.0.2.10", "late", false),
            d(t(900.0), "192.0.2.10", "after the trace", true),
        ],
        intervals_ms: vec![10_000, 30_000, 60_000],
        json: false,
    });
}

#[test]
fn more_drops_due_at_one_packet_than_zeek_fires_timers_for() {
    // 400 drops timed between the packets at T+5 and T+5.5: Zeek fires at most
    // `max_timer_expires` (300) timers per packet, so the last 100 are made at T+6.
    let drops = (0..400)
        .map(|i| Drop {
            at: Some(synth::T0 as f64 + 5.001 + f64::from(i) * 0.001),
            addr: format!("10.1.{}.{}", i / 200, i % 200 + 1),
            location: format!("bulk {i}"),
            unblock: false,
        })
        .collect();
    same(&Scenario {
        trace: fixture("returning.pcap"),
        drops,
        intervals_ms: vec![10_000, 30_000, 60_000],
        json: false,
    });
}

// ----- generated traces -----

/// Writes `pkts` (sorted by time) as an Ethernet pcap file.
pub(crate) fn write_pcap(path: &Path, pkts: &[Pkt]) {
    let mut f = Vec::new();
    f.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    f.extend_from_slice(&2u16.to_le_bytes());
    f.extend_from_slice(&4u16.to_le_bytes());
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&65_535u32.to_le_bytes());
    f.extend_from_slice(&(Link::Ethernet as u32).to_le_bytes());
    for p in pkts {
        let frame = synth::frame(Link::Ethernet, p);
        let len = u32::try_from(frame.len()).unwrap();
        f.extend_from_slice(&u32::try_from(p.ts_us / 1_000_000).unwrap().to_le_bytes());
        f.extend_from_slice(&u32::try_from(p.ts_us % 1_000_000).unwrap().to_le_bytes());
        f.extend_from_slice(&len.to_le_bytes());
        f.extend_from_slice(&len.to_le_bytes());
        f.extend_from_slice(&frame);
    }
    std::fs::write(path, f).unwrap();
}

/// Attackers the schedules drop, and servers they talk to.
const ATTACKERS: [&str; 3] = ["203.0.113.1", "203.0.113.2", "203.0.113.3"];
const SERVERS: [&str; 2] = ["198.51.100.1", "198.51.100.2"];

/// One generated packet: who sends, what, and how long after the previous one.
#[derive(Clone, Debug)]
struct Gen {
    gap_ms: u64,
    /// Index into ATTACKERS ++ SERVERS.
    from: usize,
    to: usize,
    kind: u8,
    port: u16,
    /// A TCP segment's sequence number is the second of two (a SYN with it on a known
    /// 5-tuple is a new connection).
    alt_seq: bool,
}

/// A packet of `kinds`: 0 SYN, 1 SYN-ACK (from the port), 2 ACK with data, 3 UDP, 4 ICMP
/// echo, 5 RST, 6 FIN-ACK, 7 ICMP echo reply, 8 RST-ACK (from the port).
fn gen_packet(kinds: &'static [u8]) -> impl Strategy<Value = Gen> {
    (
        prop_oneof![4 => 0u64..3_000, 2 => 3_000u64..40_000, 1 => 40_000u64..200_000],
        0usize..5,
        0usize..5,
        prop::sample::select(kinds),
        prop_oneof![Just(22u16), Just(80), Just(53), Just(40_000)],
        any::<bool>(),
    )
        .prop_map(|(gap_ms, from, to, kind, port, alt_seq)| Gen {
            gap_ms,
            from,
            to: if to == from { (to + 1) % 5 } else { to },
            kind,
            port,
            alt_seq,
        })
}

fn host(i: usize) -> std::net::IpAddr {
    let all: Vec<&str> = ATTACKERS.iter().chain(SERVERS.iter()).copied().collect();
    all[i].parse().unwrap()
}

/// The packets of `gens`; with `fresh`, each from a source port of its own (so each is
/// the first packet of a connection), else all from one port (so packets between two
/// hosts share connections).
fn packets(gens: &[Gen], fresh: bool) -> Vec<Pkt> {
    let mut t = synth::at(0.0);
    gens.iter()
        .enumerate()
        .map(|(i, g)| {
            t += g.gap_ms * 1000;
            let ephemeral = if fresh { 20_000 + i as u16 } else { 40_001 };
            let seq = if g.alt_seq { 90_000 } else { 1000 };
            // A segment from the client side (ephemeral port to the port) or back.
            let tcp = |flags: u8, to_port: bool| {
                let (sport, dport) = if to_port {
                    (ephemeral, g.port)
                } else {
                    (g.port, ephemeral)
                };
                L4::TcpFlags {
                    sport,
                    dport,
                    flags,
                    seq,
                }
            };
            let l4 = match g.kind {
                0 => tcp(0x02, true),
                1 => tcp(0x12, false),
                2 => tcp(0x18, true),
                3 => L4::Udp {
                    sport: ephemeral,
                    dport: g.port,
                },
                5 => tcp(0x04, true),
                6 => tcp(0x11, true),
                7 => L4::IcmpReply,
                8 => tcp(0x14, false),
                _ => L4::Icmp,
            };
            Pkt {
                ts_us: t,
                src: host(g.from),
                dst: host(g.to),
                l4,
                payload: if g.kind == 2 { 10 } else { 0 },
                vlan: Vlan::None,
            }
        })
        .collect()
}

/// Drops at distinct times (the first, optionally, at the first packet). Zeek orders
/// timers with equal deadlines by the shape of its timer heap, which depends on every
/// timer it holds (connections' included), so two drops at one time, or two blocks
/// ending at one time, may come out in either order; distinct drop times keep the
/// comparison exact.
fn gen_drops() -> impl Strategy<Value = Vec<(Option<u64>, usize)>> {
    (
        any::<bool>(),
        prop::collection::vec((0u64..300_000, 0usize..3), 1..4),
    )
        .prop_map(|(first, mut v)| {
            v.sort_unstable_by_key(|(t, _)| *t);
            v.dedup_by_key(|(t, _)| *t);
            v.iter()
                .enumerate()
                .map(|(i, (t, who))| ((i > 0 || !first).then_some(*t), *who))
                .collect()
        })
}

/// Packets, drops (`None`: at the first packet), the ladder, JSON or not, and unblocks
/// (ms after the first packet, attacker).
type Generated = (
    Vec<Gen>,
    Vec<(Option<u64>, usize)>,
    Vec<u64>,
    bool,
    Vec<(u64, usize)>,
);

fn gen_scenario(kinds: &'static [u8]) -> impl Strategy<Value = Generated> {
    (
        prop::collection::vec(gen_packet(kinds), 1..40),
        gen_drops(),
        prop::collection::vec(1u64..60, 2..5)
            .prop_map(|v| v.into_iter().map(|s| s * 1000).collect()),
        any::<bool>(),
        prop::collection::vec((0u64..150_000, 0usize..3), 0..3),
    )
}

fn generated(
    dir: &Path,
    (gens, drops, ladder, json, unblocks): &Generated,
    fresh: bool,
) -> Scenario {
    let trace = dir.join("gen.pcap");
    write_pcap(&trace, &packets(gens, fresh));
    // Timed drops come after the first packet (one before it would be made at the first
    // packet, at the same moment as another), 1 ms apart at least.
    let first_ms = synth::T0 * 1000 + gens[0].gap_ms;
    Scenario {
        trace,
        drops: drops
            .iter()
            .map(|(at, who)| Drop {
                // Even milliseconds for drops, odd for unblocks: no two at one time.
                at: at.map(|ms| (first_ms + 2 + 2 * ms) as f64 / 1000.0),
                addr: ATTACKERS[*who].to_string(),
                location: format!("gen{who}"),
                unblock: false,
            })
            .chain(unblocks.iter().map(|(ms, who)| Drop {
                at: Some((first_ms + 3 + 2 * ms) as f64 / 1000.0),
                addr: ATTACKERS[*who].to_string(),
                location: format!("operator{who}"),
                unblock: true,
            }))
            .collect(),
        intervals_ms: ladder.to_vec(),
        json: *json,
    }
}

/// UDP from the first attacker to a server, `gap_ms` after the packet before.
fn udp(gap_ms: u64) -> Gen {
    Gen {
        gap_ms,
        from: 0,
        to: 3,
        kind: 3,
        port: 53,
        alt_seq: false,
    }
}

/// Runs a generated case with the first attacker dropped at the first packet.
fn same_generated(gens: Vec<Gen>, ladder: &[u64]) {
    let Some(z) = zeek() else { return };
    for json in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let g: Generated = (
            gens.clone(),
            vec![(None, 0)],
            ladder.to_vec(),
            json,
            Vec::new(),
        );
        if let Some(report) = differ(z, &generated(dir.path(), &g, true)) {
            panic!("{report}\npackets: {gens:?}");
        }
    }
}

#[test]
fn network_time_jumping_past_the_block_and_the_watch_logs_unblock_then_forgotten() {
    // Blocked 1 s, watched 2 s; the next packet comes 100 s later.
    same_generated(vec![udp(0), udp(100_000), udp(1_000)], &[1_000, 2_000]);
}

#[test]
fn a_packet_that_ends_a_block_and_starts_a_connection() {
    // The block ends at 1 s; the attacker's packets at 1 s exactly, 1.5 s and 3 s.
    same_generated(
        vec![udp(0), udp(1_000), udp(500), udp(1_500), udp(30_000)],
        &[1_000, 10_000, 20_000],
    );
}

#[test]
fn escalation_saturates_at_the_last_interval() {
    // Ladder 1 s, 2 s: the attacker comes back after every block, more often than the
    // ladder has steps; from the second block on every block is the last interval's.
    same_generated(
        vec![
            udp(0),
            udp(1_500),
            udp(2_500),
            udp(2_500),
            udp(2_500),
            udp(30_000),
        ],
        &[1_000, 2_000],
    );
}

#[test]
fn a_sighting_after_the_watch_ends_but_before_the_sweep_still_escalates() {
    // Blocked 1 s, watched until 2 s; seen at 2.5 s, before the expiry sweep (every
    // 10 s, Zeek's table_expire_interval) has forgotten it: Zeek re-blocks one step up.
    same_generated(
        vec![udp(0), udp(2_500), udp(30_000)],
        &[1_000, 2_000, 4_000],
    );
}

fn cases() -> u32 {
    std::env::var("CATCHD_ZEEK_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24)
}

fn check(g: &Generated, fresh: bool) -> Result<(), TestCaseError> {
    let Some(z) = zeek() else { return Ok(()) };
    let dir = tempfile::tempdir().unwrap();
    let s = generated(dir.path(), g, fresh);
    match differ(z, &s) {
        Some(report) => Err(TestCaseError::fail(format!("{report}\npackets: {:?}", g.0))),
        None => Ok(()),
    }
}

fn config() -> Config {
    Config {
        cases: cases(),
        max_shrink_iters: 200,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("regressions"),
        )),
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// Random small traces and drop schedules, every packet a UDP packet from a port of
    /// its own, so each is the first packet of a connection and Zeek raises only
    /// `new_connection` for it, which is catchd's sighting rule: Zeek and catchd write the
    /// same logs. This exercises the timing core: blocks, releases, re-blocks at block
    /// ends, escalation on any ladder, sweeps, and drops scheduled between packets and
    /// after the trace. (A TCP SYN also makes Zeek call `catch_release_seen` from
    /// `connection_attempt`, `tcp_attempt_delay` later, and from `connection_pending` at
    /// the end; see the next test.)
    #[test]
    fn random_schedules_on_fresh_udp_connections_log_as_zeek_logs_them(
        g in gen_scenario(&[3])
    ) {
        check(&g, true)?;
    }

    /// The same with every kind of packet (handshakes, data, resets, closes, retransmitted
    /// and reused SYNs, UDP, ICMP requests and replies, server ports that flip roles) and
    /// connections that span packets: catchd's model of Zeek's connection life cycle.
    /// Drops are made at the first packet: catchd follows the connections of an address
    /// from when it is watched, and a connection it began before (which Zeek knows)
    /// would still raise events later, `connection_pending` at the end of the trace for
    /// one (README, "Sightings").
    #[test]
    fn random_traces_and_schedules_log_as_zeek_logs_them(
        g in gen_scenario(&[0, 1, 2, 3, 4, 5, 6, 7, 8]).prop_map(|mut g| {
            for d in &mut g.1 {
                d.0 = None;
            }
            g.1.sort_unstable_by_key(|d| d.1);
            g.1.dedup_by_key(|d| d.1);
            g
        })
    ) {
        check(&g, false)?;
    }
}
