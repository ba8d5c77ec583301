"""Adjudicated claims extracts → CARIN-Blue-Button-shaped FHIR R4 ``ExplanationOfBenefit``.

OHA scores the metric from adjudicated claims and CCO encounter data (spec §1, §3 "Numerator").
A claims extract has one row per claim *line*, read through a column map kept as data
(``mappings/extracts/claims.toml``; :mod:`fhir_adapter.ingest.columns`). The lines of one claim
become one ``ExplanationOfBenefit`` (FHIR R4; shaped after CARIN Blue Button STU2
professional claims, not validated against its profiles), exactly as
:func:`fhir_adapter.store.extract._claim_like` reads it:

* ``use = claim``, ``outcome = complete``, ``status = active`` (a void, claim frequency code 8,
  is ``cancelled``); ``identifier`` = the claim number (type ``uc``, C4BBIdentifierType);
* ``patient`` → ``Patient/<id>`` with the id derived from the member id exactly as the
  eligibility loader derives it (:func:`~fhir_adapter.ingest.enrollment.patient_id`); the load
  also stores a minimal Patient carrying the member identifier in the claims source, because the
  person index links records by the member id of a Patient *in the same source* (spec §3
  "Identity");
* ``diagnosis[]`` with ``sequence`` = the position (dx1…dx12) and type ``principal``
  (ex-diagnosistype) for dx1, C4BB ``secondary`` for the others; ICD-10-CM codes get their dot;
* ``item[]`` per line: ``sequence`` = line number, ``servicedDate`` (or ``servicedPeriod`` when
  the to-date differs), ``productOrService`` in CPT (5 digits, or 4 digits and F/T/U) or HCPCS
  (a letter and 4 digits) by the code's shape, ``modifier``, ``diagnosisSequence`` (the line's
  pointers), ``locationCodeableConcept`` (CMS place of service), ``careTeamSequence``, and
  ``adjudication`` with the payer status (C4BBPayerAdjudicationStatus ``paid``/``denied``) plus,
  on a denied line, ``denialreason`` (C4BBAdjudicationDiscriminator) with the X12 CARC reason,
  so the line is dropped (spec §3 Edge rule 6); when every line is denied the header says
  ``denied`` too (some: ``partiallypaid``);
* ``careTeam`` with the rendering NPI (role ``performing``, C4BBClaimCareTeamRole;
  ``qualification`` = NUCC taxonomy), ``provider`` = the billing NPI, ``insurer`` = the CCO;
* ``related`` with relationship ``prior`` (ex-relatedclaimrelationship) and the adjusted claim's
  number for replacements (frequency 7) and voids (8), so the adjusted claim stops counting
  (Edge rule 6: replacement only through explicit links).

Lines whose status is ``pending`` are not adjudicated: skipped and counted. Claims CARIN Blue
Button NDJSON files (``.ndjson``, ``.jsonl``, ``.json``, also gzipped) go through the ordinary
FHIR ingest instead (:func:`load_claims_ndjson`).

Conversion (:func:`convert_claims`) is pure; :func:`load_claims` reads and writes. A file is all
or nothing: every bad row is reported and nothing is written unless the whole file is good.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from fhir_adapter.errors import InvalidDataError, UsageError
from fhir_adapter.fhir.dates import to_micros
from fhir_adapter.fhir.resources import ID_RE
from fhir_adapter.ingest.columns import ColumnMap, Row, RowFields, check_options, read_rows, rows_failed
from fhir_adapter.ingest.enrollment import CCO_SYSTEM, member_identifier, patient_id, short_hash
from fhir_adapter.ingest.files import SUFFIXES, read_file
from fhir_adapter.ingest.runner import Clock, IngestResult, check_source, ingest_items, ingest_paths, utc_now
from fhir_adapter.store.db import ParsedResource, Store
from fhir_adapter.store.extract import C4BB_DISCRIMINATOR, C4BB_PAYER_STATUS
from fhir_adapter.store.sources import check_kind, write_source_status
from fhir_adapter.terminology.codes import CPT_URI, HCPCS_URI

#: Diagnosis positions an extract may carry (dx1 … dx12, as on an 837P / CMS-1500).
DX_POSITIONS = 12
#: Every field of a claims extract; True = the column map must name it.
CLAIMS_FIELDS: Mapping[str, bool] = {
    "claim_id": True,
    "line_number": True,
    "member_id": True,
    "from_date": True,
    "to_date": False,
    "procedure_code": True,
    **{f"modifier{n}": False for n in range(1, 5)},
    **{f"dx{n}": False for n in range(1, DX_POSITIONS + 1)},
    "dx_pointers": False,
    "rendering_npi": False,
    "billing_npi": True,
    "taxonomy": False,
    "place_of_service": False,
    "status": True,
    "denial_reason": False,
    "frequency": False,
    "adjusted_claim_id": False,
    "paid_date": False,
    "cco": False,
    "claim_type": False,
}
DEFAULT_MAP = Path("extracts") / "claims.toml"
#: The claim-number identifier system when the map's ``[options]`` names none (the project's
#: own, UNVERIFIED: OHA publishes no FHIR system for MMIS claim numbers).
CLAIM_ID_SYSTEM = "https://oregon.gov/oha/mmis/claim-number"
#: Provider ids that are not 10-digit NPIs (Oregon atypical providers), UNVERIFIED.
PROVIDER_ID_SYSTEM = "https://oregon.gov/oha/provider-id"
NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
NUCC_SYSTEM = "http://nucc.org/provider-taxonomy"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
PLACE_OF_SERVICE = "https://www.cms.gov/Medicare/Coding/place-of-service-codes/Place_of_Service_Code_Set"
CARC = "https://x12.org/codes/claim-adjustment-reason-codes"
CLAIM_TYPE = "http://terminology.hl7.org/CodeSystem/claim-type"
DIAGNOSIS_TYPE = "http://terminology.hl7.org/CodeSystem/ex-diagnosistype"
C4BB_DIAGNOSIS_TYPE = "http://hl7.org/fhir/us/carin-bb/CodeSystem/C4BBClaimDiagnosisType"
C4BB_CARE_TEAM_ROLE = "http://hl7.org/fhir/us/carin-bb/CodeSystem/C4BBClaimCareTeamRole"
C4BB_IDENTIFIER_TYPE = "http://hl7.org/fhir/us/carin-bb/CodeSystem/C4BBIdentifierType"
RELATED_CLAIM = "http://terminology.hl7.org/CodeSystem/ex-relatedclaimrelationship"
#: Line statuses after ``[values.status]``; ``pending`` lines are skipped.
STATUSES = frozenset({"paid", "denied", "pending"})
#: Claim frequency codes (X12 CLM05-3 / UB-04 type-of-bill third digit) the loader understands.
ORIGINAL, REPLACEMENT, VOID = "1", "7", "8"
FREQUENCIES = frozenset({ORIGINAL, REPLACEMENT, VOID})
CLAIM_TYPES = frozenset({"institutional", "oral", "pharmacy", "professional", "vision"})
_CPT = re.compile(r"\d{4}[0-9FTU]")
_HCPCS = re.compile(r"[A-Z]\d{4}")
_MODIFIER = re.compile(r"[0-9A-Z]{2}")
_ICD10CM = re.compile(r"([A-Z][0-9][0-9A-Z])\.?([0-9A-Z]{0,4})")
_TAXONOMY = re.compile(r"[0-9A-Z]{9}X")
_POS = re.compile(r"\d{2}")
_POINTER_SPLIT = re.compile(r"[\s,;:|]+")
_OPTIONS: Mapping[str, type | tuple[type, ...]] = {
    "claim_id_system": str,
    "provider_id_system": str,
    "cco_system": str,
}
#: Header fields every line of one claim must agree on.
_HEADER = ("member_id", "billing_npi", "frequency", "adjusted_claim_id", "cco", "claim_type")


def procedure_system(code: str) -> str | None:
    """CPT for five digits or four digits and F/T/U (Category II/III, PLA), HCPCS Level II for
    a letter and four digits, else ``None`` (spec §3 "Code handling")."""
    if _CPT.fullmatch(code):
        return CPT_URI
    if _HCPCS.fullmatch(code):
        return HCPCS_URI
    return None


def icd10cm(code: str) -> str | None:
    """An ICD-10-CM code with its dot (``F4322`` → ``F43.22``), or ``None`` if it is not shaped
    like one."""
    match = _ICD10CM.fullmatch(code.strip().upper())
    if match is None:
        return None
    head, tail = match.groups()
    return f"{head}.{tail}" if tail else head


def eob_id(claim_id: str) -> str:
    """The ``ExplanationOfBenefit.id`` of a claim number: the number itself when it is a valid
    FHIR id, else ``c-`` and a hash of it."""
    return claim_id if ID_RE.match(claim_id) else "c-" + short_hash(claim_id)


@dataclass(frozen=True)
class ClaimsOptions:
    claim_id_system: str = CLAIM_ID_SYSTEM
    provider_id_system: str = PROVIDER_ID_SYSTEM
    cco_system: str = CCO_SYSTEM

    @classmethod
    def from_map(cls, cmap: ColumnMap) -> ClaimsOptions:
        check_options(cmap, _OPTIONS)
        o = cmap.options
        return cls(
            claim_id_system=str(o.get("claim_id_system", CLAIM_ID_SYSTEM)),
            provider_id_system=str(o.get("provider_id_system", PROVIDER_ID_SYSTEM)),
            cco_system=str(o.get("cco_system", CCO_SYSTEM)),
        )


@dataclass
class _Line:
    location: str
    sequence: int
    from_day: date
    to_day: date
    procedure: tuple[str, str]
    modifiers: list[str]
    pointers: list[int]
    rendering: str
    taxonomy: str
    place: str
    status: str
    denial: str


@dataclass
class _Claim:
    claim_id: str
    location: str
    header: dict[str, str]
    dx: dict[int, tuple[str, str]] = field(default_factory=dict)
    lines: dict[int, _Line] = field(default_factory=dict)
    paid: date | None = None


@dataclass
class Claims:
    """The resources one claims file converts to, and what it held."""

    eobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    patients: dict[str, dict[str, Any]] = field(default_factory=dict)
    rows: int = 0
    lines: int = 0
    denied_lines: int = 0
    #: lines not yet adjudicated (status ``pending``): skipped
    skipped_lines: int = 0
    replacements: int = 0
    voids: int = 0
    #: the latest paid date and the latest service from-date in the file
    paid_through: date | None = None
    last_data: date | None = None
    errors: list[InvalidDataError] = field(default_factory=list)


def _provider_ident(value: str, opts: ClaimsOptions) -> dict[str, str]:
    system = NPI_SYSTEM if len(value) == 10 and value.isdigit() else opts.provider_id_system
    return {"system": system, "value": value}


def _pointers(text: str) -> list[int] | None:
    parts = [p for p in _POINTER_SPLIT.split(text.strip()) if p]
    if not all(p.isdigit() and 1 <= int(p) <= DX_POSITIONS for p in parts):
        return None
    return [int(p) for p in parts]


def _read_line(
    f: RowFields,
) -> tuple[str, dict[str, str], dict[int, tuple[str, str]], _Line | None, date | None]:
    """One row's claim id, header fields, diagnoses and line (``None`` when the row is bad)."""
    row = f.row
    claim_id = f.text("claim_id", required="claim id")
    seq_text = f.text("line_number", required="line number")
    if seq_text and not (seq_text.isdigit() and int(seq_text) > 0):
        f.fail(f"line number {seq_text!r} is not a positive whole number", "line_number")
    header = {name: f.text(name) for name in _HEADER}
    if not header["member_id"]:
        f.fail("missing member id", "member_id")
    if not header["billing_npi"]:
        f.fail("missing billing provider id", "billing_npi")
    header["frequency"] = header["frequency"] or ORIGINAL
    if header["frequency"] not in FREQUENCIES:
        f.fail(
            f"claim frequency code {header['frequency']!r} is not 1 (original), 7 (replacement) or 8 (void); "
            "translate others in [values.frequency]",
            "frequency",
        )
    elif header["frequency"] != ORIGINAL and not header["adjusted_claim_id"]:
        f.fail("a replacement or void must name the claim it adjusts", "adjusted_claim_id")
    header["claim_type"] = header["claim_type"].lower() or "professional"
    if header["claim_type"] not in CLAIM_TYPES:
        f.fail(f"claim type {header['claim_type']!r} is not one of {sorted(CLAIM_TYPES)}", "claim_type")
    from_day = f.date("from_date", required=True)
    to_day = f.date("to_date")
    if from_day and to_day and to_day < from_day:
        f.fail(f"the to-date {to_day} is before the from-date {from_day}", "to_date")
    code = f.text("procedure_code", required="procedure code").upper()
    system = procedure_system(code) if code else None
    if code and system is None:
        f.fail(f"procedure code {code!r} is neither CPT nor HCPCS", "procedure_code")
    modifiers = []
    for n in range(1, 5):
        modifier = f.text(f"modifier{n}").upper()
        if modifier and not _MODIFIER.fullmatch(modifier):
            f.fail(f"modifier {modifier!r} is not two letters or digits", f"modifier{n}")
        elif modifier:
            modifiers.append(modifier)
    dx: dict[int, tuple[str, str]] = {}
    for n in range(1, DX_POSITIONS + 1):
        raw = f.text(f"dx{n}")
        if raw:
            normal = icd10cm(raw)
            if normal is None:
                f.fail(f"diagnosis {raw!r} is not an ICD-10-CM code", f"dx{n}")
            else:
                dx[n] = (normal, row.location)
    pointers = _pointers(f.text("dx_pointers"))
    if pointers is None:
        f.fail(
            f"diagnosis pointers must be numbers 1–{DX_POSITIONS} separated by , ; : or spaces", "dx_pointers"
        )
    taxonomy = f.text("taxonomy").upper()
    if taxonomy and not _TAXONOMY.fullmatch(taxonomy):
        f.fail(f"taxonomy {taxonomy!r} is not a NUCC code (9 letters or digits and X)", "taxonomy")
    place = f.text("place_of_service")
    if place and not _POS.fullmatch(place):
        f.fail(f"place of service {place!r} is not two digits", "place_of_service")
    status = f.text("status", required="adjudication status").lower()
    if status and status not in STATUSES:
        f.fail(
            f"status {status!r} is not one of {sorted(STATUSES)} (translate it in [values.status])", "status"
        )
    paid = f.date("paid_date")
    if f.errors or from_day is None or system is None or pointers is None:
        return claim_id, header, dx, None, None
    line = _Line(
        location=row.location,
        sequence=int(seq_text),
        from_day=from_day,
        to_day=to_day or from_day,
        procedure=(system, code),
        modifiers=modifiers,
        pointers=pointers,
        rendering=f.text("rendering_npi"),
        taxonomy=taxonomy,
        place=place,
        status=status,
        denial=f.text("denial_reason"),
    )
    return claim_id, header, dx, line, paid


