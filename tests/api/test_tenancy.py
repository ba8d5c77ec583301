"""Authorisation and per-CCO tenancy over every route (issue #7 item 2; fhir_adapter/auth/policy.py,
docs/security.md).

One world per engine: an eligibility source and two EHR sources that share ``Patient/p-shared`` for
two different children (Ann in ALLCARE, Ben in IHN); Sam switched from ALLCARE to IHN on 1 June
2025; Deb is in a CCO none of the clients serves; Olga's ALLCARE enrollment ended in 2023 (outside
the read window); Uma has no member id and is enrolled through her EHR's own Coverage whose payor is
an Organization. EHRs submitted data-collection MeasureReports; OHA and each CCO evaluated the
measure (stored subject-lists). Clients: ehr-a, ehr-b, cco-allcare, cco-ihn and oha.

:func:`test_every_route_keeps_every_tenant_apart` walks the app's own route list: every route
must have an entry in :data:`ROUTES` (a new route fails the test until it is added) and be
reached by the walk; every response, every ``next`` page, every job result and every export file
is searched for the patient ids, member ids, resource ids and source names the client must not
see (an oracle in this file, written from the rules in docs/security.md, independent of the SQL
in the policy), and searches must return exactly the rows the oracle allows.
"""

from __future__ import annotations

import html
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import text

from fhir_adapter.api.app import create_app
from fhir_adapter.api.deps import PUBLIC_PATHS
from fhir_adapter.auth.clients import Registration, register
from fhir_adapter.auth.policy import tenant_report_source
from fhir_adapter.report.checks import SUBMIT_DATA_UPDATE_TYPE_EXT
from fhir_adapter.settings import DEFAULT_CANONICAL_BASE, Settings
from fhir_adapter.store.db import ParsedResource, Store
from tests import cohorts as c
from tests.conftest import ENGINES, ROOT, make_store_factory
from tests.smart import assertion, jwks, key_pair, token_form

Json = dict[str, Any]

#: The service's clock runs from this instant (2026-02-16 in Oregon), so the read window is fixed.
NOW = datetime(2026, 2, 16, 20, 0, tzinfo=UTC)
TODAY = date(2026, 2, 16)
LOOKBACK = 548
READ_WINDOW = (TODAY - timedelta(days=LOOKBACK), TODAY)
YEAR_2025 = (date(2025, 1, 1), date(2025, 12, 31))
IF = "oregon-se-issue-focused"
PERIOD = {"periodStart": "2025-01-01", "periodEnd": "2025-12-31"}
MEASURE_URL = f"{DEFAULT_CANONICAL_BASE}/Measure/{IF}"
REPORTS = "adapter-reports"
KEY = key_pair("ES384", "tenancy")
FHIR_JSON = {"Content-Type": "application/fhir+json"}
ASYNC = {"Prefer": "respond-async"}
#: Provider directory types every CCO reads whole.
DIRECTORY = {"Organization", "Practitioner", "PractitionerRole"}
#: Types whose patient link the store keeps as facts (the rest is never shown to a CCO).
LINKED = {"Patient", "Coverage", "Observation", "MeasureReport", "Encounter", "Condition", "Procedure",
          "ServiceRequest", "Claim", "ExplanationOfBenefit", "Task"}  # fmt: skip
EXPORT_TYPES = {"Patient", "Coverage", "Encounter", "Condition", "Procedure", "ServiceRequest", "Claim",
                "ExplanationOfBenefit", "Organization", "Practitioner", "PractitionerRole", "Group", "Task",
                "Observation", "MeasureReport"}  # fmt: skip
DATA_SOURCES = ("src-elig", "ehr-a", "ehr-b")
COMPLEXITY = {"coding": [{"system": "urn:example:opip", "code": "complexity"}]}


# --------------------------------------------------------------------------------------------------
# the cohort


@dataclass(frozen=True)
class Kid:
    member: str | None
    birth: str
    #: (CCO, first day, last day) of each enrollment span
    spans: tuple[tuple[str, str, str | None], ...]


KIDS = {
    "ann": Kid("MBR-ANN-01", "2021-03-04", (("ALLCARE", "2024-07-01", None),)),
    "ben": Kid("MBR-BEN-02", "2021-05-06", (("IHN", "2024-07-01", None),)),
    "sam": Kid("MBR-SAM-03", "2022-01-02", (("ALLCARE", "2024-07-01", "2025-05-31"), ("IHN", "2025-06-01", None))),
    "deb": Kid("MBR-DEB-04", "2021-08-09", (("HEALTH-SHARE", "2024-07-01", None),)),
    "olga": Kid("MBR-OLGA-05", "2019-02-03", (("ALLCARE", "2023-01-01", "2023-12-31"),)),
    "uma": Kid(None, "2022-01-15", (("ALLCARE", "2025-01-01", None),)),
}  # fmt: skip
#: (source, Patient id) → child
PATIENTS = {
    ("src-elig", "ann-elig-pt"): "ann", ("ehr-a", "p-shared"): "ann",
    ("src-elig", "ben-elig-pt"): "ben", ("ehr-b", "p-shared"): "ben",
    ("src-elig", "sam-elig-pt"): "sam", ("ehr-a", "sam-pt-a"): "sam",
    ("src-elig", "deb-elig-pt"): "deb", ("ehr-b", "deb-pt-b"): "deb",
    ("src-elig", "olga-elig-pt"): "olga",
    ("ehr-a", "uma-pt-a"): "uma",
}  # fmt: skip


def attributed(cco: str, window: tuple[date, date]) -> set[str]:
    """Children with a span in ``cco`` overlapping ``window`` (docs/security.md)."""
    out = set()
    for name, kid in KIDS.items():
        for span_cco, first, last in kid.spans:
            if (
                span_cco == cco
                and date.fromisoformat(first) <= window[1]
                and (last is None or date.fromisoformat(last) >= window[0])
            ):
                out.add(name)
    return out


def _ref(pid: str) -> Json:
    return {"reference": f"Patient/{pid}"}


