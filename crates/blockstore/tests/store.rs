//! Integration tests of the encrypted disk: round trips, thin provisioning, block status,
//! header updates and damage, ciphertext checks, concurrency and a model-based crash test.

use std::io;
use std::path::Path;
use std::sync::Arc;

use aes::Aes256;
use aes::cipher::KeyInit;
use blockstore::backend::{Backend, FileBackend, MemoryBackend};
use blockstore::disk::{Disk, Extent, STRIPES, StoreError};
use blockstore::format::{
    self, DATA_OFFSET, DiskId, FormatError, HEADER_REGION_LEN, SLOT_LEN, Slot, WrapLayer,
};
use blockstore::xts::{DATA_UNIT_LEN, SectorCipher, UnitIndex, XtsKey};
use proptest::prelude::*;
use xts_mode::{Xts128, get_tweak_default};

const UNIT: u64 = DATA_UNIT_LEN as u64;

// ---- helpers ----

/// A fixed, valid 64-byte key derived from `seed`.
fn key_bytes(seed: u8) -> [u8; 64] {
    std::array::from_fn(|i| (i as u8).wrapping_mul(seed | 1).wrapping_add(seed))
}

fn key(seed: u8) -> XtsKey {
    XtsKey::from_bytes(&key_bytes(seed)).expect("valid key")
}

fn wrap(name: &str) -> WrapLayer {
    WrapLayer {
        key_id: format!("https://vault.example/keys/{name}/0123456789abcdef"),
        algorithm: "RSA-OAEP-256".into(),
        wrapped_key: name.bytes().cycle().take(256).collect(),
    }
}

/// Layer specs: (key seed, wrap name) per layer.
fn layers(seeds: &[u8]) -> Vec<(XtsKey, WrapLayer)> {
    seeds
        .iter()
        .map(|&s| (key(s), wrap(&format!("kek{s}"))))
        .collect()
}

fn keys(seeds: &[u8]) -> Vec<XtsKey> {
    seeds.iter().map(|&s| key(s)).collect()
}

/// Deterministic bytes that differ per position and `seed`.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

fn mem_disk(size: u64, seeds: &[u8]) -> (Arc<MemoryBackend>, Disk) {
    let backend = Arc::new(MemoryBackend::new());
    let disk = Disk::create(backend.clone(), DiskId([3; 16]), size, layers(seeds)).expect("create");
    (backend, disk)
}

fn file_disk(dir: &Path, name: &str, size: u64, seeds: &[u8]) -> Disk {
    let backend = Arc::new(FileBackend::create(dir.join(name)).expect("file"));
    Disk::create(backend, DiskId([4; 16]), size, layers(seeds)).expect("create")
}

fn read_all(disk: &Disk) -> Vec<u8> {
    let mut buf = vec![0u8; disk.size() as usize];
    disk.read(0, &mut buf).expect("read");
    buf
}

/// The raw stored bytes of unit `unit`.
fn stored_unit(backend: &dyn Backend, unit: u64) -> Vec<u8> {
    let mut buf = vec![0u8; DATA_UNIT_LEN];
    backend
        .read_at(&mut buf, DATA_OFFSET + unit * UNIT)
        .expect("raw read");
    buf
}

fn reference(key: &[u8; 64]) -> Xts128<Aes256> {
    Xts128::new(
        Aes256::new_from_slice(&key[..32]).expect("key 1"),
        Aes256::new_from_slice(&key[32..]).expect("key 2"),
    )
}

/// Writes and reads a series of ranges against a `Vec<u8>` model.
fn check_round_trips(disk: &Disk) {
    let size = disk.size();
    let mut model = vec![0u8; size as usize];
    assert_eq!(read_all(disk), model, "a new disk reads zeros");
    let cases: &[(u64, u64)] = &[
        (0, UNIT),                           // one aligned unit
        (2 * UNIT, 3 * UNIT),                // aligned run
        (512, 512),                          // one sector
        (13, 7),                             // under a sector
        (UNIT - 100, 200),                   // across a unit boundary
        (5 * UNIT + 4000, 2 * UNIT + 500),   // head, whole, tail
        (3, 300 * 1024 + 11),                // large and unaligned, several chunks
        (20 * UNIT, 80 * UNIT),              // larger than one chunk, aligned
        (size - 512, 512),                   // last sector
        (size - 3 * UNIT - 1, 3 * UNIT + 1), // up to the end
    ];
    for (n, &(offset, len)) in cases.iter().enumerate() {
        let data = pattern(n as u64 + 1, len as usize);
        disk.write(offset, &data, n % 3 == 0).expect("write");
        model[offset as usize..(offset + len) as usize].copy_from_slice(&data);
        let mut back = vec![0u8; len as usize];
        disk.read(offset, &mut back).expect("read back");
        assert_eq!(back, data, "case {n}: {len} bytes at {offset}");
    }
    assert_eq!(read_all(disk), model);
    // Reads of ranges other than those written.
    for &(offset, len) in &[(1u64, 1u64), (4095, 2), (700, 9000), (UNIT, 40 * UNIT)] {
        let mut back = vec![0u8; len as usize];
        disk.read(offset, &mut back).expect("read");
        assert_eq!(back, model[offset as usize..(offset + len) as usize]);
    }
}

// ---- round trips ----

#[test]
fn round_trips_on_memory_backend() {
    for seeds in [&[1u8][..], &[1, 2]] {
        let (_, disk) = mem_disk(1 << 20, seeds);
        check_round_trips(&disk);
    }
}

#[test]
fn round_trips_on_file_backend() {
    let dir = tempfile::tempdir().expect("tempdir");
    check_round_trips(&file_disk(dir.path(), "one", 1 << 20, &[1]));
    check_round_trips(&file_disk(dir.path(), "two", 1 << 20, &[1, 2]));
}

