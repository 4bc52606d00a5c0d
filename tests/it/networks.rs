//! Catch-and-release of networks end to end: `catchd replay` on generated traces (exact
//! lines), and `catchd run` (the registry's rules, a restart after SIGKILL).

use std::net::IpAddr;
use std::process::Command;

use crate::zeek::differential::synth::{self, L4, Pkt, Vlan};
use crate::zeek::differential::write_pcap;

fn udp(ts: f64, src: &str, dst: &str, sport: u16) -> Pkt {
    Pkt {
        ts_us: synth::at(ts),
        src: src.parse::<IpAddr>().unwrap(),
        dst: dst.parse::<IpAddr>().unwrap(),
        l4: L4::Udp { sport, dport: 53 },
        payload: 20,
        vlan: Vlan::None,
    }
}

/// The data lines of a TSV log, or nothing.
fn lines(dir: &std::path::Path, log: &str) -> Vec<String> {
    std::fs::read_to_string(dir.join(format!("{log}.log")))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// An IPv6 source rotates through 20 addresses of its /64, one a second, and each is
/// dropped as it shows up (as a detector would report them). With a threshold of 5 in a
/// minute, the /64 is dropped with the fifth; after its 30 s block, a never-seen
/// address of it re-blocks it one step up.
#[test]
fn replay_drops_the_64_a_rotating_ipv6_source_lives_in_and_reblocks_it_one_step_up() {
    let dir = tempfile::tempdir().unwrap();
    let server = "2001:db8:ffff::1";
    let mut pkts = Vec::new();
    let mut drops = String::from("ts,addr,location\n");
    for i in 0..20u16 {
        let a = format!("2001:db8:66::{:x}", i + 1);
        pkts.push(udp(f64::from(i), &a, server, 40_000 + i));
        drops.push_str(&format!(
            "{}.000000,{a},rotating\n",
            synth::T0 + u64::from(i)
        ));
    }
    // Background traffic each second, so time moves on packet time.
    for s in 0..60u16 {
        pkts.push(udp(
            f64::from(s) + 0.5,
            "192.0.2.9",
            "192.0.2.10",
            50_000 + s,
        ));
    }
    // A never-seen address of the /64, after the /64's block has ended.
    pkts.push(udp(40.0, "2001:db8:66::ff", server, 41_000));
    pkts.sort_by_key(|p| p.ts_us);
    let trace = dir.path().join("t.pcap");
    write_pcap(&trace, &pkts);
    std::fs::write(dir.path().join("drops.csv"), drops).unwrap();
    let logs = dir.path().join("logs");
    let out = Command::new(env!("CARGO_BIN_EXE_catchd"))
        .arg("replay")
        .arg(&trace)
        .arg("--drops")
        .arg(dir.path().join("drops.csv"))
        .args([
            "--intervals",
            "10s,30s,60s",
            "--networks",
            "--net-threshold",
            "5",
        ])
        .args([
            "--net-window",
            "1m",
            "--net-intervals",
            "30s,90s,180s",
            "--no-progress",
        ])
        .arg("--log-dir")
        .arg(&logs)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let loc = "catch-and-release: 5 addresses blocked within 1m";
    let t = |s: u64| format!("{}.000000", synth::T0 + s);
    assert_eq!(
        lines(&logs, "netcontrol_catch_release_net"),
        [
            format!(
                "{}\t7\t2001:db8:66::/64\tNetControl::DROP_REQUESTED\t30.000000\t90.000000\t{}\t{}\t1\t{loc}\t-\t-",
                t(4),
                t(34),
                t(94)
            ),
            format!(
                "{}\t7\t2001:db8:66::/64\tNetControl::DROPPED\t30.000000\t90.000000\t{}\t{}\t1\t{loc}\t-\tDebug-All",
                t(4),
                t(34),
                t(94)
            ),
            // At the first packet after the block's end.
            format!(
                "{}.500000\t7\t2001:db8:66::/64\tNetControl::UNBLOCK\t30.000000\t90.000000\t{}\t{}\t1\t{loc}\t-\tDebug-All",
                synth::T0 + 34,
                t(34),
                t(94)
            ),
            format!(
                "{}\t23\t2001:db8:66::/64\tNetControl::SEEN_AGAIN\t90.000000\t180.000000\t{}\t{}\t2\t{loc}\tseen: 2001:db8:66::ff\t-",
                t(40),
                t(130),
                t(220)
            ),
            format!(
                "{}\t23\t2001:db8:66::/64\tNetControl::DROPPED\t90.000000\t180.000000\t{}\t{}\t2\t{loc}\t-\tDebug-All",
                t(40),
                t(130),
                t(220)
            ),
        ],
        "{stdout}"
    );
    // The header names the network column and its type.
    let text = std::fs::read_to_string(logs.join("netcontrol_catch_release_net.log")).unwrap();
    assert!(
        text.contains("#fields\tts\trule_id\tsubnet\taction"),
        "{text}"
    );
    assert!(
        text.contains("#types\ttime\tstring\tsubnet\tenum"),
        "{text}"
    );
    // netcontrol.log shows the rule as Zeek shows a subnet entity; no drop-log line.
    let nc = lines(&logs, "netcontrol");
    assert!(
        nc.iter()
            .any(|l| l.contains("\tNetControl::ADDRESS\t2001:db8:66::/64\t")
                && l.contains("NetControl::SUCCEEDED")),
        "{nc:#?}"
    );
    assert!(
        !lines(&logs, "netcontrol_drop")
            .iter()
            .any(|l| l.contains("2001:db8:66::/64"))
    );
    // Every member keeps its own entry: 20 address drops.
    let cr = lines(&logs, "netcontrol_catch_release");
    assert_eq!(
        cr.iter().filter(|l| l.contains("DROP_REQUESTED")).count(),
        20
    );
}

/// The same replay in JSON.
#[test]
fn the_network_log_in_json_has_a_subnet_field() {
    let dir = tempfile::tempdir().unwrap();
    let pkts: Vec<Pkt> = (0..3u16)
        .map(|i| {
            udp(
                f64::from(i),
                &format!("198.51.100.{}", i + 1),
                "192.0.2.1",
                1000 + i,
            )
        })
        .collect();
    let trace = dir.path().join("t.pcap");
    write_pcap(&trace, &pkts);
    let logs = dir.path().join("logs");
    let mut c = Command::new(env!("CARGO_BIN_EXE_catchd"));
    c.arg("replay")
        .arg(&trace)
        .args(["--json", "--net-threshold", "2", "--no-progress"]);
    for i in 0..3 {
        c.arg("--drop")
            .arg(format!("198.51.100.{}@{}", i + 1, synth::T0 + i));
    }
    let out = c.arg("--log-dir").arg(&logs).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = lines(&logs, "netcontrol_catch_release_net")
        .into_iter()
        .next()
        .expect("a JSON line");
    let v: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(v["subnet"], "198.51.100.0/24", "{v}");
    assert_eq!(v["action"], "NetControl::DROP_REQUESTED", "{v}");
}

mod daemon {
    use serde_json::{Value, json};

    use crate::daemon::{Files, log_lines};
    use crate::serve::process::{Server, add_user};

    const CONF: &str =
        "[cnr]\nintervals = \"1h,2h\"\n\n[cnr.networks]\nthreshold = 3\nwindow = \"10m\"\n";

    fn drop_all(d: &Server, token: &str, addrs: &[&str]) {
        let items: Vec<Value> = addrs
            .iter()
            .map(|a| json!({"addr": a, "location": "net test"}))
            .collect();
        let (st, body) = d.post("/api/v1/cr/drop", token, &Value::Array(items));
        assert_eq!(st, 200, "{body}");
    }

    fn nets(d: &Server, token: &str) -> Vec<String> {
        d.json("/api/v1/cr/networks", token)
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["subnet"].as_str().unwrap().to_string())
            .collect()
    }

    /// The /64 becomes an ordinary registry block of catch-and-release's, and survives a
    /// SIGKILL: after the restart the network is still watched, on its step, and a
    /// sighting would still see it.
    #[test]
    fn a_network_drop_is_a_registry_block_and_survives_sigkill() {
        let f = Files::new(CONF);
        let admin = format!("Token {}", add_user(&f.db, "adm", "admin", None));
        let d = f.start(&[]);
        drop_all(
            &d,
            &f.zeek,
            &["2001:db8:5::1", "2001:db8:5::2", "2001:db8:5::3"],
        );
        assert_eq!(nets(&d, &f.ops), ["2001:db8:5::/64"]);
        let q = d.json("/bhr/api/query/2001:db8:5::/64", &admin);
        let b = &q.as_array().unwrap()[0];
        assert_eq!(b["cidr"], "2001:db8:5::/64", "{q}");
        assert_eq!(b["who"], "catch-and-release", "{q}");
        // The list shows it after the addresses, with `subnet`.
        let all = d.json("/api/v1/cr", &f.ops);
        let last = all.as_array().unwrap().last().unwrap().clone();
        assert_eq!(last["subnet"], "2001:db8:5::/64", "{all}");
        let before = d.json("/api/v1/cr/networks", &f.ops);
        d.kill();

        let d = f.start(&[]);
        assert_eq!(d.json("/api/v1/cr/networks", &f.ops), before);
        let net_log = log_lines(&f.logs, "netcontrol_catch_release_net");
        assert!(
            net_log
                .iter()
                .any(|l| l[2] == "2001:db8:5::/64" && l[3] == "NetControl::DROPPED"),
            "{net_log:?}"
        );
        // An operator ends it.
        let (st, body) = d.post(
            "/api/v1/cr/unblock",
            &f.ops,
            &json!({"addr": "2001:db8:5::/64", "reason": "false positive"}),
        );
        assert_eq!(st, 200, "{body}");
        assert_eq!(body["unblocked"], true, "{body}");
        assert!(nets(&d, &f.ops).is_empty());
        assert!(d.terminate().success());
    }

    /// The registry's rules apply: a network overlapping the whitelist, or wider than
    /// `minimum_prefixlen`, is not dropped, and the network log says why.
    #[test]
    fn the_registrys_rules_refuse_networks_and_the_log_says_why() {
        let f = Files::new(&format!("[bhr]\nminimum_prefixlen = 25\n\n{CONF}"));
        let admin = format!("Token {}", add_user(&f.db, "adm", "admin", None));
        let d = f.start(&[]);
        let (st, body) = d.post(
            "/bhr/api/whitelist/",
            &admin,
            &json!({"cidr": "2001:db8:7::ff00/120", "why": "our resolvers"}),
        );
        assert_eq!(st, 201, "{body}");
        drop_all(
            &d,
            &f.zeek,
            &["2001:db8:7::1", "2001:db8:7::2", "2001:db8:7::3"],
        );
        // IPv4 /24 is wider than the registry's /25.
        drop_all(&d, &f.zeek, &["203.0.113.1", "203.0.113.2", "203.0.113.3"]);
        assert!(nets(&d, &f.ops).is_empty());
        let net_log = log_lines(&f.logs, "netcontrol_catch_release_net");
        let info = |net: &str| {
            net_log
                .iter()
                .find(|l| l[2] == net && l[3] == "NetControl::INFO")
                .map(|l| l[10].clone())
        };
        let why6 = info("2001:db8:7::/64").unwrap_or_else(|| panic!("{net_log:?}"));
        assert!(why6.contains("whitelist"), "{why6}");
        let why4 = info("203.0.113.0/24").unwrap_or_else(|| panic!("{net_log:?}"));
        assert!(why4.contains("Prefix length"), "{why4}");
        // The addresses themselves are blocked as usual: they are outside the whitelisted
        // /120, which the /64 would cover. (A whitelisted network around the /64, a /56
        // say, covers its addresses too: they are never blocked, so never counted.)
        let cr = log_lines(&f.logs, "netcontrol_catch_release");
        assert_eq!(
            cr.iter().filter(|l| l[3] == "NetControl::DROPPED").count(),
            6,
            "{cr:?}"
        );
        assert!(d.terminate().success());
    }
}
