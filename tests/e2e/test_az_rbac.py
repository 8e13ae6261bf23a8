"""RBAC end to end: az creates a second service principal and a Reader role assignment; the server
enforces it on that principal's ARM requests (azure-identity ClientSecretCredential tokens)."""

from __future__ import annotations

import uuid

from azure.identity import ClientSecretCredential

from support import READER_ROLE_GUID, Runner, Server, azure_error, jwt_parts, show


def sp_token(server: Server, app_id: str, secret: str) -> str:
    cred = ClientSecretCredential(
        server.tenant,
        app_id,
        secret,
        authority=server.endpoint.rstrip("/"),
        disable_instance_discovery=True,
        connection_verify=str(server.ca_file),
    )
    return cred.get_token(server.arm_audience + "/.default").token


def assert_forbidden(resp) -> None:
    assert resp.status_code == 403, show(resp)
    assert azure_error(resp)["code"] == "AuthorizationFailed"


def test_reader_assignment_is_enforced(az_session, az: Runner, server: Server):
    suffix = uuid.uuid4().hex[:8]
    rg_x, rg_y = f"rbac-x-{suffix}", f"rbac-y-{suffix}"
    scope_x = server.rg_id(rg_x)
    az.run("group", "create", "-n", rg_x, "-l", "eastus")
    az.run("group", "create", "-n", rg_y, "-l", "eastus")

    sp = az.json("ad", "sp", "create-for-rbac", "-n", f"e2e-reader-{suffix}")
    assert sp["tenant"] == server.tenant
    assert sp["displayName"] == f"e2e-reader-{suffix}"
    app_id, secret = sp["appId"], sp["password"]
    assert app_id != server.client_id and secret

    token = sp_token(server, app_id, secret)
    claims = jwt_parts(token)[1]
    assert claims["appid"] == app_id and claims["tid"] == server.tenant
    oid = claims["oid"]
    assert az.run("ad", "sp", "list", "--spn", app_id, "--query", "[0].id", "-o", "tsv").stdout.strip() == oid

    # No role yet: nothing is readable.
    assert_forbidden(server.arm("GET", server.rg_path(rg_x), token=token))

    ra = az.json("role", "assignment", "create", "--assignee", oid, "--role", "Reader", "--scope", scope_x)
    assert ra["principalId"] == oid
    assert ra["principalType"] == "ServicePrincipal"
    assert ra["scope"].lower() == scope_x.lower()
    assert ra["roleDefinitionId"].lower().endswith(f"/roledefinitions/{READER_ROLE_GUID}")

    listed = az.json("role", "assignment", "list", "--scope", scope_x)
    mine = [a for a in listed if a["principalId"] == oid]
    assert len(mine) == 1, listed
    assert mine[0]["roleDefinitionName"] == "Reader"
    assert mine[0]["id"] == ra["id"]

    # Reader on rg_x: read rg_x, nothing else.
    resp = server.arm("GET", server.rg_path(rg_x), token=token)
    assert resp.status_code == 200, show(resp)
    assert resp.json()["id"] == scope_x
    assert_forbidden(server.arm("PUT", server.rg_path(rg_x), token=token,
                                json_body={"location": "eastus", "tags": {"by": "reader"}}))
    assert_forbidden(server.arm("DELETE", server.rg_path(rg_x), token=token))
    assert_forbidden(server.arm("GET", server.rg_path(rg_y), token=token))
    assert_forbidden(server.arm("PUT", server.rg_path(f"rbac-new-{suffix}"), token=token,
                                json_body={"location": "eastus"}))
    # Authorization is checked before existence: no 404 that would leak what exists.
    assert_forbidden(server.arm("GET", server.rg_path(f"rbac-absent-{suffix}"), token=token))
    # The refused writes changed nothing.
    assert az.json("group", "show", "-n", rg_x).get("tags") in (None, {})
    assert az.run("group", "exists", "-n", f"rbac-new-{suffix}").stdout.strip() == "false"

    az.run("role", "assignment", "delete", "--assignee", oid, "--role", "Reader", "--scope", scope_x)
    listed = az.json("role", "assignment", "list", "--scope", scope_x)
    assert [a for a in listed if a["principalId"] == oid] == []
    # The same (still unexpired) token loses access at once.
    assert_forbidden(server.arm("GET", server.rg_path(rg_x), token=token))

    az.run("group", "delete", "-n", rg_x, "--yes", "--no-wait")
    az.run("group", "delete", "-n", rg_y, "--yes", "--no-wait")
