"""Settings read once at entry points (``LINEAGE_`` environment prefix) and passed down as objects."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

TOPIC_NAMES = ("events", "chain", "violations", "checkpoints", "quarantine", "control")


class Topics:
    """Topic names under a prefix (tests use a unique prefix per test)."""

    def __init__(self, prefix: str = "lineage") -> None:
        self.prefix = prefix
        self.events = f"{prefix}.events"
        self.chain = f"{prefix}.chain"
        self.violations = f"{prefix}.violations"
        self.checkpoints = f"{prefix}.checkpoints"
        self.quarantine = f"{prefix}.quarantine"
        self.control = f"{prefix}.control"

    def all(self) -> list[str]:
        return [getattr(self, n) for n in TOPIC_NAMES]


class Settings(BaseSettings):
    """Every knob of the pipeline. Defaults run the embedded stack under ``data_dir``."""

    model_config = SettingsConfigDict(env_prefix="LINEAGE_", frozen=True, extra="ignore")

    data_dir: Path = Path(".lineage")
    kafka_bootstrap: str | None = Field(
        default=None, description="host:port list of a real cluster; unset = embedded broker"
    )
    clickhouse_url: str | None = Field(
        default=None, description="http(s)://user@host:port of a server; unset = chDB in data_dir"
    )
    clickhouse_password: SecretStr | None = None
    clickhouse_database: str = "lineage"
    topic_prefix: str = "lineage"
    partitions: int = 4
    processor_group: str = "lineage-processor"
    sink_group: str = "lineage-sink"
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 1000
    fetch_wait_ms: int = 50
    batch_wait_ms: int = 20
    state_flush_s: float = 0.5  # per partition; 0 writes state after every batch
    seal_every_events: int = 100
    seal_every_ms: int = 50
    checkpoint_every_s: float = 2.0
    policy_file: Path | None = None
    keys_file: Path | None = None
    production: bool = Field(
        default=False,
        description="this deployment claims to be production: file-backed keys are reported",
    )
    pkcs11_module: str | None = Field(default=None, description="PKCS#11 library (.so) path")
    pkcs11_pin: SecretStr | None = None
    pkcs11_pin_file: Path | None = Field(default=None, description="file holding the token PIN")
    trust_file: Path | None = None
    """A key registry an auditor trusts, used by ``lineage verify`` when --registry is not given."""
    reorder_max_events_per_workflow: int = 1000
    reorder_max_events_per_partition: int = 50_000
    reorder_max_bytes_per_partition: int = 64 * 1024 * 1024
    window_offsets: int = 20_000
    max_record_bytes: int = 256 * 1024
    max_attributes: int = 64
    max_attribute_bytes: int = 16 * 1024
    max_unsealed_per_emitter: int = 10_000
    sink_batch_rows: int = 5000
    sink_batch_ms: int = 100
    console_token: SecretStr | None = Field(
        default=None, description="operator token for the console's non-public pages and API"
    )
    metrics_port: int | None = Field(
        default=None, description="serve Prometheus /metrics on this port; unset = no endpoint"
    )
    metrics_addr: str = "127.0.0.1"

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)

    @property
    def embedded_broker(self) -> bool:
        return self.kafka_bootstrap is None

    @property
    def chdb_path(self) -> Path:
        return (self.data_dir / "clickhouse").resolve()

    @property
    def clickhouse_dsn(self) -> str:
        return self.clickhouse_url or f"chdb://{self.chdb_path}"

    @property
    def resolved_keys_file(self) -> Path:
        return self.keys_file or self.data_dir / "keys" / "registry.json"

    @property
    def resolved_policy_file(self) -> Path:
        return (
            self.policy_file or Path(__file__).resolve().parent.parent / "policies" / "default.toml"
        )
