"""The one typed settings object, read from `DTQ_` environment variables.

Built once at process start (`Settings()`), then passed down; no other module
reads the environment. Tests build `Settings(...)` directly.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import quote

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from dtq.domain.validation import MAX_LEASE, MIN_LEASE

MIB = 1024 * 1024
CLUSTER_SCHEME = "redis+cluster"


class Settings(BaseSettings):
    """Configuration of every dtq process. Each field is `DTQ_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix="DTQ_", extra="ignore", frozen=True)

    # PostgreSQL: the URL wins; otherwise it is built from the seed's parts.
    database_url: str | None = None
    database_host: str = "localhost"
    database_port: int = 5432
    database_name: str = "dtq"
    database_user: str = "dtq_user"
    database_password: str = "dtq_password"
    database_pool_size: int = Field(default=8, ge=1, le=200)
    # A PostgreSQL call that takes longer fails with UNAVAILABLE (seconds).
    database_timeout: float = Field(default=5.0, gt=0)

    # Redis: the URL wins; otherwise it is built from the parts. A Redis
    # Cluster: `redis+cluster://host:port,host:port,...` (any nodes, as seeds;
    # the client finds the rest), or `redis_cluster` with a plain URL or parts.
    redis_url: str | None = None
    redis_cluster: bool = False
    redis_host: str = "localhost"
    redis_port: int = 6379
    redis_password: str = ""
    redis_db: int = 0
    redis_timeout: float = Field(default=2.0, gt=0)

    # The gRPC API server.
    server_host: str = "127.0.0.1"
    server_port: int = 50051
    # Where clients (CLI, workers) reach the API: host:port.
    server_address: str = "127.0.0.1:50051"
    # Server processes `dtq server` starts on the port (SO_REUSEPORT); about
    # one per core. `server_reuseport` is set for them: leave it off.
    server_processes: int = Field(default=1, ge=1, le=64)
    server_reuseport: bool = False
    # Seconds a stopping server gives open streams and calls to finish.
    server_grace: float = Field(default=10.0, ge=0)

    # Authentication: "on" checks every call's `authorization: Bearer` (an API
    # key from `dtq apikey create`, or a JWT when `auth_jwks` is set) against
    # the role rules; "off" (every caller an admin) only while the server
    # listens on loopback.
    auth: Literal["off", "on"] = "off"
    # Seconds a server trusts what it read of an API key: a revoked key stops
    # working everywhere within this.
    auth_cache_seconds: float = Field(default=4.0, ge=0, le=60)
    # JWT bearer tokens: a JWKS file or URL of the issuer's keys (HS256, RS256,
    # ES256, EdDSA), the issuer and audience to require, and the claims that
    # hold the role, the subject and the queues the token is limited to.
    auth_jwks: str = ""
    auth_issuer: str = ""
    auth_audience: str = ""
    auth_role_claim: str = "role"
    auth_subject_claim: str = "sub"
    auth_queues_claim: str = "dtq_queues"
    # The JWT claim naming the caller's tenant; a token without it is in
    # `default`; `*` (every tenant) is honoured for admins only.
    auth_tenant_claim: str = "tenant"
    # Clients (CLI, dtq.Client) with an operator credential (tenant `*`) act in
    # this tenant: sent as `x-dtq-tenant` on every call. Empty: `default`.
    tenant: str = ""
    auth_leeway: float = Field(default=30.0, ge=0, le=300)
    # TLS. The server: its certificate and key (PEM files), and a CA whose
    # client certificates it then requires (mTLS). Clients (workers, CLI,
    # dtq.Client): the CA that signed the server's certificate, and their own
    # certificate and key (DTQ_TLS_CERT/DTQ_TLS_KEY) when the server asks.
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    tls_ca: str = ""

    # The credential clients (CLI, workers, dtq.Client) send.
    api_key: SecretStr | None = None

    # /metrics, /health and /ready. Port default depends on the process:
    # server 9090, worker 9091, queue manager 9092; a taken default gives way
    # to the next free port, a taken port set here is an error. 0 disables.
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None
    # Distinct queue and task type names a process exports as metric labels;
    # the names seen after these many are counted under `_other`.
    metrics_max_queues: int = Field(default=200, ge=1, le=100_000)
    metrics_max_types: int = Field(default=200, ge=1, le=100_000)
    metrics_max_tenants: int = Field(default=100, ge=1, le=100_000)
    # Queues there may be (TOO_MANY_QUEUES past it; `dtq queue delete` frees).
    max_queues: int = Field(default=1000, ge=1, le=1_000_000)
    # Workers seen in the last 10 minutes there may be (TOO_MANY_WORKERS past it).
    max_workers: int = Field(default=10_000, ge=1, le=1_000_000)

    # Quotas and rate limits (`dtq tenant set-limits`, `dtq rate set`). With
    # Redis unreachable the submit rate lets submissions through ("open": they
    # are stored in PostgreSQL and dispatched once Redis is back) or refuses
    # them with UNAVAILABLE ("closed"). Servers re-read the limits every
    # `limits_refresh` seconds, and a tenant's queued count (for its cap) every
    # `queued_count_refresh` seconds.
    rate_limit_failure: Literal["open", "closed"] = "open"
    limits_refresh: float = Field(default=2.0, gt=0, le=60)
    queued_count_refresh: float = Field(default=1.0, gt=0, le=60)

    # Task defaults and limits.
    max_payload_bytes: int = Field(default=MIB, ge=1024)
    # Open WatchTask streams one caller (API key, token; everyone when
    # authentication is off) may hold on one server.
    max_watches_per_caller: int = Field(default=100, ge=1, le=100_000)
    default_timeout: float = Field(default=300.0, ge=1)
    lease_duration: float = Field(default=30.0, ge=MIN_LEASE, le=MAX_LEASE)
    # Each step of priority is a head start of this many seconds (aging).
    priority_aging_seconds: float = Field(default=60.0, ge=0)

    # Workers (names from the seed).
    worker_concurrency: int = Field(default=4, ge=1, le=10_000)
    # Leases a worker holds beyond its concurrency, ready to start the moment a
    # slot frees (short tasks go faster; keep 0 for long tasks).
    worker_prefetch: int = Field(default=0, ge=0, le=10_000)
    worker_queues: Annotated[list[str], NoDecode] = ["default"]
    worker_max_retries: int = Field(default=3, ge=0, le=100)
    worker_retry_backoff_base: float = Field(default=2.0, gt=0)
    worker_max_retry_backoff: float = Field(default=300.0, ge=0)
    # Seconds between the dispatcher's safety sweeps for work a lost
    # notification left behind. The hot path is pushed, never polled.
    worker_poll_interval: float = Field(default=1.0, gt=0)
    # Seconds a worker stopping on SIGTERM lets running tasks finish; then it
    # interrupts them and hands their leases back.
    worker_shutdown_grace: float = Field(default=30.0, ge=0)
    # Where handlers run: "thread" (this process; a sync handler is stopped by
    # an exception raised in its thread) or "process" (a child process per
    # slot, killed on timeout or cancellation: the hard guarantee).
    worker_pool: Literal["thread", "process"] = "thread"

    # Seconds between full checks that Redis agrees with PostgreSQL (the
    # reconciler also runs at once when Redis lost its data or comes back).
    reconcile_interval: float = Field(default=300.0, gt=0)

    # Retention: COMPLETED and CANCELLED tasks are deleted this many seconds
    # after they finished (default 7 days; 0 keeps them forever). Dead letters
    # are never deleted by retention. The manager checks every
    # `retention_interval` seconds.
    retention_completed: float = Field(default=7 * 24 * 3600.0, ge=0)
    retention_interval: float = Field(default=60.0, gt=0)

    # Seconds between refreshes of the queue gauges (depth, oldest age) the
    # manager exports.
    observe_interval: float = Field(default=5.0, gt=0)

    # Recurring schedules: a fire time more than this many seconds late (no
    # manager ran) counts as missed, and the schedule's catch-up policy decides
    # whether it still fires; fire times less late always fire.
    schedule_grace: float = Field(default=10.0, ge=0)

    log_level: str = "INFO"
    log_format: Literal["auto", "json", "text"] = "auto"

    @field_validator("worker_queues", mode="before")
    @classmethod
    def _split_queues(cls, value: object) -> object:
        if isinstance(value, str):
            return [q.strip() for q in value.split(",") if q.strip()]
        return value

    @property
    def database_dsn(self) -> str:
        """SQLAlchemy URL for psycopg2."""
        if self.database_url:
            url = self.database_url
            for prefix in ("postgres://", "postgresql://"):
                if url.startswith(prefix):
                    return "postgresql+psycopg2://" + url[len(prefix) :]
            return url
        auth = quote(self.database_user, safe="")
        if self.database_password:
            auth += ":" + quote(self.database_password, safe="")
        return (
            f"postgresql+psycopg2://{auth}@{self.database_host}:{self.database_port}"
            f"/{self.database_name}"
        )

    @property
    def redis_dsn(self) -> str:
        """redis:// URL, or redis+cluster:// (seed nodes) for a Redis Cluster."""
        if self.redis_url:
            url = self.redis_url
        else:
            auth = f":{quote(self.redis_password, safe='')}@" if self.redis_password else ""
            url = f"redis://{auth}{self.redis_host}:{self.redis_port}/{self.redis_db}"
        if self.redis_cluster and url.startswith("redis://"):
            url = CLUSTER_SCHEME + re.sub(r"/\d*$", "", url[len("redis") :])  # no db in a cluster
        return url

    @property
    def heartbeat_interval(self) -> float:
        """Workers heartbeat three times per lease."""
        return self.lease_duration / 3

    def metrics_port_for(self, process: Literal["server", "worker", "manager"]) -> int:
        """This process's /metrics port: the setting, or the seed's default
        (which, when taken, gives way to the next free port: `dtq.listen`)."""
        if self.metrics_port is not None:
            return self.metrics_port
        return {"server": 9090, "worker": 9091, "manager": 9092}[process]

    @property
    def metrics_port_explicit(self) -> bool:
        """Whether the metrics port was given (and so must be free)."""
        return self.metrics_port is not None
