"""FHIR JSON responses (R4 §3.1.0 "Content Types and encodings": ``application/fhir+json``)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse

FHIR_JSON = "application/fhir+json"
FHIR_NDJSON = "application/fhir+ndjson"
#: Media types accepted for FHIR JSON request bodies (R4 §3.1.0.2; plain JSON is common).
JSON_TYPES = frozenset({FHIR_JSON, "application/json", "application/json+fhir"})


class FhirResponse(JSONResponse):
    """A FHIR resource as ``application/fhir+json; charset=utf-8``, serialised by orjson."""

    media_type = FHIR_JSON

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)

    def init_headers(self, headers: Any = None) -> None:
        super().init_headers(headers)
        # starlette adds "; charset=utf-8" only for text/*: FHIR clients expect it on fhir+json
        self.raw_headers = [
            (k, b"application/fhir+json; charset=utf-8" if k == b"content-type" else v)
            for k, v in self.raw_headers
        ]
