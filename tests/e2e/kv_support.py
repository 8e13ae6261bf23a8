"""Helpers of the Key Vault end-to-end tests (test_keyvault_*.py): vaults over ARM, service
principals over Graph, raw data-plane requests with tokens, JWK conversion and byte scanning.

Nothing here is a test.
"""

from __future__ import annotations

import base64
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import requests
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from support import Server, b64url_decode, b64url_encode, jwt_parts, show

KV_API = "7.6"
VAULT_API = "2023-07-01"
ROLE_ASSIGNMENTS_API = "2022-04-01"

KV_CRYPTO_OFFICER = "14b46e9e-c2b7-41b4-b07b-48a6ebf60603"
KV_CRYPTO_USER = "12338af0-0e69-4776-bea7-57ae8d297424"
KV_CRYPTO_SERVICE_ENCRYPTION_USER = "e147488a-f6f5-4113-8e2d-b22465e65bf6"

# Every key permission of an access policy (az keyvault set-policy --key-permissions).
KEY_PERMISSIONS = [
    "get", "list", "create", "update", "import", "delete", "recover", "backup", "restore", "purge",
    "encrypt", "decrypt", "wrapKey", "unwrapKey", "sign", "verify", "rotate",
    "getrotationpolicy", "setrotationpolicy",
]


def require_tool(tool: str, hint: str) -> str:
    """The path of a command-line tool; fails (never skips) when it is missing."""
    path = shutil.which(tool)
    if path is None:
        raise AssertionError(f"{tool} is not installed: {hint}")
    return path


def unique_vault_name() -> str:
    return f"kv-{uuid.uuid4().hex[:8]}"


def vault_resource(server: Server) -> str:
    """The token audience the vault's 401 challenge names (with the port)."""
    return f"https://vault.localhost:{server.port}"


def oid_of_token(token: str) -> str:
    return jwt_parts(token)[1]["oid"]


def bootstrap_oid(server: Server) -> str:
    return oid_of_token(server.token())


# ------------------------------------------------------------------------------------------------
# Principals, resource groups, vaults and role assignments (ARM and Graph over HTTP)
# ------------------------------------------------------------------------------------------------


@dataclass
class Principal:
    app_id: str
    secret: str
    oid: str
    name: str


def graph(server: Server, method: str, path: str, body: Any = None) -> requests.Response:
    return requests.request(
        method,
        server.graph_audience.rstrip("/") + "/v1.0/" + path.lstrip("/"),
        json=body,
        headers={"Authorization": f"Bearer {server.token(server.graph_audience)}"},
        verify=str(server.ca_file),
        timeout=10,
    )


def new_principal(server: Server, name: str) -> Principal:
    """Application + password + service principal, the Graph calls `az ad sp create-for-rbac` makes."""
    resp = graph(server, "POST", "applications", {"displayName": name})
    assert resp.status_code == 201, show(resp)
    app = resp.json()
    resp = graph(server, "POST", f"applications/{app['id']}/addPassword",
                 {"passwordCredential": {"displayName": "e2e-kv"}})
    assert resp.status_code == 200, show(resp)
    secret = resp.json()["secretText"]
    resp = graph(server, "POST", "servicePrincipals", {"appId": app["appId"], "accountEnabled": True})
    assert resp.status_code == 201, show(resp)
    return Principal(app_id=app["appId"], secret=secret, oid=resp.json()["id"], name=name)


def create_group(server: Server, name: str) -> None:
    resp = server.arm("PUT", server.rg_path(name), json_body={"location": "eastus"})
    assert resp.status_code in (200, 201), show(resp)


def vault_path(server: Server, group: str, name: str) -> str:
    return f"{server.rg_path(group)}/providers/Microsoft.KeyVault/vaults/{name}"


def all_keys_policy(server: Server, oid: str, keys: Iterable[str] = ("all",)) -> dict[str, Any]:
    return {"tenantId": server.tenant, "objectId": oid, "permissions": {"keys": list(keys)}}


def create_vault(server: Server, group: str, name: str, **properties: Any) -> dict[str, Any]:
    """PUT a vault (standard SKU). Unless told otherwise: access policies, the bootstrap principal
    with all key permissions, no purge protection."""
    props: dict[str, Any] = {
        "tenantId": server.tenant,
        "sku": {"family": "A", "name": "standard"},
        "accessPolicies": [all_keys_policy(server, bootstrap_oid(server))],
    }
    props.update(properties)
    resp = server.arm("PUT", vault_path(server, group, name), api_version=VAULT_API,
                      json_body={"location": "eastus", "properties": props})
    assert resp.status_code in (200, 201), show(resp)
    body = resp.json()
    assert body["properties"]["vaultUri"] == f"https://{name}.vault.localhost:{server.port}/", body
    return body


