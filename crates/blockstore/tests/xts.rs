//! Known-answer, cross-check and contract tests of `blockstore::xts`.

use aes::Aes256;
use aes::cipher::KeyInit;
use blockstore::xts::{DATA_UNIT_LEN, SectorCipher, UnitIndex, XtsError, XtsKey};
use xts_mode::{Xts128, get_tweak_default};

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length: {s}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

fn random<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    aws_lc_rs::rand::fill(&mut out).expect("rng");
    out
}

fn cipher(key: &[u8]) -> SectorCipher {
    SectorCipher::new(XtsKey::from_bytes(key).expect("valid key")).expect("cipher")
}

fn reference(key: &[u8]) -> Xts128<Aes256> {
    Xts128::new(
        Aes256::new_from_slice(&key[..32]).expect("key 1"),
        Aes256::new_from_slice(&key[32..]).expect("key 2"),
    )
}

// ---- IEEE 1619-2007 Annex B, vectors 10-14 ----

const IEEE_KEY: &str = "2718281828459045235360287471352662497757247093699959574966967627\
                        3141592653589793238462643383279502884197169399375105820974944592";

/// (vector number, data unit sequence number, ciphertext) from `tests/data/ieee1619-aes256.txt`.
fn ieee_vectors() -> Vec<(u32, u64, Vec<u8>)> {
    include_str!("data/ieee1619-aes256.txt")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 3, "{l}");
            (
                f[0].parse().expect("vector number"),
                u64::from_str_radix(f[1], 16).expect("sequence number"),
                hex(f[2]),
            )
        })
        .collect()
}

fn ieee_plaintext() -> Vec<u8> {
    (0..512u32).map(|i| (i % 256) as u8).collect()
}

#[test]
fn ieee1619_vectors_10_to_14() {
    let key = hex(IEEE_KEY);
    let c = cipher(&key);
    let vectors = ieee_vectors();
    assert_eq!(
        vectors.iter().map(|v| v.0).collect::<Vec<_>>(),
        [10, 11, 12, 13, 14]
    );
    for (n, seq, ct) in vectors {
        let tweak = UnitIndex(seq).tweak();
        let mut buf = ieee_plaintext();
        c.encrypt_with_raw_tweak(&tweak, &mut buf).expect("encrypt");
        assert_eq!(buf, ct, "vector {n} encrypt");
        c.decrypt_with_raw_tweak(&tweak, &mut buf).expect("decrypt");
        assert_eq!(buf, ieee_plaintext(), "vector {n} decrypt");
    }
}

/// Guards the transcription of the IEEE vectors: the independent pure-Rust implementation
/// must agree with the file, not only AWS-LC.
#[test]
fn ieee1619_vectors_agree_with_xts_mode() {
    let xts = reference(&hex(IEEE_KEY));
    for (n, seq, ct) in ieee_vectors() {
        let mut buf = ieee_plaintext();
        xts.encrypt_sector(&mut buf, get_tweak_default(u128::from(seq)));
        assert_eq!(buf, ct, "vector {n} (xts-mode)");
    }
}

// ---- NIST CAVP XTSGenAES256 subset ----

#[derive(Debug, Default)]
struct CavpVector {
    encrypt: bool,
    count: u32,
    bits: usize,
    key: Vec<u8>,
    tweak: Vec<u8>,
    pt: Vec<u8>,
    ct: Vec<u8>,
}

fn cavp_vectors() -> Vec<CavpVector> {
    let mut out = Vec::new();
    let mut encrypt = true;
    let mut cur: Option<CavpVector> = None;
    for line in include_str!("data/XTSGenAES256-subset.rsp")
        .lines()
        .map(str::trim)
    {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            encrypt = line == "[ENCRYPT]";
            continue;
        }
        let (name, value) = line.split_once(" = ").expect("name = value");
        if name == "COUNT" {
            out.extend(cur.take());
            cur = Some(CavpVector {
                encrypt,
                count: value.parse().expect("count"),
                ..CavpVector::default()
            });
            continue;
        }
        let v = cur.as_mut().expect("field before COUNT");
        match name {
            "DataUnitLen" => v.bits = value.parse().expect("bits"),
            "Key" => v.key = hex(value),
            "i" => v.tweak = hex(value),
            "PT" => v.pt = hex(value),
            "CT" => v.ct = hex(value),
            other => panic!("unknown field {other}"),
        }
    }
    out.extend(cur);
    out
}

