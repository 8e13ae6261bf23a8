#!/usr/bin/env python3
"""Customer-managed keys: rotation of a disk encryption set with N disks, and how fast disks are
cut off when their key is disabled or the set's identity loses its access policy.

  bench/cmk.py --server-bin target/release/sealdisk [--disks 1000] [--rounds 3]
               [--revocation-rounds 5] [--threads 8] [--written 4] [--revoke-via http,cli]
               [--tmpdir DIR] [--profile]

(bench/cmk.sh builds the server and runs this with the repo's .venv.)

Starts `sealdisk serve --data-dir TMP/data --listen localhost:0 --nbd-listen localhost:0`
(TLS on) with a fresh data directory and stops it at exit. Sets up, with the sealdisk CLI, a
resource group, a vault with purge protection, an RSA-3072 key, a disk encryption set and the
set identity's access policy (get, wrapKey, unwrapKey); then creates DISKS customer-key disks of
1 GiB with ARM PUTs from THREADS threads and writes data to WRITTEN of them over NBD.

Rotation, ROUNDS rounds, each (the peers run in a directory next to the data directory, on
the same filesystem):
  header_sync_serial   peer: DISKS sparse volume-sized files; per file read 8 KiB, write one
  header_sync_8threads 4 KiB header slot, fdatasync (what re-wrapping one closed volume must
                       at least do on this disk), from one thread and from 8 threads;
  audit_commit_chain   peer: 2*DISKS/8 commits in the audit log's pattern, one after another
                       (head temp file + fsync, append + fdatasync, rename, directory fsync):
                       the serial I/O for the rotation's 2*DISKS audit entries (one unwrap and
                       one wrap per disk) if every batch held 8, one per re-wrap thread;
  rotation             `keyvault key rotate` (a new version, untimed), then the timed ARM PUT
                       of the set with the new versioned activeKey.keyUrl (the server re-wraps
                       every disk's DEK before it answers) and the time until a GET of the set
                       shows the new key; then checks every volume header changed and names
                       the new version, the written disks' data areas (from 1 MiB) are
                       byte-identical, and their data reads back over NBD.

Revocation, REVOCATION_ROUNDS rounds, each (one libnbd TLS connection reading 4 KiB in a
tight loop on a customer-key disk, measured until the first failed read):
  grant_revoke         the peer: the grant ended directly (POST endGetAccess);
  key_disable_http     the key version disabled on the Key Vault data plane (PATCH);
  key_disable_cli      `sealdisk keyvault key set-attributes ... --enabled false`;
  policy_remove_http   the identity's access policy removed (PUT .../accessPolicies/remove);
  policy_remove_cli    `sealdisk keyvault delete-policy --object-id ...`;
each reports the time from the server's acknowledgement (the HTTP answer, or the CLI's exit)
and from just before the request or command started; then the change is undone and the disk
granted again.

With --profile, two more rotations run with `perf record` attached to the server, one with the
fdatasync/fsync/rename tracepoints (sync time per kind of file, audit batches), one with
cpu-clock samples and call graphs (share of the server's CPU per component); they are not
counted, and each prints a "profile" line.

Prints one JSON line per measurement, then a summary with medians, ratios to the peers and the
targets (rotation of 1000 disks <= 2 s, revocation <= 1 s). Only the standard library,
`requests` and libnbd's Python binding (Debian's python3-libnbd).
"""

from __future__ import annotations

import argparse
import atexit
import hashlib
import json
import os
import platform
import random
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import requests

sys.path.append("/usr/lib/python3/dist-packages")
import nbd  # noqa: E402  (Debian's python3-libnbd)

RG_API = "2024-11-01"
VAULT_API = "2023-07-01"
COMPUTE_API = "2025-01-02"
KV_API = "7.6"
CMK = "EncryptionAtRestWithCustomerKey"
KiB = 1024
MiB = 1024 * KiB
HEADER_BYTES = 8 * KiB  # two 4096-byte header slots (docs/disk-format.md)
DATA_FROM = 1 * MiB
LOCATION = "eastus"
KEY_PERMISSIONS = ["get", "wrapKey", "unwrapKey"]
ROTATION_TARGET_S = 2.0  # for 1000 disks
REVOCATION_TARGET_S = 1.0

RECORDS: list[dict[str, Any]] = []
COMMANDS: list[str] = []


def emit(rec: dict[str, Any]) -> None:
    RECORDS.append(rec)
    print(json.dumps(rec), flush=True)


def note(command: str) -> None:
    if command not in COMMANDS:
        COMMANDS.append(command)


def log(msg: str) -> None:
    print(f"[cmk {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def r3(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


# ------------------------------------------------------------------------------------------------
# The server process and clean-up
# ------------------------------------------------------------------------------------------------


class Cleanup:
    """Stops what this script started (the server's process group, NBD handles) and removes the
    temp dir, once, at exit or on SIGINT/SIGTERM/SIGHUP."""

    def __init__(self) -> None:
        self.server: subprocess.Popen | None = None
        self.work: Path | None = None
        self.keep = False
        self.handles: set[Any] = set()
        self.done = False

    def run(self) -> None:
        if self.done:
            return
        self.done = True
        for h in list(self.handles):
            try:
                h.shutdown()
            except Exception:
                pass
        self.handles.clear()
        proc = self.server
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=10)
        if self.work is not None and not self.keep:
            shutil.rmtree(self.work, ignore_errors=True)


CLEANUP = Cleanup()


