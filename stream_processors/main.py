"""Start a processor worker process from settings (entry point of ``lineage process``)."""

from __future__ import annotations

import logging

from lineage.config import Settings
from lineage.keys import KeyRegistry, Role, Signer, private_key_path
from lineage.policy import PolicySet
from stream_processors.app import build_app

PROCESSOR_SUBJECT = "lineage-processor"


def load_processor_signer(settings: Settings, registry: KeyRegistry) -> Signer:
    """The processor's checkpoint key from the data dir's keys folder."""
    keys_dir = settings.resolved_keys_file.parent
    path = private_key_path(keys_dir, PROCESSOR_SUBJECT, Role.PROCESSOR)
    from lineage.keys import key_id_for, load_private_key

    key = load_private_key(path)
    record = registry.get(key_id_for(key.public_key().public_bytes_raw()))
    if record is None:
        from lineage.errors import ConfigError

        raise ConfigError(
            f"processor key {path} is not in the registry {settings.resolved_keys_file}"
        )
    return Signer.from_file(path, record)


def run_worker(settings: Settings, *, worker_id: str, log_level: str = "WARNING") -> None:
    """Build the app and run a faust worker until stopped (SIGTERM/SIGINT)."""
    import faust

    registry = KeyRegistry.load(settings.resolved_keys_file)
    policy = PolicySet.load(settings.resolved_policy_file)
    signer = load_processor_signer(settings, registry)
    app = build_app(
        settings, str(settings.kafka_bootstrap), registry, policy, signer, worker_id=worker_id
    )
    logging.getLogger("lineage").setLevel(log_level)
    worker = faust.Worker(app, loglevel=log_level, quiet=True)
    worker.execute_from_commandline()
