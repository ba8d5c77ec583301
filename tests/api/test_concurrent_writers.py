"""Eight writers on the same resources at once, over real HTTP (issue #7 item 6: concurrency).

The service runs under uvicorn in this process (its own event loop thread and thread pool, so
requests really overlap in the store), on SQLite and PostgreSQL; eight client threads write.

- Read-modify-write with ``If-Match`` (R4 http.html#concurrency "Managing Resource Contention"):
  each writer reads a resource, appends its own marker to ``extension`` and PUTs it with
  ``If-Match: W/"<version it read>"``, retrying on 412. No update may be lost: the final version
  of each resource is 1 + its successful writes, its extension list holds every successful
  writer's marker in version order, every successful write's content is exactly one stored
  version, and the versions one writer saw only grow.
- Plain PUTs of the same resources: every acknowledged write is its own version (no two
  acknowledgements share a version), the final version is 1 + the acknowledged writes, and each
  acknowledged version holds the content sent.
- Never a 5xx; a write that loses a race answers 409 or 412.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
import uvicorn

from fhir_adapter.api.app import create_app
from fhir_adapter.settings import Settings
from fhir_adapter.store.db import Store
from tests import cohorts as c

WRITERS = 8
SUCCESSES = 5  # successful If-Match writes per writer
PLAIN = 6  # plain PUTs per writer
RESOURCES = 3
MARK = "https://github.com/fhir-adapter/oregon-se/fhir/StructureDefinition/test-writer"
JSON = {"Content-Type": "application/fhir+json"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def base_url(api_settings: Settings, store: Store) -> Iterator[str]:
    app = create_app(api_settings, store=store)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)


@dataclass(frozen=True)
class Write:
    rid: str
    version: int
    marker: str
    body: dict[str, Any]


def _version(answer: httpx.Response) -> int:
    return int(answer.headers["ETag"].removeprefix("W/").strip('"'))


def _without_meta(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k != "meta"}


def _put(http: httpx.Client, body: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
    return http.put(f"/fhir/Patient/{body['id']}", content=orjson.dumps(body), headers={**JSON, **headers})


def _rmw_writer(
    base: str,
    k: int,
    done: list[Write],
    statuses: Counter[int],
    seen: dict[str, list[int]],
    start: threading.Barrier,
) -> None:
    rng = random.Random(k)
    with httpx.Client(base_url=base, timeout=60) as http:
        start.wait()  # all writers at once: their first reads see the same versions
        for n in range(SUCCESSES):
            rid = f"cw-{rng.randrange(RESOURCES)}"
            marker = f"w{k}-{n}"
            for _attempt in range(200):
                read = http.get(f"/fhir/Patient/{rid}")
                statuses[read.status_code] += 1
                assert read.status_code == 200, read.text
                version = _version(read)
                seen[f"{k}:{rid}"].append(version)
                body = _without_meta(read.json())
                body["extension"] = [*body.get("extension", []), {"url": MARK, "valueString": marker}]
                answer = _put(http, body, {"If-Match": f'W/"{version}"'})
                statuses[answer.status_code] += 1
                if answer.status_code == 200:
                    done.append(Write(rid, _version(answer), marker, body))
                    break
                assert answer.status_code in (409, 412), answer.text
            else:
                raise AssertionError(f"writer {k} never won a race for {rid}")


def _plain_writer(base: str, k: int, done: list[Write], statuses: Counter[int]) -> None:
    rng = random.Random(100 + k)
    with httpx.Client(base_url=base, timeout=60) as http:
        for n in range(PLAIN):
            rid = f"cp-{rng.randrange(RESOURCES)}"
            marker = f"p{k}-{n}"
            body = c.patient(rid, "2021-01-01", extension=[{"url": MARK, "valueString": marker}])
            answer = _put(http, body, {})
            statuses[answer.status_code] += 1
            if answer.status_code in (200, 201):
                done.append(Write(rid, _version(answer), marker, body))
            else:
                assert answer.status_code in (409, 412), answer.text


def _run(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
        assert not thread.is_alive()


def _history(http: httpx.Client, rid: str) -> list[dict[str, Any]]:
    """Every version of Patient/rid, oldest first."""
    current = http.get(f"/fhir/Patient/{rid}")
    assert current.status_code == 200
    return [http.get(f"/fhir/Patient/{rid}/_history/{v}").json() for v in range(1, _version(current) + 1)]


def test_if_match_read_modify_write_loses_no_update(base_url: str) -> None:
    with httpx.Client(base_url=base_url, timeout=60) as http:
        for n in range(RESOURCES):
            assert _put(http, c.patient(f"cw-{n}", "2021-01-01"), {}).status_code == 201
    done: list[Write] = []
    statuses: Counter[int] = Counter()
    seen: dict[str, list[int]] = defaultdict(list)
    failures: list[BaseException] = []
    start = threading.Barrier(WRITERS)

    def writer(k: int) -> None:
        try:
            _rmw_writer(base_url, k, done, statuses, seen, start)
        except BaseException as exc:  # reported below, with the statuses seen
            failures.append(exc)

    _run([threading.Thread(target=writer, args=(k,)) for k in range(WRITERS)])
    assert not failures, (failures, statuses)
    assert not [s for s in statuses if s >= 500], statuses
    assert len(done) == WRITERS * SUCCESSES
    assert statuses[412] + statuses[409] > 0, f"the writers should have raced: {statuses}"
    with httpx.Client(base_url=base_url, timeout=60) as http:
        for n in range(RESOURCES):
            rid = f"cw-{n}"
            mine = sorted((w for w in done if w.rid == rid), key=lambda w: w.version)
            history = _history(http, rid)
            assert len(history) == 1 + len(mine)  # final version = successful writes + the baseline
            assert [w.version for w in mine] == list(range(2, len(history) + 1))  # one version each
            final_markers = [e["valueString"] for e in history[-1].get("extension", [])]
            assert final_markers == [w.marker for w in mine]  # no lost update, in version order
            for write in mine:
                assert _without_meta(history[write.version - 1]) == write.body
    for versions in seen.values():  # what one writer saw of one resource never went back
        assert versions == sorted(versions), versions


def test_plain_puts_each_get_their_own_version(base_url: str) -> None:
    with httpx.Client(base_url=base_url, timeout=60) as http:
        for n in range(RESOURCES):
            assert _put(http, c.patient(f"cp-{n}", "2021-01-01"), {}).status_code == 201
    done: list[Write] = []
    statuses: Counter[int] = Counter()
    _run([threading.Thread(target=_plain_writer, args=(base_url, k, done, statuses)) for k in range(WRITERS)])
    assert not [s for s in statuses if s >= 500], statuses
    assert statuses[200] == len(done) > 0
    with httpx.Client(base_url=base_url, timeout=60) as http:
        for n in range(RESOURCES):
            rid = f"cp-{n}"
            mine = [w for w in done if w.rid == rid]
            versions = [w.version for w in mine]
            assert len(versions) == len(set(versions))  # no two acknowledgements share a version
            history = _history(http, rid)
            assert len(history) == 1 + len(mine)
            assert sorted(versions) == list(range(2, len(history) + 1))
            for write in mine:
                assert _without_meta(history[write.version - 1]) == write.body
