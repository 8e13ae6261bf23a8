"""Images under a customer key follow their disk encryption set's key.

An image (Microsoft.Compute/images) keeps its own volumes: full copies of its source disks under
their own DEKs, wrapped under the set's key like a disk's. When the set's key changes (`disk-
encryption-set update --key-url`, or automatic rotation to the key's newest version) every image
volume of the set is re-wrapped with its disks and snapshots: the volume header changes, not one
byte of the data area, and a disk made from the image afterwards reads the data even with the old
key version disabled. Once the key itself is revoked (disabled, or the set identity's access
policy removed), making a disk from the image is refused before anything is created.

Image volumes are not shown in any document (`internal.volumes`); the test finds their files as
the volume files `image create` adds to the data directory.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from cmk_support import (
    CMK,
    DOUBLE,
    PLATFORM_KEY_ID,
    assert_rewrapped,
    at_rest,
    audit,
    azure_error_of,
    check_data,
    client_tls_dir,
    crypto_entries,
    data_area,
    grant,
    logged_in_cli,
    read_header,
    wait_for,
    write_data,
)
from support import Runner, Server

RG = "rg"
KV = "image-kv"
KEY = "image-key"
def volume_files(server: Server) -> set[Path]:
    return set((server.data_dir / "disks").glob("*.disk"))


def make_set(cli: Runner, name: str, etype: str, key_url: str,
             auto: bool = False) -> dict[str, Any]:
    """A set of `etype` on `key_url` whose identity may get, wrap and unwrap with KV's keys."""
    args = ["disk-encryption-set", "create", "-g", RG, "-n", name, "--key-url", key_url,
            "--source-vault", KV, "--encryption-type", etype]
    if auto:
        args += ["--enable-auto-key-rotation", "true"]
    des = cli.json(*args)
    cli.run("keyvault", "set-policy", "--name", KV, "--object-id", des["identity"]["principalId"],
            "--key-permissions", "get", "wrapKey", "unwrapKey")
    return des


def make_image(cli: Runner, server: Server, name: str, disk: str, snapshot: str,
               ) -> tuple[dict[str, Any], list[Path]]:
    """An image with `disk` as its OS disk and `snapshot` at lun 0; returns it and the volume
    files it added (one per image disk)."""
    before = volume_files(server)
    image = cli.json("image", "create", "-g", RG, "-n", name, "--source", disk,
                     "--data-disk-sources", snapshot)
    added = sorted(volume_files(server) - before)
    assert len(added) == 2, f"{name}: expected two new volume files, got {added}"
    return image, added


