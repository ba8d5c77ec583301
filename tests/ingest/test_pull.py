"""``pull`` in search mode: paging, incremental ``_lastUpdated``, servers without paging links,
source names; and, against an independent FHIR server (@medplum/fhir-router, tests/fhirserver),
the measure computed from pulled data equals the measure computed from the same resources
ingested directly."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from fhir_adapter import workflow
from fhir_adapter.cli import main
from fhir_adapter.errors import RemoteError, UsageError
from fhir_adapter.ingest.bulk_client import QuietReporter
from fhir_adapter.ingest.pull import (
    DEFAULT_TYPES,
    PullRequest,
    PullResult,
    check_base_url,
    default_source,
    pull,
    read_pull_state,
)
from fhir_adapter.ingest.runner import ingest_items
from fhir_adapter.measure.spec import Mappings
from fhir_adapter.settings import DEFAULT_MEMBER_ID_SYSTEM, Settings
from fhir_adapter.store.db import ParsedResource, Store
from fhir_adapter.synth import synthesize
from tests import cohorts as c
from tests.conftest import TZ
from tests.fhirserver import harness
from tests.ingest.fake_fhir import FakeConfig, FakeFhirServer

SOURCE = "ehr"


def _open(db: Path) -> Store:
    return Store.open(f"sqlite:///{db}", tz=TZ, member_system=DEFAULT_MEMBER_ID_SYSTEM)


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    store = _open(tmp_path / "pull.db")
    yield store
    store.close()


def _stamped(resource: dict[str, Any], when: str) -> dict[str, Any]:
    return {**resource, "meta": {"lastUpdated": when}}


def _resources() -> dict[str, list[dict[str, Any]]]:
    patients = [
        _stamped(c.patient(f"p{i}", "2021-01-01"), f"2025-05-0{1 + i % 3}T10:00:00Z") for i in range(7)
    ]
    coverage = [_stamped(c.full_year(f"p{i}"), "2025-05-01T10:00:00Z") for i in range(2)]
    return {"Patient": patients, "Coverage": coverage}


@pytest.fixture
def fake() -> Iterator[FakeFhirServer]:
    server = FakeFhirServer(FakeConfig(resources=_resources())).start()
    yield server
    server.stop()


def _settings(settings: Settings, **kw: Any) -> Settings:
    return settings.model_copy(update={"pull_page_size": 3, "pull_max_wait_seconds": 1.0, **kw})


def _pull(settings: Settings, store: Store, base: str, **kw: Any) -> PullResult:
    clock = kw.pop("clock", None)
    extra: dict[str, Any] = {"clock": clock} if clock else {}
    request = PullRequest(
        base_url=base, source=kw.pop("source", SOURCE), types=kw.pop("types", ("Patient", "Coverage")), **kw
    )
    return pull(settings, store, request, sleep=lambda _s: None, reporter=QuietReporter(), **extra)


def _stored(store: Store, source: str = SOURCE) -> set[tuple[str, str]]:
    with store.read() as conn:
        rows = conn.execute(
            text(
                "SELECT rtype, rid FROM resources WHERE source = :s AND superseded_at IS NULL AND deleted = 0"
            ),
            {"s": source},
        )
        return {(r[0], r[1]) for r in rows}


# -- paging and incremental runs (fake server) ------------------------------------------------


def test_pages_are_followed_until_there_is_no_next_link(
    settings: Settings, sqlite_store: Store, fake: FakeFhirServer
) -> None:
    result = _pull(_settings(settings), sqlite_store, fake.base)
    assert _stored(sqlite_store) == {("Patient", f"p{i}") for i in range(7)} | {
        ("Coverage", "cov-p0-ALLCARE"),
        ("Coverage", "cov-p1-ALLCARE"),
    }
    patient_requests = [r for r in fake.search_requests if r["type"] == "Patient"]
    assert [r.get("_page_offset") for r in patient_requests] == [None, "3", "6"]
    assert all(r["_count"] == "3" for r in patient_requests)
    assert result.pages == 4  # 3 Patient pages + 1 Coverage page
    assert (result.ingest.read, result.ingest.stats.created) == (9, 9)
    assert result.notes == [], "a server with paging links is not remarked on"


def test_incremental_since_is_remembered(
    settings: Settings, sqlite_store: Store, fake: FakeFhirServer
) -> None:
    fake.config.date_header = "Sat, 03 May 2025 09:00:00 GMT"
    first = _pull(_settings(settings), sqlite_store, fake.base)
    assert first.since_used is None
    assert all("_lastUpdated" not in r for r in fake.search_requests)
    # The server's clock at the start, minus the overlap (60 s by default).
    assert first.next_since == "2025-05-03T08:59:00.000Z"
    state = read_pull_state(sqlite_store, SOURCE)
    assert state is not None and (state.mode, state.since, state.base_url) == (
        "search",
        first.next_since,
        fake.base,
    )

    fake.search_requests.clear()
    fake.config.date_header = "Sun, 04 May 2025 09:00:00 GMT"
    second = _pull(_settings(settings), sqlite_store, fake.base)
    assert {r["_lastUpdated"] for r in fake.search_requests} == {"gt2025-05-03T08:59:00.000Z"}
    assert second.since_used == "2025-05-03T08:59:00.000Z"
    assert second.ingest.read == 2, "only p2 and p5 changed after the remembered start"
    assert second.ingest.stats.unchanged == 2
    assert read_pull_state(sqlite_store, SOURCE).since == "2025-05-04T08:59:00.000Z"  # type: ignore[union-attr]


def test_explicit_since_overrides_and_local_clock_without_date(
    settings: Settings, sqlite_store: Store, fake: FakeFhirServer
) -> None:
    started = datetime(2025, 7, 1, 12, 0, 0, tzinfo=UTC)
    result = _pull(
        _settings(settings, pull_since_overlap_seconds=0),
        sqlite_store,
        fake.base,
        since=datetime(2025, 5, 1, 12, tzinfo=UTC),
        clock=lambda: started,
    )
    assert {r["_lastUpdated"] for r in fake.search_requests} == {"gt2025-05-01T12:00:00.000Z"}
    assert result.ingest.read == 4  # Patients stamped 2025-05-02 and -03
    assert result.next_since == "2025-07-01T12:00:00.000Z", "no Date header: the local start"


def test_server_without_paging_links_gives_one_page(
    settings: Settings, sqlite_store: Store, fake: FakeFhirServer
) -> None:
    fake.config.paging = False
    result = _pull(_settings(settings, pull_page_size=50), sqlite_store, fake.base)
    assert result.notes == [
        "Patient: the server sent no paging links; took its one page (7 resources)",
        "Coverage: the server sent no paging links; took its one page (2 resources)",
    ]
    assert result.incomplete == []
    assert len(_stored(sqlite_store)) == 9


def test_types_the_server_does_not_offer_are_skipped(
    settings: Settings, sqlite_store: Store, fake: FakeFhirServer
) -> None:
    fake.config.unsupported = frozenset({"Claim"})
    result = _pull(_settings(settings), sqlite_store, fake.base, types=("Claim", "Patient", "Coverage"))
    assert result.notes == [
        "Claim: skipped, the server does not offer it (HTTP 404: error: Claim is not supported here)"
    ]
    assert len(_stored(sqlite_store)) == 9
    assert result.next_since is not None, "a type the server lacks does not make the run incomplete"


def test_truncated_page_without_links_is_incomplete(
    settings: Settings, sqlite_store: Store, fake: FakeFhirServer
) -> None:
    fake.config.paging = False
    result = _pull(_settings(settings), sqlite_store, fake.base)
    assert result.incomplete == ["Patient: the server reported 7 matches but gave 3 and no next link"]
    assert result.next_since is None
    assert read_pull_state(sqlite_store, SOURCE) is None, "an incomplete run is not a starting point"
    assert len(_stored(sqlite_store)) == 5, "what came is kept"


def test_cli_exit_codes_and_summary(settings: Settings, fake: FakeFhirServer, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    runner = CliRunner()
    ok = runner.invoke(
        main, ["pull", "--base", fake.base, "--types", "Patient,Coverage", "--database", db, "--quiet"]
    )
    assert ok.exit_code == 0, ok.stderr
    assert f"search pull from {fake.base} as source '127.0.0.1-{fake.port}'" in ok.stderr
    assert "2 pages, 9 resources read" in ok.stderr
    assert "9 created" in ok.stderr

    fake.config.paging = False
    fake.config.resources["Patient"] = [{"resourceType": "Patient"}, *_resources()["Patient"]]
    bad = runner.invoke(
        main,
        ["pull", "--base", fake.base, "--types", "Patient", "--database", db, "--quiet", "--source", "x"],
        env={"FHIR_ADAPTER_PULL_PAGE_SIZE": "5"},
    )
    assert bad.exit_code == 1, bad.stderr
    assert "Patient search page 1, Bundle.entry[0]: Patient has no id" in bad.stderr
    assert (
        "the pull is incomplete, the next run starts from the same point: Patient: the server reported 8"
        in bad.stderr
    )

    fake.config.resources["Patient"] = [*_resources()["Patient"], {"resourceType": "Patient"}]
    invalid = runner.invoke(
        main,
        ["pull", "--base", fake.base, "--types", "Patient", "--database", db, "--quiet", "--source", "y"],
    )
    assert invalid.exit_code == 3, invalid.stderr
    assert "1 rejected" in invalid.stderr


@pytest.mark.parametrize(
    ("args", "words"),
    [
        pytest.param(["--base", "ftp://x/fhir"], "not an http(s) URL", id="scheme"),
        pytest.param(["--base", "https://x/fhir?a=1"], "no query", id="query"),
        pytest.param(
            ["--base", "https://x/fhir", "--types", "Patient,Nope"],
            "Nope is not an R4 resource type",
            id="type",
        ),
        pytest.param(["--base", "https://x/fhir", "--group", "g"], "need --bulk", id="group-without-bulk"),
        pytest.param(
            ["--base", "https://x/fhir", "--bulk", "--group", "g", "--patient-level"],
            "not both",
            id="both-levels",
        ),
        pytest.param(
            ["--base", "https://x/fhir", "--client-id", "c"], "both --client-id and --key", id="no-key"
        ),
        pytest.param(["--base", "https://x/fhir", "--since", "yesterday"], "--since 'yesterday'", id="since"),
        pytest.param(["--base", "https://x/fhir", "--source", "a b"], "source name", id="source"),
    ],
)
def test_usage_errors(tmp_path: Path, args: list[str], words: str) -> None:
    result = CliRunner().invoke(
        main, ["pull", *args, "--database", f"sqlite:///{tmp_path / 'u.db'}", "--quiet"]
    )
    assert result.exit_code == 2, result.stderr
    assert words in result.stderr


def test_next_link_to_another_server_is_not_followed(
    settings: Settings, sqlite_store: Store, fake: FakeFhirServer
) -> None:
    # The fake writes next links with 127.0.0.1; asked as "localhost", they name another origin.
    with pytest.raises(RemoteError, match=r"leaves .*not following it"):
        _pull(_settings(settings), sqlite_store, fake.base.replace("127.0.0.1", "localhost"))


@pytest.mark.parametrize(
    ("base", "source"),
    [
        pytest.param("https://ehr.example.org/fhir", "ehr.example.org", id="host"),
        pytest.param("https://EHR.Example.org:443/r4/", "ehr.example.org", id="default-port"),
        pytest.param("http://127.0.0.1:8080/fhir", "127.0.0.1-8080", id="port"),
        pytest.param("https://[::1]:9443/fhir", "1-9443", id="ipv6"),
    ],
)
def test_default_source_names(base: str, source: str) -> None:
    assert default_source(check_base_url(base)) == source


def test_default_types_are_the_measure_types() -> None:
    assert DEFAULT_TYPES == (
        "Patient", "Coverage", "Encounter", "Condition", "Procedure", "ServiceRequest", "Claim",
        "ExplanationOfBenefit", "Organization", "Practitioner", "PractitionerRole", "Group", "Task", "Observation",
    )  # fmt: skip


def test_remembered_since_of_another_server_is_not_used(
    settings: Settings, sqlite_store: Store, fake: FakeFhirServer
) -> None:
    _pull(_settings(settings), sqlite_store, fake.base)
    other = FakeFhirServer(FakeConfig(resources=_resources())).start()
    try:
        result = _pull(_settings(settings), sqlite_store, other.base)
    finally:
        other.stop()
    assert result.since_used is None
    assert any("was last pulled from" in n for n in result.notes)


def test_export_levels_need_bulk(settings: Settings, sqlite_store: Store) -> None:
    with pytest.raises(UsageError, match="apply to --bulk only"):
        _pull(_settings(settings), sqlite_store, "https://ehr.example.org/fhir", level="patient")


# -- against an independent FHIR server (Node, @medplum/fhir-router) ---------------------------


Counts = dict[str, tuple[int, int, int, int]]


@dataclass
class Cohort:
    resources: list[dict[str, Any]]
    direct: Counts


def _counts(settings: Settings, store: Store, mappings: Mappings) -> Counts:
    """Per measure and group: (initial population, denominator, exclusions, numerator)."""
    out: Counts = {}
    for measure, year in (("oregon-se-issue-focused", 2025), ("oregon-se-reach", 2024)):
        request = workflow.EvaluationRequest(measure, date(year, 1, 1), date(year, 12, 31))
        ev = workflow.run_evaluation(settings, store, request, evidence=False, mappings=mappings)
        for index, group in enumerate(ev.spec.groups):
            results = [child.groups[index] for child in ev.children]
            out[f"{measure}/{group.id}"] = (
                sum(r.ip for r in results),
                sum(r.den for r in results),
                sum(r.denex for r in results),
                sum(r.num for r in results),
            )
    return out


def _synthetic(tmp: Path) -> list[dict[str, Any]]:
    synthesize(tmp / "synth", 60, 11, first_year=2024, last_year=2025, workers=1)
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted((tmp / "synth").rglob("*.ndjson")):
        for line in path.read_bytes().splitlines():
            if line.strip():
                resource = json.loads(line)
                found.setdefault((resource["resourceType"], resource["id"]), resource)
    return list(found.values())


@pytest.fixture(scope="module")
def node_server() -> Iterator[str]:
    reason = harness.server_available()
    if reason:
        pytest.skip(reason)
    with harness.fhir_server() as base:
        yield base


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory, node_server: str, mappings: Mappings) -> Cohort:
    tmp = tmp_path_factory.mktemp("cohort")
    resources = _synthetic(tmp)
    harness.seed(node_server, resources)
    settings = Settings(database_url=f"sqlite:///{tmp / 'direct.db'}")
    store = _open(tmp / "direct.db")
    try:
        ingest_items(
            store,
            (ParsedResource(r["resourceType"], r["id"], r) for r in resources),
            "ehr-server",
            batch_size=1000,
        )
        direct = _counts(settings, store, mappings)
    finally:
        store.close()
    return Cohort(resources=resources, direct=direct)


@pytest.mark.node
def test_pulled_data_gives_the_same_measure_as_direct_ingest(
    settings: Settings, tmp_path: Path, node_server: str, cohort: Cohort, mappings: Mappings
) -> None:
    store = _open(tmp_path / "pulled.db")
    try:
        result = pull(
            settings.model_copy(update={"pull_page_size": 100}),
            store,
            PullRequest(base_url=node_server, source="ehr-server"),
            reporter=QuietReporter(),
        )
        assert result.incomplete == [] and result.notes == []
        assert result.ingest.errors == []
        wanted = {
            (r["resourceType"], r["id"]) for r in cohort.resources if r["resourceType"] in DEFAULT_TYPES
        }
        assert _stored(store, "ehr-server") == wanted
        assert result.pages > len(DEFAULT_TYPES), "some types needed several pages"
        pulled = _counts(settings, store, mappings)
    finally:
        store.close()
    assert pulled == cohort.direct
    counts = cohort.direct
    assert counts["oregon-se-issue-focused/all-enrolled"][1] > 10, "a real denominator"
    assert all(n[3] > 0 for n in counts.values()), "a real numerator in every group"


@pytest.mark.node
def test_incremental_pull_from_the_independent_server(
    settings: Settings, tmp_path: Path, cohort: Cohort
) -> None:
    fast = settings.model_copy(update={"pull_page_size": 500, "pull_since_overlap_seconds": 0})
    seeded = [r for r in cohort.resources if r["resourceType"] in ("Patient", "Coverage")]
    patients = [r for r in seeded if r["resourceType"] == "Patient"]
    store = _open(tmp_path / "incr.db")
    # A server of its own: this test changes data.
    with harness.fhir_server() as base:
        harness.seed(base, seeded)
        try:
            request = PullRequest(base_url=base, source="incr", types=("Patient", "Coverage"))
            first = pull(fast, store, request, reporter=QuietReporter())
            assert first.ingest.stats.created == len(seeded)
            # The Date header has whole seconds: step past the second the seeding happened in.
            time.sleep(1.1)
            pull(fast, store, request, reporter=QuietReporter())
            time.sleep(1.1)
            changed = {**patients[0], "gender": "male" if patients[0].get("gender") != "male" else "female"}
            harness.update(base, changed)
            harness.update(base, c.patient("brand-new", "2023-03-03"))
            third = pull(fast, store, request, reporter=QuietReporter())
        finally:
            store.close()
    assert third.since_used is not None
    assert third.ingest.read == 2, "only what changed since the previous run"
    assert (third.ingest.stats.updated, third.ingest.stats.created) == (1, 1)


@pytest.mark.node
def test_independent_server_without_paging_links(settings: Settings, tmp_path: Path, cohort: Cohort) -> None:
    reason = harness.server_available()
    if reason:
        pytest.skip(reason)
    patients = [r for r in cohort.resources if r["resourceType"] == "Patient"]
    with harness.fhir_server(paging=False) as base:
        harness.seed(base, patients)
        store = _open(tmp_path / "nopaging.db")
        try:
            request = PullRequest(base_url=base, source="bare", types=("Patient",))
            small = pull(
                settings.model_copy(update={"pull_page_size": 10}), store, request, reporter=QuietReporter()
            )
            assert small.incomplete == [
                f"Patient: the server reported {len(patients)} matches but gave 10 and no next link"
            ]
            big = pull(
                settings.model_copy(update={"pull_page_size": 5000}), store, request, reporter=QuietReporter()
            )
        finally:
            store.close()
    assert big.incomplete == []
    assert big.notes == [
        f"Patient: the server sent no paging links; took its one page ({len(patients)} resources)"
    ]
