//! `catchd replay` end to end: the real binary on the fixture traces.
//!
//! The expected catch-and-release lines below were worked out by hand from the timeline in
//! fixtures/README.md and the rules of zeek-netcontrol.md §1, with intervals 10s,30s,60s:
//!
//! * A (203.0.113.66) is dropped at the first packet (T+0): blocked until T+10, watched
//!   until T+30. Its SYN at T+2 is ignored (still blocked). The block expires on the packet
//!   at T+10.
//! * B (203.0.113.77) is dropped at T+5 and never returns: released at T+15, forgotten at
//!   the first sweep after T+35 (sweeps run at T+0, T+10, ... on packet time): T+40.
//! * A's SYN at T+12.25 re-blocks it at step 1 (30 s, watch 60 s): until T+42.25, watched
//!   until T+72.25; the expiry fires on the next packet, T+43. Its ACK at T+12.5 does not
//!   count.
//! * A's UDP at T+50.25 re-blocks it at step 2, the last (60 s, watch 60 s): until
//!   T+110.25. The sweep at T+110 sees the watch running, so the expiry fires on the next
//!   packet (T+110.5) and A is forgotten at the sweep at T+120. Its ICMP at T+60 is ignored.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::{fixture, read};

const EXPECTED: &str = "\
1700000000.000000	2	203.0.113.66	NetControl::DROP_REQUESTED	10.000000	30.000000	1700000010.000000	1700000030.000000	1	scan detected	-	-
1700000000.000000	2	203.0.113.66	NetControl::DROPPED	10.000000	30.000000	1700000010.000000	1700000030.000000	1	scan detected	-	Debug-All
1700000005.000000	3	203.0.113.77	NetControl::DROP_REQUESTED	10.000000	30.000000	1700000015.000000	1700000035.000000	1	brute force	-	-
1700000005.000000	3	203.0.113.77	NetControl::DROPPED	10.000000	30.000000	1700000015.000000	1700000035.000000	1	brute force	-	Debug-All
1700000010.000000	2	203.0.113.66	NetControl::UNBLOCK	10.000000	30.000000	1700000010.000000	1700000030.000000	1	scan detected	-	Debug-All
1700000012.250000	4	203.0.113.66	NetControl::SEEN_AGAIN	30.000000	60.000000	1700000042.250000	1700000072.250000	2	scan detected	-	-
1700000012.250000	4	203.0.113.66	NetControl::DROPPED	30.000000	60.000000	1700000042.250000	1700000072.250000	2	scan detected	-	Debug-All
1700000015.000000	3	203.0.113.77	NetControl::UNBLOCK	10.000000	30.000000	1700000015.000000	1700000035.000000	1	brute force	-	Debug-All
1700000040.000000	3	203.0.113.77	NetControl::FORGOTTEN	10.000000	30.000000	1700000015.000000	1700000035.000000	1	brute force	-	-
1700000043.000000	4	203.0.113.66	NetControl::UNBLOCK	30.000000	60.000000	1700000042.250000	1700000072.250000	2	scan detected	-	Debug-All
1700000050.250000	5	203.0.113.66	NetControl::SEEN_AGAIN	60.000000	60.000000	1700000110.250000	1700000110.250000	3	scan detected	-	-
1700000050.250000	5	203.0.113.66	NetControl::DROPPED	60.000000	60.000000	1700000110.250000	1700000110.250000	3	scan detected	-	Debug-All
1700000110.500000	5	203.0.113.66	NetControl::UNBLOCK	60.000000	60.000000	1700000110.250000	1700000110.250000	3	scan detected	-	Debug-All
1700000120.000000	5	203.0.113.66	NetControl::FORGOTTEN	60.000000	60.000000	1700000110.250000	1700000110.250000	3	scan detected	-	-
";

fn catchd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_catchd"))
        .args(args)
        .output()
        .expect("run catchd")
}

