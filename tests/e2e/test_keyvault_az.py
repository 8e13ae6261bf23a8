"""The Key Vault walkthrough with the real Azure CLI (az 2.91, profile latest), logged in to the
sealdisk cloud as the bootstrap service principal: a purge-protected vault and a customer-managed
disk-encryption key, an access policy and an RBAC role for a second principal (checked with the
SDK as that principal), rotation, soft delete / recover / purge of keys and of vaults."""

from __future__ import annotations

import base64
import re
import uuid
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.identity import ClientSecretCredential
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, EncryptionAlgorithm, KeyWrapAlgorithm

from kv_support import local_wrap, unique_vault_name
from support import Runner, Server

DEK = bytes(range(100, 132))
KEY = "disk-encryption-key"


def kid_pattern(server: Server, vault: str, key: str) -> re.Pattern:
    return re.compile(rf"^https://{re.escape(vault)}\.vault\.localhost:{server.port}/keys/{re.escape(key)}/[0-9a-f]{{32}}$")


@pytest.fixture(scope="module")
def group(az_session, az: Runner) -> str:
    name = f"kv-az-{uuid.uuid4().hex[:8]}"
    az.run("group", "create", "-n", name, "-l", "eastus", "-o", "none")
    return name


@pytest.fixture(scope="module")
def me(az: Runner, az_session, server: Server) -> str:
    """The logged-in principal's object id."""
    return az.run("ad", "sp", "show", "--id", server.client_id, "--query", "id", "-o", "tsv").stdout.strip()


@pytest.fixture(scope="module")
def second(az: Runner, az_session, server: Server) -> dict[str, Any]:
    """A second service principal (az ad sp create-for-rbac), with its object id and a credential."""
    sp = az.json("ad", "sp", "create-for-rbac", "-n", f"e2e-kv-second-{uuid.uuid4().hex[:8]}")
    oid = az.run("ad", "sp", "show", "--id", sp["appId"], "--query", "id", "-o", "tsv").stdout.strip()
    assert oid
    cred = ClientSecretCredential(sp["tenant"], sp["appId"], sp["password"],
                                  authority=server.endpoint.rstrip("/"), disable_instance_discovery=True,
                                  connection_verify=str(server.ca_file))
    return {"appId": sp["appId"], "oid": oid, "credential": cred}


@pytest.fixture(scope="module")
def protected(az: Runner, group: str) -> dict[str, Any]:
    """The seed vault: `az keyvault create ... --enable-purge-protection true` (soft delete is always on)."""
    name = unique_vault_name()
    vault = az.json("keyvault", "create", "--name", name, "-g", group, "-l", "eastus",
                    "--enable-purge-protection", "true", "--sku", "standard",
                    "--enable-rbac-authorization", "false")
    return vault


@pytest.fixture(scope="module")
def disk_key(az: Runner, protected) -> dict[str, Any]:
    return az.json("keyvault", "key", "create", "--vault-name", protected["name"], "--name", KEY,
                   "--kty", "RSA", "--size", "3072")


def sdk_key(server: Server, vault_uri: str, credential) -> KeyClient:
    return KeyClient(vault_uri, credential, connection_verify=str(server.ca_file))


def sdk_crypto(server: Server, kid: str, credential) -> CryptographyClient:
    return CryptographyClient(kid, credential, connection_verify=str(server.ca_file))


def az_jwk(key: dict[str, Any]) -> dict[str, Any]:
    """az prints JWK bytes (n, e) as standard base64."""
    return {"kty": key["kty"], "n": base64.b64decode(key["n"]), "e": base64.b64decode(key["e"])}


def sdk_error(info: pytest.ExceptionInfo) -> tuple[int, str | None]:
    err = info.value
    inner = getattr(err.error, "innererror", None) if err.error else None
    return err.status_code, inner.get("code") if isinstance(inner, dict) else None


# ------------------------------------------------------------------------------------------------


