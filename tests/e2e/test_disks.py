"""Managed disks end to end: `sealdisk disk` and the real `az` create and grant disks, and real NBD
clients (qemu-io, qemu-img, nbdinfo, nbdcopy, libnbd) read and write them over TLS with nothing
but the deployment CA. Bytes at rest are checked for plaintext, a kill -9 during writes for lost
flushed writes and torn units, revocation for live connections, the NBD port for hostile input,
and ARM for Azure's error shapes."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from disk_support import (
    CMD_FLUSH,
    CMD_READ,
    CMD_WRITE,
    DISKS_API,
    EINVAL,
    ENOSPC,
    GiB,
    KiB,
    MiB,
    OPT_EXPORT_NAME,
    OPT_GO,
    OPT_INFO,
    OPT_LIST,
    REP_ACK,
    REP_ERR_TLS_REQD,
    REP_ERR_UNKNOWN,
    REP_ERR_UNSUP,
    REP_INFO,
    UNIT,
    Disks,
    Export,
    RawNbd,
    UnitHistory,
    WindowScanner,
    client_tls_dir,
    constant_runs,
    data_extents,
    files_under,
    import_libnbd,
    libnbd_connect,
    map_state,
    nbd_endpoint,
    nbdinfo_json,
    nbdinfo_map,
    qemu_io,
    qemu_nbd_opts,
    qemu_tls_object,
    raw_tls_session,
    read_range,
    run_tool,
    sha_stream,
    tool,
    volume_data_offset,
)
from support import RG_API, Runner, Server, azure_error, cli_runner, show

DISK_SIZE = 1 * GiB
PLATFORM_KEY = "EncryptionAtRestWithPlatformKey"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def tls_dir(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return client_tls_dir(server, tmp_path_factory.mktemp("nbd-tls"))


@pytest.fixture(scope="module")
def disks(cli_session: Runner, server: Server, tls_dir: Path) -> Disks:
    return Disks(cli_session, server, tls_dir)


@pytest.fixture(scope="module")
def group(cli_session: Runner) -> str:
    name = unique("disks")
    cli_session.run("group", "create", "-n", name, "-l", "eastus", "-o", "none")
    return name


@pytest.fixture
def fresh(fresh_server: Server, tmp_path: Path) -> tuple[Disks, str]:
    """A server of the test's own (for restarts and kills), its CLI logged in, and a group."""
    cli = cli_runner(tmp_path / "cli-config", fresh_server)
    cli.run("login", "--connection-file", str(fresh_server.connection_file))
    cli.run("group", "create", "-n", "rg", "-l", "eastus", "-o", "none")
    return Disks(cli, fresh_server, client_tls_dir(fresh_server, tmp_path / "nbd-tls")), "rg"


def new_disk(disks: Disks, group: str, prefix: str, access: str = "Write",
             seconds: int = 3600) -> tuple[dict[str, Any], Export]:
    name = unique(prefix)
    disk = disks.create(group, name)
    return disk, disks.grant(group, name, access, seconds)


class Model:
    """The expected bytes of a few regions of a disk (everything else never written: zeros)."""

    def __init__(self, *regions: tuple[int, int]):
        self.regions = [(start, bytearray(end - start)) for start, end in regions]

    def _region(self, offset: int, length: int) -> tuple[int, bytearray]:
        for start, buf in self.regions:
            if start <= offset and offset + length <= start + len(buf):
                return start, buf
        raise AssertionError(f"[{offset}, +{length}) is outside the modelled regions")

    def fill(self, offset: int, length: int, byte: int) -> None:
        start, buf = self._region(offset, length)
        buf[offset - start:offset - start + length] = bytes([byte]) * length

    def read_commands(self) -> list[str]:
        """qemu-io `read -P` for every run of equal bytes of every region."""
        out = []
        for start, buf in self.regions:
            for off, length, byte in constant_runs(buf, 0, len(buf)):
                out.append(f"read -P 0x{byte:02x} {start + off} {length}")
        return out

    def assert_matches(self, h: Any) -> None:
        """Reads every region through a libnbd handle and compares byte for byte."""
        for start, buf in self.regions:
            got = h.pread(len(buf), start)
            if got != buf:
                first = next(i for i in range(len(buf)) if got[i] != buf[i])
                raise AssertionError(
                    f"disk differs from the model at byte {start + first}: "
                    f"got {bytes(got[first:first + 8]).hex()}, want {bytes(buf[first:first + 8]).hex()}"
                )


# ------------------------------------------------------------------------------------------------
# 1. Reads and writes through qemu-io
# ------------------------------------------------------------------------------------------------

# (offset, length, pattern byte), applied in order; later writes overwrite parts of earlier ones.
IO_WRITES = [
    # aligned: one unit, units apart, 64 KiB, 1 MiB, 3 MiB in one request
    (0, 4 * KiB, 0x01),
    (8 * KiB, 4 * KiB, 0x02),
    (64 * KiB, 64 * KiB, 0x03),
    (1 * MiB, 1 * MiB, 0x04),
    (3 * MiB, 3 * MiB, 0x05),
    # unaligned, spanning many units; one unit long but straddling two units
    (6 * MiB + 1234, 70000, 0x06),
    (6 * MiB + 200_007, 4 * KiB, 0x07),
    # sub-sector, alone in a unit: 1, 100, 513 bytes; across a 512 boundary; across a unit
    # boundary; a unit plus one byte on either side
    (7 * MiB + 100, 1, 0x08),
    (7 * MiB + 1 * UNIT + 5, 100, 0x09),
    (7 * MiB + 2 * UNIT + 300, 513, 0x0A),
    (7 * MiB + 3 * UNIT + 511, 2, 0x0B),
    (7 * MiB + 5 * UNIT - 50, 100, 0x0C),
    (7 * MiB + 7 * UNIT - 1, UNIT + 2, 0x0D),
    # read-modify-write inside data that is already there
    (9 * MiB, 16 * KiB, 0x11),
    (9 * MiB + 5000, 1, 0x22),
    (9 * MiB + 4090, 100, 0x33),
    (9 * MiB + 2 * UNIT + 1000, 513, 0x44),
    (9 * MiB + 3 * UNIT - 512, 1024, 0x55),
    (9 * MiB + 700, 3000, 0x56),
    # the end of the disk
    (DISK_SIZE - UNIT - 700, 300, 0x65),
    (DISK_SIZE - UNIT, UNIT, 0x66),
    (DISK_SIZE - 1, 1, 0x77),
]


