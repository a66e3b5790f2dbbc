"""HTTP layer: routers, error handlers, SSE helpers. Only this package speaks HTTP."""