/// `write_in_place` stores exactly what `write` stores, for one and two layers, over aligned,
/// unaligned, sub-sector and multi-chunk ranges; its buffer ends up holding ciphertext.
#[test]
fn write_in_place_stores_the_same_bytes_as_write() {
    for seeds in [&[7u8][..], &[7, 9]] {
        let size = 4 << 20;
        let (copied, by_copy) = mem_disk(size, seeds);
        let (in_place, by_place) = mem_disk(size, seeds);
        let cases: &[(u64, u64)] = &[
            (0, UNIT),
            (512, 512),
            (13, 7),
            (UNIT - 100, 200),
            (5 * UNIT + 4000, 2 * UNIT + 500),
            (3, 300 * 1024 + 11),
            (8 * UNIT, 600 * UNIT),
            (size - 3 * UNIT - 1, 3 * UNIT + 1),
        ];
        for (n, &(offset, len)) in cases.iter().enumerate() {
            let data = pattern(n as u64 + 40, len as usize);
            by_copy.write(offset, &data, n % 2 == 0).expect("write");
            let mut buf = data.clone();
            by_place
                .write_in_place(offset, &mut buf, n % 2 == 0)
                .expect("write in place");
            if len >= 2 * UNIT {
                assert_ne!(
                    buf, data,
                    "case {n}: whole units were encrypted in the buffer"
                );
            }
        }
        assert_eq!(read_all(&by_place), read_all(&by_copy));
        for unit in 0..size / UNIT {
            assert_eq!(
                stored_unit(&*in_place, unit),
                stored_unit(&*copied, unit),
                "unit {unit}, {} layer(s)",
                seeds.len()
            );
        }
    }
}

#[test]
fn odd_size_disk_keeps_its_last_partial_unit() {
    // The last unit is only one sector of virtual disk.
    let size = 128 * UNIT + 512;
    let (_, disk) = mem_disk(size, &[5]);
    check_round_trips(&disk);
    disk.write(size - 512, &[0xee; 512], false).expect("write");
    disk.resize(size + UNIT).expect("grow");
    let mut tail = vec![1u8; UNIT as usize];
    disk.read(size, &mut tail).expect("read");
    assert!(
        tail.iter().all(|&b| b == 0),
        "grown space reads zeros, also in the old last unit"
    );
}

#[test]
fn reopen_after_drop_reads_the_same_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("disk");
    let data = pattern(9, 200_000);
    {
        let disk = Disk::create(
            Arc::new(FileBackend::create(&path).expect("file")),
            DiskId([1; 16]),
            1 << 20,
            layers(&[1, 2]),
        )
        .expect("create");
        disk.write(12345, &data, false).expect("write");
        disk.flush().expect("flush");
    }
    let backend = Arc::new(FileBackend::open(&path).expect("open file"));
    let header = Disk::read_header(backend.as_ref()).expect("header");
    assert_eq!(header.layers, vec![wrap("kek1"), wrap("kek2")]);
    let disk = Disk::open(backend, keys(&[1, 2])).expect("open");
    let mut back = vec![0u8; data.len()];
    disk.read(12345, &mut back).expect("read");
    assert_eq!(back, data);
}

// ---- thin provisioning ----

#[test]
fn trim_and_write_zeroes_read_zeros_and_free_units() {
    let size = 64 * UNIT;
    let (backend, disk) = mem_disk(size, &[1, 2]);
    let mut model = pattern(3, size as usize);
    disk.write(0, &model, false).expect("fill");
    assert_eq!(backend.allocated_pages(), 64 + 1, "64 units and slot A");

    let zero = |model: &mut Vec<u8>, offset: u64, len: u64| {
        model[offset as usize..(offset + len) as usize].fill(0)
    };
    disk.trim(4 * UNIT, 4 * UNIT).expect("trim aligned");
    zero(&mut model, 4 * UNIT, 4 * UNIT);
    assert_eq!(backend.allocated_pages(), 61);
    disk.trim(10 * UNIT + 100, 2 * UNIT)
        .expect("trim unaligned");
    zero(&mut model, 10 * UNIT + 100, 2 * UNIT);
    assert_eq!(backend.allocated_pages(), 60, "one whole unit punched");
    disk.write_zeroes(20 * UNIT, 3 * UNIT, false, false)
        .expect("zeroes");
    zero(&mut model, 20 * UNIT, 3 * UNIT);
    assert_eq!(backend.allocated_pages(), 57);
    disk.write_zeroes(30 * UNIT, 3 * UNIT + 512, true, true)
        .expect("zeroes, no hole");
    zero(&mut model, 30 * UNIT, 3 * UNIT + 512);
    assert_eq!(
        backend.allocated_pages(),
        57,
        "no_hole keeps units allocated"
    );
    assert_ne!(
        stored_unit(backend.as_ref(), 31),
        vec![0u8; DATA_UNIT_LEN],
        "zeros are stored encrypted"
    );
    // Zeroing the rest of a partly zero unit makes it a hole.
    disk.trim(10 * UNIT, 100).expect("trim rest");
    zero(&mut model, 10 * UNIT, 100);
    assert_eq!(backend.allocated_pages(), 56);
    // Zeroing inside a hole stores nothing.
    disk.write_zeroes(5 * UNIT + 7, 9, false, false)
        .expect("zero in hole");
    assert_eq!(backend.allocated_pages(), 56);
    assert_eq!(read_all(&disk), model);
    disk.trim(0, size).expect("trim all");
    assert_eq!(backend.allocated_pages(), 1, "only the header remains");
    assert_eq!(read_all(&disk), vec![0u8; size as usize]);
}

fn hole(len: u64) -> Extent {
    Extent {
        len,
        hole: true,
        zero: true,
    }
}

fn data(len: u64) -> Extent {
    Extent {
        len,
        hole: false,
        zero: false,
    }
}

fn check_block_status(disk: &Disk) {
    let size = disk.size();
    assert_eq!(
        disk.block_status(0, size).expect("status"),
        vec![hole(size)]
    );
    assert_eq!(disk.block_status(0, 0).expect("status"), vec![]);
    disk.write(2 * UNIT, &[1u8; DATA_UNIT_LEN], false)
        .expect("write");
    disk.write(5 * UNIT + 100, &[1u8; 10], false)
        .expect("write");
    disk.write_zeroes(8 * UNIT, 2 * UNIT, true, false)
        .expect("no-hole zeroes");
    assert_eq!(
        disk.block_status(0, 12 * UNIT).expect("status"),
        vec![
            hole(2 * UNIT),
            data(UNIT),
            hole(2 * UNIT),
            data(UNIT),
            hole(2 * UNIT),
            data(2 * UNIT),
            hole(2 * UNIT),
        ]
    );
    // Unaligned queries are clipped to the range asked for.
    assert_eq!(
        disk.block_status(2 * UNIT + 10, UNIT).expect("status"),
        vec![data(UNIT - 10), hole(10)]
    );
    assert_eq!(
        disk.block_status(UNIT + 1, 2).expect("status"),
        vec![hole(2)]
    );
    disk.trim(2 * UNIT, UNIT).expect("trim");
    disk.trim(8 * UNIT, 2 * UNIT).expect("trim");
    assert_eq!(
        disk.block_status(0, 12 * UNIT).expect("status"),
        vec![hole(5 * UNIT), data(UNIT), hole(6 * UNIT)]
    );
    let all = disk.block_status(0, size).expect("status");
    assert_eq!(all.iter().map(|e| e.len).sum::<u64>(), size);
}

