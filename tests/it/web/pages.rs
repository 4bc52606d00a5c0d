//! Every page's status codes, access rules, CSRF checks and escaping, in-process on the
//! API harness (clock at T0 = Nov. 21, 2026, 1:51:53 p.m. UTC).

use std::collections::HashMap;

use axum::body::Body;
use axum::http::{Method, Request, header};
use serde_json::json;

use catchd::auth::{Role, User, hash_password};
use catchd::bhr::model::Settings;

use crate::api::harness::{Api, HOST, Resp, Who};

/// A browser's view of the in-process server: cookies kept between requests.
struct Visitor<'a> {
    api: &'a Api,
    cookies: HashMap<String, String>,
    origin: Option<String>,
    /// Another router over the same state (the catch-and-release page), if set.
    router: Option<axum::Router>,
}

impl<'a> Visitor<'a> {
    fn new(api: &'a Api) -> Visitor<'a> {
        Visitor {
            api,
            cookies: HashMap::new(),
            origin: Some(format!("http://{HOST}")),
            router: None,
        }
    }

    async fn send(&mut self, method: Method, path: &str, form: Option<&[(&str, &str)]>) -> Resp {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, HOST);
        if !self.cookies.is_empty() {
            let c: Vec<String> = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            b = b.header(header::COOKIE, c.join("; "));
        }
        let body = match form {
            Some(f) => {
                if let Some(o) = &self.origin {
                    b = b.header(header::ORIGIN, o);
                }
                b = b.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
                serde_urlencoded::to_string(f).unwrap()
            }
            None => String::new(),
        };
        let req = b.body(Body::from(body)).unwrap();
        let r = match &self.router {
            None => self.api.send(req).await,
            Some(router) => {
                use tower::ServiceExt;
                let r = router.clone().oneshot(req).await.unwrap();
                let (parts, body) = r.into_parts();
                let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
                Resp {
                    status: parts.status,
                    headers: parts.headers,
                    body: String::from_utf8(bytes.to_vec()).unwrap(),
                }
            }
        };
        for v in r.headers.get_all(header::SET_COOKIE) {
            let v = v.to_str().unwrap();
            let (kv, attrs) = v.split_once(';').unwrap_or((v, ""));
            let (k, val) = kv.split_once('=').unwrap();
            if attrs.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_string(), val.to_string());
            }
        }
        r
    }

    async fn get(&mut self, path: &str) -> Resp {
        self.send(Method::GET, path, None).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Resp {
        self.send(Method::POST, path, Some(form)).await
    }

    /// Signs in through the form.
    async fn sign_in(&mut self, name: &str, password: &str) -> Resp {
        let page = self.get("/accounts/login/").await.expect(200);
        let token = csrf(&page.body);
        self.post(
            "/accounts/login/",
            &[
                ("csrfmiddlewaretoken", &token),
                ("username", name),
                ("password", password),
                ("next", "/bhr/list"),
            ],
        )
        .await
    }
}

/// The CSRF token of the first form on a page.
#[track_caller]
fn csrf(page: &str) -> String {
    let at = page
        .find("name=\"csrfmiddlewaretoken\" value=\"")
        .unwrap_or_else(|| panic!("no CSRF field in {page}"));
    let rest = &page[at + 34..];
    rest[..rest.find('"').unwrap()].to_string()
}

/// An API whose users `person` (role user) and `blocker` (role blocker) have passwords.
async fn api_with(settings: Settings) -> Api {
    let api = Api::with(settings, |_| {}).await;
    for (id, name, role, who) in [
        (3, "person", Role::User, Who::Person),
        (1, "blocker", Role::Blocker, Who::Blocker),
    ] {
        api.state.users().put(User {
            id,
            name: name.into(),
            role,
            token_hash: who.token().map(|t| catchd::auth::hash_token(&t)),
            password_hash: Some(hash_password(&format!("{name}-pw"))),
        });
    }
    api
}

fn limited() -> Settings {
    Settings {
        unauthenticated_limited_query: true,
        ..Settings::default()
    }
}

