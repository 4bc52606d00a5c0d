//! Arbitrary input for every parser of outside bytes: it is refused or read, never a
//! panic, never a 5xx. Property tests over arbitrary bytes, arbitrary UTF-8, and damaged
//! copies of real input (fixtures, rule test lines, the bundled configuration).
//!
//! The normal suite runs a few hundred cases per property; `./x fuzz` runs them with
//! `CATCHD_FUZZ_CASES` (tens of thousands), and a failing case is shrunk and kept in
//! `proptest-regressions/`.

use std::sync::OnceLock;

use proptest::prelude::*;
use proptest::test_runner::Config;

use catchd::time::Time;

/// Cases per property: `CATCHD_FUZZ_CASES`, or 256.
fn config() -> Config {
    let cases = std::env::var("CATCHD_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    Config {
        cases,
        max_shrink_iters: 2000,
        ..Config::default()
    }
}

/// A copy of `base` with some bytes changed, some cut, some repeated.
fn damaged(base: &'static [u8]) -> impl Strategy<Value = Vec<u8>> {
    let len = base.len().max(1);
    (
        prop::collection::vec((0..len, any::<u8>()), 0..12),
        0..=len,
        prop::option::of((0..len, 0..len)),
    )
        .prop_map(move |(flips, cut, dup)| {
            let mut b = base.to_vec();
            for (i, x) in flips {
                if let Some(c) = b.get_mut(i) {
                    *c ^= x;
                }
            }
            if let Some((from, n)) = dup {
                let end = (from + n).min(b.len());
                let copy = b.get(from..end).unwrap_or(&[]).to_vec();
                b.extend_from_slice(&copy);
            }
            b.truncate(cut.max(1).min(b.len()));
            b
        })
}

/// Text that looks like what a parser expects (to get past its first checks) mixed with
/// anything.
fn texty() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ -~\t]{0,80}",
        "(\\[|\\]|\\{|\\}|=|,|\"|'|\n|#|::|\\.|/|%[0-9a-fA-F]{2}|[0-9]{1,5}|[a-z_]{1,8}|ffff|@| ){0,40}",
    ]
}

// ----- packets and captures -----

fn replay_bytes(bytes: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.pcap");
    std::fs::write(&trace, bytes).unwrap();
    let opts = catchd::replay::Options {
        files: vec![trace],
        drops: vec![catchd::replay::DropSpec {
            addr: "203.0.113.66".parse().unwrap(),
            when: catchd::replay::When::FirstPacket,
            location: "x".into(),
        }],
        unblocks: Vec::new(),
        intervals: "10s,30s".parse().unwrap(),
        sweep_interval: catchd::time::Interval::from_secs(10),
        warn_blocked: false,
        sightings: catchd::packet::Sightings::Connections,
        // Networks on, dropped at the first address: their path sees every packet too.
        networks: Some(catchd::cnr::Networks {
            threshold: 1,
            ..catchd::cnr::Networks::with_intervals("10s,30s".parse().unwrap())
        }),
        log_dir: dir.path().join("logs"),
        format: catchd::zeeklog::Format::Tsv,
        plugin_name: "debug".into(),
        progress: false,
    };
    // A damaged file may be refused or read up to the damage: either way, no panic.
    let _ = catchd::replay::run(opts);
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn damaged_pcap_files_replay_or_are_refused(b in damaged(include_bytes!("../../fixtures/returning.pcap"))) {
        replay_bytes(&b);
    }

    #[test]
    fn damaged_pcapng_files_replay_or_are_refused(b in damaged(include_bytes!("../../fixtures/returning.pcapng"))) {
        replay_bytes(&b);
    }

    #[test]
    fn arbitrary_bytes_as_a_capture_file(b in prop::collection::vec(any::<u8>(), 0..512)) {
        replay_bytes(&b);
    }

    #[test]
    fn arbitrary_frames_on_every_link_type(b in prop::collection::vec(any::<u8>(), 0..256), link in 0usize..8) {
        use catchd::packet::LinkType;
        let links = [LinkType::Ethernet, LinkType::LinuxSll, LinkType::LinuxSll2, LinkType::Raw,
                     LinkType::Ipv4, LinkType::Ipv6, LinkType::Null, LinkType::Loop];
        if let Ok(obs) = catchd::packet::parse(links[link], &b) {
            let _ = catchd::packet::Sightings::Starts.originator(&obs);
        }
    }

    /// Arbitrary IP packets at arbitrary (forward or backward) times through Zeek's
    /// connection life cycle, every address watched: no panic, and at most one
    /// connection per packet is held.
    #[test]
    fn arbitrary_packets_through_the_connection_table(
        pkts in prop::collection::vec((prop::collection::vec(any::<u8>(), 0..80), 0i64..20_000_000), 0..64),
        bare in any::<bool>(),
    ) {
        use catchd::packet::{LinkType, Sightings};
        use catchd::time::Time;
        let mut s = catchd::conn::Sighter::new(if bare { Sightings::ConnectionsBare } else { Sightings::Connections });
        let mut n = 0usize;
        for (b, us) in &pkts {
            let now = Time::from_micros(1_700_000_000_000_000 + us);
            s.advance(now, |_, _, _| {});
            if let Ok(obs) = catchd::packet::parse(LinkType::Raw, b) {
                n += 1;
                s.packet(now, &obs, 0, |_| true, |_| true, |_, _| {});
            }
        }
        prop_assert!(s.conns().unwrap().len() <= n);
        s.finish(|_, _| {});
        prop_assert!(s.conns().unwrap().is_empty());
    }
}

