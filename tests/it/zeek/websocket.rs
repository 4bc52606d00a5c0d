//! catchd joining a Zeek cluster through Zeek's WebSocket API, and staying joined when
//! Zeek restarts. (The package README's WebSocket example is in `plugin.rs`; a catchd
//! sensor feeding a Zeek manager through it is in `manager.rs`.)

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use super::{Running, Zeek, zeek};
use crate::bus::{eventually, free_port, metric};
use crate::daemon::Files;
use crate::serve::process::Server;

/// A standalone Zeek serving the WebSocket API on `port` (with TLS from `tls`: the
/// certificate and key files), its ZeroMQ proxy on ports of the test's, announcing `addr`
/// as watched (`catch_release_block_new`) every half second, as a manager does.
fn start_zeek(z: &Zeek, dir: &Path, port: u16, addr: &str, tls: Option<(&Path, &Path)>) -> Running {
    let (xpub, xsub) = (free_port(), free_port());
    let tls = tls
        .map(|(c, k)| {
            format!(
                ", $tls_options=Cluster::WebSocketTLSOptions($cert_file=\"{}\", $key_file=\"{}\")",
                c.display(),
                k.display()
            )
        })
        .unwrap_or_default();
    std::fs::write(
        dir.join("ws.zeek"),
        format!(
            "@load frameworks/cluster/backend/zeromq\n\
             @load base/frameworks/netcontrol\n\
             @load policy/frameworks/netcontrol/catch-and-release\n\
             redef Cluster::backend = Cluster::CLUSTER_BACKEND_ZEROMQ;\n\
             redef Cluster::Backend::ZeroMQ::run_proxy_thread = T;\n\
             redef Cluster::Backend::ZeroMQ::listen_xpub_endpoint = \"tcp://127.0.0.1:{xpub}\";\n\
             redef Cluster::Backend::ZeroMQ::listen_xsub_endpoint = \"tcp://127.0.0.1:{xsub}\";\n\
             redef Cluster::Backend::ZeroMQ::connect_xpub_endpoint = \"tcp://127.0.0.1:{xsub}\";\n\
             redef Cluster::Backend::ZeroMQ::connect_xsub_endpoint = \"tcp://127.0.0.1:{xpub}\";\n\
             redef exit_only_after_terminate = T;\n\
             global announce: event();\n\
             event announce()\n\
             \t{{\n\
             \tlocal b = NetControl::BlockInfo($watch_until=double_to_time(time_to_double(current_time()) + 60.0), $current_interval=0, $current_block_id=\"2\", $location=\"zeek\");\n\
             \tCluster::publish(\"zeek.cluster.worker\", NetControl::catch_release_block_new, {addr}, b);\n\
             \tschedule 500msec {{ announce() }};\n\
             \t}}\n\
             event zeek_init()\n\
             \t{{\n\
             \tCluster::listen_websocket([$listen_addr=127.0.0.1, $listen_port={port}/tcp{tls}]);\n\
             \tschedule 500msec {{ announce() }};\n\
             \t}}\n"
        ),
    )
    .unwrap();
    Running(
        Command::new(&z.bin)
            .args(["-b", "./ws.zeek"])
            .env("ZEEKPATH", z.path_with(Path::new(".")))
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("zeek.err")).unwrap(),
            ))
            .spawn()
            .expect("starting zeek"),
    )
}

fn replica_has(s: &Server, addr: &str) -> Option<Value> {
    let (status, b) = s.request("GET", &format!("/api/v1/cr/{addr}"), None, None);
    (status == 200)
        .then(|| serde_json::from_str::<Value>(&b).ok())
        .flatten()
        .filter(|v| v["location"] == "zeek")
}

