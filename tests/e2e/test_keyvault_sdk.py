"""The Key Vault keys data plane through the Azure SDK for Python (azure-keyvault-keys KeyClient and
CryptographyClient, azure-identity ClientSecretCredential), configured as for any custom cloud:
authority = the server, instance discovery off, and the SDK's challenge-resource check left at its
default (the server must advertise a resource that matches the vault's host and port)."""

from __future__ import annotations

import datetime
import re
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.identity import ClientSecretCredential
from azure.keyvault.keys import (
    JsonWebKey,
    KeyClient,
    KeyRotationLifetimeAction,
    KeyRotationPolicy,
    KeyRotationPolicyAction,
)
from azure.keyvault.keys.crypto import (
    CryptographyClient,
    EncryptionAlgorithm,
    KeyWrapAlgorithm,
    SignatureAlgorithm,
)
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from kv_support import (
    DataPlane,
    create_group,
    create_vault,
    digest,
    ec_private_jwk,
    local_verify,
    local_wrap,
    require_tool,
    rsa_private_jwk,
    rsa_public_key,
    unique_vault_name,
    vault_resource,
)
from support import Server, b64url_decode, b64url_encode, show

DEK = bytes(range(32))
KID_VERSION = re.compile(r"^[0-9a-f]{32}$")


@pytest.fixture(scope="module")
def vault(server: Server) -> dict[str, Any]:
    """A vault of this module: access policies (bootstrap: all key permissions), no purge protection."""
    group = f"kv-sdk-{uuid.uuid4().hex[:8]}"
    create_group(server, group)
    name = unique_vault_name()
    body = create_vault(server, group, name, softDeleteRetentionInDays=7)
    return {"group": group, "name": name, "uri": body["properties"]["vaultUri"]}


@pytest.fixture(scope="module")
def credential(server: Server) -> ClientSecretCredential:
    return ClientSecretCredential(
        server.tenant,
        server.client_id,
        server.client_secret,
        authority=server.endpoint.rstrip("/"),
        disable_instance_discovery=True,
        connection_verify=str(server.ca_file),
    )


@pytest.fixture(scope="module")
def keys(server: Server, vault, credential) -> KeyClient:
    # verify_challenge_resource is left at its default (True).
    return KeyClient(vault["uri"], credential, connection_verify=str(server.ca_file))


@pytest.fixture(scope="module")
def raw(server: Server, vault, credential) -> DataPlane:
    """Raw HTTP with the same principal's token for the vault audience (server-side operations
    the SDK would otherwise do locally)."""
    token = credential.get_token(vault_resource(server) + "/.default").token
    return DataPlane(server, vault["uri"], token)


def crypto(server: Server, key_or_id: Any, credential) -> CryptographyClient:
    return CryptographyClient(key_or_id, credential, connection_verify=str(server.ca_file))


def jwk_dict(key) -> dict[str, Any]:
    """The SDK's JsonWebKey (bytes members) as a dict for kv_support's local helpers."""
    return {name: getattr(key, name) for name in ("kty", "n", "e", "crv", "x", "y")}


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def http_error(info: pytest.ExceptionInfo) -> tuple[int, str | None, str | None]:
    err = info.value
    inner = getattr(err.error, "innererror", None) if err.error else None
    inner_code = inner.get("code") if isinstance(inner, dict) else None
    return err.status_code, err.error.code if err.error else None, inner_code


def assert_kid(kid: str, vault, key_name: str) -> str:
    prefix = f"{vault['uri']}keys/{key_name}/"
    assert kid.startswith(prefix), kid
    version = kid[len(prefix):]
    assert KID_VERSION.match(version), kid
    return version


# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [2048, 3072, 4096])
def test_rsa_key_wrap_encrypt_sign(server: Server, vault, keys: KeyClient, raw: DataPlane, credential,
                                   size: int):
    key_name = name(f"rsa{size}")
    key = keys.create_rsa_key(key_name, size=size)
    version = assert_kid(key.id, vault, key_name)
    assert key.key_type == "RSA"
    assert len(key.key.n) == size // 8
    assert int.from_bytes(key.key.e, "big") == 65537
    assert key.key.d is None  # never the private part
    assert set(key.key_operations) >= {"encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"}
    assert key.properties.enabled is True
    # Retention below 90 days and no purge protection: "Customized", purgeable.
    assert key.properties.recovery_level == "CustomizedRecoverable+Purgeable"
    assert key.properties.recoverable_days == 7
    jwk = jwk_dict(key.key)
    client = crypto(server, key.id, credential)

    for alg in (KeyWrapAlgorithm.rsa_oaep, KeyWrapAlgorithm.rsa_oaep_256, KeyWrapAlgorithm.rsa1_5):
        # Wrapped locally with n/e (what a disk-encryption client does), unwrapped by the vault.
        wrapped = local_wrap(jwk, alg.value, DEK)
        result = client.unwrap_key(alg, wrapped)
        assert result.key == DEK, alg
        assert result.key_id == key.id
        # Wrapped by the vault, unwrapped by the vault.
        resp = raw.op(key_name, "wrapkey", alg.value, DEK)
        assert resp.status_code == 200, show(resp)
        assert resp.json()["kid"] == key.id
        server_wrapped = b64url_decode(resp.json()["value"])
        assert len(server_wrapped) == size // 8
        assert client.unwrap_key(alg, server_wrapped).key == DEK
        # A wrong ciphertext does not unwrap to anything.
        with pytest.raises(HttpResponseError) as info:
            client.unwrap_key(alg, b"\x01" * (size // 8))
        assert info.value.status_code == 400, info.value.message

    for alg in (EncryptionAlgorithm.rsa_oaep, EncryptionAlgorithm.rsa_oaep_256, EncryptionAlgorithm.rsa1_5):
        plaintext = f"hello {alg.value}".encode()
        resp = raw.op(key_name, "encrypt", alg.value, plaintext, version=version)
        assert resp.status_code == 200, show(resp)
        ciphertext = b64url_decode(resp.json()["value"])
        assert client.decrypt(alg, ciphertext).plaintext == plaintext
        assert client.decrypt(alg, local_wrap(jwk, alg.value, plaintext)).plaintext == plaintext

    for alg in ("PS256", "PS384", "PS512", "RS256", "RS384", "RS512"):
        data = f"data for {alg}".encode()
        dig = digest(alg, data)
        signed = client.sign(SignatureAlgorithm(alg), dig)
        assert signed.key_id == key.id
        assert len(signed.signature) == size // 8
        local_verify(jwk, alg, data, signed.signature)  # raises if wrong
        assert client.verify(SignatureAlgorithm(alg), dig, signed.signature).is_valid
        # The vault's own verify, both ways.
        resp = raw.request("POST", f"keys/{key_name}/{version}/verify",
                           {"alg": alg, "digest": b64url_encode(dig), "value": b64url_encode(signed.signature)})
        assert resp.status_code == 200 and resp.json()["value"] is True, show(resp)
        bad = bytes([signed.signature[0] ^ 1]) + signed.signature[1:]
        resp = raw.request("POST", f"keys/{key_name}/{version}/verify",
                           {"alg": alg, "digest": b64url_encode(dig), "value": b64url_encode(bad)})
        assert resp.status_code == 200 and resp.json()["value"] is False, show(resp)


@pytest.mark.parametrize("crv,alg,sig_len", [("P-256", "ES256", 64), ("P-384", "ES384", 96),
                                              ("P-521", "ES512", 132)])
def test_ec_key_sign_verify(server: Server, vault, keys: KeyClient, raw: DataPlane, credential,
                            crv: str, alg: str, sig_len: int):
    key_name = name("ec")
    key = keys.create_ec_key(key_name, curve=crv)
    version = assert_kid(key.id, vault, key_name)
    assert key.key_type == "EC"
    assert key.key.crv == crv
    assert key.key.d is None
    jwk = jwk_dict(key.key)
    client = crypto(server, key.id, credential)
    data = b"sign me " + crv.encode()
    dig = digest(alg, data)
    signed = client.sign(SignatureAlgorithm(alg), dig)
    assert len(signed.signature) == sig_len
    local_verify(jwk, alg, data, signed.signature)
    resp = raw.request("POST", f"keys/{key_name}/{version}/verify",
                       {"alg": alg, "digest": b64url_encode(dig), "value": b64url_encode(signed.signature)})
    assert resp.status_code == 200 and resp.json()["value"] is True, show(resp)
    resp = raw.request("POST", f"keys/{key_name}/{version}/verify",
                       {"alg": alg, "digest": b64url_encode(digest(alg, b"other")),
                        "value": b64url_encode(signed.signature)})
    assert resp.status_code == 200 and resp.json()["value"] is False, show(resp)
    # An EC key does not wrap (its key_ops are sign/verify, and RSA-OAEP needs an RSA key).
    resp = raw.op(key_name, "wrapkey", "RSA-OAEP", DEK)
    assert resp.status_code in (400, 403), show(resp)


def test_hsm_key_refused(keys: KeyClient):
    with pytest.raises(HttpResponseError) as info:
        keys.create_rsa_key(name("hsm"), size=2048, hardware_protected=True)
    status, code, _ = http_error(info)
    assert (status, code) == (400, "BadParameter"), info.value.message
    assert "HSM" in info.value.message


def test_import_rsa_jwk(server: Server, vault, keys: KeyClient, credential):
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = rsa_private_jwk(private)
    key_name = name("imported")
    sdk_jwk = JsonWebKey(**{k: (b64url_decode(v) if k != "kty" else v) for k, v in jwk.items()})
    imported = keys.import_key(key_name, sdk_jwk)
    assert_kid(imported.id, vault, key_name)
    assert imported.key.n == b64url_decode(jwk["n"])
    assert imported.key.e == b64url_decode(jwk["e"])
    for part in ("d", "p", "q", "dp", "dq", "qi"):
        assert getattr(imported.key, part) is None, part
    # The same public key on a later get.
    got = keys.get_key(key_name)
    assert got.id == imported.id and got.key.n == imported.key.n

    client = crypto(server, imported.id, credential)
    wrapped = local_wrap(jwk, "RSA-OAEP", DEK)
    assert client.unwrap_key(KeyWrapAlgorithm.rsa_oaep, wrapped).key == DEK
    # The vault signs with the imported private key: the local private key's public half verifies.
    dig = digest("RS256", b"imported")
    sig = client.sign(SignatureAlgorithm.rs256, dig).signature
    local_verify(jwk, "RS256", b"imported", sig)


def test_import_ec_jwk(server: Server, vault, keys: KeyClient, credential):
    private = ec.generate_private_key(ec.SECP256R1())
    jwk = ec_private_jwk(private, "P-256")
    key_name = name("imported-ec")
    sdk_jwk = JsonWebKey(kty="EC", crv="P-256", x=b64url_decode(jwk["x"]), y=b64url_decode(jwk["y"]),
                         d=b64url_decode(jwk["d"]))
    imported = keys.import_key(key_name, sdk_jwk)
    assert imported.key.x == b64url_decode(jwk["x"]) and imported.key.y == b64url_decode(jwk["y"])
    assert imported.key.d is None
    sig = crypto(server, imported.id, credential).sign(SignatureAlgorithm.es256, digest("ES256", b"x")).signature
    local_verify(jwk, "ES256", b"x", sig)


def test_openssl_wraps_with_exported_public_key(server: Server, vault, keys: KeyClient, credential,
                                                tmp_path: Path):
    """A key exported from the public JWK encrypts with OpenSSL and sealdisk unwraps it."""
    openssl = require_tool("openssl", "install the openssl package")
    key_name = name("openssl")
    key = keys.create_rsa_key(key_name, size=3072)
    pem = rsa_public_key(jwk_dict(key.key)).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "pub.pem").write_bytes(pem)
    (tmp_path / "dek.bin").write_bytes(DEK)
    subprocess.run(
        [openssl, "pkeyutl", "-encrypt", "-pubin", "-inkey", str(tmp_path / "pub.pem"),
         "-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt", "rsa_oaep_md:sha256",
         "-pkeyopt", "rsa_mgf1_md:sha256",
         "-in", str(tmp_path / "dek.bin"), "-out", str(tmp_path / "dek.wrapped")],
        check=True, capture_output=True, timeout=30,
    )
    wrapped = (tmp_path / "dek.wrapped").read_bytes()
    assert len(wrapped) == 384
    result = crypto(server, key.id, credential).unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped)
    assert result.key == DEK