// ----- log lines, patterns, rules -----

fn scanner() -> &'static std::sync::Mutex<catchd::scan::Scanner> {
    static S: OnceLock<std::sync::Mutex<catchd::scan::Scanner>> = OnceLock::new();
    S.get_or_init(|| {
        std::sync::Mutex::new(
            catchd::scan::Scanner::new(catchd::scan::rules::Rules::bundled(), 1000, None).unwrap(),
        )
    })
}

/// Every bundled rule's test lines, to damage.
fn rule_lines() -> Vec<String> {
    catchd::scan::rules::Rules::bundled()
        .rules
        .iter()
        .flat_map(|r| r.tests.iter().map(|(l, _)| l.clone()))
        .collect()
}

fn scan_line(l: &str) {
    let clock = catchd::scan::prefix::Clock::new(Time::from_micros(1_795_219_200_000_000));
    let _ = catchd::scan::prefix::parse(l, &clock);
    let mut s = scanner().lock().unwrap_or_else(|p| p.into_inner());
    let _ = s.line(l, &clock, Time::from_micros(1_795_219_200_000_000));
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_log_lines(l in texty()) {
        scan_line(&l);
    }

    #[test]
    fn arbitrary_bytes_as_a_log_line(b in prop::collection::vec(any::<u8>(), 0..300)) {
        scan_line(&String::from_utf8_lossy(&b));
    }

    #[test]
    fn damaged_rule_test_lines(i in any::<prop::sample::Index>(), at in any::<prop::sample::Index>(),
                               insert in texty(), cut in any::<prop::sample::Index>()) {
        let lines = rule_lines();
        let mut l = lines[i.index(lines.len())].clone();
        let mut p = at.index(l.len() + 1);
        while !l.is_char_boundary(p) { p -= 1; }
        l.insert_str(p, &insert);
        let mut c = cut.index(l.len() + 1);
        while !l.is_char_boundary(c) { c -= 1; }
        scan_line(&l[..c]);
        scan_line(&l);
    }

    #[test]
    fn timestamps_of_every_shape(prefix in "(@[0-9a-f€]{0,26}|[A-Z][a-z]{2} [ 0-9]{1,2} [0-9:]{0,8}|[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9:.]{0,15}[Z+-]?[0-9:]{0,5}|\\[[A-Z][a-z]{2} [A-Z][a-z]{2} [ 0-9]{2} [0-9:.]{0,15} [0-9]{0,4}\\]?)",
                                rest in texty()) {
        scan_line(&format!("{prefix}{rest}"));
    }

    #[test]
    fn arbitrary_patterns_compile_or_are_refused(p in texty()) {
        let _ = catchd::scan::pattern::Pattern::compile(&p);
        let _ = catchd::scan::pattern::Pattern::compile(&format!("{{LOG_PREFIX{{{p}}}}} x {{HOST_IP}}"));
    }

    #[test]
    fn damaged_rule_files_parse_or_are_refused(b in damaged(catchd::scan::rules::BUNDLED.as_bytes())) {
        if let Ok(t) = std::str::from_utf8(&b)
            && let Ok(r) = catchd::scan::rules::Rules::parse(t, "fuzz")
        {
            let _ = r.self_test();
        }
    }

    #[test]
    fn arbitrary_log_files_are_followed(b in prop::collection::vec(any::<u8>(), 0..4096), more in prop::collection::vec(any::<u8>(), 0..512)) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        std::fs::write(&p, &b).unwrap();
        let mut f = catchd::scan::tail::Follower::new(&p, None, false);
        let _ = f.poll(scan_line);
        use std::io::Write;
        std::fs::OpenOptions::new().append(true).open(&p).unwrap().write_all(&more).unwrap();
        let _ = f.poll(scan_line);
        f.finish(scan_line);
    }
}

