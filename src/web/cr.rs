//! The catch-and-release page, `/cr/`: every watched address (the most recent first) with
//! its step and countdowns, the latest log lines, the capture counters, and a chart of
//! blocks per hour. `/cr/live` is the same content without the page around it, which the
//! script swaps in every few seconds.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use ipnet::IpNet;
use maud::{Markup, html};

use crate::addr::Addr;
use crate::cnr::{BlockInfo, CatchReleaseRecord, Intervals};
use crate::time::{Interval, Time};

use super::html::{Date, Left, Span, Url, short_time, time_tag};
use super::pages::Form;
use super::{WebState, html, layout_with};

/// Watched addresses a page shows at most.
pub const MAX_WATCHED: usize = 500;

/// What the daemon tells the page.
pub trait CatchRelease: Send + Sync {
    /// At most `limit` watched addresses inside `filter` (all if `None`), the most recent
    /// first, and everything else the page shows, at `now`.
    fn overview(&self, limit: usize, filter: Option<&IpNet>, now: Time) -> Overview;
}

/// One capture's counters.
#[derive(Clone, Debug, Default)]
pub struct Capture {
    /// The interface.
    pub interface: String,
    /// Whether its thread runs.
    pub up: bool,
    /// Frames per second over the last second.
    pub rate: u64,
    /// Frames captured.
    pub packets: u64,
    /// Dropped by the kernel for lack of buffer (libpcap).
    pub kernel_dropped: u64,
    /// Dropped by the interface (libpcap).
    pub if_dropped: u64,
    /// Sightings of watched addresses.
    pub sightings: u64,
    /// Sightings lost because the engine was behind.
    pub channel_drops: u64,
    /// Frames without a readable IP header.
    pub skipped: u64,
}

