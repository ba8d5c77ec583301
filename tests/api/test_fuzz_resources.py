"""Hypothesis-generated bad FHIR resources and Bundles against every way in (issue #7 item 5).

Each example is one request, by PUT, POST (create), a transaction Bundle or ``$ingest`` NDJSON,
whose body is a plausible resource of a writable type (built with ``tests/cohorts.py``) spoiled
in one or more ways: wrong JSON types for known elements, 1 MB strings, nesting 150–1000 deep
(orjson parses up to 1024 levels, serialises 254; the adapter stops at 100), bad references
(``Patient/``, ``urn:uuid:`` naming nothing, absolute URLs, ``#contained``), impossible dates
(``2025-02-30``, ``2025-13``, ``yesterday``, offsets such as ``+25:00``, year 9999 pushed off
the calendar by an offset), unknown code systems, ids that are not FHIR ids, non-UTF-8 bytes, NUL
(escaped and raw), duplicate keys, a top-level array, string, number or null, a byte-order mark,
and truncated bodies; and transaction/batch Bundles damaged in their own structure (entries that
are not objects, no request, unsupported methods and URLs, one resource twice, ``urn:uuid``
references to no entry, a missing ``fullUrl``, the wrong ``Bundle.type``).

Invariants, after every example:
- the answer is never 5xx; a 4xx is an OperationOutcome; a 2xx is the documented success of that
  interaction (PUT 200/201 with the stored resource, create 201, transaction 200 with a
  transaction-response Bundle, ``$ingest`` 200 with its acknowledgement), and an acknowledged
  PUT or create reads back with the content sent;
- the store is not corrupted: resources stored before the fuzzing (the "good" cohort, in the same
  source the fuzzed writes go to) have the very same stored bytes, every resource row has its
  body, and no key has two current versions;
and after the run, the measure gives every child of the good cohort the same populations as
before it (issue-focused 2025, all sources).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import date
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from fhir_adapter import workflow
from fhir_adapter.api.app import create_app
from fhir_adapter.settings import Settings
from fhir_adapter.store.db import Store
from tests import cohorts as c
from tests.conftest import ENGINES, make_store_factory

#: Examples per channel and engine.
EXAMPLES = 60
GOOD_SOURCE = "rest"  # the anonymous caller's source: fuzzed writes land beside the good cohort
JSON_HEADERS = {"Content-Type": "application/fhir+json"}
NDJSON_HEADERS = {"Content-Type": "application/fhir+ndjson"}

# -- the good cohort -----------------------------------------------------------------------------


def good_cohort() -> list[dict[str, Any]]:
    """Four children: a 2025 service with a qualifying diagnosis, enrolled without services, not
    enrolled, and a clinical encounter; ids and member ids the fuzzing never produces."""
    out: list[dict[str, Any]] = []
    for n, birth in enumerate(("2021-03-04", "2022-07-09", "2020-01-15", "2023-05-05"), start=1):
        out.append(c.patient(f"good-p{n}", birth, member=f"M-good-{n}"))
    out += [c.full_year("good-p1"), c.full_year("good-p2"), c.full_year("good-p4")]
    out.append(c.eob("good-e1", "good-p1", "2025-04-02"))
    out.append(c.encounter("good-enc4", "good-p4", "2025-06-01", reason="F43.22"))
    out.append(c.condition("good-c4", "good-p4", encounter_id="good-enc4", recorded="2025-06-01"))
    return out


def _store_good(client: TestClient) -> None:
    entries = [
        {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": r,
         "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
        for r in good_cohort()
    ]  # fmt: skip
    answer = client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": entries},
                         headers=JSON_HEADERS)  # fmt: skip
    assert answer.status_code == 200, answer.text


def _good_bodies(store: Store) -> dict[tuple[str, str], tuple[int, bytes]]:
    with store.read() as conn:
        rows = conn.execute(
            text(
                "SELECT r.rtype, r.rid, r.version, b.body FROM resources r JOIN resource_bodies b ON b.rkey = r.rkey "
                "WHERE r.source = :s AND r.rid LIKE '%good-%' AND r.superseded_at IS NULL"
            ),
            {"s": GOOD_SOURCE},
        ).all()
    return {(r[0], r[1]): (int(r[2]), bytes(r[3])) for r in rows}


def _integrity(store: Store) -> tuple[int, int, int]:
    """(resource rows without a body, bodies without a resource row, keys with two current versions)."""
    with store.read() as conn:
        orphans = conn.execute(
            text(
                "SELECT COUNT(*) FROM resources r WHERE NOT EXISTS (SELECT 1 FROM resource_bodies b WHERE b.rkey = r.rkey)"
            )
        ).scalar_one()
        bodiless = conn.execute(
            text(
                "SELECT COUNT(*) FROM resource_bodies b WHERE NOT EXISTS (SELECT 1 FROM resources r WHERE r.rkey = b.rkey)"
            )
        ).scalar_one()
        doubled = conn.execute(
            text(
                "SELECT COUNT(*) FROM (SELECT source, rtype, rid FROM resources WHERE superseded_at IS NULL "
                "GROUP BY source, rtype, rid HAVING COUNT(*) > 1) d"
            )
        ).scalar_one()
    return int(orphans), int(bodiless), int(doubled)


def _populations(settings: Settings, store: Store) -> dict[str, list[tuple[str, bool, bool, bool, bool]]]:
    request = workflow.EvaluationRequest("oregon-se-issue-focused", date(2025, 1, 1), date(2025, 12, 31))
    evaluation = workflow.run_evaluation(settings, store, request, evidence=False)
    return {
        child.subject_id: sorted((g.group, g.ip, g.den, g.denex, g.num) for g in child.groups)
        for child in evaluation.children
        if child.subject_id.startswith("good-")
    }


# -- strategies ----------------------------------------------------------------------------------

#: Text without lone surrogates (JSON cannot carry them; the byte-level damage below covers bad text).
TEXT = st.characters(codec="utf-8")
#: Values of the wrong JSON type for any element (truthy ones first: ``x or ()`` hides falsy ones).
WRONG = st.one_of(
    st.sampled_from([7, -1, 2.5, True, "x", {"a": 1}, [None], [[1]], [7], ["x"], {"coding": 5}, {"reference": 5},
                     [{"coding": [{"system": 1, "code": [1]}]}], {"start": 5, "end": [1]}, 2**64 - 1, -(2**63),
                     0, False, None, "", [], {}]),
    st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=False), st.text(TEXT, max_size=8),
)  # fmt: skip
BAD_REFERENCES = st.sampled_from(
    ["Patient/", "Patient", "urn:uuid:7d4c1a3e-0000-4000-8000-000000000000", "urn:uuid:", "urn:oid:1.2.3",
     "http://elsewhere.example/fhir/Patient/fz-1", "https://x/Patient/", "#contained", "#", "/Patient/fz-1",
     "Patient/fz-1/_history/2", "Patient/ä", "Patient/" + "a" * 100, "Patient/fz-1?x=1", ""]
)  # fmt: skip
BAD_DATES = st.sampled_from(
    ["2025-02-30", "2025-13", "2025-13-01", "yesterday", "2025-01-01T00:00:00+25:00", "2025-01-01T25:00:00Z",
     "9999-12-31T23:59:59-12:00", "0001-01-01T00:00:00+14:00", "0000", "2025-1-1", "٢٠٢٥-٠١-٠١", "", " ",
     "2025-06-01T10:00:00", "20250601", "2025-06-01T10:00:00.123456789012Z"]
)  # fmt: skip
BAD_IDS = st.sampled_from(
    ["", "a" * 65, "a b", "a/b", "ä", "fz\n", "$x", "..", "a_b", "-", "x" * 64 + "\n", "%00", "a\u0000b"]
)
FUZZ_ID = st.from_regex(r"\Afz-[a-z0-9]{1,8}\Z")
REFERENCE_FIELDS = ("subject", "patient", "beneficiary", "encounter")
DATE_FIELDS = ("birthDate", "recordedDate", "performedDateTime", "created", "authoredOn")


def _base(rtype: str, rid: str) -> dict[str, Any]:
    """A plausible resource of ``rtype`` about fuzz patient ``fz-p``."""
    builders: dict[str, Any] = {
        "Patient": lambda: c.patient(rid, "2022-02-02", member=f"M-{rid}"),
        "Coverage": lambda: c.coverage(rid, "fz-p", "2024-07-01", None),
        "ExplanationOfBenefit": lambda: c.eob(rid, "fz-p", "2025-03-03"),
        "Claim": lambda: c.claim(rid, "fz-p", "2025-03-03"),
        "Encounter": lambda: c.encounter(rid, "fz-p", "2025-03-03", reason="F43.22"),
        "Condition": lambda: c.condition(rid, "fz-p", recorded="2025-03-03"),
        "Procedure": lambda: c.procedure(rid, "fz-p", "2025-03-03"),
        "Observation": lambda: {"resourceType": "Observation", "id": rid, "status": "final",
                                "code": {"coding": [{"system": "http://loinc.org", "code": "71354-5"}]},
                                "subject": {"reference": "Patient/fz-p"}, "effectiveDateTime": "2025-03-03",
                                "valueInteger": 3},
        "ServiceRequest": lambda: {"resourceType": "ServiceRequest", "id": rid, "status": "active", "intent": "order",
                                   "subject": {"reference": "Patient/fz-p"}, "authoredOn": "2025-03-03",
                                   "code": {"coding": [{"system": "http://snomed.info/sct", "code": "306226009"}]}},
        "Task": lambda: {"resourceType": "Task", "id": rid, "status": "completed", "intent": "order",
                         "for": {"reference": "Patient/fz-p"}, "focus": {"reference": "ServiceRequest/fz-s"}},
        "Organization": lambda: {"resourceType": "Organization", "id": rid,
                                 "identifier": [{"system": "https://oregon.gov/oha/cco-id", "value": "IHN"}]},
        "PractitionerRole": lambda: {"resourceType": "PractitionerRole", "id": rid,
                                     "practitioner": {"reference": "Practitioner/fz-d"},
                                     "code": [{"coding": [{"system": "http://nucc.org/provider-taxonomy",
                                                           "code": "103T00000X"}]}]},
        "Group": lambda: {"resourceType": "Group", "id": rid, "type": "person", "actual": True,
                          "member": [{"entity": {"reference": "Patient/fz-p"}}]},
    }  # fmt: skip
    resource: dict[str, Any] = builders[rtype]()
    return resource


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            if key not in ("resourceType", "id"):
                out += _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out += _paths(item, (*path, index))
    return out


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy: Any = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = _replace(copy[path[0]], path[1:], new)
    return copy


@st.composite
def spoiled(draw: st.DrawFn) -> dict[str, Any]:
    """A resource with element-level damage (still serialisable JSON)."""
    rtype = draw(st.sampled_from(["Patient", "Coverage", "ExplanationOfBenefit", "Claim", "Encounter", "Condition",
                                  "Procedure", "Observation", "ServiceRequest", "Task", "Organization",
                                  "PractitionerRole", "Group"]))  # fmt: skip
    resource = _base(rtype, draw(FUZZ_ID))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["array", "array", "wrong", "wrong", "reference", "date", "system", "huge",
                                     "nul", "array", "wrong", "date", "id"]))  # fmt: skip
        arrays = [key for key, value in resource.items() if isinstance(value, list)]
        if kind == "array" and arrays:  # a string, number or object where R4 JSON has an array
            resource[draw(st.sampled_from(arrays))] = draw(st.sampled_from(["x", 7, 2.5, True, {"a": 1}]))
        elif kind == "wrong":  # a top-level element half the time: an object or scalar for an array
            paths = _paths(resource)[1:]
            top = [p for p in paths if len(p) == 1]
            from_top: bool = bool(top) and draw(st.booleans())
            path = draw(st.sampled_from(top if from_top else paths))
            resource = _replace(resource, path, draw(WRONG))
        elif kind == "reference":
            resource[draw(st.sampled_from(REFERENCE_FIELDS))] = {"reference": draw(BAD_REFERENCES)}
        elif kind == "date":
            resource[draw(st.sampled_from(DATE_FIELDS))] = draw(BAD_DATES)
            resource["period"] = {"start": draw(BAD_DATES), "end": draw(BAD_DATES)}
        elif kind == "system":
            resource["code"] = {"coding": [{"system": draw(st.text(TEXT, max_size=30)),
                                            "code": draw(st.text(TEXT, max_size=10))}]}  # fmt: skip
        elif kind == "huge":
            resource["text"] = {"status": "generated", "div": "<div>" + "x" * 1_000_000 + "</div>"}
        elif kind == "nul":
            resource["note"] = [{"text": "before\u0000after"}]
        else:
            resource["id"] = draw(BAD_IDS)
    return resource


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


@st.composite
def body_bytes(draw: st.DrawFn) -> tuple[dict[str, Any], bytes, bool]:
    """(the resource, the body's bytes, whether the body is exactly that resource): the resource
    (which names the URL's type and id) spoiled at the byte level too, now and then."""
    resource = draw(spoiled())
    raw = json.dumps(resource).encode()
    kind = draw(st.sampled_from(["none"] * 10 + ["deep", "latin1", "badbyte", "rawnul", "duplicate", "toplevel",
                                                  "bom", "truncated", "crlf"]))  # fmt: skip
    if kind == "none":
        return resource, raw, True
    if kind == "crlf":
        return resource, raw.replace(b", ", b",\r\n "), True
    if kind == "deep":
        depth = draw(st.sampled_from([101, 150, 255, 300, 1000, 1025]))
        spoilt = raw[:-1] + f', "extension": {_deep(depth)}}}'.encode()
    elif kind == "latin1":
        spoilt = raw[:-1] + ', "note": [{"text": "Jos\xe9"}]}'.encode("latin-1")
    elif kind == "badbyte":
        spoilt = raw[:-1] + b', "note": [{"text": "\xff\xfe\xc3\x28"}]}'
    elif kind == "rawnul":
        spoilt = raw[:-1] + b', "note": [{"text": "a\x00b"}]}'
    elif kind == "duplicate":
        other = draw(
            st.sampled_from(['"id": "fz-dup"', '"resourceType": "Basic"', '"resourceType": 5', '"id": 7'])
        )
        spoilt = b"{" + other.encode() + b", " + raw[1:]
    elif kind == "toplevel":
        spoilt = draw(
            st.sampled_from([b"[]", b"[" + raw + b"]", b'"Patient"', b"5", b"null", b"true", b"{}"])
        )
    elif kind == "bom":
        spoilt = b"\xef\xbb\xbf" + raw
    else:
        spoilt = raw[: draw(st.integers(1, max(1, len(raw) - 1)))]
    return resource, spoilt, False


@st.composite
def bundle_bytes(draw: st.DrawFn) -> tuple[dict[str, Any], bytes, bool]:
    """A transaction or batch Bundle spoiled in its own structure: entries that are not objects,
    no request, methods and URLs not supported, two entries for one resource, ``urn:uuid``
    references to no entry, a missing ``fullUrl``, the wrong ``Bundle.type``."""
    kind = draw(st.sampled_from(["transaction", "batch"]))
    first, second = draw(spoiled()), draw(spoiled())

    def entry(resource: dict[str, Any], method: str = "PUT") -> dict[str, Any]:
        url = (
            f"{resource['resourceType']}/{resource.get('id')}"
            if method == "PUT"
            else resource["resourceType"]
        )
        return {
            "fullUrl": f"urn:uuid:{uuid.uuid4()}",
            "request": {"method": method, "url": url},
            "resource": resource,
        }

    entries: list[Any] = [entry(first), entry(second, draw(st.sampled_from(["PUT", "POST"])))]
    damage = draw(st.sampled_from(["none", "scalar", "norequest", "method", "url", "twice", "dangling", "nofullurl",
                                   "type", "entryobject", "resourcearray"]))  # fmt: skip
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": kind, "entry": entries}
    if damage == "scalar":
        entries.append(draw(st.sampled_from(["x", 7, None, [], True])))
    elif damage == "norequest":
        del entries[0]["request"]
    elif damage == "method":
        entries[0]["request"]["method"] = draw(st.sampled_from(["GET", "PATCH", "put", "", None, 5]))
    elif damage == "url":
        entries[0]["request"]["url"] = draw(
            st.sampled_from(
                [
                    "Patient/a/b",
                    "Patient?identifier=x",
                    "",
                    "/",
                    7,
                    "Nope/x",
                    "Patient/ä",
                    "http://x/fhir/Patient/a",
                ]
            )
        )
    elif damage == "twice":
        entries.append(entry(first))
    elif damage == "dangling":
        first["subject"] = {"reference": f"urn:uuid:{uuid.uuid4()}"}
    elif damage == "nofullurl":
        del entries[1]["fullUrl"]
        first["subject"] = {"reference": "urn:uuid:00000000-0000-4000-8000-000000000000"}
    elif damage == "type":
        bundle["type"] = draw(st.sampled_from(["collection", "document", "searchset", "", None, 3]))
    elif damage == "entryobject":
        bundle["entry"] = {"request": {"method": "PUT", "url": "Patient/fz-1"}}
    elif damage == "resourcearray":
        entries[0]["resource"] = [first]
    return first, json.dumps(bundle).encode(), False


CHANNELS = ["put", "post", "transaction", "bundle", "ingest"]


# -- the test ------------------------------------------------------------------------------------


def _check_answer(client: TestClient, channel: str, resource: dict[str, Any] | None, answer: Any) -> None:
    """``resource``: what was sent, when the body was exactly that resource (then an acknowledged
    write must read back with that content)."""
    assert answer.status_code < 500, f"{channel}: {answer.status_code} {answer.text[:500]}"
    assert answer.headers["content-type"].startswith("application/fhir+json"), answer.headers
    body = answer.json()
    if answer.status_code >= 400:
        assert body["resourceType"] == "OperationOutcome" and body["issue"], body
        return
    if channel == "put":
        assert answer.status_code in (200, 201), answer.status_code
    elif channel == "post":
        assert answer.status_code == 201, answer.status_code
    else:
        assert answer.status_code == 200, answer.status_code
    if channel in ("put", "post"):
        assert body["meta"]["versionId"] and body["meta"]["source"] == GOOD_SOURCE
        back = client.get(f"/fhir/{body['resourceType']}/{body['id']}")
        assert back.status_code == 200, back.text[:300]
        if resource is None:
            return
        stored = {k: v for k, v in back.json().items() if k != "meta"}
        sent = {k: v for k, v in resource.items() if k != "meta"}
        if channel == "post":
            sent["id"] = body["id"]  # R4 http.html#create: the server assigns the id
        assert stored == sent
    elif channel == "transaction":
        assert body["resourceType"] == "Bundle" and body["type"] == "transaction-response"
    elif channel == "bundle":
        assert body["resourceType"] == "Bundle" and body["type"] in ("transaction-response", "batch-response")
        for item in body.get("entry", []):
            status = item["response"]["status"]
            assert status[:1] in "24", status  # never 5xx inside a batch-response either
            if status[:1] == "4":
                assert item["response"]["outcome"]["resourceType"] == "OperationOutcome"
    else:
        assert body["resourceType"] == "OperationOutcome"
        assert body["issue"][0]["severity"] == "information"


def _send(client: TestClient, channel: str, resource: dict[str, Any], raw: bytes) -> Any:
    rtype, rid = resource["resourceType"], resource.get("id")
    if channel == "put":
        path_id = quote(rid, safe="") if isinstance(rid, str) and rid not in ("", ".", "..") else "fz-raw"
        return client.put(f"/fhir/{rtype}/{path_id}", content=raw, headers=JSON_HEADERS)
    if channel == "post":
        return client.post(f"/fhir/{rtype}", content=raw, headers=JSON_HEADERS)
    if channel == "bundle":
        return client.post("/fhir", content=raw, headers=JSON_HEADERS)
    if channel == "transaction":
        entry = (
            b'{"fullUrl": "urn:uuid:' + str(uuid.uuid4()).encode() + b'", "request": {"method": "PUT", "url": "'
            + f"{rtype}/{rid if isinstance(rid, str) else 'fz-raw'}".encode("utf-8", "replace").replace(b'"', b"")
            + b'"}, "resource": ' + raw + b"}"
        )  # fmt: skip
        bundle = b'{"resourceType": "Bundle", "type": "transaction", "entry": [' + entry + b"]}"
        return client.post("/fhir", content=bundle, headers=JSON_HEADERS)
    return client.post("/fhir/$ingest", content=raw, headers=NDJSON_HEADERS)


@pytest.fixture(scope="module", params=ENGINES)
def shared_store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, pg_schemas: list[str]
) -> Iterator[Store]:
    """One store per engine for all channels (a PostgreSQL store costs seconds to create): each
    test compares the good cohort before and after its own examples."""
    store = make_store_factory(str(request.param), tmp_path_factory.mktemp("fuzz"), pg_schemas)()
    yield store
    store.close()


@pytest.mark.parametrize("channel", CHANNELS)
def test_bad_resources_never_break_the_service_or_the_store(
    api_settings: Settings, shared_store: Store, channel: str
) -> None:
    store = shared_store
    app = create_app(api_settings, store=store)
    with TestClient(app, raise_server_exceptions=False) as client:
        _store_good(client)
        good = _good_bodies(store)
        assert len(good) == len(good_cohort())
        before = _populations(api_settings, store)
        assert any(den for groups in before.values() for _g, _ip, den, _x, _n in groups), before

        @settings(
            max_examples=EXAMPLES,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(body=bundle_bytes() if channel == "bundle" else body_bytes())
        def one_request(body: tuple[dict[str, Any], bytes, bool]) -> None:
            resource, raw, exact = body
            _check_answer(client, channel, resource if exact else None, _send(client, channel, resource, raw))
            assert _good_bodies(store) == good
            assert _integrity(store) == (0, 0, 0)

        one_request()
        assert _populations(api_settings, store) == before
        for (rtype, rid), (_version, raw_body) in good.items():
            served = client.get(f"/fhir/{rtype}/{rid}")
            assert served.status_code == 200
            assert {k: v for k, v in served.json().items() if k != "meta"} == orjson.loads(raw_body)
