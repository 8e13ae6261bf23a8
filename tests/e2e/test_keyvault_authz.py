"""Who may do what on the Key Vault keys data plane, over raw HTTP with tokens for the vault audience:
an access-policy matrix (every key permission, granted alone and withheld alone), the Key Vault RBAC
roles, and the bearer challenge for missing or wrong-audience tokens."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Callable

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec

from kv_support import (
    KEY_PERMISSIONS,
    KV_CRYPTO_OFFICER,
    KV_CRYPTO_SERVICE_ENCRYPTION_USER,
    KV_CRYPTO_USER,
    DataPlane,
    Principal,
    all_keys_policy,
    assert_kv_error,
    assign_role,
    bootstrap_oid,
    create_group,
    create_vault,
    digest,
    ec_private_jwk,
    kv_error,
    local_wrap,
    new_principal,
    unique_vault_name,
    update_policies,
    vault_path,
    vault_resource,
)
from support import Server, b64url_decode, b64url_encode, show

DEK = b"\x42" * 32


def token_for(server: Server, principal: Principal) -> str:
    resp = server.request_token(vault_resource(server) + "/.default", principal.app_id, principal.secret)
    assert resp.status_code == 200, show(resp)
    return resp.json()["access_token"]


@dataclass
class Ops:
    """One operation per key permission, each prepared by `admin` (who may do everything) so that
    the caller's request is valid and would succeed if authorized."""

    admin: DataPlane
    base: str  # an RSA key of the vault
    base_jwk: dict[str, Any]
    purgeable: bool = True

    def prepare(self, permission: str) -> tuple[Callable[[DataPlane], requests.Response],
                                                  Callable[[requests.Response], None]]:
        """(request, check of a successful answer) for `permission`."""
        tag = uuid.uuid4().hex[:8]
        admin, base = self.admin, self.base

        def ok(status: int = 200) -> Callable[[requests.Response], None]:
            def check(resp: requests.Response) -> None:
                assert resp.status_code == status, show(resp)
            return check

        if permission == "get":
            def check_get(resp):
                assert resp.status_code == 200, show(resp)
                assert resp.json()["key"]["kid"].startswith(f"{admin.uri}keys/{base}/")
            return (lambda dp: dp.request("GET", f"keys/{base}")), check_get
        if permission == "list":
            def check_list(resp):
                assert resp.status_code == 200, show(resp)
                assert f"{admin.uri}keys/{base}" in {k["kid"] for k in resp.json()["value"]}
            return (lambda dp: dp.request("GET", "keys")), check_list
        if permission == "create":
            name = f"c-{tag}"

            def check_create(resp):
                assert resp.status_code == 200, show(resp)
                assert resp.json()["key"]["kty"] == "EC"
            return (lambda dp: dp.request("POST", f"keys/{name}/create", {"kty": "EC", "crv": "P-256"})), check_create
        if permission == "update":
            def check_update(resp):
                assert resp.status_code == 200, show(resp)
                assert resp.json()["tags"] == {"t": tag}
            return (lambda dp: dp.request("PATCH", f"keys/{base}", {"tags": {"t": tag}})), check_update
        if permission == "import":
            jwk = ec_private_jwk(ec.generate_private_key(ec.SECP256R1()), "P-256")
            return (lambda dp: dp.request("PUT", f"keys/i-{tag}", {"key": jwk})), ok()
        if permission == "delete":
            admin.create_key(f"d-{tag}", "EC", crv="P-256")

            def check_delete(resp):
                assert resp.status_code == 200, show(resp)
                assert resp.json()["recoveryId"] == f"{admin.uri}deletedkeys/d-{tag}"
            return (lambda dp: dp.request("DELETE", f"keys/d-{tag}")), check_delete
        if permission == "recover":
            admin.create_key(f"r-{tag}", "EC", crv="P-256")
            admin.ok("DELETE", f"keys/r-{tag}")
            return (lambda dp: dp.request("POST", f"deletedkeys/r-{tag}/recover")), ok()
        if permission == "backup":
            def check_backup(resp):
                assert resp.status_code == 200, show(resp)
                assert len(b64url_decode(resp.json()["value"])) > 64
            return (lambda dp: dp.request("POST", f"keys/{base}/backup")), check_backup
        if permission == "restore":
            admin.create_key(f"rs-{tag}", "EC", crv="P-256")
            blob = admin.ok("POST", f"keys/rs-{tag}/backup")["value"]
            admin.ok("DELETE", f"keys/rs-{tag}")
            admin.ok("DELETE", f"deletedkeys/rs-{tag}")

            def check_restore(resp):
                assert resp.status_code == 200, show(resp)
                assert resp.json()["key"]["kid"].startswith(f"{admin.uri}keys/rs-{tag}/")
            return (lambda dp: dp.request("POST", "keys/restore", {"value": blob})), check_restore
        if permission == "purge":
            admin.create_key(f"p-{tag}", "EC", crv="P-256")
            admin.ok("DELETE", f"keys/p-{tag}")
            return (lambda dp: dp.request("DELETE", f"deletedkeys/p-{tag}")), ok(204)
        if permission == "encrypt":
            return (lambda dp: dp.op(base, "encrypt", "RSA-OAEP-256", b"plain")), ok()
        if permission == "decrypt":
            ciphertext = local_wrap(self.base_jwk, "RSA-OAEP-256", b"plain")

            def check_decrypt(resp):
                assert resp.status_code == 200, show(resp)
                assert b64url_decode(resp.json()["value"]) == b"plain"
            return (lambda dp: dp.op(base, "decrypt", "RSA-OAEP-256", ciphertext)), check_decrypt
        if permission == "wrapKey":
            return (lambda dp: dp.op(base, "wrapkey", "RSA-OAEP", DEK)), ok()
        if permission == "unwrapKey":
            wrapped = local_wrap(self.base_jwk, "RSA-OAEP", DEK)

            def check_unwrap(resp):
                assert resp.status_code == 200, show(resp)
                assert b64url_decode(resp.json()["value"]) == DEK
            return (lambda dp: dp.op(base, "unwrapkey", "RSA-OAEP", wrapped)), check_unwrap
        if permission == "sign":
            return (lambda dp: dp.op(base, "sign", "RS256", digest("RS256", b"m"))), ok()
        if permission == "verify":
            dig = digest("PS256", b"m")
            sig = admin.ok("POST", f"keys/{base}/sign", {"alg": "PS256", "value": b64url_encode(dig)})["value"]

            def check_verify(resp):
                assert resp.status_code == 200, show(resp)
                assert resp.json()["value"] is True
            body = {"alg": "PS256", "digest": b64url_encode(dig), "value": sig}
            return (lambda dp: dp.request("POST", f"keys/{base}/verify", body)), check_verify
        if permission == "rotate":
            first = admin.create_key(f"ro-{tag}", "EC", crv="P-256")["key"]["kid"]

            def check_rotate(resp):
                assert resp.status_code == 200, show(resp)
                assert resp.json()["key"]["kid"] != first
            return (lambda dp: dp.request("POST", f"keys/ro-{tag}/rotate")), check_rotate
        if permission == "getrotationpolicy":
            return (lambda dp: dp.request("GET", f"keys/{base}/rotationpolicy")), ok()
        if permission == "setrotationpolicy":
            policy = {"lifetimeActions": [{"trigger": {"timeBeforeExpiry": "P10D"}, "action": {"type": "Notify"}}],
                      "attributes": {"expiryTime": "P60D"}}

            def check_policy(resp):
                assert resp.status_code == 200, show(resp)
                assert resp.json()["attributes"]["expiryTime"] == "P60D"
            return (lambda dp: dp.request("PUT", f"keys/{base}/rotationpolicy", policy)), check_policy
        raise AssertionError(f"no scenario for {permission}")


