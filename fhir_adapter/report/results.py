"""What the measure operations return, built from the reports of
:mod:`fhir_adapter.report.measurereport`.

- ``$evaluate-measure`` with ``reportType = subject-list`` (FHIR R4
  ``OperationDefinition/Measure-evaluate-measure``) returns ONE MeasureReport. DEQM STU5's subject-list
  profile (``subjectlist-measurereport-deqm``) makes ``group.population.subjectResults`` reference a
  ``List`` whose entries are individual MeasureReports. :func:`stored_subject_list` turns the
  collection Bundle of :func:`~fhir_adapter.report.measurereport.subject_list_bundle` (report with
  contained Lists, then the individual reports) into resources the service *stores*: the Lists leave
  ``contained`` and get ids unique to the report, ``subjectResults`` become ``List/<id>``, and the
  individual reports keep their ids, so every reference resolves with a plain read
  (``GET /fhir/List/<id>``, ``GET /fhir/MeasureReport/<id>``).
- DEQM ``Measure/$evaluate`` (``http://hl7.org/fhir/us/davinci-deqm/OperationDefinition/evaluate``)
  returns a ``Parameters`` of Bundles; its ``return`` documentation: a Bundle per input subject with
  1..* MeasureReports, one per measure, followed by the resources they reference ("bundles organized
  by subject"). :func:`evaluate_bundle` builds that Bundle.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterable
from typing import Any

Json = dict[str, Any]


def _list_id(report_id: str, old_id: str) -> str:
    return "list-" + hashlib.sha256(f"{report_id}|{old_id}".encode()).hexdigest()[:40]


def stored_subject_list(bundle: Json) -> tuple[Json, list[Json], list[Json]]:
    """Split a subject-list collection Bundle into (subject-list report, Lists, individual reports),
    ready to store: the Lists are no longer contained and ``subjectResults`` reference them as
    ``List/<id>``. The input is not modified."""
    entries = [e["resource"] for e in bundle.get("entry", [])]
    if not entries or entries[0].get("type") != "subject-list":
        raise ValueError("not a subject-list bundle")
    report = copy.deepcopy(entries[0])
    individuals = [copy.deepcopy(r) for r in entries[1:]]
    lists = []
    renamed: dict[str, str] = {}
    for contained in report.pop("contained", []):
        new_id = _list_id(report["id"], contained["id"])
        renamed[f"#{contained['id']}"] = f"List/{new_id}"
        listed = {**contained, "id": new_id}
        lists.append(listed)

    def rewrite(population: Json) -> None:
        results = population.get("subjectResults")
        if isinstance(results, dict) and results.get("reference") in renamed:
            population["subjectResults"] = {"reference": renamed[results["reference"]]}

    for group in report.get("group", []):
        for population in group.get("population", []):
            rewrite(population)
        for stratifier in group.get("stratifier", []):
            for stratum in stratifier.get("stratum", []):
                for population in stratum.get("population", []):
                    rewrite(population)
    return report, lists, individuals


def evaluate_bundle(bundle_id: str, resources: Iterable[Json], fhir_base: str) -> Json:
    """A collection Bundle: the MeasureReports first, then what they reference (DEQM ``$evaluate``
    ``return``). Entries get absolute ``fullUrl`` under ``fhir_base``; a resource that occurs twice
    (same type and id, e.g. a Patient two reports name) is kept once."""
    base = fhir_base.rstrip("/")
    seen: set[tuple[str, str, str]] = set()
    entries = []
    for resource in resources:
        meta = resource.get("meta")
        source = str(meta.get("source", "")) if isinstance(meta, dict) else ""
        key = (str(resource["resourceType"]), str(resource["id"]), source)
        if key in seen:
            continue
        seen.add(key)
        entries.append({"fullUrl": f"{base}/{key[0]}/{key[1]}", "resource": resource})
    out: Json = {"resourceType": "Bundle", "id": bundle_id, "type": "collection"}
    if entries:
        out["entry"] = entries
    return out


def parameters(name: str, resources: Iterable[Json]) -> Json:
    """``Parameters`` with one ``name`` parameter per resource (R4 §3.1.0.11.1 operation response:
    several outputs, or one that is not a single resource, come back as Parameters)."""
    out: Json = {"resourceType": "Parameters"}
    items = [{"name": name, "resource": r} for r in resources]
    if items:
        out["parameter"] = items
    return out


__all__ = ["evaluate_bundle", "parameters", "stored_subject_list"]
