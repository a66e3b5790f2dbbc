from __future__ import annotations

from sqlalchemy import JSON, CheckConstraint, String
from sqlalchemy.orm import Mapped, mapped_column

from server.db.base import Base, IdMixin, TimestampMixin

PROVIDER_KINDS = ("ollama", "openai")


class Provider(IdMixin, TimestampMixin, Base):
    """An upstream LLM endpoint. Its API key lives in the OS keyring, never here."""

    __tablename__ = "providers"
    __table_args__ = (CheckConstraint("kind IN ('ollama', 'openai')", name="kind"),)

    name: Mapped[str] = mapped_column(String(100), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    base_url: Mapped[str] = mapped_column(String(2048))
    has_api_key: Mapped[bool] = mapped_column(default=False)
    #: Last four characters of the key, for the masked display ("sk-…abcd").
    api_key_hint: Mapped[str] = mapped_column(String(8), default="")
    is_default: Mapped[bool] = mapped_column(default=False)
    enabled: Mapped[bool] = mapped_column(default=True)
    #: OpenAI-compatible providers: the model ids offered in the chat picker (empty: every model the
    #: upstream lists at ``GET /v1/models``).
    model_allowlist: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")
    #: Ollama providers: the host group (API field ``group``). Providers of one group that hold the same
    #: model name serve it together as one model (routing, failover, health: services/routing.py).
    host_group: Mapped[str | None] = mapped_column(String(64), default=None, index=True)
    #: Within its group (API ``priority``, ``weight``): the smallest priority is tried first, and hosts
    #: of one priority share the requests in proportion to their weights.
    route_priority: Mapped[int] = mapped_column(default=0, server_default="0")
    route_weight: Mapped[float] = mapped_column(default=1.0, server_default="1")
