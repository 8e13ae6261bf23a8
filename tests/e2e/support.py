"""Helpers of the end-to-end suite: start/stop the real server, get tokens, run az and the sealdisk CLI.

Nothing here is a test. Fixtures in conftest.py wire these together.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
SYSTEM_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
READER_ROLE_GUID = "acdd72a7-3385-48ef-bd42-f606fba81ae7"
RG_API = "2024-11-01"
SUBS_API = "2022-12-01"
ROLE_ASSIGNMENTS_API = "2022-04-01"
STARTUP_TIMEOUT_S = 60.0


def tail(path: Path, lines: int = 60) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as err:
        return f"<cannot read {path}: {err}>"
    return "\n".join(text.splitlines()[-lines:])


def sealdisk_bin() -> Path:
    """The binary under test: $SEALDISK_BIN, else target/debug/sealdisk. Fails loudly if missing."""
    raw = os.environ.get("SEALDISK_BIN") or str(REPO_ROOT / "target" / "debug" / "sealdisk")
    path = Path(raw)
    if not path.is_absolute():
        path = REPO_ROOT / path
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise RuntimeError(
            f"sealdisk binary not found at {path}: build it with `cargo build` "
            "or point SEALDISK_BIN at it (scripts/test does both)"
        )
    return path


def venv_tool(name: str) -> Path:
    """A console script installed next to the running interpreter (the .venv's az)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise RuntimeError(
            f"{name} not found at {path}: run the suite with the .venv that scripts/test creates "
            "from tests/requirements.txt"
        )
    return path


# --------------------------------------------------------------------------------------------
# The server process
# --------------------------------------------------------------------------------------------


