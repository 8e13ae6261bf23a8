//! Access tokens: RS256 JWTs issued to principals and validated on every request.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

use crate::ids::{AppId, ObjectId, TenantId};
use crate::store::PrincipalRecord;

/// Token lifetime, as Entra's default for client credentials.
pub const TOKEN_LIFETIME_SECS: i64 = 3599;
/// Clock skew tolerated on `nbf` and `exp`.
const LEEWAY_SECS: u64 = 60;
/// Most tokens remembered as verified at once; past it the memo starts over.
const VERIFIED_CAPACITY: usize = 1024;

/// Which API a token is for: each has its own audiences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// Azure Resource Manager.
    Arm,
    /// The Microsoft Graph subset.
    Graph,
    /// The Key Vault data plane.
    Vault,
}

/// The resource identifiers (audiences) each surface accepts, compared without trailing `/`.
#[derive(Debug, Clone)]
pub struct Audiences {
    pub arm: Vec<String>,
    pub graph: Vec<String>,
    pub vault: Vec<String>,
}

impl Audiences {
    fn of(&self, surface: Surface) -> &[String] {
        match surface {
            Surface::Arm => &self.arm,
            Surface::Graph => &self.graph,
            Surface::Vault => &self.vault,
        }
    }

    /// The surface a requested resource (`scope` without `/.default`) belongs to.
    pub fn surface_of(&self, resource: &str) -> Option<Surface> {
        let resource = canonical(resource);
        [Surface::Arm, Surface::Graph, Surface::Vault]
            .into_iter()
            .find(|s| {
                self.of(*s)
                    .iter()
                    .any(|a| canonical(a).eq_ignore_ascii_case(resource))
            })
    }
}

fn canonical(resource: &str) -> &str {
    resource.trim_end_matches('/')
}

/// The claims of a sealdisk access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub aud: String,
    pub iss: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub tid: TenantId,
    pub oid: ObjectId,
    pub sub: ObjectId,
    pub appid: AppId,
    pub azp: AppId,
    pub idtyp: String,
    pub ver: String,
}

/// An issued token and its lifetime.
#[derive(Clone)]
pub struct IssuedToken {
    pub access_token: String,
    pub expires_in: i64,
    pub expires_on: i64,
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("expires_on", &self.expires_on)
            .finish_non_exhaustive()
    }
}

/// Why a presented token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("The access token is not a well-formed JWT.")]
    Malformed,
    #[error("The access token's signing algorithm is not accepted; tokens must be RS256.")]
    UnsupportedAlgorithm,
    #[error("The access token was signed with an unknown key (kid).")]
    UnknownKey,
    #[error("The access token's signature is invalid.")]
    BadSignature,
    #[error("The access token has expired. Get a new token and retry.")]
    Expired,
    #[error("The access token is not yet valid.")]
    NotYetValid,
    #[error(
        "The access token has an invalid audience for this API; request a token for its resource."
    )]
    WrongAudience,
    #[error("The access token was issued by a different issuer.")]
    WrongIssuer,
    #[error("The access token is from a different tenant.")]
    WrongTenant,
}

/// Issues and validates tokens with the deployment's signing key.
pub struct TokenIssuer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    kid: String,
    n: String,
    e: String,
    issuer: String,
    tenant: TenantId,
    audiences: Audiences,
    verified: Verified,
}

/// Tokens that passed every check of `TokenIssuer::validate`, by their exact text, with the
/// surface they were checked for. Every check but the time window is a function of the
/// token's bytes and of the issuer's key, kid, issuer, tenant and audiences, which are fixed
/// for the issuer's life; so a byte-identical token for the same surface needs only its time
/// window checked again. That spares the signature verification and the parsing on every
/// request of a client that reuses its token. The memo holds the tokens' text in memory only
/// (at most `VERIFIED_CAPACITY` of them), and a token is worthless once its `exp` has passed.
#[derive(Default)]
struct Verified(Mutex<HashMap<String, (Surface, Claims)>>);

impl Verified {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Surface, Claims)>> {
        // The map holds no invariant a panic could break.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The claims of `token` if it was verified for `surface` and `now` lies inside its time
    /// window without leeway (`nbf <= now < exp`). Outside it the caller validates in full,
    /// which applies the leeway and names the failure: the memo never accepts more.
    fn get(&self, token: &str, surface: Surface, now: i64) -> Option<Claims> {
        let map = self.map();
        let (verified_for, claims) = map.get(token)?;
        (*verified_for == surface && claims.nbf <= now && now < claims.exp).then(|| claims.clone())
    }

    fn insert(&self, token: &str, surface: Surface, claims: &Claims) {
        let mut map = self.map();
        if map.len() >= VERIFIED_CAPACITY {
            map.clear();
        }
        map.insert(token.to_owned(), (surface, claims.clone()));
    }
}

