//! `/metrics` and BHR's `/bhr/api/metrics` as Prometheus reads them: `promtool check
//! metrics` (Debian's `prometheus` package) accepts every family, and label values that
//! hold quotes, backslashes and newlines come out escaped.

use std::io::Write as _;
use std::process::{Command, Stdio};

use serde_json::json;

use super::*;

/// `promtool check metrics` on `text`: its exit status and what it said.
fn promtool(text: &str) -> (i32, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; ./x test installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), said)
}

#[test]
fn promtool_accepts_the_metrics_and_label_values_are_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let conf = format!(
        "[cnr]\nintervals = \"1h,2h\"\n\n[[blocker]]\nident = \"fw\"\nbackend = \"hosts-allow\"\n\
         hosts_allow = \"{}\"\ndry_run = true\n",
        dir.path().join("hosts.allow").display()
    );
    let f = Files::new(&conf);
    let d = f.start(&[]);
    // A source with every character the text format must escape.
    let source = "tap \"east\"\\rack\n2";
    let (st, b) = d.post(
        "/bhr/api/block",
        &f.zeek,
        &json!({"cidr": "192.0.2.77", "source": source, "why": "test", "duration": 300}),
    );
    assert_eq!(st, 201, "{b}");
    let (st, _) = d.post(
        "/api/v1/cr/drop",
        &f.zeek,
        &json!({"addr": "192.0.2.78", "location": "metrics"}),
    );
    assert_eq!(st, 200);

    let (st, m) = d.request("GET", "/metrics", None, None);
    assert_eq!(st, 200);
    let (rc, said) = promtool(&m);
    assert_eq!(rc, 0, "promtool: {said}\n{m}");
    for family in [
        "catchd_cnr_actions_total",
        "catchd_blocker_blocked_total",
        "catchd_http_connections_open",
        "catchd_core_up",
        "catchd_uptime_seconds",
    ] {
        assert!(
            m.contains(&format!("# HELP {family} ")) && m.contains(&format!("# TYPE {family} ")),
            "{family} has HELP and TYPE:\n{m}"
        );
    }
    assert!(
        m.contains("catchd_cnr_actions_total{action=\"DROP_REQUESTED\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("catchd_blocker_blocked_total{backend=\"hosts-allow\",ident=\"fw\"}")
            || m.contains("catchd_blocker_blocked_total{ident=\"fw\",backend=\"hosts-allow\"}"),
        "{m}"
    );

    // BHR's page: its own names (gauges ending in _total, as BHR has them, which
    // promtool's linter notes but reads), millisecond timestamps, escaped sources.
    let (st, b) = d.request("GET", "/bhr/api/metrics", None, None);
    assert_eq!(st, 200);
    let (rc, said) = promtool(&b);
    let lints: Vec<&str> = said.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        rc == 0
            || lints
                .iter()
                .all(|l| l.contains("non-counter metrics should not have \"_total\" suffix")),
        "promtool: {said}\n{b}"
    );
    let line = b
        .lines()
        .find(|l| l.starts_with("bhr_blocked_total_by_source{source=\"tap"))
        .unwrap_or_else(|| panic!("{b}"));
    assert!(
        line.starts_with("bhr_blocked_total_by_source{source=\"tap \\\"east\\\"\\\\rack\\n2\"} 1 "),
        "{line}"
    );
    let ms: i64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(ms > 1_700_000_000_000, "a timestamp in ms: {line}");
    assert!(d.terminate().success());
}
