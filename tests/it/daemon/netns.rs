//! A network namespace joined to the root namespace by a veth pair, for live capture
//! tests. catchd captures on the root end; the namespace sends from its own address.
//! Nothing is added to the root namespace but the veth end itself (no address, no route):
//! the namespace reaches it through a permanent neighbour entry. Dropping the value
//! deletes the namespace, which deletes the pair.

use std::process::Command;

fn ip(args: &[&str]) -> std::process::Output {
    Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip` ({e}); install iproute2"))
}

#[track_caller]
fn must(args: &[&str]) -> String {
    let o = ip(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success(),
        "ip {} failed: {}{}",
        args.join(" "),
        err.trim(),
        permission_hint(&err)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A hint about privileges, only when the error is about them.
pub fn permission_hint(err: &str) -> &'static str {
    let denied = err.contains("Operation not permitted") || err.contains("Permission denied");
    if denied && !nix::unistd::Uid::effective().is_root() {
        " (live capture tests need root, i.e. CAP_NET_ADMIN and CAP_NET_RAW)"
    } else if denied {
        " (running as root, but the capability is missing here: CAP_NET_ADMIN and CAP_NET_RAW, or a mount namespace that allows network namespaces)"
    } else {
        ""
    }
}

pub struct Netns {
    pub name: String,
    /// The veth end in the root namespace (catchd captures here).
    pub root_if: String,
    ns_if: String,
    /// The namespace's address.
    pub addr: String,
    /// The address packets are sent to (the root end; nothing answers).
    pub peer: String,
}

impl Netns {
    /// A namespace with address `10.203.<net>.66`, sending towards `10.203.<net>.1`.
    pub fn new(tag: &str, net: u8) -> Netns {
        let id = std::process::id() % 100_000;
        let name = format!("cd-{tag}-{id}");
        let root_if = format!("cdr{tag}{id}");
        let ns_if = format!("cdn{tag}{id}");
        assert!(root_if.len() <= 15, "{root_if}");
        let _ = ip(&["netns", "del", &name]);
        must(&["netns", "add", &name]);
        let n = Netns {
            name,
            root_if,
            ns_if,
            addr: format!("10.203.{net}.66"),
            peer: format!("10.203.{net}.1"),
        };
        must(&[
            "link", "add", &n.root_if, "type", "veth", "peer", "name", &n.ns_if,
        ]);
        must(&["link", "set", &n.ns_if, "netns", &n.name]);
        let _ = std::fs::write(
            format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", n.root_if),
            "1",
        );
        must(&["link", "set", &n.root_if, "up"]);
        must(&["-n", &n.name, "link", "set", "lo", "up"]);
        must(&[
            "-n",
            &n.name,
            "addr",
            "add",
            &format!("{}/24", n.addr),
            "dev",
            &n.ns_if,
        ]);
        must(&["-n", &n.name, "link", "set", &n.ns_if, "up"]);
        let mac = std::fs::read_to_string(format!("/sys/class/net/{}/address", n.root_if))
            .unwrap()
            .trim()
            .to_string();
        must(&[
            "-n",
            &n.name,
            "neigh",
            "add",
            &n.peer,
            "lladdr",
            &mac,
            "dev",
            &n.ns_if,
            "nud",
            "permanent",
        ]);
        n
    }

    /// The veth end inside the namespace.
    pub fn ns_if(&self) -> &str {
        &self.ns_if
    }

    /// Sends `count` UDP datagrams from the namespace's address to the peer.
    #[track_caller]
    pub fn send_udp(&self, count: u32) {
        let script = format!(
            "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             for i in range({count}):\n    s.sendto(b'catchd test', ('{}', 9999))\n",
            self.peer
        );
        let o = Command::new("ip")
            .args(["netns", "exec", &self.name, "python3", "-c", &script])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
        let _ = ip(&["link", "del", &self.root_if]);
    }
}
