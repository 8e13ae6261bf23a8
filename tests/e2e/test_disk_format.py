"""An independent reader of sealdisk's volume files: OpenSSL (through Python's `cryptography`)
decrypts what sealdisk stored, following docs/disk-format.md and the documented key wrapping.

This proves the stored bytes are standard AES-256-XTS (`plain64` tweak, 4096-byte data units),
that the platform key wraps DEKs as documented, and that a customer-key layer is the DEK
wrapped with RSA-OAEP-256 under the vault key: with the private half of an imported key, the
customer can unwrap it without sealdisk.
"""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from support import Runner, Server

UNIT = 4096
SLOT = 4096
PLATFORM_KEY_ID = "sealdisk:platform-root-key/1"


@dataclass
class Layer:
    cipher: int
    key_id: str
    algorithm: str
    wrapped: bytes


@dataclass
class Header:
    disk_id: bytes
    size: int
    data_offset: int
    generation: int
    layers: list[Layer]


def parse_slot(raw: bytes) -> Header | None:
    if raw[:8] != b"SEALDISK":
        return None
    version, body_len, generation = struct.unpack_from("<IIQ", raw, 8)
    assert version == 1, version
    body = raw[24 : 24 + body_len]
    if hashlib.sha256(raw[: 24 + body_len]).digest() != raw[24 + body_len : 56 + body_len]:
        return None
    disk_id, size, unit, data_offset, count = struct.unpack_from("<16sQIQB", body, 0)
    assert unit == UNIT
    at = 37
    layers = []
    for _ in range(count):
        cipher = body[at]
        at += 1 + 32  # cipher id, key check value
        fields = []
        for _ in range(3):
            (n,) = struct.unpack_from("<H", body, at)
            fields.append(body[at + 2 : at + 2 + n])
            at += 2 + n
        layers.append(Layer(cipher, fields[0].decode(), fields[1].decode(), fields[2]))
    return Header(disk_id, size, data_offset, generation, layers)


def read_header(volume: Path) -> Header:
    raw = volume.read_bytes()[: 2 * SLOT]
    slots = [h for h in (parse_slot(raw[:SLOT]), parse_slot(raw[SLOT:])) if h is not None]
    assert slots, "no valid header slot"
    return max(slots, key=lambda h: h.generation)


def platform_unwrap(root_key: bytes, volume_id: uuid.UUID, layer: int, wrapped: bytes) -> bytes:
    sealing_key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"sealdisk key sealing v1"
    ).derive(root_key)
    assert wrapped[0] == 1, "sealed format version"
    context = f"sealdisk/volume-dek/v1/{volume_id}/{layer}".encode()
    return AESGCM(sealing_key).decrypt(wrapped[1:13], wrapped[13:], context)


def xts_decrypt_unit(key: bytes, index: int, unit: bytes) -> bytes:
    tweak = index.to_bytes(16, "little")
    decryptor = Cipher(algorithms.AES(key), modes.XTS(tweak)).decryptor()
    return decryptor.update(unit) + decryptor.finalize()


def decrypt_volume(volume: Path, keys: list[bytes], units: int) -> bytes:
    """The first `units` data units, decrypted outermost layer first."""
    header = read_header(volume)
    out = bytearray()
    with volume.open("rb") as f:
        f.seek(header.data_offset)
        for index in range(units):
            unit = f.read(UNIT)
            if unit == bytes(UNIT):
                out += unit  # never written: reads as zeros
                continue
            for key in reversed(keys):
                unit = xts_decrypt_unit(key, index, unit)
            out += unit
    return bytes(out)


def write_through_nbd(cli: Runner, server: Server, rg: str, disk: str, data: Path) -> None:
    sas = cli.run(
        "disk", "grant-access", "-g", rg, "-n", disk, "--access-level", "Write",
        "--duration-in-seconds", "600", "--query", "accessSAS", "-o", "tsv",
    ).stdout.strip()
    uri = f"{sas}?tls-certificates={server.data_dir / 'tls'}"
    subprocess.run(["nbdcopy", "--flush", str(data), uri], check=True, timeout=120)
    cli.run("disk", "revoke-access", "-g", rg, "-n", disk)


