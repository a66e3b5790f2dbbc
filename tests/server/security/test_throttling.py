"""Login throttling (docs/security.md, B7)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

from fastapi.testclient import TestClient
from sqlalchemy import select, update

from server.db.models import LoginThrottle
from tests.server.conftest import ADMIN_EMAIL, ADMIN_PASSWORD


def _attempt(
    client: TestClient, email: str = ADMIN_EMAIL, password: str = "wrong-password", ip: str | None = None
):
    return client.post("/api/auth/login", json={"email": email, "password": password})


def _expire_locks(app) -> None:
    with app.state.runtime.session_factory.begin() as s:
        s.execute(
            update(LoginThrottle).values(locked_until=datetime.now(timezone.utc) - timedelta(seconds=1))
        )


def test_five_failures_lock_the_account_even_for_the_right_password(
    client: TestClient, admin_token: str, app
) -> None:
    for _ in range(5):
        assert _attempt(client).status_code == 401
    locked = _attempt(client, password=ADMIN_PASSWORD)
    assert locked.status_code == 429
    assert locked.json()["code"] == "login_throttled"
    first_wait = int(locked.headers["Retry-After"])
    assert 1 <= first_wait <= 31

    # The lock expires by itself, and then the right password works.
    _expire_locks(app)
    assert _attempt(client, password=ADMIN_PASSWORD).status_code == 200


def test_back_off_grows_with_each_lockout(client: TestClient, admin_token: str, app) -> None:
    waits = []
    for _ in range(3):
        for _ in range(5):
            _attempt(client)
        r = _attempt(client)
        assert r.status_code == 429
        waits.append(int(r.headers["Retry-After"]))
        _expire_locks(app)
    assert waits[0] < waits[1] < waits[2]


def test_unknown_accounts_are_throttled_the_same_way(client: TestClient) -> None:
    for _ in range(5):
        assert _attempt(client, email="ghost@example.com").status_code == 401
    assert _attempt(client, email="ghost@example.com").status_code == 429


def test_one_address_is_throttled_across_accounts(client: TestClient, app) -> None:
    for i in range(5):
        assert _attempt(client, email=f"spray{i}@example.com").status_code == 401
    # A sixth, fresh account from the same address is refused too.
    r = _attempt(client, email="fresh@example.com")
    assert r.status_code == 429
    with app.state.runtime.session_factory() as s:
        keys = set(s.scalars(select(LoginThrottle.key)))
    assert "ip:testclient" in keys


def test_parallel_attempts_all_get_401_or_429_never_500(client: TestClient) -> None:
    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(lambda _: _attempt(client).status_code, range(60)))
    assert set(statuses) <= {401, 429}
    assert statuses.count(429) >= 1
