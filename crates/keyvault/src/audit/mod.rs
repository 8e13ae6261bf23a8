//! The Key Vault audit log: an append-only, hash-chained record of every key operation and
//! policy change, written before the operation's result is returned.
//!
//! The log is fail-closed. `AuditLog::append`, and the ticket `AuditLog::submit` returns,
//! give `Ok` only once the entry is on stable storage and covered by the head file. A caller
//! that gets `Err` must refuse the operation; one that holds a ticket must not answer before
//! it resolves.
//!
//! # Files
//!
//! Two files, both mode 0600:
//!
//! - the log, e.g. `audit.jsonl`: JSON Lines, append-only;
//! - the head file `<log>.head`, e.g. `audit.jsonl.head`: one line, replaced atomically
//!   (temp file, fsync, rename, fsync of the directory) after every batch of appends.
//!
//! The head file's temp file `<log>.head.tmp` (mode 0600) is the third name in the
//! directory. Between batches it is empty; while a batch is being written it holds the head
//! line that will cover the batch, in the head file's format, until it is renamed over the
//! head file. Only crash recovery reads it (see below), and an empty, missing or
//! unauthentic one vouches for nothing.
//!
//! All text is UTF-8 JSON with no whitespace outside strings. Every line, including the last,
//! ends in one `\n` (0x0A). Object members appear exactly in the order shown. Integers are
//! decimal without sign or leading zeros. Hashes are 64 lowercase hex digits. Optional
//! members are always present and `null` when absent. Strings are escaped the way
//! `serde_json` writes them: `"` and `\` as `\"` and `\\`, control characters as `\n`,
//! `\t`, `\r`, `\b`, `\f` or `\u00XX`, everything else raw UTF-8. A line therefore never
//! holds a 0x0A byte before its end.
//!
//! ## Log file, format version 1
//!
//! Line 1 is the header:
//!
//! ```text
//! {"format":"sealdisk-audit","version":1,"keyId":"<16 hex>"}\n
//! ```
//!
//! `keyId` is the first 8 bytes of HMAC-SHA256(audit key, `sealdisk audit key id`). It tells
//! "opened with the wrong root key" apart from tampering. A reader checks `format`, then
//! `version`, and rejects versions it does not know before it reads anything else.
//!
//! Each later line is one `AuditEntry`:
//!
//! ```text
//! {"seq":0,"time":"2025-01-02T03:04:05.5Z","callerObjectId":"…","vault":"…",
//!  "key":"…"|null,"version":"…"|null,"operation":"…","result":"…","detail":"…"|null,
//!  "prevHash":"<64 hex>","hash":"<64 hex>"}\n
//! ```
//!
//! (This is one line in the file; it is wrapped here.) `seq` counts from 0 without gaps.
//! `time` is RFC 3339 in UTC (`Z`), with the fraction of a second written only when it is
//! not zero and without trailing zeros. `prevHash` is the previous entry's `hash`, or 64
//! zeros for seq 0.
//!
//! ## The hash
//!
//! `hash` = HMAC-SHA256(audit key, M). M, the entry's *canonical bytes*, is the line with its
//! `\n` and its last member `,"hash":"<64 hex>"` (74 bytes) removed: the same JSON object
//! without `hash`, in the layout above. The MAC covers the bytes exactly as stored, so a
//! verifier checks it before parsing and does not need to re-serialize anything.
//!
//! The audit key is HKDF-SHA256 (RFC 5869) of the 32-byte platform root key, with an empty
//! salt, `info` = `sealdisk audit log v1` and 32 bytes of output. Anyone who can write the
//! data directory but does not hold the root key cannot make an edited, deleted or reordered
//! entry verify, even if they recompute plain SHA-256 hashes.
//!
//! ## Head file, format version 1
//!
//! ```text
//! {"format":"sealdisk-audit-head","version":1,"entries":<n>,"lastHash":"<64 hex>","mac":"<64 hex>"}\n
//! ```
//!
//! `entries` is the number of acknowledged entries (the last `seq` + 1; 0 for a new log).
//! `lastHash` is the last acknowledged entry's `hash`, or 64 zeros when there is none.
//! `mac` = HMAC-SHA256(audit key, the line without `\n` and without `,"mac":"<64 hex>"`).
//! This input starts with `{"format"` and an entry's starts with `{"seq"`, so one can never
//! stand in for the other. The head file shows when trailing entries have been removed.
//!
//! # What is detected
//!
//! `verify` walks the whole file. `AuditLog::open` checks only the header and the last line
//! against the head file. Each finding is an `AuditError::Tampered` with a `TamperReason`:
//!
//! | edit | reason |
//! |---|---|
//! | bytes of an entry changed (hash recomputed or not) | `BadHash` |
//! | line not in the layout above | `Unparsable` |
//! | entry deleted, duplicated or moved | `BrokenChain(SeqGap)` |
//! | entry swapped in from elsewhere | `BrokenChain(PrevHashMismatch)` |
//! | trailing entries removed | `Truncated` (head file records more, or another last hash) |
//! | head file replaced by an older copy | `HeadBehind` |
//! | head file edited, deleted; log deleted | `BadHeadMac`, `HeadMissing`, `LogMissing` |
//!
//! Some things are not detected. If both files are deleted, `open` starts a new log and
//! reports it through `AuditLog::created`; a caller that knows a log existed must check that.
//! Someone who saved an older log file together with its head file can roll both back. A
//! head file set back by a single entry, or by up to `MAX_BATCH` entries when a newer
//! authentic head is put in its temp file, looks like crash residue rather than
//! `HeadBehind`; no entry is lost that way, and `open` records the repair as an entry. And
//! no check holds against anyone who holds the root key.
//!
//! # Durability and crash recovery
//!
//! Appends are committed in batches (group commit) by the log's committer thread. An append
//! queues its record and gets a ticket (`AuditLog::submit`), which a caller can wait for
//! (`AuditLog::append` does) or await without holding a thread. The committer writes
//! everything queued (at most `MAX_BATCH` = 256 entries) as one batch and resolves each
//! ticket with its own entry; appends that arrive while a batch is being written form the
//! next one. A lone append is a batch of one and waits for nothing but the thread's wake-up.
//! After two batches of several in a row (a steady concurrent load), the next one waits for
//! as many entries as the last held, but at most 10 ms from the start of the last, so that
//! under load a batch's syncs are shared by more entries.
//! A batch:
//!
//! 1. writes the head that will cover it into the temp file `<log>.head.tmp` and fsyncs it;
//! 2. writes all its lines with one `write_all` on an `O_APPEND` descriptor and calls
//!    `sync_data`;
//! 3. renames the temp file over the head file, creates the next batch's (empty) temp file
//!    and fsyncs the directory, which makes both names durable.
//!
//! Only after all three do its tickets resolve to `Ok`: three syncs per batch, however many
//! entries it holds. An entry is *acknowledged* exactly when the head file covers it. A crash
//! can leave two kinds of residue beyond the acknowledged entries, and `open` repairs both:
//!
//! - **A torn final line**: bytes with no final `\n`, left by an interrupted `write_all`.
//!   The append never returned, so nothing was acknowledged. `open` truncates the file to
//!   its last `\n`. This is allowed only when the complete lines agree with the head file.
//!   If an attacker strips the newline of an acknowledged entry, the complete lines fall
//!   short of the head file, and that is reported as `Truncated`. It is not repaired.
//! - **Unacknowledged entries**: complete, authentic lines past the head file, the first
//!   with the head file's `entries` as `seq` and its `lastHash` as `prevHash`. They were
//!   synced, but the process stopped before the head file was replaced. They cannot be
//!   forged without the key, so `open` keeps them as records of operations that were
//!   attempted but whose results were never returned, and moves the head file forward.
//!   One such entry is always accepted (a batch of one, or a log written before group
//!   commit). More than one is accepted only as one batch: the temp file must hold an
//!   authentic head that the batch was to publish, with at least as many entries as the log
//!   now holds (its `lastHash` equal to the log's last `hash` if as many), at most
//!   `MAX_BATCH` past the head file. Step 1 before step 2 guarantees that such a temp file
//!   is durable whenever a batch's lines are. Without it, entries past the head file are
//!   `HeadBehind`.
//!
//! Every repair is recorded as an entry of its own: `operation` = `RECOVERY_OPERATION`,
//! `callerObjectId` = `SYSTEM_CALLER`, an empty `vault`, and the repair in `detail`. It is
//! also reported by `AuditLog::recovery`. `verify` changes nothing: it reports pending
//! residue in `VerifyReport::pending` and returns `Ok`.
//!
//! Sometimes an append fails in a way that leaves the file in doubt: `sync_data` or the head
//! write failed, a partial line could not be truncated away, or the log file was deleted or
//! replaced under the open handle. The `AuditLog` is then *poisoned*. Every later append
//! returns `AuditError::Poisoned` until the log is reopened, and reopening runs the recovery
//! above.
//!
//! A failed batch fails every append in it, each with the same error.
//!
//! A log has a single writer: one `AuditLog` per file, in one process. Inside the process
//! one batch is written at a time, by the committer thread; the queue is a `Mutex` and a
//! `Condvar`, never held during I/O. Dropping the `AuditLog` commits what is queued and
//! ends the thread. Reads use positional I/O on the acknowledged prefix and take the lock
//! only to read the length.

mod chain;
mod error;
mod format;
mod group;
mod log;

pub use error::{AuditError, ChainBreak, Location, TamperReason};
pub use format::{AuditEntry, AuditRecord, ChainHash};
pub use log::{
    AuditFilter, AuditLog, AuditTicket, CommitStats, RECOVERY_OPERATION, Recovery, SYSTEM_CALLER,
    VerifyReport, head_path, verify,
};
