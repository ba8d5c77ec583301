"""``fhir-adapter clients`` as an administrator meets it: add, list, revoke, rotate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from fhir_adapter.cli import main
from tests.smart import jwks, key_pair

ES, RS = key_pair("ES384", "es-1"), key_pair("RS384", "rs-1")


def run(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps(jwks(ES)))
    return path


def _file(tmp_path: Path, name: str, content: object) -> str:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def _listed(db: str) -> list[dict[str, Any]]:
    result = run("clients", "list", "--format", "json", "--database", db)
    assert result.exit_code == 0, result.output
    listed: list[dict[str, Any]] = json.loads(result.stdout)
    return listed


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(
            ["epic", "--role", "ehr", "--source", "epic-salem"],
            {"role": "ehr", "source": "epic-salem", "ccos": [], "scopes": "system/*.cruds"},
            id="ehr",
        ),
        pytest.param(
            [
                "ihn",
                "--role",
                "cco",
                "--cco",
                "IHN",
                "--scope",
                "system/MeasureReport.rs",
                "--name",
                "IHN CCO",
            ],
            {
                "role": "cco",
                "source": "ihn",
                "ccos": ["IHN"],
                "scopes": "system/MeasureReport.rs",
                "name": "IHN CCO",
            },
            id="cco",
        ),
        pytest.param(
            ["state", "--role", "oha", "--scope", "system/*.read", "--scope", "system/Group.cu"],
            {"role": "oha", "scopes": "system/*.rs system/Group.cu"},
            id="oha-v1-and-v2",
        ),
    ],
)
def test_add_and_list(db: str, keys: Path, args: list[str], expected: dict[str, Any]) -> None:
    result = run("clients", "add", *args, "--jwks", str(keys), "--database", db)
    assert result.exit_code == 0, result.output
    assert "registered" in result.stderr
    (listed,) = _listed(db)
    assert {k: listed[k] for k in expected} == expected
    assert listed["kids"] == ["es-1"]
    assert not {"jwks", "keys"} & set(listed)  # key ids only, never key material
    table = run("clients", "list", "--database", db)
    assert args[0] in table.stdout and "active" in table.stdout


@pytest.mark.parametrize(
    ("args", "keys_content", "code", "words"),
    [
        pytest.param(["c", "--role", "ehr"], jwks(ES), 2, "needs --source", id="ehr-without-source"),
        pytest.param(["c", "--role", "cco"], jwks(ES), 2, "at least one --cco", id="cco-without-cco"),
        pytest.param(
            ["c", "--role", "cco", "--cco", "NOT-A-CCO"], jwks(ES), 2, "unknown CCO id", id="unknown-cco"
        ),
        pytest.param(["c", "--role", "oha", "--cco", "IHN"], jwks(ES), 2, "for cco clients", id="cco-on-oha"),
        pytest.param(["c", "--role", "oha"], {"keys": [ES.private_jwk]}, 3, "member 'd'", id="private-key"),
        pytest.param(["c", "--role", "oha"], "{not json", 3, "not JSON", id="not-json"),
        pytest.param(
            ["c", "--role", "oha", "--scope", "system/Foo.rs"],
            jwks(ES),
            2,
            "R4 resource type",
            id="bad-scope",
        ),
        pytest.param(["c", "--role", "root"], jwks(ES), 2, "Invalid value", id="unknown-role"),
    ],
)
def test_add_refuses(
    db: str, tmp_path: Path, args: list[str], keys_content: object, code: int, words: str
) -> None:
    keys = _file(tmp_path, "k.json", keys_content)
    result = run("clients", "add", *args, "--jwks", keys, "--database", db)
    assert result.exit_code == code, result.output
    assert words in result.output
    assert _listed(db) == []


def test_add_needs_exactly_one_key_source(db: str, keys: Path) -> None:
    neither = run("clients", "add", "c", "--role", "oha", "--database", db)
    both = run(
        "clients",
        "add",
        "c",
        "--role",
        "oha",
        "--jwks",
        str(keys),
        "--jwks-url",
        "https://k.example/j",
        "--database",
        db,
    )
    assert (neither.exit_code, both.exit_code) == (2, 2)
    url = run("clients", "add", "c", "--role", "oha", "--jwks-url", "https://k.example/j", "--database", db)
    assert url.exit_code == 0, url.output
    assert _listed(db)[0]["jwks_url"] == "https://k.example/j"


def test_revoke_and_rotate(db: str, keys: Path, tmp_path: Path) -> None:
    assert (
        run(
            "clients",
            "add",
            "epic",
            "--role",
            "ehr",
            "--source",
            "epic",
            "--jwks",
            str(keys),
            "--database",
            db,
        ).exit_code
        == 0
    )
    both = _file(tmp_path, "both.json", jwks(ES, RS))
    rotated = run("clients", "rotate", "epic", "--jwks", both, "--database", db)
    assert rotated.exit_code == 0, rotated.output
    assert _listed(db)[0]["kids"] == ["es-1", "rs-1"]
    assert (
        run(
            "clients", "rotate", "epic", "--jwks", both, "--jwks-url", "https://k.example/j", "--database", db
        ).exit_code
        == 2
    )
    assert run("clients", "rotate", "nobody", "--jwks", both, "--database", db).exit_code == 3
    revoked = run("clients", "revoke", "epic", "--database", db)
    assert revoked.exit_code == 0, revoked.output
    assert _listed(db)[0]["revoked_at"] is not None
    assert "revoked" in run("clients", "list", "--database", db).stdout
    again = run("clients", "rotate", "epic", "--jwks", both, "--database", db)
    assert again.exit_code == 1 and "revoked" in again.output
    assert run("clients", "revoke", "nobody", "--database", db).exit_code == 3
    duplicate = run("clients", "add", "epic", "--role", "oha", "--jwks", str(keys), "--database", db)
    assert duplicate.exit_code == 1 and "never reused" in duplicate.output
