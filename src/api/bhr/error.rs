//! API errors, in Django REST framework's JSON shapes.
//!
//! Clients depend on these shapes: Zeek's BHR integration treats a 400 whose body has
//! `non_field_errors` as "refused, move on" and anything else as fatal.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

/// Field errors in declaration order: `{"field": ["message", …], …}`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldErrors(Vec<(String, Vec<String>)>);

impl FieldErrors {
    /// Adds a message for a field.
    pub fn add(&mut self, field: &str, msg: impl Into<String>) {
        match self.0.iter_mut().find(|(f, _)| f == field) {
            Some((_, msgs)) => msgs.push(msg.into()),
            None => self.0.push((field.to_string(), vec![msg.into()])),
        }
    }

    /// Each field with its messages, in declaration order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.0.iter().map(|(f, m)| (f.as_str(), m.as_slice()))
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The JSON object.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        for (f, msgs) in &self.0 {
            m.insert(
                f.clone(),
                Value::Array(msgs.iter().map(|s| Value::from(s.as_str())).collect()),
            );
        }
        Value::Object(m)
    }

    /// One field's error.
    pub fn one(field: &str, msg: impl Into<String>) -> FieldErrors {
        let mut e = FieldErrors::default();
        e.add(field, msg);
        e
    }
}

/// What went wrong with a request, and whose fault it is.
#[derive(Debug)]
pub enum ApiError {
    /// 400 with field errors.
    Invalid(FieldErrors),
    /// 400 with an arbitrary JSON body (per-item errors of `mblock`).
    InvalidJson(Value),
    /// 400 with `{"detail": …}` (malformed bodies).
    BadRequest(String),
    /// 401 with `{"detail": …}` and `WWW-Authenticate: Token`.
    Unauthenticated(&'static str),
    /// 403.
    Forbidden,
    /// 403 with a reason of its own.
    ForbiddenBecause(&'static str),
    /// 404 `{"detail":"Not found."}`.
    NotFound,
    /// 405 for a method.
    MethodNotAllowed(String),
    /// 415 for a content type.
    UnsupportedMediaType(String),
    /// 503: the store failed and takes no more writes.
    Unavailable,
    /// 503 with `Retry-After: 1`: too much work at once (every password check busy).
    Busy,
    /// 429 with `Retry-After`: too many failed sign-ins; the seconds to wait.
    Throttled(u64),
    /// 500; the cause is logged, not shown.
    Internal(String),
}

/// DRF's message for a request without credentials.
pub const NOT_PROVIDED: &str = "Authentication credentials were not provided.";

/// A JSON response.
pub fn json(status: StatusCode, body: &impl serde::Serialize) -> Response {
    Json::of(body).respond(status)
}

/// JSON text, serialised once (under the registry lock when it borrows from it).
pub struct Json(Vec<u8>);

impl Json {
    /// Serialises a value. Our shapes always serialise; a failure becomes `null` and is
    /// logged rather than a panic in the server.
    pub fn of(v: &impl serde::Serialize) -> Json {
        let mut out = Vec::with_capacity(256);
        if let Err(e) = serde_json::to_writer(&mut out, v) {
            tracing::error!(error = %e, "Cannot serialise a response.");
            out = b"null".to_vec();
        }
        Json(out)
    }

    /// A JSON array of the items.
    pub fn seq<T: serde::Serialize>(items: impl IntoIterator<Item = T>) -> Json {
        Json::of(&items.into_iter().collect::<Vec<T>>())
    }

    /// The response.
    pub fn respond(self, status: StatusCode) -> Response {
        let mut r = (status, self.0).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    }
}

fn detail(status: StatusCode, msg: &str) -> Response {
    json(status, &serde_json::json!({ "detail": msg }))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Invalid(e) => json(StatusCode::BAD_REQUEST, &e.to_json()),
            ApiError::InvalidJson(v) => json(StatusCode::BAD_REQUEST, &v),
            ApiError::BadRequest(m) => detail(StatusCode::BAD_REQUEST, &m),
            ApiError::Unauthenticated(m) => {
                let mut r = detail(StatusCode::UNAUTHORIZED, m);
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Token"));
                r
            }
            ApiError::Forbidden => detail(
                StatusCode::FORBIDDEN,
                "You do not have permission to perform this action.",
            ),
            ApiError::ForbiddenBecause(why) => detail(StatusCode::FORBIDDEN, why),
            ApiError::NotFound => detail(StatusCode::NOT_FOUND, "Not found."),
            ApiError::MethodNotAllowed(m) => detail(
                StatusCode::METHOD_NOT_ALLOWED,
                &format!("Method \"{m}\" not allowed."),
            ),
            ApiError::UnsupportedMediaType(t) => detail(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                &format!("Unsupported media type \"{t}\" in request."),
            ),
            ApiError::Unavailable => detail(
                StatusCode::SERVICE_UNAVAILABLE,
                "The block store is unavailable; no changes are accepted.",
            ),
            ApiError::Busy => {
                let mut r = detail(StatusCode::SERVICE_UNAVAILABLE, "Server busy; try again.");
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                r
            }
            ApiError::Throttled(secs) => {
                // DRF's throttling message.
                let mut r = detail(
                    StatusCode::TOO_MANY_REQUESTS,
                    &format!("Request was throttled. Expected available in {secs} seconds."),
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
                r
            }
            ApiError::Internal(cause) => {
                tracing::error!(error = %cause, "Internal error.");
                detail(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "A server error occurred.",
                )
            }
        }
    }
}

impl From<crate::store::Error> for ApiError {
    fn from(e: crate::store::Error) -> ApiError {
        match e {
            crate::store::Error::Failed => ApiError::Unavailable,
            other => ApiError::Internal(other.to_string()),
        }
    }
}
