"""The customer-managed-key walkthroughs (seed 000: "How to Encrypt Azure Managed Disks with
Customer-Managed Keys"; seed 002: "Server-side encryption of Azure managed disks - Azure CLI") run
end to end, first with the sealdisk CLI and then with the real `az`, and what they promise checked
through NBD: data under a customer key survives rotation, restarts and a disabled-then-re-enabled
key; revoking the key or the set's access cuts disks off.

What the seeds leave implicit is added and marked as such: the resource group, the VM `my-vm`
with its OS and data disk, and, for double encryption, a set of that encryption type (Azure, like
sealdisk, refuses a disk of type EncryptionAtRestWithPlatformAndCustomerKeys on a set of type
EncryptionAtRestWithCustomerKey, so the seed's double-encryption command works only with such a
set). For az, the two client-side edits of the wire notes are applied to `az keyvault create`:
`--enable-soft-delete` dropped (removed in az 2.41), `--enable-rbac-authorization false` added
(RBAC is the default since az 2.61; the seed uses access policies). `az vm create` deploys an ARM
template, so the VM is made with the sealdisk CLI and az deallocates and starts it.
"""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from cmk_support import (
    CMK,
    DOUBLE,
    MiB,
    PLATFORM_KEY_ID,
    RANDOM_AT,
    assert_rewrapped,
    audit,
    azure_error_of,
    check_data,
    client_tls_dir,
    crypto_entries,
    data_area,
    file_contains,
    grant,
    header_bytes,
    libnbd_close,
    libnbd_open,
    libnbd_read,
    libnbd_write,
    logged_in_cli,
    nbd_exports,
    power_state,
    read_header,
    seconds_until_reads_fail,
    sha_stream,
    tsv,
    vm_statuses,
    volume_file,
    wait_for,
    write_data,
)
from support import Runner, Server, is_guid

RG = "my-resource-group"
KV = "my-disk-encryption-kv"
KEY = "disk-encryption-key"
DES = "my-disk-encryption-set"
KV_CRYPTO_SERVICE_ENCRYPTION_USER = "e147488a-f6f5-4113-8e2d-b22465e65bf6"
KV_CRYPTO_OFFICER = "14b46e9e-c2b7-41b4-b07b-48a6ebf60603"
READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"
KID = r"https://{vault}\.vault\.localhost:{port}/keys/{key}/[0-9a-f]{{32}}"


def kid_pattern(server: Server, vault: str, key: str = KEY) -> str:
    return KID.format(vault=re.escape(vault), port=server.port, key=re.escape(key))


def table_rows(output: str) -> list[list[str]]:
    """The rows of `-o table` output: header, dashes, data rows, each split on whitespace."""
    return [line.split() for line in output.splitlines() if line.strip()]


def assert_forbidden(result, *words: str) -> str:
    code, message = azure_error_of(result)
    assert code == "KeyVaultAccessForbidden", result.describe()
    for w in words:
        assert w in message, f"{w!r} not in the error message: {message}"
    return message


# ================================================================================================
# 1. Seed 000 with the sealdisk CLI, as written
# ================================================================================================


