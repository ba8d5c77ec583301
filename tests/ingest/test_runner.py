"""Ingest in one process or with a parsing worker: the same store, the same errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import text

from fhir_adapter.errors import UsageError
from fhir_adapter.ingest.runner import check_source, ingest_paths
from fhir_adapter.settings import DEFAULT_MEMBER_ID_SYSTEM
from fhir_adapter.store.db import Store
from tests import cohorts as c
from tests.conftest import TZ


def _dump(store: Store) -> list[list[Any]]:
    with store.read() as conn:
        return [
            list(
                conn.execute(
                    text("SELECT source, rtype, rid, version, hash, deleted FROM resources ORDER BY rkey")
                )
            ),
            list(conn.execute(text("SELECT * FROM f_code ORDER BY rkey, line, role, cid, seq"))),
            list(conn.execute(text("SELECT * FROM f_event ORDER BY rkey"))),
            list(conn.execute(text("SELECT source, location, message FROM ingest_issues ORDER BY id"))),
        ]


def test_parallel_ingest_matches_sequential(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    lines = []
    for i in range(300):
        pid = f"p{i}"
        lines += [c.patient(pid, "2022-01-01"), c.full_year(pid), c.eob(f"e{i}", pid, "2025-02-02")]
    lines.insert(100, b"{broken\n")  # type: ignore[arg-type]
    (folder / "a.ndjson").write_bytes(
        b"".join(x if isinstance(x, bytes) else orjson.dumps(x) + b"\n" for x in lines[:500])
    )
    (folder / "b.ndjson").write_bytes(
        b"".join(x if isinstance(x, bytes) else orjson.dumps(x) + b"\n" for x in lines[500:])
    )
    dumps = []
    for workers in (1, 2):
        store = Store.open(
            f"sqlite:///{tmp_path / f'{workers}.db'}", tz=TZ, member_system=DEFAULT_MEMBER_ID_SYSTEM
        )
        result = ingest_paths(store, [folder], "s", batch_size=64, workers=workers, parallel_min_bytes=0)
        assert result.read == 900, result
        assert len(result.errors) == 1
        dumps.append(_dump(store))
        store.close()
    assert dumps[0][:3] == dumps[1][:3]
    assert [row[1:] for row in dumps[0][3]] == [row[1:] for row in dumps[1][3]]


@pytest.mark.parametrize(
    "name", ["", "a/b", "a|b", "a b", "x" * 129], ids=["empty", "slash", "pipe", "space", "long"]
)
def test_bad_source_names(name: str) -> None:
    with pytest.raises(UsageError):
        check_source(name)
