//! `keyvault key ...`: the Key Vault keys data plane on `https://VAULT.{keyVaultDns}/`
//! (api-version 7.6), with az's arguments and output shapes.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use clap::{ArgGroup, Args, Subcommand};
use reqwest::{Method, Url};
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime, PrimitiveDateTime};

use keyvault::material::Jwk;

use super::super::group::parse_tags;
use super::pem::{self, SecretBytes};
use super::{parse_flag, refused, shape};
use crate::cli::error::{CliError, CliResult};
use crate::cli::output::Outcome;
use crate::cli::profile::{CloudEndpoints, Secret};
use crate::cli::session::{Session, join_path, parse_url};

/// Key Vault data-plane api-version.
pub const API: &str = "7.6";
/// Largest page Key Vault serves.
const MAX_PAGE: usize = 25;
/// Largest PEM file `key import` reads (an RSA-4096 key is about 3.3 KB).
const MAX_PEM_FILE: u64 = 1 << 20;
/// Most pages followed for one list (a guard against a server that loops).
const MAX_PAGES: usize = 1000;

/// The vault of a data-plane command: `--vault-name`, or its URL with `--id`.
#[derive(Debug, Clone, Args)]
pub struct VaultTarget {
    /// Name of the Key Vault.
    #[arg(
        long = "vault-name",
        required_unless_present = "id",
        value_name = "NAME"
    )]
    pub vault_name: Option<String>,
    /// Full URI of the vault, e.g. https://kv1.vault.localhost:8443/.
    #[arg(long = "id", conflicts_with = "vault_name", value_name = "URI")]
    pub id: Option<String>,
}

/// The key of a data-plane command: `--vault-name` and `--name`, or `--id`.
#[derive(Debug, Clone, Args)]
pub struct KeyTarget {
    /// Name of the Key Vault.
    #[arg(
        long = "vault-name",
        required_unless_present = "id",
        value_name = "NAME"
    )]
    pub vault_name: Option<String>,
    /// Name of the key.
    #[arg(
        short = 'n',
        long = "name",
        required_unless_present = "id",
        value_name = "NAME"
    )]
    pub name: Option<String>,
    /// Id of the key, e.g. https://kv1.vault.localhost:8443/keys/k1[/VERSION]. Replaces
    /// --vault-name, --name and --version.
    #[arg(long = "id", conflicts_with_all = ["vault_name", "name"], value_name = "KID")]
    pub id: Option<String>,
}

/// `--version` next to a [`KeyTarget`].
#[derive(Debug, Clone, Args)]
pub struct VersionArg {
    /// Version of the key. The latest when not given.
    #[arg(short = 'v', long = "version", conflicts_with = "id")]
    pub version: Option<String>,
}

/// `--maxresults`.
#[derive(Debug, Clone, Args)]
pub struct MaxResults {
    /// Maximum number of results to return.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub maxresults: Option<u32>,
}

/// JSON Web Key types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kty {
    /// RSA, software-protected.
    #[value(name = "RSA")]
    Rsa,
    /// RSA in an HSM.
    #[value(name = "RSA-HSM")]
    RsaHsm,
    /// Elliptic curve, software-protected.
    #[value(name = "EC")]
    Ec,
    /// Elliptic curve in an HSM.
    #[value(name = "EC-HSM")]
    EcHsm,
    /// Symmetric (managed HSM only).
    #[value(name = "oct")]
    Oct,
    /// Symmetric in an HSM (managed HSM only).
    #[value(name = "oct-HSM")]
    OctHsm,
}

impl Kty {
    fn as_str(self) -> &'static str {
        match self {
            Kty::Rsa => "RSA",
            Kty::RsaHsm => "RSA-HSM",
            Kty::Ec => "EC",
            Kty::EcHsm => "EC-HSM",
            Kty::Oct => "oct",
            Kty::OctHsm => "oct-HSM",
        }
    }

    fn with_hsm(self) -> Kty {
        match self {
            Kty::Rsa | Kty::RsaHsm => Kty::RsaHsm,
            Kty::Ec | Kty::EcHsm => Kty::EcHsm,
            Kty::Oct | Kty::OctHsm => Kty::OctHsm,
        }
    }

    fn is_hsm(self) -> bool {
        matches!(self, Kty::RsaHsm | Kty::EcHsm | Kty::OctHsm)
    }

    /// The type without `-HSM`.
    fn software(self) -> Kty {
        match self {
            Kty::Rsa | Kty::RsaHsm => Kty::Rsa,
            Kty::Ec | Kty::EcHsm => Kty::Ec,
            Kty::Oct | Kty::OctHsm => Kty::Oct,
        }
    }
}

/// Elliptic curves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Curve {
    /// NIST P-256.
    #[value(name = "P-256")]
    P256,
    /// SECG secp256k1.
    #[value(name = "P-256K")]
    P256K,
    /// NIST P-384.
    #[value(name = "P-384")]
    P384,
    /// NIST P-521.
    #[value(name = "P-521")]
    P521,
}

impl Curve {
    fn as_str(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P256K => "P-256K",
            Curve::P384 => "P-384",
            Curve::P521 => "P-521",
        }
    }

    /// The curve Key Vault names `crv`.
    fn from_crv(crv: &str) -> Option<Curve> {
        [Curve::P256, Curve::P256K, Curve::P384, Curve::P521]
            .into_iter()
            .find(|c| c.as_str() == crv)
    }
}

/// Operations a key may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyOp {
    /// Encrypt.
    #[value(name = "encrypt")]
    Encrypt,
    /// Decrypt.
    #[value(name = "decrypt")]
    Decrypt,
    /// Sign.
    #[value(name = "sign")]
    Sign,
    /// Verify.
    #[value(name = "verify")]
    Verify,
    /// Wrap a key.
    #[value(name = "wrapKey")]
    WrapKey,
    /// Unwrap a key.
    #[value(name = "unwrapKey")]
    UnwrapKey,
    /// Import.
    #[value(name = "import")]
    Import,
    /// Export.
    #[value(name = "export")]
    Export,
    /// Release.
    #[value(name = "release")]
    Release,
}

impl KeyOp {
    fn as_str(self) -> &'static str {
        match self {
            KeyOp::Encrypt => "encrypt",
            KeyOp::Decrypt => "decrypt",
            KeyOp::Sign => "sign",
            KeyOp::Verify => "verify",
            KeyOp::WrapKey => "wrapKey",
            KeyOp::UnwrapKey => "unwrapKey",
            KeyOp::Import => "import",
            KeyOp::Export => "export",
            KeyOp::Release => "release",
        }
    }
}

/// `--protection`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protection {
    /// Keys in software, sealed under the platform root key.
    Software,
    /// Keys in an HSM (`*-HSM` key types).
    Hsm,
}

/// `--data-type` of encrypt and decrypt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum DataType {
    /// `--value` (and decrypt's result) is base64.
    #[default]
    Base64,
    /// `--value` (and decrypt's result) is UTF-8 text.
    Plaintext,
}

/// `keyvault key create`.
#[derive(Debug, Clone, Args)]
pub struct CreateKeyArgs {
    #[command(flatten)]
    pub key: KeyTarget,
    /// Key type. RSA unless --curve is given (then EC).
    #[arg(long, value_enum, ignore_case = true)]
    pub kty: Option<Kty>,
    /// RSA key size in bits (2048, 3072 or 4096).
    #[arg(long)]
    pub size: Option<u32>,
    /// Elliptic curve of an EC key.
    #[arg(long, value_enum, ignore_case = true)]
    pub curve: Option<Curve>,
    /// Space-separated operations the key may be used for.
    #[arg(long, value_enum, ignore_case = true, num_args = 1..)]
    pub ops: Option<Vec<KeyOp>>,
    /// Where the key lives; `hsm` makes the key type `*-HSM`.
    #[arg(short = 'p', long, value_enum, ignore_case = true)]
    pub protection: Option<Protection>,
    #[command(flatten)]
    pub attrs: AttributeArgs,
    /// Create the key disabled.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_parser = parse_flag, value_name = "BOOL")]
    pub disabled: Option<bool>,
    /// Space-separated tags: key[=value] [key[=value] ...].
    #[arg(long, num_args = 0.., value_name = "KEY=VALUE")]
    pub tags: Option<Vec<String>>,
}

