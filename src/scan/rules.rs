//! Rule files: jails (thresholds, lists, actions) and rules (patterns), and the matcher
//! that runs a line against every rule.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;
use regex::{RegexSet, RegexSetBuilder};
use serde::Deserialize;

use super::pattern::{Pattern, PatternError};
use super::prefix::{self, Clock};
use super::track::{MAX_RETRY, Mode};
use crate::time::{Interval, Time};

/// The bundled rules and jails.
pub const BUNDLED: &str = include_str!("rules.toml");

/// What is done with an address that crossed a jail's threshold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// `drop_address_catch_release` (the default).
    CatchRelease,
    /// A BHR block of this length, source `scan:<rule>`.
    Block(Interval),
}

/// A jail: the threshold, the lists and the action for its rules' matches.
#[derive(Clone, Debug)]
pub struct Jail {
    /// Its name.
    pub name: String,
    /// The threshold.
    pub mode: Mode,
    /// Never counted.
    pub allow: AddrList,
    /// Blocked on the first failure.
    pub deny: AddrList,
    /// What happens.
    pub action: Action,
}

/// A rule: a pattern and its jail.
#[derive(Clone, Debug)]
pub struct Rule {
    /// Its name.
    pub name: String,
    /// Index into the jails.
    pub jail: usize,
    /// The pattern.
    pub pattern: Pattern,
    /// Test lines with the address each must give (`None`: must not match).
    pub tests: Vec<(String, Option<IpAddr>)>,
    /// How many of them are log-injection attempts (`injection = true`).
    pub injection_tests: usize,
}

/// Why a rule file cannot be used: the message names the entry and the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RulesError(pub String);

/// Addresses, networks and regexes (matched at the start of the address text).
#[derive(Clone, Debug, Default)]
pub struct AddrList {
    nets: Vec<IpNet>,
    regexes: Option<RegexSet>,
    /// The entries as given.
    pub entries: Vec<String>,
}

impl AddrList {
    /// Parses entries: an address, a CIDR network, or else a regex.
    ///
    /// # Errors
    /// The entry that is none of these.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<AddrList, String> {
        let mut nets = Vec::new();
        let mut res = Vec::new();
        let mut given = Vec::new();
        for e in entries {
            let e = e.as_ref().trim();
            if e.is_empty() {
                continue;
            }
            given.push(e.to_string());
            if let Ok(ip) = e.parse::<IpAddr>() {
                nets.push(IpNet::from(crate::addr::canonical_ip(ip)));
            } else if let Ok(n) = e.parse::<IpNet>() {
                nets.push(crate::addr::canonical_net(n.trunc()));
            } else {
                regex::Regex::new(e)
                    .map_err(|err| format!("`{e}` is no address, network or regex: {err}"))?;
                res.push(format!("^(?:{e})"));
            }
        }
        let regexes = if res.is_empty() {
            None
        } else {
            Some(
                RegexSetBuilder::new(&res)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| e.to_string())?,
            )
        };
        Ok(AddrList {
            nets,
            regexes,
            entries: given,
        })
    }

    /// Whether the list holds `ip`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = crate::addr::canonical_ip(ip);
        if self.nets.iter().any(|n| n.contains(&ip)) {
            return true;
        }
        match &self.regexes {
            Some(set) => set.is_match(&ip.to_string()),
            None => false,
        }
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    jail: Vec<JailFile>,
    #[serde(default)]
    rule: Vec<RuleFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JailFile {
    name: String,
    mode: Option<String>,
    maxretry: Option<u32>,
    findtime: Option<String>,
    threshold: Option<u32>,
    age: Option<String>,
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
    action: Option<String>,
    duration: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    name: String,
    jail: Option<String>,
    pattern: String,
    #[serde(default)]
    tests: Vec<TestLine>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestLine {
    line: String,
    host: String,
    /// The line puts another address where a client chooses the text (a log injection
    /// attempt): the rule must still give `host`.
    #[serde(default)]
    injection: bool,
}

fn interval(key: &str, v: &str) -> Result<Interval, RulesError> {
    let i: Interval = v.parse().map_err(|e| RulesError(format!("{key}: {e}")))?;
    if i.as_micros() <= 0 {
        return Err(RulesError(format!("{key}: must be positive")));
    }
    Ok(i)
}

/// Jails and rules, parsed and compiled.
#[derive(Clone, Debug)]
pub struct Rules {
    /// The jails.
    pub jails: Vec<Jail>,
    /// The rules, in file order (the first that matches a line wins).
    pub rules: Vec<Rule>,
}

/// Why the rules asked for cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The rule file cannot be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The rule file is wrong.
    #[error("{0}")]
    Rules(RulesError),
    /// A jail asked for is not in the rules.
    #[error("{0}")]
    Jails(RulesError),
}