def on_signal(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def start_server(binary: Path, data: Path, log_path: Path) -> tuple[subprocess.Popen, dict]:
    cmd = [str(binary), "serve", "--data-dir", str(data), "--listen", "localhost:0",
           "--nbd-listen", "localhost:0"]
    note(" ".join(cmd))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEALDISK_")}
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    CLEANUP.server = proc
    conn_file = data / "connection.json"
    ca = data / "tls" / "ca-cert.pem"
    deadline = time.monotonic() + 120
    last = "connection.json not written yet"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"sealdisk serve exited with {proc.returncode}:\n{tail(log_path)}")
        if conn_file.is_file() and ca.is_file():
            try:
                conn = json.loads(conn_file.read_text())
                resp = requests.get(conn["endpoint"].rstrip("/") + "/healthz", verify=str(ca),
                                    timeout=5)
                if resp.status_code == 200:
                    return proc, conn
                last = f"/healthz -> {resp.status_code}"
            except (ValueError, KeyError, OSError, requests.RequestException) as err:
                last = f"{type(err).__name__}: {err}"
        time.sleep(0.1)
    sys.exit(f"sealdisk serve not ready after 120 s ({last}):\n{tail(log_path)}")


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as err:
        return f"<{err}>"


def cpu_seconds(pid: int) -> float:
    """User + system CPU of process `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------------------------------------
# HTTP: ARM and the Key Vault data plane
# ------------------------------------------------------------------------------------------------


class Api:
    """Bearer tokens from the client-credentials grant; one keep-alive session per thread."""

    def __init__(self, conn: dict, ca: Path):
        self.conn = conn
        self.ca = str(ca)
        self.endpoint = conn["endpoint"].rstrip("/") + "/"
        self.port = int(self.endpoint.rstrip("/").rsplit(":", 1)[1])
        self.tokens: dict[str, tuple[str, float]] = {}
        self.lock = threading.Lock()
        self.local = threading.local()

    @property
    def session(self) -> requests.Session:
        s = getattr(self.local, "session", None)
        if s is None:
            s = self.local.session = requests.Session()
        return s

    def token(self, scope: str) -> str:
        with self.lock:
            have = self.tokens.get(scope)
            if have and have[1] > time.monotonic():
                return have[0]
            resp = requests.post(
                f"{self.endpoint}{self.conn['tenantId']}/oauth2/v2.0/token",
                data={"client_id": self.conn["clientId"],
                      "client_secret": self.conn["clientSecret"],
                      "grant_type": "client_credentials", "scope": scope},
                verify=self.ca, timeout=30)
            check(resp, "token")
            body = resp.json()
            life = float(body.get("expires_in", 3600))
            self.tokens[scope] = (body["access_token"], time.monotonic() + max(60.0, life - 300))
            return body["access_token"]

    def arm_token(self) -> str:
        return self.token(self.endpoint + ".default")

    def vault_token(self) -> str:
        return self.token(f"https://vault.localhost:{self.port}/.default")

    def url(self, path: str) -> str:
        return path if path.startswith("https://") else self.endpoint + path.lstrip("/")

    def arm(self, method: str, path: str, api_version: str | None, body: Any = None,
            timeout: float = 120) -> requests.Response:
        params = {"api-version": api_version} if api_version else None
        # `verify` per request: a session's own loses to REQUESTS_CA_BUNDLE from the environment.
        return self.session.request(method, self.url(path), params=params, json=body,
                                    headers={"Authorization": f"Bearer {self.arm_token()}"},
                                    verify=self.ca, timeout=timeout)

    def vault(self, method: str, url: str, body: Any = None,
              timeout: float = 60) -> requests.Response:
        return self.session.request(method, url, params={"api-version": KV_API}, json=body,
                                    headers={"Authorization": f"Bearer {self.vault_token()}"},
                                    verify=self.ca, timeout=timeout)


def check(resp: requests.Response, what: str, ok: tuple[int, ...] = (200, 201, 202)) -> Any:
    if resp.status_code not in ok:
        raise RuntimeError(f"{what}: {resp.request.method} {resp.url} -> HTTP "
                           f"{resp.status_code} {resp.text[:600]}")
    return resp.json() if resp.content else None


# ------------------------------------------------------------------------------------------------
# The sealdisk CLI
# ------------------------------------------------------------------------------------------------


class Cli:
    def __init__(self, binary: Path, config_dir: Path):
        self.binary = binary
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("AZURE_", "SEALDISK_")) and k != "REQUESTS_CA_BUNDLE"}
        self.env.update(SEALDISK_CONFIG_DIR=str(config_dir), NO_COLOR="1")

    def run(self, *args: str, timeout: float = 300) -> str:
        note("sealdisk " + " ".join(args))
        proc = subprocess.run([str(self.binary), *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise RuntimeError(f"`sealdisk {' '.join(args)}` exited {proc.returncode}:\n"
                               f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        return proc.stdout

    def tsv(self, *args: str) -> str:
        return self.run(*args, "-o", "tsv").strip()

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "-o", "json"))


# ------------------------------------------------------------------------------------------------
# Volume files (docs/disk-format.md)
# ------------------------------------------------------------------------------------------------


def current_slot_key_ids(raw: bytes) -> tuple[int, list[str], int] | None:
    """(generation, key ids of the wrap layers, data offset) of the current header slot (valid
    checksum, highest generation) in the first 8 KiB of a volume file."""
    best = None
    for at in (0, 4096):
        slot = raw[at:at + 4096]
        if slot[:8] != b"SEALDISK":
            continue
        _version, body_len, generation = struct.unpack_from("<IIQ", slot, 8)
        if hashlib.sha256(slot[:24 + body_len]).digest() != slot[24 + body_len:56 + body_len]:
            continue
        body = slot[24:24 + body_len]
        (data_offset,) = struct.unpack_from("<Q", body, 28)
        count, p, ids = body[36], 37, []
        for _ in range(count):
            p += 1 + 32  # cipher id, key check value
            fields = []
            for _ in range(3):  # key id, algorithm, wrapped DEK
                (n,) = struct.unpack_from("<H", body, p)
                fields.append(body[p + 2:p + 2 + n])
                p += 2 + n
            ids.append(fields[0].decode())
        if best is None or generation > best[0]:
            best = (generation, ids, data_offset)
    return best


def read_header(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(HEADER_BYTES)


def data_area_sha256(path: Path, start: int = DATA_FROM) -> str:
    """SHA-256 over the data extents from `start` on (SEEK_DATA/SEEK_HOLE, with their offsets)
    and the file size: equal digests mean a byte-identical data area."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        off = start
        while off < size:
            try:
                begin = os.lseek(fd, off, os.SEEK_DATA)
            except OSError:  # ENXIO: no data after off
                break
            end = os.lseek(fd, begin, os.SEEK_HOLE)
            digest.update(f"{begin}-{end};".encode())
            f.seek(begin)
            left = end - begin
            while left:
                chunk = f.read(min(left, 8 * MiB))
                digest.update(chunk)
                left -= len(chunk)
            off = end
    digest.update(str(size).encode())
    return digest.hexdigest()