#[test]
fn block_status_on_memory_backend() {
    let (_, disk) = mem_disk(256 * UNIT, &[1]);
    check_block_status(&disk);
}

#[test]
fn block_status_on_file_backend() {
    let dir = tempfile::tempdir().expect("tempdir");
    check_block_status(&file_disk(dir.path(), "disk", 256 * UNIT, &[1]));
}

// ---- ranges and arguments ----

#[test]
fn out_of_range_requests_are_errors_not_panics() {
    let (_, disk) = mem_disk(16 * UNIT, &[1]);
    let size = disk.size();
    let mut buf = [0u8; 2];
    let checks: Vec<Result<(), StoreError>> = vec![
        disk.read(size - 1, &mut buf),
        disk.read(u64::MAX, &mut buf),
        disk.write(size, &[1], false),
        disk.write(u64::MAX - 1, &[1, 2, 3], true),
        disk.trim(size - 10, 11),
        disk.trim(1, u64::MAX),
        disk.write_zeroes(size + 1, 0, false, false),
        disk.block_status(0, size + 1).map(drop),
        disk.block_status(u64::MAX, u64::MAX).map(drop),
    ];
    for (n, result) in checks.into_iter().enumerate() {
        let err = result.expect_err("must fail");
        assert!(
            matches!(err, StoreError::OutOfRange { .. }),
            "case {n}: {err:?}"
        );
        assert_eq!(err.io_kind(), io::ErrorKind::InvalidInput, "case {n}");
        assert_eq!(io::Error::from(err).kind(), io::ErrorKind::InvalidInput);
    }
    // Empty requests at the very end are fine.
    disk.read(size, &mut []).expect("empty read");
    disk.write(size, &[], true).expect("empty write");
    disk.trim(size, 0).expect("empty trim");
}

#[test]
fn create_checks_its_arguments() {
    let create = |backend: Arc<dyn Backend>, size, layers| {
        Disk::create(backend, DiskId([0; 16]), size, layers).expect_err("must fail")
    };
    let mem = || Arc::new(MemoryBackend::new()) as Arc<dyn Backend>;
    assert!(matches!(
        create(mem(), 1000, layers(&[1])),
        StoreError::InvalidSize { size: 1000 }
    ));
    assert!(matches!(
        create(mem(), !511, layers(&[1])),
        StoreError::InvalidSize { .. }
    ));
    assert!(matches!(
        create(mem(), 4096, vec![]),
        StoreError::LayerCount { count: 0, .. }
    ));
    assert!(matches!(
        create(mem(), 4096, layers(&[1, 2, 3])),
        StoreError::LayerCount { count: 3, .. }
    ));
    assert!(matches!(
        create(mem(), 4096, layers(&[1, 1])),
        StoreError::DuplicateKey
    ));
    let used = MemoryBackend::new();
    used.write_at(&[1], 0).expect("write");
    let err = create(Arc::new(used), 4096, layers(&[1]));
    assert!(matches!(err, StoreError::NotEmpty { len: 1 }), "{err:?}");
    assert_eq!(err.io_kind(), io::ErrorKind::AlreadyExists);
    let mut big = layers(&[1]);
    big[0].1.wrapped_key = vec![0; 5000];
    assert!(matches!(
        create(mem(), 4096, big),
        StoreError::EncodeHeader(FormatError::BodyTooLong { .. })
    ));
}

#[test]
fn debug_output_has_no_key_material() {
    let (_, disk) = mem_disk(4096, &[0xab]);
    let shown = format!("{disk:?} {:?}", disk.header());
    for window in key_bytes(0xab).windows(3) {
        let hex: String = window.iter().map(|b| format!("{b:02x}")).collect();
        assert!(!shown.contains(&hex), "{hex} in {shown}");
    }
    assert!(shown.contains("Disk"));
}

// ---- header updates ----

#[test]
fn resize_grows_and_persists() {
    let (backend, disk) = mem_disk(8 * UNIT, &[1]);
    disk.write(0, &pattern(1, 8 * UNIT as usize), false)
        .expect("write");
    assert!(matches!(
        disk.resize(4 * UNIT),
        Err(StoreError::Shrink { .. })
    ));
    assert!(matches!(
        disk.resize(9 * UNIT + 1),
        Err(StoreError::InvalidSize { .. })
    ));
    assert!(matches!(
        disk.write(8 * UNIT, &[1], false),
        Err(StoreError::OutOfRange { .. })
    ));
    disk.resize(8 * UNIT).expect("same size is a no-op");
    assert_eq!(disk.header().generation, 1);
    disk.resize(20 * UNIT + 512).expect("grow");
    assert_eq!(disk.size(), 20 * UNIT + 512);
    let mut grown = vec![1u8; 12 * UNIT as usize + 512];
    disk.read(8 * UNIT, &mut grown).expect("read grown");
    assert!(grown.iter().all(|&b| b == 0));
    disk.write(20 * UNIT, &[7u8; 512], false)
        .expect("write at new end");
    let header = disk.header();
    assert_eq!((header.size, header.generation), (20 * UNIT + 512, 2));
    drop(disk);
    // The resize is durable on its own: no flush needed.
    let reopened = Disk::open(Arc::new(backend.durable_image()), keys(&[1])).expect("open");
    assert_eq!(reopened.size(), 20 * UNIT + 512);
    assert_eq!(reopened.header().generation, 2);
}

