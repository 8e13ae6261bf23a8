"""`sealdisk keyvault key import` (and the real `az keyvault key import`) against the server.

Keys are made locally with `cryptography` and written as PEM (PKCS#8, PKCS#1 and SEC 1). After an
import, the public key the vault returns must be the local key's, and the vault must hold the
private key: it decrypts what the local public key encrypted (RSA) and signs what the local public
key verifies (EC). The private key never shows in the CLI's output nor in the server's files.
"""

from __future__ import annotations

import base64
import hashlib
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from kv_support import (
    EC_CURVES,
    DataPlane,
    files_under,
    int_bytes,
    local_verify,
    local_wrap,
    scan,
    unique_vault_name,
    vault_resource,
)
from support import Runner, Server, b64url_decode, b64url_encode

PKCS8 = serialization.PrivateFormat.PKCS8
TRADITIONAL = serialization.PrivateFormat.TraditionalOpenSSL  # PKCS#1 for RSA, SEC 1 for EC
SIGNING_ALGORITHMS = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}


@pytest.fixture(scope="module")
def vault(cli_session: Runner, server: Server) -> str:
    """An access-policy vault made with the sealdisk CLI; the creator (the bootstrap principal, as
    which az is logged in too) has every key permission."""
    group = f"kv-import-{uuid.uuid4().hex[:8]}"
    cli_session.run("group", "create", "-n", group, "-l", "eastus", "-o", "none")
    name = unique_vault_name()
    cli_session.run("keyvault", "create", "-n", name, "-g", group, "-l", "eastus", "-o", "none")
    return name


def vault_uri(server: Server, name: str) -> str:
    return f"https://{name}.vault.localhost:{server.port}/"


def write_pem(path: Path, key: Any, form: serialization.PrivateFormat,
              encryption: serialization.KeySerializationEncryption | None = None) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, form,
                                       encryption or serialization.NoEncryption()))
    path.chmod(0o600)
    return path


def std_bytes(value: str) -> bytes:
    """A JWK member as az (and sealdisk) prints it: standard base64."""
    return base64.b64decode(value)


def key_name() -> str:
    return f"imported-{uuid.uuid4().hex[:8]}"


def assert_no_private_member(bundle: dict[str, Any]) -> None:
    for member in ("d", "dp", "dq", "qi", "p", "q", "k", "t"):
        assert bundle["key"][member] is None, member


def assert_secret_not_in(text: str, secret: bytes) -> None:
    for encoded in (base64.b64encode(secret).decode(), b64url_encode(secret), secret.hex()):
        assert encoded[4:-4] not in text


def decrypt_with_the_vault(cli: Runner, vault: str, name: str, public_jwk: dict[str, Any],
                           plaintext: bytes) -> bytes:
    ciphertext = local_wrap(public_jwk, "RSA-OAEP-256", plaintext)
    out = cli.json("keyvault", "key", "decrypt", "--vault-name", vault, "-n", name,
                   "-a", "RSA-OAEP-256", "--value", base64.b64encode(ciphertext).decode())
    return base64.b64decode(out["result"])


def sign_with_the_vault(server: Server, vault: str, name: str, alg: str, digest: bytes) -> bytes:
    plane = DataPlane(server, vault_uri(server, vault), server.token(vault_resource(server)))
    signed = plane.ok("POST", f"keys/{name}/sign", {"alg": alg, "value": b64url_encode(digest)})
    return b64url_decode(signed["value"])


# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("form", "bits"), [(PKCS8, 2048), (TRADITIONAL, 3072), (PKCS8, 4096)],
                         ids=["pkcs8-2048", "pkcs1-3072", "pkcs8-4096"])
def test_rsa_import_then_the_vault_decrypts(cli_session: Runner, server: Server, vault: str,
                                            tmp_path: Path, form, bits: int):
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = write_pem(tmp_path / "key.pem", key, form)
    name = key_name()

    result = cli_session.run("keyvault", "key", "import", "--vault-name", vault, "-n", name,
                             "--pem-file", str(pem))
    bundle = result.json
    numbers = key.private_numbers()
    assert bundle["key"]["kty"] == "RSA"
    assert std_bytes(bundle["key"]["n"]) == int_bytes(numbers.public_numbers.n)
    assert std_bytes(bundle["key"]["e"]) == int_bytes(numbers.public_numbers.e)
    assert bundle["key"]["kid"].startswith(f"{vault_uri(server, vault)}keys/{name}/")
    assert bundle["attributes"]["enabled"] is True
    assert bundle["managed"] is None
    assert_no_private_member(bundle)
    for secret in (numbers.d, numbers.p, numbers.q):
        assert_secret_not_in(result.stdout + result.stderr, int_bytes(secret))

    public = {"n": std_bytes(bundle["key"]["n"]), "e": std_bytes(bundle["key"]["e"])}
    plaintext = os.urandom(32)
    assert decrypt_with_the_vault(cli_session, vault, name, public, plaintext) == plaintext


