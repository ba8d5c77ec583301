"""Provider capacity for CCO asset maps (spec §4 "Provider capacity"): per CCO and county, the
distinct practitioners and organisations that delivered qualifying services in the period, the
children each served, and the counties with none.

**Services** are the evidence of the evaluation: the resources (claims, Encounters, Procedures)
that put each child in the numerator of the measure's first group (``all-enrolled`` for the
issue-focused measure: qualifying services; ``any`` for reach: any SE service). **Providers** are
who those resources name (:func:`fhir_adapter.store.capacity.event_providers`): an NPI, or a
reference resolved within its source to a Practitioner, PractitionerRole (its practitioner and its
organisation) or Organization and from there to an NPI. A provider is keyed by its NPI, so the
same clinician seen on an Encounter and on a Claim counts once; without an NPI, by its source and
reference. Its **kind** is ``practitioner`` when a Practitioner or PractitionerRole carries the
NPI, ``organization`` when an Organization does, else ``unknown`` (an NPI alone does not say);
its taxonomy and name come from those records and the provider directory
(:func:`fhir_adapter.store.providers.provider_directory`).

**County** (project rule [A]): the provider's county from the provider records (role county,
organisation address), else the child's county (``county_basis`` says which); names are matched
to ``mappings/oregon-counties.csv`` (name with or without "County", any case, or the 5- or 3-digit
FIPS code), anything else is ``unknown``. **Counties with none**: statewide, every Oregon county
in which no provider delivered a qualifying service; per CCO, the counties where the CCO has
denominator children but no provider.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any

from fhir_adapter import workflow
from fhir_adapter.fhir.dates import from_micros
from fhir_adapter.ingest.runner import Clock, utc_now
from fhir_adapter.measure.spec import Mappings, Provenance, SourceMode
from fhir_adapter.report.params import PARAM_STATUSES, read_csv
from fhir_adapter.settings import Settings
from fhir_adapter.store.capacity import ProviderRecord, event_providers, provider_records
from fhir_adapter.store.claims_facts import VersionKey
from fhir_adapter.store.db import Store
from fhir_adapter.store.evaluate import Evaluation
from fhir_adapter.store.providers import Provider, provider_directory

COUNTIES_FILE = "oregon-counties.csv"
SERVICE_TYPES = frozenset({"ExplanationOfBenefit", "Claim", "Encounter", "Procedure"})
UNKNOWN = "unknown"
ALL = "all"


@dataclass(frozen=True)
class County:
    name: str
    fips: str
    provenance: Provenance


@dataclass(frozen=True)
class Counties:
    counties: tuple[County, ...]
    _lookup: Mapping[str, County] = field(default_factory=dict, repr=False)

    def find(self, raw: str | None) -> County | None:
        """The county ``raw`` names (module docstring), else ``None``."""
        if not raw:
            return None
        key = " ".join(raw.casefold().split())
        key = key.removesuffix(" county").strip()
        return self._lookup.get(key)


def load_counties(root: Path) -> Counties:
    """``<root>/oregon-counties.csv`` (``county,fips,status,source``), strictly."""
    out: list[County] = []
    lookup: dict[str, County] = {}
    for row in read_csv(root / COUNTIES_FILE, ("county", "fips", "status", "source")):
        name, fips = row.required("county"), row.required("fips")
        if not (len(fips) == 5 and fips.isdigit()):
            raise row.error(f"fips {fips!r} must be 5 digits (state and county)")
        county = County(name, fips, row.provenance(PARAM_STATUSES))
        for key in (name.casefold(), fips, fips[2:]):
            if key in lookup:
                raise row.error(f"county {name!r} repeats {key!r} of {lookup[key].name!r}")
            lookup[key] = county
        out.append(county)
    return Counties(tuple(out), lookup)


# -- resolving providers ------------------------------------------------------------------------


@dataclass(frozen=True)
class ProviderInfo:
    """One provider as counted: ``key`` is ``npi:<NPI>`` or ``<source>|<Type>/<id>``."""

    key: str
    kind: str
    npi: str | None
    taxonomy: str | None
    name: str | None
    organization: str | None
    county: str | None


class Resolver:
    """Turns provider tokens of one source into :class:`ProviderInfo` (module docstring)."""

    def __init__(
        self, records: Mapping[tuple[str, str, str], ProviderRecord], directory: Mapping[str, Provider]
    ) -> None:
        self.records = records
        self.directory = directory
        kinds: dict[str, set[str]] = defaultdict(set)
        for r in records.values():
            npi = r.npi
            if r.rtype == "PractitionerRole" and not npi and r.practitioner_rid:
                prac = records.get((r.source, "Practitioner", r.practitioner_rid))
                npi = prac.npi if prac else None
            if npi:
                kinds[npi].add("organization" if r.rtype == "Organization" else "practitioner")
        self.kinds = kinds

    def _npi_info(self, npi: str, record: ProviderRecord | None = None) -> ProviderInfo:
        found = self.directory.get(npi)
        kinds = self.kinds.get(npi, set())
        kind = next(iter(kinds)) if len(kinds) == 1 else UNKNOWN
        if record is not None and not kinds:
            kind = "organization" if record.rtype == "Organization" else "practitioner"
        return ProviderInfo(
            key=f"npi:{npi}",
            kind=kind,
            npi=npi,
            taxonomy=(found.taxonomy if found else None) or (record.taxonomy if record else None),
            name=(found.name if found else None) or (record.name if record else None),
            organization=found.org if found else None,
            county=(found.county if found else None) or (record.county if record else None),
        )

    def _record_info(self, record: ProviderRecord) -> ProviderInfo:
        if record.npi:
            return self._npi_info(record.npi, record)
        return ProviderInfo(
            key=f"{record.source}|{record.rtype}/{record.rid}",
            kind="organization" if record.rtype == "Organization" else "practitioner",
            npi=None, taxonomy=record.taxonomy, name=record.name, organization=None, county=record.county,
        )  # fmt: skip

    def resolve(self, source: str, token: str) -> list[ProviderInfo]:
        """The providers one token names: a PractitionerRole names its practitioner and its
        organisation; an unknown reference or identifier is one provider of unknown kind."""
        if len(token) == 10 and token.isdigit():
            return [self._npi_info(token)]
        rtype, _, rid = token.partition("/")
        record = self.records.get((source, rtype, rid)) if rid else None
        if record is None:
            return [ProviderInfo(f"{source}|{token}", UNKNOWN, None, None, None, None, None)]
        if rtype != "PractitionerRole":
            return [self._record_info(record)]
        out: list[ProviderInfo] = []
        prac = self.records.get((source, "Practitioner", record.practitioner_rid or ""))
        org = self.records.get((source, "Organization", record.org_rid or ""))
        person = self._npi_info(record.npi, prac or record) if record.npi else None
        if person is None and prac is not None:
            person = self._record_info(prac)
        if person is not None:
            out.append(
                replace(
                    person, taxonomy=person.taxonomy or record.taxonomy, county=person.county or record.county
                )
            )
        if org is not None:
            info = self._record_info(org)
            out.append(replace(info, county=info.county or record.county))
        return out or [ProviderInfo(f"{source}|{token}", UNKNOWN, None, None, None, None, None)]


# -- the tables ---------------------------------------------------------------------------------

PROVIDER_COLUMNS = (
    "cco", "county", "county_basis", "provider", "npi", "kind", "taxonomy", "name", "organization", "children",
    "service_records",
)  # fmt: skip
SUMMARY_COLUMNS = (
    "cco", "county", "fips", "practitioners", "organizations", "unknown_kind", "providers", "children_served",
    "children_in_denominator",
)  # fmt: skip
NONE_COLUMNS = ("cco", "county", "fips", "children_in_denominator")


@dataclass
class Capacity:
    measure: str
    group: str
    period_start: date
    period_end: date
    sources: str
    as_of: int
    providers: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    counties_without: list[dict[str, Any]]

    def meta(self) -> dict[str, Any]:
        return {
            "measure": self.measure, "group": self.group, "period_start": self.period_start.isoformat(),
            "period_end": self.period_end.isoformat(), "sources": self.sources,
            "data_cut": from_micros(self.as_of).isoformat(),
        }  # fmt: skip


def capacity_tables(
    ev: Evaluation,
    group: str,
    tokens: Mapping[VersionKey, Sequence[str]],
    resolver: Resolver,
    counties: Counties,
    *,
    cco: str | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(providers, summary, counties without) from an evaluation with evidence (pure)."""
    index = [g.id for g in ev.spec.groups].index(group)
    county_of = {c.person: counties.find(c.county) for c in ev.children}
    # (cco, county) -> denominator children living there
    den_children: dict[tuple[str, str], set[str]] = defaultdict(set)
    # (cco, county, provider key) -> served children, service records; plus info and basis
    served: dict[tuple[str, str, str], tuple[set[str], set[VersionKey]]] = {}
    infos: dict[str, ProviderInfo] = {}
    basis: dict[tuple[str, str, str], str] = {}
    for child in ev.children:
        result = child.groups[index]
        if cco is not None and child.cco != cco:
            continue
        child_cco = child.cco or UNKNOWN
        home = county_of[child.person]
        if result.den and not result.denex:
            for scope in (child_cco, ALL):
                den_children[(scope, home.name if home else UNKNOWN)].add(child.person)
        if not result.num:
            continue
        for e in ev.evidence.get(child.person, ()):
            if e.group != group or e.population != "numerator" or e.rtype not in SERVICE_TYPES:
                continue
            key = (e.source, e.rtype, e.rid, e.version)
            for token in tokens.get(key, ()):
                for info in resolver.resolve(e.source, token):
                    infos.setdefault(info.key, info)
                    where = counties.find(info.county)
                    place, how = (where.name, "provider") if where else (
                        (home.name, "child") if home else (UNKNOWN, UNKNOWN))  # fmt: skip
                    for scope in (child_cco, ALL):
                        slot = served.setdefault((scope, place, info.key), (set(), set()))
                        slot[0].add(child.person)
                        slot[1].add(key)
                        basis.setdefault((scope, place, info.key), how)
    fips = {c.name: c.fips for c in counties.counties}
    providers = []
    for (scope, place, pkey), (children, records) in sorted(served.items(), key=lambda kv: _order(kv[0])):
        info = infos[pkey]
        providers.append(
            {
                "cco": scope, "county": place, "county_basis": basis[(scope, place, pkey)], "provider": pkey,
                "npi": info.npi, "kind": info.kind, "taxonomy": info.taxonomy, "name": info.name,
                "organization": info.organization, "children": len(children), "service_records": len(records),
            }
        )  # fmt: skip
    cells: dict[tuple[str, str], dict[str, Any]] = {}
    for (scope, place, pkey), (children, _records) in served.items():
        cell = cells.setdefault((scope, place), {"kinds": defaultdict(set), "children": set()})
        cell["kinds"][infos[pkey].kind].add(pkey)
        cell["children"] |= children
    summary = []
    for scope, place in sorted(set(cells) | set(den_children), key=lambda k: _order((*k, ""))):
        cell = cells.get((scope, place), {"kinds": defaultdict(set), "children": set()})
        kinds = cell["kinds"]
        summary.append(
            {
                "cco": scope, "county": place, "fips": fips.get(place),
                "practitioners": len(kinds["practitioner"]), "organizations": len(kinds["organization"]),
                "unknown_kind": len(kinds[UNKNOWN]), "providers": sum(len(v) for v in kinds.values()),
                "children_served": len(cell["children"]),
                "children_in_denominator": len(den_children.get((scope, place), ())),
            }
        )  # fmt: skip
    with_provider = {(scope, place) for scope, place in cells}
    without = []
    for c in counties.counties:  # statewide: every county without a provider
        if cco is None and (ALL, c.name) not in with_provider:
            without.append({"cco": ALL, "county": c.name, "fips": c.fips,
                            "children_in_denominator": len(den_children.get((ALL, c.name), ()))})  # fmt: skip
    for scope, place in sorted(den_children, key=lambda k: _order((*k, ""))):
        if scope != ALL and place != UNKNOWN and (scope, place) not in with_provider:
            without.append({"cco": scope, "county": place, "fips": fips.get(place),
                            "children_in_denominator": len(den_children[(scope, place)])})  # fmt: skip
    return providers, summary, without


