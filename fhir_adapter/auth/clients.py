"""The registry of SMART Backend Services clients (table ``auth_clients``).

SMART App Launch 2.2, "Client Authentication: Asymmetric (public key)", § "Registering a client
(communicating public keys)": a client registers a JWK Set of **public** keys, either as a
TLS-protected URL (preferred: the client rotates its own keys) or directly; each JWK has ``kty``
and ``kid`` with bare-key members (RSA ``n``/``e``; EC ``crv``/``x``/``y``). A registered JWK Set
may hold several keys, so during a rotation old and new keys both work until the old one is
removed ("Including both the current and successor keys within the JWK Set helps").

Registration is out of band (the ``fhir-adapter clients`` commands); besides its keys, a client
carries what the server pre-authorises (Backend Services § "Register"): its role, the source
name under which its pushes are stored, its CCOs, and the scopes it may be granted.

Roles: ``ehr`` (pushes clinical data; needs a source), ``cco`` (a coordinated care organisation;
needs at least one CCO id from ``mappings/ccos.csv``), ``oha`` (the state) and ``admin``. The
source name of a client without one is its client id. A source name belongs to one active
client, so one client can never write under another's source.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import jwt
import orjson
from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError

from fhir_adapter.auth.policy import is_reserved_source
from fhir_adapter.auth.scopes import ScopeSet
from fhir_adapter.errors import ConflictError, InvalidDataError, NotFoundError, UsageError
from fhir_adapter.fhir.dates import to_micros
from fhir_adapter.ingest.runner import check_source
from fhir_adapter.store.db import Store
from fhir_adapter.store.schema import auth_clients

ROLES = ("ehr", "cco", "oha", "admin")
#: Scopes a client may be granted when registered without ``--scope``.
DEFAULT_SCOPES = {
    "ehr": "system/*.cruds",
    "cco": "system/*.rs",
    "oha": "system/*.rs",
    "admin": "system/*.cruds",
}
#: Client-assertion signature algorithms (SMART 2.2 client-confidential-asymmetric: clients
#: SHALL support both, servers at least one).
SIGNING_ALGS = ("RS384", "ES384")
#: JWK ``kty`` (and EC curve) each algorithm needs (RFC 7518 §3.3 RSASSA-PKCS1-v1_5, §3.4 ES384
#: on P-384).
KEY_TYPES = {"RSA": "RS384", "EC": "ES384"}
EC_CURVE = "P-384"
#: RFC 7518 §3.3: RSA keys of 2048 bits or more.
MIN_RSA_BITS = 2048
#: Members that carry private or symmetric key material (RFC 7518 §6.2.2, §6.3.2, §6.4.1).
PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")
CLIENT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~:@/-]{0,127}$")
MAX_KEYS = 20


@dataclass(frozen=True)
class Client:
    client_id: str
    role: str
    #: Source name under which this client's pushes are stored.
    source: str
    ccos: tuple[str, ...]
    #: What the client may be granted (requested ∩ this at the token endpoint).
    scopes: ScopeSet
    #: Registered JWK Set, or ``None`` when ``jwks_url`` is used.
    jwks: dict[str, Any] | None
    jwks_url: str | None
    name: str | None
    created_at: int
    updated_at: int
    revoked_at: int | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def to_json(self) -> dict[str, Any]:
        """A summary for listings: key ids, never key material."""
        return {
            "client_id": self.client_id,
            "name": self.name,
            "role": self.role,
            "source": self.source,
            "ccos": list(self.ccos),
            "scopes": self.scopes.render(),
            "jwks_url": self.jwks_url,
            "kids": [k.get("kid") for k in (self.jwks or {}).get("keys", [])],
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "revoked_at": self.revoked_at,
        }


@dataclass(frozen=True)
class Registration:
    """What an administrator registers (``fhir-adapter clients add``)."""

    client_id: str
    role: str
    source: str | None = None
    ccos: Sequence[str] = ()
    #: Scope strings (v1 or v2); empty: :data:`DEFAULT_SCOPES` of the role.
    scopes: Sequence[str] = ()
    jwks: object = None
    jwks_url: str | None = None
    name: str | None = None


# -- validation -------------------------------------------------------------------------------


def check_jwks(jwks: object, *, where: str = "JWKS") -> dict[str, Any]:
    """The JWK Set if every key is a usable **public** RS384/ES384 key; otherwise
    :class:`InvalidDataError` naming the key (``where`` is the file or URL, e.g. ``keys.json``)."""
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise InvalidDataError('expected a JWK Set: a JSON object {"keys": [...]}', location=where)
    keys = jwks["keys"]
    if not keys:
        raise InvalidDataError("the JWK Set holds no keys", location=where)
    if len(keys) > MAX_KEYS:
        raise InvalidDataError(f"the JWK Set holds {len(keys)} keys; at most {MAX_KEYS}", location=where)
    seen: set[str] = set()
    clean = []
    for i, key in enumerate(keys):
        at = f"{where}: keys[{i}]"
        if not isinstance(key, dict):
            raise InvalidDataError("a JWK must be a JSON object", location=at)
        private = [m for m in PRIVATE_MEMBERS if m in key]
        if private:
            raise InvalidDataError(
                f"holds private or symmetric key material (member {private[0]!r}); register the public key only",
                location=at,
            )
        kid = key.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidDataError("every key needs a 'kid' (SMART: unique within the set)", location=at)
        if kid in seen:
            raise InvalidDataError(f"kid {kid!r} appears twice", location=at)
        seen.add(kid)
        alg = key_algorithm(key)
        if alg is None:
            raise InvalidDataError(
                f"kty {key.get('kty')!r}, crv {key.get('crv')!r}, alg {key.get('alg')!r}: only RSA keys "
                f"(RS384) and EC {EC_CURVE} keys (ES384) are accepted",
                location=at,
            )
        if key.get("use", "sig") != "sig":
            raise InvalidDataError(f"'use' is {key.get('use')!r}; a signing key has 'sig'", location=at)
        ops = key.get("key_ops")
        if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
            raise InvalidDataError("'key_ops' must include 'verify'", location=at)
        try:
            public = jwt.PyJWK(key, algorithm=alg).key
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError) as exc:
            raise InvalidDataError(f"not a valid {alg} public key: {exc}", location=at) from exc
        bits = getattr(public, "key_size", 0)
        if alg == "RS384" and bits < MIN_RSA_BITS:
            raise InvalidDataError(f"RSA key of {bits} bits; at least {MIN_RSA_BITS}", location=at)
        clean.append(key)
    return {"keys": clean}


def key_algorithm(key: dict[str, Any]) -> str | None:
    """RS384 or ES384 for a JWK that can verify it (``kty``, EC curve, and ``alg`` if given)."""
    alg = KEY_TYPES.get(key.get("kty"))  # type: ignore[arg-type]
    if alg is None or (alg == "ES384" and key.get("crv") != EC_CURVE):
        return None
    if key.get("alg", alg) != alg:
        return None
    return alg


def check_jwks_url(url: str) -> str:
    """A JWK Set URL must use TLS (SMART 2.2: "TLS-protected endpoint"); plain HTTP is accepted
    on the loopback address 127.0.0.1 only, for tests and local set-ups."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and parts.hostname == "127.0.0.1":
        return url
    raise UsageError(f"JWKS URL {url!r} must be https:// (or http://127.0.0.1 for local tests)")


