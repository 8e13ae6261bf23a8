//! The shapes az prints for Key Vault answers: the wire JSON as the Python SDK models turn it
//! into objects and az's transformers and `todict` turn those back into JSON (camelCase keys,
//! every model attribute present, Unix times as ISO strings, key bytes as standard base64).
//! Pure functions of JSON values.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::super::with_model_keys;

/// Keys of az's `Vault` model.
const VAULT_KEYS: [&str; 7] = [
    "id",
    "location",
    "name",
    "properties",
    "systemData",
    "tags",
    "type",
];

/// Keys of the `Resource` model az prints for `keyvault list` without a group.
const RESOURCE_KEYS: [&str; 6] = ["id", "location", "name", "systemData", "tags", "type"];

/// Keys of az's `VaultProperties` model.
const VAULT_PROPERTY_KEYS: [&str; 17] = [
    "accessPolicies",
    "createMode",
    "enablePurgeProtection",
    "enableRbacAuthorization",
    "enableSoftDelete",
    "enabledForDeployment",
    "enabledForDiskEncryption",
    "enabledForTemplateDeployment",
    "hsmPoolResourceId",
    "networkAcls",
    "privateEndpointConnections",
    "provisioningState",
    "publicNetworkAccess",
    "sku",
    "softDeleteRetentionInDays",
    "tenantId",
    "vaultUri",
];

/// Keys of az's `NetworkRuleSet` model.
const NETWORK_ACL_KEYS: [&str; 4] = ["bypass", "defaultAction", "ipRules", "virtualNetworkRules"];

/// Keys of az's `AccessPolicyEntry` model.
const POLICY_KEYS: [&str; 4] = ["applicationId", "objectId", "permissions", "tenantId"];

/// Keys of az's `Permissions` model.
const PERMISSION_KEYS: [&str; 4] = ["certificates", "keys", "secrets", "storage"];

/// Keys of az's `SystemData` model.
const SYSTEM_DATA_KEYS: [&str; 6] = [
    "createdAt",
    "createdBy",
    "createdByType",
    "lastModifiedAt",
    "lastModifiedBy",
    "lastModifiedByType",
];

/// Keys of az's `DeletedVault` model and its properties.
const DELETED_VAULT_KEYS: [&str; 5] = ["id", "name", "properties", "systemData", "type"];
const DELETED_VAULT_PROPERTY_KEYS: [&str; 6] = [
    "deletionDate",
    "location",
    "purgeProtectionEnabled",
    "scheduledPurgeDate",
    "tags",
    "vaultId",
];

/// The JSON Web Key fields of the SDK's `JsonWebKey`, wire name first and az's name second.
const JWK_FIELDS: [(&str, &str); 16] = [
    ("kid", "kid"),
    ("kty", "kty"),
    ("key_ops", "keyOps"),
    ("n", "n"),
    ("e", "e"),
    ("d", "d"),
    ("dp", "dp"),
    ("dq", "dq"),
    ("qi", "qi"),
    ("p", "p"),
    ("q", "q"),
    ("k", "k"),
    ("t", "t"),
    ("crv", "crv"),
    ("x", "x"),
    ("y", "y"),
];

/// JWK fields that hold bytes (base64url on the wire, standard base64 in az's output).
const JWK_BYTES: [&str; 12] = [
    "n", "e", "d", "dp", "dq", "qi", "p", "q", "k", "t", "x", "y",
];

/// A time as Python's `datetime.isoformat()` prints an aware UTC datetime:
/// `2023-11-14T22:13:20+00:00`, microseconds only when not zero.
pub fn python_isoformat(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let micros = t.microsecond();
    let fraction = if micros == 0 {
        String::new()
    } else {
        format!(".{micros:06}")
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{fraction}+00:00",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// A Unix time (Key Vault's `created`, `exp`, ...) as az prints it; null when absent.
pub fn iso_from_unix(value: &Value) -> Value {
    value
        .as_i64()
        .or_else(|| value.as_f64().map(|f| f as i64))
        .and_then(|secs| OffsetDateTime::from_unix_timestamp(secs).ok())
        .map_or(Value::Null, |t| Value::String(python_isoformat(t)))
}

/// An RFC 3339 time (ARM's `deletionDate`) as az prints it; other values unchanged.
fn iso_from_rfc3339(value: &Value) -> Value {
    value
        .as_str()
        .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok())
        .map_or_else(|| value.clone(), |t| Value::String(python_isoformat(t)))
}

/// Decodes base64 in any of the spellings services and users write: standard or URL-safe
/// alphabet, with or without padding.
pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let trimmed = text.trim().trim_end_matches('=');
    STANDARD_NO_PAD
        .decode(trimmed)
        .or_else(|_| URL_SAFE_NO_PAD.decode(trimmed))
        .ok()
}

