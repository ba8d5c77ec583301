"""Tests for fhir_adapter.mappings: the shipped mappings/ folder loads, and broken copies fail
with ``file:line`` messages (spec §2 "measures as data", §3 status/source on every rule)."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import pytest

from fhir_adapter.errors import MappingsError
from fhir_adapter.mappings import check_mappings, load_mappings
from fhir_adapter.measure.spec import STRATIFIER_IDS, Mappings

MAPPINGS = Path(__file__).resolve().parents[1] / "mappings"
IF25 = "oregon-se-issue-focused/2025/measure.toml"
REACH = "oregon-se-reach/2024/measure.toml"
INTER = "oregon-se-issue-focused/2025/valuesets/se-intervention-procedures.csv"
DIAG = "oregon-se-issue-focused/2025/valuesets/se-issue-diagnoses.csv"
CPT = "http://www.ama-assn.org/go/cpt"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
HCPCS = "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
VISIT = "https://ehr.example.org/fhir/CodeSystem/visit-type"
IF_ID, REACH_ID = "oregon-se-issue-focused", "oregon-se-reach"


@pytest.fixture(scope="module")
def mappings() -> Mappings:
    return load_mappings(MAPPINGS)


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    root = tmp_path / "mappings"
    shutil.copytree(MAPPINGS, root)
    return root


def edit(root: Path, relative: str, old: str, new: str) -> str:
    """Replace ``old`` by ``new`` once (append ``new`` when ``old`` is empty); return the text."""
    path = root / relative
    text = path.read_text(encoding="utf-8")
    if old:
        assert old in text, f"{old!r} not in {relative}"
        text = text.replace(old, new, 1)
    else:
        text += new
    path.write_text(text, encoding="utf-8")
    return text


# ---------------------------------------------------------------------------- happy path


def test_loads_every_measure_year(mappings: Mappings) -> None:
    assert sorted(mappings.measures) == [
        (IF_ID, 2025),
        (IF_ID, 2026),
        (REACH_ID, 2022),
        (REACH_ID, 2023),
        (REACH_ID, 2024),
    ]


@pytest.mark.parametrize(
    ("key", "groups", "age", "bands"),
    [
        pytest.param(
            (IF_ID, 2025), ["all-enrolled", "identified-need"], (1, 5), ["1-2", "3-5"], id="if-2025"
        ),
        pytest.param(
            (IF_ID, 2026), ["all-enrolled", "identified-need"], (1, 5), ["1-2", "3-5"], id="if-2026"
        ),
        pytest.param(
            (REACH_ID, 2024), ["any", "assessment", "treatment"], (0, 5), ["0", "1-2", "3-5"], id="reach"
        ),
    ],
)
def test_measure_shape(
    mappings: Mappings, key: tuple[str, int], groups: list[str], age: tuple[int, int], bands: list[str]
) -> None:
    spec = mappings.measures[key]
    assert [g.id for g in spec.groups] == groups
    assert (spec.age.min_age, spec.age.max_age) == age
    assert spec.age.provenance.status == "verified"
    assert [b.code for b in spec.age_bands] == bands
    assert spec.stratifiers == STRATIFIER_IDS
    assert spec.version.startswith(f"{key[1]}.")
    assert (spec.enrollment.scope, spec.enrollment.max_gaps, spec.enrollment.max_gap_days) == (
        "same-cco",
        1,
        45,
    )
    death, hospice = spec.exclusion("death"), spec.exclusion("hospice")
    assert death is not None and death.enabled
    assert hospice is not None and not hospice.enabled and hospice.valueset == "hospice"
    for group in spec.groups:
        assert group.numerator.procedures in spec.valuesets
        assert group.provenance.status == "assumption" and group.provenance.source


@pytest.mark.parametrize(
    ("group_id", "procedures", "diagnoses", "need"),
    [
        pytest.param(
            "all-enrolled", "se-intervention-procedures", "se-issue-diagnoses", None, id="all-enrolled"
        ),
        pytest.param(
            "identified-need",
            "se-intervention-procedures",
            "se-issue-diagnoses",
            "se-issue-diagnoses",
            id="identified-need",
        ),
    ],
)
def test_issue_focused_groups(
    mappings: Mappings, group_id: str, procedures: str, diagnoses: str, need: str | None
) -> None:
    group = next(g for g in mappings.measures[(IF_ID, 2025)].groups if g.id == group_id)
    assert group.numerator.procedures == procedures
    assert group.numerator.diagnoses == diagnoses
    assert group.numerator.diagnosis_position == "any"
    assert group.need_diagnoses == need


def test_reach_any_is_union_of_assessment_and_treatment(mappings: Mappings) -> None:
    vs = mappings.measures[(REACH_ID, 2024)].valuesets
    union = {(r.system, r.code) for r in vs["se-any-procedures"].rows}
    parts = {
        (r.system, r.code)
        for n in ("se-assessment-procedures", "se-intervention-procedures")
        for r in vs[n].rows
    }
    assert union == parts and len(union) == 37
    assert all(g.numerator.diagnoses is None for g in mappings.measures[(REACH_ID, 2024)].groups)


def test_value_set_rows_are_candidates_canonical_and_normalised(mappings: Mappings) -> None:
    spec = mappings.measures[(IF_ID, 2025)]
    diagnoses = spec.valuesets["se-issue-diagnoses"].rows
    assert {r.code for r in diagnoses} >= {"F43", "F988", "F5082", "Z69010", "T76"}
    assert all(r.match == "prefix" and r.system == ICD for r in diagnoses)
    for key in mappings.measures:
        for vs in mappings.measures[key].valuesets.values():
            for row in vs.rows:
                assert row.provenance.status == "candidate"
                assert "UNVERIFIED" in row.provenance.source
                assert row.system in mappings.systems
                assert row.location.startswith(str(MAPPINGS))
                if row.system == CPT:
                    assert row.display == ""
    dated = {r.code: r.valid_from for r in diagnoses if r.valid_from}
    assert dated == {"F3481": date(2016, 10, 1)}


def test_shared_tables(mappings: Mappings) -> None:
    assert len(mappings.ccos) == 16
    assert all(("https://oregon.gov/oha/cco-id", c.id) in c.identifiers for c in mappings.ccos)
    assert {c.id for c in mappings.ccos} >= {"ADVANCED-HEALTH", "PSCS-MP", "YCCO"}
    crosswalk = {(lc.code, lc.target_code) for lc in mappings.local_codes}
    assert ("BH-PSYTX-30", "90832") in crosswalk and ("WCC", "99392") in crosswalk
    assert all(lc.system == VISIT and lc.target_system == CPT for lc in mappings.local_codes)
    assert mappings.aliases["https://bluebutton.cms.gov/resources/codesystem/hcpcs"] == HCPCS
    assert mappings.aliases[CPT] == CPT


@pytest.mark.parametrize(
    ("measure_id", "period_end", "year"),
    [
        pytest.param(IF_ID, date(2025, 12, 31), 2025, id="if-2025"),
        pytest.param(IF_ID, date(2026, 3, 31), 2026, id="if-2026-quarter"),
        pytest.param(IF_ID, date(2030, 12, 31), 2026, id="if-latest-earlier"),
        pytest.param(REACH_ID, date(2024, 12, 31), 2024, id="reach-2024"),
    ],
)
def test_measure_for(mappings: Mappings, measure_id: str, period_end: date, year: int) -> None:
    assert mappings.measure_for(measure_id, period_end).year == year


def test_hashes_are_stable_and_local(mappings: Mappings, copy: Path) -> None:
    same = load_mappings(copy)
    assert same.hash == mappings.hash and len(same.hash) == 64
    assert {k: s.hash for k, s in same.measures.items()} == {k: s.hash for k, s in mappings.measures.items()}
    edit(copy, DIAG, "", f"{ICD},F99,prefix,,,,candidate,hash test (UNVERIFIED)\n")
    changed = load_mappings(copy)
    assert changed.hash != mappings.hash
    assert changed.measures[(IF_ID, 2025)].hash != mappings.measures[(IF_ID, 2025)].hash
    assert changed.measures[(IF_ID, 2026)].hash == mappings.measures[(IF_ID, 2026)].hash


def test_value_set_system_alias_and_dotted_code_are_normalised(copy: Path) -> None:
    edit(copy, DIAG, "", "urn:oid:2.16.840.1.113883.6.90,f99.1,prefix,,,,candidate,alias test (UNVERIFIED)\n")
    rows = load_mappings(copy).measures[(IF_ID, 2025)].valuesets["se-issue-diagnoses"].rows
    assert (rows[-1].system, rows[-1].code) == (ICD, "F991")


def test_check_mappings_summarises(mappings: Mappings) -> None:
    lines = check_mappings(MAPPINGS)
    text = "\n".join(lines)
    assert mappings.hash[:12] in lines[0]
    assert "CCOs 16" in text and "local codes 8" in text
    assert f"{IF_ID} 2026 version 2026.0.0" in text
    assert "se-any-procedures: 37 rows (candidate 37)" in text


# ---------------------------------------------------------------------------- broken copies

CASES = [
    pytest.param(IF25, "[age]\n", "[age]\nmn = 1\n", "mn = 1", "unknown key 'mn'", id="unknown-key"),
    pytest.param(IF25, 'scope = "same-cco"\n', "", "[enrollment]", "missing key 'scope'", id="missing-key"),
    pytest.param(
        IF25, "max_gaps = 1", 'max_gaps = "1"', 'max_gaps = "1"', "must be an integer", id="wrong-type"
    ),
    pytest.param(
        IF25,
        'title = "All enrolled children"',
        'title = "All enrolled children',
        "All enrolled children",
        "invalid TOML",
        id="toml-syntax",
    ),
    pytest.param(
        IF25, 'status = "verified"', 'status = "maybe"', "maybe", "status 'maybe'", id="bad-rule-status"
    ),
    pytest.param(
        IF25, "year = 2025", "year = 2024", "year = 2024", "does not match its folder", id="year-mismatch"
    ),
    pytest.param(
        REACH,
        'id = "oregon-se-reach"',
        'id = "oregon-se-other"',
        "se-other",
        "does not match",
        id="id-mismatch",
    ),
    pytest.param(
        IF25,
        '"county"]',
        '"county", "zip"]',
        "stratifiers =",
        "stratifier 'zip'",
        id="stratifier-not-allowed",
    ),
    pytest.param(
        IF25, 'code = "3-5"\nmin = 3', 'code = "3-5"\nmin = 2', "min = 2", "overlaps", id="age-band-overlap"
    ),
    pytest.param(IF25, "min = 3\nmax = 5\n", "min = 3\nmax = 6\n", "max = 6", "outside", id="band-outside"),
    pytest.param(
        IF25,
        'need_diagnoses = "se-issue-diagnoses"',
        'need_diagnoses = "se-nope"',
        "se-nope",
        "unknown value set 'se-nope'",
        id="unknown-valueset-reference",
    ),
    pytest.param(
        REACH,
        'file = "valuesets/se-assessment-procedures.csv"',
        'include = ["se-any-procedures"]',
        'include = ["se-assessment-procedures"',
        "include cycle",
        id="include-cycle",
    ),
    pytest.param(
        REACH,
        'file = "valuesets/hospice.csv"',
        'file = "valuesets/no.csv"',
        "no.csv",
        "not found",
        id="missing-file",
    ),
    pytest.param(
        INTER, "", f"{CPT},90832,exact,,,,candidate,dup\n", ",dup", "duplicate row", id="duplicate-row"
    ),
    pytest.param(
        INTER,
        "",
        "http://example.org/x,1,exact,,,,candidate,s\n",
        "example.org",
        "unknown code system",
        id="unknown-sys",
    ),
    pytest.param(INTER, "", f"{CPT},99999,exact,,,,,src\n", "99999", "missing status", id="missing-status"),
    pytest.param(
        INTER, "", f"{CPT},99999,exact,,,,candidate,\n", "99999", "missing source", id="missing-source"
    ),
    pytest.param(
        INTER, "", f"{CPT},99999,exact,,,,guess,s\n", "99999", "status 'guess'", id="bad-code-status"
    ),
    pytest.param(
        INTER, "", f"{CPT},99999,exact,2025-13-01,,,candidate,s\n", "99999", "valid_from", id="bad-date"
    ),
    pytest.param(
        INTER,
        "",
        f"{CPT},99999,exact,2025-02-01,2025-01-01,,candidate,s\n",
        "99999",
        "after valid_to",
        id="from>to",
    ),
    pytest.param(
        INTER, "", f"{CPT},99999,fuzzy,,,,candidate,s\n", "99999", "match 'fuzzy'", id="bad-match-kind"
    ),
    pytest.param(
        INTER, "", f"{CPT},99999,exact,,,Words,candidate,s\n", "99999", "CPT descriptor", id="cpt-display"
    ),
    pytest.param(INTER, "", f"{CPT},99999,exact\n", "99999", "expected 8 fields", id="short-row"),
    pytest.param(
        INTER, "system,code,match,", "system,code,kind,", "kind", "unknown columns: kind", id="bad-header"
    ),
    pytest.param(
        "system-aliases.csv",
        "",
        "urn:oid:1.2,http://example.org/x,assumption,s\n",
        "1.2,",
        "canonical",
        id="alias",
    ),
    pytest.param(
        "local-codes.csv",
        "",
        f"{VISIT},BH-X,http://example.org/x,1,,assumption,s\n",
        "BH-X",
        "unknown code",
        id="local",
    ),
    pytest.param(
        "ccos.csv",
        "",
        "NEW,New CCO,https://oregon.gov/oha/cco-id,YCCO,assumption,s\n",
        "NEW,",
        "already",
        id="cco",
    ),
    pytest.param(
        "code-systems.csv", "", "urn:x,X,lower,verified,s\n", "urn:x", "normalise 'lower'", id="normalise"
    ),
]


@pytest.mark.parametrize(("relative", "old", "new", "marker", "message"), CASES)
def test_broken_mappings_name_file_and_line(
    copy: Path, *, relative: str, old: str, new: str, marker: str, message: str
) -> None:
    text = edit(copy, relative, old, new)
    line = next(n for n, content in enumerate(text.splitlines(), 1) if marker in content)
    with pytest.raises(MappingsError) as caught:
        load_mappings(copy)
    assert message in str(caught.value)
    assert caught.value.location == f"{copy / relative}:{line}"


def test_death_exclusion_applies_when_not_listed(tmp_path: Path) -> None:
    """Edge rule 10: death applies unless measure.toml says otherwise."""
    import shutil

    root = tmp_path / "mappings"
    shutil.copytree(Path(__file__).resolve().parent.parent / "mappings", root)
    toml = root / "oregon-se-issue-focused" / "2025" / "measure.toml"
    text = toml.read_text()
    start = text.index('[[exclusion]]\nid = "death"')
    end = text.index("[[exclusion]]", start + 10)
    toml.write_text(text[:start] + text[end:])
    spec = load_mappings(root).measures[("oregon-se-issue-focused", 2025)]
    death = spec.exclusion("death")
    assert death is not None and death.enabled


def test_cpt_display_refused_under_the_hcpcs_system(tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "mappings"
    shutil.copytree(Path(__file__).resolve().parent.parent / "mappings", root)
    csv_path = root / "oregon-se-issue-focused" / "2025" / "valuesets" / "se-intervention-procedures.csv"
    csv_path.write_text(
        csv_path.read_text()
        + "https://bluebutton.cms.gov/resources/codesystem/hcpcs,90899,exact,,,Some descriptor,candidate,x\n"
    )
    with pytest.raises(MappingsError, match="CPT descriptor"):
        load_mappings(root)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        pytest.param('code = "1-2"\nmin = 1\nmax = 2\nstatus = "assumption"\n', 'code = "1-2"\nmin = 1\nmax = 2\n',
                     "missing key .status.", id="age-band-without-provenance"),
        pytest.param('code = "1-2"\nmin = 1\nmax = 2', 'code = "1-2"\nmin = 1\nmax = 1', "uncovered",
                     id="age-bands-leave-a-gap"),
    ],
)  # fmt: skip
def test_age_band_rules(tmp_path: Path, old: str, new: str, message: str) -> None:
    root = tmp_path / "mappings"
    shutil.copytree(Path(__file__).resolve().parent.parent / "mappings", root)
    toml = root / "oregon-se-issue-focused" / "2025" / "measure.toml"
    text = toml.read_text()
    assert old in text
    toml.write_text(text.replace(old, new, 1))
    with pytest.raises(MappingsError, match=message):
        load_mappings(root)
