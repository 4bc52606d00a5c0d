//! Zeek's cluster bus with real Zeek nodes: a Zeek worker (ZeroMQ backend, started with
//! `CLUSTER_NODE`) behind `catchd proxy`, with `catchd run` as its catch-and-release
//! manager.

use std::path::Path;
use std::process::Command;

use super::differential::synth::{L4, Pkt, Vlan};
use super::differential::write_pcap;
use super::{CurveKeys, Zeek, zeek};
use crate::bus::{Bus, eventually, manager, metric};
use crate::daemon::Files;

/// Datagrams from `.0` to `.1`, one every `.3` ms from `.2` ms after 1700000000, `.4` of
/// them.
type Flow = ([u8; 4], [u8; 4], u64, u64, u32);

/// A pcap of the flows' UDP datagrams, each from a port of its own.
fn udp_trace(path: &Path, flows: &[Flow]) {
    let mut pkts: Vec<Pkt> = flows
        .iter()
        .flat_map(|&(src, dst, start_ms, every_ms, n)| {
            (0..n).map(move |i| Pkt {
                ts_us: (1_700_000_000_000 + start_ms + u64::from(i) * every_ms) * 1000,
                src: src.into(),
                dst: dst.into(),
                l4: L4::Udp {
                    sport: 30_000 + i as u16,
                    dport: 53,
                },
                payload: 6,
                vlan: Vlan::None,
            })
        })
        .collect();
    pkts.sort_by_key(|p| p.ts_us);
    write_pcap(path, &pkts);
}

/// A worker's scripts: the cluster layout, the ZeroMQ backend pointed at `bus`, and
/// catch-and-release; at the end it prints what its `blocks` table holds for `watched`.
fn worker_scripts(dir: &Path, bus: &Bus, watched: &str, curve: Option<&CurveKeys>) {
    std::fs::write(
        dir.join("cluster-layout.zeek"),
        "redef Cluster::manager_is_logger = T;\n\
         redef Cluster::nodes = {\n\
         \t[\"manager\"] = [$node_type=Cluster::MANAGER, $ip=127.0.0.1],\n\
         \t[\"worker-1\"] = [$node_type=Cluster::WORKER, $ip=127.0.0.1, $manager=\"manager\"],\n\
         };\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("worker.zeek"),
        format!(
            "# The backend first: the cluster framework checks for one as it loads.\n\
             @load policy/frameworks/cluster/backend/zeromq\n\
             @load base/frameworks/netcontrol\n\
             @load policy/frameworks/netcontrol/catch-and-release\n\
             redef Cluster::Backend::ZeroMQ::run_proxy_thread = F;\n\
             redef Cluster::Backend::ZeroMQ::connect_xpub_endpoint = \"{xsub}\";\n\
             redef Cluster::Backend::ZeroMQ::connect_xsub_endpoint = \"{xpub}\";\n\
             {curve}\
             event NetControl::catch_release_block_new(a: addr, b: NetControl::BlockInfo)\n\
             \t{{ print fmt(\"block_new %s %s\", a, b); }}\n\
             event zeek_done()\n\
             \t{{ print fmt(\"final %s\", NetControl::get_catch_release_info({watched})); }}\n",
            xsub = bus.xsub,
            xpub = bus.xpub,
            curve = curve.map(|k| k.zeek_redefs(false)).unwrap_or_default(),
        ),
    )
    .unwrap();
}

#[test]
fn a_zeek_worker_reports_a_sighting_and_catchd_reblocks_it() {
    let Some(z) = zeek() else { return };
    worker_reblock(z, None);
}

/// The same over an encrypted bus: `catchd proxy` as CURVE server (keys from Zeek's
/// environment variables), the Zeek worker and `catchd run` as CURVE clients.
#[test]
fn the_same_over_curve_with_catchd_hosting_the_proxy() {
    let Some(z) = zeek() else { return };
    worker_reblock(z, Some(&CurveKeys::new()));
}