#[test]
fn nist_cavp_xtsgenaes256_subset() {
    let vectors = cavp_vectors();
    assert_eq!(vectors.len(), 30);
    assert_eq!(vectors.iter().filter(|v| v.encrypt).count(), 20);
    for v in &vectors {
        let what = format!(
            "{} COUNT {}",
            if v.encrypt { "ENCRYPT" } else { "DECRYPT" },
            v.count
        );
        assert_eq!(v.bits, 8 * v.pt.len(), "{what}");
        assert_eq!(v.pt.len(), v.ct.len(), "{what}");
        let c = cipher(&v.key);
        let tweak: [u8; 16] = v.tweak.as_slice().try_into().expect("16-byte tweak");
        if v.encrypt {
            let mut buf = v.pt.clone();
            c.encrypt_with_raw_tweak(&tweak, &mut buf).expect("encrypt");
            assert_eq!(buf, v.ct, "{what}");
        } else {
            let mut buf = v.ct.clone();
            c.decrypt_with_raw_tweak(&tweak, &mut buf).expect("decrypt");
            assert_eq!(buf, v.pt, "{what}");
        }
    }
}

// ---- cross-check against xts-mode ----

#[test]
fn agrees_with_xts_mode_on_random_units() {
    // 10,000 triples; about 1.5 s in a debug build (dependencies are built at opt-level 2).
    let iterations = 10_000;
    for i in 0..iterations {
        let key: [u8; 64] = random();
        let Ok(key_obj) = XtsKey::from_bytes(&key) else {
            continue; // equal halves: probability 2^-256
        };
        let unit = UnitIndex(u64::from_le_bytes(random()));
        let pt: [u8; DATA_UNIT_LEN] = random();
        let c = SectorCipher::new(key_obj).expect("cipher");

        let mut ours = pt;
        c.encrypt_unit(unit, &mut ours).expect("encrypt");
        let mut theirs = pt;
        reference(&key).encrypt_sector(&mut theirs, get_tweak_default(u128::from(unit.0)));
        assert_eq!(ours, theirs, "iteration {i}, unit {unit:?}");

        c.decrypt_unit(unit, &mut ours).expect("decrypt");
        assert_eq!(ours, pt, "iteration {i} round trip");
    }
}

#[test]
fn run_of_units_matches_unit_by_unit_and_xts_mode() {
    let key: [u8; 64] = random();
    let c = cipher(&key);
    let pt: Vec<u8> = (0..8 * DATA_UNIT_LEN)
        .map(|i| (i * 31 % 251) as u8)
        .collect();
    let first = UnitIndex(1_000_000);

    let mut run = pt.clone();
    c.encrypt_units(first, &mut run).expect("encrypt run");

    let mut single = pt.clone();
    for (n, chunk) in single.chunks_exact_mut(DATA_UNIT_LEN).enumerate() {
        c.encrypt_unit(UnitIndex(first.0 + n as u64), chunk)
            .expect("encrypt unit");
    }
    assert_eq!(run, single);

    let mut theirs = pt.clone();
    reference(&key).encrypt_area(
        &mut theirs,
        DATA_UNIT_LEN,
        u128::from(first.0),
        get_tweak_default,
    );
    assert_eq!(run, theirs);

    c.decrypt_units(first, &mut run).expect("decrypt run");
    assert_eq!(run, pt);
}

// ---- key and buffer contract ----

