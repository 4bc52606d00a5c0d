//! `catchd completions SHELL` and `catchd man-pages DIR`: shell completions and manual
//! pages made from the command-line definitions themselves, so they never disagree with
//! `--help` (the Debian package ships both; see `./x package`).

use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory};

use crate::cli::Cli;

/// `catchd completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh or fish (also elvish, powershell).
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `catchd man-pages`.
#[derive(Debug, Args)]
pub struct ManPagesArgs {
    /// Where to write them (created if missing): catchd.1 and one catchd-COMMAND.1 per
    /// command.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

pub(in crate::cli) fn completions_cmd(a: &CompletionsArgs) -> anyhow::Result<()> {
    let mut out = Vec::new();
    clap_complete::generate(a.shell, &mut Cli::command(), "catchd", &mut out);
    crate::cli::print_stdout(&String::from_utf8_lossy(&out))
}

pub(in crate::cli) fn man_pages_cmd(a: &ManPagesArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&a.dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", a.dir.display()))?;
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let version = cmd.get_version().unwrap_or_default().to_string();
    let written = write_pages(&cmd, &a.dir, &version)?;
    eprintln!(
        "catchd: wrote {written} manual pages to {}",
        a.dir.display()
    );
    Ok(())
}

/// Writes the page of `cmd` and of every visible command under it; returns how many.
fn write_pages(cmd: &clap::Command, dir: &Path, version: &str) -> anyhow::Result<usize> {
    let mut n = 0;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        n += write_pages(sub, dir, version)?;
    }
    let man = clap_mangen::Man::new(cmd.clone())
        .source(format!("catchd {version}"))
        .manual("catchd manual");
    let path = dir.join(man.get_filename());
    let mut text = Vec::new();
    man.render(&mut text)?;
    if cmd.get_name() == "catchd" {
        text.extend_from_slice(FILES_SECTION.as_bytes());
    }
    std::fs::write(&path, text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(n + 1)
}

/// The top page's FILES and SEE ALSO (where the Debian package puts things).
const FILES_SECTION: &str = r#".SH FILES
.TP
\fI/etc/catchd/catchd.toml\fR
The configuration (\fBcatchd check-config\fR checks it and prints what it sets).
.TP
\fI/var/lib/catchd\fR
The store (SQLite) with the BHR registry and the catch-and-release state.
.TP
\fI/var/log/catchd\fR
Zeek's NetControl logs (netcontrol.log, netcontrol_drop.log, netcontrol_catch_release.log).
.TP
\fI/etc/catchd/manager\-IDENT.env\fR
BHR_HOST, BHR_TOKEN, BHR_IDENT and CATCHD_MANAGER_ARGS of the block manager unit
\fBcatchd\-manager@IDENT.service\fR.
.TP
\fI/usr/share/catchd/zeek\-scripts\fR
The Zeek package (load it with \fB@load /usr/share/catchd/zeek\-scripts\fR, or install it with \fBzkg\fR).
.SH SIGNALS
SIGTERM and SIGINT stop the daemon in order; SIGHUP rotates the Zeek logs and re-reads
the configuration's [bhr] rules (never_block, minimum prefix lengths, autoscale) and the
host's addresses (\fBsystemctl reload catchd\fR).
.SH SEE ALSO
\fBcatchd\-run\fR(1), \fBcatchd\-manager\fR(1), \fBcatchd\-check\-config\fR(1), \fBsystemd.exec\fR(5)
"#;