def update_policies(server: Server, group: str, name: str, kind: str,
                    policies: list[dict[str, Any]]) -> dict[str, Any]:
    resp = server.arm("PUT", f"{vault_path(server, group, name)}/accessPolicies/{kind}",
                      api_version=VAULT_API, json_body={"properties": {"accessPolicies": policies}})
    assert resp.status_code in (200, 201), show(resp)
    return resp.json()


def role_definition_id(server: Server, guid: str) -> str:
    return f"/subscriptions/{server.subscription}/providers/Microsoft.Authorization/roleDefinitions/{guid}"


def assign_role(server: Server, scope: str, principal_oid: str, role_guid: str) -> str:
    """Creates a role assignment; returns its id."""
    scope = "/" + scope.lstrip("/")
    resp = server.arm(
        "PUT",
        f"{scope}/providers/Microsoft.Authorization/roleAssignments/{uuid.uuid4()}",
        api_version=ROLE_ASSIGNMENTS_API,
        json_body={"properties": {"roleDefinitionId": role_definition_id(server, role_guid),
                                  "principalId": principal_oid,
                                  "principalType": "ServicePrincipal"}},
    )
    assert resp.status_code == 201, show(resp)
    return resp.json()["id"]


# ------------------------------------------------------------------------------------------------
# The data plane over raw HTTP
# ------------------------------------------------------------------------------------------------


class DataPlane:
    """Raw requests to one vault's data plane, authenticated with a bearer token (or none)."""

    def __init__(self, server: Server, vault_uri: str, token: str | None):
        self.server = server
        self.uri = vault_uri if vault_uri.endswith("/") else vault_uri + "/"
        self.token = token

    def request(self, method: str, path: str, json_body: Any = None,
                params: dict[str, str] | None = None, api_version: str | None = KV_API,
                headers: dict[str, str] | None = None) -> requests.Response:
        params = dict(params or {})
        if api_version:
            params["api-version"] = api_version
        hdrs = {}
        if self.token:
            hdrs["Authorization"] = f"Bearer {self.token}"
        hdrs.update(headers or {})
        return requests.request(method, self.uri + path.lstrip("/"), params=params, json=json_body,
                                headers=hdrs, verify=str(self.server.ca_file), timeout=60)

    def ok(self, method: str, path: str, json_body: Any = None, **kw: Any) -> Any:
        resp = self.request(method, path, json_body, **kw)
        assert 200 <= resp.status_code < 300, show(resp)
        return resp.json() if resp.content else None

    # shortcuts
    def create_key(self, name: str, kty: str = "RSA", **extra: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"kty": kty}
        if kty.startswith("RSA"):
            body["key_size"] = extra.pop("key_size", 2048)
        body.update(extra)
        return self.ok("POST", f"keys/{name}/create", body)

    def op(self, name: str, op: str, alg: str, value: bytes, version: str = "") -> requests.Response:
        path = f"keys/{name}/{version + '/' if version else ''}{op}"
        return self.request("POST", path, {"alg": alg, "value": b64url_encode(value)})


def kv_error(resp: requests.Response) -> tuple[str, str | None]:
    """(error.code, error.innererror.code) of a Key Vault error body; asserts its shape."""
    try:
        body = resp.json()
    except ValueError as err:
        raise AssertionError(f"not JSON: {show(resp)}") from err
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), show(resp)
    err = body["error"]
    assert isinstance(err.get("code"), str) and err["code"], show(resp)
    assert isinstance(err.get("message"), str) and err["message"], show(resp)
    inner = err.get("innererror")
    return err["code"], (inner or {}).get("code") if isinstance(inner, dict) else None


def assert_kv_error(resp: requests.Response, status: int, code: str, inner: str | None = None) -> None:
    assert resp.status_code == status, show(resp)
    got = kv_error(resp)
    assert got[0] == code, show(resp)
    if inner is not None:
        assert got[1] == inner, show(resp)


# ------------------------------------------------------------------------------------------------
# JWKs and local cryptography
# ------------------------------------------------------------------------------------------------


