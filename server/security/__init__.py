"""Security primitives: password hashing, tokens, network guard, desktop token."""
