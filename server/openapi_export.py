"""Print the API's OpenAPI schema as JSON: ``python -m server.openapi_export > openapi.json``.

The web UI generates its TypeScript types from this output (``npm run gen:api`` in webui/) and CI
fails when the committed types drift from it (``npm run check:api``). The app is built with
throwaway settings (a temporary data directory that is never written: the lifespan does not run), so
no database, secret or log file is created and nothing but stdout is touched.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any


def build_schema() -> dict[str, Any]:
    from server.app import create_app
    from server.settings import Settings

    with tempfile.TemporaryDirectory(prefix="modeltrain-openapi-") as tmp:
        root = Path(tmp)
        settings = Settings(
            _env_file=None,
            data_dir=root / "data",
            database_url=f"sqlite:///{root / 'data' / 'modeltrain.db'}",
            webui_dist=root / "dist",
            api_docs=True,
            desktop_mode=False,
        )
        app = create_app(settings)
        try:
            return app.openapi()
        finally:
            app.state.runtime.engine.dispose()


def main() -> int:
    text = json.dumps(build_schema(), indent=2, ensure_ascii=False)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
