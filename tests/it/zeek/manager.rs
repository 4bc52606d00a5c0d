//! A real Zeek manager (ZeroMQ backend, hosting its own XPUB/XSUB proxy, running
//! catch-and-release) with a catchd sensor: the sensor's replica follows Zeek's
//! `block_new`/`block_delete`, and a packet from a released address, captured by the
//! sensor, makes Zeek re-block it.

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use super::{CurveKeys, Running, Zeek, zeek};
use crate::bus::{eventually, free_port, metric, send_from, udp_pcap};
use crate::daemon::Files;
use crate::daemon::netns::Netns;
use crate::serve::process::Server;

#[test]
fn a_catchd_sensor_feeds_a_zeek_manager_and_follows_its_blocks() {
    let Some(z) = zeek() else { return };
    sensor_with_zeek_manager(z, "zm", 43, None, false);
}

/// The same over an encrypted bus: Zeek's manager hosts a CURVE proxy, and the catchd
/// sensor joins with the server public key and the cluster's client keypair.
#[test]
fn the_same_over_curve_with_zeek_hosting_the_proxy() {
    let Some(z) = zeek() else { return };
    sensor_with_zeek_manager(z, "zc", 44, Some(&CurveKeys::new()), false);
}

/// The same through Zeek's WebSocket API: the Zeek manager serves it
/// (`Cluster::listen_websocket`), and the sensor joins with `--bus-websocket`.
#[test]
fn the_same_through_zeeks_websocket_api() {
    let Some(z) = zeek() else { return };
    sensor_with_zeek_manager(z, "zw", 45, None, true);
}