fn worker_reblock(z: &Zeek, curve: Option<&CurveKeys>) {
    let (bus, _proxy_log) = match curve {
        Some(k) => Bus::start_with_env(&k.proxy_env()),
        None => Bus::start_with_env(&[]),
    };
    let f = Files::new(&format!(
        "{}[cnr]\nintervals = \"1s,20s,40s\"\nsweep_interval = \"1s\"\n",
        curve.map(CurveKeys::bus_toml).unwrap_or_default()
    ));
    let m = manager(&f, &bus, &[]);
    let dir = tempfile::tempdir().unwrap();
    // Background from 10.0.0.1 from the start; the watched 10.0.0.66 from 6 s on.
    udp_trace(
        &dir.path().join("t.pcap"),
        &[
            ([10, 0, 0, 1], [10, 0, 0, 2], 0, 500, 24),
            ([10, 0, 0, 66], [10, 0, 0, 2], 6_000, 500, 12),
        ],
    );
    worker_scripts(dir.path(), &bus, "10.0.0.66", curve);
    // Pseudo-realtime, so the trace takes 12 s and the bus has time to work.
    let zeek_run = run_worker(z, dir.path());
    // Once the worker is up, catchd drops the address: blocked 1 s, watched 20 s.
    std::thread::sleep(std::time::Duration::from_secs(3));
    cr_drop(&m, &f, "10.0.0.66", "from%20the%20test");
    let out = zeek_run.join().unwrap();
    // The worker had catchd's first BlockInfo, saw the address after its release,
    // told catchd (catch_release_encountered), and holds the re-block catchd sent.
    assert!(out.contains("block_new 10.0.0.66"), "{out}\n{}", m.log());
    let last = out.lines().find(|l| l.starts_with("final ")).unwrap_or("");
    assert!(last.contains("num_reblocked=1"), "{out}\n{}", m.log());
    assert!(last.contains("current_interval=1"), "{out}");
    assert!(last.contains("location=from the test"), "{out}");
    let seen = std::fs::read_to_string(f.logs.join("netcontrol_catch_release.log")).unwrap();
    assert!(seen.contains("NetControl::SEEN_AGAIN"), "{seen}");
    assert!(m.terminate().success());
}

/// `POST /api/v1/cr/drop` on catchd with the blocker's token (`location` URL-encoded).
#[track_caller]
fn cr_drop(m: &crate::serve::process::Server, f: &Files, addr: &str, location: &str) {
    let (status, body) = m.request(
        "POST",
        "/api/v1/cr/drop",
        Some(&f.zeek),
        Some((
            "application/x-www-form-urlencoded",
            &format!("addr={addr}&location={location}"),
        )),
    );
    assert!(status == 200 || status == 201, "{status} {body}");
}

/// Runs the worker on the trace in pseudo-realtime in a thread; its stdout at the end.
fn run_worker(z: &Zeek, dir: &Path) -> std::thread::JoinHandle<String> {
    let bin = z.bin.clone();
    let path = z.path_with(dir);
    let dir = dir.to_path_buf();
    std::thread::spawn(move || {
        let out = Command::new(&bin)
            .args(["-r", "t.pcap", "--pseudo-realtime=1", "worker.zeek"])
            .env("CLUSTER_NODE", "worker-1")
            .env("ZEEKPATH", path)
            .current_dir(&dir)
            .output()
            .expect("running zeek");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "worker failed: {stderr}");
        format!("{}{stderr}", String::from_utf8_lossy(&out.stdout))
    })
}

/// An encrypted proxy admits only the cluster's client key, and everyone says so: the
/// proxy logs the refusal, a catchd node with other keys (or none) logs why it cannot
/// join and counts it, and a Zeek worker with other keys stops as Zeek does on a failed
/// CURVE handshake.
#[test]
fn an_encrypted_proxy_refuses_other_keys_and_every_side_says_so() {
    let Some(z) = zeek() else { return };
    let keys = CurveKeys::new();
    let (bus, proxy_log) = Bus::start_with_env(&keys.proxy_env());

    // A catchd node with a client keypair the proxy does not know.
    let wrong = keys.with_other_client();
    let f = Files::new(&wrong.bus_toml());
    let m = manager(&f, &bus, &[]);
    eventually(20, "the refusal in the node's log", || {
        m.log()
            .contains("refused this node's CURVE keys")
            .then_some(())
    });
    assert!(metric(&m, "catchd_bus_handshake_failures_total") >= 1);
    let refused = eventually(10, "the refusal in the proxy's log", || {
        proxy_log
            .try_iter()
            .find(|l| l.contains("refused a peer whose CURVE client key"))
    });
    assert!(refused.contains("127.0.0.1"), "{refused}");
    assert!(m.terminate().success());

    // A catchd node without CURVE against the encrypted proxy.
    let f = Files::new("");
    let m = manager(&f, &bus, &[]);
    eventually(20, "the mismatch in the node's log", || {
        m.log()
            .contains("one end uses CURVE and the other does not")
            .then_some(())
    });
    assert!(m.terminate().success());

    // A Zeek worker with the other keypair.
    let dir = tempfile::tempdir().unwrap();
    udp_trace(
        &dir.path().join("t.pcap"),
        &[([10, 0, 0, 1], [10, 0, 0, 2], 0, 500, 20)],
    );
    worker_scripts(dir.path(), &bus, "10.0.0.66", Some(&wrong));
    let out = Command::new(&z.bin)
        .args(["-r", "t.pcap", "--pseudo-realtime=1", "worker.zeek"])
        .env("CLUSTER_NODE", "worker-1")
        .env("ZEEKPATH", z.path_with(dir.path()))
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("Handshake for socket"), "{stderr}");
}

