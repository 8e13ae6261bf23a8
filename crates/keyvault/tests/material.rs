//! Key material against outside references: the Wycheproof vectors (RSA-OAEP and PKCS#1 v1.5
//! decryption; PKCS#1 v1.5, PSS and ECDSA verification), the OpenSSL command line in both
//! directions, and round trips over every key size and algorithm.
//!
//! Run with `--nocapture` to see how many Wycheproof vectors ran and why others were skipped.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use keyvault::material::{
    Curve, EncryptionAlgorithm, Jwk, JwkSecret, KeyMaterial, MaterialError, PublicKey,
    SignatureAlgorithm,
};
use wycheproof::{HashFunction, Mgf, TestResult};

const RSA_BITS: [usize; 3] = [2048, 3072, 4096];

// ---------------------------------------------------------------------------------------------
// Shared keys (RSA generation is slow, so each size is generated once per test binary).

fn rsa_key(bits: usize) -> &'static KeyMaterial {
    static KEYS: [OnceLock<KeyMaterial>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    let slot = RSA_BITS.iter().position(|&b| b == bits).unwrap();
    KEYS[slot].get_or_init(|| KeyMaterial::generate_rsa(bits).unwrap())
}

fn other_rsa_2048() -> &'static KeyMaterial {
    static KEY: OnceLock<KeyMaterial> = OnceLock::new();
    KEY.get_or_init(|| KeyMaterial::generate_rsa(2048).unwrap())
}

fn ec_key(curve: Curve) -> &'static KeyMaterial {
    static KEYS: [OnceLock<KeyMaterial>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    let slot = Curve::ALL.iter().position(|&c| c == curve).unwrap();
    KEYS[slot].get_or_init(|| KeyMaterial::generate_ec(curve).unwrap())
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(text: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(text).unwrap()
}

fn hash(alg: SignatureAlgorithm, message: &[u8]) -> Vec<u8> {
    let algorithm = match alg.digest_len() {
        32 => &digest::SHA256,
        48 => &digest::SHA384,
        _ => &digest::SHA512,
    };
    digest::digest(algorithm, message).as_ref().to_vec()
}

// ---------------------------------------------------------------------------------------------
// A minimal DER reader, only to take generated PKCS#8 keys apart into private JWKs (sealdisk
// itself never exports private keys).

/// Splits one DER TLV off `input`: (tag, contents, rest).
fn tlv(input: &[u8]) -> (u8, &[u8], &[u8]) {
    let tag = input[0];
    let (len, header) = match input[1] {
        n if n < 0x80 => (usize::from(n), 2),
        0x81 => (usize::from(input[2]), 3),
        0x82 => (usize::from(input[2]) << 8 | usize::from(input[3]), 4),
        other => panic!("unexpected DER length byte {other:#x}"),
    };
    (tag, &input[header..header + len], &input[header + len..])
}

/// The `privateKey` OCTET STRING contents of a PKCS#8 `PrivateKeyInfo`.
fn pkcs8_private_key(pkcs8: &[u8]) -> &[u8] {
    let (_, info, _) = tlv(pkcs8);
    let (_, _version, rest) = tlv(info);
    let (_, _algorithm, rest) = tlv(rest);
    let (tag, key, _) = tlv(rest);
    assert_eq!(tag, 0x04);
    key
}

/// The full JWK, private members included, of a generated key.
fn private_jwk(key: &KeyMaterial) -> Jwk {
    let mut jwk = key.public_jwk();
    let (_, body, _) = tlv(pkcs8_private_key(key.pkcs8()));
    if key.curve().is_some() {
        // ECPrivateKey ::= SEQUENCE { version INTEGER, privateKey OCTET STRING, ... }
        let (_, _version, rest) = tlv(body);
        let (_, d, _) = tlv(rest);
        jwk.d = Some(JwkSecret::encode(d));
        return jwk;
    }
    // RSAPrivateKey ::= SEQUENCE { version, n, e, d, p, q, dp, dq, qi } (INTEGERs)
    let mut integers = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let (_, value, next) = tlv(rest);
        let first = value.iter().position(|&b| b != 0).unwrap_or(value.len());
        integers.push(&value[first..]);
        rest = next;
    }
    let [_, n, e, d, p, q, dp, dq, qi] = integers[..] else {
        panic!("RSAPrivateKey has {} integers", integers.len());
    };
    assert_eq!(jwk.n.as_deref(), Some(b64(n).as_str()));
    assert_eq!(jwk.e.as_deref(), Some(b64(e).as_str()));
    jwk.d = Some(JwkSecret::encode(d));
    jwk.p = Some(JwkSecret::encode(p));
    jwk.q = Some(JwkSecret::encode(q));
    jwk.dp = Some(JwkSecret::encode(dp));
    jwk.dq = Some(JwkSecret::encode(dq));
    jwk.qi = Some(JwkSecret::encode(qi));
    jwk
}

