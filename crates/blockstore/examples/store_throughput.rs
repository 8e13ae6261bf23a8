//! Throughput of the encrypted disk's data path against the bare sector cipher measured in the
//! same run, single-threaded, one layer:
//!
//! - raw: `SectorCipher::encrypt_unit` / `decrypt_unit` in a loop over 4 KiB units (one
//!   `EVP_aes_256_xts` call per unit);
//! - store: `Disk::write` / `Disk::write_in_place` (what NBD writes use) / `Disk::read` of 4 KiB
//!   (and 256 KiB) requests to a backend that does nothing, so only the store's own work is
//!   measured (range checks, per-thread buffer, stripe lock, zero-unit test, encryption);
//! - the same writes to a `MemoryBackend`, for reference.
//!
//! Run with `cargo run --release -p blockstore --example store_throughput`.

use std::hint::black_box;
use std::io;
use std::sync::Arc;
use std::time::Instant;

use blockstore::backend::{Backend, MemoryBackend};
use blockstore::disk::Disk;
use blockstore::format::{DiskId, WrapLayer};
use blockstore::xts::{DATA_UNIT_LEN, SectorCipher, UnitIndex, XtsKey};

/// Bytes processed per measurement; each is repeated `ROUNDS` times, interleaved with the
/// others, and the best kept, so that a busy machine disturbs the ratios less.
const BYTES: usize = 64 << 20;
const ROUNDS: usize = 12;
/// Units of the virtual disk the requests cycle over (64 MiB).
const DISK_UNITS: u64 = 16_384;

/// Discards writes and leaves read buffers as they are (non-zero, so they are decrypted):
/// the cost of the storage itself is left out.
#[derive(Debug)]
struct NullBackend;

impl Backend for NullBackend {
    fn len(&self) -> io::Result<u64> {
        Ok(0)
    }
    fn read_at(&self, _buf: &mut [u8], _offset: u64) -> io::Result<()> {
        Ok(())
    }
    fn write_at(&self, _data: &[u8], _offset: u64) -> io::Result<()> {
        Ok(())
    }
    fn set_len(&self, _len: u64) -> io::Result<()> {
        Ok(())
    }
    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }
    fn punch_hole(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }
    fn allocated(&self, offset: u64, len: u64) -> io::Result<Vec<(u64, u64, bool)>> {
        Ok(vec![(offset, len, true)])
    }
}

/// One measured variant: a name, its request size, the raw loop it is compared with (an
/// index into the list) and the work of request number `i`.
struct Variant<'a> {
    name: &'static str,
    request: usize,
    against: Option<usize>,
    run: Box<dyn FnMut(u64) + 'a>,
    best: f64,
}

fn variant<'a>(
    name: &'static str,
    request: usize,
    against: Option<usize>,
    run: Box<dyn FnMut(u64) + 'a>,
) -> Variant<'a> {
    Variant {
        name,
        request,
        against,
        run,
        best: 0.0,
    }
}

/// GB/s (10^9 bytes per second) of one pass of `BYTES` through `v`.
fn pass(v: &mut Variant<'_>) -> f64 {
    let calls = (BYTES / v.request) as u64;
    let start = Instant::now();
    for i in 0..calls {
        (v.run)(i);
    }
    BYTES as f64 / start.elapsed().as_secs_f64() / 1e9
}

fn disk(backend: Arc<dyn Backend>, key: &[u8; 64]) -> Disk {
    let wrap = WrapLayer {
        key_id: "bench".into(),
        algorithm: "none".into(),
        wrapped_key: vec![0; 32],
    };
    let key = XtsKey::from_bytes(key).expect("key");
    Disk::create(
        backend,
        DiskId([1; 16]),
        DISK_UNITS * 4096,
        vec![(key, wrap)],
    )
    .expect("disk")
}

fn main() {
    let key = XtsKey::generate().expect("key");
    let bytes = *key.expose_bytes();
    let cipher = SectorCipher::new(key).expect("cipher");
    let null = disk(Arc::new(NullBackend), &bytes);
    let memory = disk(Arc::new(MemoryBackend::new()), &bytes);
    let unit = DATA_UNIT_LEN;
    let data = vec![0xa5u8; 64 * unit];
    let at = |i: u64, units: u64| (i * units % DISK_UNITS) * 4096;
    let mut buf = [
        vec![0x5au8; unit],
        vec![0x5au8; 64 * unit],
        vec![0x5au8; unit],
    ];
    let [b1, b2, b3] = &mut buf;
    let (cipher, null, memory, data) = (&cipher, &null, &memory, &data);
    let mut raw_buf = vec![0x5au8; unit];
    let mut raw_buf2 = vec![0x5au8; unit];
    let mut in_place_buf = vec![0x5au8; unit];
    let mut variants = vec![
        variant(
            "raw encrypt_unit loop, 4 KiB units",
            unit,
            None,
            Box::new(|i| {
                cipher
                    .encrypt_unit(UnitIndex(i % DISK_UNITS), black_box(&mut raw_buf))
                    .expect("encrypt")
            }),
        ),
        variant(
            "raw decrypt_unit loop, 4 KiB units",
            unit,
            None,
            Box::new(|i| {
                cipher
                    .decrypt_unit(UnitIndex(i % DISK_UNITS), black_box(&mut raw_buf2))
                    .expect("decrypt")
            }),
        ),
        variant(
            "Disk::write 4 KiB, null backend",
            unit,
            Some(0),
            Box::new(|i| {
                null.write(at(i, 1), black_box(&data[..unit]), false)
                    .expect("write")
            }),
        ),
        variant(
            "Disk::write_in_place 4 KiB, null backend",
            unit,
            Some(0),
            Box::new(|i| {
                null.write_in_place(at(i, 1), black_box(&mut in_place_buf[..]), false)
                    .expect("write")
            }),
        ),
        variant(
            "Disk::read 4 KiB, null backend",
            unit,
            Some(1),
            Box::new(|i| null.read(at(i, 1), black_box(&mut b1[..])).expect("read")),
        ),
        variant(
            "Disk::write 256 KiB, null backend",
            64 * unit,
            Some(0),
            Box::new(|i| {
                null.write(at(i, 64), black_box(&data[..]), false)
                    .expect("write")
            }),
        ),
        variant(
            "Disk::read 256 KiB, null backend",
            64 * unit,
            Some(1),
            Box::new(|i| null.read(at(i, 64), black_box(&mut b2[..])).expect("read")),
        ),
        variant(
            "Disk::write 4 KiB, MemoryBackend",
            unit,
            Some(0),
            Box::new(|i| {
                memory
                    .write(at(i, 1), black_box(&data[..unit]), false)
                    .expect("write")
            }),
        ),
        variant(
            "Disk::read 4 KiB, MemoryBackend",
            unit,
            Some(1),
            Box::new(|i| memory.read(at(i, 1), black_box(&mut b3[..])).expect("read")),
        ),
    ];
    for v in &mut variants {
        pass(v); // warm up
    }
    for _ in 0..ROUNDS {
        for v in &mut variants {
            v.best = v.best.max(pass(v));
        }
    }
    println!("single thread, one AES-256-XTS layer, best of {ROUNDS} interleaved passes, GB/s:");
    for v in &variants {
        match v.against {
            Some(raw) => println!(
                "  {:<42} {:6.2}   ratio {:.2}",
                v.name,
                v.best,
                v.best / variants[raw].best
            ),
            None => println!("  {:<42} {:6.2}", v.name, v.best),
        }
    }
}
