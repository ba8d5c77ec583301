"""Reconciliation with OHA's member file on both engines: a cohort with one child per reason code
and a synthesised OHA file, the data-lag table, an all-agree file (with an EHR-only child that
claims mode rightly ignores), an empty denominator, a CCO filter, and the pure comparison's
remaining branches on hand-built results."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import text

from fhir_adapter.ingest.oha_file import OhaFile, OhaRow
from fhir_adapter.measure.spec import Mappings
from fhir_adapter.report import reconcile as r
from fhir_adapter.report import reconcile_run as rr
from fhir_adapter.settings import Settings
from fhir_adapter.store.db import Store
from fhir_adapter.store.evaluate import ChildResult, Evaluation, GroupResult
from tests import cohorts as c
from tests.measure.test_boundaries import load

MEASURE = "oregon-se-issue-focused"
START, END = date(2025, 1, 1), date(2025, 12, 31)
NOW = datetime(2026, 3, 1, tzinfo=UTC)
HEADER = "MEMBER_ID,NUMERATOR,DENOMINATOR,CCO\n"
LOCAL = "http://example.org/local-procedures"


def _kid(pid: str, birth: str = "2022-06-15", cco: str = "ALLCARE", **extra: Any) -> list[dict[str, Any]]:
    return [c.patient(pid, birth, **extra), c.full_year(pid, cco=cco)]


#: one child per reason (see EXPECTED); everyone in ALLCARE unless said
COHORT = [
    *_kid("young", "2025-03-01"),
    *_kid("moved"),
    c.patient("switch", "2022-06-15"),
    c.coverage("sw1", "switch", "2024-07-01", "2025-10-31"),
    c.coverage("sw2", "switch", "2025-11-01", None, cco="IHN"),
    c.patient("gap", "2022-06-15"),
    c.coverage("g1", "gap", "2024-07-01", "2025-03-31"),
    c.coverage("g2", "gap", "2025-06-01", None),
    *_kid("ourden"),
    *_kid("dead", deceasedDateTime="2025-05-05"),
    *_kid("secdx"), c.eob("e-secdx", "secdx", "2025-04-01", dx=("Z00.00", "F43.22")),
    *_kid("denied"), c.eob("e-denied", "denied", "2025-04-01", denied=True),
    *_kid("nodx"), c.eob("e-nodx", "nodx", "2025-04-01", dx=("Z00.00",)),
    *_kid("unk"), c.eob("e-unk", "unk", "2025-04-01", "X1", system=LOCAL),
    *_kid("noclaim"),
    *_kid("wcv"), c.eob("e-wcv", "wcv", "2025-04-01", "99392"),
    *_kid("preauth"), c.claim("c-preauth", "preauth", "2025-04-01", use="preauthorization"),
    *_kid("ourclaim"), c.eob("e-ourclaim", "ourclaim", "2025-03-01"),
    *_kid("recent"), c.eob("e-recent", "recent", "2025-11-01"),
    c.patient("unl", "2022-06-15", unlinked=True), c.full_year("unl"), c.eob("e-unl", "unl", "2025-05-01"),
    *_kid("ok"), c.eob("e-ok", "ok", "2025-02-02"),
    *_kid("okden"),
]  # fmt: skip

OHA_FILE = HEADER + "".join(
    f"M-{pid},{num},Y,{cco}\n"
    for pid, num, cco in [
        ("ghost", "Y", "ALLCARE"), ("young", "N", "ALLCARE"), ("moved", "N", "IHN"), ("switch", "N", "ALLCARE"),
        ("gap", "N", "ALLCARE"), ("dead", "N", "ALLCARE"), ("secdx", "Y", "ALLCARE"), ("denied", "Y", "ALLCARE"),
        ("nodx", "Y", "ALLCARE"), ("unk", "Y", "ALLCARE"), ("noclaim", "Y", "ALLCARE"), ("wcv", "Y", "ALLCARE"),
        ("preauth", "Y", "ALLCARE"), ("ourclaim", "N", "ALLCARE"), ("recent", "N", "ALLCARE"),
        ("ok", "Y", "ALLCARE"), ("okden", "N", "ALLCARE"),
    ]
)  # fmt: skip

#: (population, member id or patient, direction) -> reason
EXPECTED = [
    ("denominator", "M-ghost", "only-oha", "not-in-our-data"),
    ("denominator", "M-young", "only-oha", "age"),
    ("denominator", "M-moved", "cco-differs", "anchor-cco"),
    ("denominator", "M-switch", "only-oha", "anchor-cco"),
    ("denominator", "M-gap", "only-oha", "enrollment"),
    ("denominator", "M-dead", "only-oha", "deceased"),
    ("denominator", "M-ourden", "only-us", "enrollment"),
    ("denominator", "Patient/unl", "only-us", "no-member-id"),
    ("numerator", "M-ghost", "only-oha", "not-in-our-data"),
    ("numerator", "M-secdx", "only-oha", "diagnosis-position"),
    ("numerator", "M-denied", "only-oha", "denied-claim"),
    ("numerator", "M-nodx", "only-oha", "diagnosis-missing"),
    ("numerator", "M-unk", "only-oha", "unknown-code-system"),
    ("numerator", "M-noclaim", "only-oha", "no-claim"),
    ("numerator", "M-wcv", "only-oha", "code-not-in-list"),
    ("numerator", "M-preauth", "only-oha", "claim-not-counted"),
    ("numerator", "M-ourclaim", "only-us", "claim-not-in-oha"),
    ("numerator", "M-recent", "only-us", "data-lag"),
    ("numerator", "Patient/unl", "only-us", "no-member-id"),
]


def _primary(mappings: Mappings) -> Mappings:
    """The shipped mappings with the numerators' diagnosis position set to ``primary``."""
    spec = mappings.measure_for(MEASURE, END)
    groups = tuple(
        dataclasses.replace(g, numerator=dataclasses.replace(g.numerator, diagnosis_position="primary"))
        for g in spec.groups
    )
    measures = {**mappings.measures, (spec.id, spec.year): dataclasses.replace(spec, groups=groups)}
    return dataclasses.replace(mappings, measures=measures)


