//! Who is calling: `Authorization: Token <key>` or HTTP Basic, with Django REST
//! framework's messages, against the user directory.
//!
//! The directory is loaded at start-up; a token or name it does not know is looked up in
//! the store once, so users added with `catchd user` while the server runs can log in at
//! once. A password that verified is remembered (by the SHA-256 of name and password) so
//! that argon2 does not run on every request. Passwords are checked by
//! [`crate::auth::Passwords`]: bounded, as slow for a name nobody has as for a wrong
//! password, and throttled per client address and per user name (429 past the limit).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::http::{HeaderMap, header};
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::auth::{CheckError, Perm, User, hash_token};
use crate::bhr::model::UserId;
use crate::store::Store;

use super::AppState;
use super::error::{ApiError, NOT_PROVIDED};

tokio::task_local! {
    /// The address of the client whose request is being served (set by [`client_scope`]).
    static CLIENT: std::net::IpAddr;
}

/// Middleware: makes the client's address (the `crate::httpd::ClientAddr` extension)
/// known to [`authenticate`] and [`check_password`] for the rest of the request.
pub async fn client_scope(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    match req.extensions().get::<crate::httpd::ClientAddr>() {
        Some(c) => {
            let ip = c.0.ip();
            CLIENT.scope(ip, next.run(req)).await
        }
        None => next.run(req).await,
    }
}

/// The address of the client whose request is being served, if known.
pub fn client() -> Option<std::net::IpAddr> {
    CLIENT.try_with(|c| *c).ok()
}

#[derive(Default)]
struct Dir {
    by_id: HashMap<UserId, Arc<User>>,
    by_token: HashMap<[u8; 32], UserId>,
    by_name: HashMap<String, UserId>,
    /// SHA-256 of `name \0 password` for passwords that verified.
    basic_ok: HashMap<[u8; 32], UserId>,
    /// Token hashes and names the store did not know either (so that a stream of bad
    /// credentials does not become a stream of database reads); cleared on every reload.
    misses: std::collections::HashSet<[u8; 32]>,
}

/// Misses remembered at most, between reloads.
const MAX_MISSES: usize = 100_000;

fn name_key(name: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"name\0");
    h.update(name.as_bytes());
    h.finalize().into()
}

impl Dir {
    fn insert(&mut self, u: User) -> Arc<User> {
        if let Some(old) = self.by_id.remove(&u.id) {
            if let Some(h) = old.token_hash {
                self.by_token.remove(&h);
            }
            self.by_name.remove(&old.name);
            self.basic_ok.retain(|_, id| *id != u.id);
        }
        if let Some(h) = u.token_hash {
            self.by_token.insert(h, u.id);
        }
        self.by_name.insert(u.name.clone(), u.id);
        let u = Arc::new(u);
        self.by_id.insert(u.id, u.clone());
        u
    }
}

/// The user directory.
pub struct Users {
    dir: RwLock<Dir>,
}

