"""Start a processor worker process from settings (entry point of ``lineage process``)."""

from __future__ import annotations

import logging

from lineage.config import Settings
from lineage.keys import KeyRegistry, Role, RotatingSigner, Signer, WatchedKeyRegistry
from lineage.policy import PolicySet
from stream_processors.app import build_app

PROCESSOR_SUBJECT = "lineage-processor"


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
    worker = faust.Worker(app, loglevel=log_level, quiet=True)
    worker.execute_from_commandline()