def test_seed_000_with_the_sealdisk_cli(fresh_server: Server, tmp_path: Path):
    """Every step of seed 000 from Step 1 through double encryption and key rotation, `az`
    replaced by `sealdisk`, with the seed's exact names, flags and queries."""
    server = fresh_server
    cli = logged_in_cli(server, tmp_path / "cli")
    sub = server.subscription

    # Implicit: the resource group.
    cli.run("group", "create", "-n", RG, "-l", "eastus")

    # Step 1: the vault, --enable-soft-delete included.
    vault = cli.json(
        "keyvault", "create", "--name", KV, "--resource-group", RG, "--location", "eastus",
        "--enable-soft-delete", "true", "--enable-purge-protection", "true", "--sku", "standard",
    )
    assert vault["properties"]["enablePurgeProtection"] is True
    assert vault["properties"]["enableSoftDelete"] is True
    vault_id = vault["id"]
    assert vault_id == f"/subscriptions/{sub}/resourceGroups/{RG}/providers/Microsoft.KeyVault/vaults/{KV}"

    # Step 2: the key, and the seed's table.
    cli.run("keyvault", "key", "create", "--vault-name", KV, "--name", KEY, "--kty", "RSA",
            "--size", "3072")
    rows = table_rows(cli.run(
        "keyvault", "key", "show", "--vault-name", KV, "--name", KEY,
        "--query", "{name:key.kid, keyType:key.kty, keySize:key.n}", "--output", "table",
    ).stdout)
    assert rows[0] == ["Name", "KeyType", "KeySize"], rows
    assert set("".join(rows[1])) == {"-"}, rows
    assert re.fullmatch(kid_pattern(server, KV), rows[2][0]) and rows[2][1] == "RSA", rows
    assert len(rows[2][2]) == 512, "keySize is the base64url modulus of an RSA-3072 key"

    # Step 3: the disk encryption set and its identity.
    key_url = tsv(cli, "keyvault", "key", "show", "--vault-name", KV, "--name", KEY,
                  "--query", "key.kid")
    assert re.fullmatch(kid_pattern(server, KV), key_url), key_url
    des = cli.json(
        "disk-encryption-set", "create", "--name", DES, "--resource-group", RG,
        "--location", "eastus", "--key-url", key_url, "--source-vault", KV,
        "--encryption-type", CMK,
    )
    assert des["activeKey"] == {"keyUrl": key_url, "sourceVault": {"id": vault_id}}, des
    assert des["encryptionType"] == CMK and des["provisioningState"] == "Succeeded", des
    assert des["identity"]["type"] == "SystemAssigned", des
    des_identity = tsv(cli, "disk-encryption-set", "show", "--name", DES, "--resource-group", RG,
                       "--query", "identity.principalId")
    assert is_guid(des_identity), des_identity
    assert des_identity == des["identity"]["principalId"]
    msi = cli.json("ad", "sp", "show", "--id", des_identity)
    assert msi["servicePrincipalType"] == "ManagedIdentity" and msi["displayName"] == DES, msi

    # Step 4: get/wrapKey/unwrapKey for the identity, and the RBAC line with the real vault id.
    policies = cli.json("keyvault", "set-policy", "--name", KV, "--object-id", des_identity,
                        "--key-permissions", "get", "wrapKey", "unwrapKey")
    mine = [p for p in policies["properties"]["accessPolicies"] if p["objectId"] == des_identity]
    assert len(mine) == 1 and sorted(mine[0]["permissions"]["keys"]) == \
        ["get", "unwrapKey", "wrapKey"], mine
    scope = f"/subscriptions/{sub}/resourceGroups/{RG}/providers/Microsoft.KeyVault/vaults/{KV}"
    assignment = cli.json("role", "assignment", "create", "--assignee", des_identity,
                          "--role", "Key Vault Crypto Service Encryption User", "--scope", scope)
    assert assignment["principalId"] == des_identity and assignment["scope"] == scope
    assert assignment["roleDefinitionId"].endswith(KV_CRYPTO_SERVICE_ENCRYPTION_USER)

    # Step 5: the encrypted disk and the seed's verification table.
    des_id = tsv(cli, "disk-encryption-set", "show", "--name", DES, "--resource-group", RG,
                 "--query", "id")
    assert des_id == f"/subscriptions/{sub}/resourceGroups/{RG}/providers/Microsoft.Compute/diskEncryptionSets/{DES}"
    disk = cli.json(
        "disk", "create", "--name", "encrypted-data-disk", "--resource-group", RG,
        "--location", "eastus", "--sku", "Premium_LRS", "--size-gb", "128",
        "--encryption-type", CMK, "--disk-encryption-set", des_id,
    )
    assert disk["encryption"] == {"type": CMK, "diskEncryptionSetId": des_id}, disk
    assert disk["diskSizeGB"] == 128 and disk["sku"]["name"] == "Premium_LRS", disk
    rows = table_rows(cli.run(
        "disk", "show", "--name", "encrypted-data-disk", "--resource-group", RG,
        "--query", "{name:name, encryption:encryption.type, desId:encryption.diskEncryptionSetId}",
        "--output", "table",
    ).stdout)
    assert rows[0] == ["Name", "Encryption", "DesId"], rows
    assert rows[2] == ["encrypted-data-disk", CMK, des_id], rows
    assert len(rows) == 3, rows

    # Implicit: the VM my-vm, with OS disk my-vm-osdisk and data disk my-vm-datadisk-01,
    # both under platform keys to begin with.
    cli.run("disk", "create", "-g", RG, "-n", "my-vm-datadisk-01", "--size-gb", "4")
    cli.run("vm", "create", "-g", RG, "-n", "my-vm", "--image", "UbuntuLTS",
            "--os-disk-name", "my-vm-osdisk", "--attach-data-disks", "my-vm-datadisk-01")
    assert power_state(cli, RG, "my-vm") == "VM running"
    for name in ("my-vm-osdisk", "my-vm-datadisk-01"):
        shown = cli.json("disk", "show", "-g", RG, "-n", name)
        assert shown["encryption"]["type"] == "EncryptionAtRestWithPlatformKey", shown
        assert shown["diskState"] == "Attached", shown
    # While the VM runs, the encryption of its disks cannot change.
    refused = cli.fails("disk", "update", "--name", "my-vm-osdisk", "--resource-group", RG,
                        "--encryption-type", CMK, "--disk-encryption-set", des_id)
    assert azure_error_of(refused)[0] == "OperationNotAllowed", refused.describe()

    # Encrypting existing disks: deallocate, update both, start.
    assert cli.run("vm", "deallocate", "--name", "my-vm", "--resource-group", RG).stdout == ""
    assert power_state(cli, RG, "my-vm") == "VM deallocated"
    for name in ("my-vm-osdisk", "my-vm-datadisk-01"):
        updated = cli.json("disk", "update", "--name", name, "--resource-group", RG,
                           "--encryption-type", CMK, "--disk-encryption-set", des_id)
        assert updated["encryption"] == {"type": CMK, "diskEncryptionSetId": des_id}, updated
        assert updated["name"] == name
    assert cli.run("vm", "start", "--name", "my-vm", "--resource-group", RG).stdout == ""
    assert power_state(cli, RG, "my-vm") == "VM running"
    assert set(nbd_exports(cli, RG, "my-vm")) == {"my-vm-osdisk", "my-vm-datadisk-01"}

    # Key rotation: a new version, and the set moved to it.
    old_version = key_url.rsplit("/", 1)[1]
    cli.run("keyvault", "key", "create", "--vault-name", KV, "--name", KEY, "--kty", "RSA",
            "--size", "3072")
    new_key_url = tsv(cli, "keyvault", "key", "show", "--vault-name", KV, "--name", KEY,
                      "--query", "key.kid")
    assert new_key_url != key_url and re.fullmatch(kid_pattern(server, KV), new_key_url)
    rotated = cli.json("disk-encryption-set", "update", "--name", DES, "--resource-group", RG,
                       "--key-url", new_key_url)
    assert rotated["activeKey"]["keyUrl"] == new_key_url, rotated
    assert rotated["provisioningState"] == "Succeeded", rotated
    new_version = new_key_url.rsplit("/", 1)[1]
    # Every disk's DEK is now wrapped under the new version; the VM kept running.
    for name in ("encrypted-data-disk", "my-vm-osdisk", "my-vm-datadisk-01"):
        uid = cli.json("disk", "show", "-g", RG, "-n", name)["uniqueId"]
        layers = read_header(volume_file(server, uid)).layers
        assert [layer.key_id for layer in layers] == [new_key_url], (name, layers)
    associated = cli.json("disk-encryption-set", "list-associated-resources", "--name", DES,
                          "--resource-group", RG)
    assert sorted(a.rsplit("/", 1)[1] for a in associated) == \
        ["encrypted-data-disk", "my-vm-datadisk-01", "my-vm-osdisk"], associated
    assert power_state(cli, RG, "my-vm") == "VM running"

    # Double encryption, as written: the seed's set is of type EncryptionAtRestWithCustomerKey,
    # which a double-encrypted disk cannot use (in Azure either).
    refused = cli.fails(
        "disk", "create", "--name", "double-encrypted-disk", "--resource-group", RG,
        "--location", "eastus", "--sku", "Premium_LRS", "--size-gb", "128",
        "--encryption-type", DOUBLE, "--disk-encryption-set", des_id,
    )
    code, message = azure_error_of(refused)
    assert code == "InvalidParameter" and CMK in message and DOUBLE in message, refused.describe()
    # Implicit: a set of type EncryptionAtRestWithPlatformAndCustomerKeys on the same key.
    double_set = cli.json(
        "disk-encryption-set", "create", "--name", "my-double-encryption-set",
        "--resource-group", RG, "--location", "eastus", "--key-url", new_key_url,
        "--source-vault", KV, "--encryption-type", DOUBLE,
    )
    double_identity = double_set["identity"]["principalId"]
    assert is_guid(double_identity) and double_identity != des_identity
    cli.run("keyvault", "set-policy", "--name", KV, "--object-id", double_identity,
            "--key-permissions", "get", "wrapKey", "unwrapKey")
    double = cli.json(
        "disk", "create", "--name", "double-encrypted-disk", "--resource-group", RG,
        "--location", "eastus", "--sku", "Premium_LRS", "--size-gb", "128",
        "--encryption-type", DOUBLE, "--disk-encryption-set", double_set["id"],
    )
    assert double["encryption"] == {"type": DOUBLE, "diskEncryptionSetId": double_set["id"]}
    layers = read_header(volume_file(server, double["uniqueId"])).layers
    assert len(layers) == 2, layers
    assert {layer.key_id for layer in layers if not layer.key_id.startswith(PLATFORM_KEY_ID)} \
        == {new_key_url}, layers
    assert sum(layer.key_id.startswith(PLATFORM_KEY_ID) for layer in layers) == 1, layers

    # The audit log: the set identity wrapped each DEK when the disk was encrypted, unwrapped
    # them to start the VM, and re-wrapped every DEK under the new version when the key rotated.
    entries = audit(cli, KV)
    ops = crypto_entries(entries, des_identity)
    assert all(result == "Success" for _, _, result in ops), ops
    wraps_old = [o for o in ops if o[:2] == ("KeyWrap", old_version)]
    wraps_new = [o for o in ops if o[:2] == ("KeyWrap", new_version)]
    unwraps_old = [o for o in ops if o[:2] == ("KeyUnwrap", old_version)]
    assert len(wraps_old) == 3, ops  # encrypted-data-disk, my-vm-osdisk, my-vm-datadisk-01
    assert len(wraps_new) == 3, ops  # the same three, re-wrapped by the rotation
    # vm start (two disks); the rotation (at least the unattached disk, whose DEK is not open)
    assert len(unwraps_old) >= 2 + 1, ops
    # (The three disks are re-wrapped in any order, so only this order is fixed.)
    last_old_wrap = max(i for i, o in enumerate(ops) if o[:2] == ("KeyWrap", old_version))
    first_new = min(i for i, o in enumerate(ops) if o[1] == new_version)
    assert last_old_wrap < first_new, ops
    assert all(e["detail"] == f"disk encryption set {DES}" for e in entries
               if e["callerObjectId"] == des_identity), entries
    assert ("KeyWrap", new_version, "Success") in crypto_entries(entries, double_identity)
    report = cli.run("keyvault", "audit", "verify", "--data-dir", str(server.data_dir))
    assert report.returncode == 0, report.describe()