fn sensor_with_zeek_manager(
    z: &Zeek,
    ns_name: &str,
    ns_net: u8,
    curve: Option<&CurveKeys>,
    websocket: bool,
) {
    let ns = Netns::new(ns_name, ns_net);
    let ws_port = free_port();
    let (xpub, xsub) = (
        format!("tcp://127.0.0.1:{}", free_port()),
        format!("tcp://127.0.0.1:{}", free_port()),
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("cluster-layout.zeek"),
        "redef Cluster::manager_is_logger = T;\n\
         redef Cluster::nodes = {\n\
         \t[\"manager\"] = [$node_type=Cluster::MANAGER, $ip=127.0.0.1],\n\
         };\n",
    )
    .unwrap();
    // Zeek drops the address 3 s in (the sensor has joined by then): blocked 1 s,
    // watched 5 s. When the sensor reports it, Zeek re-blocks it; 2 s later it is
    // unblocked, which Zeek announces with block_delete.
    let addr = &ns.addr;
    std::fs::write(
        dir.path().join("manager.zeek"),
        format!(
            "@load policy/frameworks/cluster/backend/zeromq\n\
             @load base/frameworks/netcontrol\n\
             @load policy/frameworks/netcontrol/catch-and-release\n\
             redef Cluster::Backend::ZeroMQ::listen_xpub_endpoint = \"{xpub}\";\n\
             redef Cluster::Backend::ZeroMQ::listen_xsub_endpoint = \"{xsub}\";\n\
             redef Cluster::Backend::ZeroMQ::connect_xpub_endpoint = \"{xsub}\";\n\
             redef Cluster::Backend::ZeroMQ::connect_xsub_endpoint = \"{xpub}\";\n\
             {curve}\
             redef NetControl::catch_release_intervals = vector(1sec, 5sec, 10sec);\n\
             redef table_expire_interval = 1sec;\n\
             redef exit_only_after_terminate = T;\n\
             event NetControl::init() {{ NetControl::activate(NetControl::create_debug(T), 0); }}\n\
             event test_drop() {{ NetControl::drop_address_catch_release({addr}, \"zeek manager\"); }}\n\
             event test_unblock() {{ NetControl::unblock_address_catch_release({addr}, \"test\"); }}\n\
             event zeek_init() {{ schedule 3sec {{ test_drop() }}; {listen} }}\n\
             event NetControl::catch_release_encountered(a: addr)\n\
             \t{{ print fmt(\"%.3f encountered %s %s\", network_time(), a, NetControl::get_catch_release_info(a)); flush_all(); schedule 2sec {{ test_unblock() }}; }}\n\
             event test_drop() &priority=-10 {{ print fmt(\"%.3f dropped\", network_time()); flush_all(); }}\n",
            curve = curve.map(|k| k.zeek_redefs(true)).unwrap_or_default(),
            listen = if websocket {
                format!(
                    "Cluster::listen_websocket([$listen_addr=127.0.0.1, $listen_port={ws_port}/tcp]);"
                )
            } else {
                String::new()
            },
        ),
    )
    .unwrap();
    let _zeek = Running(
        Command::new(&z.bin)
            .arg("manager.zeek")
            .env("CLUSTER_NODE", "manager")
            .env("ZEEKPATH", z.path_with(Path::new(".")))
            .current_dir(dir.path())
            .stdout(std::fs::File::create(dir.path().join("zeek.out")).unwrap())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("zeek.err")).unwrap(),
            ))
            .spawn()
            .unwrap(),
    );

    // The sensor, capturing where the attacker's packets arrive.
    let f = Files::new(&curve.map(CurveKeys::bus_toml).unwrap_or_default());
    let ws_url = format!("ws://127.0.0.1:{ws_port}");
    let mut args = vec!["--role", "sensor", "--node-id", "tap1", "-i", &ns.root_if];
    if websocket {
        args.extend(["--bus-websocket", &ws_url]);
    } else {
        args.extend(["--bus-xpub", &xpub, "--bus-xsub", &xsub]);
    }
    let s = f.start(&args);
    let entry = |s: &Server| {
        let (status, b) = s.request("GET", &format!("/api/v1/cr/{addr}"), None, None);
        (status == 200)
            .then(|| serde_json::from_str::<Value>(&b).ok())
            .flatten()
    };
    // Zeek's block_new reaches the replica.
    let first = eventually(20, "Zeek's block_new in the replica", || {
        entry(&s).filter(|v| v["location"] == "zeek manager")
    });
    assert_eq!(first["current_interval"], 0, "{first}");
    // After the 1 s block, a packet from the address, captured by the sensor.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let pcap = f.dir.path().join("attacker.pcap");
    let src: std::net::Ipv4Addr = addr.parse().unwrap();
    let dst: std::net::Ipv4Addr = ns.peer.parse().unwrap();
    // One datagram: tcpreplay keeps a capture's timing, and Zeek unblocks 2 s after the
    // report.
    std::fs::write(&pcap, udp_pcap(src.octets(), dst.octets(), 1)).unwrap();
    send_from(&ns, &pcap);
    // Zeek re-blocked it one step up: its new BlockInfo reaches the replica.
    let zeek_said = || {
        format!(
            "zeek: {}{}\nsensor: {}\nencounters sent: {}, block_new {}, block_delete {}, expired {}, syncs {}",
            std::fs::read_to_string(dir.path().join("zeek.out")).unwrap_or_default(),
            std::fs::read_to_string(dir.path().join("zeek.err")).unwrap_or_default(),
            s.log(),
            metric(&s, "catchd_sensor_encounters_sent_total"),
            metric(&s, "catchd_sensor_block_new_total"),
            metric(&s, "catchd_sensor_block_delete_total"),
            metric(&s, "catchd_sensor_expired_total"),
            metric(&s, "catchd_sensor_syncs_total"),
        )
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut seen: Vec<String> = Vec::new();
    let again = loop {
        let e = entry(&s);
        let key = format!("{e:?}");
        if seen.last() != Some(&key) {
            seen.push(key);
        }
        if let Some(v) = e.filter(|v| v["current_interval"] == 1) {
            break v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no re-block from Zeek: {}\nfirst: {first}\nreplica: {seen:?}",
            zeek_said()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(again["num_reblocked"], 1, "{again}");
    assert_eq!(metric(&s, "catchd_sensor_encounters_sent_total"), 1);
    // Zeek unblocks it: block_delete empties the replica.
    eventually(10, "Zeek's block_delete in the replica", || {
        let (_, b) = s.request("GET", "/api/v1/cr", None, None);
        let v: Value = serde_json::from_str(&b).ok()?;
        v.as_array().is_some_and(Vec::is_empty).then_some(())
    });
    drop(_zeek);
    // A cluster node's logs are rotated when it stops (`<path>.<open time>.log`).
    let log = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("netcontrol_catch_release."))
        })
        .map(|p| std::fs::read_to_string(p).unwrap())
        .unwrap_or_default();
    let actions: Vec<&str> = log
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split('\t').nth(3))
        .collect();
    assert!(
        actions.starts_with(&[
            "NetControl::DROP_REQUESTED",
            "NetControl::DROPPED",
            "NetControl::UNBLOCK",
            "NetControl::SEEN_AGAIN",
            "NetControl::DROPPED",
        ]),
        "{log}\n{:?}",
        std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect::<Vec<_>>()
    );
    assert!(s.terminate().success());
}
