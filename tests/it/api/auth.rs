//! Authentication, permissions and malformed requests (bhr.md §7).

use axum::body::Body;
use axum::http::{Method, Request, header};
use base64::Engine as _;
use serde_json::json;

use catchd::auth::{Role, User, hash_token};
use catchd::store::Write;

use super::harness::*;

async fn with_auth(api: &Api, path: &str, auth: &str) -> Resp {
    let req = Request::builder()
        .uri(path)
        .header(header::HOST, HOST)
        .header(header::AUTHORIZATION, auth)
        .body(Body::empty())
        .unwrap();
    api.send(req).await
}

fn basic(user: &str, pw: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
    )
}

#[tokio::test]
async fn credential_failures_have_drf_bodies() {
    let api = Api::new().await;
    let p = "/bhr/api/query/192.0.2.1";
    for (auth, status, detail) in [
        ("Token nope", 401, "Invalid token."),
        (
            "Token",
            401,
            "Invalid token header. No credentials provided.",
        ),
        (
            "Token a b",
            401,
            "Invalid token header. Token string should not contain spaces.",
        ),
        (
            "Basic",
            401,
            "Invalid basic header. No credentials provided.",
        ),
        (
            "Basic !!!",
            401,
            "Invalid basic header. Credentials not correctly base64 encoded.",
        ),
        (&basic("admin", "wrong"), 401, "Invalid username/password."),
        (
            &basic("nobody", "secret"),
            401,
            "Invalid username/password.",
        ),
        (
            &basic("blocker", "anything"),
            401,
            "Invalid username/password.",
        ),
        (
            "Bearer xyz",
            401,
            "Authentication credentials were not provided.",
        ),
    ] {
        let r = with_auth(&api, p, auth).await;
        assert_eq!(r.status.as_u16(), status, "{auth}");
        assert_eq!(r.json(), json!({"detail": detail}), "{auth}");
        assert_eq!(r.header("www-authenticate"), "Token", "{auth}");
    }
    // Bad credentials fail even on public endpoints; an unknown scheme does not.
    with_auth(&api, "/bhr/api/stats", "Token nope")
        .await
        .expect(401);
    with_auth(&api, "/bhr/api/stats", "Bearer xyz")
        .await
        .expect(200);
}

