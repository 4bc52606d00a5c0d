//! Block managers: queues, set_blocked, unblock queues, set_unblocked, unblock_now, the
//! re-block race (bhr.md §5, §8.3, §11.4).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::harness::*;

fn ids(rows: &Value) -> Vec<u64> {
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect()
}

/// Six blocks as in the captured session: ids 1..=6, one second apart.
async fn six_blocks(api: &Api) {
    for cidr in [
        "192.0.2.10",
        "192.0.2.11",
        "198.51.100.0/23",
        "2001:db8:1::/64",
        "2001:db8::1",
        "203.0.113.7",
    ] {
        api.block_ok(cidr, "1h").await;
        api.advance("1s");
    }
}

#[tokio::test]
async fn queues_are_per_ident() {
    let api = Api::new().await;
    six_blocks(&api).await;
    let q = api
        .get("/bhr/api/queue/bgp1", Who::Manager)
        .await
        .expect(200)
        .json();
    assert_eq!(ids(&q), [1, 2, 3, 4, 5, 6]);
    assert_eq!(
        q[2],
        json!({
            "id": 3,
            "cidr": "198.51.100.0/23",
            "set_blocked": "http://testserver/bhr/api/blocks/3/set_blocked/",
            "added": iso_at("2s"),
        })
    );
    api.post_json(
        "/bhr/api/set_blocked_multi/bgp1",
        Who::Manager,
        &json!({"ids": [3, 4]}),
    )
    .await
    .expect(200)
    .json();
    let q1 = api.json("/bhr/api/queue/bgp1", Who::Manager).await;
    let q2 = api.json("/bhr/api/queue/bgp2", Who::Manager).await;
    assert_eq!(ids(&q1), [1, 2, 5, 6]);
    assert_eq!(ids(&q2), [1, 2, 3, 4, 5, 6]);
    let since = api
        .json(
            &format!("/bhr/api/queue/bgp2?added_since={}", iso_at("3s")),
            Who::Manager,
        )
        .await;
    assert_eq!(ids(&since), [4, 5, 6], "added_since is inclusive");
    let since = api
        .json(
            "/bhr/api/queue/bgp2?added_since=2026-11-21%2013:51:56.5",
            Who::Manager,
        )
        .await;
    assert_eq!(ids(&since), [5, 6], "a naive time is UTC");
    let stats = api.json("/bhr/api/stats", Who::Anonymous).await;
    assert_eq!(
        stats,
        json!({"block_pending": 4, "unblock_pending": 0, "current": 2, "expected": 6, "sources": {"test": 6}})
    );
    // The trailing slash is part of the ident, as in the original.
    let q = api.json("/bhr/api/queue/bgp1/", Who::Manager).await;
    assert_eq!(ids(&q), [1, 2, 3, 4, 5, 6]);
}

#[tokio::test]
async fn queues_hold_at_most_200_oldest_first() {
    let api = Api::new().await;
    let recs: Vec<Value> = (0..250)
        .map(|i| json!({"cidr": format!("10.1.{}.{}", i / 256, i % 256), "source": "s", "why": "w", "duration": "1h"}))
        .collect();
    api.post_json("/bhr/api/mblock", Who::Blocker, &Value::Array(recs))
        .await
        .expect(201);
    let q = api.json("/bhr/api/queue/m", Who::Manager).await;
    let got = ids(&q);
    assert_eq!(got.len(), 200);
    assert_eq!(got[0], 1);
    assert_eq!(got[199], 200);
    let all: Vec<u64> = got.clone();
    api.post_json(
        "/bhr/api/set_blocked_multi/m",
        Who::Manager,
        &json!({"ids": all}),
    )
    .await
    .expect(200);
    let q = api.json("/bhr/api/queue/m", Who::Manager).await;
    assert_eq!(ids(&q), (201..=250).collect::<Vec<_>>());
}

