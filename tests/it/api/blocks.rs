//! Creating blocks: `block`, `mblock`, `blocks/` POST, validation, duplicates, extend,
//! autoscale (bhr.md §4, §6).

use serde_json::{Value, json};

use catchd::bhr::model::Settings;

use super::harness::*;

#[tokio::test]
async fn a_new_block_echoes_the_cidr_as_sent_and_duplicates_show_the_stored_one() {
    let api = Api::new().await;
    let r = api
        .block(&[
            ("cidr", "192.0.2.10"),
            ("source", "test"),
            ("why", "because"),
            ("duration", "300"),
        ])
        .await
        .expect(201);
    assert_eq!(r.header("content-type"), "application/json");
    assert_eq!(
        r.body,
        json!({
            "who": "blocker",
            "url": "http://testserver/bhr/api/blocks/1/",
            "cidr": "192.0.2.10",
            "source": "test",
            "why": "because",
            "added": iso_at("0s"),
            "unblock_at": iso_at("300s"),
            "skip_whitelist": false,
            "set_blocked": "http://testserver/bhr/api/blocks/1/set_blocked/",
        })
        .to_string()
    );
    api.advance("1s");
    let dup = api
        .block(&[
            ("cidr", "192.0.2.10"),
            ("source", "other"),
            ("why", "again"),
            ("duration", "60"),
        ])
        .await
        .expect(201)
        .json();
    assert_eq!(dup["url"], "http://testserver/bhr/api/blocks/1/");
    assert_eq!(dup["cidr"], "192.0.2.10/32");
    assert_eq!(dup["source"], "test");
    assert_eq!(dup["why"], "because");
    assert_eq!(dup["unblock_at"], iso_at("300s"));
}

