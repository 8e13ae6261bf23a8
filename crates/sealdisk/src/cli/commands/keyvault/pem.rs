//! Private keys in PEM for `keyvault key import`: the PEM armor (RFC 7468, and the RFC 1421
//! headers OpenSSL writes into an encrypted traditional key), the key structures inside it, and
//! the JSON Web Key that Key Vault imports.
//!
//! Accepted, unencrypted:
//!
//! | PEM label         | structure                                      | keys    |
//! |-------------------|------------------------------------------------|---------|
//! | `PRIVATE KEY`     | PKCS#8 `PrivateKeyInfo` (RFC 5208, RFC 5958)   | RSA, EC |
//! | `RSA PRIVATE KEY` | PKCS#1 `RSAPrivateKey` (RFC 8017), two primes  | RSA     |
//! | `EC PRIVATE KEY`  | SEC 1 `ECPrivateKey` (RFC 5915), a named curve | EC      |
//!
//! EC keys are on P-256, P-384, P-521 or secp256k1 (`P-256K`, which the vault refuses in its
//! own words).
//!
//! Other blocks in the same text (`EC PARAMETERS` from `openssl ecparam -genkey`, certificates)
//! are skipped; exactly one private key must be present. Encrypted keys (`ENCRYPTED PRIVATE
//! KEY`, or a traditional key with `Proc-Type: 4,ENCRYPTED`) are refused with
//! [`PemError::Encrypted`]: the CLI has no PBES2 or legacy OpenSSL decryption.
//!
//! Sans-I/O: text in, [`Jwk`] out. The key's bytes live in [`SecretBytes`] (zeroed when
//! dropped), the JWK's private members in [`JwkSecret`]s (zeroizing, redacted in `Debug`), and
//! no error message contains key bytes. Whether the parts form one valid key is for the vault
//! to decide: it checks them with AWS-LC on import.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use keyvault::material::{Jwk, JwkSecret, KeyMaterial};

use super::der::{self, DerError, Reader};

/// Bytes of a private key (PEM text, DER), zeroized when dropped (spare capacity included) and
/// redacted in `Debug`.
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    /// Takes ownership of `bytes`.
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretBytes(bytes)
    }

    /// An empty buffer that holds `capacity` bytes without reallocating (a reallocation would
    /// leave a copy behind).
    fn with_capacity(capacity: usize) -> Self {
        SecretBytes(Vec::with_capacity(capacity))
    }

    /// The bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Appends `bytes`; the caller has reserved room for them.
    fn push(&mut self, bytes: &[u8]) {
        debug_assert!(self.0.len() + bytes.len() <= self.0.capacity());
        self.0.extend_from_slice(bytes);
    }
}

impl Drop for SecretBytes {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes(<{} bytes redacted>)", self.0.len())
    }
}