/// Runs a replay of one fixture with the returning drops and short intervals.
fn replay(trace: &str, drops: &str, extra: &[&str]) -> (tempfile::TempDir, Output) {
    let dir = tempfile::tempdir().unwrap();
    let t = fixture(trace);
    let d = fixture(drops);
    let mut args = vec![
        "replay",
        t.to_str().unwrap(),
        "--drops",
        d.to_str().unwrap(),
        "--intervals",
        "10s,30s,60s",
        "--log-dir",
        dir.path().to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = catchd(&args);
    (dir, out)
}

fn data_lines(p: &Path) -> String {
    read(p)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[track_caller]
fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn returning_attacker_is_reblocked_escalated_and_forgotten() {
    let (dir, out) = replay("returning.pcap", "returning.drops.csv", &[]);
    assert_ok(&out);
    let log = dir.path().join("netcontrol_catch_release.log");
    crate::support::assert_text_eq(&data_lines(&log), EXPECTED);

    // A real Zeek header and footer, with local-time #open/#close stamps.
    let text = read(&log);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "#separator \\x09");
    assert_eq!(lines[4], "#path\tnetcontrol_catch_release");
    for (line, key) in [(lines[5], "#open\t"), (*lines.last().unwrap(), "#close\t")] {
        let stamp = line.strip_prefix(key).unwrap_or_else(|| panic!("{line}"));
        assert!(
            stamp.len() == 19 && stamp.bytes().filter(|b| *b == b'-').count() == 5,
            "{stamp}"
        );
    }

    let summary = String::from_utf8(out.stdout).unwrap();
    assert!(summary.contains("replayed     166 packets"), "{summary}");
    // Zeek's connection events of watched originators (the differential test shows
    // Zeek 8.2.2 writing the same logs for this trace).
    assert!(summary.contains("sightings    6 "), "{summary}");
    assert!(
        summary.contains(
            "drops        2 (added 0), re-drops 2, dropped 4, unblocked 4, forgotten 2, info 0"
        ),
        "{summary}"
    );
}

#[test]
fn netcontrol_log_shows_each_rules_life() {
    let (dir, out) = replay("returning.pcap", "returning.drops.csv", &[]);
    assert_ok(&out);
    let text = data_lines(&dir.path().join("netcontrol.log"));
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows[0][10], "activating plugin with priority 0");
    assert_eq!(rows[2][10], "plugin initialization done");
    for rule in ["2", "3", "4", "5"] {
        let life: Vec<String> = rows
            .iter()
            .filter(|r| r[1] == rule)
            .map(|r| format!("{} {}", r[3], r[4]))
            .collect();
        assert_eq!(
            life,
            [
                "ADD NetControl::REQUESTED",
                "ADD NetControl::SUCCEEDED",
                "EXPIRE NetControl::TIMEOUT",
                "REMOVE NetControl::REQUESTED",
                "REMOVE NetControl::SUCCEEDED"
            ],
            "rule {rule}"
        );
    }
    let redrop: Vec<&Vec<&str>> = rows.iter().filter(|r| r[1] == "5").collect();
    assert_eq!(redrop[0][8], "203.0.113.66/32");
    assert_eq!(redrop[0][12], "60.000000");
    assert_eq!(redrop[0][13], "Re-drop by catch-and-release: scan detected");

    let drops = data_lines(&dir.path().join("netcontrol_drop.log"));
    assert_eq!(
        drops,
        "\
1700000000.000000	2	203.0.113.66	-	-	-	10.000000	scan detected
1700000005.000000	3	203.0.113.77	-	-	-	10.000000	brute force
1700000012.250000	4	203.0.113.66	-	-	-	30.000000	Re-drop by catch-and-release: scan detected
1700000050.250000	5	203.0.113.66	-	-	-	60.000000	Re-drop by catch-and-release: scan detected
"
    );
}

#[test]
fn every_link_type_and_pcapng_give_the_same_log() {
    let v6 = |s: &str| {
        s.replace("203.0.113.66", "2001:db8:bad::66")
            .replace("203.0.113.77", "2001:db8:bad::77")
    };
    for (trace, drops, expect) in [
        (
            "returning.pcapng",
            "returning.drops.csv",
            EXPECTED.to_string(),
        ),
        (
            "returning-vlan.pcap",
            "returning.drops.csv",
            EXPECTED.to_string(),
        ),
        (
            "returning-sll.pcap",
            "returning.drops.csv",
            EXPECTED.to_string(),
        ),
        (
            "returning-raw.pcap",
            "returning.drops.csv",
            EXPECTED.to_string(),
        ),
        ("returning-v6.pcap", "returning-v6.drops.csv", v6(EXPECTED)),
        (
            "returning-sll2.pcap",
            "returning-v6.drops.csv",
            v6(EXPECTED),
        ),
        (
            "returning-null.pcap",
            "returning-v6.drops.csv",
            v6(EXPECTED),
        ),
    ] {
        let (dir, out) = replay(trace, drops, &[]);
        assert_ok(&out);
        let got = data_lines(&dir.path().join("netcontrol_catch_release.log"));
        assert_eq!(got, expect, "{trace}");
    }
}

