//! The BHR HTTP API (axum), compatible with BHR's clients (bhr.md §8).
//!
//! [`router`] builds the routes from an [`AppState`]; [`serve`] runs them with the
//! hardening layers (body limit, timeouts, concurrency limit with load shedding) and a
//! graceful shutdown.
//!
//! Every mutation follows one pattern: lock the registry, change it and render the answer,
//! hand the changed rows to the store *while still holding the lock* (so they are committed
//! in the order they were made), release the lock, and answer only once the store has
//! committed. An acknowledged write is on disk.

mod auth;
mod error;
mod handlers;
mod input;
mod output;
mod service;
pub(crate) mod stream;

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};

pub use auth::{Caller, Users, authenticate, check_password, client, client_scope};
pub use error::{ApiError, FieldErrors, Json};
pub use input::{block_request, body, network, object, text, timestamp};
pub use output::Iso;
pub use service::{ClusterGuard, Listener, Receipt, Tell};

use crate::bhr::registry::Registry;
use crate::store::Store;
use crate::time::Time;

/// The clock the API reads (a function, so tests can drive time).
pub type Clock = Arc<dyn Fn() -> Time + Send + Sync>;

/// The wall clock.
pub fn system_clock() -> Clock {
    Arc::new(Time::now)
}

/// Limits of the HTTP server.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request body, in bytes.
    pub max_body: usize,
    /// Longest a request may take.
    pub request_timeout: Duration,
    /// Longest `queue/<ident>?timeout=` may wait (kept below the request timeout).
    pub max_long_poll: Duration,
    /// Requests served at once; more are refused with 503.
    pub max_concurrent: usize,
    /// Long polls (`queue/<ident>?timeout=`) one user may have waiting at once; more
    /// answer at once with what is queued.
    pub max_long_polls_per_user: usize,
    /// Connections: header, idle and write timeouts, the cap, the shutdown grace.
    pub connections: crate::httpd::Settings,
    /// Failed sign-ins (HTTP Basic and the web form) before an address or a user name is
    /// answered 429 for a while.
    pub sign_in: crate::auth::throttle::Settings,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            // mblock of a few thousand records.
            max_body: 4 << 20,
            // Above the Python client's long poll (32 s) plus its 30 s timeout margin.
            request_timeout: Duration::from_secs(90),
            max_long_poll: Duration::from_secs(60),
            max_concurrent: 1024,
            max_long_polls_per_user: 16,
            connections: crate::httpd::Settings::default(),
            sign_in: crate::auth::throttle::Settings::default(),
        }
    }
}

/// Everything a request handler needs.
pub struct AppState {
    registry: Mutex<Registry>,
    store: Store,
    users: Users,
    /// Woken whenever blocks are created (long-polling queue readers wait on it).
    new_blocks: tokio::sync::Notify,
    clock: Clock,
    limits: Limits,
    /// Set when the server is to stop (a signal, or a store failure).
    stop: tokio::sync::watch::Sender<bool>,
    /// Why the server stopped, if it was a failure.
    failure: Mutex<Option<String>>,
    /// Told of every change the API makes (the daemon's catch-and-release listens).
    listener: std::sync::OnceLock<Listener>,
    /// Answers sent, by status class (1xx … 5xx).
    answers: [std::sync::atomic::AtomicU64; 5],
    /// The cluster this node is part of (several API nodes on one PostgreSQL database),
    /// and the last change-log entry applied to the registry.
    cluster: std::sync::OnceLock<(Arc<crate::store::cluster::DbCluster>, Mutex<i64>)>,
    /// The runtime the cluster's connections live on, for changes made from threads
    /// outside it (the daemon's core).
    cluster_rt: std::sync::OnceLock<tokio::runtime::Handle>,
    /// Finds the user of a signed-in browser (the web pages' sessions), for the pages'
    /// links to `list.csv` and `publist.csv`.
    sessions: std::sync::OnceLock<SessionLookup>,
    /// The connection layer's counters.
    connections: Arc<crate::httpd::Stats>,
    /// Long polls waiting, by user.
    long_polls: Mutex<std::collections::HashMap<crate::bhr::model::UserId, usize>>,
    /// Password checks: bounded, equal work for every name, failures throttled.
    passwords: crate::auth::Passwords,
}

/// A long poll's slot (see [`AppState::long_poll_slot`]).
pub(crate) struct LongPoll<'a> {
    state: &'a AppState,
    user: crate::bhr::model::UserId,
}

impl Drop for LongPoll<'_> {
    fn drop(&mut self) {
        let mut m = self
            .state
            .long_polls
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.user);
            }
        }
    }
}

