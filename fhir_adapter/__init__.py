"""fhir_adapter: Oregon's social-emotional health metric from FHIR R4 data, as DEQM MeasureReports."""

from fhir_adapter.errors import (
    AdapterError,
    ConflictError,
    InvalidDataError,
    MappingsError,
    NotFoundError,
    StoreError,
    UsageError,
)
from fhir_adapter.settings import Settings

__version__ = "0.1.0"

__all__ = [
    "AdapterError",
    "ConflictError",
    "InvalidDataError",
    "MappingsError",
    "NotFoundError",
    "Settings",
    "StoreError",
    "UsageError",
    "__version__",
]