# ================================================================================================
# 2. Seed 000 with the real az (one test per step, in order, on the shared server)
# ================================================================================================


@pytest.fixture(scope="module")
def az_seed(az_session: dict[str, Any], az: Runner, cli_session: Runner,
            server: Server) -> Iterator[dict[str, Any]]:
    """State the az steps hand on to each other (the shell variables of the seed). At the end
    the resource group goes, with everything in it (disks of 128 GiB on the shared server)."""
    yield {"az": az, "cli": cli_session, "server": server}
    cli_session.run("group", "delete", "-n", RG, "--yes")


@pytest.fixture
def shared_groups(cli_session: Runner) -> Iterator[list[str]]:
    """Resource groups a test makes on the shared server; deleted with their contents after it."""
    groups: list[str] = []
    yield groups
    for group in groups:
        cli_session.run("group", "delete", "-n", group, "--yes")


def az_tsv(az: Runner, *args: str) -> str:
    return az.run(*args, "-o", "tsv").stdout.strip()


def need(state: dict[str, Any], *keys: str) -> list[Any]:
    missing = [k for k in keys if k not in state]
    if missing:
        pytest.fail(f"an earlier az step did not complete (missing {missing})")
    return [state[k] for k in keys]


class TestSeed000WithAz:
    """Seed 000 with az 2.91, exact names, the two §9 edits on `az keyvault create`."""

    def test_step1_keyvault_create(self, az_seed: dict[str, Any]):
        az, server = az_seed["az"], az_seed["server"]
        group = az.json("group", "create", "-n", RG, "-l", "eastus")
        assert group["properties"]["provisioningState"] == "Succeeded"
        vault = az.json(
            "keyvault", "create", "--name", KV, "--resource-group", RG, "--location", "eastus",
            "--enable-purge-protection", "true", "--sku", "standard",
            "--enable-rbac-authorization", "false",
        )
        props = vault["properties"]
        assert props["enablePurgeProtection"] is True and props["enableSoftDelete"] is True
        assert props["enableRbacAuthorization"] is False
        assert props["vaultUri"] == f"https://{KV}.vault.localhost:{server.port}/"
        az_seed["vault_id"] = vault["id"]

    def test_step2_key_create_and_show(self, az_seed: dict[str, Any]):
        az, server = az_seed["az"], az_seed["server"]
        created = az.json("keyvault", "key", "create", "--vault-name", KV, "--name", KEY,
                          "--kty", "RSA", "--size", "3072")
        assert created["key"]["kty"] == "RSA"
        rows = table_rows(az.run(
            "keyvault", "key", "show", "--vault-name", KV, "--name", KEY,
            "--query", "{name:key.kid, keyType:key.kty, keySize:key.n}", "--output", "table",
        ).stdout)
        assert rows[0] == ["Name", "KeyType", "KeySize"], rows
        assert rows[2][0] == created["key"]["kid"] and rows[2][1] == "RSA", rows
        key_url = az_tsv(az, "keyvault", "key", "show", "--vault-name", KV, "--name", KEY,
                         "--query", "key.kid")
        assert re.fullmatch(kid_pattern(server, KV), key_url), key_url
        az_seed["key_url"] = key_url

    def test_step3_disk_encryption_set_create_and_show(self, az_seed: dict[str, Any]):
        az = az_seed["az"]
        key_url, vault_id = need(az_seed, "key_url", "vault_id")
        des = az.json(
            "disk-encryption-set", "create", "--name", DES, "--resource-group", RG,
            "--location", "eastus", "--key-url", key_url, "--source-vault", KV,
            "--encryption-type", CMK,
        )
        assert des["activeKey"]["keyUrl"] == key_url, des
        assert des["activeKey"]["sourceVault"]["id"] == vault_id, des
        assert des["encryptionType"] == CMK and des["identity"]["type"] == "SystemAssigned"
        des_identity = az_tsv(az, "disk-encryption-set", "show", "--name", DES,
                              "--resource-group", RG, "--query", "identity.principalId")
        assert is_guid(des_identity) and des_identity == des["identity"]["principalId"]
        az_seed["des_identity"] = des_identity

    def test_step4_set_policy_and_role_assignment(self, az_seed: dict[str, Any]):
        az, server = az_seed["az"], az_seed["server"]
        (des_identity,) = need(az_seed, "des_identity")
        vault = az.json("keyvault", "set-policy", "--name", KV, "--object-id", des_identity,
                        "--key-permissions", "get", "wrapKey", "unwrapKey")
        mine = [p for p in vault["properties"]["accessPolicies"] if p["objectId"] == des_identity]
        assert len(mine) == 1 and sorted(mine[0]["permissions"]["keys"]) == \
            ["get", "unwrapKey", "wrapKey"], mine
        scope = (f"/subscriptions/{server.subscription}/resourceGroups/{RG}"
                 f"/providers/Microsoft.KeyVault/vaults/{KV}")
        assignment = az.json("role", "assignment", "create", "--assignee", des_identity,
                             "--role", "Key Vault Crypto Service Encryption User",
                             "--scope", scope)
        assert assignment["principalId"] == des_identity
        assert assignment["principalType"] == "ServicePrincipal"
        assert assignment["roleDefinitionId"].endswith(KV_CRYPTO_SERVICE_ENCRYPTION_USER)

    def test_step5_encrypted_disk_create_and_show(self, az_seed: dict[str, Any]):
        az = az_seed["az"]
        need(az_seed, "des_identity")
        des_id = az_tsv(az, "disk-encryption-set", "show", "--name", DES, "--resource-group", RG,
                        "--query", "id")
        assert des_id.endswith(f"/resourceGroups/{RG}/providers/Microsoft.Compute/diskEncryptionSets/{DES}")
        disk = az.json(
            "disk", "create", "--name", "encrypted-data-disk", "--resource-group", RG,
            "--location", "eastus", "--sku", "Premium_LRS", "--size-gb", "128",
            "--encryption-type", CMK, "--disk-encryption-set", des_id,
        )
        assert disk["encryption"] == {"type": CMK, "diskEncryptionSetId": des_id}, disk
        rows = table_rows(az.run(
            "disk", "show", "--name", "encrypted-data-disk", "--resource-group", RG,
            "--query",
            "{name:name, encryption:encryption.type, desId:encryption.diskEncryptionSetId}",
            "--output", "table",
        ).stdout)
        assert rows[0] == ["Name", "Encryption", "DesId"], rows
        assert rows[2] == ["encrypted-data-disk", CMK, des_id], rows
        az_seed["des_id"] = des_id

    def test_encrypting_existing_disks_deallocate_update_start(self, az_seed: dict[str, Any]):
        az, cli = az_seed["az"], az_seed["cli"]
        (des_id,) = need(az_seed, "des_id")
        # Implicit (az vm create needs template deployments): the VM, by the sealdisk CLI.
        cli.run("disk", "create", "-g", RG, "-n", "my-vm-datadisk-01", "--size-gb", "4")
        cli.run("vm", "create", "-g", RG, "-n", "my-vm", "--image", "UbuntuLTS",
                "--os-disk-name", "my-vm-osdisk", "--attach-data-disks", "my-vm-datadisk-01")
        assert az_tsv(az, "vm", "show", "-d", "-g", RG, "-n", "my-vm",
                      "--query", "powerState") == "VM running"

        assert az.run("vm", "deallocate", "--name", "my-vm", "--resource-group", RG).stdout == ""
        assert az_tsv(az, "vm", "show", "-d", "-g", RG, "-n", "my-vm",
                      "--query", "powerState") == "VM deallocated"
        for name in ("my-vm-osdisk", "my-vm-datadisk-01"):
            updated = az.json("disk", "update", "--name", name, "--resource-group", RG,
                              "--encryption-type", CMK, "--disk-encryption-set", des_id)
            assert updated["encryption"] == {"type": CMK, "diskEncryptionSetId": des_id}
        assert az.run("vm", "start", "--name", "my-vm", "--resource-group", RG).stdout == ""
        statuses = az.json("vm", "get-instance-view", "--name", "my-vm", "--resource-group", RG,
                           "--query", "instanceView.statuses[].code")
        assert "PowerState/running" in statuses, statuses
        assert set(nbd_exports(cli, RG, "my-vm")) == {"my-vm-osdisk", "my-vm-datadisk-01"}

    def test_key_rotation(self, az_seed: dict[str, Any]):
        az, cli, server = az_seed["az"], az_seed["cli"], az_seed["server"]
        key_url, des_identity, _ = need(az_seed, "key_url", "des_identity", "des_id")
        az.run("keyvault", "key", "create", "--vault-name", KV, "--name", KEY, "--kty", "RSA",
               "--size", "3072")
        new_key_url = az_tsv(az, "keyvault", "key", "show", "--vault-name", KV, "--name", KEY,
                             "--query", "key.kid")
        assert new_key_url != key_url
        rotated = az.json("disk-encryption-set", "update", "--name", DES, "--resource-group", RG,
                          "--key-url", new_key_url)
        assert rotated["activeKey"]["keyUrl"] == new_key_url, rotated
        for name in ("encrypted-data-disk", "my-vm-osdisk", "my-vm-datadisk-01"):
            uid = az_tsv(az, "disk", "show", "-g", RG, "-n", name, "--query", "uniqueId")
            layers = read_header(volume_file(server, uid)).layers
            assert [layer.key_id for layer in layers] == [new_key_url], (name, layers)
        new_version = new_key_url.rsplit("/", 1)[1]
        ops = crypto_entries(audit(cli, KV), des_identity)
        assert ops.count(("KeyWrap", new_version, "Success")) == 3, ops
        az_seed["new_key_url"] = new_key_url

    def test_double_encryption(self, az_seed: dict[str, Any]):
        az = az_seed["az"]
        des_id, new_key_url = need(az_seed, "des_id", "new_key_url")
        refused = az.fails(
            "disk", "create", "--name", "double-encrypted-disk", "--resource-group", RG,
            "--location", "eastus", "--sku", "Premium_LRS", "--size-gb", "128",
            "--encryption-type", DOUBLE, "--disk-encryption-set", des_id,
        )
        code, message = azure_error_of(refused)
        assert code == "InvalidParameter" and DOUBLE in message, refused.describe()
        # Implicit: a set of the double-encryption type.
        double_set = az.json(
            "disk-encryption-set", "create", "--name", "my-double-encryption-set",
            "--resource-group", RG, "--location", "eastus", "--key-url", new_key_url,
            "--source-vault", KV, "--encryption-type", DOUBLE,
        )
        az.run("keyvault", "set-policy", "--name", KV,
               "--object-id", double_set["identity"]["principalId"],
               "--key-permissions", "get", "wrapKey", "unwrapKey")
        double = az.json(
            "disk", "create", "--name", "double-encrypted-disk", "--resource-group", RG,
            "--location", "eastus", "--sku", "Premium_LRS", "--size-gb", "128",
            "--encryption-type", DOUBLE, "--disk-encryption-set", double_set["id"],
        )
        assert double["encryption"] == {"type": DOUBLE, "diskEncryptionSetId": double_set["id"]}

    def test_rbac_vault_variant(self, az_seed: dict[str, Any]):
        """Step 4's RBAC line on a vault made with --enable-rbac-authorization true: set-policy is
        refused by az itself, the role assignment is what lets the set wrap, and deleting it
        cuts the disk off."""
        az, server = az_seed["az"], az_seed["server"]
        need(az_seed, "vault_id")
        kv = "my-disk-enc-kv-rbac"  # vault names have at most 24 characters
        vault = az.json(
            "keyvault", "create", "--name", kv, "--resource-group", RG, "--location", "eastus",
            "--enable-purge-protection", "true", "--sku", "standard",
            "--enable-rbac-authorization", "true",
        )
        vault_id = vault["id"]
        assert vault["properties"]["enableRbacAuthorization"] is True
        # Under RBAC even the subscription Owner needs a data-plane role to create keys.
        denied = az.fails("keyvault", "key", "create", "--vault-name", kv, "--name", KEY,
                          "--kty", "RSA", "--size", "3072")
        assert azure_error_of(denied)[0] == "Forbidden", denied.describe()
        officer = az.json("role", "assignment", "create", "--assignee", server.client_id,
                          "--role", "Key Vault Crypto Officer", "--scope", vault_id)
        assert officer["roleDefinitionId"].endswith(KV_CRYPTO_OFFICER)
        key_url = az.json("keyvault", "key", "create", "--vault-name", kv, "--name", KEY,
                          "--kty", "RSA", "--size", "3072")["key"]["kid"]
        des = az.json("disk-encryption-set", "create", "--name", "my-rbac-encryption-set",
                      "--resource-group", RG, "--location", "eastus", "--key-url", key_url,
                      "--source-vault", kv, "--encryption-type", CMK)
        des_identity = des["identity"]["principalId"]
        policy = az.fails("keyvault", "set-policy", "--name", kv, "--object-id", des_identity,
                          "--key-permissions", "get", "wrapKey", "unwrapKey")
        assert "--enable-rbac-authorization" in policy.stderr, policy.describe()
        # Without the role, the set cannot wrap a new disk's key.
        refused = az.fails("disk", "create", "--name", "rbac-disk", "--resource-group", RG,
                           "--size-gb", "1", "--encryption-type", CMK,
                           "--disk-encryption-set", des["id"])
        assert_forbidden(refused, des_identity, "Microsoft.KeyVault/vaults/keys/wrap/action")
        role = az.json("role", "assignment", "create", "--assignee", des_identity,
                       "--role", "Key Vault Crypto Service Encryption User", "--scope", vault_id)
        assert role["roleDefinitionId"].endswith(KV_CRYPTO_SERVICE_ENCRYPTION_USER)
        disk = az.json("disk", "create", "--name", "rbac-disk", "--resource-group", RG,
                       "--size-gb", "1", "--encryption-type", CMK,
                       "--disk-encryption-set", des["id"])
        assert disk["encryption"]["type"] == CMK
        sas = az.json("disk", "grant-access", "--name", "rbac-disk", "--resource-group", RG,
                      "--duration-in-seconds", "600")
        assert sas["accessSAS"].startswith("nbds://"), sas
        az.run("disk", "revoke-access", "--name", "rbac-disk", "--resource-group", RG)
        # Deleting the role assignment revokes the set's access to its key.
        az.run("role", "assignment", "delete", "--assignee", des_identity,
               "--role", "Key Vault Crypto Service Encryption User", "--scope", vault_id)
        refused = az.fails("disk", "grant-access", "--name", "rbac-disk", "--resource-group", RG,
                           "--duration-in-seconds", "600")
        assert_forbidden(refused, des_identity, kv)