impl Rules {
    /// The rules of `file` (the bundled ones if `None`), narrowed to `jails` (all if
    /// empty): the one place a rule file is read.
    ///
    /// # Errors
    /// [`LoadError`].
    pub fn load(file: Option<&std::path::Path>, jails: &[String]) -> Result<Rules, LoadError> {
        let mut rules = match file {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| LoadError::Read {
                    path: p.to_path_buf(),
                    source,
                })?;
                Rules::parse(&text, &p.display().to_string()).map_err(LoadError::Rules)?
            }
            None => Rules::bundled(),
        };
        if !jails.is_empty() {
            rules.select(jails).map_err(LoadError::Jails)?;
        }
        Ok(rules)
    }

    /// Parses a rule file (`what` names it in errors).
    ///
    /// # Errors
    /// [`RulesError`] naming the entry and key.
    pub fn parse(text: &str, what: &str) -> Result<Rules, RulesError> {
        let f: File = toml::from_str(text).map_err(|e| RulesError(format!("{what}: {e}")))?;
        let mut jails = Vec::new();
        for (i, j) in f.jail.into_iter().enumerate() {
            let key = |k: &str| format!("{what}: jail[{i}] ({}).{k}", j.name);
            if j.name.trim().is_empty() {
                return Err(RulesError(format!(
                    "{what}: jail[{i}].name: must not be empty"
                )));
            }
            if jails.iter().any(|x: &Jail| x.name == j.name) {
                return Err(RulesError(key("name") + ": used twice"));
            }
            let findtime = match &j.findtime {
                Some(v) => interval(&key("findtime"), v)?,
                None => Interval::from_secs(600),
            };
            let maxretry = j.maxretry.unwrap_or(5);
            if !(1..=MAX_RETRY).contains(&maxretry) {
                return Err(RulesError(format!(
                    "{}: must be 1 to {MAX_RETRY}",
                    key("maxretry")
                )));
            }
            let mode = match j.mode.as_deref().unwrap_or("window") {
                "window" => Mode::Window { maxretry, findtime },
                "fail2ban" => Mode::Fail2ban { maxretry, findtime },
                "blockhosts" => Mode::BlockHosts {
                    threshold: j.threshold.unwrap_or(7),
                    age: match &j.age {
                        Some(v) => interval(&key("age"), v)?,
                        None => Interval::from_secs(12 * 3600),
                    },
                },
                other => {
                    return Err(RulesError(format!(
                        "{}: `{other}` is not window, fail2ban or blockhosts",
                        key("mode")
                    )));
                }
            };
            let action = match j.action.as_deref().unwrap_or("catch-and-release") {
                "catch-and-release" => Action::CatchRelease,
                "block" => Action::Block(match &j.duration {
                    Some(v) => interval(&key("duration"), v)?,
                    None => Interval::from_secs(3600),
                }),
                other => {
                    return Err(RulesError(format!(
                        "{}: `{other}` is not catch-and-release or block",
                        key("action")
                    )));
                }
            };
            jails.push(Jail {
                allow: AddrList::parse(&j.allow)
                    .map_err(|e| RulesError(format!("{}: {e}", key("allow"))))?,
                deny: AddrList::parse(&j.deny)
                    .map_err(|e| RulesError(format!("{}: {e}", key("deny"))))?,
                name: j.name,
                mode,
                action,
            });
        }
        let mut rules = Vec::new();
        for (i, r) in f.rule.into_iter().enumerate() {
            let key = |k: &str| format!("{what}: rule[{i}] ({}).{k}", r.name);
            if rules.iter().any(|x: &Rule| x.name == r.name) {
                return Err(RulesError(key("name") + ": used twice"));
            }
            let jail_name = r.jail.clone().unwrap_or_else(|| "default".to_string());
            let jail = match jails.iter().position(|j| j.name == jail_name) {
                Some(j) => j,
                None if r.jail.is_none() => {
                    jails.push(Jail {
                        name: jail_name,
                        mode: Mode::Window {
                            maxretry: 5,
                            findtime: Interval::from_secs(600),
                        },
                        allow: AddrList::default(),
                        deny: AddrList::default(),
                        action: Action::CatchRelease,
                    });
                    jails.len() - 1
                }
                None => {
                    return Err(RulesError(format!(
                        "{}: no jail named `{jail_name}`",
                        key("jail")
                    )));
                }
            };
            let pattern = Pattern::compile(&r.pattern)
                .map_err(|e: PatternError| RulesError(format!("{}: {e}", key("pattern"))))?;
            let mut tests = Vec::new();
            let injection_tests = r.tests.iter().filter(|t| t.injection).count();
            for t in r.tests {
                let host = if t.host.is_empty() {
                    None
                } else {
                    Some(t.host.parse().map_err(|_| {
                        RulesError(format!("{}: `{}` is not an address", key("tests"), t.host))
                    })?)
                };
                tests.push((t.line, host));
            }
            rules.push(Rule {
                name: r.name,
                jail,
                pattern,
                tests,
                injection_tests,
            });
        }
        if rules.is_empty() {
            return Err(RulesError(format!("{what}: has no [[rule]]")));
        }
        Ok(Rules { jails, rules })
    }

    /// The bundled rules.
    pub fn bundled() -> Rules {
        Rules::parse(BUNDLED, "bundled rules").expect("the bundled rules are valid")
    }

    /// Keeps only the named jails (and their rules).
    ///
    /// # Errors
    /// A name that is no jail.
    pub fn select(&mut self, names: &[String]) -> Result<(), RulesError> {
        for n in names {
            if !self.jails.iter().any(|j| &j.name == n) {
                let all: Vec<&str> = self.jails.iter().map(|j| j.name.as_str()).collect();
                return Err(RulesError(format!(
                    "no jail named `{n}` (there are: {})",
                    all.join(", ")
                )));
            }
        }
        let keep: Vec<bool> = self.jails.iter().map(|j| names.contains(&j.name)).collect();
        let mut map = Vec::new();
        let mut next = 0;
        for k in &keep {
            map.push(next);
            next += usize::from(*k);
        }
        self.rules.retain(|r| keep[r.jail]);
        for r in &mut self.rules {
            r.jail = map[r.jail];
        }
        let mut i = 0;
        self.jails.retain(|_| {
            i += 1;
            keep[i - 1]
        });
        Ok(())
    }

    /// Runs every rule's test lines; returns the failures as messages.
    pub fn self_test(&self) -> Vec<String> {
        let set = Matcher::new(self).expect("compiled");
        let mut bad = Vec::new();
        for (i, r) in self.rules.iter().enumerate() {
            for (line, want) in &r.tests {
                let clock = Clock::new(Time::now());
                let got = set.find(line, &clock);
                let ok = match (want, got) {
                    (None, None) => true,
                    (None, Some(h)) => h.rule != i,
                    (Some(w), Some(h)) => h.rule == i && h.host == *w,
                    (Some(_), None) => false,
                };
                if !ok {
                    bad.push(format!(
                        "rule {}: {} {:?}: got {:?}",
                        r.name,
                        want.map_or("no match for".to_string(), |w| format!("want {w} from")),
                        line,
                        got.map(|h| (self.rules[h.rule].name.clone(), h.host))
                    ));
                }
            }
        }
        bad
    }
}