def pattern(seed: str, length: int) -> bytes:
    out = bytearray()
    i = 0
    while len(out) < length:
        out += hashlib.sha256(f"{seed}/{i}".encode()).digest()
        i += 1
    return bytes(out[:length])


# ------------------------------------------------------------------------------------------------
# NBD
# ------------------------------------------------------------------------------------------------


def nbd_open(uri: str, tls_dir: Path) -> Any:
    h = nbd.NBD()
    CLEANUP.handles.add(h)
    h.set_tls(nbd.TLS_REQUIRE)
    h.set_tls_certificates(str(tls_dir))
    h.connect_uri(uri)
    return h


def nbd_close(h: Any) -> None:
    try:
        h.shutdown()
    except nbd.Error:
        pass
    close = getattr(h, "close", None)  # libnbd >= 1.16; older ones close when collected
    if close is not None:
        close()
    CLEANUP.handles.discard(h)


# ------------------------------------------------------------------------------------------------
# Profile of one rotation (--profile): perf attached to the server during the PUT
# ------------------------------------------------------------------------------------------------

# (name, symbol test) of the server frames whose inclusive share of CPU samples is reported.
CPU_FRAMES: list[tuple[str, Callable[[str], bool]]] = [
    ("rewrap_volume (all re-wrap work)", lambda s: s.endswith("::rewrap_volume")),
    ("vault_by_name (vault lookup)", lambda s: s.endswith("::vault_by_name")),
    ("SqliteStore::resources (resource scans)", lambda s: s.endswith(">::resources")),
    ("RSA private op (unwrapKey)", lambda s: s == "keyvault::material::KeyMaterial::decrypt"),
    ("RSA public op (wrapKey)", lambda s: s.endswith("PublicKey::encrypt")
     and s.startswith("keyvault::")),
    ("audit log append", lambda s: s == "keyvault::audit::log::AuditLog::append"),
    ("volume header read", lambda s: s == "control::volumes::Volumes::header"),
    ("volume header write + sync", lambda s: s == "control::volumes::Volumes::rewrap"),
    ("SQLite statement preparation", lambda s: s == "sqlite3_prepare_v3"),
    ("kernel (syscalls)", lambda s: s == "entry_SYSCALL_64_after_hwframe"),
]
SYSCALLS = ("fdatasync", "fsync", "rename")