# ================================================================================================
# 3. Seed 002 with the sealdisk CLI
# ================================================================================================


def test_seed_002_with_the_sealdisk_cli(cli_session: Runner, server: Server,
                                        shared_groups: list[str], tmp_path: Path):
    cli = cli_session
    suffix = uuid.uuid4().hex[:6]
    rgName = f"yourResourceGroupName-{suffix}"  # noqa: N806 (the seed's shell variables)
    location = "WestCentralUS"
    keyVaultName = f"yourKeyVaultName-{suffix}"  # noqa: N806 (vault names are global)
    keyName = "yourKeyName"  # noqa: N806
    diskEncryptionSetName = "yourDiskEncryptionSetName"  # noqa: N806
    shared_groups.append(rgName)
    cli.run("group", "create", "-n", rgName, "-l", location)  # implicit

    # Key Vault and key.
    cli.run("keyvault", "create", "-n", keyVaultName, "-g", rgName, "-l", location,
            "--enable-purge-protection", "true", "--enable-soft-delete", "true")
    key = cli.json("keyvault", "key", "create", "--vault-name", keyVaultName, "-n", keyName,
                   "--protection", "software")
    assert key["key"]["kty"] == "RSA" and key["attributes"]["enabled"] is True

    # The DiskEncryptionSet, with the seed's `[...]` multiselect queries.
    keyVaultId = tsv(cli, "keyvault", "show", "--name", keyVaultName, "--query", "[id]")  # noqa: N806
    assert keyVaultId == (f"/subscriptions/{server.subscription}/resourceGroups/{rgName}"
                          f"/providers/Microsoft.KeyVault/vaults/{keyVaultName}")
    keyVaultKeyUrl = tsv(cli, "keyvault", "key", "show", "--vault-name", keyVaultName,  # noqa: N806
                         "--name", keyName, "--query", "[key.kid]")
    assert keyVaultKeyUrl == key["key"]["kid"]
    des = cli.json("disk-encryption-set", "create", "-n", diskEncryptionSetName, "-l", location,
                   "-g", rgName, "--source-vault", keyVaultId, "--key-url", keyVaultKeyUrl)
    assert des["encryptionType"] == CMK and des["location"] == "westcentralus", des

    # Access for the set's identity: access policy (lower-case permission names) and Reader.
    desIdentity = tsv(cli, "disk-encryption-set", "show", "-n", diskEncryptionSetName,  # noqa: N806
                      "-g", rgName, "--query", "[identity.principalId]")
    assert is_guid(desIdentity), desIdentity
    cli.run("keyvault", "set-policy", "-n", keyVaultName, "-g", rgName, "--object-id", desIdentity,
            "--key-permissions", "wrapkey", "unwrapkey", "get")
    reader = cli.json("role", "assignment", "create", "--assignee", desIdentity,
                      "--role", "Reader", "--scope", keyVaultId)
    assert reader["roleDefinitionId"].endswith(READER)

    # A VM from a Marketplace image alias, OS and two data disks under the set.
    vmName = "yourVMName"  # noqa: N806
    diskEncryptionSetId = tsv(cli, "disk-encryption-set", "show", "-n",  # noqa: N806
                              diskEncryptionSetName, "-g", rgName, "--query", "[id]")
    assert diskEncryptionSetId == des["id"]
    vm = cli.json("vm", "create", "-g", rgName, "-n", vmName, "-l", location,
                  "--image", "UbuntuLTS", "--size", "Standard_DS3_V2", "--generate-ssh-keys",
                  "--os-disk-encryption-set", diskEncryptionSetId,
                  "--data-disk-sizes-gb", "128", "128",
                  "--data-disk-encryption-sets", diskEncryptionSetId, diskEncryptionSetId)
    assert vm["powerState"] == "VM running", vm
    profile = cli.json("vm", "show", "-g", rgName, "-n", vmName, "--query", "storageProfile")
    assert profile["osDisk"]["createOption"] == "FromImage"
    assert [d["diskSizeGB"] for d in profile["dataDisks"]] == [128, 128], profile
    vm_disks = [profile["osDisk"]["name"]] + [d["name"] for d in profile["dataDisks"]]
    for name in vm_disks:
        enc = cli.json("disk", "show", "-g", rgName, "-n", name, "--query", "encryption")
        assert enc == {"type": CMK, "diskEncryptionSetId": diskEncryptionSetId}, (name, enc)

    # A scale set from the same image, OS and data disks under the set.
    vmssName = "ssecmktestvmss5"  # noqa: N806
    vmss = cli.json("vmss", "create", "-g", rgName, "-n", vmssName, "--image", "UbuntuLTS",
                    "--upgrade-policy", "automatic", "--admin-username", "azureuser",
                    "--generate-ssh-keys", "--os-disk-encryption-set", diskEncryptionSetId,
                    "--data-disk-sizes-gb", "64", "128",
                    "--data-disk-encryption-sets", diskEncryptionSetId, diskEncryptionSetId)["vmss"]
    assert vmss["provisioningState"] == "Succeeded" and vmss["sku"]["capacity"] == 2, vmss
    assert vmss["upgradePolicy"]["mode"] == "Automatic", vmss
    instances = cli.json("vmss", "list-instances", "-g", rgName, "-n", vmssName)
    assert len(instances) == 2, instances
    vmss_disks = []
    for instance in instances:
        storage = instance["storageProfile"]
        names = [storage["osDisk"]["name"]] + [d["name"] for d in storage["dataDisks"]]
        sizes = [cli.json("disk", "show", "-g", rgName, "-n", name, "--query",
                          "{size:diskSizeGB, encryption:encryption}") for name in names]
        assert [d["size"] for d in sizes[1:]] == [64, 128], sizes
        assert all(d["encryption"] == {"type": CMK, "diskEncryptionSetId": diskEncryptionSetId}
                   for d in sizes), sizes
        vmss_disks += names

    # An empty CMK disk attached at LUN 2.
    diskName = "yourDiskName"  # noqa: N806
    cli.run("disk", "create", "-n", diskName, "-g", rgName, "-l", location,
            "--encryption-type", CMK, "--disk-encryption-set", diskEncryptionSetId,
            "--size-gb", "30", "--sku", "Premium_LRS")
    diskId = tsv(cli, "disk", "show", "-n", diskName, "-g", rgName, "--query", "[id]")  # noqa: N806
    cli.run("vm", "disk", "attach", "--vm-name", vmName, "--lun", "2", "--ids", diskId)
    attached = cli.json("disk", "show", "-n", diskName, "-g", rgName)
    assert attached["diskState"] == "Attached" and attached["managedBy"] == vm["id"], attached
    luns = cli.json("vm", "show", "-g", rgName, "-n", vmName,
                    "--query", "storageProfile.dataDisks[].{lun:lun, name:name}")
    assert {"lun": 2, "name": diskName} in luns, luns
    exports = nbd_exports(cli, rgName, vmName)
    assert set(exports) == set(vm_disks) | {diskName}, exports

    # The attached disk is usable at once through the VM's export, and it is ciphertext at rest.
    tls = client_tls_dir(server, tmp_path / "tls")
    secret = sha_stream(b"seed 002 " + suffix.encode(), 256 * 1024)
    libnbd_write(exports[diskName], tls, 3 * MiB, secret)
    assert libnbd_read(exports[diskName], tls, 3 * MiB, len(secret)) == secret
    assert not file_contains(volume_file(server, attached["uniqueId"]), secret[:64])

    associated = cli.json("disk-encryption-set", "list-associated-resources",
                          "-n", diskEncryptionSetName, "-g", rgName)
    assert sorted(a.rsplit("/", 1)[1] for a in associated) == \
        sorted(vm_disks + vmss_disks + [diskName])
    # Ten DEKs wrapped by the set's identity (VM 3, scale set 2 x 3, attached disk 1), and
    # unwrapped for the running VM.
    ops = crypto_entries(audit(cli, keyVaultName), desIdentity)
    assert [o for o in ops if o[0] == "KeyWrap"] == \
        [("KeyWrap", keyVaultKeyUrl.rsplit("/", 1)[1], "Success")] * 10, ops
    assert len([o for o in ops if o[0] == "KeyUnwrap"]) >= 4, ops


