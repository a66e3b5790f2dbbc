"""Plumbing shared by the adapters: bounded line reading with per-chunk timeouts, text sanitising,
and the translation of HTTP failures into :class:`ProviderError`.

Nothing here knows a wire protocol; ``ollama.py`` (NDJSON) and ``openai_compat.py`` (SSE) build on it.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import orjson

from server import aio
from server.providers.base import Delta, ProviderError, Timeouts

#: Largest single upstream line or SSE event we accept. Bigger -> ``upstream_protocol``, connection closed.
MAX_LINE_BYTES = 1024 * 1024
#: Largest error body we read to find a message (the rest is not read).
MAX_ERROR_BODY_BYTES = 64 * 1024
#: Largest non-streamed JSON answer (model lists, /api/show).
MAX_JSON_BODY_BYTES = 16 * 1024 * 1024
#: Unparseable lines/events skipped before the stream is declared broken.
MAX_SKIPPED = 1000
#: Retry-After we pass on when an overloaded upstream gives none (seconds).
DEFAULT_RETRY_AFTER = 5
MAX_RETRY_AFTER = 3600
#: After the final event, how long we wait for the end of the body to keep the connection (seconds).
DRAIN_SECONDS = 0.25
#: Longest upstream error text we relay.
MAX_MESSAGE_CHARS = 300


# --- text sanitising -------------------------------------------------------------------------------

# CSI, OSC (BEL or ST terminated), DCS/SOS/PM/APC strings, and two-character escapes.
_ANSI = re.compile(
    r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[PX^_][^\x1b]*\x1b\\|[@-Z\\-_])"
)
# An escape sequence cut off at the end of a delta: held back and completed by the next one.
_INCOMPLETE_TAIL = re.compile(r"\x1b(?:\[[0-?]*[ -/]*|\][^\x07\x1b]*|[PX^_][^\x1b]*)?$")
# C0 controls except TAB and LF, DEL, C1 controls.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_MAX_CARRY = 64


def strip_control(text: str) -> str:
    """Remove ANSI escape sequences and control characters (TAB and LF are kept)."""
    if not _CONTROL.search(text):
        return text
    return _CONTROL.sub("", _ANSI.sub("", text))


class TextSanitizer:
    """Strips escapes/control characters from a stream of deltas, also when a sequence is split."""

    __slots__ = ("_carry",)

    def __init__(self) -> None:
        self._carry = ""

    def feed(self, text: str) -> str:
        if self._carry:
            text = self._carry + text
            self._carry = ""
        if not _CONTROL.search(text):
            return text
        tail = _INCOMPLETE_TAIL.search(text)
        if tail is not None and len(text) - tail.start() <= _MAX_CARRY:
            self._carry = text[tail.start() :]
            text = text[: tail.start()]
        return _CONTROL.sub("", _ANSI.sub("", text))

    def flush(self) -> str:
        """End of stream: an unfinished escape sequence is dropped."""
        self._carry = ""
        return ""


def clean_message(value: Any, *, secrets: tuple[str, ...] = ()) -> str:
    """An upstream-supplied message made safe to relay: text only, no controls, no secrets, bounded."""
    if isinstance(value, dict):
        value = value.get("message") or value.get("error") or ""
    if not isinstance(value, str):
        value = "" if value is None else json.dumps(value)[:MAX_MESSAGE_CHARS]
    for secret in secrets:
        if secret:
            value = value.replace(secret, "***")
    value = " ".join(strip_control(value).split())
    if len(value) > MAX_MESSAGE_CHARS:
        value = value[: MAX_MESSAGE_CHARS - 1] + "…"
    return value


def batch_delta(
    content: TextSanitizer, thinking: TextSanitizer, texts: list[str], thoughts: list[str]
) -> Delta | None:
    """The Delta for the tokens of one network read (sanitised), or None when they carried no text."""
    text = content.feed("".join(texts)) if texts else ""
    thought = thinking.feed("".join(thoughts)) if thoughts else ""
    return Delta(content=text, thinking=thought) if text or thought else None


# --- lines -----------------------------------------------------------------------------------------

_stdlib_decode = json.JSONDecoder().decode


def decode_json(raw: bytes) -> Any:
    """One streamed JSON value (an NDJSON line, an SSE ``data`` field). orjson reads the usual line in
    under a microsecond; what it refuses (invalid UTF-8, NaN, integers over 64 bits) goes through the
    standard library, which reads invalid UTF-8 as U+FFFD rather than losing the token. Raises
    ``ValueError`` for text that is not JSON."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _stdlib_decode(raw.decode("utf-8", "replace"))


