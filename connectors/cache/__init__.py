"""Cache adapters: in-process for the embedded default, Redis for production."""

from connectors.cache.memory import MemoryCache
from connectors.cache.redis import RedisCache

__all__ = ["MemoryCache", "RedisCache"]