// ---------------------------------------------------------------------------------------------
// Round trips

#[test]
fn every_rsa_size_round_trips_every_encryption_algorithm() {
    for bits in RSA_BITS {
        let key = rsa_key(bits);
        assert_eq!(key.rsa_bits(), Some(bits));
        let public = PublicKey::from_jwk(&key.public_jwk()).unwrap();
        for alg in EncryptionAlgorithm::ALL.iter().copied() {
            let secret = format!("a 256-bit data encryption key, {bits} {alg}");
            let wrapped = key.wrap_key(alg, secret.as_bytes()).unwrap();
            assert_eq!(wrapped.len(), bits / 8, "{bits} {alg}");
            let unwrapped = key.unwrap_key(alg, &wrapped).unwrap();
            assert_eq!(unwrapped.as_slice(), secret.as_bytes(), "{bits} {alg}");

            let ciphertext = public.encrypt(alg, b"through the public JWK").unwrap();
            let plaintext = key.decrypt(alg, &ciphertext).unwrap();
            assert_eq!(plaintext.as_slice(), b"through the public JWK");
            assert_ne!(
                key.encrypt(alg, b"same").unwrap(),
                key.encrypt(alg, b"same").unwrap(),
                "{alg} is randomized"
            );

            let max = match alg {
                EncryptionAlgorithm::RsaOaep => bits / 8 - 42,
                EncryptionAlgorithm::RsaOaep256 => bits / 8 - 66,
                EncryptionAlgorithm::Rsa1_5 => bits / 8 - 11,
            };
            assert_eq!(key.encrypt(alg, &vec![1; max]).unwrap().len(), bits / 8);
            assert!(matches!(
                key.encrypt(alg, &vec![1; max + 1]),
                Err(MaterialError::PlaintextTooLong { max: m, .. }) if m == max
            ));

            assert!(matches!(
                key.unwrap_key(alg, &wrapped[1..]),
                Err(MaterialError::DecryptionFailed)
            ));
            let mut longer = wrapped.clone();
            longer.push(0);
            assert!(matches!(
                key.unwrap_key(alg, &longer),
                Err(MaterialError::DecryptionFailed)
            ));
        }
        // The same opaque error for a wrong key and a wrong algorithm.
        let wrapped = key.wrap_key(EncryptionAlgorithm::RsaOaep256, b"k").unwrap();
        assert!(matches!(
            key.unwrap_key(EncryptionAlgorithm::RsaOaep, &wrapped),
            Err(MaterialError::DecryptionFailed)
        ));
        if bits == 2048 {
            assert!(matches!(
                other_rsa_2048().unwrap_key(EncryptionAlgorithm::RsaOaep256, &wrapped),
                Err(MaterialError::DecryptionFailed)
            ));
        }
    }
}

#[test]
fn every_signature_algorithm_signs_and_verifies() {
    let mut keys: Vec<&KeyMaterial> = RSA_BITS.iter().map(|&b| rsa_key(b)).collect();
    keys.extend(Curve::ALL.iter().map(|&c| ec_key(c)));
    let mut signed = 0;
    for key in keys {
        let public = PublicKey::from_jwk(&key.public_jwk()).unwrap();
        for alg in SignatureAlgorithm::ALL.iter().copied() {
            let digest = hash(alg, b"the message");
            let fits = match key.curve() {
                Some(curve) => alg.curve() == Some(curve),
                None => alg.curve().is_none(),
            };
            if !fits {
                assert!(key.sign(alg, &digest).is_err(), "{alg} on {key:?}");
                assert!(key.verify(alg, &digest, &[0; 64]).is_err());
                continue;
            }
            let signature = key.sign(alg, &digest).unwrap();
            let expected_len = match key.curve() {
                Some(curve) => 2 * curve.coordinate_len(),
                None => key.rsa_bits().unwrap() / 8,
            };
            assert_eq!(signature.len(), expected_len, "{alg}");
            assert!(key.verify(alg, &digest, &signature).unwrap(), "{alg}");
            assert!(public.verify(alg, &digest, &signature).unwrap(), "{alg}");

            let other_digest = hash(alg, b"another message");
            assert!(!key.verify(alg, &other_digest, &signature).unwrap());
            for i in [0, signature.len() / 2, signature.len() - 1] {
                let mut flipped = signature.clone();
                flipped[i] ^= 0x80;
                assert!(
                    !key.verify(alg, &digest, &flipped).unwrap(),
                    "{alg} byte {i}"
                );
            }
            assert!(!key.verify(alg, &digest, &[]).unwrap());

            // PKCS#1 v1.5 is deterministic; PSS and ECDSA are randomized.
            let again = key.sign(alg, &digest).unwrap();
            let deterministic = matches!(
                alg,
                SignatureAlgorithm::Rs256 | SignatureAlgorithm::Rs384 | SignatureAlgorithm::Rs512
            );
            assert_eq!(again == signature, deterministic, "{alg}");
            signed += 1;
        }
    }
    assert_eq!(signed, 3 * 6 + 3);
}