def test_qemu_io_reads_back_every_write_at_many_offsets_and_sizes(disks: Disks, group: str):
    _, export = new_disk(disks, group, "io")
    model = Model((0, 10 * MiB), (DISK_SIZE - 64 * KiB, DISK_SIZE))
    writes = []
    for offset, length, byte in IO_WRITES:
        writes.append(f"write -P 0x{byte:02x} {offset} {length}")
        model.fill(offset, length, byte)
    # Each written range read back right away, in the same connection.
    immediate = [f"read -P 0x{b:02x} {o} {n}" for o, n, b in IO_WRITES[:5]]
    result = qemu_io(export, disks.tls_dir, writes + immediate + ["flush"])
    assert result.stdout.count("wrote ") == len(IO_WRITES), result.describe()

    # A new connection: every run of equal bytes, neighbours of each write included, reads back
    # as the model says (untouched bytes as zeros).
    reads = model.read_commands()
    assert len(reads) > len(IO_WRITES)
    result = qemu_io(export, disks.tls_dir, reads)
    assert result.stdout.count("read ") == len(reads), result.describe()

    # And byte for byte through libnbd.
    model.assert_matches(libnbd_connect(export, disks.tls_dir))


def test_concurrent_sub_unit_writes_into_the_same_units_are_all_kept(disks: Disks, group: str):
    """512 writes of 512 bytes, 8 to each of 64 units, in flight together in random order: the
    server's read-modify-write of a unit must not lose a neighbour's sector."""
    nbd = import_libnbd()
    _, export = new_disk(disks, group, "rmw")
    h = libnbd_connect(export, disks.tls_dir)
    base = 2 * MiB
    units = 64
    content = sha_stream(b"concurrent sectors", units * UNIT)
    order = list(range(units * 8))
    random.Random(7).shuffle(order)
    buffers = {}
    for sector in order:
        off = sector * 512
        buffers[sector] = nbd.Buffer.from_bytearray(content[off:off + 512])
        h.aio_pwrite(buffers[sector], base + off)
    assert h.aio_in_flight() > 1
    while h.aio_in_flight() > 0:
        h.poll(-1)
    h.flush()
    assert h.pread(units * UNIT, base) == content
    # And from another connection.
    assert libnbd_connect(export, disks.tls_dir).pread(units * UNIT, base) == content


def test_a_read_grant_refuses_writes(disks: Disks, group: str):
    nbd = import_libnbd()
    name = unique("ro")
    disks.create(group, name)
    writable = disks.grant(group, name, "Write")
    qemu_io(writable, disks.tls_dir, ["write -P 0x5a 0 64k"])
    old = libnbd_connect(writable, disks.tls_dir)
    assert old.pread(512, 0) == b"\x5a" * 512
    export = disks.grant(group, name, "Read", 600)
    # The new grant replaced the Write grant: its open connection is closed, its name refused.
    with pytest.raises(nbd.Error):
        old.pread(512, 0)
    with pytest.raises(nbd.Error):
        libnbd_connect(writable, disks.tls_dir)

    # qemu refuses to open a read-only export for writing ...
    rw = qemu_io(export, disks.tls_dir, ["write -P 0xcd 0 4k"], check=False)
    assert rw.returncode != 0, rw.describe()
    assert "wrote" not in rw.stdout, rw.describe()
    # ... and a read-only open cannot write but reads.
    ro = qemu_io(export, disks.tls_dir, ["write -P 0xcd 0 4k"], read_only=True, check=False)
    assert ro.returncode != 0 and "wrote" not in ro.stdout, ro.describe()
    qemu_io(export, disks.tls_dir, ["read -P 0x5a 0 64k", "read -P 0 64k 64k"], read_only=True)

    info = nbdinfo_json(export, disks.tls_dir)["exports"][0]
    assert info["is_read_only"] is True, info
    assert info["can_trim"] is False and info["can_zero"] is False, info

    # libnbd without its own checks sends the requests: the server answers EPERM to each.
    h = libnbd_connect(export, disks.tls_dir, strict=False)
    for what, call in (("write", lambda: h.pwrite(b"\xcd" * 4096, 0)),
                       ("trim", lambda: h.trim(4096, 0)),
                       ("write-zeroes", lambda: h.zero(4096, 0)),
                       ("FUA write", lambda: h.pwrite(b"\xcd" * 512, 512, nbd.CMD_FLAG_FUA))):
        with pytest.raises(nbd.Error) as info_err:
            call()
        assert info_err.value.errnum == errno.EPERM, f"{what}: {info_err.value.string}"
        assert "command failed" in info_err.value.string, f"{what}: refused by libnbd itself"
    assert h.pread(64 * KiB, 0) == b"\x5a" * (64 * KiB)


# ------------------------------------------------------------------------------------------------
# 2. Whole-image copies
# ------------------------------------------------------------------------------------------------


def sparse_image(path: Path, size: int, seed: int) -> bytes:
    """A raw image of random extents with holes between them; returns its content."""
    rng = random.Random(seed)
    content = bytearray(size)
    with open(path, "wb") as f:
        f.truncate(size)
        off = rng.randrange(0, 64 * KiB)
        while off < size:
            length = min(rng.randrange(1, 400 * KiB), size - off)
            data = rng.randbytes(length)
            f.seek(off)
            f.write(data)
            content[off:off + length] = data
            off += length + rng.randrange(8 * KiB, 700 * KiB)  # a hole
    return bytes(content)


def holes_of(content: bytes, unit: int = UNIT) -> list[tuple[int, int]]:
    """Whole units of `content` that are zero, merged into ranges."""
    out: list[tuple[int, int]] = []
    zero = bytes(unit)
    for off in range(0, len(content) - unit + 1, unit):
        if content[off:off + unit] == zero:
            if out and out[-1][1] == off:
                out[-1] = (out[-1][0], off + unit)
            else:
                out.append((off, off + unit))
    return out


def assert_zero_beyond(path: Path, offset: int) -> None:
    for start, end in data_extents(path):
        if end > offset:
            lo = max(start, offset)
            assert read_range(path, lo, end - lo).count(0) == end - lo, \
                f"{path}: non-zero bytes in [{lo}, {end}) beyond the copied image"