/// `keyvault key import`: a private key from PEM (BYOK is refused: it needs an HSM).
#[derive(Debug, Clone, Args)]
#[command(group(
    ArgGroup::new("source")
        .required(true)
        .args(["pem_file", "pem_string", "byok_file", "byok_string"])
))]
#[command(group(ArgGroup::new("pem").args(["pem_file", "pem_string"])))]
pub struct ImportKeyArgs {
    #[command(flatten)]
    pub key: KeyTarget,
    /// PEM file containing the key to be imported: an unencrypted PKCS#8 (PRIVATE KEY), PKCS#1
    /// (RSA PRIVATE KEY) or SEC 1 (EC PRIVATE KEY) RSA or EC key.
    #[arg(long, value_name = "PATH", help_heading = "Key Source")]
    pub pem_file: Option<PathBuf>,
    /// PEM string containing the key to be imported.
    #[arg(
        long,
        value_name = "PEM",
        allow_hyphen_values = true,
        help_heading = "Key Source"
    )]
    pub pem_string: Option<Secret>,
    /// Password of the PEM. sealdisk does not decrypt PEM keys: decrypt an encrypted key first
    /// with `openssl pkey -in KEY.pem -out KEY-plain.pem`.
    #[arg(
        long,
        value_name = "PASSWORD",
        allow_hyphen_values = true,
        requires = "pem",
        help_heading = "Key Source"
    )]
    pub pem_password: Option<Secret>,
    /// BYOK file (a key transfer blob for an HSM). Refused: this deployment has no HSM.
    #[arg(long, value_name = "PATH", help_heading = "Key Source")]
    pub byok_file: Option<PathBuf>,
    /// BYOK string. Refused: this deployment has no HSM.
    #[arg(
        long,
        value_name = "BLOB",
        allow_hyphen_values = true,
        help_heading = "Key Source"
    )]
    pub byok_string: Option<Secret>,
    /// Key type; the PEM's key decides when not given, and a given one must match it.
    #[arg(long, value_enum, ignore_case = true)]
    pub kty: Option<Kty>,
    /// Elliptic curve; must match the PEM's key when given.
    #[arg(long, value_enum, ignore_case = true)]
    pub curve: Option<Curve>,
    /// Space-separated operations the key may be used for.
    #[arg(long, value_enum, ignore_case = true, num_args = 1..)]
    pub ops: Option<Vec<KeyOp>>,
    /// Where the key lives; `hsm` makes the key type `*-HSM`.
    #[arg(short = 'p', long, value_enum, ignore_case = true)]
    pub protection: Option<Protection>,
    #[command(flatten)]
    pub attrs: AttributeArgs,
    /// Import the key disabled.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_parser = parse_flag, value_name = "BOOL")]
    pub disabled: Option<bool>,
    /// Space-separated tags: key[=value] [key[=value] ...].
    #[arg(long, num_args = 0.., value_name = "KEY=VALUE")]
    pub tags: Option<Vec<String>>,
}

/// `--expires` and `--not-before`.
#[derive(Debug, Clone, Args)]
pub struct AttributeArgs {
    /// Expiration UTC datetime (Y-m-d'T'H:M:S'Z').
    #[arg(long, value_parser = parse_utc_time, value_name = "DATETIME")]
    pub expires: Option<i64>,
    /// Key not usable before the provided UTC datetime (Y-m-d'T'H:M:S'Z').
    #[arg(long, value_parser = parse_utc_time, value_name = "DATETIME")]
    pub not_before: Option<i64>,
}

/// `keyvault key set-attributes`.
#[derive(Debug, Clone, Args)]
pub struct SetAttributesArgs {
    #[command(flatten)]
    pub key: KeyTarget,
    #[command(flatten)]
    pub version: VersionArg,
    /// Enable or disable the key.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_parser = parse_flag, value_name = "BOOL")]
    pub enabled: Option<bool>,
    #[command(flatten)]
    pub attrs: AttributeArgs,
    /// Space-separated operations the key may be used for.
    #[arg(long, value_enum, ignore_case = true, num_args = 1..)]
    pub ops: Option<Vec<KeyOp>>,
    /// Space-separated tags: key[=value] [key[=value] ...]. Use "" to clear existing tags.
    #[arg(long, num_args = 0.., value_name = "KEY=VALUE")]
    pub tags: Option<Vec<String>>,
}

/// `keyvault key encrypt|decrypt`.
#[derive(Debug, Clone, Args)]
pub struct CryptoArgs {
    #[command(flatten)]
    pub key: KeyTarget,
    #[command(flatten)]
    pub version: VersionArg,
    /// Algorithm, e.g. RSA-OAEP-256, RSA-OAEP or RSA1_5.
    #[arg(short = 'a', long)]
    pub algorithm: String,
    /// The data: base64 (default) or text (--data-type plaintext). Decrypt always takes the
    /// base64 ciphertext that encrypt printed.
    #[arg(long)]
    pub value: String,
    /// How --value (encrypt) or the result (decrypt) is written.
    #[arg(long, value_enum, ignore_case = true, default_value = "base64")]
    pub data_type: DataType,
}