#[test]
fn rsa_pss_and_pkcs1_signatures_are_not_interchangeable() {
    let key = rsa_key(2048);
    let digest = hash(SignatureAlgorithm::Ps256, b"m");
    let pss = key.sign(SignatureAlgorithm::Ps256, &digest).unwrap();
    let pkcs1 = key.sign(SignatureAlgorithm::Rs256, &digest).unwrap();
    assert!(
        !key.verify(SignatureAlgorithm::Rs256, &digest, &pss)
            .unwrap()
    );
    assert!(
        !key.verify(SignatureAlgorithm::Ps256, &digest, &pkcs1)
            .unwrap()
    );
}

// ---------------------------------------------------------------------------------------------
// JWK import and the public JWK

#[test]
fn importing_a_generated_keys_jwk_recreates_the_same_key() {
    let mut keys: Vec<&KeyMaterial> = RSA_BITS.iter().map(|&b| rsa_key(b)).collect();
    keys.extend(Curve::ALL.iter().map(|&c| ec_key(c)));
    for key in keys {
        let jwk = private_jwk(key);
        // Through JSON, as an import request carries it.
        let jwk: Jwk = serde_json::from_str(&serde_json::to_string(&jwk).unwrap()).unwrap();
        let imported = KeyMaterial::from_jwk(&jwk).unwrap();
        assert_eq!(imported.public_jwk(), key.public_jwk());
        assert_eq!(imported.pkcs8(), key.pkcs8(), "canonical PKCS#8");
        // The imported private key works with the original public key.
        if key.curve().is_none() {
            let wrapped = key
                .wrap_key(EncryptionAlgorithm::RsaOaep256, b"dek")
                .unwrap();
            let dek = imported
                .unwrap_key(EncryptionAlgorithm::RsaOaep256, &wrapped)
                .unwrap();
            assert_eq!(dek.as_slice(), b"dek");
        } else {
            let alg = key.curve().unwrap().signature_algorithm();
            let digest = hash(alg, b"m");
            let signature = imported.sign(alg, &digest).unwrap();
            assert!(key.verify(alg, &digest, &signature).unwrap());
        }
    }
}

#[test]
fn rsa_jwk_with_leading_zeros_and_padding_is_accepted() {
    let key = rsa_key(2048);
    let mut jwk = private_jwk(key);
    let n = unb64(jwk.n.as_deref().unwrap());
    jwk.n = Some(b64(&[&[0u8][..], &n].concat()));
    let d = unb64(jwk.d.as_ref().unwrap().expose());
    jwk.d = Some(JwkSecret::encode(&[&[0u8, 0][..], &d].concat()));
    jwk.e = Some("AQAB".into());
    let imported = KeyMaterial::from_jwk(&jwk).unwrap();
    assert_eq!(imported.public_jwk(), key.public_jwk());
}

#[test]
fn jwk_whose_parts_belong_to_different_keys_is_refused() {
    let key = rsa_key(2048);
    let other = other_rsa_2048();

    let mut jwk = private_jwk(key);
    jwk.n.clone_from(&other.public_jwk().n);
    let err = KeyMaterial::from_jwk(&jwk).unwrap_err();
    assert!(
        matches!(
            err,
            MaterialError::InvalidJwkKey { .. } | MaterialError::JwkPublicKeyMismatch
        ),
        "{err:?}"
    );

    let mut jwk = private_jwk(key);
    jwk.e = Some(b64(&[0x01, 0x00, 0x03]));
    assert!(KeyMaterial::from_jwk(&jwk).is_err());

    let mut jwk = private_jwk(key);
    jwk.d = private_jwk(other).d;
    assert!(KeyMaterial::from_jwk(&jwk).is_err());

    let mut jwk = private_jwk(key);
    jwk.qi = None;
    assert!(matches!(
        KeyMaterial::from_jwk(&jwk),
        Err(MaterialError::MissingJwkField { field: "qi", .. })
    ));

    let ec = ec_key(Curve::P256);
    let ec_other = KeyMaterial::generate_ec(Curve::P256).unwrap();
    let mut jwk = private_jwk(ec);
    let other_jwk = ec_other.public_jwk();
    jwk.x.clone_from(&other_jwk.x);
    jwk.y.clone_from(&other_jwk.y);
    let err = KeyMaterial::from_jwk(&jwk).unwrap_err();
    assert!(
        matches!(err, MaterialError::InvalidJwkKey { .. }),
        "{err:?}"
    );

    // A point that is not on the curve.
    let mut jwk = private_jwk(ec);
    jwk.y = Some(b64(&[0x5a; 32]));
    assert!(KeyMaterial::from_jwk(&jwk).is_err());
    assert!(PublicKey::from_jwk(&jwk).is_err());

    // P-384 coordinates on a P-256 JWK.
    let mut jwk = private_jwk(ec);
    jwk.x = Some(b64(&[1; 48]));
    assert!(matches!(
        KeyMaterial::from_jwk(&jwk),
        Err(MaterialError::JwkFieldLength { field: "x", .. })
    ));
}

