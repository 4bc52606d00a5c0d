//! A BHR API on a temporary database with a hand-driven clock, called in-process.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use serde_json::Value;
use tower::ServiceExt;

use catchd::api::bhr::{self as api, AppState, Limits, Users};
use catchd::auth::{Role, User, hash_password, hash_token};
use catchd::bhr::model::Settings;
use catchd::bhr::registry::Registry;
use catchd::store::Store;
use catchd::time::{Interval, Time};

/// The Host every request carries; links are built from it.
pub const HOST: &str = "testserver";

/// The start of every test's clock: `2026-11-21T13:51:53.360815Z`.
pub const T0: Time = Time::from_timeval(1_795_269_113, 360_815);

/// Who calls: the users every harness has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    Anonymous,
    /// BHR Blockers.
    Blocker,
    /// BHR Block Managers.
    Manager,
    /// BHR Users.
    Person,
    /// Superuser (also has password `secret` for Basic).
    Admin,
}

impl Who {
    pub fn token(self) -> Option<String> {
        match self {
            Who::Anonymous => None,
            w => Some(format!("{w:?}-token-0123456789abcdef").to_lowercase()),
        }
    }
}

/// argon2 is slow in unoptimised builds: hash once.
fn admin_password_hash() -> String {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password("secret")).clone()
}

pub fn users() -> Vec<User> {
    let mk = |id, name: &str, role, who: Who| User {
        id,
        name: name.to_string(),
        role,
        token_hash: who.token().map(|t| hash_token(&t)),
        password_hash: (who == Who::Admin).then(admin_password_hash),
    };
    vec![
        mk(1, "blocker", Role::Blocker, Who::Blocker),
        mk(2, "manager", Role::Manager, Who::Manager),
        mk(3, "person", Role::User, Who::Person),
        mk(4, "admin", Role::Admin, Who::Admin),
    ]
}

/// A response, read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Resp {
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?} {}", self.status, self.body))
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map_or("", |v| v.to_str().unwrap_or(""))
    }

    /// Asserts the status, showing the body when it differs.
    #[track_caller]
    pub fn expect(self, status: u16) -> Resp {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        self
    }
}

pub struct Api {
    pub state: Arc<AppState>,
    settings: Settings,
    router: Router,
    clock: Arc<AtomicI64>,
    pub dir: tempfile::TempDir,
    /// The database: a SQLite file in `dir`, or, with `CATCHD_TEST_PG` set (a
    /// `postgres://` URL of a server the test may create databases on), a PostgreSQL
    /// database of its own.
    pub db: std::path::PathBuf,
}

/// A new database for one test: SQLite in `dir`, or PostgreSQL (see [`Api::db`]).
pub fn test_db(dir: &std::path::Path) -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let Ok(base) = std::env::var("CATCHD_TEST_PG") else {
        return dir.join("t.db");
    };
    let name = format!(
        "catchd_t{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    );
    let b = base.clone();
    let n = name.clone();
    // The synchronous client cannot run inside the test's runtime: a thread of its own.
    std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&b, postgres::NoTls).unwrap();
        c.batch_execute(&format!("CREATE DATABASE {n}")).unwrap();
    })
    .join()
    .unwrap();
    let (head, _) = base.rsplit_once('/').expect("a URL with a database");
    std::path::PathBuf::from(format!("{head}/{name}"))
}