_EOL = re.compile(rb"\r\n|\r|\n")


def _too_long() -> ProviderError:
    return ProviderError(
        "upstream_protocol", f"the upstream sent a line longer than {MAX_LINE_BYTES // 1024} KiB", status=502
    )


class LineSplitter:
    """Incremental line splitter. ``sse=True`` accepts CRLF, LF and lone CR; otherwise LF only.

    Memory stays bounded: a line (or an unterminated tail) over ``max_bytes`` raises ``upstream_protocol``.
    """

    __slots__ = ("_buf", "_max", "_skip_lf", "_sse")

    def __init__(self, max_bytes: int = MAX_LINE_BYTES, *, sse: bool = False) -> None:
        self._buf = b""
        self._max = max_bytes
        self._sse = sse
        self._skip_lf = False

    def feed(self, data: bytes) -> list[bytes]:
        if self._skip_lf:
            self._skip_lf = False
            if data[:1] == b"\n":
                data = data[1:]
        buf = self._buf + data if self._buf else data
        lines: list[bytes] = []
        start = 0
        if self._sse:
            for match in _EOL.finditer(buf):
                lines.append(buf[start : match.start()])
                start = match.end()
            if start and buf[start - 1 : start] == b"\r":
                self._skip_lf = True  # a CR at the end of a chunk may be the first half of CRLF
        else:
            while True:
                end = buf.find(b"\n", start)
                if end < 0:
                    break
                lines.append(buf[start:end])
                start = end + 1
        self._buf = buf[start:]
        if len(self._buf) > self._max:
            raise _too_long()
        for line in lines:
            if len(line) > self._max:
                raise _too_long()
        return lines

    def close(self) -> bytes:
        tail, self._buf = self._buf, b""
        return tail


class LineReader:
    """Async iterator over the lines of a streamed response, in batches (the complete lines of one
    network read, so the per-line cost stays low), with the first-token and idle timeouts enforced per
    read (never as a total). The adapter calls :meth:`got_token` once real content has arrived; until
    then the first-token deadline applies.

    The timeouts cost one float store per read: a single timer, re-armed only when it comes due, cancels
    the read in progress once its deadline has really passed (a fast upstream delivers thousands of
    chunks a second, and a timeout context per read would cost more than reading the chunk).
    """

    def __init__(self, response: httpx.Response, timeouts: Timeouts, deadline: float, *, sse: bool) -> None:
        self._chunks = response.aiter_bytes()
        self._timeouts = timeouts
        self._deadline = deadline  # monotonic time the first token must arrive by
        self._first = True
        self._splitter = LineSplitter(sse=sse)
        self._due = 0.0  # loop time the current read must end by
        self._reading = False
        self._fired = False
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.finished = False  # the body was read to its end (the connection can be reused)

    def got_token(self) -> None:
        self._first = False

    def _on_timer(self) -> None:
        loop = self._loop
        assert loop is not None
        now = loop.time()
        if not self._reading:  # between two reads: the next read arms it again
            self._timer = None
        elif now >= self._due and self._task is not None:
            self._fired = True
            self._timer = None
            self._task.cancel()
        else:  # the read in progress started after the timer was set: look again when it is due
            self._timer = loop.call_at(self._due, self._on_timer)

    def _arm(self) -> None:
        loop = self._loop
        assert loop is not None
        if self._first:
            self._due = loop.time() + max(0.0, self._deadline - time.monotonic())
        else:
            self._due = loop.time() + self._timeouts.idle
        timer = self._timer
        if timer is None or self._due < timer.when():  # e.g. the first-token deadline became an idle one
            if timer is not None:
                timer.cancel()
            self._timer = loop.call_at(self._due, self._on_timer)

    async def _read(self) -> bytes | None:
        """The next chunk, or None at the end of the body."""
        self._arm()
        self._reading = True
        try:
            return await self._chunks.__anext__()
        except StopAsyncIteration:
            self.finished = True
            return None
        except asyncio.CancelledError:
            if not self._fired:
                raise
            self._fired = False
            if aio.uncancel(self._task) > 0:
                raise  # cancelled from outside as well: that wins
            raise timeout_error("first_token" if self._first else "idle", self._timeouts) from None
        except httpx.TransportError as exc:
            raise transport_error(exc) from None
        finally:
            self._reading = False

    async def __aiter__(self) -> AsyncIterator[list[bytes]]:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        try:
            while True:
                chunk = await self._read()
                if chunk is None:
                    break
                lines = self._splitter.feed(chunk)
                if lines:
                    yield lines
            tail = self._splitter.close()
            if tail:
                yield [tail]
        finally:
            self.close()

    async def drain(self, limit: int = 64 * 1024, timeout: float = 1.0) -> None:
        """After the last event: read what is left of the body (normally just the end of the chunked
        encoding), so the connection goes back to the pool instead of being closed."""
        if self.finished:
            return
        with anyio.move_on_after(timeout):
            size = 0
            try:
                async for chunk in self._chunks:
                    size += len(chunk)
                    if size > limit:
                        return
            except httpx.TransportError:
                return
            self.finished = True

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