// ----- Zeek's wire format -----

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bus_messages(b in prop::collection::vec(any::<u8>(), 0..512)) {
        use catchd::broker::Format;
        for f in [Format::Bin, Format::Json] {
            if let Ok(e) = f.decode(&b) {
                let _ = catchd::broker::zeek::Incoming::read(e);
            }
        }
    }

    #[test]
    fn arbitrary_websocket_messages(b in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(catchd::broker::WsMessage::Data { event, .. }) = catchd::broker::decode_ws(&b) {
            let _ = catchd::broker::zeek::Incoming::read(event);
        }
    }

    #[test]
    fn websocket_shaped_messages(t in "\\{\"type\":\"(data-message|ack|error|x)\",(\"topic\":\"[a-z.]{0,20}\",)?(\"endpoint\":[0-9\"a-z]{0,8},)?\"@data-type\":\"vector\",\"data\":\\[1,1,\\[\"[A-Za-z:_]{0,30}\",\\[(\\{\"@data-type\":\"(count|string|address|vector)\",\"data\":(\"[^\"]{0,20}\"|[0-9-]{1,20}|\\[\\])\\},?){0,3}\\]\\]\\]\\}") {
        if let Ok(catchd::broker::WsMessage::Data { event, .. }) = catchd::broker::decode_ws(t.as_bytes()) {
            let _ = catchd::broker::zeek::Incoming::read(event);
        }
    }

    #[test]
    fn json_shaped_bus_messages(t in "\\[1,1,\\[\"[A-Za-z:_]{0,30}\",\\[(\\{\"@data-type\":\"(count|string|address|subnet|vector|set|table|timespan|timestamp|enum|none|boolean|port|real|integer)\",\"data\":(\"[^\"]{0,20}\"|[0-9-]{1,20}|\\[\\]|true|null)\\},?){0,4}\\]\\]\\]") {
        if let Ok(e) = catchd::broker::Format::Json.decode(t.as_bytes()) {
            let _ = catchd::broker::zeek::Incoming::read(e);
        }
    }
}