#[tokio::test]
async fn token_and_basic_both_work() {
    let api = Api::new().await;
    let t = Who::Person.token().unwrap();
    with_auth(&api, "/bhr/api/blocks/", &format!("Token {t}"))
        .await
        .expect(200);
    with_auth(&api, "/bhr/api/blocks/", &format!("token {t}"))
        .await
        .expect(200);
    for _ in 0..2 {
        // The second time comes from the verified-password cache.
        with_auth(&api, "/bhr/api/blocks/", &basic("admin", "secret"))
            .await
            .expect(200);
    }
    let req = Request::builder()
        .method(Method::POST)
        .uri("/bhr/api/block")
        .header(header::HOST, HOST)
        .header(header::AUTHORIZATION, basic("admin", "secret"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from("cidr=192.0.2.1&source=cli&why=x&duration=1h"))
        .unwrap();
    let b = api.send(req).await.expect(201).json();
    assert_eq!(b["who"], "admin");
}

/// bhr.md §7.3: who may do what.
#[tokio::test]
async fn permissions_follow_the_bhr_groups() {
    let api = Api::new().await;
    api.block_ok("192.0.2.1", "1h").await;
    let block = json!({"cidr": "192.0.2.2", "source": "s", "why": "w", "duration": "1h"});
    type Case = (&'static str, &'static str, serde_json::Value);
    let cases: Vec<Case> = vec![
        ("POST", "/bhr/api/block", block.clone()),
        ("POST", "/bhr/api/mblock", json!([block.clone()])),
        (
            "POST",
            "/bhr/api/unblock_now",
            json!({"cidr": "192.0.2.1", "why": "x"}),
        ),
        ("GET", "/bhr/api/queue/i", json!(null)),
        ("POST", "/bhr/api/set_blocked_multi/i", json!({"ids": [1]})),
        ("GET", "/bhr/api/unblock_queue/i", json!(null)),
        ("POST", "/bhr/api/set_unblocked_multi", json!({"ids": [1]})),
        (
            "POST",
            "/bhr/api/whitelist/",
            json!({"cidr": "203.0.113.0/24", "why": "x"}),
        ),
        // BHR: POST on the blocks viewset needs add_block; set_blocked/ needs add_block
        // and add_blockentry (bhr.md §7.3).
        (
            "POST",
            "/bhr/api/blocks/",
            json!({"cidr": "192.0.2.3", "source": "s", "why": "w"}),
        ),
        (
            "POST",
            "/bhr/api/blocks/1/set_blocked/",
            json!({"ident": "i"}),
        ),
    ];
    // (role, which of the cases above it may do)
    let allowed = [
        (
            Who::Blocker,
            [
                true, true, false, false, false, false, false, false, true, false,
            ],
        ),
        (
            Who::Manager,
            [
                false, false, false, true, true, true, true, false, false, false,
            ],
        ),
    ];
    for (who, may) in allowed {
        for ((method, path, body), ok) in cases.iter().zip(may) {
            let r = if *method == "GET" {
                api.get(path, who).await
            } else {
                api.post_json(path, who, body).await
            };
            if ok {
                assert!(
                    r.status.is_success(),
                    "{who:?} {path}: {} {}",
                    r.status,
                    r.body
                );
            } else {
                assert_eq!(r.status.as_u16(), 403, "{who:?} {path}: {}", r.body);
                assert_eq!(
                    r.json(),
                    json!({"detail": "You do not have permission to perform this action."})
                );
            }
            let anon = if *method == "GET" {
                api.get(path, Who::Anonymous).await
            } else {
                api.post_json(path, Who::Anonymous, body).await
            };
            assert_eq!(anon.status.as_u16(), 401, "anonymous {path}");
        }
    }
    // People and admins may do everything.
    for who in [Who::Person, Who::Admin] {
        for (method, path, body) in &cases {
            if *path == "/bhr/api/unblock_now" || path.contains("whitelist") {
                continue; // done once below, they change state
            }
            let r = if *method == "GET" {
                api.get(path, who).await
            } else {
                api.post_json(path, who, body).await
            };
            assert!(
                r.status.is_success(),
                "{who:?} {path}: {} {}",
                r.status,
                r.body
            );
        }
    }
    api.unblock_now("192.0.2.1").await;
    // Any authenticated user may read.
    for who in [Who::Blocker, Who::Manager] {
        api.get("/bhr/api/blocks/", who).await.expect(200);
        api.get("/bhr/list.csv", who).await.expect(200);
    }
}

#[tokio::test]
async fn users_added_or_changed_while_running() {
    let api = Api::new().await;
    let store = catchd::store::Store::open_for_users(&api.db).unwrap();
    let user = User {
        id: 10,
        name: "late".into(),
        role: Role::Blocker,
        token_hash: Some(hash_token("late-token")),
        password_hash: None,
    };
    store.commit(vec![Write::User(user.clone())]).await.unwrap();
    // Known at once, through the store.
    let r = with_auth(&api, "/bhr/api/blocks/", "Token late-token")
        .await
        .expect(200);
    assert_eq!(r.json(), json!([]));
    // A new token: the old one stops working after the reload the server does.
    let rotated = User {
        token_hash: Some(hash_token("new-token")),
        ..user
    };
    store
        .commit(vec![Write::User(rotated.clone())])
        .await
        .unwrap();
    assert!(api.state.users().reload(store.users().await.unwrap()));
    with_auth(&api, "/bhr/api/blocks/", "Token late-token")
        .await
        .expect(401);
    with_auth(&api, "/bhr/api/blocks/", "Token new-token")
        .await
        .expect(200);
    // Removed.
    store.commit(vec![Write::UserDeleted(10)]).await.unwrap();
    assert!(api.state.users().reload(store.users().await.unwrap()));
    with_auth(&api, "/bhr/api/blocks/", "Token new-token")
        .await
        .expect(401);
    assert!(
        !api.state.users().reload(store.users().await.unwrap()),
        "nothing changed"
    );
}

#[tokio::test]
async fn malformed_bodies_are_400s_or_415s() {
    let api = Api::new().await;
    let r = api
        .call(
            Method::POST,
            "/bhr/api/block",
            Who::Blocker,
            Some("application/json"),
            b"{\"cidr\":".to_vec(),
        )
        .await
        .expect(400);
    assert!(
        r.json()["detail"]
            .as_str()
            .unwrap()
            .starts_with("JSON parse error - ")
    );
    let r = api
        .call(
            Method::POST,
            "/bhr/api/block",
            Who::Blocker,
            Some("text/plain"),
            b"cidr".to_vec(),
        )
        .await
        .expect(415);
    assert_eq!(
        r.json(),
        json!({"detail": "Unsupported media type \"text/plain\" in request."})
    );
    let r = api
        .post_json("/bhr/api/block", Who::Blocker, &json!([1, 2]))
        .await
        .expect(400);
    assert_eq!(
        r.json(),
        json!({"non_field_errors": ["Invalid data. Expected a dictionary, but got list."]})
    );
    let r = api
        .post_json(
            "/bhr/api/block",
            Who::Blocker,
            &json!({"cidr": ["a"], "source": 5, "why": {}, "duration": null}),
        )
        .await
        .expect(400);
    let v = r.json();
    assert!(
        v["cidr"].is_array() && v["why"].is_array() && v["duration"].is_array(),
        "{v}"
    );
    let r = api
        .call(
            Method::POST,
            "/bhr/api/block",
            Who::Blocker,
            Some("application/x-www-form-urlencoded"),
            b"cidr=%ZZ".to_vec(),
        )
        .await;
    assert_eq!(r.status.as_u16(), 400, "{}", r.body);
    assert!(r.json().is_object());
    // Nothing was created by any of it.
    assert_eq!(api.json("/bhr/api/blocks/", Who::Person).await, json!([]));
}

#[tokio::test]
async fn oversized_bodies_are_a_json_413() {
    let api = Api::new().await;
    let big = vec![b' '; 5 << 20];
    let r = api
        .call(
            Method::POST,
            "/bhr/api/mblock",
            Who::Blocker,
            Some("application/json"),
            big,
        )
        .await
        .expect(413);
    assert_eq!(r.json(), json!({"detail": "Request body too large."}));
    // Below the limit (4 MiB), a large mblock is fine.
    let recs: Vec<serde_json::Value> = (0..5000)
        .map(|i| json!({"cidr": format!("10.9.{}.{}", i / 250, i % 250), "source": "s", "why": "w", "duration": "1h"}))
        .collect();
    let r = api
        .post_json(
            "/bhr/api/mblock",
            Who::Blocker,
            &serde_json::Value::Array(recs),
        )
        .await
        .expect(201);
    assert_eq!(r.json().as_array().unwrap().len(), 5000);
}
