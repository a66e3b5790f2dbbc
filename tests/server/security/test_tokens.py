"""JWT forgery matrix (docs/security.md, B2) and the one-credential-channel rule (B8)."""

from __future__ import annotations

import base64
import json
import time
import uuid

import jwt
import pytest
from fastapi.testclient import TestClient

from server.security.tokens import ALGORITHM, AUDIENCE, ISSUER
from tests.server.conftest import bearer

SECRET = "test-secret-" + "x7Kq2mPz9vRt4nLw8sYb3cHd6fJg1aE5"


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def _forge(base: dict, secret: str = SECRET, headers: dict | None = None, **changes) -> str:
    claims = {**base, **changes}
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, secret, algorithm="HS256", headers=headers)


def _forgeries(good: str) -> dict[str, str]:
    base = _claims(good)
    now = int(time.time())
    header, payload, signature = good.split(".")
    return {
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{payload}.",
        "alg none uppercase": f"{_b64({'alg': 'NONE'})}.{payload}.",
        "HS512": jwt.encode(base, SECRET + "-long-enough-for-hs512-" * 2, algorithm="HS512"),
        "RS256 header with HS signature": f"{_b64({'alg': 'RS256', 'typ': 'JWT'})}.{payload}.{signature}",
        "jwk injection": _forge(base, headers={"jwk": {"kty": "oct", "k": "AAAA"}}),
        "jku injection": _forge(base, headers={"jku": "http://attacker.test/keys"}),
        "kid injection": _forge(base, headers={"kid": "../../dev/null"}),
        "x5u injection": _forge(base, headers={"x5u": "http://attacker.test/cert"}),
        "bad signature": f"{header}.{payload}.{signature[:-4]}AAAA",
        "tampered payload": f"{header}.{_b64({**base, 'sub': str(uuid.uuid4())})}.{signature}",
        "other secret": _forge(base, secret="another-secret-that-is-long-enough-123456"),
        "expired beyond leeway": _forge(base, exp=now - 31, iat=now - 3600, nbf=now - 3600),
        "future nbf": _forge(base, nbf=now + 3600),
        "no exp": _forge(base, exp=None),
        "wrong iss": _forge(base, iss="someone-else"),
        "wrong aud": _forge(base, aud="another-api"),
        "refresh typ": _forge(base, typ="refresh"),
        "no typ": _forge(base, typ=None),
        "stale token version": _forge(base, ver=base["ver"] + 1),
        "unknown user": _forge(base, sub=str(uuid.uuid4())),
        "sub is an e-mail": _forge(base, sub="admin@example.com"),
        "garbage": "not.a.jwt",
        "empty": "",
    }


def test_every_forged_token_gets_the_same_401(client: TestClient, admin_token: str) -> None:
    assert client.get("/api/users/me", headers=bearer(admin_token)).status_code == 200
    bodies = set()
    for name, token in _forgeries(admin_token).items():
        r = client.get("/api/users/me", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401, name
        bodies.add(json.dumps(r.json(), sort_keys=True) if token else "empty")
    bodies.discard("empty")
    assert len(bodies) == 1, bodies


def test_token_of_a_deleted_user_is_refused(client: TestClient, admin_token: str, create_user) -> None:
    token = create_user("gone@example.com")
    me = client.get("/api/users/me", headers=bearer(token)).json()
    assert client.delete(f"/api/users/{me['id']}", headers=bearer(admin_token)).status_code == 204
    assert client.get("/api/users/me", headers=bearer(token)).status_code == 401


def test_claims_are_as_specified(admin_token: str) -> None:
    header = jwt.get_unverified_header(admin_token)
    claims = _claims(admin_token)
    assert header["alg"] == ALGORITHM == "HS256"
    assert claims["typ"] == "access" and claims["iss"] == ISSUER and claims["aud"] == AUDIENCE
    assert uuid.UUID(claims["sub"])  # the user id, never the e-mail
    assert {"iat", "exp", "jti", "ver", "sid", "nbf"} <= set(claims)
    assert claims["exp"] - claims["iat"] == 30 * 60


def test_secret_is_not_a_code_constant(make_settings, tmp_path) -> None:
    from server.security.secret_store import load_or_create_secret

    a = load_or_create_secret(make_settings(secret_key=None, data_dir=tmp_path / "a"))
    b = load_or_create_secret(make_settings(secret_key=None, data_dir=tmp_path / "b"))
    assert a != b and len(a) >= 32
    assert load_or_create_secret(make_settings(secret_key=None, data_dir=tmp_path / "a")) == a
    assert (tmp_path / "a" / "secret_key").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    "headers",
    [
        {"X-API-Key": "{token}"},
        {"Cookie": "access_token={token}"},
        {"Authorization": "Token {token}"},
        {"Authorization": "{token}"},
        {"Authorization": "Basic {token}"},
        {"X-Authorization": "Bearer {token}"},
    ],
)
def test_only_the_bearer_header_authenticates(client: TestClient, admin_token: str, headers: dict) -> None:
    rendered = {k: v.format(token=admin_token) for k, v in headers.items()}
    assert client.get("/api/users/me", headers=rendered).status_code == 401


def test_token_in_query_string_is_ignored(client: TestClient, admin_token: str) -> None:
    assert client.get(f"/api/users/me?token={admin_token}&access_token={admin_token}").status_code == 401


def test_duplicate_authorization_headers_are_refused(client: TestClient, admin_token: str) -> None:
    r = client.get(
        "/api/users/me", headers=[("Authorization", f"Bearer {admin_token}"), ("Authorization", "Bearer x")]
    )
    assert r.status_code == 401
