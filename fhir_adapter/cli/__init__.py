"""The command line (``fhir-adapter``): parse, call the library, print.

Commands live in one module per concern; importing them registers them on :data:`main`.
"""

# Importing the modules registers their commands. Add yours as one line, sorted.
from fhir_adapter.cli import (  # noqa: F401
    clients,
    core,
    dashboard,
    exports,
    extracts,
    mappings,
    providers,
    publish,
    pull,
    reconcile,
    reports,
    sandbox,
    serve,
)
from fhir_adapter.cli.common import main

__all__ = ["main"]