/// Why a PEM text gives no key to import. Messages name what to do; they never contain key
/// bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PemError {
    /// The input is not text (perhaps a DER file).
    NotText,
    /// No `-----BEGIN ...-----` line at all.
    NoPemBlock,
    /// PEM blocks, but none holds a private key.
    NoPrivateKey { found: Vec<String> },
    /// A `BEGIN` line without its `END` line.
    Unterminated { label: String },
    /// More than one private key.
    SeveralKeys { count: usize },
    /// A private key in a format other than PKCS#8, PKCS#1 and SEC 1 (`OPENSSH PRIVATE KEY`,
    /// `DSA PRIVATE KEY`, ...).
    UnsupportedFormat { label: String },
    /// The key is encrypted; `how` names the scheme.
    Encrypted { how: &'static str },
    /// The body is not base64.
    Base64 { label: String },
    /// The DER inside is malformed.
    Der {
        structure: &'static str,
        source: DerError,
    },
    /// A structure's version is one sealdisk does not read.
    UnsupportedVersion {
        structure: &'static str,
        version: u64,
    },
    /// An RSA key with more than two primes.
    MultiPrimeRsa,
    /// The PKCS#8 algorithm is neither RSA nor EC.
    UnsupportedAlgorithm { name: String },
    /// A named curve Key Vault does not know.
    UnsupportedCurve { oid: String },
    /// The curve is given by explicit parameters instead of a name.
    ExplicitCurve,
    /// SEC 1 key without parameters, outside PKCS#8.
    MissingCurve,
    /// PKCS#8 and the SEC 1 key inside it name different curves.
    CurveMismatch,
    /// The EC private scalar is longer than the curve's order.
    EcPrivateKeyLength {
        crv: &'static str,
        len: usize,
        max: usize,
    },
    /// The EC public key is malformed, or (compressed) not the private key's.
    EcPublicKey { crv: &'static str },
    /// The EC key comes without public key and it cannot be computed here.
    MissingEcPublicKey { crv: &'static str },
}

impl fmt::Display for PemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PemError::NotText => f.write_str(
                "the key is not PEM text. A DER key file converts with \
                 `openssl pkey -inform DER -in KEY.der -out KEY.pem`.",
            ),
            PemError::NoPemBlock => f.write_str(
                "no PEM block found; expected -----BEGIN PRIVATE KEY-----, \
                 -----BEGIN RSA PRIVATE KEY----- or -----BEGIN EC PRIVATE KEY-----.",
            ),
            PemError::NoPrivateKey { found } => write!(
                f,
                "the PEM holds no private key (found: {}); expected PRIVATE KEY, \
                 RSA PRIVATE KEY or EC PRIVATE KEY.",
                found.join(", ")
            ),
            PemError::Unterminated { label } => {
                write!(
                    f,
                    "-----BEGIN {label}----- has no matching -----END {label}-----."
                )
            }
            PemError::SeveralKeys { count } => write!(
                f,
                "the PEM holds {count} private keys; put the one to import in a file of its own."
            ),
            PemError::UnsupportedFormat { label } => write!(
                f,
                "{label} is not a supported format; convert the key to PKCS#8 with \
                 `openssl pkey -in KEY.pem -out KEY-pkcs8.pem`."
            ),
            PemError::Encrypted { how } => write!(
                f,
                "the private key is encrypted ({how}), and sealdisk cannot decrypt PEM keys. \
                 Decrypt it first with `openssl pkey -in KEY.pem -out KEY-plain.pem` (it asks \
                 for the password; keep the output private and delete it after the import), \
                 then import that file without --pem-password."
            ),
            PemError::Base64 { label } => {
                write!(f, "the body of the {label} block is not valid base64.")
            }
            PemError::Der { structure, source } => {
                write!(f, "the {structure} is not valid DER: {source}.")
            }
            PemError::UnsupportedVersion { structure, version } => {
                write!(f, "{structure} version {version} is not supported.")
            }
            PemError::MultiPrimeRsa => f.write_str(
                "multi-prime RSA keys (more than two primes) are not supported; Key Vault RSA \
                 keys have two primes.",
            ),
            PemError::UnsupportedAlgorithm { name } => write!(
                f,
                "{name} keys cannot be imported into Key Vault; use an RSA or EC key."
            ),
            PemError::UnsupportedCurve { oid } => write!(
                f,
                "the curve {oid} is not supported; use P-256, P-384 or P-521."
            ),
            PemError::ExplicitCurve => f.write_str(
                "the EC key spells out its curve parameters instead of naming the curve; \
                 rewrite it with `openssl ec -in KEY.pem -param_enc named_curve -out \
                 KEY-named.pem`.",
            ),
            PemError::MissingCurve => {
                f.write_str("the EC PRIVATE KEY does not name its curve (no parameters).")
            }
            PemError::CurveMismatch => {
                f.write_str("the PKCS#8 algorithm and the EC key inside it name different curves.")
            }
            PemError::EcPrivateKeyLength { crv, len, max } => write!(
                f,
                "the EC private key is {len} bytes; on {crv} it is at most {max} bytes."
            ),
            PemError::EcPublicKey { crv } => write!(
                f,
                "the EC public key in the file is not a {crv} point of its private key."
            ),
            PemError::MissingEcPublicKey { crv } => write!(
                f,
                "the {crv} private key comes without its public key, and computing it failed \
                 (the private key is not valid on {crv}, or sealdisk cannot compute points on \
                 it); rewrite the key with `openssl ec -in KEY.pem -conv_form uncompressed \
                 -out KEY-full.pem`."
            ),
        }
    }
}

impl std::error::Error for PemError {}

/// The form of a private key block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// `PRIVATE KEY`.
    Pkcs8,
    /// `RSA PRIVATE KEY`.
    Pkcs1,
    /// `EC PRIVATE KEY`.
    Sec1,
}

/// One PEM block: its label and the text between its `BEGIN` and `END` lines.
#[derive(Debug)]
struct Block<'a> {
    label: &'a str,
    body: Vec<&'a str>,
}

/// The label of a `-----BEGIN label-----` or `-----END label-----` line.
fn boundary<'a>(line: &'a str, word: &str) -> Option<&'a str> {
    line.strip_prefix("-----")?
        .strip_prefix(word)?
        .strip_prefix(' ')?
        .strip_suffix("-----")
}

/// Splits the text into PEM blocks; text outside blocks is ignored (RFC 7468 §2).
fn blocks(text: &str) -> Result<Vec<Block<'_>>, PemError> {
    let mut out = Vec::new();
    let mut current: Option<Block<'_>> = None;
    for line in text.lines().map(str::trim) {
        match current.as_mut() {
            None => {
                if let Some(label) = boundary(line, "BEGIN") {
                    current = Some(Block {
                        label,
                        body: Vec::new(),
                    });
                }
            }
            Some(block) => {
                if let Some(label) = boundary(line, "END") {
                    if label != block.label {
                        return Err(PemError::Unterminated {
                            label: block.label.to_owned(),
                        });
                    }
                    out.extend(current.take());
                } else {
                    block.body.push(line);
                }
            }
        }
    }
    if let Some(block) = current {
        return Err(PemError::Unterminated {
            label: block.label.to_owned(),
        });
    }
    Ok(out)
}

/// The RFC 1421 header lines at the start of a block (`Proc-Type: 4,ENCRYPTED`, `DEK-Info:
/// ...`), and the base64 lines after them.
fn split_headers<'a, 'b>(body: &'b [&'a str]) -> (&'b [&'a str], &'b [&'a str]) {
    let headers = body.iter().take_while(|l| l.contains(':')).count();
    body.split_at(headers)
}

