//! Walking the chain: the rules that make a sequence of lines a valid log, and how the end of
//! the log must agree with the head file. Takes bytes, returns verdicts; the reader is generic.

use std::io::BufRead;

use super::error::{ChainBreak, Fault, Location, TamperReason};
use super::format::{self, AuditEntry, AuditKey, ChainHash, Head};

/// The end of a walked log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Tail {
    /// Complete, authentic entries.
    pub(super) entries: u64,
    /// `hash` of the last entry (`GENESIS` when there is none).
    pub(super) last_hash: ChainHash,
    /// `prevHash` of the last entry (`GENESIS` when there is none).
    pub(super) last_prev_hash: ChainHash,
    /// Bytes after the last newline: an append that never completed.
    pub(super) torn_bytes: u64,
}

impl Tail {
    pub(super) const EMPTY: Tail = Tail {
        entries: 0,
        last_hash: ChainHash::GENESIS,
        last_prev_hash: ChainHash::GENESIS,
        torn_bytes: 0,
    };

    /// The tail whose last complete entry is `entry`.
    pub(super) fn ending_in(entry: &AuditEntry, torn_bytes: u64) -> Tail {
        Tail {
            entries: entry.seq + 1,
            last_hash: entry.hash,
            last_prev_hash: entry.prev_hash,
            torn_bytes,
        }
    }
}

/// Checks lines in order: the header, then entries whose `seq` counts from 0 and whose
/// `prevHash` is the hash before.
#[derive(Debug)]
pub(super) struct ChainWalker<'k> {
    key: &'k AuditKey,
    line: u64,
    tail: Tail,
}

impl<'k> ChainWalker<'k> {
    pub(super) fn new(key: &'k AuditKey) -> Self {
        Self {
            key,
            line: 0,
            tail: Tail::EMPTY,
        }
    }

    /// Feeds the next line, without its newline. Returns the entry, or `None` for the header.
    pub(super) fn line(&mut self, line: &[u8]) -> Result<Option<AuditEntry>, Fault> {
        self.line += 1;
        let at = Location::Line(self.line);
        if self.line == 1 {
            format::check_header(self.key, line)?;
            return Ok(None);
        }
        let entry = format::open_entry(self.key, line, at)?;
        let expected = self.tail.entries;
        if entry.seq != expected {
            let gap = ChainBreak::SeqGap {
                expected,
                found: entry.seq,
            };
            return Err(Fault::tampered(at, TamperReason::BrokenChain(gap)));
        }
        if entry.prev_hash != self.tail.last_hash {
            let mismatch = ChainBreak::PrevHashMismatch { seq: entry.seq };
            return Err(Fault::tampered(at, TamperReason::BrokenChain(mismatch)));
        }
        self.tail = Tail::ending_in(&entry, 0);
        Ok(Some(entry))
    }

    /// Reads `reader` to its end, handing each authentic entry to `each`. A final line without
    /// a newline is not judged: it is counted as torn bytes.
    pub(super) fn walk<R: BufRead>(
        mut self,
        mut reader: R,
        mut each: impl FnMut(AuditEntry),
    ) -> Result<Tail, WalkError> {
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let read = reader.read_until(b'\n', &mut buf).map_err(WalkError::Io)?;
            if read == 0 {
                break;
            }
            let Some(line) = buf.strip_suffix(b"\n") else {
                if self.line == 0 {
                    let fault = Fault::unparsable(Location::Line(1), "the header is incomplete");
                    return Err(WalkError::Fault(fault));
                }
                self.tail.torn_bytes = buf.len() as u64;
                break;
            };
            if let Some(entry) = self.line(line).map_err(WalkError::Fault)? {
                each(entry);
            }
        }
        if self.line == 0 {
            let fault = Fault::unparsable(Location::Line(1), "the file is empty");
            return Err(WalkError::Fault(fault));
        }
        Ok(self.tail)
    }
}

/// Why a walk stopped early.
#[derive(Debug)]
pub(super) enum WalkError {
    Io(std::io::Error),
    Fault(Fault),
}

/// Most entries one group commit writes, and so the most entries a crash can leave synced
/// but unacknowledged.
pub(super) const MAX_BATCH: usize = 256;

