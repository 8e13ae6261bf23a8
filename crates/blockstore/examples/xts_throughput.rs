//! Throughput of `SectorCipher::encrypt_units` over 1 MiB, against the pure-Rust `xts-mode`
//! crate measured in the same run. Run with
//! `cargo run --release -p blockstore --example xts_throughput`.

use std::hint::black_box;
use std::time::Instant;

use aes::Aes256;
use aes::cipher::KeyInit;
use blockstore::xts::{DATA_UNIT_LEN, SectorCipher, UnitIndex, XtsKey};
use xts_mode::{Xts128, get_tweak_default};

const BUF: usize = 1 << 20;
const ROUNDS: u32 = 200;

fn mib_per_s(f: &mut dyn FnMut(&mut [u8]), buf: &mut [u8]) -> f64 {
    for _ in 0..10 {
        f(buf); // warm up
    }
    let start = Instant::now();
    for _ in 0..ROUNDS {
        f(black_box(&mut *buf));
    }
    f64::from(ROUNDS) * (BUF as f64 / (1 << 20) as f64) / start.elapsed().as_secs_f64()
}

fn main() {
    let key = XtsKey::generate().expect("key");
    let bytes = *key.expose_bytes();
    let cipher = SectorCipher::new(key).expect("cipher");
    let reference = Xts128::new(
        Aes256::new_from_slice(&bytes[..32]).expect("key 1"),
        Aes256::new_from_slice(&bytes[32..]).expect("key 2"),
    );
    let mut buf = vec![0x5au8; BUF];

    let ours = mib_per_s(
        &mut |b| cipher.encrypt_units(UnitIndex(1234), b).expect("encrypt"),
        &mut buf,
    );
    let per_unit = mib_per_s(
        &mut |b| {
            for (n, chunk) in b.chunks_exact_mut(DATA_UNIT_LEN).enumerate() {
                cipher
                    .encrypt_unit(UnitIndex(1234 + n as u64), chunk)
                    .expect("encrypt");
            }
        },
        &mut buf,
    );
    let theirs = mib_per_s(
        &mut |b| reference.encrypt_area(b, DATA_UNIT_LEN, 1234, get_tweak_default),
        &mut buf,
    );
    println!("encrypt_units (AWS-LC), 1 MiB runs:  {ours:8.0} MiB/s");
    println!("encrypt_unit x256 (AWS-LC, pooled):  {per_unit:8.0} MiB/s");
    println!("xts-mode + aes (pure Rust):          {theirs:8.0} MiB/s");
    println!("ratio AWS-LC / xts-mode:             {:8.2}", ours / theirs);
}