def convert_claims(
    rows: Iterable[Row], cmap: ColumnMap, *, member_system: str, options: ClaimsOptions | None = None
) -> Claims:
    """Convert claim-line rows; problems are collected in ``Claims.errors`` (all of them, at
    ``file:line``), and the resources are only meaningful when there are none."""
    opts = options or ClaimsOptions.from_map(cmap)
    out = Claims()
    claims: dict[str, _Claim] = {}
    for row in rows:
        out.rows += 1
        f = RowFields(row, cmap)
        claim_id, header, dx, line, paid = _read_line(f)
        if line is None:
            out.errors.extend(f.errors)
            continue
        claim = claims.get(claim_id)
        if claim is None:
            claim = claims[claim_id] = _Claim(claim_id, row.location, header)
        problems = [
            f"{name} {header[name]!r} differs from {claim.header[name]!r} at {claim.location}"
            for name in _HEADER
            if header[name] != claim.header[name]
        ]
        for n, (code, _where) in dx.items():
            known = claim.dx.get(n)
            if known is not None and known[0] != code:
                problems.append(f"dx{n} {code!r} differs from {known[0]!r} at {known[1]}")
        if line.sequence in claim.lines:
            problems.append(
                f"line {line.sequence} of claim {claim_id} is also at {claim.lines[line.sequence].location}"
            )
        if problems:
            out.errors.extend(row.error(f"claim {claim_id}: {p}") for p in problems)
            continue
        for n, value in dx.items():
            claim.dx.setdefault(n, value)
        claim.lines[line.sequence] = line
        if paid is not None and line.status != "pending" and (claim.paid is None or paid > claim.paid):
            claim.paid = paid
    for claim in claims.values():
        for line in claim.lines.values():
            missing = [p for p in line.pointers if p not in claim.dx]
            if missing:
                out.errors.append(
                    InvalidDataError(
                        f"claim {claim.claim_id}: line {line.sequence} points at diagnosis positions "
                        f"{missing} that the claim does not have (column dx_pointers)",
                        location=line.location,
                    )
                )
    if out.errors:
        return out
    for claim in claims.values():
        adjudicated = sorted((n, ln) for n, ln in claim.lines.items() if ln.status != "pending")
        out.skipped_lines += len(claim.lines) - len(adjudicated)
        if not adjudicated:
            continue
        eob = _eob(claim, [ln for _n, ln in adjudicated], opts)
        out.eobs[eob["id"]] = eob
        pid = patient_id(claim.header["member_id"])
        out.patients[pid] = {
            "resourceType": "Patient",
            "id": pid,
            "identifier": [member_identifier(member_system, claim.header["member_id"])],
        }
        out.lines += len(adjudicated)
        out.denied_lines += sum(ln.status == "denied" for _n, ln in adjudicated)
        out.replacements += claim.header["frequency"] == REPLACEMENT
        out.voids += claim.header["frequency"] == VOID
        if claim.paid is not None and (out.paid_through is None or claim.paid > out.paid_through):
            out.paid_through = claim.paid
        latest = max(ln.from_day for _n, ln in adjudicated)
        if out.last_data is None or latest > out.last_data:
            out.last_data = latest
    return out


