"""Embeddings through the provider adapters (Ollama ``/api/embed``, OpenAI-compatible ``/v1/embeddings``),
in batches, as little-endian float32 vectors normalised to unit length (cosine = dot product)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from anyio import to_thread

from server.db.session import session_scope
from server.errors import InvalidInput, UpstreamError
from server.providers.base import ProviderError
from server.runtime import Runtime
from server.services import models as models_service


@dataclass
class EmbedTimer:
    """Seconds spent waiting for the embedding model (the bench reports it apart from indexing)."""

    seconds: float = 0.0


def _resolve(runtime: Runtime, model_id: str, user_id: uuid.UUID | None) -> models_service.ResolvedModel:
    with session_scope(runtime.session_factory) as session:
        return models_service.resolve_model(session, runtime, model_id, user_id=user_id)


async def embed_texts(
    runtime: Runtime,
    model_id: str,
    texts: Sequence[str],
    *,
    user_id: uuid.UUID | None,
    timer: EmbedTimer | None = None,
) -> np.ndarray:
    """One unit-length float32 row per text. A model without embeddings or an upstream failure -> a
    DomainError (never a 500)."""
    resolved = await to_thread.run_sync(_resolve, runtime, model_id, user_id)
    embed = getattr(resolved.adapter, "embed", None)
    if embed is None:
        raise InvalidInput("this model's provider cannot compute embeddings", code="model_not_embedding")
    began = time.perf_counter()
    try:
        vectors, _tokens = await embed(
            resolved.upstream_model, list(texts), runtime.settings.chat_first_token_timeout
        )
    except ProviderError as exc:
        raise UpstreamError(f"the embedding model failed: {exc.code}", code="embedding_failed") from None
    finally:
        if timer is not None:
            timer.seconds += time.perf_counter() - began
    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[0] != len(texts) or matrix.shape[1] == 0:
        raise UpstreamError("the embedding model sent malformed vectors", code="embedding_failed")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return matrix / norms


def to_blob(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def from_blob(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f4")
