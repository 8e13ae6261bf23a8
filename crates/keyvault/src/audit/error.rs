//! What can go wrong with the audit log, and where tampering was found.

use std::fmt;
use std::path::{Path, PathBuf};

use crypto::CryptoError;

/// A failure of an audit log operation. Every variant means "the audited operation must be
/// refused": the log never reports success for an entry that is not durable.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot access audit log {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Writing the head file, or the header of a new log (both replaced atomically), failed.
    #[error("cannot write the audit log: {0}")]
    Write(#[source] CryptoError),
    #[error(
        "audit log {path} has format version {version}; this build reads version {supported}",
        supported = super::format::VERSION
    )]
    UnsupportedVersion { path: PathBuf, version: u32 },
    #[error(
        "audit log {path} was written under a different platform root key (or its header was altered)"
    )]
    WrongKey { path: PathBuf },
    #[error("audit log {path} failed verification at {at}: {reason}")]
    Tampered {
        path: PathBuf,
        at: Location,
        reason: TamperReason,
    },
    #[error("audit log {path} was deleted or replaced while it was open")]
    Replaced { path: PathBuf },
    #[error(
        "audit log {path} refuses appends after an earlier write failure; reopen it to recover"
    )]
    Poisoned { path: PathBuf },
    #[error("the audit entry time cannot be written as RFC 3339: {0}")]
    Time(#[source] time::error::Format),
    #[error("cannot encode an audit entry: {0}")]
    Encode(#[source] serde_json::Error),
}

impl AuditError {
    pub(super) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AuditError + '_ {
        move |source| AuditError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// The same failure for another append of a failed batch: the same variant and message.
    /// An I/O source keeps its kind and message but not its OS error code.
    pub(super) fn duplicate(&self) -> AuditError {
        fn io(source: &std::io::Error) -> std::io::Error {
            std::io::Error::new(source.kind(), source.to_string())
        }
        match self {
            AuditError::Io { path, source } => AuditError::Io {
                path: path.clone(),
                source: io(source),
            },
            AuditError::Write(CryptoError::Io { path, source }) => {
                AuditError::Write(CryptoError::Io {
                    path: path.clone(),
                    source: io(source),
                })
            }
            AuditError::UnsupportedVersion { path, version } => AuditError::UnsupportedVersion {
                path: path.clone(),
                version: *version,
            },
            AuditError::WrongKey { path } => AuditError::WrongKey { path: path.clone() },
            AuditError::Tampered { path, at, reason } => AuditError::Tampered {
                path: path.clone(),
                at: *at,
                reason: reason.clone(),
            },
            AuditError::Replaced { path } => AuditError::Replaced { path: path.clone() },
            AuditError::Poisoned { path } => AuditError::Poisoned { path: path.clone() },
            // Failures of one record (or of key handling), never of a batch's I/O: keep the
            // message.
            AuditError::Write(_) | AuditError::Time(_) | AuditError::Encode(_) => AuditError::Io {
                path: PathBuf::new(),
                source: std::io::Error::other(self.to_string()),
            },
        }
    }
}

/// Where verification failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// A line of the log file, counted from 1 (line 1 is the header, the entry with `seq` n is
    /// on line n + 2 in an intact log).
    Line(u64),
    /// The last complete line of the log file: `AuditLog::open` reads only the tail. Run
    /// `verify` for the line number of the first fault.
    LastLine,
    /// The head file `<log>.head`.
    HeadFile,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Line(line) => write!(f, "line {line}"),
            Location::LastLine => f.write_str("the last line"),
            Location::HeadFile => f.write_str("the head file"),
        }
    }
}

/// Why verification failed. Each reason names the kind of edit that produces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TamperReason {
    /// The line is not an audit record of the documented layout: not JSON, a wrong member
    /// order, or a header that does not name the format.
    Unparsable { message: String },
    /// The entry's `hash` is not the HMAC of its bytes: the entry was edited (its hash
    /// recomputed without the audit key, or not at all).
    BadHash,
    /// An authentic entry is out of place: entries were deleted, duplicated or reordered.
    BrokenChain(ChainBreak),
    /// The head file records more entries, or a different last hash, than the log holds:
    /// trailing entries were removed.
    Truncated { head_entries: u64, log_entries: u64 },
    /// The log holds more entries than the head file records, beyond the one entry a crash
    /// can leave unacknowledged: the head file was replaced by an older copy.
    HeadBehind { head_entries: u64, log_entries: u64 },
    /// The head file's MAC does not match its contents.
    BadHeadMac,
    /// The log file exists but its head file does not.
    HeadMissing,
    /// The head file records entries but the log file does not exist.
    LogMissing { head_entries: u64 },
}

/// How an authentic entry broke the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainBreak {
    /// `seq` is not the next number: an entry before it was deleted or the lines were moved.
    SeqGap { expected: u64, found: u64 },
    /// `seq` is right but `prevHash` is not the previous entry's hash.
    PrevHashMismatch { seq: u64 },
}

impl fmt::Display for TamperReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TamperReason::Unparsable { message } => write!(f, "unparsable record: {message}"),
            TamperReason::BadHash => {
                f.write_str("the entry hash does not authenticate its contents (entry edited)")
            }
            TamperReason::BrokenChain(ChainBreak::SeqGap { expected, found }) => write!(
                f,
                "expected seq {expected}, found {found} (entries deleted, duplicated or reordered)"
            ),
            TamperReason::BrokenChain(ChainBreak::PrevHashMismatch { seq }) => write!(
                f,
                "prevHash of seq {seq} is not the previous entry's hash (entries replaced)"
            ),
            TamperReason::Truncated {
                head_entries,
                log_entries,
            } => write!(
                f,
                "the head file records {head_entries} entries ending in a different hash than \
                 the {log_entries} in the log (trailing entries removed)"
            ),
            TamperReason::HeadBehind {
                head_entries,
                log_entries,
            } => write!(
                f,
                "the head file records {head_entries} entries but the log holds {log_entries} \
                 (head file replaced by an older copy)"
            ),
            TamperReason::BadHeadMac => f.write_str("the head file MAC does not match"),
            TamperReason::HeadMissing => f.write_str("the head file is missing"),
            TamperReason::LogMissing { head_entries } => write!(
                f,
                "the log file is missing but the head file records {head_entries} entries"
            ),
        }
    }
}

/// A verification fault before the log's path is attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Fault {
    Tampered { at: Location, reason: TamperReason },
    WrongKey,
    UnsupportedVersion { version: u32 },
}

impl Fault {
    pub(super) fn tampered(at: Location, reason: TamperReason) -> Self {
        Fault::Tampered { at, reason }
    }

    pub(super) fn unparsable(at: Location, message: impl fmt::Display) -> Self {
        Fault::tampered(
            at,
            TamperReason::Unparsable {
                message: message.to_string(),
            },
        )
    }

    pub(super) fn at_path(self, path: &Path) -> AuditError {
        let path = path.to_path_buf();
        match self {
            Fault::Tampered { at, reason } => AuditError::Tampered { path, at, reason },
            Fault::WrongKey => AuditError::WrongKey { path },
            Fault::UnsupportedVersion { version } => {
                AuditError::UnsupportedVersion { path, version }
            }
        }
    }
}
