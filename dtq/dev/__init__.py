"""Local development support: PostgreSQL and Redis as supervised child processes."""

from dtq.dev.child import ServerError
from dtq.dev.servers import PostgresServer, RedisServer

__all__ = ["PostgresServer", "RedisServer", "ServerError"]