#[test]
fn key_with_equal_halves_is_rejected() {
    let mut key = [0x5au8; 64];
    assert!(matches!(
        XtsKey::from_bytes(&key),
        Err(XtsError::EqualKeyHalves)
    ));
    key[63] ^= 1;
    XtsKey::from_bytes(&key).expect("halves differ by one bit");
    let half: [u8; 32] = random();
    let doubled: Vec<u8> = half.iter().chain(&half).copied().collect();
    assert!(matches!(
        XtsKey::from_bytes(&doubled),
        Err(XtsError::EqualKeyHalves)
    ));
}

#[test]
fn key_of_wrong_length_is_rejected() {
    for len in [0, 16, 32, 48, 63, 65, 128] {
        let bytes: Vec<u8> = (0..len).map(|i| i as u8).collect();
        assert!(
            matches!(XtsKey::from_bytes(&bytes), Err(XtsError::KeyLength { len: l }) if l == len),
            "length {len}"
        );
    }
}

#[test]
fn generated_keys_are_valid_and_distinct() {
    let a = XtsKey::generate().expect("generate");
    let b = XtsKey::generate().expect("generate");
    assert_ne!(a.expose_bytes(), b.expose_bytes());
    assert_ne!(a.expose_bytes()[..32], a.expose_bytes()[32..]);
    XtsKey::from_bytes(a.expose_bytes()).expect("generated key is acceptable");
}

#[test]
fn wrong_buffer_lengths_are_errors_not_panics() {
    let c = SectorCipher::new(XtsKey::generate().expect("key")).expect("cipher");
    for len in [
        0,
        1,
        16,
        512,
        DATA_UNIT_LEN - 1,
        DATA_UNIT_LEN + 1,
        2 * DATA_UNIT_LEN,
    ] {
        let mut buf = vec![0u8; len];
        assert!(
            matches!(
                c.encrypt_unit(UnitIndex(0), &mut buf),
                Err(XtsError::BufferLength { .. })
            ),
            "encrypt_unit {len}"
        );
        assert!(
            matches!(
                c.decrypt_unit(UnitIndex(0), &mut buf),
                Err(XtsError::BufferLength { .. })
            ),
            "decrypt_unit {len}"
        );
    }
    for len in [
        1,
        16,
        DATA_UNIT_LEN - 1,
        DATA_UNIT_LEN + 16,
        3 * DATA_UNIT_LEN - 1,
    ] {
        let mut buf = vec![0u8; len];
        assert!(
            matches!(
                c.encrypt_units(UnitIndex(0), &mut buf),
                Err(XtsError::BufferLength { .. })
            ),
            "encrypt_units {len}"
        );
        assert!(
            buf.iter().all(|&b| b == 0),
            "buffer untouched on error ({len})"
        );
    }
    let mut empty = [];
    c.encrypt_units(UnitIndex(7), &mut empty)
        .expect("empty run is a no-op");
}

#[test]
fn round_trip_and_units_differ() {
    let c = SectorCipher::new(XtsKey::generate().expect("key")).expect("cipher");
    let pt = [0x11u8; DATA_UNIT_LEN];
    let mut a = pt;
    let mut b = pt;
    c.encrypt_unit(UnitIndex(41), &mut a).expect("encrypt");
    c.encrypt_unit(UnitIndex(42), &mut b).expect("encrypt");
    assert_ne!(a, pt);
    assert_ne!(a, b, "same plaintext in two units must differ");
    // Within a unit, equal plaintext blocks also encrypt differently.
    assert_ne!(a[..16], a[16..32]);
    let mut wrong = a;
    c.decrypt_unit(UnitIndex(42), &mut wrong).expect("decrypt");
    assert_ne!(
        wrong, pt,
        "decrypting under the wrong unit must not give the plaintext"
    );
    c.decrypt_unit(UnitIndex(41), &mut a).expect("decrypt");
    c.decrypt_unit(UnitIndex(42), &mut b).expect("decrypt");
    assert_eq!(a, pt);
    assert_eq!(b, pt);
}
