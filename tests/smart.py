"""SMART Backend Services test helpers: client key pairs (generated with ``cryptography``), their
public JWK Sets, and signed client assertions."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from functools import cache
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TOKEN_URL = "http://testserver/auth/token"


@dataclass(frozen=True)
class KeyPair:
    alg: str
    kid: str
    private: Any

    @property
    def public_jwk(self) -> dict[str, Any]:
        algorithm = RSAAlgorithm if self.alg == "RS384" else ECAlgorithm
        jwk: dict[str, Any] = json.loads(algorithm.to_jwk(self.private.public_key()))
        return {**jwk, "kid": self.kid, "alg": self.alg, "use": "sig"}

    @property
    def private_jwk(self) -> dict[str, Any]:
        algorithm = RSAAlgorithm if self.alg == "RS384" else ECAlgorithm
        jwk: dict[str, Any] = json.loads(algorithm.to_jwk(self.private))
        return {**jwk, "kid": self.kid, "alg": self.alg}


@cache
def key_pair(alg: str = "ES384", kid: str = "key-1") -> KeyPair:
    """One key per (alg, kid) per test session (RSA generation is slow)."""
    if alg == "RS384":
        return KeyPair(alg, kid, rsa.generate_private_key(public_exponent=65537, key_size=2048))
    if alg == "ES384":
        return KeyPair(alg, kid, ec.generate_private_key(ec.SECP384R1()))
    raise ValueError(alg)


def jwks(*keys: KeyPair) -> dict[str, Any]:
    return {"keys": [k.public_jwk for k in keys]}


def assertion(
    key: KeyPair,
    client_id: str,
    *,
    aud: str | list[str] = TOKEN_URL,
    now: float | None = None,
    lifetime: int = 240,
    claims: dict[str, Any] | None = None,
    drop: tuple[str, ...] = (),
    headers: dict[str, Any] | None = None,
) -> str:
    """A client assertion as SMART App Launch 2.2 describes it; ``claims`` overrides, ``drop``
    removes claims, ``headers`` adds header members."""
    at = time.time() if now is None else now
    body: dict[str, Any] = {
        "iss": client_id,
        "sub": client_id,
        "aud": aud,
        "exp": int(at) + lifetime,
        "jti": uuid.uuid4().hex,
    }
    body.update(claims or {})
    for name in drop:
        body.pop(name, None)
    return jwt.encode(
        body, key.private, algorithm=key.alg, headers={"kid": key.kid, "typ": "JWT", **(headers or {})}
    )


def token_form(client_assertion: str, scope: str = "system/*.rs", **extra: str) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "scope": scope,
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": client_assertion,
        **extra,
    }
