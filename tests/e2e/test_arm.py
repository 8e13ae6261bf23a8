"""ARM behaviours over plain HTTP that az and the SDKs depend on (status codes, error codes, paths)."""

from __future__ import annotations

import time

import pytest

from support import SUBS_API, Server, azure_error, show


def wait_deleted(server: Server, path: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        resp = server.arm("GET", path)
        if resp.status_code == 404:
            return
        time.sleep(0.2)
    raise AssertionError(f"{path} still exists {timeout}s after DELETE: {show(resp)}")


def test_subscription_get(server: Server):
    resp = server.arm("GET", f"subscriptions/{server.subscription}", api_version=SUBS_API)
    assert resp.status_code == 200, show(resp)
    sub = resp.json()
    assert sub["subscriptionId"] == server.subscription
    assert sub["tenantId"] == server.tenant
    assert sub["state"] == "Enabled"


def test_resource_group_lifecycle_status_codes(server: Server):
    name = "arm-lifecycle-rg"
    path = server.rg_path(name)
    resp = server.arm("PUT", path, json_body={"location": "eastus"})
    assert resp.status_code == 201, f"first PUT must be 201 Created: {show(resp)}"
    group = resp.json()
    assert group == {
        **group,
        "id": server.rg_id(name),
        "name": name,
        "type": "Microsoft.Resources/resourceGroups",
        "location": "eastus",
    }
    assert group["properties"]["provisioningState"] == "Succeeded"

    resp = server.arm("PUT", path, json_body={"location": "eastus", "tags": {"env": "e2e"}})
    assert resp.status_code == 200, f"PUT of an existing group must be 200: {show(resp)}"
    assert resp.json()["tags"] == {"env": "e2e"}

    resp = server.arm("HEAD", path)
    assert resp.status_code == 204, show(resp)

    resp = server.arm("GET", f"subscriptions/{server.subscription}/resourcegroups")
    assert resp.status_code == 200, show(resp)
    assert name in {g["name"] for g in resp.json()["value"]}

    resp = server.arm("DELETE", path)
    assert resp.status_code in (200, 202), show(resp)
    wait_deleted(server, path)
    resp = server.arm("HEAD", path)
    assert resp.status_code == 404, show(resp)


def test_paths_are_case_insensitive(server: Server):
    # az sends .../resourcegroups/...; ARM segment names and resource-group names ignore case.
    resp = server.arm(
        "PUT", server.rg_path("Arm-Case-RG", "resourcegroups"), json_body={"location": "westus2"}
    )
    assert resp.status_code == 201, show(resp)
    for segment, name in [("resourceGroups", "Arm-Case-RG"), ("RESOURCEGROUPS", "Arm-Case-RG"),
                          ("resourceGroups", "arm-case-rg")]:
        resp = server.arm("GET", server.rg_path(name, segment))
        assert resp.status_code == 200, show(resp)
        assert resp.json()["name"] == "Arm-Case-RG", "the stored name keeps the caller's case"
    server.arm("DELETE", server.rg_path("Arm-Case-RG"))


@pytest.mark.parametrize("api_version", ["2015-01-01", "2021-04-01", "2099-12-31", "2024-11-01-preview"])
def test_any_api_version_is_accepted(server: Server, api_version: str):
    resp = server.arm("GET", f"subscriptions/{server.subscription}/resourcegroups", api_version=api_version)
    assert resp.status_code == 200, show(resp)


def test_missing_api_version(server: Server):
    resp = server.arm("GET", f"subscriptions/{server.subscription}/resourcegroups", api_version=None)
    assert resp.status_code == 400, show(resp)
    assert azure_error(resp)["code"] == "MissingApiVersionParameter"


def test_missing_group(server: Server):
    path = server.rg_path("arm-no-such-rg")
    resp = server.arm("GET", path)
    assert resp.status_code == 404, show(resp)
    err = azure_error(resp)
    assert err["code"] == "ResourceGroupNotFound"
    assert "arm-no-such-rg" in err["message"]
    resp = server.arm("HEAD", path)
    assert resp.status_code == 404, show(resp)
    resp = server.arm("DELETE", path)
    assert resp.status_code == 404, show(resp)
    assert azure_error(resp)["code"] == "ResourceGroupNotFound"


@pytest.mark.parametrize("bad_name", ["bad!name", "bad name", "bad*name"])
def test_invalid_group_name(server: Server, bad_name: str):
    resp = server.arm("PUT", server.rg_path(bad_name), json_body={"location": "eastus"})
    assert resp.status_code == 400, show(resp)
    assert azure_error(resp)["code"] == "InvalidResourceGroup"


def test_errors_are_json(server: Server):
    resp = server.arm("GET", server.rg_path("arm-no-such-rg-2"))
    assert resp.headers.get("Content-Type", "").startswith("application/json"), resp.headers