def cohort() -> list[tuple[str, Json]]:
    out: list[tuple[str, Json]] = []
    for (source, pid), name in PATIENTS.items():
        kid = KIDS[name]
        out.append((source, c.patient(pid, kid.birth, member=kid.member, unlinked=kid.member is None)))
    for name, kid in KIDS.items():
        if name == "uma":
            continue
        for n, (cco, first, last) in enumerate(kid.spans, start=1):
            out.append(("src-elig", c.coverage(f"{name}-cov-e{n}", f"{name}-elig-pt", first, last, cco=cco)))
    out += [
        ("src-elig", c.eob("ann-eob-e1", "ann-elig-pt", "2025-03-10")),
        ("src-elig", c.eob("ben-eob-e1", "ben-elig-pt", "2025-04-02", "99213")),
        ("src-elig", c.eob("sam-eob-e1", "sam-elig-pt", "2025-08-01")),
        ("src-elig", c.eob("deb-eob-e1", "deb-elig-pt", "2025-09-09", "99213")),
        ("src-elig", c.eob("olga-eob-e1", "olga-elig-pt", "2023-05-05")),
        ("ehr-a", {"resourceType": "Organization", "id": "org-allcare-a", "name": "AllCare (payer)",
                   "identifier": [{"system": c.CCO_SYSTEM, "value": "ALLCARE"}]}),
        ("ehr-a", {"resourceType": "Practitioner", "id": "prac-a1", "name": [{"family": "Clinician"}]}),
        ("ehr-a", {"resourceType": "Coverage", "id": "uma-cov-a", "status": "active", "beneficiary": _ref("uma-pt-a"),
                   "payor": [{"reference": "Organization/org-allcare-a"}], "period": {"start": "2025-01-01"}}),
        ("ehr-a", c.encounter("ann-enc-a1", "p-shared", "2025-02-01", reason="F43.22")),
        ("ehr-a", c.condition("ann-cond-a1", "p-shared", encounter_id="ann-enc-a1")),
        ("ehr-a", c.procedure("ann-proc-a1", "p-shared", "2025-02-01")),
        ("ehr-a", {"resourceType": "Observation", "id": "ann-obs-a1", "status": "final", "subject": _ref("p-shared"),
                   "code": COMPLEXITY, "effectiveDateTime": "2025-02-01", "valueString": "high"}),
        ("ehr-a", {"resourceType": "ServiceRequest", "id": "ann-sr-a1", "status": "active", "intent": "order",
                   "subject": _ref("p-shared"), "authoredOn": "2025-02-01"}),
        ("ehr-a", {"resourceType": "Task", "id": "ann-task-a1", "status": "requested", "intent": "order",
                   "for": _ref("p-shared"), "focus": {"reference": "ServiceRequest/ann-sr-a1"},
                   "authoredOn": "2025-02-02"}),
        ("ehr-a", c.encounter("sam-enc-a1", "sam-pt-a", "2025-07-10", reason="F43.22")),
        ("ehr-a", c.encounter("uma-enc-a1", "uma-pt-a", "2025-03-03", reason="F43.22")),
        ("ehr-b", c.encounter("ben-enc-b1", "p-shared", "2025-04-04", reason="F43.22")),
        ("ehr-b", c.condition("ben-cond-b1", "p-shared", encounter_id="ben-enc-b1")),
        ("ehr-b", {"resourceType": "Observation", "id": "ben-obs-b1", "status": "final", "subject": _ref("p-shared"),
                   "code": COMPLEXITY, "effectiveDateTime": "2025-04-04", "valueString": "low"}),
        ("ehr-b", c.encounter("deb-enc-b1", "deb-pt-b", "2025-05-05")),
        ("ehr-b", {"resourceType": "Group", "id": "roster-b", "type": "person", "actual": True,
                   "member": [{"entity": _ref("p-shared")}, {"entity": _ref("deb-pt-b")}]}),
    ]  # fmt: skip
    return out


def _datax(rid: str) -> Json:
    return {
        "resourceType": "MeasureReport",
        "id": rid,
        "extension": [{"url": SUBMIT_DATA_UPDATE_TYPE_EXT, "valueCode": "snapshot"}],
        "status": "complete",
        "type": "data-collection",
        "measure": f"{MEASURE_URL}|2025.0.0",
        "subject": _ref("p-shared"),
        "date": "2026-01-10T00:00:00Z",
        "reporter": {"reference": "Organization/clinic"},
        "period": {"start": "2025-01-01", "end": "2025-12-31"},
    }


def _submission(resources: list[Json]) -> bytes:
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}
    return orjson.dumps({"resourceType": "Parameters", "parameter": [{"name": "bundle", "resource": bundle}]})


#: What each EHR submits with $deqm-submit-data (about its own Patient/p-shared).
SUBMISSIONS = {
    "ehr-a": _submission([_datax("ann-dc-mr-a"), c.encounter("ann-dc-enc-a", "p-shared", "2025-06-06")]),
    "ehr-b": _submission([_datax("ben-dc-mr-b"), c.encounter("ben-dc-enc-b", "p-shared", "2025-06-07")]),
}


# --------------------------------------------------------------------------------------------------
# the world


class AppClock:
    """Real time moved to :data:`NOW` (increasing, so versions and jobs behave)."""

    def __init__(self) -> None:
        self.offset = NOW - datetime.now(UTC)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@dataclass
class Client:
    name: str
    role: str
    source: str
    ccos: tuple[str, ...] = ()
    scope: str = "system/*.rs"
    token: str = ""
    minted: float = -1e9


CLIENTS = (
    Client("oha", "oha", "oha"),
    Client("cco-allcare", "cco", "cco-allcare", ("ALLCARE",)),
    Client("cco-ihn", "cco", "cco-ihn", ("IHN",)),
    Client("ehr-a", "ehr", "ehr-a", scope="system/*.cruds"),
    Client("ehr-b", "ehr", "ehr-b", scope="system/*.cruds"),
)


@dataclass
class World:
    api: TestClient
    app: FastAPI
    store: Store
    clock: AppClock
    settings: Settings
    clients: dict[str, Client]
    #: (method, route path) pairs some request reached
    reached: set[tuple[str, str]] = field(default_factory=set)
    #: (owner, status path) of jobs started during the walk
    jobs: list[tuple[str, str]] = field(default_factory=list)

    def headers(self, client: Client | None) -> dict[str, str]:
        if client is None:
            return {}
        now = self.clock().timestamp()
        if now - client.minted > 200:  # access tokens live 300 s
            form = token_form(assertion(KEY, client.name, now=now), client.scope)
            answer = self.api.post("/auth/token", data=form)
            assert answer.status_code == 200, answer.text
            client.token, client.minted = answer.json()["access_token"], now
        return {"Authorization": f"Bearer {client.token}"}


def app_routes(app: FastAPI) -> list[APIRoute]:
    """The app's API routes in the order the router tries them."""
    out: list[APIRoute] = []

    def walk(routes: list[Any]) -> None:
        for route in routes:
            inner = getattr(route, "original_router", None)  # FastAPI ≥ 0.16x wraps included routers
            if inner is not None:
                walk(list(inner.routes))
            elif isinstance(route, APIRoute):
                out.append(route)

    walk(list(app.routes))
    return out


def route_keys(app: FastAPI) -> set[tuple[str, str]]:
    return {(m, r.path) for r in app_routes(app) for m in r.methods or ()}


def _settings(tmp: Path, **extra: Any) -> Settings:
    return Settings(
        database_url=f"sqlite:///{tmp / 'unused.db'}",
        mappings_dir=ROOT / "mappings",
        auth_required=True,
        public_base_url="http://testserver",
        export_dir=tmp / "exports",
        spool_dir=tmp / "spool",
        tenant_lookback_days=LOOKBACK,
        rate_limit_per_minute=None,  # the walk sends thousands of requests per client
        **extra,
    )


def _write(store: Store, clock: AppClock) -> None:
    by_source: dict[str, list[ParsedResource]] = {}
    for source, resource in cohort():
        by_source.setdefault(source, []).append(
            ParsedResource(resource["resourceType"], resource["id"], resource)
        )
    for source, items in by_source.items():
        store.write_batch(source, items, int(clock().timestamp() * 1_000_000))


