"""Code systems, aliases, local-code crosswalks and value-set matching (spec §3 "Code handling").

Pure: no file, network or database access.
"""

from fhir_adapter.terminology.codes import CodeMatch, Terminology, clean_uri, normalise

__all__ = ["CodeMatch", "Terminology", "clean_uri", "normalise"]