#[test]
fn rewrap_then_reopen_with_the_same_deks() {
    let (backend, disk) = mem_disk(16 * UNIT, &[1, 2]);
    let data = pattern(5, 16 * UNIT as usize);
    disk.write(0, &data, false).expect("write");
    disk.flush().expect("flush");
    let before = backend.to_vec();
    assert!(matches!(
        disk.rewrap(vec![wrap("only one")]),
        Err(StoreError::LayerCount {
            count: 1,
            expected: 2
        })
    ));
    disk.rewrap(vec![wrap("new0"), wrap("new1")])
        .expect("rewrap");
    disk.rewrap(vec![wrap("newer0"), wrap("newer1")])
        .expect("rewrap again");
    let after = backend.to_vec();
    assert_eq!(
        before[HEADER_REGION_LEN..],
        after[HEADER_REGION_LEN..],
        "no data touched"
    );
    let header = Disk::read_header(backend.as_ref()).expect("header");
    assert_eq!(header.generation, 3);
    assert_eq!(header.layers, vec![wrap("newer0"), wrap("newer1")]);
    assert_eq!(header, disk.header());
    let (_, slot) = format::decode_region(&after[..HEADER_REGION_LEN]).expect("decode");
    assert_eq!(slot, Slot::A, "generation 3 went back to slot A");
    drop(disk);
    let disk = Disk::open(Arc::new(backend.durable_image()), keys(&[1, 2])).expect("reopen");
    assert_eq!(read_all(&disk), data);
    drop(disk);

    // A disk nobody has open is re-wrapped without its keys, just as durably.
    assert!(matches!(
        Disk::rewrap_closed(backend.as_ref(), vec![wrap("one")]),
        Err(StoreError::LayerCount { .. })
    ));
    Disk::rewrap_closed(backend.as_ref(), vec![wrap("closed0"), wrap("closed1")])
        .expect("rewrap closed");
    let durable = backend.durable_image();
    let header = Disk::read_header(&durable).expect("header");
    assert_eq!(header.generation, 4);
    assert_eq!(header.layers, vec![wrap("closed0"), wrap("closed1")]);
    assert_eq!(
        durable.to_vec()[HEADER_REGION_LEN..],
        before[HEADER_REGION_LEN..]
    );
    let disk = Disk::open(Arc::new(durable), keys(&[1, 2])).expect("reopen");
    assert_eq!(read_all(&disk), data);
}

// ---- keys ----

#[test]
fn wrong_keys_are_refused_cleanly() {
    let (backend, disk) = mem_disk(16 * UNIT, &[1, 2]);
    disk.write(0, &[0x42; DATA_UNIT_LEN], true).expect("write");
    let backend: Arc<dyn Backend> = backend;
    let open = |seeds: &[u8]| Disk::open(backend.clone(), keys(seeds)).expect_err("must fail");
    assert!(matches!(
        open(&[1]),
        StoreError::KeyCount {
            expected: 2,
            got: 1
        }
    ));
    assert!(matches!(open(&[1, 3]), StoreError::WrongKey { layer: 1 }));
    assert!(matches!(open(&[2, 1]), StoreError::WrongKey { layer: 0 }));
    let err = open(&[9, 2]);
    assert_eq!(err.io_kind(), io::ErrorKind::InvalidInput);
    Disk::open(backend.clone(), keys(&[1, 2])).expect("the right keys open");

    // XTS has no integrity: the same stored unit under another key decrypts to other bytes.
    let mut raw = stored_unit(backend.as_ref(), 0);
    let wrong = SectorCipher::new(key(7)).expect("cipher");
    wrong.decrypt_unit(UnitIndex(0), &mut raw).expect("decrypt");
    let right = SectorCipher::new(key(1)).expect("cipher");
    right.decrypt_unit(UnitIndex(0), &mut raw).expect("decrypt");
    assert_ne!(raw, vec![0x42; DATA_UNIT_LEN]);
}

// ---- header damage and format ----

/// A disk whose slots hold generation 3 (A) and 2 (B).
fn disk_with_three_generations() -> Arc<MemoryBackend> {
    let (backend, disk) = mem_disk(16 * UNIT, &[1]);
    disk.rewrap(vec![wrap("gen2")]).expect("rewrap");
    disk.rewrap(vec![wrap("gen3")]).expect("rewrap");
    backend
}

fn damaged(backend: &MemoryBackend, at: &[u64]) -> MemoryBackend {
    let image = backend.durable_image();
    for &pos in at {
        let mut b = [0u8];
        image.read_at(&mut b, pos).expect("read");
        image.write_at(&[b[0] ^ 0x01], pos).expect("write");
    }
    image
}

#[test]
fn header_slot_selection_and_damage() {
    let backend = disk_with_three_generations();
    let header = Disk::read_header(backend.as_ref()).expect("header");
    assert_eq!((header.generation, &header.layers[0]), (3, &wrap("gen3")));

    // Slot A (generation 3) damaged: slot B (generation 2) is used.
    let a_damaged = damaged(&backend, &[100]);
    let header = Disk::read_header(&a_damaged).expect("slot B");
    assert_eq!((header.generation, &header.layers[0]), (2, &wrap("gen2")));
    Disk::open(Arc::new(a_damaged), keys(&[1])).expect("opens from slot B");

    // Slot B damaged: A is newer anyway.
    let b_damaged = damaged(&backend, &[SLOT_LEN as u64 + 40]);
    assert_eq!(Disk::read_header(&b_damaged).expect("slot A").generation, 3);

    // Both damaged: a clean error naming both.
    let both = damaged(&backend, &[30, SLOT_LEN as u64 + 30]);
    let err = Disk::read_header(&both).expect_err("no header");
    assert!(
        matches!(
            err,
            StoreError::InvalidHeader(FormatError::NoIntactSlot {
                a: format::SlotDamage::Checksum,
                b: format::SlotDamage::Checksum
            })
        ),
        "{err:?}"
    );
    assert_eq!(err.io_kind(), io::ErrorKind::InvalidData);
    assert!(Disk::open(Arc::new(both), keys(&[1])).is_err());

    // Never formatted.
    let err = Disk::read_header(&MemoryBackend::new()).expect_err("empty");
    assert!(matches!(
        err,
        StoreError::InvalidHeader(FormatError::NotFormatted)
    ));
}

