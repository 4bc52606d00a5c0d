//! iptables / ip6tables, alone or with ipset. A chain of catchd's own (`CATCHD`) is
//! hooked into INPUT and FORWARD. Without ipset it holds one `-s <cidr> -j DROP` rule per
//! block, written in one `iptables-restore --noflush` per family and batch; with ipset it
//! holds one rule per family matching a `hash:net` set (`<name>4`, `<name>6`) whose
//! entries carry the block's remaining time, written with one `ipset restore -exist`.

use std::collections::HashSet;
use std::fmt::Write as _;

use ipnet::IpNet;

use super::{Error, Held, Options, Rule, Runner, seconds_left};
use crate::time::{Interval, Time};

/// ipset's longest timeout (seconds); longer blocks are entered without one.
const IPSET_MAX_TIMEOUT: u64 = 2_147_483;

/// The iptables (and ipset) backend.
#[derive(Debug)]
pub struct Iptables {
    chain: String,
    hooks: Vec<String>,
    /// `[iptables, ip6tables]`.
    tools: [String; 2],
    /// The ipset name prefix, when sets hold the addresses.
    ipset: Option<String>,
    runner: Runner,
}

fn family(c: &IpNet) -> usize {
    usize::from(matches!(c, IpNet::V6(_)))
}

impl Iptables {
    pub fn new(o: &Options, ipset: Option<&str>, runner: Runner) -> Iptables {
        Iptables {
            chain: o.chain.clone(),
            hooks: o.hooks.clone(),
            tools: [o.iptables.clone(), o.ip6tables.clone()],
            ipset: ipset.map(String::from),
            runner,
        }
    }

    pub fn uses_ipset(&self) -> bool {
        self.ipset.is_some()
    }

    fn set_name(&self, fam: usize) -> String {
        format!("{}{}", self.ipset.as_deref().unwrap_or(""), [4, 6][fam])
    }

    fn argv(tool: &str, args: &[&str]) -> Vec<String> {
        std::iter::once(tool)
            .chain(args.iter().copied())
            .map(String::from)
            .collect()
    }

    /// Whether an iptables check (`-C`, `-S`) succeeds; in a dry run nothing exists.
    async fn exists(&self, tool: &str, args: &[&str]) -> bool {
        !self.runner.dry_run() && self.runner.read(&Self::argv(tool, args)).await.is_ok()
    }

    pub async fn setup(&mut self) -> Result<(), Error> {
        for fam in 0..2 {
            let tool = self.tools[fam].clone();
            let chain = self.chain.clone();
            if let Some(_prefix) = &self.ipset {
                let name = self.set_name(fam);
                let f = ["inet", "inet6"][fam];
                let argv = Self::argv(
                    "ipset",
                    &[
                        "create", &name, "hash:net", "family", f, "timeout", "0", "-exist",
                    ],
                );
                self.runner.change(&argv, None).await?;
            }
            if !self.exists(&tool, &["-w", "-S", &chain]).await {
                self.runner
                    .change(&Self::argv(&tool, &["-w", "-N", &chain]), None)
                    .await?;
            }
            if let Some(_prefix) = &self.ipset {
                let name = self.set_name(fam);
                let rule = ["-m", "set", "--match-set", &name, "src", "-j", "DROP"];
                let mut check = vec!["-w", "-C", &chain];
                check.extend(rule);
                if !self.exists(&tool, &check).await {
                    let mut add = vec!["-w", "-A", &chain];
                    add.extend(rule);
                    self.runner.change(&Self::argv(&tool, &add), None).await?;
                }
            }
            for hook in self.hooks.clone() {
                if !self.exists(&tool, &["-w", "-C", &hook, "-j", &chain]).await {
                    self.runner
                        .change(
                            &Self::argv(&tool, &["-w", "-I", &hook, "1", "-j", &chain]),
                            None,
                        )
                        .await?;
                }
            }
        }
        Ok(())
    }

