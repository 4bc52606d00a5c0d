//! Rules in BlockHosts' pattern language, compiled to linear-time regexes.
//!
//! A pattern is a regex (Rust `regex` syntax, which has no backtracking: a line is matched
//! in time linear in its length whatever it contains) with two short forms:
//! * `{HOST_IP}`: the remote address, IPv4, IPv6 or `::ffff:`-mapped IPv4, as the named
//!   group `host` (a pattern may instead name its own `(?P<host>…)` group);
//! * `{LOG_PREFIX{service}}`: the syslog, metalog or multilog prefix of a line written by
//!   `service`, at the start of the line, without the trailing space.
//!
//! A named group `pid` makes matches with the same process id count once per address
//! (BlockHosts' guard against counting one probe several times).
//!
//! Patterns that begin with `{LOG_PREFIX{service}}` are run only on lines whose prefix
//! names that program, on the text after the prefix; the prefix itself is parsed once per
//! line by [`super::prefix`]. Other patterns are run on the whole line.

use regex::{Regex, RegexBuilder};

/// The regex `{HOST_IP}` stands for.
pub const HOST_IP: &str = r"(?:::ffff:)?(?P<host>[0-9]{1,3}(?:\.[0-9]{1,3}){3}|[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){1,7}(?:[0-9]{1,3}(?:\.[0-9]{1,3}){3})?)";

/// Regex size limits: a rule file cannot make the process build huge automata.
const SIZE_LIMIT: usize = 1 << 20;

/// Why a pattern cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// No `{HOST_IP}` and no `host` group.
    #[error("has no {{HOST_IP}} and no (?P<host>…) group")]
    NoHost,
    /// `{HOST_IP}` twice, or both it and a `host` group.
    #[error("names the host more than once")]
    TwoHosts,
    /// `{LOG_PREFIX{…` not closed, or empty.
    #[error("has a malformed {{LOG_PREFIX{{service}}}}")]
    Prefix,
    /// The regex does not compile (or is too large).
    #[error("{0}")]
    Regex(String),
}

/// The regex `{LOG_PREFIX{service}}` stands for, when it must be matched in a regex.
pub fn log_prefix_regex(service: &str) -> String {
    let s = regex::escape(service);
    format!(
        r"^(?:(?:[A-Z][a-z]{{2}} +[0-9]{{1,2}} [0-9]{{2}}:[0-9]{{2}}:[0-9]{{2}}|[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}[T ][0-9:]{{8}}(?:\.[0-9]+)?(?:[Zz]|[+-][0-9]{{2}}:?[0-9]{{2}})) \S+ {s}(?:\[[0-9]+\])?:(?: \[ID [0-9]+ [^\]]+\])?|[A-Z][a-z]{{2}} +[0-9]{{1,2}} [0-9]{{2}}:[0-9]{{2}}:[0-9]{{2}} \[{s}\]|@[0-9a-f]{{24}})"
    )
}

fn build(re: &str) -> Result<Regex, PatternError> {
    RegexBuilder::new(re)
        .size_limit(SIZE_LIMIT)
        .dfa_size_limit(SIZE_LIMIT)
        .build()
        .map_err(|e| PatternError::Regex(e.to_string()))
}

/// A compiled pattern.
#[derive(Clone, Debug)]
pub struct Pattern {
    /// The service of a leading `{LOG_PREFIX{service}}`: the pattern runs on the text
    /// after the prefix of lines from that program.
    pub service: Option<String>,
    /// The regex, for the text after the prefix (with a service) or the whole line.
    pub regex: Regex,
    /// The expanded regex text.
    pub source: String,
    /// Whether it names a `pid` group.
    pub has_pid: bool,
}

fn expand_log_prefixes(mut text: &str) -> Result<String, PatternError> {
    let mut out = String::new();
    while let Some(i) = text.find("{LOG_PREFIX{") {
        out.push_str(&text[..i]);
        let rest = &text[i + "{LOG_PREFIX{".len()..];
        let end = rest.find("}}").ok_or(PatternError::Prefix)?;
        let svc = &rest[..end];
        if svc.is_empty() {
            return Err(PatternError::Prefix);
        }
        out.push_str(&log_prefix_regex(svc));
        text = &rest[end + 2..];
    }
    out.push_str(text);
    Ok(out)
}

