//! The audit log's bytes: the header line, entry lines, the head file and the MAC key that
//! authenticates them. Pure functions of values; no I/O.

use std::fmt;

use aws_lc_rs::{hkdf, hmac};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::{OffsetDateTime, UtcOffset};

use super::error::{Fault, Location, TamperReason};

/// `format` of the log's header line.
pub(super) const FORMAT: &str = "sealdisk-audit";
/// `format` of the head file.
pub(super) const HEAD_FORMAT: &str = "sealdisk-audit-head";
/// The one format version this build reads and writes (header line and head file).
pub(super) const VERSION: u32 = 1;
/// HKDF-SHA256 `info` deriving the audit key from the platform root key.
const KEY_INFO: &[u8] = b"sealdisk audit log v1";
/// Message whose MAC (first 8 bytes) identifies the audit key in the header line.
const KEY_ID_MESSAGE: &[u8] = b"sealdisk audit key id";
/// Bytes of a hex-encoded 32-byte MAC.
const HEX_LEN: usize = 64;

/// The HMAC-SHA256 key of the chain: HKDF-SHA256 of the platform root key with an empty salt
/// and `info` = "sealdisk audit log v1", 32 bytes.
pub(super) struct AuditKey(hmac::Key);

impl fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuditKey(<redacted>)")
    }
}

impl AuditKey {
    pub(super) fn derive(root: &crypto::RootKey) -> Self {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(root.expose());
        let okm = prk
            .expand(&[KEY_INFO], hmac::HMAC_SHA256)
            // Fails only for outputs longer than 255 hash lengths; this is one.
            .expect("a 32-byte HKDF-SHA256 output is always available");
        Self(hmac::Key::from(okm))
    }

    fn mac(&self, parts: &[&[u8]]) -> ChainHash {
        let mut context = hmac::Context::with_key(&self.0);
        for part in parts {
            context.update(part);
        }
        let tag = context.sign();
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        ChainHash(out)
    }

    fn verify(&self, parts: &[&[u8]], expected: &ChainHash) -> bool {
        let actual = self.mac(parts);
        aws_lc_rs::constant_time::verify_slices_are_equal(&actual.0, &expected.0).is_ok()
    }

    /// Identifies the key without revealing it: hex of the first 8 bytes of
    /// HMAC(audit key, "sealdisk audit key id").
    pub(super) fn id(&self) -> String {
        hex(&self.mac(&[KEY_ID_MESSAGE]).0[..8])
    }
}

/// A 32-byte chain hash (an HMAC-SHA256 tag), written as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChainHash([u8; 32]);

impl ChainHash {
    /// The `prevHash` of the first entry: 32 zero bytes.
    pub const GENESIS: ChainHash = ChainHash([0; 32]);

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses exactly 64 lowercase hex digits (the only spelling the log uses).
    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        if bytes.len() != HEX_LEN {
            return None;
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
            *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
        }
        Some(ChainHash(out))
    }
}

fn nibble(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    out
}

impl fmt::Display for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChainHash({self})")
    }
}

impl Serialize for ChainHash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex(&self.0))
    }
}

impl<'de> Deserialize<'de> for ChainHash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        ChainHash::from_hex(&text)
            .ok_or_else(|| serde::de::Error::custom("expected 64 lowercase hex digits"))
    }
}

/// What the caller of `AuditLog::append` records; the log adds `seq`, `time` and the hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Entra object id of the authenticated caller (or `SYSTEM_CALLER` for the log itself).
    pub caller_object_id: String,
    /// Vault name, as the caller addressed it.
    pub vault: String,
    /// Key name, for key operations.
    pub key: Option<String>,
    /// Key version, when one was addressed or created.
    pub version: Option<String>,
    /// Operation name, e.g. "KeyCreate", "KeyUnwrap", "VaultAccessPolicyChange".
    pub operation: String,
    /// "Success" or the Azure error code the caller received, e.g. "Forbidden".
    pub result: String,
    /// Free-form context a person reading the log needs, never key material.
    pub detail: Option<String>,
}

/// One line of the audit log. Its JSON form (camelCase, members in this order) is the line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditEntry {
    /// Position in the log, from 0, without gaps.
    pub seq: u64,
    /// When the entry was appended, in UTC.
    #[serde(with = "rfc3339")]
    pub time: OffsetDateTime,
    pub caller_object_id: String,
    pub vault: String,
    pub key: Option<String>,
    pub version: Option<String>,
    pub operation: String,
    pub result: String,
    pub detail: Option<String>,
    /// `hash` of the entry before, `ChainHash::GENESIS` for seq 0.
    pub prev_hash: ChainHash,
    /// HMAC-SHA256 under the audit key of the line without this member.
    pub hash: ChainHash,
}

mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;

    pub(super) fn serialize<S: Serializer>(
        time: &OffsetDateTime,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let text = time.format(&Rfc3339).map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(&text)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<OffsetDateTime, D::Error> {
        let text = String::deserialize(deserializer)?;
        OffsetDateTime::parse(&text, &Rfc3339).map_err(serde::de::Error::custom)
    }
}

/// Builds the entry that follows `(seq, prev_hash)` and its line, newline included.
pub(super) fn seal_entry(
    key: &AuditKey,
    seq: u64,
    prev_hash: ChainHash,
    time: OffsetDateTime,
    record: AuditRecord,
) -> Result<(AuditEntry, Vec<u8>), super::AuditError> {
    use time::format_description::well_known::Rfc3339;

    let time = time.to_offset(UtcOffset::UTC);
    // Surface an unrepresentable time as itself rather than as a serde error.
    time.format(&Rfc3339).map_err(super::AuditError::Time)?;
    let mut entry = AuditEntry {
        seq,
        time,
        caller_object_id: record.caller_object_id,
        vault: record.vault,
        key: record.key,
        version: record.version,
        operation: record.operation,
        result: record.result,
        detail: record.detail,
        prev_hash,
        hash: ChainHash::GENESIS,
    };
    let mut line = serde_json::to_vec(&entry).map_err(super::AuditError::Encode)?;
    entry.hash = seal_last_member(key, &mut line, "hash");
    line.push(b'\n');
    Ok((entry, line))
}

/// Checks one entry line (without its newline): layout, then MAC, then JSON.
pub(super) fn open_entry(key: &AuditKey, line: &[u8], at: Location) -> Result<AuditEntry, Fault> {
    let (body, hash) = split_last_member(line, "hash")
        .ok_or_else(|| Fault::unparsable(at, "the last member is not \"hash\":\"<64 hex>\""))?;
    if !key.verify(&[body, b"}"], &hash) {
        return Err(Fault::tampered(at, TamperReason::BadHash));
    }
    serde_json::from_slice(line).map_err(|e| Fault::unparsable(at, e))
}

/// Replaces the placeholder value of the last member `name` of the compact JSON object `json`
/// with the MAC of the object without that member, and returns the MAC.
fn seal_last_member(key: &AuditKey, json: &mut [u8], name: &str) -> ChainHash {
    let (body, _) = split_last_member(json, name)
        .expect("serde_json writes the placeholder hash as the last member");
    let mac = key.mac(&[body, b"}"]);
    let end = json.len() - 2;
    json[end - HEX_LEN..end].copy_from_slice(hex(&mac.0).as_bytes());
    mac
}

