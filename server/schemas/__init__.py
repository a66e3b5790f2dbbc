"""Pydantic API models: XCreate, XUpdate, XRead, XPage per noun."""
