//! hosts.allow, BlockHosts style: `ALL: <addr> : deny` lines between the two
//! `#---- BlockHosts Additions` marker lines. Everything outside the markers is kept byte
//! for byte; the markers are added at the end when missing; the file is replaced
//! atomically (a temporary file in the same directory, synced, then renamed over it, with
//! the original's permissions).
//!
//! Addresses are written as TCP wrappers read them: `192.0.2.1`, `198.51.100.0/255.255.255.0`,
//! `[2001:db8::1]`, `[2001:db8::]/64` (IPv6 needs the brackets: `:` separates fields).

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use ipnet::IpNet;

use super::{Error, Held, Rule, Runner};

/// BlockHosts' marker line (there are two).
pub const MARKER: &str = "#---- BlockHosts Additions";

/// The hosts.allow backend.
#[derive(Debug)]
pub struct HostsAllow {
    path: PathBuf,
    runner: Runner,
}

/// The pattern of a network in TCP wrappers' syntax.
fn pattern(c: &IpNet) -> String {
    let c = c.trunc();
    match c {
        IpNet::V4(n) if n.prefix_len() == 32 => n.addr().to_string(),
        IpNet::V4(n) => format!("{}/{}", n.addr(), n.netmask()),
        IpNet::V6(n) if n.prefix_len() == 128 => format!("[{}]", n.addr()),
        IpNet::V6(n) => format!("[{}]/{}", n.addr(), n.prefix_len()),
    }
}

/// The network of a `ALL: <pattern> : deny` line, if it is one.
fn parse_line(line: &str) -> Option<IpNet> {
    let mut f = line.split(" : ");
    let head = f.next()?.strip_prefix("ALL: ")?;
    if f.next()?.trim_end() != "deny" || f.next().is_some() {
        return None;
    }
    if let Some(rest) = head.strip_prefix('[') {
        let (addr, tail) = rest.split_once(']')?;
        let a: IpAddr = addr.parse().ok()?;
        return match tail.strip_prefix('/') {
            None if tail.is_empty() => Some(IpNet::from(a)),
            Some(len) => IpNet::new(a, len.parse().ok()?).ok(),
            None => None,
        };
    }
    match head.split_once('/') {
        None => head.parse::<IpAddr>().ok().map(IpNet::from),
        Some((a, mask)) => {
            let a: IpAddr = a.parse().ok()?;
            let m: Ipv4Addr = mask.parse().ok()?;
            let len = ipnet::ipv4_mask_to_prefix(m).ok()?;
            IpNet::new(a, len).ok()
        }
    }
}

/// The file split at the markers: before the first, the lines between, after the second.
fn split(content: &str) -> Option<(&str, Vec<&str>, &str)> {
    let mut offset = 0;
    let mut first = None;
    for line in content.split_inclusive('\n') {
        if line.trim_end_matches(['\n', '\r']) == MARKER {
            match first {
                None => first = Some((offset, offset + line.len())),
                Some((start, body)) => {
                    let inner = content[body..offset].lines().collect();
                    return Some((&content[..start], inner, &content[offset..]));
                }
            }
        }
        offset += line.len();
    }
    None
}

/// The rules between the markers.
fn held(content: &str) -> Vec<IpNet> {
    split(content)
        .map(|(_, inner, _)| inner.into_iter().filter_map(parse_line).collect())
        .unwrap_or_default()
}

