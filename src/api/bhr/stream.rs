//! Long listings, streamed: a JSON array or CSV rendered a page at a time as the client
//! reads it, never whole.
//!
//! Each page takes the registry lock (moved to now first), renders the rows after the
//! cursor until the page is full, and lets go; the body asks for the next page only when
//! hyper has room to send it, so a client that reads slowly holds one page, not the
//! listing (and the connection layer cuts off one that stops reading). The cursor is the
//! key of the last row read, which never changes for a row: a listing read across
//! changes never shows a row twice.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;

use super::AppState;
use crate::bhr::registry::Registry;

/// Rows looked at per page at most (also when a filter keeps few of them).
const PAGE_ROWS: usize = 512;

/// Bytes per page, about.
const PAGE_BYTES: usize = 64 * 1024;

/// One page being rendered.
pub struct Page<K> {
    buf: Vec<u8>,
    /// Rows written so far in the whole listing (for separators).
    written: u64,
    /// Rows looked at on this page.
    looked: usize,
    /// The key of the last row looked at.
    last: Option<K>,
}

impl<K> Page<K> {
    /// Whether the page has room for another row (call before looking at one).
    pub fn room(&self) -> bool {
        self.looked < PAGE_ROWS && self.buf.len() < PAGE_BYTES
    }

    /// Notes a row looked at (written or filtered out).
    pub fn looked(&mut self, key: K) {
        self.looked += 1;
        self.last = Some(key);
    }

    /// Looks at rows while the page has room: each is noted by its key, and `write` may
    /// write it (or leave it out).
    pub fn fill<'r, T: 'r>(
        &mut self,
        rows: impl Iterator<Item = &'r T>,
        key: impl Fn(&T) -> K,
        mut write: impl FnMut(&mut Self, &T),
    ) {
        for r in rows {
            if !self.room() {
                break;
            }
            self.looked(key(r));
            write(self, r);
        }
    }

    /// Writes a JSON row.
    pub fn json(&mut self, row: &impl serde::Serialize) {
        if self.written > 0 {
            self.buf.push(b',');
        }
        if let Err(e) = serde_json::to_writer(&mut self.buf, row) {
            tracing::error!(error = %e, "Cannot serialise a row.");
            self.buf.extend_from_slice(b"null");
        }
        self.written += 1;
    }

    /// Writes a CSV line.
    pub fn csv(&mut self, cells: &[super::output::Cell<'_>]) {
        let mut line = String::with_capacity(128);
        super::output::csv_row(&mut line, cells);
        self.buf.extend_from_slice(line.as_bytes());
        self.written += 1;
    }
}

/// What a page function is given: the registry, and the key of the last row read.
pub type PageFn<K> = Box<dyn FnMut(&Registry, Option<&K>, &mut Page<K>) + Send>;

/// A page function that reads something else than the registry.
pub type AnyPageFn<K> = Box<dyn FnMut(Option<&K>, &mut Page<K>) + Send>;

struct Cursor<K> {
    page: AnyPageFn<K>,
    last: Option<K>,
    written: u64,
    head: Option<Vec<u8>>,
    tail: Option<&'static [u8]>,
}

/// A streamed listing: `head`, then the rows `page` renders after each cursor, then
/// `tail`. A page that looks at no row ends the listing.
fn stream<K: Send + 'static>(head: Vec<u8>, tail: &'static [u8], page: AnyPageFn<K>) -> Body {
    let cursor = Cursor {
        page,
        last: None,
        written: 0,
        head: Some(head),
        tail: Some(tail),
    };
    let s = futures_util::stream::unfold(cursor, |mut c| async move {
        if let Some(h) = c.head.take() {
            return Some((Ok::<_, std::convert::Infallible>(Bytes::from(h)), c));
        }
        let tail = c.tail?;
        let mut p = Page {
            buf: Vec::with_capacity(PAGE_BYTES + 4096),
            written: c.written,
            looked: 0,
            last: None,
        };
        let prev = c.last.take();
        (c.page)(prev.as_ref(), &mut p);
        c.written = p.written;
        if p.looked == 0 {
            c.tail = None;
            return Some((Ok(Bytes::from_static(tail)), c));
        }
        c.last = p.last;
        // Let other requests in between pages.
        tokio::task::yield_now().await;
        Some((Ok(Bytes::from(p.buf)), c))
    });
    Body::from_stream(s)
}

fn respond(body: Body, ctype: &'static str) -> Response {
    let mut r = Response::new(body);
    *r.status_mut() = StatusCode::OK;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    r
}

/// Each page under the registry lock, the registry moved to now first.
fn on_registry<K: Send + 'static>(state: Arc<AppState>, mut page: PageFn<K>) -> AnyPageFn<K> {
    Box::new(move |after, p| state.read(|reg| page(reg, after, p)))
}

/// A JSON array of registry rows, streamed.
pub fn json_array<K: Send + 'static>(state: Arc<AppState>, page: PageFn<K>) -> Response {
    json_pages(on_registry(state, page))
}

/// A JSON array of rows from anywhere, streamed.
pub fn json_pages<K: Send + 'static>(page: AnyPageFn<K>) -> Response {
    respond(stream(b"[".to_vec(), b"]", page), "application/json")
}

/// CSV with a header line, streamed.
pub fn csv(
    state: Arc<AppState>,
    header_line: &[super::output::Cell<'_>],
    ctype: &'static str,
    page: PageFn<impl Send + 'static>,
) -> Response {
    let mut head = String::new();
    super::output::csv_row(&mut head, header_line);
    respond(
        stream(head.into_bytes(), b"", on_registry(state, page)),
        ctype,
    )
}