/// A match of a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hit {
    /// The rule.
    pub rule: usize,
    /// The address.
    pub host: IpAddr,
    /// The pattern's `pid` group.
    pub pid: Option<u32>,
    /// The line's time.
    pub ts: Option<Time>,
}

struct Group {
    set: RegexSet,
    rules: Vec<usize>,
}

impl Group {
    fn new(rules: &[Rule], idx: Vec<usize>) -> Result<Group, RulesError> {
        let set = RegexSetBuilder::new(idx.iter().map(|i| &rules[*i].pattern.source))
            .size_limit(8 << 20)
            .dfa_size_limit(8 << 20)
            .build()
            .map_err(|e| RulesError(e.to_string()))?;
        Ok(Group { set, rules: idx })
    }
}

/// Runs lines against every rule: rules with a leading `{LOG_PREFIX{service}}` only on
/// lines from that program (one regex set per program), the others on every line.
pub struct Matcher {
    rules: Vec<Rule>,
    by_service: HashMap<String, Group>,
    /// Rules with a service, for lines whose prefix names no program (multilog).
    any_service: Option<Group>,
    anywhere: Option<Group>,
}

impl Matcher {
    /// Builds the regex sets.
    ///
    /// # Errors
    /// The sets are too large.
    pub fn new(rules: &Rules) -> Result<Matcher, RulesError> {
        let mut services: HashMap<String, Vec<usize>> = HashMap::new();
        let mut anywhere = Vec::new();
        let mut with_service = Vec::new();
        for (i, r) in rules.rules.iter().enumerate() {
            match &r.pattern.service {
                Some(s) => {
                    services.entry(s.clone()).or_default().push(i);
                    with_service.push(i);
                }
                None => anywhere.push(i),
            }
        }
        let rs = &rules.rules;
        let mut by_service = HashMap::new();
        for (s, idx) in services {
            by_service.insert(s, Group::new(rs, idx)?);
        }
        Ok(Matcher {
            any_service: if with_service.is_empty() {
                None
            } else {
                Some(Group::new(rs, with_service)?)
            },
            anywhere: if anywhere.is_empty() {
                None
            } else {
                Some(Group::new(rs, anywhere)?)
            },
            by_service,
            rules: rules.rules.clone(),
        })
    }