def volume_file(cli: Runner, server: Server, rg: str, disk: str) -> tuple[Path, uuid.UUID]:
    unique = cli.run("disk", "show", "-g", rg, "-n", disk, "--query", "uniqueId", "-o", "tsv")
    volume_id = uuid.UUID(unique.stdout.strip())
    return server.data_dir / "disks" / f"{volume_id}.disk", volume_id


def test_openssl_decrypts_10000_platform_key_units(cli_session: Runner, server: Server, tmp_path: Path):
    cli = cli_session
    rg = f"fmt-{uuid.uuid4().hex[:6]}"
    cli.run("group", "create", "-n", rg, "-l", "eastus")
    cli.run("disk", "create", "-g", rg, "-n", "d", "--size-gb", "1")
    units = 10_000
    plain = os.urandom(units * UNIT)
    data = tmp_path / "data.raw"
    data.write_bytes(plain)
    write_through_nbd(cli, server, rg, "d", data)

    volume, volume_id = volume_file(cli, server, rg, "d")
    header = read_header(volume)
    assert header.disk_id == volume_id.bytes
    assert header.size == 1 << 30
    assert [(l.cipher, l.key_id) for l in header.layers] == [(1, PLATFORM_KEY_ID)]
    root_key = (server.data_dir / "keys" / "platform-root.key").read_bytes()
    dek = platform_unwrap(root_key, volume_id, 0, header.layers[0].wrapped)
    assert len(dek) == 64 and dek[:32] != dek[32:]
    assert decrypt_volume(volume, [dek], units) == plain


def test_customer_can_unwrap_a_double_encrypted_disk_with_the_private_key(
    cli_session: Runner, server: Server, tmp_path: Path
):
    cli = cli_session
    suffix = uuid.uuid4().hex[:6]
    rg, kv = f"fmt2-{suffix}", f"fmtkv-{suffix}"
    cli.run("group", "create", "-n", rg, "-l", "eastus")
    cli.run("keyvault", "create", "-n", kv, "-g", rg, "-l", "eastus", "--enable-purge-protection", "true")
    private = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    pem = tmp_path / "key.pem"
    pem.write_bytes(private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    kid = cli.run(
        "keyvault", "key", "import", "--vault-name", kv, "-n", "cmk", "--pem-file", str(pem),
        "--query", "key.kid", "-o", "tsv",
    ).stdout.strip()
    cli.run(
        "disk-encryption-set", "create", "-g", rg, "-n", "des", "--key-url", kid,
        "--source-vault", kv, "--encryption-type", "EncryptionAtRestWithPlatformAndCustomerKeys",
    )
    identity = cli.run(
        "disk-encryption-set", "show", "-g", rg, "-n", "des",
        "--query", "identity.principalId", "-o", "tsv",
    ).stdout.strip()
    cli.run("keyvault", "set-policy", "-n", kv, "--object-id", identity,
            "--key-permissions", "get", "wrapKey", "unwrapKey")
    cli.run(
        "disk", "create", "-g", rg, "-n", "d2", "--size-gb", "1",
        "--encryption-type", "EncryptionAtRestWithPlatformAndCustomerKeys",
        "--disk-encryption-set", "des",
    )
    units = 256
    plain = os.urandom(units * UNIT)
    data = tmp_path / "data.raw"
    data.write_bytes(plain)
    write_through_nbd(cli, server, rg, "d2", data)

    volume, volume_id = volume_file(cli, server, rg, "d2")
    header = read_header(volume)
    customer, platform = header.layers
    assert customer.key_id.rsplit("/", 2)[1:] == kid.rsplit("/", 2)[1:], (customer.key_id, kid)
    assert customer.algorithm == "RSA-OAEP-256"
    assert platform.key_id == PLATFORM_KEY_ID
    customer_dek = private.decrypt(
        customer.wrapped,
        padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None),
    )
    root_key = (server.data_dir / "keys" / "platform-root.key").read_bytes()
    platform_dek = platform_unwrap(root_key, volume_id, 1, platform.wrapped)
    assert customer_dek != platform_dek
    assert decrypt_volume(volume, [customer_dek, platform_dek], units) == plain
    # One layer alone does not give the data back.
    assert decrypt_volume(volume, [platform_dek], 4) != plain[: 4 * UNIT]
