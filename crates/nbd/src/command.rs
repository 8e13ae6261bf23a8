//! Transmission-phase decisions without I/O: whether a request is acceptable for the
//! negotiated export and what it asks the device to do, and how device extents become
//! `base:allocation` descriptors.

use crate::Extent;
use crate::proto::{
    Descriptor, Errno, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE, RequestHeader, cmd, cmd_flags, state,
};

/// The most descriptors one block-status reply carries; the client asks again for the rest.
pub const MAX_DESCRIPTORS: usize = 16 * 1024;

/// What the transmission phase of one connection was negotiated with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransmissionParams {
    /// Export size in bytes.
    pub size: u64,
    /// Writes, trims and zeroing are refused with `EPERM`.
    pub read_only: bool,
    /// Structured replies were negotiated.
    pub structured: bool,
    /// The id of `base:allocation` if the client selected it for this export.
    pub base_allocation: Option<u32>,
}

/// A request the device should carry out, after every check passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Read `len` bytes at `offset`.
    Read {
        /// Byte offset.
        offset: u64,
        /// Byte count, at most [`MAX_BLOCK_SIZE`].
        len: u32,
    },
    /// Write the `len`-byte payload at `offset`.
    Write {
        /// Byte offset.
        offset: u64,
        /// Byte count, at most [`MAX_BLOCK_SIZE`].
        len: u32,
        /// Persist before replying.
        fua: bool,
    },
    /// Persist every completed write.
    Flush,
    /// Discard a range.
    Trim {
        /// Byte offset.
        offset: u64,
        /// Byte count.
        len: u32,
        /// Persist before replying.
        fua: bool,
    },
    /// Make a range read as zeros.
    WriteZeroes {
        /// Byte offset.
        offset: u64,
        /// Byte count.
        len: u32,
        /// Keep the range allocated.
        no_hole: bool,
        /// Persist before replying.
        fua: bool,
    },
    /// Report `base:allocation` for a range.
    BlockStatus {
        /// Byte offset.
        offset: u64,
        /// Byte count, never zero.
        len: u32,
        /// At most one descriptor, no longer than `len`.
        req_one: bool,
        /// The metadata context id to answer with.
        context_id: u32,
    },
    /// A cache hint; accepted and ignored.
    Cache,
    /// `NBD_CMD_DISC`: finish outstanding requests and close.
    Disconnect,
}

/// Why a request is refused, with a message for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    /// The error to reply with.
    pub errno: Errno,
    /// A human-readable reason (sent in structured error chunks).
    pub message: &'static str,
}

fn reject(errno: Errno, message: &'static str) -> Rejection {
    Rejection { errno, message }
}

/// Command flags each command accepts. `NBD_CMD_FLAG_FUA` is valid on every command once
/// `NBD_FLAG_SEND_FUA` is advertised (which this server always does).
fn allowed_flags(kind: u16, params: &TransmissionParams) -> u16 {
    match kind {
        cmd::READ if params.structured => cmd_flags::FUA | cmd_flags::DF,
        cmd::WRITE_ZEROES => cmd_flags::FUA | cmd_flags::NO_HOLE,
        cmd::BLOCK_STATUS => cmd_flags::FUA | cmd_flags::REQ_ONE,
        _ => cmd_flags::FUA,
    }
}

/// Whether `offset..offset + len` is aligned to the minimum block size, allowing a range that
/// ends exactly at the end of an export whose size is not a multiple of it.
fn aligned(offset: u64, len: u32, size: u64) -> bool {
    let min = u64::from(MIN_BLOCK_SIZE);
    let end = offset.saturating_add(u64::from(len));
    offset.is_multiple_of(min) && (end.is_multiple_of(min) || end == size)
}

fn in_bounds(offset: u64, len: u32, size: u64) -> bool {
    offset
        .checked_add(u64::from(len))
        .is_some_and(|end| end <= size)
}