/// Decodes the base64 body of a block into zeroed-on-drop memory, without reallocating.
fn decode_body(block: &Block<'_>, lines: &[&str]) -> Result<SecretBytes, PemError> {
    let total: usize = lines.iter().map(|l| l.len()).sum();
    let mut text = SecretBytes::with_capacity(total);
    for line in lines {
        text.push(line.as_bytes());
    }
    let mut der = SecretBytes::new(vec![0; base64::decoded_len_estimate(total)]);
    let written = STANDARD
        .decode_slice(text.expose(), &mut der.0)
        .map_err(|_| PemError::Base64 {
            label: block.label.to_owned(),
        })?;
    der.0.truncate(written);
    Ok(der)
}

/// The private key in a PEM text, as a JWK with its private members (`kty` `RSA` or `EC`,
/// no `key_ops`).
pub fn private_key_jwk(pem: &[u8]) -> Result<Jwk, PemError> {
    let text = std::str::from_utf8(pem).map_err(|_| PemError::NotText)?;
    let all = blocks(text)?;
    if all.is_empty() {
        return Err(PemError::NoPemBlock);
    }
    let mut keys = Vec::new();
    for block in &all {
        let form = match block.label {
            "PRIVATE KEY" => Form::Pkcs8,
            "RSA PRIVATE KEY" => Form::Pkcs1,
            "EC PRIVATE KEY" => Form::Sec1,
            "ENCRYPTED PRIVATE KEY" => {
                return Err(PemError::Encrypted {
                    how: "ENCRYPTED PRIVATE KEY: PKCS#8 with a PBES2 password",
                });
            }
            other if other.ends_with("PRIVATE KEY") => {
                return Err(PemError::UnsupportedFormat {
                    label: other.to_owned(),
                });
            }
            _ => continue,
        };
        keys.push((form, block));
    }
    let (form, block) = match keys.as_slice() {
        [] => {
            return Err(PemError::NoPrivateKey {
                found: all.iter().map(|b| b.label.to_owned()).collect(),
            });
        }
        [one] => *one,
        more => return Err(PemError::SeveralKeys { count: more.len() }),
    };
    let (headers, lines) = split_headers(&block.body);
    if headers
        .iter()
        .any(|h| h.starts_with("Proc-Type:") && h.contains("ENCRYPTED"))
    {
        return Err(PemError::Encrypted {
            how: "a traditional OpenSSL key with Proc-Type: 4,ENCRYPTED",
        });
    }
    let der = decode_body(block, lines)?;
    match form {
        Form::Pkcs8 => pkcs8(der.expose()),
        Form::Pkcs1 => rsa_private_key(der.expose()),
        Form::Sec1 => ec_private_key(der.expose(), None),
    }
}

// ------------------------------------------------------------------------------------------------
// Object identifiers (DER contents).

/// rsaEncryption, 1.2.840.113549.1.1.1.
const RSA_ENCRYPTION: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01];
/// id-ecPublicKey, 1.2.840.10045.2.1.
const EC_PUBLIC_KEY: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01];

/// Algorithms named in messages when a key of theirs is refused.
const OTHER_ALGORITHMS: [(&[u8], &str); 7] = [
    (
        &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x0A],
        "RSASSA-PSS (RSA restricted to PSS signatures)",
    ),
    (&[0x2B, 0x65, 0x70], "Ed25519"),
    (&[0x2B, 0x65, 0x71], "Ed448"),
    (&[0x2B, 0x65, 0x6E], "X25519"),
    (&[0x2B, 0x65, 0x6F], "X448"),
    (&[0x2A, 0x86, 0x48, 0xCE, 0x38, 0x04, 0x01], "DSA"),
    (
        &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x03, 0x01],
        "Diffie-Hellman",
    ),
];

/// A named curve Key Vault knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NamedCurve {
    /// Key Vault's name (`crv`).
    crv: &'static str,
    /// The DER contents of the curve's object identifier.
    oid: &'static [u8],
    /// Bytes of a coordinate and of the private scalar.
    len: usize,
}

const CURVES: [NamedCurve; 4] = [
    // prime256v1 / secp256r1, 1.2.840.10045.3.1.7.
    NamedCurve {
        crv: "P-256",
        oid: &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07],
        len: 32,
    },
    // secp256k1, 1.3.132.0.10.
    NamedCurve {
        crv: "P-256K",
        oid: &[0x2B, 0x81, 0x04, 0x00, 0x0A],
        len: 32,
    },
    // secp384r1, 1.3.132.0.34.
    NamedCurve {
        crv: "P-384",
        oid: &[0x2B, 0x81, 0x04, 0x00, 0x22],
        len: 48,
    },
    // secp521r1, 1.3.132.0.35.
    NamedCurve {
        crv: "P-521",
        oid: &[0x2B, 0x81, 0x04, 0x00, 0x23],
        len: 66,
    },
];

