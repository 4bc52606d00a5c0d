//! The web pages: BHR's public and operator pages (bhr.md §8.5) and the live
//! catch-and-release view, rendered on the server as plain HTML.
//!
//! * Public: `/bhr/` (start page), `/bhr/stats`, and with `unauthenticated_limited_query`
//!   `/bhr/limited/query` and `/bhr/limited/list`.
//! * Signed in (`/accounts/login/`; a session cookie): `/bhr/query`, `/bhr/list`,
//!   `/bhr/list/source/<source>`, `/bhr/add`, `/bhr/unblock` → `/bhr/do_unblock`, and in
//!   `catchd run` `/cr/`.
//!
//! Every form carries a CSRF token (the session's; before sign-in, a cookie's) and a POST
//! from another origin is refused. Everything shown is escaped (maud templates escape by default); pages send
//! a Content-Security-Policy that allows no inline script, so text that slipped through
//! could not run anyway. Pages work without JavaScript: the one script (`/static/cr.js`)
//! only ticks countdowns and refreshes the catch-and-release page in place (without it,
//! that page reloads itself every 30 s).

pub mod cr;
mod dns;
pub(crate) mod html;
mod pages;
pub(crate) mod session;

use std::fmt::Write as _;
use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::api::bhr::AppState;
use crate::auth::{Perm, User};

pub use cr::{CatchRelease, Overview};
use maud::{DOCTYPE, Markup};
use session::{COOKIE, Session, Sessions};

/// What the pages need.
pub struct WebState {
    api: Arc<AppState>,
    sessions: Arc<Sessions>,
    dns: dns::Resolver,
    cr: Option<Arc<dyn CatchRelease>>,
    /// `unauthenticated_limited_query`, read once (as the routes are).
    limited: bool,
}

/// The user of a session, if they still exist and may still sign in (a user removed, or
/// whose password was taken away, by `catchd user` is signed out).
fn session_user(
    users: &crate::api::bhr::Users,
    id: crate::bhr::model::UserId,
) -> Option<Arc<User>> {
    let u = users.get(id)?;
    u.password_hash.as_ref()?;
    Some(u)
}

/// The form field carrying the CSRF token (Django's name).
pub(crate) const CSRF_FIELD: &str = "csrfmiddlewaretoken";

/// The hidden field with a form's CSRF token.
pub(crate) fn csrf_input(token: &str) -> Markup {
    maud::html! { input type="hidden" name=(CSRF_FIELD) value=(token); }
}

/// The pages, over the BHR API's state; `cr` adds the catch-and-release page (the daemon).
pub fn router(api: Arc<AppState>, cr: Option<Arc<dyn CatchRelease>>) -> Router {
    let limited = api.read(|r| r.settings().unauthenticated_limited_query);
    let sessions = Arc::new(Sessions::default());
    {
        let sessions = sessions.clone();
        let weak = Arc::downgrade(&api);
        api.set_session_lookup(Box::new(move |h| {
            let id = sessions.user(cookie(h, COOKIE)?)?;
            session_user(weak.upgrade()?.users(), id)
        }));
    }
    let state = Arc::new(WebState {
        api,
        sessions,
        dns: dns::Resolver::default(),
        cr: cr.clone(),
        limited,
    });
    use pages as p;
    let mut r = Router::new()
        .route("/bhr/", get(p::index))
        .route("/bhr/stats", get(p::stats))
        .route("/bhr/query", get(p::query))
        .route("/bhr/list", get(p::list))
        .route("/bhr/list/source/{source}", get(p::list_source))
        .route("/bhr/add", get(p::add_form).post(p::add))
        .route(
            "/bhr/unblock",
            get(p::unblock_form).post(p::unblock_form_post),
        )
        .route("/bhr/do_unblock", axum::routing::post(p::do_unblock))
        .route("/bhr/login", get(p::login_redirect))
        .route("/accounts/login/", get(p::login_form).post(p::login))
        .route("/accounts/logout/", get(p::logout_form).post(p::logout))
        .route("/static/catchd.css", get(p::css))
        .route("/static/cr.js", get(p::script));
    if limited {
        r = r
            .route("/bhr/limited/query", get(p::limited_query))
            .route("/bhr/limited/list", get(p::limited_list));
    }
    if cr.is_some() {
        r = r
            .route("/cr", get(p::cr_slash))
            .route("/cr/", get(cr::page))
            .route("/cr/live", get(cr::live));
    }
    r.layer(axum::middleware::from_fn(crate::api::bhr::client_scope))
        .with_state(state)
}

/// Who is looking at a page.
pub(crate) struct Visit {
    /// The signed-in user and their session, with the cookie.
    pub signed_in: Option<(Arc<User>, Session, String)>,
    /// Whether the browser came over HTTPS (a TLS-terminating proxy said so).
    pub https: bool,
    /// The path and query, to come back to after sign-in.
    pub here: String,
}

impl Visit {
    pub fn user(&self) -> Option<&Arc<User>> {
        self.signed_in.as_ref().map(|(u, _, _)| u)
    }

    pub fn may(&self, p: Perm) -> bool {
        self.user().is_some_and(|u| u.role.may(p))
    }

    pub fn csrf(&self) -> &str {
        self.signed_in
            .as_ref()
            .map_or("", |(_, s, _)| s.csrf.as_str())
    }
}