def test_list_paging(server: Server, vault, keys: KeyClient, raw: DataPlane):
    prefix = name("page")
    created = {f"{prefix}-{i}" for i in range(5)}
    for key_name in sorted(created):
        keys.create_ec_key(key_name, curve="P-256")
    pages = [list(p) for p in keys.list_properties_of_keys(max_page_size=2).by_page()]
    assert len(pages) >= 3, [len(p) for p in pages]
    assert all(len(p) <= 2 for p in pages), [len(p) for p in pages]
    names = [k.name for p in pages for k in p]
    assert len(names) == len(set(names)), names  # no key twice across pages
    assert created <= set(names)
    for item in (k for p in pages for k in p):
        assert item.id == f"{vault['uri']}keys/{item.name}"  # list items carry no version

    # The wire: maxresults and nextLink.
    resp = raw.request("GET", "keys", params={"maxresults": "2"})
    assert resp.status_code == 200, show(resp)
    body = resp.json()
    assert len(body["value"]) == 2
    assert body["nextLink"].startswith(vault["uri"]), body

    # Versions page too.
    key_name = sorted(created)[0]
    for _ in range(2):
        keys.rotate_key(key_name)
    versions = [list(p) for p in keys.list_properties_of_key_versions(key_name, max_page_size=1).by_page()]
    assert [len(p) for p in versions] == [1, 1, 1]
    assert len({p[0].version for p in versions}) == 3