/// A base64url byte field as az prints it (standard base64, padded); null when absent.
fn std_base64(value: &Value) -> Value {
    value
        .as_str()
        .and_then(decode_base64)
        .map_or(Value::Null, |bytes| Value::String(STANDARD.encode(bytes)))
}

/// The name in a Key Vault object id: `https://v.vault.../keys/NAME[/VERSION]`.
pub fn name_from_id(id: &str) -> Option<String> {
    let url = reqwest::Url::parse(id).ok()?;
    url.path_segments()?.nth(1).map(str::to_owned)
}

/// A wire attribute under either spelling (the 2026 previews add snake_case ones).
fn attr<'a>(attrs: &'a Value, snake: &str, camel: &str) -> &'a Value {
    match &attrs[snake] {
        Value::Null => &attrs[camel],
        v => v,
    }
}

/// Key attributes as az prints them for one key (`transform_key_output`).
pub fn key_attributes(attrs: &Value) -> Value {
    json!({
        "created": iso_from_unix(&attrs["created"]),
        "enabled": attrs["enabled"],
        "expires": iso_from_unix(&attrs["exp"]),
        "exportable": attrs["exportable"],
        "hsmPlatform": attrs["hsmPlatform"],
        "keySize": attr(attrs, "key_size", "keySize"),
        "notBefore": iso_from_unix(&attrs["nbf"]),
        "recoverableDays": attrs["recoverableDays"],
        "recoveryLevel": attrs["recoveryLevel"],
        "updated": iso_from_unix(&attrs["updated"]),
    })
}

/// Key attributes as az prints them in lists: the SDK's whole attributes model.
fn item_attributes(attrs: &Value) -> Value {
    let mut out = key_attributes(attrs);
    out["attestation"] = attrs["attestation"].clone();
    out["externalKey"] = attr(attrs, "external_key", "externalKey").clone();
    out
}

/// `externalKeyId`, which az adds only when the key has one.
fn add_external_key_id(out: &mut Value, attrs: &Value) {
    if let Some(id) = attr(attrs, "external_key", "externalKey")["id"].as_str() {
        out["externalKeyId"] = json!(id);
    }
}

/// A JSON Web Key as az prints the SDK's `JsonWebKey`: all sixteen fields, bytes in standard
/// base64.
fn json_web_key(jwk: &Value) -> Value {
    let mut out = Map::new();
    for (wire, az) in JWK_FIELDS {
        let value = if JWK_BYTES.contains(&wire) {
            std_base64(&jwk[wire])
        } else {
            jwk[wire].clone()
        };
        out.insert(az.to_owned(), value);
    }
    Value::Object(out)
}

/// A key release policy as az prints the SDK's `KeyReleasePolicy` (the policy text decoded).
fn release_policy(policy: &Value) -> Value {
    if policy.is_null() {
        return Value::Null;
    }
    let encoded = policy["data"]
        .as_str()
        .and_then(decode_base64)
        .map_or(Value::Null, |bytes| {
            Value::String(String::from_utf8_lossy(&bytes).into_owned())
        });
    json!({
        "contentType": policy["contentType"],
        "encodedPolicy": encoded,
        "immutable": policy["immutable"],
    })
}

/// The deleted-object fields az adds for a deleted key.
fn add_deleted_fields(out: &mut Value, wire: &Value) {
    out["deletedDate"] = iso_from_unix(&wire["deletedDate"]);
    out["scheduledPurgeDate"] = iso_from_unix(&wire["scheduledPurgeDate"]);
    out["recoveryId"] = wire["recoveryId"].clone();
}

