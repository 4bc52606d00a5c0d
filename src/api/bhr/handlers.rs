//! One function per endpoint (bhr.md §8.3). Each authenticates, checks permissions as BHR
//! does (§7.3), works on the registry under its lock, and for changes waits for the store.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::auth::Perm;
use crate::bhr::model::{Block, UserId};
use crate::bhr::registry::{Change, NewBlock, Registry};
use crate::time::Time;

use super::auth::{Caller, authenticate};
use super::error::{ApiError, FieldErrors, Json, json as json_response};
use super::input::{self, network, timestamp};
use super::output::{self, Cell, Links, PyStr};
use super::stream;
use super::{AppState, Tell};

type Result<T> = std::result::Result<T, ApiError>;
type St = State<Arc<AppState>>;

async fn caller(s: &AppState, h: &HeaderMap) -> Result<Caller> {
    authenticate(s, h).await
}

/// [`caller`], or else the user of a signed-in browser: for GET-only routes that the web
/// pages link to (a session never authorizes a change, so no CSRF token is needed).
async fn reader(s: &AppState, h: &HeaderMap) -> Result<Caller> {
    let c = caller(s, h).await?;
    if matches!(c, Caller::Anonymous)
        && let Some(u) = s.sessions.get().and_then(|f| f(h))
    {
        return Ok(Caller::User(u));
    }
    Ok(c)
}

/// Links as the client sees the server: its `Host`, and `https` when a TLS-terminating
/// proxy says so with `X-Forwarded-Proto`.
fn links(h: &HeaderMap) -> Links {
    let host = h
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    let scheme = if super::forwarded_https(h) {
        "https"
    } else {
        "http"
    };
    Links::new(scheme, host)
}

fn ok() -> Response {
    json_response(StatusCode::OK, &json!({"status": "ok"}))
}

fn to_value(v: impl serde::Serialize) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Query-string parameters (the last value of a repeated key wins).
fn params(q: &Option<String>) -> HashMap<String, String> {
    q.as_deref()
        .and_then(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).ok())
        .unwrap_or_default()
        .into_iter()
        .collect()
}

/// Makes a change through the one change path (see `service`), told to the listener.
async fn change<T>(
    s: &AppState,
    f: impl FnOnce(&mut Registry, Time, &mut Vec<Change>) -> Result<T>,
) -> Result<T> {
    s.change(Tell::Listener, f).await
}

fn names(s: &AppState) -> HashMap<UserId, String> {
    s.users.names()
}

fn who(names: &HashMap<UserId, String>, id: UserId) -> &str {
    names.get(&id).map_or("?", String::as_str)
}

// ----- creating and removing blocks -----

/// Checks and adds one block request under the registry lock, waits for the store, and
/// wakes the queue readers. Returns the rendered block (with the request's cidr echoed
/// for a new block when `echo`, as BHR's create views do) and its id.
async fn create(
    s: &AppState,
    h: &HeaderMap,
    user: &crate::auth::User,
    req: &NewBlock,
    echo: bool,
) -> Result<(Json, u64)> {
    let links = links(h);
    let names = names(s);
    let out = change(s, |reg, now, ch| {
        if req.until.is_some_and(|u| u <= now) {
            return Err(ApiError::Invalid(FieldErrors::one(
                "unblock_at",
                "Ensure this time is in the future.",
            )));
        }
        reg.check(req, |id| who(&names, id).to_string())
            .map_err(|r| ApiError::Invalid(FieldErrors::one("non_field_errors", r.0)))?;
        let added = reg.add_block(req, now, ch);
        let b = reg.block(added.id).expect("just added");
        log_add(&req.cidr_text, b, added.created, &user.name, !ch.is_empty());
        let shown = (echo && added.created).then_some(req.cidr_text.as_str());
        Ok((
            Json::of(&output::block(b, who(&names, b.who), &links, shown)),
            added.id,
        ))
    })
    .await?;
    Ok(out)
}

/// `skip_whitelist` (which in BHR bypasses every check) is for the roles
/// `bhr.skip_whitelist_roles` names (admin by default).
fn may_skip_whitelist(s: &AppState, user: &crate::auth::User, req: &NewBlock) -> Result<()> {
    if req.skip_whitelist && !s.read(|r| r.settings().skip_whitelist_roles.contains(&user.role)) {
        return Err(ApiError::ForbiddenBecause(
            "You do not have permission to skip the whitelist.",
        ));
    }
    Ok(())
}

/// `POST /bhr/api/block`.
pub async fn block(State(s): St, h: HeaderMap, body: Bytes) -> Result<Response> {
    let user = caller(&s, &h).await?.require(&[Perm::AddBlock])?.clone();
    let m = input::object(input::body(&h, &body)?)?;
    let req = input::block_request(&m, user.id).map_err(ApiError::Invalid)?;
    may_skip_whitelist(&s, &user, &req)?;
    let (out, _) = create(&s, &h, &user, &req, true).await?;
    Ok(out.respond(StatusCode::CREATED))
}