/// Whether `intent`, the head a batch in flight meant to publish (from the head's temp
/// file), vouches for the entries past `head` as that batch's crash residue: more than one
/// entry past the head, no more than the batch was to write, and ending in the batch's own
/// last hash if the whole batch landed. The caller still checks that the first of them links
/// to the head's hash (the walk, or a read of the last lines, checks the rest of the chain).
///
/// A single entry past the head needs no intent (`reconcile` accepts it), as before group
/// commit.
pub(super) fn batch_residue(head: &Head, tail: &Tail, intent: Option<&Head>) -> bool {
    let Some(intent) = intent else {
        return false;
    };
    tail.entries > head.entries + 1
        && tail.entries <= intent.entries
        && intent.entries - head.entries <= MAX_BATCH as u64
        && (tail.entries < intent.entries || tail.last_hash == intent.last_hash)
}

/// Compares the end of the log with the head file. Returns the `seq` of the one entry a crash
/// may leave written but unacknowledged (it links to the head's hash), or `None` when they
/// agree exactly.
pub(super) fn reconcile(head: &Head, tail: &Tail) -> Result<Option<u64>, TamperReason> {
    if tail.entries == head.entries && tail.last_hash == head.last_hash {
        return Ok(None);
    }
    if tail.entries == head.entries + 1 && tail.last_prev_hash == head.last_hash {
        return Ok(Some(head.entries));
    }
    if tail.entries <= head.entries {
        return Err(TamperReason::Truncated {
            head_entries: head.entries,
            log_entries: tail.entries,
        });
    }
    Err(TamperReason::HeadBehind {
        head_entries: head.entries,
        log_entries: tail.entries,
    })
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;
    use crate::audit::AuditRecord;

    fn key() -> AuditKey {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.key");
        std::fs::write(&path, [9u8; 32]).unwrap();
        AuditKey::derive(&crypto::RootKey::load_or_create(&path).unwrap())
    }

    /// A log of `n` entries as lines with newlines, and the hashes of its entries.
    fn log(key: &AuditKey, n: u64) -> (Vec<Vec<u8>>, Vec<ChainHash>) {
        let mut lines = vec![format::header_line(key)];
        let mut hashes = Vec::new();
        let mut prev = ChainHash::GENESIS;
        for seq in 0..n {
            let record = AuditRecord {
                caller_object_id: "caller".into(),
                vault: "v".into(),
                key: None,
                version: None,
                operation: format!("Op{seq}"),
                result: "Success".into(),
                detail: None,
            };
            let time = datetime!(2025-01-01 00:00 UTC);
            let (entry, line) = format::seal_entry(key, seq, prev, time, record).unwrap();
            prev = entry.hash;
            hashes.push(entry.hash);
            lines.push(line);
        }
        (lines, hashes)
    }

    fn walk(key: &AuditKey, lines: &[Vec<u8>]) -> Result<Tail, Fault> {
        let bytes = lines.concat();
        ChainWalker::new(key)
            .walk(bytes.as_slice(), |_| {})
            .map_err(|e| match e {
                WalkError::Fault(fault) => fault,
                WalkError::Io(e) => panic!("{e}"),
            })
    }

    #[test]
    fn walks_a_clean_log_and_counts_a_torn_tail() {
        let key = key();
        let (mut lines, hashes) = log(&key, 3);
        let tail = walk(&key, &lines).unwrap();
        assert_eq!(tail.entries, 3);
        assert_eq!(tail.last_hash, hashes[2]);
        assert_eq!(tail.last_prev_hash, hashes[1]);
        lines.push(b"{\"seq\":3,\"ti".to_vec());
        assert_eq!(walk(&key, &lines).unwrap().torn_bytes, 12);
        assert_eq!(walk(&key, &lines[..1]).unwrap(), Tail::EMPTY);
    }

    #[test]
    fn deleted_and_moved_entries_break_the_chain() {
        let key = key();
        let (lines, _) = log(&key, 4);
        let mut deleted = lines.clone();
        deleted.remove(2);
        let gap = ChainBreak::SeqGap {
            expected: 1,
            found: 2,
        };
        assert_eq!(
            walk(&key, &deleted),
            Err(Fault::tampered(
                Location::Line(3),
                TamperReason::BrokenChain(gap)
            ))
        );
        // An entry from another log under the same key, with the right seq, does not link.
        let (other, _) = {
            let mut other = log(&key, 0);
            let record = AuditRecord {
                caller_object_id: "x".into(),
                vault: "v".into(),
                key: None,
                version: None,
                operation: "Op".into(),
                result: "Success".into(),
                detail: None,
            };
            let time = datetime!(2025-01-01 00:00 UTC);
            let wrong_prev = ChainHash::from_hex(&"11".repeat(32)).unwrap();
            let (_, line) = format::seal_entry(&key, 1, wrong_prev, time, record).unwrap();
            other.0.push(line);
            other
        };
        let mut spliced = lines[..2].to_vec();
        spliced.push(other[1].clone());
        let mismatch = ChainBreak::PrevHashMismatch { seq: 1 };
        assert_eq!(
            walk(&key, &spliced),
            Err(Fault::tampered(
                Location::Line(3),
                TamperReason::BrokenChain(mismatch)
            ))
        );
    }

    #[test]
    fn empty_or_headless_files_are_unparsable() {
        let key = key();
        for bytes in [&b""[..], b"{\"format\""] {
            let result = ChainWalker::new(&key).walk(bytes, |_| {});
            assert!(matches!(
                result,
                Err(WalkError::Fault(Fault::Tampered {
                    at: Location::Line(1),
                    reason: TamperReason::Unparsable { .. }
                }))
            ));
        }
    }

    #[test]
    fn reconcile_table() {
        let h = |n: u8| ChainHash::from_hex(&format!("{n:02x}").repeat(32)).unwrap();
        let head = Head {
            entries: 5,
            last_hash: h(5),
        };
        let tail = |entries, last, prev| Tail {
            entries,
            last_hash: h(last),
            last_prev_hash: h(prev),
            torn_bytes: 0,
        };
        assert_eq!(reconcile(&head, &tail(5, 5, 4)), Ok(None));
        assert_eq!(reconcile(&head, &tail(6, 6, 5)), Ok(Some(5)));
        let truncated = TamperReason::Truncated {
            head_entries: 5,
            log_entries: 4,
        };
        assert_eq!(reconcile(&head, &tail(4, 4, 3)), Err(truncated));
        let replaced = TamperReason::Truncated {
            head_entries: 5,
            log_entries: 5,
        };
        assert_eq!(reconcile(&head, &tail(5, 9, 4)), Err(replaced));
        let behind = TamperReason::HeadBehind {
            head_entries: 5,
            log_entries: 7,
        };
        assert_eq!(reconcile(&head, &tail(7, 7, 6)), Err(behind));
        let unlinked = TamperReason::HeadBehind {
            head_entries: 5,
            log_entries: 6,
        };
        assert_eq!(reconcile(&head, &tail(6, 6, 9)), Err(unlinked));
        assert_eq!(reconcile(&Head::EMPTY, &Tail::EMPTY), Ok(None));
    }

    #[test]
    fn batch_residue_table() {
        let h = |n: u8| ChainHash::from_hex(&format!("{n:02x}").repeat(32)).unwrap();
        let head = Head {
            entries: 5,
            last_hash: h(5),
        };
        let tail = |entries, last| Tail {
            entries,
            last_hash: h(last),
            last_prev_hash: h(last - 1),
            torn_bytes: 0,
        };
        let intent = |entries, last| Head {
            entries,
            last_hash: h(last),
        };
        // The whole batch landed: the intent names its last hash.
        assert!(batch_residue(&head, &tail(8, 8), Some(&intent(8, 8))));
        // Part of it landed (the rest torn or never written).
        assert!(batch_residue(&head, &tail(7, 7), Some(&intent(8, 8))));
        // Without an intent, or with one that does not reach that far, it is a head behind.
        assert!(!batch_residue(&head, &tail(7, 7), None));
        assert!(!batch_residue(&head, &tail(9, 9), Some(&intent(8, 8))));
        assert!(!batch_residue(&head, &tail(8, 9), Some(&intent(8, 8))));
        // One entry is `reconcile`'s case; none is no residue.
        assert!(!batch_residue(&head, &tail(6, 6), Some(&intent(8, 8))));
        assert!(!batch_residue(&head, &tail(5, 5), Some(&intent(8, 8))));
        // No batch is larger than MAX_BATCH.
        let far = 5 + MAX_BATCH as u64 + 1;
        assert!(!batch_residue(
            &head,
            &tail(7, 7),
            Some(&Head {
                entries: far,
                last_hash: h(1)
            })
        ));
    }
}