# --- requests and errors ---------------------------------------------------------------------------


def timeout_error(which: str, timeouts: Timeouts) -> ProviderError:
    if which == "connect":
        text = f"could not connect to the upstream within {timeouts.connect:g} s"
    elif which == "first_token":
        text = f"the model sent nothing within {timeouts.first_token:g} s (first-token timeout)"
    else:
        text = f"the model stopped sending for {timeouts.idle:g} s (idle timeout)"
    return ProviderError("upstream_timeout", text, status=504)


def transport_error(exc: httpx.TransportError) -> ProviderError:
    if isinstance(exc, httpx.ConnectTimeout):
        return ProviderError("upstream_timeout", "could not connect to the upstream in time", status=504)
    if isinstance(exc, httpx.PoolTimeout):
        return ProviderError(
            "upstream_busy", "too many requests to the upstream at once", status=503, retry_after=1
        )
    if isinstance(exc, httpx.ConnectError):
        text = str(exc)
        if text.startswith("blocked address:"):
            return ProviderError("upstream_unreachable", f"refused to connect: {text[17:]}", status=502)
        return ProviderError("upstream_unreachable", "could not connect to the upstream", status=502)
    if isinstance(exc, httpx.TimeoutException):
        return ProviderError("upstream_timeout", "the upstream did not answer in time", status=504)
    if isinstance(exc, httpx.UnsupportedProtocol):
        return ProviderError("upstream_unreachable", "unsupported upstream URL scheme", status=502)
    return ProviderError("upstream_error", "the connection to the upstream was lost", status=502)


def client_timeout(timeouts: Timeouts) -> httpx.Timeout:
    # Reads are bounded by LineReader (first-token/idle), not by httpx.
    return httpx.Timeout(connect=timeouts.connect, read=None, write=timeouts.connect, pool=timeouts.connect)


async def open_stream(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    json_body: Any,
    headers: dict[str, str],
    timeouts: Timeouts,
) -> tuple[httpx.Response, float]:
    """Send the request and wait for the response head. Returns the response (body unread) and the
    monotonic deadline by which the first token must arrive."""
    request = client.build_request(
        method, url, json=json_body, headers=headers, timeout=client_timeout(timeouts)
    )
    deadline = time.monotonic() + timeouts.connect + timeouts.first_token
    try:
        async with aio.timeout(timeouts.connect + timeouts.first_token):
            response = await client.send(request, stream=True)
    except aio.TIMEOUT_ERRORS:
        raise timeout_error("first_token", timeouts) from None
    except httpx.TransportError as exc:
        raise transport_error(exc) from None
    return response, deadline


async def close_response(response: httpx.Response) -> None:
    """Close the upstream response now, even from a cancelled task (the close itself is shielded)."""
    with anyio.move_on_after(5, shield=True):
        await response.aclose()


async def end_stream(response: httpx.Response, reader: LineReader | None, *, complete: bool) -> None:
    """Close a streamed chat response. After a complete answer the rest of the body is read first (a
    short, bounded read), so the upstream connection is reused rather than closed and opened anew."""
    if reader is not None:
        reader.close()
        if complete:
            await reader.drain(timeout=DRAIN_SECONDS)
    await close_response(response)


async def read_capped(response: httpx.Response, limit: int, *, truncate: bool) -> bytes:
    """Read a body up to ``limit`` bytes. Over the limit: truncated, or ``upstream_protocol``."""
    parts: list[bytes] = []
    size = 0
    try:
        async for chunk in response.aiter_bytes():
            parts.append(chunk)
            size += len(chunk)
            if size > limit:
                if truncate:
                    break
                raise ProviderError(
                    "upstream_protocol", f"the upstream answer is larger than {limit // 1024} KiB", status=502
                )
    except httpx.TransportError as exc:
        if not truncate:
            raise transport_error(exc) from None
    return b"".join(parts)[:limit]