#[test]
fn unknown_version_and_cipher_are_refused() {
    let backend = disk_with_three_generations();
    // A slot from a future format version: the whole disk is refused, even though the other
    // slot is intact.
    let future = backend.durable_image();
    future
        .write_at(&2u32.to_le_bytes(), SLOT_LEN as u64 + 8)
        .expect("write");
    let err = Disk::read_header(&future).expect_err("future version");
    assert!(
        matches!(
            err,
            StoreError::InvalidHeader(FormatError::UnsupportedVersion {
                slot: Slot::B,
                version: 2
            })
        ),
        "{err:?}"
    );

    // An intact slot naming an unknown cipher.
    let mut region = vec![0u8; HEADER_REGION_LEN];
    backend.read_at(&mut region, 0).expect("read");
    let (mut header, _) = format::decode_region(&region).expect("decode");
    header.generation = 10;
    let mut slot = format::encode_slot(&header).expect("encode");
    // The first layer's cipher id follows disk id, size, unit length, data offset, count.
    let cipher_at = 24 + 16 + 8 + 4 + 8 + 1;
    assert_eq!(slot[cipher_at], format::CIPHER_AES_256_XTS_PLAIN64);
    slot[cipher_at] = 9;
    let body_len = u32::from_le_bytes(slot[12..16].try_into().expect("4 bytes")) as usize;
    let sum = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &slot[..24 + body_len]);
    slot[24 + body_len..24 + body_len + 32].copy_from_slice(sum.as_ref());
    let image = backend.durable_image();
    image.write_at(&slot, SLOT_LEN as u64).expect("write");
    let err = Disk::read_header(&image).expect_err("unknown cipher");
    assert!(
        matches!(
            err,
            StoreError::InvalidHeader(FormatError::UnknownCipher { layer: 0, id: 9 })
        ),
        "{err:?}"
    );
}

/// Keys, disk id and wrap records of the committed golden header.
fn golden_layers() -> Vec<(XtsKey, WrapLayer)> {
    vec![
        (key(0x11), wrap("golden-layer-0")),
        (key(0x22), wrap("golden-layer-1")),
    ]
}
const GOLDEN_ID: DiskId = DiskId(*b"sealdisk-golden!");
const GOLDEN_PATH: &str = "tests/data/disk-header-v1.bin";

/// Regenerates `tests/data/disk-header-v1.bin`: only when the format version changes (and
/// then under a new name, keeping the old file and its test). Run with
/// `cargo test -p blockstore --test store -- --ignored write_golden_header`.
#[test]
#[ignore = "writes the committed golden file"]
fn write_golden_header() {
    let (backend, disk) = {
        let backend = Arc::new(MemoryBackend::new());
        let disk =
            Disk::create(backend.clone(), GOLDEN_ID, 1 << 30, golden_layers()).expect("create");
        (backend, disk)
    };
    disk.rewrap(vec![wrap("golden-rewrapped-0"), wrap("golden-rewrapped-1")])
        .expect("rewrap");
    let bytes = backend.to_vec();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(GOLDEN_PATH);
    std::fs::write(path, &bytes[..HEADER_REGION_LEN]).expect("write golden file");
}

#[test]
fn an_old_file_still_opens() {
    let golden: &[u8] = include_bytes!("data/disk-header-v1.bin");
    assert_eq!(golden.len(), HEADER_REGION_LEN);
    let backend = Arc::new(MemoryBackend::from_bytes(golden));
    let header = Disk::read_header(backend.as_ref()).expect("golden header");
    let expected_layers = vec![wrap("golden-rewrapped-0"), wrap("golden-rewrapped-1")];
    assert_eq!(header.disk_id, GOLDEN_ID);
    assert_eq!(header.size, 1 << 30);
    assert_eq!(header.generation, 2);
    assert_eq!(header.data_offset, DATA_OFFSET);
    assert_eq!(header.layers, expected_layers);
    // Slot A still holds generation 1 with the original wrap records.
    let (first, _) = format::decode_region(&[&golden[..SLOT_LEN], &[0u8; SLOT_LEN][..]].concat())
        .expect("slot A alone");
    assert_eq!(first.generation, 1);
    assert_eq!(
        first.layers,
        golden_layers().into_iter().map(|l| l.1).collect::<Vec<_>>()
    );
    // Today's encoder writes the same bytes.
    assert_eq!(
        format::encode_slot(&header).expect("encode"),
        golden[SLOT_LEN..]
    );
    // The key check values still accept the keys, and the disk works.
    let keys: Vec<XtsKey> = golden_layers().into_iter().map(|l| l.0).collect();
    let disk = Disk::open(backend, keys).expect("golden disk opens");
    disk.write(4096, b"still works", false).expect("write");
    let mut back = [0u8; 11];
    disk.read(4096, &mut back).expect("read");
    assert_eq!(&back, b"still works");
}

// ---- ciphertext ----

#[test]
fn stored_unit_is_the_sector_cipher_output_and_xts_mode_decrypts_it() {
    let plain = pattern(77, DATA_UNIT_LEN);
    for seeds in [&[0x31u8][..], &[0x31, 0x32]] {
        let (backend, disk) = mem_disk(64 * UNIT, seeds);
        for unit in [0u64, 7, 63] {
            disk.write(unit * UNIT, &plain, false).expect("write");
            let stored = stored_unit(backend.as_ref(), unit);

            let mut expected = plain.clone();
            for &s in seeds {
                SectorCipher::new(key(s))
                    .expect("cipher")
                    .encrypt_unit(UnitIndex(unit), &mut expected)
                    .expect("encrypt");
            }
            assert_eq!(stored, expected, "unit {unit}, {} layers", seeds.len());

            let mut theirs = stored.clone();
            for &s in seeds.iter().rev() {
                reference(&key_bytes(s))
                    .decrypt_sector(&mut theirs, get_tweak_default(u128::from(unit)));
            }
            assert_eq!(theirs, plain, "xts-mode decrypts unit {unit}");
        }
        // A sub-unit write lands in the same place of the same unit encryption.
        disk.write(7 * UNIT + 100, b"hello", false).expect("write");
        let mut expected = plain.clone();
        expected[100..105].copy_from_slice(b"hello");
        let mut theirs = stored_unit(backend.as_ref(), 7);
        for &s in seeds.iter().rev() {
            reference(&key_bytes(s)).decrypt_sector(&mut theirs, get_tweak_default(7));
        }
        assert_eq!(theirs, expected);
    }
}