#[tokio::test]
async fn set_blocked_is_idempotent_and_checks_its_ids() {
    let api = Api::new().await;
    six_blocks(&api).await;
    let path = "/bhr/api/set_blocked_multi/bgp1";
    api.post_json(path, Who::Manager, &json!({"ids": [1]}))
        .await
        .expect(200);
    // The original answers 500 and rolls the batch back; catchd records what is new.
    let r = api
        .post_json(path, Who::Manager, &json!({"ids": [1, 2]}))
        .await
        .expect(200);
    assert_eq!(r.json(), json!({"status": "ok"}));
    let entries = api.json("/bhr/api/blockentries/", Who::Person).await;
    assert_eq!(entries.as_array().unwrap().len(), 2);
    // Unknown ids: 400 and nothing changes (the original: 500).
    let r = api
        .post_json(path, Who::Manager, &json!({"ids": [3, 999]}))
        .await
        .expect(400);
    assert_eq!(
        r.json(),
        json!({"ids": ["Invalid pk \"999\" - object does not exist."]})
    );
    assert_eq!(
        ids(&api.json("/bhr/api/queue/bgp1", Who::Manager).await),
        [3, 4, 5, 6]
    );
    // Missing or malformed ids: 400 (the original: 500).
    let r = api
        .post_json(path, Who::Manager, &json!({}))
        .await
        .expect(400);
    assert_eq!(r.json(), json!({"ids": ["This field is required."]}));
    let r = api
        .post_json(path, Who::Manager, &json!({"ids": ["x"]}))
        .await
        .expect(400);
    assert_eq!(r.json(), json!({"ids": ["A valid integer is required."]}));
    let r = api
        .post_json(path, Who::Manager, &json!({"ids": {"a": 1}}))
        .await
        .expect(400);
    assert_eq!(r.json(), json!({"ids": ["Expected a list of items."]}));
    // An empty list is fine.
    api.post_json(path, Who::Manager, &json!({"ids": []}))
        .await
        .expect(200);
    // Form bodies: ids=3&ids=4, not character by character.
    api.post_form(path, Who::Manager, &[("ids", "3"), ("ids", "4")])
        .await
        .expect(200);
    assert_eq!(
        ids(&api.json("/bhr/api/queue/bgp1", Who::Manager).await),
        [5, 6]
    );
    // The per-block endpoint: ident required, 404 for unknown blocks, idempotent.
    let p = "/bhr/api/blocks/5/set_blocked/";
    let r = api.post_form(p, Who::Person, &[]).await.expect(400);
    assert_eq!(r.json(), json!({"ident": ["This field is required."]}));
    api.post_form(p, Who::Person, &[("ident", "bgp1")])
        .await
        .expect(200);
    api.post_form(p, Who::Person, &[("ident", "bgp1")])
        .await
        .expect(200);
    api.post_form(
        "/bhr/api/blocks/99/set_blocked/",
        Who::Person,
        &[("ident", "bgp1")],
    )
    .await
    .expect(404);
    // A manager may not use it (it needs add_block too).
    api.post_form(
        "/bhr/api/blocks/6/set_blocked/",
        Who::Manager,
        &[("ident", "bgp1")],
    )
    .await
    .expect(403);
    assert_eq!(
        ids(&api.json("/bhr/api/queue/bgp1", Who::Manager).await),
        [6]
    );
}

