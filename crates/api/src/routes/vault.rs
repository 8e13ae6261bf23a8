//! The Key Vault keys data plane on `https://NAME.vault.DOMAIN:PORT/`: the bearer challenge,
//! per-request authorization (access policies or RBAC), the key operations, and one audit entry
//! per authorized request, appended before the answer leaves (fail-closed).

use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use control::ControlError;
use control::identity::Surface;
use control::keys::{
    CreateKeyInput, CryptoOp, CryptoRequest, CryptoResult, ImportKeyInput, UpdateKeyInput, VaultRef,
};
use control::vaults::KeyAccess;
use keyvault::audit::{AuditFilter, AuditRecord};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Answer, Req, ok};
use crate::AppState;
use crate::auth::{Caller, authenticate};
use crate::error::{ApiError, ApiResult};

/// Largest `maxresults` a list honours, as Key Vault.
const MAX_RESULTS: usize = 25;

/// What a data-plane request asks for, decoded from method and path.
#[derive(Debug)]
enum Op {
    List,
    Restore,
    Create(String),
    Import(String),
    Delete(String),
    Versions(String),
    Backup(String),
    Rotate(String),
    GetPolicy(String),
    SetPolicy(String),
    Get(String, Option<String>),
    Update(String, Option<String>),
    Crypto(String, Option<String>, CryptoOp),
    ListDeleted,
    GetDeleted(String),
    Purge(String),
    Recover(String),
    Audit,
}

impl Op {
    /// The access-policy permission the operation needs, and its audit name.
    fn permission_and_name(&self) -> (&'static str, &'static str) {
        match self {
            Op::List => ("list", "KeyList"),
            Op::Restore => ("restore", "KeyRestore"),
            Op::Create(_) => ("create", "KeyCreate"),
            Op::Import(_) => ("import", "KeyImport"),
            Op::Delete(_) => ("delete", "KeyDelete"),
            Op::Versions(_) => ("list", "KeyListVersions"),
            Op::Backup(_) => ("backup", "KeyBackup"),
            Op::Rotate(_) => ("rotate", "KeyRotate"),
            Op::GetPolicy(_) => ("getrotationpolicy", "KeyRotationPolicyGet"),
            Op::SetPolicy(_) => ("setrotationpolicy", "KeyRotationPolicySet"),
            Op::Get(..) => ("get", "KeyGet"),
            Op::Update(..) => ("update", "KeyUpdate"),
            Op::Crypto(_, _, op) => match op {
                CryptoOp::Encrypt => ("encrypt", "KeyEncrypt"),
                CryptoOp::Decrypt => ("decrypt", "KeyDecrypt"),
                CryptoOp::WrapKey => ("wrapKey", "KeyWrap"),
                CryptoOp::UnwrapKey => ("unwrapKey", "KeyUnwrap"),
                CryptoOp::Sign => ("sign", "KeySign"),
                CryptoOp::Verify => ("verify", "KeyVerify"),
            },
            Op::ListDeleted => ("list", "DeletedKeyList"),
            Op::GetDeleted(_) => ("get", "DeletedKeyGet"),
            Op::Purge(_) => ("purge", "KeyPurge"),
            Op::Recover(_) => ("recover", "KeyRecover"),
            Op::Audit => ("list", "AuditList"),
        }
    }

    fn key(&self) -> Option<&str> {
        match self {
            Op::Create(k)
            | Op::Import(k)
            | Op::Delete(k)
            | Op::Versions(k)
            | Op::Backup(k)
            | Op::Rotate(k)
            | Op::GetPolicy(k)
            | Op::SetPolicy(k)
            | Op::GetDeleted(k)
            | Op::Purge(k)
            | Op::Recover(k)
            | Op::Get(k, _)
            | Op::Update(k, _)
            | Op::Crypto(k, _, _) => Some(k),
            Op::List | Op::Restore | Op::ListDeleted | Op::Audit => None,
        }
    }