def test_create_purge_protected_vault(server: Server, protected, me: str, group: str):
    name = protected["name"]
    props = protected["properties"]
    assert protected["id"] == f"{server.rg_id(group)}/providers/Microsoft.KeyVault/vaults/{name}"
    assert props["enableSoftDelete"] is True  # no --enable-soft-delete in az any more: always on
    assert props["softDeleteRetentionInDays"] == 90
    assert props["enablePurgeProtection"] is True
    assert props["enableRbacAuthorization"] is False
    assert props["sku"]["name"] == "standard"
    assert props["tenantId"] == server.tenant
    assert props["vaultUri"] == f"https://{name}.vault.localhost:{server.port}/"
    # az adds an access policy with every permission for the creator.
    mine = [p for p in props["accessPolicies"] if p["objectId"] == me]
    assert len(mine) == 1, props["accessPolicies"]
    assert "all" in [k.lower() for k in mine[0]["permissions"]["keys"]]


def test_create_and_show_disk_encryption_key(server: Server, az: Runner, protected, disk_key):
    name = protected["name"]
    kid = disk_key["key"]["kid"]
    assert kid_pattern(server, name, KEY).match(kid), kid
    assert disk_key["key"]["kty"] == "RSA"
    assert len(base64.b64decode(disk_key["key"]["n"])) == 3072 // 8
    assert disk_key["key"]["d"] is None
    assert disk_key["attributes"]["enabled"] is True
    assert disk_key["attributes"]["recoveryLevel"] == "Recoverable"  # purge protected, 90 days
    assert disk_key["attributes"]["recoverableDays"] == 90

    table = az.run("keyvault", "key", "show", "--vault-name", name, "--name", KEY,
                   "--query", "{name:key.kid, keyType:key.kty, keySize:key.n}", "-o", "table").stdout
    lines = table.strip().splitlines()
    assert lines[0].split() == ["Name", "KeyType", "KeySize"], table
    row = lines[2].split()
    assert row[0] == kid and row[1] == "RSA", table
    assert len(base64.b64decode(row[2])) == 384, table

    tsv = az.run("keyvault", "key", "show", "--vault-name", name, "--name", KEY,
                 "--query", "key.kid", "-o", "tsv").stdout.strip()
    assert tsv == kid


def test_access_policy_for_second_principal(server: Server, az: Runner, protected, disk_key, second):
    name = protected["name"]
    vault = az.json("keyvault", "set-policy", "--name", name, "--object-id", second["oid"],
                    "--key-permissions", "get", "wrapKey", "unwrapKey")
    policy = [p for p in vault["properties"]["accessPolicies"] if p["objectId"] == second["oid"]]
    assert len(policy) == 1
    assert sorted(policy[0]["permissions"]["keys"]) == ["get", "unwrapKey", "wrapKey"]

    kid = disk_key["key"]["kid"]
    cred = second["credential"]
    key = sdk_key(server, protected["properties"]["vaultUri"], cred).get_key(KEY)
    assert key.id == kid
    client = sdk_crypto(server, kid, cred)
    wrapped = client.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, DEK).encrypted_key
    assert client.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped).key == DEK
    assert client.unwrap_key(KeyWrapAlgorithm.rsa_oaep, local_wrap(az_jwk(disk_key["key"]), "RSA-OAEP", DEK)).key == DEK

    with pytest.raises(HttpResponseError) as info:
        client.decrypt(EncryptionAlgorithm.rsa_oaep_256, wrapped)
    assert sdk_error(info) == (403, "AccessDenied"), info.value.message
    with pytest.raises(HttpResponseError) as info:
        sdk_key(server, protected["properties"]["vaultUri"], cred).begin_delete_key(KEY)
    assert sdk_error(info) == (403, "AccessDenied"), info.value.message
    # The refused delete changed nothing.
    assert az.run("keyvault", "key", "show", "--vault-name", name, "--name", KEY,
                  "--query", "key.kid", "-o", "tsv").stdout.strip() == kid

    # Removing the policy takes the access away.
    az.run("keyvault", "delete-policy", "--name", name, "--object-id", second["oid"], "-o", "none")
    with pytest.raises(HttpResponseError) as info:
        sdk_crypto(server, kid, cred).unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped)
    assert sdk_error(info) == (403, "AccessDenied"), info.value.message