#[test]
fn no_plaintext_in_the_file_and_disks_differ() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text: Vec<u8> = (0..)
        .flat_map(|n: u32| format!("sealdisk plaintext scan, line {n:07}\n").into_bytes())
        .take(1 << 20)
        .collect();
    let mut files = Vec::new();
    for name in ["a", "b"] {
        // Each disk has its own random DEK, as every real disk does.
        let disk = Disk::create(
            Arc::new(FileBackend::create(dir.path().join(name)).expect("file")),
            DiskId([9; 16]),
            4 << 20,
            vec![(XtsKey::generate().expect("key"), wrap("k"))],
        )
        .expect("create");
        disk.write(0, &text, false).expect("aligned write");
        disk.write(2 * 1024 * 1024 + 333, &text[..100_000], false)
            .expect("unaligned write");
        disk.flush().expect("flush");
        files.push(std::fs::read(dir.path().join(name)).expect("read file"));
    }
    let mut windows: Vec<u128> = text
        .windows(16)
        .map(|w| u128::from_le_bytes(w.try_into().expect("16 bytes")))
        .collect();
    windows.sort_unstable();
    windows.dedup();
    // The text has no zero byte, so windows with one (headers' padding, holes) are skipped.
    assert!(!text.contains(&0));
    let hits = |bytes: &[u8]| {
        let mut hits = 0;
        let mut zero_free = 0usize;
        for (end, &b) in bytes.iter().enumerate() {
            zero_free = if b == 0 { 0 } else { zero_free + 1 };
            if zero_free >= 16 {
                let w: [u8; 16] = bytes[end - 15..=end].try_into().expect("16 bytes");
                hits += usize::from(windows.binary_search(&u128::from_le_bytes(w)).is_ok());
            }
        }
        hits
    };
    assert_eq!(hits(&text[..1000]), 1000 - 15, "the scan finds plaintext");
    for file in &files {
        assert_eq!(hits(file), 0, "plaintext windows found in the file");
    }
    let data = |f: &Vec<u8>| f[DATA_OFFSET as usize..DATA_OFFSET as usize + (1 << 20)].to_vec();
    let (a, b) = (data(&files[0]), data(&files[1]));
    let same_blocks = a
        .chunks(16)
        .zip(b.chunks(16))
        .filter(|(x, y)| x == y)
        .count();
    assert_eq!(
        same_blocks, 0,
        "two disks with the same data share ciphertext"
    );
}

// ---- durability and faults ----

#[test]
fn flush_and_fua_make_writes_durable() {
    let (backend, disk) = mem_disk(16 * UNIT, &[1]);
    disk.write(0, &[1u8; 100], false).expect("write");
    disk.write(UNIT, &[2u8; DATA_UNIT_LEN], true)
        .expect("fua write");
    let image = Disk::open(Arc::new(backend.durable_image()), keys(&[1])).expect("open");
    let mut buf = vec![0u8; DATA_UNIT_LEN];
    image.read(UNIT, &mut buf).expect("read");
    assert_eq!(buf, vec![2u8; DATA_UNIT_LEN], "FUA write is durable");
    disk.write(2 * UNIT + 5, &[3u8; 10], false).expect("write");
    disk.flush().expect("flush");
    let image = Disk::open(Arc::new(backend.durable_image()), keys(&[1])).expect("open");
    let mut buf = [0u8; 10];
    image.read(2 * UNIT + 5, &mut buf).expect("read");
    assert_eq!(buf, [3u8; 10], "flushed write is durable");
}

#[test]
fn backend_faults_surface_as_errors_and_keep_the_header() {
    let (backend, disk) = mem_disk(16 * UNIT, &[1]);
    backend.fail_after(Some(0));
    let err = disk.write(0, &[1u8; 10], false).expect_err("fault");
    assert!(matches!(err, StoreError::WriteData { .. }), "{err:?}");
    assert_eq!(err.io_kind(), io::ErrorKind::Other);
    assert!(matches!(disk.flush(), Err(StoreError::Sync(_))));
    assert!(matches!(
        disk.trim(0, UNIT),
        Ok(()) | Err(StoreError::PunchHole { .. })
    ));
    // The header write fails: the committed header is unchanged.
    assert!(matches!(
        disk.rewrap(vec![wrap("x")]),
        Err(StoreError::WriteHeader { slot: Slot::B, .. })
    ));
    assert_eq!(disk.header().generation, 1);
    // The header write succeeds but its sync fails.
    backend.fail_after(Some(1));
    assert!(disk.rewrap(vec![wrap("y")]).is_err());
    assert_eq!(disk.header().layers, vec![wrap("kek1")]);
    backend.fail_after(None);
    disk.rewrap(vec![wrap("z")]).expect("rewrap");
    assert_eq!(disk.header().generation, 2);
    disk.write(0, &[1u8; 10], false).expect("write works again");
}

// ---- concurrency ----

#[test]
fn concurrent_sub_unit_writes_to_one_unit_are_not_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = file_disk(dir.path(), "disk", 8 * UNIT, &[1, 2]);
    // 8 threads each own 512 bytes of every unit and rewrite them over and over: every
    // read-modify-write must keep the other threads' bytes.
    std::thread::scope(|s| {
        for t in 0..8u8 {
            let disk = &disk;
            s.spawn(move || {
                for round in 0..40u8 {
                    for unit in 0..8u64 {
                        let offset = unit * UNIT + u64::from(t) * 512;
                        disk.write(offset, &[round ^ t; 512], false).expect("write");
                    }
                }
            });
        }
    });
    let all = read_all(&disk);
    for unit in 0..8usize {
        for t in 0..8u8 {
            let at = unit * DATA_UNIT_LEN + usize::from(t) * 512;
            assert!(
                all[at..at + 512].iter().all(|&b| b == 39 ^ t),
                "unit {unit}, owner {t}"
            );
        }
    }
}

/// A backend whose writes land 512 bytes at a time with a pause in between, as a real
/// device's may: a read can see a unit half old, half new.
#[derive(Debug, Default)]
struct TearingBackend(MemoryBackend);

impl Backend for TearingBackend {
    fn len(&self) -> io::Result<u64> {
        self.0.len()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_at(buf, offset)
    }
    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        for (i, piece) in data.chunks(512).enumerate() {
            self.0.write_at(piece, offset + 512 * i as u64)?;
            std::thread::yield_now();
        }
        Ok(())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        self.0.punch_hole(offset, len)
    }
    fn allocated(&self, offset: u64, len: u64) -> io::Result<Vec<(u64, u64, bool)>> {
        self.0.allocated(offset, len)
    }
}

