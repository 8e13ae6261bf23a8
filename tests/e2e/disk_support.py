"""Helpers of the managed-disk end-to-end tests (test_disks.py): disks through the sealdisk CLI,
the NBD clients (qemu-io, qemu-img, nbdinfo, nbdcopy, libnbd's Python binding), a raw NBD client
for malformed input, the crash model, and byte scanning of the data directory.

Nothing here is a test.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import ssl
import struct
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from support import Result, Runner, Server

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
UNIT = 4096  # the XTS data unit
DISKS_API = "2025-01-02"
# Debian's python3-libnbd installs the `nbd` module here, for /usr/bin/python3 (CPython 3.11).
DEBIAN_DIST_PACKAGES = "/usr/lib/python3/dist-packages"


def tool(name: str) -> str:
    """The path of an NBD client tool; fails (never skips) when it is missing."""
    path = shutil.which(name)
    if path is None:
        raise AssertionError(
            f"{name} is not installed: apt-get install qemu-utils libnbd-bin (.ci/run does)"
        )
    return path


def import_libnbd() -> Any:
    """libnbd's Python binding (`nbd`), from Debian's python3-libnbd when the venv lacks it."""
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
                "apt-get install python3-libnbd (.ci/run does); it is built for Debian's CPython "
                "3.11, so the .venv must be a CPython 3.11 too"
            ) from err
    return nbd


# ------------------------------------------------------------------------------------------------
# Export URIs
# ------------------------------------------------------------------------------------------------

EXPORT_URI = re.compile(r"^(nbds?)://([A-Za-z0-9.\-]+):(\d+)/([A-Za-z0-9_\-]+)$")


@dataclass(frozen=True)
class Export:
    """`nbds://HOST:PORT/NAME`, as `accessSAS` gives it."""

    scheme: str
    host: str
    port: int
    name: str

    @classmethod
    def parse(cls, uri: str) -> "Export":
        m = EXPORT_URI.match(uri)
        assert m, f"not an NBD export URI: {uri!r}"
        return cls(m[1], m[2], int(m[3]), m[4])

    @property
    def uri(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}/{self.name}"

    def with_tls(self, tls_dir: Path) -> str:
        """The URI libnbd tools take: `nbds://...?tls-certificates=DIR`."""
        return f"{self.uri}?tls-certificates={tls_dir}"

    def on(self, endpoint: str) -> "Export":
        """The same export name on another endpoint (`nbds://localhost:PORT`, after a restart)."""
        return Export.parse(f"{endpoint.rstrip('/')}/{self.name}")

    def renamed(self, name: str) -> "Export":
        return Export(self.scheme, self.host, self.port, name)


def nbd_endpoint(server: Server) -> str:
    """The server's NBD endpoint from connection.json (`nbds://localhost:PORT`)."""
    return server.conn["nbdEndpoint"]


def client_tls_dir(server: Server, dest: Path) -> Path:
    """A client certificates directory holding only the deployment CA (`ca-cert.pem`): all an
    NBD client needs (qemu's tls-creds-x509 `dir=`, libnbd's `tls-certificates=`)."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(server.ca_file, dest / "ca-cert.pem")
    return dest


# ------------------------------------------------------------------------------------------------
# Disks through the sealdisk CLI
# ------------------------------------------------------------------------------------------------


class Disks:
    """`sealdisk disk ...` for one server, plus where a disk's volume file lives."""

    def __init__(self, cli: Runner, server: Server, tls_dir: Path):
        self.cli = cli
        self.server = server
        self.tls_dir = tls_dir

    def create(self, group: str, name: str, size_gb: int = 1) -> dict[str, Any]:
        return self.cli.json("disk", "create", "-g", group, "-n", name, "--size-gb", str(size_gb),
                             "-l", "eastus")

    def show(self, group: str, name: str) -> dict[str, Any]:
        return self.cli.json("disk", "show", "-g", group, "-n", name)

    def grant(self, group: str, name: str, access: str = "Write", seconds: int = 3600) -> Export:
        sas = self.cli.run("disk", "grant-access", "-g", group, "-n", name, "--access-level",
                           access, "--duration-in-seconds", str(seconds),
                           "--query", "accessSAS", "-o", "tsv").stdout.strip()
        return Export.parse(sas)

    def revoke(self, group: str, name: str) -> Result:
        return self.cli.run("disk", "revoke-access", "-g", group, "-n", name)

    def volume_file(self, disk: dict[str, Any]) -> Path:
        return self.server.data_dir / "disks" / f"{disk['uniqueId']}.disk"