def _oha(tmp_path: Path, settings: Settings, mappings: Mappings, body: str, **kwargs: Any) -> OhaFile:
    path = tmp_path / "oha.csv"
    path.write_text(body, encoding="utf-8")
    return rr.read_oha(settings, path, MEASURE, END, mappings=mappings, **kwargs)


def _run(
    store: Store, settings: Settings, mappings: Mappings, oha: OhaFile, **kwargs: Any
) -> r.Reconciliation:
    return rr.run_reconciliation(
        settings, store, oha, MEASURE, START, END, mappings=mappings, clock=lambda: NOW, **kwargs
    )


@pytest.fixture
def every_reason(store: Store, settings: Settings, mappings: Mappings, tmp_path: Path) -> r.Reconciliation:
    load(store, COHORT, source="claims-feed")
    primary = _primary(mappings)
    oha = _oha(tmp_path, settings, primary, OHA_FILE)
    return _run(store, settings, primary, oha, oha_claims_through=date(2025, 6, 30))


def _key(d: r.Difference) -> tuple[str, str, str]:
    return (d.population, d.member_id or d.patient or "", d.direction)


@pytest.mark.parametrize(
    ("population", "who", "direction", "reason"), EXPECTED, ids=[f"{p}-{w}-{x}" for p, w, x, _ in EXPECTED]
)
def test_every_reason_code(
    every_reason: r.Reconciliation, population: str, who: str, direction: str, reason: str
) -> None:
    found = {_key(d): d.reason for d in every_reason.differences}
    assert found[(population, who, direction)] == reason


def test_every_reason_no_more_differences_and_summaries(every_reason: r.Reconciliation) -> None:
    assert sorted(_key(d) for d in every_reason.differences) == sorted((p, w, x) for p, w, x, _ in EXPECTED)
    summaries = {(s.group, s.population): s for s in every_reason.summaries}
    den = summaries[("all-enrolled", "denominator")]
    num = summaries[("all-enrolled", "numerator")]
    assert (den.both, den.only_oha, den.only_us, den.cco_differs) == (12, 5, 2, 1)
    assert (num.both, num.only_oha, num.only_us, num.cco_differs) == (1, 8, 3, 0)
    assert den.agreement == pytest.approx(12 / 19) and num.agreement == pytest.approx(1 / 12)
    assert dict(num.reasons) == {
        "not-in-our-data": 1, "diagnosis-position": 1, "denied-claim": 1, "diagnosis-missing": 1,
        "unknown-code-system": 1, "no-claim": 1, "code-not-in-list": 1, "claim-not-counted": 1,
        "claim-not-in-oha": 1, "data-lag": 1, "no-member-id": 1,
    }  # fmt: skip
    # Every reason code but only-ehr (impossible in claims mode) occurs in this cohort.
    assert {d.reason for d in every_reason.differences} == set(r.REASONS) - {"only-ehr"}
    assert set(r.REASON_TEXT) == set(r.REASONS)