// ----- CSV drops, configuration files, values -----

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_drop_files(t in texty(), b in damaged(include_bytes!("../../fixtures/returning.drops.csv"))) {
        let dir = tempfile::tempdir().unwrap();
        for (i, bytes) in [t.into_bytes(), b].into_iter().enumerate() {
            let p = dir.path().join(format!("d{i}.csv"));
            std::fs::write(&p, bytes).unwrap();
            let _ = catchd::replay::read_drops_csv(&p);
        }
    }

    #[test]
    fn damaged_configuration_files(b in damaged(include_bytes!("../../catchd.toml"))) {
        if let Ok(t) = std::str::from_utf8(&b) {
            let _ = catchd::config::Config::parse(t, std::path::Path::new("fuzz.toml"));
        }
    }

    #[test]
    fn arbitrary_configuration_text(t in texty()) {
        let _ = catchd::config::Config::parse(&t, std::path::Path::new("fuzz.toml"));
        let _ = catchd::config::Config::parse(&format!("[server]\n{t}"), std::path::Path::new("f"));
        let _ = catchd::config::Config::parse(&format!("[bhr]\nnever_block = [\"{t}\"]"), std::path::Path::new("f"));
    }

    #[test]
    fn arbitrary_values(t in texty()) {
        let _ = catchd::bhr::duration::parse(&t);
        let _ = catchd::api::bhr::network(&t);
        let _ = catchd::api::bhr::timestamp(&t);
        let _ = t.parse::<catchd::addr::Addr>();
        let _ = t.parse::<catchd::time::Interval>();
        let _ = t.parse::<Time>();
        let _ = t.parse::<catchd::cnr::Intervals>();
    }

    #[test]
    fn arbitrary_existing_log_files_are_continued(b in prop::collection::vec(any::<u8>(), 0..2048), json in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        for name in ["netcontrol.log", "netcontrol_catch_release.log", "netcontrol_drop.log"] {
            std::fs::write(dir.path().join(name), &b).unwrap();
        }
        let f = if json { catchd::zeeklog::Format::Json } else { catchd::zeeklog::Format::Tsv };
        if let Ok(mut l) = catchd::zeeklog::LogSet::open_append(dir.path(), f) {
            let _ = l.finish();
        }
    }
}

// ----- the HTTP APIs: bodies, query strings, paths -----

struct Apis {
    rt: tokio::runtime::Runtime,
    /// Holds the database and store the app uses.
    _api: crate::api::harness::Api,
    /// The BHR API, the web pages and the watchlist, composed as the servers compose them.
    app: axum::Router,
}

fn apis() -> &'static Apis {
    static A: OnceLock<Apis> = OnceLock::new();
    A.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let api = rt.block_on(crate::api::harness::Api::new());
        let (routes, _) = catchd::api::watchlist::start(
            &catchd::config::Config::default().watchlist,
            &api.state,
            vec![],
            1,
        )
        .unwrap();
        // As the servers mount them: beside the BHR routes and pages, under the same layers.
        let extra = routes.merge(catchd::web::router(api.state.clone(), None));
        let app = rt.block_on(async { catchd::api::bhr::app(api.state.clone(), Some(extra)) });
        Apis { rt, _api: api, app }
    })
}

/// Percent-encodes arbitrary bytes for a path or query string.
fn pct(b: &[u8]) -> String {
    b.iter()
        .map(|c| {
            if c.is_ascii_alphanumeric() || b"-._~=&,:".contains(c) {
                (*c as char).to_string()
            } else {
                format!("%{c:02X}")
            }
        })
        .collect()
}

const ROUTES: [&str; 16] = [
    "/bhr/api/block",
    "/bhr/api/mblock",
    "/bhr/api/unblock_now",
    "/bhr/api/set_blocked_multi/x",
    "/bhr/api/set_unblocked_multi",
    "/bhr/api/whitelist/",
    "/bhr/api/source_blacklist/",
    "/bhr/api/blocks/",
    "/bhr/api/blocks/1/set_blocked/",
    "/bhr/api/queue/x",
    "/bhr/list.csv",
    "/bhr/api/query/",
    "/bhr/api/expected_blocks/",
    "/bhr/api/current_blocks_brief/",
    "/api/v1/watchlist/check",
    "/api/v1/watchlist/",
];

/// Sends one request; it must not be a 5xx, and an error must be JSON.
fn hostile(
    method: axum::http::Method,
    route: usize,
    extra: &str,
    ctype: Option<&str>,
    body: Vec<u8>,
    who: crate::api::harness::Who,
) {
    use axum::body::Body;
    use axum::http::{Request, header};
    let a = apis();
    let path = format!("{}{extra}", ROUTES[route]);
    let mut b = Request::builder()
        .method(method)
        .uri(&path)
        .header(header::HOST, crate::api::harness::HOST);
    if let Some(t) = who.token() {
        b = b.header(header::AUTHORIZATION, format!("Token {t}"));
    }
    if let Some(c) = ctype {
        b = b.header(header::CONTENT_TYPE, c);
    }
    let Ok(req) = b.body(Body::from(body)) else {
        return;
    };
    let r = a.rt.block_on(async {
        use tower::ServiceExt;
        let r = a.app.clone().oneshot(req).await.unwrap();
        let status = r.status();
        let bytes = axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    });
    assert!(r.0.as_u16() < 500, "{path}: {} {}", r.0, r.1);
    if r.0.as_u16() >= 400 {
        assert!(
            serde_json::from_str::<serde_json::Value>(&r.1).is_ok(),
            "{path}: {} {}",
            r.0,
            r.1
        );
    }
}