/// A KeyBundle (or DeletedKeyBundle, with `deleted`) as az's `transform_key_output` prints it.
pub fn key_bundle(wire: &Value, deleted: bool) -> Value {
    let mut out = json!({
        "attributes": key_attributes(&wire["attributes"]),
        "key": json_web_key(&wire["key"]),
        "managed": wire["managed"],
        "releasePolicy": release_policy(&wire["release_policy"]),
        "tags": wire["tags"],
    });
    add_external_key_id(&mut out, &wire["attributes"]);
    if deleted {
        add_deleted_fields(&mut out, wire);
    }
    out
}

/// A KeyItem (or DeletedKeyItem) as az's `transform_key_list_output` prints it.
pub fn key_item(wire: &Value, deleted: bool) -> Value {
    let kid = wire["kid"].as_str();
    let attrs = &wire["attributes"];
    let mut out = json!({
        "attributes": item_attributes(attrs),
        "keySize": attr(attrs, "key_size", "keySize"),
        "kid": wire["kid"],
        "managed": wire["managed"],
        "name": kid.and_then(name_from_id),
        "releasePolicy": release_policy(&wire["release_policy"]),
        "tags": wire["tags"],
    });
    add_external_key_id(&mut out, attrs);
    if deleted {
        add_deleted_fields(&mut out, wire);
    }
    out
}

/// A key rotation policy as az prints the SDK's `KeyRotationPolicy`.
pub fn rotation_policy(wire: &Value) -> Value {
    let actions: Vec<Value> = wire["lifetimeActions"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|a| {
            json!({
                "action": a["action"]["type"],
                "timeAfterCreate": a["trigger"]["timeAfterCreate"],
                "timeBeforeExpiry": a["trigger"]["timeBeforeExpiry"],
            })
        })
        .collect();
    let attrs = &wire["attributes"];
    json!({
        "createdOn": iso_from_unix(&attrs["created"]),
        "expiresIn": attrs["expiryTime"],
        "id": wire["id"],
        "lifetimeActions": actions,
        "updatedOn": iso_from_unix(&attrs["updated"]),
    })
}

pub use crate::cli::commands::resource_group_of;

/// Adds `resourceGroup` from `id`, as az does for every resource it prints.
fn with_resource_group(mut value: Value) -> Value {
    let group = value["id"].as_str().and_then(resource_group_of);
    if let (Some(obj), Some(group)) = (value.as_object_mut(), group) {
        obj.entry("resourceGroup")
            .or_insert_with(|| Value::String(group));
    }
    value
}

/// A vault as az prints the SDK's `Vault`.
pub fn vault(wire: Value) -> Value {
    let mut out = with_model_keys(wire, &VAULT_KEYS);
    if out["properties"].is_object() {
        let props = out["properties"].take();
        let mut props = with_model_keys(props, &VAULT_PROPERTY_KEYS);
        if let Some(policies) = props["accessPolicies"].as_array_mut() {
            for p in policies.iter_mut() {
                let mut entry = with_model_keys(p.take(), &POLICY_KEYS);
                if entry["permissions"].is_object() {
                    let perms = entry["permissions"].take();
                    entry["permissions"] = with_model_keys(perms, &PERMISSION_KEYS);
                }
                *p = entry;
            }
        }
        if props["networkAcls"].is_object() {
            let acls = props["networkAcls"].take();
            props["networkAcls"] = with_model_keys(acls, &NETWORK_ACL_KEYS);
        }
        out["properties"] = props;
    }
    if out["systemData"].is_object() {
        let mut system = with_model_keys(out["systemData"].take(), &SYSTEM_DATA_KEYS);
        for k in ["createdAt", "lastModifiedAt"] {
            system[k] = iso_from_rfc3339(&system[k]);
        }
        out["systemData"] = system;
    }
    with_resource_group(out)
}

/// A generic resource as az prints the SDK's `Resource` (`keyvault list` without a group).
pub fn resource(wire: Value) -> Value {
    with_resource_group(with_model_keys(wire, &RESOURCE_KEYS))
}

