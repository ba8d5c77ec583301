"""Reading NDJSON and Bundle files: one item per resource, file:line for every bad line."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from fhir_adapter.ingest.files import LineError, expand_paths, read_file
from fhir_adapter.store.db import ParsedResource
from tests import cohorts as c


def _items(path: Path) -> list[ParsedResource | LineError]:
    return list(read_file(path))


@pytest.mark.parametrize(
    ("line", "message"),
    [
        pytest.param(b"[1, 2]", "expected a JSON object", id="array"),
        pytest.param(b'{"id": "x"}', "no resourceType", id="no-type"),
        pytest.param(b'{"resourceType": "Patient"}', "Patient has no id", id="no-id"),
        pytest.param(b'{"resourceType": "Patient", "id": "a b"}', "not a valid FHIR id", id="bad-id"),
        pytest.param(
            b'{"resourceType": "Patient", "id": "' + b"x" * 65 + b'"}', "not a valid FHIR id", id="long-id"
        ),
        pytest.param(b'{"resourceType": "Widget", "id": "1"}', "unknown resourceType", id="unknown-type"),
        pytest.param(b'{"resourceType": "Patient", "id": "1"', "not JSON", id="truncated"),
    ],
)
def test_bad_lines_are_reported_with_file_and_line(tmp_path: Path, line: bytes, message: str) -> None:
    path = tmp_path / "x.ndjson"
    path.write_bytes(orjson.dumps(c.patient("ok", "2020-01-01")) + b"\n\n" + line + b"\n")
    items = _items(path)
    assert isinstance(items[0], ParsedResource)
    assert isinstance(items[1], LineError)
    assert items[1].location == f"{path}:3"
    assert message in items[1].message


def test_bundle_rewrites_full_urls_and_deletes(tmp_path: Path) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": "urn:uuid:11111111-1111-1111-1111-111111111111",
             "resource": {"resourceType": "Patient", "birthDate": "2021-01-01"}},
            {"fullUrl": "urn:uuid:22222222-2222-2222-2222-222222222222",
             "resource": {"resourceType": "Encounter", "status": "finished",
                          "subject": {"reference": "urn:uuid:11111111-1111-1111-1111-111111111111"}}},
            {"request": {"method": "DELETE", "url": "Condition/old"}},
            {"resource": {"resourceType": "Nope"}},
        ],
    }  # fmt: skip
    path = tmp_path / "b.json"
    path.write_bytes(orjson.dumps(bundle, option=orjson.OPT_INDENT_2))
    items = _items(path)
    resources = [i for i in items if isinstance(i, ParsedResource)]
    errors = [i for i in items if isinstance(i, LineError)]
    assert [(r.rtype, r.rid, r.deleted) for r in resources] == [
        ("Condition", "old", True),
        ("Patient", "11111111-1111-1111-1111-111111111111", False),
        ("Encounter", "22222222-2222-2222-2222-222222222222", False),
    ]
    assert resources[2].resource["subject"] == {"reference": "Patient/11111111-1111-1111-1111-111111111111"}
    assert len(errors) == 1 and "Bundle.entry[3]" in errors[0].location


def test_single_resource_json_and_ndjson_named_json(tmp_path: Path) -> None:
    one = tmp_path / "one.json"
    one.write_bytes(orjson.dumps(c.patient("a", "2020-01-01"), option=orjson.OPT_INDENT_2))
    many = tmp_path / "many.json"
    many.write_bytes(
        orjson.dumps(c.patient("a", "2020-01-01")) + b"\n" + orjson.dumps(c.patient("b", None)) + b"\n"
    )
    assert [i.rid for i in _items(one) if isinstance(i, ParsedResource)] == ["a"]
    assert [i.rid for i in _items(many) if isinstance(i, ParsedResource)] == ["a", "b"]


def test_broken_json_file_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_bytes(b'{\n  "resourceType": "Patient",\n  "id": oops\n}')
    items = _items(path)
    assert isinstance(items[0], LineError)
    assert items[0].location == f"{path}:3"


def test_expand_paths_finds_fhir_files_only(tmp_path: Path) -> None:
    (tmp_path / "a.ndjson").write_text("")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.ndjson.gz").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("")
    assert [p.name for p in expand_paths([tmp_path])] == ["a.ndjson", "b.ndjson.gz"]


def test_ndjson_named_json_with_a_long_first_line(tmp_path: Path) -> None:
    first = c.patient(
        "a", "2020-01-01", text={"status": "generated", "div": "<div>" + "x" * 20000 + "</div>"}
    )
    path = tmp_path / "long.json"
    path.write_bytes(orjson.dumps(first) + b"\n" + orjson.dumps(c.patient("b", None)) + b"\n")
    assert [i.rid for i in _items(path) if isinstance(i, ParsedResource)] == ["a", "b"]


def test_absolute_full_url_gives_the_id(tmp_path: Path) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": "https://ehr.example.org/fhir/Patient/p9", "resource": {"resourceType": "Patient"}}
        ],
    }
    path = tmp_path / "b.json"
    path.write_bytes(orjson.dumps(bundle))
    assert [i.rid for i in _items(path) if isinstance(i, ParsedResource)] == ["p9"]