fn who() -> impl Strategy<Value = crate::api::harness::Who> {
    use crate::api::harness::Who;
    prop_oneof![
        Just(Who::Anonymous),
        Just(Who::Blocker),
        Just(Who::Manager),
        Just(Who::Person)
    ]
}

fn json_body() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::{Value, json};
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        texty().prop_map(Value::from),
        prop_oneof![
            Just("192.0.2.9"),
            Just("::ffff:192.0.2.9"),
            Just("0.0.0.0/0"),
            Just("2001:db8::/64"),
            Just("-60"),
            Just("1h"),
            Just("9999999999y")
        ]
        .prop_map(Value::from),
    ];
    let field = prop_oneof![
        Just("cidr"),
        Just("source"),
        Just("why"),
        Just("duration"),
        Just("unblock_at"),
        Just("skip_whitelist"),
        Just("extend"),
        Just("autoscale"),
        Just("ids"),
        Just("items"),
        Just("ident")
    ];
    let obj = prop::collection::vec((field, leaf.clone()), 0..6)
        .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()));
    prop_oneof![
        obj.clone(),
        prop::collection::vec(obj, 0..4).prop_map(Value::Array),
        prop::collection::vec(leaf.clone(), 0..4).prop_map(Value::Array),
        leaf,
        Just(json!({"ids": [1, "2", -3, 1.5, null]})),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_request_bodies(route in 0usize..ROUTES.len(), who in who(),
                                b in prop::collection::vec(any::<u8>(), 0..300),
                                ct in prop::option::of(prop_oneof![Just("application/json"), Just("application/x-www-form-urlencoded"), Just("text/plain"), Just("application/json; charset=utf-8")])) {
        hostile(axum::http::Method::POST, route, "", ct, b, who);
    }

    #[test]
    fn json_shaped_request_bodies(route in 0usize..ROUTES.len(), who in who(), v in json_body()) {
        hostile(axum::http::Method::POST, route, "", Some("application/json"), v.to_string().into_bytes(), who);
    }

    #[test]
    fn form_shaped_request_bodies(route in 0usize..ROUTES.len(), who in who(), kv in prop::collection::vec(("(cidr|source|why|duration|ids|ident|skip_whitelist|unblock_at|extend)", texty()), 0..6)) {
        let body = serde_urlencoded::to_string(&kv).unwrap();
        hostile(axum::http::Method::POST, route, "", Some("application/x-www-form-urlencoded"), body.into_bytes(), who);
    }

    #[test]
    fn arbitrary_query_strings_and_paths(route in 0usize..ROUTES.len(), who in who(), q in prop::collection::vec(any::<u8>(), 0..120), path_part in prop::collection::vec(any::<u8>(), 0..40)) {
        let extra = format!("{}?{}", pct(&path_part), pct(&q));
        hostile(axum::http::Method::GET, route, &extra, None, Vec::new(), who);
        let extra = format!("?timeout={}&added_since={}&since={}&source={}&format={}", pct(&q), pct(&q), pct(&q), pct(&q), pct(&q));
        hostile(axum::http::Method::GET, route, &extra, None, Vec::new(), who);
    }

    #[test]
    fn arbitrary_watchlist_items(item in prop::collection::vec(any::<u8>(), 0..1100), who in who()) {
        let p = pct(&item);
        hostile(axum::http::Method::POST, 15, &format!("{p}/fail"), None, Vec::new(), who);
        hostile(axum::http::Method::GET, 15, &p, None, Vec::new(), who);
        hostile(axum::http::Method::DELETE, 15, &p, None, Vec::new(), who);
    }
}