/// Finds the signed-in user of a browser from its request headers.
pub type SessionLookup =
    Box<dyn Fn(&axum::http::HeaderMap) -> Option<Arc<crate::auth::User>> + Send + Sync>;

impl AppState {
    /// State for a registry, its store and the user directory.
    pub fn new(
        registry: Registry,
        store: Store,
        users: Users,
        clock: Clock,
        limits: Limits,
    ) -> Arc<AppState> {
        Arc::new(AppState {
            registry: Mutex::new(registry),
            store,
            users,
            new_blocks: tokio::sync::Notify::new(),
            clock,
            stop: tokio::sync::watch::Sender::new(false),
            failure: Mutex::new(None),
            listener: std::sync::OnceLock::new(),
            answers: Default::default(),
            cluster: std::sync::OnceLock::new(),
            cluster_rt: std::sync::OnceLock::new(),
            sessions: std::sync::OnceLock::new(),
            connections: Arc::default(),
            long_polls: Mutex::default(),
            passwords: crate::auth::Passwords::new(limits.sign_in.clone()),
            limits,
        })
    }

    /// The connection layer's counters.
    pub fn connections(&self) -> &Arc<crate::httpd::Stats> {
        &self.connections
    }

    /// The password checker.
    pub fn passwords(&self) -> &crate::auth::Passwords {
        &self.passwords
    }