#[test]
fn public_jwk_never_contains_private_members() {
    for bits in RSA_BITS {
        let jwk = serde_json::to_value(rsa_key(bits).public_jwk()).unwrap();
        let object = jwk.as_object().unwrap();
        let mut members: Vec<&str> = object.keys().map(String::as_str).collect();
        members.sort_unstable();
        assert_eq!(members, ["e", "kty", "n"]);
        assert_eq!(object["kty"], "RSA");
        assert_eq!(object["e"], "AQAB");
        let n = unb64(object["n"].as_str().unwrap());
        assert_eq!(n.len(), bits / 8);
        assert_ne!(n[0], 0, "no leading zero");
    }
    for curve in Curve::ALL.iter().copied() {
        let jwk = serde_json::to_value(ec_key(curve).public_jwk()).unwrap();
        let object = jwk.as_object().unwrap();
        let mut members: Vec<&str> = object.keys().map(String::as_str).collect();
        members.sort_unstable();
        assert_eq!(members, ["crv", "kty", "x", "y"]);
        assert_eq!(object["kty"], "EC");
        assert_eq!(object["crv"], curve.as_str());
        for coordinate in ["x", "y"] {
            let bytes = unb64(object[coordinate].as_str().unwrap());
            assert_eq!(bytes.len(), curve.coordinate_len(), "fixed length");
        }
    }
    // Stripping a full JWK leaves exactly the public one.
    let full = private_jwk(rsa_key(2048));
    assert!(full.has_private());
    assert_eq!(full.without_private(), rsa_key(2048).public_jwk());
}

// ---------------------------------------------------------------------------------------------
// Wycheproof

/// Counts of vectors run, by expected result, and skipped, by reason.
#[derive(Default)]
struct Tally {
    valid: usize,
    invalid: usize,
    acceptable: usize,
    skipped: BTreeMap<&'static str, usize>,
}

impl Tally {
    fn skip(&mut self, reason: &'static str, count: usize) {
        *self.skipped.entry(reason).or_default() += count;
    }

    /// Checks one vector: `outcome` is `Some(output)` when sealdisk accepted the input.
    /// Valid vectors must be accepted (with `expected` output, if given), invalid ones refused;
    /// acceptable ones may go either way but must not produce a wrong output.
    fn check(
        &mut self,
        id: &str,
        result: &TestResult,
        outcome: Option<Vec<u8>>,
        expected: Option<&[u8]>,
    ) {
        match (result, outcome) {
            (TestResult::Invalid, None) => self.invalid += 1,
            (TestResult::Invalid, Some(_)) => panic!("{id}: invalid vector was accepted"),
            (TestResult::Valid, None) => panic!("{id}: valid vector was refused"),
            (TestResult::Valid | TestResult::Acceptable, Some(output)) => {
                if let Some(expected) = expected {
                    assert_eq!(output, expected, "{id}: wrong output");
                }
                if matches!(result, TestResult::Valid) {
                    self.valid += 1;
                } else {
                    self.acceptable += 1;
                }
            }
            (TestResult::Acceptable, None) => self.acceptable += 1,
        }
    }

    fn run(&self) -> usize {
        self.valid + self.invalid + self.acceptable
    }

    /// Guards against a filter that silently skips everything: the counts of wycheproof 0.7.
    fn expect_at_least(&self, valid: usize, invalid: usize) {
        assert!(
            self.valid >= valid && self.invalid >= invalid,
            "only {} valid and {} invalid vectors ran",
            self.valid,
            self.invalid
        );
    }

    fn report(&self, what: &str) {
        let skipped: usize = self.skipped.values().sum();
        println!(
            "Wycheproof {what}: {} run ({} valid, {} invalid, {} acceptable), {skipped} skipped {:?}",
            self.run(),
            self.valid,
            self.invalid,
            self.acceptable,
            self.skipped
        );
    }
}

fn wycheproof_rsa_jwk(jwk: &wycheproof::RsaPrivateJwk) -> Jwk {
    Jwk {
        kty: Some(jwk.kty.clone()),
        n: Some(b64(&jwk.n)),
        e: Some(b64(&jwk.e)),
        d: Some(JwkSecret::encode(&jwk.d)),
        p: Some(JwkSecret::encode(&jwk.p)),
        q: Some(JwkSecret::encode(&jwk.q)),
        dp: Some(JwkSecret::encode(&jwk.dp)),
        dq: Some(JwkSecret::encode(&jwk.dq)),
        qi: Some(JwkSecret::encode(&jwk.qi)),
        ..Jwk::default()
    }
}

