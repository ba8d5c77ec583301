"""``$import`` fetching rules: the manifest forms, the allow-list and SSRF refusals, redirects and
size limits (no network: a fake resolver and httpx's MockTransport)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhir_adapter.errors import UsageError
from fhir_adapter.ingest.bulk_import import (
    ImportRefusedError,
    check_url,
    fetch,
    is_public,
    parse_allowed_hosts,
    parse_manifest,
)

PUBLIC = "93.184.216.34"


def resolver(*addresses: str) -> Callable[[str, int], list[str]]:
    def resolve(host: str, port: int) -> list[str]:
        if not addresses:
            raise OSError("no such host")
        return list(addresses)

    return resolve


@pytest.mark.parametrize(
    ("url", "allowed", "addresses", "refused"),
    [
        pytest.param("https://files.example.org/a.ndjson", ["files.example.org"], [PUBLIC], None, id="https-listed"),
        pytest.param("https://FILES.example.org/a", ["files.example.org"], [PUBLIC], None, id="host-case-insensitive"),
        pytest.param("https://files.example.org:443/a", ["files.example.org"], [PUBLIC], None, id="default-port"),
        pytest.param("https://other.example.org/a", ["files.example.org"], [PUBLIC], "not on the import allow-list",
                     id="host-not-listed"),
        pytest.param("https://files.example.org.evil.com/a", ["files.example.org"], [PUBLIC], "allow-list",
                     id="suffix-trick"),
        pytest.param("https://files.example.org@evil.com/a", ["files.example.org"], [PUBLIC], "user information",
                     id="userinfo-trick"),
        pytest.param("https://files.example.org:8443/a", ["files.example.org"], [PUBLIC], "allow-list",
                     id="other-port"),
        pytest.param("https://files.example.org:8443/a", ["files.example.org:8443"], [PUBLIC], None,
                     id="listed-port"),
        pytest.param("http://files.example.org/a", ["files.example.org"], [PUBLIC], "allow-list",
                     id="http-needs-http-entry"),
        pytest.param("http://files.example.org/a", ["http://files.example.org"], [PUBLIC], None,
                     id="http-entry-allows-http"),
        pytest.param("https://files.example.org/a", ["http://files.example.org"], [PUBLIC], None,
                     id="http-entry-allows-https"),
        pytest.param("ftp://files.example.org/a", ["files.example.org"], [PUBLIC], "only https", id="ftp"),
        pytest.param("https://127.0.0.1/a", ["files.example.org"], [], "allow-list", id="loopback-literal"),
        pytest.param("http://169.254.169.254/latest/meta-data/", ["files.example.org"], [], "allow-list",
                     id="metadata-literal"),
        pytest.param("https://10.1.2.3/a", ["files.example.org"], [], "allow-list", id="private-literal"),
        pytest.param("http://[::1]:8080/a", ["files.example.org"], [], "allow-list", id="ipv6-loopback-literal"),
        pytest.param("http://127.0.0.1:8080/a", ["http://127.0.0.1:8080"], [], None, id="literal-explicitly-listed"),
        pytest.param("https://10.1.2.3/a", ["10.1.2.3"], [], None, id="private-literal-explicitly-listed"),
        pytest.param("https://files.example.org/a", ["files.example.org"], ["127.0.0.1"], "non-public",
                     id="name-resolves-to-loopback"),
        pytest.param("https://files.example.org/a", ["files.example.org"], ["169.254.169.254"], "non-public",
                     id="name-resolves-to-link-local"),
        pytest.param("https://files.example.org/a", ["files.example.org"], ["10.0.0.8"], "non-public",
                     id="name-resolves-to-private"),
        pytest.param("https://files.example.org/a", ["files.example.org"], ["::ffff:10.0.0.8"], "non-public",
                     id="name-resolves-to-mapped-private"),
        pytest.param("https://files.example.org/a", ["files.example.org"], [PUBLIC, "192.168.1.1"], "non-public",
                     id="one-of-several-private"),
        pytest.param("https://files.example.org/a", ["files.example.org"], [], "cannot resolve", id="unresolvable"),
    ],
)  # fmt: skip
def test_check_url(url: str, allowed: list[str], addresses: list[str], refused: str | None) -> None:
    hosts = parse_allowed_hosts(allowed)
    if refused is None:
        check_url(url, hosts, resolver(*addresses))
        return
    with pytest.raises(ImportRefusedError, match=refused):
        check_url(url, hosts, resolver(*addresses))


@pytest.mark.parametrize(
    ("address", "public"),
    [
        pytest.param(PUBLIC, True, id="public-v4"),
        pytest.param("2606:2800:220:1:248:1893:25c8:1946", True, id="public-v6"),
        pytest.param("127.0.0.1", False, id="loopback"),
        pytest.param("10.0.0.1", False, id="rfc1918-10"),
        pytest.param("172.16.5.4", False, id="rfc1918-172"),
        pytest.param("192.168.0.1", False, id="rfc1918-192"),
        pytest.param("169.254.169.254", False, id="link-local-metadata"),
        pytest.param("100.64.0.1", False, id="shared-cgnat"),
        pytest.param("0.0.0.0", False, id="unspecified"),
        pytest.param("224.0.0.1", False, id="multicast"),
        pytest.param("::1", False, id="v6-loopback"),
        pytest.param("fe80::1%eth0", False, id="v6-link-local-scoped"),
        pytest.param("fd00::1", False, id="v6-unique-local"),
        pytest.param("::ffff:127.0.0.1", False, id="v4-mapped-loopback"),
        pytest.param("not-an-ip", False, id="garbage"),
    ],
)
def test_is_public(address: str, public: bool) -> None:
    assert is_public(address) is public


@pytest.mark.parametrize(
    "entry",
    [
        pytest.param("ftp://files.example.org", id="scheme"),
        pytest.param("files.example.org:http", id="port"),
        pytest.param("https://files.example.org/path", id="path"),
        pytest.param("", id="empty"),
    ],
)
def test_bad_allow_list_entries_are_refused(entry: str) -> None:
    with pytest.raises(UsageError, match="import_allowed_hosts"):
        parse_allowed_hosts([entry])


# -- the manifest ---------------------------------------------------------------------------------

FILE = "https://files.example.org/Patient.ndjson"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param({"inputFormat": "application/fhir+ndjson", "inputSource": "https://ehr.example.org",
                      "input": [{"type": "Patient", "url": FILE}]}, [("Patient", FILE)], id="json-manifest"),
        pytest.param({"input": [{"type": "Patient", "url": FILE}, {"type": "Encounter", "url": FILE + "2"}]},
                     [("Patient", FILE), ("Encounter", FILE + "2")], id="format-defaults-to-ndjson"),
        pytest.param({"resourceType": "Parameters", "parameter": [
                         {"name": "inputFormat", "valueCode": "application/fhir+ndjson"},
                         {"name": "inputSource", "valueUri": "https://ehr.example.org"},
                         {"name": "input", "part": [{"name": "type", "valueCode": "Patient"},
                                                    {"name": "url", "valueUri": FILE}]}]},
                     [("Patient", FILE)], id="parameters"),
    ],
)  # fmt: skip
def test_manifest_forms(body: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    manifest = parse_manifest(body)
    assert [(i.type, i.url) for i in manifest.inputs] == expected
    assert parse_manifest(manifest.to_json()) == manifest


@pytest.mark.parametrize(
    ("body", "where"),
    [
        pytest.param([], None, id="not-an-object"),
        pytest.param({"input": []}, "$.input", id="no-input"),
        pytest.param({"inputFormat": "text/csv", "input": [{"type": "Patient", "url": FILE}]}, "$.inputFormat",
                     id="csv"),
        pytest.param({"input": [{"type": "Nonsense", "url": FILE}]}, "$.input[0].type", id="bad-type"),
        pytest.param({"input": [{"type": "Patient", "url": "file:///etc/passwd"}]}, "$.input[0].url",
                     id="file-url"),
        pytest.param({"input": [{"type": "Patient", "url": "/relative.ndjson"}]}, "$.input[0].url",
                     id="relative-url"),
        pytest.param({"resourceType": "Parameters", "parameter": [{"name": "input", "part": [
                         {"name": "type", "valueCode": "Patient"}]}]}, "Parameters.parameter[0].url",
                     id="parameters-input-without-url"),
    ],
)  # fmt: skip
def test_bad_manifests(body: Any, where: str | None) -> None:
    with pytest.raises(UsageError) as caught:
        parse_manifest(body)
    assert caught.value.location == where


# -- fetching ---------------------------------------------------------------------------------------

ALLOWED = parse_allowed_hosts(["files.example.org", "other.example.org"])
NDJSON = b'{"resourceType":"Patient","id":"a"}\n'


def _fetch(
    handler: Callable[[httpx.Request], httpx.Response], tmp_path: Path, max_bytes: int = 1024
) -> bytes:
    dest = tmp_path / "file.ndjson"
    with httpx.Client(transport=httpx.MockTransport(handler), follow_redirects=False) as client:
        size = fetch(client, FILE, dest, allowed=ALLOWED, max_bytes=max_bytes, resolve=resolver(PUBLIC))
    data = dest.read_bytes()
    assert size == len(data)
    return data


def _redirect(to: str, hops: list[str]) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        hops.append(str(request.url))
        if str(request.url) == FILE:
            return httpx.Response(302, headers={"Location": to})
        return httpx.Response(200, content=NDJSON)

    return handler


def test_fetch_follows_a_redirect_on_the_same_host(tmp_path: Path) -> None:
    hops: list[str] = []
    assert _fetch(_redirect("/moved/Patient.ndjson", hops), tmp_path) == NDJSON
    assert hops == [FILE, "https://files.example.org/moved/Patient.ndjson"]


@pytest.mark.parametrize(
    "target",
    [
        pytest.param("https://other.example.org/Patient.ndjson", id="another-listed-host"),
        pytest.param("http://169.254.169.254/latest/meta-data/", id="metadata-service"),
        pytest.param("http://files.example.org/Patient.ndjson", id="downgrade-to-http"),
        pytest.param("https://files.example.org:8443/Patient.ndjson", id="another-port"),
    ],
)
def test_fetch_refuses_redirects_elsewhere(tmp_path: Path, target: str) -> None:
    hops: list[str] = []
    with pytest.raises(ImportRefusedError, match="redirected"):
        _fetch(_redirect(target, hops), tmp_path)
    assert hops == [FILE]  # the target was never requested
    assert not (tmp_path / "file.ndjson").exists()


def test_fetch_stops_a_redirect_loop(tmp_path: Path) -> None:
    def loop(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"Location": FILE})

    with pytest.raises(ImportRefusedError, match="redirects"):
        _fetch(loop, tmp_path)


@pytest.mark.parametrize(
    ("response", "match"),
    [
        pytest.param(lambda: httpx.Response(200, content=b"x" * 2000), "2000 bytes", id="declared-oversize"),
        pytest.param(lambda: httpx.Response(200, content=iter([b"x" * 600, b"x" * 600])), "more than the limit",
                     id="streamed-oversize"),
        pytest.param(lambda: httpx.Response(404, text="gone"), "HTTP 404", id="not-found"),
    ],
)  # fmt: skip
def test_fetch_failures_leave_no_file(
    tmp_path: Path, response: Callable[[], httpx.Response], match: str
) -> None:
    with pytest.raises(UsageError, match=match):
        _fetch(lambda _request: response(), tmp_path)
    assert not (tmp_path / "file.ndjson").exists()
