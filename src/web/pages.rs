//! BHR's pages (bhr.md §8.5), sign-in and sign-out.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;
use maud::{Markup, html};
use serde_json::{Map, Value};

use crate::auth::Perm;
use crate::bhr::model::{Block, Entry, UserId};
use crate::time::Time;

use super::html::{PathSeg, Since, Url, time_tag};
use super::session::{self, COOKIE, CSRF_COOKIE, same_secret};
use super::{
    CSRF_FIELD, Visit, WebState, cookie, csrf_input, error_page, html, layout, redirect,
    set_cookie, to_login,
};

type St = State<Arc<WebState>>;

/// Rows a table shows at most (the newest).
const MAX_ROWS: usize = 1000;
/// The longest query BHR's form accepts.
const MAX_QUERY: usize = 100;
/// How long a failed sign-in is held before it is answered.
const FAILED_LOGIN_DELAY: Duration = Duration::from_millis(500);

/// BHR's duration choices (`/bhr/add`), in seconds; 0 is indefinite.
pub const DURATIONS: [(i64, &str); 8] = [
    (300, "5 minutes"),
    (3_600, "1 hour"),
    (86_400, "1 day"),
    (604_800, "1 week"),
    (2_592_000, "1 month"),
    (7_776_000, "3 months"),
    (31_536_000, "1 year"),
    (0, "Indefinite"),
];

// ----- forms -----

/// A form-encoded body or query string (the last of a repeated key wins for `get`).
pub(crate) struct Form(Vec<(String, String)>);

impl Form {
    pub fn parse(raw: &[u8]) -> Form {
        Form(serde_urlencoded::from_bytes(raw).unwrap_or_default())
    }

    pub fn query(q: Option<&str>) -> Form {
        Form::parse(q.unwrap_or("").as_bytes())
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }

    pub fn all<'a>(&'a self, k: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }

    /// The block ids picked (`id=…`, repeated), at most [`MAX_ROWS`].
    fn ids(&self) -> Vec<u64> {
        self.all("id")
            .filter_map(|i| i.parse().ok())
            .take(MAX_ROWS)
            .collect()
    }

    fn checked(&self, k: &str) -> bool {
        self.get(k)
            .is_some_and(|v| matches!(v, "on" | "1" | "true" | "True"))
    }
}

/// A POST must come from this site's pages: its `Origin` (when the browser sends one)
/// is this server, and it carries the token of the session (or, before sign-in, of the
/// CSRF cookie).
fn check_post(
    s: &WebState,
    v: &Visit,
    h: &HeaderMap,
    form: &Form,
    expected: Option<&str>,
) -> Result<(), Box<Response>> {
    let refuse = || {
        error_page(
            s,
            v,
            StatusCode::FORBIDDEN,
            "CSRF verification failed. Request aborted. Reload the form and send it again.",
        )
    };
    if let Some(origin) = h.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        let host = h
            .get(header::HOST)
            .and_then(|x| x.to_str().ok())
            .unwrap_or("");
        let scheme = if v.https { "https" } else { "http" };
        if origin != format!("{scheme}://{host}") {
            tracing::warn!(origin, host, "Web: a form from another origin was refused.");
            return Err(Box::new(refuse()));
        }
    }
    let sent = form.get(CSRF_FIELD).unwrap_or("");
    match expected {
        Some(tok) if !tok.is_empty() && same_secret(sent, tok) => Ok(()),
        _ => Err(Box::new(refuse())),
    }
}

// ----- tables -----

/// A block with its entries, copied out of the registry.
struct Row {
    block: Block,
    entries: Vec<Entry>,
}

/// Which columns a block table has.
#[derive(Clone, Copy, Default)]
struct Cols {
    /// Who and Why (operators).
    who_why: bool,
    /// A checkbox to pick blocks to unblock.
    select: bool,
    /// The block managers' entries (the query page).
    entries: bool,
    /// A reverse-DNS column (local blocks).
    dns: bool,
    /// Where a network links to: the query page for operators, the limited one otherwise.
    limited: bool,
}

fn is_unblockable(b: &Block, now: Time) -> bool {
    !b.forced_unblock && b.unblock_at.is_none_or(|u| u > now)
}

struct Ctx<'a> {
    now: Time,
    names: &'a HashMap<UserId, String>,
    dns: &'a HashMap<IpAddr, String>,
}

fn who(names: &HashMap<UserId, String>, id: UserId) -> &str {
    names.get(&id).map_or("?", String::as_str)
}

/// A table of blocks, and whether it has a checkbox.
fn block_table(rows: &[Row], c: Cols, x: &Ctx<'_>) -> (Markup, bool) {
    let picks = c.select && rows.iter().any(|r| is_unblockable(&r.block, x.now));
    (block_table_html(rows, c, x), picks)
}

