//! `catchd scan`: log files through the scanner, blocks through a running catchd.

use std::path::PathBuf;

use clap::Args;

use crate::cli::InputError;
use crate::time::Interval;

/// `catchd scan`.
#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Log files, read start to end in order (`-`: standard input).
    #[arg(value_name = "FILE", required_unless_present_any = ["check", "print_rules"])]
    pub files: Vec<PathBuf>,

    /// A rule file (jails and rules) instead of the bundled one (see `--print-rules`).
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,

    /// Only these jails (repeatable, or comma-separated) [default: all].
    #[arg(long = "jail", value_name = "NAME", value_delimiter = ',')]
    pub jails: Vec<String>,

    /// Failures within --findtime that block (window and fail2ban modes).
    #[arg(long, value_name = "N")]
    pub maxretry: Option<u32>,

    /// The window for --maxretry (`10m`, `1h`, seconds).
    #[arg(long, value_name = "DUR")]
    pub findtime: Option<Interval>,

    /// Counting model: window (exact), fail2ban (fail2ban's rescaled count), blockhosts
    /// (count above --threshold, forgotten --age after the last failure).
    #[arg(long, value_name = "MODE")]
    pub mode: Option<String>,

    /// blockhosts mode: blocked when the count is greater than this [default: 7].
    #[arg(long, value_name = "N")]
    pub threshold: Option<u32>,

    /// blockhosts mode: forget an address this long after its last failure [default: 12h].
    #[arg(long, value_name = "DUR")]
    pub age: Option<Interval>,

    /// Never count these: addresses, CIDR networks or regexes, comma-separated.
    #[arg(long, value_name = "LIST")]
    pub allow: Option<String>,

    /// Block these on their first failure: addresses, CIDR networks or regexes.
    #[arg(long, value_name = "LIST")]
    pub deny: Option<String>,

    /// Ignore failures before this time (RFC 3339, epoch seconds, or a duration ago
    /// such as `2h`).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,

    /// Print what would be blocked; block nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// One JSON object per line (addr, rule, count, first, last, jail, denied).
    #[arg(long)]
    pub json: bool,

    /// Addresses tracked per jail at most; the oldest are evicted past it.
    #[arg(long, value_name = "N", default_value_t = crate::scan::MAX_ADDRESSES)]
    pub max_addresses: usize,

    /// Run every rule's test lines and exit.
    #[arg(long)]
    pub check: bool,

    /// Print the bundled rule file and exit.
    #[arg(long)]
    pub print_rules: bool,

    /// The catchd to block through (as BHR_HOST).
    #[arg(
        long,
        env = "BHR_HOST",
        value_name = "URL",
        default_value = "http://127.0.0.1:8000"
    )]
    pub server: String,

    /// An API token of a user with the blocker role or above (as BHR_TOKEN).
    #[arg(long, env = "BHR_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

pub(in crate::cli) fn scan_rules(a: &ScanArgs) -> anyhow::Result<crate::scan::rules::Rules> {
    use crate::scan::rules::{AddrList, Rules};
    use crate::scan::track::Mode;
    let mut rules = Rules::load(a.rules.as_deref(), &a.jails).map_err(|e| match e {
        crate::scan::rules::LoadError::Jails(e) => InputError(format!("--jail: {}", e.0)),
        e => InputError(format!("--rules {e}")),
    })?;
    let list = |flag: &str, v: &Option<String>| -> anyhow::Result<Vec<String>> {
        let items: Vec<String> = v
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(str::to_string)
            .collect();
        AddrList::parse(&items).map_err(|e| InputError(format!("{flag}: {e}")))?;
        Ok(items)
    };
    let allow = list("--allow", &a.allow)?;
    let deny = list("--deny", &a.deny)?;
    if a.maxretry == Some(0) {
        return Err(InputError("--maxretry: must be at least 1".into()).into());
    }
    for (flag, v) in [("--findtime", a.findtime), ("--age", a.age)] {
        if v.is_some_and(|i| i.as_micros() <= 0) {
            return Err(InputError(format!("{flag}: must be positive")).into());
        }
    }
    for j in &mut rules.jails {
        let (maxretry, findtime) = match j.mode {
            Mode::Window { maxretry, findtime } | Mode::Fail2ban { maxretry, findtime } => {
                (maxretry, findtime)
            }
            Mode::BlockHosts { .. } => (5, Interval::from_secs(600)),
        };
        let maxretry = a.maxretry.unwrap_or(maxretry);
        let findtime = a.findtime.unwrap_or(findtime);
        let mode = match a.mode.as_deref() {
            None => match j.mode {
                Mode::BlockHosts { threshold, age } => Mode::BlockHosts {
                    threshold: a.threshold.unwrap_or(threshold),
                    age: a.age.unwrap_or(age),
                },
                Mode::Window { .. } => Mode::Window { maxretry, findtime },
                Mode::Fail2ban { .. } => Mode::Fail2ban { maxretry, findtime },
            },
            Some("window") => Mode::Window { maxretry, findtime },
            Some("fail2ban") => Mode::Fail2ban { maxretry, findtime },
            Some("blockhosts") => Mode::BlockHosts {
                threshold: a.threshold.unwrap_or(7),
                age: a.age.unwrap_or(Interval::from_secs(12 * 3600)),
            },
            Some(other) => {
                return Err(InputError(format!(
                    "--mode: `{other}` is not window, fail2ban or blockhosts"
                ))
                .into());
            }
        };
        j.mode = mode;
        let mut al = j.allow.entries.clone();
        al.extend(allow.iter().cloned());
        j.allow = AddrList::parse(&al).map_err(InputError)?;
        let mut dl = j.deny.entries.clone();
        dl.extend(deny.iter().cloned());
        j.deny = AddrList::parse(&dl).map_err(InputError)?;
    }
    Ok(rules)
}

