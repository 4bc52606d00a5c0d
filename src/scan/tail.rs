//! Following a log file as `tail -F` does, with a position that survives restarts.
//!
//! A [`Follower`] reads what was appended since the last [`poll`](Follower::poll) and
//! hands out complete lines. It notices:
//! * rotation: the path names another file (device and inode changed): the old file is
//!   read to its end first, then the new one from its start;
//! * truncation: the file is shorter than the position: read again from the start;
//! * replacement in place: the first line changed (a hash of it is kept, as BlockHosts
//!   keeps the first line): read again from the start;
//! * a partial last line: kept until its newline arrives (and not counted as read, so a
//!   restart reads it whole);
//! * a missing file: waited for.
//!
//! [`Position`] (device, inode, first-line hash, offset) is what a store keeps: resuming
//! from it reads neither a line twice nor misses one, unless the file was rotated twice
//! while nothing was reading it. Lines longer than [`MAX_LINE`] are cut there (the rest
//! is skipped without being held in memory).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::MAX_LINE;

/// Bytes read per system call.
const CHUNK: usize = 64 * 1024;

/// How much of the first line identifies a file.
const FIRST_LINE: usize = 256;

/// Where a follower is in a file.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Position {
    /// The file's device.
    pub dev: u64,
    /// Its inode.
    pub inode: u64,
    /// A hash of its first line (0: not known yet).
    pub first_line: u64,
    /// The offset after the last complete line handed out.
    pub offset: u64,
}

