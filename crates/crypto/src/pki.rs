//! The deployment's local certificate authority and the server certificate it issues.
//!
//! Files (under the TLS directory, named as qemu and libnbd expect): `ca-cert.pem`,
//! `ca-key.pem` (0600), `server-cert.pem`, `server-key.pem` (0600). The CA is created once; the
//! server certificate is issued anew at every start so that it always carries the configured
//! names.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use zeroize::Zeroizing;

use crate::{CryptoError, files};

/// Where the TLS files of a deployment live.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl TlsFiles {
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            ca_cert: dir.join("ca-cert.pem"),
            ca_key: dir.join("ca-key.pem"),
            server_cert: dir.join("server-cert.pem"),
            server_key: dir.join("server-key.pem"),
        }
    }
}

/// PEM material of the issued server certificate.
pub struct ServerIdentity {
    /// Server certificate followed by the CA certificate.
    pub cert_chain_pem: String,
    pub key_pem: Zeroizing<String>,
    pub ca_cert_pem: String,
}

impl std::fmt::Debug for ServerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerIdentity").finish_non_exhaustive()
    }
}

fn ca_params() -> Result<CertificateParams, CryptoError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "sealdisk");
    dn.push(DnType::CommonName, "sealdisk local CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2049, 12, 31);
    Ok(params)
}

/// Loads the CA (creating it on first start) and issues a server certificate for `names`
/// (DNS names or IP addresses), writing every file.
pub fn load_or_create(files: &TlsFiles, names: &[String]) -> Result<ServerIdentity, CryptoError> {
    let ca_key = match files::read_optional(&files.ca_key)? {
        Some(pem) => {
            let pem = Zeroizing::new(String::from_utf8_lossy(&pem).into_owned());
            KeyPair::from_pem(&pem).map_err(|e| CryptoError::InvalidKeyFile {
                path: files.ca_key.clone(),
                reason: e.to_string(),
            })?
        }
        None => {
            let key = KeyPair::generate()?;
            files::write_atomic(&files.ca_key, key.serialize_pem().as_bytes(), true)?;
            key
        }
    };
    let ca_cert_pem = match files::read_optional(&files.ca_cert)? {
        Some(pem) => String::from_utf8_lossy(&pem).into_owned(),
        None => {
            let cert = ca_params()?.self_signed(&ca_key)?;
            files::write_atomic(&files.ca_cert, cert.pem().as_bytes(), false)?;
            cert.pem()
        }
    };
    let issuer = Issuer::new(ca_params()?, ca_key);

    let mut params = CertificateParams::new(names.to_vec())?;
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        names.first().cloned().unwrap_or_default(),
    );
    params.distinguished_name = dn;
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(397);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    let key_pem = Zeroizing::new(key.serialize_pem());
    files::write_atomic(&files.server_key, key_pem.as_bytes(), true)?;
    files::write_atomic(&files.server_cert, cert.pem().as_bytes(), false)?;
    Ok(ServerIdentity {
        cert_chain_pem: format!("{}{}", cert.pem(), ca_cert_pem),
        key_pem,
        ca_cert_pem,
    })
}
