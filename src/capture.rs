//! Packet sources. The only module that uses libpcap (through the `pcap` crate).
//!
//! [`TraceFile`] reads a pcap or pcapng file and [`Live`] captures from an interface; both
//! hand out borrowed [`Frame`]s: libpcap's own buffer, no copy, valid until the next call.
//! Timestamps come at microsecond precision, as Zeek reads them.
//!
//! A live capture is non-blocking and waits with `poll(2)` on libpcap's selectable file
//! descriptor, so a quiet link never blocks a reader forever (libpcap's read timeout only
//! starts once a packet has arrived; see environment.md).

use std::path::{Path, PathBuf};

use crate::packet::LinkType;
use crate::time::Time;

/// One captured frame, borrowed from the source.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    /// Capture time.
    pub ts: Time,
    /// The captured bytes (up to the snap length).
    pub data: &'a [u8],
    /// The frame's length on the wire.
    pub wire_len: u32,
}

/// Settings of a live capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveOptions {
    /// The interface, as `ip link` names it.
    pub interface: String,
    /// Bytes kept of each packet (headers are all catchd reads).
    pub snaplen: i32,
    /// Whether to see traffic not addressed to this host (a tap or span port).
    pub promisc: bool,
    /// The kernel's capture buffer, in bytes.
    pub buffer_size: i32,
    /// A BPF filter (tcpdump syntax), if any.
    pub filter: Option<String>,
}

/// Why a live capture failed.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// The interface cannot be captured on (no such interface, no permission …).
    #[error("cannot capture on {interface}: {msg}")]
    Open {
        /// The interface.
        interface: String,
        /// libpcap's message.
        msg: String,
    },
    /// The BPF filter does not compile.
    #[error("bad capture filter for {interface} ({filter:?}): {msg}")]
    Filter {
        /// The interface.
        interface: String,
        /// The filter.
        filter: String,
        /// libpcap's message.
        msg: String,
    },
    /// A link layer catchd does not decode.
    #[error("{interface}: link type {dlt} ({name}) is not supported")]
    UnsupportedLink {
        /// The interface.
        interface: String,
        /// The DLT value.
        dlt: i32,
        /// libpcap's name for it.
        name: String,
    },
    /// Reading failed (the interface went away …).
    #[error("capture on {interface} failed: {msg}")]
    Read {
        /// The interface.
        interface: String,
        /// The cause.
        msg: String,
    },
}

/// libpcap's counters for a live capture (since it was opened).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LiveStats {
    /// Packets the kernel passed to the capture.
    pub received: u64,
    /// Packets dropped because the capture buffer was full.
    pub dropped: u64,
    /// Packets dropped by the interface or its driver.
    pub if_dropped: u64,
}

/// A live capture on one interface.
pub struct Live {
    cap: pcap::Capture<pcap::Active>,
    interface: String,
    link: LinkType,
    options: LiveOptions,
}

impl Live {
    /// Opens a capture (immediate mode, non-blocking) and applies the filter.
    ///
    /// # Errors
    /// [`LiveError`] naming the interface.
    pub fn open(o: &LiveOptions) -> Result<Live, LiveError> {
        let open_err = |e: pcap::Error| LiveError::Open {
            interface: o.interface.clone(),
            msg: pcap_message(&e),
        };
        let cap = pcap::Capture::from_device(o.interface.as_str())
            .map_err(open_err)?
            .promisc(o.promisc)
            .snaplen(o.snaplen)
            .buffer_size(o.buffer_size)
            .immediate_mode(true)
            .timeout(100)
            .open()
            .map_err(open_err)?;
        let mut cap = cap.setnonblock().map_err(open_err)?;
        if let Some(f) = &o.filter {
            cap.filter(f, true).map_err(|e| LiveError::Filter {
                interface: o.interface.clone(),
                filter: f.clone(),
                msg: pcap_message(&e),
            })?;
        }
        let dl = cap.get_datalink();
        let link = LinkType::from_dlt(dl.0).ok_or_else(|| LiveError::UnsupportedLink {
            interface: o.interface.clone(),
            dlt: dl.0,
            name: dl.get_name().unwrap_or_else(|_| "unknown".into()),
        })?;
        Ok(Live {
            cap,
            interface: o.interface.clone(),
            link,
            options: o.clone(),
        })
    }

    /// What it was opened with (to open it again).
    pub fn options(&self) -> &LiveOptions {
        &self.options
    }

    /// The interface.
    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// The link type of the frames.
    pub fn link(&self) -> LinkType {
        self.link
    }

