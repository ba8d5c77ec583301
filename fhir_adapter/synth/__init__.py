"""Deterministic synthetic cohorts of young Oregon Health Plan children as FHIR R4 NDJSON.

:func:`synthesize` writes one folder per source (``oha-claims``, ``ehr-clinic-a``,
``ehr-clinic-b``) plus ``manifest.json`` with scenario tags (see :data:`TAGS`) so tests and
demos can find children that exercise each rule of spec/oregon-se-metric.md §3. Synthetic data
only: no real PHI, no CPT descriptor text.
"""

from fhir_adapter.synth.generate import SOURCES, ChildRecords, SynthSummary, render_children, synthesize
from fhir_adapter.synth.plan import TAGS

__all__ = ["SOURCES", "TAGS", "ChildRecords", "SynthSummary", "render_children", "synthesize"]
