//! Reading: stats, metrics, query, the derived sets, CSV lists, whitelist, source
//! blacklist, navigation (bhr.md §2, §8).

use serde_json::{Value, json};

use catchd::bhr::model::Settings;

use super::harness::*;

/// blocks 1..=4: 1 and 2 installed by bgp1, 3 pending, 4 forced off; source `feed` for 2.
async fn mixed(api: &Api) {
    api.block_ok("192.0.2.1", "1h").await;
    api.advance("1s");
    api.block(&[
        ("cidr", "192.0.2.0/24"),
        ("source", "feed"),
        ("why", "list"),
        ("duration", "0"),
    ])
    .await
    .expect(201);
    api.advance("1s");
    api.block_ok("198.51.100.0/23", "2h").await;
    api.advance("1s");
    api.block_ok("2001:db8::5", "1h").await;
    api.set_blocked("bgp1", &[1, 2]).await;
    api.unblock_now("2001:db8::5").await;
}

fn cidrs(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r["cidr"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn stats_source_stats_and_metrics_are_public() {
    let api = Api::new().await;
    mixed(&api).await;
    let s = api.get("/bhr/api/stats", Who::Anonymous).await.expect(200);
    assert_eq!(
        s.body,
        r#"{"block_pending":1,"unblock_pending":0,"current":2,"expected":3,"sources":{"feed":1,"test":2}}"#
    );
    let s = api
        .get("/bhr/api/source_stats", Who::Anonymous)
        .await
        .expect(200);
    assert_eq!(s.body, r#"{"feed":1,"test":2}"#);
    let m = api
        .get("/bhr/api/metrics", Who::Anonymous)
        .await
        .expect(200);
    assert!(m.header("content-type").starts_with("text/plain"));
    assert_eq!(m.header("cache-control"), "max-age=300");
    let ms = api.now().as_micros() / 1000;
    assert_eq!(
        m.body,
        format!(
            "\n# HELP bhr_blocked_total total hosts blocked\n# TYPE bhr_blocked_total gauge\n\
             bhr_blocked_total{{type=\"current\"}} 2 {ms}\nbhr_blocked_total{{type=\"expected\"}} 3 {ms}\n\
             \n# HELP bhr_pending_total total hosts pending\n# TYPE bhr_pending_total gauge\n\
             bhr_pending_total{{type=\"block\"}} 1 {ms}\nbhr_pending_total{{type=\"unblock\"}} 0 {ms}\n\
             \n# HELP bhr_blocked_total_by_source total hosts blocked by each source\n\
             # TYPE bhr_blocked_total_by_source gauge\n\
             bhr_blocked_total_by_source{{source=\"feed\"}} 1 {ms}\n\
             bhr_blocked_total_by_source{{source=\"test\"}} 2 {ms}\n"
        )
    );
    // Stats move with time: after an hour block 1 is due for removal.
    api.advance("1h");
    let s = api.json("/bhr/api/stats", Who::Anonymous).await;
    assert_eq!(
        s,
        json!({"block_pending": 1, "unblock_pending": 1, "current": 2, "expected": 2, "sources": {"feed": 1, "test": 1}})
    );
}

#[tokio::test]
async fn the_derived_sets() {
    let api = Api::new().await;
    mixed(&api).await;
    let get = |p: &'static str| {
        let api = &api;
        async move { api.get(p, Who::Person).await.expect(200).json() }
    };
    assert_eq!(
        cidrs(&get("/bhr/api/current_blocks/").await),
        ["192.0.2.1/32", "192.0.2.0/24"]
    );
    assert_eq!(
        cidrs(&get("/bhr/api/pending_blocks/").await),
        ["198.51.100.0/23"]
    );
    assert_eq!(get("/bhr/api/pending_removal_blocks/").await, json!([]));
    let mut e = cidrs(&get("/bhr/api/expected_blocks/").await);
    e.sort();
    assert_eq!(e, ["192.0.2.0/24", "192.0.2.1/32", "198.51.100.0/23"]);
    assert_eq!(
        get("/bhr/api/expected_blocks/?source=feed").await,
        json!([{"cidr": "192.0.2.0/24"}])
    );
    assert_eq!(
        get("/bhr/api/expected_blocks/?source=nope").await,
        json!([])
    );
    let b = get("/bhr/api/current_blocks/2/").await;
    assert_eq!(b["cidr"], "192.0.2.0/24");
    assert_eq!(b["unblock_at"], Value::Null);
    api.get("/bhr/api/current_blocks/3/", Who::Person)
        .await
        .expect(404);
    api.get("/bhr/api/current_blocks/x/", Who::Person)
        .await
        .expect(404);
    assert_eq!(
        get("/bhr/api/pending_blocks/3/").await["cidr"],
        "198.51.100.0/23"
    );
    assert_eq!(
        get("/bhr/api/expected_blocks/3/").await,
        json!({"cidr": "198.51.100.0/23"})
    );
    api.get("/bhr/api/expected_blocks/4/", Who::Person)
        .await
        .expect(404);
    api.get("/bhr/api/pending_removal_blocks/1/", Who::Person)
        .await
        .expect(404);
    // Brief: CSV by default, JSON on request.
    let r = api
        .get("/bhr/api/current_blocks_brief/", Who::Person)
        .await
        .expect(200);
    assert_eq!(r.header("content-type"), "text/csv; charset=utf-8");
    assert_eq!(r.body, "cidr\r\n192.0.2.1/32\r\n192.0.2.0/24\r\n");
    let r = api
        .json("/bhr/api/current_blocks_brief/?format=json", Who::Person)
        .await;
    assert_eq!(
        r,
        json!([{"cidr": "192.0.2.1/32"}, {"cidr": "192.0.2.0/24"}])
    );
    assert_eq!(
        get("/bhr/api/current_blocks_brief/1/").await,
        json!({"cidr": "192.0.2.1/32"})
    );
    // blocks/: everything, with detail.
    assert_eq!(get("/bhr/api/blocks/").await.as_array().unwrap().len(), 4);
    let b = get("/bhr/api/blocks/4/").await;
    assert_eq!(b["cidr"], "2001:db8::5/128");
    api.get("/bhr/api/blocks/5/", Who::Person).await.expect(404);
    // blockentries/.
    let e = get("/bhr/api/blockentries/").await;
    assert_eq!(e.as_array().unwrap().len(), 2);
    assert_eq!(e[1]["block"], json!({"cidr": "192.0.2.0/24"}));
    assert_eq!(e[1]["removed"], Value::Null);
    // Each set needs a login.
    for p in [
        "/bhr/api/current_blocks/",
        "/bhr/api/pending_blocks/",
        "/bhr/api/pending_removal_blocks/",
        "/bhr/api/expected_blocks/",
        "/bhr/api/current_blocks_brief/",
        "/bhr/api/blocks/",
        "/bhr/api/blockentries/",
        "/bhr/api/whitelist/",
        "/bhr/api/query/192.0.2.0/24",
        "/bhr/list.csv",
        "/bhr/publist.csv",
    ] {
        let r = api.get(p, Who::Anonymous).await.expect(401);
        assert_eq!(
            r.json(),
            json!({"detail": "Authentication credentials were not provided."}),
            "{p}"
        );
    }
}

#[tokio::test]
async fn query_finds_networks_within_the_query() {
    let api = Api::new().await;
    mixed(&api).await;
    let q = |p: String| {
        let api = &api;
        async move { cidrs(&api.get(&p, Who::Blocker).await.expect(200).json()) }
    };
    let mut all = q("/bhr/api/query/192.0.2.0/24".into()).await;
    all.sort();
    assert_eq!(all, ["192.0.2.0/24", "192.0.2.1/32"]);
    assert_eq!(q("/bhr/api/query/192.0.2.1".into()).await, ["192.0.2.1/32"]);
    assert_eq!(
        q("/bhr/api/query/198.51.100.9".into()).await,
        Vec::<String>::new(),
        "inside a blocked /23"
    );
    assert_eq!(
        q("/bhr/api/query/198.51.100.0/22".into()).await,
        ["198.51.100.0/23"]
    );
    assert_eq!(
        q("/bhr/api/query/2001:db8::5".into()).await,
        ["2001:db8::5/128"],
        "any state"
    );
    assert_eq!(q("/bhr/api/query/0.0.0.0/0".into()).await.len(), 3);
    // Every block ever made for the network, history included.
    api.advance("2h");
    api.block_ok("198.51.100.0/23", "1h").await;
    assert_eq!(q("/bhr/api/query/198.51.100.0/23".into()).await.len(), 2);
    // Fixed: a bad network is a 400 (the original: 500).
    let r = api
        .get("/bhr/api/query/banana", Who::Blocker)
        .await
        .expect(400);
    assert_eq!(
        r.json(),
        json!({"cidr": ["'banana' does not appear to be an IPv4 or IPv6 network"]})
    );
    let r = api
        .get("/bhr/api/query/192.0.2.1/24", Who::Blocker)
        .await
        .expect(400);
    assert_eq!(
        r.json(),
        json!({"cidr": ["192.0.2.1/24 has host bits set"]})
    );
}

#[tokio::test]
async fn limited_views_exist_only_with_the_setting() {
    let api = Api::new().await;
    mixed(&api).await;
    api.get("/bhr/api/query_limited/192.0.2.1", Who::Anonymous)
        .await
        .expect(404);
    api.get("/bhr/api/query_limited/192.0.2.1", Who::Person)
        .await
        .expect(404);
    // Without the setting, publist.csv needs a login.
    api.get("/bhr/publist.csv", Who::Anonymous)
        .await
        .expect(401);
    api.get("/bhr/publist.csv", Who::Manager).await.expect(200);

    let settings = Settings {
        unauthenticated_limited_query: true,
        ..Settings::default()
    };
    let api = Api::with(settings, |_| {}).await;
    mixed(&api).await;
    let r = api
        .get("/bhr/api/query_limited/192.0.2.1", Who::Anonymous)
        .await
        .expect(200);
    assert_eq!(
        r.json(),
        json!([{"cidr": "192.0.2.1/32", "source": "test", "added": iso_at("0s"), "unblock_at": iso_at("1h")}])
    );
    let r = api
        .get("/bhr/api/query_limited/banana", Who::Anonymous)
        .await
        .expect(400);
    assert!(r.json()["cidr"].is_array());
    let r = api
        .get("/bhr/publist.csv", Who::Anonymous)
        .await
        .expect(200);
    assert_eq!(r.header("content-type"), "text/csv");
    let lines: Vec<&str> = r.body.split("\r\n").collect();
    assert_eq!(lines[0], "cidr,added,unblock_at");
    assert!(
        lines.contains(
            &format!(
                "192.0.2.1/32,{},{}",
                pystr(T0),
                pystr(T0 + "1h".parse().unwrap())
            )
            .as_str()
        )
    );
    assert!(
        lines.contains(&format!("192.0.2.0/24,{},", pystr(T0 + "1s".parse().unwrap())).as_str())
    );
    assert_eq!(
        lines.len(),
        5,
        "three rows, a header and the final empty piece"
    );
}

#[tokio::test]
async fn list_csv_with_source_and_since() {
    let api = Api::new().await;
    mixed(&api).await;
    api.block(&[
        ("cidr", "192.0.2.9"),
        ("source", "feed"),
        ("why", "has, a \"comma\""),
        ("duration", "1h"),
    ])
    .await
    .expect(201);
    let r = api.get("/bhr/list.csv", Who::Person).await.expect(200);
    assert_eq!(r.header("content-type"), "text/csv");
    assert!(
        r.body
            .starts_with("cidr,who,source,why,added,unblock_at\r\n")
    );
    assert!(r.body.contains(&format!(
        "192.0.2.1/32,blocker,test,because,{},{}\r\n",
        pystr(T0),
        pystr(T0 + "1h".parse().unwrap())
    )));
    assert!(r.body.contains("192.0.2.0/24,blocker,feed,list,"));
    assert!(
        r.body.contains(",\r\n"),
        "an indefinite block has an empty unblock_at"
    );
    assert!(
        r.body.contains("\"has, a \"\"comma\"\"\""),
        "quoted as Python's csv does"
    );
    assert!(
        !r.body.contains("2001:db8::5"),
        "forced blocks are not expected"
    );
    let r = api.get("/bhr/list.csv?source=feed", Who::Person).await;
    assert_eq!(r.body.matches("\r\n").count(), 3);
    let since = pystr(T0 + "1s".parse().unwrap());
    let r = api
        .get(
            &format!(
                "/bhr/list.csv?since={}",
                since.replace('+', "%2B").replace(' ', "%20")
            ),
            Who::Person,
        )
        .await
        .expect(200);
    let rows: Vec<&str> = r
        .body
        .split("\r\n")
        .skip(1)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(rows.len(), 3, "inclusive: {rows:?}");
    assert!(rows[0].starts_with("192.0.2.0/24,"), "oldest first");
    assert!(rows[1].starts_with("198.51.100.0/23,"));
    assert!(rows[2].starts_with("192.0.2.9/32,"));
}

#[tokio::test]
async fn whitelist_entries() {
    let api = Api::new().await;
    let r = api
        .post_form(
            "/bhr/api/whitelist/",
            Who::Person,
            &[("cidr", "203.0.113.0/24"), ("why", "do not block docs net")],
        )
        .await
        .expect(201);
    assert_eq!(
        r.body,
        json!({"cidr": "203.0.113.0/24", "who": "person", "why": "do not block docs net", "added": pystr(T0)}).to_string()
    );
    assert_eq!(
        api.json("/bhr/api/whitelist/", Who::Blocker)
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        api.json("/bhr/api/whitelist/1/", Who::Blocker).await["cidr"],
        "203.0.113.0/24"
    );
    api.get("/bhr/api/whitelist/2/", Who::Blocker)
        .await
        .expect(404);
    let r = api.block_src("203.0.113.8", "s", "1").await.expect(400);
    assert_eq!(
        r.json(),
        json!({"non_field_errors": ["whitelisted: person: do not block docs net"]})
    );
    // Permissions: a blocker cannot whitelist.
    api.post_form(
        "/bhr/api/whitelist/",
        Who::Blocker,
        &[("cidr", "198.51.100.0/24"), ("why", "x")],
    )
    .await
    .expect(403);
    let r = api
        .post_form(
            "/bhr/api/whitelist/",
            Who::Person,
            &[("cidr", "198.51.100.1/24"), ("why", "x")],
        )
        .await
        .expect(400);
    assert_eq!(
        r.json(),
        json!({"cidr": ["198.51.100.1/24 has host bits set"]})
    );
    let r = api
        .post_form(
            "/bhr/api/whitelist/",
            Who::Person,
            &[("cidr", "198.51.100.0/24")],
        )
        .await
        .expect(400);
    assert_eq!(r.json(), json!({"why": ["This field is required."]}));
    // Delete.
    let del = |who| {
        let api = &api;
        async move { api.delete("/bhr/api/whitelist/1/", who).await }
    };
    del(Who::Manager).await.expect(403);
    del(Who::Person).await.expect(204);
    del(Who::Person).await.expect(404);
    api.block_src("203.0.113.8", "s", "1").await.expect(201);
}

#[tokio::test]
async fn source_blacklist_entries() {
    let api = Api::new().await;
    let r = api
        .post_json(
            "/bhr/api/source_blacklist/",
            Who::Admin,
            &json!({"source": "badsrc", "why": "noisy feed"}),
        )
        .await
        .expect(201);
    assert_eq!(
        r.json(),
        json!({"source": "badsrc", "who": "admin", "why": "noisy feed", "added": iso(T0)})
    );
    let r = api.block_src("192.0.2.1", "badsrc", "1").await.expect(400);
    assert_eq!(
        r.json(),
        json!({"non_field_errors": ["Source badsrc is blacklisted: admin: noisy feed"]})
    );
    assert_eq!(
        api.json("/bhr/api/source_blacklist/", Who::Blocker).await[0]["source"],
        "badsrc"
    );
    assert_eq!(
        api.json("/bhr/api/source_blacklist/badsrc/", Who::Blocker)
            .await["why"],
        "noisy feed"
    );
    api.post_json(
        "/bhr/api/source_blacklist/",
        Who::Blocker,
        &json!({"source": "x", "why": "y"}),
    )
    .await
    .expect(403);
    let del = api
        .delete("/bhr/api/source_blacklist/badsrc/", Who::Person)
        .await;
    del.expect(204);
    api.block_src("192.0.2.1", "badsrc", "1").await.expect(201);
    let api = api.restart().await;
    assert_eq!(
        api.json("/bhr/api/source_blacklist/", Who::Blocker).await,
        json!([])
    );
}

#[tokio::test]
async fn navigation_redirects_and_unknown_paths() {
    let api = Api::new().await;
    let root = api
        .get("/bhr/api/", Who::Anonymous)
        .await
        .expect(200)
        .json();
    assert_eq!(root["blocks"], "http://testserver/bhr/api/blocks/");
    assert_eq!(
        root["current_blocks_brief"],
        "http://testserver/bhr/api/current_blocks_brief/"
    );
    let r = api.get("/bhr/api/blocks", Who::Person).await.expect(301);
    assert_eq!(r.header("location"), "/bhr/api/blocks/");
    let r = api
        .get("/bhr/api/expected_blocks?source=x", Who::Person)
        .await
        .expect(301);
    assert_eq!(r.header("location"), "/bhr/api/expected_blocks/?source=x");
    let r = api.get("/", Who::Anonymous).await.expect(302);
    assert_eq!(r.header("location"), "/bhr/");
    for p in [
        "/bhr/api/stats/",
        "/bhr/api/block/",
        "/nothing",
        "/bhr/api/blocks/1/nothing/",
    ] {
        let r = api.get(p, Who::Person).await.expect(404);
        assert_eq!(r.json(), json!({"detail": "Not found."}), "{p}");
    }
    let r = api.get("/bhr/api/block", Who::Blocker).await.expect(405);
    assert_eq!(r.json(), json!({"detail": "Method \"GET\" not allowed."}));
    let r = api
        .post_json("/bhr/api/stats", Who::Blocker, &json!({}))
        .await
        .expect(405);
    assert_eq!(r.json(), json!({"detail": "Method \"POST\" not allowed."}));
}

#[tokio::test]
async fn links_follow_the_host_and_a_proxys_scheme() {
    let api = Api::new().await;
    api.block_ok("192.0.2.1", "1h").await;
    let get = |host: &'static str, proto: Option<&'static str>| {
        let api = &api;
        async move {
            let mut b = axum::http::Request::builder()
                .uri("/bhr/api/blocks/1/")
                .header("host", host)
                .header(
                    "authorization",
                    format!("Token {}", Who::Person.token().unwrap()),
                );
            if let Some(p) = proto {
                b = b.header("x-forwarded-proto", p);
            }
            api.send(b.body(axum::body::Body::empty()).unwrap())
                .await
                .expect(200)
                .json()
        }
    };
    assert_eq!(
        get("bhr.example.org", None).await["url"],
        "http://bhr.example.org/bhr/api/blocks/1/"
    );
    assert_eq!(
        get("bhr.example.org:8443", Some("https")).await["set_blocked"],
        "https://bhr.example.org:8443/bhr/api/blocks/1/set_blocked/"
    );
}