/// catch-and-release of networks reaches a real Zeek node: with `[cnr.networks]` on,
/// two blocked addresses of one /24 make catchd drop the /24, and a Zeek node that loads
/// `zeek-scripts/networks.zeek` and subscribes to `catchd.catch_release` gets
/// `Catchd::net_block_new` with the network (Zeek's `subnet`) and its `BlockInfo`, and
/// the network's log line as `Catchd::log_catch_release_net`.
#[test]
fn a_zeek_node_gets_catchds_network_events() {
    let Some(z) = zeek() else { return };
    let (bus, _proxy_log) = Bus::start_with_env(&[]);
    let f = Files::new(
        "[cnr]\nintervals = \"30s,1m\"\nsweep_interval = \"1s\"\n\
         [cnr.networks]\nprefix4 = 24\nthreshold = 2\nwindow = \"1h\"\n",
    );
    let m = manager(&f, &bus, &[]);
    let dir = tempfile::tempdir().unwrap();
    udp_trace(
        &dir.path().join("t.pcap"),
        &[([10, 0, 0, 1], [10, 0, 0, 2], 0, 500, 20)],
    );
    worker_scripts(dir.path(), &bus, "198.51.100.1", None);
    let networks = crate::support::root().join("zeek-scripts/networks.zeek");
    let mut script = std::fs::read_to_string(dir.path().join("worker.zeek")).unwrap();
    script.push_str(&format!(
        "@load {}\n\
         event zeek_init()\n\
         \t{{ Cluster::subscribe(\"catchd.catch_release\"); }}\n\
         event Catchd::net_block_new(n: subnet, bi: NetControl::BlockInfo)\n\
         \t{{ print fmt(\"net_block_new %s %s\", n, bi); }}\n\
         event Catchd::log_catch_release_net(rec: Catchd::CatchReleaseNetInfo)\n\
         \t{{ print fmt(\"net_log %s %s %s\", rec$net, rec$action, rec$block_interval); }}\n",
        networks.display()
    ));
    std::fs::write(dir.path().join("worker.zeek"), script).unwrap();
    let zeek_run = run_worker(z, dir.path());
    std::thread::sleep(std::time::Duration::from_secs(3));
    for a in ["198.51.100.1", "198.51.100.2"] {
        cr_drop(&m, &f, a, "net%20test");
    }
    let out = zeek_run.join().unwrap();
    let new = out
        .lines()
        .find(|l| l.starts_with("net_block_new 198.51.100.0/24 "))
        .unwrap_or_else(|| panic!("no net_block_new:\n{out}\n{}", m.log()));
    assert!(new.contains("num_reblocked=0, current_interval=0"), "{new}");
    // The network's block is the registry block after the two addresses' (ids 1 and 2).
    assert!(new.contains("current_block_id=3"), "{new}");
    assert!(
        new.contains("location=catch-and-release: 2 addresses blocked within 1h]"),
        "{new}"
    );
    assert!(
        out.lines()
            .any(|l| l == "net_log 198.51.100.0/24 NetControl::DROPPED 30.0 secs"),
        "{out}"
    );
    let log = std::fs::read_to_string(f.logs.join("netcontrol_catch_release_net.log")).unwrap();
    assert!(
        log.contains("198.51.100.0/24\tNetControl::DROPPED"),
        "{log}"
    );
    assert!(m.terminate().success());
}
