"""The unmodified Azure CLI (az, from tests/requirements.txt) against the server."""

from __future__ import annotations

from typing import Any

from support import Runner, Server, jwt_parts


def test_cloud_registration_reads_the_metadata(az_session: dict[str, Any], server: Server):
    cloud = az_session["cloud"]
    base = f"https://localhost:{server.port}"
    assert cloud["name"] == "sealdisk"
    assert cloud["isActive"] is True
    endpoints = cloud["endpoints"]
    assert endpoints["resourceManager"].rstrip("/") == base
    assert endpoints["activeDirectory"].rstrip("/") == base
    assert endpoints["activeDirectoryResourceId"] == server.arm_audience
    assert endpoints["microsoftGraphResourceId"] == server.graph_audience
    assert cloud["suffixes"]["keyvaultDns"] == f".vault.localhost:{server.port}"


def test_login_and_account(az_session: dict[str, Any], az: Runner, server: Server):
    login = az_session["login"]
    assert [s["id"] for s in login] == [server.subscription]
    assert login[0]["tenantId"] == server.tenant
    assert login[0]["user"] == {"name": server.client_id, "type": "servicePrincipal"}
    assert login[0]["state"] == "Enabled"

    account = az.json("account", "show")
    assert account["id"] == server.subscription
    assert account["tenantId"] == server.tenant
    assert account["environmentName"] == "sealdisk"
    assert account["isDefault"] is True


def test_get_access_token_is_a_server_jwt(az_session, az: Runner, server: Server):
    token = az.json("account", "get-access-token")
    assert token["subscription"] == server.subscription
    assert token["tenant"] == server.tenant
    _, claims, _ = jwt_parts(token["accessToken"])
    assert claims["aud"] == server.arm_audience
    assert claims["appid"] == server.client_id


def test_group_flow(az_session, az: Runner, server: Server):
    rg = "az-flow-rg1"
    created = az.json("group", "create", "-n", rg, "-l", "eastus")
    assert created["name"] == rg
    assert created["location"] == "eastus"
    assert created["id"] == server.rg_id(rg)
    assert created["properties"]["provisioningState"] == "Succeeded"

    shown = az.json("group", "show", "-n", rg)
    assert shown["id"] == created["id"]
    assert shown["location"] == "eastus"

    updated = az.json("group", "update", "-n", rg, "--tags", "env=e2e", "team=storage")
    assert updated["tags"] == {"env": "e2e", "team": "storage"}
    assert az.json("group", "show", "-n", rg)["tags"] == {"env": "e2e", "team": "storage"}

    names = az.json("group", "list", "--query", "[].name")
    assert rg in names
    tsv = az.run("group", "list", "--query", f"[?name=='{rg}'].location", "-o", "tsv").stdout
    assert tsv.strip() == "eastus"

    assert az.run("group", "exists", "-n", rg).stdout.strip() == "true"

    az.run("group", "delete", "-n", rg, "--yes")
    assert az.run("group", "exists", "-n", rg).stdout.strip() == "false"
    missing = az.fails("group", "show", "-n", rg)
    assert "ResourceGroupNotFound" in missing.stderr, missing.describe()
    assert missing.returncode == 3, missing.describe()  # az: 3 = resource not found
    assert rg not in az.json("group", "list", "--query", "[].name")


def test_group_delete_no_wait_then_wait(az_session, az: Runner):
    rg = "az-flow-rg2"
    az.run("group", "create", "-n", rg, "-l", "westus2")
    az.run("group", "delete", "-n", rg, "--yes", "--no-wait")
    az.run("group", "wait", "-n", rg, "--deleted", "--timeout", "60")
    assert az.run("group", "exists", "-n", rg).stdout.strip() == "false"


def test_table_output(az_session, az: Runner):
    rg = "az-flow-table"
    az.run("group", "create", "-n", rg, "-l", "eastus")
    try:
        table = az.run("group", "list", "-o", "table").stdout
        header = table.splitlines()[0].split()
        assert header[:2] == ["Name", "Location"], table
        assert any(line.split()[:2] == [rg, "eastus"] for line in table.splitlines()), table
    finally:
        az.run("group", "delete", "-n", rg, "--yes")
