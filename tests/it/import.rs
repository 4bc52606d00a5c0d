//! `catchd import-bhr` from a database made with the original BHR's schema
//! (fixtures/bhr_schema.sql) and representative rows, then `catchd serve` on the result:
//! history, tokens and passwords intact; idempotent; conflicts refused.

use std::process::Output;

use serde_json::json;

use crate::pg::Cluster;
use crate::serve::process::{Server, catchd};

const ZEEK_TOKEN: &str = "0123456789abcdef0123456789abcdef01234567";
const BGP_TOKEN: &str = "fedcba9876543210fedcba9876543210fedcba98";
const OLD_TOKEN: &str = "1111111111111111111111111111111111111111";

/// Django's `pbkdf2_sha256` hash of `password`, made by Python's hashlib (not catchd's
/// own code).
fn django_hash(password: &str) -> String {
    let o = std::process::Command::new("python3")
        .args([
            "-c",
            "import hashlib,base64,sys; p=sys.argv[1].encode(); \
             print('pbkdf2_sha256$1000$c4tchdSalt$' + base64.b64encode(hashlib.pbkdf2_hmac('sha256', p, b'c4tchdSalt', 1000)).decode())",
            password,
        ])
        .output()
        .unwrap();
    assert!(o.status.success());
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

fn bhr_database(pg: &Cluster) {
    pg.sql("postgres", "CREATE DATABASE bhr");
    pg.sql(
        "bhr",
        &std::fs::read_to_string(crate::support::fixture("bhr_schema.sql")).unwrap(),
    );
    let ops = django_hash("opspass");
    pg.sql(
        "bhr",
        &format!(
            "INSERT INTO auth_user (id, password, is_superuser, username, is_active) VALUES
               (1, '{ops}', true, 'admin', true),
               (2, '{ops}', false, 'ops', true),
               (3, '!unusable', false, 'bgp1', true),
               (4, '!unusable', false, 'zeek', true),
               (5, '{ops}', false, 'old', false),
               (6, '{ops}', false, 'reader', true);
             SELECT setval('auth_user_id_seq', 6);
             INSERT INTO auth_user_groups (user_id, group_id) VALUES (2, 1), (3, 2), (4, 3), (5, 1);
             INSERT INTO authtoken_token (key, user_id) VALUES
               ('{ZEEK_TOKEN}', 4), ('{BGP_TOKEN}', 3), ('{OLD_TOKEN}', 5);
             INSERT INTO bhr_block (id, cidr, who_id, source, why, added, unblock_at,
                                    forced_unblock, unblock_why, unblock_who_id) VALUES
               -- expected, in place on bgp1
               (1, '192.0.2.1/32', 4, 'bro', 'scanner', now() - interval '1 hour',
                now() + interval '1 day', false, '', NULL),
               -- expired long ago (history)
               (2, '192.0.2.1/32', 4, 'bro', 'scanner, earlier', now() - interval '30 days',
                now() - interval '29 days', false, '', NULL),
               -- id 3 was rolled back: a gap
               -- unblocked by a person
               (4, '198.51.100.0/24', 2, 'web', 'botnet', now() - interval '2 hours',
                NULL, true, 'false positive', 2),
               -- indefinite, pending (no manager has it yet)
               (5, '2001:db8::/64', 1, 'cli', 'v6 abuse', now() - interval '10 minutes',
                NULL, false, '', NULL);
             INSERT INTO bhr_blockentry (id, block_id, ident, added, removed, unblock_at) VALUES
               (1, 1, 'bgp1', now() - interval '59 minutes', NULL, now() + interval '1 day'),
               (2, 2, 'bgp1', now() - interval '30 days', now() - interval '29 days',
                now() - interval '29 days');
             INSERT INTO bhr_whitelistentry (id, cidr, who_id, why, added) VALUES
               (1, '10.0.0.0/8', 1, 'campus', now() - interval '100 days');
             INSERT INTO bhr_sourceblacklistentry (id, source, who_id, why, added) VALUES
               (1, 'badfeed', 1, 'too many false positives', now() - interval '5 days');"
        ),
    );
}

fn import(url: &str, db: &std::path::Path, extra: &[&str]) -> Output {
    catchd()
        .args(["import-bhr", url, "--db"])
        .arg(db)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn a_bhr_database_is_imported_with_history_and_tokens_intact() {
    let pg = Cluster::start();
    bhr_database(&pg);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("catchd.db");
    let url = pg.url("bhr");

    let o = import(&url, &db, &["--dry-run"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("would import"));
    assert!(!db.exists() || std::fs::read(&db).unwrap().len() < 100_000);

    let o = import(&url, &db, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("6 users (2 with tokens), 4 blocks, 2 block entries, 1 whitelist entries, 1 blacklisted sources"),
        "{out}"
    );
    assert!(err.contains("old is inactive"), "{err}");
    assert!(err.contains("reader is in no BHR group"), "{err}");
    assert!(err.contains("renumbered"), "{err}");

    let s = Server::start(&db, &[]);
    let zeek = format!("Token {ZEEK_TOKEN}");
    let bgp = format!("Token {BGP_TOKEN}");
    use base64::Engine;
    let ops = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("ops:opspass")
    );
    // History, with who and why.
    let q = s.json("/bhr/api/query/192.0.2.1", &ops);
    let rows = q.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{q}");
    assert!(rows.iter().any(|r| r["why"] == "scanner, earlier"));
    assert!(rows.iter().all(|r| r["who"] == "zeek"), "{q}");
    // The unblocked /24 (renumbered from 4 to 3) stays unblocked.
    let b = s.json("/bhr/api/blocks/3/", &ops);
    assert_eq!(b["cidr"], "198.51.100.0/24");
    let expected = s.json("/bhr/api/expected_blocks/", &ops).to_string();
    assert!(!expected.contains("198.51.100.0/24"), "{expected}");
    assert!(expected.contains("2001:db8::/64"), "{expected}");
    // Derived sets.
    let st = s.json("/bhr/api/stats", &ops);
    assert_eq!(
        (st["expected"].clone(), st["current"].clone()),
        (json!(2), json!(1)),
        "{st}"
    );
    // The block manager's token and queue: the pending v6 block.
    let queue = s.json("/bhr/api/queue/bgp1", &bgp);
    assert_eq!(queue.as_array().unwrap().len(), 1, "{queue}");
    assert_eq!(queue[0]["cidr"], "2001:db8::/64");
    // The blocker's token still blocks; the whitelist and source blacklist still apply.
    let (st, b) = s.post(
        "/bhr/api/block",
        &zeek,
        &json!({"cidr": "203.0.113.5", "source": "bro", "why": "x", "duration": 300}),
    );
    assert_eq!(st, 201, "{b}");
    let (st, b) = s.post(
        "/bhr/api/block",
        &zeek,
        &json!({"cidr": "10.1.2.3", "source": "bro", "why": "x", "duration": 300}),
    );
    assert_eq!(st, 400, "whitelisted: {b}");
    let (st, b) = s.post(
        "/bhr/api/block",
        &zeek,
        &json!({"cidr": "203.0.113.6", "source": "badfeed", "why": "x", "duration": 300}),
    );
    assert_eq!(st, 400, "blacklisted source: {b}");
    // Inactive users cannot sign in.
    let (st, _) = s.request(
        "GET",
        "/bhr/api/stats",
        Some(&format!("Token {OLD_TOKEN}")),
        None,
    );
    assert_eq!(st, 401);
    assert!(s.terminate().success());

    // Again: idempotent, and the block catchd made since is kept.
    let o = import(&url, &db, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = Server::start(&db, &[]);
    let st = s.json("/bhr/api/stats", &ops);
    assert_eq!(st["expected"], 3, "{st}");
    assert_eq!(s.json("/bhr/api/query/203.0.113.5", &ops)[0]["who"], "zeek");
    assert!(s.terminate().success());

    // A BHR row that would take the id of catchd's own block: nothing is imported.
    pg.sql(
        "bhr",
        "INSERT INTO bhr_block (id, cidr, who_id, source, why, added) \
         VALUES (6, '192.0.2.77/32', 4, 'bro', 'late', now())",
    );
    let o = import(&url, &db, &[]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("nothing imported") && err.contains("block id 5"),
        "{err}"
    );

    // Bad URLs and unreachable databases are one clear line.
    let o = import("mysql://x", &db, &[]);
    assert_eq!(o.status.code(), Some(2));
    let o = import("postgres://postgres@127.0.0.1:1/bhr", &db, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("BHR database"));
}
