"""The app factory. ``create_app(settings)`` builds a FastAPI app; start-up I/O happens in its lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from starlette.middleware.cors import CORSMiddleware

from server import __version__
from server.api.docs import OPENAPI_URL, build_docs_router
from server.api.errors import install_error_handlers
from server.api.methods import LiteralPathMethods
from server.api.middleware import AccessLogMiddleware
from server.api.openapi import install_openapi
from server.api.router import build_api_router
from server.api.v1.errors import install_v1_error_handlers
from server.bootstrap import prepare_database
from server.db.session import create_db_engine, create_session_factory
from server.providers.registry import close_registry
from server.runtime import Runtime
from server.security.api_key_hash import KeyHasher
from server.security.desktop_token import DesktopToken
from server.security.forwarded import ForwardedProtoMiddleware
from server.security.network_guard import GuardPolicy, NetworkGuardMiddleware
from server.security.secret_store import load_or_create_secret, make_secret_store
from server.security.tokens import TokenCodec
from server.services import alert_history as alert_history_service
from server.services import backups as backups_service
from server.services import chat as chat_service
from server.services import cluster as cluster_service
from server.services import files as files_service
from server.services import limits as limits_service
from server.services import memory as memory_service
from server.services import metrics as metrics_service
from server.services import ollama_runtime
from server.services import retention as retention_service
from server.services import routing as routing_service
from server.services import usage as usage_service
from server.services.alerts import AlertCenter
from server.services.knowledge import indexer as knowledge_indexer
from server.settings import Settings
from server.static import StaticUI, default_dist_dir

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> FastAPI:
    engine = create_db_engine(settings.resolved_database_url)
    guard = GuardPolicy.build(settings.allowed_hosts, settings.cors_origins, settings.max_body_bytes)
    streams = chat_service.StreamRegistry()
    runtime = Runtime(
        settings=settings,
        engine=engine,
        session_factory=create_session_factory(engine),
        read_session_factory=create_session_factory(engine, readonly=True),
        guard=guard,
        streams=streams,
        alerts=AlertCenter(),
        secret_store=make_secret_store(settings),
        # The desktop host's per-process secret, added by its web view to every request.
        desktop_token=DesktopToken() if settings.desktop_mode else None,
    )
    guard.body_limit_overrides.setdefault("/api/conversations/import", settings.conversation_import_max_bytes)
    guard.body_limit_overrides.setdefault("/api/ollama/models/import", settings.gguf_import_max_bytes)
    guard.body_limit_overrides.setdefault("/api/files", files_service.upload_body_limit(settings))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        secret = await run_in_threadpool(load_or_create_secret, settings)
        runtime.codec = TokenCodec(secret, settings.access_token_expire)
        runtime.api_key_hasher = KeyHasher(secret)  # the keyed hash of API keys, from the same secret
        initial = await run_in_threadpool(prepare_database, settings, engine, runtime.session_factory)
        app.state.initial_admin = initial
        await run_in_threadpool(chat_service.startup, runtime)  # mark replies a crash left streaming
        chat_service.start_heartbeat(runtime)  # keep live replies fresh, sweep other instances' orphans
        await metrics_service.start(runtime)  # runtime.metrics: sampler, fed by the access middleware
        await memory_service.start(runtime)  # runtime.memory_trimmer: freed heap memory back to the OS
        await alert_history_service.start(runtime)  # runtime.alert_notifier: history, channels, surge
        await backups_service.start(runtime)  # runtime.backup_scheduler, upload-restore body limit
        await usage_service.start(runtime)  # runtime.usage: batched usage records
        await retention_service.start(runtime)  # runtime.retention: daily pruning of usage and audit history
        await knowledge_indexer.start(runtime)  # runtime.knowledge_indexer: resume queued indexing
        await limits_service.start(runtime)  # runtime.limits: reservation heartbeat and sweep
        await routing_service.start(runtime)  # runtime.routing: host health, the probe loop
        log.info("ModelTrain %s ready", __version__)
        await ollama_runtime.start_ollama(runtime)  # runtime.ollama_daemon, runtime.ollama_pulls
        await cluster_service.start(  # cross-instance stop requests and pull listing: runtime.cluster
            runtime,
            active_streams=streams.ids,
            stop_stream=streams.stop,
            local_pulls=lambda: runtime.ollama_pulls.list() if runtime.ollama_pulls is not None else [],
            cancel_pull=lambda url, name: runtime.ollama_pulls and runtime.ollama_pulls.cancel(url, name),
            # The System page of every instance lists this one (the desktop's server is alone).
            snapshot=None if settings.desktop_mode else lambda: metrics_service.instance_snapshot(runtime),
        )
        try:
            yield
        finally:
            await cluster_service.stop(runtime)
            await routing_service.stop(runtime)
            await ollama_runtime.stop_ollama(runtime)
            await backups_service.stop(runtime)
            await metrics_service.stop(runtime)
            await memory_service.stop(runtime)
            await alert_history_service.stop(runtime)
            await chat_service.shutdown(runtime)  # stop active replies, keep their partial answers (F6)
            await limits_service.stop(runtime)  # the replies' settlements, then the heartbeat
            await knowledge_indexer.stop(runtime)
            await retention_service.stop(runtime)
            await usage_service.stop(runtime)  # write the usage still queued (after the replies ended)
            await close_registry(runtime)  # the shared upstream HTTP client
            engine.dispose()

    app = FastAPI(
        title="ModelTrain",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,  # our own Swagger UI page (server/api/docs.py): no CDN, no inline script
        redoc_url=None,
        openapi_url=OPENAPI_URL if settings.api_docs else None,
    )
    app.state.runtime = runtime
    install_error_handlers(app)
    install_v1_error_handlers(app)  # after the handlers it wraps
    app.include_router(build_api_router())
    install_openapi(app)  # the document tells the truth: every status, the real error shapes
    dist_dir = settings.webui_dist or default_dist_dir()
    if settings.api_docs:
        app.include_router(build_docs_router(dist_dir))
    app.mount("/", StaticUI(dist_dir), name="webui")
    app.add_middleware(LiteralPathMethods)  # innermost: 405 + Allow for /api/users/me and the like
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_credentials=True,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    # Added last, so it runs first: nothing is routed before the Host check.
    app.add_middleware(NetworkGuardMiddleware, policy=guard)
    if settings.trusted_proxies:  # the browser's scheme behind a TLS-terminating proxy
        app.add_middleware(ForwardedProtoMiddleware, trusted_proxies=settings.trusted_proxies)
    # Outermost: every request, even one the guard refuses, gets a request id, an access-log line and
    # a place in the metrics.
    app.add_middleware(AccessLogMiddleware, runtime=runtime)
    return app


def stop_replies(app: FastAPI) -> None:
    """The listener's first step at shutdown (server/listener.py, ``ReadyServer``): ask every reply this
    process streams to stop. Each saves its partial answer as ``stopped`` and ends its stream with its
    final event, so the open connections close by themselves and the drain is quick."""
    for stream in chat_service.registry(app.state.runtime).all():
        stream.request_stop("shutdown")
