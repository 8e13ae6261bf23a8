//! The audit log against real files: round trips, every kind of tampering, crash residue,
//! concurrency and fail-closed appends.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_lc_rs::digest;
use crypto::RootKey;
use keyvault::audit::{
    self, AuditEntry, AuditError, AuditFilter, AuditLog, AuditRecord, ChainBreak, ChainHash,
    Location, RECOVERY_OPERATION, Recovery, SYSTEM_CALLER, TamperReason,
};
use time::OffsetDateTime;
use time::macros::datetime;

struct Fixture {
    dir: tempfile::TempDir,
    root: RootKey,
    path: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        Self::with_root([0x5a; 32])
    }

    fn with_root(bytes: [u8; 32]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = root_key(dir.path(), "root.key", bytes);
        let path = dir.path().join("audit").join("audit.jsonl");
        Self { dir, root, path }
    }

    fn open(&self) -> AuditLog {
        AuditLog::open(&self.path, &self.root).unwrap()
    }

    fn head(&self) -> PathBuf {
        audit::head_path(&self.path)
    }

    /// The head file's temp file, `<log>.head.tmp`: a batch's next head while it is written.
    fn head_temp(&self) -> PathBuf {
        let mut name = self.head().into_os_string();
        name.push(".tmp");
        PathBuf::from(name)
    }

    /// A log with `n` entries, closed again.
    fn with_entries(n: u64) -> Self {
        let fixture = Self::new();
        let log = fixture.open();
        for i in 0..n {
            log.append(record("vault1", Some("key1"), &format!("Op{i}")))
                .unwrap();
        }
        fixture
    }

    fn verify(&self) -> Result<audit::VerifyReport, AuditError> {
        audit::verify(&self.path, &self.root)
    }

    /// The log's lines, each with its newline.
    fn lines(&self) -> Vec<String> {
        fs::read_to_string(&self.path)
            .unwrap()
            .split_inclusive('\n')
            .map(str::to_owned)
            .collect()
    }

    fn write_lines(&self, lines: &[String]) {
        fs::write(&self.path, lines.concat()).unwrap();
    }
}

fn root_key(dir: &Path, name: &str, bytes: [u8; 32]) -> RootKey {
    let path = dir.join(name);
    fs::write(&path, bytes).unwrap();
    RootKey::load_or_create(&path).unwrap()
}

fn record(vault: &str, key: Option<&str>, operation: &str) -> AuditRecord {
    AuditRecord {
        caller_object_id: "6f1c2a9e-0000-4000-8000-000000000001".into(),
        vault: vault.into(),
        key: key.map(str::to_owned),
        version: key.map(|_| "0123456789abcdef0123456789abcdef".to_owned()),
        operation: operation.into(),
        result: "Success".into(),
        detail: None,
    }
}

/// The location and reason of a `Tampered` error.
fn tampered<T: std::fmt::Debug>(result: Result<T, AuditError>) -> (Location, TamperReason) {
    match result {
        Err(AuditError::Tampered { at, reason, .. }) => (at, reason),
        other => panic!("expected Tampered, got {other:?}"),
    }
}

fn all() -> AuditFilter {
    AuditFilter::default()
}

