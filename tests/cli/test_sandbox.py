"""``fhir-adapter sandbox`` as a user starts it, and the README walkthrough run against it.

The commands are read from README.md (the block after the ``sandbox-walkthrough`` marker) and
executed with httpx, so README and test cannot drift: every line of the block must be a
variable assignment, a comment or a ``curl`` this test understands, and the sequence of requests
is asserted.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
MARKER = "<!-- sandbox-walkthrough"
README_BASE = "http://localhost:8080/fhir"
BANNER = "SANDBOX: authorisation is OFF; synthetic data only"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------------------------------
# README parsing


def _section(text: str) -> str:
    start = text.index("## Sandbox: push, evaluate, read with curl")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def _blocks(section: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)


def walkthrough_block(text: str) -> str:
    after = text[text.index(MARKER) :]
    match = re.search(r"```sh\n(.*?)```", after, flags=re.DOTALL)
    assert match is not None, "no sh block after the walkthrough marker"
    return match.group(1)


def logical_commands(block: str) -> list[str]:
    """Commands of a shell block: comments and blank lines dropped, backslash-newlines joined,
    lines inside an open quote joined to their command."""
    commands: list[str] = []
    pending = ""
    for line in block.replace("\\\n", " ").splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending = f"{pending}\n{line}" if pending else line
        try:
            shlex.split(pending)
        except ValueError:  # an open quote: the command goes on
            continue
        commands.append(pending)
        pending = ""
    assert not pending, f"unterminated command: {pending[:80]}"
    return commands


@dataclass
class Curl:
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    data: str | None = None


def parse_curl(words: list[str]) -> Curl:
    assert words[0] == "curl", words
    curl = Curl("GET", "")
    rest = iter(words[1:])
    for word in rest:
        if word == "-s":
            continue
        if word == "-X":
            curl.method = next(rest)
        elif word == "-H":
            name, _, value = next(rest).partition(":")
            curl.headers[name.strip()] = value.strip()
        elif word in ("-d", "--data"):
            curl.data = next(rest)
            if curl.method == "GET":
                curl.method = "POST"
        elif word.startswith("-"):
            raise AssertionError(f"curl option {word} is not understood by this test")
        else:
            assert not curl.url, f"two URLs: {curl.url} {word}"
            curl.url = word
    assert curl.url, "curl without a URL"
    return curl


_VAR = re.compile(r"(?<!\\)\$(?:\{([A-Z_][A-Z0-9_]*)\}|([A-Z_][A-Z0-9_]*))")
_CAPTURE = re.compile(r"^([A-Z_][A-Z0-9_]*)=\$\((curl .*)\|\s*(python3 -c .*)\)$", re.DOTALL)
_ASSIGN = re.compile(r"^([A-Z_][A-Z0-9_]*)=(\S+)$")


def expand(command: str, variables: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in variables, f"${name} is used before it is set"
        return variables[name]

    # as in double quotes in sh, an escaped dollar is a dollar (no JSON body here contains one)
    return _VAR.sub(value, command).replace("\\$", "$")


@dataclass
class Step:
    request: Curl
    response: httpx.Response
    captured: str | None = None


def run_walkthrough(block: str, base: str) -> Iterator[Step]:
    """Execute the block: assignments set variables (``FHIR`` is pointed at ``base``), a curl is sent
    with httpx, ``NAME=$(curl … | python3 -c '…')`` runs that Python on the answer."""
    variables: dict[str, str] = {}
    for command in logical_commands(block):
        if match := _ASSIGN.match(command):
            name, value = match.groups()
            if name == "FHIR":
                assert value == README_BASE, f"the README's FHIR base is {value}"
                value = base
            variables[name] = value
            continue
        captured_as = None
        python: list[str] | None = None
        curl_text = command
        if match := _CAPTURE.match(command):
            captured_as, curl_text, pipe = match.groups()
            python = shlex.split(pipe)
            assert python[:2] == ["python3", "-c"] and len(python) == 3, python
        words = shlex.split(expand(curl_text, variables))
        assert words and words[0] == "curl", f"README command not understood by this test: {command[:80]}"
        curl = parse_curl(words)
        response = httpx.request(
            curl.method,
            curl.url,
            headers=curl.headers,
            content=curl.data.encode() if curl.data is not None else None,
            timeout=120,
        )
        captured = None
        if python is not None and captured_as is not None:
            done = subprocess.run(
                [sys.executable, "-c", python[2]], input=response.content, capture_output=True, check=False
            )
            assert done.returncode == 0, (response.status_code, response.text[:1000], done.stderr.decode())
            captured = done.stdout.decode().strip()
            variables[captured_as] = captured
        yield Step(curl, response, captured)


# --------------------------------------------------------------------------------------------------
# the parser itself (a table of cases)


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        pytest.param("# c\n\nA=1\ncurl -s x\n", ["A=1", "curl -s x"], id="comments-and-blank-lines"),
        pytest.param("curl -s \\\n  x\n", ["curl -s    x"], id="backslash-continuation"),
        pytest.param("curl -d '{\n\"a\": 1\n}' x\n", ["curl -d '{\n\"a\": 1\n}' x"], id="multi-line-quote"),
    ],
)
def test_logical_commands(block: str, expected: list[str]) -> None:
    assert logical_commands(block) == expected


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        pytest.param(["curl", "-s", "u"], Curl("GET", "u"), id="get"),
        pytest.param(
            ["curl", "-X", "PUT", "u", "-H", "A: b", "-d", "{}"], Curl("PUT", "u", {"A": "b"}, "{}"), id="put"
        ),
        pytest.param(["curl", "-d", "x", "u"], Curl("POST", "u", {}, "x"), id="data-means-post"),
    ],
)
def test_parse_curl(words: list[str], expected: Curl) -> None:
    assert parse_curl(words) == expected


@pytest.mark.parametrize(
    "words",
    [
        pytest.param(["curl", "-k", "u"], id="unknown-option"),
        pytest.param(["curl", "-s"], id="no-url"),
        pytest.param(["wget", "u"], id="not-curl"),
    ],
)
def test_parse_curl_refuses(words: list[str]) -> None:
    with pytest.raises(AssertionError):
        parse_curl(words)


def test_expand_refuses_unset_variables() -> None:
    assert expand('"$FHIR/x/\\$op" ${FHIR}', {"FHIR": "b"}) == '"b/x/$op" b'
    with pytest.raises(AssertionError, match="NOPE"):
        expand("$NOPE", {})


def test_readme_sandbox_section_starts_the_sandbox() -> None:
    blocks = _blocks(_section(README.read_text()))
    assert blocks[0].strip() == "fhir-adapter sandbox"
    assert walkthrough_block(README.read_text()) in blocks


# --------------------------------------------------------------------------------------------------
# the live sandbox


@dataclass
class Sandbox:
    proc: subprocess.Popen[bytes]
    base: str
    cwd: Path

    def stderr(self) -> str:
        return (self.cwd / "sandbox.err").read_text()


def _start(cwd: Path, *args: str) -> Sandbox:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIR_ADAPTER_")}
    # the sandbox must not use the configured store
    env["FHIR_ADAPTER_DATABASE_URL"] = f"sqlite:///{cwd / 'not-the-sandbox.db'}"
    log = (cwd / "sandbox.err").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fhir_adapter", "sandbox", "--patients", "50", "--port", str(port),
         "--log-level", "warning", *args],
        cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True,
    )  # fmt: skip
    sandbox = Sandbox(proc, f"http://127.0.0.1:{port}/fhir", cwd)
    deadline = time.monotonic() + 180
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
            return sandbox
        except httpx.TransportError:
            if proc.poll() is not None or time.monotonic() > deadline:
                _stop(sandbox)
                raise AssertionError(f"the sandbox did not start:\n{sandbox.stderr()}") from None
            time.sleep(0.3)


def _stop(sandbox: Sandbox) -> None:
    if sandbox.proc.poll() is None:
        os.killpg(sandbox.proc.pid, signal.SIGTERM)
        try:
            sandbox.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(sandbox.proc.pid, signal.SIGKILL)
            sandbox.proc.wait()


def _counts(report: dict[str, Any], group: str) -> dict[str, int]:
    found = [g for g in report["group"] if g["id"] == group]
    assert len(found) == 1, report
    return {p["code"]["coding"][0]["code"]: p["count"] for p in found[0]["population"]}


def test_readme_walkthrough_against_a_live_sandbox(tmp_path: Path) -> None:
    sandbox = _start(tmp_path)
    try:
        assert BANNER in sandbox.stderr()
        assert "seeded sandbox store sqlite:///./sandbox.db: 50 synthetic children" in sandbox.stderr()
        assert (tmp_path / "sandbox.db").is_file()
        assert not (tmp_path / "not-the-sandbox.db").exists()

        steps = list(run_walkthrough(walkthrough_block(README.read_text()), sandbox.base))
        kinds = [(s.request.method, s.request.url.removeprefix(sandbox.base).split("?")[0]) for s in steps]
        evaluate = "/Measure/oregon-se-issue-focused/$evaluate-measure"
        assert kinds == [
            ("PUT", "/Patient/sandbox-child-1"),
            ("GET", evaluate),
            ("PUT", "/Encounter/sandbox-visit-1"),
            ("PUT", "/Condition/sandbox-dx-1"),
            ("GET", evaluate),
            ("GET", f"/MeasureReport/{steps[4].captured}"),
        ]
        for step in steps:
            assert step.response.status_code in (200, 201), (step.request, step.response.text[:500])
            assert step.response.headers["content-type"].startswith("application/fhir+json")
        for put in (steps[0], steps[2], steps[3]):
            assert put.response.status_code == 201
            assert put.response.json()["meta"]["source"] == "rest"

        before = steps[1].response.json()
        assert before["type"] == "individual"
        assert _counts(before, "all-enrolled") == {
            "initial-population": 1, "denominator": 1, "denominator-exclusion": 0, "numerator": 0,
        }  # fmt: skip
        assert "persist=true" not in steps[1].request.url

        after = steps[4].response.json()
        assert "persist=true" in steps[4].request.url
        assert steps[4].captured == after["id"]
        for group in ("all-enrolled", "identified-need"):
            assert _counts(after, group)["numerator"] == 1

        stored = steps[5].response.json()
        assert stored["id"] == after["id"]
        assert stored["meta"]["source"] == "adapter-reports"
        assert _counts(stored, "all-enrolled") == _counts(after, "all-enrolled")
        evidence = {e["reference"] for e in stored["evaluatedResource"]}
        assert {"Encounter/sandbox-visit-1", "Condition/sandbox-dx-1", "Patient/sandbox-child-1"} <= evidence
        assert any(ref.startswith("Coverage/") for ref in evidence)
    finally:
        _stop(sandbox)


def test_restart_reuses_the_store_and_reset_reseeds_it(tmp_path: Path) -> None:
    first = _start(tmp_path)
    try:
        patient = {"resourceType": "Patient", "id": "kept", "birthDate": "2022-01-01"}
        put = httpx.put(f"{first.base}/Patient/kept", json=patient, timeout=30)
        assert put.status_code == 201
    finally:
        _stop(first)

    again = _start(tmp_path)
    try:
        assert "reusing sandbox store" in again.stderr()
        assert httpx.get(f"{again.base}/Patient/kept", timeout=30).status_code == 200
    finally:
        _stop(again)

    reset = _start(tmp_path, "--reset")
    try:
        assert "seeded sandbox store" in reset.stderr()
        assert httpx.get(f"{reset.base}/Patient/kept", timeout=30).status_code == 404
        assert httpx.get(f"{reset.base}/Patient/oha-000008", timeout=30).status_code == 200
    finally:
        _stop(reset)
