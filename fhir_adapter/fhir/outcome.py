"""OperationOutcome (FHIR R4 §2.36 / ``OperationOutcome``): how every problem reaches a client.

Severity: ``fatal | error | warning | information``; ``code`` from the R4 IssueType value set
(http://hl7.org/fhir/R4/valueset-issue-type.html); ``expression`` is a FHIRPath-style location
such as ``Encounter.diagnosis[0]`` or ``Bundle.entry[3].resource``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

Severity = Literal["fatal", "error", "warning", "information"]


@dataclass(frozen=True)
class Issue:
    severity: Severity
    code: str
    diagnostics: str
    expression: str | None = None
    #: ``issue.details`` as one Coding ``(system, code)``: a stable, machine-readable reason
    #: (for instance a data-quality check code), rendered as a CodeableConcept.
    details: tuple[str, str] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"severity": self.severity, "code": self.code}
        if self.details:
            out["details"] = {"coding": [{"system": self.details[0], "code": self.details[1]}]}
        out["diagnostics"] = self.diagnostics
        if self.expression:
            out["expression"] = [self.expression]
        return out


def operation_outcome(issues: Iterable[Issue], *, id: str | None = None) -> dict[str, Any]:
    """An OperationOutcome with ``issues`` (at least one: an empty list becomes one
    ``information`` issue "All OK", as R4 requires ``issue`` 1..*)."""
    rendered = [issue.to_json() for issue in issues]
    if not rendered:
        rendered = [{"severity": "information", "code": "informational", "diagnostics": "All OK"}]
    outcome: dict[str, Any] = {"resourceType": "OperationOutcome", "issue": rendered}
    if id is not None:
        outcome["id"] = id
    return outcome


def error_outcome(message: str, code: str = "processing", expression: str | None = None) -> dict[str, Any]:
    return operation_outcome([Issue("error", code, message, expression)])