/// `keyvault key` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create a key (or a new version of an existing key).
    Create(Box<CreateKeyArgs>),
    /// Import a private key from PEM as a key (or a new version of an existing key).
    Import(Box<ImportKeyArgs>),
    /// Show a key (its latest version unless --version).
    Show {
        #[command(flatten)]
        key: KeyTarget,
        #[command(flatten)]
        version: VersionArg,
    },
    /// List the keys of a vault.
    List {
        #[command(flatten)]
        vault: VaultTarget,
        #[command(flatten)]
        max: MaxResults,
        /// Include keys managed by Key Vault (certificate keys).
        #[arg(long)]
        include_managed: bool,
    },
    /// List the versions of a key.
    ListVersions {
        #[command(flatten)]
        key: KeyTarget,
        #[command(flatten)]
        max: MaxResults,
    },
    /// Update the attributes, operations or tags of a key version.
    SetAttributes(Box<SetAttributesArgs>),
    /// Delete a key (soft delete: recoverable until the vault's retention ends).
    Delete {
        #[command(flatten)]
        key: KeyTarget,
    },
    /// List the soft-deleted keys of a vault.
    ListDeleted {
        #[command(flatten)]
        vault: VaultTarget,
        #[command(flatten)]
        max: MaxResults,
    },
    /// Show a soft-deleted key.
    ShowDeleted {
        #[command(flatten)]
        key: KeyTarget,
    },
    /// Recover a soft-deleted key.
    Recover {
        #[command(flatten)]
        key: KeyTarget,
    },
    /// Permanently delete a soft-deleted key. Irreversible.
    Purge {
        #[command(flatten)]
        key: KeyTarget,
    },
    /// Write a protected backup of a key (all its versions) to a file.
    Backup {
        #[command(flatten)]
        key: KeyTarget,
        /// File to write the backup to.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Restore a key from a backup file.
    Restore {
        #[command(flatten)]
        vault: VaultTarget,
        /// The backup file.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Create a new version of a key now.
    Rotate {
        #[command(flatten)]
        key: KeyTarget,
    },
    /// Manage the rotation policy of a key.
    #[command(subcommand)]
    RotationPolicy(RotationPolicyCommand),
    /// Encrypt data with a key.
    Encrypt(Box<CryptoArgs>),
    /// Decrypt data with a key.
    Decrypt(Box<CryptoArgs>),
}

/// `keyvault key rotation-policy` subcommands.
#[derive(Debug, Subcommand)]
pub enum RotationPolicyCommand {
    /// Show the rotation policy of a key.
    Show {
        #[command(flatten)]
        key: KeyTarget,
    },
    /// Set the rotation policy of a key.
    Update {
        #[command(flatten)]
        key: KeyTarget,
        /// The policy as JSON, or @FILE (or a file path) holding it: lifetimeActions
        /// (trigger timeAfterCreate/timeBeforeExpiry, action type Rotate/Notify) and
        /// attributes.expiryTime.
        #[arg(long)]
        value: String,
    },
}

/// Runs a `keyvault key` subcommand.
pub async fn run(session: &mut Session, cmd: KeyCommand) -> CliResult<Outcome> {
    let cloud = session.profile.cloud.clone();
    Ok(match cmd {
        KeyCommand::Create(args) => {
            let k = resolve_key(&cloud, &args.key, None)?;
            let body = create_body(&args)?;
            let url = k.url(&[&k.name, "create"], &[])?;
            let bundle = post(session, url, Some(&body)).await?;
            Outcome::value(shape::key_bundle(&bundle, false))
        }
        KeyCommand::Import(args) => {
            if args.byok_file.is_some() || args.byok_string.is_some() {
                return Err(byok_unavailable());
            }
            let k = resolve_key(&cloud, &args.key, None)?;
            let jwk = read_pem_key(&args)?;
            let body = SecretJson(import_body(&args, jwk)?);
            let url = k.url(&[&k.name], &[])?;
            let bundle = session
                .call_challenged(Method::PUT, url.clone(), Some(&body.0))
                .await?
                .body
                .ok_or_else(|| empty_answer(&url))?;
            Outcome::value(shape::key_bundle(&without_private_members(bundle), false))
        }
        KeyCommand::Show { key, version } => {
            let k = resolve_key(&cloud, &key, version.version.as_deref())?;
            let url = k.url(&[&k.name, k.version_segment()], &[])?;
            let bundle = get(session, url).await?;
            Outcome::value(shape::key_bundle(&bundle, false))
        }
        KeyCommand::List {
            vault,
            max,
            include_managed,
        } => {
            let base = resolve_vault(&cloud, &vault)?;
            let url = list_url(&base, "keys", max.maxresults)?;
            let items = list_all(session, url, max.maxresults).await?;
            let items = items
                .iter()
                .filter(|i| include_managed || i["managed"].as_bool() != Some(true))
                .map(|i| shape::key_item(i, false))
                .collect();
            Outcome::value(Value::Array(items))
        }
        KeyCommand::ListVersions { key, max } => {
            let k = resolve_key(&cloud, &key, None)?;
            let url = list_url(
                &k.vault,
                &format!("keys/{}/versions", k.name),
                max.maxresults,
            )?;
            let items = list_all(session, url, max.maxresults).await?;
            let items = items.iter().map(|i| shape::key_item(i, false)).collect();
            Outcome::value(Value::Array(items))
        }
        KeyCommand::SetAttributes(args) => {
            let k = resolve_key(&cloud, &args.key, args.version.version.as_deref())?;
            let body = update_body(&args)?;
            let url = k.url(&[&k.name, k.version_segment()], &[])?;
            let bundle = session
                .call_challenged(Method::PATCH, url.clone(), Some(&body))
                .await?
                .body
                .ok_or_else(|| empty_answer(&url))?;
            Outcome::value(shape::key_bundle(&bundle, false))
        }
        KeyCommand::Delete { key } => {
            let k = resolve_key(&cloud, &key, None)?;
            let url = k.url(&[&k.name], &[])?;
            let deleted = session
                .call_challenged(Method::DELETE, url.clone(), None)
                .await?
                .body
                .ok_or_else(|| empty_answer(&url))?;
            Outcome::value(shape::key_bundle(&deleted, true))
        }
        KeyCommand::ListDeleted { vault, max } => {
            let base = resolve_vault(&cloud, &vault)?;
            let url = list_url(&base, "deletedkeys", max.maxresults)?;
            let items = list_all(session, url, max.maxresults).await?;
            let items = items.iter().map(|i| shape::key_item(i, true)).collect();
            Outcome::value(Value::Array(items))
        }
        KeyCommand::ShowDeleted { key } => {
            let k = resolve_key(&cloud, &key, None)?;
            let url = k.deleted_url(&[])?;
            let deleted = get(session, url).await?;
            Outcome::value(shape::key_bundle(&deleted, true))
        }
        KeyCommand::Recover { key } => {
            let k = resolve_key(&cloud, &key, None)?;
            let url = k.deleted_url(&["recover"])?;
            let bundle = post(session, url, None).await?;
            Outcome::value(shape::key_bundle(&bundle, false))
        }
        KeyCommand::Purge { key } => {
            let k = resolve_key(&cloud, &key, None)?;
            let url = k.deleted_url(&[])?;
            session.call_challenged(Method::DELETE, url, None).await?;
            Outcome::nothing()
        }
        KeyCommand::Backup { key, file } => {
            let k = resolve_key(&cloud, &key, None)?;
            let url = k.url(&[&k.name, "backup"], &[])?;
            let answer = post(session, url.clone(), None).await?;
            let blob = answer["value"]
                .as_str()
                .and_then(shape::decode_base64)
                .ok_or_else(|| CliError::BadResponse {
                    url: url.to_string(),
                    detail: "the backup answer has no base64url 'value'".to_owned(),
                })?;
            write_private(&file, &blob)?;
            Outcome::nothing()
        }
        KeyCommand::Restore { vault, file } => {
            let base = resolve_vault(&cloud, &vault)?;
            let blob = std::fs::read(&file).map_err(|source| CliError::File {
                path: file.clone(),
                source,
            })?;
            let url = data_url(&base, "keys/restore", &[])?;
            let body = json!({ "value": URL_SAFE_NO_PAD.encode(blob) });
            let bundle = post(session, url, Some(&body)).await?;
            Outcome::value(shape::key_bundle(&bundle, false))
        }
        KeyCommand::Rotate { key } => {
            let k = resolve_key(&cloud, &key, None)?;
            let url = k.url(&[&k.name, "rotate"], &[])?;
            let bundle = post(session, url, None).await?;
            Outcome::value(shape::key_bundle(&bundle, false))
        }
        KeyCommand::RotationPolicy(RotationPolicyCommand::Show { key }) => {
            let k = resolve_key(&cloud, &key, None)?;
            let url = k.url(&[&k.name, "rotationpolicy"], &[])?;
            let policy = get(session, url).await?;
            Outcome::value(shape::rotation_policy(&policy))
        }
        KeyCommand::RotationPolicy(RotationPolicyCommand::Update { key, value }) => {
            let k = resolve_key(&cloud, &key, None)?;
            let body = rotation_policy_body(&read_json_arg(&value)?)?;
            let url = k.url(&[&k.name, "rotationpolicy"], &[])?;
            let policy = session
                .call_challenged(Method::PUT, url.clone(), Some(&body))
                .await?
                .body
                .ok_or_else(|| empty_answer(&url))?;
            Outcome::value(shape::rotation_policy(&policy))
        }
        KeyCommand::Encrypt(args) => {
            let k = resolve_key(&cloud, &args.key, args.version.version.as_deref())?;
            let plain = input_bytes(&args.value, args.data_type)?;
            let url = k.url(&[&k.name, k.version_segment(), "encrypt"], &[])?;
            let body = json!({"alg": args.algorithm, "value": URL_SAFE_NO_PAD.encode(plain)});
            let answer = post(session, url.clone(), Some(&body)).await?;
            let cipher = result_bytes(&answer, &url)?;
            Outcome::value(json!({
                "kid": answer["kid"],
                "result": STANDARD.encode(cipher),
                "algorithm": args.algorithm,
                "iv": null,
                "tag": null,
                "aad": null,
            }))
        }
        KeyCommand::Decrypt(args) => {
            let k = resolve_key(&cloud, &args.key, args.version.version.as_deref())?;
            let cipher = shape::decode_base64(&args.value).ok_or_else(|| {
                CliError::Usage("--value must be the base64 ciphertext to decrypt".to_owned())
            })?;
            let url = k.url(&[&k.name, k.version_segment(), "decrypt"], &[])?;
            let body = json!({"alg": args.algorithm, "value": URL_SAFE_NO_PAD.encode(cipher)});
            let answer = post(session, url.clone(), Some(&body)).await?;
            let plain = result_bytes(&answer, &url)?;
            let result = match args.data_type {
                DataType::Base64 => STANDARD.encode(plain),
                DataType::Plaintext => String::from_utf8(plain).map_err(|_| {
                    CliError::Output(
                        "The decrypted data is not UTF-8 text; use --data-type base64.".to_owned(),
                    )
                })?,
            };
            Outcome::value(json!({
                "kid": answer["kid"],
                "result": result,
                "algorithm": args.algorithm,
            }))
        }
    })
}

/// A resolved key address: the vault's base URL (with a trailing slash), name and version.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KeyAddress {
    vault: String,
    name: String,
    version: Option<String>,
}