async fn block(api: &Api, cidr: &str, source: &str, why: &str, duration: &str) {
    api.post_form(
        "/bhr/api/block",
        Who::Admin,
        &[
            ("cidr", cidr),
            ("source", source),
            ("why", why),
            ("duration", duration),
        ],
    )
    .await
    .expect(201);
}

#[tokio::test]
async fn limited_pages_exist_only_with_the_setting() {
    let off = api_with(Settings::default()).await;
    for p in ["/bhr/limited/query", "/bhr/limited/list"] {
        off.get(p, Who::Anonymous).await.expect(404);
    }
    let api = api_with(limited()).await;
    block(&api, "192.0.2.10", "bro", "ssh scanner", "300").await;
    block(&api, "10.1.2.3", "web", "local compromise", "0").await;
    block(&api, "198.51.100.0/24", "cli", "ssh brute force", "86400").await;

    let r = api
        .get("/bhr/limited/query?query=192.0.2.0/24", Who::Anonymous)
        .await
        .expect(200);
    assert_eq!(r.header("content-type"), "text/html; charset=utf-8");
    assert!(
        r.header("content-security-policy")
            .contains("script-src 'self'")
    );
    for col in [
        "<th>Cidr</th>",
        "<th>Source</th>",
        "<th>Added</th>",
        "<th>Unblock At</th>",
        "<th>Duration</th>",
    ] {
        assert!(r.body.contains(col), "{col}");
    }
    assert!(r.body.contains("192.0.2.10/32"));
    assert!(
        r.body.contains("Nov. 21, 2026, 1:51 p.m."),
        "Django's date format"
    );
    assert!(
        r.body.contains("5\u{a0}minutes"),
        "timesince of the duration"
    );
    assert!(
        !r.body.contains("ssh scanner"),
        "the limited page does not show why"
    );
    assert!(!r.body.contains("198.51.100.0/24"));

    // Text: a substring of why (case-sensitive), even though why is not shown.
    let r = api
        .get("/bhr/limited/query?query=ssh", Who::Anonymous)
        .await
        .expect(200);
    assert!(r.body.contains("192.0.2.10/32") && r.body.contains("198.51.100.0/24"));
    assert!(r.body.contains("2 blocks"));
    let r = api
        .get("/bhr/limited/query?query=SSH", Who::Anonymous)
        .await
        .expect(200);
    assert!(r.body.contains("0 blocks"));
    // A v6 address starting with a letter is text, not an error.
    api.get("/bhr/limited/query?query=fe80::1", Who::Anonymous)
        .await
        .expect(200);
    // Bad input: a broken network, an over-long query.
    let r = api
        .get("/bhr/limited/query?query=192.0.2.0/99", Who::Anonymous)
        .await
        .expect(400);
    assert!(r.body.contains("class=\"error\""));
    let long = "a".repeat(101);
    let r = api
        .get(&format!("/bhr/limited/query?query={long}"), Who::Anonymous)
        .await
        .expect(400);
    assert!(r.body.contains("at most 100 characters (it has 101)"));

    let r = api
        .get("/bhr/limited/list", Who::Anonymous)
        .await
        .expect(200);
    assert!(r.body.contains("href=\"/bhr/publist.csv\""));
    let manual =
        &r.body[r.body.find("Manual Blocks").unwrap()..r.body.find("Local Blocks").unwrap()];
    assert!(manual.contains("10.1.2.3/32") && manual.contains("198.51.100.0/24"));
    assert!(!manual.contains("192.0.2.10"), "bro blocks are not manual");
    let local = &r.body[r.body.find("Local Blocks").unwrap()..];
    assert!(local.contains("<th>DNS</th>") && local.contains("10.1.2.3/32"));
    assert!(!local.contains("198.51.100.0/24"));
    assert!(local.contains("indefinite"));
}