/// The same key from the vector's other encoding: components in hex, with the sign-padding
/// leading zeros Wycheproof writes.
fn wycheproof_rsa_components(key: &wycheproof::RsaPrivate) -> Jwk {
    Jwk {
        kty: Some("RSA".into()),
        n: Some(b64(&key.n)),
        e: Some(b64(&key.e)),
        d: Some(JwkSecret::encode(&key.d)),
        p: Some(JwkSecret::encode(&key.p)),
        q: Some(JwkSecret::encode(&key.q)),
        dp: Some(JwkSecret::encode(&key.d1)),
        dq: Some(JwkSecret::encode(&key.d2)),
        qi: Some(JwkSecret::encode(&key.c)),
        ..Jwk::default()
    }
}

/// Loads a decryption vector group's key through every import path and checks they agree.
fn wycheproof_private_key(
    jwk: Option<&wycheproof::RsaPrivateJwk>,
    components: &wycheproof::RsaPrivate,
    pkcs8: &[u8],
) -> KeyMaterial {
    let from_pkcs8 = KeyMaterial::from_pkcs8(pkcs8).unwrap();
    let from_components = KeyMaterial::from_jwk(&wycheproof_rsa_components(components)).unwrap();
    assert_eq!(from_components.public_jwk(), from_pkcs8.public_jwk());
    match jwk {
        Some(jwk) => {
            let from_jwk = KeyMaterial::from_jwk(&wycheproof_rsa_jwk(jwk)).unwrap();
            assert_eq!(from_jwk.public_jwk(), from_pkcs8.public_jwk());
            from_jwk
        }
        None => from_pkcs8,
    }
}

#[test]
fn wycheproof_rsa_oaep_decryption() {
    use wycheproof::rsa_oaep::{TestName, TestSet};
    let mut tally = Tally::default();
    let sets = [
        TestName::Rsa2048Sha1Mgf1Sha1,
        TestName::Rsa2048Sha256Mgf1Sha256,
        TestName::Rsa3072Sha256Mgf1Sha256,
        TestName::Rsa4096Sha256Mgf1Sha256,
        TestName::RsaMisc,
    ];
    for name in sets {
        for group in TestSet::load(name).unwrap().test_groups {
            let alg = match (group.hash, group.mgf, group.mgf_hash) {
                (HashFunction::Sha1, Mgf::Mgf1, HashFunction::Sha1) => EncryptionAlgorithm::RsaOaep,
                (HashFunction::Sha2_256, Mgf::Mgf1, HashFunction::Sha2_256) => {
                    EncryptionAlgorithm::RsaOaep256
                }
                _ => {
                    tally.skip("hash/MGF1 pair Key Vault lacks", group.tests.len());
                    continue;
                }
            };
            if !RSA_BITS.contains(&group.key_size) {
                tally.skip("key size not 2048/3072/4096", group.tests.len());
                continue;
            }
            let key = wycheproof_private_key(group.jwk.as_ref(), &group.key, &group.pkcs8);
            for test in &group.tests {
                if !test.label.is_empty() {
                    tally.skip("OAEP label (Key Vault has none)", 1);
                    continue;
                }
                let outcome = match key.unwrap_key(alg, &test.ct) {
                    Ok(plaintext) => Some(plaintext.to_vec()),
                    Err(MaterialError::DecryptionFailed) => None,
                    Err(other) => panic!("{name:?} #{}: {other}", test.tc_id),
                };
                let id = format!("{name:?} #{} {}", test.tc_id, test.comment);
                tally.check(&id, &test.result, outcome, Some(&test.pt));
            }
        }
    }
    tally.report("RSA-OAEP decryption");
    tally.expect_at_least(58, 76);
}

#[test]
fn wycheproof_rsa_pkcs1_decryption() {
    use wycheproof::rsa_pkcs1_decrypt::{TestName, TestSet};
    let mut tally = Tally::default();
    for name in [TestName::Rsa2048, TestName::Rsa3072, TestName::Rsa4096] {
        for group in TestSet::load(name).unwrap().test_groups {
            let key = wycheproof_private_key(group.jwk.as_ref(), &group.key, &group.pkcs8);
            for test in &group.tests {
                let outcome = match key.unwrap_key(EncryptionAlgorithm::Rsa1_5, &test.ct) {
                    Ok(plaintext) => Some(plaintext.to_vec()),
                    Err(MaterialError::DecryptionFailed) => None,
                    Err(other) => panic!("{name:?} #{}: {other}", test.tc_id),
                };
                let id = format!("{name:?} #{} {}", test.tc_id, test.comment);
                tally.check(&id, &test.result, outcome, Some(&test.pt));
            }
        }
    }
    tally.report("RSA PKCS#1 v1.5 decryption");
    tally.expect_at_least(124, 77);
}