impl KeyAddress {
    /// The version as a path segment; empty (left out) for the latest.
    fn version_segment(&self) -> &str {
        self.version.as_deref().unwrap_or_default()
    }

    /// `{vault}/keys/{segments...}` with api-version.
    fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> CliResult<Url> {
        let mut path = String::from("keys");
        for s in segments.iter().filter(|s| !s.is_empty()) {
            path.push('/');
            path.push_str(s);
        }
        data_url(&self.vault, &path, query)
    }

    /// `{vault}/deletedkeys/{name}/{segments...}` with api-version.
    fn deleted_url(&self, segments: &[&str]) -> CliResult<Url> {
        let mut path = format!("deletedkeys/{}", self.name);
        for s in segments {
            path.push('/');
            path.push_str(s);
        }
        data_url(&self.vault, &path, &[])
    }
}

/// A data-plane URL: `path` under the vault, each segment encoded, with api-version.
pub fn data_url(vault: &str, path: &str, query: &[(&str, &str)]) -> CliResult<Url> {
    let mut url = join_path(vault, path)?;
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in query {
            q.append_pair(k, v);
        }
        q.append_pair("api-version", API);
    }
    Ok(url)
}

/// The first page of a list, asking for pages no bigger than Key Vault serves.
fn list_url(vault: &str, path: &str, max: Option<u32>) -> CliResult<Url> {
    let page = max.map(|m| (m as usize).min(MAX_PAGE).to_string());
    let query: Vec<(&str, &str)> = page.iter().map(|p| ("maxresults", p.as_str())).collect();
    data_url(vault, path, &query)
}

/// `https://{name}.{keyVaultDns}/`; the DNS suffix comes from the cloud metadata, or is
/// `vault.{ARM host:port}` like the server's default.
pub fn vault_base_url(name: &str, cloud: &CloudEndpoints) -> CliResult<String> {
    let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if !valid {
        return Err(CliError::Usage(format!(
            "'{name}' is not a valid vault name"
        )));
    }
    let suffix = match &cloud.key_vault_dns_suffix {
        Some(s) => s.trim_start_matches('.').to_owned(),
        None => {
            let arm = parse_url(&cloud.resource_manager)?;
            let host = arm.host_str().unwrap_or("localhost");
            match arm.port() {
                Some(p) => format!("vault.{host}:{p}"),
                None => format!("vault.{host}"),
            }
        }
    };
    Ok(format!("https://{name}.{suffix}/"))
}

/// Splits a Key Vault object id (`https://host/keys/NAME[/VERSION]`, also `deletedkeys`) into
/// the vault's base URL, the name and the version.
fn parse_key_id(id: &str) -> CliResult<KeyAddress> {
    let bad = || {
        CliError::Usage(format!(
            "'{id}' is not a key id (https://VAULT/keys/NAME[/VERSION])"
        ))
    };
    let url = Url::parse(id).map_err(|_| bad())?;
    let segments: Vec<&str> = url
        .path_segments()
        .map(|s| s.filter(|p| !p.is_empty()).collect())
        .unwrap_or_default();
    let (collection, name, version) = match segments.as_slice() {
        [c, n] => (*c, *n, None),
        [c, n, v] => (*c, *n, Some((*v).to_owned())),
        _ => return Err(bad()),
    };
    if !["keys", "deletedkeys"]
        .iter()
        .any(|c| collection.eq_ignore_ascii_case(c))
    {
        return Err(bad());
    }
    Ok(KeyAddress {
        vault: vault_of(&url),
        name: name.to_owned(),
        version,
    })
}

/// `scheme://host[:port]/`.
fn vault_of(url: &Url) -> String {
    let mut base = url.clone();
    base.set_path("/");
    base.set_query(None);
    base.set_fragment(None);
    base.to_string()
}

/// The base URL of the vault a command addresses.
pub fn resolve_vault(cloud: &CloudEndpoints, target: &VaultTarget) -> CliResult<String> {
    match (&target.id, &target.vault_name) {
        (Some(id), _) => Ok(vault_of(&parse_url(id)?)),
        (None, Some(name)) => vault_base_url(name, cloud),
        (None, None) => Err(CliError::Usage(
            "--vault-name or --id is required".to_owned(),
        )),
    }
}

fn resolve_key(
    cloud: &CloudEndpoints,
    target: &KeyTarget,
    version: Option<&str>,
) -> CliResult<KeyAddress> {
    if let Some(id) = &target.id {
        return parse_key_id(id);
    }
    let (Some(vault), Some(name)) = (&target.vault_name, &target.name) else {
        return Err(CliError::Usage(
            "--vault-name and --name, or --id, are required".to_owned(),
        ));
    };
    if name.is_empty() || name.contains('/') {
        return Err(CliError::Usage(format!("'{name}' is not a valid key name")));
    }
    Ok(KeyAddress {
        vault: vault_base_url(vault, cloud)?,
        name: name.clone(),
        version: version.filter(|v| !v.is_empty()).map(str::to_owned),
    })
}

/// az's key type rules (`validate_key_type`): EC when only a curve is given, `-HSM` with
/// `--protection hsm`, and no `-HSM` type with `--protection software`.
fn key_type(
    kty: Option<Kty>,
    curve: Option<Curve>,
    protection: Option<Protection>,
) -> CliResult<Kty> {
    let kty = kty.unwrap_or(if curve.is_some() { Kty::Ec } else { Kty::Rsa });
    match protection {
        Some(Protection::Hsm) => Ok(kty.with_hsm()),
        Some(Protection::Software) if kty.is_hsm() => Err(CliError::Usage(format!(
            "The key type {} is invalid for software protected keys. Omit --protection",
            kty.as_str()
        ))),
        _ => Ok(kty),
    }
}

/// The body of `POST /keys/{name}/create`.
fn create_body(a: &CreateKeyArgs) -> CliResult<Value> {
    let kty = key_type(a.kty, a.curve, a.protection)?;
    let attributes = new_key_attributes(a.disabled, &a.attrs);
    let mut body = json!({ "kty": kty.as_str(), "attributes": attributes });
    if let Some(size) = a.size {
        body["key_size"] = json!(size);
    }
    if let Some(c) = a.curve {
        body["crv"] = json!(c.as_str());
    }
    if let Some(ops) = &a.ops {
        body["key_ops"] = json!(ops.iter().map(|o| o.as_str()).collect::<Vec<_>>());
    }
    if let Some(tags) = &a.tags {
        body["tags"] = parse_tags(tags)?;
    }
    Ok(body)
}

/// The refusal of `--byok-file` and `--byok-string`.
fn byok_unavailable() -> CliError {
    refused(
        "BYOK keys (--byok-file, --byok-string) are unwrapped inside a PKCS#11 HSM, and this \
         sealdisk deployment has none configured. sealdisk never stores an HSM key in software; \
         import the private key from PEM (--pem-file or --pem-string) as a software key instead."
            .to_owned(),
    )
}

