"""The seed walkthrough's Key Vault steps (1, 2 and 4) as written, with `az` replaced by `sealdisk`.

Step 3 (the disk encryption set) belongs to the customer-managed-key issue; its managed identity
is stood in for here by a service principal made with `sealdisk ad sp create-for-rbac`.
"""

from __future__ import annotations

import re
import uuid

from kv_support import DataPlane, assert_kv_error, vault_resource
from support import Runner, Server, b64url_decode


def test_seed_key_vault_steps_with_the_sealdisk_cli(cli_session: Runner, server: Server):
    cli = cli_session
    suffix = uuid.uuid4().hex[:6]
    rg = f"my-resource-group-{suffix}"
    kv = f"my-disk-kv-{suffix}"
    cli.run("group", "create", "-n", rg, "-l", "eastus")

    # Step 1: the seed's exact flags, --enable-soft-delete included.
    vault = cli.json(
        "keyvault", "create",
        "--name", kv,
        "--resource-group", rg,
        "--location", "eastus",
        "--enable-soft-delete", "true",
        "--enable-purge-protection", "true",
        "--sku", "standard",
    )
    props = vault["properties"]
    assert props["enableSoftDelete"] is True
    assert props["enablePurgeProtection"] is True
    assert props["enableRbacAuthorization"] is False, "access-policy model, as the seeds assume"
    assert props["vaultUri"] == f"https://{kv}.vault.localhost:{server.port}/"

    # Step 2: the key, and the seed's own queries.
    created = cli.json(
        "keyvault", "key", "create",
        "--vault-name", kv, "--name", "disk-encryption-key", "--kty", "RSA", "--size", "3072",
    )
    assert created["key"]["kty"] == "RSA"
    table = cli.run(
        "keyvault", "key", "show", "--vault-name", kv, "--name", "disk-encryption-key",
        "--query", "{name:key.kid, keyType:key.kty, keySize:key.n}", "--output", "table",
    ).stdout.splitlines()
    assert table[0].split() == ["Name", "KeyType", "KeySize"], table
    assert table[2].split()[1] == "RSA", table
    key_url = cli.run(
        "keyvault", "key", "show", "--vault-name", kv, "--name", "disk-encryption-key",
        "--query", "key.kid", "-o", "tsv",
    ).stdout.strip()
    pattern = rf"https://{kv}\.vault\.localhost:{server.port}/keys/disk-encryption-key/[0-9a-f]{{32}}"
    assert re.fullmatch(pattern, key_url), key_url

    # Step 4: a principal (the stand-in for the set's identity) gets get/wrapKey/unwrapKey.
    sp = cli.json("ad", "sp", "create-for-rbac", "-n", f"des-identity-{suffix}")
    principal = cli.json("ad", "sp", "show", "--id", sp["appId"])
    oid = principal["id"]
    cli.run(
        "keyvault", "set-policy", "--name", kv, "--object-id", oid,
        "--key-permissions", "get", "wrapKey", "unwrapKey",
    )
    scope = f"/subscriptions/{server.subscription}/resourceGroups/{rg}/providers/Microsoft.KeyVault/vaults/{kv}"
    assignment = cli.json(
        "role", "assignment", "create",
        "--assignee", oid, "--role", "Key Vault Crypto Service Encryption User", "--scope", scope,
    )
    assert assignment["roleDefinitionId"].endswith("e147488a-f6f5-4113-8e2d-b22465e65bf6")

    # The principal can now wrap and unwrap with its own token, and nothing more.
    token = server.token(vault_resource(server), client_id=sp["appId"], secret=sp["password"])
    plane = DataPlane(server, vault["properties"]["vaultUri"], token)
    wrapped = plane.op("disk-encryption-key", "wrapkey", "RSA-OAEP-256", b"\x42" * 32)
    assert wrapped.status_code == 200, wrapped.text
    version = key_url.rsplit("/", 1)[1]
    unwrapped = plane.op(
        "disk-encryption-key", "unwrapkey", "RSA-OAEP-256",
        b64url_decode(wrapped.json()["value"]), version,
    )
    assert unwrapped.status_code == 200, unwrapped.text
    assert unwrapped.json()["value"] == "QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI"
    assert_kv_error(
        plane.op("disk-encryption-key", "decrypt", "RSA-OAEP-256", b"\0" * 384),
        403, "Forbidden", "AccessDenied",
    )

    # Every one of those operations is in the vault's audit log, attributed to its caller.
    entries = cli.json("keyvault", "audit", "list", "--vault-name", kv)
    ops = [(e["callerObjectId"], e["operation"], e["result"]) for e in entries]
    assert (oid, "KeyUnwrap", "Success") in ops, ops
    assert (oid, "KeyDecrypt", "Forbidden") in ops, ops
    assert any(op == "VaultAccessPolicyChange" or op == "VaultWrite" for _, op, _ in ops), ops

    # The log verifies offline.
    report = cli.run("keyvault", "audit", "verify", "--data-dir", str(server.data_dir))
    assert report.returncode == 0, report.describe()
