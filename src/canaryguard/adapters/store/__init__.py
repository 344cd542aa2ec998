"""The SQL store adapter (SQLite by default, PostgreSQL for production and several replicas)."""

from canaryguard.adapters.store.database import SqlStore, SqlTransaction, normalise_url, open_store

__all__ = ["SqlStore", "SqlTransaction", "normalise_url", "open_store"]