impl fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("kid", &self.kid)
            .field("issuer", &self.issuer)
            .finish()
    }
}

impl TokenIssuer {
    pub fn new(
        key: &crypto::TokenSigningKey,
        issuer: String,
        tenant: TenantId,
        audiences: Audiences,
    ) -> Result<Self, jsonwebtoken::errors::Error> {
        Ok(Self {
            encoding: EncodingKey::from_rsa_pem(key.pkcs8_pem().as_bytes())?,
            decoding: DecodingKey::from_rsa_components(&key.n, &key.e)?,
            kid: key.kid.clone(),
            n: key.n.clone(),
            e: key.e.clone(),
            issuer,
            tenant,
            audiences,
            verified: Verified::default(),
        })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn audiences(&self) -> &Audiences {
        &self.audiences
    }

    /// The JSON Web Key Set that verifies issued tokens.
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({"keys": [{
            "kty": "RSA", "use": "sig", "alg": "RS256",
            "kid": self.kid, "x5t": self.kid, "n": self.n, "e": self.e,
            "issuer": self.issuer,
        }]})
    }

    /// Issues a token for `principal` to call `resource` at time `now` (unix seconds).
    pub fn issue(
        &self,
        principal: &PrincipalRecord,
        resource: &str,
        now: i64,
    ) -> Result<IssuedToken, jsonwebtoken::errors::Error> {
        let claims = Claims {
            aud: resource.to_string(),
            iss: self.issuer.clone(),
            iat: now,
            nbf: now,
            exp: now + TOKEN_LIFETIME_SECS,
            tid: self.tenant,
            oid: principal.object_id,
            sub: principal.object_id,
            appid: principal.app_id,
            azp: principal.app_id,
            idtyp: "app".into(),
            ver: "2.0".into(),
        };
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        header.typ = Some("JWT".into());
        let access_token = jsonwebtoken::encode(&header, &claims, &self.encoding)?;
        Ok(IssuedToken {
            access_token,
            expires_in: TOKEN_LIFETIME_SECS,
            expires_on: claims.exp,
        })
    }

    /// Validates `token` for `surface`: algorithm, key id, signature, issuer, audience, time
    /// window and tenant. A token that passed all of them before is recognized by its exact
    /// text and has only its time window checked again (see `Verified`).
    pub fn validate(&self, token: &str, surface: Surface) -> Result<Claims, TokenError> {
        if let Some(claims) = self.verified.get(token, surface, crate::deployment::now()) {
            return Ok(claims);
        }
        let claims = self.validate_in_full(token, surface)?;
        self.verified.insert(token, surface, &claims);
        Ok(claims)
    }