def test_only_us_children_carry_dated_evidence(every_reason: r.Reconciliation) -> None:
    by_key = {_key(d): d for d in every_reason.differences}
    ourclaim = by_key[("numerator", "M-ourclaim", "only-us")]
    assert [(e.reference, e.date_text, e.source) for e in ourclaim.evidence] == [
        ("ExplanationOfBenefit/e-ourclaim", "2025-03-01", "claims-feed")
    ]
    assert [e.reference for e in by_key[("denominator", "M-ourden", "only-us")].evidence] == [
        "Coverage/cov-ourden-ALLCARE"
    ]
    assert all(not d.evidence for d in every_reason.differences if d.direction == "only-oha")
    assert {_key(d) for d in every_reason.dispute} == {
        _key(d) for d in every_reason.differences if d.direction == "only-us"
    }


def test_outputs(every_reason: r.Reconciliation) -> None:
    files = rr.output_files(every_reason)
    assert set(files) == {"differences.csv", "dispute-packet.csv", "summary.json", "summary.md"}
    for name in ("differences.csv", "dispute-packet.csv"):
        data = files[name]
        assert data.startswith(b"\xef\xbb\xbf") and b"\n" not in data.replace(b"\r\n", b"")
    rows = files["differences.csv"].decode("utf-8-sig").split("\r\n")
    assert rows[0].split(",")[:10] == [
        "member_id", "patient", "cco", "population", "oha", "ours", "direction", "reason", "reason_text", "evidence",
    ]  # fmt: skip
    assert len([x for x in rows[1:] if x]) == len(EXPECTED)
    dispute = files["dispute-packet.csv"].decode("utf-8-sig")
    assert "ExplanationOfBenefit/e-ourclaim 2025-03-01 (source claims-feed)" in dispute
    assert "M-noclaim" not in dispute
    summary = orjson.loads(files["summary.json"])
    assert summary["sources"] == "claims" and summary["ohaRows"] == 17
    den = summary["populations"][0]
    assert (den["population"], den["both"], den["onlyOha"], den["onlyUs"], den["agreementRate"]) == (
        "denominator",
        12,
        5,
        2,
        round(12 / 19, 6),
    )
    assert summary["dataLag"]["ohaClaimsThrough"] == "2025-06-30" and summary["dataLag"]["lagging"] is False
    md = files["summary.md"].decode()
    assert "| all-enrolled | denominator | 12 | 5 | 2 | 63.2% | 1 |" in md
    assert "| `diagnosis-position` |" in md


def test_cco_filter_keeps_one_cco_on_both_sides(
    store: Store, settings: Settings, mappings: Mappings, tmp_path: Path
) -> None:
    load(store, COHORT, source="claims-feed")
    result = _run(store, settings, mappings, _oha(tmp_path, settings, mappings, OHA_FILE), cco="IHN")
    assert [(_key(d), d.reason) for d in result.differences] == [
        (("denominator", "M-moved", "only-oha"), "anchor-cco")
    ]
    den = result.summaries[0]
    assert (den.both, den.only_oha, den.only_us, den.agreement) == (0, 1, 0, 0.0)


def test_position_any_measure_has_no_diagnosis_position_reason(
    store: Store, settings: Settings, mappings: Mappings, tmp_path: Path
) -> None:
    """With the shipped ``any`` position the secondary-diagnosis claim counts: both agree."""
    load(store, COHORT, source="claims-feed")
    result = _run(store, settings, mappings, _oha(tmp_path, settings, mappings, OHA_FILE))
    assert "diagnosis-position" not in {d.reason for d in result.differences}
    assert ("numerator", "M-secdx", "only-oha") not in {_key(d) for d in result.differences}


