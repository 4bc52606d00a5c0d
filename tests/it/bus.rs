//! The ZeroMQ event bus between processes: `catchd proxy`, a manager and a sensor
//! (`catchd run --bus`), and a stand-in Zeek node written with pyzmq and its own Broker
//! reader (`tests/python/zeek_bus.py`), which checks catchd's frames independently.
//!
//! The Python venv (pyzmq, zeekscript) is made once under `target/tmp/zeek-venv`.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use catchd::broker::{Event, Value as B, bin, zeek};
use catchd::time::Interval;

use crate::daemon::Files;
use crate::daemon::netns::Netns;
use crate::serve::process::{Server, catchd};

/// The venv's `bin/` directory (pyzmq, zeekscript), created on first use.
pub fn venv() -> PathBuf {
    crate::support::venv("zeek-venv", &["pyzmq", "zeekscript"])
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/zeek_bus.py")
}

/// A loopback port nobody listens on now.
/// A TCP port nothing listens on, for a server a test starts. It is taken below Linux's
/// ephemeral range (32768 and up), so the outgoing connections of the many processes the
/// tests run cannot take it between now and the server's bind, and never twice in one
/// test run.
pub(crate) fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % SPAN,
        Ordering::AcqRel,
        Ordering::Acquire,
    );
    loop {
        let n = NEXT.fetch_add(1, Ordering::AcqRel);
        let port = u16::try_from(LOW + n % SPAN).expect("below 65536");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `catchd proxy` on two free ports.
pub(crate) struct Bus {
    _proxy: Proc,
    pub(crate) xpub: String,
    pub(crate) xsub: String,
}

impl Bus {
    pub(crate) fn start() -> Bus {
        Bus::start_with_env(&[]).0
    }

    /// `catchd proxy` with `env` (CURVE keys in Zeek's variables); also the lines it
    /// writes to stderr after it listens.
    pub(crate) fn start_with_env(env: &[(&str, &str)]) -> (Bus, mpsc::Receiver<String>) {
        let xpub = format!("tcp://127.0.0.1:{}", free_port());
        let xsub = format!("tcp://127.0.0.1:{}", free_port());
        let child = catchd()
            .args(["proxy", "--xpub", &xpub, "--xsub", &xsub])
            .env("RUST_LOG", "catchd=info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut p = Proc(child);
        let mut lines = BufReader::new(p.0.stderr.take().unwrap()).lines();
        for line in lines.by_ref() {
            let line = line.unwrap();
            assert!(!line.contains("error"), "catchd proxy: {line}");
            if line.contains("Bus proxy listening") {
                break;
            }
        }
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        (
            Bus {
                _proxy: p,
                xpub,
                xsub,
            },
            rx,
        )
    }

    pub(crate) fn flags(&self) -> Vec<String> {
        vec![
            "--bus-xpub".into(),
            self.xpub.clone(),
            "--bus-xsub".into(),
            self.xsub.clone(),
        ]
    }
}

/// A pyzmq subscriber printing what it receives; lines arrive on a channel.
struct Listener {
    _p: Proc,
    rx: mpsc::Receiver<Value>,
}

impl Listener {
    fn start(bus: &Bus, seconds: u32, topics: &[&str]) -> Listener {
        let mut c = Command::new(venv().join("python"));
        c.arg(script())
            .args(["listen", &bus.xpub, &seconds.to_string()])
            .args(topics)
            .stdout(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                let _ = tx.send(serde_json::from_str::<Value>(&line).unwrap());
            }
        });
        let l = Listener {
            _p: Proc(child),
            rx,
        };
        let first = l.rx.recv_timeout(Duration::from_secs(20)).unwrap();
        assert_eq!(first["ready"], true);
        l
    }

    /// The next message named `name` (others are skipped), within `secs`.
    #[track_caller]
    fn next(&self, name: &str, secs: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(v) if v["name"] == name => return v,
                Ok(_) => {}
                Err(_) => panic!("no {name} within {secs} s"),
            }
        }
    }
}

