//! The audit log file: opening with crash recovery, durable appends, reads and offline
//! verification. The only module of `audit` that touches the file system or the clock.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::thread;

use crypto::{CryptoError, RootKey, files};
use time::OffsetDateTime;

use super::chain::{self, ChainWalker, MAX_BATCH, Tail, WalkError};
use super::error::{AuditError, Fault, Location, TamperReason};
use super::format::{self, AuditEntry, AuditKey, AuditRecord, ChainHash, Head};
use super::group::{GroupCommit, Ticket};

/// `callerObjectId` of entries the log writes about itself.
pub const SYSTEM_CALLER: &str = "sealdisk";
/// `operation` of the entry `AuditLog::open` appends after repairing a crash.
pub const RECOVERY_OPERATION: &str = "AuditLogRecovered";

/// Under concurrent appends, the longest a batch waits for company (counted from the start of
/// the batch before it): a batch costs three syncs, about 0.25 ms of CPU on a virtual disk,
/// however many entries it holds, so under load the entries of a few milliseconds share one.
/// A lone append never waits (see `group`).
const GATHER: std::time::Duration = std::time::Duration::from_millis(10);

/// Bytes read per step when looking for the last lines of the log.
const SCAN_CHUNK: usize = 8 * 1024;
/// The header line is far shorter; a first line longer than this is not a header.
const MAX_HEADER: usize = 1024;

/// An open audit log. Concurrent appends are committed in batches (group commit) by a
/// committer thread of the log's own; share it with `Arc`. Dropping it commits what is
/// queued and stops the thread.
///
/// Exactly one `AuditLog` (one process) may have a given file open: there is no
/// inter-process lock.
pub struct AuditLog {
    writer: Arc<Writer>,
    /// Runs `writer.group`'s commits; joined on drop.
    committer: Option<thread::JoinHandle<()>>,
    created: bool,
    recovery: Recovery,
}

/// The files and the queue, shared by the log's handle and its committer thread.
struct Writer {
    path: PathBuf,
    head_path: PathBuf,
    /// The head's temp file, `<log>.head.tmp`: a batch's next head before it is published.
    intent_path: PathBuf,
    /// The directory of all three files, synced to make renames and new names durable.
    dir: PathBuf,
    key: AuditKey,
    /// Opened for reading and appending. Reads are positional, so they need no lock.
    file: File,
    /// Device and inode of `file`, to notice the path being deleted or replaced.
    identity: (u64, u64),
    group: GroupCommit<State, Pending, Result<AuditEntry, AuditError>>,
}

/// A record waiting for its batch, with its time stamp.
type Pending = (AuditRecord, OffsetDateTime);

/// What the log has acknowledged, as of the last finished batch.
#[derive(Debug, Clone)]
struct State {
    entries: u64,
    last_hash: ChainHash,
    /// File length covering the header and the acknowledged entries.
    len: u64,
    /// An append failed in a way that left the file or the head file in doubt; only
    /// reopening (and its recovery) makes the log writable again.
    poisoned: bool,
    stats: CommitStats,
}

/// How appends were grouped since `open`. Concurrent appenders share a batch: one write, one
/// `sync_data` and one head-file update for all of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Entries acknowledged, the recovery entry of `open` included.
    pub entries: u64,
    /// Batches acknowledged (each made its entries durable with one sync of the log).
    pub batches: u64,
}

/// Crash residue: what `verify` found pending, or what `AuditLog::open` repaired.
///
/// Neither kind can hide an acknowledged entry: both are accepted only when the complete,
/// authentic entries agree with the head file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Length of an incomplete final line (no newline): an append interrupted before it
    /// returned, so never acknowledged. `open` cuts it off.
    pub torn_bytes: u64,
    /// `seq` of the first complete, authentic entry the head file does not yet cover: it was
    /// written and synced, but the process stopped (or the head write failed) before the
    /// append returned. `open` keeps it, and every entry after it, and moves the head
    /// forward. More than one such entry is accepted only as one batch whose next head is
    /// in the head's temp file (see the module docs).
    pub unacknowledged_seq: Option<u64>,
}

impl Recovery {
    /// No residue.
    pub fn is_empty(&self) -> bool {
        self.torn_bytes == 0 && self.unacknowledged_seq.is_none()
    }

    /// `entries`: the complete entries in the log, the unacknowledged ones included.
    fn describe(&self, entries: u64) -> String {
        let mut parts = Vec::new();
        if self.torn_bytes > 0 {
            parts.push(format!(
                "removed an incomplete final line of {} bytes (never acknowledged)",
                self.torn_bytes
            ));
        }
        match self.unacknowledged_seq {
            Some(seq) if entries > seq + 1 => parts.push(format!(
                "kept entries {seq} to {}, written before the crash but never acknowledged",
                entries - 1
            )),
            Some(seq) => parts.push(format!(
                "kept entry {seq}, written before the crash but never acknowledged"
            )),
            None => {}
        }
        format!("recovered after an unclean stop: {}", parts.join("; "))
    }
}

