//! The catch-and-release API's contract, hand-over from BHR requests, log rotation and
//! running as an unprivileged user.

use serde_json::json;

use super::*;
use crate::serve::process::Server;

fn daemon(conf: &str) -> (Files, Server, String, String) {
    let f = Files::new(conf);
    let d = f.start(&[]);
    let (ops, zeek) = (f.ops.clone(), f.zeek.clone());
    (f, d, ops, zeek)
}

#[test]
fn the_catch_and_release_api_checks_its_input_and_roles() {
    let (dir, d, ops, zeek) = daemon("[cnr]\nintervals = \"10m,1h\"\n");
    let logs = dir.logs.clone();
    let p = "/api/v1/cr/drop";
    // A blocker may drop; the answer is the BlockInfo.
    let (st, v) = d.post(p, &zeek, &json!({"addr": "192.0.2.9", "location": "scan"}));
    assert_eq!(st, 200, "{v}");
    let bu = v["block_until"].as_f64().unwrap();
    assert!(
        (v["watch_until"].as_f64().unwrap() - bu - 3000.0).abs() < 1e-3,
        "{v}"
    );
    assert_eq!(v["num_reblocked"], 0);
    // A duplicate changes nothing (INFO).
    let (st, again) = d.post(p, &zeek, &json!({"addr": "192.0.2.9/32"}));
    assert_eq!(st, 200);
    assert_eq!(again, v);
    assert!(!cr_lines(&logs, "INFO").is_empty());
    // Input errors: 400 naming the field.
    for (body, field) in [
        (json!({}), "addr"),
        (json!({"addr": "banana"}), "addr"),
        (json!({"addr": "192.0.2.0/24"}), "addr"),
        (json!({"addr": 5, "location": []}), "location"),
    ] {
        let (st, v) = d.post(p, &zeek, &body);
        assert_eq!(st, 400, "{body}: {v}");
        assert!(v[field].is_array(), "{body}: {v}");
    }
    // Roles: blockers may not unblock; anonymous callers may do nothing.
    let (st, _) = d.post("/api/v1/cr/unblock", &zeek, &json!({"addr": "192.0.2.9"}));
    assert_eq!(st, 403);
    let (st, v) = d.request(
        "POST",
        p,
        None,
        Some(("application/json", "{\"addr\":\"192.0.2.1\"}")),
    );
    assert_eq!(st, 401, "{v}");
    assert_eq!(d.request("GET", "/api/v1/cr", None, None).0, 401);
    // Info and list.
    let i = d.json("/api/v1/cr/192.0.2.9", &zeek);
    assert_eq!(i, v_without_addr(&d.json("/api/v1/cr", &ops)[0]));
    assert_eq!(d.json("/api/v1/cr", &ops)[0]["addr"], "192.0.2.9");
    let unknown = d.json("/api/v1/cr/192.0.2.10", &ops);
    assert_eq!(unknown["watch_until"], 0.0);
    assert_eq!(unknown["block_until"], serde_json::Value::Null);
    // A whitelisted address is never blocked: 400 with BHR's message, nothing tracked.
    let (st, _) = d.post(
        "/bhr/api/whitelist/",
        &ops,
        &json!({"cidr": "203.0.113.0/24", "why": "ours"}),
    );
    assert_eq!(st, 201);
    let (st, v) = d.post(p, &zeek, &json!({"addr": "203.0.113.5"}));
    assert_eq!(st, 400, "{v}");
    assert_eq!(v, json!({"non_field_errors": ["whitelisted: ops: ours"]}));
    assert_eq!(d.json("/api/v1/cr/203.0.113.5", &ops)["watch_until"], 0.0);
    // Unblock: the registry block ends at once, and the address is no longer tracked.
    let (st, v) = d.post(
        "/api/v1/cr/unblock",
        &ops,
        &json!({"addr": "192.0.2.9", "reason": "fp"}),
    );
    assert_eq!((st, v), (200, json!({"unblocked": true})));
    let (_, v) = d.post("/api/v1/cr/unblock", &ops, &json!({"addr": "192.0.2.9"}));
    assert_eq!(v, json!({"unblocked": false}));
    let q = d.json("/bhr/api/query/192.0.2.9", &ops);
    assert!(q[0]["unblock_at"].as_str().is_some());
    assert_eq!(d.json("/bhr/api/expected_blocks/", &ops), json!([]));
    let (_, m) = d.request("GET", "/metrics", None, None);
    let answers = |class: &str| -> u64 {
        m.lines()
            .find(|l| l.starts_with(&format!("catchd_http_answers_total{{code=\"{class}\"}}")))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap()
    };
    assert!(answers("2xx") >= 8 && answers("4xx") >= 7, "{m}");
    assert!(d.terminate().success());
}

fn v_without_addr(v: &serde_json::Value) -> serde_json::Value {
    let mut v = v.clone();
    v.as_object_mut().unwrap().remove("addr");
    v
}

