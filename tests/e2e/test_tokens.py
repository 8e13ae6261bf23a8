"""The token service: OIDC discovery, JWKS, real RS256 JWTs, and ARM refusing every forged token."""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from typing import Any, Callable

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from support import (
    SUBS_API,
    Server,
    azure_error,
    b64url_encode,
    is_guid,
    jwt_assemble,
    jwt_parts,
    show,
)

# Codes ARM uses for 401s (missing header, bad token, audience, tenant, expiry).
ARM_AUTH_CODES = {
    "AuthenticationFailed",
    "InvalidAuthenticationToken",
    "InvalidAuthenticationTokenAudience",
    "InvalidAuthenticationTokenTenant",
    "ExpiredAuthenticationToken",
}


@pytest.fixture(scope="module")
def oidc(server: Server) -> dict[str, Any]:
    resp = requests.get(
        server.url(f"{server.tenant}/v2.0/.well-known/openid-configuration"),
        verify=str(server.ca_file),
        timeout=10,
    )
    assert resp.status_code == 200, show(resp)
    return resp.json()


@pytest.fixture(scope="module")
def jwks(server: Server, oidc: dict[str, Any]) -> dict[str, Any]:
    resp = requests.get(oidc["jwks_uri"], verify=str(server.ca_file), timeout=10)
    assert resp.status_code == 200, show(resp)
    return resp.json()


def signing_key(jwks: dict[str, Any], kid: str) -> jwt.PyJWK:
    for key in jwks["keys"]:
        if key.get("kid") == kid:
            return jwt.PyJWK(key)
    raise AssertionError(f"kid {kid!r} not in the JWKS {[k.get('kid') for k in jwks['keys']]}")


def test_openid_configuration(server: Server, oidc: dict[str, Any]):
    # MSAL needs authorization_endpoint and token_endpoint; real clients also read issuer and jwks_uri.
    assert oidc["token_endpoint"] == server.token_endpoint()
    assert oidc["authorization_endpoint"].startswith(server.url(server.tenant) + "/")
    assert oidc["jwks_uri"] == server.url(f"{server.tenant}/discovery/v2.0/keys")
    assert server.tenant in oidc["issuer"]


def test_arm_token_is_an_rs256_jwt_that_verifies_against_the_jwks(server: Server, jwks):
    resource = server.arm_audience
    resp = server.request_token(resource + "/.default")
    assert resp.status_code == 200, show(resp)
    body = resp.json()
    assert body["token_type"] == "Bearer"
    assert isinstance(body["expires_in"], int) and body["expires_in"] > 300
    token = body["access_token"]

    header, unverified, _ = jwt_parts(token)
    assert header["alg"] == "RS256"
    key = signing_key(jwks, header["kid"])
    claims = jwt.decode(
        token,
        key,
        algorithms=["RS256"],
        audience=resource,
        options={"require": ["exp", "iat", "nbf", "iss", "aud"]},
    )
    assert claims == unverified
    assert claims["aud"] == resource
    assert claims["tid"] == server.tenant
    assert claims["appid"] == server.client_id
    assert is_guid(claims["oid"])
    assert server.tenant in claims["iss"]
    now = time.time()
    assert claims["nbf"] <= now + 60 and claims["iat"] <= now + 60
    assert claims["exp"] > now + 300
    assert abs((claims["exp"] - claims["iat"]) - body["expires_in"]) <= 120


def test_graph_token_has_the_graph_audience(server: Server, jwks):
    token = server.token(server.graph_audience)
    header, _, _ = jwt_parts(token)
    claims = jwt.decode(
        token, signing_key(jwks, header["kid"]), algorithms=["RS256"], audience=server.graph_audience
    )
    assert claims["aud"] == server.graph_audience
    assert claims["tid"] == server.tenant


def test_wrong_client_secret_is_invalid_client(server: Server):
    resp = server.request_token(server.arm_audience + "/.default", secret="not-the-secret")
    assert resp.status_code == 401, show(resp)
    assert resp.json()["error"] == "invalid_client", resp.text
    assert "not-the-secret" not in resp.text


def test_unknown_client_gets_no_token(server: Server):
    resp = server.request_token(server.arm_audience + "/.default", client_id=str(uuid.uuid4()))
    assert resp.status_code in (400, 401), show(resp)
    assert resp.json()["error"] in ("invalid_client", "unauthorized_client"), resp.text


def test_unsupported_grant_type(server: Server):
    resp = requests.post(
        server.token_endpoint(),
        data={
            "grant_type": "password",
            "client_id": server.client_id,
            "username": "u",
            "password": "p",
            "scope": server.arm_audience + "/.default",
        },
        verify=str(server.ca_file),
        timeout=10,
    )
    assert resp.status_code == 400, show(resp)
    assert resp.json()["error"] == "unsupported_grant_type", resp.text


def test_no_token_for_another_tenant(server: Server):
    resp = requests.post(
        server.token_endpoint(str(uuid.uuid4())),
        data={
            "grant_type": "client_credentials",
            "client_id": server.client_id,
            "client_secret": server.client_secret,
            "scope": server.arm_audience + "/.default",
        },
        verify=str(server.ca_file),
        timeout=10,
    )
    assert resp.status_code in (400, 401, 404), show(resp)
    assert "access_token" not in resp.text


