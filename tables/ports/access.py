"""The access port: utilities and their API keys. Adapters: SQLite, PostgreSQL."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from schemas.access import ApiKeyRecord, Utility


class AccessStore(Protocol):
    """Utilities and their API keys (``schemas/access.py``)."""

    async def upsert_utility(self, utility: Utility) -> None: ...

    async def utilities(self) -> list[Utility]: ...

    async def utility(self, utility_id: str) -> Utility | None: ...

    async def add_api_key(self, record: ApiKeyRecord) -> None: ...

    async def api_key(self, key_id: str) -> ApiKeyRecord | None: ...

    async def revoke_api_key(self, key_id: str, *, at: datetime) -> bool:
        """Whether a key that was active is now revoked."""
        ...
