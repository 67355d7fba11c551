from connectors.sqlite.store import SqliteStore

__all__ = ["SqliteStore"]
