"""Start a processor worker process from settings (entry point of ``lineage process``)."""

from __future__ import annotations

import logging
from typing import Any

from lineage.config import Settings
from lineage.keys import KeyRegistry, Role, RotatingSigner, Signer, WatchedKeyRegistry
from lineage.policy import PolicySet
from stream_processors.app import build_app

PROCESSOR_SUBJECT = "lineage-processor"
CHECKPOINT_BOUND_FACTOR = 10
"""lineage_checkpoint_age_bound_seconds = this many checkpoint intervals (the alert's threshold)."""


def load_processor_signer(settings: Settings, registry: KeyRegistry) -> Signer:
    """The processor's checkpoint signer: its registry keys, file or token, rotating as planned."""
    from lineage.pkcs11 import TokenConfig

    return RotatingSigner(
        PROCESSOR_SUBJECT,
        Role.PROCESSOR,
        settings.resolved_keys_file,
        settings.resolved_keys_file.parent,
        token=TokenConfig.from_settings(settings),
    )


def start_metrics(settings: Settings) -> Any | None:
    """Serve the processor's /metrics on LINEAGE_METRICS_PORT and feed it from the agent.

    Returns the server, or None when no port is configured (then nothing is counted either).
    """
    if settings.metrics_port is None:
        return None
    from infra.metrics import LineageMetrics, serve_metrics
    from stream_processors import metrics as processor_metrics

    metrics = LineageMetrics("processor")
    metrics.checkpoint_bound_s.set(settings.checkpoint_every_s * CHECKPOINT_BOUND_FACTOR)
    processor_metrics.install(metrics)
    return serve_metrics(settings, metrics)


def run_worker(settings: Settings, *, worker_id: str, log_level: str = "WARNING") -> None:
    """Build the app and run a faust worker until stopped (SIGTERM/SIGINT)."""
    import faust

    registry = WatchedKeyRegistry(settings.resolved_keys_file)  # rotations apply without restart
    policy = PolicySet.load(settings.resolved_policy_file)
    signer = load_processor_signer(settings, registry)
    app = build_app(
        settings, str(settings.kafka_bootstrap), registry, policy, signer, worker_id=worker_id
    )
    logging.getLogger("lineage").setLevel(log_level)
    start_metrics(settings)
    worker = faust.Worker(app, loglevel=log_level, quiet=True)
    worker.execute_from_commandline()