#[test]
fn bhr_requests_from_handed_over_sources_are_adopted() {
    let (dir, d, ops, zeek) =
        daemon("[cnr]\nintervals = \"2s,4s\"\nhand_over_sources = [\"bro\"]\n");
    let logs = dir.logs.clone();
    let (st, b) = d.post(
        "/bhr/api/block",
        &zeek,
        &json!({"cidr": "192.0.2.44", "source": "bro", "why": "scanner", "duration": "1s"}),
    );
    assert_eq!(st, 201, "{b}");
    let added = wait_for(5, "ADDED", || cr_lines(&logs, "ADDED").pop());
    assert_eq!(added[1], "1", "the BHR block is the rule: {added:?}");
    let i = d.json("/api/v1/cr/192.0.2.44", &ops);
    assert_eq!(i["block_until"], serde_json::Value::Null);
    assert_eq!(i["current_block_id"], 1);
    assert_eq!(i["location"], "scanner");
    // Another source is left alone.
    d.post(
        "/bhr/api/block",
        &zeek,
        &json!({"cidr": "192.0.2.45", "source": "feed", "why": "list", "duration": "1h"}),
    );
    // The BHR block ends: UNBLOCK from catch-and-release, which keeps watching.
    wait_for(5, "UNBLOCK", || cr_lines(&logs, "UNBLOCK").pop());
    assert_eq!(d.json("/api/v1/cr/192.0.2.45", &ops)["watch_until"], 0.0);
    assert!(
        d.json("/api/v1/cr/192.0.2.44", &ops)["watch_until"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(d.terminate().success());
}

#[test]
fn logs_rotate_on_sighup_and_by_size() {
    let (dir, d, _ops, zeek) = daemon("[logs]\nrotate_size = 3000\n");
    let logs = dir.logs.clone();
    d.post("/api/v1/cr/drop", &zeek, &json!({"addr": "192.0.2.1"}));
    let pid = d.pid().to_string();
    std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    let rotated = |name: &str| -> Vec<PathBuf> {
        std::fs::read_dir(&logs)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let f = p.file_name().unwrap().to_str().unwrap();
                f.starts_with(&format!("{name}.")) && f != format!("{name}.log")
            })
            .collect()
    };
    let old = wait_for(5, "a rotated file", || rotated("netcontrol_drop").pop());
    let text = std::fs::read_to_string(&old).unwrap();
    assert!(text.contains("192.0.2.1"), "{text}");
    assert!(text.lines().last().unwrap().starts_with("#close"));
    // The new file's header is written right after the rename.
    let cur = wait_for(5, "a new header", || {
        std::fs::read_to_string(logs.join("netcontrol_drop.log"))
            .ok()
            .filter(|t| t.contains("#fields"))
    });
    assert!(
        cur.starts_with("#separator") && !cur.contains("192.0.2.1"),
        "{cur}"
    );
    // By size: enough drops to pass 3000 bytes in netcontrol.log.
    for i in 10..40 {
        d.post(
            "/api/v1/cr/drop",
            &zeek,
            &json!({"addr": format!("192.0.2.{i}")}),
        );
    }
    wait_for(5, "a size rotation", || {
        (rotated("netcontrol").len() >= 2).then_some(())
    });
    for p in rotated("netcontrol") {
        let size = std::fs::metadata(&p).unwrap().len();
        assert!(size < 3000 + 1000, "{} is {size} bytes", p.display());
    }
    assert!(d.terminate().success());
}

#[test]
fn it_can_drop_privileges_after_opening_the_capture() {
    let f = Files::new(&format!(
        "[daemon]\nuser = \"nobody\"\n[capture]\ninterfaces = [\"lo\"]\n{LOOPBACK_BLOCKABLE}"
    ));
    // The user must be able to write the data and log directories.
    let chown = std::process::Command::new("chown")
        .args(["-R", "nobody", f.dir.path().to_str().unwrap()])
        .status()
        .unwrap();
    assert!(chown.success());
    let zeek = &f.zeek;
    let d = f.start(&[]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid.split_whitespace().skip(1).all(|u| u == "65534"),
        "{uid}"
    );
    let (st, v) = d.post("/api/v1/cr/drop", zeek, &json!({"addr": "127.0.0.99"}));
    assert_eq!(st, 200, "{v}\n{}", d.log());
    // The capture opened as root still runs.
    let (_, m) = d.request("GET", "/metrics", None, None);
    assert!(m.contains("catchd_capture_up{interface=\"lo\"} 1"), "{m}");
    assert!(d.terminate().success());
}

#[test]
fn many_addresses_can_be_dropped_in_one_request() {
    let (_dir, d, ops, zeek) = daemon("[cnr]\nintervals = \"10m,1h\"\n");
    d.post(
        "/bhr/api/whitelist/",
        &ops,
        &json!({"cidr": "203.0.113.0/24", "why": "ours"}),
    );
    let p = "/api/v1/cr/drop";
    let (st, v) = d.post(
        p,
        &zeek,
        &json!([{"addr": "192.0.2.1"}, {"addr": "nope"}, {}]),
    );
    assert_eq!(st, 400, "{v}");
    assert_eq!(v[0], json!({}));
    assert!(v[1]["addr"].is_array() && v[2]["addr"].is_array(), "{v}");
    assert_eq!(d.json("/api/v1/cr", &ops), json!([]), "nothing happened");
    let (st, v) = d.post(
        p,
        &zeek,
        &json!([
            {"addr": "192.0.2.1", "location": "feed"},
            {"addr": "2001:db8::1"},
            {"addr": "203.0.113.9"},
        ]),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v[0]["addr"], "192.0.2.1");
    assert_eq!(v[0]["current_block_id"], 1);
    assert_eq!(v[1]["addr"], "2001:db8::1");
    assert_eq!(v[1]["current_block_id"], 2);
    assert_eq!(
        v[2],
        json!({"addr": "203.0.113.9", "error": "whitelisted: ops: ours"})
    );
    assert_eq!(d.json("/api/v1/cr", &ops).as_array().unwrap().len(), 2);
    assert_eq!(
        d.json("/bhr/api/expected_blocks/?source=catch-and-release", &ops)
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert!(d.terminate().success());
}
