"""The service's OpenAPI document, made to say what the routes really take and answer.

FastAPI derives ``/openapi.json`` from the route signatures. Our routes read raw bodies, headers
and FHIR search parameters from the request (R4 http.html: bodies are FHIR resources, not fixed
models) and answer with :class:`~fhir_adapter.api.responses.FhirResponse`, so the derived document
would say "any JSON under ``application/json``, 422 ``HTTPValidationError``" for every route,
which is false: errors are OperationOutcomes (:mod:`fhir_adapter.api.errors`, R4 §3.1.0.4),
request-validation errors are 400, bodies are ``application/fhir+json``. :func:`describe` rewrites
the derived document from the table :data:`OPERATIONS` below (request bodies, query and header
parameters, and every response status with its media types and a schema), and gives any route
missing from the table the truthful default: an undescribed success, ``4XX`` OperationOutcome.

The schemas are deliberately shallow (a FHIR resource: ``resourceType`` and, when stored,
``id`` and ``meta``): the FHIR R4 StructureDefinitions, not OpenAPI, define the content. The
schemathesis run in ``tests/api/test_schemathesis.py`` checks the responses against them.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from fhir_adapter.api.responses import FHIR_JSON, FHIR_NDJSON
from fhir_adapter.api.routes_measure import (
    CARE_GAPS_PARAMS,
    DATA_REQUIREMENTS_PARAMS,
    EVALUATE_MEASURE_PARAMS,
    EVALUATE_PARAMS,
    ParamSpec,
)
from fhir_adapter.ingest.push import WRITABLE_TYPES

Json = dict[str, Any]

REF = "#/components/schemas/"
#: R4 ``id`` (§2.24.0.1) and the resource-type segment the routes match.
ID_PATTERN = r"^[A-Za-z0-9\-.]{1,64}$"
TYPE_PATTERN = r"^[A-Z][A-Za-z]{0,63}$"

SCHEMAS: dict[str, Json] = {
    "OperationOutcome": {
        "type": "object",
        "description": "R4 OperationOutcome: every error, and the acknowledgements of writes and jobs.",
        "required": ["resourceType", "issue"],
        "properties": {
            "resourceType": {"const": "OperationOutcome"},
            "issue": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["severity", "code"],
                    "properties": {
                        "severity": {"enum": ["fatal", "error", "warning", "information"]},
                        "code": {"type": "string", "minLength": 1},
                        "diagnostics": {"type": "string"},
                        "expression": {"type": "array", "items": {"type": "string"}},
                    },
                },
            },
        },
    },
    "Resource": {
        "type": "object",
        "description": "Any FHIR R4 resource (its StructureDefinition defines the rest).",
        "required": ["resourceType"],
        "properties": {"resourceType": {"type": "string", "pattern": TYPE_PATTERN}},
    },
    "StoredResource": {
        "type": "object",
        "description": "A stored resource as served: meta.versionId (the store's version), meta.lastUpdated "
        "(when the adapter stored it), meta.source (the source name).",
        "required": ["resourceType", "id", "meta"],
        "properties": {
            "resourceType": {"type": "string", "pattern": TYPE_PATTERN},
            "id": {"type": "string", "pattern": ID_PATTERN},
            "meta": {
                "type": "object",
                "required": ["versionId"],
                "properties": {"versionId": {"type": "string", "minLength": 1}},
            },
        },
    },
    "WritableResource": {
        "type": "object",
        "description": "A resource of a type this server accepts for create, update, transaction and batch.",
        "required": ["resourceType"],
        "properties": {
            "resourceType": {"enum": sorted(WRITABLE_TYPES)},
            "id": {"type": "string", "pattern": ID_PATTERN},
        },
    },
    "Bundle": {
        "type": "object",
        "required": ["resourceType", "type"],
        "properties": {
            "resourceType": {"const": "Bundle"},
            "type": {"type": "string"},
            "entry": {"type": "array", "items": {"type": "object"}},
        },
    },
    "TransactionBundle": {
        "type": "object",
        "description": "A transaction (all or nothing) or batch Bundle (R4 http.html#transaction).",
        "required": ["resourceType", "type"],
        "properties": {
            "resourceType": {"const": "Bundle"},
            "type": {"enum": ["transaction", "batch"]},
            "entry": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["request"],
                    "properties": {
                        "fullUrl": {"type": "string"},
                        "request": {
                            "type": "object",
                            "required": ["method", "url"],
                            "properties": {
                                "method": {"enum": ["POST", "PUT", "DELETE"]},
                                "url": {"type": "string"},
                                "ifMatch": {"type": "string"},
                            },
                        },
                        "resource": {"$ref": REF + "WritableResource"},
                    },
                },
            },
        },
    },
    "Parameters": {
        "type": "object",
        "required": ["resourceType"],
        "properties": {
            "resourceType": {"const": "Parameters"},
            "parameter": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {"name": {"type": "string"}},
                },
            },
        },
    },
    "OAuthError": {
        "type": "object",
        "description": "RFC 6749 §5.2 error response of the token endpoint.",
        "required": ["error"],
        "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}},
    },
}


def _ref(name: str) -> Json:
    return {"$ref": REF + name}


def _fhir(name: str) -> Json:
    return {FHIR_JSON: {"schema": _ref(name)}}


def _resource_of(rtype: str) -> Json:
    """``{FHIR_JSON: schema}`` of a resource whose type is ``rtype``."""
    return {
        FHIR_JSON: {
            "schema": {
                "allOf": [
                    _ref("Resource"),
                    {"type": "object", "properties": {"resourceType": {"const": rtype}}},
                ]
            }
        }
    }


OUTCOME = _fhir("OperationOutcome")
#: An error: 4xx with an OperationOutcome (``default`` is not used: 5xx is never expected).
ERRORS: Json = {"4XX": {"description": "Refused: an OperationOutcome says why", "content": OUTCOME}}
ACCEPTED: Json = {
    "202": {
        "description": "Accepted as an asynchronous job: poll the Content-Location URL",
        "headers": {"Content-Location": {"schema": {"type": "string"}}},
        "content": OUTCOME,
    }
}
PREFER_ASYNC: Json = {
    "name": "Prefer",
    "in": "header",
    "required": False,
    "description": "respond-async runs the operation as a job (R4 §3.1.6)",
    "schema": {"type": "string", "enum": ["respond-async"]},
}


def _query(name: str, description: str, schema: Json | None = None, *, required: bool = False) -> Json:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": schema or {"type": "string"},
    }


def _header(name: str, description: str, schema: Json | None = None) -> Json:
    return {
        "name": name,
        "in": "header",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string"},
    }


def _path(name: str, pattern: str | None = None) -> Json:
    schema: Json = {"type": "string", "minLength": 1}
    if pattern:
        schema["pattern"] = pattern
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _operation_params(spec: ParamSpec, *, required_in_query: bool) -> list[Json]:
    """Query parameters of a FHIR operation (R4 §3.1.0.11): repeating ones as arrays."""
    out = []
    for name, (low, high) in spec.items():
        schema: Json = {"type": "string"}
        if high is None or high > 1:
            schema = {"type": "array", "items": {"type": "string"}}
        out.append(
            _query(name, f"cardinality {low}..{'*' if high is None else high}", schema,
                   required=required_in_query and low >= 1)
        )  # fmt: skip
    return out


PARAMETERS_BODY: Json = {
    "required": False,
    "content": {
        FHIR_JSON: {"schema": _ref("Parameters")},
        "application/json": {"schema": _ref("Parameters")},
    },
}
RESOURCE_BODY: Json = {
    "required": True,
    "content": {
        FHIR_JSON: {"schema": _ref("WritableResource")},
        "application/json": {"schema": _ref("WritableResource")},
    },
}
PREFER_RETURN = _header(
    "Prefer",
    "return=representation (default) | return=OperationOutcome (R4 http.html); return=minimal answers "
    "with no body",
    {"type": "string", "enum": ["return=representation", "return=OperationOutcome"]},
)
#: Result parameters and common search parameters (R4 search.html); parameters a type does not
#: support are ignored unless ``Prefer: handling=strict`` (then 400).
SEARCH_PARAMS: list[Json] = [
    _query("_count", "page size (capped by the server)", {"type": "integer", "minimum": 0}),
    _query("_summary", "count | false", {"type": "string", "enum": ["count", "false"]}),
    _query("_page", "opaque page token from a paging link"),
    _query("_format", "json only", {"type": "string", "enum": ["json", "application/fhir+json"]}),
    _query("_source", "source name (R4 _source)"),
    _query("_id", "resource id"),
    _query("_lastUpdated", "when the adapter stored it (date search, prefixes eq ne gt lt ge le sa eb ap)"),
    _query("patient", "reference to the Patient"),
    _query("subject", "reference to the subject"),
    _query("date", "clinical date (date search)"),
    _query("code", "token: [system|]code"),
    _query("identifier", "token: [system|]value"),
    _header("Prefer", "handling=strict: unknown parameters are errors", {"type": "string", "enum": ["handling=strict"]}),
]  # fmt: skip

AUDIT_SEARCH: list[Json] = [
    _query("_count", "page size (capped by the server)", {"type": "integer", "minimum": 0}),
    _query("_page", "opaque page token from a paging link"),
    *(_query(name, "AuditEvent search parameter") for name in
      ("date", "agent", "entity-type", "action", "outcome", "subtype")),
]  # fmt: skip


def _ok(description: str, content: Json | None = None, status: str = "200") -> Json:
    response: Json = {"description": description}
    if content is not None:
        response["content"] = content
    return {status: response}


def _written(*statuses: str) -> Json:
    out: Json = {}
    for status in statuses:
        out[status] = {
            "description": "Stored: the resource as stored (Prefer return=OperationOutcome: the data-quality "
            'warnings); ETag W/"<version>", Location .../_history/<version>',
            "headers": {"ETag": {"schema": {"type": "string"}}, "Location": {"schema": {"type": "string"}}},
            "content": {
                FHIR_JSON: {"schema": {"oneOf": [_ref("StoredResource"), _ref("OperationOutcome")]}},
            },
        }
    return out


#: (method, path) → what FastAPI cannot know: ``parameters`` (replacing the derived ones),
#: ``requestBody``, ``responses`` (joined by :data:`ERRORS` unless ``errors`` says otherwise).
OPERATIONS: dict[tuple[str, str], Json] = {
    ("get", "/fhir/metadata"): {"responses": _ok("CapabilityStatement", _resource_of("CapabilityStatement"))},
    ("get", "/healthz"): {
        "responses": {
            **_ok(
                "The store answers",
                {"application/json": {"schema": {"type": "object", "required": ["status"]}}},
            ),
            "5XX": {"description": "The store does not answer", "content": OUTCOME},
        }
    },
    ("get", "/metrics"): {
        "responses": _ok(
            "Prometheus text exposition format 0.0.4", {"text/plain": {"schema": {"type": "string"}}}
        )
    },
    ("post", "/auth/token"): {
        "responses": {
            **_ok(
                "Access token (SMART Backend Services)",
                {
                    "application/json": {
                        "schema": {"type": "object", "required": ["access_token", "token_type"]}
                    }
                },
            ),
            "4XX": {
                "description": "OAuth error (RFC 6749 §5.2)",
                "content": {
                    "application/json": {"schema": {"anyOf": [_ref("OAuthError"), _ref("OperationOutcome")]}}
                },
            },
        },
        "errors": False,
    },
    ("get", "/fhir/.well-known/smart-configuration"): {
        "responses": _ok(
            "SMART configuration",
            {"application/json": {"schema": {"type": "object", "required": ["token_endpoint"]}}},
        ),
    },
    ("get", "/fhir/_jobs/{job_id}"): {
        "parameters": [_path("job_id")],
        "responses": {
            **_ok("The finished job's result, in the media type the job produced"),
            "202": {"description": "Still queued or running (X-Progress, Retry-After)"},
            "5XX": {
                "description": "The job failed (Bulk Data 3.0 status request): re-run it",
                "content": OUTCOME,
            },
        },
    },
    ("delete", "/fhir/_jobs/{job_id}"): {
        "parameters": [_path("job_id")],
        "responses": {"202": {"description": "Cancelled", "content": OUTCOME}},
    },
    ("post", "/fhir/_jobs/{job_id}/$rerun"): {"parameters": [_path("job_id")], "responses": ACCEPTED},
    ("post", "/fhir"): {
        "requestBody": {"required": True, "content": {FHIR_JSON: {"schema": _ref("TransactionBundle")}}},
        "responses": _ok("transaction-response or batch-response Bundle", _fhir("Bundle")),
    },
    ("post", "/fhir/$ingest"): {
        "parameters": [PREFER_ASYNC],
        "requestBody": {
            "required": True,
            "content": {
                FHIR_NDJSON: {
                    "schema": {
                        "type": "array",
                        "items": _ref("WritableResource"),
                        "description": "NDJSON: one resource (any R4 type, or a Bundle) per line, as the items here",
                    }
                }
            },
        },
        "responses": {
            **_ok("Acknowledgement: counts, rejected lines, data-quality issues", OUTCOME),
            **ACCEPTED,
        },
    },
    ("post", "/fhir/$validate"): {
        "requestBody": {"required": True, "content": {FHIR_JSON: {"schema": _ref("Resource")}}},
        "responses": _ok("Findings (errors, warnings); nothing stored", OUTCOME),
    },
    ("post", "/fhir/{type}/$validate"): {
        "parameters": [_path("type", TYPE_PATTERN)],
        "requestBody": {"required": True, "content": {FHIR_JSON: {"schema": _ref("Resource")}}},
        "responses": _ok("Findings (errors, warnings); nothing stored", OUTCOME),
    },
    ("get", "/fhir/docs/what-to-send"): {
        "responses": _ok(
            "The page (Accept: text/markdown for Markdown)",
            {"text/html": {"schema": {"type": "string"}}, "text/markdown": {"schema": {"type": "string"}}},
        ),
    },
    ("post", "/fhir/{type}"): {
        "parameters": [
            _path("type", TYPE_PATTERN),
            _header("If-None-Exist", "identifier=[system|]value: conditional create (R4 http.html#ccreate)"),
            PREFER_RETURN,
        ],
        "requestBody": RESOURCE_BODY,
        "responses": _written("201", "200"),
    },
    ("put", "/fhir/{type}/{id}"): {
        "parameters": [
            _path("type", TYPE_PATTERN),
            _path("id", ID_PATTERN),
            _header("If-Match", 'W/"<version>": update only that version (R4 http.html#concurrency)'),
            PREFER_RETURN,
        ],
        "requestBody": RESOURCE_BODY,
        "responses": _written("200", "201"),
    },
    ("delete", "/fhir/{type}/{id}"): {
        "parameters": [
            _path("type", TYPE_PATTERN),
            _path("id", ID_PATTERN),
            _header("If-Match", 'W/"<version>"'),
        ],
        "responses": {
            "204": {"description": "Deleted (a tombstone version), or there was nothing to delete"}
        },
    },
    ("get", "/fhir/Measure/{measure_id}/$evaluate-measure"): {
        "parameters": [
            _path("measure_id"),
            PREFER_ASYNC,
            *_operation_params(EVALUATE_MEASURE_PARAMS, required_in_query=True),
        ],
        "responses": {**_ok("MeasureReport", _resource_of("MeasureReport")), **ACCEPTED},
    },
    ("post", "/fhir/Measure/{measure_id}/$evaluate-measure"): {
        "parameters": [
            _path("measure_id"),
            PREFER_ASYNC,
            *_operation_params(EVALUATE_MEASURE_PARAMS, required_in_query=False),
        ],
        "requestBody": PARAMETERS_BODY,
        "responses": {**_ok("MeasureReport", _resource_of("MeasureReport")), **ACCEPTED},
    },
    ("post", "/fhir/Measure/$evaluate"): {
        "parameters": [PREFER_ASYNC, *_operation_params(EVALUATE_PARAMS, required_in_query=False)],
        "requestBody": PARAMETERS_BODY,
        "responses": {
            **_ok("Parameters of Bundles of MeasureReports", _resource_of("Parameters")),
            **ACCEPTED,
        },
    },
    ("get", "/fhir/Measure/{measure_id}/$data-requirements"): {
        "parameters": [
            _path("measure_id"),
            *_operation_params(DATA_REQUIREMENTS_PARAMS, required_in_query=True),
        ],
        "responses": _ok("module-definition Library", _resource_of("Library")),
    },
    ("post", "/fhir/Measure/$deqm-submit-data"): {
        "requestBody": {"required": True, "content": {FHIR_JSON: {"schema": _ref("Parameters")}}},
        "responses": _ok("Outcome of each submitted bundle", {FHIR_JSON: {"schema": _ref("Resource")}}),
    },
    ("get", "/fhir/Measure/$care-gaps"): {
        "parameters": [PREFER_ASYNC, *_operation_params(CARE_GAPS_PARAMS, required_in_query=True)],
        "responses": {**_ok("Parameters of gaps-in-care Bundles", _resource_of("Parameters")), **ACCEPTED},
    },
    ("post", "/fhir/Measure/$care-gaps"): {
        "parameters": [PREFER_ASYNC, *_operation_params(CARE_GAPS_PARAMS, required_in_query=False)],
        "requestBody": PARAMETERS_BODY,
        "responses": {**_ok("Parameters of gaps-in-care Bundles", _resource_of("Parameters")), **ACCEPTED},
    },
    ("get", "/fhir/{rtype}"): {
        "parameters": [_path("rtype", TYPE_PATTERN), *SEARCH_PARAMS],
        "responses": _ok("searchset Bundle with total and paging links", _fhir("Bundle")),
    },
    ("post", "/fhir/{rtype}/_search"): {
        "parameters": [_path("rtype", TYPE_PATTERN), *SEARCH_PARAMS],
        "requestBody": {
            "required": False,
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "_count": {"type": "integer", "minimum": 0},
                            "patient": {"type": "string"},
                            "date": {"type": "string"},
                            "code": {"type": "string"},
                        },
                    }
                }
            },
        },
        "responses": _ok("searchset Bundle with total and paging links", _fhir("Bundle")),
    },
    ("get", "/fhir/{rtype}/{rid}"): {
        "parameters": [
            _path("rtype", TYPE_PATTERN),
            _path("rid", ID_PATTERN),
            _query("_source", "which source's resource when two sources share the id"),
        ],
        "responses": _ok("The current version", {FHIR_JSON: {"schema": _ref("Resource")}}),
    },
    ("get", "/fhir/{rtype}/{rid}/_history/{vid}"): {
        "parameters": [
            _path("rtype", TYPE_PATTERN),
            _path("rid", ID_PATTERN),
            _path("vid"),
            _query("_source", "which source's resource when two sources share the id"),
        ],
        "responses": _ok("That version", {FHIR_JSON: {"schema": _ref("Resource")}}),
    },
    # The audit trail (api/audit.py): newest first, read-only.
    ("get", "/fhir/AuditEvent"): {
        "parameters": AUDIT_SEARCH,
        "responses": _ok("searchset Bundle of AuditEvents", _fhir("Bundle")),
    },
    ("post", "/fhir/AuditEvent/_search"): {
        "parameters": AUDIT_SEARCH,
        "requestBody": {
            "required": False,
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {
                        "type": "object",
                        "properties": {"date": {"type": "string"}, "agent": {"type": "string"}},
                    }
                }
            },
        },
        "responses": _ok("searchset Bundle of AuditEvents", _fhir("Bundle")),
    },
    ("get", "/fhir/AuditEvent/{event_id}"): {
        "parameters": [_path("event_id")],
        "responses": _ok("The audit event", _resource_of("AuditEvent")),
    },
    ("get", "/fhir/AuditEvent/{event_id}/_history/{vid}"): {
        "parameters": [_path("event_id"), _path("vid")],
        "responses": _ok("The audit event (its only version is 1)", _resource_of("AuditEvent")),
    },
    # Bulk Data (routes_bulk): kick-offs answer 202; the files are NDJSON.
    ("get", "/fhir/$export"): {"parameters": [PREFER_ASYNC], "responses": ACCEPTED},
    ("get", "/fhir/Patient/$export"): {"parameters": [PREFER_ASYNC], "responses": ACCEPTED},
    ("get", "/fhir/Group/{group_id}/$export"): {
        "parameters": [_path("group_id"), PREFER_ASYNC],
        "responses": ACCEPTED,
    },
    ("get", "/fhir/_exports/{job_id}/{name}"): {
        "parameters": [_path("job_id"), _path("name")],
        "responses": _ok("One output file", {FHIR_NDJSON: {"schema": {"type": "string"}}}),
    },
    ("post", "/fhir/$import"): {
        "requestBody": {"required": True, "content": {FHIR_JSON: {"schema": {"type": "object"}}}},
        "responses": ACCEPTED,
    },
    ("get", "/fhir/$export-flat"): {
        "parameters": [PREFER_ASYNC],
        "responses": {**_ok("CSV or Parquet table"), **ACCEPTED},
    },
}


def describe(derived: Json, operations: dict[tuple[str, str], Json] | None = None) -> Json:
    """A copy of FastAPI's ``derived`` document with each operation's parameters, request body and
    responses taken from ``operations`` (default :data:`OPERATIONS`), FastAPI's request-validation
    responses (422 ``HTTPValidationError``, which the error handler never sends) removed, and
    every operation's errors documented as ``4XX`` OperationOutcome."""
    table = OPERATIONS if operations is None else operations
    document = copy.deepcopy(derived)
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            spec = table.get((method, path))
            derived_responses = operation.get("responses", {})
            if spec is None:
                successes = {code: {"description": r.get("description", "Success")}
                             for code, r in derived_responses.items() if code.startswith("2")}  # fmt: skip
                operation["responses"] = {**successes, **ERRORS}
                continue
            if "parameters" in spec:
                operation["parameters"] = copy.deepcopy(spec["parameters"])
            if "requestBody" in spec:
                operation["requestBody"] = copy.deepcopy(spec["requestBody"])
            responses = copy.deepcopy(spec["responses"])
            if spec.get("errors", True):
                responses = {**responses, **copy.deepcopy(ERRORS)}
            operation["responses"] = responses
    components = document.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        if not _referenced(document, REF + unused):
            components.pop(unused, None)
    components.update(copy.deepcopy(SCHEMAS))
    return document


def _referenced(value: Any, ref: str) -> bool:
    if isinstance(value, dict):
        return value.get("$ref") == ref or any(_referenced(v, ref) for v in value.values())
    if isinstance(value, list):
        return any(_referenced(v, ref) for v in value)
    return False


def undocumented(document: Json) -> Iterable[tuple[str, str]]:
    """(method, path) of the document's operations missing from :data:`OPERATIONS`."""
    for path, item in document.get("paths", {}).items():
        for method in item:
            if (method, path) not in OPERATIONS:
                yield method, path