#[test]
fn reads_never_see_a_unit_torn_by_writes_to_its_other_bytes() {
    // XTS encrypts 16-byte blocks independently, so a half-stored unit still decrypts right
    // wherever its plaintext did not change, except when the unit was a hole: half-stored
    // ciphertext next to zeros is no longer all zero, and its zero half would decrypt to noise.
    // Units here flip between hole and data by writes and trims of their first 64 bytes while
    // readers check the other bytes, which stay zero.
    let disk = Disk::create(
        Arc::new(TearingBackend::default()),
        DiskId([5; 16]),
        4 * UNIT,
        layers(&[1]),
    )
    .expect("create");
    std::thread::scope(|s| {
        let disk = &disk;
        s.spawn(move || {
            for round in 0..1000u32 {
                let unit = u64::from(round % 4);
                disk.write(unit * UNIT, &[1 + (round % 255) as u8; 64], false)
                    .expect("write");
                disk.trim(unit * UNIT, 64).expect("trim");
            }
        });
        for _ in 0..2 {
            s.spawn(move || {
                let mut buf = vec![0u8; 4 * DATA_UNIT_LEN];
                for _ in 0..300 {
                    disk.read(0, &mut buf).expect("read");
                    for unit in 0..4 {
                        let at = unit * DATA_UNIT_LEN;
                        assert!(
                            buf[at + 64..at + DATA_UNIT_LEN].iter().all(|&b| b == 0),
                            "unit {unit} torn"
                        );
                    }
                    // Sub-unit reads take the other path.
                    let mut small = [1u8; 100];
                    disk.read(UNIT + 1000, &mut small).expect("read");
                    assert!(small.iter().all(|&b| b == 0), "small read torn");
                }
            });
        }
    });
}

#[test]
fn stripes_cover_more_units_than_there_are_locks() {
    // A write spanning more units than stripes locks each stripe once, without deadlock.
    let units = STRIPES as u64 + 300;
    let (_, disk) = mem_disk(units * UNIT, &[1]);
    let data = pattern(4, (units * UNIT) as usize);
    std::thread::scope(|s| {
        let disk = &disk;
        let data = &data;
        s.spawn(move || disk.write(0, data, false).expect("write"));
        s.spawn(move || disk.trim(UNIT * 1000, UNIT * 100).expect("trim"));
        s.spawn(move || {
            disk.write_zeroes(UNIT * 10, UNIT * 1200, true, false)
                .expect("zeroes")
        });
    });
}

// ---- model-based crash consistency ----

#[derive(Clone, Debug)]
enum Op {
    Write {
        offset: u64,
        len: u64,
        seed: u64,
        fua: bool,
    },
    Trim {
        offset: u64,
        len: u64,
    },
    Zeroes {
        offset: u64,
        len: u64,
        no_hole: bool,
    },
    Flush,
    Grow {
        units: u64,
    },
    Rewrap {
        name: u8,
    },
    /// The next operation's backend calls fail after this many succeed; then power is lost.
    Fault {
        after: u64,
        seed: u64,
    },
    Crash {
        seed: u64,
    },
}

fn offset_strategy() -> impl Strategy<Value = u64> {
    prop_oneof![
        (0u64..24).prop_map(|u| u * UNIT),
        (0u64..200).prop_map(|s| s * 512),
        0u64..100_000,
    ]
}

fn len_strategy() -> impl Strategy<Value = u64> {
    prop_oneof![
        (1u64..6).prop_map(|u| u * UNIT),
        (1u64..20).prop_map(|s| s * 512),
        1u64..12_000,
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (offset_strategy(), len_strategy(), any::<u64>(), prop::bool::weighted(0.1))
            .prop_map(|(offset, len, seed, fua)| Op::Write { offset, len, seed, fua }),
        2 => (offset_strategy(), len_strategy()).prop_map(|(offset, len)| Op::Trim { offset, len }),
        2 => (offset_strategy(), len_strategy(), any::<bool>())
            .prop_map(|(offset, len, no_hole)| Op::Zeroes { offset, len, no_hole }),
        3 => Just(Op::Flush),
        1 => (1u64..4).prop_map(|units| Op::Grow { units }),
        1 => any::<u8>().prop_map(|name| Op::Rewrap { name }),
        1 => (0u64..4, any::<u64>()).prop_map(|(after, seed)| Op::Fault { after, seed }),
        2 => any::<u64>().prop_map(|seed| Op::Crash { seed }),
    ]
}

/// What the disk may hold: per unit, the versions a crash may leave (the flushed one and every
/// one written since, the last one current); the size and wrap records likewise.
struct Model {
    units: Vec<Vec<Vec<u8>>>,
    sizes: Vec<u64>,
    layers: Vec<Vec<WrapLayer>>,
}

impl Model {
    fn size(&self) -> u64 {
        *self.sizes.last().expect("a size")
    }

    fn current(&self, unit: usize) -> &[u8] {
        self.units[unit].last().expect("a version")
    }

    /// Applies `f` to the plaintext of `offset..offset + len` as new versions of its units.
    fn apply(&mut self, offset: u64, len: u64, f: &dyn Fn(u64, &mut [u8])) {
        let mut pos = offset;
        let end = offset + len;
        while pos < end {
            let unit = (pos / UNIT) as usize;
            let start = (pos % UNIT) as usize;
            let stop = ((end - unit as u64 * UNIT).min(UNIT)) as usize;
            let mut version = self.current(unit).to_vec();
            f(pos - offset, &mut version[start..stop]);
            if self.units[unit].last() != Some(&version) {
                self.units[unit].push(version);
            }
            pos = unit as u64 * UNIT + stop as u64;
        }
    }

    fn settle(&mut self, offset: u64, len: u64) {
        if len == 0 {
            return;
        }
        let first = (offset / UNIT) as usize;
        let last = ((offset + len - 1) / UNIT) as usize;
        for versions in &mut self.units[first..=last] {
            versions.drain(..versions.len() - 1);
        }
    }

    fn flushed(&mut self) {
        for versions in &mut self.units {
            versions.drain(..versions.len() - 1);
        }
        self.sizes.drain(..self.sizes.len() - 1);
        self.layers.drain(..self.layers.len() - 1);
    }
}

