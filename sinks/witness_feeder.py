"""Witness feeder: submit each new processor checkpoint to a witness, keep the cosignatures.

Runs in the process that owns ClickHouse (chDB allows one process per data directory). For every
partition log it keeps all perfect subtree hashes in memory (64 bytes per entry), read once from
``lineage_entries`` and then incrementally, so it can prove consistency from whatever size the
witness last cosigned (c2sp.org/tlog-witness add-checkpoint). Cosignature lines go to the
``witness_cosignatures`` table, from which ``lineage export`` adds them to the bundle's notes.
Also here: the store reads ``verify --clickhouse --trusted-checkpoints`` needs.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lineage import merkle, note
from lineage.witness import (
    SIZE_CONTENT_TYPE,
    WitnessError,
    format_add_checkpoint,
    parse_cosigner_vkey,
    split_note,
    verify_cosignatures,
)
from lineage.witnessed import StoredCosignature, StoredLog
from sinks.schema import quote_database

log = logging.getLogger("lineage.witness_feeder")

COSIGNATURE_COLUMNS = (
    "origin",
    "partition",
    "tree_size",
    "root_hash",
    "witness",
    "cosigned_at",
    "line",
)


class LogTree:
    """Every perfect, aligned subtree hash of a growing RFC 6962 log, for proofs at any size.

    ``levels[k]`` holds the completed subtrees of 2**k leaves, 32 bytes each, left to right.
    """

    def __init__(self) -> None:
        self.levels: list[bytearray] = [bytearray()]

    @property
    def size(self) -> int:
        """Number of leaves."""
        return len(self.levels[0]) // 32

    def _node(self, k: int, i: int) -> bytes:
        return bytes(self.levels[k][32 * i : 32 * i + 32])

    def append(self, leaf_hash: bytes) -> None:
        """Append a leaf given its hash SHA-256(0x00 ‖ data)."""
        if len(leaf_hash) != 32:
            raise ValueError(f"leaf hash: expected 32 bytes, found {len(leaf_hash)}")
        self.levels[0] += leaf_hash
        k = 0
        while len(self.levels[k]) // 32 % 2 == 0:
            n = len(self.levels[k]) // 32
            parent = merkle.node_hash(self._node(k, n - 2), self._node(k, n - 1))
            if len(self.levels) == k + 1:
                self.levels.append(bytearray())
            self.levels[k + 1] += parent
            k += 1

    def subtree(self, lo: int, hi: int) -> bytes:
        """MTH of leaves [lo, hi), hi > lo."""
        n = hi - lo
        if n & (n - 1) == 0 and lo % n == 0:
            k = n.bit_length() - 1
            return self._node(k, lo >> k)
        k = 1 << ((n - 1).bit_length() - 1)
        return merkle.node_hash(self.subtree(lo, lo + k), self.subtree(lo + k, hi))

    def root(self, size: int) -> bytes:
        """The root at ``size`` (<= the current size)."""
        if not 0 <= size <= self.size:
            raise ValueError(f"size: expected 0..{self.size}, found {size}")
        return self.subtree(0, size) if size else merkle.EMPTY_ROOT

    def consistency(self, old: int, new: int) -> list[bytes]:
        """RFC 9162 PROOF(old, D[new]); empty when old is 0 or equal to new."""
        if not 0 <= old <= new <= self.size:
            raise ValueError(f"sizes: expected 0 <= {old} <= {new} <= {self.size}")
        if old in (0, new):
            return []
        return merkle.consistency_nodes(old, new, self.subtree)


@dataclass(frozen=True, slots=True)
class Answer:
    """A witness's HTTP answer."""

    status: int
    body: bytes
    content_type: str


def post_add_checkpoint(url: str, body: bytes, timeout: float = 10.0) -> Answer:
    """POST ``body`` to ``<url>/add-checkpoint``; HTTP errors are answers, not exceptions."""
    req = urllib.request.Request(
        url.rstrip("/") + "/add-checkpoint",
        data=body,
        method="POST",
        headers={"Content-Type": "text/plain"},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return Answer(resp.status, resp.read(), resp.headers.get("Content-Type", ""))
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, exc.read(), exc.headers.get("Content-Type", ""))


@dataclass
class FeederStats:
    """Counters an operator can read."""

    submitted: int = 0
    cosigned: int = 0
    conflicts: int = 0
    refused: int = 0
    last_error: str = ""
    cosigned_size: dict[str, int] = field(default_factory=dict)