#[tokio::test]
async fn operator_pages_send_strangers_to_sign_in() {
    let api = api_with(limited()).await;
    block(&api, "192.0.2.10", "bro", "scan", "300").await;
    for p in [
        "/bhr/query?query=192.0.2.10",
        "/bhr/list",
        "/bhr/list/source/bro",
        "/bhr/add",
        "/bhr/unblock?id=1",
    ] {
        let r = api.get(p, Who::Anonymous).await.expect(302);
        let want = format!(
            "/accounts/login/?next={}",
            p.replace('?', "%3F").replace('=', "%3D")
        );
        assert_eq!(r.header("location"), want, "{p}");
    }
    // API tokens do not open pages (pages take a session).
    api.get("/bhr/list", Who::Admin).await.expect(302);
    for p in [
        "/bhr/",
        "/bhr/stats",
        "/accounts/login/",
        "/static/catchd.css",
        "/static/cr.js",
    ] {
        api.get(p, Who::Anonymous).await.expect(200);
    }
    let r = api.get("/", Who::Anonymous).await.expect(302);
    assert_eq!(r.header("location"), "/bhr/");
    let r = api.get("/bhr/login", Who::Anonymous).await.expect(302);
    assert_eq!(r.header("location"), "/accounts/login/");
    // The C&R page belongs to `catchd run`; `catchd serve` has none.
    api.get("/cr/", Who::Anonymous).await.expect(404);
    // Forms without a session change nothing.
    let mut v = Visitor::new(&api);
    let r = v
        .post("/bhr/do_unblock", &[("id", "1"), ("why", "x")])
        .await
        .expect(302);
    assert!(r.header("location").starts_with("/accounts/login/"));
    v.post(
        "/bhr/add",
        &[("cidr", "192.0.2.99"), ("why", "x"), ("duration", "300")],
    )
    .await
    .expect(302);
    let q = api.json("/bhr/api/query/192.0.2.0/24", Who::Admin).await;
    assert_eq!(q.as_array().unwrap().len(), 1);
    assert_eq!(q[0]["unblock_at"], "2026-11-21T13:56:53.360815Z");
    // The stats page is public, as in BHR.
    let r = api.get("/bhr/stats", Who::Anonymous).await.expect(200);
    assert!(r.body.contains("href=\"/bhr/list/source/bro\""));
}

#[tokio::test]
async fn sign_in_needs_the_right_password_and_a_csrf_token() {
    let api = api_with(Settings::default()).await;
    let mut v = Visitor::new(&api);
    let page = v.get("/accounts/login/?next=/bhr/list").await.expect(200);
    let token = csrf(&page.body);
    assert_eq!(v.cookies.get("catchd_csrf"), Some(&token));
    // Wrong password: the form again, with the error, and no session.
    let r = v
        .post(
            "/accounts/login/",
            &[
                ("csrfmiddlewaretoken", &token),
                ("username", "person"),
                ("password", "nope"),
            ],
        )
        .await
        .expect(401);
    assert!(
        r.body
            .contains("Please enter a correct username and password")
    );
    assert!(r.body.contains("value=\"person\""), "the name is kept");
    assert!(!v.cookies.contains_key("catchd_session"));
    // Unknown user, and a user without a password (token only): the same answer.
    v.post(
        "/accounts/login/",
        &[
            ("csrfmiddlewaretoken", &token),
            ("username", "nobody"),
            ("password", "x"),
        ],
    )
    .await
    .expect(401);
    v.post(
        "/accounts/login/",
        &[
            ("csrfmiddlewaretoken", &token),
            ("username", "manager"),
            ("password", ""),
        ],
    )
    .await
    .expect(401);
    // Without the token, or with another one, or from another origin: refused.
    v.post(
        "/accounts/login/",
        &[("username", "person"), ("password", "person-pw")],
    )
    .await
    .expect(403);
    v.post(
        "/accounts/login/",
        &[
            ("csrfmiddlewaretoken", &"0".repeat(64)),
            ("username", "person"),
            ("password", "person-pw"),
        ],
    )
    .await
    .expect(403);
    v.origin = Some("http://evil.example".into());
    v.post(
        "/accounts/login/",
        &[
            ("csrfmiddlewaretoken", &token),
            ("username", "person"),
            ("password", "person-pw"),
        ],
    )
    .await
    .expect(403);
    v.origin = Some(format!("http://{HOST}"));
    assert!(!v.cookies.contains_key("catchd_session"));

    // Right password: to `next`, with a session cookie.
    let r = v
        .post(
            "/accounts/login/",
            &[
                ("csrfmiddlewaretoken", &token),
                ("username", "person"),
                ("password", "person-pw"),
                ("next", "/bhr/list"),
            ],
        )
        .await
        .expect(303);
    assert_eq!(r.header("location"), "/bhr/list");
    let set: Vec<_> = r
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|c| c.to_str().unwrap().to_string())
        .collect();
    assert!(set.iter().any(|c| c.starts_with("catchd_session=")
        && c.contains("HttpOnly")
        && c.contains("SameSite=Lax")));
    let r = v.get("/bhr/list").await.expect(200);
    assert!(r.body.contains("<span class=\"who\">person</span>"));
    // Only local paths are followed after sign-in.
    let mut w = Visitor::new(&api);
    let page = w.get("/accounts/login/").await;
    let t = csrf(&page.body);
    let r = w
        .post(
            "/accounts/login/",
            &[
                ("csrfmiddlewaretoken", &t),
                ("username", "person"),
                ("password", "person-pw"),
                ("next", "//evil.example/"),
            ],
        )
        .await
        .expect(303);
    assert_eq!(r.header("location"), "/bhr/");

    // A signed-in browser may read list.csv and publist.csv.
    let r = v.get("/bhr/list.csv").await.expect(200);
    assert!(r.body.starts_with("cidr,who,source,why,added,unblock_at"));
    v.get("/bhr/publist.csv").await.expect(200);
    api.get("/bhr/list.csv", Who::Anonymous).await.expect(401);

    // Sign out needs the token too; then the pages are closed again.
    let list = v.get("/bhr/list").await;
    let token = csrf(&list.body);
    v.post("/accounts/logout/", &[]).await.expect(403);
    v.get("/bhr/list").await.expect(200);
    v.post("/accounts/logout/", &[("csrfmiddlewaretoken", &token)])
        .await
        .expect(303);
    assert!(!v.cookies.contains_key("catchd_session"));
    v.get("/bhr/list").await.expect(302);

    // A user removed while signed in is signed out.
    let r = w.get("/bhr/list").await.expect(200);
    assert!(r.body.contains("person"));
    let remaining: Vec<User> = crate::api::harness::users()
        .into_iter()
        .filter(|u| u.name != "person")
        .collect();
    api.state.users().reload(remaining);
    w.get("/bhr/list").await.expect(302);
}