/// A cookie's value from the request.
pub(crate) fn cookie<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

impl WebState {
    pub(crate) fn visit(&self, h: &HeaderMap, here: &axum::http::Uri) -> Visit {
        let signed_in = cookie(h, COOKIE).and_then(|c| {
            let s = self.sessions.get(c)?;
            let u = session_user(self.api.users(), s.user)?;
            Some((u, s, c.to_string()))
        });
        Visit {
            signed_in,
            https: crate::api::bhr::forwarded_https(h),
            here: here
                .path_and_query()
                .map_or_else(|| here.path().to_string(), |p| p.as_str().to_string()),
        }
    }

    /// The visit of a signed-in user who has permission `perm` (if given); otherwise the
    /// answer: to the sign-in page, or 403.
    pub(crate) fn operator(
        &self,
        h: &HeaderMap,
        here: &axum::http::Uri,
        perm: Option<Perm>,
    ) -> Result<Visit, Box<Response>> {
        let v = self.visit(h, here);
        if v.user().is_none() {
            return Err(Box::new(to_login(&v)));
        }
        if perm.is_some_and(|p| !v.may(p)) {
            return Err(Box::new(error_page(
                self,
                &v,
                StatusCode::FORBIDDEN,
                "You do not have permission to perform this action.",
            )));
        }
        Ok(v)
    }
}

/// Headers every page carries.
fn secure_headers(r: &mut Response) {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// An HTML answer.
pub(crate) fn html(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure_headers(&mut r);
    r
}

/// A redirect: 302 for GETs, 303 after a form.
pub(crate) fn redirect(status: StatusCode, to: &str) -> Response {
    let mut r = status.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    secure_headers(&mut r);
    r
}

/// To the sign-in page, coming back here afterwards.
pub(crate) fn to_login(v: &Visit) -> Response {
    redirect(
        StatusCode::FOUND,
        &format!("/accounts/login/?next={}", html::Url(&v.here)),
    )
}

/// A `Set-Cookie` value.
pub(crate) fn set_cookie(
    name: &str,
    value: &str,
    path: &str,
    https: bool,
    max_age: Option<u32>,
) -> HeaderValue {
    let mut c = format!("{name}={value}; Path={path}; HttpOnly; SameSite=Lax");
    if https {
        c.push_str("; Secure");
    }
    if let Some(a) = max_age {
        let _ = write!(c, "; Max-Age={a}");
    }
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// One navigation link.
fn nav_link(href: &str, text: &str, here: &str) -> Markup {
    let current = here == href || (href != "/bhr/" && here.starts_with(href));
    maud::html! { a href=(href) aria-current=[current.then_some("page")] { (text) } }
}

/// The page around `body`: header, navigation, the flash message.
pub(crate) fn layout(s: &WebState, v: &Visit, title: &str, body: Markup) -> String {
    layout_with(s, v, title, body, maud::html! {})
}

/// [`layout`] with extra elements for `<head>`.
pub(crate) fn layout_with(
    s: &WebState,
    v: &Visit,
    title: &str,
    body: Markup,
    head: Markup,
) -> String {
    let path = v.here.split('?').next().unwrap_or("");
    let signed_in = v.user().is_some();
    let flash = v
        .signed_in
        .as_ref()
        .and_then(|(_, s, _)| s.flash.as_deref());
    let page = maud::html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · catchd" }
                link rel="stylesheet" href="/static/catchd.css";
                (head)
            }
            body {
                header {
                    a.brand href="/bhr/" { "catchd" }
                    nav {
                        (nav_link("/bhr/", "Home", path))
                        @if signed_in {
                            (nav_link("/bhr/query", "Query", path))
                            (nav_link("/bhr/list", "List", path))
                            @if v.may(Perm::AddBlock) { (nav_link("/bhr/add", "Add", path)) }
                        } @else if s.limited {
                            (nav_link("/bhr/limited/query", "Query", path))
                            (nav_link("/bhr/limited/list", "List", path))
                        }
                        (nav_link("/bhr/stats", "Stats", path))
                        @if s.cr.is_some() && signed_in {
                            (nav_link("/cr/", "Catch & release", path))
                        }
                    }
                    @match &v.signed_in {
                        Some((u, sess, _)) => {
                            form.account method="post" action="/accounts/logout/" {
                                span.who { (u.name) }
                                (csrf_input(&sess.csrf))
                                button.link type="submit" { "Sign out" }
                            }
                        }
                        None if path.starts_with("/accounts/") => {}
                        None => {
                            a.account href={ "/accounts/login/?next=" (html::Url(&v.here)) } {
                                "Sign in"
                            }
                        }
                    }
                }
                main {
                    @if let Some(m) = flash { p.flash role="status" { (m) } }
                    (body)
                }
                footer { "catchd " (env!("CARGO_PKG_VERSION")) " · times in UTC" }
            }
        }
    };
    let mut out = page.into_string();
    out.push('\n');
    out
}

/// An error page.
pub(crate) fn error_page(s: &WebState, v: &Visit, status: StatusCode, msg: &str) -> Response {
    let title = status.canonical_reason().unwrap_or("Error");
    let body = maud::html! { h1 { (title) } p.error { (msg) } };
    html(status, layout(s, v, title, body))
}