class WitnessFeeder:
    """Submits the newest checkpoint of every partition log to one witness and keeps its answers."""

    def __init__(
        self,
        client: Any,
        lock: threading.Lock,
        database: str,
        witness_url: str,
        witness_vkey: str,
        *,
        post: Callable[[str, bytes], Answer] = post_add_checkpoint,
        interval_s: float = 0.5,
    ) -> None:
        self.client = client
        self.lock = lock
        self.database = database
        self.db = quote_database(database)
        self.url = witness_url
        self.witness_vkey = witness_vkey
        self.witness = parse_cosigner_vkey(witness_vkey)
        self.post = post
        self.interval_s = interval_s
        self.trees: dict[int, LogTree] = {}
        self.witness_size: dict[str, int] = {}
        self.stats = FeederStats()
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None

    def _error(self, message: str) -> None:
        if message != self.stats.last_error:
            log.warning("%s", message)
        self.stats.last_error = message

    def _newest_checkpoints(self) -> list[tuple[str, int, int, bytes, str]]:
        # No FINAL: duplicates of a checkpoint row are identical, and max() ignores them.
        sql = (
            f"SELECT partition, note FROM {self.db}.checkpoints "
            f"WHERE (partition, tree_size) IN (SELECT partition, max(tree_size) "
            f"FROM {self.db}.checkpoints GROUP BY partition) ORDER BY partition LIMIT 1 BY partition"
        )
        with self.lock:
            rows = self.client.query(sql).result_rows
        out = []
        for p, signed in rows:
            try:
                cp = note.parse_checkpoint(split_note(str(signed))[0])
            except (WitnessError, note.NoteError) as exc:
                self._error(f"stored checkpoint of partition {p} is not a signed checkpoint: {exc}")
                continue
            out.append((cp.origin, int(p), cp.size, cp.root_hash, str(signed)))
        return out

    def _extend(self, wanted: dict[int, int]) -> None:
        """Append the stored leaves each partition's tree lacks up to ``wanted[partition]``.

        One query per round for all partitions, without FINAL (a FINAL scan of lineage_entries
        under the sink's lock would stall inserts): redelivered rows are identical and are
        collapsed here; two different hashes at one position stop that partition's tree.
        """
        ranges = {p: (self.trees.setdefault(p, LogTree()).size, n) for p, n in wanted.items()}
        ranges = {p: r for p, r in ranges.items() if r[0] < r[1]}
        if not ranges:
            return
        where = " OR ".join(
            f"(source_partition = {int(p)} AND log_index >= {int(lo)} AND log_index < {int(hi)})"
            for p, (lo, hi) in sorted(ranges.items())
        )
        sql = (
            f"SELECT source_partition, log_index, entry_hash FROM {self.db}.lineage_entries "
            f"WHERE {where}"
        )
        with self.lock:
            rows = self.client.query(sql).result_rows
        found: dict[int, dict[int, bytes]] = {p: {} for p in ranges}
        bad: set[int] = set()
        for p, index, entry_hash in rows:
            seen = found[int(p)].setdefault(int(index), bytes(entry_hash))
            if seen != bytes(entry_hash):
                bad.add(int(p))
                self._error(f"partition {p} log index {index}: two stored entry hashes")
        for p, leaves in found.items():
            tree = self.trees[p]
            while p not in bad and tree.size in leaves:
                tree.append(merkle.leaf_hash(leaves[tree.size]))

    def _tree(self, partition: int, size: int) -> LogTree | None:
        """The partition's tree if it has at least ``size`` leaves (else the store lacks them)."""
        tree = self.trees.get(partition)
        return tree if tree is not None and tree.size >= size else None

    def _store(
        self, origin: str, partition: int, size: int, root: bytes, signed: str, lines: str
    ) -> int:
        try:
            _, cosigs = verify_cosignatures(signed + lines, [self.witness])
        except (WitnessError, note.NoteError) as exc:
            self._error(f"witness answer for {origin} size {size}: {exc}")
            return 0
        if not cosigs:
            self._error(f"witness answer for {origin} size {size} holds no cosignature of its key")
            return 0
        rows = [(origin, partition, size, root, c.signer, c.timestamp, c.line()) for c in cosigs]
        with self.lock:
            self.client.insert(
                "witness_cosignatures",
                rows,
                column_names=list(COSIGNATURE_COLUMNS),
                database=self.database,
            )
        return len(rows)

    def submit(self, origin: str, partition: int, size: int, root: bytes, signed: str) -> bool:
        """Submit one checkpoint (retrying once on a 409 that names the witness's size)."""
        tree = self._tree(partition, size)
        if tree is None:
            return False
        if tree.root(size) != root:
            self._error(
                f"{origin} size {size}: the stored entries give root {tree.root(size).hex()}, "
                f"the signed checkpoint says {root.hex()}; not submitted"
            )
            return False
        for _ in range(2):
            old = self.witness_size.get(origin, 0)
            if old > size:
                self._error(
                    f"{origin}: the witness has cosigned size {old}, the store's newest "
                    f"checkpoint is {size}: the store is behind the witness (rollback?)"
                )
                return False
            body = format_add_checkpoint(old, tree.consistency(old, size), signed)
            self.stats.submitted += 1
            try:
                answer = self.post(self.url, body)
            except (OSError, ValueError) as exc:
                self._error(f"witness {self.url} unreachable: {exc}")
                return False
            if answer.status == 200:
                self.witness_size[origin] = size
                self.stats.cosigned_size[origin] = size
                lines = answer.body.decode("utf-8", "replace")
                if self._store(origin, partition, size, root, signed, lines):
                    self.stats.cosigned += 1
                    return True
                return False
            if answer.status == 409 and answer.content_type.startswith(SIZE_CONTENT_TYPE):
                self.stats.conflicts += 1
                text = answer.body.decode("ascii", "replace").strip()
                if not text.isdigit():
                    self._error(f"witness 409 with a malformed size {text[:40]!r}")
                    return False
                self.witness_size[origin] = int(text)
                continue
            self.stats.refused += 1
            self._error(
                f"witness refused {origin} size {size} ({answer.status}): "
                f"{answer.body.decode('utf-8', 'replace').strip()[:200]}"
            )
            return False
        return False

    def step(self) -> int:
        """One round: submit every partition's newest checkpoint not yet cosigned."""
        done = 0
        todo = [c for c in self._newest_checkpoints() if self.stats.cosigned_size.get(c[0]) != c[2]]
        self._extend({partition: size for _, partition, size, _, _ in todo})
        for origin, partition, size, root, signed in todo:
            if self.submit(origin, partition, size, root, signed):
                done += 1
        return done

    def run(self) -> None:
        """Loop until ``stop_event`` is set."""
        while not self.stop_event.is_set():
            try:
                self.step()
            except Exception as exc:  # keep feeding: an outage must not end the thread
                self._error(f"witness feeder round failed: {exc}")
            self.stop_event.wait(self.interval_s)

    def start(self) -> WitnessFeeder:
        """Run in a daemon thread."""
        self.thread = threading.Thread(target=self.run, name="witness-feeder", daemon=True)
        self.thread.start()
        return self

    def close(self) -> None:
        """Stop the thread."""
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(10)

    def wait_cosigned(self, sizes: dict[str, int], timeout: float) -> bool:
        """Wait until every origin in ``sizes`` is cosigned at that size or more."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.stats.cosigned_size.get(o, -1) >= s for o, s in sizes.items()):
                return True
            time.sleep(0.1)
        return False


# -- store reads for export and verification --------------------------------------------------


def _has_table(client: Any, database: str, table: str) -> bool:
    return bool(
        client.query(
            "SELECT count() FROM system.tables WHERE database = {db:String} AND name = {t:String}",
            parameters={"db": database, "t": table},
        ).result_rows[0][0]
    )


def load_cosignatures(
    client: Any, database: str, partitions: Sequence[int]
) -> list[StoredCosignature]:
    """Stored cosignature lines of the given partitions (none in a database without the table)."""
    if not _has_table(client, database, "witness_cosignatures"):
        return []
    rows = client.query(
        f"SELECT partition, tree_size, root_hash, line FROM {quote_database(database)}."
        "witness_cosignatures FINAL WHERE partition IN {ps:Array(UInt16)} "
        "ORDER BY partition, tree_size, cosigned_at",
        parameters={"ps": list(partitions)},
    ).result_rows
    return [StoredCosignature(int(p), int(s), bytes(r), str(line)) for p, s, r, line in rows]


def stored_logs(client: Any, database: str) -> dict[int, StoredLog]:
    """Entry count of every partition log in the store."""
    rows = client.query(
        f"SELECT source_partition, count() FROM {quote_database(database)}.lineage_entries FINAL "
        "GROUP BY source_partition"
    ).result_rows
    return {int(p): StoredLog(int(p), int(n)) for p, n in rows}


def stored_root(client: Any, database: str, partition: int, size: int) -> bytes:
    """Root of the store's log of ``partition`` over its first ``size`` entries (by log_index)."""
    cr = merkle.CompactRange()
    sql = (
        f"SELECT entry_hash FROM {quote_database(database)}.lineage_entries FINAL "
        "WHERE source_partition = {p:UInt16} AND log_index < {n:UInt64} ORDER BY log_index"
    )
    with client.query_row_block_stream(sql, parameters={"p": partition, "n": size}) as stream:
        for block in stream:
            for (entry_hash,) in block:
                cr.append(bytes(entry_hash))
    return cr.root()