def test_image_volumes_are_rewrapped_with_the_set_and_refused_once_the_key_is_revoked(
        fresh_server: Server, tmp_path: Path):
    server = fresh_server
    cli = logged_in_cli(server, tmp_path / "cli")
    tls = client_tls_dir(server, tmp_path / "tls")
    cli.run("group", "create", "-n", RG, "-l", "eastus")
    cli.run("keyvault", "create", "-n", KV, "-g", RG, "--enable-purge-protection", "true")
    key_url = cli.json("keyvault", "key", "create", "--vault-name", KV, "-n", KEY,
                       "--kty", "RSA", "--size", "3072")["key"]["kid"]
    kinds = {"cmk": CMK, "double": DOUBLE}
    sets = {kind: make_set(cli, f"{kind}-set", etype, key_url) for kind, etype in kinds.items()}

    # A written disk per set, a snapshot of it, and an image of both.
    images: dict[str, dict[str, Any]] = {}
    files: dict[str, list[Path]] = {}
    for kind, etype in kinds.items():
        disk = f"{kind}-disk"
        cli.run("disk", "create", "-g", RG, "-n", disk, "--size-gb", "1",
                "--encryption-type", etype, "--disk-encryption-set", f"{kind}-set")
        write_data(grant(cli, RG, disk), tls, disk.encode())
        cli.run("disk", "revoke-access", "-g", RG, "-n", disk)
        cli.run("snapshot", "create", "-g", RG, "-n", f"{kind}-snap", "--source", disk)
        images[kind], files[kind] = make_image(cli, server, f"{kind}-image", disk, f"{kind}-snap")
        associated = cli.json("disk-encryption-set", "list-associated-resources",
                              "-g", RG, "-n", f"{kind}-set")
        assert sorted(a.rsplit("/", 1)[1] for a in associated) == \
            sorted([disk, f"{kind}-snap", f"{kind}-image"]), associated
        for path in files[kind]:
            header = read_header(path)
            assert [layer.key_id for layer in header.layers
                    if not layer.key_id.startswith(PLATFORM_KEY_ID)] == [key_url], header.layers
            assert len(header.layers) == (2 if etype == DOUBLE else 1), header.layers
            assert data_area(path, header.data_offset)[0], f"{path}: no data copied"
    before = {path: at_rest(path) for paths in files.values() for path in paths}
    audited = {kind: len(crypto_entries(audit(cli, KV), des["identity"]["principalId"]))
               for kind, des in sets.items()}

    # A new key version, each set moved to it: the image volumes are re-wrapped with the
    # disk and the snapshot, one unwrap (old version) and one wrap (new version) each.
    new_key_url = cli.json("keyvault", "key", "create", "--vault-name", KV, "-n", KEY,
                           "--kty", "RSA", "--size", "3072")["key"]["kid"]
    old_version, new_version = key_url.rsplit("/", 1)[1], new_key_url.rsplit("/", 1)[1]
    for kind in kinds:
        rotated = cli.json("disk-encryption-set", "update", "-g", RG, "-n", f"{kind}-set",
                           "--key-url", new_key_url)
        assert rotated["activeKey"]["keyUrl"] == new_key_url, rotated
        for path in files[kind]:
            assert_rewrapped(path, before[path], key_url, new_key_url)
        ops = crypto_entries(audit(cli, KV), sets[kind]["identity"]["principalId"])[audited[kind]:]
        assert sorted(ops) == sorted([("KeyUnwrap", old_version, "Success")] * 4
                                     + [("KeyWrap", new_version, "Success")] * 4), ops

    # The old version is no longer needed: disabled, disks made from the images read the data.
    cli.run("keyvault", "key", "set-attributes", "--vault-name", KV, "-n", KEY,
            "--version", old_version, "--enabled", "false")
    for kind in kinds:
        copy = cli.json("disk", "create", "-g", RG, "-n", f"{kind}-copy",
                        "--image-reference", images[kind]["id"])
        assert copy["encryption"]["diskEncryptionSetId"] == sets[kind]["id"], copy
        check_data(grant(cli, RG, f"{kind}-copy", "Read"), tls, f"{kind}-disk".encode())
        cli.run("disk", "revoke-access", "-g", RG, "-n", f"{kind}-copy")

    # Revocation: with the key disabled, or the set identity's policy removed, a disk from the
    # image is refused, naming the reason, and nothing is left behind.
    cmk_identity = sets["cmk"]["identity"]["principalId"]
    rounds = [
        (["keyvault", "key", "set-attributes", "--vault-name", KV, "-n", KEY,
          "--enabled", "false"],
         ["keyvault", "key", "set-attributes", "--vault-name", KV, "-n", KEY,
          "--enabled", "true"],
         kinds, (f"'{KEY}'", "disabled")),
        (["keyvault", "delete-policy", "--name", KV, "--object-id", cmk_identity],
         ["keyvault", "set-policy", "--name", KV, "--object-id", cmk_identity,
          "--key-permissions", "get", "wrapKey", "unwrapKey"],
         ["cmk"], (cmk_identity, f"'{KV}'")),
    ]
    for revoke, restore, cut, words in rounds:
        cli.run(*revoke)
        for kind in cut:
            files_before = volume_files(server)
            refused = cli.fails("disk", "create", "-g", RG, "-n", f"{kind}-refused",
                                "--image-reference", images[kind]["id"])
            code, message = azure_error_of(refused)
            assert code == "KeyVaultAccessForbidden", refused.describe()
            assert all(w in message for w in words), message
            assert volume_files(server) == files_before, "a refused disk left a volume file"
            missing = cli.fails("disk", "show", "-g", RG, "-n", f"{kind}-refused")
            assert azure_error_of(missing)[0] == "ResourceNotFound", missing.describe()
            last = crypto_entries(audit(cli, KV), sets[kind]["identity"]["principalId"])[-1]
            assert last[0] == "KeyUnwrap" and last[2] != "Success", last
        cli.run(*restore)
    for kind in kinds:
        cli.run("disk", "create", "-g", RG, "-n", f"{kind}-again",
                "--image-reference", images[kind]["id"])
        check_data(grant(cli, RG, f"{kind}-again", "Read"), tls, f"{kind}-disk".encode())
        cli.run("disk", "revoke-access", "-g", RG, "-n", f"{kind}-again")

    # Images alone keep a set in use.
    for kind in kinds:
        for disk in (f"{kind}-disk", f"{kind}-copy", f"{kind}-again"):
            cli.run("disk", "delete", "-g", RG, "-n", disk, "--yes")
        cli.run("snapshot", "delete", "-g", RG, "-n", f"{kind}-snap", "--yes")
    refused = cli.fails("disk-encryption-set", "delete", "-g", RG, "-n", "cmk-set", "--yes")
    code, message = azure_error_of(refused)
    assert code == "OperationNotAllowed" and "cmk-image" in message, refused.describe()


