//! Entry points for fuzz targets (`fuzz/fuzz_targets/*.rs` at the repository root) and
//! property tests: each feeds arbitrary client bytes through the same sans-I/O code the
//! server runs. They must never panic; the assertions inside check invariants of what the
//! server would send.

use std::io;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::command::{self, Op, TransmissionParams};
use crate::handshake::{Negotiation, Next, TlsPolicy};
use crate::proto::{self, Descriptor, MIN_BLOCK_SIZE};
use crate::{BlockDevice, Export, ExportCatalog, Extent};

/// A device that reads as zeros and accepts everything.
struct Zeros;

impl BlockDevice for Zeros {
    fn size(&self) -> u64 {
        1 << 30
    }
    fn read(&self, _offset: u64, buf: &mut [u8]) -> io::Result<()> {
        buf.fill(0);
        Ok(())
    }
    fn write(&self, _offset: u64, _data: &mut [u8], _fua: bool) -> io::Result<()> {
        Ok(())
    }
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
    fn trim(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }
    fn write_zeroes(&self, _offset: u64, _len: u64, _no_hole: bool, _fua: bool) -> io::Result<()> {
        Ok(())
    }
    fn block_status(&self, _offset: u64, len: u64) -> io::Result<Vec<Extent>> {
        Ok(vec![Extent {
            len,
            hole: true,
            zero: true,
        }])
    }
    fn can_multi_conn(&self) -> bool {
        false
    }
}

/// Knows one export, `fuzz`, and one revoked export, `revoked`.
struct Catalog {
    revoked: CancellationToken,
}

impl ExportCatalog for Catalog {
    fn open(&self, name: &str) -> Option<Export> {
        let revoked = match name {
            "fuzz" => CancellationToken::new(),
            "revoked" => self.revoked.clone(),
            _ => return None,
        };
        Some(Export {
            device: Arc::new(Zeros),
            read_only: false,
            revoked,
        })
    }
}

/// Checks that `out` is a sequence of well-formed option replies (or, after
/// `NBD_OPT_EXPORT_NAME`, the export information).
fn check_option_replies(mut out: &[u8], export_name: bool) {
    if export_name && !out.is_empty() {
        assert!(out.len() == 10 || out.len() == 134, "export name reply");
        return;
    }
    while !out.is_empty() {
        assert!(out.len() >= 20, "short option reply");
        assert_eq!(out[0..8], proto::OPTION_REPLY_MAGIC.to_be_bytes());
        let len = u32::from_be_bytes([out[16], out[17], out[18], out[19]]) as usize;
        assert!(out.len() >= 20 + len, "option reply length");
        out = &out[20 + len..];
    }
}

/// Feeds `data` as a client's side of option haggling: four bytes of client flags, then
/// option frames (`IHAVEOPT`, option, length, data), through a negotiation in each TLS policy.
/// Frames that would make the server drop the connection end the run, as they would end the
/// connection; STARTTLS is taken as succeeding.
pub fn parse_options(data: &[u8]) {
    let revoked = CancellationToken::new();
    revoked.cancel();
    let catalog = Catalog { revoked };
    for policy in [TlsPolicy::Plain, TlsPolicy::Required] {
        let Some((flags, mut rest)) = data.split_first_chunk::<4>() else {
            return;
        };
        let client = match proto::parse_client_flags(*flags) {
            Ok(c) => c,
            Err(_) => proto::ClientFlags { no_zeroes: false },
        };
        let mut negotiation = Negotiation::new(policy, client);
        let mut out = Vec::new();
        while let Some((header, tail)) = rest.split_first_chunk::<{ proto::OPTION_HEADER_LEN }>() {
            let Ok(header) = proto::parse_option_header(header) else {
                break;
            };
            let len = (header.len as usize).min(tail.len());
            let (option_data, tail) = tail.split_at(len);
            rest = tail;
            out.clear();
            let next = negotiation.option(header.option, option_data, &catalog, &mut out);
            check_option_replies(&out, header.option == proto::opt::EXPORT_NAME);
            match next {
                Next::Continue => {}
                Next::StartTls => negotiation.tls_started(),
                Next::Close => break,
                Next::Transmit(negotiated) => {
                    assert_eq!(negotiated.name, "fuzz");
                    break;
                }
            }
        }
    }
}