fn signature_hash(hash: HashFunction) -> Option<usize> {
    match hash {
        HashFunction::Sha2_256 => Some(32),
        HashFunction::Sha2_384 => Some(48),
        HashFunction::Sha2_512 => Some(64),
        _ => None,
    }
}

/// Verifies one signature vector through a public key built from a JWK.
fn check_signature(
    tally: &mut Tally,
    id: String,
    key: &PublicKey,
    alg: SignatureAlgorithm,
    test_result: &TestResult,
    message: &[u8],
    signature: &[u8],
) {
    let digest = hash(alg, message);
    let ok = key.verify(alg, &digest, signature).unwrap();
    tally.check(&id, test_result, ok.then(Vec::new), None);
}

fn rsa_public_key(n: &[u8], e: &[u8]) -> PublicKey {
    PublicKey::from_jwk(&Jwk {
        kty: Some("RSA".into()),
        n: Some(b64(n)),
        e: Some(b64(e)),
        ..Jwk::default()
    })
    .unwrap()
}

#[test]
fn wycheproof_rsa_pkcs1_signature_verification() {
    use wycheproof::rsa_pkcs1_verify::{TestName, TestSet};
    let mut tally = Tally::default();
    let sets = [
        TestName::Rsa2048Sha256,
        TestName::Rsa2048Sha384,
        TestName::Rsa2048Sha512,
        TestName::Rsa3072Sha256,
        TestName::Rsa3072Sha384,
        TestName::Rsa3072Sha512,
        TestName::Rsa4096Sha256,
        TestName::Rsa4096Sha384,
        TestName::Rsa4096Sha512,
    ];
    for name in sets {
        for group in TestSet::load(name).unwrap().test_groups {
            let alg = match signature_hash(group.hash) {
                Some(32) => SignatureAlgorithm::Rs256,
                Some(48) => SignatureAlgorithm::Rs384,
                Some(64) => SignatureAlgorithm::Rs512,
                _ => {
                    tally.skip("hash Key Vault lacks", group.tests.len());
                    continue;
                }
            };
            if !RSA_BITS.contains(&group.key_size) {
                tally.skip("key size not 2048/3072/4096", group.tests.len());
                continue;
            }
            let key = rsa_public_key(&group.key.n, &group.key.e);
            for test in &group.tests {
                let id = format!("{name:?} #{} {}", test.tc_id, test.comment);
                check_signature(
                    &mut tally,
                    id,
                    &key,
                    alg,
                    &test.result,
                    &test.msg,
                    &test.sig,
                );
            }
        }
    }
    tally.report("RSASSA-PKCS1-v1_5 verification");
    tally.expect_at_least(68, 2253);
}

#[test]
fn wycheproof_rsa_pss_signature_verification() {
    use wycheproof::rsa_pss_verify::{TestName, TestSet};
    let mut tally = Tally::default();
    let sets = [
        TestName::RsaPss2048Sha256Mgf1SaltLen32,
        TestName::RsaPss3072Sha256Mgf1SaltLen32,
        TestName::RsaPss4096Sha256Mgf1SaltLen32,
        TestName::RsaPss2048Sha384Mgf1SaltLen48,
        TestName::RsaPss4096Sha384Mgf1SaltLen48,
        TestName::RsaPss4096Sha512Mgf1SaltLen64,
        TestName::RsaPssmisc,
    ];
    for name in sets {
        for group in TestSet::load(name).unwrap().test_groups {
            let alg = match signature_hash(group.hash) {
                Some(32) => SignatureAlgorithm::Ps256,
                Some(48) => SignatureAlgorithm::Ps384,
                Some(64) => SignatureAlgorithm::Ps512,
                _ => {
                    tally.skip("hash Key Vault lacks", group.tests.len());
                    continue;
                }
            };
            // Key Vault's PS* use MGF1 with the message hash and a digest-length salt.
            if !matches!(group.mgf, Mgf::Mgf1)
                || group.mgf_hash != Some(group.hash)
                || group.salt_size != alg.digest_len()
            {
                tally.skip("PSS parameters other than Key Vault's", group.tests.len());
                continue;
            }
            if !RSA_BITS.contains(&group.key_size) {
                tally.skip("key size not 2048/3072/4096", group.tests.len());
                continue;
            }
            let key = rsa_public_key(&group.key.n, &group.key.e);
            for test in &group.tests {
                let id = format!("{name:?} #{} {}", test.tc_id, test.comment);
                check_signature(
                    &mut tally,
                    id,
                    &key,
                    alg,
                    &test.result,
                    &test.msg,
                    &test.sig,
                );
            }
        }
    }
    tally.report("RSASSA-PSS verification");
    tally.expect_at_least(514, 274);
}