/// bhr.md §11.4: one block throughout; source and why never change.
#[tokio::test]
async fn extend_sequence_matches_the_original() {
    let api = Api::new().await;
    let req = |duration: &'static str, extend: Option<&'static str>| {
        let mut f = vec![
            ("cidr", "192.0.2.80"),
            ("source", "e1"),
            ("why", "first"),
            ("duration", duration),
        ];
        if let Some(e) = extend {
            f.push(("extend", e));
        }
        f
    };
    let b = api.block(&req("10m", None)).await.expect(201).json();
    assert_eq!(b["unblock_at"], iso_at("10m"));
    api.advance("1s");
    let b = api
        .block(&req("1d", Some("False")))
        .await
        .expect(201)
        .json();
    assert_eq!(b["unblock_at"], iso_at("10m"), "extend=false leaves it");
    let b = api.block(&req("1d", None)).await.expect(201).json();
    assert_eq!(b["unblock_at"], iso_at("1d 1s"), "extend is on by default");
    let b = api.block(&req("5m", None)).await.expect(201).json();
    assert_eq!(
        b["unblock_at"],
        iso_at("1d 1s"),
        "a shorter request leaves it"
    );
    let b = api.block(&req("0", None)).await.expect(201).json();
    assert_eq!(b["unblock_at"], Value::Null, "0 makes it indefinite");
    let b = api.block(&req("1y", None)).await.expect(201).json();
    assert_eq!(b["unblock_at"], Value::Null, "indefinite wins");
    assert_eq!(b["url"], "http://testserver/bhr/api/blocks/1/");
    assert_eq!(b["source"], "e1");
    assert_eq!(b["why"], "first");
    let all = api
        .get("/bhr/api/blocks/", Who::Person)
        .await
        .expect(200)
        .json();
    assert_eq!(all.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn durations_in_bhr_and_humantime_forms() {
    let api = Api::new().await;
    for (i, (d, secs)) in [
        ("10", "10s"),
        ("10s", "10s"),
        ("7m", "7m"),
        ("4h", "4h"),
        ("3d", "3d"),
        ("3mo", "90d"),
        ("2y", "730d"),
        (" 300 ", "300s"),
        ("1h 30m", "90m"),
    ]
    .into_iter()
    .enumerate()
    {
        let cidr = format!("192.0.2.{i}");
        let b = api.block_ok(&cidr, d).await;
        let want: catchd::time::Interval = secs.parse().unwrap();
        assert_eq!(b["unblock_at"], iso(T0 + want), "duration {d:?}");
    }
    let b = api.block_ok("192.0.2.100", "0").await;
    assert_eq!(b["unblock_at"], Value::Null);
    // Negative: refused (the original makes a block that ended before it began).
    for neg in ["-5", "-60", " -1s ", "-1h 30m"] {
        let r = api
            .block(&[
                ("cidr", "192.0.2.101"),
                ("source", "test"),
                ("why", "x"),
                ("duration", neg),
            ])
            .await
            .expect(400);
        let msg = &r.json()["duration"][0];
        assert!(msg.as_str().is_some_and(|m| !m.is_empty()), "{neg}: {msg}");
    }
    // An unblock_at that has passed, likewise.
    let r = api
        .block(&[
            ("cidr", "192.0.2.101"),
            ("source", "test"),
            ("why", "x"),
            ("unblock_at", "2001-01-01T00:00:00Z"),
        ])
        .await
        .expect(400);
    assert!(r.json()["unblock_at"][0].is_string(), "{}", r.json());
    let all = api.json("/bhr/api/blocks/", Who::Person).await;
    assert!(!all.to_string().contains("192.0.2.101"));
    for bad in ["1.5h", "5w", "h", "5ms", "soon"] {
        let r = api
            .block(&[
                ("cidr", "192.0.2.200"),
                ("source", "test"),
                ("why", "x"),
                ("duration", bad),
            ])
            .await
            .expect(400);
        assert_eq!(r.json(), json!({"duration": ["Invalid duration"]}), "{bad}");
    }
}

/// bhr.md §6, the observed error table, plus the deliberate fixes.
#[tokio::test]
async fn validation_errors_have_the_original_shapes() {
    let api = Api::with(Settings::default(), |reg| {
        let mut ch = Vec::new();
        reg.add_whitelist(
            "203.0.113.0/24".parse().unwrap(),
            4,
            "do not block docs net",
            T0,
            &mut ch,
        );
        reg.blacklist_source("badsrc", 4, "noisy feed", T0, &mut ch);
    })
    .await;
    let ok = |cidr: &'static str| {
        vec![
            ("cidr", cidr),
            ("source", "test"),
            ("why", "because"),
            ("duration", "300"),
        ]
    };
    let cases: Vec<(Vec<(&str, &str)>, Value)> = vec![
        (
            vec![("cidr", "192.0.2.1")],
            json!({"source":["This field is required."],"why":["This field is required."],"duration":["This field is required."]}),
        ),
        (
            vec![
                ("cidr", "192.0.2.1"),
                ("source", "t"),
                ("why", "w"),
                ("duration", "300"),
                ("unblock_at", "2030-01-01T00:00:00Z"),
            ],
            json!({"non_field_errors":["Specify only one of duration and unblock_at"]}),
        ),
        (
            ok("1.0.0.0/8"),
            json!({"non_field_errors":["Prefix length in 1.0.0.0/8 is too small"]}),
        ),
        (
            ok("2001:db8::/48"),
            json!({"non_field_errors":["Prefix length in 2001:db8::/48 is too small"]}),
        ),
        (
            ok("203.0.113.7"),
            json!({"non_field_errors":["whitelisted: admin: do not block docs net"]}),
        ),
        // The whitelist is checked before the prefix length.
        (
            ok("203.0.0.0/16"),
            json!({"non_field_errors":["whitelisted: admin: do not block docs net"]}),
        ),
        (
            ok("203.0.112.0/23"),
            json!({"non_field_errors":["whitelisted: admin: do not block docs net"]}),
        ),
        (
            vec![
                ("cidr", "192.0.2.1"),
                ("source", "badsrc"),
                ("why", "w"),
                ("duration", "300"),
            ],
            json!({"non_field_errors":["Source badsrc is blacklisted: admin: noisy feed"]}),
        ),
        (
            vec![
                ("cidr", "192.0.2.1"),
                ("source", "a123456789b123456789c123456789d"),
                ("why", "w"),
                ("duration", "300"),
            ],
            json!({"source":["Ensure this field has no more than 30 characters."]}),
        ),
        (
            vec![
                ("cidr", "192.0.2.1"),
                ("source", "t"),
                ("why", ""),
                ("duration", "300"),
            ],
            json!({"why":["This field may not be blank."]}),
        ),
        (
            vec![
                ("cidr", "192.0.2.1"),
                ("source", "t"),
                ("why", "w"),
                ("duration", "300"),
                ("autoscale", "maybe"),
            ],
            json!({"autoscale":["Must be a valid boolean."]}),
        ),
        // Fixed: the original answers these with a 500.
        (
            ok("banana"),
            json!({"cidr":["'banana' does not appear to be an IPv4 or IPv6 network"]}),
        ),
        (
            ok("192.0.2.5/24"),
            json!({"cidr":["192.0.2.5/24 has host bits set"]}),
        ),
        (
            vec![
                ("cidr", "banana"),
                ("source", "t"),
                ("why", "w"),
                ("duration", "300"),
                ("skip_whitelist", "1"),
            ],
            json!({"cidr":["'banana' does not appear to be an IPv4 or IPv6 network"]}),
        ),
    ];
    for (fields, want) in cases {
        let r = api.block(&fields).await;
        assert_eq!(r.status.as_u16(), 400, "{fields:?}: {}", r.body);
        assert_eq!(r.header("content-type"), "application/json");
        assert_eq!(r.json(), want, "{fields:?}");
    }
    // The same refusals in JSON bodies.
    let r = api
        .post_json(
            "/bhr/api/block",
            Who::Blocker,
            &json!({"cidr": "1.0.0.0/8", "source": "t", "why": "w", "duration": 300}),
        )
        .await
        .expect(400);
    assert_eq!(
        r.json(),
        json!({"non_field_errors":["Prefix length in 1.0.0.0/8 is too small"]})
    );
    // The limits themselves are allowed.
    api.block_ok("198.51.100.0/23", "300").await;
    api.block_ok("2001:db8:1::/64", "300").await;
    // Nothing refused was stored.
    let all = api.json("/bhr/api/blocks/", Who::Person).await;
    assert_eq!(all.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn skip_whitelist_skips_every_check() {
    let api = Api::with(Settings::default(), |reg| {
        let mut ch = Vec::new();
        reg.add_whitelist("203.0.113.0/24".parse().unwrap(), 4, "docs", T0, &mut ch);
        reg.blacklist_source("badsrc", 4, "noisy", T0, &mut ch);
    })
    .await;
    for (cidr, source) in [
        ("203.0.113.9", "t"),
        ("1.0.0.0/8", "t"),
        ("192.0.2.1", "badsrc"),
    ] {
        let fields = [
            ("cidr", cidr),
            ("source", source),
            ("why", "w"),
            ("duration", "60"),
            ("skip_whitelist", "True"),
        ];
        // Only admins may skip the checks (bhr.skip_whitelist_roles); a blocker is refused.
        let r = api.block(&fields).await.expect(403);
        assert_eq!(
            r.json(),
            json!({"detail": "You do not have permission to skip the whitelist."})
        );
        let b = api
            .post_form("/bhr/api/block", Who::Admin, &fields)
            .await
            .expect(201)
            .json();
        assert_eq!(b["skip_whitelist"], true);
    }
    // What may never be blocked is never skipped: /0, loopback, multicast …
    for cidr in [
        "0.0.0.0/0",
        "::/0",
        "127.0.0.1",
        "224.0.0.5",
        "ff02::1",
        "fe80::1",
    ] {
        let r = api
            .post_form(
                "/bhr/api/block",
                Who::Admin,
                &[
                    ("cidr", cidr),
                    ("source", "t"),
                    ("why", "w"),
                    ("duration", "60"),
                    ("skip_whitelist", "True"),
                ],
            )
            .await
            .expect(400);
        let msg = r.json()["non_field_errors"][0]
            .as_str()
            .unwrap()
            .to_string();
        assert!(msg.starts_with("Refusing to block"), "{cidr}: {msg}");
    }
}

#[tokio::test]
async fn booleans_take_drf_spellings() {
    let api = Api::new().await;
    for (i, v) in ["true", "True", "1", "yes", "on", "t", "Y"]
        .into_iter()
        .enumerate()
    {
        let cidr = format!("192.0.2.{i}");
        let b = api
            .post_form(
                "/bhr/api/block",
                Who::Admin,
                &[
                    ("cidr", &cidr),
                    ("source", "s"),
                    ("why", "w"),
                    ("duration", "60"),
                    ("skip_whitelist", v),
                ],
            )
            .await
            .expect(201)
            .json();
        assert_eq!(b["skip_whitelist"], true, "{v}");
    }
    let b = api
        .post_json(
            "/bhr/api/block",
            Who::Blocker,
            &json!({"cidr": "192.0.2.50", "source": "s", "why": "w", "duration": "60", "skip_whitelist": false}),
        )
        .await
        .expect(201)
        .json();
    assert_eq!(b["skip_whitelist"], false);
}

#[tokio::test]
async fn unblock_at_may_replace_duration() {
    let api = Api::new().await;
    let until = iso_at("2h");
    let b = api
        .block(&[
            ("cidr", "192.0.2.1"),
            ("source", "s"),
            ("why", "w"),
            ("unblock_at", &until),
        ])
        .await
        .expect(201)
        .json();
    assert_eq!(b["unblock_at"], until);
    let r = api
        .block(&[
            ("cidr", "192.0.2.2"),
            ("source", "s"),
            ("why", "w"),
            ("unblock_at", "tomorrow"),
        ])
        .await
        .expect(400);
    assert!(
        r.json()["unblock_at"][0]
            .as_str()
            .unwrap()
            .starts_with("Datetime has wrong format.")
    );
}

/// Autoscale steps with the autoscale request made when the previous block has been over
/// for `age`.
async fn autoscaled(previous: &str, age: &str, request: &str) -> f64 {
    let api = Api::new().await;
    api.block_ok("192.0.2.7", previous).await;
    api.advance(previous);
    api.advance(age);
    let b = api
        .block(&[
            ("cidr", "192.0.2.7"),
            ("source", "s"),
            ("why", "w"),
            ("duration", request),
            ("autoscale", "True"),
        ])
        .await
        .expect(201)
        .json();
    assert_eq!(b["url"], "http://testserver/bhr/api/blocks/2/");
    secs_between(&b["added"], &b["unblock_at"])
}

/// bhr.md §4.2: every worked example of the formula.
#[tokio::test]
async fn autoscale_worked_examples() {
    assert_eq!(autoscaled("3s", "1s", "3s").await, 6.0);
    assert_eq!(autoscaled("1d", "3d", "1h").await, 86_400.0);
    assert_eq!(autoscaled("1d", "5d", "1h").await, 43_200.0);
    assert_eq!(autoscaled("1d", "5d", "2d").await, 172_800.0);
    assert_eq!(autoscaled("1h", "11h", "1h").await, 7_200.0);
    assert_eq!(autoscaled("1h", "13h", "1h").await, 3_600.0);
    // ScalingTests in bhr-site.
    assert_eq!(autoscaled("5m", "1h", "5m").await, 600.0);
    assert_eq!(autoscaled("1d", "4d", "1h").await, 86_400.0);
}

#[tokio::test]
async fn autoscale_doubles_again_and_never_scales_indefinite_or_first_blocks() {
    let api = Api::new().await;
    let scaled = |d: &'static str| {
        let api = &api;
        async move {
            let b = api
                .block(&[
                    ("cidr", "192.0.2.9"),
                    ("source", "s"),
                    ("why", "w"),
                    ("duration", d),
                    ("autoscale", "1"),
                ])
                .await
                .expect(201)
                .json();
            (secs_between(&b["added"], &b["unblock_at"].clone()), b)
        }
    };
    let (first, _) = scaled("3s").await;
    assert_eq!(first, 3.0, "nothing to scale from");
    api.advance("4s");
    assert_eq!(scaled("3s").await.0, 6.0);
    api.advance("7s");
    assert_eq!(scaled("3s").await.0, 12.0);
    api.advance("13s");
    let b = api
        .block(&[
            ("cidr", "192.0.2.9"),
            ("source", "s"),
            ("why", "w"),
            ("duration", "0"),
            ("autoscale", "1"),
        ])
        .await
        .expect(201)
        .json();
    assert_eq!(b["unblock_at"], Value::Null);
}

#[tokio::test]
async fn autoscale_counts_a_forced_unblock_as_the_time_it_was_active() {
    let api = Api::new().await;
    api.block_ok("192.0.2.9", "1d").await;
    api.advance("10m");
    api.unblock_now("192.0.2.9").await;
    api.advance("1m");
    let b = api
        .block(&[
            ("cidr", "192.0.2.9"),
            ("source", "s"),
            ("why", "w"),
            ("duration", "1m"),
            ("autoscale", "1"),
        ])
        .await
        .expect(201)
        .json();
    assert_eq!(
        secs_between(&b["added"], &b["unblock_at"]),
        1200.0,
        "2 x 10 minutes"
    );
}

#[tokio::test]
async fn mblock_is_all_or_nothing() {
    let api = Api::new().await;
    let r = api
        .post_json(
            "/bhr/api/mblock",
            Who::Blocker,
            &json!([
                {"cidr": "192.0.2.30", "source": "s", "why": "w", "duration": "300"},
                {"cidr": "1.0.0.0/8", "source": "s", "why": "w", "duration": "300"},
                {"cidr": "192.0.2.31", "source": "s"},
                {"cidr": "nonsense", "source": "s", "why": "w", "duration": "300"},
            ]),
        )
        .await
        .expect(400);
    assert_eq!(
        r.json(),
        json!([
            {},
            {"non_field_errors": ["Prefix length in 1.0.0.0/8 is too small"]},
            {"why": ["This field is required."], "duration": ["This field is required."]},
            {"cidr": ["'nonsense' does not appear to be an IPv4 or IPv6 network"]},
        ])
    );
    let all = api.json("/bhr/api/blocks/", Who::Person).await;
    assert_eq!(all, json!([]), "nothing was created");

    let r = api
        .post_json(
            "/bhr/api/mblock",
            Who::Blocker,
            &json!({"cidr": "192.0.2.1"}),
        )
        .await
        .expect(400);
    assert_eq!(
        r.json(),
        json!({"non_field_errors": ["Expected a list of items but got type \"dict\"."]})
    );
    let r = api
        .post_json("/bhr/api/mblock", Who::Blocker, &json!([]))
        .await
        .expect(201);
    assert_eq!(r.json(), json!([]));
}

#[tokio::test]
async fn mblock_creates_and_extends_with_the_server_default() {
    let api = Api::new().await;
    api.block_ok("192.0.2.20", "1h").await;
    api.advance("5s");
    let r = api
        .post_json(
            "/bhr/api/mblock",
            Who::Blocker,
            &json!([
                {"cidr": "192.0.2.40", "source": "feed", "why": "w", "duration": "1d"},
                {"cidr": "192.0.2.20", "source": "feed", "why": "w", "duration": "1d"},
                {"cidr": "2001:db8::1", "source": "feed", "why": "w", "duration": "1d"},
            ]),
        )
        .await
        .expect(201)
        .json();
    let rows = r.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(
        rows[0]["cidr"], "192.0.2.40",
        "a new block echoes its input"
    );
    assert_eq!(
        rows[1]["cidr"], "192.0.2.20/32",
        "a duplicate shows the stored one"
    );
    assert_eq!(rows[1]["source"], "test");
    assert_eq!(
        rows[1]["unblock_at"],
        iso_at("1d 5s"),
        "extended (extend defaults to true)"
    );
    assert_eq!(rows[2]["cidr"], "2001:db8::1");
    let q = api.json("/bhr/api/query/2001:db8::1", Who::Person).await;
    assert_eq!(q[0]["cidr"], "2001:db8::1/128");
}

#[tokio::test]
async fn the_model_endpoint_creates_blocks_through_the_same_rules() {
    let api = Api::with(Settings::default(), |reg| {
        let mut ch = Vec::new();
        reg.add_whitelist("203.0.113.0/24".parse().unwrap(), 4, "docs", T0, &mut ch);
    })
    .await;
    let r = api
        .post_json(
            "/bhr/api/blocks/",
            Who::Person,
            &json!({"cidr": "192.0.2.60", "source": "admin", "why": "manual", "unblock_at": iso_at("1h")}),
        )
        .await
        .expect(201);
    assert_eq!(r.header("location"), "http://testserver/bhr/api/blocks/1/");
    let b = r.json();
    assert_eq!(b["cidr"], "192.0.2.60/32");
    assert_eq!(b["who"], "person");
    assert_eq!(b["unblock_at"], iso_at("1h"));
    let b = api
        .post_json(
            "/bhr/api/blocks/",
            Who::Person,
            &json!({"cidr": "192.0.2.61", "source": "admin", "why": "manual"}),
        )
        .await
        .expect(201)
        .json();
    assert_eq!(b["unblock_at"], Value::Null, "no unblock_at: indefinite");
    // The original answers 500 here.
    let r = api
        .post_json(
            "/bhr/api/blocks/",
            Who::Person,
            &json!({"cidr": "203.0.113.1", "source": "admin", "why": "manual"}),
        )
        .await
        .expect(400);
    assert_eq!(
        r.json(),
        json!({"non_field_errors": ["whitelisted: admin: docs"]})
    );
}

#[tokio::test]
async fn concurrent_requests_for_one_network_make_one_block() {
    let api = std::sync::Arc::new(Api::new().await);
    let mut tasks = Vec::new();
    for i in 0..32 {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            api.block(&[
                ("cidr", "192.0.2.77"),
                ("source", "s"),
                ("why", "race"),
                ("duration", if i % 2 == 0 { "1h" } else { "2h" }),
            ])
            .await
            .expect(201)
            .json()["url"]
                .clone()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), "http://testserver/bhr/api/blocks/1/");
    }
    let all = api.json("/bhr/api/blocks/", Who::Person).await;
    assert_eq!(all.as_array().unwrap().len(), 1);
    assert_eq!(all[0]["unblock_at"], iso_at("2h"));
}