def parse_retry_after(headers: httpx.Headers, default: int | None = DEFAULT_RETRY_AFTER) -> int | None:
    """Seconds to wait, from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    raw_ms = headers.get("retry-after-ms")
    seconds: float | None = None
    if raw_ms:
        try:
            seconds = float(raw_ms) / 1000
        except ValueError:
            seconds = None
    raw = headers.get("retry-after")
    if seconds is None and raw:
        try:
            seconds = float(raw)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(raw)
                seconds = when.timestamp() - time.time()
            except (TypeError, ValueError, IndexError, OverflowError):
                seconds = None
    if seconds is None or not math.isfinite(seconds):
        return default
    return int(min(MAX_RETRY_AFTER, max(1, math.ceil(seconds))))


def media_type(response: httpx.Response) -> str:
    return response.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def error_text_from_body(body: bytes, content_type: str, *, secrets: tuple[str, ...] = ()) -> str:
    """The ``error`` message of a JSON error body (Ollama or OpenAI shape); "" for anything else."""
    if "json" not in content_type:
        return ""
    try:
        data = json.loads(body)
    except ValueError:
        return ""
    if isinstance(data, dict) and "error" in data:
        return clean_message(data["error"], secrets=secrets)
    return ""


def status_error(
    status: int,
    headers: httpx.Headers,
    message: str,
    *,
    what: str = "the upstream",
) -> ProviderError:
    """Map an upstream HTTP status to our error vocabulary. Statuses we answer with never include 401
    (that would read as "your ModelTrain session expired")."""
    detail = f": {message}" if message else ""
    if 300 <= status < 400:
        return ProviderError(
            "upstream_protocol", f"{what} answered with a redirect, which is not followed", status=502
        )
    if status in (401, 403):
        return ProviderError(
            "upstream_auth", f"{what} refused the credentials (HTTP {status}){detail}", status=502
        )
    if status == 404:
        return ProviderError("model_not_found", f"model not found on {what}{detail}", status=404)
    if status == 429:
        return ProviderError(
            "upstream_rate_limited",
            f"{what} is rate-limiting requests{detail}",
            status=429,
            retry_after=parse_retry_after(headers),
        )
    if status == 503:
        return ProviderError(
            "upstream_busy", f"{what} is busy{detail}", status=503, retry_after=parse_retry_after(headers)
        )
    if status in (400, 422):
        return ProviderError("upstream_bad_request", f"{what} rejected the request{detail}", status=400)
    return ProviderError("upstream_error", f"{what} failed (HTTP {status}){detail}", status=502)


async def raise_for_status(response: httpx.Response, *, secrets: tuple[str, ...] = (), what: str) -> None:
    """For a non-2xx response: read a bounded piece of the body for its message and raise."""
    if 200 <= response.status_code < 300:
        return
    body = b""
    if not 300 <= response.status_code < 400:
        body = await read_capped(response, MAX_ERROR_BODY_BYTES, truncate=True)
    message = error_text_from_body(body, media_type(response), secrets=secrets)
    raise status_error(response.status_code, response.headers, message, what=what)


async def get_json(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    timeout: float,
    json_body: Any = None,
    headers: dict[str, str] | None = None,
    secrets: tuple[str, ...] = (),
    what: str,
) -> Any:
    """A small non-streamed JSON call with a total timeout and a size cap."""
    request = client.build_request(
        method,
        url,
        json=json_body,
        headers={"Accept": "application/json", "Accept-Encoding": "identity", **(headers or {})},
        timeout=httpx.Timeout(timeout),
    )
    try:
        async with aio.timeout(timeout):
            response = await client.send(request, stream=True)
            try:
                await raise_for_status(response, secrets=secrets, what=what)
                if "json" not in media_type(response):
                    raise ProviderError(
                        "upstream_protocol", f"{what} did not answer with JSON; is the URL right?", status=502
                    )
                body = await read_capped(response, MAX_JSON_BODY_BYTES, truncate=False)
            finally:
                await close_response(response)
    except aio.TIMEOUT_ERRORS:
        raise ProviderError(
            "upstream_timeout", f"{what} did not answer within {timeout:g} s", status=504
        ) from None
    except httpx.TransportError as exc:
        raise transport_error(exc) from None
    try:
        return json.loads(body)
    except ValueError:
        raise ProviderError("upstream_protocol", f"{what} sent invalid JSON", status=502) from None
