//! nftables: a table of catchd's own (family `inet`) with four sets, host addresses
//! (`h4`, `h6`: `flags timeout`) and networks (`n4`, `n6`: `flags interval, timeout`), and
//! `input` and `forward` chains dropping packets from them. Elements carry the block's
//! remaining time as their timeout, so the kernel ends a block on time even when catchd is
//! down. Every batch is one `nft -f -` transaction: all of it applies or none.
//!
//! Interval sets refuse overlapping elements, but BHR allows a /23 and a /24 inside it to
//! be blocked at once. The kernel therefore holds only the outermost of the networks
//! wanted; a network inside another is put in when the outer one goes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use ipnet::IpNet;
use serde_json::Value;

use super::{Error, Held, Rule, Runner, seconds_left};
use crate::time::{Interval, Time};

/// The nftables backend.
#[derive(Debug)]
pub struct Nft {
    table: String,
    runner: Runner,
    /// Networks (not single addresses) wanted, with their ends.
    nets: BTreeMap<IpNet, Option<Time>>,
    /// Networks in the interval sets, as far as we know.
    installed: BTreeSet<IpNet>,
}

fn is_host(c: &IpNet) -> bool {
    c.prefix_len() == c.max_prefix_len()
}

fn set_of(c: &IpNet) -> &'static str {
    match (c, is_host(c)) {
        (IpNet::V4(_), true) => "h4",
        (IpNet::V6(_), true) => "h6",
        (IpNet::V4(_), false) => "n4",
        (IpNet::V6(_), false) => "n6",
    }
}

/// The element as nft writes it (`192.0.2.1`, `198.51.100.0/24`).
fn element(c: &IpNet) -> String {
    if is_host(c) {
        c.addr().to_string()
    } else {
        c.trunc().to_string()
    }
}

impl Nft {
    pub fn new(table: &str, runner: Runner) -> Nft {
        Nft {
            table: table.to_string(),
            runner,
            nets: BTreeMap::new(),
            installed: BTreeSet::new(),
        }
    }

    fn nft(&self, args: &[&str]) -> Vec<String> {
        std::iter::once("nft")
            .chain(args.iter().copied())
            .map(String::from)
            .collect()
    }

    /// The table, its sets and chains; the chains' rules are replaced (so running it
    /// again never duplicates them) and the sets' elements kept.
    pub async fn setup(&mut self) -> Result<(), Error> {
        let t = &self.table;
        let mut s = format!("add table inet {t}\n");
        for (name, ty, flags) in [
            ("h4", "ipv4_addr", "timeout"),
            ("h6", "ipv6_addr", "timeout"),
            ("n4", "ipv4_addr", "interval, timeout"),
            ("n6", "ipv6_addr", "interval, timeout"),
        ] {
            let _ = writeln!(s, "add set inet {t} {name} {{ type {ty}; flags {flags}; }}");
        }
        for hook in ["input", "forward"] {
            let _ = writeln!(
                s,
                "add chain inet {t} {hook} {{ type filter hook {hook} priority -10; policy accept; }}"
            );
            let _ = writeln!(s, "flush chain inet {t} {hook}");
            for (m, set) in [("ip", "h4"), ("ip", "n4"), ("ip6", "h6"), ("ip6", "n6")] {
                let _ = writeln!(s, "add rule inet {t} {hook} {m} saddr @{set} drop");
            }
        }
        self.runner
            .change(&self.nft(&["-f", "-"]), Some(s.as_bytes()))
            .await?;
        Ok(())
    }