pub(in crate::cli) fn scan_cmd(a: ScanArgs) -> anyhow::Result<()> {
    if a.print_rules {
        print!("{}", crate::scan::rules::BUNDLED);
        return Ok(());
    }
    let rules = scan_rules(&a)?;
    if a.check {
        return self_test(&rules);
    }
    let since = match &a.since {
        None => None,
        Some(s) => Some(match s.parse::<Interval>() {
            Ok(ago) => crate::time::Time::now() - ago,
            Err(_) => s
                .parse::<crate::time::Time>()
                .map_err(|e| InputError(format!("--since: {e}")))?,
        }),
    };
    let token = match (&a.token, a.dry_run) {
        (_, true) => None,
        (Some(t), false) => Some(t.clone()),
        (None, false) => {
            return Err(InputError(format!(
                "blocking needs --token (or BHR_TOKEN) for the catchd at {}; or use --dry-run",
                a.server
            ))
            .into());
        }
    };
    let mut scanner = crate::scan::Scanner::new(rules, a.max_addresses.max(1), since)
        .map_err(|e| InputError(e.0))?;
    let started = std::time::Instant::now();
    let mut found = Vec::new();
    // One line per address: later crossings of a blocked address add nothing.
    let mut seen = std::collections::HashSet::new();
    let stdout = std::io::stdout();
    let read = crate::scan::scan_files(&mut scanner, &a.files, |d| {
        if !seen.insert(d.addr) {
            return;
        }
        print_detection(&mut stdout.lock(), &d, a.json);
        found.push(d);
    })
    .map_err(InputError)?;
    let st = scanner.stats();
    let failed = match token {
        Some(token) => submit(&a.server, &token, &found)?,
        None => 0,
    };
    eprintln!(
        "catchd: {} lines, {} matched, {} addresses {} ({} allowed, {} evicted, {} lines cut) in {:.2} s",
        read.lines,
        st.matched,
        found.len(),
        if a.dry_run {
            "would be blocked"
        } else {
            "blocked"
        },
        st.allowed,
        st.evictions,
        st.long_lines + read.cut,
        started.elapsed().as_secs_f64()
    );
    if failed > 0 {
        anyhow::bail!("{failed} of {} blocks failed", found.len());
    }
    Ok(())
}

/// `--check`: every rule's test lines.
fn self_test(rules: &crate::scan::rules::Rules) -> anyhow::Result<()> {
    let bad = rules.self_test();
    let tested: usize = rules.rules.iter().map(|r| r.tests.len()).sum();
    for b in &bad {
        eprintln!("{b}");
    }
    if !bad.is_empty() {
        return Err(InputError(format!("{} of {tested} test lines failed", bad.len())).into());
    }
    println!(
        "{} rules in {} jails: all {tested} test lines pass",
        rules.rules.len(),
        rules.jails.len()
    );
    Ok(())
}

/// One detection on standard output: a line, or a JSON object with `--json`.
fn print_detection(out: &mut impl std::io::Write, d: &crate::scan::Detection, json: bool) {
    let (first, last) = (
        crate::api::bhr::Iso(d.first).to_string(),
        crate::api::bhr::Iso(d.last).to_string(),
    );
    let _ = if json {
        writeln!(
            out,
            "{}",
            serde_json::json!({
                "addr": d.addr.to_string(),
                "rule": d.rule,
                "count": d.count,
                "first": first,
                "last": last,
                "jail": d.jail,
                "denied": d.denied,
            })
        )
    } else {
        writeln!(
            out,
            "{} {} {} jail={} first={first} last={last}{}",
            d.addr,
            d.rule,
            d.count,
            d.jail,
            if d.denied { " denied" } else { "" }
        )
    };
}

/// Blocks what was found through the catchd at `server`; returns how many failed.
fn submit(server: &str, token: &str, found: &[crate::scan::Detection]) -> anyhow::Result<usize> {
    let remote = crate::manager::remote::Remote::new(server, token, "")
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let rt = crate::runtime::build()?;
    let mut failed = 0usize;
    rt.block_on(async {
        for d in found {
            let source = d.source();
            let r = match d.action {
                crate::scan::rules::Action::CatchRelease => remote.cr_drop(d.addr, &source).await,
                crate::scan::rules::Action::Block(len) => {
                    remote
                        .block(
                            ipnet::IpNet::from(d.addr),
                            &source,
                            &d.why(),
                            len.as_micros() / 1_000_000,
                        )
                        .await
                }
            };
            if let Err(e) = r {
                failed += 1;
                eprintln!("catchd: {}: not blocked: {e}", d.addr);
            }
        }
    });
    Ok(failed)
}