@pytest.mark.parametrize("form", [PKCS8, TRADITIONAL], ids=["pkcs8", "sec1"])
@pytest.mark.parametrize("crv", ["P-256", "P-384", "P-521"])
def test_ec_import_then_the_vault_signs(cli_session: Runner, server: Server, vault: str,
                                        tmp_path: Path, crv: str, form):
    curve, size = EC_CURVES[crv]
    key = ec.generate_private_key(curve())
    pem = write_pem(tmp_path / "key.pem", key, form)
    name = key_name()

    result = cli_session.run("keyvault", "key", "import", "--vault-name", vault, "-n", name,
                             "--pem-file", str(pem))
    bundle = result.json
    numbers = key.private_numbers()
    assert bundle["key"]["kty"] == "EC"
    assert bundle["key"]["crv"] == crv
    assert std_bytes(bundle["key"]["x"]) == int_bytes(numbers.public_numbers.x, size)
    assert std_bytes(bundle["key"]["y"]) == int_bytes(numbers.public_numbers.y, size)
    assert_no_private_member(bundle)
    assert_secret_not_in(result.stdout + result.stderr, int_bytes(numbers.private_value, size))

    alg = SIGNING_ALGORITHMS[crv]
    message = f"signed by {name}".encode()
    digest = hashlib.new(f"sha{alg[2:]}", message).digest()
    signature = sign_with_the_vault(server, vault, name, alg, digest)
    public = {"crv": crv, "x": std_bytes(bundle["key"]["x"]), "y": std_bytes(bundle["key"]["y"])}
    local_verify(public, alg, message, signature)  # raises InvalidSignature when wrong


def test_import_settings_pem_string_and_new_versions(cli_session: Runner, vault: str):
    first = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    text = first.private_bytes(serialization.Encoding.PEM, TRADITIONAL,
                               serialization.NoEncryption()).decode()
    name = key_name()
    bundle = cli_session.json(
        "keyvault", "key", "import", "--vault-name", vault, "--name", name, "--pem-string", text,
        "--ops", "wrapKey", "unwrapKey", "--tags", "env=test", "purpose=import",
        "--disabled", "true", "--expires", "2030-01-01T00:00:00Z", "--not-before", "2020-01-01",
        "--kty", "RSA", "--protection", "software",
    )
    assert bundle["key"]["keyOps"] == ["wrapKey", "unwrapKey"]
    assert bundle["tags"] == {"env": "test", "purpose": "import"}
    assert bundle["attributes"]["enabled"] is False
    assert bundle["attributes"]["expires"] == "2030-01-01T00:00:00+00:00"
    assert bundle["attributes"]["notBefore"] == "2020-01-01T00:00:00+00:00"

    # A second import under the same name is a new version.
    second = ec.generate_private_key(ec.SECP256R1())
    text = second.private_bytes(serialization.Encoding.PEM, PKCS8,
                                serialization.NoEncryption()).decode()
    latest = cli_session.json("keyvault", "key", "import", "--vault-name", vault, "-n", name,
                              "--pem-string", text)
    assert latest["key"]["kty"] == "EC"
    assert latest["key"]["kid"] != bundle["key"]["kid"]
    versions = cli_session.json("keyvault", "key", "list-versions", "--vault-name", vault,
                                "-n", name)
    assert sorted(v["kid"] for v in versions) == sorted([bundle["key"]["kid"], latest["key"]["kid"]])