    fn version(&self) -> Option<&str> {
        match self {
            Op::Get(_, v) | Op::Update(_, v) | Op::Crypto(_, v, _) => v.as_deref(),
            _ => None,
        }
    }
}

fn version(v: &str) -> Option<String> {
    (!v.is_empty()).then(|| v.to_string())
}

fn crypto_op(word: &str) -> Option<CryptoOp> {
    Some(match word.to_ascii_lowercase().as_str() {
        "encrypt" => CryptoOp::Encrypt,
        "decrypt" => CryptoOp::Decrypt,
        "wrapkey" => CryptoOp::WrapKey,
        "unwrapkey" => CryptoOp::UnwrapKey,
        "sign" => CryptoOp::Sign,
        "verify" => CryptoOp::Verify,
        _ => return None,
    })
}

/// Decodes the path (empty segments kept: `/keys/k/` and `/keys/k//wrapkey` mean the latest
/// version).
fn parse(method: &Method, path: &str) -> Option<Op> {
    let parts: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let lower: Vec<String> = parts.iter().map(|s| s.to_ascii_lowercase()).collect();
    let l: Vec<&str> = lower.iter().map(String::as_str).collect();
    let p = |i: usize| parts[i].clone();
    let m = method.clone();
    Some(match (m, l.as_slice()) {
        (Method::GET, ["keys"] | ["keys", ""]) => Op::List,
        (Method::POST, ["keys", "restore"]) => Op::Restore,
        (Method::GET, ["deletedkeys"] | ["deletedkeys", ""]) => Op::ListDeleted,
        (Method::GET, ["deletedkeys", n]) if !n.is_empty() => Op::GetDeleted(p(1)),
        (Method::DELETE, ["deletedkeys", n]) if !n.is_empty() => Op::Purge(p(1)),
        (Method::POST, ["deletedkeys", n, "recover"]) if !n.is_empty() => Op::Recover(p(1)),
        (Method::GET, ["audit"]) => Op::Audit,
        (_, ["keys", "", ..]) => return None,
        (Method::POST, ["keys", _, "create"]) => Op::Create(p(1)),
        (Method::PUT, ["keys", _]) => Op::Import(p(1)),
        (Method::DELETE, ["keys", _]) => Op::Delete(p(1)),
        (Method::GET, ["keys", _, "versions"]) => Op::Versions(p(1)),
        (Method::POST, ["keys", _, "backup"]) => Op::Backup(p(1)),
        (Method::POST, ["keys", _, "rotate"]) => Op::Rotate(p(1)),
        (Method::GET, ["keys", _, "rotationpolicy"]) => Op::GetPolicy(p(1)),
        (Method::PUT, ["keys", _, "rotationpolicy"]) => Op::SetPolicy(p(1)),
        (Method::GET, ["keys", _]) => Op::Get(p(1), None),
        (Method::GET, ["keys", _, v]) => Op::Get(p(1), version(v)),
        (Method::PATCH, ["keys", _]) => Op::Update(p(1), None),
        (Method::PATCH, ["keys", _, v]) => Op::Update(p(1), version(v)),
        (Method::POST, ["keys", _, w]) if crypto_op(w).is_some() => {
            Op::Crypto(p(1), None, crypto_op(w)?)
        }
        (Method::POST, ["keys", _, v, w]) if crypto_op(w).is_some() => {
            Op::Crypto(p(1), version(v), crypto_op(w)?)
        }
        _ => return None,
    })
}

fn challenge(state: &AppState) -> String {
    format!(
        "Bearer authorization=\"{}{}\", resource=\"{}\"",
        state.endpoints.arm(),
        state.control.tenant(),
        state.endpoints.vault_resource()
    )
}

fn unauthorized(state: &AppState, message: &str) -> Response {
    let mut response = (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({"error": {"code": "Unauthorized", "message": message}})),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&challenge(state)) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    response
}