/// FNV-1a: small, stable across versions and platforms (it is stored).
fn fnv1a(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for x in b {
        h ^= u64::from(*x);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The hash of a file's first line, or 0 while it has none (no newline in the first
/// [`FIRST_LINE`] bytes of a shorter file).
fn first_line_hash(f: &mut File) -> io::Result<u64> {
    let mut buf = [0u8; FIRST_LINE];
    f.seek(SeekFrom::Start(0))?;
    let mut n = 0;
    while n < buf.len() {
        let r = f.read(&mut buf[n..])?;
        if r == 0 {
            break;
        }
        n += r;
    }
    Ok(match buf[..n].iter().position(|c| *c == b'\n') {
        Some(i) => fnv1a(&buf[..i]),
        None if n == FIRST_LINE => fnv1a(&buf),
        None => 0,
    })
}

/// Counters of one follower.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TailStats {
    /// Complete lines handed out.
    pub lines: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Rotations seen.
    pub rotations: u64,
    /// Truncations or in-place replacements seen.
    pub truncations: u64,
    /// Lines cut at [`MAX_LINE`].
    pub long_lines: u64,
}

/// Follows one path.
pub struct Follower {
    path: PathBuf,
    file: Option<File>,
    pos: Position,
    /// Bytes of an unfinished line (at most [`MAX_LINE`]).
    partial: Vec<u8>,
    /// The unfinished line was cut: skip to its newline.
    cut: bool,
    /// Where the unfinished line started (the position stays there until it ends).
    read_to: u64,
    buf: Vec<u8>,
    stats: TailStats,
}

impl Follower {
    /// A follower of `path`, resuming at `resume` if that is still the same file (same
    /// inode, same first line, not shorter); otherwise from the start. With
    /// `from_end`, a file seen for the first time is read from its end (only what is
    /// appended from now on), as `tail -F` does.
    pub fn new(path: &Path, resume: Option<Position>, from_end: bool) -> Follower {
        let mut f = Follower {
            path: path.to_path_buf(),
            file: None,
            pos: Position::default(),
            partial: Vec::new(),
            cut: false,
            read_to: 0,
            buf: vec![0; CHUNK],
            stats: TailStats::default(),
        };
        if let Ok(mut file) = File::open(path)
            && let Ok(meta) = file.metadata()
        {
            let first = first_line_hash(&mut file).unwrap_or(0);
            let mut pos = Position {
                dev: meta.dev(),
                inode: meta.ino(),
                first_line: first,
                offset: 0,
            };
            match resume {
                Some(r)
                    if r.dev == pos.dev
                        && r.inode == pos.inode
                        && (r.first_line == 0 || r.first_line == first)
                        && r.offset <= meta.len() =>
                {
                    pos.offset = r.offset;
                }
                Some(_) => {}
                None if from_end => pos.offset = meta.len(),
                None => {}
            }
            if file.seek(SeekFrom::Start(pos.offset)).is_ok() {
                f.read_to = pos.offset;
                f.pos = pos;
                f.file = Some(file);
            }
        }
        f
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where it is: what a store keeps.
    pub fn position(&self) -> &Position {
        &self.pos
    }

    /// Counters.
    pub fn stats(&self) -> TailStats {
        self.stats
    }

    /// Reads the open file to its end, handing out complete lines.
    fn drain(&mut self, f: &mut impl FnMut(&str)) -> io::Result<()> {
        let Some(mut file) = self.file.take() else {
            return Ok(());
        };
        let mut buf = std::mem::take(&mut self.buf);
        let r = self.drain_from(&mut file, &mut buf, f);
        self.file = Some(file);
        self.buf = buf;
        r
    }

    fn drain_from(
        &mut self,
        file: &mut File,
        buf: &mut [u8],
        f: &mut impl FnMut(&str),
    ) -> io::Result<()> {
        loop {
            let n = match file.read(buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.stats.bytes += n as u64;
            let mut start = 0;
            let chunk = &buf[..n];
            while let Some(i) = chunk[start..].iter().position(|c| *c == b'\n') {
                let piece = &chunk[start..start + i];
                let line_end = self.read_to + (start + i + 1) as u64;
                if self.cut {
                    self.cut = false;
                    self.emit_partial(f);
                } else if self.partial.is_empty() {
                    if piece.len() > MAX_LINE {
                        self.stats.long_lines += 1;
                        emit(&piece[..MAX_LINE], f);
                    } else {
                        emit(piece, f);
                    }
                    self.stats.lines += 1;
                } else {
                    let room = MAX_LINE.saturating_sub(self.partial.len());
                    if piece.len() > room {
                        self.stats.long_lines += 1;
                    }
                    self.partial
                        .extend_from_slice(&piece[..piece.len().min(room)]);
                    self.emit_partial(f);
                }
                self.pos.offset = line_end;
                start += i + 1;
            }
            let rest = &chunk[start..];
            if !rest.is_empty() && !self.cut {
                let room = MAX_LINE.saturating_sub(self.partial.len());
                if rest.len() > room {
                    self.cut = true;
                    self.stats.long_lines += 1;
                }
                self.partial
                    .extend_from_slice(&rest[..rest.len().min(room)]);
            }
            self.read_to += n as u64;
        }
    }

    fn emit_partial(&mut self, f: &mut impl FnMut(&str)) {
        emit(&self.partial, f);
        self.partial.clear();
        self.stats.lines += 1;
    }

    /// Opens the file the path now names, from its start.
    fn reopen(&mut self) -> io::Result<bool> {
        let mut file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let meta = file.metadata()?;
        self.pos = Position {
            dev: meta.dev(),
            inode: meta.ino(),
            first_line: first_line_hash(&mut file)?,
            offset: 0,
        };
        file.seek(SeekFrom::Start(0))?;
        self.file = Some(file);
        self.partial.clear();
        self.cut = false;
        self.read_to = 0;
        Ok(true)
    }

    /// Hands out every complete line appended since the last call.
    ///
    /// # Errors
    /// An I/O error other than the file being missing.
    pub fn poll(&mut self, mut f: impl FnMut(&str)) -> io::Result<()> {
        let now = match std::fs::metadata(&self.path) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        if self.file.is_none() {
            if now.is_some() && self.reopen()? {
                return self.drain(&mut f);
            }
            return Ok(());
        }
        let Some(meta) = now else {
            // Renamed away and not yet replaced: finish what was written to it.
            return self.drain(&mut f);
        };
        if meta.dev() != self.pos.dev || meta.ino() != self.pos.inode {
            self.drain(&mut f)?;
            self.stats.rotations += 1;
            self.reopen()?;
            return self.drain(&mut f);
        }
        let replaced = meta.len() < self.read_to || {
            // Same inode: has its first line changed (copied over, rewritten)?
            let file = self.file.as_mut().expect("open");
            let h = first_line_hash(file)?;
            file.seek(SeekFrom::Start(self.read_to))?;
            let changed = self.pos.first_line != 0 && h != 0 && h != self.pos.first_line;
            if self.pos.first_line == 0 {
                self.pos.first_line = h;
            }
            changed
        };
        if replaced {
            self.stats.truncations += 1;
            self.reopen()?;
        }
        self.drain(&mut f)
    }

    /// Hands out an unfinished last line as a line (at the end of a one-shot read).
    pub fn finish(&mut self, mut f: impl FnMut(&str)) {
        if !self.partial.is_empty() || self.cut {
            self.emit_partial(&mut f);
            self.cut = false;
            self.pos.offset = self.read_to;
        }
    }
}

fn emit(b: &[u8], f: &mut impl FnMut(&str)) {
    match std::str::from_utf8(b) {
        Ok(s) => f(s),
        Err(_) => f(&String::from_utf8_lossy(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn lines(f: &mut Follower) -> Vec<String> {
        let mut v = Vec::new();
        f.poll(|l| v.push(l.to_string())).unwrap();
        v
    }

    fn append(p: &Path, s: &str) {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .unwrap()
            .write_all(s.as_bytes())
            .unwrap();
    }

    #[test]
    fn appends_partial_lines_rotation_and_truncation() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("auth.log");
        append(&p, "one\ntwo\nthr");
        let mut f = Follower::new(&p, None, false);
        assert_eq!(lines(&mut f), ["one", "two"]);
        assert_eq!(f.position().offset, 8);
        append(&p, "ee\nfour\n");
        assert_eq!(lines(&mut f), ["three", "four"]);
        assert!(lines(&mut f).is_empty());
        // Rotation: lines written to the old file before the rename are still read.
        append(&p, "five\n");
        std::fs::rename(&p, d.path().join("auth.log.1")).unwrap();
        append(&d.path().join("auth.log.1"), "six\n");
        assert_eq!(lines(&mut f), ["five", "six"]);
        append(&p, "seven\n");
        assert_eq!(lines(&mut f), ["seven"]);
        assert_eq!(f.stats().rotations, 1);
        // Truncation (copytruncate).
        std::fs::write(&p, "").unwrap();
        assert!(lines(&mut f).is_empty());
        append(&p, "eight\n");
        assert_eq!(lines(&mut f), ["eight"]);
        assert_eq!(f.stats().truncations, 1);
        // Replaced in place with a longer file: the first line differs.
        std::fs::write(&p, "brand new first line\nnine\nten\n").unwrap();
        assert_eq!(lines(&mut f), ["brand new first line", "nine", "ten"]);
        // Missing, then back.
        std::fs::remove_file(&p).unwrap();
        assert!(lines(&mut f).is_empty());
        append(&p, "eleven\n");
        assert_eq!(lines(&mut f), ["eleven"]);
    }

    #[test]
    fn resume_reads_nothing_twice_and_misses_nothing() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("auth.log");
        append(&p, "a\nb\nc");
        let mut f = Follower::new(&p, None, false);
        assert_eq!(lines(&mut f), ["a", "b"]);
        let pos = f.position().clone();
        drop(f);
        append(&p, "\nd\n");
        let mut f = Follower::new(&p, Some(pos.clone()), false);
        assert_eq!(lines(&mut f), ["c", "d"]);
        // A position from another file (rotated while down): the new file from its start.
        let other = Position {
            inode: pos.inode + 1,
            ..pos.clone()
        };
        let mut f = Follower::new(&p, Some(other), false);
        assert_eq!(lines(&mut f), ["a", "b", "c", "d"]);
        // Same inode, different first line (rewritten while down): from the start.
        let changed = Position {
            first_line: pos.first_line ^ 1,
            ..pos.clone()
        };
        let mut f = Follower::new(&p, Some(changed), false);
        assert_eq!(lines(&mut f).len(), 4);
        // A first sighting from the end reads only what comes next.
        let mut f = Follower::new(&p, None, true);
        assert!(lines(&mut f).is_empty());
        append(&p, "e\n");
        assert_eq!(lines(&mut f), ["e"]);
    }

    #[test]
    fn long_lines_are_cut_without_holding_them() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.log");
        let long = "y".repeat(MAX_LINE * 3 + CHUNK * 2);
        append(&p, &format!("short\n{long}\nafter\n{long}"));
        let mut f = Follower::new(&p, None, false);
        let got = lines(&mut f);
        assert_eq!(got.len(), 3);
        assert_eq!(got[1].len(), MAX_LINE);
        assert_eq!(got[2], "after");
        assert!(f.partial.len() <= MAX_LINE);
        let mut last = Vec::new();
        f.finish(|l| last.push(l.len()));
        assert_eq!(last, [MAX_LINE]);
        assert_eq!(f.stats().long_lines, 2);
        // Invalid UTF-8 is read, not refused.
        append(&p, "\nbad \u{fffd}\n");
        let mut f = Follower::new(&p, None, false);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"raw \xff\xfe\n")
            .unwrap();
        assert!(lines(&mut f).last().unwrap().starts_with("raw "));
    }
}
