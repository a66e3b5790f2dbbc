"""gunicorn settings for ModelTrain (spec part 2.5): uvicorn workers, 2 x cores + 1, bound to 127.0.0.1.

    gunicorn -c packaging/gunicorn/gunicorn.conf.py 'server.asgi:app()'

Every value can be overridden from the environment (systemd's EnvironmentFile, Docker's environment):
GUNICORN_BIND (default 127.0.0.1:8000; nginx is the only thing that talks to it), GUNICORN_WORKERS
(default 2 x CPU cores + 1), GUNICORN_TIMEOUT, GUNICORN_GRACEFUL_TIMEOUT, GUNICORN_KEEPALIVE.
ModelTrain's own settings (DATABASE_URL, SECRET_KEY, MODELTRAIN_*) are read by ``server.asgi``.

Several workers are several instances of the app: use PostgreSQL (DATABASE_URL=postgresql://...) or
accept that SQLite serialises writes; set MODELTRAIN_LOG_ROTATION=external and let logrotate rotate
(packaging/logrotate/modeltrain), because per-process rotation would race.
"""

import multiprocessing
import os


def _int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000").split(",")
workers = _int("GUNICORN_WORKERS", 2 * multiprocessing.cpu_count() + 1)
worker_class = "server.gunicorn_worker.Worker"  # uvicorn_worker.UvicornWorker + write coalescing
# A chat reply is an SSE stream that can last minutes; uvicorn workers keep heartbeating while
# streaming, so this only kills a worker whose event loop is stuck.
timeout = _int("GUNICORN_TIMEOUT", 120)
# SIGTERM/HUP: open streams get this long to finish (the app stops them and saves partial replies).
graceful_timeout = _int("GUNICORN_GRACEFUL_TIMEOUT", 30)
keepalive = _int("GUNICORN_KEEPALIVE", 75)  # longer than nginx's upstream keepalive_timeout (60 s)
# nginx terminates client connections; the app decides which X-Forwarded-For to trust itself
# (MODELTRAIN_TRUSTED_PROXIES), so gunicorn and uvicorn must not rewrite the client address.
forwarded_allow_ips = ""
proxy_allow_ips = ""
# The app writes its own app.log/access.log (MODELTRAIN_LOG_DIR); gunicorn's go to stderr/journald.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")
proc_name = "modeltrain"
# gunicorn >= 24's runtime control socket (defaults to ~/.gunicorn): not used; systemd/Docker manage us.
control_socket_disable = True
# Workers import the app themselves after forking (no DB engine or thread crosses a fork).
preload_app = False


def on_starting(server) -> None:
    """In the master, before any worker exists: signing secret, migrations and the first admin, once."""
    from server.asgi import prepare

    prepare()