@pytest.fixture(scope="module", params=ENGINES)
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, pg_schemas: list[str]
) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp(f"tenancy-{request.param}")
    store = make_store_factory(str(request.param), tmp, pg_schemas)()
    clock = AppClock()
    _write(store, clock)
    known = {"ALLCARE", "IHN", "HEALTH-SHARE"}
    for client in CLIENTS:
        register(
            store,
            Registration(client.name, client.role, source=client.source if client.role == "ehr" else None,
                         ccos=client.ccos, scopes=client.scope.split(), jwks=jwks(KEY)),
            known_ccos=known, now=clock(), reserved_sources=(REPORTS,),
        )  # fmt: skip
    settings = _settings(tmp)
    app = create_app(settings, store=store, clock=clock)
    with TestClient(app, raise_server_exceptions=False) as api:
        clients = {cl.name: Client(cl.name, cl.role, cl.source, cl.ccos, cl.scope) for cl in CLIENTS}
        w = World(api, app, store, clock, settings, clients)
        for name in ("ehr-a", "ehr-b"):
            answer = api.post("/fhir/Measure/$deqm-submit-data", content=SUBMISSIONS[name],
                              headers={**FHIR_JSON, **w.headers(clients[name])})  # fmt: skip
            assert answer.status_code == 200, answer.text
        for name in ("oha", "cco-allcare", "cco-ihn"):
            answer = api.post(f"/fhir/Measure/{IF}/$evaluate-measure", params={**PERIOD, "reportType": "subject-list"},
                              headers=w.headers(clients[name]))  # fmt: skip
            assert answer.status_code == 200, answer.text
        answer = api.get(f"/fhir/Measure/{IF}/$evaluate-measure", params={**PERIOD, "persist": "true"},
                         headers=w.headers(clients["oha"]))  # fmt: skip
        assert answer.status_code == 200, answer.text
        yield w
    store.close()


# --------------------------------------------------------------------------------------------------
# the oracle


@dataclass(frozen=True)
class Row:
    source: str
    rtype: str
    rid: str
    version: int
    body: Json

    @property
    def subject_pid(self) -> str | None:
        for key in ("subject", "patient", "beneficiary", "for"):
            ref = self.body.get(key)
            if isinstance(ref, dict) and str(ref.get("reference", "")).startswith("Patient/"):
                return str(ref["reference"]).removeprefix("Patient/")
        return None

    @property
    def kid(self) -> str | None:
        """The child this resource belongs to, resolved in its own source."""
        pid = self.rid if self.rtype == "Patient" else self.subject_pid
        return None if pid is None else PATIENTS.get((self.source, pid))

    @property
    def tokens(self) -> set[str]:
        out = {self.rid}
        if self.rtype == "Patient":
            out |= {
                str(i.get("value")) for i in self.body.get("identifier", []) if i.get("system") == c.MEMBER
            }
        return out


def rows(store: Store) -> list[Row]:
    sql = (
        "SELECT r.source, r.rtype, r.rid, r.version, b.body FROM resources r JOIN resource_bodies b "
        "ON b.rkey = r.rkey WHERE r.superseded_at IS NULL AND r.deleted = 0"
    )
    with store.read() as conn:
        return [Row(s, t, i, int(v), orjson.loads(bytes(b))) for s, t, i, v, b in conn.execute(text(sql))]


def sees(client: Client, row: Row, window: tuple[date, date] = READ_WINDOW) -> bool:
    """docs/security.md, written out once more without SQL."""
    if client.role == "oha":
        return True
    if client.role == "ehr":
        return row.source == client.source
    if row.source.startswith(REPORTS + "."):
        return row.source == tenant_report_source(REPORTS, client.ccos)
    if row.rtype in DIRECTORY:
        return True
    kids = set().union(*(attributed(cco, window) for cco in client.ccos))
    if row.source == REPORTS:
        pid = row.subject_pid
        if row.rtype != "MeasureReport" or pid is None:
            return False
        owners = {kid for (_s, p), kid in PATIENTS.items() if p == pid}
        return bool(owners) and owners <= kids
    return row.rtype in LINKED and row.kid in kids


def forbidden(client: Client, current: list[Row]) -> set[str]:
    """Ids, member ids and source names that must never reach ``client``."""
    allowed: set[str] = set()
    denied: set[str] = set()
    for row in current:
        (allowed if sees(client, row) else denied).update(row.tokens)
    for source in DATA_SOURCES:
        mine = any(sees(client, r) for r in current if r.source == source and r.rtype not in DIRECTORY)
        (allowed if mine else denied).add(source)
    return denied - allowed


# --------------------------------------------------------------------------------------------------
# the walker


class Walker:
    """Requests as one client; every response is checked for what the client must not see."""

    def __init__(self, world: World, client: Client) -> None:
        self.world = world
        self.client = client
        self.current = rows(world.store)
        self.denied = forbidden(client, self.current)

    @property
    def role(self) -> str:
        return self.client.role

    def visible(self, rtype: str) -> set[tuple[str, str]]:
        return {(r.source, r.rid) for r in self.current if r.rtype == rtype and sees(self.client, r)}

    def call(
        self, method: str, url: str, *, expect: int | tuple[int, ...] | None = None, echo: str = "", **kw: Any
    ) -> Response:
        """``echo``: a request of the client's own the answer may quote (a job's kick-off URL)."""
        path = url.replace("http://testserver", "")
        headers = {**self.world.headers(self.client), **kw.pop("headers", {})}
        response: Response = self.world.api.request(method, path, headers=headers, **kw)
        self._reached(method, path)
        sent = (
            echo + path + repr(kw.get("params", "")) + repr(kw.get("content", b"")) + repr(kw.get("data", ""))
        )
        self.check(response.content, sent, f"{method} {path}")
        if expect is not None:
            wanted = (expect,) if isinstance(expect, int) else expect
            assert response.status_code in wanted, (self.client.name, method, path, response.text[:500])
        assert response.status_code < 500, (self.client.name, method, path, response.text[:500])
        return response

    def check(self, content: bytes, sent: str, what: str) -> None:
        """Nothing the client may not see, except what its own request said."""
        body = content.decode("utf-8", errors="replace")
        leaked = sorted(t for t in self.denied if t in body and t not in sent)
        assert not leaked, f"{self.client.name}: {what} shows {leaked}: {body[:800]}"

    def _reached(self, method: str, path: str) -> None:
        only = urlsplit(path).path
        for route in app_routes(self.world.app):
            if method in (route.methods or ()) and route.path_regex.match(only):
                self.world.reached.add((method, route.path))
                return

    # -- following -------------------------------------------------------------------------------
    def pages(self, first: Response) -> list[Json]:
        """Every entry of a searchset, following ``next`` links."""
        bundle = first.json()
        entries = list(bundle.get("entry", []))
        seen = 0
        while True:
            nxt = [link["url"] for link in bundle.get("link", []) if link["relation"] == "next"]
            if not nxt:
                return entries
            seen += 1
            assert seen < 200, "paging does not end"
            bundle = self.call("GET", nxt[0], expect=200).json()
            entries += bundle.get("entry", [])

    def finish(self, kicked: Response, timeout: float = 120.0) -> Response:
        """Poll a 202's Content-Location until done; a Bulk Data manifest's files are fetched and
        checked too."""
        assert kicked.status_code == 202, kicked.text
        url = kicked.headers["content-location"]
        self.world.jobs.append((self.client.name, url))
        deadline = time.monotonic() + timeout
        while True:
            response = self.call("GET", url, echo=str(kicked.request.url))
            if response.status_code != 202:
                break
            assert time.monotonic() < deadline, f"job {url} did not finish"
            time.sleep(0.05)
        assert response.status_code == 200, response.text
        return response

    def export(self, kicked: Response) -> set[tuple[str, str, str]]:
        """(source, type, id) of every resource in an export's output files."""
        manifest = self.finish(kicked).json()
        out = set()
        for item in [*manifest["output"], *manifest.get("error", []), *manifest.get("deleted", [])]:
            data = self.call("GET", item["url"], expect=200).content
            for line in data.splitlines():
                if line.strip() and item in manifest["output"]:
                    resource = orjson.loads(line)
                    out.add((resource["meta"]["source"], resource["resourceType"], resource["id"]))
        return out


