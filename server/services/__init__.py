"""Services hold the logic. They take a Session (and settings) and raise DomainError; no HTTP here."""
