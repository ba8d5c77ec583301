"""fhir_adapter: Oregon's social-emotional health metric from FHIR R4 data, as DEQM MeasureReports.

The library API: open a :class:`Store`, ingest files with :func:`ingest_paths`, load
``mappings/`` with :func:`load_mappings`, :func:`evaluate` a measure, and build reports with
:func:`summary_report`, :func:`individual_report` or :func:`subject_list_bundle`.
"""

from fhir_adapter.errors import (
    AdapterError,
    ConflictError,
    InvalidDataError,
    MappingsError,
    NotFoundError,
    StoreError,
    UsageError,
)
from fhir_adapter.ingest.runner import IngestResult, ingest_paths
from fhir_adapter.mappings import check_mappings, load_mappings
from fhir_adapter.measure.spec import Mappings, MeasureSpec
from fhir_adapter.report.measurereport import (
    ReportContext,
    individual_report,
    subject_list_bundle,
    summary_report,
)
from fhir_adapter.settings import Settings
from fhir_adapter.store.db import Store
from fhir_adapter.store.evaluate import ChildResult, Evaluation, evaluate

__version__ = "0.1.0"

__all__ = [
    "AdapterError",
    "ChildResult",
    "ConflictError",
    "Evaluation",
    "IngestResult",
    "InvalidDataError",
    "Mappings",
    "MappingsError",
    "MeasureSpec",
    "NotFoundError",
    "ReportContext",
    "Settings",
    "Store",
    "StoreError",
    "UsageError",
    "__version__",
    "check_mappings",
    "evaluate",
    "individual_report",
    "ingest_paths",
    "load_mappings",
    "subject_list_bundle",
    "summary_report",
]
