"""TableStore keeps undo values in the changelog, not in memory, once their batch is committed."""

from __future__ import annotations

from typing import Any

from stream_processors.state import TableStore


class Table:
    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.changelog: list[tuple[bytes, bytes | None]] = []

    def send_changelog(self, partition: int, key: bytes, value: bytes | None) -> None:
        self.changelog.append((key, value))


def _undo_values(store: TableStore, records: Any) -> list[bytes]:
    out = []
    for raw, data in records:
        store.table.data[raw] = data  # read it through the store's own parser
        rec = store._record(raw)
        if rec is not None and rec[1] is not None:
            out.append(rec[1])
    return out


def test_committed_records_keep_no_undo_value_in_memory_but_the_changelog_does() -> None:
    table = Table()
    store = TableStore(table, 0)
    store.put("0|w|wf", b"x" * 3000)
    store.put("0|meta", b"m1")
    store.put("0|w|wf", b"small")  # replaces 3,000 bytes: the record carries them as its undo
    in_flight = dict(table.data)
    store.put("0|meta", b"m2")  # the commit
    assert len(in_flight[b"0|w|wf"]) > 3000, "before the commit the undo value is held"
    assert len(table.data[b"0|w|wf"]) < 100, "after it, memory holds only the new value"
    assert store.get("0|w|wf") == b"small"
    sent = [(k, v) for k, v in table.changelog if k == b"0|w|wf"]
    assert _undo_values(TableStore(Table(), 0), sent[-1:]) == [b"x" * 3000], (
        "the changelog record keeps its undo value for a restore"
    )


def test_a_restore_from_the_changelog_still_rolls_back_an_uncommitted_write() -> None:
    table = Table()
    store = TableStore(table, 0)
    store.put("0|w|wf", b"v1")
    store.put("0|meta", b"m1")
    store.put("0|w|wf", b"v2")  # the owner dies before writing meta
    restored = Table()
    for key, value in table.changelog:
        if value is None:
            restored.data.pop(key, None)
        else:
            restored.data[key] = value
    heir = TableStore(restored, 0)
    assert heir.get("0|w|wf") == b"v1"