@pytest.fixture(scope="module")
def principals(server: Server) -> dict[str, Principal]:
    tag = uuid.uuid4().hex[:8]
    return {role: new_principal(server, f"e2e-kv-{role}-{tag}") for role in ("a", "b", "c")}


@pytest.fixture(scope="module")
def group(server: Server) -> str:
    name = f"kv-authz-{uuid.uuid4().hex[:8]}"
    create_group(server, name)
    return name


@pytest.fixture(scope="module")
def policy_vault(server: Server, group: str) -> dict[str, Any]:
    """An access-policy vault without purge protection; the bootstrap principal holds all key
    permissions."""
    name = unique_vault_name()
    body = create_vault(server, group, name, softDeleteRetentionInDays=7)
    admin = DataPlane(server, body["properties"]["vaultUri"], server.token(vault_resource(server)))
    base = admin.create_key("base", "RSA", key_size=2048)
    return {"name": name, "uri": body["properties"]["vaultUri"], "admin": admin,
            "ops": Ops(admin, "base", base["key"])}


@pytest.fixture(scope="module")
def rbac_vault(server: Server, group: str) -> dict[str, Any]:
    """An RBAC vault; the bootstrap principal is given Key Vault Crypto Officer on it."""
    name = unique_vault_name()
    body = create_vault(server, group, name, enableRbacAuthorization=True, accessPolicies=[],
                        softDeleteRetentionInDays=7)
    admin = DataPlane(server, body["properties"]["vaultUri"], server.token(vault_resource(server)))
    # Subscription Owner has no data actions: nothing on the keys until a Key Vault role is assigned.
    assert_kv_error(admin.request("POST", "keys/base/create", {"kty": "RSA", "key_size": 2048}),
                    403, "Forbidden", "ForbiddenByRbac")
    assign_role(server, body["id"], bootstrap_oid(server), KV_CRYPTO_OFFICER)
    base = admin.create_key("base", "RSA", key_size=2048)
    return {"name": name, "id": body["id"], "uri": body["properties"]["vaultUri"], "admin": admin,
            "ops": Ops(admin, "base", base["key"])}


