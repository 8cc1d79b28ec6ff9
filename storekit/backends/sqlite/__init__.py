"""SQLite: the backend (connections, fair write lock, checkpoints) and its dialect."""