fn block_table_html(rows: &[Row], c: Cols, x: &Ctx<'_>) -> Markup {
    let query = if c.limited {
        "/bhr/limited/query"
    } else {
        "/bhr/query"
    };
    let dns = |b: &Block| {
        x.dns
            .get(&b.cidr.addr())
            .filter(|_| b.cidr.prefix_len() == b.cidr.max_prefix_len())
            .map_or("", String::as_str)
    };
    html! {
        @if rows.is_empty() {
            p.empty { "No blocks." }
        } @else {
            div.scroll { table.blocks.cards {
                thead { tr {
                    @if c.select { th { span.sr { "Unblock" } } }
                    th { "Cidr" }
                    @if c.dns { th { "DNS" } }
                    @if c.who_why { th { "Who" } }
                    th { "Source" }
                    @if c.who_why { th { "Why" } }
                    th { "Added" } th { "Unblock At" } th { "Duration" }
                    @if c.entries { th { "Entries" } }
                } }
                tbody {
                    @for Row { block: b, entries } in rows {
                        @let live = is_unblockable(b, x.now);
                        tr class=(if live { "active" } else { "ended" }) {
                            @if c.select {
                                @if live {
                                    td.pick data-label="Unblock" {
                                        input type="checkbox" name="id" value=(b.id)
                                            aria-label={ "Unblock " (b.cidr) };
                                    }
                                } @else {
                                    td.pick {}
                                }
                            }
                            @let cidr = b.cidr.to_string();
                            td.cidr data-label="Cidr" {
                                a href={ (query) "?query=" (Url(&cidr)) } { (cidr) }
                            }
                            @if c.dns { td data-label="DNS" { (dns(b)) } }
                            @if c.who_why { td data-label="Who" { (who(x.names, b.who)) } }
                            td data-label="Source" { (b.source) }
                            @if c.who_why {
                                td.why data-label="Why" {
                                    (b.why)
                                    @if b.forced_unblock {
                                        div.note {
                                            "Unblocked by "
                                            (b.unblock_who.map_or("?", |id| who(x.names, id)))
                                            ": " (b.unblock_why)
                                        }
                                    }
                                }
                            }
                            td data-label="Added" { (time_tag(b.added)) }
                            @match b.unblock_at {
                                Some(u) => {
                                    td data-label="Unblock At" { (time_tag(u)) }
                                    td data-label="Duration" { (Since(b.added, u)) }
                                }
                                None => {
                                    td data-label="Unblock At" { "never" }
                                    td data-label="Duration" { "indefinite" }
                                }
                            }
                            @if c.entries {
                                td data-label="Entries" { (entry_table(entries)) }
                            }
                        }
                    }
                }
            } }
        }
    }
}