fn python(args: &[&str]) -> String {
    let o = Command::new(venv().join("python"))
        .arg(script())
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "zeek_bus.py {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// Publishes raw `broker-bin-v1` payloads from a node named `node` on `topic`.
fn send(bus: &Bus, topic: &str, node: &str, payload_hex: &str) {
    python(&["send", &bus.xsub, topic, node, "broker-bin-v1", payload_hex]);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn encode(e: &Event) -> String {
    let mut v = Vec::new();
    bin::encode_event(e, &mut v);
    hex(&v)
}

#[track_caller]
pub(crate) fn eventually<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn metric(s: &Server, name: &str) -> u64 {
    let (_, m) = s.request("GET", "/metrics", None, None);
    m.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub(crate) fn manager(f: &Files, bus: &Bus, extra: &[&str]) -> Server {
    let mut args: Vec<String> = bus.flags();
    args.extend(["--bus".into(), "--node-id".into(), "mgr".into()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    f.start(&a)
}

/// A pcap file of `n` UDP datagrams from `src` to `dst`.
/// Sends a capture out of the namespace's end of its veth pair (tcpreplay keeps its
/// timing), so it arrives where a sensor captures.
pub(crate) fn send_from(ns: &Netns, pcap: &std::path::Path) {
    let o = Command::new("ip")
        .args(["netns", "exec", &ns.name, "tcpreplay", "-q", "-i"])
        .arg(ns.ns_if())
        .arg(pcap)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "tcpreplay: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

pub(crate) fn udp_pcap(src: [u8; 4], dst: [u8; 4], n: u32) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes()); // Ethernet
    for i in 0..n {
        let payload = b"catchd pcap replay";
        let mut ip = vec![0x45, 0, 0, 0, 0, i as u8, 0x40, 0, 64, 17, 0, 0];
        ip.extend_from_slice(&src);
        ip.extend_from_slice(&dst);
        let total = (20 + 8 + payload.len()) as u16;
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        let sum: u32 = ip
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
            .sum();
        let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        let mut frame = vec![0xff; 6];
        frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x66, 0x08, 0x00]);
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&(40000 + i as u16).to_be_bytes());
        frame.extend_from_slice(&9999u16.to_be_bytes());
        frame.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        frame.extend_from_slice(&[0, 0]);
        frame.extend_from_slice(payload);
        out.extend_from_slice(&(1_700_000_000 + i).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&frame);
    }
    out
}

fn cr_actions(logs: &std::path::Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(logs.join("netcontrol_catch_release.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

#[test]
fn a_sensor_reports_a_released_address_and_the_manager_reblocks_it() {
    let bus = Bus::start();
    let ns = Netns::new("bs", 7);
    let f = Files::new("[cnr]\nsweep_interval = \"1s\"\n");
    let m = manager(&f, &bus, &["--intervals", "1s,5s,10s"]);
    let mut sflags = bus.flags();
    sflags.extend(["--role", "sensor", "--node-id", "s1", "-i", &ns.root_if].map(str::to_string));
    let sf: Vec<&str> = sflags.iter().map(String::as_str).collect();
    let s = Server::run(&f.dir.path().join("unused.db"), &sf);
    // The sensor asked for the watched set and got it (empty).
    eventually(10, "the sensor synchronised", || {
        (metric(&s, "catchd_sensor_syncs_total") >= 1).then_some(())
    });

    // A drop on the manager reaches the sensor's replica (block_new).
    let (st, info) = m.post(
        "/api/v1/cr/drop",
        &f.ops,
        &json!({"addr": ns.addr, "location": "bus test"}),
    );
    assert_eq!(st, 200, "{info}");
    let replica = eventually(5, "block_new in the replica", || {
        let (_, b) = s.request("GET", "/api/v1/cr", None, None);
        let v: Value = serde_json::from_str(&b).unwrap();
        (v.as_array().unwrap().len() == 1).then_some(v)
    });
    assert_eq!(replica[0]["addr"], ns.addr);
    assert_eq!(replica[0]["current_interval"], 0);
    assert_eq!(replica[0]["location"], "bus test");
    assert!(
        (replica[0]["watch_until"].as_f64().unwrap() - info["watch_until"].as_f64().unwrap()).abs()
            < 1e-6
    );

    // A second sensor joining late gets the watched set from the manager (sync).
    let mut s2flags = bus.flags();
    s2flags.extend(["--role", "sensor", "--node-id", "s2"].map(str::to_string));
    let s2f: Vec<&str> = s2flags.iter().map(String::as_str).collect();
    let s2 = Server::run(&f.dir.path().join("unused2.db"), &s2f);
    eventually(10, "the late sensor has the address", || {
        let (_, b) = s2.request("GET", &format!("/api/v1/cr/{}", ns.addr), None, None);
        let v: Value = serde_json::from_str(&b).unwrap();
        (v["location"] == "bus test").then_some(())
    });

    // Released after 1 s; then a capture replayed on the sensor's interface.
    eventually(5, "UNBLOCK", || {
        cr_actions(&f.logs)
            .iter()
            .any(|r| r[3] == "NetControl::UNBLOCK")
            .then_some(())
    });
    let pcap = f.dir.path().join("attacker.pcap");
    let src: std::net::Ipv4Addr = ns.addr.parse().unwrap();
    let dst: std::net::Ipv4Addr = ns.peer.parse().unwrap();
    std::fs::write(&pcap, udp_pcap(src.octets(), dst.octets(), 5)).unwrap();
    send_from(&ns, &pcap);

    // The manager re-blocks it one step up and tells the sensor.
    let seen = eventually(5, "SEEN_AGAIN", || {
        cr_actions(&f.logs)
            .into_iter()
            .find(|r| r[3] == "NetControl::SEEN_AGAIN")
    });
    assert_eq!(seen[2], ns.addr);
    assert_eq!(seen[4], "5.000000");
    eventually(5, "the replica follows", || {
        let (_, b) = s.request("GET", &format!("/api/v1/cr/{}", ns.addr), None, None);
        let v: Value = serde_json::from_str(&b).unwrap();
        (v["current_interval"] == 1 && v["num_reblocked"] == 1).then_some(())
    });
    // Five packets, one report (rate-limited per address as Zeek's workers do).
    assert_eq!(metric(&s, "catchd_sensor_encounters_sent_total"), 1);
    eventually(5, "the capture counted it", || {
        (metric(&s, "catchd_capture_sightings_total") >= 1).then_some(())
    });

    // An unblock on the manager removes it from the replica (block_delete).
    let (st, _) = m.post(
        "/api/v1/cr/unblock",
        &f.ops,
        &json!({"addr": ns.addr, "reason": "done"}),
    );
    assert_eq!(st, 200);
    eventually(5, "block_delete empties the replica", || {
        let (_, b) = s.request("GET", "/api/v1/cr", None, None);
        (b == "[]").then_some(())
    });
    assert_eq!(metric(&s, "catchd_sensor_block_delete_total"), 1);
    eventually(5, "both sensors follow", || {
        let (_, b) = s2.request("GET", "/api/v1/cr", None, None);
        (b == "[]").then_some(())
    });
    assert!(s2.terminate().success());
    assert!(s.terminate().success());
    assert!(m.terminate().success());
}

#[test]
fn a_pyzmq_node_reads_catchds_frames_and_drives_catch_and_release() {
    let bus = Bus::start();
    let f = Files::new("");
    let m = manager(&f, &bus, &[]);
    let l = Listener::start(&bus, 60, &["zeek.cluster.worker", "catchd."]);

    // "A Zeek worker" asks for a drop: the spec's bytes for
    // catch_release_add(10.0.0.1, "ext-daemon").
    send(
        &bus,
        "zeek.cluster.manager",
        "zeek_worker-1",
        "0e030200000000000000010200000000000000010e02051d4e6574436f6e74726f6c3a3a63617463685f72656c656173655f6164640e020600000000000000000000ffff0a000001050a6578742d6461656d6f6e",
    );
    let new = l.next("NetControl::catch_release_block_new", 10);
    assert_eq!(new["frames"], 4);
    assert_eq!(new["topic"], "zeek.cluster.worker");
    assert_eq!(new["sender"], "mgr");
    assert_eq!(new["format"], "broker-bin-v1");
    assert_eq!(new["args"][0], "10.0.0.1");
    let bi = &new["args"][1];
    assert_eq!(
        bi.as_array().unwrap().len(),
        6,
        "BlockInfo has 6 fields: {bi}"
    );
    let (bu, wu) = (
        bi[0]["time"].as_i64().unwrap(),
        bi[1]["time"].as_i64().unwrap(),
    );
    assert_eq!(wu - bu, 3_000_000_000_000, "watch 1 h, block 10 min: {bi}");
    assert_eq!(bi[2], 0);
    assert_eq!(bi[3], 0);
    assert_eq!(bi[4], "1");
    assert_eq!(bi[5], "ext-daemon");
    // Every log record is an event on catchd's topic.
    let rec = l.next("NetControl::log_netcontrol_catch_release", 5);
    assert_eq!(rec["topic"], "catchd.catch_release");
    let r = &rec["args"][0];
    assert_eq!(r.as_array().unwrap().len(), 12);
    assert_eq!(r[2], "10.0.0.1");
    assert_eq!(r[3]["enum"], "NetControl::DROP_REQUESTED");
    assert_eq!(r[4]["interval"], 600_000_000_000i64);
    let info = m.json("/api/v1/cr/10.0.0.1", &f.ops);
    assert_eq!(info["location"], "ext-daemon");

    // Garbage does not hurt: 3 frames, a wrong format, a bad payload, an unknown event,
    // an event with the wrong argument types. Each is counted.
    let unknown = encode(&Event::new("Foo::bar", vec![]));
    let wrong_args = encode(&Event::new(
        zeek::CATCH_RELEASE_ADD,
        vec![B::string("10.0.0.2"), B::string("x")],
    ));
    let topic = hex(b"zeek.cluster.manager");
    let w = hex(b"zeek_worker-1");
    let bin_fmt = hex(b"broker-bin-v1");
    let spec = json!([
        [topic, w, bin_fmt],
        [topic, w, hex(b"zeek-bin-serializer"), "00"],
        [topic, w, bin_fmt, "0e05ff"],
        [topic, w, bin_fmt, unknown],
        [topic, w, bin_fmt, wrong_args],
    ]);
    python(&[
        "frames",
        &bus.xsub,
        "zeek.cluster.manager",
        &spec.to_string(),
    ]);
    eventually(5, "counted", || {
        (metric(&m, "catchd_bus_malformed_total") == 2
            && metric(&m, "catchd_bus_wrong_format_total") == 1
            && metric(&m, "catchd_bus_unknown_events_total") == 2)
            .then_some(())
    });
    // ... and the bus still works: delete the address from "the worker".
    send(
        &bus,
        "zeek.cluster.manager",
        "zeek_worker-1",
        &encode(&zeek::delete(
            catchd::addr::Addr::from(std::net::Ipv4Addr::new(10, 0, 0, 1)),
            "from zeek",
        )),
    );
    let del = l.next("NetControl::catch_release_block_delete", 10);
    assert_eq!(del["args"], json!(["10.0.0.1"]));
    let info = m.json("/api/v1/cr/10.0.0.1", &f.ops);
    assert_eq!(info["watch_until"], 0.0);
    assert!(
        m.log().contains("Bus: unknown event Foo::bar"),
        "{}",
        m.log()
    );
    assert!(m.terminate().success());
}

#[test]
fn the_netcontrol_backend_contract() {
    let bus = Bus::start();
    let f = Files::new("");
    let m = manager(&f, &bus, &[]);
    // The spec's broker_add_rule vector: DROP of 10.0.0.1/32 for 600 s, rule id "2".
    let add = "0e030200000000000000010200000000000000010e02051b4e6574436f6e74726f6c3a3a62726f6b65725f6164645f72756c650e020200000000000000000e0e0b104e6574436f6e74726f6c3a3a44524f500b134e6574436f6e74726f6c3a3a464f52574152440e050b134e6574436f6e74726f6c3a3a4144445245535300000700000000000000000000ffff0a00000180000a0000008bb2c97000030000000000000000050000000501320200000000000000020c000c000c000100";
    let out = python(&["netcontrol", &bus.xpub, &bus.xsub, "catchd.netcontrol", add]);
    let answers: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(answers[0]["name"], "NetControl::broker_rule_added", "{out}");
    assert_eq!(answers[0]["args"][0], 0);
    assert_eq!(answers[0]["rule_echoed"], true);
    assert_eq!(
        answers[1]["name"], "NetControl::broker_rule_removed",
        "{out}"
    );
    assert_eq!(answers[1]["rule_echoed"], true);
    // The rule was a registry block for 10 minutes, ended by the removal.
    let q = m.json("/bhr/api/query/10.0.0.1", &f.ops);
    assert_eq!(q[0]["source"], "zeek");
    assert_eq!(q[0]["why"], "NetControl rule 2");
    let b = m.json("/bhr/api/blocks/1/", &f.ops);
    assert!(b["unblock_at"].is_string(), "{b}");
    assert!(
        m.json("/bhr/api/expected_blocks/", &f.ops)
            .as_array()
            .unwrap()
            .is_empty()
    );

    // The Zeek package's plugin says hello; catchd answers so it activates.
    let l = Listener::start(&bus, 30, &["catchd.netcontrol"]);
    send(
        &bus,
        "catchd.netcontrol",
        "zeek_manager",
        &encode(&zeek::netcontrol_hello(5)),
    );
    let ready = l.next("Catchd::netcontrol_ready", 10);
    assert_eq!(ready["args"], json!([5]));

    // A rule with a 1 s expiry: added, then timed out by catchd (can_expire = T).
    let rule = zeek::drop_rule(
        "198.51.100.0/24".parse().unwrap(),
        Interval::from_secs(1),
        "scan",
        "7",
        7,
    );
    let e = Event::new(zeek::BROKER_ADD_RULE, vec![B::Count(3), rule]);
    send(&bus, "catchd.netcontrol", "zeek_manager", &encode(&e));
    let added = l.next("NetControl::broker_rule_added", 10);
    assert_eq!(added["args"][0], 3);
    assert_eq!(added["args"][1][8], "7");
    let t = l.next("NetControl::broker_rule_timeout", 10);
    assert_eq!(t["args"][0], 3);
    assert_eq!(t["args"][1][3]["interval"], 1_000_000_000i64);
    assert_eq!(t["args"][2], json!([null, null, null]), "FlowInfo()");

    // Not a DROP of an address: broker_rule_error, rule echoed.
    let mut bad = zeek::drop_rule(
        "192.0.2.9/32".parse().unwrap(),
        Interval::from_secs(60),
        "",
        "8",
        8,
    );
    if let B::Vector(f) = &mut bad {
        f[0] = B::enum_value("NetControl::WHITELIST");
    }
    send(
        &bus,
        "catchd.netcontrol",
        "zeek_manager",
        &encode(&Event::new(zeek::BROKER_ADD_RULE, vec![B::Count(0), bad])),
    );
    let err = l.next("NetControl::broker_rule_error", 10);
    assert_eq!(err["args"][1][0]["enum"], "NetControl::WHITELIST");
    assert!(
        err["args"][2].as_str().unwrap().contains("DROP rules only"),
        "{err}"
    );
    assert!(m.terminate().success());
}

#[test]
fn bad_bus_arguments_exit_2_and_name_the_flag() {
    let o = catchd()
        .args(["proxy", "--xpub", "localhost:5555"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--xpub") && err.contains("not a ZeroMQ endpoint"),
        "{err}"
    );
    let o = catchd().args(["run", "--role", "worker"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("manager"));
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("c.toml");
    std::fs::write(&conf, "[bus]\nformat = \"msgpack\"\n").unwrap();
    let o = catchd().args(["check-config"]).arg(&conf).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("bus.format"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn a_json_manager_sends_broker_json_and_still_reads_binary() {
    let bus = Bus::start();
    let f = Files::new("[bus]\nformat = \"broker-json-v1\"\n");
    let m = manager(&f, &bus, &[]);
    let l = Listener::start(&bus, 30, &["zeek.cluster.worker"]);
    send(
        &bus,
        "zeek.cluster.manager",
        "zeek_worker-1",
        &encode(&zeek::add(
            catchd::addr::Addr::from(std::net::Ipv4Addr::new(192, 0, 2, 5)),
            "json",
        )),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let msg = loop {
        let v =
            l.rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("a message from the manager");
        if v["topic"] == "zeek.cluster.worker" {
            break v;
        }
    };
    assert_eq!(msg["format"], "broker-json-v1");
    let payload: Value = serde_json::from_str(msg["payload"].as_str().unwrap()).unwrap();
    assert_eq!(payload["@data-type"], "vector");
    let body = &payload["data"][2]["data"];
    assert_eq!(body[0]["data"], "NetControl::catch_release_block_new");
    assert_eq!(
        body[1]["data"][0],
        json!({"@data-type": "address", "data": "192.0.2.5"})
    );
    assert_eq!(body[1]["data"][1]["data"][5]["data"], "json");
    assert!(m.terminate().success());
}
