"""docker/: what can be checked without a Docker engine (none runs on the project's machines).

The Dockerfile's CMD must run a command the ``fhir-adapter`` console script has, with options it
accepts; its HEALTHCHECK must probe a route the service serves (and the probe itself must work);
what the build stage copies must exist and cover what the wheel force-includes. compose.yaml is
read with a tiny parser for the YAML subset it uses (PyYAML is not a dependency).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy.engine import make_url

from fhir_adapter.api.app import create_app
from fhir_adapter.cli import main
from fhir_adapter.settings import Settings
from fhir_adapter.store.db import normalise_url

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    text = (DOCKER / "Dockerfile").read_text()
    logical = re.sub(r"\\\n\s*", " ", text)
    out = []
    for line in logical.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction in _instructions():
        if instruction[0] == "FROM":
            stages.append([])
        stages[-1].append(instruction)
    return stages


def test_images_and_user() -> None:
    stages = _stages()
    assert [s[0][1].split()[0] for s in stages] == ["python:3.11-slim", "python:3.11-slim"]
    final = stages[-1]
    users = [args for word, args in final if word == "USER"]
    assert users == ["adapter"]
    assert any(word == "RUN" and "useradd" in args and "adapter" in args for word, args in final)
    user_at = next(i for i, (word, _a) in enumerate(final) if word == "USER")
    cmd_at = next(i for i, (word, _a) in enumerate(final) if word == "CMD")
    assert user_at < cmd_at  # the service never runs as root


def test_cmd_is_a_console_command_with_options_it_accepts() -> None:
    [cmd] = [_exec_form(args) for word, args in _stages()[-1] if word == "CMD"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert cmd[0] in scripts and scripts[cmd[0]] == "fhir_adapter.cli:main"
    command = main.commands[cmd[1]]
    assert cmd[1] == "serve"
    ctx = command.make_context(cmd[1], cmd[2:])  # parses the options exactly as the CLI would
    assert ctx.params["host"] == "0.0.0.0"
    exposed = [args for word, args in _stages()[-1] if word == "EXPOSE"]
    assert exposed == [str(ctx.params["port"])]


def _healthcheck() -> tuple[list[str], str]:
    [args] = [args for word, args in _stages()[-1] if word == "HEALTHCHECK"]
    options, _, command = args.partition("CMD ")
    assert "--interval=" in options and "--timeout=" in options
    probe = _exec_form(command)
    match = re.search(r"http://127\.0\.0\.1:(\d+)(/[^'\"\s]*)", " ".join(probe))
    assert match is not None, probe
    return probe, match.group(0)


def _serve(app: Any) -> tuple[uvicorn.Server, threading.Thread, int]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline
        time.sleep(0.05)
    return server, thread, port


def test_healthcheck_probes_a_route_of_the_service_and_works(tmp_path: Path) -> None:
    probe, url = _healthcheck()
    [cmd] = [_exec_form(args) for word, args in _stages()[-1] if word == "CMD"]
    port, path = re.match(r"http://127\.0\.0\.1:(\d+)(/.*)", url).groups()  # type: ignore[union-attr]
    assert port == cmd[cmd.index("--port") + 1]
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'h.db'}", auth_required=True))
    assert probe[0] == "python"
    server, thread, live = _serve(app)
    try:
        # the path is the service's health route (it needs no token, as a probe has none)
        answer = httpx.get(f"http://127.0.0.1:{live}{path}", timeout=10)
        assert (answer.status_code, answer.json()) == (200, {"status": "ok"})
        # the probe itself, pointed at the live service: exit 0; at nothing (below): not 0
        ok = subprocess.run([sys.executable, *probe[1:2], probe[2].replace(url, f"http://127.0.0.1:{live}{path}")],
                            capture_output=True, check=False, timeout=30)  # fmt: skip
        assert ok.returncode == 0, ok.stderr
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    down = subprocess.run([sys.executable, *probe[1:2], probe[2].replace(url, f"http://127.0.0.1:{live}{path}")],
                          capture_output=True, check=False, timeout=30)  # fmt: skip
    assert down.returncode != 0


def test_build_stage_copies_what_the_wheel_needs() -> None:
    build = _stages()[0]
    copied = [args.split()[:-1] for word, args in build if word == "COPY"]
    sources = {s.rstrip("/") for group in copied for s in group}
    for source in sources:
        assert (ROOT / source).exists(), source
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    forced = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    packages = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    assert {"pyproject.toml", pyproject["project"]["readme"], *packages} <= sources
    for path in forced:
        assert any(path == s or path.startswith(s + "/") for s in sources), path
    ignored = [
        line.strip().rstrip("/")
        for line in (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert not sources & set(ignored)


# --------------------------------------------------------------------------------------------------
# compose.yaml


def parse_yaml_subset(text: str) -> Any:
    """Block mappings, block sequences of scalars and plain/quoted scalars (what compose.yaml uses;
    anything else fails the test rather than being misread)."""
    lines = [
        (len(raw) - len(raw.lstrip(" ")), raw.strip())
        for raw in text.splitlines()
        if raw.strip() and not raw.lstrip().startswith("#")
    ]

    def scalar(value: str) -> Any:
        if value.startswith("[") and value.endswith("]"):
            return [scalar(v.strip()) for v in value[1:-1].split(",") if v.strip()]
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            return value[1:-1]
        if re.fullmatch(r"-?\d+", value):
            return int(value)
        if value in ("true", "false"):
            return value == "true"
        return value

    def block(i: int, indent: int) -> tuple[Any, int]:
        if lines[i][1].startswith("- "):
            items = []
            while i < len(lines) and lines[i][0] == indent and lines[i][1].startswith("- "):
                items.append(scalar(lines[i][1][2:].strip()))
                i += 1
            return items, i
        mapping: dict[str, Any] = {}
        while i < len(lines) and lines[i][0] == indent:
            key, sep, rest = lines[i][1].partition(":")
            assert sep, f"not a mapping line: {lines[i][1]}"
            rest = rest.strip()
            if rest:
                mapping[key] = scalar(rest)
                i += 1
            elif i + 1 < len(lines) and lines[i + 1][0] > indent:
                mapping[key], i = block(i + 1, lines[i + 1][0])
            else:
                mapping[key] = None
                i += 1
        return mapping, i

    value, end = block(0, lines[0][0])
    assert end == len(lines), f"unparsed from line {end}: {lines[end][1]}"
    return value


@pytest.fixture(scope="module")
def compose() -> Any:
    return parse_yaml_subset((DOCKER / "compose.yaml").read_text())


def test_tiny_parser_agrees_with_pyyaml_when_present(compose: Any) -> None:
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed: the cross-check needs it")
    assert compose == yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_compose_services(compose: Any) -> None:
    services = compose["services"]
    assert set(services) == {"adapter", "postgres", "hapi"}
    adapter = services["adapter"]
    assert (DOCKER / adapter["build"]["context"] / adapter["build"]["dockerfile"]).resolve() == (
        DOCKER / "Dockerfile"
    ).resolve()
    assert services["postgres"]["image"] == "postgres:15"
    assert services["hapi"]["image"] == "hapiproject/hapi:latest"
    assert adapter["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "healthcheck" in services["postgres"]


def test_compose_database_and_volume(compose: Any) -> None:
    url = compose["services"]["adapter"]["environment"]["FHIR_ADAPTER_DATABASE_URL"]
    parsed = make_url(normalise_url(url))
    assert parsed.drivername == "postgresql+psycopg"
    postgres = compose["services"]["postgres"]
    env = postgres["environment"]
    assert (parsed.host, parsed.port) == ("postgres", 5432)
    assert (parsed.username, parsed.password, parsed.database) == (
        env["POSTGRES_USER"], env["POSTGRES_PASSWORD"], env["POSTGRES_DB"],
    )  # fmt: skip
    [volume] = postgres["volumes"]
    name, _, target = volume.partition(":")
    assert target == "/var/lib/postgresql/data"
    assert name in compose["volumes"]
    assert Settings(database_url=url).database_url == url  # the adapter's settings accept it
