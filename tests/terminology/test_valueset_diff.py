"""The value-set code diff (spec §3 "Official lists"): added, removed and changed codes, keyed
by (system, normalised code); ``source`` never counts as a change."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest

from fhir_adapter.measure.spec import CodeRow, Provenance, ValueSet
from fhir_adapter.terminology.valueset_diff import diff_rows, diff_valuesets, written_code

CPT = "http://www.ama-assn.org/go/cpt"
HCPCS = "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"


def row(
    code: str,
    system: str = ICD,
    match: str = "exact",
    valid_from: date | None = None,
    valid_to: date | None = None,
    display: str = "",
    status: str = "candidate",
    source: str = "spec §3",
) -> CodeRow:
    return CodeRow(system, code, match, valid_from, valid_to, display, Provenance(status, source))  # type: ignore[arg-type]


F43 = row("F43", match="prefix", display="Stress")
OLD = (F43, row("90834", CPT), row("H0004", HCPCS))


@pytest.mark.parametrize(
    ("new", "expected"),
    [
        pytest.param(OLD, [], id="identical"),
        pytest.param(tuple(replace(r, provenance=Provenance(r.provenance.status, "other")) for r in OLD), [],
                     id="source-only-is-no-change"),
        pytest.param(tuple(reversed(OLD)), [], id="order-is-no-change"),
        pytest.param((*OLD, row("90791", CPT)), [("added", CPT, "90791", ())], id="added"),
        pytest.param(OLD[:2], [("removed", HCPCS, "H0004", ())], id="removed"),
        pytest.param((replace(F43, match="exact"), *OLD[1:]), [("changed", ICD, "F43", ("match",))],
                     id="prefix-to-exact"),
        pytest.param((replace(F43, valid_from=date(2024, 10, 1)), *OLD[1:]),
                     [("changed", ICD, "F43", ("valid_from",))], id="valid-from"),
        pytest.param((replace(F43, valid_to=date(2025, 9, 30)), *OLD[1:]),
                     [("changed", ICD, "F43", ("valid_to",))], id="valid-to"),
        pytest.param((replace(F43, display="Reaction to severe stress"), *OLD[1:]),
                     [("changed", ICD, "F43", ("display",))], id="display"),
        pytest.param((replace(F43, provenance=Provenance("official", "wb.xlsx (2025-01-01)")), *OLD[1:]),
                     [("changed", ICD, "F43", ("status",))], id="status"),
        pytest.param((F43, replace(F43, match="exact"), *OLD[1:]), [("changed", ICD, "F43", ("rows",))],
                     id="second-row-for-a-code"),
        pytest.param((row("F43", match="exact", status="official"), row("F43.22"), OLD[1]),
                     [("changed", ICD, "F43", ("match", "display", "status")),
                      ("removed", HCPCS, "H0004", ()), ("added", ICD, "F43.22", ())],
                     id="mixed-in-order"),
    ],
)  # fmt: skip
def test_diff_rows(new: tuple[CodeRow, ...], expected: list[tuple[str, str, str, tuple[str, ...]]]) -> None:
    got = [(c.kind, c.system, c.code, c.fields) for c in diff_rows(OLD, new)]
    assert got == expected


@pytest.mark.parametrize(
    ("before", "after", "details"),
    [
        pytest.param(F43, replace(F43, match="exact"), ["match: prefix -> exact"], id="match"),
        pytest.param(F43, replace(F43, display=""), ["display: Stress -> (empty)"], id="display-dropped"),
        pytest.param(F43, replace(F43, valid_from=date(2024, 10, 1), provenance=Provenance("official", "x")),
                     ["valid_from: (empty) -> 2024-10-01", "status: candidate -> official"], id="two-fields"),
    ],
)  # fmt: skip
def test_change_details(before: CodeRow, after: CodeRow, details: list[str]) -> None:
    (change,) = diff_rows([before], [after])
    assert change.details() == details


def test_change_details_with_several_rows() -> None:
    (change,) = diff_rows([F43], [F43, replace(F43, match="exact")])
    assert change.details() == ["rows: 1 -> 2"]


def test_diff_valuesets_lists_only_changed_sets_and_one_sided_sets() -> None:
    before = {
        "a": ValueSet("a", "A", OLD),
        "b": ValueSet("b", "B", OLD),
        "gone": ValueSet("gone", "G", (F43,)),
    }
    after = {
        "a": ValueSet("a", "A", OLD),
        "b": ValueSet("b", "B", OLD[:1]),
        "new": ValueSet("new", "N", (row("Z62", match="prefix"),)),
    }
    diffs = diff_valuesets(before, after)
    assert [(d.name, d.counts) for d in diffs] == [
        ("b", {"added": 0, "removed": 2, "changed": 0}),
        ("gone", {"added": 0, "removed": 1, "changed": 0}),
        ("new", {"added": 1, "removed": 0, "changed": 0}),
    ]
    assert [c.code for c in diffs[0].of_kind("removed")] == ["90834", "H0004"]


@pytest.mark.parametrize(
    ("kind", "code", "written"),
    [
        pytest.param("icd", "F4322", "F43.22", id="icd-undotted"),
        pytest.param("icd", "f43.22", "F43.22", id="icd-lower-dotted"),
        pytest.param("icd", "F43", "F43", id="icd-category"),
        pytest.param("icd", "Z69.010", "Z69.010", id="icd-six"),
        pytest.param("icd", " F43. ", "F43", id="icd-trailing-dot"),
        pytest.param("upper", " h0004 ", "H0004", id="hcpcs-upper"),
        pytest.param("none", " 12345 ", "12345", id="none-stripped"),
    ],
)
def test_written_code(kind: str, code: str, written: str) -> None:
    assert written_code(kind, code) == written
