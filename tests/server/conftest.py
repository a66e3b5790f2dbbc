"""Fixtures: a fresh app per test on its own SQLite file, a client, and signed-in admin/user tokens; and
the fixtures several test modules share (in-memory keyrings, fake Ollama servers, settings variants).

A module that needs a variant of ``settings`` overrides it, e.g.::

    @pytest.fixture
    def settings(ollama_settings: Settings) -> Settings:
        return ollama_settings
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import keyring
import keyring.backends.fail
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from server.app import create_app
from server.embedded import EmbeddedServer
from server.services.ollama_releases import asset_names
from server.settings import Settings
from tests.fakes.fake_ollama import FakeOllama
from tests.fakes.fake_releases import FakeReleases

# Defined next to their helpers in chat_support.py (test_chat.py imports them from there); re-exported
# here so that pytest finds them for every module.
from tests.server.chat_support import chat_model as chat_model
from tests.server.chat_support import fake_ollama as fake_ollama
from tests.server.memory_keyring import MemoryKeyring

ADMIN_EMAIL = "admin@example.com"
INITIAL_PASSWORD = "initial-Admin-pass-9"
ADMIN_PASSWORD = "correct-horse-battery-staple"
USER_PASSWORD = "user-password-Long-1"
BASE_URL = "http://127.0.0.1:8000"


def database_url(tmp_path: Path) -> str:
    """SQLite in ``tmp_path`` unless MODELTRAIN_TEST_DATABASE_URL names a PostgreSQL server.

    With MODELTRAIN_TEST_POSTGRES=1 (``make test-postgres``) each test gets a fresh database on a
    private PostgreSQL cluster the fixtures start (tests/server/pg_support.py); the same ``tmp_path``
    always maps to the same database, so a test can restart an app on "the same data".
    """
    explicit = os.environ.get("MODELTRAIN_TEST_DATABASE_URL")
    if explicit:
        return explicit
    if postgres_mode():
        return _pg_database_for(tmp_path)
    return f"sqlite:///{tmp_path / 'data' / 'modeltrain.db'}"


# --- PostgreSQL mode ---------------------------------------------------------------

_PG: dict = {"cluster": None, "databases": {}}


def postgres_mode() -> bool:
    return os.environ.get("MODELTRAIN_TEST_POSTGRES", "") not in ("", "0")


def postgres_cluster():
    """The session's private PostgreSQL cluster, started on first use (stopped at session end)."""
    if _PG["cluster"] is None:
        from tests.server.pg_support import PostgresCluster

        _PG["cluster"] = PostgresCluster().start()
    return _PG["cluster"]