def test_rbac_vault_role_assignment(server: Server, az: Runner, group: str, me: str, second):
    name = unique_vault_name()
    vault = az.json("keyvault", "create", "--name", name, "-g", group, "-l", "eastus",
                    "--enable-rbac-authorization", "true")
    assert vault["properties"]["enableRbacAuthorization"] is True
    assert vault["properties"]["accessPolicies"] == []
    scope = vault["id"]
    uri = vault["properties"]["vaultUri"]

    # Subscription Owner is not enough on the keys of an RBAC vault.
    failed = az.fails("keyvault", "key", "create", "--vault-name", name, "--name", KEY, "--kty", "RSA")
    assert "ForbiddenByRbac" in failed.stderr, failed.describe()
    az.run("role", "assignment", "create", "--assignee", me, "--role", "Key Vault Crypto Officer",
           "--scope", scope, "-o", "none")
    key = az.json("keyvault", "key", "create", "--vault-name", name, "--name", KEY, "--kty", "RSA",
                  "--size", "2048")
    kid = key["key"]["kid"]
    assert kid_pattern(server, name, KEY).match(kid), kid

    ra = az.json("role", "assignment", "create", "--assignee", second["oid"],
                 "--role", "Key Vault Crypto Service Encryption User", "--scope", scope)
    assert ra["principalId"] == second["oid"]
    assert ra["scope"].lower() == scope.lower()
    assert ra["roleDefinitionId"].lower().endswith("/roledefinitions/e147488a-f6f5-4113-8e2d-b22465e65bf6")

    cred = second["credential"]
    client = sdk_crypto(server, kid, cred)
    wrapped = client.wrap_key(KeyWrapAlgorithm.rsa_oaep, DEK).encrypted_key
    assert client.unwrap_key(KeyWrapAlgorithm.rsa_oaep, wrapped).key == DEK
    with pytest.raises(HttpResponseError) as info:
        client.decrypt(EncryptionAlgorithm.rsa_oaep, wrapped)
    assert sdk_error(info) == (403, "ForbiddenByRbac"), info.value.message
    with pytest.raises(HttpResponseError) as info:
        sdk_key(server, uri, cred).create_rsa_key("not-allowed")
    assert sdk_error(info) == (403, "ForbiddenByRbac"), info.value.message

    az.run("role", "assignment", "delete", "--assignee", second["oid"],
           "--role", "Key Vault Crypto Service Encryption User", "--scope", scope)
    with pytest.raises(HttpResponseError) as info:
        sdk_crypto(server, kid, cred).unwrap_key(KeyWrapAlgorithm.rsa_oaep, wrapped)
    assert sdk_error(info) == (403, "ForbiddenByRbac"), info.value.message


def test_rotate_key(server: Server, az: Runner, protected, disk_key):
    name = protected["name"]
    before = az.json("keyvault", "key", "list-versions", "--vault-name", name, "--name", KEY)
    rotated = az.json("keyvault", "key", "rotate", "--vault-name", name, "--name", KEY)
    new_kid = rotated["key"]["kid"]
    assert kid_pattern(server, name, KEY).match(new_kid), new_kid
    assert new_kid not in {v["kid"] for v in before}
    assert rotated["key"]["n"] != disk_key["key"]["n"]
    assert len(base64.b64decode(rotated["key"]["n"])) == 384  # same size as the original
    after = az.json("keyvault", "key", "list-versions", "--vault-name", name, "--name", KEY)
    assert len(after) == len(before) + 1
    assert {v["kid"] for v in after} == {v["kid"] for v in before} | {new_kid}
    assert az.run("keyvault", "key", "show", "--vault-name", name, "--name", KEY, "--query", "key.kid",
                  "-o", "tsv").stdout.strip() == new_kid
    # The first version still unwraps what was wrapped for it.
    old = disk_key["key"]["kid"]
    cred = ClientSecretCredential(server.tenant, server.client_id, server.client_secret,
                                  authority=server.endpoint.rstrip("/"), disable_instance_discovery=True,
                                  connection_verify=str(server.ca_file))
    wrapped = local_wrap(az_jwk(disk_key["key"]), "RSA-OAEP-256", DEK)
    assert sdk_crypto(server, old, cred).unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped).key == DEK


