//! Linux capabilities: which ones this process holds, and what each of catchd's jobs
//! needs of them. catchd does not have to run as root: capturing needs `CAP_NET_RAW`,
//! firewall and route blockers need `CAP_NET_ADMIN` for the commands they run (so in the
//! ambient set, which survives `execve`), a port below the unprivileged range needs
//! `CAP_NET_BIND_SERVICE`, and switching to `daemon.user` needs `CAP_SETUID` and
//! `CAP_SETGID`. [`check`] says at start, in one message, what is missing for what,
//! instead of a permission error from deep inside libpcap or nft.

use std::fmt;

/// The capabilities catchd uses (numbers from `linux/capability.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cap {
    /// Switch group ids.
    Setgid = 6,
    /// Switch user ids.
    Setuid = 7,
    /// Bind ports below `net.ipv4.ip_unprivileged_port_start`.
    NetBindService = 10,
    /// Change firewall rules and routes.
    NetAdmin = 12,
    /// Open packet sockets (live capture).
    NetRaw = 13,
}

impl Cap {
    /// Its name as systemd and `capabilities(7)` spell it.
    pub fn name(self) -> &'static str {
        match self {
            Cap::Setgid => "CAP_SETGID",
            Cap::Setuid => "CAP_SETUID",
            Cap::NetBindService => "CAP_NET_BIND_SERVICE",
            Cap::NetAdmin => "CAP_NET_ADMIN",
            Cap::NetRaw => "CAP_NET_RAW",
        }
    }

    /// Its name as `setpriv` spells it (`net_raw`).
    fn setpriv_name(self) -> String {
        self.name()["CAP_".len()..].to_ascii_lowercase()
    }

    fn bit(self) -> u64 {
        1 << (self as u32)
    }
}

/// The capability sets of a process (`/proc/PID/status`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Caps {
    /// What it may use now.
    pub effective: u64,
    /// What survives `execve` into a program without file capabilities.
    pub ambient: u64,
    /// Its effective user id.
    pub uid: u32,
}

impl Caps {
    /// This process's.
    pub fn current() -> Caps {
        std::fs::read_to_string("/proc/self/status")
            .map(|s| Caps::parse(&s))
            .unwrap_or_else(|_| Caps {
                // Without /proc, assume what the user id suggests.
                effective: if nix::unistd::geteuid().is_root() {
                    u64::MAX
                } else {
                    0
                },
                ambient: 0,
                uid: nix::unistd::geteuid().as_raw(),
            })
    }

    /// From the text of `/proc/PID/status`.
    pub fn parse(status: &str) -> Caps {
        let mut c = Caps::default();
        for line in status.lines() {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let v = v.trim();
            match k {
                "CapEff" => c.effective = u64::from_str_radix(v, 16).unwrap_or(0),
                "CapAmb" => c.ambient = u64::from_str_radix(v, 16).unwrap_or(0),
                "Uid" => {
                    // Real, effective, saved, filesystem.
                    c.uid = v
                        .split_whitespace()
                        .nth(1)
                        .and_then(|u| u.parse().ok())
                        .unwrap_or(u32::MAX);
                }
                _ => {}
            }
        }
        c
    }

    /// Whether the process itself may use `cap`.
    pub fn has(&self, cap: Cap) -> bool {
        self.effective & cap.bit() != 0
    }

    /// Whether programs it runs get `cap` too: root's children get their effective
    /// set back at `execve`; anyone else's only the ambient set.
    pub fn passes_on(&self, cap: Cap) -> bool {
        if self.uid == 0 {
            self.has(cap)
        } else {
            self.ambient & cap.bit() != 0
        }
    }
}

/// What one part of the configuration needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Need {
    /// The capability.
    pub cap: Cap,
    /// Whether the programs catchd runs need it (a blocker's commands), not only catchd.
    pub for_children: bool,
    /// What it is for, as the message says it ("to capture on eth1").
    pub why: String,
}

impl Need {
    /// `cap` for catchd itself.
    pub fn own(cap: Cap, why: impl Into<String>) -> Need {
        Need {
            cap,
            for_children: false,
            why: why.into(),
        }
    }

    /// `cap` for the commands catchd runs.
    pub fn children(cap: Cap, why: impl Into<String>) -> Need {
        Need {
            cap,
            for_children: true,
            why: why.into(),
        }
    }
}