/// A deleted vault as az prints the SDK's `DeletedVault`.
pub fn deleted_vault(wire: Value) -> Value {
    let mut out = with_model_keys(wire, &DELETED_VAULT_KEYS);
    if out["properties"].is_object() {
        let props = out["properties"].take();
        let mut props = with_model_keys(props, &DELETED_VAULT_PROPERTY_KEYS);
        for k in ["deletionDate", "scheduledPurgeDate"] {
            props[k] = iso_from_rfc3339(&props[k]);
        }
        out["properties"] = props;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A KeyBundle as the data plane sends it (7.6).
    fn wire_bundle() -> Value {
        json!({
            "key": {
                "kid": "https://kv1.vault.localhost:8443/keys/k1/0123abcd",
                "kty": "RSA",
                "key_ops": ["encrypt", "decrypt", "wrapKey", "unwrapKey"],
                "n": "1_-w",
                "e": "AQAB"
            },
            "attributes": {
                "enabled": true,
                "created": 1_700_000_000,
                "updated": 1_700_000_001,
                "exp": 1_800_000_000,
                "recoveryLevel": "Recoverable+Purgeable",
                "recoverableDays": 90,
                "exportable": false
            },
            "tags": {"env": "test"}
        })
    }

    #[test]
    fn python_times() {
        assert_eq!(
            iso_from_unix(&json!(1_700_000_000)),
            json!("2023-11-14T22:13:20+00:00")
        );
        assert_eq!(iso_from_unix(&Value::Null), Value::Null);
        let t = OffsetDateTime::parse("2024-01-02T03:04:05.5Z", &Rfc3339).unwrap();
        assert_eq!(python_isoformat(t), "2024-01-02T03:04:05.500000+00:00");
        assert_eq!(
            iso_from_rfc3339(&json!("2024-01-02T03:04:05Z")),
            json!("2024-01-02T03:04:05+00:00")
        );
        assert_eq!(iso_from_rfc3339(&json!("soon")), json!("soon"));
    }

    #[test]
    fn key_bundle_like_transform_key_output() {
        let out = key_bundle(&wire_bundle(), false);
        assert_eq!(
            out["key"]["kid"],
            "https://kv1.vault.localhost:8443/keys/k1/0123abcd"
        );
        assert_eq!(out["key"]["kty"], "RSA");
        // base64url without padding becomes standard base64 with padding.
        assert_eq!(out["key"]["n"], "1/+w");
        assert_eq!(out["key"]["e"], "AQAB");
        assert_eq!(
            out["key"]["keyOps"],
            json!(["encrypt", "decrypt", "wrapKey", "unwrapKey"])
        );
        assert_eq!(out["key"].as_object().unwrap().len(), 16);
        assert_eq!(out["key"]["crv"], Value::Null);
        assert_eq!(out["attributes"]["created"], "2023-11-14T22:13:20+00:00");
        assert_eq!(out["attributes"]["expires"], "2027-01-15T08:00:00+00:00");
        assert_eq!(out["attributes"]["notBefore"], Value::Null);
        assert_eq!(out["attributes"]["recoverableDays"], 90);
        assert_eq!(out["attributes"]["hsmPlatform"], Value::Null);
        assert_eq!(out["attributes"]["keySize"], Value::Null);
        assert_eq!(out["attributes"].as_object().unwrap().len(), 10);
        assert_eq!(out["tags"], json!({"env": "test"}));
        assert_eq!(out["managed"], Value::Null);
        assert_eq!(out["releasePolicy"], Value::Null);
        assert!(out.get("recoveryId").is_none());
        let keys: Vec<&String> = out.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            ["attributes", "key", "managed", "releasePolicy", "tags"]
        );
    }

    #[test]
    fn the_seed_queries_work_on_key_show() {
        let out = key_bundle(&wire_bundle(), false);
        let q = crate::cli::query::Query::parse("{name:key.kid, keyType:key.kty, keySize:key.n}")
            .unwrap();
        assert_eq!(
            q.apply(&out).unwrap(),
            json!({"name":"https://kv1.vault.localhost:8443/keys/k1/0123abcd","keyType":"RSA","keySize":"1/+w"})
        );
        let q = crate::cli::query::Query::parse("key.kid").unwrap();
        assert_eq!(
            q.apply(&out).unwrap(),
            json!("https://kv1.vault.localhost:8443/keys/k1/0123abcd")
        );
    }

    #[test]
    fn deleted_key_bundle_has_deleted_fields() {
        let mut wire = wire_bundle();
        wire["recoveryId"] = json!("https://kv1.vault.localhost:8443/deletedkeys/k1");
        wire["deletedDate"] = json!(1_700_000_000);
        wire["scheduledPurgeDate"] = json!(1_707_776_000);
        let out = key_bundle(&wire, true);
        assert_eq!(
            out["recoveryId"],
            "https://kv1.vault.localhost:8443/deletedkeys/k1"
        );
        assert_eq!(out["deletedDate"], "2023-11-14T22:13:20+00:00");
        assert_eq!(out["scheduledPurgeDate"], "2024-02-12T22:13:20+00:00");
    }

    #[test]
    fn key_items_get_their_name() {
        let item = json!({
            "kid": "https://kv1.vault.localhost:8443/keys/k1",
            "attributes": {"enabled": true, "created": 1_700_000_000},
            "managed": true
        });
        let out = key_item(&item, false);
        assert_eq!(out["name"], "k1");
        assert_eq!(out["keySize"], Value::Null);
        assert!(out.get("externalKeyId").is_none());
        let attrs: Vec<&String> = out["attributes"].as_object().unwrap().keys().collect();
        assert_eq!(
            attrs,
            [
                "created",
                "enabled",
                "expires",
                "exportable",
                "hsmPlatform",
                "keySize",
                "notBefore",
                "recoverableDays",
                "recoveryLevel",
                "updated",
                "attestation",
                "externalKey"
            ]
        );
        assert_eq!(out["managed"], true);
        assert_eq!(out["tags"], Value::Null);
        assert!(out.get("deletedDate").is_none());
        let out = key_item(&item, true);
        assert_eq!(out["deletedDate"], Value::Null);
        assert_eq!(
            name_from_id("https://kv1.vault.localhost:8443/keys/k1/v2").as_deref(),
            Some("k1")
        );
        assert_eq!(name_from_id("https://kv1.vault.localhost:8443/"), None);
    }

    #[test]
    fn preview_attributes_are_read_in_either_spelling() {
        let item = json!({
            "kid": "https://hsm1.managedhsm.localhost/keys/aes",
            "attributes": {"key_size": 256, "external_key": {"id": "ext-1"}}
        });
        let out = key_item(&item, false);
        assert_eq!(out["keySize"], 256);
        assert_eq!(out["attributes"]["keySize"], 256);
        assert_eq!(out["attributes"]["externalKey"], json!({"id": "ext-1"}));
        assert_eq!(out["externalKeyId"], "ext-1");
        let bundle = key_bundle(&json!({"key": {}, "attributes": {"keySize": 128}}), false);
        assert_eq!(bundle["attributes"]["keySize"], 128);
        assert!(bundle.get("externalKeyId").is_none());
    }

    #[test]
    fn release_policy_text_is_decoded() {
        let mut wire = wire_bundle();
        wire["release_policy"] =
            json!({"contentType":"application/json","data":"eyJhIjoxfQ","immutable":false});
        let out = key_bundle(&wire, false);
        assert_eq!(
            out["releasePolicy"],
            json!({"contentType":"application/json","encodedPolicy":"{\"a\":1}","immutable":false})
        );
    }

    #[test]
    fn rotation_policy_like_the_sdk_model() {
        let wire = json!({
            "id": "https://kv1.vault.localhost:8443/keys/k1/rotationpolicy",
            "lifetimeActions": [
                {"trigger": {"timeAfterCreate": "P90D"}, "action": {"type": "Rotate"}},
                {"trigger": {"timeBeforeExpiry": "P30D"}, "action": {"type": "Notify"}}
            ],
            "attributes": {"expiryTime": "P2Y", "created": 1_700_000_000, "updated": 1_700_000_000}
        });
        assert_eq!(
            rotation_policy(&wire),
            json!({
                "createdOn": "2023-11-14T22:13:20+00:00",
                "expiresIn": "P2Y",
                "id": "https://kv1.vault.localhost:8443/keys/k1/rotationpolicy",
                "lifetimeActions": [
                    {"action": "Rotate", "timeAfterCreate": "P90D", "timeBeforeExpiry": null},
                    {"action": "Notify", "timeAfterCreate": null, "timeBeforeExpiry": "P30D"}
                ],
                "updatedOn": "2023-11-14T22:13:20+00:00"
            })
        );
    }

    #[test]
    fn vaults_like_the_sdk_models() {
        let wire = json!({
            "id": "/subscriptions/s/resourceGroups/rg1/providers/Microsoft.KeyVault/vaults/kv1",
            "name": "kv1",
            "type": "Microsoft.KeyVault/vaults",
            "location": "eastus",
            "properties": {
                "tenantId": "t",
                "sku": {"family": "A", "name": "standard"},
                "accessPolicies": [{"tenantId": "t", "objectId": "o", "permissions": {"keys": ["all"]}}],
                "networkAcls": {"bypass": "AzureServices", "defaultAction": "Allow"},
                "vaultUri": "https://kv1.vault.localhost:8443/"
            }
        });
        let out = vault(wire.clone());
        assert_eq!(out["resourceGroup"], "rg1");
        assert_eq!(out["tags"], Value::Null);
        assert_eq!(out["systemData"], Value::Null);
        let mut with_system = wire;
        with_system["systemData"] = json!({"createdAt": "2026-11-23T22:25:32Z"});
        assert_eq!(
            vault(with_system)["systemData"],
            json!({
                "createdAt": "2026-11-23T22:25:32+00:00",
                "createdBy": null,
                "createdByType": null,
                "lastModifiedAt": null,
                "lastModifiedBy": null,
                "lastModifiedByType": null
            })
        );
        let props = &out["properties"];
        assert_eq!(props.as_object().unwrap().len(), VAULT_PROPERTY_KEYS.len());
        assert_eq!(props["enablePurgeProtection"], Value::Null);
        assert_eq!(props["vaultUri"], "https://kv1.vault.localhost:8443/");
        assert_eq!(
            props["networkAcls"],
            json!({"bypass": "AzureServices", "defaultAction": "Allow", "ipRules": null, "virtualNetworkRules": null})
        );
        let policy = &props["accessPolicies"][0];
        assert_eq!(policy["applicationId"], Value::Null);
        assert_eq!(
            policy["permissions"],
            json!({"keys":["all"],"certificates":null,"secrets":null,"storage":null})
        );
    }

    #[test]
    fn generic_resources_like_the_sdk_model() {
        let out = resource(json!({
            "id": "/subscriptions/s/resourceGroups/rg1/providers/Microsoft.KeyVault/vaults/kv1",
            "name": "kv1",
            "type": "Microsoft.KeyVault/vaults",
            "location": "eastus"
        }));
        assert_eq!(out["resourceGroup"], "rg1");
        assert_eq!(out["tags"], Value::Null);
        assert_eq!(out["systemData"], Value::Null);
        assert_eq!(out.as_object().unwrap().len(), 7);
    }

    #[test]
    fn deleted_vaults_like_the_sdk_models() {
        let wire = json!({
            "id": "/subscriptions/s/providers/Microsoft.KeyVault/locations/eastus/deletedVaults/kv1",
            "name": "kv1",
            "type": "Microsoft.KeyVault/deletedVaults",
            "properties": {
                "vaultId": "/subscriptions/s/resourceGroups/rg1/providers/Microsoft.KeyVault/vaults/kv1",
                "location": "eastus",
                "deletionDate": "2024-01-02T03:04:05Z",
                "scheduledPurgeDate": "2024-04-01T03:04:05Z",
                "purgeProtectionEnabled": false
            }
        });
        let out = deleted_vault(wire);
        assert_eq!(
            out["properties"]["deletionDate"],
            "2024-01-02T03:04:05+00:00"
        );
        assert_eq!(out["properties"]["tags"], Value::Null);
        assert_eq!(out["systemData"], Value::Null);
        assert!(out.get("resourceGroup").is_none());
    }

    #[test]
    fn resource_groups_from_ids() {
        assert_eq!(
            resource_group_of("/subscriptions/s/resourcegroups/RG/providers/x/y/z").as_deref(),
            Some("RG")
        );
        assert_eq!(resource_group_of("/subscriptions/s"), None);
    }

    #[test]
    fn base64_spellings() {
        assert_eq!(decode_base64("1_-w").unwrap(), vec![0xd7, 0xff, 0xb0]);
        assert_eq!(decode_base64("1/+w").unwrap(), vec![0xd7, 0xff, 0xb0]);
        assert_eq!(decode_base64("aGk=").unwrap(), b"hi");
        assert!(decode_base64("not base64!").is_none());
    }
}