fn write_bytes(seed: u64) -> impl Fn(u64, &mut [u8]) {
    move |at, dst| {
        for (i, b) in dst.iter_mut().enumerate() {
            let x = seed ^ (at + i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            *b = (x >> 56) as u8 ^ (x >> 17) as u8;
        }
    }
}

fn crash_and_check(
    backend: &MemoryBackend,
    seed: u64,
    seeds: &[u8],
    model: &mut Model,
) -> Result<(Arc<MemoryBackend>, Disk), TestCaseError> {
    let image = Arc::new(backend.crash_image(seed));
    let disk = Disk::open(image.clone(), keys(seeds))
        .map_err(|e| TestCaseError::fail(format!("reopen after crash: {e:?}")))?;
    let size = disk.size();
    prop_assert!(
        model.sizes.contains(&size),
        "size {size} not in {:?}",
        model.sizes
    );
    let header = disk.header();
    prop_assert!(model.layers.contains(&header.layers), "wrap records lost");
    let all = read_all(&disk);
    for unit in 0..model.units.len() {
        let versions = &model.units[unit];
        let start = unit * DATA_UNIT_LEN;
        if start as u64 >= size {
            break;
        }
        let end = (start + DATA_UNIT_LEN).min(size as usize);
        let got = &all[start..end];
        prop_assert!(
            versions.iter().any(|v| &v[..end - start] == got),
            "unit {unit} holds none of its {} versions",
            versions.len()
        );
        model.units[unit] = vec![{
            let mut v = vec![0u8; DATA_UNIT_LEN];
            v[..end - start].copy_from_slice(got);
            v
        }];
    }
    model.sizes = vec![size];
    model.layers = vec![header.layers];
    Ok((image, disk))
}

const MODEL_UNITS: u64 = 40;

fn run_model(seeds: &[u8], ops: &[Op]) -> Result<(), TestCaseError> {
    let initial = 24 * UNIT + 1024;
    let (mut backend, mut disk) = {
        let backend = Arc::new(MemoryBackend::new());
        let disk =
            Disk::create(backend.clone(), DiskId([8; 16]), initial, layers(seeds)).expect("create");
        (backend, disk)
    };
    let mut model = Model {
        units: vec![vec![vec![0u8; DATA_UNIT_LEN]]; MODEL_UNITS as usize],
        sizes: vec![initial],
        layers: vec![disk.header().layers],
    };
    let clamp = |offset: u64, len: u64, size: u64| {
        let offset = offset % (size + 1);
        (offset, len.min(size - offset))
    };
    let mut fault: Option<u64> = None;
    for op in ops {
        // A pending fault: arm it for this operation, then lose power after it.
        let crash_seed = fault.take();
        if crash_seed.is_some() && matches!(op, Op::Fault { .. } | Op::Crash { .. }) {
            backend.fail_after(None);
        }
        let size = model.size();
        let result = match op {
            Op::Write {
                offset,
                len,
                seed,
                fua,
            } => {
                let (offset, len) = clamp(*offset, *len, size);
                let mut data = vec![0u8; len as usize];
                write_bytes(*seed)(0, &mut data);
                let result = disk.write(offset, &data, *fua);
                model.apply(offset, len, &write_bytes(*seed));
                if *fua && result.is_ok() {
                    model.settle(offset, len);
                }
                result
            }
            Op::Trim { offset, len } | Op::Zeroes { offset, len, .. } => {
                let (offset, len) = clamp(*offset, *len, size);
                let result = match op {
                    Op::Zeroes { no_hole, .. } => disk.write_zeroes(offset, len, *no_hole, false),
                    _ => disk.trim(offset, len),
                };
                model.apply(offset, len, &|_, dst| dst.fill(0));
                result
            }
            Op::Flush => {
                let result = disk.flush();
                if result.is_ok() {
                    model.flushed();
                }
                result
            }
            Op::Grow { units } => {
                let new_size = (size + units * UNIT).min(MODEL_UNITS * UNIT);
                let result = disk.resize(new_size);
                if result.is_ok() {
                    model.sizes = vec![new_size];
                } else {
                    model.sizes.push(new_size);
                }
                result
            }
            Op::Rewrap { name } => {
                let records: Vec<WrapLayer> = (0..seeds.len())
                    .map(|l| wrap(&format!("r{name}-{l}")))
                    .collect();
                let result = disk.rewrap(records.clone());
                if result.is_ok() {
                    model.layers = vec![records];
                } else {
                    model.layers.push(records);
                }
                result
            }
            Op::Fault { after, seed } => {
                backend.fail_after(Some(*after));
                fault = Some(*seed);
                Ok(())
            }
            Op::Crash { seed } => {
                drop(disk);
                (backend, disk) = crash_and_check(&backend, *seed, seeds, &mut model)?;
                continue;
            }
        };
        if let Some(seed) = crash_seed {
            backend.fail_after(None);
            drop(disk);
            (backend, disk) = crash_and_check(&backend, seed, seeds, &mut model)?;
            continue;
        }
        if let Err(e) = result {
            return Err(TestCaseError::fail(format!("{op:?} failed: {e:?}")));
        }
        // Without a fault, the disk reads exactly the current versions.
        let all = read_all(&disk);
        for (unit, chunk) in all.chunks(DATA_UNIT_LEN).enumerate() {
            prop_assert!(
                chunk == &model.current(unit)[..chunk.len()],
                "unit {} differs from the model after {:?}",
                unit,
                op
            );
        }
    }
    if let Some(seed) = fault {
        backend.fail_after(None);
        drop(disk);
        (backend, disk) = crash_and_check(&backend, seed, seeds, &mut model)?;
    }
    // Finally: everything flushed survives any crash exactly.
    disk.flush()
        .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
    model.flushed();
    drop(disk);
    crash_and_check(&backend, 0, seeds, &mut model)?;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 300,
        ..ProptestConfig::default()
    })]

    #[test]
    fn crash_consistency(
        two_layers in any::<bool>(),
        ops in prop::collection::vec(op_strategy(), 1..40),
    ) {
        let seeds: &[u8] = if two_layers { &[1, 2] } else { &[3] };
        run_model(seeds, &ops)?;
    }
}

#[test]
fn crash_keeps_every_flushed_write_in_a_long_run() {
    // A fixed long sequence on top of the random ones: many writes, flushes and crashes.
    let ops: Vec<Op> = (0..400u64)
        .map(|i| match i % 10 {
            0..=5 => Op::Write {
                offset: (i * 7919) % 100_000,
                len: 1 + (i * 104_729) % 9000,
                seed: i,
                fua: i % 17 == 0,
            },
            6 => Op::Trim {
                offset: (i * 31) % 90_000,
                len: 5000,
            },
            7 => Op::Flush,
            8 if i % 3 == 0 => Op::Crash { seed: i },
            _ => Op::Zeroes {
                offset: i * 13 % 80_000,
                len: 9000,
                no_hole: i % 4 == 0,
            },
        })
        .collect();
    run_model(&[1, 2], &ops).expect("model holds");
}