fn check_descriptors(offset: u64, len: u32, size: u64, req_one: bool, d: &[Descriptor]) {
    assert!(!d.is_empty(), "at least one descriptor");
    if req_one {
        assert_eq!(d.len(), 1, "REQ_ONE");
    }
    assert!(d.len() <= command::MAX_DESCRIPTORS);
    let mut pos = offset;
    let end = offset + u64::from(len);
    for x in d {
        assert!(x.len > 0, "zero-length descriptor");
        pos += u64::from(x.len);
        assert!(pos <= end, "descriptor past the request");
        assert!(
            pos.is_multiple_of(u64::from(MIN_BLOCK_SIZE)) || pos == end || pos == size,
            "unaligned descriptor end"
        );
        assert!(x.flags & !(proto::state::HOLE | proto::state::ZERO) == 0);
    }
}

/// Feeds `data` as a client's side of the transmission phase: request headers, each followed
/// by its write payload, checked against a few negotiated states. Accepted block-status
/// requests are answered from extents derived from the request's cookie, and the descriptors
/// are checked against the spec's rules. A frame that would make the server drop the
/// connection ends the run.
pub fn parse_requests(data: &[u8]) {
    let variants = [
        TransmissionParams {
            size: 1 << 20,
            read_only: false,
            structured: true,
            base_allocation: Some(1),
        },
        TransmissionParams {
            size: (1 << 20) + 100,
            read_only: true,
            structured: false,
            base_allocation: None,
        },
    ];
    let mut out = Vec::new();
    let mut descriptors = Vec::new();
    let mut rest = data;
    while let Some((header, tail)) = rest.split_first_chunk::<{ proto::REQUEST_HEADER_LEN }>() {
        let Ok(req) = proto::parse_request_header(header) else {
            break;
        };
        let payload = req.payload_len();
        if !command::write_payload_is_acceptable(payload) {
            break;
        }
        rest = tail.get(payload as usize..).unwrap_or(&[]);
        for params in &variants {
            out.clear();
            match command::check_request(&req, params) {
                Err(rejection) => {
                    proto::put_structured_error(
                        &mut out,
                        req.cookie,
                        rejection.errno,
                        rejection.message,
                    );
                }
                Ok(Op::Read { offset, len }) => {
                    assert!(len <= proto::MAX_BLOCK_SIZE);
                    assert!(offset + u64::from(len) <= params.size);
                }
                Ok(Op::Write { offset, len, .. }) => {
                    assert!(!params.read_only);
                    assert_eq!(len, payload);
                    assert!(offset + u64::from(len) <= params.size);
                }
                Ok(Op::BlockStatus {
                    offset,
                    len,
                    req_one,
                    context_id,
                }) => {
                    let extents: Vec<Extent> = req
                        .cookie
                        .0
                        .to_be_bytes()
                        .iter()
                        .map(|&b| Extent {
                            len: u64::from(b) * 97,
                            hole: b & 1 != 0,
                            zero: b & 2 != 0,
                        })
                        .collect();
                    command::block_status_descriptors(
                        offset,
                        len,
                        &extents,
                        req_one,
                        &mut descriptors,
                    );
                    check_descriptors(offset, len, params.size, req_one, &descriptors);
                    proto::put_block_status(&mut out, req.cookie, context_id, &descriptors);
                }
                Ok(Op::Trim { offset, len, .. } | Op::WriteZeroes { offset, len, .. }) => {
                    assert!(!params.read_only);
                    assert!(offset + u64::from(len) <= params.size);
                }
                Ok(Op::Flush | Op::Cache | Op::Disconnect) => {}
            }
        }
    }
}
