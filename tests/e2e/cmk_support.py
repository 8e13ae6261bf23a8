"""Helpers of the customer-managed-key end-to-end tests (test_seed_cmk.py): the sealdisk CLI on a
server of the test's own, NBD clients (qemu-io and libnbd's Python binding) on disk exports, the
volume file's header and data area, and the vault audit log.

Nothing here is a test.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from support import Result, Runner, Server, cli_runner

KiB = 1024
MiB = 1024 * KiB
HEADER_BYTES = 8 * KiB  # two 4096-byte header slots (docs/disk-format.md)
# Debian's python3-libnbd installs the `nbd` module here, built for CPython 3.11.
DEBIAN_DIST_PACKAGES = "/usr/lib/python3/dist-packages"
PLATFORM_KEY_ID = "sealdisk:platform-root-key/"
CMK = "EncryptionAtRestWithCustomerKey"
DOUBLE = "EncryptionAtRestWithPlatformAndCustomerKeys"


# ------------------------------------------------------------------------------------------------
# The sealdisk CLI
# ------------------------------------------------------------------------------------------------


def logged_in_cli(server: Server, config_dir: Path) -> Runner:
    """The sealdisk CLI with its own config dir, logged in to `server` from its connection file."""
    cli = cli_runner(config_dir, server)
    cli.run("login", "--connection-file", str(server.connection_file))
    return cli


def tsv(cli: Runner, *args: str) -> str:
    """`cli ARGS -o tsv`, stripped: what `$(...)` captures in the seeds."""
    return cli.run(*args, "-o", "tsv").stdout.strip()


def azure_error_of(result: Result) -> tuple[str, str]:
    """(code, message) of the `ERROR: (Code) Message` line az and the sealdisk CLI print."""
    m = re.search(r"ERROR: \((\w+)\) (.*)", result.stderr)
    assert m, f"no Azure error in the output:\n{result.describe()}"
    return m[1], m[2]


def vm_statuses(cli: Runner, group: str, vm: str) -> list[dict[str, Any]]:
    return cli.json("vm", "get-instance-view", "-g", group, "-n", vm,
                    "--query", "instanceView.statuses")


def power_state(cli: Runner, group: str, vm: str) -> str:
    return tsv(cli, "vm", "show", "-d", "-g", group, "-n", vm, "--query", "powerState")


def nbd_exports(cli: Runner, group: str, vm: str) -> dict[str, str]:
    """{disk name: nbds:// URI} of a VM's disks (empty unless it is running)."""
    return cli.json("vm", "show", "-d", "-g", group, "-n", vm, "--query", "nbdExports") or {}


def grant(cli: Runner, group: str, disk: str, access: str = "Write") -> str:
    return tsv(cli, "disk", "grant-access", "-g", group, "-n", disk, "--access-level", access,
               "--duration-in-seconds", "3600", "--query", "accessSAS")


# ------------------------------------------------------------------------------------------------
# The vault audit log
# ------------------------------------------------------------------------------------------------


def audit(cli: Runner, vault: str) -> list[dict[str, Any]]:
    return cli.json("keyvault", "audit", "list", "--vault-name", vault)


def crypto_entries(entries: Iterable[dict[str, Any]], oid: str) -> list[tuple[str, str, str]]:
    """(operation, key version, result) of the KeyWrap/KeyUnwrap entries by `oid`, in order."""
    return [(e["operation"], e.get("version") or "", e["result"]) for e in entries
            if e["callerObjectId"] == oid and e["operation"] in ("KeyWrap", "KeyUnwrap")]


# ------------------------------------------------------------------------------------------------
# NBD clients
# ------------------------------------------------------------------------------------------------

EXPORT_URI = re.compile(r"^nbds://([A-Za-z0-9.\-]+):(\d+)/([A-Za-z0-9_\-]+)$")


def client_tls_dir(server: Server, dest: Path) -> Path:
    """A directory holding only the deployment CA as `ca-cert.pem`: all an NBD client needs
    (qemu's tls-creds-x509 `dir=`, libnbd's `tls-certificates`)."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(server.ca_file, dest / "ca-cert.pem")
    return dest


def require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise AssertionError(f"{tool} is not installed: apt-get install qemu-utils (.ci/run does)")
    return path


def qemu_io(uri: str, tls_dir: Path, commands: Iterable[str], read_only: bool = False) -> Result:
    """One qemu-io process (one NBD connection over TLS) running `commands`; each must succeed,
    pattern checks included."""
    m = EXPORT_URI.match(uri)
    assert m, f"not an nbds:// export URI: {uri!r}"
    host, port, name = m[1], m[2], m[3]
    argv = [require("qemu-io"), "--object",
            f"tls-creds-x509,id=tls0,endpoint=client,dir={tls_dir}", "--image-opts"]
    if read_only:
        argv.append("-r")
    argv.append(f"driver=nbd,host={host},port={port},export={name},tls-creds=tls0")
    for c in commands:
        argv += ["-c", c]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as err:
        raise AssertionError(f"qemu-io {uri} did not finish within 120 s") from err
    result = Result(argv, proc.returncode, proc.stdout, proc.stderr)
    out = (proc.stdout + proc.stderr).lower()
    assert proc.returncode == 0 and "pattern verification failed" not in out \
        and "failed" not in out, result.describe()
    return result


def import_libnbd() -> Any:
    """libnbd's Python binding, from Debian's python3-libnbd when the venv does not have it."""
    try:
        import nbd  # type: ignore[import-not-found]
    except ImportError:
        if DEBIAN_DIST_PACKAGES not in sys.path:
            sys.path.append(DEBIAN_DIST_PACKAGES)
        try:
            import nbd  # type: ignore[import-not-found]
        except ImportError as err:
            raise AssertionError(
                f"libnbd's Python binding cannot be imported into {sys.executable} ({err}): "
                "apt-get install python3-libnbd; it is built for CPython 3.11"
            ) from err
    return nbd


def libnbd_open(uri: str, tls_dir: Path) -> Any:
    """A libnbd handle on `uri`, TLS required, trusting only the deployment CA."""
    nbd = import_libnbd()
    h = nbd.NBD()
    h.set_tls(nbd.TLS_REQUIRE)
    h.set_tls_certificates(str(tls_dir))
    h.connect_uri(uri)
    return h


def libnbd_close(h: Any) -> None:
    """Disconnects cleanly when the connection is still up (libnbd frees the handle when the
    last reference goes)."""
    nbd = import_libnbd()
    try:
        if h.aio_is_ready():
            h.shutdown()
    except nbd.Error:
        pass


def libnbd_write(uri: str, tls_dir: Path, offset: int, data: bytes) -> None:
    h = libnbd_open(uri, tls_dir)
    try:
        h.pwrite(data, offset)
        h.flush()
    finally:
        libnbd_close(h)


def libnbd_read(uri: str, tls_dir: Path, offset: int, length: int) -> bytes:
    h = libnbd_open(uri, tls_dir)
    try:
        return bytes(h.pread(length, offset))
    finally:
        libnbd_close(h)


def seconds_until_reads_fail(handles: dict[str, Any], since: float, limit: float = 5.0,
                             length: int = 4096) -> dict[str, float | None]:
    """Reads on every open handle until each fails; {name: seconds after `since` (a monotonic
    time) of its first failed read, or None if it still read after `limit` seconds}."""
    nbd = import_libnbd()
    left = dict(handles)
    out: dict[str, float | None] = {}
    while left:
        now = time.monotonic()
        if now - since > limit:
            out.update({name: None for name in left})
            break
        for name, h in list(left.items()):
            try:
                h.pread(length, 0)
            except nbd.Error:
                out[name] = time.monotonic() - since
                del left[name]
        time.sleep(0.005)
    return out


def sha_stream(seed: bytes, length: int) -> bytes:
    """`length` non-repeating bytes: SHA-256(seed || counter) blocks."""
    out = bytearray()
    i = 0
    while len(out) < length:
        out += hashlib.sha256(seed + i.to_bytes(8, "little")).digest()
        i += 1
    return bytes(out[:length])


# ------------------------------------------------------------------------------------------------
# Volume files (docs/disk-format.md)
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    key_id: str
    algorithm: str
    wrapped: bytes


@dataclass(frozen=True)
class Header:
    generation: int
    data_offset: int
    layers: tuple[Layer, ...]


def volume_file(server: Server, unique_id: str) -> Path:
    return server.data_dir / "disks" / f"{unique_id}.disk"


def read_header(path: Path) -> Header:
    """The current header slot (valid checksum, highest generation) of a volume file."""
    best: Header | None = None
    with open(path, "rb") as f:
        for slot in (0, 4096):
            f.seek(slot)
            raw = f.read(4096)
            if raw[:8] != b"SEALDISK":
                continue
            version, body_len, generation = struct.unpack_from("<IIQ", raw, 8)
            assert version == 1, f"{path}: header version {version}"
            if hashlib.sha256(raw[:24 + body_len]).digest() != raw[24 + body_len:56 + body_len]:
                continue
            body = raw[24:24 + body_len]
            (data_offset,) = struct.unpack_from("<Q", body, 28)
            count, p, layers = body[36], 37, []
            for _ in range(count):
                p += 1 + 32  # cipher id, key check value
                (k,) = struct.unpack_from("<H", body, p)
                key_id = body[p + 2:p + 2 + k].decode()
                p += 2 + k
                (a,) = struct.unpack_from("<H", body, p)
                algorithm = body[p + 2:p + 2 + a].decode()
                p += 2 + a
                (w,) = struct.unpack_from("<H", body, p)
                wrapped = body[p + 2:p + 2 + w]
                p += 2 + w
                layers.append(Layer(key_id, algorithm, wrapped))
            assert p == len(body), f"{path}: {len(body) - p} trailing header body bytes"
            if best is None or generation > best.generation:
                best = Header(generation, data_offset, tuple(layers))
    assert best is not None, f"{path}: no valid header slot"
    return best


def header_bytes(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(HEADER_BYTES)


def data_area(path: Path, data_offset: int) -> tuple[list[tuple[int, int]], str]:
    """The data extents (SEEK_DATA/SEEK_HOLE) from `data_offset` on and the SHA-256 of their
    bytes: equal results mean a byte-identical data area (holes read as zeros either way)."""
    digest = hashlib.sha256()
    extents = []
    with open(path, "rb") as f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        off = data_offset
        while off < size:
            try:
                start = os.lseek(fd, off, os.SEEK_DATA)
            except OSError:  # ENXIO: no data after off
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            extents.append((start, end))
            f.seek(start)
            left = end - start
            while left:
                chunk = f.read(min(left, 8 * MiB))
                digest.update(chunk)
                left -= len(chunk)
            off = end
    digest.update(str(os.stat(path).st_size).encode())
    return extents, digest.hexdigest()


def at_rest(path: Path) -> tuple[bytes, Header, str]:
    """A volume file's raw header, parsed header and data-area digest, for `assert_rewrapped`."""
    header = read_header(path)
    return header_bytes(path), header, data_area(path, header.data_offset)[1]


def assert_rewrapped(path: Path, before: tuple[bytes, Header, str], old_url: str,
                     new_url: str) -> None:
    """The customer layer of `path` moved from `old_url` to `new_url`; the platform layer (if
    any) and the data area are byte for byte what they were."""
    raw_before, header_before, digest_before = before
    header = read_header(path)
    assert header_bytes(path) != raw_before, f"{path.name}: the header did not change"
    assert header.generation > header_before.generation
    assert [layer.key_id for layer in header.layers] == \
        [new_url if layer.key_id == old_url else layer.key_id
         for layer in header_before.layers], header.layers
    for old, new in zip(header_before.layers, header.layers):
        if old.key_id.startswith(PLATFORM_KEY_ID):
            assert new == old, "the platform layer is untouched by a customer-key rotation"
        else:
            assert new.wrapped != old.wrapped
    assert data_area(path, header.data_offset)[1] == digest_before, \
        f"{path.name}: the rotation changed the data area"



def file_contains(path: Path, needle: bytes, chunk: int = 8 * MiB) -> bool:
    """Whether `needle` occurs in the data extents of a (sparse) file."""
    with open(path, "rb") as f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        off = 0
        while off < size:
            try:
                start = os.lseek(fd, off, os.SEEK_DATA)
            except OSError:
                return False
            end = os.lseek(fd, start, os.SEEK_HOLE)
            pos = start
            while pos < end:
                f.seek(pos)
                if needle in f.read(min(chunk, end - pos) + len(needle) - 1):
                    return True
                pos += chunk
            off = end
    return False


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, step: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(step)


# A disk's test data: two patterns and a random MiB, written and checked over NBD.
PATTERNS = [("0x5a", 0, "1M"), ("0xc3", 512 * MiB, "64k")]
RANDOM_AT = 8 * MiB


def write_data(uri: str, tls: Path, seed: bytes) -> None:
    qemu_io(uri, tls, [f"write -P {p} {off} {length}" for p, off, length in PATTERNS])
    libnbd_write(uri, tls, RANDOM_AT, sha_stream(seed, 1 * MiB))


def check_data(uri: str, tls: Path, seed: bytes) -> None:
    """The patterns, the random MiB and a never-written range (zeros) read back as written."""
    qemu_io(uri, tls, [f"read -P {p} {off} {length}" for p, off, length in PATTERNS]
            + ["read -P 0 2M 1M"], read_only=True)
    assert libnbd_read(uri, tls, RANDOM_AT, 1 * MiB) == sha_stream(seed, 1 * MiB), \
        f"the random MiB at {RANDOM_AT} of {uri} differs"
