//! A strict reader for the part of DER (ITU-T X.690) that private key files use: definite,
//! minimal lengths, single-byte tags, `INTEGER`, `BIT STRING`, `OCTET STRING`,
//! `OBJECT IDENTIFIER`, `SEQUENCE` and context-specific tags (other elements are read whole).
//!
//! Sans-I/O and allocation-free: every value is a slice of the input, so reading a private key
//! makes no copy of it. Malformed input of any kind (truncated, indefinite or non-minimal
//! lengths, wrong tags, negative integers, trailing bytes) is an error that names the element
//! being read; errors never contain the input's bytes.

use std::fmt;

/// `INTEGER`.
pub const INTEGER: u8 = 0x02;
/// `BIT STRING`.
pub const BIT_STRING: u8 = 0x03;
/// `OCTET STRING`.
pub const OCTET_STRING: u8 = 0x04;
/// `NULL`.
pub const NULL: u8 = 0x05;
/// `OBJECT IDENTIFIER`.
pub const OID: u8 = 0x06;
/// `SEQUENCE` (constructed).
pub const SEQUENCE: u8 = 0x30;

/// A constructed context-specific tag `[n]` (explicit tagging, e.g. SEC 1's `[0] parameters`).
pub const fn context(n: u8) -> u8 {
    0xA0 | n
}

/// A primitive context-specific tag `[n]` (implicit tagging of a primitive type, e.g.
/// PKCS#8 v2's `[1] publicKey`).
pub const fn context_primitive(n: u8) -> u8 {
    0x80 | n
}

/// Longest length field accepted, in bytes after the first (4 GiB is far beyond any key).
const MAX_LENGTH_BYTES: usize = 4;

