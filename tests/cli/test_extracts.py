"""``load-enrollment`` and ``load-claims`` end to end: extracts in through the command line, on
SQLite and PostgreSQL, then claims-mode evaluation per child (spec §3) and REALD strata (§4)."""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import text

from fhir_adapter.cli import main
from fhir_adapter.errors import MappingsError
from fhir_adapter.mappings import check_mappings
from fhir_adapter.measure.spec import Mappings
from fhir_adapter.report.checks import check_measure_report
from fhir_adapter.report.conformance import build_measure
from fhir_adapter.settings import DEFAULT_CANONICAL_BASE, DEFAULT_MEMBER_ID_SYSTEM, Settings
from fhir_adapter.store.db import Store
from fhir_adapter.store.evaluate import ChildResult, Evaluation
from fhir_adapter.store.sources import read_source_status
from fhir_adapter.workflow import EvaluationRequest, build_report, report_context, run_evaluation
from tests import cohorts as c
from tests.conftest import ROOT, TZ
from tests.ingest.test_claims import line
from tests.ingest.test_claims import write_csv as write_claims
from tests.ingest.test_enrollment import span
from tests.ingest.test_enrollment import write_csv as write_enrollment

MEASURE = "oregon-se-issue-focused"


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def url_of(store: Store) -> str:
    return store.engine.url.render_as_string(hide_password=False)


def evaluate(store: Store, mappings: Mappings, as_of: datetime | None = None) -> Evaluation:
    settings = Settings(database_url=url_of(store), mappings_dir=ROOT / "mappings")
    request = EvaluationRequest(MEASURE, date(2025, 1, 1), date(2025, 12, 31), "claims", as_of=as_of)
    return run_evaluation(settings, store, request, evidence=False, mappings=mappings)


def results(ev: Evaluation) -> dict[str, tuple[int, int, str, str | None]]:
    """member id → (denominator, numerator, reason, CCO) in the all-enrolled group."""
    out = {}
    for child in ev.children:
        g = child.groups[0]
        out[str(child.member_id)] = (int(g.den), int(g.num), g.reason, child.cco)
    return out


ELIGIBILITY = [
    span(member_id="PAID", reald_race_ethnicity="Latino/a/x", reald_language="Spanish",
         reald_disability="None reported"),
    span(member_id="DENIED"),
    span(member_id="VOIDED"),
    span(member_id="REPLOUT"),
    span(member_id="REPLIN"),
    span(member_id="GAP45", span_end="2025-06-30"),
    span(member_id="GAP45", span_start="2025-08-15"),
    span(member_id="GAP46", span_end="2025-06-30"),
    span(member_id="GAP46", span_start="2025-08-16"),
    span(member_id="SWITCH", cco="IHN", span_end="2025-01-20"),
    span(member_id="SWITCH", span_start="2025-01-21"),
    span(member_id="SWITCHLATE", cco="IHN", span_end="2025-03-31"),
    span(member_id="SWITCHLATE", span_start="2025-04-01"),
    span(member_id="RETRO"),
    span(member_id="CAWEM", benefit_package="CWM"),
]  # fmt: skip
CLAIMS = [
    line(claim_id="CP", member_id="PAID"),
    # a paid non-qualifying line and a denied qualifying line: the denial drops only its line
    line(claim_id="CD", member_id="DENIED", procedure_code="99213", paid_date="2025-05-02"),
    line(claim_id="CD", member_id="DENIED", line_number="2", status="D", denial_reason="96", paid_date="2025-05-02"),
    line(claim_id="CV1", member_id="VOIDED"),
    line(claim_id="CV2", member_id="VOIDED", frequency="8", adjusted_claim_id="CV1"),
    line(claim_id="CR1", member_id="REPLOUT"),
    line(claim_id="CR2", member_id="REPLOUT", procedure_code="99213", frequency="7", adjusted_claim_id="CR1"),
    line(claim_id="CI1", member_id="REPLIN", procedure_code="99213"),
    line(claim_id="CI2", member_id="REPLIN", frequency="7", adjusted_claim_id="CI1", paid_date="2025-06-30"),
    line(claim_id="CG45", member_id="GAP45", from_date="2025-09-01", paid_date="2025-09-20"),
    line(claim_id="CG46", member_id="GAP46", from_date="2025-09-01", paid_date="2025-09-20"),
]  # fmt: skip
EXPECTED = {
    "PAID": (1, 1, "qualifying-service", "ALLCARE"),
    "DENIED": (1, 0, "denied-claim-only", "ALLCARE"),
    "VOIDED": (1, 0, "no-qualifying-service", "ALLCARE"),
    "REPLOUT": (1, 0, "no-qualifying-service", "ALLCARE"),
    "REPLIN": (1, 1, "qualifying-service", "ALLCARE"),
    "GAP45": (1, 1, "qualifying-service", "ALLCARE"),
    "GAP46": (0, 0, "enrollment-gap", "ALLCARE"),
    "SWITCH": (1, 0, "no-qualifying-service", "ALLCARE"),
    "SWITCHLATE": (0, 0, "enrollment-gap", "ALLCARE"),
    "RETRO": (1, 0, "no-qualifying-service", "ALLCARE"),
    "CAWEM": (0, 0, "not-enrolled-on-anchor", None),
}