def _check_registration(reg: Registration, known_ccos: Collection[str], reserved: Collection[str]) -> None:
    if not CLIENT_ID_RE.match(reg.client_id):
        raise UsageError(
            f"client id {reg.client_id!r}: 1–128 letters, digits and . _ ~ : @ / -, starting with a letter or digit"
        )
    if reg.role not in ROLES:
        raise UsageError(f"role {reg.role!r} is not one of {', '.join(ROLES)}")
    if reg.role == "ehr" and not reg.source:
        raise UsageError("an ehr client needs --source: the source name its pushes are stored under")
    if reg.role == "cco":
        if not reg.ccos:
            raise UsageError("a cco client needs at least one --cco (a CCO id from mappings/ccos.csv)")
        unknown = sorted(set(reg.ccos) - set(known_ccos))
        if unknown:
            raise UsageError(
                f"unknown CCO id(s) {', '.join(unknown)}; mappings/ccos.csv has {', '.join(sorted(known_ccos))}"
            )
    elif reg.ccos:
        raise UsageError(f"--cco is for cco clients; a {reg.role} client has no CCOs")
    if (reg.jwks is None) == (reg.jwks_url is None):
        raise UsageError("give exactly one of a JWK Set (--jwks FILE) or a JWK Set URL (--jwks-url URL)")
    source = reg.source or reg.client_id
    check_source(source)
    if any(is_reserved_source(source, name) for name in reserved):  # also the per-CCO report sources
        raise UsageError(f"source name {source!r} is reserved for the adapter's own data")


# -- store ------------------------------------------------------------------------------------


def _row_to_client(row: Any) -> Client:
    return Client(
        client_id=row.client_id,
        role=row.role,
        source=row.source,
        ccos=tuple(orjson.loads(row.ccos)) if row.ccos else (),
        scopes=ScopeSet.parse(row.scopes),
        jwks=orjson.loads(row.jwks) if row.jwks else None,
        jwks_url=row.jwks_url,
        name=row.name,
        created_at=row.created_at,
        updated_at=row.updated_at,
        revoked_at=row.revoked_at,
    )


def _get(conn: Connection, client_id: str) -> Client | None:
    row = conn.execute(select(auth_clients).where(auth_clients.c.client_id == client_id)).first()
    return None if row is None else _row_to_client(row)


