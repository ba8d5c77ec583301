"""The data-quality report (spec §4 "Data quality"): per source and submission, resources accepted
and rejected with reasons, children not evaluated and why, unknown code systems, unlinked
persons, partial dates, and the staleness of each feed.

Two parts:

* **per source** (:func:`source_quality`, read from the store as of a data cut): current
  resources by type; lines rejected at ingest (``ingest_issues``) grouped by reason (the message
  with quoted values and numbers masked, so "line 3" and "line 7" are one reason), with an
  example; the last time the source delivered data; the feed's kind, last data day and claims
  paid-through date (``source_status``, kept by the extract loaders); Patients without the
  Medicaid member id (unlinked, spec §3 "Identity") and without a birth date; codings in code
  systems the mappings do not know.
* **per evaluation** (:func:`evaluation_quality`): children per reason code and group, children
  not evaluated (no usable or an ambiguous birth date) and why each child is outside the initial
  population, unlinked children, two CCOs on the anchor day (Edge rule 1), conflicting birth
  dates, codings in unknown systems among services, services whose partial date straddles the
  period, claims with undated lines (Edge rule 7).

:func:`data_quality` is the ``data-quality.json`` of ``fhir-adapter demo``.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from fhir_adapter import workflow
from fhir_adapter.fhir.dates import from_micros, to_micros
from fhir_adapter.ingest.runner import Clock, utc_now
from fhir_adapter.measure.spec import Mappings, SourceMode
from fhir_adapter.settings import Settings
from fhir_adapter.store.dataquality import (
    coding_systems,
    ingest_issue_counts,
    last_ingested,
    patient_counts,
    resource_counts,
)
from fhir_adapter.store.db import Store
from fhir_adapter.store.evaluate import Evaluation
from fhir_adapter.store.sources import read_source_status
from fhir_adapter.terminology.codes import Terminology

#: At most this many rejection reasons are listed per source (the rest are summed as "other").
TOP_REASONS = 20
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_NUMBER = re.compile(r"\d+")


def rejection_reason(message: str) -> str:
    """A rejection message with quoted values and numbers masked (``'…'``, ``N``)."""
    return _NUMBER.sub("N", _QUOTED.sub("'…'", message)).strip()[:200]


@dataclass
class SourceQuality:
    source: str
    resources: dict[str, int] = field(default_factory=dict)
    rejected: int = 0
    #: (reason, count, example message, first location of it)
    rejections: list[tuple[str, int, str, str]] = field(default_factory=list)
    last_ingested_at: int | None = None
    kind: str | None = None
    last_loaded_at: int | None = None
    last_data_day: date | None = None
    paid_through: date | None = None
    patients: int = 0
    unlinked_patients: int = 0
    patients_without_birth_date: int = 0
    #: code system -> resources with a coding in it, for systems the mappings do not know
    unknown_systems: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "kind": self.kind,
            "resources": dict(sorted(self.resources.items())),
            "resources_total": sum(self.resources.values()),
            "rejected": self.rejected,
            "rejections": [
                {"reason": r, "count": n, "example": example, "location": where}
                for r, n, example, where in self.rejections
            ],
            "last_ingested_at": _instant(self.last_ingested_at),
            "last_loaded_at": _instant(self.last_loaded_at),
            "last_data_day": self.last_data_day.isoformat() if self.last_data_day else None,
            "paid_through": self.paid_through.isoformat() if self.paid_through else None,
            "patients": self.patients,
            "unlinked_patients": self.unlinked_patients,
            "patients_without_birth_date": self.patients_without_birth_date,
            "unknown_code_systems": [
                {"system": s, "resources": n} for s, n in sorted(self.unknown_systems.items())
            ],
        }


def _instant(micros: int | None) -> str | None:
    return from_micros(micros).isoformat() if micros is not None else None


def source_quality(store: Store, as_of: int, mappings: Mappings) -> list[SourceQuality]:
    """Every source that holds resources, rejected lines or a load status, by name."""
    by_source: dict[str, SourceQuality] = {}

    def get(source: str) -> SourceQuality:
        return by_source.setdefault(source, SourceQuality(source))

    for (source, rtype), n in resource_counts(store, as_of).items():
        get(source).resources[rtype] = n
    for source, at in last_ingested(store, as_of).items():
        get(source).last_ingested_at = at
    reasons: dict[str, dict[str, list[Any]]] = defaultdict(dict)
    for issue in ingest_issue_counts(store, as_of):
        q = get(issue.source)
        q.rejected += issue.count
        slot = reasons[issue.source].setdefault(
            rejection_reason(issue.message), [0, issue.message, issue.first_location]
        )
        slot[0] += issue.count
    for source, found in reasons.items():
        ordered = sorted(found.items(), key=lambda kv: (-kv[1][0], kv[0]))
        listed = [(reason, n, example, where) for reason, (n, example, where) in ordered[:TOP_REASONS]]
        rest = sum(n for _r, (n, _e, _w) in ordered[TOP_REASONS:])
        if rest:
            listed.append(("other", rest, "", ""))
        get(source).rejections = listed
    for source, status in read_source_status(store).items():
        q = get(source)
        q.kind, q.last_data_day, q.paid_through = status.kind, status.last_data, status.paid_through
        q.last_loaded_at = to_micros(status.last_loaded_at) if status.last_loaded_at else None
    for source, counts in patient_counts(store, as_of).items():
        q = get(source)
        q.patients, q.unlinked_patients, q.patients_without_birth_date = (
            counts.patients, counts.unlinked, counts.without_birth_date,
        )  # fmt: skip
    terminology = Terminology(mappings)
    for (source, system), n in coding_systems(store, as_of).items():
        if not terminology.known(system):
            get(source).unknown_systems[system or "(no system)"] = n
    return [by_source[s] for s in sorted(by_source)]


def evaluation_quality(ev: Evaluation) -> dict[str, Any]:
    """The data-quality facts of one evaluation (module docstring)."""
    reasons: dict[str, dict[str, int]] = {}
    for child in ev.children:
        for g in child.groups:
            bucket = reasons.setdefault(g.group, {})
            bucket[g.reason] = bucket.get(g.reason, 0) + 1
    outside = Counter(ch.ip_reason for ch in ev.children if ch.ip_reason is not None)
    return {
        "measure": ev.spec.id,
        "measure_version": ev.spec.version,
        "period_start": ev.period_start.isoformat(),
        "period_end": ev.period_end.isoformat(),
        "sources": ev.sources,
        "data_cut": from_micros(ev.as_of).isoformat(),
        "children": len(ev.children),
        "not-evaluated": {
            "no-birth-date": outside.get("no-birth-date", 0),
            "ambiguous-birth-date": outside.get("ambiguous-birth-date", 0),
        },
        "outside-initial-population": dict(sorted(outside.items())),
        "unlinked-children": sum(1 for ch in ev.children if ch.member_id is None),
        "two-ccos-on-anchor-day": sum(1 for ch in ev.children if ch.anchor_ccos > 1),
        "conflicting-birth-dates": sum(1 for ch in ev.children if ch.birth_conflict),
        "reasons": {group: dict(sorted(counts.items())) for group, counts in reasons.items()},
        "unknown-code-systems": [{"system": s, "services": n} for s, n in ev.unknown_systems],
        "services-with-ambiguous-partial-dates": ev.ambiguous_service_dates,
        "claims-with-undated-lines": ev.undated_claim_lines,
    }


def data_quality(
    evaluations: Mapping[str, Evaluation], sources: list[SourceQuality] | None = None
) -> dict[str, Any]:
    """One entry per named evaluation (:func:`evaluation_quality`) and, when given, ``sources``
    (one entry per source)."""
    out: dict[str, Any] = {name: evaluation_quality(ev) for name, ev in evaluations.items()}
    if sources is not None:
        out["sources"] = [s.as_json() for s in sources]
    return out


# -- flat tables (CSV, Parquet) -------------------------------------------------------------------

SOURCE_COLUMNS = (
    "source", "kind", "resources_total", "rejected", "patients", "unlinked_patients",
    "patients_without_birth_date", "unknown_code_systems", "last_ingested_at", "last_loaded_at", "last_data_day",
    "paid_through",
)  # fmt: skip
RESOURCE_COLUMNS = ("source", "resource_type", "count")
REJECTION_COLUMNS = ("source", "reason", "count", "example", "location")
EVALUATION_COLUMNS = ("check", "group", "detail", "count")


def source_rows(sources: list[SourceQuality]) -> list[dict[str, Any]]:
    out = []
    for s in sources:
        row = s.as_json()
        row["unknown_code_systems"] = sum(s.unknown_systems.values())
        out.append({k: row[k] for k in SOURCE_COLUMNS})
    return out


def resource_rows(sources: list[SourceQuality]) -> list[dict[str, Any]]:
    return [
        {"source": s.source, "resource_type": t, "count": n}
        for s in sources
        for t, n in sorted(s.resources.items())
    ]


def rejection_rows(sources: list[SourceQuality]) -> list[dict[str, Any]]:
    return [
        {"source": s.source, "reason": r, "count": n, "example": e, "location": w}
        for s in sources
        for r, n, e, w in s.rejections
    ]


def evaluation_rows(quality: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One evaluation's facts as (check, group, detail, count) rows."""
    rows: list[dict[str, Any]] = [
        {"check": "children", "group": None, "detail": None, "count": quality["children"]}
    ]
    for reason, n in quality["outside-initial-population"].items():
        rows.append({"check": "outside-initial-population", "group": None, "detail": reason, "count": n})
    for check in ("unlinked-children", "two-ccos-on-anchor-day", "conflicting-birth-dates",
                  "services-with-ambiguous-partial-dates", "claims-with-undated-lines"):  # fmt: skip
        rows.append({"check": check, "group": None, "detail": None, "count": quality[check]})
    for item in quality["unknown-code-systems"]:
        rows.append(
            {
                "check": "unknown-code-system",
                "group": None,
                "detail": item["system"],
                "count": item["services"],
            }
        )
    for group, counts in quality["reasons"].items():
        for reason, n in counts.items():
            rows.append({"check": "reason", "group": group, "detail": reason, "count": n})
    return rows