/// Which entries `AuditLog::entries` returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only entries of this vault, compared ASCII case-insensitively (vault names are).
    pub vault: Option<String>,
    /// Only entries of this key, compared ASCII case-insensitively (key names are).
    pub key: Option<String>,
    /// Only the newest `limit` matching entries. They are still returned oldest first.
    pub limit: Option<usize>,
}

impl AuditFilter {
    fn matches(&self, entry: &AuditEntry) -> bool {
        let same = |wanted: &Option<String>, actual: Option<&str>| match wanted {
            None => true,
            Some(wanted) => actual.is_some_and(|actual| actual.eq_ignore_ascii_case(wanted)),
        };
        same(&self.vault, Some(&entry.vault)) && same(&self.key, entry.key.as_deref())
    }
}

/// The result of a clean `verify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Complete, authentic entries in the log, including an unacknowledged one.
    pub entries: u64,
    /// `hash` of the last entry (`ChainHash::GENESIS` for an empty log).
    pub last_hash: ChainHash,
    /// Crash residue the next `AuditLog::open` will repair; empty for a cleanly closed log.
    pub pending: Recovery,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.writer.path)
            .field("key", &self.writer.key)
            .field("created", &self.created)
            .field("recovery", &self.recovery)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens the log at `path` (head file `<path>.head`), creating both on first use.
    ///
    /// Checks the header and the last complete line against the head file; a log whose tail
    /// disagrees is refused. Crash residue (see `Recovery`) is repaired and recorded as a
    /// `RECOVERY_OPERATION` entry by `SYSTEM_CALLER`. Run `verify` for a full check.
    pub fn open(path: &Path, root: &RootKey) -> Result<AuditLog, AuditError> {
        let key = AuditKey::derive(root);
        let head_path = head_path(path);
        let created = match fs::symlink_metadata(path) {
            Ok(_) => false,
            Err(e) if e.kind() == io::ErrorKind::NotFound => true,
            Err(source) => return Err(AuditError::io(path)(source)),
        };
        if created {
            // The head file first: a log file never exists without one.
            match read_head(&head_path, &key).map_err(|e| e.at(path))? {
                None => write_head(&head_path, &key, Head::EMPTY)?,
                // A crash between creating the head file and the log file.
                Some(head) if head == Head::EMPTY => {}
                Some(head) => {
                    let reason = TamperReason::LogMissing {
                        head_entries: head.entries,
                    };
                    return Err(Fault::tampered(Location::HeadFile, reason).at_path(path));
                }
            }
            files::write_atomic(path, &format::header_line(&key), true)
                .map_err(AuditError::Write)?;
        }

        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(path)
            .map_err(AuditError::io(path))?;
        let meta = file.metadata().map_err(AuditError::io(path))?;
        let len = meta.len();
        let header_len = read_header(&file, path, len, &key).map_err(|e| e.at(path))?;
        let head = read_head(&head_path, &key)
            .map_err(|e| e.at(path))?
            .ok_or_else(|| Fault::tampered(Location::HeadFile, TamperReason::HeadMissing))
            .map_err(|fault| fault.at_path(path))?;
        let scan = scan_tail(&file, len, header_len, SCAN_CHUNK).map_err(AuditError::io(path))?;
        let tail = match &scan.last_line {
            None => Tail {
                torn_bytes: scan.torn_bytes,
                ..Tail::EMPTY
            },
            Some(line) => {
                let entry = format::open_entry(&key, line, Location::LastLine)
                    .map_err(|fault| fault.at_path(path))?;
                Tail::ending_in(&entry, scan.torn_bytes)
            }
        };
        let unacknowledged_seq = match chain::reconcile(&head, &tail) {
            Ok(seq) => seq,
            // More than one entry past the head: acceptable only as one batch's residue.
            Err(TamperReason::HeadBehind { .. })
                if batch_residue_links(
                    &file,
                    &key,
                    &head,
                    &tail,
                    path,
                    header_len,
                    scan.complete_len,
                )
                .map_err(AuditError::io(path))? =>
            {
                Some(head.entries)
            }
            Err(reason) => return Err(Fault::tampered(Location::HeadFile, reason).at_path(path)),
        };
        let recovery = Recovery {
            torn_bytes: scan.torn_bytes,
            unacknowledged_seq,
        };
        if recovery.torn_bytes > 0 {
            file.set_len(scan.complete_len)
                .and_then(|()| file.sync_all())
                .map_err(AuditError::io(path))?;
        }

        let state = State {
            entries: tail.entries,
            last_hash: tail.last_hash,
            len: scan.complete_len,
            poisoned: false,
            stats: CommitStats::default(),
        };
        let writer = Arc::new(Writer {
            path: path.to_path_buf(),
            head_path,
            intent_path: intent_path(path),
            dir: parent_dir(path).to_path_buf(),
            key,
            identity: (meta.dev(), meta.ino()),
            file,
            group: GroupCommit::new(state, MAX_BATCH, GATHER),
        });
        let committer = {
            let writer = Arc::clone(&writer);
            thread::Builder::new()
                .name("audit-commit".into())
                .spawn(move || {
                    writer
                        .group
                        .run(|state, batch| writer.commit_batch(state, batch));
                })
                .map_err(AuditError::io(path))?
        };
        let log = AuditLog {
            writer,
            committer: Some(committer),
            created,
            recovery,
        };
        if !log.recovery.is_empty() {
            // Also moves the head file past an unacknowledged entry.
            log.append(AuditRecord {
                caller_object_id: SYSTEM_CALLER.to_owned(),
                vault: String::new(),
                key: None,
                version: None,
                operation: RECOVERY_OPERATION.to_owned(),
                result: "Success".to_owned(),
                detail: Some(log.recovery.describe(tail.entries)),
            })?;
        }
        Ok(log)
    }

    /// The log file's path.
    pub fn path(&self) -> &Path {
        &self.writer.path
    }

    /// Whether `open` created the log. Deleting both the log and its head file cannot be
    /// told apart from a first start here; a caller that knows a log existed must check this.
    pub fn created(&self) -> bool {
        self.created
    }

    /// What `open` repaired (empty after a clean stop).
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// Appends `record`, stamped with the current time. See `append_at`.
    pub fn append(&self, record: AuditRecord) -> Result<AuditEntry, AuditError> {
        self.append_at(record, OffsetDateTime::now_utc())
    }

    /// Queues `record`, stamped with the current time, and returns at once. The ticket
    /// resolves, blocking (`AuditTicket::wait`) or awaited, exactly as `append` would return:
    /// `Ok` only once the entry is durable and acknowledged. The audited operation's answer
    /// must not leave before that. Dropping the ticket does not withdraw the entry.
    pub fn submit(&self, record: AuditRecord) -> AuditTicket {
        self.submit_at(record, OffsetDateTime::now_utc())
    }

    /// `submit`, stamped with `time`.
    pub fn submit_at(&self, record: AuditRecord, time: OffsetDateTime) -> AuditTicket {
        AuditTicket {
            ticket: self.writer.group.submit((record, time)),
            writer: Arc::clone(&self.writer),
        }
    }

    /// Appends `record` stamped with `time` (converted to UTC).
    ///
    /// `Ok` means the entry's line is on stable storage (`write_all`, `sync_data`) and the
    /// head file covers it (atomic replace). On `Err` the audited operation must be refused.
    /// After a failure that leaves the file in doubt (sync or head write failed, a partial
    /// line could not be rolled back, the file was deleted or replaced) every later append
    /// fails with `Poisoned` until the log is reopened.
    ///
    /// Concurrent appends share the work: the entries queued while one batch is being
    /// written go into the next batch, committed by one of their callers for all of them.
    /// Each caller gets its own entry, or the batch's error: a failed batch fails every
    /// append in it. A lone append commits at once, as a batch of one.
    pub fn append_at(
        &self,
        record: AuditRecord,
        time: OffsetDateTime,
    ) -> Result<AuditEntry, AuditError> {
        self.submit_at(record, time).wait()
    }

    /// How appends were grouped since `open`.
    pub fn commit_stats(&self) -> CommitStats {
        self.writer.group.state().stats
    }

    /// The acknowledged entries that match `filter`, oldest first. Every entry of the file up
    /// to the last acknowledged one is authenticated and chain-checked on the way (O(log size)),
    /// so an entry edited after `open` is reported as `Tampered`, never returned.
    pub fn entries(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>, AuditError> {
        self.writer.entries(filter)
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.writer.group.close();
        if let Some(committer) = self.committer.take() {
            // A committer that panicked has already refused everything queued.
            let _ = committer.join();
        }
    }
}