def test_qemu_img_convert_copies_an_image_in_and_out_bit_exact(disks: Disks, group: str,
                                                                 tmp_path: Path):
    size = 6 * MiB + 512
    src = tmp_path / "src.raw"
    content = sparse_image(src, size, seed=11)
    _, export = new_disk(disks, group, "convert")
    # Dirty the disk first, so the holes of the image have to be written as zeros.
    qemu_io(export, disks.tls_dir, [f"write -P 0xee 0 {8 * MiB}"])

    tls = ["--object", qemu_tls_object(disks.tls_dir)]
    run_tool([tool("qemu-img"), "convert", "-n", *tls, "-f", "raw", src,
              "--target-image-opts", qemu_nbd_opts(export)])
    out = tmp_path / "out.raw"
    run_tool([tool("qemu-img"), "convert", *tls, "-O", "raw", "--image-opts",
              f"driver=raw,size={size}," + qemu_nbd_opts(export, prefix="file."), out])
    assert out.stat().st_size == size
    assert hashlib.sha256(out.read_bytes()).hexdigest() == hashlib.sha256(content).hexdigest()

    # Past the image the disk still holds the 0xee written before; holes of the image read as zeros.
    qemu_io(export, disks.tls_dir, [f"read -P 0xee {size} {8 * MiB - size}"])
    extents = nbdinfo_map(export, disks.tls_dir)
    holes = holes_of(content)
    assert holes, "the image should have holes"
    for start, end in holes:
        assert "data" not in map_state(extents, start, end), \
            f"hole [{start}, {end}) of the image is allocated on the disk: {extents[:20]}"


def test_nbdcopy_copies_an_image_in_out_and_between_disks(disks: Disks, group: str,
                                                          tmp_path: Path):
    size = 5 * MiB
    src = tmp_path / "src.raw"
    content = sparse_image(src, size, seed=12)
    a_name, b_name = unique("copy-a"), unique("copy-b")
    disks.create(group, a_name)
    disks.create(group, b_name)
    a = disks.grant(group, a_name, "Write")
    b = disks.grant(group, b_name, "Write")
    nbdcopy = tool("nbdcopy")

    run_tool([nbdcopy, src, a.with_tls(disks.tls_dir)])
    out = tmp_path / "a.raw"
    run_tool([nbdcopy, a.with_tls(disks.tls_dir), out])
    assert out.stat().st_size == DISK_SIZE
    assert hashlib.sha256(read_range(out, 0, size)).hexdigest() == hashlib.sha256(content).hexdigest()
    assert_zero_beyond(out, size)

    # Disk to disk, the source through a Read grant.
    a_read = disks.grant(group, a_name, "Read", 600)
    run_tool([nbdcopy, a_read.with_tls(disks.tls_dir), b.with_tls(disks.tls_dir)])
    out_b = tmp_path / "b.raw"
    run_tool([nbdcopy, b.with_tls(disks.tls_dir), out_b])
    assert hashlib.sha256(read_range(out_b, 0, size)).hexdigest() == hashlib.sha256(content).hexdigest()
    assert_zero_beyond(out_b, size)


# ------------------------------------------------------------------------------------------------
# 3. nbdinfo
# ------------------------------------------------------------------------------------------------


def test_nbdinfo_shows_size_block_sizes_tls_and_base_allocation(disks: Disks, group: str):
    _, export = new_disk(disks, group, "info")
    info = nbdinfo_json(export, disks.tls_dir)
    assert info["protocol"] == "newstyle-fixed", info
    assert info["TLS"] is True, info
    assert info["structured"] is True, info
    assert len(info["exports"]) == 1, info
    e = info["exports"][0]
    assert e["export-name"] == export.name
    assert e["export-size"] == DISK_SIZE
    assert e["block_size_minimum"] == 512
    assert e["block_size_preferred"] == 4096
    assert e["block_size_maximum"] == 32 * MiB
    assert "base:allocation" in e["contexts"], e
    assert e["is_read_only"] is False
    for cap in ("can_flush", "can_fua", "can_trim", "can_zero", "can_multi_conn"):
        assert e[cap] is True, (cap, e)


def test_nbdinfo_map_shows_holes_where_never_written_and_data_where_written(disks: Disks,
                                                                           group: str):
    _, export = new_disk(disks, group, "map")
    qemu_io(export, disks.tls_dir, [
        f"write -P 0x31 {1 * MiB} 64k",
        f"write -P 0x32 {8 * MiB + UNIT} 4k",
        f"write -P 0x33 {16 * MiB + 512} 512",  # one sector: its whole unit holds ciphertext
    ])
    extents = nbdinfo_map(export, disks.tls_dir)
    # The map covers the disk exactly, extent after extent.
    pos = 0
    for e in extents:
        assert e["offset"] == pos, extents
        pos += e["length"]
    assert pos == DISK_SIZE, extents
    expect = [
        ((0, 1 * MiB), {"hole,zero"}),
        ((1 * MiB, 1 * MiB + 64 * KiB), {"data"}),
        ((1 * MiB + 64 * KiB, 8 * MiB + UNIT), {"hole,zero"}),
        ((8 * MiB + UNIT, 8 * MiB + 2 * UNIT), {"data"}),
        ((8 * MiB + 2 * UNIT, 16 * MiB), {"hole,zero"}),
        ((16 * MiB, 16 * MiB + UNIT), {"data"}),
        ((16 * MiB + UNIT, DISK_SIZE), {"hole,zero"}),
    ]
    for (start, end), want in expect:
        assert map_state(extents, start, end) == want, (start, end, extents)


# ------------------------------------------------------------------------------------------------
# 4. Trim and write-zeroes
# ------------------------------------------------------------------------------------------------


def test_trim_and_write_zeroes_read_back_as_zeros(disks: Disks, group: str):
    _, export = new_disk(disks, group, "zero")
    model = Model((0, 3 * MiB))
    model.fill(0, 3 * MiB, 0x5C)
    zeroed = [
        ("discard", 128 * KiB, 64 * KiB),          # whole units
        ("discard", 40 * UNIT + 512, 512),         # one sector inside a unit
        ("discard", 1 * MiB, 1 * MiB),             # 1 MiB
        ("write -z", 256 * KiB, 64 * KiB),          # zeros kept allocated (NO_HOLE)
        ("write -z", 300_000, 1000),               # unaligned: qemu zeroes head and tail
        ("write -z -u", 512 * KiB, 128 * KiB),      # zeros that may be punched
        ("write -z -u", 2 * MiB + 3 * UNIT + 1024, 2048),  # sub-unit
    ]
    commands = ["write -P 0x5c 0 3M"]
    for op, offset, length in zeroed:
        commands.append(f"{op} {offset} {length}")
        model.fill(offset, length, 0)
    commands.append("flush")
    qemu_io(export, disks.tls_dir, commands)

    qemu_io(export, disks.tls_dir, model.read_commands())
    model.assert_matches(libnbd_connect(export, disks.tls_dir))
    # Whole units that were discarded or zeroed with unmap allowed are holes again.
    extents = nbdinfo_map(export, disks.tls_dir)
    for start, end in ((128 * KiB, 192 * KiB), (1 * MiB, 2 * MiB), (512 * KiB, 640 * KiB)):
        assert map_state(extents, start, end) == {"hole,zero"}, (start, end, extents)