    pub async fn list(&mut self, now: Time) -> Result<Vec<Held>, Error> {
        let mut out = Vec::new();
        for fam in 0..2 {
            if self.ipset.is_some() {
                let argv = Self::argv("ipset", &["save", &self.set_name(fam)]);
                match self.runner.read(&argv).await {
                    Ok(text) => out.extend(parse_ipset(&text, now)),
                    Err(_) if self.runner.dry_run() => {}
                    Err(e) => return Err(e.into()),
                }
            } else {
                let argv = Self::argv(&self.tools[fam], &["-w", "-S", &self.chain]);
                match self.runner.read(&argv).await {
                    Ok(text) => out.extend(parse_chain(&text, &self.chain)),
                    Err(_) if self.runner.dry_run() => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(out)
    }

    pub async fn apply(&mut self, add: &[Rule], remove: &[IpNet], now: Time) -> Result<(), Error> {
        if self.ipset.is_some() {
            let mut s = String::new();
            for c in remove {
                let _ = writeln!(s, "del {} {}", self.set_name(family(c)), c.trunc());
            }
            for r in add {
                let secs = seconds_left(r.until, now)
                    .filter(|s| *s <= IPSET_MAX_TIMEOUT)
                    .unwrap_or(0);
                let _ = writeln!(
                    s,
                    "add {} {} timeout {secs}",
                    self.set_name(family(&r.cidr)),
                    r.cidr.trunc()
                );
            }
            let argv = Self::argv("ipset", &["restore", "-exist"]);
            self.runner.change(&argv, Some(s.as_bytes())).await?;
            return Ok(());
        }
        // Only what is missing is added and only what is there removed, so the batch is
        // idempotent; one iptables-restore per family.
        let present: HashSet<IpNet> = self.list(now).await?.into_iter().map(|h| h.cidr).collect();
        for fam in 0..2 {
            let mut s = String::from("*filter\n");
            let mut any = false;
            let mut seen = HashSet::new();
            for c in remove.iter().filter(|c| family(c) == fam) {
                let c = c.trunc();
                if present.contains(&c) && seen.insert(c) {
                    let _ = writeln!(s, "-D {} -s {c} -j DROP", self.chain);
                    any = true;
                }
            }
            for r in add.iter().filter(|r| family(&r.cidr) == fam) {
                let c = r.cidr.trunc();
                if !present.contains(&c) && seen.insert(c) {
                    let _ = writeln!(s, "-A {} -s {c} -j DROP", self.chain);
                    any = true;
                }
            }
            if !any {
                continue;
            }
            s.push_str("COMMIT\n");
            let restore = format!("{}-restore", self.tools[fam]);
            let argv = Self::argv(&restore, &["-w", "--noflush"]);
            self.runner.change(&argv, Some(s.as_bytes())).await?;
        }
        Ok(())
    }
}

/// The `-s <cidr> -j DROP` rules of `iptables -S <chain>`.
fn parse_chain(text: &str, chain: &str) -> Vec<Held> {
    let mut out = Vec::new();
    for line in text.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        if w.len() == 6
            && w[0] == "-A"
            && w[1] == chain
            && w[2] == "-s"
            && w[4..] == ["-j", "DROP"]
            && let Ok(cidr) = w[3].parse::<IpNet>()
        {
            out.push(Held { cidr, until: None });
        }
    }
    out
}

/// The entries of `ipset save <set>` (`add catchd4 10.0.0.1 timeout 95`).
fn parse_ipset(text: &str, now: Time) -> Vec<Held> {
    let mut out = Vec::new();
    for line in text.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        if w.len() < 3 || w[0] != "add" {
            continue;
        }
        let cidr = match w[2].parse::<IpNet>() {
            Ok(c) => c,
            Err(_) => match w[2].parse::<std::net::IpAddr>() {
                Ok(a) => IpNet::from(a),
                Err(_) => continue,
            },
        };
        let until = w
            .iter()
            .position(|x| *x == "timeout")
            .and_then(|i| w.get(i + 1))
            .and_then(|s| s.parse::<i64>().ok())
            .filter(|s| *s > 0)
            .map(|s| now + Interval::from_secs(s));
        out.push(Held { cidr, until });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_chains_and_sets() {
        let chain = "-N CATCHD\n-A CATCHD -s 192.0.2.1/32 -j DROP\n-A CATCHD -s 10.0.0.0/8 -j ACCEPT\n\
                     -A CATCHD -s 2001:db8::/64 -j DROP\n";
        let h = parse_chain(chain, "CATCHD");
        assert_eq!(h.len(), 2);
        assert_eq!(h[1].cidr, "2001:db8::/64".parse::<IpNet>().unwrap());
        let now = Time::from_timeval(100, 0);
        let set = "create catchd4 hash:net family inet hashsize 1024 maxelem 65536 timeout 0\n\
                   add catchd4 10.0.0.1 timeout 95\nadd catchd4 10.1.0.0/16 timeout 0\n";
        let h = parse_ipset(set, now);
        assert_eq!(h[0].until, Some(Time::from_timeval(195, 0)));
        assert_eq!(h[1].cidr, "10.1.0.0/16".parse::<IpNet>().unwrap());
        assert_eq!(h[1].until, None);
    }
}
