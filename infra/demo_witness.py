"""The demo's witness: ``lineage witness serve`` in its own directory, fed from the sink's process."""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

from infra.embedded import Stack, child_env, free_port, spawn, wait_port
from lineage import note
from lineage.config import Settings
from lineage.keys import KeyRegistry
from lineage.verify import Report, checkpoint_vkeys
from lineage.verify.witnessing import WITNESS_POLICY, WITNESS_REGISTRY
from lineage.witness import LogSpec, WitnessStore, parse_trusted_document
from lineage.witnessed import WitnessFindings, WitnessPolicy, check_store
from lineage_cli.witness import apply_store_findings
from sinks.witness_feeder import WitnessFeeder, stored_logs, stored_root

WITNESS_NAME = "witness.lineage.local/demo"
ORIGIN_PREFIX = "lineage.local/"
TOKEN_OBJECT = "lineage-witness"
"""The label of the demo witness's key pair in the token, with ``--keys pkcs11``."""


def token_key_uri(token: str) -> str:
    """The RFC 7512 URI of the demo witness's key in the token labelled ``token``."""
    return f"pkcs11:token={quote(token, safe='')};object={TOKEN_OBJECT}"


class DemoWitness:
    """A witness subprocess (state outside ClickHouse) and the feeder thread that submits to it.

    Its key is a file in its directory, or (``keys="pkcs11"``) a key pair in the token labelled
    ``token``, opened by the subprocess with the PIN from the LINEAGE_PKCS11_* settings.
    """

    def __init__(
        self,
        stack: Stack,
        settings: Settings,
        client: Any,
        lock: threading.Lock,
        *,
        keys: str = "file",
        token: str = "lineage-demo",
    ) -> None:
        self.settings = settings
        self.dir = settings.data_dir / "witness"
        self.retired_key: Path | None = None
        # The demo's logs restart empty on every run, as its broker and chDB do; the witness's
        # view of them restarts too (a kept state would rightly refuse the new logs as
        # rollbacks). Its key is kept, so auditors' --witness-key stays valid across runs.
        for sub in ("state", "refusals"):
            shutil.rmtree(self.dir / sub, ignore_errors=True)
        registry = KeyRegistry.load(settings.resolved_keys_file)
        store = WitnessStore(self.dir)
        logs = [LogSpec(ORIGIN_PREFIX, tuple(checkpoint_vkeys(registry)), prefix=True)]
        if keys == "pkcs11":
            from lineage.pkcs11 import TokenConfig

            self.retired_key = self._retire_file_key(store)
            config = store.init(
                WITNESS_NAME,
                logs,
                key_uri=token_key_uri(token),
                token=TokenConfig.from_settings(settings),
            )
        else:
            config = store.init(WITNESS_NAME, logs)
        self.vkey = store.vkey(config)
        self.key_location = config.key_uri or str(store.key_path)
        port = free_port()
        log = settings.data_dir / "logs" / "witness.log"
        args = ["witness", "serve", "--witness-dir", str(self.dir), "--port", str(port)]
        stack.add(spawn([sys.executable, "-m", "lineage_cli", *args], log, env=child_env(settings)))
        wait_port(port)
        self.url = f"http://127.0.0.1:{port}"
        self.feeder = WitnessFeeder(
            client, lock, settings.clickhouse_database, self.url, self.vkey
        ).start()

    @staticmethod
    def _retire_file_key(store: WitnessStore) -> Path | None:
        """Move a file key left by an earlier ``--keys file`` run aside, as the other demo keys
        move to the token: the witness then has a new identity (and a new --witness-key)."""
        if not store.key_path.exists() or (
            store.config_path.exists() and store.load_config().key_uri is not None
        ):
            return None
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        retired = store.key_path.with_name(f"{store.key_path.name}.retired-{stamp}")
        os.replace(store.key_path, retired)
        return retired

    def close(self) -> None:
        """Stop feeding (the subprocess stops with the stack)."""
        self.feeder.close()

    def wait(self, client: Any, lock: threading.Lock, timeout: float = 30.0) -> bool:
        """Wait until the witness cosigned every partition's newest stored checkpoint."""
        db = self.settings.clickhouse_database
        with lock:
            rows = client.query(
                f"SELECT origin, max(tree_size) FROM {db}.checkpoints FINAL GROUP BY origin"
            ).result_rows
        return self.feeder.wait_cosigned({str(o): int(s) for o, s in rows}, timeout)

    def policy(self) -> WitnessPolicy:
        """The auditor's policy: this witness, one cosignature required."""
        return WitnessPolicy.from_vkeys([self.vkey], 1, int(time.time()))

    def bundle_options(self, registry: KeyRegistry) -> dict[str, Any]:
        """``verify_bundle`` options of ``lineage verify FILE --witness-key <this witness>``."""
        return {WITNESS_POLICY: self.policy(), WITNESS_REGISTRY: registry}

    def check_store(
        self, report: Report, client: Any, lock: threading.Lock, registry: KeyRegistry
    ) -> WitnessFindings:
        """``lineage verify --clickhouse --witness-url <url> --witness-key <this witness>``."""
        with urllib.request.urlopen(self.url + "/checkpoints", timeout=10) as resp:
            notes = parse_trusted_document(json.loads(resp.read()), self.url)
        db = self.settings.clickhouse_database
        with lock:
            findings = check_store(
                report,
                notes,
                [note.parse_verifier_key(k) for k in checkpoint_vkeys(registry)],
                stored_logs(client, db),
                lambda p, n: stored_root(client, db, p, n),
                policy=self.policy(),
                registry=registry,
                now=int(time.time()),
            )
        apply_store_findings(report, findings, f"witness {self.url}", self.policy())
        return findings