    /// Hands up to `max` waiting packets to `f`. If none is waiting, waits up to `wait`
    /// for some first. Never blocks longer than `wait`. Returns how many were handled.
    ///
    /// # Errors
    /// [`LiveError::Read`].
    pub fn poll(
        &mut self,
        wait: std::time::Duration,
        max: usize,
        mut f: impl FnMut(Frame<'_>),
    ) -> Result<usize, LiveError> {
        use std::os::fd::AsFd;
        let n = self.dispatch(max, &mut f)?;
        if n > 0 {
            return Ok(n);
        }
        let mut fds = [nix::poll::PollFd::new(
            self.cap.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let timeout = nix::poll::PollTimeout::try_from(wait).unwrap_or(nix::poll::PollTimeout::MAX);
        match nix::poll::poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                return Err(LiveError::Read {
                    interface: self.interface.clone(),
                    msg: e.to_string(),
                });
            }
        }
        self.dispatch(max, &mut f)
    }

    fn dispatch(&mut self, max: usize, f: &mut impl FnMut(Frame<'_>)) -> Result<usize, LiveError> {
        self.cap
            .dispatch(Some(max), |p| {
                f(Frame {
                    ts: Time::from_timeval(p.header.ts.tv_sec, p.header.ts.tv_usec),
                    data: p.data,
                    wire_len: p.header.len,
                });
            })
            .map_err(|e| LiveError::Read {
                interface: self.interface.clone(),
                msg: pcap_message(&e),
            })
    }

    /// libpcap's counters.
    ///
    /// # Errors
    /// [`LiveError::Read`].
    pub fn stats(&mut self) -> Result<LiveStats, LiveError> {
        let s = self.cap.stats().map_err(|e| LiveError::Read {
            interface: self.interface.clone(),
            msg: pcap_message(&e),
        })?;
        Ok(LiveStats {
            received: u64::from(s.received),
            dropped: u64::from(s.dropped),
            if_dropped: u64::from(s.if_dropped),
        })
    }
}

/// Why a capture could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file does not exist or cannot be read.
    #[error("cannot read {path}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// libpcap does not recognise the file.
    #[error("{path}: not a pcap or pcapng file ({msg})")]
    NotPcap {
        /// The file.
        path: PathBuf,
        /// libpcap's message.
        msg: String,
    },
    /// A link layer catchd does not decode.
    #[error(
        "{path}: link type {dlt} ({name}) is not supported; catchd reads Ethernet, Linux cooked (SLL, SLL2), raw IP and BSD loopback captures"
    )]
    UnsupportedLink {
        /// The file.
        path: PathBuf,
        /// The DLT value.
        dlt: i32,
        /// libpcap's name for it.
        name: String,
    },
    /// The file is damaged part way through (typically a capture cut off mid-packet).
    #[error("{path}: damaged after {packets} packets: {msg}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// Packets read before the damage.
        packets: u64,
        /// libpcap's message.
        msg: String,
    },
}

/// A pcap or pcapng file opened for reading.
pub struct TraceFile {
    // Declared before `_stdio_buf`: fields drop in order, and libpcap's stream must be
    // closed before the buffer it reads into is freed.
    cap: pcap::Capture<pcap::Offline>,
    _stdio_buf: Option<Box<[u8]>>,
    link: LinkType,
    path: PathBuf,
    size: u64,
    packets: u64,
    damage: Option<Error>,
}

/// The stdio buffer libpcap reads trace files through. glibc's default is the file
/// system block size (4 KiB), which costs a `read` system call every few packets; with
/// 1 MiB a bare libpcap read loop ran 15-20 % faster here.
const STDIO_BUFFER: usize = 1 << 20;

