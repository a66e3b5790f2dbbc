"""A fake OpenAI-compatible chat API for tests (docs/protocols.md §E).

    with FakeOpenAI(api_key="sk-test") as fake:
        client = openai.OpenAI(base_url=fake.url, api_key="sk-test", max_retries=0)

Knobs are plain attributes and may be changed while the server runs. Standalone, from the repo root:

    python -m tests.fakes.fake_openai --host 127.0.0.1 --port 8080 [--token-delay 0.02] [--reply-tokens 256]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from tests.fakes._httpserver import (
    FakeServer,
    HTTPError,
    LazyStream,
    ReplyKnob,
    message_text,
    resolve_reply,
    run_until_signalled,
    split_tokens,
)

__all__ = ["HOSTILE_MODES", "FakeOpenAI"]

HOSTILE_MODES = ("bad_json", "html", "huge_chunk", "unknown_events", "ansi", "set_cookie")
"""Values of the ``hostile`` knob (docs/security.md, D2)."""

HUGE_CHUNK_BYTES = 5 * 1024 * 1024
FINGERPRINT = "fp_fake"
SERVER_ERROR = "The server had an error while processing your request. Sorry about that!"

_SSE = "text/event-stream; charset=utf-8"
_JSON = "application/json"
_HTML = (
    b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>"
    b"<body><h1>502 Bad Gateway</h1><script>alert('x')</script></body></html>"
)
_UNKNOWN_EVENTS = b': keep-alive\n\nevent: foo\ndata: {"foo":"bar"}\n\nid: 7\nretry: 1000\n\n'
_BAD_JSON = b'data: {"id":"chatcmpl-broken","choices":[{"delta":\n\n'
_ANSI_PREFIX, _ANSI_SUFFIX = "\x1b[2J\x1b[31m", "\x1b[0m\x1b]0;pwned\x07"


def error_body(
    message: str, type_: str = "invalid_request_error", *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """OpenAI's error object: all four keys always present."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _json(value: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    body = json.dumps(value).encode()
    return Response(body, status_code=status, media_type=_JSON, headers=dict(headers or {}))


def _event(value: Mapping[str, Any]) -> bytes:
    return b"data: " + json.dumps(value, separators=(",", ":")).encode() + b"\n\n"


def _mask(key: str) -> str:
    return key[:3] + "*" * (len(key) - 7) + key[-4:] if len(key) > 8 else "*" * len(key)


@dataclass
class _Completion:
    """One validated chat completion request and the figures gathered while answering it."""

    id: str
    model: str
    created: int
    text: str
    prompt_tokens: int
    limit: int | None
    completion_tokens: int = 0
    finish_reason: str = "stop"
    aborted: bool = False  # the server is stopping: end without finish chunk or [DONE]

    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }

    def chunk(self, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": FINGERPRINT,
            "choices": choices,
            **extra,
        }