impl Pattern {
    /// Compiles a pattern.
    ///
    /// # Errors
    /// [`PatternError`].
    pub fn compile(text: &str) -> Result<Pattern, PatternError> {
        let host_ips = text.matches("{HOST_IP}").count();
        let own_host = text.contains("(?P<host>") || text.contains("(?<host>");
        match (host_ips, own_host) {
            (0, false) => return Err(PatternError::NoHost),
            (1, false) | (0, true) => {}
            _ => return Err(PatternError::TwoHosts),
        }
        let has_pid = text.contains("(?P<pid>") || text.contains("(?<pid>");
        let text = text.replace("{HOST_IP}", HOST_IP);
        // The fast path: a leading prefix, and no other.
        if let Some(rest) = text.strip_prefix("{LOG_PREFIX{")
            && let Some(end) = rest.find("}}")
            && !rest[end + 2..].contains("{LOG_PREFIX{")
        {
            let service = &rest[..end];
            if service.is_empty() {
                return Err(PatternError::Prefix);
            }
            let source = format!("^(?:{})", &rest[end + 2..]);
            return Ok(Pattern {
                service: Some(service.to_string()),
                regex: build(&source)?,
                source,
                has_pid,
            });
        }
        let source = expand_log_prefixes(&text)?;
        Ok(Pattern {
            service: None,
            regex: build(&source)?,
            source,
            has_pid,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ip_matches_every_form() {
        let p = Pattern::compile("from {HOST_IP} port").unwrap();
        for (line, host) in [
            ("from 192.0.2.1 port", "192.0.2.1"),
            ("from ::ffff:192.0.2.1 port", "192.0.2.1"),
            ("from 2001:db8::1 port", "2001:db8::1"),
            ("from ::1 port", "::1"),
            ("from fe80::1:2:3:4 port", "fe80::1:2:3:4"),
            ("from 64:ff9b::192.0.2.1 port", "64:ff9b::192.0.2.1"),
        ] {
            let c = p.regex.captures(line).unwrap_or_else(|| panic!("{line}"));
            assert_eq!(&c["host"], host);
        }
    }

    #[test]
    fn leading_log_prefix_is_the_fast_path() {
        let p = Pattern::compile("{LOG_PREFIX{sshd}} (Invalid|Illegal) user .* from {HOST_IP}")
            .unwrap();
        assert_eq!(p.service.as_deref(), Some("sshd"));
        assert!(p.regex.is_match(" Invalid user x from 192.0.2.1"));
        // Anchored at the start of the message.
        assert!(!p.regex.is_match(" hello Invalid user x from 192.0.2.1"));
    }

    #[test]
    fn log_prefix_elsewhere_is_expanded() {
        let p =
            Pattern::compile("(?:x|{LOG_PREFIX{sshd}}) Invalid user .* from {HOST_IP}").unwrap();
        assert!(p.service.is_none());
        for line in [
            "Oct  4 12:04:50 host sshd[1]: Invalid user a from 192.0.2.1",
            "Oct  4 12:04:50 host.example.com sshd[1110]: [ID 800047 auth.info] Invalid user a from 192.0.2.1",
            "2024-05-01T12:00:00.5+02:00 box sshd: Invalid user a from 192.0.2.1",
            "Oct 18 04:21:52 [sshd] Invalid user a from 192.0.2.1",
            "@400000006655c2a0000f4240 Invalid user a from 192.0.2.1",
        ] {
            assert!(p.regex.is_match(line), "{line}");
        }
        assert!(
            !p.regex
                .is_match("Oct  4 12:04:50 host httpd[1]: Invalid user a from 192.0.2.1")
        );
    }

    #[test]
    fn bad_patterns_are_refused_with_a_reason() {
        assert_eq!(
            Pattern::compile("no host").unwrap_err(),
            PatternError::NoHost
        );
        assert_eq!(
            Pattern::compile("{HOST_IP} {HOST_IP}").unwrap_err(),
            PatternError::TwoHosts
        );
        assert_eq!(
            Pattern::compile("{LOG_PREFIX{}} {HOST_IP}").unwrap_err(),
            PatternError::Prefix
        );
        assert!(matches!(
            Pattern::compile("({HOST_IP}").unwrap_err(),
            PatternError::Regex(_)
        ));
        // Backreferences and look-around (exponential in backtracking engines) are not
        // in the language at all.
        assert!(Pattern::compile(r"(a+)+\1 {HOST_IP}").is_err());
        assert!(Pattern::compile(r"(?=x){HOST_IP}").is_err());
        // Automata too large to build are refused, not built.
        assert!(Pattern::compile(r"\w{1000}\w{1000}\w{1000} {HOST_IP}").is_err());
    }
}