def test_automatic_rotation_rewraps_image_volumes(fresh_server: Server, tmp_path: Path):
    """A set with automatic key rotation picks up a new key version within seconds (the
    server's 2 s timer); its image volumes are re-wrapped with its disk."""
    server = fresh_server
    cli = logged_in_cli(server, tmp_path / "cli")
    tls = client_tls_dir(server, tmp_path / "tls")
    cli.run("group", "create", "-n", RG, "-l", "eastus")
    cli.run("keyvault", "create", "-n", KV, "-g", RG, "--enable-purge-protection", "true")
    kid = cli.json("keyvault", "key", "create", "--vault-name", KV, "-n", KEY,
                   "--kty", "RSA", "--size", "3072")["key"]["kid"]
    des = make_set(cli, "auto-set", CMK, kid.rsplit("/", 1)[0], auto=True)
    assert des["activeKey"]["keyUrl"] == kid, des
    disk = cli.json("disk", "create", "-g", RG, "-n", "auto-disk", "--size-gb", "1",
                    "--encryption-type", CMK, "--disk-encryption-set", "auto-set")
    write_data(grant(cli, RG, "auto-disk"), tls, b"auto-disk")
    cli.run("disk", "revoke-access", "-g", RG, "-n", "auto-disk")
    cli.run("snapshot", "create", "-g", RG, "-n", "auto-snap", "--source", "auto-disk")
    image, paths = make_image(cli, server, "auto-image", "auto-disk", "auto-snap")
    disk_file = server.data_dir / "disks" / f"{disk['uniqueId']}.disk"
    before = {path: at_rest(path) for path in paths + [disk_file]}

    new_kid = cli.json("keyvault", "key", "rotate", "--vault-name", KV, "-n", KEY)["key"]["kid"]
    assert new_kid != kid
    started = time.monotonic()
    wait_for(lambda: cli.json("disk-encryption-set", "show", "-g", RG, "-n", "auto-set")
             ["activeKey"]["keyUrl"] == new_kid, 10.0, "the set moved to the new version")
    wait_for(lambda: all(read_header(p).layers[0].key_id == new_kid for p in before), 10.0,
             "every volume re-wrapped")
    print(f"automatic rotation reached every volume in {time.monotonic() - started:.2f} s")
    for path in before:
        assert_rewrapped(path, before[path], kid, new_kid)

    cli.run("keyvault", "key", "set-attributes", "--vault-name", KV, "-n", KEY,
            "--version", kid.rsplit("/", 1)[1], "--enabled", "false")
    cli.run("disk", "create", "-g", RG, "-n", "auto-copy", "--image-reference", image["id"])
    check_data(grant(cli, RG, "auto-copy", "Read"), tls, b"auto-disk")