# ------------------------------------------------------------------------------------------------
# Forged and unusable tokens on ARM
# ------------------------------------------------------------------------------------------------


def _hs256(secret: bytes, header: dict, payload: dict) -> str:
    unsigned = jwt_assemble(header, payload, "").rstrip(".")
    sig = hmac.new(secret, unsigned.encode(), hashlib.sha256).digest()
    return f"{unsigned}.{b64url_encode(sig)}"


def _attacker_rs256(header: dict, payload: dict, embed_jwk: bool = False) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    headers = {k: v for k, v in header.items() if k not in ("alg", "typ")}
    if embed_jwk:
        headers["jwk"] = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return jwt.encode(payload, key, algorithm="RS256", headers=headers)


def forgeries(server: Server, jwks: dict) -> dict[str, Callable[[], str | None]]:
    """name -> () -> Authorization header value (None: no header at all)."""
    good = server.token()
    header, payload, sig = jwt_parts(good)
    pub = signing_key(jwks, header["kid"]).key
    spki_pem = pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    pkcs1_pem = pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
    now = int(time.time())

    def bearer(tok: str) -> str:
        return f"Bearer {tok}"

    return {
        "no-authorization-header": lambda: None,
        "empty-bearer": lambda: "Bearer ",
        "basic-scheme": lambda: "Basic " + b64url_encode(b"user:pass"),
        "garbage": lambda: bearer("this-is-not-a-jwt"),
        "alg-none": lambda: bearer(jwt_assemble({**header, "alg": "none"}, payload, "")),
        "hs256-public-key-spki-pem": lambda: bearer(
            _hs256(spki_pem, {**header, "alg": "HS256"}, payload)
        ),
        "hs256-public-key-pkcs1-pem": lambda: bearer(
            _hs256(pkcs1_pem, {**header, "alg": "HS256"}, payload)
        ),
        "graph-token-on-arm": lambda: bearer(server.token(server.graph_audience)),
        "tampered-exp-expired": lambda: bearer(
            jwt_assemble(header, {**payload, "iat": now - 7200, "nbf": now - 7200, "exp": now - 3600}, sig)
        ),
        "tampered-tid": lambda: bearer(jwt_assemble(header, {**payload, "tid": str(uuid.uuid4())}, sig)),
        "tampered-aud": lambda: bearer(
            jwt_assemble(header, {**payload, "aud": "https://management.core.windows.net/"}, sig)
        ),
        "unknown-kid": lambda: bearer(jwt_assemble({**header, "kid": "no-such-key"}, payload, sig)),
        "truncated-signature": lambda: bearer(good[:-8]),
        "signed-by-another-key": lambda: bearer(_attacker_rs256(header, payload)),
        "signed-by-embedded-jwk": lambda: bearer(_attacker_rs256(header, payload, embed_jwk=True)),
    }


FORGERY_NAMES = [
    "no-authorization-header",
    "empty-bearer",
    "basic-scheme",
    "garbage",
    "alg-none",
    "hs256-public-key-spki-pem",
    "hs256-public-key-pkcs1-pem",
    "graph-token-on-arm",
    "tampered-exp-expired",
    "tampered-tid",
    "tampered-aud",
    "unknown-kid",
    "truncated-signature",
    "signed-by-another-key",
    "signed-by-embedded-jwk",
]


def test_valid_token_is_accepted(server: Server):
    # The control for the forgeries below: the same request with the real token succeeds.
    resp = server.arm("GET", "subscriptions", api_version=SUBS_API)
    assert resp.status_code == 200, show(resp)
    subs = resp.json()["value"]
    assert [s["subscriptionId"] for s in subs] == [server.subscription]
    assert subs[0]["tenantId"] == server.tenant
    assert subs[0]["state"] == "Enabled"
    assert subs[0]["id"] == f"/subscriptions/{server.subscription}"


@pytest.mark.parametrize("name", FORGERY_NAMES)
def test_forged_token_is_refused(server: Server, jwks, name: str):
    authorization = forgeries(server, jwks)[name]()
    headers = {} if authorization is None else {"Authorization": authorization}
    resp = requests.get(
        server.url("subscriptions"),
        params={"api-version": SUBS_API},
        headers=headers,
        verify=str(server.ca_file),
        timeout=10,
    )
    assert resp.status_code == 401, show(resp)
    err = azure_error(resp)
    assert err["code"] in ARM_AUTH_CODES, err


def test_forged_token_cannot_write(server: Server, jwks):
    forged = forgeries(server, jwks)["alg-none"]()
    resp = requests.put(
        server.url(server.rg_path("forged-write-rg")),
        params={"api-version": "2024-11-01"},
        json={"location": "eastus"},
        headers={"Authorization": forged},
        verify=str(server.ca_file),
        timeout=10,
    )
    assert resp.status_code == 401, show(resp)
    resp = server.arm("GET", server.rg_path("forged-write-rg"))
    assert resp.status_code == 404, show(resp)


def test_arm_token_is_refused_by_graph(server: Server):
    resp = requests.get(
        server.graph_audience.rstrip("/") + "/v1.0/servicePrincipals",
        params={"$filter": f"servicePrincipalNames/any(c:c eq '{server.client_id}')"},
        headers={"Authorization": f"Bearer {server.token()}"},
        verify=str(server.ca_file),
        timeout=10,
    )
    assert resp.status_code == 401, show(resp)
    azure_error(resp)