#[tokio::test]
async fn expiry_and_unblock_now_fill_the_unblock_queues() {
    let api = Api::new().await;
    six_blocks(&api).await;
    api.set_blocked("bgp1", &[2, 3]).await;
    api.set_blocked("bgp2", &[3]).await;
    assert_eq!(
        api.json("/bhr/api/unblock_queue/bgp1", Who::Manager).await,
        json!([])
    );
    let before = api.now();
    let r = api
        .post_json(
            "/bhr/api/unblock_now",
            Who::Person,
            &json!({"cidr": "192.0.2.11", "why": "false positive"}),
        )
        .await
        .expect(200);
    assert_eq!(r.json(), json!({"status": "ok"}));
    let u1 = api.json("/bhr/api/unblock_queue/bgp1", Who::Manager).await;
    assert_eq!(
        u1,
        json!([{
            "id": 1,
            "block": {"cidr": "192.0.2.11/32"},
            "ident": "bgp1",
            "added": iso(before),
            "set_unblocked": "http://testserver/bhr/api/blockentries/1/set_unblocked/",
        }])
    );
    assert_eq!(
        api.json("/bhr/api/unblock_queue/bgp2", Who::Manager).await,
        json!([])
    );
    let pr = api
        .json("/bhr/api/pending_removal_blocks/", Who::Person)
        .await;
    assert_eq!(pr[0]["cidr"], "192.0.2.11/32");
    assert_eq!(pr[0]["unblock_at"], iso(before));
    assert_eq!(
        api.json("/bhr/api/stats", Who::Anonymous).await,
        json!({"block_pending": 4, "unblock_pending": 1, "current": 2, "expected": 5, "sources": {"test": 5}})
    );
    // A forced block does not come back to the block queues.
    assert!(!ids(&api.json("/bhr/api/queue/bgp9", Who::Manager).await).contains(&2));
    // Per-entry set_unblocked.
    api.advance("1s");
    api.post_form("/bhr/api/blockentries/1/set_unblocked/", Who::Manager, &[])
        .await
        .expect(200);
    assert_eq!(
        api.json("/bhr/api/unblock_queue/bgp1", Who::Manager).await,
        json!([])
    );
    let e = api
        .get("/bhr/api/blockentries/1/", Who::Person)
        .await
        .expect(200)
        .json();
    assert_eq!(
        e,
        json!({
            "block": {"cidr": "192.0.2.11/32"},
            "ident": "bgp1",
            "added": iso(before),
            "removed": iso(api.now()),
            "set_unblocked": "http://testserver/bhr/api/blockentries/1/set_unblocked/",
        })
    );
    // Expiry: an hour later everything installed is due, ordered by unblock_at.
    api.advance("1h");
    let u1 = api.json("/bhr/api/unblock_queue/bgp1", Who::Manager).await;
    let u2 = api.json("/bhr/api/unblock_queue/bgp2", Who::Manager).await;
    assert_eq!(ids(&u1), [2]);
    assert_eq!(ids(&u2), [3]);
    assert_eq!(u2[0]["block"]["cidr"], "198.51.100.0/23");
    // set_unblocked_multi ignores unknown ids.
    api.post_json(
        "/bhr/api/set_unblocked_multi",
        Who::Manager,
        &json!({"ids": [2, 3, 777]}),
    )
    .await
    .expect(200);
    assert_eq!(
        api.json("/bhr/api/unblock_queue/bgp1", Who::Manager).await,
        json!([])
    );
    assert_eq!(
        api.json("/bhr/api/unblock_queue/bgp2", Who::Manager).await,
        json!([])
    );
    let r = api
        .post_json("/bhr/api/set_unblocked_multi", Who::Manager, &json!({}))
        .await
        .expect(400);
    assert_eq!(r.json(), json!({"ids": ["This field is required."]}));
    api.post_form("/bhr/api/blockentries/99/set_unblocked/", Who::Manager, &[])
        .await
        .expect(404);
}

#[tokio::test]
async fn unblock_now_errors() {
    let api = Api::new().await;
    api.block_ok("192.0.2.11", "1h").await;
    let p = "/bhr/api/unblock_now";
    let r = api
        .post_json(p, Who::Person, &json!({"cidr": "192.0.2.12", "why": "x"}))
        .await
        .expect(400);
    assert_eq!(
        r.json(),
        json!({"cidr": ["192.0.2.12 is not currently blocked"]})
    );
    let r = api
        .post_json(p, Who::Person, &json!({"cidr": "banana", "why": "x"}))
        .await
        .expect(400);
    assert_eq!(
        r.json(),
        json!({"cidr": ["'banana' does not appear to be an IPv4 or IPv6 network"]})
    );
    let r = api
        .post_json(p, Who::Person, &json!({"cidr": "192.0.2.11"}))
        .await
        .expect(400);
    assert_eq!(r.json(), json!({"why": ["This field is required."]}));
    api.post_json(p, Who::Blocker, &json!({"cidr": "192.0.2.11", "why": "x"}))
        .await
        .expect(403);
    api.post_json(p, Who::Manager, &json!({"cidr": "192.0.2.11", "why": "x"}))
        .await
        .expect(403);
    api.post_json(
        p,
        Who::Anonymous,
        &json!({"cidr": "192.0.2.11", "why": "x"}),
    )
    .await
    .expect(401);
    // Indefinite blocks can be unblocked too.
    api.block_ok("192.0.2.13", "0").await;
    api.post_json(p, Who::Admin, &json!({"cidr": "192.0.2.13", "why": "x"}))
        .await
        .expect(200);
    let e = api.json("/bhr/api/expected_blocks/", Who::Person).await;
    assert_eq!(e, json!([{"cidr": "192.0.2.11/32"}]));
}

