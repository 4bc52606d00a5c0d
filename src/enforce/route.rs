//! `ip route` blackhole routes (IPv4 and IPv6), as BHR's null routing and BlockHosts'
//! `--ipblock="ip route"` do. catchd's routes carry their own protocol number
//! (`proto 99` by default), so that routes put in by people or routing daemons are never
//! listed or removed. A batch is one `ip -batch -`.

use std::collections::HashSet;
use std::fmt::Write as _;

use ipnet::IpNet;

use super::{Error, Held, Rule, Runner};

/// The blackhole-route backend.
#[derive(Debug)]
pub struct Route {
    proto: String,
    runner: Runner,
}

impl Route {
    pub fn new(proto: u8, runner: Runner) -> Route {
        Route {
            proto: proto.to_string(),
            runner,
        }
    }

    pub async fn list(&mut self) -> Result<Vec<Held>, Error> {
        let mut out = Vec::new();
        for fam in ["-4", "-6"] {
            let argv: Vec<String> = [
                "ip",
                fam,
                "route",
                "show",
                "table",
                "main",
                "type",
                "blackhole",
                "proto",
                &self.proto,
            ]
            .iter()
            .map(|s| (*s).to_string())
            .collect();
            let text = self.runner.read(&argv).await?;
            for line in text.lines() {
                let mut w = line.split_whitespace();
                if w.next() != Some("blackhole") {
                    continue;
                }
                let Some(dst) = w.next() else { continue };
                let cidr = dst
                    .parse::<IpNet>()
                    .ok()
                    .or_else(|| dst.parse::<std::net::IpAddr>().ok().map(IpNet::from));
                if let Some(cidr) = cidr {
                    out.push(Held { cidr, until: None });
                }
            }
        }
        Ok(out)
    }

    pub async fn apply(&mut self, add: &[Rule], remove: &[IpNet]) -> Result<(), Error> {
        // `replace` adds or leaves alone; deleting an absent route fails, so only what is
        // there is deleted.
        let present: HashSet<IpNet> = if remove.is_empty() || self.runner.dry_run() {
            remove.iter().map(IpNet::trunc).collect()
        } else {
            self.list().await?.into_iter().map(|h| h.cidr).collect()
        };
        let mut s = String::new();
        for c in remove {
            let c = c.trunc();
            if present.contains(&c) {
                let _ = writeln!(s, "route del blackhole {c} proto {}", self.proto);
            }
        }
        for r in add {
            let _ = writeln!(
                s,
                "route replace blackhole {} proto {}",
                r.cidr.trunc(),
                self.proto
            );
        }
        if s.is_empty() {
            return Ok(());
        }
        let argv: Vec<String> = ["ip", "-batch", "-"]
            .iter()
            .map(|s| (*s).to_string())
            .collect();
        self.runner.change(&argv, Some(s.as_bytes())).await?;
        Ok(())
    }
}