/// `next` after sign-in: only a plain local path is followed. Browsers drop tabs and
/// newlines and read `\` as `/`, so `/\t/evil.example` would be `//evil.example`.
#[tokio::test]
async fn sign_in_never_redirects_off_site() {
    let api = api_with(Settings::default()).await;
    let hostile = [
        "//evil.example/",
        "/\t/evil.example",
        "/\n/evil.example",
        "/\r\n/evil.example",
        "\t//evil.example",
        "/\\evil.example",
        "\\/evil.example",
        "/%09/evil.example\t",
        "https://evil.example/",
        "javascript:alert(1)",
        "/bhr/\x00",
        " /bhr/",
        "/ /evil.example",
        "",
    ];
    for next in hostile {
        // The form.
        let mut v = Visitor::new(&api);
        let page = v.get("/accounts/login/").await.expect(200);
        let t = csrf(&page.body);
        let r = v
            .post(
                "/accounts/login/",
                &[
                    ("csrfmiddlewaretoken", &t),
                    ("username", "person"),
                    ("password", "person-pw"),
                    ("next", next),
                ],
            )
            .await
            .expect(303);
        assert_eq!(r.header("location"), "/bhr/", "POST next={next:?}");
        // GET while signed in (the query string, percent-encoded).
        let q: String = serde_urlencoded::to_string([("next", next)]).unwrap();
        let r = v.get(&format!("/accounts/login/?{q}")).await.expect(302);
        assert_eq!(r.header("location"), "/bhr/", "GET ?{q}");
    }
    // Plain local paths are kept.
    let mut v = Visitor::new(&api);
    v.sign_in("person", "person-pw").await.expect(303);
    for next in ["/bhr/list", "/bhr/query?query=192.0.2.1", "/cr/"] {
        let q: String = serde_urlencoded::to_string([("next", next)]).unwrap();
        let r = v.get(&format!("/accounts/login/?{q}")).await.expect(302);
        assert_eq!(r.header("location"), next);
    }
}

