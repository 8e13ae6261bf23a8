"""RBAC and the Graph subset over plain HTTP: role semantics az does not exercise (Contributor may not
grant access, duplicate and dangling assignments), and the Graph calls az makes."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import requests

from support import (
    READER_ROLE_GUID,
    ROLE_ASSIGNMENTS_API,
    Server,
    azure_error,
    jwt_parts,
    show,
)

CONTRIBUTOR_ROLE_GUID = "b24988ac-6180-42a0-ab88-20f7382dd24c"
OWNER_ROLE_GUID = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635"
KV_CRYPTO_SERVICE_ENCRYPTION_USER_GUID = "e147488a-f6f5-4113-8e2d-b22465e65bf6"
ROLE_DEFINITIONS_API = "2022-05-01-preview"


def graph(server: Server, method: str, path: str, body: Any = None, token: str | None = None,
          params: dict | None = None) -> requests.Response:
    return requests.request(
        method,
        server.graph_audience.rstrip("/") + "/v1.0/" + path.lstrip("/"),
        json=body,
        params=params,
        headers={"Authorization": f"Bearer {token or server.token(server.graph_audience)}"},
        verify=str(server.ca_file),
        timeout=10,
    )


def new_service_principal(server: Server, name: str) -> dict[str, str]:
    """The Graph calls `az ad sp create-for-rbac` makes: application, password, service principal."""
    resp = graph(server, "POST", "applications", {"displayName": name})
    assert resp.status_code == 201, show(resp)
    app = resp.json()
    assert app["displayName"] == name
    resp = graph(server, "POST", f"applications/{app['id']}/addPassword",
                 {"passwordCredential": {"displayName": "e2e"}})
    assert resp.status_code == 200, show(resp)
    secret = resp.json()["secretText"]
    resp = graph(server, "POST", "servicePrincipals", {"appId": app["appId"], "accountEnabled": True})
    assert resp.status_code == 201, show(resp)
    sp = resp.json()
    assert sp["appId"] == app["appId"]
    return {"appId": app["appId"], "secret": secret, "oid": sp["id"]}


def role_definition_id(server: Server, guid: str) -> str:
    return f"/subscriptions/{server.subscription}/providers/Microsoft.Authorization/roleDefinitions/{guid}"


def assign(server: Server, scope: str, principal: str, role_guid: str, token: str | None = None,
           name: str | None = None) -> requests.Response:
    return server.arm(
        "PUT",
        f"{scope}/providers/Microsoft.Authorization/roleAssignments/{name or uuid.uuid4()}",
        api_version=ROLE_ASSIGNMENTS_API,
        token=token,
        json_body={
            "properties": {
                "roleDefinitionId": role_definition_id(server, role_guid),
                "principalId": principal,
                "principalType": "ServicePrincipal",
            }
        },
    )


@pytest.fixture(scope="module")
def principal(server: Server) -> dict[str, str]:
    sp = new_service_principal(server, f"e2e-http-{uuid.uuid4().hex[:8]}")
    resp = server.request_token(server.arm_audience + "/.default", sp["appId"], sp["secret"])
    assert resp.status_code == 200, show(resp)
    sp["token"] = resp.json()["access_token"]
    return sp


def test_service_principal_token_carries_its_object_id(server: Server, principal):
    claims = jwt_parts(principal["token"])[1]
    assert claims["oid"] == principal["oid"]
    assert claims["appid"] == principal["appId"]


def test_graph_lookups_az_makes(server: Server, principal):
    resp = graph(server, "GET", "servicePrincipals",
                 params={"$filter": f"servicePrincipalNames/any(c:c eq '{principal['appId']}')"})
    assert resp.status_code == 200, show(resp)
    assert [sp["id"] for sp in resp.json()["value"]] == [principal["oid"]]

    resp = graph(server, "GET", "servicePrincipals",
                 params={"$filter": f"servicePrincipalNames/any(c:c eq '{uuid.uuid4()}')"})
    assert resp.status_code == 200, show(resp)
    assert resp.json()["value"] == []

    resp = graph(server, "POST", "directoryObjects/getByIds",
                 {"ids": [principal["oid"]], "types": ["user", "group", "servicePrincipal",
                                                      "directoryObjectPartnerReference"]})
    assert resp.status_code == 200, show(resp)
    objs = resp.json()["value"]
    assert [o["id"] for o in objs] == [principal["oid"]]
    assert objs[0]["@odata.type"] == "#microsoft.graph.servicePrincipal"

    # /me is for delegated (user) tokens; an app token gets 400, which az handles.
    resp = graph(server, "GET", "me")
    assert resp.status_code == 400, show(resp)


def test_builtin_role_definitions(server: Server):
    scope = f"subscriptions/{server.subscription}"
    for name, guid in [("Reader", READER_ROLE_GUID), ("Contributor", CONTRIBUTOR_ROLE_GUID),
                       ("Owner", OWNER_ROLE_GUID),
                       ("Key Vault Crypto Service Encryption User", KV_CRYPTO_SERVICE_ENCRYPTION_USER_GUID)]:
        resp = server.arm(
            "GET",
            f"{scope}/providers/Microsoft.Authorization/roleDefinitions",
            api_version=ROLE_DEFINITIONS_API,
            params={"$filter": f"roleName eq '{name}'"},
        )
        assert resp.status_code == 200, show(resp)
        defs = resp.json()["value"]
        assert len(defs) == 1, defs
        assert defs[0]["name"] == guid
        assert defs[0]["id"].lower() == role_definition_id(server, guid).lower()
        assert defs[0]["properties"]["roleName"] == name
        assert defs[0]["properties"]["type"] == "BuiltInRole"


def test_bootstrap_principal_is_subscription_owner(server: Server):
    oid = jwt_parts(server.token())[1]["oid"]
    resp = server.arm(
        "GET",
        f"subscriptions/{server.subscription}/providers/Microsoft.Authorization/roleAssignments",
        api_version=ROLE_ASSIGNMENTS_API,
        params={"$filter": f"principalId eq '{oid}'"},
    )
    assert resp.status_code == 200, show(resp)
    roles = {(ra["properties"]["roleDefinitionId"].rsplit("/", 1)[1], ra["properties"]["scope"])
             for ra in resp.json()["value"]}
    assert (OWNER_ROLE_GUID, f"/subscriptions/{server.subscription}") in roles, roles


def test_contributor_cannot_grant_access(server: Server, principal):
    rg = f"rbac-contrib-{uuid.uuid4().hex[:8]}"
    resp = server.arm("PUT", server.rg_path(rg), json_body={"location": "eastus"})
    assert resp.status_code == 201, show(resp)
    resp = assign(server, server.rg_id(rg), principal["oid"], CONTRIBUTOR_ROLE_GUID)
    assert resp.status_code == 201, show(resp)

    token = principal["token"]
    resp = server.arm("PUT", server.rg_path(rg), token=token,
                      json_body={"location": "eastus", "tags": {"by": "contributor"}})
    assert resp.status_code == 200, show(resp)
    assert resp.json()["tags"] == {"by": "contributor"}

    # Contributor excludes Microsoft.Authorization/*/Write: no granting itself (or others) more.
    resp = assign(server, server.rg_id(rg), principal["oid"], OWNER_ROLE_GUID, token=token)
    assert resp.status_code == 403, show(resp)
    assert azure_error(resp)["code"] == "AuthorizationFailed"
    # Nor anything at the subscription, where it holds no role at all.
    resp = assign(server, f"/subscriptions/{server.subscription}", principal["oid"], READER_ROLE_GUID,
                  token=token)
    assert resp.status_code == 403, show(resp)
    assert azure_error(resp)["code"] == "AuthorizationFailed"

    resp = server.arm("DELETE", server.rg_path(rg))
    assert resp.status_code in (200, 202), show(resp)


def test_duplicate_assignment_conflicts(server: Server, principal):
    scope = f"/subscriptions/{server.subscription}"
    name = str(uuid.uuid4())
    resp = assign(server, scope, principal["oid"], READER_ROLE_GUID, name=name)
    assert resp.status_code == 201, show(resp)
    try:
        # The same PUT again is idempotent ...
        resp = assign(server, scope, principal["oid"], READER_ROLE_GUID, name=name)
        assert resp.status_code in (200, 201), show(resp)
        # ... but the same principal/role/scope under another name is a conflict.
        resp = assign(server, scope, principal["oid"], READER_ROLE_GUID)
        assert resp.status_code == 409, show(resp)
        assert azure_error(resp)["code"] == "RoleAssignmentExists"
    finally:
        resp = server.arm("DELETE", f"{scope}/providers/Microsoft.Authorization/roleAssignments/{name}",
                          api_version=ROLE_ASSIGNMENTS_API)
        assert resp.status_code == 200, show(resp)


def test_assignment_to_unknown_principal_or_role(server: Server, principal):
    scope = f"/subscriptions/{server.subscription}"
    resp = assign(server, scope, str(uuid.uuid4()), READER_ROLE_GUID)
    assert resp.status_code == 400, show(resp)
    assert azure_error(resp)["code"] == "PrincipalNotFound"

    resp = assign(server, scope, principal["oid"], str(uuid.uuid4()))
    assert resp.status_code in (400, 404), show(resp)
    assert azure_error(resp)["code"] == "RoleDefinitionDoesNotExist"