LAG = [
    pytest.param(None, None, None, None, "no-claim", id="no-claims-feed-status"),
    pytest.param(date(2026, 1, 15), None, None, None, "data-lag", id="paid-through-before-run-out"),
    pytest.param(date(2026, 3, 31), None, None, None, "no-claim", id="paid-through-exactly-run-out"),
    pytest.param(date(2026, 3, 30), None, None, None, "data-lag", id="one-day-short-of-run-out"),
    pytest.param(date(2026, 4, 15), date(2026, 5, 31), None, None, "data-lag", id="older-than-oha"),
    pytest.param(date(2026, 4, 15), None, 120, None, "data-lag", id="longer-run-out"),
    pytest.param(date(2026, 4, 15), None, 0, None, "no-claim", id="no-run-out"),
    pytest.param(None, None, None, date(2026, 6, 1), "no-claim", id="last-data-day-stands-in"),
    pytest.param(None, None, None, date(2026, 2, 1), "data-lag", id="last-data-day-lagging"),
]


@pytest.mark.parametrize(("paid", "oha_through", "run_out", "last_day", "reason"), LAG)
def test_data_lag(
    store: Store, settings: Settings, mappings: Mappings, tmp_path: Path,
    paid: date | None, oha_through: date | None, run_out: int | None, last_day: date | None, reason: str,
) -> None:  # fmt: skip
    load(store, _kid("late"), source="claims-feed")
    if paid is not None or last_day is not None:
        with store.write() as conn:
            conn.execute(
                text(
                    "INSERT INTO source_status (source, kind, paid_through_day, last_loaded_at, last_data_day) "
                    "VALUES ('claims-feed', 'claims', :p, 0, :l), ('elig', 'enrollment', :late, 0, NULL)"
                ),
                {
                    "p": paid.toordinal() if paid else None,
                    "l": last_day.toordinal() if last_day else None,
                    "late": date(2027, 1, 1).toordinal(),
                },
            )
    oha = _oha(tmp_path, settings, mappings, HEADER + "M-late,Y,Y,ALLCARE\n")
    result = _run(store, settings, mappings, oha, oha_claims_through=oha_through, run_out_days=run_out)
    assert [(_key(d), d.reason) for d in result.differences] == [
        (("numerator", "M-late", "only-oha"), reason)
    ]
    assert result.lag.paid_through == (paid or last_day)


def test_all_agree_and_claims_mode_ignores_ehr_only_children(
    store: Store, settings: Settings, mappings: Mappings, tmp_path: Path
) -> None:
    load(store, [*_kid("ok"), c.eob("e-ok", "ok", "2025-02-02"), *_kid("okden"), *_kid("ehr")], "claims-feed")
    load(
        store,
        [c.patient("ehr", "2022-06-15"), c.encounter("v1", "ehr", "2025-09-09", reason="F43.22")],
        "ehr-a",
    )
    body = HEADER + "M-ok,Y,Y,ALLCARE\nM-okden,N,Y,ALLCARE\nM-ehr,N,Y,ALLCARE\n"
    result = _run(store, settings, mappings, _oha(tmp_path, settings, mappings, body))
    assert result.differences == []
    assert [(s.population, s.both, s.agreement) for s in result.summaries] == [
        ("denominator", 3, 1.0), ("numerator", 1, 1.0),
    ]  # fmt: skip
    assert "No differences" in r.summary_markdown(result)


def test_denominator_of_zero(store: Store, settings: Settings, mappings: Mappings, tmp_path: Path) -> None:
    load(store, _kid("old", "2015-01-01"), "claims-feed")
    result = _run(store, settings, mappings, _oha(tmp_path, settings, mappings, HEADER))
    assert result.differences == []
    assert [(s.union, s.agreement) for s in result.summaries] == [(0, None), (0, None)]
    summary = r.summary_json(result)
    assert [p["agreementRate"] for p in summary["populations"]] == [None, None]
    assert "| n/a |" in r.summary_markdown(result)


def test_group_column_compares_each_group_it_names(
    store: Store, settings: Settings, mappings: Mappings, tmp_path: Path
) -> None:
    load(store, [*_kid("ok"), c.eob("e-ok", "ok", "2025-02-02"), *_kid("plain")], "claims-feed")
    cmap = tmp_path / "map.toml"
    cmap.write_text(
        '[columns]\nmember_id = "M"\nnumerator = "N"\ngroup = "G"\n[values.numerator]\nY = "true"\nN = "false"\n'
    )
    body = "M,N,G\nM-ok,Y,all-enrolled\nM-ok,Y,identified-need\nM-plain,N,all-enrolled\nM-plain,N,identified-need\n"
    result = _run(store, settings, mappings, _oha(tmp_path, settings, mappings, body, columns=cmap))
    assert [s.group for s in result.summaries] == ["all-enrolled"] * 2 + ["identified-need"] * 2
    assert [(_key(d), d.group, d.reason) for d in result.differences] == [
        (("denominator", "M-plain", "only-oha"), "identified-need", "no-claim")
    ]