#[tokio::test]
async fn the_add_form_blocks_and_the_unblock_form_ends_blocks() {
    let api = api_with(Settings::default()).await;
    let mut v = Visitor::new(&api);
    v.sign_in("person", "person-pw").await.expect(303);
    let form = v.get("/bhr/add?cidr=192.0.2.7").await.expect(200);
    for (secs, label) in [
        ("300", "5 minutes"),
        ("3600", "1 hour"),
        ("86400", "1 day"),
        ("604800", "1 week"),
        ("2592000", "1 month"),
        ("7776000", "3 months"),
        ("31536000", "1 year"),
        ("0", "Indefinite"),
    ] {
        assert!(
            form.body.contains(&format!("<option value=\"{secs}\"")),
            "{label}"
        );
        assert!(form.body.contains(&format!(">{label}</option>")), "{label}");
    }
    assert!(form.body.contains("name=\"skip_whitelist\"") && form.body.contains("name=\"extend\""));
    assert!(
        !form.body.contains("name=\"extend\" checked"),
        "extend is off by default"
    );
    assert!(form.body.contains("value=\"192.0.2.7\""));
    let token = csrf(&form.body);

    // CSRF: no token, a wrong one, another origin.
    let fields = |t: &'static str| {
        vec![
            ("csrfmiddlewaretoken", t),
            ("cidr", "192.0.2.7"),
            ("why", "test"),
            ("duration", "3600"),
        ]
    };
    v.post("/bhr/add", &fields("")).await.expect(403);
    let wrong = "f".repeat(64);
    let wrong: &'static str = Box::leak(wrong.into_boxed_str());
    v.post("/bhr/add", &fields(wrong)).await.expect(403);
    v.origin = Some("https://evil.example".into());
    let tok: &'static str = Box::leak(token.clone().into_boxed_str());
    v.post("/bhr/add", &fields(tok)).await.expect(403);
    v.origin = Some(format!("http://{HOST}"));
    assert_eq!(
        api.json("/bhr/api/query/192.0.2.7", Who::Admin).await,
        json!([])
    );

    // The block is made with source web, by the signed-in user.
    let r = v.post("/bhr/add", &fields(tok)).await.expect(303);
    assert_eq!(r.header("location"), "/bhr/query?query=192.0.2.7/32");
    let q = api.json("/bhr/api/query/192.0.2.7", Who::Admin).await;
    assert_eq!(q[0]["source"], "web");
    assert_eq!(q[0]["who"], "person");
    assert_eq!(q[0]["why"], "test");
    assert_eq!(q[0]["unblock_at"], "2026-11-21T14:51:53.360815Z");
    let page = v.get("/bhr/query?query=192.0.2.7/32").await.expect(200);
    assert!(
        page.body.contains("class=\"flash\"")
            && page
                .body
                .contains("Blocked 192.0.2.7/32 until Nov. 21, 2026, 2:51 p.m.")
    );
    assert!(page.body.contains("<td data-label=\"Who\">person</td>"));
    assert!(
        page.body
            .contains("<td class=\"why\" data-label=\"Why\">test</td>")
    );
    // The message shows once.
    assert!(
        !v.get("/bhr/query?query=192.0.2.7/32")
            .await
            .body
            .contains("class=\"flash\"")
    );

    // Refusals come back on the form with BHR's text; bad fields name the field.
    let r = v
        .post(
            "/bhr/add",
            &[
                ("csrfmiddlewaretoken", tok),
                ("cidr", "10.0.0.0/8"),
                ("why", "x"),
                ("duration", "300"),
            ],
        )
        .await
        .expect(400);
    assert!(
        r.body.contains("Prefix length in 10.0.0.0/8 is too small"),
        "{}",
        r.body
    );
    let r = v
        .post(
            "/bhr/add",
            &[
                ("csrfmiddlewaretoken", tok),
                ("cidr", "nonsense"),
                ("why", "x"),
                ("duration", "300"),
            ],
        )
        .await
        .expect(400);
    assert!(r.body.contains("class=\"error\""));
    v.post(
        "/bhr/add",
        &[
            ("csrfmiddlewaretoken", tok),
            ("cidr", "192.0.2.8"),
            ("why", "x"),
            ("duration", "12345"),
        ],
    )
    .await
    .expect(400);
    v.post(
        "/bhr/add",
        &[
            ("csrfmiddlewaretoken", tok),
            ("cidr", "192.0.2.8"),
            ("why", ""),
            ("duration", "300"),
        ],
    )
    .await
    .expect(400);
    // skip_whitelist (which would let the short prefix through) is for admins only
    // (bhr.skip_whitelist_roles); a user is told so.
    let r = v
        .post(
            "/bhr/add",
            &[
                ("csrfmiddlewaretoken", tok),
                ("cidr", "10.0.0.0/8"),
                ("why", "x"),
                ("duration", "300"),
                ("skip_whitelist", "on"),
            ],
        )
        .await
        .expect(403);
    assert!(
        r.body
            .contains("You do not have permission to skip the whitelist."),
        "{}",
        r.body
    );
    // extend: the existing block gets the new, longer end.
    v.post(
        "/bhr/add",
        &[
            ("csrfmiddlewaretoken", tok),
            ("cidr", "192.0.2.7"),
            ("why", "more"),
            ("duration", "86400"),
            ("extend", "on"),
        ],
    )
    .await
    .expect(303);
    let q = api.json("/bhr/api/query/192.0.2.7", Who::Admin).await;
    assert_eq!(q.as_array().unwrap().len(), 1);
    assert_eq!(q[0]["unblock_at"], "2026-11-22T13:51:53.360815Z");

    // A block manager put it in place; unblocking through the pages queues its removal.
    api.set_blocked("bgp1", &[1]).await;
    let page = v.get("/bhr/query?query=192.0.2.7").await.expect(200);
    assert!(page.body.contains("<td>bgp1</td>"), "the entries table");
    assert!(page.body.contains("name=\"id\" value=\"1\""));
    let token = csrf(&page.body);
    let confirm = v
        .post(
            "/bhr/unblock",
            &[("csrfmiddlewaretoken", &token), ("id", "1")],
        )
        .await
        .expect(200);
    assert!(
        confirm.body.contains("action=\"/bhr/do_unblock\"")
            && confirm.body.contains("192.0.2.7/32")
    );
    assert_eq!(
        api.json("/bhr/api/unblock_queue/bgp1", Who::Manager).await,
        json!([]),
        "nothing happens before the confirmation"
    );
    v.post(
        "/bhr/do_unblock",
        &[("csrfmiddlewaretoken", &token), ("id", "1"), ("why", "")],
    )
    .await
    .expect(400);
    v.post("/bhr/do_unblock", &[("id", "1"), ("why", "fp")])
        .await
        .expect(403);
    let r = v
        .post(
            "/bhr/do_unblock",
            &[
                ("csrfmiddlewaretoken", &token),
                ("id", "1"),
                ("why", "false positive"),
            ],
        )
        .await
        .expect(303);
    assert_eq!(r.header("location"), "/bhr/query?query=192.0.2.7/32");
    let q = api.json("/bhr/api/unblock_queue/bgp1", Who::Manager).await;
    assert_eq!(q[0]["block"]["cidr"], "192.0.2.7/32");
    let page = v.get("/bhr/query?query=192.0.2.7").await.expect(200);
    assert!(page.body.contains("Unblocked by person: false positive"));
    assert!(
        !page.body.contains("name=\"id\" value=\"1\""),
        "no longer unblockable"
    );
    // Again: nothing left to do.
    let r = v
        .post(
            "/bhr/do_unblock",
            &[
                ("csrfmiddlewaretoken", &token),
                ("id", "1"),
                ("why", "again"),
            ],
        )
        .await
        .expect(303);
    assert_eq!(r.header("location"), "/bhr/list");
}