/// Reads the private key of `key import` from `--pem-file` or `--pem-string`, as az does
/// (`load_pem_private_key`): failures are az's "Import failed: ..." errors.
fn read_pem_key(a: &ImportKeyArgs) -> CliResult<Jwk> {
    let parsed = match (&a.pem_file, &a.pem_string) {
        (Some(path), _) => {
            let file_error = |source| CliError::File {
                path: path.clone(),
                source,
            };
            let len = std::fs::metadata(path).map_err(file_error)?.len();
            if len > MAX_PEM_FILE {
                return Err(refused(format!(
                    "Import failed: {} is {len} bytes; a PEM key file is a few kilobytes.",
                    path.display()
                )));
            }
            let text = SecretBytes::new(std::fs::read(path).map_err(file_error)?);
            pem::private_key_jwk(text.expose())
        }
        (None, Some(text)) => pem::private_key_jwk(text.expose().as_bytes()),
        (None, None) => {
            return Err(CliError::Usage(
                "supply exactly one: --byok-file, --byok-string, --pem-file, --pem-string"
                    .to_owned(),
            ));
        }
    };
    match parsed {
        Err(e) => Err(refused(format!("Import failed: {e}"))),
        Ok(_) if a.pem_password.is_some() => Err(refused(
            "Import failed: Password was given but private key is not encrypted.".to_owned(),
        )),
        Ok(jwk) => Ok(jwk),
    }
}

/// The body of `PUT /keys/{name}` (import): the JWK with its private members, `Hsm`,
/// attributes and tags. `--kty` and `--curve`, when given, must describe the PEM's key.
fn import_body(a: &ImportKeyArgs, mut jwk: Jwk) -> CliResult<Value> {
    let (found, found_curve) = match (jwk.kty.as_deref(), jwk.crv.as_deref()) {
        (Some("EC"), Some(crv)) => (Kty::Ec, Curve::from_crv(crv)),
        _ => (Kty::Rsa, None),
    };
    let described = match found_curve {
        Some(c) => format!("an EC key on {}", c.as_str()),
        None => format!("an {} key", found.as_str()),
    };
    if let Some(kty) = a.kty.filter(|k| k.software() != found) {
        return Err(CliError::Usage(format!(
            "--kty {} does not match the key in the PEM, which is {described}",
            kty.as_str()
        )));
    }
    if let Some(curve) = a.curve.filter(|c| Some(*c) != found_curve) {
        return Err(CliError::Usage(format!(
            "--curve {} does not match the key in the PEM, which is {described}",
            curve.as_str()
        )));
    }
    let kty = key_type(Some(a.kty.unwrap_or(found)), None, a.protection)?;
    jwk.kty = Some(kty.as_str().to_owned());
    jwk.key_ops = a
        .ops
        .as_ref()
        .map(|ops| ops.iter().map(|o| o.as_str().to_owned()).collect());
    let key = SecretJson(
        serde_json::to_value(&jwk)
            .map_err(|e| CliError::Output(format!("the key cannot be written as JSON: {e}")))?,
    );
    let mut body = json!({
        "key": Value::Null,
        "Hsm": kty.is_hsm(),
        "attributes": new_key_attributes(a.disabled, &a.attrs),
    });
    if let Some(tags) = &a.tags {
        body["tags"] = parse_tags(tags)?;
    }
    body["key"] = key.take();
    Ok(body)
}

/// A JSON document that holds private key members: its strings are zeroed when it is
/// dropped, so the copies this process makes do not outlive the request.
struct SecretJson(Value);

impl SecretJson {
    /// Moves the document out; the emptied holder has nothing left to wipe.
    fn take(mut self) -> Value {
        std::mem::take(&mut self.0)
    }
}

impl Drop for SecretJson {
    fn drop(&mut self) {
        wipe_strings(&mut self.0);
    }
}

/// Zeroes and empties every string value in a JSON document (object keys are names, not
/// secrets).
fn wipe_strings(value: &mut Value) {
    match value {
        Value::String(s) => drop(SecretBytes::new(std::mem::take(s).into_bytes())),
        Value::Array(items) => items.iter_mut().for_each(wipe_strings),
        Value::Object(map) => map.values_mut().for_each(wipe_strings),
        _ => {}
    }
}

/// A key bundle without private JWK members. Key Vault never returns them; should a server
/// do so anyway, they are not printed.
fn without_private_members(mut bundle: Value) -> Value {
    if let Some(key) = bundle.get_mut("key").and_then(Value::as_object_mut) {
        for member in ["d", "dp", "dq", "qi", "p", "q", "k", "key_hsm"] {
            key.remove(member);
        }
    }
    bundle
}

/// `attributes` of a new key (create, import).
fn new_key_attributes(disabled: Option<bool>, attrs: &AttributeArgs) -> Value {
    let mut attributes = json!({ "enabled": !disabled.unwrap_or(false) });
    if let Some(exp) = attrs.expires {
        attributes["exp"] = json!(exp);
    }
    if let Some(nbf) = attrs.not_before {
        attributes["nbf"] = json!(nbf);
    }
    attributes
}

/// The body of `PATCH /keys/{name}/{version}`: only what was given.
fn update_body(a: &SetAttributesArgs) -> CliResult<Value> {
    let mut attributes = json!({});
    if let Some(e) = a.enabled {
        attributes["enabled"] = json!(e);
    }
    if let Some(exp) = a.attrs.expires {
        attributes["exp"] = json!(exp);
    }
    if let Some(nbf) = a.attrs.not_before {
        attributes["nbf"] = json!(nbf);
    }
    let mut body = json!({ "attributes": attributes });
    if let Some(ops) = &a.ops {
        body["key_ops"] = json!(ops.iter().map(|o| o.as_str()).collect::<Vec<_>>());
    }
    if let Some(tags) = &a.tags {
        body["tags"] = parse_tags(tags)?;
    }
    Ok(body)
}

/// az's `datetime_type`: `2030-12-31T01:11:59Z`, `2030-12-31T01:11Z`, `2030-12-31T01Z` or
/// `2030-12-31` (UTC), and any RFC 3339 time; as Unix seconds.
pub fn parse_utc_time(text: &str) -> Result<i64, String> {
    if let Ok(t) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(t.unix_timestamp());
    }
    let forms = [
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z"),
        format_description!("[year]-[month]-[day]T[hour]:[minute]Z"),
        format_description!("[year]-[month]-[day]T[hour]Z"),
    ];
    for form in forms {
        if let Ok(t) = PrimitiveDateTime::parse(text, form) {
            return Ok(t.assume_utc().unix_timestamp());
        }
    }
    if let Ok(d) = Date::parse(text, format_description!("[year]-[month]-[day]")) {
        return Ok(d.midnight().assume_utc().unix_timestamp());
    }
    Err(format!(
        "'{text}' is not a UTC datetime; use e.g. 2030-12-31T01:11:59Z, 2030-12-31T01:11Z or \
         2030-12-31"
    ))
}

/// `--value` of encrypt as bytes.
fn input_bytes(value: &str, data_type: DataType) -> CliResult<Vec<u8>> {
    match data_type {
        DataType::Plaintext => Ok(value.as_bytes().to_vec()),
        DataType::Base64 => shape::decode_base64(value).ok_or_else(|| {
            CliError::Usage(
                "--value is not base64; encode it or use --data-type plaintext".to_owned(),
            )
        }),
    }
}

/// The `value` of a key operation's answer, decoded.
fn result_bytes(answer: &Value, url: &Url) -> CliResult<Vec<u8>> {
    answer["value"]
        .as_str()
        .and_then(shape::decode_base64)
        .ok_or_else(|| CliError::BadResponse {
            url: url.to_string(),
            detail: "the answer has no base64url 'value'".to_owned(),
        })
}

/// A JSON argument given inline, as `@FILE`, or as the path of a file (az's
/// `--value` of `rotation-policy update`).
fn read_json_arg(value: &str) -> CliResult<Value> {
    let from_file = |path: &Path| -> CliResult<Value> {
        let bytes = std::fs::read(path).map_err(|source| CliError::File {
            path: path.to_owned(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|source| CliError::FileFormat {
            path: path.to_owned(),
            source,
        })
    };
    if let Some(path) = value.strip_prefix('@') {
        return from_file(Path::new(path));
    }
    if !value.trim_start().starts_with('{') && Path::new(value).is_file() {
        return from_file(Path::new(value));
    }
    serde_json::from_str(value)
        .map_err(|e| CliError::Usage(format!("--value is not valid JSON: {e}")))
}

/// Looks a field up under its camelCase or snake_case name (az converts the keys of the policy
/// it is given to snake case, so both spellings work there).
fn field<'a>(obj: &'a Value, camel: &str, snake: &str) -> &'a Value {
    match obj.get(camel) {
        Some(v) if !v.is_null() => v,
        _ => obj.get(snake).unwrap_or(&Value::Null),
    }
}

