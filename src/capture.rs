//! Packet sources. The only module that uses libpcap (through the `pcap` crate).
//!
//! [`TraceFile`] reads a pcap or pcapng file and hands out borrowed [`Frame`]s: libpcap's
//! own buffer, no copy, valid until the next call. Timestamps come at microsecond
//! precision, as Zeek reads them.

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
    cap: pcap::Capture<pcap::Offline>,
    link: LinkType,
    path: PathBuf,
    size: u64,
    packets: u64,
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
        Ok(TraceFile {
            cap,
            link,
            path: path.to_path_buf(),
            size: meta.len(),
            packets: 0,
        })
    }

    /// The link layer of every frame in the file.
    pub fn link(&self) -> LinkType {
        self.link
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The next frame; `None` at the end of the file.
    ///
    /// # Errors
    /// [`Error::Damaged`] when the file is cut off or corrupt; frames before the damage
    /// have been returned.
    #[inline]
    pub fn next_frame(&mut self) -> Option<Result<Frame<'_>, Error>> {
        match self.cap.next_packet() {
            Ok(p) => {
                self.packets += 1;
                Some(Ok(Frame {
                    ts: Time::from_timeval(p.header.ts.tv_sec as i64, p.header.ts.tv_usec as i64),
                    data: p.data,
                    wire_len: p.header.len,
                }))
            }
            Err(pcap::Error::NoMorePackets) => None,
            Err(e) => Some(Err(Error::Damaged {
                path: self.path.clone(),
                packets: self.packets,
                msg: pcap_message(&e),
            })),
        }
    }
}

fn pcap_message(e: &pcap::Error) -> String {
    match e {
        pcap::Error::PcapError(m) => m.clone(),
        other => other.to_string(),
    }
}