#[tokio::test]
async fn roles_decide_what_signed_in_users_may_do() {
    let api = api_with(Settings::default()).await;
    block(&api, "192.0.2.10", "bro", "scan", "300").await;
    let mut v = Visitor::new(&api);
    v.sign_in("blocker", "blocker-pw").await.expect(303);
    // A blocker reads and adds, but does not unblock.
    let list = v.get("/bhr/list").await.expect(200);
    assert!(!list.body.contains("type=\"checkbox\""));
    assert!(!list.body.contains("action=\"/bhr/unblock\""));
    v.get("/bhr/add").await.expect(200);
    v.get("/bhr/unblock?id=1").await.expect(403);
    let token = csrf(&list.body);
    v.post(
        "/bhr/do_unblock",
        &[("csrfmiddlewaretoken", &token), ("id", "1"), ("why", "x")],
    )
    .await
    .expect(403);
    let q = api.json("/bhr/api/query/192.0.2.10", Who::Admin).await;
    assert_eq!(q[0]["unblock_at"], "2026-11-21T13:56:53.360815Z");
}

#[tokio::test]
async fn pages_escape_what_they_show() {
    let api = api_with(limited()).await;
    let evil = "<script>alert(1)</script>\"'&<img src=x onerror=alert(2)>";
    block(&api, "192.0.2.66", "<b>src</b>", evil, "300").await;
    let mut v = Visitor::new(&api);
    v.sign_in("person", "person-pw").await.expect(303);
    let pages = [
        v.get("/bhr/query?query=192.0.2.66").await.expect(200),
        v.get("/bhr/query?query=%3Cscript").await.expect(200),
        v.get("/bhr/list").await.expect(200),
        v.get("/bhr/list/source/%3Cb%3Esrc%3C%2Fb%3E")
            .await
            .expect(200),
        v.get("/bhr/unblock?id=1").await.expect(200),
        v.get("/bhr/stats").await.expect(200),
        api.get("/bhr/limited/query?query=192.0.2.66", Who::Anonymous)
            .await
            .expect(200),
        api.get(
            "/bhr/limited/query?query=%22%3E%3Cscript%3Ealert(3)%3C/script%3E",
            Who::Anonymous,
        )
        .await
        .expect(200),
        api.get("/bhr/limited/list", Who::Anonymous)
            .await
            .expect(200),
        api.get(
            "/accounts/login/?next=%22%3E%3Cscript%3Ealert(4)%3C/script%3E",
            Who::Anonymous,
        )
        .await
        .expect(200),
    ];
    for (i, p) in pages.iter().enumerate() {
        for raw in ["<script>alert", "<img src", "<b>src</b>", "\"><script"] {
            assert!(
                !p.body.contains(raw),
                "page {i} shows {raw:?} unescaped:\n{}",
                p.body
            );
        }
    }
    // The templates escape what HTML needs in text and double-quoted attributes (an
    // apostrophe is inert in both).
    assert!(pages[0].body.contains(
        "&lt;script&gt;alert(1)&lt;/script&gt;&quot;'&amp;&lt;img src=x onerror=alert(2)&gt;"
    ));
    assert!(
        pages[1].body.contains("192.0.2.66/32"),
        "a text search finds it"
    );
    assert!(pages[3].body.contains("&lt;b&gt;src&lt;/b&gt;"));
    assert!(
        pages[5]
            .body
            .contains("href=\"/bhr/list/source/%3Cb%3Esrc%3C%2Fb%3E\"")
    );
    assert!(pages[7].body.contains("&quot;&gt;&lt;script&gt;alert(3)"));
}