/// What is wrong with a DER input. `what` names the element being read (e.g. "RSA modulus").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DerError {
    /// The input ends before the element does.
    Truncated { what: &'static str },
    /// The element has another tag than the structure needs here.
    UnexpectedTag {
        what: &'static str,
        expected: u8,
        found: u8,
    },
    /// Multi-byte tag numbers (low five bits all set) do not occur in key structures.
    HighTagNumber { what: &'static str },
    /// The length is indefinite, not minimal, or longer than [`MAX_LENGTH_BYTES`].
    BadLength { what: &'static str },
    /// An `INTEGER` is empty, negative or has a superfluous leading byte.
    BadInteger { what: &'static str },
    /// An `INTEGER` meant as a small number (a version) does not fit in 64 bits.
    IntegerTooLarge { what: &'static str },
    /// A `BIT STRING` is empty or has unused bits where whole bytes are needed.
    BadBitString { what: &'static str },
    /// Bytes follow the end of a structure.
    TrailingData { what: &'static str },
}

impl fmt::Display for DerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DerError::Truncated { what } => write!(f, "the data ends inside the {what}"),
            DerError::UnexpectedTag {
                what,
                expected,
                found,
            } => write!(
                f,
                "expected {} for the {what}, found {}",
                tag_name(*expected),
                tag_name(*found)
            ),
            DerError::HighTagNumber { what } => {
                write!(
                    f,
                    "the {what} has a multi-byte tag, which key files never use"
                )
            }
            DerError::BadLength { what } => write!(
                f,
                "the length of the {what} is not in DER form (definite and minimal)"
            ),
            DerError::BadInteger { what } => write!(
                f,
                "the {what} is not a DER INTEGER (empty, negative or with a superfluous leading \
                 byte)"
            ),
            DerError::IntegerTooLarge { what } => write!(f, "the {what} is too large"),
            DerError::BadBitString { what } => {
                write!(f, "the {what} is not a BIT STRING of whole bytes")
            }
            DerError::TrailingData { what } => write!(f, "unexpected data after the {what}"),
        }
    }
}

impl std::error::Error for DerError {}

/// The ASN.1 name of a tag, for messages.
fn tag_name(tag: u8) -> String {
    match tag {
        INTEGER => "INTEGER".to_owned(),
        BIT_STRING => "BIT STRING".to_owned(),
        OCTET_STRING => "OCTET STRING".to_owned(),
        NULL => "NULL".to_owned(),
        OID => "OBJECT IDENTIFIER".to_owned(),
        SEQUENCE => "SEQUENCE".to_owned(),
        t if t & 0xC0 == 0x80 => format!("[{}]", t & 0x1F),
        t => format!("tag 0x{t:02x}"),
    }
}

/// Reads DER elements one after the other from a slice.
#[derive(Debug, Clone, Copy)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `input`.
    pub fn new(input: &'a [u8]) -> Self {
        Reader { rest: input }
    }

    /// True when every byte was read.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The tag of the next element, if any.
    pub fn peek_tag(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    /// Reads the next element, whatever its tag: `(tag, contents)`.
    pub fn any(&mut self, what: &'static str) -> Result<(u8, &'a [u8]), DerError> {
        let (&tag, after_tag) = self
            .rest
            .split_first()
            .ok_or(DerError::Truncated { what })?;
        if tag & 0x1F == 0x1F {
            return Err(DerError::HighTagNumber { what });
        }
        let (&first, after_first) = after_tag
            .split_first()
            .ok_or(DerError::Truncated { what })?;
        let (len, after_len) = if first < 0x80 {
            (usize::from(first), after_first)
        } else {
            // 0x80 is BER's indefinite length; DER never uses it.
            let count = usize::from(first & 0x7F);
            if count == 0 || count > MAX_LENGTH_BYTES {
                return Err(DerError::BadLength { what });
            }
            if after_first.len() < count {
                return Err(DerError::Truncated { what });
            }
            let (bytes, after) = after_first.split_at(count);
            // Minimal: no leading zero byte, and the long form only for lengths >= 128.
            if bytes[0] == 0 {
                return Err(DerError::BadLength { what });
            }
            let len = bytes
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            if len < 0x80 {
                return Err(DerError::BadLength { what });
            }
            (len, after)
        };
        if after_len.len() < len {
            return Err(DerError::Truncated { what });
        }
        let (contents, rest) = after_len.split_at(len);
        self.rest = rest;
        Ok((tag, contents))
    }

    /// Reads the next element, which must have `tag`; returns its contents.
    pub fn read(&mut self, tag: u8, what: &'static str) -> Result<&'a [u8], DerError> {
        match self.peek_tag() {
            None => Err(DerError::Truncated { what }),
            Some(found) if found != tag => Err(DerError::UnexpectedTag {
                what,
                expected: tag,
                found,
            }),
            Some(_) => self.any(what).map(|(_, contents)| contents),
        }
    }

    /// Reads the next element if it has `tag`; `None` (nothing read) when the input is over or
    /// the next element has another tag.
    pub fn optional(&mut self, tag: u8, what: &'static str) -> Result<Option<&'a [u8]>, DerError> {
        if self.peek_tag() == Some(tag) {
            self.read(tag, what).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Reads a `SEQUENCE`; returns a reader over its contents.
    pub fn sequence(&mut self, what: &'static str) -> Result<Reader<'a>, DerError> {
        self.read(SEQUENCE, what).map(Reader::new)
    }

    /// Reads a non-negative `INTEGER`; returns its magnitude, big-endian without leading zeros
    /// (empty for zero).
    pub fn unsigned(&mut self, what: &'static str) -> Result<&'a [u8], DerError> {
        let bytes = self.read(INTEGER, what)?;
        match bytes {
            [] => Err(DerError::BadInteger { what }),
            // Negative.
            [first, ..] if first & 0x80 != 0 => Err(DerError::BadInteger { what }),
            // A leading zero is allowed only to keep the sign bit clear.
            [0, second, ..] if second & 0x80 == 0 => Err(DerError::BadInteger { what }),
            [0, rest @ ..] => Ok(rest),
            _ => Ok(bytes),
        }
    }

    /// Reads a non-negative `INTEGER` that fits in 64 bits (a version number).
    pub fn small_unsigned(&mut self, what: &'static str) -> Result<u64, DerError> {
        let magnitude = self.unsigned(what)?;
        if magnitude.len() > 8 {
            return Err(DerError::IntegerTooLarge { what });
        }
        Ok(magnitude
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    /// Reads an `OCTET STRING`.
    pub fn octet_string(&mut self, what: &'static str) -> Result<&'a [u8], DerError> {
        self.read(OCTET_STRING, what)
    }

    /// Reads an `OBJECT IDENTIFIER`; returns its encoded contents (compare with the encodings
    /// of known identifiers).
    pub fn oid(&mut self, what: &'static str) -> Result<&'a [u8], DerError> {
        self.read(OID, what)
    }

    /// Reads a `BIT STRING` of whole bytes (no unused bits); returns the bytes.
    pub fn bit_string_bytes(&mut self, what: &'static str) -> Result<&'a [u8], DerError> {
        // The contents start with the number of unused bits in the last byte.
        match self.read(BIT_STRING, what)?.split_first() {
            Some((0, bytes)) => Ok(bytes),
            _ => Err(DerError::BadBitString { what }),
        }
    }

    /// Checks that nothing follows; `what` names the structure that should have ended.
    pub fn finish(self, what: &'static str) -> Result<(), DerError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(DerError::TrailingData { what })
        }
    }
}

/// Decodes the contents of an `OBJECT IDENTIFIER` to dotted text (for messages about
/// identifiers sealdisk does not know); `None` when the encoding is invalid.
pub fn dotted_oid(contents: &[u8]) -> Option<String> {
    let mut arcs: Vec<u64> = Vec::new();
    let mut value: u64 = 0;
    let mut in_arc = false;
    for &b in contents {
        // A leading 0x80 would be a non-minimal arc.
        if !in_arc && b == 0x80 {
            return None;
        }
        value = value.checked_mul(128)? | u64::from(b & 0x7F);
        in_arc = b & 0x80 != 0;
        if !in_arc {
            arcs.push(value);
            value = 0;
        }
    }
    if in_arc || arcs.is_empty() {
        return None;
    }
    let first = arcs[0];
    let (a, b) = match first {
        0..=39 => (0, first),
        40..=79 => (1, first - 40),
        _ => (2, first - 80),
    };
    let mut text = format!("{a}.{b}");
    for arc in &arcs[1..] {
        text.push('.');
        text.push_str(&arc.to_string());
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_nested_structure() {
        // SEQUENCE { INTEGER 0, OCTET STRING 01 02, [0] { OID 1.2.840.10045.3.1.7 } }
        let der = [
            0x30, 0x13, 0x02, 0x01, 0x00, 0x04, 0x02, 0x01, 0x02, 0xA0, 0x0A, 0x06, 0x08, 0x2A,
            0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07,
        ];
        let mut outer = Reader::new(&der);
        let mut seq = outer.sequence("key").unwrap();
        outer.finish("key").unwrap();
        assert_eq!(seq.small_unsigned("version").unwrap(), 0);
        assert_eq!(seq.octet_string("secret").unwrap(), [1, 2]);
        assert_eq!(seq.optional(context(1), "public").unwrap(), None);
        let params = seq.optional(context(0), "params").unwrap().unwrap();
        let mut params = Reader::new(params);
        let oid = params.oid("curve").unwrap();
        assert_eq!(dotted_oid(oid).unwrap(), "1.2.840.10045.3.1.7");
        params.finish("params").unwrap();
        assert!(seq.is_empty());
        seq.finish("key").unwrap();
    }

    #[test]
    fn long_form_lengths() {
        let mut der = vec![0x04, 0x81, 0x80];
        der.extend_from_slice(&[7; 0x80]);
        assert_eq!(Reader::new(&der).octet_string("s").unwrap().len(), 0x80);
        let mut der = vec![0x04, 0x82, 0x01, 0x00];
        der.extend_from_slice(&[7; 0x100]);
        assert_eq!(Reader::new(&der).octet_string("s").unwrap().len(), 0x100);
    }

    #[test]
    fn integers_are_unsigned_magnitudes() {
        let read = |der: &[u8]| Reader::new(der).unsigned("n").map(<[u8]>::to_vec);
        assert_eq!(read(&[0x02, 0x01, 0x00]).unwrap(), [0u8; 0]);
        assert_eq!(read(&[0x02, 0x01, 0x7F]).unwrap(), [0x7F]);
        assert_eq!(read(&[0x02, 0x02, 0x00, 0x80]).unwrap(), [0x80]);
        assert_eq!(read(&[0x02, 0x03, 0x01, 0x00, 0x01]).unwrap(), [1, 0, 1]);
        for bad in [
            &[0x02, 0x00][..],         // empty
            &[0x02, 0x01, 0x80],       // negative
            &[0x02, 0x02, 0x00, 0x7F], // superfluous leading zero
            &[0x02, 0x02, 0xFF, 0x80], // negative
        ] {
            assert_eq!(
                read(bad),
                Err(DerError::BadInteger { what: "n" }),
                "{bad:x?}"
            );
        }
        let mut big = vec![0x02, 0x09, 0x01];
        big.extend_from_slice(&[0; 8]);
        assert_eq!(
            Reader::new(&big).small_unsigned("v"),
            Err(DerError::IntegerTooLarge { what: "v" })
        );
    }

    #[test]
    fn malformed_input_is_an_error_never_a_panic() {
        let what = "x";
        let cases: &[(&[u8], DerError)] = &[
            (&[], DerError::Truncated { what }),
            (&[0x30], DerError::Truncated { what }),
            (&[0x30, 0x05, 0x02], DerError::Truncated { what }),
            (&[0x30, 0x80, 0x00, 0x00], DerError::BadLength { what }),
            (
                &[0x30, 0x81, 0x05, 0, 0, 0, 0, 0],
                DerError::BadLength { what },
            ),
            (&[0x30, 0x82, 0x00, 0x80], DerError::BadLength { what }),
            (&[0x30, 0x85, 1, 0, 0, 0, 0], DerError::BadLength { what }),
            (
                &[0x30, 0x84, 0xFF, 0xFF, 0xFF, 0xFF],
                DerError::Truncated { what },
            ),
            (&[0x30, 0x82, 0x01], DerError::Truncated { what }),
            (
                &[0x02, 0x01, 0x00],
                DerError::UnexpectedTag {
                    what,
                    expected: SEQUENCE,
                    found: INTEGER,
                },
            ),
        ];
        for (der, expected) in cases {
            assert_eq!(
                Reader::new(der).sequence(what).map(|_| ()),
                Err(*expected),
                "{der:x?}"
            );
        }
        assert_eq!(
            Reader::new(&[0x3F, 0x01, 0x00]).any(what),
            Err(DerError::HighTagNumber { what })
        );
        assert_eq!(
            Reader::new(&[0x03, 0x02, 0x01, 0xFF]).bit_string_bytes(what),
            Err(DerError::BadBitString { what })
        );
        assert_eq!(
            Reader::new(&[0x03, 0x00]).bit_string_bytes(what),
            Err(DerError::BadBitString { what })
        );
        assert_eq!(
            Reader::new(&[0x05, 0x00, 0x00]).finish(what),
            Err(DerError::TrailingData { what })
        );
    }

    #[test]
    fn every_truncation_of_a_valid_structure_fails_cleanly() {
        let der = [
            0x30, 0x0C, 0x02, 0x01, 0x01, 0x04, 0x02, 0xAA, 0xBB, 0xA1, 0x03, 0x03, 0x01, 0x00,
        ];
        let parse = |input: &[u8]| -> Result<(), DerError> {
            let mut outer = Reader::new(input);
            let mut seq = outer.sequence("key")?;
            outer.finish("key")?;
            seq.small_unsigned("version")?;
            seq.octet_string("secret")?;
            let public = seq.read(context(1), "public")?;
            Reader::new(public).bit_string_bytes("point")?;
            seq.finish("key")
        };
        parse(&der).unwrap();
        for len in 0..der.len() {
            assert!(parse(&der[..len]).is_err(), "prefix of {len} bytes");
        }
    }

    #[test]
    fn dotted_identifiers() {
        assert_eq!(
            dotted_oid(&[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01]).unwrap(),
            "1.2.840.113549.1.1.1"
        );
        assert_eq!(dotted_oid(&[0x2B, 0x65, 0x70]).unwrap(), "1.3.101.112");
        assert_eq!(dotted_oid(&[0x88, 0x37, 0x01]).unwrap(), "2.999.1");
        assert_eq!(dotted_oid(&[]), None);
        assert_eq!(dotted_oid(&[0x2A, 0x86]), None);
        assert_eq!(dotted_oid(&[0x80, 0x01]), None);
        assert_eq!(dotted_oid(&[0xFF; 12]), None);
    }
}
