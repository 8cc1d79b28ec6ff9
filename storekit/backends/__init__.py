"""Backends, imported lazily by storekit.database.BACKENDS."""