# ================================================================================================
# 4. Through NBD: rotation, restart, revocation
# ================================================================================================

SMALL = "1"  # GiB: the disks of the NBD tests
def make_sets(cli: Runner, group: str, vault: str) -> tuple[str, dict[str, dict[str, Any]]]:
    """A vault with an RSA-3072 key and two sets on it, `cmk-set` (customer key) and
    `double-set` (platform and customer keys), each identity with get/wrapKey/unwrapKey."""
    cli.run("group", "create", "-n", group, "-l", "eastus")
    cli.run("keyvault", "create", "-n", vault, "-g", group, "--enable-purge-protection", "true")
    key_url = cli.json("keyvault", "key", "create", "--vault-name", vault, "-n", KEY,
                       "--kty", "RSA", "--size", "3072")["key"]["kid"]
    sets = {}
    for name, etype in (("cmk-set", CMK), ("double-set", DOUBLE)):
        des = cli.json("disk-encryption-set", "create", "-g", group, "-n", name,
                       "--key-url", key_url, "--source-vault", vault, "--encryption-type", etype)
        cli.run("keyvault", "set-policy", "--name", vault,
                "--object-id", des["identity"]["principalId"],
                "--key-permissions", "get", "wrapKey", "unwrapKey")
        sets[name] = des
    return key_url, sets