# --------------------------------------------------------------------------------------------------
# what each route does, per role


def _kids_2025(w: Walker) -> set[str]:
    return set().union(*(attributed(cco, YEAR_2025) for cco in w.client.ccos))


SUBJECTS = [("ehr-a", "p-shared"), ("ehr-b", "p-shared"), ("ehr-a", "sam-pt-a"), ("ehr-b", "deb-pt-b"),
            ("src-elig", "olga-elig-pt"), ("ehr-a", "uma-pt-a")]  # fmt: skip


def _subject_status(w: Walker, source: str, pid: str) -> int:
    if w.role == "ehr":
        return 403
    if w.role == "oha":
        return 200
    return 200 if PATIENTS[(source, pid)] in _kids_2025(w) else 404


def reads(w: Walker) -> None:
    by_key: dict[tuple[str, str], list[Row]] = {}
    for row in w.current:
        by_key.setdefault((row.rtype, row.rid), []).append(row)
    for (rtype, rid), found in sorted(by_key.items()):
        for row in found:
            ok = sees(w.client, row)
            got = w.call(
                "GET", f"/fhir/{rtype}/{rid}", params={"_source": row.source}, expect=200 if ok else 404
            )
            if ok:
                assert got.json()["meta"]["source"] == row.source
        visible = sorted(r.source for r in found if sees(w.client, r))
        if not visible:
            w.call("GET", f"/fhir/{rtype}/{rid}", expect=404)
        elif len(visible) == 1 or w.client.source in visible:
            chosen = visible[0] if len(visible) == 1 else w.client.source
            assert w.call("GET", f"/fhir/{rtype}/{rid}", expect=200).json()["meta"]["source"] == chosen
        else:
            w.call("GET", f"/fhir/{rtype}/{rid}", expect=400)


def vreads(w: Walker) -> None:
    for row in w.current:
        w.call(
            "GET",
            f"/fhir/{row.rtype}/{row.rid}/_history/{row.version}",
            params={"_source": row.source},
            expect=200 if sees(w.client, row) else 404,
        )
    w.call("GET", f"/fhir/Measure/{IF}-2025", expect=200)  # definitional: any token


def _found(entries: list[Json]) -> set[tuple[str, str]]:
    return {(e["resource"]["meta"]["source"], e["resource"]["id"]) for e in entries}


#: (type, parameters, which visible rows match)
PARAM_SEARCHES: list[tuple[str, dict[str, str], Callable[[Row], bool]]] = [
    ("Encounter", {"patient": "p-shared"}, lambda r: r.subject_pid == "p-shared"),
    ("Patient", {"identifier": f"{c.MEMBER}|MBR-BEN-02"}, lambda r: "MBR-BEN-02" in r.tokens),
    ("Patient", {"_id": "p-shared"}, lambda r: r.rid == "p-shared"),
    ("MeasureReport", {"subject": "Patient/p-shared"}, lambda r: r.subject_pid == "p-shared"),
    ("Coverage", {"beneficiary": "sam-elig-pt"}, lambda r: r.subject_pid == "sam-elig-pt"),
]


def _searches(w: Walker, post: bool) -> None:
    types = sorted({r.rtype for r in w.current})
    for rtype in types:
        expected = w.visible(rtype)
        if post:
            first = w.call("POST", f"/fhir/{rtype}/_search", data={"_count": "2"}, expect=200)
        else:
            first = w.call("GET", f"/fhir/{rtype}", params={"_count": "3"}, expect=200)
        assert first.json()["total"] == len(expected), (w.client.name, rtype)
        assert _found(w.pages(first)) == expected, (w.client.name, rtype)
    for rtype, params, match in PARAM_SEARCHES:
        expected = {
            (r.source, r.rid) for r in w.current if r.rtype == rtype and sees(w.client, r) and match(r)
        }
        if post:
            first = w.call("POST", f"/fhir/{rtype}/_search", data={**params, "_count": "1"}, expect=200)
        else:
            first = w.call("GET", f"/fhir/{rtype}", params={**params, "_count": "1"}, expect=200)
        assert _found(w.pages(first)) == expected, (w.client.name, rtype, params)
    w.call("GET", "/fhir/Measure", expect=200)


def search_get(w: Walker) -> None:
    _searches(w, post=False)


def search_post(w: Walker) -> None:
    _searches(w, post=True)


def _cco_values(report: Json) -> set[str]:
    return {
        stratum["value"]["text"]
        for group in report["group"]
        for strat in group.get("stratifier", [])
        if strat["id"] == "cco"
        for stratum in strat["stratum"]
    }


def evaluate_measure(w: Walker) -> None:
    url = f"/fhir/Measure/{IF}/$evaluate-measure"
    evaluates = w.role != "ehr"
    summary = w.call("GET", url, params=PERIOD, expect=200 if evaluates else 403)
    if w.role == "cco":
        assert _cco_values(summary.json()) <= set(w.client.ccos)
    listed = w.call(
        "POST", url, params={**PERIOD, "reportType": "subject-list"}, expect=200 if evaluates else 403
    )
    if evaluates:  # every List and individual report it references reads back for this caller
        report = listed.json()
        lists = {p["subjectResults"]["reference"] for g in report["group"] for p in g["population"]}
        for ref in sorted(lists):
            items = w.call("GET", f"/fhir/{ref}", expect=200).json().get("entry", [])
            for item in items:
                w.call("GET", f"/fhir/{item['item']['reference']}", expect=200)
    for source, pid in SUBJECTS:
        params = {**PERIOD, "subject": f"Patient/{pid}", "source": source}
        w.call("GET", url, params=params, expect=_subject_status(w, source, pid))
    if w.role == "cco" and "ALLCARE" in w.client.ccos:  # p-shared without a source: its own child
        got = w.call("GET", url, params={**PERIOD, "subject": "Patient/p-shared"}, expect=200).json()
        assert got["subject"]["identifier"]["value"] == "MBR-ANN-01"
    kicked = w.call("GET", url, params=PERIOD, headers=ASYNC, expect=202 if evaluates else 403)
    if evaluates:
        w.finish(kicked)