    fn hit(&self, g: &Group, text: &str, ts: Option<Time>) -> Option<Hit> {
        if !g.set.is_match(text) {
            return None;
        }
        let mut found = None;
        for m in g.set.matches(text).iter() {
            let i = g.rules[m];
            if found.is_some_and(|f| f < i) {
                continue;
            }
            found = Some(i);
        }
        let i = found?;
        let caps = self.rules[i].pattern.regex.captures(text)?;
        let host: IpAddr = crate::addr::canonical_ip(caps.name("host")?.as_str().parse().ok()?);
        let host = match host {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(host, IpAddr::V4),
            v4 => v4,
        };
        let pid = if self.rules[i].pattern.has_pid {
            caps.name("pid").and_then(|p| p.as_str().parse().ok())
        } else {
            None
        };
        Some(Hit {
            rule: i,
            host,
            pid,
            ts,
        })
    }

    /// The first rule (in file order) a line matches, with the address it names.
    pub fn find(&self, line: &str, clock: &Clock) -> Option<Hit> {
        let p = prefix::parse(line, clock);
        let mut best: Option<Hit> = None;
        if p.log_prefix {
            let rest = &line[p.rest..];
            let g = match p.program {
                Some(prog) => self.by_service.get(prog),
                None => self.any_service.as_ref(),
            };
            if let Some(g) = g {
                best = self.hit(g, rest, p.ts);
            }
        }
        if let Some(g) = &self.anywhere
            && let Some(h) = self.hit(g, line, p.ts)
            && best.is_none_or(|b| h.rule < b.rule)
        {
            best = Some(h);
        }
        best
    }

