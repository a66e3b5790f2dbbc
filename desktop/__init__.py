"""ModelTrain desktop host: a Qt window over the embedded server (see ARCHITECTURE.md)."""