/// The body of `PUT /keys/{name}/rotationpolicy` from what az accepts: Key Vault's own shape
/// (`lifetimeActions[].trigger/action.type`, `attributes.expiryTime`) or the shape `show`
/// prints (`lifetimeActions[].action/timeAfterCreate`, `expiresIn`), keys in either case.
fn rotation_policy_body(policy: &Value) -> CliResult<Value> {
    if !policy.is_object() {
        return Err(CliError::Usage(
            "Please specify a valid policy (a JSON object)".to_owned(),
        ));
    }
    let mut actions = Vec::new();
    let given = field(policy, "lifetimeActions", "lifetime_actions");
    for a in given.as_array().map(Vec::as_slice).unwrap_or_default() {
        let action = match field(a, "action", "action") {
            Value::Object(_) => field(&a["action"], "type", "type").clone(),
            other => other.clone(),
        };
        if !action.is_string() {
            return Err(CliError::Usage(format!(
                "lifetime action {a} has no action type (Rotate or Notify)"
            )));
        }
        let trigger = if a.get("trigger").is_some_and(Value::is_object) {
            &a["trigger"]
        } else {
            a
        };
        let mut t = json!({});
        for (camel, snake) in [
            ("timeAfterCreate", "time_after_create"),
            ("timeBeforeExpiry", "time_before_expiry"),
        ] {
            let v = field(trigger, camel, snake);
            if !v.is_null() {
                t[camel] = v.clone();
            }
        }
        actions.push(json!({"trigger": t, "action": {"type": action}}));
    }
    let attrs = field(policy, "attributes", "attributes");
    let expiry = [
        field(attrs, "expiryTime", "expiry_time"),
        field(attrs, "expiresIn", "expires_in"),
        field(policy, "expiresIn", "expires_in"),
    ]
    .into_iter()
    .find(|v| !v.is_null())
    .cloned();
    let mut body = json!({ "lifetimeActions": actions });
    if let Some(e) = expiry {
        body["attributes"] = json!({ "expiryTime": e });
    }
    Ok(body)
}

/// What to do after one page of a list.
#[derive(Debug, PartialEq, Eq)]
enum PageStep {
    /// The list is complete (or has enough items).
    Done,
    /// Read this URL next.
    Next(String),
}

/// Follows `nextLink` until it is absent or `max` items were collected.
fn next_page(page: &Value, collected: usize, max: Option<u32>) -> PageStep {
    if max.is_some_and(|m| collected >= m as usize) {
        return PageStep::Done;
    }
    match page["nextLink"].as_str().filter(|l| !l.is_empty()) {
        Some(link) => PageStep::Next(link.to_owned()),
        None => PageStep::Done,
    }
}

/// GETs every page of a data-plane list (at most `max` items, like az's `keep_max_results`).
pub async fn list_all(session: &mut Session, url: Url, max: Option<u32>) -> CliResult<Vec<Value>> {
    let mut items: Vec<Value> = Vec::new();
    let mut next = Some(url);
    let mut pages = 0;
    while let Some(url) = next.take() {
        pages += 1;
        let page = get(session, url.clone()).await?;
        let Some(values) = page["value"].as_array() else {
            return Err(CliError::BadResponse {
                url: url.to_string(),
                detail: "list response has no 'value' array".to_owned(),
            });
        };
        items.extend(values.iter().cloned());
        if let PageStep::Next(link) = next_page(&page, items.len(), max) {
            if pages >= MAX_PAGES {
                return Err(CliError::BadResponse {
                    url: url.to_string(),
                    detail: format!("more than {MAX_PAGES} pages"),
                });
            }
            next = Some(parse_url(&link)?);
        }
    }
    if let Some(m) = max {
        items.truncate(m as usize);
    }
    Ok(items)
}

fn empty_answer(url: &Url) -> CliError {
    CliError::BadResponse {
        url: url.to_string(),
        detail: "empty answer".to_owned(),
    }
}

/// GET on the data plane, expecting a JSON body.
pub async fn get(session: &mut Session, url: Url) -> CliResult<Value> {
    session
        .call_challenged(Method::GET, url.clone(), None)
        .await?
        .body
        .ok_or_else(|| empty_answer(&url))
}

/// POST on the data plane, expecting a JSON body.
async fn post(session: &mut Session, url: Url, body: Option<&Value>) -> CliResult<Value> {
    session
        .call_challenged(Method::POST, url.clone(), body)
        .await?
        .body
        .ok_or_else(|| empty_answer(&url))
}