def test_delete_recover_key_purge_protected(server: Server, az: Runner, protected):
    name = protected["name"]
    key_name = "soft-deleted-key"
    key = az.json("keyvault", "key", "create", "--vault-name", name, "--name", key_name, "--kty", "RSA",
                  "--size", "2048")
    deleted = az.json("keyvault", "key", "delete", "--vault-name", name, "--name", key_name)
    assert deleted["recoveryId"] == f"{protected['properties']['vaultUri']}deletedkeys/{key_name}"
    assert deleted["deletedDate"] and deleted["scheduledPurgeDate"] > deleted["deletedDate"]

    listed = az.json("keyvault", "key", "list-deleted", "--vault-name", name)
    assert key_name in {d["name"] for d in listed}, listed
    shown = az.json("keyvault", "key", "show-deleted", "--vault-name", name, "--name", key_name)
    assert shown["key"]["kid"] == key["key"]["kid"]
    failed = az.fails("keyvault", "key", "show", "--vault-name", name, "--name", key_name)
    assert "NotFound" in failed.stderr, failed.describe()

    # Purge protection: no purge, the key stays recoverable.
    failed = az.fails("keyvault", "key", "purge", "--vault-name", name, "--name", key_name)
    assert "purge protection" in failed.stderr.lower(), failed.describe()
    assert key_name in {d["name"] for d in az.json("keyvault", "key", "list-deleted", "--vault-name", name)}

    recovered = az.json("keyvault", "key", "recover", "--vault-name", name, "--name", key_name)
    assert recovered["key"]["kid"] == key["key"]["kid"]
    assert key_name not in {d["name"] for d in az.json("keyvault", "key", "list-deleted", "--vault-name", name)}
    # Usable again.
    cred = ClientSecretCredential(server.tenant, server.client_id, server.client_secret,
                                  authority=server.endpoint.rstrip("/"), disable_instance_discovery=True,
                                  connection_verify=str(server.ca_file))
    wrapped = local_wrap(az_jwk(key["key"]), "RSA-OAEP", DEK)
    assert sdk_crypto(server, key["key"]["kid"], cred).unwrap_key(KeyWrapAlgorithm.rsa_oaep, wrapped).key == DEK


def test_purge_key_on_unprotected_vault(server: Server, az: Runner, group: str):
    name = unique_vault_name()
    vault = az.json("keyvault", "create", "--name", name, "-g", group, "-l", "eastus",
                    "--enable-rbac-authorization", "false", "--retention-days", "7")
    assert vault["properties"]["enablePurgeProtection"] in (None, False)
    assert vault["properties"]["enableSoftDelete"] is True
    key = az.json("keyvault", "key", "create", "--vault-name", name, "--name", "ec-key", "--kty", "EC",
                  "--curve", "P-256")
    assert key["key"]["crv"] == "P-256"
    assert key["attributes"]["recoveryLevel"] == "CustomizedRecoverable+Purgeable"
    az.run("keyvault", "key", "delete", "--vault-name", name, "--name", "ec-key", "-o", "none")
    # The name is taken while the key is soft-deleted.
    failed = az.fails("keyvault", "key", "create", "--vault-name", name, "--name", "ec-key", "--kty", "EC")
    assert "ObjectIsDeletedButRecoverable" in failed.stderr, failed.describe()
    az.run("keyvault", "key", "purge", "--vault-name", name, "--name", "ec-key")
    failed = az.fails("keyvault", "key", "show-deleted", "--vault-name", name, "--name", "ec-key")
    assert "KeyNotFound" in failed.stderr or "not found" in failed.stderr.lower(), failed.describe()
    assert az.json("keyvault", "key", "list-deleted", "--vault-name", name) == []
    # Purged: the name is free again, for a new key (new version).
    again = az.json("keyvault", "key", "create", "--vault-name", name, "--name", "ec-key", "--kty", "EC",
                    "--curve", "P-256")
    assert again["key"]["kid"] != key["key"]["kid"]


