"""The server process: connection.json, listeners, shutdown and crash durability."""

from __future__ import annotations

import json
import socket
import stat
import uuid
from pathlib import Path

import requests

from disk_support import data_extents, read_range
from support import READER_ROLE_GUID, ROLE_ASSIGNMENTS_API, Server, is_guid, jwt_parts, show


def test_connection_json_describes_the_server(server: Server):
    mode = stat.S_IMODE(server.connection_file.stat().st_mode)
    assert mode == 0o600, f"connection.json holds a client secret; mode is {oct(mode)}, want 0o600"
    conn = json.loads(server.connection_file.read_text())
    assert conn["endpoint"].rstrip("/") == f"https://localhost:{server.port}"
    for key in ("tenantId", "subscriptionId", "clientId"):
        assert is_guid(conn[key]), f"{key}={conn[key]!r} is not a GUID"
    assert isinstance(conn["clientSecret"], str) and len(conn["clientSecret"]) >= 16
    assert Path(conn["caCertFile"]).is_absolute(), conn["caCertFile"]
    assert Path(conn["caCertFile"]).resolve() == server.ca_file.resolve(), conn["caCertFile"]
    assert server.ca_file.read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert conn["keyVaultDnsSuffix"] == f"vault.localhost:{server.port}"
    # TLS-only NBD, named like the HTTPS endpoint so the server certificate matches.
    host, _, nbd_port = conn["nbdEndpoint"].rpartition(":")
    assert host == "nbds://localhost" and int(nbd_port) > 0, conn["nbdEndpoint"]


def test_secrets_at_rest(server: Server):
    # Private keys are readable by the owner only ...
    keys = [
        p
        for p in server.data_dir.rglob("*")
        if p.is_file() and p.name.endswith((".key", ".pk8", "key.pem"))
    ]
    assert keys, f"no key files found under {server.data_dir}"
    for path in keys:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path} has mode {oct(mode)}"
    # ... and the client secret is stored nowhere in plaintext but connection.json. Sparse
    # volume files are read by their data extents only (they can be 128 GiB of holes).
    secret = server.client_secret.encode()
    for path in server.data_dir.rglob("*"):
        if path.is_file() and path != server.connection_file:
            for start, end in data_extents(path):
                chunk = read_range(path, start, end - start)
                assert secret not in chunk, f"the client secret is in plaintext in {path}"


def test_https_on_every_loopback_name(server: Server):
    # Clients resolve localhost (and NAME.vault.localhost) to ::1 first, then 127.0.0.1; the
    # certificate must name both addresses and localhost.
    for host in ("localhost", "127.0.0.1", "[::1]"):
        resp = requests.get(
            f"https://{host}:{server.port}/healthz", verify=str(server.ca_file), timeout=5
        )
        assert resp.status_code == 200, show(resp)


def test_nbd_port_accepts_connections_on_both_loopbacks(server: Server):
    _, _, port = server.conn["nbdEndpoint"].rpartition(":")
    for host in ("127.0.0.1", "::1"):
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            # Fixed newstyle greeting: "NBDMAGIC" then "IHAVEOPT".
            assert sock.recv(16, socket.MSG_WAITALL) == b"NBDMAGICIHAVEOPT"


def test_sigterm_stops_the_server_cleanly(fresh_server: Server):
    code = fresh_server.stop(timeout=10)
    assert code == 0, f"exit code after SIGTERM: {code}\n{fresh_server.log_tail()}"


def test_state_survives_kill_9(fresh_server: Server):
    srv = fresh_server
    before = dict(srv.conn)
    ca_before = srv.ca_file.read_bytes()
    token_before = srv.token()
    oid = jwt_parts(token_before)[1]["oid"]

    rg = "durable-rg"
    resp = srv.arm("PUT", srv.rg_path(rg), json_body={"location": "eastus", "tags": {"k": "v"}})
    assert resp.status_code in (200, 201), show(resp)
    ra_name = str(uuid.uuid4())
    ra_path = f"{srv.rg_id(rg)}/providers/Microsoft.Authorization/roleAssignments/{ra_name}"
    role_id = (
        f"/subscriptions/{srv.subscription}/providers/Microsoft.Authorization/"
        f"roleDefinitions/{READER_ROLE_GUID}"
    )
    body = {
        "properties": {
            "roleDefinitionId": role_id,
            "principalId": oid,
            "principalType": "ServicePrincipal",
        }
    }
    resp = srv.arm("PUT", ra_path, api_version=ROLE_ASSIGNMENTS_API, json_body=body)
    assert resp.status_code == 201, show(resp)

    jwks_uri = srv.url(f"{srv.tenant}/discovery/v2.0/keys")
    kid = jwt_parts(token_before)[0]["kid"]

    srv.kill()
    # Same port as before, as in production: az keeps the cloud's URLs and cached tokens.
    srv.start(listen=f"localhost:{srv.port}")

    after = srv.conn
    assert after["endpoint"] == before["endpoint"]
    for key in ("tenantId", "subscriptionId", "clientId", "clientSecret"):
        assert after[key] == before[key], f"{key} changed across a restart"
    assert srv.ca_file.read_bytes() == ca_before, "the TLS CA changed: users' trust bundles break"

    # The bootstrap secret still works at the token endpoint ...
    resp = srv.request_token(srv.arm_audience + "/.default", before["clientId"], before["clientSecret"])
    assert resp.status_code == 200, show(resp)
    # ... the token signing key survived (still published) ...
    resp = requests.get(jwks_uri, verify=str(srv.ca_file), timeout=10)
    assert resp.status_code == 200, show(resp)
    assert kid in {k.get("kid") for k in resp.json()["keys"]}, "the token signing key changed"
    # ... and a token issued before the crash is still valid (az caches tokens for an hour).
    resp = srv.arm("GET", srv.rg_path(rg), token=token_before)
    assert resp.status_code == 200, show(resp)
    group = resp.json()
    assert group["id"] == srv.rg_id(rg)
    assert group["location"] == "eastus"
    assert group["tags"] == {"k": "v"}

    resp = srv.arm("GET", ra_path, api_version=ROLE_ASSIGNMENTS_API)
    assert resp.status_code == 200, show(resp)
    props = resp.json()["properties"]
    assert props["principalId"] == oid
    assert props["roleDefinitionId"].lower() == role_id.lower()
    assert props["scope"].lower() == srv.rg_id(rg).lower()

    resp = srv.arm(
        "GET",
        f"{srv.rg_id(rg)}/providers/Microsoft.Authorization/roleAssignments",
        api_version=ROLE_ASSIGNMENTS_API,
    )
    assert resp.status_code == 200, show(resp)
    assert ra_name in {ra["name"] for ra in resp.json()["value"]}
