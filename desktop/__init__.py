"""ModelTrain desktop host: a Qt window over the embedded server (see docs/architecture.md)."""
