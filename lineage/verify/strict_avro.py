"""A strict Avro body decoder compiled from a schema: the verifier's fast way to read event bytes.

``codec.Schema.decode_body`` decodes with fastavro and re-encodes to prove the bytes are the one
canonical spelling. This decoder reads the canonical spelling only, in one pass of straight-line
Python generated from the schema: minimal varints, union indexes 0..n-1 as one byte, arrays and
maps as one block, no duplicate map keys, strict UTF-8, the last byte consumed. It refuses more
than ``decode_body`` may (any value it is unsure of raises ``StrictDecodeError``), never less,
and gives the same record; the caller then asks ``decode_body`` for the verdict and its words.
Schemas with types it does not compile (bytes, fixed, float, boolean, named references) give None.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cache
from typing import Any

from lineage import codec

INT_MIN, INT_MAX = -(2**31), 2**31 - 1
LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1
_HIGH_BYTES = bytes(range(0x80, 0x100))
"""Deleted from a body to count its bytes >= 0x80."""
_SHORT_LENGTHS = tuple(b >> 1 if b < 0x80 and not b & 1 else -1 for b in range(256))
"""The string length each one-byte spelling gives; -1 for bytes that are not one."""

Decoder = Callable[[bytes, int], dict[str, Any]]
"""Decodes the body that starts at the offset and ends at the end of the bytes."""
Projector = Callable[[bytes, int], tuple[Any, ...]]
"""Decodes such a body to a tuple of values computed from its fields (``compile_projection``)."""


class StrictDecodeError(ValueError):
    """The bytes are not what the strict decoder accepts (they may still decode elsewhere)."""


class _Unsupported(Exception):
    pass


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """A zigzag varint of at most 10 bytes in its shortest spelling: (value, next position).

    Unrolled (no loop): the multi-byte varints of an event (times, long sequence numbers) are
    most of what its decoding costs after the strings.
    """
    b = buf[pos]
    acc = b & 0x7F
    n = 1
    if b & 0x80:
        b = buf[pos + 1]
        acc |= (b & 0x7F) << 7
        n = 2
        if b & 0x80:
            b = buf[pos + 2]
            acc |= (b & 0x7F) << 14
            n = 3
            if b & 0x80:
                b = buf[pos + 3]
                acc |= (b & 0x7F) << 21
                n = 4
                if b & 0x80:
                    b = buf[pos + 4]
                    acc |= (b & 0x7F) << 28
                    n = 5
                    if b & 0x80:
                        b = buf[pos + 5]
                        acc |= (b & 0x7F) << 35
                        n = 6
                        if b & 0x80:
                            b = buf[pos + 6]
                            acc |= (b & 0x7F) << 42
                            n = 7
                            if b & 0x80:
                                b = buf[pos + 7]
                                acc |= (b & 0x7F) << 49
                                n = 8
                                if b & 0x80:
                                    b = buf[pos + 8]
                                    acc |= (b & 0x7F) << 56
                                    n = 9
                                    if b & 0x80:
                                        b = buf[pos + 9]
                                        acc |= (b & 0x7F) << 63
                                        n = 10
                                        if b & 0x80:
                                            raise StrictDecodeError("varint longer than 10 bytes")
    if b == 0 and n > 1:
        raise StrictDecodeError("varint not in its shortest spelling")
    if acc >= 1 << 64:
        raise StrictDecodeError("varint beyond 64 bits")
    return (acc >> 1) ^ -(acc & 1), pos + n


class _Gen:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.consts: dict[str, Any] = {}
        self.n = 0

    def var(self, stem: str) -> str:
        self.n += 1
        return f"{stem}{self.n}"

    def emit(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)

    def long(self, ind: int, target: str, lo: int, hi: int) -> None:
        self.emit(ind, "b = buf[pos]")
        self.emit(ind, "if b < 0x80:")
        self.emit(ind + 1, f"{target} = (b >> 1) ^ -(b & 1)")
        self.emit(ind + 1, "pos += 1")
        # two bytes, the second neither 0 (not the shortest spelling) nor continued: at most
        # 14 bits, within every int and long range (counts and enums check their own)
        self.emit(ind, "elif 0 < buf[pos + 1] < 0x80:")
        self.emit(ind + 1, "b = (b & 0x7F) | buf[pos + 1] << 7")
        self.emit(ind + 1, f"{target} = (b >> 1) ^ -(b & 1)")
        self.emit(ind + 1, "pos += 2")
        self.emit(ind + 1, "high += 1")
        self.emit(ind, "else:")
        self.emit(ind + 1, "start = pos")
        self.emit(ind + 1, f"{target}, pos = varint(buf, pos)")
        self.emit(ind + 1, "high += pos - start - 1")
        self.emit(ind + 1, f"if not {lo} <= {target} <= {hi}:")
        self.emit(ind + 2, "raise Bad('number out of range')")

    def count(self, ind: int, target: str) -> None:
        """A length or block count: non-negative."""
        self.long(ind, target, 0, LONG_MAX)
        self.emit(ind, f"if {target} < 0:")
        self.emit(ind + 1, "raise Bad('negative length or count')")

    def string(self, ind: int, target: str) -> None:
        """Length, then UTF-8: sliced from the body's Latin-1 text in the first variant."""
        n = self.var("n")
        # SHORT[b]: the length a one-byte spelling b gives (b < 0x80 and even), else -1
        self.emit(ind, f"{n} = SHORT[buf[pos]]")
        self.emit(ind, f"if {n} >= 0:")
        self.emit(ind + 1, "start = pos + 1")
        self.emit(ind, "elif not (b := buf[pos]) & 1 and 0 < buf[pos + 1] < 0x80:")
        self.emit(ind + 1, f"{n} = (b & 0x7F) >> 1 | buf[pos + 1] << 6")
        self.emit(ind + 1, "start = pos + 2")
        self.emit(ind + 1, "high += 1")
        self.emit(ind, "else:")
        self.emit(ind + 1, f"{n}, start = varint(buf, pos)")
        self.emit(ind + 1, "high += start - pos - 1")
        self.emit(ind + 1, f"if {n} < 0:")
        self.emit(ind + 2, "raise Bad('negative length')")
        # An end past the body is caught later: every read after it is out of range, and the
        # position must end exactly at the body's size.
        self.emit(ind, f"pos = start + {n}")
        self.emit(ind, f"{target} = @STRING@")

    def value(self, ind: int, schema: Any, target: str) -> None:
        if schema == "string":
            self.string(ind, target)
        elif schema == "long":
            self.long(ind, target, LONG_MIN, LONG_MAX)
        elif schema == "int":
            self.long(ind, target, INT_MIN, INT_MAX)
        elif schema == "null":
            self.emit(ind, f"{target} = None")
        elif isinstance(schema, list):
            self.union(ind, schema, target)
        elif isinstance(schema, dict):
            kind = schema.get("type")
            if kind == "record":
                self.record(ind, schema, target)
            elif kind == "enum":
                symbols = tuple(schema["symbols"])
                name = self.var("symbols")
                self.consts[name] = symbols
                i = self.var("i")
                self.long(ind, i, 0, len(symbols) - 1)
                self.emit(ind, f"if not 0 <= {i} < {len(symbols)}:")
                self.emit(ind + 1, "raise Bad('enum index out of range')")
                self.emit(ind, f"{target} = {name}[{i}]")
            elif kind == "array":
                self.block(ind, schema["items"], target, is_map=False)
            elif kind == "map":
                self.block(ind, schema["values"], target, is_map=True)
            elif kind in ("string", "long", "int"):
                self.value(ind, kind, target)
            else:
                raise _Unsupported(kind)
        else:
            raise _Unsupported(schema)

    def union(self, ind: int, branches: list[Any], target: str) -> None:
        if not 1 <= len(branches) <= 63:
            raise _Unsupported("union size")
        self.emit(ind, "b = buf[pos]")
        self.emit(ind, "pos += 1")
        for k, branch in enumerate(branches):
            self.emit(ind, f"{'if' if k == 0 else 'elif'} b == {2 * k}:")
            self.value(ind + 1, branch, target)
        self.emit(ind, "else:")
        self.emit(ind + 1, "raise Bad('union index not in its shortest spelling or out of range')")

    def block(self, ind: int, item: Any, target: str, *, is_map: bool) -> None:
        """Arrays and maps as fastavro writes them: one block of count items, then 0."""
        n, k, v = self.var("n"), self.var("k"), self.var("v")
        self.emit(ind, f"{target} = {{}}" if is_map else f"{target} = []")
        self.count(ind, n)
        self.emit(ind, f"if {n} > size:")  # every item takes at least one byte
        self.emit(ind + 1, "raise Bad('more items than bytes')")
        self.emit(ind, f"if {n}:")
        self.emit(ind + 1, f"for _ in range({n}):")
        if is_map:
            self.string(ind + 2, k)
        self.value(ind + 2, item, v)
        self.emit(ind + 2, f"{target}[{k}] = {v}" if is_map else f"{target}.append({v})")
        if is_map:
            self.emit(ind + 1, f"if len({target}) != {n}:")
            self.emit(ind + 2, "raise Bad('duplicate map key')")
        self.emit(ind + 1, "if buf[pos] != 0:")
        self.emit(ind + 2, "raise Bad('array or map in more than one block')")
        self.emit(ind + 1, "pos += 1")

    def record(
        self, ind: int, schema: dict[str, Any], target: str, project: str | None = None
    ) -> None:
        """A record as a dict; or, with ``project``, as that expression, whose ``{name}``
        placeholders stand for the fields' values (nested records stay dicts)."""
        names = []
        for f in schema["fields"]:
            var = self.var("f")
            self.value(ind, f["type"], var)
            names.append((f["name"], var))
        if project is None:
            self.emit(ind, f"{target} = {{" + ", ".join(f"{n!r}: {v}" for n, v in names) + "}")
        else:
            try:
                self.emit(ind, f"{target} = {project.format_map(dict(names))}")
            except KeyError as exc:
                raise ValueError(f"projection names no field {exc}") from None