def _coding(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


def _eob(claim: _Claim, lines: list[_Line], opts: ClaimsOptions) -> dict[str, Any]:
    h = claim.header
    care_team: dict[tuple[str, str], int] = {}
    items = []
    for line in lines:
        item: dict[str, Any] = {
            "sequence": line.sequence,
            "productOrService": _coding(*line.procedure),
        }
        if line.rendering:
            key = (line.rendering, line.taxonomy)
            item["careTeamSequence"] = [care_team.setdefault(key, len(care_team) + 1)]
        if line.pointers:
            item["diagnosisSequence"] = line.pointers
        if line.modifiers:
            item["modifier"] = [_coding(CPT_URI if m.isdigit() else HCPCS_URI, m) for m in line.modifiers]
        if line.to_day == line.from_day:
            item["servicedDate"] = line.from_day.isoformat()
        else:
            item["servicedPeriod"] = {"start": line.from_day.isoformat(), "end": line.to_day.isoformat()}
        if line.place:
            item["locationCodeableConcept"] = _coding(PLACE_OF_SERVICE, line.place)
        adjudication = [{"category": _coding(C4BB_PAYER_STATUS, line.status)}]
        if line.status == "denied":
            denial: dict[str, Any] = {"category": _coding(C4BB_DISCRIMINATOR, "denialreason")}
            if line.denial:
                denial["reason"] = _coding(CARC, line.denial)
            adjudication.append(denial)
        item["adjudication"] = adjudication
        items.append(item)
    denied = sum(line.status == "denied" for line in lines)
    header_status = "denied" if denied == len(lines) else "partiallypaid" if denied else "paid"
    start = min(line.from_day for line in lines)
    end = max(line.to_day for line in lines)
    member_id = h["member_id"]
    r: dict[str, Any] = {
        "resourceType": "ExplanationOfBenefit",
        "id": eob_id(claim.claim_id),
        "identifier": [
            {
                "type": _coding(C4BB_IDENTIFIER_TYPE, "uc"),
                "system": opts.claim_id_system,
                "value": claim.claim_id,
            }
        ],
        "status": "cancelled" if h["frequency"] == VOID else "active",
        "type": _coding(CLAIM_TYPE, h["claim_type"]),
        "use": "claim",
        "patient": {"reference": f"Patient/{patient_id(member_id)}"},
        "billablePeriod": {"start": start.isoformat(), "end": end.isoformat()},
        "created": (claim.paid or end).isoformat(),
        "insurer": (
            {"identifier": {"system": opts.cco_system, "value": h["cco"]}}
            if h["cco"]
            else {"display": "payer not named in the extract"}
        ),
        "provider": {"identifier": _provider_ident(h["billing_npi"], opts)},
        "outcome": "complete",
        "insurance": [{"focal": True, "coverage": {"display": "Oregon Health Plan (Medicaid)"}}],
        "adjudication": [{"category": _coding(C4BB_PAYER_STATUS, header_status)}],
        "item": items,
    }
    if h["frequency"] != ORIGINAL and h["adjusted_claim_id"] != claim.claim_id:
        r["related"] = [
            {
                "relationship": _coding(RELATED_CLAIM, "prior"),
                "reference": {"system": opts.claim_id_system, "value": h["adjusted_claim_id"]},
            }
        ]
    if care_team:
        r["careTeam"] = [
            {
                "sequence": seq,
                "provider": {"identifier": _provider_ident(npi, opts)},
                "role": _coding(C4BB_CARE_TEAM_ROLE, "performing"),
                **({"qualification": _coding(NUCC_SYSTEM, taxonomy)} if taxonomy else {}),
            }
            for (npi, taxonomy), seq in care_team.items()
        ]
    if claim.dx:
        r["diagnosis"] = [
            {
                "sequence": n,
                "diagnosisCodeableConcept": _coding(ICD10CM, code),
                "type": [
                    _coding(DIAGNOSIS_TYPE, "principal")
                    if n == 1
                    else _coding(C4BB_DIAGNOSIS_TYPE, "secondary")
                ],
            }
            for n, (code, _where) in sorted(claim.dx.items())
        ]
    if claim.paid is not None:
        r["payment"] = {"date": claim.paid.isoformat()}
    return r


def resources_of(claims: Claims) -> list[ParsedResource]:
    """The file's Patients and ExplanationOfBenefits, ready to store."""
    items = [ParsedResource("Patient", pid, r) for pid, r in sorted(claims.patients.items())]
    items += [ParsedResource("ExplanationOfBenefit", rid, r) for rid, r in sorted(claims.eobs.items())]
    return items


# -- loading ---------------------------------------------------------------------------------------
def is_fhir_file(path: Path) -> bool:
    """CARIN Blue Button NDJSON (or Bundle JSON), by name: ``.ndjson``, ``.jsonl``, ``.json``,
    also gzipped."""
    return path.name.lower().endswith(SUFFIXES)


@dataclass
class ClaimsLoad:
    """What one ``load-claims`` did."""

    source: str
    path: Path
    paid_through: date | None
    last_data: date | None
    result: IngestResult
    #: ``None`` for an NDJSON load (nothing to count per line)
    claims: Claims | None = None

    def summary(self) -> str:
        s = self.result.stats
        store = (
            f"store: {s.created} created, {s.updated} updated, {s.unchanged} unchanged, {s.deleted} deleted"
        )
        paid = self.paid_through.isoformat() if self.paid_through else "unknown"
        c = self.claims
        if c is None:
            head = f"{self.path}: {self.result.read} resources read, {len(self.result.errors)} rejected"
        else:
            head = (
                f"{self.path}: {c.rows} rows, {len(c.eobs)} claims ({c.replacements} replacements, "
                f"{c.voids} voids), {c.lines} lines ({c.denied_lines} denied), {len(c.patients)} members, "
                f"{c.skipped_lines} pending lines skipped"
            )
        return f"{head}; paid through {paid}; {store}"


def load_claims(
    store: Store,
    path: Path,
    cmap: ColumnMap,
    source: str,
    *,
    paid_through: date | None = None,
    clock: Clock = utc_now,
) -> ClaimsLoad:
    """Read, convert and store one claims file under ``source`` (one transaction), then record
    the source's status: paid through ``paid_through``, else the file's latest paid date.
    Raises :class:`InvalidDataError` listing every bad row, having written nothing, when any row
    is bad."""
    source = check_source(source)
    options = ClaimsOptions.from_map(cmap)
    check_kind(store, source, "claims")
    read_errors: list[InvalidDataError] = []
    claims = convert_claims(
        read_rows(path, cmap, read_errors), cmap, member_system=store.member_system, options=options
    )
    if read_errors or claims.errors:
        raise rows_failed(path, [*read_errors, *claims.errors])
    items = resources_of(claims)
    result = ingest_items(store, items, source, batch_size=max(1, len(items)), clock=clock)
    through = paid_through or claims.paid_through
    _record(store, source, path, through, claims.last_data, clock, f"{len(claims.eobs)} claims")
    if result.stats.created or result.stats.updated or result.stats.deleted:
        store.analyze()
    return ClaimsLoad(source, path, through, claims.last_data, result, claims)


def _record(
    store: Store, source: str, path: Path, through: date | None, last: date | None, clock: Clock, what: str
) -> None:
    write_source_status(
        store, source, "claims", loaded_at=to_micros(clock()), paid_through=through, last_data=last,
        note=f"{path.name}: {what}",
    )  # fmt: skip


def _day(value: Any) -> date | None:
    if isinstance(value, str) and len(value) >= 10:
        try:
            return date.fromisoformat(value[:10])
        except ValueError:
            return None
    return None


def scan_eobs(path: Path) -> tuple[date | None, date | None]:
    """The latest ``payment.date`` and the latest line from-date of the EOBs in a FHIR file."""
    paid: date | None = None
    served: date | None = None
    for item in read_file(path):
        if not isinstance(item, ParsedResource) or item.rtype != "ExplanationOfBenefit":
            continue
        payment = item.resource.get("payment")
        day = _day(payment.get("date")) if isinstance(payment, dict) else None
        if day is not None and (paid is None or day > paid):
            paid = day
        for line in item.resource.get("item") or ():
            if not isinstance(line, dict):
                continue
            period = line.get("servicedPeriod")
            start = _day(line.get("servicedDate")) or (
                _day(period.get("start")) if isinstance(period, dict) else None
            )
            if start is not None and (served is None or start > served):
                served = start
    return paid, served


def load_claims_ndjson(
    store: Store,
    path: Path,
    source: str,
    *,
    batch_size: int,
    workers: int = 1,
    paid_through: date | None = None,
    clock: Clock = utc_now,
) -> ClaimsLoad:
    """CARIN Blue Button EOB NDJSON (or Bundle JSON) through the ordinary FHIR ingest (bad lines
    reported, good lines kept, as ``fhir-adapter ingest`` does), then the source's status."""
    source = check_source(source)
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    check_kind(store, source, "claims")
    latest_paid, last_data = scan_eobs(path)
    result = ingest_paths(store, [path], source, batch_size=batch_size, clock=clock, workers=workers)
    through = paid_through or latest_paid
    _record(store, source, path, through, last_data, clock, f"{result.read} resources (FHIR)")
    return ClaimsLoad(source, path, through, last_data, result)


__all__ = [
    "CLAIMS_FIELDS",
    "CLAIM_ID_SYSTEM",
    "DEFAULT_MAP",
    "Claims",
    "ClaimsLoad",
    "ClaimsOptions",
    "convert_claims",
    "eob_id",
    "icd10cm",
    "is_fhir_file",
    "load_claims",
    "load_claims_ndjson",
    "procedure_system",
    "resources_of",
    "scan_eobs",
]