# -- the pure comparison on hand-built results ---------------------------------------------------
def _child(
    member: str | None, den: bool = True, num: bool = False, reason: str = "no-qualifying-service",
    cco: str | None = "ALLCARE", age: int | None = 3, birth_conflict: bool = False, need_reason: str | None = None,
) -> ChildResult:  # fmt: skip
    groups = (
        GroupResult("all-enrolled", den, den, False, num, reason),
        GroupResult("identified-need", den and need_reason is None, den and need_reason is None, False, num,
                    need_reason or reason),
    )  # fmt: skip
    return ChildResult(
        person=f"m:{member}" if member else "u:s/x", subject_source="s", subject_id=member or "x", member_id=member,
        cco=cco, age=age, age_range=None if age is None else (age, age), sex=None, sex_is_birth_sex=False,
        race=None, ethnicity=None, language=None, disability=None, county=None, gaps=0, gap_days=0,
        anchor_ccos=1, birth_conflict=birth_conflict, groups=groups,
    )  # fmt: skip


def _evaluation(mappings: Mappings, children: list[ChildResult], sources: str = "claims") -> Evaluation:
    spec = mappings.measure_for(MEASURE, END)
    return Evaluation(spec, START, END, 0, sources, children)  # type: ignore[arg-type]


def _row(member: str, num: bool = False, den: bool = True, group: str = "all-enrolled") -> OhaRow:
    return OhaRow(f"oha.csv:{member}", member, "ALLCARE", den, num, group)


PURE = [
    pytest.param(_child("A", age=None), None, "all-enrolled", "denominator", "only-us", "age",
                 id="only-us-uncertain-age"),
    pytest.param(_child("A", birth_conflict=True), None, "all-enrolled", "denominator", "only-us", "age",
                 id="only-us-birth-dates-disagree"),
    pytest.param(_child("A", num=True, reason="qualifying-service"), _row("A", den=False), "all-enrolled",
                 "numerator", "only-us", "enrollment", id="only-us-numerator-outside-oha-denominator"),
    pytest.param(_child("A", need_reason="no-identified-need"), _row("A", group="identified-need"),
                 "identified-need", "denominator", "only-oha", "no-claim", id="need-without-claims"),
    pytest.param(_child("A", reason="ambiguous-birth-date", den=False), _row("A", num=True), "all-enrolled",
                 "numerator", "only-oha", "age", id="numerator-follows-the-denominator-reason"),
]  # fmt: skip


@pytest.mark.parametrize(("child", "row", "group", "population", "direction", "reason"), PURE)
def test_pure_branches(
    mappings: Mappings, child: ChildResult, row: OhaRow | None, group: str, population: str, direction: str,
    reason: str,
) -> None:  # fmt: skip
    result = r.reconcile(_evaluation(mappings, [child]), [row] if row else [], groups=[group])
    found = {(d.population, d.direction): d.reason for d in result.differences}
    assert found[(population, direction)] == reason


def test_need_denominator_with_claims_but_no_diagnosis(mappings: Mappings) -> None:
    child = _child("A", need_reason="no-identified-need")
    result = r.reconcile(
        _evaluation(mappings, [child]), [_row("A", group="identified-need")], groups=["identified-need"],
        claims={"A": r.ClaimsFacts(1, ("cpt|90834",), {"identified-need": ("cpt|90834",)})},
    )  # fmt: skip
    assert [(d.population, d.reason) for d in result.differences] == [("denominator", "diagnosis-missing")]


def test_only_ehr_is_impossible_in_claims_mode(mappings: Mappings) -> None:
    with pytest.raises(ValueError, match="sources='claims'"):
        r.reconcile(_evaluation(mappings, [], sources="all"), [], groups=["all-enrolled"])


def test_needed_facts(mappings: Mappings) -> None:
    ev = _evaluation(mappings, [_child("A"), _child("B", num=True, reason="qualifying-service"), _child("C")])
    want = r.needed(ev, [_row("A", num=True), _row("C"), _row("D", num=True)], ["all-enrolled"])
    # claims of the members OHA counts and we do not (D is unknown to us: asking costs nothing)
    assert want.member_ids == {"A", "D"}