def evaluate(w: Walker) -> None:
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "measureId", "valueString": IF}, {"name": "periodStart", "valueDate": "2025-01-01"},
        {"name": "periodEnd", "valueDate": "2025-12-31"}]}  # fmt: skip
    w.call("POST", "/fhir/Measure/$evaluate", content=orjson.dumps(body), headers=FHIR_JSON,
           expect=403 if w.role == "ehr" else 200)  # fmt: skip
    for source, pid in SUBJECTS[:3]:
        one = {**body, "parameter": [*body["parameter"], {"name": "subject", "valueString": f"Patient/{pid}"},
                                     {"name": "source", "valueString": source}]}  # fmt: skip
        w.call("POST", "/fhir/Measure/$evaluate", content=orjson.dumps(one), headers=FHIR_JSON,
               expect=_subject_status(w, source, pid))  # fmt: skip


def care_gaps(w: Walker) -> None:
    for cco in ("ALLCARE", "IHN", "HEALTH-SHARE"):
        if w.role == "ehr":
            status = 403
        elif w.role == "cco":
            status = 200 if cco in w.client.ccos else 403
        else:
            status = 200
        params = {**PERIOD, "status": "open-gap", "organization": cco, "measureId": IF}
        w.call("GET", "/fhir/Measure/$care-gaps", params=params, expect=status)
    for source, pid in SUBJECTS[:4]:
        body = {"resourceType": "Parameters", "parameter": [
            {"name": "periodStart", "valueDate": "2025-01-01"}, {"name": "periodEnd", "valueDate": "2025-12-31"},
            {"name": "status", "valueCode": "open-gap"}, {"name": "status", "valueCode": "closed-gap"},
            {"name": "measureId", "valueString": IF}, {"name": "subject", "valueString": f"Patient/{pid}"},
            {"name": "source", "valueString": source}]}  # fmt: skip
        w.call("POST", "/fhir/Measure/$care-gaps", content=orjson.dumps(body), headers=FHIR_JSON,
               expect=_subject_status(w, source, pid))  # fmt: skip


def data_requirements(w: Walker) -> None:
    w.call("GET", f"/fhir/Measure/{IF}/$data-requirements", params=PERIOD, expect=200)


def submit_data(w: Walker) -> None:
    body = SUBMISSIONS.get(w.client.name, SUBMISSIONS["ehr-a"])
    w.call("POST", "/fhir/Measure/$deqm-submit-data", content=body, headers=FHIR_JSON,
           expect=200 if w.role == "ehr" else 403)  # fmt: skip


def export_flat(w: Walker) -> None:
    for cco in ("ALLCARE", "IHN"):
        for table in ("results", "gaps"):
            if w.role == "ehr":
                status = 403
            elif w.role == "cco":
                status = 200 if cco in w.client.ccos else 403
            else:
                status = 200
            params = {"measure": IF, **PERIOD, "table": table, "format": "csv", "cco": cco}
            w.call("GET", "/fhir/$export-flat", params=params, expect=status)


def _exported(
    w: Walker, url: str, expected: set[tuple[str, str, str]] | None, status: int | tuple[int, ...]
) -> None:
    """An export holds only what the client may read (docs/security.md)."""
    kicked = w.call("GET", url, headers={**ASYNC, "Accept": "application/fhir+json"}, expect=status)
    if kicked.status_code == 202:
        got = w.export(kicked)
        allowed = {(r.source, r.rtype, r.rid) for r in w.current if sees(w.client, r)}
        assert got <= allowed, (w.client.name, url, sorted(got - allowed))
        if expected is not None:
            assert got == expected, (w.client.name, url, sorted(got ^ expected))


def export_system(w: Walker) -> None:
    expected = {
        (r.source, r.rtype, r.rid) for r in w.current if r.rtype in EXPORT_TYPES and sees(w.client, r)
    }
    _exported(w, "/fhir/$export", expected, 202)


def export_patients(w: Walker) -> None:
    _exported(w, "/fhir/Patient/$export", None, 202)


def export_group(w: Walker) -> None:
    """A CCO exports its own virtual Groups only; an EHR any Group, but only its own source's data."""
    for cco in ("ALLCARE", "IHN"):
        status = 403 if w.role == "cco" and cco not in w.client.ccos else 202
        _exported(w, f"/fhir/Group/cco-{cco}/$export", None, status)
    roster = {"oha": 202, "cco": 403}.get(w.role, (202, 404))
    _exported(w, "/fhir/Group/roster-b/$export", None, roster)


def import_(w: Walker) -> None:
    manifest = {"inputFormat": "application/fhir+ndjson", "inputSource": "https://example.org",
                "input": [{"type": "Encounter", "url": "https://example.org/enc.ndjson"}]}  # fmt: skip
    w.call("POST", "/fhir/$import", content=orjson.dumps(manifest), headers={"Content-Type": "application/json"},
           expect=(400, 403))  # fmt: skip


def jobs(w: Walker) -> None:
    """Other clients' jobs are unknown to this one (OHA may poll them); its own it may re-run and cancel."""
    for owner, url in list(w.world.jobs):
        if owner == w.client.name:
            continue
        if w.role == "oha":
            w.call("GET", url, expect=(200, 202))
        else:
            w.call("GET", url, expect=404)
            w.call("DELETE", url, expect=404)
            w.call("POST", f"{url}/$rerun", expect=404)
    own = [url for owner, url in w.world.jobs if owner == w.client.name]
    if own:
        rerun = w.call("POST", f"{own[0]}/$rerun", expect=202)
        w.finish(rerun)
        w.call("DELETE", rerun.headers["content-location"], expect=202)


def writes(w: Walker) -> None:
    """An EHR writes under its own source; CCO and OHA clients hold no write scopes."""
    ehr = w.role == "ehr"
    rid = f"w-{w.client.name}-1"
    visit = c.encounter(rid, "w-nobody", "2025-02-02")  # a patient no CCO has
    w.call("PUT", f"/fhir/Encounter/{rid}", content=orjson.dumps(visit), headers=FHIR_JSON,
           expect=201 if ehr else 403)  # fmt: skip
    w.call(
        "POST", "/fhir/Encounter", content=orjson.dumps(visit), headers=FHIR_JSON, expect=201 if ehr else 403
    )
    w.call("DELETE", f"/fhir/Encounter/{rid}", expect=204 if ehr else 403)
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {**visit, "id": f"{rid}-tx"},
                "request": {"method": "PUT", "url": f"Encounter/{rid}-tx"},
            }
        ],
    }
    w.call("POST", "/fhir", content=orjson.dumps(bundle), headers=FHIR_JSON, expect=200 if ehr else 403)
    w.call("POST", "/fhir/$ingest", content=orjson.dumps({**visit, "id": f"{rid}-nd"}) + b"\n",
           headers={"Content-Type": "application/fhir+ndjson"}, expect=200)  # fmt: skip
    w.call("POST", "/fhir/$validate", content=orjson.dumps(visit), headers=FHIR_JSON, expect=200)
    w.call("POST", "/fhir/Encounter/$validate", content=orjson.dumps(visit), headers=FHIR_JSON, expect=200)


def public(w: Walker) -> None:
    for path in (
        "/fhir/metadata",
        "/fhir/.well-known/smart-configuration",
        "/healthz",
        "/fhir/docs/what-to-send",
    ):
        w.call("GET", path, expect=200)
    w.call("POST", "/auth/token", data={"grant_type": "client_credentials"}, expect=(400, 401))