/// The block managers' entries of one block.
fn entry_table(entries: &[Entry]) -> Markup {
    html! {
        @if entries.is_empty() {
            span.muted { "none" }
        } @else {
            table.entries {
                thead { tr { th { "Ident" } th { "Added" } th { "Removed" } } }
                tbody {
                    @for e in entries {
                        tr {
                            td { (e.ident) }
                            td { (time_tag(e.added)) }
                            td {
                                @match e.removed {
                                    Some(r) => (time_tag(r)),
                                    None => span.muted { "in place" },
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn rows_of(
    reg: &crate::bhr::registry::Registry,
    blocks: impl Iterator<Item = u64>,
    entries: bool,
) -> Vec<Row> {
    blocks
        .filter_map(|id| reg.block(id))
        .map(|b| Row {
            block: b.clone(),
            entries: if entries {
                reg.entries_of(b.id).cloned().collect()
            } else {
                Vec::new()
            },
        })
        .collect()
}

/// "Showing the newest N of M."
fn shown_of(shown: usize, total: usize) -> Markup {
    html! {
        @if total > shown { p.muted { "Showing the newest " (shown) " of " (total) "." } }
    }
}

// ----- searching -----

/// What a query asks for (shared by `/bhr/query` and the limited page): a first character
/// that is a digit makes it a network (blocks inside it), anything else a case-sensitive
/// piece of the reason.
enum Search {
    Nothing,
    Net(IpNet),
    Text(String),
}

fn search(q: &str) -> Result<Search, String> {
    let q = q.trim();
    if q.is_empty() {
        return Ok(Search::Nothing);
    }
    let n = q.chars().count();
    if n > MAX_QUERY {
        return Err(format!(
            "Ensure this value has at most {MAX_QUERY} characters (it has {n})."
        ));
    }
    if q.as_bytes()[0].is_ascii_digit() {
        crate::api::bhr::network(q)
            .map(Search::Net)
            .map_err(|m| format!("{q}: {m}"))
    } else {
        Ok(Search::Text(q.to_string()))
    }
}

/// The matching blocks, newest first (at most [`MAX_ROWS`]), and how many matched.
fn find(s: &WebState, what: &Search, entries: bool) -> (Vec<Row>, usize) {
    s.api.read(|reg| {
        let mut ids: Vec<(Time, u64)> = match what {
            Search::Nothing => Vec::new(),
            Search::Net(n) => reg.query(n).iter().map(|b| (b.added, b.id)).collect(),
            Search::Text(t) => reg
                .blocks()
                .filter(|b| b.why.contains(t.as_str()))
                .map(|b| (b.added, b.id))
                .collect(),
        };
        let total = ids.len();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids.truncate(MAX_ROWS);
        (
            rows_of(reg, ids.into_iter().map(|(_, id)| id), entries),
            total,
        )
    })
}

fn search_form(action: &str, q: &str, error: Option<&str>) -> Markup {
    html! {
        form.search method="get" action=(action) role="search" {
            label for="query" { "CIDR or comment string" }
            div.row {
                input id="query" name="query" value=(q) maxlength=(MAX_QUERY)
                    placeholder="192.0.2.0/24 or a word of the reason" autofocus;
                button type="submit" { "Search" }
            }
            @if let Some(e) = error { p.error { (e) } }
        }
    }
}

fn query_page(s: &WebState, v: &Visit, q: Option<&str>, limited: bool) -> Response {
    let q = q.unwrap_or("");
    let action = if limited {
        "/bhr/limited/query"
    } else {
        "/bhr/query"
    };
    let (what, error, status) = match search(q) {
        Ok(w) => (w, None, StatusCode::OK),
        Err(e) => (Search::Nothing, Some(e), StatusCode::BAD_REQUEST),
    };
    let results = (!matches!(what, Search::Nothing)).then(|| {
        let (rows, total) = find(s, &what, !limited);
        let names = s.api.users().names();
        let x = Ctx {
            now: s.api.now(),
            names: &names,
            dns: &HashMap::new(),
        };
        let cols = Cols {
            who_why: !limited,
            select: !limited && v.may(Perm::ChangeBlock),
            entries: !limited,
            dns: false,
            limited,
        };
        let table = block_table(&rows, cols, &x);
        html! {
            h2 { (total) " " (if total == 1 { "block" } else { "blocks" }) " for " q { (q.trim()) } }
            (shown_of(rows.len(), total))
            @if cols.select { (unblock_selection(v, table)) } @else { (table.0) }
        }
    });
    let body = html! {
        h1 { "Query" }
        (search_form(action, q, error.as_deref()))
        @if let Some(r) = results { (r) }
    };
    html(status, layout(s, v, "Query", body))
}

/// A table (and whether it has a checkbox) in a form whose checkboxes pick blocks for
/// `/bhr/unblock`.
fn unblock_selection(v: &Visit, (table, picks): (Markup, bool)) -> Markup {
    html! {
        form method="post" action="/bhr/unblock" {
            (csrf_input(v.csrf()))
            (table)
            @if picks { p { button.danger type="submit" { "Unblock selected…" } } }
        }
    }
}

/// The four counts of `/bhr/api/stats`, with BHR's headings.
fn counts(st: &crate::bhr::registry::Stats) -> Markup {
    html! {
        dl.counts {
            div { dt { "Current" } dd { (st.current) } }
            div { dt { "Expected" } dd { (st.expected) } }
            div { dt { "Block Pending" } dd { (st.block_pending) } }
            div { dt { "Unblock Pending" } dd { (st.unblock_pending) } }
        }
    }
}

// ----- public pages -----

/// `GET /bhr/`: the start page.
pub async fn index(State(s): St, h: HeaderMap, uri: Uri) -> Response {
    let v = s.visit(&h, &uri);
    let body = html! {
        h1 { "Black Hole Router" }
        (counts(&s.api.stats_snapshot()))
        @if v.user().is_some() {
            (search_form("/bhr/query", "", None))
            ul.links {
                li { a href="/bhr/list" { "Blocks in place and recent automated blocks" } }
                @if v.may(Perm::AddBlock) { li { a href="/bhr/add" { "Add a block" } } }
                li { a href="/bhr/stats" { "Statistics by source" } }
                @if s.cr.is_some() {
                    li { a href="/cr/" { "Catch and release: watched addresses, live" } }
                }
                li {
                    a href="/bhr/list.csv" { "list.csv" } " · "
                    a href="/bhr/publist.csv" { "publist.csv" } " · "
                    a href="/bhr/api/" { "API" }
                }
            }
        } @else {
            p {
                a.button href="/accounts/login/?next=/bhr/" { "Sign in" }
                " to query, add and unblock."
            }
        }
        @if s.limited {
            h2 { "Limited access pages" }
            ul.links {
                li { a href="/bhr/limited/query" { "Query" } }
                li { a href="/bhr/limited/list" { "List" } }
                li { a href="/bhr/publist.csv" { "publist.csv" } }
            }
        }
    };
    html(StatusCode::OK, layout(&s, &v, "Home", body))
}

/// `GET /bhr/limited/query?query=Q` (public, with `unauthenticated_limited_query`).
pub async fn limited_query(
    State(s): St,
    h: HeaderMap,
    uri: Uri,
    RawQuery(q): RawQuery,
) -> Response {
    let v = s.visit(&h, &uri);
    let f = Form::query(q.as_deref());
    query_page(&s, &v, f.get("query"), true)
}

/// Expected blocks by group, newest first: manual (source `web` or `cli`), local (inside
/// `local_networks`), automated (the 50 newest not from `web`); each with its total.
struct Lists {
    manual: (Vec<Row>, usize),
    local: (Vec<Row>, usize),
    automated: (Vec<Row>, usize),
}

/// The newest `n` rows of `ids` and how many there were.
fn capped(reg: &crate::bhr::registry::Registry, ids: Vec<u64>, n: usize) -> (Vec<Row>, usize) {
    let total = ids.len();
    (rows_of(reg, ids.into_iter().take(n), false), total)
}

fn lists(s: &WebState) -> Lists {
    s.api.read(|reg| {
        let local_nets = &reg.settings().local_networks;
        let (mut manual, mut local, mut automated) = (Vec::new(), Vec::new(), Vec::new());
        for b in reg.expected().rev() {
            if matches!(&*b.source, "web" | "cli") {
                manual.push(b.id);
            }
            if local_nets.iter().any(|n| n.contains(&b.cidr)) {
                local.push(b.id);
            }
            if &*b.source != "web" {
                automated.push(b.id);
            }
        }
        Lists {
            manual: capped(reg, manual, MAX_ROWS),
            local: capped(reg, local, MAX_ROWS),
            automated: capped(reg, automated, 50),
        }
    })
}

/// The 500 newest expected blocks of one source, and how many there are.
fn source_rows(s: &WebState, source: &str) -> (Vec<Row>, usize) {
    s.api.read(|reg| {
        let ids = reg
            .expected()
            .rev()
            .filter(|b| *b.source == *source)
            .map(|b| b.id)
            .collect();
        capped(reg, ids, 500)
    })
}

/// The list pages' sections (the automated one only for operators), and whether a table
/// has a checkbox.
fn list_sections(l: &Lists, cols: Cols, x: &Ctx<'_>, automated: bool) -> (Markup, bool) {
    let manual = block_table(&l.manual.0, cols, x);
    let local = block_table(&l.local.0, Cols { dns: true, ..cols }, x);
    let auto = automated.then(|| block_table(&l.automated.0, cols, x));
    let picks = manual.1 || local.1 || auto.as_ref().is_some_and(|a| a.1);
    let m = html! {
        h2 { "Manual Blocks" }
        (shown_of(l.manual.0.len(), l.manual.1))
        (manual.0)
        h2 { "Local Blocks" }
        (shown_of(l.local.0.len(), l.local.1))
        (local.0)
        @if let Some((table, _)) = auto {
            h2 { "50 most recent automated blocks" }
            (table)
        }
    };
    (m, picks)
}

async fn local_names(s: &WebState, rows: &[Row]) -> HashMap<IpAddr, String> {
    let hosts: Vec<IpAddr> = rows
        .iter()
        .map(|r| r.block.cidr)
        .filter(|c| c.prefix_len() == c.max_prefix_len())
        .map(|c| c.addr())
        .collect();
    s.dns.names(&hosts).await
}

/// `GET /bhr/limited/list` (public, with `unauthenticated_limited_query`).
pub async fn limited_list(State(s): St, h: HeaderMap, uri: Uri) -> Response {
    let v = s.visit(&h, &uri);
    let l = lists(&s);
    let dns = local_names(&s, &l.local.0).await;
    let names = HashMap::new();
    let x = Ctx {
        now: s.api.now(),
        names: &names,
        dns: &dns,
    };
    let cols = Cols {
        limited: true,
        ..Cols::default()
    };
    let body = html! {
        h1 { "Blocks" }
        p { "Every block in force: " a href="/bhr/publist.csv" { "publist.csv" } }
        (list_sections(&l, cols, &x, false).0)
    };
    html(StatusCode::OK, layout(&s, &v, "List", body))
}

/// `GET /bhr/stats` (public, as in BHR: the same numbers as `/bhr/api/stats`).
pub async fn stats(State(s): St, h: HeaderMap, uri: Uri) -> Response {
    let v = s.visit(&h, &uri);
    let st = s.api.stats_snapshot();
    let body = html! {
        h1 { "Stats" }
        (counts(&st))
        h2 { "Expected blocks by source" }
        @if st.sources.is_empty() {
            p.empty { "No blocks." }
        } @else {
            div.scroll { table.sources {
                thead { tr { th { "Source" } th.num { "Blocks" } } }
                tbody {
                    @for (src, n) in &st.sources {
                        tr {
                            td { a href={ "/bhr/list/source/" (PathSeg(src)) } { (src) } }
                            td.num { (n) }
                        }
                    }
                }
            } }
        }
    };
    html(StatusCode::OK, layout(&s, &v, "Stats", body))
}

// ----- operator pages -----

/// `GET /bhr/query?query=Q` (signed in).
pub async fn query(State(s): St, h: HeaderMap, uri: Uri, RawQuery(q): RawQuery) -> Response {
    let v = match s.operator(&h, &uri, None) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let f = Form::query(q.as_deref());
    query_page(&s, &v, f.get("query"), false)
}

/// `GET /bhr/list` (signed in).
pub async fn list(State(s): St, h: HeaderMap, uri: Uri) -> Response {
    let v = match s.operator(&h, &uri, None) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let l = lists(&s);
    let dns = local_names(&s, &l.local.0).await;
    let names = s.api.users().names();
    let x = Ctx {
        now: s.api.now(),
        names: &names,
        dns: &dns,
    };
    let cols = Cols {
        who_why: true,
        select: v.may(Perm::ChangeBlock),
        ..Cols::default()
    };
    let sections = list_sections(&l, cols, &x, true);
    let body = html! {
        h1 { "Blocks" }
        p {
            "Every block in force: " a href="/bhr/list.csv" { "list.csv" } " · "
            a href="/bhr/publist.csv" { "publist.csv" }
        }
        @if cols.select { (unblock_selection(&v, sections)) } @else { (sections.0) }
    };
    html(StatusCode::OK, layout(&s, &v, "List", body))
}

/// `GET /bhr/list/source/<source>` (signed in): the 500 newest blocks in force of a source.
pub async fn list_source(
    State(s): St,
    h: HeaderMap,
    uri: Uri,
    Path(source): Path<String>,
) -> Response {
    let v = match s.operator(&h, &uri, None) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let (rows, total) = source_rows(&s, &source);
    let names = s.api.users().names();
    let x = Ctx {
        now: s.api.now(),
        names: &names,
        dns: &HashMap::new(),
    };
    let cols = Cols {
        who_why: true,
        select: v.may(Perm::ChangeBlock),
        ..Cols::default()
    };
    let table = block_table(&rows, cols, &x);
    let body = html! {
        h1 { "Blocks from " q { (source) } }
        (shown_of(rows.len(), total))
        @if cols.select { (unblock_selection(&v, table)) } @else { (table.0) }
    };
    html(
        StatusCode::OK,
        layout(&s, &v, &format!("Source {source}"), body),
    )
}

/// The add form, with what was entered and what was wrong with it.
fn add_page(
    s: &WebState,
    v: &Visit,
    f: &Form,
    errors: &[(String, String)],
    status: StatusCode,
) -> Response {
    let err = |field: &str| {
        html! {
            @for (_, m) in errors.iter().filter(|(k, _)| k == field) { p.error { (m) } }
        }
    };
    let duration: i64 = f
        .get("duration")
        .and_then(|d| d.parse().ok())
        .unwrap_or(DURATIONS[0].0);
    let body = html! {
        h1 { "Add a block" }
        (err("non_field_errors"))
        form.stacked method="post" action="/bhr/add" {
            (csrf_input(v.csrf()))
            label for="cidr" { "CIDR" }
            input id="cidr" name="cidr" required maxlength="50" value=(f.get("cidr").unwrap_or(""))
                placeholder="192.0.2.10 or 2001:db8::/64" autofocus;
            (err("cidr"))
            label for="why" { "Why" }
            textarea id="why" name="why" required rows="3" { (f.get("why").unwrap_or("")) }
            (err("why"))
            label for="duration" { "Duration" }
            select id="duration" name="duration" {
                @for (secs, label) in DURATIONS {
                    option value=(secs) selected[secs == duration] { (label) }
                }
            }
            (err("duration"))
            label.check {
                input type="checkbox" name="skip_whitelist" checked[f.checked("skip_whitelist")];
                " Skip whitelist (and the prefix-length and source checks)"
            }
            label.check {
                input type="checkbox" name="extend" checked[f.checked("extend")];
                " Extend an existing block for this network"
            }
            p { button type="submit" { "Block" } }
        }
    };
    html(status, layout(s, v, "Add", body))
}

/// The start of every form that changes something: signed in with permission `p`, sent
/// from this site with the session's token. The visit and the form, or the answer.
fn posted(
    s: &WebState,
    h: &HeaderMap,
    uri: &Uri,
    body: &[u8],
    p: Perm,
) -> Result<(Visit, Form), Box<Response>> {
    let v = s.operator(h, uri, Some(p))?;
    let f = Form::parse(body);
    check_post(s, &v, h, &f, Some(v.csrf()))?;
    Ok((v, f))
}

/// `GET /bhr/add[?cidr=…]` (signed in, `add_block`).
pub async fn add_form(State(s): St, h: HeaderMap, uri: Uri, RawQuery(q): RawQuery) -> Response {
    let v = match s.operator(&h, &uri, Some(Perm::AddBlock)) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    add_page(&s, &v, &Form::query(q.as_deref()), &[], StatusCode::OK)
}

/// `POST /bhr/add`: blocks with source `web`, then shows the network's history.
pub async fn add(State(s): St, h: HeaderMap, uri: Uri, body: Bytes) -> Response {
    let (v, f) = match posted(&s, &h, &uri, &body, Perm::AddBlock) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let Some((user, _, cookie)) = &v.signed_in else {
        return to_login(&v);
    };
    let mut m = Map::new();
    for k in ["cidr", "why"] {
        if let Some(x) = f.get(k) {
            m.insert(k.into(), Value::from(x.trim()));
        }
    }
    let duration = f.get("duration").unwrap_or("");
    if !DURATIONS.iter().any(|(d, _)| d.to_string() == duration) {
        return add_page(
            &s,
            &v,
            &f,
            &[(
                "duration".into(),
                format!("Select a valid choice. {duration} is not one of the available choices."),
            )],
            StatusCode::BAD_REQUEST,
        );
    }
    m.insert("duration".into(), Value::from(duration));
    m.insert("source".into(), Value::from("web"));
    m.insert(
        "skip_whitelist".into(),
        Value::Bool(f.checked("skip_whitelist")),
    );
    m.insert("extend".into(), Value::Bool(f.checked("extend")));
    m.insert("autoscale".into(), Value::Bool(false));
    let req = match crate::api::bhr::block_request(&m, user.id) {
        Ok(r) => r,
        Err(e) => {
            let errors: Vec<(String, String)> = e
                .iter()
                .flat_map(|(k, ms)| ms.iter().map(move |m| (k.to_string(), m.clone())))
                .collect();
            return add_page(&s, &v, &f, &errors, StatusCode::BAD_REQUEST);
        }
    };
    if req.skip_whitelist
        && !s
            .api
            .read(|r| r.settings().skip_whitelist_roles.contains(&user.role))
    {
        return add_page(
            &s,
            &v,
            &f,
            &[(
                "non_field_errors".into(),
                "You do not have permission to skip the whitelist.".into(),
            )],
            StatusCode::FORBIDDEN,
        );
    }
    match s.api.add_block_durably(&req).await {
        Ok(Ok((id, created))) => {
            let b = s.api.read(|r| r.block(id).cloned());
            let until = b.as_ref().and_then(|b| b.unblock_at).map_or_else(
                || "indefinitely".to_string(),
                |u| format!("until {}", html::Date(u)),
            );
            let msg = if created {
                format!("Blocked {} {until}.", req.cidr)
            } else {
                format!("{} was already blocked; it is blocked {until}.", req.cidr)
            };
            tracing::info!(
                "WEB_BLOCK IP={} user={} created={created} id={id}",
                req.cidr,
                user.name
            );
            s.sessions.flash(cookie, msg);
            redirect(
                StatusCode::SEE_OTHER,
                &format!("/bhr/query?query={}", Url(&req.cidr.to_string())),
            )
        }
        Ok(Err(refused)) => add_page(
            &s,
            &v,
            &f,
            &[("non_field_errors".into(), refused.0)],
            StatusCode::BAD_REQUEST,
        ),
        Err(_) => error_page(
            &s,
            &v,
            StatusCode::SERVICE_UNAVAILABLE,
            "The block could not be stored. Try again.",
        ),
    }
}

/// The confirmation page for unblocking the blocks picked.
fn unblock_page(
    s: &WebState,
    v: &Visit,
    f: &Form,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let ids = f.ids();
    let now = s.api.now();
    let rows = s.api.read(|reg| rows_of(reg, ids.iter().copied(), false));
    let (live, gone): (Vec<Row>, Vec<Row>) = rows
        .into_iter()
        .partition(|r| is_unblockable(&r.block, now));
    let names = s.api.users().names();
    let x = Ctx {
        now,
        names: &names,
        dns: &HashMap::new(),
    };
    let cols = Cols {
        who_why: true,
        ..Cols::default()
    };
    let body = html! {
        h1 { "Unblock" }
        @if let Some(e) = error { p.error { (e) } }
        @if live.is_empty() {
            p.empty {
                "Nothing to unblock: pick blocks in force on the "
                a href="/bhr/list" { "list" } " or " a href="/bhr/query" { "query" } " page."
            }
        } @else {
            p {
                "These "
                @if live.len() == 1 { "block" } @else { (live.len()) " blocks" }
                " will be removed from every block manager now:"
            }
            (block_table(&live, cols, &x).0)
            form.stacked method="post" action="/bhr/do_unblock" {
                (csrf_input(v.csrf()))
                @for r in &live { input type="hidden" name="id" value=(r.block.id); }
                label for="why" { "Why" }
                textarea id="why" name="why" required rows="2" { (f.get("why").unwrap_or("")) }
                p {
                    button.danger type="submit" { "Unblock" } " "
                    a href="/bhr/list" { "Cancel" }
                }
            }
        }
        @if !gone.is_empty() {
            h2 { "No longer in force" }
            (block_table(&gone, cols, &x).0)
        }
    };
    html(status, layout(s, v, "Unblock", body))
}

/// `GET /bhr/unblock?id=…`: the confirmation page (changes nothing).
pub async fn unblock_form(State(s): St, h: HeaderMap, uri: Uri, RawQuery(q): RawQuery) -> Response {
    let v = match s.operator(&h, &uri, Some(Perm::ChangeBlock)) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    unblock_page(&s, &v, &Form::query(q.as_deref()), None, StatusCode::OK)
}

/// `POST /bhr/unblock` (the checkboxes of the list and query pages): the confirmation page.
pub async fn unblock_form_post(State(s): St, h: HeaderMap, uri: Uri, body: Bytes) -> Response {
    let (v, f) = match posted(&s, &h, &uri, &body, Perm::ChangeBlock) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    unblock_page(&s, &v, &f, None, StatusCode::OK)
}

/// `POST /bhr/do_unblock`: ends each block picked, with the reason given.
pub async fn do_unblock(State(s): St, h: HeaderMap, uri: Uri, body: Bytes) -> Response {
    let (v, f) = match posted(&s, &h, &uri, &body, Perm::ChangeBlock) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let Some((user, _, cookie)) = &v.signed_in else {
        return to_login(&v);
    };
    let why = f.get("why").unwrap_or("").trim();
    if why.is_empty() {
        return unblock_page(
            &s,
            &v,
            &f,
            Some("Say why: this field is required."),
            StatusCode::BAD_REQUEST,
        );
    }
    let ids = f.ids();
    if ids.is_empty() {
        return unblock_page(
            &s,
            &v,
            &f,
            Some("Pick at least one block."),
            StatusCode::BAD_REQUEST,
        );
    }
    let mut ended = Vec::new();
    for id in ids {
        match s.api.end_block_durably(id, user.id, why).await {
            Ok(Some(cidr)) => ended.push(cidr),
            Ok(None) => {}
            Err(_) => {
                return error_page(
                    &s,
                    &v,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The unblock could not be stored. Try again.",
                );
            }
        }
    }
    tracing::info!("WEB_UNBLOCK user={} blocks={}", user.name, ended.len());
    let msg = match ended.as_slice() {
        [] => "Nothing was unblocked: those blocks were no longer in force.".to_string(),
        [one] => format!("Unblocked {one}; block managers remove it now."),
        many => format!(
            "Unblocked {} blocks; block managers remove them now.",
            many.len()
        ),
    };
    s.sessions.flash(cookie, msg);
    let to = match ended.as_slice() {
        [one] => format!("/bhr/query?query={}", Url(&one.to_string())),
        _ => "/bhr/list".to_string(),
    };
    redirect(StatusCode::SEE_OTHER, &to)
}

// ----- signing in and out -----

/// `GET /bhr/login` → the sign-in page, as BHR.
pub async fn login_redirect() -> Response {
    redirect(StatusCode::FOUND, "/accounts/login/")
}

/// Where to go after sign-in: a plain path on this site, else the start page.
///
/// Browsers clean a `Location` before they resolve it (they drop tabs and newlines
/// anywhere and treat `\` as `/`), so `/\t/evil.example` becomes `//evil.example`, another
/// site. Only printable ASCII other than `\` is taken, starting with one `/` not followed
/// by another: what remains is a path, with no scheme and no authority.
pub fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n[1..].starts_with(['/', '\\'])
                && n.bytes().all(|b| (0x21..0x7f).contains(&b) && b != b'\\') =>
        {
            n
        }
        _ => "/bhr/",
    }
}

fn login_page(
    s: &WebState,
    v: &Visit,
    token: &str,
    name: &str,
    next: &str,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let body = html! {
        h1 { "Sign in" }
        @if let Some(e) = error { p.error role="alert" { (e) } }
        form.stacked.narrow method="post" action="/accounts/login/" {
            (csrf_input(token))
            input type="hidden" name="next" value=(next);
            label for="username" { "Username" }
            input id="username" name="username" required autocomplete="username" value=(name)
                autofocus[name.is_empty()];
            label for="password" { "Password" }
            input id="password" name="password" type="password" required
                autocomplete="current-password" autofocus[!name.is_empty()];
            p { button type="submit" { "Sign in" } }
        }
        p.muted { "Accounts are made with " code { "catchd user add NAME --password-stdin" } "." }
    };
    let mut r = html(status, layout(s, v, "Sign in", body));
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(CSRF_COOKIE, token, "/accounts/", v.https, None),
    );
    r
}

/// `GET /accounts/login/[?next=…]`.
pub async fn login_form(State(s): St, h: HeaderMap, uri: Uri, RawQuery(q): RawQuery) -> Response {
    let v = s.visit(&h, &uri);
    let f = Form::query(q.as_deref());
    let next = safe_next(f.get("next"));
    if v.user().is_some() {
        return redirect(StatusCode::FOUND, next);
    }
    let token = cookie(&h, CSRF_COOKIE)
        .filter(|t| t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()))
        .map_or_else(session::random_token, str::to_string);
    login_page(&s, &v, &token, "", next, None, StatusCode::OK)
}

/// `POST /accounts/login/`.
pub async fn login(State(s): St, h: HeaderMap, uri: Uri, body: Bytes) -> Response {
    let v = s.visit(&h, &uri);
    let f = Form::parse(&body);
    if let Err(r) = check_post(&s, &v, &h, &f, cookie(&h, CSRF_COOKIE)) {
        return *r;
    }
    let token = cookie(&h, CSRF_COOKIE).unwrap_or("").to_string();
    let name = f.get("username").unwrap_or("").trim();
    let password = f.get("password").unwrap_or("");
    let next = safe_next(f.get("next")).to_string();
    let user =
        if name.is_empty() || password.is_empty() || name.len() > 150 || password.len() > 4096 {
            None
        } else {
            match crate::api::bhr::check_password(&s.api, name, password).await {
                Ok(u) => u,
                Err(crate::api::bhr::ApiError::Throttled(secs)) => {
                    tracing::warn!(user = ?name, "Web: sign-in throttled.");
                    let mut r = login_page(
                        &s,
                        &v,
                        &token,
                        name,
                        &next,
                        Some(&format!(
                            "Too many failed sign-ins. Try again in {secs} seconds."
                        )),
                        StatusCode::TOO_MANY_REQUESTS,
                    );
                    r.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
                    return r;
                }
                Err(_) => {
                    return error_page(
                        &s,
                        &v,
                        StatusCode::SERVICE_UNAVAILABLE,
                        "The user directory cannot be read. Try again.",
                    );
                }
            }
        };
    let Some(user) = user else {
        tracing::warn!(user = ?name, "Web: sign-in failed.");
        tokio::time::sleep(FAILED_LOGIN_DELAY).await;
        return login_page(
            &s,
            &v,
            &token,
            name,
            &next,
            Some(
                "Please enter a correct username and password. Note that both fields may be case-sensitive.",
            ),
            StatusCode::UNAUTHORIZED,
        );
    };
    tracing::info!(user = %user.name, "Web: signed in.");
    // A new session (never one the browser brought along).
    if let Some(old) = cookie(&h, COOKIE) {
        s.sessions.end(old);
    }
    let c = s.sessions.start(user.id);
    let mut r = redirect(StatusCode::SEE_OTHER, &next);
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(COOKIE, &c, "/", v.https, None),
    );
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(CSRF_COOKIE, "", "/accounts/", v.https, Some(0)),
    );
    r
}

/// `GET /accounts/logout/`: a button (signing out is a POST).
pub async fn logout_form(State(s): St, h: HeaderMap, uri: Uri) -> Response {
    let v = s.visit(&h, &uri);
    if v.user().is_none() {
        return redirect(StatusCode::FOUND, "/bhr/");
    }
    let body = html! {
        h1 { "Sign out" }
        form method="post" action="/accounts/logout/" {
            (csrf_input(v.csrf()))
            button type="submit" { "Sign out" }
        }
    };
    html(StatusCode::OK, layout(&s, &v, "Sign out", body))
}

/// `POST /accounts/logout/`.
pub async fn logout(State(s): St, h: HeaderMap, uri: Uri, body: Bytes) -> Response {
    let v = s.visit(&h, &uri);
    let f = Form::parse(&body);
    if let Some((u, _, c)) = &v.signed_in {
        if let Err(r) = check_post(&s, &v, &h, &f, Some(v.csrf())) {
            return *r;
        }
        s.sessions.end(c);
        tracing::info!(user = %u.name, "Web: signed out.");
    }
    let mut r = redirect(StatusCode::SEE_OTHER, "/bhr/");
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(COOKIE, "", "/", v.https, Some(0)),
    );
    r
}

// ----- assets -----

fn asset(body: &'static str, ctype: &'static str) -> Response {
    let mut r = body.into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    r.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// `GET /static/catchd.css`.
pub async fn css() -> Response {
    asset(include_str!("assets/catchd.css"), "text/css; charset=utf-8")
}

/// `GET /static/cr.js`.
pub async fn script() -> Response {
    asset(
        include_str!("assets/cr.js"),
        "text/javascript; charset=utf-8",
    )
}

/// `GET /cr` → `/cr/`.
pub async fn cr_slash() -> Response {
    redirect(StatusCode::MOVED_PERMANENTLY, "/cr/")
}