/// Tunes libpcap's stream for an opened trace: a large buffer, and no locking.
///
/// glibc allows `setvbuf` after the file header has been read: it syncs the stream first,
/// seeking the descriptor back over what was buffered but not yet consumed. Other C
/// libraries do not promise that, so there the default buffer stays.
///
/// libpcap reads a packet with two `fread` calls, and in a process with more than one
/// thread (the replay's log writer) glibc locks and unlocks the stream in each: four atomic
/// operations per packet, 4 % of a bare read loop's time here. Only the owner of the
/// capture ever reaches the stream (`pcap::Capture` reads through `&mut self`, and the
/// stream is nowhere else), so the stream is set to be locked by its caller
/// (`__fsetlocking(FSETLOCKING_BYCALLER)`), which never needs to.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_stdio_stream(cap: &pcap::Capture<pcap::Offline>) -> Option<Box<[u8]>> {
    use std::ffi::{c_char, c_int, c_void};
    unsafe extern "C" {
        fn pcap_file(p: *mut c_void) -> *mut c_void;
        fn setvbuf(stream: *mut c_void, buf: *mut c_char, mode: c_int, size: usize) -> c_int;
        fn __fsetlocking(stream: *mut c_void, kind: c_int) -> c_int;
    }
    const IOFBF: c_int = 0;
    const FSETLOCKING_BYCALLER: c_int = 2;
    let mut buf = vec![0u8; STDIO_BUFFER].into_boxed_slice();
    // SAFETY: `as_ptr` is libpcap's live handle for this capture; `pcap_file` returns its
    // stream (or null). The buffer is kept alive in the TraceFile until after the capture,
    // and with it the stream, is closed. The stream is only used through the capture,
    // which one thread at a time holds mutably, so it needs no lock of its own.
    unsafe {
        let stream = pcap_file(cap.as_ptr().cast());
        if stream.is_null() {
            return None;
        }
        __fsetlocking(stream, FSETLOCKING_BYCALLER);
        (setvbuf(stream, buf.as_mut_ptr().cast(), IOFBF, buf.len()) == 0).then_some(buf)
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_stdio_stream(_cap: &pcap::Capture<pcap::Offline>) -> Option<Box<[u8]>> {
    None
}

impl TraceFile {
    /// Opens a capture file.
    ///
    /// # Errors
    /// [`Error::Unreadable`], [`Error::NotPcap`] or [`Error::UnsupportedLink`].
    pub fn open(path: &Path) -> Result<TraceFile, Error> {
        let meta = std::fs::metadata(path).map_err(|source| Error::Unreadable {
            path: path.to_path_buf(),
            source,
        })?;
        if meta.is_dir() {
            return Err(Error::NotPcap {
                path: path.to_path_buf(),
                msg: "it is a directory".into(),
            });
        }
        if meta.len() == 0 {
            return Err(Error::NotPcap {
                path: path.to_path_buf(),
                msg: "the file is empty".into(),
            });
        }
        let cap =
            pcap::Capture::from_file_with_precision(path, pcap::Precision::Micro).map_err(|e| {
                Error::NotPcap {
                    path: path.to_path_buf(),
                    msg: pcap_message(&e),
                }
            })?;
        let dlt = cap.get_datalink();
        let link = LinkType::from_dlt(dlt.0).ok_or_else(|| Error::UnsupportedLink {
            path: path.to_path_buf(),
            dlt: dlt.0,
            name: dlt.get_name().unwrap_or_else(|_| "unknown".to_string()),
        })?;
        let stdio_buf = tune_stdio_stream(&cap);
        Ok(TraceFile {
            cap,
            _stdio_buf: stdio_buf,
            link,
            path: path.to_path_buf(),
            size: meta.len(),
            packets: 0,
            damage: None,
        })
    }

    /// The link layer of every frame in the file.
    pub fn link(&self) -> LinkType {
        self.link
    }

    /// The file's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The next frame; `None` at the end of the file or where it is damaged (see
    /// [`damage`](TraceFile::damage)).
    #[inline(always)]
    pub fn next_frame(&mut self) -> Option<Frame<'_>> {
        match self.cap.next_packet() {
            Ok(p) => {
                self.packets += 1;
                Some(Frame {
                    ts: Time::from_timeval(p.header.ts.tv_sec, p.header.ts.tv_usec),
                    data: p.data,
                    wire_len: p.header.len,
                })
            }
            Err(pcap::Error::NoMorePackets) => None,
            Err(e) => {
                self.damage = Some(Error::Damaged {
                    path: self.path.clone(),
                    packets: self.packets,
                    msg: pcap_message(&e),
                });
                None
            }
        }
    }

    /// Calls `f` with every remaining frame, in one `pcap_loop` (libpcap's own loop over
    /// the file, as tcpdump reads), which saves a library call per packet over
    /// [`next_frame`](TraceFile::next_frame). `f` returns `false` to stop early. A damaged
    /// file ends the loop and is reported by [`damage`](TraceFile::damage).
    pub fn for_each_frame(&mut self, mut f: impl FnMut(Frame<'_>) -> bool) {
        let mut stopped = false;
        let mut packets = self.packets;
        let breaker = self.cap.breakloop_handle();
        let r = self.cap.for_each(None, |p| {
            if stopped {
                return;
            }
            packets += 1;
            let frame = Frame {
                ts: Time::from_timeval(p.header.ts.tv_sec, p.header.ts.tv_usec),
                data: p.data,
                wire_len: p.header.len,
            };
            if !f(frame) {
                stopped = true;
                breaker.breakloop();
            }
        });
        self.packets = packets;
        match r {
            Err(e) if !stopped => {
                self.damage = Some(Error::Damaged {
                    path: self.path.clone(),
                    packets: self.packets,
                    msg: pcap_message(&e),
                });
            }
            _ => {}
        }
    }

    /// Why reading stopped early, if the file is damaged ([`Error::Damaged`]); frames
    /// before the damage were returned.
    pub fn damage(&mut self) -> Option<Error> {
        self.damage.take()
    }
}

fn pcap_message(e: &pcap::Error) -> String {
    match e {
        pcap::Error::PcapError(m) => m.clone(),
        other => other.to_string(),
    }
}