/// Everything the page shows.
#[derive(Clone, Debug, Default)]
pub struct Overview {
    /// Addresses tracked in all.
    pub watched: usize,
    /// Tracked and inside the filter.
    pub matched: usize,
    /// Of those, blocked now.
    pub blocked: usize,
    /// The most recent of those.
    pub rows: Vec<(Addr, BlockInfo)>,
    /// The tracked networks inside the filter (catch-and-release of networks).
    pub nets: Vec<(IpNet, BlockInfo)>,
    /// The escalation ladder.
    pub intervals: Option<Intervals>,
    /// The latest log records, newest first.
    pub recent: Vec<CatchReleaseRecord>,
    /// The captures.
    pub captures: Vec<Capture>,
    /// Log lines so far, by action name.
    pub actions: Vec<(&'static str, u64)>,
    /// The registry source of catch-and-release's blocks.
    pub source: String,
}

fn epoch(t: Time) -> f64 {
    t.as_secs_f64()
}

/// A countdown: the remaining time (ticked by the script) over the date.
/// Time left until `until` (counted down by the script), with the time itself.
fn countdown(until: Time, now: Time) -> Markup {
    let left = (until - now).as_micros().div_euclid(1_000_000);
    html! {
        span.left data-until=(format!("{:.3}", epoch(until))) { (Left(left)) }
        br;
        span.muted.small { (time_tag(until)) }
    }
}

fn secs(i: Interval) -> i64 {
    i.as_micros() / 1_000_000
}

/// Blocks added per hour over the last 24 hours (all sources, and catch-and-release's),
/// oldest hour first.
fn hourly(s: &WebState, source: &str, now: Time) -> [(u32, u32); 24] {
    let mut bars = [(0u32, 0u32); 24];
    let hour = 3_600_000_000i64;
    let end = (now.as_micros().div_euclid(hour) + 1) * hour;
    let start = end - 24 * hour;
    s.api.read(|reg| {
        for b in reg.blocks().rev() {
            let t = b.added.as_micros();
            if t < start {
                break;
            }
            if t >= end {
                continue;
            }
            let i = ((t - start) / hour) as usize;
            bars[i].0 += 1;
            if *b.source == *source {
                bars[i].1 += 1;
            }
        }
    });
    bars
}

/// The chart: one bar per hour, catch-and-release's part darker. Plain SVG and HTML, so
/// it needs no script; the labels are HTML so that they keep their size on any screen.
/// Blocks per hour over the last 24 hours: all sources, and catch-and-release's.
fn chart(bars: &[(u32, u32); 24], now: Time) -> Markup {
    let max = bars.iter().map(|b| b.0).max().unwrap_or(0).max(1);
    let (w, h) = (240.0f64, 100.0f64);
    let bw = w / 24.0;
    let total: u32 = bars.iter().map(|b| b.0).sum();
    let ours: u32 = bars.iter().map(|b| b.1).sum();
    let hour = 3_600_000_000i64;
    let first = (now.as_micros().div_euclid(hour) - 23) * hour;
    let f2 = |v: f64| format!("{v:.2}");
    html! {
        figure.chart {
            div.ymax.muted.small { (max) " per hour" }
            svg viewBox={ "0 0 " (w) " " (h) } preserveAspectRatio="none" role="img"
                aria-label={ "Blocks per hour over the last 24 hours: " (total)
                    " in all, " (ours) " by catch and release" } {
                @for (i, (all, cr)) in bars.iter().enumerate() {
                    @let x = i as f64 * bw;
                    @let ha = f64::from(*all) / f64::from(max) * h;
                    @let hc = f64::from(*cr) / f64::from(max) * h;
                    @let from = Time::from_micros(first + i as i64 * hour);
                    g {
                        title { (Date(from)) ": " (all) " blocks, " (cr) " by catch and release" }
                        rect.all x=(f2(x + 0.5)) y=(f2(h - ha)) width=(f2(bw - 1.0)) height=(f2(ha)) {}
                        rect.cr x=(f2(x + 0.5)) y=(f2(h - hc)) width=(f2(bw - 1.0)) height=(f2(hc)) {}
                    }
                }
            }
            div.axis.muted.small {
                @for i in [0i64, 6, 12, 18, 23] {
                    span { (format!("{:02}:00", (first / hour + i).rem_euclid(24))) }
                }
            }
            figcaption {
                "Blocks per hour, last 24 hours (UTC): " span.key.all {} " all sources "
                span.key.cr {} " catch and release. " (total) " in all, " (ours)
                " by catch and release."
            }
        }
    }
}

fn live_html(s: &WebState, o: &Overview, filter: &str, now: Time) -> Markup {
    html! {
        span hidden data-now=(format!("{:.3}", epoch(now))) {}
        dl.counts {
            div { dt { "Watched" } dd { (o.watched) } }
            div { dt { "Blocked now" } dd { (o.blocked) } }
            @for (name, label) in [("DROPPED", "Dropped"), ("FORGOTTEN", "Forgotten"), ("SEEN_AGAIN", "Seen again")] {
                @if let Some((_, n)) = o.actions.iter().find(|(a, _)| *a == name) {
                    div { dt { (label) } dd { (n) } }
                }
            }
        }
        h2 { "Capture" }
        (captures(&o.captures))
        (chart(&hourly(s, &o.source, now), now))
        h2 { "Watched addresses" }
        @if !filter.is_empty() {
            p { (o.matched) " of " (o.watched) " inside " q { (filter) } ". " a href="/cr/" { "Show all" } }
        }
        @if o.matched > o.rows.len() {
            p.muted { "Showing the " (o.rows.len()) " most recent of " (o.matched) "." }
        }
        (watched(o, now))
        @if !o.nets.is_empty() {
            h2 { "Watched networks " span.muted.small { "netcontrol_catch_release_net.log" } }
            (watched_nets(&o.nets, now))
        }
        h2 { "Latest log lines " span.muted.small { "netcontrol_catch_release.log" } }
        (log_lines(&o.recent))
    }
}

/// The capture threads' counters.
fn captures(captures: &[Capture]) -> Markup {
    let bad = |n: u64| if n > 0 { "num bad" } else { "num" };
    html! {
        @if captures.is_empty() {
            p.empty { "No interfaces are captured (start with " code { "--interface" } ")." }
        } @else {
            div.scroll { table.capture.cards {
                thead { tr {
                    th { "Interface" } th { "State" } th.num { "Packets/s" } th.num { "Packets" }
                    th.num { "Kernel drops" } th.num { "Interface drops" } th.num { "Sightings" }
                    th.num { "Sightings lost" } th.num { "Unreadable" }
                } }
                tbody {
                    @for c in captures {
                        tr {
                            td data-label="Interface" { (c.interface) }
                            td class=(if c.up { "ok" } else { "bad" }) data-label="State" {
                                (if c.up { "capturing" } else { "stopped" })
                            }
                            td.num data-label="Packets/s" { (c.rate) }
                            td.num data-label="Packets" { (c.packets) }
                            td class=(bad(c.kernel_dropped)) data-label="Kernel drops" { (c.kernel_dropped) }
                            td class=(bad(c.if_dropped)) data-label="Interface drops" { (c.if_dropped) }
                            td.num data-label="Sightings" { (c.sightings) }
                            td class=(bad(c.channel_drops)) data-label="Sightings lost" { (c.channel_drops) }
                            td.num data-label="Unreadable" { (c.skipped) }
                        }
                    }
                }
            } }
        }
    }
}

/// The watched addresses, with their step and countdowns.
fn watched(o: &Overview, now: Time) -> Markup {
    let steps = o.intervals.as_ref().map_or(0, Intervals::len);
    html! {
        @if o.rows.is_empty() {
            p.empty { "No addresses are watched." }
        } @else {
            div.scroll { table.watched.cards {
                thead { tr {
                    th { "Address" } th { "Step" } th { "State" } th { "Blocked until" }
                    th { "Watched until" } th.num { "Re-blocks" } th { "Location" }
                } }
                tbody {
                    @for (a, i) in &o.rows {
                        @let blocked = i.block_until.is_some_and(|u| u > now);
                        @let state = if blocked { "blocked" } else { "watching" };
                        @let addr = a.to_string();
                        tr class=(state) {
                            td.cidr data-label="Address" {
                                a href={ "/bhr/query?query=" (Url(&addr)) } { (addr) }
                            }
                            td data-label="Step" {
                                (i.current_interval + 1) " of " (steps)
                                @if let Some(iv) = &o.intervals {
                                    br;
                                    span.muted.small { "block " (Span(secs(iv.block(i.current_interval)))) }
                                }
                            }
                            td data-label="State" { (state) }
                            td data-label="Blocked until" {
                                @match i.block_until {
                                    Some(u) if u > now => (countdown(u, now)),
                                    Some(u) => {
                                        span.muted { "ended" } br;
                                        span.muted.small { (time_tag(u)) }
                                    }
                                    None => span.muted { "not by catchd" },
                                }
                            }
                            td data-label="Watched until" { (countdown(i.watch_until, now)) }
                            td.num data-label="Re-blocks" { (i.num_reblocked) }
                            td.why data-label="Location" { (i.location.as_deref().unwrap_or("")) }
                        }
                    }
                }
            } }
        }
    }
}

/// The networks catch-and-release of networks tracks.
fn watched_nets(nets: &[(IpNet, BlockInfo)], now: Time) -> Markup {
    html! {
        div.scroll { table.watched.nets.cards {
            thead { tr {
                th { "Network" } th { "Step" } th { "State" } th { "Blocked until" }
                th { "Watched until" } th.num { "Re-blocks" } th { "Location" }
            } }
            tbody {
                @for (n, i) in nets {
                    @let blocked = i.block_until.is_some_and(|u| u > now);
                    @let state = if blocked { "blocked" } else { "watching" };
                    @let net = n.to_string();
                    tr class=(state) {
                        td.cidr data-label="Network" {
                            a href={ "/bhr/query?query=" (Url(&net)) } { (net) }
                        }
                        td data-label="Step" { (i.current_interval + 1) }
                        td data-label="State" { (state) }
                        td data-label="Blocked until" {
                            @match i.block_until {
                                Some(u) if u > now => (countdown(u, now)),
                                Some(u) => { span.muted { "ended" } br; span.muted.small { (time_tag(u)) } }
                                None => span.muted { "not by catchd" },
                            }
                        }
                        td data-label="Watched until" { (countdown(i.watch_until, now)) }
                        td.num data-label="Re-blocks" { (i.num_reblocked) }
                        td.why data-label="Location" { (i.location.as_deref().unwrap_or("")) }
                    }
                }
            }
        } }
    }
}

/// The latest catch-and-release log records.
fn log_lines(recent: &[CatchReleaseRecord]) -> Markup {
    html! {
        @if recent.is_empty() {
            p.empty { "Nothing logged since catchd started." }
        } @else {
            div.scroll { table.log.cards {
                thead { tr {
                    th { "Time" } th { "Address" } th { "Action" } th { "Block" } th { "Watch" }
                    th { "Blocked until" } th { "Watched until" } th.num { "Blocks" }
                    th { "Location" } th { "Message" }
                } }
                tbody {
                    @for r in recent {
                        @let action = r.action.as_str().trim_start_matches("NetControl::");
                        tr {
                            td data-label="Time" { (short_time(r.ts)) }
                            td.cidr data-label="Address" { (r.ip) }
                            td data-label="Action" {
                                span class={ "action " (action.to_ascii_lowercase()) } { (action) }
                            }
                            td data-label="Block" { (Span(secs(r.block_interval))) }
                            td data-label="Watch" { (Span(secs(r.watch_interval))) }
                            td data-label="Blocked until" {
                                @if let Some(t) = r.blocked_until { (short_time(t)) }
                            }
                            td data-label="Watched until" { (short_time(r.watched_until)) }
                            td.num data-label="Blocks" { (r.num_blocked) }
                            td.why data-label="Location" { (r.location.as_deref().unwrap_or("")) }
                            td.why data-label="Message" { (r.message.as_deref().unwrap_or("")) }
                        }
                    }
                }
            } }
        }
    }
}

/// Reads `?addr=` (an address or network; empty for all).
fn filter_of(q: Option<&str>) -> (String, Result<Option<IpNet>, String>) {
    let f = Form::query(q);
    let text = f.get("addr").unwrap_or("").trim().to_string();
    if text.is_empty() {
        return (text, Ok(None));
    }
    let r = crate::api::bhr::network(&text)
        .map(Some)
        .map_err(|m| format!("{text}: {m}"));
    (text, r)
}

fn overview(s: &WebState, net: Option<&IpNet>, now: Time) -> Overview {
    let Some(cr) = &s.cr else {
        return Overview::default();
    };
    cr.overview(MAX_WATCHED, net, now)
}

/// `GET /cr/[?addr=…]` (signed in).
pub async fn page(
    State(s): State<Arc<WebState>>,
    h: HeaderMap,
    uri: Uri,
    RawQuery(q): RawQuery,
) -> Response {
    let v = match s.operator(&h, &uri, None) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let (text, net) = filter_of(q.as_deref());
    let now = s.api.now();
    let (status, error, net) = match net {
        Ok(n) => (StatusCode::OK, None, n),
        Err(e) => (StatusCode::BAD_REQUEST, Some(e), None),
    };
    let o = overview(&s, net.as_ref(), now);
    let src = if text.is_empty() || error.is_some() {
        "/cr/live".to_string()
    } else {
        format!("/cr/live?addr={}", Url(&text))
    };
    let live = live_html(&s, &o, if error.is_some() { "" } else { &text }, now);
    let body = html! {
        h1 { "Catch and release" }
        form.search method="get" action="/cr/" role="search" {
            label for="addr" { "Address or network" }
            div.row {
                input #addr name="addr" value=(text) maxlength="50" placeholder="192.0.2.0/24";
                button type="submit" { "Filter" }
            }
            @if let Some(e) = &error { p.error { (e) } }
        }
        p #live-status .muted.small aria-live="polite" { "Updated " (Date(now)) }
        div #live data-src=(src) { (live) }
    };
    let head = html! {
        script src="/static/cr.js" defer {}
        noscript { meta http-equiv="refresh" content="30"; }
    };
    html(status, layout_with(&s, &v, "Catch and release", body, head))
}

/// `GET /cr/live[?addr=…]` (signed in): the live part of the page.
pub async fn live(
    State(s): State<Arc<WebState>>,
    h: HeaderMap,
    uri: Uri,
    RawQuery(q): RawQuery,
) -> Response {
    let v = s.visit(&h, &uri);
    if v.user().is_none() {
        return super::error_page(&s, &v, StatusCode::UNAUTHORIZED, "Sign in again.");
    }
    let (text, net) = filter_of(q.as_deref());
    let Ok(net) = net else {
        return super::error_page(&s, &v, StatusCode::BAD_REQUEST, "Bad filter.");
    };
    let now = s.api.now();
    let o = overview(&s, net.as_ref(), now);
    html(StatusCode::OK, live_html(&s, &o, &text, now).into_string())
}
