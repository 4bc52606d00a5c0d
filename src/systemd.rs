//! systemd's service protocol, the one module that speaks it: `sd_notify(3)` messages on
//! `$NOTIFY_SOCKET` (READY, RELOADING, STOPPING, WATCHDOG, STATUS), the watchdog interval
//! from `$WATCHDOG_USEC`/`$WATCHDOG_PID`, and whether stderr goes to the journal
//! (`$JOURNAL_STREAM`), in which case log lines carry a `<N>` syslog priority and no level
//! word or time (the journal stamps them).
//!
//! Outside systemd (no `$NOTIFY_SOCKET`) every call is a no-op, so the daemon calls them
//! unconditionally. The protocol is one datagram per message on a Unix socket, a path or
//! (leading `@`) an abstract name; written here rather than linking libsystemd.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::OnceLock;
use std::time::Duration;

/// Where notifications go, read from the environment once.
fn target() -> Option<&'static SocketAddr> {
    static TARGET: OnceLock<Option<SocketAddr>> = OnceLock::new();
    TARGET
        .get_or_init(|| {
            let path = std::env::var_os("NOTIFY_SOCKET")?;
            socket_addr(path.as_encoded_bytes())
        })
        .as_ref()
}

/// `$NOTIFY_SOCKET` as an address: `@name` is an abstract socket, else a path.
fn socket_addr(raw: &[u8]) -> Option<SocketAddr> {
    match raw.split_first() {
        None => None,
        Some((b'@', name)) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name).ok()
        }
        Some(_) => {
            use std::os::unix::ffi::OsStrExt;
            SocketAddr::from_pathname(std::ffi::OsStr::from_bytes(raw)).ok()
        }
    }
}

/// Whether the process runs under a service manager that listens for notifications.
pub fn enabled() -> bool {
    target().is_some()
}

/// Sends `state` (newline-separated `KEY=VALUE` lines); false when there is no
/// service manager or it could not be reached (which is said once, at debug level: a
/// daemon does not stop because its manager went away).
pub fn notify(state: &str) -> bool {
    let Some(addr) = target() else {
        return false;
    };
    let sent = UnixDatagram::unbound().and_then(|s| s.send_to_addr(state.as_bytes(), addr));
    if let Err(e) = &sent {
        tracing::debug!(error = %e, "Cannot notify the service manager.");
    }
    sent.is_ok()
}

/// READY=1: start-up is complete (captures open, store loaded, listener accepting), with
/// a one-line status for `systemctl status`.
pub fn ready(status: &str) -> bool {
    notify(&format!("READY=1\nSTATUS={}", one_line(status)))
}

/// STOPPING=1: the daemon is shutting down.
pub fn stopping() -> bool {
    notify("STOPPING=1\nSTATUS=Stopping")
}

/// RELOADING=1 with the monotonic time systemd ≥ 253 asks for; end it with [`ready`].
pub fn reloading() -> bool {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u128 * 1_000_000 + t.tv_nsec() as u128 / 1000)
        .unwrap_or(0);
    notify(&format!("RELOADING=1\nMONOTONIC_USEC={now}"))
}

/// WATCHDOG=1: the daemon is alive (send at least every [`watchdog_interval`]).
pub fn watchdog() -> bool {
    notify("WATCHDOG=1")
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// The watchdog's timeout when systemd expects pings from this process (`WatchdogSec=`):
/// `$WATCHDOG_USEC`, if `$WATCHDOG_PID` is unset or this process. Ping at half of it.
pub fn watchdog_interval() -> Option<Duration> {
    watchdog_from(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

fn watchdog_from(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok() != Some(me)
    {
        return None;
    }
    let usec: u64 = usec?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Whether stderr is the journal's stream (`$JOURNAL_STREAM` names stderr's device and
/// inode), so that log lines should carry syslog priorities and no timestamps.
pub fn stderr_is_journal() -> bool {
    let Ok(v) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    use std::os::unix::fs::MetadataExt;
    // stat(2) through /proc follows the descriptor to its socket or pipe.
    std::fs::metadata("/proc/self/fd/2").is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

/// Log lines for the journal: `<N>` (the syslog priority of the event's level) before
/// the line the inner format writes; systemd strips it and files the line at that
/// priority (`journalctl -p warning` then works).
pub struct JournalPriority<F>(pub F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for JournalPriority<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        write!(writer, "<{}>", priority(*event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

/// The syslog priority of a level: err, warning, info, debug.
fn priority(level: tracing::Level) -> u8 {
    match level {
        tracing::Level::ERROR => 3,
        tracing::Level::WARN => 4,
        tracing::Level::INFO => 6,
        tracing::Level::DEBUG | tracing::Level::TRACE => 7,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_applies_only_to_its_pid() {
        assert_eq!(
            watchdog_from(Some("30000000"), None, 7),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            watchdog_from(Some("500000"), Some("7"), 7),
            Some(Duration::from_millis(500))
        );
        assert_eq!(watchdog_from(Some("500000"), Some("8"), 7), None);
        assert_eq!(watchdog_from(Some("0"), None, 7), None);
        assert_eq!(watchdog_from(Some("x"), None, 7), None);
        assert_eq!(watchdog_from(None, Some("7"), 7), None);
    }

    #[test]
    fn socket_addresses_are_paths_or_abstract_names() {
        use std::os::linux::net::SocketAddrExt;
        let a = socket_addr(b"@catchd-test").unwrap();
        assert_eq!(a.as_abstract_name(), Some(&b"catchd-test"[..]));
        let p = socket_addr(b"/run/systemd/notify").unwrap();
        assert_eq!(
            p.as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
        assert!(socket_addr(b"").is_none());
    }

    #[test]
    fn priorities_follow_syslog() {
        assert_eq!(priority(tracing::Level::ERROR), 3);
        assert_eq!(priority(tracing::Level::WARN), 4);
        assert_eq!(priority(tracing::Level::INFO), 6);
        assert_eq!(priority(tracing::Level::TRACE), 7);
    }
}
