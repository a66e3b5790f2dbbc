"""Receivers for the outbound alert channels' tests: a local HTTP server that records webhook posts, and
a local SMTP server (aiosmtpd) that records mail; plus a runtime on a migrated database, not started."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller

from server.app import create_app
from server.bootstrap import prepare_database
from server.runtime import Runtime
from server.settings import Settings


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    """Answers each POST with the next of ``statuses`` (then the last one again) and records it."""

    url: str = ""
    statuses: list[int] = field(default_factory=lambda: [200])
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self) -> int:
        with self.lock:
            n = len(self.requests)
            return self.statuses[min(n, len(self.statuses) - 1)]


@contextmanager
def webhook_receiver(statuses: list[int] | None = None) -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(statuses=statuses or [200])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            status = receiver.answer()
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with receiver.lock:
                receiver.requests.append(Received(self.path, dict(self.headers.items()), body))
            payload = b'{"ok": true}'
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@dataclass
class MailReceiver:
    host: str
    port: int
    messages: list[Message] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        self.messages.append(message_from_bytes(envelope.content))
        return "250 Message accepted for delivery"


@contextmanager
def smtp_receiver() -> Iterator[MailReceiver]:
    with socket.socket() as probe:  # aiosmtpd connects to its own port to check it started: no port 0
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    receiver = MailReceiver("127.0.0.1", port)
    controller = Controller(receiver, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield receiver
    finally:
        controller.stop()


def migrated_runtime(settings: Settings) -> Runtime:
    """The app's runtime with its database migrated, its background services not started."""
    runtime: Runtime = create_app(settings).state.runtime
    prepare_database(settings, runtime.engine, runtime.session_factory)
    return runtime
