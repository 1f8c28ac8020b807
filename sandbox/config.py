"""Settings: the only reader of SLUICE_* environment variables (see docs/configuration.md)."""

from __future__ import annotations

from decimal import Decimal
from functools import cached_property
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every SLUICE_* variable. Domain code receives these values as arguments, never reads the environment."""

    model_config = SettingsConfigDict(env_prefix="SLUICE_", extra="ignore")

    home: Path = Field(Path(".sluice"), description="State folder: database, keys, data, results.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL of the control store; default SQLite at HOME/sluice.db."
    )
    import_root: Path | None = Field(
        None, description="Server-side files may be registered only from under this folder; unset disables it."
    )
    public_url: str = Field(
        "http://127.0.0.1:8000", description="Public base URL, used in certificate QR codes and links."
    )
    host: str = Field("127.0.0.1", description="Address `sluice serve` binds to.")
    port: int = Field(8000, description="Port `sluice serve` binds to.")
    url: str | None = Field(
        None, description="CLI only: base URL of a running server; unset runs the API in-process."
    )
    api_key: str | None = Field(None, description="CLI only: the API key the CLI acts with.")
    auth_cache_seconds: float = Field(
        2.0, description="How long a verified API key is trusted without a store query; revocation in another "
        "process takes effect within this time. 0 disables the cache."
    )
    max_upload_bytes: int = Field(2 * 1024**3, description="Largest accepted dataset file, in bytes.")
    key_ttl_days: int | None = Field(
        None, description="Default lifetime of new API keys in days; unset means keys do not expire."
    )
    run_memory_limit_mb: int = Field(1024, description="DuckDB memory_limit for one run, in MiB.")
    run_threads: int = Field(2, description="DuckDB threads per worker.")
    run_timeout_ms: int = Field(30_000, description="max_execution_time and watchdog for one run, in ms.")
    workers: int = Field(2, description="Number of long-lived sandbox worker processes.")
    worker_address_space_mb: int = Field(
        6144, description="RLIMIT_AS of each worker process, in MiB; a memory bomb kills one worker."
    )
    spark_remote: str | None = Field(
        None, description="Spark Connect URL (sc://host:15002/;token=...) for grants on the spark engine; unset runs "
        "Spark in local mode inside the API process. Needs the optional extra sluice[spark]. See docs/engines.md."
    )
    spark_master: str = Field(
        "local[2]", description="Spark master in local mode (when SPARK_REMOTE is unset), e.g. local[4]."
    )
    dominance_rule: str = Field(
        "p_percent", pattern="^(p_percent|nk)$",
        description="Dominance rule on per-entity contributions to a protected column: p_percent or nk."
    )
    dominance_p: float = Field(
        10.0, ge=0, description="p% rule: a cell is suppressed when total - x1 - x2 < p/100 * x1 (x1, x2 the two "
        "largest absolute contributions)."
    )
    dominance_n: int = Field(2, ge=1, le=2, description="(n, k) rule: how many of the largest contributions (1 or 2).")
    dominance_k_percent: float = Field(
        85.0, gt=0, le=100, description="(n, k) rule: a cell is suppressed when the n largest contributions exceed "
        "this percentage of the total."
    )
    audit_budget: int = Field(
        2_000_000, description="Work units the release audit may spend on one run; cells past it are suppressed "
        "with audit_budget_exceeded."
    )
    audit_strict: bool = Field(
        False, description="Release audit: refuse a cell whose exact search for a small determined set reaches its "
        "bound (difference_audit), instead of releasing it unproven (counted per ledger, Ledger.unproven)."
    )
    max_request_bytes: int = Field(
        1024 * 1024, description="Largest request body other than a dataset upload, in bytes (413 beyond)."
    )
    log_origin: str | None = Field(
        None, description="Origin line of the audit log's checkpoints (C2SP); default: PUBLIC_URL's host and "
        "path + /audit-log."
    )
    checkpoint_interval_seconds: float = Field(
        60.0, description="`sluice serve` signs a checkpoint this often when the audit log grew; 0 turns the "
        "schedule off (checkpoints are then made on demand and at period closes only)."
    )
    log_integrate_interval_ms: int = Field(
        500, description="How often `sluice serve` sequences committed audit records into the Merkle log."
    )
    unauthenticated_rate_per_minute: int = Field(
        120, description="Requests per minute one client address may make without a valid API key (public "
        "routes and failed authentication); 0 disables the limit. Limiting is itself audited."
    )
    unauthenticated_burst: int = Field(
        60, description="How many unauthenticated requests one client address may make at once."
    )
    registration_notice_seconds: int = Field(
        14 * 86400, ge=0, description="Length of a registration's public notice (公示), in seconds; default 14 days "
        "(10 working days). See docs/registration.md."
    )
    quality_report_deadline_days: int = Field(
        10, ge=1, description="Days a provider has to answer a quality report before it is flagged to the agency "
        "as overdue."
    )
    metrics_enabled: bool = Field(True, description="Serve Prometheus metrics at /metrics.")
    processes: int = Field(
        1, ge=1, description="API processes of `sluice serve` on one control store (PostgreSQL only above 1; SQLite "
        "is refused). Above 1, Prometheus metrics use multi-process mode (PROMETHEUS_MULTIPROC_DIR, default "
        "HOME/metrics). Each process has its own SLUICE_WORKERS sandbox workers."
    )
    db_pool_size: int = Field(
        12, ge=1, description="Control-store connections per API process for requests: at most this many requests "
        "use the store at once in one process, the others wait without holding a connection; the pool may grow by "
        "as many again plus 8 for run-start records, release locks and the audit sequencer."
    )
    prices_include_vat: bool = Field(
        True, description="Whether every price, cap, maximum allowed revenue and bill amount includes VAT; schedules "
        "record it and one convention holds everywhere."
    )
    vat_rate: Decimal = Field(Decimal("0.06"), description="VAT rate stated on bills (6% for modern services).")
    billing_timezone: str = Field(
        "Asia/Shanghai", description="Time zone of billing periods: a bill for 2026-11 covers November in this zone."
    )
    console_allow_http: bool = Field(
        False, description="Send the console's session cookie without `Secure`, so plain HTTP on localhost works "
        "(tests, local demos); never in production."
    )
    console_session_minutes: int = Field(480, description="How long a console sign-in lasts (minutes).")
    console_checkpoint_key: str | None = Field(
        None, description="The audit log's checkpoint verifier key (C2SP, `origin+hash+key`) the console pins for "
        "in-browser verification; default: this home's checkpoint keys, read when the server starts."
    )
    test_database_url: str | None = Field(
        None, description="Tests only: a PostgreSQL URL; store tests then also run against it."
    )

    @cached_property
    def resolved_home(self) -> Path:
        """HOME as an absolute path."""
        return self.home.expanduser().resolve()

    @property
    def resolved_database_url(self) -> str:
        """The control store URL, defaulting to SQLite inside HOME."""
        return self.database_url or f"sqlite:///{self.resolved_home / 'sluice.db'}"

    @property
    def resolved_log_origin(self) -> str:
        """The audit log's origin: LOG_ORIGIN, or PUBLIC_URL without its scheme + /audit-log."""
        if self.log_origin:
            return self.log_origin
        from urllib.parse import urlsplit

        url = urlsplit(self.public_url)
        return f"{url.netloc}{url.path.rstrip('/')}/audit-log"

    @property
    def data_dir(self) -> Path:
        return self.resolved_home / "data"

    @property
    def keys_dir(self) -> Path:
        return self.resolved_home / "keys"


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment, with explicit overrides winning."""
    return Settings(**overrides)  # type: ignore[arg-type]