# ------------------------------------------------------------------------------------------------
# NBD client tools
# ------------------------------------------------------------------------------------------------


def run_tool(argv: list[str], timeout: float = 120, check: bool = True) -> Result:
    try:
        proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as err:
        raise AssertionError(f"`{' '.join(map(str, argv))}` did not finish within {timeout}s") from err
    result = Result([str(a) for a in argv], proc.returncode, proc.stdout, proc.stderr)
    if check and proc.returncode != 0:
        raise AssertionError(result.describe())
    return result


def qemu_tls_object(tls_dir: Path, ident: str = "tls0") -> str:
    return f"tls-creds-x509,id={ident},endpoint=client,dir={tls_dir}"


def qemu_nbd_opts(export: Export, prefix: str = "", tls: str = "tls0") -> str:
    """`driver=nbd,...` for --image-opts (`prefix` "file." puts it under another driver)."""
    p = prefix
    return (f"{p}driver=nbd,{p}host={export.host},{p}port={export.port},"
            f"{p}export={export.name},{p}tls-creds={tls}")


def qemu_io(export: Export, tls_dir: Path, commands: Iterable[str], read_only: bool = False,
            check: bool = True, timeout: float = 120) -> Result:
    """One qemu-io process (one NBD connection over TLS) running `commands` in order. With
    `check`, every command must succeed, patterns included."""
    argv = [tool("qemu-io"), "--object", qemu_tls_object(tls_dir), "--image-opts"]
    if read_only:
        argv.append("-r")
    argv.append(qemu_nbd_opts(export))
    for c in commands:
        argv += ["-c", c]
    result = run_tool(argv, timeout=timeout, check=False)
    if check:
        output = result.stdout + result.stderr
        assert result.returncode == 0 and "Pattern verification failed" not in output \
            and "failed" not in output.lower(), result.describe()
    return result


def nbdinfo_json(export: Export, tls_dir: Path) -> dict[str, Any]:
    import json

    return json.loads(run_tool([tool("nbdinfo"), "--json", export.with_tls(tls_dir)]).stdout)


def nbdinfo_map(export: Export, tls_dir: Path) -> list[dict[str, Any]]:
    """`nbdinfo --map --json`: base:allocation extents (type bit 0 hole, bit 1 zero)."""
    import json

    return json.loads(run_tool([tool("nbdinfo"), "--map", "--json", export.with_tls(tls_dir)]).stdout)


def map_state(extents: list[dict[str, Any]], start: int, end: int) -> set[str]:
    """The descriptions (`data`, `hole,zero`, ...) the map gives for any byte of [start, end)."""
    out = set()
    for e in extents:
        if e["offset"] < end and e["offset"] + e["length"] > start:
            out.add(e["description"])
    return out


# ------------------------------------------------------------------------------------------------
# libnbd
# ------------------------------------------------------------------------------------------------


def libnbd_connect(export: Export, tls_dir: Path, strict: bool = True) -> Any:
    """A libnbd handle connected over TLS (TLS required, the deployment CA only). Without
    `strict`, libnbd sends requests it would otherwise refuse itself (a write to a read-only
    export), so the server's answer is what is tested."""
    nbd = import_libnbd()
    h = nbd.NBD()
    h.set_tls(nbd.TLS_REQUIRE)
    h.set_tls_certificates(str(tls_dir))
    if not strict:
        h.set_strict_mode(0)
    h.connect_uri(export.uri)
    return h


