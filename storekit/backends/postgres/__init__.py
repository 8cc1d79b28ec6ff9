"""PostgreSQL: the backend (psycopg_pool, session reset, scope keys) and its dialect."""
