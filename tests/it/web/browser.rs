//! The pages in headless Chromium, against a running `catchd run` capturing on `lo`:
//! the limited query, sign-in, the add and unblock forms, and the live catch-and-release
//! page; once with JavaScript and once without. Every page is saved as a screenshot in
//! `target/artefacts/web/`.

use std::time::Duration;

use serde_json::{Value, json};

use super::webdriver::Browser;
use crate::daemon::Files;
use crate::serve::process::{Server, add_user};

const CONF: &str = r#"
[bhr]
unauthenticated_limited_query = true
local_networks = ["10.0.0.0/8"]
"#;

fn block_id(b: &Value) -> u64 {
    let url = b["url"].as_str().unwrap();
    url.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn start() -> (Files, Server) {
    let f = Files::new(CONF);
    add_user(&f.db, "alice", "user", Some("correct horse"));
    let s = f.start(&["--interface", "lo"]);
    (f, s)
}

#[test]
fn pages_work_in_chromium() {
    let (f, s) = start();
    let url = s.url();
    let b = Browser::start(true);

    // Blocks made through the API.
    let (st, _) = s.post(
        "/bhr/api/block",
        &f.zeek,
        &json!({"cidr": "192.0.2.10", "source": "bro", "why": "ssh scanner <script>alert(1)</script>", "duration": 600}),
    );
    assert_eq!(st, 201);
    let (st, _) = s.post(
        "/bhr/api/block",
        &f.ops,
        &json!({"cidr": "10.20.30.40", "source": "cli", "why": "compromised host", "duration": 0}),
    );
    assert_eq!(st, 201);

    // The limited query finds a block, searched by network.
    b.goto(&format!("{url}/bhr/limited/query"));
    b.type_into("#query", "192.0.2.0/24");
    b.click("form.search button");
    let table = b.wait_text("table.blocks", "192.0.2.10/32", 10);
    assert!(
        table.contains("bro") && table.contains("10 minutes"),
        "{table}"
    );
    assert!(
        !b.source().contains("<script>alert"),
        "why is neither shown nor unescaped"
    );
    b.screenshot("limited-query");
    b.goto(&format!("{url}/bhr/limited/list"));
    b.wait_text("main", "10.20.30.40/32", 5);
    b.screenshot("limited-list");

    // Sign-in: a wrong password fails, the right one opens the operator pages.
    b.goto(&format!("{url}/bhr/list"));
    assert!(
        b.url().contains("/accounts/login/?next=/bhr/list"),
        "{}",
        b.url()
    );
    b.type_into("#username", "alice");
    b.type_into("#password", "wrong horse");
    b.click("form.stacked button");
    b.wait_text(
        "p.error",
        "Please enter a correct username and password",
        10,
    );
    assert!(b.url().contains("/accounts/login/"));
    assert!(b.try_find("header .who").is_none());
    b.screenshot("login-failed");
    b.type_into("#password", "correct horse");
    b.click("form.stacked button");
    b.wait_text("header .who", "alice", 10);
    assert!(b.url().ends_with("/bhr/list"), "{}", b.url());
    let list = b.text("main");
    assert!(list.contains("Manual Blocks") && list.contains("10.20.30.40/32"));
    assert!(
        list.contains("ssh scanner <script>alert(1)</script>"),
        "shown as text"
    );
    b.screenshot("list");

    // The add form makes a block the API shows.
    b.goto(&format!("{url}/bhr/add"));
    b.screenshot("add-form");
    b.type_into("#cidr", "198.51.100.23");
    b.type_into("#why", "seen in the browser test");
    b.click("#duration option[value=\"86400\"]");
    b.click("form.stacked button[type=submit]");
    b.wait_text("p.flash", "Blocked 198.51.100.23/32 until", 10);
    assert!(
        b.url().ends_with("/bhr/query?query=198.51.100.23/32"),
        "{}",
        b.url()
    );
    b.screenshot("add-result");
    let q = s.json("/bhr/api/query/198.51.100.23", &f.ops);
    assert_eq!(q[0]["source"], "web");
    assert_eq!(q[0]["who"], "alice");
    assert_eq!(q[0]["why"], "seen in the browser test");
    let id = block_id(&q[0]);

    // A block manager puts it in place; unblocking through the form queues its removal.
    let (st, _) = s.post(
        "/bhr/api/set_blocked_multi/bgp1",
        &f.bgp,
        &json!({"ids": [id]}),
    );
    assert_eq!(st, 200);
    assert_eq!(s.json("/bhr/api/unblock_queue/bgp1", &f.bgp), json!([]));
    b.goto(&format!("{url}/bhr/query?query=198.51.100.23"));
    b.wait_text("table.entries", "bgp1", 5);
    b.click(&format!("input[name=id][value=\"{id}\"]"));
    b.click("button.danger");
    b.wait_text("h1", "Unblock", 10);
    b.type_into("#why", "false positive, checked by hand");
    b.screenshot("unblock-confirm");
    b.click("form.stacked button.danger");
    b.wait_text("p.flash", "Unblocked 198.51.100.23/32", 10);
    b.wait_text(
        "td.why",
        "Unblocked by alice: false positive, checked by hand",
        5,
    );
    b.screenshot("unblocked");
    let uq = s.json("/bhr/api/unblock_queue/bgp1", &f.bgp);
    assert_eq!(uq[0]["block"]["cidr"], "198.51.100.23/32", "{uq}");

    // Catch and release: a drop through the API shows, counting down, with its log line.
    let (st, info) = s.post(
        "/api/v1/cr/drop",
        &f.ops,
        &json!({"addr": "203.0.113.77", "location": "browser <i>test</i>"}),
    );
    assert_eq!(st, 200, "{info}");
    b.goto(&format!("{url}/cr/"));
    let watched = b.wait_text("table.watched", "203.0.113.77", 10);
    assert!(
        watched.contains("1 of 4") && watched.contains("blocked"),
        "{watched}"
    );
    assert!(
        watched.contains("browser <i>test</i>"),
        "escaped, shown as text"
    );
    b.wait_text("table.log", "DROPPED", 5);
    b.wait_text("table.capture", "lo", 5);
    let first = b.text("table.watched .left");
    std::thread::sleep(Duration::from_millis(2500));
    let later = b.text("table.watched .left");
    assert_ne!(first, later, "the countdown ticks");
    // A second drop appears without a reload.
    let (st, _) = s.post(
        "/api/v1/cr/drop",
        &f.ops,
        &json!({"addr": "203.0.113.78", "location": "later"}),
    );
    assert_eq!(st, 200);
    b.wait_text("table.watched", "203.0.113.78", 15);
    b.wait_text("#live-status", "Live: updated", 5);
    assert!(b.source().contains("<svg"), "the chart");
    b.screenshot("cr");
    b.size(1280, 1700);
    b.screenshot("cr-whole");
    b.size(1280, 900);

    b.goto(&format!("{url}/bhr/stats"));
    b.wait_text("table.sources", "catch-and-release", 5);
    b.screenshot("stats");
    b.goto(&format!("{url}/bhr/"));
    b.screenshot("index");

    // Phone-sized.
    b.size(390, 844);
    b.goto(&format!("{url}/bhr/list"));
    b.screenshot("list-phone");
    b.goto(&format!("{url}/cr/"));
    b.wait_text("table.watched", "203.0.113.77", 5);
    b.screenshot("cr-phone");
}

#[test]
fn pages_work_without_javascript() {
    let (f, s) = start();
    let url = s.url();
    let b = Browser::start(false);
    let (st, _) = s.post(
        "/api/v1/cr/drop",
        &f.ops,
        &json!({"addr": "203.0.113.90", "location": "no js"}),
    );
    assert_eq!(st, 200);
    b.goto(&format!("{url}/accounts/login/?next=/bhr/add"));
    b.type_into("#username", "alice");
    b.type_into("#password", "correct horse");
    b.click("form.stacked button");
    b.wait_text("h1", "Add a block", 10);
    b.type_into("#cidr", "192.0.2.200");
    b.type_into("#why", "added without javascript");
    b.click("form.stacked button[type=submit]");
    b.wait_text("p.flash", "Blocked 192.0.2.200/32", 10);
    let q = s.json("/bhr/api/query/192.0.2.200", &f.ops);
    assert_eq!(q[0]["source"], "web");
    assert_eq!(q[0]["why"], "added without javascript");
    b.goto(&format!("{url}/cr/"));
    let watched = b.wait_text("table.watched", "203.0.113.90", 10);
    assert!(
        watched.contains("9m") || watched.contains("10m"),
        "server-rendered countdown: {watched}"
    );
    assert!(
        b.source().contains("http-equiv=\"refresh\""),
        "reloads itself without JavaScript"
    );
    b.screenshot("cr-nojs");
}