#[test]
fn json_logs_carry_the_same_records() {
    let (dir, out) = replay("returning.pcap", "returning.drops.csv", &["--json"]);
    assert_ok(&out);
    let json = read(&dir.path().join("netcontrol_catch_release.log"));
    let fields = [
        "ts",
        "rule_id",
        "ip",
        "action",
        "block_interval",
        "watch_interval",
        "blocked_until",
        "watched_until",
        "num_blocked",
        "location",
        "message",
        "plugin",
    ];
    let expected: Vec<Vec<&str>> = EXPECTED.lines().map(|l| l.split('\t').collect()).collect();
    let got: Vec<serde_json::Map<String, serde_json::Value>> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert_eq!(got.len(), expected.len());
    for (obj, row) in got.iter().zip(&expected) {
        // Keys in field order, unset fields left out.
        let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        let present: Vec<&str> = fields
            .iter()
            .zip(row)
            .filter(|(_, v)| **v != "-")
            .map(|(k, _)| *k)
            .collect();
        assert_eq!(keys, present);
        for (k, v) in fields.iter().zip(row) {
            let Some(j) = obj.get(*k) else { continue };
            match j {
                serde_json::Value::Number(n) => {
                    let want: f64 = v.parse().unwrap();
                    assert!((n.as_f64().unwrap() - want).abs() < 1e-6, "{k}: {n} vs {v}");
                }
                serde_json::Value::String(s) => assert_eq!(s, v, "{k}"),
                other => panic!("{k}: unexpected {other}"),
            }
        }
    }
    assert!(
        json.lines().next().unwrap().starts_with(
            r#"{"ts":1700000000.0,"rule_id":"2","ip":"203.0.113.66","action":"NetControl::DROP_REQUESTED","block_interval":10.0,"#
        ),
        "doubles in shortest form"
    );
    assert!(!json.contains('#'));
}

#[test]
fn a_truncated_capture_is_processed_up_to_the_damage() {
    let (dir, out) = replay("truncated.pcap", "returning.drops.csv", &[]);
    assert_ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("truncated.pcap: damaged after 59 packets: truncated dump file"),
        "{stderr}"
    );
    let got = data_lines(&dir.path().join("netcontrol_catch_release.log"));
    let before_damage: String = EXPECTED
        .lines()
        .take(10)
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(got, before_damage);
    assert!(String::from_utf8_lossy(&out.stdout).contains("damaged      "));
}

#[test]
fn malformed_frames_are_counted_by_reason() {
    let dir = tempfile::tempdir().unwrap();
    let out = catchd(&[
        "replay",
        fixture("malformed.pcap").to_str().unwrap(),
        "--log-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_ok(&out);
    let s = String::from_utf8(out.stdout).unwrap();
    assert!(s.contains("replayed     8 packets"), "{s}");
    assert!(
        s.contains("skipped      6 (not_ip 1, link_truncated 1, ip_truncated 1, ip_malformed 2, transport_truncated 1)"),
        "{s}"
    );
}

#[test]
fn warn_blocked_logs_sightings_of_blocked_addresses() {
    let (dir, out) = replay("returning.pcap", "returning.drops.csv", &["--warn-blocked"]);
    assert_ok(&out);
    let got = data_lines(&dir.path().join("netcontrol_catch_release.log"));
    let infos: Vec<&str> = got
        .lines()
        .filter(|l| l.contains("NetControl::INFO"))
        .collect();
    // The times Zeek 8.2.2 logs them at, with catch_release_warn_blocked_ip_encountered
    // and the default scripts' likely_server_ports: every connection event of the
    // blocked address, established handshakes included.
    let at: Vec<&str> = infos
        .iter()
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    assert_eq!(
        at,
        [
            "1700000002.000000",
            "1700000007.000000",
            "1700000018.000000",
            "1700000060.000000"
        ],
        "{got}"
    );
    assert!(infos[0].starts_with("1700000002.000000\t2\t203.0.113.66\tNetControl::INFO"));
    assert!(infos[3].starts_with("1700000060.000000\t5\t203.0.113.66\tNetControl::INFO"));
    assert!(infos[0].ends_with("Block seen while in rule_entities. No action taken.\t-"));
}

#[test]
fn any_packet_counts_mid_connection_packets() {
    // The client sends TCP ACK|PSH every second and DNS (UDP) at k+0.5 for k = 0, 5, ...
    let seen_again = |extra: &[&str]| {
        let dir = tempfile::tempdir().unwrap();
        let mut args = vec![
            "replay",
            "--drop",
            "198.51.100.10=client",
            "--intervals",
            "2s,10s",
            "--log-dir",
            dir.path().to_str().unwrap(),
        ];
        let trace = fixture("returning.pcap");
        args.push(trace.to_str().unwrap());
        args.extend_from_slice(extra);
        assert_ok(&catchd(&args));
        data_lines(&dir.path().join("netcontrol_catch_release.log"))
            .lines()
            .find(|l| l.contains("SEEN_AGAIN"))
            .map(|l| l.split('\t').next().unwrap().to_string())
    };
    assert_eq!(seen_again(&[]).as_deref(), Some("1700000005.500000"));
    assert_eq!(
        seen_again(&["--any-packet"]).as_deref(),
        Some("1700000003.000000")
    );
}

#[test]
fn drop_times_relative_absolute_and_after_the_trace() {
    let dir = tempfile::tempdir().unwrap();
    let trace = fixture("returning.pcap");
    let out = catchd(&[
        "replay",
        trace.to_str().unwrap(),
        "--drop",
        "203.0.113.1@+20s=relative",
        "--drop",
        "203.0.113.2@2023-11-14T22:13:50Z",
        "--drop",
        "203.0.113.3@1700000200=after the trace",
        "--log-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_ok(&out);
    let got = data_lines(&dir.path().join("netcontrol_catch_release.log"));
    let requested: Vec<(&str, &str, &str)> = got
        .lines()
        .filter(|l| l.contains("DROP_REQUESTED"))
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0], f[2], f[9])
        })
        .collect();
    assert_eq!(
        requested,
        [
            ("1700000020.000000", "203.0.113.1", "relative"),
            ("1700000030.000000", "203.0.113.2", "-"),
            // A drop still scheduled when the trace ends is made at termination, with
            // the last packet's time (as Zeek 8.2.2 does with a scheduled event).
            ("1700000130.500000", "203.0.113.3", "after the trace"),
        ]
    );
}