def register(
    store: Store,
    reg: Registration,
    *,
    known_ccos: Collection[str],
    now: datetime,
    reserved_sources: Collection[str] = (),
) -> Client:
    """Add a client; :class:`UsageError` for an inconsistent registration,
    :class:`InvalidDataError` for an unusable JWK Set, :class:`ConflictError` when the client id
    exists (revoked ids are not reused) or an active client already has the source name."""
    _check_registration(reg, known_ccos, reserved_sources)
    jwks = check_jwks(reg.jwks) if reg.jwks is not None else None
    jwks_url = check_jwks_url(reg.jwks_url) if reg.jwks_url is not None else None
    scopes = ScopeSet.parse(" ".join(reg.scopes) if reg.scopes else DEFAULT_SCOPES[reg.role])
    if not scopes:
        raise UsageError("the client would have no scopes")
    source = check_source(reg.source or reg.client_id)
    at = to_micros(now)
    try:
        with store.write() as conn:
            if _get(conn, reg.client_id) is not None:
                raise ConflictError(f"client {reg.client_id!r} is already registered (ids are never reused)")
            owner = conn.execute(
                select(auth_clients.c.client_id).where(
                    auth_clients.c.source == source, auth_clients.c.revoked_at.is_(None)
                )
            ).first()
            if owner is not None:
                raise ConflictError(f"source name {source!r} belongs to active client {owner.client_id!r}")
            conn.execute(
                insert(auth_clients).values(
                    client_id=reg.client_id,
                    name=reg.name,
                    role=reg.role,
                    source=source,
                    ccos=orjson.dumps(sorted(set(reg.ccos))).decode() if reg.ccos else None,
                    scopes=scopes.render(),
                    jwks=orjson.dumps(jwks).decode() if jwks else None,
                    jwks_url=jwks_url,
                    created_at=at,
                    updated_at=at,
                    revoked_at=None,
                )
            )
    except IntegrityError as exc:  # a concurrent registration of the same id
        raise ConflictError(f"client {reg.client_id!r} is already registered") from exc
    client = get_client(store, reg.client_id)
    assert client is not None
    return client


def get_client(store: Store, client_id: str) -> Client | None:
    with store.read() as conn:
        return _get(conn, client_id)


def require_client(store: Store, client_id: str) -> Client:
    client = get_client(store, client_id)
    if client is None:
        raise NotFoundError(f"no client {client_id!r} is registered")
    return client


def list_clients(store: Store) -> list[Client]:
    with store.read() as conn:
        rows = conn.execute(select(auth_clients).order_by(auth_clients.c.client_id)).all()
    return [_row_to_client(row) for row in rows]


def revoke(store: Store, client_id: str, *, now: datetime) -> Client:
    """Refuse the client from now on: no new tokens, and its unexpired access tokens stop
    working at their next use (the resource server checks the registry on every request).
    Revoking a revoked client changes nothing."""
    with store.write() as conn:
        client = _get(conn, client_id)
        if client is None:
            raise NotFoundError(f"no client {client_id!r} is registered")
        if not client.revoked:
            at = to_micros(now)
            conn.execute(
                update(auth_clients)
                .where(auth_clients.c.client_id == client_id)
                .values(revoked_at=at, updated_at=at)
            )
    return require_client(store, client_id)


def set_keys(
    store: Store, client_id: str, *, now: datetime, jwks: object = None, jwks_url: str | None = None
) -> Client:
    """Replace the client's keys (rotation): a new JWK Set (which may hold the old and the new
    key while clients switch over) or a JWK Set URL; exactly one of them."""
    if (jwks is None) == (jwks_url is None):
        raise UsageError("give exactly one of a JWK Set (--jwks FILE) or a JWK Set URL (--jwks-url URL)")
    clean = check_jwks(jwks) if jwks is not None else None
    url = check_jwks_url(jwks_url) if jwks_url is not None else None
    with store.write() as conn:
        client = _get(conn, client_id)
        if client is None:
            raise NotFoundError(f"no client {client_id!r} is registered")
        if client.revoked:
            raise ConflictError(f"client {client_id!r} is revoked; register a new client instead")
        conn.execute(
            update(auth_clients)
            .where(auth_clients.c.client_id == client_id)
            .values(
                jwks=orjson.dumps(clean).decode() if clean else None,
                jwks_url=url,
                updated_at=to_micros(now),
            )
        )
    return require_client(store, client_id)


__all__ = [
    "DEFAULT_SCOPES",
    "ROLES",
    "SIGNING_ALGS",
    "Client",
    "Registration",
    "check_jwks",
    "check_jwks_url",
    "get_client",
    "key_algorithm",
    "list_clients",
    "register",
    "require_client",
    "revoke",
    "set_keys",
]