# ------------------------------------------------------------------------------------------------
# 5. Restart
# ------------------------------------------------------------------------------------------------


def test_data_and_grants_survive_a_restart(fresh: tuple[Disks, str]):
    disks, group = fresh
    srv = disks.server
    disks.create(group, "keep")
    export = disks.grant(group, "keep", "Write", 3600)
    data = sha_stream(b"restart", 4 * MiB)
    offset = 5 * MiB + 512  # not unit-aligned: the first and last units are partly written
    h = libnbd_connect(export, disks.tls_dir)
    h.pwrite(data, offset)
    h.flush()
    del h

    assert srv.stop() == 0, srv.log_tail()
    srv.start(listen=f"localhost:{srv.port}")  # the NBD port is a new ephemeral one
    moved = export.on(nbd_endpoint(srv))
    # The grant survived: the same export name on the new endpoint reads the same bytes.
    assert disks.show(group, "keep")["diskState"] == "ActiveSAS"
    h = libnbd_connect(moved, disks.tls_dir)
    assert h.pread(len(data), offset) == data
    assert h.pread(512, offset - 512) == bytes(512)
    del h

    # A new grant replaces it, on the new endpoint.
    regranted = disks.grant(group, "keep", "Read", 600)
    assert regranted.uri.startswith(nbd_endpoint(srv) + "/")
    assert regranted.name != export.name
    assert libnbd_connect(regranted, disks.tls_dir).pread(len(data), offset) == data
    with RawNbd(moved.host, moved.port) as raw:
        raw.handshake_tls(srv.ca_file)
        assert raw.go(moved.name)[-1].kind == REP_ERR_UNKNOWN

    # Restarted on the same NBD port, the accessSAS URI works as it was handed out.
    assert srv.stop() == 0, srv.log_tail()
    srv.start(listen=f"localhost:{srv.port}", nbd_listen=f"localhost:{regranted.port}")
    assert nbd_endpoint(srv) == f"nbds://localhost:{regranted.port}"
    qemu_io(regranted, disks.tls_dir, [f"read -P 0 0 {offset}"], read_only=True)
    assert libnbd_connect(regranted, disks.tls_dir).pread(len(data), offset) == data


# ------------------------------------------------------------------------------------------------
# 6. No plaintext at rest
# ------------------------------------------------------------------------------------------------