@dataclass(eq=False)
class Server:
    """One `sealdisk serve` process on ephemeral ports, with its data dir and log file."""

    data_dir: Path
    log_path: Path
    proc: subprocess.Popen | None = None
    conn: dict[str, Any] = field(default_factory=dict)
    _metadata: dict[str, Any] | None = None
    _tokens: dict[tuple[str, str], str] = field(default_factory=dict)

    # ---- lifecycle ------------------------------------------------------------------------

    @property
    def connection_file(self) -> Path:
        return self.data_dir / "connection.json"

    @property
    def ca_file(self) -> Path:
        return self.data_dir / "tls" / "ca-cert.pem"

    def start(self, listen: str = "localhost:0", nbd_listen: str = "localhost:0") -> "Server":
        """Starts the server and waits until connection.json is (re)written and /healthz answers 200.

        `listen` and `nbd_listen` default to ephemeral ports; a restart can pass the previous
        "localhost:PORT" (the NBD port is in connection.json's `nbdEndpoint`).
        """
        assert self.proc is None or self.proc.poll() is not None, "server already running"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        before = _file_signature(self.connection_file)
        cmd = [
            str(sealdisk_bin()),
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--listen",
            listen,
            "--nbd-listen",
            nbd_listen,
        ]
        log = open(self.log_path, "ab")
        log.write(f"\n===== {time.strftime('%H:%M:%S')} starting: {' '.join(cmd)}\n".encode())
        log.flush()
        env = dict(os.environ)
        env.setdefault("RUST_BACKTRACE", "1")
        self.proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
        log.close()
        _RUNNING.add(self)
        self._metadata = None
        self._tokens.clear()

        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        last_err = "connection.json not written yet"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"sealdisk serve exited with code {self.proc.returncode} during start-up; "
                    f"log {self.log_path}:\n{tail(self.log_path)}"
                )
            sig = _file_signature(self.connection_file)
            if sig is not None and sig != before:
                try:
                    self.conn = json.loads(self.connection_file.read_text())
                    resp = requests.get(
                        self.url("healthz"), verify=str(self.ca_file), timeout=5
                    )
                    if resp.status_code == 200:
                        return self
                    last_err = f"GET /healthz -> {resp.status_code} {resp.text[:200]}"
                except (ValueError, KeyError, OSError, requests.RequestException) as err:
                    last_err = f"{type(err).__name__}: {err}"
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(
            f"sealdisk serve not ready after {STARTUP_TIMEOUT_S:.0f}s ({last_err}); "
            f"log {self.log_path}:\n{tail(self.log_path)}"
        )

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout` seconds. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        _RUNNING.discard(self)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL (a crash, as far as the server can tell)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        _RUNNING.discard(self)

    # ---- addresses ------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """"https://localhost:PORT/" (always with the trailing slash)."""
        ep = self.conn["endpoint"]
        return ep if ep.endswith("/") else ep + "/"

    @property
    def port(self) -> int:
        return int(self.endpoint.rstrip("/").rsplit(":", 1)[1])

    @property
    def tenant(self) -> str:
        return self.conn["tenantId"]

    @property
    def subscription(self) -> str:
        return self.conn["subscriptionId"]

    @property
    def client_id(self) -> str:
        return self.conn["clientId"]

    @property
    def client_secret(self) -> str:
        return self.conn["clientSecret"]

    def url(self, path: str) -> str:
        return self.endpoint + path.lstrip("/")

    def log_tail(self) -> str:
        return tail(self.log_path)

    # ---- metadata and tokens ----------------------------------------------------------------

    @property
    def metadata(self) -> dict[str, Any]:
        if self._metadata is None:
            resp = requests.get(
                self.url("metadata/endpoints"),
                params={"api-version": "2022-09-01"},
                verify=str(self.ca_file),
                timeout=10,
            )
            assert resp.status_code == 200, f"metadata: {resp.status_code} {resp.text}"
            self._metadata = resp.json()
        return self._metadata

    @property
    def arm_audience(self) -> str:
        """The ARM token audience, as az uses it (authentication.audiences[0])."""
        return self.metadata["authentication"]["audiences"][0]

    @property
    def graph_audience(self) -> str:
        return self.metadata["microsoftGraphResourceId"]

    def token_endpoint(self, tenant: str | None = None) -> str:
        return self.url(f"{tenant or self.tenant}/oauth2/v2.0/token")

    def request_token(
        self, scope: str, client_id: str | None = None, secret: str | None = None
    ) -> requests.Response:
        """POST the client-credentials grant exactly as MSAL does (az login --service-principal)."""
        return requests.post(
            self.token_endpoint(),
            data={
                "client_id": client_id or self.client_id,
                "grant_type": "client_credentials",
                "client_info": "1",
                "client_secret": secret if secret is not None else self.client_secret,
                "scope": scope,
                "claims": '{"access_token":{"xms_cc":{"values":["CP1"]}}}',
            },
            headers={"x-client-sku": "MSAL.Python", "client-request-id": str(uuid.uuid4())},
            verify=str(self.ca_file),
            timeout=10,
        )

    def token(self, resource: str | None = None, client_id: str | None = None,
              secret: str | None = None) -> str:
        """An access token for `resource` (default: ARM) with scope `resource + "/.default"`."""
        resource = resource or self.arm_audience
        key = (client_id or self.client_id, resource)
        if key not in self._tokens:
            resp = self.request_token(resource + "/.default", client_id, secret)
            assert resp.status_code == 200, f"token request: {resp.status_code} {resp.text}"
            self._tokens[key] = resp.json()["access_token"]
        return self._tokens[key]

    # ---- ARM over HTTP ----------------------------------------------------------------------

    def arm(
        self,
        method: str,
        path: str,
        api_version: str | None = RG_API,
        token: str | None = None,
        json_body: Any = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> requests.Response:
        """One ARM request with the bootstrap principal's token (or `token`)."""
        params = dict(params or {})
        if api_version:
            params["api-version"] = api_version
        hdrs = {"Authorization": f"Bearer {token or self.token()}"}
        hdrs.update(headers or {})
        return requests.request(
            method,
            self.url(path),
            params=params,
            json=json_body,
            headers=hdrs,
            verify=str(self.ca_file),
            timeout=30,
        )

    def rg_path(self, name: str, segment: str = "resourceGroups") -> str:
        return f"subscriptions/{self.subscription}/{segment}/{name}"

    def rg_id(self, name: str) -> str:
        return f"/subscriptions/{self.subscription}/resourceGroups/{name}"


_RUNNING: set[Server] = set()


def stop_all_servers() -> None:
    for server in list(_RUNNING):
        server.stop(timeout=5)


def _file_signature(path: Path) -> tuple[int, int, bytes] | None:
    try:
        st = path.stat()
        return (st.st_mtime_ns, st.st_ino, path.read_bytes())
    except OSError:
        return None


# --------------------------------------------------------------------------------------------
# TLS trust
# --------------------------------------------------------------------------------------------


def write_ca_bundle(ca_file: Path, dest: Path) -> Path:
    """System CA bundle + the server's CA, for REQUESTS_CA_BUNDLE (requests ignores the system store)."""
    if SYSTEM_CA_BUNDLE.is_file():
        base = SYSTEM_CA_BUNDLE.read_text()
    else:
        import certifi  # a dependency of requests

        base = Path(certifi.where()).read_text()
    dest.write_text(base.rstrip("\n") + "\n" + ca_file.read_text())
    return dest


# --------------------------------------------------------------------------------------------
# Command runners
# --------------------------------------------------------------------------------------------


@dataclass
class Result:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        try:
            return json.loads(self.stdout)
        except ValueError as err:
            raise AssertionError(
                f"`{self.cmdline}` did not print JSON ({err}):\n{self.stdout}\n{self.stderr}"
            ) from err

    @property
    def cmdline(self) -> str:
        return " ".join(self.argv)

    def describe(self) -> str:
        return (
            f"`{self.cmdline}` exited {self.returncode}\n--- stdout\n{self.stdout[-4000:]}"
            f"\n--- stderr\n{self.stderr[-4000:]}"
        )


class Runner:
    """Runs one program with a fixed environment; `run` checks the exit code unless told not to."""

    def __init__(self, program: Path, env: dict[str, str], name: str,
                 redact: tuple[str, ...] = ()):
        self.program = program
        self.env = env
        self.name = name
        self.redact = redact

    def run(self, *args: str, check: bool = True, timeout: float = 180) -> Result:
        argv = [str(self.program), *args]
        try:
            proc = subprocess.run(
                argv,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as err:
            raise AssertionError(f"`{' '.join(argv)}` did not finish within {timeout}s") from err
        shown = [self.name, *args]
        for secret in self.redact:
            shown = [a.replace(secret, "***") if secret else a for a in shown]
        result = Result(shown, proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise AssertionError(result.describe())
        return result

    def json(self, *args: str, timeout: float = 180) -> Any:
        return self.run(*args, timeout=timeout).json

    def fails(self, *args: str, timeout: float = 180) -> Result:
        result = self.run(*args, check=False, timeout=timeout)
        assert result.returncode != 0, f"expected a failure:\n{result.describe()}"
        return result


def az_env(config_dir: Path, ca_bundle: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "MSAL_"))}
    env.update(
        AZURE_CONFIG_DIR=str(config_dir),
        AZURE_EXTENSION_DIR=str(config_dir / "cliextensions"),
        REQUESTS_CA_BUNDLE=str(ca_bundle),
        CURL_CA_BUNDLE=str(ca_bundle),
        AZURE_CORE_COLLECT_TELEMETRY="false",
        AZURE_CORE_ONLY_SHOW_ERRORS="true",
        AZURE_CORE_NO_COLOR="true",
        AZURE_CORE_SURVEY_MESSAGE="false",
        AZURE_CORE_DISABLE_PROGRESS_BAR="true",
        AZURE_CORE_OUTPUT="json",
    )
    return env


def sealdisk_env(config_dir: Path) -> dict[str, str]:
    """The CLI must trust the server through the CA named in connection.json, nothing else."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AZURE_", "SEALDISK_")) and k not in ("REQUESTS_CA_BUNDLE",)
    }
    env.update(SEALDISK_CONFIG_DIR=str(config_dir), NO_COLOR="1")
    return env


def cli_runner(config_dir: Path, server: Server) -> Runner:
    """The sealdisk CLI with its own SEALDISK_CONFIG_DIR."""
    return Runner(sealdisk_bin(), sealdisk_env(config_dir), "sealdisk", redact=(server.client_secret,))


# --------------------------------------------------------------------------------------------
# JWT helpers (no verification: for inspecting and forging)
# --------------------------------------------------------------------------------------------


def b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt_parts(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    header_b64, payload_b64, sig = token.split(".")
    return json.loads(b64url_decode(header_b64)), json.loads(b64url_decode(payload_b64)), sig


def jwt_assemble(header: dict[str, Any], payload: dict[str, Any], signature: str) -> str:
    enc = lambda obj: b64url_encode(json.dumps(obj, separators=(",", ":")).encode())  # noqa: E731
    return f"{enc(header)}.{enc(payload)}.{signature}"


def is_guid(value: Any) -> bool:
    try:
        return str(uuid.UUID(str(value))) == str(value).lower()
    except ValueError:
        return False


def azure_error(resp: requests.Response) -> dict[str, Any]:
    """The `error` object of an ARM error body; asserts the {"error":{"code","message"}} shape."""
    try:
        body = resp.json()
    except ValueError as err:
        raise AssertionError(
            f"{resp.request.method} {resp.url} -> {resp.status_code}: body is not JSON: {resp.text!r}"
        ) from err
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), (
        f"{resp.request.method} {resp.url} -> {resp.status_code}: not an Azure error body: {body}"
    )
    err = body["error"]
    assert isinstance(err.get("code"), str) and err["code"], f"error.code missing: {body}"
    assert isinstance(err.get("message"), str) and err["message"], f"error.message missing: {body}"
    return err


def show(resp: requests.Response) -> str:
    return f"{resp.request.method} {resp.url} -> {resp.status_code} {resp.text[:1000]}"
