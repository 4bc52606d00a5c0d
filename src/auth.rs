//! Users, roles and credentials.
//!
//! Roles are BHR's groups: `blocker` (BHR Blockers: may request blocks), `manager` (BHR
//! Block Managers: may read queues and record blocks and unblocks), `user` (BHR Users:
//! every BHR permission) and `admin` (superuser). [`Role::may`] is the permission table of
//! bhr.md §7.
//!
//! A token is 40 random hex characters, like Django REST framework's, shown once when it is
//! made; only its SHA-256 is stored. Passwords (for HTTP Basic) are stored as argon2 hashes.

mod passwords;
pub(crate) mod throttle;

pub use passwords::{CheckError, Passwords};

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// A user id (the store's primary key).
pub type UserId = u32;

/// A user's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// BHR Blockers: requests blocks (Zeek, feeds).
    Blocker,
    /// BHR Block Managers: puts blocks in place (BGP, firewalls).
    Manager,
    /// BHR Users: people; every BHR permission.
    User,
    /// A superuser.
    Admin,
}

/// A BHR (Django) model permission.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Perm {
    /// `bhr.add_block`.
    AddBlock,
    /// `bhr.change_block`.
    ChangeBlock,
    /// `bhr.delete_block`.
    DeleteBlock,
    /// `bhr.add_blockentry`.
    AddBlockEntry,
    /// `bhr.change_blockentry`.
    ChangeBlockEntry,
    /// `bhr.add_whitelistentry`.
    AddWhitelist,
    /// `bhr.change_whitelistentry`.
    ChangeWhitelist,
    /// `bhr.delete_whitelistentry`.
    DeleteWhitelist,
    /// `bhr.add_sourceblacklistentry`.
    AddSourceBlacklist,
    /// `bhr.delete_sourceblacklistentry`.
    DeleteSourceBlacklist,
}

impl Role {
    /// Every role, for listings.
    pub const ALL: [Role; 4] = [Role::Blocker, Role::Manager, Role::User, Role::Admin];

    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Blocker => "blocker",
            Role::Manager => "manager",
            Role::User => "user",
            Role::Admin => "admin",
        }
    }

    /// Whether the role has a permission.
    pub fn may(self, p: Perm) -> bool {
        match self {
            Role::Admin | Role::User => true,
            Role::Blocker => p == Perm::AddBlock,
            Role::Manager => matches!(p, Perm::AddBlockEntry | Perm::ChangeBlockEntry),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown role name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role `{0}` (use blocker, manager, user or admin)")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Role, UnknownRole> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole(s.to_string()))
    }
}

/// A user account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// Id.
    pub id: UserId,
    /// Unique name (shown as `who`).
    pub name: String,
    /// Role.
    pub role: Role,
    /// SHA-256 of the API token, if one was issued.
    pub token_hash: Option<[u8; 32]>,
    /// argon2 hash of the password (PHC string), if one was set.
    pub password_hash: Option<String>,
}

/// A new random token: 40 lowercase hex characters.
pub fn new_token() -> String {
    let mut bytes = [0u8; 20];
    rand::fill(&mut bytes[..]);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The stored form of a token.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The stored form of a password (argon2id, random salt).
///
/// # Panics
/// Only if argon2 rejects its own default parameters.
pub fn hash_password(password: &str) -> String {
    use argon2::PasswordHasher;
    let mut salt = [0u8; 16];
    rand::fill(&mut salt[..]);
    argon2::Argon2::default()
        .hash_password_with_salt(password.as_bytes(), &salt)
        .expect("argon2 accepts its default parameters")
        .to_string()
}

/// Whether `password` matches a stored hash: catchd's argon2 PHC strings, or Django's
/// `pbkdf2_sha256$<iterations>$<salt>$<base64>` (users imported from BHR keep their
/// passwords).
pub fn verify_password(password: &str, hash: &str) -> bool {
    if let Some(rest) = hash.strip_prefix("pbkdf2_sha256$") {
        return verify_django_pbkdf2(password, rest);
    }
    use argon2::PasswordVerifier;
    argon2::Argon2::default()
        .verify_password(password.as_bytes(), hash)
        .is_ok()
}

/// The most PBKDF2 iterations accepted (Django 5 uses 870 000): a stored hash cannot make
/// a login take minutes.
const MAX_PBKDF2_ITERATIONS: u32 = 10_000_000;

fn verify_django_pbkdf2(password: &str, rest: &str) -> bool {
    use base64::Engine;
    let mut parts = rest.splitn(3, '$');
    let (Some(iters), Some(salt), Some(want)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let Ok(iters) = iters.parse::<u32>() else {
        return false;
    };
    if iters == 0 || iters > MAX_PBKDF2_ITERATIONS {
        return false;
    }
    let Ok(want) = base64::engine::general_purpose::STANDARD.decode(want) else {
        return false;
    };
    let got = pbkdf2_sha256(password.as_bytes(), salt.as_bytes(), iters);
    // Constant time.
    want.len() == got.len() && want.iter().zip(got).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// PBKDF2-HMAC-SHA256 with a 32-byte output (one block).
pub fn pbkdf2_sha256(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut msg = salt.to_vec();
    msg.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac_sha256(password, &msg);
    let mut t = u;
    for _ in 1..iterations {
        u = hmac_sha256(password, &u);
        for (x, y) in t.iter_mut().zip(u) {
            *x ^= y;
        }
    }
    t
}

/// HMAC-SHA256 (RFC 2104).
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn django_password_hashes_verify() {
        // RFC 7914 §11 (PBKDF2-HMAC-SHA256 test vector, first 32 bytes).
        let k = pbkdf2_sha256(b"passwd", b"salt", 1);
        assert_eq!(
            k.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc"
        );
        // A hash as Django's PBKDF2PasswordHasher writes it.
        use base64::Engine;
        let dk = pbkdf2_sha256(b"s3cret", b"NaCl0123", 1000);
        let stored = format!(
            "pbkdf2_sha256$1000$NaCl0123${}",
            base64::engine::general_purpose::STANDARD.encode(dk)
        );
        assert!(verify_password("s3cret", &stored));
        assert!(!verify_password("s3cre", &stored));
        assert!(!verify_password("s3cret", "pbkdf2_sha256$0$x$y"));
        assert!(!verify_password("s3cret", "pbkdf2_sha256$99999999999$x$y"));
        assert!(!verify_password("s3cret", "pbkdf2_sha256$1000$NaCl0123"));
        assert!(!verify_password(
            "s3cret",
            "pbkdf2_sha256$1000$NaCl0123$***"
        ));
    }

    #[test]
    fn roles_match_bhr_groups() {
        assert!(Role::Blocker.may(Perm::AddBlock));
        assert!(
            !Role::Blocker.may(Perm::ChangeBlock),
            "a blocker cannot unblock_now"
        );
        assert!(!Role::Manager.may(Perm::AddBlock));
        assert!(
            Role::Manager.may(Perm::AddBlockEntry) && Role::Manager.may(Perm::ChangeBlockEntry)
        );
        assert!(Role::User.may(Perm::DeleteWhitelist));
        assert_eq!("manager".parse::<Role>(), Ok(Role::Manager));
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn tokens_and_passwords() {
        let t = new_token();
        assert_eq!(t.len(), 40);
        assert!(t.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(new_token(), t);
        assert_eq!(hash_token(&t), hash_token(&t));
        let h = hash_password("hunter42");
        assert!(verify_password("hunter42", &h));
        assert!(!verify_password("hunter43", &h));
    }
}
