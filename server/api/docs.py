"""The interactive API docs at ``/api/docs`` (only with ``MODELTRAIN_API_DOCS``): Swagger UI, same-origin.

Swagger UI itself is the npm package ``swagger-ui-dist``, which the web UI build copies to
``webui/dist/swagger-ui/`` (``webui/vite.config.ts``); ``StaticUI`` serves it like the rest of the built UI
and the desktop package carries it with ``webui/dist``. No CDN is involved. The page has no inline script:
its start-up code is the external ``/api/docs/init.js``, so the Content-Security-Policy stays as strict as
for the app (``script-src 'self'``, docs/security.md). The schema stays FastAPI's ``/api/openapi.json``.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from starlette.responses import HTMLResponse, Response

DOCS_URL = "/api/docs"
INIT_URL = "/api/docs/init.js"
OPENAPI_URL = "/api/openapi.json"
#: Where the web UI build puts swagger-ui-dist's files, relative to the dist directory (and as a URL).
ASSETS_DIR = "swagger-ui"
BUNDLE = f"/{ASSETS_DIR}/swagger-ui-bundle.js"
STYLESHEET = f"/{ASSETS_DIR}/swagger-ui.css"

PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ModelTrain API</title>
<link rel="icon" href="/favicon.svg">
<link rel="stylesheet" href="{STYLESHEET}">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{BUNDLE}"></script>
<script src="{INIT_URL}"></script>
</body>
</html>
"""

NOT_BUILT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ModelTrain API</title></head>
<body><h1>ModelTrain API</h1><p>The API docs come with the built web UI, which is missing.
Run <code>make run</code> (or <code>cd webui &amp;&amp; npm ci &amp;&amp; npm run build</code>).
The schema is at <a href="/api/openapi.json">/api/openapi.json</a>.</p></body></html>
"""

# validatorUrl null: Swagger UI would otherwise send the schema to an outside validator service.
# docExpansion "none": the sections start folded (one per tag). Unfolded all at once, Swagger UI stopped
# rendering after the third section of this API's 129 operations, silently.
INIT_JS = f"""// Starts Swagger UI on the ModelTrain API schema (server/api/docs.py).
window.ui = SwaggerUIBundle({{
  url: "{OPENAPI_URL}",
  dom_id: "#swagger-ui",
  deepLinking: true,
  docExpansion: "none",
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
}});
"""


def build_docs_router(dist_dir: Path) -> APIRouter:
    """The docs page and its start-up script; the app includes this router only when the docs are on."""
    router = APIRouter(include_in_schema=False)
    bundle = dist_dir / ASSETS_DIR / "swagger-ui-bundle.js"

    @router.get(DOCS_URL)
    def api_docs_page() -> Response:
        return HTMLResponse(PAGE if bundle.is_file() else NOT_BUILT)

    @router.get(INIT_URL)
    def api_docs_init() -> Response:
        return Response(INIT_JS, media_type="text/javascript")

    return router