def test_disabled_key_refuses_unwrap(server: Server, keys: KeyClient, credential):
    key_name = name("disabled")
    key = keys.create_rsa_key(key_name, size=2048)
    wrapped = local_wrap(jwk_dict(key.key), "RSA-OAEP", DEK)
    updated = keys.update_key_properties(key_name, enabled=False)
    assert updated.properties.enabled is False
    assert keys.get_key(key_name).properties.enabled is False
    client = crypto(server, key.id, credential)
    with pytest.raises(HttpResponseError) as info:
        client.unwrap_key(KeyWrapAlgorithm.rsa_oaep, wrapped)
    assert http_error(info) == (403, "Forbidden", "KeyDisabled"), info.value.message
    with pytest.raises(HttpResponseError) as info:
        client.sign(SignatureAlgorithm.rs256, digest("RS256", b"x"))
    assert http_error(info) == (403, "Forbidden", "KeyDisabled"), info.value.message
    keys.update_key_properties(key_name, enabled=True)
    assert client.unwrap_key(KeyWrapAlgorithm.rsa_oaep, wrapped).key == DEK


def test_expired_key_refuses_unwrap(server: Server, keys: KeyClient, credential):
    key_name = name("expired")
    past = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0) - datetime.timedelta(days=1)
    key = keys.create_rsa_key(key_name, size=2048, expires_on=past)
    assert key.properties.expires_on == past
    wrapped = local_wrap(jwk_dict(key.key), "RSA-OAEP", DEK)
    with pytest.raises(HttpResponseError) as info:
        crypto(server, key.id, credential).unwrap_key(KeyWrapAlgorithm.rsa_oaep, wrapped)
    assert http_error(info) == (403, "Forbidden", "KeyDisabled"), info.value.message
    with pytest.raises(HttpResponseError) as info:
        crypto(server, key.id, credential).decrypt(EncryptionAlgorithm.rsa_oaep, wrapped)
    assert http_error(info) == (403, "Forbidden", "KeyDisabled"), info.value.message
    # Moving the expiry into the future makes it usable again.
    future = past + datetime.timedelta(days=365)
    assert keys.update_key_properties(key_name, expires_on=future).properties.expires_on == future
    assert crypto(server, key.id, credential).unwrap_key(KeyWrapAlgorithm.rsa_oaep, wrapped).key == DEK
    # Not yet valid (nbf in the future) is refused too.
    keys.update_key_properties(key_name, not_before=future - datetime.timedelta(days=1))
    with pytest.raises(HttpResponseError) as info:
        crypto(server, key.id, credential).unwrap_key(KeyWrapAlgorithm.rsa_oaep, wrapped)
    assert info.value.status_code == 403, info.value.message