/// An append on its way to the log; see `AuditLog::submit`. Resolves to the entry once it
/// is durable and covered by the head file, or to the append's error.
#[must_use = "an audited operation may answer only once its entry is acknowledged"]
pub struct AuditTicket {
    ticket: Ticket<Result<AuditEntry, AuditError>>,
    writer: Arc<Writer>,
}

impl std::fmt::Debug for AuditTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditTicket")
            .field("log", &self.writer.path)
            .finish_non_exhaustive()
    }
}

impl AuditTicket {
    /// Blocks until the entry is acknowledged or has failed.
    pub fn wait(self) -> Result<AuditEntry, AuditError> {
        let outcome = self.ticket.wait();
        self.writer.outcome(outcome)
    }
}

impl std::future::Future for AuditTicket {
    type Output = Result<AuditEntry, AuditError>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match std::pin::Pin::new(&mut self.ticket).poll(cx) {
            Poll::Ready(outcome) => Poll::Ready(self.writer.outcome(outcome)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Writer {
    /// An append's result; `None` from the queue means a commit panicked or broke its
    /// contract, so the fate of the entry is unknown.
    fn outcome(
        &self,
        outcome: Option<Result<AuditEntry, AuditError>>,
    ) -> Result<AuditEntry, AuditError> {
        outcome.unwrap_or_else(|| {
            Err(AuditError::Poisoned {
                path: self.path.clone(),
            })
        })
    }

    /// Seals the batch's records in queue order, then makes them durable and acknowledged
    /// together. One result per record, in order; `state` moves only when the batch lands.
    fn commit_batch(
        &self,
        state: &mut State,
        batch: Vec<Pending>,
    ) -> Vec<Result<AuditEntry, AuditError>> {
        if state.poisoned {
            return batch
                .iter()
                .map(|_| {
                    Err(AuditError::Poisoned {
                        path: self.path.clone(),
                    })
                })
                .collect();
        }
        let mut lines = Vec::new();
        let mut next = Head {
            entries: state.entries,
            last_hash: state.last_hash,
        };
        let mut results: Vec<_> = batch
            .into_iter()
            .map(|(record, time)| {
                // A record that cannot be sealed fails alone and takes no `seq`.
                let (entry, line) =
                    format::seal_entry(&self.key, next.entries, next.last_hash, time, record)?;
                lines.extend_from_slice(&line);
                next = Head {
                    entries: entry.seq + 1,
                    last_hash: entry.hash,
                };
                Ok(entry)
            })
            .collect();
        let sealed = next.entries - state.entries;
        if sealed == 0 {
            return results;
        }
        if let Err(error) = self.write_batch(state, &lines, next) {
            for result in results.iter_mut().filter(|r| r.is_ok()) {
                *result = Err(error.duplicate());
            }
            return results;
        }
        state.entries = next.entries;
        state.last_hash = next.last_hash;
        state.len += lines.len() as u64;
        state.stats.entries += sealed;
        state.stats.batches += 1;
        results
    }

    /// Makes `lines` durable and publishes `next`, the head that covers them:
    ///
    /// 1. the intent: `next` into the head's temp file, synced;
    /// 2. the lines: one `write_all`, one `sync_data`;
    /// 3. the head: rename of the temp file over the head file, then one sync of the
    ///    directory (which also makes the name of the next batch's temp file durable).
    ///
    /// The same three syncs as a lone append always paid. Step 1 comes first so that
    /// whenever lines are on disk beyond the head, the head they were meant to reach is too:
    /// that is what lets `open` keep a whole synced batch after a crash.
    fn write_batch(&self, state: &mut State, lines: &[u8], next: Head) -> Result<(), AuditError> {
        if let Err(e) = self.check_identity() {
            state.poisoned = true;
            return Err(e);
        }
        // Nothing reached the log or the head yet: a failure here leaves both as they were.
        self.write_intent(next)?;
        if let Err(source) = (&self.file).write_all(lines) {
            // Take back a partial batch so the file stays as acknowledged.
            let rollback = self
                .file
                .set_len(state.len)
                .and_then(|()| self.file.sync_data());
            if rollback.is_err() {
                state.poisoned = true;
            }
            return Err(AuditError::io(&self.path)(source));
        }
        if let Err(source) = self.file.sync_data() {
            // After a failed fsync the page cache cannot be trusted; reopen decides.
            state.poisoned = true;
            return Err(AuditError::io(&self.path)(source));
        }
        if let Err(e) = self.publish_intent() {
            // The entries are durable but unacknowledged; reopening moves the head past them.
            state.poisoned = true;
            return Err(e);
        }
        Ok(())
    }

    /// Writes `next` into the head's temp file and syncs it. The file's name is normally
    /// durable already (`publish_intent` created it before its directory sync); when it had
    /// to be created here, the directory is synced too.
    fn write_intent(&self, next: Head) -> Result<(), AuditError> {
        let path = &self.intent_path;
        let write = || -> io::Result<()> {
            let mut created = false;
            let mut file = match OpenOptions::new().write(true).truncate(true).open(path) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    created = true;
                    OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(path)?
                }
                Err(e) => return Err(e),
            };
            file.write_all(&next.encode(&self.key))?;
            file.sync_all()?;
            if created {
                File::open(&self.dir)?.sync_all()?;
            }
            Ok(())
        };
        write().map_err(|source| write_error(path, source))
    }

    /// Replaces the head file with the head's temp file, creates the (empty) temp file of
    /// the next batch, and syncs the directory.
    fn publish_intent(&self) -> Result<(), AuditError> {
        fs::rename(&self.intent_path, &self.head_path)
            .map_err(|source| write_error(&self.head_path, source))?;
        // Best effort: if this fails, the next batch creates the file and syncs the directory.
        let _ = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&self.intent_path);
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|source| write_error(&self.dir, source))
    }

    fn check_identity(&self) -> Result<(), AuditError> {
        match fs::metadata(&self.path) {
            Ok(meta) if (meta.dev(), meta.ino()) == self.identity => Ok(()),
            Ok(_) => Err(AuditError::Replaced {
                path: self.path.clone(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(AuditError::Replaced {
                path: self.path.clone(),
            }),
            Err(source) => Err(AuditError::io(&self.path)(source)),
        }
    }

    fn entries(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>, AuditError> {
        let (len, expected) = {
            let state = self.group.state();
            let head = Head {
                entries: state.entries,
                last_hash: state.last_hash,
            };
            (state.len, head)
        };
        let reader = BufReader::new(ReadAt {
            file: &self.file,
            pos: 0,
            end: len,
        });
        let mut found = VecDeque::new();
        let tail = ChainWalker::new(&self.key)
            .walk(reader, |entry| {
                if filter.matches(&entry) {
                    found.push_back(entry);
                    if filter.limit.is_some_and(|limit| found.len() > limit) {
                        found.pop_front();
                    }
                }
            })
            .map_err(|e| walk_error(&self.path, e))?;
        match chain::reconcile(&expected, &tail) {
            Ok(None) if tail.torn_bytes == 0 => Ok(found.into()),
            Err(reason) => Err(Fault::tampered(Location::LastLine, reason).at_path(&self.path)),
            Ok(_) => {
                let reason = TamperReason::Truncated {
                    head_entries: expected.entries,
                    log_entries: tail.entries,
                };
                Err(Fault::tampered(Location::LastLine, reason).at_path(&self.path))
            }
        }
    }
}

/// Verifies the whole log at `path` against its head file, without changing either: every
/// entry's hash, the chain of `seq` and `prevHash`, and the end of the log against the head.
///
/// Crash residue that `AuditLog::open` would repair is not a failure; it is reported in
/// `VerifyReport::pending`. The first fault found is returned as `AuditError::Tampered`.
pub fn verify(path: &Path, root: &RootKey) -> Result<VerifyReport, AuditError> {
    let key = AuditKey::derive(root);
    let head_path = head_path(path);
    let file = match File::open(path) {
        Ok(file) => file,
        Err(source) if source.kind() == io::ErrorKind::NotFound => {
            return match read_head(&head_path, &key).map_err(|e| e.at(path))? {
                Some(head) if head.entries > 0 => {
                    let reason = TamperReason::LogMissing {
                        head_entries: head.entries,
                    };
                    Err(Fault::tampered(Location::HeadFile, reason).at_path(path))
                }
                _ => Err(AuditError::io(path)(source)),
            };
        }
        Err(source) => return Err(AuditError::io(path)(source)),
    };
    // `seq` and `prevHash` of the newest entries: where a batch past the head begins.
    let mut newest = VecDeque::with_capacity(MAX_BATCH);
    let tail = ChainWalker::new(&key)
        .walk(BufReader::new(file), |entry| {
            if newest.len() == MAX_BATCH {
                newest.pop_front();
            }
            newest.push_back((entry.seq, entry.prev_hash));
        })
        .map_err(|e| walk_error(path, e))?;
    let head = read_head(&head_path, &key)
        .map_err(|e| e.at(path))?
        .ok_or_else(|| Fault::tampered(Location::HeadFile, TamperReason::HeadMissing))
        .map_err(|fault| fault.at_path(path))?;
    let unacknowledged_seq = match chain::reconcile(&head, &tail) {
        Ok(seq) => seq,
        // The walk checked the chain; what is left is where the batch joins the head.
        Err(TamperReason::HeadBehind { .. })
            if chain::batch_residue(&head, &tail, read_intent(path, &key).as_ref())
                && newest.contains(&(head.entries, head.last_hash)) =>
        {
            Some(head.entries)
        }
        Err(reason) => return Err(Fault::tampered(Location::HeadFile, reason).at_path(path)),
    };
    Ok(VerifyReport {
        entries: tail.entries,
        last_hash: tail.last_hash,
        pending: Recovery {
            torn_bytes: tail.torn_bytes,
            unacknowledged_seq,
        },
    })
}

/// `<log>.head`, next to the log.
pub fn head_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".head");
    path.with_file_name(name)
}

/// `<log>.head.tmp`, the head's temp file: empty between batches; while a batch is being
/// written, the head that will cover it.
fn intent_path(path: &Path) -> PathBuf {
    let mut name = head_path(path).into_os_string();
    name.push(".tmp");
    PathBuf::from(name)
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

fn write_error(path: &Path, source: io::Error) -> AuditError {
    AuditError::Write(CryptoError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The head a batch in flight meant to publish, read from the head's temp file of the log
/// at `path`. `None` when there is no such file, it is empty (no batch was in flight) or it is
/// not an authentic head: an intent that cannot be read vouches for nothing.
fn read_intent(path: &Path, key: &AuditKey) -> Option<Head> {
    let bytes = fs::read(intent_path(path)).ok()?;
    Head::decode(key, &bytes).ok()
}

/// Whether the entries past `head` (more than one) are the crash residue of one batch: the
/// head's temp file vouches for them (`chain::batch_residue`), and read back from the end of
/// the log they are authentic and chain from the head's last hash.
fn batch_residue_links(
    file: &File,
    key: &AuditKey,
    head: &Head,
    tail: &Tail,
    log_path: &Path,
    header_len: u64,
    complete_len: u64,
) -> io::Result<bool> {
    if !chain::batch_residue(head, tail, read_intent(log_path, key).as_ref()) {
        return Ok(false);
    }
    let count = usize::try_from(tail.entries - head.entries).unwrap_or(usize::MAX);
    let lines = last_lines(file, header_len, complete_len, count, SCAN_CHUNK)?;
    if lines.len() != count {
        return Ok(false);
    }
    let mut expected = *head;
    for line in &lines {
        let Ok(entry) = format::open_entry(key, line, Location::LastLine) else {
            return Ok(false);
        };
        if entry.seq != expected.entries || entry.prev_hash != expected.last_hash {
            return Ok(false);
        }
        expected = Head {
            entries: entry.seq + 1,
            last_hash: entry.hash,
        };
    }
    Ok(true)
}

/// The last `n` complete entry lines (fewer if the log has fewer) of a log whose complete
/// lines end at `end`, oldest first, without their newlines.
fn last_lines(
    file: &File,
    header_len: u64,
    end: u64,
    n: usize,
    chunk: usize,
) -> io::Result<Vec<Vec<u8>>> {
    let header_newline = header_len - 1;
    let mut newline = end - 1;
    let mut lines = Vec::new();
    while lines.len() < n && newline > header_newline {
        let before = rfind_newline(file, header_newline, newline, chunk)?.unwrap_or(header_newline);
        let mut line = vec![0u8; (newline - before - 1) as usize];
        file.read_exact_at(&mut line, before + 1)?;
        lines.push(line);
        newline = before;
    }
    lines.reverse();
    Ok(lines)
}

/// A read failure or a fault, before the log path is attached.
enum ReadError {
    Io(PathBuf, io::Error),
    Fault(Fault),
}

impl ReadError {
    fn at(self, log: &Path) -> AuditError {
        match self {
            ReadError::Io(path, source) => AuditError::Io { path, source },
            ReadError::Fault(fault) => fault.at_path(log),
        }
    }
}

fn walk_error(path: &Path, error: WalkError) -> AuditError {
    match error {
        WalkError::Io(source) => AuditError::io(path)(source),
        WalkError::Fault(fault) => fault.at_path(path),
    }
}

fn read_head(head_path: &Path, key: &AuditKey) -> Result<Option<Head>, ReadError> {
    match fs::read(head_path) {
        Ok(bytes) => Head::decode(key, &bytes)
            .map(Some)
            .map_err(ReadError::Fault),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ReadError::Io(head_path.to_path_buf(), source)),
    }
}

fn write_head(head_path: &Path, key: &AuditKey, head: Head) -> Result<(), AuditError> {
    files::write_atomic(head_path, &head.encode(key), true).map_err(AuditError::Write)
}

/// Checks the header line and returns its length, newline included.
fn read_header(file: &File, path: &Path, len: u64, key: &AuditKey) -> Result<u64, ReadError> {
    let io_error = |source| ReadError::Io(path.to_path_buf(), source);
    let mut buf = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX).min(MAX_HEADER)];
    file.read_exact_at(&mut buf, 0).map_err(io_error)?;
    let Some(end) = buf.iter().position(|&b| b == b'\n') else {
        let fault = Fault::unparsable(Location::Line(1), "the header line is incomplete");
        return Err(ReadError::Fault(fault));
    };
    format::check_header(key, &buf[..end]).map_err(ReadError::Fault)?;
    Ok(end as u64 + 1)
}

/// The end of the log file, found by reading backwards from its end.
#[derive(Debug, PartialEq, Eq)]
struct TailScan {
    /// Length up to and including the last newline.
    complete_len: u64,
    /// The last complete line after the header, without its newline.
    last_line: Option<Vec<u8>>,
    /// Bytes after the last newline.
    torn_bytes: u64,
}

fn scan_tail(file: &File, len: u64, header_len: u64, chunk: usize) -> io::Result<TailScan> {
    let header_newline = header_len - 1;
    let last_newline = rfind_newline(file, header_newline, len, chunk)?.unwrap_or(header_newline);
    let complete_len = last_newline + 1;
    let torn_bytes = len - complete_len;
    if last_newline == header_newline {
        return Ok(TailScan {
            complete_len,
            last_line: None,
            torn_bytes,
        });
    }
    let before =
        rfind_newline(file, header_newline, last_newline, chunk)?.unwrap_or(header_newline);
    let mut line = vec![0u8; (last_newline - before - 1) as usize];
    file.read_exact_at(&mut line, before + 1)?;
    Ok(TailScan {
        complete_len,
        last_line: Some(line),
        torn_bytes,
    })
}

/// The offset of the last `\n` in `file[from..to)`.
fn rfind_newline(file: &File, from: u64, to: u64, chunk: usize) -> io::Result<Option<u64>> {
    let mut buf = vec![0u8; chunk];
    let mut end = to;
    while end > from {
        let start = end.saturating_sub(chunk as u64).max(from);
        let part = &mut buf[..(end - start) as usize];
        file.read_exact_at(part, start)?;
        if let Some(i) = part.iter().rposition(|&b| b == b'\n') {
            return Ok(Some(start + i as u64));
        }
        end = start;
    }
    Ok(None)
}

/// Reads `file[pos..end)` with positional reads, leaving the shared file offset alone.
struct ReadAt<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = usize::try_from(self.end - self.pos).unwrap_or(usize::MAX);
        let want = left.min(buf.len());
        if want == 0 {
            return Ok(0);
        }
        let read = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += read as u64;
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(bytes: &[u8]) -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, bytes).unwrap();
        let file = File::open(&path).unwrap();
        (dir, file)
    }

    #[test]
    fn scan_tail_finds_the_last_line_across_chunks() {
        let bytes = b"HDR\nfirst line\nsecond, longer line\ntorn";
        let (_dir, file) = file_with(bytes);
        for chunk in [1, 2, 3, 7, 64] {
            let scan = scan_tail(&file, bytes.len() as u64, 4, chunk).unwrap();
            assert_eq!(
                scan,
                TailScan {
                    complete_len: bytes.len() as u64 - 4,
                    last_line: Some(b"second, longer line".to_vec()),
                    torn_bytes: 4,
                },
                "chunk {chunk}"
            );
        }
        let scan = scan_tail(&file, 15, 4, 3).unwrap();
        assert_eq!(scan.last_line.as_deref(), Some(&b"first line"[..]));
        assert_eq!(scan.torn_bytes, 0);
    }

    #[test]
    fn scan_tail_of_a_header_only_log() {
        let (_dir, file) = file_with(b"HDR\npartial");
        let scan = scan_tail(&file, 11, 4, 2).unwrap();
        assert_eq!(
            scan,
            TailScan {
                complete_len: 4,
                last_line: None,
                torn_bytes: 7
            }
        );
    }

    #[test]
    fn filter_matches_case_insensitively() {
        let entry = AuditEntry {
            seq: 0,
            time: OffsetDateTime::UNIX_EPOCH,
            caller_object_id: "c".into(),
            vault: "MyVault".into(),
            key: Some("Disk-Key".into()),
            version: None,
            operation: "KeyGet".into(),
            result: "Success".into(),
            detail: None,
            prev_hash: ChainHash::GENESIS,
            hash: ChainHash::GENESIS,
        };
        let filter = |vault: Option<&str>, key: Option<&str>| AuditFilter {
            vault: vault.map(str::to_owned),
            key: key.map(str::to_owned),
            limit: None,
        };
        assert!(filter(None, None).matches(&entry));
        assert!(filter(Some("myvault"), Some("DISK-KEY")).matches(&entry));
        assert!(!filter(Some("other"), None).matches(&entry));
        assert!(!filter(None, Some("disk-key2")).matches(&entry));
        let no_key = AuditEntry { key: None, ..entry };
        assert!(!filter(None, Some("disk-key")).matches(&no_key));
    }

    fn new_log() -> (tempfile::TempDir, RootKey, PathBuf, AuditLog) {
        let dir = tempfile::tempdir().unwrap();
        let key_path = dir.path().join("root.key");
        fs::write(&key_path, [7u8; 32]).unwrap();
        let root = RootKey::load_or_create(&key_path).unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path, &root).unwrap();
        (dir, root, path, log)
    }

    fn record(operation: &str) -> Pending {
        let record = AuditRecord {
            caller_object_id: "caller".into(),
            vault: "v".into(),
            key: None,
            version: None,
            operation: operation.into(),
            result: "Success".into(),
            detail: None,
        };
        (record, OffsetDateTime::UNIX_EPOCH)
    }

    #[test]
    fn a_batch_is_sealed_in_order_and_a_record_that_cannot_be_sealed_fails_alone() {
        let (_dir, root, path, log) = new_log();
        let mut state = log.writer.group.state();
        // RFC 3339 has no negative years.
        let unwritable = OffsetDateTime::from_unix_timestamp(-100_000_000_000).unwrap();
        let bad = (record("B").0, unwritable);
        let results = log
            .writer
            .commit_batch(&mut state, vec![record("A"), bad, record("C")]);
        let [Ok(a), Err(AuditError::Time(_)), Ok(c)] = &results[..] else {
            panic!("{results:?}");
        };
        assert_eq!((a.seq, c.seq), (0, 1));
        assert_eq!(c.prev_hash, a.hash);
        assert_eq!((state.entries, state.last_hash), (2, c.hash));
        let stats = CommitStats {
            entries: 2,
            batches: 1,
        };
        assert_eq!(state.stats, stats);
        // The head file covers the batch; the temp file waits, empty, for the next one.
        assert_eq!(fs::read(intent_path(&path)).unwrap(), b"");
        drop(log);
        let report = verify(&path, &root).unwrap();
        assert_eq!((report.entries, report.last_hash), (2, c.hash));
        assert!(report.pending.is_empty());
    }

    #[test]
    fn a_failed_batch_fails_every_record_in_it_with_the_same_error() {
        let (_dir, _root, path, log) = new_log();
        log.append(record("Before").0).unwrap();
        let mut state = log.writer.group.state();
        fs::rename(&path, path.with_extension("moved")).unwrap();
        let results = log
            .writer
            .commit_batch(&mut state, vec![record("A"), record("B"), record("C")]);
        assert_eq!(results.len(), 3);
        for result in &results {
            assert!(
                matches!(result, Err(AuditError::Replaced { .. })),
                "{result:?}"
            );
        }
        assert!(state.poisoned);
        assert_eq!(state.entries, 1);
        let results = log
            .writer
            .commit_batch(&mut state, vec![record("D"), record("E")]);
        for result in &results {
            assert!(
                matches!(result, Err(AuditError::Poisoned { .. })),
                "{result:?}"
            );
        }
    }

    #[test]
    fn duplicated_io_errors_keep_variant_kind_and_message() {
        let original = write_error(
            Path::new("/x/audit.jsonl.head"),
            io::Error::new(io::ErrorKind::PermissionDenied, "no"),
        );
        let copy = original.duplicate();
        assert_eq!(copy.to_string(), original.to_string());
        let AuditError::Write(CryptoError::Io { source, .. }) = copy else {
            panic!("{copy:?}");
        };
        assert_eq!(source.kind(), io::ErrorKind::PermissionDenied);
    }

    #[test]
    fn last_lines_reads_back_across_chunks() {
        let bytes = b"HDR\none\ntwo\nthree\ntorn";
        let (_dir, file) = file_with(bytes);
        let end = bytes.len() as u64 - 4;
        for chunk in [1, 2, 5, 64] {
            let two = last_lines(&file, 4, end, 2, chunk).unwrap();
            assert_eq!(
                two,
                vec![b"two".to_vec(), b"three".to_vec()],
                "chunk {chunk}"
            );
            let all = last_lines(&file, 4, end, 10, chunk).unwrap();
            assert_eq!(all.len(), 3, "chunk {chunk}");
            assert!(last_lines(&file, 4, 4, 2, chunk).unwrap().is_empty());
        }
    }

    #[test]
    fn head_path_appends_to_the_file_name() {
        assert_eq!(
            head_path(Path::new("/data/audit.jsonl")),
            Path::new("/data/audit.jsonl.head")
        );
        assert_eq!(
            intent_path(Path::new("/data/audit.jsonl")),
            Path::new("/data/audit.jsonl.head.tmp")
        );
        assert_eq!(parent_dir(Path::new("audit.jsonl")), Path::new("."));
    }
}
