"""bench: the harness that measures SQLite and PostgreSQL under concurrent agents."""