/// Writes a file only its owner can read (a key backup).
fn write_private(path: &Path, bytes: &[u8]) -> CliResult<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let err = |source| CliError::File {
        path: path.to_owned(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::super::KeyvaultCommand;
    use super::super::tests::parse;
    use super::*;

    fn cloud() -> CloudEndpoints {
        let mut c = CloudEndpoints::derived("https://localhost:8443/");
        c.key_vault_dns_suffix = Some("vault.localhost:8443".into());
        c
    }

    fn key_cmd(args: &[&str]) -> KeyCommand {
        let mut full = vec!["key"];
        full.extend_from_slice(args);
        match parse(&full).unwrap() {
            KeyvaultCommand::Key(k) => k,
            other => panic!("{other:?}"),
        }
    }

    fn create_args(args: &[&str]) -> CreateKeyArgs {
        let mut full = vec!["create", "--vault-name", "kv1", "-n", "k1"];
        full.extend_from_slice(args);
        match key_cmd(&full) {
            KeyCommand::Create(a) => *a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn vault_urls_from_the_dns_suffix() {
        assert_eq!(
            vault_base_url("kv1", &cloud()).unwrap(),
            "https://kv1.vault.localhost:8443/"
        );
        let mut c = cloud();
        c.key_vault_dns_suffix = Some(".vault.example.net".into());
        assert_eq!(
            vault_base_url("kv1", &c).unwrap(),
            "https://kv1.vault.example.net/"
        );
        // No metadata suffix: derived from the ARM endpoint.
        let derived = CloudEndpoints::derived("https://localhost:9443/");
        assert_eq!(
            vault_base_url("kv1", &derived).unwrap(),
            "https://kv1.vault.localhost:9443/"
        );
        assert!(vault_base_url("kv1.evil.com/x", &cloud()).is_err());
        assert!(vault_base_url("", &cloud()).is_err());
    }

    #[test]
    fn key_ids_are_split() {
        let k = parse_key_id("https://kv1.vault.localhost:8443/keys/k1/abc123").unwrap();
        assert_eq!(
            k,
            KeyAddress {
                vault: "https://kv1.vault.localhost:8443/".into(),
                name: "k1".into(),
                version: Some("abc123".into()),
            }
        );
        let k = parse_key_id("https://kv1.vault.localhost:8443/deletedkeys/k1").unwrap();
        assert_eq!(k.name, "k1");
        assert_eq!(k.version, None);
        assert!(parse_key_id("https://kv1.vault.localhost:8443/secrets/s1").is_err());
        assert!(parse_key_id("https://kv1.vault.localhost:8443/").is_err());
        assert!(parse_key_id("kv1/keys/k1").is_err());
    }

    #[test]
    fn key_urls() {
        let k = resolve_key(
            &cloud(),
            &KeyTarget {
                vault_name: Some("kv1".into()),
                name: Some("k1".into()),
                id: None,
            },
            None,
        )
        .unwrap();
        assert_eq!(
            k.url(&[&k.name, k.version_segment(), "encrypt"], &[])
                .unwrap()
                .as_str(),
            "https://kv1.vault.localhost:8443/keys/k1/encrypt?api-version=7.6"
        );
        assert_eq!(
            k.deleted_url(&["recover"]).unwrap().as_str(),
            "https://kv1.vault.localhost:8443/deletedkeys/k1/recover?api-version=7.6"
        );
        let v = KeyAddress {
            version: Some("v2".into()),
            ..k
        };
        assert_eq!(
            v.url(&[&v.name, v.version_segment()], &[])
                .unwrap()
                .as_str(),
            "https://kv1.vault.localhost:8443/keys/k1/v2?api-version=7.6"
        );
        assert_eq!(
            list_url("https://kv1.vault.localhost:8443/", "keys", Some(100))
                .unwrap()
                .as_str(),
            "https://kv1.vault.localhost:8443/keys?maxresults=25&api-version=7.6"
        );
    }

    #[test]
    fn key_types_like_az() {
        assert_eq!(key_type(None, None, None).unwrap(), Kty::Rsa);
        assert_eq!(key_type(None, Some(Curve::P256), None).unwrap(), Kty::Ec);
        assert_eq!(
            key_type(None, None, Some(Protection::Hsm)).unwrap(),
            Kty::RsaHsm
        );
        assert_eq!(
            key_type(Some(Kty::Ec), None, Some(Protection::Hsm)).unwrap(),
            Kty::EcHsm
        );
        assert_eq!(
            key_type(Some(Kty::RsaHsm), None, Some(Protection::Software))
                .unwrap_err()
                .exit_code(),
            2
        );
    }

    #[test]
    fn create_body_defaults() {
        assert_eq!(
            create_body(&create_args(&[])).unwrap(),
            json!({"kty": "RSA", "attributes": {"enabled": true}})
        );
    }

    #[test]
    fn create_body_with_everything() {
        let a = create_args(&[
            "--kty",
            "rsa",
            "--size",
            "3072",
            "--ops",
            "wrapkey",
            "UNWRAPKEY",
            "--disabled",
            "--expires",
            "2030-01-01T00:00:00Z",
            "--not-before",
            "2020-01-01",
            "--tags",
            "env=test",
            "--protection",
            "hsm",
        ]);
        assert_eq!(
            create_body(&a).unwrap(),
            json!({
                "kty": "RSA-HSM",
                "key_size": 3072,
                "key_ops": ["wrapKey", "unwrapKey"],
                "attributes": {"enabled": false, "exp": 1_893_456_000, "nbf": 1_577_836_800},
                "tags": {"env": "test"}
            })
        );
        let ec = create_args(&["--curve", "p-384"]);
        assert_eq!(
            create_body(&ec).unwrap(),
            json!({"kty": "EC", "crv": "P-384", "attributes": {"enabled": true}})
        );
    }

    fn import_args(args: &[&str]) -> ImportKeyArgs {
        let mut full = vec!["import", "--vault-name", "kv1", "-n", "k1"];
        full.extend_from_slice(args);
        match key_cmd(&full) {
            KeyCommand::Import(a) => *a,
            other => panic!("{other:?}"),
        }
    }

    const RSA_PEM: &str = include_str!("testdata/rsa2048.pkcs1.pem");
    const EC_PEM: &str = include_str!("testdata/ec-p384.pk8.pem");

    fn pem_jwk(text: &str) -> Jwk {
        pem::private_key_jwk(text.as_bytes()).unwrap()
    }

    #[test]
    fn import_body_carries_the_private_jwk_and_the_new_key_settings() {
        let a = import_args(&[
            "--pem-string",
            RSA_PEM,
            "--ops",
            "wrapkey",
            "unwrapKey",
            "--disabled",
            "--expires",
            "2030-01-01T00:00:00Z",
            "--not-before",
            "2020-01-01",
            "--tags",
            "env=test",
        ]);
        let jwk = pem_jwk(RSA_PEM);
        let body = import_body(&a, jwk.clone()).unwrap();
        let mut expected = serde_json::to_value(&jwk).unwrap();
        expected["key_ops"] = json!(["wrapKey", "unwrapKey"]);
        assert_eq!(
            body,
            json!({
                "key": expected,
                "Hsm": false,
                "attributes": {"enabled": false, "exp": 1_893_456_000, "nbf": 1_577_836_800},
                "tags": {"env": "test"}
            })
        );
        for member in ["n", "e", "d", "p", "q", "dp", "dq", "qi"] {
            assert!(body["key"][member].is_string(), "{member}");
        }
        assert_eq!(body["key"]["kty"], "RSA");
    }

    #[test]
    fn import_body_defaults_and_ec_keys() {
        let a = import_args(&["--pem-file", "k.pem"]);
        let body = import_body(&a, pem_jwk(EC_PEM)).unwrap();
        assert_eq!(body["key"]["kty"], "EC");
        assert_eq!(body["key"]["crv"], "P-384");
        assert!(body["key"]["d"].is_string());
        assert_eq!(body["key"].get("key_ops"), None);
        assert_eq!(body["Hsm"], false);
        assert_eq!(body["attributes"], json!({"enabled": true}));
        assert_eq!(body.get("tags"), None);
        let matching = import_args(&["--pem-file", "k.pem", "--kty", "ec", "--curve", "P-384"]);
        assert_eq!(
            import_body(&matching, pem_jwk(EC_PEM)).unwrap()["key"]["kty"],
            "EC"
        );
    }

    #[test]
    fn import_kty_and_curve_must_describe_the_pem_key() {
        for (args, pem_text, message) in [
            (
                &["--kty", "EC"][..],
                RSA_PEM,
                "--kty EC does not match the key in the PEM, which is an RSA key",
            ),
            (
                &["--kty", "RSA"],
                EC_PEM,
                "--kty RSA does not match the key in the PEM, which is an EC key on P-384",
            ),
            (
                &["--curve", "P-256"],
                EC_PEM,
                "--curve P-256 does not match the key in the PEM, which is an EC key on P-384",
            ),
            (
                &["--curve", "P-256"],
                RSA_PEM,
                "--curve P-256 does not match the key in the PEM, which is an RSA key",
            ),
            (
                &["--kty", "oct"],
                RSA_PEM,
                "--kty oct does not match the key in the PEM, which is an RSA key",
            ),
        ] {
            let mut full = vec!["--pem-file", "k.pem"];
            full.extend_from_slice(args);
            let err = import_body(&import_args(&full), pem_jwk(pem_text)).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}");
            assert_eq!(err.to_string(), format!("usage error: {message}"));
        }
    }

    #[test]
    fn import_with_hsm_protection_asks_for_an_hsm_key() {
        // The vault refuses it (no HSM), as it refuses `key create --protection hsm`.
        for args in [&["--protection", "hsm"][..], &["--kty", "RSA-HSM"]] {
            let mut full = vec!["--pem-file", "k.pem"];
            full.extend_from_slice(args);
            let body = import_body(&import_args(&full), pem_jwk(RSA_PEM)).unwrap();
            assert_eq!(body["key"]["kty"], "RSA-HSM", "{args:?}");
            assert_eq!(body["Hsm"], true, "{args:?}");
        }
        let a = import_args(&["--pem-file", "k.pem", "--kty", "EC-HSM", "-p", "software"]);
        assert_eq!(import_body(&a, pem_jwk(EC_PEM)).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn import_reads_pem_files_and_refuses_what_az_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        std::fs::write(&path, RSA_PEM).unwrap();
        let file = path.to_str().unwrap();
        let jwk = read_pem_key(&import_args(&["--pem-file", file])).unwrap();
        assert_eq!(jwk, pem_jwk(RSA_PEM));

        let with_password = import_args(&["--pem-file", file, "--pem-password", "pw"]);
        assert_eq!(
            read_pem_key(&with_password).unwrap_err().to_string(),
            "Import failed: Password was given but private key is not encrypted."
        );

        let encrypted = include_str!("testdata/rsa2048.encrypted.pk8.pem");
        for args in [
            &["--pem-string", encrypted][..],
            &["--pem-string", encrypted, "--pem-password", "hunter2"],
        ] {
            let err = read_pem_key(&import_args(args)).unwrap_err();
            assert_eq!(err.exit_code(), 1);
            let text = err.to_string();
            assert!(
                text.starts_with("Import failed: the private key is encrypted"),
                "{text}"
            );
            assert!(
                text.contains("openssl pkey -in KEY.pem -out KEY-plain.pem"),
                "{text}"
            );
        }

        let garbage = read_pem_key(&import_args(&["--pem-string", "nonsense"])).unwrap_err();
        assert_eq!(
            garbage.to_string(),
            "Import failed: no PEM block found; expected -----BEGIN PRIVATE KEY-----, \
             -----BEGIN RSA PRIVATE KEY----- or -----BEGIN EC PRIVATE KEY-----."
        );

        let missing = dir.path().join("missing.pem");
        let err = read_pem_key(&import_args(&["--pem-file", missing.to_str().unwrap()]));
        assert!(matches!(err, Err(CliError::File { .. })));

        let big = dir.path().join("big.pem");
        std::fs::write(&big, vec![b'A'; MAX_PEM_FILE as usize + 1]).unwrap();
        let err = read_pem_key(&import_args(&["--pem-file", big.to_str().unwrap()]));
        assert!(err.unwrap_err().to_string().contains("a few kilobytes"));
    }

    #[test]
    fn byok_is_refused_for_want_of_an_hsm() {
        let err = byok_unavailable();
        assert_eq!(err.exit_code(), 1);
        let text = err.to_string();
        assert!(text.contains("PKCS#11 HSM"), "{text}");
        assert!(text.contains("--pem-file"), "{text}");
    }

    #[test]
    fn secret_json_is_wiped() {
        let mut doc = json!({"key": {"d": "c2VjcmV0", "n": "bW9k"}, "list": ["x"], "Hsm": false});
        wipe_strings(&mut doc);
        assert_eq!(
            doc,
            json!({"key": {"d": "", "n": ""}, "list": [""], "Hsm": false})
        );
        let held = SecretJson(json!({"a": "b"}));
        assert_eq!(held.take(), json!({"a": "b"}));
    }

    #[test]
    fn private_members_in_an_answer_are_not_printed() {
        let bundle = json!({"key": {"kid": "k", "n": "AQAB", "d": "c2VjcmV0", "p": "cA"}});
        let shown = shape::key_bundle(&without_private_members(bundle), false);
        assert_eq!(shown["key"]["d"], Value::Null);
        assert_eq!(shown["key"]["p"], Value::Null);
        assert_eq!(shown["key"]["n"], "AQAB");
    }

    #[test]
    fn set_attributes_body_has_only_what_was_given() {
        let a = match key_cmd(&[
            "set-attributes",
            "--vault-name",
            "kv1",
            "-n",
            "k1",
            "--enabled",
            "false",
            "--ops",
            "sign",
        ]) {
            KeyCommand::SetAttributes(a) => *a,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            update_body(&a).unwrap(),
            json!({"attributes": {"enabled": false}, "key_ops": ["sign"]})
        );
    }

    #[test]
    fn utc_times_like_az() {
        assert_eq!(parse_utc_time("2030-01-01T00:00:00Z"), Ok(1_893_456_000));
        assert_eq!(parse_utc_time("2030-01-01T00:00Z"), Ok(1_893_456_000));
        assert_eq!(parse_utc_time("2030-01-01T01Z"), Ok(1_893_459_600));
        assert_eq!(parse_utc_time("2030-01-01"), Ok(1_893_456_000));
        assert_eq!(
            parse_utc_time("2030-01-01T02:00:00+02:00"),
            Ok(1_893_456_000)
        );
        assert!(parse_utc_time("01/01/2030").is_err());
    }

    #[test]
    fn paging_decisions() {
        let more = json!({"value": [1, 2], "nextLink": "https://kv1/keys?$skiptoken=2"});
        let last = json!({"value": [3], "nextLink": null});
        assert_eq!(
            next_page(&more, 2, None),
            PageStep::Next("https://kv1/keys?$skiptoken=2".into())
        );
        assert_eq!(next_page(&last, 3, None), PageStep::Done);
        assert_eq!(
            next_page(&json!({"value": [], "nextLink": ""}), 0, None),
            PageStep::Done
        );
        // Enough items already: stop even though the server has more.
        assert_eq!(next_page(&more, 2, Some(2)), PageStep::Done);
        assert_eq!(
            next_page(&more, 2, Some(3)),
            PageStep::Next("https://kv1/keys?$skiptoken=2".into())
        );
    }

    #[test]
    fn rotation_policies_in_either_shape() {
        let wire = json!({
            "lifetimeActions": [{"trigger": {"timeAfterCreate": "P90D"}, "action": {"type": "Rotate"}}],
            "attributes": {"expiryTime": "P2Y"}
        });
        assert_eq!(rotation_policy_body(&wire).unwrap(), wire);
        let snake = json!({
            "lifetime_actions": [{"trigger": {"time_before_expiry": "P30D"}, "action": {"type": "Notify"}}],
            "attributes": {"expiry_time": "P1Y"}
        });
        assert_eq!(
            rotation_policy_body(&snake).unwrap(),
            json!({
                "lifetimeActions": [{"trigger": {"timeBeforeExpiry": "P30D"}, "action": {"type": "Notify"}}],
                "attributes": {"expiryTime": "P1Y"}
            })
        );
        let shown = json!({
            "lifetimeActions": [{"action": "Rotate", "timeAfterCreate": "P30D", "timeBeforeExpiry": null}],
            "expiresIn": "P90D",
            "id": "https://kv1/keys/k/rotationpolicy"
        });
        assert_eq!(
            rotation_policy_body(&shown).unwrap(),
            json!({
                "lifetimeActions": [{"trigger": {"timeAfterCreate": "P30D"}, "action": {"type": "Rotate"}}],
                "attributes": {"expiryTime": "P90D"}
            })
        );
        assert!(rotation_policy_body(&json!([])).is_err());
        assert!(rotation_policy_body(&json!({"lifetimeActions": [{"trigger": {}}]})).is_err());
    }

    #[test]
    fn json_arguments_inline_or_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        std::fs::write(&path, r#"{"a":1}"#).unwrap();
        assert_eq!(
            read_json_arg(&format!("@{}", path.display())).unwrap(),
            json!({"a":1})
        );
        assert_eq!(
            read_json_arg(path.to_str().unwrap()).unwrap(),
            json!({"a":1})
        );
        assert_eq!(read_json_arg(r#"{"b":2}"#).unwrap(), json!({"b":2}));
        assert_eq!(read_json_arg("nope").unwrap_err().exit_code(), 2);
    }

    #[test]
    fn encrypt_input() {
        assert_eq!(input_bytes("hi", DataType::Plaintext).unwrap(), b"hi");
        assert_eq!(input_bytes("aGk=", DataType::Base64).unwrap(), b"hi");
        assert!(input_bytes("hi there", DataType::Base64).is_err());
    }

    #[test]
    fn backups_are_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.bak");
        write_private(&path, b"blob").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"blob");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    mod against_a_scripted_server {
        use super::*;
        use crate::cli::test_support::{Reply, serve, session};

        #[tokio::test]
        async fn lists_follow_next_links_up_to_maxresults() {
            let (base, seen) = serve(vec![
                Reply::json(
                    "GET",
                    "/keys",
                    200,
                    json!({"value":[{"kid":"{base}keys/a"},{"kid":"{base}keys/b"}],"nextLink":"{base}keys?$skiptoken=2"}),
                ),
                Reply::json(
                    "GET",
                    "/keys",
                    200,
                    json!({"value":[{"kid":"{base}keys/c"},{"kid":"{base}keys/d"}],"nextLink":"{base}keys?$skiptoken=4"}),
                ),
            ])
            .await;
            let dir = tempfile::tempdir().unwrap();
            let mut s = session(&base, dir.path());
            let url = list_url(&base, "keys", Some(3)).unwrap();
            let items = list_all(&mut s, url, Some(3)).await.unwrap();
            let kids: Vec<&str> = items.iter().map(|i| i["kid"].as_str().unwrap()).collect();
            assert_eq!(
                kids,
                [
                    format!("{base}keys/a"),
                    format!("{base}keys/b"),
                    format!("{base}keys/c")
                ]
            );
            let log = seen.lock().unwrap().clone();
            assert_eq!(log.len(), 2, "stopped once three items were in");
            assert!(log[0].1.contains("maxresults=3"));
            assert!(log[1].1.contains("skiptoken=2"));
        }
    }
}