    fn validate_in_full(&self, token: &str, surface: Surface) -> Result<Claims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                TokenError::UnsupportedAlgorithm
            }
            _ => TokenError::Malformed,
        })?;
        if header.alg != Algorithm::RS256 {
            return Err(TokenError::UnsupportedAlgorithm);
        }
        if header.kid.as_deref() != Some(self.kid.as_str()) {
            return Err(TokenError::UnknownKey);
        }
        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "aud", "iss"]);
        validation.set_issuer(&[&self.issuer]);
        // Audiences compare without trailing slashes, so accept both spellings of each.
        let mut auds = Vec::new();
        for a in self.audiences.of(surface) {
            let a = canonical(a);
            auds.push(a.to_string());
            auds.push(format!("{a}/"));
        }
        validation.set_audience(&auds);
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation).map_err(
            |e| match e.kind() {
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                ErrorKind::InvalidAudience => TokenError::WrongAudience,
                ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
                ErrorKind::InvalidAlgorithm => TokenError::UnsupportedAlgorithm,
                _ => TokenError::Malformed,
            },
        )?;
        if data.claims.tid != self.tenant {
            return Err(TokenError::WrongTenant);
        }
        Ok(data.claims)
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use uuid::Uuid;

    use super::*;
    use crate::store::PrincipalKind;

    fn issuer(dir: &std::path::Path) -> TokenIssuer {
        let key = crypto::TokenSigningKey::load_or_create(&dir.join("k")).unwrap();
        TokenIssuer::new(
            &key,
            "https://localhost:1/t/v2.0".into(),
            TenantId(Uuid::nil()),
            Audiences {
                arm: vec!["https://localhost:1/".into()],
                graph: vec!["https://localhost:1/graph/".into()],
                vault: vec!["https://vault.localhost:1".into()],
            },
        )
        .unwrap()
    }

    fn principal() -> PrincipalRecord {
        PrincipalRecord {
            object_id: ObjectId::new_random(),
            app_id: AppId::new_random(),
            display_name: "p".into(),
            kind: PrincipalKind::ServicePrincipal,
            created: 0,
        }
    }

    fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    /// An issuer in a fresh directory (keep it while the issuer is used) and an ARM token
    /// it issued just now.
    fn issued_arm_token() -> (tempfile::TempDir, TokenIssuer, String) {
        let dir = tempfile::tempdir().unwrap();
        let issuer = issuer(dir.path());
        let token = issuer
            .issue(&principal(), "https://localhost:1/", now())
            .unwrap()
            .access_token;
        (dir, issuer, token)
    }

    fn tamper(token: &str, f: impl Fn(&mut serde_json::Value), part: usize) -> String {
        let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
        let mut json: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[part]).unwrap()).unwrap();
        f(&mut json);
        parts[part] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&json).unwrap());
        parts.join(".")
    }

    #[test]
    fn issued_tokens_validate_for_their_surface_only() {
        let dir = tempfile::tempdir().unwrap();
        let issuer = issuer(dir.path());
        let p = principal();
        // az asks for "https://localhost:1//.default": the resource keeps its trailing slash.
        let token = issuer.issue(&p, "https://localhost:1/", now()).unwrap();
        let claims = issuer.validate(&token.access_token, Surface::Arm).unwrap();
        assert_eq!(claims.oid, p.object_id);
        assert_eq!(
            issuer
                .validate(&token.access_token, Surface::Graph)
                .unwrap_err(),
            TokenError::WrongAudience
        );
        let no_slash = issuer.issue(&p, "https://localhost:1", now()).unwrap();
        assert!(
            issuer
                .validate(&no_slash.access_token, Surface::Arm)
                .is_ok()
        );
    }

    #[test]
    fn forged_tokens_are_refused() {
        let (_dir, issuer, token) = issued_arm_token();
        let alg_none = tamper(&token, |h| h["alg"] = "none".into(), 0);
        assert!(issuer.validate(&alg_none, Surface::Arm).is_err());
        let hs256 = tamper(&token, |h| h["alg"] = "HS256".into(), 0);
        assert_eq!(
            issuer.validate(&hs256, Surface::Arm).unwrap_err(),
            TokenError::UnsupportedAlgorithm
        );
        let kid = tamper(&token, |h| h["kid"] = "other".into(), 0);
        assert_eq!(
            issuer.validate(&kid, Surface::Arm).unwrap_err(),
            TokenError::UnknownKey
        );
        let tid = tamper(&token, |c| c["tid"] = Uuid::new_v4().to_string().into(), 1);
        assert_eq!(
            issuer.validate(&tid, Surface::Arm).unwrap_err(),
            TokenError::BadSignature
        );
        assert_eq!(
            issuer.validate("garbage", Surface::Arm).unwrap_err(),
            TokenError::Malformed
        );
        let expired = issuer
            .issue(&principal(), "https://localhost:1/", now() - 2 * 3600)
            .unwrap();
        assert_eq!(
            issuer
                .validate(&expired.access_token, Surface::Arm)
                .unwrap_err(),
            TokenError::Expired
        );
    }

    #[test]
    fn a_remembered_token_still_needs_its_surface_and_time_window() {
        let (_dir, issuer, token) = issued_arm_token();
        let claims = issuer.validate(&token, Surface::Arm).unwrap();
        // Remembered now; another surface still fails its audience check.
        assert_eq!(
            issuer.validate(&token, Surface::Vault).unwrap_err(),
            TokenError::WrongAudience
        );
        assert_eq!(
            issuer.validate(&token, Surface::Arm).unwrap().oid,
            claims.oid
        );
        let memo = Verified::default();
        let window = Claims {
            nbf: 100,
            exp: 200,
            ..claims
        };
        memo.insert("t", Surface::Arm, &window);
        assert!(memo.get("t", Surface::Arm, 100).is_some());
        assert!(memo.get("t", Surface::Arm, 199).is_some());
        assert!(memo.get("t", Surface::Arm, 99).is_none());
        assert!(memo.get("t", Surface::Arm, 200).is_none());
        assert!(memo.get("t", Surface::Graph, 150).is_none());
        assert!(memo.get("t2", Surface::Arm, 150).is_none());
    }

    #[test]
    fn surfaces_of_resources() {
        let dir = tempfile::tempdir().unwrap();
        let a = issuer(dir.path());
        assert_eq!(
            a.audiences().surface_of("https://localhost:1/"),
            Some(Surface::Arm)
        );
        assert_eq!(
            a.audiences().surface_of("https://localhost:1/graph"),
            Some(Surface::Graph)
        );
        assert_eq!(
            a.audiences().surface_of("https://vault.localhost:1/"),
            Some(Surface::Vault)
        );
        assert_eq!(
            a.audiences().surface_of("https://management.azure.com/"),
            None
        );
    }
}