def compile_decoder(schema: Any) -> Decoder | None:
    """A strict decoder of ``schema`` (fastavro's parsed form), or None if it cannot compile it."""
    decoder: Decoder | None = _compile(schema, None, {})
    return decoder


def compile_projection(schema: Any, project: str, consts: Mapping[str, Any]) -> Projector | None:
    """A strict decoder of ``schema`` that gives, instead of the record's dict, the tuple that
    the Python expression ``project`` computes from its fields (``{name}`` stands for a field's
    value, nested records are dicts; ``consts`` are names the expression may use). It accepts
    exactly the bytes ``compile_decoder``'s decoder accepts. None if it cannot compile."""
    projector: Projector | None = _compile(schema, project, consts)
    return projector


def _compile(schema: Any, project: str | None, consts: Mapping[str, Any]) -> Any:
    if not isinstance(schema, dict) or schema.get("type") != "record":
        return None
    gen = _Gen()
    try:
        gen.record(2, schema, "out", project)
    except _Unsupported:
        return None
    body = [
        "    size = len(buf)",
        "    pos = 0",
        "    high = 0",
        "    try:",
        *gen.lines,
        "    except IndexError:",
        "        raise Bad('body ends early') from None",
        "    except UnicodeDecodeError:",
        "        raise Bad('string is not UTF-8') from None",
        "    if pos != size:",
        "        raise Bad('bytes after the record')",
        "    return @RETURN@",
    ]
    # Two variants. The first slices every string from the body decoded as Latin-1 (one call,
    # one character per byte) and counts the bytes >= 0x80 that its multi-byte varints hold (all
    # but their last byte; every other byte outside a string is < 0x80 or refused). When the body
    # holds no other byte >= 0x80, every string is ASCII, so each slice is its UTF-8 decoding;
    # otherwise the second variant decodes each string as strict UTF-8. Both read the same
    # structure (string lengths count bytes in both), so they refuse the same spellings.
    latin = {"@STRING@": "txt[start:pos]", "@RETURN@": "out, high"}
    utf8 = {"@STRING@": "buf[start:pos].decode('utf-8')", "@RETURN@": "out"}

    def variant(line: str, values: dict[str, str]) -> str:
        for key, value in values.items():
            line = line.replace(key, value)
        return line

    source = "\n".join(
        [
            "def latin_body(buf, txt):",
            *(variant(line, latin) for line in body),
            "def utf8_body(buf):",
            *(variant(line, utf8) for line in body),
            "def decode(buf, pos):",
            "    if pos:",
            "        buf = buf[pos:]",
            "    out, high = latin_body(buf, buf.decode('latin-1'))",
            "    if len(buf) - len(buf.translate(None, HIGH)) == high:",
            "        return out",
            "    return utf8_body(buf)",
        ]
    )
    namespace: dict[str, Any] = {
        "varint": _varint,
        "Bad": StrictDecodeError,
        "HIGH": _HIGH_BYTES,
        "SHORT": _SHORT_LENGTHS,
        **consts,
        **gen.consts,
    }
    exec(
        compile(source, f"<strict decoder of {schema.get('name')}>", "exec"), namespace
    )  # source generated above
    return namespace["decode"]


@cache
def decoder_for(name: str) -> Decoder | None:
    """The strict decoder of ``schemas/<name>.avsc`` (cached), None when it cannot compile."""
    return compile_decoder(codec.load(name).parsed)