    /// Takes one of `user`'s long-poll slots, if it has one left; released on drop.
    pub(crate) fn long_poll_slot(&self, user: crate::bhr::model::UserId) -> Option<LongPoll<'_>> {
        let mut m = self.long_polls.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(user).or_default();
        if *n >= self.limits.max_long_polls_per_user {
            return None;
        }
        *n += 1;
        Some(LongPoll { state: self, user })
    }

    /// Makes this node part of a cluster whose change log it has applied up to `head`,
    /// and starts following the other nodes' changes (call from inside the runtime).
    pub fn join_cluster(
        self: &Arc<Self>,
        cluster: Arc<crate::store::cluster::DbCluster>,
        head: i64,
    ) {
        let _ = self.cluster.set((cluster.clone(), Mutex::new(head)));
        let _ = self.cluster_rt.set(tokio::runtime::Handle::current());
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        let state = Arc::downgrade(self);
        tokio::spawn(async move {
            while rx.recv().await.is_some() {
                let Some(s) = state.upgrade() else { return };
                let since = s.cluster_seq();
                match cluster.changes_since(since).await {
                    Ok(rows) => {
                        if !rows.is_empty() {
                            s.catch_up(rows);
                            s.new_blocks.notify_waiters();
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "Cluster: cannot catch up."),
                }
            }
        });
        let c = self.cluster.get().expect("set").0.clone();
        tokio::spawn(c.clone().janitor());
        tokio::spawn(c.listen(move || {
            let _ = tx.try_send(());
        }));
    }

    fn cluster_seq(&self) -> i64 {
        self.cluster
            .get()
            .map_or(0, |(_, seq)| *seq.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Applies rows other nodes committed (in log order, each once) to the registry.
    pub(crate) fn catch_up(&self, rows: Vec<(i64, crate::bhr::registry::Change)>) {
        let Some((_, seq)) = self.cluster.get() else {
            return;
        };
        let mut reg = self.registry();
        let mut last = seq.lock().unwrap_or_else(|p| p.into_inner());
        for (n, ch) in rows {
            if n <= *last {
                continue;
            }
            if let Err(e) = reg.apply_stored(ch) {
                // Memory no longer matches the database: restart from it.
                drop(last);
                drop(reg);
                self.fail(&format!("cluster catch-up: {e}"));
                return;
            }
            *last = n;
        }
    }

    /// Asks the server to stop: no new connections, long polls answer at once, requests in
    /// flight finish.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// Stops the server because the store failed: memory now holds changes the disk does
    /// not, and going on is unsafe.
    pub fn fail(&self, why: &str) {
        self.abort(&format!("the store failed: {why}"));
    }

    /// Stops the server (and the daemon) with an error: `why` completes "stopped because
    /// …", and is what the process exits with.
    pub fn abort(&self, why: &str) {
        let mut f = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        if f.is_none() {
            tracing::error!("Stopping because {why}.");
            *f = Some(why.to_string());
        }
        drop(f);
        self.stop();
    }

    /// HTTP answers sent so far, by status class: `[1xx, 2xx, 3xx, 4xx, 5xx]`.
    pub fn answers(&self) -> [u64; 5] {
        std::array::from_fn(|i| self.answers[i].load(std::sync::atomic::Ordering::Relaxed))
    }

    /// The failure that stopped the server, if any.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Completes once [`stop`](AppState::stop) has been called.
    pub async fn stopping(&self) {
        let mut rx = self.stop.subscribe();
        let _ = rx.wait_for(|stop| *stop).await;
    }

    /// Replaces the registry's rules (`[bhr]`, re-read on SIGHUP) and the host's addresses;
    /// whether the rules changed.
    pub fn reload_rules(
        &self,
        settings: crate::bhr::model::Settings,
        host: Vec<std::net::IpAddr>,
    ) -> bool {
        let mut r = self.registry();
        let changed = *r.settings() != settings;
        r.set_settings(settings);
        r.set_host_addresses(host);
        changed
    }

    /// Locks the registry (a std mutex: it is never held across an `.await`).
    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The time by the API's clock.
    pub fn now(&self) -> Time {
        (self.clock)()
    }

    /// Lets browsers signed in to the web pages read `list.csv` and `publist.csv` (once;
    /// later calls are ignored).
    pub fn set_session_lookup(&self, f: SessionLookup) {
        let _ = self.sessions.set(f);
    }

    /// The user directory.
    pub fn users(&self) -> &Users {
        &self.users
    }
}

/// Whether a TLS-terminating proxy says the client came over HTTPS
/// (`X-Forwarded-Proto: https`).
pub fn forwarded_https(h: &axum::http::HeaderMap) -> bool {
    h.get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
}

/// The router collections under `/bhr/api/` (listed by the API root; a GET without the
/// trailing slash is redirected).
const COLLECTIONS: [&str; 9] = [
    "whitelist",
    "blocks",
    "blockentries",
    "current_blocks",
    "expected_blocks",
    "pending_blocks",
    "pending_removal_blocks",
    "current_blocks_brief",
    "source_blacklist",
];

/// The routes. Paths are BHR's; router collections need their trailing slash (without it
/// a GET is redirected), and queue idents and query networks take the rest of the path.
pub fn router(state: Arc<AppState>) -> Router {
    use handlers as h;
    let limited = state.read(|r| r.settings().unauthenticated_limited_query);
    let max_body = state.limits.max_body;
    let mut api = Router::new()
        .route("/bhr/api/", get(h::api_root))
        .route("/bhr/api/block", post(h::block))
        .route("/bhr/api/mblock", post(h::mblock))
        .route("/bhr/api/unblock_now", post(h::unblock_now))
        .route("/bhr/api/stats", get(h::stats))
        .route("/bhr/api/source_stats", get(h::source_stats))
        .route("/bhr/api/metrics", get(h::metrics))
        .route("/bhr/api/queue/{*ident}", get(h::queue))
        .route("/bhr/api/unblock_queue/{*ident}", get(h::unblock_queue))
        .route(
            "/bhr/api/set_blocked_multi/{*ident}",
            post(h::set_blocked_multi),
        )
        .route("/bhr/api/set_unblocked_multi", post(h::set_unblocked_multi))
        .route("/bhr/api/query/{*cidr}", get(h::query))
        .route(
            "/bhr/api/whitelist/",
            get(h::whitelist_list).post(h::whitelist_add),
        )
        .route(
            "/bhr/api/whitelist/{id}/",
            get(h::whitelist_get).delete(h::whitelist_delete),
        )
        .route(
            "/bhr/api/source_blacklist/",
            get(h::source_blacklist_list).post(h::source_blacklist_add),
        )
        .route(
            "/bhr/api/source_blacklist/{source}/",
            get(h::source_blacklist_get).delete(h::source_blacklist_delete),
        )
        .route(
            "/bhr/api/blocks/",
            get(h::blocks_list).post(h::blocks_create),
        )
        .route("/bhr/api/blocks/{id}/", get(h::block_get))
        .route(
            "/bhr/api/blocks/{id}/set_blocked/",
            post(h::block_set_blocked),
        )
        .route("/bhr/api/blockentries/", get(h::entries_list))
        .route("/bhr/api/blockentries/{id}/", get(h::entry_get))
        .route(
            "/bhr/api/blockentries/{id}/set_unblocked/",
            post(h::entry_set_unblocked),
        )
        .route("/bhr/api/current_blocks/", get(h::current_blocks))
        .route("/bhr/api/current_blocks/{id}/", get(h::current_block))
        .route("/bhr/api/expected_blocks/", get(h::expected_blocks))
        .route("/bhr/api/expected_blocks/{id}/", get(h::expected_block))
        .route("/bhr/api/pending_blocks/", get(h::pending_blocks))
        .route("/bhr/api/pending_blocks/{id}/", get(h::pending_block))
        .route(
            "/bhr/api/pending_removal_blocks/",
            get(h::pending_removal_blocks),
        )
        .route(
            "/bhr/api/pending_removal_blocks/{id}/",
            get(h::pending_removal_block),
        )
        .route(
            "/bhr/api/current_blocks_brief/",
            get(h::current_blocks_brief),
        )
        .route(
            "/bhr/api/current_blocks_brief/{id}/",
            get(h::current_block_brief),
        )
        .route("/bhr/list.csv", get(h::list_csv))
        .route("/bhr/publist.csv", get(h::publist_csv));
    if limited {
        api = api.route("/bhr/api/query_limited/{*cidr}", get(h::query_limited));
    }
    for collection in COLLECTIONS {
        api = api.route(&format!("/bhr/api/{collection}"), get(h::add_slash));
    }
    api = api
        .route("/bhr/api", get(h::add_slash))
        .route("/", get(h::root_redirect))
        .route("/bhr", get(h::root_redirect));
    api.fallback(h::not_found)
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn(json_errors))
        .layer(axum::middleware::from_fn(client_scope))
        .with_state(state)
}

/// Counts answers by status class.
async fn count_answers(
    axum::extract::State(s): axum::extract::State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let r = next.run(req).await;
    let class = usize::from(r.status().as_u16() / 100).clamp(1, 5) - 1;
    s.answers[class].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    r
}

/// Makes every error a JSON body: axum's own 405, and what the limit layers produce.
async fn json_errors(req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let r = next.run(req).await;
    let status = r.status();
    if status.as_u16() < 400 {
        return r;
    }
    // JSON already, or a web page's own error page.
    let keep = r.headers().get(header::CONTENT_TYPE).is_some_and(|v| {
        v.as_bytes().starts_with(b"application/json") || v.as_bytes().starts_with(b"text/html")
    });
    if keep {
        return r;
    }
    let msg = match status {
        StatusCode::METHOD_NOT_ALLOWED => format!("Method \"{method}\" not allowed."),
        StatusCode::PAYLOAD_TOO_LARGE => "Request body too large.".to_string(),
        StatusCode::REQUEST_TIMEOUT => "Request timed out.".to_string(),
        StatusCode::SERVICE_UNAVAILABLE => "Server busy; try again.".to_string(),
        s => s.canonical_reason().unwrap_or("Error").to_string() + ".",
    };
    let mut out = Response::new(Body::from(serde_json::json!({ "detail": msg }).to_string()));
    *out.status_mut() = status;
    out.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    out
}

/// The whole application as the servers serve it: the BHR routes and `extra` (the web
/// pages, the watchlist, the daemon's routes), under the limits (body size, timeout,
/// concurrency with load shedding), every error answered in JSON, answers counted.
pub fn app(state: Arc<AppState>, extra: Option<Router>) -> Router {
    use tower::ServiceBuilder;
    let limits = state.limits.clone();
    let counted = state.clone();
    let mut app = router(state);
    if let Some(extra) = extra {
        app = app.merge(extra);
    }
    app.layer(
        ServiceBuilder::new()
            .layer(axum::error_handling::HandleErrorLayer::new(
                |_: tower::BoxError| async { (StatusCode::SERVICE_UNAVAILABLE, "busy") },
            ))
            .load_shed()
            .concurrency_limit(limits.max_concurrent)
            .layer(tower_http::timeout::TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                limits.request_timeout,
            ))
            .layer(tower_http::limit::RequestBodyLimitLayer::new(
                limits.max_body,
            )),
    )
    // Outermost, so that what the layers above answer is JSON too.
    .layer(axum::middleware::from_fn(json_errors))
    .layer(axum::middleware::from_fn_with_state(counted, count_answers))
}

/// Serves [`app`] on `listener` until `shutdown` completes or the state is stopped, then
/// finishes the requests in flight (for at most `server.shutdown_grace`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    extra: Option<Router>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let settings = state.limits.connections.clone();
    let stopper = state.clone();
    let stats = state.connections.clone();
    let shutdown = async move {
        tokio::select! {
            () = shutdown => stopper.stop(),
            () = stopper.stopping() => {}
        }
    };
    let app = app(state, extra);
    crate::httpd::serve(listener, app, settings, stats, shutdown).await;
}

/// How often the user table is re-read, so that `catchd user` changes (new tokens, roles)
/// reach a running server.
pub const USER_RELOAD: Duration = Duration::from_secs(2);

/// Re-reads the users every [`USER_RELOAD`] until the server stops.
pub async fn reload_users(state: Arc<AppState>, store: Store) {
    let mut tick = tokio::time::interval(USER_RELOAD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = state.stopping() => return,
        }
        match store.users().await {
            Ok(users) => {
                if state.users().reload(users) {
                    tracing::info!("Users reloaded.");
                }
            }
            Err(e) => tracing::warn!(error = %e, "Cannot re-read the users."),
        }
    }
}