# ------------------------------------------------------------------------------------------------
# Access policies: each permission alone, and everything but it
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("permission", KEY_PERMISSIONS)
def test_access_policy_permission(server: Server, group: str, policy_vault, principals, permission: str):
    only, all_but = principals["a"], principals["b"]
    others = [p for p in KEY_PERMISSIONS if p != permission]
    update_policies(server, group, policy_vault["name"], "replace", [
        all_keys_policy(server, bootstrap_oid(server)),
        all_keys_policy(server, only.oid, [permission]),
        all_keys_policy(server, all_but.oid, others),
    ])
    resp = server.arm("GET", vault_path(server, group, policy_vault["name"]), api_version="2023-07-01")
    assert resp.status_code == 200, show(resp)
    policies = {p["objectId"]: p["permissions"]["keys"] for p in resp.json()["properties"]["accessPolicies"]}
    assert [k.lower() for k in policies[only.oid]] == [permission.lower()], policies
    assert len(policies[all_but.oid]) == len(KEY_PERMISSIONS) - 1, policies

    request, check = policy_vault["ops"].prepare(permission)
    uri = policy_vault["uri"]
    # Everything but the permission: refused (first, so that the state is still as prepared).
    denied = request(DataPlane(server, uri, token_for(server, all_but)))
    assert_kv_error(denied, 403, "Forbidden", "AccessDenied")
    # The message names the missing permission, as Key Vault's does.
    assert permission.lower() in denied.json()["error"]["message"].lower(), show(denied)
    # The permission alone: allowed.
    check(request(DataPlane(server, uri, token_for(server, only))))


