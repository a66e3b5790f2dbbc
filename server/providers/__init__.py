"""Outbound LLM adapters (no FastAPI imports): one streaming interface over Ollama and
OpenAI-compatible APIs."""