fn kv_error(status: StatusCode, code: &str, message: String) -> Response {
    (
        status,
        axum::Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

/// Handles a request to vault host `vault`. The answer of an authorized request carries its
/// audit entry's ticket: it may leave only once the entry is acknowledged.
pub fn handle(state: &AppState, req: &Req, path: &str, vault: &str) -> Answer {
    if req.headers.get(header::AUTHORIZATION).is_none() {
        return Answer::now(unauthorized(
            state,
            "AKV10000: Request is missing a Bearer or PoP token.",
        ));
    }
    let caller = match authenticate(state, &req.headers, Surface::Vault) {
        Ok(c) => c,
        Err(e) => return Answer::now(unauthorized(state, &format!("AKV10022: {e}"))),
    };
    if req.query("api-version").is_none_or(str::is_empty) {
        return Answer::now(kv_error(
            StatusCode::BAD_REQUEST,
            "BadParameter",
            "The api-version query parameter is required, e.g. api-version=7.6.".into(),
        ));
    }
    let doc = match state.control.vault_by_name(vault) {
        Ok(Some(doc)) => doc,
        Ok(None) => {
            return Answer::now(kv_error(
                StatusCode::NOT_FOUND,
                "VaultNotFound",
                format!("Vault '{vault}' does not exist in this deployment."),
            ));
        }
        Err(e) => return Answer::now(ApiError::from(e).into_response()),
    };
    let name = doc["name"].as_str().unwrap_or(vault).to_string();
    let url = format!("https://{name}.{}", state.endpoints.vault_suffix());
    let vault = VaultRef { name, doc, url };
    let Some(op) = parse(&req.method, path) else {
        return Answer::now(kv_error(
            StatusCode::BAD_REQUEST,
            "BadParameter",
            format!("Unsupported request: {} {path}", req.method),
        ));
    };
    let (permission, op_name) = op.permission_and_name();
    let result = authorize(state, &vault, &caller, permission, &op)
        .and_then(|()| execute(state, req, &vault, &op));
    let result_code = match &result {
        Ok(_) => "Success".to_string(),
        Err(e) => e.status_and_code().1.to_string(),
    };
    // The key and version an operation produced or used, from the kid it answers with.
    let created = result.as_ref().ok().and_then(|body| {
        let body = body.as_ref()?;
        let kid = body["key"]["kid"]
            .as_str()
            .or_else(|| body["kid"].as_str())?;
        let (rest, version) = kid.rsplit_once('/')?;
        let (_, name) = rest.rsplit_once('/')?;
        Some((name.to_string(), version.to_string()))
    });
    let response = match result {
        Ok(Some(body)) => ok(body),
        Ok(None) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    };
    if matches!(op, Op::Audit) {
        // Reading the audit trail is not itself audited.
        return Answer::now(response);
    }
    let record = AuditRecord {
        caller_object_id: caller.claims.oid.to_string(),
        vault: vault.name.clone(),
        key: op
            .key()
            .map(str::to_string)
            .or_else(|| created.as_ref().map(|c| c.0.clone())),
        version: op
            .version()
            .map(str::to_string)
            .or_else(|| created.map(|c| c.1)),
        operation: op_name.to_string(),
        result: result_code,
        detail: None,
    };
    Answer::after_audit(response, state.audit.submit(record))
}

fn authorize(
    state: &AppState,
    vault: &VaultRef,
    caller: &Caller,
    permission: &str,
    op: &Op,
) -> ApiResult<()> {
    if matches!(op, Op::Audit) {
        // The audit trail is management data: readable by whoever may read the vault resource.
        let id = vault.doc["id"].as_str().unwrap_or_default();
        return Ok(state.control.authorize(
            caller.claims.oid,
            "Microsoft.KeyVault/vaults/read",
            id,
        )?);
    }
    match state
        .control
        .key_access(&vault.doc, caller.claims.oid, permission)?
    {
        KeyAccess::Allowed => Ok(()),
        KeyAccess::DeniedByPolicy => Err(ControlError::KeyAccessDenied {
            object_id: caller.claims.oid.to_string(),
            permission: permission.to_string(),
            vault: vault.name.clone(),
        }
        .into()),
        KeyAccess::DeniedByRbac { action } => Err(ControlError::KeyForbiddenByRbac {
            object_id: caller.claims.oid.to_string(),
            action,
            vault: vault.name.clone(),
        }
        .into()),
    }
}

#[derive(Debug, Deserialize)]
struct OperationBody {
    alg: String,
    value: String,
}

#[derive(Debug, Deserialize)]
struct VerifyBody {
    alg: String,
    digest: String,
    value: String,
}

#[derive(Debug, Deserialize)]
struct BlobBody {
    value: String,
}

fn b64(value: &str) -> ApiResult<Vec<u8>> {
    let trimmed = value.trim_end_matches('=');
    B64URL
        .decode(trimmed)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(trimmed))
        .map_err(|_| {
            ApiError::Control(ControlError::KeyBadParameter(
                "The value is not valid base64url.".into(),
            ))
        })
}

/// A page of `values` per `maxresults` / `$skiptoken`, with a `nextLink` when more remain.
fn page(req: &Req, vault: &VaultRef, path: &str, values: Vec<Value>) -> ApiResult<Value> {
    let max = match req.query("maxresults") {
        Some(m) => m
            .parse::<usize>()
            .ok()
            .filter(|m| (1..=MAX_RESULTS).contains(m))
            .ok_or_else(|| {
                ControlError::KeyBadParameter(format!(
                    "maxresults must be between 1 and {MAX_RESULTS}."
                ))
            })?,
        None => MAX_RESULTS,
    };
    let skip = req
        .query("$skiptoken")
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(0);
    let total = values.len();
    let items: Vec<Value> = values.into_iter().skip(skip).take(max).collect();
    let next = (skip + max < total).then(|| {
        format!(
            "{}{path}?api-version={}&maxresults={max}&$skiptoken={}",
            vault.url,
            req.query("api-version").unwrap_or("7.6"),
            skip + max
        )
    });
    Ok(json!({"value": items, "nextLink": next}))
}

fn execute(state: &AppState, req: &Req, vault: &VaultRef, op: &Op) -> ApiResult<Option<Value>> {
    let c = &state.control;
    Ok(Some(match op {
        Op::List => page(req, vault, "/keys", c.list_keys(vault)?)?,
        Op::Versions(k) => page(
            req,
            vault,
            &format!("/keys/{k}/versions"),
            c.key_versions(vault, k)?,
        )?,
        Op::ListDeleted => page(req, vault, "/deletedkeys", c.deleted_keys(vault)?)?,
        Op::Create(k) => c.create_key(vault, k, req.json::<CreateKeyInput>()?)?,
        Op::Import(k) => c.import_key(vault, k, req.json::<ImportKeyInput>()?)?,
        Op::Get(k, v) => c.get_key(vault, k, v.as_deref())?,
        Op::Update(k, v) => {
            let input = if req.body.is_empty() {
                UpdateKeyInput::default()
            } else {
                req.json()?
            };
            c.update_key(vault, k, v.as_deref(), input)?
        }
        Op::Delete(k) => c.delete_key(vault, k)?,
        Op::GetDeleted(k) => c.deleted_key(vault, k)?,
        Op::Recover(k) => c.recover_key(vault, k)?,
        Op::Purge(k) => {
            c.purge_deleted_key(vault, k)?;
            return Ok(None);
        }
        Op::Backup(k) => json!({"value": c.backup_key(vault, k)?}),
        Op::Restore => c.restore_key(vault, &req.json::<BlobBody>()?.value)?,
        Op::Rotate(k) => c.rotate_key(vault, k)?,
        Op::GetPolicy(k) => c.get_rotation_policy(vault, k)?,
        Op::SetPolicy(k) => c.set_rotation_policy(vault, k, req.json::<Value>()?)?,
        Op::Crypto(k, v, CryptoOp::Verify) => {
            let body: VerifyBody = req.json()?;
            let (digest, signature) = (b64(&body.digest)?, b64(&body.value)?);
            let request = CryptoRequest {
                op: CryptoOp::Verify,
                alg: &body.alg,
                value: &digest,
                signature: Some(&signature),
            };
            match c.key_operation(vault, k, v.as_deref(), request)? {
                CryptoResult::Verified(valid) => json!({"value": valid}),
                CryptoResult::Bytes { .. } => json!({"value": false}),
            }
        }
        Op::Crypto(k, v, crypto) => {
            let body: OperationBody = req.json()?;
            let input = b64(&body.value)?;
            let request = CryptoRequest {
                op: *crypto,
                alg: &body.alg,
                value: &input,
                signature: None,
            };
            match c.key_operation(vault, k, v.as_deref(), request)? {
                CryptoResult::Bytes { kid, value } => {
                    json!({"kid": kid, "value": B64URL.encode(value.as_slice())})
                }
                CryptoResult::Verified(valid) => json!({"value": valid}),
            }
        }
        Op::Audit => {
            let filter = AuditFilter {
                vault: Some(vault.name.clone()),
                key: req.query("key").map(str::to_string),
                limit: req.query("limit").and_then(|l| l.parse().ok()),
            };
            let entries = state
                .audit
                .entries(&filter)
                .map_err(|e| ApiError::AuditUnavailable(e.to_string()))?;
            json!({"value": entries})
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> AuditRecord {
        AuditRecord {
            caller_object_id: "caller".into(),
            vault: "v".into(),
            key: Some("k".into()),
            version: None,
            operation: "KeyUnwrap".into(),
            result: "Success".into(),
            detail: None,
        }
    }

    /// The answer leaves only once its audit entry is acknowledged; when the append fails,
    /// the answer is replaced by the refusal (fail-closed).
    #[tokio::test]
    async fn an_answer_leaves_only_with_its_audit_entry() {
        let dir = tempfile::tempdir().unwrap();
        let root = crypto::RootKey::generate().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = keyvault::audit::AuditLog::open(&path, &root).unwrap();

        let answer = Answer::after_audit(ok(json!({"value": "secret"})), log.submit(record()));
        assert_eq!(answer.into_response().await.status(), StatusCode::OK);
        assert_eq!(log.commit_stats().entries, 1);

        // The log file replaced under the open log: the next append fails.
        std::fs::rename(&path, dir.path().join("moved.jsonl")).unwrap();
        let answer = Answer::after_audit(ok(json!({"value": "secret"})), log.submit(record()));
        let response = answer.into_response().await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "AuditLogUnavailable");
        assert!(!body.to_string().contains("secret"));
    }

    #[test]
    fn paths_with_empty_versions_mean_latest() {
        assert!(matches!(parse(&Method::GET, "/keys/k/"), Some(Op::Get(k, None)) if k == "k"));
        assert!(matches!(
            parse(&Method::POST, "/keys/k//wrapkey"),
            Some(Op::Crypto(_, None, CryptoOp::WrapKey))
        ));
        assert!(
            matches!(parse(&Method::POST, "/keys/k/abc/unwrapKey"), Some(Op::Crypto(_, Some(v), CryptoOp::UnwrapKey)) if v == "abc")
        );
        assert!(matches!(
            parse(&Method::POST, "/keys/k/wrapKey"),
            Some(Op::Crypto(_, None, CryptoOp::WrapKey))
        ));
        assert!(matches!(
            parse(&Method::GET, "/deletedKeys/k"),
            Some(Op::GetDeleted(_))
        ));
        assert!(matches!(
            parse(&Method::DELETE, "/deletedkeys/k"),
            Some(Op::Purge(_))
        ));
        assert!(matches!(
            parse(&Method::GET, "/keys/k/versions"),
            Some(Op::Versions(_))
        ));
        assert!(matches!(
            parse(&Method::PUT, "/keys/k/rotationpolicy"),
            Some(Op::SetPolicy(_))
        ));
        assert!(parse(&Method::POST, "/keys//create").is_none());
        assert!(parse(&Method::POST, "/secrets/s").is_none());
    }
}