/// Decides what to do with a request header. For `NBD_CMD_WRITE` a rejection still leaves
/// the payload on the wire; the caller skips it (or disconnects if it is longer than
/// [`MAX_BLOCK_SIZE`], see [`write_payload_is_acceptable`]).
pub fn check_request(req: &RequestHeader, params: &TransmissionParams) -> Result<Op, Rejection> {
    let (offset, len) = (req.offset, req.length);
    let known = matches!(
        req.kind,
        cmd::READ
            | cmd::WRITE
            | cmd::DISC
            | cmd::FLUSH
            | cmd::TRIM
            | cmd::CACHE
            | cmd::WRITE_ZEROES
            | cmd::BLOCK_STATUS
    );
    if !known {
        return Err(reject(Errno::Inval, "unknown command"));
    }
    if req.flags & !allowed_flags(req.kind, params) != 0 {
        return Err(reject(
            Errno::Inval,
            "command flag not valid for this command",
        ));
    }
    let fua = req.flags & cmd_flags::FUA != 0;
    let writes = matches!(req.kind, cmd::WRITE | cmd::TRIM | cmd::WRITE_ZEROES);
    if writes && params.read_only {
        return Err(reject(Errno::Perm, "the export is read-only"));
    }
    match req.kind {
        cmd::DISC => return Ok(Op::Disconnect),
        // Offset and length of a flush are reserved; they are ignored.
        cmd::FLUSH => return Ok(Op::Flush),
        cmd::BLOCK_STATUS => {
            if !params.structured {
                return Err(reject(Errno::Inval, "structured replies not negotiated"));
            }
            if params.base_allocation.is_none() {
                return Err(reject(Errno::Inval, "no metadata context selected"));
            }
            if len == 0 {
                return Err(reject(Errno::Inval, "zero-length block status"));
            }
        }
        _ => {}
    }
    if matches!(req.kind, cmd::READ | cmd::WRITE) && len > MAX_BLOCK_SIZE {
        return Err(reject(
            Errno::Inval,
            "length exceeds the maximum block size",
        ));
    }
    if !in_bounds(offset, len, params.size) {
        return Err(if matches!(req.kind, cmd::WRITE | cmd::WRITE_ZEROES) {
            reject(Errno::NoSpc, "write past the end of the export")
        } else {
            reject(Errno::Inval, "range past the end of the export")
        });
    }
    if !aligned(offset, len, params.size) {
        return Err(reject(
            Errno::Inval,
            "request not aligned to the minimum block size",
        ));
    }
    Ok(match req.kind {
        cmd::READ => Op::Read { offset, len },
        cmd::WRITE => Op::Write { offset, len, fua },
        cmd::TRIM => Op::Trim { offset, len, fua },
        cmd::WRITE_ZEROES => Op::WriteZeroes {
            offset,
            len,
            no_hole: req.flags & cmd_flags::NO_HOLE != 0,
            fua,
        },
        cmd::BLOCK_STATUS => Op::BlockStatus {
            offset,
            len,
            req_one: req.flags & cmd_flags::REQ_ONE != 0,
            context_id: params.base_allocation.unwrap_or_default(),
        },
        _ => Op::Cache,
    })
}

/// Whether a `NBD_CMD_WRITE` payload of `len` bytes is read (and skipped if the request is
/// refused). Longer payloads are a denial of service attempt: the server replies with an error
/// and drops the connection without reading them.
pub fn write_payload_is_acceptable(len: u32) -> bool {
    len <= MAX_BLOCK_SIZE
}

fn extent_flags(e: &Extent) -> u32 {
    (if e.hole { state::HOLE } else { 0 }) | (if e.zero { state::ZERO } else { 0 })
}