#[test]
fn append_and_read_back() {
    let fixture = Fixture::new();
    let log = fixture.open();
    assert!(log.created());
    assert!(log.recovery().is_empty());
    let time = datetime!(2025-03-04 05:06:07.125 +02:00);
    let first = log
        .append_at(record("Vault1", Some("disk-key"), "KeyCreate"), time)
        .unwrap();
    assert_eq!(first.seq, 0);
    assert_eq!(first.prev_hash, ChainHash::GENESIS);
    assert_eq!(first.time, datetime!(2025-03-04 03:06:07.125 UTC));
    let mut denied = record("vault1", Some("disk-key"), "KeyUnwrap");
    denied.result = "Forbidden".into();
    denied.detail = Some("no unwrapKey permission".into());
    let second = log.append(denied).unwrap();
    assert_eq!(second.seq, 1);
    assert_eq!(second.prev_hash, first.hash);
    let third = log
        .append(record("other", None, "VaultAccessPolicyChange"))
        .unwrap();

    let everything = log.entries(&all()).unwrap();
    assert_eq!(
        everything,
        vec![first.clone(), second.clone(), third.clone()]
    );

    let vault1 = AuditFilter {
        vault: Some("VAULT1".into()),
        ..all()
    };
    assert_eq!(log.entries(&vault1).unwrap(), vec![first, second.clone()]);
    let newest = AuditFilter {
        limit: Some(1),
        ..vault1
    };
    assert_eq!(log.entries(&newest).unwrap(), vec![second]);
    let by_key = AuditFilter {
        key: Some("Disk-Key".into()),
        limit: Some(5),
        ..all()
    };
    assert_eq!(log.entries(&by_key).unwrap().len(), 2);
    let none = AuditFilter {
        limit: Some(0),
        ..all()
    };
    assert!(log.entries(&none).unwrap().is_empty());

    // The file is the entries' JSON, one per line, after the header.
    let lines = fixture.lines();
    assert_eq!(lines.len(), 4);
    assert!(lines[0].starts_with(r#"{"format":"sealdisk-audit","version":1,"keyId":""#));
    let parsed: AuditEntry = serde_json::from_str(&lines[3]).unwrap();
    assert_eq!(parsed, third);
    assert_eq!(serde_json::to_string(&third).unwrap() + "\n", lines[3]);
}

#[test]
fn reopen_continues_the_chain() {
    let fixture = Fixture::with_entries(2);
    let before = fixture.open().entries(&all()).unwrap();
    let log = fixture.open();
    assert!(!log.created());
    assert!(log.recovery().is_empty());
    let next = log.append(record("vault1", None, "KeyList")).unwrap();
    assert_eq!(next.seq, 2);
    assert_eq!(next.prev_hash, before[1].hash);
    let report = fixture.verify().unwrap();
    assert_eq!(report.entries, 3);
    assert_eq!(report.last_hash, next.hash);
    assert!(report.pending.is_empty());
}

#[test]
fn verify_passes_on_clean_logs() {
    let empty = Fixture::new();
    drop(empty.open());
    let report = empty.verify().unwrap();
    assert_eq!(report.entries, 0);
    assert_eq!(report.last_hash, ChainHash::GENESIS);

    let fixture = Fixture::with_entries(5);
    let report = fixture.verify().unwrap();
    assert_eq!(report.entries, 5);
    assert_eq!(report.pending, Recovery::default());
}

#[test]
fn flipped_byte_in_operation_is_a_bad_hash() {
    let fixture = Fixture::with_entries(5);
    let mut lines = fixture.lines();
    // seq 2 is on line 4.
    lines[3] = lines[3].replace("\"operation\":\"Op2\"", "\"operation\":\"Oq2\"");
    fixture.write_lines(&lines);
    assert_eq!(
        tampered(fixture.verify()),
        (Location::Line(4), TamperReason::BadHash)
    );
}

#[test]
fn flipped_byte_in_the_last_entry_refuses_open() {
    let fixture = Fixture::with_entries(3);
    let mut bytes = fs::read(&fixture.path).unwrap();
    let at = bytes.len() - 20; // inside the hash of the last entry
    bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
    fs::write(&fixture.path, bytes).unwrap();
    assert_eq!(
        tampered(AuditLog::open(&fixture.path, &fixture.root)),
        (Location::LastLine, TamperReason::BadHash)
    );
    assert_eq!(
        tampered(fixture.verify()),
        (Location::Line(4), TamperReason::BadHash)
    );
}

#[test]
fn deleted_middle_line_breaks_the_chain() {
    let fixture = Fixture::with_entries(5);
    let mut lines = fixture.lines();
    lines.remove(3); // seq 2
    fixture.write_lines(&lines);
    let gap = ChainBreak::SeqGap {
        expected: 2,
        found: 3,
    };
    assert_eq!(
        tampered(fixture.verify()),
        (Location::Line(4), TamperReason::BrokenChain(gap))
    );
}

#[test]
fn swapped_lines_break_the_chain() {
    let fixture = Fixture::with_entries(5);
    let mut lines = fixture.lines();
    lines.swap(2, 3); // seq 1 and seq 2
    fixture.write_lines(&lines);
    let gap = ChainBreak::SeqGap {
        expected: 1,
        found: 2,
    };
    assert_eq!(
        tampered(fixture.verify()),
        (Location::Line(3), TamperReason::BrokenChain(gap))
    );
}

#[test]
fn truncated_last_entry_is_detected_by_the_head_file() {
    let fixture = Fixture::with_entries(5);
    let mut lines = fixture.lines();
    lines.pop();
    fixture.write_lines(&lines);
    let truncated = TamperReason::Truncated {
        head_entries: 5,
        log_entries: 4,
    };
    assert_eq!(
        tampered(fixture.verify()),
        (Location::HeadFile, truncated.clone())
    );
    assert_eq!(
        tampered(AuditLog::open(&fixture.path, &fixture.root)),
        (Location::HeadFile, truncated)
    );
}

#[test]
fn edited_entry_with_recomputed_plain_sha256_is_detected() {
    let fixture = Fixture::with_entries(4);
    let mut lines = fixture.lines();
    // Rewrite seq 1 and re-chain everything after it the way someone without the key would:
    // SHA-256 over the same canonical bytes, then a matching head file.
    let mut prev: Option<String> = None;
    for line in lines.iter_mut().skip(2) {
        let mut entry: serde_json::Value = serde_json::from_str(line).unwrap();
        if entry["seq"] == 1 {
            entry["result"] = "Forbidden".into();
        }
        if let Some(prev) = &prev {
            entry["prevHash"] = prev.clone().into();
        }
        entry.as_object_mut().unwrap().remove("hash");
        let canonical = serde_json::to_string(&entry).unwrap();
        let hash = hex(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref());
        entry["hash"] = hash.clone().into();
        *line = serde_json::to_string(&entry).unwrap() + "\n";
        prev = Some(hash);
    }
    fixture.write_lines(&lines);
    let head = format!(
        r#"{{"format":"sealdisk-audit-head","version":1,"entries":4,"lastHash":"{}","mac":"{}"}}"#,
        prev.unwrap(),
        "0".repeat(64)
    );
    fs::write(fixture.head(), head + "\n").unwrap();
    assert_eq!(
        tampered(fixture.verify()),
        (Location::Line(3), TamperReason::BadHash)
    );
    assert_eq!(
        tampered(AuditLog::open(&fixture.path, &fixture.root)),
        (Location::HeadFile, TamperReason::BadHeadMac)
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn unparsable_line_is_reported_with_its_line_number() {
    let fixture = Fixture::with_entries(3);
    let mut lines = fixture.lines();
    lines.insert(2, "this is not json\n".into());
    fixture.write_lines(&lines);
    let (at, reason) = tampered(fixture.verify());
    assert_eq!(at, Location::Line(3));
    assert!(
        matches!(reason, TamperReason::Unparsable { .. }),
        "{reason:?}"
    );
}

#[test]
fn head_file_edits_are_detected() {
    let fixture = Fixture::with_entries(4);
    let head = fs::read_to_string(fixture.head()).unwrap();
    fs::write(
        fixture.head(),
        head.replace("\"entries\":4", "\"entries\":3"),
    )
    .unwrap();
    assert_eq!(
        tampered(fixture.verify()),
        (Location::HeadFile, TamperReason::BadHeadMac)
    );

    fs::remove_file(fixture.head()).unwrap();
    assert_eq!(
        tampered(AuditLog::open(&fixture.path, &fixture.root)),
        (Location::HeadFile, TamperReason::HeadMissing)
    );
    assert_eq!(
        tampered(fixture.verify()),
        (Location::HeadFile, TamperReason::HeadMissing)
    );
}

#[test]
fn older_head_file_is_detected() {
    let fixture = Fixture::with_entries(2);
    let old_head = fs::read(fixture.head()).unwrap();
    let log = fixture.open();
    log.append(record("v", None, "A")).unwrap();
    log.append(record("v", None, "B")).unwrap();
    drop(log);
    fs::write(fixture.head(), old_head).unwrap();
    let behind = TamperReason::HeadBehind {
        head_entries: 2,
        log_entries: 4,
    };
    assert_eq!(tampered(fixture.verify()), (Location::HeadFile, behind));
}

#[test]
fn deleted_log_file_is_detected() {
    let fixture = Fixture::with_entries(2);
    fs::remove_file(&fixture.path).unwrap();
    let missing = TamperReason::LogMissing { head_entries: 2 };
    assert_eq!(
        tampered(AuditLog::open(&fixture.path, &fixture.root)),
        (Location::HeadFile, missing.clone())
    );
    assert_eq!(tampered(fixture.verify()), (Location::HeadFile, missing));
}

#[test]
fn edits_after_open_are_caught_by_entries() {
    let fixture = Fixture::with_entries(3);
    let log = fixture.open();
    let mut lines = fixture.lines();
    lines[1] = lines[1].replace("Op0", "Op9");
    fixture.write_lines(&lines); // in place: same inode
    assert_eq!(
        tampered(log.entries(&all())),
        (Location::Line(2), TamperReason::BadHash)
    );
}

#[test]
fn append_fails_closed_when_the_log_file_is_replaced() {
    let fixture = Fixture::with_entries(3);
    let log = fixture.open();
    let copy = fixture.path.with_extension("copy");
    fs::copy(&fixture.path, &copy).unwrap();
    fs::rename(&copy, &fixture.path).unwrap();
    assert!(matches!(
        log.append(record("v", None, "X")),
        Err(AuditError::Replaced { .. })
    ));
    assert!(matches!(
        log.append(record("v", None, "X")),
        Err(AuditError::Poisoned { .. })
    ));
    drop(log);
    // Nothing reached either file: the copy is the log as it was.
    assert_eq!(fixture.verify().unwrap().entries, 3);
}

#[test]
fn wrong_root_key_is_not_called_tampering() {
    let fixture = Fixture::with_entries(1);
    let other = root_key(fixture.dir.path(), "other.key", [0x11; 32]);
    assert!(matches!(
        AuditLog::open(&fixture.path, &other),
        Err(AuditError::WrongKey { .. })
    ));
    assert!(matches!(
        audit::verify(&fixture.path, &other),
        Err(AuditError::WrongKey { .. })
    ));
}

#[test]
fn unknown_format_version_is_refused() {
    let fixture = Fixture::with_entries(1);
    let mut lines = fixture.lines();
    lines[0] = lines[0].replace("\"version\":1", "\"version\":2");
    fixture.write_lines(&lines);
    assert!(matches!(
        AuditLog::open(&fixture.path, &fixture.root),
        Err(AuditError::UnsupportedVersion { version: 2, .. })
    ));
}

#[test]
fn torn_final_line_is_cut_off_on_open() {
    let fixture = Fixture::with_entries(3);
    let torn = br#"{"seq":3,"time":"2025-01-0"#;
    let mut bytes = fs::read(&fixture.path).unwrap();
    bytes.extend_from_slice(torn);
    fs::write(&fixture.path, bytes).unwrap();

    let report = fixture.verify().unwrap();
    assert_eq!(report.entries, 3);
    assert_eq!(report.pending.torn_bytes, torn.len() as u64);

    let log = fixture.open();
    assert_eq!(
        log.recovery(),
        &Recovery {
            torn_bytes: torn.len() as u64,
            unacknowledged_seq: None,
        }
    );
    let entries = log.entries(&all()).unwrap();
    assert_eq!(entries.len(), 4);
    let note = &entries[3];
    assert_eq!(note.seq, 3);
    assert_eq!(note.operation, RECOVERY_OPERATION);
    assert_eq!(note.caller_object_id, SYSTEM_CALLER);
    assert!(
        note.detail
            .as_deref()
            .unwrap()
            .contains("incomplete final line")
    );
    log.append(record("v", None, "AfterCrash")).unwrap();
    drop(log);

    let report = fixture.verify().unwrap();
    assert_eq!(report.entries, 5);
    assert!(report.pending.is_empty());
    assert!(fixture.open().recovery().is_empty());
}

#[test]
fn torn_line_in_a_new_log_is_cut_off_too() {
    let fixture = Fixture::new();
    drop(fixture.open());
    let mut bytes = fs::read(&fixture.path).unwrap();
    bytes.extend_from_slice(b"{\"seq\":0");
    fs::write(&fixture.path, bytes).unwrap();
    let log = fixture.open();
    assert_eq!(log.recovery().torn_bytes, 8);
    drop(log);
    assert_eq!(fixture.verify().unwrap().entries, 1);
}

#[test]
fn stripped_newline_of_an_acknowledged_entry_is_not_a_torn_line() {
    let fixture = Fixture::with_entries(3);
    let mut bytes = fs::read(&fixture.path).unwrap();
    assert_eq!(bytes.pop(), Some(b'\n'));
    fs::write(&fixture.path, bytes).unwrap();
    let truncated = TamperReason::Truncated {
        head_entries: 3,
        log_entries: 2,
    };
    assert_eq!(
        tampered(AuditLog::open(&fixture.path, &fixture.root)),
        (Location::HeadFile, truncated.clone())
    );
    assert_eq!(tampered(fixture.verify()), (Location::HeadFile, truncated));
}

#[test]
fn entry_synced_before_a_crash_but_not_acknowledged_is_kept() {
    let fixture = Fixture::with_entries(3);
    let head_before = fs::read(fixture.head()).unwrap();
    let log = fixture.open();
    let pending = log.append(record("v", Some("k"), "KeyUnwrap")).unwrap();
    drop(log);
    // The crash came between `sync_data` and the head file update.
    fs::write(fixture.head(), head_before).unwrap();

    let report = fixture.verify().unwrap();
    assert_eq!(report.entries, 4);
    assert_eq!(report.pending.unacknowledged_seq, Some(3));

    let log = fixture.open();
    assert_eq!(log.recovery().unacknowledged_seq, Some(3));
    let entries = log.entries(&all()).unwrap();
    assert_eq!(entries[3], pending);
    assert_eq!(entries[4].operation, RECOVERY_OPERATION);
    drop(log);
    let report = fixture.verify().unwrap();
    assert_eq!(report.entries, 5);
    assert!(report.pending.is_empty());
}

#[test]
fn concurrent_appends_make_one_gapless_chain() {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 25;
    let fixture = Fixture::new();
    let log = Arc::new(fixture.open());
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                (0..PER_THREAD)
                    .map(|i| {
                        log.append(record(&format!("vault{t}"), None, &format!("Op{i}")))
                            .unwrap()
                            .seq
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut seqs: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    seqs.sort_unstable();
    let total = (THREADS * PER_THREAD) as u64;
    assert_eq!(seqs, (0..total).collect::<Vec<_>>());

    let entries = log.entries(&all()).unwrap();
    assert_eq!(entries.len() as u64, total);
    for pair in entries.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash);
    }
    for t in 0..THREADS {
        let mine = AuditFilter {
            vault: Some(format!("VAULT{t}")),
            ..all()
        };
        let ops: Vec<_> = log
            .entries(&mine)
            .unwrap()
            .into_iter()
            .map(|e| e.operation)
            .collect();
        let expected: Vec<_> = (0..PER_THREAD).map(|i| format!("Op{i}")).collect();
        assert_eq!(ops, expected, "each thread's entries in its own order");
    }
    drop(log);
    assert_eq!(fixture.verify().unwrap().entries, total);
}

#[test]
fn concurrent_appenders_share_batches_and_each_gets_its_own_entry() {
    const THREADS: usize = 16;
    const PER_THREAD: usize = 20;
    let fixture = Fixture::new();
    let log = Arc::new(fixture.open());
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                (0..PER_THREAD)
                    .map(|i| {
                        let entry = log
                            .append(record(&format!("vault{t}"), None, &format!("Op{i}")))
                            .unwrap();
                        assert_eq!(entry.vault, format!("vault{t}"));
                        assert_eq!(entry.operation, format!("Op{i}"));
                        entry
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut returned: Vec<AuditEntry> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    returned.sort_by_key(|entry| entry.seq);
    let total = (THREADS * PER_THREAD) as u64;
    // Every caller got a distinct seq, and exactly the entry the log holds under it.
    assert_eq!(log.entries(&all()).unwrap(), returned);
    assert_eq!(
        returned.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (0..total).collect::<Vec<_>>()
    );

    let stats = log.commit_stats();
    assert_eq!(stats.entries, total);
    // Sixteen threads that append in a loop queue up behind each other's syncs, so batches
    // hold more than one entry (each batch is one `sync_data` of the log).
    assert!(
        stats.batches < total,
        "{} batches for {total} entries",
        stats.batches
    );
    drop(log);
    let report = fixture.verify().unwrap();
    assert_eq!(report.entries, total);
    assert!(report.pending.is_empty());
}

#[test]
fn a_lone_appender_commits_one_batch_per_entry() {
    let fixture = Fixture::new();
    let log = fixture.open();
    for i in 0..3 {
        log.append(record("v", None, &format!("Op{i}"))).unwrap();
    }
    let stats = log.commit_stats();
    assert_eq!((stats.entries, stats.batches), (3, 3));
    // Between batches the head's temp file is there, empty.
    assert_eq!(fs::read(fixture.head_temp()).unwrap(), b"");
}

#[test]
fn replacing_the_log_under_concurrent_appenders_fails_every_later_append() {
    const THREADS: usize = 8;
    let fixture = Fixture::new();
    let log = Arc::new(fixture.open());
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut acknowledged = 0u64;
                for i in 0..10_000 {
                    match log.append(record(&format!("vault{t}"), None, &format!("Op{i}"))) {
                        Ok(_) => acknowledged += 1,
                        Err(first) => {
                            let next = log.append(record("v", None, "AfterFailure"));
                            return (acknowledged, Some(first), next);
                        }
                    }
                }
                (
                    acknowledged,
                    None,
                    Ok(log.append(record("v", None, "X")).unwrap()),
                )
            })
        })
        .collect();
    // Let the appenders get going (bounded: a failure shows up in the joins below).
    for _ in 0..10_000 {
        if log.commit_stats().entries >= 2 * THREADS as u64 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let moved = fixture.path.with_extension("moved");
    fs::rename(&fixture.path, &moved).unwrap();

    let mut acknowledged = 0;
    let mut replaced = 0;
    for handle in handles {
        let (acked, first, next) = handle.join().unwrap();
        acknowledged += acked;
        match first {
            Some(AuditError::Replaced { .. }) => replaced += 1,
            Some(AuditError::Poisoned { .. }) => {}
            other => panic!("expected Replaced or Poisoned, got {other:?}"),
        }
        assert!(
            matches!(next, Err(AuditError::Poisoned { .. })),
            "nothing succeeds after a failure: {next:?}"
        );
    }
    // The batch that found the file replaced failed every append in it; the rest found the
    // log poisoned.
    assert!(replaced >= 1);
    assert_eq!(log.commit_stats().entries, acknowledged);
    drop(log);
    // Every acknowledged entry, and nothing else, is in the file that was moved away.
    fs::rename(&moved, &fixture.path).unwrap();
    let report = fixture.verify().unwrap();
    assert_eq!(report.entries, acknowledged);
    assert!(report.pending.is_empty());
}

/// The files as a crash leaves them between a batch's `sync_data` and the rename of its head:
/// the head file as before the batch, the temp file holding the head that covers it.
fn crash_before_head_rename(fixture: &Fixture, before: u64, batch: u64) -> Vec<u8> {
    let log = fixture.open();
    for i in 0..before {
        log.append(record("v", None, &format!("Old{i}"))).unwrap();
    }
    let head_before = fs::read(fixture.head()).unwrap();
    for i in 0..batch {
        log.append(record("v", Some("k"), &format!("Batch{i}")))
            .unwrap();
    }
    drop(log);
    fs::copy(fixture.head(), fixture.head_temp()).unwrap();
    fs::write(fixture.head(), &head_before).unwrap();
    head_before
}

#[test]
fn a_batch_synced_but_not_acknowledged_is_kept_whole() {
    let fixture = Fixture::new();
    crash_before_head_rename(&fixture, 2, 3);

    let report = fixture.verify().unwrap();
    assert_eq!(report.entries, 5);
    assert_eq!(report.pending.unacknowledged_seq, Some(2));

    let log = fixture.open();
    assert_eq!(
        log.recovery(),
        &Recovery {
            torn_bytes: 0,
            unacknowledged_seq: Some(2),
        }
    );
    let entries = log.entries(&all()).unwrap();
    let kept: Vec<_> = entries[2..5].iter().map(|e| e.operation.as_str()).collect();
    assert_eq!(kept, ["Batch0", "Batch1", "Batch2"]);
    assert_eq!(entries[5].operation, RECOVERY_OPERATION);
    assert!(
        entries[5]
            .detail
            .as_deref()
            .unwrap()
            .contains("kept entries 2 to 4"),
        "{:?}",
        entries[5].detail
    );
    drop(log);
    let report = fixture.verify().unwrap();
    assert_eq!(report.entries, 6);
    assert!(report.pending.is_empty());
}

#[test]
fn a_batch_cut_short_by_a_crash_keeps_its_complete_lines() {
    let fixture = Fixture::new();
    crash_before_head_rename(&fixture, 2, 4);
    // Only part of the batch reached the disk: its last line is torn.
    let mut lines = fixture.lines();
    let last = lines.pop().unwrap();
    lines.push(last[..40].to_owned());
    fixture.write_lines(&lines);

    let report = fixture.verify().unwrap();
    assert_eq!(report.entries, 5);
    assert_eq!(report.pending.unacknowledged_seq, Some(2));
    assert_eq!(report.pending.torn_bytes, 40);

    let log = fixture.open();
    assert_eq!(log.recovery().unacknowledged_seq, Some(2));
    assert_eq!(log.recovery().torn_bytes, 40);
    let entries = log.entries(&all()).unwrap();
    assert_eq!(entries.len(), 6);
    assert_eq!(entries[4].operation, "Batch2");
    assert_eq!(entries[5].operation, RECOVERY_OPERATION);
    drop(log);
    assert!(fixture.verify().unwrap().pending.is_empty());
}

#[test]
fn entries_past_the_head_that_the_temp_file_does_not_cover_are_head_behind() {
    let fixture = Fixture::new();
    let head = crash_before_head_rename(&fixture, 2, 2);
    let temp = fs::read(fixture.head_temp()).unwrap();
    // Opening keeps the batch and appends its recovery entry, a fifth one. With the head
    // file and the temp file put back, the log holds one entry more than the batch in the
    // temp file was to write.
    drop(fixture.open());
    fs::write(fixture.head(), &head).unwrap();
    fs::write(fixture.head_temp(), &temp).unwrap();
    let behind = TamperReason::HeadBehind {
        head_entries: 2,
        log_entries: 5,
    };
    assert_eq!(
        tampered(fixture.verify()),
        (Location::HeadFile, behind.clone())
    );
    assert_eq!(
        tampered(AuditLog::open(&fixture.path, &fixture.root)),
        (Location::HeadFile, behind)
    );

    // A temp file that is not an authentic head vouches for nothing.
    fs::write(
        fixture.head_temp(),
        b"{\"format\":\"sealdisk-audit-head\"}\n",
    )
    .unwrap();
    assert!(matches!(
        tampered(fixture.verify()).1,
        TamperReason::HeadBehind { .. }
    ));
}

#[test]
fn append_fails_closed_when_the_directory_is_removed() {
    let fixture = Fixture::with_entries(2);
    let log = fixture.open();
    fs::remove_dir_all(fixture.path.parent().unwrap()).unwrap();
    assert!(matches!(
        log.append(record("v", None, "KeyUnwrap")),
        Err(AuditError::Replaced { .. })
    ));
    assert!(matches!(
        log.append(record("v", None, "KeyUnwrap")),
        Err(AuditError::Poisoned { .. })
    ));
    // Nothing was written to the deleted file's directory either.
    assert!(!fixture.path.exists());
}

#[test]
fn append_fails_closed_when_the_head_file_cannot_be_written() {
    let fixture = Fixture::with_entries(2);
    let log = fixture.open();
    let head = fixture.head();
    let saved = fs::read(&head).unwrap();
    // A non-empty directory where the head file goes: rename fails even for root.
    fs::remove_file(&head).unwrap();
    fs::create_dir(&head).unwrap();
    fs::write(head.join("blocker"), b"").unwrap();

    let refused = log.append(record("v", Some("k"), "KeyUnwrap"));
    assert!(matches!(refused, Err(AuditError::Write(_))), "{refused:?}");
    assert!(matches!(
        log.append(record("v", None, "KeyGet")),
        Err(AuditError::Poisoned { .. })
    ));
    assert_eq!(
        log.entries(&all()).unwrap().len(),
        2,
        "only acknowledged entries"
    );
    drop(log);

    fs::remove_dir_all(&head).unwrap();
    fs::write(&head, saved).unwrap();
    let log = fixture.open();
    assert_eq!(log.recovery().unacknowledged_seq, Some(2));
    let entries = log.entries(&all()).unwrap();
    assert_eq!(entries[2].operation, "KeyUnwrap");
    assert_eq!(entries[3].operation, RECOVERY_OPERATION);
    drop(log);
    assert!(fixture.verify().unwrap().pending.is_empty());
}

#[test]
fn audit_log_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<AuditLog>();
}

#[test]
fn debug_output_redacts_the_key() {
    let fixture = Fixture::new();
    let shown = format!("{:?}", fixture.open());
    assert!(shown.contains("AuditKey(<redacted>)"), "{shown}");
}

/// Version 1 files, byte for byte. If this test fails, the format changed: bump the version
/// and keep reading version 1. (The hashes were checked against an independent
/// implementation of the documented derivation: RFC 5869 HKDF and HMAC in Python.)
#[test]
fn version_1_files_still_open() {
    let fixture = Fixture::with_root([0x01; 32]);
    fs::create_dir_all(fixture.path.parent().unwrap()).unwrap();
    fs::write(&fixture.path, GOLDEN_LOG).unwrap();
    fs::write(fixture.head(), GOLDEN_HEAD).unwrap();

    let report = fixture.verify().unwrap();
    assert_eq!(report.entries, 2);
    assert!(report.pending.is_empty());
    let entries = fixture.open().entries(&all()).unwrap();
    assert_eq!(entries.len(), 2);
    for (seq, (entry, (record, time))) in entries.iter().zip(golden_records()).enumerate() {
        assert_eq!(entry.seq, seq as u64);
        assert_eq!(entry.time, time);
        assert_eq!(record_of(entry), record);
    }
    assert_eq!(entries[1].prev_hash, entries[0].hash);
}

#[test]
fn version_1_files_are_written_byte_for_byte() {
    let fixture = Fixture::with_root([0x01; 32]);
    let log = fixture.open();
    for (record, time) in golden_records() {
        log.append_at(record, time).unwrap();
    }
    assert_eq!(fs::read_to_string(&fixture.path).unwrap(), GOLDEN_LOG);
    assert_eq!(fs::read_to_string(fixture.head()).unwrap(), GOLDEN_HEAD);
}

fn record_of(entry: &AuditEntry) -> AuditRecord {
    AuditRecord {
        caller_object_id: entry.caller_object_id.clone(),
        vault: entry.vault.clone(),
        key: entry.key.clone(),
        version: entry.version.clone(),
        operation: entry.operation.clone(),
        result: entry.result.clone(),
        detail: entry.detail.clone(),
    }
}

/// The records of the golden log, under root key `[0x01; 32]`.
fn golden_records() -> Vec<(AuditRecord, OffsetDateTime)> {
    let create = AuditRecord {
        caller_object_id: "00000000-0000-4000-8000-0000000000aa".into(),
        vault: "Contoso-KV".into(),
        key: Some("disk-key".into()),
        version: Some("5f4dcc3b5aa765d61d8327deb882cf99".into()),
        operation: "KeyCreate".into(),
        result: "Success".into(),
        detail: None,
    };
    let unwrap = AuditRecord {
        operation: "KeyUnwrap".into(),
        result: "Forbidden".into(),
        detail: Some("caller lacks \"unwrapKey\"\né".into()),
        ..create.clone()
    };
    vec![
        (create, datetime!(2025-01-02 03:04:05 UTC)),
        (unwrap, datetime!(2025-01-02 03:04:05.5 UTC)),
    ]
}

const GOLDEN_LOG: &str = concat!(
    r#"{"format":"sealdisk-audit","version":1,"keyId":"ffdbb20e9d3ca880"}"#,
    "\n",
    r#"{"seq":0,"time":"2025-01-02T03:04:05Z","callerObjectId":"00000000-0000-4000-8000-0000000000aa","vault":"Contoso-KV","key":"disk-key","version":"5f4dcc3b5aa765d61d8327deb882cf99","operation":"KeyCreate","result":"Success","detail":null,"prevHash":"0000000000000000000000000000000000000000000000000000000000000000","hash":"02078d80a5840bbcaabc9dda55b5786a20785d3c3677360fec95f19421c35e1a"}"#,
    "\n",
    r#"{"seq":1,"time":"2025-01-02T03:04:05.5Z","callerObjectId":"00000000-0000-4000-8000-0000000000aa","vault":"Contoso-KV","key":"disk-key","version":"5f4dcc3b5aa765d61d8327deb882cf99","operation":"KeyUnwrap","result":"Forbidden","detail":"caller lacks \"unwrapKey\"\né","prevHash":"02078d80a5840bbcaabc9dda55b5786a20785d3c3677360fec95f19421c35e1a","hash":"296fe66ed0e22e3713b0ae0a00c984721c4235f75e5740f33a556c4117d4c6e5"}"#,
    "\n",
);
const GOLDEN_HEAD: &str = concat!(
    r#"{"format":"sealdisk-audit-head","version":1,"entries":2,"lastHash":"296fe66ed0e22e3713b0ae0a00c984721c4235f75e5740f33a556c4117d4c6e5","mac":"25d0ff7cef2948f4a1a1a464c2780f9ada73d2f7ca7ece5882ca0616daffd304"}"#,
    "\n",
);