fn named_curve(oid: &[u8]) -> Result<NamedCurve, PemError> {
    CURVES
        .iter()
        .find(|c| c.oid == oid)
        .copied()
        .ok_or_else(|| PemError::UnsupportedCurve {
            oid: der::dotted_oid(oid).unwrap_or_else(|| "(invalid identifier)".to_owned()),
        })
}

/// The curve of EC parameters (`ECParameters`: a named curve, explicit parameters or
/// implicitlyCA), given as the whole encoded element's tag and contents.
fn curve_of_parameters(tag: u8, contents: &[u8]) -> Result<NamedCurve, PemError> {
    match tag {
        der::OID => named_curve(contents),
        der::SEQUENCE => Err(PemError::ExplicitCurve),
        _ => Err(PemError::MissingCurve),
    }
}

/// Wraps the DER errors of one structure.
fn der_error(structure: &'static str) -> impl Fn(DerError) -> PemError {
    move |source| PemError::Der { structure, source }
}

// ------------------------------------------------------------------------------------------------
// Structures.

/// PKCS#8 `PrivateKeyInfo` / `OneAsymmetricKey` (RFC 5208, RFC 5958).
fn pkcs8(input: &[u8]) -> Result<Jwk, PemError> {
    const S: &str = "PKCS#8 private key";
    let err = der_error(S);
    let mut outer = Reader::new(input);
    let mut info = outer.sequence("PrivateKeyInfo").map_err(&err)?;
    outer.finish("PrivateKeyInfo").map_err(&err)?;
    let version = info.small_unsigned("version").map_err(&err)?;
    if version > 1 {
        return Err(PemError::UnsupportedVersion {
            structure: "PKCS#8",
            version,
        });
    }
    let mut algorithm = info.sequence("privateKeyAlgorithm").map_err(&err)?;
    let oid = algorithm.oid("algorithm").map_err(&err)?;
    let parameters = if algorithm.is_empty() {
        None
    } else {
        Some(algorithm.any("algorithm parameters").map_err(&err)?)
    };
    algorithm.finish("privateKeyAlgorithm").map_err(&err)?;
    let private_key = info.octet_string("privateKey").map_err(&err)?;
    // [0] attributes and (v2) [1] publicKey: not needed, the inner key has what the JWK needs.
    info.optional(der::context(0), "attributes").map_err(&err)?;
    if version == 1 {
        info.optional(der::context_primitive(1), "publicKey")
            .map_err(&err)?;
    }
    info.finish("PrivateKeyInfo").map_err(&err)?;

    if oid == RSA_ENCRYPTION {
        // The parameters are an empty NULL; some encoders leave them out.
        return match parameters {
            None | Some((der::NULL, [])) => rsa_private_key(private_key),
            Some((found, _)) => Err(PemError::Der {
                structure: S,
                source: DerError::UnexpectedTag {
                    what: "RSA algorithm parameters",
                    expected: der::NULL,
                    found,
                },
            }),
        };
    }
    if oid == EC_PUBLIC_KEY {
        let curve = match parameters {
            Some((tag, contents)) => curve_of_parameters(tag, contents)?,
            None => return Err(PemError::MissingCurve),
        };
        return ec_private_key(private_key, Some(curve));
    }
    let name = OTHER_ALGORITHMS
        .iter()
        .find(|(o, _)| *o == oid)
        .map(|(_, name)| (*name).to_owned())
        .or_else(|| der::dotted_oid(oid).map(|d| format!("Algorithm {d}")))
        .unwrap_or_else(|| "Unknown algorithm".to_owned());
    Err(PemError::UnsupportedAlgorithm { name })
}

/// base64url without padding, for public members.
fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// PKCS#1 `RSAPrivateKey` (RFC 8017 §A.1.2): two-prime keys only.
fn rsa_private_key(input: &[u8]) -> Result<Jwk, PemError> {
    let err = der_error("RSA private key");
    let mut outer = Reader::new(input);
    let mut key = outer.sequence("RSAPrivateKey").map_err(&err)?;
    outer.finish("RSAPrivateKey").map_err(&err)?;
    let version = key.small_unsigned("version").map_err(&err)?;
    if version > 1 {
        return Err(PemError::UnsupportedVersion {
            structure: "RSAPrivateKey",
            version,
        });
    }
    let n = key.unsigned("modulus").map_err(&err)?;
    let e = key.unsigned("public exponent").map_err(&err)?;
    let d = key.unsigned("private exponent").map_err(&err)?;
    let p = key.unsigned("first prime").map_err(&err)?;
    let q = key.unsigned("second prime").map_err(&err)?;
    let dp = key.unsigned("first CRT exponent").map_err(&err)?;
    let dq = key.unsigned("second CRT exponent").map_err(&err)?;
    let qi = key.unsigned("CRT coefficient").map_err(&err)?;
    // Version 1 adds otherPrimeInfos: more than two primes.
    if version == 1 {
        return Err(PemError::MultiPrimeRsa);
    }
    key.finish("RSAPrivateKey").map_err(&err)?;
    Ok(Jwk {
        kty: Some("RSA".to_owned()),
        n: Some(b64url(n)),
        e: Some(b64url(e)),
        d: Some(JwkSecret::encode(d)),
        p: Some(JwkSecret::encode(p)),
        q: Some(JwkSecret::encode(q)),
        dp: Some(JwkSecret::encode(dp)),
        dq: Some(JwkSecret::encode(dq)),
        qi: Some(JwkSecret::encode(qi)),
        ..Jwk::default()
    })
}