def test_extracts_end_to_end(tmp_path: Path, store: Store, mappings: Mappings) -> None:
    db = url_of(store)
    elig = write_enrollment(tmp_path / "eligibility.csv", ELIGIBILITY)
    loaded = run("load-enrollment", str(elig), "--database", db)
    assert loaded.exit_code == 0, loaded.stderr
    assert "15 rows, 11 members, 14 spans; 1 spans skipped (CWM 1)" in loaded.stderr
    claims = write_claims(tmp_path / "claims.csv", CLAIMS)
    loaded = run("load-claims", str(claims), "--database", db)
    assert loaded.exit_code == 0, loaded.stderr
    assert "11 rows, 10 claims (2 replacements, 1 voids), 11 lines (1 denied)" in loaded.stderr
    assert "paid through 2025-09-20" in loaded.stderr
    before_retro = datetime.now(UTC)

    ev = evaluate(store, mappings)
    assert results(ev) == EXPECTED

    # REALD values lead the strata; EHR-less children are "missing".
    summary = build_report(ev, report_context(Settings(), ev.spec.hash), "summary")
    assert check_measure_report(summary, build_measure(ev.spec, DEFAULT_CANONICAL_BASE)) == []
    strata = {
        s["id"]: {x["value"]["text"]: x for x in s["stratum"]} for s in summary["group"][0]["stratifier"]
    }
    assert set(strata["race-ethnicity"]) == {"Latino/a/x", "missing"}
    assert set(strata["language"]) == {"Spanish", "missing"}
    assert set(strata["disability"]) == {"None reported", "missing"}
    latino = {
        p["code"]["coding"][0]["code"]: p["count"]
        for p in strata["race-ethnicity"]["Latino/a/x"]["population"]
    }
    assert (latino["denominator"], latino["numerator"]) == (1, 1)

    # A retroactive change for one member: its span ended in May. Other members are untouched
    # (snapshot per member) and the earlier report is reproduced as of before the load.
    retro = write_enrollment(tmp_path / "retro.csv", [span(member_id="RETRO", span_end="2025-05-31")])
    loaded = run("load-enrollment", str(retro), "--database", db)
    assert loaded.exit_code == 0, loaded.stderr
    after = results(evaluate(store, mappings))
    assert after == {**EXPECTED, "RETRO": (0, 0, "not-enrolled-on-anchor", None)}
    assert results(evaluate(store, mappings, as_of=before_retro)) == EXPECTED
    status = read_source_status(store)
    assert (status["eligibility"].kind, status["claims"].paid_through) == ("enrollment", date(2025, 9, 20))


