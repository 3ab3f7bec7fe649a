"""Headless Chromium (Debian's package) driven by Playwright against a served console."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from tests.console.stack import ConsoleStack, Served, acquire_stack, release_stack, serve

ARTIFACTS = Path(os.environ.get("LINEAGE_ARTIFACTS", "artifacts")) / "browser"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
BIG_WORKFLOW_STEPS = 2_500
"""Four events a step: a 10,002-event workflow."""


@pytest.fixture(scope="session")
def browser_stack(
    chdb_client: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ConsoleStack, Served]]:
    st = acquire_stack(chdb_client, tmp_path_factory)
    served = serve(st.app)
    yield st, served
    served.stop()
    release_stack()


@dataclass
class Big:
    workflow_id: str
    events: int
    served: Served


@pytest.fixture(scope="session")
def big_workflow(
    browser_stack: tuple[ConsoleStack, Served], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Big]:
    """A 10,000-event workflow run through the real PartitionPipeline, in a database of its own.

    It does not go through the faust worker: the worker's per-workflow state record outgrows the
    producer's 1 MB request limit after a few thousand events of one workflow and the worker
    crashes (MessageSizeTooLargeError) - a processor limit, reported, not the console's.
    """
    from console.app import create_app
    from console.store import Store
    from sinks import rows, schema
    from tests.support.lineage_builder import build_dataset

    st, _ = browser_stack
    assert st.ctx is not None and st.store is not None
    ds = build_dataset(
        workflows=2,
        steps=2,
        partitions=2,
        seal_every=50,
        checkpoint_every=1000,
        long_workflow_steps=BIG_WORKFLOW_STEPS,
    )
    database = st.database + "_big"
    keys = tmp_path_factory.mktemp("big") / "registry.json"
    ds.registry.save(keys)
    with st.store.lock:
        schema.migrate(st.client, database)
        st.client.insert(
            "lineage_entries",
            [rows.entry_row(e) for e in ds.entries],
            column_names=list(rows.ENTRY_COLUMNS),
            database=database,
        )
        st.client.insert(
            "checkpoints",
            [rows.checkpoint_row(c) for c in ds.checkpoints],
            column_names=list(rows.CHECKPOINT_COLUMNS),
            database=database,
        )
    ctx = replace(
        st.ctx,
        settings=st.settings.model_copy(update={"keys_file": keys}),
        store=Store(st.client, database, st.store.lock),
    )
    served = serve(create_app(ctx))
    wid = max(set(ds.workflows), key=lambda w: sum(e.workflow_id == w for e in ds.entries))
    yield Big(wid, sum(e.workflow_id == wid for e in ds.entries), served)
    served.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail(
            "Debian's chromium is not installed (.ci/run installs it: apt-get install chromium)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    # bypass_csp: Playwright's wait_for_function evaluates strings, which the console's CSP
    # forbids. It also makes the escaping test stronger: nothing may execute even without CSP.
    context = browser.new_context(
        viewport={"width": 1400, "height": 900}, accept_downloads=True, bypass_csp=True
    )
    p = context.new_page()
    p.set_default_timeout(15_000)
    errors: list[str] = []
    dialogs: list[str] = []
    p.on("pageerror", lambda exc: errors.append(str(exc)))
    p.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    p.lineage_errors = errors
    p.lineage_dialogs = dialogs
    yield p
    context.close()
    assert not dialogs, f"a dialog opened (script executed?): {dialogs}"
    assert not errors, f"JavaScript errors on the page: {errors}"