/// SEC 1 `ECPrivateKey` (RFC 5915). `outer` is the curve named by a PKCS#8 wrapper.
fn ec_private_key(input: &[u8], outer: Option<NamedCurve>) -> Result<Jwk, PemError> {
    let err = der_error("EC private key");
    let mut reader = Reader::new(input);
    let mut key = reader.sequence("ECPrivateKey").map_err(&err)?;
    reader.finish("ECPrivateKey").map_err(&err)?;
    let version = key.small_unsigned("version").map_err(&err)?;
    if version != 1 {
        return Err(PemError::UnsupportedVersion {
            structure: "ECPrivateKey",
            version,
        });
    }
    let scalar = key.octet_string("privateKey").map_err(&err)?;
    let inner = match key.optional(der::context(0), "parameters").map_err(&err)? {
        Some(explicit) => {
            let mut params = Reader::new(explicit);
            let (tag, contents) = params.any("parameters").map_err(&err)?;
            params.finish("parameters").map_err(&err)?;
            Some(curve_of_parameters(tag, contents)?)
        }
        None => None,
    };
    let public = match key.optional(der::context(1), "publicKey").map_err(&err)? {
        Some(explicit) => {
            let mut bits = Reader::new(explicit);
            let point = bits.bit_string_bytes("publicKey").map_err(&err)?;
            bits.finish("publicKey").map_err(&err)?;
            Some(point)
        }
        None => None,
    };
    key.finish("ECPrivateKey").map_err(&err)?;

    let curve = match (inner, outer) {
        (Some(a), Some(b)) if a != b => return Err(PemError::CurveMismatch),
        (Some(c), _) | (None, Some(c)) => c,
        (None, None) => return Err(PemError::MissingCurve),
    };
    let significant = &scalar[scalar.iter().take_while(|&&b| b == 0).count()..];
    if significant.len() > curve.len {
        return Err(PemError::EcPrivateKeyLength {
            crv: curve.crv,
            len: significant.len(),
            max: curve.len,
        });
    }
    let mut d = SecretBytes::with_capacity(curve.len);
    d.0.resize(curve.len - significant.len(), 0);
    d.push(significant);

    let (x, y) = match public {
        Some([0x04, xy @ ..]) if xy.len() == 2 * curve.len => {
            let (x, y) = xy.split_at(curve.len);
            (b64url(x), b64url(y))
        }
        // A compressed point needs the curve's arithmetic to expand; so does a missing one.
        Some([prefix @ (0x02 | 0x03), x @ ..]) if x.len() == curve.len => {
            let (px, py) = public_point(curve, &d)?;
            let y_is_odd = URL_SAFE_NO_PAD
                .decode(&py)
                .ok()
                .and_then(|y| y.last().map(|b| b & 1 == 1));
            if px != b64url(x) || y_is_odd != Some(*prefix == 0x03) {
                return Err(PemError::EcPublicKey { crv: curve.crv });
            }
            (px, py)
        }
        None => public_point(curve, &d)?,
        Some(_) => return Err(PemError::EcPublicKey { crv: curve.crv }),
    };
    Ok(Jwk {
        kty: Some("EC".to_owned()),
        crv: Some(curve.crv.to_owned()),
        x: Some(x),
        y: Some(y),
        d: Some(JwkSecret::encode(d.expose())),
        ..Jwk::default()
    })
}