/// Opens a test database; on PostgreSQL, waits for the previous server's session (and
/// its writer lock) to end after a restart.
pub fn open_store(db: &std::path::Path) -> Store {
    let start = std::time::Instant::now();
    loop {
        match Store::open(db) {
            Ok(s) => return s,
            Err(e) if start.elapsed() < std::time::Duration::from_secs(10) => {
                let _ = e;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => panic!("{e}"),
        }
    }
}

impl Api {
    pub async fn new() -> Api {
        Api::with(Settings::default(), |_| {}).await
    }

    /// An API with these settings, whose registry `setup` may prepare (with the clock at
    /// [`T0`]).
    pub async fn with(settings: Settings, setup: impl FnOnce(&mut Registry)) -> Api {
        let dir = tempfile::tempdir().unwrap();
        let db = test_db(dir.path());
        let store = open_store(&db);
        let mut reg = Registry::new(settings.clone());
        reg.advance(T0);
        setup(&mut reg);
        // What setup made is stored too, as if made through the API.
        let snapshot_writes: Vec<_> = reg
            .whitelist()
            .iter()
            .cloned()
            .map(|w| catchd::store::Write::Bhr(catchd::bhr::registry::Change::Whitelist(w)))
            .chain(reg.source_blacklist().iter().cloned().map(|s| {
                catchd::store::Write::Bhr(catchd::bhr::registry::Change::SourceBlacklist(s))
            }))
            .chain(users().into_iter().map(catchd::store::Write::User))
            .collect();
        store.commit(snapshot_writes).await.unwrap();
        Api::on(reg, store, dir, db, settings)
    }

    fn on(
        reg: Registry,
        store: Store,
        dir: tempfile::TempDir,
        db: std::path::PathBuf,
        settings: Settings,
    ) -> Api {
        let clock = Arc::new(AtomicI64::new(T0.as_micros()));
        let c = clock.clone();
        let state = AppState::new(
            reg,
            store,
            Users::new(users()),
            Arc::new(move || Time::from_micros(c.load(Ordering::SeqCst))),
            Limits::default(),
        );
        Api {
            router: api::router(state.clone()).merge(catchd::web::router(state.clone(), None)),
            state,
            settings,
            clock,
            dir,
            db,
        }
    }

    /// An API whose store runs on `backend` (users are only in memory).
    pub fn with_backend(backend: impl catchd::store::Driver) -> Api {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        let store = Store::start(backend).unwrap();
        let mut reg = Registry::new(Settings::default());
        reg.advance(T0);
        Api::on(reg, store, dir, db, Settings::default())
    }

    /// A new server on the same database (a restart), at the same time.
    pub async fn restart(self) -> Api {
        let now = self.now();
        let settings = self.settings.clone();
        let dir = self.dir;
        let db = self.db;
        drop(self.router);
        drop(self.state);
        let store = open_store(&db);
        let snap = store.load().await.unwrap();
        let reg = Registry::restore(
            settings.clone(),
            now,
            snap.blocks,
            snap.entries,
            snap.whitelist,
            snap.source_blacklist,
        )
        .unwrap();
        let api = Api::on(reg, store, dir, db, settings);
        api.clock.store(now.as_micros(), Ordering::SeqCst);
        api
    }

    pub fn now(&self) -> Time {
        Time::from_micros(self.clock.load(Ordering::SeqCst))
    }

    /// Moves the clock forward by a duration such as `"10m"` or `"1.5s"`.
    pub fn advance(&self, by: &str) {
        let i: Interval = by.parse().unwrap();
        self.clock.fetch_add(i.as_micros(), Ordering::SeqCst);
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        who: Who,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Resp {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, HOST);
        if let Some(t) = who.token() {
            b = b.header(header::AUTHORIZATION, format!("Token {t}"));
        }
        if let Some(ct) = content_type {
            b = b.header(header::CONTENT_TYPE, ct);
        }
        self.send(b.body(Body::from(body)).unwrap()).await
    }

    pub async fn send(&self, req: Request<Body>) -> Resp {
        let r = self.router.clone().oneshot(req).await.unwrap();
        let status = r.status();
        let headers = r.headers().clone();
        let bytes = axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .unwrap();
        Resp {
            status,
            headers,
            body: String::from_utf8(bytes.to_vec()).unwrap(),
        }
    }

    pub async fn get(&self, path: &str, who: Who) -> Resp {
        self.call(Method::GET, path, who, None, Vec::new()).await
    }

    /// A GET whose answer must be JSON (any status).
    pub async fn json(&self, path: &str, who: Who) -> Value {
        self.get(path, who).await.json()
    }

    pub async fn delete(&self, path: &str, who: Who) -> Resp {
        self.call(Method::DELETE, path, who, None, Vec::new()).await
    }

    pub async fn post_json(&self, path: &str, who: Who, body: &Value) -> Resp {
        self.call(
            Method::POST,
            path,
            who,
            Some("application/json"),
            body.to_string().into_bytes(),
        )
        .await
    }

    pub async fn post_form(&self, path: &str, who: Who, fields: &[(&str, &str)]) -> Resp {
        let body = serde_urlencoded::to_string(fields).unwrap();
        self.call(
            Method::POST,
            path,
            who,
            Some("application/x-www-form-urlencoded"),
            body.into_bytes(),
        )
        .await
    }

    /// `POST /bhr/api/block` as the client's `block()` sends it (a form).
    pub async fn block(&self, fields: &[(&str, &str)]) -> Resp {
        self.post_form("/bhr/api/block", Who::Blocker, fields).await
    }

    /// `set_blocked_multi/<ident>` as the manager, which must succeed.
    pub async fn set_blocked(&self, ident: &str, ids: &[u64]) {
        let path = format!("/bhr/api/set_blocked_multi/{ident}");
        self.post_json(&path, Who::Manager, &serde_json::json!({ "ids": ids }))
            .await
            .expect(200);
    }

    /// `unblock_now` as a person, which must succeed.
    pub async fn unblock_now(&self, cidr: &str) {
        let body = serde_json::json!({"cidr": cidr, "why": "false positive"});
        self.post_json("/bhr/api/unblock_now", Who::Person, &body)
            .await
            .expect(200);
    }

    /// A block request from `source` (why: `w`).
    pub async fn block_src(&self, cidr: &str, source: &str, duration: &str) -> Resp {
        self.block(&[
            ("cidr", cidr),
            ("source", source),
            ("why", "w"),
            ("duration", duration),
        ])
        .await
    }

    /// A plain new block of `duration` for `cidr`, which must succeed.
    pub async fn block_ok(&self, cidr: &str, duration: &str) -> Value {
        self.block(&[
            ("cidr", cidr),
            ("source", "test"),
            ("why", "because"),
            ("duration", duration),
        ])
        .await
        .expect(201)
        .json()
    }
}

/// `T0 + by` as DRF's ISO text.
pub fn iso_at(by: &str) -> String {
    let i: Interval = by.parse().unwrap();
    iso(T0 + i)
}

/// DRF's ISO form of a time.
pub fn iso(t: Time) -> String {
    let us = t.as_micros();
    let secs = us.div_euclid(1_000_000);
    let frac = us.rem_euclid(1_000_000);
    let dt = chrono::DateTime::from_timestamp(secs, 0).unwrap();
    format!("{}.{frac:06}Z", dt.format("%Y-%m-%dT%H:%M:%S"))
}

/// Python's `str(datetime)` of a time.
pub fn pystr(t: Time) -> String {
    let us = t.as_micros();
    let secs = us.div_euclid(1_000_000);
    let frac = us.rem_euclid(1_000_000);
    let dt = chrono::DateTime::from_timestamp(secs, 0).unwrap();
    format!("{}.{frac:06}+00:00", dt.format("%Y-%m-%d %H:%M:%S"))
}

/// Seconds between two ISO times in a response.
pub fn secs_between(a: &Value, b: &Value) -> f64 {
    let p = |v: &Value| {
        chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap())
            .unwrap()
            .timestamp_micros()
    };
    (p(b) - p(a)) as f64 / 1e6
}

/// `catchd serve` on `db`, retried while the previous server's PostgreSQL session (and
/// its writer lock) is still going away.
pub fn retry_start(db: &std::path::Path) -> crate::serve::process::Server {
    let start = std::time::Instant::now();
    loop {
        match std::panic::catch_unwind(|| crate::serve::process::Server::start(db, &[])) {
            Ok(s) => return s,
            Err(e) if start.elapsed() > std::time::Duration::from_secs(10) => {
                std::panic::resume_unwind(e)
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    }
}