/// bhr.md §4 step 8 and §11.4: re-blocking before the manager processed the expiry.
#[tokio::test]
async fn reblock_race_stamps_the_stale_entry() {
    let api = Api::new().await;
    api.block_ok("192.0.2.99", "2s").await;
    api.set_blocked("race1", &[1]).await;
    api.advance("3s");
    let u = api.json("/bhr/api/unblock_queue/race1", Who::Manager).await;
    assert_eq!(ids(&u), [1], "the expired block is due for removal");
    let b = api.block_ok("192.0.2.99", "1h").await;
    assert_eq!(b["url"], "http://testserver/bhr/api/blocks/2/");
    assert_eq!(
        api.json("/bhr/api/unblock_queue/race1", Who::Manager).await,
        json!([])
    );
    let e = api.json("/bhr/api/blockentries/1/", Who::Person).await;
    assert_eq!(e["removed"], iso(api.now()));
    assert_eq!(
        ids(&api.json("/bhr/api/queue/race1", Who::Manager).await),
        [2]
    );
}

#[tokio::test]
async fn an_expired_block_marked_blocked_is_due_at_once() {
    let api = Api::new().await;
    api.block_ok("192.0.2.5", "1s").await;
    api.advance("2s");
    assert_eq!(api.json("/bhr/api/queue/x", Who::Manager).await, json!([]));
    api.set_blocked("x", &[1]).await;
    assert_eq!(
        ids(&api.json("/bhr/api/unblock_queue/x", Who::Manager).await),
        [1]
    );
}

#[tokio::test]
async fn queue_parameters_are_checked() {
    let api = Api::new().await;
    for (q, field, msg) in [
        ("timeout=abc", "timeout", "A valid integer is required."),
        ("timeout=-1", "timeout", "A valid integer is required."),
        (
            "added_since=garbage",
            "added_since",
            "Datetime has wrong format.",
        ),
    ] {
        let r = api
            .get(&format!("/bhr/api/queue/x?{q}"), Who::Manager)
            .await
            .expect(400);
        let got = r.json()[field][0].as_str().unwrap().to_string();
        assert!(got.starts_with(msg), "{q}: {got}");
    }
    let r = api
        .get("/bhr/list.csv?since=garbage", Who::Person)
        .await
        .expect(400);
    assert_eq!(r.json(), json!({"since": ["Enter a valid date/time."]}));
}

#[tokio::test]
async fn a_long_poll_wakes_when_a_block_arrives() {
    let api = std::sync::Arc::new(Api::new().await);
    let poller = {
        let api = api.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            let q = api.json("/bhr/api/queue/lp?timeout=30", Who::Manager).await;
            (q, start.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!poller.is_finished(), "an empty queue waits");
    api.block_ok("192.0.2.44", "1h").await;
    let (q, waited) = poller.await.unwrap();
    assert_eq!(ids(&q), [1]);
    assert!(waited < Duration::from_secs(30), "woken, not timed out");
}

#[tokio::test]
async fn a_long_poll_returns_an_empty_list_when_time_is_up() {
    let api = Api::new().await;
    let start = Instant::now();
    let q = api
        .get("/bhr/api/queue/lp?timeout=1", Who::Manager)
        .await
        .expect(200)
        .json();
    assert_eq!(q, json!([]));
    assert!(start.elapsed() >= Duration::from_secs(1));
}

#[tokio::test]
async fn a_long_poll_ends_when_the_server_stops() {
    let api = std::sync::Arc::new(Api::new().await);
    let poller = {
        let api = api.clone();
        tokio::spawn(async move { api.get("/bhr/api/queue/lp?timeout=30", Who::Manager).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    api.state.stop();
    let r = poller.await.unwrap().expect(200);
    assert_eq!(r.json(), json!([]));
}