#[test]
fn wycheproof_ecdsa_p1363_signature_verification() {
    use wycheproof::ecdsa::{TestName, TestSet};
    let mut tally = Tally::default();
    let sets = [
        (TestName::EcdsaSecp256r1Sha256P1363, Curve::P256),
        (TestName::EcdsaSecp384r1Sha384P1363, Curve::P384),
        (TestName::EcdsaSecp521r1Sha512P1363, Curve::P521),
    ];
    for (name, curve) in sets {
        let alg = curve.signature_algorithm();
        for group in TestSet::load(name).unwrap().test_groups {
            if signature_hash(group.hash) != Some(alg.digest_len()) {
                tally.skip("hash other than the curve's", group.tests.len());
                continue;
            }
            let point = &group.key.key;
            let len = curve.coordinate_len();
            assert_eq!(point.len(), 1 + 2 * len);
            let key = PublicKey::from_jwk(&Jwk {
                kty: Some("EC".into()),
                crv: Some(curve.to_string()),
                x: Some(b64(&point[1..1 + len])),
                y: Some(b64(&point[1 + len..])),
                ..Jwk::default()
            })
            .unwrap();
            for test in &group.tests {
                let id = format!("{name:?} #{} {}", test.tc_id, test.comment);
                check_signature(
                    &mut tally,
                    id,
                    &key,
                    alg,
                    &test.result,
                    &test.msg,
                    &test.sig,
                );
            }
        }
    }
    tally.report("ECDSA (P1363 = JOSE r||s) verification");
    tally.expect_at_least(597, 263);
}

// ---------------------------------------------------------------------------------------------
// OpenSSL interoperability

/// The OpenSSL CLI, or `None` (with the reason printed) when it cannot run.
fn openssl() -> Option<&'static str> {
    match Command::new("openssl").arg("version").output() {
        Ok(out) if out.status.success() => Some("openssl"),
        Ok(out) => {
            println!(
                "skipped: `openssl version` failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            None
        }
        Err(e) => {
            println!("skipped: the openssl command line is not installed ({e})");
            None
        }
    }
}