def test_cmk_and_double_encrypted_data_survive_rotation_and_restart(fresh_server: Server,
                                                                     tmp_path: Path):
    """Data written to a CMK disk and to a double-encrypted disk reads back after the sets are
    rotated to a new key version and after a server restart; rotation rewrites the volume
    header (the DEK re-wrapped under the new version) and not one byte of the data area."""
    server = fresh_server
    cli = logged_in_cli(server, tmp_path / "cli")
    tls = client_tls_dir(server, tmp_path / "tls")
    key_url, sets = make_sets(cli, "rg", "cmk-kv")
    disks = {
        "cmk-disk": ("cmk-set", CMK),
        "double-disk": ("double-set", DOUBLE),
    }
    files = {}
    for disk, (set_name, etype) in disks.items():
        created = cli.json("disk", "create", "-g", "rg", "-n", disk, "--size-gb", SMALL,
                           "--encryption-type", etype, "--disk-encryption-set", set_name)
        assert created["encryption"] == {"type": etype, "diskEncryptionSetId": sets[set_name]["id"]}
        files[disk] = volume_file(server, created["uniqueId"])
        write_data(grant(cli, "rg", disk), tls, disk.encode())
        cli.run("disk", "revoke-access", "-g", "rg", "-n", disk)

    before = {}
    for disk, path in files.items():
        header = read_header(path)
        assert header.data_offset == 1 * MiB
        cmk_layers = [layer for layer in header.layers if layer.key_id == key_url]
        assert len(cmk_layers) == 1, header.layers
        assert len(header.layers) == (2 if disk == "double-disk" else 1), header.layers
        extents, digest = data_area(path, header.data_offset)
        assert extents, f"{path}: no data written"
        before[disk] = (header_bytes(path), header, digest)

    # Rotation: a new key version, each set moved to it.
    new_key_url = cli.json("keyvault", "key", "create", "--vault-name", "cmk-kv", "-n", KEY,
                           "--kty", "RSA", "--size", "3072")["key"]["kid"]
    for set_name in sets:
        rotated = cli.json("disk-encryption-set", "update", "-g", "rg", "-n", set_name,
                           "--key-url", new_key_url)
        assert rotated["activeKey"]["keyUrl"] == new_key_url, rotated
    for disk, path in files.items():
        assert_rewrapped(path, before[disk], key_url, new_key_url)
        check_data(grant(cli, "rg", disk, "Read"), tls, disk.encode())
        cli.run("disk", "revoke-access", "-g", "rg", "-n", disk)

    # The old version is no longer needed: disabled, the disks still open.
    old_version = key_url.rsplit("/", 1)[1]
    cli.run("keyvault", "key", "set-attributes", "--vault-name", "cmk-kv", "-n", KEY,
            "--version", old_version, "--enabled", "false")
    for disk in files:
        check_data(grant(cli, "rg", disk, "Read"), tls, disk.encode())
        cli.run("disk", "revoke-access", "-g", "rg", "-n", disk)

    # A restart (same API port, so the same vault URLs; a new NBD port).
    at_rest = {disk: (header_bytes(path), data_area(path, 1 * MiB)[1])
               for disk, path in files.items()}
    assert server.stop() == 0
    server.start(listen=f"localhost:{server.port}")
    for disk, path in files.items():
        assert (header_bytes(path), data_area(path, 1 * MiB)[1]) == at_rest[disk]
        uri = grant(cli, "rg", disk)
        assert uri.startswith(server.conn["nbdEndpoint"] + "/"), uri
        check_data(uri, tls, disk.encode())
        cli.run("disk", "revoke-access", "-g", "rg", "-n", disk)
    for set_name in sets:
        shown = cli.json("disk-encryption-set", "show", "-g", "rg", "-n", set_name)
        assert shown["activeKey"]["keyUrl"] == new_key_url, shown