fn log_add(cidr: &str, b: &Block, created: bool, user: &str, changed: bool) {
    let until = b
        .unblock_at
        .map_or_else(|| "None".to_string(), |t| PyStr(t).to_string());
    let secs = b.duration_micros().map_or(0, |d| d / 1_000_000);
    if created {
        tracing::info!(
            "BLOCK IP={cidr} WHO={user} SOURCE={} WHY={:?} UNTIL=\"{until}\" DURATION={secs}",
            b.source,
            &*b.why
        );
    } else if changed {
        tracing::info!("EXTEND IP={cidr} time extended UNTIL={until} DURATION={secs}");
    } else {
        tracing::info!("DUPE IP={cidr}");
    }
}

/// `POST /bhr/api/mblock`: all items valid, or nothing happens.
pub async fn mblock(State(s): St, h: HeaderMap, body: Bytes) -> Result<Response> {
    let user = caller(&s, &h).await?.require(&[Perm::AddBlock])?.clone();
    let items = match input::body(&h, &body)? {
        Value::Array(a) => a,
        other => {
            let kind = if other.is_object() { "dict" } else { "str" };
            return Err(ApiError::Invalid(FieldErrors::one(
                "non_field_errors",
                format!("Expected a list of items but got type \"{kind}\"."),
            )));
        }
    };
    let mut reqs = Vec::with_capacity(items.len());
    let mut errors: Vec<Value> = Vec::with_capacity(items.len());
    let mut any_error = false;
    for item in items {
        let parsed = input::object(item)
            .and_then(|m| input::block_request(&m, user.id).map_err(ApiError::Invalid));
        match parsed {
            Ok(r) => {
                may_skip_whitelist(&s, &user, &r)?;
                reqs.push(Some(r));
                errors.push(json!({}));
            }
            Err(ApiError::Invalid(e)) => {
                any_error = true;
                reqs.push(None);
                errors.push(e.to_json());
            }
            Err(other) => return Err(other),
        }
    }
    let links = links(&h);
    let names = names(&s);
    let out = change(&s, |reg, now, ch| {
        for (r, e) in reqs.iter().zip(errors.iter_mut()) {
            if let Some(r) = r
                && let Err(refused) = reg.check(r, |id| who(&names, id).to_string())
            {
                any_error = true;
                *e = FieldErrors::one("non_field_errors", refused.0).to_json();
            }
        }
        if any_error {
            return Err(ApiError::InvalidJson(Value::Array(errors)));
        }
        let mut made = Vec::with_capacity(reqs.len());
        for r in reqs.iter().flatten() {
            let before = ch.len();
            let added = reg.add_block(r, now, ch);
            let b = reg.block(added.id).expect("just added");
            let changed = ch.len() > before;
            log_add(&r.cidr_text, b, added.created, &user.name, changed);
            made.push((added, r.cidr_text.as_str()));
        }
        let out: Vec<_> = made
            .iter()
            .map(|(added, text)| {
                let b = reg.block(added.id).expect("just added");
                let echo = added.created.then_some(*text);
                output::block(b, who(&names, b.who), &links, echo)
            })
            .collect();
        Ok(Json::of(&out))
    })
    .await?;
    Ok(out.respond(StatusCode::CREATED))
}

/// `POST /bhr/api/unblock_now`.
pub async fn unblock_now(State(s): St, h: HeaderMap, body: Bytes) -> Result<Response> {
    let user = caller(&s, &h).await?.require(&[Perm::ChangeBlock])?.clone();
    let m = input::object(input::body(&h, &body)?)?;
    let mut e = FieldErrors::default();
    let cidr_text = input::text(&m, "cidr", true, false, Some(50), &mut e);
    let cidr = match &cidr_text {
        Some(t) => network(t).map_err(|msg| e.add("cidr", msg)).ok(),
        None => None,
    };
    let why = input::text(&m, "why", true, false, None, &mut e);
    let (Some(cidr), Some(cidr_text), Some(why), true) = (cidr, cidr_text, why, e.is_empty())
    else {
        return Err(ApiError::Invalid(e));
    };
    change(&s, |reg, now, ch| {
        if !reg.unblock_now(&cidr, user.id, &why, now, ch) {
            return Err(ApiError::Invalid(FieldErrors::one(
                "cidr",
                format!("{cidr_text} is not currently blocked"),
            )));
        }
        if let Some(Change::Block(b)) = ch.first() {
            tracing::info!("UNBLOCK_NOW ID={} IP={}", b.id, b.cidr);
        }
        Ok(())
    })
    .await?;
    Ok(ok())
}

// ----- statistics -----

fn stats_value(reg: &Registry) -> Value {
    let st = reg.stats();
    let sources: Map<String, Value> = st
        .sources
        .iter()
        .map(|(k, v)| (k.to_string(), Value::from(*v)))
        .collect();
    json!({
        "block_pending": st.block_pending,
        "unblock_pending": st.unblock_pending,
        "current": st.current,
        "expected": st.expected,
        "sources": sources,
    })
}