def test_no_policy_no_access(server: Server, policy_vault, principals):
    """A principal without any access policy gets nothing, not even get/list."""
    nobody = DataPlane(server, policy_vault["uri"], token_for(server, principals["c"]))
    for method, path in [("GET", "keys"), ("GET", "keys/base"), ("POST", "keys/base/wrapkey")]:
        body = {"alg": "RSA-OAEP", "value": b64url_encode(DEK)} if method == "POST" else None
        assert_kv_error(nobody.request(method, path, body), 403, "Forbidden", "AccessDenied")


# ------------------------------------------------------------------------------------------------
# RBAC roles
# ------------------------------------------------------------------------------------------------

ROLE_MATRIX = {
    # role: (allowed, denied)
    KV_CRYPTO_USER: (
        ["get", "wrapKey", "unwrapKey", "encrypt", "decrypt", "sign", "verify"],
        ["create", "delete", "rotate", "import", "purge"],
    ),
    KV_CRYPTO_OFFICER: (
        ["create", "delete", "rotate", "get", "list", "import", "getrotationpolicy", "setrotationpolicy"],
        [],
    ),
    KV_CRYPTO_SERVICE_ENCRYPTION_USER: (
        ["get", "wrapKey", "unwrapKey"],
        ["encrypt", "decrypt", "sign", "verify", "create", "delete", "rotate", "update", "backup"],
    ),
}
ROLE_NAMES = {KV_CRYPTO_USER: "crypto-user", KV_CRYPTO_OFFICER: "crypto-officer",
              KV_CRYPTO_SERVICE_ENCRYPTION_USER: "service-encryption-user"}


@pytest.fixture(scope="module")
def rbac_principals(server: Server, rbac_vault, principals) -> dict[str, Principal]:
    mapping = {KV_CRYPTO_USER: principals["a"], KV_CRYPTO_OFFICER: principals["b"],
               KV_CRYPTO_SERVICE_ENCRYPTION_USER: principals["c"]}
    for role, principal in mapping.items():
        assign_role(server, rbac_vault["id"], principal.oid, role)
    return mapping


@pytest.mark.parametrize("role", list(ROLE_MATRIX), ids=lambda r: ROLE_NAMES[r])
def test_rbac_role(server: Server, rbac_vault, rbac_principals, role: str):
    principal = rbac_principals[role]
    dp = DataPlane(server, rbac_vault["uri"], token_for(server, principal))
    allowed, denied = ROLE_MATRIX[role]
    failures = []
    for permission in denied:
        request, _ = rbac_vault["ops"].prepare(permission)
        resp = request(dp)
        if resp.status_code != 403 or kv_error(resp)[1] != "ForbiddenByRbac":
            failures.append(f"{permission} should be refused (403 ForbiddenByRbac): {show(resp)}")
    for permission in allowed:
        request, check = rbac_vault["ops"].prepare(permission)
        try:
            check(request(dp))
        except AssertionError as err:
            failures.append(f"{permission} should be allowed: {err}")
    assert not failures, "\n".join(failures)


def test_rbac_ignores_access_policies(server: Server, group: str, rbac_vault, principals):
    """On an RBAC vault an access policy grants nothing, and a role at resource-group scope works."""
    extra = new_principal(server, f"e2e-kv-rg-{uuid.uuid4().hex[:8]}")
    update_policies(server, group, rbac_vault["name"], "add", [all_keys_policy(server, extra.oid)])
    dp = DataPlane(server, rbac_vault["uri"], token_for(server, extra))
    assert_kv_error(dp.request("GET", "keys/base"), 403, "Forbidden", "ForbiddenByRbac")

    assign_role(server, server.rg_id(group), extra.oid, KV_CRYPTO_SERVICE_ENCRYPTION_USER)
    wrapped = local_wrap(rbac_vault["ops"].base_jwk, "RSA-OAEP", DEK)
    resp = dp.op("base", "unwrapkey", "RSA-OAEP", wrapped)
    assert resp.status_code == 200, show(resp)
    assert b64url_decode(resp.json()["value"]) == DEK
    assert_kv_error(dp.op("base", "decrypt", "RSA-OAEP", wrapped), 403, "Forbidden", "ForbiddenByRbac")