def open_handles(uris: dict[str, str], tls: Path) -> dict[str, Any]:
    handles = {}
    for name, uri in uris.items():
        h = libnbd_open(uri, tls)
        assert len(h.pread(4096, RANDOM_AT)) == 4096
        handles[name] = h
    return handles


def close_handles(handles: dict[str, Any]) -> None:
    for h in handles.values():
        libnbd_close(h)
    handles.clear()


def test_disabling_the_key_or_removing_the_access_policy_cuts_disks_off(fresh_server: Server,
                                                                        tmp_path: Path):
    """Disabling the key, or deleting the set identity's access policy, closes the disks' open
    NBD connections within a second and stops the VM using them; grant-access and vm start
    then fail naming the reason; re-enabling (re-adding) makes them work again, data intact."""
    server = fresh_server
    cli = logged_in_cli(server, tmp_path / "cli")
    tls = client_tls_dir(server, tmp_path / "tls")
    _, sets = make_sets(cli, "rg", "cmk-kv")
    cmk_identity = sets["cmk-set"]["identity"]["principalId"]
    for disk, set_name, etype in (("cmk-disk", "cmk-set", CMK),
                                  ("double-disk", "double-set", DOUBLE)):
        cli.run("disk", "create", "-g", "rg", "-n", disk, "--size-gb", SMALL,
                "--encryption-type", etype, "--disk-encryption-set", set_name)
        write_data(grant(cli, "rg", disk), tls, disk.encode())
    # The VM: OS disk under cmk-set, one data disk under double-set.
    cli.run("vm", "create", "-g", "rg", "-n", "vm1", "--image", "UbuntuLTS",
            "--os-disk-encryption-set", "cmk-set", "--data-disk-sizes-gb", SMALL,
            "--data-disk-encryption-sets", "double-set")
    vm_data = cli.json("vm", "show", "-g", "rg", "-n", "vm1",
                       "--query", "storageProfile.dataDisks[0].name")
    write_data(nbd_exports(cli, "rg", "vm1")[vm_data], tls, b"vm data")

    def uris() -> dict[str, str]:
        out = {disk: grant(cli, "rg", disk) for disk in ("cmk-disk", "double-disk")}
        out["vm1"] = nbd_exports(cli, "rg", "vm1")[vm_data]
        return out

    def check_all_data(current: dict[str, str]) -> None:
        for disk in ("cmk-disk", "double-disk"):
            check_data(current[disk], tls, disk.encode())
        check_data(current["vm1"], tls, b"vm data")

    rounds = [
        # (what is revoked, its undo, the disks cut off, words every error must contain)
        (["keyvault", "key", "set-attributes", "--vault-name", "cmk-kv", "-n", KEY,
          "--enabled", "false"],
         ["keyvault", "key", "set-attributes", "--vault-name", "cmk-kv", "-n", KEY,
          "--enabled", "true"],
         {"cmk-disk", "double-disk", "vm1"}, (f"'{KEY}'", "disabled")),
        (["keyvault", "delete-policy", "--name", "cmk-kv", "--object-id", cmk_identity],
         ["keyvault", "set-policy", "--name", "cmk-kv", "--object-id", cmk_identity,
          "--key-permissions", "get", "wrapKey", "unwrapKey"],
         {"cmk-disk", "vm1"}, (cmk_identity, "'cmk-kv'")),
    ]
    timings = []
    for revoke, restore, cut, words in rounds:
        handles = open_handles(uris(), tls)
        try:
            cli.run(*revoke)
            since = time.monotonic()
            failed = seconds_until_reads_fail({n: h for n, h in handles.items() if n in cut},
                                              since)
            timings.append(failed)
            assert all(t is not None and t < 1.0 for t in failed.values()), \
                f"reads after `{' '.join(revoke)}` failed after (s): {failed}"
            # Disks of another set go on working.
            time.sleep(0.5)
            for name in set(handles) - cut:
                assert len(handles[name].pread(4096, RANDOM_AT)) == 4096, name
        finally:
            close_handles(handles)

        for disk in sorted(cut - {"vm1"}):
            assert_forbidden(cli.fails("disk", "grant-access", "-g", "rg", "-n", disk,
                                       "--duration-in-seconds", "60"), *words)
        statuses = wait_for(
            lambda: [s for s in vm_statuses(cli, "rg", "vm1") if s["code"] == "PowerState/stopped"],
            2.0, "vm1 stopped")
        assert all(w in statuses[0].get("message", "") for w in words), statuses
        assert nbd_exports(cli, "rg", "vm1") == {}
        assert_forbidden(cli.fails("vm", "start", "-g", "rg", "-n", "vm1"), *words)
        assert power_state(cli, "rg", "vm1") == "VM stopped"

        cli.run(*restore)
        cli.run("vm", "start", "-g", "rg", "-n", "vm1")
        assert power_state(cli, "rg", "vm1") == "VM running"
        check_all_data(uris())
    print(f"seconds from revocation to the first failed read: {timings}")


# ================================================================================================
# 5. Authorization and audit
# ================================================================================================