def test_key_ops_restrict_operations(server: Server, keys: KeyClient, credential):
    key_name = name("wraponly")
    key = keys.create_rsa_key(key_name, size=2048, key_operations=["wrapKey"])
    assert key.key_operations == ["wrapKey"]
    wrapped = local_wrap(jwk_dict(key.key), "RSA-OAEP", DEK)
    with pytest.raises(HttpResponseError) as info:
        crypto(server, key.id, credential).unwrap_key(KeyWrapAlgorithm.rsa_oaep, wrapped)
    assert info.value.status_code == 403, info.value.message
    # PATCH key_ops (and tags) on the latest version allows it.
    updated = keys.update_key_properties(key_name, key_operations=["wrapKey", "unwrapKey"],
                                         tags={"purpose": "disk"})
    assert sorted(updated.key_operations) == ["unwrapKey", "wrapKey"]
    assert updated.properties.tags == {"purpose": "disk"}
    assert crypto(server, key.id, credential).unwrap_key(KeyWrapAlgorithm.rsa_oaep, wrapped).key == DEK


def test_backup_purge_restore(server: Server, vault, keys: KeyClient, credential):
    key_name = name("backup")
    key = keys.create_rsa_key(key_name, size=2048)
    wrapped = local_wrap(jwk_dict(key.key), "RSA-OAEP-256", DEK)
    blob = keys.backup_key(key_name)
    assert isinstance(blob, bytes) and len(blob) > 256

    deleted = keys.begin_delete_key(key_name).result()
    assert deleted.recovery_id == f"{vault['uri']}deletedkeys/{key_name}"
    assert deleted.deleted_date is not None and deleted.scheduled_purge_date > deleted.deleted_date
    assert keys.get_deleted_key(key_name).id == key.id
    with pytest.raises(ResourceNotFoundError):
        keys.get_key(key_name)
    # The name is taken while the key is recoverable.
    with pytest.raises(ResourceExistsError) as info:
        keys.create_rsa_key(key_name, size=2048)
    assert http_error(info) == (409, "Conflict", "ObjectIsDeletedButRecoverable"), info.value.message

    keys.purge_deleted_key(key_name)
    with pytest.raises(ResourceNotFoundError):
        keys.get_deleted_key(key_name)

    restored = keys.restore_key_backup(blob)
    assert restored.id == key.id  # same name, same version
    assert restored.key.n == key.key.n
    result = crypto(server, key.id, credential).unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped)
    assert result.key == DEK
    # Restoring over an existing key is a conflict.
    with pytest.raises(HttpResponseError) as info:
        keys.restore_key_backup(blob)
    assert info.value.status_code == 409, info.value.message


def test_delete_and_recover(server: Server, keys: KeyClient, credential):
    key_name = name("recover")
    key = keys.create_rsa_key(key_name, size=2048)
    keys.begin_delete_key(key_name).result()
    assert key_name in {d.name for d in keys.list_deleted_keys()}
    recovered = keys.begin_recover_deleted_key(key_name).result()
    assert recovered.id == key.id
    assert key_name not in {d.name for d in keys.list_deleted_keys()}
    wrapped = local_wrap(jwk_dict(key.key), "RSA-OAEP", DEK)
    assert crypto(server, key.id, credential).unwrap_key(KeyWrapAlgorithm.rsa_oaep, wrapped).key == DEK


