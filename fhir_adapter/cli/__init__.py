"""The command line (``fhir-adapter``): parse, call the library, print.

Commands live in one module per concern; importing them registers them on :data:`main`.
"""

from fhir_adapter.cli import core, mappings, serve  # noqa: F401  (registers the commands)
from fhir_adapter.cli.common import main

__all__ = ["main"]