class Profile:
    """`perf record` attached to the server: kind "cpu", cpu-clock samples with DWARF call
    graphs; kind "io", the enter/exit tracepoints of fdatasync, fsync and rename (durations per
    kind of file). One kind per rotation, so that the cheap tracepoints are not slowed by the
    call-graph sampling."""

    def __init__(self, pid: int, out: Path, kind: str):
        self.pid, self.out, self.kind = pid, out, kind
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> "Profile":
        self.fds = {}
        for fd in Path(f"/proc/{self.pid}/fd").iterdir():
            try:
                self.fds[int(fd.name)] = os.readlink(fd)
            except OSError:
                pass
        events = [a for sc in SYSCALLS
                  for a in ("-e", f"syscalls:sys_enter_{sc}", "-e", f"syscalls:sys_exit_{sc}")]
        cmds = {"cpu": ["perf", "record", "-q", "-e", "cpu-clock", "-F", "499", "--call-graph",
                        "dwarf,32768", "-p", str(self.pid), "-o", str(self.out / "cpu.data")],
                "io": ["perf", "record", "-q", *events, "-p", str(self.pid), "-o",
                       str(self.out / "sys.data")]}
        for cmd in (cmds[self.kind],):
            note(" ".join(cmd).replace(str(self.out), "OUT").replace(f"-p {self.pid}", "-p PID"))
            self.procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                               stderr=subprocess.DEVNULL,
                                               start_new_session=True))
        time.sleep(2.0)  # perf needs a moment to attach to every thread
        return self

    def __exit__(self, *exc: Any) -> None:
        time.sleep(0.1)
        for p in self.procs:
            p.send_signal(signal.SIGINT)
        for p in self.procs:
            try:
                p.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()

    def cpu(self) -> dict[str, Any]:
        report = subprocess.run(
            ["perf", "report", "-i", str(self.out / "cpu.data"), "--children", "--sort", "sym",
             "--stdio", "-g", "none"], capture_output=True, text=True).stdout
        rows = []
        for line in report.splitlines():
            parts = line.split(None, 3)
            if len(parts) == 4 and parts[0].endswith("%") and parts[2] in ("[.]", "[k]"):
                rows.append((float(parts[0][:-1]), float(parts[1][:-1]), parts[3].strip()))
        shares = {}
        for name, test in CPU_FRAMES:
            shares[name] = max((c for c, _, sym in rows if test(sym)), default=0.0)
        top_self = sorted(rows, key=lambda r: -r[1])[:8]
        return {"inclusive_percent": shares,
                "top_self_percent": {sym[:90]: self_ for _, self_, sym in top_self}}

    def io(self) -> dict[str, Any]:
        script = subprocess.run(["perf", "script", "-i", str(self.out / "sys.data")],
                                capture_output=True, text=True).stdout
        audit_fds = {fd for fd, p in self.fds.items() if p.endswith("/audit/keyvault.log")}
        sqlite_fds = {fd for fd, p in self.fds.items() if "/sealdisk.db" in p}
        started: dict[int, tuple[float, str, int | None]] = {}
        spans: dict[str, list[tuple[float, float]]] = {}
        for line in script.splitlines():
            parts = line.split()
            at = next((i for i, x in enumerate(parts) if x.startswith("syscalls:sys_")), None)
            if at is None or at < 3:
                continue
            tid, when = int(parts[at - 3]), float(parts[at - 1].rstrip(":"))
            kind, call = parts[at].rstrip(":").split(":sys_")[1].split("_", 1)
            if kind == "enter":
                fd = None
                if "fd:" in parts:
                    fd = int(parts[parts.index("fd:") + 1].rstrip(","), 16)
                started[tid] = (when, call, fd)
                continue
            begin = started.pop(tid, None)
            if begin is None:
                continue
            t0, call, fd = begin
            if fd in sqlite_fds:
                cls = "sqlite"
            elif call == "rename":
                cls = "audit: head rename"
            elif call == "fdatasync" and fd in audit_fds:
                cls = "audit: log fdatasync"
            elif call == "fsync":
                cls = "audit: head temp file and directory fsync"
            else:
                cls = "volume header fdatasync"
            spans.setdefault(cls, []).append((t0, when))

        def union(iv: list[tuple[float, float]]) -> float:
            total, cur = 0.0, None
            for a, b in sorted(iv):
                if cur is None or a > cur[1]:
                    if cur is not None:
                        total += cur[1] - cur[0]
                    cur = [a, b]
                else:
                    cur[1] = max(cur[1], b)
            return total + (cur[1] - cur[0] if cur else 0.0)

        out: dict[str, Any] = {}
        everything = [x for v in spans.values() for x in v]
        if everything:
            out["window_seconds"] = round(max(b for _, b in everything)
                                          - min(a for a, _ in everything), 3)
        for cls, iv in sorted(spans.items()):
            d = sorted(b - a for a, b in iv)
            out[cls] = {"calls": len(iv), "sum_seconds": round(sum(d), 3),
                        "in_flight_seconds": round(union(iv), 3),
                        "median_ms": round(1000 * d[len(d) // 2], 3)}
        audit = [x for c, v in spans.items() if c.startswith("audit") for x in v]
        if audit:
            out["audit_commit_io_in_flight_seconds"] = round(union(audit), 3)
            renames = len(spans.get("audit: head rename", []))
            out["audit_batches"] = renames
        return out


# ------------------------------------------------------------------------------------------------
# The bench
# ------------------------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path):
        self.args = args
        self.work = work
        self.data = work / "data"
        self.binary = Path(args.server_bin).resolve()
        self.proc, self.conn = start_server(self.binary, self.data, work / "server.log")
        self.ca = self.data / "tls" / "ca-cert.pem"
        self.tls_dir = self.data / "tls"
        self.api = Api(self.conn, self.ca)
        self.cli = Cli(self.binary, work / "cli")
        suffix = uuid.uuid4().hex[:6]
        self.rg = f"cmk-{suffix}"
        self.kv = f"cmkbench-{suffix}"
        self.key = "disk-key"
        self.des = "des"
        self.sub = self.conn["subscriptionId"]
        self.rg_path = f"subscriptions/{self.sub}/resourceGroups/{self.rg}"
        self.disks: dict[str, str] = {}  # name -> uniqueId
        self.written: dict[str, list[tuple[int, bytes]]] = {}  # name -> [(offset, data)]
        self.kid = ""

    # ---- setup ---------------------------------------------------------------------------------

    def setup(self) -> None:
        cli = self.cli
        cli.run("login", "--connection-file", str(self.data / "connection.json"))
        cli.run("group", "create", "-n", self.rg, "-l", LOCATION)
        cli.run("keyvault", "create", "-n", self.kv, "-g", self.rg, "-l", LOCATION,
                "--enable-purge-protection", "true")
        self.kid = cli.tsv("keyvault", "key", "create", "--vault-name", self.kv, "-n", self.key,
                           "--kty", "RSA", "--size", "3072", "--query", "key.kid")
        des = cli.json("disk-encryption-set", "create", "-g", self.rg, "-n", self.des,
                       "--key-url", self.kid, "--source-vault", self.kv)
        self.des_id = des["id"]
        self.des_path = self.des_id.lstrip("/")
        self.principal = des["identity"]["principalId"]
        self.vault_id = des["activeKey"]["sourceVault"]["id"] if "activeKey" in des else \
            des["properties"]["activeKey"]["sourceVault"]["id"]
        cli.run("keyvault", "set-policy", "-n", self.kv, "--object-id", self.principal,
                "--key-permissions", *KEY_PERMISSIONS)
        vault = check(self.api.arm("GET", self.vault_id, VAULT_API), "vault")
        self.vault_uri = vault["properties"]["vaultUri"].rstrip("/") + "/"
        purge = vault["properties"].get("enablePurgeProtection")
        emit({"label": "setup", "resource_group": self.rg, "vault": self.kv,
              "purge_protection": purge, "key": self.kid, "disk_encryption_set": self.des_id,
              "set_identity": self.principal})

    def create_disks(self) -> None:
        n, threads = self.args.disks, self.args.threads
        names = [f"d{i:05d}" for i in range(n)]
        body = {"location": LOCATION, "sku": {"name": "Premium_LRS"},
                "properties": {"creationData": {"createOption": "Empty"}, "diskSizeGB": 1,
                               "encryption": {"type": CMK,
                                              "diskEncryptionSetId": self.des_id}}}
        note(f"PUT {self.api.endpoint}{self.rg_path}/providers/Microsoft.Compute/disks/dN"
             f"?api-version={COMPUTE_API} {json.dumps(body)}")
        self.api.arm_token()
        latencies: list[float] = []

        def put(name: str) -> float:
            t = time.monotonic()
            resp = self.api.arm("PUT", f"{self.rg_path}/providers/Microsoft.Compute/disks/{name}",
                                COMPUTE_API, body)
            check(resp, f"create disk {name}", ok=(202,))
            return time.monotonic() - t

        cpu0 = cpu_seconds(self.proc.pid)
        t0 = time.monotonic()
        with ThreadPoolExecutor(threads) as pool:
            latencies = list(pool.map(put, names))
        wall = time.monotonic() - t0
        cpu = cpu_seconds(self.proc.pid) - cpu0
        listed = self.list_disks()
        self.disks = {d["name"]: d["properties"]["uniqueId"] for d in listed
                      if d["name"] in set(names)}
        if len(self.disks) != n:
            raise RuntimeError(f"{len(self.disks)} of {n} disks listed after creation")
        latencies.sort()
        emit({"label": "create_disks", "disks": n, "threads": threads, "seconds": r3(wall),
              "disks_per_sec": round(n / wall, 1),
              "median_put_ms": round(1000 * statistics.median(latencies), 1),
              "p99_put_ms": round(1000 * latencies[min(n - 1, int(0.99 * n))], 1),
              "server_cpu_cores": round(cpu / wall, 2)})

    def list_disks(self) -> list[dict]:
        out: list[dict] = []
        url: str | None = f"{self.rg_path}/providers/Microsoft.Compute/disks"
        version: str | None = COMPUTE_API
        while url:
            page = check(self.api.arm("GET", url, version), "list disks")
            out += page.get("value", [])
            url, version = page.get("nextLink"), None
        return out

    def volume(self, name: str) -> Path:
        return self.data / "disks" / f"{self.disks[name]}.disk"

    def grant(self, name: str, access: str) -> str:
        return self.cli.tsv("disk", "grant-access", "-g", self.rg, "-n", name, "--access-level",
                            access, "--duration-in-seconds", "3600", "--query", "accessSAS")

    def revoke(self, name: str) -> None:
        self.cli.run("disk", "revoke-access", "-g", self.rg, "-n", name)

    def write_data(self) -> None:
        names = sorted(self.disks)[: self.args.written]
        if not names:
            return
        for i, name in enumerate(names):
            chunks = [(0, pattern(f"{name}/a", 1 * MiB)),
                      (300 * MiB + 4096 * i, pattern(f"{name}/b", 256 * KiB)),
                      (1024 * MiB - 64 * KiB, pattern(f"{name}/c", 64 * KiB))]
            h = nbd_open(self.grant(name, "Write"), self.tls_dir)
            try:
                for off, data in chunks:
                    h.pwrite(data, off)
                h.flush()
            finally:
                nbd_close(h)
            self.revoke(name)
            self.written[name] = chunks
        emit({"label": "write_data", "disks": names,
              "bytes_per_disk": sum(len(d) for _, d in chunks)})

    def read_back(self) -> dict[str, bool]:
        ok = {}
        for name, chunks in self.written.items():
            h = nbd_open(self.grant(name, "Read"), self.tls_dir)
            try:
                ok[name] = all(bytes(h.pread(len(data), off)) == data for off, data in chunks)
            finally:
                nbd_close(h)
            self.revoke(name)
        return ok

    # ---- rotation ------------------------------------------------------------------------------

    def sync_probe(self, round_no: int) -> None:
        """The peers, in a directory next to the data directory (same filesystem):
        header_sync_*: per volume, read 8 KiB, write one 4 KiB header slot, fdatasync, for
        DISKS sparse 1 GiB files, from one thread and from 8 threads;
        audit_commit_chain: 2*DISKS/8 commits in the audit log's pattern, one after another
        (head temp file written and fsynced, lines appended and fdatasynced, rename, directory
        fsync): the serial I/O of the rotation's 2*DISKS audit entries if every batch held 8,
        one per re-wrap thread."""
        probe = self.work / "probe"
        probe.mkdir(exist_ok=True)
        n = self.args.disks
        paths = [probe / f"{i:05d}.disk" for i in range(n)]
        for p in paths:
            if not p.exists():
                with open(p, "wb") as f:
                    f.write(os.urandom(HEADER_BYTES))
                    f.truncate(1 << 30)
        slot = os.urandom(4096)

        def one(p: Path) -> None:
            fd = os.open(p, os.O_RDWR)
            try:
                os.pread(fd, HEADER_BYTES, 0)
                os.pwrite(fd, slot, 4096 * (round_no % 2))
                os.fdatasync(fd)
            finally:
                os.close(fd)

        for label, threads in (("header_sync_serial", 1), ("header_sync_8threads", 8)):
            t = time.monotonic()
            if threads == 1:
                for p in paths:
                    one(p)
            else:
                with ThreadPoolExecutor(threads) as pool:
                    list(pool.map(one, paths))
            s = time.monotonic() - t
            emit({"label": label, "round": round_no, "volumes": n, "seconds": r3(s),
                  "per_volume_ms": round(1000 * s / n, 3)})

        audit = probe / "audit"
        audit.mkdir(exist_ok=True)
        commits = max(1, 2 * n // 8)
        head, tmp = audit / "log.head", audit / "log.head.tmp"
        line = b"x" * 426 + b"\n"
        log_fd = os.open(audit / "log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            t = time.monotonic()
            for _ in range(commits):
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                os.write(fd, b"h" * 211)
                os.fsync(fd)
                os.close(fd)
                os.write(log_fd, line * 8)
                os.fdatasync(log_fd)
                os.rename(tmp, head)
                dfd = os.open(audit, os.O_RDONLY)
                os.fsync(dfd)
                os.close(dfd)
            s = time.monotonic() - t
        finally:
            os.close(log_fd)
        emit({"label": "audit_commit_chain", "round": round_no, "commits": commits,
              "seconds": r3(s), "per_commit_ms": round(1000 * s / commits, 3)})

    def audit_lines(self) -> int:
        try:
            with open(self.data / "audit" / "keyvault.log", "rb") as f:
                return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
        except OSError:
            return -1

    def rotate(self, round_no: int, profiled: str | None = None) -> None:
        t = time.monotonic()
        new_kid = self.cli.tsv("keyvault", "key", "rotate", "--vault-name", self.kv, "-n",
                               self.key, "--query", "key.kid")
        key_rotate_s = time.monotonic() - t
        version = new_kid.rstrip("/").rsplit("/", 1)[1]
        key_path = f"/keys/{self.key}/{version}".encode()

        names = sorted(self.disks)
        before = {n: read_header(self.volume(n)) for n in names}
        sums_before = {n: data_area_sha256(self.volume(n)) for n in self.written}
        audit_before = self.audit_lines()

        current = check(self.api.arm("GET", self.des_path, COMPUTE_API), "get set")
        body = {"location": current["location"], "identity": {"type": "SystemAssigned"},
                "properties": {"encryptionType": current["properties"]["encryptionType"],
                               "activeKey": {"keyUrl": new_kid,
                                             "sourceVault": {"id": self.vault_id}}}}
        note(f"PUT {self.api.endpoint}{self.des_path}?api-version={COMPUTE_API} "
             + json.dumps(body).replace(new_kid, "NEW_KID"))
        self.api.arm_token()
        profile = None
        if profiled:
            out = self.work / f"perf-{round_no}"
            out.mkdir()
            profile = Profile(self.proc.pid, out, profiled).__enter__()
        cpu0 = cpu_seconds(self.proc.pid)
        t0 = time.monotonic()
        try:
            resp = self.api.arm("PUT", self.des_path, COMPUTE_API, body, timeout=900)
        finally:
            t_put = time.monotonic()
            cpu_put = cpu_seconds(self.proc.pid) - cpu0
            if profile is not None:
                profile.__exit__()
        check(resp, "rotate: PUT set")
        polls = 0
        while True:
            polls += 1
            got = check(self.api.arm("GET", self.des_path, COMPUTE_API), "get set")
            if got["properties"]["activeKey"]["keyUrl"] == new_kid:
                break
            if time.monotonic() - t0 > 900:
                raise RuntimeError("the set never showed the new key")
            time.sleep(0.01)
        t_visible = time.monotonic()
        op_status = None
        status_url = resp.headers.get("Azure-AsyncOperation")
        if status_url:
            op_status = check(self.api.arm("GET", status_url, None), "operation")["status"]
        t_done = time.monotonic()
        audit_added = self.audit_lines() - audit_before

        after = {n: read_header(self.volume(n)) for n in names}
        changed = sum(before[n] != after[n] for n in names)
        names_version = sum(key_path in after[n] for n in names)
        current_new = 0
        for n in names:
            slot = current_slot_key_ids(after[n])
            if slot and any(k.rstrip("/").endswith(f"/keys/{self.key}/{version}")
                            for k in slot[1]):
                current_new += 1
        sums_after = {n: data_area_sha256(self.volume(n)) for n in self.written}
        identical = sum(sums_before[n] == sums_after[n] for n in self.written)
        readback = self.read_back()
        rec = {"label": "rotation_profiled" if profiled else "rotation", "round": round_no,
               "disks": len(names),
               "key_version": version, "put_status": resp.status_code,
               "put_seconds": r3(t_put - t0), "visible_seconds": r3(t_visible - t0),
               "get_polls": polls, "operation_status": op_status,
               "operation_seconds": r3(t_done - t0) if op_status else None,
               "per_disk_ms": round(1000 * (t_put - t0) / len(names), 3),
               "server_cpu_seconds_during_put": round(cpu_put, 2),
               "server_cpu_cores_during_put": round(cpu_put / (t_put - t0), 2),
               "audit_entries_added": audit_added,
               "key_rotate_cli_seconds": r3(key_rotate_s),
               "headers_changed": changed, "headers_naming_new_version": names_version,
               "current_slot_on_new_version": current_new,
               "data_areas_identical": f"{identical}/{len(self.written)}",
               "nbd_readback_ok": f"{sum(readback.values())}/{len(readback)}"}
        rec["verified"] = (changed == names_version == current_new == len(names)
                           and identical == len(self.written) and all(readback.values()))
        self.kid = new_kid
        emit(rec)
        if profile is not None:
            emit({"label": "profile", "kind": profiled, "round": round_no,
                  "put_seconds": rec["put_seconds"],
                  "server_cpu_seconds": rec["server_cpu_seconds_during_put"],
                  profiled: profile.cpu() if profiled == "cpu" else profile.io()})

    # ---- revocation ----------------------------------------------------------------------------

    def set_key_enabled(self, enabled: bool) -> None:
        check(self.api.vault("PATCH", self.kid, {"attributes": {"enabled": enabled}}),
              "key attributes", ok=(200,))

    def policy(self, kind: str) -> None:
        body = {"properties": {"accessPolicies": [{
            "tenantId": self.conn["tenantId"], "objectId": self.principal,
            "permissions": {"keys": KEY_PERMISSIONS}}]}}
        check(self.api.arm("PUT", f"{self.vault_id}/accessPolicies/{kind}", VAULT_API, body),
              f"access policy {kind}", ok=(200, 201))

    def actions(self, disk: str) -> dict[str, tuple[Callable[[], None], Callable[[], None]]]:
        """kind -> (cut off, undo)."""
        kv, key, oid = self.kv, self.key, self.principal
        disk_path = f"{self.rg_path}/providers/Microsoft.Compute/disks/{disk}"

        def end_grant() -> None:
            check(self.api.arm("POST", f"{disk_path}/endGetAccess", COMPUTE_API), "endGetAccess",
                  ok=(200, 202))

        def nothing() -> None:
            pass

        note(f"POST {self.api.endpoint}{disk_path}/endGetAccess?api-version={COMPUTE_API}")
        note(f"PATCH {self.vault_uri}keys/{key}/VERSION?api-version={KV_API} "
             '{"attributes": {"enabled": false}}')
        note(f"PUT {self.api.endpoint}{self.vault_id.lstrip('/')}/accessPolicies/remove"
             f"?api-version={VAULT_API} " + json.dumps({"properties": {"accessPolicies": [{
                 "tenantId": "TENANT", "objectId": oid,
                 "permissions": {"keys": KEY_PERMISSIONS}}]}}))
        return {
            "grant_revoke": (end_grant, nothing),
            "key_disable_http": (lambda: self.set_key_enabled(False),
                                 lambda: self.set_key_enabled(True)),
            "key_disable_cli": (
                lambda: self.cli.run("keyvault", "key", "set-attributes", "--vault-name", kv,
                                     "-n", key, "--enabled", "false", "-o", "none"),
                lambda: self.cli.run("keyvault", "key", "set-attributes", "--vault-name", kv,
                                     "-n", key, "--enabled", "true", "-o", "none")),
            "policy_remove_http": (lambda: self.policy("remove"), lambda: self.policy("add")),
            "policy_remove_cli": (
                lambda: self.cli.run("keyvault", "delete-policy", "-n", kv, "--object-id", oid,
                                     "-o", "none"),
                lambda: self.cli.run("keyvault", "set-policy", "-n", kv, "--object-id", oid,
                                     "--key-permissions", *KEY_PERMISSIONS, "-o", "none")),
        }

    def revocation(self, round_no: int, kind: str, disk: str,
                   cut: Callable[[], None], undo: Callable[[], None]) -> None:
        h = nbd_open(self.grant(disk, "Read"), self.tls_dir)
        size = h.get_size()
        for i in range(16):  # warm: the volume is open, the connection busy
            h.pread(4096, i * 4096)
        state: dict[str, Any] = {"reads": 0, "last_ok": None, "fail": None, "error": None}
        stop = threading.Event()
        started = threading.Event()

        def reader() -> None:
            off = 0
            started.set()
            while not stop.is_set():
                try:
                    h.pread(4096, off)
                except nbd.Error as err:
                    state["fail"] = time.monotonic()
                    state["error"] = str(err)[:200]
                    return
                state["last_ok"] = time.monotonic()
                state["reads"] += 1
                off = (off + 4096) % min(size, MiB)

        thread = threading.Thread(target=reader, daemon=True)
        loop_start = time.monotonic()
        thread.start()
        started.wait()
        # Let the loop run, and land the change at a random phase of the server's checks.
        time.sleep(0.2 + random.random() * 0.3)
        t_before = time.monotonic()
        cut()
        t_ack = time.monotonic()
        thread.join(timeout=self.args.revocation_timeout)
        stop.set()
        thread.join(timeout=5)
        reads_before_cut = state["reads"]
        nbd_close(h)
        undo()
        if kind != "grant_revoke":
            # The cut-off ended the grant; make sure of it before the next round grants again.
            self.revoke(disk)
        fail = state["fail"]
        loop_s = (fail or time.monotonic()) - loop_start
        emit({"label": "revocation", "kind": kind, "round": round_no, "disk": disk,
              "cut_off": fail is not None,
              "from_ack_seconds": r3(fail - t_ack) if fail else None,
              "from_before_seconds": r3(fail - t_before) if fail else None,
              "request_seconds": r3(t_ack - t_before),
              "last_read_ok_to_failure_ms":
                  round(1000 * (fail - state["last_ok"]), 2) if fail and state["last_ok"] else None,
              "reads_per_sec": round(reads_before_cut / loop_s, 1) if loop_s > 0 else None,
              "error": state["error"]})

    # ---- run -----------------------------------------------------------------------------------

    def run(self) -> None:
        args = self.args
        log(f"setup: vault, RSA-3072 key, disk encryption set ({self.rg})")
        self.setup()
        log(f"creating {args.disks} customer-key disks with {args.threads} threads")
        self.create_disks()
        log(f"writing data to {args.written} disks over NBD")
        self.write_data()
        for r in range(1, args.rounds + 1):
            log(f"rotation round {r}/{args.rounds}")
            self.sync_probe(r)
            self.rotate(r)
        if args.profile:
            for i, kind in enumerate(("io", "cpu")):
                log(f"one more rotation under perf ({kind}; not counted)")
                self.rotate(args.rounds + 1 + i, profiled=kind)
        disk = sorted(self.written)[0] if self.written else sorted(self.disks)[0]
        kinds = ["grant_revoke"]
        for what in ("key_disable", "policy_remove"):
            for via in args.revoke_via:
                kinds.append(f"{what}_{via}")
        actions = self.actions(disk)
        for r in range(1, args.revocation_rounds + 1):
            log(f"revocation round {r}/{args.revocation_rounds}")
            order = kinds[:]
            random.Random(r).shuffle(order)
            for kind in order:
                self.revocation(r, kind, disk, *actions[kind])


# ------------------------------------------------------------------------------------------------
# Machine and summary
# ------------------------------------------------------------------------------------------------


def pressure() -> dict[str, float]:
    """avg60 of /proc/pressure/{cpu,io} "some" (percent of time some task waited)."""
    out = {}
    for what in ("cpu", "io"):
        try:
            for line in Path(f"/proc/pressure/{what}").read_text().splitlines():
                if line.startswith("some"):
                    out[f"{what}_some_avg60"] = float(line.split("avg60=")[1].split()[0])
        except (OSError, IndexError, ValueError):
            pass
    return out


def machine(work: Path, binary: Path) -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split(":", 1)[1].strip()
    except (OSError, IndexError):
        pass
    fs = subprocess.run(["df", "-T", str(work)], capture_output=True, text=True).stdout
    fs_line = fs.strip().splitlines()[-1].split() if fs.strip() else []
    commit = subprocess.run(["git", "-C", str(Path(__file__).resolve().parent), "rev-parse",
                             "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    version = subprocess.run([str(binary), "--version"], capture_output=True,
                             text=True).stdout.strip()
    return {"label": "machine", "nproc": len(os.sched_getaffinity(0)),
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
            "pressure_at_start": pressure(),
            "cpu_model": model, "memory": mem, "kernel": platform.release(),
            "tmp_filesystem": f"{fs_line[1]} on {fs_line[0]}" if len(fs_line) > 1 else "",
            "python": platform.python_version(), "requests": requests.__version__,
            "libnbd": nbd.NBD().get_version(), "server": version, "commit": commit,
            "argv": " ".join(sys.argv)}


def summary(args: argparse.Namespace) -> dict[str, Any]:
    by = lambda label: [r for r in RECORDS if r.get("label") == label]  # noqa: E731
    med = lambda xs: round(statistics.median(xs), 4) if xs else None  # noqa: E731
    out: dict[str, Any] = {}
    m = by("machine")[0]
    out["machine"] = {k: m[k] for k in ("nproc", "loadavg_at_start", "pressure_at_start",
                                         "cpu_model", "kernel", "tmp_filesystem")}
    out["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    out["machine"]["pressure_at_end"] = pressure()
    c = by("create_disks")[0]
    out["create_disks"] = {k: c[k] for k in ("disks", "threads", "seconds", "disks_per_sec",
                                             "median_put_ms", "p99_put_ms", "server_cpu_cores")}
    rot = by("rotation")
    put = [r["put_seconds"] for r in rot]
    target = ROTATION_TARGET_S * args.disks / 1000
    serial = [r["seconds"] for r in by("header_sync_serial")]
    par = [r["seconds"] for r in by("header_sync_8threads")]
    chain = [r["seconds"] for r in by("audit_commit_chain")]
    out["rotation"] = {
        "disks": args.disks, "rounds_put_seconds": put,
        "median_put_seconds": med(put),
        "median_visible_seconds": med([r["visible_seconds"] for r in rot]),
        "median_per_disk_ms": med([r["per_disk_ms"] for r in rot]),
        "median_server_cpu_cores_during_put":
            med([r["server_cpu_cores_during_put"] for r in rot]),
        "all_verified": all(r["verified"] for r in rot),
        "target_seconds": target,
        "target_met": bool(put) and med(put) <= target,
        "peer_header_sync_serial_median_seconds": med(serial),
        "peer_header_sync_8threads_median_seconds": med(par),
        "ratio_put_to_header_sync_serial": round(med(put) / med(serial), 2) if serial else None,
        "ratio_put_to_header_sync_8threads": round(med(put) / med(par), 2) if par else None,
        "peer_audit_commit_chain_median_seconds": med(chain),
        "peer_audit_commit_median_ms":
            med([r["per_commit_ms"] for r in by("audit_commit_chain")]),
        "ratio_put_to_audit_commit_chain": round(med(put) / med(chain), 2) if chain else None,
    }
    rev: dict[str, Any] = {}
    peer = [r["from_before_seconds"] for r in by("revocation")
            if r["kind"] == "grant_revoke" and r["cut_off"]]
    for kind in dict.fromkeys(r["kind"] for r in by("revocation")):
        rs = [r for r in by("revocation") if r["kind"] == kind]
        ack = [r["from_ack_seconds"] for r in rs if r["cut_off"]]
        before = [r["from_before_seconds"] for r in rs if r["cut_off"]]
        rev[kind] = {
            "rounds": len(rs), "cut_off": sum(r["cut_off"] for r in rs),
            "from_ack_seconds": ack,
            "median_from_ack_seconds": med(ack), "max_from_ack_seconds": max(ack, default=None),
            "median_from_before_seconds": med(before),
            "max_from_before_seconds": max(before, default=None),
            "median_request_seconds": med([r["request_seconds"] for r in rs]),
            "median_reads_per_sec": med([r["reads_per_sec"] for r in rs if r["reads_per_sec"]]),
        }
        if kind != "grant_revoke":
            rev[kind]["target_met"] = (len(ack) == len(rs) and bool(ack)
                                       and max(ack) <= REVOCATION_TARGET_S)
            if peer and before and med(peer) > 0:
                # From before the request: the peer's answer comes after its cut-off.
                rev[kind]["ratio_median_from_before_to_grant_revoke"] = \
                    round(med(before) / med(peer), 1)
    out["revocation"] = rev
    prof = by("profile")
    if prof:
        out["rotation_profile"] = {
            p["kind"]: {k: p[k] for k in ("put_seconds", "server_cpu_seconds", p["kind"])}
            for p in prof}
    out["revocation_target_seconds"] = REVOCATION_TARGET_S
    out["commands"] = COMMANDS
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server-bin", required=True)
    parser.add_argument("--disks", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3, help="rotation rounds")
    parser.add_argument("--revocation-rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=8, help="disk-creation threads")
    parser.add_argument("--written", type=int, default=4,
                        help="disks written over NBD and checked after every rotation")
    parser.add_argument("--revoke-via", default="http,cli",
                        help="comma-separated: http (direct requests), cli (sealdisk CLI)")
    parser.add_argument("--revocation-timeout", type=float, default=10.0)
    parser.add_argument("--tmpdir", default=None)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (debugging)")
    parser.add_argument("--profile", action="store_true",
                        help="after the measured rounds, two more rotations with perf "
                             "attached to the server (not counted): where the time goes")
    args = parser.parse_args()
    args.revoke_via = [v for v in args.revoke_via.split(",") if v]
    if args.profile and shutil.which("perf") is None:
        parser.error("--profile needs perf (apt-get install linux-perf)")
    if any(v not in ("http", "cli") for v in args.revoke_via):
        parser.error("--revoke-via takes http and/or cli")
    if args.disks < 1 or args.written > args.disks:
        parser.error("--disks >= 1 and --written <= --disks")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    atexit.register(CLEANUP.run)
    work = Path(tempfile.mkdtemp(prefix="sealdisk-cmk-", dir=args.tmpdir))
    CLEANUP.work = work
    CLEANUP.keep = args.keep
    emit(machine(work, Path(args.server_bin).resolve()))
    try:
        bench = Bench(args, work)
        bench.run()
    except Exception:
        if CLEANUP.server is not None:
            log(f"server log tail:\n{tail(work / 'server.log')}")
        raise
    print(json.dumps(summary(args), indent=2), flush=True)


if __name__ == "__main__":
    main()
