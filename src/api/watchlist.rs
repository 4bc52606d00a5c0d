//! The watchlist's HTTP routes, authenticated like the BHR API:
//!
//! * `POST /api/v1/watchlist/<item>/fail` (blocker role) → `{"blocked", "failures"}`;
//! * `GET /api/v1/watchlist/<item>` (any user) →
//!   `{"blocked", "failures", "watch_ttl", "block_ttl"}` (seconds left, or null);
//! * `DELETE /api/v1/watchlist/<item>` (users role) → `{"unblocked"}`;
//! * `POST /api/v1/watchlist/check` (any user) with a JSON list of items (or
//!   `{"items": [...]}`) → one status object per item, with its `item`.
//!
//! Every change is durable before the answer. With `block_addresses`, an item that is an
//! IP address and just got blacklisted also becomes a registry block (source `watchlist`,
//! for the block TTL), subject to the whitelist and prefix rules.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use crate::api::bhr::{ApiError, AppState, FieldErrors, Json, Receipt, authenticate, body};
use crate::auth::Perm;
use crate::bhr::model::UserId;
use crate::bhr::registry::NewBlock;
use crate::store::Write;
use crate::time::Interval;
use crate::watchlist::{Change, Watchlist};

/// The longest item accepted, in bytes.
pub const MAX_ITEM: usize = 1024;

/// The most items in one check.
pub const MAX_CHECK: usize = 10_000;

/// The routes' state.
pub struct WatchlistApi {
    /// Users, store, registry.
    pub api: Arc<AppState>,
    /// The list.
    pub list: Arc<Watchlist>,
    /// Who registry blocks are made as.
    pub who: UserId,
}

type St = State<Arc<WatchlistApi>>;
type Result<T> = std::result::Result<T, ApiError>;

/// The routes.
pub fn router(state: Arc<WatchlistApi>) -> Router {
    Router::new()
        .route("/api/v1/watchlist/check", post(check_many))
        .route("/api/v1/watchlist/{item}/fail", post(fail))
        .route("/api/v1/watchlist/{item}", get(check_one).delete(unblock))
        .with_state(state)
}

fn item(raw: &str) -> Result<&str> {
    if raw.is_empty() || raw.len() > MAX_ITEM {
        return Err(ApiError::Invalid(FieldErrors::one(
            "item",
            format!("must be 1 to {MAX_ITEM} bytes"),
        )));
    }
    Ok(raw)
}

fn secs(i: Option<Interval>) -> Value {
    i.map_or(Value::Null, |i| json!(i.as_secs_f64()))
}

impl WatchlistApi {
    /// Hands a change to the store (called with the item locked, so it must not wait).
    fn persist(&self, c: Change, last: &mut Option<Receipt>) {
        *last = Some(self.api.store().submit(vec![Write::WatchItem(c.0, c.1)]));
    }
}

async fn durable(s: &WatchlistApi, rx: Option<Receipt>) -> Result<()> {
    match rx {
        Some(rx) => s.api.durable(rx).await,
        None => Ok(()),
    }
}

/// `POST /api/v1/watchlist/<item>/fail`.
async fn fail(State(s): St, h: HeaderMap, Path(raw): Path<String>) -> Result<Response> {
    authenticate(&s.api, &h).await?.require(&[Perm::AddBlock])?;
    let it = item(&raw)?;
    let now = s.api.now();
    let mut last = None;
    let f = s.list.fail(it, now, |c| s.persist(c, &mut last));
    durable(&s, last).await?;
    // A new blacklisting, or one a failure re-armed: the registry block follows.
    if (f.newly_blocked || f.refreshed)
        && s.list.settings().block_addresses
        && let Ok(ip) = it.parse::<std::net::IpAddr>()
    {
        let net = ipnet::IpNet::from(crate::addr::canonical_ip(ip));
        let why = if f.refreshed {
            "failing while blacklisted".to_string()
        } else {
            format!("{} failures within the watch", f.failures)
        };
        let req = NewBlock::new(net, s.who, "watchlist", why)
            .until(Some(now + s.list.settings().block_ttl))
            .extending();
        match s.api.add_block_durably(&req).await? {
            Ok(_) => {}
            Err(refused) => {
                tracing::info!(
                    item = it,
                    "Watchlist: not blocked in the registry: {}",
                    refused.0
                );
            }
        }
    }
    Ok(Json::of(&json!({"blocked": f.blocked, "failures": f.failures})).respond(StatusCode::OK))
}

