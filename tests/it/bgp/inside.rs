//! `[[blocker]] backend = "exabgp"` inside `catchd run`: ExaBGP runs `catchd
//! exabgp-bridge`, FRR is the border router, and a tap namespace feeds the capture.

use serde_json::json;

use super::exabgp::wait_for_or;
use super::{Border, Router, catchd_bin, start_exabgp, tools, wait_for};
use crate::bus::{send_from, udp_pcap};
use crate::daemon::netns::Netns;
use crate::daemon::{Files, cr_lines};

/// The configuration: a short ladder, one exabgp blocker on a socket in the test's
/// directory.
fn config(socket: &std::path::Path) -> String {
    format!(
        "[cnr]\nintervals = \"3s,40s,80s\"\nsweep_interval = \"1s\"\n\n\
         [[blocker]]\nident = \"bgp\"\nbackend = \"exabgp\"\nexabgp_socket = \"{}\"\n\
         poll_timeout = \"2s\"\nunblock_interval = \"1s\"\n",
        socket.display()
    )
}

#[test]
fn a_sighting_on_the_tap_reblocks_and_the_router_gets_the_longer_block() {
    tools();
    let mut b = Border::new("c", 5, Router::Frr);
    b.start_router();
    b.start_server();
    let tap = Netns::new("bt", 47);
    let socket = b.dir.path().join("exabgp.sock");
    let f = Files::new(&config(&socket));
    let d = f.start(&["-i", &tap.root_if]);
    let ex = start_exabgp(
        &b,
        &format!(
            "{} exabgp-bridge --socket {}",
            catchd_bin(),
            socket.display()
        ),
        &[("RUST_LOG", "catchd=info".into())],
    );
    let (a4, _) = b.attacker();
    let shown = || format!("{}\n{}\n{}", d.log(), ex.log(), b.router_log());
    wait_for_or(30, "the attacker reaching the server", &shown, || {
        b.attacker_connects(false)
    });

    // Dropped through catch-and-release: blocked 3 s, announced, black-holed.
    let (st, body) = d.post(
        "/api/v1/cr/drop",
        &f.zeek,
        &json!({"addr": a4, "location": "bgp test"}),
    );
    assert_eq!(st, 200, "{body}");
    wait_for_or(20, "the router black-holing the attacker", &shown, || {
        b.blackholes().contains(&a4)
    });
    assert!(b.has_blackhole_community(&a4), "{}", b.bgp_route(&a4));
    assert!(!b.attacker_connects(false));
    // The DROPPED line names the blocker.
    let dropped = cr_lines(&f.logs, "DROPPED");
    assert!(
        dropped
            .iter()
            .any(|l| l[2] == a4 && l.last().is_some_and(|p| p.contains("bgp"))),
        "{dropped:?}"
    );
    // Released after 3 s: withdrawn, and the path works again.
    wait_for_or(20, "the withdrawal at the block's end", &shown, || {
        !b.blackholes().contains(&a4)
    });
    assert!(b.attacker_connects(false));

    // The attacker is seen on the tap while watched: blocked again, one step up (40 s).
    let pcap = f.dir.path().join("attacker.pcap");
    let src: std::net::Ipv4Addr = a4.parse().unwrap();
    let dst: std::net::Ipv4Addr = tap.peer.parse().unwrap();
    std::fs::write(&pcap, udp_pcap(src.octets(), dst.octets(), 1)).unwrap();
    send_from(&tap, &pcap);
    wait_for_or(20, "the re-block on the router", &shown, || {
        b.blackholes().contains(&a4)
    });
    assert_eq!(cr_lines(&f.logs, "SEEN_AGAIN").len(), 1);
    // Longer than the first block: still there after 6 s.
    std::thread::sleep(std::time::Duration::from_secs(6));
    assert!(b.blackholes().contains(&a4), "{}", shown());
    assert!(!b.attacker_connects(false));
}

#[test]
fn exabgp_and_catchd_restart_on_their_own_and_the_router_ends_up_right() {
    tools();
    let mut b = Border::new("d", 6, Router::Bird);
    b.start_router();
    let socket = b.dir.path().join("exabgp.sock");
    let f = Files::new(&config(&socket));
    let admin = format!(
        "Token {}",
        crate::serve::process::add_user(&f.db, "adm", "admin", None)
    );
    let d = f.start(&[]);
    let bridge = format!(
        "{} exabgp-bridge --socket {}",
        catchd_bin(),
        socket.display()
    );
    let mut ex = start_exabgp(&b, &bridge, &[("RUST_LOG", "catchd=info".into())]);
    let block = |d: &crate::serve::process::Server, cidr: &str| {
        let (st, body) = d.post(
            "/bhr/api/block",
            &f.zeek,
            &json!({"cidr": cidr, "source": "test", "why": "bgp", "duration": 600}),
        );
        assert_eq!(st, 201, "{body}");
    };
    let unblock = |d: &crate::serve::process::Server, cidr: &str| {
        let (st, body) = d.post(
            "/bhr/api/unblock_now",
            &admin,
            &json!({"cidr": cidr, "why": "done"}),
        );
        assert_eq!(st, 200, "{body}");
    };
    let (a, c) = ("10.214.6.2".to_string(), "10.214.6.4".to_string());
    let v6 = "fd13:214:6::2".to_string();
    block(&d, &a);
    block(&d, &v6);
    let has = |want: &[&String], not: &[&String]| {
        let bh = b.blackholes();
        want.iter().all(|w| bh.contains(w)) && not.iter().all(|w| !bh.contains(w))
    };
    wait_for_or(30, "a and its IPv6 twin black-holed", &|| ex.log(), || {
        has(&[&a, &v6], &[])
    });

    // ExaBGP restarts: a new bridge connects, and the blocker announces everything again.
    ex.stop();
    wait_for(30, "the routes gone with the session", || {
        b.blackholes().is_empty()
    });
    let ex = start_exabgp(&b, &bridge, &[("RUST_LOG", "catchd=info".into())]);
    wait_for_or(
        30,
        "everything again after ExaBGP's restart",
        &|| format!("{}\n{}", ex.log(), d.log()),
        || has(&[&a, &v6], &[]),
    );

    // catchd restarts (ExaBGP keeps announcing meanwhile; the bridge waits for it):
    // while it is down nothing changes; once back, a block ended while it was away is
    // withdrawn, and a new one announced.
    let d = {
        assert!(d.terminate().success());
        f.start(&[])
    };
    unblock(&d, &v6);
    block(&d, &c);
    wait_for_or(
        30,
        "the router matching the registry after catchd's restart",
        &|| format!("{}\n{}", ex.log(), d.log()),
        || has(&[&a, &c], &[&v6]),
    );
    assert!(ex.log().contains("connected to catchd"), "{}", ex.log());
}
