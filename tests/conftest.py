"""Shared test helpers. The store / store_url fixtures come from storekit's pytest plugin."""
