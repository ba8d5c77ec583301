"""SMART scopes (App Launch 2.2 "Scopes and Launch Context"): parsing v1 and v2, normalising,
and requested ∩ allowed."""

from __future__ import annotations

import pytest

from fhir_adapter.auth.scopes import ScopeSet, grant, parse_scope
from fhir_adapter.errors import UsageError


@pytest.mark.parametrize(
    ("scope", "rtype", "perms", "v1"),
    [
        pytest.param("system/MeasureReport.rs", "MeasureReport", "rs", False, id="v2-read-search"),
        pytest.param("system/Encounter.cu", "Encounter", "cu", False, id="v2-create-update"),
        pytest.param("system/*.cruds", "*", "cruds", False, id="v2-wildcard-all"),
        pytest.param("system/Patient.s", "Patient", "s", False, id="v2-single"),
        pytest.param("system/*.read", "*", "rs", True, id="v1-read-is-rs"),
        pytest.param("system/Encounter.write", "Encounter", "cud", True, id="v1-write-is-cud"),
        pytest.param("system/*.*", "*", "cruds", True, id="v1-star-is-cruds"),
    ],
)
def test_parse(scope: str, rtype: str, perms: str, v1: bool) -> None:
    parsed = parse_scope(scope)
    assert (parsed.resource_type, parsed.permissions, parsed.v1) == (rtype, perms, v1)


@pytest.mark.parametrize(
    ("scope", "words"),
    [
        pytest.param("system/Observation.rs?category=laboratory", "granular", id="granular-param"),
        pytest.param("patient/*.rs", "only system/", id="patient-context"),
        pytest.param("user/Encounter.read", "only system/", id="user-context"),
        pytest.param("system/Encounter.sr", "in-order", id="out-of-order"),
        pytest.param("system/Encounter.dus", "in-order", id="undefined-order"),
        pytest.param("system/Encounter.x", "in-order", id="unknown-letter"),
        pytest.param("system/Foo.rs", "not an R4 resource type", id="unknown-type"),
        pytest.param("openid", "not supported", id="not-a-resource-scope"),
        pytest.param("offline_access", "not supported", id="refresh-tokens"),
        pytest.param("system/Encounter.", "not supported", id="no-permissions"),
    ],
)
def test_refused(scope: str, words: str) -> None:
    with pytest.raises(UsageError, match=words):
        parse_scope(scope)


@pytest.mark.parametrize(
    ("scopes", "rendered"),
    [
        pytest.param("system/Encounter.r system/Encounter.s", "system/Encounter.rs", id="equivalence"),
        pytest.param("system/*.rs system/Encounter.rs", "system/*.rs", id="wildcard-absorbs-type"),
        pytest.param("system/*.r system/Encounter.cu", "system/*.r system/Encounter.cu", id="mixed"),
        pytest.param("system/*.read system/*.write", "system/*.cruds", id="v1-read-write"),
        pytest.param("system/Patient.rs  system/Patient.rs", "system/Patient.rs", id="duplicates-spaces"),
    ],
)
def test_normalised(scopes: str, rendered: str) -> None:
    assert ScopeSet.parse(scopes).render() == rendered


@pytest.mark.parametrize(
    ("requested", "allowed", "answer"),
    [
        pytest.param("system/*.rs", "system/*.rs", "system/*.rs", id="same"),
        pytest.param(
            "system/*.rs", "system/MeasureReport.rs", "system/MeasureReport.rs", id="wildcard-narrowed"
        ),
        pytest.param(
            "system/*.cruds", "system/Encounter.cu system/*.r", "system/*.r system/Encounter.cu", id="v2-mix"
        ),
        pytest.param(
            "system/MeasureReport.rs", "system/*.cruds", "system/MeasureReport.rs", id="type-in-wildcard"
        ),
        pytest.param("system/*.read", "system/*.rs", "system/*.read", id="v1-answered-as-v1"),
        pytest.param(
            "system/*.read", "system/MeasureReport.cruds", "system/MeasureReport.read", id="v1-narrowed"
        ),
        pytest.param("system/*.write", "system/*.cu", "system/*.cu", id="v1-partly-answered-as-v2"),
        pytest.param("system/*.*", "system/Patient.rs", "system/Patient.read", id="v1-star-partly"),
        pytest.param("system/Encounter.cud", "system/*.rs", "", id="nothing-in-common"),
        pytest.param("system/*.rs system/Patient.r", "system/*.rs", "system/*.rs", id="covered-part-dropped"),
        pytest.param("system/*.read system/*.rs", "system/*.cruds", "system/*.read", id="equal-parts-once"),
    ],
)
def test_grant_is_requested_and_allowed(requested: str, allowed: str, answer: str) -> None:
    granted, text = grant(requested, ScopeSet.parse(allowed))
    assert text == answer
    assert granted == ScopeSet.parse(answer) if answer else not granted
    # the grant never exceeds either side
    for rtype, perm in granted:
        assert ScopeSet.parse(allowed).allows(rtype, perm)
        assert ScopeSet.parse(requested).allows(rtype, perm)


@pytest.mark.parametrize(
    ("scopes", "rtype", "perm", "allowed"),
    [
        pytest.param("system/*.rs", "Patient", "r", True, id="wildcard-read"),
        pytest.param("system/*.rs", "Patient", "c", False, id="wildcard-no-create"),
        pytest.param("system/Encounter.cu", "Encounter", "u", True, id="type-update"),
        pytest.param("system/Encounter.cu", "Patient", "u", False, id="other-type"),
        pytest.param("", "Patient", "r", False, id="empty"),
    ],
)
def test_allows(scopes: str, rtype: str, perm: str, allowed: bool) -> None:
    assert ScopeSet.parse(scopes).allows(rtype, perm) is allowed


def test_allows_takes_one_known_permission() -> None:
    with pytest.raises(ValueError, match="permission"):
        ScopeSet.everything().allows("Patient", "rs")