def _child(ev: Evaluation, member: str) -> ChildResult:
    return next(ch for ch in ev.children if ch.member_id == member)


def test_eob_ndjson_replacement_chain(tmp_path: Path, store: Store, mappings: Mappings) -> None:
    """CARIN BB NDJSON through load-claims: a chain e1 ← e2 ← e3 linked by ``related``; only the
    end of a chain counts."""
    db = url_of(store)
    elig = write_enrollment(tmp_path / "e.csv", [span(member_id="OUT"), span(member_id="IN")])
    assert run("load-enrollment", str(elig), "--database", db).exit_code == 0
    number = "http://payer.example/claim-no"

    def eob(eid: str, member: str, day: str, code: str, prior: str | None) -> dict[str, Any]:
        r = c.eob(eid, member, day, code)
        r["identifier"] = [{"system": number, "value": eid}]
        r["payment"] = {"date": "2025-10-01"}
        if prior:
            r["related"] = [{"reference": {"system": number, "value": prior},
                             "relationship": c.replaces("Claim", prior)["relationship"]}]  # fmt: skip
        return r

    chain = [
        c.patient("OUT", None, member="OUT"),
        c.patient("IN", None, member="IN"),
        eob("o1", "OUT", "2025-03-01", "90834", None),
        eob("o2", "OUT", "2025-03-01", "90837", "o1"),
        eob("o3", "OUT", "2025-03-01", "99213", "o2"),  # the last word: not a qualifying code
        eob("i1", "IN", "2025-03-01", "99213", None),
        eob("i2", "IN", "2025-03-01", "99214", "i1"),
        eob("i3", "IN", "2025-03-01", "90834", "i2"),
    ]
    path = tmp_path / "eob.ndjson"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in chain))
    loaded = run("load-claims", str(path), "--database", db, "--source", "carin")
    assert loaded.exit_code == 0, loaded.stderr
    assert "8 resources read, 0 rejected; paid through 2025-10-01" in loaded.stderr
    ev = evaluate(store, mappings)
    assert _child(ev, "OUT").groups[0].reason == "no-qualifying-service"
    assert _child(ev, "IN").groups[0].reason == "qualifying-service"
    bad = tmp_path / "bad.ndjson"
    bad.write_bytes(orjson.dumps(chain[2]) + b"\n{oops\n")
    loaded = run("load-claims", str(bad), "--database", db, "--source", "carin")
    assert loaded.exit_code == 3
    assert f"{bad}:2: not JSON" in loaded.stderr


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.db'}"


def _count(db: str) -> int:
    store = Store.open(db, tz=TZ, member_system=DEFAULT_MEMBER_ID_SYSTEM)
    try:
        with store.read() as conn:
            return int(conn.execute(text("SELECT COUNT(*) FROM resources")).scalar_one())
    finally:
        store.close()


@pytest.mark.parametrize(
    ("rows", "errors"),
    [
        pytest.param(
            [span(), span(member_id=""), span(member_id="B2", birth_date="2021-13-01"), span(member_id="C3")],
            [":3: missing member id (column member_id)",
             ":4: '2021-13-01' is not a date in %Y-%m-%d, %m/%d/%Y, %Y%m%d (column birth_date)"],
            id="bad-date-and-missing-member-id",
        ),
    ],
)  # fmt: skip
def test_enrollment_errors_name_file_and_line(
    tmp_path: Path, db: str, rows: list[dict[str, str]], errors: list[str]
) -> None:
    path = write_enrollment(tmp_path / "e.csv", rows)
    result = run("load-enrollment", str(path), "--database", db)
    assert result.exit_code == 3
    assert f"2 bad rows in {path}; nothing was written" in result.stderr
    for error in errors:
        assert f"{path}{error}" in result.stderr
    assert _count(db) == 0