/// `GET /bhr/api/stats` (public).
pub async fn stats(State(s): St, h: HeaderMap) -> Result<Response> {
    caller(&s, &h).await?;
    let v = s.read(stats_value);
    Ok(json_response(StatusCode::OK, &v))
}

/// `GET /bhr/api/source_stats` (public).
pub async fn source_stats(State(s): St, h: HeaderMap) -> Result<Response> {
    caller(&s, &h).await?;
    let v = s.read(|reg| stats_value(reg)["sources"].clone());
    Ok(json_response(StatusCode::OK, &v))
}

/// `GET /bhr/api/metrics` (public): Prometheus text, millisecond timestamps. Computed on
/// every request (BHR caches it for five minutes); the `Cache-Control` header stays.
pub async fn metrics(State(s): St, h: HeaderMap) -> Result<Response> {
    caller(&s, &h).await?;
    let (st, now) = s.read(|reg| (reg.stats().clone(), reg.now()));
    let ms = now.as_micros() / 1000;
    let b = crate::telemetry::render(|m| {
        let n = crate::telemetry::count;
        m.gauge("bhr_blocked_total", "total hosts blocked")
            .at_ms(ms)
            .sample(&[("type", "current")], n(st.current))
            .sample(&[("type", "expected")], n(st.expected));
        m.gauge("bhr_pending_total", "total hosts pending")
            .at_ms(ms)
            .sample(&[("type", "block")], n(st.block_pending))
            .sample(&[("type", "unblock")], n(st.unblock_pending));
        let mut f = m
            .gauge(
                "bhr_blocked_total_by_source",
                "total hosts blocked by each source",
            )
            .at_ms(ms);
        for (src, v) in &st.sources {
            f.sample(&[("source", src)], n(*v));
        }
    });
    // BHR puts an empty line before each family (a label value cannot start a line:
    // its newlines are escaped).
    let b: String = b
        .lines()
        .flat_map(|l| [if l.starts_with("# HELP ") { "\n" } else { "" }, l, "\n"])
        .collect();
    let mut r = b.into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=300"),
    );
    Ok(r)
}

// ----- block managers -----

/// The default `added_since` (BHR's `2014-09-01`).
const EPOCH_OF_BHR: Time = Time::from_timeval(1_409_529_600, 0);