impl Users {
    /// A directory of these users.
    pub fn new(users: Vec<User>) -> Users {
        let mut d = Dir::default();
        for u in users {
            d.insert(u);
        }
        Users {
            dir: RwLock::new(d),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Dir> {
        self.dir.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Dir> {
        self.dir.write().unwrap_or_else(|p| p.into_inner())
    }

    /// A user's name (`who` in responses); `#<id>` for an id nobody has.
    pub fn name(&self, id: UserId) -> String {
        self.read()
            .by_id
            .get(&id)
            .map_or_else(|| format!("#{id}"), |u| u.name.clone())
    }

    /// Every name, by id (for rendering many rows without re-locking).
    pub fn names(&self) -> HashMap<UserId, String> {
        self.read()
            .by_id
            .iter()
            .map(|(id, u)| (*id, u.name.clone()))
            .collect()
    }

    /// A user by id.
    pub fn get(&self, id: UserId) -> Option<Arc<User>> {
        self.read().by_id.get(&id).cloned()
    }

    /// Adds or replaces a user.
    pub fn put(&self, u: User) -> Arc<User> {
        self.write().insert(u)
    }

    /// Replaces the directory with what the database holds now (users added, changed or
    /// removed by `catchd user` while the server runs). Returns whether anything changed.
    pub fn reload(&self, users: Vec<User>) -> bool {
        let mut d = self.write();
        d.misses.clear();
        let same = users.len() == d.by_id.len()
            && users
                .iter()
                .all(|u| d.by_id.get(&u.id).is_some_and(|old| **old == *u));
        if same {
            return false;
        }
        let mut fresh = Dir::default();
        for u in users {
            fresh.insert(u);
        }
        *d = fresh;
        true
    }

    fn missed(&self, key: &[u8; 32]) -> bool {
        self.read().misses.contains(key)
    }

    fn remember_miss(&self, key: [u8; 32]) {
        let mut d = self.write();
        if d.misses.len() < MAX_MISSES {
            d.misses.insert(key);
        }
    }
}

/// The caller of a request.
#[derive(Clone, Debug)]
pub enum Caller {
    /// No credentials.
    Anonymous,
    /// An authenticated user.
    User(Arc<User>),
}

impl Caller {
    /// The user, if authenticated (401 otherwise).
    ///
    /// # Errors
    /// [`ApiError::Unauthenticated`].
    pub fn user(&self) -> Result<&Arc<User>, ApiError> {
        match self {
            Caller::User(u) => Ok(u),
            Caller::Anonymous => Err(ApiError::Unauthenticated(NOT_PROVIDED)),
        }
    }

    /// The user, if it has every permission listed (401 if anonymous, 403 if lacking).
    ///
    /// # Errors
    /// [`ApiError::Unauthenticated`] or [`ApiError::Forbidden`].
    pub fn require(&self, perms: &[Perm]) -> Result<&Arc<User>, ApiError> {
        let u = self.user()?;
        if perms.iter().all(|p| u.role.may(*p)) {
            Ok(u)
        } else {
            Err(ApiError::Forbidden)
        }
    }
}

/// Authenticates a request. No `Authorization` header, or a scheme other than Token and
/// Basic, is anonymous; bad credentials are a 401 even on public endpoints, as in DRF.
///
/// # Errors
/// [`ApiError::Unauthenticated`] with DRF's message, [`ApiError::Throttled`] after too
/// many wrong passwords, or a store error.
pub async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let (users, store) = (state.users(), state.store());
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(Caller::Anonymous);
    };
    let Ok(value) = value.to_str() else {
        return Err(ApiError::Unauthenticated(
            "Invalid token header. Token string should not contain invalid characters.",
        ));
    };
    let parts: Vec<&str> = value.split_whitespace().collect();
    let Some(scheme) = parts.first() else {
        return Ok(Caller::Anonymous);
    };
    if scheme.eq_ignore_ascii_case("token") {
        return match parts.len() {
            1 => Err(ApiError::Unauthenticated(
                "Invalid token header. No credentials provided.",
            )),
            2 => token(users, store, parts[1]).await,
            _ => Err(ApiError::Unauthenticated(
                "Invalid token header. Token string should not contain spaces.",
            )),
        };
    }
    if scheme.eq_ignore_ascii_case("basic") {
        return match parts.len() {
            1 => Err(ApiError::Unauthenticated(
                "Invalid basic header. No credentials provided.",
            )),
            2 => basic(state, parts[1]).await,
            _ => Err(ApiError::Unauthenticated(
                "Invalid basic header. Credentials string should not contain spaces.",
            )),
        };
    }
    Ok(Caller::Anonymous)
}

async fn token(users: &Users, store: &Store, key: &str) -> Result<Caller, ApiError> {
    let h = hash_token(key);
    let known = {
        let d = users.read();
        d.by_token.get(&h).and_then(|id| d.by_id.get(id)).cloned()
    };
    if let Some(u) = known {
        return Ok(Caller::User(u));
    }
    if users.missed(&h) {
        return Err(ApiError::Unauthenticated("Invalid token."));
    }
    match store.user_by_token(h).await? {
        Some(u) => Ok(Caller::User(users.put(u))),
        None => {
            users.remember_miss(h);
            Err(ApiError::Unauthenticated("Invalid token."))
        }
    }
}

async fn basic(state: &AppState, b64: &str) -> Result<Caller, ApiError> {
    let users = state.users();
    let bad = || {
        ApiError::Unauthenticated("Invalid basic header. Credentials not correctly base64 encoded.")
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let (name, password) = text.split_once(':').unwrap_or((&text, ""));
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([0]);
    h.update(password.as_bytes());
    let key: [u8; 32] = h.finalize().into();
    let cached = {
        let d = users.read();
        d.basic_ok.get(&key).and_then(|id| d.by_id.get(id)).cloned()
    };
    if let Some(u) = cached {
        return Ok(Caller::User(u));
    }
    match check_password(state, name, password).await? {
        Some(user) => {
            users.write().basic_ok.insert(key, user.id);
            Ok(Caller::User(user))
        }
        None => Err(ApiError::Unauthenticated("Invalid username/password.")),
    }
}

/// Checks a name and password against the directory (and the store, for a name the
/// directory does not know yet): the user, or `None` for a wrong name or password or a
/// user without a password. All three take the same argon2 work.
///
/// # Errors
/// [`ApiError::Throttled`] past the failure limit, [`ApiError::Busy`] when every
/// password check is busy, or a store error.
pub async fn check_password(
    state: &AppState,
    name: &str,
    password: &str,
) -> Result<Option<Arc<User>>, ApiError> {
    let users = state.users();
    let known = {
        let d = users.read();
        d.by_name.get(name).and_then(|id| d.by_id.get(id)).cloned()
    };
    let user = match known {
        Some(u) => Some(u),
        None => {
            let nk = name_key(name);
            if users.missed(&nk) {
                None
            } else {
                let found = state
                    .store()
                    .user_by_name(name)
                    .await?
                    .map(|u| users.put(u));
                if found.is_none() {
                    users.remember_miss(nk);
                }
                found
            }
        }
    };
    let hash = user.as_ref().and_then(|u| u.password_hash.as_deref());
    match state
        .passwords()
        .check(client(), name, password, hash, state.now())
        .await
    {
        Ok(true) => Ok(user),
        Ok(false) => Ok(None),
        Err(CheckError::Throttled(secs)) => Err(ApiError::Throttled(secs)),
        Err(CheckError::Busy) => Err(ApiError::Busy),
    }
}