def metrics(w: Walker) -> None:
    w.call("GET", "/metrics", expect=200 if w.role == "oha" else 403)


def audit(w: Walker) -> None:
    oha = w.role == "oha"
    found = w.call("GET", "/fhir/AuditEvent", params={"_count": "2"}, expect=200 if oha else 403)
    w.call("POST", "/fhir/AuditEvent/_search", data={"_count": "2"}, expect=200 if oha else 403)
    event = found.json()["entry"][0]["resource"]["id"] if oha else "0"
    w.call("GET", f"/fhir/AuditEvent/{event}", expect=200 if oha else 403)
    w.call("GET", f"/fhir/AuditEvent/{event}/_history/1", expect=200 if oha else 403)


def dashboard(w: Walker) -> None:
    """The dashboard page and every table it links to; a CCO chooses only its own CCO; the sign-in
    cookie works like the bearer token (and only for reading the dashboard)."""
    evaluates = w.role != "ehr"
    params = {"measure": IF, "year": "2025"}
    page = w.call("GET", "/dashboard", params=params, expect=200 if evaluates else 403)
    if evaluates:
        links = sorted(set(re.findall(r'href="(/dashboard/table/[^"]+\.csv[^"]*)"', page.text)))
        assert links, "the dashboard links no table"
        for href in links:
            w.call("GET", html.unescape(href), expect=200)
    if w.role == "cco":
        other = "IHN" if "ALLCARE" in w.client.ccos else "ALLCARE"
        w.call("GET", "/dashboard", params={**params, "cco": other}, expect=(400, 403))
        w.call("GET", "/dashboard/table/gaps.csv", params={**params, "cco": other}, expect=(400, 403))
    w.call("GET", "/dashboard/static/dashboard.css", expect=200)
    w.call("GET", "/dashboard/login", expect=200)
    token = w.world.headers(w.client)["Authorization"].removeprefix("Bearer ")
    signed = w.call("POST", "/dashboard/login", data={"token": token}, follow_redirects=False,
                    expect=303 if evaluates else 403)  # fmt: skip
    if evaluates:  # the cookie alone reads the dashboard
        cookie = signed.cookies.get("fhir_adapter_dashboard")
        assert cookie == token
        alone = w.world.api.get(
            "/dashboard", params=params, headers={"Cookie": f"fhir_adapter_dashboard={cookie}"}
        )
        assert alone.status_code == 200
        w.check(alone.content, repr(params), "GET /dashboard (cookie)")
    w.call("POST", "/dashboard/logout", follow_redirects=False, expect=303)
    w.world.api.cookies.clear()


def followed(_w: Walker) -> None:
    """Reached by following other answers (job status URLs, export files)."""


Step = Callable[[Walker], None]
#: Every route of the app → what the walk does for it. A route missing here fails the test.
ROUTES: dict[tuple[str, str], Step] = {
    ("GET", "/fhir/{rtype:fhirtype}/{rid:fhirid}"): reads,
    ("GET", "/fhir/{rtype:fhirtype}/{rid:fhirid}/_history/{vid}"): vreads,
    ("GET", "/fhir/{rtype:fhirtype}"): search_get,
    ("POST", "/fhir/{rtype:fhirtype}/_search"): search_post,
    ("GET", "/fhir/Measure/{measure_id}/$evaluate-measure"): evaluate_measure,
    ("POST", "/fhir/Measure/{measure_id}/$evaluate-measure"): evaluate_measure,
    ("POST", "/fhir/Measure/$evaluate"): evaluate,
    ("GET", "/fhir/Measure/$care-gaps"): care_gaps,
    ("POST", "/fhir/Measure/$care-gaps"): care_gaps,
    ("GET", "/fhir/Measure/{measure_id}/$data-requirements"): data_requirements,
    ("POST", "/fhir/Measure/$deqm-submit-data"): submit_data,
    ("GET", "/fhir/$export-flat"): export_flat,
    ("GET", "/fhir/$export"): export_system,
    ("GET", "/fhir/Patient/$export"): export_patients,
    ("GET", "/fhir/Group/{group_id}/$export"): export_group,
    ("GET", "/fhir/_exports/{job_id}/{name}"): followed,
    ("POST", "/fhir/$import"): import_,
    ("GET", "/fhir/_jobs/{job_id}"): followed,
    ("DELETE", "/fhir/_jobs/{job_id}"): jobs,
    ("POST", "/fhir/_jobs/{job_id}/$rerun"): jobs,
    ("PUT", "/fhir/{type:fhirtype}/{id}"): writes,
    ("POST", "/fhir/{type:fhirtype}"): writes,
    ("DELETE", "/fhir/{type:fhirtype}/{id}"): writes,
    ("POST", "/fhir"): writes,
    ("POST", "/fhir/$ingest"): writes,
    ("POST", "/fhir/$validate"): writes,
    ("POST", "/fhir/{type:fhirtype}/$validate"): writes,
    ("GET", "/fhir/metadata"): public,
    ("GET", "/fhir/.well-known/smart-configuration"): public,
    ("GET", "/healthz"): public,
    ("GET", "/fhir/docs/what-to-send"): public,
    ("POST", "/auth/token"): public,
    ("GET", "/metrics"): metrics,
    ("GET", "/fhir/AuditEvent"): audit,
    ("POST", "/fhir/AuditEvent/_search"): audit,
    ("GET", "/fhir/AuditEvent/{event_id}"): audit,
    ("GET", "/fhir/AuditEvent/{event_id}/_history/{vid}"): audit,
    ("GET", "/dashboard"): dashboard,
    ("GET", "/dashboard/table/{name}"): dashboard,
    ("GET", "/dashboard/static/{name}"): dashboard,
    ("GET", "/dashboard/login"): dashboard,
    ("POST", "/dashboard/login"): dashboard,
    ("POST", "/dashboard/logout"): dashboard,
}
#: Steps in walk order: reads first, then operations, writes last (they add rows).
ORDER = (reads, vreads, search_get, search_post, data_requirements, evaluate_measure, evaluate, care_gaps,
         export_flat, export_system, export_patients, export_group, import_, submit_data, jobs, metrics, audit,
         dashboard, public, writes, followed)  # fmt: skip


def test_every_route_is_known(world: World) -> None:
    routes = route_keys(world.app)
    unknown = sorted(routes - ROUTES.keys())
    assert not unknown, f"routes the tenancy walk does not know how to call: {unknown} (add them to ROUTES)"
    assert not sorted(ROUTES.keys() - routes), "ROUTES names routes the app no longer has"
    assert set(ROUTES.values()) <= set(ORDER)


def test_every_route_keeps_every_tenant_apart(world: World) -> None:
    world.reached.clear()
    steps = [s for s in ORDER if s in set(ROUTES.values())]
    for name in ("oha", "cco-allcare", "cco-ihn", "ehr-a", "ehr-b"):
        walker = Walker(world, world.clients[name])
        for step in steps:
            walker.current = rows(world.store)  # what earlier steps stored counts too
            walker.denied = forbidden(walker.client, walker.current)
            step(walker)
    missed = sorted(route_keys(world.app) - world.reached)
    assert not missed, f"routes the walk never reached: {missed}"