def test_rotate_and_rotation_policy(server: Server, vault, keys: KeyClient):
    key_name = name("rotate")
    first = keys.create_rsa_key(key_name, size=2048)
    policy = keys.get_key_rotation_policy(key_name)
    assert policy.id == f"{vault['uri']}keys/{key_name}/rotationpolicy"

    with pytest.raises(HttpResponseError) as info:
        keys.update_key_rotation_policy(key_name, KeyRotationPolicy(expires_in="P27D"))
    status, code, _ = http_error(info)
    assert (status, code) == (400, "BadParameter"), info.value.message

    wanted = KeyRotationPolicy(
        expires_in="P90D",
        lifetime_actions=[KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, time_before_expiry="P30D")],
    )
    set_policy = keys.update_key_rotation_policy(key_name, wanted)
    assert set_policy.expires_in == "P90D"
    got = keys.get_key_rotation_policy(key_name)
    assert got.expires_in == "P90D"
    rotate_actions = [a for a in got.lifetime_actions if a.action == KeyRotationPolicyAction.rotate]
    assert len(rotate_actions) == 1 and rotate_actions[0].time_before_expiry == "P30D"

    rotated = keys.rotate_key(key_name)
    assert rotated.id != first.id
    assert rotated.key.n != first.key.n
    assert keys.get_key(key_name).id == rotated.id
    # A 90-day expiry policy stamps the new version with an expiry about 90 days out.
    assert rotated.properties.expires_on is not None
    days = (rotated.properties.expires_on - rotated.properties.created_on).days
    assert 89 <= days <= 90, rotated.properties.expires_on
    assert {v.version for v in keys.list_properties_of_key_versions(key_name)} == {
        first.properties.version, rotated.properties.version}
    # The old version still answers by its own kid.
    assert keys.get_key(key_name, first.properties.version).key.n == first.key.n


def test_trailing_slash_and_empty_version(server: Server, vault, keys: KeyClient, raw: DataPlane,
                                          credential):
    key_name = name("slash")
    key = keys.create_rsa_key(key_name, size=2048)
    resp = raw.request("GET", f"keys/{key_name}/")
    assert resp.status_code == 200, show(resp)
    assert resp.json()["key"]["kid"] == key.id
    resp = raw.request("POST", f"keys/{key_name}//wrapkey",
                       {"alg": "RSA-OAEP-256", "value": b64url_encode(DEK)})
    assert resp.status_code == 200, show(resp)
    assert resp.json()["kid"] == key.id
    wrapped = b64url_decode(resp.json()["value"])
    result = crypto(server, key.id, credential).unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped)
    assert result.key == DEK
    # The same through the versioned path, and an unknown version is 404.
    resp = raw.request("GET", f"keys/{key_name}/{key.properties.version}")
    assert resp.status_code == 200 and resp.json()["key"]["kid"] == key.id, show(resp)
    resp = raw.request("GET", f"keys/{key_name}/{'0' * 32}")
    assert resp.status_code == 404, show(resp)


def test_key_names(server: Server, vault, raw: DataPlane):
    """Key Vault object names are 1-127 characters of 0-9, a-z, A-Z and '-'; others are 400
    BadParameter and create nothing."""
    longest = "k" * 127
    resp = raw.request("POST", f"keys/{longest}/create", {"kty": "EC", "crv": "P-256"})
    assert resp.status_code == 200, show(resp)
    assert resp.json()["key"]["kid"].startswith(f"{vault['uri']}keys/{longest}/")
    for bad in ("bad_name", "has.dot", "k" * 128, "sp%20ace"):
        resp = raw.request("POST", f"keys/{bad}/create", {"kty": "EC", "crv": "P-256"})
        assert resp.status_code == 400, show(resp)
        assert resp.json()["error"]["code"] == "BadParameter", show(resp)
        assert raw.request("GET", f"keys/{bad}").status_code in (400, 404)
        resp = raw.request("PUT", f"keys/{bad}", {"key": ec_private_jwk(ec.generate_private_key(ec.SECP256R1()), "P-256")})
        assert resp.status_code == 400, show(resp)