/// Splits `json` = `BODY,"NAME":"HEX"}` into `BODY` and the parsed `HEX`.
fn split_last_member<'a>(json: &'a [u8], name: &str) -> Option<(&'a [u8], ChainHash)> {
    let suffix_len = name.len() + HEX_LEN + 7; // ,"NAME":"HEX"}
    let body_len = json.len().checked_sub(suffix_len)?;
    let (body, suffix) = json.split_at(body_len);
    let rest = suffix.strip_prefix(b",\"")?.strip_prefix(name.as_bytes())?;
    let rest = rest.strip_prefix(b"\":\"")?.strip_suffix(b"\"}")?;
    let hash = ChainHash::from_hex(std::str::from_utf8(rest).ok()?)?;
    Some((body, hash))
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Header {
    format: String,
    version: u32,
    key_id: String,
}

/// The first line of a new log, newline included.
pub(super) fn header_line(key: &AuditKey) -> Vec<u8> {
    let header = Header {
        format: FORMAT.to_owned(),
        version: VERSION,
        key_id: key.id(),
    };
    let mut line = serde_json::to_vec(&header).expect("a header always serializes");
    line.push(b'\n');
    line
}

/// Checks the header line (without its newline): format, then version, then key id.
pub(super) fn check_header(key: &AuditKey, line: &[u8]) -> Result<(), Fault> {
    #[derive(Deserialize)]
    struct Probe {
        format: String,
        version: u32,
    }
    let at = Location::Line(1);
    let probe: Probe = serde_json::from_slice(line).map_err(|e| Fault::unparsable(at, e))?;
    if probe.format != FORMAT {
        return Err(Fault::unparsable(
            at,
            format_args!("format {:?} is not {FORMAT:?}", probe.format),
        ));
    }
    if probe.version != VERSION {
        return Err(Fault::UnsupportedVersion {
            version: probe.version,
        });
    }
    let header: Header = serde_json::from_slice(line).map_err(|e| Fault::unparsable(at, e))?;
    if header.key_id != key.id() {
        return Err(Fault::WrongKey);
    }
    Ok(())
}

/// The head file: how many entries the log holds and the last one's hash, as of the last
/// acknowledged append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Head {
    pub(super) entries: u64,
    pub(super) last_hash: ChainHash,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct HeadRecord {
    format: String,
    version: u32,
    entries: u64,
    last_hash: ChainHash,
    mac: ChainHash,
}

impl Head {
    pub(super) const EMPTY: Head = Head {
        entries: 0,
        last_hash: ChainHash::GENESIS,
    };

    /// The head file's bytes, newline included.
    pub(super) fn encode(&self, key: &AuditKey) -> Vec<u8> {
        let record = HeadRecord {
            format: HEAD_FORMAT.to_owned(),
            version: VERSION,
            entries: self.entries,
            last_hash: self.last_hash,
            mac: ChainHash::GENESIS,
        };
        let mut bytes = serde_json::to_vec(&record).expect("a head record always serializes");
        seal_last_member(key, &mut bytes, "mac");
        bytes.push(b'\n');
        bytes
    }

    pub(super) fn decode(key: &AuditKey, bytes: &[u8]) -> Result<Head, Fault> {
        let at = Location::HeadFile;
        let line = bytes
            .strip_suffix(b"\n")
            .ok_or_else(|| Fault::unparsable(at, "no final newline"))?;
        let (body, mac) = split_last_member(line, "mac")
            .ok_or_else(|| Fault::unparsable(at, "the last member is not \"mac\":\"<64 hex>\""))?;
        if !key.verify(&[body, b"}"], &mac) {
            return Err(Fault::tampered(at, TamperReason::BadHeadMac));
        }
        let record: HeadRecord =
            serde_json::from_slice(line).map_err(|e| Fault::unparsable(at, e))?;
        if record.format != HEAD_FORMAT {
            return Err(Fault::unparsable(
                at,
                format_args!("format {:?} is not {HEAD_FORMAT:?}", record.format),
            ));
        }
        if record.version != VERSION {
            return Err(Fault::UnsupportedVersion {
                version: record.version,
            });
        }
        Ok(Head {
            entries: record.entries,
            last_hash: record.last_hash,
        })
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    fn root(byte: u8) -> crypto::RootKey {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.key");
        std::fs::write(&path, [byte; 32]).unwrap();
        crypto::RootKey::load_or_create(&path).unwrap()
    }

    fn record() -> AuditRecord {
        AuditRecord {
            caller_object_id: "c0ffee00-0000-4000-8000-000000000001".into(),
            vault: "Vault1".into(),
            key: Some("disk-key".into()),
            version: None,
            operation: "KeyUnwrap".into(),
            result: "Success".into(),
            detail: Some("line\nbreak \"quoted\" é".into()),
        }
    }

    /// The documented derivation, spelled out with plain HMAC (RFC 5869, one output block),
    /// so an offline verifier in another language can reproduce it.
    #[test]
    fn key_is_hkdf_sha256_of_the_root_key() {
        let root = root(0x42);
        let key = AuditKey::derive(&root);
        let salt = hmac::Key::new(hmac::HMAC_SHA256, &[0u8; 32]);
        let prk = hmac::sign(&salt, root.expose());
        let prk = hmac::Key::new(hmac::HMAC_SHA256, prk.as_ref());
        let okm = hmac::sign(&prk, b"sealdisk audit log v1\x01");
        let manual = hmac::Key::new(hmac::HMAC_SHA256, okm.as_ref());
        let expected = hmac::sign(&manual, b"message");
        assert_eq!(key.mac(&[b"mess", b"age"]).as_bytes(), expected.as_ref());
        assert_ne!(
            AuditKey::derive(&root).id(),
            AuditKey::derive(&self::root(1)).id()
        );
        assert_eq!(format!("{key:?}"), "AuditKey(<redacted>)");
    }

    #[test]
    fn entry_line_is_its_json_and_its_hash_covers_the_rest() {
        let key = AuditKey::derive(&root(7));
        let time = datetime!(2025-01-02 04:04:05.25 +01:00);
        let (entry, line) = seal_entry(&key, 3, ChainHash::GENESIS, time, record()).unwrap();
        assert_eq!(entry.time.offset(), UtcOffset::UTC);
        assert_eq!(line.last(), Some(&b'\n'));
        let line = &line[..line.len() - 1];
        assert!(
            !line.contains(&b'\n'),
            "newlines inside strings are escaped"
        );
        assert_eq!(serde_json::to_vec(&entry).unwrap(), line);
        let text = std::str::from_utf8(line).unwrap();
        assert!(text.starts_with(r#"{"seq":3,"time":"2025-01-02T03:04:05.25Z","callerObjectId""#));
        assert!(text.contains(r#""version":null,"#));
        assert_eq!(open_entry(&key, line, Location::Line(5)).unwrap(), entry);
        // The MAC input is the line without `,"hash":"…"`.
        let body = &text[..text.len() - 75];
        assert_eq!(key.mac(&[body.as_bytes(), b"}"]), entry.hash);
    }

    #[test]
    fn entry_faults_are_classified() {
        let key = AuditKey::derive(&root(7));
        let time = datetime!(2025-01-02 03:04:05 UTC);
        let (_, line) = seal_entry(&key, 0, ChainHash::GENESIS, time, record()).unwrap();
        let line = &line[..line.len() - 1];
        let at = Location::Line(2);

        let mut edited = line.to_vec();
        let pos = line.windows(6).position(|w| w == b"Unwrap").unwrap();
        edited[pos] ^= 0x01;
        let fault = open_entry(&key, &edited, at).unwrap_err();
        assert_eq!(fault, Fault::tampered(at, TamperReason::BadHash));

        let other = AuditKey::derive(&root(8));
        let fault = open_entry(&other, line, at).unwrap_err();
        assert_eq!(fault, Fault::tampered(at, TamperReason::BadHash));

        for garbage in [&b""[..], b"{}", b"not json", &line[..line.len() - 1]] {
            let fault = open_entry(&key, garbage, at).unwrap_err();
            assert!(
                matches!(
                    fault,
                    Fault::Tampered {
                        reason: TamperReason::Unparsable { .. },
                        ..
                    }
                ),
                "{fault:?}"
            );
        }
        let upper = String::from_utf8(line.to_vec()).unwrap();
        let (body, hash) = upper.split_at(upper.len() - 66);
        let upper = format!("{body}{}", hash.to_uppercase());
        assert!(matches!(
            open_entry(&key, upper.as_bytes(), at),
            Err(Fault::Tampered {
                reason: TamperReason::Unparsable { .. },
                ..
            })
        ));
    }

    #[test]
    fn header_checks_format_version_and_key() {
        let key = AuditKey::derive(&root(7));
        let line = header_line(&key);
        let line = &line[..line.len() - 1];
        check_header(&key, line).unwrap();
        let id = key.id();
        assert_eq!(
            std::str::from_utf8(line).unwrap(),
            format!(r#"{{"format":"sealdisk-audit","version":1,"keyId":"{id}"}}"#)
        );
        assert_eq!(
            check_header(&AuditKey::derive(&root(8)), line),
            Err(Fault::WrongKey)
        );
        assert_eq!(
            check_header(
                &key,
                br#"{"format":"sealdisk-audit","version":2,"new":true}"#
            ),
            Err(Fault::UnsupportedVersion { version: 2 })
        );
        assert!(matches!(
            check_header(&key, br#"{"format":"other","version":1}"#),
            Err(Fault::Tampered {
                reason: TamperReason::Unparsable { .. },
                ..
            })
        ));
    }

    #[test]
    fn head_round_trips_and_rejects_edits() {
        let key = AuditKey::derive(&root(7));
        let head = Head {
            entries: 12,
            last_hash: ChainHash([0xab; 32]),
        };
        let bytes = head.encode(&key);
        assert!(bytes.starts_with(
            br#"{"format":"sealdisk-audit-head","version":1,"entries":12,"lastHash":"abab"#
        ));
        assert_eq!(Head::decode(&key, &bytes), Ok(head));
        let edited = String::from_utf8(bytes).unwrap().replace(":12,", ":11,");
        assert_eq!(
            Head::decode(&key, edited.as_bytes()),
            Err(Fault::tampered(
                Location::HeadFile,
                TamperReason::BadHeadMac
            ))
        );
    }

    #[test]
    fn chain_hash_hex_is_strict() {
        let hash = ChainHash([0x0f; 32]);
        assert_eq!(ChainHash::from_hex(&hash.to_string()), Some(hash));
        assert_eq!(ChainHash::from_hex(&"0F".repeat(32)), None);
        assert_eq!(ChainHash::from_hex(&"0f".repeat(31)), None);
        assert_eq!(ChainHash::from_hex(&"0g".repeat(32)), None);
    }
}