/// A daemon's view with attacker-chosen text in every field the page shows.
struct FakeDaemon;

impl catchd::web::CatchRelease for FakeDaemon {
    fn overview(
        &self,
        limit: usize,
        filter: Option<&ipnet::IpNet>,
        now: catchd::time::Time,
    ) -> catchd::web::Overview {
        use catchd::addr::Addr;
        use catchd::cnr::{Action, BlockInfo, CatchReleaseRecord, DEFAULT_INTERVALS, Intervals};
        use catchd::time::Interval;
        let secs = Interval::from_secs;
        let evil: std::sync::Arc<str> = "<script>alert('loc')</script>".into();
        let all: Vec<(Addr, BlockInfo)> = (1..=3u8)
            .map(|i| {
                let a: Addr = format!("192.0.2.{i}").parse().unwrap();
                let info = BlockInfo {
                    block_until: Some(now + secs(600 * i64::from(i))),
                    watch_until: now + secs(3600 * i64::from(i)),
                    num_reblocked: u32::from(i) - 1,
                    current_interval: usize::from(i) - 1,
                    current_block_id: None,
                    location: Some(evil.clone()),
                };
                (a, info)
            })
            .collect();
        let rows: Vec<_> = all
            .into_iter()
            .filter(|(a, _)| filter.is_none_or(|n| n.contains(&std::net::IpAddr::from(*a))))
            .take(limit)
            .collect();
        catchd::web::Overview {
            watched: 3,
            matched: rows.len(),
            blocked: rows.len(),
            rows,
            nets: vec![(
                "2001:db8:1::/64".parse().unwrap(),
                BlockInfo {
                    block_until: Some(now + Interval::from_secs(60)),
                    watch_until: now + Interval::from_secs(600),
                    num_reblocked: 1,
                    current_interval: 1,
                    current_block_id: None,
                    location: Some("<script>alert(1)</script>".into()),
                },
            )],
            intervals: Some(Intervals::new(DEFAULT_INTERVALS.to_vec()).unwrap()),
            recent: vec![CatchReleaseRecord {
                ts: now,
                rule_id: None,
                ip: "192.0.2.1".parse().unwrap(),
                action: Action::Dropped,
                block_interval: secs(600),
                watch_interval: secs(3600),
                blocked_until: Some(now + secs(600)),
                watched_until: now + secs(3600),
                num_blocked: 1,
                location: Some(evil.clone()),
                message: Some("<img src=x onerror=alert('msg')>".into()),
                plugin: None,
            }],
            captures: vec![catchd::web::cr::Capture {
                interface: "<b>eth0</b>".into(),
                up: true,
                rate: 1234,
                packets: 99,
                kernel_dropped: 7,
                ..Default::default()
            }],
            actions: vec![("DROPPED", 1), ("SEEN_AGAIN", 0), ("FORGOTTEN", 0)],
            source: "catch-and-release".into(),
        }
    }
}

