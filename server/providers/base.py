"""The one streaming interface every upstream adapter implements, and the events it yields."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str
    #: Images of a user message, as URLs: ``data:image/...;base64,...`` (Ollama takes only those) or,
    #: for OpenAI-compatible upstreams, ``https://...`` as the client gave them.
    images: tuple[str, ...] = ()
    #: An assistant message's tool calls, in OpenAI's shape
    #: (``{"id", "type": "function", "function": {"name", "arguments": "<JSON text>"}}``).
    tool_calls: tuple[dict[str, Any], ...] = ()
    #: A ``tool`` message: the id of the call it answers.
    tool_call_id: str | None = None


@dataclass(frozen=True)
class ChatRequest:
    model: str  # the upstream's model name (e.g. "llama3.2:latest", "gpt-4o-mini")
    messages: list[ChatMessage]
    #: Generation options in our vocabulary: temperature, top_p, max_tokens, context_length, seed, stop...
    options: dict[str, Any] = field(default_factory=dict)
    think: bool | None = None
    #: OpenAI's ``response_format`` (``{"type": "json_object"}`` or ``{"type": "json_schema", ...}``);
    #: each adapter maps it to its upstream (Ollama: ``format``), None for free text.
    response_format: dict[str, Any] | None = None
    #: OpenAI-format function tools the model may call, and OpenAI's ``tool_choice`` (None: unset).
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None


@dataclass(frozen=True)
class Delta:
    """A piece of the answer. Any field may be empty."""

    content: str = ""
    thinking: str = ""
    #: Whole tool calls, in OpenAI's shape (see :class:`ChatMessage`).
    tool_calls: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class Done:
    done_reason: str = "stop"
    #: {"prompt_tokens", "completion_tokens"} when the upstream reports them.
    usage: dict[str, int] = field(default_factory=dict)
    #: Upstream-reported timings in milliseconds, e.g. {"load_ms", "prompt_ms", "generate_ms"}.
    timings: dict[str, float] = field(default_factory=dict)
    #: A routed model (several hosts, providers/routed.py): the host that served the answer,
    #: ``{"provider_id", "name"}``; None from a plain adapter.
    served_by: dict[str, str] | None = None


ChatEvent = Delta | Done


@dataclass(frozen=True)
class ModelInfo:
    name: str
    capabilities: tuple[str, ...] = ("completion",)
    details: dict[str, Any] = field(default_factory=dict)


class ProviderError(Exception):
    """An upstream failure, already translated into our vocabulary.

    ``code`` is one of: upstream_unreachable, upstream_timeout, upstream_busy, upstream_rate_limited,
    model_not_found, upstream_auth, upstream_bad_request, upstream_error, upstream_protocol.
    """

    def __init__(self, code: str, message: str, *, status: int = 502, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.retry_after = retry_after


@dataclass(frozen=True)
class Timeouts:
    connect: float = 5.0
    first_token: float = 120.0  # covers a model load
    idle: float = 60.0  # between two chunks once streaming


class ChatProvider(Protocol):
    #: "ollama" or "openai", like ``Provider.kind``.
    kind: str

    # Implemented as an async generator: use ``async with contextlib.aclosing(p.stream_chat(...)) as it:
    # async for event in it: ...`` so that leaving the loop early closes the upstream at once.
    def stream_chat(
        self, request: ChatRequest, timeouts: Timeouts = Timeouts()
    ) -> AsyncGenerator[ChatEvent, None]:
        """Yield Delta events and exactly one final Done, or raise ProviderError.

        Cancelling the consuming task (or closing the iterator) must close the upstream request at once.
        """
        ...

    async def list_models(self, timeout: float | None = None) -> list[ModelInfo]:
        """The upstream's models; ``timeout`` bounds the whole call (seconds)."""
        ...

    async def aclose(self) -> None: ...