def test_delete_recover_and_purge_vaults(server: Server, az: Runner, group: str, me: str):
    # A purge-protected vault with a key: delete, listed as deleted, purge refused, recover.
    name = unique_vault_name()
    az.run("keyvault", "create", "--name", name, "-g", group, "-l", "eastus", "--enable-purge-protection",
           "true", "--enable-rbac-authorization", "false", "-o", "none")
    key = az.json("keyvault", "key", "create", "--vault-name", name, "--name", KEY, "--kty", "RSA",
                  "--size", "2048")
    az.run("keyvault", "delete", "--name", name)
    assert az.fails("keyvault", "show", "--name", name).returncode != 0
    # A deleted vault's data plane is gone (until recovered).
    failed = az.fails("keyvault", "key", "show", "--vault-name", name, "--name", KEY)
    assert "VaultNotFound" in failed.stderr, failed.describe()

    deleted = az.json("keyvault", "list-deleted", "--resource-type", "vault")
    mine = [d for d in deleted if d["name"] == name]
    assert len(mine) == 1, deleted
    assert mine[0]["properties"]["vaultId"].lower() == f"{server.rg_id(group)}/providers/Microsoft.KeyVault/vaults/{name}".lower()
    assert mine[0]["properties"]["purgeProtectionEnabled"] is True
    assert mine[0]["properties"]["scheduledPurgeDate"] > mine[0]["properties"]["deletionDate"]
    shown = az.json("keyvault", "show-deleted", "--name", name)
    assert shown["name"] == name

    # The name stays taken while the vault is soft-deleted.
    failed = az.fails("keyvault", "create", "--name", name, "-g", group, "-l", "eastus")
    assert "ConflictError" in failed.stderr, failed.describe()
    failed = az.fails("keyvault", "purge", "--name", name)
    assert "PurgeProtected" in failed.stderr, failed.describe()

    recovered = az.json("keyvault", "recover", "--name", name)
    assert recovered["properties"]["vaultUri"] == f"https://{name}.vault.localhost:{server.port}/"
    assert recovered["properties"]["enablePurgeProtection"] is True
    assert name not in {d["name"] for d in az.json("keyvault", "list-deleted", "--resource-type", "vault")}
    # Its keys came back with it.
    assert az.run("keyvault", "key", "show", "--vault-name", name, "--name", KEY, "--query", "key.kid",
                  "-o", "tsv").stdout.strip() == key["key"]["kid"]

    # A vault without purge protection: delete, purge, gone (and the name is free).
    plain = unique_vault_name()
    az.run("keyvault", "create", "--name", plain, "-g", group, "-l", "eastus",
           "--enable-rbac-authorization", "false", "-o", "none")
    az.run("keyvault", "key", "create", "--vault-name", plain, "--name", "k", "--kty", "EC", "-o", "none")
    az.run("keyvault", "delete", "--name", plain)
    assert plain in {d["name"] for d in az.json("keyvault", "list-deleted", "--resource-type", "vault")}
    az.run("keyvault", "purge", "--name", plain)
    assert plain not in {d["name"] for d in az.json("keyvault", "list-deleted", "--resource-type", "vault")}
    assert az.fails("keyvault", "show-deleted", "--name", plain).returncode != 0
    again = az.json("keyvault", "create", "--name", plain, "-g", group, "-l", "eastus",
                    "--enable-rbac-authorization", "false")
    assert again["name"] == plain
    # A purged vault's keys are gone with it.
    assert az.json("keyvault", "key", "list", "--vault-name", plain) == []


def test_vault_names(server: Server, az: Runner, group: str, protected):
    failed = az.fails("keyvault", "create", "--name", "bad_name", "-g", group, "-l", "eastus")
    assert "VaultNameNotValid" in failed.stderr, failed.describe()
    failed = az.fails("keyvault", "create", "--name", "x" * 25, "-g", group, "-l", "eastus")
    assert "VaultNameNotValid" in failed.stderr, failed.describe()
    # Vault names are unique across resource groups (they are host names).
    other = f"{group}-other"
    az.run("group", "create", "-n", other, "-l", "eastus", "-o", "none")
    failed = az.fails("keyvault", "create", "--name", protected["name"], "-g", other, "-l", "eastus")
    assert "VaultAlreadyExists" in failed.stderr, failed.describe()


def test_list_deleted_vaults_without_resource_type(server: Server, az: Runner, group: str):
    """`az keyvault list-deleted` as users type it: az lists deleted vaults AND deleted managed HSMs."""
    name = unique_vault_name()
    az.run("keyvault", "create", "--name", name, "-g", group, "-l", "eastus",
           "--enable-rbac-authorization", "false", "-o", "none")
    az.run("keyvault", "delete", "--name", name)
    deleted = az.json("keyvault", "list-deleted")
    assert name in {d["name"] for d in deleted}, deleted
    az.run("keyvault", "purge", "--name", name)
