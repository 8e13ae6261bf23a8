"""The sealdisk CLI (az-style commands of the same binary) against the server."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from support import READER_ROLE_GUID, Runner, Server, cli_runner, jwt_parts, show


def test_login_and_account(cli_session: Runner, server: Server):
    account = cli_session.json("account", "show")
    assert account["id"] == server.subscription
    assert account["tenantId"] == server.tenant


def test_login_with_wrong_secret_fails(server: Server, tmp_path: Path):
    bad = dict(server.conn, clientSecret="wrong-secret")
    conn_file = tmp_path / "connection.json"
    conn_file.write_text(json.dumps(bad))
    conn_file.chmod(0o600)
    cli = cli_runner(tmp_path / "config", server)
    result = cli.fails("login", "--connection-file", str(conn_file))
    assert result.returncode == 1, result.describe()
    # az words it as AAD does: "AADSTS7000215: Invalid client secret provided ..."
    assert "AADSTS7000215" in result.stderr or "invalid_client" in result.stderr, result.describe()
    assert "wrong-secret" not in result.stdout + result.stderr
    # Not logged in afterwards.
    assert cli.run("account", "show", check=False).returncode != 0


def test_group_flow(cli_session: Runner, server: Server):
    cli = cli_session
    g = f"cli-g-{uuid.uuid4().hex[:8]}"
    created = cli.json("group", "create", "-n", g, "-l", "eastus")
    assert created["id"] == server.rg_id(g)
    assert created["name"] == g
    assert created["location"] == "eastus"
    assert created["properties"]["provisioningState"] == "Succeeded"

    shown = cli.json("group", "show", "-n", g)
    assert shown["id"] == created["id"]

    names = cli.run("group", "list", "--query", "[].name", "-o", "tsv").stdout.splitlines()
    assert g in names

    table = cli.run("group", "list", "-o", "table").stdout.splitlines()
    assert table[0].split()[:2] == ["Name", "Location"], table
    assert any(line.split()[:2] == [g, "eastus"] for line in table), table

    assert cli.run("group", "exists", "-n", g).stdout.strip() == "true"

    cli.run("group", "delete", "-n", g, "--yes")
    assert cli.run("group", "exists", "-n", g).stdout.strip() == "false"
    missing = cli.run("group", "show", "-n", g, check=False)
    assert missing.returncode == 3, missing.describe()
    assert "ResourceGroupNotFound" in missing.stderr, missing.describe()


def test_role_assignment_flow(cli_session: Runner, server: Server):
    cli = cli_session
    suffix = uuid.uuid4().hex[:8]
    g = f"cli-ra-{suffix}"
    scope = server.rg_id(g)
    cli.run("group", "create", "-n", g, "-l", "eastus")

    sp = cli.json("ad", "sp", "create-for-rbac", "-n", f"cli-sp-{suffix}")
    assert sp["tenant"] == server.tenant
    resp = server.request_token(server.arm_audience + "/.default", sp["appId"], sp["password"])
    assert resp.status_code == 200, show(resp)
    token = resp.json()["access_token"]
    oid = jwt_parts(token)[1]["oid"]
    assert server.arm("GET", server.rg_path(g), token=token).status_code == 403

    ra = cli.json("role", "assignment", "create", "--assignee", oid, "--role", "Reader", "--scope", scope)
    assert ra["principalId"] == oid
    assert ra["scope"].lower() == scope.lower()
    assert ra["roleDefinitionId"].lower().endswith(f"/roledefinitions/{READER_ROLE_GUID}")

    listed = cli.json("role", "assignment", "list", "--scope", scope)
    mine = [a for a in listed if a["principalId"] == oid]
    assert len(mine) == 1 and mine[0]["roleDefinitionName"] == "Reader", listed
    table = cli.run("role", "assignment", "list", "--scope", scope, "-o", "table").stdout
    assert "Reader" in table and scope in table, table

    resp = server.arm("GET", server.rg_path(g), token=token)
    assert resp.status_code == 200, show(resp)

    cli.run("role", "assignment", "delete", "--assignee", oid, "--role", "Reader", "--scope", scope)
    listed = cli.json("role", "assignment", "list", "--scope", scope)
    assert [a for a in listed if a["principalId"] == oid] == []
    assert server.arm("GET", server.rg_path(g), token=token).status_code == 403

    cli.run("group", "delete", "-n", g, "--yes")