def int_bytes(value: int, length: int | None = None) -> bytes:
    return value.to_bytes(length or max(1, (value.bit_length() + 7) // 8), "big")


def rsa_private_jwk(key: rsa.RSAPrivateKey) -> dict[str, str]:
    priv = key.private_numbers()
    pub = priv.public_numbers
    enc = lambda i: b64url_encode(int_bytes(i))  # noqa: E731
    return {"kty": "RSA", "n": enc(pub.n), "e": enc(pub.e), "d": enc(priv.d), "p": enc(priv.p),
            "q": enc(priv.q), "dp": enc(priv.dmp1), "dq": enc(priv.dmq1), "qi": enc(priv.iqmp)}


EC_CURVES = {"P-256": (ec.SECP256R1, 32), "P-384": (ec.SECP384R1, 48), "P-521": (ec.SECP521R1, 66)}


def ec_private_jwk(key: ec.EllipticCurvePrivateKey, crv: str) -> dict[str, str]:
    size = EC_CURVES[crv][1]
    priv = key.private_numbers()
    enc = lambda i: b64url_encode(int_bytes(i, size))  # noqa: E731
    return {"kty": "EC", "crv": crv, "x": enc(priv.public_numbers.x), "y": enc(priv.public_numbers.y),
            "d": enc(priv.private_value)}


def rsa_public_key(jwk: dict[str, Any]) -> rsa.RSAPublicKey:
    """The public key of a JWK as Key Vault returns it (n/e base64url strings, or bytes from the SDK)."""
    def num(v: Any) -> int:
        return int.from_bytes(v if isinstance(v, bytes) else b64url_decode(v), "big")
    return rsa.RSAPublicNumbers(num(jwk["e"]), num(jwk["n"])).public_key()


def ec_public_key(jwk: dict[str, Any]) -> ec.EllipticCurvePublicKey:
    def num(v: Any) -> int:
        return int.from_bytes(v if isinstance(v, bytes) else b64url_decode(v), "big")
    crv = jwk["crv"] if isinstance(jwk["crv"], str) else str(jwk["crv"])
    curve = EC_CURVES[crv][0]()
    return ec.EllipticCurvePublicNumbers(num(jwk["x"]), num(jwk["y"]), curve).public_key()


HASHES = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}


def oaep(alg: str) -> padding.AsymmetricPadding:
    if alg == "RSA1_5":
        return padding.PKCS1v15()
    h = hashes.SHA256() if alg == "RSA-OAEP-256" else hashes.SHA1()
    return padding.OAEP(mgf=padding.MGF1(h), algorithm=h, label=None)


def local_wrap(jwk: dict[str, Any], alg: str, value: bytes) -> bytes:
    """Encrypts `value` with the public part of an RSA JWK, as a client does before unwrapKey."""
    return rsa_public_key(jwk).encrypt(value, oaep(alg))


def digest(alg: str, data: bytes) -> bytes:
    h = hashes.Hash(HASHES[alg[2:]]())
    h.update(data)
    return h.finalize()


def local_verify(jwk: dict[str, Any], alg: str, data: bytes, signature: bytes) -> None:
    """Verifies a Key Vault signature over `data` locally; raises InvalidSignature when wrong."""
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

    h = HASHES[alg[2:]]()
    dig = digest(alg, data)
    if alg.startswith("ES"):
        half = len(signature) // 2
        der = encode_dss_signature(int.from_bytes(signature[:half], "big"),
                                   int.from_bytes(signature[half:], "big"))
        ec_public_key(jwk).verify(der, dig, ec.ECDSA(Prehashed(h)))
    elif alg.startswith("PS"):
        rsa_public_key(jwk).verify(signature, dig, padding.PSS(mgf=padding.MGF1(h),
                                                               salt_length=h.digest_size),
                                   Prehashed(h))
    else:
        rsa_public_key(jwk).verify(signature, dig, padding.PKCS1v15(), Prehashed(h))


# ------------------------------------------------------------------------------------------------
# Scanning files for secret bytes
# ------------------------------------------------------------------------------------------------


def encodings(secret: bytes) -> dict[str, bytes]:
    """The ways `secret` could appear in a file: raw big-endian, little-endian, hex, and base64 /
    base64url at every alignment inside a longer base64 text (the middle run of characters that
    only `secret` determines)."""
    out = {
        "raw": secret,
        "raw little-endian": secret[::-1],
        "hex": secret.hex().encode(),
        "HEX": secret.hex().upper().encode(),
    }
    for shift in range(3):
        std = base64.b64encode(b"\0" * shift + secret)
        # Characters 0..3 mix the zero prefix in; the last 4 may mix padding in.
        core = std[4:-4]
        out[f"base64@{shift}"] = core
        out[f"base64url@{shift}"] = core.replace(b"+", b"-").replace(b"/", b"_")
    return out


def scan(paths: Iterable[Path], secrets: dict[str, bytes]) -> list[str]:
    """Every (file, secret, encoding) where a secret's encoding occurs, as readable strings."""
    needles = [(name, enc_name, needle)
               for name, value in secrets.items()
               for enc_name, needle in encodings(value).items()]
    found = []
    for path in paths:
        data = path.read_bytes()
        for name, enc_name, needle in needles:
            if needle in data:
                found.append(f"{path}: {name} ({enc_name})")
    return found


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())