/// The file after adding `add` and removing `remove` between the markers (added at the
/// end if missing). Lines between the markers that are not catchd's are kept.
pub fn render(content: &str, add: &[IpNet], remove: &[IpNet]) -> String {
    let sep = if content.is_empty() || content.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    let tail = format!("{MARKER}\n");
    // Without a pair of markers (a lone one is left as it is), a new pair goes at the end.
    let (before, inner, after): (String, Vec<&str>, &str) = match split(content) {
        Some((b, i, a)) => (b.to_string(), i, a),
        None => (format!("{content}{sep}"), Vec::new(), &tail),
    };
    let gone: Vec<IpNet> = remove.iter().map(IpNet::trunc).collect();
    let mut lines: Vec<String> = Vec::new();
    let mut have: Vec<IpNet> = Vec::new();
    for l in inner {
        match parse_line(l) {
            Some(c) if gone.contains(&c) || have.contains(&c) => {}
            Some(c) => {
                have.push(c);
                lines.push(l.to_string());
            }
            None => lines.push(l.to_string()),
        }
    }
    for c in add {
        let c = c.trunc();
        if !have.contains(&c) && !gone.contains(&c) {
            have.push(c);
            lines.push(format!("ALL: {} : deny", pattern(&c)));
        }
    }
    let mut out = String::with_capacity(content.len() + lines.len() * 32 + 64);
    out.push_str(&before);
    out.push_str(MARKER);
    out.push('\n');
    for l in lines {
        out.push_str(&l);
        out.push('\n');
    }
    out.push_str(after);
    out
}

impl HostsAllow {
    pub fn new(path: PathBuf, runner: Runner) -> HostsAllow {
        HostsAllow { path, runner }
    }

    fn err(&self, source: std::io::Error) -> Error {
        Error::File {
            path: self.path.display().to_string(),
            source,
        }
    }

    fn read(&self) -> Result<String, Error> {
        match std::fs::read(&self.path) {
            Ok(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Adds the markers if they are missing.
    pub fn setup(&mut self) -> Result<(), Error> {
        let content = self.read()?;
        if split(&content).is_none() {
            self.write(&render(&content, &[], &[]))?;
        }
        Ok(())
    }

    pub fn list(&mut self) -> Result<Vec<Held>, Error> {
        Ok(held(&self.read()?)
            .into_iter()
            .map(|cidr| Held { cidr, until: None })
            .collect())
    }

    pub fn apply(&mut self, add: &[Rule], remove: &[IpNet]) -> Result<(), Error> {
        let content = self.read()?;
        let adds: Vec<IpNet> = add.iter().map(|r| r.cidr).collect();
        let new = render(&content, &adds, remove);
        if new != content {
            self.write(&new)?;
        }
        Ok(())
    }

    fn write(&self, content: &str) -> Result<(), Error> {
        if self.runner.dry_run() {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "would write {}:", self.path.display());
            for l in content.lines() {
                let _ = writeln!(out, "    {l}");
            }
            return Ok(());
        }
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}.catchd-{}", std::process::id()));
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            if let Ok(meta) = std::fs::metadata(&self.path) {
                f.set_permissions(meta.permissions())?;
                #[cfg(unix)]
                {
                    use std::os::unix::fs::MetadataExt as _;
                    let _ = std::os::unix::fs::chown(&tmp, Some(meta.uid()), Some(meta.gid()));
                }
            }
            f.write_all(content.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            std::fs::File::open(&dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|c| c.parse().unwrap()).collect()
    }

    #[test]
    fn patterns_round_trip() {
        for c in [
            "192.0.2.1/32",
            "198.51.100.0/24",
            "2001:db8::1/128",
            "2001:db8::/64",
        ] {
            let c: IpNet = c.parse().unwrap();
            let line = format!("ALL: {} : deny", pattern(&c));
            assert_eq!(parse_line(&line), Some(c), "{line}");
        }
        assert_eq!(
            pattern(&"198.51.100.7/24".parse().unwrap()),
            "198.51.100.0/255.255.255.0"
        );
        assert_eq!(parse_line("ALL: 127.0.0.1 : allow"), None);
        assert_eq!(parse_line("sshd: ALL: spawn x : allow"), None);
    }

    #[test]
    fn a_lone_marker_is_not_a_section() {
        let f = format!("a\n{MARKER}\nb\n");
        let out = render(&f, &nets(&["192.0.2.1/32"]), &[]);
        assert!(out.starts_with(&f), "{out}");
        assert!(out.ends_with(&format!("{MARKER}\nALL: 192.0.2.1 : deny\n{MARKER}\n")));
    }
}
