//! A configured command per block and per unblock, as an argument vector with
//! placeholders (never through a shell, so a block's `why` cannot inject anything).

use ipnet::IpNet;

use super::{Error, Rule, Runner, seconds_left};
use crate::time::Time;

/// The exec backend.
#[derive(Debug)]
pub struct Exec {
    block: Vec<String>,
    unblock: Vec<String>,
    runner: Runner,
}

/// Fills the placeholders of one argument.
fn fill(arg: &str, c: &IpNet, rule: Option<(&Rule, Time)>) -> String {
    let family = match c {
        IpNet::V4(_) => "inet",
        IpNet::V6(_) => "inet6",
    };
    let mut s = arg
        .replace("{cidr}", &c.trunc().to_string())
        .replace("{addr}", &c.trunc().addr().to_string())
        .replace("{prefixlen}", &c.prefix_len().to_string())
        .replace("{family}", family);
    if let Some((r, now)) = rule {
        let dur = seconds_left(r.until, now).unwrap_or(0);
        let until = r.until.map_or(0, |u| u.as_micros().div_euclid(1_000_000));
        s = s
            .replace("{duration}", &dur.to_string())
            .replace("{until}", &until.to_string())
            .replace("{why}", &r.why);
    }
    s
}

impl Exec {
    pub fn new(block: Vec<String>, unblock: Vec<String>, runner: Runner) -> Exec {
        Exec {
            block,
            unblock,
            runner,
        }
    }

    /// Runs the commands one after the other and stops at the first failure.
    pub async fn apply(&mut self, add: &[Rule], remove: &[IpNet], now: Time) -> Result<(), Error> {
        for c in remove {
            let argv: Vec<String> = self.unblock.iter().map(|a| fill(a, c, None)).collect();
            self.runner.change(&argv, None).await?;
        }
        for r in add {
            let argv: Vec<String> = self
                .block
                .iter()
                .map(|a| fill(a, &r.cidr, Some((r, now))))
                .collect();
            self.runner.change(&argv, None).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Interval;

    #[test]
    fn placeholders() {
        let now = Time::from_timeval(1_000, 0);
        let r = Rule {
            cidr: "2001:db8::1/64".parse().unwrap(),
            until: Some(now + Interval::from_secs(90)),
            why: "x; rm -rf /".into(),
        };
        let a = "{cidr}|{addr}|{prefixlen}|{family}|{duration}|{until}|{why}";
        assert_eq!(
            fill(a, &r.cidr, Some((&r, now))),
            "2001:db8::/64|2001:db8::|64|inet6|90|1090|x; rm -rf /"
        );
        assert_eq!(fill("{cidr} {why}", &r.cidr, None), "2001:db8::/64 {why}");
    }
}