# --------------------------------------------------------------------------------------------------
# the rules one at a time


def _get(world: World, client: str | None, path: str, **kw: Any) -> Response:
    headers = {**world.headers(world.clients[client] if client else None), **kw.pop("headers", {})}
    response: Response = world.api.get(path, headers=headers, **kw)
    return response


def _counts(report: Json, group: int = 0) -> dict[str, int]:
    return {p["code"]["coding"][0]["code"]: p["count"] for p in report["group"][group]["population"]}


def _stratum(report: Json, value: str) -> dict[str, int]:
    strat = next(s for s in report["group"][0]["stratifier"] if s["id"] == "cco")
    found = [st for st in strat["stratum"] if st["value"]["text"] == value]
    if not found:
        return {}
    return {p["code"]["coding"][0]["code"]: p["count"] for p in found[0]["population"]}


def test_cco_reports_count_only_its_children(world: World) -> None:
    """Population reports of a CCO are OHA's report restricted to the children the evaluation
    attributes to that CCO (the anchor-day CCO): Sam, who moved to IHN in June with a gap of more
    than 45 days, counts for neither rate and is not ALLCARE's."""
    url = f"/fhir/Measure/{IF}/$evaluate-measure"
    oha = _get(world, "oha", url, params=PERIOD).json()
    for client, cco, ip in (("cco-allcare", "ALLCARE", 2), ("cco-ihn", "IHN", 1)):
        own = _get(world, client, url, params=PERIOD).json()
        assert _counts(own) == _stratum(oha, cco)
        assert _counts(own)["initial-population"] == ip
        assert _cco_values(own) == {cco}
        assert own["id"] != oha["id"]
        for group in own["group"]:  # strata count only its children too
            for strat in group["stratifier"]:
                total = sum(
                    p["count"] for st in strat["stratum"] for p in st["population"]
                    if p["code"]["coding"][0]["code"] == "initial-population"
                )  # fmt: skip
                assert total == _counts(own)["initial-population"], strat["id"]
    listed = _get(world, "cco-allcare", url, params={**PERIOD, "reportType": "subject-list"}).json()
    ip_list = next(
        p for p in listed["group"][0]["population"] if p["code"]["coding"][0]["code"] == "initial-population"
    )
    members = _get(world, "cco-allcare", f"/fhir/{ip_list['subjectResults']['reference']}").json()
    subjects = {
        _get(world, "cco-allcare", f"/fhir/{e['item']['reference']}").json()["subject"]["reference"]
        for e in members["entry"]
    }
    assert subjects == {"Patient/p-shared", "Patient/uma-pt-a"}
    # what IHN evaluated is IHN's: stored under its own report source
    ihn_reports = _get(
        world, "cco-ihn", "/fhir/MeasureReport", params={"_source": f"{REPORTS}.ALLCARE"}
    ).json()
    assert ihn_reports["total"] == 0


def test_care_gaps_organization_must_be_its_own(world: World) -> None:
    params = {**PERIOD, "status": "open-gap", "organization": "IHN", "measureId": IF}
    denied = _get(world, "cco-allcare", "/fhir/Measure/$care-gaps", params=params)
    assert denied.status_code == 403
    assert "organization ALLCARE" in denied.json()["issue"][0]["diagnostics"]


def test_ehr_clients_run_no_evaluations(world: World) -> None:
    got = _get(world, "ehr-a", f"/fhir/Measure/{IF}/$evaluate-measure", params=PERIOD)
    assert got.status_code == 403
    assert got.json()["issue"][0]["code"] == "forbidden"


def test_paging_tokens_do_not_cross_tenants(world: World) -> None:
    first = _get(world, "cco-allcare", "/fhir/Patient", params={"_count": "1"}).json()
    nxt = next(link["url"] for link in first["link"] if link["relation"] == "next").replace(
        "http://testserver", ""
    )
    assert _get(world, "cco-allcare", nxt).status_code == 200
    for other in ("cco-ihn", "ehr-a", "oha"):
        replayed = _get(world, other, nxt)
        assert replayed.status_code == 400, (other, replayed.text)
        assert replayed.json()["issue"][0]["expression"] == ["_page"]


def test_job_owner_checks(world: World) -> None:
    kicked = _get(world, "cco-allcare", f"/fhir/Measure/{IF}/$evaluate-measure", params=PERIOD, headers=ASYNC)
    assert kicked.status_code == 202
    url = kicked.headers["content-location"].replace("http://testserver", "")
    for other in ("cco-ihn", "ehr-a"):
        for method, path in (("GET", url), ("DELETE", url), ("POST", f"{url}/$rerun")):
            headers = world.headers(world.clients[other])
            answer = world.api.request(method, path, headers=headers)
            assert answer.status_code == 404, (other, method, answer.text)
            assert answer.json()["issue"][0]["diagnostics"] == f"no job {url.rsplit('/', 1)[1]}"
    deadline = time.monotonic() + 60
    while (polled := _get(world, "oha", url)).status_code == 202 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert polled.status_code == 200  # OHA may poll anyone's job
    own = _get(world, "cco-allcare", url)
    assert own.status_code == 200 and own.json() == polled.json()
    # a re-run (by OHA) keeps the owner and the tenancy of the original request
    rerun = world.api.post(f"{url}/$rerun", headers=world.headers(world.clients["oha"]))
    assert rerun.status_code == 202
    again = rerun.headers["content-location"].replace("http://testserver", "")
    assert _get(world, "cco-ihn", again).status_code == 404
    while (result := _get(world, "cco-allcare", again)).status_code == 202 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _cco_values(result.json()) == {"ALLCARE"}


def test_no_token_is_401_on_every_other_route(world: World) -> None:
    samples = {"rtype": "Patient", "rid": "x", "vid": "1", "measure_id": IF, "job_id": "0" * 32,
               "name": "Patient-1.ndjson", "group_id": "cco-IHN", "type": "Patient", "id": "x", "event_id": "x"}  # fmt: skip
    # the dashboard answers a browser without a token with its sign-in page (also 401)
    checked = 0
    for route in app_routes(world.app):
        if route.path in PUBLIC_PATHS:
            continue
        path = route.path
        for name, value in samples.items():
            path = path.replace(f"{{{name}}}", value).replace(f"{{{name}:fhirtype}}", value)
            path = path.replace(f"{{{name}:fhirid}}", value)
        assert "{" not in path, path
        for method in route.methods or ():
            for headers in ({}, {"Authorization": "Bearer not-a-token"}):
                answer = world.api.request(method, path, headers=headers)
                assert answer.status_code == 401, (method, path, answer.text)
                assert answer.headers["www-authenticate"].startswith("Bearer")
                checked += 1
    assert checked > 40


def test_public_pages_need_no_token(world: World) -> None:
    for path in (
        "/fhir/docs/what-to-send",
        "/fhir/metadata",
        "/healthz",
        "/fhir/.well-known/smart-configuration",
    ):
        assert world.api.get(path).status_code == 200, path