@dataclass(frozen=True)
class DataQuality:
    evaluation: dict[str, Any]
    sources: list[SourceQuality]

    def as_json(self) -> dict[str, Any]:
        return {"evaluation": self.evaluation, "sources": [s.as_json() for s in self.sources]}


def run_data_quality(
    settings: Settings,
    store: Store,
    measure: str,
    period_start: date,
    period_end: date,
    *,
    sources: SourceMode = "all",
    mappings: Mappings | None = None,
    clock: Clock = utc_now,
) -> DataQuality:
    """Evaluate ``measure`` as of now and report its data quality with every source's."""
    mappings = workflow.report_mappings(settings, period_start, period_end, mappings=mappings)
    request = workflow.EvaluationRequest(measure, period_start, period_end, sources, as_of=clock())
    ev = workflow.run_evaluation(settings, store, request, evidence=False, mappings=mappings)
    return DataQuality(evaluation_quality(ev), source_quality(store, ev.as_of, mappings))


__all__ = [
    "EVALUATION_COLUMNS",
    "REJECTION_COLUMNS",
    "RESOURCE_COLUMNS",
    "SOURCE_COLUMNS",
    "DataQuality",
    "SourceQuality",
    "data_quality",
    "evaluation_quality",
    "evaluation_rows",
    "rejection_reason",
    "rejection_rows",
    "resource_rows",
    "run_data_quality",
    "source_quality",
]