def test_a_set_whose_identity_lacks_wrap_key_cannot_create_a_disk(
        cli_session: Runner, shared_groups: list[str]):
    cli = cli_session
    suffix = uuid.uuid4().hex[:6]
    rg, kv = f"rg-nowrap-{suffix}", f"kv-nowrap-{suffix}"
    shared_groups.append(rg)
    cli.run("group", "create", "-n", rg, "-l", "eastus")
    cli.run("keyvault", "create", "-n", kv, "-g", rg, "--enable-purge-protection", "true")
    key_url = cli.json("keyvault", "key", "create", "--vault-name", kv, "-n", KEY,
                       "--kty", "RSA", "--size", "3072")["key"]["kid"]
    des = cli.json("disk-encryption-set", "create", "-g", rg, "-n", "nowrap-set",
                   "--key-url", key_url, "--source-vault", kv)
    oid = des["identity"]["principalId"]

    def create() -> Any:
        return cli.run("disk", "create", "-g", rg, "-n", "disk1", "--size-gb", "1",
                       "--encryption-type", CMK, "--disk-encryption-set", "nowrap-set",
                       check=False)

    # No policy at all, then get + unwrapKey only: refused, naming wrapKey; nothing created.
    refused = create()
    assert refused.returncode != 0
    assert_forbidden(refused, oid, "'wrapKey'", f"'{kv}'")
    cli.run("keyvault", "set-policy", "--name", kv, "--object-id", oid,
            "--key-permissions", "get", "unwrapKey")
    refused = create()
    assert refused.returncode != 0
    assert_forbidden(refused, oid, "'wrapKey'")
    missing = cli.fails("disk", "show", "-g", rg, "-n", "disk1")
    assert azure_error_of(missing)[0] == "ResourceNotFound", missing.describe()
    assert cli.json("disk-encryption-set", "list-associated-resources",
                    "-g", rg, "-n", "nowrap-set") == []
    ops = crypto_entries(audit(cli, kv), oid)
    assert [o[:2] for o in ops] == [("KeyWrap", key_url.rsplit("/", 1)[1])] * 2, ops
    assert all(result == "Forbidden" for _, _, result in ops), ops
    details = [e.get("detail") or "" for e in audit(cli, kv)
               if e["callerObjectId"] == oid and e["operation"] == "KeyWrap"]
    assert all("'wrapKey'" in d for d in details), details

    # With wrapKey the same command works: one successful wrap by the identity.
    cli.run("keyvault", "set-policy", "--name", kv, "--object-id", oid,
            "--key-permissions", "get", "wrapKey", "unwrapKey")
    assert create().returncode == 0
    ops = crypto_entries(audit(cli, kv), oid)
    assert ops[2:] == [("KeyWrap", key_url.rsplit("/", 1)[1], "Success")], ops


def test_the_audit_log_shows_every_wrap_and_unwrap_by_the_set_identity(
        cli_session: Runner, shared_groups: list[str]):
    """Each operation that needs a disk's DEK leaves its wraps/unwraps in the vault's audit log,
    attributed to the set's identity, at the key version the set uses."""
    cli = cli_session
    suffix = uuid.uuid4().hex[:6]
    rg, kv = f"rg-audit-{suffix}", f"kv-audit-{suffix}"
    shared_groups.append(rg)
    cli.run("group", "create", "-n", rg, "-l", "eastus")
    cli.run("keyvault", "create", "-n", kv, "-g", rg, "--enable-purge-protection", "true")
    key_url = cli.json("keyvault", "key", "create", "--vault-name", kv, "-n", KEY,
                       "--kty", "RSA", "--size", "3072")["key"]["kid"]
    des = cli.json("disk-encryption-set", "create", "-g", rg, "-n", "audit-set",
                   "--key-url", key_url, "--source-vault", kv)
    oid = des["identity"]["principalId"]
    cli.run("keyvault", "set-policy", "--name", kv, "--object-id", oid,
            "--key-permissions", "get", "wrapKey", "unwrapKey")
    version = key_url.rsplit("/", 1)[1]

    seen = 0

    def new_ops() -> list[tuple[str, str, str]]:
        nonlocal seen
        ops = crypto_entries(audit(cli, kv), oid)
        out, seen = ops[seen:], len(ops)
        return out

    cli.run("disk", "create", "-g", rg, "-n", "d1", "--size-gb", "1",
            "--encryption-type", CMK, "--disk-encryption-set", "audit-set")
    assert new_ops() == [("KeyWrap", version, "Success")]
    grant(cli, rg, "d1")
    assert set(new_ops()) == {("KeyUnwrap", version, "Success")}
    cli.run("disk", "revoke-access", "-g", rg, "-n", "d1")
    cli.run("snapshot", "create", "-g", rg, "-n", "s1", "--source", "d1")
    ops = new_ops()
    assert ("KeyUnwrap", version, "Success") in ops and ("KeyWrap", version, "Success") in ops, ops
    cli.run("vm", "create", "-g", rg, "-n", "vm1", "--image", "UbuntuLTS",
            "--os-disk-encryption-set", "audit-set", "--attach-data-disks", "d1")
    ops = new_ops()
    assert ops.count(("KeyWrap", version, "Success")) == 1, ops  # the new OS disk
    assert ops.count(("KeyUnwrap", version, "Success")) >= 2, ops  # both disks opened
    cli.run("vm", "deallocate", "-g", rg, "-n", "vm1")
    assert new_ops() == []  # closing needs no key
    cli.run("vm", "start", "-g", rg, "-n", "vm1")
    assert new_ops().count(("KeyUnwrap", version, "Success")) >= 2

    entries = [e for e in audit(cli, kv) if e["callerObjectId"] == oid]
    assert entries and all(e["detail"] == "disk encryption set audit-set" for e in entries)
    assert all(e["operation"] in ("KeyWrap", "KeyUnwrap") for e in entries), entries


def test_refused_unwraps_are_audited(
        cli_session: Runner, shared_groups: list[str]):
    cli = cli_session
    suffix = uuid.uuid4().hex[:6]
    rg, kv = f"rg-refused-{suffix}", f"kv-refused-{suffix}"
    shared_groups.append(rg)
    cli.run("group", "create", "-n", rg, "-l", "eastus")
    cli.run("keyvault", "create", "-n", kv, "-g", rg, "--enable-purge-protection", "true")
    key_url = cli.json("keyvault", "key", "create", "--vault-name", kv, "-n", KEY,
                       "--kty", "RSA", "--size", "3072")["key"]["kid"]
    des = cli.json("disk-encryption-set", "create", "-g", rg, "-n", "set1",
                   "--key-url", key_url, "--source-vault", kv)
    oid = des["identity"]["principalId"]
    cli.run("keyvault", "set-policy", "--name", kv, "--object-id", oid,
            "--key-permissions", "get", "wrapKey", "unwrapKey")
    cli.run("disk", "create", "-g", rg, "-n", "d1", "--size-gb", "1",
            "--encryption-type", CMK, "--disk-encryption-set", "set1")
    before = len(crypto_entries(audit(cli, kv), oid))
    cli.run("keyvault", "key", "set-attributes", "--vault-name", kv, "-n", KEY,
            "--enabled", "false")
    assert_forbidden(cli.fails("disk", "grant-access", "-g", rg, "-n", "d1",
                               "--duration-in-seconds", "60"), "disabled")
    after = crypto_entries(audit(cli, kv), oid)[before:]
    assert [(op, result == "Success") for op, _, result in after] == [("KeyUnwrap", False)], after
