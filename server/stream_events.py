"""The events a streaming service produces, before any wire format: services yield these, and
``server.api.sse`` frames them as Server-Sent Events. Neutral ground, so services never import ``api``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ServerSentEvent:
    event: str | None
    data: Any
    id: str | None = None
    #: Nothing follows: the response ends with this event (sent in the same write as the end).
    last: bool = False


#: Yielded by an event source to send a ``: ping`` comment (see ``server.api.sse.encode_events``).
KEEPALIVE = ServerSentEvent(None, None)
