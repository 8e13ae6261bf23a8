"""What Key Vault leaves on disk: no private key bytes in any file of the data directory (keys are
sealed), and a hash-chained audit log that records every operation and fails closed when edited."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from kv_support import (
    DataPlane,
    assert_kv_error,
    bootstrap_oid,
    create_group,
    create_vault,
    digest,
    ec_private_jwk,
    encodings,
    files_under,
    int_bytes,
    local_verify,
    local_wrap,
    new_principal,
    rsa_private_jwk,
    scan,
    unique_vault_name,
    vault_resource,
)
from support import Server, b64url_decode, b64url_encode, show

DEK = b"storage-test-data-encryption-key"


def audit(dp: DataPlane, **params: str) -> list[dict[str, Any]]:
    resp = dp.request("GET", "audit", params=params)
    assert resp.status_code == 200, show(resp)
    return resp.json()["value"]


def log_lines(server: Server) -> list[str]:
    return (server.data_dir / "audit" / "keyvault.log").read_text().splitlines()


@pytest.fixture
def populated(fresh_server: Server) -> dict[str, Any]:
    """A server of its own with imported RSA and EC keys whose private parts the test knows, used
    for unwrap / decrypt / sign; plus one refused request by a second principal."""
    server = fresh_server
    group = f"kv-store-{uuid.uuid4().hex[:8]}"
    create_group(server, group)
    name = unique_vault_name()
    body = create_vault(server, group, name)
    uri = body["properties"]["vaultUri"]
    admin = DataPlane(server, uri, server.token(vault_resource(server)))

    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_jwk = rsa_private_jwk(rsa_key)
    ec_keys = {crv: ec.generate_private_key(curve()) for crv, curve in
               (("P-256", ec.SECP256R1), ("P-384", ec.SECP384R1))}
    ec_jwks = {crv: ec_private_jwk(key, crv) for crv, key in ec_keys.items()}

    imported = admin.ok("PUT", "keys/rsa-imported", {"key": rsa_jwk})
    rsa_version = imported["key"]["kid"].rsplit("/", 1)[1]
    assert b64url_decode(imported["key"]["n"]) == b64url_decode(rsa_jwk["n"])
    assert "d" not in imported["key"] or imported["key"]["d"] is None
    for crv, jwk in ec_jwks.items():
        got = admin.ok("PUT", f"keys/ec-{crv.lower()}", {"key": jwk})
        assert got["key"]["crv"] == crv and "d" not in got["key"]

    # Use them: the server has to unseal the private parts for these.
    for alg in ("RSA-OAEP", "RSA-OAEP-256", "RSA1_5"):
        resp = admin.op("rsa-imported", "unwrapkey", alg, local_wrap(rsa_jwk, alg, DEK))
        assert resp.status_code == 200 and b64url_decode(resp.json()["value"]) == DEK, show(resp)
    resp = admin.op("rsa-imported", "decrypt", "RSA-OAEP-256", local_wrap(rsa_jwk, "RSA-OAEP-256", b"hi"))
    assert resp.status_code == 200 and b64url_decode(resp.json()["value"]) == b"hi", show(resp)
    for crv, alg in (("P-256", "ES256"), ("P-384", "ES384")):
        resp = admin.op(f"ec-{crv.lower()}", "sign", alg, digest(alg, b"m"))
        assert resp.status_code == 200, show(resp)
        local_verify(ec_jwks[crv], alg, b"m", b64url_decode(resp.json()["value"]))
    admin.ok("GET", "keys/rsa-imported")
    # A backup blob leaves the server; the vault keeps nothing new in the clear for it either.
    admin.ok("POST", "keys/rsa-imported/backup")

    # A second principal with no access policy: refused, and audited as refused.
    stranger = new_principal(server, f"e2e-kv-stranger-{uuid.uuid4().hex[:8]}")
    resp = server.request_token(vault_resource(server) + "/.default", stranger.app_id, stranger.secret)
    assert resp.status_code == 200, show(resp)
    stranger_dp = DataPlane(server, uri, resp.json()["access_token"])
    assert_kv_error(stranger_dp.op("rsa-imported", "unwrapkey", "RSA-OAEP", local_wrap(rsa_jwk, "RSA-OAEP", DEK)),
                    403, "Forbidden", "AccessDenied")

    priv = rsa_key.private_numbers()
    secrets = {
        "rsa d": int_bytes(priv.d), "rsa p": int_bytes(priv.p), "rsa q": int_bytes(priv.q),
        "rsa dp": int_bytes(priv.dmp1), "rsa dq": int_bytes(priv.dmq1), "rsa qi": int_bytes(priv.iqmp),
    }
    for crv, jwk in ec_jwks.items():
        secrets[f"ec {crv} d"] = b64url_decode(jwk["d"])
    return {"server": server, "vault": name, "uri": uri, "admin": admin, "stranger": stranger,
            "stranger_dp": stranger_dp, "rsa_jwk": rsa_jwk, "rsa_version": rsa_version, "secrets": secrets}


def test_no_private_key_bytes_at_rest(populated, tmp_path: Path):
    server: Server = populated["server"]
    secrets: dict[str, bytes] = populated["secrets"]

    # The scanner itself finds every encoding it looks for (d embedded in longer texts).
    control = tmp_path / "control"
    control.mkdir()
    d = secrets["rsa d"]
    for enc_name, needle in encodings(d).items():
        (control / enc_name.replace("@", "_").replace(" ", "_")).write_bytes(b"xx" + needle + b"yy")
    (control / "jwk.json").write_text(json.dumps({"d": b64url_encode(d)}))
    hits = scan(files_under(control), {"rsa d": d})
    assert len(hits) >= len(encodings(d)), hits

    assert server.stop() == 0, server.log_tail()
    files = files_under(server.data_dir)
    names = {p.relative_to(server.data_dir).as_posix() for p in files}
    assert any(n.startswith("sealdisk.db") for n in names), names
    assert "audit/keyvault.log" in names, names

    # The public modulus is stored somewhere in the scanned files (the scan looks where keys live).
    n = b64url_decode(populated["rsa_jwk"]["n"])
    assert scan(files, {"rsa n": n}), f"public n not found in {sorted(names)}: the scan misses the key store"

    found = scan(files + [server.log_path], secrets)
    assert found == [], "private key material at rest:\n" + "\n".join(found)


def test_audit_log_records_operations(populated):
    server: Server = populated["server"]
    admin: DataPlane = populated["admin"]
    oid = bootstrap_oid(server)
    entries = audit(admin)
    assert entries, "empty audit log"

    # A chain: seq without gaps, each prevHash the previous hash.
    for prev, cur in zip(entries, entries[1:]):
        assert cur["seq"] == prev["seq"] + 1, (prev, cur)
        assert cur["prevHash"] == prev["hash"], (prev, cur)
    for e in entries:
        assert len(e["hash"]) == 64 and int(e["hash"], 16) >= 0
        assert e["vault"] == populated["vault"], e

    def ops(key: str, operation: str, caller: str = oid, result: str = "Success") -> list[dict[str, Any]]:
        return [e for e in entries if e["key"] == key and e["operation"] == operation
                and e["callerObjectId"] == caller and e["result"] == result]

    assert len(ops("rsa-imported", "KeyImport")) == 1, entries
    assert len(ops("ec-p-256", "KeyImport")) == 1 and len(ops("ec-p-384", "KeyImport")) == 1, entries
    assert len(ops("rsa-imported", "KeyUnwrap")) == 3, entries
    assert len(ops("rsa-imported", "KeyDecrypt")) == 1, entries
    assert len(ops("ec-p-256", "KeySign")) == 1 and len(ops("ec-p-384", "KeySign")) == 1, entries
    assert ops("rsa-imported", "KeyGet"), entries
    assert len(ops("rsa-imported", "KeyBackup")) == 1, entries
    # The refused request is there too, with the stranger's oid and the error.
    refused = [e for e in entries if e["callerObjectId"] == populated["stranger"].oid]
    assert len(refused) == 1, entries
    assert refused[0]["operation"] == "KeyUnwrap" and refused[0]["result"] not in ("Success", None), refused
    # Entries name the key version used, also when the request named only the key.
    version = populated["rsa_version"]
    for op in ("KeyImport", "KeyUnwrap", "KeyDecrypt"):
        assert {e["version"] for e in ops("rsa-imported", op)} == {version}, (op, entries)
    # Import happened before use.
    assert ops("rsa-imported", "KeyImport")[0]["seq"] < ops("rsa-imported", "KeyUnwrap")[0]["seq"]

    # Filters: by key, and the last N.
    by_key = audit(admin, key="ec-p-256")
    assert by_key and {e["key"] for e in by_key} == {"ec-p-256"}
    last = audit(admin, limit="2")
    assert [e["seq"] for e in last] == [e["seq"] for e in audit(admin)][-2:]

    # The file holds the same chain (header line first, then one JSON line per entry).
    lines = log_lines(server)
    assert json.loads(lines[0])["format"] == "sealdisk-audit"
    in_file = {json.loads(line)["hash"] for line in lines[1:]}
    assert {e["hash"] for e in entries} <= in_file

    # The audit trail is management data: a principal without read access to the vault may not list it.
    resp = populated["stranger_dp"].request("GET", "audit")
    assert resp.status_code == 403, show(resp)


def flip_in_entry(path: Path, line_index: int) -> str:
    """Flips one bit of a letter inside the `operation` value of line `line_index` (0 = header)."""
    lines = path.read_bytes().split(b"\n")
    line = lines[line_index]
    marker = b'"operation":"'
    at = line.index(marker) + len(marker) + 1
    original = line[at:at + 1]
    lines[line_index] = line[:at] + bytes([line[at] ^ 0x01]) + line[at + 1:]
    path.write_bytes(b"\n".join(lines))
    return f"line {line_index}: {original!r} -> {bytes([original[0] ^ 1])!r}"


def test_tampered_audit_entry_fails_closed(populated):
    """An edited entry in the middle of the log: the server may start (it checks the tail at start),
    but listing the audit trail fails; it never returns the edited entry."""
    server: Server = populated["server"]
    assert server.stop() == 0
    log = server.data_dir / "audit" / "keyvault.log"
    count = len(log_lines(server))
    assert count > 6
    what = flip_in_entry(log, count // 2)

    try:
        server.start()
    except RuntimeError as err:
        # Refusing to start is fail-closed too; it must say why.
        assert "audit" in str(err).lower(), err
        return
    # A new port after the restart, so a new vault URI.
    uri = f"https://{populated['vault']}.vault.localhost:{server.port}/"
    admin = DataPlane(server, uri, server.token(vault_resource(server)))
    resp = admin.request("GET", "audit")
    assert resp.status_code >= 500, f"tampered ({what}) but: {show(resp)}"
    assert resp.status_code == 503, show(resp)
    assert resp.json()["error"]["code"] == "AuditLogUnavailable", show(resp)
    # Later appends do not heal the chain: the listing keeps failing.
    admin.request("GET", "keys/rsa-imported")
    resp = admin.request("GET", "audit")
    assert resp.status_code == 503, show(resp)


def test_tampered_last_audit_entry_stops_start(populated):
    """An edited last entry: the start-up check sees it and the server refuses to start."""
    server: Server = populated["server"]
    assert server.stop() == 0
    log = server.data_dir / "audit" / "keyvault.log"
    count = len(log_lines(server))
    flip_in_entry(log, count - 1)
    with pytest.raises(RuntimeError) as info:
        server.start()
    message = str(info.value)
    assert "exited with code" in message, message
    assert "audit" in message.lower(), message


def test_deleted_audit_head_stops_start(populated):
    """Removing the head file (which vouches for the log's end) is detected at start."""
    server: Server = populated["server"]
    assert server.stop() == 0
    (server.data_dir / "audit" / "keyvault.log.head").unlink()
    with pytest.raises(RuntimeError) as info:
        server.start()
    assert "exited with code" in str(info.value), info.value


def test_sealed_keys_and_audit_chain_survive_restart(populated):
    """The sealed private keys unseal after a restart, and the audit chain continues across it."""
    server: Server = populated["server"]
    before = audit(populated["admin"])
    assert server.stop() == 0
    server.start()
    uri = f"https://{populated['vault']}.vault.localhost:{server.port}/"
    admin = DataPlane(server, uri, server.token(vault_resource(server)))
    resp = admin.op("rsa-imported", "unwrapkey", "RSA-OAEP-256", local_wrap(populated["rsa_jwk"], "RSA-OAEP-256", DEK))
    assert resp.status_code == 200 and b64url_decode(resp.json()["value"]) == DEK, show(resp)
    after = audit(admin)
    assert after[:len(before)] == before
    new = after[len(before):]
    assert new and new[0]["prevHash"] == before[-1]["hash"] and new[0]["seq"] == before[-1]["seq"] + 1, new
    assert [e["operation"] for e in new if e["key"] == "rsa-imported"] == ["KeyUnwrap"], new