/// Turns the extents a device reported for `offset..offset + len` into block-status
/// descriptors that follow the spec:
///
/// - they start at `offset`, are consecutive and never extend past the requested range;
/// - their boundaries fall on multiples of the minimum block size (or the request's end): a
///   boundary inside a block is moved to the block's end and the flags of the extents sharing
///   that block are intersected, which only ever reports less (status 0 is always safe);
/// - neighbours with equal flags are merged;
/// - with `req_one` there is exactly one descriptor, otherwise at most [`MAX_DESCRIPTORS`];
/// - there is always at least one: extents that cover nothing yield a single descriptor for
///   the whole range with status 0.
pub fn block_status_descriptors(
    offset: u64,
    len: u32,
    extents: &[Extent],
    req_one: bool,
    out: &mut Vec<Descriptor>,
) {
    out.clear();
    let end = offset.saturating_add(u64::from(len));
    let cap = if req_one { 1 } else { MAX_DESCRIPTORS };
    let min = u64::from(MIN_BLOCK_SIZE);
    let round_up = |x: u64| x.div_ceil(min).saturating_mul(min).min(end);
    // (start, stop, flags) in absolute bytes.
    let mut spans: Vec<(u64, u64, u32)> = Vec::new();
    let mut pos = offset;
    for e in extents {
        if pos >= end {
            break;
        }
        if e.len == 0 {
            continue;
        }
        let raw_stop = pos.saturating_add(e.len).min(end);
        let stop = round_up(raw_stop);
        let flags = extent_flags(e);
        let mut start = pos;
        if let Some(last) = spans.last_mut()
            && last.1 > pos
        {
            // The previous span was rounded up over the start of this extent.
            last.2 &= flags;
            if stop <= last.1 {
                pos = raw_stop;
                continue;
            }
            start = last.1;
        }
        match spans.last_mut() {
            Some(last) if last.2 == flags && last.1 == start => last.1 = stop,
            _ => {
                if spans.len() >= cap {
                    break;
                }
                spans.push((start, stop, flags));
            }
        }
        pos = raw_stop;
    }
    if spans.is_empty() {
        spans.push((offset, end, 0));
    }
    out.extend(
        spans
            .iter()
            .filter(|s| s.1 > s.0)
            .map(|&(s, t, f)| Descriptor {
                // Each span lies within the request, whose length is a u32.
                len: u32::try_from(t - s).unwrap_or(u32::MAX),
                flags: f,
            }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Cookie;

    fn params() -> TransmissionParams {
        TransmissionParams {
            size: 1 << 20,
            read_only: false,
            structured: true,
            base_allocation: Some(1),
        }
    }

    fn req(kind: u16, flags: u16, offset: u64, length: u32) -> RequestHeader {
        RequestHeader {
            flags,
            kind,
            cookie: Cookie(1),
            offset,
            length,
        }
    }

    fn check(kind: u16, flags: u16, offset: u64, length: u32) -> Result<Op, Errno> {
        check_request(&req(kind, flags, offset, length), &params()).map_err(|r| r.errno)
    }

    #[test]
    fn valid_requests_become_operations() {
        assert_eq!(
            check(cmd::READ, 0, 4096, 4096),
            Ok(Op::Read {
                offset: 4096,
                len: 4096
            })
        );
        assert_eq!(
            check(cmd::WRITE, cmd_flags::FUA, 0, 512),
            Ok(Op::Write {
                offset: 0,
                len: 512,
                fua: true
            })
        );
        assert_eq!(check(cmd::FLUSH, 0, 0, 0), Ok(Op::Flush));
        assert_eq!(check(cmd::DISC, 0, 0, 0), Ok(Op::Disconnect));
        assert_eq!(
            check(cmd::WRITE_ZEROES, cmd_flags::NO_HOLE, 0, 1 << 20),
            Ok(Op::WriteZeroes {
                offset: 0,
                len: 1 << 20,
                no_hole: true,
                fua: false
            })
        );
        assert_eq!(
            check(cmd::BLOCK_STATUS, cmd_flags::REQ_ONE, 0, 1 << 20),
            Ok(Op::BlockStatus {
                offset: 0,
                len: 1 << 20,
                req_one: true,
                context_id: 1
            })
        );
        assert_eq!(check(cmd::CACHE, 0, 0, 4096), Ok(Op::Cache));
        assert_eq!(
            check(cmd::READ, cmd_flags::DF, 0, 512),
            Ok(Op::Read {
                offset: 0,
                len: 512
            })
        );
        // Zero-length reads and writes are accepted (no device call is needed).
        assert_eq!(
            check(cmd::READ, 0, 1 << 20, 0),
            Ok(Op::Read {
                offset: 1 << 20,
                len: 0
            })
        );
    }

    #[test]
    fn out_of_range_is_einval_for_reads_and_enospc_for_writes() {
        let size = 1u64 << 20;
        assert_eq!(check(cmd::READ, 0, size, 512), Err(Errno::Inval));
        assert_eq!(check(cmd::READ, 0, size - 512, 1024), Err(Errno::Inval));
        assert_eq!(check(cmd::READ, 0, u64::MAX - 511, 1024), Err(Errno::Inval));
        assert_eq!(check(cmd::TRIM, 0, size, 512), Err(Errno::Inval));
        assert_eq!(check(cmd::BLOCK_STATUS, 0, size, 512), Err(Errno::Inval));
        assert_eq!(check(cmd::WRITE, 0, size, 512), Err(Errno::NoSpc));
        assert_eq!(check(cmd::WRITE, 0, u64::MAX, 512), Err(Errno::NoSpc));
        assert_eq!(
            check(cmd::WRITE_ZEROES, 0, size - 512, 1024),
            Err(Errno::NoSpc)
        );
    }

    #[test]
    fn oversized_unknown_misflagged_and_unaligned_requests_are_einval() {
        assert_eq!(
            check(cmd::READ, 0, 0, MAX_BLOCK_SIZE + 512),
            Err(Errno::Inval)
        );
        assert_eq!(
            check(cmd::WRITE, 0, 0, MAX_BLOCK_SIZE + 512),
            Err(Errno::Inval)
        );
        assert_eq!(check(9, 0, 0, 0), Err(Errno::Inval));
        assert_eq!(check(0xffff, 0, 0, 0), Err(Errno::Inval));
        assert_eq!(
            check(cmd::READ, cmd_flags::REQ_ONE, 0, 512),
            Err(Errno::Inval)
        );
        assert_eq!(
            check(cmd::WRITE, cmd_flags::NO_HOLE, 0, 512),
            Err(Errno::Inval)
        );
        assert_eq!(
            check(cmd::WRITE_ZEROES, cmd_flags::FAST_ZERO, 0, 512),
            Err(Errno::Inval)
        );
        assert_eq!(check(cmd::READ, 0x8000, 0, 512), Err(Errno::Inval));
        assert_eq!(check(cmd::READ, 0, 1, 512), Err(Errno::Inval));
        assert_eq!(check(cmd::WRITE, 0, 0, 100), Err(Errno::Inval));
        assert_eq!(check(cmd::BLOCK_STATUS, 0, 0, 0), Err(Errno::Inval));
    }

    #[test]
    fn df_needs_structured_replies() {
        let p = TransmissionParams {
            structured: false,
            base_allocation: None,
            ..params()
        };
        assert_eq!(
            check_request(&req(cmd::READ, cmd_flags::DF, 0, 512), &p).map_err(|r| r.errno),
            Err(Errno::Inval)
        );
        assert_eq!(
            check_request(&req(cmd::BLOCK_STATUS, 0, 0, 512), &p).map_err(|r| r.errno),
            Err(Errno::Inval)
        );
    }

    #[test]
    fn read_only_exports_refuse_writes_with_eperm() {
        let p = TransmissionParams {
            read_only: true,
            ..params()
        };
        for kind in [cmd::WRITE, cmd::TRIM, cmd::WRITE_ZEROES] {
            assert_eq!(
                check_request(&req(kind, 0, 0, 512), &p).map_err(|r| r.errno),
                Err(Errno::Perm)
            );
        }
        assert!(check_request(&req(cmd::READ, 0, 0, 512), &p).is_ok());
        assert!(check_request(&req(cmd::FLUSH, 0, 0, 0), &p).is_ok());
    }

    #[test]
    fn unaligned_tail_of_an_odd_sized_export_is_reachable() {
        let p = TransmissionParams {
            size: 4096 + 100,
            ..params()
        };
        assert!(check_request(&req(cmd::READ, 0, 4096, 100), &p).is_ok());
        assert!(check_request(&req(cmd::READ, 0, 0, 4196), &p).is_ok());
        assert!(check_request(&req(cmd::READ, 0, 4096, 50), &p).is_err());
    }

    #[test]
    fn oversized_write_payloads_are_not_read() {
        assert!(write_payload_is_acceptable(MAX_BLOCK_SIZE));
        assert!(!write_payload_is_acceptable(MAX_BLOCK_SIZE + 1));
    }

    fn ext(len: u64, hole: bool, zero: bool) -> Extent {
        Extent { len, hole, zero }
    }

    fn descs(offset: u64, len: u32, extents: &[Extent], req_one: bool) -> Vec<(u32, u32)> {
        let mut out = Vec::new();
        block_status_descriptors(offset, len, extents, req_one, &mut out);
        out.iter().map(|d| (d.len, d.flags)).collect()
    }

    const HZ: u32 = state::HOLE | state::ZERO;

    #[test]
    fn descriptors_are_clipped_merged_and_never_empty() {
        assert_eq!(
            descs(
                0,
                8192,
                &[ext(4096, false, false), ext(4096, true, true)],
                false
            ),
            [(4096, 0), (4096, HZ)]
        );
        // Clipped to the request.
        assert_eq!(
            descs(0, 4096, &[ext(1 << 30, true, true)], false),
            [(4096, HZ)]
        );
        // Equal neighbours merged, zero-length extents skipped.
        assert_eq!(
            descs(
                0,
                8192,
                &[
                    ext(4096, true, true),
                    ext(0, false, false),
                    ext(4096, true, true)
                ],
                false
            ),
            [(8192, HZ)]
        );
        // Nothing useful from the device: one status-0 descriptor for everything.
        assert_eq!(descs(512, 1024, &[], false), [(1024, 0)]);
        assert_eq!(descs(512, 1024, &[ext(0, true, true)], false), [(1024, 0)]);
        // Short answers are allowed: the client asks again.
        assert_eq!(
            descs(0, 8192, &[ext(4096, true, true)], false),
            [(4096, HZ)]
        );
    }

    #[test]
    fn req_one_yields_exactly_one_descriptor_within_the_request() {
        assert_eq!(
            descs(
                0,
                8192,
                &[ext(4096, false, false), ext(4096, true, true)],
                true
            ),
            [(4096, 0)]
        );
        assert_eq!(
            descs(0, 512, &[ext(1 << 20, true, true)], true),
            [(512, HZ)]
        );
    }

    #[test]
    fn unaligned_extent_boundaries_round_up_and_intersect_flags() {
        // 100 bytes of data then holes: the first block is reported as data.
        assert_eq!(
            descs(
                0,
                4096,
                &[ext(100, false, false), ext(3996, true, true)],
                false
            ),
            [(512, 0), (3584, HZ)]
        );
        // Zero then hole-without-zero inside one block: only ZERO&(HOLE) common bits remain.
        assert_eq!(
            descs(
                0,
                1024,
                &[
                    ext(100, false, true),
                    ext(100, true, true),
                    ext(824, true, true)
                ],
                false
            ),
            [(512, state::ZERO), (512, HZ)]
        );
        // Every descriptor is a multiple of 512 and they sum to at most the request.
        let odd: Vec<Extent> = (0..50)
            .map(|i| ext(37 * (i + 1), i % 2 == 0, i % 3 == 0))
            .collect();
        let d = descs(0, 65536, &odd, false);
        let total: u64 = d.iter().map(|x| u64::from(x.0)).sum();
        assert!(total <= 65536);
        assert!(d.iter().all(|x| x.0 % 512 == 0 && x.0 > 0), "{d:?}");
    }

    #[test]
    fn descriptor_count_is_capped() {
        let many: Vec<Extent> = (0..(MAX_DESCRIPTORS + 10))
            .map(|i| ext(512, i % 2 == 0, false))
            .collect();
        let len = u32::try_from(many.len() * 512).unwrap();
        let d = descs(0, len, &many, false);
        assert_eq!(d.len(), MAX_DESCRIPTORS);
    }
}