/// Capabilities the configuration needs and the process does not hold.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct Missing {
    /// The needs not met, in the configuration's order.
    pub needs: Vec<Need>,
    /// The process's sets.
    pub caps: Caps,
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut caps: Vec<Cap> = Vec::new();
        for (i, n) in self.needs.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            let how = if n.for_children {
                " in its ambient set (the commands it runs need it)"
            } else {
                ""
            };
            write!(f, "missing {}{how} {}", n.cap.name(), n.why)?;
            if !caps.contains(&n.cap) {
                caps.push(n.cap);
            }
        }
        let names: Vec<&str> = caps.iter().map(|c| c.name()).collect();
        let short: Vec<String> = caps
            .iter()
            .map(|c| format!("+{}", c.setpriv_name()))
            .collect();
        write!(
            f,
            " (running as uid {}). Run catchd as root, or give it {}: in its systemd unit \
             AmbientCapabilities={} (and the same in CapabilityBoundingSet=); by hand \
             setpriv --inh-caps {s} --ambient-caps {s} catchd …",
            self.caps.uid,
            if caps.len() == 1 { "it" } else { "them" },
            names.join(" "),
            s = short.join(","),
        )
    }
}

/// Checks `needs` against `caps`.
///
/// # Errors
/// [`Missing`], listing every need not met.
pub fn check_with(caps: Caps, needs: &[Need]) -> Result<(), Missing> {
    let missing: Vec<Need> = needs
        .iter()
        .filter(|n| {
            if n.for_children {
                !caps.passes_on(n.cap)
            } else {
                !caps.has(n.cap)
            }
        })
        .cloned()
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Missing {
            needs: missing,
            caps,
        })
    }
}

/// Checks `needs` against this process's capabilities.
///
/// # Errors
/// [`Missing`].
pub fn check(needs: &[Need]) -> Result<(), Missing> {
    check_with(Caps::current(), needs)
}

/// The lowest port an unprivileged process may bind (`net.ipv4.ip_unprivileged_port_start`).
pub fn unprivileged_port_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tcatchd\nUid:\t1000\t999\t999\t999\nGid:\t999\t999\t999\t999\n\
        CapInh:\t0000000000002000\nCapPrm:\t0000000000002000\nCapEff:\t0000000000002000\n\
        CapBnd:\t0000000000003000\nCapAmb:\t0000000000002000\n";

    #[test]
    fn status_is_read() {
        let c = Caps::parse(STATUS);
        assert_eq!(c.uid, 999);
        assert!(c.has(Cap::NetRaw));
        assert!(!c.has(Cap::NetAdmin));
        assert!(c.passes_on(Cap::NetRaw));
    }

    #[test]
    fn root_passes_on_its_effective_set_others_only_the_ambient_one() {
        let root = Caps {
            effective: Cap::NetAdmin.bit(),
            ambient: 0,
            uid: 0,
        };
        assert!(root.passes_on(Cap::NetAdmin));
        let user = Caps { uid: 999, ..root };
        assert!(user.has(Cap::NetAdmin) && !user.passes_on(Cap::NetAdmin));
    }

    #[test]
    fn the_message_names_each_capability_and_what_it_is_for() {
        let caps = Caps {
            effective: 0,
            ambient: 0,
            uid: 999,
        };
        let e = check_with(
            caps,
            &[
                Need::own(Cap::NetRaw, "to capture on eth1"),
                Need::own(Cap::NetRaw, "to capture on eth2"),
                Need::children(Cap::NetAdmin, "for blocker fw (nftables)"),
            ],
        )
        .unwrap_err();
        let m = e.to_string();
        assert!(
            m.starts_with("missing CAP_NET_RAW to capture on eth1; "),
            "{m}"
        );
        assert!(
            m.contains("missing CAP_NET_ADMIN in its ambient set"),
            "{m}"
        );
        assert!(
            m.contains("AmbientCapabilities=CAP_NET_RAW CAP_NET_ADMIN"),
            "{m}"
        );
        assert!(m.contains("--ambient-caps +net_raw,+net_admin"), "{m}");
        assert!(m.contains("uid 999"), "{m}");
        assert!(
            check_with(
                Caps {
                    effective: u64::MAX,
                    ambient: u64::MAX,
                    uid: 999
                },
                &e.needs
            )
            .is_ok()
        );
    }
}
