//! Errors of the trace crate: each says what was found, where, and what was expected.

use std::path::PathBuf;

/// An error reading or writing a trace.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The I/O error is part of the message, not a `source()`, so a one-line report names it once.
    #[error("{}: {err}", path.display())]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{}: not a krr trace (bad magic {found:02x?}, expected {expected:?})", path.display())]
    BadMagic { path: PathBuf, found: Vec<u8>, expected: &'static str },
    #[error("{}: trace format version {found} is not supported (this krr reads version {supported})", path.display())]
    UnsupportedVersion { path: PathBuf, found: u32, supported: u32 },
    #[error("{}: corrupt header: {reason}", path.display())]
    CorruptHeader { path: PathBuf, reason: String },
    #[error(
        "{}: damaged at byte {offset} (block {block}): {reason}; {events_recovered} events before it are intact",
        path.display()
    )]
    Corrupt { path: PathBuf, offset: u64, block: u64, events_recovered: u64, reason: String },
    #[error("{what} is {value}, above the limit of {max}")]
    Limit { what: &'static str, value: u64, max: u64 },
    #[error("{}: already holds a trace (remove it or choose another directory)", path.display())]
    AlreadyExists { path: PathBuf },
    #[error("trace writer failed earlier: {0}")]
    WriterFailed(String),
}

impl TraceError {
    pub(crate) fn io(path: impl Into<PathBuf>, err: std::io::Error) -> Self {
        TraceError::Io { path: path.into(), err }
    }
}
