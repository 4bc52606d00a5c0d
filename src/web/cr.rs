//! The catch-and-release page, `/cr/`: every watched address (the most recent first) with
//! its step and countdowns, the latest log lines, the capture counters, and a chart of
//! blocks per hour. `/cr/live` is the same content without the page around it, which the
//! script swaps in every few seconds.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use ipnet::IpNet;

use crate::addr::Addr;
use crate::cnr::{BlockInfo, CatchReleaseRecord, Intervals};
use crate::time::{Interval, Time};

use super::html::{Esc, Left, Short, Span, TimeTag, Url};
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
fn countdown(out: &mut String, until: Time, now: Time) {
    let left = (until - now).as_micros().div_euclid(1_000_000);
    let _ = write!(
        out,
        "<span class=\"left\" data-until=\"{:.3}\">{}</span><br><span class=\"muted small\">{}</span>",
        epoch(until),
        Left(left),
        TimeTag(until)
    );
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
fn chart(out: &mut String, bars: &[(u32, u32); 24], now: Time) {
    let max = bars.iter().map(|b| b.0).max().unwrap_or(0).max(1);
    let (w, h) = (240.0f64, 100.0f64);
    let bw = w / 24.0;
    let total: u32 = bars.iter().map(|b| b.0).sum();
    let ours: u32 = bars.iter().map(|b| b.1).sum();
    let _ = write!(
        out,
        "<figure class=\"chart\"><div class=\"ymax muted small\">{max} per hour</div>\
         <svg viewBox=\"0 0 {w} {h}\" preserveAspectRatio=\"none\" role=\"img\" \
         aria-label=\"Blocks per hour over the last 24 hours: {total} in all, {ours} by catch and release\">"
    );
    let hour = 3_600_000_000i64;
    let first = (now.as_micros().div_euclid(hour) - 23) * hour;
    for (i, (all, cr)) in bars.iter().enumerate() {
        let x = i as f64 * bw;
        let ha = f64::from(*all) / f64::from(max) * h;
        let hc = f64::from(*cr) / f64::from(max) * h;
        let from = Time::from_micros(first + i as i64 * hour);
        let _ = write!(
            out,
            "<g><title>{}: {all} blocks, {cr} by catch and release</title>\
             <rect class=\"all\" x=\"{:.2}\" y=\"{:.2}\" width=\"{:.2}\" height=\"{:.2}\"/>\
             <rect class=\"cr\" x=\"{:.2}\" y=\"{:.2}\" width=\"{:.2}\" height=\"{:.2}\"/></g>",
            super::html::Date(from),
            x + 0.5,
            h - ha,
            bw - 1.0,
            ha,
            x + 0.5,
            h - hc,
            bw - 1.0,
            hc
        );
    }
    out.push_str("</svg><div class=\"axis muted small\">");
    for i in [0usize, 6, 12, 18, 23] {
        let hh = (first / hour + i as i64).rem_euclid(24);
        let _ = write!(out, "<span>{hh:02}:00</span>");
    }
    let _ = write!(
        out,
        "</div><figcaption>Blocks per hour, last 24 hours (UTC): <span class=\"key all\"></span> all sources \
         <span class=\"key cr\"></span> catch and release. {total} in all, {ours} by catch and release.</figcaption></figure>"
    );
}

fn live_html(s: &WebState, o: &Overview, filter: &str, now: Time) -> String {
    let mut out = String::with_capacity(16 * 1024 + o.rows.len() * 600);
    let _ = write!(
        out,
        "<span hidden data-now=\"{:.3}\"></span><dl class=\"counts\"><div><dt>Watched</dt><dd>{}</dd></div>\
         <div><dt>Blocked now</dt><dd>{}</dd></div>",
        epoch(now),
        o.watched,
        o.blocked
    );
    for (name, label) in [
        ("DROPPED", "Dropped"),
        ("FORGOTTEN", "Forgotten"),
        ("SEEN_AGAIN", "Seen again"),
    ] {
        if let Some((_, n)) = o.actions.iter().find(|(a, _)| *a == name) {
            let _ = write!(out, "<div><dt>{label}</dt><dd>{n}</dd></div>");
        }
    }
    out.push_str("</dl>");

    // Capture.
    out.push_str("<h2>Capture</h2>");
    if o.captures.is_empty() {
        out.push_str("<p class=\"empty\">No interfaces are captured (start with <code>--interface</code>).</p>");
    } else {
        out.push_str("<div class=\"scroll\"><table class=\"capture cards\"><thead><tr><th>Interface</th><th>State</th>\
            <th class=\"num\">Packets/s</th><th class=\"num\">Packets</th><th class=\"num\">Kernel drops</th>\
            <th class=\"num\">Interface drops</th><th class=\"num\">Sightings</th><th class=\"num\">Sightings lost</th>\
            <th class=\"num\">Unreadable</th></tr></thead><tbody>");
        for c in &o.captures {
            let _ = write!(
                out,
                "<tr><td data-label=\"Interface\">{}</td><td class=\"{}\" data-label=\"State\">{}</td>\
                 <td class=\"num\" data-label=\"Packets/s\">{}</td><td class=\"num\" data-label=\"Packets\">{}</td>\
                 <td class=\"num{}\" data-label=\"Kernel drops\">{}</td><td class=\"num{}\" data-label=\"Interface drops\">{}</td>\
                 <td class=\"num\" data-label=\"Sightings\">{}</td><td class=\"num{}\" data-label=\"Sightings lost\">{}</td>\
                 <td class=\"num\" data-label=\"Unreadable\">{}</td></tr>",
                Esc(&c.interface),
                if c.up { "ok" } else { "bad" },
                if c.up { "capturing" } else { "stopped" },
                c.rate,
                c.packets,
                if c.kernel_dropped > 0 { " bad" } else { "" },
                c.kernel_dropped,
                if c.if_dropped > 0 { " bad" } else { "" },
                c.if_dropped,
                c.sightings,
                if c.channel_drops > 0 { " bad" } else { "" },
                c.channel_drops,
                c.skipped
            );
        }
        out.push_str("</tbody></table></div>");
    }

    chart(&mut out, &hourly(s, &o.source, now), now);

    // Watched addresses.
    let _ = write!(out, "<h2>Watched addresses</h2>");
    if !filter.is_empty() {
        let _ = write!(
            out,
            "<p>{} of {} inside <q>{}</q>. <a href=\"/cr/\">Show all</a></p>",
            o.matched,
            o.watched,
            Esc(filter)
        );
    }
    if o.matched > o.rows.len() {
        let _ = write!(
            out,
            "<p class=\"muted\">Showing the {} most recent of {}.</p>",
            o.rows.len(),
            o.matched
        );
    }
    if o.rows.is_empty() {
        out.push_str("<p class=\"empty\">No addresses are watched.</p>");
    } else {
        let steps = o.intervals.as_ref().map_or(0, Intervals::len);
        out.push_str("<div class=\"scroll\"><table class=\"watched cards\"><thead><tr><th>Address</th><th>Step</th>\
            <th>State</th><th>Blocked until</th><th>Watched until</th><th class=\"num\">Re-blocks</th>\
            <th>Location</th></tr></thead><tbody>");
        for (a, i) in &o.rows {
            let blocked = i.block_until.is_some_and(|u| u > now);
            let addr = a.to_string();
            let _ = write!(
                out,
                "<tr class=\"{}\"><td class=\"cidr\" data-label=\"Address\"><a href=\"/bhr/query?query={}\">{}</a></td><td data-label=\"Step\">{} of {steps}",
                if blocked { "blocked" } else { "watching" },
                Url(&addr),
                Esc(&addr),
                i.current_interval + 1
            );
            if let Some(iv) = &o.intervals {
                let _ = write!(
                    out,
                    "<br><span class=\"muted small\">block {}</span>",
                    Span(secs(iv.block(i.current_interval)))
                );
            }
            let _ = write!(
                out,
                "</td><td data-label=\"State\">{}</td><td data-label=\"Blocked until\">",
                if blocked { "blocked" } else { "watching" }
            );
            match i.block_until {
                Some(u) if u > now => countdown(&mut out, u, now),
                Some(u) => {
                    let _ = write!(
                        out,
                        "<span class=\"muted\">ended</span><br><span class=\"muted small\">{}</span>",
                        TimeTag(u)
                    );
                }
                None => out.push_str("<span class=\"muted\">not by catchd</span>"),
            }
            out.push_str("</td><td data-label=\"Watched until\">");
            countdown(&mut out, i.watch_until, now);
            let _ = write!(
                out,
                "</td><td class=\"num\" data-label=\"Re-blocks\">{}</td><td class=\"why\" data-label=\"Location\">{}</td></tr>",
                i.num_reblocked,
                Esc(i.location.as_deref().unwrap_or(""))
            );
        }
        out.push_str("</tbody></table></div>");
    }

    // Log lines.
    out.push_str(
        "<h2>Latest log lines <span class=\"muted small\">netcontrol_catch_release.log</span></h2>",
    );
    if o.recent.is_empty() {
        out.push_str("<p class=\"empty\">Nothing logged since catchd started.</p>");
    } else {
        out.push_str("<div class=\"scroll\"><table class=\"log cards\"><thead><tr><th>Time</th><th>Address</th><th>Action</th>\
            <th>Block</th><th>Watch</th><th>Blocked until</th><th>Watched until</th><th class=\"num\">Blocks</th>\
            <th>Location</th><th>Message</th></tr></thead><tbody>");
        for r in &o.recent {
            let action = r.action.as_str().trim_start_matches("NetControl::");
            let _ = write!(
                out,
                "<tr><td data-label=\"Time\">{}</td><td class=\"cidr\" data-label=\"Address\">{}</td><td data-label=\"Action\"><span class=\"action {}\">{}</span></td>\
                 <td data-label=\"Block\">{}</td><td data-label=\"Watch\">{}</td><td data-label=\"Blocked until\">{}</td><td data-label=\"Watched until\">{}</td>\
                 <td class=\"num\" data-label=\"Blocks\">{}</td><td class=\"why\" data-label=\"Location\">{}</td><td class=\"why\" data-label=\"Message\">{}</td></tr>",
                Short(r.ts),
                Esc(&r.ip.to_string()),
                action.to_ascii_lowercase(),
                action,
                Span(secs(r.block_interval)),
                Span(secs(r.watch_interval)),
                r.blocked_until
                    .map_or_else(String::new, |t| Short(t).to_string()),
                Short(r.watched_until),
                r.num_blocked,
                Esc(r.location.as_deref().unwrap_or("")),
                Esc(r.message.as_deref().unwrap_or(""))
            );
        }
        out.push_str("</tbody></table></div>");
    }
    out
}

/// Reads `?addr=` (an address or network; empty for all).
fn filter_of(q: Option<&str>) -> (String, Result<Option<IpNet>, String>) {
    let f = Form::query(q);
    let text = f.get("addr").unwrap_or("").trim().to_string();
    if text.is_empty() {
        return (text, Ok(None));
    }
    let r = crate::bhr::api::network(&text)
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
    let mut body = String::from("<h1>Catch and release</h1>");
    let _ = write!(
        body,
        "<form class=\"search\" method=\"get\" action=\"/cr/\" role=\"search\"><label for=\"addr\">Address or network</label>\
         <div class=\"row\"><input id=\"addr\" name=\"addr\" value=\"{}\" maxlength=\"50\" placeholder=\"192.0.2.0/24\">\
         <button type=\"submit\">Filter</button></div>",
        Esc(&text)
    );
    if let Some(e) = &error {
        let _ = write!(body, "<p class=\"error\">{}</p>", Esc(e));
    }
    let src = if text.is_empty() || error.is_some() {
        "/cr/live".to_string()
    } else {
        format!("/cr/live?addr={}", Url(&text))
    };
    let _ = write!(
        body,
        "</form><p id=\"live-status\" class=\"muted small\" aria-live=\"polite\">Updated {}</p>\
         <div id=\"live\" data-src=\"{}\">{}</div>",
        super::html::Date(now),
        Esc(&src),
        live_html(&s, &o, if error.is_some() { "" } else { &text }, now)
    );
    let head = "<script src=\"/static/cr.js\" defer></script>\
                <noscript><meta http-equiv=\"refresh\" content=\"30\"></noscript>";
    html(
        status,
        layout_with(&s, &v, "Catch and release", &body, head),
    )
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
    html(StatusCode::OK, live_html(&s, &o, &text, now))
}
