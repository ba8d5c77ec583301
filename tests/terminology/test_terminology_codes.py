"""Tests for fhir_adapter.terminology.codes (spec §3 "Code handling"): aliases, normalisation,
local-code crosswalk, exact vs prefix matching, the CPT/HCPCS namespace and the expand table."""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import date
from pathlib import Path

import pytest

from fhir_adapter.mappings import load_mappings
from fhir_adapter.measure.spec import Mappings, ValueSet
from fhir_adapter.terminology import CodeMatch, Terminology, normalise

MAPPINGS = Path(__file__).resolve().parents[2] / "mappings"
CPT = "http://www.ama-assn.org/go/cpt"
HCPCS = "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
SCT = "http://snomed.info/sct"
BB = "https://bluebutton.cms.gov/resources/codesystem/hcpcs"
VISIT = "https://ehr.example.org/fhir/CodeSystem/visit-type"
INTER, DIAG = "se-intervention-procedures", "se-issue-diagnoses"


@pytest.fixture(scope="module")
def mappings() -> Mappings:
    return load_mappings(MAPPINGS)


@pytest.fixture(scope="module")
def term(mappings: Mappings) -> Terminology:
    return Terminology(mappings)


@pytest.fixture(scope="module")
def issue_sets(mappings: Mappings) -> Mapping[str, ValueSet]:
    return mappings.measures[("oregon-se-issue-focused", 2025)].valuesets


@pytest.fixture(scope="module")
def reach_sets(mappings: Mappings) -> Mapping[str, ValueSet]:
    return mappings.measures[("oregon-se-reach", 2024)].valuesets


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        pytest.param(CPT, CPT, id="cpt-canonical"),
        pytest.param("urn:oid:2.16.840.1.113883.6.12", CPT, id="cpt-oid"),
        pytest.param("https://www.ama-assn.org/go/cpt", CPT, id="cpt-https"),
        pytest.param("urn:oid:2.16.840.1.113883.6.285", HCPCS, id="hcpcs-oid-285"),
        pytest.param("urn:oid:2.16.840.1.113883.6.14", HCPCS, id="hcpcs-oid-14"),
        pytest.param("https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets", HCPCS, id="hcpcs-https"),
        pytest.param(BB, HCPCS, id="bluebutton-hcpcs"),
        pytest.param("urn:oid:2.16.840.1.113883.6.90", ICD, id="icd-oid"),
        pytest.param("https://hl7.org/fhir/sid/icd-10-cm", ICD, id="icd-https"),
        pytest.param("https://snomed.info/sct", SCT, id="sct-https"),
        pytest.param(" http://hl7.org/fhir/sid/icd-10-cm/ ", ICD, id="trailing-slash-and-spaces"),
        pytest.param(VISIT, VISIT, id="local-visit-type"),
        pytest.param("http://example.org/cpt", None, id="unknown"),
        pytest.param("HTTP://WWW.AMA-ASSN.ORG/GO/CPT", None, id="case-is-significant"),
        pytest.param("", None, id="empty"),
    ],
)
def test_canonical_system(term: Terminology, raw: str, canonical: str | None) -> None:
    assert term.canonical_system(raw) == canonical
    assert term.known(raw) is (canonical is not None)


@pytest.mark.parametrize(
    ("system", "code", "expected"),
    [
        pytest.param(ICD, " f43.22 ", "F4322", id="icd-dotted-lower"),
        pytest.param(ICD, "F4322", "F4322", id="icd-undotted"),
        pytest.param(ICD, "Z69. 010", "Z69010", id="icd-inner-space"),
        pytest.param(HCPCS, " h0004", "H0004", id="hcpcs-upper"),
        pytest.param(CPT, "0591t", "0591T", id="cpt-upper"),
        pytest.param(SCT, " 35489007 ", "35489007", id="sct-strip"),
        pytest.param(VISIT, "bh-fam", "bh-fam", id="local-case-kept"),
        pytest.param("http://example.org/x", " a.b ", "a.b", id="unknown-strip-only"),
    ],
)
def test_normalise_code(term: Terminology, system: str, code: str, expected: str) -> None:
    assert term.normalise_code(system, code) == expected


def test_normalise_kinds() -> None:
    assert [normalise(k, " f43.2 ") for k in ("icd", "upper", "none")] == ["F432", "F43.2", "f43.2"]


@pytest.mark.parametrize(
    ("system", "code", "expected"),
    [
        pytest.param(VISIT, "BH-FAM", [(VISIT, "BH-FAM"), (CPT, "90847")], id="local-to-cpt"),
        pytest.param(VISIT, "WCC", [(VISIT, "WCC"), (CPT, "99392")], id="local-well-child"),
        pytest.param(VISIT, "OTHER", [(VISIT, "OTHER")], id="local-unmapped"),
        pytest.param("urn:oid:2.16.840.1.113883.6.90", "f43.2", [(ICD, "F432")], id="alias-normalised"),
        pytest.param("http://example.org/x", "90832", [], id="unknown-system"),
        pytest.param(CPT, "  ", [], id="blank-code"),
    ],
)
def test_translate(term: Terminology, system: str, code: str, expected: list[tuple[str, str]]) -> None:
    assert term.translate(system, code) == expected


