"""The OpenAI-compatible API (``/v1``): thin routes over services/gateway*.py, authenticated by API keys
(server/api/v1_auth.py), errors in OpenAI's shape (errors.py)."""