def _choice(delta: Mapping[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {"index": 0, "delta": dict(delta), "logprobs": None, "finish_reason": finish_reason}


class FakeOpenAI(FakeServer):
    """A fake OpenAI-compatible server (``/v1/chat/completions``, ``/v1/models``) on loopback.

    Knobs (plain attributes): ``api_key`` (expected Bearer key; None disables auth), ``token_delay``,
    ``rate_limited`` (429 with ``Retry-After: retry_after``), ``server_error`` (500),
    ``fail_after_chunks`` (after N content chunks send an error event and close; 0 fails with HTTP 500
    before any byte), ``hostile`` (one of :data:`HOSTILE_MODES`), ``reply``, ``models`` (ids listed by
    /v1/models), ``strict_models`` (404 for a chat model not in ``models``), ``hang``.

    Observations: ``requests``, ``active_streams``, ``disconnects`` (as for FakeOllama).
    """

    def __init__(
        self,
        *,
        api_key: str | None = "sk-test",
        token_delay: float = 0.0,
        rate_limited: bool = False,
        fail_after_chunks: int | None = None,
        hostile: str | None = None,
        reply: ReplyKnob = None,
        models: Sequence[str] = ("gpt-4o-mini", "gpt-4o"),
        retry_after: float = 1,
        server_error: bool = False,
        strict_models: bool = False,
        hang: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host, port, hang=hang)
        if hostile is not None and hostile not in HOSTILE_MODES:
            raise ValueError(f"hostile must be one of {HOSTILE_MODES}")
        self.api_key = api_key
        self.token_delay = token_delay
        self.rate_limited = rate_limited
        self.fail_after_chunks = fail_after_chunks
        self.hostile = hostile
        self.reply = reply
        self.models = list(models)
        self.retry_after = retry_after
        self.server_error = server_error
        self.strict_models = strict_models
        self._ids = itertools.count(1)

    @property
    def url(self) -> str:
        """Base URL including ``/v1``, as the OpenAI SDK's ``base_url`` expects."""
        return self.origin + "/v1"

    def build_app(self) -> ASGIApp:
        routes = [
            Route("/v1/models", self.held(self._list_models), methods=["GET"]),
            Route("/v1/models/{model:path}", self.held(self._get_model), methods=["GET"]),
            Route("/v1/chat/completions", self._chat, methods=["POST"]),
        ]

        def invalid_url(request: Request, exc: Exception) -> Response:
            return _json(error_body(f"Invalid URL ({request.method} {request.url.path})"), 404)

        handlers = {
            HTTPError: lambda request, exc: _json(exc.payload, exc.status, exc.headers),
            404: invalid_url,
            405: invalid_url,
        }
        return Starlette(routes=routes, exception_handlers=handlers)

    def _admit(self, request: Request) -> None:
        """Authentication, then the rate-limit and server-error knobs."""
        if self.api_key is not None:
            scheme, _, key = request.headers.get("authorization", "").partition(" ")
            if not key:
                raise HTTPError(
                    401,
                    error_body(
                        "You didn't provide an API key. You need to provide your API key in an Authorization "
                        "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
                    ),
                )
            if scheme.lower() != "bearer" or key.strip() != self.api_key:
                raise HTTPError(
                    401,
                    error_body(
                        f"Incorrect API key provided: {_mask(key.strip())}. You can find your API key at "
                        "https://platform.openai.com/account/api-keys.",
                        code="invalid_api_key",
                    ),
                )
        if self.rate_limited:
            seconds = f"{self.retry_after:g}"
            raise HTTPError(
                429,
                error_body(
                    "Rate limit reached for requests. Please try again later.",
                    "requests",
                    code="rate_limit_exceeded",
                ),
                headers={
                    "retry-after": seconds,
                    "x-ratelimit-limit-requests": "60",
                    "x-ratelimit-remaining-requests": "0",
                    "x-ratelimit-reset-requests": f"{seconds}s",
                },
            )
        if self.server_error:
            raise HTTPError(500, error_body(SERVER_ERROR, "server_error"))

    async def _list_models(self, request: Request) -> Response:
        self._admit(request)
        return _json({"object": "list", "data": [self._model_entry(m) for m in self.models]})

    async def _get_model(self, request: Request) -> Response:
        self._admit(request)
        model = request.path_params["model"]
        if model not in self.models:
            raise HTTPError(
                404, error_body(f"The model '{model}' does not exist", param="model", code="model_not_found")
            )
        return _json(self._model_entry(model))

    @staticmethod
    def _model_entry(model: str) -> dict[str, Any]:
        return {"id": model, "object": "model", "created": 1_721_172_741, "owned_by": "system"}

    async def _chat(self, request: Request) -> Response:
        self._admit(request)
        body = _decode(await request.body())
        model, messages = body.get("model"), body.get("messages")
        if not isinstance(model, str) or not model:
            raise HTTPError(400, error_body("you must provide a model parameter"))
        if messages is None:
            raise HTTPError(
                400,
                error_body(
                    "Missing required parameter: 'messages'.",
                    param="messages",
                    code="missing_required_parameter",
                ),
            )
        if not isinstance(messages, list) or not messages:
            message = f"{json.dumps(messages)} is too short - 'messages'"
            raise HTTPError(400, error_body(message, param="messages"))
        if self.strict_models and model not in self.models:
            message = f"The model `{model}` does not exist or you do not have access to it."
            raise HTTPError(404, error_body(message, code="model_not_found"))
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        turn = _Completion(
            id=f"chatcmpl-fake{next(self._ids):06d}",
            model=model,
            created=int(time.time()),
            text=self._reply_text(messages),
            limit=limit if isinstance(limit, int) else None,
            prompt_tokens=sum(
                len(split_tokens(message_text(m.get("content")))) + 4 for m in messages if isinstance(m, dict)
            ),
        )
        headers = {"x-request-id": f"req_{turn.id}", "cache-control": "no-cache"}
        if self.hostile == "set_cookie":
            headers["set-cookie"] = "session=stolen; Path=/; HttpOnly"
        if self.hostile == "html":
            return Response(_HTML, media_type="text/event-stream", headers=headers)
        if body.get("stream") is True:
            options = body.get("stream_options")
            include_usage = isinstance(options, dict) and options.get("include_usage") is True
            return self._stream(self._sse(turn, include_usage), _SSE, headers)
        return self._stream(self._whole(turn), _JSON, headers, buffered=True)

    def _reply_text(self, messages: list[dict[str, Any]]) -> str:
        text = resolve_reply(self.reply, messages)
        return _ANSI_PREFIX + text + _ANSI_SUFFIX if self.hostile == "ansi" else text

    def _stream(
        self,
        chunks: AsyncGenerator[bytes, None],
        media_type: str,
        headers: Mapping[str, str],
        *,
        buffered: bool = False,
    ) -> LazyStream:
        return LazyStream(
            self,
            chunks,
            media_type=media_type,
            headers=headers,
            buffered=buffered,
            render_error=lambda exc: _json(exc.payload, exc.status, exc.headers),
            frame_error=_event,
        )

    async def _tokens(self, turn: _Completion) -> AsyncGenerator[str, None]:
        """The content tokens, paced by ``token_delay``; raises for ``fail_after_chunks``."""
        await self.hold()
        tokens = split_tokens(turn.text)
        if turn.limit is not None and 0 <= turn.limit < len(tokens):
            tokens, turn.finish_reason = tokens[: turn.limit], "length"
        if self.hostile == "huge_chunk":
            tokens.insert(1, "x" * HUGE_CHUNK_BYTES)
        for index, token in enumerate(tokens):
            if self.stopping:
                turn.aborted = True
                return
            if self.fail_after_chunks is not None and index >= self.fail_after_chunks:
                raise HTTPError(500, error_body(SERVER_ERROR, "server_error"))
            yield token
            turn.completion_tokens += 1
            await asyncio.sleep(self.token_delay)

    async def _sse(self, turn: _Completion, include_usage: bool) -> AsyncGenerator[bytes, None]:
        usage: dict[str, Any] = {"usage": None} if include_usage else {}
        role_chunk = _event(turn.chunk([_choice({"role": "assistant", "content": ""})], **usage))
        sent = 0
        async with aclosing(self._tokens(turn)) as tokens:
            async for token in tokens:
                prefix = role_chunk if sent == 0 else b""  # sent lazily, so a failure at 0 is a real 500
                if self.hostile == "unknown_events":
                    prefix += _UNKNOWN_EVENTS
                yield prefix + _event(turn.chunk([_choice({"content": token})], **usage))
                sent += 1
                if self.hostile == "bad_json" and sent == 1:
                    yield _BAD_JSON
        if turn.aborted:
            return
        if sent == 0:
            yield role_chunk
        yield _event(turn.chunk([_choice({}, turn.finish_reason)], **usage))
        if include_usage:
            yield _event(turn.chunk([], usage=turn.usage()))
        yield b"data: [DONE]\n\n"

    async def _whole(self, turn: _Completion) -> AsyncGenerator[bytes, None]:
        async with aclosing(self._tokens(turn)) as tokens:
            content = "".join([token async for token in tokens])
        if turn.aborted:
            return
        body = json.dumps(
            {
                "id": turn.id,
                "object": "chat.completion",
                "created": turn.created,
                "model": turn.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content, "refusal": None},
                        "logprobs": None,
                        "finish_reason": turn.finish_reason,
                    }
                ],
                "usage": turn.usage(),
                "system_fingerprint": FINGERPRINT,
            }
        ).encode()
        yield body[: len(body) // 2] if self.hostile == "bad_json" else body


def _decode(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise HTTPError(
            400,
            error_body(
                "We could not parse the JSON body of your request. "
                "(HINT: This likely means you aren't using your HTTP library correctly. "
                "The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)"
            ),
        )
    return value


def main(argv: Sequence[str] | None = None) -> None:
    """Run a fake OpenAI-compatible server in the foreground until Ctrl+C or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.fake_openai", description=main.__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--api-key", default="sk-test", help="the expected Bearer key ('' disables auth)")
    parser.add_argument("--token-delay", type=float, default=0.0, help="seconds between streamed tokens")
    parser.add_argument(
        "--reply-tokens",
        type=int,
        default=0,
        help="answer every chat with this many tokens (0: the default, prompt-derived reply)",
    )
    args = parser.parse_args(argv)
    reply = " ".join(f"word{i % 97}" for i in range(args.reply_tokens)) if args.reply_tokens > 0 else None
    fake = FakeOpenAI(
        api_key=args.api_key or None,
        token_delay=args.token_delay,
        reply=reply,
        host=args.host,
        port=args.port,
    )

    def announce() -> None:
        print(f"fake OpenAI listening on {fake.url}", file=sys.stderr, flush=True)

    run_until_signalled(fake, announce)


if __name__ == "__main__":
    main()
