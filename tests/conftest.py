"""Markers for the system tests, given by file so each suite's needs are declared in one place.

``pytest -m "not system"`` runs the unit and integration tests that need nothing but Python (what
``make test-fast`` runs for the server); ``-m nginx``, ``-m postgres``... select one kind of system test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

_TESTS = Path(__file__).parent

#: What each system test file drives for real, beyond Python and the loopback fakes.
SYSTEM_TESTS: dict[str, tuple[str, ...]] = {
    "deploy/test_deb.py": ("packaging", "chromium"),
    "deploy/test_docker.py": ("packaging", "postgres"),
    "deploy/test_gunicorn_workers.py": ("postgres",),
    "deploy/test_logrotate.py": ("packaging",),
    "deploy/test_migrate_db.py": ("postgres",),
    "deploy/test_multi_instance.py": ("nginx", "postgres"),
    "deploy/test_nginx.py": ("nginx",),
    "deploy/test_package.py": ("packaging", "chromium"),
    "deploy/test_systemd.py": ("packaging",),
    "desktop/test_app_process.py": ("desktop", "chromium"),
    "desktop/test_lan_netns.py": ("desktop", "chromium"),
    "desktop/test_main_window.py": ("desktop", "chromium"),
    "desktop/test_memory.py": ("desktop",),
    "desktop/test_self_test.py": ("desktop", "chromium"),
    "desktop/test_tray.py": ("desktop",),
    "desktop/test_webview.py": ("desktop", "chromium"),
    "e2e_model/test_real_model.py": ("real_model",),
}


@pytest.hookimpl(tryfirst=True)  # before -m deselects anything
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        relative = item.path.relative_to(_TESTS).as_posix() if item.path.is_relative_to(_TESTS) else ""
        kinds = SYSTEM_TESTS.get(relative)
        if kinds is None and relative.startswith(("desktop/", "deploy/")):
            kinds = ("desktop",) if relative.startswith("desktop/") else ("packaging",)
        for kind in kinds or ():
            item.add_marker(kind)
        if kinds:
            item.add_marker("system")
