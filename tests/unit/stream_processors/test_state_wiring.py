"""The faust app recovers its state table up to fences in that table's own changelog."""

from __future__ import annotations

from typing import Any

from lineage.config import Settings
from stream_processors.app import ChangelogFence, build_app
from tests.support.events import checkpoint_signer, default_policy, registry_for


def test_table_recovery_ends_at_fences_in_the_state_table_changelog(tmp_path: Any) -> None:
    settings = Settings(data_dir=tmp_path)
    app = build_app(settings, "127.0.0.1:9", registry_for(), default_policy(), checkpoint_signer())
    changelog = app.tables["lineage-state"].changelog_topic.get_topic_name()
    recovery_end = app.transport_options.recovery_end
    fence = getattr(recovery_end, "__self__", None)
    assert isinstance(fence, ChangelogFence) and fence.topic == changelog, (
        f"expected table recovery to end at fences in {changelog}, found {recovery_end!r}"
    )
    assert settings.state_flush_s == 0.5, "state is written at most every 0.5 s by default"