#: (case, role, granted scope, method, path, status): SMART v1 and v2 scopes decide the interaction
SCOPE_CASES = [
    ("v1-read-allows-read", "oha", "system/Patient.read", "GET", "/fhir/Patient/ann-elig-pt", 200),
    ("v1-read-allows-search", "oha", "system/Patient.read", "GET", "/fhir/Patient", 200),
    ("v1-read-is-per-type", "oha", "system/Patient.read", "GET", "/fhir/Encounter", 403),
    ("v2-r-without-s", "oha", "system/Patient.r", "GET", "/fhir/Patient", 403),
    ("v2-r-reads", "oha", "system/Patient.r", "GET", "/fhir/Patient/ann-elig-pt/_history/1", 200),
    ("v2-s-without-r", "oha", "system/Patient.s", "GET", "/fhir/Patient/ann-elig-pt", 403),
    ("v2-s-searches", "oha", "system/Patient.s", "POST", "/fhir/Patient/_search", 200),
    ("evaluate-needs-measurereport-r", "oha", "system/Patient.rs", "GET",
     f"/fhir/Measure/{IF}/$evaluate-measure?periodStart=2025-01-01&periodEnd=2025-12-31", 403),
    ("measurereport-r-evaluates", "oha", "system/MeasureReport.r", "GET",
     f"/fhir/Measure/{IF}/$evaluate-measure?periodStart=2025-01-01&periodEnd=2025-12-31", 200),
    ("data-requirements-needs-measure-r", "oha", "system/MeasureReport.rs", "GET",
     f"/fhir/Measure/{IF}/$data-requirements?periodStart=2025-01-01&periodEnd=2025-12-31", 403),
    ("v1-wildcard-read", "cco", "system/*.read", "GET", "/fhir/Encounter?patient=p-shared", 200),
    ("definitional-needs-a-token-only", "cco", "system/Encounter.rs", "GET", f"/fhir/Measure/{IF}-2025", 200),
    ("v1-read-cannot-write", "ehr", "system/*.read", "PUT", "/fhir/Encounter/scope-w", 403),
    ("v1-write-writes", "ehr", "system/*.write", "PUT", "/fhir/Encounter/scope-w", 201),
    ("v1-write-cannot-read", "ehr", "system/*.write", "GET", "/fhir/Encounter/scope-w", 403),
    ("submit-needs-c", "ehr", "system/*.rs", "POST", "/fhir/Measure/$deqm-submit-data", 403),
    ("submit-needs-c-and-u-per-type", "ehr", "system/MeasureReport.cu", "POST", "/fhir/Measure/$deqm-submit-data", 403),
    ("submit-with-cu", "ehr", "system/*.cu", "POST", "/fhir/Measure/$deqm-submit-data", 200),
]  # fmt: skip


@pytest.mark.parametrize(
    ("role", "scope", "method", "path", "status"), [pytest.param(*x[1:], id=x[0]) for x in SCOPE_CASES]
)
def test_scopes(world: World, role: str, scope: str, method: str, path: str, status: int) -> None:
    name = f"scoped-{uuid_hex()}"
    register(
        world.store,
        Registration(name, role, source=name if role == "ehr" else None, ccos=("ALLCARE",) if role == "cco" else (),
                     scopes=scope.split(), jwks=jwks(KEY)),
        known_ccos={"ALLCARE"}, now=world.clock(), reserved_sources=(REPORTS,),
    )  # fmt: skip
    client = Client(name, role, name, scope=scope)
    kw: dict[str, Any] = {}
    if method == "PUT":
        kw = {"content": orjson.dumps(c.encounter("scope-w", "w-nobody", "2025-02-02")), "headers": FHIR_JSON}
    elif path.endswith("$deqm-submit-data"):
        kw = {
            "content": _submission([_datax("scope-dc"), c.patient("p-shared", "2021-03-04")]),
            "headers": FHIR_JSON,
        }
    elif method == "POST":
        kw = {"data": {"_count": "1"}}
    headers = {**world.headers(client), **kw.pop("headers", {})}
    answer = world.api.request(method, path, headers=headers, **kw)
    assert answer.status_code == status, answer.text[:400]
    if status == 403:
        assert "insufficient_scope" in answer.headers["www-authenticate"]


def uuid_hex() -> str:
    return uuid.uuid4().hex[:12]


def test_reserved_report_sources_cannot_be_registered(world: World) -> None:
    from fhir_adapter.errors import UsageError

    with pytest.raises(UsageError, match="reserved"):
        register(world.store, Registration("sneaky", "ehr", source=f"{REPORTS}.IHN", jwks=jwks(KEY)),
                 known_ccos={"IHN"}, now=world.clock(), reserved_sources=(REPORTS,))  # fmt: skip


def test_the_lookback_window_is_a_setting(world: World, tmp_path: Path) -> None:
    """With a 30-day window ALLCARE no longer reads Sam, who left it on 31 May 2025, but still
    evaluates him for 2025 (evaluations use the measurement period)."""
    short = create_app(
        _settings(tmp_path).model_copy(update={"tenant_lookback_days": 30}),
        store=world.store,
        clock=world.clock,
    )
    with TestClient(short, raise_server_exceptions=False) as api:
        client = Client("cco-allcare", "cco", "cco-allcare", ("ALLCARE",))
        now = world.clock().timestamp()
        token = api.post("/auth/token", data=token_form(assertion(KEY, client.name, now=now))).json()[
            "access_token"
        ]
        bearer = {"Authorization": f"Bearer {token}"}
        assert api.get("/fhir/Patient/sam-elig-pt", headers=bearer).status_code == 404
        assert api.get("/fhir/Patient/ann-elig-pt", headers=bearer).status_code == 200
        params = {**PERIOD, "subject": "Patient/sam-elig-pt"}
        assert (
            api.get(f"/fhir/Measure/{IF}/$evaluate-measure", params=params, headers=bearer).status_code == 200
        )
    assert _get(world, "cco-allcare", "/fhir/Patient/sam-elig-pt").status_code == 200


def test_metrics_scrape_token(world: World, tmp_path: Path) -> None:
    app = create_app(
        _settings(tmp_path, metrics_token="scrape-me-0123456789"), store=world.store, clock=world.clock
    )
    with TestClient(app, raise_server_exceptions=False) as api:
        assert (
            api.get("/metrics", headers={"Authorization": "Bearer scrape-me-0123456789"}).status_code == 200
        )
        assert api.get("/metrics", headers={"Authorization": "Bearer scrape-me-wrong"}).status_code == 401
        assert api.get("/metrics").status_code == 401
        # the scrape token opens /metrics only
        other = api.get("/fhir/Patient", headers={"Authorization": "Bearer scrape-me-0123456789"})
        assert other.status_code == 401
    assert _get(world, "cco-ihn", "/metrics").status_code == 403
    assert _get(world, "oha", "/metrics").status_code == 200


def test_dev_mode_sees_everything(world: World, tmp_path: Path) -> None:
    dev = create_app(_settings(tmp_path).model_copy(update={"auth_required": False}), store=world.store,
                     clock=world.clock)  # fmt: skip
    with TestClient(dev, raise_server_exceptions=False) as api:
        got = api.get("/fhir/Encounter", params={"_summary": "count"}).json()["total"]
    assert got == len([r for r in rows(world.store) if r.rtype == "Encounter"])