#[tokio::test]
async fn acknowledged_blocks_survive_a_restart() {
    let api = Api::new().await;
    api.block_ok("192.0.2.1", "1h").await;
    api.block_ok("192.0.2.2", "0").await;
    api.set_blocked("bgp1", &[1]).await;
    let stats = api.json("/bhr/api/stats", Who::Anonymous).await;
    let blocks = api.get("/bhr/api/blocks/", Who::Person).await.body;
    let entries = api.get("/bhr/api/blockentries/", Who::Person).await.body;
    let api = api.restart().await;
    assert_eq!(api.json("/bhr/api/stats", Who::Anonymous).await, stats);
    assert_eq!(api.get("/bhr/api/blocks/", Who::Person).await.body, blocks);
    assert_eq!(
        api.get("/bhr/api/blockentries/", Who::Person).await.body,
        entries
    );
    // New ids continue after the stored ones.
    let b = api.block_ok("192.0.2.3", "1h").await;
    assert_eq!(b["url"], "http://testserver/bhr/api/blocks/3/");
}

/// An IPv4-mapped address or network is the IPv4 one: the IPv4 whitelist and prefix
/// rules apply, and queries for either form find the block.
#[tokio::test]
async fn ipv4_mapped_requests_are_ipv4() {
    let api = Api::with(Settings::default(), |reg| {
        let mut ch = Vec::new();
        reg.add_whitelist("198.51.100.0/24".parse().unwrap(), 4, "ours", T0, &mut ch);
    })
    .await;
    let r = api
        .block(&[
            ("cidr", "::ffff:198.51.100.200"),
            ("source", "t"),
            ("why", "w"),
            ("duration", "60"),
        ])
        .await
        .expect(400);
    assert_eq!(
        r.json(),
        json!({"non_field_errors": ["whitelisted: admin: ours"]})
    );
    // All of IPv4 is not a /96.
    let r = api
        .block(&[
            ("cidr", "::ffff:0:0/96"),
            ("source", "t"),
            ("why", "w"),
            ("duration", "60"),
        ])
        .await
        .expect(400);
    assert!(r.json()["non_field_errors"][0].is_string(), "{}", r.body);
    let r = api
        .post_form(
            "/bhr/api/block",
            Who::Admin,
            &[
                ("cidr", "::ffff:0:0/96"),
                ("source", "t"),
                ("why", "w"),
                ("duration", "60"),
                ("skip_whitelist", "true"),
            ],
        )
        .await
        .expect(400);
    assert_eq!(
        r.json(),
        json!({"non_field_errors": ["Refusing to block 0.0.0.0/0: it is every address"]})
    );
    let b = api.block_ok("::ffff:203.0.113.5", "60").await;
    assert_eq!(b["cidr"], "203.0.113.5", "echoed as the IPv4 address it is");
    let b = api.block_ok("::ffff:203.0.113.0/120", "60").await;
    assert_eq!(b["cidr"], "203.0.113.0/24");
    for q in ["203.0.113.5", "::ffff:203.0.113.5", "203.0.113.0/24"] {
        let found = api.json(&format!("/bhr/api/query/{q}"), Who::Person).await;
        assert!(
            found.to_string().contains("203.0.113.5/32"),
            "query {q}: {found}"
        );
    }
    // A whitelist entry given mapped is the IPv4 network too.
    api.post_json(
        "/bhr/api/whitelist/",
        Who::Person,
        &json!({"cidr": "::ffff:192.0.2.0/120", "why": "docs"}),
    )
    .await
    .expect(201);
    let r = api
        .block(&[
            ("cidr", "192.0.2.77"),
            ("source", "t"),
            ("why", "w"),
            ("duration", "60"),
        ])
        .await
        .expect(400);
    assert!(r.body.contains("whitelisted"), "{}", r.body);
}