def test_no_plaintext_at_rest_and_equal_data_encrypts_differently(fresh: tuple[Disks, str],
                                                                  tmp_path: Path):
    disks, group = fresh
    srv = disks.server
    secret = sha_stream(b"plaintext scan", 1 * MiB)
    scanner = WindowScanner(secret, 16)
    # The scanner finds a 16-byte window at an odd offset (so a clean scan means something).
    probe = tmp_path / "probe.bin"
    # The byte before the window differs from the secret's, so no earlier window matches.
    before = bytes([secret[777_776] ^ 0xFF])
    probe.write_bytes(os.urandom(999) + before + secret[777_777:777_793] + os.urandom(1000))
    assert scanner.scan_file(probe)[0] == 1000

    offset = 3 * MiB + 3 * UNIT
    block = secret[:UNIT]
    volumes = {}
    for name in ("scan-a", "scan-b"):
        disk = disks.create(group, name)
        volumes[name] = disks.volume_file(disk)
        h = libnbd_connect(disks.grant(group, name, "Write"), disks.tls_dir)
        h.pwrite(secret, offset)
        if name == "scan-a":
            h.pwrite(block * 16, 8 * MiB)  # the same unit 16 times
        h.flush()
        assert h.pread(len(secret), offset) == secret
        del h

    # Every file of the data directory (database, WAL, keys, TLS, audit, volumes) and the log.
    files = files_under(srv.data_dir) + [srv.log_path]
    names = {p.name for p in files}
    assert "sealdisk.db" in names and volumes["scan-a"].name in names, names
    hits = []
    scanned = {}
    for path in files:
        hit, n = scanner.scan_file(path)
        scanned[path.name] = n
        if hit is not None:
            hits.append(f"{path} at byte {hit}")
    assert not hits, f"plaintext found at rest: {hits}"
    for path in volumes.values():
        assert scanned[path.name] >= len(secret), (path.name, scanned)

    # The volume files hold the data, encrypted: the region was scanned, is not zero, and two
    # disks with the same plaintext at the same offset share no ciphertext unit.
    ciphertext = {}
    for name, path in volumes.items():
        data_offset = volume_data_offset(path)
        assert data_offset == 1 * MiB
        start = data_offset + offset
        assert any(s <= start and start + len(secret) <= e for s, e in data_extents(path)), \
            f"{path}: the written range is not allocated"
        ciphertext[name] = read_range(path, start, len(secret))
        assert ciphertext[name] != secret and ciphertext[name].count(0) < len(secret) // 128
    a, b = ciphertext["scan-a"], ciphertext["scan-b"]
    equal_units = [u for u in range(len(a) // UNIT) if a[u * UNIT:(u + 1) * UNIT] == b[u * UNIT:(u + 1) * UNIT]]
    assert not equal_units, f"units with equal ciphertext on both disks: {equal_units[:10]}"
    # Within one disk, equal plaintext units at different offsets differ (the XTS tweak).
    repeated = read_range(volumes["scan-a"], 1 * MiB + 8 * MiB, 16 * UNIT)
    assert len({repeated[i * UNIT:(i + 1) * UNIT] for i in range(16)}) == 16


# ------------------------------------------------------------------------------------------------
# 7. kill -9 during writes
# ------------------------------------------------------------------------------------------------

CRASH_ROUNDS = 24
CRASH_UNITS = 1024  # a 4 MiB region
QUEUE_DEPTH = 16


def pick_write(rng: random.Random, busy: set[int]) -> tuple[int, int] | None:
    """A random sector-aligned write that touches no unit with a write in flight."""
    for _ in range(8):
        kind = rng.random()
        if kind < 0.5:  # whole units
            n = rng.randint(1, 16)
            offset, length = rng.randrange(CRASH_UNITS - n + 1) * UNIT, n * UNIT
        elif kind < 0.8:  # sectors inside one unit
            s = rng.randrange(8)
            offset = rng.randrange(CRASH_UNITS) * UNIT + s * 512
            length = rng.randint(1, 8 - s) * 512
        else:  # sectors across unit boundaries
            offset = rng.randrange(CRASH_UNITS * 8 - 24) * 512
            length = rng.randint(9, 24) * 512
        units = range(offset // UNIT, (offset + length + UNIT - 1) // UNIT)
        if not busy.intersection(units):
            return offset, length
    return None


def crash_round(nbd: Any, h: Any, history: UnitHistory, rng: random.Random, srv: Server,
                kill_after: float) -> Counter:
    """Random writes and flushes with up to QUEUE_DEPTH in flight; SIGKILL after `kill_after`s."""
    stats: Counter = Counter()
    inflight: dict[int, tuple] = {}
    busy: set[int] = set()
    unflushed: list[dict[int, int]] = []
    start = time.monotonic()
    while True:
        left = kill_after - (time.monotonic() - start)
        if left <= 0:
            stats["in_flight_at_kill"] = len(inflight)
            srv.kill()
            return stats
        while len(inflight) < QUEUE_DEPTH:
            if rng.random() < 0.08:
                cookie = h.aio_flush()
                inflight[cookie] = ("flush", unflushed)
                unflushed = []
                continue
            picked = pick_write(rng, busy)
            if picked is None:
                break
            offset, length = picked
            data = rng.randbytes(length)
            fua = rng.random() < 0.1
            touched = history.write(offset, data)
            busy.update(touched)
            buf = nbd.Buffer.from_bytearray(data)
            cookie = h.aio_pwrite(buf, offset, flags=nbd.CMD_FLAG_FUA if fua else 0)
            inflight[cookie] = ("write", touched, fua, buf)
        h.poll(max(1, min(20, int(left * 1000))))
        for cookie in list(inflight):
            if not h.aio_command_completed(cookie):  # raises if the command failed
                continue
            op = inflight.pop(cookie)
            if op[0] == "flush":
                for touched in op[1]:
                    history.made_durable(touched)
                stats["flushed_writes"] += len(op[1])
                stats["flushes"] += 1
            else:
                _, touched, fua, _ = op
                busy.difference_update(touched)
                unflushed.append(touched)
                stats["writes"] += 1
                if fua:
                    history.made_durable(touched)
                    stats["fua_writes"] += 1


def test_kill_9_during_writes_loses_no_flushed_write_and_tears_no_unit(fresh: tuple[Disks, str]):
    nbd = import_libnbd()
    disks, group = fresh
    srv = disks.server
    disks.create(group, "crash")
    export = disks.grant(group, "crash", "Write", 24 * 3600)
    region = CRASH_UNITS * UNIT
    rng = random.Random(20240607)
    h = libnbd_connect(export, disks.tls_dir)
    history = UnitHistory(bytes(h.pread(region, 0)))
    totals: Counter = Counter()
    killed_with_io_in_flight = 0
    started = time.monotonic()
    for round_no in range(CRASH_ROUNDS):
        stats = crash_round(nbd, h, history, rng, srv, kill_after=rng.uniform(0.15, 0.6))
        del h
        totals.update(stats)
        killed_with_io_in_flight += stats["in_flight_at_kill"] > 0
        srv.start(listen=f"localhost:{srv.port}")
        h = libnbd_connect(export.on(nbd_endpoint(srv)), disks.tls_dir)
        actual = bytes(h.pread(region, 0))
        problems = history.check(actual)
        assert not problems, (f"round {round_no} ({dict(stats)}): {len(problems)} bad units:\n"
                              + "\n".join(problems[:20]))
        totals["units_changed"] += sum(
            actual[u * UNIT:(u + 1) * UNIT] != history.chain[u][0] for u in range(CRASH_UNITS))
        history = UnitHistory(actual)
    elapsed = time.monotonic() - started
    print(f"crash rounds: {CRASH_ROUNDS} in {elapsed:.1f}s, {killed_with_io_in_flight} killed with "
          f"I/O in flight, {dict(totals)}")
    # The rounds did real work: writes flushed and verified, kills with requests in flight.
    assert totals["flushes"] >= CRASH_ROUNDS and totals["flushed_writes"] >= 10 * CRASH_ROUNDS, totals
    assert totals["fua_writes"] > 0, totals
    assert killed_with_io_in_flight >= CRASH_ROUNDS * 3 // 4, (killed_with_io_in_flight, totals)
    assert elapsed < 100, f"{CRASH_ROUNDS} rounds took {elapsed:.0f}s"


# ------------------------------------------------------------------------------------------------
# 8. Revocation and deletion
# ------------------------------------------------------------------------------------------------


def test_revoke_closes_open_connections_and_refuses_the_export(disks: Disks, group: str):
    nbd = import_libnbd()
    name = unique("revoke")
    disks.create(group, name)
    export = disks.grant(group, name, "Write")
    qemu_io(export, disks.tls_dir, ["write -P 0x4d 0 1M"])

    busy = libnbd_connect(export, disks.tls_dir)
    idle = libnbd_connect(export, disks.tls_dir)
    assert idle.pread(4096, 0) == b"\x4d" * 4096
    events: dict[str, Any] = {"ok": 0, "last_ok": None, "failed": None, "data_after_fail": 0}
    stop = threading.Event()

    def reader() -> None:
        rng = random.Random(3)
        while not stop.is_set():
            off = rng.randrange(256) * 4096
            try:
                got = busy.pread(4096, off)
            except nbd.Error as err:
                if events["failed"] is None:
                    events["failed"] = time.monotonic()
                    events["error"] = err.string
                try:  # further requests on the connection fail too
                    busy.pread(4096, 0)
                    events["data_after_fail"] += 1
                except nbd.Error:
                    pass
                return
            if got != b"\x4d" * 4096:
                events["wrong_data"] = off
                return
            events["ok"] += 1
            events["last_ok"] = time.monotonic()

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while events["ok"] < 50 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert events["ok"] >= 50, "the reader did not get going"

    t0 = time.monotonic()
    disks.revoke(group, name)
    t1 = time.monotonic()
    thread.join(timeout=5)
    stop.set()
    assert "wrong_data" not in events, events
    assert events["failed"] is not None, f"reads still succeed after revoke-access: {events}"
    assert events["failed"] >= t0, events
    # Measured from the start of the command: the revocation happened within [t0, t1].
    latency = events["failed"] - t0
    print(f"revoke-access took {t1 - t0:.2f}s; the open connection failed {latency:.2f}s after it "
          f"started ({events['ok']} reads before)")
    assert latency < 2.0, f"I/O kept working {latency:.2f}s after revoke-access started"
    assert events["data_after_fail"] == 0, events

    # The idle connection is dead as well.
    t2 = time.monotonic()
    with pytest.raises(nbd.Error):
        idle.pread(4096, 0)
    assert time.monotonic() - t2 < 2.0

    # The export name opens nothing any more.
    with pytest.raises(nbd.Error):
        libnbd_connect(export, disks.tls_dir)
    assert run_tool([tool("nbdinfo"), "--json", export.with_tls(disks.tls_dir)], check=False).returncode != 0
    with RawNbd(export.host, export.port) as raw:
        raw.handshake_tls(disks.server.ca_file)
        assert raw.go(export.name)[-1].kind == REP_ERR_UNKNOWN
    assert disks.show(group, name)["diskState"] == "Unattached"


def test_delete_is_refused_while_access_is_granted(disks: Disks, group: str):
    name = unique("del")
    disk = disks.create(group, name)
    volume = disks.volume_file(disk)
    export = disks.grant(group, name, "Write")
    assert volume.is_file()

    refused = disks.cli.fails("disk", "delete", "-g", group, "-n", name, "--yes")
    assert "revoke" in refused.stderr.lower(), refused.describe()
    assert volume.is_file()
    assert nbdinfo_json(export, disks.tls_dir)["exports"][0]["export-size"] == DISK_SIZE
    assert disks.show(group, name)["diskState"] == "ActiveSAS"

    disks.revoke(group, name)
    disks.cli.run("disk", "delete", "-g", group, "-n", name, "--yes")
    assert not volume.exists(), f"{volume} is still there after delete"
    missing = disks.cli.run("disk", "show", "-g", group, "-n", name, check=False)
    assert missing.returncode == 3 and "ResourceNotFound" in missing.stderr, missing.describe()


def test_growing_a_disk_keeps_its_data_and_adds_zeros(disks: Disks, group: str):
    name = unique("grow")
    disks.create(group, name)
    export = disks.grant(group, name, "Write")
    qemu_io(export, disks.tls_dir, ["write -P 0x61 0 64k", f"write -P 0x62 {DISK_SIZE - 8192} 8192"])
    refused = disks.cli.fails("disk", "update", "-g", group, "-n", name, "--size-gb", "2")
    assert "OperationNotAllowed" in refused.stderr, refused.describe()
    disks.revoke(group, name)
    grown = disks.cli.json("disk", "update", "-g", group, "-n", name, "--size-gb", "2")
    assert grown["diskSizeGB"] == 2 and grown["diskSizeBytes"] == 2 * GiB
    export = disks.grant(group, name, "Write")
    assert nbdinfo_json(export, disks.tls_dir)["exports"][0]["export-size"] == 2 * GiB
    qemu_io(export, disks.tls_dir, [
        "read -P 0x61 0 64k",
        f"read -P 0x62 {DISK_SIZE - 8192} 8192",
        f"read -P 0 {DISK_SIZE} 1M",
        f"read -P 0 {2 * GiB - MiB} 1M",
        f"write -P 0x63 {2 * GiB - 4096 - 100} 4196",
        f"read -P 0x63 {2 * GiB - 4096 - 100} 4196",
    ])
    shrink = disks.cli.fails("disk", "update", "-g", group, "-n", name, "--size-gb", "1")
    assert "OperationNotAllowed" in shrink.stderr, shrink.describe()


def test_deleting_the_group_ends_grants_and_destroys_volumes(disks: Disks, server: Server):
    nbd = import_libnbd()
    rg = unique("disks-rg-delete")
    disks.cli.run("group", "create", "-n", rg, "-l", "eastus", "-o", "none")
    disk = disks.create(rg, "doomed")
    volume = disks.volume_file(disk)
    export = disks.grant(rg, "doomed", "Write")
    h = libnbd_connect(export, disks.tls_dir)
    h.pwrite(b"\x71" * 4096, 0)
    disks.cli.run("group", "delete", "-n", rg, "--yes")
    with pytest.raises(nbd.Error):
        h.pread(4096, 0)
    with pytest.raises(nbd.Error):
        libnbd_connect(export, disks.tls_dir)
    assert not volume.exists(), f"{volume} outlived its resource group"


# ------------------------------------------------------------------------------------------------
# 9. Hostile input on the NBD port
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_disks(disks: Disks, group: str) -> dict[str, Export]:
    """Disks A and B, each filled (first MiB) with its own byte."""
    out = {}
    for label, byte in (("a", 0xA1), ("b", 0xB2)):
        _, export = new_disk(disks, group, f"hostile-{label}")
        qemu_io(export, disks.tls_dir, [f"write -P 0x{byte:02x} 0 1M"])
        out[label] = export
    return out


HTTP_REQUEST = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n" + b"\xde\xad\xbe\xef" * 16


def assert_disks_intact(disks: Disks, two_disks: dict[str, Export]) -> None:
    qemu_io(two_disks["a"], disks.tls_dir, ["read -P 0xa1 0 1M", "read -P 0 1M 64k"])
    qemu_io(two_disks["b"], disks.tls_dir, ["read -P 0xb2 0 1M", "read -P 0 1M 64k"])


def test_malformed_negotiation_is_dropped_and_others_are_still_served(
        disks: Disks, two_disks: dict[str, Export], server: Server):
    a = two_disks["a"]
    ca = server.ca_file
    idle = RawNbd(a.host, a.port)  # connects and never says a word, throughout
    try:
        def fatal(label: str, steps) -> None:
            with RawNbd(a.host, a.port) as raw:
                steps(raw)
                assert raw.closed_by_server(5.0), f"{label}: the connection stayed open"

        fatal("garbage instead of client flags",
              lambda r: (r.greeting(), r.send(HTTP_REQUEST)))
        fatal("unknown client flags", lambda r: (r.greeting(), r.client_flags(0xFFFFFFFF)))
        fatal("bad option magic",
              lambda r: (r.greeting(), r.client_flags(), r.send(b"\x00" * 16)))
        fatal("option length 4 GiB",
              lambda r: (r.greeting(), r.client_flags(), r.option(OPT_GO, b"", 0xFFFFFFFF)))
        fatal("option length 64 KiB + 1",
              lambda r: (r.greeting(), r.client_flags(), r.option(OPT_GO, b"", 64 * KiB + 1)))
        fatal("NBD_OPT_EXPORT_NAME before TLS",
              lambda r: (r.greeting(), r.client_flags(), r.option(OPT_EXPORT_NAME, a.name.encode())))
        fatal("option length 4 GiB inside TLS",
              lambda r: (r.handshake_tls(ca), r.option(OPT_GO, b"", 0xFFFFFFFF)))
        fatal("garbage inside TLS", lambda r: (r.handshake_tls(ca), r.send(HTTP_REQUEST)))

        with RawNbd(a.host, a.port) as raw:
            raw.greeting()
            raw.client_flags()
            # Before TLS nothing but STARTTLS is answered, and the export is not revealed.
            for code, data in ((OPT_GO, RawNbd.go_data(a.name)), (OPT_INFO, RawNbd.go_data(a.name)),
                               (OPT_LIST, b"")):
                raw.option(code, data)
                reply = raw.option_reply()
                assert (reply.option, reply.kind) == (code, REP_ERR_TLS_REQD), reply
                assert a.name.encode() not in reply.data
            raw.starttls(ca)
            # Export names are capabilities: LIST lists nothing.
            raw.option(OPT_LIST)
            assert [(r.kind, r.data) for r in raw.replies_until_final()] == [(REP_ACK, b"")]
            raw.option(0x4242, b"junk")
            assert raw.option_reply().kind == REP_ERR_UNSUP
            # Still usable afterwards.
            replies = raw.go(a.name)
            assert replies[-1].kind == REP_ACK and raw.export_size == DISK_SIZE, replies
            errno_, data = raw.read(0, 4096)
            assert (errno_, data) == (0, b"\xa1" * 4096)

        assert not idle.closed_by_server(0.2), "an idle handshake was dropped early"
        assert_disks_intact(disks, two_disks)
    finally:
        idle.close()


def test_bad_requests_are_refused_and_never_cross_exports(disks: Disks,
                                                          two_disks: dict[str, Export],
                                                          server: Server):
    nbd = import_libnbd()
    a, b = two_disks["a"], two_disks["b"]
    ca = server.ca_file
    with raw_tls_session(a, ca) as ra, raw_tls_session(b, ca) as rb:
        for raw, byte in ((ra, 0xA1), (rb, 0xB2)):
            assert raw.read(0, 4096) == (0, bytes([byte]) * 4096)
        # Refused requests get an error and leave the connection usable.
        assert ra.read(0, 64 * MiB)[0] == EINVAL                 # beyond the 32 MiB maximum
        assert ra.read(DISK_SIZE - 512, 1024)[0] == EINVAL       # past the end
        assert ra.read(1, 512)[0] == EINVAL                      # not sector-aligned
        assert ra.read(2**63, 512)[0] == EINVAL                  # offset overflow
        cookie = ra.request(42, 0, 512)                          # unknown command
        assert ra.simple_reply()[:2] == (EINVAL, cookie)
        cookie = ra.request(CMD_WRITE, DISK_SIZE, 512, payload=b"\xff" * 512)
        assert ra.simple_reply()[:2] == (ENOSPC, cookie)
        cookie = ra.request(CMD_READ, 0, 4096, flags=0x8000)     # unknown flag
        assert ra.simple_reply()[:2] == (EINVAL, cookie)
        # Interleaved, each connection keeps reading its own disk.
        rng = random.Random(9)
        for _ in range(20):
            assert rb.read(512 * rng.randrange(2048), 512) == (0, b"\xb2" * 512)
            assert ra.read(512 * rng.randrange(2048), 512) == (0, b"\xa1" * 512)

        # A write announcing a 4 GiB payload: an error, then the connection is dropped; the
        # bytes sent after it are never written anywhere.
        cookie = ra.request(CMD_WRITE, 0, 0xFFFFFF00, payload=b"\xee" * 4096)
        assert ra.simple_reply()[:2] == (EINVAL, cookie)
        assert ra.closed_by_server(5.0)
        # A bad request magic drops B's connection.
        rb.send(b"\x00" * 28)
        assert rb.closed_by_server(5.0)

    # Two libnbd connections reading A and B at once never see each other's bytes.
    ha, hb = libnbd_connect(a, disks.tls_dir), libnbd_connect(b, disks.tls_dir)
    bufs = []
    for i in range(64):
        for h in (ha, hb):
            buf = nbd.Buffer(64 * KiB)
            h.aio_pread(buf, (i % 16) * 64 * KiB)
            bufs.append((h, buf))
    for h in (ha, hb):
        while h.aio_in_flight() > 0:
            h.poll(-1)
    for h, buf in bufs:
        want = 0xA1 if h is ha else 0xB2
        assert buf.to_bytearray() == bytes([want]) * (64 * KiB)
    # A flush on a fresh connection works; the server is still serving.
    with raw_tls_session(a, ca) as ra:
        cookie = ra.request(CMD_FLUSH, 0, 0)
        assert ra.simple_reply()[:2] == (0, cookie)
    assert_disks_intact(disks, two_disks)


def test_unknown_and_expired_export_names_are_refused(disks: Disks,
                                                               two_disks: dict[str, Export],
                                                               group: str, server: Server):
    a = two_disks["a"]
    ca = server.ca_file
    wrong = [
        "",
        "x" * 32,
        a.name[:-1],
        a.name + "A",
        a.name.swapcase(),
        a.name[::-1],
        two_disks["b"].name[:16] + a.name[16:],
        "../" + a.name,
        "é" * 16,
    ]
    with RawNbd(a.host, a.port) as raw:
        raw.handshake_tls(ca)
        for name in wrong:
            for code in (OPT_INFO, OPT_GO):
                replies = raw.go(name, code)
                assert [r.kind for r in replies] == [REP_ERR_UNKNOWN], (name, replies)
        # INFO on the real name describes it without entering transmission.
        replies = raw.go(a.name, OPT_INFO)
        assert replies[-1].kind == REP_ACK and REP_INFO in [r.kind for r in replies]
        assert raw.export_size == DISK_SIZE
    unknown = a.renamed("A" * 32)
    assert run_tool([tool("nbdinfo"), "--json", unknown.with_tls(disks.tls_dir)],
                    check=False).returncode != 0

    # A grant of one second expires on its own: its export is refused within a few seconds.
    name = unique("expire")
    disks.create(group, name)
    short = disks.grant(group, name, "Read", 1)
    granted = time.monotonic()
    open_conn = None
    try:
        open_conn = libnbd_connect(short, disks.tls_dir)
    except import_libnbd().Error:
        pass  # already expired (a slow machine): the refusal below is what matters
    while True:
        with RawNbd(short.host, short.port) as raw:
            raw.handshake_tls(ca)
            kind = raw.go(short.name, OPT_INFO)[-1].kind
        if kind == REP_ERR_UNKNOWN:
            break
        assert kind == REP_ACK
        assert time.monotonic() - granted < 5, "a 1-second grant still opens after 5 s"
        time.sleep(0.2)
    assert disks.show(group, name)["diskState"] == "Unattached"
    if open_conn is not None:  # the connection opened under the grant is closed with it
        with pytest.raises(import_libnbd().Error):
            open_conn.pread(512, 0)
    assert_disks_intact(disks, two_disks)


# ------------------------------------------------------------------------------------------------
# 10. The real az
# ------------------------------------------------------------------------------------------------


def test_az_disk_walkthrough(az: Runner, az_session: dict[str, Any], server: Server,
                             tls_dir: Path):
    rg = unique("az-disks")
    name = unique("azdisk")
    az.run("group", "create", "-n", rg, "-l", "eastus", "-o", "none")

    disk = az.json("disk", "create", "-g", rg, "-n", name, "--size-gb", "1", "--sku",
                   "Premium_LRS", "-l", "eastus")
    assert disk["id"] == f"{server.rg_id(rg)}/providers/Microsoft.Compute/disks/{name}"
    assert disk["name"] == name and disk["location"] == "eastus"
    assert disk["diskSizeGB"] == 1 and disk["diskSizeBytes"] == DISK_SIZE
    assert disk["sku"]["name"] == "Premium_LRS"
    assert disk["encryption"]["type"] == PLATFORM_KEY
    assert disk["provisioningState"] == "Succeeded"
    assert disk["diskState"] == "Unattached"

    shown = az.json("disk", "show", "-g", rg, "-n", name,
                    "--query", "{name:name, encryption:encryption.type}")
    assert shown == {"name": name, "encryption": PLATFORM_KEY}

    table = az.run("disk", "list", "-g", rg, "-o", "table").stdout.splitlines()
    assert table[0].split() == ["Name", "ResourceGroup", "Location", "Zones", "Sku", "SizeGb",
                                "ProvisioningState"], table
    rows = [line.split() for line in table[2:]]
    assert rows == [[name, rg, "eastus", "Premium_LRS", "1", "Succeeded"]], table

    # az 2.91 prints the operation's output under its wire name, `accessSAS` (as against Azure).
    sas = az.run("disk", "grant-access", "-g", rg, "-n", name, "--access-level", "Read",
                 "--duration-in-seconds", "300", "--query", "accessSAS", "-o", "tsv").stdout.strip()
    export = Export.parse(sas)
    assert sas.startswith(server.conn["nbdEndpoint"] + "/")
    info = nbdinfo_json(export, tls_dir)
    assert info["TLS"] is True
    assert info["exports"][0]["export-size"] == DISK_SIZE
    assert info["exports"][0]["is_read_only"] is True
    assert az.run("disk", "show", "-g", rg, "-n", name, "--query", "diskState",
                  "-o", "tsv").stdout.strip() == "ActiveSAS"

    az.run("disk", "revoke-access", "-g", rg, "-n", name)
    assert run_tool([tool("nbdinfo"), "--json", export.with_tls(tls_dir)], check=False).returncode != 0
    assert az.run("disk", "show", "-g", rg, "-n", name, "--query", "diskState",
                  "-o", "tsv").stdout.strip() == "Unattached"

    updated = az.json("disk", "update", "-g", rg, "-n", name, "--size-gb", "2")
    assert updated["diskSizeGB"] == 2 and updated["diskSizeBytes"] == 2 * GiB
    # The volume grew: a new grant exports 2 GiB.
    sas = az.run("disk", "grant-access", "-g", rg, "-n", name, "--access-level", "Read",
                 "--duration-in-seconds", "300", "--query", "accessSAS", "-o", "tsv").stdout.strip()
    assert nbdinfo_json(Export.parse(sas), tls_dir)["exports"][0]["export-size"] == 2 * GiB
    az.run("disk", "revoke-access", "-g", rg, "-n", name)

    az.run("disk", "delete", "-g", rg, "-n", name, "--yes")
    missing = az.run("disk", "show", "-g", rg, "-n", name, check=False)
    assert missing.returncode == 3 and "ResourceNotFound" in missing.stderr, missing.describe()
    assert az.json("disk", "list", "-g", rg) == []


# ------------------------------------------------------------------------------------------------
# 11. ARM error shapes
# ------------------------------------------------------------------------------------------------


def test_arm_disk_errors_have_azure_shapes(server: Server):
    rg = unique("arm-disks")
    resp = server.arm("PUT", server.rg_path(rg), api_version=RG_API, json_body={"location": "eastus"})
    assert resp.status_code in (200, 201), show(resp)
    base = f"{server.rg_path(rg)}/providers/Microsoft.Compute/disks"

    def put(name: str, body: dict[str, Any]):
        return server.arm("PUT", f"{base}/{name}", api_version=DISKS_API, json_body=body)

    def body(**props: Any) -> dict[str, Any]:
        return {"location": "eastus", "sku": {"name": props.pop("sku", "Premium_LRS")},
                "properties": {"creationData": {"createOption": "Empty"}, "diskSizeGB": 2, **props}}

    resp = put("good", body())
    assert resp.status_code in (200, 201, 202), show(resp)

    resp = server.arm("PATCH", f"{base}/good", api_version=DISKS_API,
                      json_body={"properties": {"diskSizeGB": 1}})
    assert resp.status_code == 409, show(resp)
    assert azure_error(resp)["code"] == "OperationNotAllowed"
    shown = server.arm("GET", f"{base}/good", api_version=DISKS_API)
    assert shown.status_code == 200 and shown.json()["properties"]["diskSizeGB"] == 2, show(shown)

    resp = put("bad-sku", body(sku="Premium_Bogus"))
    assert resp.status_code == 400, show(resp)
    assert azure_error(resp)["code"] == "InvalidParameter"

    des = (f"/subscriptions/{server.subscription}/resourceGroups/{rg}/providers/"
           "Microsoft.Compute/diskEncryptionSets/des1")
    resp = put("bad-enc", body(encryption={"type": PLATFORM_KEY, "diskEncryptionSetId": des}))
    assert resp.status_code == 400, show(resp)
    assert azure_error(resp)["code"] == "InvalidParameter"

    for grant in ({"access": "Execute", "durationInSeconds": 60},
                  {"access": "Read", "durationInSeconds": 0},
                  {"access": "Read", "durationInSeconds": -5}):
        resp = server.arm("POST", f"{base}/good/beginGetAccess", api_version=DISKS_API,
                          json_body=grant)
        assert resp.status_code == 400, show(resp)
        assert azure_error(resp)["code"] == "InvalidParameter"
    shown = server.arm("GET", f"{base}/good", api_version=DISKS_API)
    assert shown.json()["properties"]["diskState"] == "Unattached", show(shown)

    for name in ("bad-sku", "bad-enc", "never-created"):
        resp = server.arm("GET", f"{base}/{name}", api_version=DISKS_API)
        assert resp.status_code == 404, show(resp)
        assert azure_error(resp)["code"] == "ResourceNotFound"