def _pg_database_for(tmp_path: Path) -> str:
    key = str(tmp_path)
    if key not in _PG["databases"]:
        _PG["databases"][key] = postgres_cluster().new_database()
    return _PG["databases"][key]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On the PostgreSQL run, leave out tests about SQLite itself (marked ``sqlite_only``)."""
    if not postgres_mode():
        return
    keep, drop = [], []
    for item in items:
        (drop if item.get_closest_marker("sqlite_only") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="session", autouse=True)
def _postgres_session() -> Iterator[None]:
    yield
    cluster = _PG["cluster"]
    if cluster is not None:
        _PG["cluster"] = None
        cluster.stop()


@pytest.fixture(autouse=True)
def _postgres_drop_databases() -> Iterator[None]:
    yield
    if _PG["databases"]:
        created, _PG["databases"] = _PG["databases"], {}
        for url in created.values():
            _PG["cluster"].drop_database(url)


@pytest.fixture(autouse=True)
def _fresh_error_counter() -> None:
    """The process's error-log counter (the surge alert) starts empty in each test: errors other tests
    logged must not raise a surge alert in this one."""
    from server.log_setup import error_counter

    error_counter().clear()


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def make(**overrides) -> Settings:
        values = {
            "data_dir": tmp_path / "data",
            "database_url": database_url(tmp_path),
            "initial_admin_password": INITIAL_PASSWORD,
            "secret_key": "test-secret-" + "x7Kq2mPz9vRt4nLw8sYb3cHd6fJg1aE5",
            "gpu_sysfs_root": tmp_path / "no-gpus",  # the host's AMD GPUs stay out of the tests
            "_env_file": None,
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, base_url=BASE_URL) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def login(client: TestClient, email: str, password: str) -> str:
    r = client.post("/api/auth/login", json={"email": email, "password": password})
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


@pytest.fixture
def admin_token(client: TestClient) -> str:
    """The first admin, signed in, with the initial password already replaced."""
    token = login(client, ADMIN_EMAIL, INITIAL_PASSWORD)
    r = client.post(
        "/api/auth/password",
        json={"current_password": INITIAL_PASSWORD, "new_password": ADMIN_PASSWORD},
        headers=bearer(token),
    )
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


@pytest.fixture
def create_user(client: TestClient, admin_token: str) -> Callable[..., str]:
    """Create a user through the API and return an access token for them."""

    def make(email: str = "user@example.com", role: str = "user", password: str = USER_PASSWORD) -> str:
        r = client.post(
            "/api/users",
            json={"email": email, "password": password, "role": role},
            headers=bearer(admin_token),
        )
        assert r.status_code == 201, r.text
        return login(client, email, password)

    return make


@pytest.fixture
def user_token(create_user: Callable[..., str]) -> str:
    return create_user()


# --- shared by several test modules ----------------------------------------------------------------


@pytest.fixture
def desktop(make_settings: Callable[..., Settings]) -> Iterator[EmbeddedServer]:
    """The desktop host's embedded server (desktop token, LAN controller), started on loopback."""
    server = EmbeddedServer(make_settings(desktop_mode=True))
    server.enable_lan_control()
    server.start(timeout=60)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def memory_keyring() -> Iterator[MemoryKeyring]:
    """An in-memory keyring for the test, so no test ever touches the real OS keyring."""
    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    try:
        yield backend
    finally:
        keyring.set_keyring(previous)


@pytest.fixture
def failing_keyring() -> Iterator[None]:
    """What a headless Linux box without Secret Service has: the fail backend."""
    previous = keyring.get_keyring()
    keyring.set_keyring(keyring.backends.fail.Keyring())
    try:
        yield
    finally:
        keyring.set_keyring(previous)


@pytest.fixture
def conversation_settings(make_settings: Callable[..., Settings]) -> Settings:
    """No background title requests: they would change rows while a test compares DB snapshots."""
    return make_settings(chat_title_generation=False)


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    """The fake Ollama server of the ``/api/ollama`` tests (with a fast pull tick)."""
    with FakeOllama(pull_tick=0.01) as server:
        yield server


@pytest.fixture
def ollama_settings(make_settings: Callable[..., Settings], fake: FakeOllama, tmp_path: Path) -> Settings:
    """Settings wired to :func:`fake`, with a models directory and no disk reserve."""
    (tmp_path / "models").mkdir()
    return make_settings(
        ollama_url=fake.url,
        ollama_models_dir=tmp_path / "models",
        ollama_disk_reserve_bytes=0,
        ollama_pull_stall_seconds=0.15,
    )


@pytest.fixture
def disk(client: TestClient) -> dict:
    """Inject the free-space function of the pull manager: ``disk["free"]`` bytes, paths asked."""
    state: dict = {"free": 10**15, "asked": []}

    def free_space(path: Path) -> int:
        state["asked"].append(path)
        return state["free"]

    client.app.state.runtime.ollama_pulls.free_space = free_space
    return state


def trusting(server: EmbeddedServer) -> ssl.SSLContext:
    """A client context that trusts this install's LAN CA (as a phone does once the CA is installed)."""
    return ssl.create_default_context(cafile=server.settings.data_dir / "tls" / "ca.crt")


@pytest.fixture
def releases() -> Iterator[FakeReleases]:
    """A stand-in Ollama release site with one release (v0.13.0) of this machine's assets."""
    fake = FakeReleases()
    fake.add_release("v0.13.0", asset_names())
    with fake:
        yield fake


@pytest.fixture
def empty_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No ``ollama`` of the user's: PATH is an empty folder (a test may put one there)."""
    folder = tmp_path / "empty-bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", str(folder))
    return folder