#[test]
fn a_sensor_joins_through_the_websocket_api_and_rejoins_after_zeek_restarts() {
    let Some(z) = zeek() else { return };
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    // catchd first: it waits for Zeek, retrying.
    let f = Files::new("");
    let s = f.start(&[
        "--role",
        "sensor",
        "--node-id",
        "tap1",
        "--bus-websocket",
        &format!("ws://127.0.0.1:{port}"),
    ]);
    let mut first = start_zeek(z, dir.path(), port, "10.9.9.1", None);
    let v = eventually(30, "Zeek's block_new in the replica", || {
        replica_has(&s, "10.9.9.1")
    });
    assert_eq!(v["current_interval"], 0, "{v}");
    assert!(
        s.log().contains("joined Zeek's WebSocket API"),
        "{}",
        s.log()
    );

    // Zeek goes away: the sensor says so and keeps trying.
    first.stop();
    eventually(10, "the sensor noticing", || {
        s.log()
            .contains("the WebSocket connection ended")
            .then_some(())
    });
    eventually(10, "a failed attempt, counted", || {
        (metric(&s, "catchd_bus_handshake_failures_total") >= 1).then_some(())
    });

    // A new Zeek on the same port: the sensor joins it again, subscribed as before.
    let _second = start_zeek(z, dir.path(), port, "10.9.9.2", None);
    eventually(40, "the new Zeek's block_new in the replica", || {
        replica_has(&s, "10.9.9.2")
    });
    assert_eq!(s.log().matches("joined Zeek's WebSocket API").count(), 2);
    assert!(s.terminate().success());
}

/// With TLS (`wss://`): a certificate the system does not trust is refused, and named;
/// with it as `bus.websocket_ca_file` the sensor joins.
#[test]
fn a_sensor_joins_zeeks_websocket_api_over_tls() {
    let Some(z) = zeek() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = free_port();
    let _zeek = start_zeek(z, dir.path(), port, "10.9.9.3", Some((&cert, &key)));
    let url = format!("wss://localhost:{port}");

    let f = Files::new("");
    let s = f.start(&[
        "--role",
        "sensor",
        "--node-id",
        "tap1",
        "--bus-websocket",
        &url,
    ]);
    eventually(20, "the refused certificate in the log", || {
        s.log().contains("bus.websocket_ca_file").then_some(())
    });
    assert!(s.log().contains("invalid peer certificate"), "{}", s.log());
    assert!(replica_has(&s, "10.9.9.3").is_none());
    assert!(s.terminate().success());

    let f = Files::new(&format!(
        "[bus]\nwebsocket = \"{url}\"\nwebsocket_ca_file = \"{}\"\n",
        cert.display()
    ));
    let s = f.start(&["--role", "sensor", "--node-id", "tap1"]);
    eventually(30, "Zeek's block_new over TLS", || {
        replica_has(&s, "10.9.9.3")
    });
    assert!(s.terminate().success());
}

#[test]
fn bad_websocket_settings_are_refused_with_the_key() {
    for (conf, args, says) in [
        (
            "[bus]\nwebsocket = \"http://zeek:27759\"\n",
            vec!["--bus"],
            "bus.websocket",
        ),
        (
            "[bus]\nwebsocket = \"ws://zeek\"\nproxy = true\n",
            vec!["--bus"],
            "bus.proxy",
        ),
        (
            "[bus]\nwebsocket_ca_file = \"/ca.pem\"\n",
            vec!["--bus"],
            "bus.websocket_ca_file",
        ),
        (
            "",
            vec!["--bus-websocket", "ws://zeek/v2"],
            "--bus-websocket",
        ),
        (
            "",
            vec!["--bus-websocket", "ws://zeek", "--bus-proxy"],
            "--bus-websocket",
        ),
    ] {
        let f = Files::new(conf);
        let out = Command::new(env!("CARGO_BIN_EXE_catchd"))
            .args(["run", "--config", f.conf.to_str().unwrap()])
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{conf} {args:?}: {stderr}");
        assert!(stderr.contains(says), "{conf} {args:?}: {stderr}");
    }
}