/// The public point of the private scalar `d` (fixed length), computed by AWS-LC: the key is
/// handed to it as a minimal PKCS#8 v1 structure without public key. Only for the curves
/// sealdisk's key material supports (P-256, P-384, P-521).
fn public_point(curve: NamedCurve, d: &SecretBytes) -> Result<(String, String), PemError> {
    let missing = || PemError::MissingEcPublicKey { crv: curve.crv };
    // Every length below is under 128 (d is at most 66 bytes), so each is one byte.
    let mut sec1 = SecretBytes::with_capacity(7 + d.expose().len());
    sec1.push(&[der::SEQUENCE, (5 + d.expose().len()) as u8]);
    sec1.push(&[der::INTEGER, 1, 1]);
    sec1.push(&[der::OCTET_STRING, d.expose().len() as u8]);
    sec1.push(d.expose());
    let algorithm_len = 2 + EC_PUBLIC_KEY.len() + 2 + curve.oid.len();
    let body_len = 3 + 2 + algorithm_len + 2 + sec1.expose().len();
    let mut pkcs8 = SecretBytes::with_capacity(2 + body_len);
    pkcs8.push(&[der::SEQUENCE, body_len as u8]);
    pkcs8.push(&[der::INTEGER, 1, 0]);
    pkcs8.push(&[der::SEQUENCE, algorithm_len as u8]);
    pkcs8.push(&[der::OID, EC_PUBLIC_KEY.len() as u8]);
    pkcs8.push(EC_PUBLIC_KEY);
    pkcs8.push(&[der::OID, curve.oid.len() as u8]);
    pkcs8.push(curve.oid);
    pkcs8.push(&[der::OCTET_STRING, sec1.expose().len() as u8]);
    pkcs8.push(sec1.expose());
    debug_assert!(body_len < 0x80);
    let material = KeyMaterial::from_pkcs8(pkcs8.expose()).map_err(|_| missing())?;
    let public = material.public_jwk();
    match (public.crv.as_deref(), public.x, public.y) {
        (Some(crv), Some(x), Some(y)) if crv == curve.crv => Ok((x, y)),
        _ => Err(missing()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! fixture {
        ($name:literal) => {
            include_str!(concat!("testdata/", $name))
        };
    }

    const RSA_PKCS8: &str = fixture!("rsa2048.pk8.pem");
    const RSA_PKCS1: &str = fixture!("rsa2048.pkcs1.pem");

    fn jwk(pem: &str) -> Jwk {
        private_key_jwk(pem.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
    }

    fn err(pem: &str) -> PemError {
        private_key_jwk(pem.as_bytes()).expect_err("should be refused")
    }

    /// The key AWS-LC builds from the JWK (checking that the parts form one key), and that its
    /// public key is the JWK's.
    fn check_with_aws_lc(key: &Jwk) {
        let material = KeyMaterial::from_jwk(key).unwrap_or_else(|e| panic!("{e}"));
        let public = material.public_jwk();
        assert_eq!(public.n, key.n);
        assert_eq!(public.e, key.e);
        assert_eq!(public.crv, key.crv);
        assert_eq!(public.x, key.x);
        assert_eq!(public.y, key.y);
    }

    fn decoded(text: &Option<String>) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(text.as_deref().unwrap()).unwrap()
    }

    fn decoded_secret(secret: &Option<JwkSecret>) -> Vec<u8> {
        URL_SAFE_NO_PAD
            .decode(secret.as_ref().unwrap().expose())
            .unwrap()
    }

    #[test]
    fn rsa_pkcs1_and_pkcs8_give_the_same_jwk() {
        let from_pkcs8 = jwk(RSA_PKCS8);
        let from_pkcs1 = jwk(RSA_PKCS1);
        assert_eq!(from_pkcs8, from_pkcs1);
        assert_eq!(from_pkcs8.kty.as_deref(), Some("RSA"));
        assert_eq!(decoded(&from_pkcs8.n).len(), 256);
        assert_eq!(decoded(&from_pkcs8.e), [1, 0, 1]);
        for member in [
            &from_pkcs8.d,
            &from_pkcs8.p,
            &from_pkcs8.q,
            &from_pkcs8.dp,
            &from_pkcs8.dq,
            &from_pkcs8.qi,
        ] {
            let bytes = decoded_secret(member);
            assert_ne!(bytes.first(), Some(&0), "no leading zeros");
        }
        assert_eq!(from_pkcs8.key_ops, None);
        assert!(from_pkcs8.crv.is_none() && from_pkcs8.x.is_none());
        check_with_aws_lc(&from_pkcs8);
    }

    #[test]
    fn ec_sec1_and_pkcs8_on_every_curve() {
        for (crv, len, sec1, pkcs8) in [
            (
                "P-256",
                32,
                fixture!("ec-p256.sec1.pem"),
                fixture!("ec-p256.pk8.pem"),
            ),
            (
                "P-384",
                48,
                fixture!("ec-p384.sec1.pem"),
                fixture!("ec-p384.pk8.pem"),
            ),
            (
                "P-521",
                66,
                fixture!("ec-p521.sec1.pem"),
                fixture!("ec-p521.pk8.pem"),
            ),
        ] {
            let from_sec1 = jwk(sec1);
            let from_pkcs8 = jwk(pkcs8);
            assert_eq!(from_sec1, from_pkcs8, "{crv}");
            assert_eq!(from_sec1.kty.as_deref(), Some("EC"));
            assert_eq!(from_sec1.crv.as_deref(), Some(crv));
            assert_eq!(decoded(&from_sec1.x).len(), len, "{crv} x is fixed-length");
            assert_eq!(decoded(&from_sec1.y).len(), len, "{crv} y is fixed-length");
            assert_eq!(decoded_secret(&from_sec1.d).len(), len, "{crv} d");
            assert!(from_sec1.n.is_none() && from_sec1.p.is_none());
            check_with_aws_lc(&from_sec1);
        }
    }

    #[test]
    fn ec_parameters_blocks_are_skipped() {
        // `openssl ecparam -genkey` writes EC PARAMETERS before the key.
        let key = jwk(fixture!("ec-p256-with-params.pem"));
        assert_eq!(key.crv.as_deref(), Some("P-256"));
        check_with_aws_lc(&key);
    }

    #[test]
    fn a_missing_ec_public_key_is_computed() {
        let full = jwk(fixture!("ec-p256.sec1.pem"));
        for pem in [
            fixture!("ec-p256-no-public.sec1.pem"),
            fixture!("ec-p256-no-public.pk8.pem"),
        ] {
            assert_eq!(jwk(pem), full);
        }
    }

    #[test]
    fn secp256k1_is_read_as_p256k_for_the_vault_to_judge() {
        let key = jwk(fixture!("ec-secp256k1.sec1.pem"));
        assert_eq!(key.crv.as_deref(), Some("P-256K"));
        assert_eq!(decoded(&key.x).len(), 32);
    }

    #[test]
    fn text_around_the_block_and_crlf_line_ends_are_fine() {
        let framed = format!("Bag Attributes\n    localKeyID: 01\n{RSA_PKCS8}\ntrailing words\n");
        assert_eq!(jwk(&framed), jwk(RSA_PKCS8));
        let crlf = RSA_PKCS1.replace('\n', "\r\n");
        assert_eq!(jwk(&crlf), jwk(RSA_PKCS1));
        // A certificate next to the key (a bundle) is skipped.
        let bundle = format!("{}{RSA_PKCS8}", fixture!("rsa2048.public.pem"));
        assert_eq!(jwk(&bundle), jwk(RSA_PKCS8));
    }

    #[test]
    fn encrypted_keys_are_refused_with_the_way_out() {
        for pem in [
            fixture!("rsa2048.encrypted.pk8.pem"),
            fixture!("rsa2048.encrypted.pkcs1.pem"),
        ] {
            let e = err(pem);
            assert!(matches!(e, PemError::Encrypted { .. }), "{e:?}");
            assert!(e.to_string().contains("openssl pkey"), "{e}");
        }
    }

    #[test]
    fn wrong_labels_and_other_algorithms_are_refused() {
        assert_eq!(
            err(fixture!("rsa2048.public.pem")),
            PemError::NoPrivateKey {
                found: vec!["PUBLIC KEY".to_owned()]
            }
        );
        let ssh = "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n";
        assert_eq!(
            err(ssh),
            PemError::UnsupportedFormat {
                label: "OPENSSH PRIVATE KEY".to_owned()
            }
        );
        // An RSA key under the EC label is read as SEC 1 and fails as such.
        let relabelled = RSA_PKCS1.replace("RSA PRIVATE KEY", "EC PRIVATE KEY");
        assert!(matches!(
            err(&relabelled),
            PemError::UnsupportedVersion {
                structure: "ECPrivateKey",
                version: 0
            }
        ));
        let relabelled = fixture!("ec-p256.sec1.pem").replace("EC PRIVATE KEY", "RSA PRIVATE KEY");
        assert_eq!(
            err(&relabelled).to_string(),
            "the RSA private key is not valid DER: expected INTEGER for the modulus, found OCTET \
             STRING."
        );
        assert_eq!(
            err(fixture!("ed25519.pk8.pem")),
            PemError::UnsupportedAlgorithm {
                name: "Ed25519".to_owned()
            }
        );
        assert_eq!(
            err(fixture!("rsa2048-3prime.pk8.pem")),
            PemError::MultiPrimeRsa
        );
        assert_eq!(
            err(fixture!("ec-p256-explicit.sec1.pem")),
            PemError::ExplicitCurve
        );
        let two = format!("{RSA_PKCS8}{}", fixture!("ec-p256.pk8.pem"));
        assert_eq!(err(&two), PemError::SeveralKeys { count: 2 });
    }

    #[test]
    fn garbage_is_refused() {
        assert_eq!(err(""), PemError::NoPemBlock);
        assert_eq!(err("hello world"), PemError::NoPemBlock);
        assert_eq!(
            private_key_jwk(&[0x30, 0x82, 0xFF, 0xFE, 0x00]).unwrap_err(),
            PemError::NotText
        );
        let not_base64 = "-----BEGIN PRIVATE KEY-----\nnot*base64!\n-----END PRIVATE KEY-----\n";
        assert!(matches!(err(not_base64), PemError::Base64 { .. }));
        let not_der = "-----BEGIN PRIVATE KEY-----\naGVsbG8gd29ybGQ=\n-----END PRIVATE KEY-----\n";
        assert!(matches!(err(not_der), PemError::Der { .. }));
        let empty = "-----BEGIN RSA PRIVATE KEY-----\n-----END RSA PRIVATE KEY-----\n";
        assert!(matches!(err(empty), PemError::Der { .. }));
        let mismatched = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        assert!(matches!(err(mismatched), PemError::Unterminated { .. }));
    }

    #[test]
    fn truncated_keys_are_refused_at_every_length() {
        for pem in [RSA_PKCS1, RSA_PKCS8, fixture!("ec-p521.sec1.pem")] {
            let block = &blocks(pem).unwrap()[0];
            let der = decode_body(block, &block.body).unwrap();
            let der = der.expose();
            for len in 0..der.len() {
                let cut = format!(
                    "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
                    STANDARD.encode(&der[..len]),
                    label = block.label
                );
                let e = err(&cut);
                assert!(matches!(e, PemError::Der { .. }), "{len}: {e:?}");
            }
        }
        // Cut inside the text: the END line goes missing.
        let cut = &RSA_PKCS8[..RSA_PKCS8.len() / 2];
        assert!(matches!(err(cut), PemError::Unterminated { .. }));
    }

    #[test]
    fn flipped_bytes_never_panic() {
        for pem in [RSA_PKCS8, fixture!("ec-p256.sec1.pem")] {
            let block = &blocks(pem).unwrap()[0];
            let der = decode_body(block, &block.body).unwrap().expose().to_vec();
            for i in (0..der.len()).filter(|i| *i < 64 || i % 7 == 0) {
                for flip in [0x01, 0x80, 0xFF] {
                    let mut bad = der.clone();
                    bad[i] ^= flip;
                    let pem = format!(
                        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
                        STANDARD.encode(&bad),
                        label = block.label
                    );
                    // Either an error or a JWK the vault will check; never a panic.
                    let _ = private_key_jwk(pem.as_bytes());
                }
            }
        }
    }

    #[test]
    fn compressed_public_keys_are_expanded_and_checked() {
        let full = jwk(fixture!("ec-p384.sec1.pem"));
        let block = &blocks(fixture!("ec-p384.sec1.pem")).unwrap()[0];
        let der = decode_body(block, &block.body).unwrap().expose().to_vec();
        // The uncompressed point is the last 97 bytes; swap it for its compressed form.
        let point = &der[der.len() - 97..];
        let y_odd = point[96] & 1 == 1;
        let compressed = |prefix: u8| {
            let mut c = vec![prefix];
            c.extend_from_slice(&point[1..49]);
            // SEQUENCE { ... [1] { BIT STRING { 00 || point } } } with the new lengths.
            let mut body = der[3..der.len() - 97 - 5].to_vec();
            body.extend_from_slice(&[0xA1, 0x34, 0x03, 0x32, 0x00]);
            body.extend_from_slice(&c);
            assert!(body.len() < 0x80);
            let mut out = vec![0x30, body.len() as u8];
            out.extend_from_slice(&body);
            format!(
                "-----BEGIN EC PRIVATE KEY-----\n{}\n-----END EC PRIVATE KEY-----\n",
                STANDARD.encode(&out)
            )
        };
        let (right, wrong) = if y_odd { (3, 2) } else { (2, 3) };
        assert_eq!(jwk(&compressed(right)), full);
        assert_eq!(
            err(&compressed(wrong)),
            PemError::EcPublicKey { crv: "P-384" }
        );
    }

    #[test]
    fn ec_structure_errors() {
        // SEC 1 without parameters outside PKCS#8.
        let d = [7u8; 32];
        let mut sec1 = vec![0x30, 0x25, 0x02, 0x01, 0x01, 0x04, 0x20];
        sec1.extend_from_slice(&d);
        let pem = |der: &[u8]| {
            format!(
                "-----BEGIN EC PRIVATE KEY-----\n{}\n-----END EC PRIVATE KEY-----\n",
                STANDARD.encode(der)
            )
        };
        assert_eq!(err(&pem(&sec1)), PemError::MissingCurve);
        // A private scalar longer than the curve's: [0] P-256 after a 33-byte scalar.
        let mut long = vec![0x30, 0x32, 0x02, 0x01, 0x01, 0x04, 0x21, 0x01];
        long.extend_from_slice(&d);
        long.extend_from_slice(&[0xA0, 0x0A, 0x06, 0x08]);
        long.extend_from_slice(CURVES[0].oid);
        assert_eq!(
            err(&pem(&long)),
            PemError::EcPrivateKeyLength {
                crv: "P-256",
                len: 33,
                max: 32
            }
        );
        // A public key of the wrong size.
        let mut bad_point = vec![0x30, 0x38, 0x02, 0x01, 0x01, 0x04, 0x20];
        bad_point.extend_from_slice(&d);
        bad_point.extend_from_slice(&[0xA0, 0x0A, 0x06, 0x08]);
        bad_point.extend_from_slice(CURVES[0].oid);
        bad_point.extend_from_slice(&[0xA1, 0x05, 0x03, 0x03, 0x00, 0x04, 0x01]);
        assert_eq!(
            err(&pem(&bad_point)),
            PemError::EcPublicKey { crv: "P-256" }
        );
        // Brainpool P-256r1 (1.3.36.3.3.2.8.1.1.7).
        let mut brainpool = vec![0x30, 0x32, 0x02, 0x01, 0x01, 0x04, 0x20];
        brainpool.extend_from_slice(&d);
        brainpool.extend_from_slice(&[
            0xA0, 0x0B, 0x06, 0x09, 0x2B, 0x24, 0x03, 0x03, 0x02, 0x08, 0x01, 0x01, 0x07,
        ]);
        assert_eq!(
            err(&pem(&brainpool)),
            PemError::UnsupportedCurve {
                oid: "1.3.36.3.3.2.8.1.1.7".to_owned()
            }
        );
    }

    #[test]
    fn debug_and_errors_never_show_key_bytes() {
        let key = jwk(RSA_PKCS1);
        let d = key.d.as_ref().unwrap().expose().to_owned();
        let shown = format!("{key:?}");
        assert!(!shown.contains(&d[..16]), "{shown}");
        assert!(shown.contains("<redacted>"));
        let bytes = SecretBytes::new(vec![0xAB; 4]);
        assert_eq!(format!("{bytes:?}"), "SecretBytes(<4 bytes redacted>)");
    }
}