fn run_openssl(openssl: &str, args: &[&str], dir: &Path) -> bool {
    let out = Command::new(openssl)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    if !out.status.success() {
        println!(
            "openssl {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out.status.success()
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// Writes the key's public PEM, built from its public JWK (as a client would), and its
/// private PKCS#8 PEM.
fn write_keys(dir: &Path, key: &KeyMaterial) {
    let public = PublicKey::from_jwk(&key.public_jwk()).unwrap();
    std::fs::write(dir.join("pub.pem"), pem("PUBLIC KEY", public.spki_der())).unwrap();
    std::fs::write(dir.join("key.pem"), pem("PRIVATE KEY", key.pkcs8())).unwrap();
}

fn oaep_options(alg: EncryptionAlgorithm) -> Vec<&'static str> {
    match alg {
        EncryptionAlgorithm::RsaOaep => vec![
            "-pkeyopt",
            "rsa_padding_mode:oaep",
            "-pkeyopt",
            "rsa_oaep_md:sha1",
            "-pkeyopt",
            "rsa_mgf1_md:sha1",
        ],
        EncryptionAlgorithm::RsaOaep256 => vec![
            "-pkeyopt",
            "rsa_padding_mode:oaep",
            "-pkeyopt",
            "rsa_oaep_md:sha256",
            "-pkeyopt",
            "rsa_mgf1_md:sha256",
        ],
        EncryptionAlgorithm::Rsa1_5 => vec!["-pkeyopt", "rsa_padding_mode:pkcs1"],
    }
}

#[test]
fn openssl_wraps_with_the_public_jwk_and_sealdisk_unwraps() {
    let Some(openssl) = openssl() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut runs = 0;
    for bits in RSA_BITS {
        let key = rsa_key(bits);
        write_keys(dir.path(), key);
        for alg in EncryptionAlgorithm::ALL.iter().copied() {
            let dek = format!("data encryption key for {bits} {alg}").into_bytes();
            std::fs::write(dir.path().join("dek"), &dek).unwrap();
            let mut args = vec![
                "pkeyutl", "-encrypt", "-pubin", "-inkey", "pub.pem", "-in", "dek", "-out",
                "wrapped",
            ];
            args.extend(oaep_options(alg));
            assert!(run_openssl(openssl, &args, dir.path()), "{bits} {alg}");
            let wrapped = std::fs::read(dir.path().join("wrapped")).unwrap();
            let unwrapped = key.unwrap_key(alg, &wrapped).unwrap();
            assert_eq!(unwrapped.as_slice(), dek.as_slice(), "{bits} {alg}");
            runs += 1;
        }
    }
    assert_eq!(runs, 9);
}

#[test]
fn sealdisk_wraps_and_openssl_unwraps_with_the_pkcs8_key() {
    let Some(openssl) = openssl() else { return };
    let dir = tempfile::tempdir().unwrap();
    let key = rsa_key(2048);
    write_keys(dir.path(), key);
    for alg in EncryptionAlgorithm::ALL.iter().copied() {
        let wrapped = key.wrap_key(alg, b"sealdisk wrapped this").unwrap();
        std::fs::write(dir.path().join("wrapped"), &wrapped).unwrap();
        let mut args = vec![
            "pkeyutl", "-decrypt", "-inkey", "key.pem", "-in", "wrapped", "-out", "dek",
        ];
        args.extend(oaep_options(alg));
        assert!(run_openssl(openssl, &args, dir.path()), "{alg}");
        let dek = std::fs::read(dir.path().join("dek")).unwrap();
        assert_eq!(dek, b"sealdisk wrapped this", "{alg}");
    }
}

/// DER `ECDSA-Sig-Value` from JOSE `r || s`.
fn ecdsa_der(jose: &[u8]) -> Vec<u8> {
    fn integer(bytes: &[u8]) -> Vec<u8> {
        let first = bytes
            .iter()
            .position(|&b| b != 0)
            .unwrap_or(bytes.len() - 1);
        let mut value = bytes[first..].to_vec();
        if value[0] & 0x80 != 0 {
            value.insert(0, 0);
        }
        let mut out = vec![0x02, u8::try_from(value.len()).unwrap()];
        out.extend(value);
        out
    }
    let (r, s) = jose.split_at(jose.len() / 2);
    let body = [integer(r), integer(s)].concat();
    let mut out = vec![0x30];
    if body.len() >= 0x80 {
        out.push(0x81);
    }
    out.push(u8::try_from(body.len()).unwrap());
    out.extend(body);
    out
}

/// JOSE `r || s` from DER `ECDSA-Sig-Value`.
fn ecdsa_jose(der: &[u8], len: usize) -> Vec<u8> {
    let (_, body, _) = tlv(der);
    let (_, r, rest) = tlv(body);
    let (_, s, _) = tlv(rest);
    let mut out = Vec::new();
    for value in [r, s] {
        let first = value.iter().position(|&b| b != 0).unwrap_or(value.len());
        let value = &value[first..];
        out.extend(std::iter::repeat_n(0, len - value.len()));
        out.extend_from_slice(value);
    }
    out
}

fn signature_options(alg: SignatureAlgorithm) -> Vec<String> {
    let md = match alg.digest_len() {
        32 => "sha256",
        48 => "sha384",
        _ => "sha512",
    };
    let mut options = vec!["-pkeyopt".to_string(), format!("digest:{md}")];
    if alg.as_str().starts_with("PS") {
        options.extend(
            [
                "-pkeyopt",
                "rsa_padding_mode:pss",
                "-pkeyopt",
                "rsa_pss_saltlen:digest",
            ]
            .map(String::from),
        );
    }
    options
}

#[test]
fn signatures_interoperate_with_openssl_in_both_directions() {
    let Some(openssl) = openssl() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for alg in SignatureAlgorithm::ALL.iter().copied() {
        let key = match alg.curve() {
            Some(curve) => ec_key(curve),
            None => rsa_key(2048),
        };
        write_keys(dir.path(), key);
        let digest = hash(alg, b"signed by sealdisk, checked by openssl");
        std::fs::write(dir.path().join("digest"), &digest).unwrap();
        let options = signature_options(alg);

        // sealdisk signs, OpenSSL verifies with the public key from the JWK.
        let signature = key.sign(alg, &digest).unwrap();
        let wire = match alg.curve() {
            Some(_) => ecdsa_der(&signature),
            None => signature.clone(),
        };
        std::fs::write(dir.path().join("sig"), &wire).unwrap();
        let mut args: Vec<&str> = vec![
            "pkeyutl", "-verify", "-pubin", "-inkey", "pub.pem", "-in", "digest", "-sigfile", "sig",
        ];
        args.extend(options.iter().map(String::as_str));
        assert!(run_openssl(openssl, &args, dir.path()), "{alg}");

        // OpenSSL signs with the PKCS#8 key, sealdisk verifies.
        let mut args: Vec<&str> = vec![
            "pkeyutl", "-sign", "-inkey", "key.pem", "-in", "digest", "-out", "sig",
        ];
        args.extend(options.iter().map(String::as_str));
        assert!(run_openssl(openssl, &args, dir.path()), "{alg}");
        let theirs = std::fs::read(dir.path().join("sig")).unwrap();
        let theirs = match alg.curve() {
            Some(curve) => ecdsa_jose(&theirs, curve.coordinate_len()),
            None => theirs,
        };
        assert!(key.verify(alg, &digest, &theirs).unwrap(), "{alg}");
        checked += 1;
    }
    assert_eq!(checked, 9);
}
