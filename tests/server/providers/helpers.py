"""Helpers for the adapter tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio

from server.providers.base import ChatEvent, ChatMessage, ChatProvider, ChatRequest, Delta, Done, Timeouts


async def wait_for(predicate: Callable[[], bool], timeout: float = 1.0) -> bool:
    """Bounded polling of a condition (no fixed sleeps as synchronisation)."""
    with anyio.move_on_after(timeout):
        while not predicate():  # noqa: ASYNC110  (the condition is state of another thread; no event to await)
            await anyio.sleep(0.01)
    return bool(predicate())


def request(model: str, text: str = "hi", **options: object) -> ChatRequest:
    return ChatRequest(model=model, messages=[ChatMessage("user", text)], options=dict(options))


async def collect(
    adapter: ChatProvider, req: ChatRequest, timeouts: Timeouts = Timeouts()
) -> list[ChatEvent]:
    return [event async for event in adapter.stream_chat(req, timeouts)]


async def collect_into(
    got: list[Any], adapter: ChatProvider, req: ChatRequest, timeouts: Timeouts = Timeouts()
) -> None:
    """Like :func:`collect`, appending each event to ``got`` as it arrives: what came before an error
    stays there for the test to check."""
    async for event in adapter.stream_chat(req, timeouts):
        got.append(event)


def text_of(events: list[ChatEvent]) -> str:
    return "".join(e.content for e in events if isinstance(e, Delta))


def thinking_of(events: list[ChatEvent]) -> str:
    return "".join(e.thinking for e in events if isinstance(e, Delta))


def final(events: list[ChatEvent]) -> Done:
    assert isinstance(events[-1], Done), events[-1]
    assert sum(isinstance(e, Done) for e in events) == 1
    return events[-1]