    /// The rules.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bundled_rule_passes_its_test_lines() {
        let r = Rules::bundled();
        assert!(r.rules.len() >= 12);
        for j in [
            "sshd",
            "vsftpd",
            "proftpd",
            "apache-auth",
            "postfix-sasl",
            "dovecot",
        ] {
            assert!(r.jails.iter().any(|x| x.name == j), "{j}");
            let jail = r.jails.iter().position(|x| x.name == j).unwrap();
            assert!(
                r.rules
                    .iter()
                    .any(|x| x.jail == jail && !x.tests.is_empty()),
                "{j} has tested rules"
            );
        }
        let bad = r.self_test();
        assert!(bad.is_empty(), "{bad:#?}");
    }

    #[test]
    fn every_bundled_rule_is_tested_against_log_injection() {
        for rule in &Rules::bundled().rules {
            assert!(
                rule.injection_tests > 0,
                "rule {} has no test line marked injection = true",
                rule.name
            );
        }
    }

    #[test]
    fn the_self_test_can_fail() {
        let text = BUNDLED.replacen("host = \"203.0.113.7\"", "host = \"203.0.113.99\"", 1);
        let r = Rules::parse(&text, "t").unwrap();
        assert_eq!(r.self_test().len(), 1);
    }

    #[test]
    fn rule_file_errors_name_the_entry_and_key() {
        for (text, want) in [
            (
                "[[rule]]\nname = \"a\"\npattern = \"x\"\n",
                "rule[0] (a).pattern",
            ),
            (
                "[[rule]]\nname = \"a\"\njail = \"nope\"\npattern = \"{HOST_IP}\"\n",
                "rule[0] (a).jail",
            ),
            (
                "[[jail]]\nname = \"j\"\nmode = \"leaky\"\n[[rule]]\nname = \"a\"\npattern = \"{HOST_IP}\"\n",
                "jail[0] (j).mode",
            ),
            (
                "[[jail]]\nname = \"j\"\nfindtime = \"soon\"\n",
                "jail[0] (j).findtime",
            ),
            (
                "[[jail]]\nname = \"j\"\nmaxretry = 0\n",
                "jail[0] (j).maxretry",
            ),
            (
                "[[jail]]\nname = \"j\"\nallow = [\"10.0.0.0/33(\"]\n",
                "jail[0] (j).allow",
            ),
            ("[[rule]]\nname = \"a\"\npatern = \"{HOST_IP}\"\n", "patern"),
            ("", "has no [[rule]]"),
        ] {
            let e = Rules::parse(text, "f.toml").unwrap_err().0;
            assert!(e.contains(want), "{e} lacks {want}");
        }
    }

    #[test]
    fn allow_and_deny_lists() {
        let l =
            AddrList::parse(&["10\\..*", "127.0.0.1", "2001:db8::/32", "192.0.2.0/24"]).unwrap();
        for (ip, want) in [
            ("10.1.2.3", true),
            ("110.1.2.3", false),
            ("127.0.0.1", true),
            ("127.0.0.2", false),
            ("2001:db8::5", true),
            ("192.0.2.200", true),
            ("198.51.100.1", false),
        ] {
            assert_eq!(l.contains(ip.parse().unwrap()), want, "{ip}");
        }
    }

    #[test]
    fn selecting_jails_keeps_their_rules() {
        let mut r = Rules::bundled();
        r.select(&["dovecot".to_string()]).unwrap();
        assert_eq!(r.jails.len(), 1);
        assert!(
            r.rules
                .iter()
                .all(|x| x.jail == 0 && x.name.starts_with("dovecot"))
        );
        assert!(
            r.select(&["ssh".to_string()])
                .unwrap_err()
                .0
                .contains("no jail named `ssh`")
        );
    }
}