#[tokio::test]
async fn the_catch_and_release_page_is_for_operators_and_escapes_everything() {
    let api = api_with(Settings::default()).await;
    block(&api, "192.0.2.1", "catch-and-release", "x", "600").await;
    let router = catchd::web::router(api.state.clone(), Some(std::sync::Arc::new(FakeDaemon)));
    let mut v = Visitor::new(&api);
    v.router = Some(router.clone());
    // Strangers are sent to sign in; the live part answers 401.
    let r = v.get("/cr/").await.expect(302);
    assert_eq!(r.header("location"), "/accounts/login/?next=/cr/");
    v.get("/cr/live").await.expect(401);
    v.get("/cr").await.expect(301);

    v.sign_in("person", "person-pw").await.expect(303);
    let r = v.get("/cr/").await.expect(200);
    let b = &r.body;
    assert!(b.contains("<script src=\"/static/cr.js\" defer></script>"));
    assert!(b.contains("<noscript><meta http-equiv=\"refresh\" content=\"30\"></noscript>"));
    assert!(b.contains("192.0.2.3") && b.contains("3 of 4") && b.contains("block 24h"));
    assert!(
        b.contains("data-until=") && b.contains(">10m 0s<"),
        "countdowns rendered on the server"
    );
    assert!(b.contains("<td class=\"num\" data-label=\"Packets/s\">1234</td>"));
    assert!(b.contains("<svg"), "the chart");
    for raw in ["<script>alert", "<img src", "<b>eth0</b>"] {
        assert!(!b.contains(raw), "{raw:?} unescaped");
    }
    assert!(b.contains("&lt;script&gt;alert('loc')&lt;/script&gt;"));
    assert!(b.contains("&lt;b&gt;eth0&lt;/b&gt;"));

    // The filter, and bad filters.
    let r = v.get("/cr/?addr=192.0.2.2").await.expect(200);
    assert!(r.body.contains("1 of 3 inside"));
    assert!(!r.body.contains(">192.0.2.3<"));
    assert!(r.body.contains("data-src=\"/cr/live?addr=192.0.2.2\""));
    v.get("/cr/?addr=nonsense").await.expect(400);
    v.get("/cr/live?addr=nonsense").await.expect(400);
    let live = v.get("/cr/live?addr=192.0.2.0/24").await.expect(200);
    assert!(!live.body.contains("<html"), "a fragment");
    assert!(live.body.contains("data-now="));
}