    pub async fn list(&mut self, now: Time) -> Result<Vec<Held>, Error> {
        let argv = self.nft(&["-j", "list", "table", "inet", &self.table]);
        let text = match self.runner.read(&argv).await {
            Ok(t) => t,
            // A dry run does not create the table.
            Err(_) if self.runner.dry_run() => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let held = parse_list(&text, now)?;
        self.installed = held
            .iter()
            .filter(|h| !is_host(&h.cidr))
            .map(|h| h.cidr)
            .collect();
        Ok(held)
    }

    /// Tells the backend every network expected (before a reconciling batch), so that it
    /// knows which networks lie inside others.
    pub fn expect(&mut self, rules: &[Rule]) {
        self.nets = rules
            .iter()
            .filter(|r| !is_host(&r.cidr))
            .map(|r| (r.cidr.trunc(), r.until))
            .collect();
    }

    /// Whether a wanted network lies inside `c`.
    fn covered(&self, c: &IpNet) -> bool {
        let mut n = *c;
        while let Some(s) = n.supernet() {
            if self.nets.contains_key(&s) {
                return true;
            }
            n = s;
        }
        false
    }

    pub async fn apply(&mut self, add: &[Rule], remove: &[IpNet], now: Time) -> Result<(), Error> {
        let t = self.table.clone();
        // Two transactions: the kernel checks a new interval against elements the same
        // transaction deletes, so networks leave the interval sets first (`out`), then
        // everything new goes in (`put_s`). Host sets need no such care.
        let mut out = String::new();
        let mut put_s = String::new();
        let mut nets = self.nets.clone();
        let mut installed = self.installed.clone();
        // Removing what is absent fails in nft 1.0, so each removal adds first (a no-op
        // when present) and then deletes.
        let del = |s: &mut String, c: &IpNet| {
            let (set, e) = (set_of(c), element(c));
            let _ = writeln!(s, "add element inet {t} {set} {{ {e} }}");
            let _ = writeln!(s, "delete element inet {t} {set} {{ {e} }}");
        };
        let put = |s: &mut String, c: &IpNet, until: Option<Time>| {
            let (set, e) = (set_of(c), element(c));
            match seconds_left(until, now) {
                Some(secs) => {
                    let _ = writeln!(s, "add element inet {t} {set} {{ {e} timeout {secs}s }}");
                }
                None => {
                    let _ = writeln!(s, "add element inet {t} {set} {{ {e} }}");
                }
            }
        };
        let mut fresh = BTreeSet::new();
        for c in remove {
            let c = c.trunc();
            if is_host(&c) {
                del(&mut put_s, &c);
            } else {
                nets.remove(&c);
                if installed.remove(&c) {
                    del(&mut out, &c);
                }
            }
        }
        for r in add {
            let c = r.cidr.trunc();
            if is_host(&c) {
                // Deleting first makes the new timeout take effect on a present element.
                del(&mut put_s, &c);
                put(&mut put_s, &c, r.until);
            } else {
                nets.insert(c, r.until);
                fresh.insert(c);
            }
        }
        let old = std::mem::replace(&mut self.nets, nets);
        // Networks now inside another wanted one leave the kernel; outermost ones that
        // are new, or refreshed by this batch, go in.
        let inner: Vec<IpNet> = installed
            .iter()
            .filter(|c| self.covered(c))
            .copied()
            .collect();
        for c in &inner {
            installed.remove(c);
            del(&mut out, c);
        }
        let outer: Vec<(IpNet, Option<Time>)> = self
            .nets
            .iter()
            .filter(|(c, _)| !self.covered(c))
            .map(|(c, u)| (*c, *u))
            .collect();
        for (c, until) in outer {
            if fresh.contains(&c) && installed.contains(&c) {
                del(&mut out, &c);
                put(&mut put_s, &c, until);
            } else if !installed.contains(&c) {
                put(&mut put_s, &c, until);
                installed.insert(c);
            }
        }
        let argv = self.nft(&["-f", "-"]);
        for script in [out, put_s] {
            if script.is_empty() {
                continue;
            }
            if let Err(e) = self.runner.change(&argv, Some(script.as_bytes())).await {
                self.nets = old;
                // What the kernel holds is no longer certain: ask it next time.
                let _ = self.list(now).await;
                return Err(e.into());
            }
        }
        self.installed = installed;
        Ok(())
    }
}

/// The elements of the four sets in `nft -j list table` output.
fn parse_list(text: &str, now: Time) -> Result<Vec<Held>, Error> {
    let bad = |d: String| Error::Output {
        tool: "nft",
        detail: d,
    };
    let v: Value = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
    let items = v
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no \"nftables\" array".into()))?;
    let mut out = Vec::new();
    for item in items {
        let Some(set) = item.get("set") else { continue };
        let name = set.get("name").and_then(Value::as_str).unwrap_or("");
        if !matches!(name, "h4" | "h6" | "n4" | "n6") {
            continue;
        }
        for e in set
            .get("elem")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let (val, expires) = match e.get("elem") {
                Some(inner) => (
                    inner.get("val").unwrap_or(&Value::Null),
                    inner.get("expires").and_then(Value::as_u64),
                ),
                None => (e, None),
            };
            let cidr = match val {
                Value::String(a) => a
                    .parse::<std::net::IpAddr>()
                    .map(IpNet::from)
                    .map_err(|_| bad(format!("element {a}")))?,
                Value::Object(o) if o.contains_key("prefix") => {
                    let p = &o["prefix"];
                    let addr = p.get("addr").and_then(Value::as_str).unwrap_or("");
                    let len = p.get("len").and_then(Value::as_u64).unwrap_or(255);
                    format!("{addr}/{len}")
                        .parse::<IpNet>()
                        .map_err(|_| bad(format!("element {addr}/{len}")))?
                }
                // catchd adds no ranges; one put in by hand is not catchd's to manage.
                _ => continue,
            };
            let until = expires.map(|s| now + Interval::from_secs(s as i64));
            out.push(Held { cidr, until });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_elements_of_every_shape() {
        let now = Time::from_timeval(1_000, 0);
        let text = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
          {"table": {"family": "inet", "name": "catchd", "handle": 1}},
          {"set": {"family": "inet", "name": "n4", "table": "catchd", "type": "ipv4_addr",
            "elem": [{"elem": {"val": {"prefix": {"addr": "10.0.0.0", "len": 24}}, "timeout": 100, "expires": 99}},
                     {"range": ["10.1.0.1", "10.1.0.9"]}]}},
          {"set": {"family": "inet", "name": "h6", "table": "catchd", "type": "ipv6_addr",
            "elem": ["2001:db8::1", {"elem": {"val": "2001:db8::2", "timeout": 5, "expires": 4}}]}},
          {"set": {"family": "inet", "name": "other", "elem": ["10.9.9.9"]}}]}"#;
        let held = parse_list(text, now).unwrap();
        assert_eq!(
            held,
            vec![
                Held {
                    cidr: "10.0.0.0/24".parse().unwrap(),
                    until: Some(Time::from_timeval(1_099, 0))
                },
                Held {
                    cidr: "2001:db8::1/128".parse().unwrap(),
                    until: None
                },
                Held {
                    cidr: "2001:db8::2/128".parse().unwrap(),
                    until: Some(Time::from_timeval(1_004, 0))
                },
            ]
        );
        assert!(parse_list("not json", now).is_err());
    }
}
