"""GET /metadata/endpoints: what `az cloud register` reads (both the az >= 2.7x and az <= 2.6x shapes)."""

from __future__ import annotations

import http.client
import json
import ssl

import pytest

from support import Server


def raw_get(server: Server, target: str) -> tuple[int, dict]:
    """Sends the request line exactly as given (no path normalisation), as az does."""
    ctx = ssl.create_default_context(cafile=str(server.ca_file))
    conn = http.client.HTTPSConnection("localhost", server.port, context=ctx, timeout=10)
    try:
        conn.request("GET", target, headers={"Accept": "application/json"})
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    return resp.status, json.loads(body) if body else {}


@pytest.mark.parametrize(
    "target",
    [
        "//metadata/endpoints?api-version=2015-01-01",  # az <= 2.6x, ARM URL with a trailing slash
        "//metadata/endpoints?api-version=2022-09-01",  # az 2.91
        "/metadata/endpoints?api-version=2022-09-01",
    ],
)
def test_metadata_endpoints(server: Server, target: str):
    status, doc = raw_get(server, target)
    assert status == 200, doc
    base = f"https://localhost:{server.port}"

    # az >= 2.7x (_arm_to_cli_mapper)
    assert doc["name"]
    assert doc["resourceManager"].rstrip("/") == base
    auth = doc["authentication"]
    assert auth["loginEndpoint"].rstrip("/") == base
    assert auth["audiences"] and auth["audiences"][0].rstrip("/") == base
    assert doc["microsoftGraphResourceId"].startswith(base + "/")
    assert isinstance(doc["suffixes"], dict)
    assert doc["suffixes"]["keyVaultDns"].lstrip(".") == f"vault.localhost:{server.port}"

    # az <= 2.6x: graphEndpoint is required, galleryEndpoint read
    assert doc["graphEndpoint"].startswith(base + "/")
    assert "galleryEndpoint" in doc