/// `GET /bhr/api/queue/<ident>[?timeout=N][&added_since=TS]`: a long poll that waits, without
/// holding a thread, until a block arrives or the time is up.
pub async fn queue(
    State(s): St,
    h: HeaderMap,
    Path(ident): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response> {
    let user = caller(&s, &h)
        .await?
        .require(&[Perm::AddBlockEntry])?
        .clone();
    let p = params(&q);
    let timeout = match p.get("timeout").map(|t| t.trim()) {
        None | Some("") => 0u64,
        Some(t) => t.parse::<u64>().map_err(|_| {
            ApiError::Invalid(FieldErrors::one("timeout", "A valid integer is required."))
        })?,
    };
    let since = match p.get("added_since") {
        None => EPOCH_OF_BHR,
        Some(t) => timestamp(t).ok_or_else(|| {
            ApiError::Invalid(FieldErrors::one(
                "added_since",
                "Datetime has wrong format. Use one of these formats instead: YYYY-MM-DDThh:mm[:ss[.uuuuuu]][+HH:MM|-HH:MM|Z].",
            ))
        })?,
    };
    // Each user may hold a few long polls at once; more answer at once with what is
    // queued, so that one token cannot take every slot the server has.
    let slot = if timeout > 0 {
        s.long_poll_slot(user.id)
    } else {
        None
    };
    let wait = match &slot {
        Some(_) => Duration::from_secs(timeout).min(s.limits.max_long_poll),
        None => Duration::ZERO,
    };
    let links = links(&h);
    let rows = s
        .wait_for(wait, |reg| {
            let rows = reg.queue(&ident, since);
            (!rows.is_empty())
                .then(|| Json::seq(rows.into_iter().map(|b| output::queue_row(b, &links))))
        })
        .await;
    Ok(match rows {
        Some(rows) => rows.respond(StatusCode::OK),
        None => json_response(StatusCode::OK, &json!([])),
    })
}

/// `GET /bhr/api/unblock_queue/<ident>`.
pub async fn unblock_queue(
    State(s): St,
    h: HeaderMap,
    Path(ident): Path<String>,
) -> Result<Response> {
    caller(&s, &h).await?.require(&[Perm::ChangeBlockEntry])?;
    let links = links(&h);
    let rows = s.read(|reg| {
        Json::seq(reg.unblock_queue(&ident).into_iter().map(|e| {
            let b = reg.block(e.block).expect("entries have blocks");
            output::unblock_row(e, b, &links)
        }))
    });
    Ok(rows.respond(StatusCode::OK))
}

/// The `ids` list of `set_blocked_multi` / `set_unblocked_multi`: a JSON list of integers,
/// or form values (`ids=1&ids=2`, or `ids=1,2`).
fn ids(m: &Map<String, Value>) -> Result<Vec<u64>> {
    let bad = || ApiError::Invalid(FieldErrors::one("ids", "A valid integer is required."));
    let one = |v: &Value| -> Result<Vec<u64>> {
        match v {
            Value::Number(n) => n.as_u64().map(|n| vec![n]).ok_or_else(bad),
            Value::String(s) => s
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(|t| t.parse::<u64>().map_err(|_| bad()))
                .collect(),
            _ => Err(bad()),
        }
    };
    match m.get("ids") {
        None => Err(ApiError::Invalid(FieldErrors::one(
            "ids",
            "This field is required.",
        ))),
        Some(Value::Array(a)) => {
            let mut out = Vec::with_capacity(a.len());
            for v in a {
                out.extend(one(v)?);
            }
            Ok(out)
        }
        Some(v @ Value::String(_)) => one(v),
        Some(_) => Err(ApiError::Invalid(FieldErrors::one(
            "ids",
            "Expected a list of items.",
        ))),
    }
}

/// `POST /bhr/api/set_blocked_multi/<ident>`: unknown ids are an error and nothing
/// changes; a block already recorded for this ident is left as it is.
pub async fn set_blocked_multi(
    State(s): St,
    h: HeaderMap,
    Path(ident): Path<String>,
    body: Bytes,
) -> Result<Response> {
    caller(&s, &h).await?.require(&[Perm::AddBlockEntry])?;
    let m = input::object(input::body(&h, &body)?)?;
    let ids = ids(&m)?;
    if ident.chars().count() > 50 {
        return Err(ApiError::Invalid(FieldErrors::one(
            "ident",
            "Ensure this field has no more than 50 characters.",
        )));
    }
    change(&s, |reg, now, ch| {
        reg.set_blocked(&ident, &ids, now, ch).map_err(|bad| {
            ApiError::Invalid(FieldErrors::one(
                "ids",
                format!("Invalid pk \"{bad}\" - object does not exist."),
            ))
        })?;
        super::service::log_set_blocked(reg, &ident, &ids);
        Ok(())
    })
    .await?;
    Ok(ok())
}

/// `POST /bhr/api/set_unblocked_multi`: unknown ids are ignored.
pub async fn set_unblocked_multi(State(s): St, h: HeaderMap, body: Bytes) -> Result<Response> {
    caller(&s, &h).await?.require(&[Perm::ChangeBlockEntry])?;
    let m = input::object(input::body(&h, &body)?)?;
    let ids = ids(&m)?;
    change(&s, |reg, now, ch| {
        reg.set_unblocked(&ids, now, ch);
        super::service::log_set_unblocked(ch);
        Ok(())
    })
    .await?;
    Ok(ok())
}

// ----- reading -----

fn query_net(text: &str) -> Result<ipnet::IpNet> {
    network(text).map_err(|m| ApiError::Invalid(FieldErrors::one("cidr", m)))
}

/// `GET /bhr/api/query/<cidr>`: every block within the network, any state (streamed).
pub async fn query(State(s): St, h: HeaderMap, Path(cidr): Path<String>) -> Result<Response> {
    caller(&s, &h).await?.user()?;
    let net = query_net(&cidr)?;
    let links = links(&h);
    let names = names(&s);
    Ok(stream::json_array(
        s,
        Box::new(move |reg, after: Option<&(ipnet::IpNet, u64)>, p| {
            p.fill(
                reg.query_after(&net, after.copied()),
                |b| (b.cidr, b.id),
                |p, b| {
                    p.json(&output::block(b, who(&names, b.who), &links, None));
                },
            );
        }),
    ))
}

/// `GET /bhr/api/query_limited/<cidr>` (public; only with `unauthenticated_limited_query`).
pub async fn query_limited(
    State(s): St,
    h: HeaderMap,
    Path(cidr): Path<String>,
) -> Result<Response> {
    caller(&s, &h).await?;
    let net = query_net(&cidr)?;
    Ok(stream::json_array(
        s,
        Box::new(move |reg, after: Option<&(ipnet::IpNet, u64)>, p| {
            p.fill(
                reg.query_after(&net, after.copied()),
                |b| (b.cidr, b.id),
                |p, b| {
                    p.json(&output::limited(b));
                },
            );
        }),
    ))
}

/// The block listings that are streamed, each in its own order.
#[derive(Clone, Copy, Debug)]
enum Listing {
    /// Every block, by id.
    All,
    /// In place somewhere, by id.
    Current,
    /// Expected and in place nowhere, oldest first.
    Pending,
}

/// Streams one of the block listings, authenticated.
async fn block_set(s: Arc<AppState>, h: HeaderMap, set: Listing) -> Result<Response> {
    caller(&s, &h).await?.user()?;
    let links = links(&h);
    let names = names(&s);
    Ok(match set {
        Listing::All | Listing::Current => stream::json_array(
            s,
            Box::new(move |reg, after: Option<&u64>, p| {
                let rows: Box<dyn Iterator<Item = &Block>> = match set {
                    Listing::All => Box::new(reg.blocks_after(after.copied())),
                    _ => Box::new(reg.current_after(after.copied())),
                };
                p.fill(
                    rows,
                    |b| b.id,
                    |p, b| {
                        p.json(&output::block(b, who(&names, b.who), &links, None));
                    },
                );
            }),
        ),
        Listing::Pending => stream::json_array(
            s,
            Box::new(move |reg, after: Option<&(Time, u64)>, p| {
                p.fill(
                    reg.expected_after(None, after.copied()),
                    |b| (b.added, b.id),
                    |p, b| {
                        if reg.is_pending(b.id) {
                            p.json(&output::block(b, who(&names, b.who), &links, None));
                        }
                    },
                );
            }),
        ),
    })
}

/// Reads a derived block set that is not streamed (pending removal: blocks with an entry
/// due for removal, which is short-lived and small), authenticated.
async fn block_list(
    s: Arc<AppState>,
    h: HeaderMap,
    pick: impl FnOnce(&Registry) -> Vec<&Block>,
) -> Result<Response> {
    caller(&s, &h).await?.user()?;
    let links = links(&h);
    let names = names(&s);
    let rows = s.read(|reg| {
        Json::seq(
            pick(reg)
                .into_iter()
                .map(|b| output::block(b, who(&names, b.who), &links, None)),
        )
    });
    Ok(rows.respond(StatusCode::OK))
}

/// One block of a derived set, or 404.
async fn block_in_set(
    s: Arc<AppState>,
    h: HeaderMap,
    id: u64,
    pick: impl FnOnce(&Registry) -> Vec<&Block>,
) -> Result<Response> {
    caller(&s, &h).await?.user()?;
    let names = names(&s);
    let links = links(&h);
    let v = s
        .read(|reg| {
            let b = pick(reg).into_iter().find(|b| b.id == id)?;
            Some(Json::of(&output::block(
                b,
                who(&names, b.who),
                &links,
                None,
            )))
        })
        .ok_or(ApiError::NotFound)?;
    Ok(v.respond(StatusCode::OK))
}

fn id_of(raw: &str) -> Result<u64> {
    raw.parse().map_err(|_| ApiError::NotFound)
}

/// `GET /bhr/api/blocks/`.
pub async fn blocks_list(State(s): St, h: HeaderMap) -> Result<Response> {
    block_set(s, h, Listing::All).await
}

/// `GET /bhr/api/blocks/<id>/`.
pub async fn block_get(State(s): St, h: HeaderMap, Path(id): Path<String>) -> Result<Response> {
    let id = id_of(&id)?;
    block_in_set(s, h, id, |r| r.block(id).into_iter().collect()).await
}

/// `GET /bhr/api/current_blocks/`.
pub async fn current_blocks(State(s): St, h: HeaderMap) -> Result<Response> {
    block_set(s, h, Listing::Current).await
}

/// `GET /bhr/api/current_blocks/<id>/`.
pub async fn current_block(State(s): St, h: HeaderMap, Path(id): Path<String>) -> Result<Response> {
    block_in_set(s, h, id_of(&id)?, |r| r.current().collect()).await
}

/// `GET /bhr/api/pending_blocks/`.
pub async fn pending_blocks(State(s): St, h: HeaderMap) -> Result<Response> {
    block_set(s, h, Listing::Pending).await
}

/// `GET /bhr/api/pending_blocks/<id>/`.
pub async fn pending_block(State(s): St, h: HeaderMap, Path(id): Path<String>) -> Result<Response> {
    block_in_set(s, h, id_of(&id)?, |r| r.pending().collect()).await
}

/// `GET /bhr/api/pending_removal_blocks/`.
pub async fn pending_removal_blocks(State(s): St, h: HeaderMap) -> Result<Response> {
    block_list(s, h, Registry::pending_removal).await
}

/// `GET /bhr/api/pending_removal_blocks/<id>/`.
pub async fn pending_removal_block(
    State(s): St,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response> {
    block_in_set(s, h, id_of(&id)?, Registry::pending_removal).await
}

/// `GET /bhr/api/expected_blocks/[?source=S]`: networks only.
pub async fn expected_blocks(
    State(s): St,
    h: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response> {
    caller(&s, &h).await?.user()?;
    let source = params(&q).remove("source");
    Ok(stream::json_array(
        s,
        Box::new(move |reg, after: Option<&(Time, u64)>, p| {
            p.fill(
                reg.expected_after(None, after.copied()),
                |b| (b.added, b.id),
                |p, b| {
                    if source.as_deref().is_none_or(|src| *b.source == *src) {
                        p.json(&output::brief(b));
                    }
                },
            );
        }),
    ))
}

/// One block of a derived set in the brief shape, or 404.
async fn brief_in_set(
    s: Arc<AppState>,
    h: HeaderMap,
    raw_id: &str,
    pick: impl FnOnce(&Registry, u64) -> Option<&Block>,
) -> Result<Response> {
    caller(&s, &h).await?.user()?;
    let id = id_of(raw_id)?;
    let v = s.read(|reg| -> Result<Value> {
        Ok(to_value(output::brief(
            pick(reg, id).ok_or(ApiError::NotFound)?,
        )))
    })?;
    Ok(json_response(StatusCode::OK, &v))
}

/// `GET /bhr/api/expected_blocks/<id>/`.
pub async fn expected_block(
    State(s): St,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response> {
    brief_in_set(s, h, &id, |r, id| r.expected().find(|b| b.id == id)).await
}

/// `GET /bhr/api/current_blocks_brief/`: CSV by default, `?format=json` for JSON.
pub async fn current_blocks_brief(
    State(s): St,
    h: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response> {
    caller(&s, &h).await?.user()?;
    let json_wanted = params(&q).get("format").is_some_and(|f| f == "json");
    if json_wanted {
        return Ok(stream::json_array(
            s,
            Box::new(move |reg, after: Option<&u64>, p| {
                p.fill(
                    reg.current_after(after.copied()),
                    |b| b.id,
                    |p, b| {
                        p.json(&output::brief(b));
                    },
                );
            }),
        ));
    }
    Ok(stream::csv(
        s,
        &[Cell::Text("cidr")],
        "text/csv; charset=utf-8",
        Box::new(move |reg, after: Option<&u64>, p| {
            p.fill(
                reg.current_after(after.copied()),
                |b| b.id,
                |p, b| {
                    p.csv(&[Cell::Net(&b.cidr)]);
                },
            );
        }),
    ))
}

/// `GET /bhr/api/current_blocks_brief/<id>/` (JSON).
pub async fn current_block_brief(
    State(s): St,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response> {
    brief_in_set(s, h, &id, |r, id| r.current().find(|b| b.id == id)).await
}

/// `POST /bhr/api/blocks/`: creates a block from `cidr`, `source`, `why` and `unblock_at`
/// (null or absent: indefinite). Unlike BHR, which writes the row directly (and answers
/// 500 when it breaks a rule), it goes through the same checks and duplicate handling as
/// `block`, without extending.
pub async fn blocks_create(State(s): St, h: HeaderMap, body: Bytes) -> Result<Response> {
    let user = caller(&s, &h).await?.require(&[Perm::AddBlock])?.clone();
    let mut m = input::object(input::body(&h, &body)?)?;
    if !m.contains_key("unblock_at") || m.get("unblock_at").is_some_and(Value::is_null) {
        m.remove("unblock_at");
        m.insert("duration".into(), Value::from("0"));
    }
    m.insert("extend".into(), Value::Bool(false));
    let req = input::block_request(&m, user.id).map_err(ApiError::Invalid)?;
    may_skip_whitelist(&s, &user, &req)?;
    let (out, id) = create(&s, &h, &user, &req, false).await?;
    let mut r = out.respond(StatusCode::CREATED);
    if let Ok(v) = HeaderValue::from_str(&links(&h).api(&format!("blocks/{id}/"))) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    Ok(r)
}

/// `POST /bhr/api/blocks/<id>/set_blocked/` with `ident` (needs `add_block` and
/// `add_blockentry`, as in BHR). Idempotent.
pub async fn block_set_blocked(
    State(s): St,
    h: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response> {
    caller(&s, &h)
        .await?
        .require(&[Perm::AddBlock, Perm::AddBlockEntry])?;
    let id = id_of(&id)?;
    let m = input::object(input::body(&h, &body)?)?;
    let mut e = FieldErrors::default();
    let ident = input::text(&m, "ident", true, false, Some(50), &mut e);
    let Some(ident) = ident else {
        return Err(ApiError::Invalid(e));
    };
    change(&s, |reg, now, ch| {
        reg.set_blocked(&ident, &[id], now, ch)
            .map_err(|_| ApiError::NotFound)?;
        Ok(())
    })
    .await?;
    Ok(ok())
}

/// `GET /bhr/api/blockentries/`.
pub async fn entries_list(State(s): St, h: HeaderMap) -> Result<Response> {
    caller(&s, &h).await?.user()?;
    let links = links(&h);
    Ok(stream::json_array(
        s,
        Box::new(move |reg, after: Option<&u64>, p| {
            p.fill(
                reg.entries_after(after.copied()),
                |e| e.id,
                |p, e| {
                    if let Some(b) = reg.block(e.block) {
                        p.json(&output::entry(e, b, &links));
                    }
                },
            );
        }),
    ))
}

/// `GET /bhr/api/blockentries/<id>/`.
pub async fn entry_get(State(s): St, h: HeaderMap, Path(id): Path<String>) -> Result<Response> {
    caller(&s, &h).await?.user()?;
    let id = id_of(&id)?;
    let v = s.read(|reg| -> Result<Value> {
        let e = reg.entry(id).ok_or(ApiError::NotFound)?;
        let b = reg.block(e.block).expect("entries have blocks");
        Ok(to_value(output::entry(e, b, &links(&h))))
    })?;
    Ok(json_response(StatusCode::OK, &v))
}

/// `POST /bhr/api/blockentries/<id>/set_unblocked/`.
pub async fn entry_set_unblocked(
    State(s): St,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response> {
    caller(&s, &h).await?.require(&[Perm::AddBlockEntry])?;
    let id = id_of(&id)?;
    change(&s, |reg, now, ch| {
        if reg.entry(id).is_none() {
            return Err(ApiError::NotFound);
        }
        reg.set_unblocked(&[id], now, ch);
        Ok(())
    })
    .await?;
    Ok(ok())
}

// ----- whitelist -----

/// `GET /bhr/api/whitelist/`.
pub async fn whitelist_list(State(s): St, h: HeaderMap) -> Result<Response> {
    caller(&s, &h).await?.user()?;
    let names = names(&s);
    let v = s.read(|reg| {
        Value::Array(
            reg.whitelist()
                .iter()
                .map(|w| to_value(output::whitelist(w, who(&names, w.who))))
                .collect(),
        )
    });
    Ok(json_response(StatusCode::OK, &v))
}

/// `GET /bhr/api/whitelist/<id>/`.
pub async fn whitelist_get(State(s): St, h: HeaderMap, Path(id): Path<String>) -> Result<Response> {
    caller(&s, &h).await?.user()?;
    let id = id_of(&id)?;
    let names = names(&s);
    let v = s.read(|reg| -> Result<Value> {
        let w = reg
            .whitelist()
            .iter()
            .find(|w| w.id == id)
            .ok_or(ApiError::NotFound)?;
        Ok(to_value(output::whitelist(w, who(&names, w.who))))
    })?;
    Ok(json_response(StatusCode::OK, &v))
}

/// `POST /bhr/api/whitelist/` with `cidr` and `why`.
pub async fn whitelist_add(State(s): St, h: HeaderMap, body: Bytes) -> Result<Response> {
    let user = caller(&s, &h)
        .await?
        .require(&[Perm::AddWhitelist])?
        .clone();
    let m = input::object(input::body(&h, &body)?)?;
    let mut e = FieldErrors::default();
    let cidr = input::text(&m, "cidr", true, false, Some(43), &mut e)
        .and_then(|t| network(&t).map_err(|msg| e.add("cidr", msg)).ok());
    let why = input::text(&m, "why", true, false, None, &mut e);
    let (Some(cidr), Some(why), true) = (cidr, why, e.is_empty()) else {
        return Err(ApiError::Invalid(e));
    };
    let out = change(&s, |reg, now, ch| {
        let w = reg.add_whitelist(cidr, user.id, &why, now, ch);
        Ok(to_value(output::whitelist(w, &user.name)))
    })
    .await?;
    Ok(json_response(StatusCode::CREATED, &out))
}

/// `DELETE /bhr/api/whitelist/<id>/`.
pub async fn whitelist_delete(
    State(s): St,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response> {
    caller(&s, &h).await?.require(&[Perm::DeleteWhitelist])?;
    let id = id_of(&id)?;
    change(&s, |reg, _, ch| {
        if !reg.delete_whitelist(id, ch) {
            return Err(ApiError::NotFound);
        }
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ----- source blacklist (catchd's addition) -----

/// `GET /bhr/api/source_blacklist/`: blacklisted sources, whose block requests are refused.
pub async fn source_blacklist_list(State(s): St, h: HeaderMap) -> Result<Response> {
    caller(&s, &h).await?.user()?;
    let names = names(&s);
    let v = s.read(|reg| {
        Value::Array(
            reg.source_blacklist()
                .iter()
                .map(|e| to_value(output::source_blacklist(e, who(&names, e.who))))
                .collect(),
        )
    });
    Ok(json_response(StatusCode::OK, &v))
}

/// `GET /bhr/api/source_blacklist/<source>/`.
pub async fn source_blacklist_get(
    State(s): St,
    h: HeaderMap,
    Path(source): Path<String>,
) -> Result<Response> {
    caller(&s, &h).await?.user()?;
    let names = names(&s);
    let v = s.read(|reg| -> Result<Value> {
        let e = reg
            .source_blacklist()
            .iter()
            .find(|e| *e.source == *source)
            .ok_or(ApiError::NotFound)?;
        Ok(to_value(output::source_blacklist(e, who(&names, e.who))))
    })?;
    Ok(json_response(StatusCode::OK, &v))
}

/// `POST /bhr/api/source_blacklist/` with `source` and `why` (replaces an entry for the
/// same source).
pub async fn source_blacklist_add(State(s): St, h: HeaderMap, body: Bytes) -> Result<Response> {
    let user = caller(&s, &h)
        .await?
        .require(&[Perm::AddSourceBlacklist])?
        .clone();
    let m = input::object(input::body(&h, &body)?)?;
    let mut e = FieldErrors::default();
    let source = input::text(&m, "source", true, false, Some(30), &mut e);
    let why = input::text(&m, "why", true, false, None, &mut e);
    let (Some(source), Some(why), true) = (source, why, e.is_empty()) else {
        return Err(ApiError::Invalid(e));
    };
    let out = change(&s, |reg, now, ch| {
        reg.blacklist_source(&source, user.id, &why, now, ch);
        let entry = reg
            .source_blacklist()
            .iter()
            .find(|e| *e.source == *source)
            .expect("just added");
        Ok(to_value(output::source_blacklist(entry, &user.name)))
    })
    .await?;
    tracing::info!("SOURCE_BLACKLIST SOURCE={source} WHO={}", user.name);
    Ok(json_response(StatusCode::CREATED, &out))
}

/// `DELETE /bhr/api/source_blacklist/<source>/`.
pub async fn source_blacklist_delete(
    State(s): St,
    h: HeaderMap,
    Path(source): Path<String>,
) -> Result<Response> {
    caller(&s, &h)
        .await?
        .require(&[Perm::DeleteSourceBlacklist])?;
    change(&s, |reg, _, ch| {
        if !reg.unblacklist_source(&source, ch) {
            return Err(ApiError::NotFound);
        }
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ----- CSV lists -----

/// `GET /bhr/list.csv[?source=S][&since=TS]`: expected blocks; with `since`, those added at
/// or after it, oldest first.
pub async fn list_csv(State(s): St, h: HeaderMap, RawQuery(q): RawQuery) -> Result<Response> {
    reader(&s, &h).await?.user()?;
    let p = params(&q);
    let since = match p.get("since") {
        None => None,
        Some(t) => Some(timestamp(t).ok_or_else(|| {
            ApiError::Invalid(FieldErrors::one("since", "Enter a valid date/time."))
        })?),
    };
    let source = p.get("source").cloned();
    let names = names(&s);
    let header = ["cidr", "who", "source", "why", "added", "unblock_at"].map(Cell::Text);
    Ok(stream::csv(
        s,
        &header,
        "text/csv",
        Box::new(move |reg, after: Option<&(Time, u64)>, p| {
            p.fill(
                reg.expected_after(since, after.copied()),
                |b| (b.added, b.id),
                |p, b| {
                    if source.as_deref().is_none_or(|src| *b.source == *src) {
                        p.csv(&[
                            Cell::Net(&b.cidr),
                            Cell::Text(who(&names, b.who)),
                            Cell::Text(&b.source),
                            Cell::Text(&b.why),
                            Cell::Time(Some(b.added)),
                            Cell::Time(b.unblock_at),
                        ]);
                    }
                },
            );
        }),
    ))
}

/// `GET /bhr/publist.csv`: expected blocks without who and why. Public with
/// `unauthenticated_limited_query`; otherwise any authenticated user (BHR asks for a
/// browser session there, which catchd does not have).
pub async fn publist_csv(State(s): St, h: HeaderMap) -> Result<Response> {
    let c = reader(&s, &h).await?;
    let public = s.read(|r| r.settings().unauthenticated_limited_query);
    if !public {
        c.user()?;
    }
    Ok(stream::csv(
        s,
        &["cidr", "added", "unblock_at"].map(Cell::Text),
        "text/csv",
        Box::new(move |reg, after: Option<&(Time, u64)>, p| {
            p.fill(
                reg.expected_after(None, after.copied()),
                |b| (b.added, b.id),
                |p, b| {
                    p.csv(&[
                        Cell::Net(&b.cidr),
                        Cell::Time(Some(b.added)),
                        Cell::Time(b.unblock_at),
                    ]);
                },
            );
        }),
    ))
}

// ----- navigation -----

/// `GET /bhr/api/`: the collections.
pub async fn api_root(State(s): St, h: HeaderMap) -> Result<Response> {
    caller(&s, &h).await?;
    let links = links(&h);
    let mut m = Map::new();
    for c in super::COLLECTIONS {
        m.insert(c.into(), Value::from(links.api(&format!("{c}/"))));
    }
    Ok(json_response(StatusCode::OK, &Value::Object(m)))
}

fn redirect(status: StatusCode, target: &str) -> Response {
    let mut r = status.into_response();
    if let Ok(v) = HeaderValue::from_str(target) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// Collections without their trailing slash: redirect (301), as Django does.
pub async fn add_slash(uri: Uri) -> Response {
    let target = match uri.query() {
        Some(q) => format!("{}/?{q}", uri.path()),
        None => format!("{}/", uri.path()),
    };
    redirect(StatusCode::MOVED_PERMANENTLY, &target)
}

/// `GET /` and `GET /bhr` → the start page, `/bhr/` (302, as BHR).
pub async fn root_redirect() -> Response {
    redirect(StatusCode::FOUND, "/bhr/")
}

/// Anything else: DRF's 404.
pub async fn not_found() -> ApiError {
    ApiError::NotFound
}