fn status_json(s: &WatchlistApi, it: &str, last: &mut Option<Receipt>, with_item: bool) -> Value {
    let now = s.api.now();
    let st = s.list.check(it, now, |c| s.persist(c, last));
    let mut m = Map::new();
    if with_item {
        m.insert("item".into(), json!(it));
    }
    m.insert("blocked".into(), json!(st.blocked));
    m.insert("failures".into(), json!(st.failures));
    m.insert("watch_ttl".into(), secs(st.watch_ttl));
    m.insert("block_ttl".into(), secs(st.block_ttl));
    Value::Object(m)
}

/// `GET /api/v1/watchlist/<item>`.
async fn check_one(State(s): St, h: HeaderMap, Path(raw): Path<String>) -> Result<Response> {
    authenticate(&s.api, &h).await?.user()?;
    let it = item(&raw)?;
    let mut last = None;
    let v = status_json(&s, it, &mut last, false);
    durable(&s, last).await?;
    Ok(Json::of(&v).respond(StatusCode::OK))
}

/// `POST /api/v1/watchlist/check`.
async fn check_many(State(s): St, h: HeaderMap, b: Bytes) -> Result<Response> {
    authenticate(&s.api, &h).await?.user()?;
    let items = match body(&h, &b)? {
        Value::Array(a) => a,
        Value::Object(mut m) => match m.remove("items") {
            Some(Value::Array(a)) => a,
            _ => {
                return Err(ApiError::Invalid(FieldErrors::one(
                    "items",
                    "Expected a list of items.",
                )));
            }
        },
        _ => {
            return Err(ApiError::Invalid(FieldErrors::one(
                "non_field_errors",
                "Expected a list of items.",
            )));
        }
    };
    if items.len() > MAX_CHECK {
        return Err(ApiError::Invalid(FieldErrors::one(
            "items",
            format!("at most {MAX_CHECK} items"),
        )));
    }
    let mut names = Vec::with_capacity(items.len());
    for (i, v) in items.iter().enumerate() {
        match v.as_str() {
            Some(x) if !x.is_empty() && x.len() <= MAX_ITEM => names.push(x),
            _ => {
                return Err(ApiError::Invalid(FieldErrors::one(
                    "items",
                    format!("item {i}: must be a string of 1 to {MAX_ITEM} bytes"),
                )));
            }
        }
    }
    let mut last = None;
    let out: Vec<Value> = names
        .iter()
        .map(|it| status_json(&s, it, &mut last, true))
        .collect();
    durable(&s, last).await?;
    Ok(Json::of(&out).respond(StatusCode::OK))
}

/// `DELETE /api/v1/watchlist/<item>`.
async fn unblock(State(s): St, h: HeaderMap, Path(raw): Path<String>) -> Result<Response> {
    authenticate(&s.api, &h)
        .await?
        .require(&[Perm::ChangeBlock])?;
    let it = item(&raw)?;
    let now = s.api.now();
    let mut last = None;
    let was = s.list.unblock(it, now, |c| s.persist(c, &mut last));
    durable(&s, last).await?;
    Ok(Json::of(&json!({"unblocked": was})).respond(StatusCode::OK))
}

/// Forgets expired entries every `every`, until the store fails.
pub async fn sweep(state: Arc<WatchlistApi>, every: std::time::Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let store = state.api.store();
        state.list.sweep(state.api.now(), |(k, e)| {
            drop(store.submit(vec![Write::WatchItem(k, e)]));
        });
    }
}

/// The user the watchlist's registry blocks are made as.
pub const WATCHLIST_USER: &str = "watchlist";

/// The watchlist of `settings` with its stored entries put back, and its routes.
///
/// # Errors
/// The key file cannot be read or made.
pub fn start(
    settings: &crate::watchlist::Settings,
    state: &Arc<AppState>,
    entries: Vec<(String, crate::watchlist::Entry)>,
    who: UserId,
) -> std::result::Result<(Router, Arc<WatchlistApi>), crate::watchlist::Error> {
    let s = settings.clone();
    let key = match &s.key_file {
        Some(p) if s.anonymize => {
            Some(crate::watchlist::load_or_create_key(p, entries.is_empty())?)
        }
        _ => None,
    };
    let list = Watchlist::new(s, key)?;
    list.restore(entries);
    let api = Arc::new(WatchlistApi {
        api: state.clone(),
        list: Arc::new(list),
        who,
    });
    Ok((router(api.clone()), api))
}