@pytest.mark.parametrize(
    ("system", "code", "valueset", "expected"),
    [
        pytest.param(ICD, "F43.22", DIAG, ["F43"], id="icd-dotted-prefix"),
        pytest.param(ICD, "F4322", DIAG, ["F43"], id="icd-undotted-prefix"),
        pytest.param("urn:oid:2.16.840.1.113883.6.90", "f93.0", DIAG, ["F93"], id="icd-oid-lower"),
        pytest.param(ICD, "F34.81", DIAG, ["F3481", "F348"], id="icd-two-prefix-rows"),
        pytest.param(ICD, "F34.89", DIAG, ["F348"], id="icd-sibling"),
        pytest.param(ICD, "F98.21", DIAG, ["F982"], id="icd-dotted-prefix-row"),
        pytest.param(ICD, "F98.3", DIAG, [], id="icd-outside-prefix"),
        pytest.param(ICD, "F4", DIAG, [], id="icd-shorter-than-prefix"),
        pytest.param(ICD, "F84.0", DIAG, [], id="icd-autism-not-counted"),
        pytest.param(SCT, "F43", DIAG, [], id="other-system-same-code"),
        pytest.param(CPT, "90832", INTER, ["90832"], id="cpt-exact"),
        pytest.param(CPT, "908321", INTER, [], id="exact-is-not-prefix"),
        pytest.param(CPT, "9083", INTER, [], id="exact-shorter"),
        pytest.param(CPT, "96127", INTER, [], id="screening-not-intervention"),
        pytest.param(BB, "90837", INTER, ["90837"], id="bluebutton-carries-cpt"),
        pytest.param(BB, "h0004", INTER, ["H0004"], id="bluebutton-hcpcs"),
        pytest.param(CPT, "H2014", INTER, ["H2014"], id="cpt-system-hcpcs-code"),
        pytest.param("urn:oid:2.16.840.1.113883.6.14", "S9482", INTER, ["S9482"], id="hcpcs-old-oid"),
        pytest.param(VISIT, "BH-PSYTX-30", INTER, ["90832"], id="local-crosswalk"),
        pytest.param(VISIT, "BH-PCIT", INTER, ["90847"], id="local-crosswalk-pcit"),
        pytest.param(VISIT, "BH-SCREEN", INTER, [], id="local-screen-not-intervention"),
        pytest.param(VISIT, "WCC", INTER, [], id="local-well-child-not-counted"),
        pytest.param(VISIT, "90832", INTER, [], id="cpt-code-in-local-system"),
        pytest.param("http://example.org/cpt", "90832", INTER, [], id="unknown-system-never-matches"),
        pytest.param(CPT, "F43.22", DIAG, [], id="icd-code-in-cpt-system"),
    ],
)
def test_match(
    term: Terminology,
    *,
    issue_sets: Mapping[str, ValueSet],
    system: str,
    code: str,
    valueset: str,
    expected: list[str],
) -> None:
    assert [row.code for row in term.match(system, code, issue_sets[valueset])] == expected


def test_expand_keeps_validity_dates(term: Terminology, issue_sets: Mapping[str, ValueSet]) -> None:
    pairs = [
        (BB, "96158"),
        (ICD, "F34.81"),
        ("http://example.org/x", "F34.81"),
        (ICD, "F34.81"),
        (ICD, "Z99"),
    ]
    assert term.expand(pairs, issue_sets) == [
        CodeMatch(BB, "96158", INTER, date(2020, 1, 1), None),
        CodeMatch(ICD, "F34.81", DIAG, date(2016, 10, 1), None),
        CodeMatch(ICD, "F34.81", DIAG, None, None),
    ]


def test_expand_agrees_with_match(term: Terminology, reach_sets: Mapping[str, ValueSet]) -> None:
    pairs = [
        (system, code)
        for system in (CPT, HCPCS, BB, VISIT, ICD, "urn:oid:2.16.840.1.113883.6.12", "http://example.org/x")
        for code in ("90832", "96127", "h2000", "Q5001", "BH-INTAKE", "BH-PSYTX-60", "F43.2", "99392")
    ]
    expected = sorted(
        (system, code, name)
        for system, code in pairs
        for name, vs in reach_sets.items()
        for _ in term.match(system, code, vs)
    )
    got = sorted((m.raw_system, m.raw_code, m.valueset) for m in term.expand(pairs, reach_sets))
    assert got == expected
    assert ("https://ehr.example.org/fhir/CodeSystem/visit-type", "BH-INTAKE", "se-any-procedures") in got


def test_expand_is_fast(term: Terminology, issue_sets: Mapping[str, ValueSet]) -> None:
    pairs = [(ICD, f"F{n:04d}") for n in range(5000)] + [(CPT, f"{90000 + n}") for n in range(5000)]
    start = time.perf_counter()
    matches = term.expand(pairs, issue_sets)
    assert time.perf_counter() - start < 1.0
    assert any(m.raw_code == "F4300" for m in matches)