def sha_stream(seed: bytes, length: int) -> bytes:
    """`length` non-repeating bytes: SHA-256(seed || counter) blocks."""
    out = bytearray()
    i = 0
    while len(out) < length:
        out += hashlib.sha256(seed + i.to_bytes(8, "little")).digest()
        i += 1
    return bytes(out[:length])


def constant_runs(model: bytes | bytearray, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """Maximal runs (offset, length, byte) of equal bytes in model[start:end]."""
    i = start
    while i < end:
        b = model[i]
        j = i + 1
        while j < end and model[j] == b:
            j += 1
        yield i, j - i, b
        i = j


# ------------------------------------------------------------------------------------------------
# Bytes at rest
# ------------------------------------------------------------------------------------------------


def data_extents(path: Path) -> list[tuple[int, int]]:
    """The [start, end) ranges of a (sparse) file that hold data (SEEK_DATA / SEEK_HOLE)."""
    out = []
    with open(path, "rb") as f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        off = 0
        while off < size:
            try:
                start = os.lseek(fd, off, os.SEEK_DATA)
            except OSError:  # ENXIO: no data after off
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            out.append((start, end))
            off = end
    return out


def read_range(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


def volume_data_offset(path: Path) -> int:
    """`data_offset` of a volume file, from its current header slot (docs/disk-format.md)."""
    best = None
    with open(path, "rb") as f:
        for slot in (0, 4096):
            f.seek(slot)
            raw = f.read(4096)
            if raw[:8] != b"SEALDISK":
                continue
            version, body_len, generation = struct.unpack_from("<IIQ", raw, 8)
            assert version == 1, f"{path}: header version {version}"
            body = raw[24:24 + body_len]
            assert hashlib.sha256(raw[:24 + body_len]).digest() == raw[24 + body_len:56 + body_len], \
                f"{path}: header slot at {slot} fails its checksum"
            (data_offset,) = struct.unpack_from("<Q", body, 28)
            if best is None or generation > best[0]:
                best = (generation, data_offset)
    assert best is not None, f"{path}: no header slot"
    return best[1]


NON_ZERO = re.compile(rb"[^\x00]")


class WindowScanner:
    """Finds any `width`-byte window of a secret (at every 1-byte step) in other bytes."""

    def __init__(self, secret: bytes, width: int = 16):
        self.width = width
        self.windows = {secret[i:i + width] for i in range(len(secret) - width + 1)}
        self.zero = bytes(width)
        assert self.zero not in self.windows, "choose a secret without a zero window"

    def find(self, data: bytes) -> int | None:
        w, windows = self.width, self.windows
        i, n = 0, len(data) - w + 1
        while i < n:
            # Zero runs (sparse-file padding, empty pages) cannot match: skip them quickly.
            if data[i] == 0 and data[i:i + w] == self.zero:
                m = NON_ZERO.search(data, i + w)
                if m is None:
                    return None
                i = max(i + 1, m.start() - w + 1)
                continue
            if data[i:i + w] in windows:
                return i
            i += 1
        return None

    def scan_file(self, path: Path, chunk: int = 8 * MiB) -> tuple[int | None, int]:
        """(offset of the first match or None, bytes scanned) over the file's data extents."""
        scanned = 0
        with open(path, "rb") as f:
            for start, end in data_extents(path):
                off = start
                while off < end:
                    f.seek(off)
                    data = f.read(min(chunk, end - off) + self.width - 1)
                    hit = self.find(data)
                    if hit is not None:
                        return off + hit, scanned + hit
                    scanned += min(chunk, end - off)
                    off += chunk
        return None, scanned


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


# ------------------------------------------------------------------------------------------------
# A raw NBD client (fixed newstyle), for input no well-behaved client sends
# ------------------------------------------------------------------------------------------------

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
OPTION_REPLY_MAGIC = 0x3E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698

OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_STARTTLS, OPT_INFO, OPT_GO = 1, 2, 3, 5, 6, 7
REP_ACK, REP_SERVER, REP_INFO = 1, 2, 3
REP_ERR_UNSUP, REP_ERR_POLICY, REP_ERR_INVALID = 0x80000001, 0x80000002, 0x80000003
REP_ERR_TLS_REQD, REP_ERR_UNKNOWN = 0x80000005, 0x80000006
INFO_EXPORT, INFO_BLOCK_SIZE = 0, 3
CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH = 0, 1, 2, 3
EPERM, EIO, EINVAL, ENOSPC, ESHUTDOWN = 1, 5, 22, 28, 108


class Closed(Exception):
    """The server closed the connection."""


@dataclass
class OptionReply:
    option: int
    kind: int
    data: bytes


@dataclass
class RawNbd:
    """One TCP connection speaking NBD byte by byte (simple replies only)."""

    host: str
    port: int
    timeout: float = 5.0
    sock: Any = None
    greeting_flags: int = 0
    export_size: int | None = None
    transmission_flags: int | None = None
    _cookie: int = field(default=0)

    def __post_init__(self) -> None:
        self.sock = socket.create_connection((self.host, self.port), timeout=self.timeout)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> "RawNbd":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- bytes ----

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            try:
                chunk = self.sock.recv(n - len(buf))
            except (ConnectionResetError, ssl.SSLError, BrokenPipeError) as err:
                raise Closed(f"{type(err).__name__}: {err}") from err
            if not chunk:
                raise Closed(f"EOF after {len(buf)} of {n} bytes")
            buf += chunk
        return bytes(buf)

    def closed_by_server(self, within: float = 5.0) -> bool:
        """Whether the server closes the connection (EOF or reset) within `within` seconds;
        anything it sends first is read and dropped."""
        self.sock.settimeout(within)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
            return True
        except (socket.timeout, TimeoutError):
            return False
        finally:
            self.sock.settimeout(self.timeout)

    # ---- handshake ----

    def greeting(self) -> int:
        raw = self.recv_exact(18)
        magic, opt_magic, flags = struct.unpack(">QQH", raw)
        assert magic == NBDMAGIC and opt_magic == IHAVEOPT, f"not a fixed newstyle greeting: {raw!r}"
        self.greeting_flags = flags
        return flags

    def client_flags(self, flags: int = 0b11) -> None:
        """FIXED_NEWSTYLE | NO_ZEROES by default."""
        self.send(struct.pack(">I", flags))

    def option(self, code: int, data: bytes = b"", declared_len: int | None = None) -> None:
        length = len(data) if declared_len is None else declared_len
        self.send(struct.pack(">QII", IHAVEOPT, code, length) + data)

    def option_reply(self) -> OptionReply:
        magic, option, kind, length = struct.unpack(">QIII", self.recv_exact(20))
        assert magic == OPTION_REPLY_MAGIC, f"bad option reply magic {magic:#x}"
        return OptionReply(option, kind, self.recv_exact(length) if length else b"")

    def replies_until_final(self) -> list[OptionReply]:
        """Option replies up to and including the first that is not INFO/SERVER/META."""
        out = []
        while True:
            r = self.option_reply()
            out.append(r)
            if r.kind not in (REP_SERVER, REP_INFO, 4):
                return out

    def starttls(self, ca_file: Path) -> None:
        self.option(OPT_STARTTLS)
        r = self.option_reply()
        assert (r.option, r.kind) == (OPT_STARTTLS, REP_ACK), r
        ctx = ssl.create_default_context(cafile=str(ca_file))
        self.sock = ctx.wrap_socket(self.sock, server_hostname=self.host)

    def handshake_tls(self, ca_file: Path) -> None:
        self.greeting()
        self.client_flags()
        self.starttls(ca_file)

    @staticmethod
    def go_data(name: str, infos: tuple[int, ...] = ()) -> bytes:
        raw = name.encode()
        return (struct.pack(">I", len(raw)) + raw + struct.pack(">H", len(infos))
                + b"".join(struct.pack(">H", i) for i in infos))

    def go(self, name: str, code: int = OPT_GO) -> list[OptionReply]:
        """NBD_OPT_GO (or INFO); on success remembers the export size and flags."""
        self.option(code, self.go_data(name, (INFO_BLOCK_SIZE,)))
        replies = self.replies_until_final()
        for r in replies:
            if r.kind == REP_INFO and struct.unpack(">H", r.data[:2])[0] == INFO_EXPORT:
                _, self.export_size, self.transmission_flags = struct.unpack(">HQH", r.data)
        return replies

    # ---- transmission ----

    def request(self, kind: int, offset: int, length: int, flags: int = 0,
                payload: bytes = b"") -> int:
        self._cookie += 1
        self.send(struct.pack(">IHHQQI", REQUEST_MAGIC, flags, kind, self._cookie, offset, length)
                  + payload)
        return self._cookie

    def simple_reply(self, data_len: int = 0) -> tuple[int, int, bytes]:
        """(errno, cookie, data); data is read only when errno is 0."""
        magic, errno, cookie = struct.unpack(">IIQ", self.recv_exact(16))
        assert magic == SIMPLE_REPLY_MAGIC, f"bad reply magic {magic:#x}"
        data = self.recv_exact(data_len) if errno == 0 and data_len else b""
        return errno, cookie, data

    def read(self, offset: int, length: int) -> tuple[int, bytes]:
        cookie = self.request(CMD_READ, offset, length)
        errno, got, data = self.simple_reply(length)
        assert got == cookie, f"reply for cookie {got}, expected {cookie}"
        return errno, data


def raw_tls_session(export: Export, ca_file: Path) -> RawNbd:
    """A raw connection in the transmission phase of `export` (TLS, simple replies)."""
    raw = RawNbd(export.host, export.port)
    raw.handshake_tls(ca_file)
    replies = raw.go(export.name)
    assert replies[-1].kind == REP_ACK, f"GO {export.name} refused: {replies}"
    return raw


# ------------------------------------------------------------------------------------------------
# Crash model
# ------------------------------------------------------------------------------------------------


class UnitHistory:
    """What each 4096-byte unit of a region may hold after a crash.

    Per unit: the chain of contents it had, in order (index 0: what the region held when the
    round began), and the index of the newest content known durable (its write completed before a
    flush that was acknowledged, or it was a FUA write that was acknowledged). Writes to one unit
    never overlap in time, so after a crash a unit must hold its durable content or a later one:
    anything older is a lost flushed write, anything else is a torn or corrupted unit.
    """

    def __init__(self, base: bytes):
        assert len(base) % UNIT == 0
        self.count = len(base) // UNIT
        self.chain: list[list[bytes]] = [[base[u * UNIT:(u + 1) * UNIT]] for u in range(self.count)]
        self.durable = [0] * self.count

    def units(self, offset: int, length: int) -> range:
        return range(offset // UNIT, (offset + length + UNIT - 1) // UNIT)

    def write(self, offset: int, data: bytes) -> dict[int, int]:
        """Records an issued write; returns {unit: chain index of its new content}."""
        touched = {}
        for u in self.units(offset, len(data)):
            cur = bytearray(self.chain[u][-1])
            lo = max(offset, u * UNIT)
            hi = min(offset + len(data), (u + 1) * UNIT)
            cur[lo - u * UNIT:hi - u * UNIT] = data[lo - offset:hi - offset]
            self.chain[u].append(bytes(cur))
            touched[u] = len(self.chain[u]) - 1
        return touched

    def made_durable(self, touched: dict[int, int]) -> None:
        for u, idx in touched.items():
            self.durable[u] = max(self.durable[u], idx)

    def check(self, actual: bytes) -> list[str]:
        problems = []
        for u in range(self.count):
            got = actual[u * UNIT:(u + 1) * UNIT]
            chain, d = self.chain[u], self.durable[u]
            if any(got == c for c in chain[d:]):
                continue
            older = [i for i in range(d) if chain[i] == got]
            if older:
                problems.append(f"unit {u}: lost flushed data: holds version {older[-1]}, "
                                f"version {d} was durable (versions 0..{len(chain) - 1})")
            else:
                problems.append(f"unit {u}: holds none of its versions {d}..{len(chain) - 1} "
                                f"(torn or corrupted; first bytes {got[:16].hex()})")
        return problems