def _order(key: tuple[str, str, str]) -> tuple[Any, ...]:
    scope, place, pkey = key
    return (scope == ALL, scope, place == UNKNOWN, place, pkey)


def run_capacity(
    settings: Settings,
    store: Store,
    measure: str,
    period_start: date,
    period_end: date,
    *,
    sources: SourceMode = "all",
    cco: str | None = None,
    mappings: Mappings | None = None,
    clock: Clock = utc_now,
) -> Capacity:
    """Evaluate ``measure`` with evidence as of now and tabulate provider capacity."""
    mappings = workflow.report_mappings(settings, period_start, period_end, mappings=mappings, cco=cco)
    counties = load_counties(settings.mappings_dir)
    request = workflow.EvaluationRequest(measure, period_start, period_end, sources, as_of=clock())
    ev = workflow.run_evaluation(settings, store, request, evidence=True, mappings=mappings)
    group = ev.spec.groups[0].id
    keys = _service_keys(ev.evidence.values(), group)
    tokens = event_providers(store, keys)
    resolver = Resolver(
        provider_records(store, ev.as_of), provider_directory(store, ev.as_of, ccos=mappings.ccos)
    )
    providers, summary, without = capacity_tables(ev, group, tokens, resolver, counties, cco=cco)
    return Capacity(measure, group, period_start, period_end, sources, ev.as_of, providers, summary, without)


def _service_keys(evidence: Iterable[Iterable[Any]], group: str) -> set[VersionKey]:
    return {
        (e.source, e.rtype, e.rid, e.version)
        for items in evidence
        for e in items
        if e.group == group and e.population == "numerator" and e.rtype in SERVICE_TYPES
    }


__all__ = [
    "COUNTIES_FILE",
    "NONE_COLUMNS",
    "PROVIDER_COLUMNS",
    "SUMMARY_COLUMNS",
    "Capacity",
    "Counties",
    "County",
    "ProviderInfo",
    "Resolver",
    "capacity_tables",
    "load_counties",
    "run_capacity",
]
