"""Fixtures of the end-to-end suite.

One real `sealdisk serve` per session (`server`), shared by every test whose state does not collide
(each test uses its own resource-group names); tests that kill or restart a server get their own
(`fresh_server`). az and the sealdisk CLI run as subprocesses with isolated config dirs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from support import (
    Runner,
    Server,
    az_env,
    cli_runner,
    stop_all_servers,
    venv_tool,
    write_ca_bundle,
)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("server")
    srv = Server(data_dir=base / "data", log_path=base / "server.log")
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[Server]:
    """A server of this test's own, on its own data dir (for kill/restart tests)."""
    srv = Server(data_dir=tmp_path / "data", log_path=tmp_path / "server.log")
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def ca_bundle(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_ca_bundle(server.ca_file, tmp_path_factory.mktemp("tls") / "bundle.pem")


@pytest.fixture(scope="session")
def az(ca_bundle: Path, tmp_path_factory: pytest.TempPathFactory, server: Server) -> Runner:
    """`az` from the .venv with its own AZURE_CONFIG_DIR (not logged in)."""
    config = tmp_path_factory.mktemp("azure-config")
    return Runner(venv_tool("az"), az_env(config, ca_bundle), "az", redact=(server.client_secret,))


@pytest.fixture(scope="session")
def az_session(az: Runner, server: Server) -> dict[str, Any]:
    """Registers the sealdisk cloud and logs in as the bootstrap service principal, like a user would.

    Returns the outputs of `az cloud show` and `az login` for the tests to check.
    """
    az.run(
        "cloud", "register", "-n", "sealdisk",
        "--endpoint-resource-manager", server.endpoint,
        "--suffix-keyvault-dns", f".vault.localhost:{server.port}",
    )
    az.run("cloud", "set", "-n", "sealdisk")
    az.run("config", "set", "core.instance_discovery=false")
    cloud = az.json("cloud", "show", "-n", "sealdisk")
    login = az.json(
        "login", "--service-principal",
        "-u", server.client_id, "-p", server.client_secret, "--tenant", server.tenant,
    )
    return {"cloud": cloud, "login": login}


@pytest.fixture(scope="session")
def cli(tmp_path_factory: pytest.TempPathFactory, server: Server) -> Runner:
    """The sealdisk CLI with its own SEALDISK_CONFIG_DIR (not logged in)."""
    return cli_runner(tmp_path_factory.mktemp("sealdisk-config"), server)


@pytest.fixture(scope="session")
def cli_session(cli: Runner, server: Server) -> Runner:
    cli.run("login", "--connection-file", str(server.connection_file))
    return cli


# ------------------------------------------------------------------------------------------------
# Reporting: attach the server log to failing tests; stop stray servers at the end.
# ------------------------------------------------------------------------------------------------


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for name, value in getattr(item, "funcargs", {}).items():
            if isinstance(value, Server):
                report.sections.append((f"sealdisk serve log ({name})", value.log_tail()))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    stop_all_servers()