def test_private_key_is_not_stored_in_plain_form(cli_session: Runner, server: Server, vault: str,
                                                 tmp_path: Path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = write_pem(tmp_path / "key.pem", key, PKCS8)
    cli_session.run("keyvault", "key", "import", "--vault-name", vault, "-n", key_name(),
                    "--pem-file", str(pem), "-o", "none")
    numbers = key.private_numbers()
    secrets = {"d": int_bytes(numbers.d), "p": int_bytes(numbers.p), "q": int_bytes(numbers.q)}
    assert scan(files_under(server.data_dir), secrets) == []


def test_refusals(cli_session: Runner, vault: str, tmp_path: Path):
    cli = cli_session
    base = ("keyvault", "key", "import", "--vault-name", vault, "-n", key_name())

    # RSA-1024: the vault refuses the key size with an Azure error.
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    result = cli.fails(*base, "--pem-file", str(write_pem(tmp_path / "1024.pem", small, PKCS8)))
    assert result.returncode == 1, result.describe()
    assert "(BadParameter)" in result.stderr, result.describe()
    assert "RSA key size 1024 is not supported" in result.stderr, result.describe()

    # Encrypted PEM: refused with the way out, whether or not the password is given.
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    encrypted = write_pem(tmp_path / "encrypted.pem", key, PKCS8,
                          serialization.BestAvailableEncryption(b"hunter2"))
    for extra in ((), ("--pem-password", "hunter2")):
        result = cli.fails(*base, "--pem-file", str(encrypted), *extra)
        assert result.returncode == 1, result.describe()
        assert "Import failed: the private key is encrypted" in result.stderr, result.describe()
        assert "openssl pkey" in result.stderr, result.describe()

    # A password for a key that has none, as az says it.
    plain = write_pem(tmp_path / "plain.pem", key, PKCS8)
    result = cli.fails(*base, "--pem-file", str(plain), "--pem-password", "hunter2")
    assert "Password was given but private key is not encrypted" in result.stderr, result.describe()

    # Not a private key.
    public = tmp_path / "public.pem"
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    result = cli.fails(*base, "--pem-file", str(public))
    assert "the PEM holds no private key (found: PUBLIC KEY)" in result.stderr, result.describe()

    # HSM protection and BYOK need an HSM, which this deployment does not have.
    result = cli.fails(*base, "--pem-file", str(plain), "--protection", "hsm")
    assert "(BadParameter)" in result.stderr and "PKCS#11 HSM" in result.stderr, result.describe()
    byok = tmp_path / "key.byok"
    byok.write_text("{}")
    result = cli.fails(*base, "--byok-file", str(byok))
    assert result.returncode == 1, result.describe()
    assert "PKCS#11 HSM" in result.stderr and "--pem-file" in result.stderr, result.describe()

    # --kty must describe the key in the PEM (a usage error, exit code 2).
    result = cli.fails(*base, "--pem-file", str(plain), "--kty", "EC")
    assert result.returncode == 2, result.describe()

    # Nothing of that made a key.
    names = cli.json("keyvault", "key", "list", "--vault-name", vault, "--query", "[].name")
    assert base[-1] not in names


def test_az_key_import_is_wire_compatible(az: Runner, az_session, cli_session: Runner,
                                          server: Server, vault: str, tmp_path: Path):
    """The real az's import request is accepted, and az and sealdisk print the same shape."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = write_pem(tmp_path / "key.pem", key, TRADITIONAL)
    name = key_name()
    by_az = az.json("keyvault", "key", "import", "--vault-name", vault, "-n", name,
                    "--pem-file", str(pem), "--ops", "encrypt", "decrypt", "--tags", "by=az")
    numbers = key.private_numbers().public_numbers
    assert std_bytes(by_az["key"]["n"]) == int_bytes(numbers.n)
    assert std_bytes(by_az["key"]["e"]) == int_bytes(numbers.e)
    assert by_az["key"]["keyOps"] == ["encrypt", "decrypt"]
    assert by_az["tags"] == {"by": "az"}
    assert_no_private_member(by_az)
    public = {"n": std_bytes(by_az["key"]["n"]), "e": std_bytes(by_az["key"]["e"])}
    plaintext = os.urandom(32)
    assert decrypt_with_the_vault(cli_session, vault, name, public, plaintext) == plaintext

    # The same file through sealdisk: same output shape (field by field), same public key.
    by_cli = cli_session.json("keyvault", "key", "import", "--vault-name", vault, "-n", name,
                              "--pem-file", str(pem), "--ops", "encrypt", "decrypt",
                              "--tags", "by=az")
    assert sorted(by_cli) == sorted(by_az)
    assert sorted(by_cli["key"]) == sorted(by_az["key"])
    assert sorted(by_cli["attributes"]) == sorted(by_az["attributes"])
    assert by_cli["key"]["n"] == by_az["key"]["n"]
    assert by_cli["key"]["kid"] != by_az["key"]["kid"], "a new version"

    # An EC key through az, used for signing.
    ec_key = ec.generate_private_key(ec.SECP384R1())
    ec_pem = write_pem(tmp_path / "ec.pem", ec_key, PKCS8)
    ec_name = key_name()
    by_az = az.json("keyvault", "key", "import", "--vault-name", vault, "-n", ec_name,
                    "--pem-file", str(ec_pem))
    assert by_az["key"]["crv"] == "P-384"
    message = b"signed after az import"
    signature = sign_with_the_vault(server, vault, ec_name, "ES384",
                                    hashlib.sha384(message).digest())
    ec_public = {"crv": "P-384", "x": std_bytes(by_az["key"]["x"]), "y": std_bytes(by_az["key"]["y"])}
    local_verify(ec_public, "ES384", message, signature)
