"""``python -m fhir_adapter``."""

from fhir_adapter.cli import main

main()