#[test]
fn several_files_are_merged_by_time() {
    let dir = tempfile::tempdir().unwrap();
    let args: [String; 11] = [
        "replay".into(),
        fixture("returning-v6.pcap").to_str().unwrap().to_string(),
        fixture("returning.pcap").to_str().unwrap().to_string(),
        "--drops".into(),
        fixture("returning.drops.csv").to_str().unwrap().to_string(),
        "--drops".into(),
        fixture("returning-v6.drops.csv")
            .to_str()
            .unwrap()
            .to_string(),
        "--intervals".into(),
        "10s,30s,60s".into(),
        "--log-dir".into(),
        dir.path().to_str().unwrap().to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = catchd(&args);
    assert_ok(&out);
    let got = data_lines(&dir.path().join("netcontrol_catch_release.log"));
    let v4: Vec<&str> = got.lines().filter(|l| l.contains("203.0.113.")).collect();
    let v6: Vec<&str> = got
        .lines()
        .filter(|l| l.contains("2001:db8:bad::"))
        .collect();
    assert_eq!((v4.len(), v6.len()), (14, 14));
    let ts: Vec<&str> = got.lines().map(|l| l.split('\t').next().unwrap()).collect();
    let mut sorted = ts.clone();
    sorted.sort();
    assert_eq!(ts, sorted, "lines come out in time order");
    assert!(String::from_utf8_lossy(&out.stdout).contains("332 packets"));
}

#[test]
fn output_is_identical_across_runs() {
    let (a, _) = replay("returning.pcap", "returning.drops.csv", &[]);
    let (b, _) = replay("returning.pcap", "returning.drops.csv", &[]);
    for log in [
        "netcontrol_catch_release.log",
        "netcontrol.log",
        "netcontrol_drop.log",
    ] {
        assert_eq!(
            data_lines(&a.path().join(log)),
            data_lines(&b.path().join(log)),
            "{log}"
        );
    }
}

#[test]
fn bad_input_gives_one_clear_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let not_pcap = dir.path().join("notes.txt");
    std::fs::write(&not_pcap, "this is not a capture\n").unwrap();
    let bad_csv = dir.path().join("bad.csv");
    std::fs::write(&bad_csv, "ts,addr,location\n,10.0.0.0/24,x\n").unwrap();
    let log_dir = dir.path().join("logs");
    let ok = fixture("returning.pcap");
    let wifi = fixture("wifi.pcap");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["/nonexistent/x.pcap"],
            "cannot read /nonexistent/x.pcap: No such file",
        ),
        (
            vec![not_pcap.to_str().unwrap()],
            "not a pcap or pcapng file (unknown file format)",
        ),
        (
            vec![wifi.to_str().unwrap()],
            "link type 105 (IEEE802_11) is not supported",
        ),
        (
            vec![ok.to_str().unwrap(), "--drop", "10.0.0.0/24"],
            "is a subnet: catch-and-release works on single addresses",
        ),
        (
            vec![ok.to_str().unwrap(), "--drop", "10.0.0.300"],
            "is not an IP address",
        ),
        (
            vec![ok.to_str().unwrap(), "--intervals", "10m"],
            "needs at least two intervals",
        ),
        (
            vec![ok.to_str().unwrap(), "--intervals", "10m,never"],
            "interval 2 (\"never\")",
        ),
        (
            vec![ok.to_str().unwrap(), "--drops", bad_csv.to_str().unwrap()],
            "bad.csv:2: `10.0.0.0/24` is a subnet",
        ),
    ];
    for (args, msg) in cases {
        let mut full = vec!["replay", "--log-dir", log_dir.to_str().unwrap()];
        full.extend(args.iter().copied());
        let out = catchd(&full);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.lines().next().unwrap_or("").contains(msg),
            "{args:?}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}