def test_rbac_role_scope(server: Server, group: str, rbac_vault, rbac_principals):
    """A role on one vault grants nothing on another vault of the same resource group; a role at
    subscription scope reaches every vault."""
    other = create_vault(server, group, unique_vault_name(), enableRbacAuthorization=True,
                         accessPolicies=[], softDeleteRetentionInDays=7)
    other_uri = other["properties"]["vaultUri"]
    assign_role(server, other["id"], bootstrap_oid(server), KV_CRYPTO_OFFICER)
    admin = DataPlane(server, other_uri, server.token(vault_resource(server)))
    jwk = admin.create_key("other", "RSA", key_size=2048)["key"]
    wrapped = local_wrap(jwk, "RSA-OAEP", DEK)

    # Service Encryption User on rbac_vault only.
    sei = DataPlane(server, other_uri, token_for(server, rbac_principals[KV_CRYPTO_SERVICE_ENCRYPTION_USER]))
    assert_kv_error(sei.op("other", "unwrapkey", "RSA-OAEP", wrapped), 403, "Forbidden", "ForbiddenByRbac")
    assert_kv_error(sei.request("GET", "keys/other"), 403, "Forbidden", "ForbiddenByRbac")

    wide = new_principal(server, f"e2e-kv-sub-{uuid.uuid4().hex[:8]}")
    dp = DataPlane(server, other_uri, token_for(server, wide))
    assert_kv_error(dp.op("other", "unwrapkey", "RSA-OAEP", wrapped), 403, "Forbidden", "ForbiddenByRbac")
    assign_role(server, f"/subscriptions/{server.subscription}", wide.oid, KV_CRYPTO_USER)
    for uri, key, value in ((other_uri, "other", wrapped),
                            (rbac_vault["uri"], "base", local_wrap(rbac_vault["ops"].base_jwk, "RSA-OAEP", DEK))):
        resp = DataPlane(server, uri, dp.token).op(key, "unwrapkey", "RSA-OAEP", value)
        assert resp.status_code == 200, show(resp)
        assert b64url_decode(resp.json()["value"]) == DEK


# ------------------------------------------------------------------------------------------------
# Authentication: the challenge
# ------------------------------------------------------------------------------------------------


def expected_challenge(server: Server) -> str:
    return (f'Bearer authorization="https://localhost:{server.port}/{server.tenant}", '
            f'resource="https://vault.localhost:{server.port}"')


def test_unauthenticated_request_gets_the_challenge(server: Server, policy_vault):
    anonymous = DataPlane(server, policy_vault["uri"], None)
    # The SDKs' first request: no Authorization header, body stripped.
    resp = anonymous.request("POST", "keys/base/create", headers={"Content-Length": "0"})
    assert resp.status_code == 401, show(resp)
    assert resp.headers["WWW-Authenticate"] == expected_challenge(server)
    assert kv_error(resp)[0] == "Unauthorized"
    for method, path in [("GET", "keys"), ("GET", "keys/base"), ("POST", "keys/base/unwrapkey")]:
        resp = anonymous.request(method, path)
        assert resp.status_code == 401, show(resp)
        assert resp.headers["WWW-Authenticate"] == expected_challenge(server)
    # Nothing was created by the anonymous create.
    assert policy_vault["admin"].request("GET", "keys/base").status_code == 200


@pytest.mark.parametrize("audience", ["arm", "graph", "garbage"])
def test_wrong_audience_token_is_unauthorized(server: Server, policy_vault, audience: str):
    token = {
        "arm": lambda: server.token(),
        "graph": lambda: server.token(server.graph_audience),
        "garbage": lambda: "not-a-jwt",
    }[audience]()
    resp = DataPlane(server, policy_vault["uri"], token).request("GET", "keys/base")
    assert resp.status_code == 401, show(resp)
    assert resp.headers.get("WWW-Authenticate") == expected_challenge(server), resp.headers
    assert kv_error(resp)[0] == "Unauthorized"
