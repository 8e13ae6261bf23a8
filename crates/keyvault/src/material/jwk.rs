//! The `JsonWebKey` of the Key Vault contract, and base64url helpers.

use std::fmt;

use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

use super::MaterialError;

/// base64url as Key Vault writes it (no padding); reading also accepts padded input.
pub(super) const B64URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A JSON Web Key with Key Vault's member names (`JsonWebKey` in the contract). Every member
/// is optional; which ones a key needs depends on `kty`. Binary members are base64url text.
///
/// `kty` and `crv` stay strings here so that an unsupported value reaches
/// [`super::KeyMaterial::from_jwk`] and fails there with an error that names the
/// alternatives (and `RSA-HSM` with [`MaterialError::HsmUnavailable`]).
///
/// The private members (`d`, `dp`, `dq`, `qi`, `p`, `q`, `k`, `key_hsm`) are [`JwkSecret`]s:
/// zeroed when dropped and shown as `<redacted>` by `Debug`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Key identifier: the versioned key URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// Key type: `RSA`, `EC` (and in the contract `RSA-HSM`, `EC-HSM`, `oct`, `oct-HSM`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kty: Option<String>,
    /// Permitted operations (`encrypt`, `wrapKey`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_ops: Option<Vec<String>>,
    /// RSA modulus, big-endian without leading zeros.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// RSA public exponent, big-endian without leading zeros.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    /// RSA private exponent, or the EC private scalar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub d: Option<JwkSecret>,
    /// RSA `d mod (p - 1)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dp: Option<JwkSecret>,
    /// RSA `d mod (q - 1)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dq: Option<JwkSecret>,
    /// RSA `q^-1 mod p`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qi: Option<JwkSecret>,
    /// RSA first prime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p: Option<JwkSecret>,
    /// RSA second prime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub q: Option<JwkSecret>,
    /// Elliptic curve name: `P-256`, `P-384`, `P-521` (and in the contract `P-256K`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// EC public point x coordinate, fixed length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// EC public point y coordinate, fixed length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// Symmetric key (`oct`); sealdisk never uses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<JwkSecret>,
    /// Key protected for an HSM ("bring your own key"); sealdisk never uses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_hsm: Option<JwkSecret>,
}

impl Jwk {
    /// Removes (and zeroes) every private member: `d`, `dp`, `dq`, `qi`, `p`, `q`, `k` and
    /// `key_hsm`.
    pub fn strip_private(&mut self) {
        for field in [
            &mut self.d,
            &mut self.dp,
            &mut self.dq,
            &mut self.qi,
            &mut self.p,
            &mut self.q,
            &mut self.k,
            &mut self.key_hsm,
        ] {
            *field = None;
        }
    }

    /// A copy without the private members.
    #[must_use]
    pub fn without_private(&self) -> Self {
        let mut public = self.clone();
        public.strip_private();
        public
    }

    /// Whether any private member is present.
    pub fn has_private(&self) -> bool {
        [
            &self.d,
            &self.dp,
            &self.dq,
            &self.qi,
            &self.p,
            &self.q,
            &self.k,
            &self.key_hsm,
        ]
        .iter()
        .any(|f| f.is_some())
    }
}

/// A private JWK member: base64url text in zeroizing memory, redacted in `Debug`.
#[derive(Clone, Default)]
pub struct JwkSecret(Zeroizing<String>);

impl JwkSecret {
    /// Wraps base64url text.
    pub fn new(base64url: String) -> Self {
        Self(Zeroizing::new(base64url))
    }

    /// Encodes `bytes` as base64url without padding.
    pub fn encode(bytes: &[u8]) -> Self {
        Self::new(B64URL.encode(bytes))
    }

    /// The base64url text.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for JwkSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl PartialEq for JwkSecret {
    /// Constant-time in the contents (the lengths are not secret).
    fn eq(&self, other: &Self) -> bool {
        aws_lc_rs::constant_time::verify_slices_are_equal(self.0.as_bytes(), other.0.as_bytes())
            .is_ok()
    }
}

impl Eq for JwkSecret {}

impl From<String> for JwkSecret {
    fn from(base64url: String) -> Self {
        Self::new(base64url)
    }
}

impl From<&str> for JwkSecret {
    fn from(base64url: &str) -> Self {
        Self::new(base64url.to_owned())
    }
}

impl Serialize for JwkSecret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for JwkSecret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self::new)
    }
}

/// base64url without padding.
pub(super) fn encode(bytes: &[u8]) -> String {
    B64URL.encode(bytes)
}

/// Decodes a required public member.
pub(super) fn public_field(
    value: Option<&String>,
    field: &'static str,
    needs: &'static str,
) -> Result<Vec<u8>, MaterialError> {
    let text = value.ok_or(MaterialError::MissingJwkField { field, needs })?;
    B64URL
        .decode(text)
        .map_err(|source| MaterialError::InvalidJwkEncoding { field, source })
}

/// Decodes a required private member into zeroizing memory.
pub(super) fn private_field(
    value: Option<&JwkSecret>,
    field: &'static str,
    needs: &'static str,
) -> Result<Zeroizing<Vec<u8>>, MaterialError> {
    let secret = value.ok_or(MaterialError::MissingJwkField { field, needs })?;
    let mut out = Zeroizing::new(Vec::with_capacity(secret.0.len() + 3));
    B64URL
        .decode_vec(secret.expose(), &mut out)
        .map_err(|source| MaterialError::InvalidJwkEncoding { field, source })?;
    Ok(out)
}

/// `bytes` without leading zero bytes (JWK integers are minimal, but some writers pad).
pub(super) fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}
