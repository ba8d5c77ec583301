"""``POST /fhir/$import``: bulk import by manifest, the server fetching the NDJSON files.

Bulk Data 3.0 defines no import (``fhir-contract.md`` "Bulk Data"): HAPI and the SMART/Argonaut
bulk-import drafts have the client name files by URL and the server pull them. Two request forms
are accepted (UNVERIFIED against a published specification; both drafts use these names):

- a JSON manifest (SMART "bulk import" draft, ping-and-pull): ``{"inputFormat":
  "application/fhir+ndjson", "inputSource": "https://…", "input": [{"type": "Patient", "url":
  "https://…/Patient.ndjson"}, …]}`` (``storageDetail`` is ignored);
- a ``Parameters`` resource (HAPI FHIR ``$import``): ``inputFormat`` (``valueCode``/``valueString``),
  ``inputSource`` (``valueUri``), and one ``input`` per file with parts ``type`` (``valueCode``)
  and ``url`` (``valueUri``/``valueUrl``).

**Fetching is an SSRF risk**, so a URL is fetched only when (:func:`check_url`):

- its scheme is ``https``, or ``http`` for a host listed as ``http://host[:port]``;
- its host and port exactly match an entry of ``settings.import_allowed_hosts`` (``host``,
  ``host:port``, ``http://host[:port]``; no port means the scheme's default; no user info);
- a host *name* resolves only to public addresses (not loopback, private, link-local, shared,
  reserved, multicast or unspecified; IPv4-mapped IPv6 is judged as IPv4): an internal file
  server is allowed by listing its address itself (an IP literal on the list is an explicit
  permission). The name is resolved again by the HTTP client, so a DNS answer that changes
  between the two lookups is not caught (documented limit);
- redirects are followed (at most :data:`MAX_REDIRECTS`) only to the same scheme, host and port,
  and each hop is checked again;
- a file larger than ``settings.max_body_bytes`` (declared or streamed, after decompression) is
  refused; environment proxies are not used.

Each file is then stored under the caller's source like ``$ingest``
(:func:`fhir_adapter.ingest.push.ingest_ndjson`: bad lines reported and skipped, data-quality
warnings), and the job's result is one OperationOutcome: a summary, then each file's
acknowledgement with its issues prefixed by the file's type and URL.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from fhir_adapter.errors import UsageError
from fhir_adapter.fhir.outcome import Issue, operation_outcome
from fhir_adapter.fhir.resources import R4_RESOURCE_TYPES
from fhir_adapter.ingest import push
from fhir_adapter.ingest.quality import QualityRules
from fhir_adapter.ingest.runner import Clock, utc_now
from fhir_adapter.store.db import Store

#: ``_outputFormat``-style names of NDJSON (Bulk Data 3.0 "Query Parameters" ``_outputFormat``).
NDJSON_FORMATS = frozenset({"application/fhir+ndjson", "application/ndjson", "ndjson"})
MAX_REDIRECTS = 5
MAX_INPUTS = 1000
_DEFAULT_PORT = {"http": 80, "https": 443}
#: ``resolve(host, port)`` → the addresses a host name stands for (tests replace DNS).
Resolver = Callable[[str, int], list[str]]
Progress = Callable[[str], None]


class ImportRefusedError(UsageError):
    """A URL this server will not fetch (allow-list or SSRF rules)."""

    issue_type = "security"


@dataclass(frozen=True)
class ImportInput:
    type: str
    url: str


@dataclass(frozen=True)
class ImportManifest:
    input_format: str
    input_source: str | None
    inputs: tuple[ImportInput, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "inputFormat": self.input_format,
            "inputSource": self.input_source,
            "input": [{"type": i.type, "url": i.url} for i in self.inputs],
        }


@dataclass(frozen=True)
class AllowedHost:
    host: str
    #: ``None``: the scheme's default port
    port: int | None
    http: bool


# -- the request ----------------------------------------------------------------------------------


def _value(param: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if key in param:
            return param[key]
    return None


def _from_parameters(value: dict[str, Any]) -> dict[str, Any]:
    manifest: dict[str, Any] = {"input": []}
    for n, param in enumerate(value.get("parameter") or ()):
        if not isinstance(param, dict):
            raise UsageError("a parameter must be an object", location=f"Parameters.parameter[{n}]")
        name = param.get("name")
        if name == "inputFormat":
            manifest["inputFormat"] = _value(param, "valueCode", "valueString")
        elif name == "inputSource":
            manifest["inputSource"] = _value(param, "valueUri", "valueUrl", "valueString")
        elif name == "input":
            item: dict[str, Any] = {"_at": f"Parameters.parameter[{n}]"}
            for part in param.get("part") or ():
                if isinstance(part, dict) and part.get("name") == "type":
                    item["type"] = _value(part, "valueCode", "valueString")
                elif isinstance(part, dict) and part.get("name") == "url":
                    item["url"] = _value(part, "valueUri", "valueUrl", "valueString")
            manifest["input"].append(item)
    return manifest


def parse_manifest(value: Any) -> ImportManifest:
    """The import request (module docstring), checked: NDJSON format, 1 to :data:`MAX_INPUTS`
    inputs, each an R4 resource type and an absolute http(s) URL. :class:`UsageError` names the
    element at fault."""
    if not isinstance(value, dict):
        raise UsageError("the $import body must be a JSON object (a manifest or a Parameters resource)")
    parameters = value.get("resourceType") == "Parameters"
    raw = _from_parameters(value) if parameters else value
    root = "Parameters.parameter" if parameters else "$"
    fmt = raw.get("inputFormat", "application/fhir+ndjson")
    if not isinstance(fmt, str) or fmt.strip().replace(" ", "+").lower() not in NDJSON_FORMATS:
        raise UsageError(
            f"inputFormat {fmt!r} is not supported: application/fhir+ndjson", location=f"{root}.inputFormat"
        )
    source = raw.get("inputSource")
    if source is not None and not isinstance(source, str):
        raise UsageError("inputSource must be a URI", location=f"{root}.inputSource")
    items = raw.get("input")
    if not isinstance(items, list) or not items:
        raise UsageError("input must list at least one file ({type, url})", location=f"{root}.input")
    if len(items) > MAX_INPUTS:
        raise UsageError(f"at most {MAX_INPUTS} input files per $import", location=f"{root}.input")
    inputs = []
    for n, item in enumerate(items):
        where = str(item.get("_at")) if isinstance(item, dict) and "_at" in item else f"$.input[{n}]"
        if not isinstance(item, dict):
            raise UsageError("an input must be an object {type, url}", location=where)
        rtype, url = item.get("type"), item.get("url")
        if not isinstance(rtype, str) or rtype not in R4_RESOURCE_TYPES:
            raise UsageError(f"input type {rtype!r} is not an R4 resource type", location=f"{where}.type")
        if not isinstance(url, str) or urlsplit(url).scheme not in _DEFAULT_PORT or not urlsplit(url).netloc:
            raise UsageError(
                f"input url {str(url)[:200]!r} is not an absolute http(s) URL", location=f"{where}.url"
            )
        inputs.append(ImportInput(rtype, url))
    return ImportManifest(fmt, source, tuple(inputs))


# -- the allow-list and SSRF checks -----------------------------------------------------------------


def parse_allowed_hosts(entries: Iterable[str]) -> list[AllowedHost]:
    """``settings.import_allowed_hosts`` as :class:`AllowedHost` (``host``, ``host:port``,
    ``http://host[:port]``, ``https://host[:port]``; IPv6 in brackets)."""
    out = []
    for entry in entries:
        text = entry.strip()
        http = text.lower().startswith("http://")
        if "://" not in text:
            text = "https://" + text
        parts = urlsplit(text)
        try:
            port = parts.port
        except ValueError:
            raise UsageError(f"import_allowed_hosts: {entry!r} has an invalid port") from None
        if parts.scheme not in _DEFAULT_PORT or not parts.hostname or parts.path not in ("", "/"):
            raise UsageError(f"import_allowed_hosts: {entry!r} is not host[:port] or http://host[:port]")
        out.append(AllowedHost(parts.hostname.lower(), port, http))
    return out


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def is_public(address: str) -> bool:
    """Whether an address is globally routable (and not multicast); IPv4-mapped IPv6 addresses
    are judged by their IPv4 address."""
    ip = _ip(address.split("%", 1)[0])
    if ip is None:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def check_url(url: str, allowed: Sequence[AllowedHost], resolve: Resolver | None = system_resolver) -> None:
    """Refuse (:class:`ImportRefusedError`) a URL the module docstring's rules do not allow;
    ``resolve=None`` skips the DNS check (at kick-off, where only the list is checked)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORT:
        raise ImportRefusedError(
            f"{url[:200]}: only https (or http for hosts listed as http://host) is fetched"
        )
    if parts.username is not None or parts.password is not None:
        raise ImportRefusedError(f"{url[:200]}: URLs with user information are not fetched")
    host = (parts.hostname or "").lower()
    try:
        port = parts.port or _DEFAULT_PORT[scheme]
    except ValueError:
        raise ImportRefusedError(f"{url[:200]}: invalid port") from None
    matches = [a for a in allowed if a.host == host and (a.port or _DEFAULT_PORT[scheme]) == port]
    if scheme == "http":
        matches = [a for a in matches if a.http and (a.port or 80) == port]
    if not matches:
        listed = "http://" if scheme == "http" else ""
        raise ImportRefusedError(
            f"{url[:200]}: host {host}:{port} is not on the import allow-list for {scheme} "
            f"(settings.import_allowed_hosts; list it as {listed}{host}{'' if parts.port is None else f':{port}'})"
        )
    if _ip(host) is not None or resolve is None:
        return  # an IP literal on the list is an explicit permission
    try:
        addresses = resolve(host, port)
    except OSError as exc:
        raise ImportRefusedError(f"{url[:200]}: cannot resolve {host} ({exc.__class__.__name__})") from None
    private = [a for a in addresses if not is_public(a)]
    if private or not addresses:
        raise ImportRefusedError(
            f"{url[:200]}: {host} resolves to a non-public address ({', '.join(private) or 'none'}); "
            "list that address itself on the allow-list to fetch from it"
        )


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or _DEFAULT_PORT.get(scheme, 0)


def fetch(
    client: httpx.Client,
    url: str,
    dest: Path,
    *,
    allowed: Sequence[AllowedHost],
    max_bytes: int,
    resolve: Resolver | None = system_resolver,
) -> int:
    """Download ``url`` to ``dest`` under the rules of the module docstring; bytes written.
    :class:`ImportRefusedError` for a refused URL, redirect or size; :class:`UsageError` for an
    HTTP error. A failed download leaves no file."""
    current = url
    try:
        for _hop in range(MAX_REDIRECTS + 1):
            check_url(current, allowed, resolve)
            with client.stream("GET", current, headers={"Accept": "application/fhir+ndjson"}) as response:
                if response.is_redirect:
                    location = response.headers.get("location", "")
                    target = urljoin(current, location)
                    if _origin(target) != _origin(current):
                        raise ImportRefusedError(
                            f"{url[:200]}: redirected to another host or scheme ({target[:200]}); not followed"
                        )
                    current = target
                    continue
                if response.status_code != 200:
                    raise UsageError(f"{url[:200]}: HTTP {response.status_code}")
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    raise ImportRefusedError(
                        f"{url[:200]}: {declared} bytes is more than the limit of {max_bytes}"
                    )
                size = 0
                with dest.open("wb") as out:
                    for chunk in response.iter_bytes(1 << 16):
                        size += len(chunk)
                        if size > max_bytes:
                            raise ImportRefusedError(f"{url[:200]}: more than the limit of {max_bytes} bytes")
                        out.write(chunk)
                return size
        raise ImportRefusedError(f"{url[:200]}: more than {MAX_REDIRECTS} redirects")
    except httpx.HTTPError as exc:
        dest.unlink(missing_ok=True)
        raise UsageError(f"{url[:200]}: {exc.__class__.__name__}: {exc}") from None
    except BaseException:
        dest.unlink(missing_ok=True)
        raise


# -- the job ---------------------------------------------------------------------------------------


def _prefixed(issue: Issue, label: str) -> Issue:
    return replace(issue, diagnostics=f"{label}: {issue.diagnostics}")


def run_import(
    store: Store,
    manifest: ImportManifest,
    source: str,
    *,
    allowed_hosts: Sequence[str],
    max_bytes: int,
    rules: QualityRules | None,
    batch_size: int,
    spool: Path,
    timeout: float = 60.0,
    clock: Clock = utc_now,
    allowed: push.Allowed | None = None,
    progress: Progress | None = None,
    resolve: Resolver | None = system_resolver,
    transport: httpx.BaseTransport | None = None,
    max_line_bytes: int | None = None,
) -> dict[str, Any]:
    """Fetch and store every input in order (one failing file does not stop the others); the
    acknowledgement OperationOutcome (module docstring). A line longer than ``max_line_bytes`` is
    a rejected line of its file."""
    hosts = parse_allowed_hosts(allowed_hosts)
    spool.mkdir(parents=True, exist_ok=True)
    issues: list[Issue] = []
    done = failed = 0
    totals = {"created": 0, "updated": 0, "unchanged": 0, "deleted": 0, "rejected": 0}
    options: dict[str, Any] = {
        "follow_redirects": False,
        "trust_env": False,
        "timeout": httpx.Timeout(timeout),
    }
    if transport is not None:
        options["transport"] = transport
    with httpx.Client(**options) as client:
        for n, item in enumerate(manifest.inputs, start=1):
            label = f"input {n} ({item.type} {item.url[:200]})"
            if progress is not None:
                progress(f"file {n} of {len(manifest.inputs)}: fetching")
            fd, name = tempfile.mkstemp(prefix="import-", suffix=".ndjson", dir=spool)
            os.close(fd)
            path = Path(name)
            try:
                try:
                    fetch(client, item.url, path, allowed=hosts, max_bytes=max_bytes, resolve=resolve)
                except UsageError as exc:
                    failed += 1
                    issues.append(Issue("error", exc.issue_type if exc.issue_type != "invalid" else "processing",
                                        f"{label}: not imported: {exc.message}", f"input[{n - 1}]"))  # fmt: skip
                    continue
                if progress is not None:
                    progress(f"file {n} of {len(manifest.inputs)}: storing")
                with path.open("rb") as lines:
                    result, ack = push.ingest_ndjson(
                        store, lines, source, rules=rules, batch_size=batch_size, clock=clock, allowed=allowed,
                        max_line_bytes=max_line_bytes,
                    )  # fmt: skip
            finally:
                path.unlink(missing_ok=True)
            done += 1
            s = result.stats
            for key, value in (("created", s.created), ("updated", s.updated), ("unchanged", s.unchanged),
                               ("deleted", s.deleted), ("rejected", len(result.errors))):  # fmt: skip
                totals[key] += value
            for raw in ack["issue"]:
                expression = raw.get("expression")
                issue = Issue(raw["severity"], raw["code"], str(raw.get("diagnostics", "")),
                              str(expression[0]) if expression else None, _details(raw))  # fmt: skip
                issues.append(_prefixed(issue, label))
    summary = (
        f"{len(manifest.inputs)} files: {done} imported, {failed} not imported; resources created "
        f"{totals['created']}, updated {totals['updated']}, unchanged {totals['unchanged']}, deleted "
        f"{totals['deleted']}, rejected {totals['rejected']}; stored under source {source!r}"
    )
    if not failed:
        head = Issue("information", "informational", summary)
    elif done:
        head = Issue("warning", "incomplete", summary)
    else:
        head = Issue("error", "processing", summary)
    return operation_outcome([head, *issues])


def _details(raw: dict[str, Any]) -> tuple[str, str] | None:
    codings = (raw.get("details") or {}).get("coding") or ()
    if codings and isinstance(codings[0], dict) and "system" in codings[0] and "code" in codings[0]:
        return str(codings[0]["system"]), str(codings[0]["code"])
    return None


__all__ = [
    "MAX_REDIRECTS",
    "AllowedHost",
    "ImportInput",
    "ImportManifest",
    "ImportRefusedError",
    "check_url",
    "fetch",
    "is_public",
    "parse_allowed_hosts",
    "parse_manifest",
    "run_import",
    "system_resolver",
]
