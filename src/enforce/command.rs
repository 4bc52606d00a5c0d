//! Runs the firewall tools: the one place catchd starts `nft`, `iptables`, `ipset`, `ip`
//! and configured commands. Argument vectors only (never a shell), a timeout on every
//! run (the child is killed when it passes), and a dry-run mode that prints what would
//! run and changes nothing.

use std::io::Write as _;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

/// Why a command did not do its work.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// It could not be started (not installed, not executable).
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// It ran longer than the timeout and was killed.
    #[error("{program} did not finish within {after:?}; killed")]
    Timeout {
        /// The program.
        program: String,
        /// The timeout.
        after: Duration,
    },
    /// It exited with a failure.
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        /// The program.
        program: String,
        /// Its exit status.
        status: String,
        /// The start of what it wrote to standard error.
        stderr: String,
    },
}

/// Starts commands with a timeout, or only prints them (dry run).
#[derive(Clone, Debug)]
pub struct Runner {
    timeout: Duration,
    dry_run: bool,
}

/// The longest standard error kept in an error.
const MAX_STDERR: usize = 600;

impl Runner {
    /// A runner that kills commands after `timeout`; with `dry_run` it prints instead.
    pub fn new(timeout: Duration, dry_run: bool) -> Runner {
        Runner { timeout, dry_run }
    }

    /// Whether this runner only prints.
    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    /// Runs a command that changes something, feeding it `stdin`. In dry-run mode prints
    /// `would run: <argv>` (and the input, indented) to standard output instead.
    ///
    /// # Errors
    /// The command could not start, timed out, or failed.
    pub async fn change(&self, argv: &[String], stdin: Option<&[u8]>) -> Result<(), CommandError> {
        if self.dry_run {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "would run: {}", shell_words(argv));
            if let Some(input) = stdin {
                for line in String::from_utf8_lossy(input).lines() {
                    let _ = writeln!(out, "    {line}");
                }
            }
            return Ok(());
        }
        self.output(argv, stdin).await.map(drop)
    }

    /// Runs a command that only reads (listing rules), even in dry-run mode, and returns
    /// its standard output.
    ///
    /// # Errors
    /// The command could not start, timed out, or failed.
    pub async fn read(&self, argv: &[String]) -> Result<String, CommandError> {
        self.output(argv, None).await
    }

    async fn output(&self, argv: &[String], stdin: Option<&[u8]>) -> Result<String, CommandError> {
        let program = argv.first().cloned().unwrap_or_default();
        let mut cmd = tokio::process::Command::new(&program);
        cmd.args(&argv[1..])
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|source| CommandError::Spawn {
            program: program.clone(),
            source,
        })?;
        let feed = child.stdin.take();
        let input = stdin.map(<[u8]>::to_vec);
        let run = async move {
            if let (Some(mut pipe), Some(input)) = (feed, input) {
                // A tool that exits early closes its end; its status tells what happened.
                let _ = pipe.write_all(&input).await;
                drop(pipe);
            }
            child.wait_with_output().await
        };
        let out = match tokio::time::timeout(self.timeout, run).await {
            Err(_) => {
                return Err(CommandError::Timeout {
                    program,
                    after: self.timeout,
                });
            }
            Ok(Err(source)) => return Err(CommandError::Spawn { program, source }),
            Ok(Ok(out)) => out,
        };
        if !out.status.success() {
            let mut stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
            if stderr.len() > MAX_STDERR {
                let mut cut = MAX_STDERR;
                while !stderr.is_char_boundary(cut) {
                    cut -= 1;
                }
                stderr.truncate(cut);
                stderr.push('…');
            }
            return Err(CommandError::Failed {
                program,
                status: out.status.to_string(),
                stderr,
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// An argument vector as a person would type it (for dry runs and logs).
pub fn shell_words(argv: &[String]) -> String {
    let mut s = String::new();
    for (i, a) in argv.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        let plain = !a.is_empty()
            && a.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_./:=,@+%".contains(&b));
        if plain {
            s.push_str(a);
        } else {
            s.push('\'');
            s.push_str(&a.replace('\'', r"'\''"));
            s.push('\'');
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_string()).collect()
    }

    #[tokio::test]
    async fn runs_reads_and_reports_failures() {
        let r = Runner::new(Duration::from_secs(5), false);
        assert_eq!(r.read(&argv(&["echo", "a b"])).await.unwrap(), "a b\n");
        let e = r.read(&argv(&["sh", "-c", "echo oops >&2; exit 3"])).await;
        let e = e.unwrap_err().to_string();
        assert!(e.contains("sh failed") && e.contains("oops"), "{e}");
        let e = r.read(&argv(&["/nonexistent/tool"])).await.unwrap_err();
        assert!(matches!(e, CommandError::Spawn { .. }));
        r.change(&argv(&["cat"]), Some(b"input\n")).await.unwrap();
    }

    #[tokio::test]
    async fn a_hanging_command_is_killed() {
        let r = Runner::new(Duration::from_millis(200), false);
        let t = std::time::Instant::now();
        let e = r.change(&argv(&["sleep", "30"]), None).await.unwrap_err();
        assert!(matches!(e, CommandError::Timeout { .. }), "{e}");
        assert!(t.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn dry_run_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x");
        let r = Runner::new(Duration::from_secs(5), true);
        r.change(&argv(&["touch", f.to_str().unwrap()]), None)
            .await
            .unwrap();
        assert!(!f.exists());
    }

    #[test]
    fn quotes_what_a_shell_would_split() {
        assert_eq!(
            shell_words(&argv(&["nft", "-f", "-", "a b", "it's"])),
            r"nft -f - 'a b' 'it'\''s'"
        );
    }
}