def test_unknown_header_is_an_error_at_line_1(tmp_path: Path, db: str) -> None:
    path = tmp_path / "e.csv"
    path.write_text("MEMBER,CCO\nA1,ALLCARE\n")
    result = run("load-enrollment", str(path), "--database", db)
    assert result.exit_code == 3
    assert f"{path}:1: header lacks columns member_id ('MEMBER_ID')" in result.stderr
    claims = tmp_path / "c.csv"
    claims.write_text("CLAIM,LINE\nC1,1\n")
    result = run("load-claims", str(claims), "--database", db)
    assert result.exit_code == 3
    assert f"{claims}:1: header lacks columns claim_id ('CLAIM_ID')" in result.stderr
    assert _count(db) == 0


def test_claims_errors_name_file_and_line(tmp_path: Path, db: str) -> None:
    path = write_claims(tmp_path / "c.csv", [line(), line(claim_id="C2", member_id="", from_date="x")])
    result = run("load-claims", str(path), "--database", db)
    assert result.exit_code == 3
    assert f"{path}:3: missing member id (column member_id)" in result.stderr
    assert f"{path}:3: 'x' is not a date" in result.stderr
    assert _count(db) == 0


def test_columns_override_and_fixed_width(tmp_path: Path, db: str) -> None:
    fixed = ROOT / "mappings" / "extracts" / "enrollment-fixed.toml"
    record = "A1".ljust(12) + "ALLCARE".ljust(16) + "20240101" + " " * 8 + "20210505" + "F"
    path = tmp_path / "elig.txt"
    path.write_text(
        record + "\n\n" + "B2".ljust(12) + "IHN".ljust(16) + "20240101" + "20991231" + "20220202M\n"
    )
    result = run("load-enrollment", str(path), "--columns", str(fixed), "--database", db)
    assert result.exit_code == 0, result.stderr
    assert "2 rows, 2 members, 2 spans" in result.stderr
    missing = run("load-enrollment", str(path), "--columns", str(tmp_path / "nope.toml"), "--database", db)
    assert missing.exit_code == 3
    assert "column map not found" in missing.stderr


def test_columns_do_not_apply_to_ndjson(tmp_path: Path, db: str) -> None:
    path = tmp_path / "eob.ndjson"
    path.write_bytes(orjson.dumps(c.eob("e", "p", "2025-03-01")) + b"\n")
    result = run("load-claims", str(path), "--columns", "x.toml", "--database", db)
    assert result.exit_code == 2
    assert "--columns applies to CSV" in result.stderr


def test_unknown_cco_is_warned(tmp_path: Path, db: str) -> None:
    path = write_enrollment(tmp_path / "e.csv", [span(cco="ALLCARE-TYPO")])
    result = run("load-enrollment", str(path), "--database", db)
    assert result.exit_code == 0
    assert "CCO ids not in mappings/ccos.csv (those spans never count): ALLCARE-TYPO (1)" in result.stderr


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        pytest.param(
            "claims.toml", "[columns]\nclaim_id = 'X'", "lacks required fields", id="claims-missing-fields"
        ),
        pytest.param("enrollment-site.toml", None, "unknown [options]", id="enrollment-unknown-option"),
    ],
)
def test_mappings_check_reads_the_extract_maps(
    tmp_path: Path, name: str, text: str | None, message: str
) -> None:
    root = tmp_path / "mappings"
    shutil.copytree(ROOT / "mappings", root)
    lines = check_mappings(root)
    assert "extracts/claims.toml: claims column map (csv, 23 fields)" in lines
    assert "extracts/enrollment-fixed.toml: enrollment column map (fixed-width, 11 fields)" in lines
    base = (root / "extracts" / "enrollment.toml").read_text()
    (root / "extracts" / name).write_text(
        text if text is not None else base.replace("[options]\n", "[options]\nspare = 1\n")
    )
    with pytest.raises(MappingsError) as info:
        check_mappings(root)
    assert message in info.value.message
    assert str(info.value.location).startswith(str(root / "extracts" / name))
