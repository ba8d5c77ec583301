"""The structural checks every stored resource passes (fhir_adapter/fhir/resources.py): resource
shape, repeating elements as arrays, ids, nesting depth and NUL (issue #7 item 5, bad input)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from fhir_adapter.fhir.resources import ID_RE, MAX_NESTING, json_problem, resource_problem


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param({"resourceType": "Patient", "id": "p1"}, None, id="ok"),
        pytest.param([], ("resourceType", "expected a JSON object, got list"), id="array"),
        pytest.param({"id": "p1"}, ("resourceType", "no resourceType"), id="no-type"),
        pytest.param({"resourceType": "Basic2", "id": "p1"}, ("resourceType", "unknown resourceType"), id="unknown"),
        pytest.param({"resourceType": "Patient"}, ("id", "Patient has no id"), id="no-id"),
        pytest.param({"resourceType": "Patient", "id": "p1\n"}, ("id", "not a valid FHIR id"), id="id-newline"),
        pytest.param({"resourceType": "ExplanationOfBenefit", "id": "e", "item": "90834"},
                     ("item", "ExplanationOfBenefit.item is a JSON string, not an array"), id="eob-item-string"),
        pytest.param({"resourceType": "Patient", "id": "p", "identifier": {"value": "M1"}},
                     ("identifier", "Patient.identifier is a JSON object, not an array"), id="identifier-object"),
        pytest.param({"resourceType": "Condition", "id": "c", "extension": 5},
                     ("extension", "Condition.extension is a JSON number"), id="extension-number"),
        pytest.param({"resourceType": "Patient", "id": "bad id", "name": True},
                     ("name", "Patient.name is a JSON boolean"), id="array-before-id"),
        pytest.param({"resourceType": "Bundle", "id": "b", "entry": []}, None, id="bundle-not-domain"),
        pytest.param({"resourceType": "Patient", "id": "p", "gender": ["female"]}, None, id="singletons-not-checked"),
    ],
)  # fmt: skip
def test_resource_problem(value: Any, expected: tuple[str, str] | None) -> None:
    found = resource_problem(value)
    if expected is None:
        assert found is None
    else:
        assert found is not None and found[0] == expected[0] and expected[1] in found[1], found


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param('{"a": "x"}', None, id="ok"),
        pytest.param('{"a": "x\\u0000y"}', "NUL", id="nul-in-string"),
        pytest.param('{"a\\u0000": 1}', "NUL", id="nul-in-name"),
        pytest.param('{"a": "\\\\u0000"}', None, id="escaped-backslash-is-not-nul"),
        pytest.param("[" * MAX_NESTING + "]" * MAX_NESTING, None, id="at-the-limit"),
        pytest.param("[" * (MAX_NESTING + 1) + "]" * (MAX_NESTING + 1), "nested deeper", id="one-over"),
        pytest.param('{"a":' * 300 + "1" + "}" * 300, "nested deeper", id="objects-300"),
        pytest.param('"just a string"', None, id="scalar"),
    ],
)
def test_json_problem(text: str, expected: str | None) -> None:
    raw = text.encode()
    value = orjson.loads(raw)
    for found in (json_problem(value, raw), json_problem(value)):  # with and without the raw bytes
        assert (found is None) if expected is None else (found is not None and expected in found), found


def test_many_brackets_without_depth_pass() -> None:
    """The byte pre-check only decides when to walk: a wide resource is not a deep one."""
    value = {"resourceType": "Patient", "id": "p", "identifier": [{"value": str(n)} for n in range(500)]}
    raw = orjson.dumps(value)
    assert raw.count(b"{") > MAX_NESTING
    assert json_problem(value, raw) is None


@pytest.mark.parametrize(("rid", "ok"), [("a", True), ("A-1.b", True), ("a" * 64, True), ("a" * 65, False),
                                         ("a\n", False), ("", False), ("a b", False), ("ä", False)])  # fmt: skip
def test_id_pattern(rid: str, ok: bool) -> None:
    assert bool(ID_RE.match(rid)) is ok
