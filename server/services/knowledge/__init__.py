"""Knowledge collections and retrieval (docs/knowledge.md): chunking, embedding through the provider
adapters, the vector and full-text indexes, indexing jobs, collections, and the chat's retrieval seam
(:func:`server.services.knowledge.retrieval.passages_for_chat`)."""
